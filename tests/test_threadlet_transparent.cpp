// Transparent threadlets (ASYS_THREADLET_TRANSPARENT): the system calls of
// unmodified code inside (libc's read, recv, nanosleep, signal functions)
// are caught with syscall user dispatch and go through the same
// inline-or-park logic as asys_call.
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <thread>

#include "helpers.hpp"
#include "threadlet/dispatch.hpp"

using namespace asys_test;
using asys::internal::g_trapped_calls;

namespace {

long gettid_now() { return syscall(SYS_gettid); }
uint64_t traps() { return g_trapped_calls.load(); }

asys_op transparent(asys_threadlet_fn fn, void *arg, long *ret, uint64_t user_data = 0) {
    asys_op op;
    asys_prep_threadlet(&op, fn, arg, ASYS_THREADLET_TRANSPARENT);
    op.ret_ptr = ret;
    op.user_data = user_data;
    return op;
}

// Under TSan, its runtime's own system calls (made inside its interceptors
// of the code a transparent threadlet runs) would be trapped and run the
// library inside that runtime, which it does not support.
#define SKIP_UNDER_TSAN() \
    if (under_tsan()) GTEST_SKIP() << "transparent mode traps TSan's own runtime calls (unsupported there)"

// Submits; skips the test loudly when the kernel has no syscall user dispatch.
#define SUBMIT_OR_SKIP(ctx, op, expect)                                                          \
    do {                                                                                         \
        const int rc_ = asys_submit((ctx), &(op));                                               \
        if (rc_ == -EOPNOTSUPP) GTEST_SKIP() << "no syscall user dispatch in this kernel";      \
        ASSERT_EQ(rc_, (expect));                                                                \
    } while (0)

struct libc_reader {
    int fd;
    char buf[64] = {};
    long tid_after = 0;
    int err = 0;
};

long libc_read(void *a) {
    auto *r = static_cast<libc_reader *>(a);
    const ssize_t n = read(r->fd, r->buf, sizeof r->buf - 1);  // plain libc
    r->err = n < 0 ? errno : 0;
    r->tid_after = gettid_now();
    return n;
}

std::atomic<int> g_usr1{0};
std::atomic<long> g_usr1_pid{0};
void on_usr1(int) {
    g_usr1_pid = getpid();  // a system call inside the handler (libc)
    g_usr1.fetch_add(1);
}

struct usr1_handler {
    struct sigaction old {};
    usr1_handler() {
        struct sigaction sa {};
        sa.sa_handler = on_usr1;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGUSR1, &sa, &old);
        g_usr1 = 0;
        g_usr1_pid = 0;
    }
    ~usr1_handler() { sigaction(SIGUSR1, &old, nullptr); }
};

}  // namespace

TEST(Transparent, PlainLibcReadParksAndResumesOnTheOwner) {
    SKIP_UNDER_TSAN();
    ctx_guard ctx;
    pipe_pair p;
    libc_reader r{p.r};
    long ret = -999;
    asys_op op = transparent(libc_read, &r, &ret, 9);
    const uint64_t before = traps();
    SUBMIT_OR_SKIP(ctx, op, 0);
    EXPECT_GT(traps(), before) << "libc's read was trapped";
    ASSERT_EQ(write(p.w, "caught by dispatch", 18), 18);
    auto c = reap(ctx, 1);
    ASSERT_EQ(c.size(), 1u);
    EXPECT_EQ(c[0].user_data, 9u);
    EXPECT_EQ(ret, 18);
    EXPECT_STREQ(r.buf, "caught by dispatch");
    EXPECT_EQ(r.tid_after, gettid_now());
}

TEST(Transparent, ErrorsComeBackThroughErrno) {
    SKIP_UNDER_TSAN();
    ctx_guard ctx;
    libc_reader r{-1};
    long ret = -999;
    asys_op op = transparent(libc_read, &r, &ret);
    SUBMIT_OR_SKIP(ctx, op, ASYS_DONE);
    EXPECT_EQ(ret, -1);
    EXPECT_EQ(r.err, EBADF);
}

