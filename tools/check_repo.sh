#!/usr/bin/env bash
# Repository hygiene, checked before anything is built:
#  - every tracked file name is printable ASCII (no control bytes, no bytes
#    above 0x7e), so it can be typed, listed and archived everywhere;
#  - no tracked file points into a sibling "shared" directory outside the
#    repository: the repository must stand alone.
# Exits non-zero and names every offending file.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  echo "check_repo: not a git work tree: no tracked files to check (skipped)"
  exit 0
fi

fail=0

# 1. File names: printable ASCII only (0x20..0x7e). -z keeps names raw;
#    cat -v shows the offending bytes readably.
while IFS= read -r -d '' name; do
  echo "check_repo: tracked file name is not printable ASCII: $(printf '%s' "$name" | cat -v)" >&2
  fail=1
done < <(git ls-files -z | LC_ALL=C grep -z -v '^[ -~]*$' || true)

# 2. Contents: no reference to the parent directory's "shared" folder. The
#    pattern is a regular expression, so this script does not match itself.
#    git grep exits 1 when nothing matches, 2 on an error.
rc=0
hits=$(git grep -n -I -e '\.\./shared' -- .) || rc=$?
if ((rc > 1)); then
  echo "check_repo: git grep failed ($rc)" >&2
  exit "$rc"
fi
while IFS= read -r hit; do
  [[ -n $hit ]] || continue
  echo "check_repo: $hit" >&2
  echo "check_repo:   ^ refers to a folder outside the repository; point into docs/ instead" >&2
  fail=1
done <<<"$hits"

if ((fail)); then
  echo "check_repo: FAILED" >&2
  exit 1
fi
echo "check_repo: ok"
