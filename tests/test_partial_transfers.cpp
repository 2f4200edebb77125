// A transfer whose nonblocking attempt moved only part of its bytes where
// the plain call would have gone on ends with the plain call's whole count
// on every path:
// - a memory device's long read (/dev/zero), which a nonblocking read stops
//   early when the CPU is wanted elsewhere: single buffers and vectors, with
//   every submit flag (ASYS_F_NOWAIT included: such a read never waits),
//   in a batch, as a chain atom, and through asys_call in a threadlet;
// - a file only partly in the page cache, read with readv/preadv inside a
//   threadlet (the rest of the vector is read while it is parked), and read
//   in a maybe_fork region (the child reads the rest);
// - a buffer partly sent on a full socket inside a threadlet.
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "asys/maybe_fork.h"
#include "asys/syslet.h"
#include "helpers.hpp"
#include "syslet_helpers.hpp"

using namespace asys_test;

// maybe_fork returns twice, as setjmp does; GCC cannot tell.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wclobbered"
#endif

namespace {

constexpr size_t kSeg = 16u << 20;  // long enough for a nonblocking read to be cut short under contention

/// Two 16 MiB segments of /dev/zero, refilled with ones before each read.
struct zero_vector {
    int fd = open("/dev/zero", O_RDONLY | O_CLOEXEC);
    std::vector<char> a = std::vector<char>(kSeg), b = std::vector<char>(kSeg);
    struct iovec iov[2] = {{a.data(), kSeg}, {b.data(), kSeg}};
    ~zero_vector() {
        if (fd >= 0) close(fd);
    }
    void refill() {
        std::memset(a.data(), 1, kSeg);
        std::memset(b.data(), 1, kSeg);
    }
    /// Every byte is zero (the read reached all of both segments).
    bool all_zero() const {
        static const std::vector<char> zeros(1u << 20, 0);
        auto zero = [](const std::vector<char> &v) {
            for (size_t at = 0; at < v.size(); at += zeros.size())
                if (std::memcmp(v.data() + at, zeros.data(), std::min(zeros.size(), v.size() - at)) != 0) return false;
            return true;
        };
        return zero(a) && zero(b);
    }
};

/// Whether this machine's kernel ever cuts a nonblocking /dev/zero vector
/// short under contention (it stops when the CPU is wanted): if it never
/// does, these tests could not fail, and they skip.
bool nowait_cuts_zero_short(zero_vector &z) {
    for (int i = 0; i < 40; ++i) {
        const long r = preadv2(z.fd, z.iov, 2, -1, RWF_NOWAIT);
        if (r > 0 && r < static_cast<long>(2 * kSeg)) return true;
    }
    return false;
}

#define REQUIRE_SHORT_ZERO_READS(z)                                                                    \
    do {                                                                                               \
        if (!nowait_cuts_zero_short(z))                                                                \
            GTEST_SKIP() << "SKIPPED: RWF_NOWAIT never cut a 32 MiB /dev/zero read short here, so no " \
                            "path sees a partial memory-device read";                                  \
    } while (0)

}  // namespace

/// A context, two /dev/zero segments, and the caller's CPU shared with a
/// spinner; skips unless the kernel cuts such reads short here.
class PartialMemoryDeviceReads : public ::testing::Test {
protected:
    ctx_guard ctx;
    zero_vector z;
    std::unique_ptr<cpu_contention> busy;
    void SetUp() override {
        ASSERT_GE(z.fd, 0);
        busy = std::make_unique<cpu_contention>();
        REQUIRE_SHORT_ZERO_READS(z);
    }
};

