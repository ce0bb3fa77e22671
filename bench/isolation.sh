#!/usr/bin/env bash
# isolation.sh — the isolation benchmark of issue 3: does a heavy query load slow down
# ingestion, and is an over-limit query refused fast?
#
# Design: one base data directory is prepared once — QUERY_POINTS points of the
# TSBS-"iot"-like workload (the data the queries read), a small slice of it written for
# a second tenant, `limited`, and a read token for that tenant — and the server is
# stopped gracefully (the head flushed into blocks). Each measured run copies the base
# into a fresh directory, starts `stele serve` on it and posts INGEST_POINTS more points
# (the ticks right after the base data, same trucks, so the same series) with
# build/bench/ingest_load post, which reports points/s and the acknowledgement latency
# of every request (Stele acknowledges after fsync). Runs alternate: ingestion alone,
# then ingestion while QUERY_CLIENTS clients of build/bench/query_load loop run the
# heavy range queries (b) and (c) of bench/query.sh over the whole base range, back to
# back, for as long as the ingestion lasts (SIGTERM ends the loop; --seconds bounds it
# anyway). REPEATS pairs; the report gives each run and the medians, and the targets:
# loaded throughput ≥ 90 % of alone, loaded p99 ≤ 1.5 × alone. To say where a loss comes
# from, each run splits the server's CPU by thread kind (query workers, connection
# threads, the rest) and gives the query client's CPU and how busy the whole box was
# (a shared box shows up as "unattributed").
#
# Refusals: the config gives tenant `limited` max_samples_per_query = LIMIT_SAMPLES (a
# tenant override, so the default tenant's heavy queries still run). An over-limit
# query from `limited` is sent REFUSAL_TRIES times with curl (a new connection each, as
# a client would) — once on an idle server and once while the query clients load it —
# and its latency (curl %{time_total}) is reported as median/p99/max (target < 5 ms).
# /metrics must then count every one in stele_refusals_total{tenant="limited",
# reason="samples"}. A query within the limit from the same tenant must succeed.
#
# Everything binds 127.0.0.1, every wait is bounded, the EXIT trap ends exactly the
# processes this script started and removes its work directory.
#
# Knobs (environment): TRUCKS (1000), QUERY_POINTS (10000000), INGEST_POINTS (10000000),
# CLIENTS (2 posters), BATCH_LINES (5000), QUERY_CLIENTS (8), REPEATS (3),
# REFUSAL_TRIES (50), LIMIT_SAMPLES (1000), LOOP_MAX_S (300: bound of a query loop),
# REFUSALS (1; 0 skips the refusal part), KEEP (0), WORKDIR, BUILD_DIR (build), BUILD (1).
# WORKER_POLICY (an experiment, off by default): "idle" moves Stele's query workers to
# SCHED_IDLE with chrt after each start — how the nice +10 workers of earlier revisions
# were shown to cost ingestion; a no-op since Stele runs them so itself.
# Results: a table on stdout, bench/out/isolation.md and bench/out/isolation.jsonl.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TRUCKS=${TRUCKS:-1000}
QUERY_POINTS=${QUERY_POINTS:-10000000}
INGEST_POINTS=${INGEST_POINTS:-10000000}
CLIENTS=${CLIENTS:-2}
BATCH_LINES=${BATCH_LINES:-5000}
QUERY_CLIENTS=${QUERY_CLIENTS:-8}
REPEATS=${REPEATS:-3}
REFUSAL_TRIES=${REFUSAL_TRIES:-50}
LIMIT_SAMPLES=${LIMIT_SAMPLES:-1000}
LOOP_MAX_S=${LOOP_MAX_S:-300}
REFUSALS=${REFUSALS:-1}
WORKER_POLICY=${WORKER_POLICY:-}
KEEP=${KEEP:-0}
BUILD=${BUILD:-1}
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
OUT=$ROOT/bench/out
READY_TIMEOUT=120 # seconds for the server to answer (recovery of the base is fast)
STOP_TIMEOUT=120  # seconds for a graceful stop (Stele flushes its head on SIGTERM)
# Before the ingestion starts, the query clients run this long, so that the first
# batches already meet a full query queue.
LOOP_LEAD_S=2
# Lines of the base workload (5 points each) also written for tenant `limited`: enough
# that an over-limit query there exceeds LIMIT_SAMPLES by far.
LIMITED_LINES=20000
CURL_MAX_S=30 # per refusal request; a refusal slower than this is a hang
TICK_S=10
OFFSET_S=5
PAST_MARGIN_S=600

