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
#include "threadlet/fiber.hpp"

namespace asys::internal {

struct threadlet_owner;

/// One threadlet: its record sits at the top of its own stack.
struct threadlet {
    fiber f;
    fiber_caller caller;  ///< who resumed it last
    context *ctx;
    threadlet_owner *own = nullptr;  ///< set when it first parks
    asys_op op;                      ///< as submitted (ret_ptr, user_data, callback)
    uint32_t flags;                  ///< effective flags (context defaults applied)
    unsigned tflags;                 ///< ASYS_THREADLET_*
    /// The op's slot, made when it first parks: it holds the op's room and
    /// counts it in flight until the threadlet ends.
    op_slot *slot = nullptr;
    bool reserved;         ///< room for the op's cqe was reserved at submit
    bool running = false;  ///< switched in right now (owner thread only)
    bool finished = false;
    unsigned char selector = 0;  ///< transparent mode: its dispatch selector while switched out
    void *trap_uc = nullptr;     ///< transparent mode: the signal frame of the trapped call it handles
    long call_res = 0;           ///< the parked call's result (its ret_ptr)
    long result = 0;             ///< fn's return value
    threadlet *next_ready = nullptr;
    fiber_stack stack;
};

/// What transparent mode does around switches (dispatch.cpp installs it
/// when the first transparent threadlet is submitted; null before, so
/// threadlets that never use it pay one load).
struct switch_hooks {
    /// The calling thread's dispatch state, to give back after a switch.
    uint64_t (*save)() noexcept;
    void (*restore)(uint64_t saved) noexcept;
    /// Switching into `t` (its own selector; dispatch on if transparent).
    void (*enter)(threadlet *t) noexcept;
    /// `t` is about to run its function (transparent: calls trap from now).
    void (*begin)(threadlet *t) noexcept;
    /// `t` switches out (parks or ends): it keeps its selector.
    void (*leave)(threadlet *t) noexcept;
};
extern std::atomic<const switch_hooks *> g_switch_hooks;

/// Turns transparent mode on for the process (once): 0 or -errno
/// (-EOPNOTSUPP: no syscall user dispatch). dispatch.cpp.
int transparent_init() noexcept;

/// ASYS_OP_THREADLET's argument checks and route (see feature_ops).
int validate_threadlet_op(const asys_op &op) noexcept;
int route_threadlet(context &c, const asys_op &op, uint32_t flags, bool reserved) noexcept;

/// The threadlet running on the calling thread, or null.
threadlet *current_threadlet() noexcept;

/// True for calls whose effect or answer depends on the calling thread
/// (base/denylist.hpp's thread_effect_of: its id, scheduling, priorities,
/// memory policy of thread 0, ...) and every call generic submission
/// refuses (signal mask and stack, prctl, robust list, ...): a threadlet
/// makes them on its owner thread, never on a worker.
bool runs_on_owner(long nr, const uint64_t (&args)[6]) noexcept;

/// The asys op for system call `nr` with these arguments (its own opcode
/// when the table has one that takes them as they are, so the call gets
/// that opcode's inline probe; else ASYS_OP_SYSCALL). Fills op (zeroed
/// first): opcode, nr, args.
void op_for_call(asys_op &op, long nr, const uint64_t (&args)[6]) noexcept;

/// A system call made inside threadlet `t`: inline when it would not block,
/// else punted while `t` is parked. The result or -errno.
long threadlet_call(threadlet *t, long nr, const uint64_t (&args)[6]) noexcept;


}  // namespace asys::internal
