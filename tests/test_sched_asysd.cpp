// Metrics over the socket protocol (the METRICS request, in-process and
// through asysd) and asysd's opt-in loopback HTTP endpoint
// (docs/scheduling.md).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <atomic>
#include <cstring>
#include <string>
#include <thread>

#include "asys/socket.h"
#include "asysd_helpers.hpp"
#include "helpers.hpp"

using namespace asys_test;

namespace {

// One METRICS request on `s`; the reply's text, or "" with *res set.
std::string request_metrics(int s, int64_t format, int64_t *res) {
    asys_sock_msg m, r;
    asys_sock_prep(&m, ASYS_SOCK_METRICS, 77, 0, 0, format);
    EXPECT_EQ(asys_sock_send(s, &m, nullptr, 0, -1), 0);
    static char buf[ASYS_SOCK_MAX_IO];
    const ssize_t n = asys_sock_recv(s, &r, buf, sizeof buf);
    EXPECT_GE(n, 0);
    EXPECT_EQ(r.cookie, 77u);
    *res = r.res;
    return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
}

// GET `path` from 127.0.0.1:port; the whole response.
std::string http_get(unsigned port, const char *path) {
    const int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(connect(c, reinterpret_cast<sockaddr *>(&a), sizeof a), 0) << strerror(errno);
    const std::string req = std::string("GET ") + path + " HTTP/1.0\r\nHost: localhost\r\n\r\n";
    EXPECT_EQ(send(c, req.data(), req.size(), MSG_NOSIGNAL), static_cast<ssize_t>(req.size()));
    std::string out;
    char buf[4096];
    for (ssize_t n; (n = recv(c, buf, sizeof buf, 0)) > 0;) out.append(buf, static_cast<size_t>(n));
    close(c);
    return out;
}

/// A slowloris client of the metrics endpoint: connects, then sends one byte
/// of a request that never ends every 50 ms (its pace, not a
/// synchronisation), for at most 20 s or until stopped. `ran_out` says it
/// kept going for its whole 20 s: whoever waited for it waited that long.
struct slow_http_client {
    int fd = -1;
    std::atomic<bool> stop{false}, ran_out{false};
    std::thread t;
    explicit slow_http_client(unsigned port) {
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(static_cast<uint16_t>(port));
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr *>(&a), sizeof a), 0) << strerror(errno);
        t = std::thread([this] {
            struct timespec t0, now;
            clock_gettime(CLOCK_MONOTONIC, &t0);
            while (!stop) {
                clock_gettime(CLOCK_MONOTONIC, &now);
                if (now.tv_sec - t0.tv_sec >= 20) {
                    ran_out = true;
                    return;
                }
                (void)send(fd, "G", 1, MSG_NOSIGNAL);  // fails once the daemon let it go: it just goes on
                poll(nullptr, 0, 50);
            }
        });
    }
    ~slow_http_client() {
        stop = true;
        t.join();
        close(fd);
    }
};

unsigned metrics_port(const daemon_proc &daemon) {
    const char *at = strstr(daemon.banner.c_str(), "http://127.0.0.1:");
    EXPECT_NE(at, nullptr) << daemon.banner;
    return at ? static_cast<unsigned>(atoi(at + strlen("http://127.0.0.1:"))) : 0;
}

}  // namespace

TEST(SchedSocket, MetricsRequestInProcess) {
    ctx_guard ctx;
    ASSERT_TRUE(ctx.ctx);
    asys_op op;
    long res;
    asys_prep_nop(&op, 1);
    op.ret_ptr = &res;
    ASSERT_EQ(asys_submit(ctx, &op), ASYS_DONE);
    const int s = asys_socket_open(ctx);
    ASSERT_GE(s, 0);
    int64_t r = 0;
    const std::string text = request_metrics(s, ASYS_METRICS_TEXT, &r);
    EXPECT_EQ(r, static_cast<int64_t>(text.size()));
    EXPECT_NE(text.find("\nmeta.inline "), std::string::npos) << text;
    const std::string prom = request_metrics(s, ASYS_METRICS_PROMETHEUS, &r);
    EXPECT_EQ(r, static_cast<int64_t>(prom.size()));
    EXPECT_NE(prom.find("# TYPE asys_ops_submitted_total counter"), std::string::npos) << prom;
    EXPECT_EQ(request_metrics(s, 7, &r), "");
    EXPECT_EQ(r, -EINVAL) << "unknown format";
    close(s);
}

