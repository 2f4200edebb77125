// Defects found by the twenty-second review (a hostile user's programs),
// each pinned by a test that failed before its fix.
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>

#include <atomic>
#include <csignal>
#include <thread>

#include "helpers.hpp"
#include "syslet_helpers.hpp"

using namespace asys_test;

namespace {

/// Submits one op and waits a bounded time for it: a result, or -999998
/// when it did not complete within 10 s (a call that should have answered at
/// once waited).
long run_bounded(asys_ctx *ctx, asys_op op) {
    long res = -999999;
    op.ret_ptr = &res;
    const int rc = asys_submit(ctx, &op);
    if (rc < 0) return rc;
    if (rc == ASYS_DONE) return res;
    const auto c = reap(ctx, 1, 10);
    return c.size() == 1 ? res : -999998;
}

void set_nonblocking(int fd) { ASSERT_EQ(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK), 0); }

/// Fills a nonblocking pipe or socket until the call says EAGAIN.
void fill(int fd) {
    static char block[65536];
    while (write(fd, block, sizeof block) > 0) {
    }
    ASSERT_EQ(errno, EAGAIN);
}

// A descriptor in nonblocking mode (O_NONBLOCK): the call says EAGAIN at
// once when it would wait. io_uring ignores the flag on files it can poll
// and waits instead; asys gives the call's answer on every path.
TEST(Review22, NonblockingDescriptorsAnswerAtOnceOnEveryPath) {
    ctx_guard ctx;
    for (const uint32_t flags : {0u, unsigned{ASYS_F_ASYNC}}) {
        SCOPED_TRACE(flags ? "ASYS_F_ASYNC" : "default flags");
        char byte = 0;
        struct iovec iov{&byte, 1};
        asys_op op;
        {
            pipe_pair empty;
            set_nonblocking(empty.r);
            asys_prep_read(&op, empty.r, &byte, 1);
            op.flags = flags;
            EXPECT_EQ(run_bounded(ctx, op), -EAGAIN) << "read of an empty O_NONBLOCK pipe";
            asys_prep_readv(&op, empty.r, &iov, 1);
            op.flags = flags;
            EXPECT_EQ(run_bounded(ctx, op), -EAGAIN) << "readv of an empty O_NONBLOCK pipe";
        }
        {
            pipe_pair full;
            set_nonblocking(full.w);
            fill(full.w);
            asys_prep_write(&op, full.w, "x", 1);
            op.flags = flags;
            EXPECT_EQ(run_bounded(ctx, op), -EAGAIN) << "write to a full O_NONBLOCK pipe";
        }
        {
            int sv[2];
            ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv), 0);
            asys_prep_recv(&op, sv[0], &byte, 1, 0);
            op.flags = flags;
            EXPECT_EQ(run_bounded(ctx, op), -EAGAIN) << "recv on an empty O_NONBLOCK socket";
            fill(sv[1]);
            asys_prep_send(&op, sv[1], "x", 1, 0);
            op.flags = flags;
            EXPECT_EQ(run_bounded(ctx, op), -EAGAIN) << "send on a full O_NONBLOCK socket";
            close(sv[0]);
            close(sv[1]);
        }
        {
            const int l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
            ASSERT_GE(l, 0);
            struct sockaddr_un a{};
            a.sun_family = AF_UNIX;  // abstract, autobound by listen
            ASSERT_EQ(bind(l, reinterpret_cast<sockaddr *>(&a), sizeof(sa_family_t)), 0);
            ASSERT_EQ(listen(l, 4), 0);
            asys_prep__(&op, ASYS_OP_ACCEPT, static_cast<uint64_t>(l), 0, 0, SOCK_CLOEXEC, 0, 0);
            op.flags = flags;
            EXPECT_EQ(run_bounded(ctx, op), -EAGAIN) << "accept on an O_NONBLOCK listener with nobody waiting";
            close(l);
        }
    }
}

// The same inside a threadlet: asys_call(read) of an empty O_NONBLOCK pipe
// is -EAGAIN at once, as read(2); the threadlet stayed parked on the ring.
int g_nonblocking_rfd = -1;
long read_nonblocking(void *) {
    char b[8];
    return asys_call(SYS_read, static_cast<long>(g_nonblocking_rfd), b, 8L);
}

TEST(Review22, NonblockingReadInAThreadletAnswersAtOnce) {
    ctx_guard ctx;
    pipe_pair empty;
    set_nonblocking(empty.r);
    g_nonblocking_rfd = empty.r;
    asys_op op;
    asys_prep_threadlet(&op, read_nonblocking, nullptr, 0);
    EXPECT_EQ(run_bounded(ctx, op), -EAGAIN);
}

// A nonblocking connect over TCP says EINPROGRESS (the handshake goes on);
// the ring waited for the handshake and said 0. Compared with the plain
// call on the same kind of socket.
TEST(Review22, NonblockingConnectAnswersAsTheCall) {
    const int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(l, 0);
    struct sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof a;
    if (bind(l, reinterpret_cast<sockaddr *>(&a), sizeof a) != 0)
        GTEST_SKIP() << "SKIPPED: no loopback TCP here (" << strerror(errno) << ")";
    ASSERT_EQ(getsockname(l, reinterpret_cast<sockaddr *>(&a), &alen), 0);
    ASSERT_EQ(listen(l, 16), 0);
    ctx_guard ctx;
    for (const uint32_t flags : {0u, unsigned{ASYS_F_ASYNC}}) {
        SCOPED_TRACE(flags ? "ASYS_F_ASYNC" : "default flags");
        const int plain_s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        const int asys_s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        ASSERT_GE(plain_s, 0);
        ASSERT_GE(asys_s, 0);
        const long plain = connect(plain_s, reinterpret_cast<sockaddr *>(&a), sizeof a) == 0 ? 0 : -errno;
        asys_op op;
        asys_prep__(&op, ASYS_OP_CONNECT, static_cast<uint64_t>(asys_s), reinterpret_cast<uint64_t>(&a), sizeof a, 0,
                    0, 0);
        op.flags = flags;
        EXPECT_EQ(run_bounded(ctx, op), plain);
        close(plain_s);
        close(asys_s);
    }
    close(l);
}

