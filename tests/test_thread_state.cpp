// The calling thread's state on every path.
// 1. Code that blocks every signal inside a transparent threadlet or a
//    maybe_fork region (pthread_create, system() and popen() do) and then
//    makes a system call gets the plain result, and reads back the mask it
//    set (SIGSYS included), though SIGSYS stays deliverable for the traps.
// 2. Calls that change the calling thread's state are refused by generic
//    submission and chains, and run on the owner in threadlets; calls that
//    read it give the caller's answer (or a chain's refusal), never a pool
//    worker's; no worker's nice, affinity or I/O priority ever changes.
#include <dirent.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <asys/maybe_fork.h>
#include <asys/syslet.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "helpers.hpp"
#include "threadlet/dispatch.hpp"

using namespace asys_test;

namespace {

constexpr uint64_t kSigsys = uint64_t{1} << (SIGSYS - 1);

pid_t tid_now() { return static_cast<pid_t>(syscall(SYS_gettid)); }

uint64_t mask_now() {  // through libc's syscall(): trapped in transparent code
    uint64_t m = 0;
    syscall(SYS_rt_sigprocmask, SIG_BLOCK, nullptr, &m, 8);
    return m;
}

// What the program does: block every signal, make calls, read the mask
// back, restore it.
struct blocked_run {
    uint64_t during = 0, old = 0, after = 0;
    long ppid = 0;
};
long block_all_then_call(void *arg) {
    auto *r = static_cast<blocked_run *>(arg);
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    r->ppid = getppid();
    r->during = mask_now();
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    std::memcpy(&r->old, &old, sizeof r->old);
    r->after = mask_now();
    return r->ppid;
}

#define SKIP_UNDER_TSAN() \
    if (under_tsan()) GTEST_SKIP() << "transparent mode and maybe_fork are not supported under TSan"

long run_transparent(asys_ctx *ctx, asys_threadlet_fn fn, void *arg, bool *skipped) {
    asys_op op;
    long ret = -999;
    asys_prep_threadlet(&op, fn, arg, ASYS_THREADLET_TRANSPARENT);
    op.ret_ptr = &ret;
    const int rc = asys_submit(ctx, &op);
    *skipped = rc == -EOPNOTSUPP;
    if (rc == 0) {
        auto c = reap(ctx, 1);
        return c.size() == 1 ? c[0].res : -999998;
    }
    return rc == ASYS_DONE ? ret : rc;
}

#define RUN_TRANSPARENT(ctx, fn, arg, out)                                                  \
    do {                                                                                    \
        bool skipped_ = false;                                                              \
        (out) = run_transparent((ctx), (fn), (arg), &skipped_);                             \
        if (skipped_) GTEST_SKIP() << "SKIPPED: no syscall user dispatch in this kernel";   \
    } while (0)

TEST(TransparentSigmask, BlockAllThenCallGivesThePlainResultAndMask) {
    SKIP_UNDER_TSAN();
    ctx_guard ctx;
    blocked_run plain, tr;
    block_all_then_call(&plain);
    long r = 0;
    RUN_TRANSPARENT(ctx, block_all_then_call, &tr, r);
    EXPECT_EQ(r, getppid());
    EXPECT_EQ(tr.during, plain.during) << "the mask read back is the one set (SIGSYS blocked too)";
    EXPECT_NE(tr.during & kSigsys, 0u);
    EXPECT_EQ(tr.old, plain.old);
    EXPECT_EQ(tr.after, plain.after);
    EXPECT_EQ(mask_now(), plain.after) << "the owner's mask afterwards";
}

long system_status(void *) { return system("exit 3"); }
long popen_read(void *) {
    FILE *f = popen("echo popen-ok", "r");
    if (!f) return -errno;
    char buf[64] = {};
    const long n = static_cast<long>(fread(buf, 1, sizeof buf - 1, f));
    pclose(f);
    return std::strcmp(buf, "popen-ok\n") == 0 ? n : -1;
}
std::atomic<int> g_thread_ran{0};
void *mark_ran(void *) {
    g_thread_ran.fetch_add(1);
    return nullptr;
}
long create_thread(void *) {
    pthread_t t;
    if (pthread_create(&t, nullptr, mark_ran, nullptr) != 0) return -1;
    pthread_join(t, nullptr);
    return g_thread_ran.load();
}

TEST(TransparentSigmask, SystemPopenAndPthreadCreate) {
    SKIP_UNDER_TSAN();
    ctx_guard ctx;
    long r = 0;
    RUN_TRANSPARENT(ctx, system_status, nullptr, r);
    EXPECT_EQ(r, system_status(nullptr)) << "system()'s status";
    EXPECT_TRUE(WIFEXITED(r) && WEXITSTATUS(r) == 3) << r;
    RUN_TRANSPARENT(ctx, popen_read, nullptr, r);
    EXPECT_EQ(r, 9);
    g_thread_ran = 0;
    RUN_TRANSPARENT(ctx, create_thread, nullptr, r);
    EXPECT_EQ(r, 1) << "the created thread ran";
}

// A thread created with SIGSYS and SIGUSR2 blocked inherits that mask, as
// from plain code.
std::atomic<uint64_t> g_child_mask{0};
void *record_mask(void *) {
    uint64_t m = 0;
    syscall(SYS_rt_sigprocmask, SIG_BLOCK, nullptr, &m, 8);
    g_child_mask = m;
    return nullptr;
}
long create_with_mask(void *) {
    sigset_t s, old;
    sigemptyset(&s);
    sigaddset(&s, SIGSYS);
    sigaddset(&s, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &s, &old);
    pthread_t t;
    const int rc = pthread_create(&t, nullptr, record_mask, nullptr);
    if (rc == 0) pthread_join(t, nullptr);
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    return rc;
}

TEST(TransparentSigmask, NewThreadInheritsTheMaskSet) {
    SKIP_UNDER_TSAN();
    ctx_guard ctx;
    create_with_mask(nullptr);
    const uint64_t plain = g_child_mask.exchange(0);
    long r = 0;
    RUN_TRANSPARENT(ctx, create_with_mask, nullptr, r);
    EXPECT_EQ(r, 0);
    EXPECT_EQ(g_child_mask.load(), plain);
    EXPECT_NE(plain & kSigsys, 0u);
}

// A threadlet that leaves SIGSYS blocked leaves its owner with it blocked
// (the mask is the thread's), and one that parks with every signal blocked
// hands that mask to its owner while parked, and reads it back on resume.
long block_sigsys_and_return(void *) {
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGSYS);
    return pthread_sigmask(SIG_BLOCK, &s, nullptr);
}

