/* asys — make any system call asynchronous, at almost no cost when it would
 * not have blocked.
 *
 * C ABI. Compiles as C99 and as C++. Every function returns a negative errno
 * on failure and never touches `errno`.
 *
 * Threading: every function may be called from any thread, concurrently,
 * except asys_ctx_destroy(), which must not race with other calls on the same
 * context (threads blocked in asys_wait() are woken and return -ESHUTDOWN).
 */
#ifndef ASYS_ASYS_H
#define ASYS_ASYS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#ifdef __cplusplus
extern "C" {
#endif

struct timespec; /* <time.h> declares it only with POSIX features enabled */
struct syslet_uatom; /* <asys/syslet.h> */

#if defined(__GNUC__)
#define ASYS_API __attribute__((visibility("default")))
#else
#define ASYS_API
#endif

#define ASYS_VERSION_MAJOR 0
#define ASYS_VERSION_MINOR 2

/** asys_submit() returns this when the op finished inline: the result is
 *  already in *ret_ptr and no completion entry will follow (the
 *  "IOF_QUICK" of the thread-blocked-hook proposal, docs/design.md). 0 means "accepted, will complete later". */
#define ASYS_DONE 1

/* ---------------------------------------------------------------- opcodes */
enum asys_opcode {
    ASYS_OP_NOP = 0,     /* args[0] is returned as the result               */
    ASYS_OP_READ,        /* fd, buf, len                                    */
    ASYS_OP_PREAD,       /* fd, buf, len, offset                            */
    ASYS_OP_READV,       /* fd, iov, iovcnt                                 */
    ASYS_OP_PREADV,      /* fd, iov, iovcnt, offset, rwf_flags              */
    ASYS_OP_WRITE,       /* fd, buf, len                                    */
    ASYS_OP_PWRITE,      /* fd, buf, len, offset                            */
    ASYS_OP_WRITEV,      /* fd, iov, iovcnt                                 */
    ASYS_OP_PWRITEV,     /* fd, iov, iovcnt, offset, rwf_flags              */
    ASYS_OP_OPENAT,      /* dirfd, path, flags, mode                        */
    ASYS_OP_CLOSE,       /* fd                                              */
    ASYS_OP_FSYNC,       /* fd                                              */
    ASYS_OP_FDATASYNC,   /* fd                                              */
    ASYS_OP_STATX,       /* dirfd, path, flags, mask, struct statx *        */
    ASYS_OP_UNLINKAT,    /* dirfd, path, flags                              */
    ASYS_OP_RENAMEAT,    /* olddirfd, oldpath, newdirfd, newpath, flags     */
    ASYS_OP_MKDIRAT,     /* dirfd, path, mode                               */
    ASYS_OP_FALLOCATE,   /* fd, mode, offset, len                           */
    ASYS_OP_FTRUNCATE,   /* fd, length                                      */
    ASYS_OP_ACCEPT,      /* fd, addr, addrlen *, flags                      */
    ASYS_OP_CONNECT,     /* fd, addr, addrlen                               */
    ASYS_OP_RECV,        /* fd, buf, len, msg_flags                         */
    ASYS_OP_SEND,        /* fd, buf, len, msg_flags                         */
    ASYS_OP_POLL,        /* fd, events, timeout_ms (-1: none) → revents     */
    ASYS_OP_SYSCALL,     /* any syscall: op.nr, args[0..5]                  */
    ASYS_OP_CHAIN,       /* a syslet chain: head atom, struct syslet_uatom **
                            last_out (may be NULL) → the last atom's result */
    ASYS_OP_THREADLET,   /* a threadlet: fn, arg, tflags → fn's return value
                            (asys_prep_threadlet, docs/threadlets.md)       */
    ASYS_OP__COUNT
};

/* ------------------------------------------------------------- op flags */
#define ASYS_F_NOWAIT     (1u << 0) /* never block, never punt: -EAGAIN     */
#define ASYS_F_ATOMIC     (1u << 1) /* punt only to an idle worker, never
                                       wait for a worker or a slot          */
#define ASYS_F_ASYNC      (1u << 2) /* skip the inline attempt              */
#define ASYS_F_SYNC       (1u << 3) /* run on the caller's thread           */
#define ASYS_F_CQE_ALWAYS (1u << 4) /* post a completion (or call the
                                       callback) even when done inline      */
