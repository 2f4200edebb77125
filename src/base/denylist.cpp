#include "base/denylist.hpp"

#include <linux/close_range.h>
#include <signal.h>
#include <sys/syscall.h>

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

constexpr auto make_table() {
    std::array<bool, kMaxSyscallNr> t{};
    for (long nr : kDenied) t[static_cast<std::size_t>(nr)] = true;
    return t;
}
constexpr auto kTable = make_table();

}  // namespace

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

}  // namespace asys::internal
