// ASYS_OP_CHAIN support beyond the interpreter: turning the asynchronous
// remainder of a chain into linked io_uring SQEs when it is a plain
// sequence (see docs/syslets.md, "io_uring links").
#pragma once
#include <cstdint>

#include "asys/syslet.h"
#include "syslet/interpreter.hpp"

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

/// Hands the rest of a chain (from run.cur, which would block) to a backend
/// as an ASYS_OP_CHAIN slot made from `op` (its user_data, ret_ptr, callback
/// and last_out), whose room the caller reserved: linked SQEs when the rest
/// qualifies (link_chain), else the pool. 0, or the punt's error (the slot
/// is then abandoned and its room released).
int punt_chain_rest(context &c, const asys_op &op, const chain_run &run, bool atomic) noexcept;

}  // namespace asys::internal
