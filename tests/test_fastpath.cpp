// The inline fast path: each op class completes inline when it would not
// block, is punted when its probe says would-block, finishes short reads
// off-thread, tells EOF from would-block, and never probes O_DIRECT files
// inline — including after an fd number is reused.
#include <arpa/inet.h>
#include <sys/uio.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/socket.h>

#include <cstring>
#include <fstream>

#include "asys/syslet.h"
#include "base/fault.hpp"
#include "helpers.hpp"

using namespace asys_test;

namespace {

// Drops [off, off+len) of fd from the page cache (clean pages only).
void drop_cache(int fd, off_t off = 0, off_t len = 0) {
    ASSERT_EQ(fdatasync(fd), 0);
    ASSERT_EQ(posix_fadvise(fd, off, len, POSIX_FADV_DONTNEED), 0);
}

// Whether every page of [off, off+len) is resident in the page cache, from
// mincore(2) on a mapping that is never touched (a RWF_NOWAIT read is not a
// residency test: it also says EAGAIN while a page is locked).
bool cached(int fd, off_t off, size_t len) {
    const size_t page = 4096;
    const off_t start = off / static_cast<off_t>(page) * static_cast<off_t>(page);
    const size_t span = static_cast<size_t>(off - start) + len;
    void *m = mmap(nullptr, span, PROT_READ, MAP_SHARED, fd, start);
    if (m == MAP_FAILED) return true;  // cannot tell: callers then skip
    std::vector<unsigned char> vec((span + page - 1) / page);
    bool all = mincore(m, span, vec.data()) == 0;
    for (unsigned char v : vec) all = all && (v & 1);
    munmap(m, span);
    return all;
}

void check_pattern(const char *buf, size_t len, size_t file_off) {
    for (size_t i = 0; i < len; ++i)
        ASSERT_EQ(buf[i], pattern(file_off + i)) << "byte " << i << " at file offset " << file_off + i;
}

class FastPath : public ::testing::Test {
protected:
    asys_params p_ = params(4);
    ctx_guard ctx_{&p_};
    temp_dir dir_;
};

TEST_F(FastPath, CachedReadCompletesInline) {
    int fd = make_file(dir_.file("c"), 65536);
    char buf[4096];
    ASSERT_EQ(pread(fd, buf, sizeof buf, 8192), 4096);  // cache it
    for (uint32_t f : {0u, unsigned{ASYS_F_BUFFERED}}) {
        asys_op op;
        asys_prep_pread(&op, fd, buf, sizeof buf, 8192);
        op.flags = f;
        long res = 0;
        op.ret_ptr = &res;
        ASSERT_EQ(asys_submit(ctx_, &op), ASYS_DONE);
        EXPECT_EQ(res, 4096);
        check_pattern(buf, 4096, 8192);
    }
    asys_stats st = stats(ctx_);
    EXPECT_EQ(st.done_inline, 2u);
    EXPECT_EQ(st.punted_probe + st.punted_direct, 0u);
    close(fd);
}

TEST_F(FastPath, UncachedReadIsPuntedAndCorrect) {
    int fd = make_file(dir_.file("u"), 1 << 20);
    const off_t off = 4096 * 100;
    // Dropping can fail transiently (a page under writeback is kept): retry
    // until the page is verifiably out of the cache, then read it at once.
    bool dropped = false;
    for (int i = 0; i < 20 && !dropped; ++i) {
        drop_cache(fd);
        dropped = !cached(fd, off, 4096);
    }
    if (!dropped) GTEST_SKIP() << "SKIPPED: page cache could not be dropped here";
    char buf[4096];
    asys_op op;
    asys_prep_pread(&op, fd, buf, sizeof buf, off);
    uint32_t path = 0;
    EXPECT_EQ(run(ctx_, op, &path), 4096);
    check_pattern(buf, 4096, static_cast<size_t>(off));
    if (path == ASYS_PATH_INLINE && cached(fd, off, 4096))
        GTEST_SKIP() << "SKIPPED: the nonblocking probe's own readahead brought the page in before it "
                        "looked again (under load); the bytes are right, but nothing was punted to test";
    EXPECT_EQ(path, async_path(ctx_, ASYS_OP_PREAD));
    asys_stats st = stats(ctx_);
    EXPECT_EQ(st.punted_probe, 1u) << "would-block after the probe";
    EXPECT_EQ(st.done_inline, 0u);
    close(fd);
}

TEST_F(FastPath, PartlyCachedReadReturnsTheFullCount) {
    constexpr size_t kSize = 256 * 1024, kCachedPart = 64 * 1024;
    int fd = make_file(dir_.file("p"), kSize);
    drop_cache(fd);
    posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM);  // no readahead past what we read
    std::vector<char> warm(kCachedPart);
    ASSERT_EQ(pread(fd, warm.data(), kCachedPart, 0), static_cast<ssize_t>(kCachedPart));
    if (!cached(fd, 0, kCachedPart) || cached(fd, kSize - 4096, 4096))
        GTEST_SKIP() << "could not build a partly cached file here";
    std::vector<char> buf(kSize);
    for (uint32_t op_code : {unsigned{ASYS_OP_PREAD}, unsigned{ASYS_OP_PREADV}}) {
        drop_cache(fd, kCachedPart, 0);
        ASSERT_EQ(pread(fd, warm.data(), kCachedPart, 0), static_cast<ssize_t>(kCachedPart));
        // The same precondition as above, for this round: the tail must be
        // cold (once, under the ASan suite's parallel load, it was not).
        if (cached(fd, kSize - 4096, 4096)) GTEST_SKIP() << "could not drop the tail of the file here";
        std::fill(buf.begin(), buf.end(), 0);
        asys_op op;
        struct iovec iov[2] = {{buf.data(), kSize / 2}, {buf.data() + kSize / 2, kSize / 2}};
        if (op_code == ASYS_OP_PREAD) asys_prep_pread(&op, fd, buf.data(), kSize, 0);
        else asys_prep_preadv(&op, fd, iov, 2, 0, 0);
        long res = 0;
        op.ret_ptr = &res;
        int rc = asys_submit(ctx_, &op);
        if (rc == ASYS_DONE && res == static_cast<long>(kSize) && cached(fd, kSize - 4096, 4096))
            GTEST_SKIP() << "SKIPPED: the kernel cached the tail during the probe (readahead under load): "
                            "no partly cached range left to test";
        ASSERT_EQ(rc, 0) << "part was read inline, the rest is finished off-thread";
        auto c = reap(ctx_, 1);
        ASSERT_EQ(c.size(), 1u);
        EXPECT_EQ(res, static_cast<long>(kSize)) << "one full result";
        check_pattern(buf.data(), kSize, 0);
    }
    asys_stats st = stats(ctx_);
    EXPECT_EQ(st.short_finished, 2u);

