// asys-bench: asys side by side with plain syscalls, io_uring (liburing),
// glibc POSIX AIO and libuv, on one file, in one process, interleaved rounds.
// Every figure is printed as ns/op and as a ratio to plain pread measured in
// the same run.
#include <aio.h>
#include <dirent.h>
#include <malloc.h>
#include <fcntl.h>
#include <sys/syscall.h>
#include <liburing.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>
#include <uv.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include <fmt/core.h>

#include "asys/asys.h"
#include "asys/chain.hpp"
#include "asys/socket.h"
#include "asys/syslet.h"

namespace {

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
};

struct workload {
    int fd = -1;
    std::vector<off_t> offs;  // random 4 KiB-aligned offsets, same for every method
    alignas(4096) char buf[32][4096];
};

[[noreturn]] void die(const std::string &what, int err) {
    fmt::print(stderr, "asys-bench: {}: {}\n", what, strerror(err));
    std::exit(1);
}

// ---------------------------------------------------------------- methods
// Each method performs `n` 4 KiB reads at offs[i % offs.size()] and returns.
using method_fn = std::function<void(workload &, size_t start, size_t n)>;

struct method {
    std::string name;
    std::string note;
    method_fn fn;
    unsigned batch = 1;  // reads per call of fn's inner step (for display)
    std::vector<double> ns;  // ns/op of each round
};

inline off_t off_at(const workload &w, size_t i) { return w.offs[i % w.offs.size()]; }

void m_pread(workload &w, size_t s, size_t n) {
    for (size_t i = s; i < s + n; ++i)
        if (pread(w.fd, w.buf[0], 4096, off_at(w, i)) != 4096) die("pread", errno);
}

void m_preadv2_nowait(workload &w, size_t s, size_t n) {
    for (size_t i = s; i < s + n; ++i) {
        struct iovec iov{w.buf[0], 4096};
        if (preadv2(w.fd, &iov, 1, off_at(w, i), RWF_NOWAIT) != 4096) die("preadv2", errno);
    }
}

asys_ctx *g_ctx;

void inline_qd1(workload &w, size_t s, size_t n, uint32_t flags) {
    long res;
    asys_op op;
    for (size_t i = s; i < s + n; ++i) {
        asys_prep_pread(&op, w.fd, w.buf[0], 4096, off_at(w, i));
        op.flags = flags;
        op.ret_ptr = &res;
        int rc = asys_submit(g_ctx, &op);
        if (rc != ASYS_DONE) {
            if (rc < 0) die("asys_submit", -rc);
            asys_cqe cqe;
            asys_wait(g_ctx, 1, nullptr, &cqe, 1);
        }
        if (res != 4096) die("asys read", res < 0 ? static_cast<int>(-res) : EIO);
    }
}
void m_asys(workload &w, size_t s, size_t n) { inline_qd1(w, s, n, 0); }
void m_asys_buffered(workload &w, size_t s, size_t n) { inline_qd1(w, s, n, ASYS_F_BUFFERED); }

asys_ctx *g_pool_ctx;  // pool only

void async_qd1(asys_ctx *ctx, workload &w, size_t s, size_t n) {
    long res;
    asys_op op;
    asys_cqe cqe;
    for (size_t i = s; i < s + n; ++i) {
        asys_prep_pread(&op, w.fd, w.buf[0], 4096, off_at(w, i));
        op.flags = ASYS_F_ASYNC;
        op.ret_ptr = &res;
        if (asys_submit(ctx, &op) != 0) die("asys_submit", EIO);
        int got = asys_wait(ctx, 1, nullptr, &cqe, 1);
        if (got != 1 || res != 4096) die(fmt::format("asys pool read: wait {} res {}", got, res), EIO);
    }
}

void m_asys_ring(workload &w, size_t s, size_t n) { async_qd1(g_ctx, w, s, n); }
void m_asys_pool(workload &w, size_t s, size_t n) { async_qd1(g_pool_ctx, w, s, n); }

