// Review of issue 17: batches through the ring (the batch window), the
// designated ring waiter, the adaptive wait spin and the O_DIRECT hint,
// attacked from the user's side. Every test runs on both backends (the pool
// run has none of the ring paths and must behave the same).
//
// Tests whose comment starts "Regression" reproduce a defect the review
// found in the first version of these paths (each failed then; the comment
// says how), fixed since.
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <algorithm>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "helpers.hpp"

using namespace asys_test;

namespace {

pid_t this_tid() { return static_cast<pid_t>(syscall(SYS_gettid)); }

/// A thread's outcome that the test waits for with a bound (a condition
/// wait on observable state, never a sleep).
struct outcome {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    int rc = 0;
    asys_cqe cqe[4] = {};
    std::atomic<pid_t> tid{0};

    void set(int r) {
        std::lock_guard lk(mu);
        rc = r;
        done = true;
        cv.notify_all();
    }
    /// True if the thread finished within `s` seconds.
    bool wait_done(int s) {
        std::unique_lock lk(mu);
        return cv.wait_for(lk, std::chrono::seconds(s), [&] { return done; });
    }
    pid_t wait_tid() {
        while (tid.load() == 0) sched_yield();
        return tid.load();
    }
    /// Waits (bounded, on kernel state) until the thread sleeps in asys_wait
    /// or has returned; true if it sleeps.
    bool asleep_or_done() {
        for (long i = 0; i < 2000000; ++i) {
            {
                std::lock_guard lk(mu);
                if (done) return false;
            }
            const long nr = blocked_syscall(wait_tid());
            if (nr == SYS_futex || nr == SYS_ppoll) return true;
            sched_yield();
        }
        return false;
    }
};

/// Starts a thread that calls asys_wait(ctx, min, timeout, w.cqe, min) and
/// records its result in `w` (which, like ctx, must outlive the thread).
std::thread start_waiter(asys_ctx *ctx, unsigned min, outcome *w, const struct timespec *timeout = nullptr) {
    return std::thread([ctx, min, w, timeout] {
        w->tid = this_tid();
        w->set(asys_wait(ctx, min, timeout, w->cqe, min));
    });
}

/// Puts one entry in the completion ring: an inline NOP without ret_ptr
/// (ASYS_DONE and a cqe; a cqe pushed wakes a designated ring waiter).
/// Returns asys_submit's result (ASYS_DONE).
int push_entry(asys_ctx *ctx, uint64_t user_data) {
    asys_op nop;
    asys_prep_nop(&nop, 0);
    nop.user_data = user_data;
    return asys_submit(ctx, &nop);
}

bool ring_takes_pipe_reads(asys_ctx *ctx, const pipe_pair &p) {
    asys_op op;
    char b;
    asys_prep_read(&op, p.r, &b, 1);
    return async_path(ctx, op) == ASYS_PATH_URING;
}

/// An ASYNC one-byte read of the pipe (the ring takes it on a uring context).
int submit_pipe_read(asys_ctx *ctx, const pipe_pair &p, char *buf, uint64_t ud,
                     asys_callback_t cb = nullptr, void *arg = nullptr) {
    asys_op op;
    asys_prep_read(&op, p.r, buf, 1);
    op.flags = ASYS_F_ASYNC;
    op.user_data = ud;
    op.callback = cb;
    op.cb_arg = arg;
    return asys_submit(ctx, &op);
}

/// The counters balance once every op retired (a callback op is in flight
/// until its callback returned, which may be just after the test saw its
/// effect: waits for that, bounded).
void check_stats_balanced(asys_ctx *ctx) {
    for (long i = 0; i < 20000000 && stats(ctx).inflight != 0; ++i) sched_yield();
    const asys_stats st = stats(ctx);
    EXPECT_EQ(st.submitted, st.done_inline + st.punted_probe + st.punted_direct);
    EXPECT_EQ(st.inflight, 0u);
}

}  // namespace

// Regression (was: lost wake-up of the designated ring waiter). asys_wait without a
// timeout must end with -EDEADLK as soon as the entries present plus the ops
// in flight that will post one fall below min (docs/api.md). A waiter on the
// completion ring is woken when another thread pops entries
// (completion_ring::pop_locked notifies). The designated ring waiter sleeps
// in io_uring_enter instead, and nothing kicks it when another thread takes
// the entries it counted on: asys_peek/asys_wait pop without
// wake_ring_sleeper(), and retire()'s may_strand() only looks at threads in
// completion_ring::wait (waiters_), never at the ring sleeper. Sequence: one
// cqe present + one ring op pending (a read of an empty pipe); thread W
// asys_wait(min 2, no timeout) sleeps in io_uring_enter; main asys_peek()s
// the entry. W should return -EDEADLK; it sleeps until the pipe is written.
TEST(Review17, PeekTakingTheEntriesEndsARingWaitersHopelessWait) {
    asys_params p = params(2);
    ctx_guard ctx(&p);
    pipe_pair pipe;
    char byte = 0;
    ASSERT_EQ(submit_pipe_read(ctx, pipe, &byte, 1), 0);
    ASSERT_EQ(push_entry(ctx, 2), ASYS_DONE);

    outcome w;
    std::thread t = start_waiter(ctx, 2, &w);
    ASSERT_TRUE(wait_asleep_in_asys_wait(w.wait_tid()));
    asys_cqe c{};
    ASSERT_EQ(asys_peek(ctx, &c, 1), 1);
    EXPECT_EQ(c.user_data, 2u);
    const bool ended = w.wait_done(10);
    EXPECT_TRUE(ended) << "asys_wait(min 2) still asleep 10 s after its second hope was taken (expected -EDEADLK)";
    ASSERT_EQ(write(pipe.w, "x", 1), 1);  // lets a stuck waiter go
    t.join();
    if (ended) EXPECT_EQ(w.rc, -EDEADLK);
    (void)reap(ctx, w.rc == 1 ? 0 : 1);
    check_stats_balanced(ctx);
}

