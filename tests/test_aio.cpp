// POSIX AIO conformance of libasys-aio, written from POSIX.1-2017 (aio_read,
// aio_write, aio_fsync, aio_error, aio_return, aio_suspend, aio_cancel,
// lio_listio): one test per error case the standard lists, plus what the
// library promises beyond it (docs/aio.md): a cached read is complete when
// aio_read returns, a read and a write of one socket run concurrently; and
// call order where POSIX (or glibc) has it: O_APPEND writes, pipe writes
// and reads.
//
// Built twice from this file: test_aio_linked links libasys-aio; test_aio_glibc
// is linked against glibc only and runs with LD_PRELOAD=libasys-aio.so. Both
// first check that aio_read really is libasys-aio's.
#include <aio.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "helpers.hpp"

using asys_test::make_file;
using asys_test::pattern;
using asys_test::temp_dir;

namespace {

// The preloaded library is in this process already; programs the tests start
// (the shell that removes a temp dir) do not need it, and in sanitizer builds
// could not load it.
[[maybe_unused]] const int g_no_preload_for_children = unsetenv("LD_PRELOAD");

aiocb block(int fd, void *buf, size_t len, off_t off = 0) {
    aiocb cb;
    std::memset(&cb, 0, sizeof cb);
    cb.aio_fildes = fd;
    cb.aio_buf = buf;
    cb.aio_nbytes = len;
    cb.aio_offset = off;
    cb.aio_sigevent.sigev_notify = SIGEV_NONE;
    return cb;
}

// Waits (aio_suspend, bounded by 30 s) until cb is no longer in progress.
void await(const aiocb &cb) {
    const aiocb *list[1] = {&cb};
    auto end = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (aio_error(&cb) == EINPROGRESS) {
        ASSERT_LT(std::chrono::steady_clock::now(), end) << "request never completed";
        timespec ts{1, 0};
        int rc = aio_suspend(list, 1, &ts);
        ASSERT_TRUE(rc == 0 || errno == EAGAIN || errno == EINTR) << strerror(errno);
    }
}

// An error POSIX lets the implementation report at the call (-1, errno) or
// as the request's status: either way it must be `expected`.
void expect_error_either_way(int rc, aiocb &cb, int expected) {
    if (rc == -1) {
        EXPECT_EQ(errno, expected);
        return;
    }
    ASSERT_EQ(rc, 0);
    await(cb);
    EXPECT_EQ(aio_error(&cb), expected);
    EXPECT_EQ(aio_return(&cb), -1);
}

struct pipe_pair {
    int r = -1, w = -1;
    pipe_pair() {
        int p[2];
        if (pipe2(p, O_CLOEXEC) == 0) {
            r = p[0];
            w = p[1];
        }
    }
    ~pipe_pair() {
        if (r >= 0) close(r);
        if (w >= 0) close(w);
    }
};

// A 4-byte read of an empty pipe, submitted at construction: in flight until
// the test writes to the pipe or cancels it.
struct pending_read {
    pipe_pair p;
    char buf[4] = {};
    // (On the heap: struct aiocb has a flexible array, which -Wpedantic
    // refuses as a member.)
    std::unique_ptr<aiocb> block_ = std::make_unique<aiocb>(block(p.r, buf, sizeof buf));
    aiocb &cb = *block_;
    pending_read() {
        if (aio_read(&cb) != 0) ADD_FAILURE() << "aio_read: " << strerror(errno);
    }
};

struct file_fixture : ::testing::Test {
    temp_dir dir;
    std::string path = dir.file("data");
    int fd = make_file(path, 64 * 1024);
    void TearDown() override {
        if (fd >= 0) close(fd);
    }
};

using Aio = file_fixture;

TEST(AioLibrary, AioReadIsLibasysAio) {
    void *sym = dlsym(RTLD_DEFAULT, "aio_read");
    ASSERT_NE(sym, nullptr);
    Dl_info info{};
    ASSERT_NE(dladdr(sym, &info), 0);
    ASSERT_NE(info.dli_fname, nullptr);
    EXPECT_NE(std::strstr(info.dli_fname, "libasys-aio"), nullptr)
        << "aio_read comes from " << info.dli_fname << " (run with LD_PRELOAD=libasys-aio.so)";
}

TEST_F(Aio, ReadReturnsTheFileBytes) {
    char buf[5000];
    aiocb cb = block(fd, buf, sizeof buf, 4000);
    ASSERT_EQ(aio_read(&cb), 0) << strerror(errno);
    await(cb);
    EXPECT_EQ(aio_error(&cb), 0);
    EXPECT_EQ(aio_return(&cb), 5000);
    for (size_t i = 0; i < sizeof buf; ++i) ASSERT_EQ(buf[i], pattern(4000 + i)) << i;
}

TEST_F(Aio, CachedReadIsCompleteWhenAioReadReturns) {
    char warm[4096];
    ASSERT_EQ(pread(fd, warm, sizeof warm, 8192), 4096); // the page is cached
    char buf[4096];
    aiocb cb = block(fd, buf, sizeof buf, 8192);
    ASSERT_EQ(aio_read(&cb), 0);
    EXPECT_EQ(aio_error(&cb), 0) << "a cached read did not complete inside aio_read";
    EXPECT_EQ(aio_return(&cb), 4096);
    EXPECT_EQ(std::memcmp(buf, warm, sizeof buf), 0);
}

TEST_F(Aio, WriteThenRead64) {
    char out[3000];
    for (size_t i = 0; i < sizeof out; ++i) out[i] = static_cast<char>(i * 13);
    aiocb64 w;
    std::memset(&w, 0, sizeof w);
    w.aio_fildes = fd;
    w.aio_buf = out;
    w.aio_nbytes = sizeof out;
    w.aio_offset = 100000; // beyond the end: the file grows
    ASSERT_EQ(aio_write64(&w), 0);
    const aiocb64 *wl[1] = {&w};
    ASSERT_EQ(aio_suspend64(wl, 1, nullptr), 0);
    ASSERT_EQ(aio_error64(&w), 0);
    ASSERT_EQ(aio_return64(&w), 3000);
    char in[3000];
    ASSERT_EQ(pread(fd, in, sizeof in, 100000), 3000);
    EXPECT_EQ(std::memcmp(in, out, sizeof in), 0);
}

TEST_F(Aio, ShortReadAtEndOfFile) {
    char buf[8192];
    aiocb cb = block(fd, buf, sizeof buf, 64 * 1024 - 100);
    ASSERT_EQ(aio_read(&cb), 0);
    await(cb);
    EXPECT_EQ(aio_error(&cb), 0);
    EXPECT_EQ(aio_return(&cb), 100);
}

// --------------------------------------------------------------- EINVAL
TEST_F(Aio, EinvalNegativeRequestPriority) {
    char buf[16];
    aiocb cb = block(fd, buf, sizeof buf);
    cb.aio_reqprio = -1;
    expect_error_either_way(aio_read(&cb), cb, EINVAL);
}

TEST_F(Aio, EinvalRequestPriorityAboveTheDelta) {
    long delta = sysconf(_SC_AIO_PRIO_DELTA_MAX);
    ASSERT_GE(delta, 0);
    char buf[16];
    aiocb cb = block(fd, buf, sizeof buf);
    cb.aio_reqprio = static_cast<int>(delta) + 1;
    expect_error_either_way(aio_write(&cb), cb, EINVAL);
}

TEST_F(Aio, EinvalNegativeOffset) {
    char buf[16];
    aiocb cb = block(fd, buf, sizeof buf, -4096);
    expect_error_either_way(aio_read(&cb), cb, EINVAL);
}

TEST_F(Aio, EinvalNbytesAboveSsizeMax) {
    char buf[16];
    aiocb cb = block(fd, buf, static_cast<size_t>(SSIZE_MAX) + 1);
    expect_error_either_way(aio_read(&cb), cb, EINVAL);
}

TEST_F(Aio, EinvalUnknownNotification) {
    char buf[16];
    aiocb cb = block(fd, buf, sizeof buf);
    cb.aio_sigevent.sigev_notify = 12345;
    errno = 0;
    EXPECT_EQ(aio_read(&cb), -1);
    EXPECT_EQ(errno, EINVAL);
}

TEST_F(Aio, EinvalFsyncOperation) {
    aiocb cb = block(fd, nullptr, 0);
    errno = 0;
    EXPECT_EQ(aio_fsync(O_RDWR, &cb), -1);
    EXPECT_EQ(errno, EINVAL);
}

TEST_F(Aio, EinvalLioListioMode) {
    char buf[16];
    aiocb cb = block(fd, buf, sizeof buf);
    cb.aio_lio_opcode = LIO_READ;
    aiocb *list[1] = {&cb};
    errno = 0;
    EXPECT_EQ(lio_listio(LIO_WAIT + LIO_NOWAIT + 7, list, 1, nullptr), -1);
    EXPECT_EQ(errno, EINVAL);
}

TEST(AioInquiry, EinvalErrorAndReturnOfABlockNeverSubmitted) {
    aiocb cb;
    std::memset(&cb, 0, sizeof cb);
    errno = 0;
    EXPECT_EQ(aio_return(&cb), -1);
    EXPECT_EQ(errno, EINVAL);
    errno = 0;
    EXPECT_EQ(aio_error(&cb), -1);
    EXPECT_EQ(errno, EINVAL);
}

TEST_F(Aio, EinvalReturnCalledTwice) {
    char buf[100];
    aiocb cb = block(fd, buf, sizeof buf);
    ASSERT_EQ(aio_read(&cb), 0);
    await(cb);
    EXPECT_EQ(aio_return(&cb), 100);
    errno = 0;
    EXPECT_EQ(aio_return(&cb), -1) << "aio_return may be called once per request";
    EXPECT_EQ(errno, EINVAL);
    // The block may be submitted again, and then its status is the new one.
    ASSERT_EQ(aio_read(&cb), 0);
    await(cb);
    EXPECT_EQ(aio_return(&cb), 100);
}

TEST_F(Aio, BlockReusedWhileInFlightIsRefused) {
    pipe_pair p;
    char buf[8];
    aiocb cb = block(p.r, buf, sizeof buf);
    ASSERT_EQ(aio_read(&cb), 0);
    ASSERT_EQ(aio_error(&cb), EINPROGRESS);
    errno = 0;
    EXPECT_EQ(aio_read(&cb), -1);
    EXPECT_EQ(errno, EINVAL);
    EXPECT_EQ(aio_error(&cb), EINPROGRESS) << "the request in flight was disturbed";
    ASSERT_EQ(write(p.w, "12345678", 8), 8);
    await(cb);
    EXPECT_EQ(aio_return(&cb), 8);
    EXPECT_EQ(std::memcmp(buf, "12345678", 8), 0);
}

// ---------------------------------------------------------------- EBADF
TEST_F(Aio, EbadfClosedDescriptor) {
    char buf[16];
    aiocb cb = block(-1, buf, sizeof buf);
    expect_error_either_way(aio_read(&cb), cb, EBADF);
    // A descriptor number just closed (after one request, so that the
    // library's own descriptors exist already and cannot take the number).
    char warm[16];
    aiocb first = block(fd, warm, sizeof warm);
    ASSERT_EQ(aio_read(&first), 0);
    await(first);
    int spare = dup(fd);
    ASSERT_GE(spare, 0);
    close(spare);
    aiocb cw = block(spare, buf, sizeof buf);
    expect_error_either_way(aio_write(&cw), cw, EBADF);
}

TEST_F(Aio, EbadfReadOnWriteOnlyAndWriteOnReadOnly) {
    int wo = open(path.c_str(), O_WRONLY | O_CLOEXEC);
    int ro = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(wo, 0);
    ASSERT_GE(ro, 0);
    char buf[16] = {};
    aiocb r = block(wo, buf, sizeof buf);
    expect_error_either_way(aio_read(&r), r, EBADF);
    aiocb w = block(ro, buf, sizeof buf);
    expect_error_either_way(aio_write(&w), w, EBADF);
    close(wo);
    close(ro);
}

TEST_F(Aio, EbadfFsyncAndCancel) {
    aiocb cb = block(-1, nullptr, 0);
    expect_error_either_way(aio_fsync(O_SYNC, &cb), cb, EBADF);
    errno = 0;
    EXPECT_EQ(aio_cancel(-1, nullptr), -1);
    EXPECT_EQ(errno, EBADF);
}

// --------------------------------------------------------------- EAGAIN
// Fills the library with reads of an empty pipe until it refuses one.
TEST(AioLimits, EagainWhenResourcesRunOut) {
    // A small limit, if this process has not made its context yet (ctest runs
    // each test in its own process); the default one otherwise.
    setenv("ASYS_AIO_MAX_INFLIGHT", "64", 1);
    pipe_pair p;
    std::vector<aiocb> cbs(70000);
    std::vector<char> bytes(cbs.size());
    size_t accepted = 0;
    int refused_errno = 0;
    for (; accepted < cbs.size(); ++accepted) {
        cbs[accepted] = block(p.r, &bytes[accepted], 1);
        if (aio_read(&cbs[accepted]) != 0) {
            refused_errno = errno;
            break;
        }
    }
    ASSERT_LT(accepted, cbs.size()) << "70000 requests in flight and none refused";
    EXPECT_EQ(refused_errno, EAGAIN);
    errno = 0;
    EXPECT_EQ(aio_error(&cbs[accepted]), -1) << "the refused block must not look submitted";
    // lio_listio reports the same limit (EAGAIN) and marks the entry.
    aiocb extra = block(p.r, &bytes[0], 1);
    extra.aio_lio_opcode = LIO_READ;
    aiocb *list[1] = {&extra};
    errno = 0;
    EXPECT_EQ(lio_listio(LIO_NOWAIT, list, 1, nullptr), -1);
    EXPECT_EQ(errno, EAGAIN);
    EXPECT_EQ(aio_error(&extra), EAGAIN);
    // Cancel everything; every request ends.
    int rc = aio_cancel(p.r, nullptr);
    EXPECT_TRUE(rc == AIO_CANCELED || rc == AIO_NOTCANCELED) << rc;
    for (size_t i = 0; i < accepted; ++i) {
        if (aio_error(&cbs[i]) == EINPROGRESS) ASSERT_EQ(write(p.w, "x", 1), 1);
        await(cbs[i]);
    }
}

// ----------------------------------------------------------- EINPROGRESS
TEST(AioInquiry, EinprogressUntilTheDataArrives) {
    pending_read pending;
    pipe_pair &p = pending.p;
    aiocb &cb = pending.cb;
    EXPECT_EQ(aio_error(&cb), EINPROGRESS);
    ASSERT_EQ(write(p.w, "abcd", 4), 4);
    await(cb);
    EXPECT_EQ(aio_error(&cb), 0);
    EXPECT_EQ(aio_return(&cb), 4);
}

// ------------------------------------------------------------ aio_cancel
TEST(AioCancel, CanceledRequestEndsWithEcanceled) {
    pending_read pending;
    pipe_pair &p = pending.p;
    aiocb &cb = pending.cb;
    ASSERT_EQ(aio_error(&cb), EINPROGRESS);
    EXPECT_EQ(aio_cancel(p.r, &cb), AIO_CANCELED);
    EXPECT_EQ(aio_error(&cb), ECANCELED);
    EXPECT_EQ(aio_return(&cb), -1);
}

TEST(AioCancel, AllRequestsOfADescriptor) {
    pipe_pair p;
    char buf[3][4];
    aiocb cbs[3] = {block(p.r, buf[0], 4), block(p.r, buf[1], 4), block(p.r, buf[2], 4)};
    for (auto &cb : cbs) ASSERT_EQ(aio_read(&cb), 0);
    EXPECT_EQ(aio_cancel(p.r, nullptr), AIO_CANCELED);
    for (auto &cb : cbs) {
        EXPECT_EQ(aio_error(&cb), ECANCELED);
        EXPECT_EQ(aio_return(&cb), -1);
    }
}

TEST_F(Aio, AlldoneForACompletedRequest) {
    char buf[16];
    aiocb cb = block(fd, buf, sizeof buf);
    ASSERT_EQ(aio_read(&cb), 0);
    await(cb);
    EXPECT_EQ(aio_cancel(fd, &cb), AIO_ALLDONE);
    EXPECT_EQ(aio_cancel(fd, nullptr), AIO_ALLDONE);
    EXPECT_EQ(aio_return(&cb), 16);
}

TEST_F(Aio, EinvalCancelWithAnotherDescriptor) {
    pending_read pending;
    pipe_pair &p = pending.p;
    aiocb &cb = pending.cb;
    errno = 0;
    EXPECT_EQ(aio_cancel(fd, &cb), -1);
    EXPECT_EQ(errno, EINVAL);
    EXPECT_EQ(aio_cancel(p.r, &cb), AIO_CANCELED);
}

// A write of a pipe with no reader writes one pipe buffer, then blocks
// (through io_uring: the ring writes one buffer, a worker waits to write the
// rest). Once bytes arrived the request has started:
// aio_cancel may not report it cancelled (interrupting it ends it with the
// count written), and its status is that count.
TEST(AioCancel, StartedTransferIsNotCanceled) {
    pipe_pair p;
    std::vector<char> big(1 << 20, 'z');
    aiocb cb = block(p.w, big.data(), big.size());
    ASSERT_EQ(aio_write(&cb), 0);
    pollfd pfd{p.r, POLLIN, 0};
    ASSERT_EQ(poll(&pfd, 1, 30000), 1) << "the write never started";
    int rc = aio_cancel(p.w, &cb);
    EXPECT_TRUE(rc == AIO_NOTCANCELED || rc == AIO_ALLDONE) << rc;
    char sink[65536];
    while (aio_error(&cb) == EINPROGRESS) ASSERT_GT(read(p.r, sink, sizeof sink), 0);
    await(cb);
    EXPECT_EQ(aio_error(&cb), 0);
    EXPECT_GT(aio_return(&cb), 0);
}

// ---------------------------------------------------------- aio_suspend
TEST(AioSuspend, TimeoutIsEagain) {
    pending_read pending;
    pipe_pair &p = pending.p;
    aiocb &cb = pending.cb;
    const aiocb *list[2] = {nullptr, &cb};
    timespec ts{0, 50 * 1000 * 1000};
    auto t0 = std::chrono::steady_clock::now();
    errno = 0;
    EXPECT_EQ(aio_suspend(list, 2, &ts), -1);
    EXPECT_EQ(errno, EAGAIN);
    EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(50));
    timespec zero{0, 0};
    errno = 0;
    EXPECT_EQ(aio_suspend(list, 2, &zero), -1);
    EXPECT_EQ(errno, EAGAIN);
    EXPECT_EQ(aio_cancel(p.r, &cb), AIO_CANCELED);
}

