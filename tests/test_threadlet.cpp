// Threadlets (ASYS_OP_THREADLET, asys_call, asys_run): ordinary code run as
// an op on the caller's thread, parked only when a call would block, and
// resumed on the submitting thread when it drives the context.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "helpers.hpp"

using namespace asys_test;

namespace {

thread_local int t_marker = 0;

long gettid_now() { return syscall(SYS_gettid); }

// Reads up to `len` bytes from `fd` with asys_call and records what the
// threadlet saw about its thread.
struct pipe_reader {
    int fd;
    char buf[64] = {};
    size_t len = sizeof buf - 1;
    long tid_before = 0, tid_after = 0, call_tid = 0, marker = 0;
    long second = 1;  ///< result of a second call after the read (if asked)
    bool second_call = false;
};

long read_pipe(void *arg) {
    auto *r = static_cast<pipe_reader *>(arg);
    r->tid_before = gettid_now();
    long n = asys_call(SYS_read, r->fd, r->buf, r->len);
    r->tid_after = gettid_now();
    r->call_tid = asys_call(SYS_gettid);
    r->marker = t_marker;
    if (r->second_call) r->second = asys_call(SYS_read, r->fd, r->buf, r->len);
    return n;
}

asys_op threadlet_op(asys_threadlet_fn fn, void *arg, long *ret, uint64_t user_data = 0, unsigned tflags = 0) {
    asys_op op;
    asys_prep_threadlet(&op, fn, arg, tflags);
    op.ret_ptr = ret;
    op.user_data = user_data;
    return op;
}

bool readable(int fd, int timeout_ms) {
    pollfd p{fd, POLLIN, 0};
    return poll(&p, 1, timeout_ms) == 1 && (p.revents & POLLIN);
}

}  // namespace

TEST(Threadlet, NeverBlockingCompletesInsideSubmit) {
    ctx_guard ctx;
    temp_dir d;
    int fd = make_file(d.file("f"), 16 * 4096);
    ASSERT_GE(fd, 0);
    struct job {
        int fd;
        char buf[4096];
        long pid;
    } j{fd, {}, 0};
    std::vector<char> warm(16 * 4096);
    ASSERT_EQ(pread(fd, warm.data(), warm.size(), 0), static_cast<ssize_t>(warm.size()));
    auto fn = [](void *a) -> long {
        auto *jj = static_cast<job *>(a);
        jj->pid = asys_call(SYS_getpid);
        long total = 0;
        for (int i = 0; i < 16; ++i) {
            long n = asys_call(SYS_pread64, jj->fd, jj->buf, 4096, i * 4096L);
            if (n < 0) return n;
            total += n;
        }
        return total;
    };
    long ret = -1;
    asys_op op = threadlet_op(fn, &j, &ret, 5);
    ASSERT_EQ(asys_submit(ctx, &op), ASYS_DONE);
    EXPECT_EQ(ret, 16 * 4096);
    EXPECT_EQ(j.pid, getpid());
    EXPECT_EQ(j.buf[7], pattern(15 * 4096 + 7));
    asys_cqe cqe;
    EXPECT_EQ(asys_peek(ctx, &cqe, 1), 0) << "an inline threadlet posts no completion";
    close(fd);
}

TEST(Threadlet, EmptyPipeParksAndResumesOnTheOwnerWithTheData) {
    ctx_guard ctx;
    pipe_pair p;
    pipe_reader r{p.r};
    t_marker = 4242;
    long ret = -999;
    asys_op op = threadlet_op(read_pipe, &r, &ret, 77);
    ASSERT_EQ(asys_submit(ctx, &op), 0) << "a read of an empty pipe parks the threadlet";
    EXPECT_EQ(ret, -999) << "not finished yet";
    ASSERT_EQ(write(p.w, "hello threadlet", 15), 15);
    asys_cqe cqe{};
    struct timespec ts{30, 0};
    ASSERT_EQ(asys_wait(ctx, 1, &ts, &cqe, 1), 1);
    EXPECT_EQ(cqe.user_data, 77u);
    EXPECT_EQ(cqe.res, 15);
    EXPECT_EQ(cqe.opcode, static_cast<uint32_t>(ASYS_OP_THREADLET));
    EXPECT_EQ(ret, 15);
    EXPECT_STREQ(r.buf, "hello threadlet");
    EXPECT_EQ(r.tid_before, gettid_now());
    EXPECT_EQ(r.tid_after, gettid_now()) << "resumed on the submitting thread";
    EXPECT_EQ(r.call_tid, gettid_now()) << "gettid through asys_call runs on the owner";
    EXPECT_EQ(r.marker, 4242) << "thread-locals are the owner's";
}