#define ASYS_F_BUFFERED   (1u << 5) /* caller asserts the fd is not O_DIRECT:
                                       the read probe skips its O_DIRECT
                                       guard (faster; if wrong, the probe may
                                       block, the result is still right)   */
#define ASYS_F_BULK       (1u << 6) /* bulk priority: served after the
                                       latency ops of its class (default:
                                       latency)                             */
#define ASYS_F_DEADLINE   (1u << 7) /* op.deadline_ns is an absolute
                                       CLOCK_MONOTONIC time: an op not
                                       started by then completes -ETIME     */
/* Scheduling class override (docs/scheduling.md): ASYS_F_CLASS(ASYS_CLASS_x);
 * without it the class comes from the opcode (a generic syscall: from its
 * number). */
#define ASYS_F_CLASS_SHIFT 8
#define ASYS_F_CLASS_MASK  (7u << ASYS_F_CLASS_SHIFT)
#define ASYS_F_CLASS(c)    (((c) + 1u) << ASYS_F_CLASS_SHIFT)
#define ASYS_F__ALL       0x7ffu

/* ------------------------------------------- scheduling classes (pool) */
/* Each class has its own queues and worker budget in the pool, so a flood
 * of one class (say, sleeps) cannot delay another (say, file reads). */
enum asys_class {
    ASYS_CLASS_READ = 0, /* file reads                                     */
    ASYS_CLASS_WRITE,    /* file writes and syncs                          */
    ASYS_CLASS_META,     /* metadata: open, close, stat, unlink, rename... */
    ASYS_CLASS_NET,      /* sockets: accept, connect, recv, send, poll     */
    ASYS_CLASS_LONG,     /* generic / long: sleeps, waits, locks, unknown
                            syscalls, chain remainders                     */
    ASYS_CLASS__COUNT
};

/* ------------------------------------------------ completion path (cqe) */
#define ASYS_PATH_INLINE 1u  /* ran on the submitting thread  */
#define ASYS_PATH_POOL   2u  /* ran on a pool worker          */
#define ASYS_PATH_URING  3u  /* ran through io_uring          */

/** One completion. */
struct asys_cqe {
    uint64_t user_data; /* copied from the op                     */
    long     res;       /* result: >= 0, or a negative errno      */
    uint32_t opcode;    /* the op's opcode                        */
    uint32_t path;      /* ASYS_PATH_*: which path served the op  */
};

typedef void (*asys_callback_t)(const struct asys_cqe *cqe, void *cb_arg);

/** An operation descriptor. asys_submit() copies it: the caller may reuse or
 *  free the descriptor as soon as asys_submit() returns. Buffers, paths and
 *  the ret_ptr target must stay valid until the op completes.
 *  Must be 8-byte aligned; reserved fields must be zero. */
struct asys_op {
    uint32_t        opcode;    /* enum asys_opcode                          */
    uint32_t        flags;     /* ASYS_F_*                                  */
    long           *ret_ptr;   /* result written here (may be NULL)         */
    uint64_t        user_data; /* returned in the cqe; key for asys_cancel  */
    asys_callback_t callback;  /* if set: called instead of posting a cqe   */
    void           *cb_arg;
    long            nr;        /* syscall number, ASYS_OP_SYSCALL only      */
    uint64_t        args[6];
    uint64_t        deadline_ns; /* with ASYS_F_DEADLINE: absolute
                                    CLOCK_MONOTONIC time in ns (tv_sec *
                                    1e9 + tv_nsec); else must be zero      */
    uint64_t        reserved[1];
};

