// The syslet API: async_exec / async_register / async_wait / umem_add and
// their asys_* forms. A chain runs inline until an atom would block; the rest
// continues as an ASYS_OP_CHAIN slot (on the pool, or as linked io_uring SQEs
// when it is a plain sequence), and its last atom is posted into the
// registered completion ring (never over a non-NULL entry).
#include <cerrno>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <new>

#include <pthread.h>

#include "asys/syslet.h"
#include "base/errno_keeper.hpp"
#include "core/context.hpp"
#include "base/opcodes.hpp"
#include "syslet/chain_op.hpp"
#include "syslet/interpreter.hpp"

namespace asys::internal {
namespace {

struct async_chain;

struct syslet_state final : extension {
    std::mutex mu;
    std::condition_variable cv;
    syslet_uatom **ring = nullptr;  ///< the user's ring (guarded by mu)
    unsigned n = 0, head = 0;
    unsigned inflight = 0;          ///< async chains not yet posted
    async_chain *chains = nullptr;  ///< async chains in flight (guarded by mu)

    // Entries are reset to NULL by the consumer with plain stores; read them
    // atomically (relaxed: a stale non-NULL only delays a post or a wake).
    unsigned nonnull_locked() const noexcept {
        unsigned k = 0;
        for (unsigned i = 0; i < n; ++i) k += __atomic_load_n(&ring[i], __ATOMIC_RELAXED) != nullptr;
        return k;
    }
};

struct async_chain {
    syslet_state *st;
    syslet_uatom *head;                ///< what async_exec was given: the cancel key
    syslet_uatom *last = nullptr;      ///< the chain op's *last_out
    async_chain *prev = nullptr, *next = nullptr;  ///< st->chains (guarded by st->mu)
};

void unlink_locked(syslet_state *st, async_chain *ch) noexcept {
    if (ch->prev) ch->prev->next = ch->next; else st->chains = ch->next;
    if (ch->next) ch->next->prev = ch->prev;
}

syslet_state *state_of(context &c) {
    return c.syslet_state<syslet_state>([] { return new (std::nothrow) syslet_state; });
}

void post(syslet_state *st, async_chain *ch, syslet_uatom *last) noexcept {
    std::lock_guard lk(st->mu);
    unlink_locked(st, ch);
    // Reservation at async_exec guarantees a NULL entry exists.
    for (unsigned k = 0; k < st->n; ++k) {
        const unsigned i = (st->head + k) % st->n;
        if (__atomic_load_n(&st->ring[i], __ATOMIC_RELAXED) == nullptr) {
            // release: the atoms' ret_ptr writes happen before the entry.
            __atomic_store_n(&st->ring[i], last, __ATOMIC_RELEASE);
            st->head = (i + 1) % st->n;
            break;
        }
    }
    --st->inflight;
    st->cv.notify_all();
}

void chain_done(const asys_cqe *, void *arg) noexcept {
    // The chain op wrote *last_out (ch->last) before its completion: the
    // atom that ended it, or the one a cancel kept from running.
    auto *ch = static_cast<async_chain *>(arg);
    post(ch->st, ch, ch->last);
    delete ch;
}

long exec(context &c, syslet_uatom *atom) noexcept {
    if (!atom) return -EINVAL;
    syslet_state *st = state_of(c);
    if (!st) return -ENOMEM;
    chain_run run;
    run.cur = atom;
    run.buffered = c.ctx_flags() & ASYS_CTX_NO_ODIRECT;
    run.step_limit = c.chain_step_limit.load(std::memory_order_relaxed);
    if (run_chain(run, /*may_block=*/false) == chain_status::ended)
        return reinterpret_cast<long>(run.last);

    bool go_async = false;
    {
        std::lock_guard lk(st->mu);
        if (!st->ring) return -ENXIO;
        if (st->inflight + st->nonnull_locked() < st->n) {
            ++st->inflight;
            go_async = true;
        }
    }
    async_chain *ch = nullptr;
    if (go_async) {
        ch = new (std::nothrow) async_chain;
        if (ch) {
            ch->st = st;
            ch->head = atom;
        }
    }
    if (ch && c.reserve_room(false) == 0) {
        {
            std::lock_guard lk(st->mu);  // cancellable from now on
            ch->next = st->chains;
            if (st->chains) st->chains->prev = ch;
            st->chains = ch;
        }
        // The rest of the chain as an ASYS_OP_CHAIN slot, keyed by the head
        // atom (asys_async_cancel cancels it like asys_cancel).
        asys_op op{};
        asys_prep_chain(&op, run.cur, &ch->last);
        op.user_data = reinterpret_cast<uint64_t>(atom);
        op.callback = chain_done;
        op.cb_arg = ch;
        if (punt_chain_rest(c, op, run, false) == 0) return 0;
        std::lock_guard lk(st->mu);
        unlink_locked(st, ch);
    }
    // No ring entry, no room or no memory: finish the chain on the caller
    // rather than lose it.
    delete ch;
    if (go_async) {
        std::lock_guard lk(st->mu);
        --st->inflight;
    }
    run_chain(run, /*may_block=*/true);
    return reinterpret_cast<long>(run.last);
}

long reg(context &c, syslet_uatom **ring, unsigned n) noexcept {
    if (!ring || n == 0) return -EINVAL;
    syslet_state *st = state_of(c);
    if (!st) return -ENOMEM;
    std::lock_guard lk(st->mu);
    if (st->inflight) return -EBUSY;
    st->ring = ring;
    st->n = n;
    st->head = 0;
    return 0;
}

long wait(context &c, unsigned long min) noexcept {
    syslet_state *st = state_of(c);
    if (!st) return -ENOMEM;
    std::unique_lock lk(st->mu);
    if (!st->ring) return -ENXIO;
    if (min > st->n) return -EINVAL;
    for (;;) {
        const unsigned have = st->nonnull_locked();
        if (have >= min) return have;
        if (have + st->inflight < min) return -EDEADLK;  // could never be satisfied
        st->cv.wait(lk);
    }
}

long cancel_chain(context &c, syslet_uatom *head) noexcept {
    if (!head) return -EINVAL;
    syslet_state *st = state_of(c);
    if (!st) return -ENOMEM;
    bool found = false;
    {
        std::lock_guard lk(st->mu);
        for (async_chain *ch = st->chains; ch; ch = ch->next)
            if (ch->head == head) found = true;
    }
    if (!found) return -ENOENT;
    // Queued: completes now with -ECANCELED; running: its worker is
    // interrupted, and the chain stops at its next atom boundary anyway.
    const int rc = c.cancel(reinterpret_cast<uint64_t>(head));
    return rc == -ENOENT ? -EALREADY : rc;  // gone from the pool: it is finishing
}

// The process-wide default context. Its lock is held across fork() (so a
// child never inherits it locked by a thread that is gone) and made anew
// in the child.
struct default_context {
    std::mutex mu;
    asys_ctx *ctx = nullptr;
    uint64_t gen = 0;

