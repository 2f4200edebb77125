// Shared test helpers: RAII context, temp files, reaping.
#pragma once
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "asys/asys.h"

namespace asys_test {

/// A context that is destroyed (draining) at scope exit.
struct ctx_guard {
    asys_ctx *ctx = nullptr;
    explicit ctx_guard(const asys_params *p = nullptr) {
        int rc = asys_ctx_create(p, &ctx);
        if (rc < 0) ADD_FAILURE() << "asys_ctx_create: " << rc;
    }
    ~ctx_guard() {
        if (ctx) EXPECT_EQ(asys_ctx_destroy(ctx, ASYS_DESTROY_DRAIN), 0);
    }
    ctx_guard(const ctx_guard &) = delete;
    ctx_guard &operator=(const ctx_guard &) = delete;
    operator asys_ctx *() const { return ctx; }
    asys_ctx *release() {
        asys_ctx *c = ctx;
        ctx = nullptr;
        return c;
    }
};

inline asys_params params(unsigned workers, unsigned max_inflight = 0, unsigned flags = 0,
                          unsigned backend = ASYS_BACKEND_AUTO) {
    asys_params p{};
    p.workers = workers;
    p.max_inflight = max_inflight;
    p.flags = flags;
    p.backend = backend;
    return p;
}

/// Parameters for tests about the worker pool itself (thread identity,
/// interrupting a blocked worker): the ring never takes their ops.
inline asys_params pool_params(unsigned workers, unsigned max_inflight = 0, unsigned flags = 0) {
    return params(workers, max_inflight, flags, ASYS_BACKEND_POOL);
}

/// Threads of this process right now (from /proc/self/task).
inline unsigned thread_count() {
    unsigned n = 0;
    if (DIR *d = opendir("/proc/self/task")) {
        while (dirent *e = readdir(d)) n += e->d_name[0] != '.';
        closedir(d);
    }
    return n;
}

/// True in a ThreadSanitizer build.
inline bool under_tsan() {
#if defined(__SANITIZE_THREAD__)
    return true;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
    return true;
#endif
#endif
    return false;
}

/// The context's counters (fails the test if they cannot be read).
/// Re-checks `pred` until it holds (true) or `seconds` passed (false): a
/// condition wait with a bound, for states that notify nobody (a counter
/// updated just after a completion is delivered).
template <class Pred>
bool eventually(Pred pred, int seconds = 10) {
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (!pred()) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec - t0.tv_sec > seconds) return false;
        poll(nullptr, 0, 1);
    }
    return true;
}

inline asys_stats stats(asys_ctx *ctx) {
    asys_stats st{};
    EXPECT_EQ(asys_ctx_stats(ctx, &st), 0);
    return st;
}

/// The path a punted op with this opcode takes in `ctx`: the ring when the
/// context has one that supports the opcode, else the pool. (For an op on
/// a descriptor, the async_path(ctx, op) form also applies the ring's
/// descriptor rules.)
inline uint32_t async_path(asys_ctx *ctx, uint32_t opcode) {
    asys_info info{};
    if (asys_ctx_info(ctx, &info) != 0) return 0;
    const bool ring = info.backend == ASYS_BACKEND_URING && ((info.uring_opcodes >> opcode) & 1);
    return ring ? ASYS_PATH_URING : ASYS_PATH_POOL;
}

