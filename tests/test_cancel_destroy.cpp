// Cancellation (queued, running, unknown) and destroy (drain, cancel) with
// thousands of ops in flight: every op completes exactly once.
#include <sys/syscall.h>

#include <atomic>
#include <thread>

#include "helpers.hpp"

using namespace asys_test;

namespace {

struct tally {
    std::atomic<int> calls{0};
    std::atomic<int> cancelled{0};
    static void cb(const asys_cqe *cqe, void *arg) {
        auto *t = static_cast<tally *>(arg);
        if (cqe->res == -ECANCELED) t->cancelled.fetch_add(1, std::memory_order_relaxed);
        t->calls.fetch_add(1, std::memory_order_release);
    }
};

TEST(Cancel, QueuedOpCompletesCanceled) {
    asys_params p = pool_params(1);
    ctx_guard ctx(&p);
    parked_read busy;
    ASSERT_EQ(busy.submit(ctx, 1), 0);  // occupies the only worker
    long rb = 0;
    asys_op op;
    asys_prep_nop(&op, 7);
    op.flags = ASYS_F_ASYNC;
    op.ret_ptr = &rb;
    op.user_data = 2;
    ASSERT_EQ(asys_submit(ctx, &op), 0);  // FIFO: queued behind the read
    EXPECT_EQ(asys_cancel(ctx, 2), 0);
    auto c = reap(ctx, 1);
    ASSERT_EQ(c.size(), 1u);
    EXPECT_EQ(c[0].user_data, 2u);
    EXPECT_EQ(c[0].res, -ECANCELED);
    EXPECT_EQ(rb, -ECANCELED);
    EXPECT_EQ(asys_cancel(ctx, 2), -ENOENT) << "completed ops are gone";
    ASSERT_EQ(busy.release(), 1);
    c = reap(ctx, 1);
    ASSERT_EQ(c.size(), 1u);
    EXPECT_EQ(c[0].res, 1) << "the running read was not affected";
    asys_stats st;
    ASSERT_EQ(asys_ctx_stats(ctx, &st), 0);
    EXPECT_EQ(st.cancelled, 1u);
}

TEST(Cancel, RunningOpIsInterrupted) {
    asys_params p = pool_params(1);
    ctx_guard ctx(&p);
    pid_t tid = worker_tid(ctx);
    parked_read parked;
    ASSERT_EQ(parked.submit(ctx, 5), 0);
    ASSERT_TRUE(parked.wait_blocked(tid)) << "worker never blocked in read";
    EXPECT_EQ(asys_cancel(ctx, 5), -EALREADY);
    auto c = reap(ctx, 1);
    ASSERT_EQ(c.size(), 1u);
    EXPECT_EQ(c[0].res, -ECANCELED);
    EXPECT_EQ(parked.res, -ECANCELED);
    // The worker survives and serves the next op; nothing pending leaks in.
    ASSERT_EQ(parked.submit(ctx), 0);
    ASSERT_EQ(parked.release(), 1);
    c = reap(ctx, 1);
    ASSERT_EQ(c.size(), 1u);
    EXPECT_EQ(c[0].res, 1);
}

// On every backend: a read that waits for data is cancelled and completes
// -ECANCELED exactly once (io_uring cancels it in the kernel; the pool
// interrupts its worker).
TEST(Cancel, PendingReadOnEveryBackend) {
    ctx_guard ctx;
    parked_read pending;
    ASSERT_EQ(pending.submit(ctx, 31, /*flags=*/0), 0);  // the probe finds it empty
    int rc = -1;
    // A pool worker may not have reached the read yet: retry the cancel
    // until it takes (a condition, not a sleep).
    for (int i = 0; i < 1000000; ++i) {
        rc = asys_cancel(ctx, 31);
        if (rc == 0 || rc == -EALREADY) break;
        sched_yield();
    }
    ASSERT_TRUE(rc == 0 || rc == -EALREADY) << rc;
    auto c = reap(ctx, 1);
    ASSERT_EQ(c.size(), 1u);
    EXPECT_EQ(c[0].res, -ECANCELED);
    EXPECT_EQ(pending.res, -ECANCELED);
    EXPECT_EQ(c[0].path, async_path(ctx, ASYS_OP_READ));
    asys_cqe extra;
    EXPECT_EQ(asys_peek(ctx, &extra, 1), 0) << "exactly once";
}

TEST(Cancel, UnknownIsENOENT) {
    ctx_guard ctx;
    EXPECT_EQ(asys_cancel(ctx, 999), -ENOENT);
}

TEST(Destroy, DrainCompletesTenThousandInFlight) {
    asys_params p = params(4, 16384);
    asys_ctx *ctx;
    ASSERT_EQ(asys_ctx_create(&p, &ctx), 0);
    pipe_pair pp;
    tally t;
    constexpr int N = 10000, R = 100;
    std::vector<long> res(N + R, -1);
    static char sink[R];
    for (int i = 0; i < N + R; ++i) {
        asys_op op;
        if (i < R) asys_prep_read(&op, pp.r, &sink[i], 1);
        else asys_prep_nop(&op, i);
        op.flags = ASYS_F_ASYNC;
        op.ret_ptr = &res[i];
        op.callback = tally::cb;
        op.cb_arg = &t;
        ASSERT_EQ(asys_submit(ctx, &op), 0) << i;
    }
    std::thread writer([&] {
        char buf[R] = {};
        ASSERT_EQ(write(pp.w, buf, R), R);
    });
    ASSERT_EQ(asys_ctx_destroy(ctx, ASYS_DESTROY_DRAIN), 0);
    writer.join();
    EXPECT_EQ(t.calls.load(), N + R);
    EXPECT_EQ(t.cancelled.load(), 0);
    for (int i = 0; i < R; ++i) EXPECT_EQ(res[i], 1) << i;
    for (int i = R; i < N + R; ++i) ASSERT_EQ(res[i], i);
}

TEST(Destroy, CancelCompletesTenThousandBlocked) {
    asys_params p = params(4, 16384);
    asys_ctx *ctx;
    ASSERT_EQ(asys_ctx_create(&p, &ctx), 0);
    pipe_pair pp;
    tally t;
    constexpr int N = 10000;
    std::vector<long> res(N, 1);
    char b;
    for (int i = 0; i < N; ++i) {
        asys_op op;
        asys_prep_read(&op, pp.r, &b, 1);  // never satisfied
        op.flags = ASYS_F_ASYNC;
        op.ret_ptr = &res[i];
        op.callback = tally::cb;
        op.cb_arg = &t;
        ASSERT_EQ(asys_submit(ctx, &op), 0) << i;
    }
    ASSERT_EQ(asys_ctx_destroy(ctx, ASYS_DESTROY_CANCEL), 0);
    EXPECT_EQ(t.calls.load(), N);
    EXPECT_EQ(t.cancelled.load(), N);
    for (int i = 0; i < N; ++i) ASSERT_EQ(res[i], -ECANCELED) << i;
}

TEST(Destroy, WakesBlockedWaiter) {
    asys_ctx *ctx;
    ASSERT_EQ(asys_ctx_create(nullptr, &ctx), 0);
    pipe_pair pp;
    char b;
    tally t;
    asys_op op;
    asys_prep_read(&op, pp.r, &b, 1);
    op.callback = tally::cb;  // completes without an entry
    op.cb_arg = &t;
    ASSERT_EQ(asys_submit(ctx, &op), 0);
    std::atomic<pid_t> wtid{0};
    std::atomic<int> wres{0};
    std::thread waiter([&] {
        wtid = gettid();
        asys_cqe cqe;
        // A deadline: without one, a wait that only callback ops are in
        // flight for is refused at once (-EDEADLK), not blocked.
        const struct timespec hour{3600, 0};
        wres = asys_wait(ctx, 1, &hour, &cqe, 1);
    });
    while (!wtid) sched_yield();
    ASSERT_TRUE(wait_asleep_in_asys_wait(wtid));
    ASSERT_EQ(asys_ctx_destroy(ctx, ASYS_DESTROY_CANCEL), 0);
    waiter.join();
    EXPECT_EQ(wres.load(), -ESHUTDOWN);
    EXPECT_EQ(t.cancelled.load(), 1);
}

TEST(Destroy, HandleIsDeadAfterwards) {
    asys_ctx *ctx;
    ASSERT_EQ(asys_ctx_create(nullptr, &ctx), 0);
    ASSERT_EQ(asys_ctx_destroy(ctx, ASYS_DESTROY_DRAIN), 0);
    asys_op op;
    asys_prep_nop(&op, 1);
    long r;
    op.ret_ptr = &r;
    EXPECT_EQ(asys_submit(ctx, &op), -EBADF);
    EXPECT_EQ(asys_ctx_fd(ctx), -EBADF);
    EXPECT_EQ(asys_ctx_destroy(ctx, ASYS_DESTROY_DRAIN), -EBADF);
    asys_cqe cqe;
    EXPECT_EQ(asys_peek(ctx, &cqe, 1), -EBADF);
    // The recycled object gets a new generation: the old handle stays dead.
    asys_ctx *ctx2;
    ASSERT_EQ(asys_ctx_create(nullptr, &ctx2), 0);
    EXPECT_NE(ctx2, ctx);
    EXPECT_EQ(asys_submit(ctx, &op), -EBADF);
    EXPECT_EQ(asys_submit(ctx2, &op), ASYS_DONE);
    ASSERT_EQ(asys_ctx_destroy(ctx2, ASYS_DESTROY_DRAIN), 0);
}

/// A callback that tries to destroy its own context, then another one.
struct destroying_callback {
    asys_ctx *self = nullptr;
    asys_ctx *other = nullptr;  // destroyed from the callback too, if set
    std::atomic<int> self_res{1};
    std::atomic<int> other_res{1};
    std::atomic<int> calls{0};
    static void cb(const asys_cqe *, void *arg) {
        auto *d = static_cast<destroying_callback *>(arg);
        d->self_res = asys_ctx_destroy(d->self, ASYS_DESTROY_DRAIN);
        if (d->other) d->other_res = asys_ctx_destroy(d->other, ASYS_DESTROY_DRAIN);
        d->calls.fetch_add(1);
        d->calls.notify_all();
    }
    void wait_called() {
        while (calls.load() == 0) calls.wait(0);
    }
};

// Destroying a context from inside one of its own completion callbacks
// would wait for the op whose callback is running (and for the thread
// running it), which waits for destroy: it fails with -EDEADLK and the
// context lives on. Destroying another context from there works. Every
// thread a callback can run on: the submitter (inline), a pool worker, the
// thread reaping the ring.
TEST(Destroy, FromItsOwnCallbackIsEDEADLK) {
    for (const bool pool_only : {true, false}) {
        SCOPED_TRACE(pool_only ? "pool context" : "default context");
        asys_params p = pool_only ? pool_params(1) : params(0);
        for (const int where : {0, 1, 2}) {  // inline, ASYNC NOP, a pipe read completed later
            SCOPED_TRACE(where);
            asys_ctx *ctx = nullptr;
            asys_ctx *other = nullptr;
            ASSERT_EQ(asys_ctx_create(&p, &ctx), 0);
            ASSERT_EQ(asys_ctx_create(nullptr, &other), 0);
            destroying_callback d;
            d.self = ctx;
            d.other = other;
            pipe_pair pp;
            char byte = 0;
            asys_op op;
            if (where == 2) {
                asys_prep_read(&op, pp.r, &byte, 1);
            } else {
                asys_prep_nop(&op, 5);
            }
            if (where != 0) op.flags = ASYS_F_ASYNC;
            op.callback = destroying_callback::cb;
            op.cb_arg = &d;
            const int rc = asys_submit(ctx, &op);
            if (where == 0) {
                ASSERT_EQ(rc, ASYS_DONE);
                EXPECT_EQ(d.calls.load(), 1) << "an inline op's callback runs before asys_submit returns";
            } else {
                ASSERT_EQ(rc, 0);
                if (where == 2) ASSERT_EQ(write(pp.w, "x", 1), 1);
                d.wait_called();
            }
            EXPECT_EQ(d.self_res.load(), -EDEADLK);
            EXPECT_EQ(d.other_res.load(), 0) << "another context can be destroyed from a callback";
            // The context lives on: it takes ops, and destroy works once
            // the callback has returned.
            asys_op nop;
            asys_prep_nop(&nop, 9);
            long r = 0;
            nop.ret_ptr = &r;
            EXPECT_EQ(run(ctx, nop), 9);
            EXPECT_EQ(asys_ctx_destroy(ctx, ASYS_DESTROY_DRAIN), 0);
            if (where == 2) EXPECT_EQ(byte, 'x');
        }
    }
}

TEST(Destroy, InvalidHow) {
    ctx_guard ctx;
    EXPECT_EQ(asys_ctx_destroy(ctx, 7), -EINVAL);
}

}  // namespace
