// Scheduling classes (docs/scheduling.md): per-class queues and worker
// budgets in the pool, borrowing, priorities, deadlines (-ETIME on the pool
// and on the ring), and the metrics (exact counters, the Prometheus text).
//
// Long calls block on something the test controls (a pipe: ppoll or read
// waits until the test writes a byte), never on time; every wait for a
// completion or a state is bounded.
#include <poll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "helpers.hpp"

using namespace asys_test;

namespace {

/// A pipe whose read end long calls wait on; open() releases them all.
struct gate {
    int p[2] = {-1, -1};
    std::vector<pollfd> pfds;  // one per call: each call's own revents
    explicit gate(size_t calls) : pfds(calls) {
        EXPECT_EQ(pipe2(p, O_CLOEXEC), 0);
        for (auto &pfd : pfds) pfd = pollfd{p[0], POLLIN, 0};
    }
    ~gate() {
        close(p[0]);
        close(p[1]);
    }
    void open() { EXPECT_EQ(write(p[1], "x", 1), 1); }
    /// A generic ppoll on the read end (class LONG from the syscall table).
    asys_op long_call(size_t i, uint64_t ud) {
        const uint64_t a[6] = {reinterpret_cast<uint64_t>(&pfds[i]), 1, 0, 0, 8, 0};
        asys_op op;
        asys_prep_syscall(&op, SYS_ppoll, a);
        op.flags = ASYS_F_ASYNC;
        op.user_data = ud;
        return op;
    }
};

asys_params pool_with(unsigned workers, unsigned cls = ASYS_CLASS__COUNT, unsigned budget = 0) {
    asys_params p = pool_params(workers);
    if (cls < ASYS_CLASS__COUNT) p.class_workers[cls] = static_cast<uint16_t>(budget);
    return p;
}

asys_metrics metrics(asys_ctx *ctx) {
    asys_metrics m{};
    EXPECT_EQ(asys_ctx_metrics(ctx, &m), 0);
    return m;
}


int64_t now_ns() {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/// Waits (bounded) for one completion.
bool wait_one(asys_ctx *ctx, asys_cqe *out, int timeout_s = 10) {
    struct timespec ts{timeout_s, 0};
    return asys_wait(ctx, 1, &ts, out, 1) == 1;
}

void submit_ok(asys_ctx *ctx, asys_op op) {
    ASSERT_EQ(asys_submit(ctx, &op), 0) << asys_opcode_name(op.opcode);
}

/// Submits g's first long call (user_data `ud`) and waits (bounded) until
/// the long class's one worker runs it.
void hold_the_long_worker(asys_ctx *ctx, gate &g, uint64_t ud) {
    submit_ok(ctx, g.long_call(0, ud));
    EXPECT_TRUE(eventually([&] { return metrics(ctx).cls[ASYS_CLASS_LONG].workers_busy == 1; }));
}

asys_op async_nop(long value, uint64_t ud, uint32_t flags = 0) {
    asys_op op;
    asys_prep_nop(&op, value);
    op.flags = ASYS_F_ASYNC | flags;
    op.user_data = ud;
    return op;
}

}  // namespace

TEST(Sched, ClassNames) {
    EXPECT_STREQ(asys_class_name(ASYS_CLASS_READ), "read");
    EXPECT_STREQ(asys_class_name(ASYS_CLASS_WRITE), "write");
    EXPECT_STREQ(asys_class_name(ASYS_CLASS_META), "meta");
    EXPECT_STREQ(asys_class_name(ASYS_CLASS_NET), "net");
    EXPECT_STREQ(asys_class_name(ASYS_CLASS_LONG), "long");
    EXPECT_EQ(asys_class_name(ASYS_CLASS__COUNT), nullptr);
}

// 64 long calls hold the long class's workers; an op of every other class,
// submitted after them, still completes (within the bounded wait; without
// classes the pool's 4 workers would all be blocked and nothing would run).
TEST(Sched, LongFloodDoesNotDelayOtherClasses) {
    const asys_params p = pool_with(4);
    ctx_guard ctx(&p);
    ASSERT_TRUE(ctx.ctx);
    temp_dir dir;
    const std::string path = dir.file("f");
    const int fd = make_file(path, 8192);
    ASSERT_GE(fd, 0);
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);