void m_pread_x32(workload &w, size_t s, size_t n) {
    for (size_t i = s; i < s + n; i += 32)
        for (size_t k = 0; k < 32; ++k)
            if (pread(w.fd, w.buf[k], 4096, off_at(w, i + k)) != 4096) die("pread", errno);
}

void batch32(workload &w, size_t s, size_t n, uint32_t flags) {
    asys_op ops[32];
    long res[32];
    int status[32];
    for (size_t i = s; i < s + n; i += 32) {
        for (unsigned k = 0; k < 32; ++k) {
            asys_prep_pread(&ops[k], w.fd, w.buf[k], 4096, off_at(w, i + k));
            ops[k].ret_ptr = &res[k];
            ops[k].flags = flags;
        }
        if (asys_submit_batch(g_ctx, ops, 32, status) != 32) die("asys_submit_batch", EIO);
        unsigned pending = 0;
        for (int st : status) pending += st != ASYS_DONE;
        asys_cqe cqes[32];
        while (pending) {
            int got = asys_wait(g_ctx, 1, nullptr, cqes, pending);
            if (got < 0) die("asys_wait", -got);
            pending -= static_cast<unsigned>(got);
        }
    }
}
void m_asys_batch32(workload &w, size_t s, size_t n) { batch32(w, s, n, 0); }
void m_asys_batch32_ring(workload &w, size_t s, size_t n) { batch32(w, s, n, ASYS_F_ASYNC); }

io_uring g_ring;

void m_uring_qd1(workload &w, size_t s, size_t n) {
    for (size_t i = s; i < s + n; ++i) {
        io_uring_sqe *sqe = io_uring_get_sqe(&g_ring);
        io_uring_prep_read(sqe, w.fd, w.buf[0], 4096, static_cast<__u64>(off_at(w, i)));
        io_uring_submit_and_wait(&g_ring, 1);
        io_uring_cqe *cqe;
        io_uring_wait_cqe(&g_ring, &cqe);
        if (cqe->res != 4096) die("io_uring read", cqe->res < 0 ? -cqe->res : EIO);
        io_uring_cqe_seen(&g_ring, cqe);
    }
}

void m_uring_batch32(workload &w, size_t s, size_t n) {
    for (size_t i = s; i < s + n; i += 32) {
        for (unsigned k = 0; k < 32; ++k) {
            io_uring_sqe *sqe = io_uring_get_sqe(&g_ring);
            io_uring_prep_read(sqe, w.fd, w.buf[k], 4096, static_cast<__u64>(off_at(w, i + k)));
        }
        io_uring_submit_and_wait(&g_ring, 32);
        io_uring_cqe *cqe;
        unsigned head, seen = 0;
        io_uring_for_each_cqe(&g_ring, head, cqe) {
            if (cqe->res != 4096) die("io_uring read", cqe->res < 0 ? -cqe->res : EIO);
            ++seen;
        }
        io_uring_cq_advance(&g_ring, seen);
        if (seen != 32) die("io_uring batch", EIO);
    }
}

void m_posix_aio(workload &w, size_t s, size_t n) {
    for (size_t i = s; i < s + n; ++i) {
        struct aiocb cb {};
        cb.aio_fildes = w.fd;
        cb.aio_buf = w.buf[0];
        cb.aio_nbytes = 4096;
        cb.aio_offset = off_at(w, i);
        if (aio_read(&cb) != 0) die("aio_read", errno);
        const struct aiocb *list[1] = {&cb};
        while (aio_error(&cb) == EINPROGRESS) aio_suspend(list, 1, nullptr);
        if (aio_return(&cb) != 4096) die("aio_return", EIO);
    }
}

uv_loop_t *g_loop;

// One READ request and its reply through an in-process asys socket (the
// seed-001 protocol: the data travels in the reply), QD1.
int g_sock = -1;
void m_socket(workload &w, size_t s, size_t n) {
    for (size_t i = s; i < s + n; ++i) {
        asys_sock_msg m;
        asys_sock_prep(&m, ASYS_SOCK_READ, i, 0, 4096, off_at(w, i));
        if (asys_sock_send(g_sock, &m, nullptr, 0, -1) != 0) die("asys_sock_send", EIO);
        if (asys_sock_recv(g_sock, &m, w.buf[0], 4096) != 4096) die("asys_sock_recv", EIO);
    }
}