/* --------------------------------------------------------------- context */
typedef struct asys_ctx asys_ctx;

#define ASYS_CTX_BLOCK_WHEN_FULL (1u << 0) /* submit waits for a slot
                                              instead of -EAGAIN            */
#define ASYS_CTX_INLINE_NEVER    (1u << 1) /* every op as if ASYS_F_ASYNC   */
#define ASYS_CTX_INLINE_ALWAYS   (1u << 2) /* every op as if ASYS_F_SYNC    */
#define ASYS_CTX_NO_ODIRECT      (1u << 3) /* every op as if ASYS_F_BUFFERED */
#define ASYS_CTX_LAZY_THREADS    (1u << 4) /* start pool workers and the ring's
                                              reaper when first needed, not at
                                              creation (a context whose ops all
                                              complete inline starts none)   */
#define ASYS_CTX__ALL            0x1fu

/* asys_params spin fields: 0 picks the default, ASYS_SPIN_NONE never spins. */
#define ASYS_SPIN_NONE 0xffffffffu

enum asys_backend { ASYS_BACKEND_AUTO = 0, ASYS_BACKEND_POOL = 1, ASYS_BACKEND_URING = 2 };

struct asys_params {
    unsigned workers;      /* pool threads; 0: 4 x online CPUs (max 256)    */
    unsigned max_inflight; /* accepted-but-unreaped ops; 0: 4096            */
    unsigned ring_entries; /* completion ring; 0: max_inflight; >= it       */
    unsigned flags;        /* ASYS_CTX_*                                    */
    unsigned backend;      /* enum asys_backend; AUTO honours $ASYS_BACKEND */
    /* Spins (microseconds; 0: default; ASYS_SPIN_NONE: none; at most
     * 1000000): a thread that runs out of work spins this long before it
     * sleeps, so a steady stream pays no wake-up. */
    unsigned pool_spin_us;   /* an idle pool worker; default 50             */
    unsigned wait_spin_us;   /* asys_wait before it sleeps, at most (the spin
                                adapts: it shrinks while spins end without
                                the completions); default 20                */
    unsigned server_spin_us; /* a socket server (asys_socket_open/serve)
                                after its last request; default 50          */
    /* Pool worker budget per class (index: ASYS_CLASS_*): the most workers
     * the class holds while another class has work waiting (it may borrow
     * idle workers beyond it, except ASYS_CLASS_LONG). 0: default (half the
     * workers, at least 1); at most 1024; clamped to `workers`. */
    uint16_t class_workers[ASYS_CLASS__COUNT];
    uint16_t reserved16;   /* must be zero                                  */
    unsigned reserved[1];  /* must be zero                                  */
};

/** Counters of one context (monotonic since creation). */
struct asys_stats {
    uint64_t submitted;      /* ops accepted                                   */
    uint64_t done_inline;    /* finished on the caller (ASYS_DONE)             */
    uint64_t punted_probe;   /* inline attempt said would-block, then punted   */
    uint64_t punted_direct;  /* sent to a backend without an inline attempt    */
    uint64_t completed_pool; /* completed by the pool                          */
    uint64_t completed_uring;/* completed by io_uring                          */
    uint64_t short_finished; /* short inline results finished off-thread       */
    uint64_t cancelled;      /* completed with -ECANCELED                      */
    uint64_t rejected_full;  /* submits refused with -EAGAIN for lack of room  */
    uint32_t workers;        /* pool threads                                   */
    uint32_t inflight;       /* accepted and not yet completed                 */
    uint64_t ring_retried;   /* io_uring reported EINTR, EFAULT or EINVAL;
                                re-run on the pool for the call's own result */
};

