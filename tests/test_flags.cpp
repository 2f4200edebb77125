// NOWAIT, ATOMIC, ASYNC, SYNC, CQE_ALWAYS and the per-context switches,
// plus backpressure (-EAGAIN or a blocking submit).
#include <sys/syscall.h>

#include <atomic>
#include <thread>

#include "helpers.hpp"

using namespace asys_test;

namespace {

TEST(Flags, NowaitNeverBlocksNeverPunts) {
    ctx_guard ctx;
    pipe_pair pp;
    char b;
    long r = 0;
    asys_op op;
    asys_prep_read(&op, pp.r, &b, 1);
    op.flags = ASYS_F_NOWAIT;
    op.ret_ptr = &r;
    EXPECT_EQ(asys_submit(ctx, &op), -EAGAIN) << "empty pipe would block";
    EXPECT_EQ(stats(ctx).inflight, 0u) << "nothing punted";
    EXPECT_EQ(stats(ctx).submitted, 0u) << "not accepted";

    int fd = make_file(temp_dir().file("n"), 0);  // dir removed at once; fd lives
    asys_prep_write(&op, fd, "x", 1);
    op.flags = ASYS_F_NOWAIT;
    EXPECT_EQ(asys_submit(ctx, &op), -EAGAIN) << "writes need the backend";
    close(fd);

    ASSERT_EQ(write(pp.w, "k", 1), 1);
    asys_prep_read(&op, pp.r, &b, 1);
    op.flags = ASYS_F_NOWAIT;
    op.ret_ptr = &r;
    EXPECT_EQ(asys_submit(ctx, &op), ASYS_DONE) << "data ready: done inline";
    EXPECT_EQ(r, 1);
    EXPECT_EQ(b, 'k');
}

TEST(Flags, AtomicPuntsOnlyToAnIdleWorker) {
    asys_params p = pool_params(1);
    ctx_guard ctx(&p);
    pid_t tid = worker_tid(ctx);
    ASSERT_TRUE(wait_blocked_in(tid, SYS_futex)) << "worker idle";
    asys_op op;
    asys_prep_nop(&op, 1);
    op.flags = ASYS_F_ASYNC | ASYS_F_ATOMIC;
    long r = 0;
    op.ret_ptr = &r;
    ASSERT_EQ(asys_submit(ctx, &op), 0) << "idle worker available";
    reap(ctx, 1);

    parked_read busy;
    ASSERT_EQ(busy.submit(ctx), 0);
    ASSERT_TRUE(busy.wait_blocked(tid));
    EXPECT_EQ(asys_submit(ctx, &op), -EAGAIN) << "the only worker is busy: never wait";
    EXPECT_EQ(stats(ctx).inflight, 1u) << "the refused op left nothing behind";
    ASSERT_EQ(busy.release(), 1);
    reap(ctx, 1);
}

TEST(Flags, AsyncAndSyncPerOp) {
    ctx_guard ctx;
    uint64_t args[6] = {};
    asys_op op;
    asys_prep_syscall(&op, SYS_gettid, args);
    op.flags = ASYS_F_SYNC;
    EXPECT_EQ(run(ctx, op), gettid());
    asys_prep_nop(&op, 3);
    op.flags = ASYS_F_ASYNC;
    uint32_t path = 0;
    EXPECT_EQ(run(ctx, op, &path), 3);
    EXPECT_EQ(path, async_path(ctx, ASYS_OP_NOP)) << "ASYNC skips the inline attempt";
    asys_stats st = stats(ctx);
    EXPECT_EQ(st.done_inline, 1u);
    EXPECT_EQ(st.punted_direct, 1u);
}

TEST(Flags, PerContextSwitches) {
    asys_params never = params(2, 0, ASYS_CTX_INLINE_NEVER);
    ctx_guard c1(&never);
    asys_op op;
    asys_prep_nop(&op, 3);
    uint32_t path = 0;
    EXPECT_EQ(run(c1, op, &path), 3);
    EXPECT_EQ(path, async_path(c1, ASYS_OP_NOP));
    op.flags = ASYS_F_SYNC;  // the op's own flag wins
    EXPECT_EQ(run(c1, op, &path), 3);
    EXPECT_EQ(path, ASYS_PATH_INLINE);

    asys_params always = params(2, 0, ASYS_CTX_INLINE_ALWAYS);
    ctx_guard c2(&always);
    uint64_t args[6] = {};
    asys_prep_syscall(&op, SYS_gettid, args);
    EXPECT_EQ(run(c2, op, &path), gettid());
    EXPECT_EQ(path, ASYS_PATH_INLINE);
}

TEST(Backpressure, FullContextSaysEAGAINAndLosesNothing) {
    asys_params p = params(2, 4);
    ctx_guard ctx(&p);
    pipe_pair pp;
    char b[5];
    asys_op op;
    for (int i = 0; i < 4; ++i) {
        asys_prep_read(&op, pp.r, &b[i], 1);
        op.user_data = static_cast<uint64_t>(i);
        ASSERT_EQ(asys_submit(ctx, &op), 0);
    }
    asys_prep_read(&op, pp.r, &b[4], 1);
    EXPECT_EQ(asys_submit(ctx, &op), -EAGAIN);
    asys_prep_nop(&op, 1);
    long r = 0;
    op.ret_ptr = &r;
    EXPECT_EQ(asys_submit(ctx, &op), ASYS_DONE) << "inline ops need no room";
    EXPECT_EQ(stats(ctx).rejected_full, 1u);
    ASSERT_EQ(write(pp.w, "1234", 4), 4);
    auto c = reap(ctx, 4);
    ASSERT_EQ(c.size(), 4u);
    uint64_t mask = 0;
    for (auto &e : c) mask |= 1u << e.user_data;
    EXPECT_EQ(mask, 0xfu) << "every accepted op completed";
    asys_prep_read(&op, pp.r, &b[4], 1);
    op.ret_ptr = nullptr;
    EXPECT_EQ(asys_submit(ctx, &op), 0) << "room again after reaping";
    ASSERT_EQ(write(pp.w, "5", 1), 1);
    reap(ctx, 1);
}

TEST(Backpressure, BlockingSubmitWaitsForRoom) {
    asys_params p = params(2, 2, ASYS_CTX_BLOCK_WHEN_FULL);
    ctx_guard ctx(&p);
    pipe_pair pp;
    char b[3];
    asys_op op;
    for (int i = 0; i < 2; ++i) {
        asys_prep_read(&op, pp.r, &b[i], 1);
        ASSERT_EQ(asys_submit(ctx, &op), 0);
    }
    std::atomic<pid_t> stid{0};
    std::atomic<int> src{1};
    std::thread submitter([&] {
        stid = gettid();
        asys_op o;
        asys_prep_read(&o, pp.r, &b[2], 1);
        o.flags = ASYS_F_ASYNC;  // never satisfied inline by data meant for the others
        src = asys_submit(ctx, &o);
    });
    while (!stid) sched_yield();
    ASSERT_TRUE(wait_blocked_in(stid, SYS_futex)) << "submit blocks while full";
    EXPECT_EQ(src.load(), 1) << "still blocked";
    // ATOMIC never waits, even in a blocking context.
    asys_op at;
    asys_prep_nop(&at, 0);
    at.flags = ASYS_F_ASYNC | ASYS_F_ATOMIC;
    EXPECT_EQ(asys_submit(ctx, &at), -EAGAIN);
    ASSERT_EQ(write(pp.w, "ab", 2), 2);
    reap(ctx, 2);
    submitter.join();
    EXPECT_EQ(src.load(), 0);
    ASSERT_EQ(write(pp.w, "c", 1), 1);
    reap(ctx, 1);
}

}  // namespace
