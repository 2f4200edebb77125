// asys-bench: asys side by side with plain syscalls, io_uring (liburing),
// glibc POSIX AIO and libuv, on one file, in one process, interleaved rounds.
// Every figure is printed as ns/op and as a ratio to plain pread measured in
// the same run.
//
// The driver: options, the cached file and its offsets, the shared contexts,
// the interleaved rounds and the cached-read table; then the other tables of
// the workload files (see bench.hpp).
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <fmt/core.h>

#include "bench.hpp"

namespace bench {

asys_ctx *g_ctx;
asys_ctx *g_pool_ctx;
asys_ctx *g_buffered_ctx;
const options *g_opts;

namespace {
std::vector<result> g_results;
bool g_progress_shown = false;
}  // namespace

void record(const result &r) { g_results.push_back(r); }

void progress(const std::string &what) {
    if (!isatty(STDERR_FILENO)) return;
    fmt::print(stderr, "\r\033[K[asys-bench] {}", what);
    std::fflush(stderr);
    g_progress_shown = true;
}

double cpu_ns_now() {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    auto ns = [](const timeval &t) { return static_cast<double>(t.tv_sec) * 1e9 + static_cast<double>(t.tv_usec) * 1e3; };
    return ns(ru.ru_utime) + ns(ru.ru_stime);
}

[[noreturn]] void die(const std::string &what, int err) {
    fmt::print(stderr, "asys-bench: {}: {}\n", what, strerror(err));
    std::exit(1);
}

// ---------------------------------------------------------------- runner
double measure(method &m, workload &w, size_t &cursor, double round_ms, double *cpu_ns_per_op) {
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
            const double c1 = cpu_ns_now();
            auto t1 = clk::now();
            m.fn(w, cursor, want);
            cursor += want;
            double ns = ns_since(t1);
            if (cpu_ns_per_op) *cpu_ns_per_op = (cpu_ns_now() - c1) / static_cast<double>(want);
            return ns / static_cast<double>(want);
        }
        n *= 4;
    }
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0 : v[v.size() / 2];
}

