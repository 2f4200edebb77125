// Review of the changes of issue 18: asys_submit's short way for a READ or
// PREAD (straight to the read probe), asys_call as a 7-register function,
// read/pread64 in a threadlet straight to the probe, the uring eventfd's
// lock-free mute count and completion_ring::size() without its lock, and a
// chain atom's /dev/zero read the ring stopped early. Every path must give
// the plain call's result and effects, bad arguments included.
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "asys/syslet.h"
#include "helpers.hpp"
#include "syslet_helpers.hpp"

using namespace asys_test;

namespace {

constexpr size_t kPage = 4096;
constexpr size_t kPartHead = 4 * kPage;  ///< the cached head of the edge fixture's partly cached file

long plain_call(long nr, long a0, long a1, long a2, long a3) {
    const long r = syscall(nr, a0, a1, a2, a3);
    return r < 0 ? -errno : r;
}

/// What one read through asys gave: submit's return, the result, the path.
struct read_outcome {
    int submit_rc = 0;
    long res = 0;
    uint32_t path = 0;
};

/// Submits one READ or PREAD (a full 64-bit length) with `flags` and waits
/// for its completion if there is one (bounded). An op that does not
/// complete in time is cancelled and waited for again; *ret_ptr lives on the
/// heap so that even one that never completes writes nowhere else.
read_outcome submit_read(asys_ctx *ctx, bool positional, int fd, void *buf, uint64_t len, int64_t off,
                         uint32_t flags, int wait_s = 30) {
    static std::atomic<uint64_t> next_id{1};
    asys_op op;
    if (positional)
        asys_prep_pread(&op, fd, buf, 0, off);
    else
        asys_prep_read(&op, fd, buf, 0);
    op.args[2] = len;
    op.flags = flags;
    op.user_data = next_id++;
    auto *res = new long(-999999);
    op.ret_ptr = res;
    read_outcome o;
    errno = 7777;
    o.submit_rc = asys_submit(ctx, &op);
    EXPECT_EQ(errno, 7777) << "asys_submit changed errno (flags 0x" << std::hex << flags << std::dec << ", fd " << fd
                           << ", length " << len << ", offset " << off << ", returned " << o.submit_rc << ")";
    if (o.submit_rc < 0) {
        o.res = o.submit_rc;
        delete res;
        return o;
    }
    if (o.submit_rc == ASYS_DONE && !(flags & ASYS_F_CQE_ALWAYS)) {
        o.res = *res;
        o.path = ASYS_PATH_INLINE;
        delete res;
        return o;
    }
    asys_cqe cqe{};
    struct timespec ts{wait_s, 0};
    if (asys_wait(ctx, 1, &ts, &cqe, 1) != 1) {
        ADD_FAILURE() << "no completion in " << wait_s << " s";
        o.res = -999998;
        asys_cancel(ctx, op.user_data);
        struct timespec again{10, 0};
        if (asys_wait(ctx, 1, &again, &cqe, 1) == 1)
            delete res;  // else leaked: the op may still write it
        else
            ADD_FAILURE() << "not even cancelled in 10 s";
        return o;
    }
    EXPECT_EQ(cqe.user_data, op.user_data);
    EXPECT_EQ(cqe.res, *res) << "cqe and ret_ptr disagree";
    o.res = *res;
    o.path = cqe.path;
    delete res;
    return o;
}

/// Bytes waiting in a pipe, socket or FIFO, read away without blocking.
void drain(int fd) {
    int n = 0;
    while (ioctl(fd, FIONREAD, &n) == 0 && n > 0) {
        std::vector<char> b(static_cast<size_t>(n));
        if (read(fd, b.data(), b.size()) <= 0) break;
    }
}

/// Leaves only the first `head` bytes of the (clean) file in the page cache:
/// all of it out (a partial DONTNEED cannot split a large folio), then the
/// head read back without readahead.
void cache_only_the_head(int fd, size_t head) {
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM);
    std::vector<char> b(head);
    if (pread(fd, b.data(), head, 0) != static_cast<ssize_t>(head)) ADD_FAILURE() << "pread head";
}

/// Every kind of descriptor and buffer the read edge cases need.
struct edge_fixture {
    temp_dir dir;
    static constexpr size_t kFileSize = 3 * kPage + 100;
    static constexpr size_t kPartSize = 16 * kPage;
    int file = -1, part = -1, dirfd = -1, wronly = -1, opath = -1, closed = -1;
    int pipe_r = -1, pipe_w = -1, sock_a = -1, sock_b = -1, fifo = -1, efd = -1;
    int zero = -1, null = -1, full = -1;
    char *good = nullptr;        ///< 1 MiB, page-aligned
    char *none = nullptr;        ///< one PROT_NONE page
    char *ronly = nullptr;       ///< one PROT_READ page
    char *half = nullptr;        ///< two pages, the second PROT_NONE
    static constexpr size_t kGood = 1 << 20;

