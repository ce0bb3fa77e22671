#!/usr/bin/env bash
# query.sh — the query benchmark of issue 3: Stele against VictoriaMetrics on the same
# TSBS-"iot"-like data, in the same run, one server after the other (never both at once).
#
# Design: the workload is generated once (build/bench/ingest_load gen: 1,000 trucks,
# 10 M points, one tick per 10 s, so ~2.8 h of data) with its first tick on a whole hour
# at least 10 minutes in the past, so that every query window lies in the past (no
# server special-cases "now") and hourly steps fall on hour boundaries. The same file is
# posted to each server, which is then flushed (Stele: POST /api/v1/admin/flush and a wait
# until its block count holds still; VictoriaMetrics: /internal/force_flush every 5 s
# until its directory size holds still). Then a fixed list of queries is timed with
# build/bench/query_load time: WARMUP untimed runs, RUNS timed runs, sequential on one
# keep-alive connection; median and p90 in ms, end to end (request sent → body received).
#
# Fairness choices, each stated in the report:
# - Query times sit 5 s after a sample tick (data ticks are whole 10 s): no sample lies on
#   a window boundary, so Prometheus 2.x (windows closed at both ends — Stele copies it)
#   and VictoriaMetrics (left-open windows) select the same samples.
# - VictoriaMetrics gets nocache=1 on every query: it otherwise answers a repeated range
#   query from its rollup result cache, and this benchmark times evaluation, not a cache.
#   Its start/end are not re-aligned then (checked), so both evaluate the same steps.
# - Both servers run with their defaults (Stele: query_threads = cores - 1 = 1 worker on
#   this 2-core box, by design, to leave a core to ingestion; VictoriaMetrics uses every
#   core for one query). Server CPU ms per query is reported next to the wall time.
#
# Every answer is kept and compared (query_load compare): same number of series, same
# label sets (ignoring __name__), same timestamps, values within REL_TOL; a difference
# prints a WARNING with details. Differences with a known semantic cause are labelled.
#
# Knobs (environment): TRUCKS (1000), POINTS (10000000), CLIENTS (2 posters),
# BATCH_LINES (5000), RUNS (20), WARMUP (2), REL_TOL (1e-6), VM_SETTLE_MAX (60 s),
# SETTLE_MAX (60 s for Stele's blocks), PROFILE (0; 1 records perf on Stele during
# PROFILE_RUNS more runs of every query, and reports where the time goes), PROFILE_RUNS
# (3), PROFILE_HZ (499), KEEP (0: keep the work directory), WORKDIR, BUILD_DIR (build), BUILD (1).
# Results: a table on stdout, bench/out/query.md, bench/out/query.jsonl.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TRUCKS=${TRUCKS:-1000}
POINTS=${POINTS:-10000000}
CLIENTS=${CLIENTS:-2}
BATCH_LINES=${BATCH_LINES:-5000}
RUNS=${RUNS:-20}
WARMUP=${WARMUP:-2}
REL_TOL=${REL_TOL:-1e-6}
VM_SETTLE_MAX=${VM_SETTLE_MAX:-60}
SETTLE_MAX=${SETTLE_MAX:-60}
PROFILE=${PROFILE:-0}
PROFILE_RUNS=${PROFILE_RUNS:-3}
PROFILE_HZ=${PROFILE_HZ:-499}
KEEP=${KEEP:-0}
BUILD=${BUILD:-1}
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
OUT=$ROOT/bench/out
# Bounds on every wait, so the script always ends by itself.
READY_TIMEOUT=120 # seconds for a server to answer
STOP_TIMEOUT=120  # seconds for a graceful stop (Stele flushes its head on SIGTERM)
# Samples are 10 s apart on whole multiples of 10 s (the generator's tick); query times
# sit this far after a tick, away from every window boundary.
TICK_S=10
OFFSET_S=5
# The data starts on a whole hour at least this long before now: no query touches the
# last minutes, where VictoriaMetrics hides data younger than -search.latencyOffset (30 s).
PAST_MARGIN_S=600

STELE=$BUILD_DIR/stele
LOAD=$BUILD_DIR/bench/ingest_load
QLOAD=$BUILD_DIR/bench/query_load
mkdir -p "$OUT"
WORK=${WORKDIR:-$(mktemp -d /tmp/stele-query.XXXXXX)}
mkdir -p "$WORK/answers"
RESULTS=$OUT/query.jsonl
: >"$RESULTS"