    gate g(64);
    for (size_t i = 0; i < 64; ++i) submit_ok(ctx, g.long_call(i, 1000 + i));
    ASSERT_TRUE(eventually([&] { return metrics(ctx).cls[ASYS_CLASS_LONG].workers_busy >= 1; }));

    char buf[4096];
    struct statx stx;
    asys_op ops[4];
    asys_prep_pread(&ops[0], fd, buf, sizeof buf, 0);
    asys_prep_pwrite(&ops[1], fd, "abc", 3, 4096);
    asys_prep_statx(&ops[2], AT_FDCWD, path.c_str(), 0, STATX_SIZE, &stx);
    asys_prep_send(&ops[3], sv[0], "hi", 2, 0);
    const long expect[4] = {4096, 3, 0, 2};
    for (unsigned i = 0; i < 4; ++i) {
        ops[i].flags = ASYS_F_ASYNC;
        ops[i].user_data = i;
        submit_ok(ctx, ops[i]);
        asys_cqe cqe;
        ASSERT_TRUE(wait_one(ctx, &cqe)) << asys_opcode_name(ops[i].opcode) << " waited behind the long calls";
        EXPECT_EQ(cqe.user_data, i);
        EXPECT_EQ(cqe.res, expect[i]) << asys_opcode_name(ops[i].opcode);
        EXPECT_EQ(cqe.path, ASYS_PATH_POOL);
    }
    const asys_metrics m = metrics(ctx);
    EXPECT_EQ(m.cls[ASYS_CLASS_LONG].workers_busy, 1u) << "the long class holds its default budget (4 / 4)";
    EXPECT_EQ(m.cls[ASYS_CLASS_LONG].queued, 63u);
    g.open();
    EXPECT_EQ(reap(ctx, 64).size(), 64u);
    close(fd);
    close(sv[0]);
    close(sv[1]);
}

// A class that does not borrow holds exactly its budget, the rest queued,
// while other workers stay idle.
TEST(Sched, BudgetCapsAClass) {
    const asys_params p = pool_with(4, ASYS_CLASS_LONG, 2);
    ctx_guard ctx(&p);
    ASSERT_TRUE(ctx.ctx);
    gate g(6);
    for (size_t i = 0; i < 6; ++i) submit_ok(ctx, g.long_call(i, i));
    ASSERT_TRUE(eventually([&] {
        const asys_metrics m = metrics(ctx);
        return m.cls[ASYS_CLASS_LONG].workers_busy == 2 && m.cls[ASYS_CLASS_LONG].queued == 4;
    }));
    const asys_metrics m = metrics(ctx);
    EXPECT_EQ(m.cls[ASYS_CLASS_LONG].budget, 2u);
    EXPECT_EQ(m.workers_busy, 2u);
    EXPECT_EQ(m.cls[ASYS_CLASS_LONG].in_flight, 6u);
    g.open();
    EXPECT_EQ(reap(ctx, 6).size(), 6u);
    EXPECT_EQ(metrics(ctx).cls[ASYS_CLASS_LONG].in_flight, 0u);
}

// Reads (budget 1) borrow every idle worker; when a worker frees up while
// a metadata op waits, it serves that op before the reads' queued one, and
// the reads borrow it back afterwards.
TEST(Sched, BorrowingYieldsToAWaitingClass) {
    const asys_params p = pool_with(4, ASYS_CLASS_READ, 1);
    ctx_guard ctx(&p);
    ASSERT_TRUE(ctx.ctx);
    int pipes[5][2];
    char bytes[5];
    for (auto &pp : pipes) ASSERT_EQ(pipe2(pp, O_CLOEXEC), 0);
    for (unsigned i = 0; i < 5; ++i) {
        asys_op op;
        asys_prep_read(&op, pipes[i][0], &bytes[i], 1);
        op.flags = ASYS_F_ASYNC;
        op.user_data = i;
        submit_ok(ctx, op);
    }
    ASSERT_TRUE(eventually([&] {
        const asys_metrics m = metrics(ctx);
        return m.cls[ASYS_CLASS_READ].workers_busy == 4 && m.cls[ASYS_CLASS_READ].queued == 1;
    })) << "reads borrow the idle workers beyond their budget of 1";

    struct statx stx;
    asys_op st;
    asys_prep_statx(&st, AT_FDCWD, "/", 0, STATX_MODE, &stx);
    st.flags = ASYS_F_ASYNC;
    st.user_data = 100;
    submit_ok(ctx, st);
    ASSERT_EQ(write(pipes[0][1], "a", 1), 1);
    std::set<uint64_t> done;
    for (int i = 0; i < 2; ++i) {
        asys_cqe cqe;
        ASSERT_TRUE(wait_one(ctx, &cqe)) << "the freed worker served the waiting metadata op";
        EXPECT_GE(cqe.res, 0);
        done.insert(cqe.user_data);
    }
    EXPECT_EQ(done, (std::set<uint64_t>{0, 100}));
    ASSERT_TRUE(eventually([&] { return metrics(ctx).cls[ASYS_CLASS_READ].workers_busy == 4; }))
        << "the queued read borrowed the worker once no other class waited";
    for (unsigned i = 1; i < 5; ++i) ASSERT_EQ(write(pipes[i][1], "b", 1), 1);
    EXPECT_EQ(reap(ctx, 4).size(), 4u);
    for (auto &pp : pipes) {
        close(pp[0]);
        close(pp[1]);
    }
}

