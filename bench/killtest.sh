#!/usr/bin/env bash
# killtest.sh — "no acknowledged point lost in 100 kill -9 cycles" (issue 2).
#
# One data directory lives through every cycle, so later cycles also crash on top of
# the blocks, flushes and log segments left by earlier ones. A cycle: CLIENTS writers
# (build/bench/ingest_load stream) post small unique batches to the running server and
# log each batch before sending ("S") and after its 204 ("A"); after a random 0.2-1.5 s
# the server gets kill -9; the writers notice and stop; the server is restarted on the
# same directory and ingest_load verify exports the cycle's points and checks that
#   - every acknowledged batch is fully there        (else LOST),
#   - batches in flight at the kill are all or nothing (else PARTIAL),
#   - nothing appears that was never sent, nothing twice, timestamps intact.
# The head is kept small (HEAD_MAX_POINTS) so that flushes into blocks, log segment
# deletion and compaction happen during the cycles and the kill lands in them too.
# At the end every cycle is verified again, then once more after a graceful stop
# (SIGTERM flushes the head) and a clean restart.
#
# Knobs: CYCLES (100), CLIENTS (2), BATCH_POINTS (50), HEAD_MAX_POINTS (100000),
# SEED (random; printed, so a run's kill times can be replayed), STELE_ARGS (more
# `stele serve` flags), KEEP (0; the work directory is always kept after a failure),
# WORKDIR, BUILD_DIR (build), BUILD (1; 0 uses the binaries already in BUILD_DIR).
# What kill -9 can and cannot show: it catches an acknowledgement given before the log
# record reached the kernel (STELE_ARGS="--ack buffered" loses the last acknowledged
# batches here, as that mode allows); it cannot catch one given after write(2) but
# before fsync, because the page cache outlives the process. That needs a machine
# crash, or the fault-injecting I/O of the unit tests.
# Prints `cycles=N lost=0` (and the details of any loss); exit 0 only if nothing was
# lost, torn or invented (exit 1), and the two-matcher query finds it all (exit 3).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CYCLES=${CYCLES:-100}
CLIENTS=${CLIENTS:-2}
BATCH_POINTS=${BATCH_POINTS:-50}
HEAD_MAX_POINTS=${HEAD_MAX_POINTS:-100000}
SEED=${SEED:-$((RANDOM * 32768 + RANDOM))}
KEEP=${KEEP:-0}
STELE_ARGS=${STELE_ARGS:-}
BUILD=${BUILD:-1}
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
# Kill moment after the writers start, in ms (the issue's 0.2-1.5 s).
KILL_MIN_MS=200
KILL_MAX_MS=1500
# Bounds, so that a cycle stays within a few seconds and the script always ends:
# a restart must be ready in READY_TIMEOUT s; a writer gives up after WRITER_MAX_S
# (plus its 5 s I/O timeout) even if the kill never came.
READY_TIMEOUT=30
WRITER_MAX_S=5
# Point ids are laid out 2^20 ms apart per cycle (ingest_load's CYCLE_SPAN) before
# now; Stele keeps 30 days, which bounds the cycles.
CYCLE_SPAN_MS=1048576
MAX_CYCLES=2000

STELE=$BUILD_DIR/stele
LOAD=$BUILD_DIR/bench/ingest_load
if [ "$CYCLES" -lt 1 ] || [ "$CYCLES" -gt "$MAX_CYCLES" ]; then
    echo "killtest: CYCLES must be 1..$MAX_CYCLES" >&2
    exit 2
fi
WORK=${WORKDIR:-$(mktemp -d /tmp/stele-killtest.XXXXXX)}
mkdir -p "$WORK"
DATA=$WORK/data
SLOG=$WORK/stele.log
ACKLOG=$WORK/acks.log
FAILED=0

