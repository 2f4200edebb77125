// C++ coroutines (<asys/asys.hpp>):
//  1. `co_await ctx.pread(...)` of a cached 4 KiB block inside a coroutine
//     beside asys_submit() of the same read on the same context, interleaved
//     rounds: ns/op, CPU ns/op, ratio, and heap allocations per read (every
//     operator new of this program is counted).
//  2. examples/asys-cp (tree_copy.hpp) of 10,000 small files from a cold
//     cache beside `cp -a`, interleaved; dropping the page cache needs root
//     (/proc/sys/vm/drop_caches), else the table is skipped with a notice.
#include <fcntl.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <asys/asys.hpp>
#include <cerrno>
#include <cstdlib>
#include <ctime>
#include <new>
#include <string>
#include <vector>

#include <fmt/core.h>

#include "../examples/tree_copy.hpp"
#include "bench.hpp"

// Counts this thread's heap allocations (the rows run on the main thread).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"  // free() of malloc()ed memory
#endif
namespace {
thread_local unsigned long t_allocs = 0;
}
void *operator new(std::size_t n) {
    ++t_allocs;
    if (void *p = std::malloc(n ? n : 1)) return p;
    throw std::bad_alloc();
}
void operator delete(void *p) noexcept { std::free(p); }
void operator delete(void *p, std::size_t) noexcept { std::free(p); }

