#!/usr/bin/env bash
# The main job: set up, build and run asys-bench on its default workload.
# Extra arguments go to asys-bench (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build --target asys-bench
exec ./build/bench/asys-bench "$@"