// Regression (was: pre-existing plug, made wider by ring batches). The ring's plug is a
// context-wide count, not per thread: while any thread is inside
// asys_submit_batch, punt()/punt_locked() of every other thread only
// prepares SQEs ("unplug() submits"). If the batch blocks — an ASYS_F_SYNC
// op runs the call on the caller — another thread's ring op is never
// submitted, and its asys_wait (the designated waiter enters with
// to_submit 0) times out although the op would complete at once.
TEST(Review17, AnotherThreadsBlockedBatchDoesNotHoldBackMySubmit) {
    asys_params p = params(2);
    ctx_guard ctx(&p);
    pipe_pair pipe;
    char byte = 0;
    long sync_res = 0;
    outcome b;
    std::thread batcher([&] {
        b.tid = this_tid();
        asys_op op;
        asys_prep_read(&op, pipe.r, &byte, 1);
        op.flags = ASYS_F_SYNC;  // runs read(2) on this thread: blocks until the pipe is written
        op.ret_ptr = &sync_res;
        int st = 0;
        b.set(asys_submit_batch(ctx, &op, 1, &st));
    });
    ASSERT_TRUE(wait_blocked_in(b.wait_tid(), SYS_read));

    asys_op nop;
    asys_prep_nop(&nop, 5);
    nop.flags = ASYS_F_ASYNC;  // to the ring
    nop.user_data = 9;
    ASSERT_EQ(asys_submit(ctx, &nop), 0);
    struct timespec ts{5, 0};
    asys_cqe c{};
    const int r = asys_wait(ctx, 1, &ts, &c, 1);
    EXPECT_EQ(r, 1) << "a ring NOP did not complete in 5 s while another thread's batch blocked";
    ASSERT_EQ(write(pipe.w, "y", 1), 1);
    ASSERT_TRUE(b.wait_done(30));
    batcher.join();
    EXPECT_EQ(b.rc, 1);
    EXPECT_EQ(sync_res, 1);
    if (r != 1) (void)reap(ctx, 1);
    check_stats_balanced(ctx);
}

// Regression (was: use after teardown). asys_ctx_destroy may run while threads sleep in
// asys_wait (they return -ESHUTDOWN). completion_ring::shutdown() waits for
// the threads in completion_ring::wait, but the designated ring waiter is in
// context::sleep_in_ring, counted nowhere: with CANCEL, the cancelled op's
// CQE wakes it while destroy reaps the same CQE, sees inflight 0, stops the
// ring (munmap), resets preferred_ and recycles the context — and the waiter
// goes on with preferred_->reap()/end_reaping()/ready() and then
// completion_ring::wait on a re-constructed ring. Seen as a crash (SIGSEGV),
// a waiter that never returns, or a sanitizer report; repeated to hit the
// window. Fails under TSan (data race: recycle()'s preferred_.reset() vs
// sleep_in_ring()'s preferred_->end_reaping()); the plain build rarely
// crashes.
TEST(Review17, DestroyCancelWhileAThreadSleepsInAsysWait) {
    for (int iter = 0; iter < 200; ++iter) {
        asys_params p = params(1);
        asys_ctx *ctx = nullptr;
        ASSERT_EQ(asys_ctx_create(&p, &ctx), 0);
        pipe_pair pipe;
        char byte = 0;
        ASSERT_EQ(submit_pipe_read(ctx, pipe, &byte, 1), 0);
        auto *wp = new outcome;  // leaked with the thread if it never returns
        outcome &w = *wp;
        std::thread t = start_waiter(ctx, 1, wp);
        ASSERT_TRUE(wait_asleep_in_asys_wait(w.wait_tid()));
        ASSERT_EQ(asys_ctx_destroy(ctx, ASYS_DESTROY_CANCEL), 0);
        const bool ended = w.wait_done(10);
        if (!ended) {
            ADD_FAILURE() << "iteration " << iter << ": asys_wait never returned after destroy";
            t.detach();
            return;
        }
        std::unique_ptr<outcome> own(wp);
        t.join();
        if (w.rc == 1) {
            EXPECT_EQ(w.cqe[0].res, -ECANCELED);
        } else {
            EXPECT_EQ(w.rc, -ESHUTDOWN) << "iteration " << iter;
        }
    }
}

// Regression (the same, with DRAIN): the designated waiter itself reaps the last
// completion; its retire() lets destroy go on (inflight 0), and destroy
// tears the ring down while the waiter is still in sleep_in_ring
// (preferred_->end_reaping() at context.cpp:642 vs recycle()'s
// preferred_.reset(), reported by TSan under ctest -j2; intermittent).
TEST(Review17, DestroyDrainWhileTheWaiterReapsTheLastCompletion) {
    for (int iter = 0; iter < 200; ++iter) {
        asys_params p = params(1);
        asys_ctx *ctx = nullptr;
        ASSERT_EQ(asys_ctx_create(&p, &ctx), 0);
        pipe_pair pipe;
        char byte = 0;
        ASSERT_EQ(submit_pipe_read(ctx, pipe, &byte, 1), 0);
        auto *wp = new outcome, *dp = new outcome;  // leaked with the threads if they never return
        outcome &w = *wp, &d = *dp;
        std::thread t = start_waiter(ctx, 1, wp);
        ASSERT_TRUE(wait_asleep_in_asys_wait(w.wait_tid()));
        std::thread destroyer([ctx, dp] {
            dp->tid = this_tid();
            dp->set(asys_ctx_destroy(ctx, ASYS_DESTROY_DRAIN));
        });
        // destroy waits (futex) for the read; then the read completes.
        ASSERT_TRUE(wait_blocked_in(d.wait_tid(), SYS_futex));
        ASSERT_EQ(write(pipe.w, "z", 1), 1);
        const bool ended = w.wait_done(10) && d.wait_done(10);
        if (!ended) {
            ADD_FAILURE() << "iteration " << iter << ": waiter or destroy never returned";
            t.detach();
            destroyer.detach();
            return;
        }
        std::unique_ptr<outcome> own_w(wp), own_d(dp);
        t.join();
        destroyer.join();
        EXPECT_EQ(d.rc, 0);
        if (w.rc == 1) {
            EXPECT_EQ(w.cqe[0].res, 1);
        } else {
            EXPECT_EQ(w.rc, -ESHUTDOWN) << "iteration " << iter;
        }
    }
}

