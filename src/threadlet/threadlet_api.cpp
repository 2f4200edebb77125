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

namespace {

long call_with(long nr, const uint64_t (&a)[6]) noexcept {
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

}  // namespace

#if defined(__x86_64__)
// asys_call is variadic in the header, like syscall(2). On x86-64 a variadic
// call passes nr and the first five arguments in the same registers as a
// call of a function with seven long parameters, and the sixth at the same
// stack slot, so asys_call is that function under its public name: no
// va_list walk (a sixth of the call's user-space instructions). Like
// syscall(2), it reads all six whatever the caller passed; the kernel
// ignores the ones a call does not take.
extern "C" __attribute__((visibility("hidden"))) long asys_call_regs(long nr, long a0, long a1, long a2, long a3,
                                                                      long a4, long a5) {
    const uint64_t a[6] = {static_cast<uint64_t>(a0), static_cast<uint64_t>(a1), static_cast<uint64_t>(a2),
                           static_cast<uint64_t>(a3), static_cast<uint64_t>(a4), static_cast<uint64_t>(a5)};
    return call_with(nr, a);
}
asm(".text\n"
    ".globl asys_call\n"
    ".type asys_call, @function\n"
    "asys_call:\n"
    "  .cfi_startproc\n"
    "  endbr64\n"
    "  jmp asys_call_regs\n"
    "  .cfi_endproc\n"
    ".size asys_call, .-asys_call\n");
#endif

extern "C" {

#if !defined(__x86_64__)
long asys_call(long nr, ...) {
    ASYS_VA_ARGS6(nr, a);
    return call_with(nr, a);
}
#endif

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
