// The one list of system calls that generic submission refuses (-EPERM).
#pragma once

namespace asys::internal {

/// Highest syscall number accepted by generic submission (exclusive). Anything
/// at or above it (including x32's __X32_SYSCALL_BIT aliases) is -ENOSYS, so
/// an alias can never bypass the deny list.
constexpr long kMaxSyscallNr = 1024;

/// 0 if `nr` may run on a worker or inline, -EPERM if denied, -ENOSYS if out
/// of range. Thread-safe, no allocation.
int syscall_allowed(long nr) noexcept;

}  // namespace asys::internal