// asys_wait honours its relative timeout while it sleeps in the ring: -ETIME
// after at least the timeout, never before, when nothing arrives.
TEST(Review17, TimeoutWhileAsleepInTheRingIsHonoured) {
    asys_params p = params(2);
    ctx_guard ctx(&p);
    pipe_pair pipe;
    char byte = 0;
    ASSERT_EQ(submit_pipe_read(ctx, pipe, &byte, 1), 0);
    for (long ms : {1L, 30L, 120L}) {
        struct timespec ts{0, ms * 1000000};
        asys_cqe c{};
        const auto t0 = std::chrono::steady_clock::now();
        EXPECT_EQ(asys_wait(ctx, 1, &ts, &c, 1), -ETIME);
        const auto el = std::chrono::steady_clock::now() - t0;
        EXPECT_GE(el, std::chrono::milliseconds(ms)) << "returned before its timeout";
    }
    ASSERT_EQ(write(pipe.w, "t", 1), 1);
    auto c = reap(ctx, 1);
    ASSERT_EQ(c.size(), 1u);
    EXPECT_EQ(c[0].res, 1);
    check_stats_balanced(ctx);
}

namespace {
std::atomic<int> g_sigusr1{0};
void on_sigusr1(int) { g_sigusr1.fetch_add(1); }
}  // namespace

// A signal (handler installed without SA_RESTART) delivered to the thread
// asleep in io_uring_enter: the wait goes on (asys_wait has no EINTR) and
// returns the completion when it arrives.
TEST(Review17, SignalToTheSleepingWaiterNeitherEndsNorLosesTheWait) {
    struct sigaction sa{}, old{};
    sa.sa_handler = on_sigusr1;
    sigemptyset(&sa.sa_mask);
    ASSERT_EQ(sigaction(SIGUSR1, &sa, &old), 0);
    asys_params p = params(2);
    ctx_guard ctx(&p);
    pipe_pair pipe;
    char byte = 0;
    ASSERT_EQ(submit_pipe_read(ctx, pipe, &byte, 1), 0);
    outcome w;
    std::thread t = start_waiter(ctx, 1, &w);
    const pid_t tid = w.wait_tid();
    for (int k = 1; k <= 5; ++k) {
        ASSERT_TRUE(wait_asleep_in_asys_wait(tid));
        ASSERT_EQ(syscall(SYS_tgkill, getpid(), tid, SIGUSR1), 0);
        while (g_sigusr1.load() < k) sched_yield();
    }
    ASSERT_TRUE(wait_asleep_in_asys_wait(tid));
    {
        std::lock_guard lk(w.mu);
        EXPECT_FALSE(w.done) << "asys_wait returned " << w.rc << " on a signal";
    }
    ASSERT_EQ(write(pipe.w, "s", 1), 1);
    ASSERT_TRUE(w.wait_done(30));
    t.join();
    EXPECT_EQ(w.rc, 1);
    EXPECT_EQ(w.cqe[0].res, 1);
    EXPECT_EQ(byte, 's');
    sigaction(SIGUSR1, &old, nullptr);
    g_sigusr1 = 0;
    check_stats_balanced(ctx);
}

namespace {
struct nested_cb {
    asys_ctx *ctx;
    std::atomic<int> cancel_rc{1};
    std::atomic<int> submit_rc{1};
    std::atomic<int> wait_rc{1};
    long nop_res = 0;
    std::atomic<pid_t> ran_on{0};
    std::atomic<bool> finished{false};
};
void nested_callback(const asys_cqe *, void *arg) {
    auto *n = static_cast<nested_cb *>(arg);
    n->ran_on = this_tid();
    asys_op nop;
    asys_prep_nop(&nop, 11);
    nop.ret_ptr = &n->nop_res;
    n->submit_rc = asys_submit(n->ctx, &nop);
    struct timespec zero{0, 0};
    asys_cqe c;
    n->wait_rc = asys_wait(n->ctx, 0, &zero, &c, 1);
    n->cancel_rc = asys_cancel(n->ctx, 42);
    n->finished = true;
}
}  // namespace