TEST_F(PartialMemoryDeviceReads, WholeWithEverySubmitFlag) {
    const long whole = static_cast<long>(2 * kSeg);
    for (const uint32_t flags : {0u, unsigned{ASYS_F_NOWAIT}, unsigned{ASYS_F_NOWAIT | ASYS_F_BUFFERED},
                                 unsigned{ASYS_F_BUFFERED}, unsigned{ASYS_F_ASYNC}, unsigned{ASYS_F_SYNC},
                                 unsigned{ASYS_F_CQE_ALWAYS}}) {
        for (const uint32_t opcode : {ASYS_OP_READV, ASYS_OP_PREADV, ASYS_OP_READ, ASYS_OP_PREAD}) {
            for (int round = 0; round < 3; ++round) {
                SCOPED_TRACE(testing::Message() << "flags " << flags << " opcode " << opcode << " round " << round);
                z.refill();
                asys_op op;
                const bool single = opcode == ASYS_OP_READ || opcode == ASYS_OP_PREAD;
                // A single buffer is the first segment (16 MiB).
                if (opcode == ASYS_OP_READV) asys_prep_readv(&op, z.fd, z.iov, 2);
                if (opcode == ASYS_OP_PREADV) asys_prep_preadv(&op, z.fd, z.iov, 2, -1, 0);
                if (opcode == ASYS_OP_READ) asys_prep_read(&op, z.fd, z.a.data(), kSeg);
                if (opcode == ASYS_OP_PREAD) asys_prep_pread(&op, z.fd, z.a.data(), kSeg, 0);
                op.flags = flags;
                const long r = run(ctx, op);
                EXPECT_EQ(r, single ? static_cast<long>(kSeg) : whole) << "the plain call's whole count";
                if (!single) EXPECT_TRUE(z.all_zero()) << "every byte read";
            }
        }
    }
}

TEST_F(PartialMemoryDeviceReads, VectorsWholeInABatch) {
    // Each op reads the same two segments; the batch runs them in order.
    for (int round = 0; round < 4; ++round) {
        SCOPED_TRACE(round);
        constexpr unsigned kN = 3;
        asys_op ops[kN];
        long res[kN] = {-1, -1, -1};
        for (unsigned i = 0; i < kN; ++i) {
            asys_prep_readv(&ops[i], z.fd, z.iov, 2);
            ops[i].ret_ptr = &res[i];
        }
        int status[kN] = {-1, -1, -1};
        ASSERT_EQ(asys_submit_batch(ctx, ops, kN, status), static_cast<int>(kN));
        unsigned later = 0;
        for (unsigned i = 0; i < kN; ++i) later += status[i] == 0;
        EXPECT_EQ(reap(ctx, later).size(), later);
        for (unsigned i = 0; i < kN; ++i) EXPECT_EQ(res[i], static_cast<long>(2 * kSeg)) << "op " << i;
    }
}

TEST_F(PartialMemoryDeviceReads, VectorsWholeThroughAsysCall) {
    struct job {
        zero_vector *z;
        long got[4];
    } j{&z, {}};
    for (const uint32_t flags : {0u, unsigned{ASYS_F_NOWAIT}}) {
        SCOPED_TRACE(flags);
        asys_op op;
        asys_prep_threadlet(
            &op,
            [](void *arg) -> long {
                auto *jj = static_cast<job *>(arg);
                for (long &g : jj->got) g = asys_call(SYS_readv, jj->z->fd, jj->z->iov, 2);
                return 0;
            },
            &j, 0);
        op.flags = flags;
        ASSERT_EQ(run(ctx, op), 0);
        for (const long g : j.got) EXPECT_EQ(g, static_cast<long>(2 * kSeg));
    }
}

TEST_F(PartialMemoryDeviceReads, VectorAtomWholeInANowaitChain) {
    for (int round = 0; round < 4; ++round) {
        SCOPED_TRACE(round);
        long r = -1;
        unsigned long a0 = static_cast<unsigned long>(z.fd), a1 = reinterpret_cast<unsigned long>(z.iov), a2 = 2;
        syslet_uatom at = atom(SYS_readv, 0, &r);
        at.arg_ptr[0] = &a0;
        at.arg_ptr[1] = &a1;
        at.arg_ptr[2] = &a2;
        syslet_uatom *last = nullptr;
        asys_op op;
        asys_prep_chain(&op, &at, &last);
        op.flags = ASYS_F_NOWAIT;
        EXPECT_EQ(run(ctx, op), static_cast<long>(2 * kSeg)) << "never waits, so NOWAIT finishes it";
        EXPECT_EQ(r, static_cast<long>(2 * kSeg));
    }
}