void m_libuv(workload &w, size_t s, size_t n) {
    for (size_t i = s; i < s + n; ++i) {
        uv_fs_t req;
        uv_buf_t b = uv_buf_init(w.buf[0], 4096);
        uv_fs_read(g_loop, &req, w.fd, &b, 1, off_at(w, i), [](uv_fs_t *r) {
            if (r->result != 4096) die("uv_fs_read", EIO);
        });
        uv_run(g_loop, UV_RUN_DEFAULT);
        uv_fs_req_cleanup(&req);
    }
}

// ------------------------------------------------------------- syslets
// A chain of N cached pread atoms (offsets fed through arg_ptr) vs N plain
// preads; and N getppid atoms vs N getppid calls (the bare per-atom cost).
template <unsigned N>
struct pread_chain {
    syslet_uatom a[N];
    unsigned long fd, bufp, len = 4096, off[N];
    long ret[N];
    explicit pread_chain(workload &w) : fd(static_cast<unsigned long>(w.fd)), bufp(reinterpret_cast<unsigned long>(w.buf[0])) {
        for (unsigned k = 0; k < N; ++k) {
            a[k] = syslet_uatom{};
            a[k].nr = SYS_pread64;
            a[k].ret_ptr = &ret[k];
            a[k].arg_ptr[0] = &fd;
            a[k].arg_ptr[1] = &bufp;
            a[k].arg_ptr[2] = &len;
            a[k].arg_ptr[3] = &off[k];
            a[k].next = k + 1 < N ? &a[k + 1] : nullptr;
        }
    }
};

asys_ctx *g_buffered_ctx;  // ASYS_CTX_NO_ODIRECT: chains skip the read guard

template <unsigned N, bool Buffered = false>
void m_chain_pread(workload &w, size_t s, size_t n) {
    static pread_chain<N> *c = new pread_chain<N>(w);
    asys_ctx *ctx = Buffered ? g_buffered_ctx : g_ctx;
    for (size_t i = s; i < s + n; i += N) {
        for (unsigned k = 0; k < N; ++k) c->off[k] = static_cast<unsigned long>(off_at(w, i + k));
        if (asys_async_exec(ctx, c->a) != reinterpret_cast<long>(&c->a[N - 1])) die("chain", EIO);
    }
}

// The same chain as one ASYS_OP_CHAIN op. ASYNC: skip the inline run, so
// the chain goes to io_uring as linked SQEs (g_ctx) or to the pool
// interpreter (g_pool_ctx); the op's completion is waited for.
template <unsigned N, bool Pool>
void m_chain_op_async(workload &w, size_t s, size_t n) {
    static pread_chain<N> *c = new pread_chain<N>(w);
    asys_ctx *ctx = Pool ? g_pool_ctx : g_ctx;
    for (size_t i = s; i < s + n; i += N) {
        for (unsigned k = 0; k < N; ++k) c->off[k] = static_cast<unsigned long>(off_at(w, i + k));
        asys_op op;
        asys_prep_chain(&op, c->a, nullptr);
        op.flags = ASYS_F_ASYNC | ASYS_F_CQE_ALWAYS;
        if (asys_submit(ctx, &op) != 0) die("chain op", EIO);
        asys_cqe e;
        if (asys_wait(ctx, 1, nullptr, &e, 1) != 1 || e.res != 4096) die("chain op wait", EIO);
    }
}

// The C++ builder: asys::chain::run() of N preads (offsets in chain_vars).
template <unsigned N>
void m_cpp_chain(workload &w, size_t s, size_t n) {
    struct built {
        asys::chain c;
        std::vector<asys::chain_var<off_t>> off;
        explicit built(workload &wl) {
            for (unsigned k = 0; k < N; ++k) {
                off.push_back(c.var<off_t>(0));
                c.pread(wl.fd, wl.buf[0], 4096, off.back());
            }
        }
    };
    static built *b = new built(w);
    for (size_t i = s; i < s + n; i += N) {
        for (unsigned k = 0; k < N; ++k) b->off[k].set(off_at(w, i + k));
        if (b->c.run(g_ctx).value_or(-1) != 4096) die("asys::chain", EIO);
    }
}