TEST_F(Aio, SuspendReturnsAtOnceWhenOneIsDone) {
    pipe_pair p;
    char b1[4], b2[16];
    aiocb pending = block(p.r, b1, sizeof b1);
    aiocb done = block(fd, b2, sizeof b2);
    ASSERT_EQ(aio_read(&pending), 0);
    ASSERT_EQ(aio_read(&done), 0);
    await(done);
    const aiocb *list[2] = {&pending, &done};
    EXPECT_EQ(aio_suspend(list, 2, nullptr), 0);
    EXPECT_EQ(aio_cancel(p.r, &pending), AIO_CANCELED);
}

void on_usr1(int) {}

TEST(AioSuspend, SignalIsEintr) {
    struct sigaction sa {}, old{};
    sa.sa_handler = on_usr1; // no SA_RESTART
    sigemptyset(&sa.sa_mask);
    ASSERT_EQ(sigaction(SIGUSR1, &sa, &old), 0);
    pending_read pending;
    pipe_pair &p = pending.p;
    aiocb &cb = pending.cb;
    std::atomic<bool> returned{false};
    pthread_t self = pthread_self();
    // Signals until aio_suspend has returned (one sent before it sleeps only
    // runs the handler; the next one interrupts the sleep).
    std::thread kicker([&] {
        while (!returned.load()) {
            pthread_kill(self, SIGUSR1);
            std::this_thread::sleep_for(std::chrono::milliseconds(2));
        }
    });
    const aiocb *list[1] = {&cb};
    errno = 0;
    int rc = aio_suspend(list, 1, nullptr);
    int err = errno;
    returned = true;
    kicker.join();
    EXPECT_EQ(rc, -1);
    EXPECT_EQ(err, EINTR);
    EXPECT_EQ(aio_error(&cb), EINPROGRESS);
    EXPECT_EQ(aio_cancel(p.r, &cb), AIO_CANCELED);
    sigaction(SIGUSR1, &old, nullptr);
}