// A callback run by the designated waiter (it reaps now) submits, waits
// (min 0) and cancels the very op the waiter sleeps for: no deadlock, and
// the waiter returns that op's -ECANCELED.
TEST(Review17, CallbackOnTheWaiterSubmitsWaitsAndCancelsTheAwaitedOp) {
    asys_params p = params(2);
    ctx_guard ctx(&p);
    pipe_pair p1, p2;
    char b1 = 0, b2 = 0;
    nested_cb n{ctx};
    ASSERT_EQ(submit_pipe_read(ctx, p1, &b1, 41, nested_callback, &n), 0);
    ASSERT_EQ(submit_pipe_read(ctx, p2, &b2, 42), 0);
    outcome w;
    std::thread t = start_waiter(ctx, 1, &w);
    ASSERT_TRUE(wait_asleep_in_asys_wait(w.wait_tid()));
    ASSERT_EQ(write(p1.w, "c", 1), 1);
    const bool ended = w.wait_done(20);
    EXPECT_TRUE(ended) << "the waiter did not return after its op was cancelled from a callback";
    if (!ended) {
        ASSERT_EQ(write(p2.w, "d", 1), 1);
        ASSERT_TRUE(w.wait_done(20));
    }
    t.join();
    // The waiter can return as soon as asys_cancel posts op 42's cqe, before
    // the callback (on a pool worker) gets back from asys_cancel.
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (!n.finished.load() && std::chrono::steady_clock::now() < until) sched_yield();
    ASSERT_TRUE(n.finished.load()) << "the callback never returned from asys_cancel";
    EXPECT_EQ(n.submit_rc.load(), ASYS_DONE);
    EXPECT_EQ(n.nop_res, 11);
    EXPECT_EQ(n.wait_rc.load(), 0);
    EXPECT_TRUE(n.cancel_rc == 0 || n.cancel_rc == -EALREADY) << n.cancel_rc;
    ASSERT_EQ(w.rc, 1);
    EXPECT_EQ(w.cqe[0].user_data, 42u);
    EXPECT_EQ(w.cqe[0].res, -ECANCELED);
    if (ring_takes_pipe_reads(ctx, p1)) EXPECT_EQ(n.ran_on.load(), w.tid.load()) << "the ring waiter reaps now";
    check_stats_balanced(ctx);
}

// Several threads submit batches of cached preads (some with CQE_ALWAYS,
// some without ret_ptr) while two others reap (one with a timeout, one
// without); every op is reported exactly once — ASYS_DONE in its status
// (plus one cqe if it asked for one or has no ret_ptr) or a cqe — with the
// bytes and result of pread(2), and the counters balance. Stale window
// entries (an op of the window completed by another thread, its slot reused
// by another thread's window at the same index) would show as one op
// reported twice and another never.
TEST(Review17, ConcurrentBatchesAndWaitersReportEveryOpExactlyOnce) {
    constexpr unsigned kThreads = 3, kRounds = 150, kMaxBatch = 48, kBlocks = 64;
    asys_params p = params(4, 8192);
    ctx_guard ctx(&p);
    temp_dir dir;
    const int fd = make_file(dir.file("f"), kBlocks * 4096);
    ASSERT_GE(fd, 0);
    {
        std::vector<char> warm(kBlocks * 4096);
        ASSERT_EQ(pread(fd, warm.data(), warm.size(), 0), static_cast<ssize_t>(warm.size()));
    }
    struct op_rec {
        long res = -999999;
        int status = -999999;
        bool wants_cqe_when_done = false;
        bool has_ret = true;
        unsigned block = 0;
        std::vector<char> buf;
    };
    const unsigned total = kThreads * kRounds * kMaxBatch;
    std::vector<op_rec> recs(total);
    std::atomic<bool> stop{false};
    std::mutex cmu;
    std::map<uint64_t, std::vector<asys_cqe>> cqes;
    auto collect = [&](const asys_cqe *c, int n) {
        std::lock_guard lk(cmu);
        for (int i = 0; i < n; ++i) cqes[c[i].user_data].push_back(c[i]);
    };
    std::atomic<unsigned> accepted{0};
    auto reaper = [&](bool timed) {
        asys_cqe c[16];
        while (!stop.load()) {
            struct timespec ts{0, 1000000};
            const int r = asys_wait(ctx, 1, timed ? &ts : nullptr, c, 16);
            if (r > 0) collect(c, r);
            else if (r != -ETIME && r != -EDEADLK) {
                ADD_FAILURE() << "asys_wait: " << r;
                return;
            }
            if (r == -EDEADLK) sched_yield();
        }
    };
    std::thread r1(reaper, true), r2(reaper, false);
    std::vector<std::thread> subs;
    for (unsigned t = 0; t < kThreads; ++t) {
        subs.emplace_back([&, t] {
            std::vector<asys_op> ops(kMaxBatch);
            std::vector<int> st(kMaxBatch);
            for (unsigned r = 0; r < kRounds; ++r) {
                const unsigned n = 1 + (r * 7 + t * 13) % kMaxBatch;
                const unsigned base = (t * kRounds + r) * kMaxBatch;
                for (unsigned i = 0; i < n; ++i) {
                    op_rec &rec = recs[base + i];
                    rec.block = (base + i * 5) % kBlocks;
                    rec.buf.assign(4096, 0);
                    asys_prep_pread(&ops[i], fd, rec.buf.data(), 4096, int64_t{rec.block} * 4096);
                    ops[i].user_data = base + i;
                    const unsigned kind = (base + i) % 5;
                    rec.has_ret = kind != 3;
                    ops[i].ret_ptr = rec.has_ret ? &rec.res : nullptr;
                    if (kind == 4) ops[i].flags = ASYS_F_CQE_ALWAYS;
                    rec.wants_cqe_when_done = kind == 3 || kind == 4;
                }
                const int rc = asys_submit_batch(ctx, ops.data(), n, st.data());
                ASSERT_EQ(rc, static_cast<int>(n));
                for (unsigned i = 0; i < n; ++i) recs[base + i].status = st[i];
                accepted.fetch_add(n);
            }
        });
    }
    for (auto &s : subs) s.join();
    // Every accepted op that must post a cqe has one (bounded).
    unsigned expected = 0;
    for (unsigned i = 0; i < total; ++i) {
        const op_rec &rec = recs[i];
        if (rec.status == -999999) continue;
        if (rec.status == 0 || (rec.status == ASYS_DONE && rec.wants_cqe_when_done)) ++expected;
    }
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    for (;;) {
        size_t have = 0;
        {
            std::lock_guard lk(cmu);
            for (auto &kv : cqes) have += kv.second.size();
        }
        if (have >= expected || std::chrono::steady_clock::now() > until) break;
        sched_yield();
    }
    stop = true;
    // The untimed reaper leaves with -EDEADLK once nothing is in flight; a
    // NOP per reaper makes sure neither sleeps on.
    for (int k = 0; k < 2; ++k) {
        asys_op nop;
        asys_prep_nop(&nop, 0);
        nop.user_data = ~uint64_t{0};
        nop.flags = ASYS_F_CQE_ALWAYS;
        long ignore;
        nop.ret_ptr = &ignore;
        ASSERT_EQ(asys_submit(ctx, &nop), ASYS_DONE);
    }
    r1.join();
    r2.join();
    {
        asys_cqe c[16];
        int n;
        while ((n = asys_peek(ctx, c, 16)) > 0) collect(c, n);
    }
    unsigned doubles = 0, missing = 0, wrong = 0;
    for (unsigned i = 0; i < total; ++i) {
        const op_rec &rec = recs[i];
        if (rec.status == -999999) continue;
        const auto it = cqes.find(i);
        const size_t got = it == cqes.end() ? 0 : it->second.size();
        const size_t want = rec.status == 0 ? 1 : rec.status == ASYS_DONE ? (rec.wants_cqe_when_done ? 1 : 0) : 0;
        if (rec.status != 0 && rec.status != ASYS_DONE) {
            ++wrong;
            ADD_FAILURE() << "op " << i << " status " << rec.status;
            continue;
        }
        if (got > want) ++doubles;
        if (got < want) ++missing;
        if (got != want && doubles + missing <= 5)
            ADD_FAILURE() << "op " << i << " status " << rec.status << " cqes " << got << " expected " << want;
        long res = rec.has_ret ? rec.res : (got ? it->second[0].res : -999999);
        if (got && rec.has_ret) EXPECT_EQ(it->second[0].res, rec.res) << "op " << i;
        if (res != 4096) {
            if (++wrong <= 5) ADD_FAILURE() << "op " << i << " status " << rec.status << " result " << res;
            continue;
        }
        if (rec.status == ASYS_DONE || got) {
            for (size_t b = 0; b < 4096; b += 511)
                if (rec.buf[b] != pattern(size_t{rec.block} * 4096 + b)) {
                    if (++wrong <= 5) ADD_FAILURE() << "op " << i << " byte " << b << " differs from pread";
                    break;
                }
        }
    }
    EXPECT_EQ(doubles, 0u);
    EXPECT_EQ(missing, 0u);
    EXPECT_EQ(wrong, 0u);
    const asys_stats st = stats(ctx);
    EXPECT_EQ(st.submitted, accepted.load() + 2u);
    EXPECT_EQ(st.submitted, st.done_inline + st.punted_probe + st.punted_direct);
    EXPECT_EQ(st.inflight, 0u);
    close(fd);
}

