// The asys socket protocol's request parser (see include/asys/socket.h). A
// function of the received bytes and the number of fds that came with them
// (and of which signal asys cancels with), so that it can be fuzzed on its
// own.
#pragma once
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

}  // namespace asys::internal