// ----------------------------------------------------------- lio_listio
TEST_F(Aio, LioWaitCompletesEveryEntryBeforeReturning) {
    char r1[100], r2[200], out[50];
    std::memset(out, 'Q', sizeof out);
    aiocb a = block(fd, r1, sizeof r1, 0), b = block(fd, r2, sizeof r2, 1000),
          c = block(fd, out, sizeof out, 70000), nop = block(fd, nullptr, 0);
    a.aio_lio_opcode = LIO_READ;
    b.aio_lio_opcode = LIO_READ;
    c.aio_lio_opcode = LIO_WRITE;
    nop.aio_lio_opcode = LIO_NOP;
    aiocb *list[5] = {&a, nullptr, &b, &nop, &c};
    ASSERT_EQ(lio_listio(LIO_WAIT, list, 5, nullptr), 0) << strerror(errno);
    EXPECT_EQ(aio_error(&a), 0);
    EXPECT_EQ(aio_return(&a), 100);
    EXPECT_EQ(aio_return(&b), 200);
    EXPECT_EQ(aio_return(&c), 50);
    EXPECT_EQ(r2[0], pattern(1000));
    char check[50];
    ASSERT_EQ(pread(fd, check, sizeof check, 70000), 50);
    EXPECT_EQ(std::memcmp(check, out, sizeof out), 0);
}

