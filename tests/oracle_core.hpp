// The differential oracle: one op with edge-case arguments, run through the
// plain system call and through every asys path, each on an identical fresh
// fixture; the return value and every observable effect must be the same.
//
// Shared by tests/test_oracle.cpp (gtest: an enumeration plus seeded random
// cases) and tests/fuzz/fuzz_oracle.cpp (libFuzzer: the case is the input's
// bytes). No gtest here: this header needs only libc and asys.
//
// A case is a case_spec: sixteen small indices into the value tables below.
// Its bytes, printed in hex with every mismatch, are also a fuzz input that
// reproduces it (fuzz_oracle decodes exactly these bytes).
#pragma once
#include <dirent.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdarg>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "asys/asys.h"
#include "asys/syslet.h"

namespace oracle {

// ------------------------------------------------------------------ tables

enum op_id : uint8_t {
    OP_READ, OP_PREAD, OP_READV, OP_PREADV, OP_WRITE, OP_PWRITE, OP_WRITEV, OP_PWRITEV,
    OP_OPENAT, OP_CLOSE, OP_FSYNC, OP_FDATASYNC, OP_STATX, OP_FTRUNCATE, OP_FALLOCATE,
    OP_RECV, OP_SEND, OP_POLL, OP_LSEEK, OP_PREAD64, OP_DATAFLOW, OP__COUNT
};
inline const char *const kOpName[OP__COUNT] = {
    "READ", "PREAD", "READV", "PREADV", "WRITE", "PWRITE", "WRITEV", "PWRITEV",
    "OPENAT", "CLOSE", "FSYNC", "FDATASYNC", "STATX", "FTRUNCATE", "FALLOCATE",
    "RECV", "SEND", "POLL", "SYSCALL(lseek)", "SYSCALL(pread64)", "CHAIN(data flow)"};

enum fd_id : uint8_t {
    FD_CLOSED, FD_NEG1, FD_REG, FD_REG_RDONLY, FD_REG_WRONLY, FD_REG_APPEND, FD_ODIRECT,
    FD_FIFO, FD_SOCK_STREAM, FD_SOCK_DGRAM, FD_PIPE_R, FD_PIPE_W, FD_DIR, FD_DEVNULL,
    FD_DEVZERO, FD__COUNT
};
inline const char *const kFdName[FD__COUNT] = {
    "closed-fd", "-1", "reg", "reg-rdonly", "reg-wronly", "reg-append", "odirect",
    "fifo-rdwr", "socketpair-stream", "socketpair-dgram", "pipe-read-end", "pipe-write-end",
    "dir", "/dev/null", "/dev/zero"};

inline bool is_reg(unsigned fd) { return fd >= FD_REG && fd <= FD_ODIRECT; }
inline bool is_stream(unsigned fd) {
    return fd == FD_FIFO || fd == FD_SOCK_STREAM || fd == FD_SOCK_DGRAM || fd == FD_PIPE_R ||
           fd == FD_PIPE_W;
}

enum buf_id : uint8_t { B_VALID, B_ODD, B_NULL, B_UNMAPPED, B_LOW, B_RO, B_KERNEL, B__COUNT };
inline const char *const kBufName[B__COUNT] = {
    "valid", "valid+1", "NULL", "unmapped", "0x1000", "read-only", "kernel-address"};

enum iov_id : uint8_t { IOV_VALID, IOV_NULL, IOV_0X10, IOV_UNMAPPED, IOV_RO, IOV_BADENTRY, IOV__COUNT };
inline const char *const kIovName[IOV__COUNT] = {
    "valid", "NULL", "0x10", "unmapped", "read-only-array", "valid-with-iov[1].base=0x1000"};

inline constexpr uint64_t kSizes[] = {0, 100, 4096, 8292, 40000};
inline constexpr uint64_t kQueued[] = {0, 1, 100, 4096, 20000};
inline constexpr uint64_t kLens[] = {0, 1, 511, 512, 4096, 16384, 16385, 0x7ffff000ull,
                                     0xffffffffull, 0x100000000ull, 0x100000001ull,
                                     0x8000000000000000ull, UINT64_MAX};
inline constexpr int kIovCnt[] = {0, 1, 2, 3, 32, 33, 1024, 1025, -1};

// Offsets: some are relative to the fixture's file size S.
enum off_id : uint8_t {
    OFF_0, OFF_1, OFF_511, OFF_512, OFF_4096, OFF_SM1, OFF_S, OFF_SP1, OFF_SP4K, OFF_M1, OFF_M2,
    OFF_4G, OFF_4GP1, OFF_2P62, OFF_MAX, OFF__COUNT
};
inline int64_t offset_value(unsigned o, int64_t s) {
    switch (o) {
        case OFF_0: return 0;
        case OFF_1: return 1;
        case OFF_511: return 511;
        case OFF_512: return 512;
        case OFF_4096: return 4096;
        case OFF_SM1: return s - 1;
        case OFF_S: return s;
        case OFF_SP1: return s + 1;
        case OFF_SP4K: return s + 4096;
        case OFF_M1: return -1;
        case OFF_M2: return -2;
        case OFF_4G: return int64_t{1} << 32;
        case OFF_4GP1: return (int64_t{1} << 32) + 1;
        case OFF_2P62: return int64_t{1} << 62;
        default: return INT64_MAX;
    }
}
// File positions of a regular-file fixture: the start, one byte in, one page
// in, the end of the file (S), and beyond the end.
inline int64_t position_value(unsigned p, int64_t s) {
    const int64_t v[] = {0, 1, 4096, s, s + 100};
    return v[p % 5];
}

inline constexpr int kRwf[] = {0, RWF_NOWAIT, RWF_DSYNC, RWF_SYNC, RWF_APPEND, RWF_HIPRI, 0x40000000};
inline constexpr int kRecvFlags[] = {0, MSG_PEEK, MSG_DONTWAIT, MSG_TRUNC, MSG_WAITALL, MSG_OOB,
                                     MSG_PEEK | MSG_DONTWAIT, MSG_ERRQUEUE};
inline constexpr int kSendFlags[] = {0, MSG_DONTWAIT, MSG_NOSIGNAL, MSG_OOB, MSG_MORE, MSG_EOR, MSG_CONFIRM};
inline constexpr int kOpenFlags[] = {
    O_RDONLY, O_WRONLY, O_RDWR, O_RDWR | O_CREAT | O_EXCL, O_RDWR | O_CREAT, O_RDWR | O_TRUNC,
    O_RDONLY | O_DIRECTORY, O_PATH, O_RDONLY | O_NOFOLLOW, O_TMPFILE | O_RDWR, O_RDWR | O_DIRECT,
    O_RDONLY | O_NONBLOCK, O_WRONLY | O_NONBLOCK, O_WRONLY | O_APPEND, O_RDONLY | O_CLOEXEC,
    O_WRONLY | O_CREAT | O_TRUNC, O_RDONLY | 0x40000000, O_ACCMODE};
inline constexpr unsigned kModes[] = {0644, 0, 07777, 0x10000};
inline constexpr int kStatxFlags[] = {0, AT_SYMLINK_NOFOLLOW, AT_EMPTY_PATH, AT_STATX_FORCE_SYNC,
                                      AT_STATX_DONT_SYNC, AT_NO_AUTOMOUNT, 0x40000000};
inline constexpr unsigned kStatxMask[] = {STATX_BASIC_STATS, STATX_ALL, 0, 0x80000000u, STATX_SIZE};
inline constexpr int kFallocMode[] = {0, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                                      FALLOC_FL_ZERO_RANGE, FALLOC_FL_COLLAPSE_RANGE,
                                      FALLOC_FL_INSERT_RANGE, FALLOC_FL_PUNCH_HOLE, 0x100};
inline constexpr int64_t kFallocLen[] = {0, 1, 511, 4096, 65536, -1, int64_t{1} << 32, INT64_MAX};
inline constexpr unsigned kPollEvents[] = {POLLIN, POLLOUT, POLLIN | POLLOUT, 0, POLLPRI,
                                           POLLRDHUP | POLLIN, 0xffff};
inline constexpr int kPollTimeout[] = {0, 1, -1, 3};
inline constexpr int kWhence[] = {SEEK_SET, SEEK_CUR, SEEK_END, SEEK_DATA, SEEK_HOLE, 5};

enum path_arg : uint8_t {
    PA_F, PA_DIR, PA_FIFO, PA_LINK, PA_MISSING, PA_EMPTY, PA_NULL, PA_UNMAPPED, PA_LOW, PA_LONG,
    PA_ABS, PA_DOTDOT, PA_TRAIL, PA_RO, PA_DANGLING, PA_DIRFILE, PA__COUNT
};
inline const char *const kPathName[PA__COUNT] = {
    "\"f\"", "\"dir\"", "\"fifo\"", "\"link\"(->f)", "\"missing\"", "\"\"", "NULL", "unmapped",
    "0x1000", "\"aaa...\"(PATH_MAX+10)", "\"<rundir>/f\"", "\"dir/../f\"", "\"f/\"",
    "\"f\"(read-only page)", "\"dang\"(->nowhere)", "\"dir/g\""};

enum dirfd_id : uint8_t { DF_CWD, DF_RUNDIR, DF_CLOSED, DF_NEG1, DF_FIXFD, DF_SUBDIR, DF__COUNT };
inline const char *const kDirfdName[DF__COUNT] = {"AT_FDCWD", "fd(rundir)", "closed-fd", "-1",
                                                  "the fd fixture", "fd(rundir/dir)"};

// Data-flow chains: the first atom preads a value V into a cell; the second
// atom takes one argument from that cell (read when it runs, per syslet.h).
inline constexpr uint64_t kDataflowValue[] = {3, 0, 5000, 0x100000001ull};
inline const char *const kDataflowName[] = {"pwrite64(fd, buf, *cell, 0)", "pread64(fd, buf, *cell, 0)",
                                            "pread64(fd, buf, 4096, *cell)", "write(fd, buf, *cell)"};

/// One case. Every field is an index, reduced modulo its table by normalize().
struct case_spec {
    uint8_t op, fd, size, pos, queued, eof, buf, len, off, iov, iovcnt, flags, aux, path, dirfd, extra;
};
static_assert(sizeof(case_spec) == 16);

template <class T, size_t N>
constexpr unsigned count_of(const T (&)[N]) { return N; }

inline void normalize(case_spec &s) {
    s.op %= OP__COUNT;
    s.fd %= FD__COUNT;
    s.size %= count_of(kSizes);
    s.pos %= 5;
    s.queued %= count_of(kQueued);
    s.eof %= 2;
    s.buf %= B__COUNT;
    s.len %= count_of(kLens);
    s.off %= OFF__COUNT;
    s.iov %= IOV__COUNT;
    s.iovcnt %= count_of(kIovCnt);
    s.path %= PA__COUNT;
    s.dirfd %= DF__COUNT;
    switch (s.op) {
        case OP_PREADV: case OP_PWRITEV: s.flags %= count_of(kRwf); break;
        case OP_RECV: s.flags %= count_of(kRecvFlags); break;
        case OP_SEND: s.flags %= count_of(kSendFlags); break;
        case OP_OPENAT: s.flags %= count_of(kOpenFlags); break;
        case OP_STATX: s.flags %= count_of(kStatxFlags); break;
        case OP_FALLOCATE: s.flags %= count_of(kFallocMode); break;
        case OP_POLL: s.flags %= count_of(kPollEvents); break;
        case OP_LSEEK: s.flags %= count_of(kWhence); break;
        default: s.flags = 0; break;
    }
    switch (s.op) {
        case OP_OPENAT: s.aux %= count_of(kModes); break;
        case OP_STATX: s.aux %= count_of(kStatxMask); break;
        case OP_POLL: s.aux %= count_of(kPollTimeout); break;
        case OP_FALLOCATE: s.aux %= count_of(kFallocLen); break;
        case OP_DATAFLOW: s.aux %= 4; break;
        default: s.aux = 0; break;
    }
    s.extra = s.op == OP_DATAFLOW ? s.extra % count_of(kDataflowValue) : 0;
}

inline std::string hex(const case_spec &s) {
    const auto *p = reinterpret_cast<const uint8_t *>(&s);
    std::string out;
    char b[3];
    for (size_t i = 0; i < sizeof s; ++i) {
        snprintf(b, sizeof b, "%02x", p[i]);
        out += b;
    }
    return out;
}

inline std::string fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
inline std::string fmt(const char *f, ...) {
    char b[512];
    va_list ap;
    va_start(ap, f);
    vsnprintf(b, sizeof b, f, ap);
    va_end(ap);
    return b;
}

inline std::string len_str(uint64_t v) {
    switch (v) {
        case 0xffffffffull: return "4GiB-1";
        case 0x100000000ull: return "4GiB";
        case 0x100000001ull: return "4GiB+1";
        case 0x7ffff000ull: return "MAX_RW_COUNT";
        case 0x8000000000000000ull: return "2^63";
        case UINT64_MAX: return "SIZE_MAX";
        default: return std::to_string(v);
    }
}
inline std::string off_str(unsigned o, int64_t s) {
    switch (o) {
        case OFF_4G: return "4GiB";
        case OFF_4GP1: return "4GiB+1";
        case OFF_2P62: return "2^62";
        case OFF_MAX: return "INT64_MAX";
        case OFF_SM1: return fmt("%" PRId64 "(size-1)", s - 1);
        case OFF_S: return fmt("%" PRId64 "(size, EOF)", s);
        case OFF_SP1: return fmt("%" PRId64 "(beyond EOF)", s + 1);
        case OFF_SP4K: return fmt("%" PRId64 "(size+4096)", s + 4096);
        default: return std::to_string(offset_value(o, s));
    }
}

inline bool positional(unsigned op) {
    return op == OP_PREAD || op == OP_PREADV || op == OP_PWRITE || op == OP_PWRITEV ||
           op == OP_PREAD64;
}
inline bool vectored(unsigned op) {
    return op == OP_READV || op == OP_PREADV || op == OP_WRITEV || op == OP_PWRITEV;
}
inline bool reads(unsigned op) {
    return op == OP_READ || op == OP_PREAD || op == OP_READV || op == OP_PREADV || op == OP_RECV ||
           op == OP_PREAD64;
}
inline bool uses_fd(unsigned op) { return op != OP_OPENAT && op != OP_STATX; }
inline bool uses_buf(unsigned op) {
    return op == OP_READ || op == OP_PREAD || op == OP_WRITE || op == OP_PWRITE || op == OP_RECV ||
           op == OP_SEND || op == OP_PREAD64 || op == OP_STATX || vectored(op) || op == OP_DATAFLOW;
}
inline bool uses_len(unsigned op) {
    return op == OP_READ || op == OP_PREAD || op == OP_WRITE || op == OP_PWRITE || op == OP_RECV ||
           op == OP_SEND || op == OP_PREAD64 || vectored(op);
}

inline std::string flag_names(int v, const std::vector<std::pair<int, const char *>> &names) {
    std::string out;
    for (auto &[bit, name] : names)
        if (bit && (v & bit) == bit) {
            if (!out.empty()) out += "|";
            out += name;
            v &= ~bit;
        }
    if (v || out.empty()) {
        if (!out.empty()) out += "|";
        out += fmt("%#x", v);
    }
    return out;
}

inline std::string open_flags_str(int f) {
    std::string acc = (f & O_ACCMODE) == O_RDONLY ? "O_RDONLY"
                      : (f & O_ACCMODE) == O_WRONLY ? "O_WRONLY"
                      : (f & O_ACCMODE) == O_RDWR   ? "O_RDWR"
                                                    : "O_ACCMODE(3)";
    const int rest = f & ~O_ACCMODE;
    if (!rest) return acc;
    return acc + "|" + flag_names(rest, {{O_TMPFILE, "O_TMPFILE"}, {O_CREAT, "O_CREAT"}, {O_EXCL, "O_EXCL"},
                                         {O_TRUNC, "O_TRUNC"}, {O_DIRECTORY, "O_DIRECTORY"}, {O_PATH, "O_PATH"},
                                         {O_NOFOLLOW, "O_NOFOLLOW"}, {O_DIRECT, "O_DIRECT"},
                                         {O_NONBLOCK, "O_NONBLOCK"}, {O_APPEND, "O_APPEND"},
                                         {O_CLOEXEC, "O_CLOEXEC"}});
}

inline std::string fd_str(const case_spec &s) {
    std::string out = kFdName[s.fd];
    const int64_t size = static_cast<int64_t>(kSizes[s.size]);
    if (is_reg(s.fd))
        out += fmt("(size=%" PRId64 ",pos=%" PRId64 ")", size, position_value(s.pos, size));
    else if (s.fd == FD_PIPE_W)
        out += fmt("(queued=%" PRIu64 "%s)", kQueued[s.queued], s.eof ? ",read end closed" : "");
    else if (s.fd == FD_SOCK_DGRAM)
        out += fmt("(queued=%" PRIu64 "%s)", kQueued[s.queued], s.queued ? "+7 in two datagrams" : "");
    else if (is_stream(s.fd))
        out += fmt("(queued=%" PRIu64 "%s)", kQueued[s.queued],
                   s.eof ? (s.fd == FD_FIFO ? "" : ",write side closed") : "");
    return out;
}

/// A one-line, reproducible description of the case (op and arguments).
inline std::string describe(const case_spec &s) {
    const int64_t size = static_cast<int64_t>(kSizes[s.size]);
    std::string d = kOpName[s.op];
    if (uses_fd(s.op)) d += " fd=" + fd_str(s);
    if (vectored(s.op))
        d += fmt(" iov=%s iov[0]={%s, %s} iovcnt=%d", kIovName[s.iov], kBufName[s.buf],
                 len_str(kLens[s.len]).c_str(), kIovCnt[s.iovcnt]);
    else if (uses_len(s.op))
        d += fmt(" buf=%s len=%s", kBufName[s.buf], len_str(kLens[s.len]).c_str());
    switch (s.op) {
        case OP_PREAD: case OP_PWRITE: case OP_PREAD64:
            d += " off=" + off_str(s.off, size);
            break;
        case OP_PREADV: case OP_PWRITEV:
            d += " off=" + off_str(s.off, size) + " rwf=" +
                 flag_names(kRwf[s.flags], {{RWF_NOWAIT, "RWF_NOWAIT"}, {RWF_DSYNC, "RWF_DSYNC"},
                                            {RWF_SYNC, "RWF_SYNC"}, {RWF_APPEND, "RWF_APPEND"},
                                            {RWF_HIPRI, "RWF_HIPRI"}});
            break;
        case OP_RECV: case OP_SEND:
            d += " flags=" + flag_names(s.op == OP_RECV ? kRecvFlags[s.flags] : kSendFlags[s.flags],
                                        {{MSG_PEEK, "MSG_PEEK"}, {MSG_DONTWAIT, "MSG_DONTWAIT"},
                                         {MSG_TRUNC, "MSG_TRUNC"}, {MSG_WAITALL, "MSG_WAITALL"},
                                         {MSG_OOB, "MSG_OOB"}, {MSG_ERRQUEUE, "MSG_ERRQUEUE"},
                                         {MSG_NOSIGNAL, "MSG_NOSIGNAL"}, {MSG_MORE, "MSG_MORE"},
                                         {MSG_EOR, "MSG_EOR"}, {MSG_CONFIRM, "MSG_CONFIRM"}});
            break;
        case OP_OPENAT:
            d += fmt(" dirfd=%s path=%s flags=%s mode=%#o", kDirfdName[s.dirfd], kPathName[s.path],
                     open_flags_str(kOpenFlags[s.flags]).c_str(), kModes[s.aux]);
            if (s.dirfd == DF_FIXFD) d += " (fd fixture " + fd_str(s) + ")";
            d += fmt(" (f: size=%" PRId64 ")", size);
            break;
        case OP_STATX:
            d += fmt(" dirfd=%s path=%s flags=%s mask=%#x buf=%s", kDirfdName[s.dirfd], kPathName[s.path],
                     flag_names(kStatxFlags[s.flags], {{AT_SYMLINK_NOFOLLOW, "AT_SYMLINK_NOFOLLOW"},
                                                       {AT_EMPTY_PATH, "AT_EMPTY_PATH"},
                                                       {AT_STATX_FORCE_SYNC, "AT_STATX_FORCE_SYNC"},
                                                       {AT_STATX_DONT_SYNC, "AT_STATX_DONT_SYNC"},
                                                       {AT_NO_AUTOMOUNT, "AT_NO_AUTOMOUNT"}})
                         .c_str(),
                     kStatxMask[s.aux], kBufName[s.buf]);
            if (s.dirfd == DF_FIXFD) d += " (fd fixture " + fd_str(s) + ")";
            break;
        case OP_FTRUNCATE:
            d += " length=" + off_str(s.off, size);
            break;
        case OP_FALLOCATE:
            d += " mode=" + flag_names(kFallocMode[s.flags], {{FALLOC_FL_KEEP_SIZE, "KEEP_SIZE"},
                                                              {FALLOC_FL_PUNCH_HOLE, "PUNCH_HOLE"},
                                                              {FALLOC_FL_ZERO_RANGE, "ZERO_RANGE"},
                                                              {FALLOC_FL_COLLAPSE_RANGE, "COLLAPSE_RANGE"},
                                                              {FALLOC_FL_INSERT_RANGE, "INSERT_RANGE"}}) +
                 " off=" + off_str(s.off, size) + " len=" + std::to_string(kFallocLen[s.aux]);
            break;
        case OP_POLL:
            d += fmt(" events=%#x timeout_ms=%d", kPollEvents[s.flags], kPollTimeout[s.aux]);
            break;
        case OP_LSEEK:
            d += " off=" + off_str(s.off, size) + fmt(" whence=%d", kWhence[s.flags]);
            break;
        case OP_DATAFLOW:
            d += fmt(" atom1=pread64(cellsrc, &cell, 8, 0) with V=%s in cellsrc, cell=7 before; atom2=%s buf=%s",
                     len_str(kDataflowValue[s.extra]).c_str(), kDataflowName[s.aux], kBufName[s.buf]);
            break;
        default: break;
    }
    return d + " [spec " + hex(s) + "]";
}

// ------------------------------------------------------------------- paths

enum path_id : uint8_t {
    PATH_PLAIN, PATH_DEFAULT, PATH_ASYNC, PATH_NOWAIT, PATH_SYNC, PATH_BUFFERED, PATH_NEVER,
    PATH_CHAIN, PATH_CHAIN_ASYNC, PATH_CHAIN_NOWAIT, PATH_CHAIN_NEVER, PATH_CHAIN2, PATH__COUNT
};
inline const char *const kPathIdName[PATH__COUNT] = {
    "plain syscall", "asys flags=0", "asys ASYS_F_ASYNC", "asys ASYS_F_NOWAIT", "asys ASYS_F_SYNC",
    "asys ASYS_F_BUFFERED", "asys ctx INLINE_NEVER", "chain op (1 atom)",
    "chain op (1 atom SYSLET_ASYNC)", "chain op ASYS_F_NOWAIT", "chain op on INLINE_NEVER ctx",
    "chain op (2 atoms, linked: op [ASYNC|STOP_ON_NEGATIVE] -> pwrite64(aux,\"Z\",1,0) [ASYNC])"};

/// The path's name for this case (a data-flow case runs its own chain on
/// each path).
inline std::string path_name(const case_spec &s, unsigned p) {
    if (p >= PATH__COUNT) return "(between paths)";
    if (s.op != OP_DATAFLOW) return kPathIdName[p];
    switch (p) {
        case PATH_PLAIN: return "plain syscalls in sequence";
        case PATH_ASYNC: return "data-flow chain ASYS_F_ASYNC";
        case PATH_SYNC: return "data-flow chain ASYS_F_SYNC";
        case PATH_CHAIN: return "data-flow chain, no atom flags";
        case PATH_CHAIN_ASYNC: return "data-flow chain, both atoms SYSLET_ASYNC";
        case PATH_CHAIN_NOWAIT: return "data-flow chain ASYS_F_NOWAIT";
        case PATH_CHAIN_NEVER: return "data-flow chain on an INLINE_NEVER ctx";
        case PATH_CHAIN2: return "data-flow chain, second atom SYSLET_ASYNC";
        default: return kPathIdName[p];
    }
}

inline bool path_applies(const case_spec &s, unsigned p) {
    const bool chain = p >= PATH_CHAIN;
    if (s.op == OP_DATAFLOW) return p == PATH_PLAIN || chain || p == PATH_ASYNC || p == PATH_SYNC;
    if (s.op == OP_POLL && chain) return false;  // the op's result is revents, not poll(2)'s count
    if (p == PATH_BUFFERED)
        return s.op == OP_READ || s.op == OP_PREAD || s.op == OP_READV || s.op == OP_PREADV;
    return true;
}

/// The path run_path() is running right now (-1: none); a crash handler
/// reads it to say which path crashed.
inline volatile sig_atomic_t g_current_path = -1;

inline const char *served_name(uint32_t p) {
    switch (p) {
        case ASYS_PATH_INLINE: return "inline";
        case ASYS_PATH_POOL: return "pool";
        case ASYS_PATH_URING: return "io_uring";
        default: return "-";
    }
}

// ----------------------------------------------------------------- helpers

inline long sys(long nr, uint64_t a0 = 0, uint64_t a1 = 0, uint64_t a2 = 0, uint64_t a3 = 0,
                uint64_t a4 = 0, uint64_t a5 = 0) {
    long r = syscall(nr, a0, a1, a2, a3, a4, a5);
    return r == -1 ? -errno : r;
}

inline std::string errstr(long r) {
    if (r >= 0) return std::to_string(r);
    const char *n = strerrorname_np(static_cast<int>(-r));
    return fmt("-%s(%ld)", n ? n : "?", r);
}

constexpr long kUnset = -999999;
constexpr int kCompletionBound = 2;  // seconds a punted op may take before it counts as stuck
constexpr size_t kBuf = 16384;      // the valid user buffer, followed by a guard page
constexpr size_t kPage = 4096;
constexpr size_t kIovEntries = 1025;
constexpr uint8_t kFill = 0xa5;

inline uint8_t buf_byte(size_t i) { return static_cast<uint8_t>((i * 13 + 7) ^ (i >> 8)); }
inline char file_byte(size_t i) { return static_cast<char>('a' + (i * 7 + i / 4096) % 26); }

/// Memory the cases point into: allocated once per process.
struct memory {
    char *vb = nullptr;        // kBuf bytes, then a PROT_NONE guard page
    char *ro = nullptr;        // kBuf read-only bytes, then a guard page
    iovec *iov = nullptr;      // kIovEntries entries, then a guard page
    iovec *iov_ro = nullptr;   // the same, read-only while an op runs
    char *sx = nullptr;        // a page for struct statx
    char *paths = nullptr;     // path strings
    char *paths_ro = nullptr;  // a read-only page holding "f"
    char *hole = nullptr;      // nothing is mapped here (checked before each run)
    size_t iov_bytes = 0;

