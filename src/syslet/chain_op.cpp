// ASYS_OP_CHAIN on the pool: the part of a chain that runs on a worker, and
// the bookkeeping for a chain op that completes without running there.
#include "syslet/chain_op.hpp"

#include <sys/syscall.h>

#include <cerrno>
#include <new>

#include "core/context.hpp"
#include "core/linked_ops.hpp"
#include "core/opcodes.hpp"
#include "syslet/interpreter.hpp"

namespace asys::internal {

long execute_chain(uint64_t (&args)[6], const std::atomic<uint8_t> *cancel) noexcept {
    chain_run run;
    run.cur = reinterpret_cast<syslet_uatom *>(args[0]);
    run.steps = args[2];
    run.step_limit = args[3];
    run.cancelled = cancel;
    run_chain(run, /*may_block=*/true);
    args[0] = 0;  // ran: context::complete must not touch the atoms again
    if (args[1]) *reinterpret_cast<syslet_uatom **>(args[1]) = run.last;
    return run.last_res;
}

void chain_not_run(const uint64_t (&args)[6], long res) noexcept {
    auto *at = reinterpret_cast<syslet_uatom *>(args[0]);
    if (at->ret_ptr) *at->ret_ptr = res;
    if (args[1]) *reinterpret_cast<syslet_uatom **>(args[1]) = at;
}

}  // namespace asys::internal

// ----------------------------------------------- io_uring links for chains

namespace asys::internal {
namespace {

// The asys opcode a linkable atom maps to, or -1.
int linkable_opcode(unsigned long nr) noexcept {
    switch (nr) {
        case SYS_read: return ASYS_OP_READ;
        case SYS_pread64: return ASYS_OP_PREAD;
        case SYS_write: return ASYS_OP_WRITE;
        case SYS_pwrite64: return ASYS_OP_PWRITE;
        case SYS_fsync: return ASYS_OP_FSYNC;
        case SYS_fdatasync: return ASYS_OP_FDATASYNC;
        default: return -1;
    }
}

bool transfers(uint32_t opcode) noexcept {
    return opcode == ASYS_OP_READ || opcode == ASYS_OP_PREAD || opcode == ASYS_OP_WRITE ||
           opcode == ASYS_OP_PWRITE;
}

}  // namespace

namespace {

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
        if (!c.ring_runs(static_cast<uint32_t>(op), a)) return nullptr;
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
        e.hard = !(at->flags & SYSLET_STOP_ON_NEGATIVE);
        e.tag = at;
        e.res = 0;
        for (unsigned i = 0; i < 6; ++i) e.args[i] = at->arg_ptr[i] ? *at->arg_ptr[i] : 0;
    }
    return lo;
}

int punt_chain_rest(context &c, const asys_op &op, const chain_run &run, bool atomic) noexcept {
    op_slot *s = c.new_slot(op);
    s->args[0] = reinterpret_cast<uint64_t>(run.cur);
    s->args[2] = run.steps;
    s->args[3] = run.step_limit;
    s->direct = run.steps == 0;
    // A plain sequence of ring ops runs as linked SQEs: no thread per chain
    // (1.4-1.9x the pool's throughput for concurrent cold chains, measured).
    s->args[4] = reinterpret_cast<uint64_t>(link_chain(c, run.cur, run.steps, run.step_limit));
    const int rc = c.punt(s, atomic);
    if (rc) c.abandon_slot(s);  // context::punt freed the linked sequence
    return rc;
}

bool chain_linked_done(uint64_t (&args)[6], const std::atomic<uint8_t> *cancel, long *res) noexcept {
    auto *lo = reinterpret_cast<linked_ops *>(args[4]);
    args[4] = 0;
    const bool cancelled = cancel && cancel->load(std::memory_order_relaxed);
    uint64_t steps = args[2];
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
        if (at->ret_ptr) *at->ret_ptr = r;
        last = at;
        last_res = r;
        ++steps;
        if ((at->flags & SYSLET_STOP_ON_NEGATIVE) && r < 0) break;
        broken = !e.hard && (r < 0 || (transfers(e.opcode) && r != static_cast<long>(e.args[2])));
    }
    delete lo;
    if (resume) {
        args[0] = reinterpret_cast<uint64_t>(resume);
        args[2] = steps;
        return false;
    }
    args[0] = 0;
    if (args[1]) *reinterpret_cast<syslet_uatom **>(args[1]) = last;
    *res = last_res;
    return true;
}

}  // namespace asys::internal
