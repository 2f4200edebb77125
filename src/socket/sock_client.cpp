// The client side of the asys socket protocol and asys_socket_open.
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include "asys/socket.h"
#include "base/errno_keeper.hpp"
#include "socket/sock_protocol.hpp"
#include "socket/sock_server.hpp"

// Every public function returns -errno and leaves errno as it found it
// (asys.h): the libc calls below set it, so each one restores it on return.
using asys::internal::errno_keeper;

extern "C" {

int asys_socket_serve_flags(asys_ctx *ctx, int fd, unsigned flags) {
    const errno_keeper keep;
    asys_info info;
    int rc = asys_ctx_info(ctx, &info);
    if (rc == 0 && (flags & ~ASYS_SOCK_NO_SIGNALS)) rc = -EINVAL;
    if (rc == 0 && ::fcntl(fd, F_GETFD) < 0) return -EBADF;  // nothing to serve (and nothing to close)
    if (rc < 0) {
        ::close(fd);
        return rc;
    }
    return asys::internal::start_sock_server(ctx, fd, flags);
}

int asys_socket_serve(asys_ctx *ctx, int fd) { return asys_socket_serve_flags(ctx, fd, 0); }

int asys_socket_count(void) { return asys::internal::g_sock_servers.load(); }

int asys_socket_open(asys_ctx *ctx) {
    const errno_keeper keep;
    asys_info info;
    if (int rc = asys_ctx_info(ctx, &info); rc < 0) return rc;
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) return -errno;
    if (int rc = asys::internal::start_sock_server(ctx, sv[1], 0); rc < 0) {
        ::close(sv[0]);
        return rc;
    }
    return sv[0];
}

int asys_socket_connect(const char *path) {
    const errno_keeper keep;
    if (!path) return -EFAULT;
    struct sockaddr_un sa {};
    sa.sun_family = AF_UNIX;
    if (std::strlen(path) >= sizeof sa.sun_path) return -ENAMETOOLONG;
    std::strcpy(sa.sun_path, path);
    const int s = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (s < 0) return -errno;
    if (::connect(s, reinterpret_cast<const sockaddr *>(&sa), sizeof sa) != 0) {
        const int err = errno;
        ::close(s);
        return -err;
    }
    // The daemon greets every client: res 0 (served) or -EACCES / -EBUSY.
    asys_sock_msg hello;
    const ssize_t n = asys_sock_recv(s, &hello, nullptr, 0);
    if (n < 0 || hello.cookie != 0 || hello.res != 0) {
        ::close(s);
        return n < 0 ? static_cast<int>(n) : hello.res < 0 ? static_cast<int>(hello.res) : -EPROTO;
    }
    return s;
}

int asys_sock_send(int sock, const struct asys_sock_msg *m, const void *payload, size_t len, int fd) {
    const errno_keeper keep;
    if (!m || (len && !payload)) return -EFAULT;
    struct iovec iov[2] = {{const_cast<asys_sock_msg *>(m), sizeof *m}, {const_cast<void *>(payload), len}};
    struct msghdr mh {};
    mh.msg_iov = iov;
    mh.msg_iovlen = len ? 2 : 1;
    alignas(struct cmsghdr) char cbuf[CMSG_SPACE(sizeof(int))];
    if (fd >= 0) {
        mh.msg_control = cbuf;
        mh.msg_controllen = sizeof cbuf;
        cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        std::memcpy(CMSG_DATA(c), &fd, sizeof fd);
    }
    while (::sendmsg(sock, &mh, MSG_NOSIGNAL) < 0)
        if (errno != EINTR) return -errno;
    return 0;
}

ssize_t asys_sock_recv(int sock, struct asys_sock_msg *m, void *payload, size_t cap) {
    const errno_keeper keep;
    if (!m || (cap && !payload)) return -EFAULT;
    struct iovec iov[2] = {{m, sizeof *m}, {payload, cap}};
    struct msghdr mh {};
    mh.msg_iov = iov;
    mh.msg_iovlen = cap ? 2 : 1;
    // Spin briefly before blocking, as asys_wait does: a reply that comes
    // within the spin is taken without a sleep and a wake-up (costs in
    // docs/benchmarks.md). recv_record: the end of the stream is believed
    // only once the last reply is known not to be queued (asysd greets a
    // client it refuses and closes at once).
    using asys::internal::recv_record;
    ssize_t n;
    const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(20);
    for (;;) {
        n = recv_record(sock, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
        if (n >= 0 || (errno != EAGAIN && errno != EINTR)) break;
        if (std::chrono::steady_clock::now() >= until) {
            while ((n = recv_record(sock, &mh, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR) {
            }
            break;
        }
    }
    if (n < 0) return -errno;
    if (n == 0) return -ECONNRESET;
    if (static_cast<size_t>(n) < sizeof *m || m->magic != ASYS_SOCK_MAGIC || m->type != ASYS_SOCK_DONE)
        return -EPROTO;
    if (mh.msg_flags & MSG_TRUNC) return -EMSGSIZE;
    return n - static_cast<ssize_t>(sizeof *m);
}

}  // extern "C"