struct parked_run {
    int fd;
    uint64_t before = 0, after = 0;
    long n = 0;
    sigset_t old{};
};
long block_all_and_park(void *arg) {
    auto *p = static_cast<parked_run *>(arg);
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &p->old);
    p->before = mask_now();
    char c;
    p->n = read(p->fd, &c, 1);  // parks: the pipe is empty
    p->after = mask_now();
    pthread_sigmask(SIG_SETMASK, &p->old, nullptr);
    return getppid();
}

TEST(TransparentSigmask, MaskGoesToTheOwnerAndComesBack) {
    SKIP_UNDER_TSAN();
    ctx_guard ctx;
    const uint64_t start = mask_now();
    long r = 0;
    RUN_TRANSPARENT(ctx, block_sigsys_and_return, nullptr, r);
    EXPECT_EQ(r, 0);
    EXPECT_EQ(mask_now(), start | kSigsys) << "the owner keeps the mask its threadlet set";
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, &start, nullptr, 8);

    pipe_pair pp;
    parked_run p;
    p.fd = pp.r;
    asys_op op;
    long ret = -1;
    asys_prep_threadlet(&op, block_all_and_park, &p, ASYS_THREADLET_TRANSPARENT);
    op.ret_ptr = &ret;
    const int rc = asys_submit(ctx, &op);
    if (rc == -EOPNOTSUPP) GTEST_SKIP() << "SKIPPED: no syscall user dispatch in this kernel";
    ASSERT_EQ(rc, 0) << "parked in read";
    EXPECT_EQ(mask_now(), p.before) << "the owner goes on with the mask of the trapped code";
    EXPECT_NE(p.before & kSigsys, 0u);
    ASSERT_EQ(syscall(SYS_rt_sigprocmask, SIG_SETMASK, &start, nullptr, 8), 0);  // the owner's own change
    ASSERT_EQ(write(pp.w, "x", 1), 1);
    auto c = reap(ctx, 1);
    ASSERT_EQ(c.size(), 1u);
    EXPECT_EQ(c[0].res, getppid());
    EXPECT_EQ(p.n, 1);
    EXPECT_EQ(p.after, start) << "on resume, the thread's mask of that moment";
    EXPECT_EQ(mask_now(), start);
}

