// chain_cat FILE: copies FILE to standard output with one asys::chain, run
// as one op (inline while the file is cached, on the pool from the first
// read that would block). The seed's idiom: a read that stops the loop
// (EOF or error) skips to the atom placed right after it, the close.
//
//   [0] open                      [3] write(1, buf, n)
//   [1] n = pread(fd, buf, off) ─┐ [4] off += n  ── back to [1]
//   [2] close(fd)   <─ on stop ──┘     (else [1] goes on to [3])
#include <asys/chain.hpp>

#include <cstdio>
#include <vector>

int main(int argc, char **argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s FILE\n", argv[0]);
        return 2;
    }
    asys_ctx *ctx = nullptr;
    if (int rc = asys_ctx_create(nullptr, &ctx); rc < 0) {
        std::fprintf(stderr, "asys_ctx_create: %d\n", rc);
        return 1;
    }
    std::vector<char> buf(64 * 1024);
    asys::chain c;
    auto fd = c.open(argv[1], O_RDONLY | O_CLOEXEC);
    auto off = c.var<off_t>(0);
    auto n = c.pread(fd, buf.data(), buf.size(), off,
                     SYSLET_STOP_ON_NON_POSITIVE | SYSLET_SKIP_TO_NEXT_ON_STOP);
    auto cl = c.close(fd);
    c.end_after(cl);
    auto wr = c.write(STDOUT_FILENO, buf.data(), n);
    auto adv = c.umem_add(off, n);
    c.jump(n, wr);
    c.jump(adv, n);

    int status = 0;
    try {
        c.run(ctx).value();     // throws std::system_error on the first error
        (void)n.get().value();  // the final pread: 0 at EOF, or why it failed
    } catch (const std::system_error &e) {
        std::fprintf(stderr, "chain_cat: %s\n", e.what());
        status = 1;
    }
    asys_ctx_destroy(ctx, ASYS_DESTROY_DRAIN);
    return status;
}