    edge_fixture() {
        file = make_file(dir.file("f"), kFileSize);
        part = make_file(dir.file("part"), kPartSize);
        dirfd = open(dir.path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        wronly = open(dir.file("f").c_str(), O_WRONLY | O_CLOEXEC);
        opath = open(dir.file("f").c_str(), O_PATH | O_CLOEXEC);
        int p[2];
        if (pipe2(p, O_CLOEXEC) == 0) pipe_r = p[0], pipe_w = p[1];
        int s[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, s) == 0) sock_a = s[0], sock_b = s[1];
        if (mkfifo(dir.file("fifo").c_str(), 0600) == 0) fifo = open(dir.file("fifo").c_str(), O_RDWR | O_CLOEXEC);
        efd = eventfd(0, EFD_CLOEXEC);
        zero = open("/dev/zero", O_RDONLY | O_CLOEXEC);
        null = open("/dev/null", O_RDONLY | O_CLOEXEC);
        full = open("/dev/full", O_RDONLY | O_CLOEXEC);
        good = static_cast<char *>(aligned_alloc(kPage, kGood));
        none = static_cast<char *>(mmap(nullptr, kPage, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
        ronly = static_cast<char *>(mmap(nullptr, kPage, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
        half = static_cast<char *>(mmap(nullptr, 2 * kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
        if (half != MAP_FAILED) mprotect(half + kPage, kPage, PROT_NONE);
        if (part >= 0) fdatasync(part);  // clean pages: DONTNEED can drop them
        closed = dup(file);  // last: no later open takes its number
        close(closed);
    }
    ~edge_fixture() {
        for (int fd : {file, part, dirfd, wronly, opath, pipe_r, pipe_w, sock_a, sock_b, fifo, efd, zero, null, full})
            if (fd >= 0) close(fd);
        free(good);
        munmap(none, kPage);
        munmap(ronly, kPage);
        munmap(half, 2 * kPage);
    }
    bool ok() const {
        return file >= 0 && part >= 0 && dirfd >= 0 && wronly >= 0 && opath >= 0 && pipe_r >= 0 && sock_a >= 0 &&
               fifo >= 0 && efd >= 0 && zero >= 0 && null >= 0 && full >= 0 && good && none != MAP_FAILED &&
               ronly != MAP_FAILED && half != MAP_FAILED;
    }
    /// The same state before every read: file positions at 0, the streams
    /// hold their bytes, the eventfd counts 5, part's tail not cached.
    void reset() {
        lseek(file, 0, SEEK_SET);
        lseek(part, 0, SEEK_SET);
        drain(pipe_r);
        (void)!write(pipe_w, "xy", 2);
        drain(sock_a);
        (void)!write(sock_b, "abc", 3);
        drain(fifo);
        (void)!write(fifo, "fifo", 4);
        uint64_t v = 0;
        struct pollfd p{efd, POLLIN, 0};
        if (poll(&p, 1, 0) == 1) (void)!read(efd, &v, 8);
        v = 5;
        (void)!write(efd, &v, 8);
        cache_only_the_head(part, kPartHead);
        memset(good, 0x55, kGood);
        memset(half, 0x55, kPage);
    }
};

struct read_case {
    std::string name;
    bool positional;
    int fd;
    char *buf;
    uint64_t len;
    int64_t off;
    char *check;  ///< bytes to compare after the read (a buffer the test owns), or null
    size_t check_len;
};

std::vector<read_case> edge_cases(edge_fixture &f) {
    const int64_t size = edge_fixture::kFileSize;
    char *g = f.good;
    const size_t cl = 3 * kPage + 200;
    std::vector<read_case> v = {
        {"pread cached aligned", true, f.file, g, kPage, 0, g, cl},
        {"pread cached unaligned", true, f.file, g + 1, 1000, 100, g, cl},
        {"pread at EOF", true, f.file, g, kPage, size, g, cl},
        {"pread across EOF (aligned)", true, f.file, g, kPage, size - 100, g, cl},
        {"pread far past EOF", true, f.file, g, kPage, int64_t{1} << 40, g, cl},
        {"pread offset -1", true, f.file, g, kPage, -1, g, cl},
        {"pread offset -2", true, f.file, g, kPage, -2, g, cl},
        {"pread offset INT64_MIN", true, f.file, g, kPage, INT64_MIN, g, cl},
        {"pread length 0", true, f.file, g, 0, 0, g, cl},
        {"pread length 4 GiB", true, f.file, g, uint64_t{1} << 32, 0, g, cl},
        {"pread length 4 GiB + 4096", true, f.file, g, (uint64_t{1} << 32) + kPage, size - 100, g, cl},
        {"pread length MAX_RW_COUNT + 1", true, f.file, g, 0x7ffff001, 0, g, cl},
        {"pread length 2^63", true, f.file, g, uint64_t{1} << 63, 0, g, cl},
        {"pread length UINT64_MAX", true, f.file, g, UINT64_MAX, 0, g, cl},
        {"pread NULL buffer", true, f.file, nullptr, kPage, 0, nullptr, 0},
        {"pread PROT_NONE buffer", true, f.file, f.none, kPage, 0, nullptr, 0},
        {"pread PROT_READ buffer", true, f.file, f.ronly, kPage, 0, nullptr, 0},
        {"pread buffer's first byte ends a page", true, f.file, f.half + kPage - 1, kPage, 0, f.half, kPage},
        {"pread buffer half mapped", true, f.file, f.half, 2 * kPage, 0, f.half, kPage},
        {"pread partly cached", true, f.part, g, edge_fixture::kPartSize, 0, g, edge_fixture::kPartSize},
        {"pread closed fd", true, f.closed, g, kPage, 0, g, 16},
        {"pread fd -1", true, -1, g, kPage, 0, g, 16},
        {"pread pipe", true, f.pipe_r, g, kPage, 0, g, 16},
        {"pread pipe offset -1", true, f.pipe_r, g, kPage, -1, g, 16},
        {"pread directory", true, f.dirfd, g, kPage, 0, g, 16},
        {"pread O_WRONLY", true, f.wronly, g, kPage, 0, g, 16},
        {"pread O_PATH", true, f.opath, g, kPage, 0, g, 16},
        {"pread /dev/zero 1 MiB", true, f.zero, g, edge_fixture::kGood, 0, g, edge_fixture::kGood},
        {"pread /dev/zero offset -1", true, f.zero, g, kPage, -1, g, 16},
        {"read at the position aligned", false, f.file, g, kPage, 0, g, cl},
        {"read at the position, 4 GiB", false, f.file, g, uint64_t{1} << 32, 0, g, cl},
        {"read at the position PROT_NONE", false, f.file, f.none, kPage, 0, nullptr, 0},
        {"read at the position NULL", false, f.file, nullptr, kPage, 0, nullptr, 0},
        {"read at the position, first byte ends a page", false, f.file, f.half + kPage - 1, kPage, 0, f.half, kPage},
        {"read at the position, half mapped", false, f.file, f.half, 2 * kPage, 0, f.half, kPage},
        {"read at the position, partly cached", false, f.part, g, edge_fixture::kPartSize, 0, g, edge_fixture::kPartSize},
        {"read length 0 of a directory", false, f.dirfd, g, 0, 0, g, 16},
        {"read closed fd aligned", false, f.closed, g, kPage, 0, g, 16},
        {"read closed fd unaligned", false, f.closed, g, 100, 0, g, 16},
        {"read closed fd length 0", false, f.closed, g, 0, 0, g, 16},
        {"read fd INT_MAX", false, INT_MAX, g, kPage, 0, g, 16},
        {"read pipe (2 of 4096)", false, f.pipe_r, g, kPage, 0, g, 16},
        {"read pipe NULL buffer", false, f.pipe_r, nullptr, kPage, 0, nullptr, 0},
        {"read socket (3 of 4096)", false, f.sock_a, g, kPage, 0, g, 16},
        {"read FIFO (4 of 4096)", false, f.fifo, g, kPage, 0, g, 16},
        {"read eventfd 8", false, f.efd, g, 8, 0, g, 16},
        {"read eventfd 4", false, f.efd, g, 4, 0, g, 16},
        {"read /dev/zero 1 MiB", false, f.zero, g, edge_fixture::kGood, 0, g, edge_fixture::kGood},
        {"read /dev/null", false, f.null, g, kPage, 0, g, 16},
        {"read /dev/full", false, f.full, g, kPage, 0, g, kPage},
        {"read directory", false, f.dirfd, g, kPage, 0, g, 16},
        {"read O_WRONLY", false, f.wronly, g, kPage, 0, g, 16},
        {"read O_PATH", false, f.opath, g, kPage, 0, g, 16},
    };
    return v;
}

/// The state a read left: its result, the fd's position, the checked bytes.
struct read_effect {
    long res;
    long pos;
    std::vector<char> bytes;
    bool operator==(const read_effect &o) const { return res == o.res && pos == o.pos && bytes == o.bytes; }
};

read_effect effect_of(const read_case &c, long res) {
    const long pos = lseek(c.fd, 0, SEEK_CUR);
    return {res, pos < 0 ? -errno : pos, c.check ? std::vector<char>(c.check, c.check + c.check_len) : std::vector<char>{}};
}

std::string describe(const read_effect &e) {
    return "res " + std::to_string(e.res) + ", position " + std::to_string(e.pos);
}

/// The reads NOWAIT cannot run without the risk of blocking, so it says
/// -EAGAIN for them whatever the call would give (docs/api.md, NOWAIT): a
/// zero length (the call still reaches the file's read, which may wait on
/// FUSE or NFS), lengths past MAX_RW_COUNT (never probed), a buffer whose first byte ends
/// a page (no room for the O_DIRECT guard), and descriptors without
/// nonblocking reads (RWF_NOWAIT is EOPNOTSUPP: a FIFO opened by name, a
/// directory, /dev/full).
bool nowait_cannot_tell(const edge_fixture &f, const read_case &c) {
    const bool first_byte_ends_a_page = c.buf && (reinterpret_cast<uintptr_t>(c.buf) & (kPage - 1)) == kPage - 1;
    return c.len == 0 || c.len > 0x7ffff000 || first_byte_ends_a_page || c.fd == f.fifo || c.fd == f.dirfd ||
           c.fd == f.full;
}

/// Every edge case through asys with `flags` on a context with `ctx_flags`
/// against the plain call; the context's counters balance after.
void check_edges_against_the_call(uint32_t flags, unsigned ctx_flags = 0) {
    asys_params p = params(2, 0, ctx_flags);
    ctx_guard ctx(&p);  // first: its descriptors cannot take the fixture's closed number
    ASSERT_TRUE(ctx.ctx);
    edge_fixture f;
    ASSERT_TRUE(f.ok()) << strerror(errno);
    const asys_stats before = stats(ctx);
    uint64_t accepted = 0;
    for (const read_case &c : edge_cases(f)) {
        f.reset();
        const long plain = plain_call(c.positional ? SYS_pread64 : SYS_read, c.fd, reinterpret_cast<long>(c.buf),
                                      static_cast<long>(c.len), c.off);
        const read_effect want = effect_of(c, plain);
        // ATOMIC is refused (-EAGAIN, nothing done) while no pool worker is
        // idle, as documented: the previous case's worker may still be
        // finishing. Submit it again until one takes it.
        read_outcome o;
        for (unsigned tries = 0;; ++tries) {
            f.reset();
            o = submit_read(ctx, c.positional, c.fd, c.buf, c.len, c.off, flags);
            if (!(flags & ASYS_F_ATOMIC) || o.submit_rc != -EAGAIN || tries == 100000) break;
            sched_yield();
        }
        if (o.submit_rc >= 0) ++accepted;
        const read_effect got = effect_of(c, o.res);
        if ((flags & ASYS_F_NOWAIT) && c.fd == f.part) {
            // Documented: NOWAIT delivers what was cached, a short count: the
            // head at least (FADV_DONTNEED may leave more of the file cached
            // on a busy machine), never more than the call.
            EXPECT_GE(o.res, long(kPartHead)) << c.name << " with NOWAIT";
            EXPECT_LE(o.res, plain) << c.name << " with NOWAIT";
            continue;
        }
        if ((flags & ASYS_F_NOWAIT) && nowait_cannot_tell(f, c)) {
            EXPECT_EQ(o.res, -EAGAIN) << c.name << " with NOWAIT";
            continue;
        }
        EXPECT_TRUE(got == want) << c.name << ": the call gave " << describe(want) << ", asys (flags 0x"
                                 << std::hex << flags << std::dec << ", path " << o.path << ", submit "
                                 << o.submit_rc << ") " << describe(got)
                                 << (got.bytes != want.bytes ? " (other bytes)" : "");
    }
    const asys_stats after = stats(ctx);
    EXPECT_EQ(after.submitted - before.submitted, accepted);
    EXPECT_EQ(after.submitted, after.done_inline + after.punted_probe + after.punted_direct);
    // An op is counted out just after its completion is delivered: bounded re-check.
    EXPECT_TRUE(eventually([&] { return stats(ctx).inflight == 0; })) << stats(ctx).inflight << " in flight";
}

}  // namespace

// --- 1. asys_submit's short way for READ / PREAD ---------------------------

TEST(Review18, SubmitShortWayMatchesTheCall) { check_edges_against_the_call(0); }
TEST(Review18, SubmitShortWayBufferedMatchesTheCall) { check_edges_against_the_call(ASYS_F_BUFFERED); }
TEST(Review18, SubmitGeneralWayMatchesTheCall) { check_edges_against_the_call(ASYS_F_CQE_ALWAYS); }
TEST(Review18, SubmitGeneralWayBufferedMatchesTheCall) {
    check_edges_against_the_call(ASYS_F_CQE_ALWAYS | ASYS_F_BUFFERED);
}
TEST(Review18, SubmitAsyncMatchesTheCall) { check_edges_against_the_call(ASYS_F_ASYNC); }
TEST(Review18, SubmitSyncMatchesTheCall) { check_edges_against_the_call(ASYS_F_SYNC); }
TEST(Review18, SubmitAtomicMatchesTheCall) { check_edges_against_the_call(ASYS_F_ATOMIC); }
TEST(Review18, ContextInlineAlwaysMatchesTheCall) { check_edges_against_the_call(0, ASYS_CTX_INLINE_ALWAYS); }
TEST(Review18, ContextInlineNeverMatchesTheCall) { check_edges_against_the_call(0, ASYS_CTX_INLINE_NEVER); }
TEST(Review18, ContextNoODirectMatchesTheCall) { check_edges_against_the_call(0, ASYS_CTX_NO_ODIRECT); }
// None of the edge cases would block (cached files, streams with bytes,
// bad arguments): NOWAIT must give the call's result, not -EAGAIN, except
// where it cannot tell without the risk of blocking (nowait_cannot_tell).
TEST(Review18, SubmitNowaitMatchesTheCallWhereNothingBlocks) { check_edges_against_the_call(ASYS_F_NOWAIT); }

// The short way's checks are validate_op's: every malformed op is refused
// the same way with or without a flag that forces the general path.
TEST(Review18, ShortWayRefusesWhatValidateOpRefuses) {
    ctx_guard ctx;
    temp_dir d;
    const int fd = make_file(d.file("f"), kPage);
    ASSERT_GE(fd, 0);
    static char buf[kPage];
    long res = -999;
    alignas(16) unsigned char raw[sizeof(asys_op) + 16];
    struct variant {
        const char *name;
        std::function<void(asys_op &)> spoil;
        int want;
    };
    const std::vector<variant> variants = {
        {"unknown flag bit 11", [](asys_op &o) { o.flags |= 1u << 11; }, -EINVAL},
        {"flag bit 31", [](asys_op &o) { o.flags |= 1u << 31; }, -EINVAL},
        {"cb_arg without callback", [](asys_op &o) { o.cb_arg = &o; }, -EINVAL},
        {"nr set", [](asys_op &o) { o.nr = SYS_write; }, -EINVAL},
        {"nr negative", [](asys_op &o) { o.nr = -1; }, -EINVAL},
        {"reserved[0] set", [](asys_op &o) { o.reserved[0] = 1; }, -EINVAL},
        {"deadline_ns without DEADLINE", [](asys_op &o) { o.deadline_ns = 1; }, -EINVAL},
        {"opcode out of range", [](asys_op &o) { o.opcode = ASYS_OP__COUNT; }, -EINVAL},
        {"DEADLINE above INT64_MAX",
         [](asys_op &o) {
             o.flags |= ASYS_F_DEADLINE;
             o.deadline_ns = uint64_t{1} << 63;
         },
         -EINVAL},
    };
    for (uint32_t extra : {0u, unsigned{ASYS_F_CQE_ALWAYS}, unsigned{ASYS_F_BUFFERED}}) {
        for (uint32_t opcode : {unsigned{ASYS_OP_READ}, unsigned{ASYS_OP_PREAD}}) {
            for (const variant &v : variants) {
                asys_op op;
                if (opcode == ASYS_OP_READ)
                    asys_prep_read(&op, fd, buf, kPage);
                else
                    asys_prep_pread(&op, fd, buf, kPage, 0);
                op.ret_ptr = &res;
                op.flags = extra;
                v.spoil(op);
                EXPECT_EQ(asys_submit(ctx, &op), v.want) << v.name << " opcode " << opcode << " flags " << extra;
            }
            asys_op op;
            asys_prep_pread(&op, fd, buf, kPage, 0);
            op.opcode = opcode;
            op.ret_ptr = &res;
            op.flags = extra;
            for (size_t mis : {1u, 2u, 4u}) {
                memcpy(raw + mis, &op, sizeof op);
                EXPECT_EQ(asys_submit(ctx, reinterpret_cast<const asys_op *>(raw + mis)), -EINVAL)
                    << "op misaligned by " << mis;
            }
        }
    }
    EXPECT_EQ(asys_submit(ctx, nullptr), -EFAULT);
    EXPECT_EQ(asys_submit(nullptr, nullptr), -EINVAL);
    const asys_stats st = stats(ctx);
    EXPECT_EQ(st.submitted, 0u) << "a refused op was counted";
    EXPECT_EQ(st.inflight, 0u);
    close(fd);
}

// The short way checks the context first like every submit: a forked
// child's read on its parent's context is -EOWNERDEAD, nothing read.
TEST(Review18, ShortWayInAForkedChildIsEOWNERDEAD) {
    ctx_guard ctx;
    temp_dir d;
    const int fd = make_file(d.file("f"), kPage);
    ASSERT_GE(fd, 0);
    char buf[64];
    ASSERT_EQ(submit_read(ctx, true, fd, buf, 64, 0, 0).res, 64);  // cached, and the way is warm
    ASSERT_EQ(lseek(fd, 0, SEEK_SET), 0);
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        long res = 12345;
        asys_op op;
        asys_prep_pread(&op, fd, buf, 64, 0);
        op.ret_ptr = &res;
        const int rc = asys_submit(ctx, &op);
        asys_prep_read(&op, fd, buf, 64);
        op.ret_ptr = &res;
        const int rc2 = asys_submit(ctx, &op);
        _exit((rc == -EOWNERDEAD ? 0 : 1) | (rc2 == -EOWNERDEAD ? 0 : 2) | (res == 12345 ? 0 : 4) |
              (lseek(fd, 0, SEEK_CUR) == 0 ? 0 : 8));
    }
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status)) << "the child died: status " << status;
    const int bits = WEXITSTATUS(status);
    EXPECT_EQ(bits & 1, 0) << "PREAD through the short way in the child was accepted";
    EXPECT_EQ(bits & 2, 0) << "READ through the short way in the child was accepted";
    EXPECT_EQ(bits & 4, 0) << "the child's read wrote *ret_ptr";
    EXPECT_EQ(bits & 8, 0) << "the child's read moved the file position";
    close(fd);
}

namespace {

/// The descriptors of this process whose /proc/self/fd link is `target`.
std::vector<int> fds_linked_to(const std::string &target) {
    std::vector<int> out;
    if (DIR *d = opendir("/proc/self/fd")) {
        while (dirent *e = readdir(d)) {
            if (e->d_name[0] == '.') continue;
            char link[256] = {};
            const std::string path = std::string("/proc/self/fd/") + e->d_name;
            const ssize_t n = readlink(path.c_str(), link, sizeof link - 1);
            if (n > 0 && target == link) out.push_back(atoi(e->d_name));
        }
        closedir(d);
    }
    return out;
}

}  // namespace

// A stale descriptor number (the program closed it; the library's own
// io_uring took the number): read(2) of it is -EINVAL at once. Through
// asys it must be the same error in bounded time, on every path.
TEST(Review18, ReadOfTheLibrarysOwnRingFdIsTheCallsError) {
    ctx_guard ctx;
    const std::vector<int> rings = fds_linked_to("anon_inode:[io_uring]");
    if (rings.empty()) GTEST_SKIP() << "SKIPPED: no io_uring descriptor in this process (pool backend)";
    static char buf[kPage];
    for (int rfd : rings) {
        const long plain = plain_call(SYS_read, rfd, reinterpret_cast<long>(buf), long(kPage), 0);
        for (uint32_t flags : {0u, unsigned{ASYS_F_ASYNC}, unsigned{ASYS_F_CQE_ALWAYS}, unsigned{ASYS_F_NOWAIT}}) {
            const read_outcome o = submit_read(ctx, false, rfd, buf, kPage, 0, flags, 5);
            EXPECT_EQ(o.res, plain) << "the library's ring fd " << rfd << ", flags " << flags << ", path " << o.path;
        }
    }
}

// The same for an io_uring of the program's own (not the library's): read(2)
// of it is -EINVAL at once; through asys, the same error in bounded time.
TEST(Review18, ReadOfAProgramsOwnIoUringFdIsTheCallsError) {
    ctx_guard ctx;
    struct io_uring_params_min {
        uint32_t sq_entries, cq_entries, flags, sq_thread_cpu, sq_thread_idle, features, wq_fd, resv[3];
        uint64_t sq_off[5], cq_off[5];
    } prm{};
    const long ring = syscall(SYS_io_uring_setup, 4, &prm);
    if (ring < 0) GTEST_SKIP() << "SKIPPED: io_uring_setup: " << strerror(errno);
    static char buf[kPage];
    const int rfd = static_cast<int>(ring);
    const long plain = plain_call(SYS_read, rfd, reinterpret_cast<long>(buf), long(kPage), 0);
    for (uint32_t flags : {0u, unsigned{ASYS_F_ASYNC}}) {
        const read_outcome o = submit_read(ctx, false, rfd, buf, kPage, 0, flags, 5);
        EXPECT_EQ(o.res, plain) << "flags " << flags << " path " << o.path;
    }
    close(rfd);
}

// Descriptors that say ESPIPE to lseek but are no pipe or socket, whose
// read(2) fails at once (-EINVAL): an epoll fd, a pidfd, a timerfd or
// signalfd asked for too few bytes. Through asys: the same, in bounded time.
TEST(Review18, ReadsThatFailAtOnceOnOtherUnseekableFdsComplete) {
    ctx_guard ctx;
    struct named_fd {
        const char *name;
        int fd;
        size_t len;
    };
    sigset_t none;
    sigemptyset(&none);
    std::vector<named_fd> fds = {
        {"epoll", epoll_create1(EPOLL_CLOEXEC), kPage},
        {"pidfd", static_cast<int>(syscall(SYS_pidfd_open, getpid(), 0)), kPage},
        {"timerfd, 4 bytes", timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC), 4},
        {"signalfd, 4 bytes", signalfd(-1, &none, SFD_CLOEXEC), 4},
    };
    static char buf[kPage];
    for (const named_fd &n : fds) {
        if (n.fd < 0) {
            std::printf("SKIPPED %s: %s\n", n.name, strerror(errno));
            continue;
        }
        const long plain = plain_call(SYS_read, n.fd, reinterpret_cast<long>(buf), long(n.len), 0);
        for (uint32_t flags : {0u, unsigned{ASYS_F_ASYNC}}) {
            const read_outcome o = submit_read(ctx, false, n.fd, buf, n.len, 0, flags, 5);
            EXPECT_EQ(o.res, plain) << n.name << ", flags " << flags << ", path " << o.path;
        }
        close(n.fd);
    }
}

namespace {

/// An O_DIRECT file of `size` bytes (pattern), or -1 (errno) if the
/// filesystem refuses O_DIRECT.
int open_direct(const std::string &path, size_t size) {
    const int fd = make_file(path, size);
    if (fd < 0) return -1;
    close(fd);
    return open(path.c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC);
}

bool pattern_at(const char *buf, size_t len, size_t file_off) {
    for (size_t i = 0; i < len; ++i)
        if (buf[i] != pattern(file_off + i)) return false;
    return true;
}

}  // namespace

// An O_DIRECT read never runs on the caller, whichever way asys_submit
// takes (short, general, BUFFERED off), and an fd number closed and reopened
// or toggled with F_SETFL is judged by what it is now.
TEST(Review18, ODirectReadsThroughTheShortWayNeverRunOnTheCaller) {
    temp_dir d;
    const std::string path = d.file("direct");
    int fd = open_direct(path, 64 * kPage);
    if (fd < 0) GTEST_SKIP() << "SKIPPED: O_DIRECT not supported in " << d.path << ": " << strerror(errno);
    char *buf = static_cast<char *>(aligned_alloc(kPage, 8 * kPage));
    ASSERT_TRUE(buf);
    for (unsigned ctx_flags : {0u, unsigned{ASYS_CTX_INLINE_NEVER}}) {
        asys_params p = params(2, 0, ctx_flags);
        ctx_guard ctx(&p);
        auto check_direct = [&](const char *what) {
            for (uint32_t flags : {0u, unsigned{ASYS_F_CQE_ALWAYS}}) {
                for (int round = 0; round < 3; ++round) {
                    memset(buf, 0, 8 * kPage);
                    read_outcome o = submit_read(ctx, true, fd, buf, 2 * kPage, 4 * kPage, flags);
                    EXPECT_EQ(o.res, long(2 * kPage)) << what;
                    EXPECT_NE(o.path, ASYS_PATH_INLINE) << what << ": an O_DIRECT pread ran on the caller, flags "
                                                        << flags << " round " << round;
                    EXPECT_TRUE(pattern_at(buf, 2 * kPage, 4 * kPage)) << what;
                    ASSERT_EQ(lseek(fd, 8 * kPage, SEEK_SET), long(8 * kPage));
                    o = submit_read(ctx, false, fd, buf, kPage, 0, flags);
                    EXPECT_EQ(o.res, long(kPage)) << what;
                    EXPECT_NE(o.path, ASYS_PATH_INLINE) << what << ": an O_DIRECT read ran on the caller";
                    EXPECT_TRUE(pattern_at(buf, kPage, 8 * kPage)) << what;
                    EXPECT_EQ(lseek(fd, 0, SEEK_CUR), long(9 * kPage)) << what;
                }
            }
            // NOWAIT: the device read would wait: -EAGAIN, nothing read.
            const read_outcome o = submit_read(ctx, true, fd, buf, kPage, 0, ASYS_F_NOWAIT);
            EXPECT_EQ(o.res, -EAGAIN) << what << ": NOWAIT on O_DIRECT";
        };
        check_direct("O_DIRECT");
        // The same number, now a buffered file (the page cache has it).
        const int n = fd;
        close(fd);
        fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
        ASSERT_EQ(fd, n);
        memset(buf, 0, kPage);
        read_outcome o = submit_read(ctx, true, fd, buf, kPage, 3 * kPage, 0);
        EXPECT_EQ(o.res, long(kPage));
        EXPECT_TRUE(pattern_at(buf, kPage, 3 * kPage));
        // And O_DIRECT again under the same number.
        close(fd);
        fd = open(path.c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC);
        ASSERT_EQ(fd, n);
        check_direct("reopened O_DIRECT");
        // F_SETFL: off, then on again.
        const int fl = fcntl(fd, F_GETFL);
        ASSERT_EQ(fcntl(fd, F_SETFL, fl & ~O_DIRECT), 0);
        o = submit_read(ctx, true, fd, buf, kPage, 0, 0);
        EXPECT_EQ(o.res, long(kPage));
        EXPECT_TRUE(pattern_at(buf, kPage, 0));
        ASSERT_EQ(fcntl(fd, F_SETFL, fl | O_DIRECT), 0);
        check_direct("O_DIRECT set again with F_SETFL");
    }
    free(buf);
    close(fd);
}

// --- 2. asys_call with 0 to 6 arguments ------------------------------------

namespace {

/// Calls asys_call with every argument count and checks each against the
/// plain call; errno is never touched. Runs outside and inside threadlets.
struct call_checks {
    int file = -1;       ///< 8 KiB of pattern, O_RDWR
    int pipe_r = -1, pipe_w = -1;
    int udp_rx = -1, udp_tx = -1;
    sockaddr_in rx_addr{};
    std::vector<std::string> failures;

