// asys_submit_batch: with a ring, ops the ring takes skip the inline probe
// and enter the kernel together; those the kernel completes during that
// enter are reported ASYS_DONE exactly as inline ops are (result in
// ret_ptr, no cqe unless asked), the rest complete later with a cqe. Every
// op is accounted for exactly once. Without a ring, each op is probed.
#include <sys/syscall.h>
#include <sys/uio.h>

#include <cstring>
#include <vector>

#include "base/fault.hpp"
#include "helpers.hpp"

using namespace asys_test;
namespace fault = asys::internal::fault;

namespace {

bool has_ring(asys_ctx *ctx) { return async_path(ctx, ASYS_OP_PREAD) == ASYS_PATH_URING; }

class Batch : public ::testing::Test {
public:
    asys_params p_ = params(4);
    ctx_guard ctx_{&p_};
    temp_dir dir_;
    void TearDown() override { fault::probe_failures = 0; }

    // A cached file of `blocks` 4 KiB blocks.
    int cached_file(unsigned blocks) {
        const int fd = make_file(dir_.file("f"), blocks * 4096u);
        std::vector<char> warm(blocks * 4096u);
        EXPECT_EQ(pread(fd, warm.data(), warm.size(), 0), static_cast<ssize_t>(warm.size()));
        return fd;
    }
};

void check_block(const char *buf, size_t block) {
    for (size_t i = 0; i < 4096; ++i)
        ASSERT_EQ(buf[i], pattern(block * 4096 + i)) << "byte " << i << " of block " << block;
}

// The core contract, proved on the ring: an injected probe error would be
// every op's result if the batch probed inline; instead each cached read
// gives its bytes, ASYS_DONE in its status, and no cqe.
TEST_F(Batch, CachedReadsFinishDuringTheEnterWithoutAProbe) {
    if (!has_ring(ctx_)) GTEST_SKIP() << "SKIPPED: no ring here; Batch.WithoutARingEachOpIsProbed covers the pool";
    constexpr unsigned kN = 32;
    const int fd = cached_file(kN);
    std::vector<char> buf(kN * 4096);
    std::vector<long> res(kN, -999);
    std::vector<asys_op> ops(kN);
    for (unsigned i = 0; i < kN; ++i) {
        asys_prep_pread(&ops[i], fd, &buf[i * 4096], 4096, i * 4096);
        ops[i].ret_ptr = &res[i];
        ops[i].user_data = i;
    }
    fault::probe_errno = EIO;
    fault::probe_failures = 1000;
    std::vector<int> status(kN, -1);
    ASSERT_EQ(asys_submit_batch(ctx_, ops.data(), kN, status.data()), static_cast<int>(kN));
    EXPECT_EQ(fault::probe_failures.load(), 1000) << "no op was probed";
    fault::probe_failures = 0;
    unsigned done = 0, later = 0;
    for (unsigned i = 0; i < kN; ++i) {
        ASSERT_TRUE(status[i] == ASYS_DONE || status[i] == 0) << status[i];
        if (status[i] == ASYS_DONE) {
            ++done;
            EXPECT_EQ(res[i], 4096);
            check_block(&buf[i * 4096], i);
        } else {
            ++later;
        }
    }
    // Ops not finished during the enter (a page the kernel found locked)
    // complete later, each with exactly one cqe.
    auto c = reap(ctx_, later);
    ASSERT_EQ(c.size(), later);
    for (const auto &e : c) {
        ASSERT_LT(e.user_data, kN);
        EXPECT_EQ(status[e.user_data], 0) << "a cqe for an op reported done";
        EXPECT_EQ(e.res, 4096);
        EXPECT_EQ(res[e.user_data], 4096);
        check_block(&buf[e.user_data * 4096], e.user_data);
    }
    asys_cqe extra;
    EXPECT_EQ(asys_peek(ctx_, &extra, 1), 0) << "no cqe for ops reported done";
    EXPECT_GT(done, kN / 2) << "cached reads finish during the enter";
    const asys_stats st = stats(ctx_);
    EXPECT_EQ(st.submitted, kN);
    EXPECT_EQ(st.done_inline, done);
    EXPECT_EQ(st.punted_direct + st.punted_probe, later);
    EXPECT_EQ(st.inflight, 0u);
}

// Inline ops that must post a cqe (CQE_ALWAYS, or no ret_ptr) still do when
// they finish during the enter, and report ASYS_DONE.
TEST_F(Batch, DoneDuringTheEnterStillPostsTheCqeItAskedFor) {
    if (!has_ring(ctx_)) GTEST_SKIP() << "SKIPPED: no ring here; Batch.WithoutARingEachOpIsProbed covers the pool";
    const int fd = cached_file(2);
    char a[4096], b[4096];
    long ra = -999;
    asys_op ops[2];
    asys_prep_pread(&ops[0], fd, a, 4096, 0);
    ops[0].flags = ASYS_F_CQE_ALWAYS;
    ops[0].ret_ptr = &ra;
    ops[0].user_data = 10;
    asys_prep_pread(&ops[1], fd, b, 4096, 4096);  // no ret_ptr: the cqe is the only way
    ops[1].user_data = 11;
    int status[2] = {-1, -1};
    ASSERT_EQ(asys_submit_batch(ctx_, ops, 2, status), 2);
    auto c = reap(ctx_, 2);
    ASSERT_EQ(c.size(), 2u);
    for (const auto &e : c) {
        EXPECT_EQ(e.res, 4096);
        EXPECT_TRUE(e.user_data == 10 || e.user_data == 11);
    }
    if (status[0] == ASYS_DONE) EXPECT_EQ(ra, 4096);
    check_block(a, 0);
    check_block(b, 1);
}

// A read that would block (an empty pipe) gets status 0 and its cqe once
// data arrives; the cached reads beside it still finish during the enter.
TEST_F(Batch, OpsThatWouldBlockCompleteLaterWithOneCqe) {
    const int fd = cached_file(4);
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    char pipe_buf[8] = {};
    char buf[3][4096];
    long res[4] = {-999, -999, -999, -999};
    asys_op ops[4];
    asys_prep_pread(&ops[0], fd, buf[0], 4096, 0);
    asys_prep_read(&ops[1], p[0], pipe_buf, sizeof pipe_buf);
    asys_prep_pread(&ops[2], fd, buf[1], 4096, 4096);
    asys_prep_pread(&ops[3], fd, buf[2], 4096, 8192);
    for (unsigned i = 0; i < 4; ++i) {
        ops[i].ret_ptr = &res[i];
        ops[i].user_data = i;
    }
    int status[4] = {-1, -1, -1, -1};
    ASSERT_EQ(asys_submit_batch(ctx_, ops, 4, status), 4);
    EXPECT_EQ(status[1], 0) << "an empty pipe: not done";
    unsigned later = 0;
    for (unsigned i = 0; i < 4; ++i) later += status[i] == 0;
    ASSERT_EQ(write(p[1], "hello", 5), 5);
    auto c = reap(ctx_, later);
    ASSERT_EQ(c.size(), later);
    for (const auto &e : c) EXPECT_EQ(status[e.user_data], 0);
    EXPECT_EQ(res[1], 5);
    EXPECT_EQ(memcmp(pipe_buf, "hello", 5), 0);
    for (unsigned i = 0; i < 3; ++i) check_block(buf[i], i);
    close(p[0]);
    close(p[1]);
}

// Batches longer than one window (64 ops) enter the kernel once per window;
// every op is still reported once: ASYS_DONE or one cqe.
TEST_F(Batch, LongBatchesAccountForEveryOpOnce) {
    constexpr unsigned kN = 300, kBlocks = 16;
    const int fd = cached_file(kBlocks);
    std::vector<char> buf(kN * 4096);
    std::vector<long> res(kN, -999);
    std::vector<asys_op> ops(kN);
    for (unsigned i = 0; i < kN; ++i) {
        asys_prep_pread(&ops[i], fd, &buf[i * 4096], 4096, (i % kBlocks) * 4096);
        ops[i].ret_ptr = &res[i];
        ops[i].user_data = i;
    }
    std::vector<int> status(kN, -1);
    ASSERT_EQ(asys_submit_batch(ctx_, ops.data(), kN, status.data()), static_cast<int>(kN));
    unsigned later = 0;
    for (unsigned i = 0; i < kN; ++i) {
        ASSERT_TRUE(status[i] == ASYS_DONE || status[i] == 0);
        later += status[i] == 0;
    }
    auto c = reap(ctx_, later);
    ASSERT_EQ(c.size(), later);
    std::vector<int> seen(kN, 0);
    for (const auto &e : c) ++seen[e.user_data];
    for (unsigned i = 0; i < kN; ++i) {
        EXPECT_EQ(seen[i], status[i] == 0 ? 1 : 0) << "op " << i;
        EXPECT_EQ(res[i], 4096);
        check_block(&buf[i * 4096], i % kBlocks);
    }
    asys_cqe extra;
    EXPECT_EQ(asys_peek(ctx_, &extra, 1), 0);
    EXPECT_EQ(stats(ctx_).inflight, 0u);
}

// A batch's plain reads take room for the reads after them in one go; an
// op outside the window in the middle (a NOP without ret_ptr, which needs
// room for its cqe) and a batch cut short by a bad op give that room back:
// on a context of 4, the NOP is accepted, and afterwards 4 more ops that
// each hold room are accepted too (none is refused as full).
TEST_F(Batch, RoomTakenAheadForReadsIsGivenBackToOtherOpsAndAtTheEnd) {
    asys_params p = params(2, 4);
    ctx_guard small(&p);
    const int fd = cached_file(4);
    char buf[4][4096];
    long res[4] = {-999, -999, -999, -999};
    asys_op ops[6];
    asys_prep_pread(&ops[0], fd, buf[0], 4096, 0);
    asys_prep_pread(&ops[1], fd, buf[1], 4096, 4096);
    asys_prep_nop(&ops[2], 7);  // no ret_ptr: room for its cqe first
    asys_prep_pread(&ops[3], fd, buf[2], 4096, 8192);
    asys_prep_pread(&ops[4], fd, buf[3], 4096, 12288);
    asys_prep_nop(&ops[5], 0);
    ops[5].opcode = ASYS_OP__COUNT;  // not accepted: the batch ends before it
    const int read_op[4] = {0, 1, 3, 4};
    for (int k = 0; k < 4; ++k) {
        ops[read_op[k]].ret_ptr = &res[k];
        ops[read_op[k]].user_data = 100 + static_cast<uint64_t>(k);
    }
    ops[2].user_data = 2;
    int status[6] = {-1, -1, -1, -1, -1, -1};
    ASSERT_EQ(asys_submit_batch(small, ops, 6, status), 5);
    EXPECT_EQ(status[5], -EINVAL);
    unsigned later = 0;
    for (int i = 0; i < 5; ++i) {
        ASSERT_TRUE(status[i] == ASYS_DONE || status[i] == 0) << "op " << i << ": " << status[i];
        later += status[i] == 0 || i == 2;  // the NOP posts its cqe even when done inline
    }
    auto c = reap(small, later);
    ASSERT_EQ(c.size(), later);
    for (int k = 0; k < 4; ++k) {
        EXPECT_EQ(res[k], 4096);
        check_block(buf[k], static_cast<size_t>(k));
    }
    EXPECT_EQ(stats(small).inflight, 0u);
    // Two reads and a bad op: the first read took room for three, the
    // batch ends with one unit unused.
    asys_op cut[3] = {ops[0], ops[1], ops[5]};
    res[0] = res[1] = -999;
    ASSERT_EQ(asys_submit_batch(small, cut, 3, status), 2);
    later = (status[0] == 0) + (status[1] == 0);
    EXPECT_EQ(reap(small, later).size(), later);
    EXPECT_EQ(res[0], 4096);
    EXPECT_EQ(res[1], 4096);
    // All the room is back: 4 ops that each hold a unit until reaped.
    asys_op nop;
    for (int i = 0; i < 4; ++i) {
        asys_prep_nop(&nop, i);
        const int rc = asys_submit(small, &nop);
        ASSERT_TRUE(rc == 0 || rc == ASYS_DONE) << "op " << i << ": " << rc;
    }
    EXPECT_EQ(reap(small, 4).size(), 4u);
}

// Same result as the system call inside a batch, for arguments the ring
// must not take (offset -1, a pipe at an offset, a length past 4 GiB) and
// for a closed fd.
TEST_F(Batch, BadArgumentsGiveTheSystemCallsResult) {
    const int fd = cached_file(1);
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    char buf[4096];
    long res[4] = {-999, -999, -999, -999};
    asys_op ops[4];
    asys_prep_pread(&ops[0], fd, buf, 4096, static_cast<off_t>(-1));
    asys_prep_pread(&ops[1], p[0], buf, 16, 0);
    asys_prep_pread(&ops[2], fd, buf, (size_t{1} << 32) + 10, 0);  // as pread(2) says (below)
    asys_prep_pread(&ops[3], 1000, buf, 16, 0);
    for (unsigned i = 0; i < 4; ++i) {
        ops[i].ret_ptr = &res[i];
        ops[i].user_data = i;
    }
    int status[4];
    ASSERT_EQ(asys_submit_batch(ctx_, ops, 4, status), 4);
    unsigned later = 0;
    for (int s : status) later += s == 0;
    ASSERT_EQ(reap(ctx_, later).size(), later);
    EXPECT_EQ(res[0], -EINVAL);
    EXPECT_EQ(res[1], -ESPIPE);
    // 4096 (a 4 KiB file), or -EFAULT when buf + 4 GiB passes the top of
    // the address space (a stack buffer): whatever the call itself says.
    const long plain = syscall(SYS_pread64, fd, buf, (size_t{1} << 32) + 10, 0);
    EXPECT_EQ(res[2], plain < 0 ? -errno : plain);
    EXPECT_EQ(res[3], -EBADF);
    close(p[0]);
    close(p[1]);
}

// A batch of three: a 4 KiB read of a cached file's first block at offset
// 0, a dup2 (run inline) that puts a pipe holding "pipe" behind the file's
// number, and a 16-byte read of the number at offset 0; `read_flags` on
// both reads. Checks what the dup2 and the second read must give (-ESPIPE,
// as pread(2) says of a pipe) and that the pipe's bytes stay unread;
// returns the first read's result.
long read_dup2_read(Batch &t, asys_ctx *ctx, uint32_t read_flags) {
    const int fd = t.cached_file(1);
    int p[2];
    EXPECT_EQ(pipe2(p, O_CLOEXEC), 0);
    EXPECT_EQ(write(p[1], "pipe", 4), 4);
    char buf[2][4096];
    long res[3] = {-999, -999, -999};
    asys_op ops[3];
    asys_prep_pread(&ops[0], fd, buf[0], 4096, 0);
    const uint64_t args[6] = {static_cast<uint64_t>(p[0]), static_cast<uint64_t>(fd), 0, 0, 0, 0};
    asys_prep_syscall(&ops[1], SYS_dup2, args);
    ops[1].flags |= ASYS_F_SYNC;
    asys_prep_pread(&ops[2], fd, buf[1], 16, 0);
    ops[0].flags |= read_flags;
    ops[2].flags |= read_flags;
    for (unsigned i = 0; i < 3; ++i) {
        ops[i].ret_ptr = &res[i];
        ops[i].user_data = i;
    }
    int status[3];
    EXPECT_EQ(asys_submit_batch(ctx, ops, 3, status), 3);
    unsigned later = 0;
    for (int s : status) later += s == 0;
    EXPECT_EQ(reap(ctx, later).size(), later);
    if (res[0] == 4096) check_block(buf[0], 0);
    EXPECT_EQ(res[1], fd);
    EXPECT_EQ(res[2], -ESPIPE) << "a positional read of a pipe";
    char left[8];
    EXPECT_EQ(read(p[0], left, sizeof left), 4) << "the pipe's bytes were not taken";
    close(fd);
    close(p[0]);
    close(p[1]);
    return res[0];
}

// A batch remembers which fd numbers seek (one lseek per fd, not per op)
// only until the window enters the kernel: an op outside the window (here
// a dup2 that puts a pipe behind the number) enters it first, and may have
// given the number to another file. The first read (in the window, or
// probed inline without a ring) ran before the dup2.
TEST_F(Batch, AnFdNumberGivenToAPipeMidBatchIsAskedAgain) { EXPECT_EQ(read_dup2_read(*this, ctx_, 0), 4096); }

// Forced-async reads wait plugged until the batch enters the kernel; an op
// after them that gives their fd number to another file enters it for them
// first. So on the ring the first read reads the file (never the pipe,
// which io_uring reads at any offset); the second takes the batch's lseek
// answer, asked again after the dup2.
TEST_F(Batch, ForcedAsyncReadsEnterTheKernelBeforeAnOpThatChangesTheirFd) {
    const long first = read_dup2_read(*this, ctx_, ASYS_F_ASYNC);
    if (has_ring(ctx_)) {
        EXPECT_EQ(first, 4096) << "the read queued before the dup2 reads the file";
    } else {
        // A pool worker runs it whenever it can: before the dup2 or after.
        EXPECT_TRUE(first == 4096 || first == -ESPIPE) << first;
    }
}

// Without a ring, each op of a batch is probed inline (the injected probe
// error is the op's result).
TEST_F(Batch, WithoutARingEachOpIsProbed) {
    asys_params pp = pool_params(2);
    ctx_guard pool{&pp};
    const int fd = cached_file(2);
    char buf[2][4096];
    long res[2] = {-999, -999};
    asys_op ops[2];
    for (unsigned i = 0; i < 2; ++i) {
        asys_prep_pread(&ops[i], fd, buf[i], 4096, i * 4096);
        ops[i].ret_ptr = &res[i];
    }
    fault::probe_errno = EIO;
    fault::probe_failures = 1;
    int status[2];
    ASSERT_EQ(asys_submit_batch(pool, ops, 2, status), 2);
    EXPECT_EQ(status[0], ASYS_DONE);
    EXPECT_EQ(res[0], -EIO);  // probed: the injected error
    EXPECT_EQ(status[1], ASYS_DONE);
    EXPECT_EQ(res[1], 4096);
    check_block(buf[1], 1);
}

}  // namespace
