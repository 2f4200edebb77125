// maybe_fork(): a region of code in which the first system call that
// would block forks the process. The region turns syscall user dispatch
// on for the calling thread; the trap handler (dispatch.cpp) tries each
// call without blocking and, when it would block, forks: the child makes
// the call and goes on; the parent restores the trap-time signal mask,
// ends the region and jumps back into maybe_fork's saved frame, which
// then returns the child's pid.
#include "asys/maybe_fork.h"

#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

#include "base/errno_keeper.hpp"
#include "base/opcodes.hpp"
#include "base/raw_syscall.hpp"
#include "inline/inline_attempt.hpp"
#include "router/router.hpp"
#include "threadlet/dispatch.hpp"
#include "threadlet/threadlet.hpp"

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ASYS_MF_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define ASYS_MF_ASAN 1
#endif
#ifdef ASYS_MF_ASAN
extern "C" void __asan_handle_no_return(void);
#endif

// maybe_fork saves what a jump back needs in the caller's jmp_buf (rbx,
// rbp, r12-r15, the stack pointer after return, the return address; 64 of
// its 200 bytes), then continues in maybe_fork_region(). asys_mf_jump
// restores them and returns `value` from that maybe_fork call.
extern "C" int asys_mf_region(jmp_buf *buf, int flags);
extern "C" [[noreturn]] void asys_mf_jump(void *buf, long value);
asm(R"(
    .text
    .p2align 4
    .globl maybe_fork
    .type maybe_fork,@function
maybe_fork:
    testq %rdi, %rdi
    jz 1f
    movq %rbx, 0(%rdi)
    movq %rbp, 8(%rdi)
    movq %r12, 16(%rdi)
    movq %r13, 24(%rdi)
    movq %r14, 32(%rdi)
    movq %r15, 40(%rdi)
    leaq 8(%rsp), %rax
    movq %rax, 48(%rdi)
    movq (%rsp), %rax
    movq %rax, 56(%rdi)
1:
    jmp asys_mf_region
    .size maybe_fork, .-maybe_fork

    .p2align 4
    .globl asys_mf_jump
    .hidden asys_mf_jump
    .type asys_mf_jump,@function
asys_mf_jump:
    movq %rsi, %rax
    movq 0(%rdi), %rbx
    movq 8(%rdi), %rbp
    movq 16(%rdi), %r12
    movq 24(%rdi), %r13
    movq 32(%rdi), %r14
    movq 40(%rdi), %r15
    movq 48(%rdi), %rsp
    jmp *56(%rdi)
    .size asys_mf_jump, .-asys_mf_jump
)");

namespace asys::internal {
namespace {

struct region {
    jmp_buf *buf = nullptr;
    bool active = false;
    bool child = false;  ///< this process is a child the region forked
};
__attribute__((tls_model("initial-exec"))) thread_local region t_region;

void end_region() noexcept {
    dispatch_trapping(false);
    dispatch_enable(false);
    t_region.active = false;
}

}  // namespace

bool region_active() noexcept { return t_region.active; }

long region_call(ucontext_t *uc, long nr, const uint64_t (&args)[6]) noexcept {
    asys_op op;
    op_for_call(op, nr, args);
    if (validate_op(&op) != 0) return raw_syscall(nr, args);  // the plain call says what is wrong
    long res = 0;
    const attempt a = try_inline(op, false, &res);
    if (a == attempt::done) return res;
    // Would block, or a read partly done where the call would go on (a file
    // partly in the page cache): the rest, blocking, is the child's.
    auto run_blocking = [&]() noexcept {
        return a == attempt::partial ? execute_rest_of_transfer(op.opcode, op.args, static_cast<uint64_t>(res))
                                     : execute_op(op.opcode, op.nr, op.args);
    };
    const pid_t pid = fork();
    if (pid < 0) return run_blocking();  // no fork: the call waits here
    if (pid == 0) {
        // The child: dispatch is not inherited; the region is over here,
        // and the call completes (blocking) in this process.
        t_region.active = false;
        t_region.child = true;
        mask_to_frame(uc);  // it goes on untrapped, with the program's mask
        return run_blocking();
    }
    // The parent: the region ends, the mask of the trapped code comes back
    // (the handler's blocks SIGSYS), and maybe_fork returns the child's pid.
    jmp_buf *buf = t_region.buf;
    mask_to_thread(uc);
    end_region();
#ifdef ASYS_MF_ASAN
    __asan_handle_no_return();
#endif
    asys_mf_jump(buf, pid);
}

}  // namespace asys::internal

using namespace asys::internal;

extern "C" int asys_mf_region(jmp_buf *buf, int flags) {
    const errno_keeper keep;
    switch (flags) {
        case MAYBE_FORK_END: {
            if (t_region.active) end_region();
            const int r = t_region.child ? static_cast<int>(raw_syscall6(SYS_getpid, 0, 0, 0, 0, 0, 0)) : 0;
            t_region = region{};
            return r;
        }
        case FORK_ON_BLOCKING:
            if (!buf) return -EFAULT;
            if (t_region.active || current_threadlet()) return -EBUSY;
            if (int rc = dispatch_init()) return rc;
            if (int rc = dispatch_enable(true)) return rc;
            t_region = region{buf, true, false};
            dispatch_trapping(true);
            return 0;
        default:  // FORK_ON_SOMETHING: no meaning yet
            return -EINVAL;
    }
}
