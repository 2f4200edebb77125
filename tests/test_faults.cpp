// Fault injection: worker system calls that fail with EINTR are retried
// (the op still completes with its real result); EIO, ENOMEM and EAGAIN are
// delivered as the op's result, exactly once. Inline probes that see EINTR
// or EAGAIN send the op to a backend untouched; io_uring completions that
// report EINTR are re-run on the pool. A failing io_uring set-up and failing
// thread creation are covered in test_uring and test_bad_input.
#include <poll.h>
#include <sys/syscall.h>
#include <sys/socket.h>

#include <cstring>

#include "asys/syslet.h"
#include "base/fault.hpp"
#include "helpers.hpp"

using namespace asys_test;
namespace fault = asys::internal::fault;

namespace {

struct fault_reset {
    ~fault_reset() {
        fault::syscall_failures = 0;
        fault::probe_failures = 0;
        fault::ring_failures = 0;
        fault::cancel_signal_drops = 0;
    }
};

/// A cached 64 KiB file, opened O_RDONLY.
struct cached_file {
    temp_dir dir;
    int fd = -1;
    static constexpr size_t kSize = 64 * 1024;
    cached_file() {
        int w = make_file(dir.file("f"), kSize);
        EXPECT_GE(w, 0);
        close(w);
        fd = open(dir.file("f").c_str(), O_RDONLY | O_CLOEXEC);
        std::vector<char> warm(kSize);
        EXPECT_EQ(pread(fd, warm.data(), kSize, 0), static_cast<ssize_t>(kSize));
    }
    ~cached_file() { close(fd); }
    bool matches(const char *buf, size_t len, size_t off) const {
        for (size_t i = 0; i < len; ++i)
            if (buf[i] != pattern(off + i)) return false;
        return true;
    }
};

/// Submits N async ops made by `prep(op, i)` and checks that each one is
/// delivered exactly once with -err (through ret_ptr and one entry), on
/// `path` when it is not 0.
template <class Prep>
void expect_each_fails_once(asys_ctx *ctx, int N, int err, Prep prep, uint32_t path = 0) {
    std::vector<long> res(static_cast<size_t>(N));
    for (int i = 0; i < N; ++i) {
        asys_op op;
        prep(op, i);
        op.flags = ASYS_F_ASYNC;
        op.ret_ptr = &res[i];
        op.user_data = static_cast<uint64_t>(i);
        ASSERT_EQ(asys_submit(ctx, &op), 0);
    }
    auto c = reap(ctx, static_cast<unsigned>(N));
    ASSERT_EQ(c.size(), static_cast<size_t>(N));
    std::vector<int> seen(static_cast<size_t>(N));
    for (auto &e : c) {
        ++seen[e.user_data];
        EXPECT_EQ(e.res, -err);
        if (path) EXPECT_EQ(e.path, path);
        EXPECT_EQ(res[e.user_data], -err);
    }
    for (int i = 0; i < N; ++i) EXPECT_EQ(seen[static_cast<size_t>(i)], 1) << i;
    asys_cqe extra;
    EXPECT_EQ(asys_peek(ctx, &extra, 1), 0) << "exactly one completion each";
}

TEST(Faults, EintrIsRetried) {
    fault_reset g;
    asys_params p = pool_params(1);
    ctx_guard ctx(&p);
    fault::syscall_errno = EINTR;
    fault::syscall_failures = 5;
    asys_op op;
    asys_prep_nop(&op, 77);
    op.flags = ASYS_F_ASYNC;
    EXPECT_EQ(run(ctx, op), 77) << "five injected EINTRs, then the real call";
    EXPECT_EQ(fault::syscall_failures.load(), 0) << "all five were consumed by retries";
    asys_cqe extra;
    EXPECT_EQ(asys_peek(ctx, &extra, 1), 0) << "exactly one completion";
}

// Found by fuzz_validate: a NOP whose value is -EINTR was retried forever
// (the pool took it for an interrupted call, and the ring re-ran it there).
TEST(Faults, ANopValueOfEintrIsNotAnInterrupt) {
    for (unsigned backend : {unsigned{ASYS_BACKEND_POOL}, unsigned{ASYS_BACKEND_AUTO}}) {
        asys_params p = params(2, 0, 0, backend);
        ctx_guard ctx(&p);
        asys_op op;
        asys_prep_nop(&op, -EINTR);
        op.flags = ASYS_F_ASYNC;
        EXPECT_EQ(run(ctx, op), -EINTR) << "backend " << backend;
        EXPECT_EQ(stats(ctx).ring_retried, 0u);
    }
}

// A cancel signal that lands just before the running op's system call is
// consumed without interrupting it (the call then blocks). The pool sends the
// signal again every millisecond until the op ends. Before, such a cancel
// left the op blocked forever (a socket server under TSan hung on it).
TEST(Faults, ALostCancelSignalIsSentAgain) {
    fault_reset g;
    asys_params p = pool_params(1);
    ctx_guard ctx(&p);
    const pid_t tid = worker_tid(ctx);
    parked_read parked;
    ASSERT_EQ(parked.submit(ctx, 9), 0);
    ASSERT_TRUE(parked.wait_blocked(tid));
    fault::cancel_signal_drops = 1;
    EXPECT_EQ(asys_cancel(ctx, 9), -EALREADY);
    EXPECT_EQ(fault::cancel_signal_drops.load(), 0) << "the first signal was dropped";
    auto c = reap(ctx, 1, 10);
    ASSERT_EQ(c.size(), 1u) << "the re-sent signal ended the blocked read";
    EXPECT_EQ(c[0].res, -ECANCELED);
    EXPECT_EQ(parked.res, -ECANCELED);
}

TEST(Faults, ErrorsAreDeliveredExactlyOnce) {
    fault_reset g;
    asys_params p = pool_params(2);
    ctx_guard ctx(&p);
    for (int err : {EIO, ENOMEM, EAGAIN}) {
        constexpr int N = 50;
        fault::syscall_errno = err;
        fault::syscall_failures = N;
        expect_each_fails_once(ctx, N, err, [](asys_op &op, int i) { asys_prep_nop(&op, i); });
        // The next op runs for real again.
        asys_op op;
        asys_prep_nop(&op, 5);
        op.flags = ASYS_F_ASYNC;
        EXPECT_EQ(run(ctx, op), 5);
    }
}

TEST(Faults, ProbeEintrOrEagainSendsTheOpToABackend) {
    fault_reset g;
    cached_file f;
    asys_params p = params(2);
    ctx_guard ctx(&p);
    for (int err : {EINTR, EAGAIN}) {
        SCOPED_TRACE(strerror(err));
        const asys_stats before = stats(ctx);
        fault::probe_errno = err;
        fault::probe_failures = 1;
        char buf[4096];
        asys_op op;
        asys_prep_pread(&op, f.fd, buf, sizeof buf, 8192);
        uint32_t path = 0;
        EXPECT_EQ(run(ctx, op, &path), 4096) << "the real result, not the probe's error";
        EXPECT_TRUE(f.matches(buf, sizeof buf, 8192));
        EXPECT_EQ(path, async_path(ctx, ASYS_OP_PREAD));
        EXPECT_EQ(fault::probe_failures.load(), 0) << "the probe saw the fault";
        EXPECT_EQ(stats(ctx).punted_probe, before.punted_probe + 1);
        // The next probe is real again: a cached read finishes inline.
        EXPECT_EQ(run(ctx, op, &path), 4096);
        EXPECT_EQ(path, ASYS_PATH_INLINE);
    }
}

TEST(Faults, ProbeEintrOnEveryProbeClass) {
    fault_reset g;
    cached_file f;
    asys_params p = params(2);
    ctx_guard ctx(&p);
    fault::probe_errno = EINTR;
    // open (RESOLVE_CACHED probe)
    fault::probe_failures = 1;
    asys_op op;
    const std::string path = f.dir.file("f");  // outlives the punted op
    asys_prep_openat(&op, AT_FDCWD, path.c_str(), O_RDONLY | O_CLOEXEC, 0);
    const long fd = run(ctx, op);
    EXPECT_GE(fd, 0);
    if (fd >= 0) close(static_cast<int>(fd));
    EXPECT_EQ(fault::probe_failures.load(), 0);
    // recv and send (MSG_DONTWAIT probes), poll (zero-timeout probe)
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    fault::probe_failures = 1;
    asys_prep_send(&op, sv[0], "hello", 5, 0);
    EXPECT_EQ(run(ctx, op), 5);
    fault::probe_failures = 1;
    asys_prep_poll(&op, sv[1], POLLIN, 0);
    EXPECT_EQ(run(ctx, op), POLLIN);
    fault::probe_failures = 1;
    char buf[8] = {};
    asys_prep_recv(&op, sv[1], buf, sizeof buf, 0);
    EXPECT_EQ(run(ctx, op), 5);
    EXPECT_EQ(memcmp(buf, "hello", 5), 0);
    EXPECT_EQ(fault::probe_failures.load(), 0);
    close(sv[0]);
    close(sv[1]);
}

TEST(Faults, ProbeErrorIsTheOpsResultExactlyOnce) {
    fault_reset g;
    cached_file f;
    asys_params p = params(2);
    ctx_guard ctx(&p);
    for (int err : {EIO, ENOMEM}) {
        fault::probe_errno = err;
        fault::probe_failures = 1;
        char buf[512];
        long res = 0;
        asys_op op;
        asys_prep_pread(&op, f.fd, buf, sizeof buf, 0);
        op.ret_ptr = &res;
        EXPECT_EQ(asys_submit(ctx, &op), ASYS_DONE);
        EXPECT_EQ(res, -err);
        asys_cqe extra;
        EXPECT_EQ(asys_peek(ctx, &extra, 1), 0) << "an inline result posts no entry";
    }
}

TEST(Faults, ProbeEintrInsideAChainGoesAsyncWithTheRightResult) {
    fault_reset g;
    cached_file f;
    asys_params p = params(2);
    ctx_guard ctx(&p);
    syslet_uatom *ring[4] = {};
    ASSERT_EQ(asys_async_register(ctx, ring, 4), 0);
    char buf[4096];
    unsigned long fdv = static_cast<unsigned long>(f.fd), bufv = reinterpret_cast<unsigned long>(buf),
                  len = sizeof buf, off = 4096;
    long r = 0;
    syslet_uatom a{};
    a.nr = SYS_pread64;
    a.ret_ptr = &r;
    a.arg_ptr[0] = &fdv;
    a.arg_ptr[1] = &bufv;
    a.arg_ptr[2] = &len;
    a.arg_ptr[3] = &off;
    fault::probe_errno = EINTR;
    fault::probe_failures = 1;
    EXPECT_EQ(asys_async_exec(ctx, &a), 0) << "the interrupted probe sends the chain async";
    EXPECT_EQ(asys_async_wait(ctx, 1), 1);
    EXPECT_EQ(ring[0], &a);
    EXPECT_EQ(r, 4096);
    EXPECT_TRUE(f.matches(buf, sizeof buf, 4096));
}

/// 0 if a context forced onto io_uring can be created, else its -errno.
int ring_available(const asys_params &p) {
    asys_ctx *c = nullptr;
    const int rc = asys_ctx_create(&p, &c);
    if (rc == 0) asys_ctx_destroy(c, ASYS_DESTROY_DRAIN);
    return rc;
}

TEST(Faults, RingEintrIsRerunOnThePool) {
    fault_reset g;
    cached_file f;
    asys_params p = params(2, 0, 0, ASYS_BACKEND_URING);
    if (int rc = ring_available(p); rc != 0)
        GTEST_SKIP() << "SKIPPED LOUDLY: io_uring unavailable here (" << strerror(-rc)
                     << "); the pool's EINTR retry is tested above";
    ctx_guard ctx(&p);
    constexpr int N = 3;
    fault::ring_errno = EINTR;
    fault::ring_failures = N;
    for (int i = 0; i < N; ++i) {
        char buf[4096];
        asys_op op;
        asys_prep_pread(&op, f.fd, buf, sizeof buf, static_cast<uint64_t>(i) * 4096);
        op.flags = ASYS_F_ASYNC;
        uint32_t path = 0;
        EXPECT_EQ(run(ctx, op, &path), 4096);
        EXPECT_TRUE(f.matches(buf, sizeof buf, static_cast<size_t>(i) * 4096));
        EXPECT_EQ(path, static_cast<uint32_t>(ASYS_PATH_POOL)) << "re-run on the pool";
    }
    EXPECT_EQ(fault::ring_failures.load(), 0);
    EXPECT_EQ(stats(ctx).ring_retried, static_cast<uint64_t>(N));
    asys_cqe extra;
    EXPECT_EQ(asys_peek(ctx, &extra, 1), 0) << "exactly one completion each";
}

TEST(Faults, RingErrorsAreDeliveredExactlyOnce) {
    fault_reset g;
    cached_file f;
    asys_params p = params(2, 0, 0, ASYS_BACKEND_URING);
    if (int rc = ring_available(p); rc != 0)
        GTEST_SKIP() << "SKIPPED LOUDLY: io_uring unavailable here (" << strerror(-rc) << ")";
    ctx_guard ctx(&p);
    static char buf[512];
    for (int err : {EAGAIN, EIO, ENOMEM}) {
        constexpr int N = 20;
        fault::ring_errno = err;
        fault::ring_failures = N;
        expect_each_fails_once(
            ctx, N, err, [&](asys_op &op, int) { asys_prep_pread(&op, f.fd, buf, sizeof buf, 0); },
            ASYS_PATH_URING);
        EXPECT_EQ(stats(ctx).ring_retried, 0u) << "only EINTR is re-run";
    }
}

}  // namespace