TEST(Threadlet, EventfdReadableWhileAThreadletWaitsToResume) {
    ctx_guard ctx;
    const int efd = asys_ctx_fd(ctx);
    ASSERT_GE(efd, 0);
    pipe_pair p;
    pipe_reader r{p.r};
    long ret = -999;
    asys_op op = threadlet_op(read_pipe, &r, &ret, 1);
    ASSERT_EQ(asys_submit(ctx, &op), 0);
    EXPECT_FALSE(readable(efd, 0));
    ASSERT_EQ(write(p.w, "x", 1), 1);
    ASSERT_TRUE(readable(efd, 30000)) << "ready to resume: the eventfd says so";
    EXPECT_EQ(ret, -999) << "not resumed until the owner drives";
    EXPECT_EQ(asys_run(ctx), 1);
    EXPECT_EQ(ret, 1);
    asys_cqe cqe{};
    EXPECT_TRUE(readable(efd, 0)) << "its completion entry";
    ASSERT_EQ(asys_peek(ctx, &cqe, 1), 1);
    EXPECT_EQ(cqe.res, 1);
    EXPECT_FALSE(readable(efd, 0));
}

TEST(Threadlet, OtherThreadsDrivingTheContextDoNotResumeIt) {
    ctx_guard ctx;
    pipe_pair p;
    pipe_reader r{p.r};
    long ret = -999;
    asys_op op = threadlet_op(read_pipe, &r, &ret, 1);
    ASSERT_EQ(asys_submit(ctx, &op), 0);
    ASSERT_EQ(write(p.w, "y", 1), 1);
    ASSERT_TRUE(readable(asys_ctx_fd(ctx), 30000));
    std::thread other([&] {
        asys_cqe cqe;
        struct timespec ts{0, 20 * 1000 * 1000};
        EXPECT_EQ(asys_run(ctx), 0);
        EXPECT_EQ(asys_peek(ctx, &cqe, 1), 0);
        EXPECT_EQ(asys_wait(ctx, 1, &ts, &cqe, 1), -ETIME);
    });
    other.join();
    EXPECT_EQ(ret, -999);
    auto c = reap(ctx, 1);
    ASSERT_EQ(c.size(), 1u);
    EXPECT_EQ(ret, 1);
    EXPECT_EQ(r.tid_after, gettid_now());
}

TEST(Threadlet, CancelOfAParkedThreadletFailsItsCallWithECANCELED) {
    ctx_guard ctx;
    pipe_pair p;
    pipe_reader r{p.r};
    long ret = -999;
    asys_op op = threadlet_op(read_pipe, &r, &ret, 31);
    ASSERT_EQ(asys_submit(ctx, &op), 0);
    const int rc = asys_cancel(ctx, 31);
    EXPECT_TRUE(rc == 0 || rc == -EALREADY) << rc;
    auto c = reap(ctx, 1);
    ASSERT_EQ(c.size(), 1u);
    EXPECT_EQ(c[0].user_data, 31u);
    EXPECT_EQ(c[0].res, -ECANCELED) << "the threadlet returned its call's result";
    EXPECT_EQ(ret, -ECANCELED);
    EXPECT_EQ(r.tid_after, gettid_now());
    EXPECT_EQ(asys_cancel(ctx, 31), -ENOENT);
}

