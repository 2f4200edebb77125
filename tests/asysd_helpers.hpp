// Shared by the asysd tests: the daemon run as a child process (the test's
// build defines ASYSD_PATH), started and stopped with bounded waits.
#pragma once
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <string>

namespace asys_test {

/// Entries of a /proc directory (fds, tasks), or -1 if it cannot be read.
inline int proc_entries(const std::string &dir) {
    DIR *d = opendir(dir.c_str());
    if (!d) return -1;
    int n = 0;
    while (dirent *e = readdir(d)) n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/// asysd serving `dir`/asysd.sock with --max-clients (and, given a port,
/// --metrics-http); the constructor waits for its "listening" line (what
/// it printed up to there is in `banner`), the destructor stops it.
struct daemon_proc {
    pid_t pid = -1;
    std::string sock;
    std::string banner;
    daemon_proc(const std::string &dir, const char *max_clients, const char *metrics_port = nullptr)
        : sock(dir + "/asysd.sock") {
        int out[2];
        if (pipe2(out, O_CLOEXEC) != 0) return;
        pid = fork();
        if (pid == 0) {
            dup2(out[1], 1);
            if (metrics_port)
                execl(ASYSD_PATH, "asysd", "--socket", sock.c_str(), "--max-clients", max_clients,
                      "--metrics-http", metrics_port, static_cast<char *>(nullptr));
            else
                execl(ASYSD_PATH, "asysd", "--socket", sock.c_str(), "--max-clients", max_clients,
                      static_cast<char *>(nullptr));
            _exit(127);
        }
        close(out[1]);
        // Wait for "asysd: listening on ..." (the daemon prints it once the
        // socket accepts connections).
        char line[512] = {};
        size_t got = 0;
        while (got < sizeof line - 1 && !strstr(line, "listening")) {
            const ssize_t n = read(out[0], line + got, sizeof line - 1 - got);
            if (n <= 0) break;
            got += static_cast<size_t>(n);
        }
        for (const char *l; got < sizeof line - 1 && (l = strstr(line, "listening")) && !strchr(l, '\n');) {
            const ssize_t n = read(out[0], line + got, sizeof line - 1 - got);
            if (n <= 0) break;
            got += static_cast<size_t>(n);
        }
        close(out[0]);
        banner = line;
        EXPECT_NE(strstr(line, "asysd: listening on"), nullptr) << line;
    }
    int fds() const { return proc_entries("/proc/" + std::to_string(pid) + "/fd"); }
    int threads() const { return proc_entries("/proc/" + std::to_string(pid) + "/task"); }
    /// SIGTERM; its exit status, 128 + the signal if it died of one, or -2
    /// if it was still running 10 s later (then it is killed).
    int stop() {
        if (pid <= 0) return -1;
        kill(pid, SIGTERM);
        int st = 0;
        pid_t r = 0;
        for (int i = 0; i < 10000 && (r = waitpid(pid, &st, WNOHANG)) == 0; ++i) poll(nullptr, 0, 1);
        if (r == 0) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
        }
        pid = -1;
        return r == 0 ? -2 : WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    }
    ~daemon_proc() { stop(); }
    daemon_proc(const daemon_proc &) = delete;
    daemon_proc &operator=(const daemon_proc &) = delete;
};

}  // namespace asys_test
