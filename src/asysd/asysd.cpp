// asysd: serves the asys socket protocol (include/asys/socket.h) to other
// processes over a Unix SOCK_SEQPACKET socket. Clients pass their open files
// by SCM_RIGHTS, so the daemon never opens a path on anyone's behalf; it
// checks each client's credentials (SO_PEERCRED) before serving it: by
// default only its own user, plus any --allow-uid.
//
//   asysd --socket PATH [--allow-uid UID]... [--max-clients N] [--workers N]
//
// Prints "asysd: listening on PATH" on standard output once it accepts
// connections. SIGINT / SIGTERM: removes the socket and exits. The daemon's
// signals are its own: SIGNAL requests are refused (-EPERM), so no client
// can take the administrator's SIGTERM.
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "asys/socket.h"

namespace {

[[noreturn]] void usage(const char *why) {
    std::fprintf(stderr, "asysd: %s\nusage: asysd --socket PATH [--allow-uid UID]... [--max-clients N] [--workers N]\n",
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

}  // namespace

int main(int argc, char **argv) {
    std::string path;
    std::vector<uid_t> allowed{::geteuid()};
    unsigned long max_clients = 64, workers = 0;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (i + 1 >= argc) usage(("missing value after " + a).c_str());
        const char *v = argv[++i];
        if (a == "--socket") path = v;
        else if (a == "--allow-uid") allowed.push_back(static_cast<uid_t>(number(v, "uid")));
        else if (a == "--max-clients") max_clients = number(v, "client count");
        else if (a == "--workers") workers = number(v, "worker count");
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
    std::printf("asysd: listening on %s\n", path.c_str());
    std::fflush(stdout);

    for (;;) {
        struct pollfd pf[2] = {{ls, POLLIN, 0}, {sfd, POLLIN, 0}};
        if (::poll(pf, 2, -1) < 0) continue;
        if (pf[1].revents & POLLIN) break;
        if (!(pf[0].revents & POLLIN)) continue;
        const int c = ::accept4(ls, nullptr, nullptr, SOCK_CLOEXEC);
        if (c < 0) {
            // Out of descriptors or memory: the connection stays queued and
            // the socket stays readable; back off rather than spin (a
            // signal still stops the daemon at once).
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                struct pollfd sp{sfd, POLLIN, 0};
                (void)::poll(&sp, 1, 100);
            }
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
    ::unlink(path.c_str());
    std::fprintf(stderr, "asysd: stopped\n");
    return 0;
}
