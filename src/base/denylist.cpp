#include "base/denylist.hpp"

#include <linux/close_range.h>
#include <linux/futex.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>

#include <array>
#include <cerrno>

#include "base/raw_syscall.hpp"

namespace asys::internal {
namespace {

// Calls that fork, exec, exit, return from signals, or change the identity,
// credentials, namespaces, signal state or thread-local machinery of the
// thread they run on. Running any of them on a pool worker (or inline inside
// the library) would corrupt the worker or the process; they are refused.
constexpr long kDenied[] = {
    // process creation / replacement / exit
    SYS_fork, SYS_vfork, SYS_clone,
#ifdef SYS_clone3
    SYS_clone3,
#endif
    SYS_execve, SYS_execveat, SYS_exit, SYS_exit_group,
    // signal state of the thread (rt_sigtimedwait takes pending signals
    // of the thread it runs on: on a worker, the library's own)
    SYS_rt_sigreturn, SYS_rt_sigprocmask, SYS_rt_sigaction, SYS_rt_sigsuspend, SYS_sigaltstack,
    SYS_restart_syscall, SYS_rt_sigtimedwait,
    // waits for a signal delivered to the thread it runs on (a worker,
    // which blocks signals, would wait until cancelled)
    SYS_pause,
    // identity and credentials
    SYS_setuid, SYS_setgid, SYS_setreuid, SYS_setregid, SYS_setresuid, SYS_setresgid,
    SYS_setfsuid, SYS_setfsgid, SYS_setgroups, SYS_capset, SYS_setsid, SYS_setpgid,
    SYS_personality,
    // namespaces
    SYS_setns, SYS_unshare,
    // thread machinery that libc and the pool depend on
    SYS_prctl, SYS_seccomp, SYS_set_tid_address, SYS_set_robust_list,
#ifdef SYS_arch_prctl
    SYS_arch_prctl,
#endif
#ifdef SYS_set_thread_area
    SYS_set_thread_area,
#endif
#ifdef SYS_rseq
    SYS_rseq,
#endif
};

// IOPRIO_WHO_PROCESS (linux/ioprio.h, absent from older headers).
constexpr int kIoprioWhoProcess = 1;

/// When a row of kThreadCalls applies, by the call's arguments.
enum class target : uint8_t {
    always,
    arg_zero,          ///< args[arg] (a pid) is 0: the calling thread
    process_who_zero,  ///< args[0] (which) == value and args[1] (who) == 0
    arg_equals,        ///< args[arg] == value
    thread_clock,      ///< args[arg] is a clock of the calling thread's CPU time
    futex_pi,          ///< args[1] is a priority-inheritance futex operation
    capget_pid0,       ///< the header at args[0] names pid 0 (read through the kernel)
};

struct thread_call {
    long nr;
    thread_effect effect;
    target when;
    uint8_t arg;
    int value;
};

// Calls whose effect or answer depends on the thread that makes them, with
// the arguments for which they do (a call naming another thread by its id
// acts on that thread wherever it runs, and is not listed). The one table:
// generic submission refuses acts_on_caller rows (an `always` row is on the
// deny list by number: asys_syscall_allowed), runs reads_caller rows on the
// submitting thread whatever the flags (they never block), chains refuse
// both; threadlets and maybe_fork regions make both on their own thread.
// The calls that act on the thread and are refused whatever their
// arguments (signal state, prctl, sigaltstack, ...) are in kDenied.
constexpr thread_call kThreadCalls[] = {
    // The calling thread's identity and state, read.
    {SYS_gettid, thread_effect::reads_caller, target::always, 0, 0},
    {SYS_getcpu, thread_effect::reads_caller, target::always, 0, 0},
    {SYS_rt_sigpending, thread_effect::reads_caller, target::always, 0, 0},
    {SYS_get_mempolicy, thread_effect::reads_caller, target::always, 0, 0},
    {SYS_sched_getaffinity, thread_effect::reads_caller, target::arg_zero, 0, 0},
    {SYS_sched_getscheduler, thread_effect::reads_caller, target::arg_zero, 0, 0},
    {SYS_sched_getparam, thread_effect::reads_caller, target::arg_zero, 0, 0},
    {SYS_sched_getattr, thread_effect::reads_caller, target::arg_zero, 0, 0},
    {SYS_sched_rr_get_interval, thread_effect::reads_caller, target::arg_zero, 0, 0},
    {SYS_get_robust_list, thread_effect::reads_caller, target::arg_zero, 0, 0},
    {SYS_getpriority, thread_effect::reads_caller, target::process_who_zero, 0, PRIO_PROCESS},
    {SYS_ioprio_get, thread_effect::reads_caller, target::process_who_zero, 0, kIoprioWhoProcess},
    {SYS_getrusage, thread_effect::reads_caller, target::arg_equals, 0, RUSAGE_THREAD},
    {SYS_clock_gettime, thread_effect::reads_caller, target::thread_clock, 0, 0},
    {SYS_capget, thread_effect::reads_caller, target::capget_pid0, 0, 0},
    // The calling thread's state, changed (or bound to it).
    {SYS_sched_setaffinity, thread_effect::acts_on_caller, target::arg_zero, 0, 0},
    {SYS_sched_setscheduler, thread_effect::acts_on_caller, target::arg_zero, 0, 0},
    {SYS_sched_setparam, thread_effect::acts_on_caller, target::arg_zero, 0, 0},
    {SYS_sched_setattr, thread_effect::acts_on_caller, target::arg_zero, 0, 0},
    {SYS_setpriority, thread_effect::acts_on_caller, target::process_who_zero, 0, PRIO_PROCESS},
    {SYS_ioprio_set, thread_effect::acts_on_caller, target::process_who_zero, 0, kIoprioWhoProcess},
    {SYS_set_mempolicy, thread_effect::acts_on_caller, target::always, 0, 0},
#ifdef SYS_landlock_restrict_self
    {SYS_landlock_restrict_self, thread_effect::acts_on_caller, target::always, 0, 0},
#endif
    // The tracer is the thread that attached: later requests from any other fail.
    {SYS_ptrace, thread_effect::acts_on_caller, target::always, 0, 0},
    // Counters and timers of the calling thread (pid 0, its CPU clock).
    {SYS_perf_event_open, thread_effect::acts_on_caller, target::arg_zero, 1, 0},
    {SYS_timer_create, thread_effect::acts_on_caller, target::thread_clock, 0, 0},
    // A PI futex's owner is a thread id: a worker would own the lock.
    {SYS_futex, thread_effect::acts_on_caller, target::futex_pi, 0, 0},
    // A sleep on the calling thread's own CPU clock: EINVAL for the call,
    // a wait for the caller's CPU time on a worker.
    {SYS_clock_nanosleep, thread_effect::acts_on_caller, target::thread_clock, 0, 0},
    // Keyrings: the thread keyring and the session keyring a thread joins
    // are the calling thread's (its credentials); keyctl names them by
    // special ids in any of its arguments, so it is refused whole. add_key
    // and request_key into the thread keyring (KEY_SPEC_THREAD_KEYRING).
    {SYS_keyctl, thread_effect::acts_on_caller, target::always, 0, 0},
    {SYS_add_key, thread_effect::acts_on_caller, target::arg_equals, 4, -1},
    {SYS_request_key, thread_effect::acts_on_caller, target::arg_equals, 3, -1},
};

struct thread_call_map {
    uint8_t row[kMaxSyscallNr];  ///< 1 + index into kThreadCalls, 0: none
    constexpr thread_call_map() : row{} {
        for (unsigned i = 0; i < sizeof kThreadCalls / sizeof kThreadCalls[0]; ++i)
            row[kThreadCalls[i].nr] = static_cast<uint8_t>(i + 1);
    }
};
constexpr thread_call_map kThreadCallMap{};

constexpr auto make_table() {
    std::array<bool, kMaxSyscallNr> t{};
    for (long nr : kDenied) t[static_cast<std::size_t>(nr)] = true;
    for (const thread_call &c : kThreadCalls)
        if (c.effect == thread_effect::acts_on_caller && c.when == target::always) t[static_cast<std::size_t>(c.nr)] = true;
    return t;
}
constexpr auto kTable = make_table();

// A clock id naming the calling thread's CPU time: CLOCK_THREAD_CPUTIME_ID,
// or a CPU clock (negative, not a descriptor clock) of thread id 0.
bool is_calling_thread_clock(long id) noexcept {
    const auto c = static_cast<int32_t>(id);
    if (c == CLOCK_THREAD_CPUTIME_ID) return true;
    return c < 0 && (c & 7) != 3 && (c & 4) && ~(c >> 3) == 0;
}

bool futex_op_is_pi(uint64_t op) noexcept {
    switch (static_cast<int>(op) & FUTEX_CMD_MASK) {
        case FUTEX_LOCK_PI: case FUTEX_UNLOCK_PI: case FUTEX_TRYLOCK_PI: case FUTEX_WAIT_REQUEUE_PI:
        case FUTEX_CMP_REQUEUE_PI:
#ifdef FUTEX_LOCK_PI2
        case FUTEX_LOCK_PI2:
#endif
            return true;
        default:
            return false;
    }
}

bool row_applies(const thread_call &c, const uint64_t (&a)[6]) noexcept {
    switch (c.when) {
        case target::always: return true;
        case target::arg_zero: return static_cast<int32_t>(a[c.arg]) == 0;
        case target::process_who_zero: return static_cast<int32_t>(a[0]) == c.value && static_cast<int32_t>(a[1]) == 0;
        case target::arg_equals: return static_cast<int32_t>(a[c.arg]) == c.value;
        case target::thread_clock: return is_calling_thread_clock(static_cast<long>(a[c.arg]));
        case target::futex_pi: return futex_op_is_pi(a[1]);
        case target::capget_pid0: {
            uint32_t header[2];  // {version, pid}
            if (!a[0] || copy_from_caller(header, reinterpret_cast<const void *>(a[0]), sizeof header) != 0)
                return false;  // the call reports its own error
            return header[1] == 0;
        }
    }
    return false;
}

}  // namespace

bool may_read_calling_thread(long nr) noexcept {
    if (nr < 0 || nr >= kMaxSyscallNr) return false;
    const uint8_t row = kThreadCallMap.row[nr];
    return row && kThreadCalls[row - 1].effect == thread_effect::reads_caller;
}

thread_effect thread_effect_of(long nr, const uint64_t (&a)[6]) noexcept {
    if (nr < 0 || nr >= kMaxSyscallNr) return thread_effect::none;
    const uint8_t row = kThreadCallMap.row[nr];
    if (!row) return thread_effect::none;
    const thread_call &c = kThreadCalls[row - 1];
    return row_applies(c, a) ? c.effect : thread_effect::none;
}

int syscall_allowed(long nr) noexcept {
    if (nr < 0 || nr >= kMaxSyscallNr) return -ENOSYS;
    return kTable[static_cast<std::size_t>(nr)] ? -EPERM : 0;
}

int library_signal() noexcept { return SIGRTMAX - 3; }

namespace {

// pselect6's and io_pgetevents' last argument: {const sigset_t *, size_t}.
bool sigmask_pair_sets_mask(uint64_t ptr) noexcept {
    if (!ptr) return false;
    uint64_t pair[2];
    if (copy_from_caller(pair, reinterpret_cast<const void *>(ptr), sizeof pair) != 0)
        return false;  // a bad pointer: the call itself says EFAULT
    return pair[0] != 0;
}

}  // namespace

int syscall_allowed_with(long nr, const uint64_t (&a)[6]) noexcept {
    if (int rc = syscall_allowed(nr)) return rc;
    if (thread_effect_of(nr, a) == thread_effect::acts_on_caller) return -EPERM;
    switch (nr) {
        case SYS_ppoll: return a[3] ? -EPERM : 0;
        case SYS_epoll_pwait: return a[4] ? -EPERM : 0;
#ifdef SYS_epoll_pwait2
        case SYS_epoll_pwait2: return a[4] ? -EPERM : 0;
#endif
        case SYS_pselect6: return sigmask_pair_sets_mask(a[5]) ? -EPERM : 0;
#ifdef SYS_io_pgetevents
        case SYS_io_pgetevents: return sigmask_pair_sets_mask(a[5]) ? -EPERM : 0;
#endif
        case SYS_signalfd:
        case SYS_signalfd4: {
            uint64_t mask = 0;
            if (!a[1] || a[2] != sizeof mask ||
                copy_from_caller(&mask, reinterpret_cast<const void *>(a[1]), sizeof mask) != 0)
                return 0;  // the call reports its own error
            return (mask >> (library_signal() - 1)) & 1 ? -EPERM : 0;
        }
        case SYS_close_range: return (a[2] & CLOSE_RANGE_UNSHARE) ? -EPERM : 0;
        default: return 0;
    }
}

int syscall_allowed_in_chain(long nr, const uint64_t (&a)[6]) noexcept {
    if (int rc = syscall_allowed_with(nr, a)) return rc;
    return thread_effect_of(nr, a) == thread_effect::reads_caller ? -EPERM : 0;
}

}  // namespace asys::internal