    // NOWAIT keeps the short count: it never punts.
    drop_cache(fd, kCachedPart, 0);
    ASSERT_EQ(pread(fd, warm.data(), kCachedPart, 0), static_cast<ssize_t>(kCachedPart));
    asys_op op;
    asys_prep_pread(&op, fd, buf.data(), kSize, 0);
    op.flags = ASYS_F_NOWAIT;
    long res = 0;
    op.ret_ptr = &res;
    ASSERT_EQ(asys_submit(ctx_, &op), ASYS_DONE);
    EXPECT_GE(res, static_cast<long>(kCachedPart));
    if (res == static_cast<long>(kSize) && cached(fd, kSize - 4096, 4096)) {
        check_pattern(buf.data(), kSize, 0);  // the whole file, read inline: still the right bytes
        GTEST_SKIP() << "SKIPPED (NOWAIT part): the kernel cached the tail during the probe "
                        "(the nonblocking read started readahead that finished under load)";
    }
    EXPECT_LT(res, static_cast<long>(kSize));
    close(fd);
}

// A partly cached read that cannot be punted (ATOMIC, the only worker busy)
// delivers its short count inline — and, with no ret_ptr, through a
// completion entry, so the bytes already read are never lost.
TEST(FastPathAtomic, PartialReadThatCannotPuntIsDeliveredInline) {
    asys_params p = pool_params(1);
    ctx_guard ctx(&p);
    const pid_t tid = worker_tid(ctx);
    parked_read busy;
    ASSERT_EQ(busy.submit(ctx, 1), 0);
    ASSERT_TRUE(busy.wait_blocked(tid)) << "the only worker is busy";

    temp_dir d;
    constexpr size_t kSize = 256 * 1024, kCachedPart = 64 * 1024;
    int fd = make_file(d.file("p"), kSize);
    drop_cache(fd);
    posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM);
    std::vector<char> warm(kCachedPart), buf(kSize);
    ASSERT_EQ(pread(fd, warm.data(), kCachedPart, 0), static_cast<ssize_t>(kCachedPart));
    if (!cached(fd, 0, kCachedPart) || cached(fd, kSize - 4096, 4096))
        GTEST_SKIP() << "SKIPPED: could not build a partly cached file here";
    asys_op op;
    asys_prep_pread(&op, fd, buf.data(), kSize, 0);
    op.flags = ASYS_F_ATOMIC;
    op.user_data = 2;  // no ret_ptr: the result must come as an entry
    ASSERT_EQ(asys_submit(ctx, &op), ASYS_DONE);
    asys_cqe cqe;
    ASSERT_EQ(asys_peek(ctx, &cqe, 1), 1);
    EXPECT_EQ(cqe.user_data, 2u);
    if (cqe.res == static_cast<long>(kSize) && cached(fd, kSize - 4096, 4096)) {
        ASSERT_EQ(busy.release(), 1);
        GTEST_SKIP() << "SKIPPED: the kernel cached the tail during the probe (readahead under load): "
                        "no partly cached range left to test";
    }
    EXPECT_GE(cqe.res, static_cast<long>(kCachedPart));
    EXPECT_LT(cqe.res, static_cast<long>(kSize));
    check_pattern(buf.data(), static_cast<size_t>(cqe.res), 0);
    ASSERT_EQ(busy.release(), 1);
    auto c = reap(ctx, 1);
    ASSERT_EQ(c.size(), 1u);
    EXPECT_EQ(c[0].user_data, 1u);
    close(fd);
}