STELE=$BUILD_DIR/stele
LOAD=$BUILD_DIR/bench/ingest_load
QLOAD=$BUILD_DIR/bench/query_load
mkdir -p "$OUT"
WORK=${WORKDIR:-$(mktemp -d /tmp/stele-isolation.XXXXXX)}
mkdir -p "$WORK"
RESULTS=$OUT/isolation.jsonl
: >"$RESULTS"

PIDS=() # servers and loaders we started; the exit trap ends exactly these
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
    done
    if [ "$KEEP" = 1 ]; then
        echo "isolation: work directory kept: $WORK" >&2
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

die() {
    echo "isolation: $*" >&2
    exit 1
}
log() { echo "isolation: $*" >&2; }
warn() { echo "isolation: WARNING: $*" >&2; }

free_port() {
    local p i
    for i in $(seq 1 100); do
        p=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    die "no free port found"
}
wait_status() {
    local url=$1 want=$2 timeout=$3 pid=$4 deadline code
    deadline=$(($(date +%s%N) + timeout * 1000000000))
    while [ "$(date +%s%N)" -lt "$deadline" ]; do
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$url" || true)
        [ "$code" = "$want" ] && return 0
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.02
    done
    return 1
}
stop_process() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 1 $((STOP_TIMEOUT * 10))); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "process $pid did not stop within ${STOP_TIMEOUT}s of SIGTERM; killing it"
        kill -9 "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"; }
machine_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat; }
# machine_load BEFORE AFTER OURS_CPU_S → "busy% other%": how busy all cores were, and
# the share no process of this run accounts for (other programs, kernel threads).
machine_load() {
    echo "$1 $2 $3" | awk -v hz="$(getconf CLK_TCK)" '{
        t = $4 - $2; if (t <= 0) t = 1
        other = 100 * (($3 - $1) / hz - $5) / (t / hz); if (other < 0) other = 0
        printf "%.0f %.0f", 100 * ($3 - $1) / t, other}'
}
json_get() { echo "$1" | jq -r ".$2"; }
calc() { awk "BEGIN {printf \"%s\", $1}"; }
fmt() { awk -v v="$1" -v f="$2" 'BEGIN {printf f, v}'; }
uri() { jq -rn --arg v "$1" '$v|@uri'; }
# Median of numbers on stdin (lower middle for an even count, as nearest-rank p50).
median() { sort -g | awk '{v[NR] = $1} END {if (NR) print v[int((NR + 1) / 2)]}'; }
# stats_ms FILE (seconds, one per line) → "median p99 max" in ms, nearest rank.
stats_ms() {
    sort -g "$1" | awk '{v[NR] = $1 * 1000} END {
        r50 = int(NR * 0.5); if (r50 < NR * 0.5) r50++; r99 = int(NR * 0.99); if (r99 < NR * 0.99) r99++
        printf "%.2f %.2f %.2f", v[r50], v[r99], v[NR]}'
}

# ---- build ---------------------------------------------------------------------------
if [ "$BUILD" = 1 ]; then
    log "building $STELE, $LOAD and $QLOAD"
    cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build "$BUILD_DIR" -j 2 --target stele ingest_load query_load >/dev/null
fi
for bin in "$STELE" "$LOAD" "$QLOAD"; do
    [ -x "$bin" ] || die "$bin missing (BUILD=0 needs it built)"
done
command -v jq >/dev/null || die "jq is not installed"
REV=${STELE_REV:-$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)}
if [ -z "${STELE_REV:-}" ] && [ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no -- src include 2>/dev/null)" ]; then
    REV="$REV+dirty"
fi

