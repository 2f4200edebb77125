#include "threadlet/threadlet.hpp"

#include <signal.h>
#include <sys/syscall.h>
#include <ucontext.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <mutex>
#include <new>

#include "base/denylist.hpp"
#include "base/opcodes.hpp"
#include "base/raw_syscall.hpp"
#include "inline/inline_attempt.hpp"
#include "router/router.hpp"
#include "threadlet/dispatch.hpp"
#include "threadlet/fiber.hpp"

namespace asys::internal {

std::atomic<const switch_hooks *> g_switch_hooks{nullptr};

struct threadlet_owner {};

namespace {

struct threadlet_state;

/// One thread's threadlets of one context that are ready to resume.
struct owner : threadlet_owner {
    uint64_t thread;  ///< thread_serial() of the owner thread
    threadlet_state *st;
    std::mutex mu;
    threadlet *head = nullptr, *tail = nullptr;  ///< ready list (guarded by mu)
    /// Length of the ready list. Written under mu; read without it by
    /// ready_here (acquire, paired with the release increments: a driver
    /// that sees it non-zero finds the entry under mu).
    std::atomic<uint32_t> nready{0};
    owner *next = nullptr;  ///< threadlet_state::owners (guarded by st->mu)
};

}  // namespace

namespace {

std::atomic<uint64_t> g_thread_serial{0};
std::atomic<uint64_t> g_state_serial{0};
// initial-exec: a threadlet's hot path reads these per call.
__attribute__((tls_model("initial-exec"))) thread_local threadlet *t_current = nullptr;
__attribute__((tls_model("initial-exec"))) thread_local uint64_t t_serial = 0;

// A number no other thread of the process ever had (thread ids are reused).
uint64_t thread_serial() noexcept {
    if (!t_serial) t_serial = g_thread_serial.fetch_add(1, std::memory_order_relaxed) + 1;
    return t_serial;
}

void resume(threadlet *t) noexcept;
struct owner;
void queue_ready(owner *o, threadlet *t) noexcept;

/// Per context: the owners (threads) that have parked threadlets on it.
struct threadlet_state final : driver_work {
    context *ctx;
    const uint64_t serial = g_state_serial.fetch_add(1, std::memory_order_relaxed) + 1;
    std::mutex mu;
    owner *owners = nullptr;  ///< guarded by mu

    explicit threadlet_state(context *c) noexcept : ctx(c) {}
    ~threadlet_state() override {
        while (owners) {
            owner *o = owners;
            owners = o->next;
            delete o;
        }
    }

