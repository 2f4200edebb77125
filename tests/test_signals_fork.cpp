// Traffic under adversity: a storm of SIGUSR1 (handler without SA_RESTART)
// and repeated fork() while 4 threads submit and one reaps. Every op must
// complete exactly once with its own result; children of fork() must get a
// working library.
#include <signal.h>
#include <sys/wait.h>

#include <atomic>
#include <memory>
#include <thread>

#include "helpers.hpp"

using namespace asys_test;

namespace {

std::atomic<unsigned> g_signals{0};
void on_usr1(int) { g_signals.fetch_add(1, std::memory_order_relaxed); }

// Runs `per_thread` ops from each of 4 threads (inline, pool/ring with a
// cqe, with a callback), reaps on another thread, and calls `during()` on
// the calling thread while the traffic runs. Returns the number of ops that
// did not complete exactly once with the right result.
template <typename F>
unsigned traffic(unsigned per_thread, F during) {
    constexpr unsigned kThreads = 4;
    const unsigned total = kThreads * per_thread;
    asys_params p = params(4, 8192, ASYS_CTX_BLOCK_WHEN_FULL);
    asys_ctx *ctx;
    if (asys_ctx_create(&p, &ctx) != 0) return total;
    std::unique_ptr<std::atomic<uint8_t>[]> seen(new std::atomic<uint8_t>[total]);
    std::unique_ptr<long[]> res(new long[total]);
    for (unsigned i = 0; i < total; ++i) {
        seen[i] = 0;
        res[i] = -1;
    }
    std::atomic<unsigned> cqes_expected{0}, submitted_threads{0};
    struct cbstate {
        std::atomic<uint8_t> *seen;
    } cbs{seen.get()};
    std::vector<std::thread> subs;
    for (unsigned t = 0; t < kThreads; ++t)
        subs.emplace_back([&, t] {
            for (unsigned i = 0; i < per_thread; ++i) {
                const uint64_t id = uint64_t{t} * per_thread + i;
                asys_op op;
                asys_prep_nop(&op, static_cast<long>(id));
                op.user_data = id;
                op.ret_ptr = &res[id];
                bool cqe = false;
                switch (id % 3) {
                    case 0: break;
                    case 1: op.flags = ASYS_F_ASYNC; cqe = true; break;
                    case 2:
                        op.flags = ASYS_F_ASYNC;
                        op.callback = [](const asys_cqe *c, void *a) {
                            static_cast<cbstate *>(a)->seen[c->user_data].fetch_add(1);
                        };
                        op.cb_arg = &cbs;
                        break;
                }
                if (cqe) cqes_expected.fetch_add(1);
                int rc;
                do rc = asys_submit(ctx, &op);
                while (rc == -EINTR);
                if (rc == ASYS_DONE) seen[id].fetch_add(1);
                else if (rc < 0) ADD_FAILURE() << "submit " << rc;
            }
            submitted_threads.fetch_add(1);
        });
    std::thread reaper([&] {
        asys_cqe c[256];
        unsigned got = 0;
        while (submitted_threads.load() < kThreads || got < cqes_expected.load()) {
            struct timespec ts{0, 20 * 1000 * 1000};
            int n = asys_wait(ctx, 1, &ts, c, 256);
            if (n == -ETIME || n == -EINTR) continue;
            if (n < 0) {
                ADD_FAILURE() << "wait " << n;
                return;
            }
            for (int i = 0; i < n; ++i) seen[c[i].user_data].fetch_add(1);
            got += static_cast<unsigned>(n);
        }
    });
    during();
    for (auto &t : subs) t.join();
    reaper.join();
    asys_ctx_destroy(ctx, ASYS_DESTROY_DRAIN);
    unsigned wrong = 0;
    for (unsigned i = 0; i < total; ++i)
        if (seen[i].load() != 1 || res[i] != static_cast<long>(i)) ++wrong;
    return wrong;
}

TEST(Adversity, SignalStormLosesNothing) {
    // clang 14's TSan runtime deadlocks on itself under this storm: a signal
    // that lands while a thread frees memory inside the runtime (glibc
    // freeing a joined thread's stack) runs TSan's handler, which waits for
    // the lock the interrupted free holds (a hang in 3 of 8 whole TSan
    // runs of the suite; gdb showed that stack). The plain and
    // ASan+UBSan builds run it.
    if (under_tsan())
        GTEST_SKIP() << "SKIPPED under TSan: its runtime deadlocks in its own signal handler under a signal storm "
                        "(__tsan::SlotLock from sighandler inside free); the plain and ASan builds run this";
    struct sigaction sa {}, old{};
    sa.sa_handler = on_usr1;  // no SA_RESTART: interrupted calls see EINTR
    sigemptyset(&sa.sa_mask);
    ASSERT_EQ(sigaction(SIGUSR1, &sa, &old), 0);
    g_signals = 0;
    std::atomic<bool> stop{false};
    std::thread storm([&] {  // for the whole run of the traffic
        while (!stop.load(std::memory_order_relaxed)) kill(getpid(), SIGUSR1);
    });
    while (g_signals.load() < 100) sched_yield();  // the storm has begun
    // Rounds of traffic until at least 2,000 signals landed during it.
    unsigned wrong = 0, rounds = 0;
    do {
        wrong += traffic(50000, [] {});
        ++rounds;
    } while (g_signals.load() < 2000 && rounds < 200);
    stop = true;
    storm.join();
    sigaction(SIGUSR1, &old, nullptr);
    printf("signals delivered during %u rounds of traffic: %u\n", rounds, g_signals.load());
    EXPECT_GE(g_signals.load(), 2000u);
    EXPECT_EQ(wrong, 0u) << "ops lost, doubled or with a wrong result";
}

TEST(Adversity, ForkDuringTraffic) {
    ASYS_SKIP_FORK_UNDER_SANITIZERS();
    unsigned children_ok = 0, children = 0;
    unsigned wrong = traffic(30000, [&] {
        for (int k = 0; k < 10; ++k) {
            pid_t pid = fork();
            if (pid == 0) {
                asys_ctx *c;
                if (asys_ctx_create(nullptr, &c) != 0) _exit(1);
                long r = 0;
                asys_op op;
                asys_prep_nop(&op, 11);
                op.flags = ASYS_F_ASYNC;
                op.ret_ptr = &r;
                if (asys_submit(c, &op) != 0) _exit(2);
                asys_cqe cqe;
                if (asys_wait(c, 1, nullptr, &cqe, 1) != 1 || r != 11) _exit(3);
                _exit(asys_ctx_destroy(c, ASYS_DESTROY_DRAIN) == 0 ? 0 : 4);
            }
            ASSERT_GT(pid, 0);
            int status = 0;
            ASSERT_EQ(waitpid(pid, &status, 0), pid);
            ++children;
            if (WIFEXITED(status) && WEXITSTATUS(status) == 0) ++children_ok;
        }
    });
    EXPECT_EQ(children_ok, children);
    EXPECT_EQ(children, 10u);
    EXPECT_EQ(wrong, 0u) << "parent ops lost, doubled or wrong";
}

}  // namespace