# ---- workloads -----------------------------------------------------------------------
PER_TICK=$((TRUCKS * 10))
Q_TICKS=$(((QUERY_POINTS + PER_TICK - 1) / PER_TICK))
I_TICKS=$(((INGEST_POINTS + PER_TICK - 1) / PER_TICK))
# Base data on a whole hour; the ingested ticks follow it and end PAST_MARGIN_S ago or
# earlier (inside Stele's future-skew and retention windows).
S0=$((($(date +%s) - (Q_TICKS + I_TICKS) * TICK_S - PAST_MARGIN_S) / 3600 * 3600))
S1=$((S0 + Q_TICKS * TICK_S))
Q_LAST=$((S1 - TICK_S))
log "generating the base ($QUERY_POINTS points) and the ingested workload ($INGEST_POINTS points)"
QWL=$WORK/base.lp
IWL=$WORK/ingest.lp
"$LOAD" gen --out "$QWL" --trucks "$TRUCKS" --points "$QUERY_POINTS" --start-ns "${S0}000000000" >>"$RESULTS"
"$LOAD" gen --out "$IWL" --trucks "$TRUCKS" --points "$INGEST_POINTS" --start-ns "${S1}000000000" >>"$RESULTS"
head -n "$LIMITED_LINES" "$QWL" >"$WORK/limited.lp"
CONFIG=$WORK/stele.json
echo "{\"tenants\":{\"limited\":{\"max_samples_per_query\":$LIMIT_SAMPLES}}}" >"$CONFIG"
sync

# The heavy queries: (b) and (c) of bench/query.sh over the whole base range.
range_target() {
    local q=$1 step=$2 win=$3 start n
    start=$((S0 + win - TICK_S + OFFSET_S))
    n=$(((Q_LAST + OFFSET_S - start + step - 1) / step))
    echo "/api/v1/query_range?query=$(uri "$q")&start=$start&end=$((start + n * step))&step=$step"
}
HEAVY_B=$(range_target 'max by (fleet) (max_over_time(readings_velocity[1h]))' 3600 3600)
HEAVY_C=$(range_target 'avg_over_time(diagnostics_fuel_state[10m])' 600 600)
# Over the limit for `limited`: (b) there reads ~360 samples per series per step.
OVER_LIMIT="/api/v1/query_range?query=$(uri 'max_over_time(readings_velocity[1h])')&start=$((S0 + 3600 - TICK_S + OFFSET_S))&end=$((Q_LAST + OFFSET_S))&step=3600"
# Within it: one series, one sample.
WITHIN_LIMIT="/api/v1/query?query=$(uri 'readings_velocity{name="truck_0"}')&time=$((Q_LAST + OFFSET_S))"