/// The path a punted op takes, with the ring's descriptor rules (see
/// docs/router.md): transfers at the file position go to the ring only for
/// pipes and sockets; positional transfers and syncs only for regular files
/// and block devices.
inline uint32_t async_path(asys_ctx *ctx, const asys_op &op) {
    const uint32_t p = async_path(ctx, op.opcode);
    if (p != ASYS_PATH_URING) return p;
    struct stat st;
    const bool ok = fstat(static_cast<int>(op.args[0]), &st) == 0;
    const bool stream = ok && (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode));
    const bool seekable = ok && (S_ISREG(st.st_mode) || S_ISBLK(st.st_mode));
    switch (op.opcode) {
        case ASYS_OP_READ: case ASYS_OP_READV: case ASYS_OP_WRITE: case ASYS_OP_WRITEV:
            return stream ? p : ASYS_PATH_POOL;
        case ASYS_OP_PREADV: case ASYS_OP_PWRITEV:
            if (static_cast<int64_t>(op.args[3]) == -1) return stream ? p : ASYS_PATH_POOL;
            return seekable ? p : ASYS_PATH_POOL;
        case ASYS_OP_PREAD: case ASYS_OP_PWRITE: case ASYS_OP_FSYNC: case ASYS_OP_FDATASYNC:
            return seekable ? p : ASYS_PATH_POOL;
        case ASYS_OP_POLL:  // pollable kinds only: streams, anonymous inodes (or a closed fd)
            return !ok || stream || (st.st_mode & S_IFMT) == 0 ? p : ASYS_PATH_POOL;
        case ASYS_OP_OPENAT:  // only flags with which the ring's open agrees with open(2)
            return (op.args[2] & (O_NONBLOCK | O_PATH | O_DIRECTORY | O_CREAT | O_TRUNC | __O_TMPFILE))
                       ? p : ASYS_PATH_POOL;
        default:
            return p;
    }
}

/// A directory removed (recursively) at scope exit.
struct temp_dir {
    std::string path;
    temp_dir() {
        const char *base = getenv("TMPDIR");
        std::string tmpl = std::string(base && *base ? base : "/tmp") + "/asys-test-XXXXXX";
        std::vector<char> buf(tmpl.begin(), tmpl.end());
        buf.push_back('\0');
        if (!mkdtemp(buf.data())) ADD_FAILURE() << "mkdtemp";
        path = buf.data();
    }
    ~temp_dir() {
        std::string cmd = "rm -rf '" + path + "'";
        if (system(cmd.c_str()) != 0) ADD_FAILURE() << "cleanup " << path;
    }
    std::string file(const std::string &name) const { return path + "/" + name; }
};

/// Byte i of the test pattern.
inline char pattern(size_t i) { return static_cast<char>('a' + (i * 7 + i / 4096) % 26); }

/// Creates `path` with `size` bytes of the pattern; returns an O_RDWR fd.
inline int make_file(const std::string &path, size_t size, int extra_flags = 0) {
    int fd = open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return fd;
    std::string data(size, '\0');
    for (size_t i = 0; i < size; ++i) data[i] = pattern(i);
    if (write(fd, data.data(), size) != static_cast<ssize_t>(size)) return -1;
    if (extra_flags) {
        close(fd);
        fd = open(path.c_str(), O_RDWR | O_CLOEXEC | extra_flags);
    }
    return fd;
}

/// Waits for exactly `n` completions (fails the test on error or timeout).
inline std::vector<asys_cqe> reap(asys_ctx *ctx, unsigned n, int timeout_s = 30) {
    std::vector<asys_cqe> out(n);
    unsigned got = 0;
    while (got < n) {
        struct timespec ts{timeout_s, 0};
        int r = asys_wait(ctx, 1, &ts, out.data() + got, n - got);
        if (r < 0) {
            ADD_FAILURE() << "asys_wait: " << r << " after " << got << " of " << n;
            out.resize(got);
            return out;
        }
        got += static_cast<unsigned>(r);
    }
    return out;
}

