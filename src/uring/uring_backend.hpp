// io_uring backend: the preferred punt target for the opcodes the kernel's
// ring supports. One ring per context; submissions are batched (one
// io_uring_enter per asys_submit, or per asys_submit_batch); completions are
// reaped by whichever comes first: the submitting thread right after
// io_uring_enter (ops the kernel completed inline), a waiter in
// asys_wait/asys_peek, or the backend's reaper thread, which sleeps on an
// eventfd registered with the ring (never busy). The eventfd is disabled
// (IORING_CQ_EVENTFD_DISABLED) while a submitter is inside io_uring_enter,
// so completions the submitter reaps itself wake nobody. io-wq workers are
// capped with io_uring_register_iowq_max_workers.
#pragma once
#include <liburing.h>
#include <pthread.h>

#include <atomic>
#include <cstdint>
#include <mutex>

#include "base/backend.hpp"

namespace asys::internal {

/// Whether the ring gives the plain system call's result for these
/// arguments (lengths that fit its 32-bit field, offsets it reads the same
/// way, descriptors of a kind where it behaves as the call: may fstat the
/// fd); if not, the op runs on the pool. `fd_seekable_known`: an inline
/// probe already saw the fd accept a positional read.
bool args_fit_ring(uint32_t opcode, const uint64_t (&args)[6], bool fd_seekable_known = false,
                   bool link_timeout = true) noexcept;

class uring_backend final : public backend {
public:
    explicit uring_backend(completion_sink &sink) noexcept : sink_(sink) {}
    ~uring_backend() override;

    /// Sets up the ring (entries >= 1) and probes opcodes. -errno on failure
    /// (the context then runs on the pool and reports why: failed_step()).
    /// `lazy`: the reaper thread starts with the first op, not here.
    int start(unsigned entries, unsigned max_workers, bool lazy) noexcept;
    /// The set-up step that failed (after start() returned an error).
    const char *failed_step() const noexcept { return failed_step_; }
    /// The backend list's constructor for this backend.
    static backend *make(completion_sink &sink, const backend_config &cfg, int *err, const char **step) noexcept;

    bool accepts(const op_slot &s) const noexcept override;
    bool accepts_call(uint32_t opcode, const uint64_t (&args)[6], bool seekable) const noexcept override;
    bool takes_fitting_preads() const noexcept override;
    bool links(uint32_t opcode, const uint64_t (&args)[6]) const noexcept override;
    uint64_t opcode_mask() const noexcept override { return supported_; }
    unsigned kernel_workers() const noexcept override { return iowq_limit_; }

    int punt(op_slot *slot, bool atomic) noexcept override;
    unsigned punt_plugged(op_slot *const *slots, unsigned n) noexcept override;
    bool has_inflight() const noexcept override { return inring_count_.peek() != 0; }
    void prepare_wait() noexcept override;
    int wait_completions(const struct timespec *deadline) noexcept override;
    /// Writes the kick eventfd (no SQE, no lock: a no-op's completion could
    /// be reaped by another thread before the waiter looks at the CQ).
    void kick() noexcept override;
    int punt_linked(op_slot *slot, linked_ops *lo) noexcept override;
    bool supports_opcode(uint32_t opcode) const noexcept;
    int cancel(uint64_t user_data) noexcept override;
    void cancel_all() noexcept override;
    void stop() noexcept override;
    void abandon() noexcept override;
    unsigned threads() const noexcept override { return reaper_started_.load(std::memory_order_relaxed) ? 1 : 0; }

    /// Batching: while the calling thread holds a plug, its punt() prepares
    /// SQEs without entering the kernel; unplug() submits them all in one
    /// io_uring_enter (other threads' punts still submit at once); flush()
    /// submits what a plug holds back now (a submitter about to wait for
    /// room that only those ops can free).
    void plug() noexcept override;
    void unplug() noexcept override;
    void flush() noexcept override;

    /// Reaps available CQEs on the calling thread (non-blocking; returns at
    /// once if another thread is reaping). Returns the number completed.
    unsigned reap() noexcept override;
    /// True if CQEs are waiting (one load of the CQ tail).
    bool ready() const noexcept override;
    /// True while the calling thread drains this ring's completions (it is
    /// inside a completion callback).
    bool reaping_here() const noexcept override;