// Within a class, latency ops run before bulk ones queued earlier.
TEST(Sched, LatencyBeforeBulkWithinAClass) {
    const asys_params p = pool_with(1);
    ctx_guard ctx(&p);
    ASSERT_TRUE(ctx.ctx);
    gate g(1);
    hold_the_long_worker(ctx, g, 9);
    const uint32_t long_class = ASYS_F_CLASS(ASYS_CLASS_LONG);
    submit_ok(ctx, async_nop(1, 1, long_class | ASYS_F_BULK));
    submit_ok(ctx, async_nop(2, 2, long_class | ASYS_F_BULK));
    submit_ok(ctx, async_nop(3, 3, long_class));
    g.open();
    const auto c = reap(ctx, 4);
    ASSERT_EQ(c.size(), 4u);
    std::vector<uint64_t> order;
    for (const auto &e : c) order.push_back(e.user_data);
    EXPECT_EQ(order, (std::vector<uint64_t>{9, 3, 1, 2}));
}

// A generic call's class comes from its number; ASYS_F_CLASS overrides it.
TEST(Sched, GenericCallClassByNumber) {
    const asys_params p = pool_with(2);
    ctx_guard ctx(&p);
    ASSERT_TRUE(ctx.ctx);
    temp_dir dir;
    const int fd = make_file(dir.file("f"), 4096);
    ASSERT_GE(fd, 0);
    char buf[64];
    struct stat st;
    const struct timespec tiny{0, 1};
    struct call {
        long nr;
        uint64_t a[6];
        uint32_t flags;
        unsigned cls;
    } calls[] = {
        {SYS_pread64, {static_cast<uint64_t>(fd), reinterpret_cast<uint64_t>(buf), sizeof buf, 0, 0, 0}, 0,
         ASYS_CLASS_READ},
        {SYS_fstat, {static_cast<uint64_t>(fd), reinterpret_cast<uint64_t>(&st), 0, 0, 0, 0}, 0, ASYS_CLASS_META},
        {SYS_nanosleep, {reinterpret_cast<uint64_t>(&tiny), 0, 0, 0, 0, 0}, 0, ASYS_CLASS_LONG},
        {SYS_getppid, {}, 0, ASYS_CLASS_LONG},  // in no table: LONG
        {SYS_nanosleep, {reinterpret_cast<uint64_t>(&tiny), 0, 0, 0, 0, 0}, ASYS_F_CLASS(ASYS_CLASS_NET),
         ASYS_CLASS_NET},
    };
    for (const call &cl : calls) {
        const asys_metrics before = metrics(ctx);
        asys_op op;
        asys_prep_syscall(&op, cl.nr, cl.a);
        op.flags = ASYS_F_ASYNC | cl.flags;
        EXPECT_EQ(run(ctx, op), cl.nr == SYS_pread64 ? 64 : cl.nr == SYS_getppid ? getppid() : 0);
        const asys_metrics after = metrics(ctx);
        for (unsigned k = 0; k < ASYS_CLASS__COUNT; ++k)
            EXPECT_EQ(after.cls[k].punted - before.cls[k].punted, k == cl.cls ? 1u : 0u)
                << "syscall " << cl.nr << " class " << asys_class_name(k);
    }
    close(fd);
}

// ---------------------------------------------------------------- deadlines

