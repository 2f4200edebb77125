// The library's private copy of one accepted op. Preallocated per context in
// a fixed slab, so memory per outstanding op is small and constant.
//
// The op's payload is a union with one named view per kind of op: the
// system call's number and arguments (every opcode a backend runs), the
// same with the timed poll's ring timeout overlaid on its unused arguments,
// or the opaque state of a feature that implements an opcode above the core
// (a syslet chain's next atom, steps and linked sequence; see
// feature_state()). A feature also sets `hooks`: how a worker runs the slot
// and what happens when it completes. The core and the backends never read
// a feature's state.
#pragma once
#include <linux/time_types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "asys/asys.h"

namespace asys::internal {

struct op_slot;

/// How a feature's slot runs and completes (all optional).
struct slot_hooks {
    /// Runs the slot on a worker of a backend that runs any system call,
    /// blocking if it must; returns the op's result (never -EINTR).
    long (*run)(op_slot &slot) noexcept;
    /// Called once the slot's run ended (res: its result; or -ECANCELED if
    /// it was cancelled before it ran). May rewrite *res. Returns false if
    /// the op must go on: the context then hands it to a backend that runs
    /// any system call (which calls `run`).
    bool (*completed)(op_slot &slot, long *res) noexcept;
};

struct syscall_view {
    long nr;           ///< ASYS_OP_SYSCALL only
    uint64_t args[6];  ///< the call's arguments, as submitted
};

/// ASYS_OP_POLL: the arguments, and the io_uring backend's linked timeout
/// in the arguments the poll does not use (the kernel reads it when the
/// SQE is submitted).
struct poll_view {
    long nr;
    uint64_t fd, events;
    int64_t timeout_ms;
    struct __kernel_timespec ring_timeout;
};

struct op_slot {
    // --- copied from the caller's asys_op at submit
    uint32_t opcode;
    uint32_t flags;
    long *ret_ptr;
    uint64_t user_data;
    asys_callback_t callback;
    void *cb_arg;
    union {
        syscall_view sys;
        poll_view poll;
        alignas(8) unsigned char feature[sizeof(syscall_view)];
    };
    // --- bookkeeping, guarded by the owning backend's lock unless noted
    op_slot *prev;
    op_slot *next;
    const slot_hooks *hooks;  ///< set by the feature that made the slot, else null
    uint32_t done;            ///< bytes already transferred inline (short reads; <= MAX_RW_COUNT)
    /// Set by asys_cancel/destroy under the backend's lock while the op
    /// runs; read by the worker after the syscall. Relaxed is enough: both
    /// sides also synchronise through that lock, and the flag only selects
    /// the errno of an interrupted call.
    std::atomic<uint8_t> cancel;
    uint8_t queued : 1;    ///< on the pool's queue (guarded by the pool lock)
    uint8_t direct : 1;    ///< punted without an inline attempt (for counters)
    uint8_t seekable : 1;  ///< a probe saw the fd take a positional read (EAGAIN, not ESPIPE)
    uint8_t bulk : 1;      ///< ASYS_F_BULK: after the latency ops of its class
    uint8_t expired : 1;   ///< completed -ETIME by its deadline (set by the backend)
    uint8_t sched : 3;     ///< scheduling class, ASYS_CLASS_* (the pool's queue)
    /// 1 + its entry in the submitting thread's batch window (0: none); see
    /// context::batch_window. Written before the slot is punted.
    uint8_t batch_entry;
    /// Bumped each time the slot is handed out (new_slot): with
    /// batch_entry, tells a batch window's own op from a later op that
    /// reuses the slot after the first completed elsewhere.
    uint8_t reuse;
    /// ASYS_F_DEADLINE: the absolute CLOCK_MONOTONIC deadline, as the
    /// kernel's timespec (the ring's linked timeout reads it at submission,
    /// which a batch may delay).
    struct __kernel_timespec deadline;
    int64_t submit_ns;  ///< CLOCK_MONOTONIC at submit (latency metrics)

    /// A feature's own typed state in the payload.
    template <typename T>
    T &feature_state() noexcept {
        static_assert(sizeof(T) <= sizeof feature && alignof(T) <= 8 && std::is_trivially_copyable_v<T>,
                      "a feature's slot state must fit the payload");
        return *reinterpret_cast<T *>(feature);
    }
};

static_assert(offsetof(poll_view, fd) == offsetof(syscall_view, args[0]) &&
                  offsetof(poll_view, events) == offsetof(syscall_view, args[1]) &&
                  offsetof(poll_view, timeout_ms) == offsetof(syscall_view, args[2]),
              "the poll view names the poll's arguments");

// Library memory per outstanding op: one slot + 4 bytes of free list + one
// 24-byte completion entry; the budget is 256 bytes (docs/design.md). The
// slot is 152 bytes since it carries a deadline and its submit time.
static_assert(sizeof(op_slot) <= 152, "op_slot grew past its budget");
static_assert(sizeof(op_slot) + 4 + sizeof(asys_cqe) <= 256, "per-op memory budget");

}  // namespace asys::internal