// A handler whose sa_mask blocks every signal (SIGSYS too) runs while a
// transparent threadlet's own code runs: its calls and its return trap, so
// SIGSYS is left out of the kernel's copy of its mask; a query made through
// trapped code gets the mask as the program set it.
std::atomic<int> g_spinning{0}, g_handled{0};
std::atomic<long> g_handler_ppid{0};
void on_usr2(int) {
    g_handler_ppid = getppid();  // a system call inside the handler
    g_handled.fetch_add(1);
}
long spin_until_handled(void *) {
    g_spinning = 1;
    while (!g_handled.load()) {
    }
    return getppid();
}
struct full_mask_query {
    uint64_t mask = 0;
};
long install_full_mask_handler(void *arg) {
    struct sigaction sa {};
    sa.sa_handler = on_usr2;
    sigfillset(&sa.sa_mask);
    if (sigaction(SIGUSR2, &sa, nullptr) != 0) return -errno;
    struct sigaction back {};
    if (sigaction(SIGUSR2, nullptr, &back) != 0) return -errno;
    std::memcpy(&static_cast<full_mask_query *>(arg)->mask, &back.sa_mask, sizeof(uint64_t));
    return 0;
}

void signal_while_spinning(asys_ctx *ctx) {
    g_spinning = 0;
    g_handled = 0;
    const pid_t owner = tid_now();
    std::thread sender([owner] {
        while (!g_spinning.load()) sched_yield();
        syscall(SYS_tgkill, getpid(), owner, SIGUSR2);
    });
    long r = 0;
    bool skipped = false;
    r = run_transparent(ctx, spin_until_handled, nullptr, &skipped);
    sender.join();
    EXPECT_EQ(r, getppid());
    EXPECT_EQ(g_handled.load(), 1);
    EXPECT_EQ(g_handler_ppid.load(), getppid());
}

TEST(TransparentSigmask, HandlerWhoseMaskBlocksSigsys) {
    SKIP_UNDER_TSAN();
    ctx_guard ctx;
    struct sigaction old {};
    sigaction(SIGUSR2, nullptr, &old);
    // Installed by trapped code.
    full_mask_query plain, trapped;
    ASSERT_EQ(install_full_mask_handler(&plain), 0);
    long r = 0;
    RUN_TRANSPARENT(ctx, install_full_mask_handler, &trapped, r);
    ASSERT_EQ(r, 0);
    EXPECT_EQ(trapped.mask, plain.mask) << "the mask read back is the one set";
    EXPECT_NE(trapped.mask & kSigsys, 0u);
    signal_while_spinning(ctx);
    // Installed by untrapped code before transparent mode starts (dispatch_init's pass).
    ASSERT_EQ(install_full_mask_handler(&plain), 0);
    asys::internal::hide_sigsys_from_handlers();
    signal_while_spinning(ctx);
    sigaction(SIGUSR2, &old, nullptr);
}

// maybe_fork: the proposal's region with every signal blocked.
TEST(MaybeForkSigmask, BlockAllThenCallInARegion) {
    SKIP_UNDER_TSAN();
    const uint64_t start = mask_now();
    blocked_run plain;
    block_all_then_call(&plain);
    static blocked_run in_region;  // static: no fork happens (getppid never blocks), but stay safe
    static jmp_buf b;
    volatile int end = -1;
    const int pid = maybe_fork(&b, FORK_ON_BLOCKING);
    if (pid == -EOPNOTSUPP) GTEST_SKIP() << "SKIPPED: no syscall user dispatch in this kernel";
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        block_all_then_call(&in_region);
        // SIGSYS blocked when the region ends stays blocked.
        sigset_t s;
        sigemptyset(&s);
        sigaddset(&s, SIGSYS);
        pthread_sigmask(SIG_BLOCK, &s, nullptr);
        end = maybe_fork(nullptr, MAYBE_FORK_END);
        if (end) _exit(0);  // a child (nothing here blocks: never)
    }
    EXPECT_EQ(pid, 0) << "nothing blocked: no fork";
    EXPECT_EQ(end, 0);
    EXPECT_EQ(in_region.ppid, getppid());
    EXPECT_EQ(in_region.during, plain.during);
    EXPECT_EQ(in_region.after, plain.after);
    EXPECT_EQ(mask_now(), start | kSigsys) << "the mask set in the region, after it";
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, &start, nullptr, 8);
}

