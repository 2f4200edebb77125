// asys-bench: asys side by side with plain syscalls, io_uring (liburing),
// glibc POSIX AIO and libuv, on one file, in one process, interleaved rounds.
// Every figure is printed as ns/op and as a ratio to plain pread measured in
// the same run.
//
// The driver: options, the cached file and its offsets, the shared contexts,
// the interleaved rounds and the cached-read table; then the other tables of
// the workload files (see bench.hpp).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <fmt/core.h>

#include "bench.hpp"

namespace bench {

asys_ctx *g_ctx;
asys_ctx *g_pool_ctx;
asys_ctx *g_buffered_ctx;

[[noreturn]] void die(const std::string &what, int err) {
    fmt::print(stderr, "asys-bench: {}: {}\n", what, strerror(err));
    std::exit(1);
}

// ---------------------------------------------------------------- runner
double measure(method &m, workload &w, size_t &cursor, double round_ms) {
    // Calibrate: grow n until one call takes >= round_ms / 4, then run.
    size_t n = 64;
    for (;;) {
        auto t0 = clk::now();
        m.fn(w, cursor, n);
        cursor += n;
        double ms = ms_since(t0);
        if (ms >= round_ms / 4) {
            size_t want = static_cast<size_t>(static_cast<double>(n) * round_ms / ms);
            want = std::max<size_t>(want / 32 * 32, 32);
            auto t1 = clk::now();
            m.fn(w, cursor, want);
            cursor += want;
            double ns = ns_since(t1);
            return ns / static_cast<double>(want);
        }
        n *= 4;
    }
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0 : v[v.size() / 2];
}

}  // namespace bench

using namespace bench;

int main(int argc, char **argv) {
    options o;
    CLI::App app{"asys-bench: asys vs plain syscalls, io_uring, glibc POSIX AIO and libuv"};
    app.add_option("--file", o.file, "file to read (created if missing; default: a temp file)");
    app.add_option("--size-mib", o.size_mib, "file size in MiB")->check(CLI::Range(1, 65536));
    app.add_option("--rounds", o.rounds, "interleaved rounds per method")->check(CLI::Range(1, 100));
    app.add_option("--round-ms", o.round_ms, "time per method per round")->check(CLI::Range(5.0, 10000.0));
    app.add_flag("--keep", o.keep, "keep the temp file");
    app.add_flag("--no-hol", o.skip_hol, "skip the head-of-line latency table");
    app.add_flag("--no-direct", o.skip_direct, "skip the O_DIRECT QD32 table");
    app.add_option("--direct-mib", o.direct_mib, "O_DIRECT file size (kept for reuse)")
        ->check(CLI::Range(64, 1 << 20));
    app.add_option("--direct-file", o.direct_file, "O_DIRECT file (default: /var/tmp/asys-bench-direct.img)");
    app.add_option("--cold-mib", o.cold_mib, "cold file size for the head-of-line table")
        ->check(CLI::Range(16, 65536));
    CLI11_PARSE(app, argc, argv);

    bool temp = o.file.empty();
    if (temp) {
        const char *d = getenv("TMPDIR");
        o.file = std::string(d && *d ? d : "/var/tmp") + "/asys-bench." + std::to_string(getpid());
    }
    workload w;
    const off_t size = static_cast<off_t>(o.size_mib) << 20;
    w.fd = open(o.file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (w.fd < 0) die("open " + o.file, errno);
    struct stat st;
    fstat(w.fd, &st);
    if (st.st_size < size) {
        std::vector<char> chunk(1 << 20, 'x');
        for (off_t off = 0; off < size; off += 1 << 20)
            if (pwrite(w.fd, chunk.data(), chunk.size(), off) != static_cast<ssize_t>(chunk.size()))
                die("write", errno);
    }
    // Warm the page cache: this table is about cached reads.
    {
        std::vector<char> chunk(1 << 20);
        for (off_t off = 0; off < size; off += 1 << 20)
            if (pread(w.fd, chunk.data(), chunk.size(), off) < 0) die("read", errno);
    }
    std::mt19937_64 rng(42);
    w.offs.resize(1 << 16);
    for (auto &x : w.offs) x = static_cast<off_t>(rng() % static_cast<uint64_t>(size / 4096)) * 4096;

    if (int rc = asys_ctx_create(nullptr, &g_ctx); rc < 0) die("asys_ctx_create", -rc);
    asys_params pool_only{};
    pool_only.backend = ASYS_BACKEND_POOL;
    if (int rc = asys_ctx_create(&pool_only, &g_pool_ctx); rc < 0) die("asys_ctx_create", -rc);
    asys_params buffered{};
    buffered.flags = ASYS_CTX_NO_ODIRECT;
    if (int rc = asys_ctx_create(&buffered, &g_buffered_ctx); rc < 0) die("asys_ctx_create", -rc);
    sockets_init(w);
    asys_info info{};
    asys_ctx_info(g_ctx, &info);
    const bool have_uring = peers_init();

    // The cached-read table: every family's rows, measured in interleaved rounds.
    std::vector<method> ms;
    for (auto family : {cached_read_methods, batch_methods, peer_methods, socket_methods, chain_methods})
        for (method &m : family()) ms.push_back(std::move(m));
    if (!have_uring)
        ms.erase(std::remove_if(ms.begin(), ms.end(),
                                [](const method &m) { return m.name.rfind("io_uring", 0) == 0; }),
                 ms.end());

    size_t cursor = 0;
    for (unsigned r = 0; r < o.rounds; ++r)
        for (auto &m : ms) m.ns.push_back(measure(m, w, cursor, o.round_ms));

    asys_stats sst;
    asys_ctx_stats(g_ctx, &sst);

    const double base = median(ms[0].ns);
    fmt::print("asys-bench: cached 4 KiB random reads, {} MiB file on {}, {} interleaved rounds "
               "(median)\n\n", o.size_mib, o.file, o.rounds);
    fmt::print("{:<30} {:>10} {:>8}   {}\n", "method", "ns/op", "x pread", "note");
    fmt::print("{:-<30} {:->10} {:->8}   {:-<30}\n", "", "", "", "");
    for (auto &m : ms) {
        double med = median(m.ns);
        fmt::print("{:<30} {:>10.0f} {:>8.2f}   {}\n", m.name, med, med / base, m.note);
    }
    if (!have_uring) fmt::print("\n(io_uring unavailable here: its rows are omitted)\n");
    asys_stats pst;
    asys_ctx_stats(g_pool_ctx, &pst);
    fmt::print("\nasys backend: {}; io-wq cap {}, {} pool workers\n", info.reason,
               info.iowq_max_workers, info.workers);
    fmt::print("asys paths: {} inline, {} punted after probe, {} punted direct, {} ring + {} pool "
               "completions\n", sst.done_inline + pst.done_inline, sst.punted_probe + pst.punted_probe,
               sst.punted_direct + pst.punted_direct, sst.completed_uring + pst.completed_uring,
               sst.completed_pool + pst.completed_pool);

    coroutine_tables(o, w);
    if (!o.skip_hol) head_of_line_table(o, w);
    if (!o.skip_direct) direct_tables(o, have_uring);
    scale_table();

    sockets_fini();
    asys_ctx_destroy(g_ctx, ASYS_DESTROY_DRAIN);
    asys_ctx_destroy(g_pool_ctx, ASYS_DESTROY_DRAIN);
    asys_ctx_destroy(g_buffered_ctx, ASYS_DESTROY_DRAIN);
    peers_fini();
    close(w.fd);
    if (temp && !o.keep) unlink(o.file.c_str());
    return 0;
}
