// O_DIRECT 4 KiB random reads on a file written once with real data (kept
// for reuse): at queue depth 32, raw liburing vs asys on each backend; and 32
// chains of 4 linked reads, raw IOSQE_IO_LINK vs asys chain ops.
#include <fcntl.h>
#include <liburing.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include <fmt/core.h>

#include "asys/syslet.h"
#include "bench.hpp"

namespace bench {
namespace {

// 4 KiB random reads at queue depth 32 on an O_DIRECT file: raw liburing
// loop vs asys (ring backend) vs asys (pool backend), same file, same run.
struct direct_bench {
    int fd = -1;
    off_t blocks = 0;
    std::mt19937_64 rng{99};
    char *bufs = nullptr;  // 32 x 4 KiB, 4 KiB aligned
    off_t next() { return static_cast<off_t>(rng() % static_cast<uint64_t>(blocks)) * 4096; }
};

constexpr unsigned kQD = 32;

double direct_raw_uring(direct_bench &d, double ms) {
    io_uring ring;
    if (io_uring_queue_init(kQD * 2, &ring, 0) < 0) return 0;
    size_t done = 0;
    for (unsigned k = 0; k < kQD; ++k) {
        io_uring_sqe *sqe = io_uring_get_sqe(&ring);
        io_uring_prep_read(sqe, d.fd, d.bufs + k * 4096, 4096, static_cast<__u64>(d.next()));
        io_uring_sqe_set_data64(sqe, k);
    }
    io_uring_submit(&ring);
    const auto t0 = clk::now();
    const auto end = after_ms(t0, ms);
    while (clk::now() < end) {
        io_uring_cqe *cqe;
        if (io_uring_wait_cqe(&ring, &cqe) < 0) break;
        unsigned k = static_cast<unsigned>(cqe->user_data);
        if (cqe->res != 4096) die("raw O_DIRECT read", cqe->res < 0 ? -cqe->res : EIO);
        io_uring_cqe_seen(&ring, cqe);
        ++done;
        io_uring_sqe *sqe = io_uring_get_sqe(&ring);
        io_uring_prep_read(sqe, d.fd, d.bufs + k * 4096, 4096, static_cast<__u64>(d.next()));
        io_uring_sqe_set_data64(sqe, k);
        io_uring_submit(&ring);
    }
    double secs = seconds_since(t0);
    io_uring_queue_exit(&ring);  // cancels what is still in flight
    return static_cast<double>(done) / secs;
}

double direct_asys(direct_bench &d, double ms, unsigned backend, uint32_t flags = 0) {
    asys_params p{};
    p.backend = backend;
    asys_ctx *ctx;
    if (asys_ctx_create(&p, &ctx) < 0) return 0;
    long res[kQD];
    auto submit = [&](unsigned k) {
        asys_op op;
        asys_prep_pread(&op, d.fd, d.bufs + k * 4096, 4096, d.next());
        op.user_data = k;
        op.ret_ptr = &res[k];
        op.flags = ASYS_F_CQE_ALWAYS | flags;
        if (int rc = asys_submit(ctx, &op); rc < 0) die("asys O_DIRECT submit", -rc);
    };
    for (unsigned k = 0; k < kQD; ++k) submit(k);
    size_t done = 0;
    const auto t0 = clk::now();
    const auto end = after_ms(t0, ms);
    asys_cqe cqes[kQD];
    while (clk::now() < end) {
        int n = asys_wait(ctx, 1, nullptr, cqes, kQD);
        if (n < 0) die("asys_wait", -n);
        for (int i = 0; i < n; ++i) {
            if (cqes[i].res != 4096) die("asys O_DIRECT read", cqes[i].res < 0 ? static_cast<int>(-cqes[i].res) : EIO);
            ++done;
            submit(static_cast<unsigned>(cqes[i].user_data));
        }
    }
    double secs = seconds_since(t0);
    asys_ctx_destroy(ctx, ASYS_DESTROY_DRAIN);
    return static_cast<double>(done) / secs;
}

// 32 chains of 4 O_DIRECT reads in flight (a chain starts again when it
// ends): raw liburing with linked SQEs vs asys chain ops (auto: the chain's
// remainder becomes linked SQEs) vs the interpreter on the pool.
constexpr unsigned kChains = 32, kChainLen = 4;

double direct_chains_raw(direct_bench &d, double ms) {
    io_uring ring;
    if (io_uring_queue_init(kChains * kChainLen * 2, &ring, 0) < 0) return 0;
    auto queue = [&](unsigned c) {
        for (unsigned k = 0; k < kChainLen; ++k) {
            io_uring_sqe *sqe = io_uring_get_sqe(&ring);
            io_uring_prep_read(sqe, d.fd, d.bufs + (c * kChainLen + k) * 4096, 4096, static_cast<__u64>(d.next()));
            if (k + 1 < kChainLen) sqe->flags |= IOSQE_IO_LINK;
            io_uring_sqe_set_data64(sqe, c * kChainLen + k);
        }
    };
    for (unsigned c = 0; c < kChains; ++c) queue(c);
    io_uring_submit(&ring);
    size_t done = 0;
    const auto t0 = clk::now();
    const auto end = after_ms(t0, ms);
    while (clk::now() < end) {
        io_uring_cqe *cqe;
        if (io_uring_wait_cqe(&ring, &cqe) < 0) break;
        const auto ud = static_cast<unsigned>(cqe->user_data);
        if (cqe->res != 4096) die("raw linked O_DIRECT read", cqe->res < 0 ? -cqe->res : EIO);
        io_uring_cqe_seen(&ring, cqe);
        ++done;
        if (ud % kChainLen == kChainLen - 1) {
            queue(ud / kChainLen);
            io_uring_submit(&ring);
        }
    }
    double secs = seconds_since(t0);
    io_uring_queue_exit(&ring);
    return static_cast<double>(done) / secs;
}

double direct_chains_asys(direct_bench &d, double ms, unsigned backend) {
    asys_params p{};
    p.backend = backend;
    asys_ctx *ctx;
    if (asys_ctx_create(&p, &ctx) < 0) return 0;
    struct one_chain {
        syslet_uatom a[kChainLen];
        unsigned long fd, len = 4096, buf[kChainLen], off[kChainLen];
        long ret[kChainLen];
    };
    std::vector<one_chain> ch(kChains);
    auto submit = [&](unsigned c) {
        one_chain &x = ch[c];
        for (unsigned k = 0; k < kChainLen; ++k) x.off[k] = static_cast<unsigned long>(d.next());
        asys_op op;
        asys_prep_chain(&op, x.a, nullptr);
        op.user_data = c;
        op.flags = ASYS_F_CQE_ALWAYS;
        if (int rc = asys_submit(ctx, &op); rc < 0) die("asys chain submit", -rc);
    };
    for (unsigned c = 0; c < kChains; ++c) {
        one_chain &x = ch[c];
        x.fd = static_cast<unsigned long>(d.fd);
        for (unsigned k = 0; k < kChainLen; ++k) {
            x.buf[k] = reinterpret_cast<unsigned long>(d.bufs + (c * kChainLen + k) * 4096);
            x.a[k] = syslet_uatom{};
            x.a[k].nr = SYS_pread64;
            x.a[k].flags = SYSLET_STOP_ON_NEGATIVE;
            x.a[k].ret_ptr = &x.ret[k];
            x.a[k].arg_ptr[0] = &x.fd;
            x.a[k].arg_ptr[1] = &x.buf[k];
            x.a[k].arg_ptr[2] = &x.len;
            x.a[k].arg_ptr[3] = &x.off[k];
            x.a[k].next = k + 1 < kChainLen ? &x.a[k + 1] : nullptr;
        }
        submit(c);
    }
    size_t done = 0;
    const auto t0 = clk::now();
    const auto end = after_ms(t0, ms);
    asys_cqe cqes[kChains];
    while (clk::now() < end) {
        int n = asys_wait(ctx, 1, nullptr, cqes, kChains);
        if (n < 0) die("asys_wait", -n);
        for (int i = 0; i < n; ++i) {
            if (cqes[i].res != 4096) die("asys chain O_DIRECT read", cqes[i].res < 0 ? static_cast<int>(-cqes[i].res) : EIO);
            done += kChainLen;
            submit(static_cast<unsigned>(cqes[i].user_data));
        }
    }
    double secs = seconds_since(t0);
    asys_ctx_destroy(ctx, ASYS_DESTROY_DRAIN);
    return static_cast<double>(done) / secs;
}

}  // namespace

void direct_tables(const options &o, bool have_uring) {
    direct_bench d;
    std::string path = o.direct_file.empty() ? "/var/tmp/asys-bench-direct.img" : o.direct_file;
    const off_t dsize = static_cast<off_t>(o.direct_mib) << 20;
    int wfd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (wfd < 0) die("open " + path, errno);
    struct stat dst;
    fstat(wfd, &dst);
    if (dst.st_size != dsize) {  // real data: unwritten extents would not touch the disk
        fmt::print(stderr, "asys-bench: writing {} MiB O_DIRECT test file {} (kept for reuse)\n",
                   o.direct_mib, path);
        if (ftruncate(wfd, 0) != 0) die("ftruncate", errno);
        std::vector<char> chunk(4 << 20);
        std::mt19937_64 fill(1);
        for (auto &ch : chunk) ch = static_cast<char>(fill());
        for (off_t off = 0; off < dsize; off += static_cast<off_t>(chunk.size()))
            if (pwrite(wfd, chunk.data(), chunk.size(), off) < 0) die("write", errno);
        fsync(wfd);
    }
    close(wfd);
    d.fd = open(path.c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC);
    if (d.fd < 0) die("open O_DIRECT " + path, errno);
    d.blocks = dsize / 4096;
    void *mem = nullptr;
    if (posix_memalign(&mem, 4096, kChains * kChainLen * 4096) != 0) die("posix_memalign", ENOMEM);
    d.bufs = static_cast<char *>(mem);
    const double kMs = o.full ? 1200 : 300;
    std::vector<rate_cpu> raw, ring, ring_async, pool;
    for (int r = 0; r < 2; ++r) {  // interleaved
        raw.push_back(have_uring ? with_cpu([&] { return direct_raw_uring(d, kMs); }) : rate_cpu{});
        ring.push_back(have_uring ? with_cpu([&] { return direct_asys(d, kMs, ASYS_BACKEND_AUTO); }) : rate_cpu{});
        ring_async.push_back(have_uring ? with_cpu([&] { return direct_asys(d, kMs, ASYS_BACKEND_AUTO, ASYS_F_ASYNC); })
                                        : rate_cpu{});
        pool.push_back(with_cpu([&] { return direct_asys(d, kMs, ASYS_BACKEND_POOL); }));
    }
    auto best = [](const std::vector<rate_cpu> &v) {
        return *std::max_element(v.begin(), v.end(), [](const rate_cpu &a, const rate_cpu &b) { return a.per_s < b.per_s; });
    };
    // One row: printed and recorded (ratio to `base`).
    auto row = [](const std::string &table, const std::string &name, rate_cpu v, double base, const std::string &bname) {
        const double ratio = base > 0 ? v.per_s / base : 0;
        fmt::print("{:<28} {:>10.0f} {:>10.0f} {:>14.2f}\n", name, v.per_s, v.cpu_ns, ratio);
        record({table, name, v.per_s, v.cpu_ns, ratio, bname});
    };
    const double rb = best(raw).per_s;
    fmt::print("\nO_DIRECT 4 KiB random reads, queue depth {}, {} MiB file (best of 2 interleaved "
               "runs of {:.1f} s)\n\n", kQD, o.direct_mib, kMs / 1000);
    fmt::print("{:<28} {:>10} {:>10} {:>14}\n", "method", "IOPS", "CPU ns/op", "x raw io_uring");
    fmt::print("{:-<28} {:->10} {:->10} {:->14}\n", "", "", "", "");
    const std::string t1 = "O_DIRECT 4 KiB read QD32";
    row(t1, "raw liburing loop", best(raw), rb, "raw io_uring");
    row(t1, "asys (io_uring backend)", best(ring), rb, "raw io_uring");
    row(t1, "asys (io_uring, ASYNC flag)", best(ring_async), rb, "raw io_uring");
    row(t1, "asys (pool backend)", best(pool), rb, "raw io_uring");

    std::vector<rate_cpu> craw, cring, cpool;
    const double kChainMs = o.full ? 800 : 250;
    for (int r = 0; r < 2; ++r) {  // interleaved
        craw.push_back(have_uring ? with_cpu([&] { return direct_chains_raw(d, kChainMs); }) : rate_cpu{});
        cring.push_back(have_uring ? with_cpu([&] { return direct_chains_asys(d, kChainMs, ASYS_BACKEND_AUTO); })
                                   : rate_cpu{});
        cpool.push_back(with_cpu([&] { return direct_chains_asys(d, kChainMs, ASYS_BACKEND_POOL); }));
    }
    const double cb = best(craw).per_s;
    fmt::print("\nO_DIRECT chains: {} chains of {} linked 4 KiB random reads in flight (reads/s, best of 2 "
               "interleaved runs of {:.1f} s)\n\n", kChains, kChainLen, kChainMs / 1000);
    fmt::print("{:<28} {:>10} {:>10} {:>14}\n", "method", "reads/s", "CPU ns/op", "x raw links");
    fmt::print("{:-<28} {:->10} {:->10} {:->14}\n", "", "", "", "");
    const std::string t2 = "O_DIRECT chains of 4 reads";
    row(t2, "raw liburing IO_LINK", best(craw), cb, "raw io_uring links");
    row(t2, "asys chain (io_uring links)", best(cring), cb, "raw io_uring links");
    row(t2, "asys chain (pool interp.)", best(cpool), cb, "raw io_uring links");
    if (!have_uring) fmt::print("(io_uring unavailable here: its rows are 0)\n");
    free(mem);
    close(d.fd);
}

}  // namespace bench
