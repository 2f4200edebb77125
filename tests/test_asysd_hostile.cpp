// asysd under hostile clients. Each test starts the daemon with
// --max-clients 3, notes its descriptor and thread counts (/proc/PID/fd,
// /proc/PID/task), lets clients misbehave in one way, and then checks that
// once they have all left both counts come back to that baseline (re-checked
// in a bounded loop) and that an honest client is served. The ways:
// half-closing with requests in flight (every reply must still come), shutting
// the read side and sending on, flooding requests without reading replies,
// exiting with requests in flight (long timers among them), malformed and
// oversized records (with and without fds), taking every client slot and
// leaving, and the lock-out of defect 13: three clients whose replies cannot
// be delivered, each with a 1 h timer in flight. And review 22's starvation:
// one client's waits (timers, reads of its own empty pipe, eventfd and
// socket) hold no pool worker, and what it may run in the context at once is
// capped, so that another client is served meanwhile.
#include <dirent.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>

#include <cstring>
#include <algorithm>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "asys/socket.h"
#include "asysd_helpers.hpp"
#include "base/fault.hpp"
#include "helpers.hpp"

using namespace asys_test;

namespace {

constexpr int64_t kHourNs = 3600LL * 1000 * 1000 * 1000;





/// Sends one record (with `nfds` fds), without blocking. 0 or -errno.
int send_raw(int s, const void *buf, size_t len, const int *fds = nullptr, unsigned nfds = 0) {
    struct iovec iov{const_cast<void *>(buf), len};
    struct msghdr mh {};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    alignas(struct cmsghdr) char cbuf[CMSG_SPACE(sizeof(int) * 16)];
    if (nfds) {
        mh.msg_control = cbuf;
        mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
        cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
    }
    return sendmsg(s, &mh, MSG_DONTWAIT | MSG_NOSIGNAL) < 0 ? -errno : 0;
}

int send_timer(int s, uint64_t cookie, int64_t ns) {
    asys_sock_msg m;
    asys_sock_prep(&m, ASYS_SOCK_TIMER, cookie, 0, 0, 0);
    m.res = ns;
    return send_raw(s, &m, sizeof m);
}

/// Sends requests and malformed records without ever reading a reply, until
/// the daemon drops the connection. Returns the errno that ended it (EPIPE,
/// or ECONNRESET when the daemon closed with requests unread), or ETIMEDOUT
/// if the daemon stopped taking records for 10 s while still connected.
int send_until_dropped(int s) {
    asys_sock_msg m;
    asys_sock_prep(&m, ASYS_SOCK_TIMER, 7, 0, 0, 0);
    for (int i = 0; i < 1000000; ++i) {
        const int rc = i % 2 ? send_raw(s, &m, sizeof m) : send_raw(s, "junk", 4);
        if (rc == 0) continue;
        if (rc != -EAGAIN) return -rc;
        struct pollfd p{s, POLLOUT, 0};
        if (poll(&p, 1, 10000) != 1) return ETIMEDOUT;
    }
    return 0;
}

/// asys_sock_recv with a bound: -ETIMEDOUT if nothing comes within 10 s.
ssize_t recv_within(int s, asys_sock_msg *r, void *buf, size_t cap) {
    struct pollfd p{s, POLLIN, 0};
    if (poll(&p, 1, 10000) != 1) return -ETIMEDOUT;
    return asys_sock_recv(s, r, buf, cap);
}

/// Whether a reply (or the end) is waiting on `s` right now.
bool reply_waiting(int s) {
    struct pollfd p{s, POLLIN, 0};
    return poll(&p, 1, 0) == 1;
}

int send_read(int s, uint64_t cookie, long handle, uint32_t len, int64_t offset = -1) {
    asys_sock_msg m;
    asys_sock_prep(&m, ASYS_SOCK_READ, cookie, static_cast<uint32_t>(handle), len, offset);
    return asys_sock_send(s, &m, nullptr, 0, -1);
}

/// A CANCEL of a cookie never used: its reply (-ENOENT) proves that the
/// server has taken every request sent before it (it reads them in order).
void expect_all_taken(int s) {
    asys_sock_msg m, r;
    asys_sock_prep(&m, ASYS_SOCK_CANCEL, 0xfeed, 0, 0, 0x7eed);
    ASSERT_EQ(asys_sock_send(s, &m, nullptr, 0, -1), 0);
    ASSERT_EQ(recv_within(s, &r, nullptr, 0), 0);
    EXPECT_EQ(r.cookie, 0xfeedu) << "a reply came before the marker's: res " << r.res;
    EXPECT_EQ(r.res, -ENOENT);
}

/// One number of the daemon's METRICS text ("key value" lines), asked on `s`.
long metric(int s, const char *key) {
    asys_sock_msg m, r;
    asys_sock_prep(&m, ASYS_SOCK_METRICS, 0xbeef, 0, 0, ASYS_METRICS_TEXT);
    if (asys_sock_send(s, &m, nullptr, 0, -1) != 0) return -1;
    static char text[ASYS_SOCK_MAX_IO + 1];
    const ssize_t n = recv_within(s, &r, text, ASYS_SOCK_MAX_IO);
    if (n <= 0 || r.cookie != 0xbeef) return -1;
    text[n] = '\0';
    const std::string line = std::string("\n") + key + " ";
    const char *at = strstr(text, line.c_str());
    return at ? strtol(at + line.size(), nullptr, 10) : -1;
}

class AsysdHostile : public ::testing::Test {
protected:
    void SetUp() override {
        daemon_ = std::make_unique<daemon_proc>(dir_.path, "3");
        ASSERT_GT(daemon_->pid, 0);
        base_fds_ = daemon_->fds();
        base_threads_ = daemon_->threads();
        ASSERT_GT(base_fds_, 0);
        ASSERT_GT(base_threads_, 0);
    }
    void TearDown() override {
        if (daemon_) EXPECT_EQ(daemon_->stop(), 0) << "asysd did not stop on SIGTERM";
    }

