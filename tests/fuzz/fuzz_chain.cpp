// libFuzzer target: random syslet atom graphs through the chain interpreter,
// under ASan/UBSan, submitted three ways (chosen by the input): the seed's
// asys_async_exec, ASYS_OP_CHAIN, and ASYS_OP_CHAIN with ASYS_F_ASYNC, which
// turns plain sequences of reads and writes into linked io_uring SQEs (a
// byte of the input biases graphs toward such sequences; random pread
// offsets make short reads that cut the link and resume on the pool). Atoms are drawn from a safe set of
// calls (umem_add, getpid/getppid, read from /dev/zero, write to /dev/null,
// pread of a small file, a denied call, an unknown number) so that arbitrary
// graphs cannot harm the machine; flags, next links (forwards, backwards,
// self, NULL), arg_ptr and ret_ptr are the fuzzer's. Invariants: the chain
// ends (step limit), async_exec returns a pointer into the graph, 0 (then
// exactly one ring entry, pointing into the graph) or a documented error, and
// nothing crashes or leaks.
#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "asys/syslet.h"

namespace {

constexpr int kAtoms = 8;

struct env {
    asys_ctx *ctx = nullptr;
    syslet_uatom *ring[4] = {};
    int zero = -1, null = -1, file = -1;
    env() {
        asys_params p{};
        p.workers = 2;
        if (asys_ctx_create(&p, &ctx) != 0) abort();
        if (asys_async_register(ctx, ring, 4) != 0) abort();
        asys_syslet_step_limit(ctx, 64);
        zero = open("/dev/zero", O_RDONLY | O_CLOEXEC);
        null = open("/dev/null", O_WRONLY | O_CLOEXEC);
        char path[] = "/tmp/asys-fuzz-chain-XXXXXX";
        file = mkstemp(path);
        if (zero < 0 || null < 0 || file < 0) abort();
        unlink(path);
        static const char data[256] = "asys fuzz";
        if (write(file, data, sizeof data) != sizeof data) abort();
    }
};

void check(bool ok, const char *what) {
    if (!ok) {
        fprintf(stderr, "invariant violated: %s\n", what);
        abort();
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static env e;
    // One extra terminating atom after the graph: SKIP_TO_NEXT from the last
    // atom lands on it (the seed's atom + 1 rule).
    syslet_uatom atoms[kAtoms + 1] = {};
    long rets[kAtoms + 1] = {};
    unsigned long vals[kAtoms] = {};
    unsigned long *ptrs[kAtoms];
    for (int i = 0; i < kAtoms; ++i) ptrs[i] = &vals[i];
    char buf[64];
    unsigned long zero_fd = static_cast<unsigned long>(e.zero), null_fd = static_cast<unsigned long>(e.null),
                  file_fd = static_cast<unsigned long>(e.file), bufp = reinterpret_cast<unsigned long>(buf),
                  len = sizeof buf, off = 7;

    auto byte = [&](size_t i) -> uint8_t { return i < size ? data[i] : 0; };
    for (int k = 0; k < kAtoms; ++k) {
        syslet_uatom &a = atoms[k];
        const size_t b = static_cast<size_t>(k) * 6;
        a.flags = byte(b + 1) & 0x7f;
        if (byte(b + 1) & 0x80) a.flags |= 0x1000;  // unknown flag, sometimes
        const uint8_t nx = byte(b + 2);
        a.next = nx < kAtoms ? &atoms[nx] : nullptr;
        a.ret_ptr = (byte(b + 3) & 1) ? &rets[k] : nullptr;
        switch (byte(b) % 8) {
            case 0:
            case 1:
                a.nr = __NR_umem_add;
                a.arg_ptr[0] = reinterpret_cast<unsigned long *>(&ptrs[byte(b + 4) % kAtoms]);
                a.arg_ptr[1] = (byte(b + 5) & 1) ? &vals[byte(b + 5) % kAtoms] : nullptr;
                if (byte(b + 4) == 0xff) a.arg_ptr[0] = nullptr;  // null target: -EFAULT
                break;
            case 2: a.nr = (byte(b + 4) & 1) ? SYS_getpid : SYS_getppid; break;
            case 3:
                a.nr = SYS_read;
                a.arg_ptr[0] = &zero_fd;
                a.arg_ptr[1] = &bufp;
                a.arg_ptr[2] = &len;
                break;
            case 4:
                a.nr = SYS_write;
                a.arg_ptr[0] = &null_fd;
                a.arg_ptr[1] = &bufp;
                a.arg_ptr[2] = &len;
                break;
            case 5:
                a.nr = SYS_pread64;
                a.arg_ptr[0] = &file_fd;
                a.arg_ptr[1] = &bufp;
                a.arg_ptr[2] = &len;
                a.arg_ptr[3] = (byte(b + 4) & 2) ? &vals[byte(b + 5) % kAtoms] : &off;
                break;
            case 6: a.nr = SYS_fork; break;  // denied: -EPERM, the chain stops
            default: a.nr = 2000; break;     // unknown: -ENOSYS
        }
    }
    atoms[kAtoms].nr = SYS_getpid;
    const uint8_t how = byte(kAtoms * 6) % 3;
    if (byte(kAtoms * 6 + 1) & 1) {  // a plain sequence: what io_uring links take
        for (int k = 0; k < kAtoms; ++k) {
            atoms[k].flags &= SYSLET_STOP_ON_NEGATIVE | SYSLET_ASYNC;
            atoms[k].next = k + 1 < kAtoms && (byte(kAtoms * 6 + 2 + k) & 3) ? &atoms[k + 1] : nullptr;
        }
    }
    auto in_graph = [&](const void *p) {
        return p >= static_cast<const void *>(&atoms[0]) && p <= static_cast<const void *>(&atoms[kAtoms]);
    };

    if (how != 0) {
        syslet_uatom *last = nullptr;
        long res = 0;
        asys_op op;
        asys_prep_chain(&op, &atoms[0], &last);
        op.ret_ptr = &res;
        op.user_data = 77;
        if (how == 2) op.flags = ASYS_F_ASYNC;
        const int rc = asys_submit(e.ctx, &op);
        check(rc == ASYS_DONE || rc == 0, "a chain op is accepted");
        if (rc == 0) {
            asys_cqe cqe;
            check(asys_wait(e.ctx, 1, nullptr, &cqe, 1) == 1, "one completion");
            check(cqe.user_data == 77 && cqe.opcode == ASYS_OP_CHAIN && cqe.res == res, "its cqe");
            asys_cqe extra;
            check(asys_peek(e.ctx, &extra, 1) == 0, "exactly one");
        }
        check(last && in_graph(last), "*last_out is an atom of the graph");
        if (last->ret_ptr) check(*last->ret_ptr == res, "the op's result is the last atom's");
        return 0;
    }

    const long r = asys_async_exec(e.ctx, &atoms[0]);
    if (r == 0) {
        check(asys_async_wait(e.ctx, 1) == 1, "an async chain posts exactly one entry");
        syslet_uatom *last = nullptr;
        for (auto &slot : e.ring)
            if (slot) {
                check(!last, "only one entry");
                last = slot;
                slot = nullptr;  // the consumer resets it
            }
        check(last && in_graph(last), "the ring entry is an atom of the graph");
    } else {
        check(r > 0 && in_graph(reinterpret_cast<void *>(r)), "synchronous: the last atom");
    }
    return 0;
}
