// libFuzzer target: arbitrary bytes as an asys_op descriptor.
//  1. validate_op() never crashes, and whatever it accepts satisfies the
//     documented rules (known opcode and flags, zero reserved fields, no nr
//     outside ASYS_OP_SYSCALL, a syscall number that is in range and not on
//     the deny list — checked against an independent list here).
//     A CHAIN op has a head atom and zero internal-state args.
//  2. asys_syscall_allowed() answers only 0, -EPERM or -ENOSYS.
//  3. Accepted NOP ops (with any flag combination) go through the real router
//     of a live context and complete exactly once.
#include <sys/syscall.h>
#include <time.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "asys/asys.h"
#include "router/router.hpp"

namespace {

bool denied_reference(long nr) {
    switch (nr) {
        case SYS_fork: case SYS_vfork: case SYS_clone: case SYS_clone3: case SYS_execve:
        case SYS_execveat: case SYS_exit: case SYS_exit_group: case SYS_rt_sigreturn:
        case SYS_rt_sigprocmask: case SYS_setuid: case SYS_setgid: case SYS_setresuid:
        case SYS_setns: case SYS_unshare: case SYS_prctl: case SYS_seccomp:
            return true;
        default:
            return false;
    }
}

void check(bool ok, const char *what) {
    if (!ok) {
        fprintf(stderr, "invariant violated: %s\n", what);
        abort();
    }
}

asys_ctx *context() {
    static asys_ctx *ctx = [] {
        asys_params p{};
        p.workers = 2;
        p.max_inflight = 64;
        asys_ctx *c = nullptr;
        if (asys_ctx_create(&p, &c) != 0) abort();
        return c;
    }();
    return ctx;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    asys_op op{};
    memcpy(&op, data, size < sizeof op ? size : sizeof op);

    const int rc = asys::internal::validate_op(&op);
    check(rc <= 0, "validate_op returns 0 or -errno");
    if (rc == 0) {
        check(op.opcode < ASYS_OP__COUNT, "known opcode");
        check((op.flags & ~ASYS_F__ALL) == 0, "known flags");
        check(op.reserved[0] == 0, "reserved zero");
        check((op.flags & ASYS_F_DEADLINE) || op.deadline_ns == 0, "a deadline only with ASYS_F_DEADLINE");
        check(op.deadline_ns <= uint64_t{INT64_MAX}, "a deadline fits CLOCK_MONOTONIC nanoseconds");
        check(((op.flags & ASYS_F_CLASS_MASK) >> ASYS_F_CLASS_SHIFT) <= ASYS_CLASS__COUNT, "a known class");
        check(op.callback || !op.cb_arg, "no cb_arg without callback");
        if (op.opcode == ASYS_OP_SYSCALL) {
            check(op.nr >= 0 && op.nr < 1024, "syscall number in range");
            check(!denied_reference(op.nr), "denied syscall accepted");
        } else {
            check(op.nr == 0, "nr only on ASYS_OP_SYSCALL");
        }
        if (op.opcode == ASYS_OP_CHAIN)
            check(op.args[0] && !op.args[2] && !op.args[3] && !op.args[4] && !op.args[5],
                  "a chain op has a head and no internal state");
    }
    if (op.opcode == ASYS_OP_SYSCALL && denied_reference(op.nr)) {
        check(rc != 0, "a denied syscall is never accepted");
        asys_op clean = op;  // otherwise well-formed: the refusal is -EPERM
        clean.flags = 0;
        clean.reserved[0] = clean.deadline_ns = 0;
        clean.cb_arg = nullptr;
        check(asys::internal::validate_op(&clean) == -EPERM, "denied -> -EPERM");
    }

    const int allowed = asys_syscall_allowed(op.nr);
    check(allowed == 0 || allowed == -EPERM || allowed == -ENOSYS, "syscall_allowed range");

    // Accepted NOPs through the real router, with whatever flags they carry.
    if (rc == 0 && op.opcode == ASYS_OP_NOP) {
        long res = -12345;
        const bool keep_null_ret = size > sizeof op && (data[sizeof op] & 1);
        op.ret_ptr = keep_null_ret ? nullptr : &res;
        op.callback = nullptr;
        op.cb_arg = nullptr;
        op.user_data = 42;
        asys_ctx *ctx = context();
        // ASYS_F_DEADLINE: a deadline passed before submit is -ETIME; a later
        // one may pass before the punted NOP runs (then -ETIME too).
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        const uint64_t before = static_cast<uint64_t>(now.tv_sec) * 1000000000u + static_cast<uint64_t>(now.tv_nsec);
        const bool timed = op.flags & ASYS_F_DEADLINE;
        auto result_ok = [&](long r) {
            if (timed && op.deadline_ns <= before) return r == -ETIME;
            return r == static_cast<long>(op.args[0]) || (timed && r == -ETIME);
        };
        const int s = asys_submit(ctx, &op);
        check(s == ASYS_DONE || s == 0 || s == -EAGAIN, "NOP submit result");
        const bool expect_cqe = s == 0 || (s == ASYS_DONE && ((op.flags & ASYS_F_CQE_ALWAYS) || !op.ret_ptr));
        if (expect_cqe) {
            asys_cqe cqe;
            check(asys_wait(ctx, 1, nullptr, &cqe, 1) == 1, "one completion");
            check(cqe.user_data == 42 && result_ok(cqe.res), "its result");
        }
        if (s >= 0 && op.ret_ptr) check(result_ok(res), "ret_ptr written");
        asys_cqe extra;
        check(asys_peek(ctx, &extra, 1) == 0, "exactly once");
    }
    return 0;
}
