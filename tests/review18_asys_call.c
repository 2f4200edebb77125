/* asys_call from C (review of issue 18): on x86-64 the variadic public name
 * is a 7-register function. Called from C with 0 to 6 arguments, outside and
 * inside a threadlet, each call gives the plain call's result and errno is
 * untouched. Prints "N passed, N failed"; exits non-zero on failure. */
#define _GNU_SOURCE
#include <asys/asys.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

static int passed, failed;
#define CHECK(cond)                                                                       \
    do {                                                                                  \
        if (cond) ++passed;                                                               \
        else { ++failed; fprintf(stderr, "FAILED: %s (line %d)\n", #cond, __LINE__); } \
    } while (0)

struct env {
    int file;    /* 8 KiB: byte i is 'a' + i % 26 */
    int pipe_r, pipe_w;
};

static void all_counts(struct env *e)
{
    char b[16];
    struct iovec v;
    char z = 'Z';
    struct stat st0, st1;
    long m;
    errno = 4321;
    CHECK(asys_call(SYS_getpid) == (long)getpid());                           /* 0 */
    CHECK(asys_call(SYS_close, -1) == -EBADF);                                /* 1 */
    CHECK(asys_call(SYS_kill, (long)getpid(), 0) == 0);                       /* 2 */
    CHECK(asys_call(SYS_write, e->pipe_w, "abc", 3) == 3);                    /* 3 */
    memset(b, 0, sizeof b);
    CHECK(asys_call(SYS_read, e->pipe_r, b, 16) == 3 && memcmp(b, "abc", 3) == 0);
    CHECK(asys_call(SYS_pread64, e->file, b, 4, 4096) == 4 && b[0] == 'a' + 4096 % 26); /* 4 */
    CHECK(asys_call(SYS_renameat2, -1L, "x", -1L, "y", 0L) == -EBADF);       /* 5 */
    /* 6: pwritev2 with RWF_APPEND (the sixth, from the stack). */
    v.iov_base = &z;
    v.iov_len = 1;
    CHECK(fstat(e->file, &st0) == 0);
    CHECK(asys_call(SYS_pwritev2, (long)e->file, &v, 1L, 0L, 0L, (long)RWF_APPEND) == 1);
    CHECK(fstat(e->file, &st1) == 0 && st1.st_size == st0.st_size + 1);
    CHECK(pread(e->file, b, 1, 0) == 1 && b[0] == 'a');
    /* Like syscall(2), every argument is read as a long: an int in the stack
     * slot of the sixth would leave its upper half undefined. */
    m = asys_call(SYS_mmap, 0L, 4096L, (long)PROT_READ, (long)MAP_SHARED, (long)e->file, 4096L); /* 6 */
    CHECK(m > 0 || m < -4095);
    if (m > 0 || m < -4095) {
        CHECK(((const char *)m)[1] == 'a' + 4097 % 26);
        CHECK(asys_call(SYS_munmap, m, 4096) == 0);
    }
    CHECK(errno == 4321);
}

static long in_threadlet(void *arg)
{
    all_counts((struct env *)arg);
    return 7;
}

int main(void)
{
    struct env e;
    char tmpl[] = "/tmp/asys-r18-XXXXXX";
    char data[8192];
    int p[2], i;
    asys_ctx *ctx = NULL;
    struct asys_op op;
    long ret = -1;
    int rc;
    e.file = mkstemp(tmpl);
    if (e.file < 0 || pipe(p) != 0) return 2;
    unlink(tmpl);
    for (i = 0; i < 8192; ++i) data[i] = (char)('a' + i % 26);
    if (write(e.file, data, sizeof data) != (ssize_t)sizeof data) return 2;
    e.pipe_r = p[0];
    e.pipe_w = p[1];

    all_counts(&e);

    CHECK(asys_ctx_create(NULL, &ctx) == 0);
    if (!ctx) return 1;
    asys_prep_threadlet(&op, in_threadlet, &e, 0);
    op.ret_ptr = &ret;
    rc = asys_submit(ctx, &op);
    CHECK(rc == ASYS_DONE || rc == 0);
    if (rc == 0) {
        struct asys_cqe cqe;
        struct timespec ts = {30, 0};
        CHECK(asys_wait(ctx, 1, &ts, &cqe, 1) == 1);
    }
    CHECK(ret == 7);
    CHECK(asys_ctx_destroy(ctx, ASYS_DESTROY_DRAIN) == 0);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
