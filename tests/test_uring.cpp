// The io_uring backend: automatic, explained fallback when io_uring is
// blocked (seccomp ENOSYS and EPERM, a failing set-up), a forced backend that
// fails loudly, per-opcode routing, and a bounded thread count under a flood
// of ops that must punt.
#include <seccomp.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include <atomic>
#include <cstring>
#include <string>

#include "base/fault.hpp"
#include "helpers.hpp"

using namespace asys_test;

namespace {

bool uring_usable() {
    asys_params p{};
    p.backend = ASYS_BACKEND_URING;
    asys_ctx *c;
    if (asys_ctx_create(&p, &c) != 0) return false;
    asys_ctx_destroy(c, ASYS_DESTROY_DRAIN);
    return true;
}

// In a child: block io_uring_setup with `action`, then prove the library
// falls back to the pool, says why, and runs every kind of op. Returns an
// exit code (0 = all good) since gtest cannot report from a child.
int child_with_uring_blocked(uint32_t action, int expect_err) {
    unsetenv("ASYS_BACKEND");  // this test chooses its backends itself
    scmp_filter_ctx f = seccomp_init(SCMP_ACT_ALLOW);
    if (!f) return 20;
    if (seccomp_rule_add(f, action, SCMP_SYS(io_uring_setup), 0) != 0) return 21;
    if (seccomp_load(f) != 0) return 22;
    seccomp_release(f);

    asys_params forced{};
    forced.backend = ASYS_BACKEND_URING;
    asys_ctx *c;
    if (asys_ctx_create(&forced, &c) != expect_err) return 23;  // forced: fails loudly

    if (asys_ctx_create(nullptr, &c) != 0) return 24;  // auto: falls back
    asys_info info{};
    if (asys_ctx_info(c, &info) != 0) return 25;
    if (info.backend != ASYS_BACKEND_POOL) return 26;
    if (info.uring_error != expect_err) return 27;
    if (info.uring_opcodes != 0) return 28;
    if (!strstr(info.reason, expect_err == -ENOSYS ? "ENOSYS" : "EPERM")) return 29;

    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) return 30;
    char b = 0;
    long r1 = 0, r2 = 0, r3 = 0;
    asys_op op;
    asys_prep_read(&op, fds[0], &b, 1);
    op.ret_ptr = &r1;
    if (asys_submit(c, &op) != 0) return 31;
    asys_prep_nop(&op, 5);
    op.flags = ASYS_F_ASYNC;
    op.ret_ptr = &r2;
    if (asys_submit(c, &op) != 0) return 32;
    asys_prep_write(&op, fds[1], "x", 1);
    op.ret_ptr = &r3;
    if (asys_submit(c, &op) != 0) return 33;
    asys_cqe cqe[3];
    int got = 0;
    while (got < 3) {
        int n = asys_wait(c, 1, nullptr, cqe + got, 3 - got);
        if (n < 0) return 34;
        for (int i = got; i < got + n; ++i)
            if (cqe[i].path != ASYS_PATH_POOL) return 35;
        got += n;
    }
    if (r1 != 1 || r2 != 5 || r3 != 1 || b != 'x') return 36;
    if (asys_ctx_destroy(c, ASYS_DESTROY_DRAIN) != 0) return 37;
    return 0;
}

void run_blocked_child(uint32_t action, int expect_err) {
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) _exit(child_with_uring_blocked(action, expect_err));
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 0) << "failure code from the child";
}

TEST(UringFallback, SeccompENOSYS) { run_blocked_child(SCMP_ACT_ERRNO(ENOSYS), -ENOSYS); }
TEST(UringFallback, SeccompEPERM) { run_blocked_child(SCMP_ACT_ERRNO(EPERM), -EPERM); }

TEST(UringFallback, FailingSetupIsReportedAndThePoolServes) {
    asys::internal::fault::uring_setup_failures = 1;
    asys_params p{};  // auto, but not from the environment
    p.backend = ASYS_BACKEND_AUTO;
    unsetenv("ASYS_BACKEND");
    ctx_guard ctx(&p);
    asys_info info{};
    ASSERT_EQ(asys_ctx_info(ctx, &info), 0);
    EXPECT_EQ(info.backend, unsigned{ASYS_BACKEND_POOL});
    EXPECT_EQ(info.uring_error, -EPERM);
    asys_op op;
    asys_prep_nop(&op, 9);
    op.flags = ASYS_F_ASYNC;
    uint32_t path = 0;
    EXPECT_EQ(run(ctx, op, &path), 9);
    EXPECT_EQ(path, ASYS_PATH_POOL);
}

TEST(UringBackend, ForcedPoolAndEnvironment) {
    asys_params p{};
    p.backend = ASYS_BACKEND_POOL;
    ctx_guard ctx(&p);
    asys_info info{};
    ASSERT_EQ(asys_ctx_info(ctx, &info), 0);
    EXPECT_EQ(info.backend, unsigned{ASYS_BACKEND_POOL});
    EXPECT_EQ(info.uring_error, 0);
    EXPECT_NE(std::string(info.reason).find("forced"), std::string::npos);

    setenv("ASYS_BACKEND", "bogus", 1);
    asys_ctx *c;
    EXPECT_EQ(asys_ctx_create(nullptr, &c), -EINVAL) << "a bad ASYS_BACKEND is an error";
    unsetenv("ASYS_BACKEND");
}

