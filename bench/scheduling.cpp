// Scheduling classes: with 64 long generic calls in flight (nanosleep of
// 3 s each), the latency of one cold 4 KiB read and the p99 of cached
// reads, beside the same figures idle; asys on the pool backend, asys on
// the ring, and libuv (uv_queue_work sleepers, then uv_fs_read).
// A cold read is a page dropped from the cache first with
// posix_fadvise(DONTNEED) (the file is clean, so no root is needed).
#include <fcntl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include <algorithm>
#include <cerrno>
#include <random>
#include <string>
#include <vector>

#include <fmt/core.h>

#include "bench.hpp"

namespace bench {
namespace {

constexpr unsigned kSleepers = 64;
constexpr long kSleepS = 3;
constexpr unsigned kColdSamples = 15;
constexpr size_t kCachedSamples = 20000;
constexpr off_t kColdMiB = 16;
/// libuv: how long a read may wait behind the sleepers before it is
/// reported as "more than" this and cancelled.
constexpr double kUvLimitMs = 3500;

struct sched_result {
    double cold_ms = 0;         // median cold read, submit to completion
    double cached_p99_ns = 0;   // cached reads
    double cached_cpu_ns = 0;   // CPU time of the submitting thread per cached read
    bool cold_timed_out = false, cached_timed_out = false;
};

struct cold_pages {
    int fd = -1;
    std::mt19937_64 rng{11};
    // The whole file is dropped, not just the page: the page cache may hold
    // it in large folios, which a 4 KiB DONTNEED cannot split. (The file is
    // POSIX_FADV_RANDOM: no readahead, so each cold read reads one page.)
    off_t next_dropped() {
        posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        return static_cast<off_t>(rng() % (static_cast<uint64_t>(kColdMiB) << 8)) * 4096;
    }
};

double thread_cpu_ns() {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) * 1e9 + static_cast<double>(ts.tv_nsec);
}

double pct(std::vector<double> v, double q) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    return v[std::min(v.size() - 1, static_cast<size_t>(static_cast<double>(v.size()) * q))];
}

// Waits for the completion with user_data `ud` (others are sleepers).
void wait_for(asys_ctx *ctx, uint64_t ud) {
    for (;;) {
        asys_cqe c;
        if (asys_wait(ctx, 1, nullptr, &c, 1) != 1) die("asys_wait", EIO);
        if (c.user_data == ud) return;
    }
}

sched_result asys_run(unsigned backend, bool loaded, workload &w, cold_pages &cold) {
    asys_params p{};
    p.backend = backend;
    asys_ctx *ctx;
    if (int rc = asys_ctx_create(&p, &ctx); rc < 0) die("asys_ctx_create", -rc);
    static const struct timespec sleep_for{kSleepS, 0};
    if (loaded)
        for (unsigned i = 0; i < kSleepers; ++i) {
            const uint64_t a[6] = {reinterpret_cast<uint64_t>(&sleep_for), 0, 0, 0, 0, 0};
            asys_op op;
            asys_prep_syscall(&op, SYS_nanosleep, a);
            op.user_data = 1000 + i;
            if (int rc = asys_submit(ctx, &op); rc < 0) die("asys_submit sleeper", -rc);
        }
    sched_result r;
    std::vector<double> cold_ms;
    for (unsigned i = 0; i < kColdSamples; ++i) {
        long res;
        asys_op op;
        asys_prep_pread(&op, cold.fd, w.buf[1], 4096, cold.next_dropped());
        op.ret_ptr = &res;
        op.user_data = 1;
        const auto t0 = clk::now();
        const int rc = asys_submit(ctx, &op);
        if (rc < 0) die("asys_submit cold", -rc);
        if (rc == 0) wait_for(ctx, 1);
        cold_ms.push_back(ms_since(t0));
        if (res != 4096) die("cold read", res < 0 ? static_cast<int>(-res) : EIO);
    }
    r.cold_ms = pct(cold_ms, 0.5);
    std::vector<double> lat;
    lat.reserve(kCachedSamples);
    const double cpu0 = thread_cpu_ns();
    for (size_t i = 0; i < kCachedSamples; ++i) {
        long res;
        asys_op op;
        asys_prep_pread(&op, w.fd, w.buf[0], 4096, off_at(w, i));
        op.ret_ptr = &res;
        op.user_data = 2;
        const auto t0 = clk::now();
        const int rc = asys_submit(ctx, &op);
        if (rc < 0) die("asys_submit cached", -rc);
        if (rc == 0) wait_for(ctx, 2);
        lat.push_back(ns_since(t0));
    }
    r.cached_cpu_ns = (thread_cpu_ns() - cpu0) / static_cast<double>(kCachedSamples);
    r.cached_p99_ns = pct(lat, 0.99);
    asys_ctx_destroy(ctx, ASYS_DESTROY_CANCEL);  // interrupts the sleepers
    return r;
}

