// The server side of the asys socket protocol: one thread per socket parses
// requests, runs them as asys ops on a context, and sends one reply per
// request as its op completes. Used in-process (asys_socket_open) and by
// asysd for each accepted client. Replies never block the server: those the
// client has no room for wait in a bounded backlog. A client found gone
// (hang-up, receive error, a reply that cannot be sent, an overflowing
// backlog) has its requests cancelled, and the server ends once they
// complete; a half-closed client still gets its replies.
#pragma once
#include <atomic>

#include "asys/asys.h"

namespace asys::internal {

/// Serves `fd` (a connected SOCK_SEQPACKET socket, owned from now on) with
/// `ctx` on a new detached thread; `flags`: ASYS_SOCK_NO_SIGNALS or 0.
/// 0 or -errno (then fd is closed).
int start_sock_server(asys_ctx *ctx, int fd, unsigned flags) noexcept;

/// Servers running now (each one's thread exits after its client closed and
/// its requests in flight completed). Notified (atomic wait) on every exit.
extern std::atomic<int> g_sock_servers;

}  // namespace asys::internal
