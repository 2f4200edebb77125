// Bounded pool of worker threads: the backend that can run any system call
// (the context's general backend). Threads are created at context creation
// (or, with ASYS_CTX_LAZY_THREADS, when an op finds none free) and never
// exceed the configured count. Idle workers sleep on their own futex and
// are woken one at a time (LIFO, so a warm worker is reused).
//
// Scheduling (docs/scheduling.md): one pair of FIFO queues (latency, bulk)
// per class (ASYS_CLASS_*: read, write, meta, net, long). A worker that
// looks for work takes, round-robin over the classes, the next op of a
// class running fewer ops than its budget (latency before bulk); only when
// no such op waits may it borrow: take an op of a class over its budget
// that borrows (not net or long, whose calls may never end). So a flood of
// one class holds at most its budget while another class has work. An op
// whose deadline (ASYS_F_DEADLINE) passed when it is dequeued completes
// -ETIME without running.
#pragma once
#include <sys/types.h>
#include <time.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <pthread.h>

#include "base/backend.hpp"

namespace asys::internal {

class worker_pool final : public backend {
public:
    explicit worker_pool(completion_sink &sink) noexcept : sink_(sink) {}
    ~worker_pool() override;

    /// Makes room for `n` workers and starts them (or, `lazy`, lets punt()
    /// start each when work arrives that no worker is free for); on failure
    /// stops those started and returns -errno. An idle worker spins
    /// `spin_ns` before it sleeps (0: never).
    /// `budgets`: workers per class (ASYS_CLASS_*), each 1..n.
    int start(unsigned n, bool lazy, int64_t spin_ns, const unsigned (&budgets)[ASYS_CLASS__COUNT]) noexcept;
    /// The backend list's constructor for this backend.
    static backend *make(completion_sink &sink, const backend_config &cfg, int *err, const char **step) noexcept;

    /// The pool runs any system call.
    bool accepts(const op_slot &) const noexcept override { return true; }
    bool accepts_call(uint32_t, const uint64_t (&)[6], bool) const noexcept override { return true; }
    uint64_t opcode_mask() const noexcept override { return (uint64_t{1} << ASYS_OP__COUNT) - 1; }

    int punt(op_slot *slot, bool atomic) noexcept override;
    int cancel(uint64_t user_data) noexcept override;
    void cancel_all() noexcept override;
    void stop() noexcept override;
    void abandon() noexcept override;
    unsigned threads() const noexcept override { return nworkers_.load(std::memory_order_relaxed); }
    void sched_state(sched_snapshot *out) const noexcept override;

    /// The signal used to interrupt a running op on cancel (no-op handler,
    /// installed once per process without SA_RESTART).
    static int cancel_signal() noexcept;

private:
    struct worker {
        worker_pool *pool;
        pthread_t thread;
        std::atomic<pid_t> tid{0};
        std::atomic<uint32_t> wake{0};  ///< futex word: 1 = has been woken
        worker *next_idle = nullptr;
        op_slot *current = nullptr;     ///< running op (guarded by mu_)
        /// Re-sends the cancel signal to this worker every kResendNs while
        /// its cancelled op runs: a signal that lands just before the op's
        /// system call starts is consumed without interrupting it. Created
        /// by the worker before it first takes mu_ (so readers under mu_
        /// see it); without one, a cancel is a single signal.
        timer_t timer{};
        bool has_timer = false;
        bool resending = false;         ///< the timer is armed (guarded by mu_)
        bool started = false;           ///< its thread exists (set by spawn())
    };
    /// Starts w's thread (all application signals blocked). 0 or -errno.
    int spawn(worker &w) noexcept;
    static void *thread_main(void *arg) noexcept;
    void loop(worker &w) noexcept;
    void interrupt_running_locked() noexcept;
    /// The next op a free worker runs (see the header comment), counted as
    /// running in its class; ops dequeued past their deadline are chained
    /// on *expired (through ->next) instead. Null if none may run now.
    op_slot *pick_locked(op_slot **expired) noexcept;
    /// Whether an op of class c queued now could be picked by a free worker.
    bool runnable_locked(unsigned c) const noexcept;
    op_slot *pop_any_locked() noexcept;
    void unlink_locked(op_slot *s) noexcept;
    /// Completes a chain of expired slots -ETIME (no lock held).
    void complete_expired(op_slot *expired) noexcept;

    /// One scheduling class's queues and counts (guarded by mu_).
    struct class_queue {
        op_slot *head[2] = {}, *tail[2] = {};  ///< [0] latency, [1] bulk
        unsigned queued = 0;
        unsigned running = 0;  ///< workers running an op of this class
        unsigned budget = 1;
        bool borrows = false;
    };

    completion_sink &sink_;
    mutable std::mutex mu_;
    class_queue classes_[ASYS_CLASS__COUNT];
    unsigned next_class_ = 0;  ///< round-robin cursor (guarded by mu_)
    unsigned queued_ = 0;      ///< ops in all queues (guarded by mu_)
    unsigned running_ = 0;     ///< workers running an op (guarded by mu_)
    /// At most one worker spins for work (guarded by mu_); a punt that
    /// leaves an op for it sets spin_kick_ (read by the spinner without the
    /// lock; relaxed: it re-checks under mu_).
    bool spinning_ = false, spinner_claimed_ = false;
    std::atomic<uint32_t> spin_kick_{0};
    unsigned idle_count_ = 0;                    ///< workers on the idle stack (guarded by mu_)
    worker *idle_ = nullptr;                     ///< idle stack (guarded by mu_)
    bool stopping_ = false;                      ///< guarded by mu_
    std::unique_ptr<worker[]> workers_;
    unsigned max_ = 0;       ///< the bound on threads
    unsigned reserved_ = 0;  ///< workers_[0..reserved_) claimed by a start (guarded by mu_ once running)
    /// Threads that exist (relaxed: a statistic; stop() joins by `started`).
    std::atomic<unsigned> nworkers_{0};
    int64_t spin_ns_ = 0;
};

}  // namespace asys::internal