    owner *find(bool create) noexcept;
    unsigned run_here() noexcept override;
    bool ready_here() noexcept override {
        owner *o = find(false);
        return o && o->nready.load(std::memory_order_acquire) != 0;
    }
};

// One-entry cache per thread: the owner record of the state looked up last
// (keyed by the state's serial: a state at a recycled address is another).
struct owner_cache {
    uint64_t state = 0;
    owner *o = nullptr;
};
thread_local owner_cache t_owner_cache;

owner *threadlet_state::find(bool create) noexcept {
    owner_cache &oc = t_owner_cache;
    if (oc.state == serial && oc.o) return oc.o;
    const uint64_t me = thread_serial();
    std::lock_guard lk(mu);
    owner *o = owners;
    while (o && o->thread != me) o = o->next;
    if (!o && create) {
        o = new (std::nothrow) owner;
        if (!o) return nullptr;
        o->thread = me;
        o->st = this;
        o->next = owners;
        owners = o;
    }
    if (o) oc = {serial, o};
    return o;
}

unsigned threadlet_state::run_here() noexcept {
    owner *o = find(false);
    if (!o || o->nready.load(std::memory_order_acquire) == 0) return 0;
    threadlet *list;
    unsigned n = 0;
    {
        std::lock_guard lk(o->mu);
        list = o->head;
        o->head = o->tail = nullptr;
        for (threadlet *t = list; t; t = t->next_ready) ++n;
        o->nready.fetch_sub(n, std::memory_order_relaxed);
    }
    if (n) ctx->driver_work_ready(-static_cast<int>(n));
    unsigned ran = 0;
    while (list) {
        threadlet *t = list;
        list = t->next_ready;
        t->next_ready = nullptr;
        if (t->running) {
            // Its call completed while it still runs (a callback on this
            // thread drove the context before the threadlet switched out):
            // it is resumed at the next drive.
            queue_ready(o, t);
            continue;
        }
        resume(t);
        ++ran;
    }
    return ran;
}

// Puts t on its owner's ready list (any thread) and wakes the owner.
void queue_ready(owner *o, threadlet *t) noexcept {
    context *c = t->ctx;  // read before the owner may resume and free t
    {
        std::lock_guard lk(o->mu);
        if (o->tail) o->tail->next_ready = t; else o->head = t;
        o->tail = t;
        o->nready.fetch_add(1, std::memory_order_release);
    }
    c->driver_work_ready(1);
}

threadlet_state *state_of(context &c) noexcept {
    return c.driver_work_state<threadlet_state>([&c] { return new (std::nothrow) threadlet_state(&c); });
}

// A threadlet's parked call completed (on any thread): queue it for its owner.
void call_done(const asys_cqe *, void *arg) noexcept {
    auto *t = static_cast<threadlet *>(arg);
    queue_ready(static_cast<owner *>(t->own), t);
}

void threadlet_main(void *arg) noexcept {
    auto *t = static_cast<threadlet *>(arg);
    fiber_entered(t->f, t->caller);
    auto fn = reinterpret_cast<asys_threadlet_fn>(t->op.args[0]);
    const switch_hooks *h = g_switch_hooks.load(std::memory_order_acquire);
    if (h) h->begin(t);
    t->result = fn(reinterpret_cast<void *>(t->op.args[1]));
    t->finished = true;
    if (h) h->leave(t);
    fiber_exit(t->f, t->caller);
}

threadlet *make_threadlet(context &c, const asys_op &op, uint32_t flags, bool reserved) noexcept {
    fiber_stack s = stack_get();
    if (!s.base) return nullptr;
    // The threadlet's own record sits at the top of its stack.
    auto top = reinterpret_cast<uintptr_t>(s.base) + s.size - sizeof(threadlet);
    top &= ~uintptr_t{63};
    auto *t = new (reinterpret_cast<void *>(top)) threadlet;
    t->stack = s;
    t->f.stack = s;
    t->ctx = &c;
    t->op = op;
    t->flags = flags;
    t->tflags = static_cast<unsigned>(op.args[2]);
    t->reserved = reserved;
    fiber_init(t->f, t, &threadlet_main, t);
    return t;
}

void free_threadlet(threadlet *t) noexcept {
    fiber_release(t->f);
    const fiber_stack s = t->stack;
    t->~threadlet();
    stack_put(s);
}

// Switches into t on the calling (owner) thread until it parks or ends.
void switch_in(threadlet *t) noexcept {
    threadlet *prev = t_current;
    const switch_hooks *h = g_switch_hooks.load(std::memory_order_acquire);
    const uint64_t saved = h ? h->save() : 0;
    t_current = t;
    t->running = true;
    if (h) h->enter(t);
    fiber_resume(t->f, t->caller);
    t->running = false;
    t_current = prev;
    if (h) h->restore(saved);
}

// Resumes a parked threadlet whose call completed; completes its op if it ends.
void resume(threadlet *t) noexcept {
    switch_in(t);
    if (!t->finished) return;
    context &c = *t->ctx;
    op_slot *slot = t->slot;
    const long res = t->result;
    free_threadlet(t);
    c.complete(slot, res, ASYS_PATH_INLINE);
}

// From inside t: gives control back until the parked call completed.
long park(threadlet *t) noexcept {
    if (const switch_hooks *h = g_switch_hooks.load(std::memory_order_acquire)) h->leave(t);
    // Parked from the trap handler (transparent mode): the owner goes on
    // with the mask of the trapped code, not the handler's (which blocks
    // SIGSYS); on resume, the frame takes the mask the thread has then, so
    // the signal return keeps the owner's changes made meanwhile.
    auto *uc = static_cast<ucontext_t *>(t->trap_uc);
    if (uc) mask_to_thread(uc);
    fiber_yield(t->f, t->caller);
    if (uc) mask_from_thread(uc);
    return t->call_res;
}

}  // namespace

threadlet *current_threadlet() noexcept { return t_current; }

bool runs_on_owner(long nr, const uint64_t (&a)[6]) noexcept {
    // Refused (by number or for its arguments, which covers the calls that
    // act on the calling thread), or reads the calling thread's state.
    return syscall_allowed_with(nr, a) != 0 || thread_effect_of(nr, a) != thread_effect::none;
}

namespace {

// The opcode that takes system call `nr` with its arguments as they are
// (the table's nr column; one lookup per call), or ASYS_OP_SYSCALL.
constexpr long kCallTable = 512;
constexpr auto make_call_table() {
    std::array<uint8_t, kCallTable> t{};
    for (auto &v : t) v = ASYS_OP_SYSCALL;
    for (uint32_t k = ASYS_OP__COUNT; k-- > 0;) {  // the first row wins
        const opcode_info &oi = kOpcodes[k];
        if (oi.nr >= 0 && oi.nr < kCallTable && oi.cls != op_class::feature) t[static_cast<size_t>(oi.nr)] = static_cast<uint8_t>(k);
    }
    return t;
}
constexpr auto kCallOpcode = make_call_table();

}  // namespace

void op_for_call(asys_op &op, long nr, const uint64_t (&a)[6]) noexcept {
    op = asys_op{};
    switch (nr) {
        case SYS_preadv2:
        case SYS_pwritev2:  // (fd, iov, cnt, pos_l, pos_h, flags) → the op's (fd, iov, cnt, off, flags)
            op.opcode = nr == SYS_preadv2 ? ASYS_OP_PREADV : ASYS_OP_PWRITEV;
            op.args[0] = a[0]; op.args[1] = a[1]; op.args[2] = a[2]; op.args[3] = a[3]; op.args[4] = a[5];
            return;
        case SYS_recvfrom:
        case SYS_sendto:  // without an address: the RECV / SEND ops
            if (a[4] || a[5]) break;
            op.opcode = nr == SYS_recvfrom ? ASYS_OP_RECV : ASYS_OP_SEND;
            for (unsigned i = 0; i < 4; ++i) op.args[i] = a[i];
            return;
        default:
            if (nr >= 0 && nr < kCallTable && kCallOpcode[static_cast<size_t>(nr)] != ASYS_OP_SYSCALL) {
                op.opcode = kCallOpcode[static_cast<size_t>(nr)];
                for (unsigned i = 0; i < kOpcodes[op.opcode].nargs; ++i) op.args[i] = a[i];
                return;
            }
    }
    op.opcode = ASYS_OP_SYSCALL;
    op.nr = nr;
    for (unsigned i = 0; i < 6; ++i) op.args[i] = a[i];
}

long threadlet_call(threadlet *t, long nr, const uint64_t (&args)[6]) noexcept {
    context &c = *t->ctx;
    const uint32_t f = t->flags & (ASYS_F_NOWAIT | ASYS_F_ATOMIC | ASYS_F_ASYNC | ASYS_F_SYNC | ASYS_F_BUFFERED);
    const bool buffered = (f & ASYS_F_BUFFERED) || (c.ctx_flags() & ASYS_CTX_NO_ODIRECT);
    asys_op op;
    long res = 0;
    attempt a = attempt::not_tried;
    if ((nr == SYS_pread64 || nr == SYS_read) && !(f & (ASYS_F_SYNC | ASYS_F_ASYNC))) {
        // The common calls go straight to the probe try_inline would run:
        // read and pread64 are allowed, run on any thread, and as ops (no
        // flags, callback or number of their own) pass validate_op whatever
        // their arguments.
        const bool positional = nr == SYS_pread64;
        a = probe_read_buffer(static_cast<int>(args[0]), args[1], args[2], static_cast<int64_t>(args[3]),
                              positional, buffered, &res);
        if (a == attempt::done) return res;
        op = asys_op{};
        op.opcode = positional ? ASYS_OP_PREAD : ASYS_OP_READ;
        op.args[0] = args[0];
        op.args[1] = args[1];
        op.args[2] = args[2];
        if (positional) op.args[3] = args[3];
        op.flags = f;
    } else {
        if (runs_on_owner(nr, args)) return raw_syscall(nr, args);
        op_for_call(op, nr, args);  // zeroes op first
        op.flags = f;
        if (int rc = validate_op(&op)) return rc;
        if (f & ASYS_F_SYNC) return execute_op(op.opcode, op.nr, op.args);
        if (!(f & ASYS_F_ASYNC)) {
            a = try_inline(op, buffered, &res);
            if (a == attempt::done) return res;
        }
    }
    const bool atomic = f & ASYS_F_ATOMIC;
    if (f & ASYS_F_NOWAIT) return a == attempt::partial ? res : -EAGAIN;
    // A read partly done inline: the rest is read while the threadlet is
    // parked, and it sees one result. A vector's rest is a new segment list
    // on this threadlet's stack, which lives until the call completes.
    long prefix = 0;
    struct iovec rest[kMaxProbeIov];
    if (a == attempt::partial) {
        prefix = res;
        const int rest_opcode = rest_of_transfer(op.opcode, op.args, static_cast<uint64_t>(res), rest, kMaxProbeIov);
        if (rest_opcode <= 0) return res;  // all the call moves (or no other op comes back partly done)
        op.opcode = static_cast<uint32_t>(rest_opcode);
    }
    auto failed = [&](long rc) { return prefix ? prefix : rc; };
    if (c.cancelling()) return failed(-ECANCELED);

    // The threadlet's op gets its slot (its room, counted in flight) the
    // first time it parks.
    if (!t->slot) {
        if (!t->reserved) {
            const int rc = c.reserve_room(atomic);
            // A context draining for destroy: run the call here, as the
            // destroying thread is waiting for this threadlet anyway.
            if (rc == -ESHUTDOWN && !c.cancelling()) return failed(0) + execute_op(op.opcode, op.nr, op.args);
            if (rc) return failed(rc == -ESHUTDOWN ? -ECANCELED : rc);
        }
        t->reserved = false;
        t->slot = c.new_slot(t->op);
    }
    if (!t->own) {
        threadlet_state *st = state_of(c);
        t->own = st ? st->find(true) : nullptr;
        if (!t->own) return failed(-ENOMEM);
    }
    op.flags = (f & ~ASYS_F_NOWAIT) | ASYS_F_ASYNC;
    op.ret_ptr = &t->call_res;
    op.user_data = t->op.user_data;  // asys_cancel of the threadlet reaches its call
    op.callback = &call_done;
    op.cb_arg = t;
    const int rc = route(c, op);
    if (rc == -ESHUTDOWN && !c.cancelling()) return failed(0) + execute_op(op.opcode, op.nr, op.args);
    if (rc < 0) return failed(rc == -ESHUTDOWN ? -ECANCELED : rc);
    const long got = park(t);
    if (!prefix) return got;
    return got > 0 ? prefix + got : prefix;
}

int validate_threadlet_op(const asys_op &op) noexcept {
    if (!op.args[0]) return -EFAULT;
    if (op.nr || (op.args[2] & ~uint64_t{ASYS_THREADLET__ALL}) || op.args[3] || op.args[4] || op.args[5])
        return -EINVAL;
    return 0;
}

int route_threadlet(context &c, const asys_op &op, uint32_t f, bool reserved) noexcept {
    if (op.args[2] & ASYS_THREADLET_TRANSPARENT) {
        if (int rc = transparent_init()) {
            if (reserved) c.release_room(1);
            return rc;
        }
    }
    threadlet *t = make_threadlet(c, op, f, reserved);
    if (!t) {
        if (reserved) c.release_room(1);
        return -ENOMEM;
    }
    switch_in(t);
    if (!t->finished) {
        c.cnt.count_punt(sched_class_of(op.opcode, op.nr, op.flags), false);
        return 0;
    }
    // Ended without blocking (or after a call that could not be punted).
    op_slot *slot = t->slot;
    const long res = t->result;
    free_threadlet(t);
    if (slot) c.abandon_slot(slot, /*keep_room=*/reserved);
    return finish_inline(c, op, res, reserved);
}

}  // namespace asys::internal
