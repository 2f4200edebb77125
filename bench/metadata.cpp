// open + statx + close of many small files (a directory of 4 KiB files, all
// cached): the plain syscalls, raw liburing (QD1, one op at a time, as the
// fd of the open is needed by the close) and asys on each backend.
#include <fcntl.h>
#include <liburing.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <functional>
#include <string>
#include <vector>

#include <fmt/core.h>

#include "bench.hpp"

namespace bench {
namespace {

struct small_files {
    int dirfd = -1;
    std::vector<std::string> names;
};

double plain(const small_files &f) {
    const auto t0 = clk::now();
    struct statx sx;
    for (const auto &n : f.names) {
        int fd = openat(f.dirfd, n.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) die("openat", errno);
        if (statx(fd, "", AT_EMPTY_PATH, STATX_BASIC_STATS, &sx) != 0) die("statx", errno);
        close(fd);
    }
    return static_cast<double>(f.names.size()) / seconds_since(t0);
}

long ring_op(io_uring &ring) {
    io_uring_submit_and_wait(&ring, 1);
    io_uring_cqe *cqe;
    if (io_uring_wait_cqe(&ring, &cqe) < 0) die("io_uring_wait_cqe", EIO);
    long res = cqe->res;
    io_uring_cqe_seen(&ring, cqe);
    return res;
}

double raw_uring(const small_files &f) {
    io_uring ring;
    if (io_uring_queue_init(8, &ring, 0) < 0) return 0;
    struct statx sx;
    const auto t0 = clk::now();
    for (const auto &n : f.names) {
        io_uring_prep_openat(io_uring_get_sqe(&ring), f.dirfd, n.c_str(), O_RDONLY | O_CLOEXEC, 0);
        long fd = ring_op(ring);
        if (fd < 0) die("io_uring openat", static_cast<int>(-fd));
        io_uring_prep_statx(io_uring_get_sqe(&ring), static_cast<int>(fd), "", AT_EMPTY_PATH, STATX_BASIC_STATS, &sx);
        if (long r = ring_op(ring); r < 0) die("io_uring statx", static_cast<int>(-r));
        io_uring_prep_close(io_uring_get_sqe(&ring), static_cast<int>(fd));
        ring_op(ring);
    }
    const double rate = static_cast<double>(f.names.size()) / seconds_since(t0);
    io_uring_queue_exit(&ring);
    return rate;
}

long asys_run(asys_ctx *ctx, asys_op op) {
    long res = 0;
    op.ret_ptr = &res;
    int rc = asys_submit(ctx, &op);
    if (rc == ASYS_DONE) return res;
    if (rc < 0) die("asys_submit (metadata)", -rc);
    asys_cqe cqe;
    if (int n = asys_wait(ctx, 1, nullptr, &cqe, 1); n != 1) die("asys_wait (metadata)", n < 0 ? -n : EIO);
    return cqe.res;
}

double with_asys(const small_files &f, asys_ctx *ctx) {
    struct statx sx;
    const auto t0 = clk::now();
    for (const auto &n : f.names) {
        asys_op op;
        asys_prep_openat(&op, f.dirfd, n.c_str(), O_RDONLY | O_CLOEXEC, 0);
        long fd = asys_run(ctx, op);
        if (fd < 0) die("asys openat", static_cast<int>(-fd));
        asys_prep_statx(&op, static_cast<int>(fd), "", AT_EMPTY_PATH, STATX_BASIC_STATS, &sx);
        if (long r = asys_run(ctx, op); r < 0) die("asys statx", static_cast<int>(-r));
        asys_prep_close(&op, static_cast<int>(fd));
        asys_run(ctx, op);
    }
    return static_cast<double>(f.names.size()) / seconds_since(t0);
}

}  // namespace

void metadata_table(const options &o) {
    small_files f;
    const std::string dir = o.file + ".small";
    const size_t count = o.full ? 20000 : 2000;
    mkdir(dir.c_str(), 0700);
    f.dirfd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (f.dirfd < 0) die("open " + dir, errno);
    std::vector<char> data(4096, 'm');
    for (size_t i = 0; i < count; ++i) {
        f.names.push_back(fmt::format("f{:06}", i));
        int fd = openat(f.dirfd, f.names.back().c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0 || write(fd, data.data(), data.size()) != 4096) die("create small file", errno);
        close(fd);
    }
    plain(f);  // warm the dentry and inode caches
    struct row_fn {
        const char *name;
        std::function<double()> fn;
        std::vector<rate_cpu> runs;
    };
    std::vector<row_fn> rows = {
        {"plain syscalls", [&] { return plain(f); }, {}},
        {"raw liburing QD1", [&] { return raw_uring(f); }, {}},
        {"asys (auto backend)", [&] { return with_asys(f, g_ctx); }, {}},
        {"asys (pool backend)", [&] { return with_asys(f, g_pool_ctx); }, {}},
    };
    for (unsigned r = 0; r < o.rounds; ++r)  // interleaved
        for (auto &row : rows) row.runs.push_back(with_cpu(row.fn));
    auto med = [](std::vector<rate_cpu> v) {
        std::sort(v.begin(), v.end(), [](const rate_cpu &a, const rate_cpu &b) { return a.per_s < b.per_s; });
        return v[v.size() / 2];
    };
    const double base = med(rows[0].runs).per_s;
    fmt::print("\nopen + statx + close of {} small cached files (files/s, median of {} interleaved rounds)\n\n",
               count, o.rounds);
    fmt::print("{:<28} {:>10} {:>10} {:>10}\n", "method", "files/s", "CPU ns/op", "x plain");
    fmt::print("{:-<28} {:->10} {:->10} {:->10}\n", "", "", "", "");
    for (auto &row : rows) {
        rate_cpu m = med(row.runs);
        const double ratio = base > 0 ? m.per_s / base : 0;
        fmt::print("{:<28} {:>10.0f} {:>10.0f} {:>10.2f}\n", row.name, m.per_s, m.cpu_ns, ratio);
        record({"open + statx + close", row.name, m.per_s, m.cpu_ns, ratio, "plain syscalls"});
    }
    for (const auto &n : f.names) unlinkat(f.dirfd, n.c_str(), 0);
    close(f.dirfd);
    rmdir(dir.c_str());
}

}  // namespace bench