TEST(SchedDeadline, PassedAtSubmitIsEtimeInline) {
    ctx_guard ctx;  // the backend $ASYS_BACKEND selects
    ASSERT_TRUE(ctx.ctx);
    asys_op op;
    asys_prep_nop(&op, 5);
    op.flags = ASYS_F_DEADLINE;
    op.deadline_ns = static_cast<uint64_t>(now_ns());
    long res = 0;
    op.ret_ptr = &res;
    EXPECT_EQ(asys_submit(ctx, &op), ASYS_DONE);
    EXPECT_EQ(res, -ETIME);
    op.deadline_ns = static_cast<uint64_t>(now_ns() + 3600LL * 1000000000LL);  // an hour away: runs
    EXPECT_EQ(asys_submit(ctx, &op), ASYS_DONE);
    EXPECT_EQ(res, 5);
    EXPECT_EQ(metrics(ctx).cls[ASYS_CLASS_META].expired, 1u);
}

// The pool checks the deadline when it dequeues an op.
TEST(SchedDeadline, PoolExpiresQueuedOpAtDequeue) {
    const asys_params p = pool_with(1);
    ctx_guard ctx(&p);
    ASSERT_TRUE(ctx.ctx);
    gate g(1);
    hold_the_long_worker(ctx, g, 9);
    const int64_t deadline = now_ns() + 20 * 1000 * 1000;
    asys_op late = async_nop(7, 7, ASYS_F_CLASS(ASYS_CLASS_LONG) | ASYS_F_DEADLINE);
    late.deadline_ns = static_cast<uint64_t>(deadline);
    submit_ok(ctx, late);
    asys_op later = async_nop(8, 8, ASYS_F_CLASS(ASYS_CLASS_LONG) | ASYS_F_DEADLINE);
    later.deadline_ns = static_cast<uint64_t>(deadline + 3600LL * 1000000000LL);
    submit_ok(ctx, later);
    // Let the deadline pass (waiting for the clock itself), then free the worker.
    const struct timespec until{deadline / 1000000000, deadline % 1000000000};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, nullptr) == EINTR) {
    }
    g.open();
    std::map<uint64_t, long> res;
    for (const auto &c : reap(ctx, 3)) res[c.user_data] = c.res;
    EXPECT_EQ(res[7], -ETIME);
    EXPECT_EQ(res[8], 8);
    EXPECT_EQ(res[9], 1);
    EXPECT_EQ(metrics(ctx).cls[ASYS_CLASS_LONG].expired, 1u);
}

// The ring: a linked timeout at the deadline ends an op still waiting.
TEST(SchedDeadline, RingLinkedTimeoutIsEtime) {
    asys_params p = params(2, 0, 0, ASYS_BACKEND_URING);
    asys_ctx *probe = nullptr;
    const int rc = asys_ctx_create(&p, &probe);
    if (rc < 0) GTEST_SKIP() << "no io_uring here (" << rc << "): the ring's deadline cannot be tested";
    ASSERT_EQ(asys_ctx_destroy(probe, ASYS_DESTROY_DRAIN), 0);
    ctx_guard ctx(&p);
    ASSERT_TRUE(ctx.ctx);
    if (async_path(ctx, ASYS_OP_RECV) != ASYS_PATH_URING) GTEST_SKIP() << "this ring does not take recv";
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    char buf[8];
    asys_op op;
    asys_prep_recv(&op, sv[0], buf, sizeof buf, 0);
    op.flags = ASYS_F_ASYNC | ASYS_F_DEADLINE;
    op.deadline_ns = static_cast<uint64_t>(now_ns() + 20 * 1000 * 1000);
    op.user_data = 1;
    submit_ok(ctx, op);
    asys_cqe cqe;
    ASSERT_TRUE(wait_one(ctx, &cqe)) << "the linked timeout never fired";
    EXPECT_EQ(cqe.res, -ETIME);
    EXPECT_EQ(cqe.path, ASYS_PATH_URING);
    // A deadline far away: the op completes as usual.
    op.deadline_ns = static_cast<uint64_t>(now_ns() + 3600LL * 1000000000LL);
    op.user_data = 2;
    submit_ok(ctx, op);
    ASSERT_EQ(write(sv[1], "hey", 3), 3);
    ASSERT_TRUE(wait_one(ctx, &cqe));
    EXPECT_EQ(cqe.user_data, 2u);
    EXPECT_EQ(cqe.res, 3);
    EXPECT_EQ(metrics(ctx).cls[ASYS_CLASS_NET].expired, 1u);
    close(sv[0]);
    close(sv[1]);
}

