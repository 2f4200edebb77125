// libasys-aio: POSIX AIO (aio_read, aio_write, aio_fsync, aio_error,
// aio_return, aio_suspend, aio_cancel, lio_listio and their 64 variants) on
// the public C ABI of libasys (include/asys/asys.h), exported under glibc's
// symbol versions so that an unchanged program binds to it under LD_PRELOAD
// (docs/aio.md).
//
// One process-wide asys context carries every request. A request is one asys
// op whose user_data is the request's id; it completes either inline (a cached
// read: asys_submit returns ASYS_DONE, and the control block's status is final
// before aio_read returns) or through the op's callback on the thread that
// completed it. Requests on one descriptor are independent ops and run
// concurrently, except where POSIX asks for call order: the writes of an
// O_APPEND descriptor, and the reads and the writes of a descriptor that
// cannot seek (a pipe, a socket, a terminal) each run one after another, in
// a lane per descriptor and direction (see "call order" below).
//
// The control block's status lives in glibc's private fields of struct aiocb:
// __abs_prio holds the state (one of the magic values below, so that a block
// that was never submitted, or holds stack garbage, is told apart),
// __error_code and __return_value the result.
//
// A registry of requests in flight (sharded by control block address) answers
// "is this block in flight" (a block reused while in flight is refused with
// EINVAL), aio_cancel by descriptor, and aio_fsync's "every request queued
// on the descriptor before it" (the fsync waits for them, then runs).
#include <aio.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdlib>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <new>
#include <vector>

#include "asys/asys.h"

static_assert(sizeof(struct aiocb) == sizeof(struct aiocb64), "aiocb64 is aiocb on this ABI");
static_assert(offsetof(struct aiocb, aio_offset) == offsetof(struct aiocb64, aio_offset),
              "aiocb64 is aiocb on this ABI");
static_assert(sizeof(off_t) == 8, "64-bit offsets");

