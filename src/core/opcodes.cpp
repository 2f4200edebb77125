#include "core/opcodes.hpp"

#include <poll.h>
#include <sys/syscall.h>

#include "core/library_fds.hpp"
#include "core/raw_syscall.hpp"

namespace asys::internal {

const opcode_info kOpcodes[ASYS_OP__COUNT] = {
    /* NOP       */ {"nop", -1, 1, op_class::never_blocks},
    /* READ      */ {"read", SYS_read, 3, op_class::read},
    /* PREAD     */ {"pread", SYS_pread64, 4, op_class::read},
    /* READV     */ {"readv", SYS_readv, 3, op_class::read},
    /* PREADV    */ {"preadv", SYS_preadv2, 5, op_class::read},
    /* WRITE     */ {"write", SYS_write, 3, op_class::backend},
    /* PWRITE    */ {"pwrite", SYS_pwrite64, 4, op_class::backend},
    /* WRITEV    */ {"writev", SYS_writev, 3, op_class::backend},
    /* PWRITEV   */ {"pwritev", SYS_pwritev2, 5, op_class::backend},
    /* OPENAT    */ {"openat", SYS_openat, 4, op_class::open},
    /* CLOSE     */ {"close", SYS_close, 1, op_class::close},
    /* FSYNC     */ {"fsync", SYS_fsync, 1, op_class::backend},
    /* FDATASYNC */ {"fdatasync", SYS_fdatasync, 1, op_class::backend},
    /* STATX     */ {"statx", SYS_statx, 5, op_class::backend},
    /* UNLINKAT  */ {"unlinkat", SYS_unlinkat, 3, op_class::backend},
    /* RENAMEAT  */ {"renameat", SYS_renameat2, 5, op_class::backend},
    /* MKDIRAT   */ {"mkdirat", SYS_mkdirat, 3, op_class::backend},
    /* FALLOCATE */ {"fallocate", SYS_fallocate, 4, op_class::backend},
    /* FTRUNCATE */ {"ftruncate", SYS_ftruncate, 2, op_class::backend},
    /* ACCEPT    */ {"accept", SYS_accept4, 4, op_class::backend},
    /* CONNECT   */ {"connect", SYS_connect, 3, op_class::backend},
    /* RECV      */ {"recv", SYS_recvfrom, 4, op_class::recv},
    /* SEND      */ {"send", SYS_sendto, 4, op_class::send},
    /* POLL      */ {"poll", -1, 3, op_class::poll},
    /* SYSCALL   */ {"syscall", -1, 6, op_class::syscall},
    /* CHAIN     */ {"chain", -1, 2, op_class::chain},
};

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