// libuv: the sleepers fill its threadpool; each read waits behind them, up
// to kUvLimitMs (then it is cancelled and reported as more than that).
sched_result libuv_run(bool loaded, workload &w, cold_pages &cold) {
    struct sleeper {
        uv_work_t req;
        bool done;
    };
    static sleeper sleepers[kSleepers];
    unsigned sleeping = 0;
    if (loaded)
        for (auto &s : sleepers) {
            s.done = false;
            s.req.data = &sleeping;
            ++sleeping;
            uv_queue_work(
                g_loop, &s.req,
                [](uv_work_t *) {
                    const struct timespec t{kSleepS, 0};
                    nanosleep(&t, nullptr);
                },
                [](uv_work_t *q, int) { --*static_cast<unsigned *>(q->data); });
        }
    // One read; returns its latency in ms, or a negative value if it was
    // still waiting after kUvLimitMs (it is then cancelled).
    auto one_read = [&](int fd, char *buf, off_t off, double limit_ms) {
        uv_fs_t req;
        bool done = false, late = false;
        req.data = &done;
        uv_timer_t limit;
        uv_timer_init(g_loop, &limit);
        limit.data = &late;
        uv_buf_t b = uv_buf_init(buf, 4096);
        const auto t0 = clk::now();
        uv_fs_read(g_loop, &req, fd, &b, 1, off, [](uv_fs_t *q) { *static_cast<bool *>(q->data) = true; });
        uv_timer_start(&limit, [](uv_timer_t *t) { *static_cast<bool *>(t->data) = true; },
                       static_cast<uint64_t>(limit_ms), 0);
        while (!done && !late) uv_run(g_loop, UV_RUN_ONCE);
        const double ms = ms_since(t0);
        uv_timer_stop(&limit);
        uv_close(reinterpret_cast<uv_handle_t *>(&limit), nullptr);
        uv_run(g_loop, UV_RUN_NOWAIT);  // finishes the close
        if (!done) {
            uv_cancel(reinterpret_cast<uv_req_t *>(&req));
            while (!done) uv_run(g_loop, UV_RUN_ONCE);
            uv_fs_req_cleanup(&req);
            return -1.0;
        }
        uv_fs_req_cleanup(&req);
        return ms;
    };
    sched_result r;
    const unsigned cold_n = loaded ? 1 : kColdSamples;  // loaded: each waits seconds
    std::vector<double> cold_ms;
    for (unsigned i = 0; i < cold_n; ++i) {
        const double ms = one_read(cold.fd, w.buf[1], cold.next_dropped(), kUvLimitMs);
        if (ms < 0) r.cold_timed_out = true;
        else cold_ms.push_back(ms);
    }
    r.cold_ms = r.cold_timed_out ? kUvLimitMs : pct(cold_ms, 0.5);
    std::vector<double> lat;
    const double cpu0 = thread_cpu_ns();
    const size_t cached_n = loaded ? 1 : kCachedSamples;
    for (size_t i = 0; i < cached_n; ++i) {
        const double ms = one_read(w.fd, w.buf[0], off_at(w, i), kUvLimitMs);
        if (ms < 0) {
            r.cached_timed_out = true;
            break;
        }
        lat.push_back(ms * 1e6);
    }
    r.cached_cpu_ns = (thread_cpu_ns() - cpu0) / static_cast<double>(cached_n);
    r.cached_p99_ns = r.cached_timed_out ? kUvLimitMs * 1e6 : pct(lat, 0.99);
    for (auto &s : sleepers) uv_cancel(reinterpret_cast<uv_req_t *>(&s.req));  // the queued ones
    while (sleeping) uv_run(g_loop, UV_RUN_ONCE);                            // the running ones end
    return r;
}