namespace {

// ------------------------------------------------------------------ state
// Values of aiocb::__abs_prio. Anything else: never submitted here.
constexpr int state_in_flight = 0x61696f31; // "aio1"
constexpr int state_done = 0x61696f32;      // completed, status not yet retrieved
constexpr int state_returned = 0x61696f33;  // aio_return was called

// Highest aio_reqprio accepted (glibc's AIO_PRIO_DELTA_MAX, what
// sysconf(_SC_AIO_PRIO_DELTA_MAX) reports). Priorities are accepted and not
// otherwise used, as POSIX allows.
constexpr int prio_delta_max = 20;

int load_state(const aiocb *cb) { return __atomic_load_n(&cb->__abs_prio, __ATOMIC_ACQUIRE); }
void store_state(aiocb *cb, int s) { __atomic_store_n(&cb->__abs_prio, s, __ATOMIC_RELEASE); }

enum class kind : uint8_t { read, write, fsync, fdatasync };

struct lio_group;

struct request {
    aiocb *cb = nullptr;
    int fd = -1;
    kind what = kind::read;
    bool positional = true; // pread/pwrite; false after ESPIPE (a pipe, a socket)
    void *buf = nullptr;
    size_t len = 0;
    off_t off = 0;
    struct sigevent notify{};
    long result = 0;
    uint64_t id = 0;
    lio_group *group = nullptr;
    // Registry links (under the shard's lock).
    request *prev = nullptr, *next = nullptr;
    // Deferred fsyncs waiting for this request (under the shard's lock).
    std::vector<request *> dependents;
    // An fsync's count of requests it waits for; -1 once cancelled.
    std::atomic<int> waiting_for{0};
    // The registry's reference (dropped by finish) plus one per holder that
    // may touch the request after it finished: each request a deferred fsync
    // waits for, and aio_cancel between picking and cancelling it.
    std::atomic<int> refs{1};
    // Its lane (under the lane shard's lock): entered by every read and
    // write; lane_next is the request that waits for this one to end,
    // lane_prev the one this one waits for while lane_waiting (not started).
    bool in_lane = false;
    std::atomic<bool> lane_waiting{false};
    request *lane_prev = nullptr, *lane_next = nullptr;
};

void put_request(request *r) {
    if (r->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) delete r;
}

// ------------------------------------------------------------ lio groups
struct lio_group {
    std::atomic<int> remaining{1}; // requests + the submitter's bias
    std::atomic<int> refs{1};      // requests + the submitter
    std::atomic<uint32_t> done{0}; // futex word for LIO_WAIT
    bool wait = false;
    struct sigevent notify{};
};

void put_group(lio_group *g) {
    if (g->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) delete g;
}

// ------------------------------------------------------------- the context
std::mutex g_ctx_mutex;
std::atomic<asys_ctx *> g_ctx{nullptr};
std::atomic<uint64_t> g_next_id{1};

// At exit, with no request in flight, the context is destroyed (its threads
// stopped, its memory freed: a leak checker sees nothing left). With requests
// still in flight it is left alone, as their completions still need it.
// Registered when the context is made, so that it runs before exit handlers
// registered earlier (a leak checker's).
void release_at_exit();

// How many reads and writes may be in flight (submitted, or waiting in
// their lane) at once; more are refused with EAGAIN. Also the context's
// limit of ops in flight.
unsigned max_inflight() {
    static const unsigned limit = [] {
        unsigned n = 16384;
        if (const char *env = getenv("ASYS_AIO_MAX_INFLIGHT")) {
            long v = strtol(env, nullptr, 10);
            if (v > 0 && v <= 4194304) n = static_cast<unsigned>(v);
        }
        return n;
    }();
    return limit;
}
std::atomic<unsigned> g_transfers{0}; // reads and writes accepted, not finished

asys_ctx *context() {
    asys_ctx *c = g_ctx.load(std::memory_order_acquire);
    if (c) return c;
    std::lock_guard<std::mutex> lk(g_ctx_mutex);
    c = g_ctx.load(std::memory_order_relaxed);
    if (c) return c;
    asys_params p{};
    p.max_inflight = max_inflight();
    p.flags = ASYS_CTX_LAZY_THREADS;
    if (asys_ctx_create(&p, &c) < 0) return nullptr;
    g_ctx.store(c, std::memory_order_release);
    static const int registered = atexit(release_at_exit);
    (void)registered;
    return c;
}

// ------------------------------------------------------------- call order
// POSIX: "If O_APPEND is set for the file descriptor, or if aio_fildes is
// associated with a device that is incapable of seeking, write operations
// append to the file in the same order as the calls were made" (aio_write).
// Reads of a device that cannot seek take its bytes in call order too (as
// glibc, which runs one descriptor's requests one after another).
//
// Every read and write enters the lane of its descriptor and direction: a
// lane exists while a request of it is in flight, and names the latest one
// (its tail). A request that finds its lane empty runs at once, without a
// system call; so does one behind others on a descriptor that can seek and
// is not O_APPEND (one lseek for a read, fcntl(F_GETFL) and lseek for a write
// tell). Otherwise it waits behind the tail (not submitted) and is started
// when that one ends. Reads and writes have separate lanes: a read of a
// socket that waits for data does not hold back a write on it. The answer
// is kept in the lane while it exists (one check per busy period, not per
// request: at a depth of 32 the check cost a tenth of the pool's O_DIRECT
// read throughput); a descriptor closed and reused, or switched to
// O_APPEND, while requests of its lane are still in flight keeps the lane's
// answer until the lane empties.
enum class lane_order : int8_t { unknown, any, call };
struct lane {
    int fd;
    kind dir; // kind::read or kind::write
    request *tail;
    lane_order order = lane_order::unknown;
};
struct lane_shard {
    std::mutex lock;
    std::vector<lane> lanes;
};
constexpr unsigned lane_shard_count = 64;
lane_shard g_lanes[lane_shard_count];

lane_shard &lane_shard_of(int fd) { return g_lanes[static_cast<unsigned>(fd) % lane_shard_count]; }

// Caller holds the shard's lock.
lane *find_lane_locked(lane_shard &s, int fd, kind dir) {
    for (lane &l : s.lanes)
        if (l.fd == fd && l.dir == dir) return &l;
    return nullptr;
}

// Whether r must wait for the requests of its lane before it (set
// *in_order): a write of an O_APPEND descriptor, a read or write of one that
// cannot seek. 0, or EBADF (a closed descriptor, or a write of one not open
// for writing), the caller's errno left as it was.
int needs_call_order(request *r, bool *in_order) {
    const int saved_errno = errno;
    int e = 0;
    *in_order = false;
    if (r->what == kind::write) {
        int fl = fcntl(r->fd, F_GETFL);
        if (fl < 0 || (fl & O_ACCMODE) == O_RDONLY) e = EBADF;
        else if (fl & O_APPEND) *in_order = true;
    }
    if (!e && !*in_order && lseek(r->fd, 0, SEEK_CUR) < 0) {
        if (errno == ESPIPE) {
            *in_order = true;
            r->positional = false; // read/write: pread/pwrite would say ESPIPE
        } else if (errno == EBADF) {
            e = EBADF;
        }
    }
    errno = saved_errno;
    return e;
}

// Enters r (a read or write, registered, not submitted) in its lane. 0 and
// *waits: r waits behind another request, which starts it (the caller must
// not touch r again); 0 and !*waits: the caller submits r now; EBADF: r is
// in no lane.
int lane_enter(request *r, bool *waits) {
    *waits = false;
    lane_shard &s = lane_shard_of(r->fd);
    {
        std::lock_guard<std::mutex> lk(s.lock);
        if (!find_lane_locked(s, r->fd, r->what)) {
            s.lanes.push_back(lane{r->fd, r->what, r});
            r->in_lane = true;
            return 0;
        }
    }
    bool in_order = false;
    lane_order known = lane_order::unknown;
    {
        std::lock_guard<std::mutex> lk(s.lock);
        if (const lane *l = find_lane_locked(s, r->fd, r->what)) known = l->order;
    }
    if (known == lane_order::unknown) {
        if (int e = needs_call_order(r, &in_order)) return e;
    } else {
        in_order = known == lane_order::call;
        // A stream, or a write of an O_APPEND file (which appends either
        // way): read/write, not pread/pwrite.
        if (in_order) r->positional = false;
    }
    std::lock_guard<std::mutex> lk(s.lock);
    lane *l = find_lane_locked(s, r->fd, r->what);
    if (!l) { // the others ended meanwhile
        s.lanes.push_back(lane{r->fd, r->what, r});
    } else {
        if (l->order == lane_order::unknown) l->order = in_order ? lane_order::call : lane_order::any;
        if (in_order) {
            r->lane_prev = l->tail;
            l->tail->lane_next = r;
            r->lane_waiting.store(true, std::memory_order_release);
            *waits = true;
        }
        l->tail = r;
    }
    r->in_lane = true;
    return 0;
}

// r ends (or was never submitted): it leaves its lane. Returns the request
// that waited for it, now no longer waiting: the caller starts it.
request *lane_leave(request *r) {
    if (!r->in_lane) return nullptr;
    lane_shard &s = lane_shard_of(r->fd);
    std::lock_guard<std::mutex> lk(s.lock);
    request *next = r->lane_next;
    if (next) {
        next->lane_prev = nullptr;
        next->lane_waiting.store(false, std::memory_order_release);
        r->lane_next = nullptr;
    }
    lane *l = find_lane_locked(s, r->fd, r->what);
    if (l && l->tail == r) {
        *l = s.lanes.back();
        s.lanes.pop_back();
    }
    r->in_lane = false;
    return next;
}

// Takes r out of its lane if it is still waiting there (never started): the
// requests around it keep their order. False if it was started.
bool lane_cancel(request *r) {
    lane_shard &s = lane_shard_of(r->fd);
    std::lock_guard<std::mutex> lk(s.lock);
    if (!r->lane_waiting.load(std::memory_order_relaxed)) return false;
    request *prev = r->lane_prev, *next = r->lane_next;
    prev->lane_next = next;
    if (next) {
        next->lane_prev = prev;
    } else if (lane *l = find_lane_locked(s, r->fd, r->what); l && l->tail == r) {
        l->tail = prev;
    }
    r->lane_prev = r->lane_next = nullptr;
    r->lane_waiting.store(false, std::memory_order_relaxed);
    r->in_lane = false;
    return true;
}

// --------------------------------------------------------------- registry
constexpr unsigned shard_count = 64;
struct shard {
    std::mutex lock;
    request *head = nullptr;
};
shard g_shards[shard_count];

shard &shard_of(const aiocb *cb) {
    auto a = reinterpret_cast<uintptr_t>(cb);
    return g_shards[(a >> 6 ^ a >> 12) % shard_count];
}

// Caller holds the shard's lock.
request *find_locked(shard &s, const aiocb *cb) {
    for (request *r = s.head; r; r = r->next)
        if (r->cb == cb) return r;
    return nullptr;
}

void unlink_locked(shard &s, request *r) {
    if (r->prev) r->prev->next = r->next;
    else s.head = r->next;
    if (r->next) r->next->prev = r->prev;
    r->prev = r->next = nullptr;
}

// Registers r for its control block and marks the block in flight. False if
// the block is in flight already.
bool register_request(request *r) {
    shard &s = shard_of(r->cb);
    std::lock_guard<std::mutex> lk(s.lock);
    if (find_locked(s, r->cb)) return false;
    r->next = s.head;
    if (s.head) s.head->prev = r;
    s.head = r;
    r->cb->__error_code = EINPROGRESS;
    r->cb->__return_value = 0;
    store_state(r->cb, state_in_flight);
    return true;
}

// Takes a request back that was never submitted (a synchronous failure): the
// block is left as never submitted.
void unregister_unsubmitted(request *r) {
    shard &s = shard_of(r->cb);
    {
        std::lock_guard<std::mutex> lk(s.lock);
        unlink_locked(s, r);
        store_state(r->cb, 0);
    }
    delete r;
}

// Calls fn(request*) for every request in flight on fd, under each shard's lock.
template <class F> void for_each_on_fd(int fd, F &&fn) {
    for (auto &s : g_shards) {
        std::lock_guard<std::mutex> lk(s.lock);
        for (request *r = s.head; r; r = r->next)
            if (r->fd == fd) fn(r);
    }
}

// ------------------------------------------------- aio_suspend's wake-ups
std::atomic<uint32_t> g_completions{0}; // bumped after every completion
std::atomic<uint32_t> g_suspended{0};   // threads in aio_suspend

long futex(std::atomic<uint32_t> *word, int op, uint32_t val, const timespec *abs) {
    return syscall(SYS_futex, reinterpret_cast<uint32_t *>(word), op, val, abs, nullptr,
                   FUTEX_BITSET_MATCH_ANY);
}

// Waits while *word == val, until the absolute CLOCK_MONOTONIC deadline (or
// forever). 0: woken or the value changed; ETIMEDOUT; EINTR.
int futex_wait(std::atomic<uint32_t> *word, uint32_t val, const timespec *deadline) {
    if (futex(word, FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG, val, deadline) == 0) return 0;
    return errno == EAGAIN ? 0 : errno;
}

void futex_wake_all(std::atomic<uint32_t> *word) {
    syscall(SYS_futex, reinterpret_cast<uint32_t *>(word), FUTEX_WAKE | FUTEX_PRIVATE_FLAG,
            INT_MAX, nullptr, nullptr, 0);
}

// ------------------------------------------------------------ notification
struct thread_note {
    void (*fn)(sigval);
    sigval value;
};

void *notify_thread_main(void *arg) {
    thread_note n = *static_cast<thread_note *>(arg);
    delete static_cast<thread_note *>(arg);
    n.fn(n.value);
    return nullptr;
}

// Delivers a completion notification as the sigevent asks.
void deliver(const struct sigevent &ev) {
    if (ev.sigev_notify == SIGEV_SIGNAL && ev.sigev_signo > 0) {
        siginfo_t info;
        std::memset(&info, 0, sizeof info);
        info.si_signo = ev.sigev_signo;
        info.si_code = SI_ASYNCIO;
        info.si_pid = getpid();
        info.si_uid = getuid();
        info.si_value = ev.sigev_value;
        syscall(SYS_rt_sigqueueinfo, getpid(), ev.sigev_signo, &info);
    } else if (ev.sigev_notify == SIGEV_THREAD && ev.sigev_notify_function) {
        auto *n = new (std::nothrow) thread_note{ev.sigev_notify_function, ev.sigev_value};
        if (!n) return;
        pthread_attr_t own;
        pthread_attr_t *attr = ev.sigev_notify_attributes;
        if (!attr) {
            pthread_attr_init(&own);
            attr = &own;
        }
        pthread_t t;
        if (pthread_create(&t, attr, notify_thread_main, n) == 0) pthread_detach(t);
        else delete n;
        if (attr == &own) pthread_attr_destroy(&own);
    }
}

// EINVAL for a sigevent this library cannot deliver.
bool sigevent_valid(const struct sigevent &ev) {
    switch (ev.sigev_notify) {
    case SIGEV_NONE: return true;
    case SIGEV_SIGNAL: // 0 is the null signal: nothing is sent (a zeroed aiocb asks for it)
        return ev.sigev_signo >= 0 && ev.sigev_signo < NSIG;
    case SIGEV_THREAD: return ev.sigev_notify_function != nullptr;
    default: return false;
    }
}

// ------------------------------------------------------------- completion
void submit_deferred_fsync(request *r);
int submit_op(request *r);

void group_member_done(lio_group *g) {
    if (g->remaining.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        if (g->wait) {
            g->done.store(1, std::memory_order_release);
            futex_wake_all(&g->done);
        } else {
            deliver(g->notify);
        }
    }
    put_group(g);
}

// One dependency of a deferred fsync finished; the last one submits it.
void release_dependency(request *f) {
    int v = f->waiting_for.load(std::memory_order_acquire);
    while (v > 0 && !f->waiting_for.compare_exchange_weak(v, v - 1, std::memory_order_acq_rel)) {
    }
    if (v == 1) submit_deferred_fsync(f);
    put_request(f);
}

// Publishes the final status of r in its control block, then notifies.
// Returns the request of r's lane that waited for it (see lane_leave).
request *finish(request *r, long res) {
    request *next_in_lane = lane_leave(r);
    if (r->what == kind::read || r->what == kind::write) g_transfers.fetch_sub(1, std::memory_order_relaxed);
    std::vector<request *> deps;
    shard &s = shard_of(r->cb);
    {
        std::lock_guard<std::mutex> lk(s.lock);
        aiocb *cb = r->cb;
        cb->__return_value = res < 0 ? -1 : res;
        cb->__error_code = res < 0 ? static_cast<int>(-res) : 0;
        store_state(cb, state_done);
        unlink_locked(s, r);
        deps.swap(r->dependents);
    }
    g_completions.fetch_add(1, std::memory_order_seq_cst);
    if (g_suspended.load(std::memory_order_seq_cst) > 0) futex_wake_all(&g_completions);
    deliver(r->notify);
    if (r->group) group_member_done(r->group);
    for (request *f : deps) release_dependency(f);
    put_request(r);
    return next_in_lane;
}

// Submits r; its result when that is known at once (done inline, or not
// accepted: the errno), else false (the callback will come).
bool submit_for_result(request *r, long *res) {
    int rc = submit_op(r);
    if (rc == 0) return false;
    *res = rc == ASYS_DONE ? r->result : rc;
    return true;
}

// r's op ended with res. A positional transfer on a descriptor that cannot
// seek is run again as read/write, as the offset is ignored there (what
// POSIX says of devices that cannot seek); else r is finished. Returns the
// request of r's lane to start next, if any.
request *settle(request *r, long res) {
    if (res == -ESPIPE && r->positional && (r->what == kind::read || r->what == kind::write)) {
        r->positional = false;
        if (!submit_for_result(r, &res)) return nullptr;
    }
    return finish(r, res);
}

// Starts the requests of a lane that waited, one after another while they
// complete at once (a loop, not a recursion, however many waited).
void start_lane_from(request *next) {
    long res = 0;
    while (next && submit_for_result(next, &res)) next = settle(next, res);
}

// The op's result arrived (inline or in the callback).
void on_result(request *r, long res) { start_lane_from(settle(r, res)); }

void on_completion(const asys_cqe *cqe, void *arg) {
    auto *r = static_cast<request *>(arg);
    on_result(r, cqe->res);
}

// ------------------------------------------------- O_DIRECT descriptors
// A read or write of an O_DIRECT descriptor always reaches the device: the
// inline attempt can only cost (a nonblocking direct read may even wait for
// the device on the caller). Such requests skip it (ASYS_F_ASYNC). Whether a
// descriptor is O_DIRECT is remembered per descriptor number and looked up
// again (fcntl F_GETFL) on the first request and every 64th, so a number
// reused for another file, or F_SETFL, is noticed soon; a stale hint only
// changes the path a request takes, never its result.
constexpr int direct_hint_fds = 1 << 16;
enum : uint8_t { hint_unknown = 0, hint_buffered = 1, hint_direct = 2 };
std::atomic<uint8_t> g_direct_hint[direct_hint_fds];

bool is_direct(int fd) {
    if (fd < 0 || fd >= direct_hint_fds) return false;
    thread_local unsigned recheck = 0;
    uint8_t h = g_direct_hint[fd].load(std::memory_order_relaxed);
    if (h == hint_unknown || (++recheck & 63) == 0) {
        int fl = fcntl(fd, F_GETFL);
        h = fl >= 0 && (fl & O_DIRECT) ? hint_direct : hint_buffered;
        g_direct_hint[fd].store(h, std::memory_order_relaxed);
    }
    return h == hint_direct;
}

// Submits r's op. ASYS_DONE (r->result holds the result; positional retry
// already folded in is the caller's business), 0 (the callback will come),
// or a negative errno (nothing was accepted).
int submit_op(request *r) {
    asys_ctx *ctx = context();
    if (!ctx) return -EAGAIN;
    asys_op op;
    switch (r->what) {
    case kind::read:
        if (r->positional) asys_prep_pread(&op, r->fd, r->buf, r->len, r->off);
        else asys_prep_read(&op, r->fd, r->buf, r->len);
        break;
    case kind::write:
        if (r->positional) asys_prep_pwrite(&op, r->fd, r->buf, r->len, r->off);
        else asys_prep_write(&op, r->fd, r->buf, r->len);
        break;
    case kind::fsync: asys_prep_fsync(&op, r->fd); break;
    case kind::fdatasync: asys_prep_fdatasync(&op, r->fd); break;
    }
    if ((r->what == kind::read || r->what == kind::write) && is_direct(r->fd)) op.flags |= ASYS_F_ASYNC;
    op.ret_ptr = &r->result;
    op.user_data = r->id;
    op.callback = on_completion;
    op.cb_arg = r;
    int rc = asys_submit(ctx, &op);
    if (rc == -EOWNERDEAD) { // the parent's context, in a forked child
        g_ctx.store(nullptr, std::memory_order_release);
        ctx = context();
        rc = ctx ? asys_submit(ctx, &op) : -EAGAIN;
    }
    return rc;
}

void submit_deferred_fsync(request *f) {
    long res = 0;
    if (submit_for_result(f, &res)) finish(f, res); // an fsync is in no lane
}

// ----------------------------------------------------------- enqueueing
request *make_request(aiocb *cb, kind what) {
    auto *r = new (std::nothrow) request;
    if (!r) return nullptr;
    r->cb = cb;
    r->fd = cb->aio_fildes;
    r->what = what;
    r->buf = const_cast<void *>(cb->aio_buf);
    r->len = cb->aio_nbytes;
    r->off = cb->aio_offset;
    r->notify = cb->aio_sigevent;
    r->id = g_next_id.fetch_add(1, std::memory_order_relaxed);
    return r;
}

// The checks POSIX lets an implementation make at the call (errno, or 0).
int check_block(const aiocb *cb, bool transfer) {
    if (cb->aio_reqprio < 0 || cb->aio_reqprio > prio_delta_max) return EINVAL;
    if (!sigevent_valid(cb->aio_sigevent)) return EINVAL;
    if (transfer && cb->aio_nbytes > static_cast<size_t>(SSIZE_MAX)) return EINVAL;
    if (cb->aio_fildes < 0) return EBADF;
    return 0;
}

// Enqueues one transfer. 0: accepted (possibly already complete); else an
// errno detected at the call, the block untouched (left as not submitted).
int enqueue(aiocb *cb, kind what, lio_group *group) {
    if (int e = check_block(cb, true)) return e;
    if (g_transfers.fetch_add(1, std::memory_order_relaxed) >= max_inflight()) {
        g_transfers.fetch_sub(1, std::memory_order_relaxed);
        return EAGAIN;
    }
    request *r = make_request(cb, what);
    if (!r || !register_request(r)) {
        g_transfers.fetch_sub(1, std::memory_order_relaxed);
        if (!r) return EAGAIN;
        delete r;
        return EBUSY; // the block is in flight already (EINVAL to the caller)
    }
    if (group) {
        group->remaining.fetch_add(1, std::memory_order_relaxed);
        group->refs.fetch_add(1, std::memory_order_relaxed);
        r->group = group;
    }
    bool waits = false;
    int rc = -lane_enter(r, &waits);
    if (rc == 0 && waits) return 0; // started when the request before it ends
    if (rc == 0) rc = submit_op(r);
    if (rc == ASYS_DONE && r->result == -ESPIPE && r->positional) { // a pipe or socket: see settle
        r->positional = false;
        rc = submit_op(r);
    }
    if (rc == ASYS_DONE && r->result == -EBADF && !group) rc = -EBADF; // reported at the call
    if (rc < 0) {
        if (group) {
            group->remaining.fetch_sub(1, std::memory_order_relaxed);
            group->refs.fetch_sub(1, std::memory_order_relaxed);
        }
        request *next = lane_leave(r); // one queued behind it meanwhile runs now
        unregister_unsubmitted(r);
        g_transfers.fetch_sub(1, std::memory_order_relaxed);
        start_lane_from(next);
        return -rc;
    }
    if (rc == ASYS_DONE) on_result(r, r->result);
    return 0;
}

int fail(int e) {
    errno = e;
    return -1;
}

int do_aio_rw(aiocb *cb, kind what) {
    int e = enqueue(cb, what, nullptr);
    return e ? fail(e == EBUSY ? EINVAL : e) : 0;
}

int do_aio_fsync(int op, aiocb *cb) {
    if (op != O_SYNC && op != O_DSYNC) return fail(EINVAL);
    if (int e = check_block(cb, false)) return fail(e);
    if (fcntl(cb->aio_fildes, F_GETFD) < 0) return fail(EBADF);
    request *r = make_request(cb, op == O_DSYNC ? kind::fdatasync : kind::fsync);
    if (!r) return fail(EAGAIN);
    if (!register_request(r)) {
        delete r;
        return fail(EINVAL);
    }
    // Wait for every request on the descriptor queued before this one. The
    // count starts at 1 (this call's bias, with its reference) so that none
    // of them can submit the fsync before every dependency is recorded.
    r->waiting_for.store(1, std::memory_order_relaxed);
    r->refs.store(2, std::memory_order_relaxed);
    for_each_on_fd(r->fd, [&](request *q) {
        if (q == r || q->what == kind::fsync || q->what == kind::fdatasync) return;
        q->dependents.push_back(r);
        r->refs.fetch_add(1, std::memory_order_relaxed);
        r->waiting_for.fetch_add(1, std::memory_order_relaxed);
    });
    release_dependency(r);
    return 0;
}

// ------------------------------------------------------------ inquiry
int do_aio_error(const aiocb *cb) {
    switch (load_state(cb)) {
    case state_in_flight: return EINPROGRESS;
    case state_done: return cb->__error_code;
    default: return fail(EINVAL);
    }
}

ssize_t do_aio_return(aiocb *cb) {
    switch (load_state(cb)) {
    case state_done: {
        ssize_t v = cb->__return_value;
        store_state(cb, state_returned);
        return v;
    }
    case state_in_flight: return fail(EINPROGRESS);
    default: return fail(EINVAL);
    }
}

// CLOCK_MONOTONIC now + rel.
timespec deadline_after(const timespec &rel) {
    timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    now.tv_sec += rel.tv_sec;
    now.tv_nsec += rel.tv_nsec;
    if (now.tv_nsec >= 1000000000L) {
        now.tv_nsec -= 1000000000L;
        now.tv_sec += 1;
    }
    return now;
}

bool timespec_valid(const timespec &t) { return t.tv_sec >= 0 && t.tv_nsec >= 0 && t.tv_nsec < 1000000000L; }

int do_aio_suspend(const aiocb *const list[], int nent, const timespec *timeout) {
    if (nent < 0) return fail(EINVAL);
    if (timeout && !timespec_valid(*timeout)) return fail(EINVAL);
    timespec deadline{};
    if (timeout) deadline = deadline_after(*timeout);
    for (;;) {
        uint32_t seen = g_completions.load(std::memory_order_seq_cst);
        // Reap what the ring has completed on this thread (its callbacks
        // publish the statuses), rather than sleeping until the reaper thread
        // does and wakes this one.
        if (asys_ctx *c = g_ctx.load(std::memory_order_acquire)) {
            asys_cqe none;
            asys_peek(c, &none, 0);
        }
        // Nothing to wait for (no entry, or only NULL ones): 0 at once, as
        // glibc (a wait for no request could only end at the timeout).
        bool any_in_flight = false;
        for (int i = 0; i < nent; ++i) {
            if (!list[i]) continue;
            if (load_state(list[i]) != state_in_flight) return 0;
            any_in_flight = true;
        }
        if (!any_in_flight) return 0;
        if (timeout && timeout->tv_sec == 0 && timeout->tv_nsec == 0) return fail(EAGAIN);
        g_suspended.fetch_add(1, std::memory_order_seq_cst);
        int e = futex_wait(&g_completions, seen, timeout ? &deadline : nullptr);
        g_suspended.fetch_sub(1, std::memory_order_seq_cst);
        if (e == ETIMEDOUT) return fail(EAGAIN);
        if (e == EINTR) return fail(EINTR);
    }
}

// ------------------------------------------------------------- cancel
enum class cancel_outcome { canceled, not_canceled, all_done };

// How long aio_cancel waits for a running request it interrupted to end (an
// interrupted read of a pipe or socket ends at once; a transfer the kernel
// does not interrupt is reported as not cancelled after this).
constexpr long interrupted_wait_ns = 10 * 1000 * 1000;

// Waits (bounded) until the block is no longer in flight. True if it ended.
bool wait_until_done(const aiocb *cb, long ns) {
    timespec deadline = deadline_after(timespec{0, ns});
    for (;;) {
        uint32_t seen = g_completions.load(std::memory_order_seq_cst);
        if (load_state(cb) != state_in_flight) return true;
        g_suspended.fetch_add(1, std::memory_order_seq_cst);
        int e = futex_wait(&g_completions, seen, &deadline);
        g_suspended.fetch_sub(1, std::memory_order_seq_cst);
        if (e == ETIMEDOUT) return load_state(cb) != state_in_flight;
    }
}

cancel_outcome cancel_one(const aiocb *cb, uint64_t id, request *deferred_fsync, request *queued) {
    if (queued && lane_cancel(queued)) { // waiting in its lane: never started (none waits for it now)
        finish(queued, -ECANCELED);
        return cancel_outcome::canceled;
    }
    if (deferred_fsync) { // an fsync still waiting for earlier requests: never started
        int v = deferred_fsync->waiting_for.load(std::memory_order_acquire);
        while (v > 0 &&
               !deferred_fsync->waiting_for.compare_exchange_weak(v, -1, std::memory_order_acq_rel)) {
        }
        if (v > 0) {
            finish(deferred_fsync, -ECANCELED);
            return cancel_outcome::canceled;
        }
    }
    asys_ctx *ctx = context();
    int rc = ctx ? asys_cancel(ctx, id) : -ENOENT;
    if (rc == 0) return cancel_outcome::canceled;
    // Not an op now: done, or (started from its lane a moment ago) about to
    // be submitted.
    if (rc != -EALREADY) return queued && load_state(cb) == state_in_flight ? cancel_outcome::not_canceled
                                                                             : cancel_outcome::all_done;
    // It was running and was interrupted: cancelled if that stopped it.
    if (wait_until_done(cb, interrupted_wait_ns) && load_state(cb) == state_done &&
        cb->__error_code == ECANCELED)
        return cancel_outcome::canceled;
    return cancel_outcome::not_canceled;
}

int do_aio_cancel(int fd, aiocb *cb) {
    if (fcntl(fd, F_GETFD) < 0) return fail(EBADF);
    if (cb && cb->aio_fildes != fd) return fail(EINVAL);
    struct target {
        const aiocb *cb;
        uint64_t id;
        request *deferred; // an fsync not yet submitted, with a reference held
        request *queued;   // a transfer waiting in its lane, with a reference held
    };
    std::vector<target> targets;
    auto pick = [&](request *r) {
        bool waiting = (r->what == kind::fsync || r->what == kind::fdatasync) &&
                       r->waiting_for.load(std::memory_order_acquire) > 0;
        bool queued = r->lane_waiting.load(std::memory_order_acquire);
        if (waiting || queued) r->refs.fetch_add(1, std::memory_order_relaxed);
        targets.push_back({r->cb, r->id, waiting ? r : nullptr, queued ? r : nullptr});
    };
    if (cb) {
        shard &s = shard_of(cb);
        std::lock_guard<std::mutex> lk(s.lock);
        if (request *r = find_locked(s, cb)) pick(r);
    } else {
        for_each_on_fd(fd, pick);
    }
    // Those waiting in a lane first: cancelling the request before one would
    // start it.
    std::stable_partition(targets.begin(), targets.end(), [](const target &t) { return t.queued != nullptr; });
    bool any_canceled = false, any_running = false;
    for (const target &t : targets) {
        switch (cancel_one(t.cb, t.id, t.deferred, t.queued)) {
        case cancel_outcome::canceled: any_canceled = true; break;
        case cancel_outcome::not_canceled: any_running = true; break;
        case cancel_outcome::all_done: break;
        }
        if (t.deferred) put_request(t.deferred);
        if (t.queued) put_request(t.queued);
    }
    if (any_running) return AIO_NOTCANCELED;
    return any_canceled ? AIO_CANCELED : AIO_ALLDONE;
}

// ----------------------------------------------------------- lio_listio
int do_lio_listio(int mode, aiocb *const list[], int nent, struct sigevent *sig) {
    if (mode != LIO_WAIT && mode != LIO_NOWAIT) return fail(EINVAL);
    if (nent < 0) return fail(EINVAL);
    if (mode == LIO_NOWAIT && sig && !sigevent_valid(*sig)) return fail(EINVAL);
    auto *g = new (std::nothrow) lio_group;
    if (!g) return fail(EAGAIN);
    g->wait = mode == LIO_WAIT;
    if (!g->wait && sig) g->notify = *sig;
    else g->notify.sigev_notify = SIGEV_NONE;
    g->refs.fetch_add(1, std::memory_order_relaxed); // the submitter's, held across the wait
    bool any_again = false, any_failed = false;
    for (int i = 0; i < nent; ++i) {
        aiocb *cb = list[i];
        if (!cb || cb->aio_lio_opcode == LIO_NOP) continue;
        int e;
        if (cb->aio_lio_opcode == LIO_READ) e = enqueue(cb, kind::read, g);
        else if (cb->aio_lio_opcode == LIO_WRITE) e = enqueue(cb, kind::write, g);
        else e = EINVAL;
        if (e == EBUSY) {
            any_failed = true; // in flight already: its status is its own request's
        } else if (e) {
            // Not queued: the block's error status says why.
            cb->__error_code = e;
            cb->__return_value = -1;
            store_state(cb, state_done);
            (e == EAGAIN ? any_again : any_failed) = true;
        }
    }
    group_member_done(g); // drops the bias (and one reference)
    int result = 0;
    if (g->wait) {
        while (g->done.load(std::memory_order_acquire) == 0) {
            int e = futex_wait(&g->done, 0, nullptr);
            if (e == EINTR) {
                put_group(g);
                return fail(EINTR);
            }
        }
        for (int i = 0; i < nent && !any_failed; ++i)
            if (list[i] && list[i]->aio_lio_opcode != LIO_NOP && load_state(list[i]) == state_done &&
                list[i]->__error_code != 0)
                any_failed = true;
    }
    put_group(g);
    if (any_again) result = fail(EAGAIN);
    else if (any_failed) result = fail(EIO);
    return result;
}

// After fork the child has none of the parent's requests (they are the
// parent's) and must not use its context.
void forget_after_fork() {
    g_ctx.store(nullptr, std::memory_order_relaxed);
    for (auto &s : g_shards) {
        new (&s.lock) std::mutex;
        s.head = nullptr;
    }
    for (auto &s : g_lanes) {
        new (&s.lock) std::mutex;
        s.lanes.clear();
    }
    g_transfers.store(0, std::memory_order_relaxed);
    new (&g_ctx_mutex) std::mutex;
}

[[maybe_unused]] const int g_atfork = pthread_atfork(nullptr, nullptr, forget_after_fork);

void release_at_exit() {
    for (auto &s : g_shards) {
        std::lock_guard<std::mutex> lk(s.lock);
        if (s.head) return;
    }
    std::lock_guard<std::mutex> lk(g_ctx_mutex);
    if (asys_ctx *c = g_ctx.exchange(nullptr)) asys_ctx_destroy(c, ASYS_DESTROY_DRAIN);
}


} // namespace