TEST_F(FastPath, EofIsNotWouldBlock) {
    int fd = make_file(dir_.file("e"), 10000);
    char buf[8192];
    ASSERT_EQ(pread(fd, buf, sizeof buf, 0), 8192);
    ASSERT_EQ(pread(fd, buf, sizeof buf, 8192), 10000 - 8192);
    asys_op op;
    long res = 0;
    asys_prep_pread(&op, fd, buf, sizeof buf, 4096);
    op.ret_ptr = &res;
    ASSERT_EQ(asys_submit(ctx_, &op), ASYS_DONE) << "short because of EOF: final, inline";
    EXPECT_EQ(res, 10000 - 4096);
    ASSERT_EQ(lseek(fd, 6000, SEEK_SET), 6000);
    asys_prep_read(&op, fd, buf, sizeof buf);
    op.ret_ptr = &res;
    ASSERT_EQ(asys_submit(ctx_, &op), ASYS_DONE);
    EXPECT_EQ(res, 4000);
    asys_prep_pread(&op, fd, buf, sizeof buf, 20000);
    op.ret_ptr = &res;
    ASSERT_EQ(asys_submit(ctx_, &op), ASYS_DONE);
    EXPECT_EQ(res, 0);
    EXPECT_EQ(stats(ctx_).punted_probe + stats(ctx_).punted_direct, 0u);
    close(fd);
}

// Creates two 64 KiB pattern files; false if `dpath` cannot be opened with
// O_DIRECT here (errno says why).
bool make_buffered_and_direct(const std::string &bpath, const std::string &dpath) {
    close(make_file(bpath, 65536));
    close(make_file(dpath, 65536));
    int probe = open(dpath.c_str(), O_RDONLY | O_DIRECT);
    if (probe < 0) return false;
    close(probe);
    return true;
}

// Opens `path` with O_DIRECT at exactly descriptor number `num`.
int open_at_number(const std::string &path, int flags, int num) {
    int fd = open(path.c_str(), flags | O_CLOEXEC);
    if (fd < 0 || fd == num) return fd;
    int r = dup3(fd, num, O_CLOEXEC);
    close(fd);
    return r;
}