TEST(Transparent, NanosleepIsCaughtAndParks) {
    SKIP_UNDER_TSAN();
    ctx_guard ctx;
    struct sl {
        int rc = -1;
        long tid = 0;
    } s;
    auto fn = [](void *a) -> long {
        auto *ss = static_cast<sl *>(a);
        struct timespec ts{0, 30 * 1000 * 1000};
        ss->rc = nanosleep(&ts, nullptr);
        ss->tid = gettid_now();
        return 7;
    };
    long ret = -999;
    asys_op op = transparent(fn, &s, &ret, 3);
    SUBMIT_OR_SKIP(ctx, op, 0);  // the sleep runs on a backend; the caller goes on
    EXPECT_EQ(ret, -999);
    auto c = reap(ctx, 1);
    ASSERT_EQ(c.size(), 1u);
    EXPECT_EQ(ret, 7);
    EXPECT_EQ(s.rc, 0);
    EXPECT_EQ(s.tid, gettid_now());
}

TEST(Transparent, RecvIsCaughtAndParks) {
    SKIP_UNDER_TSAN();
    ctx_guard ctx;
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    struct rv {
        int fd;
        char buf[16] = {};
    } r{sv[0]};
    auto fn = [](void *a) -> long {
        auto *rr = static_cast<rv *>(a);
        return recv(rr->fd, rr->buf, sizeof rr->buf - 1, 0);
    };
    long ret = -999;
    asys_op op = transparent(fn, &r, &ret);
    SUBMIT_OR_SKIP(ctx, op, 0);
    ASSERT_EQ(send(sv[1], "datagram", 8, 0), 8);
    auto c = reap(ctx, 1);
    ASSERT_EQ(c.size(), 1u);
    EXPECT_EQ(ret, 8);
    EXPECT_STREQ(r.buf, "datagram");
    close(sv[0]);
    close(sv[1]);
}

TEST(Transparent, ThreadsThatDoNotUseThreadletsAreNotTrapped) {
    SKIP_UNDER_TSAN();
    ctx_guard ctx;
    pipe_pair p;
    libc_reader r{p.r};
    long ret = -999;
    asys_op op = transparent(libc_read, &r, &ret);
    SUBMIT_OR_SKIP(ctx, op, 0);
    // The owner, with a transparent threadlet parked, and another thread.
    uint64_t before = traps();
    for (int i = 0; i < 100; ++i) (void)getppid();
    EXPECT_EQ(traps(), before) << "the owner outside its threadlet";
    std::thread other([] { for (int i = 0; i < 100; ++i) (void)getppid(); });
    other.join();
    EXPECT_EQ(traps(), before) << "another thread";
    ASSERT_EQ(write(p.w, "x", 1), 1);
    ASSERT_EQ(reap(ctx, 1).size(), 1u);
    EXPECT_EQ(ret, 1);
    before = traps();
    for (int i = 0; i < 100; ++i) (void)getppid();
    EXPECT_EQ(traps(), before) << "the owner after its threadlet ended";
}

TEST(Transparent, SignalWhileParkedRunsOnTheOwnerUntrapped) {
    SKIP_UNDER_TSAN();
    ctx_guard ctx;
    usr1_handler h;
    pipe_pair p;
    libc_reader r{p.r};
    long ret = -999;
    asys_op op = transparent(libc_read, &r, &ret);
    SUBMIT_OR_SKIP(ctx, op, 0);
    const uint64_t before = traps();
    ASSERT_EQ(pthread_kill(pthread_self(), SIGUSR1), 0);
    EXPECT_EQ(g_usr1.load(), 1);
    EXPECT_EQ(g_usr1_pid.load(), getpid());
    EXPECT_EQ(traps(), before) << "the handler ran outside the threadlet";
    ASSERT_EQ(write(p.w, "after signal", 12), 12);
    ASSERT_EQ(reap(ctx, 1).size(), 1u);
    EXPECT_EQ(ret, 12);
    EXPECT_STREQ(r.buf, "after signal");
}

