#include "core/metrics.hpp"

#include <time.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>

#include "base/opcodes.hpp"
#include "core/context.hpp"

namespace asys::internal {

int64_t monotonic_ns() noexcept {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

// ------------------------------------------------------------- histogram

unsigned latency_histogram::bucket_of(uint64_t ns) noexcept {
    if (ns < 4) return static_cast<unsigned>(ns);
    const unsigned msb = 63u - static_cast<unsigned>(__builtin_clzll(ns));
    if (msb > kMaxLog2) return kBuckets - 1;
    return msb * 4 + static_cast<unsigned>((ns >> (msb - 2)) & 3);
}

uint64_t latency_histogram::upper_bound(unsigned b) noexcept {
    if (b < 4) return b + 1;  // buckets 0..3 hold 0..3 ns; 4..7 are unused
    const unsigned msb = b / 4, sub = b % 4;
    if (msb < 2) return 4;
    return (uint64_t{5} + sub) << (msb - 2);
}

void latency_histogram::reset() noexcept {
    for (auto &b : buckets_) b.store(0, std::memory_order_relaxed);
    sum_ns_.store(0, std::memory_order_relaxed);
}

void latency_histogram::accumulate(uint64_t (&acc)[kBuckets]) const noexcept {
    for (unsigned i = 0; i < kBuckets; ++i) acc[i] += buckets_[i].load(std::memory_order_relaxed);
}

void latency_histogram::summarize(asys_class_metrics *out) const noexcept {
    uint64_t counts[kBuckets] = {};
    accumulate(counts);
    summarize(counts, sum_ns(), out);
}

void latency_histogram::summarize(const uint64_t (&counts)[kBuckets], uint64_t sum_ns,
                                  asys_class_metrics *out) noexcept {
    uint64_t total = 0;
    for (uint64_t c : counts) total += c;
    out->lat_count = total;
    out->lat_sum_ns = sum_ns;
    out->lat_p50_ns = out->lat_p99_ns = out->lat_p999_ns = 0;
    if (total == 0) return;
    // The rank of quantile q (per mille) is ceil(q * total).
    const struct { unsigned per_mille; uint64_t *dst; } qs[] = {
        {500, &out->lat_p50_ns}, {990, &out->lat_p99_ns}, {999, &out->lat_p999_ns}};
    for (const auto &q : qs) {
        const uint64_t rank = (total * q.per_mille + 999) / 1000;
        uint64_t seen = 0;
        for (unsigned i = 0; i < kBuckets; ++i) {
            seen += counts[i];
            if (seen >= rank) {
                *q.dst = upper_bound(i);
                break;
            }
        }
    }
}

// -------------------------------------------------------------- counters

void counters::reset() noexcept {
    for (auto *arr : {&done_inline, &punted_probe, &punted_direct, &completed_pool, &completed_uring, &cancelled,
                      &expired})
        for (auto &c : *arr) c.store(0, std::memory_order_relaxed);
    for (auto *c : {&short_finished, &rejected_full, &ring_retried}) c->store(0, std::memory_order_relaxed);
    for (auto &h : latency) h.reset();
}

uint64_t counters::sum(const counter (&per_class)[kClasses]) noexcept {
    uint64_t s = 0;
    for (const auto &c : per_class) s += c.load(std::memory_order_relaxed);
    return s;
}

// ------------------------------------------------------- the context's view

int context::metrics(asys_metrics *o) noexcept {
    if (!o) return -EFAULT;
    *o = asys_metrics{};
    asys_info inf;
    info(&inf);
    o->backend = inf.backend;
    o->uring_error = inf.uring_error;
    o->iowq_workers = inf.iowq_max_workers;
    static_assert(sizeof o->reason == sizeof inf.reason, "same reason text");
    std::memcpy(o->reason, inf.reason, sizeof o->reason);
    sched_snapshot ss{};
    general_->sched_state(&ss);
    o->workers = ss.workers;
    o->workers_idle = ss.idle;
    o->workers_max = max_workers_;
    auto r = [](const std::atomic<uint64_t> &a) { return a.load(std::memory_order_relaxed); };
    uint64_t all[latency_histogram::kBuckets] = {};
    uint64_t all_sum = 0;
    asys_class_metrics &t = o->total;
    for (unsigned k = 0; k < ASYS_CLASS__COUNT; ++k) {
        asys_class_metrics &m = o->cls[k];
        m.done_inline = r(cnt.done_inline[k]);
        m.punted = r(cnt.punted_probe[k]) + r(cnt.punted_direct[k]);
        m.submitted = m.done_inline + m.punted;
        m.completed = r(cnt.completed_pool[k]) + r(cnt.completed_uring[k]);
        m.in_flight = m.punted > m.completed ? m.punted - m.completed : 0;
        m.cancelled = r(cnt.cancelled[k]);
        m.expired = r(cnt.expired[k]);
        cnt.latency[k].summarize(&m);
        cnt.latency[k].accumulate(all);
        all_sum += cnt.latency[k].sum_ns();
        m.queued = ss.queued[k];
        m.workers_busy = ss.busy[k];
        m.budget = ss.budget[k];
        t.done_inline += m.done_inline;
        t.punted += m.punted;
        t.submitted += m.submitted;
        t.completed += m.completed;
        t.in_flight += m.in_flight;
        t.cancelled += m.cancelled;
        t.expired += m.expired;
        t.queued += m.queued;
        t.workers_busy += m.workers_busy;
        t.budget += m.budget;
    }
    latency_histogram::summarize(all, all_sum, &t);
    o->workers_busy = t.workers_busy;
    return 0;
}

// ---------------------------------------------------------------- formats

namespace {

// snprintf into a buffer that may be too small, counting what the whole
// text needs.
class appender {
public:
    appender(char *buf, size_t len) noexcept : buf_(buf), len_(len) {
        if (len_) buf_[0] = '\0';
    }
    __attribute__((format(printf, 2, 3))) void add(const char *fmt, ...) noexcept {
        va_list ap;
        va_start(ap, fmt);
        char *dst = used_ < len_ ? buf_ + used_ : nullptr;
        const int n = vsnprintf(dst, dst ? len_ - used_ : 0, fmt, ap);
        va_end(ap);
        if (n > 0) used_ += static_cast<size_t>(n);
    }
    long used() const noexcept { return static_cast<long>(used_); }

private:
    char *buf_;
    size_t len_;
    size_t used_ = 0;
};

const char *backend_name(uint32_t b) noexcept { return b == ASYS_BACKEND_URING ? "io_uring" : "pool"; }

// One counter or gauge of every class, as the field `field` of asys_class_metrics.
struct class_field {
    const char *name;  ///< Prometheus metric name (text: the key after the class)
    const char *type;  ///< counter / gauge
    const char *help;
    uint64_t asys_class_metrics::*field;
};
constexpr class_field kClassFields[] = {
    {"submitted", "counter", "Ops accepted.", &asys_class_metrics::submitted},
    {"inline", "counter", "Ops finished on the caller.", &asys_class_metrics::done_inline},
    {"punted", "counter", "Ops sent to a backend.", &asys_class_metrics::punted},
    {"completed", "counter", "Punted ops completed.", &asys_class_metrics::completed},
    {"cancelled", "counter", "Ops completed -ECANCELED.", &asys_class_metrics::cancelled},
    {"expired", "counter", "Ops whose deadline passed before they started (-ETIME).",
     &asys_class_metrics::expired},
    {"in_flight", "gauge", "Punted ops not yet completed.", &asys_class_metrics::in_flight},
};
struct class_gauge {
    const char *name;
    const char *help;
    uint32_t asys_class_metrics::*field;
};
constexpr class_gauge kClassGauges[] = {
    {"queued", "Ops waiting in the pool's queues.", &asys_class_metrics::queued},
    {"workers_busy", "Pool workers running an op of the class.", &asys_class_metrics::workers_busy},
    {"budget", "Pool worker budget of the class.", &asys_class_metrics::budget},
};

// A Prometheus label value: backslash, double quote and newline escaped.
void add_label_value(appender &a, const char *s) noexcept {
    for (; *s; ++s) {
        if (*s == '\\') a.add("\\\\");
        else if (*s == '"') a.add("\\\"");
        else if (*s == '\n') a.add("\\n");
        else a.add("%c", *s);
    }
}

void format_text(const asys_metrics &m, appender &a) noexcept {
    a.add("backend %s\nreason %s\nuring_error %d\n", backend_name(m.backend), m.reason, m.uring_error);
    a.add("workers %u\nworkers_max %u\nworkers_busy %u\nworkers_idle %u\niowq_workers %u\n", m.workers,
          m.workers_max, m.workers_busy, m.workers_idle, m.iowq_workers);
    for (unsigned k = 0; k <= ASYS_CLASS__COUNT; ++k) {
        const asys_class_metrics &c = k < ASYS_CLASS__COUNT ? m.cls[k] : m.total;
        const char *name = k < ASYS_CLASS__COUNT ? kSchedClasses[k].name : "total";
        for (const class_field &f : kClassFields)
            a.add("%s.%s %llu\n", name, f.name, static_cast<unsigned long long>(c.*f.field));
        for (const class_gauge &g : kClassGauges) a.add("%s.%s %u\n", name, g.name, c.*g.field);
        a.add("%s.latency_count %llu\n%s.latency_p50_ns %llu\n%s.latency_p99_ns %llu\n%s.latency_p999_ns %llu\n",
              name, static_cast<unsigned long long>(c.lat_count), name,
              static_cast<unsigned long long>(c.lat_p50_ns), name, static_cast<unsigned long long>(c.lat_p99_ns),
              name, static_cast<unsigned long long>(c.lat_p999_ns));
    }
}

void format_prometheus(const asys_metrics &m, appender &a) noexcept {
    for (const class_field &f : kClassFields) {
        const bool counter = f.type[0] == 'c';
        a.add("# HELP asys_ops_%s%s %s\n# TYPE asys_ops_%s%s %s\n", f.name, counter ? "_total" : "", f.help, f.name,
              counter ? "_total" : "", f.type);
        for (unsigned k = 0; k < ASYS_CLASS__COUNT; ++k)
            a.add("asys_ops_%s%s{class=\"%s\"} %llu\n", f.name, counter ? "_total" : "", kSchedClasses[k].name,
                  static_cast<unsigned long long>(m.cls[k].*f.field));
    }
    for (const class_gauge &g : kClassGauges) {
        a.add("# HELP asys_class_%s %s\n# TYPE asys_class_%s gauge\n", g.name, g.help, g.name);
        for (unsigned k = 0; k < ASYS_CLASS__COUNT; ++k)
            a.add("asys_class_%s{class=\"%s\"} %u\n", g.name, kSchedClasses[k].name, m.cls[k].*g.field);
    }
    a.add("# HELP asys_latency_seconds Submit-to-completion latency of punted ops (bucket upper bounds).\n"
          "# TYPE asys_latency_seconds summary\n");
    for (unsigned k = 0; k < ASYS_CLASS__COUNT; ++k) {
        const asys_class_metrics &c = m.cls[k];
        const char *n = kSchedClasses[k].name;
        const struct { const char *q; uint64_t ns; } qs[] = {
            {"0.5", c.lat_p50_ns}, {"0.99", c.lat_p99_ns}, {"0.999", c.lat_p999_ns}};
        for (const auto &q : qs) a.add("asys_latency_seconds{class=\"%s\",quantile=\"%s\"} %.9f\n", n, q.q, static_cast<double>(q.ns) / 1e9);
        a.add("asys_latency_seconds_sum{class=\"%s\"} %.9f\n", n, static_cast<double>(c.lat_sum_ns) / 1e9);
        a.add("asys_latency_seconds_count{class=\"%s\"} %llu\n", n, static_cast<unsigned long long>(c.lat_count));
    }
    a.add("# HELP asys_workers Pool worker threads by state.\n# TYPE asys_workers gauge\n");
    a.add("asys_workers{state=\"busy\"} %u\nasys_workers{state=\"idle\"} %u\n", m.workers_busy, m.workers_idle);
    a.add("# HELP asys_workers_max The bound on pool threads.\n# TYPE asys_workers_max gauge\nasys_workers_max %u\n",
          m.workers_max);
    a.add("# HELP asys_iowq_workers The io-wq worker cap registered with the ring (0: none).\n"
          "# TYPE asys_iowq_workers gauge\nasys_iowq_workers %u\n",
          m.iowq_workers);
    a.add("# HELP asys_backend_info The backend that runs, and why io_uring is not used.\n"
          "# TYPE asys_backend_info gauge\nasys_backend_info{backend=\"%s\",uring_error=\"%d\",reason=\"",
          backend_name(m.backend), m.uring_error);
    add_label_value(a, m.reason);
    a.add("\"} 1\n");
}

}  // namespace

long format_metrics(const asys_metrics &m, unsigned format, char *buf, size_t len) noexcept {
    if (format > ASYS_METRICS_PROMETHEUS) return -EINVAL;
    asys_metrics safe = m;
    safe.reason[sizeof safe.reason - 1] = '\0';  // a caller's struct may not end its text
    appender a(buf, len);
    if (format == ASYS_METRICS_TEXT) format_text(safe, a);
    else format_prometheus(safe, a);
    return a.used();
}

}  // namespace asys::internal
