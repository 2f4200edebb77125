// The asys socket protocol (seed 001), served in-process: files registered
// by SCM_RIGHTS, reads and writes at an offset or the file position, syncs,
// timers, cancel, one reply per request by cookie, bad requests answered
// with their error, and a client that leaves with requests in flight.
#include "asys/socket.h"

#include <signal.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>

#include <cstring>
#include <map>

#include "helpers.hpp"
#include "socket/sock_server.hpp"

using namespace asys_test;

namespace {

int64_t now_ns() {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/// Waits until no more socket servers than `base` run (each one exits once
/// its client closed and its requests finished, and notifies the counter).
void wait_servers_gone(int base) {
    for (int n; (n = asys::internal::g_sock_servers.load()) > base;) asys::internal::g_sock_servers.wait(n);
}

class Socket : public ::testing::Test {
protected:
    void SetUp() override {
        base_ = asys_socket_count();
        sock_ = asys_socket_open(ctx_);
        ASSERT_GE(sock_, 0) << strerror(-sock_);
    }
    void TearDown() override {
        if (sock_ >= 0) close(sock_);
    }
    long request(unsigned type, uint64_t cookie, uint32_t handle, uint32_t len, int64_t off,
                 const void *payload = nullptr, int fd = -1, void *out = nullptr, size_t cap = 0,
                 ssize_t *got = nullptr) {
        asys_sock_msg m;
        asys_sock_prep(&m, type, cookie, handle, len, off);
        EXPECT_EQ(asys_sock_send(sock_, &m, payload, type == ASYS_SOCK_WRITE ? len : 0, fd), 0);
        asys_sock_msg r;
        const ssize_t n = asys_sock_recv(sock_, &r, out, cap);
        if (got) *got = n;
        EXPECT_GE(n, 0);
        EXPECT_EQ(r.cookie, cookie);
        return r.res;
    }
    long register_fd(int fd) { return request(ASYS_SOCK_REGISTER, 1, 0, 0, 0, nullptr, fd); }

    asys_params p_ = params(4);
    ctx_guard ctx_{&p_};
    temp_dir dir_;
    int sock_ = -1, base_ = 0;
};

TEST_F(Socket, RegisterReadWriteSync) {
    int fd = make_file(dir_.file("f"), 65536);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(lseek(fd, 0, SEEK_SET), 0);  // the server shares this file position
    const long h = register_fd(fd);
    ASSERT_GE(h, 0);
    close(fd);  // the server holds its own copy
    char buf[4096];
    ssize_t got = 0;
    EXPECT_EQ(request(ASYS_SOCK_READ, 7, static_cast<uint32_t>(h), 4096, 8192, nullptr, -1, buf, sizeof buf, &got),
              4096);
    EXPECT_EQ(got, 4096) << "the data comes back as the reply's payload";
    for (size_t i = 0; i < sizeof buf; ++i) ASSERT_EQ(buf[i], pattern(8192 + i)) << i;
    const char text[] = "over the socket";
    EXPECT_EQ(request(ASYS_SOCK_WRITE, 8, static_cast<uint32_t>(h), sizeof text, 100, text), long{sizeof text});
    EXPECT_EQ(request(ASYS_SOCK_FDATASYNC, 9, static_cast<uint32_t>(h), 0, 0), 0);
    EXPECT_EQ(request(ASYS_SOCK_FSYNC, 10, static_cast<uint32_t>(h), 0, 0), 0);
    char back[sizeof text] = {};
    EXPECT_EQ(request(ASYS_SOCK_READ, 11, static_cast<uint32_t>(h), sizeof back, 100, nullptr, -1, back, sizeof back),
              long{sizeof back});
    EXPECT_STREQ(back, text);
    // offset -1: the file position, which reads advance
    char a[3], b[3];
    EXPECT_EQ(request(ASYS_SOCK_READ, 12, static_cast<uint32_t>(h), 3, -1, nullptr, -1, a, 3), 3);
    EXPECT_EQ(request(ASYS_SOCK_READ, 13, static_cast<uint32_t>(h), 3, -1, nullptr, -1, b, 3), 3);
    for (int i = 0; i < 3; ++i) {
        EXPECT_EQ(a[i], pattern(static_cast<size_t>(i)));
        EXPECT_EQ(b[i], pattern(3 + static_cast<size_t>(i))) << "the second read continued after the first";
    }
    std::vector<char> big(ASYS_SOCK_MAX_IO);
    EXPECT_EQ(request(ASYS_SOCK_READ, 16, static_cast<uint32_t>(h), ASYS_SOCK_MAX_IO, 0, nullptr, -1, big.data(),
                      big.size(), &got),
              long{ASYS_SOCK_MAX_IO})
        << "the largest read fits one record";
    EXPECT_EQ(got, static_cast<ssize_t>(ASYS_SOCK_MAX_IO));
    EXPECT_EQ(request(ASYS_SOCK_UNREGISTER, 14, static_cast<uint32_t>(h), 0, 0), 0);
    EXPECT_EQ(request(ASYS_SOCK_READ, 15, static_cast<uint32_t>(h), 1, 0, nullptr, -1, a, 1), -EBADF);
}

TEST_F(Socket, TimerFiresNoEarlierThanAsked) {
    const int64_t t0 = now_ns();
    asys_sock_msg m;
    asys_sock_prep(&m, ASYS_SOCK_TIMER, 5, 0, 0, 0);
    m.res = 20 * 1000 * 1000;  // 20 ms
    ASSERT_EQ(asys_sock_send(sock_, &m, nullptr, 0, -1), 0);
    asys_sock_msg r;
    ASSERT_EQ(asys_sock_recv(sock_, &r, nullptr, 0), 0);
    EXPECT_EQ(r.cookie, 5u);
    EXPECT_EQ(r.res, 0);
    EXPECT_GE(now_ns() - t0, 20 * 1000 * 1000);
}

// A signal as an event source: the reply carries its signalfd_siginfo.
TEST_F(Socket, SignalArrivesAsAReply) {
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR2);
    ASSERT_EQ(pthread_sigmask(SIG_BLOCK, &set, &old), 0);  // asys threads block all signals
    asys_sock_msg m;
    asys_sock_prep(&m, ASYS_SOCK_SIGNAL, 21, 0, 0, 0);
    m.res = SIGUSR2;
    ASSERT_EQ(asys_sock_send(sock_, &m, nullptr, 0, -1), 0);
    // The reply can only come after the signal: send it once the request is
    // in flight (a TIMER behind it proves the server has taken both).
    EXPECT_EQ(request(ASYS_SOCK_TIMER, 22, 0, 0, 0), 0);
    ASSERT_EQ(kill(getpid(), SIGUSR2), 0);
    asys_sock_msg r;
    signalfd_siginfo si{};
    ASSERT_EQ(asys_sock_recv(sock_, &r, &si, sizeof si), static_cast<ssize_t>(sizeof si));
    EXPECT_EQ(r.cookie, 21u);
    EXPECT_EQ(r.res, SIGUSR2);
    EXPECT_EQ(si.ssi_signo, static_cast<uint32_t>(SIGUSR2));
    EXPECT_EQ(si.ssi_pid, static_cast<uint32_t>(getpid()));
    asys_sock_prep(&m, ASYS_SOCK_SIGNAL, 23, 0, 0, 0);
    m.res = SIGKILL;
    ASSERT_EQ(asys_sock_send(sock_, &m, nullptr, 0, -1), 0);
    ASSERT_EQ(asys_sock_recv(sock_, &r, nullptr, 0), 0);
    EXPECT_EQ(r.res, -EINVAL) << "SIGKILL cannot be waited for";
    ASSERT_EQ(pthread_sigmask(SIG_SETMASK, &old, nullptr), 0);
}

TEST_F(Socket, ManyRequestsInFlightEachAnsweredOnce) {
    pipe_pair pp;
    const long h = register_fd(pp.r);
    ASSERT_GE(h, 0);
    constexpr int N = 100;
    for (int i = 0; i < N; ++i) {  // all block: the pipe is empty
        asys_sock_msg m;
        asys_sock_prep(&m, ASYS_SOCK_READ, 1000 + static_cast<uint64_t>(i), static_cast<uint32_t>(h), 1, -1);
        ASSERT_EQ(asys_sock_send(sock_, &m, nullptr, 0, -1), 0);
    }
    std::string bytes(N, 'x');
    ASSERT_EQ(write(pp.w, bytes.data(), N), N);
    std::map<uint64_t, int> seen;
    for (int i = 0; i < N; ++i) {
        asys_sock_msg r;
        char c = 0;
        ASSERT_EQ(asys_sock_recv(sock_, &r, &c, 1), 1);
        EXPECT_EQ(r.res, 1);
        EXPECT_EQ(c, 'x');
        ++seen[r.cookie];
    }
    ASSERT_EQ(seen.size(), static_cast<size_t>(N));
    for (auto &[k, v] : seen) EXPECT_EQ(v, 1) << k;
}

TEST_F(Socket, CancelABlockedRead) {
    pipe_pair pp;
    const long h = register_fd(pp.r);
    ASSERT_GE(h, 0);
    asys_sock_msg m;
    asys_sock_prep(&m, ASYS_SOCK_READ, 77, static_cast<uint32_t>(h), 1, -1);
    ASSERT_EQ(asys_sock_send(sock_, &m, nullptr, 0, -1), 0);
    EXPECT_EQ(request(ASYS_SOCK_UNREGISTER, 2, static_cast<uint32_t>(h), 0, 0), -EBUSY)
        << "a handle in use by a request in flight stays";
    asys_sock_prep(&m, ASYS_SOCK_CANCEL, 78, 0, 0, 77);
    ASSERT_EQ(asys_sock_send(sock_, &m, nullptr, 0, -1), 0);
    // Two replies, in either order: the cancel's, and the read's -ECANCELED.
    std::map<uint64_t, long> res;
    for (int i = 0; i < 2; ++i) {
        asys_sock_msg r;
        char c;
        ASSERT_GE(asys_sock_recv(sock_, &r, &c, 1), 0);
        res[r.cookie] = r.res;
    }
    EXPECT_TRUE(res[78] == 0 || res[78] == -EALREADY) << res[78];
    EXPECT_EQ(res[77], -ECANCELED);
    EXPECT_EQ(request(ASYS_SOCK_CANCEL, 79, 0, 0, 77), -ENOENT) << "no longer in flight";
}

TEST_F(Socket, BadRequestsGetTheirError) {
    int fd = make_file(dir_.file("g"), 100);
    const long h = register_fd(fd);
    ASSERT_GE(h, 0);
    const auto uh = static_cast<uint32_t>(h);
    char buf[8];
    EXPECT_EQ(request(ASYS_SOCK_READ, 1, 999, 1, 0, nullptr, -1, buf, 1), -EBADF);
    EXPECT_EQ(request(ASYS_SOCK_READ, 2, uh, ASYS_SOCK_MAX_IO + 1, 0), -EMSGSIZE);
    EXPECT_EQ(request(ASYS_SOCK_READ, 3, uh, 1, -2), -EINVAL);
    EXPECT_EQ(request(ASYS_SOCK_REGISTER, 4, 0, 0, 0), -EBADMSG) << "REGISTER without an fd";
    EXPECT_EQ(request(ASYS_SOCK_READ, 5, uh, 1, 0, nullptr, fd, buf, 1), -EBADMSG) << "an fd where none belongs";
    asys_sock_msg m;
    asys_sock_prep(&m, ASYS_SOCK_READ, 6, uh, 1, 0);
    m.magic = 0x12345678;
    ASSERT_EQ(asys_sock_send(sock_, &m, nullptr, 0, -1), 0);
    asys_sock_msg r;
    ASSERT_EQ(asys_sock_recv(sock_, &r, nullptr, 0), 0);
    EXPECT_EQ(r.res, -EPROTO);
    asys_sock_prep(&m, 99, 7, uh, 0, 0);
    ASSERT_EQ(asys_sock_send(sock_, &m, nullptr, 0, -1), 0);
    ASSERT_EQ(asys_sock_recv(sock_, &r, nullptr, 0), 0);
    EXPECT_EQ(r.res, -EBADMSG) << "unknown type";
    // A short record: no header to echo, cookie 0.
    ASSERT_EQ(send(sock_, "hi", 2, 0), 2);
    ASSERT_EQ(asys_sock_recv(sock_, &r, nullptr, 0), 0);
    EXPECT_EQ(r.res, -EBADMSG);
    EXPECT_EQ(r.cookie, 0u);
    // A write whose payload does not match its length.
    asys_sock_prep(&m, ASYS_SOCK_WRITE, 8, uh, 10, 0);
    ASSERT_EQ(asys_sock_send(sock_, &m, "abc", 3, -1), 0);
    ASSERT_EQ(asys_sock_recv(sock_, &r, nullptr, 0), 0);
    EXPECT_EQ(r.res, -EBADMSG);
    // The server still works.
    EXPECT_EQ(request(ASYS_SOCK_READ, 9, uh, 4, 0, nullptr, -1, buf, 4), 4);
    close(fd);
    EXPECT_EQ(asys_socket_open(nullptr), -EINVAL);
}

TEST_F(Socket, ClientLeavingWithRequestsInFlightEndsTheServer) {
    pipe_pair pp;
    const long h = register_fd(pp.r);
    ASSERT_GE(h, 0);
    for (int i = 0; i < 10; ++i) {
        asys_sock_msg m;
        asys_sock_prep(&m, ASYS_SOCK_READ, static_cast<uint64_t>(i), static_cast<uint32_t>(h), 1, -1);
        ASSERT_EQ(asys_sock_send(sock_, &m, nullptr, 0, -1), 0);
    }
    EXPECT_GT(asys_socket_count(), base_);
    close(sock_);
    sock_ = -1;
    wait_servers_gone(base_);  // the reads were cancelled, the server exited
    EXPECT_EQ(asys_socket_count(), base_);
    const asys_stats st = stats(ctx_);
    EXPECT_EQ(st.inflight, 0u);
}

// Destroying the context under a live socket is documented as a mistake,
// but it must stay safe: requests are answered -EBADF.
TEST(SocketAfterDestroy, RequestsAreAnsweredEbadf) {
    asys_ctx *ctx = nullptr;
    ASSERT_EQ(asys_ctx_create(nullptr, &ctx), 0);
    const int sock = asys_socket_open(ctx);
    ASSERT_GE(sock, 0);
    ASSERT_EQ(asys_ctx_destroy(ctx, ASYS_DESTROY_DRAIN), 0);
    asys_sock_msg m, r;
    asys_sock_prep(&m, ASYS_SOCK_TIMER, 3, 0, 0, 0);
    m.res = 1;
    ASSERT_EQ(asys_sock_send(sock, &m, nullptr, 0, -1), 0);
    ASSERT_EQ(asys_sock_recv(sock, &r, nullptr, 0), 0);
    EXPECT_EQ(r.cookie, 3u);
    EXPECT_EQ(r.res, -EBADF);
    close(sock);
    EXPECT_EQ(asys_socket_open(ctx), -EBADF);
}

}  // namespace
