// The differential oracle (tests/oracle_core.hpp): every case's op runs as
// the plain system call and through every asys path on identical fresh
// fixtures, and the results and effects must be identical.
//
// Oracle.Enumerated runs the fixed enumeration; Oracle.Random runs seeded
// random cases (ASYS_ORACLE_SEED, ASYS_ORACLE_CASES override the defaults).
// The cases run in a worker process (this binary again, running the
// OracleWorker.Run test that exists only in it), so that a crash or a hang
// inside asys is reported as a finding for its case and the run goes on from
// the next case in a new worker. Every mismatch is printed as one line; the
// failures are grouped by op, descriptor, path and differing effect.
//
// ASYS_ORACLE_VERBOSE=1 prints every mismatching case, not only the first
// examples of each group.
#include <poll.h>
#include <spawn.h>
#include <sys/wait.h>

#include <chrono>
#include <cinttypes>
#include <map>
#include <sstream>

#include "helpers.hpp"
#include "oracle_core.hpp"

extern char **environ;

using namespace asys_test;

namespace {

constexpr uint64_t kDefaultSeed = 0x0a5c0de5eedull;
#ifdef ASYS_SANITIZER_BUILD
constexpr unsigned kDefaultRandom = 150;
constexpr unsigned kEnumStride = 5;  // sanitizer builds run a fixed subset of the enumeration
#else
constexpr unsigned kDefaultRandom = 1000;
constexpr unsigned kEnumStride = 1;
#endif
constexpr int kCaseTimeoutMs = 30000;  // no progress (a path started, a case ended) for this long: a hang

uint64_t env_u64(const char *name, uint64_t dflt) {
    const char *v = getenv(name);
    return v && *v ? strtoull(v, nullptr, 0) : dflt;
}

std::vector<oracle::case_spec> cases_for(const std::string &mode, uint64_t seed, unsigned count) {
    std::vector<oracle::case_spec> out;
    if (mode == "enum") {
        auto all = oracle::enumerate_cases();
        for (size_t i = 0; i < all.size(); i += kEnumStride) out.push_back(all[i]);
    } else {
        uint64_t st = seed;
        for (unsigned i = 0; i < count; ++i) out.push_back(oracle::random_case(st));
    }
    return out;
}

// ------------------------------------------------------------------ worker

struct worker_args {
    std::string mode, root;
    uint64_t seed = 0;
    unsigned count = 0, first = 0;
    bool odirect = false;
    int out_fd = -1;
};

bool parse_worker_env(worker_args &w) {
    const char *v = getenv("ASYS_ORACLE_WORKER");
    if (!v) return false;
    std::istringstream in(v);
    int od = 0;
    in >> w.mode >> w.seed >> w.count >> w.first >> od >> w.out_fd;
    w.odirect = od != 0;
    std::getline(in >> std::ws, w.root);
    return static_cast<bool>(in) || !w.root.empty();
}

void emit(int fd, const std::string &line) {
    std::string l = line;
    for (char &c : l)
        if (c == '\n') c = ' ';
    l += '\n';
    const char *p = l.data();
    size_t n = l.size();
    while (n) {
        ssize_t k = write(fd, p, n);
        if (k < 0) {
            if (errno == EINTR) continue;
            _exit(3);
        }
        p += k;
        n -= static_cast<size_t>(k);
    }
}

// A crash inside a path: tell the parent which path, then let the previous
// handler (the sanitizer's, or the default action) take over.
int g_out_fd = -1;
struct sigaction g_old_actions[NSIG];

void crash_handler(int sig) {
    char line[32];
    int n = snprintf(line, sizeof line, "X %d\n", static_cast<int>(oracle::g_current_path));
    if (g_out_fd >= 0 && n > 0) (void)!write(g_out_fd, line, static_cast<size_t>(n));
    sigaction(sig, &g_old_actions[sig], nullptr);
    if (sig == SIGABRT) raise(sig);
}

void install_crash_handlers(int fd) {
    g_out_fd = fd;
    for (int sig : {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT}) {
        struct sigaction sa{};
        sa.sa_handler = crash_handler;
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = SA_NODEFER;
        sigaction(sig, &sa, &g_old_actions[sig]);
    }
}

class OracleWorker : public ::testing::Test {
public:
    void TestBody() override {
        worker_args w;
        ASSERT_TRUE(parse_worker_env(w));
        asys_params pd = params(4);
        asys_params pn = params(4, 0, ASYS_CTX_INLINE_NEVER);
        asys_ctx *d = nullptr, *n = nullptr;
        ASSERT_EQ(asys_ctx_create(&pd, &d), 0);
        ASSERT_EQ(asys_ctx_create(&pn, &n), 0);
        install_crash_handlers(w.out_fd);
        {
            oracle::runner r(w.root, w.odirect, d, n);
            r.on_path([](unsigned path, void *fd) { emit(*static_cast<int *>(fd), "P " + std::to_string(path)); },
                      &w.out_fd);
            auto cases = cases_for(w.mode, w.seed, w.count);
            for (size_t i = w.first; i < cases.size(); ++i) {
                emit(w.out_fd, "B " + std::to_string(i));
                const auto t0 = std::chrono::steady_clock::now();
                auto res = r.run_case(cases[i]);
                if (getenv("ASYS_ORACLE_TIMING"))
                    fprintf(stderr, "case %zu %s: %lld us\n", i, oracle::kOpName[cases[i].op],
                            static_cast<long long>(std::chrono::duration_cast<std::chrono::microseconds>(
                                                       std::chrono::steady_clock::now() - t0)
                                                       .count()));
                for (auto &m : res.mismatches)
                    emit(w.out_fd, "M " + std::to_string(i) + " " + std::to_string(m.path) + "\t" + m.field +
                                       "\t" + m.text);
                if (!res.skipped.empty()) emit(w.out_fd, "S " + std::to_string(i) + "\t" + res.skipped);
                emit(w.out_fd, "E " + std::to_string(i) + " " + std::to_string(res.runs) + " " +
                                   std::to_string(res.not_applicable));
            }
            emit(w.out_fd, "D");
        }
        if (chdir("/") != 0) ADD_FAILURE() << "chdir";
        asys_ctx_destroy(d, ASYS_DESTROY_CANCEL);
        asys_ctx_destroy(n, ASYS_DESTROY_CANCEL);
    }
};

// The worker test exists only in a worker process.
const bool g_worker_registered = [] {
    if (!getenv("ASYS_ORACLE_WORKER")) return false;
    ::testing::RegisterTest("OracleWorker", "Run", nullptr, nullptr, __FILE__, __LINE__,
                            []() -> ::testing::Test * { return new OracleWorker; });
    return true;
}();

// ------------------------------------------------------------------ parent


std::string self_exe() {
    char b[4096];
    ssize_t n = readlink("/proc/self/exe", b, sizeof b - 1);
    if (n < 0) return {};
    b[n] = 0;
    return b;
}

bool verbose() {
    const char *v = getenv("ASYS_ORACLE_VERBOSE");
    return v && *v == '1';
}

struct report {
    unsigned cases = 0, ran = 0, runs = 0, na = 0, mismatching_cases = 0, crashes = 0;
    std::map<std::string, unsigned> skipped;  // reason -> count
    struct group {
        unsigned count = 0;
        std::vector<std::string> examples;
    };
    std::map<std::string, group> groups;  // signature -> mismatches
    std::vector<std::string> all;
};

std::string signature(const oracle::case_spec &s, unsigned path, const std::string &field) {
    std::string sig = oracle::kOpName[s.op];
    if (s.op == oracle::OP_OPENAT || s.op == oracle::OP_STATX)
        sig += std::string(" dirfd=") + oracle::kDirfdName[s.dirfd] + " path=" + oracle::kPathName[s.path];
    else
        sig += std::string(" fd=") + oracle::kFdName[s.fd];
    return sig + " | " + oracle::path_name(s, path) + " | " + field;
}

void add_mismatch(report &r, const oracle::case_spec &s, unsigned path, const std::string &field,
                  const std::string &text) {
    auto &g = r.groups[signature(s, path, field)];
    ++g.count;
    if (g.examples.size() < 2) g.examples.push_back(text);
    r.all.push_back(text);
}

/// Runs `cases` in worker processes; a worker that dies or stalls is
/// recorded against its case and replaced.
void run_cases(const std::string &mode, uint64_t seed, unsigned count, report &rep) {
    temp_dir tmp;
    std::string root = tmp.path;
    bool odirect = oracle::odirect_works(root);
    std::string fallback;
    if (!odirect) {
        // /tmp may be tmpfs: try the build directory's filesystem.
        std::string exe = self_exe();
        std::string tmpl = exe.substr(0, exe.rfind('/')) + "/oracle-odirect-XXXXXX";
        std::vector<char> b(tmpl.begin(), tmpl.end());
        b.push_back(0);
        if (mkdtemp(b.data())) {
            fallback = b.data();
            if (oracle::odirect_works(fallback)) {
                root = fallback;
                odirect = true;
            }
        }
    }
    if (!odirect)
        std::cout << "SKIPPED LOUDLY: neither " << tmp.path
                  << " nor the build directory accepts O_DIRECT; every O_DIRECT case is skipped\n";
    std::cout << "oracle fixtures in " << root << (odirect ? " (O_DIRECT works there)" : "") << "\n";

    const auto cases = cases_for(mode, seed, count);
    rep.cases = static_cast<unsigned>(cases.size());
    const std::string exe = self_exe();
    ASSERT_FALSE(exe.empty());
    size_t next = 0;
    while (next < cases.size()) {
        int pfd[2];
        ASSERT_EQ(pipe2(pfd, O_CLOEXEC), 0);
        constexpr int kChildFd = 100;
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_adddup2(&fa, pfd[1], kChildFd);
        posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
        std::vector<std::string> env;
        for (char **e = environ; *e; ++e)
            if (strncmp(*e, "ASYS_ORACLE_WORKER=", 19) != 0) env.push_back(*e);
        env.push_back("ASYS_ORACLE_WORKER=" + mode + " " + std::to_string(seed) + " " + std::to_string(count) +
                      " " + std::to_string(next) + " " + (odirect ? "1" : "0") + " " +
                      std::to_string(kChildFd) + " " + root);
        std::vector<char *> envp;
        for (auto &e : env) envp.push_back(e.data());
        envp.push_back(nullptr);
        std::string a0 = exe, a1 = "--gtest_filter=OracleWorker.Run";
        char *argv[] = {a0.data(), a1.data(), nullptr};
        pid_t pid;
        const int rc = posix_spawn(&pid, exe.c_str(), &fa, nullptr, argv, envp.data());
        posix_spawn_file_actions_destroy(&fa);
        close(pfd[1]);
        ASSERT_EQ(rc, 0) << "posix_spawn: " << strerror(rc);

        long current = -1, crash_path = -1;
        bool done = false, hung = false, case_skipped = false;
        std::string pending;
        for (;;) {
            struct pollfd p{pfd[0], POLLIN, 0};
            const int pr = poll(&p, 1, kCaseTimeoutMs);
            if (pr == 0) {
                hung = true;
                kill(pid, SIGKILL);
                break;
            }
            char buf[65536];
            ssize_t n = read(pfd[0], buf, sizeof buf);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) break;
            pending.append(buf, static_cast<size_t>(n));
            size_t nl;
            while ((nl = pending.find('\n')) != std::string::npos) {
                std::string line = pending.substr(0, nl);
                pending.erase(0, nl + 1);
                if (line == "D") {
                    done = true;
                    continue;
                }
                std::istringstream in(line);
                char kind;
                long idx;
                in >> kind >> idx;
                if (kind == 'X') {
                    crash_path = idx;  // "X <path>": the path that was running
                } else if (kind == 'B') {
                    current = idx;
                    case_skipped = false;
                } else if (kind == 'E') {
                    unsigned runs = 0, na = 0;
                    in >> runs >> na;
                    rep.runs += runs;
                    rep.na += na;
                    if (!case_skipped) ++rep.ran;
                    current = -1;
                    next = static_cast<size_t>(idx) + 1;
                } else if (kind == 'S') {
                    const auto tab = line.find('\t');
                    ++rep.skipped[tab == std::string::npos ? "?" : line.substr(tab + 1)];
                    case_skipped = true;
                } else if (kind == 'M') {
                    unsigned path = 0;
                    in >> path;
                    const auto t1 = line.find('\t'), t2 = line.find('\t', t1 + 1);
                    const std::string field = line.substr(t1 + 1, t2 - t1 - 1);
                    const std::string text = line.substr(t2 + 1);
                    if (verbose()) std::cout << "MISMATCH " << text << "\n";
                    add_mismatch(rep, cases[static_cast<size_t>(idx)], path, field, text);
                }
            }
        }
        close(pfd[0]);
        int status = 0;
        waitpid(pid, &status, 0);
        if (done) break;
        if (current < 0) {
            ADD_FAILURE() << "oracle worker died outside any case (status " << status << ") at case " << next;
            break;
        }
        const auto &s = cases[static_cast<size_t>(current)];
        std::string what = hung ? "HANG: no progress for 30 s (killed)"
                           : WIFSIGNALED(status) ? std::string("CRASH: killed by signal ") + strsignal(WTERMSIG(status))
                                                 : "CRASH: worker exited with status " + std::to_string(WEXITSTATUS(status));
        const bool known = crash_path >= 0 && crash_path < oracle::PATH__COUNT;
        const std::string text = oracle::describe(s) + " | path=" +
                                 oracle::path_name(s, known ? static_cast<unsigned>(crash_path) : unsigned{oracle::PATH__COUNT}) +
                                 " | " + what;
        std::cout << "MISMATCH " << text << "\n";
        ++rep.crashes;
        add_mismatch(rep, s, known ? static_cast<unsigned>(crash_path) : unsigned{oracle::PATH__COUNT},
                     what.substr(0, what.find(':')), text);
        next = static_cast<size_t>(current) + 1;
    }
    if (!fallback.empty()) {
        std::string cmd = "rm -rf '" + fallback + "'";
        if (system(cmd.c_str()) != 0) ADD_FAILURE() << "cleanup " << fallback;
    }
}