    /// While at least one thread is actively reaping (a submitter inside
    /// io_uring_enter, a waiter spinning in asys_wait), the ring's eventfd
    /// is muted: completions that thread will reap wake nobody. Unmuting
    /// re-checks the CQ so nothing posted while muted is stranded.
    void begin_reaping() noexcept override;
    void end_reaping() noexcept override;

private:
    static void *reaper_main(void *arg) noexcept;
    void reaper_loop() noexcept;
    int submit_locked() noexcept;
    int punt_locked(op_slot *slot, bool atomic) noexcept;
    /// Prepares the slot's SQEs (1, or 2 for a timed poll) and tracks it;
    /// returns how many, or -EAGAIN when the ring has no room.
    int queue_locked(op_slot *slot, io_uring_sqe **sqes) noexcept;
    /// Queues slots[0..k) of one SQE each while the ring has room for all
    /// of them (checked once, not per slot); returns k.
    unsigned queue_run_locked(op_slot *const *slots, unsigned n) noexcept;
    unsigned drain_locked() noexcept;
    /// One CQE taken off the ring (an op's slot already untracked): its
    /// completion. Returns the number of ops completed (0 or 1).
    unsigned complete_taken(uint64_t user_data, int res) noexcept;
    /// Puts the slot on the in-ring list (track_locked also counts its CQE).
    void link_locked(op_slot *s) noexcept;
    void track_locked(op_slot *s) noexcept;
    void untrack_locked(op_slot *s) noexcept;
    void track_linked_locked(linked_ops *lo) noexcept;
    void untrack_linked_locked(linked_ops *lo) noexcept;
    io_uring_sqe *get_sqe_locked() noexcept;
    /// True when k SQEs are free (submitting pending ones first if needed).
    bool reserve_sqes_locked(unsigned k) noexcept;
    /// Submits unless plugged; if the kernel refuses, turns the op's n SQEs
    /// into ignored no-ops and forgets the slot (which accounted for `cqes`
    /// CQEs). 0, -EAGAIN or the error.
    int submit_or_take_back_locked(op_slot *slot, io_uring_sqe *const *sqes, unsigned n, unsigned cqes) noexcept;

    completion_sink &sink_;
    io_uring ring_{};
    bool ring_ok_ = false;
    uint64_t supported_ = 0;  ///< bit per asys opcode
    bool link_timeout_ = false;  ///< IORING_OP_LINK_TIMEOUT (timed polls)
    const char *failed_step_ = "";
    unsigned iowq_limit_ = 0;
    unsigned cq_entries_ = 0;

    std::mutex sq_mu_;             ///< SQ ring, in-ring list, plug state
    op_slot *inring_ = nullptr;    ///< single ops in the ring (for cancel), via prev/next
    linked_ops *inring_linked_ = nullptr;  ///< linked sequences in the ring (for cancel)
    /// A count written under a lock and read without it (a hint): relaxed.
    class locked_count {
    public:
        operator unsigned() const noexcept { return v_.load(std::memory_order_relaxed); }
        locked_count &operator+=(unsigned d) noexcept { return set(*this + d); }
        locked_count &operator-=(unsigned d) noexcept { return set(*this - d); }
        locked_count &operator++() noexcept { return set(*this + 1); }
        locked_count &operator--() noexcept { return set(*this - 1); }
        unsigned peek() const noexcept { return *this; }

    private:
        locked_count &set(unsigned v) noexcept {
            v_.store(v, std::memory_order_relaxed);
            return *this;
        }
        std::atomic<unsigned> v_{0};
    };
    locked_count inring_count_;    ///< CQEs the ops in the ring will post (sq_mu_)
    /// Whether the calling thread holds a plug on this ring (see plug()).
    bool plugged_here() const noexcept;
    unsigned pending_submit_ = 0;

    std::mutex cq_mu_;             ///< CQ head (reapers take turns)
    /// Threads reaping now (begin_reaping); the CQ's eventfd is disabled
    /// while it is above 0 (the flag toggles only on 0 <-> 1).
    std::atomic<unsigned> muted_{0};
    /// Sets or clears IORING_CQ_EVENTFD_DISABLED with one atomic RMW (the
    /// kernel only reads the word).
    void set_eventfd_enabled(bool enabled) noexcept;
    pthread_t reaper_{};
    int efd_ = -1;                 ///< completion eventfd the reaper sleeps on
    int kick_fd_ = -1;             ///< wakes the designated waiter (kick())
    /// The reaper runs (set once under reaper_mu_, release; cleared by stop()).
    std::atomic<bool> reaper_started_{false};
    std::mutex reaper_mu_;
    int start_reaper() noexcept;
    /// Unmaps the ring and closes its eventfd (whichever exist).
    void release_ring() noexcept;
    std::atomic<bool> stopping_{false};
};

}  // namespace asys::internal
