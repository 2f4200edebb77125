// Review of two fixes.
//
// a1999c7: a syslet atom run inline whose nonblocking read came back short
// where the call would go on (a file partly in the page cache) runs again,
// whole, on a worker; a read at the file position first puts the position
// back. Attacked in the middle of chains (atoms before it run once, atoms
// after it see its whole result through data flow), with stop flags, loops,
// through ASYS_OP_CHAIN and asys_async_exec, cancelled, on a dup'd fd, on an
// O_APPEND file, past EOF, and with its argument stored in its own buffer.
// Every result, byte and file position is compared with the plain calls.
//
// 71f0677: asys_ctx_destroy (DRAIN and CANCEL) racing threads that submit
// (single ops of every completion channel, batches, chain ops): every
// accepted op completes exactly once before destroy returns; refused ops
// never complete; nobody hangs.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "asys/syslet.h"
#include "helpers.hpp"
#include "syslet_helpers.hpp"

using namespace asys_test;

namespace {

constexpr size_t kPage = 4096;
constexpr long kUnset = -777777;

unsigned long ulong_of(const void *p) { return reinterpret_cast<unsigned long>(p); }

/// How a chain is submitted.
enum class submit_via { chain_op, async_exec };

/// Runs the chain from `head` to its end through `via`; returns the address
/// of its last atom (and *res: the op's result, for chain_op).
syslet_uatom *run_chain_via(asys_ctx *ctx, submit_via via, syslet_uatom *head, long *res = nullptr) {
    if (via == submit_via::chain_op) {
        syslet_uatom *last = nullptr;
        asys_op op;
        asys_prep_chain(&op, head, &last);
        const long r = run(ctx, op);
        if (res) *res = r;
        return last;
    }
    static thread_local syslet_uatom *ring[4];
    static thread_local asys_ctx *registered = nullptr;
    if (registered != ctx) {
        std::fill(std::begin(ring), std::end(ring), nullptr);
        if (asys_async_register(ctx, ring, 4) != 0) ADD_FAILURE() << "asys_async_register";
        registered = ctx;
    }
    const long r = asys_async_exec(ctx, head);
    if (r < 0) {
        ADD_FAILURE() << "asys_async_exec: " << r;
        return nullptr;
    }
    if (r != 0) return reinterpret_cast<syslet_uatom *>(r);
    if (asys_async_wait(ctx, 1) < 1) ADD_FAILURE() << "asys_async_wait";
    for (auto &e : ring)
        if (e) {
            syslet_uatom *last = e;
            e = nullptr;
            return last;
        }
    ADD_FAILURE() << "no completion in the ring";
    return nullptr;
}

const char *via_name(submit_via v) { return v == submit_via::chain_op ? "ASYS_OP_CHAIN" : "async_exec"; }

std::string via_param_name(const ::testing::TestParamInfo<submit_via> &info) {
    return info.param == submit_via::chain_op ? "ChainOp" : "AsyncExec";
}

// ----------------------------------------------------------------------
// A read atom of each kind in the middle of a chain:
//   umem_add(&before, 1) -> read(fd, buf, kPage) -> KIND(rest, past EOF)
//   [STOP_ON_NEGATIVE] -> lseek(fd, 0, SEEK_CUR) -> umem_add(&sum, r_kind)
// compared with the same calls made plainly.

enum class read_kind { read, readv, pread64, preadv2_at_position, preadv2_at_offset, preadv_at_position };

const char *kind_name(read_kind k) {
    switch (k) {
        case read_kind::read: return "read";
        case read_kind::readv: return "readv";
        case read_kind::pread64: return "pread64";
        case read_kind::preadv2_at_position: return "preadv2(-1)";
        case read_kind::preadv2_at_offset: return "preadv2(off)";
        case read_kind::preadv_at_position: return "preadv(-1)";
    }
    return "?";
}

/// The system call and its six arguments for a read of `len` bytes into
/// `buf` (split in two vectors for the vectored kinds) at offset `off`
/// (used by the positional kinds).
struct read_call {
    long nr = 0;
    unsigned long a[6] = {};
    struct iovec iov[2];
    read_call(read_kind k, int fd, char *buf, size_t len, off_t off) {
        iov[0] = {buf, len / 3};
        iov[1] = {buf + len / 3, len - len / 3};
        a[0] = static_cast<unsigned long>(fd);
        switch (k) {
            case read_kind::read: nr = SYS_read; break;
            case read_kind::pread64: nr = SYS_pread64; a[3] = static_cast<unsigned long>(off); break;
            case read_kind::readv: nr = SYS_readv; break;
            case read_kind::preadv2_at_position: nr = SYS_preadv2; a[3] = ~0ul; break;
            case read_kind::preadv2_at_offset: nr = SYS_preadv2; a[3] = static_cast<unsigned long>(off); break;
            case read_kind::preadv_at_position: nr = SYS_preadv; a[3] = ~0ul; break;
        }
        const bool vectored = k != read_kind::read && k != read_kind::pread64;
        a[1] = vectored ? ulong_of(iov) : ulong_of(buf);
        a[2] = vectored ? 2 : len;
    }
    long plain() const {
        const long r = syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
        return r < 0 ? -errno : r;
    }
};

struct middle_outcome {
    long before = 0, r_head = kUnset, r_kind = kUnset, r_pos = kUnset, sum = 0;
    off_t final_pos = -1;
    std::vector<char> buf;
};

class PartialReadInChain : public ::testing::TestWithParam<std::tuple<read_kind, submit_via>> {};

TEST_P(PartialReadInChain, MiddleAtomRunsWholeOnceAndLaterAtomsSeeItsResult) {
    const auto [kind, via] = GetParam();
    constexpr size_t kPages = 32, kHead = 4;
    partly_cached_file f(kPages * kPage + 100);  // a tail past the last whole page
    ASSERT_GE(f.fd, 0);
    const size_t rest = f.size - kPage + 3 * kPage;  // asks past EOF
    const size_t buflen = f.size + 4 * kPage;

    // The plain calls.
    middle_outcome plain;
    plain.buf.assign(buflen, 0);
    REQUIRE_PARTLY_CACHED(f, kHead * kPage);
    ASSERT_EQ(lseek(f.fd, 0, SEEK_SET), 0);
    plain.before = 1;
    plain.r_head = read(f.fd, plain.buf.data(), kPage);
    read_call pc(kind, f.fd, plain.buf.data() + kPage, rest, static_cast<off_t>(kPage));
    plain.r_kind = pc.plain();
    if (plain.r_kind >= 0) {
        plain.r_pos = lseek(f.fd, 0, SEEK_CUR);
        plain.sum = plain.r_kind;
    }
    plain.final_pos = lseek(f.fd, 0, SEEK_CUR);

    // The chain.
    ctx_guard ctx;
    middle_outcome got;
    got.buf.assign(buflen, 0);
    REQUIRE_PARTLY_CACHED(f, kHead * kPage);
    ASSERT_EQ(lseek(f.fd, 0, SEEK_SET), 0);
    read_call cc(kind, f.fd, got.buf.data() + kPage, rest, static_cast<off_t>(kPage));
    unsigned long one = 1, before_p = ulong_of(&got.before), sum_p = ulong_of(&got.sum);
    unsigned long fdv = static_cast<unsigned long>(f.fd), head_buf = ulong_of(got.buf.data()), head_len = kPage;
    unsigned long zero = 0, seek_cur = SEEK_CUR;
    syslet_uatom a[5];
    a[0] = atom(__NR_umem_add, 0, nullptr);
    a[0].arg_ptr[0] = &before_p;
    a[0].arg_ptr[1] = &one;
    a[1] = atom(SYS_read, SYSLET_STOP_ON_NEGATIVE, &got.r_head);
    a[1].arg_ptr[0] = &fdv;
    a[1].arg_ptr[1] = &head_buf;
    a[1].arg_ptr[2] = &head_len;
    a[2] = atom(static_cast<unsigned long>(cc.nr), SYSLET_STOP_ON_NEGATIVE, &got.r_kind);
    for (int i = 0; i < 6; ++i) a[2].arg_ptr[i] = &cc.a[i];
    a[3] = atom(SYS_lseek, 0, &got.r_pos);
    a[3].arg_ptr[0] = &fdv;
    a[3].arg_ptr[1] = &zero;
    a[3].arg_ptr[2] = &seek_cur;
    a[4] = atom(__NR_umem_add, 0, nullptr);
    a[4].arg_ptr[0] = &sum_p;
    a[4].arg_ptr[1] = reinterpret_cast<unsigned long *>(&got.r_kind);  // data flow: the read's result
    for (int i = 0; i < 4; ++i) a[i].next = &a[i + 1];
    long op_res = kUnset;
    syslet_uatom *last = run_chain_via(ctx, via, &a[0], &op_res);
    got.final_pos = lseek(f.fd, 0, SEEK_CUR);

    SCOPED_TRACE(std::string(kind_name(kind)) + " via " + via_name(via));
    EXPECT_EQ(got.before, 1) << "the atom before the partial read ran once";
    EXPECT_EQ(got.r_head, plain.r_head);
    EXPECT_EQ(got.r_kind, plain.r_kind) << "the partial read's atom gets the call's whole result";
    EXPECT_EQ(got.r_pos, plain.r_pos) << "the atom after it sees the call's file position";
    EXPECT_EQ(got.sum, plain.sum) << "the atom after it sees its whole result through data flow";
    EXPECT_EQ(got.final_pos, plain.final_pos) << "the file position after the chain";
    EXPECT_EQ(last, plain.r_kind < 0 ? &a[2] : &a[4]) << "the chain's last atom";
    if (via == submit_via::chain_op) EXPECT_EQ(op_res, plain.r_kind < 0 ? plain.r_kind : plain.sum);
    ASSERT_EQ(got.buf.size(), plain.buf.size());
    for (size_t i = 0; i < buflen; ++i) ASSERT_EQ(got.buf[i], plain.buf[i]) << "byte " << i;
}

INSTANTIATE_TEST_SUITE_P(
    Review20, PartialReadInChain,
    ::testing::Combine(::testing::Values(read_kind::read, read_kind::readv, read_kind::pread64,
                                         read_kind::preadv2_at_position, read_kind::preadv2_at_offset,
                                         read_kind::preadv_at_position),
                       ::testing::Values(submit_via::chain_op, submit_via::async_exec)),
    [](const auto &info) {
        std::string n = kind_name(std::get<0>(info.param));
        n.erase(std::remove_if(n.begin(), n.end(), [](char c) { return !isalnum(static_cast<unsigned char>(c)); }),
                n.end());
        return n + (std::get<1>(info.param) == submit_via::chain_op ? "_ChainOp" : "_AsyncExec");
    });

// ----------------------------------------------------------------------
// A loop that reads a partly cached file in chunks until EOF, advancing its
// buffer cursor by each read's result (data flow), counting its rounds:
//   a0: read(fd, *cursor, chunk) [STOP_ON_NON_POSITIVE | SKIP_TO_NEXT_ON_STOP] -> a2
//   a1: umem_add(&eof_seen, 1)                    (end, reached on EOF)
//   a2: umem_add(&cursor, r0) -> a3: umem_add(&rounds, 1) -> a0
// As plain read(2)s: size / chunk rounds (whole chunks), then EOF.

class PartialReadLoop : public ::testing::TestWithParam<submit_via> {};

TEST_P(PartialReadLoop, ChunkedLoopReadsWholeChunksUntilEof) {
    const submit_via via = GetParam();
    constexpr size_t kChunk = 8 * kPage, kChunks = 6, kHead = 4;
    partly_cached_file f(kChunks * kChunk);
    ASSERT_GE(f.fd, 0);
    REQUIRE_PARTLY_CACHED(f, kHead * kPage);
    ASSERT_EQ(lseek(f.fd, 0, SEEK_SET), 0);
    ctx_guard ctx;
    std::vector<char> buf(f.size + kChunk, 0);
    unsigned long cursor = ulong_of(buf.data()), fdv = static_cast<unsigned long>(f.fd), chunk = kChunk, one = 1;
    unsigned long eof_seen = 0, rounds = 0, cursor_p = ulong_of(&cursor), eof_p = ulong_of(&eof_seen),
                  rounds_p = ulong_of(&rounds);
    long r0 = kUnset, r1 = kUnset;
    syslet_uatom a[4];
    a[0] = atom(SYS_read, SYSLET_STOP_ON_NON_POSITIVE | SYSLET_SKIP_TO_NEXT_ON_STOP, &r0);
    a[0].arg_ptr[0] = &fdv;
    a[0].arg_ptr[1] = &cursor;
    a[0].arg_ptr[2] = &chunk;
    a[0].next = &a[2];
    a[1] = atom(__NR_umem_add, 0, &r1);
    a[1].arg_ptr[0] = &eof_p;
    a[1].arg_ptr[1] = &one;
    a[2] = atom(__NR_umem_add, 0, nullptr);
    a[2].arg_ptr[0] = &cursor_p;
    a[2].arg_ptr[1] = reinterpret_cast<unsigned long *>(&r0);
    a[2].next = &a[3];
    a[3] = atom(__NR_umem_add, 0, nullptr);
    a[3].arg_ptr[0] = &rounds_p;
    a[3].arg_ptr[1] = &one;
    a[3].next = &a[0];
    syslet_uatom *last = run_chain_via(ctx, via, &a[0]);
    SCOPED_TRACE(via_name(via));
    EXPECT_EQ(last, &a[1]);
    EXPECT_EQ(r0, 0) << "the last read saw EOF";
    EXPECT_EQ(eof_seen, 1u);
    EXPECT_EQ(rounds, kChunks) << "every read returned a whole chunk, as read(2) does (a short inline count "
                                  "taken as the result would add rounds)";
    EXPECT_EQ(cursor, ulong_of(buf.data()) + f.size);
    EXPECT_EQ(lseek(f.fd, 0, SEEK_CUR), static_cast<off_t>(f.size));
    for (size_t i = 0; i < f.size; ++i) ASSERT_EQ(buf[i], pattern(i)) << "byte " << i;
}

INSTANTIATE_TEST_SUITE_P(Review20, PartialReadLoop, ::testing::Values(submit_via::chain_op, submit_via::async_exec),
                         via_param_name);

// ----------------------------------------------------------------------
// Two file descriptors of one file description (dup): the partial read on
// one puts back the position both share; the next atom reads on the other.

TEST(Review20, PartialReadOnADupSharesThePositionWithTheNextAtom) {
    constexpr size_t kPages = 24, kHead = 4, kFirst = 10 * kPage;
    partly_cached_file f(kPages * kPage);
    ASSERT_GE(f.fd, 0);
    const int dupfd = dup(f.fd);
    ASSERT_GE(dupfd, 0);
    REQUIRE_PARTLY_CACHED(f, kHead * kPage);
    ASSERT_EQ(lseek(f.fd, 0, SEEK_SET), 0);
    ctx_guard ctx;
    std::vector<char> buf(2 * f.size, 0);  // a short first read cannot make the second overrun
    unsigned long fdv = static_cast<unsigned long>(f.fd), dupv = static_cast<unsigned long>(dupfd);
    unsigned long b0 = ulong_of(buf.data()), b1 = ulong_of(buf.data() + kFirst), l0 = kFirst, l1 = f.size;
    long r[2] = {kUnset, kUnset};
    syslet_uatom a[2];
    a[0] = atom(SYS_read, SYSLET_STOP_ON_NON_POSITIVE, &r[0]);
    a[0].arg_ptr[0] = &fdv;
    a[0].arg_ptr[1] = &b0;
    a[0].arg_ptr[2] = &l0;
    a[0].next = &a[1];
    a[1] = atom(SYS_read, 0, &r[1]);
    a[1].arg_ptr[0] = &dupv;
    a[1].arg_ptr[1] = &b1;
    a[1].arg_ptr[2] = &l1;
    long op_res = kUnset;
    EXPECT_EQ(run_chain_via(ctx, submit_via::chain_op, &a[0], &op_res), &a[1]);
    EXPECT_EQ(r[0], static_cast<long>(kFirst)) << "read(2) on the first fd reads all it asked for";
    EXPECT_EQ(r[1], static_cast<long>(f.size - kFirst)) << "the dup reads on from the shared position";
    EXPECT_EQ(op_res, r[1]);
    EXPECT_EQ(lseek(dupfd, 0, SEEK_CUR), static_cast<off_t>(f.size));
    for (size_t i = 0; i < f.size; ++i) ASSERT_EQ(buf[i], pattern(i)) << "byte " << i;
    close(dupfd);
}

// ----------------------------------------------------------------------
// An O_APPEND file: read (partial inline) -> write 5 bytes (appends) ->
// lseek(fd, 0, SEEK_CUR) -> read 64 (at EOF after the append: 0); compared
// with the plain calls, file size and position included.

TEST(Review20, PartialReadOnAnAppendFileThenAppendMatchesThePlainCalls) {
    constexpr size_t kPages = 20, kHead = 3, kAsk = 12 * kPage;
    partly_cached_file f(kPages * kPage, O_APPEND);
    ASSERT_GE(f.fd, 0);
    struct outcome {
        long r[4] = {kUnset, kUnset, kUnset, kUnset};
        off_t size = -1, pos = -1;
        std::vector<char> buf = std::vector<char>(kAsk + 64, 0);
    };
    auto file_state = [&](outcome &o) {
        struct stat st;
        ASSERT_EQ(fstat(f.fd, &st), 0);
        o.size = st.st_size;
        o.pos = lseek(f.fd, 0, SEEK_CUR);
    };
    auto reset = [&] {
        ASSERT_EQ(ftruncate(f.fd, static_cast<off_t>(f.size)), 0);
        ASSERT_EQ(lseek(f.fd, 0, SEEK_SET), 0);
    };
    outcome plain, got;
    REQUIRE_PARTLY_CACHED(f, kHead * kPage);
    reset();
    plain.r[0] = read(f.fd, plain.buf.data(), kAsk);
    plain.r[1] = write(f.fd, "tail!", 5);
    plain.r[2] = lseek(f.fd, 0, SEEK_CUR);
    plain.r[3] = read(f.fd, plain.buf.data() + kAsk, 64);
    file_state(plain);

    reset();
    REQUIRE_PARTLY_CACHED(f, kHead * kPage);
    ASSERT_EQ(lseek(f.fd, 0, SEEK_SET), 0);
    ctx_guard ctx;
    unsigned long fdv = static_cast<unsigned long>(f.fd), b0 = ulong_of(got.buf.data()), l0 = kAsk;
    unsigned long tail = ulong_of("tail!"), five = 5, zero = 0, cur = SEEK_CUR;
    unsigned long b3 = ulong_of(got.buf.data() + kAsk), l3 = 64;
    syslet_uatom a[4];
    a[0] = atom(SYS_read, SYSLET_STOP_ON_NEGATIVE, &got.r[0]);
    a[0].arg_ptr[0] = &fdv;
    a[0].arg_ptr[1] = &b0;
    a[0].arg_ptr[2] = &l0;
    a[1] = atom(SYS_write, SYSLET_STOP_ON_NEGATIVE, &got.r[1]);
    a[1].arg_ptr[0] = &fdv;
    a[1].arg_ptr[1] = &tail;
    a[1].arg_ptr[2] = &five;
    a[2] = atom(SYS_lseek, 0, &got.r[2]);
    a[2].arg_ptr[0] = &fdv;
    a[2].arg_ptr[1] = &zero;
    a[2].arg_ptr[2] = &cur;
    a[3] = atom(SYS_read, 0, &got.r[3]);
    a[3].arg_ptr[0] = &fdv;
    a[3].arg_ptr[1] = &b3;
    a[3].arg_ptr[2] = &l3;
    for (int i = 0; i < 3; ++i) a[i].next = &a[i + 1];
    EXPECT_EQ(run_chain_via(ctx, submit_via::chain_op, &a[0]), &a[3]);
    file_state(got);
    for (int i = 0; i < 4; ++i) EXPECT_EQ(got.r[i], plain.r[i]) << "atom " << i;
    EXPECT_EQ(got.size, plain.size) << "the file's size (one append, not two)";
    EXPECT_EQ(got.pos, plain.pos) << "the file position";
    EXPECT_TRUE(got.buf == plain.buf) << "the bytes read";
}

// ----------------------------------------------------------------------
// Cancel of a chain whose partial read went to a worker, parked on an empty
// pipe right after it: the read keeps its whole result, the pipe read gets
// -ECANCELED, the atom after it does not run, the position is the read's.

class PartialReadCancel : public ::testing::TestWithParam<submit_via> {};

TEST_P(PartialReadCancel, CancelAfterTheWholeReadKeepsItsResultAndPosition) {
    const submit_via via = GetParam();
    constexpr size_t kPages = 24, kHead = 4;
    partly_cached_file f(kPages * kPage);
    ASSERT_GE(f.fd, 0);
    REQUIRE_PARTLY_CACHED(f, kHead * kPage);
    ASSERT_EQ(lseek(f.fd, 0, SEEK_SET), 0);
    asys_params p = params(1);
    ctx_guard ctx(&p);
    const pid_t worker = worker_tid(ctx);
    ASSERT_GT(worker, 0);
    pipe_pair pipe;
    std::vector<char> buf(f.size, 0);
    char byte = 0;
    unsigned long fdv = static_cast<unsigned long>(f.fd), b0 = ulong_of(buf.data()), l0 = f.size;
    unsigned long pr = static_cast<unsigned long>(pipe.r), bb = ulong_of(&byte), one = 1;
    unsigned long before = 0, after = 0, before_p = ulong_of(&before), after_p = ulong_of(&after);
    long r[4] = {kUnset, kUnset, kUnset, kUnset};
    syslet_uatom a[4];
    a[0] = atom(__NR_umem_add, 0, &r[0]);
    a[0].arg_ptr[0] = &before_p;
    a[0].arg_ptr[1] = &one;
    a[1] = atom(SYS_read, SYSLET_STOP_ON_NEGATIVE, &r[1]);
    a[1].arg_ptr[0] = &fdv;
    a[1].arg_ptr[1] = &b0;
    a[1].arg_ptr[2] = &l0;
    a[2] = atom(SYS_read, SYSLET_STOP_ON_NON_POSITIVE, &r[2]);
    a[2].arg_ptr[0] = &pr;
    a[2].arg_ptr[1] = &bb;
    a[2].arg_ptr[2] = &one;
    a[3] = atom(__NR_umem_add, 0, &r[3]);
    a[3].arg_ptr[0] = &after_p;
    a[3].arg_ptr[1] = &one;
    for (int i = 0; i < 3; ++i) a[i].next = &a[i + 1];
    syslet_uatom *ring[4] = {};
    syslet_uatom *last = nullptr;
    long op_res = kUnset;
    if (via == submit_via::chain_op) {
        asys_op op;
        asys_prep_chain(&op, &a[0], &last);
        op.ret_ptr = &op_res;
        op.user_data = 2020;
        ASSERT_EQ(asys_submit(ctx, &op), 0) << "the partial read sends the chain to the worker";
    } else {
        ASSERT_EQ(asys_async_register(ctx, ring, 4), 0);
        ASSERT_EQ(asys_async_exec(ctx, &a[0]), 0) << "the partial read sends the chain to the worker";
    }
    // In the pipe read, so past the file read (whose result the cancel's
    // completion then publishes to this thread).
    ASSERT_TRUE(wait_blocked_in(worker, SYS_read, pipe.r)) << "the worker parks in the pipe read";
    if (via == submit_via::chain_op) {
        EXPECT_EQ(asys_cancel(ctx, 2020), -EALREADY) << "the chain was running (parked in the pipe read)";
        auto c = reap(ctx, 1);
        ASSERT_EQ(c.size(), 1u);
        EXPECT_EQ(c[0].res, -ECANCELED);
        EXPECT_EQ(op_res, -ECANCELED);
        EXPECT_EQ(last, &a[2]);
    } else {
        EXPECT_EQ(asys_async_cancel(ctx, &a[0]), -EALREADY);
        ASSERT_EQ(asys_async_wait(ctx, 1), 1);
        EXPECT_EQ(ring[0], &a[2]);
    }
    SCOPED_TRACE(via_name(via));
    EXPECT_EQ(before, 1u) << "the atom before the partial read ran once";
    EXPECT_EQ(r[1], static_cast<long>(f.size)) << "the read ran whole";
    EXPECT_EQ(r[2], -ECANCELED);
    EXPECT_EQ(r[3], kUnset) << "the atom after the cancelled one did not run";
    EXPECT_EQ(after, 0u);
    EXPECT_EQ(lseek(f.fd, 0, SEEK_CUR), static_cast<off_t>(f.size));
    for (size_t i = 0; i < f.size; ++i) ASSERT_EQ(buf[i], pattern(i)) << "byte " << i;
}

INSTANTIATE_TEST_SUITE_P(Review20, PartialReadCancel, ::testing::Values(submit_via::chain_op, submit_via::async_exec),
                         via_param_name);

// ----------------------------------------------------------------------
// A /dev/zero vector cut short inline (the CPU was wanted) in the middle of
// a chain: the atom before runs once, the atom after sees the whole count.

TEST(Review20, LongDevZeroVectorInTheMiddleOfAChainIsWhole) {
    ctx_guard ctx;
    const int zero = open("/dev/zero", O_RDONLY | O_CLOEXEC);
    ASSERT_GE(zero, 0);
    constexpr size_t kLen = 8u << 20;
    std::vector<char> x(kLen, 1), y(kLen, 1);
    struct iovec iov[2] = {{x.data(), kLen}, {y.data(), kLen}};
    const cpu_contention busy;
    for (int round = 0; round < 4; ++round) {
        unsigned long before = 0, sum = 0, one = 1, before_p = ulong_of(&before), sum_p = ulong_of(&sum);
        unsigned long zv = static_cast<unsigned long>(zero), iv = ulong_of(iov), two = 2;
        long rv = kUnset;
        syslet_uatom a[3];
        a[0] = atom(__NR_umem_add, 0, nullptr);
        a[0].arg_ptr[0] = &before_p;
        a[0].arg_ptr[1] = &one;
        a[0].next = &a[1];
        a[1] = atom(SYS_readv, 0, &rv);
        a[1].arg_ptr[0] = &zv;
        a[1].arg_ptr[1] = &iv;
        a[1].arg_ptr[2] = &two;
        a[1].next = &a[2];
        a[2] = atom(__NR_umem_add, 0, nullptr);
        a[2].arg_ptr[0] = &sum_p;
        a[2].arg_ptr[1] = reinterpret_cast<unsigned long *>(&rv);
        EXPECT_EQ(run_chain_via(ctx, submit_via::chain_op, &a[0]), &a[2]);
        EXPECT_EQ(before, 1u) << "round " << round;
        EXPECT_EQ(rv, static_cast<long>(2 * kLen)) << "round " << round;
        EXPECT_EQ(sum, 2 * kLen) << "round " << round;
    }
    EXPECT_TRUE(std::all_of(x.begin(), x.end(), [](char c) { return c == 0; }));
    EXPECT_TRUE(std::all_of(y.begin(), y.end(), [](char c) { return c == 0; }));
    close(zero);
}

// ----------------------------------------------------------------------
// KNOWN DEFECT (fails until the library is fixed; see the commit message):
// an atom's arguments are read when it runs: once, as the system call reads
// its registers. A read atom whose length is stored inside its own buffer
// (in the cached head it reads over) must read the length it had when it
// started: read(2) reads `len` before writing the buffer.

TEST(Review20, PartialReadAtomWhoseLengthLivesInItsOwnBufferReadsThatLength) {
    constexpr size_t kPages = 32, kHead = 4;
    partly_cached_file f(kPages * kPage);
    ASSERT_GE(f.fd, 0);
    REQUIRE_PARTLY_CACHED(f, kHead * kPage);
    ASSERT_EQ(lseek(f.fd, 0, SEEK_SET), 0);
    ctx_guard ctx;
    const size_t want = f.size / 2;
    // Room for the whole file and more: a wrong length cannot overrun.
    std::vector<unsigned long> store((2 * f.size) / sizeof(unsigned long), 0);
    char *buf = reinterpret_cast<char *>(store.data());
    store[2] = want;  // the length, at byte 16 of the buffer: in the cached head
    unsigned long fdv = static_cast<unsigned long>(f.fd), bp = ulong_of(buf);
    long r = kUnset;
    syslet_uatom a = atom(SYS_read, 0, &r);
    a.arg_ptr[0] = &fdv;
    a.arg_ptr[1] = &bp;
    a.arg_ptr[2] = &store[2];
    EXPECT_EQ(run_chain_via(ctx, submit_via::chain_op, &a), &a);
    EXPECT_EQ(r, static_cast<long>(want)) << "read(2) with the length the atom had when it started";
    EXPECT_EQ(lseek(f.fd, 0, SEEK_CUR), static_cast<off_t>(want));
    for (size_t i = 0; i < want; ++i) ASSERT_EQ(buf[i], pattern(i)) << "byte " << i;
}

// ----------------------------------------------------------------------
// asys_ctx_destroy racing submitters (71f0677).

/// One op's record: what submit said, what completed.
struct op_record {
    long res = kUnset;                 // ret_ptr, or the callback's cqe res
    std::atomic<int> callbacks{0};     // callback runs
    std::atomic<bool> late{false};     // a callback ran after destroy returned
    int submit_rc = kUnset;            // asys_submit's return / the batch status
    bool accepted = false;
    bool wants_callback = false;       // a callback is expected iff accepted (CQE_ALWAYS or no ret_ptr)
    bool callback_unless_done = false; // a callback unless submit said ASYS_DONE
    // A chain op: read(pipe, &byte, 1) -> umem_add(&after, 1)
    syslet_uatom chain[2];
    unsigned long pr = 0, bp = 0, one = 1, after = 0, after_p = 0;
    char byte = 0;
};

std::atomic<bool> *g_destroy_returned = nullptr;

void record_callback(const asys_cqe *cqe, void *arg) {
    auto *r = static_cast<op_record *>(arg);
    if (g_destroy_returned && g_destroy_returned->load()) r->late = true;
    r->res = cqe->res;
    r->callbacks.fetch_add(1);
}

struct race_env {
    int file = -1;    // a small cached file (inline reads)
    int pipe_r = -1;  // an empty pipe (reads block until released)
    char filebuf[64];
};

/// Fills `op` for record `rec` of kind `kind` (0..4).
void prep_kind(asys_op &op, op_record &rec, unsigned kind, race_env &env, char *buf) {
    switch (kind) {
        case 0:  // a plain cached read: inline
            asys_prep_pread(&op, env.file, buf, 16, 0);
            op.ret_ptr = &rec.res;
            break;
        case 1:  // an ASYNC read of an empty pipe: blocks on a backend
            asys_prep_read(&op, env.pipe_r, buf, 1);
            op.flags = ASYS_F_ASYNC;
            op.ret_ptr = &rec.res;
            break;
        case 2:  // the inline probe finds the pipe empty; callback, CQE_ALWAYS
            asys_prep_read(&op, env.pipe_r, buf, 1);
            op.flags = ASYS_F_CQE_ALWAYS;
            op.callback = record_callback;
            op.cb_arg = &rec;
            rec.wants_callback = true;
            break;
        case 3:  // a cached read with a callback and a ret_ptr: callback unless done inline
            asys_prep_pread(&op, env.file, buf, 16, 0);
            op.ret_ptr = &rec.res;
            op.callback = record_callback;
            op.cb_arg = &rec;
            rec.callback_unless_done = true;
            break;
        default: {  // a chain parked on the empty pipe
            rec.pr = static_cast<unsigned long>(env.pipe_r);
            rec.bp = ulong_of(&rec.byte);
            rec.after_p = ulong_of(&rec.after);
            rec.chain[0] = atom(SYS_read, SYSLET_STOP_ON_NEGATIVE, nullptr);
            rec.chain[0].arg_ptr[0] = &rec.pr;
            rec.chain[0].arg_ptr[1] = &rec.bp;
            rec.chain[0].arg_ptr[2] = &rec.one;
            rec.chain[0].next = &rec.chain[1];
            rec.chain[1] = atom(__NR_umem_add, 0, nullptr);
            rec.chain[1].arg_ptr[0] = &rec.after_p;
            rec.chain[1].arg_ptr[1] = &rec.one;
            asys_prep_chain(&op, &rec.chain[0], nullptr);
            op.ret_ptr = &rec.res;
            break;
        }
    }
}

constexpr unsigned kKinds = 5, kBatch = 5, kSlots = 6000;

/// A submitting thread: singles of each kind, then a batch of one of each,
/// until the context refuses (-ESHUTDOWN, -EBADF) or its records run out.
struct submitter {
    std::unique_ptr<op_record[]> recs{new op_record[kSlots]};
    std::vector<char> bufs = std::vector<char>(kSlots * 16, 0);
    unsigned used = 0;
    std::atomic<unsigned> started{0};   // submit calls entered
    std::atomic<unsigned> attempts{0};  // submit calls returned
    int final_rc = 0;

