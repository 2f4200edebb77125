// Every completion channel: ret_ptr, asys_wait, asys_peek, the eventfd under
// epoll_wait, callbacks — and the exactly-once rule across them.
#include <poll.h>
#include <sys/epoll.h>
#include <sys/syscall.h>

#include <atomic>
#include <thread>

#include "helpers.hpp"

using namespace asys_test;

namespace {

TEST(Completion, RetPtrAndWait) {
    ctx_guard ctx;
    pipe_pair p;
    long res = 12345;
    char buf[8];
    asys_op op;
    asys_prep_read(&op, p.r, buf, sizeof buf);
    op.ret_ptr = &res;
    op.user_data = 77;
    ASSERT_EQ(asys_submit(ctx, &op), 0) << "empty pipe: punted, not done";
    asys_cqe cqe;
    EXPECT_EQ(asys_peek(ctx, &cqe, 1), 0) << "nothing completed before the write";
    ASSERT_EQ(write(p.w, "abc", 3), 3);
    auto c = reap(ctx, 1);
    ASSERT_EQ(c.size(), 1u);
    EXPECT_EQ(c[0].user_data, 77u);
    EXPECT_EQ(c[0].res, 3);
    EXPECT_EQ(c[0].opcode, static_cast<uint32_t>(ASYS_OP_READ));
    EXPECT_EQ(c[0].path, async_path(ctx, ASYS_OP_READ));
    EXPECT_EQ(res, 3);
    EXPECT_EQ(asys_peek(ctx, &cqe, 1), 0) << "exactly one entry";
}

TEST(Completion, InlineProducesNoEntryUnlessAsked) {
    ctx_guard ctx;
    long res = 0;
    asys_op op;
    asys_prep_nop(&op, 5);
    op.ret_ptr = &res;
    ASSERT_EQ(asys_submit(ctx, &op), ASYS_DONE);
    EXPECT_EQ(res, 5);
    asys_cqe cqe;
    EXPECT_EQ(asys_peek(ctx, &cqe, 1), 0);

    op.flags = ASYS_F_CQE_ALWAYS;
    op.user_data = 9;
    ASSERT_EQ(asys_submit(ctx, &op), ASYS_DONE);
    ASSERT_EQ(asys_peek(ctx, &cqe, 1), 1);
    EXPECT_EQ(cqe.user_data, 9u);
    EXPECT_EQ(cqe.path, ASYS_PATH_INLINE);

    // No ret_ptr: the result must land somewhere, so an entry is posted.
    op.flags = 0;
    op.ret_ptr = nullptr;
    op.user_data = 10;
    ASSERT_EQ(asys_submit(ctx, &op), ASYS_DONE);
    ASSERT_EQ(asys_peek(ctx, &cqe, 1), 1);
    EXPECT_EQ(cqe.user_data, 10u);
    EXPECT_EQ(cqe.res, 5);
}

TEST(Completion, PeekIsNonBlockingAndBatches) {
    ctx_guard ctx;
    constexpr int N = 100;
    long res[N];
    for (int i = 0; i < N; ++i) {
        asys_op op;
        asys_prep_nop(&op, i);
        op.flags = ASYS_F_ASYNC;
        op.ret_ptr = &res[i];
        op.user_data = static_cast<uint64_t>(i);
        ASSERT_EQ(asys_submit(ctx, &op), 0);
    }
    std::vector<bool> seen(N);
    int got = 0;
    asys_cqe cqes[16];
    int fd = asys_ctx_fd(ctx);
    while (got < N) {
        int n = asys_peek(ctx, cqes, 16);
        ASSERT_GE(n, 0);
        if (n == 0) {  // block on the eventfd rather than spin
            struct pollfd pfd{fd, POLLIN, 0};
            ASSERT_EQ(poll(&pfd, 1, 10000), 1);
        }
        for (int i = 0; i < n; ++i) {
            ASSERT_FALSE(seen[cqes[i].user_data]) << "doubled";
            seen[cqes[i].user_data] = true;
            EXPECT_EQ(cqes[i].res, static_cast<long>(cqes[i].user_data));
            EXPECT_EQ(res[cqes[i].user_data], cqes[i].res);
        }
        got += n;
    }
    EXPECT_EQ(asys_peek(ctx, cqes, 16), 0);
}

TEST(Completion, EventfdUnderEpoll) {
    ctx_guard ctx;
    pipe_pair p;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ASSERT_EQ(epoll_ctl(ep, EPOLL_CTL_ADD, asys_ctx_fd(ctx), &ev), 0);
    epoll_event out;
    EXPECT_EQ(epoll_wait(ep, &out, 1, 0), 0) << "not readable while empty";

    char b1[4], b2[4];
    long r1 = 0, r2 = 0;
    asys_op op;
    asys_prep_read(&op, p.r, b1, 1);
    op.ret_ptr = &r1;
    ASSERT_EQ(asys_submit(ctx, &op), 0);
    asys_prep_read(&op, p.r, b2, 1);
    op.ret_ptr = &r2;
    ASSERT_EQ(asys_submit(ctx, &op), 0);
    EXPECT_EQ(epoll_wait(ep, &out, 1, 0), 0);
    ASSERT_EQ(write(p.w, "xy", 2), 2);
    ASSERT_EQ(epoll_wait(ep, &out, 1, 10000), 1) << "readable once completions are pending";
    // Level-triggered until every entry is reaped.
    auto c = reap(ctx, 2);
    ASSERT_EQ(c.size(), 2u);
    EXPECT_EQ(epoll_wait(ep, &out, 1, 0), 0) << "not readable once drained";
    EXPECT_EQ(r1 + r2, 2);
    close(ep);
}

// Pool callbacks run on a worker thread. (Ring ops call back on whichever
// thread reaps them: often the submitter itself — see CallbackOnTheRing.)
TEST(Completion, Callback) {
    asys_params p = pool_params(4);
    ctx_guard ctx(&p);
    struct state {
        std::atomic<int> calls{0};
        std::atomic<long> sum{0};
        pid_t caller;
        std::atomic<int> on_other_thread{0};
    } st;
    st.caller = gettid();
    constexpr int N = 200;
    for (int i = 0; i < N; ++i) {
        asys_op op;
        asys_prep_nop(&op, i);
        op.flags = ASYS_F_ASYNC;
        op.callback = [](const asys_cqe *cqe, void *arg) {
            auto *s = static_cast<state *>(arg);
            s->sum += cqe->res;
            if (gettid() != s->caller) ++s->on_other_thread;
            s->calls.fetch_add(1, std::memory_order_release);
        };
        op.cb_arg = &st;
        ASSERT_EQ(asys_submit(ctx, &op), 0);
    }
    // Callbacks replace cqes: the ring stays empty. Drain to know all ran.
    asys_ctx *c = ctx.release();
    ASSERT_EQ(asys_ctx_destroy(c, ASYS_DESTROY_DRAIN), 0);
    EXPECT_EQ(st.calls.load(), N);
    EXPECT_EQ(st.sum.load(), N * (N - 1) / 2);
    EXPECT_EQ(st.on_other_thread.load(), N) << "pool callbacks run on a worker";
}

TEST(Completion, CallbackOnEveryBackendExactlyOnce) {
    ctx_guard ctx;
    pipe_pair pp;
    std::atomic<int> calls{0};
    constexpr int N = 64;
    static char sink[N];
    for (int i = 0; i < N; ++i) {
        asys_op op;
        if (i % 2) asys_prep_nop(&op, i);
        else asys_prep_read(&op, pp.r, &sink[i], 1);  // waits for the writer
        op.flags = ASYS_F_ASYNC;
        op.callback = [](const asys_cqe *, void *arg) { ++*static_cast<std::atomic<int> *>(arg); };
        op.cb_arg = &calls;
        ASSERT_EQ(asys_submit(ctx, &op), 0);
    }
    char data[N / 2] = {};
    ASSERT_EQ(write(pp.w, data, sizeof data), static_cast<ssize_t>(sizeof data));
    asys_ctx *c = ctx.release();
    ASSERT_EQ(asys_ctx_destroy(c, ASYS_DESTROY_DRAIN), 0);
    EXPECT_EQ(calls.load(), N) << "every callback ran exactly once, none needed a wait call";
}

TEST(Completion, CallbackInlineWhenAsked) {
    ctx_guard ctx;
    int calls = 0;
    asys_op op;
    asys_prep_nop(&op, 3);
    op.flags = ASYS_F_CQE_ALWAYS;
    op.callback = [](const asys_cqe *cqe, void *arg) {
        EXPECT_EQ(cqe->path, ASYS_PATH_INLINE);
        ++*static_cast<int *>(arg);
    };
    op.cb_arg = &calls;
    long res = 0;
    op.ret_ptr = &res;
    ASSERT_EQ(asys_submit(ctx, &op), ASYS_DONE);
    EXPECT_EQ(calls, 1) << "called before asys_submit returns";
    asys_cqe cqe;
    EXPECT_EQ(asys_peek(ctx, &cqe, 1), 0) << "a callback replaces the entry";
}

TEST(Completion, WaitMinEventsAndTimeout) {
    ctx_guard ctx;
    pipe_pair p;
    char buf[3][1];
    for (auto &b : buf) {
        asys_op op;
        asys_prep_read(&op, p.r, b, 1);
        ASSERT_EQ(asys_submit(ctx, &op), 0);
    }
    asys_cqe cqes[3];
    struct timespec short_ts{0, 20 * 1000 * 1000};
    EXPECT_EQ(asys_wait(ctx, 1, &short_ts, cqes, 3), -ETIME) << "nothing ready";
    ASSERT_EQ(write(p.w, "a", 1), 1);
    // One ready, two wanted: times out but hands back what it has.
    struct timespec ts{0, 200 * 1000 * 1000};
    int n = 0;
    // The worker may still be posting; wait for the one entry first.
    n = asys_wait(ctx, 1, nullptr, cqes, 1);
    ASSERT_EQ(n, 1);
    ASSERT_EQ(write(p.w, "bc", 2), 2);
    n = asys_wait(ctx, 2, &ts, cqes, 3);
    ASSERT_EQ(n, 2);
}

}  // namespace
