// The same cached reads through the peers asys is measured against: raw
// liburing (QD1 and batches of 32), glibc POSIX AIO, the same POSIX AIO
// calls through libasys-aio (loaded with dlopen, so that glibc's stay in the
// same process), and libuv's threadpool.
#include <aio.h>
#include <dlfcn.h>
#include <liburing.h>
#include <uv.h>

#include <cerrno>

#include <fmt/core.h>

#include "bench.hpp"

namespace bench {

uv_loop_s *g_loop;

namespace {

io_uring g_ring;
bool g_have_uring = false;

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

// The POSIX AIO entry points one row uses: glibc's, or libasys-aio's
// (dlopen'ed beside glibc's).
struct aio_api {
    int (*read)(struct aiocb *) = nullptr;
    int (*error)(const struct aiocb *) = nullptr;
    ssize_t (*ret)(struct aiocb *) = nullptr;
    int (*suspend)(const struct aiocb *const[], int, const struct timespec *) = nullptr;
};
const aio_api g_glibc_aio{aio_read, aio_error, aio_return, aio_suspend};
aio_api g_asys_aio;

bool load_asys_aio() {
    void *h = dlopen(ASYS_AIO_LIBRARY, RTLD_NOW | RTLD_LOCAL);
    if (!h) return false;
    g_asys_aio.read = reinterpret_cast<decltype(aio_api::read)>(dlsym(h, "aio_read"));
    g_asys_aio.error = reinterpret_cast<decltype(aio_api::error)>(dlsym(h, "aio_error"));
    g_asys_aio.ret = reinterpret_cast<decltype(aio_api::ret)>(dlsym(h, "aio_return"));
    g_asys_aio.suspend = reinterpret_cast<decltype(aio_api::suspend)>(dlsym(h, "aio_suspend"));
    return g_asys_aio.read && g_asys_aio.error && g_asys_aio.ret && g_asys_aio.suspend;
}

// QD1: aio_read, aio_suspend until done, aio_return.
void aio_loop(const aio_api &a, workload &w, size_t s, size_t n) {
    for (size_t i = s; i < s + n; ++i) {
        struct aiocb cb {};
        cb.aio_fildes = w.fd;
        cb.aio_buf = w.buf[0];
        cb.aio_nbytes = 4096;
        cb.aio_offset = off_at(w, i);
        cb.aio_sigevent.sigev_notify = SIGEV_NONE;
        if (a.read(&cb) != 0) die("aio_read", errno);
        const struct aiocb *list[1] = {&cb};
        while (a.error(&cb) == EINPROGRESS) a.suspend(list, 1, nullptr);
        if (a.ret(&cb) != 4096) die("aio_return", EIO);
    }
}

void m_posix_aio(workload &w, size_t s, size_t n) { aio_loop(g_glibc_aio, w, s, n); }
void m_asys_aio(workload &w, size_t s, size_t n) { aio_loop(g_asys_aio, w, s, n); }

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

}  // namespace

bool peers_init() {
    g_have_uring = io_uring_queue_init(64, &g_ring, 0) == 0;
    g_loop = uv_default_loop();
    return g_have_uring;
}

void peers_fini() {
    if (g_have_uring) io_uring_queue_exit(&g_ring);
    uv_loop_close(g_loop);
}

std::vector<method> peer_methods() {
    std::vector<method> rows = {
        {"io_uring QD1", "liburing, raw", m_uring_qd1},
        {"io_uring batch x32", "liburing, raw", m_uring_batch32, 32},
        {"glibc POSIX AIO", "aio_read + aio_suspend", m_posix_aio},
    };
    if (load_asys_aio())
        rows.push_back({"asys-aio POSIX AIO", "the same calls through libasys-aio", m_asys_aio});
    else
        fmt::print(stderr, "asys-bench: libasys-aio not loadable ({}): no asys-aio row\n", dlerror());
    rows.push_back({"libuv uv_fs_read", "threadpool, QD1", m_libuv});
    return rows;
}

}  // namespace bench
