// fio as a peer, run as a child process per job (--output-format=json):
// 4 KiB random reads of the cached file at iodepth 1 with fio's psync,
// io_uring and posixaio engines, posixaio also with LD_PRELOAD=libasys-aio.so;
// and of the O_DIRECT file at iodepth 32 with io_uring and posixaio (with and
// without libasys-aio). Ratios: cached to fio psync (the plain syscall), O_DIRECT to
// fio's io_uring engine. CPU per op is the fio job's own usr + sys time.
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/core.h>

#include "bench.hpp"

namespace bench {
namespace {

struct fio_job {
    std::string name;     // the row
    std::string engine;   // --ioengine
    bool preload = false; // LD_PRELOAD=libasys-aio.so
};

std::string quoted(const std::string &s) {
    std::string q = "'";
    for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return q + "'";
}

// The number after "key" : at or after `from` in fio's JSON (0 if absent).
double json_number(const std::string &text, const std::string &key, size_t from) {
    size_t at = text.find("\"" + key + "\"", from);
    if (at == std::string::npos) return 0;
    at = text.find(':', at);
    return at == std::string::npos ? 0 : std::strtod(text.c_str() + at + 1, nullptr);
}

// Runs one fio job; false (with the reason printed) if fio failed.
bool run_fio(const fio_job &j, const std::string &file, const std::string &extra, double secs, rate_cpu &out) {
    char tmpl[] = "/tmp/asys-bench-fio-XXXXXX";
    int fd = mkstemp(tmpl);
    if (fd < 0) die("mkstemp", errno);
    close(fd);
    const std::string json = tmpl, err = json + ".err";
    std::string cmd = fmt::format(
        "{}fio --name=bench --filename={} --rw=randread --bs=4k --invalidate=0 --time_based --runtime={:.1f} "
        "--ioengine={} {} --output-format=json --output={} >/dev/null 2>{}",
        j.preload ? "LD_PRELOAD=" + quoted(ASYS_AIO_LIBRARY) + " " : "", quoted(file), secs, j.engine, extra,
        quoted(json), quoted(err));
    int rc = std::system(cmd.c_str());
    std::ifstream in(json);
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string text = ss.str();
    std::ifstream ein(err);
    std::stringstream es;
    es << ein.rdbuf();
    std::remove(json.c_str());
    std::remove(err.c_str());
    const size_t read_at = text.find("\"read\"");
    if (rc != 0 || read_at == std::string::npos) {
        fmt::print("  fio {} failed (exit {}): {}\n", j.name, rc, es.str().substr(0, 300));
        return false;
    }
    const double iops = json_number(text, "iops", read_at);
    const double ios = json_number(text, "total_ios", read_at);
    const double runtime_ms = json_number(text, "job_runtime", 0);
    const double cpu_pct = json_number(text, "usr_cpu", read_at) + json_number(text, "sys_cpu", read_at);
    out.per_s = iops;
    out.cpu_ns = ios > 0 ? cpu_pct / 100 * runtime_ms * 1e6 / ios : 0;
    return iops > 0;
}

void fio_table(const std::string &title, const std::string &table, const std::vector<fio_job> &jobs,
               const std::string &file, const std::string &extra, double secs, const std::string &baseline) {
    std::vector<std::pair<std::string, rate_cpu>> rows;
    for (const fio_job &j : jobs) {
        progress("fio: " + table + ": " + j.name);
        rate_cpu r;
        if (run_fio(j, file, extra, secs, r)) rows.emplace_back(j.name, r);
    }
    if (rows.empty()) return;
    const double base = rows[0].first == jobs[0].name ? rows[0].second.per_s : 0;
    fmt::print("\n{} ({:.0f} s per job)\n\n", title, secs);
    fmt::print("{:<34} {:>10} {:>10} {:>10}\n", "fio job", "IOPS", "CPU ns/op", "x " + baseline);
    fmt::print("{:-<34} {:->10} {:->10} {:->10}\n", "", "", "", "");
    for (auto &[name, r] : rows) {
        const double ratio = base > 0 ? r.per_s / base : 0;
        fmt::print("{:<34} {:>10.0f} {:>10.0f} {:>10.2f}\n", name, r.per_s, r.cpu_ns, ratio);
        record({table, name, r.per_s, r.cpu_ns, ratio, baseline});
    }
}

}  // namespace

void fio_tables(const options &o) {
    if (std::system("command -v fio >/dev/null 2>&1") != 0) {
        fmt::print("\nfio: SKIPPED: fio is not installed (tools/setup.sh installs it); no fio rows\n");
        return;
    }
    if (access(ASYS_AIO_LIBRARY, R_OK) != 0)
        fmt::print("\nfio: libasys-aio not found at {}: its rows will fail\n", ASYS_AIO_LIBRARY);
    const double secs = o.full ? 5 : 1;
    fio_table("fio: cached 4 KiB random reads, iodepth 1, " + std::to_string(o.size_mib) + " MiB file in the page cache",
              "fio cached 4 KiB read QD1",
              {{"fio psync", "psync"},
               {"fio io_uring", "io_uring"},
               {"fio posixaio (glibc)", "posixaio"},
               {"fio posixaio + libasys-aio", "posixaio", true}},
              o.file, fmt::format("--size={}M --iodepth=1", o.size_mib), secs, "fio psync");
    const std::string direct = o.direct_file.empty() ? "/var/tmp/asys-bench-direct.img" : o.direct_file;
    if (access(direct.c_str(), R_OK) != 0) {
        fmt::print("\nfio O_DIRECT: SKIPPED: no O_DIRECT file {} (the O_DIRECT table writes it)\n", direct);
        return;
    }
    fio_table("fio: O_DIRECT 4 KiB random reads, iodepth 32, " + direct, "fio O_DIRECT 4 KiB read QD32",
              {{"fio io_uring", "io_uring"},
               {"fio posixaio (glibc)", "posixaio"},
               {"fio posixaio + libasys-aio", "posixaio", true}},
              direct, "--direct=1 --iodepth=32", secs, "fio io_uring");
}

}  // namespace bench