// kN threadlets parked on reads of their own pipes, each reading twice, on
// a context the test destroys.
struct parked_pair_set {
    static constexpr int kN = 4;
    asys_ctx *ctx = nullptr;
    pipe_pair p[kN];
    pipe_reader r[kN] = {{p[0].r}, {p[1].r}, {p[2].r}, {p[3].r}};
    long ret[kN];
    /// Submits them (each first reads up to `len` bytes); false on failure.
    bool park(size_t len) {
        if (asys_ctx_create(nullptr, &ctx) != 0) return false;
        for (int i = 0; i < kN; ++i) {
            ret[i] = -999;
            r[i].second_call = true;  // parks twice
            r[i].len = len;
            asys_op op = threadlet_op(read_pipe, &r[i], &ret[i], static_cast<uint64_t>(i));
            if (asys_submit(ctx, &op) != 0) return false;
        }
        return true;
    }
};

TEST(Threadlet, DestroyDrainRunsParkedThreadletsToTheEnd) {
    parked_pair_set s;
    ASSERT_TRUE(s.park(2));  // "ab" (one atomic write), then "c"
    std::thread writer([&] {
        for (int i = 0; i < s.kN; ++i) {
            EXPECT_EQ(write(s.p[i].w, "ab", 2), 2);
            EXPECT_EQ(write(s.p[i].w, "c", 1), 1);
        }
    });
    // The writer may run before or during the destroy: both must drain,
    // and drain lets the second call run too.
    EXPECT_EQ(asys_ctx_destroy(s.ctx, ASYS_DESTROY_DRAIN), 0);
    writer.join();
    for (int i = 0; i < s.kN; ++i) {
        EXPECT_EQ(s.ret[i], 2) << i;
        EXPECT_EQ(s.r[i].second, 1) << i;
        EXPECT_EQ(s.r[i].tid_after, gettid_now());
    }
}

TEST(Threadlet, DestroyCancelEndsParkedThreadletsWithECANCELED) {
    parked_pair_set s;
    ASSERT_TRUE(s.park(sizeof s.r[0].buf - 1));
    EXPECT_EQ(asys_ctx_destroy(s.ctx, ASYS_DESTROY_CANCEL), 0);
    for (int i = 0; i < s.kN; ++i) {
        EXPECT_EQ(s.ret[i], -ECANCELED) << i;
        EXPECT_EQ(s.r[i].second, -ECANCELED) << "a call after the cancel that would block " << i;
    }
}

TEST(Threadlet, BatchOfThreadletsSomeParked) {
    ctx_guard ctx;
    pipe_pair p;
    ASSERT_EQ(write(p.w, "a", 1), 1);  // the first reader finds data; the second parks
    pipe_reader r[3] = {{p.r}, {p.r}, {-1}};
    long ret[3] = {-999, -999, -999};
    asys_op ops[3];
    for (int i = 0; i < 3; ++i) {
        r[i].len = 1;
        ops[i] = threadlet_op(read_pipe, &r[i], &ret[i], static_cast<uint64_t>(i));
    }
    int status[3] = {-1, -1, -1};
    ASSERT_EQ(asys_submit_batch(ctx, ops, 3, status), 3);
    EXPECT_EQ(status[0], ASYS_DONE);
    EXPECT_EQ(ret[0], 1);
    EXPECT_EQ(status[1], 0);
    EXPECT_EQ(status[2], ASYS_DONE);
    EXPECT_EQ(ret[2], -EBADF);
    ASSERT_EQ(write(p.w, "b", 1), 1);
    auto c = reap(ctx, 1);
    ASSERT_EQ(c.size(), 1u);
    EXPECT_EQ(c[0].user_data, 1u);
    EXPECT_EQ(ret[1], 1);
    EXPECT_EQ(r[1].buf[0], 'b');
}

