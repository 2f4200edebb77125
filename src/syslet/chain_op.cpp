// ASYS_OP_CHAIN: routing a chain op (the interpreter is its inline
// attempt), the slot hooks that run and complete its asynchronous rest, and
// turning that rest into linked io_uring SQEs when it is a plain sequence.
#include "syslet/chain_op.hpp"

#include <sys/syscall.h>

#include <cerrno>
#include <new>

#include "base/opcodes.hpp"
#include "router/router.hpp"

namespace asys::internal {
namespace {

// The asys opcode a linkable atom maps to (the opcode table's atom_link
// column), or -1.
int linkable_opcode(unsigned long nr) noexcept { return opcode_for_atom(static_cast<long>(nr), atom_link); }

bool transfers(uint32_t opcode) noexcept {
    return opcode == ASYS_OP_READ || opcode == ASYS_OP_PREAD || opcode == ASYS_OP_WRITE ||
           opcode == ASYS_OP_PWRITE;
}

// A worker runs the rest of the chain (the slot's run hook).
long run_chain_slot(op_slot &slot) noexcept {
    chain_state &st = slot.feature_state<chain_state>();
    chain_run run;
    run.cur = st.next;
    run.steps = st.steps;
    run.step_limit = st.step_limit;
    run.cancelled = &slot.cancel;
    run.retry.reset(st.retry);
    st.retry = nullptr;
    run_chain(run, /*may_block=*/true);
    st.next = nullptr;  // ran: completion must not touch the atoms again
    if (st.last_out) *st.last_out = run.last;
    return run.last_res;
}

// A chain that ends without running its next atom (cancelled while queued,
// or its resume failed): that atom gets `res` and becomes *last_out.
void chain_not_run(const chain_state &st, long res) noexcept {
    if (st.next->ret_ptr) *st.next->ret_ptr = res;
    if (st.last_out) *st.last_out = st.next;
}

// A linked sequence finished: writes the atoms' results and frees it.
// True when the chain is over (*res: the op's result, *last_out set);
// false when a link that a short transfer cut must go on from st.next.
bool chain_linked_done(chain_state &st, const std::atomic<uint8_t> &cancel, long *res) noexcept {
    linked_ops *lo = st.linked;
    st.linked = nullptr;
    const bool cancelled = cancel.load(std::memory_order_relaxed);
    uint64_t steps = st.steps;
    syslet_uatom *last = nullptr, *resume = nullptr;
    long last_res = 0;
    bool broken = false;  // the link after the previous entry was cut
    for (unsigned k = 0; k < lo->n; ++k) {
        const linked_entry &e = lo->e[k];
        auto *at = static_cast<syslet_uatom *>(e.tag);
        long r = e.res;
        if (broken || (cancelled && (r == -ECANCELED || r == -EINTR))) {
            if (broken && !cancelled) {
                resume = at;  // cut by a short transfer: the chain goes on
                break;
            }
            r = -ECANCELED;  // cancelled: cut short, or never ran
            if (at->ret_ptr) *at->ret_ptr = r;
            last = at;
            last_res = r;
            break;
        }
        if (!cancelled && ring_error_to_recheck(e.opcode, e.args, r)) {
            // The ring may report these before the errors the call checks
            // first; nothing ran: the interpreter runs this atom again on
            // the general backend and gets the call's own result.
            resume = at;
            break;
        }
        bool whole_again = false;
        if (!cancelled && transfers(e.opcode) && r > 0 && r < static_cast<long>(e.args[2]) &&
            ring_short_read_to_finish(e.opcode, e.args, r, &whole_again) && whole_again) {
            // A memory device's read the ring stopped early (its first,
            // nonblocking attempt yields the CPU after a page): the
            // interpreter reads it again, whole, as read(2) would have.
            resume = at;
            break;
        }
        if (!cancelled && r > 0 && ring_short_write_to_finish(e.opcode, e.args, r)) {
            // A write to a stream the ring completed short (it moves what
            // fits), where write(2) waits for every byte: the interpreter
            // writes the rest on the pool, and the atom's result is the
            // whole count. Without memory for that, the short count stands.
            if (auto *rt = new (std::nothrow) atom_retry{}) {
                for (unsigned i = 0; i < 6; ++i) rt->args[i] = e.args[i];
                rt->done = static_cast<uint64_t>(r);
                rt->opcode = e.opcode;
                st.retry = rt;
                resume = at;
                break;
            }
        }
        if (at->ret_ptr) *at->ret_ptr = r;
        last = at;
        last_res = r;
        ++steps;
        if ((at->flags & SYSLET_STOP_ON_NEGATIVE) && r < 0) break;
        // Every link is soft: an error or a short transfer cuts it (the ring
        // cancels the rest), and the interpreter goes on from the next atom
        // unless this one stops the chain. (A hard link would run the rest in
        // the ring, and an atom rechecked above could not be run again without
        // running those twice.)
        broken = r < 0 || (transfers(e.opcode) && r != static_cast<long>(e.args[2]));
    }
    delete lo;
    if (resume) {
        st.next = resume;
        st.steps = steps;
        return false;
    }
    st.next = nullptr;
    if (st.last_out) *st.last_out = last;
    *res = last_res;
    return true;
}


// The slot's completion hook.
bool chain_completed(op_slot &slot, long *res) noexcept {
    chain_state &st = slot.feature_state<chain_state>();
    if (st.linked && !chain_linked_done(st, slot.cancel, res)) {
        // The rest of an atom's transfer waits: the slot counts the bytes
        // it moved, so a cancel ends it with them (and says it had started).
        if (st.retry && st.retry->done) slot.done = static_cast<uint32_t>(st.retry->done);
        return false;
    }
    if (st.next) chain_not_run(st, *res);
    delete st.retry;  // its atom never ran again (cancelled while queued)
    st.retry = nullptr;
    return true;
}

constexpr slot_hooks kChainHooks{&run_chain_slot, &chain_completed};

// The bytes an atom's call writes in the caller's memory (its buffer, for a
// read), read at link time: [lo, hi), empty for other calls.
struct span {
    uintptr_t lo = 0, hi = 0;
    bool overlaps(uintptr_t a, uintptr_t b) const noexcept { return lo < b && a < hi; }
};

}  // namespace

linked_ops *link_chain(const context &c, syslet_uatom *cur, uint64_t steps, uint64_t step_limit) noexcept {
    syslet_uatom *atoms[linked_ops::kMax];
    uint32_t ops[linked_ops::kMax];
    span writes[linked_ops::kMax];  // memory each earlier atom may write
    unsigned n = 0;
    for (syslet_uatom *at = cur; at; at = at->next) {
        if (n == linked_ops::kMax) return nullptr;  // long (or looping): the interpreter
        for (unsigned j = 0; j < n; ++j)
            if (atoms[j] == at) return nullptr;  // a loop
        if (at->flags & ~(SYSLET_STOP_ON_NEGATIVE | SYSLET_ASYNC)) return nullptr;
        const int op = linkable_opcode(at->nr);
        if (op < 0) return nullptr;
        // Linked SQEs take their arguments when the sequence is submitted;
        // the interpreter reads each atom's arguments when it runs. They
        // agree only if no earlier atom writes what a later one reads: its
        // arg_ptr cells, or the atom itself.
        const auto self = reinterpret_cast<uintptr_t>(at);
        for (unsigned j = 0; j < n; ++j) {
            if (writes[j].overlaps(self, self + sizeof *at)) return nullptr;
            for (unsigned i = 0; i < 6; ++i) {
                const auto cell = reinterpret_cast<uintptr_t>(at->arg_ptr[i]);
                if (!cell) continue;
                if (writes[j].overlaps(cell, cell + sizeof(unsigned long)) ||
                    cell == reinterpret_cast<uintptr_t>(atoms[j]->ret_ptr))
                    return nullptr;
            }
        }
        uint64_t a[6];
        for (unsigned i = 0; i < 6; ++i) a[i] = at->arg_ptr[i] ? *at->arg_ptr[i] : 0;
        // The ring must give the plain call's result for these arguments.
        if (!c.links(static_cast<uint32_t>(op), a)) return nullptr;
        writes[n] = {};
        if (op == ASYS_OP_READ || op == ASYS_OP_PREAD) writes[n] = {a[1], a[1] + a[2]};
        ops[n] = static_cast<uint32_t>(op);
        atoms[n++] = at;
    }
    if (n == 0 || (step_limit && steps + n > step_limit)) return nullptr;
    auto *lo = new (std::nothrow) linked_ops;
    if (!lo) return nullptr;
    lo->n = n;
    for (unsigned k = 0; k < n; ++k) {
        syslet_uatom *at = atoms[k];
        linked_entry &e = lo->e[k];
        e.opcode = ops[k];
        e.tag = at;
        e.res = 0;
        for (unsigned i = 0; i < 6; ++i) e.args[i] = at->arg_ptr[i] ? *at->arg_ptr[i] : 0;
    }
    return lo;
}

int punt_chain_rest(context &c, const asys_op &op, chain_run &run, bool atomic, bool keep_room) noexcept {
    op_slot *s = c.new_slot(op);
    s->hooks = &kChainHooks;
    chain_state &st = s->feature_state<chain_state>();
    st.next = run.cur;
    st.last_out = reinterpret_cast<syslet_uatom **>(op.args[1]);
    st.steps = run.steps;
    st.step_limit = run.step_limit;
    st.linked = nullptr;
    st.retry = run.retry.release();
    s->direct = run.steps == 0;
    // A plain sequence of ring ops runs as linked SQEs: no thread per chain
    // (not an atom to run again with its kept arguments).
    linked_ops *lo = st.retry ? nullptr : link_chain(c, run.cur, run.steps, run.step_limit);
    if (lo) {
        st.linked = lo;
        if (c.punt_linked(s, lo) == 0) return 0;
        st.linked = nullptr;  // no room in the ring: the general backend interprets it
        delete lo;
    }
    const int rc = c.punt(s, atomic);
    if (rc) {
        run.retry.reset(st.retry);  // the caller may run it after all
        c.abandon_slot(s, keep_room);
    }
    return rc;
}

int validate_chain_op(const asys_op &op) noexcept {
    if (!op.args[0]) return -EFAULT;
    if (op.nr || op.args[2] || op.args[3] || op.args[4] || op.args[5]) return -EINVAL;
    return 0;
}

// Atoms run here until one would block; the slot then carries the rest.
// Atoms that ran cannot be undone, so every refusal after them reports
// where the chain stopped through *last_out.
int route_chain(context &c, const asys_op &op, uint32_t f, bool reserved) noexcept {
    const bool atomic = f & ASYS_F_ATOMIC;
    auto **last_out = reinterpret_cast<syslet_uatom **>(op.args[1]);
    chain_run run;
    run.cur = reinterpret_cast<syslet_uatom *>(op.args[0]);
    run.step_limit = c.chain_step_limit.load(std::memory_order_relaxed);
    run.buffered = (f & ASYS_F_BUFFERED) || (c.ctx_flags() & ASYS_CTX_NO_ODIRECT);
    run.nowait = f & ASYS_F_NOWAIT;
    chain_status st = chain_status::would_block;
    if (!(f & ASYS_F_ASYNC)) st = run_chain(run, /*may_block=*/(f & ASYS_F_SYNC) != 0);
    if (st == chain_status::ended) {
        if (last_out) *last_out = run.last;
        return finish_inline(c, op, run.last_res, reserved);
    }
    // An atom that already sent part of its bytes ran: if its rest cannot
    // go on, the chain ends there with that count, as a nonblocking send
    // would (keeping the room a cqe needs).
    const bool moved = run.retry && run.retry->done;
    auto stopped = [&](int rc) {
        if (moved && end_at_moved_bytes(run)) {
            if (last_out) *last_out = run.last;
            return finish_inline(c, op, run.last_res, reserved);
        }
        if (last_out) *last_out = run.cur;  // the first atom that did not run
        return rc;
    };
    if (f & ASYS_F_NOWAIT) {
        if (reserved && !moved) c.release_room(1);
        return stopped(-EAGAIN);
    }
    if (!reserved)
        if (int rc = c.reserve_room(atomic)) return stopped(rc);
    if (int rc = punt_chain_rest(c, op, run, atomic, /*keep_room=*/moved && reserved)) return stopped(rc);
    c.cnt.count_punt(sched_class_of(op.opcode, op.nr, op.flags), run.steps == 0);
    return 0;
}

}  // namespace asys::internal
