/* The public header compiles as C99 with -Wall -Wextra -Wpedantic -Werror,
 * and the shared library's exported ABI works from C: a cached read inline,
 * a punted read through the eventfd, a denied syscall, syslets (also by the
 * seed's names async_exec/async_register/async_wait/umem_add, which the
 * header provides over exported asys_* functions), the socket protocol.
 * Prints "N passed, N failed" and exits non-zero on failure. */
#include <asys/asys.h>
#include <asys/maybe_fork.h>
#include <asys/socket.h>
#include <asys/syslet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <string.h>
#include <unistd.h>

static int passed, failed;
#define CHECK(cond)                                                        \
    do {                                                                   \
        if (cond) ++passed;                                                \
        else { ++failed; fprintf(stderr, "FAILED: %s (line %d)\n", #cond, __LINE__); } \
    } while (0)

/* A threadlet from C: reads its pipe with asys_call. */
static long c_threadlet(void *arg)
{
    int *fd = (int *)arg;
    char c;
    return asys_call(SYS_read, *fd, &c, 1);
}

int main(void)
{
    asys_ctx *ctx = NULL;
    CHECK(asys_ctx_create(NULL, &ctx) == 0);
    if (!ctx) return 1;

    int fds[2];
    CHECK(pipe(fds) == 0);
    char b = 0;
    long res = -1;
    struct asys_op op;
    asys_prep_read(&op, fds[0], &b, 1);
    op.ret_ptr = &res;
    op.user_data = 7;
    CHECK(asys_submit(ctx, &op) == 0); /* empty pipe: punted */
    int efd = asys_ctx_fd(ctx);
    CHECK(efd >= 0);
    CHECK(write(fds[1], "c", 1) == 1);
    struct pollfd p = {efd, POLLIN, 0};
    CHECK(poll(&p, 1, 10000) == 1);
    struct asys_cqe cqe;
    CHECK(asys_peek(ctx, &cqe, 1) == 1);
    CHECK(cqe.user_data == 7 && cqe.res == 1 && res == 1 && b == 'c');

    CHECK(write(fds[1], "d", 1) == 1);
    asys_prep_read(&op, fds[0], &b, 1);
    op.ret_ptr = &res;
    CHECK(asys_submit(ctx, &op) == ASYS_DONE); /* data ready: inline */
    CHECK(res == 1 && b == 'd');

    uint64_t args[6] = {0};
    asys_prep_syscall(&op, SYS_execve, args);
    CHECK(asys_submit(ctx, &op) == -EPERM);
    CHECK(asys_syscall_allowed(SYS_getpid) == 0);

    /* syslet.h from C: a one-atom umem_add chain runs synchronously */
    unsigned long v = 40, two = 2, *vp = &v;
    long r = 0;
    struct syslet_uatom a;
    memset(&a, 0, sizeof a);
    a.nr = __NR_umem_add;
    a.ret_ptr = &r;
    a.arg_ptr[0] = (unsigned long *)&vp;
    a.arg_ptr[1] = &two;
    a.private = &v; /* the C spelling of the seed's field */
    CHECK(asys_async_exec(ctx, &a) == (long)&a);
    CHECK(r == 42 && v == 42);

    /* The seed's names from C (static inline in <asys/syslet.h>, over the
     * exported asys_* functions, on the default context): a synchronous
     * chain, an asynchronous one posted into the registered ring, and
     * umem_add called directly. */
    {
        static struct syslet_uatom *ring[4];
        CHECK(async_wait(1) == -ENXIO); /* no ring registered yet */
        CHECK(async_register(NULL, 4) == -EINVAL);
        CHECK(async_register(ring, 4) == 0);
        CHECK(async_exec(NULL) == -EINVAL);
        CHECK(async_exec(&a) == (long)&a);
        CHECK(r == 44 && v == 44);
        a.flags = SYSLET_ASYNC; /* the rest of the chain off the caller */
        CHECK(async_exec(&a) == 0);
        CHECK(async_wait(1) == 1);
        CHECK(ring[0] == &a && r == 46 && v == 46);
        ring[0] = NULL;
        CHECK(async_wait(5) == -EINVAL); /* more than the ring holds */
        CHECK(umem_add(&v, 4) == 50 && v == 50);
        CHECK(asys_umem_add(&v, 1) == 51 && v == 51);
        CHECK(asys_syslet_default_ctx() != NULL && asys_syslet_default_ctx() != ctx);
    }

    /* The socket protocol from C: a timer of 1 ns through an in-process socket. */
    int sock = asys_socket_open(ctx);
    CHECK(sock >= 0);
    struct asys_sock_msg m, rep;
    asys_sock_prep(&m, ASYS_SOCK_TIMER, 9, 0, 0, 0);
    m.res = 1;
    CHECK(asys_sock_send(sock, &m, NULL, 0, -1) == 0);
    CHECK(asys_sock_recv(sock, &rep, NULL, 0) == 0 && rep.cookie == 9 && rep.res == 0);
    close(sock);

    /* Threadlets, asys_async and maybe_fork from C. */
    int tfds[2];
    CHECK(pipe(tfds) == 0);
    long tres = -1;
    struct asys_op top;
    asys_prep_threadlet(&top, c_threadlet, &tfds[0], 0);
    top.ret_ptr = &tres;
    top.user_data = 5;
    CHECK(asys_submit(ctx, &top) == 0); /* empty pipe: parked */
    CHECK(write(tfds[1], "t", 1) == 1);
    CHECK(asys_wait(ctx, 1, NULL, &cqe, 1) == 1 && cqe.user_data == 5 && cqe.res == 1 && tres == 1);
    CHECK(asys_call(SYS_getpid) == getpid());
    long st = 0;
    CHECK(asys_async(&st, SYS_getpid) == ASYS_DONE && st == getpid());
    CHECK(asys_default_ctx() != NULL);
    CHECK(maybe_fork(NULL, FORK_ON_BLOCKING) == -EFAULT);
    CHECK(maybe_fork(0, MAYBE_FORK_END) == 0);
    close(tfds[0]);
    close(tfds[1]);

    struct asys_info info;
    CHECK(asys_ctx_info(ctx, &info) == 0);
    CHECK(asys_ctx_destroy(ctx, ASYS_DESTROY_DRAIN) == 0);
    CHECK(asys_ctx_fd(ctx) == -EBADF);
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
