#include "router/router.hpp"

#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>

#include "base/denylist.hpp"
#include "base/errno_keeper.hpp"
#include "base/opcodes.hpp"
#include "base/raw_syscall.hpp"
#include "inline/inline_attempt.hpp"

namespace asys::internal {

int validate_op(const asys_op *op) noexcept {
    if (!op) return -EFAULT;
    if (reinterpret_cast<uintptr_t>(op) % alignof(asys_op) != 0) return -EINVAL;
    if (op->opcode >= ASYS_OP__COUNT) return -EINVAL;
    if (op->flags & ~ASYS_F__ALL) return -EINVAL;
    if (op->reserved[0]) return -EINVAL;
    const uint32_t f = op->flags;
    if (!(f & ASYS_F_DEADLINE) ? op->deadline_ns != 0 : op->deadline_ns > uint64_t{INT64_MAX}) return -EINVAL;
    if ((f & ASYS_F_CLASS_MASK) > ASYS_F_CLASS(ASYS_CLASS__COUNT - 1)) return -EINVAL;
    if ((f & ASYS_F_SYNC) && (f & (ASYS_F_ASYNC | ASYS_F_NOWAIT | ASYS_F_ATOMIC))) return -EINVAL;
    if ((f & ASYS_F_NOWAIT) && (f & ASYS_F_ASYNC)) return -EINVAL;
    if (!op->callback && op->cb_arg) return -EINVAL;
    if (op->opcode == ASYS_OP_SYSCALL) return syscall_allowed_with(op->nr, op->args);
    if (kOpcodes[op->opcode].cls == op_class::feature) {
        const feature_ops *fo = feature_for(op->opcode);
        return fo ? fo->validate(*op) : -EOPNOTSUPP;
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

// The common op: a READ or PREAD with a ret_ptr and no flag but BUFFERED
// (nothing else set; `also` may allow ASYNC too). These checks are all
// validate_op asks of it, and route_op would send it to its inline attempt
// (or a batch's window) at once, or with ASYNC straight to its punt: no room
// to reserve first, as an inline finish posts no cqe.
inline bool plain_read(const asys_op *op, uint32_t also = 0) noexcept {
    if (!op || reinterpret_cast<uintptr_t>(op) % alignof(asys_op) != 0) return false;
    if ((op->opcode != ASYS_OP_PREAD && op->opcode != ASYS_OP_READ) || !op->ret_ptr) return false;
    // The fields that must be 0, tested at once (one branch, not six).
    return ((op->flags & ~(uint32_t{ASYS_F_BUFFERED} | also)) | reinterpret_cast<uintptr_t>(op->callback) |
            reinterpret_cast<uintptr_t>(op->cb_arg) | static_cast<uint64_t>(op->nr) | op->reserved[0] |
            op->deadline_ns) == 0;
}

}  // namespace

namespace {
// (Always inline where it is called by name: asys_submit's short way pays
// no call for it.)
[[gnu::always_inline]] inline int finish_inline_here(context &c, const asys_op &op, long res, bool reserved) noexcept {
    if (op.ret_ptr) *op.ret_ptr = res;
    c.cnt.count_inline(sched_class_of(op.opcode, op.nr, op.flags));
    if (reserved) c.post_inline(op, res);
    return ASYS_DONE;
}
}  // namespace

int finish_inline(context &c, const asys_op &op, long res, bool reserved) noexcept {
    return finish_inline_here(c, op, res, reserved);
}

namespace {

/// An op of a batch on a context with a preferred backend.
struct batch_route {
    batch_window *w;
    int *status;          ///< this op's status entry (may be null)
    bool wrote_status;    ///< the windowed path set *status itself
    /// The last fd lseek() was asked about, and its answer. Forgotten when
    /// the window enters the kernel and after an op outside the window that
    /// may have given the number to another file (leaves_fds_alone).
    int seek_fd = -1;
    bool seek_ok = false;
    unsigned seek_enters = 0;  ///< w->enters when it was asked
    /// The preferred backend takes a PREAD whose arguments fit
    /// ring_positional_args_fit on an fd that seeks (asked once per batch).
    bool fitting_preads = false;
    /// What the last batch_accepts said of its op's fd: it seeks (a
    /// positional transfer), for the slot it joins the window with.
    bool op_seeks = false;
    /// The batch's ops (how many may follow a plain read).
    const asys_op *ops = nullptr;
    unsigned n = 0;
    /// Slots with their room, taken for the window ops still to come in one
    /// go (context::reserve_window_slots); given back before an op outside
    /// the window runs and when the batch ends.
    op_slot *spare[batch_window::kMax];
    unsigned spares = 0;
};

/// Gives the batch's spare slots (and their room) back.
inline void drop_spares(context &c, batch_route &b) noexcept {
    c.unreserve_window_slots(b.spare, b.spares);
    b.spares = 0;
}

/// Whether a batch op skips the inline attempt for the preferred backend:
/// ops whose probe costs a system call anyway (never the getters that run
/// directly, nor generic calls, chains or closes), with flags that allow a
/// punt that cannot fail and an inline answer (not ATOMIC: it may be refused).
bool batch_skips_probe(const asys_op &op, uint32_t f) noexcept {
    // (A deadline's linked timeout is decided per slot: the normal route.)
    if (f & (ASYS_F_SYNC | ASYS_F_ASYNC | ASYS_F_NOWAIT | ASYS_F_ATOMIC | ASYS_F_DEADLINE)) return false;
    switch (kOpcodes[op.opcode].cls) {
        case op_class::read:
        case op_class::recv:
        case op_class::send:
        case op_class::open:
        case op_class::poll:
        case op_class::backend: return true;
        default: return false;
    }
}

/// Whether an op that ran outside the window cannot have changed what an
/// fd number names: a transfer without a callback (an inline finish runs
/// the callback, which may close or open files).
bool leaves_fds_alone(const asys_op &op) noexcept {
    if (op.callback) return false;
    switch (op.opcode) {
        case ASYS_OP_READ: case ASYS_OP_PREAD: case ASYS_OP_READV: case ASYS_OP_PREADV:
        case ASYS_OP_WRITE: case ASYS_OP_PWRITE: case ASYS_OP_WRITEV: case ASYS_OP_PWRITEV: return true;
        default: return false;
    }
}

/// One lseek per fd (not per op) tells whether a batch's positional
/// transfers may go to the ring (args_fit_ring asks the same otherwise).
inline bool batch_fd_seeks(batch_route &b, const asys_op &op) noexcept {
    switch (op.opcode) {
        case ASYS_OP_PREAD: case ASYS_OP_PREADV: case ASYS_OP_PWRITE: case ASYS_OP_PWRITEV: break;
        default: return false;
    }
    if (static_cast<int64_t>(op.args[3]) < 0) return false;
    const int fd = static_cast<int>(op.args[0]);
    if (fd != b.seek_fd || b.seek_enters != b.w->enters) [[unlikely]] {
        b.seek_fd = fd;
        b.seek_enters = b.w->enters;
        b.seek_ok = raw_syscall6(SYS_lseek, static_cast<uint64_t>(fd), 0, SEEK_CUR, 0, 0, 0) >= 0;
    }
    return b.seek_ok;
}

/// Whether the preferred backend takes a batch op now (a PREAD by the
/// shared inline rule when it allows: see backend::takes_fitting_preads).
[[gnu::always_inline]] inline bool batch_accepts(context &c, const asys_op &op, batch_route &b) noexcept {
    if (op.opcode == ASYS_OP_PREAD && b.fitting_preads) {
        if (!ring_positional_args_fit(op.args)) return false;
        b.op_seeks = batch_fd_seeks(b, op);
        return b.op_seeks;
    }
    b.op_seeks = batch_fd_seeks(b, op);
    return c.preferred_accepts(op.opcode, op.args, b.op_seeks);
}

// Room, without deadlocking on a batch's window: ops waiting in it hold
// room that only their enter can free, so a batch that runs out enters the
// kernel for them first.
[[gnu::always_inline]] inline int reserve_room_for(context &c, batch_route *batch, bool nonblocking) noexcept {
    if (batch && batch->w->n) {
        const int rc = c.reserve_room(true, /*count_rejected=*/false);
        if (rc != -EAGAIN) return rc;
        c.enter_window(*batch->w);
    }
    return c.reserve_room(nonblocking);
}

// The rest of an op's route once its inline attempt (if any) did not finish
// it: `f` are its effective flags, `a` and `res` what the attempt said.
int route_attempted(context &c, const asys_op &op, uint32_t f, bool reserved, attempt a, long res,
                    batch_route *batch) noexcept {
    const bool atomic = f & ASYS_F_ATOMIC;
    if (f & ASYS_F_NOWAIT) {
        if (a == attempt::partial) return finish_inline(c, op, res, reserved);
        if (reserved) c.release_room(1);
        return -EAGAIN;
    }

    if (!reserved) {
        int rc = reserve_room_for(c, batch, atomic);
        if (rc) {
            // Bytes already read inline are never dropped: deliver the short
            // count now rather than fail.
            if (a == attempt::partial) return finish_inline(c, op, res, false);
            return rc;
        }
    }
    op_slot *s = c.new_slot(op);
    if (a == attempt::partial) s->done = static_cast<uint32_t>(res);  // a short read: <= MAX_RW_COUNT
    const bool direct = a == attempt::not_tried || a == attempt::refused;
    s->direct = direct;
    // A positional read the probe got EAGAIN or a refusal for: the fd takes
    // positional reads (a stream would have said ESPIPE first).
    s->seekable = (a == attempt::would_block || a == attempt::refused) &&
                  (op.opcode == ASYS_OP_PREAD || op.opcode == ASYS_OP_PREADV) && static_cast<int64_t>(op.args[3]) >= 0;
    // In a batch, one lseek per fd answers for all its positional transfers
    // (ASYNC ones too, which no probe tried).
    if (batch && !s->seekable) s->seekable = batch_fd_seeks(*batch, op);
    const unsigned s_class = s->sched;
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
    c.cnt.count_punt(s_class, direct);
    return 0;
}

// A batch op the preferred backend accepted (when the window had entered
// the kernel `enters` times) joins the window (no inline attempt: the
// kernel runs it during the window's enter): 0, or -ESHUTDOWN. It needs room
// until its enter, and a free entry; if there is no room even after
// entering the window so far, -EAGAIN: it is probed like any op (a cached
// read finishes inline without room). An enter here (for room, or a full
// window) may run a completion callback that gives the fd number to another
// file: the backend is then asked again, and an op it no longer takes is
// -EAGAIN too.
// (Always inline: a batch pays no call per op for it.)
// `plain`: the op is a plain read (see plain_read) of the batch's array,
// which often has more after it: room and slots are taken for them too.
[[gnu::always_inline]] inline int join_window(context &c, const asys_op &op, batch_route &batch, unsigned enters, bool reserved,
                                              bool plain) noexcept {
    int rc = 0;
    op_slot *slot = nullptr;  // with its room, when it comes from the spares
    if (!reserved) {
        // Room and slots for this op and those that may follow, in one go
        // (up to a window's worth; what no op takes is given back).
        if (plain && batch.spares == 0) {
            const auto left = static_cast<unsigned>(batch.ops + batch.n - &op);  // op is in the array
            batch.spares = c.reserve_window_slots(batch.spare, left < batch_window::kMax ? left : batch_window::kMax);
        }
        if (batch.spares) {
            slot = batch.spare[--batch.spares];
        } else {
            rc = c.reserve_room(true, /*count_rejected=*/false);
            if (rc == -EAGAIN && batch.w->n) {
                c.enter_window(*batch.w);
                rc = c.reserve_room(true, /*count_rejected=*/false);
            }
        }
    }
    if (rc) return rc;
    if (batch.w->n == batch_window::kMax) c.enter_window(*batch.w);
    if (batch.w->enters != enters && !batch_accepts(c, op, batch)) {
        if (slot) c.unreserve_window_slots(&slot, 1);
        else if (!reserved) c.release_room(1);
        return -EAGAIN;
    }
    if (batch.status) *batch.status = 0;  // before the punt: the op may finish inside it
    if (!plain) batch.wrote_status = true;  // (route_batch knows a plain read's)
    c.new_window_slot(op, batch.status, *batch.w, batch.op_seeks, slot, plain);  // counted when the window settles
    return 0;
}

// A batch's plain read (see plain_read) the preferred backend accepts: what
// validate_op and route_op would do with it, without their general steps.
// 0 (in the window), -ESHUTDOWN, or -EAGAIN (the general route decides).
// (The caller checked that the context has no INLINE_ALWAYS/INLINE_NEVER.)
int plain_read_to_window(context &c, const asys_op &op, batch_route &batch) noexcept {
    const unsigned enters = batch.w->enters;
    if (!batch_accepts(c, op, batch)) return -EAGAIN;
    // Ops run in order: the window holds no op that came after a non-window op.
    return join_window(c, op, batch, enters, false, /*plain=*/true);
}

int route_op(context &c, const asys_op &op, batch_route *batch) noexcept {
    uint32_t f = op.flags;
    if (!(f & (ASYS_F_SYNC | ASYS_F_ASYNC | ASYS_F_NOWAIT))) {
        const unsigned cf = c.ctx_flags();
        if (cf & ASYS_CTX_INLINE_ALWAYS) f |= ASYS_F_SYNC;
        else if (cf & ASYS_CTX_INLINE_NEVER) f |= ASYS_F_ASYNC;
    }
    const bool atomic = f & ASYS_F_ATOMIC;

    // In a batch with a window: whether this op joins it (no probe; the
    // kernel runs it during the window's enter). Ops run in order, so any
    // other op first enters the kernel for the window's ops before it.
    bool to_window = false;
    unsigned enters = 0;  // the window's enters when the backend took it
    if (batch) {
        if (batch_skips_probe(op, f)) {
            enters = batch->w->enters;
            to_window = batch_accepts(c, op, *batch);
        }
        // An op that may give an fd number to another file first enters
        // the kernel for everything the batch queued before it (forced-async
        // ops wait plugged too), which the ring would otherwise run on the
        // new file.
        if (!to_window && (batch->w->n || !leaves_fds_alone(op))) c.enter_window(*batch->w);
    }
    // Room first when an inline finish must post a cqe, so that a full ring
    // is reported before anything runs.
    bool reserved = false;
    if (needs_cqe_inline(op)) {
        int rc = reserve_room_for(c, batch, atomic || (f & ASYS_F_NOWAIT));
        if (rc) return rc;
        reserved = true;
    }

    // A deadline that passed before the op started: -ETIME, nothing runs.
    if ((f & ASYS_F_DEADLINE) && monotonic_ns() >= static_cast<int64_t>(op.deadline_ns)) {
        c.cnt.expired[sched_class_of(op.opcode, op.nr, op.flags)].fetch_add(1, std::memory_order_relaxed);
        return finish_inline(c, op, -ETIME, reserved);
    }
    if (kOpcodes[op.opcode].cls == op_class::feature) return feature_for(op.opcode)->route(c, op, f, reserved);
    if (f & ASYS_F_SYNC) return finish_inline(c, op, execute_op(op.opcode, op.nr, op.args), reserved);

    if (to_window) {
        const int rc = join_window(c, op, *batch, enters, reserved, /*plain=*/false);
        if (rc != -EAGAIN) return rc;
    }

    // A call that reads the calling thread's state runs here even when
    // ASYNC (it never blocks; on a worker its answer would be the worker's),
    // and its answer still arrives as ASYNC promises: as a completion.
    if ((f & ASYS_F_ASYNC) && op.opcode == ASYS_OP_SYSCALL && runs_on_submitter(op.nr, op.args)) {
        if (!reserved)
            if (int rc = reserve_room_for(c, batch, atomic)) return rc;
        (void)finish_inline(c, op, execute_op(op.opcode, op.nr, op.args), /*reserved=*/true);
        return 0;
    }

    long res = 0;
    attempt a = attempt::not_tried;
    if (!(f & ASYS_F_ASYNC)) {
        const bool buffered = (f & ASYS_F_BUFFERED) || (c.ctx_flags() & ASYS_CTX_NO_ODIRECT);
        // A read of an fd whose probe direct I/O refused goes to a backend
        // untouched (NOWAIT ops never punt: they probe).
        const bool skip = !buffered && !(f & ASYS_F_NOWAIT) && kOpcodes[op.opcode].cls == op_class::read &&
                          direct_hint_skips_probe(static_cast<int>(op.args[0]));
        if (!skip) a = try_inline(op, buffered, &res);
        if (a == attempt::done) return finish_inline(c, op, res, reserved);
    }
    return route_attempted(c, op, f, reserved, a, res, batch);
}

}  // namespace

int route(context &c, const asys_op &op) noexcept {
    // From its room to its punt the op is in no count destroy() waits for:
    // destroy waits for this caller to leave, then for the op.
    const context::caller_scope busy(c);
    if (!busy.ok()) return -ESHUTDOWN;
    return route_op(c, op, nullptr);
}

namespace {

// submit()'s plain read that its probe did not finish (or that has ASYNC:
// `a` is not_tried): the general route from after the probe. (Out of line:
// the short way keeps few registers.)
[[gnu::noinline]] int submit_probed(context &c, const asys_op &op, attempt a, long res) noexcept {
    const errno_keeper keep;
    const context::caller_scope busy(c);  // as in route()
    if (!busy.ok()) {
        // Bytes already read inline are never dropped (see route_attempted).
        return a == attempt::partial ? finish_inline(c, op, res, false) : -ESHUTDOWN;
    }
    return route_attempted(c, op, op.flags, false, a, res, nullptr);
}

[[gnu::noinline]] int submit_general(context &c, const asys_op *op) noexcept {
    const errno_keeper keep;
    if (int rc = validate_op(op)) return rc;
    return route(c, *op);
}

}  // namespace

int submit(context &c, const asys_op *op) noexcept {
    // The common op: its probe runs here, and only a read it did not finish
    // takes the general route; with ASYNC it goes to its punt at once.
    if (plain_read(op, ASYS_F_ASYNC)) {
        if (op->flags & ASYS_F_ASYNC) return submit_probed(c, *op, attempt::not_tried, 0);
        const unsigned cf = c.ctx_flags();
        if (!(cf & (ASYS_CTX_INLINE_ALWAYS | ASYS_CTX_INLINE_NEVER))) {
            const bool buffered = (op->flags & ASYS_F_BUFFERED) || (cf & ASYS_CTX_NO_ODIRECT);
            const int fd = static_cast<int>(op->args[0]);
            if (buffered || !direct_hint_skips_probe(fd)) {
                long res = 0;
                const attempt a = probe_read_buffer(fd, op->args[1], op->args[2], static_cast<int64_t>(op->args[3]),
                                                    op->opcode == ASYS_OP_PREAD, buffered, &res);
                // Raw system calls only so far: errno untouched.
                if (a == attempt::done) return finish_inline_here(c, *op, res, false);
                return submit_probed(c, *op, a, res);
            }
        }
    }
    return submit_general(c, op);
}

int route_batch(context &c, const asys_op *ops, unsigned n, int *status) noexcept {
    const context::caller_scope busy(c);
    if (!busy.ok()) return -ESHUTDOWN;
    batch_window w;
    batch_window *saved = nullptr;
    const bool windowed = c.batches_via_preferred();
    // Plain reads join the window by their short way unless the context's
    // defaults change their route.
    const bool plain_to_window = windowed && !(c.ctx_flags() & (ASYS_CTX_INLINE_ALWAYS | ASYS_CTX_INLINE_NEVER));
    if (windowed) c.open_window(w, &saved);
    c.plug();  // ring-bound ops of the batch enter the kernel once (per window)
    batch_route b;  // (the spares are written before they are read)
    b.w = &w;
    b.status = nullptr;
    b.wrote_status = false;
    b.fitting_preads = windowed && c.preferred_takes_fitting_preads();
    b.ops = ops;
    b.n = n;
    int ret = static_cast<int>(n);
    for (unsigned i = 0; i < n; ++i) {
        b.status = status ? &status[i] : nullptr;
        int rc = -EAGAIN;
        if (plain_to_window && plain_read(&ops[i])) {
            rc = plain_read_to_window(c, ops[i], b);
            if (rc == 0) continue;  // in the window: join_window wrote its status
        }
        b.wrote_status = false;
        if (rc == -EAGAIN) {
            // An op outside the window finds the room the spares held free.
            if (b.spares) drop_spares(c, b);
            rc = validate_op(&ops[i]);
            if (rc == 0) rc = route_op(c, ops[i], windowed ? &b : nullptr);
            if (!leaves_fds_alone(ops[i])) b.seek_fd = -1;  // it may have closed, opened or dup'd one
        }
        if (status && !b.wrote_status) status[i] = rc;
        if (rc < 0) {
            ret = i ? static_cast<int>(i) : rc;
            break;
        }
    }
    drop_spares(c, b);
    if (windowed) c.punt_window(w);
    c.unplug();  // enters the kernel; completions it posted are reaped here, in the window
    if (windowed) c.close_window(saved);
    return ret;
}

}  // namespace asys::internal