    /// only_kind < kKinds: that kind of single op only (no batches).
    void run(asys_ctx *ctx, race_env &env, unsigned only_kind) {
        for (unsigned k = 0; used + kBatch <= kSlots; ++k) {
            if (only_kind < kKinds || k % (kKinds + 1) < kKinds) {
                op_record &rec = recs[used];
                asys_op op;
                prep_kind(op, rec, only_kind < kKinds ? only_kind : k % (kKinds + 1), env, &bufs[used * 16]);
                ++used;
                started.fetch_add(1);
                rec.submit_rc = asys_submit(ctx, &op);
                rec.accepted = rec.submit_rc == 0 || rec.submit_rc == ASYS_DONE;
                attempts.fetch_add(1);
                if (rec.submit_rc == -EAGAIN && only_kind < kKinds) {
                    // No room: the record is used again (keeps a submitter
                    // of one kind going until destroy).
                    --used;
                    rec.submit_rc = kUnset;
                    rec.wants_callback = rec.callback_unless_done = false;
                    if (rec.res != kUnset || rec.callbacks.load() != 0) ADD_FAILURE() << "an op refused for room completed";
                    continue;
                }
                if (rec.submit_rc == -ESHUTDOWN || rec.submit_rc == -EBADF) {
                    final_rc = rec.submit_rc;
                    return;
                }
            } else {
                asys_op ops[kBatch];
                int status[kBatch];
                const unsigned first = used;
                for (unsigned i = 0; i < kBatch; ++i) {
                    prep_kind(ops[i], recs[first + i], i, env, &bufs[(first + i) * 16]);
                    status[i] = kUnset;
                }
                used += kBatch;
                started.fetch_add(1);
                const int rc = asys_submit_batch(ctx, ops, kBatch, status);
                attempts.fetch_add(1);
                for (unsigned i = 0; i < kBatch; ++i) {
                    recs[first + i].submit_rc = status[i];
                    recs[first + i].accepted = rc > 0 && static_cast<int>(i) < rc;
                    if (recs[first + i].accepted && !(status[i] == 0 || status[i] == ASYS_DONE))
                        ADD_FAILURE() << "batch accepted op " << i << " with status " << status[i];
                }
                if (rc == -ESHUTDOWN || rc == -EBADF || (rc >= 0 && rc < static_cast<int>(kBatch) &&
                                                          (status[rc] == -ESHUTDOWN || status[rc] == -EBADF))) {
                    final_rc = rc < 0 ? rc : status[rc];
                    return;
                }
            }
            if (k % 64 == 63) sched_yield();  // let the others (and destroy) in on 2 cores
        }
    }
};

struct race_case {
    unsigned how;
    unsigned ctx_flags;
    const char *name;
    unsigned only_kind;  // kKinds: every kind and batches
    unsigned rounds;
    unsigned max_inflight;
};

class Review20DestroyRace : public ::testing::TestWithParam<race_case> {};

TEST_P(Review20DestroyRace, EveryAcceptedOpCompletesOnceBeforeDestroyReturns) {
    const race_case rc = GetParam();
    constexpr unsigned kThreads = 3, kMinAttempts = 8;
    const unsigned kRounds = rc.rounds;
    temp_dir dir;
    race_env env;
    env.file = make_file(dir.file("f"), 4096);
    ASSERT_GE(env.file, 0);
    std::mt19937 rng(20);
    unsigned total_accepted = 0, total_refused = 0, rounds_cut = 0;
    for (unsigned round = 0; round < kRounds; ++round) {
        SCOPED_TRACE("round " + std::to_string(round));
        asys_params p = params(2, rc.max_inflight, rc.ctx_flags);
        asys_ctx *ctx = nullptr;
        ASSERT_EQ(asys_ctx_create(&p, &ctx), 0);
        int pp[2];
        ASSERT_EQ(pipe2(pp, O_CLOEXEC), 0);
        env.pipe_r = pp[0];
        std::atomic<bool> destroy_returned{false};
        g_destroy_returned = &destroy_returned;
        std::vector<std::unique_ptr<submitter>> subs;
        std::vector<std::thread> threads;
        for (unsigned t = 0; t < kThreads; ++t) subs.push_back(std::make_unique<submitter>());
        for (unsigned t = 0; t < kThreads; ++t) threads.emplace_back([&, t] { subs[t]->run(ctx, env, rc.only_kind); });
        // Destroy once every submitter is under way (a condition on their
        // progress), after a random spin.
        // (With BLOCK_WHEN_FULL a submitter may wait in a submit for room
        // that only destroy gives back: under way too.)
        for (auto &s : subs)
            EXPECT_TRUE(eventually([&] {
                const unsigned done = s->attempts.load();
                return done >= kMinAttempts || s->started.load() > done;
            })) << "a submitter stalled";
        const unsigned spin = rng() % 20000;
        for (std::atomic<unsigned> i{0}; i.load(std::memory_order_relaxed) < spin; i.fetch_add(1)) {
        }
        int destroy_rc = kUnset;
        if (rc.how == ASYS_DESTROY_DRAIN) {
            // Drain waits for the parked pipe reads: release them (EOF for
            // every read from now on) while destroy waits and the others submit.
            std::thread destroyer([&] {
                destroy_rc = asys_ctx_destroy(ctx, ASYS_DESTROY_DRAIN);
                destroy_returned = true;
            });
            const unsigned spin2 = rng() % 20000;
            for (std::atomic<unsigned> i{0}; i.load(std::memory_order_relaxed) < spin2; i.fetch_add(1)) {
            }
            close(pp[1]);
            destroyer.join();
        } else {
            destroy_rc = asys_ctx_destroy(ctx, ASYS_DESTROY_CANCEL);
            destroy_returned = true;
            close(pp[1]);
        }
        EXPECT_EQ(destroy_rc, 0);
        for (auto &th : threads) th.join();
        // Every accepted op completed once; every refused one never.
        unsigned bad = 0;
        for (auto &s : subs) {
            EXPECT_TRUE(s->final_rc == -ESHUTDOWN || s->final_rc == -EBADF || s->used + kBatch > kSlots)
                << "a submitter ended with " << s->final_rc;
            rounds_cut += s->used + kBatch > kSlots;
            for (unsigned i = 0; i < s->used; ++i) {
                op_record &r = s->recs[i];
                const int cbs = r.callbacks.load();
                if (r.accepted) {
                    ++total_accepted;
                    const bool cb_expected = r.wants_callback || (r.callback_unless_done && r.submit_rc != ASYS_DONE);
                    const bool ok = r.res != kUnset && cbs == (cb_expected ? 1 : 0) && !r.late.load();
                    if (!ok && ++bad <= 5)
                        ADD_FAILURE() << "accepted op (record " << i << ", submit " << r.submit_rc << ") res "
                                      << r.res << ", " << cbs << " callbacks (expected "
                                      << (cb_expected ? 1 : 0) << ")" << (r.late ? ", one after destroy returned" : "");
                } else {
                    ++total_refused;
                    if ((r.res != kUnset || cbs != 0) && ++bad <= 5)
                        ADD_FAILURE() << "refused op (record " << i << ", submit " << r.submit_rc
                                      << ") completed: res " << r.res << ", " << cbs << " callbacks";
                }
            }
        }
        EXPECT_EQ(bad, 0u);
        asys_op nop;
        asys_prep_nop(&nop, 0);
        EXPECT_EQ(asys_submit(ctx, &nop), -EBADF) << "the handle is dead after destroy";
        g_destroy_returned = nullptr;
        close(pp[0]);
        if (bad) break;
    }
    close(env.file);
    std::printf("[review20] %s: %u ops accepted, %u refused over %u rounds (%u submitters ran out of records)\n",
                rc.name, total_accepted, total_refused, kRounds, rounds_cut);
    EXPECT_GT(total_accepted, 0u);
}

INSTANTIATE_TEST_SUITE_P(Review20, Review20DestroyRace,
                         ::testing::Values(race_case{ASYS_DESTROY_DRAIN, 0, "Drain", kKinds, 12, 48},
                                           race_case{ASYS_DESTROY_CANCEL, 0, "Cancel", kKinds, 12, 48},
                                           race_case{ASYS_DESTROY_DRAIN, ASYS_CTX_BLOCK_WHEN_FULL,
                                                     "DrainBlockWhenFull", kKinds, 12, 48},
                                           race_case{ASYS_DESTROY_CANCEL, ASYS_CTX_BLOCK_WHEN_FULL,
                                                     "CancelBlockWhenFull", kKinds, 12, 48},
                                           // asys_submit straight to route(): ASYNC pipe reads only
                                           race_case{ASYS_DESTROY_CANCEL, 0, "CancelAsyncReadsOnly", 1, 120, 4096},
                                           race_case{ASYS_DESTROY_DRAIN, 0, "DrainAsyncReadsOnly", 1, 120, 4096}),
                         [](const auto &info) { return std::string(info.param.name); });

}  // namespace