// The hint never keeps a read off the caller once the fd reads buffered:
// O_DIRECT cleared with fcntl(F_SETFL), the next cached read is inline (and
// gives pread's bytes); set again, reads go to a backend and still match.
TEST(Review17, DirectHintFollowsFcntlBothWays) {
    temp_dir dir;
    const std::string path = dir.file("d");
    const int wfd = make_file(path, 64 * 4096);
    ASSERT_GE(wfd, 0);
    const int fd = open(path.c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC);
    if (fd < 0) GTEST_SKIP() << "SKIPPED: O_DIRECT not supported in " << dir.path << ": " << strerror(errno);
    asys_params p = params(2);
    ctx_guard ctx(&p);
    alignas(4096) static char buf[4096];
    alignas(4096) static char ref[4096];
    auto read_block = [&](unsigned b, uint32_t *path_out) {
        memset(buf, 0, sizeof buf);
        asys_op op;
        asys_prep_pread(&op, fd, buf, 4096, int64_t{b} * 4096);
        const long r = run(ctx, op, path_out);
        EXPECT_EQ(r, 4096);
        EXPECT_EQ(pread(wfd, ref, 4096, int64_t{b} * 4096), 4096);
        EXPECT_EQ(memcmp(buf, ref, 4096), 0) << "block " << b;
    };
    uint32_t path_used = 0;
    for (unsigned b = 0; b < 4; ++b) {
        read_block(b, &path_used);
        EXPECT_NE(path_used, ASYS_PATH_INLINE) << "an O_DIRECT read ran on the caller";
    }
    const asys_stats before = stats(ctx);
    read_block(4, &path_used);
    const asys_stats after = stats(ctx);
    EXPECT_EQ(after.punted_direct, before.punted_direct + 1) << "the hinted fd was probed again";
    // Clear O_DIRECT: the page cache holds the file (make_file wrote it).
    const int fl = fcntl(fd, F_GETFL);
    ASSERT_EQ(fcntl(fd, F_SETFL, fl & ~O_DIRECT), 0);
    read_block(5, &path_used);
    read_block(5, &path_used);
    EXPECT_EQ(path_used, ASYS_PATH_INLINE) << "a buffered, cached read left the caller";
    ASSERT_EQ(fcntl(fd, F_SETFL, fl), 0);
    for (unsigned b = 6; b < 9; ++b) {
        read_block(b, &path_used);
        EXPECT_NE(path_used, ASYS_PATH_INLINE) << "O_DIRECT again, read inline";
    }
    close(fd);
    close(wfd);
    check_stats_balanced(ctx);
}

