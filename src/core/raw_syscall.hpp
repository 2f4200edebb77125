// Raw system call entry that returns -errno and never touches errno.
#pragma once
#include <cerrno>
#include <cstdint>
#include <unistd.h>

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

}  // namespace asys::internal