// ------------------------------------------------------------------ metrics

namespace {

// A small parser of the Prometheus text exposition format (0.0.4): every
// line is a comment (# HELP / # TYPE), blank, or `name{labels} value`.
// Returns the samples as "name{labels}" -> value; fails the test on any
// malformed line or a sample whose family has no TYPE.
std::map<std::string, double> parse_prometheus(const std::string &text) {
    std::map<std::string, double> samples;
    std::map<std::string, std::string> types;
    std::istringstream in(text);
    std::string line;
    auto is_name_char = [](char c, bool first) {
        return isalpha(static_cast<unsigned char>(c)) || c == '_' || c == ':' ||
               (!first && isdigit(static_cast<unsigned char>(c)));
    };
    int n = 0;
    while (std::getline(in, line)) {
        ++n;
        if (line.empty()) continue;
        if (line[0] == '#') {
            std::istringstream ls(line.substr(1));
            std::string kw, name, rest;
            ls >> kw >> name;
            EXPECT_TRUE(kw == "HELP" || kw == "TYPE") << "line " << n << ": " << line;
            if (kw == "TYPE") {
                ls >> rest;
                EXPECT_TRUE(rest == "counter" || rest == "gauge" || rest == "summary" || rest == "histogram" ||
                            rest == "untyped")
                    << line;
                EXPECT_EQ(types.count(name), 0u) << "TYPE twice: " << name;
                types[name] = rest;
            }
            continue;
        }
        size_t i = 0;
        while (i < line.size() && is_name_char(line[i], i == 0)) ++i;
        EXPECT_GT(i, 0u) << "line " << n << ": no metric name: " << line;
        const std::string name = line.substr(0, i);
        std::string key = name;
        if (i < line.size() && line[i] == '{') {
            const size_t open = i++;
            for (;;) {  // label="value" pairs
                size_t j = i;
                while (j < line.size() && is_name_char(line[j], j == i)) ++j;
                if (j == i || j + 1 >= line.size() || line[j] != '=' || line[j + 1] != '"') {
                    ADD_FAILURE() << "line " << n << ": bad label at " << i << ": " << line;
                    return samples;
                }
                j += 2;
                while (j < line.size() && line[j] != '"') {
                    if (line[j] == '\\') {
                        EXPECT_TRUE(j + 1 < line.size() && strchr("\\\"n", line[j + 1])) << "bad escape: " << line;
                        ++j;
                    }
                    ++j;
                }
                if (j >= line.size()) {
                    ADD_FAILURE() << "line " << n << ": unterminated label value: " << line;
                    return samples;
                }
                i = j + 1;
                if (i < line.size() && line[i] == ',') {
                    ++i;
                    continue;
                }
                if (i < line.size() && line[i] == '}') {
                    ++i;
                    break;
                }
                ADD_FAILURE() << "line " << n << ": bad label list: " << line;
                return samples;
            }
            key = line.substr(0, i);
            (void)open;
        }
        EXPECT_TRUE(i < line.size() && line[i] == ' ') << "line " << n << ": " << line;
        const std::string value = line.substr(i + 1);
        char *end = nullptr;
        const double v = strtod(value.c_str(), &end);
        EXPECT_TRUE(end && *end == '\0' && !value.empty()) << "line " << n << ": bad value: " << line;
        EXPECT_TRUE(std::isfinite(v)) << line;
        std::string family = name;
        for (const char *suffix : {"_sum", "_count"})
            if (!types.count(family) && family.size() > strlen(suffix) &&
                family.compare(family.size() - strlen(suffix), std::string::npos, suffix) == 0)
                family.resize(family.size() - strlen(suffix));
        EXPECT_EQ(types.count(family), 1u) << "sample without TYPE: " << line;
        EXPECT_EQ(samples.count(key), 0u) << "duplicate sample: " << key;
        samples[key] = v;
    }
    return samples;
}

std::string format(const asys_metrics &m, unsigned fmt) {
    const long need = asys_metrics_format(&m, fmt, nullptr, 0);
    EXPECT_GT(need, 0);
    std::string s(static_cast<size_t>(need) + 1, '\0');
    EXPECT_EQ(asys_metrics_format(&m, fmt, s.data(), s.size()), need);
    s.resize(static_cast<size_t>(need));
    return s;
}

}  // namespace

