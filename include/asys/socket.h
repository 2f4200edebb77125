/* asys sockets — socket-based AIO (docs/design.md): one pollable socket per pool of
 * requests. Files are handed over once by SCM_RIGHTS and named by a handle
 * afterwards; reads, writes, syncs and timers are submitted with sendmsg and
 * retired with recvmsg. Each message is one record on an AF_UNIX
 * SOCK_SEQPACKET socket: a struct asys_sock_msg header, then the payload
 * (the bytes of a write request, or of a read reply). No pointer crosses the
 * socket, so the same protocol is served in-process (asys_socket_open) and
 * by the asysd daemon to other processes (asys_socket_connect).
 *
 * Requests (client -> server), one reply each (type ASYS_SOCK_DONE, same
 * cookie), in completion order:
 *   REGISTER    one fd in SCM_RIGHTS      → res: a handle (>= 0)
 *   UNREGISTER  handle                    → res: 0
 *   READ        handle, len, offset       → res: bytes read; payload: them
 *   WRITE       handle, len, offset;
 *               payload: len bytes        → res: bytes written
 *   FSYNC, FDATASYNC  handle              → res: 0
 *   TIMER       res: nanoseconds          → res: 0 when it expires
 *   SIGNAL      res: a signal number      → res: the number when it arrives;
 *                                           payload: its struct
 *                                           signalfd_siginfo (block the
 *                                           signal in your threads first);
 *                                           -EINVAL for SIGKILL, SIGSTOP and
 *                                           asys' cancel signal
 *                                           (SIGRTMAX - 3); -EPERM from a
 *                                           server with ASYS_SOCK_NO_SIGNALS
 *                                           (asysd)
 *   CANCEL      cookie of a request       → res: 0 (cancelled while queued),
 *               (in `offset`)               -EALREADY (interrupted), -ENOENT;
 *                                           the cancelled request's own
 *                                           reply carries -ECANCELED
 *   METRICS     offset: ASYS_METRICS_TEXT → res: the text's length; payload:
 *               or _PROMETHEUS              the serving context's metrics
 *                                           (asys_metrics_format), no NUL
 * offset is an lseek64 position; -1 uses (and advances) the file position.
 * A malformed request gets a reply with -EPROTO (bad magic or version),
 * -EBADMSG (bad type, size or fields), -EMSGSIZE (len above
 * ASYS_SOCK_MAX_IO) or -EBADF (unknown handle); fds that came with a request
 * that takes none are closed.
 *
 * Waits hold no thread: timers, signals and the reads and writes of
 * registered streams (pipes, sockets, eventfds...) are tried without
 * blocking on the server's thread and wait in its poll. What a client runs
 * in the context at once (file I/O, syncs, streams that cannot be used
 * without blocking, such as ttys) is capped at half the context's pool
 * workers (at least 1); beyond it a request that would block is answered
 * -EBUSY at once (docs/socket.md).
 *
 * The server never blocks on a reply: replies the client's socket has no
 * room for wait in a backlog of at most ASYS_SOCK_MAX_INFLIGHT; one more
 * disconnects the client. A client that keeps no more requests unanswered
 * (sent, reply not yet received) is never disconnected. A client that shut
 * its write side (shutdown(SHUT_WR)) still gets every reply, then the server
 * ends. A client that is gone (closed, shut its read side so that a reply
 * fails, or disconnected) has its requests in flight cancelled; the server
 * ends once they complete. Every public function here leaves errno as it
 * found it. The original socket-AIO proposal put the offset and cookie in
 * ancillary data; AF_UNIX drops ancillary data of other levels than
 * SOL_SOCKET, so they live in the header instead.
 *
 * Compiles as C99 and as C++.
 */
#ifndef ASYS_SOCKET_H
#define ASYS_SOCKET_H
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "asys/asys.h"

