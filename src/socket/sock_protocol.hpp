// The asys socket protocol's request parser (see include/asys/socket.h). A
// function of the received bytes and the number of fds that came with them
// (and of which signal asys cancels with), so that it can be fuzzed on its
// own. And how both ends receive a record (recv_record).
#pragma once
#include <sys/socket.h>
#include <sys/types.h>

#include <cstddef>
#include <cstdint>

#include "asys/socket.h"

namespace asys::internal {

struct sock_request {
    asys_sock_msg h{};              ///< the header (zero if too short to hold one)
    const uint8_t *payload = nullptr;  ///< WRITE: the bytes to write
    size_t payload_len = 0;
};

/// Validates one received record of `n` bytes that came with `nfds` fds.
/// Returns 0, or the -errno its reply must carry (-EPROTO, -EBADMSG,
/// -EMSGSIZE, -EINVAL). out->h is filled whenever the header was complete,
/// so that an error reply can echo the cookie.
int parse_request(const uint8_t *buf, size_t n, unsigned nfds, sock_request *out) noexcept;

/// recvmsg(2) of one record from a SOCK_SEQPACKET socket: its size, or -1
/// and errno, as recvmsg returns them, without one false result. Linux
/// looks at the receive queue before it looks at the peer's shutdown, so a
/// receive that races the peer's last record and its close (or
/// shutdown(SHUT_WR)) can return 0, the end of the stream, with that record
/// queued (docs/socket.md; asysd's greeting to a client it refuses, sent
/// just before it closes, is one). Once the peer is seen shut, every
/// record it sent is queued: a 0 that brought no fds is then read once
/// more. 0 is still an empty record or the end, which only the hang-up
/// (POLLRDHUP) tells apart; an empty record (never a valid message) just
/// before the end may pass for the end.
ssize_t recv_record(int fd, struct msghdr *mh, int flags) noexcept;

}  // namespace asys::internal