// Every counter matches the ops this test submitted, class by class.
TEST(SchedMetrics, CountersMatchSubmittedOpsExactly) {
    const asys_params p = pool_with(1);
    ctx_guard ctx(&p);
    ASSERT_TRUE(ctx.ctx);
    long res = 0;
    asys_op op;
    for (int i = 0; i < 5; ++i) {  // META, inline
        asys_prep_nop(&op, i);
        op.ret_ptr = &res;
        ASSERT_EQ(asys_submit(ctx, &op), ASYS_DONE);
    }
    asys_prep_nop(&op, 1);  // META, inline, expired
    op.ret_ptr = &res;
    op.flags = ASYS_F_DEADLINE;
    op.deadline_ns = 1;
    ASSERT_EQ(asys_submit(ctx, &op), ASYS_DONE);
    EXPECT_EQ(res, -ETIME);
    for (int i = 0; i < 3; ++i) submit_ok(ctx, async_nop(i, 10 + i, ASYS_F_CLASS(ASYS_CLASS_READ)));  // READ, punted
    const uint64_t none[6] = {};
    for (int i = 0; i < 2; ++i) {  // LONG (getppid is in no table), punted
        asys_prep_syscall(&op, SYS_getppid, none);
        op.flags = ASYS_F_ASYNC;
        op.user_data = 20 + i;
        submit_ok(ctx, op);
    }
    EXPECT_EQ(reap(ctx, 5).size(), 5u);
    // Two LONG ops queued behind a blocked one, then cancelled.
    gate g(1);
    hold_the_long_worker(ctx, g, 30);
    submit_ok(ctx, async_nop(0, 50, ASYS_F_CLASS(ASYS_CLASS_LONG)));
    submit_ok(ctx, async_nop(0, 50, ASYS_F_CLASS(ASYS_CLASS_LONG)));
    EXPECT_EQ(asys_cancel(ctx, 50), 0);
    g.open();
    EXPECT_EQ(reap(ctx, 3).size(), 3u);

    const asys_metrics m = metrics(ctx);
    struct expected {
        uint64_t submitted, done_inline, punted, completed, cancelled, expired;
    } want[ASYS_CLASS__COUNT] = {};
    want[ASYS_CLASS_META] = {6, 6, 0, 0, 0, 1};
    want[ASYS_CLASS_READ] = {3, 0, 3, 3, 0, 0};
    want[ASYS_CLASS_LONG] = {5, 0, 5, 5, 2, 0};
    for (unsigned k = 0; k < ASYS_CLASS__COUNT; ++k) {
        const asys_class_metrics &c = m.cls[k];
        SCOPED_TRACE(asys_class_name(k));
        EXPECT_EQ(c.submitted, want[k].submitted);
        EXPECT_EQ(c.done_inline, want[k].done_inline);
        EXPECT_EQ(c.punted, want[k].punted);
        EXPECT_EQ(c.completed, want[k].completed);
        EXPECT_EQ(c.cancelled, want[k].cancelled);
        EXPECT_EQ(c.expired, want[k].expired);
        EXPECT_EQ(c.in_flight, 0u);
        EXPECT_EQ(c.queued, 0u);
        EXPECT_EQ(c.lat_count, c.completed) << "every punted op is timed";
        if (c.lat_count) {
            EXPECT_GT(c.lat_p50_ns, 0u);
            EXPECT_LE(c.lat_p50_ns, c.lat_p99_ns);
            EXPECT_LE(c.lat_p99_ns, c.lat_p999_ns);
        }
    }
    EXPECT_EQ(m.total.submitted, 14u);
    EXPECT_EQ(m.total.done_inline, 6u);
    EXPECT_EQ(m.total.punted, 8u);
    EXPECT_EQ(m.total.lat_count, 8u);
    EXPECT_EQ(m.backend, static_cast<uint32_t>(ASYS_BACKEND_POOL));
    EXPECT_EQ(m.workers_max, 1u);
    EXPECT_EQ(m.workers, 1u);
    EXPECT_EQ(m.workers_busy + m.workers_idle, 1u);
    const asys_stats st = stats(ctx);
    EXPECT_EQ(st.submitted, 14u);
    EXPECT_EQ(st.done_inline, 6u);
    EXPECT_EQ(st.cancelled, 2u);

    // The same figures in the Prometheus text, which parses.
    const auto samples = parse_prometheus(format(m, ASYS_METRICS_PROMETHEUS));
    EXPECT_EQ(samples.at("asys_ops_submitted_total{class=\"long\"}"), 5);
    EXPECT_EQ(samples.at("asys_ops_cancelled_total{class=\"long\"}"), 2);
    EXPECT_EQ(samples.at("asys_ops_expired_total{class=\"meta\"}"), 1);
    EXPECT_EQ(samples.at("asys_ops_inline_total{class=\"meta\"}"), 6);
    EXPECT_EQ(samples.at("asys_latency_seconds_count{class=\"read\"}"), 3);
    EXPECT_EQ(samples.count("asys_latency_seconds{class=\"read\",quantile=\"0.99\"}"), 1u);
    EXPECT_EQ(samples.at("asys_workers_max"), 1);
    // And as text.
    const std::string text = format(m, ASYS_METRICS_TEXT);
    EXPECT_NE(text.find("\nlong.cancelled 2\n"), std::string::npos) << text;
    EXPECT_NE(text.find("\ntotal.submitted 14\n"), std::string::npos) << text;
    EXPECT_NE(text.find("backend pool\n"), std::string::npos) << text;
}

