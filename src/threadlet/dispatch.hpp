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

/// The calling thread's dispatch: turned on (selector ALLOW) or off.
int dispatch_enable(bool on) noexcept;
bool dispatch_enabled() noexcept;
/// The calling thread's selector: true = calls trap.
void dispatch_block(bool block) noexcept;
bool dispatch_blocking() noexcept;

/// System calls trapped so far in this process (relaxed: a statistic for
/// tests and benchmarks).
extern std::atomic<uint64_t> g_trapped_calls;

/// maybe_fork's part of the handler (maybe_fork.cpp): true while the
/// calling thread is in a region; region_call handles a trapped call
/// there (may fork; in the parent it does not return).
bool region_active() noexcept;
long region_call(ucontext_t *uc, long nr, const uint64_t (&args)[6]) noexcept;

}  // namespace asys::internal
