// The exported C ABI: argument checks, handle decoding, then the core.
#include <cerrno>

#include "asys/asys.h"
#include "base/errno_keeper.hpp"
#include "core/context.hpp"
#include "base/denylist.hpp"
#include "base/opcodes.hpp"
#include "router/router.hpp"

using asys::internal::context;

// Every entry point keeps errno (an errno_keeper): the core calls libc
// (pthread_create, sysconf, allocation), which may set it.
#define ASYS_CTX_OR_RETURN(h)                          \
    const asys::internal::errno_keeper keep_;          \
    int err_ = 0;                                      \
    context *c = context::from_handle((h), &err_);     \
    if (!c) return err_

extern "C" {

int asys_ctx_create(const struct asys_params *params, asys_ctx **out) {
    const asys::internal::errno_keeper keep;
    return context::create(params, out);
}

int asys_ctx_destroy(asys_ctx *ctx, unsigned how) {
    const asys::internal::errno_keeper keep;
    int err = 0;
    context *c = context::from_handle(ctx, &err, /*allow_forked=*/true);
    if (!c) return err;
    return c->destroy(how);
}

int asys_ctx_fd(asys_ctx *ctx) {
    ASYS_CTX_OR_RETURN(ctx);
    return c->fd();
}

int asys_ctx_stats(asys_ctx *ctx, struct asys_stats *out) {
    ASYS_CTX_OR_RETURN(ctx);
    return c->stats(out);
}

int asys_submit(asys_ctx *ctx, const struct asys_op *op) {
    // errno: submit() keeps it on every path that could touch it (its
    // short way makes raw system calls only).
    int err = 0;
    context *c = context::from_handle(ctx, &err);
    if (!c) return err;
    return asys::internal::submit(*c, op);
}

int asys_submit_batch(asys_ctx *ctx, const struct asys_op *ops, unsigned n, int *status) {
    ASYS_CTX_OR_RETURN(ctx);
    if (n == 0) return 0;
    if (!ops) return -EFAULT;
    return asys::internal::route_batch(*c, ops, n, status);
}

int asys_wait(asys_ctx *ctx, unsigned min_events, const struct timespec *timeout,
              struct asys_cqe *out, unsigned max) {
    ASYS_CTX_OR_RETURN(ctx);
    return c->wait(min_events, timeout, out, max);
}

int asys_peek(asys_ctx *ctx, struct asys_cqe *out, unsigned max) {
    ASYS_CTX_OR_RETURN(ctx);
    return c->peek(out, max);
}

int asys_cancel(asys_ctx *ctx, uint64_t user_data) {
    ASYS_CTX_OR_RETURN(ctx);
    return c->cancel(user_data);
}

int asys_ctx_info(asys_ctx *ctx, struct asys_info *out) {
    ASYS_CTX_OR_RETURN(ctx);
    return c->info(out);
}

int asys_ctx_metrics(asys_ctx *ctx, struct asys_metrics *out) {
    ASYS_CTX_OR_RETURN(ctx);
    return c->metrics(out);
}

long asys_metrics_format(const struct asys_metrics *m, unsigned format, char *buf, size_t len) {
    const asys::internal::errno_keeper keep;
    if (!m || (!buf && len)) return -EFAULT;
    return asys::internal::format_metrics(*m, format, buf, len);
}

const char *asys_class_name(unsigned cls) {
    return cls < ASYS_CLASS__COUNT ? asys::internal::kSchedClasses[cls].name : nullptr;
}

int asys_syscall_allowed(long nr) { return asys::internal::syscall_allowed(nr); }

const char *asys_opcode_name(unsigned opcode) {
    return opcode < ASYS_OP__COUNT ? asys::internal::kOpcodes[opcode].name : nullptr;
}

}  // extern "C"
