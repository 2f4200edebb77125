// asys_ctx: one context = limits, a slab of op slots, a completion ring with
// its eventfd, counters, and the backends the router punts to.
//
// Lifetime: context objects are never returned to the allocator; destroy
// releases their resources and recycles the object. A handle carries a
// 16-bit generation in its top bits, so a handle used after destroy gets
// -EBADF (until the same object has been recycled 65535 times).
#pragma once
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>

#include "asys/asys.h"
#include "base/backend.hpp"
#include "base/completion_ring.hpp"
#include "base/opcodes.hpp"
#include "base/slab.hpp"
#include "core/metrics.hpp"

namespace asys::internal {

/// State a layer above the core keeps per context (syslets), created on
/// first use and destroyed with the context.
class extension {
public:
    virtual ~extension() = default;
};

/// Work a layer above the core keeps for particular threads (threadlets
/// resume only on the thread that submitted them). A thread that drives the
/// context (wait, peek, destroy, asys_run) runs the work waiting for it
/// first. Created on first use (driver_work_state), destroyed with the
/// context after it drained.
class driver_work : public extension {
public:
    /// Runs the work waiting for the calling thread; how many items ran.
    virtual unsigned run_here() noexcept = 0;
    /// True if work waits for the calling thread (cheap; takes no lock of
    /// the context, may be asked under them).
    virtual bool ready_here() noexcept = 0;
};

/// The ring-bound ops of one asys_submit_batch that the submitting thread
/// may still finish as if inline: an op whose completion this thread reaps
/// before the batch call returns (the kernel completed it during the
/// batch's io_uring_enter) gets ASYS_DONE in its status, its result in
/// ret_ptr and no cqe (unless it asked for one, as inline ops do). Ops
/// reaped by any other thread, or later, complete as usual. At most kMax
/// entries; the batch enters the kernel when the window is full.
struct batch_window {
    static constexpr unsigned kMax = 64;
    op_slot *slot[kMax];
    int *status[kMax];  ///< the caller's status entry of each op (may be null)
    uint8_t reuse[kMax];  ///< each slot's reuse count when it joined (op_slot::reuse)
    unsigned n = 0;       ///< entries used (ops accepted in this window)
    unsigned queued = 0;  ///< of them, handed to a backend (a prefix)
    /// Per scheduling class (ASYS_CLASS_*): entries used, finished in the window.
    uint16_t n_class[ASYS_CLASS__COUNT] = {}, done_class[ASYS_CLASS__COUNT] = {};
    /// The shared counts are kept per window, one atomic add each instead
    /// of one per op: the entries not yet handed to a backend are counted
    /// in flight when punt_window hands them over (`uncounted_producers`
    /// of them will post a cqe); ops finished in the window without a cqe
    /// give back their room and leave the in-flight counts when the window
    /// settles (`settled`, of which `settled_producers` had no callback).
    unsigned uncounted_producers = 0;
    unsigned settled = 0, settled_producers = 0;
    /// The slots of the `settled` ops, given back to the slab (in one go)
    /// when the window settles, before their room.
    op_slot *settled_slot[kMax];
    int64_t opened_ns = 0;  ///< CLOCK_MONOTONIC at the first entry: its ops' submit time
    unsigned enters = 0;    ///< times enter_window ran (callbacks may have run in it)
};

class context final : public completion_sink {
public:
    static int create(const asys_params *params, asys_ctx **out) noexcept;
    /// Returns the live context behind a handle, or sets *err. (Inline:
    /// every entry point decodes its handle.)
    static context *from_handle(asys_ctx *h, int *err, bool allow_forked = false) noexcept;
    /// The context's address in a handle (the generation is above it).
    static constexpr uintptr_t kHandlePtrMask = (uintptr_t{1} << 48) - 1;

    int destroy(unsigned how) noexcept;

    /// Reserves room for one op that may post a completion. 0, -EAGAIN
    /// (full, or `atomic`), -ESHUTDOWN.
    /// (count_rejected: count a refusal in the rejected_full statistic.)
    int reserve_room(bool atomic, bool count_rejected = true) noexcept {
        // seq_cst: with destroy()'s state_ CAS, either destroy waits for this
        // op (inflight_) or this call sees closing.
        if (room_.fetch_sub(1) > 0) [[likely]]
            return state_.load() == 1 ? 0 : room_taken_when_closing();
        return room_taken_when_full(atomic, count_rejected);
    }
    void release_room(unsigned n) noexcept;