PIDS=() # servers and helpers we started; the exit trap ends exactly these
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
    done
    if [ "$KEEP" = 1 ]; then
        echo "query: work directory kept: $WORK" >&2
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

die() {
    echo "query: $*" >&2
    exit 1
}
log() { echo "query: $*" >&2; }
warn() { echo "query: WARNING: $*" >&2; }

# A loopback port nobody listens on (a race with other programs is possible; the server
# then fails to bind and we stop loudly).
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

# wait_status URL STATUS TIMEOUT_S PID: polls every 20 ms until URL answers STATUS.
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

# stop_process PID: SIGTERM, then wait (bounded) — SIGKILL if it does not stop.
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

# CPU seconds (user + system) of a process, all threads.
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"; }
# "busy total" jiffies of the whole machine, to show how loaded the box was.
machine_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat; }
# machine_load BEFORE AFTER OURS_CPU_S → "busy% other%": how busy all cores were, and
# the share no process of this run accounts for (other programs on a shared box).
machine_load() {
    echo "$1 $2 $3" | awk -v hz="$(getconf CLK_TCK)" '{
        t = $4 - $2; if (t <= 0) t = 1
        other = 100 * (($3 - $1) / hz - $5) / (t / hz); if (other < 0) other = 0
        printf "%.0f %.0f", 100 * ($3 - $1) / t, other}'
}
json_get() { echo "$1" | jq -r ".$2"; }
calc() { awk "BEGIN {printf \"%s\", $1}"; }
fmt() { awk -v v="$1" -v f="$2" 'BEGIN {printf f, v}'; }
metric_value() { echo "$1" | awk -v n="$2" '$1 == n {print $2; exit}'; }
uri() { jq -rn --arg v "$1" '$v|@uri'; }

# start_server stele|vm DIR LOG: starts the server on a free loopback port, sets SPID
# and SURL. A port taken between our probe and the bind (other programs share the box)
# is retried on another port, a few times.
start_server() {
    local kind=$1 dir=$2 logf=$3 port
    for _ in 1 2 3 4 5; do
        port=$(free_port) || exit 1
        SURL=http://127.0.0.1:$port
        : >"$logf"
        if [ "$kind" = stele ]; then
            "$STELE" serve --data "$dir" --http "127.0.0.1:$port" 2>>"$logf" &
        else
            victoria-metrics -storageDataPath="$dir" -httpListenAddr="127.0.0.1:$port" \
                -retentionPeriod=100y >>"$logf" 2>&1 &
        fi
        SPID=$!
        PIDS+=("$SPID")
        wait_status "$SURL/$([ "$kind" = stele ] && echo ready || echo health)" 200 \
            "$READY_TIMEOUT" "$SPID" && return 0
        wait "$SPID" 2>/dev/null || true
        grep -qi 'address already in use' "$logf" || break
        log "port $port was taken meanwhile; trying another"
    done
    tail -20 "$logf" >&2
    die "$kind did not start"
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
command -v victoria-metrics >/dev/null || die "victoria-metrics is not installed (apt-get install victoria-metrics)"
command -v jq >/dev/null || die "jq is not installed"
[ "$PROFILE" = 0 ] || command -v perf >/dev/null || die "PROFILE=1 needs perf"
REV=${STELE_REV:-$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)}
if [ -z "${STELE_REV:-}" ] && [ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no -- src include 2>/dev/null)" ]; then
    REV="$REV+dirty"
fi
VM_VERSION=$(dpkg-query -W -f='${Version}' victoria-metrics 2>/dev/null || echo unknown)

# ---- workload ------------------------------------------------------------------------
TICKS=$(((POINTS + TRUCKS * 10 - 1) / (TRUCKS * 10)))
SPAN_S=$(((TICKS - 1) * TICK_S)) # first to last sample
NOW_S=$(date +%s)
S0=$(((NOW_S - SPAN_S - PAST_MARGIN_S) / 3600 * 3600))
LAST=$((S0 + SPAN_S))
WL=$WORK/workload.lp
log "generating $POINTS points for $TRUCKS trucks into $WL, first tick $(date -u -d "@$S0" +%FT%TZ)"
GEN=$("$LOAD" gen --out "$WL" --trucks "$TRUCKS" --points "$POINTS" --start-ns "${S0}000000000")
echo "$GEN" >>"$RESULTS"
NPOINTS=$(json_get "$GEN" points)
sync

