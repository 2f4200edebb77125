#include "base/opcodes.hpp"

#include <poll.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/syscall.h>

#include "base/library_fds.hpp"
#include "base/raw_syscall.hpp"

namespace asys::internal {

bool ring_error_to_recheck(uint32_t opcode, const uint64_t (&a)[6], long res) noexcept {
    if (res != -EFAULT && res != -EINVAL) return false;
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

bool ring_short_read_to_finish(uint32_t opcode, const uint64_t (&a)[6], long res) noexcept {
    if ((opcode != ASYS_OP_READ && opcode != ASYS_OP_PREAD) || res <= 0 || static_cast<uint64_t>(res) >= a[2])
        return false;
    struct stat st;
    return raw_syscall6(SYS_fstat, static_cast<uint64_t>(static_cast<int>(a[0])), reinterpret_cast<uint64_t>(&st), 0,
                        0, 0, 0) == 0 &&
           S_ISCHR(st.st_mode) && major(st.st_rdev) == 1;
}

bool syscall_never_blocks(long nr) noexcept {
    switch (nr) {
        case SYS_getpid: case SYS_getppid: case SYS_gettid: case SYS_getuid:
        case SYS_geteuid: case SYS_getgid: case SYS_getegid: case SYS_getpgrp:
        case SYS_uname: case SYS_clock_gettime: case SYS_gettimeofday:
        case SYS_time: case SYS_sched_yield: case SYS_getrusage: case SYS_umask:
        // (not dup2/dup3: replacing a descriptor closes its file, which
        // can wait, e.g. a lingering socket)
        case SYS_dup: case SYS_lseek: case SYS_getrandom:
            return true;
        default:
            return false;
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

}  // namespace asys::internal