TEST(MaybeForkSigmask, ForkWithEveryThingBlocked) {
    SKIP_UNDER_TSAN();
    const uint64_t start = mask_now();
    blocked_run plain;
    block_all_then_call(&plain);
    static uint64_t expected;
    expected = plain.during;
    pipe_pair pp;
    static jmp_buf b;
    const int pid = maybe_fork(&b, FORK_ON_BLOCKING);
    if (pid == -EOPNOTSUPP) GTEST_SKIP() << "SKIPPED: no syscall user dispatch in this kernel";
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        sigset_t all;
        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, nullptr);
        char c;
        (void)!read(pp.r, &c, 1);  // blocks: the parent returns with the child's pid
        // The child: the mask it set, SIGSYS included.
        const uint64_t m = mask_now();
        const int me = maybe_fork(nullptr, MAYBE_FORK_END);
        if (me) _exit(m == expected ? 7 : 8);
        _exit(9);  // not reached: the read blocks
    }
    // The parent: it gets the mask of the trapped code back (every signal blocked).
    const uint64_t parent_mask = mask_now();
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, &start, nullptr, 8);
    ASSERT_EQ(write(pp.w, "x", 1), 1);
    int st = 0;
    ASSERT_EQ(waitpid(pid, &st, 0), pid);
    EXPECT_TRUE(WIFEXITED(st)) << "the child was killed: signal " << (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    EXPECT_EQ(WEXITSTATUS(st), 7) << "the child's mask read back";
    EXPECT_NE(parent_mask & kSigsys, 0u);
}

// ---- Calls that act on or read the calling thread ----

constexpr int kIoprioWhoProcess = 1;
constexpr long ioprio_value(long cls, long data) { return (cls << 13) | data; }

struct thread_state {
    int nice;
    long ioprio;
    cpu_set_t cpus;
};
thread_state state_of(pid_t tid) {
    thread_state s{};
    errno = 0;
    s.nice = getpriority(PRIO_PROCESS, static_cast<id_t>(tid));
    s.ioprio = syscall(SYS_ioprio_get, kIoprioWhoProcess, tid);
    CPU_ZERO(&s.cpus);
    sched_getaffinity(tid, sizeof s.cpus, &s.cpus);
    return s;
}
bool same_state(const thread_state &a, const thread_state &b) {
    return a.nice == b.nice && a.ioprio == b.ioprio && CPU_EQUAL(&a.cpus, &b.cpus);
}

// The process's threads, but the kernel's io_uring threads (iou-wrk-*,
// iou-sqp-*), whose affinity the kernel sets.
std::vector<pid_t> task_ids() {
    std::vector<pid_t> v;
    DIR *d = opendir("/proc/self/task");
    while (dirent *e = readdir(d)) {
        if (e->d_name[0] == '.') continue;
        std::ifstream comm(std::string("/proc/self/task/") + e->d_name + "/comm");
        std::string name;
        std::getline(comm, name);
        if (name.rfind("iou-", 0) == 0) continue;
        v.push_back(static_cast<pid_t>(atoi(e->d_name)));
    }
    closedir(d);
    return v;
}

// Every thread but `except` (the caller whose state the test changes) has
// the process's first state.
void expect_others_untouched(const thread_state &base, pid_t except) {
    for (pid_t tid : task_ids()) {
        if (tid == except) continue;
        const thread_state s = state_of(tid);
        EXPECT_TRUE(same_state(s, base)) << "thread " << tid << " changed: nice " << s.nice << ", ioprio " << s.ioprio
                                         << ", cpus " << CPU_COUNT(&s.cpus);
    }
}

long submit_syscall(asys_ctx *ctx, long nr, std::initializer_list<long> args, uint32_t flags, uint32_t *path = nullptr) {
    uint64_t a[6] = {};
    unsigned i = 0;
    for (long v : args) a[i++] = static_cast<uint64_t>(v);
    asys_op op;
    asys_prep_syscall(&op, nr, a);
    op.flags = flags;
    return run(ctx, op, path);
}