    /// A slot for an op whose room is reserved (never fails: the slab has
    /// one slot per unit of room).
    op_slot *new_slot(const asys_op &op) noexcept;

    /// Undoes new_slot() (and reserve_room(), unless keep_room) for a slot
    /// no backend took.
    void abandon_slot(op_slot *slot, bool keep_room = false) noexcept;

    void complete(op_slot *slot, long res, uint32_t path) noexcept override;
    /// An op that finished inline but must still post a cqe / callback.
    void post_inline(const asys_op &op, long res) noexcept;

    int wait(unsigned min, const struct timespec *timeout, asys_cqe *out, unsigned max) noexcept;

    /// A thread inside a call that may block or that holds a batch window:
    /// destroy() waits for it to leave before it tears the context down.
    class caller_scope {
    public:
        explicit caller_scope(context &c) noexcept;
        ~caller_scope();
        caller_scope(const caller_scope &) = delete;
        caller_scope &operator=(const caller_scope &) = delete;
        /// False if the context is closing (the call must return at once).
        bool ok() const noexcept { return ok_; }

    private:
        context &c_;
        bool ok_;
    };
    int peek(asys_cqe *out, unsigned max) noexcept;
    int stats(asys_stats *out) noexcept;
    /// asys_ctx_metrics (core/metrics.cpp).
    int metrics(asys_metrics *out) noexcept;

    /// Hands a slot to the best backend: the preferred one (the ring) when
    /// it accepts the op, else the general one (the pool). 0 or -EAGAIN
    /// (ATOMIC and nothing free).
    int punt(op_slot *slot, bool atomic) noexcept;
    /// Submits a sequence as linked entries of the preferred backend for
    /// one slot; 0, or -EOPNOTSUPP / -EAGAIN (the caller punts the slot
    /// instead and keeps the sequence's ownership).
    int punt_linked(op_slot *slot, linked_ops *lo) noexcept;
    int cancel(uint64_t user_data) noexcept;
    /// Whether a call with this opcode and these arguments can be one of a
    /// linked sequence (punt_linked) here.
    bool links(uint32_t opcode, const uint64_t (&args)[6]) const noexcept;
    int info(asys_info *out) noexcept;
    void plug() noexcept;
    void unplug() noexcept;
    /// Whether asys_submit_batch sends ops the preferred backend accepts
    /// there without an inline attempt (a ring completes cached reads during
    /// its one enter): a preferred backend exists.
    bool batches_via_preferred() const noexcept { return preferred_ != nullptr; }
    /// Whether the preferred backend would take this op as it is now.
    bool preferred_accepts(uint32_t opcode, const uint64_t (&args)[6], bool seekable) const noexcept;
    /// Whether the preferred backend's answer for a PREAD on an fd that seeks
    /// is ring_positional_args_fit (backend::takes_fitting_preads).
    bool preferred_takes_fitting_preads() const noexcept { return preferred_ && preferred_->takes_fitting_preads(); }
    /// Opens / closes the calling thread's batch window on this context
    /// (nests: close restores the window that was open before).
    void open_window(batch_window &w, batch_window **saved) noexcept;
    void close_window(batch_window *saved) noexcept;
    /// A slot (room reserved) for an op the preferred backend accepts, added
    /// to the calling thread's window, which has a free entry (a caller with
    /// a full one enters it first, and asks the backend again: a callback run
    /// in the enter may change the op's fd); `*status` becomes ASYS_DONE if
    /// the op finishes before the window closes (the caller wrote 0 there first).
    /// The op is accepted: punt_window() hands it to a backend. `seekable`:
    /// the fd takes positional transfers (op_slot::seekable); `s`: a slot
    /// from reserve_window_slots, or null (the slab gives one); `plain`: a
    /// READ or PREAD with a ret_ptr, no callback, no nr, no deadline and no
    /// flag but ASYS_F_BUFFERED (the router's plain_read).
    op_slot *new_window_slot(const asys_op &op, int *status, batch_window &w, bool seekable,
                             op_slot *s = nullptr, bool plain = false) noexcept;
    /// Room and a slot for up to `k` (<= batch_window::kMax) ops of a batch
    /// at once: one room RMW and one slab CAS instead of one each per op.
    /// Returns how many it got (0: no room, or closing: the op's own
    /// reserve_room() says which), their slots in `out`. Never takes more
    /// room than is free.
    unsigned reserve_window_slots(op_slot **out, unsigned k) noexcept;
    /// Gives back slots reserve_window_slots handed out that no op took,
    /// and their room.
    void unreserve_window_slots(op_slot *const *s, unsigned n) noexcept;
    /// Hands the window's ops to the preferred backend, enters the kernel
    /// for them (reaping what it completed, inside the window) and empties
    /// the window. A batch calls it before any op that is not a window op
    /// (ops are submitted in order), and when it runs out of room.
    void enter_window(batch_window &w) noexcept;
    /// Hands the window's ops not yet punted to the preferred backend under
    /// one lock (the general one if the ring is full).
    void punt_window(batch_window &w) noexcept;
    int fd() noexcept { return ring_.fd(); }
    unsigned ctx_flags() const noexcept { return flags_; }
    /// How long a socket server serving this context spins after its last
    /// request (asys_params.server_spin_us), in nanoseconds.
    int64_t server_spin_ns() const noexcept { return server_spin_ns_; }

