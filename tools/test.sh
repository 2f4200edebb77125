#!/usr/bin/env bash
# The tests: set up, build everything with warnings as errors, run ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DASYS_WERROR=ON >/dev/null
cmake --build build
cd build
ctest --output-on-failure -j "$(nproc)" "$@"
