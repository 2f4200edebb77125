// What the context needs from an execution backend, and the list of
// backends. A backend runs punted op slots and reports each one exactly
// once through the completion_sink it was made with. The context holds two
// roles: the preferred backend (io_uring, when it can start), tried first
// for the ops it accepts, and the general backend (the worker pool), which
// runs any system call and takes everything else. Adding a backend is a
// new folder plus one row in the backend list (src/capi/wiring.cpp); the
// context does not name any backend.
#pragma once
#include <cstdint>

#include "base/linked_ops.hpp"
#include "base/op_slot.hpp"

namespace asys::internal {

class completion_sink {
public:
    /// Called exactly once per punted slot, on whichever thread finished it.
    /// After it returns the slot belongs to the sink (it is freed there).
    virtual void complete(op_slot *slot, long res, uint32_t path) noexcept = 0;

protected:
    ~completion_sink() = default;
};

class backend {
public:
    virtual ~backend() = default;
    /// Whether this backend gives the plain system call's result for the
    /// slot (its opcode and arguments; may look at the descriptor).
    virtual bool accepts(const op_slot &slot) const noexcept = 0;
    /// The same for a call not yet in a slot (`seekable`: the fd is known to
    /// take positional transfers).
    virtual bool accepts_call(uint32_t opcode, const uint64_t (&args)[6], bool seekable) const noexcept = 0;
    /// Whether accepts_call(ASYS_OP_PREAD, args, true) is
    /// ring_positional_args_fit(args) for any args (base/opcodes.hpp): a
    /// batch then asks that inline rule instead, once it knows the fd seeks.
    virtual bool takes_fitting_preads() const noexcept { return false; }
    /// Takes the slot. 0, or -EAGAIN when `atomic` and nothing is idle, or
    /// when full (the slot is then still the caller's).
    virtual int punt(op_slot *slot, bool atomic) noexcept = 0;
    /// While plugged: takes slots[0..k) for the next submission under one
    /// lock and returns k (< n when full; 0 if not plugged or not supported).
    /// The slots it did not take are still the caller's.
    virtual unsigned punt_plugged(op_slot *const *, unsigned) noexcept { return 0; }
    /// Whether a waiter may sleep in the backend itself (wait_completions)
    /// rather than on the completion ring: it has ops in flight whose
    /// completions it posts.
    virtual bool has_inflight() const noexcept { return false; }
    /// Called by a waiter before its last check ahead of wait_completions():
    /// kicks from then on are not lost.
    virtual void prepare_wait() noexcept {}
    /// Sleeps until a completion is ready to reap, kick() is called, a
    /// signal arrives, or the absolute CLOCK_MONOTONIC deadline (may be
    /// null) passes. 0, -ETIME, -EINTR, or -EOPNOTSUPP (cannot: the caller
    /// sleeps elsewhere).
    virtual int wait_completions(const struct timespec *) noexcept { return -95; /* -EOPNOTSUPP */ }
    /// Wakes a thread in wait_completions() (harmless if there is none).
    virtual void kick() noexcept {}
    /// Submits a sequence of calls as linked entries for one slot (see
    /// linked_ops.hpp); the slot completes (res 0) once every entry has its
    /// result. 0, or -EAGAIN / -EOPNOTSUPP (the caller runs it elsewhere).
    virtual int punt_linked(op_slot *, linked_ops *) noexcept { return -95; /* -EOPNOTSUPP */ }
    /// Whether punt_linked can run a call of this opcode with these arguments.
    virtual bool links(uint32_t, const uint64_t (&)[6]) const noexcept { return false; }
    /// 0: every match was queued and is completed -ECANCELED; -EALREADY: a
    /// match was running and was interrupted; -ENOENT: no match.
    virtual int cancel(uint64_t user_data) noexcept = 0;
    /// Completes all queued ops -ECANCELED and interrupts running ones.
    virtual void cancel_all() noexcept = 0;
    /// Stops the backend after every op completed.
    virtual void stop() noexcept = 0;
    /// In a forked child: drop threads/rings without touching them.
    virtual void abandon() noexcept = 0;
    virtual unsigned threads() const noexcept = 0;

    // --- batching and reaping (backends with a submission/completion queue)
    /// While plugged, punts are queued without entering the kernel; unplug()
    /// submits them all at once; flush() submits them now.
    virtual void plug() noexcept {}
    virtual void unplug() noexcept {}
    virtual void flush() noexcept {}
    /// Reaps finished ops on the calling thread (never blocks). Count reaped.
    virtual unsigned reap() noexcept { return 0; }
    /// True if finished ops wait to be reaped (cheap).
    virtual bool ready() const noexcept { return false; }
    /// While a thread reaps actively (spinning in asys_wait), the backend
    /// need not wake anyone else for completions.
    virtual void begin_reaping() noexcept {}
    virtual void end_reaping() noexcept {}
    /// True while the calling thread is inside this backend's reaping (a
    /// completion callback runs there).
    virtual bool reaping_here() const noexcept { return false; }

    // --- for asys_ctx_info
    /// Bit (1 << ASYS_OP_x) per opcode it may run.
    virtual uint64_t opcode_mask() const noexcept = 0;
    /// Its own kernel-side worker cap (io-wq), 0 if none.
    virtual unsigned kernel_workers() const noexcept { return 0; }

    // --- for asys_ctx_metrics
    /// Its scheduling state per class (a backend without classes leaves
    /// the snapshot zero).
    virtual void sched_state(struct sched_snapshot *) const noexcept {}
};

/// A backend's scheduling state (backend::sched_state), index ASYS_CLASS_*.
struct sched_snapshot {
    uint32_t queued[ASYS_CLASS__COUNT];
    uint32_t busy[ASYS_CLASS__COUNT];    ///< workers running an op of the class
    uint32_t budget[ASYS_CLASS__COUNT];
    uint32_t workers;                    ///< threads that exist
    uint32_t idle;                       ///< threads waiting for work
};

/// What a backend is made from.
struct backend_config {
    unsigned entries;  ///< the context's in-flight limit (ring sizes)
    unsigned workers;  ///< threads (pool) or the kernel worker cap (io-wq)
    bool lazy;         ///< start threads when first needed, not at creation
    int64_t spin_ns;   ///< how long an idle worker spins before it sleeps
    /// Worker budget per scheduling class (ASYS_CLASS_*), each 1..workers.
    unsigned budgets[ASYS_CLASS__COUNT];
};

/// One row of the backend list.
struct backend_entry {
    const char *name;
    unsigned kind;     ///< ASYS_BACKEND_*
    bool general;      ///< runs any system call (the pool): the fallback role
    /// Makes and starts the backend; on failure returns null with *err
    /// (-errno) and *step (the set-up step that failed).
    backend *(*make)(completion_sink &sink, const backend_config &cfg, int *err, const char **step) noexcept;
};

/// The backends, defined at the top of the library (src/capi/wiring.cpp).
extern const backend_entry kBackends[];
extern const unsigned kBackendCount;

}  // namespace asys::internal