/** Which backends a context runs on, and why io_uring is not used. */
struct asys_info {
    uint32_t backend;         /* ASYS_BACKEND_URING (ring + pool) or _POOL     */
    int32_t  uring_error;     /* 0, or -errno of the failed io_uring set-up    */
    uint64_t uring_opcodes;   /* bit (1 << ASYS_OP_x): ops routed to the ring  */
    uint32_t workers;         /* pool threads                                  */
    uint32_t iowq_max_workers;/* io-wq cap registered with the ring (0: none)  */
    char     reason[120];     /* human-readable: backend and why               */
};

/** Metrics of one scheduling class (or of the whole context). Counters are
 *  monotonic since creation; latencies cover ops that went to a backend
 *  (submit to completion; inline ops are not timed). */
struct asys_class_metrics {
    uint64_t submitted;     /* ops accepted (inline + punted)                 */
    uint64_t done_inline;   /* finished on the caller                         */
    uint64_t punted;        /* sent to a backend                              */
    uint64_t in_flight;     /* punted, not yet completed                      */
    uint64_t completed;     /* punted and completed (any result)              */
    uint64_t cancelled;     /* completed -ECANCELED                           */
    uint64_t expired;       /* completed -ETIME: deadline passed before start */
    uint64_t lat_count;     /* completions timed                              */
    uint64_t lat_sum_ns;
    uint64_t lat_p50_ns, lat_p99_ns, lat_p999_ns; /* upper bucket bounds      */
    uint32_t queued;        /* waiting in the pool's queues                   */
    uint32_t workers_busy;  /* pool workers running an op of this class       */
    uint32_t budget;        /* its worker budget                              */
    uint32_t pad_;
};

/** asys_ctx_metrics(): per class (index ASYS_CLASS_*) and in total. */
struct asys_metrics {
    struct asys_class_metrics cls[ASYS_CLASS__COUNT];
    struct asys_class_metrics total;
    uint32_t workers;        /* pool threads that exist                       */
    uint32_t workers_busy;   /* running an op                                 */
    uint32_t workers_idle;   /* waiting for work                              */
    uint32_t workers_max;    /* the bound (asys_params.workers)               */
    uint32_t iowq_workers;   /* io-wq cap registered with the ring (0: none)  */
    uint32_t backend;        /* ASYS_BACKEND_URING (ring + pool) or _POOL     */
    int32_t  uring_error;    /* 0, or -errno: why io_uring is not used        */
    uint32_t pad_;
    char     reason[120];    /* as asys_info.reason                           */
};

#define ASYS_METRICS_TEXT       0u /* "key value" lines                      */
#define ASYS_METRICS_PROMETHEUS 1u /* Prometheus text exposition format 0.0.4 */

ASYS_API int  asys_ctx_create(const struct asys_params *params, asys_ctx **out);

#define ASYS_DESTROY_DRAIN  0u /* wait for every accepted op to complete     */
#define ASYS_DESTROY_CANCEL 1u /* cancel queued ops, interrupt running ones  */
/* From inside a completion callback of the same context: -EDEADLK, nothing
 * happens. */
ASYS_API int  asys_ctx_destroy(asys_ctx *ctx, unsigned how);

ASYS_API int  asys_ctx_fd(asys_ctx *ctx);
ASYS_API int  asys_ctx_stats(asys_ctx *ctx, struct asys_stats *out);
ASYS_API int  asys_ctx_info(asys_ctx *ctx, struct asys_info *out);
ASYS_API int  asys_ctx_metrics(asys_ctx *ctx, struct asys_metrics *out);
/** Formats metrics as ASYS_METRICS_TEXT or _PROMETHEUS into buf (always
 *  NUL-terminated when len > 0). Returns the length the whole text needs
 *  (without the NUL; like snprintf), or -EINVAL / -EFAULT. */
ASYS_API long asys_metrics_format(const struct asys_metrics *m, unsigned format, char *buf, size_t len);
/** The name of a class ("read", "write", "meta", "net", "long"), or NULL. */
ASYS_API const char *asys_class_name(unsigned cls);