    static default_context &get() noexcept {
        static default_context *d = [] {
            auto *p = new default_context;  // never destroyed: outlives static dtors
            // Registered after the context registry's fork handlers, so
            // prepare takes this lock before the registry's: the order
            // default_ctx() takes them in (it creates a context under it).
            register_fork_handlers();
            pthread_atfork([] { get().mu.lock(); }, [] { get().mu.unlock(); },
                           [] { new (&get().mu) std::mutex; });
            return p;
        }();
        return *d;
    }
};

// Made when the library loads, while the process has one thread: a
// function-local static initialised on first use could be mid-way in
// another thread when the process forks, and the child would then wait on
// its guard forever. (This also installs the registry's fork handlers.)
__attribute__((constructor)) void init_default_context() { (void)default_context::get(); }

asys_ctx *default_ctx() noexcept {
    default_context &d = default_context::get();
    std::lock_guard lk(d.mu);
    asys_ctx *&ctx = d.ctx;
    uint64_t &gen = d.gen;
    const uint64_t now = g_fork_generation.load(std::memory_order_relaxed);
    if (!ctx || gen != now) {  // after fork(), the parent's context is dead here
        asys_ctx *c = nullptr;
        if (asys_ctx_create(nullptr, &c) != 0) return nullptr;
        ctx = c;
        gen = now;
    }
    return ctx;
}

}  // namespace
}  // namespace asys::internal

using asys::internal::context;

#define ASYS_SYSLET_CTX(h)                              \
    const asys::internal::errno_keeper keep_;           \
    int err_ = 0;                                       \
    context *c = context::from_handle((h), &err_);      \
    if (!c) return err_

extern "C" {

unsigned long asys_umem_add(unsigned long *ptr, unsigned long inc) { return *ptr += inc; }

long asys_async_exec(asys_ctx *ctx, struct syslet_uatom *atom) {
    ASYS_SYSLET_CTX(ctx);
    return asys::internal::exec(*c, atom);
}

long asys_async_register(asys_ctx *ctx, struct syslet_uatom **ring, unsigned int nr_entries) {
    ASYS_SYSLET_CTX(ctx);
    return asys::internal::reg(*c, ring, nr_entries);
}

long asys_async_wait(asys_ctx *ctx, unsigned long min_events) {
    ASYS_SYSLET_CTX(ctx);
    return asys::internal::wait(*c, min_events);
}

int asys_syslet_step_limit(asys_ctx *ctx, unsigned long max_steps) {
    ASYS_SYSLET_CTX(ctx);
    c->chain_step_limit.store(max_steps, std::memory_order_relaxed);
    return 0;
}

long asys_async_cancel(asys_ctx *ctx, struct syslet_uatom *head) {
    ASYS_SYSLET_CTX(ctx);
    return asys::internal::cancel_chain(*c, head);
}

asys_ctx *asys_syslet_default_ctx(void) {
    const asys::internal::errno_keeper keep;
    return asys::internal::default_ctx();
}

// The original umem_add, async_exec, async_register and async_wait are static
// inline functions of <asys/syslet.h> over these: only asys_* is exported.

}  // extern "C"
