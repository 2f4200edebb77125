// ASYS_OP_CHAIN: a syslet chain submitted as one asys op. It finishes
// inline when no atom blocks, continues on the pool from the first atom that
// would (whichever backend the context has: the ring never takes chains),
// completes through every channel (ret_ptr, cqe, callback), stops with
// -EAGAIN where NOWAIT says so (resumable from *last_out), and cancels.
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include "asys/syslet.h"
#include "helpers.hpp"
#include "syslet_helpers.hpp"

using namespace asys_test;

namespace {


/// getppid -> read(fd, buf, 1) -> umem_add(&counter, 1)
struct read_chain {
    unsigned long fdv, bufp, one = 1, counter = 0, *cp = &counter;
    char b = 0;
    long r[3] = {7, 7, 7};
    syslet_uatom a[3];
    explicit read_chain(int fd) : fdv(static_cast<unsigned long>(fd)), bufp(reinterpret_cast<unsigned long>(&b)) {
        a[0] = atom(SYS_getppid, SYSLET_STOP_ON_NEGATIVE, &r[0]);
        a[0].next = &a[1];
        a[1] = atom(SYS_read, SYSLET_STOP_ON_NON_POSITIVE, &r[1]);
        a[1].arg_ptr[0] = &fdv;
        a[1].arg_ptr[1] = &bufp;
        a[1].arg_ptr[2] = &one;
        a[1].next = &a[2];
        a[2] = atom(__NR_umem_add, 0, &r[2]);
        a[2].arg_ptr[0] = UL(&cp);
        a[2].arg_ptr[1] = &one;
    }
};

/// A chain op over `c`: *last and *res receive the last atom and result.
asys_op chain_op(read_chain &c, syslet_uatom **last, long *res, uint32_t flags = 0, uint64_t user_data = 0) {
    asys_op op;
    asys_prep_chain(&op, c.a, last);
    op.ret_ptr = res;
    op.flags = flags;
    op.user_data = user_data;
    return op;
}

TEST(ChainOp, FinishesInlineWhenNothingBlocks) {
    ctx_guard ctx;
    pipe_pair pp;
    ASSERT_EQ(write(pp.w, "x", 1), 1);
    read_chain c(pp.r);
    syslet_uatom *last = nullptr;
    long res = -1;
    asys_op op = chain_op(c, &last, &res);
    EXPECT_EQ(asys_submit(ctx, &op), ASYS_DONE);
    EXPECT_EQ(last, &c.a[2]);
    EXPECT_EQ(res, 1) << "the last atom's result";
    EXPECT_EQ(c.r[0], getppid());
    EXPECT_EQ(c.r[1], 1);
    EXPECT_EQ(c.b, 'x');
    EXPECT_EQ(c.counter, 1u);
    EXPECT_EQ(stats(ctx).done_inline, 1u);
}

TEST(ChainOp, ContinuesOnThePoolFromTheAtomThatWouldBlock) {
    ctx_guard ctx;
    pipe_pair pp;
    read_chain c(pp.r);
    syslet_uatom *last = nullptr;
    long res = -1;
    asys_op op = chain_op(c, &last, &res, 0, 42);
    ASSERT_EQ(asys_submit(ctx, &op), 0) << "the read would block: the caller goes on";
    EXPECT_EQ(c.r[0], getppid()) << "the atom before it ran inline";
    // (c.r[1] is not read here: the worker writes it once the pipe has data,
    // an ordering TSan cannot see through the pipe.)
    ASSERT_EQ(write(pp.w, "y", 1), 1);
    auto e = reap(ctx, 1);
    ASSERT_EQ(e.size(), 1u);
    EXPECT_EQ(e[0].user_data, 42u);
    EXPECT_EQ(e[0].opcode, static_cast<uint32_t>(ASYS_OP_CHAIN));
    EXPECT_EQ(e[0].path, static_cast<uint32_t>(ASYS_PATH_POOL));
    EXPECT_EQ(e[0].res, 1);
    EXPECT_EQ(res, 1);
    EXPECT_EQ(last, &c.a[2]);
    EXPECT_EQ(c.b, 'y');
    EXPECT_EQ(c.counter, 1u);
    EXPECT_EQ(stats(ctx).punted_probe, 1u);
}

TEST(ChainOp, StopFlagEndsTheOpWithThatAtomsResult) {
    ctx_guard ctx;
    pipe_pair pp;
    close(pp.w);
    pp.w = -1;  // EOF: read returns 0, STOP_ON_NON_POSITIVE ends the chain
    read_chain c(pp.r);
    syslet_uatom *last = nullptr;
    long res = -1;
    asys_op op = chain_op(c, &last, &res);
    EXPECT_EQ(asys_submit(ctx, &op), ASYS_DONE);
    EXPECT_EQ(last, &c.a[1]);
    EXPECT_EQ(res, 0);
    EXPECT_EQ(c.counter, 0u);
}

TEST(ChainOp, CallbackDelivery) {
    ctx_guard ctx;
    pipe_pair pp;
    read_chain c(pp.r);
    struct got {
        std::atomic<int> n{0};
        asys_cqe cqe{};
    } g;
    asys_op op;
    asys_prep_chain(&op, c.a, nullptr);
    op.callback = [](const asys_cqe *e, void *arg) {
        auto *gg = static_cast<got *>(arg);
        gg->cqe = *e;
        gg->n.fetch_add(1);
        gg->n.notify_all();
    };
    op.cb_arg = &g;
    ASSERT_EQ(asys_submit(ctx, &op), 0);
    ASSERT_EQ(write(pp.w, "z", 1), 1);
    g.n.wait(0);
    EXPECT_EQ(g.n.load(), 1);
    EXPECT_EQ(g.cqe.res, 1);
    EXPECT_EQ(g.cqe.opcode, static_cast<uint32_t>(ASYS_OP_CHAIN));
    asys_cqe extra;
    EXPECT_EQ(asys_peek(ctx, &extra, 1), 0) << "a callback replaces the cqe";
}

TEST(ChainOp, NowaitStopsWhereItWouldBlockAndResumes) {
    ctx_guard ctx;
    pipe_pair pp;
    read_chain c(pp.r);
    syslet_uatom *last = nullptr;
    long res = -1;
    asys_op op = chain_op(c, &last, &res, ASYS_F_NOWAIT);
    EXPECT_EQ(asys_submit(ctx, &op), -EAGAIN);
    EXPECT_EQ(last, &c.a[1]) << "the first atom that did not run";
    EXPECT_EQ(c.r[0], getppid()) << "atoms before it ran and cannot be undone";
    EXPECT_EQ(c.r[1], 7);
    EXPECT_EQ(res, -1) << "no result: the op was not accepted";
    ASSERT_EQ(write(pp.w, "w", 1), 1);
    asys_prep_chain(&op, last, &last);  // resume from there
    op.ret_ptr = &res;
    EXPECT_EQ(asys_submit(ctx, &op), ASYS_DONE);
    EXPECT_EQ(last, &c.a[2]);
    EXPECT_EQ(c.b, 'w');
    EXPECT_EQ(c.counter, 1u);
    asys_cqe extra;
    EXPECT_EQ(asys_peek(ctx, &extra, 1), 0);
}

TEST(ChainOp, AsyncFlagSkipsTheInlineRunAndSyncRunsAllOnTheCaller) {
    ctx_guard ctx;
    pipe_pair pp;
    ASSERT_EQ(write(pp.w, "ab", 2), 2);
    read_chain c(pp.r);
    syslet_uatom *last = nullptr;
    asys_op op;
    asys_prep_chain(&op, c.a, &last);
    op.flags = ASYS_F_ASYNC;
    ASSERT_EQ(asys_submit(ctx, &op), 0);
    auto e = reap(ctx, 1);
    ASSERT_EQ(e.size(), 1u);
    EXPECT_EQ(e[0].path, static_cast<uint32_t>(ASYS_PATH_POOL));
    EXPECT_EQ(stats(ctx).punted_direct, 1u);
    EXPECT_EQ(c.b, 'a');
    read_chain s(pp.r);
    asys_prep_chain(&op, s.a, &last);
    op.flags = ASYS_F_SYNC;
    long res = -1;
    op.ret_ptr = &res;
    EXPECT_EQ(asys_submit(ctx, &op), ASYS_DONE);
    EXPECT_EQ(s.b, 'b');
    EXPECT_EQ(res, 1);
}

TEST(ChainOp, CancelQueuedAndRunning) {
    asys_params p = pool_params(1);
    ctx_guard ctx(&p);
    const pid_t tid = worker_tid(ctx);
    pipe_pair pp;
    read_chain c0(pp.r), c1(pp.r);
    syslet_uatom *last[2] = {};
    long res[2] = {-1, -1};
    read_chain *cs[2] = {&c0, &c1};
    for (int k = 0; k < 2; ++k) {
        asys_op op;
        asys_prep_chain(&op, cs[k]->a, &last[k]);
        op.ret_ptr = &res[k];
        op.user_data = 100 + static_cast<uint64_t>(k);
        ASSERT_EQ(asys_submit(ctx, &op), 0);
        if (k == 0) ASSERT_TRUE(wait_blocked_in(tid, SYS_read)) << "chain 0 runs on the worker";
    }
    EXPECT_EQ(asys_cancel(ctx, 101), 0) << "queued";
    EXPECT_EQ(asys_cancel(ctx, 100), -EALREADY) << "running: interrupted";
    auto e = reap(ctx, 2);
    ASSERT_EQ(e.size(), 2u);
    for (auto &x : e) EXPECT_EQ(x.res, -ECANCELED);
    for (int k = 0; k < 2; ++k) {
        EXPECT_EQ(res[k], -ECANCELED);
        EXPECT_EQ(cs[k]->r[1], -ECANCELED) << "the atom that was cut short or never ran";
        EXPECT_EQ(last[k], &cs[k]->a[1]);
        EXPECT_EQ(cs[k]->counter, 0u) << "nothing after it ran";
    }
}

TEST(ChainOp, StepLimitAndDeniedCallsApply) {
    ctx_guard ctx;
    ASSERT_EQ(asys_syslet_step_limit(ctx, 10), 0);
    unsigned long v = 0, *vp = &v, one = 1;
    long r = 0;
    syslet_uatom loop = atom(__NR_umem_add, 0, &r);
    loop.arg_ptr[0] = UL(&vp);
    loop.arg_ptr[1] = &one;
    loop.next = &loop;  // forever
    long res = 0;
    asys_op op;
    asys_prep_chain(&op, &loop, nullptr);
    op.ret_ptr = &res;
    EXPECT_EQ(asys_submit(ctx, &op), ASYS_DONE);
    EXPECT_EQ(res, -ELOOP);
    EXPECT_EQ(v, 10u);
    syslet_uatom deny = atom(SYS_fork, 0, &r);
    asys_prep_chain(&op, &deny, nullptr);
    op.ret_ptr = &res;
    EXPECT_EQ(asys_submit(ctx, &op), ASYS_DONE);
    EXPECT_EQ(res, -EPERM);
}

TEST(ChainOp, BadInput) {
    ctx_guard ctx;
    asys_op op;
    asys_prep_chain(&op, nullptr, nullptr);
    EXPECT_EQ(asys_submit(ctx, &op), -EFAULT);
    syslet_uatom a = atom(SYS_getppid);
    asys_prep_chain(&op, &a, nullptr);
    op.args[2] = 1;  // internal state: must be zero
    EXPECT_EQ(asys_submit(ctx, &op), -EINVAL);
    asys_prep_chain(&op, &a, nullptr);
    op.nr = SYS_getppid;
    EXPECT_EQ(asys_submit(ctx, &op), -EINVAL);
    EXPECT_STREQ(asys_opcode_name(ASYS_OP_CHAIN), "chain");
}

}  // namespace

