#include "uring/uring_backend.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <linux/fs.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <memory>
#include <new>
#include <vector>

#include "base/fault.hpp"
#include "base/opcodes.hpp"
#include "base/library_fds.hpp"
#include "base/linked_ops.hpp"
#include "base/raw_syscall.hpp"

namespace asys::internal {
namespace {

// user_data tags: slots are 8-byte aligned, so the low bits are free.
constexpr uint64_t kTagMask = 7;
constexpr uint64_t kTagCancel = 2;  ///< points to a cancel_req
constexpr uint64_t kTagIgnore = 3;  ///< cancel-all and other internal CQEs
constexpr uint64_t kTagLink = 4;    ///< points to a linked_entry


struct cancel_req {
    /// Set (release) before the cancel SQE is submitted, read (acquire) by
    /// the reaper before it touches the request. The kernel already orders
    /// the SQE before its CQE; this makes the ordering visible to TSan, which
    /// cannot see through io_uring's shared rings.
    std::atomic<bool> armed{false};
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    int res = 0;
};

[[gnu::always_inline]] inline void prep_pread(io_uring_sqe *sqe, const uint64_t *a) noexcept {
    io_uring_prep_read(sqe, static_cast<int>(a[0]), reinterpret_cast<void *>(a[1]), static_cast<unsigned>(a[2]), a[3]);
}

// Every opcode is named (no default): an opcode added to the table without
// a decision here fails the build.
void prep(io_uring_sqe *sqe, uint32_t opcode, const uint64_t *a) noexcept {
    const int fd = static_cast<int>(a[0]);
    void *p1 = reinterpret_cast<void *>(a[1]);
    switch (static_cast<asys_opcode>(opcode)) {
        case ASYS_OP_NOP: io_uring_prep_nop(sqe); break;
        case ASYS_OP_READ: io_uring_prep_read(sqe, fd, p1, static_cast<unsigned>(a[2]), ~0ull); break;
        case ASYS_OP_PREAD: prep_pread(sqe, a); break;
        case ASYS_OP_READV:
            io_uring_prep_readv(sqe, fd, static_cast<const iovec *>(p1), static_cast<unsigned>(a[2]), ~0ull);
            break;
        case ASYS_OP_PREADV:
            io_uring_prep_readv2(sqe, fd, static_cast<const iovec *>(p1), static_cast<unsigned>(a[2]), a[3],
                                 static_cast<int>(a[4]));
            break;
        case ASYS_OP_WRITE: io_uring_prep_write(sqe, fd, p1, static_cast<unsigned>(a[2]), ~0ull); break;
        case ASYS_OP_PWRITE: io_uring_prep_write(sqe, fd, p1, static_cast<unsigned>(a[2]), a[3]); break;
        case ASYS_OP_WRITEV:
            io_uring_prep_writev(sqe, fd, static_cast<const iovec *>(p1), static_cast<unsigned>(a[2]), ~0ull);
            break;
        case ASYS_OP_PWRITEV:
            io_uring_prep_writev2(sqe, fd, static_cast<const iovec *>(p1), static_cast<unsigned>(a[2]), a[3],
                                  static_cast<int>(a[4]));
            break;
        case ASYS_OP_OPENAT:
            io_uring_prep_openat(sqe, fd, static_cast<const char *>(p1), static_cast<int>(a[2]),
                                 static_cast<mode_t>(a[3]));
            break;
        case ASYS_OP_FSYNC: io_uring_prep_fsync(sqe, fd, 0); break;
        case ASYS_OP_FDATASYNC: io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC); break;
        case ASYS_OP_STATX:
            io_uring_prep_statx(sqe, fd, static_cast<const char *>(p1), static_cast<int>(a[2]),
                                static_cast<unsigned>(a[3]), reinterpret_cast<struct statx *>(a[4]));
            break;
        case ASYS_OP_UNLINKAT:
            io_uring_prep_unlinkat(sqe, fd, static_cast<const char *>(p1), static_cast<int>(a[2]));
            break;
        case ASYS_OP_RENAMEAT:
            io_uring_prep_renameat(sqe, fd, static_cast<const char *>(p1), static_cast<int>(a[2]),
                                   reinterpret_cast<const char *>(a[3]), static_cast<unsigned>(a[4]));
            break;
        case ASYS_OP_MKDIRAT:
            io_uring_prep_mkdirat(sqe, fd, static_cast<const char *>(p1), static_cast<mode_t>(a[2]));
            break;
        case ASYS_OP_FALLOCATE:
            io_uring_prep_fallocate(sqe, fd, static_cast<int>(a[1]), a[2], a[3]);
            break;
        case ASYS_OP_FTRUNCATE:
            io_uring_prep_rw(kRingOpFtruncate, sqe, fd, nullptr, 0, a[1]);
            break;
        case ASYS_OP_ACCEPT:
            io_uring_prep_accept(sqe, fd, static_cast<sockaddr *>(p1), reinterpret_cast<socklen_t *>(a[2]),
                                 static_cast<int>(a[3]));
            break;
        case ASYS_OP_CONNECT:
            io_uring_prep_connect(sqe, fd, static_cast<const sockaddr *>(p1), static_cast<socklen_t>(a[2]));
            break;
        case ASYS_OP_RECV: io_uring_prep_recv(sqe, fd, p1, a[2], static_cast<int>(a[3])); break;
        case ASYS_OP_SEND: io_uring_prep_send(sqe, fd, p1, a[2], static_cast<int>(a[3])); break;
        case ASYS_OP_POLL:  // poll(2) takes 16 bits of events
            io_uring_prep_poll_add(sqe, fd, static_cast<uint16_t>(a[1]));
            break;
        case ASYS_OP_CLOSE:    // no ring opcode (see the opcode table)
        case ASYS_OP_SYSCALL:
        case ASYS_OP_CHAIN:
        case ASYS_OP_THREADLET:
        case ASYS_OP__COUNT:
            io_uring_prep_nop(sqe);  // unreachable: accepts() refused it
            break;
    }
}

void prep(io_uring_sqe *sqe, const op_slot &s) noexcept { prep(sqe, s.opcode, s.sys.args); }

/// prep() with the common op (PREAD) inline.
[[gnu::always_inline]] inline void prep_pread_inline(io_uring_sqe *sqe, const op_slot &s) noexcept {
    if (s.opcode == ASYS_OP_PREAD) prep_pread(sqe, s.sys.args);
    else prep(sqe, s);
}

/// A poll with a timeout: a linked timeout follows its SQE.
inline bool is_timed_poll(const op_slot &s) noexcept { return s.opcode == ASYS_OP_POLL && s.poll.timeout_ms >= 0; }

/// The SQEs queue_locked prepares for a slot: 2 for a timed poll or a
/// deadline (a linked timeout; accepts() allows not both), else 1.
inline unsigned sqes_of(const op_slot &s) noexcept {
    return is_timed_poll(s) || (s.flags & ASYS_F_DEADLINE) ? 2 : 1;
}

}  // namespace

