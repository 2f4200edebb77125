// libFuzzer target: the differential oracle (tests/oracle_core.hpp) on a
// case decoded from the input. The first sixteen bytes are an
// oracle::case_spec (each byte an index, reduced modulo its table), exactly
// the "[spec ...]" hex that test_oracle prints with every mismatch, so a
// mismatch found by either tool is replayed by writing those bytes to a file
// and running this target on it.
//
// The case's op runs as the plain system call and through every asys path
// (flags 0, ASYNC, NOWAIT, SYNC, BUFFERED, an INLINE_NEVER context, one- and
// two-atom chains) on identical fresh fixtures in a private temporary
// directory; any difference in result or effect aborts with a one-line
// description. Combinations whose plain call would block forever are not
// run. ASYS_BACKEND selects the backend (auto: io_uring when available).
#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "../oracle_core.hpp"

namespace {

std::string g_root;

void remove_root() {
    if (g_root.empty()) return;
    const std::string cmd = "rm -rf '" + g_root + "'";
    if (system(cmd.c_str()) != 0) fprintf(stderr, "fuzz_oracle: could not remove %s\n", g_root.c_str());
}


std::string make_root(const std::string &base) {
    std::string tmpl = base + "/asys-fuzz-oracle-XXXXXX";
    if (!mkdtemp(tmpl.data())) return {};
    return tmpl;
}

oracle::runner &the_runner() {
    static oracle::runner *r = [] {
        const char *t = getenv("TMPDIR");
        g_root = make_root(t && *t ? t : "/tmp");
        if (g_root.empty()) {
            fprintf(stderr, "fuzz_oracle: no temporary directory\n");
            abort();
        }
        bool od = oracle::odirect_works(g_root);
        if (!od) {
            // /tmp may be tmpfs: try the working directory's filesystem.
            char cwd[4096];
            if (getcwd(cwd, sizeof cwd)) {
                std::string alt = make_root(cwd);
                if (!alt.empty() && oracle::odirect_works(alt)) {
                    remove_root();
                    g_root = alt;
                    od = true;
                } else if (!alt.empty()) {
                    rmdir(alt.c_str());
                }
            }
        }
        if (!od) fprintf(stderr, "fuzz_oracle: SKIPPING O_DIRECT cases: no filesystem here accepts O_DIRECT\n");
        atexit(remove_root);
        asys_params pd{};
        pd.workers = 4;
        asys_params pn = pd;
        pn.flags = ASYS_CTX_INLINE_NEVER;
        asys_ctx *d = nullptr, *n = nullptr;
        if (asys_ctx_create(&pd, &d) != 0 || asys_ctx_create(&pn, &n) != 0) {
            fprintf(stderr, "fuzz_oracle: asys_ctx_create failed\n");
            abort();
        }
        return new oracle::runner(g_root, od, d, n);
    }();
    return *r;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    oracle::case_spec s{};
    memcpy(&s, data, size < sizeof s ? size : sizeof s);
    auto res = the_runner().run_case(s);
    if (res.mismatches.empty()) return 0;
    for (auto &m : res.mismatches) fprintf(stderr, "ORACLE MISMATCH: %s\n", m.text.c_str());
    fprintf(stderr, "ORACLE: %zu mismatch(es); the plain system call is the reference\n", res.mismatches.size());
    remove_root();
    abort();
}
