// Batches of 32 cached reads per call: 32 plain preads, one
// asys_submit_batch of 32 (through the ring when there is one, reported done
// when the kernel completed them during the enter), and the same batch forced through
// the ring with ASYS_F_ASYNC (one io_uring_enter).
#include <unistd.h>

#include <cerrno>

#include "bench.hpp"

namespace bench {
namespace {

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

}  // namespace

std::vector<method> batch_methods() {
    return {
        {"pread x32", "baseline for batches", m_pread_x32, 32},
        {"asys_submit_batch x32", "auto: one enter, done during it", m_asys_batch32, 32},
        {"asys batch x32 ASYNC", "forced through the ring: one enter", m_asys_batch32_ring, 32},
    };
}

}  // namespace bench