# query_workers PID: the tids of Stele's query workers — the threads it runs under
# SCHED_IDLE (policy 5, stat field 41) or, where that is refused, at nice +10 (field 19).
query_workers() {
    local t
    for t in /proc/"$1"/task/*; do
        awk '{cl = index($0, ")"); split(substr($0, cl + 2), f, " ")
              if (f[39] == 5 || f[17] == 10) {n = split(FILENAME, p, "/"); print p[n - 1]}}' "$t/stat"
    done
}
# describe_workers PID → e.g. "1 thread(s) under SCHED_IDLE"
describe_workers() {
    local tids policy
    tids=$(query_workers "$1")
    [ -n "$tids" ] || { echo "none found at SCHED_IDLE or nice +10"; return; }
    policy=$(chrt -p "$(echo "$tids" | head -1)" | sed -n 's/.*scheduling policy: //p')
    echo "$(echo "$tids" | wc -l) thread(s) under $policy, nice $(awk '{cl = index($0, ")"); split(substr($0, cl + 2), f, " "); print f[17]}' "/proc/$1/task/$(echo "$tids" | head -1)/stat")"
}
# workers_to_idle PID: Stele's query workers to SCHED_IDLE (WORKER_POLICY=idle only; a
# no-op for a Stele that already runs them so).
workers_to_idle() {
    local t n=0
    for t in $(query_workers "$1"); do
        chrt --idle -p 0 "$t" || die "chrt --idle failed for thread $t"
        n=$((n + 1))
    done
    [ "$n" -gt 0 ] || die "WORKER_POLICY=idle: no query worker found in $1"
}

# start_stele DIR: sets SPID, SURL, AUTH and SLOG (this server's stderr). A port taken
# between our probe and the bind (other programs share the box) is retried on another
# port, a few times.
NSTARTS=0
start_stele() {
    local dir=$1 port
    for _ in 1 2 3 4 5; do
        port=$(free_port) || exit 1
        NSTARTS=$((NSTARTS + 1))
        SLOG=$WORK/stele.$NSTARTS.log
        SURL=http://127.0.0.1:$port
        "$STELE" serve --data "$dir" --http "127.0.0.1:$port" --config "$CONFIG" 2>"$SLOG" &
        SPID=$!
        PIDS+=("$SPID")
        if wait_status "$SURL/ready" 200 "$READY_TIMEOUT" "$SPID"; then
            AUTH="Authorization: Token $(cat "$dir/admin.token")"
            [ "$WORKER_POLICY" = idle ] && workers_to_idle "$SPID"
            return 0
        fi
        wait "$SPID" 2>/dev/null || true
        grep -q 'Address already in use' "$SLOG" || break
        log "port $port was taken meanwhile; trying another"
    done
    tail -20 "$SLOG" >&2
    die "stele did not become ready"
}

# ---- base data directory -----------------------------------------------------------------
log "preparing the base data directory"
BASE=$WORK/base
start_stele "$BASE"
WORKERS=$(describe_workers "$SPID")
"$LOAD" post --url "$SURL" --file "$QWL" --token-file "$BASE/admin.token" --clients "$CLIENTS" \
    --batch-lines "$BATCH_LINES" --label base >>"$RESULTS" || die "posting the base failed"
"$LOAD" post --url "$SURL" --file "$WORK/limited.lp" --token-file "$BASE/admin.token" \
    --path "/write?db=limited&precision=ns" --clients 1 --label base-limited >>"$RESULTS" ||
    die "posting tenant limited's slice failed"
"$STELE" token create --tenant limited --scopes read --url "$SURL" \
    --token "$(cat "$BASE/admin.token")" >"$WORK/limited.token" 2>>"$WORK/token.log" ||
    die "cannot create a token for tenant limited"
LIMITED_AUTH="Authorization: Token $(cat "$WORK/limited.token")"
stop_process "$SPID" # flushes the head: the base is all in blocks
BASE_BYTES=$(du -sb "$BASE" | cut -f1)

# Server CPU by kind of thread while the ingestion runs: "query-worker" (SCHED_IDLE or
# nice +10), "http-connection" (libmicrohttpd's thread per connection: request parsing,
# ingestion of the body, sending answers) and "other" (log writer, flusher, main).
# thread_ticks PID → "tid class ticks" per thread.
thread_ticks() {
    awk 'FNR == 1 {
            s = $0; op = index(s, "("); cl = 0
            for (i = length(s); i > 0; i--) if (substr(s, i, 1) == ")") { cl = i; break }
            comm = substr(s, op + 1, cl - op - 1)
            split(substr(s, cl + 2), f, " "); split(FILENAME, p, "/")
            cls = (f[39] == 5 || f[17] == 10) ? "query-worker" : (comm ~ /^MHD-connection/ ? "http-connection" : "other")
            print p[5], cls, f[12] + f[13]
        }' /proc/"$1"/task/*/stat 2>/dev/null || true
}
# Threads may start during the run: sample every 0.25 s while PID $2 runs, keep the
# last sight of each thread.
thread_sampler() {
    local pid=$1 watch=$2 out=$3
    while kill -0 "$watch" 2>/dev/null && kill -0 "$pid" 2>/dev/null; do
        thread_ticks "$pid" >>"$out"
        sleep 0.25
    done
    thread_ticks "$pid" >>"$out"
}
# thread_cpu_by_class BEFORE SAMPLES TOTAL_S → {"query-worker":s,"http-connection":s,
# "other":s}. Connection threads end with their connections, between two samples, so
# their share is the server's total minus the long-lived threads' (sampled exactly).
thread_cpu_by_class() {
    awk -v hz="$(getconf CLK_TCK)" -v total="$3" 'NR == FNR {b[$1] = $3; next}
        {last[$1] = $3; cls[$1] = $2}
        END {
            n["query-worker"] = n["other"] = 0
            for (t in last) {d = last[t] - b[t]; if (d > 0 && cls[t] != "http-connection") n[cls[t]] += d}
            w = n["query-worker"] / hz; o = n["other"] / hz; h = total - w - o; if (h < 0) h = 0
            printf "{\"query-worker\":%.2f,\"http-connection\":%.2f,\"other\":%.2f}", w, h, o
        }' "$1" "$2"
}

