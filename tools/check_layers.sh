#!/usr/bin/env bash
# The layer check: a folder of src/ may include only from its own layer or
# from layers below it, and the folder include graph has no cycle.
#
# The graph is built from every `#include "folder/..."` (and
# `#include <folder/...>`) line under src/ and include/ whose first path part
# is one of the project's folders: src/<folder>, or include/asys (the public
# headers, folder "asys"). Other includes (system, third-party, same-folder
# names without a slash) are ignored.
#
# Prints every violation as `file:line: folder X includes folder Y above it`,
# every cycle with the include lines that make it, and every src/ folder the
# layer list below does not place. Exits 1 if there is any of these.
set -euo pipefail

# ---------------------------------------------------------------------------
# THE LAYER ORDER, bottom to top. One entry per level; folders on the same
# level share an entry (they may include each other, as long as that makes
# no cycle). Edit only this list when folders move.
LAYERS=(
  "asys"                # include/asys: the public C/C++ headers, below everything
  "base"                # op slots, slab, raw syscalls, opcode table, deny list,
                        # fault knobs, completion ring
  "pool uring"          # execution backends
  "core router inline"  # context, routing, inline probes
  "syslet socket"       # features built on ops
  "capi asysd aio"      # C entry points; the asysd program; POSIX AIO (libasys-aio)
)
# ---------------------------------------------------------------------------

cd "$(dirname "$0")/.."

declare -A level=()  # folder -> level index (0 = bottom)
for i in "${!LAYERS[@]}"; do
  for f in ${LAYERS[$i]}; do
    if [[ -n ${level[$f]+x} ]]; then
      echo "check_layers: folder $f is listed twice in LAYERS" >&2
      exit 2
    fi
    level[$f]=$i
  done
done

# The project's folders and where they live.
declare -A dir_of=()
for d in src/*/; do
  d=${d%/}
  dir_of[${d#src/}]=$d
done
for d in include/*/; do
  d=${d%/}
  dir_of[${d#include/}]=$d
done

fail=0
for f in $(printf '%s\n' "${!dir_of[@]}" | sort); do
  if [[ -z ${level[$f]+x} ]]; then
    echo "${dir_of[$f]}: folder $f is not in the layer list (tools/check_layers.sh, LAYERS)"
    fail=1
  fi
done

# Edges: "from to" -> the first file:line that makes it.
declare -A edge=()
violations=0
while IFS= read -r hit; do
  file=${hit%%:*}
  rest=${hit#*:}
  line=${rest%%:*}
  text=${rest#*:}
  [[ $text =~ ^[[:space:]]*#[[:space:]]*include[[:space:]]*[\"\<]([^\"\>/]+)/ ]] || continue
  to=${BASH_REMATCH[1]}
  [[ -n ${dir_of[$to]+x} ]] || continue  # not one of ours
  from=${file#*/}
  from=${from%%/*}
  [[ $from != "$to" ]] || continue
  [[ -n ${edge["$from $to"]+x} ]] || edge["$from $to"]="$file:$line"
  if [[ -n ${level[$from]+x} && -n ${level[$to]+x} ]] && ((level[$to] > level[$from])); then
    echo "$file:$line: folder $from includes folder $to above it"
    violations=$((violations + 1))
  fi
done < <(grep -rnE --include='*.h' --include='*.hpp' --include='*.c' --include='*.cpp' \
           --include='*.cc' --include='*.inc' '^[[:space:]]*#[[:space:]]*include' src include | sort -t: -k1,1 -k2,2n)
((violations == 0)) || fail=1

# Cycles: the strongly connected components of the folder graph with more than
# one folder (reachability by closure; the graph has a dozen nodes). For each,
# print one shortest cycle through its first folder, then every include
# between its folders (the first include line of each folder edge).
nodes=($(printf '%s\n' "${!dir_of[@]}" | sort))
declare -A reach=()
for e in "${!edge[@]}"; do reach[$e]=1; done
for k in "${nodes[@]}"; do
  for i in "${nodes[@]}"; do
    [[ -n ${reach["$i $k"]+x} ]] || continue
    for j in "${nodes[@]}"; do
      [[ -n ${reach["$k $j"]+x} ]] && reach["$i $j"]=1
    done
  done
done

# Shortest path from $1 back to $1 (BFS), printed as "a b c a".
cycle_through() {
  local s=$1 n v
  local -A prev=()
  local queue=("$s") head=0
  while ((head < ${#queue[@]})); do
    v=${queue[$head]}
    head=$((head + 1))
    for n in "${nodes[@]}"; do
      [[ -n ${edge["$v $n"]+x} ]] || continue
      if [[ $n == "$s" ]]; then
        local path=("$s") u=$v
        while [[ $u != "$s" ]]; do
          path=("$u" "${path[@]}")
          u=${prev[$u]}
        done
        echo "$s ${path[*]}"
        return
      fi
      [[ -z ${prev[$n]+x} ]] || continue
      prev[$n]=$v
      queue+=("$n")
    done
  done
}

declare -A seen=()
cycles=0
for a in "${nodes[@]}"; do
  [[ -z ${seen[$a]+x} ]] || continue
  [[ -n ${reach["$a $a"]+x} ]] || continue
  members=()
  for b in "${nodes[@]}"; do
    if [[ $b == "$a" ]] || [[ -n ${reach["$a $b"]+x} && -n ${reach["$b $a"]+x} ]]; then
      members+=("$b")
      seen[$b]=1
    fi
  done
  read -r -a path <<<"$(cycle_through "$a")"
  cycles=$((cycles + 1))
  echo "cycle between folders {${members[*]}}, e.g. $(printf '%s -> ' "${path[@]:0:${#path[@]}-1}")${path[-1]}; its includes:"
  for x in "${members[@]}"; do
    for y in "${members[@]}"; do
      [[ -z ${edge["$x $y"]+x} ]] || echo "  ${edge["$x $y"]}: folder $x includes folder $y"
    done
  done
done
((cycles == 0)) || fail=1

if ((fail)); then
  echo "check_layers: FAILED ($violations upward includes, $cycles cycles)" >&2
  exit 1
fi
echo "check_layers: ok (${#LAYERS[@]} levels, ${#edge[@]} folder edges)"
