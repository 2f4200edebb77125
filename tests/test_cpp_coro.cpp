// <asys/asys.hpp>: the fast path (no suspension, no allocation), punted ops
// resumed on the driving thread, exceptions, when_all, spawn, cancellation,
// the backlog of a full context, and destroying a context with suspended
// coroutines.
#include <asys/asys.hpp>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "helpers.hpp"

// ------------------------------------------------ counting allocator
// Every operator new of this program (coroutine frames included) counts.
// TSan's runtime defines every form itself (linked whole): there the
// allocation tests skip.
#if defined(__SANITIZE_THREAD__)
#define ASYS_TEST_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define ASYS_TEST_TSAN 1
#endif
#endif
static std::atomic<unsigned long> g_allocs{0};
#ifndef ASYS_TEST_TSAN
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"  // free() of malloc()ed memory
#endif
void *operator new(std::size_t n) {
    g_allocs.fetch_add(1, std::memory_order_relaxed);
    if (void *p = std::malloc(n ? n : 1)) return p;
    throw std::bad_alloc();
}
void *operator new(std::size_t n, std::align_val_t al) {
    g_allocs.fetch_add(1, std::memory_order_relaxed);
    const std::size_t a = static_cast<std::size_t>(al);
    if (void *p = std::aligned_alloc(a, (n + a - 1) / a * a)) return p;
    throw std::bad_alloc();
}
// Every other form goes through the two above, and every delete is free():
// a sanitizer's own forms would otherwise see a malloc()ed block (ASan), or
// clash with ours at link time (TSan defines them all in one object).
void *operator new[](std::size_t n) { return operator new(n); }
void *operator new[](std::size_t n, std::align_val_t al) { return operator new(n, al); }
void *operator new(std::size_t n, const std::nothrow_t &) noexcept {
    try {
        return operator new(n);
    } catch (...) {
        return nullptr;
    }
}
void *operator new[](std::size_t n, const std::nothrow_t &t) noexcept { return operator new(n, t); }
void operator delete(void *p) noexcept { std::free(p); }
void operator delete[](void *p) noexcept { std::free(p); }
void operator delete(void *p, std::size_t) noexcept { std::free(p); }
void operator delete[](void *p, std::size_t) noexcept { std::free(p); }
void operator delete(void *p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void *p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void *p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void *p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void *operator new(std::size_t n, std::align_val_t al, const std::nothrow_t &) noexcept {
    try {
        return operator new(n, al);
    } catch (...) {
        return nullptr;
    }
}
void *operator new[](std::size_t n, std::align_val_t al, const std::nothrow_t &t) noexcept {
    return operator new(n, al, t);
}
void operator delete(void *p, const std::nothrow_t &) noexcept { std::free(p); }
void operator delete[](void *p, const std::nothrow_t &) noexcept { std::free(p); }
void operator delete(void *p, std::align_val_t, const std::nothrow_t &) noexcept { std::free(p); }
void operator delete[](void *p, std::align_val_t, const std::nothrow_t &) noexcept { std::free(p); }
#endif  // !ASYS_TEST_TSAN

namespace {

unsigned long allocs() { return g_allocs.load(std::memory_order_relaxed); }

#ifdef ASYS_TEST_TSAN
#define SKIP_WITHOUT_COUNTING_ALLOCATOR() GTEST_SKIP() << "TSan's runtime owns operator new: allocations are not counted"
#else
#define SKIP_WITHOUT_COUNTING_ALLOCATOR() (void)0
#endif

asys_stats stats_of(asys::context &ctx) { return asys_test::stats(ctx.native_handle()); }

/// Ops the library did not complete inline: exactly the ones that suspend.
uint64_t punted(asys::context &ctx) {
    const asys_stats st = stats_of(ctx);
    return st.punted_probe + st.punted_direct;
}

using asys_test::pipe_pair;

/// A 4 KiB file, written and read once (cached).
struct cached_file {
    std::string path = "cpp_coro_cached." + std::to_string(getpid());
    int fd = -1;
    char data[4096];
    cached_file() {
        for (size_t i = 0; i < sizeof data; ++i) data[i] = static_cast<char>('a' + i % 23);
        fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        EXPECT_GE(fd, 0);
        EXPECT_EQ(::pwrite(fd, data, sizeof data, 0), 4096);
        char tmp[4096];
        EXPECT_EQ(::pread(fd, tmp, sizeof tmp, 0), 4096);
    }
    ~cached_file() {
        ::close(fd);
        ::unlink(path.c_str());
    }
};

// ------------------------------------------------------------ fast path
struct fast_loop_report {
    unsigned long allocs = 0;
    uint64_t suspensions = 0;
    int bad = 0;
};

asys::task<fast_loop_report> read_cached_n_times(asys::context &ctx, int fd, const char *expect, int n) {
    alignas(4096) static char buf[4096];
    fast_loop_report rep;
    const unsigned long a0 = allocs();
    const uint64_t s0 = ctx.suspensions();
    for (int i = 0; i < n; ++i) {
        asys::result<ssize_t> r = co_await ctx.pread(fd, buf, sizeof buf, 0);
        if (!r || *r != 4096 || std::memcmp(buf, expect, 4096) != 0) ++rep.bad;
    }
    rep.allocs = allocs() - a0;
    rep.suspensions = ctx.suspensions() - s0;
    co_return rep;
}

TEST(CppCoro, CachedReadNeitherSuspendsNorAllocates) {
    SKIP_WITHOUT_COUNTING_ALLOCATOR();
    asys::context ctx;
    cached_file f;
    const asys_stats before = stats_of(ctx);
    const fast_loop_report rep = asys::sync_wait(ctx, read_cached_n_times(ctx, f.fd, f.data, 1000));
    const asys_stats after = stats_of(ctx);
    EXPECT_EQ(rep.bad, 0);
    if (after.done_inline - before.done_inline != 1000)
        GTEST_SKIP() << "the page left the cache during the test (" << after.done_inline - before.done_inline
                     << " of 1000 reads inline); allocations " << rep.allocs;
    EXPECT_EQ(rep.suspensions, 0u);
    EXPECT_EQ(rep.allocs, 0u) << "co_await of an op that completes inline must not allocate";
    EXPECT_EQ(ctx.suspensions(), 0u);
}

TEST(CppCoro, TaskFrameIsTheOnlyAllocation) {
    SKIP_WITHOUT_COUNTING_ALLOCATOR();
    asys::context ctx;
    cached_file f;
    const unsigned long a0 = allocs();
    (void)asys::sync_wait(ctx, read_cached_n_times(ctx, f.fd, f.data, 1));
    const unsigned long one = allocs() - a0;
    const unsigned long a1 = allocs();
    (void)asys::sync_wait(ctx, read_cached_n_times(ctx, f.fd, f.data, 500));
    const unsigned long many = allocs() - a1;
    if (stats_of(ctx).done_inline != 501)
        GTEST_SKIP() << "the page left the cache during the test: not every read was inline";
    EXPECT_EQ(one, 1u) << "one frame for the task";
    EXPECT_EQ(many, one) << "500 inline reads cost no more allocations than 1";
}

// ------------------------------------------------------ punted ops
asys::task<long> read_one_byte(asys::context &ctx, int fd, std::thread::id *resumed_on) {
    char c = 0;
    auto r = co_await ctx.read(fd, &c, 1);
    *resumed_on = std::this_thread::get_id();
    co_return r ? static_cast<long>(c) : -r.error();
}

asys::task<void> write_byte(asys::context &ctx, int fd, char c) {
    auto r = co_await ctx.write(fd, &c, 1);
    EXPECT_EQ(r.value_or(-1), 1);
}

TEST(CppCoro, PuntedReadResumesOnTheDrivingThread) {
    asys::context ctx;
    pipe_pair p;
    std::thread::id resumed_on;
    const uint64_t probed0 = stats_of(ctx).punted_probe;
    // The read starts first on an empty pipe: it would block, is punted, and
    // suspends; the write (writes always go to a backend, docs/router.md)
    // suspends too, and the read completes on a worker.
    auto [got, none] = asys::sync_wait(ctx, asys::when_all(read_one_byte(ctx, p.r, &resumed_on),
                                                             write_byte(ctx, p.w, 'x')));
    (void)none;
    EXPECT_EQ(got, 'x');
    EXPECT_EQ(ctx.suspensions(), 2u);
    EXPECT_EQ(ctx.suspensions(), punted(ctx));
    EXPECT_EQ(stats_of(ctx).punted_probe - probed0, 1u) << "the read was tried inline first";
    EXPECT_EQ(resumed_on, std::this_thread::get_id());
}

TEST(CppCoro, ResumedByTheThreadThatDrivesNotTheOneThatCreated) {
    asys::context ctx;
    pipe_pair p;
    std::thread::id resumed_on, driver;
    long got = 0;
    std::thread t([&] {
        driver = std::this_thread::get_id();
        got = asys::sync_wait(ctx, read_one_byte(ctx, p.r, &resumed_on));
    });
    ASSERT_EQ(::write(p.w, "y", 1), 1);
    t.join();
    EXPECT_EQ(got, 'y');
    EXPECT_EQ(resumed_on, driver);
    EXPECT_NE(resumed_on, std::this_thread::get_id());
}

asys::task<long> async_nop(asys::context &ctx, long v, std::thread::id *resumed_on) {
    auto r = co_await ctx.nop(v).with_flags(ASYS_F_ASYNC);
    *resumed_on = std::this_thread::get_id();
    co_return r.value();
}

TEST(CppCoro, ForcedAsyncOpSuspendsOnceAndResumesOnCaller) {
    asys::context ctx;
    std::thread::id resumed_on;
    EXPECT_EQ(asys::sync_wait(ctx, async_nop(ctx, 42, &resumed_on)), 42);
    EXPECT_EQ(ctx.suspensions(), 1u);
    EXPECT_EQ(resumed_on, std::this_thread::get_id());
}

// ------------------------------------------------------ results and errors
asys::task<int> errors_are_values(asys::context &ctx) {
    char c;
    auto r = co_await ctx.read(-1, &c, 1);
    EXPECT_FALSE(r);
    EXPECT_EQ(r.error(), EBADF);
    auto o = co_await ctx.openat(AT_FDCWD, "cpp_coro_no_such_dir/x", O_RDONLY);
    EXPECT_EQ(o.error(), ENOENT);
    auto s = co_await ctx.syscall(SYS_getppid);
    EXPECT_EQ(s.value_or(-1), ::getppid());
    auto c2 = co_await ctx.close(-1);
    co_return c2.error();
}

TEST(CppCoro, ErrorsAreValuesNotExceptions) {
    asys::context ctx;
    EXPECT_EQ(asys::sync_wait(ctx, errors_are_values(ctx)), EBADF);
}

asys::task<int> file_ops(asys::context &ctx) {
    const std::string dir = "cpp_coro_dir." + std::to_string(getpid());
    EXPECT_TRUE(co_await ctx.mkdirat(AT_FDCWD, dir.c_str(), 0700));
    const std::string a = dir + "/a", b = dir + "/b";
    int fd = (co_await ctx.openat(AT_FDCWD, a.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600)).value();
    char hello[] = "hello, world";
    iovec iov[2] = {{hello, 7}, {hello + 7, 5}};
    EXPECT_EQ((co_await ctx.pwritev(fd, iov, 2, 0)).value(), 12);
    EXPECT_TRUE(co_await ctx.fallocate(fd, 0, 0, 8192));
    EXPECT_TRUE(co_await ctx.ftruncate(fd, 12));
    EXPECT_TRUE(co_await ctx.fdatasync(fd));
    EXPECT_TRUE(co_await ctx.fsync(fd));
    char back[12] = {};
    iovec riov[1] = {{back, sizeof back}};
    EXPECT_EQ((co_await ctx.preadv(fd, riov, 1, 0)).value(), 12);
    EXPECT_EQ(std::memcmp(back, hello, 12), 0);
    EXPECT_TRUE(co_await ctx.close(fd));
    EXPECT_TRUE(co_await ctx.renameat(AT_FDCWD, a.c_str(), AT_FDCWD, b.c_str()));
    struct statx sx {};
    EXPECT_TRUE(co_await ctx.statx(AT_FDCWD, b.c_str(), 0, STATX_SIZE, &sx));
    EXPECT_EQ(sx.stx_size, 12u);
    EXPECT_TRUE(co_await ctx.unlinkat(AT_FDCWD, b.c_str()));
    EXPECT_TRUE(co_await ctx.unlinkat(AT_FDCWD, dir.c_str(), AT_REMOVEDIR));
    co_return 0;
}

TEST(CppCoro, FileOpsThroughTheAwaitables) {
    asys::context ctx;
    EXPECT_EQ(asys::sync_wait(ctx, file_ops(ctx)), 0);
}

asys::task<int> socket_ops(asys::context &ctx) {
    const int lfd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    EXPECT_EQ(::bind(lfd, reinterpret_cast<sockaddr *>(&a), sizeof a), 0);
    EXPECT_EQ(::listen(lfd, 4), 0);
    EXPECT_EQ(::getsockname(lfd, reinterpret_cast<sockaddr *>(&a), &len), 0);
    const int cfd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    EXPECT_TRUE(co_await ctx.connect(cfd, reinterpret_cast<sockaddr *>(&a), sizeof a));
    sockaddr_in peer{};
    socklen_t peer_len = sizeof peer;
    const int sfd = (co_await ctx.accept(lfd, reinterpret_cast<sockaddr *>(&peer), &peer_len, SOCK_CLOEXEC)).value();
    EXPECT_EQ(peer_len, sizeof peer);
    // Nothing to read yet: a zero-timeout poll says so without waiting.
    EXPECT_EQ((co_await ctx.poll(sfd, POLLIN, 0)).value(), 0);
    char out[] = "ping", in[8] = {};
    EXPECT_EQ((co_await ctx.send(cfd, out, 4)).value(), 4);
    EXPECT_EQ((co_await ctx.poll(sfd, POLLIN)).value() & POLLIN, POLLIN);
    EXPECT_EQ((co_await ctx.recv(sfd, in, sizeof in)).value(), 4);
    EXPECT_STREQ(in, "ping");
    iovec wv[2] = {{out, 2}, {out + 2, 2}};
    EXPECT_EQ((co_await ctx.writev(sfd, wv, 2)).value(), 4);
    char r1[2], r2[2];
    iovec rv[2] = {{r1, 2}, {r2, 2}};
    EXPECT_EQ((co_await ctx.readv(cfd, rv, 2)).value(), 4);
    EXPECT_EQ(std::memcmp(r1, "pi", 2), 0);
    EXPECT_EQ(std::memcmp(r2, "ng", 2), 0);
    for (int fd : {sfd, cfd, lfd}) EXPECT_TRUE(co_await ctx.close(fd));
    co_return 0;
}

TEST(CppCoro, SocketOpsThroughTheAwaitables) {
    asys::context ctx;
    EXPECT_EQ(asys::sync_wait(ctx, socket_ops(ctx)), 0);
}

asys::task<long> chain_read(asys::context &ctx, const char *path, char *buf, size_t len) {
    asys::chain c;
    auto fd = c.open(path, O_RDONLY | O_CLOEXEC);
    auto n = c.read(fd, buf, len);
    c.close(fd);
    auto r = co_await ctx.chain(c);
    EXPECT_TRUE(r);
    co_return n.get().value();
}

TEST(CppCoro, ChainOpYieldsItsLastStep) {
    asys::context ctx;
    cached_file f;
    char buf[4096];
    EXPECT_EQ(asys::sync_wait(ctx, chain_read(ctx, f.path.c_str(), buf, sizeof buf)), 4096);
    EXPECT_EQ(std::memcmp(buf, f.data, sizeof buf), 0);
}

// --------------------------------------------------------------- exceptions
asys::task<int> throws_after_a_punted_op(asys::context &ctx) {
    (void)co_await ctx.nop(1).with_flags(ASYS_F_ASYNC);
    throw std::runtime_error("from the task");
}

asys::task<int> catches(asys::context &ctx) {
    try {
        co_return co_await throws_after_a_punted_op(ctx);
    } catch (const std::runtime_error &e) {
        EXPECT_STREQ(e.what(), "from the task");
        co_return 7;
    }
}

TEST(CppCoro, ExceptionsPropagateToTheAwaiterAndOutOfSyncWait) {
    asys::context ctx;
    EXPECT_EQ(asys::sync_wait(ctx, catches(ctx)), 7);
    EXPECT_THROW(asys::sync_wait(ctx, throws_after_a_punted_op(ctx)), std::runtime_error);
    EXPECT_EQ(ctx.pending(), 0u);
}

// ------------------------------------------------------------- when_all
asys::task<ssize_t> fast_read(asys::context &ctx, int fd) {
    char buf[4096];
    co_return (co_await ctx.pread(fd, buf, sizeof buf, 0)).value();
}

TEST(CppCoro, WhenAllOverFastAndSlowOps) {
    asys::context ctx;
    cached_file f;
    pipe_pair p;
    std::thread::id t1;
    auto [fast, slow, nothing, nop_value] =
        asys::sync_wait(ctx, asys::when_all(fast_read(ctx, f.fd), read_one_byte(ctx, p.r, &t1),
                                            write_byte(ctx, p.w, 'z'), async_nop(ctx, 5, &t1)));
    (void)nothing;
    EXPECT_EQ(fast, 4096);
    EXPECT_EQ(slow, 'z');
    EXPECT_EQ(nop_value, 5);
    // The pipe read, the write and the ASYNC nop (and the cached read, if
    // its page left the cache meanwhile): exactly the ops not done inline.
    EXPECT_GE(ctx.suspensions(), 3u);
    EXPECT_EQ(ctx.suspensions(), punted(ctx));

    std::vector<asys::task<long>> many;
    for (long i = 0; i < 50; ++i) many.push_back(async_nop(ctx, i, &t1));
    std::vector<long> vals = asys::sync_wait(ctx, asys::when_all(std::move(many)));
    ASSERT_EQ(vals.size(), 50u);
    for (long i = 0; i < 50; ++i) EXPECT_EQ(vals[static_cast<size_t>(i)], i);
}

TEST(CppCoro, WhenAllOfInlineTasksDoesNotSuspend) {
    asys::context ctx;
    cached_file f;
    auto [a, b] = asys::sync_wait(ctx, asys::when_all(fast_read(ctx, f.fd), fast_read(ctx, f.fd)));
    EXPECT_EQ(a, 4096);
    EXPECT_EQ(b, 4096);
    if (stats_of(ctx).done_inline != 2) GTEST_SKIP() << "the page left the cache during the test";
    EXPECT_EQ(ctx.suspensions(), 0u);
}

TEST(CppCoro, WhenAllRethrowsAfterEveryTaskEnded) {
    asys::context ctx;
    std::thread::id t;
    std::vector<asys::task<int>> ts;
    ts.push_back(throws_after_a_punted_op(ctx));
    ts.push_back(catches(ctx));
    EXPECT_THROW(asys::sync_wait(ctx, asys::when_all(std::move(ts))), std::runtime_error);
    EXPECT_EQ(ctx.pending(), 0u);
}

// ---------------------------------------------------------------- spawn
asys::task<void> count_after_async_nop(asys::context &ctx, int *done) {
    (void)co_await ctx.nop(0).with_flags(ASYS_F_ASYNC);
    ++*done;
}

TEST(CppCoro, SpawnedTasksRunInRunAndFinish) {
    asys::context ctx;
    int done = 0;
    for (int i = 0; i < 20; ++i) asys::spawn(ctx, count_after_async_nop(ctx, &done));
    EXPECT_EQ(done, 0) << "spawn starts nothing before the context is driven";
    EXPECT_EQ(ctx.spawned(), 20u);
    ctx.run();
    EXPECT_EQ(done, 20);
    EXPECT_EQ(ctx.spawned(), 0u);
    EXPECT_EQ(ctx.pending(), 0u);
}

asys::task<void> spawned_thrower(asys::context &ctx) {
    (void)co_await throws_after_a_punted_op(ctx);
}

TEST(CppCoro, ExceptionOfASpawnedTaskComesOutOfRun) {
    asys::context ctx;
    asys::spawn(ctx, spawned_thrower(ctx));
    EXPECT_THROW(ctx.run(), std::runtime_error);
    EXPECT_EQ(ctx.run(), 0u);
    EXPECT_EQ(ctx.spawned(), 0u);
}

asys::task<void> mark_then_throw(asys::context &ctx, bool *threw) {
    (void)co_await ctx.nop(0).with_flags(ASYS_F_ASYNC);
    *threw = true;
    throw std::runtime_error("spawned");
}

asys::task<void> write_once_marked(asys::context &ctx, const bool *threw, int fd) {
    while (!*threw) (void)co_await ctx.nop(0).with_flags(ASYS_F_ASYNC);
    (void)co_await ctx.write(fd, "x", 1);
}

TEST(CppCoro, SyncWaitFinishesItsTaskBeforeRethrowingASpawnedTasksException) {
    asys::context ctx;
    pipe_pair p;
    std::thread::id t;
    long got = 0;
    bool threw = false;
    // The task's read can complete only after the first spawned task threw
    // (the second writes the pipe after that): the exception comes while
    // the task is suspended in its read.
    asys::spawn(ctx, mark_then_throw(ctx, &threw));
    asys::spawn(ctx, write_once_marked(ctx, &threw, p.w));
    auto reader = [&]() -> asys::task<void> { got = co_await read_one_byte(ctx, p.r, &t); };
    EXPECT_THROW(asys::sync_wait(ctx, reader()), std::runtime_error);
    EXPECT_EQ(got, 'x') << "the awaited task must not be abandoned while an op of it is in flight";
    ctx.run();  // the writer's completion may still be on its way
    EXPECT_EQ(ctx.pending(), 0u);
    EXPECT_EQ(ctx.spawned(), 0u);
}

// --------------------------------------------------------- cancellation
asys::task<int> read_until_stopped(asys::context &ctx, int fd, std::stop_token tok) {
    char c;
    auto r = co_await ctx.read(fd, &c, 1).with_stop(std::move(tok));
    co_return r ? 0 : r.error();
}

asys::task<void> request_stop(asys::context &ctx, std::stop_source &src) {
    (void)co_await ctx.nop(0);
    src.request_stop();
}

TEST(CppCoro, StopTokenCancelsASuspendedOp) {
    asys::context ctx;
    pipe_pair p;
    std::stop_source src;
    auto [err, none] =
        asys::sync_wait(ctx, asys::when_all(read_until_stopped(ctx, p.r, src.get_token()), request_stop(ctx, src)));
    (void)none;
    EXPECT_EQ(err, ECANCELED);
    EXPECT_EQ(ctx.suspensions(), 1u);
}

TEST(CppCoro, StopFromAnotherThreadCancels) {
    asys::context ctx;
    pipe_pair p;
    std::stop_source src;
    int err = 0;
    std::thread driver([&] { err = asys::sync_wait(ctx, read_until_stopped(ctx, p.r, src.get_token())); });
    src.request_stop();  // before or after the read suspended: either way ECANCELED
    driver.join();
    EXPECT_EQ(err, ECANCELED);
}

TEST(CppCoro, StopRequestedBeforeTheOpSubmitsNothing) {
    asys::context ctx;
    pipe_pair p;
    std::stop_source src;
    src.request_stop();
    const uint64_t sub0 = stats_of(ctx).submitted;
    EXPECT_EQ(asys::sync_wait(ctx, read_until_stopped(ctx, p.r, src.get_token())), ECANCELED);
    EXPECT_EQ(stats_of(ctx).submitted, sub0);
    EXPECT_EQ(ctx.suspensions(), 0u);
}

// -------------------------------------------------- a full context waits
TEST(CppCoro, OpsBeyondTheContextsRoomWaitAndAllComplete) {
    asys_params prm = asys_test::params(2, 8);
    asys::context ctx(prm);
    std::thread::id t;
    std::vector<asys::task<long>> many;
    for (long i = 0; i < 200; ++i) many.push_back(async_nop(ctx, i, &t));
    std::vector<long> vals = asys::sync_wait(ctx, asys::when_all(std::move(many)));
    ASSERT_EQ(vals.size(), 200u);
    for (long i = 0; i < 200; ++i) EXPECT_EQ(vals[static_cast<size_t>(i)], i);
    EXPECT_EQ(ctx.pending(), 0u);
}

// ------------------------------------------- destroying a busy context
asys::task<void> read_then_try_again(asys::context &ctx, int fd, std::vector<int> *errs) {
    char c;
    auto r = co_await ctx.read(fd, &c, 1);
    errs->push_back(r ? 0 : r.error());
    auto again = co_await ctx.read(fd, &c, 1);  // the context is closing: at once
    errs->push_back(again ? 0 : again.error());
}

TEST(CppCoro, DestroyingTheContextCompletesSuspendedCoroutinesWithEcanceled) {
    pipe_pair p;
    std::vector<int> errs;
    {
        std::optional<asys::context> ctx;
        ctx.emplace();
        for (int i = 0; i < 8; ++i) asys::spawn(*ctx, read_then_try_again(*ctx, p.r, &errs));
        ctx->poll();  // starts them; each suspends on the empty pipe
        ASSERT_EQ(ctx->pending(), 8u);
        ASSERT_TRUE(errs.empty());
        const std::thread::id me = std::this_thread::get_id();
        ctx.reset();
        EXPECT_EQ(me, std::this_thread::get_id());
    }
    ASSERT_EQ(errs.size(), 16u);
    for (int e : errs) EXPECT_EQ(e, ECANCELED);
}

TEST(CppCoro, DestroyingTheContextStartsNotYetStartedSpawnsWhichSeeEcanceled) {
    pipe_pair p;
    std::vector<int> errs;
    {
        asys::context ctx;
        for (int i = 0; i < 3; ++i) asys::spawn(ctx, read_then_try_again(ctx, p.r, &errs));
    }
    ASSERT_EQ(errs.size(), 6u);
    for (int e : errs) EXPECT_EQ(e, ECANCELED);
}

TEST(CppCoro, AMovedContextKeepsItsSuspendedOps) {
    pipe_pair p;
    std::thread::id t;
    asys::context a;
    long got = 0;
    auto reader = [&](asys::context &c) -> asys::task<void> { got = co_await read_one_byte(c, p.r, &t); };
    asys::spawn(a, reader(a));
    a.poll();
    ASSERT_EQ(a.pending(), 1u);
    asys::context b = std::move(a);
    EXPECT_EQ(a.native_handle(), nullptr);
    EXPECT_EQ(b.pending(), 1u);
    ASSERT_EQ(::write(p.w, "m", 1), 1);
    b.run();
    EXPECT_EQ(got, 'm');
    auto moved_from = [&]() -> asys::task<int> { co_return (co_await a.nop(1)).error(); };
    EXPECT_EQ(asys::sync_wait(b, moved_from()), EBADF) << "an op of the moved-from context";
}

TEST(CppCoro, ContextFdIsTheEventfd) {
    asys::context ctx;
    auto fd = ctx.fd();
    ASSERT_TRUE(fd);
    EXPECT_EQ(*fd, asys_ctx_fd(ctx.native_handle()));
}

}  // namespace
