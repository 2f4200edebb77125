// The syslet chain interpreter: runs atoms, reading arguments through
// arg_ptr at the moment each atom runs, testing stop flags, following next
// (which may point backwards), and stopping where an atom would block.
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>

#include "asys/syslet.h"

namespace asys::internal {

/// An atom an earlier attempt already ran, to run again.
struct atom_retry {
    /// The arguments it was run with: it runs again with these, not with
    /// arguments read again (a read attempt may have overwritten one kept
    /// in its own buffer).
    uint64_t args[6];
    /// 0: the atom runs again whole (its inline read came back short where
    /// the call would go on, and a read at the file position put the
    /// position back). Otherwise the bytes its transfer already moved (the
    /// ring wrote a stream short, where write(2) waits for every byte):
    /// only the rest runs, and the atom's result is the whole count.
    uint64_t done;
    uint32_t opcode;  ///< with `done`: the op the transfer ran as (args are its arguments)
};

struct chain_run {
    syslet_uatom *cur = nullptr;   ///< next atom to run (nullptr: chain ended)
    syslet_uatom *last = nullptr;  ///< the last atom that ran (or was refused)
    uint64_t steps = 0;            ///< atoms run so far
    uint64_t step_limit = 0;       ///< 0: none
    bool buffered = false;         ///< the context asserts no O_DIRECT fds (no read guard)
    /// The chain op has ASYS_F_NOWAIT: nothing may block the caller, so
    /// SYSLET_SYNC does not make an atom run whatever it costs (the atom is
    /// tried like any other, and one that would block stops the chain).
    bool nowait = false;
    /// An fd this run just read through the O_DIRECT guard (bytes came back
    /// buffered), or -1. Consecutive read atoms on it skip the guard; any
    /// other atom (except umem_add) forgets it, since it might close, dup2
    /// or fcntl the fd. Lives for one run on one thread: no fd-reuse hazard
    /// beyond another thread swapping the fd mid-chain, which costs at worst
    /// one direct read on the caller, never a wrong result.
    long guard_proved_fd = -1;
    /// Set by asys_async_cancel: the chain ends before its next atom (which
    /// gets -ECANCELED), or at an atom whose call the cancel interrupted.
    /// (The pool's per-slot cancel flag for ASYS_OP_CHAIN ops.)
    const std::atomic<uint8_t> *cancelled = nullptr;
    long last_res = 0;             ///< the result of `last`
    /// How `cur` runs again, when an attempt at it already ran (null
    /// otherwise): see atom_retry.
    std::unique_ptr<atom_retry> retry;
};

enum class chain_status {
    ended,       ///< the chain is over; run.last is its last atom
    would_block, ///< run.cur would block (not run); continue it asynchronously
};

/// Runs atoms from run.cur. With `may_block` every atom runs here, blocking
/// if it must; without it, the first atom that would block (or is marked
/// SYSLET_ASYNC) is left in run.cur and would_block is returned.
chain_status run_chain(chain_run &run, bool may_block) noexcept;

/// When run.cur already moved part of its transfer (run.retry->done), ends
/// the chain at it with the count moved, as a call stopped at that point
/// would (a NOWAIT chain, or a rest no backend can take): true. Otherwise
/// false, and nothing changes.
bool end_at_moved_bytes(chain_run &run) noexcept;

}  // namespace asys::internal