uring_backend::~uring_backend() { stop(); }

backend *uring_backend::make(completion_sink &sink, const backend_config &cfg, int *err,
                             const char **step) noexcept {
    auto *b = new (std::nothrow) uring_backend(sink);
    if (!b) {
        *err = -ENOMEM;
        *step = "memory";
        return nullptr;
    }
    if (int rc = b->start(cfg.entries, cfg.workers, cfg.lazy); rc < 0) {
        *err = rc;
        *step = b->failed_step();
        delete b;
        return nullptr;
    }
    return b;
}  // no-op once stopped or abandoned

int uring_backend::start(unsigned entries, unsigned max_workers, bool lazy) noexcept {
    if (fault::fail_uring_setup()) {
        failed_step_ = "io_uring_setup";
        return -EPERM;
    }
    unsigned sq = entries < 4096 ? entries : 4096;
    if (sq < 8) sq = 8;
    unsigned cq = entries * 2 > 65536 ? 65536 : entries * 2;
    if (cq < sq * 2) cq = sq * 2;
    io_uring_params p{};
    p.flags = IORING_SETUP_CQSIZE;  // (not CQE32, SQE128 or SQPOLL: drain_locked and queue_run_locked rely on it)
    p.cq_entries = cq;
    int rc = io_uring_queue_init_params(sq, &ring_, &p);
    if (rc < 0) {
        failed_step_ = "io_uring_setup";
        return rc;
    }
    ring_ok_ = true;
    cq_entries_ = p.cq_entries;
    library_fds::add(ring_.ring_fd);

    // Not io_uring_get_probe_ring(): it hides the register call's errno
    // (a seccomp filter that refuses io_uring_register must be named as such).
    alignas(io_uring_probe) unsigned char probe_buf[sizeof(io_uring_probe) + 256 * sizeof(io_uring_probe_op)] = {};
    auto *probe = reinterpret_cast<io_uring_probe *>(probe_buf);
    rc = io_uring_register_probe(&ring_, probe, 256);
    if (rc < 0) {
        failed_step_ = "io_uring_register(PROBE)";
        release_ring();
        return rc;
    }
    for (unsigned op = 0; op < ASYS_OP__COUNT; ++op)
        if (kOpcodes[op].ring_op != kNoRingOp && io_uring_opcode_supported(probe, kOpcodes[op].ring_op))
            supported_ |= uint64_t{1} << op;
    link_timeout_ = io_uring_opcode_supported(probe, IORING_OP_LINK_TIMEOUT);

    unsigned vals[2] = {max_workers, max_workers};  // bounded, unbounded
    if (io_uring_register_iowq_max_workers(&ring_, vals) == 0) iowq_limit_ = max_workers;

    efd_ = static_cast<int>(raw_syscall6(SYS_eventfd2, 0, EFD_CLOEXEC, 0, 0, 0, 0));
    library_fds::add(efd_);  // ignores -1
    rc = efd_ < 0 ? efd_ : io_uring_register_eventfd(&ring_, efd_);
    if (rc < 0) {
        failed_step_ = efd_ < 0 ? "eventfd" : "io_uring_register(EVENTFD)";
        release_ring();
        return rc;
    }

    // The designated waiter's wake-up (kick): an eventfd it polls beside
    // the ring (a write stays readable until the waiter reads it, so a kick
    // cannot be lost the way a no-op's completion can: another thread
    // reaping the CQ may consume that before the waiter looks).
    kick_fd_ = static_cast<int>(raw_syscall6(SYS_eventfd2, 0, EFD_CLOEXEC | EFD_NONBLOCK, 0, 0, 0, 0));
    library_fds::add(kick_fd_);  // ignores -1; without it, waiters sleep on the completion ring

    if (lazy) return 0;  // the first punt starts the reaper
    if (int err = start_reaper(); err < 0) {
        failed_step_ = "the reaper thread";
        release_ring();
        return err;
    }
    return 0;
}

int uring_backend::start_reaper() noexcept {
    std::lock_guard lk(reaper_mu_);
    if (reaper_started_.load(std::memory_order_relaxed)) return 0;
    // The reaper blocks every signal: it only ever sleeps on its eventfd.
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    const int rc = fault::fail_thread_create() ? EAGAIN : pthread_create(&reaper_, &attr, reaper_main, this);
    pthread_attr_destroy(&attr);
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    if (rc != 0) return -rc;
    // release: a punt that sees it started also sees reaper_ (for stop()).
    reaper_started_.store(true, std::memory_order_release);
    return 0;
}

bool uring_backend::accepts(const op_slot &s) const noexcept {
    if (s.done != 0) return false;  // remainders of short reads: the pool
    // A deadline is a linked timeout; a timed poll already has its own.
    if ((s.flags & ASYS_F_DEADLINE) &&
        (!link_timeout_ || (s.opcode == ASYS_OP_POLL && s.poll.timeout_ms >= 0)))
        return false;
    return accepts_call(s.opcode, s.sys.args, s.seekable);
}

bool uring_backend::accepts_call(uint32_t opcode, const uint64_t (&args)[6], bool seekable) const noexcept {
    return supports_opcode(opcode) && args_fit_ring(opcode, args, seekable, link_timeout_);
}