    static char *map(size_t bytes, size_t guard_pages) {
        const size_t total = bytes + guard_pages * kPage;
        void *p = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) abort();
        if (guard_pages) mprotect(static_cast<char *>(p) + bytes, guard_pages * kPage, PROT_NONE);
        return static_cast<char *>(p);
    }
    void init() {
        vb = map(kBuf, 1);
        ro = map(kBuf, 1);
        for (size_t i = 0; i < kBuf; ++i) ro[i] = static_cast<char>('R' + i % 7);
        mprotect(ro, kBuf, PROT_READ);
        iov_bytes = (kIovEntries * sizeof(iovec) + kPage - 1) / kPage * kPage;
        iov = reinterpret_cast<iovec *>(map(iov_bytes, 1));
        iov_ro = reinterpret_cast<iovec *>(map(iov_bytes, 1));
        sx = map(kPage, 1);
        paths = map(2 * kPage, 1);
        paths_ro = map(kPage, 1);
        strcpy(paths_ro, "f");
        mprotect(paths_ro, kPage, PROT_READ);
        repick_hole();
    }
    void repick_hole() {
        // A hole of several pages inside a PROT_NONE reservation: mmap, then munmap.
        char *r = map(0, 18);
        hole = r + kPage;
        munmap(hole, 16 * kPage);
    }
    bool hole_unmapped() const {
        unsigned char v[16];
        return mincore(hole, 16 * kPage, v) == -1 && errno == ENOMEM;
    }
    uint64_t buf_ptr(unsigned b, char *valid) const {
        switch (b) {
            case B_VALID: return reinterpret_cast<uint64_t>(valid);
            case B_ODD: return reinterpret_cast<uint64_t>(valid + 1);
            case B_NULL: return 0;
            case B_UNMAPPED: return reinterpret_cast<uint64_t>(hole);
            case B_LOW: return 0x1000;
            case B_RO: return reinterpret_cast<uint64_t>(ro);
            default: return 0xffff800000000000ull;
        }
    }
};