# ---- ingestion alone / under query load -------------------------------------------------
# one_run LABEL LOADED(0|1): a fresh copy of the base, one measured ingestion.
one_run() {
    local label=$1 loaded=$2 dir=$WORK/run loop_pid="" post post_pid loopj="null" c0 c1 m0 m1 ml
    local q0=0 q1=0 qcpu=0 threads
    rm -rf "$dir"
    cp -a "$BASE" "$dir"
    rm -f "$dir/LOCK"
    start_stele "$dir"
    sync
    if [ "$loaded" = 1 ]; then
        "$QLOAD" loop --url "$SURL" --token-file "$dir/admin.token" --target "$HEAVY_B" \
            --target "$HEAVY_C" --clients "$QUERY_CLIENTS" --seconds "$LOOP_MAX_S" \
            --label "$label" >"$WORK/loop.json" 2>>"$WORK/loop.err" &
        loop_pid=$!
        PIDS+=("$loop_pid")
        sleep "$LOOP_LEAD_S"
        q0=$(cpu_s "$loop_pid")
    fi
    thread_ticks "$SPID" >"$WORK/threads.before"
    : >"$WORK/threads.samples"
    c0=$(cpu_s "$SPID")
    m0=$(machine_ticks)
    "$LOAD" post --url "$SURL" --file "$IWL" --token-file "$dir/admin.token" \
        --clients "$CLIENTS" --batch-lines "$BATCH_LINES" --label "$label" >"$WORK/post.json" &
    post_pid=$!
    PIDS+=("$post_pid")
    thread_sampler "$SPID" "$post_pid" "$WORK/threads.samples" &
    local sampler=$!
    wait "$post_pid" || { tail -20 "$SLOG" >&2; die "$label: posting failed"; }
    m1=$(machine_ticks)
    c1=$(cpu_s "$SPID")
    [ -n "$loop_pid" ] && q1=$(cpu_s "$loop_pid") && qcpu=$(calc "$q1 - $q0")
    wait "$sampler" || true
    post=$(cat "$WORK/post.json")
    threads=$(thread_cpu_by_class "$WORK/threads.before" "$WORK/threads.samples" "$(calc "$c1 - $c0")")
    ml=$(machine_load "$m0" "$m1" "$(calc "$c1 - $c0 + $(json_get "$post" client_cpu_s) + $qcpu")")
    if [ -n "$loop_pid" ]; then
        kill -TERM "$loop_pid" 2>/dev/null || true
        wait "$loop_pid" || warn "$label: the query loop reported errors: $(tail -3 "$WORK/loop.err")"
        loopj=$(cat "$WORK/loop.json")
        [ -n "$loopj" ] || loopj=null
    fi
    echo "$post" | jq -c --argjson loop "$loopj" --arg load "$ml" --argjson cpu "$(calc "$c1 - $c0")" \
        --argjson threads "$threads" --argjson qcpu "$qcpu" --argjson loaded "$loaded" \
        '. + {loaded: ($loaded == 1), query_loop: $loop, server_cpu_s: $cpu, server_cpu_s_by_thread: $threads, query_client_cpu_s: $qcpu, machine_busy_other: $load}' >>"$RESULTS"
    log "$label: $(json_get "$post" points_per_s) points/s, p99 $(json_get "$post" latency_ms_p99) ms${loop_pid:+, queries: $(json_get "$loopj" ok) ok, $(json_get "$loopj" status_429) refused (429)}; server CPU by thread $threads; machine busy/other % $ml"
    stop_process "$SPID"
    rm -rf "$dir"
}
for ((r = 1; r <= REPEATS; r++)); do
    # Alternate the order, so a drift of the machine does not favour one side.
    if ((r % 2)); then
        one_run "alone-$r" 0
        one_run "loaded-$r" 1
    else
        one_run "loaded-$r" 1
        one_run "alone-$r" 0
    fi
done