ASYS_API int  asys_submit(asys_ctx *ctx, const struct asys_op *op);
ASYS_API int  asys_submit_batch(asys_ctx *ctx, const struct asys_op *ops, unsigned n, int *status);

ASYS_API int  asys_wait(asys_ctx *ctx, unsigned min_events, const struct timespec *timeout,
                        struct asys_cqe *out, unsigned max);
ASYS_API int  asys_peek(asys_ctx *ctx, struct asys_cqe *out, unsigned max);

ASYS_API int  asys_cancel(asys_ctx *ctx, uint64_t user_data);

/** -EPERM if `nr` may not be submitted generically, -ENOSYS if it is not a
 *  syscall number of this architecture, 0 otherwise. */
ASYS_API int  asys_syscall_allowed(long nr);

ASYS_API const char *asys_opcode_name(unsigned opcode);

/* --------------------------------------------------- prep helpers
 * Like liburing's io_uring_prep_*: fill a descriptor, zeroing the rest. */
#if defined(__cplusplus) && defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wold-style-cast"
#endif
static inline void asys_prep__(struct asys_op *op, uint32_t opcode, uint64_t a0, uint64_t a1,
                               uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5)
{
    memset(op, 0, sizeof *op);
    op->opcode = opcode;
    op->args[0] = a0; op->args[1] = a1; op->args[2] = a2;
    op->args[3] = a3; op->args[4] = a4; op->args[5] = a5;
}
#define ASYS_U64(x) ((uint64_t)(uintptr_t)(x))