# ---- the queries ---------------------------------------------------------------------
# Range grids: the first step ends the first full window; the last is the first grid
# point at or after the last sample, so the whole data range is covered.
# range_target QUERY STEP_S WINDOW_S
range_target() {
    local q=$1 step=$2 win=$3 start n end
    start=$((S0 + win - TICK_S + OFFSET_S))
    n=$(((LAST + OFFSET_S - start + step - 1) / step))
    end=$((start + n * step))
    echo "/api/v1/query_range?query=$(uri "$q")&start=$start&end=$end&step=$step"
}
instant_target() { echo "/api/v1/query?query=$(uri "$1")&time=$((LAST + OFFSET_S))"; }
# Whole hours covering the data, for the count of all points.
COUNT_WINDOW_H=$(((SPAN_S + OFFSET_S + 3599) / 3600))
# The issue's count query, as written: valid MetricsQL, but PromQL (Prometheus 2.x and
# Stele) refuses it — count_over_time drops __name__, so the ten metrics of a truck
# collide ("vector cannot contain metrics with the same labelset"). It is checked
# separately below; the timed count sums one count_over_time per metric instead.
ISSUE_COUNT_QUERY="sum(count_over_time({__name__=~\"readings_.*|diagnostics_.*\"}[${COUNT_WINDOW_H}h]))"
COUNT_QUERY=""
for f in latitude longitude elevation velocity heading grade fuel_consumption; do
    COUNT_QUERY="${COUNT_QUERY:+$COUNT_QUERY + }sum(count_over_time(readings_${f}[${COUNT_WINDOW_H}h]))"
done
for f in fuel_state current_load status; do
    COUNT_QUERY="$COUNT_QUERY + sum(count_over_time(diagnostics_${f}[${COUNT_WINDOW_H}h]))"
done

# name | description | compare mode (labels, by-value, shape) | target
QNAMES=()
QDESC=()
QMODE=()
QTARGET=()
add_query() {
    QNAMES+=("$1")
    QDESC+=("$2")
    QMODE+=("$3")
    QTARGET+=("$4")
}
add_query a_last "(a) last point per truck: readings_velocity, instant at the end" labels \
    "$(instant_target 'readings_velocity')"
add_query a_last_1h "(a') last_over_time(readings_velocity[1h]), instant at the end" labels \
    "$(instant_target 'last_over_time(readings_velocity[1h])')"
add_query b_fleet_max_1h "(b) max by (fleet) (max_over_time(readings_velocity[1h])), step 1h" labels \
    "$(range_target 'max by (fleet) (max_over_time(readings_velocity[1h]))' 3600 3600)"
add_query c_avg_fuel_10m "(c) avg_over_time(diagnostics_fuel_state[10m]), step 10m" labels \
    "$(range_target 'avg_over_time(diagnostics_fuel_state[10m])' 600 600)"
add_query d_rate_load_5m "(d) rate(diagnostics_current_load[5m]), step 1m" shape \
    "$(range_target 'rate(diagnostics_current_load[5m])' 60 300)"
add_query e_topk5_load "(e) topk(5, diagnostics_current_load), instant at the end" by-value \
    "$(instant_target 'topk(5, diagnostics_current_load)')"
add_query f_truck_max_1h "(f) max_over_time(readings_velocity[1h]), step 1h" labels \
    "$(range_target 'max_over_time(readings_velocity[1h])' 3600 3600)"
add_query g_count_all "(g) count of all points: sum of count_over_time(m[${COUNT_WINDOW_H}h]) over the 10 metrics" labels \
    "$(instant_target "$COUNT_QUERY")"