    void expect(bool ok, const std::string &what) {
        if (!ok) failures.push_back(what);
    }
    void run_all() {
        errno = 4242;
        const long pid = asys_call(SYS_getpid);  // 0 arguments
        expect(pid == getpid(), "0 args: getpid " + std::to_string(pid));
        expect(asys_call(SYS_close, -1) == -EBADF, "1 arg: close(-1)");
        expect(asys_call(SYS_kill, static_cast<long>(getpid()), 0L) == 0, "2 args: kill(self, 0)");
        expect(asys_call(SYS_write, pipe_w, "abc", 3L) == 3, "3 args: write to a pipe");
        char b[8] = {};
        expect(asys_call(SYS_read, pipe_r, b, sizeof b) == 3 && memcmp(b, "abc", 3) == 0, "3 args: read a pipe");
        char p4[16] = {};
        expect(asys_call(SYS_pread64, file, p4, 16L, 4096L) == 16 && pattern_at(p4, 16, 4096),
               "4 args: pread64 at 4096");
        struct statx sx{};
        expect(asys_call(SYS_statx, file, "", AT_EMPTY_PATH, STATX_SIZE, &sx) == 0 && sx.stx_size >= 8192,
               "5 args: statx(AT_EMPTY_PATH)");
        // 6 arguments.
        struct stat st0{};
        fstat(file, &st0);
        char byte = 'Z';
        iovec v{&byte, 1};
        expect(asys_call(SYS_pwritev2, file, &v, 1L, 0L, 0L, static_cast<long>(RWF_APPEND)) == 1,
               "6 args: pwritev2 RWF_APPEND");
        struct stat st1{};
        fstat(file, &st1);
        char first = 0;
        (void)!pread(file, &first, 1, 0);
        expect(st1.st_size == st0.st_size + 1 && first == pattern(0), "6 args: RWF_APPEND lost (byte at 0)");
        const char msg[] = "dgram";
        expect(asys_call(SYS_sendto, udp_tx, msg, 5L, 0L, &rx_addr, static_cast<long>(sizeof rx_addr)) == 5,
               "6 args: sendto with an address");
        char in[16] = {};
        struct pollfd pf{udp_rx, POLLIN, 0};
        expect(poll(&pf, 1, 10000) == 1 && recv(udp_rx, in, sizeof in, MSG_DONTWAIT) == 5 && memcmp(in, "dgram", 5) == 0,
               "6 args: the datagram arrived");
        const long m = asys_call(SYS_mmap, 0L, 4096L, static_cast<long>(PROT_READ), static_cast<long>(MAP_SHARED),
                                 file, 4096L);
        if (m < 0 && m > -4096) {
            expect(false, "6 args: mmap at offset 4096 failed " + std::to_string(m));
        } else {
            expect(pattern_at(reinterpret_cast<const char *>(m), 64, 4096), "6 args: mmap offset lost");
            expect(asys_call(SYS_munmap, m, 4096L) == 0, "2 args: munmap");
        }
        expect(asys_call(-5) == -ENOSYS, "a negative number: ENOSYS");
        expect(asys_call(100000, 1L, 2L, 3L, 4L, 5L, 6L) == -ENOSYS, "an unknown number: ENOSYS");
        expect(errno == 4242, "errno changed to " + std::to_string(errno));
    }
};

struct call_env {
    temp_dir d;
    call_checks c;
    call_env() {
        c.file = make_file(d.file("f"), 2 * kPage);
        int p[2];
        if (pipe2(p, O_CLOEXEC) == 0) c.pipe_r = p[0], c.pipe_w = p[1];
        c.udp_rx = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        c.udp_tx = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        c.rx_addr.sin_family = AF_INET;
        c.rx_addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof c.rx_addr;
        if (bind(c.udp_rx, reinterpret_cast<sockaddr *>(&c.rx_addr), sizeof c.rx_addr) != 0 ||
            getsockname(c.udp_rx, reinterpret_cast<sockaddr *>(&c.rx_addr), &len) != 0)
            ADD_FAILURE() << "udp bind";
    }
    ~call_env() {
        for (int fd : {c.file, c.pipe_r, c.pipe_w, c.udp_rx, c.udp_tx})
            if (fd >= 0) close(fd);
    }
};

std::string joined(const std::vector<std::string> &v) {
    std::string s;
    for (const auto &x : v) s += "\n  " + x;
    return s;
}

long run_call_checks(void *arg) {
    static_cast<call_checks *>(arg)->run_all();
    return 0;
}

}  // namespace

TEST(Review18, AsysCallWithZeroToSixArgumentsOutsideAThreadlet) {
    call_env e;
    ASSERT_GE(e.c.file, 0);
    e.c.run_all();
    EXPECT_TRUE(e.c.failures.empty()) << joined(e.c.failures);
}

TEST(Review18, AsysCallWithZeroToSixArgumentsInsideAThreadlet) {
    for (unsigned tflags : {0u, unsigned{ASYS_THREADLET_TRANSPARENT}}) {
        if ((tflags & ASYS_THREADLET_TRANSPARENT) && under_tsan()) continue;
        call_env e;
        ASSERT_GE(e.c.file, 0);
        ctx_guard ctx;
        asys_op op;
        asys_prep_threadlet(&op, run_call_checks, &e.c, tflags);
        long ret = -999;
        op.ret_ptr = &ret;
        const int rc = asys_submit(ctx, &op);
        if (rc == -EOPNOTSUPP && tflags) {
            std::printf("SKIPPED transparent part: no syscall user dispatch in this kernel\n");
            continue;
        }
        ASSERT_TRUE(rc == ASYS_DONE || rc == 0) << rc;
        if (rc == 0) {
            asys_cqe cqe{};
            struct timespec ts{30, 0};
            ASSERT_EQ(asys_wait(ctx, 1, &ts, &cqe, 1), 1);
        }
        EXPECT_EQ(ret, 0);
        EXPECT_TRUE(e.c.failures.empty()) << "tflags " << tflags << joined(e.c.failures);
    }
}

// --- 3. read / pread64 inside a threadlet ----------------------------------

namespace {

struct threadlet_reads {
    std::vector<read_case> cases;
    std::vector<long> res;
    std::vector<std::vector<char>> bytes;
    edge_fixture *f;
};

long threadlet_read_edges(void *arg) {
    auto *t = static_cast<threadlet_reads *>(arg);
    for (const read_case &c : t->cases) {
        t->f->reset();
        t->res.push_back(asys_call(c.positional ? SYS_pread64 : SYS_read, c.fd, c.buf, c.len, c.off));
        t->bytes.push_back(c.check ? std::vector<char>(c.check, c.check + c.check_len) : std::vector<char>{});
    }
    return 0;
}

/// The edge cases as asys_call in a threadlet whose op has `flags`, against
/// the plain call.
void check_threadlet_edges(uint32_t flags) {
    ctx_guard ctx;
    edge_fixture f;
    ASSERT_TRUE(f.ok());
    threadlet_reads t{edge_cases(f), {}, {}, &f};
    asys_op op;
    asys_prep_threadlet(&op, threadlet_read_edges, &t, 0);
    op.flags = flags;
    long ret = -999;
    op.ret_ptr = &ret;
    const int rc = asys_submit(ctx, &op);
    ASSERT_TRUE(rc == ASYS_DONE || rc == 0) << rc;
    if (rc == 0) {
        asys_cqe cqe{};
        struct timespec ts{60, 0};
        ASSERT_EQ(asys_wait(ctx, 1, &ts, &cqe, 1), 1);
    }
    ASSERT_EQ(t.res.size(), t.cases.size());
    for (size_t i = 0; i < t.cases.size(); ++i) {
        const read_case &c = t.cases[i];
        f.reset();
        const long plain = plain_call(c.positional ? SYS_pread64 : SYS_read, c.fd, reinterpret_cast<long>(c.buf),
                                      static_cast<long>(c.len), c.off);
        if ((flags & ASYS_F_NOWAIT) && c.fd == f.part) {
            EXPECT_GE(t.res[i], long(kPartHead)) << c.name << " in a NOWAIT threadlet: the cached head at least";
            EXPECT_LE(t.res[i], plain) << c.name << " in a NOWAIT threadlet";
            continue;
        }
        if ((flags & ASYS_F_NOWAIT) && nowait_cannot_tell(f, c)) {
            EXPECT_EQ(t.res[i], -EAGAIN) << c.name << " in a NOWAIT threadlet";
            continue;
        }
        EXPECT_EQ(t.res[i], plain) << c.name << " in a threadlet with op flags 0x" << std::hex << flags;
        if (c.check)
            EXPECT_TRUE(t.bytes[i] == std::vector<char>(c.check, c.check + c.check_len))
                << c.name << ": other bytes, threadlet op flags 0x" << std::hex << flags;
    }
}

}  // namespace

TEST(Review18, ThreadletReadEdgesMatchTheCall) { check_threadlet_edges(0); }
TEST(Review18, ThreadletBufferedReadEdgesMatchTheCall) { check_threadlet_edges(ASYS_F_BUFFERED); }
TEST(Review18, ThreadletAsyncReadEdgesMatchTheCall) { check_threadlet_edges(ASYS_F_ASYNC); }
TEST(Review18, ThreadletSyncReadEdgesMatchTheCall) { check_threadlet_edges(ASYS_F_SYNC); }
// Nothing here would block: a NOWAIT threadlet gets the call's result too,
// except where NOWAIT cannot tell without the risk of blocking (-EAGAIN).
TEST(Review18, ThreadletNowaitReadEdgesMatchTheCall) { check_threadlet_edges(ASYS_F_NOWAIT); }

namespace {
struct direct_read {
    int fd;
    char *buf;
    long pread_res = 0, read_res = 0;
    long tid_in_call = 0;
};
long read_direct(void *arg) {
    auto *r = static_cast<direct_read *>(arg);
    r->pread_res = asys_call(SYS_pread64, r->fd, r->buf, 2 * kPage, 4 * kPage);
    r->read_res = asys_call(SYS_read, r->fd, r->buf + 2 * kPage, kPage);
    return r->pread_res;
}
}  // namespace

// An O_DIRECT read inside a threadlet parks it: the owner thread never
// does the device read (asys_submit returns 0, not ASYS_DONE).
TEST(Review18, ThreadletODirectReadParks) {
    temp_dir d;
    const int fd = open_direct(d.file("direct"), 16 * kPage);
    if (fd < 0) GTEST_SKIP() << "SKIPPED: O_DIRECT not supported in " << d.path << ": " << strerror(errno);
    char *buf = static_cast<char *>(aligned_alloc(kPage, 4 * kPage));
    ASSERT_TRUE(buf);
    for (unsigned ctx_flags : {0u, unsigned{ASYS_CTX_INLINE_NEVER}}) {
        for (uint32_t flags : {0u, unsigned{ASYS_F_ASYNC}, unsigned{ASYS_F_CQE_ALWAYS}}) {
            asys_params p = params(2, 0, ctx_flags);
            ctx_guard ctx(&p);
            ASSERT_EQ(lseek(fd, 8 * kPage, SEEK_SET), long(8 * kPage));
            direct_read r{fd, buf};
            memset(buf, 0, 4 * kPage);
            asys_op op;
            asys_prep_threadlet(&op, read_direct, &r, 0);
            op.flags = flags;
            long ret = -999;
            op.ret_ptr = &ret;
            const int rc = asys_submit(ctx, &op);
            EXPECT_EQ(rc, 0) << "the threadlet did not park on its O_DIRECT read (flags " << flags << ", ctx "
                             << ctx_flags << ")";
            if (rc == 0 || (flags & ASYS_F_CQE_ALWAYS)) {
                asys_cqe cqe{};
                struct timespec ts{30, 0};
                ASSERT_EQ(asys_wait(ctx, 1, &ts, &cqe, 1), 1);
            }
            EXPECT_EQ(r.pread_res, long(2 * kPage));
            EXPECT_EQ(r.read_res, long(kPage));
            EXPECT_TRUE(pattern_at(buf, 2 * kPage, 4 * kPage));
            EXPECT_TRUE(pattern_at(buf + 2 * kPage, kPage, 8 * kPage));
            EXPECT_EQ(lseek(fd, 0, SEEK_CUR), long(9 * kPage));
        }
    }
    free(buf);
    close(fd);
}

namespace {
long libc_pread_direct(void *arg) {
    auto *r = static_cast<direct_read *>(arg);
    const ssize_t n = pread(r->fd, r->buf, 2 * kPage, 4 * kPage);
    r->pread_res = n < 0 ? -errno : n;
    return r->pread_res;
}
}  // namespace

// The same in transparent mode: libc's pread of an O_DIRECT file (trapped,
// then the short way to the probe) parks the threadlet.
TEST(Review18, TransparentThreadletODirectPreadParks) {
    if (under_tsan()) GTEST_SKIP() << "transparent mode traps TSan's own runtime calls (unsupported there)";
    temp_dir d;
    const int fd = open_direct(d.file("direct"), 16 * kPage);
    if (fd < 0) GTEST_SKIP() << "SKIPPED: O_DIRECT not supported in " << d.path << ": " << strerror(errno);
    char *buf = static_cast<char *>(aligned_alloc(kPage, 4 * kPage));
    ASSERT_TRUE(buf);
    ctx_guard ctx;
    direct_read r{fd, buf};
    asys_op op;
    asys_prep_threadlet(&op, libc_pread_direct, &r, ASYS_THREADLET_TRANSPARENT);
    long ret = -999;
    op.ret_ptr = &ret;
    const int rc = asys_submit(ctx, &op);
    if (rc == -EOPNOTSUPP) {
        free(buf);
        close(fd);
        GTEST_SKIP() << "no syscall user dispatch in this kernel";
    }
    EXPECT_EQ(rc, 0) << "the transparent threadlet did not park on its O_DIRECT pread";
    if (rc == 0) {
        asys_cqe cqe{};
        struct timespec ts{30, 0};
        ASSERT_EQ(asys_wait(ctx, 1, &ts, &cqe, 1), 1);
    }
    EXPECT_EQ(r.pread_res, long(2 * kPage));
    EXPECT_TRUE(pattern_at(buf, 2 * kPage, 4 * kPage));
    free(buf);
    close(fd);
}

namespace {
struct pipe_read {
    int fd;
    char buf[64] = {};
    long res = -999;
    int saved_errno = 0;
};
long read_pipe64(void *arg) {
    auto *r = static_cast<pipe_read *>(arg);
    errno = 31337;
    r->res = asys_call(SYS_read, r->fd, r->buf, 64L);
    r->saved_errno = errno;
    return r->res;
}
}  // namespace

// A pipe with fewer bytes than asked: the threadlet gets them at once
// (read(2) returns what is there), without parking.
TEST(Review18, ThreadletReadOfAPipeWithFewerBytesDoesNotPark) {
    ctx_guard ctx;
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    ASSERT_EQ(write(p[1], "xyz", 3), 3);
    for (uint32_t flags : {0u, unsigned{ASYS_F_NOWAIT}, unsigned{ASYS_F_BUFFERED}}) {
        pipe_read r{p[0]};
        asys_op op;
        asys_prep_threadlet(&op, read_pipe64, &r, 0);
        op.flags = flags;
        long ret = -1;
        op.ret_ptr = &ret;
        EXPECT_EQ(asys_submit(ctx, &op), ASYS_DONE) << "flags " << flags;
        EXPECT_EQ(r.res, 3);
        EXPECT_EQ(memcmp(r.buf, "xyz", 3), 0);
        EXPECT_EQ(r.saved_errno, 31337);
        ASSERT_EQ(write(p[1], "xyz", 3), 3);
    }
    close(p[0]);
    close(p[1]);
}

// A threadlet parked on an empty pipe, cancelled: its call returns
// -ECANCELED and no byte written later is taken by the cancelled read.
TEST(Review18, CancelOfAThreadletParkedOnAPipeReadLeavesTheBytes) {
    for (int round = 0; round < 20; ++round) {
        ctx_guard ctx;
        int p[2];
        ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
        pipe_read r{p[0]};
        asys_op op;
        asys_prep_threadlet(&op, read_pipe64, &r, 0);
        op.user_data = 77;
        long ret = -1;
        op.ret_ptr = &ret;
        ASSERT_EQ(asys_submit(ctx, &op), 0);
        const int crc = asys_cancel(ctx, 77);
        EXPECT_TRUE(crc == 0 || crc == -EALREADY) << "cancel of a parked threadlet: " << crc;
        asys_cqe cqe{};
        struct timespec ts{30, 0};
        ASSERT_EQ(asys_wait(ctx, 1, &ts, &cqe, 1), 1);
        EXPECT_EQ(r.res, -ECANCELED) << "round " << round;
        EXPECT_EQ(ret, -ECANCELED);
        EXPECT_EQ(r.saved_errno, 31337);
        ASSERT_EQ(write(p[1], "ab", 2), 2);
        char b[4] = {};
        ASSERT_EQ(fcntl(p[0], F_SETFL, O_NONBLOCK), 0);
        EXPECT_EQ(read(p[0], b, sizeof b), 2) << "a cancelled read took the bytes, round " << round;
        close(p[0]);
        close(p[1]);
    }
}

namespace {
struct part_read {
    int fd;
    char *buf;
    size_t len;
    long res = 0;
};
long pread_part(void *arg) {
    auto *r = static_cast<part_read *>(arg);
    r->res = asys_call(SYS_pread64, r->fd, r->buf, r->len, 0L);
    return r->res;
}
}  // namespace

// A range cached only at its start: the threadlet sees the whole count, and
// the bytes are the file's, with any threadlet flag that allows parking.
TEST(Review18, ThreadletPartlyCachedPreadReturnsTheWholeRange) {
    temp_dir d;
    constexpr size_t kLen = 64 * kPage;
    const int fd = make_file(d.file("part"), kLen);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(fdatasync(fd), 0);
    std::vector<char> buf(kLen);
    for (uint32_t flags : {0u, unsigned{ASYS_F_BUFFERED}, unsigned{ASYS_F_ATOMIC}}) {
        ctx_guard ctx;
        cache_only_the_head(fd, 8 * kPage);
        std::fill(buf.begin(), buf.end(), 0);
        part_read r{fd, buf.data(), kLen};
        asys_op op;
        asys_prep_threadlet(&op, pread_part, &r, 0);
        op.flags = flags;
        long ret = -1;
        op.ret_ptr = &ret;
        const int rc = asys_submit(ctx, &op);
        ASSERT_TRUE(rc == 0 || rc == ASYS_DONE) << rc;
        if (rc == 0) {
            asys_cqe cqe{};
            struct timespec ts{30, 0};
            ASSERT_EQ(asys_wait(ctx, 1, &ts, &cqe, 1), 1);
        }
        // No idle worker for the rest: ATOMIC's answer is -EAGAIN, or the
        // short count of the head already read (bytes read are never dropped).
        if ((flags & ASYS_F_ATOMIC) && (r.res == -EAGAIN || r.res == long(8 * kPage))) continue;
        EXPECT_EQ(r.res, long(kLen)) << "flags " << flags;
        EXPECT_TRUE(pattern_at(buf.data(), kLen, 0)) << "flags " << flags;
    }
    close(fd);
}

// --- 4. the ring's eventfd mute count, the completion ring's size ----------

// Several threads submit ASYNC ops while one thread takes completions only
// through the context's fd (poll, then asys_peek): every one arrives.
TEST(Review18, EveryCompletionArrivesThroughTheContextFd) {
    temp_dir d;
    const int fd = make_file(d.file("f"), kPage);
    ASSERT_GE(fd, 0);
    asys_params p = params(2, 512);
    ctx_guard ctx(&p);
    const int cfd = asys_ctx_fd(ctx);
    ASSERT_GE(cfd, 0);
    constexpr unsigned kThreads = 3, kPerThread = 3000, kTotal = kThreads * kPerThread;
    std::vector<long> res(kTotal, -999);
    std::vector<char> bufs(kThreads * 64);
    std::vector<std::atomic<uint8_t>> seen(kTotal);
    std::atomic<bool> submit_failed{false};
    std::vector<std::thread> submitters;
    for (unsigned t = 0; t < kThreads; ++t) {
        submitters.emplace_back([&, t] {
            for (unsigned i = 0; i < kPerThread; ++i) {
                const unsigned id = t * kPerThread + i;
                asys_op op;
                asys_prep_pread(&op, fd, &bufs[t * 64], 64, 0);
                op.flags = ASYS_F_ASYNC;
                op.user_data = id + 1;
                op.ret_ptr = &res[id];
                int rc;
                while ((rc = asys_submit(ctx, &op)) == -EAGAIN) sched_yield();  // full: the consumer frees room
                if (rc != 0) {
                    submit_failed = true;
                    return;
                }
            }
        });
    }
    unsigned got = 0;
    bool stranded = false, dup = false;
    asys_cqe out[64];
    while (got < kTotal && !submit_failed) {
        struct pollfd pf{cfd, POLLIN, 0};
        const int pr = poll(&pf, 1, 20000);
        if (pr == 0) {
            stranded = true;
            break;
        }
        const int n = asys_peek(ctx, out, 64);
        if (n < 0) {
            ADD_FAILURE() << "asys_peek: " << n;
            break;
        }
        for (int i = 0; i < n; ++i) {
            const uint64_t id = out[i].user_data - 1;
            if (id >= kTotal || seen[id].exchange(1)) dup = true;
            EXPECT_EQ(out[i].res, 64);
        }
        got += static_cast<unsigned>(n);
    }
    for (auto &t : submitters) t.join();
    EXPECT_FALSE(submit_failed);
    EXPECT_FALSE(stranded) << "the context fd stayed quiet 20 s with " << kTotal - got << " of " << kTotal
                           << " completions missing (in flight: " << stats(ctx).inflight << ")";
    EXPECT_FALSE(dup);
    EXPECT_EQ(got, kTotal);
    close(fd);
}

// asys_wait without a timeout for more than can ever arrive: -EDEADLK.
TEST(Review18, UntimedWaitForMoreThanInFlightIsEDEADLK) {
    ctx_guard ctx;
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    char b[2];
    long res[2];
    for (int i = 0; i < 2; ++i) {
        asys_op op;
        asys_prep_read(&op, p[0], &b[i], 1);
        op.flags = ASYS_F_ASYNC;
        op.ret_ptr = &res[i];
        ASSERT_EQ(asys_submit(ctx, &op), 0);
    }
    asys_cqe out[3];
    EXPECT_EQ(asys_wait(ctx, 3, nullptr, out, 3), -EDEADLK);
    ASSERT_EQ(write(p[1], "ab", 2), 2);
    EXPECT_EQ(asys_wait(ctx, 2, nullptr, out, 3), 2);
    EXPECT_EQ(asys_wait(ctx, 1, nullptr, out, 3), -EDEADLK);
    close(p[0]);
    close(p[1]);
}

// ... and never -EDEADLK while the completions it waits for exist (posted
// or about to be), from one thread and from two waiting together.
TEST(Review18, UntimedWaitNeverEDEADLKWhileTheCompletionsExist) {
    temp_dir d;
    const int fd = make_file(d.file("f"), kPage);
    ASSERT_GE(fd, 0);
    ctx_guard ctx;
    char buf[4][64];
    long res[4];
    unsigned deadlk = 0;
    for (int round = 0; round < 3000; ++round) {
        for (int i = 0; i < 4; ++i) {
            asys_op op;
            asys_prep_pread(&op, fd, buf[i], 64, 0);
            op.flags = ASYS_F_ASYNC;
            op.ret_ptr = &res[i];
            ASSERT_EQ(asys_submit(ctx, &op), 0);
        }
        asys_cqe out[4];
        unsigned have = 0;
        while (have < 4) {
            const int n = asys_wait(ctx, 4 - have, nullptr, out, 4 - have);
            if (n == -EDEADLK) {
                ++deadlk;
                struct timespec ts{30, 0};
                const int m = asys_wait(ctx, 4 - have, &ts, out, 4 - have);
                ASSERT_GT(m, 0) << "the completions never came";
                have += static_cast<unsigned>(m);
                continue;
            }
            ASSERT_GT(n, 0);
            have += static_cast<unsigned>(n);
        }
    }
    EXPECT_EQ(deadlk, 0u) << "asys_wait said -EDEADLK with its completions on the way";
    close(fd);
}

// --- 5. chains: memory devices read through linked ring atoms --------------

namespace {

/// Runs a chain op to its end (bounded); returns its result.
long run_chain(asys_ctx *ctx, syslet_uatom *head) {
    syslet_uatom *last = nullptr;
    long res = -999;
    asys_op op;
    asys_prep_chain(&op, head, &last);
    op.ret_ptr = &res;
    const int rc = asys_submit(ctx, &op);
    if (rc == 0) {
        asys_cqe cqe{};
        struct timespec ts{60, 0};
        if (asys_wait(ctx, 1, &ts, &cqe, 1) != 1) return -999997;
    } else if (rc != ASYS_DONE) {
        return rc;
    }
    return res;
}

/// Bytes in a pipe now (read away).
std::string pipe_bytes(int fd) {
    std::string s;
    int n = 0;
    if (ioctl(fd, FIONREAD, &n) == 0 && n > 0) {
        s.resize(static_cast<size_t>(n));
        if (read(fd, s.data(), s.size()) != n) s.clear();
    }
    return s;
}

}  // namespace

// A chain write(pipe, "s") | <read of a memory device, 16 MiB> | write(pipe,
// "e"), every atom SYSLET_ASYNC: whatever the ring does with the long read,
// each atom runs once (the pipe gets "se") and the read is whole.
TEST(Review18, MemoryDeviceReadInTheMiddleOfAChainRunsEachAtomOnce) {
    ctx_guard ctx;
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    constexpr unsigned long kLen = 16ul << 20;
    std::vector<char> buf(kLen);
    struct device {
        const char *path;
        bool zeros;
    };
    cpu_contention busy;
    for (const device &dev : {device{"/dev/zero", true}, device{"/dev/full", true}, device{"/dev/urandom", false}}) {
        const int dfd = open(dev.path, O_RDONLY | O_CLOEXEC);
        ASSERT_GE(dfd, 0) << dev.path;
        for (long nr : {long{SYS_pread64}, long{SYS_read}}) {
            for (int round = 0; round < 4; ++round) {
                std::fill(buf.begin(), buf.end(), 1);
                unsigned long pw = static_cast<unsigned long>(p[1]), sp = reinterpret_cast<unsigned long>("s"),
                              ep = reinterpret_cast<unsigned long>("e"), one = 1,
                              dv = static_cast<unsigned long>(dfd), bp = reinterpret_cast<unsigned long>(buf.data()),
                              len = kLen, off = 0;
                long r[3] = {7, 7, 7};
                syslet_uatom a[3];
                a[0] = atom(SYS_write, SYSLET_ASYNC, &r[0]);
                a[0].arg_ptr[0] = &pw;
                a[0].arg_ptr[1] = &sp;
                a[0].arg_ptr[2] = &one;
                a[0].next = &a[1];
                a[1] = atom(static_cast<unsigned long>(nr), SYSLET_ASYNC, &r[1]);
                a[1].arg_ptr[0] = &dv;
                a[1].arg_ptr[1] = &bp;
                a[1].arg_ptr[2] = &len;
                if (nr == SYS_pread64) a[1].arg_ptr[3] = &off;
                a[1].next = &a[2];
                a[2] = atom(SYS_write, SYSLET_ASYNC, &r[2]);
                a[2].arg_ptr[0] = &pw;
                a[2].arg_ptr[1] = &ep;
                a[2].arg_ptr[2] = &one;
                const long res = run_chain(ctx, a);
                const std::string what = std::string(dev.path) + (nr == SYS_read ? " read" : " pread") + " round " +
                                         std::to_string(round);
                EXPECT_EQ(res, 1) << what;
                EXPECT_EQ(r[0], 1) << what;
                EXPECT_EQ(r[1], long(kLen)) << what;
                EXPECT_EQ(r[2], 1) << what;
                EXPECT_EQ(pipe_bytes(p[0]), "se") << what << ": an atom ran twice or not at all";
                if (dev.zeros) {
                    size_t nonzero = 0;
                    for (char c : buf) nonzero += c != 0;
                    EXPECT_EQ(nonzero, 0u) << what;
                }
            }
        }
        close(dfd);
    }
    close(p[0]);
    close(p[1]);
}

namespace {

/// pread(file, PROT_NONE buffer) -> -EFAULT, then write(pipe, "w"), both
/// SYSLET_ASYNC (linked ring atoms); the pread with SYSLET_STOP_ON_NEGATIVE
/// or without. The ring's EFAULT is rechecked by running the atom again in
/// the interpreter: without the stop flag the chain goes on and the write
/// runs exactly once; with it the chain ends at -EFAULT and the write never
/// runs.
void fault_then_write(bool stop) {
    ctx_guard ctx;
    temp_dir d;
    const int fd = make_file(d.file("f"), kPage);
    ASSERT_GE(fd, 0);
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    void *none = mmap(nullptr, kPage, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ASSERT_NE(none, MAP_FAILED);
    for (int round = 0; round < 5; ++round) {
        unsigned long fv = static_cast<unsigned long>(fd), bp = reinterpret_cast<unsigned long>(none), len = kPage,
                      off = 0, pw = static_cast<unsigned long>(p[1]), wp = reinterpret_cast<unsigned long>("w"), one = 1;
        long r[2] = {7, 7};
        syslet_uatom a[2];
        a[0] = atom(SYS_pread64, SYSLET_ASYNC | (stop ? SYSLET_STOP_ON_NEGATIVE : 0), &r[0]);
        a[0].arg_ptr[0] = &fv;
        a[0].arg_ptr[1] = &bp;
        a[0].arg_ptr[2] = &len;
        a[0].arg_ptr[3] = &off;
        a[0].next = &a[1];
        a[1] = atom(SYS_write, SYSLET_ASYNC, &r[1]);
        a[1].arg_ptr[0] = &pw;
        a[1].arg_ptr[1] = &wp;
        a[1].arg_ptr[2] = &one;
        EXPECT_EQ(run_chain(ctx, a), stop ? -EFAULT : 1);
        EXPECT_EQ(r[0], -EFAULT);
        EXPECT_EQ(r[1], stop ? 7 : 1) << "round " << round;
        EXPECT_EQ(pipe_bytes(p[0]), stop ? "" : "w")
            << "round " << round << ": the atom after the failed one ran twice, or despite the stop";
    }
    munmap(none, kPage);
    close(p[0]);
    close(p[1]);
    close(fd);
}

}  // namespace

TEST(Review18, AtomAfterARingErrorRecheckedRunsOnce) { fault_then_write(false); }
TEST(Review18, StopOnNegativeAtomRecheckedEndsTheChain) { fault_then_write(true); }

// /dev/null in a chain: the read returns 0 (EOF) and the chain goes on.
TEST(Review18, DevNullAtomInAChainReturnsZeroAndTheChainGoesOn) {
    ctx_guard ctx;
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    const int nfd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    ASSERT_GE(nfd, 0);
    char b[64];
    unsigned long nv = static_cast<unsigned long>(nfd), bp = reinterpret_cast<unsigned long>(b), len = sizeof b,
                  off = 0, pw = static_cast<unsigned long>(p[1]), wp = reinterpret_cast<unsigned long>("n"), one = 1;
    long r[2] = {7, 7};
    syslet_uatom a[2];
    a[0] = atom(SYS_pread64, SYSLET_ASYNC, &r[0]);
    a[0].arg_ptr[0] = &nv;
    a[0].arg_ptr[1] = &bp;
    a[0].arg_ptr[2] = &len;
    a[0].arg_ptr[3] = &off;
    a[0].next = &a[1];
    a[1] = atom(SYS_write, SYSLET_ASYNC, &r[1]);
    a[1].arg_ptr[0] = &pw;
    a[1].arg_ptr[1] = &wp;
    a[1].arg_ptr[2] = &one;
    EXPECT_EQ(run_chain(ctx, a), 1);
    EXPECT_EQ(r[0], 0);
    EXPECT_EQ(r[1], 1);
    EXPECT_EQ(pipe_bytes(p[0]), "n");
    close(nfd);
    close(p[0]);
    close(p[1]);
}