// readv and preadv of a file only partly in the page cache, inside a
// threadlet: the first part is read inline, the rest while it is parked,
// and asys_call returns the whole count with every byte in place.
TEST(PartialTransfers, PartlyCachedVectorReadInAThreadletIsWhole) {
    ctx_guard ctx;
    constexpr size_t kPages = 64, kHead = 8;
    partly_cached_file f(kPages * 4096);
    for (const long nr : {long{SYS_readv}, long{SYS_preadv}, long{SYS_preadv2}}) {
        SCOPED_TRACE(nr);
        REQUIRE_PARTLY_CACHED(f, kHead * 4096);
        ASSERT_EQ(lseek(f.fd, 0, SEEK_SET), 0);
        std::vector<char> a(kPages * 4096 / 2, 0), b(kPages * 4096 / 2, 0);
        struct iovec iov[2] = {{a.data(), a.size()}, {b.data(), b.size()}};
        struct job {
            long nr;
            int fd;
            struct iovec *iov;
            long got;
        } j{nr, f.fd, iov, -1};
        asys_op op;
        asys_prep_threadlet(
            &op,
            [](void *arg) -> long {
                auto *jj = static_cast<job *>(arg);
                jj->got = jj->nr == SYS_readv ? asys_call(SYS_readv, jj->fd, jj->iov, 2)
                                              : asys_call(jj->nr, jj->fd, jj->iov, 2, 0, 0, 0);
                return 0;
            },
            &j, 0);
        ASSERT_EQ(run(ctx, op), 0);
        EXPECT_EQ(j.got, static_cast<long>(kPages * 4096)) << "the whole file, as the plain call";
        for (size_t i = 0; i < a.size(); i += 512) ASSERT_EQ(a[i], pattern(i)) << "byte " << i;
        for (size_t i = 0; i < b.size(); i += 512) ASSERT_EQ(b[i], pattern(a.size() + i)) << "byte " << a.size() + i;
        if (nr == SYS_readv) EXPECT_EQ(lseek(f.fd, 0, SEEK_CUR), static_cast<off_t>(kPages * 4096));
    }
}

// A send on a socket whose buffer fills part way, inside a threadlet: the
// rest is sent while it is parked (a reader drains the other end), and
// asys_call returns the whole length.
TEST(PartialTransfers, PartlySentBufferInAThreadletIsWhole) {
    ctx_guard ctx;
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    constexpr size_t kLen = 4u << 20;  // far more than a socket buffer holds
    std::vector<char> out(kLen);
    for (size_t i = 0; i < kLen; ++i) out[i] = pattern(i);
    struct job {
        int fd;
        const char *buf;
        long got;
    } j{sv[0], out.data(), -1};
    std::vector<char> in(kLen);
    size_t received = 0;
    asys_op op;
    asys_prep_threadlet(
        &op,
        [](void *arg) -> long {
            auto *jj = static_cast<job *>(arg);
            jj->got = asys_call(SYS_sendto, jj->fd, jj->buf, kLen, 0, 0, 0);
            return 0;
        },
        &j, 0);
    long ret = -1;
    op.ret_ptr = &ret;
    // Nothing reads yet: the inline send fills the buffer and stops part way.
    const int rc = asys_submit(ctx, &op);
    ASSERT_GE(rc, 0);
    ASSERT_EQ(rc, 0) << "a send of 4 MiB with nobody reading cannot finish inline";
    std::thread reader([&] {
        while (received < kLen) {
            const ssize_t n = read(sv[1], in.data() + received, kLen - received);
            if (n <= 0) break;
            received += static_cast<size_t>(n);
        }
    });
    const auto c = reap(ctx, 1);
    reader.join();
    ASSERT_EQ(c.size(), 1u);
    EXPECT_EQ(ret, 0);
    EXPECT_EQ(j.got, static_cast<long>(kLen)) << "the whole buffer, as a blocking send";
    EXPECT_EQ(received, kLen);
    EXPECT_TRUE(in == out) << "the bytes arrived in order, once";
    close(sv[0]);
    close(sv[1]);
}

