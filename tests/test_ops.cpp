// Every operation, run through each router path: forced to the backend
// (ASYS_F_ASYNC), on the caller (ASYS_F_SYNC) and routed automatically.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>

#include <cstring>

#include "helpers.hpp"

using namespace asys_test;

namespace {

struct mode {
    const char *name;
    uint32_t flags;
    friend void PrintTo(const mode &m, std::ostream *os) { *os << m.name; }
};

class Ops : public ::testing::TestWithParam<mode> {
protected:
    asys_params p_ = params(4);
    ctx_guard ctx_{&p_};
    temp_dir dir_;

    long go(asys_op op) {
        op.flags |= GetParam().flags;
        uint32_t path = 0;
        long r = run(ctx_, op, &path);
        if (GetParam().flags & ASYS_F_ASYNC)
            EXPECT_EQ(path, async_path(ctx_, op)) << asys_opcode_name(op.opcode);
        if (GetParam().flags & ASYS_F_SYNC) EXPECT_EQ(path, ASYS_PATH_INLINE) << asys_opcode_name(op.opcode);
        return r;
    }
};

TEST_P(Ops, Nop) {
    asys_op op;
    asys_prep_nop(&op, 42);
    EXPECT_EQ(go(op), 42);
}

TEST_P(Ops, ReadFamily) {
    int fd = make_file(dir_.file("f"), 10000);
    ASSERT_GE(fd, 0);
    char buf[8192];
    asys_op op;

    asys_prep_pread(&op, fd, buf, 4096, 4096);
    ASSERT_EQ(go(op), 4096);
    for (size_t i = 0; i < 4096; ++i) ASSERT_EQ(buf[i], pattern(4096 + i)) << i;

    ASSERT_EQ(lseek(fd, 100, SEEK_SET), 100);
    asys_prep_read(&op, fd, buf, 50);
    ASSERT_EQ(go(op), 50);
    EXPECT_EQ(buf[0], pattern(100));
    EXPECT_EQ(lseek(fd, 0, SEEK_CUR), 150) << "read must advance the file position";

    char a[10], b[20];
    struct iovec iov[2] = {{a, sizeof a}, {b, sizeof b}};
    asys_prep_readv(&op, fd, iov, 2);
    ASSERT_EQ(go(op), 30);
    EXPECT_EQ(a[0], pattern(150));
    EXPECT_EQ(b[19], pattern(179));

    asys_prep_preadv(&op, fd, iov, 2, 9990, 0);
    ASSERT_EQ(go(op), 10) << "short at EOF";
    EXPECT_EQ(a[9], pattern(9999));

    asys_prep_pread(&op, fd, buf, 100, 20000);
    EXPECT_EQ(go(op), 0) << "EOF";
    close(fd);
}

TEST_P(Ops, WriteFamily) {
    int fd = make_file(dir_.file("w"), 0);
    ASSERT_GE(fd, 0);
    asys_op op;
    asys_prep_write(&op, fd, "hello", 5);
    ASSERT_EQ(go(op), 5);
    asys_prep_pwrite(&op, fd, "XY", 2, 1);
    ASSERT_EQ(go(op), 2);
    char c1[] = "12", c2[] = "345";
    struct iovec iov[2] = {{c1, 2}, {c2, 3}};
    asys_prep_writev(&op, fd, iov, 2);
    ASSERT_EQ(go(op), 5);
    asys_prep_pwritev(&op, fd, iov, 2, 20, 0);
    ASSERT_EQ(go(op), 5);
    char buf[32] = {};
    ASSERT_EQ(pread(fd, buf, sizeof buf, 0), 25);
    EXPECT_EQ(std::string(buf, 10), std::string("hXYlo12345"));
    EXPECT_EQ(std::string(buf + 20, 5), "12345");
    close(fd);
}

TEST_P(Ops, OpenCloseSync) {
    std::string path = dir_.file("o");
    asys_op op;
    asys_prep_openat(&op, AT_FDCWD, path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    long fd = go(op);
    ASSERT_GE(fd, 0);
    asys_prep_openat(&op, AT_FDCWD, path.c_str(), O_RDONLY | O_CLOEXEC, 0);
    long fd2 = go(op);
    ASSERT_GE(fd2, 0) << "plain open (cached path)";
    asys_prep_fsync(&op, static_cast<int>(fd));
    EXPECT_EQ(go(op), 0);
    asys_prep_fdatasync(&op, static_cast<int>(fd));
    EXPECT_EQ(go(op), 0);
    asys_prep_close(&op, static_cast<int>(fd));
    EXPECT_EQ(go(op), 0);
    asys_prep_close(&op, static_cast<int>(fd2));
    EXPECT_EQ(go(op), 0);
    EXPECT_EQ(fcntl(static_cast<int>(fd), F_GETFD), -1) << "fd must be closed";
    const std::string missing = dir_.file("missing");  // must outlive the op
    asys_prep_openat(&op, AT_FDCWD, missing.c_str(), O_RDONLY, 0);
    EXPECT_EQ(go(op), -ENOENT);
}

TEST_P(Ops, Metadata) {
    int fd = make_file(dir_.file("m"), 123);
    ASSERT_GE(fd, 0);
    asys_op op;
    struct statx stx {};
    std::string path = dir_.file("m");
    asys_prep_statx(&op, AT_FDCWD, path.c_str(), 0, STATX_SIZE, &stx);
    ASSERT_EQ(go(op), 0);
    EXPECT_EQ(stx.stx_size, 123u);

    asys_prep_ftruncate(&op, fd, 50);
    ASSERT_EQ(go(op), 0);
    asys_prep_fallocate(&op, fd, 0, 0, 8192);
    ASSERT_EQ(go(op), 0);
    struct stat st;
    ASSERT_EQ(fstat(fd, &st), 0);
    EXPECT_EQ(st.st_size, 8192);
    close(fd);

    std::string sub = dir_.file("sub");
    asys_prep_mkdirat(&op, AT_FDCWD, sub.c_str(), 0700);
    ASSERT_EQ(go(op), 0);
    EXPECT_EQ(stat(sub.c_str(), &st), 0);
    EXPECT_TRUE(S_ISDIR(st.st_mode));

    std::string moved = dir_.file("moved");
    asys_prep_renameat(&op, AT_FDCWD, path.c_str(), AT_FDCWD, moved.c_str(), 0);
    ASSERT_EQ(go(op), 0);
    EXPECT_EQ(access(moved.c_str(), F_OK), 0);
    EXPECT_NE(access(path.c_str(), F_OK), 0);

    asys_prep_unlinkat(&op, AT_FDCWD, moved.c_str(), 0);
    ASSERT_EQ(go(op), 0);
    EXPECT_NE(access(moved.c_str(), F_OK), 0);
    asys_prep_unlinkat(&op, AT_FDCWD, sub.c_str(), AT_REMOVEDIR);
    ASSERT_EQ(go(op), 0);
}

TEST_P(Ops, Sockets) {
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(lfd, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(bind(lfd, reinterpret_cast<sockaddr *>(&addr), sizeof addr), 0);
    ASSERT_EQ(listen(lfd, 4), 0);
    socklen_t len = sizeof addr;
    ASSERT_EQ(getsockname(lfd, reinterpret_cast<sockaddr *>(&addr), &len), 0);

    int cfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    asys_op op;
    asys_prep_connect(&op, cfd, &addr, sizeof addr);
    ASSERT_EQ(go(op), 0);
    asys_prep_accept(&op, lfd, nullptr, nullptr, SOCK_CLOEXEC);
    long sfd = go(op);
    ASSERT_GE(sfd, 0);

    asys_prep_send(&op, cfd, "ping", 4, 0);
    ASSERT_EQ(go(op), 4);
    asys_prep_poll(&op, static_cast<int>(sfd), POLLIN, 5000);
    EXPECT_EQ(go(op), POLLIN);
    char buf[8] = {};
    asys_prep_recv(&op, static_cast<int>(sfd), buf, sizeof buf, 0);
    ASSERT_EQ(go(op), 4);
    EXPECT_EQ(std::string(buf, 4), "ping");
    close(cfd);
    close(static_cast<int>(sfd));
    close(lfd);
}

TEST_P(Ops, GenericSyscall) {
    uint64_t args[6] = {};
    asys_op op;
    asys_prep_syscall(&op, SYS_getppid, args);
    EXPECT_EQ(go(op), getppid());
    int fd = make_file(dir_.file("g"), 4096);
    char buf[16];
    uint64_t rargs[6] = {static_cast<uint64_t>(fd), reinterpret_cast<uint64_t>(buf), 16, 4000, 0, 0};
    asys_prep_syscall(&op, SYS_pread64, rargs);
    EXPECT_EQ(go(op), 16);
    EXPECT_EQ(buf[0], pattern(4000));
    asys_prep_syscall(&op, 100000 - 99000 + 23, args);  // 1023: in range, not a syscall
    EXPECT_EQ(go(op), -ENOSYS);
    close(fd);
}

// Thread identity: the caller keeps its TID (seed 004), and a call that
// reads the calling thread's identity gives the caller's on every path,
// ASYNC included (it runs on the submitting thread: docs/api.md).
TEST_P(Ops, ThreadIdentity) {
    uint64_t args[6] = {};
    asys_op op;
    asys_prep_syscall(&op, SYS_gettid, args);
    op.flags = GetParam().flags;
    uint32_t path = 0;
    EXPECT_EQ(run(ctx_, op, &path), gettid());
    EXPECT_EQ(path, ASYS_PATH_INLINE);
}

INSTANTIATE_TEST_SUITE_P(Paths, Ops,
                         ::testing::Values(mode{"pool", ASYS_F_ASYNC}, mode{"sync", ASYS_F_SYNC},
                                           mode{"auto", 0}),
                         [](const auto &info) { return std::string(info.param.name); });

}  // namespace