/// A file or directory entry of the run directory, after the op.
struct file_rec {
    std::string name;
    char type;
    int64_t size;
    std::string data;  // a regular file's head and tail; a link's target
    bool operator==(const file_rec &) const = default;
};

/// Everything observable after one run.
struct effects {
    bool na = false;          // NOWAIT answered -EAGAIN: not applicable
    std::string refused;      // submit refused (rc < 0) where it must accept
    std::string hung;         // accepted, but stuck until cancelled
    uint32_t served = 0;      // ASYS_PATH_*, 0 for the plain call
    long ret = kUnset;        // the result (an OPENAT fd is reported as "fd", see openinfo)
    long ret2 = kUnset;       // the second atom's result (two-atom chains)
    std::string chain;        // chain bookkeeping problems (op result, *last_out)
    std::string openinfo;     // what an OPENAT result refers to
    std::string buffer;       // the user buffer after
    std::string statx;        // normalized struct statx
    long pos = 0;             // lseek(fd, 0, SEEK_CUR) after
    int fd_state = 0;         // 0 closed, 1 still the fixture's object, 2 something else
    std::string rest;         // bytes still readable at the fd's own end
    std::string peer;         // bytes that reached the other end
    std::vector<file_rec> files;
    uint64_t cell = 0;        // data-flow cell after
};

// ------------------------------------------------------------- the runner

struct owned_fd {
    int fd;
    dev_t dev;
    ino_t ino;
};

struct fixture {
    int fd = -1;            // the fd under test
    int other = -1;         // socket peer, or the pipe end the op does not use
    int dirfd = -1;         // OPENAT/STATX dirfd value
    int aux = -1;           // two-atom chains: the second atom's file
    int cellsrc = -1;       // data-flow chains: the first atom's file
    int rundir_fd = -1, subdir_fd = -1;
    int64_t size = 0;
    std::vector<owned_fd> owned;
};

class runner {
public:
    struct mismatch {
        unsigned path;
        std::string field;  // which effect differed first
        std::string text;   // the full one-line report
    };
    struct result {
        std::string skipped;  // non-empty: the case was not run, and why
        std::vector<mismatch> mismatches;
        unsigned runs = 0, not_applicable = 0;
    };

    /// root: an existing directory for fixtures (must allow O_DIRECT unless
    /// odirect_ok is false). ctx_default and ctx_never are the contexts.
    runner(std::string root, bool odirect_ok, asys_ctx *ctx_default, asys_ctx *ctx_never)
        : root_(std::move(root)), rundir_(root_ + "/run"), odirect_ok_(odirect_ok),
          d_(ctx_default), n_(ctx_never) {
        mem_.init();
        home_ = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        file_data_.resize(kSizes[count_of(kSizes) - 1]);
        for (size_t i = 0; i < file_data_.size(); ++i) file_data_[i] = file_byte(i);
        buf_init_.resize(kBuf);
        for (size_t i = 0; i < kBuf; ++i) buf_init_[i] = static_cast<char>(buf_byte(i));
        signal(SIGPIPE, SIG_IGN);
        signal(SIGXFSZ, SIG_IGN);
    }

    ~runner() {
        if (home_ >= 0) close(home_);
    }
    runner(const runner &) = delete;
    runner &operator=(const runner &) = delete;

    /// Called before each path runs (a progress signal for a watchdog).
    void on_path(void (*fn)(unsigned path, void *arg), void *arg) {
        on_path_ = fn;
        on_path_arg_ = arg;
    }

    /// Runs one case; the working directory is the caller's again after.
    result run_case(case_spec s) {
        result out = run_case_here(s);
        if (home_ >= 0 && fchdir(home_) != 0) abort();
        return out;
    }

private:
    result run_case_here(case_spec s) {
        normalize(s);
        result out;
        if (const char *why = static_skip(s)) {
            out.skipped = why;
            return out;
        }
        effects ref;
        if (!run_path(s, PATH_PLAIN, ref, out.skipped)) return out;
        effects again;
        if (!run_path(s, PATH_PLAIN, again, out.skipped)) return out;
        ++out.runs;
        if (auto d = diff(s, ref, again); !d.empty()) {
            out.skipped = "the plain call is not reproducible on identical fixtures (" + d[0].first +
                          ": " + d[0].second + "); this is a harness defect";
            return out;
        }
        effects ref2;  // two-atom chains: the plain calls in sequence
        bool have_ref2 = false;
        for (unsigned p = PATH_DEFAULT; p < PATH__COUNT; ++p) {
            if (!path_applies(s, p)) continue;
            if (p == PATH_BUFFERED && !(s.fd == FD_ODIRECT || is_reg(s.fd))) continue;
            effects e;
            std::string skip;
            if (!run_path(s, p, e, skip)) {
                out.mismatches.push_back({p, "harness", describe(s) + " | path=" + path_name(s, p) + " | " + skip});
                continue;
            }
            ++out.runs;
            if (e.na && e.chain.empty()) {
                ++out.not_applicable;
                continue;
            }
            const effects *want = &ref;
            if (p == PATH_CHAIN2 && s.op != OP_DATAFLOW) {
                if (!have_ref2) {
                    if (!run_path(s, PATH_PLAIN, ref2, skip, /*sequence=*/true)) continue;
                    have_ref2 = true;
                }
                want = &ref2;
            }
            auto d = e.na ? std::vector<std::pair<std::string, std::string>>{} : diff(s, *want, e);
            if (!e.refused.empty()) d.insert(d.begin(), {"submit", e.refused});
            if (!e.hung.empty()) d.insert(d.begin(), {"hang", e.hung});
            if (!e.chain.empty()) d.insert(d.begin(), {"chain bookkeeping", e.chain});
            if (d.empty()) continue;
            std::string text = describe(s) + " | path=" + path_name(s, p) + " (served by " +
                               served_name(e.served) + ")";
            for (auto &[field, what] : d) text += " | " + field + ": " + what;
            out.mismatches.push_back({p, d[0].first, text});
        }
        return out;
    }

    // ---------------------------------------------------------- skipping

