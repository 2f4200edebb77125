// asysd: serves the asys socket protocol (include/asys/socket.h) to other
// processes over a Unix SOCK_SEQPACKET socket. Clients pass their open files
// by SCM_RIGHTS, so the daemon never opens a path on anyone's behalf; it
// checks each client's credentials (SO_PEERCRED) before serving it: by
// default only its own user, plus any --allow-uid.
//
//   asysd --socket PATH [--allow-uid UID]... [--max-clients N] [--workers N]
//         [--metrics-http PORT]
//
// Prints "asysd: listening on PATH" on standard output once it accepts
// connections. Its context's metrics (docs/scheduling.md) are served to
// clients by the METRICS request and, with --metrics-http, in the
// Prometheus text format at http://127.0.0.1:PORT/metrics (loopback only;
// PORT 0 picks a free one; "asysd: metrics on http://127.0.0.1:N/metrics"
// is printed before the listening line). SIGINT / SIGTERM: removes the socket and exits. The daemon's
// signals are its own: SIGNAL requests are refused (-EPERM), so no client
// can take the administrator's SIGTERM.
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "asys/socket.h"

namespace {

[[noreturn]] void usage(const char *why) {
    std::fprintf(stderr,
                 "asysd: %s\nusage: asysd --socket PATH [--allow-uid UID]... [--max-clients N] [--workers N] "
                 "[--metrics-http PORT]\n",
                 why);
    std::exit(2);
}

unsigned long number(const char *s, const char *what) {
    char *end = nullptr;
    errno = 0;
    const unsigned long v = std::strtoul(s, &end, 10);
    if (errno || !end || *end || !*s) usage((std::string("bad ") + what + ": " + s).c_str());
    return v;
}

void greet(int fd, long res) {
    asys_sock_msg m;
    asys_sock_prep(&m, ASYS_SOCK_DONE, 0, 0, 0, 0);
    m.res = res;
    (void)::send(fd, &m, sizeof m, MSG_NOSIGNAL | MSG_DONTWAIT);
}

// The opt-in metrics endpoint: a loopback TCP socket, or -1 (and a message).
int listen_http(unsigned long port, unsigned *bound) {
    const int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    struct sockaddr_in a {};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    const int one = 1;
    socklen_t len = sizeof a;
    if (s < 0 || ::setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        ::bind(s, reinterpret_cast<sockaddr *>(&a), sizeof a) != 0 || ::listen(s, 16) != 0 ||
        ::getsockname(s, reinterpret_cast<sockaddr *>(&a), &len) != 0) {
        std::fprintf(stderr, "asysd: metrics port %lu: %s\n", port, std::strerror(errno));
        if (s >= 0) ::close(s);
        return -1;
    }
    *bound = ntohs(a.sin_port);
    return s;
}

// The response to one metrics request: GET /metrics gets the Prometheus
// text, anything else 404.
std::string http_response(const std::string &req, asys_ctx *ctx) {
    std::string body, status = "404 Not Found";
    if (req.rfind("GET /metrics ", 0) == 0 || req.rfind("GET /metrics?", 0) == 0) {
        asys_metrics m;
        if (asys_ctx_metrics(ctx, &m) == 0) {
            const long need = asys_metrics_format(&m, ASYS_METRICS_PROMETHEUS, nullptr, 0);
            if (need > 0) {
                body.resize(static_cast<size_t>(need) + 1);
                asys_metrics_format(&m, ASYS_METRICS_PROMETHEUS, body.data(), body.size());
                body.resize(static_cast<size_t>(need));
                status = "200 OK";
            }
        }
    }
    return "HTTP/1.1 " + status +
           "\r\nContent-Type: text/plain; version=0.0.4\r\nConnection: close\r\n"
           "Content-Length: " +
           std::to_string(body.size()) + "\r\n\r\n" + body;
}

// The metrics endpoint's connections, served by the daemon's loop without
// ever blocking it: each is read and written only when poll says it may,
// and closed when its exchange is done or kHttpDeadline after it was
// accepted, whichever comes first. At most kMaxHttpConns at once; more are
// closed as soon as they are accepted. So no metrics client can hold the
// loop that accepts socket clients and stops on SIGTERM (a client sending
// one byte every 150 ms once held it for as long as it went on).
constexpr size_t kMaxHttpConns = 8;
constexpr auto kHttpDeadline = std::chrono::seconds(1);
constexpr size_t kMaxHttpRequest = 2047;  // bytes read of a request; more are not read

struct http_conn {
    int fd;
    std::chrono::steady_clock::time_point deadline;
    std::string in;   ///< the request so far
    std::string out;  ///< the response, once the request is in
    size_t sent = 0;
};

// One step of a connection poll reported: false once it is over (done,
// failed or gone), then the caller closes it.
bool http_step(http_conn &c, asys_ctx *ctx) {
    if (c.out.empty()) {
        char buf[512];
        const size_t room = std::min(sizeof buf, kMaxHttpRequest - c.in.size());
        const ssize_t n = ::recv(c.fd, buf, room, MSG_DONTWAIT);
        if (n < 0) return errno == EAGAIN || errno == EINTR;
        c.in.append(buf, static_cast<size_t>(n));
        const bool whole = c.in.find("\r\n\r\n") != std::string::npos || c.in.find("\n\n") != std::string::npos;
        // The end of the headers, the most that is read, or the client's end.
        if (!whole && n > 0 && c.in.size() < kMaxHttpRequest) return true;
        c.out = http_response(c.in, ctx);
    }
    while (c.sent < c.out.size()) {
        const ssize_t n = ::send(c.fd, c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) return errno == EAGAIN || errno == EINTR;
        c.sent += static_cast<size_t>(n);
    }
    return false;
}

// After an accept failed: out of descriptors or memory, the connection
// stays queued and the socket stays readable, so the loop backs off for
// 100 ms rather than spin (a signal on sfd still stops the daemon at once).
void back_off_if_out_of_resources(int err, int sfd) {
    if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
        struct pollfd sp{sfd, POLLIN, 0};
        (void)::poll(&sp, 1, 100);
    }
}