/// A file on disk of `size` pattern bytes, of which only a head can be made
/// to stay in the page cache.
struct partly_cached_file {
    static constexpr size_t kCachePage = 4096;
    temp_dir dir;
    size_t size;
    int fd;
    partly_cached_file(size_t bytes, int extra_flags = 0) : size(bytes), fd(make_file(dir.file("part"), bytes, extra_flags)) {
        if (fd < 0) ADD_FAILURE() << "make_file";
    }
    ~partly_cached_file() {
        if (fd >= 0) close(fd);
    }
    /// Drops the file from the page cache and reads its first `head` bytes
    /// back in. Returns false if the kernel kept every page cached anyway.
    bool cache_only_head(size_t head) const {
        if (fdatasync(fd) != 0) ADD_FAILURE() << "fdatasync";  // clean pages: DONTNEED drops them
        posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM);
        std::vector<char> b(head);
        if (pread(fd, b.data(), head, 0) != static_cast<ssize_t>(head)) ADD_FAILURE() << "pread head";
        const size_t pages = (size + kCachePage - 1) / kCachePage;
        void *m = mmap(nullptr, pages * kCachePage, PROT_READ, MAP_SHARED, fd, 0);
        if (m == MAP_FAILED) return false;
        std::vector<unsigned char> vec(pages);
        bool all = true;
        if (mincore(m, pages * kCachePage, vec.data()) == 0)
            all = std::all_of(vec.begin(), vec.end(), [](unsigned char c) { return (c & 1) != 0; });
        munmap(m, pages * kCachePage);
        return !all;
    }
};

#define REQUIRE_PARTLY_CACHED(file, head)                                                            \
    do {                                                                                              \
        if (!(file).cache_only_head(head))                                                           \
            GTEST_SKIP() << "SKIPPED: the page cache kept the whole file (DONTNEED dropped nothing), " \
                            "so no inline read comes back partial here";                              \
    } while (0)

/// Submits one op and, if it did not finish inline, waits for its cqe.
/// Returns the result through ret_ptr; *path gets the path that served it.
inline long run(asys_ctx *ctx, asys_op op, uint32_t *path = nullptr) {
    long res = -999999;
    op.ret_ptr = &res;
    int rc = asys_submit(ctx, &op);
    if (rc < 0) return rc;
    if (rc == ASYS_DONE) {
        if (path) *path = ASYS_PATH_INLINE;
        return res;
    }
    auto c = reap(ctx, 1);
    if (c.size() != 1) return -999998;
    EXPECT_EQ(c[0].res, res) << "cqe and ret_ptr disagree";
    if (path) *path = c[0].path;
    return res;
}

}  // namespace asys_test

#include <sched.h>
#include <sys/syscall.h>

#include <fstream>