template <unsigned N>
void m_plain_pread(workload &w, size_t s, size_t n) {
    for (size_t i = s; i < s + n; ++i)
        if (pread(w.fd, w.buf[0], 4096, off_at(w, i)) != 4096) die("pread", errno);
}

template <unsigned N>
void m_chain_getppid(workload &, size_t s, size_t n) {
    static syslet_uatom *a = [] {
        auto *v = new syslet_uatom[N]();
        for (unsigned k = 0; k < N; ++k) {
            v[k].nr = SYS_getppid;
            v[k].next = k + 1 < N ? &v[k + 1] : nullptr;
        }
        return v;
    }();
    for (size_t i = s; i < s + n; i += N)
        if (asys_async_exec(g_ctx, a) != reinterpret_cast<long>(&a[N - 1])) die("chain", EIO);
}

void m_plain_getppid(workload &, size_t s, size_t n) {
    for (size_t i = s; i < s + n; ++i) syscall(SYS_getppid);
}

// ------------------------------------------------------ head-of-line test
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
    const auto t_end = clk::now() + std::chrono::duration<double, std::milli>(kLatBudgetMs);
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
        lat.push_back(std::chrono::duration<double, std::nano>(clk::now() - t0).count());
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
    const auto t_end = clk::now() + std::chrono::duration<double, std::milli>(kLatBudgetMs);
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
        lat.push_back(std::chrono::duration<double, std::nano>(clk::now() - t0).count());
        uv_fs_req_cleanup(&req);
    }
    stopping = true;
    uv_run(g_loop, UV_RUN_DEFAULT);  // let the cold reads finish
    return summarize(std::move(lat), cold_done);
}

// ------------------------------------------------------ O_DIRECT QD32
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
    const auto end = t0 + std::chrono::duration_cast<clk::duration>(std::chrono::duration<double, std::milli>(ms));
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
    double secs = std::chrono::duration<double>(clk::now() - t0).count();
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
    const auto end = t0 + std::chrono::duration_cast<clk::duration>(std::chrono::duration<double, std::milli>(ms));
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
    double secs = std::chrono::duration<double>(clk::now() - t0).count();
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
    const auto end = t0 + std::chrono::duration_cast<clk::duration>(std::chrono::duration<double, std::milli>(ms));
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
    double secs = std::chrono::duration<double>(clk::now() - t0).count();
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
    const auto end = t0 + std::chrono::duration_cast<clk::duration>(std::chrono::duration<double, std::milli>(ms));
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
    double secs = std::chrono::duration<double>(clk::now() - t0).count();
    asys_ctx_destroy(ctx, ASYS_DESTROY_DRAIN);
    return static_cast<double>(done) / secs;
}

// ------------------------------------------------------------- scale
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
    r.ms = std::chrono::duration<double, std::milli>(clk::now() - t0).count();
    asys_ctx_destroy(ctx, ASYS_DESTROY_DRAIN);
    close(fds[0]);
    close(fds[1]);
    return r;
}

