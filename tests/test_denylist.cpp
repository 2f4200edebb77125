// The deny list: every call that would fork, exec, exit, return from a
// signal, or change identity, credentials, namespaces or signal state of the
// thread it runs on is refused with -EPERM, on every path.
#include <sys/syscall.h>

#include "helpers.hpp"

using namespace asys_test;

namespace {

const long kMustDeny[] = {
    SYS_fork, SYS_vfork, SYS_clone, SYS_clone3, SYS_execve, SYS_execveat, SYS_exit,
    SYS_exit_group, SYS_rt_sigreturn, SYS_rt_sigprocmask, SYS_rt_sigaction, SYS_sigaltstack,
    SYS_setuid, SYS_setgid, SYS_setreuid, SYS_setregid, SYS_setresuid, SYS_setresgid,
    SYS_setfsuid, SYS_setfsgid, SYS_setgroups, SYS_capset, SYS_setns, SYS_unshare, SYS_prctl,
    SYS_seccomp, SYS_arch_prctl, SYS_set_tid_address, SYS_set_robust_list, SYS_rseq,
};

TEST(Denylist, EveryDeniedCallIsEPERMOnEveryPath) {
    ctx_guard ctx;
    uint64_t args[6] = {};
    for (long nr : kMustDeny) {
        EXPECT_EQ(asys_syscall_allowed(nr), -EPERM) << nr;
        for (uint32_t f : {0u, unsigned{ASYS_F_SYNC}, unsigned{ASYS_F_ASYNC}, unsigned{ASYS_F_NOWAIT}}) {
            asys_op op;
            asys_prep_syscall(&op, nr, args);
            op.flags = f;
            long r = 0;
            op.ret_ptr = &r;
            EXPECT_EQ(asys_submit(ctx, &op), -EPERM) << nr << " flags " << f;
            EXPECT_EQ(r, 0) << "never ran";
        }
    }
    asys_stats st;
    ASSERT_EQ(asys_ctx_stats(ctx, &st), 0);
    EXPECT_EQ(st.submitted, 0u);
}

TEST(Denylist, OutOfRangeAndX32AliasesAreENOSYS) {
    EXPECT_EQ(asys_syscall_allowed(-1), -ENOSYS);
    EXPECT_EQ(asys_syscall_allowed(1024), -ENOSYS);
    EXPECT_EQ(asys_syscall_allowed(0x40000000L + SYS_execve), -ENOSYS) << "x32 alias of execve";
}

TEST(Denylist, OrdinaryCallsAreAllowed) {
    for (long nr : {SYS_read, SYS_write, SYS_getppid, SYS_openat, SYS_futex, SYS_nanosleep})
        EXPECT_EQ(asys_syscall_allowed(nr), 0) << nr;
}

}  // namespace