# ---- refusals --------------------------------------------------------------------------
RI_MED=- RI_P99=- RI_MAX=- RL_MED=- RL_P99=- RL_MAX=- COUNTED=- WITHIN=- REFUSAL_BODY='{"error":"not measured"}'
REFUSAL_LINES="" R_LOOP='{"ok":"-","status_429":"-","ms_p50":"-"}'
if [ "$REFUSALS" = 1 ]; then
    log "refusals: $REFUSAL_TRIES over-limit queries idle, $REFUSAL_TRIES under query load"
    RDIR=$WORK/refusal
    cp -a "$BASE" "$RDIR"
    rm -f "$RDIR/LOCK"
    start_stele "$RDIR"
    WITHIN=$(curl -sS -o "$WORK/within.json" -w '%{http_code}' --max-time "$CURL_MAX_S" -H "$LIMITED_AUTH" "$SURL$WITHIN_LIMIT")
    [ "$WITHIN" = 200 ] || warn "a query within the limit of tenant limited answered $WITHIN: $(head -c 300 "$WORK/within.json")"
    # refuse_n FILE: REFUSAL_TRIES over-limit queries, seconds per line into FILE; checks 422.
    refuse_n() {
        local f=$1 i line code
        : >"$f"
        for ((i = 0; i < REFUSAL_TRIES; i++)); do
            line=$(curl -sS -o "$WORK/refusal.body" -w '%{http_code} %{time_total}' --max-time "$CURL_MAX_S" \
                -H "$LIMITED_AUTH" "$SURL$OVER_LIMIT") || die "refusal request failed"
            code=${line%% *}
            [ "$code" = 422 ] || die "the over-limit query answered $code, expected 422: $(head -c 300 "$WORK/refusal.body")"
            echo "${line#* }" >>"$f"
        done
    }
    refuse_n "$WORK/refusal.idle"
    REFUSAL_BODY=$(cat "$WORK/refusal.body")
    "$QLOAD" loop --url "$SURL" --token-file "$RDIR/admin.token" --target "$HEAVY_B" --target "$HEAVY_C" \
        --clients "$QUERY_CLIENTS" --seconds "$LOOP_MAX_S" --label refusal-load >"$WORK/loop.json" 2>>"$WORK/loop.err" &
    LOOP_PID=$!
    PIDS+=("$LOOP_PID")
    sleep "$LOOP_LEAD_S"
    refuse_n "$WORK/refusal.loaded"
    kill -TERM "$LOOP_PID" 2>/dev/null || true
    wait "$LOOP_PID" || warn "refusal-load: the query loop reported errors"
    R_LOOP=$(cat "$WORK/loop.json")
    METRICS=$(curl -sS -H "$AUTH" "$SURL/metrics")
    COUNTED=$(echo "$METRICS" | awk '$1 == "stele_refusals_total{tenant=\"limited\",reason=\"samples\"}" {print $2}')
    COUNTED=${COUNTED:-0}
    REFUSAL_LINES=$(echo "$METRICS" | grep '^stele_refusals_total' || true)
    stop_process "$SPID"
    read -r RI_MED RI_P99 RI_MAX <<<"$(stats_ms "$WORK/refusal.idle")"
    read -r RL_MED RL_P99 RL_MAX <<<"$(stats_ms "$WORK/refusal.loaded")"
    echo "{\"mode\":\"refusal\",\"tries\":$REFUSAL_TRIES,\"idle_ms\":{\"p50\":$RI_MED,\"p99\":$RI_P99,\"max\":$RI_MAX},\"loaded_ms\":{\"p50\":$RL_MED,\"p99\":$RL_P99,\"max\":$RL_MAX},\"counted\":$COUNTED,\"expected\":$((2 * REFUSAL_TRIES)),\"within_limit_status\":$WITHIN,\"loop\":$R_LOOP,\"body\":$(echo "$REFUSAL_BODY" | jq -c .)}" >>"$RESULTS"
    [ "$COUNTED" -ge $((2 * REFUSAL_TRIES)) ] ||
        warn "stele_refusals_total{tenant=\"limited\",reason=\"samples\"} is $COUNTED, $((2 * REFUSAL_TRIES)) refusals were sent"

fi