TEST(SchedSocket, AsysdServesMetricsBySocketAndHttp) {
    temp_dir d;
    daemon_proc daemon(d.path, "8", "0");
    ASSERT_GT(daemon.pid, 0);
    const char *at = strstr(daemon.banner.c_str(), "http://127.0.0.1:");
    ASSERT_NE(at, nullptr) << daemon.banner;
    const unsigned port = static_cast<unsigned>(atoi(at + strlen("http://127.0.0.1:")));
    ASSERT_GT(port, 0u);

    const int s = asys_socket_connect(daemon.sock.c_str());
    ASSERT_GE(s, 0) << strerror(-s);
    int64_t r = 0;
    const std::string text = request_metrics(s, ASYS_METRICS_TEXT, &r);
    EXPECT_GT(r, 0);
    EXPECT_NE(text.find("workers_max "), std::string::npos) << text;
    close(s);

    const std::string ok = http_get(port, "/metrics");
    EXPECT_EQ(ok.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << ok;
    EXPECT_NE(ok.find("Content-Type: text/plain; version=0.0.4"), std::string::npos) << ok;
    EXPECT_NE(ok.find("\r\n\r\n# HELP asys_ops_submitted_total"), std::string::npos) << ok;
    EXPECT_NE(ok.find("asys_backend_info{backend="), std::string::npos) << ok;
    const std::string missing = http_get(port, "/other");
    EXPECT_EQ(missing.rfind("HTTP/1.1 404 Not Found\r\n", 0), 0u) << missing;
    EXPECT_EQ(daemon.stop(), 0);
}

// Review 22: the metrics endpoint read a request with a 200 ms limit per
// byte on the daemon's only loop, so a client sending a byte every 150 ms
// held it: a client of the main socket waited 9.35 s to connect, SIGTERM
// 9.29 s. Now a slow metrics client delays no one: while one trickles, a
// client of the main socket connects and is served, another metrics client
// gets its page, the slow one is let go (a deadline for the whole
// exchange), and (with a second one trickling) SIGTERM stops the daemon.
TEST(SchedSocket, ASlowMetricsClientDelaysNoOne) {
    temp_dir d;
    daemon_proc daemon(d.path, "8", "0");
    ASSERT_GT(daemon.pid, 0);
    const unsigned port = metrics_port(daemon);
    ASSERT_GT(port, 0u);
    const int base_fds = daemon.fds();
    {
        slow_http_client slow(port);
        // The daemon has accepted it (one more descriptor).
        ASSERT_TRUE(eventually([&] { return daemon.fds() == base_fds + 1; })) << daemon.fds() << " " << base_fds;
        const int s = asys_socket_connect(daemon.sock.c_str());
        ASSERT_GE(s, 0) << strerror(-s);
        asys_sock_msg m, r;
        asys_sock_prep(&m, ASYS_SOCK_TIMER, 5, 0, 0, 0);
        ASSERT_EQ(asys_sock_send(s, &m, nullptr, 0, -1), 0);
        ASSERT_EQ(asys_sock_recv(s, &r, nullptr, 0), 0);
        EXPECT_EQ(r.cookie, 5u);
        close(s);
        const std::string ok = http_get(port, "/metrics");
        EXPECT_EQ(ok.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << ok;
        // And the daemon lets it go at its deadline while it still trickles.
        EXPECT_TRUE(eventually([&] { return daemon.fds() == base_fds; })) << "the slow client is never let go";
        EXPECT_FALSE(slow.ran_out) << "the daemon's clients waited for the slow metrics client";
    }
    ASSERT_TRUE(eventually([&] { return daemon.fds() == base_fds; })) << "the slow client's connection stays";
    slow_http_client slow(port);
    ASSERT_TRUE(eventually([&] { return daemon.fds() == base_fds + 1; }));
    EXPECT_EQ(daemon.stop(), 0) << "SIGTERM waited for the slow metrics client";
    EXPECT_FALSE(slow.ran_out) << "SIGTERM waited for the slow metrics client";
}