/// Blocks SIGPIPE on the calling thread for the scope (and in the threads
/// it creates meanwhile: the context's), so that a raised SIGPIPE stays
/// pending where sigtimedwait can collect it.
struct sigpipe_blocked {
    sigset_t set{}, old{};
    sigpipe_blocked() {
        sigemptyset(&set);
        sigaddset(&set, SIGPIPE);
        pthread_sigmask(SIG_BLOCK, &set, &old);
    }
    ~sigpipe_blocked() { pthread_sigmask(SIG_SETMASK, &old, nullptr); }
    /// Whether a SIGPIPE is (or within `seconds` becomes) pending; takes it.
    bool take(time_t seconds) const {
        const struct timespec ts{seconds, 0};
        return sigtimedwait(&set, nullptr, &ts) == SIGPIPE;
    }
};

// A write or send to a pipe or socket whose reader is gone: -EPIPE, and
// SIGPIPE is raised (the call's other effect, whose default action ends the
// process). On a pool worker, which blocks every signal, it stayed pending
// on the worker and the application never saw it; the ring's send never
// raised it (io_uring sends with MSG_NOSIGNAL). Exactly one SIGPIPE per
// call, on every path; none with MSG_NOSIGNAL.
TEST(Review22, BrokenPipeRaisesSigpipeOnEveryPath) {
    const sigpipe_blocked blocked;
    while (blocked.take(0)) {
    }
    for (const bool pool_only : {true, false}) {
        asys_params p = pool_only ? pool_params(1) : params(0);
        ctx_guard ctx(&p);
        for (const uint32_t flags : {0u, unsigned{ASYS_F_ASYNC}}) {
            for (const int kind : {0, 1, 2, 3}) {  // write to a pipe, send, send with MSG_NOSIGNAL, a chain's write
                SCOPED_TRACE(testing::Message() << (pool_only ? "pool" : "default") << " context, flags " << flags
                                                << ", kind " << kind);
                int fds[2];
                if (kind == 0 || kind == 3) {
                    ASSERT_EQ(pipe2(fds, O_CLOEXEC), 0);
                } else {
                    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
                }
                close(fds[0]);  // the reader is gone
                asys_op op;
                if (kind == 0) asys_prep_write(&op, fds[1], "x", 1);
                if (kind == 1 || kind == 2) asys_prep_send(&op, fds[1], "x", 1, kind == 2 ? MSG_NOSIGNAL : 0);
                unsigned long wfd = static_cast<unsigned long>(fds[1]), wbuf = reinterpret_cast<unsigned long>("x"),
                              wlen = 1;
                long wres = 0;
                syslet_uatom w = atom(SYS_write, 0, &wres, {&wfd, &wbuf, &wlen});
                syslet_uatom *last = nullptr;
                if (kind == 3) asys_prep_chain(&op, &w, &last);
                op.flags = flags;
                EXPECT_EQ(run_bounded(ctx, op), -EPIPE);
                if (kind == 2) {
                    EXPECT_FALSE(blocked.take(0)) << "MSG_NOSIGNAL: no SIGPIPE";
                } else {
                    EXPECT_TRUE(blocked.take(10)) << "SIGPIPE reached the application";
                    EXPECT_FALSE(blocked.take(0)) << "once";
                }
                close(fds[1]);
            }
        }
    }
}

// A chain op with ASYS_F_NOWAIT never blocks the caller, even for an atom
// flagged SYSLET_SYNC (which otherwise runs on the caller whatever it
// costs): the atom would block, so the chain stops there with -EAGAIN and
// the atom did not run. A SYNC atom that would not block still runs.
TEST(Review22, NowaitChainDoesNotRunABlockingSyncAtom) {
    ctx_guard ctx;
    pipe_pair p;
    char byte = 0;
    unsigned long fd = static_cast<unsigned long>(p.r), buf = reinterpret_cast<unsigned long>(&byte), len = 1;
    long r = -12345;
    syslet_uatom rd = atom(SYS_read, SYSLET_SYNC, &r, {&fd, &buf, &len});
    syslet_uatom *last = nullptr;
    asys_op op;
    asys_prep_chain(&op, &rd, &last);
    op.flags = ASYS_F_NOWAIT;
    // Before the fix the caller sat in read(2) on the empty pipe: a watchdog
    // writes a byte after 20 s so that the test ends (and fails) then.
    std::atomic<bool> returned{false};
    std::thread watchdog([&] {
        for (int i = 0; i < 2000 && !returned.load(); ++i) usleep(10000);
        if (!returned.load()) (void)!write(p.w, "w", 1);
    });
    const int rc = asys_submit(ctx, &op);
    returned = true;
    watchdog.join();
    EXPECT_EQ(rc, -EAGAIN) << "a NOWAIT chain stops at an atom that would block";
    EXPECT_EQ(r, -12345) << "the atom did not run";
    EXPECT_EQ(last, &rd) << "the first atom that did not run";
    // The same chain when the read would not block: it runs, inline.
    ASSERT_EQ(write(p.w, "y", 1), 1);
    long res = -1;
    op.ret_ptr = &res;
    EXPECT_EQ(asys_submit(ctx, &op), ASYS_DONE);
    EXPECT_EQ(r, 1);
    EXPECT_EQ(byte, 'y');
}

}  // namespace
