// libasys_interpose.so: the cheaper route into transparent mode for the
// most common libc wrappers. Preloaded (LD_PRELOAD) or linked ahead of libc,
// it defines read, write, pread, pwrite, recv, send and nanosleep: inside a
// transparent threadlet they make the call through asys_call (an inline
// attempt, no trap); anywhere else they are libc's own. The trap stays the
// catch-all for every other call. It uses the public API only.
#include <dlfcn.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>

#include "asys/asys.h"

namespace {

// Inside a transparent threadlet.
inline bool transparent_here() noexcept {
    const int f = asys_threadlet_flags();
    return f >= 0 && (f & ASYS_THREADLET_TRANSPARENT);
}

// asys_call's -errno as libc reports it.
inline long as_libc(long r) noexcept {
    if (r < 0) {
        errno = static_cast<int>(-r);
        return -1;
    }
    return r;
}

// The next definition of `name` (libc's), looked up once.
template <typename Fn>
Fn next(Fn &cache, const char *name) noexcept {
    if (!cache) cache = reinterpret_cast<Fn>(dlsym(RTLD_NEXT, name));
    return cache;
}

}  // namespace

// ret name(params): through asys_call `call` in a transparent threadlet,
// else libc's name `args`.
#define ASYS_INTERPOSE(ret, name, params, args, call)                                   \
    extern "C" __attribute__((visibility("default"))) ret name params {                 \
        if (transparent_here()) return static_cast<ret>(as_libc(asys_call call));        \
        static ret(*real) params = nullptr;                                               \
        return next(real, #name) args;                                                    \
    }

ASYS_INTERPOSE(ssize_t, read, (int fd, void *buf, size_t n), (fd, buf, n), (SYS_read, long{fd}, buf, n))
ASYS_INTERPOSE(ssize_t, write, (int fd, const void *buf, size_t n), (fd, buf, n), (SYS_write, long{fd}, buf, n))
ASYS_INTERPOSE(ssize_t, pread, (int fd, void *buf, size_t n, off_t off), (fd, buf, n, off),
               (SYS_pread64, long{fd}, buf, n, off))
ASYS_INTERPOSE(ssize_t, pread64, (int fd, void *buf, size_t n, off_t off), (fd, buf, n, off),
               (SYS_pread64, long{fd}, buf, n, off))
ASYS_INTERPOSE(ssize_t, pwrite, (int fd, const void *buf, size_t n, off_t off), (fd, buf, n, off),
               (SYS_pwrite64, long{fd}, buf, n, off))
ASYS_INTERPOSE(ssize_t, pwrite64, (int fd, const void *buf, size_t n, off_t off), (fd, buf, n, off),
               (SYS_pwrite64, long{fd}, buf, n, off))
ASYS_INTERPOSE(ssize_t, recv, (int fd, void *buf, size_t n, int flags), (fd, buf, n, flags),
               (SYS_recvfrom, long{fd}, buf, n, long{flags}, 0L, 0L))
ASYS_INTERPOSE(ssize_t, send, (int fd, const void *buf, size_t n, int flags), (fd, buf, n, flags),
               (SYS_sendto, long{fd}, buf, n, long{flags}, 0L, 0L))
ASYS_INTERPOSE(int, nanosleep, (const struct timespec *req, struct timespec *rem), (req, rem),
               (SYS_nanosleep, req, rem))
