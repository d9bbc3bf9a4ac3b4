#!/usr/bin/env bash
# Issue 11's side-by-side check: save_batch.py and loop_stall.py on an earlier revision and on
# this tree (native encoder, then the NumPy fallback), alternating ROUNDS times on one machine.
#   bash benchmarks/before_after.sh [REV=eb3b0f2] [ROUNDS=3]
# Both trees run the earlier revision's scripts (the same measurement); files go to /dev/shm.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
rev="${1:-eb3b0f2}"
rounds="${2:-3}"
python="$(command -v "${PYTHON:-python}")"
[[ "$python" == /* ]] || python="$PWD/$python"  # the loop changes folders
before="$(mktemp -d)"
trap 'git -C "$here" worktree remove --force "$before" >/dev/null 2>&1 || true' EXIT
git -C "$here" worktree add -q --detach "$before" "$rev"
for round in $(seq "$rounds"); do
  for tree in before after after-numpy; do
    case $tree in
      before) dir=$before; encoder=auto;;
      after) dir=$here; encoder=auto;;
      after-numpy) dir=$here; encoder=numpy;;
    esac
    echo "=== round $round $tree"
    (cd "$dir" && TENSORPNG_CPU_ENCODER=$encoder PYTHONPATH="$dir" "$python" "$before/benchmarks/save_batch.py" \
      --repeat 3 --dir /dev/shm 2>&1 | grep -E "^tensorpng|^recipe \(")
    (cd "$dir" && TENSORPNG_CPU_ENCODER=$encoder PYTHONPATH="$dir" "$python" "$before/benchmarks/loop_stall.py" \
      --steps 10 --dir /dev/shm 2>&1 | grep -E "synchronous|inside the loop")
  done
done