TEST(Threadlet, ReadyOnAWorkerWakesAnOwnerWaitingOnOtherOps) {
    // The owner waits while an unrelated op keeps the ring (or the pool)
    // busy; the threadlet's sleep ends on a pool worker: the owner wakes,
    // resumes it, and its completion ends the wait.
    ctx_guard ctx;
    pipe_pair other;
    char sink = 0;
    long other_res = -999;
    asys_op busy;
    asys_prep_read(&busy, other.r, &sink, 1);
    busy.ret_ptr = &other_res;
    busy.user_data = 99;
    ASSERT_EQ(asys_submit(ctx, &busy), 0);
    struct sl {
        long rc = -999, tid = 0;
    } s;
    auto fn = [](void *a) -> long {
        auto *ss = static_cast<sl *>(a);
        struct timespec ts{0, 20 * 1000 * 1000};
        ss->rc = asys_call(SYS_nanosleep, &ts, nullptr);  // generic: the pool
        ss->tid = gettid_now();
        return 5;
    };
    long ret = -999;
    asys_op op = threadlet_op(fn, &s, &ret, 1);
    ASSERT_EQ(asys_submit(ctx, &op), 0);
    asys_cqe cqe{};
    ASSERT_EQ(asys_wait(ctx, 1, nullptr, &cqe, 1), 1);
    EXPECT_EQ(cqe.user_data, 1u);
    EXPECT_EQ(ret, 5);
    EXPECT_EQ(s.rc, 0);
    EXPECT_EQ(s.tid, gettid_now());
    ASSERT_EQ(write(other.w, "z", 1), 1);
    auto c = reap(ctx, 1);
    ASSERT_EQ(c.size(), 1u);
    EXPECT_EQ(c[0].user_data, 99u);
}

TEST(Threadlet, NowaitThreadletGetsEAGAINInsteadOfParking) {
    ctx_guard ctx;
    pipe_pair p;
    pipe_reader r{p.r};
    long ret = -999;
    asys_op op = threadlet_op(read_pipe, &r, &ret);
    op.flags = ASYS_F_NOWAIT;
    ASSERT_EQ(asys_submit(ctx, &op), ASYS_DONE);
    EXPECT_EQ(ret, -EAGAIN);
}

TEST(Threadlet, NestedThreadletsParkAndResumeIndependently) {
    ctx_guard ctx;
    pipe_pair inner_pipe, outer_pipe;
    struct nest {
        asys_ctx *ctx;
        pipe_reader inner, outer;
        long inner_ret = -999;
        int inner_submit = -1;
    } n{ctx, {inner_pipe.r}, {outer_pipe.r}};
    auto outer = [](void *a) -> long {
        auto *nn = static_cast<nest *>(a);
        asys_op op = threadlet_op(read_pipe, &nn->inner, &nn->inner_ret, 2);
        nn->inner_submit = asys_submit(nn->ctx, &op);  // parks the inner one: back here
        return read_pipe(&nn->outer) + 100;
    };
    long ret = -999;
    asys_op op = threadlet_op(outer, &n, &ret, 1);
    ASSERT_EQ(asys_submit(ctx, &op), 0);
    EXPECT_EQ(n.inner_submit, 0);
    ASSERT_EQ(write(outer_pipe.w, "o", 1), 1);
    auto c = reap(ctx, 1);
    ASSERT_EQ(c.size(), 1u);
    EXPECT_EQ(c[0].user_data, 1u);
    EXPECT_EQ(ret, 101);
    ASSERT_EQ(write(inner_pipe.w, "ii", 2), 2);
    c = reap(ctx, 1);
    ASSERT_EQ(c.size(), 1u);
    EXPECT_EQ(c[0].user_data, 2u);
    EXPECT_EQ(n.inner_ret, 2);
    EXPECT_EQ(n.inner.tid_after, gettid_now());
}

TEST(Threadlet, AsysCallOutsideAThreadletIsThePlainCall) {
    errno = 1234;
    EXPECT_EQ(asys_call(SYS_close, -1), -EBADF);
    EXPECT_EQ(asys_call(SYS_getpid), getpid());
    EXPECT_EQ(asys_call(SYS_gettid), gettid_now());
    EXPECT_EQ(asys_call(-5), -ENOSYS);
    EXPECT_EQ(errno, 1234);
}