    /// A client that is served (the daemon says so in its greeting).
    int client() {
        const int s = asys_socket_connect(daemon_->sock.c_str());
        EXPECT_GE(s, 0) << strerror(-s);
        return s;
    }

    /// Registers `fd` on `s`; the handle or -errno.
    static long register_fd(int s, int fd) {
        asys_sock_msg m, r;
        asys_sock_prep(&m, ASYS_SOCK_REGISTER, 1, 0, 0, 0);
        if (int rc = asys_sock_send(s, &m, nullptr, 0, fd); rc < 0) return rc;
        const ssize_t n = recv_within(s, &r, nullptr, 0);
        return n < 0 ? n : r.res;
    }

    /// After every hostile client has left: the daemon's descriptors and
    /// threads come back to where they were before any client came, and an
    /// honest client is served.
    void expect_baseline_and_an_honest_client() {
        int fds = -1, threads = -1;
        EXPECT_TRUE(eventually([&] {
            fds = daemon_->fds();
            threads = daemon_->threads();
            return fds == base_fds_ && threads == base_threads_;
        }))
            << "descriptors " << fds << " (baseline " << base_fds_ << "), threads " << threads << " (baseline "
            << base_threads_ << ")";
        // Its server may still be ending: a client slot frees just after.
        int s = -EBUSY;
        eventually([&] { return (s = asys_socket_connect(daemon_->sock.c_str())) != -EBUSY; });
        ASSERT_GE(s, 0) << "an honest client is turned away: " << strerror(-s);
        const int fd = make_file(dir_.file("honest"), 10000);
        ASSERT_GE(fd, 0);
        const long h = register_fd(s, fd);
        close(fd);
        ASSERT_GE(h, 0);
        asys_sock_msg m, r;
        char buf[1000];
        asys_sock_prep(&m, ASYS_SOCK_READ, 2, static_cast<uint32_t>(h), sizeof buf, 5000);
        ASSERT_EQ(asys_sock_send(s, &m, nullptr, 0, -1), 0);
        ASSERT_EQ(recv_within(s, &r, buf, sizeof buf), static_cast<ssize_t>(sizeof buf));
        for (size_t i = 0; i < sizeof buf; ++i) ASSERT_EQ(buf[i], pattern(5000 + i)) << i;
        close(s);
    }

