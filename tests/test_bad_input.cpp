// Bad input gets a documented negative errno, and nothing already accepted
// is lost. One assertion per documented error.
#include <sys/syscall.h>


#include <cstring>

#include "base/fault.hpp"
#include "helpers.hpp"

using namespace asys_test;

namespace {

TEST(BadInput, CreateParams) {
    asys_ctx *ctx = nullptr;
    EXPECT_EQ(asys_ctx_create(nullptr, nullptr), -EFAULT);
    asys_params p{};
    p.reserved[0] = 1;
    EXPECT_EQ(asys_ctx_create(&p, &ctx), -EINVAL) << "reserved";
    p = asys_params{};
    p.flags = 0x80;
    EXPECT_EQ(asys_ctx_create(&p, &ctx), -EINVAL) << "unknown flag";
    p.flags = ASYS_CTX_INLINE_NEVER | ASYS_CTX_INLINE_ALWAYS;
    EXPECT_EQ(asys_ctx_create(&p, &ctx), -EINVAL) << "contradictory";
    p = asys_params{};
    p.workers = 100000;
    EXPECT_EQ(asys_ctx_create(&p, &ctx), -EINVAL) << "too many workers";
    p = asys_params{};
    p.max_inflight = 64;
    p.ring_entries = 32;
    EXPECT_EQ(asys_ctx_create(&p, &ctx), -EINVAL) << "ring smaller than in-flight limit";
    p = asys_params{};
    p.backend = 9;
    EXPECT_EQ(asys_ctx_create(&p, &ctx), -EINVAL) << "unknown backend";
    p = asys_params{};
    p.class_workers[ASYS_CLASS_LONG] = 1025;
    EXPECT_EQ(asys_ctx_create(&p, &ctx), -EINVAL) << "class budget past the bound on workers";
    p = asys_params{};
    p.reserved16 = 1;
    EXPECT_EQ(asys_ctx_create(&p, &ctx), -EINVAL) << "reserved16";
    EXPECT_EQ(ctx, nullptr) << "out untouched on failure";
}

TEST(BadInput, NullAndDeadContext) {
    asys_op op;
    asys_prep_nop(&op, 0);
    EXPECT_EQ(asys_submit(nullptr, &op), -EINVAL);
    EXPECT_EQ(asys_ctx_fd(nullptr), -EINVAL);
    EXPECT_EQ(asys_ctx_destroy(nullptr, 0), -EINVAL);
    asys_cqe cqe;
    EXPECT_EQ(asys_wait(nullptr, 0, nullptr, &cqe, 1), -EINVAL);
}

TEST(BadInput, Descriptors) {
    ctx_guard ctx;
    EXPECT_EQ(asys_submit(ctx, nullptr), -EFAULT);
    alignas(8) char raw[sizeof(asys_op) + 8] = {};
    auto *mis = reinterpret_cast<asys_op *>(raw + 4);
    EXPECT_EQ(asys_submit(ctx, mis), -EINVAL) << "misaligned";
    long r;
    asys_op op;
    asys_prep_nop(&op, 0);
    op.ret_ptr = &r;
    op.opcode = ASYS_OP__COUNT;
    EXPECT_EQ(asys_submit(ctx, &op), -EINVAL) << "unknown opcode";
    asys_prep_nop(&op, 0);
    op.flags = ASYS_F__ALL + 1;  // the first bit no flag uses
    EXPECT_EQ(asys_submit(ctx, &op), -EINVAL) << "unknown flag";
    op.flags = ASYS_F_SYNC | ASYS_F_ASYNC;
    EXPECT_EQ(asys_submit(ctx, &op), -EINVAL) << "SYNC|ASYNC";
    op.flags = ASYS_F_NOWAIT | ASYS_F_ASYNC;
    EXPECT_EQ(asys_submit(ctx, &op), -EINVAL) << "NOWAIT|ASYNC";
    op.flags = ASYS_F_SYNC | ASYS_F_NOWAIT;
    EXPECT_EQ(asys_submit(ctx, &op), -EINVAL) << "SYNC|NOWAIT";
    op.flags = 0;
    op.reserved[0] = 3;
    EXPECT_EQ(asys_submit(ctx, &op), -EINVAL) << "reserved";
    op.reserved[0] = 0;
    op.deadline_ns = 1;
    EXPECT_EQ(asys_submit(ctx, &op), -EINVAL) << "deadline without ASYS_F_DEADLINE";
    op.flags = ASYS_F_DEADLINE;
    op.deadline_ns = ~0ull;
    EXPECT_EQ(asys_submit(ctx, &op), -EINVAL) << "deadline past INT64_MAX";
    op.flags = ASYS_F_CLASS(ASYS_CLASS__COUNT);
    op.deadline_ns = 0;
    EXPECT_EQ(asys_submit(ctx, &op), -EINVAL) << "unknown class";
    op.flags = 0;
    op.nr = 5;
    EXPECT_EQ(asys_submit(ctx, &op), -EINVAL) << "nr on a non-syscall op";
    op.nr = 0;
    int x;
    op.cb_arg = &x;
    EXPECT_EQ(asys_submit(ctx, &op), -EINVAL) << "cb_arg without callback";
    asys_stats st;
    ASSERT_EQ(asys_ctx_stats(ctx, &st), 0);
    EXPECT_EQ(st.submitted, 0u) << "no rejected op was accepted";
    EXPECT_EQ(asys_ctx_stats(ctx, nullptr), -EFAULT);
}

TEST(BadInput, DeniedSyscall) {
    ctx_guard ctx;
    uint64_t args[6] = {};
    asys_op op;
    asys_prep_syscall(&op, SYS_fork, args);
    EXPECT_EQ(asys_submit(ctx, &op), -EPERM);
    asys_prep_syscall(&op, -1, args);
    EXPECT_EQ(asys_submit(ctx, &op), -ENOSYS);
}

TEST(BadInput, Wait) {
    asys_params p = params(2, 8);
    ctx_guard ctx(&p);
    asys_cqe cqe[16];
    EXPECT_EQ(asys_wait(ctx, 2, nullptr, cqe, 1), -EINVAL) << "min > max";
    EXPECT_EQ(asys_wait(ctx, 9, nullptr, cqe, 16), -EINVAL) << "min > ring capacity";
    EXPECT_EQ(asys_wait(ctx, 1, nullptr, cqe, 1), -EDEADLK) << "nothing in flight, no timeout";
    EXPECT_EQ(asys_wait(ctx, 1, nullptr, nullptr, 1), -EFAULT);
    EXPECT_EQ(asys_peek(ctx, nullptr, 1), -EFAULT);
    struct timespec bad{0, 2000000000};
    EXPECT_EQ(asys_wait(ctx, 1, &bad, cqe, 1), -EINVAL) << "bad timeout";
    EXPECT_EQ(asys_wait(ctx, 0, nullptr, cqe, 1), 0) << "min 0: a peek";
}

TEST(BadInput, BatchStopsAtFirstBadOpAndKeepsTheRest) {
    ctx_guard ctx;
    asys_op ops[4];
    long r[4] = {};
    for (int i = 0; i < 4; ++i) {
        asys_prep_nop(&ops[i], i + 10);
        ops[i].flags = ASYS_F_ASYNC;
        ops[i].ret_ptr = &r[i];
    }
    ops[2].opcode = 999;
    int status[4] = {7, 7, 7, 7};
    EXPECT_EQ(asys_submit_batch(ctx, ops, 4, status), 2) << "two accepted";
    EXPECT_EQ(status[0], 0);
    EXPECT_EQ(status[1], 0);
    EXPECT_EQ(status[2], -EINVAL);
    EXPECT_EQ(status[3], 7) << "not looked at";
    auto c = reap(ctx, 2);
    ASSERT_EQ(c.size(), 2u);
    EXPECT_EQ(r[0], 10);
    EXPECT_EQ(r[1], 11);
    EXPECT_EQ(asys_submit_batch(ctx, &ops[2], 1, nullptr), -EINVAL) << "first bad: the error";
    EXPECT_EQ(asys_submit_batch(ctx, nullptr, 1, nullptr), -EFAULT);
    EXPECT_EQ(asys_submit_batch(ctx, nullptr, 0, nullptr), 0);
}

// A worker that cannot be created fails the creation cleanly: the error is
// returned, the threads already started are stopped, nothing is left behind.
TEST(BadInput, WorkerCreationFailureIsCleanlyReported) {
    namespace fault = asys::internal::fault;
    {  // warm-up: runtimes that start helper threads lazily (TSan) do it now
        asys_ctx *w;
        ASSERT_EQ(asys_ctx_create(nullptr, &w), 0);
        asys_ctx_destroy(w, ASYS_DESTROY_DRAIN);
    }
    const unsigned before = thread_count();
    for (int successes : {0, 1, 3}) {  // fail the 1st, 2nd or 4th thread
        for (unsigned backend : {unsigned{ASYS_BACKEND_POOL}, unsigned{ASYS_BACKEND_AUTO}}) {
            fault::thread_create_successes = successes;
            fault::thread_create_failures = 1000;
            asys_params p = params(8, 0, 0, backend);
            asys_ctx *ctx = nullptr;
            int rc = asys_ctx_create(&p, &ctx);
            fault::thread_create_successes = 0;
            fault::thread_create_failures = 0;
            EXPECT_EQ(rc, -EAGAIN) << successes << " " << backend;
            EXPECT_EQ(ctx, nullptr);
            EXPECT_EQ(thread_count(), before) << "no thread left behind";
        }
    }
    asys_ctx *ok;
    ASSERT_EQ(asys_ctx_create(nullptr, &ok), 0) << "the library still works";
    EXPECT_EQ(asys_ctx_destroy(ok, ASYS_DESTROY_DRAIN), 0);
}

TEST(BadInput, OpcodeNames) {
    EXPECT_STREQ(asys_opcode_name(ASYS_OP_PREAD), "pread");
    EXPECT_EQ(asys_opcode_name(ASYS_OP__COUNT), nullptr);
}

}  // namespace