// The calls that change the calling thread, with arguments naming it.
struct setter {
    const char *name;
    long nr;
    long a0, a1, a2;
};
cpu_set_t g_one_cpu;
// One CPU the process may run on (the first of its affinity).
cpu_set_t first_cpu_of(const cpu_set_t &set) {
    cpu_set_t one;
    CPU_ZERO(&one);
    for (int i = 0; i < CPU_SETSIZE; ++i)
        if (CPU_ISSET(i, &set)) {
            CPU_SET(i, &one);
            break;
        }
    return one;
}
sched_param g_param{};
const struct timespec g_second{1, 0};
const setter kSetters[] = {
    {"keyctl(GET_KEYRING_ID, THREAD, create)", SYS_keyctl, 0 /*KEYCTL_GET_KEYRING_ID*/, -1 /*KEY_SPEC_THREAD_KEYRING*/, 1},
    {"clock_nanosleep(the thread's CPU clock)", SYS_clock_nanosleep, CLOCK_THREAD_CPUTIME_ID, 0,
     reinterpret_cast<long>(&g_second)},
    {"sched_setaffinity(0)", SYS_sched_setaffinity, 0, sizeof(cpu_set_t), reinterpret_cast<long>(&g_one_cpu)},
    {"setpriority(PRIO_PROCESS, 0)", SYS_setpriority, PRIO_PROCESS, 0, 7},
    {"ioprio_set(WHO_PROCESS, 0)", SYS_ioprio_set, kIoprioWhoProcess, 0, ioprio_value(2, 7)},
    {"sched_setscheduler(0)", SYS_sched_setscheduler, 0, SCHED_BATCH, reinterpret_cast<long>(&g_param)},
    {"sched_setparam(0)", SYS_sched_setparam, 0, reinterpret_cast<long>(&g_param), 0},
    {"set_mempolicy", SYS_set_mempolicy, 0 /*MPOL_DEFAULT*/, 0, 0},
    {"pause", SYS_pause, 0, 0, 0},
    {"ptrace(TRACEME)", SYS_ptrace, 0, 0, 0},
};

TEST(ThreadCalls, GenericSubmissionRefusesWhatChangesTheCaller) {
    const thread_state base = state_of(tid_now());
    g_one_cpu = first_cpu_of(base.cpus);
    asys_params never{};
    never.flags = ASYS_CTX_INLINE_NEVER;
    ctx_guard ctx, nctx(&never);
    for (const setter &s : kSetters) {
        for (uint32_t f : {0u, unsigned{ASYS_F_ASYNC}, unsigned{ASYS_F_SYNC}, unsigned{ASYS_F_NOWAIT}}) {
            EXPECT_EQ(submit_syscall(ctx, s.nr, {s.a0, s.a1, s.a2}, f), -EPERM) << s.name << " flags " << f;
            EXPECT_EQ(submit_syscall(nctx, s.nr, {s.a0, s.a1, s.a2}, f), -EPERM) << s.name << " flags " << f;
        }
        long st = -1;
        EXPECT_EQ(asys_async(&st, s.nr, s.a0, s.a1, s.a2, 0L, 0L, 0L), -EPERM) << s.name;
        asys_op batch[2];
        uint64_t a[6] = {static_cast<uint64_t>(s.a0), static_cast<uint64_t>(s.a1), static_cast<uint64_t>(s.a2)};
        asys_prep_syscall(&batch[0], s.nr, a);
        int status[1] = {1};
        EXPECT_EQ(asys_submit_batch(ctx, batch, 1, status), -EPERM) << s.name;
    }
    EXPECT_EQ(asys_syscall_allowed(SYS_set_mempolicy), -EPERM);
    EXPECT_EQ(asys_syscall_allowed(SYS_pause), -EPERM);
    EXPECT_EQ(asys_syscall_allowed(SYS_setpriority), 0) << "refused only for the calling thread";
    expect_others_untouched(base, 0);
    EXPECT_TRUE(same_state(state_of(tid_now()), base));
}