void print_and_judge(const char *what, const report &rep) {
    std::set<std::string> bad_cases;
    for (auto &t : rep.all) bad_cases.insert(t.substr(0, t.find(" | path=")));
    unsigned skipped = 0;
    for (auto &[why, n] : rep.skipped) skipped += n;
    std::cout << "\n=== oracle " << what << ": " << rep.cases << " cases, " << rep.ran << " run ("
              << rep.runs << " path runs, " << rep.na << " not applicable: NOWAIT said -EAGAIN), "
              << skipped << " skipped, " << rep.crashes << " killed the worker (crash or hang), "
              << rep.all.size() << " mismatches in " << bad_cases.size() << " cases; backend="
              << (getenv("ASYS_BACKEND") ? getenv("ASYS_BACKEND") : "auto") << "\n";
    for (auto &[why, n] : rep.skipped) std::cout << "  skipped " << n << ": " << why << "\n";
    for (auto &[sig, g] : rep.groups) {
        std::ostringstream msg;
        msg << g.count << " mismatch(es): " << sig;
        for (auto &ex : g.examples) msg << "\n    e.g. " << ex;
        ADD_FAILURE() << msg.str();
    }
}

TEST(Oracle, Enumerated) {
    report rep;
    run_cases("enum", 0, 0, rep);
    print_and_judge("enumeration", rep);
}

TEST(Oracle, Random) {
    const uint64_t seed = env_u64("ASYS_ORACLE_SEED", kDefaultSeed);
    const auto count = static_cast<unsigned>(env_u64("ASYS_ORACLE_CASES", kDefaultRandom));
    std::cout << "oracle random cases: " << count << " from seed " << seed
              << " (ASYS_ORACLE_SEED / ASYS_ORACLE_CASES change them)\n";
    report rep;
    run_cases("random", seed, count, rep);
    print_and_judge("random", rep);
}

}  // namespace
