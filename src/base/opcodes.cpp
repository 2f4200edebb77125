#include "base/opcodes.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/sysmacros.h>
#include <sys/syscall.h>

#include "base/denylist.hpp"
#include "base/library_fds.hpp"
#include "base/raw_syscall.hpp"

namespace asys::internal {

bool ring_error_to_recheck_slow(uint32_t opcode, const uint64_t (&a)[6]) noexcept {
    switch (opcode) {
        case ASYS_OP_RECV: case ASYS_OP_SEND: case ASYS_OP_ACCEPT: case ASYS_OP_CONNECT:
            return false;
        case ASYS_OP_READ: case ASYS_OP_READV: case ASYS_OP_WRITE: case ASYS_OP_WRITEV: {
            struct stat st;
            return !(raw_syscall6(SYS_fstat, static_cast<uint64_t>(static_cast<int>(a[0])),
                                  reinterpret_cast<uint64_t>(&st), 0, 0, 0, 0) == 0 &&
                     S_ISSOCK(st.st_mode));
        }
        default:
            return true;
    }
}

bool caller_iov_total(const void *uiov, uint64_t cnt, uint64_t limit, uint64_t *total) noexcept {
    *total = 0;
    struct iovec chunk[64];
    const auto *v = static_cast<const struct iovec *>(uiov);
    for (uint64_t i = 0; i < cnt && *total < limit; i += 64) {
        const uint64_t k = cnt - i < 64 ? cnt - i : 64;
        if (copy_from_caller(chunk, v + i, k * sizeof(iovec)) < 0) return false;
        for (uint64_t j = 0; j < k; ++j) *total += chunk[j].iov_len;
    }
    return true;
}

unsigned iov_after(const struct iovec *iov, uint64_t cnt, uint64_t skip, uint64_t limit, struct iovec *out,
                   unsigned max) noexcept {
    unsigned n = 0;
    for (uint64_t i = 0; i < cnt && n < max && limit != 0; ++i) {
        if (skip >= iov[i].iov_len) {
            skip -= iov[i].iov_len;
            continue;
        }
        const uint64_t len = iov[i].iov_len - skip < limit ? iov[i].iov_len - skip : limit;
        out[n].iov_base = static_cast<char *>(iov[i].iov_base) + skip;
        out[n].iov_len = len;
        limit -= len;
        skip = 0;
        ++n;
    }
    return n;
}

namespace {

// Whether a vectored transfer's count `res` is short of its total (as the
// call caps it, MAX_RW_COUNT), read through the kernel: the array is the
// caller's and may be bad (it was good when the ring read it).
bool vector_short_of_total(const uint64_t (&a)[6], long res) noexcept {
    uint64_t total = 0;
    if (!caller_iov_total(reinterpret_cast<const void *>(a[1]), a[2], kMaxRwCount, &total)) return false;
    return static_cast<uint64_t>(res) < (total < kMaxRwCount ? total : kMaxRwCount);
}

}  // namespace

bool ring_short_read_to_finish_slow(uint32_t opcode, const uint64_t (&a)[6], long res, bool *whole_again) noexcept {
    struct stat st;
    if (raw_syscall6(SYS_fstat, static_cast<uint64_t>(static_cast<int>(a[0])), reinterpret_cast<uint64_t>(&st), 0, 0,
                     0, 0) != 0 ||
        !S_ISCHR(st.st_mode) || major(st.st_rdev) != 1 || minor(st.st_rdev) == 11)
        return false;
    if (whole_again) {
        const unsigned m = minor(st.st_rdev);
        *whole_again = m == 5 || m == 7 || m == 8 || m == 9;
    }
    if (opcode != ASYS_OP_READV && opcode != ASYS_OP_PREADV) return true;
    return vector_short_of_total(a, res);
}

bool ring_short_write_to_finish_slow(uint32_t opcode, const uint64_t (&a)[6], long res) noexcept {
    if (opcode == ASYS_OP_SEND && (static_cast<int>(a[3]) & MSG_DONTWAIT)) return false;
    const long fl = fd_status_flags(a[0]);
    if (fl < 0 || (fl & O_NONBLOCK)) return false;  // a nonblocking descriptor: short is the call's result too
    if (opcode != ASYS_OP_WRITEV && opcode != ASYS_OP_PWRITEV) return true;
    return vector_short_of_total(a, res);
}

namespace {

struct syscall_class_row {
    long nr;
    uint8_t cls;
};
// Generic calls no opcode makes, by class. A call an opcode makes takes
// that opcode's class (the opcode table); a call in neither is LONG. The
// LONG rows name the calls known to take long (sleeps, waits, locks), for
// the reader: they would be LONG anyway.
constexpr syscall_class_row kSyscallClasses[] = {
    {SYS_preadv, ASYS_CLASS_READ}, {SYS_readahead, ASYS_CLASS_READ},
    {SYS_pwritev, ASYS_CLASS_WRITE}, {SYS_sync_file_range, ASYS_CLASS_WRITE}, {SYS_truncate, ASYS_CLASS_WRITE},
    {SYS_copy_file_range, ASYS_CLASS_WRITE}, {SYS_sendfile, ASYS_CLASS_WRITE},
    {SYS_open, ASYS_CLASS_META}, {SYS_openat2, ASYS_CLASS_META}, {SYS_stat, ASYS_CLASS_META},
    {SYS_lstat, ASYS_CLASS_META}, {SYS_fstat, ASYS_CLASS_META}, {SYS_newfstatat, ASYS_CLASS_META},
    {SYS_getdents64, ASYS_CLASS_META}, {SYS_readlinkat, ASYS_CLASS_META}, {SYS_readlink, ASYS_CLASS_META},
    {SYS_access, ASYS_CLASS_META}, {SYS_faccessat, ASYS_CLASS_META}, {SYS_faccessat2, ASYS_CLASS_META},
    {SYS_fchmod, ASYS_CLASS_META}, {SYS_fchmodat, ASYS_CLASS_META}, {SYS_fchown, ASYS_CLASS_META},
    {SYS_fchownat, ASYS_CLASS_META}, {SYS_linkat, ASYS_CLASS_META}, {SYS_symlinkat, ASYS_CLASS_META},
    {SYS_unlink, ASYS_CLASS_META}, {SYS_rename, ASYS_CLASS_META}, {SYS_mkdir, ASYS_CLASS_META},
    {SYS_rmdir, ASYS_CLASS_META}, {SYS_statfs, ASYS_CLASS_META}, {SYS_fstatfs, ASYS_CLASS_META},
    {SYS_utimensat, ASYS_CLASS_META}, {SYS_fadvise64, ASYS_CLASS_META}, {SYS_getxattr, ASYS_CLASS_META},
    {SYS_fgetxattr, ASYS_CLASS_META}, {SYS_setxattr, ASYS_CLASS_META}, {SYS_fsetxattr, ASYS_CLASS_META},
    {SYS_sendmsg, ASYS_CLASS_NET}, {SYS_recvmsg, ASYS_CLASS_NET}, {SYS_sendmmsg, ASYS_CLASS_NET},
    {SYS_recvmmsg, ASYS_CLASS_NET}, {SYS_accept, ASYS_CLASS_NET}, {SYS_shutdown, ASYS_CLASS_NET},
    {SYS_nanosleep, ASYS_CLASS_LONG}, {SYS_clock_nanosleep, ASYS_CLASS_LONG}, {SYS_futex, ASYS_CLASS_LONG},
    {SYS_wait4, ASYS_CLASS_LONG}, {SYS_waitid, ASYS_CLASS_LONG}, {SYS_flock, ASYS_CLASS_LONG},
    {SYS_fcntl, ASYS_CLASS_LONG}, {SYS_pause, ASYS_CLASS_LONG}, {SYS_select, ASYS_CLASS_LONG},
    {SYS_pselect6, ASYS_CLASS_LONG}, {SYS_poll, ASYS_CLASS_LONG}, {SYS_ppoll, ASYS_CLASS_LONG},
    {SYS_epoll_wait, ASYS_CLASS_LONG}, {SYS_epoll_pwait, ASYS_CLASS_LONG}, {SYS_msgrcv, ASYS_CLASS_LONG},
    {SYS_msgsnd, ASYS_CLASS_LONG}, {SYS_semop, ASYS_CLASS_LONG}, {SYS_semtimedop, ASYS_CLASS_LONG},
    {SYS_rt_sigtimedwait, ASYS_CLASS_LONG}, {SYS_sync, ASYS_CLASS_LONG}, {SYS_syncfs, ASYS_CLASS_LONG},
    {SYS_io_getevents, ASYS_CLASS_LONG},
};

constexpr unsigned kSyscallClassSpan = 512;  // above every x86-64 / arm64 number

// One byte per syscall number, derived at compile time from the opcode
// table and kSyscallClasses (a lookup on the submit path, not a search).
struct syscall_class_map {
    uint8_t cls[kSyscallClassSpan];
    constexpr syscall_class_map() : cls{} {
        for (auto &c : cls) c = ASYS_CLASS_LONG;
        for (const syscall_class_row &r : kSyscallClasses)
            if (r.nr >= 0 && r.nr < long{kSyscallClassSpan}) cls[r.nr] = r.cls;
        for (const opcode_info &oi : kOpcodes)
            if (oi.nr >= 0 && oi.nr < long{kSyscallClassSpan}) cls[oi.nr] = oi.sched;
    }
};
constexpr syscall_class_map kSyscallClassMap{};

}  // namespace

uint8_t syscall_sched_class(long nr) noexcept {
    return nr >= 0 && nr < long{kSyscallClassSpan} ? kSyscallClassMap.cls[nr] : uint8_t{ASYS_CLASS_LONG};
}

bool syscall_never_blocks(long nr) noexcept {
    switch (nr) {
        case SYS_getpid: case SYS_getppid: case SYS_getuid:
        case SYS_geteuid: case SYS_getgid: case SYS_getegid: case SYS_getpgrp:
        case SYS_uname: case SYS_clock_gettime: case SYS_gettimeofday:
        case SYS_time: case SYS_sched_yield: case SYS_umask:
        // (not dup2/dup3: replacing a descriptor closes its file, which
        // can wait, e.g. a lingering socket)
        case SYS_dup: case SYS_lseek: case SYS_getrandom:
            return true;
        default:
            return may_read_calling_thread(nr);  // gettid, getpriority, sched_getaffinity, ...
    }
}

long run_syscall(long nr, const uint64_t (&a)[6]) noexcept {
    long res;
    if (library_fds::run_sparing(nr, a, &res)) return res;
    return raw_syscall(nr, a);
}

long execute_op(uint32_t opcode, long nr, const uint64_t (&a)[6]) noexcept {
    switch (opcode) {
        case ASYS_OP_NOP:
            return static_cast<long>(a[0]);
        case ASYS_OP_PREADV:
        case ASYS_OP_PWRITEV:  // (fd, iov, cnt, pos_l, pos_h, flags) on 64-bit
            return raw_syscall6(kOpcodes[opcode].nr, a[0], a[1], a[2], a[3], 0, a[4]);
        case ASYS_OP_RECV:
        case ASYS_OP_SEND:  // recvfrom/sendto without an address
            return raw_syscall6(kOpcodes[opcode].nr, a[0], a[1], a[2], a[3], 0, 0);
        case ASYS_OP_POLL: {
            struct pollfd pfd{static_cast<int>(a[0]), static_cast<short>(a[1]), 0};
            const auto ms = static_cast<int64_t>(a[2]);
            struct timespec ts{ms / 1000, (ms % 1000) * 1000000};
            long r = raw_syscall6(SYS_ppoll, reinterpret_cast<uint64_t>(&pfd), 1,
                                  ms < 0 ? 0 : reinterpret_cast<uint64_t>(&ts), 0, 0, 0);
            return r > 0 ? static_cast<unsigned short>(pfd.revents) : r;
        }
        case ASYS_OP_SYSCALL:
            return run_syscall(nr, a);
        default: {
            const opcode_info &oi = kOpcodes[opcode];
            uint64_t v[6] = {};
            for (unsigned i = 0; i < oi.nargs; ++i) v[i] = a[i];
            return run_syscall(oi.nr, v);
        }
    }
}

int rest_of_transfer(uint32_t opcode, uint64_t (&a)[6], uint64_t done, struct iovec *rest, unsigned max) noexcept {
    // The call moves at most MAX_RW_COUNT in all: the rest only what is left of that.
    if (done >= kMaxRwCount) return 0;
    const uint64_t room = kMaxRwCount - done;
    switch (opcode) {
        case ASYS_OP_SEND:
        case ASYS_OP_READ:
        case ASYS_OP_PREAD:
        case ASYS_OP_WRITE:
            a[1] += done;
            a[2] = a[2] - done < room ? a[2] - done : room;
            if (opcode == ASYS_OP_PREAD) a[3] += done;
            return static_cast<int>(opcode);
        case ASYS_OP_READV:
        case ASYS_OP_PREADV:
        case ASYS_OP_WRITEV:
        case ASYS_OP_PWRITEV: {
            // The caller's segments after what is already filled.
            const unsigned n = iov_after(reinterpret_cast<const struct iovec *>(a[1]), a[2], done, room, rest, max);
            a[1] = reinterpret_cast<uint64_t>(rest);
            a[2] = n;
            const bool write = opcode == ASYS_OP_WRITEV || opcode == ASYS_OP_PWRITEV;
            if (opcode == ASYS_OP_READV || opcode == ASYS_OP_WRITEV) {
                a[3] = static_cast<uint64_t>(-1);  // the file position, which the first part advanced
                a[4] = 0;
            } else if (static_cast<int64_t>(a[3]) >= 0) {
                a[3] += done;
            }
            return write ? ASYS_OP_PWRITEV : ASYS_OP_PREADV;
        }
        default:
            return -1;
    }
}

long execute_rest_of_transfer(uint32_t opcode, const uint64_t (&args)[6], uint64_t done) noexcept {
    uint64_t a[6] = {args[0], args[1], args[2], args[3], args[4], args[5]};
    struct iovec rest[1024];
    const int rest_opcode = rest_of_transfer(opcode, a, done, rest, 1024);
    if (rest_opcode < 0) return execute_op(opcode, 0, args);  // not a transfer: the whole call
    if (rest_opcode == 0) return static_cast<long>(done);     // all the call moves
    const long r = execute_op(static_cast<uint32_t>(rest_opcode), 0, a);
    if (r == -EINTR) return r;  // the caller decides (cancel or retry)
    return r < 0 ? static_cast<long>(done) : static_cast<long>(done) + r;
}

}  // namespace asys::internal