TEST_F(Aio, LioWaitEioWhenAnEntryFailed) {
    char r1[100], r2[100];
    aiocb good = block(fd, r1, sizeof r1), bad = block(-1, r2, sizeof r2);
    good.aio_lio_opcode = LIO_READ;
    bad.aio_lio_opcode = LIO_READ;
    aiocb *list[2] = {&good, &bad};
    errno = 0;
    EXPECT_EQ(lio_listio(LIO_WAIT, list, 2, nullptr), -1);
    EXPECT_EQ(errno, EIO);
    EXPECT_EQ(aio_error(&good), 0);
    EXPECT_EQ(aio_return(&good), 100);
    EXPECT_EQ(aio_error(&bad), EBADF);
    EXPECT_EQ(aio_return(&bad), -1);
}

TEST(AioLio, NowaitReturnsAtOnceAndSignalsWhenAllAreDone) {
    const int sig = SIGRTMIN + 2;
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, sig);
    ASSERT_EQ(pthread_sigmask(SIG_BLOCK, &set, &old), 0);
    pipe_pair p;
    char b1[2], b2[2];
    aiocb a = block(p.r, b1, 2), b = block(p.r, b2, 2);
    a.aio_lio_opcode = LIO_READ;
    b.aio_lio_opcode = LIO_READ;
    aiocb *list[2] = {&a, &b};
    struct sigevent ev {};
    ev.sigev_notify = SIGEV_SIGNAL;
    ev.sigev_signo = sig;
    ev.sigev_value.sival_int = 4242;
    ASSERT_EQ(lio_listio(LIO_NOWAIT, list, 2, &ev), 0);
    EXPECT_EQ(aio_error(&a), EINPROGRESS);
    EXPECT_EQ(aio_error(&b), EINPROGRESS);
    timespec none{0, 0};
    EXPECT_EQ(sigtimedwait(&set, nullptr, &none), -1) << "signalled before the list completed";
    ASSERT_EQ(write(p.w, "wxyz", 4), 4);
    siginfo_t info{};
    timespec limit{30, 0};
    ASSERT_EQ(sigtimedwait(&set, &info, &limit), sig);
    EXPECT_EQ(info.si_code, SI_ASYNCIO);
    EXPECT_EQ(info.si_value.sival_int, 4242);
    EXPECT_EQ(aio_return(&a), 2);
    EXPECT_EQ(aio_return(&b), 2);
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
}