bool uring_backend::takes_fitting_preads() const noexcept { return supports_opcode(ASYS_OP_PREAD); }

bool uring_backend::links(uint32_t opcode, const uint64_t (&args)[6]) const noexcept {
    return supports_opcode(opcode) && args_fit_ring(opcode, args, false, link_timeout_);
}

namespace {

enum class fd_kind { stream, seekable, anon, other, bad };

// One fstat: whether the descriptor is a stream (pipe, FIFO, socket), a
// seekable file (regular, block device), an anonymous inode (eventfd,
// timerfd, signalfd: no file type bits), or something else.
fd_kind kind_of(uint64_t fd_arg) noexcept {
    struct stat st;
    const auto fd = static_cast<uint64_t>(static_cast<int>(fd_arg));
    if (raw_syscall6(SYS_fstat, fd, reinterpret_cast<uint64_t>(&st), 0, 0, 0, 0) != 0) return fd_kind::bad;
    if (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode)) return fd_kind::stream;
    if (S_ISREG(st.st_mode) || S_ISBLK(st.st_mode)) return fd_kind::seekable;
    if ((st.st_mode & S_IFMT) == 0) return fd_kind::anon;
    return fd_kind::other;
}

// One lseek (cheaper than fstat, for the transfers on the hot path):
// whether the descriptor seeks. A stream (pipe, FIFO, socket, tty) says
// ESPIPE; files that take positional transfers seek.
fd_kind seekability_of(uint64_t fd_arg) noexcept {
    const long r = raw_syscall6(SYS_lseek, static_cast<uint64_t>(static_cast<int>(fd_arg)), 0, SEEK_CUR, 0, 0, 0);
    if (r >= 0) return fd_kind::seekable;
    return r == -ESPIPE ? fd_kind::stream : fd_kind::bad;
}

// Whether the descriptor is in nonblocking mode (O_NONBLOCK). The ring
// ignores the flag on files that can be polled: where the call says EAGAIN
// (or EINPROGRESS, for a connect) at once, the ring arms a poll and waits.
// Such transfers run on the pool, whose call answers at once. (One fcntl.)
bool fd_nonblocking(uint64_t fd_arg) noexcept {
    const long fl = fd_status_flags(fd_arg);
    return fl >= 0 && (fl & O_NONBLOCK);
}

// A descriptor that does not seek and that the ring reads or writes at its
// position as the call does: a pipe, FIFO, socket or character device (a
// tty), which the ring waits for by polling — unless it is in nonblocking
// mode (fd_nonblocking). Other unseekable files (an io_uring fd, a pidfd:
// anonymous inodes) can make the ring arm a poll that never fires where
// read(2) fails at once; eventfds and timerfds are anonymous too. They all
// go to the pool. (fstat, lseek for a device, fcntl: only for transfers
// being punted.)
bool ring_streams(uint64_t fd_arg, bool *socket = nullptr) noexcept {
    struct stat st;
    const auto fd = static_cast<uint64_t>(static_cast<int>(fd_arg));
    if (raw_syscall6(SYS_fstat, fd, reinterpret_cast<uint64_t>(&st), 0, 0, 0, 0) != 0) return false;
    if (socket) *socket = S_ISSOCK(st.st_mode);
    // Pipes, FIFOs and sockets never seek; a device must say so (a tty).
    const bool stream = S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode) ||
                        (S_ISCHR(st.st_mode) && seekability_of(fd_arg) == fd_kind::stream);
    return stream && !fd_nonblocking(fd_arg);
}

// A vectored transfer at the file position of a stream: on a socket, a
// vector whose segments add up to 0 bytes is 0 for the call, which never
// reaches the socket, while the ring sends an empty datagram (or takes one
// off the queue). Such vectors, and arrays the library cannot read (the
// call reports them), run on the pool. (process_vm_readv: only for sockets.)
bool ring_streams_vector(const uint64_t (&a)[6]) noexcept {
    bool socket = false;
    if (!ring_streams(a[0], &socket)) return false;
    if (!socket) return true;
    uint64_t total = 0;
    return caller_iov_total(reinterpret_cast<const void *>(a[1]), a[2], 1, &total) && total != 0;
}

}  // namespace

