// ASYS_OP_CHAIN: a syslet chain submitted as one asys op. The router hands
// it to route_chain (wired in src/capi/wiring.cpp); the interpreter runs
// atoms inline until one would block, and the rest continues as a slot of
// this feature: on the general backend (a worker runs the interpreter), or
// as linked io_uring SQEs when the rest is a plain sequence (see
// docs/syslets.md, "io_uring links"). The slot's typed state and hooks are
// this layer's; the core only calls them.
#pragma once
#include <cstdint>

#include "asys/syslet.h"
#include "base/linked_ops.hpp"
#include "core/context.hpp"
#include "syslet/interpreter.hpp"

namespace asys::internal {

/// The chain's state in its op slot (op_slot::feature_state).
struct chain_state {
    syslet_uatom *next;        ///< the next atom to run (null: the chain ran)
    syslet_uatom **last_out;   ///< the caller's *last_out (may be null)
    uint64_t steps;            ///< atoms run so far
    uint64_t step_limit;       ///< 0: none
    linked_ops *linked;        ///< the rest as linked SQEs, or null
    atom_retry *retry;         ///< chain_run::retry of `next` (owned), or null
};

/// ASYS_OP_CHAIN's argument checks and route (see feature_ops).
int validate_chain_op(const asys_op &op) noexcept;
int route_chain(context &c, const asys_op &op, uint32_t flags, bool reserved) noexcept;

/// The remainder of a chain from `cur` as a linked ring sequence, or
/// nullptr if it is not one: every atom a read, pread, write, pwrite, fsync
/// or fdatasync the context can link with its arguments; flags at most
/// STOP_ON_NEGATIVE and ASYNC (every link soft: IOSQE_IO_LINK);
/// no argument (or atom) that an earlier atom writes; no loop; at most
/// linked_ops::kMax atoms; within the step limit. Arguments are read now.
linked_ops *link_chain(const context &c, syslet_uatom *cur, uint64_t steps, uint64_t step_limit) noexcept;

/// Hands the rest of a chain (from run.cur, which would block) to a backend
/// as an ASYS_OP_CHAIN slot made from `op` (its user_data, ret_ptr, callback
/// and last_out), whose room the caller reserved: linked SQEs when the rest
/// qualifies (link_chain), else the general backend. 0, or the punt's error
/// (the slot is then abandoned and its room released unless `keep_room`:
/// the caller then finishes the op inline). run.retry moves
/// into the slot (and back on failure).
int punt_chain_rest(context &c, const asys_op &op, chain_run &run, bool atomic, bool keep_room = false) noexcept;

}  // namespace asys::internal