// Two threads wait (no timeout) while a third submits ring ops one by one:
// every cqe reaches one of them, none is lost while the designated waiter
// hands over, and both waiters end (-EDEADLK) once nothing is in flight.
TEST(Review17, TwoUntimedWaitersShareTheCompletionsOfOneSubmitter) {
    asys_params p = params(2);
    ctx_guard ctx(&p);
    constexpr unsigned kOps = 2000;
    std::atomic<unsigned> got{0};
    std::atomic<bool> done{false};
    std::atomic<unsigned> bad{0};
    auto waiter = [&] {
        asys_cqe c[8];
        while (!done.load()) {
            const int r = asys_wait(ctx, 1, nullptr, c, 8);
            if (r > 0) got.fetch_add(static_cast<unsigned>(r));
            else if (r == -EDEADLK) sched_yield();
            else bad.fetch_add(1);
        }
    };
    std::thread w1(waiter), w2(waiter);
    for (unsigned i = 0; i < kOps; ++i) {
        asys_op nop;
        asys_prep_nop(&nop, static_cast<long>(i));
        nop.flags = ASYS_F_ASYNC;
        nop.user_data = i;
        ASSERT_EQ(asys_submit(ctx, &nop), 0);
    }
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (got.load() < kOps && std::chrono::steady_clock::now() < until) sched_yield();
    EXPECT_EQ(got.load(), kOps);
    done = true;
    for (int k = 0; k < 2; ++k) ASSERT_EQ(push_entry(ctx, 0), ASYS_DONE);  // in case a waiter sleeps on
    w1.join();  // with nothing in flight both end with -EDEADLK
    w2.join();
    EXPECT_EQ(bad.load(), 0u);
    check_stats_balanced(ctx);
}

namespace {
/// A cached file of `blocks` 4 KiB blocks, and a batch of preads of it.
struct cached_batch {
    temp_dir dir;
    int fd = -1;
    std::vector<char> buf;
    std::vector<long> res;
    std::vector<asys_op> ops;
    std::vector<int> status;
    explicit cached_batch(unsigned n) : buf(n * 4096), res(n, -999), ops(n), status(n, -999) {
        fd = make_file(dir.file("f"), n * 4096);
        EXPECT_EQ(pread(fd, buf.data(), buf.size(), 0), static_cast<ssize_t>(buf.size()));
        std::fill(buf.begin(), buf.end(), 0);
        for (unsigned i = 0; i < n; ++i) {
            asys_prep_pread(&ops[i], fd, &buf[i * 4096], 4096, int64_t{i} * 4096);
            ops[i].ret_ptr = &res[i];
            ops[i].user_data = i;
        }
    }
    ~cached_batch() { close(fd); }
};
}  // namespace

// Regression (was: regression of ring batches). Cached reads with a ret_ptr need no room
// when they finish inline, so asys_submit_batch of 8 of them on a context
// with max_inflight 4 accepts all 8 (the pool backend does). Through the
// ring, each op reserves room before it joins the window (route_op:
// reserve_room, then window_add) and the window's ops are only handed to the
// ring at its end, so op 5 finds no room: the batch stops at 4 (-EAGAIN).
TEST(Review17, BatchOfCachedReadsLargerThanMaxInflightIsAccepted) {
    asys_params p = params(2, 4);
    ctx_guard ctx(&p);
    cached_batch b(8);
    const int rc = asys_submit_batch(ctx, b.ops.data(), 8, b.status.data());
    EXPECT_EQ(rc, 8) << "status of op 4: " << b.status[4];
    const unsigned accepted = rc > 0 ? static_cast<unsigned>(rc) : 0;
    unsigned pending = 0;
    for (unsigned i = 0; i < accepted; ++i) pending += b.status[i] == 0;
    (void)reap(ctx, pending);
    for (unsigned i = 0; i < accepted; ++i) EXPECT_EQ(b.res[i], 4096) << i;
    check_stats_balanced(ctx);
}

// Regression (was: self-deadlock). The same batch with ASYS_CTX_BLOCK_WHEN_FULL: op 5
// sleeps in reserve_room() for room that only ops 1-4 can free, but they
// sit in the calling thread's batch window, not yet handed to the ring
// (punt_window runs at the window's end; the flush() before sleeping has
// no SQE to submit). The batch never returns; only a destroy frees it.
TEST(Review17, BatchLargerThanMaxInflightWithBlockWhenFullReturns) {
    asys_params p = params(2, 4, ASYS_CTX_BLOCK_WHEN_FULL);
    asys_ctx *ctx = nullptr;
    ASSERT_EQ(asys_ctx_create(&p, &ctx), 0);
    auto *bp = new cached_batch(8);  // leaked with the thread if it is stuck
    cached_batch &b = *bp;
    outcome *op = new outcome;
    outcome &o = *op;
    // By value: the thread may outlive this frame (detached below).
    std::thread t([ctx, bp, op] { op->set(asys_submit_batch(ctx, bp->ops.data(), 8, bp->status.data())); });
    const bool ended = o.wait_done(10);
    EXPECT_TRUE(ended) << "asys_submit_batch of 8 cached reads, max_inflight 4, BLOCK_WHEN_FULL: stuck 10 s";
    if (!ended) {
        // A destroy would wake it (-ESHUTDOWN), but the woken batch then
        // goes on into punt_window/unplug while destroy tears the ring down
        // (TSan reports it): leave the thread and the context as they are.
        t.detach();
        return;
    }
    {
        EXPECT_EQ(o.rc, 8);
        unsigned pending = 0;
        for (unsigned i = 0; i < 8; ++i) pending += b.status[i] == 0;
        (void)reap(ctx, pending);
        for (unsigned i = 0; i < 8; ++i) EXPECT_EQ(b.res[i], 4096) << i;
        check_stats_balanced(ctx);
    }
    t.join();
    EXPECT_EQ(asys_ctx_destroy(ctx, ASYS_DESTROY_DRAIN), 0);
    delete bp;
    delete op;
}

