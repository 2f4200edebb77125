#include "threadlet/fiber.hpp"

#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <mutex>
#include <new>

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ASYS_FIBER_ASAN 1
#endif
#if __has_feature(thread_sanitizer)
#define ASYS_FIBER_TSAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define ASYS_FIBER_ASAN 1
#endif
#if defined(__SANITIZE_THREAD__)
#define ASYS_FIBER_TSAN 1
#endif

#ifdef ASYS_FIBER_ASAN
extern "C" void __sanitizer_start_switch_fiber(void **fake_stack_save, const void *bottom, size_t size);
extern "C" void __sanitizer_finish_switch_fiber(void *fake_stack_save, const void **bottom_old, size_t *size_old);
extern "C" void __asan_unpoison_memory_region(void const volatile *addr, size_t size);
#endif
#ifdef ASYS_FIBER_TSAN
extern "C" void *__tsan_get_current_fiber(void);
extern "C" void *__tsan_create_fiber(unsigned flags);
extern "C" void __tsan_destroy_fiber(void *fiber);
extern "C" void __tsan_switch_to_fiber(void *fiber, unsigned flags);
#endif

// asys_fiber_switch(void **save_sp, void *to_sp): pushes the callee-saved
// registers, MXCSR and the x87 control word, stores the stack pointer in
// *save_sp, loads to_sp and pops the same from there. A new fiber's stack
// is laid out as if it had switched out just before asys_fiber_entry,
// with the entry function in r12 and its argument in r13.
extern "C" void asys_fiber_switch(void **save_sp, void *to_sp);
extern "C" void asys_fiber_entry();
asm(R"(
    .text
    .p2align 4
    .globl asys_fiber_switch
    .hidden asys_fiber_switch
    .type asys_fiber_switch,@function
asys_fiber_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $16, %rsp
    stmxcsr 8(%rsp)
    fnstcw (%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr 8(%rsp)
    fldcw (%rsp)
    addq $16, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size asys_fiber_switch, .-asys_fiber_switch

    .p2align 4
    .globl asys_fiber_entry
    .hidden asys_fiber_entry
    .type asys_fiber_entry,@function
asys_fiber_entry:
    movq %r13, %rdi
    callq *%r12
    ud2
    .size asys_fiber_entry, .-asys_fiber_entry
)");

namespace asys::internal {
namespace {

#if defined(ASYS_FIBER_ASAN) || defined(ASYS_FIBER_TSAN)
constexpr size_t kStackSize = 512 * 1024;  // sanitizer frames are larger
#else
constexpr size_t kStackSize = 128 * 1024;
#endif
constexpr unsigned kThreadCache = 8;
constexpr unsigned kProcessCache = 64;

size_t page_size() noexcept {
    static const size_t p = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    return p;
}

fiber_stack map_stack() noexcept {
    const size_t guard = page_size();
    void *p = mmap(nullptr, guard + kStackSize, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    if (p == MAP_FAILED) return {};
    if (mprotect(p, guard, PROT_NONE) != 0) {
        munmap(p, guard + kStackSize);
        return {};
    }
    return {static_cast<char *>(p) + guard, kStackSize};
}

void unmap_stack(fiber_stack s) noexcept {
    const size_t guard = page_size();
    munmap(static_cast<char *>(s.base) - guard, s.size + guard);
}

// Stacks no threadlet uses. The process-wide cache is a mutex-guarded
// array; each thread keeps a few of its own for the fast path.
struct process_cache {
    std::mutex mu;
    fiber_stack s[kProcessCache];
    unsigned n = 0;
};
process_cache &global() noexcept {
    static process_cache *c = [] {
        auto *pc = new process_cache;  // never destroyed: threads exit after static dtors
        // A child of fork() has one thread: a lock another thread held is free.
        pthread_atfork(nullptr, nullptr, [] { new (&global().mu) std::mutex; });
        return pc;
    }();
    return *c;
}

struct thread_cache {
    fiber_stack s[kThreadCache];
    unsigned n = 0;
    ~thread_cache() {
        while (n) stack_put_global(s[--n]);
    }
    static void stack_put_global(fiber_stack st) noexcept {
        process_cache &g = global();
        {
            std::lock_guard lk(g.mu);
            if (g.n < kProcessCache) {
                g.s[g.n++] = st;
                return;
            }
        }
        unmap_stack(st);
    }
};
thread_local thread_cache t_cache;

}  // namespace

size_t stack_size() noexcept { return kStackSize; }

fiber_stack stack_get() noexcept {
    if (t_cache.n) return t_cache.s[--t_cache.n];
    {
        process_cache &g = global();
        std::lock_guard lk(g.mu);
        if (g.n) return g.s[--g.n];
    }
    return map_stack();
}

void stack_put(fiber_stack s) noexcept {
#ifdef ASYS_FIBER_ASAN
    // Frames of an ended fiber may leave poisoned redzones behind.
    __asan_unpoison_memory_region(s.base, s.size);
#endif
    if (t_cache.n < kThreadCache) {
        t_cache.s[t_cache.n++] = s;
        return;
    }
    thread_cache::stack_put_global(s);
}

void fiber_init(fiber &f, void *top, void (*entry)(void *), void *arg) noexcept {
    // Frame (from sp up): x87 cw, mxcsr, r15, r14, r13, r12, rbx, rbp, ret.
    // After the switch's ret, rsp = sp + 72 must be 16-byte aligned for the
    // entry's call.
    auto t = reinterpret_cast<uintptr_t>(top) & ~uintptr_t{15};
    auto *sp = reinterpret_cast<uint64_t *>(t - 88);
    uint32_t mxcsr;
    uint16_t cw;
    asm volatile("stmxcsr %0" : "=m"(mxcsr));
    asm volatile("fnstcw %0" : "=m"(cw));
    sp[0] = cw;
    sp[1] = mxcsr;
    sp[2] = sp[3] = 0;                            // r15, r14
    sp[4] = reinterpret_cast<uint64_t>(arg);      // r13
    sp[5] = reinterpret_cast<uint64_t>(entry);    // r12
    sp[6] = sp[7] = 0;                            // rbx, rbp
    sp[8] = reinterpret_cast<uint64_t>(&asys_fiber_entry);
    f.sp = sp;
#ifdef ASYS_FIBER_TSAN
    f.tsan = __tsan_create_fiber(0);
#endif
}

void fiber_resume(fiber &f, fiber_caller &c) noexcept {
#ifdef ASYS_FIBER_TSAN
    c.tsan = __tsan_get_current_fiber();
    __tsan_switch_to_fiber(f.tsan, 0);
#endif
#ifdef ASYS_FIBER_ASAN
    __sanitizer_start_switch_fiber(&c.fake_stack, f.stack.base, f.stack.size);
#endif
    asys_fiber_switch(&c.sp, f.sp);
#ifdef ASYS_FIBER_ASAN
    __sanitizer_finish_switch_fiber(c.fake_stack, nullptr, nullptr);
#endif
}

void fiber_entered([[maybe_unused]] fiber &f, [[maybe_unused]] fiber_caller &c) noexcept {
#ifdef ASYS_FIBER_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &c.stack_bottom, &c.stack_size);
#endif
}

namespace {

// From inside `f` back to its caller; `last`: `f` never runs again (ASan
// drops its fake stack).
void switch_to_caller(fiber &f, fiber_caller &c, [[maybe_unused]] bool last) noexcept {
#ifdef ASYS_FIBER_TSAN
    __tsan_switch_to_fiber(c.tsan, 0);
#endif
#ifdef ASYS_FIBER_ASAN
    __sanitizer_start_switch_fiber(last ? nullptr : &f.fake_stack, c.stack_bottom, c.stack_size);
#endif
    asys_fiber_switch(&f.sp, c.sp);
#ifdef ASYS_FIBER_ASAN
    __sanitizer_finish_switch_fiber(f.fake_stack, &c.stack_bottom, &c.stack_size);
#endif
}

}  // namespace

void fiber_yield(fiber &f, fiber_caller &c) noexcept { switch_to_caller(f, c, false); }

void fiber_exit(fiber &f, fiber_caller &c) noexcept {
    switch_to_caller(f, c, true);
    __builtin_unreachable();
}

void fiber_release([[maybe_unused]] fiber &f) noexcept {
#ifdef ASYS_FIBER_TSAN
    if (f.tsan) __tsan_destroy_fiber(f.tsan);
    f.tsan = nullptr;
#endif
}

}  // namespace asys::internal
