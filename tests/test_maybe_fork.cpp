// maybe_fork() runs the demonstration of the proposal it comes from, in its
// two cases, and checks the order of events the proposal lists for each:
//   non-blocking: getpid, maybe_fork, read, maybe_fork, bar, foo, qat;
//   blocking: getpid, maybe_fork, read [forks]; the child: maybe_fork ≠ 0,
//   bar, exit; the parent: the first maybe_fork returns the child's pid,
//   foo, waitpid, qat.
// Events are logged in shared memory, so the child's are seen too.
#include "asys/maybe_fork.h"

#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <vector>

#include "helpers.hpp"

using namespace asys_test;

// The demonstration's `int childpid = maybe_fork(...)` is assigned by each
// return, as setjmp's result would be; GCC cannot tell and warns.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wclobbered"
#endif

namespace {

enum ev_code { GETPID = 1, MAYBE_FORK, READ, READ_DONE, MAYBE_FORK_END_, BAR, FOO, WAITPID, QAT, EXIT };

struct event {
    int code;
    long value;
    pid_t pid;
};

struct event_log {
    std::atomic<unsigned> n;
    event e[64];
};

event_log *g_log;

// No system call but getpid() (which never blocks): safe inside a region.
void ev(int code, long value = 0) {
    const unsigned i = g_log->n.fetch_add(1);
    if (i < 64) g_log->e[i] = {code, value, getpid()};
}

std::vector<event> events_of(pid_t pid) {
    std::vector<event> out;
    for (unsigned i = 0; i < g_log->n.load() && i < 64; ++i)
        if (g_log->e[i].pid == pid) out.push_back(g_log->e[i]);
    return out;
}

std::vector<int> codes(const std::vector<event> &es) {
    std::vector<int> c;
    for (const event &e : es) c.push_back(e.code);
    return c;
}

struct shared_log {
    shared_log() {
        void *p = mmap(nullptr, sizeof(event_log), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        EXPECT_NE(p, MAP_FAILED);
        g_log = new (p) event_log{};
    }
    ~shared_log() { munmap(g_log, sizeof(event_log)); }
};

}  // namespace

// The demonstration, as the proposal writes it, on a pipe: read() blocks
// unless the pipe has data already; foo() writes "hello" (feeding the
// child's read in the blocking case). Returns maybe_fork's first result
// (negative: refused) after qat(); the child never returns.
int demonstration(const pipe_pair &p, char *buf) {
    ev(GETPID, getpid());
    jmp_buf buffer;
    int childpid = maybe_fork(&buffer, FORK_ON_BLOCKING);
    if (childpid < 0) return childpid;
    ev(MAYBE_FORK, childpid);
    if (!childpid) {
        ev(READ);
        const long n = read(p.r, buf, 5);  // may fork here
        ev(READ_DONE, n);
        int our_new_pid = maybe_fork(0, MAYBE_FORK_END);
        ev(MAYBE_FORK_END_, our_new_pid);
        ev(BAR, memcmp(buf, "hello", 5) == 0);
        if (our_new_pid) {
            ev(EXIT);
            _exit(0);
        }
    }
    ev(FOO);
    if (write(p.w, "hello", 5) != 5) return -EIO;
    if (childpid) {
        int status = -1;
        if (waitpid(childpid, &status, 0) != childpid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
            return -ECHILD;
        ev(WAITPID);
    }
    ev(QAT);
    return childpid;
}

TEST(MaybeFork, NonBlockingCaseNeverForks) {
    if (under_tsan()) GTEST_SKIP() << "maybe_fork jumps out of a signal handler, which TSan's shadow stack does not follow";
    shared_log log;
    pipe_pair p;
    ASSERT_EQ(write(p.w, "hello", 5), 5);  // read() will not block
    char buf[8] = {};
    alarm(60);  // a region that failed to catch the read would hang here
    const int childpid = demonstration(p, buf);
    alarm(0);
    if (childpid == -EOPNOTSUPP) GTEST_SKIP() << "no syscall user dispatch in this kernel";
    ASSERT_EQ(childpid, 0) << "nothing forked";

    EXPECT_EQ(g_log->n.load(), 8u) << "every event in this process";
    const auto mine = events_of(getpid());
    EXPECT_EQ(codes(mine), (std::vector<int>{GETPID, MAYBE_FORK, READ, READ_DONE, MAYBE_FORK_END_, BAR, FOO, QAT}));
    EXPECT_EQ(mine[1].value, 0) << "maybe_fork returned 0 once";
    EXPECT_EQ(mine[3].value, 5) << "read() completed inline";
    EXPECT_EQ(mine[4].value, 0) << "MAYBE_FORK_END returns 0 without a fork";
    EXPECT_EQ(mine[5].value, 1) << "bar() saw the data";
}

TEST(MaybeFork, BlockingCaseForksAtTheRead) {
    if (under_tsan()) GTEST_SKIP() << "maybe_fork jumps out of a signal handler, which TSan's shadow stack does not follow";
    shared_log log;
    pipe_pair p;  // empty: read() would block
    char buf[8] = {};
    alarm(60);
    const int childpid = demonstration(p, buf);
    alarm(0);
    if (childpid == -EOPNOTSUPP) GTEST_SKIP() << "no syscall user dispatch in this kernel";
    ASSERT_GT(childpid, 0) << "the parent resumed at maybe_fork with the child's pid, and waited for it";

    const auto parent = events_of(getpid());
    EXPECT_EQ(codes(parent), (std::vector<int>{GETPID, MAYBE_FORK, READ, MAYBE_FORK, FOO, WAITPID, QAT}));
    EXPECT_EQ(parent[1].value, 0) << "first return: the region starts";
    EXPECT_EQ(parent[3].value, childpid) << "second return: the child's pid";
    const auto child = events_of(childpid);
    EXPECT_EQ(codes(child), (std::vector<int>{READ_DONE, MAYBE_FORK_END_, BAR, EXIT}));
    if (child.size() == 4) {
        EXPECT_EQ(child[0].value, 5) << "the child completed the blocked read";
        EXPECT_EQ(child[1].value, childpid) << "MAYBE_FORK_END returns the child's new pid";
        EXPECT_EQ(child[2].value, 1) << "the child read the parent's data";
    }
    // The child's exit came before the parent's waitpid returned.
    unsigned exit_at = 99, waitpid_at = 0;
    for (unsigned i = 0; i < g_log->n.load(); ++i) {
        if (g_log->e[i].code == EXIT) exit_at = i;
        if (g_log->e[i].code == WAITPID) waitpid_at = i;
    }
    EXPECT_LT(exit_at, waitpid_at);
}

TEST(MaybeFork, RefusesWhatItCannotDo) {
    EXPECT_EQ(maybe_fork(nullptr, FORK_ON_BLOCKING), -EFAULT);
    jmp_buf b;
    EXPECT_EQ(maybe_fork(&b, FORK_ON_SOMETHING), -EINVAL);
    EXPECT_EQ(maybe_fork(&b, 77), -EINVAL);
    EXPECT_EQ(maybe_fork(0, MAYBE_FORK_END), 0) << "no region: nothing forked";
}