bool args_fit_ring(uint32_t opcode, const uint64_t (&a)[6], bool fd_seekable_known,
                   bool link_timeout) noexcept {
    // The largest count one read(2)/write(2)/recv(2) transfers (MAX_RW_COUNT):
    // a longer length is clamped by the syscall after its own checks, while
    // the ring's length field has 32 bits. Longer requests run on the pool.
    constexpr uint64_t kMaxRw = 0x7ffff000;
    constexpr uint64_t kMaxIov = 1024;  // UIO_MAXIOV
    const auto off = static_cast<int64_t>(a[3]);
    // Where the ring and the system call part ways, by descriptor:
    // - a positional transfer on a pipe or socket is -ESPIPE for the call,
    //   but the ring ignores the offset and reads the stream;
    // - a transfer at the file position that faults half-way (a bad
    //   buffer) moves the position for the call, not on the ring;
    // - fsync of a pipe, socket or device is -EINVAL for the call, and the
    //   ring did not stop a link after it.
    // So positional transfers go to the ring only for descriptors that seek
    // (one lseek), transfers at the file position only for those that do
    // not and are pipes, sockets or ttys (ring_streams: the ring waits for
    // them by polling, not in a thread), syncs only for regular files and block devices (fstat).
    switch (opcode) {
        // A zero length: the call still checks the descriptor (a directory
        // is EISDIR), the ring returns 0 at once.
        case ASYS_OP_READ:
        case ASYS_OP_WRITE:
            return a[2] != 0 && a[2] <= kMaxRw && ring_streams(a[0]);
        case ASYS_OP_READV:
        case ASYS_OP_WRITEV:  // no segments: the call returns 0 at once, the ring sent an empty datagram
            return a[2] != 0 && a[2] <= kMaxIov && ring_streams_vector(a);
        case ASYS_OP_PREAD:
        case ASYS_OP_PWRITE:  // offset -1 means "the file position" on the ring, EINVAL here
            return ring_positional_args_fit(a) && (fd_seekable_known || seekability_of(a[0]) == fd_kind::seekable);
        case ASYS_OP_PREADV:
        case ASYS_OP_PWRITEV:
            // RWF_HIPRI needs a polled ring; RWF_NOWAIT writes: the ring says
            // EAGAIN where the call says EOPNOTSUPP. The pool runs the call.
            // Unknown flags: the call checks them only when it transfers.
            if (a[4] & ~static_cast<uint64_t>(RWF_DSYNC | RWF_SYNC | RWF_APPEND)) return false;
            if (a[2] == 0 || a[2] > kMaxIov) return false;
            // Flags on a file without read_iter/write_iter (a directory):
            // EOPNOTSUPP for the call, the ring reports its own error.
            if (a[4] != 0 && off != -1 && kind_of(a[0]) != fd_kind::seekable) return false;
            if (off == -1) return ring_streams_vector(a);  // the file position
            return off >= 0 && (fd_seekable_known || seekability_of(a[0]) == fd_kind::seekable);
        case ASYS_OP_FSYNC:
        case ASYS_OP_FDATASYNC:
            return kind_of(a[0]) == fd_kind::seekable;
        case ASYS_OP_RECV:
        case ASYS_OP_SEND:  // (a zero-length datagram is legal: the ring sends it too)
            // MSG_DONTWAIT: the ring's EAGAIN is final, as the call's.
            return a[2] <= kMaxRw && ((a[3] & MSG_DONTWAIT) || !fd_nonblocking(a[0]));
        case ASYS_OP_ACCEPT:
        case ASYS_OP_CONNECT:  // the call: EAGAIN / EINPROGRESS at once
            return !fd_nonblocking(a[0]);
        case ASYS_OP_OPENAT: {
            // The ring first opens without blocking (O_NONBLOCK) and clears
            // the flag afterwards: a FIFO then opens at once (or fails
            // ENXIO) where open(2) waits for its partner. Only flags with
            // which the two agree go to the ring: the caller's own
            // O_NONBLOCK, O_PATH, O_DIRECTORY, or the ones the ring always
            // opens the blocking way (O_CREAT, O_TRUNC, O_TMPFILE).
            constexpr uint64_t kAgree = O_NONBLOCK | O_PATH | O_DIRECTORY | O_CREAT | O_TRUNC | __O_TMPFILE;
            return (static_cast<uint32_t>(a[2]) & kAgree) != 0;
        }
        case ASYS_OP_STATX: {
            // A NULL path with AT_EMPTY_PATH: the ring faults on it. Bad
            // flags or mask: the call says EINVAL before it looks at the
            // path, the ring after.
            constexpr uint64_t kFlags = AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT | AT_EMPTY_PATH | AT_STATX_SYNC_TYPE;
            return a[1] != 0 && (static_cast<uint32_t>(a[2]) & ~kFlags) == 0 &&
                   (static_cast<uint32_t>(a[3]) & STATX__RESERVED) == 0;
        }
        case ASYS_OP_FTRUNCATE:  // a negative length is EINVAL before the fd is looked at
            return static_cast<int64_t>(a[1]) >= 0;
        case ASYS_OP_UNLINKAT:
            return (static_cast<uint32_t>(a[2]) & ~static_cast<uint32_t>(AT_REMOVEDIR)) == 0;
        case ASYS_OP_RENAMEAT:
            return (static_cast<uint32_t>(a[4]) & ~static_cast<uint32_t>(RENAME_NOREPLACE | RENAME_EXCHANGE |
                                                                         RENAME_WHITEOUT)) == 0;
        case ASYS_OP_POLL: {
            // poll(2) ignores a negative fd (and then sleeps); a zero link
            // timeout is refused by the ring; a file the kernel cannot
            // poll (regular files, directories, most devices) reports its
            // default mask to poll(2), but -EINVAL on the ring.
            if (static_cast<int>(a[0]) < 0 || static_cast<int64_t>(a[2]) == 0) return false;
            if (static_cast<int64_t>(a[2]) > 0 && !link_timeout) return false;
            const fd_kind k = kind_of(a[0]);
            return k == fd_kind::stream || k == fd_kind::anon || k == fd_kind::bad;  // bad: POLLNVAL
        }
        default:
            return true;
    }
}

bool uring_backend::ready() const noexcept {
    // Not liburing's io_uring_ready(): it reads the CQ head with a plain
    // load, and other threads advance the head (under cq_mu_). acquire on
    // the tail pairs with the kernel's release when it posts a CQE.
    return __atomic_load_n(ring_.cq.ktail, __ATOMIC_ACQUIRE) !=
           __atomic_load_n(ring_.cq.khead, __ATOMIC_RELAXED);
}

void uring_backend::set_eventfd_enabled(bool enabled) noexcept {
    unsigned *flags = ring_.cq.kflags;
    if (!flags) return;  // no CQ flags (older kernels): never muted
    if (enabled)
        __atomic_fetch_and(flags, ~unsigned{IORING_CQ_EVENTFD_DISABLED}, __ATOMIC_RELAXED);
    else
        __atomic_fetch_or(flags, unsigned{IORING_CQ_EVENTFD_DISABLED}, __ATOMIC_RELAXED);
}

// No lock: the count's 0 -> 1 step disables the eventfd, its 1 -> 0 step
// enables it. A thread's enable can race with another's disable only while
// the count is back above 0, so the eventfd may ring for a reaping thread's
// CQE (a spurious wake of the reaper, harmless) but is never left disabled
// with nobody reaping: whoever brings the count to 0 enables it after.
void uring_backend::begin_reaping() noexcept {
    if (muted_.fetch_add(1, std::memory_order_acq_rel) == 0) set_eventfd_enabled(false);
}

