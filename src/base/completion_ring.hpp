// Completion ring of one context: fixed capacity, many producers (workers),
// any number of consumers (asys_wait/asys_peek), and an eventfd that is
// readable exactly while the ring holds entries.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <vector>

#include "asys/asys.h"

namespace asys::internal {

class completion_ring {
public:
    /// Thread-safe after init(); init() is not.
    int init(unsigned capacity) noexcept;
    /// Closes the eventfd. No call may race with it.
    void release() noexcept;

    /// The eventfd, created on first use (so contexts whose owner only calls
    /// asys_wait never pay its write/read syscalls). -errno on failure.
    int fd() noexcept;

    /// Never overflows: the context admits at most `capacity` ops that may
    /// post an entry before they are reaped.
    void push(const asys_cqe &cqe) noexcept;

    /// Copies up to `max` entries; returns the count.
    unsigned pop(asys_cqe *out, unsigned max) noexcept;

    /// Waits until >= min entries are present, the deadline passes, or
    /// shutdown() is called; then pops up to max. Returns the count, -ETIME
    /// (deadline, none popped) or -ESHUTDOWN. Without a deadline, also
    /// -EDEADLK as soon as the entries present plus *producers (ops in
    /// flight that will push one) fall below min.
    int wait(unsigned min, const struct timespec *timeout, asys_cqe *out, unsigned max,
             const std::atomic<uint32_t> *producers = nullptr) noexcept;
    /// A wait that also ends (returning kWokenForWork, nothing popped) as
    /// soon as `work_ready(arg)` is true (asked under the ring's lock, at
    /// the start and whenever the waiter is woken: see add_pending_work).
    static constexpr int kWokenForWork = -1000;
    int wait_or_work(unsigned min, const struct timespec *timeout, asys_cqe *out, unsigned max,
                     const std::atomic<uint32_t> *producers, bool (*work_ready)(void *),
                     void *arg) noexcept;
    /// Work other than entries that a driver of the context should do (a
    /// threadlet ready to resume): the eventfd is readable while entries or
    /// such work are pending. `delta` > 0 also wakes every waiter.
    void add_pending_work(int delta) noexcept;
    /// In a child of fork(): threads of the parent that waited here do not
    /// exist; forget them (fresh lock and condition, no waiters), so the
    /// ring can be released and destroyed.
    void forget_threads_after_fork() noexcept;
    /// Wakes waiters to re-check their condition (a producer went away).
    void poke() noexcept;
    /// Whether a waiter could now be hopeless with `producers` ops left in
    /// flight (cheap: no lock; conservative).
    bool may_strand(uint32_t producers) const noexcept {
        return waiters_.load() != 0 && count_.load(std::memory_order_relaxed) + producers < need_.load();
    }

    /// Wakes every waiter with -ESHUTDOWN and waits until none is left.
    void shutdown() noexcept;

    unsigned size() noexcept;
    /// Entry count without the lock (for spinning; may be stale).
    unsigned count_relaxed() const noexcept { return count_.load(std::memory_order_relaxed); }
    unsigned capacity() const noexcept { return static_cast<unsigned>(buf_.size()); }

private:
    unsigned pop_locked(asys_cqe *out, unsigned max) noexcept;
    void set_readable_locked(bool readable) noexcept;

    std::mutex mu_;
    std::condition_variable cv_;
    std::vector<asys_cqe> buf_;
    unsigned head_ = 0;
    /// An index below twice the capacity, brought into it (no division:
    /// head_ and the count are each below the capacity).
    unsigned wrap(unsigned i) const noexcept {
        const auto cap = static_cast<unsigned>(buf_.size());
        return i >= cap ? i - cap : i;
    }
    /// Written under mu_; read without it only by wait()'s brief spin
    /// (relaxed: the spin re-checks under mu_ before using the value).
    std::atomic<unsigned> count_{0};
    /// Threads in wait(); written under mu_, read without it by has_waiters
    /// (seq_cst: Dekker pairing with the producer count, see context).
    std::atomic<unsigned> waiters_{0};
    /// The largest min of the waiters since waiters_ was last 0 (written
    /// under mu_; seq_cst like waiters_).
    std::atomic<unsigned> need_{0};
    bool shutdown_ = false;
    bool readable_ = false;
    unsigned pending_work_ = 0;  ///< guarded by mu_ (add_pending_work)
    int efd_ = -1;  ///< guarded by mu_; -1 until fd() is first called
};

}  // namespace asys::internal
