// Head-of-line blocking: the latency of single cached reads, idle and while
// 64 cold reads are in flight, for asys (the cached read stays inline) and
// libuv (the cached read queues behind the cold ones in the threadpool).
#include <fcntl.h>
#include <unistd.h>
#include <uv.h>

#include <algorithm>
#include <cerrno>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include <fmt/core.h>

#include "bench.hpp"

namespace bench {
namespace {

// Latency of single cached reads, idle and while 64 cold reads are in
// flight. Cold = dropped from the page cache with posix_fadvise(DONTNEED).
struct lat_result {
    double p50 = 0, p99 = 0;
    size_t samples = 0;
    size_t cold_done = 0;
};

lat_result summarize(std::vector<double> v, size_t cold_done) {
    lat_result r;
    std::sort(v.begin(), v.end());
    r.samples = v.size();
    if (!v.empty()) {
        r.p50 = v[v.size() / 2];
        r.p99 = v[std::min(v.size() - 1, v.size() * 99 / 100)];
    }
    r.cold_done = cold_done;
    return r;
}

struct cold_file {
    int fd = -1;
    off_t pages = 0;
    std::mt19937_64 rng{7};
    off_t next() { return static_cast<off_t>(rng() % static_cast<uint64_t>(pages)) * 4096; }
};

constexpr size_t kLatSamples = 20000;
constexpr double kLatBudgetMs = 1500;
constexpr unsigned kCold = 64;

lat_result asys_latency(workload &w, cold_file *cold) {
    asys_ctx *ctx;
    if (int rc = asys_ctx_create(nullptr, &ctx); rc < 0) die("asys_ctx_create", -rc);
    static char cbuf[kCold][4096];
    long cres[kCold];
    auto submit_cold = [&](unsigned k) {
        asys_op op;
        asys_prep_pread(&op, cold->fd, cbuf[k], 4096, cold->next());
        op.ret_ptr = &cres[k];
        op.user_data = k;
        op.flags = ASYS_F_CQE_ALWAYS;
        if (int rc = asys_submit(ctx, &op); rc < 0) die("asys_submit cold", -rc);
    };
    if (cold)
        for (unsigned k = 0; k < kCold; ++k) submit_cold(k);
    std::vector<double> lat;
    lat.reserve(kLatSamples);
    size_t cold_done = 0;
    const auto t_end = after_ms(clk::now(), kLatBudgetMs);
    for (size_t i = 0; i < kLatSamples && clk::now() < t_end; ++i) {
        long res;
        asys_op op;
        asys_prep_pread(&op, w.fd, w.buf[0], 4096, off_at(w, i));
        op.ret_ptr = &res;
        op.user_data = ~0ull;
        auto t0 = clk::now();
        int rc = asys_submit(ctx, &op);
        if (rc == 0) {  // not inline: wait for it (other entries are cold reads)
            for (bool mine = false; !mine;) {
                asys_cqe c;
                if (asys_wait(ctx, 1, nullptr, &c, 1) != 1) die("asys_wait", EIO);
                if (c.user_data == ~0ull) mine = true;
                else {
                    cold_done += c.path != ASYS_PATH_INLINE;
                    submit_cold(static_cast<unsigned>(c.user_data));
                }
            }
        } else if (rc < 0) {
            die("asys_submit", -rc);
        }
        lat.push_back(ns_since(t0));
        if (cold) {  // keep 64 cold reads in flight
            asys_cqe cs[kCold];
            int n = asys_peek(ctx, cs, kCold);
            for (int k = 0; k < n; ++k) {
                cold_done += cs[k].path != ASYS_PATH_INLINE;
                submit_cold(static_cast<unsigned>(cs[k].user_data));
            }
        }
    }
    asys_ctx_destroy(ctx, ASYS_DESTROY_CANCEL);
    return summarize(std::move(lat), cold_done);
}

lat_result libuv_latency(workload &w, cold_file *cold) {
    struct cold_req {
        uv_fs_t req;
        cold_file *cf;
        size_t *done;
        char buf[4096];
        bool stop;
    };
    static cold_req reqs[kCold];
    size_t cold_done = 0;
    static bool stopping;
    stopping = false;
    static void (*resubmit)(cold_req *);
    resubmit = [](cold_req *r) {
        uv_buf_t b = uv_buf_init(r->buf, 4096);
        uv_fs_read(g_loop, &r->req, r->cf->fd, &b, 1, r->cf->next(), [](uv_fs_t *q) {
            auto *cr = reinterpret_cast<cold_req *>(q);
            uv_fs_req_cleanup(q);
            ++*cr->done;
            if (!stopping) resubmit(cr);
        });
    };
    if (cold)
        for (auto &r : reqs) {
            r.cf = cold;
            r.done = &cold_done;
            resubmit(&r);
        }
    std::vector<double> lat;
    lat.reserve(kLatSamples);
    const auto t_end = after_ms(clk::now(), kLatBudgetMs);
    for (size_t i = 0; i < kLatSamples && clk::now() < t_end; ++i) {
        uv_fs_t req;
        bool done = false;
        req.data = &done;
        uv_buf_t b = uv_buf_init(w.buf[0], 4096);
        auto t0 = clk::now();
        uv_fs_read(g_loop, &req, w.fd, &b, 1, off_at(w, i), [](uv_fs_t *r) {
            *static_cast<bool *>(r->data) = true;
        });
        while (!done) uv_run(g_loop, UV_RUN_ONCE);
        lat.push_back(ns_since(t0));
        uv_fs_req_cleanup(&req);
    }
    stopping = true;
    uv_run(g_loop, UV_RUN_DEFAULT);  // let the cold reads finish
    return summarize(std::move(lat), cold_done);
}

}  // namespace

void head_of_line_table(const options &o, workload &w) {
    cold_file cf;
    std::string cpath = o.file + ".cold";
    cf.fd = open(cpath.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (cf.fd < 0) die("open " + cpath, errno);
    const off_t csize = static_cast<off_t>(o.cold_mib) << 20;
    std::vector<char> chunk(1 << 20, 'c');
    for (off_t off = 0; off < csize; off += 1 << 20)
        if (pwrite(cf.fd, chunk.data(), chunk.size(), off) < 0) die("write cold", errno);
    fdatasync(cf.fd);
    cf.pages = csize / 4096;
    auto drop = [&] { posix_fadvise(cf.fd, 0, 0, POSIX_FADV_DONTNEED); };
    drop();
    lat_result ai = asys_latency(w, nullptr);
    drop();
    lat_result al = asys_latency(w, &cf);
    lat_result ui = libuv_latency(w, nullptr);
    drop();
    lat_result ul = libuv_latency(w, &cf);
    fmt::print("\nhead-of-line: one cached 4 KiB read, idle vs {} cold reads in flight ({} MiB "
               "cold file)\n\n", kCold, o.cold_mib);
    fmt::print("{:<10} {:>10} {:>10} {:>12} {:>12} {:>10} {:>11}\n", "library", "idle p50",
               "idle p99", "loaded p50", "loaded p99", "p99 ratio", "bg reads");
    for (auto [name, i, l] : {std::tuple{"asys", ai, al}, std::tuple{"libuv", ui, ul}})
        fmt::print("{:<10} {:>8.0f}ns {:>8.0f}ns {:>10.0f}ns {:>10.0f}ns {:>9.2f}x {:>11}\n",
                   name, i.p50, i.p99, l.p50, l.p99, l.p99 / i.p99, l.cold_done);
    close(cf.fd);
    unlink(cpath.c_str());
}

}  // namespace bench