// asys_call reads six arguments like syscall(2), the sixth from the stack:
// pwritev2's flags (RWF_APPEND) must reach the kernel, outside a threadlet
// and inside one.
TEST(Threadlet, AsysCallPassesTheSixthArgument) {
    ctx_guard ctx;
    temp_dir d;
    const int fd = make_file(d.file("f"), 8);
    ASSERT_GE(fd, 0);
    struct args {
        int fd;
        char byte;
        long rc = 0;
    };
    auto append = [](void *a) -> long {
        auto *x = static_cast<args *>(a);
        iovec v{&x->byte, 1};
        x->rc = asys_call(SYS_pwritev2, x->fd, &v, 1, 0, 0, RWF_APPEND);
        return x->rc;
    };
    args outside{fd, 'o'};
    EXPECT_EQ(append(&outside), 1);
    args inside{fd, 'i'};
    asys_op op = threadlet_op(append, &inside, nullptr);
    EXPECT_EQ(run(ctx, op), 1);
    struct stat st;
    ASSERT_EQ(fstat(fd, &st), 0);
    EXPECT_EQ(st.st_size, 10) << "RWF_APPEND was lost: the byte went to offset 0";
    char tail[2] = {};
    ASSERT_EQ(pread(fd, tail, 2, 8), 2);
    EXPECT_EQ(tail[0], 'o');
    EXPECT_EQ(tail[1], 'i');
    close(fd);
}

// read and pread64 take a short way inside a threadlet (straight to the
// probe); every edge gives the plain call's result.
TEST(Threadlet, ReadAndPreadEdgeCasesMatchTheSystemCall) {
    ctx_guard ctx;
    temp_dir d;
    const int fd = make_file(d.file("f"), 3 * 4096);
    ASSERT_GE(fd, 0);
    int p[2];
    ASSERT_EQ(pipe(p), 0);
    ASSERT_EQ(write(p[1], "xy", 2), 2);
    const int closed = dup(fd);
    ASSERT_GE(closed, 0);
    close(closed);
    static char buf[4096];
    struct call {
        long nr;
        long a0, a1, a2, a3;
    };
    const std::vector<call> calls = {
        {SYS_pread64, fd, reinterpret_cast<long>(buf), 4096, -1},          // EINVAL
        {SYS_pread64, fd, reinterpret_cast<long>(buf), 4096, 2 * 4096 + 100},  // short, at EOF
        {SYS_pread64, fd, reinterpret_cast<long>(buf), 4096, 1L << 40},    // past EOF: 0
        {SYS_pread64, fd, 0, 4096, 0},                                       // NULL buffer: EFAULT
        {SYS_pread64, fd, reinterpret_cast<long>(buf), 0, 0},               // length 0
        {SYS_pread64, fd, reinterpret_cast<long>(buf), (1L << 32) + 4096, 2 * 4096},  // > 4 GiB, near EOF
        {SYS_pread64, closed, reinterpret_cast<long>(buf), 4096, 0},        // EBADF
        {SYS_pread64, p[0], reinterpret_cast<long>(buf), 1, 0},             // ESPIPE
        {SYS_read, p[0], reinterpret_cast<long>(buf), 1, 0},                // a pipe byte
        {SYS_read, fd, reinterpret_cast<long>(buf), 4096, 0},               // at the file position
        {SYS_read, -1, reinterpret_cast<long>(buf), 1, 0},                  // EBADF
    };
    struct run {
        const std::vector<call> *calls;
        std::vector<long> res;
    } r{&calls, {}};
    auto fn = [](void *a) -> long {
        auto *x = static_cast<run *>(a);
        for (const call &c : *x->calls) x->res.push_back(asys_call(c.nr, c.a0, c.a1, c.a2, c.a3));
        return 0;
    };
    ASSERT_EQ(lseek(fd, 0, SEEK_SET), 0);
    asys_op op = threadlet_op(fn, &r, nullptr);
    EXPECT_EQ(asys_test::run(ctx, op), 0);
    ASSERT_EQ(r.res.size(), calls.size());
    // The plain calls, from the same state: the pipe holds "xy" again, the
    // file position is back at 0.
    ASSERT_EQ(write(p[1], "x", 1), 1);
    ASSERT_EQ(lseek(fd, 0, SEEK_SET), 0);
    ASSERT_EQ(read(p[0], buf, 1), 1);  // the 'y' the threadlet left
    ASSERT_EQ(write(p[1], "y", 1), 1);
    for (size_t i = 0; i < calls.size(); ++i) {
        const call &c = calls[i];
        const long plain = syscall(c.nr, c.a0, c.a1, c.a2, c.a3);
        EXPECT_EQ(r.res[i], plain < 0 ? -errno : plain) << "call " << i;
    }
    close(p[0]);
    close(p[1]);
    close(fd);
}

