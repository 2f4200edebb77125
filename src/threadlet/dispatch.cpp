#include "threadlet/dispatch.hpp"

#include <link.h>
#include <linux/prctl.h>
#include <signal.h>
#include <sys/syscall.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>

#include "base/raw_syscall.hpp"
#include "threadlet/threadlet.hpp"

#ifndef SYS_USER_DISPATCH
#define SYS_USER_DISPATCH 2  // si_code of a dispatch trap
#endif

// The handler's restorer, and the gadget through which another handler's
// rt_sigreturn (trapped in libc's restorer) is made again from inside the
// allowed range: `mov $15, %eax; syscall`, with an instruction after the
// syscall so the range holds the address the kernel sees.
extern "C" void asys_sud_restorer();
asm(R"(
    .text
    .p2align 4
    .globl asys_sud_restorer
    .hidden asys_sud_restorer
    .type asys_sud_restorer,@function
asys_sud_restorer:
    movl $15, %eax
    syscall
    ud2
    .size asys_sud_restorer, .-asys_sud_restorer
)");

namespace asys::internal {

std::atomic<uint64_t> g_trapped_calls{0};

namespace {

constexpr unsigned char kAllow = SYSCALL_DISPATCH_FILTER_ALLOW;
constexpr unsigned char kBlock = SYSCALL_DISPATCH_FILTER_BLOCK;

// The calling thread's selector byte (the kernel reads it at every system
// call once dispatch is on) and whether dispatch is on.
__attribute__((tls_model("initial-exec"))) thread_local volatile unsigned char t_selector = kAllow;
__attribute__((tls_model("initial-exec"))) thread_local bool t_on = false;

// SIGSYS in the program's signal mask while calls trap. A dispatch trap
// raised while SIGSYS is blocked kills the process, so while the thread's
// selector may say BLOCK its real mask never blocks SIGSYS: a program that
// blocks it (pthread_create, system() and popen() block every signal) has
// its bit kept here instead, reported by its mask queries and put back in
// the real mask when trapping ends on the thread (release_sigsys).
constexpr uint64_t kSigsysBit = uint64_t{1} << (SIGSYS - 1);
__attribute__((tls_model("initial-exec"))) thread_local bool t_sigsys_held = false;

// Calls are about to trap on this thread: SIGSYS leaves its real mask,
// and the program's bit is kept.
void hold_sigsys() noexcept {
    uint64_t old = 0;
    raw_syscall6(SYS_rt_sigprocmask, SIG_UNBLOCK, reinterpret_cast<uint64_t>(&kSigsysBit),
                 reinterpret_cast<uint64_t>(&old), 8, 0, 0);
    if (old & kSigsysBit) t_sigsys_held = true;
}

// Calls no longer trap on this thread: the program's mask is the real one again.
void release_sigsys() noexcept {
    if (!t_sigsys_held) return;
    t_sigsys_held = false;
    raw_syscall6(SYS_rt_sigprocmask, SIG_BLOCK, reinterpret_cast<uint64_t>(&kSigsysBit), 0, 8, 0, 0);
}

uint64_t frame_mask(const ucontext_t *uc) noexcept {
    uint64_t m;
    std::memcpy(&m, &uc->uc_sigmask, sizeof m);
    return m;
}
void set_frame_mask(ucontext_t *uc, uint64_t m) noexcept { std::memcpy(&uc->uc_sigmask, &m, sizeof m); }

// A mask the trapped code goes on with (after the signal return): without
// SIGSYS, whose bit is kept.
void hold_sigsys_of_frame(ucontext_t *uc) noexcept {
    const uint64_t m = frame_mask(uc);
    if (!(m & kSigsysBit)) return;
    t_sigsys_held = true;
    set_frame_mask(uc, m & ~kSigsysBit);
}

// The allowed range: the executable segment holding the library's code
// (its raw system calls, this handler's restorer) never traps.
uintptr_t g_range_start = 0, g_range_len = 0;

#ifndef SA_RESTORER
#define SA_RESTORER 0x04000000  // the kernel's flag; glibc's headers hide it
#endif

struct kernel_sigaction {
    uintptr_t handler;  ///< a function, or SIG_DFL (0) / SIG_IGN (1)
    unsigned long flags;
    void *restorer;
    uint64_t mask;
};
kernel_sigaction g_old{};  // the SIGSYS action before ours (other SIGSYS sources go there)

// The signals whose handler the program installed with SIGSYS in its
// sa_mask: the kernel's copy leaves it out (a handler running with SIGSYS
// blocked in trapped code would die at its first call, or at its return),
// and the program's queries through trapped code get it back.
std::atomic<uint64_t> g_sigsys_in_sa_mask{0};

constexpr uint64_t sig_bit(int sig) noexcept { return uint64_t{1} << (sig - 1); }

bool handler_mask_may_hide_sigsys(int sig) noexcept {
    return sig >= 1 && sig <= 64 && sig != SIGSYS && sig != SIGKILL && sig != SIGSTOP;
}

// A trapped rt_sigaction: made with SIGSYS left out of the new action's
// mask (and remembered), and the old action's mask as the program set it.
long trapped_sigaction(const uint64_t (&a)[6]) noexcept {
    const int sig = static_cast<int>(a[0]);
    if (!handler_mask_may_hide_sigsys(sig) || a[3] != 8) return raw_syscall(SYS_rt_sigaction, a);
    const bool had = (g_sigsys_in_sa_mask.load(std::memory_order_relaxed) & sig_bit(sig)) != 0;
    uint64_t b[6] = {a[0], a[1], a[2], a[3], a[4], a[5]};
    kernel_sigaction act{};
    bool hides = false;
    if (a[1]) {
        if (copy_from_caller(&act, reinterpret_cast<const void *>(a[1]), sizeof act) != 0)
            return raw_syscall(SYS_rt_sigaction, a);  // the call says EFAULT
        hides = (act.mask & kSigsysBit) != 0;
        act.mask &= ~kSigsysBit;
        b[1] = reinterpret_cast<uint64_t>(&act);
    }
    const long r = raw_syscall(SYS_rt_sigaction, b);
    if (r != 0) return r;
    if (a[2] && had) reinterpret_cast<kernel_sigaction *>(a[2])->mask |= kSigsysBit;  // written by the call just now
    if (a[1]) {
        if (hides) g_sigsys_in_sa_mask.fetch_or(sig_bit(sig), std::memory_order_relaxed);
        else g_sigsys_in_sa_mask.fetch_and(~sig_bit(sig), std::memory_order_relaxed);
    }
    return r;
}

int find_range(dl_phdr_info *info, size_t, void *) {
    const auto target = reinterpret_cast<uintptr_t>(&asys_sud_restorer);
    for (int i = 0; i < info->dlpi_phnum; ++i) {
        const ElfW(Phdr) &ph = info->dlpi_phdr[i];
        if (ph.p_type != PT_LOAD || !(ph.p_flags & PF_X)) continue;
        const uintptr_t lo = info->dlpi_addr + ph.p_vaddr;
        if (target >= lo && target < lo + ph.p_memsz) {
            g_range_start = lo;
            g_range_len = ph.p_memsz;
            return 1;
        }
    }
    return 0;
}

long raw(long nr, const uint64_t (&a)[6]) noexcept { return raw_syscall(nr, a); }

void chain_other_sigsys(int sig, siginfo_t *si, void *uc) noexcept {
    constexpr uintptr_t kDfl = 0, kIgn = 1;
    if (g_old.handler != kDfl && g_old.handler != kIgn) {
        if (g_old.flags & SA_SIGINFO)
            reinterpret_cast<void (*)(int, siginfo_t *, void *)>(g_old.handler)(sig, si, uc);
        else
            reinterpret_cast<void (*)(int)>(g_old.handler)(sig);
        return;
    }
    if (g_old.handler == kIgn) return;
    // The default action: reset it and send the signal again; it is
    // delivered (and ends the process) once this handler returns.
    kernel_sigaction dfl{};
    dfl.handler = kDfl;
    raw_syscall6(SYS_rt_sigaction, SIGSYS, reinterpret_cast<uint64_t>(&dfl), 0, 8, 0, 0);
    raw_syscall6(SYS_tgkill, static_cast<uint64_t>(raw_syscall6(SYS_getpid, 0, 0, 0, 0, 0, 0)),
                 static_cast<uint64_t>(raw_syscall6(SYS_gettid, 0, 0, 0, 0, 0, 0)), SIGSYS, 0, 0, 0);
}

/// How the handler treats a trapped call.
enum class trapped_kind {
    sigreturn,   ///< another handler returns: made again from the gadget
    reexecute,   ///< starts a thread or a process sharing the stack: made again at its own site, untrapped
    sigmask,     ///< acts on the mask the signal return restores: applied to the frame too
    sigaction,   ///< installs a handler: SIGSYS left out of its mask
    altstack,    ///< the same for the alternate stack
    direct,      ///< runs here, on the owner thread, as it is
    routed,      ///< the threadlet's (or the region's) inline-or-wait logic
};

trapped_kind kind_of(long nr, const uint64_t (&a)[6]) noexcept {
    switch (nr) {
        case SYS_rt_sigreturn: return trapped_kind::sigreturn;
        case SYS_clone: case SYS_clone3: case SYS_fork: case SYS_vfork: return trapped_kind::reexecute;
        case SYS_rt_sigprocmask: return trapped_kind::sigmask;
        case SYS_rt_sigaction: return trapped_kind::sigaction;
        case SYS_sigaltstack: return trapped_kind::altstack;
        // Memory, futexes (a lock's wait must stay on its thread: parking
        // there would hand the lock's wake-up to code that cannot run),
        // and signals sent (raise() must deliver before it returns).
        case SYS_mmap: case SYS_munmap: case SYS_mprotect: case SYS_madvise: case SYS_mremap:
        case SYS_brk: case SYS_futex: case SYS_kill: case SYS_tkill: case SYS_tgkill:
        case SYS_rt_sigqueueinfo: case SYS_rt_tgsigqueueinfo: case SYS_exit: case SYS_exit_group:
        // io_uring's own calls (liburing makes them outside the library's
        // code, e.g. when asys_submit from the threadlet's code enters its
        // ring under the ring's lock): never parked there.
        case SYS_io_uring_enter: case SYS_io_uring_register: case SYS_io_uring_setup:
            return trapped_kind::direct;
        default:
            return runs_on_owner(nr, a) ? trapped_kind::direct : trapped_kind::routed;
    }
}

void on_sigsys(int sig, siginfo_t *si, void *ucv) noexcept {
    if (si->si_code != SYS_USER_DISPATCH) {
        chain_other_sigsys(sig, si, ucv);
        return;
    }
    const unsigned char prev = t_selector;
    t_selector = kAllow;  // the handler's own calls run untrapped
    g_trapped_calls.fetch_add(1, std::memory_order_relaxed);
    auto *uc = static_cast<ucontext_t *>(ucv);
    greg_t *g = uc->uc_mcontext.gregs;
    const long nr = si->si_syscall;
    const uint64_t a[6] = {static_cast<uint64_t>(g[REG_RDI]), static_cast<uint64_t>(g[REG_RSI]),
                           static_cast<uint64_t>(g[REG_RDX]), static_cast<uint64_t>(g[REG_R10]),
                           static_cast<uint64_t>(g[REG_R8]),  static_cast<uint64_t>(g[REG_R9])};
    long res;
    switch (kind_of(nr, a)) {
        case trapped_kind::sigreturn:
            // Return to the gadget with the trapped registers (the stack
            // pointer at the other handler's frame, whose ucontext_t the
            // kernel's starts with): it makes the call. The code it returns
            // to traps: a mask there that blocks SIGSYS keeps it here.
            hold_sigsys_of_frame(reinterpret_cast<ucontext_t *>(g[REG_RSP]));
            g[REG_RIP] = reinterpret_cast<greg_t>(&asys_sud_restorer);
            t_selector = prev;
            return;
        case trapped_kind::reexecute:
            // The new thread or process must start at the caller's own
            // syscall instruction (2 bytes before the trap's return
            // address), so it is made there again, untrapped: the rest of
            // this run of the code is not caught (until its next switch),
            // so it goes on with the program's whole mask (which the new
            // thread or process inherits).
            if (t_sigsys_held) set_frame_mask(uc, frame_mask(uc) | kSigsysBit);
            t_sigsys_held = false;
            g[REG_RIP] -= 2;
            g[REG_RAX] = nr;
            return;
        case trapped_kind::sigmask: {
            // The program's mask is the frame's with the kept SIGSYS bit:
            // make the call against it (its old set is the program's), and
            // keep its result in the frame, SIGSYS aside.
            uint64_t m = frame_mask(uc) | (t_sigsys_held ? kSigsysBit : 0);
            raw_syscall6(SYS_rt_sigprocmask, SIG_SETMASK, reinterpret_cast<uint64_t>(&m), 0, 8, 0, 0);
            res = raw(nr, a);
            raw_syscall6(SYS_rt_sigprocmask, SIG_SETMASK, 0, reinterpret_cast<uint64_t>(&m), 8, 0, 0);
            t_sigsys_held = (m & kSigsysBit) != 0;
            set_frame_mask(uc, m & ~kSigsysBit);
            break;
        }
        case trapped_kind::sigaction:
            res = trapped_sigaction(a);
            break;
        case trapped_kind::altstack:
            res = raw(nr, a);
            if (res == 0) raw_syscall6(SYS_sigaltstack, 0, reinterpret_cast<uint64_t>(&uc->uc_stack), 0, 0, 0, 0);
            break;
        case trapped_kind::direct:
            res = raw(nr, a);
            break;
        case trapped_kind::routed:
        default:
            if (region_active()) {
                res = region_call(uc, nr, a);  // in the parent after a fork, does not return
            } else if (threadlet *t = current_threadlet(); t && (t->tflags & ASYS_THREADLET_TRANSPARENT)) {
                void *outer = t->trap_uc;
                t->trap_uc = uc;
                res = threadlet_call(t, nr, a);
                t->trap_uc = outer;
            } else {
                res = raw(nr, a);
            }
            break;
    }
    g[REG_RAX] = res;
    t_selector = prev;
}

// Transparent threadlets' switch hooks: a transparent threadlet runs with
// dispatch on and its calls trapped; whoever resumed it gets its own state
// back afterwards.
uint64_t hook_save() noexcept { return (t_on ? 2u : 0u) | (t_selector == kBlock ? 1u : 0u); }
void hook_restore(uint64_t s) noexcept {
    t_selector = kAllow;
    dispatch_enable((s & 2) != 0);
    if (!(s & 1)) {
        release_sigsys();
        return;
    }
    hold_sigsys();
    t_selector = kBlock;
}
void hook_enter(threadlet *t) noexcept {
    // Calls trapped already (the threadlet's start right after its switch,
    // or one submitted by a transparent threadlet): SIGSYS is out of the
    // real mask already.
    const bool trapping = t_on && t_selector == kBlock;
    t_selector = kAllow;
    if (!(t->tflags & ASYS_THREADLET_TRANSPARENT)) {
        release_sigsys();
        return;
    }
    dispatch_enable(true);
    if (!trapping) hold_sigsys();
    t_selector = kBlock;
}
void hook_leave(threadlet *) noexcept { t_selector = kAllow; }

constexpr switch_hooks kHooks{&hook_save, &hook_restore, &hook_enter, &hook_enter, &hook_leave};

}  // namespace

int dispatch_init() noexcept {
    static std::once_flag once;
    static int result = 0;
    std::call_once(once, [] {
        dl_iterate_phdr(&find_range, nullptr);
        if (!g_range_len) {
            result = -EOPNOTSUPP;
            return;
        }
        // Is it there? (Linux 5.11; CONFIG_GENERIC_ENTRY.)
        if (raw_syscall6(SYS_prctl, PR_SET_SYSCALL_USER_DISPATCH, PR_SYS_DISPATCH_ON, g_range_start, g_range_len,
                         reinterpret_cast<uint64_t>(&t_selector), 0) != 0) {
            result = -EOPNOTSUPP;
            return;
        }
        raw_syscall6(SYS_prctl, PR_SET_SYSCALL_USER_DISPATCH, PR_SYS_DISPATCH_OFF, 0, 0, 0, 0);
        kernel_sigaction sa{};
        sa.handler = reinterpret_cast<uintptr_t>(&on_sigsys);
        // No SA_ONSTACK: a parked trap's frame must stay on the threadlet's
        // own stack. No SA_RESTART games: the call is emulated, not restarted.
        sa.flags = SA_SIGINFO | SA_RESTORER;
        sa.restorer = reinterpret_cast<void *>(&asys_sud_restorer);
        sa.mask = 0;
        const long rc = raw_syscall6(SYS_rt_sigaction, SIGSYS, reinterpret_cast<uint64_t>(&sa),
                                     reinterpret_cast<uint64_t>(&g_old), 8, 0, 0);
        if (rc != 0) {
            result = static_cast<int>(rc);
            return;
        }
        hide_sigsys_from_handlers();
        g_switch_hooks.store(&kHooks, std::memory_order_release);
    });
    return result;
}

void hide_sigsys_from_handlers() noexcept {
    constexpr uintptr_t kIgn = 1;
    for (int sig = 1; sig <= 64; ++sig) {
        if (!handler_mask_may_hide_sigsys(sig)) continue;
        kernel_sigaction act{};
        if (raw_syscall6(SYS_rt_sigaction, static_cast<uint64_t>(sig), 0, reinterpret_cast<uint64_t>(&act), 8, 0, 0) != 0 ||
            act.handler <= kIgn || !(act.mask & kSigsysBit))
            continue;
        act.mask &= ~kSigsysBit;
        if (raw_syscall6(SYS_rt_sigaction, static_cast<uint64_t>(sig), reinterpret_cast<uint64_t>(&act), 0, 8, 0, 0) == 0)
            g_sigsys_in_sa_mask.fetch_or(sig_bit(sig), std::memory_order_relaxed);
    }
}

int transparent_init() noexcept { return dispatch_init(); }

int dispatch_enable(bool on) noexcept {
    if (on == t_on) return 0;
    const long rc = on ? raw_syscall6(SYS_prctl, PR_SET_SYSCALL_USER_DISPATCH, PR_SYS_DISPATCH_ON, g_range_start,
                                      g_range_len, reinterpret_cast<uint64_t>(&t_selector), 0)
                       : raw_syscall6(SYS_prctl, PR_SET_SYSCALL_USER_DISPATCH, PR_SYS_DISPATCH_OFF, 0, 0, 0, 0);
    if (rc == 0) t_on = on;
    return static_cast<int>(rc);
}

void dispatch_trapping(bool on) noexcept {
    if (on) {
        hold_sigsys();
        t_selector = kBlock;
    } else {
        t_selector = kAllow;
        release_sigsys();
    }
}

void mask_to_thread(const ucontext_t *uc) noexcept {
    const uint64_t m = frame_mask(uc) | (t_sigsys_held ? kSigsysBit : 0);
    t_sigsys_held = false;
    raw_syscall6(SYS_rt_sigprocmask, SIG_SETMASK, reinterpret_cast<uint64_t>(&m), 0, 8, 0, 0);
}

void mask_from_thread(ucontext_t *uc) noexcept {
    uint64_t m = 0;
    raw_syscall6(SYS_rt_sigprocmask, SIG_SETMASK, 0, reinterpret_cast<uint64_t>(&m), 8, 0, 0);
    set_frame_mask(uc, m);
    hold_sigsys_of_frame(uc);
}

void mask_to_frame(ucontext_t *uc) noexcept {
    if (t_sigsys_held) set_frame_mask(uc, frame_mask(uc) | kSigsysBit);
    t_sigsys_held = false;
}

bool dispatch_enabled() noexcept { return t_on; }
void dispatch_block(bool block) noexcept { t_selector = block ? kBlock : kAllow; }
bool dispatch_blocking() noexcept { return t_selector == kBlock; }

}  // namespace asys::internal