// Accepts what waits on the metrics socket.
void http_accept(int ls, std::vector<http_conn> &conns, int sfd) {
    int c;
    while ((c = ::accept4(ls, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK)) >= 0) {
        if (conns.size() >= kMaxHttpConns) {
            ::close(c);  // too many at once
            continue;
        }
        conns.push_back(http_conn{c, std::chrono::steady_clock::now() + kHttpDeadline, {}, {}, 0});
    }
    back_off_if_out_of_resources(errno, sfd);
}

// The poll timeout that wakes the loop for the first connection's
// deadline: -1 (none), or milliseconds, rounded up.
int http_timeout(const std::vector<http_conn> &conns) {
    if (conns.empty()) return -1;
    auto first = conns.front().deadline;
    for (const http_conn &c : conns) first = std::min(first, c.deadline);
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(first - std::chrono::steady_clock::now());
    return static_cast<int>(std::max<long long>(0, left.count()));
}

}  // namespace

int main(int argc, char **argv) {
    std::string path;
    std::vector<uid_t> allowed{::geteuid()};
    unsigned long max_clients = 64, workers = 0;
    long metrics_port = -1;  // no HTTP endpoint
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (i + 1 >= argc) usage(("missing value after " + a).c_str());
        const char *v = argv[++i];
        if (a == "--socket") path = v;
        else if (a == "--allow-uid") allowed.push_back(static_cast<uid_t>(number(v, "uid")));
        else if (a == "--max-clients") max_clients = number(v, "client count");
        else if (a == "--workers") workers = number(v, "worker count");
        else if (a == "--metrics-http") {
            metrics_port = static_cast<long>(number(v, "port"));
            if (metrics_port > 65535) usage("bad port");
        }
        else usage(("unknown option " + a).c_str());
    }
    if (path.empty()) usage("--socket is required");
    struct sockaddr_un sa {};
    sa.sun_family = AF_UNIX;
    if (path.size() >= sizeof sa.sun_path) usage("socket path too long");
    std::strcpy(sa.sun_path, path.c_str());

    // Each client holds descriptors (its socket, registered files, timers):
    // use all the process may have, so that one client's files do not turn
    // every other client away.
    struct rlimit nofile;
    if (::getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
        nofile.rlim_cur = nofile.rlim_max;
        (void)::setrlimit(RLIMIT_NOFILE, &nofile);
    }

    asys_params p{};
    p.workers = static_cast<unsigned>(workers);
    asys_ctx *ctx = nullptr;
    if (int rc = asys_ctx_create(&p, &ctx); rc < 0) {
        std::fprintf(stderr, "asysd: asys_ctx_create: %s\n", std::strerror(-rc));
        return 1;
    }
    const int ls = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    struct stat st;
    if (::lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) ::unlink(path.c_str());  // stale
    if (ls < 0 || ::bind(ls, reinterpret_cast<sockaddr *>(&sa), sizeof sa) != 0 || ::listen(ls, 64) != 0) {
        std::fprintf(stderr, "asysd: %s: %s\n", path.c_str(), std::strerror(errno));
        return 1;
    }
    // Anyone may connect; credentials decide who is served.
    ::chmod(path.c_str(), 0666);

    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    sigprocmask(SIG_BLOCK, &sigs, nullptr);
    const int sfd = ::signalfd(-1, &sigs, SFD_CLOEXEC);
    ::signal(SIGPIPE, SIG_IGN);
    int hs = -1;
    if (metrics_port >= 0) {
        unsigned bound = 0;
        hs = listen_http(static_cast<unsigned long>(metrics_port), &bound);
        if (hs < 0) return 1;
        std::printf("asysd: metrics on http://127.0.0.1:%u/metrics\n", bound);
    }
    std::printf("asysd: listening on %s\n", path.c_str());
    std::fflush(stdout);

    std::vector<http_conn> http;  // the metrics endpoint's connections
    std::vector<struct pollfd> pf;
    for (;;) {
        pf.assign({{ls, POLLIN, 0}, {sfd, POLLIN, 0}, {hs, POLLIN, 0}});
        for (const http_conn &c : http) pf.push_back({c.fd, static_cast<short>(c.out.empty() ? POLLIN : POLLOUT), 0});
        if (::poll(pf.data(), hs >= 0 ? pf.size() : 2, http_timeout(http)) < 0) continue;
        if (pf[1].revents & POLLIN) break;
        // The metrics connections: a step each that poll reported, then
        // the ones past their deadline are closed.
        const auto now = std::chrono::steady_clock::now();
        size_t keep = 0;
        for (size_t i = 0; i < http.size(); ++i) {
            const bool go_on = (pf[3 + i].revents == 0 || http_step(http[i], ctx)) && now < http[i].deadline;
            if (go_on) http[keep++] = std::move(http[i]);
            else ::close(http[i].fd);
        }
        http.resize(keep);
        if (hs >= 0 && (pf[2].revents & POLLIN)) http_accept(hs, http, sfd);
        if (!(pf[0].revents & POLLIN)) continue;
        const int c = ::accept4(ls, nullptr, nullptr, SOCK_CLOEXEC);
        if (c < 0) {
            back_off_if_out_of_resources(errno, sfd);
            continue;
        }
        struct ucred cred {};
        socklen_t len = sizeof cred;
        bool ok = ::getsockopt(c, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0;
        bool listed = false;
        for (uid_t u : allowed) listed |= ok && cred.uid == u;
        if (!listed) {
            std::fprintf(stderr, "asysd: refused pid %d uid %u\n", static_cast<int>(cred.pid), cred.uid);
            greet(c, -EACCES);
            ::close(c);
            continue;
        }
        if (static_cast<unsigned long>(asys_socket_count()) >= max_clients) {
            greet(c, -EBUSY);
            ::close(c);
            continue;
        }
        greet(c, 0);
        if (int rc = asys_socket_serve_flags(ctx, c, ASYS_SOCK_NO_SIGNALS); rc < 0)
            std::fprintf(stderr, "asysd: serve: %s\n", std::strerror(-rc));
    }
    ::close(ls);
    for (const http_conn &c : http) ::close(c.fd);
    if (hs >= 0) ::close(hs);
    ::unlink(path.c_str());
    std::fprintf(stderr, "asysd: stopped\n");
    return 0;
}