// An O_DIRECT read must never wait for the device on the caller's thread.
// Proof: with the file's pages dropped from the cache, any inline device
// read would have completed inline; the op must instead reach a backend. The
// descriptor number is shared with a buffered file that must keep its inline
// fast path, in both orders, so fd reuse cannot fool the router (nor the
// per-fd "direct I/O refused" hint the O_DIRECT file leaves behind).
// (On ext4 a misaligned O_DIRECT probe falls back to a nonblocking page-cache
// read: with cached pages such a read may complete inline, from the cache.)
TEST_F(FastPath, ODirectNeverReadsTheDeviceInlineEvenAfterFdReuse) {
    std::string bpath = dir_.file("buffered"), dpath = dir_.file("direct");
    if (!make_buffered_and_direct(bpath, dpath))
        GTEST_SKIP() << "O_DIRECT unsupported on this filesystem: " << strerror(errno);
    void *mem = nullptr;
    ASSERT_EQ(posix_memalign(&mem, 4096, 4096), 0);
    char *buf = static_cast<char *>(mem);
    const int num = 77;  // the one fd number all files below share

    auto read_once = [&](uint32_t *path) {
        asys_op op;
        asys_prep_pread(&op, num, buf, 4096, 8192);
        long r = run(ctx_, op, path);
        EXPECT_EQ(r, 4096);
        check_pattern(buf, 4096, 8192);
    };
    for (int round = 0; round < 3; ++round) {
        ASSERT_EQ(open_at_number(bpath, O_RDONLY, num), num);
        char warm[4096];
        ASSERT_EQ(pread(num, warm, sizeof warm, 8192), 4096);
        uint32_t path = 0;
        read_once(&path);
        EXPECT_EQ(path, ASYS_PATH_INLINE) << "buffered + cached: inline (round " << round << ")";
        close(num);

        ASSERT_EQ(open_at_number(dpath, O_RDONLY | O_DIRECT, num), num);
        drop_cache(num);
        for (int i = 0; i < 2; ++i) {  // the refused probe, then the hint
            read_once(&path);
            EXPECT_EQ(path, async_path(ctx_, ASYS_OP_PREAD))
                << "same fd number, now O_DIRECT: no inline device read (round " << round << ")";
        }
        close(num);
    }
    asys_stats st;
    ASSERT_EQ(asys_ctx_stats(ctx_, &st), 0);
    EXPECT_EQ(st.done_inline, 3u);
    EXPECT_EQ(st.punted_probe + st.punted_direct, 6u);
    free(mem);
}

// The "direct I/O refused" hint: after one refused probe, reads of the fd
// skip the probe (proof: an injected probe error is not consumed) and give
// the direct read's result. When the fd leaves O_DIRECT (fcntl), the next
// read probes again and completes inline from the cache. NOWAIT reads always
// probe (they never go to a backend).
TEST_F(FastPath, DirectHintSkipsTheRefusedProbeWhileTheFdIsDirect) {
    std::string bpath = dir_.file("buffered"), dpath = dir_.file("direct");
    if (!make_buffered_and_direct(bpath, dpath))
        GTEST_SKIP() << "O_DIRECT unsupported on this filesystem: " << strerror(errno);
    namespace fault = asys::internal::fault;
    void *mem = nullptr;
    ASSERT_EQ(posix_memalign(&mem, 4096, 4096), 0);
    char *buf = static_cast<char *>(mem);
    const int fd = open_at_number(dpath, O_RDONLY | O_DIRECT, 79);
    ASSERT_EQ(fd, 79);
    drop_cache(fd);
    asys_op op;
    asys_prep_pread(&op, fd, buf, 4096, 8192);
    uint32_t path = 0;
    EXPECT_EQ(run(ctx_, op, &path), 4096);  // the refused probe leaves the hint
    EXPECT_EQ(path, async_path(ctx_, ASYS_OP_PREAD));

    fault::probe_errno = EIO;  // a probe that runs returns -EIO as the op's result
    fault::probe_failures = 1;
    for (int i = 0; i < 100; ++i) {
        memset(buf, 0, 4096);
        EXPECT_EQ(run(ctx_, op, &path), 4096) << "read " << i;
        check_pattern(buf, 4096, 8192);
        EXPECT_EQ(path, async_path(ctx_, ASYS_OP_PREAD));
    }
    EXPECT_EQ(fault::probe_failures.load(), 1) << "no read probed while the fd is O_DIRECT";

    asys_op nw = op;  // NOWAIT: always probed, never skipped
    nw.flags = ASYS_F_NOWAIT;
    EXPECT_EQ(run(ctx_, nw, &path), -EIO);
    EXPECT_EQ(fault::probe_failures.load(), 0);

    // Out of direct mode: the hint is dropped at the next read, which probes
    // and completes inline from the cache (warmed here: direct reads bypass it).
    ASSERT_EQ(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_DIRECT), 0);
    char warm[4096];
    ASSERT_EQ(pread(fd, warm, sizeof warm, 8192), 4096);
    EXPECT_EQ(run(ctx_, op, &path), 4096);
    EXPECT_EQ(path, ASYS_PATH_INLINE);
    close(fd);
    free(mem);
}

