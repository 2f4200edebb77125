// The router: per op, run inline (SYNC, a never-blocking class, or a probe
// that succeeded) or punt to a backend. Callers never see which.
#pragma once
#include "asys/asys.h"
#include "core/context.hpp"

namespace asys::internal {

/// Validates the descriptor (no side effects on failure).
int validate_op(const asys_op *op) noexcept;

/// An inline result: written through ret_ptr, counted, and posted as a
/// cqe / callback when room for one was reserved. Returns ASYS_DONE.
int finish_inline(context &c, const asys_op &op, long res, bool reserved) noexcept;

/// An opcode implemented by a feature above the core (op_class::feature).
struct feature_ops {
    /// Checks the descriptor's arguments (no side effects): 0 or -errno.
    int (*validate)(const asys_op &op) noexcept;
    /// Routes a validated op: `flags` are its effective flags (context
    /// defaults applied); `reserved`: room for a cqe is already reserved
    /// (the route releases it if it returns an error). Same results as
    /// route().
    int (*route)(context &c, const asys_op &op, uint32_t flags, bool reserved) noexcept;
};
/// The feature that implements `opcode` (the list lives at the top of the
/// library, src/capi/wiring.cpp), or null.
const feature_ops *feature_for(uint32_t opcode) noexcept;

/// Routes one validated op. ASYS_DONE, 0 (accepted), or -errno (not accepted,
/// nothing happened — except NOWAIT/ATOMIC partial reads, which complete
/// inline with the short count rather than lose the bytes).
int route(context &c, const asys_op &op) noexcept;

/// asys_submit: validate_op, then route(); a READ or PREAD with a ret_ptr
/// and no flag but ASYS_F_BUFFERED takes a shorter way to the same result.
/// Leaves errno as it was.
int submit(context &c, const asys_op *op) noexcept;

/// asys_submit_batch: validates and routes ops in order until one is not
/// accepted. With a preferred backend (the ring), ops it takes skip the
/// inline attempt and enter the kernel together; those the kernel completes
/// during that enter are reported ASYS_DONE, as if inline (see
/// batch_window). Returns the number accepted, or the first op's error.
int route_batch(context &c, const asys_op *ops, unsigned n, int *status) noexcept;

}  // namespace asys::internal
