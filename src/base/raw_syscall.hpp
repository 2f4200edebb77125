// Raw system call entry that returns -errno and never touches errno.
#pragma once
#include <cerrno>
#include <fcntl.h>
#include <cstdint>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstddef>

namespace asys::internal {

#if defined(__x86_64__)
inline long raw_syscall6(long nr, uint64_t a0, uint64_t a1, uint64_t a2, uint64_t a3, uint64_t a4,
                         uint64_t a5) noexcept {
    long ret;
    register uint64_t r10 asm("r10") = a3;
    register uint64_t r8 asm("r8") = a4;
    register uint64_t r9 asm("r9") = a5;
    asm volatile("syscall"
                 : "=a"(ret)
                 : "a"(nr), "D"(a0), "S"(a1), "d"(a2), "r"(r10), "r"(r8), "r"(r9)
                 : "rcx", "r11", "memory");
    return ret;
}
#else
inline long raw_syscall6(long nr, uint64_t a0, uint64_t a1, uint64_t a2, uint64_t a3, uint64_t a4,
                         uint64_t a5) noexcept {
    int saved = errno;
    long r = ::syscall(nr, a0, a1, a2, a3, a4, a5);
    if (r == -1) r = -errno;
    errno = saved;
    return r;
}
#endif

inline long raw_syscall(long nr, const uint64_t (&a)[6]) noexcept {
    return raw_syscall6(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
}

/// Copies `len` bytes of this process's memory at `src` (a caller's
/// pointer that may be bad) to `dst`, through the kernel: a bad pointer
/// gives -EFAULT instead of a crash. 0 or -errno (-ENOSYS / -EPERM where a
/// seccomp filter refuses process_vm_readv: callers then take a path that
/// The descriptor's status flags now (fcntl(F_GETFL): O_NONBLOCK, O_DIRECT,
/// O_APPEND, ...), or -errno (a closed fd: -EBADF). One system call.
inline long fd_status_flags(uint64_t fd) noexcept {
    return raw_syscall6(SYS_fcntl, static_cast<uint64_t>(static_cast<int>(fd)), F_GETFL, 0, 0, 0, 0);
}

/// does not read the memory themselves).
inline long copy_from_caller(void *dst, const void *src, size_t len) noexcept {
    struct {
        const void *base;
        size_t len;
    } local{dst, len}, remote{src, len};
    static_assert(sizeof local == 16, "struct iovec layout");
    const long pid = raw_syscall6(SYS_getpid, 0, 0, 0, 0, 0, 0);
    const long r = raw_syscall6(SYS_process_vm_readv, static_cast<uint64_t>(pid),
                                reinterpret_cast<uint64_t>(&local), 1,
                                reinterpret_cast<uint64_t>(&remote), 1, 0);
    if (r < 0) return r;
    return static_cast<size_t>(r) == len ? 0 : -EFAULT;
}

/// Copies `len` bytes from `src` to this process's memory at `dst` (a
/// caller's pointer that may be bad) through the kernel
/// (process_vm_writev): 0, or -EFAULT instead of a crash (or -ENOSYS /
/// -EPERM where a seccomp filter refuses the call).
inline long copy_to_caller(void *dst, const void *src, size_t len) noexcept {
    struct {
        const void *base;
        size_t len;
    } local{src, len}, remote{dst, len};
    const long pid = raw_syscall6(SYS_getpid, 0, 0, 0, 0, 0, 0);
    const long r = raw_syscall6(SYS_process_vm_writev, static_cast<uint64_t>(pid),
                                reinterpret_cast<uint64_t>(&local), 1,
                                reinterpret_cast<uint64_t>(&remote), 1, 0);
    if (r < 0) return r;
    return static_cast<size_t>(r) == len ? 0 : -EFAULT;
}

}  // namespace asys::internal
