#include "inline/inline_attempt.hpp"

#include <fcntl.h>
#include <linux/openat2.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <sys/syscall.h>
#include <sys/uio.h>

#include <atomic>
#include <cerrno>

#include "base/fault.hpp"
#include "base/opcodes.hpp"
#include "base/raw_syscall.hpp"

namespace asys::internal {
namespace {

// Every probe's system call goes through here (fault injection for tests:
// one relaxed load when unset).
inline long probe_syscall(long nr, uint64_t a0, uint64_t a1, uint64_t a2, uint64_t a3, uint64_t a4,
                          uint64_t a5) noexcept {
    if (long injected = fault::injected_probe_error()) return injected;
    return raw_syscall6(nr, a0, a1, a2, a3, a4, a5);
}

// What a short nonblocking count means (only asked on the rare short path).
enum class short_kind {
    final,       ///< the blocking call would return the same (EOF, a pipe's or socket's data)
    partial,     ///< a regular file partly in the page cache: the rest must be read
    never_waits, ///< a memory device (/dev/zero, /dev/urandom): NOWAIT stopped it early;
                 ///< the rest can be read here, it never waits
};

short_kind classify_short(int fd, bool positional, int64_t off, long got) noexcept {
    struct stat st;
    if (raw_syscall6(SYS_fstat, static_cast<uint64_t>(fd), reinterpret_cast<uint64_t>(&st), 0, 0,
                     0, 0) < 0)
        return short_kind::final;
    if (S_ISCHR(st.st_mode) && major(st.st_rdev) == 1) return short_kind::never_waits;
    if (!S_ISREG(st.st_mode)) return short_kind::final;  // pipes, sockets, ttys: short is normal
    int64_t pos;
    if (positional) {
        pos = off + got;
    } else {
        pos = raw_syscall6(SYS_lseek, static_cast<uint64_t>(fd), 0, SEEK_CUR, 0, 0, 0);
        if (pos < 0) return short_kind::final;
    }
    return pos >= st.st_size ? short_kind::final : short_kind::partial;
}

// Filesystems whose close(2) may wait for the network or a user-space
// server (they flush dirty data or send a release on close). Only files on
// anonymous devices (major 0) are asked: local block-device filesystems
// never are.
bool flushes_on_close(uint64_t fd) noexcept {
    struct statfs sf;
    if (raw_syscall6(SYS_fstatfs, fd, reinterpret_cast<uint64_t>(&sf), 0, 0, 0, 0) != 0) return true;
    switch (static_cast<unsigned long>(sf.f_type)) {
        case 0x6969:      // NFS
        case 0x65735546:  // FUSE
        case 0xff534d42:  // CIFS
        case 0xfe534d42:  // SMB2
        case 0x517b:      // SMB
        case 0x01021997:  // 9P / v9fs
        case 0x00c36400:  // Ceph
        case 0x5346414f:  // AFS
        case 0x6b414653:  // kAFS
        case 0x47504653:  // GPFS
        case 0x0bd00bd0:  // Lustre
            return true;
        default:
            return false;
    }
}

// Per-descriptor hint: "a guarded read probe of this fd number was refused
// by direct I/O" (it saw EINVAL or EAGAIN, and the fd was O_DIRECT). One byte per fd number below kHintFds (64 KiB of zero
// pages until used). Relaxed: a hint only decides whether a read is probed,
// never its result. The hint is checked against the fd's own flags
// (F_GETFL) before it skips a probe, so a number closed and reused for a
// buffered file loses it at its first read.
constexpr unsigned kHintFds = 1u << 16;
std::atomic<uint8_t> g_direct_refused[kHintFds];

bool fd_is_direct(int fd) noexcept {
    const long fl = fd_status_flags(static_cast<uint64_t>(fd));
    return fl >= 0 && (fl & O_DIRECT);
}

// After a guarded probe that did not read: direct I/O refuses the guard
// with EINVAL on some filesystems and EAGAIN on others (ext4 on 6.18), where
// EAGAIN also means "not cached" for a buffered fd. One F_GETFL tells (the
// op is about to be punted, which costs far more).
void note_if_direct(int fd) noexcept {
    if (static_cast<unsigned>(fd) < kHintFds && fd_is_direct(fd))
        g_direct_refused[fd].store(1, std::memory_order_relaxed);
}

void clear_direct_hint(int fd) noexcept {
    if (static_cast<unsigned>(fd) < kHintFds && g_direct_refused[fd].load(std::memory_order_relaxed))
        g_direct_refused[fd].store(0, std::memory_order_relaxed);
}

// Buffered and stream reads: preadv2(RWF_NOWAIT).
//
// The O_DIRECT guard. An O_DIRECT read with RWF_NOWAIT still waits for the
// device, so it must never run on the caller. Knowing a descriptor's mode
// would take a syscall per op (F_GETFL) or a per-fd cache that goes stale
// when an fd number is reused (the hint above only ever skips a probe).
// Instead the probe itself is made unacceptable to direct I/O and harmless
// to buffered I/O: the FIRST byte of the request is read into a detached
// scratch byte at an odd address and copied into place afterwards. Direct
// I/O then sees a misaligned first segment and fails at once with EINVAL
// (the op then goes to a backend untouched); a buffered read fills the same
// bytes. (Splitting the user's buffer in place is not enough: the kernel
// merges contiguous segments and performs the direct read.)
//
// The library never touches the caller's memory itself before the kernel
// has: the scratch byte is copied only after the kernel wrote the byte just
// after it, which lies in the same page (the guard is not used when the
// first byte ends a page), so a bad buffer gives the kernel's -EFAULT and
// never a crash. A caller's iovec array is read through the kernel too
// (copy_from_caller) when the guard must rewrite it.
//
// The guard is skipped when direct I/O would refuse the request anyway (an
// offset or length that is no multiple of 512) or the caller asserted a
// buffered fd.

/// A read request as the probe sees it.
struct read_req {
    int fd;
    int64_t off;      ///< -1: the file position
    int rwf;          ///< the caller's preadv2 flags
    uint64_t total;   ///< bytes asked for (0 until known for an unguarded vector)
    bool vectored;
    uint64_t buf;     ///< READ/PREAD: the caller's buffer
    const iovec *iov = nullptr;  ///< READV/PREADV: the caller's segments, as the call sees them
    unsigned cnt = 0;            ///< their number (at most kMaxProbeIov)
};

/// The guard's first-byte split of a segment list whose first segment is
/// iov[0]: iov[0] becomes the scratch byte, iov[1] the rest of the first
/// segment. The caller has made room for one more entry at iov[1].
struct first_byte_guard {
    alignas(16) char scratch[2];
    char *first_byte = nullptr;  // the caller's address; may be anything
};

/// Whether the guard applies, and (for a read at the file position) that
/// the fd seeks. not_tried: the backend reads it (a first byte that ends a
/// page); `done` with *res < 0: the read's result (EBADF); a pipe or socket
/// is read unguarded.
attempt guard_needed(const read_req &rq, const iovec &first, bool *guard, long *res) noexcept {
    *guard = false;
    *res = 0;
    const uint64_t align = (rq.off >= 0 ? static_cast<uint64_t>(rq.off) : 0) | rq.total;
    if ((align & 511) != 0) return attempt::done;
    // A read at the file position may be of a pipe or socket, which direct
    // I/O never concerns: one lseek tells (ESPIPE), and a stream is read
    // without the guard (its bytes could not be put back if the caller's
    // buffer turned out bad).
    if (rq.off < 0) {
        const long pos = raw_syscall6(SYS_lseek, static_cast<uint64_t>(rq.fd), 0, SEEK_CUR, 0, 0, 0);
        if (pos == -ESPIPE) return attempt::done;
        // No open file behind the number (or an O_PATH one): read(2) says
        // EBADF too, at once. Other errors: the backend's call says.
        if (pos == -EBADF) {
            *res = -EBADF;
            return attempt::done;
        }
        if (pos < 0) return attempt::not_tried;
    }
    // The first byte must share a page with the second, which the kernel
    // writes before the library copies the first.
    const uintptr_t fb = reinterpret_cast<uintptr_t>(first.iov_base);
    if (first.iov_len < 2 || (fb & 4095) == 4095) return attempt::not_tried;  // rare: the backend reads it
    *guard = true;
    return attempt::done;
}

void apply_guard(iovec *iov, first_byte_guard &g) noexcept {
    const uintptr_t fb = reinterpret_cast<uintptr_t>(iov[1].iov_base);  // integers: fb may be anything
    g.first_byte = reinterpret_cast<char *>(fb);
    iov[0].iov_base = &g.scratch[1];
    iov[0].iov_len = 1;
    iov[1].iov_base = reinterpret_cast<void *>(fb + 1);
    iov[1].iov_len -= 1;
}

/// The rest of a memory device's read after its nonblocking read stopped
/// at *res bytes: read without RWF_NOWAIT until the whole length, EOF or a
/// fault (which leaves the count so far, as the call would).
void finish_never_waiting(const read_req &rq, long *res) noexcept {
    const iovec single{reinterpret_cast<void *>(rq.buf), rq.total};
    const iovec *seg = rq.vectored ? rq.iov : &single;
    const unsigned nseg = rq.vectored ? rq.cnt : 1;
    while (static_cast<uint64_t>(*res) < rq.total) {
        struct iovec rest[kMaxProbeIov];
        const uint64_t at = static_cast<uint64_t>(*res);
        const unsigned m = iov_after(seg, nseg, at, rq.total - at, rest, kMaxProbeIov);
        const long more = raw_syscall6(SYS_preadv2, static_cast<uint64_t>(rq.fd), reinterpret_cast<uint64_t>(rest), m,
                                       rq.off >= 0 ? static_cast<uint64_t>(rq.off) + at : ~uint64_t{0}, 0,
                                       static_cast<uint64_t>(rq.rwf));
        if (more <= 0) return;
        *res += more;
    }
}

/// After the nonblocking preadv2: stores the guarded byte, and decides what
/// the result means (a full read, a short one to finish, a refusal).
attempt after_read(const read_req &rq, const first_byte_guard *g, long r, long *res) noexcept {
    if (g && (r == -EAGAIN || r == -EINVAL)) note_if_direct(rq.fd);
    if (r == -EAGAIN || r == -EINTR) return attempt::would_block;
    // EOPNOTSUPP: no nowait support (ttys, some filesystems); EINVAL: direct
    // I/O refusing the guard (or a real EINVAL the backend will report
    // again). Both: run it asynchronously, untouched.
    // Without the guard an EINVAL is the call's own (direct I/O is not
    // involved: the guard is skipped only where direct I/O refuses the
    // request as the call would).
    if (r == -EOPNOTSUPP || (r == -EINVAL && g)) return attempt::refused;
    if (g && r >= 2) {
        *g->first_byte = g->scratch[1];  // the kernel just wrote the byte after it, in the same page
        clear_direct_hint(rq.fd);  // the fd reads buffered now
    } else if (g && r == 1) {
        // Only the scratch byte: EOF after one byte, or the caller's buffer
        // is bad after its first byte (or at it). Store it through the
        // kernel; if the first byte is bad too, the call would have failed
        // there with nothing read: undo the position and say so.
        if (const long c = copy_to_caller(g->first_byte, &g->scratch[1], 1); c < 0) {
            if (rq.off < 0)  // a seekable file (streams take no guard): put the position back
                raw_syscall6(SYS_lseek, static_cast<uint64_t>(rq.fd), static_cast<uint64_t>(-1), SEEK_CUR, 0, 0, 0);
            if (c != -EFAULT) return attempt::not_tried;  // no way to tell here: the backend's call
            *res = -EFAULT;
            return attempt::done;
        }
    }
    *res = r;
    if (r <= 0 || static_cast<uint64_t>(r) == rq.total || (rq.rwf & RWF_NOWAIT)) return attempt::done;
    const bool positional = rq.off >= 0;
    switch (classify_short(rq.fd, positional, rq.off, r)) {
        case short_kind::final: return attempt::done;
        case short_kind::partial: return attempt::partial;
        case short_kind::never_waits:
            // A memory device's read cannot wait: it is finished here, as
            // the call would (the nonblocking read stops early when the
            // CPU is wanted elsewhere).
            finish_never_waiting(rq, res);
            return attempt::done;
    }
    return attempt::done;
}

long nowait_preadv2(const read_req &rq, const iovec *iov, unsigned cnt) noexcept {
    return probe_syscall(SYS_preadv2, static_cast<uint64_t>(rq.fd), reinterpret_cast<uint64_t>(iov), cnt,
                         static_cast<uint64_t>(rq.off), 0, static_cast<uint64_t>(rq.rwf | RWF_NOWAIT));
}

// READ and PREAD: one buffer, at most two segments (the guard's scratch
// byte and the rest), no copy of an array.
attempt probe_read_single(const asys_op &op, bool buffered, long *res) noexcept {
    return probe_read_buffer(static_cast<int>(op.args[0]), op.args[1], op.args[2],
                             static_cast<int64_t>(op.args[3]), op.opcode == ASYS_OP_PREAD, buffered, res);
}

// READV and PREADV: the caller's array, copied through the kernel when the
// guard must rewrite it (up to kMaxProbeIov entries).
attempt probe_read_vectored(const asys_op &op, bool buffered, long *res) noexcept {
    read_req rq{static_cast<int>(op.args[0]), -1, 0, 0, true, 0};
    if (op.opcode == ASYS_OP_PREADV) {
        rq.off = static_cast<int64_t>(op.args[3]);
        if (rq.off < -1) return attempt::not_tried;
        rq.rwf = static_cast<int>(op.args[4]);
    }
    const uint64_t n = op.args[2];
    if (n == 0 || n > kMaxProbeIov || !op.args[1]) return attempt::not_tried;
    const auto cnt = static_cast<unsigned>(n);
    const auto *uiov = reinterpret_cast<const struct iovec *>(op.args[1]);
    if (buffered) {
        // No guard: the kernel reads the caller's array itself; after a
        // transfer without a fault its lengths can be summed here.
        const long r = nowait_preadv2(rq, uiov, cnt);
        if (r > 0) {
            for (unsigned i = 0; i < cnt; ++i) rq.total += uiov[i].iov_len;
            if (rq.total > kMaxRwCount) rq.total = kMaxRwCount;  // as the call caps it
        }
        rq.iov = uiov;
        rq.cnt = cnt;
        return after_read(rq, nullptr, r, res);
    }
    struct iovec iov[kMaxProbeIov + 1];
    if (copy_from_caller(&iov[1], uiov, n * sizeof(iovec)) < 0)
        return attempt::not_tried;  // a bad array: the backend's call reports it
    for (unsigned i = 1; i <= cnt; ++i) {
        if (rq.total + iov[i].iov_len < rq.total) return attempt::not_tried;  // EINVAL later
        rq.total += iov[i].iov_len;
    }
    if (rq.total == 0 || rq.total > kMaxRwCount) return attempt::not_tried;
    bool guard = false;
    if (attempt a = guard_needed(rq, iov[1], &guard, res); a != attempt::done || *res < 0) return a;
    rq.iov = &iov[1];
    rq.cnt = cnt;
    if (!guard) return after_read(rq, nullptr, nowait_preadv2(rq, &iov[1], cnt), res);
    first_byte_guard g;
    const iovec first = iov[1];
    apply_guard(iov, g);
    const long r = nowait_preadv2(rq, iov, cnt + 1);
    iov[1] = first;  // the caller's segments again, for a read that goes on
    return after_read(rq, &g, r, res);
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

// Opens: openat2(RESOLVE_CACHED) fails with EAGAIN instead of a path walk
// that would do I/O. The open itself may wait too: a FIFO waits for its
// partner, some devices for a carrier. So unless the caller asked for
// O_NONBLOCK (or O_PATH / O_DIRECTORY, which never wait), the probe adds
// O_NONBLOCK, and keeps the file only if its type opens the same way
// without it (a regular file, a directory, the memory devices such as
// /dev/null); it then clears O_NONBLOCK, which would change later reads
// and io_uring's handling of the file. Anything else is closed again and
// opened by a backend. (A FIFO's nonblocking open and close is visible to
// a writer blocked in open(2) on it, which is released by the probe's
// open: documented in docs/router.md.)
attempt probe_open(const asys_op &op, long *res) noexcept {
    const auto flags = static_cast<uint64_t>(static_cast<uint32_t>(op.args[2]));
    if (flags & (O_CREAT | O_TRUNC | __O_TMPFILE)) return attempt::not_tried;
    const bool never_waits = flags & (O_NONBLOCK | O_PATH | O_DIRECTORY);
    struct open_how how {};
    how.flags = never_waits ? flags : flags | O_NONBLOCK;
    how.resolve = RESOLVE_CACHED;
    long r = probe_syscall(SYS_openat2, op.args[0], op.args[1], reinterpret_cast<uint64_t>(&how),
                          sizeof how, 0, 0);
    if (r == -EAGAIN || r == -EINTR) return attempt::would_block;
    if (r == -ENOSYS || r == -EINVAL || r == -E2BIG) return attempt::not_tried;
    if (r == -ENXIO && !never_waits) return attempt::would_block;  // a FIFO with no reader yet
    if (r >= 0 && !never_waits) {
        struct stat st;
        const auto fd = static_cast<uint64_t>(r);
        const bool same_without_nonblock =
            raw_syscall6(SYS_fstat, fd, reinterpret_cast<uint64_t>(&st), 0, 0, 0, 0) == 0 &&
            (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode) ||
             (S_ISCHR(st.st_mode) && major(st.st_rdev) == 1));  // mem devices: null, zero, urandom...
        if (!same_without_nonblock ||
            raw_syscall6(SYS_fcntl, fd, F_SETFL, flags & ~static_cast<uint64_t>(O_NONBLOCK | O_ASYNC), 0,
                         0, 0) < 0) {
            raw_syscall6(SYS_close, fd, 0, 0, 0, 0, 0);
            return attempt::would_block;
        }
    }
    if (r >= 0) clear_direct_hint(static_cast<int>(r));  // a new file behind this number
    *res = r;
    return attempt::done;
}

// close(2) is instant for most files, but a socket with SO_LINGER waits
// for its unsent data, and a network or FUSE filesystem may flush on close.
// Those are closed by a backend; everything else inline.
attempt probe_close(const asys_op &op, long *res) noexcept {
    const auto fd = static_cast<uint64_t>(static_cast<int>(op.args[0]));
    struct stat st;
    if (probe_syscall(SYS_fstat, fd, reinterpret_cast<uint64_t>(&st), 0, 0, 0, 0) == 0) {
        if (S_ISSOCK(st.st_mode)) {
            struct linger lg {};
            socklen_t len = sizeof lg;
            if (raw_syscall6(SYS_getsockopt, fd, SOL_SOCKET, SO_LINGER, reinterpret_cast<uint64_t>(&lg),
                             reinterpret_cast<uint64_t>(&len), 0) == 0 &&
                lg.l_onoff && lg.l_linger > 0)
                return attempt::would_block;
        } else if (S_ISREG(st.st_mode) && major(st.st_dev) == 0 && flushes_on_close(fd)) {
            return attempt::would_block;
        }
    }
    const uint64_t args[6] = {fd, 0, 0, 0, 0, 0};
    *res = run_syscall(SYS_close, args);
    if (*res == 0) clear_direct_hint(static_cast<int>(fd));
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

attempt after_unguarded_read(int fd, uint64_t buf, uint64_t len, int64_t off, long r, long *res) noexcept {
    const read_req rq{fd, off, 0, len, false, buf};
    return after_read(rq, nullptr, r, res);
}

attempt probe_read_buffer_general(int fd, uint64_t buf, uint64_t len, int64_t off, bool positional, bool buffered,
                                  long *res) noexcept {
    // A negative offset: pread(2) checks it first and says EINVAL at once,
    // whatever the descriptor, so it runs here as it is. (Not a zero length:
    // the call still reaches the file's read, which on FUSE or a network
    // filesystem may wait.)
    if (positional && off < 0) {
        *res = raw_syscall6(SYS_pread64, static_cast<uint64_t>(fd), buf, len, static_cast<uint64_t>(off), 0, 0);
        return attempt::done;
    }
    const read_req rq{fd, positional ? off : -1, 0, len, false, buf};
    // Past MAX_RW_COUNT the call checks more, and such a read is no cached
    // block: the backend runs the call itself.
    if (rq.total == 0 || rq.total > kMaxRwCount) return attempt::not_tried;
    iovec iov[2];
    iov[1] = iovec{reinterpret_cast<void *>(buf), rq.total};
    bool guard = false;
    if (!buffered) {
        if (attempt a = guard_needed(rq, iov[1], &guard, res); a != attempt::done || *res < 0) return a;
    }
    if (!guard) return after_read(rq, nullptr, nowait_preadv2(rq, &iov[1], 1), res);
    first_byte_guard g;
    apply_guard(iov, g);
    return after_read(rq, &g, nowait_preadv2(rq, iov, 2), res);
}

bool direct_hint_skips_probe(int fd) noexcept {
    if (static_cast<unsigned>(fd) >= kHintFds || !g_direct_refused[fd].load(std::memory_order_relaxed))
        return false;
    if (fd_is_direct(fd)) return true;
    clear_direct_hint(fd);  // another file behind the number now, or O_DIRECT was cleared
    return false;
}

attempt try_inline(const asys_op &op, bool buffered, long *res, bool *proved_buffered) noexcept {
    switch (kOpcodes[op.opcode].cls) {
        case op_class::never_blocks:
            *res = execute_op(op.opcode, op.nr, op.args);
            return attempt::done;
        case op_class::syscall:
            if (!syscall_never_blocks(op.nr)) return attempt::not_tried;
            *res = execute_op(op.opcode, op.nr, op.args);
            return attempt::done;
        case op_class::read: {
            const bool vectored = op.opcode == ASYS_OP_READV || op.opcode == ASYS_OP_PREADV;
            const attempt a = vectored ? probe_read_vectored(op, buffered, res) : probe_read_single(op, buffered, res);
            // A transfer through the guard: the fd was not in direct mode then.
            if (proved_buffered && !buffered && (a == attempt::done || a == attempt::partial) && *res >= 2)
                *proved_buffered = true;
            return a;
        }
        case op_class::recv: return probe_recv(op, res);
        case op_class::send: return probe_send(op, res);
        case op_class::open: return probe_open(op, res);
        case op_class::close: return probe_close(op, res);
        case op_class::poll: return probe_poll(op, res);
        case op_class::backend:
        case op_class::feature: return attempt::not_tried;
    }
    return attempt::not_tried;
}

}  // namespace asys::internal