// A read in a maybe_fork region that the nonblocking attempt did only
// partly (a file partly in the page cache) forks: the child reads the
// rest, and read() returns the whole count there.
namespace {

/// Reads the whole file at its position in a maybe_fork region. Returns the
/// child's pid (the child reports its count and whether the bytes are the
/// file's on `report_fd`, then exits), 0 if nothing forked (*n: the
/// count read inline), or maybe_fork's error.
int read_in_region(int fd, std::vector<char> &buf, int report_fd, long *n) {
    jmp_buf jb;
    const int childpid = maybe_fork(&jb, FORK_ON_BLOCKING);
    if (childpid != 0) return childpid;
    *n = read(fd, buf.data(), buf.size());
    if (maybe_fork(nullptr, MAYBE_FORK_END) == 0) return 0;
    long ok = 1;  // the child, outside the region now
    for (size_t i = 0; i < buf.size(); i += 512) ok &= buf[i] == pattern(i);
    const long report[2] = {*n, ok};
    _exit(write(report_fd, report, sizeof report) == sizeof report ? 0 : 1);
}

}  // namespace

TEST(PartialTransfers, PartlyCachedReadInAMaybeForkRegionForksAndReadsAll) {
    if (under_tsan()) GTEST_SKIP() << "maybe_fork jumps out of a signal handler, which TSan's shadow stack does not follow";
    constexpr size_t kPages = 64, kHead = 8;
    partly_cached_file f(kPages * 4096);
    std::vector<char> buf(kPages * 4096, 0);
    int pfd[2];
    ASSERT_EQ(pipe2(pfd, O_CLOEXEC), 0);  // the child's report
    // The kernel may bring the rest of the file in between the set-up and
    // the read (then the read is whole inline, as it should be): try again.
    int childpid = 0;
    for (int attempt = 0; attempt < 5 && childpid == 0; ++attempt) {
        REQUIRE_PARTLY_CACHED(f, kHead * 4096);
        ASSERT_EQ(lseek(f.fd, 0, SEEK_SET), 0);
        long n = -1;
        alarm(60);
        childpid = read_in_region(f.fd, buf, pfd[1], &n);
        alarm(0);
        if (childpid == -EOPNOTSUPP) GTEST_SKIP() << "SKIPPED: no syscall user dispatch in this kernel";
        ASSERT_GE(childpid, 0);
        if (childpid == 0) EXPECT_EQ(n, static_cast<long>(kPages * 4096)) << "a read that did not fork is whole";
    }
    if (childpid == 0) GTEST_SKIP() << "SKIPPED: the file's tail was always in the page cache by the time of the read";
    int status = -1;
    ASSERT_EQ(waitpid(childpid, &status, 0), childpid);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    long report[2] = {-1, -1};
    ASSERT_EQ(read(pfd[0], report, sizeof report), static_cast<ssize_t>(sizeof report));
    EXPECT_EQ(report[0], static_cast<long>(kPages * 4096)) << "the child's read returned the whole file";
    EXPECT_EQ(report[1], 1) << "with the file's bytes";
    EXPECT_EQ(lseek(f.fd, 0, SEEK_CUR), static_cast<off_t>(kPages * 4096)) << "the shared file position";
    close(pfd[0]);
    close(pfd[1]);
}

