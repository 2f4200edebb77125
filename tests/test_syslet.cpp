// Syslets: the seed's API and semantics — stop flags, skip-to-next, data
// flow through arg_ptr, backwards loops with umem_add (cached: synchronous;
// cold: goes async mid-chain), the never-overwrite completion ring,
// async_wait(min), denied calls, bad atoms and the step limit.
#include <sys/syscall.h>
#include <sys/uio.h>

#include <atomic>
#include <cstring>
#include <thread>

#include "asys/syslet.h"
#include "helpers.hpp"
#include "syslet_helpers.hpp"

using namespace asys_test;

namespace {


class Syslet : public ::testing::Test {
protected:
    asys_params p_ = params(4);
    ctx_guard ctx_{&p_};
    syslet_uatom *ring_[8] = {};
    void SetUp() override { ASSERT_EQ(asys_async_register(ctx_, ring_, 8), 0); }
    long exec(syslet_uatom *a) { return asys_async_exec(ctx_, a); }
};

// umem_add(&v, inc) as the tested atom gives exact control of its result.
struct flag_case {
    unsigned long flag;
    long zero, positive, negative;  // 1: the chain stops on that result
};

TEST_F(Syslet, EveryStopFlagWithZeroPositiveNegative) {
    const flag_case cases[] = {
        {SYSLET_STOP_ON_NONZERO, 0, 1, 1},
        {SYSLET_STOP_ON_ZERO, 1, 0, 0},
        {SYSLET_STOP_ON_NEGATIVE, 0, 0, 1},
        {SYSLET_STOP_ON_NON_POSITIVE, 1, 0, 1},
    };
    for (const auto &fc : cases) {
        for (long inc : {0L, 5L, -3L}) {
            unsigned long v = 0, marker = 0, one = 1, vinc = static_cast<unsigned long>(inc);
            unsigned long *vp = &v, *mp = &marker;
            long r1 = 99, r2 = 99;
            syslet_uatom a[2] = {atom(__NR_umem_add, fc.flag, &r1), atom(__NR_umem_add, 0, &r2)};
            a[0].arg_ptr[0] = UL(&vp);
            a[0].arg_ptr[1] = &vinc;
            a[0].next = &a[1];
            a[1].arg_ptr[0] = UL(&mp);
            a[1].arg_ptr[1] = &one;
            const long stop = inc == 0 ? fc.zero : inc > 0 ? fc.positive : fc.negative;
            long ret = exec(a);
            EXPECT_EQ(r1, inc) << "flag " << fc.flag << " inc " << inc;
            if (stop) {
                EXPECT_EQ(ret, reinterpret_cast<long>(&a[0])) << "ended at the stopping atom";
                EXPECT_EQ(marker, 0u) << "flag " << fc.flag << " inc " << inc << ": must stop";
                EXPECT_EQ(r2, 99);
            } else {
                EXPECT_EQ(ret, reinterpret_cast<long>(&a[1]));
                EXPECT_EQ(marker, 1u) << "flag " << fc.flag << " inc " << inc << ": must go on";
            }
        }
    }
}

TEST_F(Syslet, SkipToNextOnStopContinuesAtTheNextAtomInMemory) {
    unsigned long v = 0, zero = 0, m1 = 0, m2 = 0, one = 1;
    unsigned long *vp = &v, *p1 = &m1, *p2 = &m2;
    syslet_uatom a[3] = {atom(__NR_umem_add, SYSLET_STOP_ON_ZERO | SYSLET_SKIP_TO_NEXT_ON_STOP),
                         atom(__NR_umem_add), atom(__NR_umem_add)};
    a[0].arg_ptr[0] = UL(&vp);
    a[0].arg_ptr[1] = &zero;  // result 0: stop condition holds
    a[0].next = &a[2];        // would go to a[2] without the stop
    a[1].arg_ptr[0] = UL(&p1);
    a[1].arg_ptr[1] = &one;
    a[2].arg_ptr[0] = UL(&p2);
    a[2].arg_ptr[1] = &one;
    EXPECT_EQ(exec(a), reinterpret_cast<long>(&a[1]));
    EXPECT_EQ(m1, 1u) << "skipped to a[0] + 1";
    EXPECT_EQ(m2, 0u) << "a[0]->next was not followed";
}

// open -> read the fd just opened -> close: the fd flows through ret_ptr.
TEST_F(Syslet, DataFlowsThroughArgPtr) {
    temp_dir d;
    const std::string path = d.file("flow");
    close(make_file(path, 100));
    char buf[128] = {};
    long fd = -1, nread = -1, closed = -1;
    unsigned long at = static_cast<unsigned long>(AT_FDCWD), flags = O_RDONLY | O_CLOEXEC;
    unsigned long pathp = reinterpret_cast<unsigned long>(path.c_str());
    unsigned long bufp = reinterpret_cast<unsigned long>(buf), len = sizeof buf;
    syslet_uatom a[3] = {atom(SYS_openat, SYSLET_STOP_ON_NEGATIVE, &fd),
                         atom(SYS_read, SYSLET_STOP_ON_NEGATIVE, &nread), atom(SYS_close, 0, &closed)};
    a[0].arg_ptr[0] = &at;
    a[0].arg_ptr[1] = &pathp;
    a[0].arg_ptr[2] = &flags;
    a[0].next = &a[1];
    a[1].arg_ptr[0] = UL(&fd);  // the result of a[0]
    a[1].arg_ptr[1] = &bufp;
    a[1].arg_ptr[2] = &len;
    a[1].next = &a[2];
    a[2].arg_ptr[0] = UL(&fd);
    long ret = exec(a);
    if (ret == 0) ASSERT_EQ(asys_async_wait(ctx_, 1), 1);  // a lookup may miss the cache
    EXPECT_GE(fd, 0);
    EXPECT_EQ(nread, 100);
    EXPECT_EQ(closed, 0);
    EXPECT_EQ(buf[99], pattern(99));
}

// read the whole file in 4 KiB steps: pread -> off += ret -> buf += ret ->
// back to pread, until pread returns 0.
struct file_loop {
    int fd;
    unsigned long off = 0, bufp, len = 4096, fdv;
    unsigned long *offp = &off, *bufpp = &bufp;
    long ret = 0, r_off = 0, r_buf = 0;
    syslet_uatom a[3];
    file_loop(int f, char *buf) : fd(f), bufp(reinterpret_cast<unsigned long>(buf)), fdv(static_cast<unsigned long>(f)) {
        a[0] = atom(SYS_pread64, SYSLET_STOP_ON_NON_POSITIVE, &ret);
        a[0].arg_ptr[0] = &fdv;
        a[0].arg_ptr[1] = &bufp;
        a[0].arg_ptr[2] = &len;
        a[0].arg_ptr[3] = &off;
        a[0].next = &a[1];
        a[1] = atom(__NR_umem_add, 0, &r_off);
        a[1].arg_ptr[0] = UL(&offp);
        a[1].arg_ptr[1] = UL(&ret);
        a[1].next = &a[2];
        a[2] = atom(__NR_umem_add, 0, &r_buf);
        a[2].arg_ptr[0] = UL(&bufpp);
        a[2].arg_ptr[1] = UL(&ret);
        a[2].next = &a[0];  // backwards
    }
};

TEST_F(Syslet, BackwardsLoopReadsAWholeCachedFileSynchronously) {
    temp_dir d;
    constexpr size_t kSize = 200000;  // not a multiple of 4096
    int fd = make_file(d.file("loop"), kSize);
    std::vector<char> warm(kSize), buf(kSize + 4096, 0);
    ASSERT_EQ(pread(fd, warm.data(), kSize, 0), static_cast<ssize_t>(kSize));
    file_loop l(fd, buf.data());
    EXPECT_EQ(exec(l.a), reinterpret_cast<long>(&l.a[0])) << "synchronous; ended at the EOF read";
    EXPECT_EQ(l.ret, 0);
    EXPECT_EQ(l.off, kSize);
    for (size_t i = 0; i < kSize; ++i) ASSERT_EQ(buf[i], pattern(i)) << i;
    close(fd);
}

TEST_F(Syslet, BackwardsLoopGoesAsyncMidChainOnAColdFile) {
    temp_dir d;
    constexpr size_t kSize = 256 * 1024;
    int fd = make_file(d.file("cold"), kSize);
    std::vector<char> buf(kSize + 4096, 0), warm(64 * 1024);
    ASSERT_EQ(fdatasync(fd), 0);
    ASSERT_EQ(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
    posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM);
    ASSERT_EQ(pread(fd, warm.data(), warm.size(), 0), static_cast<ssize_t>(warm.size()));  // first 64 KiB cached
    struct iovec iov{warm.data(), 4096};
    if (preadv2(fd, &iov, 1, kSize - 4096, RWF_NOWAIT) == 4096) GTEST_SKIP() << "SKIPPED: could not drop the cache";
    file_loop l(fd, buf.data());
    ASSERT_EQ(exec(l.a), 0) << "the cached head ran inline, the rest went async";
    // (The chain's variables belong to the chain until it is posted.)
    ASSERT_EQ(asys_async_wait(ctx_, 1), 1);
    EXPECT_EQ(ring_[0], &l.a[0]) << "the ring holds the chain's last atom";
    EXPECT_EQ(l.ret, 0);
    EXPECT_EQ(l.off, kSize);
    for (size_t i = 0; i < kSize; ++i) ASSERT_EQ(buf[i], pattern(i)) << i;
    close(fd);
}

TEST_F(Syslet, RingEntriesAreNeverOverwritten) {
    syslet_uatom *ring[2] = {};
    asys_params p = params(2);
    ctx_guard c(&p);
    ASSERT_EQ(asys_async_register(c, ring, 2), 0);
    unsigned long vs[4] = {}, one = 1;
    unsigned long *vp[4] = {&vs[0], &vs[1], &vs[2], &vs[3]};
    syslet_uatom a[4];
    for (int i = 0; i < 4; ++i) {
        a[i] = atom(__NR_umem_add, SYSLET_ASYNC);  // always asynchronous
        a[i].arg_ptr[0] = UL(&vp[i]);
        a[i].arg_ptr[1] = &one;
    }
    ASSERT_EQ(asys_async_exec(c, &a[0]), 0);
    ASSERT_EQ(asys_async_exec(c, &a[1]), 0);
    ASSERT_EQ(asys_async_wait(c, 2), 2);
    syslet_uatom *first[2] = {ring[0], ring[1]};
    // Ring full: the chain must not overwrite; it completes on the caller.
    EXPECT_EQ(asys_async_exec(c, &a[2]), reinterpret_cast<long>(&a[2]));
    EXPECT_EQ(vs[2], 1u);
    EXPECT_EQ(ring[0], first[0]);
    EXPECT_EQ(ring[1], first[1]);
    ring[1] = nullptr;  // the consumer frees one entry
    ASSERT_EQ(asys_async_exec(c, &a[3]), 0);
    ASSERT_EQ(asys_async_wait(c, 2), 2);
    EXPECT_EQ(ring[0], first[0]) << "never overwritten";
    EXPECT_EQ(ring[1], &a[3]) << "posted into the freed entry";
}

TEST_F(Syslet, AsyncWaitReturnsOnlyAfterMinCompletions) {
    pipe_pair pp;
    char b[3];
    unsigned long fdv = static_cast<unsigned long>(pp.r), one = 1;
    unsigned long bufs[3];
    long res[3];
    syslet_uatom a[3];
    for (int i = 0; i < 3; ++i) {
        bufs[i] = reinterpret_cast<unsigned long>(&b[i]);
        a[i] = atom(SYS_read, 0, &res[i]);
        a[i].arg_ptr[0] = &fdv;
        a[i].arg_ptr[1] = &bufs[i];
        a[i].arg_ptr[2] = &one;
        ASSERT_EQ(exec(&a[i]), 0) << "empty pipe: async";
    }
    std::atomic<long> waited{-1};
    std::thread w([&] { waited = asys_async_wait(ctx_, 2); });
    ASSERT_EQ(write(pp.w, "x", 1), 1);
    while (!__atomic_load_n(&ring_[0], __ATOMIC_ACQUIRE)) sched_yield();  // one completion posted
    EXPECT_EQ(waited.load(), -1) << "one completion is not enough";
    ASSERT_EQ(write(pp.w, "yz", 2), 2);
    w.join();
    EXPECT_GE(waited.load(), 2);
    EXPECT_EQ(asys_async_wait(ctx_, 3), 3);
}

TEST_F(Syslet, DeniedAndBadAtomsStopTheChainWithAClearError) {
    unsigned long m = 0, one = 1;
    unsigned long *mp = &m;
    long r0 = 0, r1 = 0;
    syslet_uatom a[2] = {atom(SYS_fork, 0, &r0), atom(__NR_umem_add, 0, &r1)};
    a[0].next = &a[1];
    a[1].arg_ptr[0] = UL(&mp);
    a[1].arg_ptr[1] = &one;
    EXPECT_EQ(exec(a), reinterpret_cast<long>(&a[0]));
    EXPECT_EQ(r0, -EPERM);
    EXPECT_EQ(m, 0u) << "the chain stopped";
    for (unsigned long nr : {SYS_execve, SYS_exit, SYS_setuid, SYS_rt_sigprocmask}) {
        a[0].nr = nr;
        EXPECT_EQ(exec(a), reinterpret_cast<long>(&a[0]));
        EXPECT_EQ(r0, -EPERM) << nr;
    }
    a[0].nr = 2000;
    exec(a);
    EXPECT_EQ(r0, -ENOSYS);
    a[0].nr = __NR_umem_add;  // null target pointer
    exec(a);
    EXPECT_EQ(r0, -EFAULT);
    a[0].nr = SYS_getpid;
    a[0].flags = 0x100000;
    exec(a);
    EXPECT_EQ(r0, -EINVAL) << "unknown flags";
    EXPECT_EQ(m, 0u);
    EXPECT_EQ(exec(nullptr), -EINVAL);
}

TEST_F(Syslet, StepLimitStopsARunawayLoop) {
    ASSERT_EQ(asys_syslet_step_limit(ctx_, 1000), 0);
    unsigned long v = 0, one = 1;
    unsigned long *vp = &v;
    long r = 0;
    syslet_uatom a = atom(__NR_umem_add, 0, &r);
    a.arg_ptr[0] = UL(&vp);
    a.arg_ptr[1] = &one;
    a.next = &a;  // forever
    EXPECT_EQ(exec(&a), reinterpret_cast<long>(&a));
    EXPECT_EQ(v, 1000u);
    EXPECT_EQ(r, -ELOOP);
}

// A running chain (its worker blocked in read on an empty pipe) and a queued
// one (behind it, on the only worker) are both cancelled: each posts its last
// atom with -ECANCELED, and the atoms after it never run.
TEST(SysletCancel, RunningAndQueuedChains) {
    asys_params p = pool_params(1);
    ctx_guard ctx(&p);
    syslet_uatom *ring[4] = {};
    ASSERT_EQ(asys_async_register(ctx, ring, 4), 0);
    const pid_t tid = worker_tid(ctx);
    pipe_pair pp;
    char b;
    unsigned long fdv = static_cast<unsigned long>(pp.r), bufp = reinterpret_cast<unsigned long>(&b), one = 1;
    unsigned long marker = 0, *mp = &marker;
    long r[2][2];
    syslet_uatom c[2][2];
    for (int k = 0; k < 2; ++k) {
        c[k][0] = atom(SYS_read, 0, &r[k][0]);
        c[k][0].arg_ptr[0] = &fdv;
        c[k][0].arg_ptr[1] = &bufp;
        c[k][0].arg_ptr[2] = &one;
        c[k][0].next = &c[k][1];
        c[k][1] = atom(__NR_umem_add, 0, &r[k][1]);
        c[k][1].arg_ptr[0] = UL(&mp);
        c[k][1].arg_ptr[1] = &one;
        r[k][0] = r[k][1] = 7;
    }
    ASSERT_EQ(asys_async_exec(ctx, c[0]), 0);
    ASSERT_TRUE(wait_blocked_in(tid, SYS_read)) << "chain 0 runs on the worker";
    ASSERT_EQ(asys_async_exec(ctx, c[1]), 0);  // queued behind it
    EXPECT_EQ(asys_async_cancel(ctx, c[1]), 0) << "queued";
    EXPECT_EQ(asys_async_cancel(ctx, c[0]), -EALREADY) << "running: interrupted";
    ASSERT_EQ(asys_async_wait(ctx, 2), 2);
    EXPECT_EQ(r[0][0], -ECANCELED);
    EXPECT_EQ(r[1][0], -ECANCELED);
    EXPECT_EQ(marker, 0u) << "no atom after a cancelled one ran";
    EXPECT_EQ(r[0][1], 7);
    bool saw[2] = {};
    for (auto *e : ring)
        for (int k = 0; k < 2; ++k) saw[k] |= e == &c[k][0];
    EXPECT_TRUE(saw[0] && saw[1]) << "each chain posted its cancelled atom";
    EXPECT_EQ(asys_async_cancel(ctx, c[0]), -ENOENT) << "no longer in flight";
    EXPECT_EQ(asys_async_cancel(ctx, nullptr), -EINVAL);
}

TEST(SysletNoRing, WouldBlockWithoutARingIsENXIO) {
    ctx_guard c;
    pipe_pair pp;
    char b;
    unsigned long fdv = static_cast<unsigned long>(pp.r), bufp = reinterpret_cast<unsigned long>(&b), one = 1;
    long r = 7;
    syslet_uatom a = atom(SYS_read, 0, &r);
    a.arg_ptr[0] = &fdv;
    a.arg_ptr[1] = &bufp;
    a.arg_ptr[2] = &one;
    EXPECT_EQ(asys_async_exec(c, &a), -ENXIO);
    EXPECT_EQ(r, 7) << "the blocking atom did not run";
    EXPECT_EQ(asys_async_wait(c, 1), -ENXIO);
    syslet_uatom *ring[1];
    EXPECT_EQ(asys_async_register(c, nullptr, 1), -EINVAL);
    EXPECT_EQ(asys_async_register(c, ring, 0), -EINVAL);
}

TEST(SysletSeedNames, DefaultContext) {
    static syslet_uatom *ring[4] = {};
    ASSERT_EQ(async_register(ring, 4), 0);
    unsigned long v = 40, two = 2;
    unsigned long *vp = &v;
    long r = 0;
    syslet_uatom a = atom(__NR_umem_add, 0, &r);
    a.arg_ptr[0] = UL(&vp);
    a.arg_ptr[1] = &two;
    EXPECT_EQ(async_exec(&a), reinterpret_cast<long>(&a));
    EXPECT_EQ(r, 42);
    a.flags = SYSLET_ASYNC;
    EXPECT_EQ(async_exec(&a), 0);
    EXPECT_EQ(async_wait(1), 1);
    EXPECT_EQ(ring[0], &a);
    EXPECT_EQ(v, 44u);
    EXPECT_EQ(umem_add(&v, 6), 50u);
    EXPECT_NE(asys_syslet_default_ctx(), nullptr);
}

}  // namespace