void uring_backend::end_reaping() noexcept {
    if (muted_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        set_eventfd_enabled(true);
        // Pairs with the kernel's barrier between posting a CQE and testing
        // the flag: a CQE posted unsignalled is visible to ready() after,
        // and every end_reaping() caller checks it (punt, unplug, wait).
        std::atomic_thread_fence(std::memory_order_seq_cst);
    }
}

void uring_backend::link_locked(op_slot *s) noexcept {
    s->prev = nullptr;
    s->next = inring_;
    if (inring_) inring_->prev = s;
    inring_ = s;
}

void uring_backend::track_locked(op_slot *s) noexcept {
    link_locked(s);
    ++inring_count_;
}

inline void uring_backend::untrack_locked(op_slot *s) noexcept {
    if (s->prev) s->prev->next = s->next; else inring_ = s->next;
    if (s->next) s->next->prev = s->prev;
    s->prev = s->next = nullptr;
    --inring_count_;
}

void uring_backend::track_linked_locked(linked_ops *lo) noexcept {
    lo->prev = nullptr;
    lo->next = inring_linked_;
    if (inring_linked_) inring_linked_->prev = lo;
    inring_linked_ = lo;
}

void uring_backend::untrack_linked_locked(linked_ops *lo) noexcept {
    if (lo->prev) lo->prev->next = lo->next; else inring_linked_ = lo->next;
    if (lo->next) lo->next->prev = lo->prev;
    lo->prev = lo->next = nullptr;
}

int uring_backend::submit_locked() noexcept {
    if (pending_submit_ == 0) return 0;
    // Completions the kernel posts during this enter are reaped by this
    // thread right after (see punt): don't wake the reaper for them.
    begin_reaping();
    int rc;
    do rc = io_uring_submit(&ring_);
    while (rc == -EINTR);
    end_reaping();
    if (rc > 0) pending_submit_ -= static_cast<unsigned>(rc) > pending_submit_ ? pending_submit_ : static_cast<unsigned>(rc);
    return rc < 0 ? rc : 0;
}

bool uring_backend::reserve_sqes_locked(unsigned k) noexcept {
    if (io_uring_sq_space_left(&ring_) < k && pending_submit_) submit_locked();
    return io_uring_sq_space_left(&ring_) >= k;
}

io_uring_sqe *uring_backend::get_sqe_locked() noexcept {
    return reserve_sqes_locked(1) ? io_uring_get_sqe(&ring_) : nullptr;
}

int uring_backend::submit_or_take_back_locked(op_slot *slot, io_uring_sqe *const *sqes, unsigned n,
                                               unsigned cqes) noexcept {
    if (plugged_here()) return 0;  // this thread's unplug() submits
    const int rc = submit_locked();
    if (rc >= 0) return 0;
    // The kernel refused the submission: take the op's SQEs back by turning
    // them into ignored no-ops, and hand the op back.
    for (unsigned k = 0; k < n; ++k) {
        io_uring_prep_nop(sqes[k]);
        io_uring_sqe_set_data64(sqes[k], kTagIgnore);
    }
    if (slot) untrack_locked(slot);
    inring_count_ -= cqes ? cqes - 1 : 0;
    return rc == -EAGAIN || rc == -EBUSY ? -EAGAIN : rc;
}

int uring_backend::punt(op_slot *slot, bool atomic) noexcept {
    // A lazy ring starts its reaper with the first op (without one, a
    // callback op would complete only when someone waits); if it cannot,
    // the op goes elsewhere.
    if (!reaper_started_.load(std::memory_order_acquire) && start_reaper() < 0) return -EAGAIN;
    int rc = punt_locked(slot, atomic);
    // Ops the kernel completed during io_uring_enter are reaped here, by the
    // submitter: no other thread needs waking for them.
    if (rc == 0 && ready()) reap();
    return rc;
}

int uring_backend::punt_locked(op_slot *slot, bool atomic) noexcept {
    (void)atomic;  // a free SQE is a free slot: the ring never waits for one
    std::lock_guard lk(sq_mu_);
    io_uring_sqe *sqes[2];
    const int k = queue_locked(slot, sqes);
    if (k < 0) return k;
    return submit_or_take_back_locked(slot, sqes, static_cast<unsigned>(k), 1);
}

unsigned uring_backend::punt_plugged(op_slot *const *slots, unsigned n) noexcept {
    if (!reaper_started_.load(std::memory_order_acquire) && start_reaper() < 0) return 0;
    std::lock_guard lk(sq_mu_);
    if (!plugged_here()) return 0;  // unplugged: each op is punted (and submitted) on its own
    unsigned i = queue_run_locked(slots, n);
    io_uring_sqe *sqes[2];
    while (i < n && queue_locked(slots[i], sqes) > 0) ++i;
    return i;
}

unsigned uring_backend::queue_run_locked(op_slot *const *slots, unsigned n) noexcept {
    // queue_locked's limits, for the whole run at once: the CQ holds every
    // op in the ring, and the SQ has a free entry for each.
    const unsigned in_ring = inring_count_;
    if (in_ring + 1 >= cq_entries_) return 0;
    unsigned fit = cq_entries_ - 1 - in_ring;
    if (const unsigned sq_free = io_uring_sq_space_left(&ring_); sq_free < fit) fit = sq_free;
    if (n < fit) fit = n;
    // io_uring_get_sqe's step, once per run: the SQEs are free (counted
    // above) and 64 bytes each (the ring is set up without
    // IORING_SETUP_SQE128 or SQPOLL).
    io_uring_sq &sq = ring_.sq;
    unsigned tail = sq.sqe_tail;
    unsigned i = 0;
    for (; i < fit && sqes_of(*slots[i]) == 1; ++i) {
        op_slot *s = slots[i];
        io_uring_sqe *sqe = &sq.sqes[tail++ & sq.ring_mask];
        prep_pread_inline(sqe, *s);
        io_uring_sqe_set_data(sqe, s);
        link_locked(s);
    }
    sq.sqe_tail = tail;
    inring_count_ += i;
    pending_submit_ += i;
    return i;
}

