// asys-echo: a coroutine echo server on loopback.
//
//   asys-echo --port P                      serve until killed (up to 255
//                                           connections at once)
//   asys-echo --selftest N [--connections C] serve N requests from an
//       in-process client (C connections, one thread, blocking sockets with
//       a 10 s receive timeout), check every echo, stop; exit 0 on success.
//
// One coroutine accepts; each connection is a spawned coroutine that
// receives and sends back until the peer closes. Everything runs on the
// thread that drives the context: a recv that finds data completes inline,
// one that would block suspends until the context's pool completes it.
#include <asys/asys.hpp>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

namespace {

struct server_stats {
    unsigned long sessions = 0, bytes = 0;
};

asys::task<void> session(asys::context &ctx, int fd, server_stats &st) {
    char buf[4096];
    for (;;) {
        auto got = co_await ctx.recv(fd, buf, sizeof buf);
        if (!got || *got == 0) break;
        size_t off = 0;
        while (off < static_cast<size_t>(*got)) {
            auto sent = co_await ctx.send(fd, buf + off, static_cast<size_t>(*got) - off, MSG_NOSIGNAL);
            if (!sent) break;
            off += static_cast<size_t>(*sent);
        }
        st.bytes += off;
    }
    (void)co_await ctx.close(fd);
}

/// Accepts until `stop` is requested (the pending accept completes ECANCELED).
asys::task<void> accept_loop(asys::context &ctx, int lfd, std::stop_token stop, server_stats &st) {
    while (!stop.stop_requested()) {
        auto fd = co_await ctx.accept(lfd, nullptr, nullptr, SOCK_CLOEXEC).with_stop(stop);
        if (!fd) {
            if (fd.error() == ECANCELED) break;
            std::fprintf(stderr, "asys-echo: accept: %s\n", std::strerror(fd.error()));
            continue;
        }
        int one = 1;
        setsockopt(*fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        ++st.sessions;
        asys::spawn(ctx, session(ctx, *fd, st));
    }
}

sockaddr_in loopback(uint16_t port) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(port);
    return a;
}

int listen_loopback(uint16_t port, uint16_t *bound) {
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a = loopback(port);
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, reinterpret_cast<sockaddr *>(&a), sizeof a) != 0 || listen(fd, 128) != 0 ||
        getsockname(fd, reinterpret_cast<sockaddr *>(&a), &len) != 0) {
        std::perror("asys-echo: listen");
        if (fd >= 0) ::close(fd);
        return -1;
    }
    *bound = ntohs(a.sin_port);
    return fd;
}

/// The client of --selftest: `requests` requests spread over `conns`
/// connections, each request a distinct 64-byte message checked on return.
/// Returns the echoes that matched.
unsigned long run_client(uint16_t port, unsigned long requests, unsigned conns) {
    std::vector<int> fds;
    for (unsigned c = 0; c < conns; ++c) {
        const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        timeval tv{10, 0};  // a bound: a lost echo fails the run instead of hanging it
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        const sockaddr_in a = loopback(port);
        if (connect(fd, reinterpret_cast<const sockaddr *>(&a), sizeof a) != 0) {
            std::perror("asys-echo client: connect");
            ::close(fd);
            break;
        }
        fds.push_back(fd);
    }
    unsigned long ok = 0;
    for (unsigned long i = 0; i < requests && !fds.empty(); ++i) {
        const int fd = fds[i % fds.size()];
        char msg[64] = {}, back[64];
        std::snprintf(msg, sizeof msg, "request %lu of %lu", i, requests);
        if (send(fd, msg, sizeof msg, MSG_NOSIGNAL) != static_cast<ssize_t>(sizeof msg)) break;
        size_t got = 0;
        while (got < sizeof back) {
            const ssize_t n = recv(fd, back + got, sizeof back - got, 0);
            if (n <= 0) break;
            got += static_cast<size_t>(n);
        }
        if (got != sizeof back) break;
        ok += std::memcmp(msg, back, sizeof msg) == 0;
    }
    for (int fd : fds) ::close(fd);
    return ok;
}

}  // namespace

int main(int argc, char **argv) {
    unsigned long selftest = 0;
    unsigned conns = 8;
    uint16_t port = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        const std::string opt = argv[i];
        const unsigned long v = std::strtoul(argv[i + 1], nullptr, 10);
        if (opt == "--selftest") selftest = v;
        else if (opt == "--connections") conns = static_cast<unsigned>(v ? v : 1);
        else if (opt == "--port") port = static_cast<uint16_t>(v);
    }
    if (argc < 3 || (!selftest && !port)) {
        std::fprintf(stderr, "usage: %s --port P | --selftest N [--connections C]\n", argv[0]);
        return 2;
    }
    uint16_t bound = 0;
    const int lfd = listen_loopback(selftest ? 0 : port, &bound);
    if (lfd < 0) return 1;

    // Each idle connection waits in a recv, and on the pool a waiting recv
    // holds a worker: with fewer workers than connections + the accept, a
    // request can queue behind recvs that wait for requests the client
    // sends only after its answer (docs/cpp.md, "Blocking ops hold workers").
    asys_params params{};
    params.workers = selftest ? conns + 2 : 256;
    params.class_workers[ASYS_CLASS_NET] = static_cast<uint16_t>(params.workers);  // all of them (docs/scheduling.md)
    asys::context ctx(params);
    server_stats st;
    std::stop_source stop;
    unsigned long echoed = 0;
    std::thread client;
    if (selftest) {
        client = std::thread([&] {
            echoed = run_client(bound, selftest, conns);
            stop.request_stop();  // from this thread: cancels the server's pending accept
        });
    } else {
        std::printf("asys-echo: listening on 127.0.0.1:%u\n", bound);
        std::fflush(stdout);
    }
    asys::sync_wait(ctx, accept_loop(ctx, lfd, stop.get_token(), st));
    ctx.run();  // the sessions end as the client closes its connections
    if (client.joinable()) client.join();
    ::close(lfd);
    std::printf("asys-echo: %lu sessions, %lu bytes echoed, %lu of %lu requests matched, %llu suspensions\n",
                st.sessions, st.bytes, echoed, selftest, static_cast<unsigned long long>(ctx.suspensions()));
    return echoed == selftest && st.bytes == selftest * 64 ? 0 : 1;
}