TEST(Threadlet, ThreadSelfCallsRunOnTheOwnerThread) {
    ctx_guard ctx;
    struct masks {
        sigset_t before, inside;
        long rc = -1;
    } m;
    sigemptyset(&m.before);
    sigemptyset(&m.inside);
    auto fn = [](void *a) -> long {
        auto *mm = static_cast<masks *>(a);
        sigset_t add;
        sigemptyset(&add);
        sigaddset(&add, SIGUSR2);
        // rt_sigprocmask is on the deny list: through asys_call it acts on
        // the owner thread, as a plain call would.
        mm->rc = asys_call(SYS_rt_sigprocmask, SIG_BLOCK, &add, &mm->before, sizeof(uint64_t));
        return asys_call(SYS_rt_sigprocmask, SIG_SETMASK, &mm->before, &mm->inside, sizeof(uint64_t));
    };
    long ret = -1;
    asys_op op = threadlet_op(fn, &m, &ret);
    ASSERT_EQ(asys_submit(ctx, &op), ASYS_DONE);
    EXPECT_EQ(m.rc, 0);
    EXPECT_EQ(ret, 0);
    EXPECT_TRUE(sigismember(&m.inside, SIGUSR2)) << "the owner's mask changed";
    sigset_t now;
    pthread_sigmask(SIG_SETMASK, nullptr, &now);
    EXPECT_FALSE(sigismember(&now, SIGUSR2)) << "and was restored";
}

TEST(Threadlet, BadArgumentsAreRefused) {
    ctx_guard ctx;
    long ret;
    asys_op op = threadlet_op(nullptr, nullptr, &ret);
    EXPECT_EQ(asys_submit(ctx, &op), -EFAULT);
    op = threadlet_op(read_pipe, nullptr, &ret, 0, 0x80);
    EXPECT_EQ(asys_submit(ctx, &op), -EINVAL);
    op = threadlet_op(read_pipe, nullptr, &ret);
    op.args[3] = 1;
    EXPECT_EQ(asys_submit(ctx, &op), -EINVAL);
    EXPECT_STREQ(asys_opcode_name(ASYS_OP_THREADLET), "threadlet");
}

// 10,000 threadlets parked at once on reads of one pipe: each needs room
// for itself and its call; memory per parked threadlet is its touched
// stack pages and two slots.
TEST(Threadlet, TenThousandParkedThreadlets) {
    constexpr unsigned kN = 10000;
    rlimit nofile{};
    asys_params prm = params(0, 2 * kN + 64);
    ctx_guard ctx(&prm);
    (void)nofile;
    pipe_pair p;
    std::vector<pipe_reader> r(kN, pipe_reader{p.r});
    std::vector<long> ret(kN, -999);
    for (auto &x : r) x.len = 1;
    auto rss = [] {
        long pages = 0, res = 0;
        FILE *f = fopen("/proc/self/statm", "r");
        if (f) {
            if (fscanf(f, "%ld %ld", &pages, &res) != 2) res = 0;
            fclose(f);
        }
        return res * sysconf(_SC_PAGESIZE);
    };
    const long before = rss();
    const unsigned threads_before = thread_count();
    for (unsigned i = 0; i < kN; ++i) {
        asys_op op = threadlet_op(read_pipe, &r[i], &ret[i], i);
        ASSERT_EQ(asys_submit(ctx, &op), 0) << i;
    }
    const long after = rss();
    const double per = static_cast<double>(after - before) / kN;
    RecordProperty("resident_bytes_per_parked_threadlet", std::to_string(per));
    printf("resident bytes per parked threadlet: %.0f (threads: %u)\n", per, thread_count());
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
#if defined(__has_feature)
#if !__has_feature(address_sanitizer) && !__has_feature(thread_sanitizer)
    EXPECT_LE(per, 16 * 1024.0);
#endif
#else
    EXPECT_LE(per, 16 * 1024.0);
#endif
#endif
    // Parked threadlets take no thread; their calls wait on the ring (no
    // thread) or the pool (its fixed workers; io-wq is capped the same).
    EXPECT_LE(thread_count(), threads_before + stats(ctx).workers) << "bounded by the context's workers";
    std::string bytes(kN, 'z');
    ASSERT_EQ(write(p.w, bytes.data(), kN), static_cast<ssize_t>(kN));
    auto c = reap(ctx, kN, 120);
    ASSERT_EQ(c.size(), kN);
    for (unsigned i = 0; i < kN; ++i) {
        ASSERT_EQ(ret[i], 1) << i;
        ASSERT_EQ(r[i].buf[0], 'z');
        ASSERT_EQ(r[i].tid_after, gettid_now());
    }
}

