// libFuzzer target: the asys socket protocol (include/asys/socket.h).
//  1. parse_request() on arbitrary records with 0, 1 or 2 fds never crashes,
//     and what it accepts follows the documented rules (header, type,
//     REGISTER iff one fd, WRITE payload of exactly len bytes, len within
//     ASYS_SOCK_MAX_IO, offsets >= -1, TIMER ns >= 0, SIGNAL not SIGKILL,
//     SIGSTOP or the cancel signal, METRICS in a known format).
//  2. The same record sent to a live in-process server (handle 0 is
//     /dev/zero, read-write) gets exactly one well-formed reply, and the
//     server keeps serving. Records the harness cannot let through are
//     skipped: long timers and signals (they wait by design) and
//     unregistering handle 0.
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "asys/socket.h"
#include "socket/sock_protocol.hpp"

namespace {

void check(bool ok, const char *what) {
    if (!ok) {
        fprintf(stderr, "invariant violated: %s\n", what);
        abort();
    }
}

struct env {
    asys_ctx *ctx = nullptr;
    int sock = -1;
    env() {
        asys_params p{};
        p.workers = 2;
        if (asys_ctx_create(&p, &ctx) != 0) abort();
        sock = asys_socket_open(ctx);
        const int zero = open("/dev/zero", O_RDWR | O_CLOEXEC);
        if (sock < 0 || zero < 0) abort();
        asys_sock_msg m, r;
        asys_sock_prep(&m, ASYS_SOCK_REGISTER, 1, 0, 0, 0);
        if (asys_sock_send(sock, &m, nullptr, 0, zero) != 0) abort();
        if (asys_sock_recv(sock, &r, nullptr, 0) != 0 || r.res != 0) abort();
        close(zero);
    }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    const unsigned nfds = data[0] % 3;
    const uint8_t *rec = data + 1;
    const size_t n = size - 1;

    asys::internal::sock_request q;
    const int rc = asys::internal::parse_request(rec, n, nfds, &q);
    check(rc <= 0, "0 or -errno");
    check(rc == 0 || rc == -EPROTO || rc == -EBADMSG || rc == -EMSGSIZE || rc == -EINVAL, "documented errors");
    if (rc == 0) {
        const asys_sock_msg &h = q.h;
        check(n >= sizeof h && h.magic == ASYS_SOCK_MAGIC && h.version == ASYS_SOCK_VERSION, "header");
        check(h.type >= ASYS_SOCK_REGISTER && h.type < ASYS_SOCK__REQUESTS, "request type");
        check((h.type == ASYS_SOCK_REGISTER) == (nfds == 1), "one fd, only with REGISTER");
        if (h.type == ASYS_SOCK_WRITE)
            check(q.payload_len == h.len && h.len <= ASYS_SOCK_MAX_IO && q.payload == rec + sizeof h &&
                      n == sizeof h + h.len,
                  "write payload");
        else
            check(n == sizeof h && q.payload_len == 0, "no payload");
        if (h.type == ASYS_SOCK_READ) check(h.len <= ASYS_SOCK_MAX_IO, "read size");
        if (h.type == ASYS_SOCK_READ || h.type == ASYS_SOCK_WRITE) check(h.offset >= -1, "offset");
        if (h.type == ASYS_SOCK_TIMER) check(h.res >= 0, "timer ns");
        if (h.type == ASYS_SOCK_METRICS)
            check(h.len == 0 && h.handle == 0 && h.res == 0 &&
                      (h.offset == ASYS_METRICS_TEXT || h.offset == ASYS_METRICS_PROMETHEUS),
                  "metrics: a known format, no other field");
        if (h.type == ASYS_SOCK_SIGNAL)  // not SIGKILL, SIGSTOP or asys' cancel signal
            check(h.res >= 1 && h.res <= 64 && h.res != SIGKILL && h.res != SIGSTOP && h.res != SIGRTMAX - 3,
                  "signal");
    }

    // Through a live server. No fds are sent, so the server sees the record
    // as parsed with 0 fds.
    static env e;
    asys::internal::sock_request q0;
    const int rc0 = asys::internal::parse_request(rec, n, 0, &q0);
    if (n > sizeof(asys_sock_msg) + ASYS_SOCK_MAX_IO) return 0;  // beyond a record's size
    if (rc0 == 0 && q0.h.type == ASYS_SOCK_TIMER && q0.h.res > 1000000) return 0;
    if (rc0 == 0 && q0.h.type == ASYS_SOCK_UNREGISTER && q0.h.handle == 0) return 0;
    if (rc0 == 0 && q0.h.type == ASYS_SOCK_SIGNAL) return 0;  // no signal comes: waits forever
    if (send(e.sock, rec, n, MSG_NOSIGNAL) != static_cast<ssize_t>(n)) return 0;
    static uint8_t payload[ASYS_SOCK_MAX_IO];
    asys_sock_msg r;
    const ssize_t got = asys_sock_recv(e.sock, &r, payload, sizeof payload);
    check(got >= 0, "exactly one well-formed reply");
    check(r.type == ASYS_SOCK_DONE && r.len == static_cast<uint32_t>(got), "reply header");
    if (n >= sizeof(asys_sock_msg)) {
        asys_sock_msg h;
        memcpy(&h, rec, sizeof h);
        check(r.cookie == h.cookie, "the reply echoes the cookie");
    }
    const bool in_range = q0.h.offset == -1 || q0.h.offset <= INT64_MAX - static_cast<int64_t>(q0.h.len);
    if (rc0 == 0 && q0.h.type == ASYS_SOCK_READ && q0.h.handle == 0 && in_range)
        // A nonblocking read of a character device may stop early (when the
        // kernel wants to reschedule); read(2) allows any count > 0.
        check(q0.h.len == 0 ? r.res == 0 : (r.res > 0 && r.res <= static_cast<int64_t>(q0.h.len)),
              "a /dev/zero read returns data");
    else if (rc0 == 0 && q0.h.type == ASYS_SOCK_METRICS)
        check(r.res > 0 && r.res == got && memchr(payload, '\0', static_cast<size_t>(got)) == nullptr,
              "metrics: the text, its length in res");
    else if (rc0 != 0)
        check(r.res == rc0, "a refused record's reply carries the parser's error");
    return 0;
}