// --------------------------------------------------------------- exports
// Each public name under every version glibc has it (see asys-aio.map). The
// entry points have internal names; aliases carry the versions.
#define ASYS_AIO_HIDDEN extern "C" __attribute__((visibility("hidden")))

ASYS_AIO_HIDDEN int asys_aio_read(aiocb *cb) { return do_aio_rw(cb, kind::read); }
ASYS_AIO_HIDDEN int asys_aio_write(aiocb *cb) { return do_aio_rw(cb, kind::write); }
ASYS_AIO_HIDDEN int asys_aio_fsync(int op, aiocb *cb) { return do_aio_fsync(op, cb); }
ASYS_AIO_HIDDEN int asys_aio_error(const aiocb *cb) { return do_aio_error(cb); }
ASYS_AIO_HIDDEN ssize_t asys_aio_return(aiocb *cb) { return do_aio_return(cb); }
ASYS_AIO_HIDDEN int asys_aio_suspend(const aiocb *const list[], int nent, const timespec *timeout) {
    return do_aio_suspend(list, nent, timeout);
}
ASYS_AIO_HIDDEN int asys_aio_cancel(int fd, aiocb *cb) { return do_aio_cancel(fd, cb); }
ASYS_AIO_HIDDEN int asys_lio_listio(int mode, aiocb *const list[], int nent, struct sigevent *sig) {
    return do_lio_listio(mode, list, nent, sig);
}
ASYS_AIO_HIDDEN void asys_aio_init(const aioinit *) {}

