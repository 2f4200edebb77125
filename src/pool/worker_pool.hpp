// Bounded pool of worker threads: the backend that can run any system call
// (the context's general backend). Threads are created at context creation
// (or, with ASYS_CTX_LAZY_THREADS, when an op finds none free) and never
// exceed the configured count. One queue (FIFO) per pool; idle workers sleep on their
// own futex and are woken one at a time (LIFO, so a warm worker is reused).
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
    int start(unsigned n, bool lazy, int64_t spin_ns) noexcept;
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
    op_slot *pop_locked() noexcept;
    void unlink_locked(op_slot *s) noexcept;

    completion_sink &sink_;
    std::mutex mu_;
    op_slot *head_ = nullptr, *tail_ = nullptr;  ///< queue (guarded by mu_)
    /// Queue length and spinning workers: written under mu_, read without it
    /// by spinners (relaxed: a stale read only delays the spinner, which
    /// re-checks under mu_ before it sleeps).
    std::atomic<unsigned> queued_{0};
    std::atomic<unsigned> spinning_{0};
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
