// No public function changes errno (asys.h: "never touches errno";
// docs/api.md; docs/socket.md). Every function of the public C headers —
// the exported asys_* functions of asys.h, syslet.h and socket.h, and the
// headers' static inline ones (the prep helpers, the seed's syslet names) —
// is called with errno set to a sentinel, in failing ways (NULL pointers,
// NULL / garbage / destroyed / forked-away handles, bad flags, unknown
// opcodes, denied calls, full contexts, bad descriptors, missing socket
// paths, callbacks that wait) and in succeeding ways (inline, punted, on
// the pool and on the ring, waits that sleep), and errno must still be the
// sentinel afterwards. Exhausted resources (descriptors, threads, memory,
// io_uring refused by a seccomp filter) run in forked children, so the
// limits cannot disturb anything else.
//
// ErrnoCoverage.EveryPublicFunctionIsCalled reads the three headers and fails
// naming any function none of the scenarios called.
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/close_range.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "asys/asys.h"
#include "asys/socket.h"
#include "asys/syslet.h"
#include "helpers.hpp"

namespace {

using namespace asys_test;

constexpr int kSentinel = 12345;  // no system call sets this errno

// ------------------------------------------------------------ bookkeeping

/// Functions called through KEEPS_ERRNO in this process.
std::set<std::string> &called() {
    static std::set<std::string> s;
    return s;
}

/// In a forked child, failures are collected here and sent to the parent.
bool g_in_child = false;
std::string g_child_failures;

void fail(const char *file, int line, const std::string &msg) {
    if (g_in_child) {
        g_child_failures += std::string(file) + ":" + std::to_string(line) + ": " + msg + "\n";
        return;
    }
    ADD_FAILURE_AT(file, line) << msg;
}

std::string errno_text(int e) {
    const char *name = strerrorname_np(e);
    return std::to_string(e) + " (" + (name ? name : "not an errno") + ")";
}

template <class T>
std::string show(T v) {
    if constexpr (std::is_pointer_v<T>) {
        char b[32];
        std::snprintf(b, sizeof b, "%p", reinterpret_cast<const void *>(v));
        return b;
    } else {
        return std::to_string(static_cast<long long>(v));
    }
}

template <class T>
long long as_ll(T v) {
    if constexpr (std::is_pointer_v<T>)
        return static_cast<long long>(reinterpret_cast<uintptr_t>(v));
    else
        return static_cast<long long>(v);
}

long long g_last;  // the last KEEPS_ERRNO call's result

/// Calls fn args with errno = kSentinel; fails if errno changed, or if the
/// result (got_) does not satisfy the condition.
#define KEEPS_ERRNO(fn, args, ...)                                                              \
    do {                                                                                        \
        called().insert(#fn);                                                                   \
        errno = kSentinel;                                                                      \
        const auto got_ = fn args;                                                              \
        const int errno_ = errno;                                                               \
        errno = 0;                                                                              \
        g_last = as_ll(got_);                                                                   \
        if (errno_ != kSentinel)                                                                \
            fail(__FILE__, __LINE__,                                                            \
                 std::string("ERRNO CHANGED: " #fn #args " set errno to ") + errno_text(errno_) + \
                     ", returning " + show(got_));                                              \
        if (!(__VA_ARGS__))                                                                     \
            fail(__FILE__, __LINE__,                                                            \
                 std::string(#fn #args " returned ") + show(got_) + ", expected " #__VA_ARGS__); \
    } while (0)

#define KEEPS_ERRNO_VOID(fn, args)                                                              \
    do {                                                                                        \
        called().insert(#fn);                                                                   \
        errno = kSentinel;                                                                      \
        fn args;                                                                                \
        const int errno_ = errno;                                                               \
        errno = 0;                                                                              \
        if (errno_ != kSentinel)                                                                \
            fail(__FILE__, __LINE__,                                                            \
                 std::string("ERRNO CHANGED: " #fn #args " set errno to ") + errno_text(errno_)); \
    } while (0)

/// A plain check that works in the parent and in a forked child.
#define VERIFY(cond)                                                                  \
    do {                                                                              \
        if (!(cond)) fail(__FILE__, __LINE__, "check failed: " #cond);                \
    } while (0)

/// An errno observed on another thread (a waiter, a callback), checked here.
#define VERIFY_ERRNO(what, observed)                                                  \
    do {                                                                              \
        const int o_ = (observed);                                                    \
        if (o_ != kSentinel)                                                          \
            fail(__FILE__, __LINE__,                                                  \
                 std::string("ERRNO CHANGED: ") + (what) + " set errno to " + errno_text(o_)); \
    } while (0)

/// Waits (bounded, yielding) until pred() holds: a condition, not a sleep.
template <class Pred>
bool eventually(Pred pred, int seconds = 30) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
    while (!pred()) {
        if (std::chrono::steady_clock::now() > until) return false;
        std::this_thread::yield();
    }
    return true;
}

/// Reaps the completion of an op whose submit returned rc (0: punted).
void settle(asys_ctx *ctx, long long rc, unsigned n = 1) {
    if (rc != 0) return;
    std::vector<asys_cqe> c(n);
    unsigned got = 0;
    while (got < n) {
        const struct timespec ts{30, 0};
        const int r = asys_wait(ctx, 1, &ts, c.data() + got, n - got);
        if (r <= 0) {
            fail(__FILE__, __LINE__, "reaping: asys_wait returned " + std::to_string(r));
            return;
        }
        got += static_cast<unsigned>(r);
    }
}

/// Sets (or unsets, value NULL) an environment variable for a scope.
struct env_override {
    std::string name, old;
    bool had;
    env_override(const char *n, const char *value) : name(n) {
        const char *o = getenv(n);
        had = o != nullptr;
        if (had) old = o;
        if (value) setenv(n, value, 1);
        else unsetenv(n);
    }
    ~env_override() {
        if (had) setenv(name.c_str(), old.c_str(), 1);
        else unsetenv(name.c_str());
    }
};

/// Runs body in a forked child (which has one thread: this one) and returns
/// what failed there ("" if nothing). A hung child is killed after
/// timeout_s and reported.
std::string run_in_child(const std::function<void()> &body, int timeout_s = 120) {
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) return "pipe2 failed\n";
    std::fflush(nullptr);
    const pid_t pid = fork();
    if (pid < 0) {
        close(p[0]);
        close(p[1]);
        return "fork failed\n";
    }
    if (pid == 0) {
        close(p[0]);
        g_in_child = true;
        g_child_failures.clear();
        body();
        const std::string &s = g_child_failures;
        for (size_t off = 0; off < s.size();) {
            const ssize_t n = write(p[1], s.data() + off, s.size() - off);
            if (n <= 0) break;
            off += static_cast<size_t>(n);
        }
        _exit(0);
    }
    close(p[1]);
    std::string out;
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
    for (;;) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                              until - std::chrono::steady_clock::now()).count();
        if (left <= 0) {
            kill(pid, SIGKILL);
            out += "the child hung (killed after " + std::to_string(timeout_s) + " s)\n";
            break;
        }
        struct pollfd pf{p[0], POLLIN, 0};
        const int r = poll(&pf, 1, static_cast<int>(left));
        if (r <= 0) continue;  // EINTR or time: the loop checks the deadline
        char buf[4096];
        const ssize_t n = read(p[0], buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        out.append(buf, static_cast<size_t>(n));
    }
    close(p[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        out += "the child ended abnormally (wait status " + std::to_string(status) + ")\n";
    return out;
}

#define EXPECT_CHILD_CLEAN(...)                                \
    do {                                                       \
        const std::string f_ = run_in_child(__VA_ARGS__);      \
        EXPECT_TRUE(f_.empty()) << "in the forked child:\n" << f_; \
    } while (0)

/// Installs a seccomp filter on this (single-threaded, forked) process that
/// fails each listed system call with its errno. False if it cannot.
bool refuse_syscalls(const std::vector<std::pair<long, int>> &calls) {
#if defined(__x86_64__)
    constexpr uint32_t kArch = AUDIT_ARCH_X86_64;
#elif defined(__aarch64__)
    constexpr uint32_t kArch = AUDIT_ARCH_AARCH64;
#else
    (void)calls;
    return false;
#endif
#if defined(__x86_64__) || defined(__aarch64__)
    std::vector<sock_filter> f;
    f.push_back(BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)));
    f.push_back(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, kArch, 1, 0));
    f.push_back(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
    f.push_back(BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)));
    for (const auto &[nr, err] : calls) {
        f.push_back(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, static_cast<uint32_t>(nr), 0, 1));
        f.push_back(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (static_cast<uint32_t>(err) & SECCOMP_RET_DATA)));
    }
    f.push_back(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
    struct sock_fprog prog {};
    prog.len = static_cast<unsigned short>(f.size());
    prog.filter = f.data();
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return false;
    return syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) == 0;
#endif
}

/// Fills the descriptor table up to a low limit; restores both on scope exit.
struct fds_exhausted {
    struct rlimit old {};
    std::vector<int> fill;
    bool ok = false;
    fds_exhausted() {
        if (getrlimit(RLIMIT_NOFILE, &old) != 0) return;
        struct rlimit low = old;
        low.rlim_cur = 256;
        const int base = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (base < 0) return;
        fill.push_back(base);
        if (setrlimit(RLIMIT_NOFILE, &low) != 0) return;
        for (int fd; (fd = fcntl(base, F_DUPFD_CLOEXEC, 0)) >= 0;) fill.push_back(fd);
        ok = errno == EMFILE;
    }
    ~fds_exhausted() {
        for (int fd : fill) close(fd);
        setrlimit(RLIMIT_NOFILE, &old);
    }
};

syslet_uatom make_atom(unsigned long nr, unsigned long flags, long *ret) {
    syslet_uatom a;
    std::memset(&a, 0, sizeof a);
    a.nr = nr;
    a.flags = flags;
    a.ret_ptr = ret;
    return a;
}

/// This test's source tree (for the header scan).
std::filesystem::path source_root() {
    return std::filesystem::path(__FILE__).parent_path().parent_path();
}

asys_ctx *const kNone = nullptr;
asys_ctx *const kJunk = reinterpret_cast<asys_ctx *>(uintptr_t{0x1000});  // no generation tag

// ============================================================ scenarios

/// asys_ctx_create / destroy / fd / stats / info.
void scenario_context() {
    asys_ctx *ctx = nullptr;
    asys_params p{};
    asys_stats st;
    asys_info info;

    // Failing creations.
    KEEPS_ERRNO(asys_ctx_create, (&p, nullptr), got_ == -EFAULT);
    p = asys_params{};
    p.reserved16 = 1;
    KEEPS_ERRNO(asys_ctx_create, (&p, &ctx), got_ == -EINVAL);
    p = asys_params{};
    p.flags = 1u << 20;
    KEEPS_ERRNO(asys_ctx_create, (&p, &ctx), got_ == -EINVAL);
    p = asys_params{};
    p.flags = ASYS_CTX_INLINE_NEVER | ASYS_CTX_INLINE_ALWAYS;
    KEEPS_ERRNO(asys_ctx_create, (&p, &ctx), got_ == -EINVAL);
    p = asys_params{};
    p.workers = 1000000;
    KEEPS_ERRNO(asys_ctx_create, (&p, &ctx), got_ == -EINVAL);
    p = asys_params{};
    p.max_inflight = 1u << 30;
    KEEPS_ERRNO(asys_ctx_create, (&p, &ctx), got_ == -EINVAL);
    p = asys_params{};
    p.max_inflight = 64;
    p.ring_entries = 8;
    KEEPS_ERRNO(asys_ctx_create, (&p, &ctx), got_ == -EINVAL);
    p = asys_params{};
    p.backend = 7;
    KEEPS_ERRNO(asys_ctx_create, (&p, &ctx), got_ == -EINVAL);
    {
        env_override env("ASYS_BACKEND", "bogus");
        p = asys_params{};
        KEEPS_ERRNO(asys_ctx_create, (&p, &ctx), got_ == -EINVAL);
        KEEPS_ERRNO(asys_ctx_create, (nullptr, &ctx), got_ == -EINVAL);
    }

    // NULL and garbage handles.
    KEEPS_ERRNO(asys_ctx_destroy, (kNone, ASYS_DESTROY_DRAIN), got_ == -EINVAL);
    KEEPS_ERRNO(asys_ctx_destroy, (kJunk, ASYS_DESTROY_DRAIN), got_ == -EBADF);
    KEEPS_ERRNO(asys_ctx_fd, (kNone), got_ == -EINVAL);
    KEEPS_ERRNO(asys_ctx_fd, (kJunk), got_ == -EBADF);
    KEEPS_ERRNO(asys_ctx_stats, (kNone, &st), got_ == -EINVAL);
    KEEPS_ERRNO(asys_ctx_stats, (kJunk, &st), got_ == -EBADF);
    KEEPS_ERRNO(asys_ctx_info, (kNone, &info), got_ == -EINVAL);
    KEEPS_ERRNO(asys_ctx_info, (kJunk, &info), got_ == -EBADF);
    asys_metrics met{};
    KEEPS_ERRNO(asys_ctx_metrics, (kNone, &met), got_ == -EINVAL);
    KEEPS_ERRNO(asys_ctx_metrics, (kJunk, &met), got_ == -EBADF);

    // Default parameters (workers from the CPU count), every call, destroy.
    ctx = nullptr;
    KEEPS_ERRNO(asys_ctx_create, (nullptr, &ctx), got_ == 0);
    if (!ctx) return;
    KEEPS_ERRNO(asys_ctx_fd, (ctx), got_ >= 0);  // makes the eventfd
    KEEPS_ERRNO(asys_ctx_fd, (ctx), got_ >= 0);
    KEEPS_ERRNO(asys_ctx_stats, (ctx, &st), got_ == 0);
    KEEPS_ERRNO(asys_ctx_stats, (ctx, nullptr), got_ == -EFAULT);
    KEEPS_ERRNO(asys_ctx_info, (ctx, &info), got_ == 0);
    KEEPS_ERRNO(asys_ctx_info, (ctx, nullptr), got_ == -EFAULT);
    KEEPS_ERRNO(asys_ctx_metrics, (ctx, &met), got_ == 0);
    KEEPS_ERRNO(asys_ctx_metrics, (ctx, nullptr), got_ == -EFAULT);
    char text[64];
    KEEPS_ERRNO(asys_metrics_format, (&met, ASYS_METRICS_PROMETHEUS, text, sizeof text), got_ > 64);
    KEEPS_ERRNO(asys_metrics_format, (&met, 9u, text, sizeof text), got_ == -EINVAL);
    KEEPS_ERRNO(asys_metrics_format, (nullptr, ASYS_METRICS_TEXT, text, sizeof text), got_ == -EFAULT);
    KEEPS_ERRNO(asys_ctx_destroy, (ctx, 7u), got_ == -EINVAL);
    KEEPS_ERRNO(asys_ctx_destroy, (ctx, ASYS_DESTROY_DRAIN), got_ == 0);
    // Destroyed.
    KEEPS_ERRNO(asys_ctx_destroy, (ctx, ASYS_DESTROY_DRAIN), got_ == -EBADF);
    KEEPS_ERRNO(asys_ctx_fd, (ctx), got_ == -EBADF);
    KEEPS_ERRNO(asys_ctx_stats, (ctx, &st), got_ == -EBADF);
    KEEPS_ERRNO(asys_ctx_info, (ctx, &info), got_ == -EBADF);

    // Each backend, destroyed with ops in flight (drained, and cancelled:
    // the pool interrupts its worker, the ring cancels in the kernel).
    for (unsigned backend : {ASYS_BACKEND_AUTO, ASYS_BACKEND_POOL, ASYS_BACKEND_URING}) {
        for (unsigned how : {ASYS_DESTROY_DRAIN, ASYS_DESTROY_CANCEL}) {
            parked_read parked;
            p = params(2, 16, 0, backend);
            ctx = nullptr;
            KEEPS_ERRNO(asys_ctx_create, (&p, &ctx), got_ == 0 || backend == ASYS_BACKEND_URING);
            if (!ctx) continue;  // no io_uring here: the auto and pool rounds cover it
            KEEPS_ERRNO(asys_ctx_info, (ctx, &info), got_ == 0);
            VERIFY(parked.submit(ctx, 1, 0) == 0);  // an empty pipe: punted
            if (how == ASYS_DESTROY_DRAIN) VERIFY(parked.release() == 1);
            KEEPS_ERRNO(asys_ctx_destroy, (ctx, how), got_ == 0);
        }
    }
}

/// A callback that notes errno as it was called (the library must not have
/// touched it before the call, when the callback runs on the submitter).
struct inline_cb {
    std::atomic<int> entry_errno{-1};
    std::atomic<int> calls{0};
    static void cb(const asys_cqe *, void *arg) {
        auto *c = static_cast<inline_cb *>(arg);
        c->entry_errno = errno;
        ++c->calls;
    }
};

/// asys_submit: refused ops, then ops that run inline, punted, or fail.
void scenario_submit() {
    temp_dir dir;
    const int file = make_file(dir.file("f"), 8192);
    VERIFY(file >= 0);
    char buf[4096];
    long res = 0;
    asys_op op;
    asys_params p = params(2, 16);
    ctx_guard ctx(&p);
    if (!ctx.ctx) return;

    // ---- refused
    asys_prep_nop(&op, 1);
    KEEPS_ERRNO(asys_submit, (kNone, &op), got_ == -EINVAL);
    KEEPS_ERRNO(asys_submit, (kJunk, &op), got_ == -EBADF);
    KEEPS_ERRNO(asys_submit, (ctx.ctx, nullptr), got_ == -EFAULT);
    alignas(16) unsigned char raw[sizeof(asys_op) + 16];
    std::memcpy(raw + 4, &op, sizeof op);
    const auto *mis = reinterpret_cast<const asys_op *>(raw + 4);
    KEEPS_ERRNO(asys_submit, (ctx.ctx, mis), got_ == -EINVAL);
    op.opcode = ASYS_OP__COUNT;
    KEEPS_ERRNO(asys_submit, (ctx.ctx, &op), got_ == -EINVAL);
    op.opcode = 0xffff;
    KEEPS_ERRNO(asys_submit, (ctx.ctx, &op), got_ == -EINVAL);
    asys_prep_nop(&op, 1);
    op.flags = 1u << 20;
    KEEPS_ERRNO(asys_submit, (ctx.ctx, &op), got_ == -EINVAL);
    asys_prep_nop(&op, 1);
    op.reserved[0] = 1;
    KEEPS_ERRNO(asys_submit, (ctx.ctx, &op), got_ == -EINVAL);
    asys_prep_nop(&op, 1);
    op.nr = SYS_getpid;
    KEEPS_ERRNO(asys_submit, (ctx.ctx, &op), got_ == -EINVAL);
    asys_prep_nop(&op, 1);
    op.cb_arg = &res;
    KEEPS_ERRNO(asys_submit, (ctx.ctx, &op), got_ == -EINVAL);
    asys_prep_nop(&op, 1);
    op.flags = ASYS_F_SYNC | ASYS_F_ASYNC;
    KEEPS_ERRNO(asys_submit, (ctx.ctx, &op), got_ == -EINVAL);
    op.flags = ASYS_F_NOWAIT | ASYS_F_ASYNC;
    KEEPS_ERRNO(asys_submit, (ctx.ctx, &op), got_ == -EINVAL);
    asys_prep_chain(&op, nullptr, nullptr);
    KEEPS_ERRNO(asys_submit, (ctx.ctx, &op), got_ == -EFAULT);

    // Refused system calls: by number, and by argument.
    uint64_t args[6] = {};
    asys_prep_syscall(&op, SYS_execve, args);
    KEEPS_ERRNO(asys_submit, (ctx.ctx, &op), got_ == -EPERM);
    asys_prep_syscall(&op, SYS_rt_sigtimedwait, args);
    KEEPS_ERRNO(asys_submit, (ctx.ctx, &op), got_ == -EPERM);
    asys_prep_syscall(&op, -1, args);
    KEEPS_ERRNO(asys_submit, (ctx.ctx, &op), got_ == -ENOSYS);
    asys_prep_syscall(&op, 5000, args);
    KEEPS_ERRNO(asys_submit, (ctx.ctx, &op), got_ == -ENOSYS);
    uint64_t mask = 0;
    {
        const uint64_t a[6] = {0, 0, 0, ASYS_U64(&mask), 8, 0};  // ppoll with a signal mask
        asys_prep_syscall(&op, SYS_ppoll, a);
        KEEPS_ERRNO(asys_submit, (ctx.ctx, &op), got_ == -EPERM);
    }
    {
        const uint64_t pair[2] = {ASYS_U64(&mask), 8};
        const uint64_t a[6] = {0, 0, 0, 0, 0, ASYS_U64(pair)};  // pselect6 with a mask
        asys_prep_syscall(&op, SYS_pselect6, a);
        KEEPS_ERRNO(asys_submit, (ctx.ctx, &op), got_ == -EPERM);
        const uint64_t bad[6] = {0, 0, 0, 0, 0, 0x1000};  // a bad pair: left to the call
        asys_prep_syscall(&op, SYS_pselect6, bad);
        op.ret_ptr = &res;
        KEEPS_ERRNO(asys_submit, (ctx.ctx, &op), got_ == 0 || got_ == ASYS_DONE);
        settle(ctx, g_last);
    }
    {
        const int ep = epoll_create1(EPOLL_CLOEXEC);
        struct epoll_event ev[1];
        const uint64_t a[6] = {static_cast<uint64_t>(ep), ASYS_U64(ev), 1, 0, ASYS_U64(&mask), 8};
        asys_prep_syscall(&op, SYS_epoll_pwait, a);
        KEEPS_ERRNO(asys_submit, (ctx.ctx, &op), got_ == -EPERM);
        close(ep);
    }
    {
        uint64_t lib = uint64_t{1} << (SIGRTMAX - 3 - 1);  // the library's signal
        const uint64_t a[6] = {static_cast<uint64_t>(-1), ASYS_U64(&lib), 8, 0, 0, 0};
        asys_prep_syscall(&op, SYS_signalfd4, a);
        KEEPS_ERRNO(asys_submit, (ctx.ctx, &op), got_ == -EPERM);
        const uint64_t c[6] = {900, 900, CLOSE_RANGE_UNSHARE, 0, 0, 0};
        asys_prep_syscall(&op, SYS_close_range, c);
        KEEPS_ERRNO(asys_submit, (ctx.ctx, &op), got_ == -EPERM);
    }

    // NOWAIT ops that would block.
    {
        pipe_pair pp;
        char b;
        asys_prep_read(&op, pp.r, &b, 1);
        op.flags = ASYS_F_NOWAIT;
        KEEPS_ERRNO(asys_submit, (ctx.ctx, &op), got_ == -EAGAIN);
        const std::string fifo = dir.file("fifo");
        VERIFY(mkfifo(fifo.c_str(), 0600) == 0);
        asys_prep_openat(&op, AT_FDCWD, fifo.c_str(), O_RDONLY | O_CLOEXEC, 0);
        op.flags = ASYS_F_NOWAIT;  // the probe opens it nonblocking, closes it again
        KEEPS_ERRNO(asys_submit, (ctx.ctx, &op), got_ == -EAGAIN);
        int sv[2];
        VERIFY(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
        struct linger lg{1, 5};
        VERIFY(setsockopt(sv[0], SOL_SOCKET, SO_LINGER, &lg, sizeof lg) == 0);
        asys_prep_close(&op, sv[0]);
        op.flags = ASYS_F_NOWAIT;  // a lingering close may wait
        KEEPS_ERRNO(asys_submit, (ctx.ctx, &op), got_ == -EAGAIN);
        close(sv[0]);
        close(sv[1]);
    }

    // ---- accepted: inline, punted, and results that are errors
    asys_prep_nop(&op, 7);
    op.ret_ptr = &res;
    KEEPS_ERRNO(asys_submit, (ctx.ctx, &op), got_ == ASYS_DONE);
    asys_prep_pread(&op, file, buf, sizeof buf, 0);  // cached: inline, through the guard
    op.ret_ptr = &res;
    KEEPS_ERRNO(asys_submit, (ctx.ctx, &op), got_ == ASYS_DONE || got_ == 0);
    settle(ctx, g_last);
    asys_prep_pread(&op, file, buf, 100, 4000);  // short at EOF? no: in the file
    op.ret_ptr = &res;
    op.flags = ASYS_F_BUFFERED;
    KEEPS_ERRNO(asys_submit, (ctx.ctx, &op), got_ == ASYS_DONE || got_ == 0);
    settle(ctx, g_last);
    asys_prep_pread(&op, file, buf, sizeof buf, 6000);  // short: ends at EOF
    op.ret_ptr = &res;
    KEEPS_ERRNO(asys_submit, (ctx.ctx, &op), got_ == ASYS_DONE || got_ == 0);
    settle(ctx, g_last);
    asys_prep_read(&op, -1, buf, 1);
    op.ret_ptr = &res;
    KEEPS_ERRNO(asys_submit, (ctx.ctx, &op), got_ == ASYS_DONE && res == -EBADF);
    asys_prep_pread(&op, file, buf, 10, -5);  // EINVAL, from the pool
    op.ret_ptr = &res;
    KEEPS_ERRNO(asys_submit, (ctx.ctx, &op), got_ == ASYS_DONE || got_ == 0);
    settle(ctx, g_last);
    VERIFY(res == -EINVAL);
    {
        // Bad buffers: the guard's path (-EFAULT, never a crash), and a bad
        // iovec array (read through the kernel).
        void *const none = mmap(nullptr, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        VERIFY(none != MAP_FAILED);
        asys_prep_pread(&op, file, none, 4096, 0);
        op.ret_ptr = &res;
        KEEPS_ERRNO(asys_submit, (ctx.ctx, &op), got_ == ASYS_DONE || got_ == 0);
        settle(ctx, g_last);
        VERIFY(res == -EFAULT);
        asys_prep_preadv(&op, file, none, 2, 0, 0);
        op.ret_ptr = &res;
        KEEPS_ERRNO(asys_submit, (ctx.ctx, &op), got_ == ASYS_DONE || got_ == 0);
        settle(ctx, g_last);
        VERIFY(res == -EFAULT);
        munmap(none, 4096);
    }
    {
        struct iovec iov[2] = {{buf, 512}, {buf + 512, 512}};
        asys_prep_preadv(&op, file, iov, 2, 0, 0);
        op.ret_ptr = &res;
        KEEPS_ERRNO(asys_submit, (ctx.ctx, &op), got_ == ASYS_DONE || got_ == 0);
        settle(ctx, g_last);
        VERIFY(res == 1024);
    }
    asys_prep_openat(&op, AT_FDCWD, dir.file("missing").c_str(), O_RDONLY, 0);
    op.ret_ptr = &res;
    KEEPS_ERRNO(asys_submit, (ctx.ctx, &op), got_ == ASYS_DONE || got_ == 0);
    settle(ctx, g_last);
    VERIFY(res == -ENOENT);
    const std::string fpath = dir.file("f");
    asys_prep_openat(&op, AT_FDCWD, fpath.c_str(), O_RDONLY | O_CLOEXEC, 0);
    op.ret_ptr = &res;
    KEEPS_ERRNO(asys_submit, (ctx.ctx, &op), got_ == ASYS_DONE || got_ == 0);
    settle(ctx, g_last);
    VERIFY(res >= 0);
    asys_prep_close(&op, static_cast<int>(res));
    op.ret_ptr = &res;
    KEEPS_ERRNO(asys_submit, (ctx.ctx, &op), got_ == ASYS_DONE && res == 0);
    {
        // A FIFO opened read-write: the probe opens it, sees a FIFO, closes
        // it and punts; the pool opens it (read-write never waits).
        const std::string fifo = dir.file("fifo2");
        VERIFY(mkfifo(fifo.c_str(), 0600) == 0);
        asys_prep_openat(&op, AT_FDCWD, fifo.c_str(), O_RDWR | O_CLOEXEC, 0);
        op.ret_ptr = &res;
        KEEPS_ERRNO(asys_submit, (ctx.ctx, &op), got_ == 0);
        settle(ctx, g_last);
        VERIFY(res >= 0);
        if (res >= 0) close(static_cast<int>(res));
    }
    // The library's own descriptors are left alone (-EBADF).
    const int lib_fd = asys_ctx_fd(ctx);
    asys_prep_close(&op, lib_fd);
    op.ret_ptr = &res;
    KEEPS_ERRNO(asys_submit, (ctx.ctx, &op), got_ == ASYS_DONE && res == -EBADF);
    {
        const uint64_t a[6] = {0, static_cast<uint64_t>(lib_fd), 0, 0, 0, 0};
        asys_prep_syscall(&op, SYS_dup2, a);
        op.ret_ptr = &res;
        KEEPS_ERRNO(asys_submit, (ctx.ctx, &op), got_ == ASYS_DONE || got_ == 0);
        settle(ctx, g_last);
        VERIFY(res == -EBADF);
        const int high = fcntl(0, F_DUPFD_CLOEXEC, 900);
        const uint64_t c[6] = {static_cast<uint64_t>(high), static_cast<uint64_t>(high), 0, 0, 0, 0};
        asys_prep_syscall(&op, SYS_close_range, c);
        op.ret_ptr = &res;
        KEEPS_ERRNO(asys_submit, (ctx.ctx, &op), got_ == ASYS_DONE || got_ == 0);
        settle(ctx, g_last);
        VERIFY(res == 0);
    }
    asys_prep_syscall(&op, SYS_getpid, args);
    op.ret_ptr = &res;
    KEEPS_ERRNO(asys_submit, (ctx.ctx, &op), got_ == ASYS_DONE && res == getpid());
    asys_prep_syscall(&op, SYS_getppid, args);
    op.ret_ptr = &res;
    op.flags = ASYS_F_ASYNC;
    KEEPS_ERRNO(asys_submit, (ctx.ctx, &op), got_ == 0);
    settle(ctx, g_last);
    {
        // SYNC, CQE_ALWAYS with an inline callback, polls.
        pipe_pair pp;
        char b = 0;
        VERIFY(write(pp.w, "xy", 2) == 2);
        asys_prep_read(&op, pp.r, &b, 1);
        op.ret_ptr = &res;
        op.flags = ASYS_F_SYNC;
        KEEPS_ERRNO(asys_submit, (ctx.ctx, &op), got_ == ASYS_DONE && res == 1);
        asys_prep_read(&op, -1, &b, 1);
        op.ret_ptr = &res;
        op.flags = ASYS_F_SYNC;
        KEEPS_ERRNO(asys_submit, (ctx.ctx, &op), got_ == ASYS_DONE && res == -EBADF);
        inline_cb icb;
        asys_prep_read(&op, pp.r, &b, 1);
        op.flags = ASYS_F_CQE_ALWAYS;
        op.callback = inline_cb::cb;
        op.cb_arg = &icb;
        KEEPS_ERRNO(asys_submit, (ctx.ctx, &op), got_ == ASYS_DONE);
        VERIFY(icb.calls == 1);
        VERIFY_ERRNO("asys_submit before an inline callback (CQE_ALWAYS)", icb.entry_errno.load());
        asys_prep_poll(&op, pp.r, POLLIN, 0);
        op.ret_ptr = &res;
        KEEPS_ERRNO(asys_submit, (ctx.ctx, &op), got_ == ASYS_DONE && res == 0);
        asys_prep_poll(&op, 1000000, POLLIN, 0);  // not a descriptor: POLLNVAL
        op.ret_ptr = &res;
        KEEPS_ERRNO(asys_submit, (ctx.ctx, &op), got_ == ASYS_DONE && res == POLLNVAL);
        asys_prep_poll(&op, pp.r, POLLIN, 10000);  // punted, then data
        op.ret_ptr = &res;
        KEEPS_ERRNO(asys_submit, (ctx.ctx, &op), got_ == 0);
        VERIFY(write(pp.w, "z", 1) == 1);
        settle(ctx, g_last);
        VERIFY(res == POLLIN);
        asys_prep_read(&op, pp.r, &b, 1);  // data: inline
        op.ret_ptr = &res;
        KEEPS_ERRNO(asys_submit, (ctx.ctx, &op), got_ == ASYS_DONE && res == 1);
        asys_prep_read(&op, pp.r, &b, 1);  // empty: punted, then data
        op.ret_ptr = &res;
        KEEPS_ERRNO(asys_submit, (ctx.ctx, &op), got_ == 0);
        VERIFY(write(pp.w, "w", 1) == 1);
        settle(ctx, g_last);
    }
    {
        // A chain as one op.
        unsigned long v = 1, one = 1, *vp = &v;
        long r = 0, last_res = 0;
        syslet_uatom a = make_atom(__NR_umem_add, 0, &r);
        a.arg_ptr[0] = reinterpret_cast<unsigned long *>(&vp);
        a.arg_ptr[1] = &one;
        syslet_uatom *last = nullptr;
        asys_prep_chain(&op, &a, &last);
        op.ret_ptr = &last_res;
        KEEPS_ERRNO(asys_submit, (ctx.ctx, &op), got_ == ASYS_DONE && last == &a && v == 2);
        a.flags = SYSLET_ASYNC;
        asys_prep_chain(&op, &a, &last);
        op.ret_ptr = &last_res;
        KEEPS_ERRNO(asys_submit, (ctx.ctx, &op), got_ == 0);
        settle(ctx, g_last);
        VERIFY(v == 3);
    }

    // A full context: -EAGAIN; ATOMIC with no idle worker: -EAGAIN.
    {
        parked_read parked;
        asys_params pf = params(1, 1, 0, ASYS_BACKEND_POOL);
        ctx_guard full(&pf);
        if (!full.ctx) return;
        const pid_t tid = worker_tid(full);
        VERIFY(parked.submit(full, 1) == 0);
        VERIFY(parked.wait_blocked(tid));
        asys_prep_nop(&op, 1);
        op.flags = ASYS_F_ASYNC;
        KEEPS_ERRNO(asys_submit, (full.ctx, &op), got_ == -EAGAIN);
        VERIFY(parked.release() == 1);
        settle(full, 0);
    }
    {
        parked_read parked;
        asys_params pa = params(1, 0, 0, ASYS_BACKEND_POOL);
        ctx_guard atomic(&pa);
        if (!atomic.ctx) return;
        const pid_t tid = worker_tid(atomic);
        VERIFY(parked.submit(atomic, 1) == 0);
        VERIFY(parked.wait_blocked(tid));
        asys_prep_syscall(&op, SYS_getppid, args);
        op.flags = ASYS_F_ASYNC | ASYS_F_ATOMIC;
        KEEPS_ERRNO(asys_submit, (atomic.ctx, &op), got_ == -EAGAIN);
        VERIFY(parked.release() == 1);
        settle(atomic, 0);
    }
    // BLOCK_WHEN_FULL: a submitter that sleeps for room, on its own thread.
    {
        parked_read parked;
        asys_params pb = params(1, 1, ASYS_CTX_BLOCK_WHEN_FULL, ASYS_BACKEND_POOL);
        ctx_guard bwf(&pb);
        if (!bwf.ctx) return;
        VERIFY(parked.submit(bwf, 1) == 0);
        std::atomic<pid_t> stid{0};
        std::atomic<int> src{-1000}, serr{0};
        std::thread submitter([&] {
            stid = gettid();
            asys_op nop;
            asys_prep_nop(&nop, 3);
            nop.flags = ASYS_F_ASYNC;
            errno = kSentinel;
            const int r = asys_submit(bwf, &nop);
            serr = errno;
            src = r;
        });
        VERIFY(eventually([&] { return stid.load() != 0; }));
        VERIFY(wait_blocked_in(stid, SYS_futex));
        VERIFY(parked.release() == 1);
        asys_cqe c;
        const struct timespec ts{30, 0};
        KEEPS_ERRNO(asys_wait, (bwf.ctx, 1u, &ts, &c, 1u), got_ == 1);  // makes room
        submitter.join();
        VERIFY(src == 0);
        VERIFY_ERRNO("asys_submit (BLOCK_WHEN_FULL, slept for room)", serr.load());
        settle(bwf, 0);
    }

    // Destroyed context.
    asys_ctx *dead = nullptr;
    VERIFY(asys_ctx_create(nullptr, &dead) == 0);
    VERIFY(asys_ctx_destroy(dead, ASYS_DESTROY_DRAIN) == 0);
    asys_prep_nop(&op, 1);
    KEEPS_ERRNO(asys_submit, (dead, &op), got_ == -EBADF);
    close(file);
}

void scenario_batch() {
    asys_params p = params(2, 16);
    ctx_guard ctx(&p);
    if (!ctx.ctx) return;
    asys_op ops[3];
    long res[3];
    int status[3];
    for (int i = 0; i < 3; ++i) {
        asys_prep_nop(&ops[i], i);
        ops[i].ret_ptr = &res[i];
    }
    KEEPS_ERRNO(asys_submit_batch, (kNone, ops, 3u, status), got_ == -EINVAL);
    KEEPS_ERRNO(asys_submit_batch, (kJunk, ops, 3u, status), got_ == -EBADF);
    KEEPS_ERRNO(asys_submit_batch, (ctx.ctx, nullptr, 3u, status), got_ == -EFAULT);
    KEEPS_ERRNO(asys_submit_batch, (ctx.ctx, nullptr, 0u, nullptr), got_ == 0);
    KEEPS_ERRNO(asys_submit_batch, (ctx.ctx, ops, 3u, status), got_ == 3);
    KEEPS_ERRNO(asys_submit_batch, (ctx.ctx, ops, 3u, nullptr), got_ == 3);
    ops[1].flags = 1u << 20;
    KEEPS_ERRNO(asys_submit_batch, (ctx.ctx, ops, 3u, status), got_ == 1 && status[1] == -EINVAL);
    ops[0].opcode = ASYS_OP__COUNT;
    KEEPS_ERRNO(asys_submit_batch, (ctx.ctx, ops, 3u, status), got_ == -EINVAL);
    // Punted ops in a batch (the ring enters the kernel once).
    pipe_pair pp;
    char b[3];
    for (int i = 0; i < 3; ++i) {
        asys_prep_read(&ops[i], pp.r, &b[i], 1);
        ops[i].ret_ptr = &res[i];
    }
    KEEPS_ERRNO(asys_submit_batch, (ctx.ctx, ops, 3u, status), got_ == 3);
    VERIFY(write(pp.w, "abc", 3) == 3);
    unsigned punted = 0;
    for (int s : status) punted += s == 0;
    std::vector<asys_cqe> c(3);
    for (unsigned got = 0; got < punted;) {
        const struct timespec ts{30, 0};
        const int r = asys_wait(ctx, 1, &ts, c.data(), punted - got);
        if (r <= 0) break;
        got += static_cast<unsigned>(r);
    }
}

struct nested_calls {
    asys_ctx *ctx = nullptr;
    std::atomic<bool> done{false};
    int wait_rc = 0, wait_errno = 0, cancel_rc = 0, cancel_errno = 0, submit_rc = 0, submit_errno = 0;
    static void cb(const asys_cqe *, void *arg) {
        auto *c = static_cast<nested_calls *>(arg);
        const int saved = errno;
        asys_cqe out;
        errno = kSentinel;
        c->wait_rc = asys_wait(c->ctx, 1, nullptr, &out, 1);
        c->wait_errno = errno;
        errno = kSentinel;
        c->cancel_rc = asys_cancel(c->ctx, 0xdead);
        c->cancel_errno = errno;
        asys_op nop;
        asys_prep_nop(&nop, 5);
        long r = 0;
        nop.ret_ptr = &r;
        errno = kSentinel;
        c->submit_rc = asys_submit(c->ctx, &nop);
        c->submit_errno = errno;
        errno = saved;
        c->done.store(true, std::memory_order_release);
    }
};

/// asys_wait / asys_peek / asys_cancel, also from threads and callbacks.
void scenario_wait_peek_cancel() {
    asys_params p = params(2, 8);
    ctx_guard ctx(&p);
    if (!ctx.ctx) return;
    asys_cqe c[8];
    const struct timespec ms1{0, 1000000}, bad{0, 2000000000}, zero{0, 0}, long_ts{30, 0};

    KEEPS_ERRNO(asys_wait, (kNone, 1u, &ms1, c, 1u), got_ == -EINVAL);
    KEEPS_ERRNO(asys_wait, (kJunk, 1u, &ms1, c, 1u), got_ == -EBADF);
    KEEPS_ERRNO(asys_wait, (ctx.ctx, 1u, &ms1, nullptr, 1u), got_ == -EFAULT);
    KEEPS_ERRNO(asys_wait, (ctx.ctx, 2u, &ms1, c, 1u), got_ == -EINVAL);
    KEEPS_ERRNO(asys_wait, (ctx.ctx, 9u, &ms1, c, 9u), got_ == -EINVAL);  // beyond the ring
    KEEPS_ERRNO(asys_wait, (ctx.ctx, 1u, &bad, c, 1u), got_ == -EINVAL);
    KEEPS_ERRNO(asys_wait, (ctx.ctx, 1u, &ms1, c, 1u), got_ == -ETIME);   // sleeps 1 ms
    KEEPS_ERRNO(asys_wait, (ctx.ctx, 1u, &zero, c, 1u), got_ == -ETIME);
    KEEPS_ERRNO(asys_wait, (ctx.ctx, 1u, nullptr, c, 1u), got_ == -EDEADLK);  // nothing in flight
    KEEPS_ERRNO(asys_wait, (ctx.ctx, 0u, nullptr, c, 8u), got_ == 0);
    KEEPS_ERRNO(asys_peek, (kNone, c, 1u), got_ == -EINVAL);
    KEEPS_ERRNO(asys_peek, (kJunk, c, 1u), got_ == -EBADF);
    KEEPS_ERRNO(asys_peek, (ctx.ctx, nullptr, 1u), got_ == -EFAULT);
    KEEPS_ERRNO(asys_peek, (ctx.ctx, c, 8u), got_ == 0);
    KEEPS_ERRNO(asys_cancel, (kNone, 1u), got_ == -EINVAL);
    KEEPS_ERRNO(asys_cancel, (kJunk, 1u), got_ == -EBADF);
    KEEPS_ERRNO(asys_cancel, (ctx.ctx, 424242u), got_ == -ENOENT);

    // Entries present; a waiter that spins, then one that sleeps.
    asys_op op;
    for (int i = 0; i < 2; ++i) {
        asys_prep_nop(&op, i);
        op.flags = ASYS_F_CQE_ALWAYS;
        VERIFY(asys_submit(ctx, &op) == ASYS_DONE);
    }
    KEEPS_ERRNO(asys_peek, (ctx.ctx, c, 1u), got_ == 1);
    KEEPS_ERRNO(asys_wait, (ctx.ctx, 1u, nullptr, c, 8u), got_ == 1);
    {
        parked_read parked;
        VERIFY(parked.submit(ctx, 9, 0) == 0);
        std::atomic<pid_t> wtid{0};
        std::atomic<int> wrc{-1000}, werr{0};
        std::thread waiter([&] {
            wtid = gettid();
            asys_cqe out;
            errno = kSentinel;
            const int r = asys_wait(ctx, 1, nullptr, &out, 1);
            werr = errno;
            wrc = r;
        });
        VERIFY(eventually([&] { return wtid.load() != 0; }));
        VERIFY(wait_asleep_in_asys_wait(wtid));
        VERIFY(parked.release() == 1);
        waiter.join();
        VERIFY(wrc == 1);
        VERIFY_ERRNO("asys_wait (slept, then got an entry)", werr.load());
    }
    // A sleeping waiter whose hope goes: another thread takes the entry it
    // waited for, and the last op in flight cannot satisfy it (-EDEADLK).
    {
        parked_read a, b;
        VERIFY(a.submit(ctx, 10, 0) == 0);
        VERIFY(b.submit(ctx, 11, 0) == 0);
        std::atomic<pid_t> wtid{0};
        std::atomic<int> wrc{-1000}, werr{0};
        std::thread waiter([&] {
            wtid = gettid();
            asys_cqe out[2];
            errno = kSentinel;
            const int r = asys_wait(ctx, 2, nullptr, out, 2);
            werr = errno;
            wrc = r;
        });
        VERIFY(eventually([&] { return wtid.load() != 0; }));
        VERIFY(wait_asleep_in_asys_wait(wtid));
        VERIFY(a.release() == 1);
        KEEPS_ERRNO(asys_wait, (ctx.ctx, 1u, &long_ts, c, 1u), got_ == 1);
        waiter.join();
        VERIFY(wrc == -EDEADLK);
        VERIFY_ERRNO("asys_wait (hopeless while asleep: -EDEADLK)", werr.load());
        VERIFY(b.release() == 1);
        KEEPS_ERRNO(asys_wait, (ctx.ctx, 1u, nullptr, c, 1u), got_ == 1);
    }
    // Only a callback op in flight: no entry can come.
    {
        pipe_pair pp;
        char byte;
        inline_cb cbs;
        asys_prep_read(&op, pp.r, &byte, 1);
        op.callback = inline_cb::cb;
        op.cb_arg = &cbs;
        VERIFY(asys_submit(ctx, &op) == 0);
        KEEPS_ERRNO(asys_wait, (ctx.ctx, 1u, nullptr, c, 1u), got_ == -EDEADLK);
        VERIFY(write(pp.w, "x", 1) == 1);
        VERIFY(eventually([&] { return stats(ctx).inflight == 0; }));
    }

    // Calls from inside a completion callback: asys_wait is -EDEADLK (on a
    // ring context the thread is the one that reaps), asys_cancel and
    // asys_submit work. On the backend the environment chose, and on an
    // explicit ring if there is one.
    for (unsigned backend : {ASYS_BACKEND_AUTO, ASYS_BACKEND_URING}) {
        asys_params pc = params(2, 8, 0, backend);
        asys_ctx *cc = nullptr;
        if (asys_ctx_create(&pc, &cc) != 0) continue;
        {
            pipe_pair pp;
            char byte;
            nested_calls n;
            n.ctx = cc;
            asys_prep_read(&op, pp.r, &byte, 1);
            op.callback = nested_calls::cb;
            op.cb_arg = &n;
            VERIFY(asys_submit(cc, &op) == 0);
            VERIFY(write(pp.w, "x", 1) == 1);
            VERIFY(eventually([&] { return n.done.load(std::memory_order_acquire); }));
            VERIFY(n.wait_rc == -EDEADLK);
            VERIFY_ERRNO("asys_wait inside a completion callback", n.wait_errno);
            VERIFY(n.cancel_rc == -ENOENT);
            VERIFY_ERRNO("asys_cancel inside a completion callback", n.cancel_errno);
            VERIFY(n.submit_rc == ASYS_DONE);
            VERIFY_ERRNO("asys_submit inside a completion callback", n.submit_errno);
            VERIFY(eventually([&] { return stats(cc).inflight == 0; }));
        }
        VERIFY(asys_ctx_destroy(cc, ASYS_DESTROY_DRAIN) == 0);
    }

    // Cancels: a queued op (0), a running one (-EALREADY).
    {
        parked_read parked;
        asys_params pp1 = params(1, 0, 0, ASYS_BACKEND_POOL);
        ctx_guard pool(&pp1);
        if (!pool.ctx) return;
        const pid_t tid = worker_tid(pool);
        VERIFY(parked.submit(pool, 1) == 0);
        VERIFY(parked.wait_blocked(tid));
        uint64_t args[6] = {};
        asys_prep_syscall(&op, SYS_getppid, args);
        op.flags = ASYS_F_ASYNC;
        op.user_data = 77;
        VERIFY(asys_submit(pool, &op) == 0);
        KEEPS_ERRNO(asys_cancel, (pool.ctx, 77u), got_ == 0);
        KEEPS_ERRNO(asys_cancel, (pool.ctx, 1u), got_ == -EALREADY);
        KEEPS_ERRNO(asys_wait, (pool.ctx, 2u, &long_ts, c, 2u), got_ == 2);
    }
    // On the ring too (a read of a pipe goes there), if there is one.
    {
        asys_params pr = params(1, 0, 0, ASYS_BACKEND_URING);
        asys_ctx *rc = nullptr;
        if (asys_ctx_create(&pr, &rc) == 0) {
            {
                parked_read parked;
                VERIFY(parked.submit(rc, 5, 0) == 0);
                KEEPS_ERRNO(asys_cancel, (rc, 5u), got_ == 0 || got_ == -EALREADY);
                KEEPS_ERRNO(asys_wait, (rc, 1u, &long_ts, c, 1u), got_ == 1);
            }
            VERIFY(asys_ctx_destroy(rc, ASYS_DESTROY_DRAIN) == 0);
        }
    }

    // A waiter woken by destroy (-ESHUTDOWN); then the dead handle.
    {
        pipe_pair pp;
        char byte;
        inline_cb cbs;
        asys_ctx *d = nullptr;
        VERIFY(asys_ctx_create(nullptr, &d) == 0);
        if (!d) return;
        asys_prep_read(&op, pp.r, &byte, 1);
        op.callback = inline_cb::cb;
        op.cb_arg = &cbs;
        VERIFY(asys_submit(d, &op) == 0);
        std::atomic<pid_t> wtid{0};
        std::atomic<int> wrc{-1000}, werr{0};
        std::thread waiter([&] {
            wtid = gettid();
            asys_cqe out;
            const struct timespec hour{3600, 0};
            errno = kSentinel;
            const int r = asys_wait(d, 1, &hour, &out, 1);
            werr = errno;
            wrc = r;
        });
        VERIFY(eventually([&] { return wtid.load() != 0; }));
        VERIFY(wait_asleep_in_asys_wait(wtid));
        KEEPS_ERRNO(asys_ctx_destroy, (d, ASYS_DESTROY_CANCEL), got_ == 0);
        waiter.join();
        VERIFY(wrc == -ESHUTDOWN);
        VERIFY_ERRNO("asys_wait (woken by destroy: -ESHUTDOWN)", werr.load());
        KEEPS_ERRNO(asys_wait, (d, 1u, &ms1, c, 1u), got_ == -EBADF);
        KEEPS_ERRNO(asys_peek, (d, c, 1u), got_ == -EBADF);
        KEEPS_ERRNO(asys_cancel, (d, 1u), got_ == -EBADF);
    }
}

/// The syslet API: asys_* on explicit contexts, and the seed's names on
/// the default context.
void scenario_syslets() {
    static syslet_uatom *ring[4];
    std::fill(std::begin(ring), std::end(ring), nullptr);  // the scenario may run twice
    long r = 0, r2 = 0;
    unsigned long v = 40, two = 2, *vp = &v, nullcell = 0;
    syslet_uatom a = make_atom(__NR_umem_add, 0, &r);
    a.arg_ptr[0] = reinterpret_cast<unsigned long *>(&vp);
    a.arg_ptr[1] = &two;

    KEEPS_ERRNO(asys_umem_add, (&v, 2ul), got_ == 42);
    KEEPS_ERRNO(umem_add, (&v, 2ul), got_ == 44);

    KEEPS_ERRNO(asys_async_exec, (kNone, &a), got_ == -EINVAL);
    KEEPS_ERRNO(asys_async_exec, (kJunk, &a), got_ == -EBADF);
    KEEPS_ERRNO(asys_async_register, (kNone, ring, 4u), got_ == -EINVAL);
    KEEPS_ERRNO(asys_async_register, (kJunk, ring, 4u), got_ == -EBADF);
    KEEPS_ERRNO(asys_async_wait, (kNone, 1ul), got_ == -EINVAL);
    KEEPS_ERRNO(asys_async_wait, (kJunk, 1ul), got_ == -EBADF);
    KEEPS_ERRNO(asys_async_cancel, (kNone, &a), got_ == -EINVAL);
    KEEPS_ERRNO(asys_async_cancel, (kJunk, &a), got_ == -EBADF);
    KEEPS_ERRNO(asys_syslet_step_limit, (kNone, 1ul), got_ == -EINVAL);
    KEEPS_ERRNO(asys_syslet_step_limit, (kJunk, 1ul), got_ == -EBADF);

    asys_params p = params(2, 16);
    ctx_guard ctx(&p);
    if (!ctx.ctx) return;
    // No ring yet.
    KEEPS_ERRNO(asys_async_wait, (ctx.ctx, 1ul), got_ == -ENXIO);
    a.flags = SYSLET_ASYNC;
    KEEPS_ERRNO(asys_async_exec, (ctx.ctx, &a), got_ == -ENXIO);
    a.flags = 0;
    KEEPS_ERRNO(asys_async_exec, (ctx.ctx, nullptr), got_ == -EINVAL);
    KEEPS_ERRNO(asys_async_exec, (ctx.ctx, &a), got_ == reinterpret_cast<long>(&a) && v == 46);
    KEEPS_ERRNO(asys_async_cancel, (ctx.ctx, nullptr), got_ == -EINVAL);
    KEEPS_ERRNO(asys_async_cancel, (ctx.ctx, &a), got_ == -ENOENT);
    // Atoms that fail: denied, unknown, bad flags, a bad fd, umem_add on NULL.
    syslet_uatom d = make_atom(SYS_execve, 0, &r2);
    KEEPS_ERRNO(asys_async_exec, (ctx.ctx, &d), got_ == reinterpret_cast<long>(&d) && r2 == -EPERM);
    d = make_atom(5000, 0, &r2);
    KEEPS_ERRNO(asys_async_exec, (ctx.ctx, &d), got_ == reinterpret_cast<long>(&d) && r2 == -ENOSYS);
    d = make_atom(__NR_umem_add, 1ul << 20, &r2);
    KEEPS_ERRNO(asys_async_exec, (ctx.ctx, &d), got_ == -EINVAL || (got_ == reinterpret_cast<long>(&d) && r2 == -EINVAL));
    unsigned long badfd = static_cast<unsigned long>(-1), len = 1;
    char byte;
    unsigned long bufp = reinterpret_cast<unsigned long>(&byte);
    d = make_atom(SYS_read, 0, &r2);
    d.arg_ptr[0] = &badfd;
    d.arg_ptr[1] = &bufp;
    d.arg_ptr[2] = &len;
    KEEPS_ERRNO(asys_async_exec, (ctx.ctx, &d), got_ == reinterpret_cast<long>(&d) && r2 == -EBADF);
    d = make_atom(__NR_umem_add, 0, &r2);
    d.arg_ptr[0] = &nullcell;
    d.arg_ptr[1] = &two;
    KEEPS_ERRNO(asys_async_exec, (ctx.ctx, &d), got_ == reinterpret_cast<long>(&d) && r2 == -EFAULT);
    // The step limit.
    syslet_uatom s[2] = {a, a};
    s[0].next = &s[1];
    s[1].ret_ptr = &r2;
    KEEPS_ERRNO(asys_syslet_step_limit, (ctx.ctx, 1ul), got_ == 0);
    KEEPS_ERRNO(asys_async_exec, (ctx.ctx, s), got_ == reinterpret_cast<long>(&s[1]) && r2 == -ELOOP);
    KEEPS_ERRNO(asys_syslet_step_limit, (ctx.ctx, 0ul), got_ == 0);

    // The ring; a chain that goes asynchronous on a pipe read.
    KEEPS_ERRNO(asys_async_register, (ctx.ctx, nullptr, 4u), got_ == -EINVAL);
    KEEPS_ERRNO(asys_async_register, (ctx.ctx, ring, 0u), got_ == -EINVAL);
    KEEPS_ERRNO(asys_async_register, (ctx.ctx, ring, 4u), got_ == 0);
    KEEPS_ERRNO(asys_async_wait, (ctx.ctx, 5ul), got_ == -EINVAL);
    KEEPS_ERRNO(asys_async_wait, (ctx.ctx, 1ul), got_ == -EDEADLK);
    {
        pipe_pair pp;
        unsigned long rfd = static_cast<unsigned long>(pp.r);
        syslet_uatom rd = make_atom(SYS_read, 0, &r2);
        rd.arg_ptr[0] = &rfd;
        rd.arg_ptr[1] = &bufp;
        rd.arg_ptr[2] = &len;
        KEEPS_ERRNO(asys_async_exec, (ctx.ctx, &rd), got_ == 0);
        KEEPS_ERRNO(asys_async_register, (ctx.ctx, ring, 4u), got_ == -EBUSY);
        VERIFY(write(pp.w, "x", 1) == 1);
        KEEPS_ERRNO(asys_async_wait, (ctx.ctx, 1ul), got_ == 1);  // sleeps until it is posted
        VERIFY(ring[0] == &rd && r2 == 1);
        ring[0] = nullptr;
    }
    // Cancelling chains: one running on the only worker (-EALREADY), one
    // queued behind it (0).
    {
        static syslet_uatom *pring[4];
        std::fill(std::begin(pring), std::end(pring), nullptr);
        asys_params pp1 = params(1, 8, 0, ASYS_BACKEND_POOL);
        ctx_guard pool(&pp1);
        if (!pool.ctx) return;
        VERIFY(asys_async_register(pool, pring, 4) == 0);
        const pid_t tid = worker_tid(pool);
        pipe_pair pp;
        unsigned long rfd = static_cast<unsigned long>(pp.r);
        syslet_uatom rd = make_atom(SYS_read, SYSLET_ASYNC, &r2);
        rd.arg_ptr[0] = &rfd;
        rd.arg_ptr[1] = &bufp;
        rd.arg_ptr[2] = &len;
        VERIFY(asys_async_exec(pool, &rd) == 0);
        VERIFY(wait_blocked_in(tid, SYS_read));
        long r3 = 0;
        syslet_uatom q = make_atom(SYS_getppid, SYSLET_ASYNC, &r3);
        VERIFY(asys_async_exec(pool, &q) == 0);
        KEEPS_ERRNO(asys_async_cancel, (pool.ctx, &q), got_ == 0);
        KEEPS_ERRNO(asys_async_cancel, (pool.ctx, &rd), got_ == -EALREADY);
        KEEPS_ERRNO(asys_async_wait, (pool.ctx, 2ul), got_ == 2);
    }

    // The seed's names, on the default context.
    static syslet_uatom *dring[4];
    std::fill(std::begin(dring), std::end(dring), nullptr);
    KEEPS_ERRNO(asys_syslet_default_ctx, (), got_ != nullptr);
    KEEPS_ERRNO(async_register, (nullptr, 4u), got_ == -EINVAL);
    KEEPS_ERRNO(async_register, (dring, 0u), got_ == -EINVAL);
    KEEPS_ERRNO(async_register, (dring, 4u), got_ == 0);
    KEEPS_ERRNO(async_exec, (nullptr), got_ == -EINVAL);
    a.flags = 0;
    KEEPS_ERRNO(async_exec, (&a), got_ == reinterpret_cast<long>(&a));
    a.flags = SYSLET_ASYNC;
    KEEPS_ERRNO(async_exec, (&a), got_ == 0);
    KEEPS_ERRNO(async_wait, (1ul), got_ == 1);
    VERIFY(dring[0] == &a);
    dring[0] = nullptr;
    KEEPS_ERRNO(async_wait, (1ul), got_ == -EDEADLK);
    KEEPS_ERRNO(async_wait, (5ul), got_ == -EINVAL);
}

/// A stand-in for asysd: greets one client with `res` (cookie `cookie`).
struct fake_daemon {
    std::string path;
    int lfd = -1;
    std::thread t;
    fake_daemon(const std::string &p, int64_t res, uint64_t cookie) : path(p) {
        lfd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        struct sockaddr_un sa {};
        sa.sun_family = AF_UNIX;
        std::snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path.c_str());
        VERIFY(bind(lfd, reinterpret_cast<sockaddr *>(&sa), sizeof sa) == 0);
        VERIFY(listen(lfd, 4) == 0);
        t = std::thread([this, res, cookie] {
            const int c = accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
            if (c < 0) return;
            asys_sock_msg m;
            asys_sock_prep(&m, ASYS_SOCK_DONE, cookie, 0, 0, 0);
            m.res = res;
            (void)!send(c, &m, sizeof m, MSG_NOSIGNAL);
            // Hold the connection until the client closes it.
            char x;
            (void)!recv(c, &x, 1, 0);
            close(c);
        });
    }
    ~fake_daemon() {
        t.join();
        close(lfd);
        unlink(path.c_str());
    }
};

/// The socket functions.
void scenario_sockets() {
    temp_dir dir;
    asys_params p = params(2, 64);
    ctx_guard ctx(&p);
    if (!ctx.ctx) return;
    asys_sock_msg m, r;
    char payload[64];

    KEEPS_ERRNO(asys_socket_count, (), got_ >= 0);
    KEEPS_ERRNO(asys_socket_open, (kNone), got_ == -EINVAL);
    KEEPS_ERRNO(asys_socket_open, (kJunk), got_ == -EBADF);
    KEEPS_ERRNO(asys_socket_serve, (kNone, -1), got_ == -EINVAL);
    KEEPS_ERRNO(asys_socket_serve, (ctx.ctx, -1), true);  // (the server thread starts, and ends)
    KEEPS_ERRNO(asys_socket_serve_flags, (kJunk, -1, 0u), got_ == -EBADF);
    KEEPS_ERRNO(asys_socket_serve_flags, (ctx.ctx, -1, ~0u), got_ == -EINVAL);
    const std::string missing = dir.file("no-such-daemon.sock");
    KEEPS_ERRNO(asys_socket_connect, (missing.c_str()), got_ == -ENOENT);
    KEEPS_ERRNO(asys_socket_connect, ("/nonexistent/asysd.sock"), got_ == -ENOENT);
    KEEPS_ERRNO(asys_socket_connect, (nullptr), got_ == -EFAULT);
    const std::string longp(200, 'x');
    KEEPS_ERRNO(asys_socket_connect, (longp.c_str()), got_ == -ENAMETOOLONG);
    {
        const std::string path = dir.file("nobody.sock");  // bound, not listening
        const int b = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        struct sockaddr_un sa {};
        sa.sun_family = AF_UNIX;
        std::snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path.c_str());
        VERIFY(bind(b, reinterpret_cast<sockaddr *>(&sa), sizeof sa) == 0);
        KEEPS_ERRNO(asys_socket_connect, (path.c_str()), got_ == -ECONNREFUSED);
        close(b);
    }
    {
        fake_daemon dd(dir.file("d1.sock"), 0, 0);
        KEEPS_ERRNO(asys_socket_connect, (dd.path.c_str()), got_ >= 0);
        if (g_last >= 0) close(static_cast<int>(g_last));
    }
    {
        fake_daemon dd(dir.file("d2.sock"), -EACCES, 0);
        KEEPS_ERRNO(asys_socket_connect, (dd.path.c_str()), got_ == -EACCES);
    }
    {
        fake_daemon dd(dir.file("d3.sock"), 0, 99);  // not a greeting
        KEEPS_ERRNO(asys_socket_connect, (dd.path.c_str()), got_ == -EPROTO);
    }

    asys_sock_prep(&m, ASYS_SOCK_TIMER, 1, 0, 0, 0);
    KEEPS_ERRNO_VOID(asys_sock_prep, (&m, ASYS_SOCK_TIMER, 1, 0, 0, 0));
    KEEPS_ERRNO(asys_sock_send, (-1, &m, nullptr, 0, -1), got_ == -EBADF);
    KEEPS_ERRNO(asys_sock_send, (0, nullptr, nullptr, 0, -1), got_ == -EFAULT);
    KEEPS_ERRNO(asys_sock_send, (0, &m, nullptr, 5, -1), got_ == -EFAULT);
    KEEPS_ERRNO(asys_sock_recv, (-1, &r, nullptr, 0), got_ == -EBADF);
    KEEPS_ERRNO(asys_sock_recv, (0, nullptr, nullptr, 0), got_ == -EFAULT);
    {
        int sv[2];
        VERIFY(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == 0);
        KEEPS_ERRNO(asys_sock_send, (sv[0], &m, nullptr, 0, 1000000), got_ == -EBADF);  // a bad fd to pass
        KEEPS_ERRNO(asys_sock_send, (sv[0], &m, nullptr, 0, -1), got_ == 0);
        KEEPS_ERRNO(asys_sock_recv, (sv[1], &r, nullptr, 0), got_ == -EPROTO);  // a request, not a reply
        close(sv[1]);
        KEEPS_ERRNO(asys_sock_send, (sv[0], &m, nullptr, 0, -1), got_ == -EPIPE);
        KEEPS_ERRNO(asys_sock_recv, (sv[0], &r, nullptr, 0), got_ == -ECONNRESET);
        close(sv[0]);
    }

    // Served in-process: a timer the receive has to wait for, a file.
    int s = -1;
    KEEPS_ERRNO(asys_socket_open, (ctx.ctx), got_ >= 0);
    s = static_cast<int>(g_last);
    if (s < 0) return;
    m.res = 2 * 1000 * 1000;  // 2 ms
    KEEPS_ERRNO(asys_sock_send, (s, &m, nullptr, 0, -1), got_ == 0);
    KEEPS_ERRNO(asys_sock_recv, (s, &r, nullptr, 0), got_ == 0 && r.cookie == 1 && r.res == 0);
    const int fd = make_file(dir.file("f"), 100);
    asys_sock_prep(&m, ASYS_SOCK_REGISTER, 2, 0, 0, 0);
    KEEPS_ERRNO(asys_sock_send, (s, &m, nullptr, 0, fd), got_ == 0);
    KEEPS_ERRNO(asys_sock_recv, (s, &r, nullptr, 0), got_ == 0 && r.res >= 0);
    close(fd);
    const auto handle = static_cast<uint32_t>(r.res);
    asys_sock_prep(&m, ASYS_SOCK_READ, 3, handle, 10, 0);
    VERIFY(asys_sock_send(s, &m, nullptr, 0, -1) == 0);
    KEEPS_ERRNO(asys_sock_recv, (s, &r, payload, sizeof payload), got_ == 10);
    asys_sock_prep(&m, ASYS_SOCK_READ, 4, handle, 10, 0);
    VERIFY(asys_sock_send(s, &m, nullptr, 0, -1) == 0);
    KEEPS_ERRNO(asys_sock_recv, (s, &r, payload, 1u), got_ == -EMSGSIZE);
    asys_sock_prep(&m, ASYS_SOCK_WRITE, 5, handle, 3, 0);
    KEEPS_ERRNO(asys_sock_send, (s, &m, "abc", 3, -1), got_ == 0);
    KEEPS_ERRNO(asys_sock_recv, (s, &r, nullptr, 0), got_ == 0 && r.res == 3);
    asys_sock_prep(&m, ASYS_SOCK_SIGNAL, 6, 0, 0, 0);
    m.res = SIGKILL;
    VERIFY(asys_sock_send(s, &m, nullptr, 0, -1) == 0);
    KEEPS_ERRNO(asys_sock_recv, (s, &r, payload, sizeof payload), got_ >= 0 && r.res == -EINVAL);
    m.res = SIGRTMAX - 3;
    VERIFY(asys_sock_send(s, &m, nullptr, 0, -1) == 0);
    KEEPS_ERRNO(asys_sock_recv, (s, &r, payload, sizeof payload), got_ >= 0 && r.res == -EINVAL);
    KEEPS_ERRNO(asys_socket_count, (), got_ >= 1);
    close(s);

    // Served on sockets of our own, with and without NO_SIGNALS.
    for (unsigned flags : {0u, ASYS_SOCK_NO_SIGNALS}) {
        int sv[2];
        VERIFY(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == 0);
        if (flags == 0) KEEPS_ERRNO(asys_socket_serve, (ctx.ctx, sv[1]), got_ == 0);
        else KEEPS_ERRNO(asys_socket_serve_flags, (ctx.ctx, sv[1], flags), got_ == 0);
        asys_sock_prep(&m, ASYS_SOCK_SIGNAL, 7, 0, 0, 0);
        m.res = SIGUSR2;
        if (flags) {
            VERIFY(asys_sock_send(sv[0], &m, nullptr, 0, -1) == 0);
            KEEPS_ERRNO(asys_sock_recv, (sv[0], &r, payload, sizeof payload), got_ >= 0 && r.res == -EPERM);
        }
        asys_sock_prep(&m, ASYS_SOCK_CANCEL, 8, 0, 0, 12345);
        VERIFY(asys_sock_send(sv[0], &m, nullptr, 0, -1) == 0);
        KEEPS_ERRNO(asys_sock_recv, (sv[0], &r, nullptr, 0), got_ == 0 && r.res == -ENOENT);
        VERIFY(shutdown(sv[0], SHUT_WR) == 0);  // the server answers all, then ends
        KEEPS_ERRNO(asys_sock_recv, (sv[0], &r, nullptr, 0), got_ == -ECONNRESET);
        close(sv[0]);
    }
}

/// The rest of asys.h: the deny list, opcode names, every prep helper.
void scenario_misc() {
    KEEPS_ERRNO(asys_syscall_allowed, (static_cast<long>(SYS_getpid)), got_ == 0);
    KEEPS_ERRNO(asys_syscall_allowed, (static_cast<long>(SYS_execve)), got_ == -EPERM);
    KEEPS_ERRNO(asys_syscall_allowed, (-1L), got_ == -ENOSYS);
    KEEPS_ERRNO(asys_syscall_allowed, (1024L), got_ == -ENOSYS);
    KEEPS_ERRNO(asys_opcode_name, (static_cast<unsigned>(ASYS_OP_PREAD)), got_ && std::strcmp(got_, "pread") == 0);
    KEEPS_ERRNO(asys_opcode_name, (static_cast<unsigned>(ASYS_OP__COUNT)), got_ == nullptr);
    KEEPS_ERRNO(asys_opcode_name, (~0u), got_ == nullptr);
    KEEPS_ERRNO(asys_class_name, (static_cast<unsigned>(ASYS_CLASS_LONG)), got_ && std::strcmp(got_, "long") == 0);
    KEEPS_ERRNO(asys_class_name, (static_cast<unsigned>(ASYS_CLASS__COUNT)), got_ == nullptr);

    asys_op op;
    char b[8];
    struct iovec iov{b, 8};
    uint64_t args[6] = {};
    struct sockaddr_un sa {};
    socklen_t sl = sizeof sa;
    syslet_uatom head;
    std::memset(&head, 0, sizeof head);
    syslet_uatom *last = nullptr;
    KEEPS_ERRNO_VOID(asys_prep__, (&op, ASYS_OP_NOP, 1, 2, 3, 4, 5, 6));
    KEEPS_ERRNO_VOID(asys_prep_nop, (&op, 1));
    KEEPS_ERRNO_VOID(asys_prep_read, (&op, 0, b, 8));
    KEEPS_ERRNO_VOID(asys_prep_pread, (&op, 0, b, 8, 0));
    KEEPS_ERRNO_VOID(asys_prep_readv, (&op, 0, &iov, 1));
    KEEPS_ERRNO_VOID(asys_prep_preadv, (&op, 0, &iov, 1, 0, 0));
    KEEPS_ERRNO_VOID(asys_prep_write, (&op, 1, b, 8));
    KEEPS_ERRNO_VOID(asys_prep_pwrite, (&op, 1, b, 8, 0));
    KEEPS_ERRNO_VOID(asys_prep_writev, (&op, 1, &iov, 1));
    KEEPS_ERRNO_VOID(asys_prep_pwritev, (&op, 1, &iov, 1, 0, 0));
    KEEPS_ERRNO_VOID(asys_prep_openat, (&op, AT_FDCWD, "x", O_RDONLY, 0));
    KEEPS_ERRNO_VOID(asys_prep_close, (&op, 99));
    KEEPS_ERRNO_VOID(asys_prep_fsync, (&op, 99));
    KEEPS_ERRNO_VOID(asys_prep_fdatasync, (&op, 99));
    KEEPS_ERRNO_VOID(asys_prep_statx, (&op, AT_FDCWD, "x", 0, 0, b));
    KEEPS_ERRNO_VOID(asys_prep_unlinkat, (&op, AT_FDCWD, "x", 0));
    KEEPS_ERRNO_VOID(asys_prep_renameat, (&op, AT_FDCWD, "x", AT_FDCWD, "y", 0));
    KEEPS_ERRNO_VOID(asys_prep_mkdirat, (&op, AT_FDCWD, "x", 0700));
    KEEPS_ERRNO_VOID(asys_prep_fallocate, (&op, 99, 0, 0, 8));
    KEEPS_ERRNO_VOID(asys_prep_ftruncate, (&op, 99, 8));
    KEEPS_ERRNO_VOID(asys_prep_accept, (&op, 99, &sa, &sl, 0));
    KEEPS_ERRNO_VOID(asys_prep_connect, (&op, 99, &sa, sl));
    KEEPS_ERRNO_VOID(asys_prep_recv, (&op, 99, b, 8, 0));
    KEEPS_ERRNO_VOID(asys_prep_send, (&op, 99, b, 8, 0));
    KEEPS_ERRNO_VOID(asys_prep_poll, (&op, 99, POLLIN, -1));
    KEEPS_ERRNO_VOID(asys_prep_syscall, (&op, SYS_getpid, args));
    KEEPS_ERRNO_VOID(asys_prep_chain, (&op, &head, &last));
    asys_sock_msg m;
    KEEPS_ERRNO_VOID(asys_sock_prep, (&m, ASYS_SOCK_READ, 1, 2, 3, 4));
}

// ------------------------------------------------ scenarios in a child

/// After fork(): the parent's contexts (one with a waiter blocked on it)
/// are dead in the child; the child destroys them and makes its own.
void scenario_fork() {
    asys_params p = params(2, 16);
    asys_ctx *ctx = nullptr;
    VERIFY(asys_ctx_create(&p, &ctx) == 0);
    if (!ctx) return;
    parked_read parked;
    VERIFY(parked.submit(ctx, 1, 0) == 0);
    std::atomic<pid_t> wtid{0};
    std::atomic<int> wrc{-1000};
    std::thread waiter([&] {
        wtid = gettid();
        asys_cqe out;
        wrc = asys_wait(ctx, 1, nullptr, &out, 1);
    });
    VERIFY(eventually([&] { return wtid.load() != 0; }));
    VERIFY(wait_asleep_in_asys_wait(wtid));
    const int sock_end = [] {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) return -1;
        close(sv[0]);
        return sv[1];
    }();

    EXPECT_CHILD_CLEAN([&] {
        asys_cqe c;
        asys_stats st;
        asys_info info;
        asys_op op;
        asys_prep_nop(&op, 1);
        syslet_uatom *ring[2];
        long r = 0;
        syslet_uatom a = make_atom(SYS_getpid, 0, &r);
        const struct timespec ms1{0, 1000000};
        KEEPS_ERRNO(asys_ctx_fd, (ctx), got_ == -EOWNERDEAD);
        KEEPS_ERRNO(asys_ctx_stats, (ctx, &st), got_ == -EOWNERDEAD);
        KEEPS_ERRNO(asys_ctx_info, (ctx, &info), got_ == -EOWNERDEAD);
        KEEPS_ERRNO(asys_submit, (ctx, &op), got_ == -EOWNERDEAD);
        KEEPS_ERRNO(asys_submit_batch, (ctx, &op, 1u, nullptr), got_ == -EOWNERDEAD);
        KEEPS_ERRNO(asys_wait, (ctx, 1u, &ms1, &c, 1u), got_ == -EOWNERDEAD);
        KEEPS_ERRNO(asys_peek, (ctx, &c, 1u), got_ == -EOWNERDEAD);
        KEEPS_ERRNO(asys_cancel, (ctx, 1u), got_ == -EOWNERDEAD);
        KEEPS_ERRNO(asys_async_exec, (ctx, &a), got_ == -EOWNERDEAD);
        KEEPS_ERRNO(asys_async_register, (ctx, ring, 2u), got_ == -EOWNERDEAD);
        KEEPS_ERRNO(asys_async_wait, (ctx, 1ul), got_ == -EOWNERDEAD);
        KEEPS_ERRNO(asys_async_cancel, (ctx, &a), got_ == -EOWNERDEAD);
        KEEPS_ERRNO(asys_syslet_step_limit, (ctx, 1ul), got_ == -EOWNERDEAD);
        KEEPS_ERRNO(asys_socket_open, (ctx), got_ == -EOWNERDEAD);
        KEEPS_ERRNO(asys_socket_serve, (ctx, sock_end), got_ == -EOWNERDEAD);
        // A fresh default context, without a ring.
        KEEPS_ERRNO(asys_syslet_default_ctx, (), got_ != nullptr);
        KEEPS_ERRNO(async_wait, (1ul), got_ == -ENXIO);
        KEEPS_ERRNO(async_exec, (&a), got_ == reinterpret_cast<long>(&a) && r == getpid());
        // The inherited context, while a parent thread waited on it.
        KEEPS_ERRNO(asys_ctx_destroy, (ctx, ASYS_DESTROY_CANCEL), got_ == 0);
        KEEPS_ERRNO(asys_ctx_destroy, (ctx, ASYS_DESTROY_CANCEL), got_ == -EBADF);
        asys_ctx *mine = nullptr;
        KEEPS_ERRNO(asys_ctx_create, (nullptr, &mine), got_ == 0);
        if (mine) {
            long res = 0;
            op.ret_ptr = &res;
            op.flags = ASYS_F_ASYNC;
            KEEPS_ERRNO(asys_submit, (mine, &op), got_ == 0);
            KEEPS_ERRNO(asys_wait, (mine, 1u, nullptr, &c, 1u), got_ == 1);
            KEEPS_ERRNO(asys_ctx_destroy, (mine, ASYS_DESTROY_DRAIN), got_ == 0);
        }
    });

    VERIFY(parked.release() == 1);
    waiter.join();
    VERIFY(wrc == 1);
    VERIFY(asys_ctx_destroy(ctx, ASYS_DESTROY_DRAIN) == 0);
}

/// Out of descriptors: set-up steps that need one fail (or fall back).
void scenario_no_descriptors() {
    asys_params pool_p = params(2, 16, 0, ASYS_BACKEND_POOL);
    asys_ctx *pre = nullptr;
    VERIFY(asys_ctx_create(&pool_p, &pre) == 0);  // made before the limit
    if (!pre) return;
    EXPECT_CHILD_CLEAN([&] {
        env_override env("ASYS_BACKEND", nullptr);  // AUTO means auto here
        asys_ctx *pre_child = nullptr;
        VERIFY(asys_ctx_create(&pool_p, &pre_child) == 0);
        fds_exhausted full;
        VERIFY(full.ok);
        asys_ctx *c = nullptr;
        asys_params p = params(2, 16, 0, ASYS_BACKEND_URING);
        KEEPS_ERRNO(asys_ctx_create, (&p, &c), got_ == -EMFILE);
        p = params(2, 16, 0, ASYS_BACKEND_POOL);
        KEEPS_ERRNO(asys_ctx_create, (&p, &c), got_ == 0);
        if (c) {
            KEEPS_ERRNO(asys_ctx_fd, (c), got_ == -EMFILE);
            asys_op op;
            long res = 0;
            asys_prep_openat(&op, AT_FDCWD, "/dev/null", O_RDONLY | O_CLOEXEC, 0);
            op.ret_ptr = &res;
            KEEPS_ERRNO(asys_submit, (c, &op), got_ == ASYS_DONE || got_ == 0);
            settle(c, g_last);
            VERIFY(res == -EMFILE);
            KEEPS_ERRNO(asys_socket_open, (c), got_ == -EMFILE);
            KEEPS_ERRNO(asys_ctx_destroy, (c, ASYS_DESTROY_DRAIN), got_ == 0);
        }
        // AUTO: the ring cannot start, the pool can. With explicit
        // workers, with the default worker count (from the CPU count), and
        // both.
        p = params(2, 16);
        c = nullptr;
        KEEPS_ERRNO(asys_ctx_create, (&p, &c), got_ == 0);
        if (c) asys_ctx_destroy(c, ASYS_DESTROY_DRAIN);
        p = params(0, 16, 0, ASYS_BACKEND_POOL);
        c = nullptr;
        KEEPS_ERRNO(asys_ctx_create, (&p, &c), got_ == 0);
        if (c) asys_ctx_destroy(c, ASYS_DESTROY_DRAIN);
        c = nullptr;
        KEEPS_ERRNO(asys_ctx_create, (nullptr, &c), got_ == 0);
        if (c) {
            asys_info info;
            KEEPS_ERRNO(asys_ctx_info, (c, &info), got_ == 0 && info.backend == ASYS_BACKEND_POOL);
            KEEPS_ERRNO(asys_ctx_destroy, (c, ASYS_DESTROY_DRAIN), got_ == 0);
        }
        KEEPS_ERRNO(asys_syslet_default_ctx, (), got_ != nullptr);
        KEEPS_ERRNO(asys_socket_connect, ("/nonexistent/asysd.sock"), got_ == -EMFILE);
        // A socket to serve: made by closing one filler.
        close(full.fill.back());
        full.fill.pop_back();
        int sv[2];
        close(full.fill.back());
        full.fill.pop_back();
        VERIFY(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == 0);
        KEEPS_ERRNO(asys_socket_serve, (pre_child, sv[1]), got_ == -EMFILE);  // its eventfd
        close(sv[0]);
        if (pre_child) asys_ctx_destroy(pre_child, ASYS_DESTROY_DRAIN);
    });
    VERIFY(asys_ctx_destroy(pre, ASYS_DESTROY_DRAIN) == 0);
}

/// No new threads (clone refused by seccomp): creation fails, the default
/// context cannot be made, socket servers cannot start.
void scenario_no_threads() {
    EXPECT_CHILD_CLEAN([&] {
        env_override env("ASYS_BACKEND", nullptr);
        asys_params pool_p = params(2, 16, 0, ASYS_BACKEND_POOL);
        asys_ctx *pre = nullptr;
        VERIFY(asys_ctx_create(&pool_p, &pre) == 0);  // made before the filter
        if (!refuse_syscalls({{SYS_clone3, ENOSYS}, {SYS_clone, EAGAIN}})) {
            fail(__FILE__, __LINE__, "cannot install the seccomp filter");
            return;
        }
        asys_ctx *c = nullptr;
        KEEPS_ERRNO(asys_ctx_create, (&pool_p, &c), got_ == -EAGAIN);
        KEEPS_ERRNO(asys_ctx_create, (nullptr, &c), got_ == -EAGAIN);
        asys_params ring_p = params(2, 16, 0, ASYS_BACKEND_URING);
        KEEPS_ERRNO(asys_ctx_create, (&ring_p, &c), got_ < 0);
        KEEPS_ERRNO(asys_syslet_default_ctx, (), got_ == nullptr);
        static syslet_uatom *ring[2];
        long r = 0;
        syslet_uatom a = make_atom(SYS_getpid, 0, &r);
        KEEPS_ERRNO(async_exec, (&a), got_ == -ENOMEM);
        KEEPS_ERRNO(async_register, (ring, 2u), got_ == -ENOMEM);
        KEEPS_ERRNO(async_wait, (1ul), got_ == -ENOMEM);
        if (pre) {
            KEEPS_ERRNO(asys_socket_open, (pre), got_ == -EAGAIN);
            int sv[2];
            VERIFY(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == 0);
            KEEPS_ERRNO(asys_socket_serve_flags, (pre, sv[1], ASYS_SOCK_NO_SIGNALS), got_ == -EAGAIN);
            close(sv[0]);
            // The existing context still works: its threads exist.
            asys_op op;
            long res = 0;
            asys_prep_nop(&op, 4);
            op.ret_ptr = &res;
            op.flags = ASYS_F_ASYNC;
            asys_cqe cq;
            KEEPS_ERRNO(asys_submit, (pre, &op), got_ == 0);
            KEEPS_ERRNO(asys_wait, (pre, 1u, nullptr, &cq, 1u), got_ == 1 && res == 4);
            KEEPS_ERRNO(asys_ctx_destroy, (pre, ASYS_DESTROY_DRAIN), got_ == 0);
        }
    });
}

/// io_uring refused by seccomp, at each set-up step: auto contexts fall
/// back to the pool and say why; forced ones fail.
void scenario_no_uring() {
    struct step {
        long nr;
        const char *reason;
    };
    for (const step &s : {step{SYS_io_uring_setup, "io_uring_setup EPERM"},
                          step{SYS_io_uring_register, "io_uring_register(PROBE) EPERM"}}) {
        EXPECT_CHILD_CLEAN([&] {
            env_override env("ASYS_BACKEND", nullptr);
            if (!refuse_syscalls({{s.nr, EPERM}})) {
                fail(__FILE__, __LINE__, "cannot install the seccomp filter");
                return;
            }
            asys_ctx *c = nullptr;
            asys_params p = params(2, 16, 0, ASYS_BACKEND_URING);
            KEEPS_ERRNO(asys_ctx_create, (&p, &c), got_ == -EPERM);
            p = params(2, 16);
            c = nullptr;
            KEEPS_ERRNO(asys_ctx_create, (&p, &c), got_ == 0);
            if (!c) return;
            asys_info info;
            KEEPS_ERRNO(asys_ctx_info, (c, &info), got_ == 0 && info.backend == ASYS_BACKEND_POOL &&
                                                       info.uring_error == -EPERM);
            if (!std::strstr(info.reason, s.reason))
                fail(__FILE__, __LINE__, std::string("reason: ") + info.reason + ", expected " + s.reason);
            KEEPS_ERRNO(asys_ctx_destroy, (c, ASYS_DESTROY_DRAIN), got_ == 0);
        });
    }
}

size_t vm_size_bytes() {
    std::ifstream f("/proc/self/status");
    std::string line;
    while (std::getline(f, line))
        if (line.rfind("VmSize:", 0) == 0) return std::stoull(line.substr(7)) * 1024;
    return 0;
}

/// Out of memory (a tight RLIMIT_AS): allocations and thread stacks fail.
void scenario_no_memory() {
    EXPECT_CHILD_CLEAN([&] {
        env_override env("ASYS_BACKEND", nullptr);
        asys_params small = params(1, 8, 0, ASYS_BACKEND_POOL);
        asys_ctx *pre = nullptr;
        VERIFY(asys_ctx_create(&small, &pre) == 0);
        const size_t vm = vm_size_bytes();
        VERIFY(vm > 0);
        struct rlimit lim{vm + (8u << 20), vm + (8u << 20)};
        VERIFY(setrlimit(RLIMIT_AS, &lim) == 0);
        asys_ctx *c = nullptr;
        asys_params huge = params(1, 4194304, 0, ASYS_BACKEND_POOL);  // its slots: far beyond 8 MiB
        KEEPS_ERRNO(asys_ctx_create, (&huge, &c), got_ == -ENOMEM);
        asys_params many = params(64, 8, 0, ASYS_BACKEND_POOL);  // 64 stacks of 256 KiB
        KEEPS_ERRNO(asys_ctx_create, (&many, &c), got_ == -EAGAIN || got_ == -ENOMEM);
        if (pre) {
            KEEPS_ERRNO(asys_socket_open, (pre), got_ >= 0 || got_ == -EAGAIN || got_ == -ENOMEM);
            if (g_last >= 0) close(static_cast<int>(g_last));
            asys_ctx_destroy(pre, ASYS_DESTROY_DRAIN);
        }
    });
}

// ================================================================= tests

TEST(Errno, ContextCreateDestroyInfo) { scenario_context(); }
TEST(Errno, Submit) { scenario_submit(); }
TEST(Errno, SubmitBatch) { scenario_batch(); }
TEST(Errno, WaitPeekCancel) { scenario_wait_peek_cancel(); }
TEST(Errno, Syslets) { scenario_syslets(); }
TEST(Errno, Sockets) { scenario_sockets(); }
TEST(Errno, DenyListNamesAndPrepHelpers) { scenario_misc(); }

// The first call in a process makes the default context (a fresh process:
// ctest runs every test in its own).
TEST(Errno, DefaultContextFirstUse) {
    KEEPS_ERRNO(asys_syslet_default_ctx, (), got_ != nullptr);
    KEEPS_ERRNO(asys_syslet_default_ctx, (), got_ != nullptr);
}

TEST(ErrnoForked, InheritedContexts) {
    ASYS_SKIP_FORK_UNDER_SANITIZERS();
    scenario_fork();
}
TEST(ErrnoForked, OutOfDescriptors) {
    ASYS_SKIP_FORK_UNDER_SANITIZERS();
    scenario_no_descriptors();
}
TEST(ErrnoForked, NoThreads) {
    ASYS_SKIP_FORK_UNDER_SANITIZERS();
    scenario_no_threads();
}
TEST(ErrnoForked, IoUringRefused) {
    ASYS_SKIP_FORK_UNDER_SANITIZERS();
    scenario_no_uring();
}
TEST(ErrnoForked, OutOfMemory) {
    ASYS_SKIP_FORK_UNDER_SANITIZERS();
    scenario_no_memory();
}

/// The public functions: ASYS_API declarations and static inline functions
/// of the three C headers.
std::set<std::string> public_functions() {
    std::set<std::string> names;
    const std::regex decl(R"(^(?:ASYS_API|static inline)\s.*?\b([A-Za-z_]\w*)\s*\()");
    for (const char *h : {"asys.h", "syslet.h", "socket.h"}) {
        std::ifstream f(source_root() / "include" / "asys" / h);
        EXPECT_TRUE(f) << "cannot read include/asys/" << h;
        std::string line;
        while (std::getline(f, line)) {
            std::smatch m;
            if (std::regex_search(line, m, decl)) names.insert(m[1]);
        }
    }
    return names;
}

TEST(ErrnoCoverage, EveryPublicFunctionIsCalled) {
    const std::set<std::string> all = public_functions();
    EXPECT_GE(all.size(), 30u) << "the header scan found too few functions";
    for (const char *n : {"asys_submit", "asys_umem_add", "async_exec", "umem_add", "asys_sock_recv",
                          "asys_socket_serve_flags", "asys_prep_read"})
        EXPECT_TRUE(all.count(n)) << n << " not found by the header scan";
    scenario_context();
    scenario_submit();
    scenario_batch();
    scenario_wait_peek_cancel();
    scenario_syslets();
    scenario_sockets();
    scenario_misc();
    std::string missing;
    for (const std::string &n : all)
        if (!called().count(n)) missing += " " + n;
    EXPECT_TRUE(missing.empty()) << "public functions no scenario calls:" << missing;
    std::string listed;
    for (const std::string &n : all) listed += " " + n;
    std::printf("checked %zu public functions:%s\n", all.size(), listed.c_str());
}

}  // namespace
