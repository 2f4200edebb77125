#include "inline/inline_attempt.hpp"

#include <fcntl.h>
#include <linux/openat2.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>

#include <cerrno>

#include "core/fault.hpp"
#include "core/opcodes.hpp"
#include "core/raw_syscall.hpp"

namespace asys::internal {
namespace {

constexpr unsigned kMaxProbeIov = 32;

// Every probe's system call goes through here (fault injection for tests:
// one relaxed load when unset).
inline long probe_syscall(long nr, uint64_t a0, uint64_t a1, uint64_t a2, uint64_t a3, uint64_t a4,
                          uint64_t a5) noexcept {
    if (long injected = fault::injected_probe_error()) return injected;
    return raw_syscall6(nr, a0, a1, a2, a3, a4, a5);
}

// True if the short count `got` at a regular file's position ends at EOF,
// so the result is final. Only runs on the (rare) short path.
bool short_is_final(int fd, bool positional, int64_t off, long got) noexcept {
    struct stat st;
    if (raw_syscall6(SYS_fstat, static_cast<uint64_t>(fd), reinterpret_cast<uint64_t>(&st), 0, 0,
                     0, 0) < 0)
        return true;
    if (!S_ISREG(st.st_mode)) return true;  // pipes, sockets, ttys: short is normal
    int64_t pos;
    if (positional) {
        pos = off + got;
    } else {
        pos = raw_syscall6(SYS_lseek, static_cast<uint64_t>(fd), 0, SEEK_CUR, 0, 0, 0);
        if (pos < 0) return true;
    }
    return pos >= st.st_size;
}

// Buffered and stream reads: preadv2(RWF_NOWAIT).
//
// The O_DIRECT guard. An O_DIRECT read with RWF_NOWAIT still waits for the
// device (221 us measured here), so it must never run on the caller. Knowing
// a descriptor's mode would take a syscall per op (F_GETFL) or a per-fd cache
// that goes stale when an fd number is reused. Instead the probe itself is
// made unacceptable to direct I/O and harmless to buffered I/O: the first
// byte of the request is read into a detached scratch byte at an odd address
// and copied into place afterwards. Direct I/O then sees a misaligned,
// unmergeable segment and fails at once with EINVAL (the op then goes to the
// backend untouched); a buffered read fills the same bytes. Splitting the
// user's buffer in place ({buf,1},{buf+1,n-1}) is NOT enough: Linux 6.18
// merges contiguous segments and performed the direct read (56 us, tested).
// The guard is skipped when the request is already not 512-aligned (direct
// I/O refuses it anyway) or the caller asserted a buffered fd. Cost here:
// ~30-40 ns per read (two segments lose the kernel's single-buffer path).
attempt probe_read(const asys_op &op, bool buffered, long *res, bool *proved_buffered) noexcept {
    const int fd = static_cast<int>(op.args[0]);
    const bool vectored = op.opcode == ASYS_OP_READV || op.opcode == ASYS_OP_PREADV;
    int64_t off = -1;  // -1: the file position (read, readv, preadv at -1)
    if (op.opcode == ASYS_OP_PREAD || op.opcode == ASYS_OP_PREADV) {
        off = static_cast<int64_t>(op.args[3]);
        if (off < 0 && op.opcode == ASYS_OP_PREAD) return attempt::not_tried;  // EINVAL later
    }
    const bool positional = off >= 0;
    int rwf = op.opcode == ASYS_OP_PREADV ? static_cast<int>(op.args[4]) : 0;

    struct iovec iov[kMaxProbeIov + 1];
    unsigned cnt = 0;
    uint64_t total = 0;
    if (vectored) {
        const auto *uiov = reinterpret_cast<const struct iovec *>(op.args[1]);
        const uint64_t n = op.args[2];
        if (n == 0 || n > kMaxProbeIov || !uiov) return attempt::not_tried;
        for (uint64_t i = 0; i < n; ++i) {
            if (uiov[i].iov_len == 0) continue;
            iov[cnt++] = uiov[i];
            total += uiov[i].iov_len;
        }
    } else {
        iov[0].iov_base = reinterpret_cast<void *>(op.args[1]);
        iov[0].iov_len = op.args[2];
        cnt = 1;
        total = op.args[2];
    }
    if (total == 0) return attempt::not_tried;

    alignas(16) char scratch[2];
    char *first_byte = nullptr;
    const uint64_t align = (positional ? static_cast<uint64_t>(off) : 0) | total;
    if (!buffered && (align & 511) == 0) {
        first_byte = static_cast<char *>(iov[0].iov_base);
        if (iov[0].iov_len == 1) {
            iov[0].iov_base = &scratch[1];
        } else {
            for (unsigned i = cnt; i > 0; --i) iov[i] = iov[i - 1];
            iov[0].iov_base = &scratch[1];
            iov[0].iov_len = 1;
            iov[1].iov_base = first_byte + 1;
            iov[1].iov_len -= 1;
            ++cnt;
        }
    }
    long r = probe_syscall(SYS_preadv2, static_cast<uint64_t>(fd), reinterpret_cast<uint64_t>(iov),
                          cnt, static_cast<uint64_t>(off), 0,
                          static_cast<uint64_t>(rwf | RWF_NOWAIT));
    if (r == -EAGAIN || r == -EINTR) return attempt::would_block;
    // EOPNOTSUPP: no nowait support (ttys, some filesystems); EINVAL: direct
    // I/O refusing the guard (or a real EINVAL the backend will report
    // again). Both: run it asynchronously, untouched.
    if (r == -EOPNOTSUPP || r == -EINVAL) return attempt::not_tried;
    if (first_byte && r > 0) {
        *first_byte = scratch[1];
        if (proved_buffered) *proved_buffered = true;
    }
    *res = r;
    if (r <= 0 || static_cast<uint64_t>(r) == total) return attempt::done;
    if ((rwf & RWF_NOWAIT) || short_is_final(fd, positional, off, r)) return attempt::done;
    return attempt::partial;
}

attempt probe_recv(const asys_op &op, long *res) noexcept {
    const auto flags = static_cast<int>(op.args[3]);
    if (flags & MSG_WAITALL) return attempt::not_tried;
    long r = probe_syscall(SYS_recvfrom, op.args[0], op.args[1], op.args[2],
                          static_cast<uint64_t>(flags | MSG_DONTWAIT), 0, 0);
    if (r == -EAGAIN || r == -EINTR) return attempt::would_block;
    *res = r;
    return attempt::done;
}

attempt probe_send(const asys_op &op, long *res) noexcept {
    const auto flags = static_cast<int>(op.args[3]);
    long r = probe_syscall(SYS_sendto, op.args[0], op.args[1], op.args[2],
                          static_cast<uint64_t>(flags | MSG_DONTWAIT), 0, 0);
    if (r == -EAGAIN || r == -EINTR) return attempt::would_block;
    *res = r;
    if (r > 0 && static_cast<uint64_t>(r) < op.args[2] && !(flags & MSG_DONTWAIT))
        return attempt::partial;  // a blocking send would have sent it all
    return attempt::done;
}

attempt probe_open(const asys_op &op, long *res) noexcept {
    const auto flags = static_cast<uint64_t>(static_cast<uint32_t>(op.args[2]));
    if (flags & (O_CREAT | O_TRUNC | __O_TMPFILE)) return attempt::not_tried;
    struct open_how how {};
    how.flags = flags;
    how.resolve = RESOLVE_CACHED;
    long r = probe_syscall(SYS_openat2, op.args[0], op.args[1], reinterpret_cast<uint64_t>(&how),
                          sizeof how, 0, 0);
    if (r == -EAGAIN || r == -EINTR) return attempt::would_block;
    if (r == -ENOSYS || r == -EINVAL || r == -E2BIG) return attempt::not_tried;
    *res = r;
    return attempt::done;
}

attempt probe_poll(const asys_op &op, long *res) noexcept {
    struct pollfd pfd{static_cast<int>(op.args[0]), static_cast<short>(op.args[1]), 0};
    struct timespec zero{0, 0};
    long r = probe_syscall(SYS_ppoll, reinterpret_cast<uint64_t>(&pfd), 1,
                          reinterpret_cast<uint64_t>(&zero), 0, 0, 0);
    if (r == -EINTR || (r == 0 && static_cast<int64_t>(op.args[2]) != 0)) return attempt::would_block;
    *res = r > 0 ? static_cast<unsigned short>(pfd.revents) : r;
    return attempt::done;
}

}  // namespace

attempt try_inline(const asys_op &op, bool buffered, long *res, bool *proved_buffered) noexcept {
    switch (kOpcodes[op.opcode].cls) {
        case op_class::never_blocks:
            *res = execute_op(op.opcode, op.nr, op.args);
            return attempt::done;
        case op_class::syscall:
            if (!syscall_never_blocks(op.nr)) return attempt::not_tried;
            *res = execute_op(op.opcode, op.nr, op.args);
            return attempt::done;
        case op_class::read: return probe_read(op, buffered, res, proved_buffered);
        case op_class::recv: return probe_recv(op, res);
        case op_class::send: return probe_send(op, res);
        case op_class::open: return probe_open(op, res);
        case op_class::poll: return probe_poll(op, res);
        case op_class::backend:
        case op_class::chain: return attempt::not_tried;
    }
    return attempt::not_tried;
}

}  // namespace asys::internal
