#include "core/context.hpp"

#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <new>

#include "base/opcodes.hpp"
#include "base/raw_syscall.hpp"

namespace asys::internal {

std::atomic<uint64_t> g_fork_generation{0};

namespace {
constexpr unsigned kMaxWorkers = 1024;
constexpr unsigned kMaxInflight = 1u << 22;
}  // namespace

// All context objects ever made; destroyed ones wait on a free list.
struct registry {
    std::mutex mu;
    context *free = nullptr;

    static registry &get() {
        static registry *r = [] {
            auto *reg = new registry;  // never destroyed: outlives static dtors
            pthread_atfork([] { get().mu.lock(); }, [] { get().mu.unlock(); },
                           [] {
                               new (&get().mu) std::mutex;  // lock owner is gone
                               g_fork_generation.fetch_add(1, std::memory_order_relaxed);
                           });
            return reg;
        }();
        return *r;
    }
};

void register_fork_handlers() noexcept { (void)registry::get(); }

asys_ctx *context::handle() const noexcept {
    auto p = reinterpret_cast<uintptr_t>(this);
    return reinterpret_cast<asys_ctx *>(p | (uintptr_t{gen_.load(std::memory_order_relaxed)} << 48));
}

// The symbolic name of the errnos io_uring set-up can fail with.
static const char *errno_name(int e) noexcept {
    switch (e) {
        case EPERM: return "EPERM";
        case ENOSYS: return "ENOSYS";
        case ENOMEM: return "ENOMEM";
        case EINVAL: return "EINVAL";
        case EMFILE: return "EMFILE";
        case ENFILE: return "ENFILE";
        case EACCES: return "EACCES";
        case EFAULT: return "EFAULT";
        case EAGAIN: return "EAGAIN";
        case EBADF: return "EBADF";
        default: return "failed";
    }
}

static int parse_backend_env(unsigned *backend) {
    const char *e = getenv("ASYS_BACKEND");
    if (!e || !*e || !strcmp(e, "auto")) return 0;
    if (!strcmp(e, "pool")) *backend = ASYS_BACKEND_POOL;
    else if (!strcmp(e, "uring")) *backend = ASYS_BACKEND_URING;
    else return -EINVAL;
    return 0;
}

int context::create(const asys_params *params, asys_ctx **out) noexcept {
    if (!out) return -EFAULT;
    asys_params p{};
    if (params) p = *params;
    for (unsigned r : p.reserved)
        if (r) return -EINVAL;
    if (p.reserved16) return -EINVAL;
    for (unsigned b : p.class_workers)
        if (b > kMaxWorkers) return -EINVAL;
    if (p.flags & ~ASYS_CTX__ALL) return -EINVAL;
    if ((p.flags & ASYS_CTX_INLINE_NEVER) && (p.flags & ASYS_CTX_INLINE_ALWAYS)) return -EINVAL;
    if (p.workers > kMaxWorkers || p.max_inflight > kMaxInflight) return -EINVAL;
    if (p.backend > ASYS_BACKEND_URING) return -EINVAL;
    if (p.backend == ASYS_BACKEND_AUTO) {
        int rc = parse_backend_env(&p.backend);
        if (rc) return rc;
    }
    if (p.workers == 0) {
        long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
        p.workers = static_cast<unsigned>(ncpu > 0 ? ncpu * 4 : 4);
        if (p.workers > 256) p.workers = 256;
    }
    if (p.max_inflight == 0) p.max_inflight = 4096;
    if (p.ring_entries == 0) p.ring_entries = p.max_inflight;
    if (p.ring_entries < p.max_inflight || p.ring_entries > kMaxInflight) return -EINVAL;
    for (unsigned spin : {p.pool_spin_us, p.wait_spin_us, p.server_spin_us})
        if (spin != ASYS_SPIN_NONE && spin > 1000000) return -EINVAL;

    registry &reg = registry::get();
    context *c;
    {
        std::lock_guard lk(reg.mu);
        c = reg.free;
        if (c) reg.free = c->next_free_;
    }
    if (!c) {
        c = new (std::nothrow) context;
        if (!c) return -ENOMEM;
        if ((reinterpret_cast<uintptr_t>(c) & ~context::kHandlePtrMask) != 0) {  // cannot be tagged
            delete c;
            return -ENOMEM;
        }
    }
    int rc = c->init(p);
    if (rc < 0) {
        c->recycle();
        return rc;
    }
    // release: publishes everything init() wrote to from_handle()'s acquire.
    c->state_.store(1, std::memory_order_release);
    *out = c->handle();
    return 0;
}

namespace {
// A spin field in nanoseconds: 0 picks the default, ASYS_SPIN_NONE none.
int64_t spin_ns(unsigned us, unsigned default_us) noexcept {
    if (us == ASYS_SPIN_NONE) return 0;
    return int64_t{us ? us : default_us} * 1000;
}
}  // namespace

int context::init(const asys_params &p) noexcept {
    flags_ = p.flags;
    wait_spin_ns_ = spin_ns(p.wait_spin_us, 20);
    wait_spin_now_.store(wait_spin_ns_, std::memory_order_relaxed);
    callers_.store(0);  // a context recycled in a child of fork() may have counted parent threads
    ring_waiter_.store(false);
    ring_sleeping_.store(false);
    ring_sleeper_need_.store(0);
    spin_retry_.store(0, std::memory_order_relaxed);
    server_spin_ns_ = spin_ns(p.server_spin_us, 50);
    max_inflight_ = p.max_inflight;
    max_workers_ = p.workers;
    fork_gen_ = g_fork_generation.load(std::memory_order_relaxed);
    room_.store(p.max_inflight, std::memory_order_relaxed);
    inflight_.store(0, std::memory_order_relaxed);
    cqe_producers_.store(0, std::memory_order_relaxed);
    chain_step_limit.store(0, std::memory_order_relaxed);
    cnt.reset();
    int rc = slab_.init(p.max_inflight);
    if (rc) return rc;
    rc = ring_.init(p.ring_entries);
    if (rc) return rc;
    preferred_error_ = 0;
    preferred_fail_step_ = "";
    preferred_entry_ = general_entry_ = nullptr;
    backend_config cfg{p.ring_entries, p.workers, (p.flags & ASYS_CTX_LAZY_THREADS) != 0,
                       spin_ns(p.pool_spin_us, 50), {}};
    for (unsigned k = 0; k < ASYS_CLASS__COUNT; ++k) {  // 0: the class's default share; at most the bound
        const unsigned b = p.class_workers[k] ? p.class_workers[k] : p.workers / kSchedClasses[k].budget_divisor;
        cfg.budgets[k] = b < 1 ? 1 : b > p.workers ? p.workers : b;
    }
    for (unsigned i = 0; i < kBackendCount; ++i) {
        const backend_entry &e = kBackends[i];
        if (e.general) {
            if (!general_entry_) general_entry_ = &e;
            continue;
        }
        // A preferred backend: the one asked for, or the first one in AUTO.
        if (preferred_entry_ || (p.backend != ASYS_BACKEND_AUTO && p.backend != e.kind)) continue;
        preferred_entry_ = &e;
        int err = 0;
        const char *step = "";
        preferred_.reset(e.make(*this, cfg, &err, &step));
        if (!preferred_) {
            if (p.backend == e.kind) return err;  // forced: fail loudly
            preferred_error_ = err;
            preferred_fail_step_ = step;
        }
    }
    if (!general_entry_) return -ENOSYS;
    int err = 0;
    const char *step = "";
    general_.reset(general_entry_->make(*this, cfg, &err, &step));
    return general_ ? 0 : err;
}

int context::punt(op_slot *slot, bool atomic) noexcept {
    if (preferred_ && preferred_->accepts(*slot) && preferred_->punt(slot, atomic) == 0) return 0;
    // Not for the preferred backend, or it is full: the general one runs anything.
    return general_->punt(slot, atomic);
}

int context::punt_linked(op_slot *slot, linked_ops *lo) noexcept {
    return preferred_ ? preferred_->punt_linked(slot, lo) : -EOPNOTSUPP;
}

bool context::links(uint32_t opcode, const uint64_t (&args)[6]) const noexcept {
    return preferred_ && preferred_->links(opcode, args);
}

int context::cancel(uint64_t user_data) noexcept {
    int rp = general_->cancel(user_data);
    int ru = preferred_ ? preferred_->cancel(user_data) : -ENOENT;
    if (rp == -EALREADY || ru == -EALREADY) return -EALREADY;
    if (rp == 0 || ru == 0) return 0;
    return -ENOENT;
}

namespace {
/// The batch window open on this thread, and its context.
struct open_batch {
    context *ctx = nullptr;
    batch_window *w = nullptr;
};
__attribute__((tls_model("initial-exec"))) thread_local open_batch t_batch;

/// The context whose completion callback this thread is running (the
/// innermost one), so that destroy() from inside it fails instead of
/// waiting for the op whose callback is waiting for destroy().
__attribute__((tls_model("initial-exec"))) thread_local const context *t_in_callback_of = nullptr;

/// Runs a completion callback with t_in_callback_of naming its context.
inline void run_callback(const context *c, asys_callback_t cb, const asys_cqe &cqe, void *arg) noexcept {
    const context *outer = t_in_callback_of;
    t_in_callback_of = c;
    cb(&cqe, arg);
    t_in_callback_of = outer;
}
}  // namespace

void context::open_window(batch_window &w, batch_window **saved) noexcept {
    *saved = t_batch.ctx == this ? t_batch.w : nullptr;
    w.n = w.queued = 0;
    for (unsigned k = 0; k < ASYS_CLASS__COUNT; ++k) w.n_class[k] = w.done_class[k] = 0;
    t_batch = {this, &w};
}

void context::settle_window(batch_window &w) noexcept {
    if (w.settled) {
        slab_.free_many(w.settled_slot, w.settled);  // before the room: one slot per unit
        release_room(w.settled);
        retire(w.settled_producers, w.settled);
        w.settled = w.settled_producers = 0;
    }
    // One add per window and class for the counters (relaxed statistics).
    for (unsigned c = 0; c < ASYS_CLASS__COUNT; ++c) {
        if (w.done_class[c]) cnt.done_inline[c].fetch_add(w.done_class[c], std::memory_order_relaxed);
        if (w.n_class[c] > w.done_class[c])
            cnt.punted_direct[c].fetch_add(w.n_class[c] - w.done_class[c], std::memory_order_relaxed);
        w.n_class[c] = w.done_class[c] = 0;
    }
    // Entries still set belong to ops in flight: they complete with a cqe.
    for (unsigned k = 0; k < w.n; ++k) w.slot[k] = nullptr;
    w.n = w.queued = 0;
}

void context::close_window(batch_window *saved) noexcept {
    settle_window(*t_batch.w);
    t_batch = saved ? open_batch{this, saved} : open_batch{};
}

bool context::preferred_accepts(uint32_t opcode, const uint64_t (&args)[6], bool seekable) const noexcept {
    return preferred_ && preferred_->accepts_call(opcode, args, seekable);
}

void context::enter_window(batch_window &w) noexcept {
    // Enter the kernel for the window's ops (their completions are reaped
    // here, inside the window), then start the next window.
    ++w.enters;
    punt_window(w);
    preferred_->unplug();
    preferred_->plug();
    settle_window(w);
}

void context::punt_window(batch_window &w) noexcept {
    if (w.queued == w.n) return;
    // In flight from now on (new_window_slot left them uncounted).
    inflight_.fetch_add(w.n - w.queued, std::memory_order_relaxed);
    if (w.uncounted_producers) cqe_producers_.fetch_add(w.uncounted_producers);
    w.uncounted_producers = 0;
    // One SQ lock for the whole window; ops the ring has no room for go to
    // the general backend.
    unsigned k = w.queued + preferred_->punt_plugged(w.slot + w.queued, w.n - w.queued);
    for (; k < w.n; ++k) {
        op_slot *s = w.slot[k];
        if (preferred_->punt(s, false) == 0 || general_->punt(s, false) == 0) continue;
        complete(s, -EAGAIN, ASYS_PATH_POOL);  // no thread could be started for it
    }
    w.queued = w.n;
}

void context::finish_with_cqe(op_slot *slot, long res) noexcept {
    const asys_cqe cqe{slot->user_data, res, slot->opcode, ASYS_PATH_URING};
    const bool produces = !slot->callback;
    if (slot->ret_ptr) *slot->ret_ptr = res;
    finish(slot, cqe);
    retire(produces);
}

inline bool context::finish_in_window(op_slot *slot, long res) noexcept {
    const unsigned k = slot->batch_entry - 1u;
    batch_window *w = t_batch.w;
    // The slot must be this window's op, not a later op in the same slot
    // (the first completed on another thread, and the slot was reused).
    if (t_batch.ctx != this || k >= w->n || w->slot[k] != slot || w->reuse[k] != slot->reuse) return false;
    w->slot[k] = nullptr;  // once
    ++w->done_class[slot->sched];
    if (w->status[k]) *w->status[k] = ASYS_DONE;
    // Like an inline op, it posts a cqe (or calls back) only if asked to
    // or when the result has nowhere else to go.
    if ((slot->flags & ASYS_F_CQE_ALWAYS) || !slot->ret_ptr) {
        finish_with_cqe(slot, res);
        return true;
    }
    *slot->ret_ptr = res;
    // Its slot, room and in-flight counts are given back when the window
    // settles.
    w->settled_slot[w->settled++] = slot;
    if (!slot->callback) ++w->settled_producers;
    return true;
}

void context::plug() noexcept {
    if (preferred_) preferred_->plug();
}

void context::unplug() noexcept {
    if (preferred_) preferred_->unplug();
}

int context::info(asys_info *o) noexcept {
    if (!o) return -EFAULT;
    *o = asys_info{};
    o->backend = preferred_ ? preferred_entry_->kind : general_entry_->kind;
    o->uring_error = preferred_error_;
    o->uring_opcodes = preferred_ ? preferred_->opcode_mask() : 0;
    o->workers = general_->threads();
    o->iowq_max_workers = preferred_ ? preferred_->kernel_workers() : 0;
    if (preferred_error_ == 0) {
        if (preferred_)
            snprintf(o->reason, sizeof o->reason, "%s + %s", preferred_entry_->name, general_entry_->name);
        else
            snprintf(o->reason, sizeof o->reason, "%s only (forced)", general_entry_->name);
        return 0;
    }
    const char *hint = "";
    switch (-preferred_error_) {
        case EPERM: hint = " (kernel.io_uring_disabled or a seccomp filter)"; break;
        case ENOSYS: hint = " (no io_uring in this kernel, or a seccomp filter)"; break;
        case ENOMEM: hint = " (memory lock limit?)"; break;
        case EINVAL: hint = " (kernel too old for the ring's parameters)"; break;
        case EMFILE: case ENFILE: hint = " (out of file descriptors)"; break;
        default: break;
    }
    snprintf(o->reason, sizeof o->reason, "%s only: %s %s%s", general_entry_->name, preferred_fail_step_,
             errno_name(-preferred_error_), hint);
    return 0;
}

void context::recycle() noexcept {
    general_.reset();
    preferred_.reset();
    syslet_ext_.reset();
    driver_.store(nullptr, std::memory_order_relaxed);
    driver_ext_.reset();
    cancelling_.store(false, std::memory_order_relaxed);
    ring_.release();
    ring_.~completion_ring();
    new (&ring_) completion_ring;
    slab_.release();
    uint16_t g = static_cast<uint16_t>(gen_.load(std::memory_order_relaxed) + 1);
    gen_.store(g ? g : 1, std::memory_order_relaxed);
    state_.store(0, std::memory_order_release);
    registry &reg = registry::get();
    std::lock_guard lk(reg.mu);
    next_free_ = reg.free;
    reg.free = this;
}

void context::wait_for_inflight(unsigned how) noexcept {
    // Driver work of this thread (its threadlets) is run while waiting:
    // the ops it holds complete only when it runs.
    driver_work *dw = driver_.load(std::memory_order_acquire);
    auto done_or_work = [&] { return inflight_.load() == 0 || (dw && dw->ready_here()); };
    std::unique_lock lk(wait_mu_);
    sleepers_.fetch_add(1);
    wait_cv_.notify_all();  // blocked submitters see closing and leave
    while (inflight_.load() != 0) {
        if (dw) {
            lk.unlock();
            dw->run_here();
            lk.lock();
            if (inflight_.load() == 0) break;
        }
        if (how == ASYS_DESTROY_CANCEL) {
            // Interrupting a running call is a signal; one can arrive just
            // before the worker enters its syscall, so re-send until done.
            lk.unlock();
            general_->cancel_all();
            if (preferred_) preferred_->cancel_all();
            lk.lock();
            wait_cv_.wait_for(lk, std::chrono::milliseconds(2), done_or_work);
        } else {
            wait_cv_.wait(lk, done_or_work);
        }
    }
    sleepers_.fetch_sub(1);
}

int context::destroy(unsigned how) noexcept {
    if (how > ASYS_DESTROY_CANCEL) return -EINVAL;
    // From inside one of this context's callbacks: the op being completed
    // (and the thread running it) would wait for destroy, destroy for them.
    if (t_in_callback_of == this) return -EDEADLK;
    int expected = 1;
    // seq_cst: Dekker pairing with reserve_room() (room_ RMW, then state_ load).
    if (!state_.compare_exchange_strong(expected, 2)) return -EBADF;

    if (fork_gen_ != g_fork_generation.load(std::memory_order_relaxed)) {
        // In a child of fork(): the workers and any lock holders are gone.
        // Release memory and descriptors only.
        general_->abandon();
        (void)general_.release();
        if (preferred_) preferred_->abandon();
        (void)preferred_.release();
        new (&wait_mu_) std::mutex;
        new (&wait_cv_) std::condition_variable;
        new (&ext_mu_) std::mutex;
        sleepers_.store(0);
        ring_.forget_threads_after_fork();
        (void)syslet_ext_.release();  // may hold locks of threads that are gone
        driver_.store(nullptr, std::memory_order_relaxed);
        (void)driver_ext_.release();  // work of the parent's threads
        recycle();
        return 0;
    }

    if (how == ASYS_DESTROY_CANCEL) cancelling_.store(true, std::memory_order_relaxed);
    wake_ring_sleeper();  // it re-checks the state
    wait_for_inflight(how);
    ring_.shutdown();
    // Threads still inside asys_wait (the designated ring waiter, a thread
    // between its sleep in the ring and the completion ring), a batch or a
    // submission leave before the backends and the ring go away.
    {
        std::unique_lock lk(wait_mu_);
        sleepers_.fetch_add(1);
        while (callers_.load() != 0) {
            lk.unlock();
            wake_ring_sleeper();
            lk.lock();
            wait_cv_.wait_for(lk, std::chrono::milliseconds(2), [&] { return callers_.load() == 0; });
        }
        sleepers_.fetch_sub(1);
    }
    // A submitter that reserved room before the state changed may have
    // handed its ops to a backend after the wait above (a batch window's ops
    // are counted in flight only then): they complete (or are cancelled)
    // before the backends stop.
    wait_for_inflight(how);
    general_->stop();
    if (preferred_) preferred_->stop();
    recycle();
    return 0;
}

context::caller_scope::caller_scope(context &c) noexcept : c_(c) {
    // seq_cst, then the state: with destroy()'s state CAS, either destroy
    // waits for this caller or the caller sees closing.
    c_.callers_.fetch_add(1);
    ok_ = c_.state_.load() == 1;
}

context::caller_scope::~caller_scope() {
    if (c_.callers_.fetch_sub(1) == 1 && c_.state_.load() != 1) {
        std::lock_guard lk(c_.wait_mu_);
        c_.wait_cv_.notify_all();
    }
}

int context::room_taken_when_full(bool atomic, bool count_rejected) noexcept {
    for (;;) {
        release_room(1);  // the unit taken past empty
        if (atomic || !(flags_ & ASYS_CTX_BLOCK_WHEN_FULL)) {
            if (count_rejected) cnt.rejected_full.fetch_add(1, std::memory_order_relaxed);
            return -EAGAIN;
        }
        // Ops a batch holds back (plugged) may be the ones whose completion
        // frees room: submit them before sleeping for it.
        if (preferred_) preferred_->flush();
        {
            std::unique_lock lk(wait_mu_);
            sleepers_.fetch_add(1);
            wait_cv_.wait(lk, [&] { return room_.load() > 0 || state_.load() != 1; });
            sleepers_.fetch_sub(1);
        }
        if (state_.load() != 1) return -ESHUTDOWN;
        // seq_cst, as in reserve_room() (the lock released: a release_room may take it).
        if (room_.fetch_sub(1) > 0) return state_.load() == 1 ? 0 : room_taken_when_closing();
    }
}

int context::room_taken_when_closing() noexcept {
    release_room(1);
    return -ESHUTDOWN;
}

void context::release_room(unsigned n) noexcept {
    room_.fetch_add(n);
    if (sleepers_.load() != 0) {
        std::lock_guard lk(wait_mu_);
        wait_cv_.notify_all();
    }
}

unsigned context::reserve_window_slots(op_slot **out, unsigned k) noexcept {
    int64_t r = room_.load(std::memory_order_relaxed);
    for (;;) {
        if (r <= 0) return 0;
        const auto take = static_cast<unsigned>(r < k ? r : k);
        // seq_cst, then the state: as in reserve_room().
        if (!room_.compare_exchange_weak(r, r - take)) continue;
        if (state_.load() != 1) {
            release_room(take);
            return 0;
        }
        // One slot per unit of room: the slab holds at least `take`.
        for (unsigned got = slab_.alloc_many(out, take); got < take; ++got) out[got] = slab_.alloc();
        return take;
    }
}

void context::unreserve_window_slots(op_slot *const *s, unsigned n) noexcept {
    if (n == 0) return;
    slab_.free_many(s, n);  // before the room: one slot per unit
    release_room(n);
}

op_slot *context::new_slot(const asys_op &op) noexcept {
    op_slot *s = slab_.alloc();  // cannot fail: one slot per unit of room
    fill_slot(s, op, monotonic_ns());
    inflight_.fetch_add(1, std::memory_order_relaxed);
    if (!op.callback) cqe_producers_.fetch_add(1);
    return s;
}

void context::abandon_slot(op_slot *slot, bool keep_room) noexcept {
    const bool produced = !slot->callback;
    slab_.free(slot);
    inflight_.fetch_sub(1);
    if (produced) {
        cqe_producers_.fetch_sub(1);
        ring_.poke();  // a waiter may have counted on it
        wake_ring_sleeper();
    }
    if (!keep_room) release_room(1);
}

void context::finish(op_slot *slot, const asys_cqe &cqe) noexcept {
    asys_callback_t cb = slot ? slot->callback : nullptr;
    void *arg = slot ? slot->cb_arg : nullptr;
    if (slot) slab_.free(slot);
    if (cb) {
        run_callback(this, cb, cqe, arg);
        release_room(1);
    } else {
        push_cqe(cqe);  // room released when reaped
    }
}

void context::complete(op_slot *slot, long res, uint32_t path) noexcept {
    // A ring read that moved all it asked for: none of complete_checked()'s
    // cases applies (they are errors, short counts and features' slots).
    if (path == ASYS_PATH_URING && !slot->hooks && res > 0 &&
        (slot->opcode == ASYS_OP_PREAD || slot->opcode == ASYS_OP_READ) &&
        static_cast<uint64_t>(res) == slot->sys.args[2]) {
        if (!slot->batch_entry || !finish_in_window(slot, res)) deliver(slot, res, path);
        return;
    }
    complete_checked(slot, res, path);
}

void context::complete_checked(op_slot *slot, long res, uint32_t path) noexcept {
    // Results the general backend must give instead, by running the call
    // again (nothing happened the first time): EINTR, for a call a signal
    // interrupted in the kernel (not one we cancelled; the pool retries
    // it); EFAULT and EINVAL, which the ring may find before the errors
    // the call checks first (a read of a write-only fd into a bad buffer is
    // EBADF for read(2)). A NOP's result is the caller's value, even
    // -EINTR; a poll's errors are decided before it is punted.
    const bool ring = path == ASYS_PATH_URING;
    if (ring && ring_send_owes_sigpipe(slot->opcode, slot->sys.args, res)) kill(getpid(), SIGPIPE);
    if (ring && (res == -EINTR || ring_error_to_recheck(slot->opcode, slot->sys.args, res)) &&
        slot->opcode != ASYS_OP_NOP && slot->opcode != ASYS_OP_POLL && !slot->hooks &&
        !slot->cancel.load(std::memory_order_relaxed) && general_->punt(slot, false) == 0) {
        cnt.ring_retried.fetch_add(1, std::memory_order_relaxed);
        return;
    }
    // A short ring read of a memory device, or a short ring write to a
    // stream: the pool moves the rest, as read(2) or write(2) would have
    // (the slot's `done` carries what the ring moved). Not once it was
    // cancelled: the short count is then its result, as an interrupted
    // call's.
    if (ring && !slot->hooks && slot->done == 0 && !slot->cancel.load(std::memory_order_relaxed) &&
        (ring_short_read_to_finish(slot->opcode, slot->sys.args, res) ||
         ring_short_write_to_finish(slot->opcode, slot->sys.args, res))) {
        slot->done = static_cast<uint32_t>(res);
        if (general_->punt(slot, false) == 0) return;
        slot->done = 0;
    }
    // A feature's slot (a chain) may go on, e.g. after its linked sequence
    // was cut short; if the general backend cannot take it, the feature
    // ends it with -EAGAIN.
    if (slot->hooks && slot->hooks->completed && !slot->hooks->completed(*slot, &res)) {
        if (general_->punt(slot, false) == 0) return;
        res = -EAGAIN;
        (void)slot->hooks->completed(*slot, &res);
    }
    if (slot->batch_entry && finish_in_window(slot, res)) return;
    deliver(slot, res, path);
}

void context::deliver(op_slot *slot, long res, uint32_t path) noexcept {
    if (slot->ret_ptr) *slot->ret_ptr = res;
    const unsigned k = slot->sched;
    if (res == -ECANCELED) cnt.cancelled[k].fetch_add(1, std::memory_order_relaxed);
    if (slot->expired) cnt.expired[k].fetch_add(1, std::memory_order_relaxed);
    (path == ASYS_PATH_URING ? cnt.completed_uring : cnt.completed_pool)[k]
        .fetch_add(1, std::memory_order_relaxed);
    cnt.latency[k].add(static_cast<uint64_t>(monotonic_ns() - slot->submit_ns));
    if (slot->done) cnt.short_finished.fetch_add(1, std::memory_order_relaxed);
    const asys_cqe cqe{slot->user_data, res, slot->opcode, path};
    const bool produces = !slot->callback;
    finish(slot, cqe);
    retire(produces);
}

void context::retire(unsigned produced, unsigned n) noexcept {
    // After the push: a waiter never sees the op in neither count. Then
    // wake waiters whose hope rested on this op (another thread may have
    // taken its entry).
    if (produced) {
        if (ring_.may_strand(cqe_producers_.fetch_sub(produced) - produced)) ring_.poke();
        wake_hopeless_ring_sleeper();
    }
    // seq_cst decrement, then check sleepers: pairs with destroy()'s
    // increment of sleepers_ before it tests inflight_.
    if (inflight_.fetch_sub(n) == n && sleepers_.load() != 0) {
        std::lock_guard lk(wait_mu_);
        wait_cv_.notify_all();
    }
}

void context::post_inline(const asys_op &op, long res) noexcept {
    // Room was reserved by the caller before the attempt.
    if (op.callback) {
        const asys_cqe cqe{op.user_data, res, op.opcode, ASYS_PATH_INLINE};
        run_callback(this, op.callback, cqe, op.cb_arg);
        release_room(1);
    } else {
        push_cqe(asys_cqe{op.user_data, res, op.opcode, ASYS_PATH_INLINE});
    }
}

void context::driver_work_ready(int delta) noexcept {
    ring_.add_pending_work(delta);
    if (delta > 0 && sleepers_.load() != 0) {  // destroy() waits for this thread's work too
        std::lock_guard lk(wait_mu_);
        wait_cv_.notify_all();
    }
    if (delta > 0) wake_ring_sleeper();  // a thread asleep in the ring is woken for it too
}

namespace {
/// The context whose designated ring waiter this thread is (see wait()).
__attribute__((tls_model("initial-exec"))) thread_local const context *t_ring_sleeper = nullptr;

struct timespec monotonic_after(const struct timespec &rel) noexcept {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    constexpr time_t kMaxSec = time_t{1} << 31;  // ~68 years: no overflow below
    t.tv_sec += rel.tv_sec < kMaxSec ? rel.tv_sec : kMaxSec;
    t.tv_nsec += rel.tv_nsec;
    if (t.tv_nsec >= 1000000000) {
        t.tv_nsec -= 1000000000;
        ++t.tv_sec;
    }
    return t;
}

bool passed(const struct timespec &deadline) noexcept {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec > deadline.tv_sec || (t.tv_sec == deadline.tv_sec && t.tv_nsec >= deadline.tv_nsec);
}
}  // namespace

void context::push_cqe(const asys_cqe &cqe) noexcept {
    ring_.push(cqe);
    wake_ring_sleeper();
}

void context::wake_hopeless_ring_sleeper() noexcept {
    // A wait without a deadline ends (-EDEADLK) when the entries present
    // plus the ops that will post one fall below its min: entries popped
    // by another thread, or a producer that went away without posting.
    if (!preferred_) return;
    std::atomic_thread_fence(std::memory_order_seq_cst);
    const unsigned need = ring_sleeper_need_.load(std::memory_order_relaxed);
    if (need && ring_sleeping_.load(std::memory_order_relaxed) && t_ring_sleeper != this &&
        cqe_producers_.load() + ring_.count_relaxed() < need)
        preferred_->kick();
}

void context::wake_ring_sleeper() noexcept {
    if (!preferred_) return;
    // Dekker with sleep_in_ring(): the entry (or state) is published before
    // the flag is read; the sleeper sets the flag before it re-checks.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (ring_sleeping_.load(std::memory_order_relaxed) && t_ring_sleeper != this) preferred_->kick();
}

// The designated ring waiter: one thread at a time sleeps until the ring
// has completions (ppoll on the ring's fd) and reaps them itself, instead
// of a reaper thread reaping and waking it through the completion ring's
// condition variable (two context switches per wake-up). While it sleeps,
// the ring's eventfd is muted (the reaper stays asleep), and anything else
// that makes its wait end — a completion another thread pushes, a producer
// that goes away, a destroy — kicks it through the backend's kick eventfd,
// which stays readable until the waiter's next prepare_wait(). Returns when
// `min` entries are present, the wait can no longer be satisfied, the
// deadline passed, or only non-ring ops are left (the caller then sleeps on
// the completion ring).
void context::sleep_in_ring(unsigned min, const struct timespec *deadline) noexcept {
    bool expected = false;
    if (!ring_waiter_.compare_exchange_strong(expected, true)) return;  // another thread is it
    t_ring_sleeper = this;
    ring_sleeper_need_.store(deadline ? 0 : min, std::memory_order_relaxed);  // -EDEADLK only without one
    preferred_->begin_reaping();
    driver_work *dw = driver_.load(std::memory_order_acquire);
    auto done = [&] {
        return ring_.count_relaxed() >= min || state_.load() != 1 ||
               (!deadline && cqe_producers_.load() + ring_.count_relaxed() < min) || !preferred_->has_inflight() ||
               (dw && dw->ready_here());  // this thread has work to run first
    };
    for (;;) {
        preferred_->reap();
        if (done() || (deadline && passed(*deadline))) break;
        preferred_->prepare_wait();  // a kick after this wakes the sleep below
        ring_sleeping_.store(true, std::memory_order_relaxed);
        std::atomic_thread_fence(std::memory_order_seq_cst);
        if (preferred_->ready() || done()) {
            ring_sleeping_.store(false, std::memory_order_relaxed);
            continue;
        }
        const int rc = preferred_->wait_completions(deadline);
        ring_sleeping_.store(false, std::memory_order_relaxed);
        if (rc == -EOPNOTSUPP || rc == -ETIME) break;
    }
    preferred_->end_reaping();
    if (preferred_->ready()) preferred_->reap();
    t_ring_sleeper = nullptr;
    ring_sleeper_need_.store(0, std::memory_order_relaxed);
    ring_waiter_.store(false);
}

int context::wait(unsigned min, const struct timespec *timeout, asys_cqe *out,
                  unsigned max) noexcept {
    const caller_scope busy(*this);
    if (!busy.ok()) return -ESHUTDOWN;
    if (max > 0 && !out) return -EFAULT;
    if (min > max || min > ring_.capacity()) return -EINVAL;
    if (timeout && (timeout->tv_sec < 0 || timeout->tv_nsec < 0 || timeout->tv_nsec >= 1000000000))
        return -EINVAL;
    driver_work *dw = driver_.load(std::memory_order_acquire);
    if (!dw) return wait_entries(min, timeout, out, max, nullptr);
    // Runs this thread's driver work, waits, and runs it again whenever the
    // wait is woken for it, until entries arrive or the deadline passes.
    const auto start = std::chrono::steady_clock::now();
    for (;;) {
        dw->run_here();
        struct timespec left {};
        if (timeout) {
            const auto total = std::chrono::seconds(timeout->tv_sec) + std::chrono::nanoseconds(timeout->tv_nsec);
            auto rem = std::chrono::duration_cast<std::chrono::nanoseconds>(total - (std::chrono::steady_clock::now() - start));
            if (rem.count() < 0) rem = std::chrono::nanoseconds(0);
            left.tv_sec = static_cast<time_t>(rem.count() / 1000000000);
            left.tv_nsec = static_cast<long>(rem.count() % 1000000000);
        }
        const int n = wait_entries(min, timeout ? &left : nullptr, out, max, dw);
        if (n != completion_ring::kWokenForWork) return n;
    }
}

int context::wait_entries(unsigned min, const struct timespec *timeout, asys_cqe *out, unsigned max,
                          driver_work *dw) noexcept {
    if (!timeout && min > 0) {
        // Producers first: complete() pushes the cqe before it decrements
        // cqe_producers_, so an op counted by neither read cannot exist.
        const unsigned flying = cqe_producers_.load();
        if (flying + ring_.size() < min) return -EDEADLK;
    }
    auto work_ready = [](void *w) { return static_cast<driver_work *>(w)->ready_here(); };
    auto ring_wait = [&](const struct timespec *t) {
        return dw ? ring_.wait_or_work(min, t, out, max, &cqe_producers_, work_ready, dw)
                  : ring_.wait(min, t, out, max, &cqe_producers_);
    };
    // Entries enough to fill the caller's array already wait: nothing to
    // reap or spin for (CQEs left in the ring wake the reaper as usual).
    if (max > 0 && ring_.count_relaxed() >= max) return finish_wait(ring_wait(timeout));
    // Inside a completion callback of this context's ring, this thread is
    // the one that reaps: waiting here for more would wait on itself.
    if (preferred_ && preferred_->reaping_here() && min > ring_.size()) return -EDEADLK;
    if (preferred_) preferred_->reap();
    // Spin briefly before sleeping: a completion that lands within a few
    // microseconds then costs no wake-up, and ring CQEs are reaped here.
    // The spin adapts (see next_spin_ns): it shrinks while spins end
    // without the completions (a device that takes longer: spinning only
    // burns a core) and grows back while they arrive in time.
    const int64_t spin = spin_ns_now();
    if (min > 0 && spin > 0 && ring_.count_relaxed() < min &&
        !(timeout && timeout->tv_sec == 0 && timeout->tv_nsec == 0)) {
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::nanoseconds(spin);
        if (preferred_) preferred_->begin_reaping();  // this thread reaps while it spins
        bool in_time = true;
        for (unsigned i = 1; ring_.count_relaxed() < min; ++i) {
            if (preferred_ && preferred_->ready()) preferred_->reap();
            if ((i & 63) == 0 && dw && dw->ready_here()) break;  // this thread has work to run first
            if ((i & 63) == 0 && std::chrono::steady_clock::now() > deadline) {
                in_time = false;
                break;
            }
#if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
#endif
        }
        if (preferred_) {
            preferred_->end_reaping();
            if (preferred_->ready()) preferred_->reap();
        }
        spin_outcome(spin, in_time);
    }
    if (preferred_ && min > 0 && ring_.count_relaxed() < min && preferred_->has_inflight() &&
        !(timeout && timeout->tv_sec == 0 && timeout->tv_nsec == 0)) {
        // Sleep in the ring while its ops are what the wait needs; then the
        // completion ring's wait below finds them (or sleeps for the rest).
        struct timespec deadline{};
        if (timeout) deadline = monotonic_after(*timeout);
        sleep_in_ring(min, timeout ? &deadline : nullptr);
        if (timeout) {
            struct timespec now, left{0, 0};
            clock_gettime(CLOCK_MONOTONIC, &now);
            int64_t ns = (deadline.tv_sec - now.tv_sec) * 1000000000 + (deadline.tv_nsec - now.tv_nsec);
            if (ns > 0) left = {static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)};
            return finish_wait(ring_wait(&left));
        }
    }
    return finish_wait(ring_wait(timeout));
}

