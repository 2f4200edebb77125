// The C++ layer: asys::result<T> and the asys::chain builder — typed steps
// whose results flow into later steps (open -> read the fd just opened ->
// close), errors that stop the chain and throw from value(), loops built
// with chain_var + umem_add + jump (cached: inline; cold: async mid-chain),
// submit() with a cqe, NOWAIT, re-running and moving a chain.
#include "asys/chain.hpp"

#include <sys/mman.h>

#include <cstring>
#include <string>

#include "helpers.hpp"

using namespace asys_test;

namespace {

TEST(Result, ValueErrorAndThrow) {
    auto ok = asys::result<int>::from_syscall(5);
    EXPECT_TRUE(ok);
    EXPECT_EQ(ok.value(), 5);
    EXPECT_EQ(*ok, 5);
    EXPECT_EQ(ok.error(), 0);
    auto bad = asys::result<int>::from_syscall(-ENOENT);
    EXPECT_FALSE(bad);
    EXPECT_EQ(bad.error(), ENOENT);
    EXPECT_EQ(bad.value_or(-1), -1);
    EXPECT_EQ(bad.error_code(), std::error_code(ENOENT, std::system_category()));
    try {
        (void)bad.value();
        ADD_FAILURE() << "value() of an error must throw";
    } catch (const std::system_error &e) {
        EXPECT_EQ(e.code().value(), ENOENT);
    }
    asys::result<void> v = asys::result<void>::from_syscall(-EBADF);
    EXPECT_EQ(v.error(), EBADF);
    EXPECT_THROW(v.value(), std::system_error);
    EXPECT_NO_THROW(asys::result<void>::from_syscall(0).value());
    EXPECT_EQ(asys::result<long>::from_errno(0).error(), EINVAL) << "0 is not an error code";
}

class Chain : public ::testing::Test {
protected:
    asys_params p_ = params(4);
    ctx_guard ctx_{&p_};
    temp_dir dir_;
};

TEST_F(Chain, OpenReadTheFdJustOpenedClose) {
    const std::string path = dir_.file("f");
    close(make_file(path, 100));
    char buf[128] = {};
    asys::chain c;
    auto fd = c.open(path.c_str(), O_RDONLY | O_CLOEXEC);
    auto n = c.read(fd, buf, sizeof buf);
    auto cl = c.close(fd);
    auto r = c.run(ctx_);
    ASSERT_TRUE(r) << strerror(r.error());
    EXPECT_EQ(r.value(), 0) << "close's result ends the chain";
    EXPECT_GE(fd.get().value(), 0);
    EXPECT_EQ(n.get().value(), 100);
    EXPECT_EQ(cl.get().value(), 0);
    EXPECT_EQ(c.last(), 2);
    for (int i = 0; i < 100; ++i) ASSERT_EQ(buf[i], pattern(static_cast<size_t>(i))) << i;
    EXPECT_EQ(fcntl(static_cast<int>(fd.get().value()), F_GETFD), -1) << "the chain closed it";
}

TEST_F(Chain, AnErrorStopsTheChainAndThrowsFromValue) {
    char buf[16];
    asys::chain c;
    auto fd = c.open(dir_.file("missing").c_str(), O_RDONLY);
    auto n = c.read(fd, buf, sizeof buf);
    auto r = c.run(ctx_);
    EXPECT_EQ(r.error(), ENOENT);
    EXPECT_EQ(fd.get().error(), ENOENT);
    EXPECT_FALSE(n.ran());
    EXPECT_EQ(n.get().error(), ECANCELED) << "a step that did not run";
    EXPECT_EQ(c.last(), 0);
    try {
        (void)fd.get().value();
        ADD_FAILURE() << "must throw";
    } catch (const std::system_error &e) {
        EXPECT_EQ(e.code().value(), ENOENT);
    }
}

// pread 4 KiB at `off` into `bufp`; stop at 0 (EOF) or error; off += n;
// bufp += n; back to the pread.
struct file_reader {
    asys::chain c;
    asys::chain_step<ssize_t> n;
    file_reader(int fd, char *buf)
        : n([&] {
              auto off = c.var<off_t>(0);
              auto bufp = c.var<char *>(buf);
              auto rd = c.pread(fd, bufp, 4096, off, SYSLET_STOP_ON_NON_POSITIVE);
              c.umem_add(off, rd);
              auto adv = c.umem_add(bufp, rd);
              c.jump(adv, rd);
              return rd;
          }()) {}
};

TEST_F(Chain, LoopReadsAWholeFileCachedInline) {
    constexpr size_t kSize = 70000;  // 17 full steps and a short one
    int fd = make_file(dir_.file("loop"), kSize);
    ASSERT_GE(fd, 0);
    std::vector<char> buf(kSize + 4096);
    file_reader fr(fd, buf.data());
    const auto before = stats(ctx_);
    auto r = fr.c.run(ctx_);
    EXPECT_EQ(r.value(), 0) << "the pread at EOF ends it";
    EXPECT_EQ(fr.c.last(), 0);
    EXPECT_EQ(stats(ctx_).done_inline, before.done_inline + 1) << "cached: fully inline";
    for (size_t i = 0; i < kSize; ++i) ASSERT_EQ(buf[i], pattern(i)) << i;
    close(fd);
}

TEST_F(Chain, LoopGoesAsyncMidChainOnAColdFile) {
    constexpr size_t kSize = 256 * 1024;
    int fd = make_file(dir_.file("cold"), kSize);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(fdatasync(fd), 0);
    ASSERT_EQ(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
    std::vector<char> buf(kSize + 4096);
    file_reader fr(fd, buf.data());
    const auto before = stats(ctx_);
    auto r = fr.c.run(ctx_);
    EXPECT_EQ(r.value(), 0);
    const auto after = stats(ctx_);
    if (after.done_inline != before.done_inline)
        GTEST_SKIP() << "SKIPPED: the page cache could not be dropped here, so the chain never blocked";
    EXPECT_EQ(after.punted_probe + after.punted_direct, before.punted_probe + before.punted_direct + 1);
    for (size_t i = 0; i < kSize; ++i) ASSERT_EQ(buf[i], pattern(i)) << i;
    close(fd);
}

TEST_F(Chain, SubmitDeliversACqe) {
    pipe_pair pp;
    char b = 0;
    asys::chain c;
    auto n = c.read(pp.r, &b, 1);
    long res = -1;
    asys_op tmpl{};
    tmpl.ret_ptr = &res;
    tmpl.user_data = 9;
    ASSERT_EQ(c.submit(ctx_, tmpl), 0) << "empty pipe: in flight";
    ASSERT_EQ(write(pp.w, "q", 1), 1);
    auto e = reap(ctx_, 1);
    ASSERT_EQ(e.size(), 1u);
    EXPECT_EQ(e[0].user_data, 9u);
    EXPECT_EQ(e[0].opcode, static_cast<uint32_t>(ASYS_OP_CHAIN));
    EXPECT_EQ(e[0].res, 1);
    EXPECT_EQ(res, 1);
    EXPECT_EQ(n.get().value(), 1);
    EXPECT_EQ(b, 'q');
}

TEST_F(Chain, NowaitReportsWhereItStopped) {
    pipe_pair pp;
    char b = 0;
    asys::chain c;
    auto pid = c.call<pid_t>(SYS_getppid, {});
    auto n = c.read(pp.r, &b, 1);
    auto r = c.run(ctx_, ASYS_F_NOWAIT);
    EXPECT_EQ(r.error(), EAGAIN);
    EXPECT_EQ(pid.get().value(), getppid());
    EXPECT_FALSE(n.ran());
    EXPECT_EQ(c.last(), 1) << "the first step that did not run";
}

TEST_F(Chain, RerunResetsResultsAndMoveKeepsHandles) {
    pipe_pair pp;
    char b = 0;
    asys::chain c;
    auto n = c.read(pp.r, &b, 1, SYSLET_STOP_ON_NON_POSITIVE);
    auto pid = c.call<pid_t>(SYS_getppid, {});
    ASSERT_EQ(write(pp.w, "a", 1), 1);
    EXPECT_EQ(c.run(ctx_).value(), getppid());
    EXPECT_TRUE(pid.ran());
    close(pp.w);
    pp.w = -1;  // EOF: the read stops the chain now
    asys::chain moved = std::move(c);
    EXPECT_EQ(moved.run(ctx_).value(), 0);
    EXPECT_EQ(n.get().value(), 0);
    EXPECT_FALSE(pid.ran()) << "results of the previous run were reset";
}

TEST_F(Chain, DeniedCallsAndEmptyChains) {
    asys::chain c;
    auto f = c.call(SYS_fork, {});
    EXPECT_EQ(c.run(ctx_).error(), EPERM);
    EXPECT_EQ(f.get().error(), EPERM);
    asys::chain empty;
    EXPECT_EQ(empty.run(ctx_).error(), EINVAL);
    EXPECT_EQ(empty.head(), nullptr);
}

TEST_F(Chain, HeadWorksWithTheSysletApi) {
    syslet_uatom *ring[2] = {};
    ASSERT_EQ(asys_async_register(ctx_, ring, 2), 0);
    asys::chain c;
    auto a = c.call<pid_t>(SYS_getppid, {});
    auto b = c.call<pid_t>(SYS_getpid, {});
    syslet_uatom *h = c.head();
    EXPECT_EQ(asys_async_exec(ctx_, h), reinterpret_cast<long>(h + 1));
    EXPECT_EQ(a.get().value(), getppid());
    EXPECT_EQ(b.get().value(), getpid());
}

}  // namespace
