// The descriptors the library itself owns (completion eventfds, io_uring
// rings and their eventfds, socket servers' sockets). Submitted calls must
// not close or replace them: close, dup2/dup3 onto one of them and
// close_range across them are kept away from them (see execute_op).
#pragma once
#include <cstdint>

namespace asys::internal::library_fds {

/// Marks / unmarks an fd as the library's. Thread-safe, lock-free.
/// Descriptors >= kMax are not tracked.
constexpr int kMax = 1 << 16;
void add(int fd) noexcept;
void remove(int fd) noexcept;
/// One relaxed load.
bool owns(int fd) noexcept;

/// Runs close(fd) / dup2 / dup3 / close_range as the caller asked, except
/// that the library's own descriptors are left alone: a close or dup onto
/// one of them is -EBADF (as if the fd were not the caller's), and
/// close_range closes the caller's descriptors around them. Returns true
/// (and *res) if `nr` is one of those calls; false for any other call.
bool run_sparing(long nr, const uint64_t (&args)[6], long *res) noexcept;

}  // namespace asys::internal::library_fds
