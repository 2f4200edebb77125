// Test-only fault injection. Each knob is a countdown: the next N events of
// that kind fail. Zero cost when unset beyond one relaxed load on rare paths.
#pragma once
#include <atomic>

namespace asys::internal::fault {

/// Next N worker-thread creations fail with EAGAIN, after the next
/// thread_create_successes creations have succeeded.
extern std::atomic<int> thread_create_failures;
extern std::atomic<int> thread_create_successes;
/// Next N system calls run by pool workers fail with -syscall_errno
/// instead of running (EINTR exercises the retry, EIO/ENOMEM/EAGAIN the
/// error delivery).
extern std::atomic<int> syscall_failures;
extern std::atomic<int> syscall_errno;

/// Next N io_uring setups fail with EPERM.
extern std::atomic<int> uring_setup_failures;

/// Next N cancel signals sent to a worker running a cancelled op are not
/// sent, as if each had landed just before the op's system call started.
extern std::atomic<int> cancel_signal_drops;

/// Next N inline probes (the nonblocking attempt on the caller's thread)
/// see -probe_errno instead of running their system call. EINTR and EAGAIN
/// must send the op to a backend untouched; other errors are the op's result.
extern std::atomic<int> probe_failures;
extern std::atomic<int> probe_errno;

/// Next N receives from a SOCK_SEQPACKET socket whose peer has shut its
/// side return 0 (the end of the stream) without taking the record queued,
/// as Linux may when the peer's last record and shutdown land while it
/// looks (src/socket/sock_protocol.hpp, recv_record).
extern std::atomic<int> false_ends;

/// Next N io_uring completions of ops report -ring_errno instead of their
/// result. EINTR (not from a cancel) must be retried on the pool; other
/// errors are delivered as the op's result.
extern std::atomic<int> ring_failures;
extern std::atomic<int> ring_errno;

inline bool take(std::atomic<int> &counter) noexcept {
    int n = counter.load(std::memory_order_relaxed);
    while (n > 0)
        if (counter.compare_exchange_weak(n, n - 1, std::memory_order_relaxed)) return true;
    return false;
}
inline bool fail_thread_create() noexcept {
    if (take(thread_create_successes)) return false;
    return take(thread_create_failures);
}
inline bool fail_uring_setup() noexcept { return take(uring_setup_failures); }
inline bool drop_cancel_signal() noexcept { return take(cancel_signal_drops); }
/// 0, or the -errno a worker's next system call must fail with.
inline long injected_syscall_error() noexcept {
    if (syscall_failures.load(std::memory_order_relaxed) == 0) return 0;  // the common case
    return take(syscall_failures) ? -static_cast<long>(syscall_errno.load(std::memory_order_relaxed)) : 0;
}

/// 0, or the -errno the next inline probe must see (one relaxed load when unset).
inline long injected_probe_error() noexcept {
    if (probe_failures.load(std::memory_order_relaxed) == 0) return 0;
    return take(probe_failures) ? -static_cast<long>(probe_errno.load(std::memory_order_relaxed)) : 0;
}
/// 0, or the -errno the next ring completion must report.
inline long injected_ring_error() noexcept {
    if (ring_failures.load(std::memory_order_relaxed) == 0) return 0;
    return take(ring_failures) ? -static_cast<long>(ring_errno.load(std::memory_order_relaxed)) : 0;
}

}  // namespace asys::internal::fault
