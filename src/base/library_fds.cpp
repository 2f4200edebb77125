#include "base/library_fds.hpp"

#include <sys/syscall.h>

#include <atomic>
#include <cerrno>

#include "base/raw_syscall.hpp"

namespace asys::internal::library_fds {
namespace {

std::atomic<uint64_t> g_bits[kMax / 64];

}  // namespace

void add(int fd) noexcept {
    if (fd >= 0 && fd < kMax)
        g_bits[fd / 64].fetch_or(uint64_t{1} << (fd % 64), std::memory_order_relaxed);
}

void remove(int fd) noexcept {
    if (fd >= 0 && fd < kMax)
        g_bits[fd / 64].fetch_and(~(uint64_t{1} << (fd % 64)), std::memory_order_relaxed);
}

// relaxed: an fd is marked before the library hands it out or uses it, on
// the thread that created it; a caller racing with that creation could not
// have known the number either.
bool owns(int fd) noexcept {
    return fd >= 0 && fd < kMax &&
           (g_bits[fd / 64].load(std::memory_order_relaxed) >> (fd % 64)) & 1;
}

bool run_sparing(long nr, const uint64_t (&a)[6], long *res) noexcept {
    switch (nr) {
        case SYS_close:
            *res = owns(static_cast<int>(a[0])) ? -EBADF : raw_syscall(nr, a);
            return true;
        case SYS_dup2:
        case SYS_dup3:
            *res = owns(static_cast<int>(a[1])) ? -EBADF : raw_syscall(nr, a);
            return true;
        case SYS_close_range: {
            const uint64_t first = static_cast<unsigned>(a[0]);
            const uint64_t last = static_cast<unsigned>(a[1]);
            const auto flags = static_cast<unsigned>(a[2]);
            // Invalid arguments get the call's own error before anything
            // closes; CLOEXEC only marks descriptors (the library's are
            // close-on-exec already).
            if (first > last || flags != 0) {
                *res = raw_syscall(nr, a);
                return true;
            }
            long r = 0;
            uint64_t lo = first;  // the next descriptor not yet handled
            const uint64_t top = last < static_cast<uint64_t>(kMax) ? last : kMax - 1;
            for (uint64_t fd = first; fd <= top && r == 0; ++fd) {
                if (!owns(static_cast<int>(fd))) continue;
                if (fd > lo) r = raw_syscall6(nr, lo, fd - 1, 0, 0, 0, 0);
                lo = fd + 1;
            }
            if (r == 0 && lo <= last) r = raw_syscall6(nr, lo, last, 0, 0, 0, 0);
            *res = r;
            return true;
        }
        default:
            return false;
    }
}

}  // namespace asys::internal::library_fds