// In a thread of its own (a raised nice cannot be lowered again): the
// caller's state made distinct from the workers', then read on every path.
TEST(ThreadCalls, ReadersGiveTheCallersAnswerOnEveryPath) {
    const thread_state base = state_of(tid_now());
    asys_params one{}, never{};
    one.workers = 1;
    never.flags = ASYS_CTX_INLINE_NEVER;
    ctx_guard ctx(&one), nctx(&never);
    // The worker starts from this thread (a worker inherits its creator's
    // nice, I/O priority and affinity), before the caller's state changes.
    // So do the default context's (asys_async), made on first use.
    EXPECT_EQ(submit_syscall(ctx, SYS_getppid, {}, ASYS_F_ASYNC), getppid());
    ASSERT_NE(asys_default_ctx(), nullptr);
    std::thread([&] {
        const pid_t me = tid_now();
        ASSERT_EQ(setpriority(PRIO_PROCESS, 0, 5), 0);
        ASSERT_EQ(syscall(SYS_ioprio_set, kIoprioWhoProcess, 0, ioprio_value(2, 6)), 0);
        cpu_set_t mine = first_cpu_of(base.cpus);
        ASSERT_EQ(sched_setaffinity(0, sizeof mine, &mine), 0);
        const long kernel_prio = syscall(SYS_getpriority, PRIO_PROCESS, 0);
        const long ioprio = syscall(SYS_ioprio_get, kIoprioWhoProcess, 0);
        cpu_set_t got;
        for (asys_ctx *c : {static_cast<asys_ctx *>(ctx), static_cast<asys_ctx *>(nctx)}) {
            for (uint32_t f : {0u, unsigned{ASYS_F_ASYNC}, unsigned{ASYS_F_SYNC}, unsigned{ASYS_F_NOWAIT}}) {
                uint32_t path = 0;
                EXPECT_EQ(submit_syscall(c, SYS_gettid, {}, f, &path), me) << f;
                EXPECT_EQ(path, ASYS_PATH_INLINE);
                EXPECT_EQ(submit_syscall(c, SYS_getpriority, {PRIO_PROCESS, 0}, f), kernel_prio) << f;
                EXPECT_EQ(submit_syscall(c, SYS_ioprio_get, {kIoprioWhoProcess, 0}, f), ioprio) << f;
                CPU_ZERO(&got);
                EXPECT_GT(submit_syscall(c, SYS_sched_getaffinity, {0, sizeof got, reinterpret_cast<long>(&got)}, f), 0);
                EXPECT_TRUE(CPU_EQUAL(&got, &mine)) << f;
            }
        }
        long st = -1;
        EXPECT_EQ(asys_async(&st, SYS_getpriority, long{PRIO_PROCESS}, 0L, 0L, 0L, 0L, 0L), ASYS_DONE);
        EXPECT_EQ(st, kernel_prio);
        // A call naming the caller by its id acts on it from any thread.
        cpu_set_t all = base.cpus;
        EXPECT_EQ(submit_syscall(ctx, SYS_sched_setaffinity, {me, sizeof all, reinterpret_cast<long>(&all)}, ASYS_F_ASYNC), 0);
        CPU_ZERO(&got);
        sched_getaffinity(0, sizeof got, &got);
        EXPECT_TRUE(CPU_EQUAL(&got, &base.cpus)) << "the caller's affinity, set by its id";
        expect_others_untouched(base, me);
    }).join();
    expect_others_untouched(base, 0);
}

// ASYNC promises a completion: a reading call made on the submitting thread
// is still accepted (0), and its answer arrives as an entry, not as an
// inline ASYS_DONE a caller waiting for the entry would never get.
TEST(ThreadCalls, AnAsyncReaderStillCompletesWithAnEntry) {
    ctx_guard ctx;
    for (const bool batch : {false, true}) {
        SCOPED_TRACE(batch ? "batch" : "asys_submit");
        uint64_t a[6] = {};
        asys_op op;
        asys_prep_syscall(&op, SYS_gettid, a);
        op.flags = ASYS_F_ASYNC;
        op.user_data = 77;
        long ret = -1;
        op.ret_ptr = &ret;
        int status = -1;
        EXPECT_EQ(batch ? asys_submit_batch(ctx, &op, 1, &status) : asys_submit(ctx, &op), batch ? 1 : 0);
        if (batch) EXPECT_EQ(status, 0);
        const auto c = reap(ctx, 1);
        ASSERT_EQ(c.size(), 1u);
        EXPECT_EQ(c[0].user_data, 77u);
        EXPECT_EQ(c[0].res, tid_now());
        EXPECT_EQ(c[0].path, ASYS_PATH_INLINE) << "made on the submitting thread";
        EXPECT_EQ(ret, tid_now());
    }
}

