// The router: per op, run inline (SYNC, a never-blocking class, or a probe
// that succeeded) or punt to a backend. Callers never see which.
#pragma once
#include "asys/asys.h"
#include "core/context.hpp"

namespace asys::internal {

/// Validates the descriptor (no side effects on failure).
int validate_op(const asys_op *op) noexcept;

/// Routes one validated op. ASYS_DONE, 0 (accepted), or -errno (not accepted,
/// nothing happened — except NOWAIT/ATOMIC partial reads, which complete
/// inline with the short count rather than lose the bytes).
int route(context &c, const asys_op &op) noexcept;

}  // namespace asys::internal