// A long write to a pipe or a stream socket, or a long send, while a reader
// drains the other end: write(2) and send(2) block until every byte is
// out, so the result is the whole length on every path, though the ring's
// nonblocking attempts move it a part at a time.
TEST(PartialTransfers, LongStreamWritesAreWholeOnEveryPath) {
    ctx_guard ctx;
    constexpr size_t kLen = 4u << 20;
    std::vector<char> out(kLen);
    for (size_t i = 0; i < kLen; ++i) out[i] = pattern(i);
    for (const bool socket : {false, true}) {
        for (const uint32_t opcode : {ASYS_OP_WRITE, ASYS_OP_WRITEV, ASYS_OP_SEND}) {
            if (opcode == ASYS_OP_SEND && !socket) continue;
            for (const uint32_t flags : {0u, unsigned{ASYS_F_ASYNC}}) {
                SCOPED_TRACE(testing::Message() << (socket ? "socket" : "pipe") << " opcode " << opcode << " flags "
                                                << flags);
                int fds[2];
                if (socket) {
                    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
                } else {
                    ASSERT_EQ(pipe2(fds, O_CLOEXEC), 0);
                }
                const int rd = socket ? fds[1] : fds[0], wr = socket ? fds[0] : fds[1];
                struct iovec iov[2] = {{out.data(), kLen / 2}, {out.data() + kLen / 2, kLen / 2}};
                asys_op op;
                if (opcode == ASYS_OP_WRITE) asys_prep_write(&op, wr, out.data(), kLen);
                if (opcode == ASYS_OP_WRITEV) asys_prep_writev(&op, wr, iov, 2);
                if (opcode == ASYS_OP_SEND) asys_prep_send(&op, wr, out.data(), kLen, 0);
                op.flags = flags;
                std::vector<char> in(kLen);
                size_t received = 0;
                std::thread reader([&] {
                    while (received < kLen) {
                        const ssize_t n = read(rd, in.data() + received, kLen - received);
                        if (n <= 0) break;
                        received += static_cast<size_t>(n);
                    }
                });
                const long r = run(ctx, op);
                close(wr);  // a reader still waiting after a short write sees EOF
                reader.join();
                close(rd);
                EXPECT_EQ(r, static_cast<long>(kLen)) << "the whole length, as the blocking call";
                EXPECT_EQ(received, static_cast<size_t>(r > 0 ? r : 0));
                EXPECT_TRUE(std::equal(in.begin(), in.begin() + static_cast<long>(received), out.begin()));
            }
        }
    }
}

// The same write as an atom of a chain (after an atom that reads nothing),
// and as an op of a batch: the whole length.
TEST(PartialTransfers, LongPipeWriteIsWholeInAChainAndInABatch) {
    ctx_guard ctx;
    constexpr size_t kLen = 4u << 20;
    std::vector<char> out(kLen, 'w');
    for (const bool chain : {true, false}) {
        SCOPED_TRACE(chain ? "chain" : "batch");
        pipe_pair p;
        size_t received = 0;
        std::thread reader([&] {
            std::vector<char> in(1 << 16);
            for (;;) {
                const ssize_t n = read(p.r, in.data(), in.size());
                if (n <= 0) break;
                received += static_cast<size_t>(n);
            }
        });
        long r = -1;
        if (chain) {
            unsigned long fd = static_cast<unsigned long>(p.w), buf = reinterpret_cast<unsigned long>(out.data()),
                          len = kLen;
            long r0 = -1;
            syslet_uatom first = atom(SYS_getpid, 0, &r0);
            syslet_uatom w = atom(SYS_write, 0, &r);
            w.arg_ptr[0] = &fd;
            w.arg_ptr[1] = &buf;
            w.arg_ptr[2] = &len;
            first.next = &w;
            syslet_uatom *last = nullptr;
            asys_op op;
            asys_prep_chain(&op, &first, &last);
            EXPECT_EQ(run(ctx, op), static_cast<long>(kLen));
        } else {
            asys_op ops[2];
            long nop = -1;
            asys_prep_nop(&ops[0], 7);
            ops[0].ret_ptr = &nop;
            asys_prep_write(&ops[1], p.w, out.data(), kLen);
            ops[1].ret_ptr = &r;
            int status[2] = {-1, -1};
            ASSERT_EQ(asys_submit_batch(ctx, ops, 2, status), 2);
            const unsigned later = (status[0] == 0) + (status[1] == 0);
            EXPECT_EQ(reap(ctx, later).size(), later);
        }
        close(p.w);
        p.w = -1;
        reader.join();
        EXPECT_EQ(r, static_cast<long>(kLen)) << "the whole length, as write(2)";
        EXPECT_EQ(received, kLen);
    }
}