    /// Another client's 1 ms timer and a read of a file are both answered
    /// (each within the 10 s bound of recv_within).
    void expect_served_at_once(int s) {
        const int fd = make_file(dir_.file("b"), 10000);
        ASSERT_GE(fd, 0);
        const long h = register_fd(s, fd);
        close(fd);
        ASSERT_GE(h, 0);
        ASSERT_EQ(send_timer(s, 1, 1000 * 1000), 0);
        ASSERT_EQ(send_read(s, 2, h, 100, 5000), 0);
        std::map<uint64_t, long> res;
        for (int i = 0; i < 2; ++i) {
            asys_sock_msg r;
            char buf[100];
            const ssize_t n = recv_within(s, &r, buf, sizeof buf);
            ASSERT_GE(n, 0) << "reply " << i << ": " << strerror(static_cast<int>(-n));
            res[r.cookie] = r.res;
        }
        EXPECT_EQ(res, (std::map<uint64_t, long>{{1, 0}, {2, 100}}));
    }

    temp_dir dir_;
    std::unique_ptr<daemon_proc> daemon_;
    int base_fds_ = 0, base_threads_ = 0;
};

// Defect 13: clients that shut their read side and leave a 1 h timer in
// flight: the 1 ms timer's reply fails, and that alone must end the client's
// server (its timer cancelled) while the client still holds its socket.
// Before, each such server lived on and --max-clients 3 turned the next
// honest client away with -EBUSY.
TEST_F(AsysdHostile, ClientsWhoseRepliesFailDoNotLockOthersOut) {
    int s[3];
    for (int &c : s) {
        c = client();
        ASSERT_GE(c, 0);
        ASSERT_EQ(shutdown(c, SHUT_RD), 0);
        ASSERT_EQ(send_timer(c, 1, 1000 * 1000), 0);
        ASSERT_EQ(send_timer(c, 2, kHourNs), 0);
    }
    EXPECT_TRUE(eventually([&] { return daemon_->fds() == base_fds_; }))
        << "the daemon still holds " << daemon_->fds() - base_fds_ << " descriptors for the three clients";
    for (int c : s) close(c);
    expect_baseline_and_an_honest_client();
}

// The same, racing: the clients close right after sending, as the 1 ms
// timer's reply is being sent (either way the server must end).
TEST_F(AsysdHostile, ClientsLeavingAsTheirReplyIsSent) {
    for (int round = 0; round < 4; ++round) {
        int s[3];
        for (int &c : s) {
            c = -EBUSY;  // the previous round's servers may still be ending
            ASSERT_TRUE(eventually([&] { return (c = asys_socket_connect(daemon_->sock.c_str())) != -EBUSY; }));
            ASSERT_GE(c, 0) << strerror(-c);
            ASSERT_EQ(shutdown(c, SHUT_RD), 0);
            ASSERT_EQ(send_timer(c, 1, 1000 * 1000), 0);
            ASSERT_EQ(send_timer(c, 2, kHourNs), 0);
        }
        for (int c : s) close(c);
    }
    expect_baseline_and_an_honest_client();
}

// Defect 14 through the daemon: half-closed clients get every reply.
TEST_F(AsysdHostile, HalfClosedClientsGetEveryReply) {
    pipe_pair pp[3];
    int s[3];
    for (int i = 0; i < 3; ++i) {
        s[i] = client();
        ASSERT_GE(s[i], 0);
        const long h = register_fd(s[i], pp[i].r);
        ASSERT_GE(h, 0);
        for (uint64_t c = 10; c < 12; ++c) {  // both wait for the pipe
            asys_sock_msg m;
            asys_sock_prep(&m, ASYS_SOCK_READ, c, static_cast<uint32_t>(h), 1, -1);
            ASSERT_EQ(asys_sock_send(s[i], &m, nullptr, 0, -1), 0);
        }
        ASSERT_EQ(send_timer(s[i], 12, 5 * 1000 * 1000), 0);
        ASSERT_EQ(shutdown(s[i], SHUT_WR), 0);
    }
    for (auto &p : pp) ASSERT_EQ(write(p.w, "xy", 2), 2);
    for (int i = 0; i < 3; ++i) {
        std::map<uint64_t, long> res;
        for (int k = 0; k < 3; ++k) {
            asys_sock_msg r;
            char c;
            const ssize_t n = recv_within(s[i], &r, &c, 1);
            ASSERT_GE(n, 0) << "client " << i << ", reply " << k << ": " << strerror(static_cast<int>(-n));
            res[r.cookie] = r.res;
        }
        EXPECT_EQ(res, (std::map<uint64_t, long>{{10, 1}, {11, 1}, {12, 0}})) << "client " << i;
        asys_sock_msg r;
        EXPECT_EQ(recv_within(s[i], &r, nullptr, 0), -ECONNRESET) << "then its server ends";
        close(s[i]);
    }
    expect_baseline_and_an_honest_client();
}

// Clients that shut their read side and keep sending: the first reply fails,
// the daemon drops them, and their sends fail from then on.
TEST_F(AsysdHostile, ClientsThatShutTheirReadSideAndKeepSending) {
    int s[3];
    for (int &c : s) {
        c = client();
        ASSERT_GE(c, 0);
        ASSERT_EQ(shutdown(c, SHUT_RD), 0);
        ASSERT_EQ(send_timer(c, 1, kHourNs), 0);
    }
    for (int c : s) {
        const int err = send_until_dropped(c);
        EXPECT_TRUE(err == EPIPE || err == ECONNRESET) << strerror(err);
    }
    for (int c : s) close(c);
    expect_baseline_and_an_honest_client();
}

// Clients that flood requests and never read a reply: each is disconnected
// once its reply backlog overflows, instead of pinning its server thread.
TEST_F(AsysdHostile, ClientsThatNeverReadTheirReplies) {
    int s[3];
    for (int &c : s) {
        c = client();
        ASSERT_GE(c, 0);
        ASSERT_EQ(send_timer(c, 1, kHourNs), 0);
    }
    for (int c : s) {
        const int err = send_until_dropped(c);
        EXPECT_TRUE(err == EPIPE || err == ECONNRESET) << strerror(err);
        // What the daemon sent before letting go can be read, then the end.
        asys_sock_msg r;
        ssize_t n = 0;
        for (int i = 0; i < 100000 && (n = recv_within(c, &r, nullptr, 0)) == 0; ++i) {
        }
        EXPECT_EQ(n, -ECONNRESET);
    }
    for (int c : s) close(c);
    expect_baseline_and_an_honest_client();
}

// Client processes that exit with requests in flight: blocked reads, 1 h
// timers, and a 1 ms timer whose reply races the exit.
TEST_F(AsysdHostile, ClientsThatExitWithRequestsInFlight) {
    pipe_pair pp;  // this process keeps the write end: the reads never end by themselves
    pid_t kids[3];
    for (pid_t &k : kids) {
        k = fork();
        if (k == 0) {
            const int s = asys_socket_connect(daemon_->sock.c_str());
            if (s < 0) _exit(2);
            asys_sock_msg m, r;
            asys_sock_prep(&m, ASYS_SOCK_REGISTER, 1, 0, 0, 0);
            if (asys_sock_send(s, &m, nullptr, 0, pp.r) != 0 || asys_sock_recv(s, &r, nullptr, 0) != 0 || r.res < 0)
                _exit(3);
            for (uint64_t c = 0; c < 4; ++c) {
                asys_sock_prep(&m, ASYS_SOCK_READ, 10 + c, static_cast<uint32_t>(r.res), 1, -1);
                if (asys_sock_send(s, &m, nullptr, 0, -1) != 0) _exit(4);
            }
            for (uint64_t c = 0; c < 3; ++c)
                if (send_timer(s, 20 + c, kHourNs) != 0) _exit(5);
            if (send_timer(s, 30, 1000 * 1000) != 0) _exit(6);
            _exit(0);  // and the kernel closes the socket
        }
        ASSERT_GT(k, 0);
    }
    for (pid_t k : kids) {
        int st = 0;
        ASSERT_EQ(waitpid(k, &st, 0), k);
        EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "client status " << st;
    }
    expect_baseline_and_an_honest_client();
}

// Malformed and oversized records, with and without fds, each answered with
// its error (the fds that came with them closed), then the same flood from
// a client that reads nothing.
TEST_F(AsysdHostile, MalformedAndOversizedRecords) {
    const int s = client();
    ASSERT_GE(s, 0);
    int fds[10];
    for (int &f : fds) f = open("/dev/null", O_RDONLY | O_CLOEXEC);
    asys_sock_msg bad_magic, bad_type, big_read, mismatched, read_with_fd, reg2;
    asys_sock_prep(&bad_magic, ASYS_SOCK_READ, 1, 0, 1, 0);
    bad_magic.magic = 0xdeadbeef;
    asys_sock_prep(&bad_type, 77, 2, 0, 0, 0);
    asys_sock_prep(&big_read, ASYS_SOCK_READ, 3, 0, ASYS_SOCK_MAX_IO + 1, 0);
    asys_sock_prep(&mismatched, ASYS_SOCK_WRITE, 4, 0, 100, 0);
    asys_sock_prep(&read_with_fd, ASYS_SOCK_READ, 5, 0, 1, 0);
    asys_sock_prep(&reg2, ASYS_SOCK_REGISTER, 6, 0, 0, 0);
    std::vector<char> oversized(sizeof(asys_sock_msg) + ASYS_SOCK_MAX_IO + 4096, 'z');
    asys_sock_msg over;
    asys_sock_prep(&over, ASYS_SOCK_WRITE, 8, 0, ASYS_SOCK_MAX_IO, 0);
    memcpy(oversized.data(), &over, sizeof over);
    struct record {
        const void *buf;
        size_t len;
        unsigned nfds;
        uint64_t cookie;
        long res;
    };
    const record recs[] = {
        {"hi", 2, 0, 0, -EBADMSG},
        {"", 0, 0, 0, -EBADMSG},
        {"", 0, 1, 0, -EBADMSG},  // an empty record carrying an fd
        {&bad_magic, sizeof bad_magic, 0, 1, -EPROTO},
        {&bad_type, sizeof bad_type, 0, 2, -EBADMSG},
        {&big_read, sizeof big_read, 0, 3, -EMSGSIZE},
        {&mismatched, sizeof mismatched, 0, 4, -EBADMSG},
        {&read_with_fd, sizeof read_with_fd, 1, 5, -EBADMSG},
        {&reg2, sizeof reg2, 2, 6, -EBADMSG},
        {&read_with_fd, sizeof read_with_fd, 10, 5, -EBADMSG},  // more fds than any request takes
        {oversized.data(), oversized.size(), 0, 8, -EMSGSIZE},  // larger than any record
    };
    for (int round = 0; round < 30; ++round)
        for (const record &rc : recs) {
            int err;
            ASSERT_TRUE(eventually([&] { return (err = send_raw(s, rc.buf, rc.len, fds, rc.nfds)) != -EAGAIN; }));
            ASSERT_EQ(err, 0) << strerror(-err);
            asys_sock_msg r;
            ASSERT_EQ(recv_within(s, &r, nullptr, 0), 0) << "record of " << rc.len << " bytes";
            EXPECT_EQ(r.cookie, rc.cookie);
            EXPECT_EQ(r.res, rc.res) << "cookie " << rc.cookie << ", " << rc.len << " bytes, " << rc.nfds << " fds";
        }
    close(s);
    for (int f : fds) close(f);
    // The daemon frees the client's slot once its server has ended (on its
    // own time): wait for that before taking all three slots.
    ASSERT_TRUE(eventually([&] { return daemon_->fds() == base_fds_ && daemon_->threads() == base_threads_; }))
        << "the first client's server did not end";
    int quiet[3];
    for (int &c : quiet) {
        c = client();
        ASSERT_GE(c, 0);
    }
    for (int c : quiet) {
        const int err = send_until_dropped(c);
        EXPECT_TRUE(err == EPIPE || err == ECONNRESET) << strerror(err);
        close(c);
    }
    expect_baseline_and_an_honest_client();
}

// Taking every client slot and leaving gives the slots back.
TEST_F(AsysdHostile, ClientsThatTakeEverySlotAndLeave) {
    for (int round = 0; round < 3; ++round) {
        int s[3];
        for (int &c : s) {
            c = -EBUSY;
            ASSERT_TRUE(eventually([&] { return (c = asys_socket_connect(daemon_->sock.c_str())) != -EBUSY; }));
            ASSERT_GE(c, 0) << strerror(-c);
        }
        EXPECT_EQ(asys_socket_connect(daemon_->sock.c_str()), -EBUSY) << "a fourth client";
        for (int c : s) close(c);
    }
    expect_baseline_and_an_honest_client();
}

// The cause of a rare failure of the test above (a fourth client read
// -ECONNRESET): the daemon greets a client beyond --max-clients with -EBUSY
// and closes it at once, and Linux may tell a receive that races the two
// that the stream has ended, with the greeting still queued (recv_record in
// src/socket/sock_protocol.hpp). Here the fourth client reads once the
// daemon has closed, and fault::false_ends makes its receive see that false
// end first, every time.
TEST_F(AsysdHostile, ARefusedClientReadsItsGreetingDespiteAFalseEnd) {
    int s[3];
    for (int &c : s) {
        c = client();
        ASSERT_GE(c, 0);
    }
    const int fourth = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    ASSERT_GE(fourth, 0);
    struct sockaddr_un sa {};
    sa.sun_family = AF_UNIX;
    ASSERT_LT(daemon_->sock.size(), sizeof sa.sun_path);
    strcpy(sa.sun_path, daemon_->sock.c_str());
    ASSERT_EQ(connect(fourth, reinterpret_cast<sockaddr *>(&sa), sizeof sa), 0) << strerror(errno);
    struct pollfd p{fourth, POLLRDHUP, 0};
    ASSERT_EQ(poll(&p, 1, 10000), 1) << "the daemon did not close the fourth client";
    asys::internal::fault::false_ends = 1;
    asys_sock_msg r{};
    EXPECT_EQ(asys_sock_recv(fourth, &r, nullptr, 0), 0) << "the greeting";
    EXPECT_EQ(asys::internal::fault::false_ends.exchange(0), 0) << "the client did not see the false end";
    EXPECT_EQ(r.res, -EBUSY);
    EXPECT_EQ(r.cookie, 0u);
    close(fourth);
    for (int c : s) close(c);
    expect_baseline_and_an_honest_client();
}

// Review 22: a TIMER was a read of its timerfd, which went to the pool and
// held a worker until it fired: 64 timers of 30 s from one client took all 8
// workers, and another client's 1 ms timer was answered 30 s later. A read of
// the client's own empty pipe or eventfd did the same on the pool backend.
// Now the client's server waits for such fds itself (poll) and no worker is
// held: client A keeps 64 one-hour timers and reads of its empty pipe (64),
// eventfd (64) and socket (32) waiting, the daemon's workers are all idle,
// client B's 1 ms timer and file read are answered, and A's requests are all
// still pending; then A's pipe and socket reads complete as data comes.
TEST_F(AsysdHostile, OneClientsWaitsHoldNoWorker) {
    const int a = client();
    ASSERT_GE(a, 0);
    pipe_pair pp;
    const int efd = eventfd(0, EFD_CLOEXEC);
    int sp[2];
    ASSERT_GE(efd, 0);
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0);
    const long hp = register_fd(a, pp.r), he = register_fd(a, efd), hs = register_fd(a, sp[0]);
    ASSERT_GE(hp, 0);
    ASSERT_GE(he, 0);
    ASSERT_GE(hs, 0);
    for (uint64_t c = 0; c < 64; ++c) ASSERT_EQ(send_timer(a, 100 + c, kHourNs), 0);
    for (uint64_t c = 0; c < 64; ++c) ASSERT_EQ(send_read(a, 200 + c, hp, 1), 0);
    for (uint64_t c = 0; c < 64; ++c) ASSERT_EQ(send_read(a, 300 + c, he, 8), 0);
    for (uint64_t c = 0; c < 32; ++c) ASSERT_EQ(send_read(a, 400 + c, hs, 1), 0);
    expect_all_taken(a);

