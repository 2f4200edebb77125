#!/usr/bin/env bash
# Installs the build into a temporary prefix and builds examples/cat_async.c
# against it twice: with pkg-config and with CMake's find_package(asys); and
# the C++ example examples/chain_cat.cpp with pkg-config (the installed C++
# headers are self-contained); and a POSIX AIO program with pkg-config's
# asys-aio.
set -euo pipefail
bin=$1 src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$bin" --prefix "$tmp/prefix" >/dev/null
pass=0 fail=0
export PKG_CONFIG_PATH="$tmp/prefix/lib/pkgconfig"
if cc -std=c99 -Wall -Wextra -pedantic -Werror "$src/examples/cat_async.c" \
     $(pkg-config --cflags --libs asys) -Wl,-rpath,"$tmp/prefix/lib" -o "$tmp/pc" &&
   [ "$("$tmp/pc" "$src/README.md" | head -c 6)" = "# asys" ]; then
  pass=$((pass + 1))
else
  echo "FAILED: pkg-config build"; fail=$((fail + 1))
fi
if c++ -std=c++20 -Wall -Wextra -pedantic -Werror "$src/examples/chain_cat.cpp" \
     $(pkg-config --cflags --libs asys) -Wl,-rpath,"$tmp/prefix/lib" -o "$tmp/cc" &&
   [ "$("$tmp/cc" "$src/README.md" | head -c 6)" = "# asys" ] &&
   cmp -s <("$tmp/cc" "$src/README.md") "$src/README.md"; then
  pass=$((pass + 1))
else
  echo "FAILED: C++ pkg-config build (chain_cat)"; fail=$((fail + 1))
fi
# libasys-aio through its pkg-config name: a POSIX AIO program linked with it
# reads the README (aio_read + aio_suspend), and its aio_read is libasys-aio's.
cat > "$tmp/aio.c" <<'EOF2'
#define _GNU_SOURCE
#include <aio.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
int main(int argc, char **argv) {
    if (argc < 2) return 2;
    char buf[6] = {0};
    struct aiocb cb;
    memset(&cb, 0, sizeof cb);
    cb.aio_fildes = open(argv[1], O_RDONLY);
    cb.aio_buf = buf;
    cb.aio_nbytes = sizeof buf;
    const struct aiocb *list[1] = {&cb};
    if (cb.aio_fildes < 0 || aio_read(&cb) != 0) return 1;
    while (aio_error(&cb) == EINPROGRESS) aio_suspend(list, 1, NULL);
    Dl_info info;
    if (aio_return(&cb) != 6 || !dladdr(dlsym(RTLD_DEFAULT, "aio_read"), &info)) return 1;
    printf("%.6s %s\n", buf, strstr(info.dli_fname, "libasys-aio") ? "libasys-aio" : info.dli_fname);
    return 0;
}
EOF2
if cc -std=c99 -Wall -Wextra -Werror "$tmp/aio.c" $(pkg-config --cflags --libs asys-aio) -ldl \
     -Wl,-rpath,"$tmp/prefix/lib" -o "$tmp/aio" &&
   [ "$("$tmp/aio" "$src/README.md")" = "# asys libasys-aio" ]; then
  pass=$((pass + 1))
else
  echo "FAILED: pkg-config build of a POSIX AIO program (asys-aio)"; fail=$((fail + 1))
fi
mkdir -p "$tmp/user"
cat > "$tmp/user/CMakeLists.txt" <<EOF2
cmake_minimum_required(VERSION 3.25)
project(user C CXX)
find_package(asys 0.2 REQUIRED)
add_executable(u "$src/examples/cat_async.c")
target_link_libraries(u PRIVATE asys::asys)
EOF2
if cmake -S "$tmp/user" -B "$tmp/user/b" -DCMAKE_PREFIX_PATH="$tmp/prefix" >/dev/null &&
   cmake --build "$tmp/user/b" >/dev/null &&
   [ "$("$tmp/user/b/u" "$src/README.md" | head -c 6)" = "# asys" ]; then
  pass=$((pass + 1))
else
  echo "FAILED: find_package build"; fail=$((fail + 1))
fi
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