int uring_backend::queue_locked(op_slot *slot, io_uring_sqe **sqes) noexcept {
    // Never let more ops into the ring than its CQ can hold.
    if (inring_count_ + 1 >= cq_entries_) return -EAGAIN;
    const bool timed_poll = is_timed_poll(*slot);
    const bool deadline = (slot->flags & ASYS_F_DEADLINE) && !timed_poll;  // accepts(): not both
    if (!reserve_sqes_locked(sqes_of(*slot))) return -EAGAIN;
    sqes[0] = io_uring_get_sqe(&ring_);
    prep_pread_inline(sqes[0], *slot);
    io_uring_sqe_set_data(sqes[0], slot);
    track_locked(slot);
    ++pending_submit_;
    if (timed_poll) {
        // A linked timeout; the timespec lives in the slot's poll view (the
        // kernel reads it at submission, which a batch may delay).
        const int64_t ms = slot->poll.timeout_ms;
        slot->poll.ring_timeout.tv_sec = ms / 1000;
        slot->poll.ring_timeout.tv_nsec = (ms % 1000) * 1000000;
        sqes[0]->flags |= IOSQE_IO_LINK;
        sqes[1] = io_uring_get_sqe(&ring_);
        io_uring_prep_link_timeout(sqes[1], &slot->poll.ring_timeout, 0);
        io_uring_sqe_set_data64(sqes[1], kTagIgnore);
        ++pending_submit_;
    }
    if (deadline) {
        // ASYS_F_DEADLINE: an absolute CLOCK_MONOTONIC linked timeout (the
        // timespec lives in the slot); complete_taken() reports the op it
        // cancelled as -ETIME.
        sqes[0]->flags |= IOSQE_IO_LINK;
        sqes[1] = io_uring_get_sqe(&ring_);
        io_uring_prep_link_timeout(sqes[1], &slot->deadline, IORING_TIMEOUT_ABS);
        io_uring_sqe_set_data64(sqes[1], kTagIgnore);
        ++pending_submit_;
    }
    return timed_poll || deadline ? 2 : 1;
}

bool uring_backend::supports_opcode(uint32_t opcode) const noexcept {
    return opcode < ASYS_OP__COUNT && (supported_ & (uint64_t{1} << opcode));
}

int uring_backend::punt_linked(op_slot *slot, linked_ops *lo) noexcept {
    if (lo->n == 0 || lo->n > linked_ops::kMax) return -EINVAL;
    if (!reaper_started_.load(std::memory_order_acquire) && start_reaper() < 0) return -EAGAIN;
    {
        std::lock_guard lk(sq_mu_);
        if (inring_count_ + lo->n >= cq_entries_) return -EAGAIN;
        if (!reserve_sqes_locked(lo->n)) return -EAGAIN;
        io_uring_sqe *sqes[linked_ops::kMax];
        lo->slot = slot;
        lo->done = 0;
        for (unsigned k = 0; k < lo->n; ++k) lo->e[k].owner.store(lo, std::memory_order_release);
        for (unsigned k = 0; k < lo->n; ++k) {
            linked_entry &e = lo->e[k];
            sqes[k] = io_uring_get_sqe(&ring_);  // space reserved above
            prep(sqes[k], e.opcode, e.args);
            if (k + 1 < lo->n) sqes[k]->flags |= IOSQE_IO_LINK;
            io_uring_sqe_set_data64(sqes[k], reinterpret_cast<uint64_t>(&e) | kTagLink);
        }
        track_linked_locked(lo);
        inring_count_ += lo->n;  // one CQE per entry
        pending_submit_ += lo->n;
        if (int rc = submit_or_take_back_locked(nullptr, sqes, lo->n, 0)) {
            untrack_linked_locked(lo);
            inring_count_ -= lo->n;
            return rc;
        }
    }
    if (ready()) reap();
    return 0;
}

namespace {
/// The plugs the calling thread holds, per ring (a batch plugs only its own
/// thread's submissions: another thread's punt still enters the kernel,
/// taking whatever SQEs are ready with it). A few rings at once at most (a
/// batch inside a completion callback of another context's batch); a
/// thread past that does not plug.
struct thread_plug {
    const uring_backend *ring;
    unsigned depth;
};
constexpr unsigned kPlugRings = 4;
__attribute__((tls_model("initial-exec"))) thread_local thread_plug t_plugs[kPlugRings];
/// The sum of the calling thread's plug depths: 0 answers plugged_here()
/// (every single punt asks) without a look at the table.
__attribute__((tls_model("initial-exec"))) thread_local unsigned t_plugs_held;

unsigned *plug_depth(const uring_backend *b, bool make) noexcept {
    thread_plug *free_entry = nullptr;
    for (thread_plug &p : t_plugs) {
        if (p.depth && p.ring == b) return &p.depth;
        if (!p.depth && !free_entry) free_entry = &p;
    }
    if (!make || !free_entry) return nullptr;
    free_entry->ring = b;
    return &free_entry->depth;
}
}  // namespace

bool uring_backend::plugged_here() const noexcept {
    if (t_plugs_held == 0) return false;
    const unsigned *d = plug_depth(this, false);
    return d && *d;
}

void uring_backend::plug() noexcept {
    if (unsigned *d = plug_depth(this, true)) {
        ++*d;
        ++t_plugs_held;
    }
}

void uring_backend::flush() noexcept {
    {
        std::lock_guard lk(sq_mu_);
        submit_locked();
    }
    if (ready()) reap();
}

void uring_backend::unplug() noexcept {
    unsigned *d = plug_depth(this, false);
    if (d) --t_plugs_held;
    if (d && --*d > 0) return;  // an outer plug of this thread submits
    {
        std::lock_guard lk(sq_mu_);
        submit_locked();
    }
    if (ready()) reap();
}

namespace {
/// The backend whose CQ the calling thread is draining (completion
/// callbacks run inside the drain): a callback that submits, waits or
/// cancels on the same context must not take cq_mu_ again.
__attribute__((tls_model("initial-exec"))) thread_local const uring_backend *t_draining = nullptr;
}  // namespace

bool uring_backend::reaping_here() const noexcept { return t_draining == this; }

