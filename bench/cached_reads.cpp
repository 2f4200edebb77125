// Cached reads at queue depth 1: plain pread, preadv2(RWF_NOWAIT) (the floor
// of asys's inline probe), asys_submit inline, and asys_submit forced
// through each backend with ASYS_F_ASYNC.
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>

#include <fmt/core.h>

#include "bench.hpp"

namespace bench {
namespace {

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

}  // namespace

std::vector<method> cached_read_methods() {
    return {
        {"pread", "baseline", m_pread},
        {"preadv2(RWF_NOWAIT)", "the inline probe's floor", m_preadv2_nowait},
        {"asys_submit", "auto: inline probe, O_DIRECT guard", m_asys},
        {"asys_submit BUFFERED", "inline probe, fd declared buffered", m_asys_buffered},
        {"asys_submit ASYNC ring", "forced async: io_uring backend", m_asys_ring},
        {"asys_submit ASYNC pool", "forced async: pool backend", m_asys_pool},
    };
}

}  // namespace bench