int context::finish_wait(int n) noexcept {
    if (n > 0) {
        release_room(static_cast<unsigned>(n));
        wake_hopeless_ring_sleeper();  // the entries it counted on may be these
    }
    return n;
}

// The adaptive wait spin: halves after a spin that ended without the
// completions, doubles (up to asys_params.wait_spin_us) after one that got
// them. Below 1 us it is off; then one wait in 16 tries a short spin, so a
// workload that turns fast again is noticed. Relaxed: a heuristic shared by
// the context's waiters.
int64_t context::spin_ns_now() noexcept {
    const int64_t s = wait_spin_now_.load(std::memory_order_relaxed);
    if (s > 0 || wait_spin_ns_ == 0) return s;
    const unsigned k = spin_retry_.load(std::memory_order_relaxed) + 1;
    spin_retry_.store(k, std::memory_order_relaxed);
    return (k % 16) == 0 ? kMinSpinNs : 0;
}

void context::spin_outcome(int64_t spun, bool in_time) noexcept {
    int64_t next = in_time ? spun * 2 : spun / 2;
    if (next > wait_spin_ns_) next = wait_spin_ns_;
    if (next < kMinSpinNs) next = in_time ? kMinSpinNs : 0;
    wait_spin_now_.store(next, std::memory_order_relaxed);
}

int context::peek(asys_cqe *out, unsigned max) noexcept {
    if (max > 0 && !out) return -EFAULT;
    run_driver_work();
    if (preferred_) preferred_->reap();
    unsigned n = ring_.pop(out, max);
    return finish_wait(static_cast<int>(n));
}

int context::stats(asys_stats *o) noexcept {
    if (!o) return -EFAULT;
    auto r = [](const std::atomic<uint64_t> &a) { return a.load(std::memory_order_relaxed); };
    *o = asys_stats{};
    o->done_inline = counters::sum(cnt.done_inline);
    o->punted_probe = counters::sum(cnt.punted_probe);
    o->punted_direct = counters::sum(cnt.punted_direct);
    o->submitted = o->done_inline + o->punted_probe + o->punted_direct;
    o->completed_pool = counters::sum(cnt.completed_pool);
    o->completed_uring = counters::sum(cnt.completed_uring);
    o->short_finished = r(cnt.short_finished);
    o->cancelled = counters::sum(cnt.cancelled);
    o->rejected_full = r(cnt.rejected_full);
    o->workers = general_->threads();
    o->inflight = inflight_.load(std::memory_order_relaxed);
    o->ring_retried = r(cnt.ring_retried);
    return 0;
}

}  // namespace asys::internal
