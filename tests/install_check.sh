#!/usr/bin/env bash
# Installs the build into a temporary prefix and builds examples/cat_async.c
# against it twice: with pkg-config and with CMake's find_package(asys); and
# the C++ example examples/chain_cat.cpp with pkg-config (the installed C++
# headers are self-contained).
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