// ---------------------------------------------------------- notification
TEST_F(Aio, SigevSignalCarriesTheValue) {
    const int sig = SIGRTMIN + 3;
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, sig);
    ASSERT_EQ(pthread_sigmask(SIG_BLOCK, &set, &old), 0);
    char buf[64];
    aiocb cb = block(fd, buf, sizeof buf);
    cb.aio_sigevent.sigev_notify = SIGEV_SIGNAL;
    cb.aio_sigevent.sigev_signo = sig;
    cb.aio_sigevent.sigev_value.sival_ptr = &cb;
    ASSERT_EQ(aio_read(&cb), 0);
    siginfo_t info{};
    timespec limit{30, 0};
    ASSERT_EQ(sigtimedwait(&set, &info, &limit), sig);
    EXPECT_EQ(info.si_code, SI_ASYNCIO);
    EXPECT_EQ(info.si_value.sival_ptr, &cb);
    EXPECT_EQ(aio_error(&cb), 0) << "signalled before the status was final";
    EXPECT_EQ(aio_return(&cb), 64);
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
}

struct thread_note {
    std::mutex m;
    std::condition_variable cv;
    int calls = 0;
    int status_seen = -2;
    const aiocb *cb = nullptr;
};

void on_done(sigval v) {
    auto *n = static_cast<thread_note *>(v.sival_ptr);
    std::lock_guard<std::mutex> lk(n->m);
    n->status_seen = aio_error(n->cb);
    ++n->calls;
    n->cv.notify_all();
}