    /// Combinations whose plain call would block forever, or would need
    /// gigabytes of disk: not run (the blocking detector covers blocking).
    const char *static_skip(const case_spec &s) const {
        if ((s.fd == FD_ODIRECT || (s.op == OP_OPENAT && (kOpenFlags[s.flags] & O_DIRECT))) && !odirect_ok_)
            return "O_DIRECT unsupported by the fixture filesystem";
        const bool empty_stream = is_stream(s.fd) && s.fd != FD_PIPE_W && kQueued[s.queued] == 0 &&
                                  !(s.eof && (s.fd == FD_PIPE_R || s.fd == FD_SOCK_STREAM));
        if (empty_stream && uses_fd(s.op)) {
            const bool sock = s.fd == FD_SOCK_STREAM || s.fd == FD_SOCK_DGRAM;
            const bool blocking_read = s.op == OP_READ || s.op == OP_READV ||
                                       (s.op == OP_PREADV && s.off == OFF_M1) ||
                                       (s.op == OP_RECV && sock && !(kRecvFlags[s.flags] & (MSG_DONTWAIT | MSG_OOB)));
            if (blocking_read) return "read of an empty pipe/socket would block forever";
        }
        if (s.op == OP_RECV && s.fd == FD_SOCK_STREAM && (kRecvFlags[s.flags] & MSG_WAITALL) && !s.eof &&
            kLens[s.len] > kQueued[s.queued])
            return "MSG_WAITALL for more than is queued would block forever";
        if (s.op == OP_OPENAT && s.path == PA_FIFO && (s.dirfd == DF_CWD || s.dirfd == DF_RUNDIR)) {
            const int f = kOpenFlags[s.flags];
            if (!(f & (O_NONBLOCK | O_PATH)) && (f & O_ACCMODE) != O_RDWR)
                return "opening a FIFO without a partner blocks (test_nowait_block covers it)";
        }
        if (s.op == OP_FALLOCATE) {
            const int m = kFallocMode[s.flags];
            const bool allocates = !(m & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_COLLAPSE_RANGE)) && m != 0x100;
            if (allocates && kFallocLen[s.aux] == (int64_t{1} << 32))
                return "would allocate 4 GiB of disk per run";
        }
        if (s.op == OP_DATAFLOW && !(is_reg(s.fd))) return "data-flow chains run on regular files";
        return nullptr;
    }

    // ---------------------------------------------------------- fixtures

    /// The entries every run directory holds. Runs reuse them (files are
    /// rewritten with O_TRUNC: the same bytes in the same state) instead of
    /// deleting and recreating them: inode churn makes ext4's allocator slow.
    static bool standard_entry(const std::string &rel, unsigned char type) {
        if (type == DT_REG) return rel == "f" || rel == "aux" || rel == "cellsrc" || rel == "dir/g";
        if (type == DT_DIR) return rel == "dir";
        if (type == DT_FIFO) return rel == "fifo";
        if (type == DT_LNK) return rel == "link" || rel == "dang";
        return false;
    }

    /// Removes everything inside `path` (not `path` itself) but the
    /// standard entries.
    static void clear_dir(const std::string &path, const std::string &prefix = "") {
        DIR *d = opendir(path.c_str());
        if (!d) return;
        std::vector<std::pair<std::string, unsigned char>> names;
        while (dirent *e = readdir(d))
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) names.push_back({e->d_name, e->d_type});
        closedir(d);
        for (auto &[n, type] : names) {
            const std::string p = path + "/" + n;
            if (type == DT_DIR) clear_dir(p, prefix + n + "/");
            if (standard_entry(prefix + n, type)) continue;
            if (type == DT_DIR) rmdir(p.c_str());
            else unlink(p.c_str());
        }
    }

    /// Makes `name` a regular file holding exactly data[0, n). A file left
    /// by the previous run that still has that content, size and block
    /// count is kept; anything else is replaced by a new file. (Rewriting
    /// in place is no option: ext4 flushes a file truncated to zero and
    /// rewritten when it is closed, a disk write per run.)
    void ensure_file(const char *name, const char *data, size_t n) {
        int fd = open(name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (fd >= 0) {
            struct stat st;
            bool same = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && static_cast<size_t>(st.st_size) == n &&
                        (st.st_mode & 07777) == 0644;
            if (same) {
                auto it = fresh_blocks_.find(name);
                same = it != fresh_blocks_.end() && it->second.first == n && it->second.second == st.st_blocks;
            }
            if (same && n) {
                check_buf_.resize(n + 1);
                same = pread(fd, check_buf_.data(), n + 1, 0) == static_cast<ssize_t>(n) &&
                       memcmp(check_buf_.data(), data, n) == 0;
            }
            close(fd);
            if (same) return;
            unlink(name);
        }
        write_file(name, data, n);
        struct stat st;
        if (stat(name, &st) == 0) fresh_blocks_[name] = {n, st.st_blocks};
    }

    static void write_file(const char *name, const char *data, size_t n) {
        int fd = open(name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0) {
            fprintf(stderr, "oracle: cannot create fixture %s: %s\n", name, strerror(errno));
            abort();
        }
        if (n && write(fd, data, n) != static_cast<ssize_t>(n)) abort();
        close(fd);
    }

    void own(fixture &fx, int fd) {
        struct stat st;
        if (fd < 0 || fstat(fd, &st) != 0) {
            fprintf(stderr, "oracle: fixture fd %d: %s\n", fd, strerror(errno));
            abort();
        }
        fx.owned.push_back({fd, st.st_dev, st.st_ino});
    }

    /// A descriptor number nothing uses right now.
    static int free_fd_number() {
        for (int n = 900; n < 1000; ++n)
            if (fcntl(n, F_GETFD) == -1 && errno == EBADF) return n;
        abort();
    }

    void build(const case_spec &s, fixture &fx, bool need_aux) {
        clear_dir(rundir_);
        if ((mkdir(rundir_.c_str(), 0755) != 0 && errno != EEXIST) || chdir(rundir_.c_str()) != 0) {
            fprintf(stderr, "oracle: rundir %s: %s\n", rundir_.c_str(), strerror(errno));
            abort();
        }
        // Every run directory: f (the file), dir/g, fifo, link -> f,
        // dang -> nowhere, aux (two-atom chains), cellsrc (data flow).
        fx.size = static_cast<int64_t>(kSizes[s.size]);
        ensure_file("f", file_data_.data(), static_cast<size_t>(fx.size));
        if (mkfifo("fifo", 0644) != 0 && errno != EEXIST) abort();
        if (mkdir("dir", 0755) != 0 && errno != EEXIST) abort();
        ensure_file("dir/g", file_data_.data(), 10);
        if (symlink("f", "link") != 0 && errno != EEXIST) abort();
        if (symlink("nowhere", "dang") != 0 && errno != EEXIST) abort();
        ensure_file("aux", "aaaaaaaaaaaaaaaa", 16);
        const uint64_t v = kDataflowValue[s.op == OP_DATAFLOW ? s.extra : 0];
        ensure_file("cellsrc", reinterpret_cast<const char *>(&v), 8);
        if (need_aux) {
            fx.aux = open("aux", O_RDWR | O_CLOEXEC);
            own(fx, fx.aux);
        }
        if (s.op == OP_DATAFLOW) {
            fx.cellsrc = open("cellsrc", O_RDONLY | O_CLOEXEC);
            own(fx, fx.cellsrc);
        }
        const bool names = s.op == OP_OPENAT || s.op == OP_STATX;
        const int64_t pos = position_value(s.pos, fx.size);
        int fd = -1;
        switch (s.fd) {
            case FD_CLOSED: fd = free_fd_number(); break;
            case FD_NEG1: fd = -1; break;
            case FD_REG: fd = open("f", O_RDWR | O_CLOEXEC); break;
            case FD_REG_RDONLY: fd = open("f", O_RDONLY | O_CLOEXEC); break;
            case FD_REG_WRONLY: fd = open("f", O_WRONLY | O_CLOEXEC); break;
            case FD_REG_APPEND: fd = open("f", O_RDWR | O_APPEND | O_CLOEXEC); break;
            case FD_ODIRECT: fd = open("f", O_RDWR | O_DIRECT | O_CLOEXEC); break;
            case FD_FIFO: fd = open("fifo", O_RDWR | O_CLOEXEC); break;
            case FD_SOCK_STREAM:
            case FD_SOCK_DGRAM: {
                int sv[2];
                if (socketpair(AF_UNIX, (s.fd == FD_SOCK_STREAM ? SOCK_STREAM : SOCK_DGRAM) | SOCK_CLOEXEC, 0, sv))
                    abort();
                fd = sv[0];
                fx.other = sv[1];
                break;
            }
            case FD_PIPE_R:
            case FD_PIPE_W: {
                int p[2];
                if (pipe2(p, O_CLOEXEC)) abort();
                fd = s.fd == FD_PIPE_R ? p[0] : p[1];
                fx.other = s.fd == FD_PIPE_R ? p[1] : p[0];
                break;
            }
            case FD_DIR: fd = open("dir", O_RDONLY | O_DIRECTORY | O_CLOEXEC); break;
            case FD_DEVNULL: fd = open("/dev/null", O_RDWR | O_CLOEXEC); break;
            case FD_DEVZERO: fd = open("/dev/zero", O_RDWR | O_CLOEXEC); break;
        }
        if (s.fd >= FD_REG) own(fx, fd);
        if (fx.other >= 0) own(fx, fx.other);
        if (is_reg(s.fd) && lseek(fd, pos, SEEK_SET) != pos) abort();
        if (s.fd == FD_FIFO) {
            // The named FIFO keeps its bytes while anyone holds it open: a
            // reference an earlier run's async op still held (the kernel
            // drops it after the completion is posted) would carry that
            // run's bytes into this one. Start from an empty FIFO.
            char sink[4096];
            const int fl = fcntl(fd, F_GETFL);
            fcntl(fd, F_SETFL, fl | O_NONBLOCK);
            while (read(fd, sink, sizeof sink) > 0) {
            }
            fcntl(fd, F_SETFL, fl);
        }
        // Queued bytes.
        const size_t q = kQueued[s.queued];
        if (q && is_stream(s.fd)) {
            std::string data(q, '\0');
            for (size_t i = 0; i < q; ++i) data[i] = static_cast<char>('A' + i % 23);
            const int w = s.fd == FD_FIFO ? fd : s.fd == FD_PIPE_R ? fx.other : s.fd == FD_PIPE_W ? fd : fx.other;
            if (write(w, data.data(), q) != static_cast<ssize_t>(q)) abort();
            if (s.fd == FD_SOCK_DGRAM && write(w, "seven!!", 7) != 7) abort();
        }
        if (s.eof) {
            if (s.fd == FD_PIPE_R || s.fd == FD_PIPE_W) {
                close(fx.other);
                fx.owned.pop_back();
                fx.other = -1;
            } else if (s.fd == FD_SOCK_STREAM) {
                shutdown(fx.other, SHUT_WR);
            }
        }
        fx.fd = fd;
        fx.rundir_fd = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        own(fx, fx.rundir_fd);
        if (names) {
            fx.subdir_fd = open("dir", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            own(fx, fx.subdir_fd);
        }
        switch (s.dirfd) {
            case DF_CWD: fx.dirfd = AT_FDCWD; break;
            case DF_RUNDIR: fx.dirfd = fx.rundir_fd; break;
            case DF_CLOSED: fx.dirfd = free_fd_number(); break;
            case DF_NEG1: fx.dirfd = -1; break;
            case DF_FIXFD: fx.dirfd = fd; break;
            default: fx.dirfd = fx.subdir_fd; break;
        }
    }

    static void teardown(fixture &fx) {
        for (auto &o : fx.owned) {
            struct stat st;
            if (fstat(o.fd, &st) == 0 && st.st_dev == o.dev && st.st_ino == o.ino) close(o.fd);
        }
        fx.owned.clear();
    }

    // ---------------------------------------------------------- arguments

    const char *path_str(unsigned p) {
        char *base = mem_.paths;
        switch (p) {
            case PA_F: strcpy(base, "f"); break;
            case PA_DIR: strcpy(base, "dir"); break;
            case PA_FIFO: strcpy(base, "fifo"); break;
            case PA_LINK: strcpy(base, "link"); break;
            case PA_MISSING: strcpy(base, "missing"); break;
            case PA_EMPTY: base[0] = 0; break;
            case PA_NULL: return nullptr;
            case PA_UNMAPPED: return mem_.hole;
            case PA_LOW: return reinterpret_cast<const char *>(0x1000);
            case PA_LONG:
                memset(base, 'a', 4096 + 10);
                base[4096 + 10] = 0;
                break;
            case PA_ABS: snprintf(base, 2 * kPage, "%s/f", rundir_.c_str()); break;
            case PA_DOTDOT: strcpy(base, "dir/../f"); break;
            case PA_TRAIL: strcpy(base, "f/"); break;
            case PA_RO: return mem_.paths_ro;
            case PA_DANGLING: strcpy(base, "dang"); break;
            default: strcpy(base, "dir/g"); break;
        }
        return base;
    }

    /// Fills the iovec array the case points at; returns the pointer to pass.
    uint64_t prepare_iov(const case_spec &s) {
        mprotect(mem_.iov_ro, mem_.iov_bytes, PROT_READ | PROT_WRITE);
        for (iovec *arr : {mem_.iov, mem_.iov_ro}) {
            arr[0].iov_base = reinterpret_cast<void *>(mem_.buf_ptr(s.buf, mem_.vb));
            arr[0].iov_len = kLens[s.len];
            for (size_t i = 1; i < kIovEntries; ++i) {
                arr[i].iov_base = mem_.vb + 8192 + 8 * ((i - 1) % 1024);
                arr[i].iov_len = 8;
            }
            if (s.iov == IOV_BADENTRY) arr[1].iov_base = reinterpret_cast<void *>(0x1000);
        }
        mprotect(mem_.iov_ro, mem_.iov_bytes, PROT_READ);
        switch (s.iov) {
            case IOV_VALID: case IOV_BADENTRY: return reinterpret_cast<uint64_t>(mem_.iov);
            case IOV_NULL: return 0;
            case IOV_0X10: return 0x10;
            case IOV_UNMAPPED: return reinterpret_cast<uint64_t>(mem_.hole);
            default: return reinterpret_cast<uint64_t>(mem_.iov_ro);
        }
    }

    struct call {
        uint32_t opcode;    // asys opcode
        long sysnr;         // the syscall an atom runs (-1: none)
        uint64_t a[6];      // asys op args
        uint64_t atom[6];   // the atom's syscall args
    };

    call make_call(const case_spec &s, const fixture &fx) {
        call c{};
        const auto fd = static_cast<uint64_t>(static_cast<int64_t>(fx.fd));
        const uint64_t buf = mem_.buf_ptr(s.buf, mem_.vb);
        const uint64_t len = kLens[s.len];
        const auto off = static_cast<uint64_t>(offset_value(s.off, fx.size));
        const uint64_t iov = vectored(s.op) ? prepare_iov(s) : 0;
        const auto cnt = static_cast<uint64_t>(static_cast<int64_t>(kIovCnt[s.iovcnt]));
        const auto dirfd = static_cast<uint64_t>(static_cast<int64_t>(fx.dirfd));
        auto set = [&](uint32_t op, long nr, std::initializer_list<uint64_t> args) {
            c.opcode = op;
            c.sysnr = nr;
            unsigned i = 0;
            for (uint64_t v : args) c.a[i++] = v;
            for (unsigned k = 0; k < 6; ++k) c.atom[k] = c.a[k];
        };
        switch (s.op) {
            case OP_READ: set(ASYS_OP_READ, SYS_read, {fd, buf, len}); break;
            case OP_PREAD: set(ASYS_OP_PREAD, SYS_pread64, {fd, buf, len, off}); break;
            case OP_READV: set(ASYS_OP_READV, SYS_readv, {fd, iov, cnt}); break;
            case OP_PREADV:
                set(ASYS_OP_PREADV, SYS_preadv2, {fd, iov, cnt, off, static_cast<uint64_t>(kRwf[s.flags])});
                c.atom[4] = 0;  // preadv2(fd, iov, cnt, pos_l, pos_h, flags)
                c.atom[5] = static_cast<uint64_t>(kRwf[s.flags]);
                break;
            case OP_WRITE: set(ASYS_OP_WRITE, SYS_write, {fd, buf, len}); break;
            case OP_PWRITE: set(ASYS_OP_PWRITE, SYS_pwrite64, {fd, buf, len, off}); break;
            case OP_WRITEV: set(ASYS_OP_WRITEV, SYS_writev, {fd, iov, cnt}); break;
            case OP_PWRITEV:
                set(ASYS_OP_PWRITEV, SYS_pwritev2, {fd, iov, cnt, off, static_cast<uint64_t>(kRwf[s.flags])});
                c.atom[4] = 0;
                c.atom[5] = static_cast<uint64_t>(kRwf[s.flags]);
                break;
            case OP_OPENAT:
                set(ASYS_OP_OPENAT, SYS_openat,
                    {dirfd, reinterpret_cast<uint64_t>(path_str(s.path)),
                     static_cast<uint64_t>(static_cast<int64_t>(kOpenFlags[s.flags])), kModes[s.aux]});
                break;
            case OP_CLOSE: set(ASYS_OP_CLOSE, SYS_close, {fd}); break;
            case OP_FSYNC: set(ASYS_OP_FSYNC, SYS_fsync, {fd}); break;
            case OP_FDATASYNC: set(ASYS_OP_FDATASYNC, SYS_fdatasync, {fd}); break;
            case OP_STATX: {
                const uint64_t sb = mem_.buf_ptr(s.buf, mem_.sx);
                set(ASYS_OP_STATX, SYS_statx,
                    {dirfd, reinterpret_cast<uint64_t>(path_str(s.path)),
                     static_cast<uint64_t>(static_cast<int64_t>(kStatxFlags[s.flags])), kStatxMask[s.aux], sb});
                break;
            }
            case OP_FTRUNCATE: set(ASYS_OP_FTRUNCATE, SYS_ftruncate, {fd, off}); break;
            case OP_FALLOCATE:
                set(ASYS_OP_FALLOCATE, SYS_fallocate,
                    {fd, static_cast<uint64_t>(kFallocMode[s.flags]), off,
                     static_cast<uint64_t>(kFallocLen[s.aux])});
                break;
            case OP_RECV:
                set(ASYS_OP_RECV, SYS_recvfrom, {fd, buf, len, static_cast<uint64_t>(kRecvFlags[s.flags]), 0, 0});
                break;
            case OP_SEND:
                set(ASYS_OP_SEND, SYS_sendto, {fd, buf, len, static_cast<uint64_t>(kSendFlags[s.flags]), 0, 0});
                break;
            case OP_POLL:
                set(ASYS_OP_POLL, -1,
                    {fd, kPollEvents[s.flags], static_cast<uint64_t>(static_cast<int64_t>(kPollTimeout[s.aux]))});
                break;
            case OP_LSEEK:
                set(ASYS_OP_SYSCALL, SYS_lseek, {fd, off, static_cast<uint64_t>(kWhence[s.flags])});
                break;
            case OP_PREAD64: set(ASYS_OP_SYSCALL, SYS_pread64, {fd, buf, len, off}); break;
            default: break;
        }
        return c;
    }

    static long plain_call(const call &c) {
        if (c.opcode == ASYS_OP_POLL) {
            struct pollfd pfd{static_cast<int>(c.a[0]), static_cast<short>(c.a[1]), 0};
            const auto ms = static_cast<int64_t>(c.a[2]);
            struct timespec ts{ms / 1000, (ms % 1000) * 1000000};
            long r = sys(SYS_ppoll, reinterpret_cast<uint64_t>(&pfd), 1, ms < 0 ? 0 : reinterpret_cast<uint64_t>(&ts), 0, 8);
            return r > 0 ? static_cast<unsigned short>(pfd.revents) : r;
        }
        return sys(c.sysnr, c.atom[0], c.atom[1], c.atom[2], c.atom[3], c.atom[4], c.atom[5]);
    }

    // ---------------------------------------------------------- asys

    struct submitted {
        int rc = 0;
        long res = kUnset;
        uint32_t served = 0;
        std::string hung;  // accepted, but no completion within the bound
    };

    submitted submit(asys_ctx *ctx, asys_op &op, const case_spec &s, unsigned p) {
        submitted out;
        op.ret_ptr = &out.res;
        op.user_data = ++seq_;
        out.rc = asys_submit(ctx, &op);
        if (out.rc == ASYS_DONE) {
            out.served = ASYS_PATH_INLINE;
        } else if (out.rc == 0) {
            asys_cqe cqe{};
            struct timespec ts{kCompletionBound, 0};
            int n = asys_wait(ctx, 1, &ts, &cqe, 1);
            if (n != 1) {
                // Stuck (e.g. a read that waits where the plain call
                // failed at once): cancel it, so its fixture can go.
                const int c = asys_cancel(ctx, op.user_data);
                struct timespec again{kCompletionBound, 0};
                n = asys_wait(ctx, 1, &again, &cqe, 1);
                if (n != 1) {
                    fprintf(stderr, "ORACLE HANG: %s | path=%s: accepted, no completion, and none after asys_cancel (%d)\n",
                            describe(s).c_str(), path_name(s, p).c_str(), c);
                    abort();
                }
                out.hung = fmt("accepted but still running after %d s (cancelled: %s)", kCompletionBound,
                               errstr(cqe.res).c_str());
            }
            out.served = cqe.path;
            if (cqe.res != out.res) out.res = kUnset - 1;  // reported as a result mismatch
        }
        return out;
    }

    /// Runs the case on path p on a fresh fixture and captures its effects.
    /// sequence: the plain reference of a two-atom chain. Returns false (and
    /// why) if the run could not take place.
    bool run_path(const case_spec &s, unsigned p, effects &e, std::string &why, bool sequence = false) {
        if (!mem_.hole_unmapped()) mem_.repick_hole();
        if (on_path_) on_path_(p, on_path_arg_);
        g_current_path = static_cast<sig_atomic_t>(p);
        fixture fx;
        const bool chain2 = (p == PATH_CHAIN2 || sequence) && s.op != OP_DATAFLOW;
        build(s, fx, chain2);
        memcpy(mem_.vb, buf_init_.data(), kBuf);
        memset(mem_.sx, kFill, kPage);
        cell_ = 7;
        call c = make_call(s, fx);
        if (s.op == OP_POLL && kPollTimeout[s.aux] < 0 && p == PATH_PLAIN) {
            struct pollfd pfd{fx.fd, static_cast<short>(c.a[1]), 0};
            if (poll(&pfd, 1, 0) <= 0) {
                teardown(fx);
                why = "poll with no timeout on a descriptor with no event would block forever";
                return false;
            }
        }
        if (s.op == OP_DATAFLOW) run_dataflow(s, p, fx, e);
        else if (p == PATH_PLAIN) run_plain(c, fx, e, sequence);
        else if (p >= PATH_CHAIN) run_chain(s, p, c, fx, e);
        else run_op(s, p, c, e);
        g_current_path = -1;
        capture(s, fx, e);
        teardown(fx);
        return true;
    }

    void run_plain(const call &c, const fixture &fx, effects &e, bool sequence) {
        e.ret = plain_call(c);
        if (sequence) e.ret2 = e.ret >= 0 ? sys(SYS_pwrite64, static_cast<uint64_t>(fx.aux),
                                               reinterpret_cast<uint64_t>("Z"), 1, 0) : kUnset;
    }

    void run_op(const case_spec &s, unsigned p, const call &c, effects &e) {
        asys_op op{};
        op.opcode = c.opcode;
        for (unsigned i = 0; i < 6; ++i) op.args[i] = c.a[i];
        if (c.opcode == ASYS_OP_SYSCALL) op.nr = c.sysnr;
        static const uint32_t kFlags[] = {0, 0, ASYS_F_ASYNC, ASYS_F_NOWAIT, ASYS_F_SYNC, ASYS_F_BUFFERED, 0};
        op.flags = kFlags[p];
        submitted r = submit(p == PATH_NEVER ? n_ : d_, op, s, p);
        if (r.rc == -EAGAIN && p == PATH_NOWAIT) {
            e.na = true;
            return;
        }
        if (r.rc < 0) e.refused = "asys_submit returned " + errstr(r.rc);
        e.hung = r.hung;
        e.served = r.served;
        e.ret = r.res;
    }

    void fill_atom(syslet_uatom &a, unsigned long nr, const uint64_t (&args)[6], unsigned long *cells,
                   unsigned long flags, long *ret) {
        a = syslet_uatom{};
        a.nr = nr;
        a.flags = flags;
        a.ret_ptr = ret;
        for (unsigned i = 0; i < 6; ++i) {
            cells[i] = args[i];
            a.arg_ptr[i] = &cells[i];
        }
    }

    void run_chain(const case_spec &s, unsigned p, const call &c, const fixture &fx, effects &e) {
        long r1 = kUnset, r2 = kUnset;
        unsigned long flags1 = p == PATH_CHAIN_ASYNC ? SYSLET_ASYNC : 0;
        if (p == PATH_CHAIN2) flags1 = SYSLET_ASYNC | SYSLET_STOP_ON_NEGATIVE;
        fill_atom(atoms_[0], static_cast<unsigned long>(c.sysnr), c.atom, cells_[0], flags1, &r1);
        if (p == PATH_CHAIN2) {
            const uint64_t a2[6] = {static_cast<uint64_t>(fx.aux), reinterpret_cast<uint64_t>("Z"), 1, 0, 0, 0};
            fill_atom(atoms_[1], SYS_pwrite64, a2, cells_[1], SYSLET_ASYNC, &r2);
            atoms_[0].next = &atoms_[1];
        }
        syslet_uatom *last = nullptr;
        asys_op op{};
        asys_prep_chain(&op, &atoms_[0], &last);
        op.flags = p == PATH_CHAIN_NOWAIT ? ASYS_F_NOWAIT : 0;
        submitted r = submit(p == PATH_CHAIN_NEVER ? n_ : d_, op, s, p);
        if (r.rc == -EAGAIN && p == PATH_CHAIN_NOWAIT) {
            e.na = true;
            if (last != &atoms_[0]) e.chain = "NOWAIT -EAGAIN but *last_out is not the atom that did not run";
            return;
        }
        if (r.rc < 0) e.refused = "asys_submit returned " + errstr(r.rc);
        e.hung = r.hung;
        e.served = r.served;
        e.ret = r1;
        if (p == PATH_CHAIN2) {
            e.ret2 = r2;
            const bool stopped = r1 < 0;
            syslet_uatom *want_last = stopped ? &atoms_[0] : &atoms_[1];
            const long want_res = stopped ? r1 : r2;
            if (last != want_last || r.res != want_res)
                e.chain = fmt("op result %s, *last_out atom %d; expected %s and atom %d", errstr(r.res).c_str(),
                              last == &atoms_[0] ? 1 : last == &atoms_[1] ? 2 : -1, errstr(want_res).c_str(),
                              stopped ? 1 : 2);
        } else if (last != &atoms_[0] || r.res != r1) {
            e.chain = fmt("op result %s, *last_out %s; expected the atom's result %s and the atom",
                          errstr(r.res).c_str(), last == &atoms_[0] ? "the atom" : "not the atom",
                          errstr(r1).c_str());
        }
    }

    void run_dataflow(const case_spec &s, unsigned p, const fixture &fx, effects &e) {
        const uint64_t buf = mem_.buf_ptr(s.buf, mem_.vb);
        const auto fd = static_cast<uint64_t>(fx.fd);
        uint64_t a1[6] = {static_cast<uint64_t>(fx.cellsrc), reinterpret_cast<uint64_t>(&cell_), 8, 0, 0, 0};
        uint64_t a2[6] = {fd, buf, 0, 0, 0, 0};
        long nr2 = SYS_pwrite64;
        int from_cell = 2;
        switch (s.aux) {
            case 0: break;
            case 1: nr2 = SYS_pread64; break;
            case 2: nr2 = SYS_pread64; a2[2] = 4096; from_cell = 3; break;
            default: nr2 = SYS_write; break;
        }
        if (p == PATH_PLAIN) {
            e.ret = sys(SYS_pread64, a1[0], a1[1], a1[2], a1[3]);
            if (e.ret >= 0) {
                a2[from_cell] = cell_;
                e.ret2 = sys(nr2, a2[0], a2[1], a2[2], a2[3]);
            }
            e.cell = cell_;
            return;
        }
        long r1 = kUnset, r2 = kUnset;
        unsigned long f1 = SYSLET_STOP_ON_NEGATIVE, f2 = 0;
        if (p == PATH_CHAIN_ASYNC) f1 |= SYSLET_ASYNC, f2 = SYSLET_ASYNC;
        if (p == PATH_CHAIN2) f2 = SYSLET_ASYNC;
        fill_atom(atoms_[0], SYS_pread64, a1, cells_[0], f1, &r1);
        fill_atom(atoms_[1], static_cast<unsigned long>(nr2), a2, cells_[1], f2, &r2);
        atoms_[1].arg_ptr[from_cell] = reinterpret_cast<unsigned long *>(&cell_);
        atoms_[0].next = &atoms_[1];
        syslet_uatom *last = nullptr;
        asys_op op{};
        asys_prep_chain(&op, &atoms_[0], &last);
        op.flags = p == PATH_CHAIN_NOWAIT ? ASYS_F_NOWAIT : p == PATH_ASYNC ? ASYS_F_ASYNC
                 : p == PATH_SYNC ? ASYS_F_SYNC : 0;
        submitted r = submit(p == PATH_CHAIN_NEVER ? n_ : d_, op, s, p);
        e.cell = cell_;
        if (r.rc == -EAGAIN && p == PATH_CHAIN_NOWAIT) {
            e.na = true;
            return;
        }
        if (r.rc < 0) e.refused = "asys_submit returned " + errstr(r.rc);
        e.hung = r.hung;
        e.served = r.served;
        e.ret = r1;
        e.ret2 = r2;
        const bool stopped = r1 < 0;
        if (last != (stopped ? &atoms_[0] : &atoms_[1]) || r.res != (stopped ? r1 : r2))
            e.chain = fmt("op result %s, *last_out atom %d", errstr(r.res).c_str(),
                          last == &atoms_[0] ? 1 : last == &atoms_[1] ? 2 : -1);
    }

    // ---------------------------------------------------------- effects

    /// Everything readable at fd now, without blocking. Datagrams are
    /// separated by "|" (an empty one reads as "<empty>").
    static std::string drain(int fd, bool sock, bool dgram = false) {
        std::string out;
        if (fd < 0) return out;
        if (!sock) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        static char b[70000];
        for (int k = 0; k < 1000; ++k) {
            const ssize_t n = sock ? recv(fd, b, sizeof b, MSG_DONTWAIT) : read(fd, b, sizeof b);
            if (n < 0) {
                if (errno != EAGAIN) out += fmt("<%s>", strerrorname_np(errno));
                break;
            }
            if (n == 0 && dgram) {
                out += "<empty>|";
                continue;
            }
            if (n == 0) {
                out += "<EOF>";
                break;
            }
            out.append(b, static_cast<size_t>(n));
            if (sock) out += "|";  // datagram / read boundary
        }
        return out;
    }

    static int state_of(const fixture &fx, int fd) {
        struct stat st;
        if (fd < 0 || fstat(fd, &st) != 0) return 0;
        for (auto &o : fx.owned)
            if (o.fd == fd) return st.st_dev == o.dev && st.st_ino == o.ino ? 1 : 2;
        return 2;
    }

    static void read_tree(const std::string &dir, const std::string &prefix, std::vector<file_rec> &out) {
        DIR *d = opendir(dir.c_str());
        if (!d) return;
        std::vector<std::string> names;
        while (dirent *e = readdir(d))
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) names.push_back(e->d_name);
        closedir(d);
        std::sort(names.begin(), names.end());
        for (auto &n : names) {
            const std::string p = dir + "/" + n;
            struct stat st;
            if (lstat(p.c_str(), &st) != 0) continue;
            file_rec r{prefix + n, '?', 0, {}};
            if (S_ISREG(st.st_mode)) {
                r.type = 'f';
                r.size = st.st_size;
                int fd = open(p.c_str(), O_RDONLY | O_CLOEXEC);
                if (fd >= 0) {
                    std::string head(65536, '\0');
                    ssize_t k = pread(fd, head.data(), head.size(), 0);
                    head.resize(k > 0 ? static_cast<size_t>(k) : 0);
                    r.data = head;
                    if (st.st_size > 65536) {
                        std::string tail(4096, '\0');
                        k = pread(fd, tail.data(), tail.size(), st.st_size - 4096);
                        tail.resize(k > 0 ? static_cast<size_t>(k) : 0);
                        r.data += "<...>" + tail;
                    }
                    close(fd);
                }
            } else if (S_ISDIR(st.st_mode)) {
                r.type = 'd';
                out.push_back(r);
                read_tree(p, prefix + n + "/", out);
                continue;
            } else if (S_ISLNK(st.st_mode)) {
                r.type = 'l';
                char t[256];
                ssize_t k = readlink(p.c_str(), t, sizeof t);
                r.data.assign(t, k > 0 ? static_cast<size_t>(k) : 0);
            } else if (S_ISFIFO(st.st_mode)) {
                r.type = 'p';
            }
            out.push_back(r);
        }
    }

    std::string describe_open_fd(long fd) {
        char link[64], target[4096];
        snprintf(link, sizeof link, "/proc/self/fd/%ld", fd);
        ssize_t k = readlink(link, target, sizeof target - 1);
        if (k < 0) return "not an open descriptor";
        target[k] = 0;
        std::string t = target;
        const bool ours = t.compare(0, rundir_.size(), rundir_) == 0;
        struct stat st;
        fstat(static_cast<int>(fd), &st);
        const int fl = fcntl(static_cast<int>(fd), F_GETFL);
        const int fdfl = fcntl(static_cast<int>(fd), F_GETFD);
        const off_t pos = lseek(static_cast<int>(fd), 0, SEEK_CUR);
        std::string name = ours ? t.substr(rundir_.size()) : t;
        if (name.find("(deleted)") != std::string::npos) name = "<O_TMPFILE>";
        const std::string out = fmt("%s type=%o flags=%s cloexec=%d pos=%ld", name.c_str(), st.st_mode & S_IFMT,
                                    open_flags_str(fl & ~(O_LARGEFILE | 0x8000)).c_str(), fdfl & FD_CLOEXEC,
                                    static_cast<long>(pos));
        if (ours) close(static_cast<int>(fd));
        return out;
    }

    void capture(const case_spec &s, const fixture &fx, effects &e) {
        if (e.na) return;
        if (s.op == OP_OPENAT && e.ret >= 0) {
            e.openinfo = describe_open_fd(e.ret);
            e.ret = 0;
        }
        if ((s.op == OP_STATX) && e.ret == 0 && (s.buf == B_VALID || s.buf == B_ODD)) {
            struct statx sx;
            memcpy(&sx, mem_.sx + (s.buf == B_ODD), sizeof sx);
            e.statx = fmt("mask=%#x mode=%o size=%llu nlink=%u blksize=%u blocks=%llu attrs=%#llx/%#llx",
                          sx.stx_mask, sx.stx_mode, static_cast<unsigned long long>(sx.stx_size), sx.stx_nlink,
                          sx.stx_blksize, static_cast<unsigned long long>(sx.stx_blocks),
                          static_cast<unsigned long long>(sx.stx_attributes),
                          static_cast<unsigned long long>(sx.stx_attributes_mask));
        }
        e.buffer.assign(mem_.vb, kBuf);
        e.fd_state = state_of(fx, fx.fd);
        e.pos = kUnset;
        if (e.fd_state == 1) {
            e.pos = lseek(fx.fd, 0, SEEK_CUR);
            if (e.pos < 0) e.pos = -errno;
        }
        const bool sock = s.fd == FD_SOCK_STREAM || s.fd == FD_SOCK_DGRAM;
        if (is_stream(s.fd)) {
            const bool dgram = s.fd == FD_SOCK_DGRAM;
            if (s.fd != FD_PIPE_W && e.fd_state == 1) e.rest = drain(fx.fd, sock, dgram);
            if (fx.other >= 0 && state_of(fx, fx.other) == 1 && s.fd != FD_PIPE_R)
                e.peer = drain(fx.other, sock, dgram);
        }
        read_tree(rundir_, "", e.files);
    }

    // ---------------------------------------------------------- compare

    static std::string short_bytes(const std::string &v, size_t at) {
        std::string out;
        for (size_t i = at; i < v.size() && i < at + 8; ++i) out += fmt("%02x", static_cast<uint8_t>(v[i]));
        return out.empty() ? "(end)" : out;
    }
    static std::string bytes_diff(const std::string &a, const std::string &b) {
        size_t i = 0;
        while (i < a.size() && i < b.size() && a[i] == b[i]) ++i;
        size_t n = 0;
        for (size_t k = i; k < std::max(a.size(), b.size()); ++k)
            n += k >= a.size() || k >= b.size() || a[k] != b[k];
        return fmt("first difference at byte %zu (%zu bytes differ; sizes %zu/%zu): plain %s.. asys %s..", i, n,
                   a.size(), b.size(), short_bytes(a, i).c_str(), short_bytes(b, i).c_str());
    }

    std::vector<std::pair<std::string, std::string>> diff(const case_spec &s, const effects &a, const effects &b) {
        std::vector<std::pair<std::string, std::string>> d;
        auto val = [](long v) { return v == kUnset ? std::string("not run") : v == kUnset - 1 ? std::string("cqe.res != *ret_ptr") : errstr(v); };
        if (a.ret != b.ret)
            d.push_back({"result", "plain " + val(a.ret) + " vs asys " + val(b.ret) +
                                       (s.op == OP_OPENAT ? " (0 stands for an fd)" : "")});
        if (a.ret2 != b.ret2) d.push_back({"second atom result", "plain " + val(a.ret2) + " vs asys " + val(b.ret2)});
        if (a.openinfo != b.openinfo) d.push_back({"opened fd", "plain {" + a.openinfo + "} vs asys {" + b.openinfo + "}"});
        if (a.statx != b.statx) d.push_back({"statx buffer", "plain {" + a.statx + "} vs asys {" + b.statx + "}"});
        if (a.buffer != b.buffer) d.push_back({"user buffer", bytes_diff(a.buffer, b.buffer)});
        if (a.fd_state != b.fd_state)
            d.push_back({"fd open after", fmt("plain %d vs asys %d (0 closed, 1 open, 2 other object)", a.fd_state, b.fd_state)});
        if (a.pos != b.pos) d.push_back({"file position", "plain " + val(a.pos) + " vs asys " + val(b.pos)});
        if (a.rest != b.rest) d.push_back({"bytes left to read at the fd", bytes_diff(a.rest, b.rest)});
        if (a.peer != b.peer) d.push_back({"bytes at the other end", bytes_diff(a.peer, b.peer)});
        if (a.cell != b.cell) d.push_back({"data-flow cell", fmt("plain %" PRIu64 " vs asys %" PRIu64, a.cell, b.cell)});
        if (a.files != b.files) {
            std::string what;
            for (size_t i = 0; i < std::max(a.files.size(), b.files.size()); ++i) {
                if (i >= a.files.size()) { what = "asys has an extra entry " + b.files[i].name; break; }
                if (i >= b.files.size()) { what = "asys lacks entry " + a.files[i].name; break; }
                const file_rec &x = a.files[i], &y = b.files[i];
                if (x == y) continue;
                if (x.name != y.name || x.type != y.type) what = "entry " + x.name + " vs " + y.name;
                else if (x.size != y.size) what = fmt("file %s size plain %" PRId64 " vs asys %" PRId64, x.name.c_str(), x.size, y.size);
                else what = "file " + x.name + " content: " + bytes_diff(x.data, y.data);
                break;
            }
            d.push_back({"files", what});
        }
        return d;
    }

    std::string root_, rundir_;
    bool odirect_ok_;
    asys_ctx *d_, *n_;
    memory mem_;
    uint64_t seq_ = 0;
    int home_ = -1;
    void (*on_path_)(unsigned, void *) = nullptr;
    void *on_path_arg_ = nullptr;
    std::string file_data_, buf_init_;  // the file pattern and the buffer's initial bytes
    std::string check_buf_;
    std::map<std::string, std::pair<size_t, blkcnt_t>> fresh_blocks_;  // name -> size, blocks when written
    syslet_uatom atoms_[2];
    unsigned long cells_[2][6];
    uint64_t cell_ = 7;
};