namespace {

// "model name" of /proc/cpuinfo, the CPU count, the kernel (uname).
std::string machine_line() {
    std::string model = "unknown CPU";
    std::ifstream cpuinfo("/proc/cpuinfo");
    for (std::string line; std::getline(cpuinfo, line);)
        if (line.rfind("model name", 0) == 0) {
            model = line.substr(line.find(':') + 2);
            break;
        }
    utsname u{};
    uname(&u);
    return fmt::format("{} x {}, {} {} {}", sysconf(_SC_NPROCESSORS_ONLN), model, u.sysname, u.release,
                       u.machine);
}

// The summary: every recorded figure as a ratio to its table's baseline.
void ratio_table() {
    if (g_results.empty()) return;  // --only picked tables that record no figure
    fmt::print("\nratios (throughput relative to the baseline named per workload; CPU = process "
               "user + sys time per op)\n\n");
    fmt::print("{:<34} {:<32} {:>11} {:>10} {:>8}   {}\n", "workload", "peer", "ops/s", "CPU ns/op",
               "ratio", "baseline");
    fmt::print("{:-<34} {:-<32} {:->11} {:->10} {:->8}   {:-<20}\n", "", "", "", "", "", "");
    for (const result &r : g_results)
        fmt::print("{:<34} {:<32} {:>11.0f} {:>10.0f} {:>8.2f}   {}\n", r.table, r.row, r.per_s, r.cpu_ns,
                   r.ratio, r.baseline);
}

std::string csv_quoted(const std::string &s) {
    std::string q = "\"";
    for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
    return q + "\"";
}

void write_csv(const std::string &path) {
    FILE *f = std::fopen(path.c_str(), "w");
    if (!f) die("open " + path, errno);
    fmt::print(f, "workload,peer,ops_per_s,cpu_ns_per_op,ratio,baseline\n");
    for (const result &r : g_results)
        fmt::print(f, "{},{},{:.1f},{:.1f},{:.4f},{}\n", csv_quoted(r.table), csv_quoted(r.row), r.per_s,
                   r.cpu_ns, r.ratio, csv_quoted(r.baseline));
    std::fclose(f);
    fmt::print("\nwrote {} ({} rows)\n", path, g_results.size());
}

// A horizontal bar per figure (ratio to its baseline, log scale), grouped by
// workload, drawn by gnuplot into a PNG.
void write_plot(const std::string &png, const std::string &title) {
    const std::string data = png + ".dat";
    FILE *f = std::fopen(data.c_str(), "w");
    if (!f) die("open " + data, errno);
    std::string last;
    int i = 0;
    for (auto it = g_results.rbegin(); it != g_results.rend(); ++it, ++i) {
        const result &r = *it;
        if (r.ratio <= 0) continue;
        std::string label = r.row + (r.table != last ? "  [" + r.table + "]" : "");
        last = r.table;
        for (char &c : label)
            if (c == '"') c = '\'';
        fmt::print(f, "{} {:.4f} \"{}\" {}\n", i, r.ratio, label, std::hash<std::string>{}(r.table) % 8);
    }
    std::fclose(f);
    const int rows = i;
    FILE *g = popen("gnuplot", "w");
    if (!g) die("gnuplot", errno);
    fmt::print(g,
               "set terminal pngcairo size 1400,{} font ',9' noenhanced\n"
               "set output '{}'\n"
               "set title \"{}\"\n"
               "set xlabel 'throughput relative to the baseline of its workload (log scale; 1 = baseline)'\n"
               "set logscale x 2\nset grid xtics\nset key off\n"
               "set ytics scale 0\nset yrange [-1:{}]\nset style fill solid 0.8\n"
               "set arrow from 1, graph 0 to 1, graph 1 nohead lw 2 lc 'black'\n"
               "plot '{}' using 2:1:($2<1?$2:1):($2<1?1:$2):($1-0.4):($1+0.4):4:ytic(3) "
               "with boxxyerror lc variable\n",
               std::max(400, 18 * rows + 120), png, title, rows, data);
    int rc = pclose(g);
    std::remove(data.c_str());
    if (rc != 0) {
        fmt::print(stderr, "asys-bench: gnuplot failed (exit {}): no plot\n", rc);
        return;
    }
    fmt::print("wrote {} ({} bars: ratio to each workload's baseline, per peer)\n", png, rows);
}

}  // namespace

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
    bool quick = false;
    auto *quick_flag = app.add_flag("--quick", quick, "short rounds, small files (the default; well under a minute)");
    app.add_flag("--full", o.full, "longer rounds and bigger files, for figures to publish")->excludes(quick_flag);
    app.add_option("--csv", o.csv_file, "also write every figure to this CSV file");
    app.add_option("--plot", o.plot_file, "draw the ratios per workload and peer into this PNG (gnuplot)");
    app.add_option("--only", o.only, "run only these tables (repeat or comma-separate)")
        ->delimiter(',')
        ->check(CLI::IsMember({"cached", "coroutines", "hol", "sched", "direct", "metadata", "fio", "scale",
                               "threadlets"}));
    CLI11_PARSE(app, argc, argv);
    // --quick (the default) shortens what the user did not set; --full lengthens it.
    auto unset = [&](const char *name) { return app.count(name) == 0; };
    if (!o.full) {
        if (unset("--rounds")) o.rounds = 3;
        if (unset("--round-ms")) o.round_ms = 25;
        if (unset("--direct-mib")) o.direct_mib = 256;
        if (unset("--cold-mib")) o.cold_mib = 128;
    } else {
        if (unset("--rounds")) o.rounds = 7;
        if (unset("--round-ms")) o.round_ms = 100;
    }
    g_opts = &o;
    const auto started = clk::now();

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

    fmt::print("asys-bench ({}): {}\nasys backend: {}\n\n", o.full ? "--full" : "--quick", machine_line(),
               info.reason);
    std::fflush(stdout);

    if (o.runs("cached")) {
        // At least 5 rounds: the ratios below pair rows round by round.
        const unsigned rounds = std::max(o.rounds, 5u);
        size_t cursor = 0;
        for (unsigned r = 0; r < rounds; ++r)
            for (auto &m : ms) {
                progress(fmt::format("cached reads: round {}/{}: {}", r + 1, rounds, m.name));
                double cpu = 0;
                m.ns.push_back(measure(m, w, cursor, o.round_ms, &cpu));
                m.cpu_ns.push_back(cpu);
            }
        progress("");

        asys_stats sst;
        asys_ctx_stats(g_ctx, &sst);

        const double base = median(ms[0].ns);
        fmt::print("asys-bench: cached 4 KiB random reads, {} MiB file on {}, {} interleaved rounds "
                   "(median)\n\n", o.size_mib, o.file, rounds);
        fmt::print("{:<30} {:>10} {:>10} {:>8}   {}\n", "method", "ns/op", "CPU ns/op", "x pread", "note");
        fmt::print("{:-<30} {:->10} {:->10} {:->8}   {:-<30}\n", "", "", "", "", "");
        for (auto &m : ms) {
            double med = median(m.ns), cpu = median(m.cpu_ns);
            fmt::print("{:<30} {:>10.0f} {:>10.0f} {:>8.2f}   {}\n", m.name, med, cpu, med / base, m.note);
            record({"cached 4 KiB read", m.name, 1e9 / med, cpu, base / med, "pread"});
        }
        if (!have_uring) fmt::print("\n(io_uring unavailable here: its rows are omitted)\n");
        // The ring path beside its floor: each ratio is the median of the
        // per-round ratios of two rows measured next to each other.
        auto row = [&](const char *name) -> const method * {
            for (auto &m : ms)
                if (m.name == name) return &m;
            return nullptr;
        };
        const char *pairs[][3] = {
            {"asys_submit", "preadv2(RWF_NOWAIT)", "single read, default flags, to the probe's floor"},
            {"asys_submit BUFFERED", "preadv2(RWF_NOWAIT)", "single read, ASYS_F_BUFFERED, to the probe's floor"},
            {"asys_submit ASYNC ring", "io_uring QD1", "QD1 through the ring, to raw io_uring QD1"},
            {"asys_submit_batch x32", "pread x32", "batch of 32, to 32 preads"},
            {"io_uring batch x32", "pread x32", "the peer: raw liburing's batch of 32, to 32 preads"},
            {"asys_submit_batch x32", "io_uring batch x32", "batch of 32, to raw liburing's"},
            {"asys batch x32 ASYNC", "io_uring batch x32", "batch of 32 forced through the ring, to raw"},
        };
        fmt::print("\nrow to row (median of per-round ratios)\n");
        for (auto &pr : pairs) {
            const method *a = row(pr[0]), *b = row(pr[1]);
            if (!a || !b) continue;
            std::vector<double> r, c;
            for (size_t k = 0; k < a->ns.size() && k < b->ns.size(); ++k) {
                r.push_back(a->ns[k] / b->ns[k]);
                c.push_back(a->cpu_ns[k] / b->cpu_ns[k]);
            }
            fmt::print("  {:<24} / {:<22} {:>6.3f}x  (CPU {:.3f}x)  {}\n", pr[0], pr[1], median(r), median(c), pr[2]);
        }
        asys_stats pst;
        asys_ctx_stats(g_pool_ctx, &pst);
        fmt::print("\nasys backend: {}; io-wq cap {}, {} pool workers\n", info.reason,
                   info.iowq_max_workers, info.workers);
        fmt::print("asys paths: {} inline, {} punted after probe, {} punted direct, {} ring + {} pool "
                   "completions\n", sst.done_inline + pst.done_inline, sst.punted_probe + pst.punted_probe,
                   sst.punted_direct + pst.punted_direct, sst.completed_uring + pst.completed_uring,
                   sst.completed_pool + pst.completed_pool);
    }

    if (o.runs("coroutines")) {
        progress("C++ coroutines");
        coroutine_tables(o, w);
    }
    if (!o.skip_hol && o.runs("hol")) {
        progress("head-of-line table");
        head_of_line_table(o, w);
    }
    if (!o.skip_hol && o.runs("sched")) {
        progress("scheduling table");
        scheduling_table(o, w, have_uring);
    }
    if (!o.skip_direct && o.runs("direct")) {
        progress("O_DIRECT tables");
        direct_tables(o, have_uring);
    }
    if (o.runs("metadata")) {
        progress("open + statx + close");
        metadata_table(o);
    }
    if (o.runs("fio")) {
        progress("fio");
        fio_tables(o);
    }
    if (o.runs("scale")) {
        progress("100k in flight");
        scale_table();
    }
    if (o.runs("threadlets")) threadlet_table(o, w);
    progress("");
    if (g_progress_shown) fmt::print(stderr, "\r\033[K");

    ratio_table();
    if (!o.csv_file.empty()) write_csv(o.csv_file);
    if (!o.plot_file.empty())
        write_plot(o.plot_file, fmt::format("asys-bench {}: {}", o.full ? "--full" : "--quick", machine_line()));
    fmt::print("\nasys-bench: {:.0f} s in total\n", seconds_since(started));

    sockets_fini();
    asys_ctx_destroy(g_ctx, ASYS_DESTROY_DRAIN);
    asys_ctx_destroy(g_pool_ctx, ASYS_DESTROY_DRAIN);
    asys_ctx_destroy(g_buffered_ctx, ASYS_DESTROY_DRAIN);
    peers_fini();
    close(w.fd);
    if (temp && !o.keep) unlink(o.file.c_str());
    return 0;
}
