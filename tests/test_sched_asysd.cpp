// Metrics over the socket protocol (the METRICS request, in-process and
// through asysd) and asysd's opt-in loopback HTTP endpoint
// (docs/scheduling.md).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstring>
#include <string>

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