// -------------------------------------------------------- case generation

/// Descriptor kinds an op is mostly about (random cases lean on these).
inline std::vector<uint8_t> natural_fds(unsigned op) {
    switch (op) {
        case OP_READ: case OP_READV: case OP_PREADV:
            return {FD_REG, FD_ODIRECT, FD_FIFO, FD_SOCK_STREAM, FD_PIPE_R, FD_DEVZERO};
        case OP_PREAD: case OP_PREAD64: return {FD_REG, FD_ODIRECT, FD_REG_RDONLY, FD_DEVZERO};
        case OP_WRITE: case OP_WRITEV: case OP_PWRITEV:
            return {FD_REG, FD_REG_APPEND, FD_ODIRECT, FD_PIPE_W, FD_SOCK_STREAM, FD_DEVNULL, FD_FIFO};
        case OP_PWRITE: return {FD_REG, FD_REG_APPEND, FD_ODIRECT, FD_DEVNULL};
        case OP_RECV: case OP_SEND: return {FD_SOCK_STREAM, FD_SOCK_DGRAM};
        case OP_POLL: return {FD_PIPE_R, FD_PIPE_W, FD_SOCK_STREAM, FD_CLOSED, FD_NEG1, FD_REG};
        case OP_OPENAT: case OP_STATX: return {FD_REG, FD_PIPE_R, FD_DIR};
        default: return {FD_REG, FD_ODIRECT};
    }
}