SPID=""
WPID=""
cleanup() {
    [ -n "$WPID" ] && kill -0 "$WPID" 2>/dev/null && kill -9 "$WPID" 2>/dev/null
    [ -n "$SPID" ] && kill -0 "$SPID" 2>/dev/null && kill -9 "$SPID" 2>/dev/null
    if [ "$KEEP" = 1 ] || [ "$FAILED" = 1 ]; then
        echo "killtest: work directory kept: $WORK (server log $SLOG, ack log $ACKLOG)" >&2
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() {
    FAILED=1
    echo "killtest: FAILED: $*" >&2
    exit 1
}

free_port() {
    local p
    for _ in $(seq 1 100); do
        p=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    fail "no free port found"
}

# start_server: starts Stele on DATA and waits for /ready; sets SPID, READY_S.
start_server() {
    local t deadline code
    t=$(date +%s%N)
    # shellcheck disable=SC2086 # STELE_ARGS is a list of flags
    "$STELE" serve --data "$DATA" --http "127.0.0.1:$PORT" --head-max-points "$HEAD_MAX_POINTS" \
        $STELE_ARGS 2>>"$SLOG" &
    SPID=$!
    deadline=$((t + READY_TIMEOUT * 1000000000))
    while :; do
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$URL/ready" || true)
        [ "$code" = 200 ] && break
        kill -0 "$SPID" 2>/dev/null ||
            { tail -20 "$SLOG" >&2; fail "stele exited during start/recovery (cycle $CYCLE)"; }
        [ "$(date +%s%N)" -lt "$deadline" ] ||
            { tail -20 "$SLOG" >&2; fail "stele not ready ${READY_TIMEOUT}s after restart (cycle $CYCLE)"; }
        sleep 0.02
    done
    READY_S=$(awk -v a="$t" -v b="$(date +%s%N)" 'BEGIN {printf "%.3f", (b - a) / 1e9}')
}

if [ "$BUILD" = 1 ]; then
    echo "killtest: building" >&2
    cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build "$BUILD_DIR" -j 2 --target stele ingest_load >/dev/null
fi
if [ ! -x "$STELE" ] || [ ! -x "$LOAD" ]; then
    fail "$STELE or $LOAD missing (BUILD=0 needs them built)"
fi

RANDOM=$SEED
PORT=$(free_port) || exit 1
URL=http://127.0.0.1:$PORT
T0_MS=$(($(date +%s%3N) - CYCLES * CYCLE_SPAN_MS - 3600000))
echo "killtest: seed=$SEED cycles=$CYCLES clients=$CLIENTS batch=$BATCH_POINTS points head_max=$HEAD_MAX_POINTS args='$STELE_ARGS' work=$WORK" >&2

CYCLE=0
start_server
TOKEN_FILE=$DATA/admin.token
ACKED_TOTAL=0
INFLIGHT_TOTAL=0
INFLIGHT_KEPT=0
MAX_READY=0
MAX_RECOVERED_S=0
TORN_TOTAL=0
START=$(date +%s)
for CYCLE in $(seq 0 $((CYCLES - 1))); do
    "$LOAD" stream --url "$URL" --token-file "$TOKEN_FILE" --log "$ACKLOG" --cycle "$CYCLE" \
        --t0-ms "$T0_MS" --clients "$CLIENTS" --batch-points "$BATCH_POINTS" \
        --max-seconds "$WRITER_MAX_S" >"$WORK/stream.out" 2>"$WORK/stream.err" &
    WPID=$!
    DELAY_MS=$((KILL_MIN_MS + RANDOM % (KILL_MAX_MS - KILL_MIN_MS + 1)))
    sleep "$(awk -v ms="$DELAY_MS" 'BEGIN {printf "%.3f", ms / 1000}')"
    kill -9 "$SPID"
    wait "$SPID" 2>/dev/null || true
    if ! wait "$WPID"; then
        cat "$WORK/stream.err" >&2
        fail "the writer of cycle $CYCLE reported an error (a status other than 204?)"
    fi
    WPID=""
    grep -q '"server_gone":true' "$WORK/stream.out" ||
        echo "killtest: note: cycle $CYCLE writer stopped before the kill: $(cat "$WORK/stream.out")" >&2

    echo "--- cycle $CYCLE: kill -9 after ${DELAY_MS} ms; restart" >>"$SLOG"
    start_server
    REC=$(grep 'recovered' "$SLOG" | tail -1)
    REC_S=$(echo "$REC" | sed -n 's/.* in \([0-9.]*\) s$/\1/p')
    TORN=$(echo "$REC" | sed -n 's/.* \([0-9]*\) torn log bytes.*/\1/p')
    TORN_TOTAL=$((TORN_TOTAL + ${TORN:-0}))
    V=$("$LOAD" verify --url "$URL" --token-file "$TOKEN_FILE" --log "$ACKLOG" --t0-ms "$T0_MS" \
        --cycle "$CYCLE" 2>"$WORK/verify.err") || {
        cat "$WORK/verify.err" >&2
        echo "$V" >&2
        fail "cycle $CYCLE (kill after ${DELAY_MS} ms): $(echo "$V" | jq -c '{lost_points, partial_batches, phantom_points, duplicate_points, bad_timestamps}' 2>/dev/null)"
    }
    A=$(echo "$V" | jq .acked_points)
    I=$(echo "$V" | jq .inflight_batches)
    K=$(echo "$V" | jq .inflight_present)
    ACKED_TOTAL=$((ACKED_TOTAL + A))
    INFLIGHT_TOTAL=$((INFLIGHT_TOTAL + I))
    INFLIGHT_KEPT=$((INFLIGHT_KEPT + K))
    MAX_READY=$(awk -v a="$MAX_READY" -v b="$READY_S" 'BEGIN {print (b > a ? b : a)}')
    MAX_RECOVERED_S=$(awk -v a="$MAX_RECOVERED_S" -v b="${REC_S:-0}" 'BEGIN {print (b > a ? b : a)}')
    printf 'killtest: cycle %3d: kill at %4d ms, %6d points acked, %d in flight (%d kept), ready %s s (%s)\n' \
        "$CYCLE" "$DELAY_MS" "$A" "$I" "$K" "$READY_S" "${REC#stele: serve: }" >&2
done

echo "killtest: verifying every cycle again" >&2
V=$("$LOAD" verify --url "$URL" --token-file "$TOKEN_FILE" --log "$ACKLOG" --t0-ms "$T0_MS") || {
    echo "$V" >&2
    fail "final verification after $CYCLES cycles"
}
echo "$V" >&2
echo "killtest: graceful stop (SIGTERM flushes the head), clean restart, verify again" >&2
kill -TERM "$SPID"
for _ in $(seq 1 600); do
    kill -0 "$SPID" 2>/dev/null || break
    sleep 0.1
done
kill -0 "$SPID" 2>/dev/null && fail "stele did not stop within 60 s of SIGTERM"
wait "$SPID" || fail "stele exited with status $? after SIGTERM"
CYCLE=final
start_server
V=$("$LOAD" verify --url "$URL" --token-file "$TOKEN_FILE" --log "$ACKLOG" --t0-ms "$T0_MS") || {
    echo "$V" >&2
    fail "verification after a graceful stop and restart"
}
echo "$V" >&2
# The checks above select {cycle="R"}: one posting list. Selecting the same points as
# {__name__="kt_v",cycle="R"} makes the index intersect two lists; a difference here is
# a query bug, not lost data, and is reported as such.
INDEX_OK=1
IV=$("$LOAD" verify --url "$URL" --token-file "$TOKEN_FILE" --log "$ACKLOG" --t0-ms "$T0_MS" \
    --match name-and-cycle 2>"$WORK/index-check.err") || INDEX_OK=0
METRICS=$(curl -sS -H "Authorization: Token $(cat "$TOKEN_FILE")" "$URL/metrics")
BLOCKS=$(echo "$METRICS" | awk '$1 == "stele_tsdb_blocks" {print $2}')
kill -TERM "$SPID"
wait "$SPID" || true
SPID=""
echo "killtest: $CYCLES cycles in $(($(date +%s) - START)) s; $ACKED_TOTAL points acknowledged, all present; $INFLIGHT_TOTAL batches in flight at a kill ($INFLIGHT_KEPT of them kept, none partial); $TORN_TOTAL torn log bytes discarded in total; slowest restart to /ready ${MAX_READY} s (recovery itself ${MAX_RECOVERED_S} s); $BLOCKS blocks at the end" >&2
echo "cycles=$CYCLES lost=0"
if [ "$INDEX_OK" = 0 ]; then
    FAILED=1
    head -5 "$WORK/index-check.err" | sed "s/^/killtest: index check: /" >&2
    echo "index_check=FAILED: every point is stored (above), but {__name__=\"kt_v\",cycle=\"R\"} misses $(echo "$IV" | jq .lost_points) of $(echo "$IV" | jq .acked_points) acknowledged points after the restarts — a query/index bug, not data loss"
    exit 3
fi
echo "index_check=ok"
