#include "core/denylist.hpp"

#include <sys/syscall.h>

#include <array>
#include <cerrno>

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
    // signal state of the thread
    SYS_rt_sigreturn, SYS_rt_sigprocmask, SYS_rt_sigaction, SYS_rt_sigsuspend, SYS_sigaltstack,
    SYS_restart_syscall,
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

}  // namespace asys::internal
