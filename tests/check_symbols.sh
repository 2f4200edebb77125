#!/usr/bin/env bash
# check_symbols.sh LIBRARY [NM]: the shared library exports asys_* symbols
# only (src/asys.map), and exactly one other: maybe_fork (<asys/maybe_fork.h>,
# named by the proposal it implements). Lists the defined dynamic symbols with `nm -D
# --defined-only`, prints each one it checked, and fails naming every symbol
# that is not asys_-prefixed. Not counted as exports: the version-script
# nodes (absolute symbols such as ASYS_0.1) and the linker's own
# _init/_fini/_edata/_end/__bss_start, should a toolchain list them.
set -euo pipefail
lib=${1:?usage: check_symbols.sh LIBRARY [NM]}
nm=${2:-nm}

[ -f "$lib" ] || { echo "check_symbols: no such library: $lib" >&2; exit 1; }
# (set -e: a failing nm fails the check.)
listing=$("$nm" -D --defined-only "$lib")

# The version nodes: every name after an @ (asys_wait@@ASYS_0.1).
declare -A versions=()
while read -r line; do
  name=${line##* }
  [[ $name == *@* ]] && versions[${name##*@}]=1
done <<<"$listing"

checked=0 bad=0 skipped=0
while read -r line; do
  [ -n "$line" ] || continue
  name=${line##* }                # the last field; the type is the one before
  rest=${line% *}
  type=${rest##* }
  base=${name%%@*}                # asys_wait@@ASYS_0.1 -> asys_wait
  if [[ $type == A && -n ${versions[$base]:-} ]]; then
    echo "check_symbols: version node $name (skipped)"
    skipped=$((skipped + 1))
    continue
  fi
  case $base in
    _init | _fini | _edata | _end | __bss_start)
      echo "check_symbols: linker symbol $name (skipped)"
      skipped=$((skipped + 1))
      continue
      ;;
  esac
  checked=$((checked + 1))
  if [[ $base == asys_* || $base == maybe_fork ]]; then
    echo "check_symbols: ok   $type $name"
  else
    echo "check_symbols: FAIL $type $name: exported symbol without the asys_ prefix"
    bad=$((bad + 1))
  fi
done <<<"$listing"

echo "check_symbols: $lib: $checked exported symbols checked, $skipped skipped, $bad not asys_-prefixed"
if [ "$checked" -eq 0 ]; then
  echo "check_symbols: no exported symbol found: is this the right library?" >&2
  exit 1
fi
[ "$bad" -eq 0 ]