namespace asys_test {

/// The system call thread `tid` is blocked in (from /proc), or -1 if running.
inline long blocked_syscall(pid_t tid, long *arg0 = nullptr) {
    std::ifstream f("/proc/self/task/" + std::to_string(tid) + "/syscall");
    std::string first, second;
    if (!(f >> first) || first == "running") return -1;
    try {
        if (arg0) *arg0 = (f >> second) ? std::stol(second, nullptr, 16) : -1;
        return std::stol(first);
    } catch (...) {
        return -1;
    }
}

/// Waits (yielding, bounded) until `tid` sits in syscall `nr` (with `fd` as
/// its first argument, unless -1). A condition wait on kernel state, not a
/// sleep.
inline bool wait_blocked_in(pid_t tid, long nr, long fd = -1) {
    for (long i = 0; i < 20000000; ++i) {
        long a0 = -1;
        if (blocked_syscall(tid, &a0) == nr && (fd < 0 || a0 == fd)) return true;
        sched_yield();
    }
    return false;
}

/// Waits (as wait_blocked_in) until some thread of this process sits in
/// syscall `nr` with `fd` as its first argument; returns its tid, or 0.
inline pid_t wait_any_thread_blocked_in(long nr, long fd) {
    for (long i = 0; i < 2000000; ++i) {
        if (DIR *d = opendir("/proc/self/task")) {
            pid_t found = 0;
            while (dirent *e = readdir(d)) {
                if (e->d_name[0] == '.') continue;
                const pid_t tid = static_cast<pid_t>(std::atoi(e->d_name));
                long a0 = -1;
                if (blocked_syscall(tid, &a0) == nr && a0 == fd) found = tid;
            }
            closedir(d);
            if (found) return found;
        }
        sched_yield();
    }
    return 0;
}

/// Waits (as wait_blocked_in) until thread `tid` sleeps inside asys_wait:
/// on the completion ring's condition variable (futex), or, as the
/// context's designated ring waiter, in ppoll on the ring and its kick fd.
inline bool wait_asleep_in_asys_wait(pid_t tid) {
    for (long i = 0; i < 20000000; ++i) {
        const long nr = blocked_syscall(tid);
        if (nr == SYS_futex || nr == SYS_ppoll) return true;
        sched_yield();
    }
    return false;
}

/// The TID of a pool worker: the thread an ASYNC generic read of an empty
/// pipe (which no ring takes) blocks in. (gettid itself runs on the
/// submitting thread on every path.) With one worker, *the* worker.
inline pid_t worker_tid(asys_ctx *ctx) {
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) return 0;
    char b = 0;
    uint64_t args[6] = {static_cast<uint64_t>(p[0]), reinterpret_cast<uint64_t>(&b), 1};
    asys_op op;
    asys_prep_syscall(&op, SYS_read, args);
    op.flags = ASYS_F_ASYNC;
    long res = 0;
    op.ret_ptr = &res;
    pid_t tid = 0;
    if (asys_submit(ctx, &op) == 0) {
        tid = wait_any_thread_blocked_in(SYS_read, p[0]);
        if (write(p[1], "w", 1) != 1 || reap(ctx, 1).size() != 1) tid = 0;
    }
    close(p[0]);
    close(p[1]);
    return tid;
}

/// A pipe whose reads block until the test writes.
/// Pins the caller and a spinner to one CPU (the ring's nonblocking first
/// attempt of a long memory-device read then yields after a page), until
/// destroyed; then restores the caller's affinity.
struct cpu_contention {
    cpu_set_t old_set{};
    std::atomic<bool> stop{false};
    std::thread spinner;
    cpu_contention() {
        pthread_getaffinity_np(pthread_self(), sizeof old_set, &old_set);
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(sched_getcpu(), &one);
        pthread_setaffinity_np(pthread_self(), sizeof one, &one);
        spinner = std::thread([this, one] {
            pthread_setaffinity_np(pthread_self(), sizeof one, &one);
            while (!stop.load(std::memory_order_relaxed)) {
            }
        });
    }
    ~cpu_contention() {
        stop = true;
        spinner.join();
        pthread_setaffinity_np(pthread_self(), sizeof old_set, &old_set);
    }
};

struct pipe_pair {
    int r = -1, w = -1;
    pipe_pair() {
        int fds[2];
        if (pipe2(fds, O_CLOEXEC) != 0) ADD_FAILURE() << "pipe2";
        r = fds[0];
        w = fds[1];
    }
    ~pipe_pair() {
        if (r >= 0) close(r);
        if (w >= 0) close(w);
    }
};

/// A pseudo-terminal: `slave` is a tty, the one kind of descriptor that can
/// be read neither with RWF_NOWAIT nor by polling in the socket server, so its
/// reads run (and wait for input) in the context; `master` gives them input.
/// ok() false (both -1, `error` set): no pseudo-terminal here; skip loudly.
struct pty_pair {
    int master = -1, slave = -1, error = 0;
    pty_pair() {
        master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
        if (master < 0 || grantpt(master) != 0 || unlockpt(master) != 0 ||
            (slave = open(ptsname(master), O_RDWR | O_NOCTTY | O_CLOEXEC)) < 0) {
            error = errno;
            if (master >= 0) close(master);
            master = -1;
        }
    }
    bool ok() const { return slave >= 0; }
    ~pty_pair() {
        if (slave >= 0) close(slave);
        if (master >= 0) close(master);
    }
    pty_pair(const pty_pair &) = delete;
    pty_pair &operator=(const pty_pair &) = delete;
};

