// asysd: the socket protocol served to other processes. The test starts the
// daemon on a socket in a temporary directory (it says when it listens),
// connects, registers a file and reads it through the daemon; a client
// running as another user is refused (-EACCES, checked with SO_PEERCRED);
// --max-clients turns extra clients away (-EBUSY); SIGTERM removes the
// socket and exits 0, and no client can take it (SIGNAL requests are
// refused by the daemon).
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include <cstring>
#include <string>

#include "asys/socket.h"
#include "asysd_helpers.hpp"
#include "helpers.hpp"

using namespace asys_test;

namespace {


TEST(Asysd, ServesAFileToAClient) {
    temp_dir d;
    daemon_proc daemon(d.path, "8");
    ASSERT_GT(daemon.pid, 0);
    const int s = asys_socket_connect(daemon.sock.c_str());
    ASSERT_GE(s, 0) << strerror(-s);
    int fd = make_file(d.file("data"), 10000);
    asys_sock_msg m, r;
    asys_sock_prep(&m, ASYS_SOCK_REGISTER, 1, 0, 0, 0);
    ASSERT_EQ(asys_sock_send(s, &m, nullptr, 0, fd), 0);
    ASSERT_EQ(asys_sock_recv(s, &r, nullptr, 0), 0);
    ASSERT_GE(r.res, 0);
    close(fd);
    char buf[1000];
    asys_sock_prep(&m, ASYS_SOCK_READ, 2, static_cast<uint32_t>(r.res), sizeof buf, 5000);
    ASSERT_EQ(asys_sock_send(s, &m, nullptr, 0, -1), 0);
    ASSERT_EQ(asys_sock_recv(s, &r, buf, sizeof buf), static_cast<ssize_t>(sizeof buf));
    EXPECT_EQ(r.cookie, 2u);
    EXPECT_EQ(r.res, static_cast<int64_t>(sizeof buf));
    for (size_t i = 0; i < sizeof buf; ++i) ASSERT_EQ(buf[i], pattern(5000 + i)) << i;
    close(s);
    EXPECT_EQ(daemon.stop(), 0);
    struct stat st;
    EXPECT_NE(lstat(daemon.sock.c_str(), &st), 0) << "the socket is removed on SIGTERM";
}

TEST(Asysd, RefusesAnotherUser) {
    if (geteuid() != 0)
        GTEST_SKIP() << "SKIPPED LOUDLY: running a client as another user needs root; "
                        "ServesAFileToAClient covers the accepted path";
    temp_dir d;
    ASSERT_EQ(chmod(d.path.c_str(), 0755), 0);  // let "nobody" reach the socket
    daemon_proc daemon(d.path, "8");
    ASSERT_GT(daemon.pid, 0);
    const pid_t c = fork();
    if (c == 0) {
        if (setgid(65534) != 0 || setuid(65534) != 0) _exit(3);
        const int s = asys_socket_connect(daemon.sock.c_str());
        _exit(s == -EACCES ? 0 : s >= 0 ? 1 : 2);
    }
    int st = 0;
    ASSERT_EQ(waitpid(c, &st, 0), c);
    ASSERT_TRUE(WIFEXITED(st));
    EXPECT_EQ(WEXITSTATUS(st), 0) << "1: served, 2: another error, 3: setuid failed";
    const int s = asys_socket_connect(daemon.sock.c_str());
    EXPECT_GE(s, 0) << "its own user is still served";
    if (s >= 0) close(s);
}

TEST(Asysd, MaxClients) {
    temp_dir d;
    daemon_proc daemon(d.path, "1");
    ASSERT_GT(daemon.pid, 0);
    const int a = asys_socket_connect(daemon.sock.c_str());
    ASSERT_GE(a, 0);
    EXPECT_EQ(asys_socket_connect(daemon.sock.c_str()), -EBUSY);
    close(a);
}

// Defect 15: a client asked for SIGTERM as an event and received the
// administrator's kill, and the daemon kept running. The daemon's signals
// are its own: SIGNAL requests are refused, and SIGTERM still stops it.
TEST(Asysd, RefusesSignalRequestsAndStillStopsOnSigterm) {
    temp_dir d;
    daemon_proc daemon(d.path, "8");
    ASSERT_GT(daemon.pid, 0);
    const int s = asys_socket_connect(daemon.sock.c_str());
    ASSERT_GE(s, 0) << strerror(-s);
    for (int sig : {SIGTERM, SIGINT, SIGUSR1}) {
        asys_sock_msg m, r;
        asys_sock_prep(&m, ASYS_SOCK_SIGNAL, 40, 0, 0, 0);
        m.res = sig;
        ASSERT_EQ(asys_sock_send(s, &m, nullptr, 0, -1), 0);
        struct pollfd p{s, POLLIN, 0};
        ASSERT_EQ(poll(&p, 1, 10000), 1) << "signal " << sig << " was taken as a request";
        ASSERT_EQ(asys_sock_recv(s, &r, nullptr, 0), 0);
        EXPECT_EQ(r.cookie, 40u);
        EXPECT_EQ(r.res, -EPERM) << sig;
    }
    // Other requests are still served on this connection.
    asys_sock_msg m, r;
    asys_sock_prep(&m, ASYS_SOCK_TIMER, 41, 0, 0, 0);
    m.res = 1000;
    ASSERT_EQ(asys_sock_send(s, &m, nullptr, 0, -1), 0);
    ASSERT_EQ(asys_sock_recv(s, &r, nullptr, 0), 0);
    EXPECT_EQ(r.res, 0);
    EXPECT_EQ(daemon.stop(), 0) << "the daemon did not stop on SIGTERM with a client connected";
    close(s);
}

TEST(Asysd, BadArgumentsAreRefused) {
    const pid_t c = fork();
    if (c == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, 2);
        execl(ASYSD_PATH, "asysd", "--max-clients", "many", static_cast<char *>(nullptr));
        _exit(127);
    }
    int st = 0;
    ASSERT_EQ(waitpid(c, &st, 0), c);
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 2);
    EXPECT_EQ(asys_socket_connect("/nonexistent/asysd.sock"), -ENOENT);
}

}  // namespace