unsigned uring_backend::reap() noexcept {
    if (t_draining == this) return 0;  // inside a callback of this drain: it goes on after
    // Nothing posted: no lock to try (a CQE posted after this load is
    // reaped by whoever calls next, as when the lock is busy).
    if (!ready()) return 0;
    unsigned n = 0;
    // Whoever holds cq_mu_ re-checks the CQ after releasing it, so a CQE
    // posted while another thread gave up on the lock is never stranded.
    for (;;) {
        std::unique_lock lk(cq_mu_, std::try_to_lock);
        if (!lk.owns_lock()) return n;
        t_draining = this;
        n += drain_locked();
        t_draining = nullptr;
        lk.unlock();
        if (!ready()) return n;
    }
}

unsigned uring_backend::drain_locked() noexcept {
    unsigned n = 0;
    // CQEs are taken in groups: their slots leave the in-ring list under
    // one SQ lock per group (not one per CQE), then complete in order.
    constexpr unsigned kGroup = 32;
    struct taken {
        uint64_t ud;
        int res;
    } t[kGroup];
    for (;;) {
        // io_uring_for_each_cqe's walk, with the tail read once (acquire:
        // the CQEs before it are visible) and 16-byte CQEs (the ring is
        // set up without IORING_SETUP_CQE32). cq_mu_ is held: only this
        // thread moves the head.
        const unsigned head = *ring_.cq.khead;
        unsigned got = io_uring_smp_load_acquire(ring_.cq.ktail) - head;
        if (got == 0) return n;
        if (got > kGroup) got = kGroup;
        {
            // Copied and untracked in one pass.
            std::lock_guard sl(sq_mu_);
            for (unsigned i = 0; i < got; ++i) {
                const io_uring_cqe &cqe = ring_.cq.cqes[(head + i) & ring_.cq.ring_mask];
                t[i] = {cqe.user_data, cqe.res};
                if ((t[i].ud & kTagMask) == 0) untrack_locked(reinterpret_cast<op_slot *>(t[i].ud));
            }
        }
        io_uring_cq_advance(&ring_, got);
        for (unsigned i = 0; i < got; ++i) n += complete_taken(t[i].ud, t[i].res);
    }
}

namespace {

/// What the call would have returned, for the CQE results that differ from
/// it (only errors, NOPs and polls).
long call_result_of(op_slot &s, long r) noexcept {
    if (s.opcode == ASYS_OP_NOP && r == 0) r = static_cast<long>(s.sys.args[0]);
    // Cut short by its deadline's linked timeout (not by a cancel).
    if ((s.flags & ASYS_F_DEADLINE) && r == -ECANCELED && !s.cancel.load(std::memory_order_relaxed)) {
        r = -ETIME;
        s.expired = 1;
    }
    // A poll cut short by its linked timeout (not by a cancel) timed out:
    // report 0, as poll(2) does.
    if (s.opcode == ASYS_OP_POLL && r == -ECANCELED && !s.cancel.load(std::memory_order_relaxed)) r = 0;
    if (s.opcode == ASYS_OP_POLL) {
        // poll(2) reports a closed descriptor as POLLNVAL, and only the
        // requested events plus POLLERR and POLLHUP.
        if (r == -EBADF) r = POLLNVAL;
        else if (r > 0) r &= static_cast<uint16_t>(s.poll.events) | POLLERR | POLLHUP | POLLNVAL;
    }
    return r;
}

}  // namespace

// (Always inline: drain_locked, its one caller, pays no call per CQE.)
[[gnu::always_inline]] inline unsigned uring_backend::complete_taken(uint64_t ud, int res) noexcept {
    switch (ud & kTagMask) {
        case 0: {
            auto *s = reinterpret_cast<op_slot *>(ud);  // untracked by the caller
            long r = res;
            if (r < 0 || s->opcode == ASYS_OP_NOP || s->opcode == ASYS_OP_POLL) r = call_result_of(*s, r);
            if (long injected = fault::injected_ring_error()) r = injected;  // tests only
            sink_.complete(s, r, ASYS_PATH_URING);
            return 1;
        }
        case kTagLink: {
            auto *e = reinterpret_cast<linked_entry *>(ud & ~kTagMask);
            linked_ops *lo = e->owner.load(std::memory_order_acquire);
            e->res = res;
            if (++lo->done < lo->n) return 0;  // cq_mu_ held: no other reaper
            op_slot *s = lo->slot;
            {
                std::lock_guard sl(sq_mu_);
                untrack_linked_locked(lo);
                inring_count_ -= lo->n;
            }
            sink_.complete(s, 0, ASYS_PATH_URING);  // the builder reads lo
            return 1;
        }
        case kTagCancel: {
            auto *c = reinterpret_cast<cancel_req *>(ud & ~kTagMask);
            (void)c->armed.load(std::memory_order_acquire);
            std::lock_guard cl(c->mu);
            c->res = res;
            c->done = true;
            c->cv.notify_all();
            return 0;
        }
        default: return 0;  // stop, ignore
    }
}

void uring_backend::prepare_wait() noexcept {
    uint64_t v;
    if (kick_fd_ >= 0)  // consume earlier kicks: a kick from now on stays pending
        raw_syscall6(SYS_read, static_cast<uint64_t>(kick_fd_), reinterpret_cast<uint64_t>(&v), 8, 0, 0, 0);
}

int uring_backend::wait_completions(const struct timespec *deadline) noexcept {
    if (kick_fd_ < 0) return -EOPNOTSUPP;
    struct timespec rel{};
    if (deadline) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        constexpr int64_t kMaxSec = int64_t{1} << 31;  // no overflow below
        int64_t sec = deadline->tv_sec - now.tv_sec;
        if (sec > kMaxSec) sec = kMaxSec;
        const int64_t ns = sec * 1000000000 + (deadline->tv_nsec - now.tv_nsec);
        if (ns <= 0) return -ETIME;
        rel.tv_sec = static_cast<time_t>(ns / 1000000000);
        rel.tv_nsec = static_cast<long>(ns % 1000000000);
    }
    // The ring's fd is readable while its CQ holds completions; the kick
    // eventfd while a kick is pending.
    struct pollfd pfd[2] = {{ring_.ring_fd, POLLIN, 0}, {kick_fd_, POLLIN, 0}};
    const long r = raw_syscall6(SYS_ppoll, reinterpret_cast<uint64_t>(pfd), 2,
                                deadline ? reinterpret_cast<uint64_t>(&rel) : 0, 0, 0, 0);
    if (r == 0) return -ETIME;
    return r < 0 ? static_cast<int>(r) : 0;
}

