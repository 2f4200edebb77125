// The exported threadlet calls: asys_call, asys_run, Linus' async() as
// asys_async on the default context, and asys_default_ctx.
#include <cerrno>
#include <cstdarg>
#include <cstdint>

#include "asys/asys.h"
#include "asys/syslet.h"
#include "base/errno_keeper.hpp"
#include "base/raw_syscall.hpp"
#include "core/context.hpp"
#include "router/router.hpp"
#include "threadlet/dispatch.hpp"
#include "threadlet/threadlet.hpp"

using asys::internal::context;

namespace {

// The six arguments of a syscall-style variadic call, read as syscall(2)
// reads them: always six, whatever the caller passed (the kernel ignores
// the ones a call does not take). Reading past the caller's arguments is
// what ASan would report, hence the attribute.
__attribute__((no_sanitize("address"))) void read_args(va_list ap, uint64_t (&a)[6]) noexcept {
    for (auto &v : a) v = static_cast<uint64_t>(va_arg(ap, long));
}

#define ASYS_VA_ARGS6(last, a) \
    uint64_t a[6];             \
    {                          \
        va_list ap;            \
        va_start(ap, last);    \
        read_args(ap, a);      \
        va_end(ap);            \
    }

}  // namespace

extern "C" {

long asys_call(long nr, ...) {
    ASYS_VA_ARGS6(nr, a);
    if (asys::internal::threadlet *t = asys::internal::current_threadlet()) {
        const asys::internal::errno_keeper keep;
        if (!(t->tflags & ASYS_THREADLET_TRANSPARENT)) return asys::internal::threadlet_call(t, nr, a);
        // Transparent: the library's own work for the call (liburing's
        // io_uring_enter, a contended lock) is not trapped.
        const bool blocking = asys::internal::dispatch_blocking();
        asys::internal::dispatch_block(false);
        const long r = asys::internal::threadlet_call(t, nr, a);
        asys::internal::dispatch_block(blocking);
        return r;
    }
    return asys::internal::raw_syscall(nr, a);
}

int asys_threadlet_flags(void) {
    const asys::internal::threadlet *t = asys::internal::current_threadlet();
    return t ? static_cast<int>(t->tflags) : -ESRCH;
}

int asys_run(asys_ctx *ctx) {
    const asys::internal::errno_keeper keep;
    int err = 0;
    context *c = context::from_handle(ctx, &err);
    if (!c) return err;
    return static_cast<int>(c->run_driver_work());
}

asys_ctx *asys_default_ctx(void) { return asys_syslet_default_ctx(); }

int asys_async(long *status, long nr, ...) {
    ASYS_VA_ARGS6(nr, a);
    const asys::internal::errno_keeper keep;
    asys_ctx *h = asys_syslet_default_ctx();
    int err = 0;
    context *c = context::from_handle(h, &err);
    if (!c) return h ? err : -ENOMEM;
    asys_op op;
    asys::internal::op_for_call(op, nr, a);
    op.ret_ptr = status;
    op.user_data = reinterpret_cast<uint64_t>(status);
    if (int rc = asys::internal::validate_op(&op)) return rc;
    return asys::internal::route(*c, op);
}

}  // extern "C"
