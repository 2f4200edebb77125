// io_uring links for chains: the asynchronous remainder of a chain that is a
// plain sequence of reads, writes and syncs (no data flow, no loop, stop on
// negative or never) runs as linked SQEs. Results, stop flags and
// cancellation keep the interpreter's semantics: a link cut by a short
// transfer continues on the pool; an error with STOP_ON_NEGATIVE ends the
// chain there; without stop flags the links are hard. Chains with data flow
// stay with the interpreter. Each test runs on a ring context (skipped
// loudly without io_uring) and on a pool-only context (the fallback).
#include <sys/syscall.h>

#include <cstring>

#include "asys/syslet.h"
#include "helpers.hpp"

using namespace asys_test;

namespace {

constexpr long kUnset = 12345;

struct pread_atoms {
    unsigned long fd, len = 4096, bufs[4], offs[4];
    long r[4] = {kUnset, kUnset, kUnset, kUnset};
    syslet_uatom a[4] = {};
    pread_atoms(int f, char *buf, unsigned n, unsigned long flags) : fd(static_cast<unsigned long>(f)) {
        for (unsigned k = 0; k < n; ++k) {
            bufs[k] = reinterpret_cast<unsigned long>(buf + k * 4096);
            offs[k] = k * 4096;
            a[k].nr = SYS_pread64;
            a[k].flags = flags;
            a[k].ret_ptr = &r[k];
            a[k].arg_ptr[0] = &fd;
            a[k].arg_ptr[1] = &bufs[k];
            a[k].arg_ptr[2] = &len;
            a[k].arg_ptr[3] = &offs[k];
            a[k].next = k + 1 < n ? &a[k + 1] : nullptr;
        }
    }
};

class ChainLinks : public ::testing::TestWithParam<unsigned> {
protected:
    void SetUp() override {
        p_ = params(2, 0, 0, GetParam());
        const int rc = asys_ctx_create(&p_, &ctx_);
        if (rc != 0 && GetParam() == ASYS_BACKEND_URING)
            GTEST_SKIP() << "SKIPPED LOUDLY: io_uring unavailable here (" << strerror(-rc)
                         << "); the pool-only instance of this test covers the fallback";
        ASSERT_EQ(rc, 0);
        fd_ = make_file(dir_.file("f"), kSize);
        ASSERT_GE(fd_, 0);
    }
    void TearDown() override {
        if (ctx_) asys_ctx_destroy(ctx_, ASYS_DESTROY_DRAIN);
        if (fd_ >= 0) close(fd_);
    }
    bool ring() const { return GetParam() == ASYS_BACKEND_URING; }
    /// Submits the chain asynchronously and returns its cqe.
    asys_cqe run_async(syslet_uatom *head, syslet_uatom **last, long *res) {
        asys_op op;
        asys_prep_chain(&op, head, last);
        op.flags = ASYS_F_ASYNC;
        op.ret_ptr = res;
        EXPECT_EQ(asys_submit(ctx_, &op), 0);
        auto e = reap(ctx_, 1);
        return e.empty() ? asys_cqe{} : e[0];
    }
    static constexpr size_t kSize = 10000;  // 2 full pages and a short one
    asys_params p_{};
    asys_ctx *ctx_ = nullptr;
    temp_dir dir_;
    int fd_ = -1;
};

TEST_P(ChainLinks, PlainSequenceRunsAsLinkedSqes) {
    char buf[2 * 4096];
    pread_atoms c(fd_, buf, 2, SYSLET_STOP_ON_NEGATIVE);
    syslet_uatom *last = nullptr;
    long res = 0;
    const asys_cqe e = run_async(c.a, &last, &res);
    EXPECT_EQ(e.path, ring() ? ASYS_PATH_URING : ASYS_PATH_POOL);
    EXPECT_EQ(e.res, 4096);
    EXPECT_EQ(res, 4096);
    EXPECT_EQ(last, &c.a[1]);
    EXPECT_EQ(c.r[0], 4096);
    EXPECT_EQ(c.r[1], 4096);
    for (size_t i = 0; i < sizeof buf; ++i) ASSERT_EQ(buf[i], pattern(i)) << i;
    if (ring()) EXPECT_EQ(stats(ctx_).completed_uring, 1u);
}

TEST_P(ChainLinks, AShortReadCutsTheLinkAndThePoolGoesOn) {
    char buf[3 * 4096];
    pread_atoms c(fd_, buf, 3, SYSLET_STOP_ON_NEGATIVE);
    c.offs[0] = 8192;  // 1808 bytes to EOF: short, not an error
    c.offs[1] = 0;
    c.offs[2] = 4096;
    syslet_uatom *last = nullptr;
    long res = 0;
    const asys_cqe e = run_async(c.a, &last, &res);
    EXPECT_EQ(c.r[0], static_cast<long>(kSize - 8192));
    EXPECT_EQ(c.r[1], 4096) << "STOP_ON_NEGATIVE does not stop on a short count";
    EXPECT_EQ(c.r[2], 4096);
    EXPECT_EQ(last, &c.a[2]);
    EXPECT_EQ(res, 4096);
    EXPECT_EQ(e.path, static_cast<uint32_t>(ASYS_PATH_POOL)) << "the rest ran on the pool";
    EXPECT_EQ(buf[0], pattern(8192));
    EXPECT_EQ(buf[4096], pattern(0));
    EXPECT_EQ(buf[8192], pattern(4096));
}

TEST_P(ChainLinks, AnErrorStopsTheChainThere) {
    char buf[2 * 4096];
    pread_atoms c(fd_, buf, 2, SYSLET_STOP_ON_NEGATIVE);
    c.fd = 100000;  // EBADF
    syslet_uatom *last = nullptr;
    long res = 0;
    const asys_cqe e = run_async(c.a, &last, &res);
    EXPECT_EQ(e.res, -EBADF);
    EXPECT_EQ(c.r[0], -EBADF);
    EXPECT_EQ(c.r[1], kUnset) << "never ran: its ret_ptr is untouched";
    EXPECT_EQ(last, &c.a[0]);
}

TEST_P(ChainLinks, WithoutStopFlagsEveryAtomRuns) {
    char buf[2 * 4096];
    pread_atoms c(fd_, buf, 2, 0);
    unsigned long bad = 100000;
    c.a[0].arg_ptr[0] = &bad;
    syslet_uatom *last = nullptr;
    long res = 0;
    run_async(c.a, &last, &res);
    EXPECT_EQ(c.r[0], -EBADF);
    EXPECT_EQ(c.r[1], 4096) << "a hard link goes on after a failure";
    EXPECT_EQ(last, &c.a[1]);
}

TEST_P(ChainLinks, WritesThenSync) {
    const std::string path = dir_.file("w");
    int wfd = open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    ASSERT_GE(wfd, 0);
    const char a1[] = "hello ", a2[] = "links";
    unsigned long fdv = static_cast<unsigned long>(wfd), p1 = reinterpret_cast<unsigned long>(a1),
                  p2 = reinterpret_cast<unsigned long>(a2), l1 = 6, l2 = 5, o1 = 0, o2 = 6;
    long r[3] = {kUnset, kUnset, kUnset};
    syslet_uatom at[3] = {};
    for (int k = 0; k < 3; ++k) {
        at[k].flags = SYSLET_STOP_ON_NEGATIVE;
        at[k].ret_ptr = &r[k];
        at[k].arg_ptr[0] = &fdv;
        at[k].next = k < 2 ? &at[k + 1] : nullptr;
    }
    at[0].nr = SYS_pwrite64;
    at[0].arg_ptr[1] = &p1;
    at[0].arg_ptr[2] = &l1;
    at[0].arg_ptr[3] = &o1;
    at[1].nr = SYS_pwrite64;
    at[1].arg_ptr[1] = &p2;
    at[1].arg_ptr[2] = &l2;
    at[1].arg_ptr[3] = &o2;
    at[2].nr = SYS_fdatasync;
    syslet_uatom *last = nullptr;
    long res = kUnset;
    const asys_cqe e = run_async(at, &last, &res);
    EXPECT_EQ(e.path, ring() ? ASYS_PATH_URING : ASYS_PATH_POOL);
    EXPECT_EQ(r[0], 6);
    EXPECT_EQ(r[1], 5);
    EXPECT_EQ(r[2], 0);
    EXPECT_EQ(res, 0);
    char got[16] = {};
    EXPECT_EQ(pread(wfd, got, sizeof got, 0), 11);
    EXPECT_STREQ(got, "hello links");
    close(wfd);
}

TEST_P(ChainLinks, DataFlowStaysWithTheInterpreter) {
    char buf[2 * 4096];
    pread_atoms c(fd_, buf, 2, SYSLET_STOP_ON_NEGATIVE);
    c.offs[0] = 8192;                                        // short: 1808 bytes
    c.a[1].arg_ptr[2] = reinterpret_cast<unsigned long *>(&c.r[0]);  // length = atom 0's result
    syslet_uatom *last = nullptr;
    long res = 0;
    const asys_cqe e = run_async(c.a, &last, &res);
    EXPECT_EQ(e.path, static_cast<uint32_t>(ASYS_PATH_POOL));
    EXPECT_EQ(c.r[1], static_cast<long>(kSize - 8192)) << "read when atom 1 ran, not at submission";
}

TEST_P(ChainLinks, CancelAChainWaitingOnAPipe) {
    pipe_pair pp;
    char b = 0;
    unsigned long rfd = static_cast<unsigned long>(pp.r), wfd = static_cast<unsigned long>(pp.w),
                  bp = reinterpret_cast<unsigned long>(&b), one = 1;
    long r[2] = {kUnset, kUnset};
    syslet_uatom at[2] = {};
    at[0].nr = SYS_read;
    at[0].flags = SYSLET_STOP_ON_NEGATIVE;
    at[0].ret_ptr = &r[0];
    at[0].arg_ptr[0] = &rfd;
    at[0].arg_ptr[1] = &bp;
    at[0].arg_ptr[2] = &one;
    at[0].next = &at[1];
    at[1].nr = SYS_write;
    at[1].flags = SYSLET_STOP_ON_NEGATIVE;
    at[1].ret_ptr = &r[1];
    at[1].arg_ptr[0] = &wfd;
    at[1].arg_ptr[1] = &bp;
    at[1].arg_ptr[2] = &one;
    pid_t tid = 0;
    if (!ring()) {  // one worker, so the test knows which thread runs the chain
        asys_ctx_destroy(ctx_, ASYS_DESTROY_DRAIN);
        ctx_ = nullptr;
        asys_params one = pool_params(1);
        ASSERT_EQ(asys_ctx_create(&one, &ctx_), 0);
        tid = worker_tid(ctx_);
    }
    syslet_uatom *last = nullptr;
    long res = 0;
    asys_op op;
    asys_prep_chain(&op, at, &last);
    op.ret_ptr = &res;
    op.user_data = 5;
    ASSERT_EQ(asys_submit(ctx_, &op), 0) << "empty pipe: in flight";
    // The pool interrupts a running call with a signal: cancel once the
    // worker is inside read(), so the signal cannot land before it.
    if (!ring()) ASSERT_TRUE(wait_blocked_in(tid, SYS_read));
    const int rc = asys_cancel(ctx_, 5);
    EXPECT_TRUE(rc == 0 || rc == -EALREADY) << rc;
    auto e = reap(ctx_, 1);
    ASSERT_EQ(e.size(), 1u);
    EXPECT_EQ(e[0].res, -ECANCELED);
    EXPECT_EQ(r[0], -ECANCELED);
    EXPECT_EQ(r[1], kUnset) << "nothing after the cancelled atom ran";
    EXPECT_EQ(last, &at[0]);
}

// The seed's async_exec takes the same road: its asynchronous remainder is a
// chain op keyed by the head atom, linked on the ring when it qualifies.
TEST_P(ChainLinks, AsyncExecRemainderIsLinkedToo) {
    syslet_uatom *entries[2] = {};
    ASSERT_EQ(asys_async_register(ctx_, entries, 2), 0);
    pipe_pair in, out;
    char b = 0;
    unsigned long rfd = static_cast<unsigned long>(in.r), wfd = static_cast<unsigned long>(out.w),
                  bp = reinterpret_cast<unsigned long>(&b), one = 1;
    long r[2] = {kUnset, kUnset};
    syslet_uatom at[2] = {};
    for (int k = 0; k < 2; ++k) {
        at[k].flags = SYSLET_STOP_ON_NEGATIVE;
        at[k].ret_ptr = &r[k];
        at[k].arg_ptr[0] = k == 0 ? &rfd : &wfd;
        at[k].arg_ptr[1] = &bp;
        at[k].arg_ptr[2] = &one;
    }
    at[0].nr = SYS_read;
    at[1].nr = SYS_write;
    at[0].next = &at[1];
    ASSERT_EQ(asys_async_exec(ctx_, at), 0) << "empty pipe: the chain goes async";
    ASSERT_EQ(write(in.w, "k", 1), 1);
    ASSERT_EQ(asys_async_wait(ctx_, 1), 1);
    EXPECT_EQ(entries[0], &at[1]);
    EXPECT_EQ(r[0], 1);
    EXPECT_EQ(r[1], 1);
    char got = 0;
    EXPECT_EQ(read(out.r, &got, 1), 1);
    EXPECT_EQ(got, 'k');
    const asys_stats st = stats(ctx_);
    EXPECT_EQ(st.completed_uring, ring() ? 1u : 0u);
    EXPECT_EQ(st.completed_pool, ring() ? 0u : 1u);
}

INSTANTIATE_TEST_SUITE_P(Backends, ChainLinks, ::testing::Values(ASYS_BACKEND_URING, ASYS_BACKEND_POOL),
                         [](const auto &info) { return info.param == ASYS_BACKEND_URING ? "ring" : "pool"; });

}  // namespace
