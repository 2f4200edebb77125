#!/usr/bin/env bash
# The tests: check the repository (tools/check_repo.sh) and its layers
# (tools/check_layers.sh), set up, build
# everything with warnings as errors, run the whole suite with ctest; then the
# same suite under ASan+UBSan and under TSan (clang 14).
# Extra arguments go to every ctest run (e.g. -R Fast).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/check_repo.sh   # repository hygiene first, before set-up and build
bash tools/check_layers.sh # folders include only from layers below them, no cycle
bash tools/setup.sh
jobs=$(nproc)

echo "== build (g++, -Werror) and test"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DASYS_WERROR=ON >/dev/null
cmake --build build
(cd build && ctest --output-on-failure -j "$jobs" "$@")

echo "== build (clang 14, ASan+UBSan, -Werror) and test, with short libFuzzer runs"
CC=clang-14 CXX=clang++-14 cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug \
  -DASYS_WERROR=ON -DASYS_BUILD_BENCH=OFF -DASYS_SANITIZE=address,undefined -DASYS_FUZZ=ON >/dev/null
cmake --build build-asan
cd build-asan
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --output-on-failure -j "$jobs" "$@"
cd ..

echo "== build (clang 14, TSan, -Werror) and test"
CC=clang-14 CXX=clang++-14 cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=Debug \
  -DASYS_WERROR=ON -DASYS_BUILD_BENCH=OFF -DASYS_SANITIZE=thread >/dev/null
cmake --build build-tsan
cd build-tsan
TSAN_OPTIONS=halt_on_error=1 ctest --output-on-failure -j "$jobs" "$@"
