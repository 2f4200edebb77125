// Threads on demand and the spin tunables: with ASYS_CTX_LAZY_THREADS a
// context whose ops all complete inline starts no thread; the first op that
// must wait starts what it needs, never more than the bound; ATOMIC never
// starts one. The spin fields are checked and honoured.
#include <fcntl.h>
#include <sys/syscall.h>

#include <vector>

#include "asys/socket.h"
#include "helpers.hpp"

using namespace asys_test;

namespace {

TEST(LazyThreads, InlineOpsStartNoThread) {
    {  // runtimes that start helper threads lazily (sanitizers) do it now
        ctx_guard warm;
    }
    temp_dir d;
    int fd = make_file(d.file("f"), 4096);
    ASSERT_GE(fd, 0);
    char buf[4096];
    ASSERT_EQ(pread(fd, buf, sizeof buf, 0), 4096);  // cached
    const unsigned before = thread_count();
    asys_params p = params(4, 0, ASYS_CTX_LAZY_THREADS);
    ctx_guard ctx(&p);
    EXPECT_EQ(thread_count(), before) << "creation starts no thread";
    for (int i = 0; i < 1000; ++i) {
        asys_op op;
        if (i % 2) asys_prep_nop(&op, i);
        else asys_prep_pread(&op, fd, buf, sizeof buf, 0);
        long res = -1;
        op.ret_ptr = &res;
        int rc = asys_submit(ctx, &op);
        if (rc == 0) {  // a page the VM evicted meanwhile: reap it, but it is not inline
            reap(ctx, 1);
            continue;
        }
        ASSERT_EQ(rc, ASYS_DONE);
    }
    asys_stats st = stats(ctx);
    if (st.punted_probe + st.punted_direct == 0) {
        EXPECT_EQ(thread_count(), before) << "every op completed inline: no thread";
        EXPECT_EQ(st.workers, 0u);
    } else {
        GTEST_SKIP() << "SKIPPED: " << st.punted_probe << " cached reads were evicted and punted; "
                     << "the count of threads then proves nothing";
    }
    close(fd);
}

TEST(LazyThreads, TheFirstWaitingOpStartsWhatItNeedsWithinTheBound) {
    {
        ctx_guard warm;
    }
    const unsigned before = thread_count();
    constexpr unsigned kWorkers = 3;
    asys_params p = pool_params(kWorkers, 0, ASYS_CTX_LAZY_THREADS);
    ctx_guard ctx(&p);
    EXPECT_EQ(thread_count(), before);
    // More blocked reads than workers: each takes a worker until the bound.
    std::vector<parked_read> reads(kWorkers + 2);
    for (unsigned i = 0; i < reads.size(); ++i) ASSERT_EQ(reads[i].submit(ctx, i + 1), 0) << i;
    // Bounded wait on kernel state: the workers reach their reads.
    unsigned now = 0;
    for (int i = 0; i < 2000000 && (now = thread_count()) < before + kWorkers; ++i) sched_yield();
    EXPECT_EQ(now, before + kWorkers) << "as many threads as the bound, no more";
    EXPECT_EQ(stats(ctx).workers, kWorkers);
    for (auto &r : reads) ASSERT_EQ(r.release(), 1);
    auto c = reap(ctx, static_cast<unsigned>(reads.size()));
    ASSERT_EQ(c.size(), reads.size());
    for (auto &e : c) EXPECT_EQ(e.res, 1);
    EXPECT_EQ(thread_count(), before + kWorkers);
}

TEST(LazyThreads, AtomicNeverStartsAThread) {
    asys_params p = pool_params(2, 0, ASYS_CTX_LAZY_THREADS);
    ctx_guard ctx(&p);
    asys_op op;
    asys_prep_nop(&op, 1);
    op.flags = ASYS_F_ASYNC | ASYS_F_ATOMIC;
    EXPECT_EQ(asys_submit(ctx, &op), -EAGAIN) << "no idle worker, and ATOMIC does not start one";
    op.flags = ASYS_F_ASYNC;
    uint32_t path = 0;
    EXPECT_EQ(run(ctx, op, &path), 1);
    EXPECT_EQ(path, ASYS_PATH_POOL);
    // Now a worker exists and is idle (or spinning): ATOMIC may use it.
    op.flags = ASYS_F_ASYNC | ASYS_F_ATOMIC;
    long r = 0;
    for (int i = 0; i < 2000000; ++i) {
        r = run(ctx, op);
        if (r != -EAGAIN) break;
        sched_yield();  // the worker is still on its way back to idle
    }
    EXPECT_EQ(r, 1);
}

TEST(LazyThreads, TheRingsReaperStartsWithTheFirstRingOp) {
    {
        ctx_guard warm;
    }
    const unsigned before = thread_count();
    asys_params p = params(2, 0, ASYS_CTX_LAZY_THREADS);
    ctx_guard ctx(&p);
    asys_info info{};
    ASSERT_EQ(asys_ctx_info(ctx, &info), 0);
    EXPECT_EQ(thread_count(), before);
    pipe_pair pp;
    char b = 0;
    long res = 0;
    asys_op op;
    asys_prep_read(&op, pp.r, &b, 1);
    op.flags = ASYS_F_ASYNC;
    op.ret_ptr = &res;
    ASSERT_EQ(asys_submit(ctx, &op), 0);
    ASSERT_EQ(write(pp.w, "q", 1), 1);
    auto c = reap(ctx, 1);
    ASSERT_EQ(c.size(), 1u);
    EXPECT_EQ(c[0].res, 1);
    EXPECT_EQ(c[0].path, async_path(ctx, op));
    // One thread: the reaper (ring) or a worker (pool), not the whole pool.
    EXPECT_EQ(thread_count(), before + 1);
}

TEST(Tunables, SpinFieldsAreCheckedAndHonoured) {
    asys_ctx *c = nullptr;
    asys_params p{};
    p.pool_spin_us = 1000001;
    EXPECT_EQ(asys_ctx_create(&p, &c), -EINVAL) << "more than a second";
    p = asys_params{};
    p.wait_spin_us = 2000000;
    EXPECT_EQ(asys_ctx_create(&p, &c), -EINVAL);
    p = asys_params{};
    p.server_spin_us = 1000001;
    EXPECT_EQ(asys_ctx_create(&p, &c), -EINVAL);
    // No spin anywhere, and a long one: results are the same.
    for (unsigned spin : {unsigned{ASYS_SPIN_NONE}, 1000u}) {
        p = params(2);
        p.pool_spin_us = p.wait_spin_us = p.server_spin_us = spin;
        ctx_guard ctx(&p);
        parked_read r;
        ASSERT_EQ(r.submit(ctx, 9), 0);
        ASSERT_EQ(r.release(), 1);
        auto cq = reap(ctx, 1);
        ASSERT_EQ(cq.size(), 1u);
        EXPECT_EQ(cq[0].res, 1);
        int s = asys_socket_open(ctx);
        ASSERT_GE(s, 0) << "a socket server on a context with spin " << spin;
        close(s);
    }
}

}  // namespace