TEST(AioNotify, SigevThreadRunsTheFunctionOnce) {
    pipe_pair p;
    thread_note note;
    char buf[3];
    aiocb cb = block(p.r, buf, sizeof buf);
    note.cb = &cb;
    cb.aio_sigevent.sigev_notify = SIGEV_THREAD;
    cb.aio_sigevent.sigev_notify_function = on_done;
    cb.aio_sigevent.sigev_value.sival_ptr = &note;
    ASSERT_EQ(aio_read(&cb), 0);
    ASSERT_EQ(write(p.w, "abc", 3), 3);
    std::unique_lock<std::mutex> lk(note.m);
    ASSERT_TRUE(note.cv.wait_for(lk, std::chrono::seconds(30), [&] { return note.calls > 0; }));
    EXPECT_EQ(note.calls, 1);
    EXPECT_EQ(note.status_seen, 0);
    EXPECT_EQ(aio_return(&cb), 3);
}

// Nothing to wait for: no entry, or only NULL entries, is 0 at once, with or
// without a timeout (glibc's answer; a wait for no request could only end at
// the timeout, or never). So is a list naming a block never submitted, or
// one whose status aio_return already took: it is not in progress.
TEST_F(Aio, SuspendWithNothingToWaitForReturnsAtOnce) {
    static const aiocb *const none[4] = {nullptr, nullptr, nullptr, nullptr};
    timespec ts{2, 0};
    auto t0 = std::chrono::steady_clock::now();
    EXPECT_EQ(aio_suspend(none, 4, &ts), 0) << strerror(errno);
    EXPECT_EQ(aio_suspend(none, 0, &ts), 0) << strerror(errno);
    // Without a timeout: on a thread, so that a hang fails the test instead
    // of stopping it (the thread is then left behind, blocked).
    auto untimed = std::make_shared<std::atomic<int>>(-2);
    std::thread t([untimed] { *untimed = aio_suspend(none, 4, nullptr) == 0 && aio_suspend(none, 0, nullptr) == 0; });
    auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (*untimed == -2 && std::chrono::steady_clock::now() < end) std::this_thread::yield();
    if (*untimed == -2) {
        t.detach();
        FAIL() << "aio_suspend with no request listed blocked";
    }
    t.join();
    EXPECT_EQ(untimed->load(), 1);

    aiocb never = block(fd, nullptr, 0);
    const aiocb *never_list[2] = {nullptr, &never};
    EXPECT_EQ(aio_suspend(never_list, 2, &ts), 0);
    EXPECT_EQ(aio_suspend(never_list, 2, nullptr), 0);
    char buf[16];
    aiocb taken = block(fd, buf, sizeof buf);
    ASSERT_EQ(aio_read(&taken), 0);
    await(taken);
    ASSERT_EQ(aio_return(&taken), 16);
    const aiocb *taken_list[1] = {&taken};
    EXPECT_EQ(aio_suspend(taken_list, 1, &ts), 0);
    EXPECT_EQ(aio_suspend(taken_list, 1, nullptr), 0);
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(2)) << "a call waited for its timeout";
}