std::string ms_cell(double ms, bool timed_out) {
    return timed_out ? fmt::format(">{:.0f}ms", ms) : fmt::format("{:.2f}ms", ms);
}
std::string ns_cell(double ns, bool timed_out) {
    return timed_out ? fmt::format(">{:.0f}ms", ns / 1e6) : fmt::format("{:.0f}ns", ns);
}

}  // namespace

void scheduling_table(const options &o, workload &w, bool have_uring) {
    cold_pages cold;
    const std::string path = o.file + ".sched";
    cold.fd = open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (cold.fd < 0) die("open " + path, errno);
    std::vector<char> chunk(1 << 20, 's');
    for (off_t off = 0; off < (kColdMiB << 20); off += 1 << 20)
        if (pwrite(cold.fd, chunk.data(), chunk.size(), off) < 0) die("write " + path, errno);
    fdatasync(cold.fd);  // clean pages: DONTNEED drops them
    posix_fadvise(cold.fd, 0, 0, POSIX_FADV_RANDOM);

    struct row {
        const char *name;
        sched_result idle, loaded;
    };
    std::vector<row> rows;
    rows.push_back({"asys pool", asys_run(ASYS_BACKEND_POOL, false, w, cold),
                    asys_run(ASYS_BACKEND_POOL, true, w, cold)});
    if (have_uring)
        rows.push_back({"asys ring", asys_run(ASYS_BACKEND_URING, false, w, cold),
                        asys_run(ASYS_BACKEND_URING, true, w, cold)});
    rows.push_back({"libuv", libuv_run(false, w, cold), libuv_run(true, w, cold)});

    fmt::print("\nscheduling: {} generic nanosleep({} s) in flight, then cold 4 KiB reads (median of {}) and "
               "cached 4 KiB reads (p99 of {})\n\n",
               kSleepers, kSleepS, kColdSamples, kCachedSamples);
    fmt::print("{:<10} {:>10} {:>11} {:>7}   {:>11} {:>11} {:>7}   {:>9} {:>9}\n", "", "cold idle", "cold loaded",
               "ratio", "cached p99", "loaded p99", "ratio", "CPU/op", "loaded");
    for (const row &r : rows) {
        const bool t = r.loaded.cold_timed_out || r.loaded.cached_timed_out;
        fmt::print("{:<10} {:>10} {:>11} {:>6.2f}x   {:>11} {:>11} {:>6.2f}x   {:>7.0f}ns {:>7.0f}ns{}\n", r.name,
                   ms_cell(r.idle.cold_ms, false), ms_cell(r.loaded.cold_ms, r.loaded.cold_timed_out),
                   r.loaded.cold_ms / r.idle.cold_ms, ns_cell(r.idle.cached_p99_ns, false),
                   ns_cell(r.loaded.cached_p99_ns, r.loaded.cached_timed_out),
                   r.loaded.cached_p99_ns / r.idle.cached_p99_ns, r.idle.cached_cpu_ns, r.loaded.cached_cpu_ns,
                   t ? "  (>: still waiting, cancelled)" : "");
    }
    close(cold.fd);
    unlink(path.c_str());
}

}  // namespace bench