// A chain may move to a worker before any atom: its atoms refuse both kinds.
TEST(ThreadCalls, ChainsRefuseBoth) {
    ctx_guard ctx;
    const thread_state base = state_of(tid_now());
    for (uint32_t chain_flags : {0u, unsigned{ASYS_F_ASYNC}}) {
        for (unsigned atom_flags : {0u, unsigned{SYSLET_ASYNC}}) {
            for (long nr : {long{SYS_gettid}, long{SYS_getpriority}, long{SYS_setpriority}}) {
                unsigned long a0 = PRIO_PROCESS, a1 = 0, a2 = 7;
                long res = -1;
                syslet_uatom at{};
                at.nr = static_cast<unsigned long>(nr);
                at.flags = atom_flags;
                at.arg_ptr[0] = &a0;
                at.arg_ptr[1] = &a1;
                at.arg_ptr[2] = &a2;
                at.ret_ptr = &res;
                asys_op op;
                syslet_uatom *last = nullptr;
                asys_prep_chain(&op, &at, &last);
                op.flags = chain_flags;
                EXPECT_EQ(run(ctx, op), -EPERM) << nr << " chain flags " << chain_flags << " atom flags " << atom_flags;
                EXPECT_EQ(res, -EPERM);
            }
        }
    }
    expect_others_untouched(base, 0);
    EXPECT_TRUE(same_state(state_of(tid_now()), base));
}

// Inside a threadlet, asys_call (and transparent mode's trapped libc calls)
// is the plain call: on the owner.
long set_and_read(void *arg) {
    auto *out = static_cast<long *>(arg);
    out[0] = asys_call(SYS_setpriority, long{PRIO_PROCESS}, 0L, 9L, 0L, 0L, 0L);
    out[1] = asys_call(SYS_ioprio_set, long{kIoprioWhoProcess}, 0L, ioprio_value(2, 7), 0L, 0L, 0L);
    out[2] = asys_call(SYS_getpriority, long{PRIO_PROCESS}, 0L, 0L, 0L, 0L, 0L);
    out[3] = asys_call(SYS_gettid, 0L, 0L, 0L, 0L, 0L, 0L);
    return 0;
}
long set_and_read_libc(void *arg) {
    auto *out = static_cast<long *>(arg);
    out[0] = setpriority(PRIO_PROCESS, 0, 11);
    out[1] = syscall(SYS_ioprio_set, kIoprioWhoProcess, 0, ioprio_value(2, 5));
    out[2] = getpriority(PRIO_PROCESS, 0);
    out[3] = syscall(SYS_gettid);
    return 0;
}

TEST(ThreadCalls, ThreadletsMakeThemOnTheOwner) {
    const thread_state base = state_of(tid_now());
    ctx_guard ctx;
    for (uint32_t f : {0u, unsigned{ASYS_F_ASYNC}, unsigned{ASYS_F_SYNC}}) {
        std::thread([&] {
            const pid_t me = tid_now();
            long out[4] = {};
            asys_op op;
            long ret = -1;
            asys_prep_threadlet(&op, set_and_read, out, 0);
            op.ret_ptr = &ret;
            op.flags = f;
            ASSERT_EQ(asys_submit(ctx, &op), ASYS_DONE) << "nothing here parks";
            EXPECT_EQ(out[0], 0);
            EXPECT_EQ(out[1], 0);
            EXPECT_EQ(out[2], 20 - 9) << "the kernel's form";
            EXPECT_EQ(out[3], me);
            EXPECT_EQ(getpriority(PRIO_PROCESS, 0), 9) << "the owner's nice";
            EXPECT_EQ(syscall(SYS_ioprio_get, kIoprioWhoProcess, 0), ioprio_value(2, 7));
            expect_others_untouched(base, me);
        }).join();
    }
    if (under_tsan()) return;  // transparent mode is not supported there
    std::thread([&] {
        const pid_t me = tid_now();
        long out[4] = {};
        asys_op op;
        long ret = -1;
        asys_prep_threadlet(&op, set_and_read_libc, out, ASYS_THREADLET_TRANSPARENT);
        op.ret_ptr = &ret;
        const int rc = asys_submit(ctx, &op);
        if (rc == -EOPNOTSUPP) return;  // no syscall user dispatch: the part above ran
        ASSERT_EQ(rc, ASYS_DONE);
        EXPECT_EQ(out[0], 0);
        EXPECT_EQ(out[1], 0);
        EXPECT_EQ(out[2], 11);
        EXPECT_EQ(out[3], me);
        EXPECT_EQ(getpriority(PRIO_PROCESS, 0), 11);
        EXPECT_EQ(syscall(SYS_ioprio_get, kIoprioWhoProcess, 0), ioprio_value(2, 5));
        expect_others_untouched(base, me);
    }).join();
    expect_others_untouched(base, 0);
}

}  // namespace
