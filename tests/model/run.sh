#!/usr/bin/env bash
# run.sh — checks tests/model/replay.pml with spin: exhaustive safety search, no
# assertion violated; then the same model with -DBUG (recovery forgets the log) must
# violate it, so the check is known to have teeth. Bounded: the state space is small.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
command -v spin >/dev/null || { echo "model: spin not installed (scripts/deps.sh)" >&2; exit 1; }
cd "$work"
check() { # DEFINE EXPECT(0|1 errors)
    rm -f pan* ./*.trail
    spin $1 -a "$here/replay.pml" >/dev/null
    cc -O2 -w -DSAFETY -DNOREDUCE -o pan pan.c
    out=$(timeout 300 ./pan -m100000 2>&1)
    errors=$(printf '%s\n' "$out" | sed -n 's/.*errors: \([0-9]*\).*/\1/p' | head -1)
    states=$(printf '%s\n' "$out" | sed -n 's/^ *\([0-9.e+]*\) states, stored.*/\1/p' | head -1)
    depth=$(printf '%s\n' "$out" | grep -c 'max search depth too small' || true)
    if [ "$2" = 0 ]; then
        [ "$errors" = 0 ] && [ "$depth" = 0 ] || { printf '%s\n' "$out" >&2; echo "model: FAIL: safety violated or search truncated" >&2; exit 1; }
        echo "model: replay window safe: no counter accepted twice ($states states, exhaustive)"
    else
        [ "${errors:-0}" != 0 ] || { printf '%s\n' "$out" >&2; echo "model: FAIL: the BUG variant was not caught" >&2; exit 1; }
        echo "model: BUG variant (recovery forgetting the log) caught: $errors error(s)"
    fi
}
check "" 0
check "-DBUG" 1
