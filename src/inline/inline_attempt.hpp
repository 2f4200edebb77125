// The inline path: try an op on the caller's thread without blocking.
// Each op class has its own nonblocking probe (see docs/router.md).
#pragma once
#include <sys/syscall.h>
#include <sys/uio.h>

#include <cstdint>

#include "asys/asys.h"
#include "base/fault.hpp"
#include "base/opcodes.hpp"
#include "base/raw_syscall.hpp"

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

/// probe_read_buffer in full (out of line).
attempt probe_read_buffer_general(int fd, uint64_t buf, uint64_t len, int64_t off, bool positional, bool buffered,
                                  long *res) noexcept;
/// What probe_read_buffer makes of its unguarded nonblocking read of one
/// buffer at `off` (-1: the file position) that returned `r` (out of line).
attempt after_unguarded_read(int fd, uint64_t buf, uint64_t len, int64_t off, long r, long *res) noexcept;

/// READ (`positional` false: at the file position) and PREAD (at `off`) of
/// one buffer, probed exactly as try_inline probes those ops, for callers
/// that have no asys_op (asys_call's common case). Inline: a buffered read
/// (no guard) that the kernel completes in full costs its system call and
/// a few checks; anything else goes on out of line.
[[gnu::always_inline]] inline attempt probe_read_buffer(int fd, uint64_t buf, uint64_t len, int64_t off,
                                                        bool positional, bool buffered, long *res) noexcept {
    if (!buffered || len - 1 >= kMaxRwCount || (positional && off < 0))
        return probe_read_buffer_general(fd, buf, len, off, positional, buffered, res);
    const int64_t at = positional ? off : -1;
    struct iovec iov{reinterpret_cast<void *>(buf), len};
    long r = fault::injected_probe_error();  // tests only: one relaxed load
    if (r == 0)
        r = raw_syscall6(SYS_preadv2, static_cast<uint64_t>(fd), reinterpret_cast<uint64_t>(&iov), 1,
                         static_cast<uint64_t>(at), 0, RWF_NOWAIT);
    if (static_cast<uint64_t>(r) == len) [[likely]] {
        *res = r;
        return attempt::done;
    }
    return after_unguarded_read(fd, buf, len, at, r, res);
}

/// True when a read of this fd should skip the probe and go to a backend
/// untouched: a guarded probe of this fd number was refused by direct I/O
/// (EINVAL or EAGAIN from an O_DIRECT fd) and the fd is in O_DIRECT mode now (one fcntl(F_GETFL), paid
/// only by fds with the hint; a refused probe costs ~2.5 us). A number
/// reused for a buffered file loses the hint at its first read.
bool direct_hint_skips_probe(int fd) noexcept;

}  // namespace asys::internal
