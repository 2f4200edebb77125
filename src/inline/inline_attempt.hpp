// The inline path: try an op on the caller's thread without blocking.
// Each op class has its own nonblocking probe (see docs/router.md).
#pragma once
#include <cstdint>

#include "asys/asys.h"

namespace asys::internal {

/// Vectored reads of more segments are never tried inline (so never come
/// back partly done).
constexpr unsigned kMaxProbeIov = 32;

enum class attempt : unsigned char {
    done,        ///< finished; *res holds the final result
    partial,     ///< *res bytes done; the remainder must run asynchronously
    would_block, ///< the probe said it would block; nothing was done
    refused,     ///< the file refused the probe's form (direct I/O, no nowait
                 ///< support): run it on a backend; nothing was done, and a
                 ///< positional read reached the file (it seeks)
    not_tried,   ///< no probe for this op (or it cannot be probed safely)
};

/// Never blocks (beyond what a cached syscall costs). Thread-safe.
/// `buffered`: the caller asserted the fd is not O_DIRECT (ASYS_F_BUFFERED).
/// `proved_buffered` (optional) is set when a read's O_DIRECT guard was
/// applied and the kernel transferred bytes through it: at that moment the
/// fd was not in direct mode.
attempt try_inline(const asys_op &op, bool buffered, long *res,
                   bool *proved_buffered = nullptr) noexcept;

/// READ (`positional` false: at the file position) and PREAD (at `off`) of
/// one buffer, probed exactly as try_inline probes those ops, for callers
/// that have no asys_op (asys_call's common case).
attempt probe_read_buffer(int fd, uint64_t buf, uint64_t len, int64_t off, bool positional, bool buffered,
                          long *res) noexcept;

/// True when a read of this fd should skip the probe and go to a backend
/// untouched: a guarded probe of this fd number was refused by direct I/O
/// (EINVAL or EAGAIN from an O_DIRECT fd) and the fd is in O_DIRECT mode now (one fcntl(F_GETFL), paid
/// only by fds with the hint; a refused probe costs ~2.5 us). A number
/// reused for a buffered file loses the hint at its first read.
bool direct_hint_skips_probe(int fd) noexcept;

}  // namespace asys::internal
