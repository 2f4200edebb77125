// ASYS_OP_CHAIN on the pool: the part of a chain that runs on a worker, and
// the bookkeeping for a chain op that completes without running there.
#include <cerrno>

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
