// Syscall user dispatch for transparent threadlets and maybe_fork: while a
// thread's selector says BLOCK, every system call it makes outside the
// library's own code traps into a SIGSYS handler, which runs it through
// the threadlet's inline-or-park logic (or maybe_fork's inline-or-fork
// logic) and writes the result into the trapped registers. The handler is
// installed with the raw rt_sigaction (glibc's sigaction() replaces
// sa_restorer) and returns through a restorer inside the allowed range.
// Dispatch is per thread, turned on only around the code that wants it:
// threads that never use it pay nothing.
#pragma once
#include <ucontext.h>

#include <atomic>
#include <cstdint>

namespace asys::internal {

/// Installs the handler and finds the allowed range (once per process).
/// 0, or -EOPNOTSUPP when the kernel has no syscall user dispatch.
int dispatch_init() noexcept;

/// Leaves SIGSYS out of the mask of every installed handler (dispatch_init
/// does it once; trapped rt_sigaction calls do it for the handlers they
/// install): a handler that ran in trapped code with SIGSYS blocked would
/// kill the process at its first call. Handlers installed later by
/// untrapped code are not seen.
void hide_sigsys_from_handlers() noexcept;

/// The calling thread's dispatch: turned on (selector ALLOW) or off.
int dispatch_enable(bool on) noexcept;
bool dispatch_enabled() noexcept;
/// The calling thread's selector: true = calls trap.
void dispatch_block(bool block) noexcept;
bool dispatch_blocking() noexcept;

/// The calling thread's selector for trapped code (maybe_fork's region):
/// on, calls trap, and the real signal mask leaves SIGSYS unblocked (the
/// program's SIGSYS bit is kept aside: a trap raised while SIGSYS is
/// blocked kills the process); off, they don't, and the program's mask is
/// the real one again.
void dispatch_trapping(bool on) noexcept;

/// The mask of trapped code in a signal frame and the thread's real mask,
/// for code that leaves the handler another way than its return: the
/// frame's mask (with the kept SIGSYS bit) becomes the thread's
/// (mask_to_thread: a threadlet parked in the handler, maybe_fork's
/// parent); the thread's becomes the frame's, SIGSYS kept aside
/// (mask_from_thread: on resume); or the frame gets the kept bit back
/// (mask_to_frame: the code goes on untrapped, as maybe_fork's child).
void mask_to_thread(const ucontext_t *uc) noexcept;
void mask_from_thread(ucontext_t *uc) noexcept;
void mask_to_frame(ucontext_t *uc) noexcept;

/// System calls trapped so far in this process (relaxed: a statistic for
/// tests and benchmarks).
extern std::atomic<uint64_t> g_trapped_calls;

/// maybe_fork's part of the handler (maybe_fork.cpp): true while the
/// calling thread is in a region; region_call handles a trapped call
/// there (may fork; in the parent it does not return).
bool region_active() noexcept;
long region_call(ucontext_t *uc, long nr, const uint64_t (&args)[6]) noexcept;

}  // namespace asys::internal