// ------------------------------------------------------------ concurrency
// A read of a socket that has no data yet does not hold back a write on the
// same descriptor (glibc runs requests on one descriptor one after another:
// there the write would wait for the read, which waits for the write's echo).
TEST(AioConcurrency, RequestsOnOneDescriptorRunConcurrently) {
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    char in[5] = {};
    aiocb rd = block(sv[0], in, 5);
    ASSERT_EQ(aio_read(&rd), 0);
    aiocb wr = block(sv[0], const_cast<char *>("hello"), 5);
    ASSERT_EQ(aio_write(&wr), 0);
    std::thread echo([&] {
        char b[5];
        size_t got = 0;
        while (got < 5) {
            ssize_t n = read(sv[1], b + got, 5 - got);
            if (n <= 0) return;
            got += static_cast<size_t>(n);
        }
        (void)!write(sv[1], b, 5);
    });
    await(wr);
    EXPECT_EQ(aio_return(&wr), 5);
    await(rd);
    EXPECT_EQ(aio_return(&rd), 5);
    EXPECT_EQ(std::memcmp(in, "hello", 5), 0);
    echo.join();
    close(sv[0]);
    close(sv[1]);
}

// ------------------------------------------------------------ call order
// POSIX (aio_write): with O_APPEND, or on a device that cannot seek, "write
// operations append to the file in the same order as the calls were made".
// Each block below is filled with its index; the reader checks the sequence.

// Block i of `blocks` blocks of `size` bytes, each byte its index's letter.
struct numbered_blocks {
    size_t size;
    std::vector<std::vector<char>> data;
    std::vector<aiocb> cbs;
    numbered_blocks(int fd, int blocks, size_t block_size) : size(block_size), data(blocks), cbs(blocks) {
        for (int i = 0; i < blocks; ++i) {
            data[i].assign(size, letter(i));
            cbs[i] = block(fd, data[i].data(), size, 0);
        }
    }
    static char letter(int i) { return static_cast<char>('A' + i % 50); }
    // The blocks found out of place in what the descriptor received.
    int out_of_order(const std::vector<char> &got) const {
        int bad = 0;
        for (size_t i = 0; i < cbs.size(); ++i)
            if (got.size() < (i + 1) * size || got[i * size] != letter(static_cast<int>(i))) ++bad;
        return bad;
    }
    void await_all(ssize_t expected_each) {
        for (auto &cb : cbs) {
            await(cb);
            EXPECT_EQ(aio_return(&cb), expected_each);
        }
    }
};

std::vector<char> read_exactly(int fd, size_t n) {
    std::vector<char> got(n);
    size_t have = 0;
    while (have < n) {
        ssize_t r = read(fd, got.data() + have, n - have);
        if (r <= 0) break;
        have += static_cast<size_t>(r);
    }
    got.resize(have);
    return got;
}

// 64 blocks of 4 KiB to a pipe (whose buffer holds 16): most writes wait for
// the reader, which must still receive block 0, 1, 2, ...
TEST(AioOrder, PipeWritesArriveInCallOrder) {
    pipe_pair p;
    numbered_blocks blocks(p.w, 64, 4096);
    for (auto &cb : blocks.cbs) ASSERT_EQ(aio_write(&cb), 0) << strerror(errno);
    std::vector<char> got = read_exactly(p.r, 64 * 4096);
    blocks.await_all(4096);
    EXPECT_EQ(got.size(), 64u * 4096);
    EXPECT_EQ(blocks.out_of_order(got), 0);
}

// The same through one lio_listio call (entries in list order), LIO_NOWAIT.
TEST(AioOrder, PipeWritesOfOneLioListioArriveInListOrder) {
    pipe_pair p;
    numbered_blocks blocks(p.w, 64, 4096);
    std::vector<aiocb *> list;
    for (auto &cb : blocks.cbs) {
        cb.aio_lio_opcode = LIO_WRITE;
        list.push_back(&cb);
    }
    ASSERT_EQ(lio_listio(LIO_NOWAIT, list.data(), static_cast<int>(list.size()), nullptr), 0) << strerror(errno);
    std::vector<char> got = read_exactly(p.r, 64 * 4096);
    blocks.await_all(4096);
    EXPECT_EQ(blocks.out_of_order(got), 0);
}

// An O_APPEND file: every write lands at the end, in call order.
TEST(AioOrder, AppendWritesLandInCallOrder) {
    temp_dir dir;
    std::string path = dir.file("log");
    int wfd = open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    ASSERT_GE(wfd, 0);
    constexpr int n = 2000;
    numbered_blocks blocks(wfd, n, 4096);
    for (auto &cb : blocks.cbs) ASSERT_EQ(aio_write(&cb), 0) << strerror(errno);
    blocks.await_all(4096);
    int rfd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(rfd, 0);
    std::vector<char> got = read_exactly(rfd, n * 4096);
    EXPECT_EQ(got.size(), n * 4096u);
    EXPECT_EQ(blocks.out_of_order(got), 0);
    close(rfd);
    close(wfd);
}

