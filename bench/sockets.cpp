// One READ request and its reply through an in-process asys socket (the
// socket protocol: the data travels in the reply), QD1.
#include <unistd.h>

#include <cerrno>

#include "asys/socket.h"
#include "bench.hpp"

namespace bench {
namespace {

int g_sock = -1;

void m_socket(workload &w, size_t s, size_t n) {
    for (size_t i = s; i < s + n; ++i) {
        asys_sock_msg m;
        asys_sock_prep(&m, ASYS_SOCK_READ, i, 0, 4096, off_at(w, i));
        if (asys_sock_send(g_sock, &m, nullptr, 0, -1) != 0) die("asys_sock_send", EIO);
        if (asys_sock_recv(g_sock, &m, w.buf[0], 4096) != 4096) die("asys_sock_recv", EIO);
    }
}

}  // namespace

void sockets_init(const workload &w) {
    g_sock = asys_socket_open(g_ctx);
    if (g_sock < 0) die("asys_socket_open", -g_sock);
    asys_sock_msg m;
    asys_sock_prep(&m, ASYS_SOCK_REGISTER, 0, 0, 0, 0);
    if (asys_sock_send(g_sock, &m, nullptr, 0, w.fd) != 0 || asys_sock_recv(g_sock, &m, nullptr, 0) != 0 ||
        m.res != 0)
        die("asys socket register", EIO);
}

void sockets_fini() { close(g_sock); }

std::vector<method> socket_methods() {
    return {
        {"asys socket READ", "seed-001 protocol, in-process, QD1", m_socket},
    };
}

}  // namespace bench
