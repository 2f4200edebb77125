// The server side of the asys socket protocol: one thread per socket parses
// requests, runs them as asys ops on a context, and sends one reply per
// request as its op completes. Used in-process (asys_socket_open) and by
// asysd for each accepted client.
#pragma once
#include <atomic>

#include "asys/asys.h"

namespace asys::internal {

/// Serves `fd` (a connected SOCK_SEQPACKET socket, owned from now on) with
/// `ctx` on a new detached thread. 0 or -errno (then fd is closed).
int start_sock_server(asys_ctx *ctx, int fd) noexcept;

/// Servers running now (each one's thread exits after its client closed and
/// its requests in flight completed). Notified (atomic wait) on every exit.
extern std::atomic<int> g_sock_servers;

}  // namespace asys::internal