// Reads of a pipe take its bytes in call order too (glibc runs one
// descriptor's requests one after another): read i gets bytes 8i..8i+7.
TEST(AioOrder, PipeReadsTakeTheBytesInCallOrder) {
    pipe_pair p;
    constexpr int n = 32;
    char in[n][8];
    std::vector<aiocb> cbs(n);
    for (int i = 0; i < n; ++i) {
        cbs[i] = block(p.r, in[i], 8);
        ASSERT_EQ(aio_read(&cbs[i]), 0) << strerror(errno);
    }
    char out[n * 8];
    for (int i = 0; i < n * 8; ++i) out[i] = numbered_blocks::letter(i / 8);
    ASSERT_EQ(write(p.w, out, sizeof out), static_cast<ssize_t>(sizeof out));
    int bad = 0;
    for (int i = 0; i < n; ++i) {
        await(cbs[i]);
        EXPECT_EQ(aio_return(&cbs[i]), 8);
        if (std::memcmp(in[i], out + i * 8, 8) != 0) ++bad;
    }
    EXPECT_EQ(bad, 0) << "reads that took another read's bytes";
}

// A write queued behind one that waits for the reader has not started:
// aio_cancel cancels it, and the writes around it keep their order.
TEST(AioOrder, QueuedPipeWriteIsCanceledAndTheOthersKeepTheirOrder) {
    pipe_pair p;
    std::vector<char> first(1 << 20, 'a'); // more than the pipe holds: waits
    char second[4] = {'b', 'b', 'b', 'b'}, third[4] = {'c', 'c', 'c', 'c'};
    aiocb w1 = block(p.w, first.data(), first.size());
    aiocb w2 = block(p.w, second, 4);
    aiocb w3 = block(p.w, third, 4);
    ASSERT_EQ(aio_write(&w1), 0);
    ASSERT_EQ(aio_write(&w2), 0);
    ASSERT_EQ(aio_write(&w3), 0);
    EXPECT_EQ(aio_error(&w2), EINPROGRESS);
    EXPECT_EQ(aio_cancel(p.w, &w2), AIO_CANCELED);
    EXPECT_EQ(aio_error(&w2), ECANCELED);
    EXPECT_EQ(aio_return(&w2), -1);
    std::vector<char> got = read_exactly(p.r, first.size() + 4);
    await(w1);
    await(w3);
    EXPECT_EQ(aio_return(&w1), static_cast<ssize_t>(first.size()));
    EXPECT_EQ(aio_return(&w3), 4);
    ASSERT_EQ(got.size(), first.size() + 4);
    EXPECT_EQ(std::string(got.end() - 4, got.end()), "cccc");
    EXPECT_EQ(std::count(got.begin(), got.end() - 4, 'a'), static_cast<long>(first.size()));
}

TEST_F(Aio, ManyReadsInFlightAtOnce) {
    constexpr int n = 256;
    std::vector<aiocb> cbs(n);
    std::vector<std::vector<char>> bufs(n, std::vector<char>(256));
    for (int i = 0; i < n; ++i) {
        cbs[i] = block(fd, bufs[i].data(), 256, i * 256);
        ASSERT_EQ(aio_read(&cbs[i]), 0);
    }
    for (int i = 0; i < n; ++i) {
        await(cbs[i]);
        ASSERT_EQ(aio_return(&cbs[i]), 256);
        ASSERT_EQ(bufs[i][7], pattern(i * 256 + 7));
    }
}

// ------------------------------------------------------------- aio_fsync
TEST_F(Aio, FsyncAfterWrites) {
    char out[512];
    std::memset(out, 'f', sizeof out);
    aiocb w = block(fd, out, sizeof out, 0);
    ASSERT_EQ(aio_write(&w), 0);
    aiocb s = block(fd, nullptr, 0);
    ASSERT_EQ(aio_fsync(O_SYNC, &s), 0);
    aiocb d = block(fd, nullptr, 0);
    ASSERT_EQ(aio_fsync(O_DSYNC, &d), 0);
    await(s);
    await(d);
    EXPECT_EQ(aio_error(&w), 0) << "aio_fsync completed before the write queued ahead of it";
    EXPECT_EQ(aio_return(&s), 0);
    EXPECT_EQ(aio_return(&d), 0);
    EXPECT_EQ(aio_return(&w), 512);
}

// An fsync waits for the requests queued on its descriptor before it; while
// it waits it has not started, and cancelling it succeeds.
TEST(AioCancel, FsyncWaitingForAnEarlierRequestIsCanceled) {
    pipe_pair p;
    char buf[4];
    aiocb rd = block(p.r, buf, sizeof buf);
    ASSERT_EQ(aio_read(&rd), 0);
    aiocb s = block(p.r, nullptr, 0);
    ASSERT_EQ(aio_fsync(O_SYNC, &s), 0);
    EXPECT_EQ(aio_error(&s), EINPROGRESS);
    EXPECT_EQ(aio_cancel(p.r, &s), AIO_CANCELED);
    EXPECT_EQ(aio_error(&s), ECANCELED);
    EXPECT_EQ(aio_return(&s), -1);
    EXPECT_EQ(aio_error(&rd), EINPROGRESS);
    ASSERT_EQ(write(p.w, "done", 4), 4);
    await(rd);
    EXPECT_EQ(aio_return(&rd), 4);
}

} // namespace