// ---------------------------------------------------------------- asys_async
TEST(Async, RunsInlineWhenTheCallWouldNotBlock) {
    long st = -999;
    ASSERT_EQ(asys_async(&st, SYS_getpid), ASYS_DONE);
    EXPECT_EQ(st, getpid());
    pipe_pair p;
    ASSERT_EQ(write(p.w, "q", 1), 1);
    char c = 0;
    ASSERT_EQ(asys_async(&st, SYS_read, p.r, &c, 1), ASYS_DONE);
    EXPECT_EQ(st, 1);
    EXPECT_EQ(c, 'q');
    asys_cqe cqe;
    EXPECT_EQ(asys_peek(asys_default_ctx(), &cqe, 1), 0) << "inline: no completion entry";
}

TEST(Async, RefusesWhatGenericSubmissionRefuses) {
    long st = -999;
    EXPECT_EQ(asys_async(&st, SYS_fork), -EPERM);
    EXPECT_EQ(asys_async(&st, SYS_rt_sigprocmask, SIG_BLOCK, nullptr, nullptr, 8), -EPERM);
    EXPECT_EQ(asys_async(&st, 5000), -ENOSYS);
    EXPECT_EQ(st, -999);
}

TEST(Async, ThousandOutstandingCallsCompleteThroughTheDefaultContext) {
    constexpr unsigned kN = 1000;
    asys_ctx *dflt = asys_default_ctx();
    ASSERT_NE(dflt, nullptr);
    pipe_pair p;
    std::vector<long> status(kN, -999);
    std::vector<char> buf(kN, 0);
    for (unsigned i = 0; i < kN; ++i)
        ASSERT_EQ(asys_async(&status[i], SYS_read, p.r, &buf[i], 1), 0) << i;
    asys_cqe none;
    EXPECT_EQ(asys_peek(dflt, &none, 1), 0) << "nothing completed before the data";
    std::string bytes(kN, 'k');
    ASSERT_EQ(write(p.w, bytes.data(), kN), static_cast<ssize_t>(kN));
    auto c = reap(dflt, kN, 120);
    ASSERT_EQ(c.size(), kN);
    std::vector<bool> seen(kN, false);
    for (const asys_cqe &e : c) {
        auto *s = reinterpret_cast<long *>(e.user_data);
        ASSERT_TRUE(s >= status.data() && s < status.data() + kN) << "user_data is the status pointer";
        const size_t i = static_cast<size_t>(s - status.data());
        EXPECT_FALSE(seen[i]);
        seen[i] = true;
        EXPECT_EQ(e.res, 1);
        EXPECT_EQ(*s, 1);
        EXPECT_EQ(buf[i], 'k');
    }
}

TEST(Async, CompletionCanBePolledThroughTheEventfd) {
    asys_ctx *dflt = asys_default_ctx();
    const int efd = asys_ctx_fd(dflt);
    ASSERT_GE(efd, 0);
    pipe_pair p;
    long st = -999;
    char c = 0;
    ASSERT_EQ(asys_async(&st, SYS_read, p.r, &c, 1), 0);
    EXPECT_FALSE(readable(efd, 0));
    ASSERT_EQ(write(p.w, "e", 1), 1);
    ASSERT_TRUE(readable(efd, 30000));
    asys_cqe cqe{};
    ASSERT_EQ(asys_peek(dflt, &cqe, 1), 1);
    EXPECT_EQ(cqe.user_data, reinterpret_cast<uint64_t>(&st));
    EXPECT_EQ(st, 1);
    EXPECT_EQ(c, 'e');
}
