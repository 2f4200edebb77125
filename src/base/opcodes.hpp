// The opcode table: one row per asys opcode, from which every consumer
// derives what it needs: the router's class (and so the inline probe), the
// system call a worker runs, the io_uring opcode, and what the syslet
// interpreter may probe or link. The enum order of ASYS_OP_* is checked at
// compile time; each consumer's switch over the opcodes has no default, so
// an opcode a consumer does not handle fails the build (-Wswitch -Werror).
#pragma once
#include <cerrno>
#include <linux/io_uring.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>

#include <cstdint>

#include "asys/asys.h"

namespace asys::internal {

/// MAX_RW_COUNT: the most bytes one read, write, send or recv call moves
/// (it clamps a longer length, or a vector's total, to this).
inline constexpr uint64_t kMaxRwCount = 0x7ffff000;

/// The arguments of a PREAD or PWRITE that io_uring runs as pread(2) or
/// pwrite(2) would, on a descriptor that seeks: a length its 32-bit field
/// holds, not 0 (the call still checks the descriptor, the ring returns 0
/// at once), and an offset >= 0 (-1 means "the file position" on the ring,
/// EINVAL for the call). The one rule for both args_fit_ring and a batch's
/// positional reads (backend::takes_fitting_preads).
inline bool ring_positional_args_fit(const uint64_t (&a)[6]) noexcept {
    return a[2] != 0 && a[2] <= kMaxRwCount && static_cast<int64_t>(a[3]) >= 0;
}

/// How the router treats an op before any backend sees it.
enum class op_class : uint8_t {
    never_blocks,  ///< run inline always (nop, cheap getters)
    read,          ///< read family: inline probe with preadv2(RWF_NOWAIT)
    recv,          ///< recv: inline probe with MSG_DONTWAIT
    send,          ///< send: inline probe with MSG_DONTWAIT
    open,          ///< openat: inline probe with openat2(RESOLVE_CACHED)
    close,         ///< close: inline unless the file may wait on close (linger, network fs)
    poll,          ///< poll: inline probe with a zero timeout
    syscall,       ///< generic: never_blocks if the number is in that set
    backend,       ///< no useful probe: straight to a backend
    feature,       ///< implemented by a layer above the core (chains): see router.hpp
};

/// What the syslet interpreter may do with an atom that makes this call.
enum atom_use : uint8_t {
    atom_none = 0,
    atom_probe = 1,  ///< try it inline with this opcode's probe before going async
    atom_link = 2,   ///< may be one of a chain's linked io_uring SQEs
};

/// No io_uring opcode serves it (the pool runs it).
constexpr uint8_t kNoRingOp = 0xff;
/// IORING_OP_FTRUNCATE (Linux 6.9), newer than this liburing's headers.
constexpr uint8_t kRingOpFtruncate = 55;

// X(NAME, "name", syscall nr (-1: the executor special-cases it), args
//   used, class, io_uring opcode, atom use, scheduling class (ASYS_CLASS_*:
//   which of the pool's queues and worker budgets it uses; SYSCALL's is
//   decided per number by syscall_sched_class, docs/scheduling.md))
// CLOSE has no ring opcode: a punted close is one that waits (a lingering
// socket, a network filesystem), and the ring would wait in the
// submitter's io_uring_enter, where it drops the last reference.
#define ASYS_OPCODE_TABLE(X)                                                                        \
    X(NOP, "nop", -1, 1, never_blocks, IORING_OP_NOP, atom_none, META)                               \
    X(READ, "read", SYS_read, 3, read, IORING_OP_READ, atom_probe | atom_link, READ)                 \
    X(PREAD, "pread", SYS_pread64, 4, read, IORING_OP_READ, atom_probe | atom_link, READ)            \
    X(READV, "readv", SYS_readv, 3, read, IORING_OP_READV, atom_probe, READ)                         \
    X(PREADV, "preadv", SYS_preadv2, 5, read, IORING_OP_READV, atom_none, READ)                      \
    X(WRITE, "write", SYS_write, 3, backend, IORING_OP_WRITE, atom_link, WRITE)                      \
    X(PWRITE, "pwrite", SYS_pwrite64, 4, backend, IORING_OP_WRITE, atom_link, WRITE)                 \
    X(WRITEV, "writev", SYS_writev, 3, backend, IORING_OP_WRITEV, atom_none, WRITE)                  \
    X(PWRITEV, "pwritev", SYS_pwritev2, 5, backend, IORING_OP_WRITEV, atom_none, WRITE)              \
    X(OPENAT, "openat", SYS_openat, 4, open, IORING_OP_OPENAT, atom_probe, META)                     \
    X(CLOSE, "close", SYS_close, 1, close, kNoRingOp, atom_probe, META)                              \
    X(FSYNC, "fsync", SYS_fsync, 1, backend, IORING_OP_FSYNC, atom_link, WRITE)                      \
    X(FDATASYNC, "fdatasync", SYS_fdatasync, 1, backend, IORING_OP_FSYNC, atom_link, WRITE)          \
    X(STATX, "statx", SYS_statx, 5, backend, IORING_OP_STATX, atom_none, META)                       \
    X(UNLINKAT, "unlinkat", SYS_unlinkat, 3, backend, IORING_OP_UNLINKAT, atom_none, META)           \
    X(RENAMEAT, "renameat", SYS_renameat2, 5, backend, IORING_OP_RENAMEAT, atom_none, META)          \
    X(MKDIRAT, "mkdirat", SYS_mkdirat, 3, backend, IORING_OP_MKDIRAT, atom_none, META)               \
    X(FALLOCATE, "fallocate", SYS_fallocate, 4, backend, IORING_OP_FALLOCATE, atom_none, WRITE)      \
    X(FTRUNCATE, "ftruncate", SYS_ftruncate, 2, backend, kRingOpFtruncate, atom_none, WRITE)         \
    X(ACCEPT, "accept", SYS_accept4, 4, backend, IORING_OP_ACCEPT, atom_none, NET)                   \
    X(CONNECT, "connect", SYS_connect, 3, backend, IORING_OP_CONNECT, atom_none, NET)                \
    X(RECV, "recv", SYS_recvfrom, 4, recv, IORING_OP_RECV, atom_probe, NET)                          \
    X(SEND, "send", SYS_sendto, 4, send, IORING_OP_SEND, atom_probe, NET)                            \
    X(POLL, "poll", -1, 3, poll, IORING_OP_POLL_ADD, atom_none, NET)                                 \
    X(SYSCALL, "syscall", -1, 6, syscall, kNoRingOp, atom_none, LONG)                                \
    X(CHAIN, "chain", -1, 2, feature, kNoRingOp, atom_none, LONG)                                        \
    X(THREADLET, "threadlet", -1, 3, feature, kNoRingOp, atom_none, LONG)

struct opcode_info {
    const char *name;
    long nr;          ///< syscall number, -1 where the executor special-cases it
    uint8_t nargs;    ///< args used; the rest are passed as zero
    op_class cls;
    uint8_t ring_op;  ///< IORING_OP_*, or kNoRingOp
    uint8_t atom;     ///< atom_use bits
    uint8_t sched;    ///< ASYS_CLASS_*
};

inline constexpr opcode_info kOpcodes[] = {
#define ASYS_OPCODE_ROW(NAME, name, nr, nargs, cls, ring, atom, sched) \
    {name, nr, nargs, op_class::cls, static_cast<uint8_t>(ring), static_cast<uint8_t>(atom), ASYS_CLASS_##sched},
    ASYS_OPCODE_TABLE(ASYS_OPCODE_ROW)
#undef ASYS_OPCODE_ROW
};
static_assert(sizeof kOpcodes / sizeof kOpcodes[0] == ASYS_OP__COUNT, "one row per opcode");
namespace opcode_order {  // each row sits at its ASYS_OP_* value
#define ASYS_OPCODE_ENUM(NAME, ...) NAME,
enum row : unsigned { ASYS_OPCODE_TABLE(ASYS_OPCODE_ENUM) };
#undef ASYS_OPCODE_ENUM
#define ASYS_OPCODE_CHECK(NAME, ...) static_assert(static_cast<unsigned>(row::NAME) == static_cast<unsigned>(ASYS_OP_##NAME), "row order: " #NAME);
ASYS_OPCODE_TABLE(ASYS_OPCODE_CHECK)
#undef ASYS_OPCODE_CHECK
}  // namespace opcode_order

/// The opcode whose probe (atom_probe) or link mapping (atom_link) serves
/// an atom making system call `nr`, or -1.
constexpr int opcode_for_atom(long nr, uint8_t use) noexcept {
    for (unsigned op = 0; op < ASYS_OP__COUNT; ++op)
        if (kOpcodes[op].nr == nr && (kOpcodes[op].atom & use)) return static_cast<int>(op);
    return -1;
}

/// An io_uring completion of `opcode` with `res` EFAULT or EINVAL, where the
/// ring did nothing but may have checked the error before one the system
/// call checks first (a read of a write-only fd into a bad buffer is EBADF
/// for read(2), EFAULT on the ring): true if running the call again gives
/// the call's own result with no other effect. Not on sockets: a datagram
/// the ring failed to copy out is gone, as it is for recv(2). (May fstat;
/// only on these error paths: the test of `res` is inline.)
bool ring_error_to_recheck_slow(uint32_t opcode, const uint64_t (&args)[6]) noexcept;
inline bool ring_error_to_recheck(uint32_t opcode, const uint64_t (&args)[6], long res) noexcept {
    return (res == -EFAULT || res == -EINVAL) && ring_error_to_recheck_slow(opcode, args);
}

/// An io_uring read of `opcode` that returned a short count `res` > 0: true
/// if the descriptor is a memory device (/dev/zero, /dev/urandom: major 1),
/// whose read the ring's nonblocking first attempt may stop after a page
/// where read(2) fills the buffer; the rest is then read on the pool.
/// Not /dev/kmsg (minor 11), whose reads return one record each. When
/// `whole_again` is given, it is set when reading the whole request again
/// gives read(2)'s result and effect too: a device with no file position
/// (zero, full, random, urandom). (fstat; only for short ring reads: the
/// tests of the opcode and the count are inline.)
bool ring_short_read_to_finish_slow(uint32_t opcode, const uint64_t (&args)[6], long res,
                                    bool *whole_again) noexcept;
inline bool ring_short_read_to_finish(uint32_t opcode, const uint64_t (&args)[6], long res,
                                      bool *whole_again = nullptr) noexcept {
    const bool vectored = opcode == ASYS_OP_READV || opcode == ASYS_OP_PREADV;
    if ((opcode != ASYS_OP_READ && opcode != ASYS_OP_PREAD && !vectored) || res <= 0) return false;
    if (!vectored && (static_cast<uint64_t>(res) >= args[2] || static_cast<uint64_t>(res) >= kMaxRwCount))
        return false;
    return ring_short_read_to_finish_slow(opcode, args, res, whole_again);
}

/// An io_uring write of `opcode` that returned a short count `res` > 0 where
/// the call would have gone on: a WRITE, WRITEV or PWRITEV at the file
/// position (which the ring takes only for pipes, FIFOs, sockets and ttys),
/// or a SEND without MSG_DONTWAIT, on a descriptor without O_NONBLOCK. The
/// ring's nonblocking attempts move what fits and complete with that, where
/// write(2) and send(2) wait until every byte is out; the rest is then
/// written on the pool. (fcntl, and for a vector its lengths read through
/// the kernel; only for short ring writes: the inline tests come first.)
bool ring_short_write_to_finish_slow(uint32_t opcode, const uint64_t (&args)[6], long res) noexcept;
inline bool ring_short_write_to_finish(uint32_t opcode, const uint64_t (&args)[6], long res) noexcept {
    const bool vectored = opcode == ASYS_OP_WRITEV || (opcode == ASYS_OP_PWRITEV && static_cast<int64_t>(args[3]) == -1);
    if ((opcode != ASYS_OP_WRITE && opcode != ASYS_OP_SEND && !vectored) || res <= 0) return false;
    if (!vectored && (static_cast<uint64_t>(res) >= args[2] || static_cast<uint64_t>(res) >= kMaxRwCount))
        return false;
    return ring_short_write_to_finish_slow(opcode, args, res);
}

/// A ring SEND that failed with EPIPE (the peer is gone) owes the
/// application the SIGPIPE send(2) raises without MSG_NOSIGNAL: io_uring
/// always sends with MSG_NOSIGNAL.
inline bool ring_send_owes_sigpipe(uint32_t opcode, const uint64_t (&args)[6], long res) noexcept {
    return res == -EPIPE && opcode == ASYS_OP_SEND && !(args[3] & MSG_NOSIGNAL);
}

/// The total length of the caller's `cnt` iovecs at `uiov`, read through
/// the kernel (the array may be bad), stopping once it reaches `limit`.
/// False if the array cannot be read.
bool caller_iov_total(const void *uiov, uint64_t cnt, uint64_t limit, uint64_t *total) noexcept;

/// The segments of the `cnt` iovecs at `iov` after their first `skip`
/// bytes, cut to cover at most `limit` bytes, into `out` (at most `max`):
/// the rest of a vectored transfer that stopped short (`limit`: what the
/// call may still move, MAX_RW_COUNT less `skip`). Returns how many. `iov`
/// is read directly: it is an array the kernel has just read for the first
/// part of the same call.
unsigned iov_after(const struct iovec *iov, uint64_t cnt, uint64_t skip, uint64_t limit, struct iovec *out,
                   unsigned max) noexcept;

/// The scheduling class of generic system call `nr`: the class of the
/// opcode that makes the same call, else its row in the table of known
/// calls (opcodes.cpp), else ASYS_CLASS_LONG (unknown calls may take long).
uint8_t syscall_sched_class(long nr) noexcept;

/// The scheduling class of an op: the ASYS_F_CLASS override, else the
/// opcode's (a generic syscall's: by its number).
inline uint8_t sched_class_of(uint32_t opcode, long nr, uint32_t flags) noexcept {
    if (flags & ASYS_F_CLASS_MASK) return static_cast<uint8_t>(((flags & ASYS_F_CLASS_MASK) >> ASYS_F_CLASS_SHIFT) - 1);
    if (opcode == ASYS_OP_SYSCALL) return syscall_sched_class(nr);
    return kOpcodes[opcode].sched;
}

/// Per scheduling class: its name, its default worker budget (the pool's
/// bound divided by `budget_divisor`, at least 1), and whether it may borrow
/// idle workers beyond its budget while no other class waits (not for
/// classes whose calls may never end: a borrowed worker could not be given
/// back). One row per ASYS_CLASS_*.
struct sched_class_info {
    const char *name;
    uint8_t budget_divisor;
    bool borrows;
};
inline constexpr sched_class_info kSchedClasses[] = {
    {"read", 2, true},    // ASYS_CLASS_READ
    {"write", 2, true},   // ASYS_CLASS_WRITE
    {"meta", 2, true},    // ASYS_CLASS_META
    {"net", 4, false},    // ASYS_CLASS_NET: a recv may wait for its peer forever
    {"long", 4, false},   // ASYS_CLASS_LONG: sleeps, waits, locks, unknown calls
};
static_assert(sizeof kSchedClasses / sizeof kSchedClasses[0] == ASYS_CLASS__COUNT, "one row per class");

/// True if a generic syscall number is in the "never blocks" set.
bool syscall_never_blocks(long nr) noexcept;

/// Runs system call `nr` on the calling thread, keeping the library's own
/// descriptors out of reach of close / dup2 / dup3 / close_range
/// (library_fds::run_sparing). -errno on failure.
long run_syscall(long nr, const uint64_t (&args)[6]) noexcept;

/// Runs the op's system call on the calling thread, blocking if it blocks.
/// Returns the result or -errno. (Not for feature opcodes: their slot's
/// hooks run them.)
long execute_op(uint32_t opcode, long nr, const uint64_t (&args)[6]) noexcept;

/// The rest of a READ, PREAD, READV, PREADV, WRITE, WRITEV, PWRITEV or SEND
/// whose first `done` bytes (> 0) already went through (a short nonblocking
/// attempt, or a short ring write to a stream): runs the
/// remainder, blocking if it blocks, no further than the call would go
/// (MAX_RW_COUNT in all), and returns the whole count (`done`
/// alone if the remainder fails, as the call would report the bytes it
/// moved), or -EINTR if the remainder was interrupted before any byte.
long execute_rest_of_transfer(uint32_t opcode, const uint64_t (&args)[6], uint64_t done) noexcept;

/// The arguments of that rest, in place in `a` (a vector's remaining
/// segments go to `rest`, at most `max`): returns the opcode the rest runs
/// as (a vector's at the file position as PREADV/PWRITEV at -1), 0 if the
/// first part already moved all the call moves, -1 if `opcode` is not a
/// transfer.
int rest_of_transfer(uint32_t opcode, uint64_t (&a)[6], uint64_t done, struct iovec *rest, unsigned max) noexcept;

}  // namespace asys::internal
