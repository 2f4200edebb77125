#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian 12 machine (run as root).
# Installs only the Debian packages that are missing; safe to run repeatedly.
set -euo pipefail

PKGS=(
  build-essential cmake pkg-config ninja-build
  g++ clang-14 libclang-rt-14-dev     # compilers, sanitizers, libFuzzer
  liburing-dev                        # io_uring backend
  libgtest-dev libgmock-dev           # tests
  libbenchmark-dev                    # micro-benchmarks
  libfmt-dev libcli11-dev             # tools
  libboost-context-dev                # fiber switch for threadlets
  libseccomp-dev                      # io_uring fallback tests
  libuv1-dev libaio-dev fio           # peers in asys-bench, fio engine
  libboost-dev libasio-dev            # Boost.Asio / standalone Asio loop examples
  gnuplot-nox                         # asys-bench --plot
)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup: missing packages: ${missing[*]} (run as root to install)" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "setup: all packages present"
fi
echo "setup: done"
