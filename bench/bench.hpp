// asys-bench: what the driver (main.cpp) and the workload files share — the
// options, the cached-read workload, a table row ("method"), the timing
// helpers and the contexts every family uses.
//
// Workload families, one file each:
//   cached_reads.cpp  QD1 cached reads: pread, the RWF_NOWAIT floor, asys
//   batches.cpp       32 reads per call: pread x32, asys_submit_batch
//   peers.cpp         the same reads through liburing, glibc POSIX AIO, libuv
//   sockets.cpp       a READ request through an in-process asys socket
//   chains.cpp        syslet chains, asys::chain, ASYS_OP_CHAIN
//   head_of_line.cpp  cached-read latency next to cold reads (asys, libuv)
//   direct.cpp        O_DIRECT reads at queue depth 32, alone and as chains
//   scale.cpp         100,000 reads in flight
//   threadlets.cpp    threadlets: asys_call, transparent mode, parked memory
//   scheduling.cpp    cold and cached reads beside 64 long calls (classes)
//   metadata.cpp      open + statx + close of many small files
//   fio_peers.cpp     fio as a child process: psync, io_uring, posixaio with
//                     and without libasys-aio, cached QD1 and O_DIRECT QD32
//
// A new workload file: add it to bench/CMakeLists.txt and call its table
// function from main.cpp (or return rows from a *_methods() family); every
// figure it prints also goes to record() (the ratio table, --csv, --plot).
#pragma once
#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "asys/asys.h"

struct uv_loop_s;  // libuv's uv_loop_t (uv.h)

namespace bench {

using clk = std::chrono::steady_clock;

struct options {
    std::string file;
    size_t size_mib = 64;
    unsigned rounds = 5;
    double round_ms = 60;
    bool keep = false;
    bool skip_hol = false;
    size_t cold_mib = 256;
    bool skip_direct = false;
    size_t direct_mib = 1024;
    std::string direct_file;
    bool full = false;       // --full: longer rounds and bigger files (else --quick)
    std::string csv_file;    // --csv FILE
    std::string plot_file;   // --plot FILE.png
    std::vector<std::string> only;  // --only: the tables to run (empty: all)
    /// True when --only is empty or names this table.
    bool runs(const char *table) const {
        if (only.empty()) return true;
        for (const auto &t : only)
            if (t == table) return true;
        return false;
    }
};

/// The options of this run (main.cpp), for families that scale with --full.
extern const options *g_opts;

struct workload {
    int fd = -1;
    std::vector<off_t> offs;  // random 4 KiB-aligned offsets, same for every method
    alignas(4096) char buf[32][4096];
};

/// Prints "asys-bench: what: strerror(err)" and exits 1.
[[noreturn]] void die(const std::string &what, int err);

// ---------------------------------------------------------------- methods
// Each method performs `n` 4 KiB reads at offs[i % offs.size()] and returns.
using method_fn = std::function<void(workload &, size_t start, size_t n)>;

/// One row of the cached-read table.
struct method {
    std::string name;
    std::string note;
    method_fn fn;
    unsigned batch = 1;  // reads per call of fn's inner step (for display)
    std::vector<double> ns;  // ns/op of each round
    std::vector<double> cpu_ns;  // process CPU time (user + sys) per op of each round
};

inline off_t off_at(const workload &w, size_t i) { return w.offs[i % w.offs.size()]; }

// ------------------------------------------------------------------ timing
inline double ms_since(clk::time_point t0) {
    return std::chrono::duration<double, std::milli>(clk::now() - t0).count();
}
inline double ns_since(clk::time_point t0) {
    return std::chrono::duration<double, std::nano>(clk::now() - t0).count();
}
inline double seconds_since(clk::time_point t0) {
    return std::chrono::duration<double>(clk::now() - t0).count();
}
/// The time point `ms` milliseconds after `t0`.
inline clk::time_point after_ms(clk::time_point t0, double ms) {
    return t0 + std::chrono::duration_cast<clk::duration>(std::chrono::duration<double, std::milli>(ms));
}

/// One round of `m`: calibrates the call size to about `round_ms`, then
/// returns the ns per read of one timed call. `cursor` walks the offsets.
double measure(method &m, workload &w, size_t &cursor, double round_ms, double *cpu_ns_per_op = nullptr);
double median(std::vector<double> v);

/// Process CPU time so far (getrusage RUSAGE_SELF: user + sys, every
/// thread), in ns.
double cpu_ns_now();

/// A throughput with the CPU time it cost.
struct rate_cpu {
    double per_s = 0;   // ops per second
    double cpu_ns = 0;  // process CPU ns per op
};
/// Runs f (which returns ops per second over its own timed loop) and
/// measures the process CPU time it used per op.
template <class F> rate_cpu with_cpu(F &&f) {
    const double c0 = cpu_ns_now();
    const auto t0 = clk::now();
    const double rate = f();
    const double ops = rate * seconds_since(t0);
    return {rate, ops > 0 ? (cpu_ns_now() - c0) / ops : 0};
}

// ------------------------------------------------------------ results
/// One figure of one table: every table records its rows here, for the
/// summary table of ratios, --csv and --plot.
struct result {
    std::string table;     // the workload
    std::string row;       // the library / method (the peer)
    double per_s = 0;      // ops per second
    double cpu_ns = 0;     // process CPU ns per op (0: not measured)
    double ratio = 0;      // throughput relative to the table's baseline
    std::string baseline;  // what the ratio is relative to (the plain syscall where there is one)
};
void record(const result &r);
/// Progress on stderr, one line rewritten in place (only on a terminal).
void progress(const std::string &what);

// -------------------------------------------------------- shared contexts
extern asys_ctx *g_ctx;           // defaults: the auto backend
extern asys_ctx *g_pool_ctx;      // pool only
extern asys_ctx *g_buffered_ctx;  // ASYS_CTX_NO_ODIRECT: chains skip the read guard
extern uv_loop_s *g_loop;         // libuv's default loop (peers.cpp)

// ------------------------------------------------ the families' entry points
// Rows of the cached-read table, in table order.
std::vector<method> cached_read_methods();  // cached_reads.cpp
std::vector<method> batch_methods();        // batches.cpp
std::vector<method> peer_methods();         // peers.cpp (rows named "io_uring..." need the ring)
std::vector<method> socket_methods();       // sockets.cpp
std::vector<method> chain_methods();        // chains.cpp

/// peers.cpp: sets up the raw io_uring ring and libuv's loop; returns
/// whether io_uring is usable here. peers_fini() tears both down.
bool peers_init();
void peers_fini();

/// sockets.cpp: opens the in-process asys socket on g_ctx and registers the
/// workload's file on it; sockets_fini() closes it.
void sockets_init(const workload &w);
void sockets_fini();

// The other tables, each measured and printed by its family.
void head_of_line_table(const options &o, workload &w);  // head_of_line.cpp
void direct_tables(const options &o, bool have_uring);   // direct.cpp
void scale_table();                                      // scale.cpp
void threadlet_table(const options &o, workload &w);     // threadlets.cpp
void coroutine_tables(const options &o, workload &w);    // coroutines.cpp
void metadata_table(const options &o);                   // metadata.cpp
void fio_tables(const options &o);                       // fio_peers.cpp
void scheduling_table(const options &o, workload &w, bool have_uring);  // scheduling.cpp

}  // namespace bench