// The ring's first, nonblocking attempt at a /dev/zero read stops after a
// page when the CPU is wanted (need_resched), where read(2) goes on: a
// chain atom run as a linked SQE and an ASYS_F_ASYNC op both give
// read(2)'s whole count. A thread spinning on the same CPU makes the early
// stop likely; the results must be whole either way.
TEST(ChainOp, LongDevZeroReadThroughTheRingIsWhole) {
    ctx_guard ctx;
    const int zero = open("/dev/zero", O_RDONLY | O_CLOEXEC);
    ASSERT_GE(zero, 0);
    constexpr unsigned long kLen = 16ul << 20;
    std::vector<char> buf(kLen, 1);
    const cpu_contention busy;
    for (int i = 0; i < 6; ++i) {
        unsigned long fdv = static_cast<unsigned long>(zero), bufp = reinterpret_cast<unsigned long>(buf.data()),
                      len = kLen, off = 0;
        long r = 7;
        syslet_uatom a = atom(SYS_pread64, SYSLET_ASYNC, &r);
        a.arg_ptr[0] = &fdv;
        a.arg_ptr[1] = &bufp;
        a.arg_ptr[2] = &len;
        a.arg_ptr[3] = &off;
        syslet_uatom *last = nullptr;
        asys_op op;
        asys_prep_chain(&op, &a, &last);
        EXPECT_EQ(run(ctx, op), static_cast<long>(kLen)) << "chain op, round " << i;
        EXPECT_EQ(r, static_cast<long>(kLen)) << "chain atom, round " << i;
        asys_prep_pread(&op, zero, buf.data(), kLen, 0);
        op.flags = ASYS_F_ASYNC;
        EXPECT_EQ(run(ctx, op), static_cast<long>(kLen)) << "ASYNC op, round " << i;
    }
    close(zero);
}

