// Syslet chains on cached reads: a chain of N pread atoms (offsets fed
// through arg_ptr) vs N plain preads, N getppid atoms vs N getppid calls (the
// bare per-atom cost), the C++ builder asys::chain, and the chain as one
// ASYS_OP_CHAIN op forced through io_uring links or the pool interpreter.
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

#include "asys/chain.hpp"
#include "asys/syslet.h"
#include "bench.hpp"

namespace bench {
namespace {

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

}  // namespace

std::vector<method> chain_methods() {
    return {
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
}

}  // namespace bench
