// The threadlet table: ordinary code as an op. 16 cached 4 KiB preads made
// with asys_call inside one threadlet vs the same 16 plain preads; the same
// reads made by libc's pread inside a transparent threadlet (each one
// trapped by syscall user dispatch); the cost of one caught call next to
// the plain call (getppid); and the resident memory of 10,000 threadlets
// parked at once on pipe reads. Rows are measured in interleaved rounds in
// this process; ratios are to the plain rows; CPU is the process's CPU time
// per call (every thread).
#include <dlfcn.h>
#include <fcntl.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <string>
#include <vector>

#include <fmt/core.h>

#include "bench.hpp"

namespace bench {
namespace {

constexpr unsigned kReads = 16;

struct reads16 {
    workload *w;
    size_t start;
};

long reads_asys_call(void *a) {
    auto *r = static_cast<reads16 *>(a);
    for (unsigned k = 0; k < kReads; ++k)
        if (asys_call(SYS_pread64, r->w->fd, r->w->buf[0], 4096, off_at(*r->w, r->start + k)) != 4096) return -EIO;
    return 0;
}

long reads_libc(void *a) {
    auto *r = static_cast<reads16 *>(a);
    for (unsigned k = 0; k < kReads; ++k)
        if (pread(r->w->fd, r->w->buf[0], 4096, off_at(*r->w, r->start + k)) != 4096) return -EIO;
    return 0;
}

// libasys_interpose.so's pread, loaded locally (its symbols interpose
// nothing else in this process); null if it is not there.
using pread_fn = ssize_t (*)(int, void *, size_t, off_t);
pread_fn interposed_pread() {
    static pread_fn fn = [] {
        void *h = dlopen(ASYS_INTERPOSE_PATH, RTLD_NOW | RTLD_LOCAL);
        return h ? reinterpret_cast<pread_fn>(dlsym(h, "pread")) : nullptr;
    }();
    return fn;
}

long reads_interposed(void *a) {
    auto *r = static_cast<reads16 *>(a);
    const pread_fn fn = interposed_pread();
    for (unsigned k = 0; k < kReads; ++k)
        if (fn(r->w->fd, r->w->buf[0], 4096, off_at(*r->w, r->start + k)) != 4096) return -EIO;
    return 0;
}

long getppid_libc(void *) {
    long s = 0;
    for (unsigned k = 0; k < kReads; ++k) s += getppid();
    return s;
}

// Runs one threadlet per 16 calls on g_buffered_ctx (its files are not
// O_DIRECT: the read probe skips its guard, as for the plain reads).
void run_threadlet(asys_threadlet_fn fn, unsigned tflags, workload &w, size_t s, size_t n) {
    for (size_t i = s; i < s + n; i += kReads) {
        reads16 r{&w, i};
        long ret = -1;
        asys_op op;
        asys_prep_threadlet(&op, fn, &r, tflags);
        op.ret_ptr = &ret;
        const int rc = asys_submit(g_buffered_ctx, &op);
        if (rc == 0) {  // a read was not cached after all (page-out): wait for it
            asys_cqe e;
            if (asys_wait(g_buffered_ctx, 1, nullptr, &e, 1) != 1) die("threadlet wait", EIO);
        } else if (rc != ASYS_DONE) {
            die("threadlet submit", -rc);
        }
        if (fn != getppid_libc && ret != 0) die("threadlet reads", EIO);
    }
}

void m_plain_pread(workload &w, size_t s, size_t n) {
    for (size_t i = s; i < s + n; ++i)
        if (pread(w.fd, w.buf[0], 4096, off_at(w, i)) != 4096) die("pread", errno);
}
// The nonblocking probe a threadlet's read makes (the floor of any
// inline read that cannot block).
void m_nowait_preadv2(workload &w, size_t s, size_t n) {
    for (size_t i = s; i < s + n; ++i) {
        iovec v{w.buf[0], 4096};
        if (preadv2(w.fd, &v, 1, off_at(w, i), RWF_NOWAIT) != 4096) (void)pread(w.fd, w.buf[0], 4096, off_at(w, i));
    }
}
void m_threadlet_asys_call(workload &w, size_t s, size_t n) { run_threadlet(reads_asys_call, 0, w, s, n); }
void m_threadlet_transparent(workload &w, size_t s, size_t n) {
    run_threadlet(reads_libc, ASYS_THREADLET_TRANSPARENT, w, s, n);
}
void m_threadlet_interposed(workload &w, size_t s, size_t n) {
    run_threadlet(reads_interposed, ASYS_THREADLET_TRANSPARENT, w, s, n);
}
void m_plain_getppid(workload &, size_t s, size_t n) {
    for (size_t i = s; i < s + n; ++i) (void)getppid();
}
void m_transparent_getppid(workload &w, size_t s, size_t n) {
    run_threadlet(getppid_libc, ASYS_THREADLET_TRANSPARENT, w, s, n);
}

double cpu_ns() {
    timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) * 1e9 + static_cast<double>(ts.tv_nsec);
}

long resident_bytes() {
    long pages = 0, res = 0;
    if (FILE *f = fopen("/proc/self/statm", "r")) {
        if (fscanf(f, "%ld %ld", &pages, &res) != 2) res = 0;
        fclose(f);
    }
    return res * sysconf(_SC_PAGESIZE);
}

unsigned threads_now() {
    unsigned n = 0;
    if (FILE *f = fopen("/proc/self/status", "r")) {
        char line[256];
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "Threads: %u", &n) == 1) break;
        fclose(f);
    }
    return n;
}