    const int b = client();
    ASSERT_GE(b, 0);
    EXPECT_EQ(metric(b, "workers_busy"), 0) << "A's waits hold pool workers";
    expect_served_at_once(b);
    EXPECT_FALSE(reply_waiting(a)) << "one of A's waits ended early";

    // The waits still complete: a byte for each pipe and socket read, and
    // one eventfd read takes the counter (the other 63 go on waiting).
    const std::string bytes(64, 'x');
    ASSERT_EQ(write(pp.w, bytes.data(), 64), 64);
    ASSERT_EQ(write(sp[1], bytes.data(), 32), 32);
    const uint64_t five = 5;
    ASSERT_EQ(write(efd, &five, sizeof five), 8);
    std::map<uint64_t, int> per_kind;
    for (int i = 0; i < 64 + 32 + 1; ++i) {
        asys_sock_msg r;
        uint64_t v = 0;
        const ssize_t n = recv_within(a, &r, &v, sizeof v);
        ASSERT_GE(n, 0) << "reply " << i << ": " << strerror(static_cast<int>(-n));
        ASSERT_TRUE(r.cookie >= 200 && r.cookie < 432) << r.cookie;
        ++per_kind[r.cookie / 100];
        if (r.cookie >= 300 && r.cookie < 400) {
            EXPECT_EQ(r.res, 8);
            EXPECT_EQ(v, 5u);
        } else {
            EXPECT_EQ(r.res, 1) << r.cookie;
            EXPECT_EQ(static_cast<char>(v), 'x');
        }
    }
    EXPECT_EQ(per_kind, (std::map<uint64_t, int>{{2, 64}, {3, 1}, {4, 32}}));
    close(a);  // with 64 timers and 63 eventfd reads waiting: they are dropped
    close(b);
    close(efd);
    close(sp[0]);
    close(sp[1]);
    expect_baseline_and_an_honest_client();
}