TEST(Transparent, SignalDuringATrappedCallInterruptsItLikeThePlainCall) {
    SKIP_UNDER_TSAN();
    ctx_guard ctx;
    usr1_handler h;
    struct sus {
        int rc = 0, err = 0;
        std::atomic<long> tid{0};
    } s;
    auto fn = [](void *a) -> long {
        auto *ss = static_cast<sus *>(a);
        ss->tid = gettid_now();
        sigset_t none;
        sigemptyset(&none);
        ss->rc = sigsuspend(&none);  // trapped; waits on the owner thread for a signal
        ss->err = errno;
        return 0;
    };
    std::thread killer([&] {
        while (s.tid.load() == 0) std::this_thread::yield();
        // Wait until the owner sits in rt_sigsuspend, inside the trap handler.
        for (int i = 0; i < 100000 && blocked_syscall(static_cast<pid_t>(s.tid.load())) != SYS_rt_sigsuspend; ++i)
            std::this_thread::yield();
        syscall(SYS_tgkill, getpid(), s.tid.load(), SIGUSR1);
    });
    long ret = -999;
    asys_op op = transparent(fn, &s, &ret);
    const int rc = asys_submit(ctx, &op);
    killer.join();
    if (rc == -EOPNOTSUPP) GTEST_SKIP() << "no syscall user dispatch in this kernel";
    ASSERT_EQ(rc, ASYS_DONE);
    EXPECT_EQ(s.rc, -1);
    EXPECT_EQ(s.err, EINTR);
    EXPECT_EQ(g_usr1.load(), 1);
    EXPECT_EQ(g_usr1_pid.load(), getpid());
}

TEST(Transparent, HandlerRunningInsideTheThreadletReturnsThroughTheTrap) {
    SKIP_UNDER_TSAN();
    // A signal delivered while the threadlet's own code runs (calls
    // trapped): the handler's getpid() is trapped too, and its return
    // (libc's rt_sigreturn, outside the allowed range) is made again.
    ctx_guard ctx;
    usr1_handler h;
    struct spin {
        std::atomic<long> tid{0};
        bool got = false;
    } s;
    auto fn = [](void *a) -> long {
        auto *ss = static_cast<spin *>(a);
        ss->tid = gettid_now();
        timespec start, now;
        clock_gettime(CLOCK_MONOTONIC, &start);  // vDSO: no system call
        do {
            ss->got = g_usr1.load() == 1;
            clock_gettime(CLOCK_MONOTONIC, &now);
        } while (!ss->got && now.tv_sec - start.tv_sec < 20);
        return getppid();  // trapping still works after the handler returned
    };
    std::thread killer([&] {
        while (s.tid.load() == 0) std::this_thread::yield();
        syscall(SYS_tgkill, getpid(), s.tid.load(), SIGUSR1);
    });
    long ret = -999;
    asys_op op = transparent(fn, &s, &ret);
    const uint64_t before = traps();
    const int rc = asys_submit(ctx, &op);
    killer.join();
    if (rc == -EOPNOTSUPP) GTEST_SKIP() << "no syscall user dispatch in this kernel";
    ASSERT_EQ(rc, ASYS_DONE);
    EXPECT_TRUE(s.got);
    EXPECT_EQ(g_usr1_pid.load(), getpid());
    EXPECT_EQ(ret, getppid());
    EXPECT_GE(traps() - before, 3u) << "the handler's getpid, its rt_sigreturn, the final getppid";
}

TEST(Transparent, SignalMaskChangesInsideStayTheOwners) {
    SKIP_UNDER_TSAN();
    ctx_guard ctx;
    struct m {
        sigset_t seen;
    } mm;
    auto fn = [](void *a) -> long {
        auto *x = static_cast<m *>(a);
        sigset_t add;
        sigemptyset(&add);
        sigaddset(&add, SIGUSR2);
        if (pthread_sigmask(SIG_BLOCK, &add, nullptr) != 0) return -1;  // trapped, kept past the signal return
        return pthread_sigmask(SIG_BLOCK, nullptr, &x->seen);
    };
    long ret = -999;
    asys_op op = transparent(fn, &mm, &ret);
    SUBMIT_OR_SKIP(ctx, op, ASYS_DONE);
    EXPECT_EQ(ret, 0);
    EXPECT_TRUE(sigismember(&mm.seen, SIGUSR2));
    sigset_t now;
    pthread_sigmask(SIG_BLOCK, nullptr, &now);
    EXPECT_TRUE(sigismember(&now, SIGUSR2)) << "the owner's mask (same thread)";
    EXPECT_FALSE(sigismember(&now, SIGSYS));
    sigset_t add;
    sigemptyset(&add);
    sigaddset(&add, SIGUSR2);
    pthread_sigmask(SIG_UNBLOCK, &add, nullptr);
}

