// libasys_interpose.so (the test re-executes itself with it preloaded):
// inside a transparent
// threadlet libc's read, recv and nanosleep go through asys_call (they park
// without a trap); outside one they are libc's own.
#include <dlfcn.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

#include "helpers.hpp"

using namespace asys_test;

namespace {

bool preloaded() {
    Dl_info info{};
    auto *fn = reinterpret_cast<void *>(&::read);
    return dladdr(fn, &info) && info.dli_fname && std::strstr(info.dli_fname, "libasys_interpose");
}

#define REQUIRE_PRELOAD() \
    if (!preloaded()) GTEST_SKIP() << "libasys_interpose.so could not be preloaded (" ASYS_INTERPOSE_PATH ")"

struct reader {
    int fd;
    char buf[16] = {};
    int err = 0;
    long flags = -1;
};

long libc_read(void *a) {
    auto *r = static_cast<reader *>(a);
    r->flags = asys_threadlet_flags();
    const ssize_t n = read(r->fd, r->buf, sizeof r->buf - 1);
    r->err = n < 0 ? errno : 0;
    return n;
}

}  // namespace

TEST(Interpose, LibcReadInATransparentThreadletParks) {
    REQUIRE_PRELOAD();
    ctx_guard ctx;
    pipe_pair p;
    reader r{p.r};
    long ret = -999;
    asys_op op;
    asys_prep_threadlet(&op, libc_read, &r, ASYS_THREADLET_TRANSPARENT);
    op.ret_ptr = &ret;
    const int rc = asys_submit(ctx, &op);
    if (rc == -EOPNOTSUPP) GTEST_SKIP() << "no syscall user dispatch in this kernel";
    ASSERT_EQ(rc, 0);
    EXPECT_EQ(r.flags, static_cast<long>(ASYS_THREADLET_TRANSPARENT));
    ASSERT_EQ(write(p.w, "interposed", 10), 10);
    ASSERT_EQ(reap(ctx, 1).size(), 1u);
    EXPECT_EQ(ret, 10);
    EXPECT_STREQ(r.buf, "interposed");
}

TEST(Interpose, ErrorsComeBackThroughErrno) {
    REQUIRE_PRELOAD();
    ctx_guard ctx;
    reader r{-1};
    long ret = -999;
    asys_op op;
    asys_prep_threadlet(&op, libc_read, &r, ASYS_THREADLET_TRANSPARENT);
    op.ret_ptr = &ret;
    const int rc = asys_submit(ctx, &op);
    if (rc == -EOPNOTSUPP) GTEST_SKIP() << "no syscall user dispatch in this kernel";
    ASSERT_EQ(rc, ASYS_DONE);
    EXPECT_EQ(ret, -1);
    EXPECT_EQ(r.err, EBADF);
}

TEST(Interpose, RecvAndNanosleepPark) {
    REQUIRE_PRELOAD();
    ctx_guard ctx;
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    struct job {
        int fd;
        char buf[8] = {};
        int slept = -1;
    } j{sv[0]};
    auto fn = [](void *a) -> long {
        auto *jj = static_cast<job *>(a);
        struct timespec ts{0, 1000 * 1000};
        jj->slept = nanosleep(&ts, nullptr);
        return recv(jj->fd, jj->buf, sizeof jj->buf - 1, 0);
    };
    long ret = -999;
    asys_op op;
    asys_prep_threadlet(&op, fn, &j, ASYS_THREADLET_TRANSPARENT);
    op.ret_ptr = &ret;
    const int rc = asys_submit(ctx, &op);
    if (rc == -EOPNOTSUPP) GTEST_SKIP() << "no syscall user dispatch in this kernel";
    ASSERT_EQ(rc, 0);  // the sleep parks it
    ASSERT_EQ(send(sv[1], "abc", 3, 0), 3);
    auto c = reap(ctx, 1);
    ASSERT_EQ(c.size(), 1u);
    EXPECT_EQ(j.slept, 0);
    EXPECT_EQ(ret, 3);
    EXPECT_STREQ(j.buf, "abc");
    close(sv[0]);
    close(sv[1]);
}

TEST(Interpose, OutsideThreadletsTheCallsAreLibcs) {
    REQUIRE_PRELOAD();
    EXPECT_EQ(asys_threadlet_flags(), -ESRCH);
    pipe_pair p;
    ASSERT_EQ(write(p.w, "ok", 2), 2);
    char b[4] = {};
    EXPECT_EQ(read(p.r, b, 2), 2);
    EXPECT_STREQ(b, "ok");
    errno = 0;
    EXPECT_EQ(read(-1, b, 1), -1);
    EXPECT_EQ(errno, EBADF);
    ctx_guard ctx;
    long ret = -999;
    asys_op op;
    reader r{p.r};
    ASSERT_EQ(write(p.w, "x", 1), 1);
    asys_prep_threadlet(&op, libc_read, &r, 0);  // not transparent: libc's read, inline
    op.ret_ptr = &ret;
    ASSERT_EQ(asys_submit(ctx, &op), ASYS_DONE);
    EXPECT_EQ(ret, 1);
    EXPECT_EQ(r.flags, 0);
}

// Re-executes itself once with the interposer preloaded.
int main(int argc, char **argv) {
    if (!preloaded() && !getenv("ASYS_INTERPOSE_REEXEC")) {
        setenv("ASYS_INTERPOSE_REEXEC", "1", 1);
        setenv("LD_PRELOAD", ASYS_INTERPOSE_PATH, 1);
        execv("/proc/self/exe", argv);  // returns only on failure: the tests then skip loudly
    }
    testing::InitGoogleTest(&argc, argv);
    return RUN_ALL_TESTS();
}