/// A random case from random bytes (the generator leans towards the
/// op's natural descriptors and keeps syncs rare: they cost a disk flush).
inline case_spec random_case(uint64_t &state) {
    auto next = [&] {
        uint64_t z = (state += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
    };
    case_spec s;
    uint64_t a = next(), b = next();
    memcpy(&s, &a, 8);
    memcpy(reinterpret_cast<char *>(&s) + 8, &b, 8);
    normalize(s);
    while (s.op == OP_FSYNC || s.op == OP_FDATASYNC) {
        if (next() % 4 == 0) break;
        s.op = static_cast<uint8_t>(next() % OP__COUNT);
    }
    const uint64_t r = next();
    if (r % 3 != 0) {
        auto nat = natural_fds(s.op);
        s.fd = nat[(r >> 8) % nat.size()];
    }
    if ((r >> 16) % 2) s.buf = B_VALID;  // half the cases with a good buffer
    if ((r >> 20) % 2) s.iov = IOV_VALID;
    normalize(s);
    return s;
}

/// The fixed enumeration: every value of every dimension, one dimension at
/// a time from a baseline, plus the crosses that matter (length x buffer,
/// iovec array x count, offset x descriptor, flags x paths).
inline std::vector<case_spec> enumerate_cases() {
    std::vector<case_spec> v;
    auto base = [](unsigned op) {
        case_spec s{};
        s.op = static_cast<uint8_t>(op);
        s.fd = natural_fds(op)[0];
        s.size = 3;    // a file of two pages and a bit
        s.queued = 3;  // a page queued in pipes and sockets
        s.len = 4;     // a page
        s.iovcnt = 2;  // two iovec entries
        return s;
    };
    auto push = [&](case_spec s) {
        normalize(s);
        v.push_back(s);
    };
    // zero, a page, one past the buffer, and lengths at and past the 32-bit limit
    const uint8_t some_lens[] = {0, 4, 6, 9, 10, 12};
    const unsigned rw[] = {OP_READ, OP_PREAD, OP_READV, OP_PREADV, OP_WRITE, OP_PWRITE, OP_WRITEV, OP_PWRITEV, OP_PREAD64};
    for (unsigned op : rw) {
        // The single-buffer ops get the full crosses; the others each
        // dimension alone.
        const bool main_op = op == OP_READ || op == OP_PREAD || op == OP_WRITE || op == OP_PWRITE;
        for (unsigned fd = 0; fd < FD__COUNT; ++fd) {
            case_spec s = base(op);
            s.fd = static_cast<uint8_t>(fd);
            push(s);
            if (is_stream(fd)) {
                s.eof = 1;
                push(s);
                s.queued = 0;
                push(s);
            }
            s = base(op);  // nothing to transfer: is the descriptor still checked?
            s.fd = static_cast<uint8_t>(fd);
            s.len = 0;
            if (vectored(op)) s.iovcnt = 0;
            push(s);
        }
        for (unsigned len = 0; len < count_of(kLens); ++len)
            for (unsigned b = 0; b < B__COUNT; ++b) {
                if (!main_op && len != 4 && b != B_VALID) continue;
                case_spec s = base(op);
                s.len = static_cast<uint8_t>(len);
                s.buf = static_cast<uint8_t>(b);
                push(s);
            }
        for (uint8_t fd : natural_fds(op)) {
            if (fd == FD_REG) continue;
            for (uint8_t len : some_lens)
                for (uint8_t b : {B_VALID, B_RO}) {
                    if (!main_op && (len != 10 || b != B_VALID) && (len != 4 || b != B_RO)) continue;
                    case_spec s = base(op);
                    s.fd = fd;
                    s.len = len;
                    s.buf = b;
                    push(s);
                }
        }
        for (unsigned sz = 0; sz < count_of(kSizes); ++sz)
            for (unsigned pos = 0; pos < 5; ++pos) {
                if (!main_op && pos != 0 && sz != 3) continue;
                case_spec s = base(op);
                s.size = static_cast<uint8_t>(sz);
                s.pos = static_cast<uint8_t>(pos);
                push(s);
                if (main_op && sz == 3 && pos < 3) {
                    s.fd = FD_ODIRECT;
                    push(s);
                }
            }
        if (positional(op))
            for (unsigned off = 0; off < OFF__COUNT; ++off)
                for (uint8_t fd : {FD_REG, FD_ODIRECT, FD_REG_APPEND, FD_PIPE_R, FD_PIPE_W, FD_FIFO}) {
                    if (!main_op && fd != FD_REG && fd != FD_FIFO) continue;
                    if (fd == (reads(op) ? FD_PIPE_W : FD_PIPE_R)) continue;
                    if (fd == FD_REG_APPEND && reads(op)) continue;
                    case_spec s = base(op);
                    s.fd = fd;
                    s.off = static_cast<uint8_t>(off);
                    push(s);
                }
        if (vectored(op)) {
            const bool full = op == OP_READV || op == OP_WRITEV;
            for (unsigned iov = 0; iov < IOV__COUNT; ++iov)
                for (unsigned cnt = 0; cnt < count_of(kIovCnt); ++cnt) {
                    if (!full && iov != IOV_VALID && cnt != 2) continue;
                    case_spec s = base(op);
                    s.iov = static_cast<uint8_t>(iov);
                    s.iovcnt = static_cast<uint8_t>(cnt);
                    push(s);
                }
            for (uint8_t cnt : {0, 6, 7})
                for (uint8_t fd : {FD_PIPE_R, FD_PIPE_W, FD_SOCK_STREAM, FD_SOCK_DGRAM, FD_ODIRECT}) {
                    if (fd == (reads(op) ? FD_PIPE_W : FD_PIPE_R)) continue;
                    case_spec s = base(op);
                    s.fd = fd;
                    s.iovcnt = cnt;
                    push(s);
                }
        }
        // O_DIRECT reads and writes that reach past the end of the file.
        if (main_op)
            for (uint8_t len : {4, 5})
                for (uint8_t pos : {0, 2, 3}) {
                    case_spec s = base(op);
                    s.fd = FD_ODIRECT;
                    s.len = len;
                    s.pos = pos;
                    s.off = pos == 0 ? OFF_0 : pos == 2 ? OFF_4096 : OFF_S;
                    push(s);
                }
        // A datagram socket with a bad buffer: a failed read still consumes
        // the datagram, so running the call twice shows.
        for (uint8_t b : {B_NULL, B_RO}) {
            case_spec s = base(op);
            s.fd = FD_SOCK_DGRAM;
            s.buf = b;
            push(s);
        }
        // Which error wins: a descriptor that cannot serve the op together
        // with a bad buffer, iovec array or length.
        for (uint8_t fd : {FD_CLOSED, FD_NEG1, reads(op) ? FD_REG_WRONLY : FD_REG_RDONLY,
                           reads(op) ? FD_PIPE_W : FD_PIPE_R})
            for (int bad = 0; bad < 4; ++bad) {
                case_spec s = base(op);
                s.fd = fd;
                if (bad == 0) s.buf = B_NULL;
                if (bad == 1) s.buf = B_KERNEL;
                if (bad == 2) s.len = 12;  // SIZE_MAX
                if (bad == 3) {
                    if (!vectored(op)) continue;
                    s.iov = IOV_0X10;
                }
                push(s);
            }
        if (op == OP_PREADV || op == OP_PWRITEV)
            for (unsigned f = 0; f < count_of(kRwf); ++f)
                for (uint8_t off : {OFF_0, OFF_M1, OFF_S})
                    for (uint8_t fd : {FD_REG, reads(op) ? FD_PIPE_R : FD_PIPE_W}) {
                        case_spec s = base(op);
                        s.flags = static_cast<uint8_t>(f);
                        s.off = off;
                        s.fd = fd;
                        push(s);
                        s.iovcnt = 0;  // nothing to transfer: which check comes first
                        push(s);
                    }
    }
    // OPENAT: flags x the main paths, the odd paths alone, dirfd x a few.
    const uint8_t main_paths[] = {PA_F, PA_DIR, PA_FIFO, PA_LINK, PA_MISSING, PA_EMPTY, PA_NULL, PA_ABS, PA_TRAIL, PA_DANGLING};
    for (unsigned f = 0; f < count_of(kOpenFlags); ++f)
        for (uint8_t p : main_paths) {
            case_spec s = base(OP_OPENAT);
            s.flags = static_cast<uint8_t>(f);
            s.path = p;
            push(s);
        }
    for (unsigned p = 0; p < PA__COUNT; ++p)
        for (uint8_t f : {0, 2, 4}) {
            case_spec s = base(OP_OPENAT);
            s.flags = f;
            s.path = static_cast<uint8_t>(p);
            push(s);
        }
    for (unsigned df = 0; df < DF__COUNT; ++df)
        for (uint8_t p : {PA_F, PA_MISSING, PA_EMPTY, PA_ABS, PA_NULL, PA_DIRFILE})
            for (uint8_t f : {0, 4, 11}) {
                case_spec s = base(OP_OPENAT);
                s.dirfd = static_cast<uint8_t>(df);
                s.path = p;
                s.flags = f;
                push(s);
                if (df == DF_FIXFD) {
                    s.fd = FD_DIR;
                    push(s);
                }
            }
    for (unsigned m = 0; m < count_of(kModes); ++m)
        for (uint8_t f : {3, 4, 9, 15}) {
            case_spec s = base(OP_OPENAT);
            s.path = PA_MISSING;
            s.aux = static_cast<uint8_t>(m);
            s.flags = f;
            if (f == 9) s.path = PA_F, s.dirfd = DF_SUBDIR;
            push(s);
        }
    // STATX
    for (unsigned f = 0; f < count_of(kStatxFlags); ++f)
        for (uint8_t p : main_paths) {
            case_spec s = base(OP_STATX);
            s.flags = static_cast<uint8_t>(f);
            s.path = p;
            push(s);
        }
    for (unsigned p = 0; p < PA__COUNT; ++p) {
        case_spec s = base(OP_STATX);
        s.path = static_cast<uint8_t>(p);
        push(s);
    }
    for (unsigned m = 0; m < count_of(kStatxMask); ++m)
        for (unsigned b = 0; b < B__COUNT; ++b) {
            case_spec s = base(OP_STATX);
            s.aux = static_cast<uint8_t>(m);
            s.buf = static_cast<uint8_t>(b);
            push(s);
        }
    for (unsigned df = 0; df < DF__COUNT; ++df)
        for (uint8_t p : {PA_F, PA_EMPTY, PA_NULL})
            for (uint8_t f : {0, 2})
                for (uint8_t fd : {FD_REG, FD_PIPE_R, FD_SOCK_STREAM}) {
                    if (df != DF_FIXFD && fd != FD_REG) continue;
                    case_spec s = base(OP_STATX);
                    s.dirfd = static_cast<uint8_t>(df);
                    s.path = p;
                    s.flags = f;
                    s.fd = fd;
                    push(s);
                }
    // One-fd ops on every descriptor kind.
    for (unsigned op : {OP_CLOSE, OP_FSYNC, OP_FDATASYNC, OP_FTRUNCATE, OP_FALLOCATE, OP_LSEEK, OP_RECV, OP_SEND})
        for (unsigned fd = 0; fd < FD__COUNT; ++fd) {
            case_spec s = base(op);
            s.fd = static_cast<uint8_t>(fd);
            s.off = OFF_4096;
            push(s);
            if (is_stream(fd) && op != OP_FSYNC && op != OP_FDATASYNC) {
                s.eof = 1;
                push(s);
            }
        }
    for (unsigned off = 0; off < OFF__COUNT; ++off)
        for (uint8_t fd : {FD_REG, FD_ODIRECT, FD_REG_RDONLY, FD_REG_APPEND, FD_CLOSED}) {
            case_spec s = base(OP_FTRUNCATE);
            s.fd = fd;
            s.off = static_cast<uint8_t>(off);
            push(s);
        }
    for (unsigned m = 0; m < count_of(kFallocMode); ++m) {
        for (unsigned l = 0; l < count_of(kFallocLen); ++l) {
            case_spec s = base(OP_FALLOCATE);
            s.flags = static_cast<uint8_t>(m);
            s.aux = static_cast<uint8_t>(l);
            push(s);
        }
        for (uint8_t off : {OFF_0, OFF_S, OFF_SP4K, OFF_M1, OFF_4G, OFF_2P62}) {
            case_spec s = base(OP_FALLOCATE);
            s.flags = static_cast<uint8_t>(m);
            s.aux = 3;
            s.off = off;
            push(s);
        }
    }
    for (unsigned w = 0; w < count_of(kWhence); ++w)
        for (unsigned off = 0; off < OFF__COUNT; ++off) {
            case_spec s = base(OP_LSEEK);
            s.flags = static_cast<uint8_t>(w);
            s.off = static_cast<uint8_t>(off);
            push(s);
        }
    // RECV / SEND: flags x socket kinds x queue states; length x buffer.
    for (unsigned op : {OP_RECV, OP_SEND}) {
        const unsigned nf = op == OP_RECV ? count_of(kRecvFlags) : count_of(kSendFlags);
        for (unsigned f = 0; f < nf; ++f)
            for (uint8_t fd : {FD_SOCK_STREAM, FD_SOCK_DGRAM})
                for (uint8_t q : {0, 3})
                    for (uint8_t eof : {0, 1}) {
                        if (eof && fd == FD_SOCK_DGRAM) continue;
                        case_spec s = base(op);
                        s.flags = static_cast<uint8_t>(f);
                        s.fd = fd;
                        s.queued = q;
                        s.eof = eof;
                        push(s);
                    }
        for (uint8_t len : some_lens)
            for (uint8_t b : {B_VALID, B_NULL, B_UNMAPPED, B_RO})
                for (uint8_t fd : {FD_SOCK_STREAM, FD_SOCK_DGRAM}) {
                    case_spec s = base(op);
                    s.len = len;
                    s.buf = b;
                    s.fd = fd;
                    push(s);
                }
    }
    // POLL: every descriptor x events with no timeout wait; timeouts on a few.
    for (unsigned fd = 0; fd < FD__COUNT; ++fd) {
        for (unsigned ev = 0; ev < count_of(kPollEvents); ++ev) {
            case_spec s = base(OP_POLL);
            s.fd = static_cast<uint8_t>(fd);
            s.flags = static_cast<uint8_t>(ev);
            push(s);
        }
        for (uint8_t ev : {0, 1, 3, 4}) {  // POLLIN, POLLOUT, none, POLLPRI with a short timeout
            case_spec s = base(OP_POLL);
            s.fd = static_cast<uint8_t>(fd);
            s.flags = ev;
            s.aux = 1;
            push(s);
        }
        for (uint8_t t : {1, 2}) {
            case_spec s = base(OP_POLL);
            s.fd = static_cast<uint8_t>(fd);
            s.aux = t;
            push(s);
            if (is_stream(fd)) {
                s.queued = 0;
                s.eof = 1;
                push(s);
            }
        }
    }
    // Data-flow chains.
    for (unsigned var = 0; var < 4; ++var)
        for (unsigned val = 0; val < count_of(kDataflowValue); ++val)
            for (uint8_t fd : {FD_REG, FD_ODIRECT}) {
                case_spec s = base(OP_DATAFLOW);
                s.fd = fd;
                s.aux = static_cast<uint8_t>(var);
                s.extra = static_cast<uint8_t>(val);
                push(s);
            }
    // Drop duplicates (the crosses overlap the baselines), keeping the order.
    std::vector<case_spec> out;
    out.reserve(v.size());
    std::set<std::string> seen;
    for (auto &s : v)
        if (seen.insert(std::string(reinterpret_cast<const char *>(&s), sizeof s)).second) out.push_back(s);
    return out;
}

/// Whether `dir`'s filesystem takes O_DIRECT (a 4 KiB direct write and
/// read of a probe file there); O_DIRECT fixtures are made only where it does.
inline bool odirect_works(const std::string &dir) {
    const std::string f = dir + "/odirect-probe";
    int fd = open(f.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_DIRECT | O_CLOEXEC, 0644);
    bool ok = false;
    if (fd >= 0) {
        void *p = nullptr;
        if (posix_memalign(&p, 4096, 4096) == 0) {
            memset(p, 'x', 4096);
            ok = pwrite(fd, p, 4096, 0) == 4096 && pread(fd, p, 4096, 0) == 4096;
            free(p);
        }
        close(fd);
    }
    unlink(f.c_str());
    return ok;
}

}  // namespace oracle
