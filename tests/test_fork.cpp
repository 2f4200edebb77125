// fork safety: in a child, the parent's contexts are dead (-EOWNERDEAD, and
// destroy only releases memory); new contexts work; the parent is unharmed.
#include <sys/wait.h>

#include "helpers.hpp"

using namespace asys_test;

namespace {

// In the child gtest macros cannot report; encode failures in the status.
int child_body(asys_ctx *parent_ctx) {
    asys_op op;
    asys_prep_nop(&op, 1);
    long r = 0;
    op.ret_ptr = &r;
    if (asys_submit(parent_ctx, &op) != -EOWNERDEAD) return 10;
    if (asys_ctx_fd(parent_ctx) != -EOWNERDEAD) return 11;
    if (asys_ctx_destroy(parent_ctx, ASYS_DESTROY_DRAIN) != 0) return 12;
    asys_ctx *c;
    if (asys_ctx_create(nullptr, &c) != 0) return 13;
    for (uint32_t f : {0u, unsigned{ASYS_F_ASYNC}}) {
        asys_prep_nop(&op, 42);
        op.flags = f;
        op.ret_ptr = &r;
        int rc = asys_submit(c, &op);
        if (rc < 0) return 14;
        if (rc == 0) {
            asys_cqe cqe;
            if (asys_wait(c, 1, nullptr, &cqe, 1) != 1) return 15;
        }
        if (r != 42) return 16;
    }
    if (asys_ctx_destroy(c, ASYS_DESTROY_DRAIN) != 0) return 17;
    return 0;
}

TEST(Fork, ChildGetsAUsableLibrary) {
    ASYS_SKIP_FORK_UNDER_SANITIZERS();
    ctx_guard ctx;
    parked_read inflight;
    ASSERT_EQ(inflight.submit(ctx, 0, /*flags=*/0), 0);  // in flight across the fork
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) _exit(child_body(ctx));
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 0) << "child failure code";
    // The parent's in-flight op still completes.
    ASSERT_EQ(inflight.release(), 1);
    auto c = reap(ctx, 1);
    ASSERT_EQ(c.size(), 1u);
    EXPECT_EQ(c[0].res, 1);
}

}  // namespace