// ---------------------------------------------------------------- runner
double measure(method &m, workload &w, size_t &cursor, double round_ms) {
    // Calibrate: grow n until one call takes >= round_ms / 4, then run.
    size_t n = 64;
    for (;;) {
        auto t0 = clk::now();
        m.fn(w, cursor, n);
        cursor += n;
        double ms = std::chrono::duration<double, std::milli>(clk::now() - t0).count();
        if (ms >= round_ms / 4) {
            size_t want = static_cast<size_t>(static_cast<double>(n) * round_ms / ms);
            want = std::max<size_t>(want / 32 * 32, 32);
            auto t1 = clk::now();
            m.fn(w, cursor, want);
            cursor += want;
            double ns = std::chrono::duration<double, std::nano>(clk::now() - t1).count();
            return ns / static_cast<double>(want);
        }
        n *= 4;
    }
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0 : v[v.size() / 2];
}

}  // namespace

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
    g_sock = asys_socket_open(g_ctx);
    if (g_sock < 0) die("asys_socket_open", -g_sock);
    {
        asys_sock_msg m;
        asys_sock_prep(&m, ASYS_SOCK_REGISTER, 0, 0, 0, 0);
        if (asys_sock_send(g_sock, &m, nullptr, 0, w.fd) != 0 || asys_sock_recv(g_sock, &m, nullptr, 0) != 0 ||
            m.res != 0)
            die("asys socket register", EIO);
    }
    asys_info info{};
    asys_ctx_info(g_ctx, &info);
    bool have_uring = io_uring_queue_init(64, &g_ring, 0) == 0;
    g_loop = uv_default_loop();

    std::vector<method> ms = {
        {"pread", "baseline", m_pread},
        {"preadv2(RWF_NOWAIT)", "the inline probe's floor", m_preadv2_nowait},
        {"asys_submit", "auto: inline probe, O_DIRECT guard", m_asys},
        {"asys_submit BUFFERED", "inline probe, fd declared buffered", m_asys_buffered},
        {"asys_submit ASYNC ring", "forced async: io_uring backend", m_asys_ring},
        {"asys_submit ASYNC pool", "forced async: pool backend", m_asys_pool},
        {"pread x32", "baseline for batches", m_pread_x32, 32},
        {"asys_submit_batch x32", "auto: 32 inline probes", m_asys_batch32, 32},
        {"asys batch x32 ASYNC", "forced through the ring: one enter", m_asys_batch32_ring, 32},
        {"io_uring QD1", "liburing, raw", m_uring_qd1},
        {"io_uring batch x32", "liburing, raw", m_uring_batch32, 32},
        {"glibc POSIX AIO", "aio_read + aio_suspend", m_posix_aio},
        {"libuv uv_fs_read", "threadpool, QD1", m_libuv},
        {"asys socket READ", "seed-001 protocol, in-process, QD1", m_socket},
        {"getppid", "baseline for the atom cost", m_plain_getppid},
        {"syslet 16 x getppid", "one chain per 16 calls", m_chain_getppid<16>, 16},
        {"syslet 1 x pread", "chain of 1 cached read atom", m_chain_pread<1>},
        {"syslet 4 x pread", "chain of 4", m_chain_pread<4>, 4},
        {"syslet 16 x pread", "chain of 16", m_chain_pread<16>, 16},
        {"syslet 1 x pread NO_ODIRECT", "chain of 1, context without O_DIRECT", m_chain_pread<1, true>},
        {"syslet 4 x pread NO_ODIRECT", "chain of 4, context without O_DIRECT", m_chain_pread<4, true>, 4},
        {"syslet 16 x pread NO_ODIRECT", "chain of 16, context without O_DIRECT", m_chain_pread<16, true>, 16},
        {"asys::chain 16 x pread", "C++ builder, run(): one ASYS_OP_CHAIN", m_cpp_chain<16>, 16},
        {"chain op 4 x pread ASYNC", "forced async: io_uring linked SQEs", m_chain_op_async<4, false>, 4},
        {"chain op 4 x pread ASYNC pool", "forced async: pool interpreter", m_chain_op_async<4, true>, 4},
    };
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

    // Head-of-line blocking: cached reads idle vs with 64 cold reads in flight.
    if (!o.skip_hol) {
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

    if (!o.skip_direct) {
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
        constexpr double kMs = 1200;
        std::vector<double> raw, ring, ring_async, pool;
        for (int r = 0; r < 2; ++r) {  // interleaved
            raw.push_back(have_uring ? direct_raw_uring(d, kMs) : 0);
            ring.push_back(have_uring ? direct_asys(d, kMs, ASYS_BACKEND_AUTO) : 0);
            ring_async.push_back(have_uring ? direct_asys(d, kMs, ASYS_BACKEND_AUTO, ASYS_F_ASYNC) : 0);
            pool.push_back(direct_asys(d, kMs, ASYS_BACKEND_POOL));
        }
        auto best = [](const std::vector<double> &v) { return *std::max_element(v.begin(), v.end()); };
        const double rb = best(raw);
        fmt::print("\nO_DIRECT 4 KiB random reads, queue depth {}, {} MiB file (best of 2 interleaved "
                   "runs of {:.1f} s)\n\n", kQD, o.direct_mib, kMs / 1000);
        fmt::print("{:<28} {:>10} {:>14}\n", "method", "IOPS", "x raw io_uring");
        fmt::print("{:-<28} {:->10} {:->14}\n", "", "", "");
        fmt::print("{:<28} {:>10.0f} {:>14.2f}\n", "raw liburing loop", rb, 1.0);
        fmt::print("{:<28} {:>10.0f} {:>14.2f}\n", "asys (io_uring backend)", best(ring), rb > 0 ? best(ring) / rb : 0);
        fmt::print("{:<28} {:>10.0f} {:>14.2f}\n", "asys (io_uring, ASYNC flag)", best(ring_async),
                   rb > 0 ? best(ring_async) / rb : 0);
        fmt::print("{:<28} {:>10.0f} {:>14.2f}\n", "asys (pool backend)", best(pool), rb > 0 ? best(pool) / rb : 0);

        std::vector<double> craw, cring, cpool;
        constexpr double kChainMs = 800;
        for (int r = 0; r < 2; ++r) {  // interleaved
            craw.push_back(have_uring ? direct_chains_raw(d, kChainMs) : 0);
            cring.push_back(have_uring ? direct_chains_asys(d, kChainMs, ASYS_BACKEND_AUTO) : 0);
            cpool.push_back(direct_chains_asys(d, kChainMs, ASYS_BACKEND_POOL));
        }
        const double cb = best(craw);
        fmt::print("\nO_DIRECT chains: {} chains of {} linked 4 KiB random reads in flight (reads/s, best of 2 "
                   "interleaved runs of {:.1f} s)\n\n", kChains, kChainLen, kChainMs / 1000);
        fmt::print("{:<28} {:>10} {:>14}\n", "method", "reads/s", "x raw links");
        fmt::print("{:-<28} {:->10} {:->14}\n", "", "", "");
        fmt::print("{:<28} {:>10.0f} {:>14.2f}\n", "raw liburing IO_LINK", cb, 1.0);
        fmt::print("{:<28} {:>10.0f} {:>14.2f}\n", "asys chain (io_uring links)", best(cring), cb > 0 ? best(cring) / cb : 0);
        fmt::print("{:<28} {:>10.0f} {:>14.2f}\n", "asys chain (pool interp.)", best(cpool), cb > 0 ? best(cpool) / cb : 0);
        if (!have_uring) fmt::print("(io_uring unavailable here: its rows are 0)\n");
        free(mem);
        close(d.fd);
    }

    {
        constexpr unsigned kScaleOps = 100000;
        fmt::print("\nscale: {} reads in flight at once (one pipe, released together)\n\n", kScaleOps);
        fmt::print("{:<24} {:>14} {:>13} {:>10}\n", "backend", "library B/op", "threads added", "total ms");
        fmt::print("{:-<24} {:->14} {:->13} {:->10}\n", "", "", "", "");
        for (unsigned b : {unsigned{ASYS_BACKEND_POOL}, unsigned{ASYS_BACKEND_AUTO}}) {
            scale_result r = scale_run(b, kScaleOps);
            fmt::print("{:<24} {:>14.1f} {:>13} {:>10.0f}\n", b == ASYS_BACKEND_POOL ? "pool" : "io_uring + pool",
                       r.bytes_per_op, r.threads, r.ms);
        }
    }

    close(g_sock);
    asys_ctx_destroy(g_ctx, ASYS_DESTROY_DRAIN);
    asys_ctx_destroy(g_pool_ctx, ASYS_DESTROY_DRAIN);
    asys_ctx_destroy(g_buffered_ctx, ASYS_DESTROY_DRAIN);
    if (have_uring) io_uring_queue_exit(&g_ring);
    uv_loop_close(g_loop);
    close(w.fd);
    if (temp && !o.keep) unlink(o.file.c_str());
    return 0;
}