// A send atom that the chain's nonblocking attempt sent part of cannot be
// taken back: only its rest runs on a worker, and the atom's result is the
// whole length, as send(2)'s (a reader drains the other end). In a NOWAIT
// chain, which never goes on asynchronously, the atom ran all the same: the
// chain ends at it with the bytes sent, as a nonblocking send says.
TEST(PartialTransfers, PartlySentAtomIsWholeInAChainAndEndsANowaitChainWithItsCount) {
    ctx_guard ctx;
    constexpr size_t kLen = 4u << 20;
    std::vector<char> out(kLen);
    for (size_t i = 0; i < kLen; ++i) out[i] = pattern(i);
    for (const bool nowait : {false, true}) {
        SCOPED_TRACE(nowait ? "NOWAIT chain" : "chain");
        int sv[2];
        ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        unsigned long fd = static_cast<unsigned long>(sv[0]), buf = reinterpret_cast<unsigned long>(out.data()),
                      len = kLen, zero = 0;
        long r = -1;
        syslet_uatom s = atom(SYS_sendto, 0, &r, {&fd, &buf, &len, &zero});
        syslet_uatom *last = nullptr;
        asys_op op;
        asys_prep_chain(&op, &s, &last);
        std::vector<char> in(kLen);
        size_t received = 0;
        if (!nowait) {
            // Nobody reads yet: the attempt on the caller sends what the
            // socket's buffer takes, and the rest goes on asynchronously.
            long chain_res = -1;
            op.ret_ptr = &chain_res;
            ASSERT_EQ(asys_submit(ctx, &op), 0) << "4 MiB does not fit a socket's buffer";
            std::thread reader([&] {
                while (received < kLen) {
                    const ssize_t n = read(sv[1], in.data() + received, kLen - received);
                    if (n <= 0) break;
                    received += static_cast<size_t>(n);
                }
            });
            EXPECT_EQ(reap(ctx, 1).size(), 1u);
            EXPECT_EQ(chain_res, static_cast<long>(kLen));
            close(sv[0]);  // a reader still waiting after a short send sees EOF
            reader.join();
            EXPECT_EQ(r, static_cast<long>(kLen)) << "the atom's result: the whole length, as send(2)";
        } else {
            op.flags = ASYS_F_NOWAIT;
            long chain_res = -1;
            op.ret_ptr = &chain_res;
            ASSERT_EQ(asys_submit(ctx, &op), ASYS_DONE) << "the send atom ran (it sent bytes): not -EAGAIN";
            close(sv[0]);
            for (;;) {  // nobody read before: what the socket holds is what was sent
                const ssize_t n = read(sv[1], in.data() + received, kLen - received);
                if (n <= 0) break;
                received += static_cast<size_t>(n);
            }
            EXPECT_GT(r, 0);
            EXPECT_LT(r, static_cast<long>(kLen)) << "a socket buffer is smaller than 4 MiB";
            EXPECT_EQ(chain_res, r) << "the chain's result is its last atom's";
            EXPECT_EQ(last, &s) << "the chain ended at the send atom";
        }
        close(sv[1]);
        EXPECT_EQ(received, static_cast<size_t>(r > 0 ? r : 0)) << "the count is what the reader got";
        EXPECT_TRUE(std::equal(in.begin(), in.begin() + static_cast<long>(received), out.begin()));
    }
}

