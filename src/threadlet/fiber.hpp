// Fibers for threadlets: pooled stacks with a guard page, and a switch
// that saves only what the x86-64 ABI says a call preserves (rbx, rbp,
// r12-r15, the stack pointer, MXCSR and the x87 control word). No system
// call per switch (swapcontext makes one for the signal mask: a threadlet
// shares its thread's mask, so there is nothing to switch). Sanitizer
// builds tell ASan and TSan about every switch.
#pragma once
#include <cstddef>

namespace asys::internal {

/// A stack: [base, base + size) is usable, the page below base is a guard.
struct fiber_stack {
    void *base = nullptr;
    size_t size = 0;
};

/// A stack from the pool (a per-thread cache first, then a process-wide
/// one, else a new mapping). base is null when no memory is left.
fiber_stack stack_get() noexcept;
/// Returns a stack to the pool (or unmaps it when the pool is full).
void stack_put(fiber_stack s) noexcept;
/// Usable bytes per stack (virtual; pages are resident only when touched).
size_t stack_size() noexcept;

/// The side that switched into a fiber, recorded so the fiber can switch
/// back to it.
struct fiber_caller {
    void *sp = nullptr;
    const void *stack_bottom = nullptr;  ///< ASan: the caller's stack
    size_t stack_size = 0;
    void *fake_stack = nullptr;          ///< ASan: the caller's fake stack
    void *tsan = nullptr;                ///< TSan: the caller's fiber
};

struct fiber {
    void *sp = nullptr;  ///< saved while switched out
    fiber_stack stack;
    void *fake_stack = nullptr;  ///< ASan
    void *tsan = nullptr;        ///< TSan
};

/// Prepares `f` (its stack set) to run entry(arg) on its first resume;
/// `top` is the highest address the fiber may use.
void fiber_init(fiber &f, void *top, void (*entry)(void *), void *arg) noexcept;
/// Switches from the calling context into `f`; returns when `f` switches
/// back (fiber_yield / fiber_exit).
void fiber_resume(fiber &f, fiber_caller &c) noexcept;
/// The first thing entry() does: completes the switch into a new fiber.
void fiber_entered(fiber &f, fiber_caller &c) noexcept;
/// From inside `f`: switches back to its caller; returns when resumed.
void fiber_yield(fiber &f, fiber_caller &c) noexcept;
/// From inside `f`: switches back for the last time.
[[noreturn]] void fiber_exit(fiber &f, fiber_caller &c) noexcept;
/// After `f` exited: releases what the sanitizers kept for it.
void fiber_release(fiber &f) noexcept;

}  // namespace asys::internal