/// A read parked on an empty pipe: keeps an op in flight — with ASYS_F_ASYNC
/// on a one-worker pool, keeps *the* worker busy — until the test lets it go.
///
///     parked_read busy;                          // after the ctx_guard
///     ASSERT_EQ(busy.submit(ctx, 1), 0);         // ASYNC 1-byte read, user_data 1
///     ASSERT_TRUE(busy.wait_blocked(tid));       // the worker sits in read(2)
///     ...                                        // the worker is busy
///     ASSERT_EQ(busy.release(), 1);              // one byte: the read returns 1
///
/// One read at a time: submit again only after it completed. At scope exit
/// the pipe is closed, so a read still pending sees EOF and completes with 0
/// (declare it after the context, which then drains it). A read released
/// by the test may still be finishing on a worker (writing `res`) after the
/// test saw what it waited for: wait for nothing in flight before the scope
/// ends.
struct parked_read {
    pipe_pair pipe;
    char byte = 0;  // the read's buffer
    long res = 0;   // the read's result (its ret_ptr)

    /// Submits the read; returns asys_submit's result. flags 0 lets the
    /// inline probe find the pipe empty and punt it.
    int submit(asys_ctx *ctx, uint64_t user_data = 0, uint32_t flags = ASYS_F_ASYNC) {
        asys_op op;
        asys_prep_read(&op, pipe.r, &byte, 1);
        op.flags = flags;
        op.ret_ptr = &res;
        op.user_data = user_data;
        return asys_submit(ctx, &op);
    }
    /// Waits (bounded, on kernel state) until thread `tid` is blocked in read(2).
    bool wait_blocked(pid_t tid) const { return wait_blocked_in(tid, SYS_read); }
    /// Writes one byte into the pipe; returns write(2)'s result (1 when done).
    ssize_t release() const { return write(pipe.w, "r", 1); }
};

}  // namespace asys_test

#include <cstring>

namespace asys_test {

// clang 14's ASan/TSan allocators are not fork-safe in multithreaded
// processes (their locks are inherited while held): fork tests skip there.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define ASYS_SANITIZER_BUILD 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define ASYS_SANITIZER_BUILD 1
#endif
#endif
#ifdef ASYS_SANITIZER_BUILD
#define ASYS_SKIP_FORK_UNDER_SANITIZERS()                                                   \
    GTEST_SKIP() << "SKIPPED under ASan/TSan: clang 14's sanitizer allocator is not fork-safe " \
                    "in multithreaded processes; the plain build runs this"
#else
#define ASYS_SKIP_FORK_UNDER_SANITIZERS() (void)0
#endif

/// When the suite runs with ASYS_BACKEND=uring on a machine where io_uring
/// cannot start (disabled by sysctl or seccomp), skip every test loudly: the
/// pool run of the same suite and test_uring's fallback tests cover it.
/// (Not in programs linked without libasys: ASYS_TEST_WITHOUT_LIBASYS.)
#ifndef ASYS_TEST_WITHOUT_LIBASYS
class backend_environment : public ::testing::Environment {
public:
    void SetUp() override {
        const char *b = getenv("ASYS_BACKEND");
        if (!b || strcmp(b, "uring") != 0) return;
        asys_ctx *c = nullptr;
        int rc = asys_ctx_create(nullptr, &c);
        if (rc < 0)
            GTEST_SKIP() << "SKIPPED: io_uring backend unavailable here (" << strerror(-rc)
                         << "); the pool run covers these tests";
        asys_ctx_destroy(c, ASYS_DESTROY_DRAIN);
    }
};
inline ::testing::Environment *const g_backend_environment =
    ::testing::AddGlobalTestEnvironment(new backend_environment);
#endif

}  // namespace asys_test
