// The one list of system calls that generic submission refuses (-EPERM).
#pragma once
#include <cstdint>

namespace asys::internal {

/// Highest syscall number accepted by generic submission (exclusive). Anything
/// at or above it (including x32's __X32_SYSCALL_BIT aliases) is -ENOSYS, so
/// an alias can never bypass the deny list.
constexpr long kMaxSyscallNr = 1024;

/// How a system call relates to the thread that makes it (for its
/// arguments): the table is kThreadCalls in denylist.cpp.
enum class thread_effect : uint8_t {
    none,            ///< the same whichever thread makes it
    reads_caller,    ///< reads the calling thread's identity or state (never blocks)
    acts_on_caller,  ///< changes the calling thread's state, or binds something to the thread
};

/// The call's thread_effect with these arguments (reads a capget header
/// through the kernel).
thread_effect thread_effect_of(long nr, const uint64_t (&args)[6]) noexcept;

/// Whether `nr` reads the calling thread's state for some arguments (such
/// calls never block, whatever the arguments).
bool may_read_calling_thread(long nr) noexcept;

/// 0 if `nr` may run on a worker or inline, -EPERM if denied, -ENOSYS if out
/// of range. Thread-safe, no allocation.
int syscall_allowed(long nr) noexcept;

/// syscall_allowed(), then the calls that are refused only with some
/// arguments: a signal mask argument (ppoll, pselect6, epoll_pwait,
/// epoll_pwait2, io_pgetevents) changes the signal mask of the thread it
/// runs on for the call's duration; a signalfd for the library's signal
/// would consume it; close_range with CLOSE_RANGE_UNSHARE gives the thread
/// its own descriptor table. Reads a caller's struct only through the
/// kernel (a bad pointer is left for the call to report).
/// Also -EPERM for the calls that act on the calling thread with these
/// arguments (thread_effect::acts_on_caller: a worker's state would change).
int syscall_allowed_with(long nr, const uint64_t (&args)[6]) noexcept;

/// A syslet atom's check: syscall_allowed_with(), and -EPERM for the calls
/// that read the calling thread's state too (a chain may move to a worker
/// before any atom: its answer would be the worker's).
int syscall_allowed_in_chain(long nr, const uint64_t (&args)[6]) noexcept;

/// Whether generic submission runs this call on the submitting thread
/// whatever the op's flags: it reads the calling thread's state and never
/// blocks.
inline bool runs_on_submitter(long nr, const uint64_t (&args)[6]) noexcept {
    return thread_effect_of(nr, args) == thread_effect::reads_caller;
}

/// The signal the library uses to interrupt a pool worker's call on cancel.
int library_signal() noexcept;

}  // namespace asys::internal