// Inside one chain, a read atom that went through the O_DIRECT guard lets
// the next read atom on the same fd skip it (the guard costs ~30-250 ns per
// read). Any other atom forgets that: here dup3 swaps an O_DIRECT file onto
// the fd mid-chain, and the next read must still not reach the device on
// the caller's thread (the chain goes async there).
TEST_F(FastPath, ChainForgetsTheGuardHintAfterANonReadAtom) {
    std::string bpath = dir_.file("buffered"), dpath = dir_.file("direct");
    if (!make_buffered_and_direct(bpath, dpath))
        GTEST_SKIP() << "O_DIRECT unsupported on this filesystem: " << strerror(errno);
    syslet_uatom *ring[4] = {};
    ASSERT_EQ(asys_async_register(ctx_, ring, 4), 0);
    void *mem = nullptr;
    ASSERT_EQ(posix_memalign(&mem, 4096, 3 * 4096), 0);
    char *buf = static_cast<char *>(mem);
    const int num = 77, dnum = 78;
    ASSERT_EQ(open_at_number(bpath, O_RDONLY, num), num);
    char warm[4096];
    ASSERT_EQ(pread(num, warm, sizeof warm, 8192), 4096);
    ASSERT_EQ(open_at_number(dpath, O_RDONLY | O_DIRECT, dnum), dnum);
    drop_cache(dnum);

    unsigned long fdv = num, dfdv = dnum, zero = 0, len = 4096, off = 8192;
    unsigned long b0 = reinterpret_cast<unsigned long>(buf), b1 = b0 + 4096, b2 = b0 + 8192;
    long r[4] = {-1, -1, -1, -1};
    syslet_uatom a[4] = {};
    auto pread_atom = [&](syslet_uatom &at, unsigned long *bp, long *ret) {
        at.nr = SYS_pread64;
        at.flags = SYSLET_STOP_ON_NEGATIVE;
        at.ret_ptr = ret;
        at.arg_ptr[0] = &fdv;
        at.arg_ptr[1] = bp;
        at.arg_ptr[2] = &len;
        at.arg_ptr[3] = &off;
    };
    pread_atom(a[0], &b0, &r[0]);  // buffered, cached: guard passes, hint set
    pread_atom(a[1], &b1, &r[1]);  // same fd: guard skipped
    a[2].nr = SYS_dup3;            // fd 77 becomes the O_DIRECT file
    a[2].ret_ptr = &r[2];
    a[2].arg_ptr[0] = &dfdv;
    a[2].arg_ptr[1] = &fdv;
    a[2].arg_ptr[2] = &zero;
    pread_atom(a[3], &b2, &r[3]);  // must not read the device inline
    for (int i = 0; i < 3; ++i) a[i].next = &a[i + 1];

    EXPECT_EQ(asys_async_exec(ctx_, a), 0) << "the read after dup3 went async, not inline";
    EXPECT_EQ(asys_async_wait(ctx_, 1), 1);
    EXPECT_EQ(ring[0], &a[3]);
    EXPECT_EQ(r[0], 4096);
    EXPECT_EQ(r[1], 4096);
    EXPECT_EQ(r[2], num);
    EXPECT_EQ(r[3], 4096);
    for (int i = 0; i < 3; ++i) check_pattern(buf + i * 4096, 4096, 8192);
    close(num);
    close(dnum);
    free(mem);
}