TEST(SchedMetrics, FormatArguments) {
    asys_metrics m{};
    strcpy(m.reason, "a \"quoted\"\\ reason\nwith a newline");
    char small[16];
    const long need = asys_metrics_format(&m, ASYS_METRICS_PROMETHEUS, small, sizeof small);
    EXPECT_GT(need, static_cast<long>(sizeof small));
    EXPECT_EQ(strlen(small), sizeof small - 1) << "truncated and terminated";
    const auto samples = parse_prometheus(format(m, ASYS_METRICS_PROMETHEUS));
    EXPECT_EQ(samples.count("asys_backend_info{backend=\"pool\",uring_error=\"0\",reason=\"a \\\"quoted\\\"\\\\ "
                            "reason\\nwith a newline\"}"),
              1u);
    EXPECT_EQ(asys_metrics_format(&m, 2, small, sizeof small), -EINVAL);
    EXPECT_EQ(asys_metrics_format(nullptr, ASYS_METRICS_TEXT, small, sizeof small), -EFAULT);
    EXPECT_EQ(asys_metrics_format(&m, ASYS_METRICS_TEXT, nullptr, 5), -EFAULT);
    EXPECT_EQ(asys_ctx_metrics(nullptr, &m), -EINVAL);
    ctx_guard ctx;
    ASSERT_TRUE(ctx.ctx);
    EXPECT_EQ(asys_ctx_metrics(ctx, nullptr), -EFAULT);
}

// A batch counts its ops per class too, whether they finished inline, during
// the ring's enter, or later (asys_submit_batch's windows on the ring).
TEST(SchedMetrics, BatchCountsPerClass) {
    ctx_guard ctx;  // the backend $ASYS_BACKEND selects
    ASSERT_TRUE(ctx.ctx);
    temp_dir dir;
    const int fd = make_file(dir.file("f"), 8 * 4096);
    ASSERT_GE(fd, 0);
    static char bufs[8][4096];
    long res[10];
    asys_op ops[10];
    for (int i = 0; i < 8; ++i) {
        asys_prep_pread(&ops[i], fd, bufs[i], 4096, i * 4096);
        ops[i].ret_ptr = &res[i];
    }
    for (int i = 8; i < 10; ++i) {
        asys_prep_nop(&ops[i], i);
        ops[i].ret_ptr = &res[i];
    }
    int status[10];
    ASSERT_EQ(asys_submit_batch(ctx, ops, 10, status), 10);
    unsigned pending = 0;
    for (int s : status) {
        ASSERT_GE(s, 0);
        pending += s == 0;
    }
    EXPECT_EQ(reap(ctx, pending).size(), pending);
    for (int i = 0; i < 8; ++i) EXPECT_EQ(res[i], 4096);
    const asys_metrics m = metrics(ctx);
    EXPECT_EQ(m.cls[ASYS_CLASS_READ].submitted, 8u);
    EXPECT_EQ(m.cls[ASYS_CLASS_META].submitted, 2u);
    EXPECT_EQ(m.total.submitted, 10u);
    EXPECT_EQ(m.total.done_inline + m.total.punted, 10u);
    EXPECT_EQ(m.total.punted, pending);
    EXPECT_EQ(m.total.in_flight, 0u);
    close(fd);
}
