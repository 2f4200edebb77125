// The library's private copy of one accepted op. Preallocated per context in
// a fixed slab, so memory per outstanding op is small and constant.
#pragma once
#include <atomic>
#include <cstdint>

#include "asys/asys.h"

namespace asys::internal {

struct op_slot {
    // --- copied from the caller's asys_op at submit
    uint32_t opcode;
    uint32_t flags;
    long *ret_ptr;
    uint64_t user_data;
    asys_callback_t callback;
    void *cb_arg;
    long nr;
    uint64_t args[6];
    // --- bookkeeping, guarded by the pool lock unless noted
    op_slot *prev;
    op_slot *next;
    long done;  ///< bytes already transferred inline (short reads)
    /// Set by asys_cancel/destroy under the pool lock while the op runs; read
    /// by the worker after the syscall. Relaxed is enough: both sides also
    /// synchronise through the pool lock, and the flag only selects the
    /// errno of an interrupted call.
    std::atomic<uint8_t> cancel;
    uint8_t queued;   ///< on the pool's queue (guarded by the pool lock)
    uint8_t direct;   ///< punted without an inline attempt (for counters)
    uint8_t seekable; ///< a probe saw the fd take a positional read (EAGAIN, not ESPIPE)
};

// Library memory per outstanding op: one slot + 4 bytes of free list + one
// 24-byte completion entry. DESIGN.md's budget is 256 bytes.
static_assert(sizeof(op_slot) <= 128, "op_slot grew past its budget");

}  // namespace asys::internal