void uring_backend::kick() noexcept {
    const uint64_t one = 1;
    if (kick_fd_ >= 0)
        raw_syscall6(SYS_write, static_cast<uint64_t>(kick_fd_), reinterpret_cast<uint64_t>(&one), 8, 0, 0, 0);
}

void *uring_backend::reaper_main(void *arg) noexcept {
    static_cast<uring_backend *>(arg)->reaper_loop();
    return nullptr;
}

void uring_backend::reaper_loop() noexcept {
    uint64_t v;
    while (!stopping_.load(std::memory_order_acquire)) {
        raw_syscall6(SYS_read, static_cast<uint64_t>(efd_), reinterpret_cast<uint64_t>(&v), 8, 0, 0, 0);
        reap();
    }
    reap();
}

int uring_backend::cancel(uint64_t user_data) noexcept {
    // Scan and submit under sq_mu_: a slot cannot leave the ring (and be
    // reused by another op) while the lock is held, and io_uring handles
    // an async-cancel during the submitting io_uring_enter, so each cancel
    // hits the op it was aimed at.
    std::vector<std::unique_ptr<cancel_req>> reqs;
    {
        std::lock_guard lk(sq_mu_);
        // One async-cancel per target: a single op, or every entry of a
        // linked sequence (finished ones answer -ENOENT; cancelling a
        // waiting one breaks the link after it).
        auto aim = [&](uint64_t target) {
            io_uring_sqe *sqe = get_sqe_locked();
            if (!sqe) return;
            std::unique_ptr<cancel_req> r(new (std::nothrow) cancel_req);
            if (!r) return;
            r->armed.store(true, std::memory_order_release);
            io_uring_prep_cancel64(sqe, target, 0);
            io_uring_sqe_set_data64(sqe, reinterpret_cast<uint64_t>(r.get()) | kTagCancel);
            ++pending_submit_;
            reqs.push_back(std::move(r));
        };
        for (op_slot *s = inring_; s; s = s->next) {
            if (s->user_data != user_data) continue;
            s->cancel.store(1, std::memory_order_relaxed);
            aim(reinterpret_cast<uint64_t>(s));
        }
        for (linked_ops *lo = inring_linked_; lo; lo = lo->next) {
            if (lo->slot->user_data != user_data) continue;
            lo->slot->cancel.store(1, std::memory_order_relaxed);
            for (unsigned k = 0; k < lo->n; ++k) aim(reinterpret_cast<uint64_t>(&lo->e[k]) | kTagLink);
        }
        if (reqs.empty()) return -ENOENT;
        submit_locked();
    }
    const bool nested = t_draining == this;  // called from a completion callback
    if (!nested) reap();  // cancels usually complete during the enter: reap them here
    bool running = false, queued = false;
    for (auto &r : reqs) {
        if (nested) {
            // This thread holds the CQ (a callback inside drain_locked): no
            // other thread can reap the cancel's CQE, so drain on.
            for (;;) {
                {
                    std::lock_guard cl(r->mu);
                    if (r->done) break;
                }
                io_uring_cqe *cqe = nullptr;
                if (!ready()) (void)io_uring_wait_cqe(&ring_, &cqe);
                drain_locked();
            }
        }
        std::unique_lock cl(r->mu);
        r->cv.wait(cl, [&] { return r->done; });
        if (r->res == 0) queued = true;
        else if (r->res == -EALREADY) running = true;
        // -ENOENT: it completed meanwhile, with its real result
    }
    if (running) return -EALREADY;
    return queued ? 0 : -ENOENT;
}

void uring_backend::cancel_all() noexcept {
    {
        std::lock_guard lk(sq_mu_);
        if (!inring_count_) return;
        for (op_slot *s = inring_; s; s = s->next) s->cancel.store(1, std::memory_order_relaxed);
        for (linked_ops *lo = inring_linked_; lo; lo = lo->next) lo->slot->cancel.store(1, std::memory_order_relaxed);
        io_uring_sqe *sqe = get_sqe_locked();
        if (!sqe) return;
        io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY | IORING_ASYNC_CANCEL_ALL);
        io_uring_sqe_set_data64(sqe, kTagIgnore);
        ++pending_submit_;
        submit_locked();
    }
    reap();  // the cancelled ops complete during the enter (unless nested: the drain goes on)
}

void uring_backend::stop() noexcept {
    if (!ring_ok_) return;
    if (reaper_started_.load(std::memory_order_acquire)) {
        stopping_.store(true, std::memory_order_release);
        uint64_t one = 1;
        raw_syscall6(SYS_write, static_cast<uint64_t>(efd_), reinterpret_cast<uint64_t>(&one), 8, 0, 0, 0);
        pthread_join(reaper_, nullptr);
        reaper_started_.store(false, std::memory_order_relaxed);
    }
    release_ring();
}

void uring_backend::release_ring() noexcept {
    if (ring_ok_) {
        library_fds::remove(ring_.ring_fd);
        io_uring_queue_exit(&ring_);
    }
    if (efd_ >= 0) {
        library_fds::remove(efd_);
        close(efd_);
    }
    efd_ = -1;
    if (kick_fd_ >= 0) {
        library_fds::remove(kick_fd_);
        close(kick_fd_);
    }
    kick_fd_ = -1;
    ring_ok_ = false;
}

void uring_backend::abandon() noexcept {
    // In a fork child: the reaper does not exist here. Unmapping the ring
    // and closing the fd only affect this process.
    reaper_started_.store(false, std::memory_order_relaxed);
    release_ring();
}

}  // namespace asys::internal
