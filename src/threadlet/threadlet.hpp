// ASYS_OP_THREADLET: ordinary code run as an op. asys_submit runs the
// function at once on the caller's thread, on a pooled stack (fiber.hpp);
// a call inside it that would block (asys_call, or a trapped system call
// in transparent mode) becomes an ordinary punted op of the same context,
// and the threadlet is parked until that op completes. It then resumes on
// its own thread only, when that thread drives the context (the context's
// driver_work hook: asys_wait, asys_peek, asys_run, destroy). The router
// hands the op here (wired in src/capi/wiring.cpp). docs/threadlets.md.
#pragma once
#include <cstdint>

#include "asys/asys.h"
#include "core/context.hpp"

namespace asys::internal {

struct threadlet;

/// ASYS_OP_THREADLET's argument checks and route (see feature_ops).
int validate_threadlet_op(const asys_op &op) noexcept;
int route_threadlet(context &c, const asys_op &op, uint32_t flags, bool reserved) noexcept;

/// The threadlet running on the calling thread, or null.
threadlet *current_threadlet() noexcept;

/// True for calls that act on the calling thread itself (its id, signal
/// mask and stack, prctl, robust list, scheduling of thread 0) and every
/// call generic submission refuses: a threadlet makes them on its owner
/// thread, never on a worker.
bool runs_on_owner(long nr, const uint64_t (&args)[6]) noexcept;

/// The asys op for system call `nr` with these arguments (its own opcode
/// when the table has one that takes them as they are, so the call gets
/// that opcode's inline probe; else ASYS_OP_SYSCALL). Fills op (zeroed
/// first): opcode, nr, args.
void op_for_call(asys_op &op, long nr, const uint64_t (&args)[6]) noexcept;

/// A system call made inside threadlet `t`: inline when it would not block,
/// else punted while `t` is parked. The result or -errno.
long threadlet_call(threadlet *t, long nr, const uint64_t (&args)[6]) noexcept;

/// The threadlet's tflags (ASYS_THREADLET_*).
unsigned threadlet_tflags(const threadlet *t) noexcept;

/// Called around every switch into (entering = true) and out of a
/// threadlet on the calling thread (transparent mode turns the system
/// call trap on and off there). Set once by dispatch.cpp.
extern void (*g_threadlet_switch_hook)(threadlet *t, bool entering) noexcept;

}  // namespace asys::internal
