// Fault injection: worker system calls that fail with EINTR are retried
// (the op still completes with its real result); EIO, ENOMEM and EAGAIN are
// delivered as the op's result, exactly once; a failing io_uring set-up and
// failing thread creation are covered in test_uring and test_bad_input.
#include "core/fault.hpp"
#include "helpers.hpp"

using namespace asys_test;
namespace fault = asys::internal::fault;

namespace {

struct fault_reset {
    ~fault_reset() { fault::syscall_failures = 0; }
};

TEST(Faults, EintrIsRetried) {
    fault_reset g;
    asys_params p = pool_params(1);
    ctx_guard ctx(&p);
    fault::syscall_errno = EINTR;
    fault::syscall_failures = 5;
    asys_op op;
    asys_prep_nop(&op, 77);
    op.flags = ASYS_F_ASYNC;
    EXPECT_EQ(run(ctx, op), 77) << "five injected EINTRs, then the real call";
    EXPECT_EQ(fault::syscall_failures.load(), 0) << "all five were consumed by retries";
    asys_cqe extra;
    EXPECT_EQ(asys_peek(ctx, &extra, 1), 0) << "exactly one completion";
}

TEST(Faults, ErrorsAreDeliveredExactlyOnce) {
    fault_reset g;
    asys_params p = pool_params(2);
    ctx_guard ctx(&p);
    for (int err : {EIO, ENOMEM, EAGAIN}) {
        constexpr int N = 50;
        fault::syscall_errno = err;
        fault::syscall_failures = N;
        long res[N];
        for (int i = 0; i < N; ++i) {
            asys_op op;
            asys_prep_nop(&op, i);
            op.flags = ASYS_F_ASYNC;
            op.ret_ptr = &res[i];
            op.user_data = static_cast<uint64_t>(i);
            ASSERT_EQ(asys_submit(ctx, &op), 0);
        }
        auto c = reap(ctx, N);
        ASSERT_EQ(c.size(), static_cast<size_t>(N));
        std::vector<int> seen(N);
        for (auto &e : c) {
            ++seen[e.user_data];
            EXPECT_EQ(e.res, -err);
            EXPECT_EQ(res[e.user_data], -err);
        }
        for (int i = 0; i < N; ++i) EXPECT_EQ(seen[i], 1) << i;
        asys_cqe extra;
        EXPECT_EQ(asys_peek(ctx, &extra, 1), 0);
        // The next op runs for real again.
        asys_op op;
        asys_prep_nop(&op, 5);
        op.flags = ASYS_F_ASYNC;
        EXPECT_EQ(run(ctx, op), 5);
    }
}

}  // namespace