namespace {

/// A one-atom chain op: `nr` with the arguments `args` (read when it runs).
struct one_atom_chain {
    unsigned long v[4];
    long r = 7;
    syslet_uatom a;
    syslet_uatom *last = nullptr;
    one_atom_chain(unsigned long nr, unsigned long a0, unsigned long a1, unsigned long a2, unsigned long a3 = 0)
        : v{a0, a1, a2, a3}, a(atom(nr, 0, &r)) {
        for (int i = 0; i < 4; ++i) a.arg_ptr[i] = &v[i];
    }
    asys_op op() {
        asys_op o;
        asys_prep_chain(&o, &a, &last);
        return o;
    }
};

/// How many of the file's first `pages` pages are in the page cache.
size_t cached_pages(int fd, size_t pages) {
    void *m = mmap(nullptr, pages * 4096, PROT_READ, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) return pages;
    std::vector<unsigned char> vec(pages);
    size_t n = pages;
    if (mincore(m, pages * 4096, vec.data()) == 0) {
        n = 0;
        for (unsigned char c : vec) n += c & 1;
    }
    munmap(m, pages * 4096);
    return n;
}

}  // namespace

// An atom run inline whose nonblocking read comes back short where the
// call would go on (a file whose tail is not in the page cache) runs again,
// whole, on the pool: the atom's result is the whole file, as the call's,
// and a read at the file position leaves the position where read(2) would.
TEST(ChainOp, PartlyCachedFileReadAtomsReadTheWholeFile) {
    ctx_guard ctx;
    temp_dir dir;
    constexpr size_t kPages = 32, kHead = 4;
    const int fd = make_file(dir.file("part"), kPages * 4096);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(fdatasync(fd), 0);  // clean pages: DONTNEED can drop them
    std::vector<char> buf(kPages * 4096);
    for (const unsigned long nr : {SYS_pread64, SYS_read, SYS_readv}) {
        SCOPED_TRACE(nr);
        posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM);
        ASSERT_EQ(pread(fd, buf.data(), kHead * 4096, 0), static_cast<ssize_t>(kHead * 4096));
        if (cached_pages(fd, kPages) == kPages)
            GTEST_SKIP() << "SKIPPED: the page cache kept the whole file (DONTNEED dropped nothing here)";
        ASSERT_EQ(lseek(fd, 0, SEEK_SET), 0);
        std::fill(buf.begin(), buf.end(), 0);
        const unsigned long fdv = static_cast<unsigned long>(fd), len = kPages * 4096;
        struct iovec iov[2] = {{buf.data(), len / 2}, {buf.data() + len / 2, len / 2}};
        one_atom_chain c = nr == SYS_readv ? one_atom_chain(nr, fdv, reinterpret_cast<unsigned long>(iov), 2)
                                           : one_atom_chain(nr, fdv, reinterpret_cast<unsigned long>(buf.data()), len, 0);
        EXPECT_EQ(run(ctx, c.op()), static_cast<long>(len));
        EXPECT_EQ(c.r, static_cast<long>(len)) << "the atom's result is the whole file, as the call's";
        for (size_t i = 0; i < len; i += 4096) ASSERT_EQ(buf[i], pattern(i)) << "byte " << i;
        if (nr != SYS_pread64) EXPECT_EQ(lseek(fd, 0, SEEK_CUR), static_cast<off_t>(len)) << "the file position";
    }
    close(fd);
}

// The same for a memory device's vector that the nonblocking read cut short
// (the CPU was wanted): readv(2) of /dev/zero reads it all.
TEST(ChainOp, LongDevZeroVectorInlineIsWhole) {
    ctx_guard ctx;
    const int zero = open("/dev/zero", O_RDONLY | O_CLOEXEC);
    ASSERT_GE(zero, 0);
    constexpr size_t kLen = 16u << 20;
    std::vector<char> a(kLen, 1), b(kLen, 1);
    struct iovec iov[2] = {{a.data(), kLen}, {b.data(), kLen}};
    const cpu_contention busy;
    for (int i = 0; i < 6; ++i) {
        one_atom_chain c(SYS_readv, static_cast<unsigned long>(zero), reinterpret_cast<unsigned long>(iov), 2);
        EXPECT_EQ(run(ctx, c.op()), static_cast<long>(2 * kLen)) << "round " << i;
        EXPECT_EQ(c.r, static_cast<long>(2 * kLen)) << "round " << i;
    }
    close(zero);
}
