// asys-cp [-j FILES] [-t THREADS] [-v] SRC DST: copies the tree SRC to DST
// (which must not exist) like `cp -a`, for regular files, directories and
// symbolic links, with up to FILES files in progress at once (default 64),
// on a context with THREADS pool workers (default: the library's). See
// tree_copy.hpp. Exit status 1 if anything could not be copied.
#include <cstdlib>
#include <string>

#include "tree_copy.hpp"

int main(int argc, char **argv) {
    unsigned workers = 64;
    asys_params params{};
    // A file's copy is one chain, and chains are the pool's `long` class (a
    // quarter of the workers by default): they end, so let them use all.
    params.class_workers[ASYS_CLASS_LONG] = 1024;  // clamped to the workers
    bool verbose = false;
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; ++i) {
        const std::string opt = argv[i];
        if (opt == "-v") verbose = true;
        else if (opt == "-j" && i + 1 < argc) workers = static_cast<unsigned>(std::strtoul(argv[++i], nullptr, 10));
        else if (opt == "-t" && i + 1 < argc) params.workers = static_cast<unsigned>(std::strtoul(argv[++i], nullptr, 10));
        else break;
    }
    if (argc - i != 2) {
        std::fprintf(stderr, "usage: %s [-j FILES] [-t THREADS] [-v] SRC DST\n", argv[0]);
        return 2;
    }
    asys::context ctx(params);
    tree_copy::copier cp(ctx, workers);
    asys::sync_wait(ctx, cp.copy(argv[i], argv[i + 1]));
    const tree_copy::counts &n = cp.totals();
    if (verbose)
        std::printf("asys-cp: %lu files, %lu directories, %lu symlinks, %lu bytes, %lu skipped, %lu errors, "
                    "%llu suspensions\n",
                    n.files, n.dirs, n.symlinks, n.bytes, n.skipped, n.errors,
                    static_cast<unsigned long long>(ctx.suspensions()));
    return n.errors ? 1 : 0;
}