// A read partly done inline whose rest waits in the pool's queue has
// started: cancelling it does not undo the bytes it moved, so it completes
// with their count (as an interrupted read(2) returns what it read), and
// asys_cancel says it was already running.
TEST(PartialTransfers, CancelledRestEndsWithTheBytesAlreadyRead) {
    const asys_params p = pool_params(1);
    ctx_guard ctx(&p);
    const pid_t tid = worker_tid(ctx);  // first: it needs the worker
    parked_read busy;
    ASSERT_EQ(busy.submit(ctx, 1), 0);
    ASSERT_TRUE(busy.wait_blocked(tid)) << "the only worker is busy";
    constexpr size_t kPages = 64, kHead = 8;
    partly_cached_file f(kPages * 4096);
    REQUIRE_PARTLY_CACHED(f, kHead * 4096);
    std::vector<char> buf(kPages * 4096, 0);
    asys_op op;
    asys_prep_pread(&op, f.fd, buf.data(), buf.size(), 0);
    long res = -1;
    op.ret_ptr = &res;
    op.user_data = 2;
    const int rc = asys_submit(ctx, &op);
    if (rc == ASYS_DONE) GTEST_SKIP() << "SKIPPED: the whole file was cached by the time of the read";
    ASSERT_EQ(rc, 0);
    EXPECT_EQ(asys_cancel(ctx, 2), -EALREADY) << "it had started: its first part was read inline";
    auto c = reap(ctx, 1);
    ASSERT_EQ(c.size(), 1u);
    EXPECT_EQ(c[0].user_data, 2u);
    ASSERT_GT(c[0].res, 0) << "not -ECANCELED: the bytes read inline are kept";
    EXPECT_LT(c[0].res, static_cast<long>(buf.size())) << "the rest never ran";
    EXPECT_EQ(res, c[0].res);
    for (long i = 0; i < c[0].res; i += 512) ASSERT_EQ(buf[static_cast<size_t>(i)], pattern(static_cast<size_t>(i)));
    ASSERT_EQ(busy.release(), 1);
    EXPECT_EQ(reap(ctx, 1).size(), 1u);
}

// A long write to a pipe nobody reads: one pipe buffer goes in (on the ring,
// which completes short; then a worker waits to write the rest), then the
// write waits. Cancelled then, it ends as an interrupted write(2): with the
// count written, and asys_cancel says it was running.
TEST(PartialTransfers, CancelledLongPipeWriteEndsWithTheBytesWritten) {
    ctx_guard ctx;
    pipe_pair p;
    const long capacity = fcntl(p.w, F_GETPIPE_SZ);
    ASSERT_GT(capacity, 0);
    std::vector<char> out(1u << 20, 'c');
    asys_op op;
    asys_prep_write(&op, p.w, out.data(), out.size());
    op.flags = ASYS_F_ASYNC;
    op.user_data = 9;
    long res = -1;
    op.ret_ptr = &res;
    ASSERT_EQ(asys_submit(ctx, &op), 0);
    // Wait (bounded, on kernel state) until the pipe is full: the first part is in.
    ASSERT_TRUE(eventually([&] {
        int queued = 0;
        return ioctl(p.r, FIONREAD, &queued) == 0 && queued == capacity;
    })) << "the write never filled the pipe";
    // Then until a worker waits in write(2) for the rest (or, on the pool
    // backend, the whole call does).
    ASSERT_NE(wait_any_thread_blocked_in(SYS_write, p.w), 0);
    EXPECT_EQ(asys_cancel(ctx, 9), -EALREADY);
    const auto c = reap(ctx, 1);
    ASSERT_EQ(c.size(), 1u);
    EXPECT_EQ(c[0].res, capacity) << "the bytes written, as an interrupted write(2)";
    EXPECT_EQ(res, capacity);
}