// What still runs in the context (a read of a tty, which cannot be read
// without blocking; file I/O and syncs) is capped per client at half the
// daemon's workers: more are answered -EBUSY at once, and another client is
// served while the first holds its share.
TEST_F(AsysdHostile, WhatOneClientRunsInTheContextIsCapped) {
    const int master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (master < 0 || grantpt(master) != 0 || unlockpt(master) != 0) {
        if (master >= 0) close(master);
        GTEST_SKIP() << "SKIPPED LOUDLY: no pseudo-terminal (" << strerror(errno)
                     << "); a tty is the descriptor that cannot be read without blocking";
    }
    const int slave = open(ptsname(master), O_RDWR | O_NOCTTY | O_CLOEXEC);
    ASSERT_GE(slave, 0) << strerror(errno);
    const int a = client(), b = client();
    ASSERT_GE(a, 0);
    ASSERT_GE(b, 0);
    const long workers = metric(b, "workers_max");
    ASSERT_GT(workers, 0);
    const long cap = std::max(1L, workers / 2);
    const long h = register_fd(a, slave);
    ASSERT_GE(h, 0);
    for (long c = 0; c < cap + 3; ++c) ASSERT_EQ(send_read(a, 10 + static_cast<uint64_t>(c), h, 1), 0);
    for (long i = 0; i < 3; ++i) {
        asys_sock_msg r;
        char ch;
        ASSERT_EQ(recv_within(a, &r, &ch, 1), 0) << "no -EBUSY reply " << i;
        EXPECT_GE(r.cookie, 10u + static_cast<uint64_t>(cap)) << "one of the first " << cap << " was refused";
        EXPECT_EQ(r.res, -EBUSY) << r.cookie;
    }
    // At its cap, A's read of a cached file is still answered (it finishes
    // without blocking).
    const int fd = make_file(dir_.file("a"), 10000);
    ASSERT_GE(fd, 0);
    const long hf = register_fd(a, fd);
    close(fd);
    ASSERT_GE(hf, 0);
    ASSERT_EQ(send_read(a, 50, hf, 100, 200), 0);
    asys_sock_msg rf;
    char data[100];
    ASSERT_EQ(recv_within(a, &rf, data, sizeof data), 100);
    EXPECT_EQ(rf.cookie, 50u);
    for (size_t i = 0; i < sizeof data; ++i) ASSERT_EQ(data[i], pattern(200 + i)) << i;
    expect_all_taken(a);
    expect_served_at_once(b);
    EXPECT_FALSE(reply_waiting(a)) << "one of A's tty reads ended early";
    // A line of `cap` bytes ends them all, one byte each; then A may run
    // another read in the context (it waits, it is not refused).
    std::string line(static_cast<size_t>(cap - 1), 'y');
    line += '\n';
    ASSERT_EQ(write(master, line.data(), line.size()), static_cast<ssize_t>(line.size()));
    for (long i = 0; i < cap; ++i) {
        asys_sock_msg r;
        char ch;
        ASSERT_EQ(recv_within(a, &r, &ch, 1), 1) << "tty read " << i;
        EXPECT_LT(r.cookie, 10u + static_cast<uint64_t>(cap));
        EXPECT_EQ(r.res, 1);
    }
    ASSERT_EQ(send_read(a, 99, h, 1), 0);
    expect_all_taken(a);
    close(a);
    close(b);
    close(slave);
    close(master);
    expect_baseline_and_an_honest_client();
}

}  // namespace