# ---- report --------------------------------------------------------------------------
runs() { jq -c "select(.mode == \"post\" and .loaded == $1)" "$RESULTS"; }
A_PPS=$(runs false | jq -r .points_per_s | median)
L_PPS=$(runs true | jq -r .points_per_s | median)
A_P99=$(runs false | jq -r .latency_ms_p99 | median)
L_P99=$(runs true | jq -r .latency_ms_p99 | median)
TPUT_PCT=$(calc "100 * $L_PPS / $A_PPS")
P99_X=$(calc "$L_P99 / $A_P99")
verdict() { awk -v v="$1" -v t="$2" -v op="$3" 'BEGIN {ok = op == ">=" ? v >= t : v <= t; print ok ? "met" : "NOT met"}'; }
{
    echo "### Isolation benchmark (issue 3)"
    echo
    echo "$(date -u +%Y-%m-%dT%H:%MZ), stele $REV, $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo); Stele defaults (query workers: $WORKERS) and config \`$(cat "$CONFIG")\`."
    echo "Each run: a fresh copy of a base directory holding $QUERY_POINTS points ($TRUCKS trucks, $(fmt "$(calc "$BASE_BYTES / 1048576")" %.1f) MiB on disk), then $INGEST_POINTS more points posted by $CLIENTS keep-alive clients in requests of $BATCH_LINES lines (acknowledged after fsync). Loaded runs: $QUERY_CLIENTS query clients loop over (b) \`max by (fleet) (max_over_time(readings_velocity[1h]))\` step 1h and (c) \`avg_over_time(diagnostics_fuel_state[10m])\` step 10m over the whole base range, from ${LOOP_LEAD_S} s before the ingestion to its end."
    echo
    echo "| run | points/s | ack latency p50 / p99 / max ms | server CPU s (query worker / http connections / other) | query client CPU s | queries answered (per s) / 429 | query latency p50 / p99 ms | machine busy % / unattributed % (other programs, kernel) |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
    jq -r 'select(.mode == "post" and .loaded != null) |
        [.label, (.points_per_s | tostring),
         "\(.latency_ms_p50) / \(.latency_ms_p99) / \(.latency_ms_max)",
         "\(.server_cpu_s) (\(.server_cpu_s_by_thread["query-worker"]) / \(.server_cpu_s_by_thread["http-connection"]) / \(.server_cpu_s_by_thread.other))",
         (if .query_loop then (.query_client_cpu_s | tostring) else "—" end),
         (if .query_loop then "\(.query_loop.ok) (\(.query_loop.ok_per_s)) / \(.query_loop.status_429)" else "—" end),
         (if .query_loop then "\(.query_loop.ms_p50) / \(.query_loop.ms_p99)" else "—" end),
         (.machine_busy_other | split(" ") | join(" / "))] | "| " + join(" | ") + " |"' "$RESULTS"
    echo
    echo "Medians: alone $(fmt "$A_PPS" %.0f) points/s, p99 $A_P99 ms; under query load $(fmt "$L_PPS" %.0f) points/s, p99 $L_P99 ms."
    echo "Throughput under load: $(fmt "$TPUT_PCT" %.1f) % of alone (target ≥ 90 %: $(verdict "$TPUT_PCT" 90 '>=')); p99 under load: $(fmt "$P99_X" %.2f) × alone (target ≤ 1.5×: $(verdict "$P99_X" 1.5 '<='))."
    if [ -n "$WORKER_POLICY" ]; then
        echo
        echo "**Experiment: WORKER_POLICY=$WORKER_POLICY** — Stele's query worker threads were moved to SCHED_$(echo "$WORKER_POLICY" | tr '[:lower:]' '[:upper:]') with chrt after each start (not Stele's own behaviour)."
    fi
    if [ "$REFUSALS" != 1 ]; then
        echo
        echo "Refusals not measured (REFUSALS=0)."
    else
        echo
        echo "Over-limit query (tenant \`limited\`, max_samples_per_query $LIMIT_SAMPLES; \`max_over_time(readings_velocity[1h])\` step 1h over the base range), $REFUSAL_TRIES tries each with curl, a new connection per try, \`%{time_total}\`:"
        echo
        echo "| server state | median ms | p99 ms | max ms | target < 5 ms (median) |"
        echo "|---|---:|---:|---:|---|"
        echo "| idle | $RI_MED | $RI_P99 | $RI_MAX | $(verdict "$RI_MED" 5 '<=') |"
        echo "| $QUERY_CLIENTS clients running (b)/(c) | $RL_MED | $RL_P99 | $RL_MAX | $(verdict "$RL_MED" 5 '<=') |"
        echo
        echo "Answer: 422 \`$(echo "$REFUSAL_BODY" | jq -r .error)\`. A query within the limit from the same tenant answered $WITHIN."
        echo "/metrics after the $((2 * REFUSAL_TRIES)) refusals:"
        echo '```'
        echo "$REFUSAL_LINES"
        echo '```'
        echo "Query clients meanwhile: $(json_get "$R_LOOP" ok) answered, $(json_get "$R_LOOP" status_429) refused with 429, latency p50 $(json_get "$R_LOOP" ms_p50) ms."
    fi
} >"$OUT/isolation.md"
cat "$OUT/isolation.md"