struct parked_pipe {
    int fd;
    char c;
};
long read_one(void *a) {
    auto *p = static_cast<parked_pipe *>(a);
    return asys_call(SYS_read, p->fd, &p->c, 1);
}

// 10,000 threadlets parked at once on reads of one pipe, then released.
void memory_rows(unsigned backend) {
    constexpr unsigned kN = 10000;
    asys_params p{};
    p.backend = backend;
    p.max_inflight = 2 * kN + 64;  // each parked threadlet holds its op and its call
    asys_ctx *ctx;
    if (int rc = asys_ctx_create(&p, &ctx); rc < 0) die("asys_ctx_create", -rc);
    asys_info info{};
    asys_ctx_info(ctx, &info);
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) die("pipe2", errno);
    std::vector<parked_pipe> pp(kN, parked_pipe{fds[0], 0});
    std::vector<long> ret(kN);
    const long rss0 = resident_bytes();
    const unsigned threads0 = threads_now();
    for (unsigned i = 0; i < kN; ++i) {
        asys_op op;
        asys_prep_threadlet(&op, read_one, &pp[i], 0);
        op.ret_ptr = &ret[i];
        if (asys_submit(ctx, &op) != 0) die("park", EIO);
    }
    const double per = static_cast<double>(resident_bytes() - rss0) / kN;
    const unsigned threads = threads_now() - threads0;
    std::string bytes(kN, 'x');
    if (write(fds[1], bytes.data(), kN) != static_cast<ssize_t>(kN)) die("write", errno);
    std::vector<asys_cqe> cqes(kN);
    for (unsigned got = 0; got < kN;) {
        const int r = asys_wait(ctx, 1, nullptr, cqes.data(), kN);
        if (r < 0) die("wait", -r);
        got += static_cast<unsigned>(r);
    }
    close(fds[0]);
    close(fds[1]);
    asys_ctx_destroy(ctx, ASYS_DESTROY_DRAIN);
    fmt::print("{:<34} {:>12.0f} {:>14}   {}\n", "10,000 parked on pipe reads", per, threads, info.reason);
}

}  // namespace

void threadlet_table(const options &o, workload &w) {
    struct row {
        const char *name;
        method_fn fn;
        int base;  // index of the row it is compared with
        std::vector<double> ns, cpu;
    };
    std::vector<row> rows = {
        {"pread", m_plain_pread, 0, {}, {}},
        {"preadv2 RWF_NOWAIT (the probe)", m_nowait_preadv2, 0, {}, {}},
        {"threadlet 16 x pread, asys_call", m_threadlet_asys_call, 0, {}, {}},
        {"transparent 16 x libc pread", m_threadlet_transparent, 0, {}, {}},
        {"transparent 16 x interposed pread", m_threadlet_interposed, 0, {}, {}},
        {"getppid", m_plain_getppid, 5, {}, {}},
        {"transparent 16 x libc getppid", m_transparent_getppid, 5, {}, {}},
    };
    if (!interposed_pread()) rows[4].fn = nullptr;  // no libasys_interpose.so here
    // This table is short (about 0.1 s a round), so it takes at least 9
    // rounds; each ratio is the median of the per-round ratios, which
    // cancels the machine's drift between rounds.
    const unsigned rounds = std::max(o.rounds, 9u);
    size_t cursor = 0;
    for (unsigned r = 0; r < rounds; ++r) {
        for (row &x : rows) {
            if (!x.fn) continue;
            method m{x.name, "", x.fn};
            const double c0 = cpu_ns();
            const size_t c_before = cursor;
            x.ns.push_back(measure(m, w, cursor, o.round_ms));
            // measure() runs a calibration call and a timed one: CPU per call over both.
            x.cpu.push_back((cpu_ns() - c0) / static_cast<double>(cursor - c_before));
        }
    }
    fmt::print("\nthreadlets: {} calls per threadlet, cached 4 KiB reads of the same file, {} interleaved "
               "rounds (median; x plain: the median of the per-round ratios; CPU: process CPU time per call)\n\n",
               kReads, rounds);
    fmt::print("{:<34} {:>8} {:>8} {:>8}\n", "method", "ns/call", "x plain", "CPU ns");
    fmt::print("{:-<34} {:->8} {:->8} {:->8}\n", "", "", "", "");
    for (row &x : rows) {
        if (!x.fn) {
            fmt::print("{:<34} {:>8}\n", x.name, "n/a");
            continue;
        }
        std::vector<double> ratios;
        for (size_t r = 0; r < x.ns.size(); ++r) ratios.push_back(x.ns[r] / rows[x.base].ns[r]);
        fmt::print("{:<34} {:>8.0f} {:>8.2f} {:>8.0f}\n", x.name, median(x.ns), median(ratios), median(x.cpu));
    }
    fmt::print("(one caught call costs transparent getppid - getppid: {:.0f} ns, {:.0f} ns of CPU)\n",
               median(rows[6].ns) - median(rows[5].ns), median(rows[6].cpu) - median(rows[5].cpu));
    fmt::print("\n{:<34} {:>12} {:>14}   {}\n", "parked threadlets", "resident B/1", "threads added", "backend");
    fmt::print("{:-<34} {:->12} {:->14}   {:-<20}\n", "", "", "", "");
    memory_rows(ASYS_BACKEND_POOL);
    memory_rows(ASYS_BACKEND_AUTO);
}

}  // namespace bench