TEST_F(FastPath, PipesAndSockets) {
    pipe_pair pp;
    char b[8] = {};
    long res = 0;
    asys_op op;
    asys_prep_read(&op, pp.r, b, sizeof b);
    op.ret_ptr = &res;
    ASSERT_EQ(asys_submit(ctx_, &op), 0) << "empty pipe: punted, the caller goes on";
    ASSERT_EQ(write(pp.w, "later", 5), 5);
    reap(ctx_, 1);
    EXPECT_EQ(res, 5);
    ASSERT_EQ(write(pp.w, "now", 3), 3);
    asys_prep_read(&op, pp.r, b, sizeof b);
    op.ret_ptr = &res;
    ASSERT_EQ(asys_submit(ctx_, &op), ASYS_DONE) << "data ready: inline, short is final on a pipe";
    EXPECT_EQ(res, 3);

    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    asys_prep_recv(&op, sv[0], b, sizeof b, 0);
    op.ret_ptr = &res;
    ASSERT_EQ(asys_submit(ctx_, &op), 0) << "no data: punted";
    asys_op snd;
    asys_prep_send(&snd, sv[1], "hi", 2, 0);
    long sres = 0;
    snd.ret_ptr = &sres;
    ASSERT_EQ(asys_submit(ctx_, &snd), ASYS_DONE) << "buffer space: send inline";
    EXPECT_EQ(sres, 2);
    reap(ctx_, 1);
    EXPECT_EQ(res, 2);

    asys_prep_poll(&op, sv[0], POLLIN, -1);
    op.ret_ptr = &res;
    ASSERT_EQ(asys_submit(ctx_, &op), 0) << "not readable: punted";
    ASSERT_EQ(asys_submit(ctx_, &snd), ASYS_DONE);
    reap(ctx_, 1);
    EXPECT_EQ(res, POLLIN);
    asys_prep_poll(&op, sv[0], POLLIN, -1);
    op.ret_ptr = &res;
    EXPECT_EQ(asys_submit(ctx_, &op), ASYS_DONE) << "readable: inline";
    close(sv[0]);
    close(sv[1]);
}

TEST_F(FastPath, OpenUsesTheCachedLookup) {
    std::string path = dir_.file("o");
    close(make_file(path, 10));
    long fd = -1;
    asys_op op;
    asys_prep_openat(&op, AT_FDCWD, path.c_str(), O_RDONLY | O_CLOEXEC, 0);
    op.ret_ptr = &fd;
    ASSERT_EQ(asys_submit(ctx_, &op), ASYS_DONE) << "dentry cached: RESOLVE_CACHED hit";
    ASSERT_GE(fd, 0);
    close(static_cast<int>(fd));
    const std::string created = dir_.file("new");  // must outlive the punted op
    asys_prep_openat(&op, AT_FDCWD, created.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    op.ret_ptr = &fd;
    ASSERT_EQ(asys_submit(ctx_, &op), 0) << "O_CREAT: straight to the backend";
    reap(ctx_, 1);
    ASSERT_GE(fd, 0);
    close(static_cast<int>(fd));
    asys_stats st = stats(ctx_);
    EXPECT_EQ(st.done_inline, 1u);
    EXPECT_EQ(st.punted_direct, 1u);
}

TEST_F(FastPath, WritesGoStraightToTheBackend) {
    int fd = make_file(dir_.file("w"), 0);
    asys_op op;
    asys_prep_pwrite(&op, fd, "abc", 3, 0);
    uint32_t path = 0;
    EXPECT_EQ(run(ctx_, op, &path), 3);
    EXPECT_EQ(path, async_path(ctx_, ASYS_OP_PWRITE));
    EXPECT_EQ(stats(ctx_).punted_direct, 1u);
    close(fd);
}

}  // namespace