// alias name@@GLIBC_2.34 (the default, what new links bind to) and
// name@GLIBC_2.2.5 for older binaries.
#define ASYS_AIO_VERSIONED(name, impl, ver, tag, at)                                            \
    extern "C" __attribute__((alias(#impl), visibility("default"))) decltype(impl) name##_##tag; \
    __asm__(".symver " #name "_" #tag "," #name at #ver);
#define ASYS_AIO_EXPORT(name, impl)                                                            \
    ASYS_AIO_VERSIONED(name, impl, GLIBC_2.34, v2_34, "@@")                                    \
    ASYS_AIO_VERSIONED(name, impl, GLIBC_2.2.5, v2_2_5, "@")

#pragma GCC diagnostic push
#ifndef __clang__ // g++: the aliases do not repeat attributes it inferred (nothrow)
#pragma GCC diagnostic ignored "-Wmissing-attributes"
#endif
ASYS_AIO_EXPORT(aio_read, asys_aio_read)
ASYS_AIO_EXPORT(aio_read64, asys_aio_read)
ASYS_AIO_EXPORT(aio_write, asys_aio_write)
ASYS_AIO_EXPORT(aio_write64, asys_aio_write)
ASYS_AIO_EXPORT(aio_fsync, asys_aio_fsync)
ASYS_AIO_EXPORT(aio_fsync64, asys_aio_fsync)
ASYS_AIO_EXPORT(aio_error, asys_aio_error)
ASYS_AIO_EXPORT(aio_error64, asys_aio_error)
ASYS_AIO_EXPORT(aio_return, asys_aio_return)
ASYS_AIO_EXPORT(aio_return64, asys_aio_return)
ASYS_AIO_EXPORT(aio_suspend, asys_aio_suspend)
ASYS_AIO_EXPORT(aio_suspend64, asys_aio_suspend)
ASYS_AIO_EXPORT(aio_cancel, asys_aio_cancel)
ASYS_AIO_EXPORT(aio_cancel64, asys_aio_cancel)
ASYS_AIO_EXPORT(aio_init, asys_aio_init)
ASYS_AIO_EXPORT(lio_listio, asys_lio_listio)
ASYS_AIO_EXPORT(lio_listio64, asys_lio_listio)
ASYS_AIO_VERSIONED(lio_listio, asys_lio_listio, GLIBC_2.4, v2_4, "@")
ASYS_AIO_VERSIONED(lio_listio64, asys_lio_listio, GLIBC_2.4, v2_4, "@")
#pragma GCC diagnostic pop
