// ASYS_OP_CHAIN support beyond the interpreter: turning the asynchronous
// remainder of a chain into linked io_uring SQEs when it is a plain
// sequence (see docs/syslets.md, "io_uring links").
#pragma once
#include <cstdint>

#include "asys/syslet.h"

namespace asys::internal {

class context;
struct linked_ops;

/// The remainder of a chain from `cur` as a linked ring sequence, or
/// nullptr if it is not one: every atom a read, pread, write, pwrite, fsync
/// or fdatasync the context's ring runs; flags at most STOP_ON_NEGATIVE
/// (→ IOSQE_IO_LINK; none → IOSQE_IO_HARDLINK) and ASYNC; no argument fed
/// by an earlier atom's result; no loop; at most linked_ops::kMax atoms;
/// within the step limit. Arguments are read now.
linked_ops *link_chain(const context &c, syslet_uatom *cur, uint64_t steps, uint64_t step_limit) noexcept;

}  // namespace asys::internal
