/* cat_async: print a file with asys, waiting on the context's eventfd with
 * poll(2) — the pattern for integrating asys into any event loop.
 * Build: cc cat_async.c $(pkg-config --cflags --libs asys) */
#include <asys/asys.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s FILE\n", argv[0]);
        return 2;
    }
    asys_ctx *ctx;
    int rc = asys_ctx_create(NULL, &ctx);
    if (rc < 0) {
        fprintf(stderr, "asys_ctx_create: %s\n", strerror(-rc));
        return 1;
    }
    int fd = open(argv[1], O_RDONLY);
    if (fd < 0) {
        perror("open");
        return 1;
    }
    static char buf[65536];
    long res = 0;
    int64_t off = 0;
    for (;;) {
        struct asys_op op;
        asys_prep_pread(&op, fd, buf, sizeof buf, off);
        op.ret_ptr = &res;
        rc = asys_submit(ctx, &op);
        if (rc < 0) {
            fprintf(stderr, "asys_submit: %s\n", strerror(-rc));
            return 1;
        }
        if (rc != ASYS_DONE) { /* punted: wait for the eventfd, then reap */
            struct pollfd p = {asys_ctx_fd(ctx), POLLIN, 0};
            struct asys_cqe cqe;
            while (asys_peek(ctx, &cqe, 1) == 0) poll(&p, 1, -1);
        }
        if (res < 0) {
            fprintf(stderr, "read: %s\n", strerror((int)-res));
            return 1;
        }
        if (res == 0) break;
        fwrite(buf, 1, (size_t)res, stdout);
        off += res;
    }
    close(fd);
    return asys_ctx_destroy(ctx, ASYS_DESTROY_DRAIN) < 0;
}