NQ=${#QNAMES[@]}

# time_queries SERVER URL PID [TOKEN_FILE] [EXTRA_PARAMS]: times every query, keeps the
# answers in $WORK/answers/SERVER.NAME.json, one JSON line per query in $RESULTS.
time_queries() {
    local server=$1 url=$2 pid=$3 tf=${4:-} extra=${5:-} i r c0 c1 args=()
    [ -n "$tf" ] && args=(--token-file "$tf")
    for ((i = 0; i < NQ; i++)); do
        c0=$(cpu_s "$pid")
        r=$("$QLOAD" time --url "$url" "${args[@]}" --target "${QTARGET[$i]}$extra" \
            --runs "$RUNS" --warmup "$WARMUP" --label "$server.${QNAMES[$i]}" \
            --save "$WORK/answers/$server.${QNAMES[$i]}.json") ||
            die "$server: query ${QNAMES[$i]} failed"
        c1=$(cpu_s "$pid")
        r=$(echo "$r" | jq -c --arg s "$server" --arg q "${QNAMES[$i]}" \
            --argjson cpu "$(calc "1000 * ($c1 - $c0) / ($RUNS + $WARMUP)")" \
            '. + {server: $s, query: $q, server_cpu_ms_per_query: $cpu}')
        echo "$r" >>"$RESULTS"
        log "$server ${QNAMES[$i]}: median $(json_get "$r" ms_p50) ms, p90 $(json_get "$r" ms_p90) ms, $(json_get "$r" series) series"
    done
}

# ---- Stele ---------------------------------------------------------------------------
log "stele: load"
SDIR=$WORK/stele-data
SLOG=$WORK/stele.log
start_server stele "$SDIR" "$SLOG"
STOK=$SDIR/admin.token
AUTH="Authorization: Token $(cat "$STOK")"
S_POST=$("$LOAD" post --url "$SURL" --file "$WL" --token-file "$STOK" --clients "$CLIENTS" \
    --batch-lines "$BATCH_LINES" --label stele) || { tail -20 "$SLOG" >&2; die "posting to stele failed"; }
echo "$S_POST" >>"$RESULTS"
curl -sS --fail-with-body -o /dev/null -X POST -H "$AUTH" "$SURL/api/v1/admin/flush" || die "stele flush failed"
# Compactions run in the background after a flush: wait until the block count and the
# compaction counter hold still for 3 s (bounded), so no merge runs while we time.
S_PREV=""
S_STABLE=0
for ((w = 0; w < SETTLE_MAX; w++)); do
    M=$(curl -sS -H "$AUTH" "$SURL/metrics")
    S_NOW="$(metric_value "$M" stele_tsdb_blocks) $(metric_value "$M" stele_tsdb_compactions_total)"
    if [ "$S_NOW" = "$S_PREV" ]; then
        S_STABLE=$((S_STABLE + 1))
        [ "$S_STABLE" -ge 3 ] && break
    else
        S_STABLE=0
    fi
    S_PREV=$S_NOW
    sleep 1
done
S_METRICS=$(curl -sS -H "$AUTH" "$SURL/metrics")
S_BLOCKS=$(metric_value "$S_METRICS" stele_tsdb_blocks)
S_BLOCK_POINTS=$(metric_value "$S_METRICS" stele_tsdb_block_points)
S_HEAD_POINTS=$(metric_value "$S_METRICS" stele_tsdb_head_points)
log "stele: $S_BLOCKS blocks, $S_BLOCK_POINTS points in blocks, $S_HEAD_POINTS in the head"

# The issue's count query as written: PromQL semantics refuse it (see above).
S_ISSUE_COUNT=$(curl -sS -H "$AUTH" -w ' %{http_code}' "$SURL$(instant_target "$ISSUE_COUNT_QUERY")")
log "stele: issue's count query as written → ${S_ISSUE_COUNT##* }: ${S_ISSUE_COUNT% *}"

log "stele: timing $NQ queries, $RUNS runs each after $WARMUP warm-ups"
S_CPU0=$(cpu_s "$SPID")
M0=$(machine_ticks)
time_queries stele "$SURL" "$SPID" "$STOK"
M1=$(machine_ticks)
S_LOAD=$(machine_load "$M0" "$M1" "$(calc "$(cpu_s "$SPID") - $S_CPU0")")
S_RSS=$(awk '/^VmHWM:/ {print $2}' "/proc/$SPID/status")

# Optional profile: more runs of every query under perf (not the timed runs), one
# recording per query: self time by library (exact whatever the unwinding), and the
# JSON encoder's inclusive share, which needs DWARF call graphs (libc and libzstd have
# no frame pointers).
P_TEXT=""
if [ "$PROFILE" = 1 ]; then
    log "stele: profiling $PROFILE_RUNS more runs of every query with perf record"
    : >"$OUT/query-perf.txt"
    # share SYMBOL REPORT → its inclusive percentage in a perf report (0 when absent)
    share() { awk -v s="$1" '$4 == s {print $1 + 0; found = 1; exit} END {if (!found) print 0}' "$2"; }
    # lib PREFIX DSO_REPORT → self percentage of the libraries whose name starts so
    lib() { awk -v s="$1" 'index($2, s) == 1 {t += $1} END {print t + 0}' "$2"; }
    P_TEXT="| query | median ms under perf | libzstd (decompression) % | libxxhash (checksums) % | libc % | stele % | kernel % | JSON answer, inclusive % |"
    P_TEXT+=$'\n'"|---|---:|---:|---:|---:|---:|---:|---:|"
    for ((i = 0; i < NQ; i++)); do
        n=${QNAMES[$i]}
        perf record -F "$PROFILE_HZ" --call-graph dwarf,8192 -p "$SPID" -o "$WORK/perf.$n.data" >/dev/null 2>&1 &
        PERF=$!
        PIDS+=("$PERF")
        sleep 0.5
        "$QLOAD" time --url "$SURL" --token-file "$STOK" --target "${QTARGET[$i]}" \
            --runs "$PROFILE_RUNS" --warmup 0 --label "profile.$n" >>"$WORK/profile.jsonl"
        kill -INT "$PERF"
        wait "$PERF" 2>/dev/null || true
        perf report -i "$WORK/perf.$n.data" --stdio --children --sort symbol -g none 2>/dev/null |
            grep -v '^#' | grep -v '^$' >"$WORK/perf.$n.txt" || true
        perf report -i "$WORK/perf.$n.data" --stdio --no-children --sort dso -g none 2>/dev/null |
            grep -v '^#' | grep -v '^$' | awk '{print $1, $2}' >"$WORK/perf.$n.dso" || true
        P_TEXT+=$'\n'"| $n | $(tail -1 "$WORK/profile.jsonl" | jq -r .ms_p50) | $(lib libzstd "$WORK/perf.$n.dso") | $(lib libxxhash "$WORK/perf.$n.dso") | $(lib libc. "$WORK/perf.$n.dso") | $(lib stele "$WORK/perf.$n.dso") | $(lib '[kernel' "$WORK/perf.$n.dso") | $(share stele_query_result_json "$WORK/perf.$n.txt") |"
        { echo "=== $n: ${QDESC[$i]}"; cat "$WORK/perf.$n.dso"; head -40 "$WORK/perf.$n.txt"; } >>"$OUT/query-perf.txt"
        rm -f "$WORK/perf.$n.data"
    done
fi
stop_process "$SPID"
rm -rf "$SDIR"

# ---- VictoriaMetrics -----------------------------------------------------------------
log "victoria-metrics: load"
VDIR=$WORK/vm-data
VLOG=$WORK/vm.log
start_server vm "$VDIR" "$VLOG"
VURL=$SURL
VPID=$SPID
V_POST=$("$LOAD" post --url "$VURL" --file "$WL" --clients "$CLIENTS" --batch-lines "$BATCH_LINES" \
    --label victoria-metrics) || { tail -20 "$VLOG" >&2; die "posting to victoria-metrics failed"; }
echo "$V_POST" >>"$RESULTS"
# VictoriaMetrics buffers rows in memory and merges parts in the background: flush, then
# re-flush every 5 s until the directory size holds still twice (bounded).
curl -sS --fail -o /dev/null "$VURL/internal/force_flush"
V_PREV=-1
V_STABLE=0
V_WAITED=0
while [ "$V_WAITED" -lt "$VM_SETTLE_MAX" ]; do
    sleep 5
    V_WAITED=$((V_WAITED + 5))
    curl -sS --fail -o /dev/null "$VURL/internal/force_flush"
    V_SIZE=$(du -sb "$VDIR" | cut -f1)
    if [ "$V_SIZE" = "$V_PREV" ]; then
        V_STABLE=$((V_STABLE + 1))
        [ "$V_STABLE" -ge 2 ] && break
    else
        V_STABLE=0
    fi
    V_PREV=$V_SIZE
done
log "victoria-metrics: settled after ${V_WAITED} s"
V_ISSUE_COUNT=$(curl -sS -w ' %{http_code}' "$VURL$(instant_target "$ISSUE_COUNT_QUERY")&nocache=1")
log "victoria-metrics: issue's count query as written → ${V_ISSUE_COUNT##* }: ${V_ISSUE_COUNT% *}"
log "victoria-metrics: timing $NQ queries, $RUNS runs each after $WARMUP warm-ups"
V_CPU0=$(cpu_s "$VPID")
M0=$(machine_ticks)
time_queries vm "$VURL" "$VPID" "" "&nocache=1"
M1=$(machine_ticks)
V_LOAD=$(machine_load "$M0" "$M1" "$(calc "$(cpu_s "$VPID") - $V_CPU0")")
V_RSS=$(awk '/^VmHWM:/ {print $2}' "/proc/$VPID/status")
stop_process "$VPID"
rm -rf "$VDIR"

# ---- compare the answers -------------------------------------------------------------
WARNINGS=()
declare -A CHECK
for ((i = 0; i < NQ; i++)); do
    n=${QNAMES[$i]}
    mode=${QMODE[$i]}
    args=()
    [ "$mode" = by-value ] && args=(--by-value)
    C=$("$QLOAD" compare --a "$WORK/answers/stele.$n.json" --b "$WORK/answers/vm.$n.json" \
        --rel-tol "$REL_TOL" --label "$n" "${args[@]}" 2>"$WORK/compare.$n.txt") ||
        die "comparing the answers to $n failed: $(cat "$WORK/compare.$n.txt")"
    echo "$C" | jq -c --arg q "$n" '. + {query: $q}' >>"$RESULTS"
    series="$(json_get "$C" series_a)/$(json_get "$C" series_b)"
    shape_ok=$([ "$(json_get "$C" series_a)" = "$(json_get "$C" series_b)" ] &&
        [ "$(json_get "$C" series_only_a)$(json_get "$C" series_only_b)" = 00 ] &&
        [ "$(json_get "$C" points_only_a)$(json_get "$C" points_only_b)" = 00 ] && echo 1 || echo 0)
    if [ "$(json_get "$C" equal)" = true ]; then
        CHECK[$n]="equal ($series series, $(json_get "$C" points_matched) points, max rel diff $(json_get "$C" max_rel_diff))"
    elif [ "$mode" = shape ] && [ "$shape_ok" = 1 ]; then
        # rate() of a gauge: Prometheus (and Stele) count every decrease as a counter
        # reset; VictoriaMetrics treats a drop under 1/8 of the value as jitter, uses the
        # sample before the window and does not extrapolate. Same series and steps are
        # the check; the values cannot agree.
        CHECK[$n]="same series and steps ($series series, $(json_get "$C" points_matched) points); values differ as expected (rate of a gauge: MetricsQL counter-reset heuristics), max rel diff $(json_get "$C" max_rel_diff)"
    else
        CHECK[$n]="DIFFERENT: $series series, only-stele/only-vm series $(json_get "$C" series_only_a)/$(json_get "$C" series_only_b), points $(json_get "$C" points_a)/$(json_get "$C" points_b), $(json_get "$C" values_differing) values beyond $REL_TOL (max rel diff $(json_get "$C" max_rel_diff))"
        WARNINGS+=("$n: ${CHECK[$n]}")
        warn "$n: ${CHECK[$n]}"
        sed 's/^/    /' "$WORK/compare.$n.txt" >&2
    fi
done
# topk: Prometheus 2.x answers an instant topk highest first (its engine keeps the
# aggregation's order for instant queries), and so does VictoriaMetrics; dashboards
# showing the answer as a table rely on it.
for s in stele vm; do
    if ! jq -e '[.data.result[].value[1] | tonumber] | . == (sort | reverse)' \
        "$WORK/answers/$s.e_topk5_load.json" >/dev/null; then
        order=$(jq -c '[.data.result[].value[1]]' "$WORK/answers/$s.e_topk5_load.json")
        WARNINGS+=("$s answers topk(5, …) in the order $order, not highest first as Prometheus does")
        warn "${WARNINGS[-1]}"
    fi
done
# The count must be every point posted, on both sides.
for s in stele vm; do
    got=$(jq -r '.data.result[0].value[1]' "$WORK/answers/$s.g_count_all.json")
    if [ "$got" != "$NPOINTS" ]; then
        WARNINGS+=("$s counts $got points, $NPOINTS were posted")
        warn "$s counts $got points, $NPOINTS were posted"
    fi
done

# ---- report --------------------------------------------------------------------------
row() { # row NAME → one table row from the JSON lines
    local n=$1 s v
    s=$(jq -c --arg q "$n" 'select(.mode == "time" and .server == "stele" and .query == $q)' "$RESULTS")
    v=$(jq -c --arg q "$n" 'select(.mode == "time" and .server == "vm" and .query == $q)' "$RESULTS")
    printf '| %s | %s | %s / %s | %s / %s | %s | %s / %s | %s |\n' "$n" "$(json_get "$s" series)" \
        "$(fmt "$(json_get "$s" ms_p50)" %.1f)" "$(fmt "$(json_get "$s" ms_p90)" %.1f)" \
        "$(fmt "$(json_get "$v" ms_p50)" %.1f)" "$(fmt "$(json_get "$v" ms_p90)" %.1f)" \
        "$(fmt "$(calc "$(json_get "$s" ms_p50) / $(json_get "$v" ms_p50)")" %.2f)" \
        "$(fmt "$(json_get "$s" server_cpu_ms_per_query)" %.0f)" \
        "$(fmt "$(json_get "$v" server_cpu_ms_per_query)" %.0f)" "$(json_get "$s" bytes)"
}
{
    echo "### Query benchmark (issue 3)"
    echo
    echo "$(date -u +%Y-%m-%dT%H:%MZ), stele $REV, VictoriaMetrics $VM_VERSION, $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)."
    echo "Data: $TRUCKS trucks, $NPOINTS points ($TICKS ticks of 10 s from $(date -u -d "@$S0" +%FT%TZ) to $(date -u -d "@$LAST" +%FT%TZ), $((TRUCKS * 10)) series), the same file posted to each server, then flushed and settled (Stele: $S_BLOCKS blocks, $S_HEAD_POINTS points left in the head; VictoriaMetrics: settled after ${V_WAITED} s)."
    echo "Each query: $WARMUP warm-ups, then $RUNS timed runs, sequential on one keep-alive connection; wall time from request to the last body byte. VictoriaMetrics with nocache=1 (no rollup result cache). Instant queries at the last sample + ${OFFSET_S} s; range queries from the end of the first full window to the first step after the last sample."
    echo
    echo "| query | series | Stele median / p90 ms | VM median / p90 ms | Stele/VM (median) | server CPU ms per query Stele / VM | answer bytes (Stele) |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    for ((i = 0; i < NQ; i++)); do row "${QNAMES[$i]}"; done
    echo
    echo "Queries:"
    echo
    for ((i = 0; i < NQ; i++)); do
        echo "- \`${QNAMES[$i]}\` ${QDESC[$i]} — answers: ${CHECK[${QNAMES[$i]}]}"
    done
    echo
    echo "The issue's count query as written, \`$ISSUE_COUNT_QUERY\`: Stele answers ${S_ISSUE_COUNT##* } \`$(echo "${S_ISSUE_COUNT% *}" | jq -r '.error // .status' 2>/dev/null)\` (as Prometheus 2.x does: count_over_time drops the metric name, so a truck's ten metrics collide); VictoriaMetrics answers ${V_ISSUE_COUNT##* } with $(echo "${V_ISSUE_COUNT% *}" | jq -r '.data.result[0].value[1] // .error' 2>/dev/null). Row g times the PromQL-valid form, one count_over_time per metric summed."
    echo
    echo "Machine while timing (busy % of all cores / share no process of this run explains: other programs, kernel): Stele ${S_LOAD// / \/ }, VictoriaMetrics ${V_LOAD// / \/ }. Peak RSS: Stele $(fmt "$(calc "$S_RSS / 1024")" %.0f) MiB, VictoriaMetrics $(fmt "$(calc "$V_RSS / 1024")" %.0f) MiB."
    echo "Ingest on the way (not the subject here): Stele $(json_get "$S_POST" points_per_s) points/s, VictoriaMetrics $(json_get "$V_POST" points_per_s) points/s."
    if [ "${#WARNINGS[@]}" -gt 0 ]; then
        echo
        echo "**Warnings:**"
        for w in "${WARNINGS[@]}"; do echo "- $w"; done
    fi
    if [ -n "$P_TEXT" ]; then
        echo
        echo "Where Stele's time goes (perf, $PROFILE_RUNS extra runs per query at $PROFILE_HZ Hz; shares of the server's samples: self time by library, and the JSON encoder inclusive; top symbols per query in bench/out/query-perf.txt):"
        echo
        echo "$P_TEXT"
    fi
} >"$OUT/query.md"
cat "$OUT/query.md"
