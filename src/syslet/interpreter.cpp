#include "syslet/interpreter.hpp"

#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "base/denylist.hpp"
#include "base/opcodes.hpp"
#include "base/raw_syscall.hpp"
#include "inline/inline_attempt.hpp"

namespace asys::internal {
namespace {

// The asys op whose inline probe tells whether syscall `nr` would block
// (the opcode table's atom_probe column), or -1 if there is none (the atom
// then goes asynchronous). recvfrom/sendto are probed only without an
// address (the probes take none).
int probe_opcode(unsigned long nr, const uint64_t (&a)[6]) noexcept {
    const int op = opcode_for_atom(static_cast<long>(nr), atom_probe);
    if ((op == ASYS_OP_RECV || op == ASYS_OP_SEND) && (a[4] || a[5])) return -1;
    return op;
}

// Whether a read op reads at an offset of its own (not the file position).
bool reads_at_offset(const asys_op &op) noexcept {
    if (op.opcode == ASYS_OP_PREAD) return true;
    return op.opcode == ASYS_OP_PREADV && static_cast<int64_t>(op.args[3]) != -1;
}

enum class atom_outcome { ran, refused, would_block };

// Runs one atom; *res gets its result unless it would block.
atom_outcome run_atom(syslet_uatom &at, bool may_block, chain_run &run, long *res) noexcept {
    if (at.flags & ~SYSLET__ALL) {
        *res = -EINVAL;
        return atom_outcome::refused;
    }
    // SYSLET_SYNC: run here even if it blocks, unless nothing may block.
    const bool sync = (at.flags & SYSLET_SYNC) && !run.nowait;
    if (!may_block && (at.flags & SYSLET_ASYNC) && !sync)
        return atom_outcome::would_block;  // asked to run asynchronously
    uint64_t a[6];
    if (run.retry) {  // run again: with the same arguments
        if (run.retry->done) {
            // Only the rest of a transfer the ring moved part of; it may
            // block, so never inline (such a retry is only ever handed to
            // a worker).
            if (!may_block) return atom_outcome::would_block;
            const atom_retry &rt = *run.retry;
            // A stray interrupt (a cancel signal meant for an earlier op)
            // is retried; one that a cancel of this chain sent ends the atom
            // with what was moved.
            long r;
            do r = execute_rest_of_transfer(rt.opcode, rt.args, rt.done);
            while (r == -EINTR && !(run.cancelled && run.cancelled->load(std::memory_order_acquire)));
            *res = r == -EINTR ? static_cast<long>(rt.done) : r;
            run.retry.reset();
            return atom_outcome::ran;
        }
        std::memcpy(a, run.retry->args, sizeof a);
        run.retry.reset();
    } else {
        for (int i = 0; i < 6; ++i) a[i] = at.arg_ptr[i] ? *at.arg_ptr[i] : 0;  // read now: data flow
    }
    const long nr = static_cast<long>(at.nr);
    if (nr == __NR_umem_add) {
        auto *p = reinterpret_cast<unsigned long *>(a[0]);
        if (!p) {
            *res = -EFAULT;
            return atom_outcome::refused;
        }
        *p += a[1];
        *res = static_cast<long>(*p);
        return atom_outcome::ran;
    }
    // A read atom keeps the guard hint only for the fd it proved; anything
    // else may change what an fd number refers to.
    const bool is_read = nr == SYS_read || nr == SYS_pread64 || nr == SYS_readv;
    const long hint = run.guard_proved_fd;
    run.guard_proved_fd = -1;
    if (int allowed = syscall_allowed_in_chain(nr, a); allowed != 0) {
        *res = allowed;  // -EPERM (denied, or of the calling thread) or -ENOSYS (unknown)
        return atom_outcome::refused;
    }
    if (may_block || sync) {
        // A stray interrupt (a cancel signal meant for an earlier op) is
        // retried; one that a cancel of this chain sent ends it (see below).
        do *res = run_syscall(nr, a);
        while (*res == -EINTR && !(run.cancelled && run.cancelled->load(std::memory_order_acquire)));
        return atom_outcome::ran;
    }
    if (syscall_never_blocks(nr)) {
        *res = run_syscall(nr, a);
        return atom_outcome::ran;
    }
    const int opcode = probe_opcode(static_cast<unsigned long>(nr), a);
    if (opcode < 0) return atom_outcome::would_block;
    asys_op op{};
    op.opcode = static_cast<uint32_t>(opcode);
    for (int i = 0; i < 6; ++i) op.args[i] = a[i];
    if (nr == SYS_recvfrom || nr == SYS_sendto) op.args[4] = op.args[5] = 0;
    long r = 0;
    bool proved = false;
    const bool skip_guard = run.buffered || (is_read && static_cast<long>(a[0]) == hint);
    switch (try_inline(op, skip_guard, &r, &proved)) {
        case attempt::done:
            *res = r;
            if (is_read && (proved || skip_guard) && r > 0) run.guard_proved_fd = static_cast<long>(a[0]);
            return atom_outcome::ran;
        case attempt::partial: {
            // Short, but the call would have gone on. A read (a file partly
            // in the page cache) runs again, whole, where it may block, with
            // the same arguments: the bytes it read are read again, and a
            // read at the file position first puts the position back.
            // (Whole, not the rest: a NOWAIT chain stops here, and the atom
            // must then not have run.) A send cannot be taken back: only its
            // rest runs where it may block, and the atom's result is the
            // whole count (a NOWAIT chain ends at it with the bytes sent).
            std::unique_ptr<atom_retry> keep(new (std::nothrow) atom_retry{});
            if (!keep) {
                *res = r;  // cannot: the short count is what was moved
                return atom_outcome::ran;
            }
            // (A send's are its op's: sendto without an address.)
            std::memcpy(keep->args, op.opcode == ASYS_OP_SEND ? op.args : a, sizeof keep->args);
            if (op.opcode == ASYS_OP_SEND) {
                keep->done = static_cast<uint64_t>(r);
                keep->opcode = op.opcode;
            } else if (!reads_at_offset(op) &&
                       raw_syscall6(SYS_lseek, a[0], static_cast<uint64_t>(-r), SEEK_CUR, 0, 0, 0) < 0) {
                *res = r;  // cannot put the position back: the short count is what was read
                return atom_outcome::ran;
            }
            run.retry = std::move(keep);
            return atom_outcome::would_block;
        }
        default:
            return atom_outcome::would_block;
    }
}

bool stops(unsigned long flags, long r) noexcept {
    return ((flags & SYSLET_STOP_ON_NONZERO) && r != 0) || ((flags & SYSLET_STOP_ON_ZERO) && r == 0) ||
           ((flags & SYSLET_STOP_ON_NEGATIVE) && r < 0) ||
           ((flags & SYSLET_STOP_ON_NON_POSITIVE) && r <= 0);
}

}  // namespace

namespace {
/// Ends the chain at run.cur with result r (written to its ret_ptr): the
/// atom is the chain's last.
chain_status end_at(chain_run &run, long r) noexcept {
    run.retry.reset();
    if (run.cur->ret_ptr) *run.cur->ret_ptr = r;
    run.last = run.cur;
    run.last_res = r;
    run.cur = nullptr;
    return chain_status::ended;
}
}  // namespace

bool end_at_moved_bytes(chain_run &run) noexcept {
    if (!run.cur || !run.retry || !run.retry->done) return false;
    end_at(run, static_cast<long>(run.retry->done));
    return true;
}

chain_status run_chain(chain_run &run, bool may_block) noexcept {
    auto is_cancelled = [&] { return run.cancelled && run.cancelled->load(std::memory_order_acquire); };
    while (run.cur) {
        syslet_uatom &at = *run.cur;
        if (is_cancelled()) {
            // Not run; but an atom whose transfer already moved part of its
            // bytes ends with them, as an interrupted call would.
            if (end_at_moved_bytes(run)) return chain_status::ended;
            return end_at(run, -ECANCELED);
        }
        if (run.step_limit && run.steps >= run.step_limit)
            return end_at(run, -ELOOP);  // not run: the limit ends the chain here
        long res = 0;
        const atom_outcome o = run_atom(at, may_block, run, &res);
        if (o == atom_outcome::would_block) return chain_status::would_block;
        ++run.steps;
        if (res == -EINTR && is_cancelled()) return end_at(run, -ECANCELED);  // the cancel interrupted this call
        if (at.ret_ptr) *at.ret_ptr = res;
        run.last = &at;
        run.last_res = res;
        if (o == atom_outcome::refused) {
            run.cur = nullptr;
            break;
        }
        if (stops(at.flags, res))
            run.cur = (at.flags & SYSLET_SKIP_TO_NEXT_ON_STOP) ? &at + 1 : nullptr;
        else
            run.cur = at.next;
    }
    return chain_status::ended;
}

}  // namespace asys::internal