    counters cnt;
    /// Syslet chains: atoms one chain may run (0: no limit). Relaxed: a
    /// setting, read once per chain.
    std::atomic<uint64_t> chain_step_limit{0};

    /// The syslet layer's per-context state: created by `make` on first use
    /// (thread-safe), destroyed after the context drained.
    template <typename T, typename Make>
    T *syslet_state(Make make) noexcept {
        std::lock_guard lk(ext_mu_);
        if (!syslet_ext_) syslet_ext_.reset(make());
        return static_cast<T *>(syslet_ext_.get());
    }

    /// The driver-work layer's per-context state: created by `make` on
    /// first use (thread-safe), destroyed after the context drained.
    template <typename T, typename Make>
    T *driver_work_state(Make make) noexcept {
        std::lock_guard lk(ext_mu_);
        if (!driver_ext_) {
            driver_ext_.reset(make());
            // release: wait()/peek() see the constructed object.
            driver_.store(driver_ext_.get(), std::memory_order_release);
        }
        return static_cast<T *>(driver_ext_.get());
    }
    /// Runs the calling thread's driver work, if any layer keeps some.
    unsigned run_driver_work() noexcept {
        driver_work *dw = driver_.load(std::memory_order_acquire);
        return dw ? dw->run_here() : 0;
    }
    /// Driver work became ready (delta > 0: waiters are woken) or was
    /// taken (< 0). The eventfd is readable while any is ready.
    void driver_work_ready(int delta) noexcept;
    /// True once destroy(ASYS_DESTROY_CANCEL) started.
    bool cancelling() const noexcept { return cancelling_.load(std::memory_order_relaxed); }

private:
    context() = default;
    int wait_entries(unsigned min, const struct timespec *timeout, asys_cqe *out, unsigned max,
                     driver_work *dw) noexcept;
    int init(const asys_params &p) noexcept;
    void recycle() noexcept;
    void finish(op_slot *slot, const asys_cqe &cqe) noexcept;
    /// Pushes a cqe and wakes a designated ring waiter for it.
    void push_cqe(const asys_cqe &cqe) noexcept;
    /// Kicks the thread sleeping in the ring (sleep_in_ring), if any.
    void wake_ring_sleeper() noexcept;
    void sleep_in_ring(unsigned min, const struct timespec *deadline) noexcept;
    int finish_wait(int n) noexcept;
    /// destroy(): waits until no op is in flight (cancelling them with
    /// ASYS_DESTROY_CANCEL), running this thread's driver work meanwhile.
    void wait_for_inflight(unsigned how) noexcept;
    std::atomic<uint32_t> callers_{0};        ///< threads in a caller_scope
    std::atomic<bool> ring_waiter_{false};    ///< a thread is the designated ring waiter
    std::atomic<bool> ring_sleeping_{false};  ///< it is (about to be) asleep in wait_completions()
    std::atomic<unsigned> ring_sleeper_need_{0};  ///< its min, if it has no deadline (else 0)
    void wake_hopeless_ring_sleeper() noexcept;
    /// reserve_room()'s rare ends: it took a unit of room past empty (gives
    /// it back, then fails or waits as the flags say), or while closing.
    int room_taken_when_full(bool atomic, bool count_rejected) noexcept;
    int room_taken_when_closing() noexcept;
    /// Counts a window's ops (inline or punted) and empties it.
    void settle_window(batch_window &w) noexcept;
    /// complete() of a slot in the calling thread's open window: finishes it
    /// as inline and returns true, or returns false (not in the window).
    bool finish_in_window(op_slot *slot, long res) noexcept;
    /// finish_in_window's op that posts a cqe (or calls back) as an inline
    /// one would: it asked to, or has no ret_ptr.
    void finish_with_cqe(op_slot *slot, long res) noexcept;
    /// complete() of any op: the ring's results the pool must recheck or
    /// finish, features' slots, a window's op, then the cqe.
    void complete_checked(op_slot *slot, long res, uint32_t path) noexcept;
    /// The end of every completion outside a window: ret_ptr, counters,
    /// the cqe or callback, the accounting.
    void deliver(op_slot *slot, long res, uint32_t path) noexcept;
    /// The accounting after `n` ops' completions were delivered (or
    /// dropped); `produced` of them were counted as cqe producers.
    void retire(unsigned produced, unsigned n = 1) noexcept;
    /// new_slot's copy of the op into the slot, with its submit time (and
    /// a window op's entry and bits: it is filled once).
    void fill_slot(op_slot *s, const asys_op &op, int64_t now_ns, uint8_t batch_entry = 0, bool direct = false,
                   bool seekable = false, bool plain = false) noexcept;
    asys_ctx *handle() const noexcept;

