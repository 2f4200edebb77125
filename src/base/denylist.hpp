// The one list of system calls that generic submission refuses (-EPERM).
#pragma once
#include <cstdint>

namespace asys::internal {

/// Highest syscall number accepted by generic submission (exclusive). Anything
/// at or above it (including x32's __X32_SYSCALL_BIT aliases) is -ENOSYS, so
/// an alias can never bypass the deny list.
constexpr long kMaxSyscallNr = 1024;

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
int syscall_allowed_with(long nr, const uint64_t (&args)[6]) noexcept;

/// The signal the library uses to interrupt a pool worker's call on cancel.
int library_signal() noexcept;

}  // namespace asys::internal