static inline void asys_prep_nop(struct asys_op *op, long value)
{ asys_prep__(op, ASYS_OP_NOP, (uint64_t)value, 0, 0, 0, 0, 0); }
static inline void asys_prep_read(struct asys_op *op, int fd, void *buf, size_t len)
{ asys_prep__(op, ASYS_OP_READ, (uint64_t)fd, ASYS_U64(buf), len, 0, 0, 0); }
static inline void asys_prep_pread(struct asys_op *op, int fd, void *buf, size_t len, int64_t off)
{ asys_prep__(op, ASYS_OP_PREAD, (uint64_t)fd, ASYS_U64(buf), len, (uint64_t)off, 0, 0); }
static inline void asys_prep_readv(struct asys_op *op, int fd, const void *iov, int cnt)
{ asys_prep__(op, ASYS_OP_READV, (uint64_t)fd, ASYS_U64(iov), (uint64_t)cnt, 0, 0, 0); }
static inline void asys_prep_preadv(struct asys_op *op, int fd, const void *iov, int cnt, int64_t off, int rwf)
{ asys_prep__(op, ASYS_OP_PREADV, (uint64_t)fd, ASYS_U64(iov), (uint64_t)cnt, (uint64_t)off, (uint64_t)rwf, 0); }
static inline void asys_prep_write(struct asys_op *op, int fd, const void *buf, size_t len)
{ asys_prep__(op, ASYS_OP_WRITE, (uint64_t)fd, ASYS_U64(buf), len, 0, 0, 0); }
static inline void asys_prep_pwrite(struct asys_op *op, int fd, const void *buf, size_t len, int64_t off)
{ asys_prep__(op, ASYS_OP_PWRITE, (uint64_t)fd, ASYS_U64(buf), len, (uint64_t)off, 0, 0); }
static inline void asys_prep_writev(struct asys_op *op, int fd, const void *iov, int cnt)
{ asys_prep__(op, ASYS_OP_WRITEV, (uint64_t)fd, ASYS_U64(iov), (uint64_t)cnt, 0, 0, 0); }
static inline void asys_prep_pwritev(struct asys_op *op, int fd, const void *iov, int cnt, int64_t off, int rwf)
{ asys_prep__(op, ASYS_OP_PWRITEV, (uint64_t)fd, ASYS_U64(iov), (uint64_t)cnt, (uint64_t)off, (uint64_t)rwf, 0); }
static inline void asys_prep_openat(struct asys_op *op, int dfd, const char *path, int flags, unsigned mode)
{ asys_prep__(op, ASYS_OP_OPENAT, (uint64_t)dfd, ASYS_U64(path), (uint64_t)flags, mode, 0, 0); }
static inline void asys_prep_close(struct asys_op *op, int fd)
{ asys_prep__(op, ASYS_OP_CLOSE, (uint64_t)fd, 0, 0, 0, 0, 0); }
static inline void asys_prep_fsync(struct asys_op *op, int fd)
{ asys_prep__(op, ASYS_OP_FSYNC, (uint64_t)fd, 0, 0, 0, 0, 0); }
static inline void asys_prep_fdatasync(struct asys_op *op, int fd)
{ asys_prep__(op, ASYS_OP_FDATASYNC, (uint64_t)fd, 0, 0, 0, 0, 0); }
static inline void asys_prep_statx(struct asys_op *op, int dfd, const char *path, int flags, unsigned mask, void *statxbuf)
{ asys_prep__(op, ASYS_OP_STATX, (uint64_t)dfd, ASYS_U64(path), (uint64_t)flags, mask, ASYS_U64(statxbuf), 0); }
static inline void asys_prep_unlinkat(struct asys_op *op, int dfd, const char *path, int flags)
{ asys_prep__(op, ASYS_OP_UNLINKAT, (uint64_t)dfd, ASYS_U64(path), (uint64_t)flags, 0, 0, 0); }
static inline void asys_prep_renameat(struct asys_op *op, int odfd, const char *oldp, int ndfd, const char *newp, unsigned flags)
{ asys_prep__(op, ASYS_OP_RENAMEAT, (uint64_t)odfd, ASYS_U64(oldp), (uint64_t)ndfd, ASYS_U64(newp), flags, 0); }
static inline void asys_prep_mkdirat(struct asys_op *op, int dfd, const char *path, unsigned mode)
{ asys_prep__(op, ASYS_OP_MKDIRAT, (uint64_t)dfd, ASYS_U64(path), mode, 0, 0, 0); }
static inline void asys_prep_fallocate(struct asys_op *op, int fd, int mode, int64_t off, int64_t len)
{ asys_prep__(op, ASYS_OP_FALLOCATE, (uint64_t)fd, (uint64_t)mode, (uint64_t)off, (uint64_t)len, 0, 0); }
static inline void asys_prep_ftruncate(struct asys_op *op, int fd, int64_t len)
{ asys_prep__(op, ASYS_OP_FTRUNCATE, (uint64_t)fd, (uint64_t)len, 0, 0, 0, 0); }
static inline void asys_prep_accept(struct asys_op *op, int fd, void *addr, void *addrlen, int flags)
{ asys_prep__(op, ASYS_OP_ACCEPT, (uint64_t)fd, ASYS_U64(addr), ASYS_U64(addrlen), (uint64_t)flags, 0, 0); }
static inline void asys_prep_connect(struct asys_op *op, int fd, const void *addr, unsigned addrlen)
{ asys_prep__(op, ASYS_OP_CONNECT, (uint64_t)fd, ASYS_U64(addr), addrlen, 0, 0, 0); }
static inline void asys_prep_recv(struct asys_op *op, int fd, void *buf, size_t len, int flags)
{ asys_prep__(op, ASYS_OP_RECV, (uint64_t)fd, ASYS_U64(buf), len, (uint64_t)flags, 0, 0); }
static inline void asys_prep_send(struct asys_op *op, int fd, const void *buf, size_t len, int flags)
{ asys_prep__(op, ASYS_OP_SEND, (uint64_t)fd, ASYS_U64(buf), len, (uint64_t)flags, 0, 0); }
static inline void asys_prep_poll(struct asys_op *op, int fd, unsigned events, int timeout_ms)
{ asys_prep__(op, ASYS_OP_POLL, (uint64_t)fd, events, (uint64_t)(int64_t)timeout_ms, 0, 0, 0); }
static inline void asys_prep_syscall(struct asys_op *op, long nr, const uint64_t args[6])
{
    asys_prep__(op, ASYS_OP_SYSCALL, args[0], args[1], args[2], args[3], args[4], args[5]);
    op->nr = nr;
}
/* Runs the syslet chain starting at `head` (see <asys/syslet.h>) as one op:
 * atoms run on the caller until one would block, the rest on the pool. The
 * op's result is the result of the chain's last atom; *last_out (if not
 * NULL) receives that atom's address. With ASYS_F_NOWAIT, or ASYS_F_ATOMIC
 * and no idle worker, or no room, submit returns -EAGAIN after the atoms
 * that did not block ran, and *last_out is the first atom that did not run:
 * submit a chain from it to resume. */
