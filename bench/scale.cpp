// The scale table: what a huge number of ops in flight costs, per backend.
#include <dirent.h>
#include <fcntl.h>
#include <malloc.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <vector>

#include <fmt/core.h>

#include "bench.hpp"

namespace bench {
namespace {

// 100,000 reads in flight on one pipe, released together: threads and the
// library's heap per op (mallinfo2 delta while they are all in flight).
struct scale_result {
    double bytes_per_op = 0;
    unsigned threads = 0;
    double ms = 0;
    std::string backend;
};

unsigned thread_count() {
    unsigned n = 0;
    if (DIR *d = opendir("/proc/self/task")) {
        while (dirent *e = readdir(d)) n += e->d_name[0] != '.';
        closedir(d);
    }
    return n;
}

scale_result scale_run(unsigned backend, unsigned ops) {
    scale_result r;
    auto heap = [] {
        struct mallinfo2 mi = mallinfo2();
        return mi.uordblks + mi.hblkhd;
    };
    const size_t h0 = heap();
    const unsigned threads0 = thread_count();
    auto t0 = clk::now();
    asys_params p{};
    p.backend = backend;
    p.max_inflight = ops;
    asys_ctx *ctx;
    if (int rc = asys_ctx_create(&p, &ctx); rc < 0) die("asys_ctx_create", -rc);
    asys_info info{};
    asys_ctx_info(ctx, &info);
    r.backend = info.reason;
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) die("pipe2", errno);
    fcntl(fds[1], F_SETPIPE_SZ, 1 << 20);
    std::vector<char> sink(ops);
    for (unsigned i = 0; i < ops; ++i) {
        asys_op op;
        asys_prep_read(&op, fds[0], &sink[i], 1);
        op.flags = ASYS_F_ASYNC;
        if (int rc = asys_submit(ctx, &op); rc < 0) die("asys_submit (scale)", -rc);
    }
    r.bytes_per_op = static_cast<double>(heap() - h0) / ops;
    r.threads = thread_count() - threads0;
    std::vector<char> data(ops, 's');
    for (size_t off = 0; off < data.size();) {
        ssize_t n = write(fds[1], data.data() + off, data.size() - off);
        if (n <= 0) die("write (scale)", errno);
        off += static_cast<size_t>(n);
    }
    std::vector<asys_cqe> cqes(4096);
    for (unsigned got = 0; got < ops;) {
        int n = asys_wait(ctx, 1, nullptr, cqes.data(), 4096);
        if (n < 0) die("asys_wait (scale)", -n);
        got += static_cast<unsigned>(n);
    }
    r.ms = ms_since(t0);
    asys_ctx_destroy(ctx, ASYS_DESTROY_DRAIN);
    close(fds[0]);
    close(fds[1]);
    return r;
}

}  // namespace

void scale_table() {
    constexpr unsigned kScaleOps = 100000;
    fmt::print("\nscale: {} reads in flight at once (one pipe, released together)\n\n", kScaleOps);
    fmt::print("{:<24} {:>14} {:>13} {:>10} {:>10}\n", "backend", "library B/op", "threads added", "total ms",
               "CPU ns/op");
    fmt::print("{:-<24} {:->14} {:->13} {:->10} {:->10}\n", "", "", "", "", "");
    double pool_rate = 0;
    for (unsigned b : {unsigned{ASYS_BACKEND_POOL}, unsigned{ASYS_BACKEND_AUTO}}) {
        const double c0 = cpu_ns_now();
        scale_result r = scale_run(b, kScaleOps);
        const double cpu = (cpu_ns_now() - c0) / kScaleOps;
        const char *name = b == ASYS_BACKEND_POOL ? "pool" : "io_uring + pool";
        fmt::print("{:<24} {:>14.1f} {:>13} {:>10.0f} {:>10.0f}\n", name, r.bytes_per_op, r.threads, r.ms, cpu);
        const double rate = r.ms > 0 ? kScaleOps * 1000.0 / r.ms : 0;
        if (b == ASYS_BACKEND_POOL) pool_rate = rate;
        record({"100k reads in flight", std::string("asys ") + name, rate, cpu, pool_rate > 0 ? rate / pool_rate : 0,
                "asys pool"});
    }
}

}  // namespace bench