#ifdef __cplusplus
extern "C" {
#endif

#define ASYS_SOCK_MAGIC   0x53595341u /* "ASYS" little-endian */
#define ASYS_SOCK_VERSION 1u
#define ASYS_SOCK_MAX_IO  (1u << 16)  /* largest read or write per request:
                                         a record must fit the socket's
                                         default send buffer (~208 KiB) */
#define ASYS_SOCK_MAX_INFLIGHT 256u   /* per socket; more: -EAGAIN replies  */
#define ASYS_SOCK_MAX_HANDLES 1024u   /* registered fds per socket          */

enum asys_sock_type {
    ASYS_SOCK_REGISTER = 1,
    ASYS_SOCK_UNREGISTER,
    ASYS_SOCK_READ,
    ASYS_SOCK_WRITE,
    ASYS_SOCK_FSYNC,
    ASYS_SOCK_FDATASYNC,
    ASYS_SOCK_TIMER,
    ASYS_SOCK_CANCEL,
    ASYS_SOCK_SIGNAL,
    ASYS_SOCK_METRICS,
    ASYS_SOCK__REQUESTS,
    ASYS_SOCK_DONE = 0x80 /* every reply */
};

/** The header of every message (40 bytes, host byte order). */
struct asys_sock_msg {
    uint32_t magic;    /* ASYS_SOCK_MAGIC                                  */
    uint16_t version;  /* ASYS_SOCK_VERSION                                */
    uint16_t type;     /* enum asys_sock_type                              */
    uint64_t cookie;   /* the client's; echoed in the reply                */
    uint32_t handle;   /* a registered fd                                  */
    uint32_t len;      /* READ: bytes wanted; WRITE: payload bytes; reply:
                          payload bytes                                     */
    int64_t  offset;   /* file position, -1: current; CANCEL: the cookie   */
    int64_t  res;      /* reply: result or -errno; TIMER request: ns;
                          SIGNAL request: the signal number; else 0        */
};

#if defined(__cplusplus) && defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wold-style-cast" /* C-compatible inline code */
#endif
/** Fills a request header. */
static inline void asys_sock_prep(struct asys_sock_msg *m, unsigned type, uint64_t cookie,
                                  uint32_t handle, uint32_t len, int64_t offset)
{
    m->magic = ASYS_SOCK_MAGIC;
    m->version = ASYS_SOCK_VERSION;
    m->type = (uint16_t)type;
    m->cookie = cookie;
    m->handle = handle;
    m->len = len;
    m->offset = offset;
    m->res = 0;
}
#if defined(__cplusplus) && defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

/* Serves the protocol on a new socket pair, in this process, with `ctx`
 * running the requests. Returns the client end (SOCK_SEQPACKET, CLOEXEC,
 * pollable) or -errno. Closing it ends the server: requests in flight are
 * cancelled and their fds closed. Close every socket of a context before
 * destroying the context (after that, requests are answered -EBADF). */
ASYS_API int asys_socket_open(asys_ctx *ctx);

/* Serves the protocol on `fd`, an already connected SOCK_SEQPACKET socket
 * (one your own server accepted, say), with `ctx`. Takes `fd` in every case.
 * 0 or -errno. asys_socket_open() is socketpair() + this. */
ASYS_API int asys_socket_serve(asys_ctx *ctx, int fd);

/* Flags of asys_socket_serve_flags. */
#define ASYS_SOCK_NO_SIGNALS 0x1u /* SIGNAL requests are answered -EPERM: the
                                     client must not take this process's
                                     signals (asysd serves every client so) */

/* asys_socket_serve() with `flags` (ASYS_SOCK_NO_SIGNALS, or 0: the same as
 * asys_socket_serve). -EINVAL for unknown flags. Takes `fd` in every case. */
ASYS_API int asys_socket_serve_flags(asys_ctx *ctx, int fd, unsigned flags);

/* How many sockets are being served in this process right now. */
ASYS_API int asys_socket_count(void);

/* Connects to an asysd daemon listening at `path`. Returns the socket or
 * -errno (-EACCES: the daemon refused this user). */
ASYS_API int asys_socket_connect(const char *path);

/* Sends one request: the header, `len` payload bytes (WRITE), and `fd`
 * (>= 0: passed by SCM_RIGHTS, for REGISTER). Returns 0 or -errno. */
ASYS_API int asys_sock_send(int sock, const struct asys_sock_msg *m, const void *payload, size_t len,
                            int fd);

/* Receives one reply: its header into *m and up to `cap` payload bytes into
 * `payload`. Returns the payload size, or -errno (-EMSGSIZE: the payload was
 * larger than `cap` and is lost; -ECONNRESET: the server closed; -EPROTO: not
 * a reply). */
ASYS_API ssize_t asys_sock_recv(int sock, struct asys_sock_msg *m, void *payload, size_t cap);

#ifdef __cplusplus
}
#endif
#endif /* ASYS_SOCKET_H */
