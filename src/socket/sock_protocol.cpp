#include "socket/sock_protocol.hpp"

#include <poll.h>
#include <signal.h>

#include <cerrno>
#include <cstring>

#include "base/denylist.hpp"
#include "base/fault.hpp"

namespace asys::internal {

namespace {

/// The peer has closed or shut its writes (or we shut our reads): nothing
/// more will be queued.
bool peer_shut(int fd) noexcept {
    struct pollfd p{fd, POLLRDHUP, 0};
    return ::poll(&p, 1, 0) == 1 && (p.revents & POLLRDHUP);
}

}  // namespace

ssize_t recv_record(int fd, struct msghdr *mh, int flags) noexcept {
    const size_t control = mh->msg_controllen;
    ssize_t n;
    if (fault::false_ends.load(std::memory_order_relaxed) && peer_shut(fd) && fault::take(fault::false_ends)) {
        mh->msg_controllen = 0;  // what the kernel's false end looks like
        mh->msg_flags = 0;
        n = 0;
    } else {
        n = ::recvmsg(fd, mh, flags);
    }
    // A record, an error, an empty record that brought fds, or one from a
    // peer that has not shut (the kernel says "the end" only after it has).
    if (n != 0 || mh->msg_controllen != 0 || !peer_shut(fd)) return n;
    mh->msg_controllen = control;
    mh->msg_flags = 0;
    return ::recvmsg(fd, mh, flags | MSG_DONTWAIT);
}

int parse_request(const uint8_t *buf, size_t n, unsigned nfds, sock_request *out) noexcept {
    *out = sock_request{};
    if (!buf || n < sizeof(asys_sock_msg)) return -EBADMSG;
    std::memcpy(&out->h, buf, sizeof out->h);
    const asys_sock_msg &h = out->h;
    if (h.magic != ASYS_SOCK_MAGIC || h.version != ASYS_SOCK_VERSION) return -EPROTO;
    if (h.type == 0 || h.type >= ASYS_SOCK__REQUESTS) return -EBADMSG;
    const size_t extra = n - sizeof h;
    // Only REGISTER carries an fd, and exactly one.
    if ((h.type == ASYS_SOCK_REGISTER) != (nfds == 1) || nfds > 1) return -EBADMSG;
    // Only WRITE carries a payload, of exactly len bytes.
    if (h.type == ASYS_SOCK_WRITE) {
        if (h.len > ASYS_SOCK_MAX_IO) return -EMSGSIZE;
        if (extra != h.len) return -EBADMSG;
        out->payload = buf + sizeof h;
        out->payload_len = extra;
    } else if (extra != 0) {
        return -EBADMSG;
    }
    if (h.type != ASYS_SOCK_TIMER && h.type != ASYS_SOCK_SIGNAL && h.res != 0) return -EBADMSG;
    switch (h.type) {
        case ASYS_SOCK_READ:
            if (h.len > ASYS_SOCK_MAX_IO) return -EMSGSIZE;
            [[fallthrough]];
        case ASYS_SOCK_WRITE:
            if (h.offset < -1) return -EINVAL;
            return 0;
        case ASYS_SOCK_TIMER:
            if (h.res < 0) return -EINVAL;
            [[fallthrough]];
        case ASYS_SOCK_REGISTER:
        case ASYS_SOCK_UNREGISTER:
        case ASYS_SOCK_FSYNC:
        case ASYS_SOCK_FDATASYNC:
            if (h.len != 0 || (h.type != ASYS_SOCK_TIMER && h.offset != 0)) return -EBADMSG;
            if (h.type == ASYS_SOCK_TIMER && h.offset != 0) return -EBADMSG;
            return 0;
        case ASYS_SOCK_SIGNAL:
            // Not SIGKILL or SIGSTOP (they cannot be waited for), nor the
            // signal asys interrupts its workers with (taking it would eat
            // cancellations).
            if (h.res < 1 || h.res > 64 || h.res == SIGKILL || h.res == SIGSTOP ||
                h.res == library_signal())
                return -EINVAL;
            if (h.len != 0 || h.offset != 0) return -EBADMSG;
            return 0;
        case ASYS_SOCK_CANCEL:  // offset: the cookie to cancel
            if (h.len != 0) return -EBADMSG;
            return 0;
        case ASYS_SOCK_METRICS:  // offset: the format
            if (h.len != 0 || h.handle != 0) return -EBADMSG;
            if (h.offset != ASYS_METRICS_TEXT && h.offset != ASYS_METRICS_PROMETHEUS) return -EINVAL;
            return 0;
        default:
            return -EBADMSG;
    }
}

}  // namespace asys::internal
