// A context's counters, per scheduling class (ASYS_CLASS_*), and the
// submit-to-completion latency histograms behind asys_ctx_metrics; the
// text and Prometheus formats of struct asys_metrics.
//
// Every counter is a relaxed atomic bumped once per event by whichever
// thread sees it: the inline path bumps the same one counter it always did
// (indexed by class now), and only ops that went to a backend are timed
// (one clock read at submit, one at completion), so the inline hot path
// takes no new atomic, lock or clock read.
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>

#include "asys/asys.h"

namespace asys::internal {

/// Log-linear histogram of nanoseconds: four buckets per power of two, so
/// a percentile read from it (the bucket's upper bound) is at most 25% high.
class latency_histogram {
public:
    static constexpr unsigned kMaxLog2 = 43;  ///< ~2.4 hours; longer lands in the last bucket
    static constexpr unsigned kBuckets = (kMaxLog2 + 1) * 4;

    void add(uint64_t ns) noexcept {
        buckets_[bucket_of(ns)].fetch_add(1, std::memory_order_relaxed);
        sum_ns_.fetch_add(ns, std::memory_order_relaxed);
    }
    void reset() noexcept;
    /// Count, sum and the p50 / p99 / p999 upper bounds of one snapshot.
    void summarize(asys_class_metrics *out) const noexcept;
    /// Adds this histogram's snapshot to `acc` (for the total).
    void accumulate(uint64_t (&acc)[kBuckets]) const noexcept;
    static void summarize(const uint64_t (&counts)[kBuckets], uint64_t sum_ns, asys_class_metrics *out) noexcept;

    static unsigned bucket_of(uint64_t ns) noexcept;
    static uint64_t upper_bound(unsigned bucket) noexcept;
    uint64_t sum_ns() const noexcept { return sum_ns_.load(std::memory_order_relaxed); }

private:
    std::atomic<uint64_t> buckets_[kBuckets];
    std::atomic<uint64_t> sum_ns_{0};
};

struct counters {
    using counter = std::atomic<uint64_t>;
    static constexpr unsigned kClasses = ASYS_CLASS__COUNT;
    // Per class. "submitted" is derived (inline + punted), so the hot
    // path bumps one counter.
    counter done_inline[kClasses], punted_probe[kClasses], punted_direct[kClasses],
        completed_pool[kClasses], completed_uring[kClasses], cancelled[kClasses], expired[kClasses];
    // Per context.
    counter short_finished{0}, rejected_full{0}, ring_retried{0};
    latency_histogram latency[kClasses];

    void count_inline(unsigned cls) noexcept { done_inline[cls].fetch_add(1, std::memory_order_relaxed); }
    void count_punt(unsigned cls, bool direct) noexcept {
        (direct ? punted_direct : punted_probe)[cls].fetch_add(1, std::memory_order_relaxed);
    }
    void reset() noexcept;
    static uint64_t sum(const counter (&per_class)[kClasses]) noexcept;
};

/// CLOCK_MONOTONIC in nanoseconds.
int64_t monotonic_ns() noexcept;

/// asys_metrics_format: the text or Prometheus rendering of `m` into buf
/// (NUL-terminated when len > 0); the length the whole text needs, or
/// -EINVAL (unknown format).
long format_metrics(const asys_metrics &m, unsigned format, char *buf, size_t len) noexcept;

}  // namespace asys::internal