    std::atomic<uint16_t> gen_{1};
    std::atomic<int> state_{0};  ///< 0 free, 1 live, 2 closing
    uint64_t fork_gen_ = 0;
    unsigned flags_ = 0;
    int64_t wait_spin_ns_ = 0;    ///< asys_wait's longest spin (asys_params.wait_spin_us)
    static constexpr int64_t kMinSpinNs = 1000;
    std::atomic<int64_t> wait_spin_now_{0};  ///< the adaptive spin (see spin_ns_now)
    std::atomic<unsigned> spin_retry_{0};    ///< waits since the spin went off
    int64_t spin_ns_now() noexcept;
    void spin_outcome(int64_t spun, bool in_time) noexcept;
    int64_t server_spin_ns_ = 0;  ///< socket servers' spin
    unsigned max_inflight_ = 0;
    unsigned max_workers_ = 0;  ///< the pool's bound (asys_params.workers)

    op_slab slab_;
    completion_ring ring_;
    /// The preferred backend (io_uring), null when it is not used, and the
    /// general one (the pool), which runs any system call. Made from the
    /// backend list (kBackends); the context names neither.
    std::unique_ptr<backend> preferred_;
    std::unique_ptr<backend> general_;
    const backend_entry *preferred_entry_ = nullptr;
    const backend_entry *general_entry_ = nullptr;
    int preferred_error_ = 0;               ///< why there is no preferred backend
    const char *preferred_fail_step_ = "";  ///< the set-up step that failed

    /// Free capacity: max_inflight minus ops in flight that may post a cqe
    /// minus unreaped cqes. seq_cst RMWs; see reserve_room().
    std::atomic<int64_t> room_{0};
    std::atomic<uint32_t> inflight_{0};  ///< accepted, not yet completed
    /// In flight and will post a cqe (no callback): what a waiter can hope
    /// for. seq_cst: read by waiters against the ring's count.
    std::atomic<uint32_t> cqe_producers_{0};
    std::atomic<uint32_t> sleepers_{0};  ///< threads in wait_mu_/wait_cv_
    std::mutex wait_mu_;
    std::condition_variable wait_cv_;

    std::mutex ext_mu_;
    std::unique_ptr<extension> syslet_ext_;
    std::unique_ptr<driver_work> driver_ext_;
    std::atomic<driver_work *> driver_{nullptr};
    std::atomic<bool> cancelling_{false};  ///< relaxed: a hint for new calls of the layer above