TEST(UringBackend, RoutesSupportedOpcodesToTheRing) {
    if (!uring_usable()) GTEST_SKIP() << "SKIPPED: io_uring unavailable here; fallback tests cover the pool";
    asys_params p{};
    p.backend = ASYS_BACKEND_URING;
    ctx_guard ctx(&p);
    asys_info info{};
    ASSERT_EQ(asys_ctx_info(ctx, &info), 0);
    EXPECT_EQ(info.backend, unsigned{ASYS_BACKEND_URING});
    // The mask carries only ASYS_OP_* bits (no internal flag); generic calls
    // and closes (a punted close waits) run on the pool.
    EXPECT_EQ(info.uring_opcodes >> ASYS_OP__COUNT, 0u) << std::hex << info.uring_opcodes;
    EXPECT_TRUE(info.uring_opcodes & (uint64_t{1} << ASYS_OP_READ));
    EXPECT_FALSE(info.uring_opcodes & (uint64_t{1} << ASYS_OP_SYSCALL));
    EXPECT_FALSE(info.uring_opcodes & (uint64_t{1} << ASYS_OP_CLOSE));
    EXPECT_TRUE(info.uring_opcodes & (1u << ASYS_OP_READ));
    EXPECT_FALSE(info.uring_opcodes & (uint64_t{1} << ASYS_OP_SYSCALL)) << "generic syscalls: pool";
    EXPECT_GT(info.iowq_max_workers, 0u) << "io-wq is capped";

    pipe_pair pp;
    char b;
    asys_op op;
    asys_prep_read(&op, pp.r, &b, 1);
    ASSERT_EQ(asys_submit(ctx, &op), 0);
    ASSERT_EQ(write(pp.w, "r", 1), 1);
    auto c = reap(ctx, 1);
    ASSERT_EQ(c.size(), 1u);
    EXPECT_EQ(c[0].path, ASYS_PATH_URING);
    EXPECT_EQ(c[0].res, 1);

    uint64_t args[6] = {};
    asys_prep_syscall(&op, SYS_getppid, args);
    op.flags = ASYS_F_ASYNC;
    uint32_t path = 0;
    EXPECT_EQ(run(ctx, op, &path), getppid());
    EXPECT_EQ(path, ASYS_PATH_POOL);
    EXPECT_NE(worker_tid(ctx), gettid());
}

TEST(UringBackend, BatchIsOneSubmission) {
    if (!uring_usable()) GTEST_SKIP() << "SKIPPED: io_uring unavailable here";
    asys_params p{};
    p.backend = ASYS_BACKEND_URING;
    ctx_guard ctx(&p);
    temp_dir dir;
    int fd = make_file(dir.file("b"), 32 * 4096);
    static char bufs[32][4096];
    asys_op ops[32];
    long res[32];
    for (int i = 0; i < 32; ++i) {
        asys_prep_pread(&ops[i], fd, bufs[i], 4096, i * 4096);
        ops[i].flags = ASYS_F_ASYNC;
        ops[i].ret_ptr = &res[i];
    }
    int status[32];
    ASSERT_EQ(asys_submit_batch(ctx, ops, 32, status), 32);
    int pending = 0;
    for (int s : status) pending += s == 0;
    reap(ctx, static_cast<unsigned>(pending));
    for (int i = 0; i < 32; ++i) {
        ASSERT_EQ(res[i], 4096);
        ASSERT_EQ(bufs[i][0], pattern(static_cast<size_t>(i) * 4096));
    }
    asys_stats st;
    ASSERT_EQ(asys_ctx_stats(ctx, &st), 0);
    EXPECT_EQ(st.completed_uring, 32u);
    close(fd);
}

// 10,000 ops that must punt (file writes and fdatasyncs: the ring sends the
// syncs to io-wq workers, the pool runs what the ring does not take): the
// process's thread count stays within the configured bound (pool workers +
// reaper, already counted before, + the io-wq cap).
TEST(UringBackend, FloodKeepsThreadsBounded) {
    constexpr unsigned kWorkers = 4, kOps = 10000;
    asys_params p = params(kWorkers, 16384);
    ctx_guard ctx(&p);
    asys_info info{};
    ASSERT_EQ(asys_ctx_info(ctx, &info), 0);
    const unsigned before = thread_count();
    temp_dir dir;
    int fd = make_file(dir.file("flood"), 0);
    static char block[4096];
    std::atomic<unsigned> done{0};
    unsigned peak = 0;
    for (unsigned i = 0; i < kOps; ++i) {
        asys_op op;
        if (i % 2) asys_prep_fdatasync(&op, fd);
        else asys_prep_pwrite(&op, fd, block, sizeof block, static_cast<int64_t>(i) * 4096);
        op.callback = [](const asys_cqe *cqe, void *arg) {
            EXPECT_GE(cqe->res, 0);
            static_cast<std::atomic<unsigned> *>(arg)->fetch_add(1);
        };
        op.cb_arg = &done;
        ASSERT_EQ(asys_submit(ctx, &op), 0);
        if (i % 500 == 0) peak = std::max(peak, thread_count());
    }
    while (done.load() < kOps) {
        peak = std::max(peak, thread_count());
        sched_yield();
    }
    const unsigned bound = before + info.iowq_max_workers;  // pool + reaper are in `before`
    RecordProperty("peak_threads", static_cast<int>(peak));
    RecordProperty("bound", static_cast<int>(bound));
    printf("flood of %u writes: peak %u threads (bound %u: %u before + io-wq cap %u)\n", kOps, peak,
           bound, before, info.iowq_max_workers);
    EXPECT_LE(peak, bound);
    close(fd);
}

}  // namespace
