// The opcode table: what each asys opcode runs and how the router treats it.
#pragma once
#include <atomic>
#include <cstdint>

#include "asys/asys.h"

namespace asys::internal {

/// How the router treats an op before any backend sees it.
enum class op_class : uint8_t {
    never_blocks,  ///< run inline always (nop, close, cheap getters)
    read,          ///< read family: inline probe with preadv2(RWF_NOWAIT)
    recv,          ///< recv: inline probe with MSG_DONTWAIT
    send,          ///< send: inline probe with MSG_DONTWAIT
    open,          ///< openat: inline probe with openat2(RESOLVE_CACHED)
    close,         ///< close: inline unless the file may wait on close (linger, network fs)
    poll,          ///< poll: inline probe with a zero timeout
    syscall,       ///< generic: never_blocks if the number is in that set
    backend,       ///< no useful probe: straight to a backend
    chain,         ///< a syslet chain: the router runs it (see syslet/chain_op)
};

struct opcode_info {
    const char *name;
    long nr;        ///< syscall number, -1 where the executor special-cases it
    uint8_t nargs;  ///< args used; the rest are passed as zero
    op_class cls;
};

extern const opcode_info kOpcodes[ASYS_OP__COUNT];

/// True if a generic syscall number is in the "never blocks" set.
bool syscall_never_blocks(long nr) noexcept;

/// ASYS_OP_CHAIN on a worker (defined by the syslet layer). args: [0] the
/// next atom to run (cleared when the chain ends), [1] last_out, [2] atoms
/// run so far, [3] step limit. `cancel` is the slot's cancel flag. Returns
/// the last atom's result; never -EINTR.
long execute_chain(uint64_t (&args)[6], const std::atomic<uint8_t> *cancel) noexcept;
/// A chain op that completes without having run on a worker (cancelled
/// while queued, or an injected fault): its next atom gets `res` through its
/// ret_ptr and becomes *last_out.
void chain_not_run(const uint64_t (&args)[6], long res) noexcept;

/// A chain op whose linked ring sequence (args[4]: linked_ops) finished:
/// writes the atoms' results and frees the sequence. Returns true when the
/// chain is over (*res: the op's result, args[0] cleared, *last_out set);
/// false when it must continue on the pool from args[0].
bool chain_linked_done(uint64_t (&args)[6], const std::atomic<uint8_t> *cancel, long *res) noexcept;

/// Runs system call `nr` on the calling thread, keeping the library's own
/// descriptors out of reach of close / dup2 / dup3 / close_range
/// (library_fds::run_sparing). -errno on failure.
long run_syscall(long nr, const uint64_t (&args)[6]) noexcept;

/// Runs the op's system call on the calling thread, blocking if it blocks.
/// Returns the result or -errno.
long execute_op(uint32_t opcode, long nr, const uint64_t (&args)[6]) noexcept;

}  // namespace asys::internal