static inline void asys_prep_chain(struct asys_op *op, struct syslet_uatom *head,
                                   struct syslet_uatom **last_out)
{ asys_prep__(op, ASYS_OP_CHAIN, ASYS_U64(head), ASYS_U64(last_out), 0, 0, 0, 0); }

/* ------------------------------------------- threadlets (docs/threadlets.md)
 * A threadlet is ordinary code run as an op: asys_submit() runs fn(arg) at
 * once on the caller's thread, on a small pooled stack. If it returns
 * without blocking, submit returns ASYS_DONE and *ret_ptr holds its return
 * value. If a call inside it would block (asys_call(), or any system call in
 * transparent mode), the threadlet is parked, the call runs on a backend,
 * and submit returns 0; the threadlet resumes on the submitting thread only,
 * when that thread drives the context (asys_wait, asys_peek, asys_run), and
 * completes like any op. The context's eventfd is readable while a
 * threadlet waits to resume. */
typedef long (*asys_threadlet_fn)(void *arg);
/* tflags: catch the system calls of any code inside (libc, third-party
 * libraries) with syscall user dispatch, not only asys_call(). */
#define ASYS_THREADLET_TRANSPARENT (1u << 0)
#define ASYS_THREADLET__ALL        0x1u
static inline void asys_prep_threadlet(struct asys_op *op, asys_threadlet_fn fn, void *arg, unsigned tflags)
{ asys_prep__(op, ASYS_OP_THREADLET, ASYS_U64(fn), ASYS_U64(arg), tflags, 0, 0, 0); }
#if defined(__cplusplus) && defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

/** Like syscall(2), but returns the result or -errno (errno untouched).
 *  Inside a threadlet: tries the call without blocking and parks the
 *  threadlet if it would block; outside one: the plain call. */
ASYS_API long asys_call(long nr, ...);
/** The tflags (ASYS_THREADLET_*, >= 0) of the threadlet running on the
 *  calling thread, or -ESRCH outside a threadlet. (For code that wants to
 *  route a call through asys_call only inside a threadlet: the interposer
 *  library libasys_interpose.so, docs/threadlets.md.) */
ASYS_API int  asys_threadlet_flags(void);
/** Runs the threadlets of the calling thread that are ready to resume
 *  (never blocks). Returns how many ran. */
ASYS_API int  asys_run(asys_ctx *ctx);
/** Linus' async(): runs system call `nr` on the default context. Inline
 *  when it would not block: ASYS_DONE, *status written. Otherwise 0:
 *  *status is written at completion and a cqe with user_data = status is
 *  posted on asys_default_ctx(). -errno if not accepted. */
ASYS_API int  asys_async(long *status, long nr, ...);
/** The process's default context (made on first use; anew in a forked child). */
ASYS_API asys_ctx *asys_default_ctx(void);

#ifdef __cplusplus
}
#endif
#endif /* ASYS_ASYS_H */
