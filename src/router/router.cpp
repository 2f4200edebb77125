#include "router/router.hpp"

#include <cerrno>
#include <cstdint>

#include "core/denylist.hpp"
#include "core/opcodes.hpp"
#include "inline/inline_attempt.hpp"
#include "syslet/chain_op.hpp"

namespace asys::internal {

int validate_op(const asys_op *op) noexcept {
    if (!op) return -EFAULT;
    if (reinterpret_cast<uintptr_t>(op) % alignof(asys_op) != 0) return -EINVAL;
    if (op->opcode >= ASYS_OP__COUNT) return -EINVAL;
    if (op->flags & ~ASYS_F__ALL) return -EINVAL;
    if (op->reserved[0] || op->reserved[1]) return -EINVAL;
    const uint32_t f = op->flags;
    if ((f & ASYS_F_SYNC) && (f & (ASYS_F_ASYNC | ASYS_F_NOWAIT | ASYS_F_ATOMIC))) return -EINVAL;
    if ((f & ASYS_F_NOWAIT) && (f & ASYS_F_ASYNC)) return -EINVAL;
    if (!op->callback && op->cb_arg) return -EINVAL;
    if (op->opcode == ASYS_OP_SYSCALL) return syscall_allowed_with(op->nr, op->args);
    if (op->opcode == ASYS_OP_CHAIN) {
        if (!op->args[0]) return -EFAULT;
        if (op->nr || op->args[2] || op->args[3] || op->args[4] || op->args[5]) return -EINVAL;
        return 0;
    }
    if (op->nr != 0) return -EINVAL;
    return 0;
}

namespace {

// An inline result is delivered through ret_ptr; a cqe / callback too when
// asked (CQE_ALWAYS) or when there is no ret_ptr (the result must land
// somewhere). Such ops reserved room before running.
inline bool needs_cqe_inline(const asys_op &op) noexcept {
    return (op.flags & ASYS_F_CQE_ALWAYS) || !op.ret_ptr;
}

inline int finish_inline(context &c, const asys_op &op, long res, bool reserved) noexcept {
    if (op.ret_ptr) *op.ret_ptr = res;
    c.cnt.done_inline.fetch_add(1, std::memory_order_relaxed);
    if (reserved) c.post_inline(op, res);
    return ASYS_DONE;
}

// ASYS_OP_CHAIN: the interpreter is the inline attempt. Atoms run here
// until one would block; the slot then carries the rest (args[0] = next
// atom, [2] = atoms run, [3] = step limit) to the pool. Atoms that ran
// cannot be undone, so every refusal after them reports where the chain
// stopped through *last_out.
int route_chain(context &c, const asys_op &op, uint32_t f, bool reserved) noexcept {
    const bool atomic = f & ASYS_F_ATOMIC;
    auto **last_out = reinterpret_cast<syslet_uatom **>(op.args[1]);
    chain_run run;
    run.cur = reinterpret_cast<syslet_uatom *>(op.args[0]);
    run.step_limit = c.chain_step_limit.load(std::memory_order_relaxed);
    run.buffered = (f & ASYS_F_BUFFERED) || (c.ctx_flags() & ASYS_CTX_NO_ODIRECT);
    chain_status st = chain_status::would_block;
    if (!(f & ASYS_F_ASYNC)) st = run_chain(run, /*may_block=*/(f & ASYS_F_SYNC) != 0);
    if (st == chain_status::ended) {
        if (last_out) *last_out = run.last;
        return finish_inline(c, op, run.last_res, reserved);
    }
    auto stopped = [&](int rc) {
        if (last_out) *last_out = run.cur;  // the first atom that did not run
        return rc;
    };
    if (f & ASYS_F_NOWAIT) {
        if (reserved) c.release_room(1);
        return stopped(-EAGAIN);
    }
    if (!reserved)
        if (int rc = c.reserve_room(atomic)) return stopped(rc);
    if (int rc = punt_chain_rest(c, op, run, atomic)) return stopped(rc);
    (run.steps == 0 ? c.cnt.punted_direct : c.cnt.punted_probe).fetch_add(1, std::memory_order_relaxed);
    return 0;
}

}  // namespace

int route(context &c, const asys_op &op) noexcept {
    uint32_t f = op.flags;
    if (!(f & (ASYS_F_SYNC | ASYS_F_ASYNC | ASYS_F_NOWAIT))) {
        const unsigned cf = c.ctx_flags();
        if (cf & ASYS_CTX_INLINE_ALWAYS) f |= ASYS_F_SYNC;
        else if (cf & ASYS_CTX_INLINE_NEVER) f |= ASYS_F_ASYNC;
    }
    const bool atomic = f & ASYS_F_ATOMIC;

    // Room first when an inline finish must post a cqe, so that a full ring
    // is reported before anything runs.
    bool reserved = false;
    if (needs_cqe_inline(op)) {
        int rc = c.reserve_room(atomic || (f & ASYS_F_NOWAIT));
        if (rc) return rc;
        reserved = true;
    }

    if (op.opcode == ASYS_OP_CHAIN) return route_chain(c, op, f, reserved);
    if (f & ASYS_F_SYNC) return finish_inline(c, op, execute_op(op.opcode, op.nr, op.args), reserved);

    long res = 0;
    attempt a = attempt::not_tried;
    if (!(f & ASYS_F_ASYNC)) {
        const bool buffered = (f & ASYS_F_BUFFERED) || (c.ctx_flags() & ASYS_CTX_NO_ODIRECT);
        a = try_inline(op, buffered, &res);
        if (a == attempt::done) return finish_inline(c, op, res, reserved);
    }
    if (f & ASYS_F_NOWAIT) {
        if (a == attempt::partial) return finish_inline(c, op, res, reserved);
        if (reserved) c.release_room(1);
        return -EAGAIN;
    }

    if (!reserved) {
        int rc = c.reserve_room(atomic);
        if (rc) {
            // Bytes already read inline are never dropped: deliver the short
            // count now rather than fail.
            if (a == attempt::partial) return finish_inline(c, op, res, false);
            return rc;
        }
    }
    op_slot *s = c.new_slot(op);
    if (a == attempt::partial) s->done = res;
    const bool direct = a == attempt::not_tried;
    s->direct = direct;
    // A positional read the probe got EAGAIN for: the fd takes positional
    // reads (a stream would have said ESPIPE).
    s->seekable = a == attempt::would_block && (op.opcode == ASYS_OP_PREAD || op.opcode == ASYS_OP_PREADV) &&
                  static_cast<int64_t>(op.args[3]) >= 0;
    // After punt() succeeds the slot may already be completed and reused.
    int rc = c.punt(s, atomic);
    if (rc) {
        // Bytes already read inline are never dropped: deliver the short
        // count now, keeping the room for its cqe if it needs one.
        const bool partial = a == attempt::partial;
        c.abandon_slot(s, /*keep_room=*/partial && reserved);
        if (partial) return finish_inline(c, op, res, reserved);
        return rc;
    }
    (direct ? c.cnt.punted_direct : c.cnt.punted_probe).fetch_add(1, std::memory_order_relaxed);
    return 0;
}

}  // namespace asys::internal
