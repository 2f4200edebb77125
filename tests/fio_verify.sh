#!/usr/bin/env bash
# fio_verify.sh LIBASYS_AIO: fio as a client of libasys-aio. fio's posixaio
# engine (unchanged fio, linked against glibc) runs with
# LD_PRELOAD=libasys-aio.so: it writes a file at iodepth 16 with crc32c
# verification headers in every block, reads it back and verifies; then the
# same with O_DIRECT (if the file system takes it). Passes only with zero
# verify errors, fio's exit status 0, and fio's aio_* calls bound to
# libasys-aio (checked in the dynamic linker's binding log).
# Exit 77 (ctest: skipped) if fio is not installed.
set -euo pipefail
lib=$(realpath "${1:?usage: fio_verify.sh LIBASYS_AIO}")
if ! command -v fio >/dev/null; then
  echo "SKIPPED: fio is not installed (tools/setup.sh installs it)"
  exit 77
fi
work=$(mktemp -d "$PWD/fio-verify-XXXXXX")
trap 'rm -rf "$work"' EXIT

run() { # name, extra fio options...
  local name=$1; shift
  LD_PRELOAD=$lib LD_DEBUG=bindings LD_DEBUG_OUTPUT="$work/bind-$name" \
    fio --name="$name" --filename="$work/data" --size=32M --bs=4k --rw=randwrite \
      --ioengine=posixaio --iodepth=16 --verify=crc32c --do_verify=1 --verify_fatal=1 \
      --output-format=json --output="$work/$name.json" "$@"
  python3 - "$work/$name.json" "$name" <<'PY'
import json, sys
job = json.load(open(sys.argv[1]))["jobs"][0]
errors = job["error"]
written, read = job["write"]["io_bytes"], job["read"]["io_bytes"]
print(f"{sys.argv[2]}: fio error {errors}, wrote {written} bytes, read and verified {read} bytes")
sys.exit(0 if errors == 0 and written == 32 << 20 and read == 32 << 20 else 1)
PY
  if ! grep -hq "libasys-aio.*normal symbol \`aio_write\(64\)\?'" "$work"/bind-"$name".*; then
    echo "FAILED: $name: fio's aio_write did not bind to libasys-aio"; exit 1
  fi
}

run buffered
if python3 -c "import os,sys; os.close(os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECT))" "$work/data" 2>/dev/null; then
  run direct --direct=1
else
  echo "O_DIRECT: not supported on $(stat -f -c %T "$work"), direct run skipped"
fi
echo "fio verify: zero errors"