namespace {
/// An op's result whichever way it was reported: ret_ptr when ASYS_DONE,
/// else its cqe (reaped here).
long batch_result(asys_ctx *ctx, int status, long ret) {
    if (status == ASYS_DONE) return ret;
    if (status != 0) return status;
    auto c = reap(ctx, 1);
    return c.size() == 1 ? c[0].res : -999998;
}
}  // namespace

// Regression (was: order within a batch). asys_submit_batch "submits ops[0..n) in
// order" (docs/api.md), and each op used to run its inline attempt when its
// turn came. Ring-bound ops now wait in the batch window until its end
// (punt_window), while ops the ring does not take (a close runs inline)
// execute at once: in [pread(fd), close(fd)] the close runs first and the
// cached pread answers -EBADF (or reads whatever file takes the number).
// The pool backend gives 4096.
TEST(Review17, BatchReadThenCloseReadsTheFile) {
    cached_batch b(1);
    const int fd = dup(b.fd);
    ASSERT_GE(fd, 0);
    asys_params p = params(2);
    ctx_guard ctx(&p);
    asys_op ops[2];
    asys_prep_pread(&ops[0], fd, b.buf.data(), 4096, 0);
    ops[0].ret_ptr = &b.res[0];
    long close_res = -999;
    asys_prep_close(&ops[1], fd);
    ops[1].ret_ptr = &close_res;
    int st[2] = {-999, -999};
    ASSERT_EQ(asys_submit_batch(ctx, ops, 2, st), 2);
    const long r = batch_result(ctx, st[0], b.res[0]);
    const long c = batch_result(ctx, st[1], close_res);
    EXPECT_EQ(r, 4096) << "the pread, submitted before the close, ran after it";
    EXPECT_EQ(c, 0);
    check_stats_balanced(ctx);
}

