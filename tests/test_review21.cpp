// Review of aad8888 (partly done transfers end with the plain call's whole
// count on every path): the rest of a transfer must not move more than the
// call would (MAX_RW_COUNT), and bytes a chain atom already moved are not
// lost to a cancel.
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <thread>
#include <vector>

#include "asys/syslet.h"
#include "helpers.hpp"
#include "syslet_helpers.hpp"

using namespace asys_test;

namespace {

constexpr long kMaxRw = 0x7ffff000;  // MAX_RW_COUNT: the most one read or write moves

/// A private anonymous mapping that reserves no memory: read, its pages are
/// the shared zero page (a write source of any length costs no memory).
struct big_mapping {
    size_t len;
    char *p;
    explicit big_mapping(size_t n)
        : len(n), p(static_cast<char *>(mmap(nullptr, n, PROT_READ | PROT_WRITE,
                                             MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0))) {}
    ~big_mapping() {
        if (p != MAP_FAILED) munmap(p, len);
    }
    bool ok() const { return p != MAP_FAILED; }
};

/// Drains the read end of a stream into /dev/null (splice: no copy) until
/// EOF, counting the bytes.
struct drain {
    std::atomic<long> got{0};
    std::thread t;
    explicit drain(int rfd, bool socket) {
        t = std::thread([this, rfd, socket] {
            const int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
            int mid[2] = {-1, -1};
            if (socket && pipe2(mid, O_CLOEXEC) != 0) return;
            for (;;) {
                long n;
                if (socket) {  // socket -> pipe -> /dev/null
                    n = splice(rfd, nullptr, mid[1], nullptr, 1 << 20, SPLICE_F_MOVE);
                    for (long left = n; left > 0;) {
                        const long m = splice(mid[0], nullptr, null, nullptr, static_cast<size_t>(left), 0);
                        if (m <= 0) break;
                        left -= m;
                    }
                } else {
                    n = splice(rfd, nullptr, null, nullptr, 1 << 20, 0);
                }
                if (n <= 0) break;
                got.fetch_add(n, std::memory_order_relaxed);
            }
            close(null);
            if (mid[0] >= 0) close(mid[0]);
            if (mid[1] >= 0) close(mid[1]);
        });
    }
    long join() {
        t.join();
        return got.load();
    }
};

}  // namespace

// A write or send longer than MAX_RW_COUNT to a blocking pipe or stream
// socket: write(2) moves MAX_RW_COUNT bytes and returns that. Where the
// first attempt moved only what fit (the ring's nonblocking write, the
// inline probe's MSG_DONTWAIT send), the rest was the remaining length,
// which the call again capped at MAX_RW_COUNT: asys moved and returned
// more than the call.
TEST(Review21, StreamWriteLongerThanMaxRwMovesWhatTheCallMoves) {
    ctx_guard ctx;
    const size_t len = static_cast<size_t>(kMaxRw) + (64u << 20);
    big_mapping src(len);
    ASSERT_TRUE(src.ok());
    // (Not WRITE: longer than MAX_RW_COUNT, it is never tried inline nor
    // sent to the ring; the pool's call caps it itself.)
    for (const uint32_t opcode : {ASYS_OP_WRITEV, ASYS_OP_SEND}) {
        SCOPED_TRACE(opcode);
        int fds[2];
        const bool socket = opcode == ASYS_OP_SEND;
        if (socket) {
            ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
        } else {
            ASSERT_EQ(pipe2(fds, O_CLOEXEC), 0);
        }
        const int rfd = socket ? fds[1] : fds[0], wfd = socket ? fds[0] : fds[1];
        drain d(rfd, socket);
        // Two segments over the same pages (the mapping is read only).
        struct iovec iov[2] = {{src.p, len / 2}, {src.p, len - len / 2}};
        asys_op op;
        if (opcode == ASYS_OP_WRITEV) asys_prep_writev(&op, wfd, iov, 2);
        if (opcode == ASYS_OP_SEND) asys_prep_send(&op, wfd, src.p, len, 0);
        const long r = run(ctx, op);
        close(wfd);
        const long moved = d.join();
        close(rfd);
        EXPECT_EQ(r, kMaxRw) << "write(2) and send(2) move at most MAX_RW_COUNT";
        EXPECT_EQ(moved, r) << "the bytes the reader got";
    }
}