TEST(Transparent, NestedTransparentThreadlets) {
    SKIP_UNDER_TSAN();
    ctx_guard ctx;
    pipe_pair inner_pipe, outer_pipe;
    struct nest {
        asys_ctx *ctx;
        libc_reader inner, outer;
        long inner_ret = -999;
        int inner_submit = -1;
    } n{ctx, {inner_pipe.r}, {outer_pipe.r}};
    auto outer = [](void *a) -> long {
        auto *nn = static_cast<nest *>(a);
        asys_op op = transparent(libc_read, &nn->inner, &nn->inner_ret, 2);
        nn->inner_submit = asys_submit(nn->ctx, &op);
        return libc_read(&nn->outer) + 100;  // still trapped after the inner one parked
    };
    long ret = -999;
    asys_op op = transparent(outer, &n, &ret, 1);
    SUBMIT_OR_SKIP(ctx, op, 0);
    EXPECT_EQ(n.inner_submit, 0);
    ASSERT_EQ(write(inner_pipe.w, "in", 2), 2);
    ASSERT_EQ(write(outer_pipe.w, "out", 3), 3);
    auto c = reap(ctx, 2);
    ASSERT_EQ(c.size(), 2u);
    EXPECT_EQ(ret, 103);
    EXPECT_EQ(n.inner_ret, 2);
    EXPECT_STREQ(n.inner.buf, "in");
    EXPECT_STREQ(n.outer.buf, "out");
    EXPECT_EQ(n.outer.tid_after, gettid_now());
}

TEST(Transparent, AsysCallAndSubmitInsideAreNotTrapped) {
    // Explicit calls and asys_submit (on a ring context, liburing's
    // io_uring_enter: run inline, not parked in the middle of the library)
    // from inside a transparent threadlet give the plain results.
    SKIP_UNDER_TSAN();
    ctx_guard ctx;
    pipe_pair p;
    struct both {
        asys_ctx *ctx;
        int fd;
        char a = 0, b = 0;
        long submit_rc = -1, op_res = -999, first = -999;
    } x{ctx, p.r};
    auto fn = [](void *arg) -> long {
        auto *bb = static_cast<both *>(arg);
        bb->first = asys_call(SYS_read, bb->fd, &bb->a, 1);  // parks: explicit
        asys_op op;
        asys_prep_read(&op, bb->fd, &bb->b, 1);
        op.ret_ptr = &bb->op_res;
        op.flags = ASYS_F_ASYNC;  // to a backend (the ring when there is one)
        bb->submit_rc = asys_submit(bb->ctx, &op);
        return read(bb->fd, &bb->a, 0);  // libc, trapped, inline
    };
    long ret = -999;
    asys_op op = transparent(fn, &x, &ret, 1);
    SUBMIT_OR_SKIP(ctx, op, 0);
    ASSERT_EQ(write(p.w, "1", 1), 1);
    auto c = reap(ctx, 1);
    ASSERT_EQ(c.size(), 1u);
    EXPECT_EQ(x.first, 1);
    EXPECT_EQ(x.a, '1');
    EXPECT_EQ(x.submit_rc, 0);
    EXPECT_EQ(ret, 0);
    ASSERT_EQ(write(p.w, "2", 1), 1);
    c = reap(ctx, 1);
    ASSERT_EQ(c.size(), 1u);
    EXPECT_EQ(x.op_res, 1);
    EXPECT_EQ(x.b, '2');
}