// Results of batched reads with bad or edge-case arguments equal the plain
// system call's (the ring's EFAULT/EINVAL are re-run on the pool; a
// write-only fd, a directory, EOF, zero length, a closed fd).
TEST(Review17, BatchedReadsWithEdgeArgumentsMatchTheSystemCall) {
    temp_dir dir;
    const std::string path = dir.file("e");
    const int rw = make_file(path, 3 * 4096 + 100);
    ASSERT_GE(rw, 0);
    const int wo = open(path.c_str(), O_WRONLY | O_CLOEXEC);
    const int dirfd = open(dir.path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    const int closed = 4000;  // a number nothing here opens (checked)
    ASSERT_EQ(fcntl(closed, F_GETFD), -1);
    ASSERT_GE(wo, 0);
    ASSERT_GE(dirfd, 0);
    std::vector<char> warm(4 * 4096);
    ASSERT_GT(pread(rw, warm.data(), warm.size(), 0), 0);
    struct cs {
        int fd;
        void *buf;
        size_t len;
        int64_t off;
    };
    static char bufs[12][4096];
    void *bad = reinterpret_cast<void *>(uintptr_t{8});
    const cs cases[] = {
        {rw, bufs[0], 4096, 0},           {rw, bufs[1], 4096, 3 * 4096},   // short at EOF
        {rw, bufs[2], 4096, 8 * 4096},    {rw, bufs[3], 0, 0},             // past EOF, zero length
        {wo, bufs[4], 4096, 0},           {dirfd, bufs[5], 4096, 0},       // EBADF, EISDIR
        {closed, bufs[6], 4096, 0},       {-1, bufs[7], 4096, 0},          // EBADF
        {rw, bad, 4096, 0},               {rw, bufs[8], 4096, -4096},      // EFAULT, EINVAL
        {rw, bufs[9], 100, 4096 + 7},     {rw, bad, 0, 0},                 // odd offset; 0 len bad buf
    };
    constexpr unsigned kN = sizeof cases / sizeof cases[0];
    long want[kN];
    for (unsigned i = 0; i < kN; ++i) {
        static char ref[4096];
        const long r = syscall(SYS_pread64, cases[i].fd, cases[i].buf == bad ? bad : ref, cases[i].len, cases[i].off);
        want[i] = r < 0 ? -errno : r;
    }
    asys_params p = params(2);
    ctx_guard ctx(&p);
    asys_op ops[kN];
    long res[kN];
    int st[kN];
    for (unsigned i = 0; i < kN; ++i) {
        asys_prep_pread(&ops[i], cases[i].fd, cases[i].buf, cases[i].len, cases[i].off);
        res[i] = -999;
        ops[i].ret_ptr = &res[i];
        ops[i].user_data = i;
    }
    ASSERT_EQ(asys_submit_batch(ctx, ops, kN, st), static_cast<int>(kN));
    unsigned pending = 0;
    for (unsigned i = 0; i < kN; ++i) pending += st[i] == 0;
    auto cqes = reap(ctx, pending);
    for (auto &c : cqes) res[c.user_data] = c.res;
    for (unsigned i = 0; i < kN; ++i) {
        EXPECT_TRUE(st[i] == 0 || st[i] == ASYS_DONE) << "case " << i << " status " << st[i];
        EXPECT_EQ(res[i], want[i]) << "case " << i << " (fd " << cases[i].fd << ", len " << cases[i].len
                                   << ", off " << cases[i].off << ")";
    }
    close(rw);
    close(wo);
    close(dirfd);
    check_stats_balanced(ctx);
}

// Batches across the 64-op window boundary (63, 64, 65, 128, 129, 200 ops):
// every op reported once, with pread's bytes.
TEST(Review17, BatchesAcrossTheWindowBoundary) {
    asys_params p = params(2);
    ctx_guard ctx(&p);
    for (unsigned n : {63u, 64u, 65u, 128u, 129u, 200u}) {
        cached_batch b(n);
        for (unsigned i = 0; i < n; ++i)
            if (i % 9 == 4) b.ops[i].flags = ASYS_F_CQE_ALWAYS;
        ASSERT_EQ(asys_submit_batch(ctx, b.ops.data(), n, b.status.data()), static_cast<int>(n));
        unsigned want = 0;
        for (unsigned i = 0; i < n; ++i) {
            ASSERT_TRUE(b.status[i] == 0 || b.status[i] == ASYS_DONE) << i;
            want += b.status[i] == 0 || (b.ops[i].flags & ASYS_F_CQE_ALWAYS);
        }
        auto c = reap(ctx, want);
        std::vector<unsigned> seen(n, 0);
        for (auto &e : c) {
            ASSERT_LT(e.user_data, n);
            ++seen[e.user_data];
            EXPECT_EQ(e.res, 4096);
        }
        asys_cqe extra;
        EXPECT_EQ(asys_peek(ctx, &extra, 1), 0) << "a cqe too many (batch of " << n << ")";
        for (unsigned i = 0; i < n; ++i) {
            EXPECT_EQ(b.res[i], 4096) << i;
            const unsigned w = b.status[i] == 0 || (b.ops[i].flags & ASYS_F_CQE_ALWAYS);
            EXPECT_EQ(seen[i], w) << "op " << i << " of " << n << " status " << b.status[i];
            EXPECT_EQ(b.buf[i * 4096 + 1], pattern(size_t{i} * 4096 + 1)) << i;
        }
        check_stats_balanced(ctx);
    }
}

namespace {
void ignore_cqe(const asys_cqe *, void *) {}
}  // namespace

// A cqe pushed while the designated waiter sleeps in io_uring_enter
// (GETEVENTS, min 1) wakes it with a no-op SQE (kick), and any thread may
// reap that no-op's CQE (a submitter right after its enter, asys_peek, a
// spinning waiter) before the woken waiter runs. The waiter must still
// return with its entry. (Holds on kernels whose GETEVENTS wait compares
// the CQ tail with the head at entry plus min, as here; a kernel that
// re-checks head against tail after the wake-up would put the waiter back
// to sleep inside the same io_uring_enter.) Sequence: a ring op pending
// keeps the waiter in the ring; main pushes a cqe (an inline NOP without
// ret_ptr) and at once submits an ASYNC NOP with a callback, whose submit
// reaps the CQ, the kick with it.
TEST(Review17, AKickReapedByAnotherThreadStillWakesTheWaiter) {
    asys_params p = params(2);
    ctx_guard ctx(&p);
    pipe_pair pipe;
    char byte = 0;
    unsigned stuck = 0;
    for (int iter = 0; iter < 20 && stuck == 0; ++iter) {
        ASSERT_EQ(submit_pipe_read(ctx, pipe, &byte, 100 + iter), 0);
        outcome w;
        std::thread t = start_waiter(ctx, 1, &w);
        ASSERT_TRUE(wait_asleep_in_asys_wait(w.wait_tid()));
        ASSERT_EQ(push_entry(ctx, 7), ASYS_DONE);  // kicks the waiter
        asys_op steal;
        asys_prep_nop(&steal, 0);
        steal.flags = ASYS_F_ASYNC;  // to the ring; its submit reaps the CQ
        steal.callback = ignore_cqe;
        ASSERT_GE(asys_submit(ctx, &steal), 0);
        if (!w.wait_done(5)) ++stuck;
        ASSERT_EQ(write(pipe.w, "k", 1), 1);  // ends the pending read (and a stuck wait)
        ASSERT_TRUE(w.wait_done(30));
        t.join();
        ASSERT_EQ(w.rc, 1);
        // The other entry (the NOP's or the read's) is still to reap.
        auto c = reap(ctx, 1);
        ASSERT_EQ(c.size(), 1u);
        const uint64_t a = w.cqe[0].user_data, b = c[0].user_data;
        EXPECT_TRUE((a == 7 && b == 100u + iter) || (b == 7 && a == 100u + iter)) << a << " " << b;
    }
    EXPECT_EQ(stuck, 0u) << "asys_wait slept on for 5 s with its cqe in the completion ring";
    check_stats_balanced(ctx);
}

// Regression (was: pre-existing on the pool path, and again in the new ring path). A
// very long relative timeout (about 317 years, or the largest tv_sec) means
// "wait": the wait must sleep until the op completes, never answer -ETIME
// at once. The pool path overflows in completion_ring::wait (seconds(tv_sec)
// added to steady_clock::now() in nanoseconds); the ring path in
// context::wait / uring_backend::wait_completions ((deadline.tv_sec -
// now.tv_sec) * 1000000000 in int64_t) and monotonic_after (tv_sec +=).
TEST(Review17, VeryLongTimeoutWaitsForTheCompletion) {
    asys_params p = params(2);
    ctx_guard ctx(&p);
    for (time_t secs : {time_t{10000000000}, std::numeric_limits<time_t>::max()}) {
        pipe_pair pipe;
        char byte = 0;
        ASSERT_EQ(submit_pipe_read(ctx, pipe, &byte, 5), 0);
        outcome w;
        const struct timespec ts{secs, 0};
        std::thread t = start_waiter(ctx, 1, &w, &ts);
        const bool asleep = w.asleep_or_done();
        {
            std::lock_guard lk(w.mu);
            EXPECT_FALSE(w.done) << "tv_sec " << secs << ": asys_wait returned " << w.rc << " at once";
        }
        EXPECT_TRUE(asleep);
        ASSERT_EQ(write(pipe.w, "l", 1), 1);
        ASSERT_TRUE(w.wait_done(30));
        t.join();
        if (w.rc == -ETIME) (void)reap(ctx, 1);
        else EXPECT_EQ(w.rc, 1);
    }
    check_stats_balanced(ctx);
}