    context *next_free_ = nullptr;
    friend struct registry;
};

// In the header, and always inline: a batch's window op is filled where it
// joins the window (router), without a call per op.
[[gnu::always_inline]] inline void context::fill_slot(op_slot *s, const asys_op &op, int64_t now_ns, uint8_t batch_entry,
                                                      bool direct, bool seekable, bool plain) noexcept {
    // `plain`: a plain read (no callback, no cb_arg, no nr, no deadline, no
    // flag but BUFFERED): those fields are known to be 0.
    s->opcode = op.opcode;
    s->flags = op.flags;
    s->ret_ptr = op.ret_ptr;
    s->user_data = op.user_data;
    s->callback = plain ? nullptr : op.callback;
    s->cb_arg = plain ? nullptr : op.cb_arg;
    s->sys.nr = plain ? 0 : op.nr;
    std::memcpy(s->sys.args, op.args, sizeof s->sys.args);
    s->prev = s->next = nullptr;
    s->done = 0;
    s->hooks = nullptr;
    s->cancel.store(0, std::memory_order_relaxed);
    // The bits last and together: the compiler merges them into one byte.
    const unsigned sched = (plain ? kOpcodes[op.opcode].sched : sched_class_of(op.opcode, op.nr, op.flags)) & 7u;
    const bool bulk = !plain && (op.flags & ASYS_F_BULK) != 0;
    s->queued = 0;
    s->direct = direct;
    s->seekable = seekable;
    s->bulk = bulk;
    s->expired = 0;
    s->sched = sched & 7u;
    if (!plain && op.deadline_ns) {
        s->deadline.tv_sec = static_cast<int64_t>(op.deadline_ns / 1000000000u);
        s->deadline.tv_nsec = static_cast<long long>(op.deadline_ns % 1000000000u);
    } else {
        s->deadline = {};
    }
    s->submit_ns = now_ns;
    s->batch_entry = batch_entry;
    ++s->reuse;  // not reset: it tells this op from the slot's earlier ones
}

[[gnu::always_inline]] inline op_slot *context::new_window_slot(const asys_op &op, int *status, batch_window &w,
                                                                 bool seekable, op_slot *s, bool plain) noexcept {
    if (w.n == 0) w.opened_ns = monotonic_ns();
    if (!s) s = slab_.alloc();  // cannot fail: one slot per unit of room
    const unsigned k = w.n++;
    // Counted in flight by punt_window; punted without an inline attempt.
    fill_slot(s, op, w.opened_ns, static_cast<uint8_t>(k + 1), /*direct=*/true, seekable, plain);
    if (plain || !op.callback) ++w.uncounted_producers;
    w.slot[k] = s;
    w.status[k] = status;
    w.reuse[k] = s->reuse;
    ++w.n_class[s->sched];
    return s;
}

/// Incremented in every child after fork(); contexts from before are dead.
extern std::atomic<uint64_t> g_fork_generation;

inline context *context::from_handle(asys_ctx *h, int *err, bool allow_forked) noexcept {
    auto v = reinterpret_cast<uintptr_t>(h);
    if (!v) {
        *err = -EINVAL;
        return nullptr;
    }
    auto *c = reinterpret_cast<context *>(v & kHandlePtrMask);
    const auto tag = static_cast<uint16_t>(v >> 48);
    // acquire: pairs with the release store of state_ in create(), so a
    // handle that passes sees a fully initialised context.
    if (tag == 0 || c->state_.load(std::memory_order_acquire) != 1 ||
        c->gen_.load(std::memory_order_relaxed) != tag) {
        *err = -EBADF;
        return nullptr;
    }
    if (!allow_forked && c->fork_gen_ != g_fork_generation.load(std::memory_order_relaxed)) {
        *err = -EOWNERDEAD;
        return nullptr;
    }
    return c;
}

/// Installs the context registry's fork handlers (idempotent). A layer
/// that holds its own lock around context creation registers its handlers
/// after calling this, so fork's prepare step takes the locks in order.
void register_fork_handlers() noexcept;

}  // namespace asys::internal
