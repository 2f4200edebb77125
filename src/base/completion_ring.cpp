#include "base/completion_ring.hpp"

#include <sys/eventfd.h>
#include <sys/syscall.h>

#include <cerrno>
#include <chrono>
#include <new>

#include "base/library_fds.hpp"
#include "base/raw_syscall.hpp"

namespace asys::internal {

int completion_ring::init(unsigned capacity) noexcept {
    try {
        buf_.resize(capacity);
    } catch (...) {
        return -ENOMEM;
    }
    return 0;
}

int completion_ring::fd() noexcept {
    std::lock_guard lk(mu_);
    if (efd_ < 0) {
        long fd = raw_syscall6(SYS_eventfd2, 0, EFD_CLOEXEC | EFD_NONBLOCK, 0, 0, 0, 0);
        if (fd < 0) return static_cast<int>(fd);
        efd_ = static_cast<int>(fd);
        library_fds::add(efd_);
        readable_ = false;
        set_readable_locked(count_.load(std::memory_order_relaxed) != 0 || pending_work_ != 0);
    }
    return efd_;
}

void completion_ring::release() noexcept {
    if (efd_ >= 0) library_fds::remove(efd_);
    if (efd_ >= 0) raw_syscall6(SYS_close, static_cast<uint64_t>(efd_), 0, 0, 0, 0, 0);
    efd_ = -1;
    std::vector<asys_cqe>().swap(buf_);
}

// The eventfd counter is owned by the ring: 1 while entries are pending, 0
// when empty. Toggled under mu_, so it can never disagree with count_.
void completion_ring::set_readable_locked(bool readable) noexcept {
    if (readable == readable_ || efd_ < 0) return;
    readable_ = readable;
    uint64_t v = 1;
    if (readable)
        raw_syscall6(SYS_write, static_cast<uint64_t>(efd_), reinterpret_cast<uint64_t>(&v), 8, 0,
                     0, 0);
    else
        raw_syscall6(SYS_read, static_cast<uint64_t>(efd_), reinterpret_cast<uint64_t>(&v), 8, 0,
                     0, 0);
}

void completion_ring::push(const asys_cqe &cqe) noexcept {
    std::lock_guard lk(mu_);
    const unsigned n = count_.load(std::memory_order_relaxed);
    buf_[wrap(head_ + n)] = cqe;
    count_.store(n + 1, std::memory_order_relaxed);
    set_readable_locked(true);
    if (waiters_) cv_.notify_all();
}

unsigned completion_ring::pop_locked(asys_cqe *out, unsigned max) noexcept {
    const unsigned have = count_.load(std::memory_order_relaxed);
    const unsigned n = have < max ? have : max;
    for (unsigned i = 0; i < n; ++i) out[i] = buf_[wrap(head_ + i)];
    head_ = wrap(head_ + n);
    count_.store(have - n, std::memory_order_relaxed);
    if (have == n) set_readable_locked(pending_work_ != 0);
    if (n && waiters_) cv_.notify_all();  // a waiter's hopes may be gone
    return n;
}

unsigned completion_ring::pop(asys_cqe *out, unsigned max) noexcept {
    std::lock_guard lk(mu_);
    return pop_locked(out, max);
}

unsigned completion_ring::size() noexcept {
    // No lock: a push is ordered before whatever the caller loaded first
    // (the producers count it decrements after pushing, seq_cst), so the
    // acquire load sees it.
    return count_.load(std::memory_order_acquire);
}

int completion_ring::wait(unsigned min, const struct timespec *timeout, asys_cqe *out,
                          unsigned max, const std::atomic<uint32_t> *producers) noexcept {
    return wait_or_work(min, timeout, out, max, producers, nullptr, nullptr);
}

void completion_ring::add_pending_work(int delta) noexcept {
    std::lock_guard lk(mu_);
    pending_work_ = static_cast<unsigned>(static_cast<int>(pending_work_) + delta);
    set_readable_locked(count_.load(std::memory_order_relaxed) != 0 || pending_work_ != 0);
    if (delta > 0 && waiters_) cv_.notify_all();
}

int completion_ring::wait_or_work(unsigned min, const struct timespec *timeout, asys_cqe *out,
                                  unsigned max, const std::atomic<uint32_t> *producers,
                                  bool (*work_ready)(void *), void *arg) noexcept {
    std::unique_lock lk(mu_);
    // Without a deadline, a wait that no op in flight can satisfy any more
    // (another thread took the entries, or only callback ops remain) ends.
    auto hopeless = [&] {
        return !timeout && producers && min > 0 &&
               count_.load(std::memory_order_relaxed) + producers->load() < min;
    };
    auto work = [&] { return work_ready && count_.load(std::memory_order_relaxed) < min && work_ready(arg); };
    auto ready = [&] {
        return shutdown_ || count_.load(std::memory_order_relaxed) >= min || hopeless() || work();
    };
    if (!ready()) {
        if (waiters_++ == 0 || min > need_.load()) need_.store(min);
        if (timeout) {
            // At most ~68 years: a longer timeout would overflow the clock's
            // nanoseconds (and is not distinguishable from it anyway).
            constexpr time_t kMaxSec = time_t{1} << 31;
            const time_t sec = timeout->tv_sec < kMaxSec ? timeout->tv_sec : kMaxSec;
            auto d = std::chrono::seconds(sec) + std::chrono::nanoseconds(timeout->tv_nsec);
            cv_.wait_until(lk, std::chrono::steady_clock::now() + d, ready);
        } else {
            cv_.wait(lk, ready);
        }
        if (--waiters_ == 0 && shutdown_) cv_.notify_all();
    }
    if (shutdown_) return -ESHUTDOWN;
    if (work()) return kWokenForWork;
    if (count_.load(std::memory_order_relaxed) < min && hopeless()) return -EDEADLK;
    unsigned n = pop_locked(out, max);
    if (n == 0 && min > 0) return -ETIME;
    return static_cast<int>(n);
}

void completion_ring::forget_threads_after_fork() noexcept {
    // Not destroyed first: their state names threads of the parent
    // (destroying a condition with waiters would wait for them forever).
    new (&mu_) std::mutex;
    new (&cv_) std::condition_variable;
    waiters_.store(0);
    need_.store(0);
}

void completion_ring::poke() noexcept {
    std::lock_guard lk(mu_);
    if (waiters_) cv_.notify_all();
}

void completion_ring::shutdown() noexcept {
    std::unique_lock lk(mu_);
    shutdown_ = true;
    cv_.notify_all();
    cv_.wait(lk, [&] { return waiters_ == 0; });
}

}  // namespace asys::internal
