#include "pool/worker_pool.hpp"

#include <linux/futex.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/uio.h>

#include <cerrno>
#include <ctime>
#include <mutex>
#include <new>

#include "base/denylist.hpp"
#include "base/opcodes.hpp"
#include "base/raw_syscall.hpp"
#include "base/sigpipe.hpp"
#include "base/fault.hpp"

namespace asys::internal {
namespace {

// The result of a cancelled op: -ECANCELED, or the bytes it had already
// moved (the first part of a transfer that went on here): those are not
// undone, so the op ends as an interrupted call would, with their count.
long cancelled_result(const op_slot &s) noexcept {
    return s.done ? static_cast<long>(s.done) : -ECANCELED;
}


void futex_wait(std::atomic<uint32_t> *w, uint32_t expected) noexcept {
    raw_syscall6(SYS_futex, reinterpret_cast<uint64_t>(w), FUTEX_WAIT_PRIVATE, expected, 0, 0, 0);
}
void futex_wake(std::atomic<uint32_t> *w) noexcept {
    raw_syscall6(SYS_futex, reinterpret_cast<uint64_t>(w), FUTEX_WAKE_PRIVATE, 1, 0, 0, 0);
}
void on_cancel_signal(int) noexcept {}

// A worker that runs out of work spins a while (asys_params.pool_spin_us)
// before it sleeps, so a steady stream of punts never pays a futex wake-up
// (see docs/benchmarks.md for what one costs). At most one spins at once.
// While a cancelled op still runs, its worker gets the cancel signal again
// this often (see worker::timer).
constexpr long kResendNs = 1000 * 1000;

inline int64_t now_ns() noexcept {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

long run_slot(op_slot &s) noexcept;

}  // namespace

int worker_pool::cancel_signal() noexcept {
    // No function-local static (its guard could be held across fork() by a
    // thread that does not exist in the child): installing the same
    // handler twice is harmless, so racing first calls both install it.
    static std::atomic<bool> installed{false};
    const int s = library_signal();
    if (!installed.load(std::memory_order_acquire)) {
        struct sigaction sa {};
        sa.sa_handler = on_cancel_signal;  // no SA_RESTART: interrupts the call
        sigemptyset(&sa.sa_mask);
        sigaction(s, &sa, nullptr);
        installed.store(true, std::memory_order_release);
    }
    return s;
}

backend *worker_pool::make(completion_sink &sink, const backend_config &cfg, int *err,
                           const char **step) noexcept {
    auto *b = new (std::nothrow) worker_pool(sink);
    if (!b) {
        *err = -ENOMEM;
        *step = "memory";
        return nullptr;
    }
    if (int rc = b->start(cfg.workers, cfg.lazy, cfg.spin_ns, cfg.budgets); rc < 0) {
        *err = rc;
        *step = "worker threads";
        delete b;
        return nullptr;
    }
    return b;
}

worker_pool::~worker_pool() {
    if (reserved_) stop();  // e.g. a context whose creation failed later on
}

int worker_pool::start(unsigned n, bool lazy, int64_t spin_ns,
                       const unsigned (&budgets)[ASYS_CLASS__COUNT]) noexcept {
    cancel_signal();
    workers_.reset(new (std::nothrow) worker[n]);
    if (!workers_) return -ENOMEM;
    max_ = n;
    spin_ns_ = spin_ns;
    for (unsigned c = 0; c < ASYS_CLASS__COUNT; ++c) {
        classes_[c].budget = budgets[c] < 1 ? 1 : budgets[c] > n ? n : budgets[c];
        classes_[c].borrows = kSchedClasses[c].borrows;
    }
    for (unsigned i = 0; i < n; ++i) workers_[i].pool = this;
    if (lazy) return 0;  // punt() starts them as work arrives
    for (unsigned i = 0; i < n; ++i) {
        reserved_ = i + 1;
        if (int rc = spawn(workers_[i]); rc < 0) {
            stop();
            return rc;
        }
    }
    return 0;
}

int worker_pool::spawn(worker &w) noexcept {
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    // Workers start with every signal but the cancel signal blocked, so the
    // application's signals never land on (or interrupt) pool threads.
    sigset_t all, old;
    sigfillset(&all);
    sigdelset(&all, cancel_signal());
    pthread_sigmask(SIG_SETMASK, &all, &old);
    const int rc = fault::fail_thread_create() ? EAGAIN : pthread_create(&w.thread, &attr, thread_main, &w);
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    pthread_attr_destroy(&attr);
    if (rc != 0) return -rc;
    w.started = true;
    nworkers_.fetch_add(1, std::memory_order_relaxed);
    return 0;
}

void *worker_pool::thread_main(void *arg) noexcept {
    auto *w = static_cast<worker *>(arg);
    const auto tid = static_cast<pid_t>(raw_syscall6(SYS_gettid, 0, 0, 0, 0, 0, 0));
    struct sigevent sev {};
    sev.sigev_notify = SIGEV_THREAD_ID;
    sev.sigev_signo = cancel_signal();
    sev._sigev_un._tid = tid;  // sigev_notify_thread_id (glibc 2.36 names only the field)
    w->has_timer = timer_create(CLOCK_MONOTONIC, &sev, &w->timer) == 0;
    w->tid.store(tid, std::memory_order_release);
    w->pool->loop(*w);
    return nullptr;
}

void worker_pool::unlink_locked(op_slot *s) noexcept {
    class_queue &q = classes_[s->sched];
    const unsigned lane = s->bulk;
    if (s->prev) s->prev->next = s->next; else q.head[lane] = s->next;
    if (s->next) s->next->prev = s->prev; else q.tail[lane] = s->prev;
    s->prev = s->next = nullptr;
    s->queued = 0;
    --q.queued;
    --queued_;
}

op_slot *worker_pool::pop_any_locked() noexcept {
    for (class_queue &q : classes_)
        for (op_slot *h : q.head)
            if (h) {
                unlink_locked(h);
                return h;
            }
    return nullptr;
}

bool worker_pool::runnable_locked(unsigned c) const noexcept {
    const class_queue &q = classes_[c];
    // Ops of c already queued are served first; within its budget a worker
    // is free for this one, and beyond it only a class that borrows may
    // take an idle worker.
    return q.running + q.queued < q.budget || q.borrows;
}

op_slot *worker_pool::pick_locked(op_slot **expired) noexcept {
    for (;;) {
        if (queued_ == 0) return nullptr;
        // Within budget first (round-robin from the cursor), then borrowing.
        unsigned chosen = ASYS_CLASS__COUNT;
        for (int pass = 0; pass < 2 && chosen == ASYS_CLASS__COUNT; ++pass)
            for (unsigned i = 0; i < ASYS_CLASS__COUNT; ++i) {
                const unsigned c = (next_class_ + i) % ASYS_CLASS__COUNT;
                const class_queue &q = classes_[c];
                if (q.queued && (pass == 0 ? q.running < q.budget : q.borrows)) {
                    chosen = c;
                    break;
                }
            }
        if (chosen == ASYS_CLASS__COUNT) return nullptr;
        class_queue &q = classes_[chosen];
        op_slot *s = q.head[0] ? q.head[0] : q.head[1];
        unlink_locked(s);
        next_class_ = (chosen + 1) % ASYS_CLASS__COUNT;
        if ((s->flags & ASYS_F_DEADLINE) &&
            now_ns() >= s->deadline.tv_sec * 1000000000LL + s->deadline.tv_nsec) {
            s->expired = 1;
            s->next = *expired;
            *expired = s;
            continue;
        }
        ++q.running;
        ++running_;
        return s;
    }
}

void worker_pool::complete_expired(op_slot *expired) noexcept {
    while (expired) {
        op_slot *nx = expired->next;
        expired->next = nullptr;
        sink_.complete(expired, -ETIME, ASYS_PATH_POOL);
        expired = nx;
    }
}

void worker_pool::sched_state(sched_snapshot *out) const noexcept {
    std::lock_guard lk(mu_);
    for (unsigned c = 0; c < ASYS_CLASS__COUNT; ++c) {
        out->queued[c] = classes_[c].queued;
        out->busy[c] = classes_[c].running;
        out->budget[c] = classes_[c].budget;
    }
    out->workers = nworkers_.load(std::memory_order_relaxed);
    out->idle = idle_count_ + (spinning_ ? 1u : 0u);
}

void worker_pool::loop(worker &w) noexcept {
    std::unique_lock lk(mu_);
    bool spun = false;
    for (;;) {
        op_slot *expired = nullptr;
        op_slot *s = pick_locked(&expired);
        if (expired) {
            lk.unlock();
            complete_expired(expired);
            lk.lock();
            if (!s) continue;
        }
        if (!s) {
            if (stopping_) return;
            if (!spun && spin_ns_ > 0 && !spinning_ && !stopping_) {
                spinning_ = true;
                spinner_claimed_ = false;
                spin_kick_.store(0, std::memory_order_relaxed);
                lk.unlock();
                const int64_t deadline = now_ns() + spin_ns_;
                for (unsigned i = 1;; ++i) {
                    if (spin_kick_.load(std::memory_order_relaxed) != 0) break;
                    if ((i & 63) == 0 && now_ns() > deadline) break;
                    cpu_relax();
                }
                lk.lock();
                spinning_ = spinner_claimed_ = false;
                spun = true;
                continue;  // re-check the queues under mu_
            }
            spun = false;
            // relaxed: the store is published to the waker by mu_.
            w.wake.store(0, std::memory_order_relaxed);
            w.next_idle = idle_;
            idle_ = &w;
            ++idle_count_;
            lk.unlock();
            // acquire pairs with the waker's release store of 1.
            while (w.wake.load(std::memory_order_acquire) == 0) futex_wait(&w.wake, 0);
            lk.lock();
            continue;
        }
        spun = false;
        w.current = s;
        const uint8_t cls = s->sched;
        lk.unlock();

        long res;
        for (;;) {
            res = run_slot(*s);
            // A NOP's result is the caller's value, even -EINTR: no retry.
            if (res != -EINTR || (s->opcode == ASYS_OP_NOP && res == static_cast<long>(s->sys.args[0]))) break;
            if (s->cancel.load(std::memory_order_relaxed)) {
                res = cancelled_result(*s);
                break;
            }
            // A stray interrupt (a cancel signal meant for an op that had
            // already finished): nothing was transferred, run it again.
        }
        // (A feature's op — a chain, a threadlet — may have made such a
        // call anywhere inside it.)
        if (res == -EPIPE || s->hooks) forward_sigpipe();

        lk.lock();
        w.current = nullptr;
        --classes_[cls].running;
        --running_;
        const bool was_cancelled = s->cancel.load(std::memory_order_relaxed);
        if (w.resending) {  // stop the re-sends before anything else runs here
            const struct itimerspec off {};
            timer_settime(w.timer, 0, &off, nullptr);
            w.resending = false;
        }
        lk.unlock();
        if (was_cancelled) {
            // A cancel signal may still be pending for this thread. Any
            // syscall return delivers it (the handler is a no-op), so it can
            // never interrupt a call made by the completion callback.
            raw_syscall6(SYS_getppid, 0, 0, 0, 0, 0, 0);
        }
        sink_.complete(s, res, ASYS_PATH_POOL);
        lk.lock();
    }
}

int worker_pool::punt(op_slot *slot, bool atomic) noexcept {
    worker *w;
    worker *fresh = nullptr;  // a worker to start (lazy pools)
    {
        std::lock_guard lk(mu_);
        class_queue &q = classes_[slot->sched];
        // Whether a free worker could take it now (else it waits for a
        // worker of its class, or for one to be lent).
        const bool runnable = runnable_locked(slot->sched);
        // A spinner not yet claimed by a queued op counts as idle.
        const bool spinner_free = spinning_ && !spinner_claimed_;
        if (atomic && (!runnable || (!idle_ && !spinner_free))) return -EAGAIN;  // never waits for (or starts) a thread
        const unsigned lane = slot->bulk;
        slot->next = nullptr;
        slot->prev = q.tail[lane];
        if (q.tail[lane]) q.tail[lane]->next = slot; else q.head[lane] = slot;
        q.tail[lane] = slot;
        slot->queued = 1;
        ++q.queued;
        ++queued_;
        w = nullptr;
        if (runnable) {
            if (spinner_free) {  // the spinner takes it
                spinner_claimed_ = true;
                spin_kick_.store(1, std::memory_order_relaxed);
            } else if ((w = idle_) != nullptr) {
                idle_ = w->next_idle;
                --idle_count_;
            } else if (reserved_ < max_) {
                fresh = &workers_[reserved_++];  // nobody free for it: a new worker takes it
            }
        }
    }
    if (w) {
        // release: the worker's acquire load sees the queue state via mu_
        // anyway; this orders the wake flag itself.
        w->wake.store(1, std::memory_order_release);
        futex_wake(&w->wake);
    }
    if (fresh && spawn(*fresh) < 0) {
        // No thread: if no worker exists at all, nobody would ever run the
        // op, so it is handed back (not accepted); otherwise a running
        // worker takes it when it is done.
        std::lock_guard lk(mu_);
        if (nworkers_.load(std::memory_order_relaxed) == 0 && slot->queued) {
            unlink_locked(slot);
            return -EAGAIN;
        }
    }
    return 0;
}

void worker_pool::interrupt_running_locked() noexcept {
    const pid_t pid = static_cast<pid_t>(raw_syscall6(SYS_getpid, 0, 0, 0, 0, 0, 0));
    for (unsigned i = 0; i < reserved_; ++i) {
        worker &w = workers_[i];
        if (!w.current || !w.current->cancel.load(std::memory_order_relaxed)) continue;
        if (!fault::drop_cancel_signal())
            raw_syscall6(SYS_tgkill, static_cast<uint64_t>(pid),
                         static_cast<uint64_t>(w.tid.load(std::memory_order_acquire)),
                         static_cast<uint64_t>(cancel_signal()), 0, 0, 0);
        if (w.has_timer && !w.resending) {  // and again until the op ends
            struct itimerspec every {};
            every.it_value.tv_nsec = kResendNs;
            every.it_interval.tv_nsec = kResendNs;
            w.resending = timer_settime(w.timer, 0, &every, nullptr) == 0;
        }
    }
}

int worker_pool::cancel(uint64_t user_data) noexcept {
    op_slot *cancelled = nullptr;  // chained through ->next after unlinking
    bool running = false;
    {
        std::lock_guard lk(mu_);
        for (class_queue &q : classes_)
            for (op_slot *head : q.head)
                for (op_slot *s = head; s;) {
                    op_slot *nx = s->next;
                    if (s->user_data == user_data) {
                        unlink_locked(s);
                        s->next = cancelled;
                        cancelled = s;
                        running |= s->done != 0;  // started: it ends with the bytes it moved
                    }
                    s = nx;
                }
        for (unsigned i = 0; i < reserved_; ++i) {
            op_slot *c = workers_[i].current;
            if (c && c->user_data == user_data) {
                c->cancel.store(1, std::memory_order_relaxed);
                running = true;
            }
        }
        if (running) interrupt_running_locked();
    }
    const bool any = cancelled != nullptr;
    while (cancelled) {
        op_slot *nx = cancelled->next;
        sink_.complete(cancelled, cancelled_result(*cancelled), ASYS_PATH_POOL);
        cancelled = nx;
    }
    if (running) return -EALREADY;
    return any ? 0 : -ENOENT;
}

void worker_pool::cancel_all() noexcept {
    op_slot *cancelled = nullptr;
    {
        std::lock_guard lk(mu_);
        while (op_slot *s = pop_any_locked()) {
            s->next = cancelled;
            cancelled = s;
        }
        for (unsigned i = 0; i < reserved_; ++i)
            if (workers_[i].current) workers_[i].current->cancel.store(1, std::memory_order_relaxed);
        interrupt_running_locked();
    }
    while (cancelled) {
        op_slot *nx = cancelled->next;
        sink_.complete(cancelled, cancelled_result(*cancelled), ASYS_PATH_POOL);
        cancelled = nx;
    }
}

void worker_pool::stop() noexcept {
    worker *idle;
    {
        std::lock_guard lk(mu_);
        stopping_ = true;
        idle = idle_;
        idle_ = nullptr;
        idle_count_ = 0;
    }
    for (; idle; idle = idle->next_idle) {
        idle->wake.store(1, std::memory_order_release);
        futex_wake(&idle->wake);
    }
    for (unsigned i = 0; i < reserved_; ++i) {
        if (!workers_[i].started) continue;
        pthread_join(workers_[i].thread, nullptr);
        if (workers_[i].has_timer) timer_delete(workers_[i].timer);
    }
    nworkers_.store(0, std::memory_order_relaxed);
    reserved_ = 0;
    workers_.reset();
}

void worker_pool::abandon() noexcept {
    // After fork() the threads do not exist in this process and mu_ may be
    // held by one of them: touch neither.
    nworkers_.store(0, std::memory_order_relaxed);
    reserved_ = 0;
    (void)workers_.release();  // owned by the parent's image; never freed here
}

namespace {

// Runs the op; if part of it already completed inline (a short read), runs
// only the remainder and returns the total.
long run_slot(op_slot &s) noexcept {
    if (s.hooks && s.hooks->run) return s.hooks->run(s);  // a feature's op (never -EINTR)
    if (long injected = fault::injected_syscall_error()) return injected;
    const uint64_t (&args)[6] = s.sys.args;
    if (s.done == 0) return execute_op(s.opcode, s.sys.nr, args);
    return execute_rest_of_transfer(s.opcode, args, s.done);
}

}  // namespace
}  // namespace asys::internal