// readv of /dev/zero whose segments total more than MAX_RW_COUNT: readv(2)
// reads MAX_RW_COUNT. A nonblocking attempt that stopped early (the CPU is
// wanted elsewhere) was finished up to the segments' whole total.
TEST(Review21, MemoryDeviceVectorLongerThanMaxRwReadsWhatTheCallReads) {
    ctx_guard ctx;
    constexpr size_t kSeg = 96u << 20;
    constexpr unsigned kSegs = 24;  // 2.25 GiB over one 96 MiB buffer
    const int fd = open("/dev/zero", O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    std::vector<char> buf(kSeg);
    std::vector<struct iovec> iov(kSegs, iovec{buf.data(), kSeg});
    const long plain = kMaxRw;  // readv(2)'s result here (not run: it costs as much as the ops)
    const cpu_contention busy;  // the nonblocking read yields: it comes back short
    for (const uint32_t flags : {0u, unsigned{ASYS_F_BUFFERED}}) {
        SCOPED_TRACE(flags);
        asys_op op;
        asys_prep_readv(&op, fd, iov.data(), kSegs);
        op.flags = flags;
        EXPECT_EQ(run(ctx, op), plain);
    }
    close(fd);
}

// A linked chain's write atom the ring completed short (a pipe holds 64 KiB
// of the 1 MiB) waits on the pool for its rest; a cancel that finds it still
// queued ended it with -ECANCELED, though its first 64 KiB were written: the
// atom's result must count the bytes it moved, as a cancelled pool op's does.
TEST(Review21, CancelledChainKeepsTheBytesItsWriteAtomMoved) {
    const asys_params p = params(1);
    ctx_guard ctx(&p);
    const pid_t tid = worker_tid(ctx);
    ASSERT_GT(tid, 0);
    // The only worker sits in a read of an empty pipe (a generic call: the
    // pool's, whichever the backend).
    pipe_pair hold;
    char byte = 0;
    long hold_res = -999;
    const uint64_t hold_args[6] = {static_cast<uint64_t>(hold.r), reinterpret_cast<uint64_t>(&byte), 1, 0, 0, 0};
    asys_op hold_op;
    asys_prep_syscall(&hold_op, SYS_read, hold_args);
    hold_op.flags = ASYS_F_ASYNC;
    hold_op.ret_ptr = &hold_res;
    hold_op.user_data = 1;
    ASSERT_EQ(asys_submit(ctx, &hold_op), 0);
    ASSERT_TRUE(wait_blocked_in(tid, SYS_read, hold.r));
    pipe_pair pp;
    constexpr size_t kLen = 1u << 20;
    std::vector<char> data(kLen, 'w');
    unsigned long a0 = static_cast<unsigned long>(pp.w), a1 = reinterpret_cast<unsigned long>(data.data()),
                  a2 = kLen;
    long r = -999;
    syslet_uatom at = atom(SYS_write, 0, &r);
    at.arg_ptr[0] = &a0;
    at.arg_ptr[1] = &a1;
    at.arg_ptr[2] = &a2;
    syslet_uatom *last = nullptr;
    asys_op op;
    asys_prep_chain(&op, &at, &last);
    long res = -999;
    op.ret_ptr = &res;
    op.user_data = 7;
    ASSERT_EQ(asys_submit(ctx, &op), 0);
    // The chain (whole, or the rest of its atom) waits in the pool's queue.
    ASSERT_TRUE(eventually([&] {
        asys_metrics m{};
        return asys_ctx_metrics(ctx, &m) == 0 && m.total.queued == 1;
    }));
    int queued_bytes = -1;
    ASSERT_EQ(ioctl(pp.r, FIONREAD, &queued_bytes), 0);
    const int rc = asys_cancel(ctx, 7);
    const auto c = reap(ctx, 1);
    ASSERT_EQ(c.size(), 1u);
    EXPECT_EQ(c[0].res, res);
    int moved = -1;
    ASSERT_EQ(ioctl(pp.r, FIONREAD, &moved), 0);
    EXPECT_EQ(moved, queued_bytes) << "nothing ran after the cancel";
    if (moved == 0) {
        EXPECT_EQ(rc, 0);
        EXPECT_EQ(r, -ECANCELED) << "never ran";
    } else {
        EXPECT_EQ(rc, -EALREADY) << "its atom had started";
        EXPECT_EQ(r, moved) << "the atom's result counts the bytes it wrote";
        EXPECT_EQ(res, moved);
    }
    EXPECT_EQ(last, &at);
    ASSERT_EQ(write(hold.w, "h", 1), 1);
    EXPECT_EQ(reap(ctx, 1).size(), 1u);
    EXPECT_EQ(hold_res, 1);
}