namespace bench {
namespace {

double thread_cpu_ns() {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) * 1e9 + static_cast<double>(ts.tv_nsec);
}

// ------------------------------------------------------- cached reads
void submit_reads(asys_ctx *ctx, workload &w, size_t s, size_t n) {
    long res;
    asys_op op;
    for (size_t i = s; i < s + n; ++i) {
        asys_prep_pread(&op, w.fd, w.buf[0], 4096, off_at(w, i));
        op.ret_ptr = &res;
        const int rc = asys_submit(ctx, &op);
        if (rc != ASYS_DONE) {
            if (rc < 0) die("asys_submit", -rc);
            asys_cqe cqe;
            asys_wait(ctx, 1, nullptr, &cqe, 1);
        }
        if (res != 4096) die("asys read", res < 0 ? static_cast<int>(-res) : EIO);
    }
}

asys::task<void> await_reads(asys::context &ctx, workload &w, size_t s, size_t n) {
    for (size_t i = s; i < s + n; ++i) {
        asys::result<ssize_t> r = co_await ctx.pread(w.fd, w.buf[0], 4096, off_at(w, i));
        if (r.value_or(-1) != 4096) die("co_await ctx.pread", r ? EIO : r.error());
    }
}

struct row {
    const char *name;
    std::function<void(size_t, size_t)> fn;
    std::vector<double> ns, cpu, allocs;
};

/// Both rows read the same offsets in each round, in alternating order; the
/// ratios are medians of the per-round pairs (robust to a loaded machine).
void cached_read_table(const options &o, workload &w) {
    asys::context ctx;
    size_t n = 1 << 16;  // reads per timed call: one coroutine frame per call
    std::vector<row> rows;
    rows.push_back({"asys_submit", [&](size_t s, size_t k) { submit_reads(ctx.native_handle(), w, s, k); }, {}, {}, {}});
    rows.push_back({"co_await ctx.pread", [&](size_t s, size_t k) { asys::sync_wait(ctx, await_reads(ctx, w, s, k)); },
                    {}, {}, {}});
    const unsigned rounds = o.rounds * 4;
    {  // calibrate the call size to about round_ms / 4
        auto t0 = clk::now();
        rows[0].fn(0, n);
        const double ms = ms_since(t0);
        n = std::max<size_t>(1024, static_cast<size_t>(static_cast<double>(n) * o.round_ms / 4 / std::max(ms, 0.001)));
    }
    std::vector<double> wall_ratio, cpu_ratio;
    size_t cursor = 0;
    for (unsigned r = 0; r < rounds; ++r, cursor += n) {
        for (size_t k = 0; k < rows.size(); ++k) {
            row &x = rows[r % 2 ? rows.size() - 1 - k : k];  // alternate who goes first
            const unsigned long a0 = t_allocs;
            const double c0 = thread_cpu_ns();
            const auto t0 = clk::now();
            x.fn(cursor, n);
            const double ns = ns_since(t0), cpu = thread_cpu_ns() - c0;
            const unsigned long allocs = t_allocs - a0;  // before the push_backs allocate
            x.ns.push_back(ns / static_cast<double>(n));
            x.cpu.push_back(cpu / static_cast<double>(n));
            x.allocs.push_back(static_cast<double>(allocs) / static_cast<double>(n));
        }
        wall_ratio.push_back(rows[1].ns.back() / rows[0].ns.back());
        cpu_ratio.push_back(rows[1].cpu.back() / rows[0].cpu.back());
    }
    fmt::print("\nC++ coroutines: cached 4 KiB reads, QD1, one context, {} rounds of {} reads, the same offsets "
               "for both rows (median; ratios: median of the per-round pairs)\n\n", rounds, n);
    fmt::print("{:<22} {:>8} {:>8} {:>10} {:>10} {:>12}\n", "method", "ns/op", "CPU ns", "x (wall)", "x (CPU)",
               "allocs/read");
    fmt::print("{:-<22} {:->8} {:->8} {:->10} {:->10} {:->12}\n", "", "", "", "", "", "");
    for (size_t k = 0; k < rows.size(); ++k) {
        row &x = rows[k];
        const double wall = k ? median(wall_ratio) : 1.0;
        fmt::print("{:<22} {:>8.1f} {:>8.1f} {:>10.3f} {:>10.3f} {:>12.6f}\n", x.name, median(x.ns), median(x.cpu),
                   wall, k ? median(cpu_ratio) : 1.0, median(x.allocs));
        record({"C++ coroutines: cached 4 KiB reads QD1", x.name, 1e9 / median(x.ns), median(x.cpu), 1.0 / wall,
                "asys_submit"});
    }
    fmt::print("(co_await: {} suspensions; the one allocation per {} reads is the coroutine's frame)\n",
               ctx.suspensions(), n);
}

// ------------------------------------------------------ asys-cp vs cp -a
bool drop_caches() {
    sync();
    const int fd = open("/proc/sys/vm/drop_caches", O_WRONLY | O_CLOEXEC);
    if (fd < 0) return false;
    const bool ok = write(fd, "3", 1) == 1;
    close(fd);
    return ok;
}

void remove_tree(const std::string &path) {
    const std::string cmd = "rm -rf '" + path + "'";
    if (std::system(cmd.c_str()) != 0) die("rm -rf " + path, EIO);
}

double process_cpu_s(int who) {
    rusage ru{};
    getrusage(who, &ru);
    return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

void make_small_tree(const std::string &root, unsigned dirs, unsigned per_dir) {
    if (mkdir(root.c_str(), 0755) != 0) die("mkdir " + root, errno);
    std::string data(4096, 'q');
    for (unsigned d = 0; d < dirs; ++d) {
        const std::string dir = root + "/d" + std::to_string(d);
        if (mkdir(dir.c_str(), 0755) != 0) die("mkdir " + dir, errno);
        for (unsigned f = 0; f < per_dir; ++f) {
            const std::string path = dir + "/f" + std::to_string(f);
            const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
            const size_t size = 512 + (d * per_dir + f) * 61 % 3584;
            if (fd < 0 || write(fd, data.data(), size) != static_cast<ssize_t>(size)) die("write " + path, errno);
            close(fd);
        }
    }
}

void tree_copy_table(const options &o) {
    const char *tmp = getenv("TMPDIR");
    const std::string base = std::string(tmp && *tmp ? tmp : "/var/tmp") + "/asys-bench-tree." + std::to_string(getpid());
    if (mkdir(base.c_str(), 0700) != 0) die("mkdir " + base, errno);
    const std::string src = base + "/src", dst = base + "/dst";
    make_small_tree(src, 100, 100);
    if (!drop_caches()) {
        fmt::print("\nasys-cp vs cp -a, cold cache: SKIPPED — cannot write /proc/sys/vm/drop_caches (needs root)\n");
        remove_tree(base);
        return;
    }
    const unsigned rounds = std::min(o.rounds, 3u);
    std::vector<double> cp_s, cp_cpu, ours_s, ours_cpu;
    unsigned long suspensions = 0;
    for (unsigned r = 0; r < rounds; ++r) {
        for (int which = 0; which < 2; ++which) {
            const bool ours = (which + r) % 2 == 0;  // alternate who goes first
            drop_caches();
            const auto t0 = clk::now();
            if (ours) {
                const double c0 = process_cpu_s(RUSAGE_SELF);
                asys_params params{};
                params.class_workers[ASYS_CLASS_LONG] = 1024;  // as asys-cp: chains may use every worker
                asys::context ctx(params);
                tree_copy::copier cp(ctx);
                asys::sync_wait(ctx, cp.copy(src, dst));
                if (cp.totals().errors || cp.totals().files != 10000) die("asys-cp", EIO);
                ours_s.push_back(seconds_since(t0));
                ours_cpu.push_back(process_cpu_s(RUSAGE_SELF) - c0);
                suspensions = ctx.suspensions();
            } else {
                const double c0 = process_cpu_s(RUSAGE_CHILDREN);
                const char *argv[] = {"cp", "-a", src.c_str(), dst.c_str(), nullptr};
                pid_t pid;
                if (posix_spawnp(&pid, "cp", nullptr, nullptr, const_cast<char **>(argv), environ) != 0)
                    die("spawn cp", errno);
                int status = 0;
                waitpid(pid, &status, 0);
                if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) die("cp -a", EIO);
                cp_s.push_back(seconds_since(t0));
                cp_cpu.push_back(process_cpu_s(RUSAGE_CHILDREN) - c0);
            }
            remove_tree(dst);
        }
    }
    remove_tree(base);
    fmt::print("\nasys-cp vs cp -a: 10,000 files of 0.5-4 KiB in 100 directories, cold cache each run, "
               "{} interleaved rounds (median)\n\n", rounds);
    fmt::print("{:<22} {:>8} {:>10} {:>12} {:>8}\n", "method", "s", "CPU s", "CPU us/file", "x cp -a");
    fmt::print("{:-<22} {:->8} {:->10} {:->12} {:->8}\n", "", "", "", "", "");
    const double base_s = median(cp_s);
    fmt::print("{:<22} {:>8.3f} {:>10.3f} {:>12.1f} {:>8.2f}\n", "cp -a", base_s, median(cp_cpu),
               median(cp_cpu) * 1e6 / 10000, 1.0);
    fmt::print("{:<22} {:>8.3f} {:>10.3f} {:>12.1f} {:>8.2f}\n", "asys-cp (64 in flight)", median(ours_s),
               median(ours_cpu), median(ours_cpu) * 1e6 / 10000, median(ours_s) / base_s);
    fmt::print("(asys-cp: {} suspensions in its last run; CPU includes the pool's workers)\n", suspensions);
    const char *table = "asys-cp vs cp -a: 10,000 small files, cold cache";
    record({table, "cp -a", 10000 / base_s, median(cp_cpu) * 1e9 / 10000, 1.0, "cp -a"});
    record({table, "asys-cp", 10000 / median(ours_s), median(ours_cpu) * 1e9 / 10000, base_s / median(ours_s),
            "cp -a"});
}

}  // namespace

void coroutine_tables(const options &o, workload &w) {
    cached_read_table(o, w);
    tree_copy_table(o);
}

}  // namespace bench
