#!/usr/bin/env bash
# tiers.sh — the downsampling benchmark of issue 4: what the tiers buy (query speed over a
# year, bytes on disk) and what they cost (ingestion throughput while they are built).
#
# Design, in five parts; (a)-(d) share one data directory, (e) uses a fresh one per run.
#
# (a) Data. build/bench/tier_gen writes DAYS (365) of INTERVAL_S (10) s samples for SERIES
#     (200) IoT series (gauges with decimals: temperature, fuel level, battery voltage;
#     counters with weekly resets: messages, energy) straight through the C API into a
#     store configured with TIERS (raw:400d,1m:400d,1h:10y), flushing every simulated day
#     and building the tiers after each flush. Raw and 1m keep 400 days, not 1y: the
#     data reaches back 365 days and an hour or two, and retentions may not shrink from
#     tier to tier (stele_tiers_parse), so 1m:1y would cap raw at 1y. The last sample
#     lies just before a whole hour at least an hour before now (END), the first DAYS
#     earlier, so every query below lies in the past and its steps fall on hour
#     boundaries — and on samples, the window-boundary case the tiers must get right.
# (b) Serve. `stele serve --tiers TIERS` on that directory, with query limits raised
#     (a raw year of one metric is more than the default 100 M samples per query); we
#     wait (bounded) until the block count holds still and every tier's build lag is 0.
# (c) Queries over the whole span, each with resolution=auto, =1m and =raw, timed with
#     curl (WARMUP untimed, then RUNS timed requests, medians; RAW_RUNS for raw, the slow
#     one; curl keeps every answer's X-Stele-Resolution header, what answered, and has
#     no 60 s cap as query_load has): max_over_time(m[1h]) step 1h and
#     avg_over_time(m[1d]) step 1d on the temperature gauge (the issue's two), and
#     sum by (site) (increase(messages_total[1d])) step 1d (counter resets, extrapolation
#     and an aggregation over tier answers). Every tier answer is compared with the raw
#     answer by build/bench/query_load compare: same series, same timestamps, values
#     within REL_TOL (1e-9) relative; a difference prints its first cases. Speed-up =
#     raw median / auto median (target >= 50x).
# (d) Bytes: `du -sb` of DATA/blocks (raw) against DATA/tiers/<resolution> after (a)
#     (target: tiers <= 5% of raw). 1m buckets of 10 s data hold 6 samples in 10 fields,
#     so they cannot be 5% of raw; the table shows the 1h tier alone too, which is what
#     a raw:400d,1h:10y store keeps (the same buckets; GEN_1H_ONLY=1 generates that
#     store as well and measures it instead of assuming).
# (e) Ingestion cost: the ingest benchmark's workload (build/bench/ingest_load gen: TRUCKS
#     trucks, POINTS points of line protocol over HTTP with CLIENTS posters, fsync per
#     acknowledgement) posted to `stele serve --tiers INGEST_TIERS` (raw:30d,1m:1y,1h:10y)
#     and to `--tiers INGEST_BASE_TIERS` (raw:30d: no tiers), both with the default head
#     (--head-max-points INGEST_HEAD_MAX, 4,000,000) and POINTS (20 M) points so that
#     several flushes, and tier builds after them, happen during the run (a much smaller
#     head cannot keep up with ~4 M points/s with or without tiers: it fills twice over
#     while one flush runs and writes get 503, which ingest_load does not retry); ROUNDS (3) interleaved rounds (ABBA order against
#     drift), fresh directory each, medians (target: with tiers >= 90% of without).
#     After each run with tiers we flush and time how long the builder needs to catch
#     up (lag 0), so work deferred past the run is seen.
#
# Knobs (environment): DAYS (365), SERIES (200), INTERVAL_S (10), SEED (42), TIERS,
# RUNS (5), RAW_RUNS (3), WARMUP (1), REL_TOL (1e-9), QUERY_MAX_S (300), GEN_1H_ONLY (0),
# INGEST (1), TRUCKS (1000), POINTS (20000000), CLIENTS (2), BATCH_LINES (5000), ROUNDS
# (3), INGEST_TIERS, INGEST_BASE_TIERS, INGEST_HEAD_MAX (4000000), SETTLE_MAX (300 s),
# GEN_TIMEOUT (3600 s), KEEP (0: keep the work directory), WORKDIR, BUILD_DIR (build),
# BUILD (1). A quick run: DAYS=7 SERIES=20 RUNS=3 POINTS=2000000 ROUNDS=1.
# Results: a table on stdout, bench/out/tiers.md, bench/out/tiers.jsonl.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DAYS=${DAYS:-365}
SERIES=${SERIES:-200}
INTERVAL_S=${INTERVAL_S:-10}
SEED=${SEED:-42}
TIERS=${TIERS:-raw:400d,1m:400d,1h:10y}
RUNS=${RUNS:-5}
# A raw year takes tens of seconds per query; 3 runs give a median without an hour.
RAW_RUNS=${RAW_RUNS:-3}
WARMUP=${WARMUP:-1}
REL_TOL=${REL_TOL:-1e-9}
GEN_1H_ONLY=${GEN_1H_ONLY:-0}
INGEST=${INGEST:-1}
TRUCKS=${TRUCKS:-1000}
POINTS=${POINTS:-20000000}
CLIENTS=${CLIENTS:-2}
BATCH_LINES=${BATCH_LINES:-5000}
ROUNDS=${ROUNDS:-3}
INGEST_TIERS=${INGEST_TIERS:-raw:30d,1m:1y,1h:10y}
INGEST_BASE_TIERS=${INGEST_BASE_TIERS:-raw:30d}
INGEST_HEAD_MAX=${INGEST_HEAD_MAX:-4000000}
KEEP=${KEEP:-0}
BUILD=${BUILD:-1}
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
OUT=$ROOT/bench/out
# Bounds on every wait, so the script always ends by itself.
READY_TIMEOUT=120                # seconds for a server to answer /ready
STOP_TIMEOUT=120                 # seconds for a graceful stop (the head is flushed)
SETTLE_MAX=${SETTLE_MAX:-300}    # seconds for blocks and tier builds to settle
GEN_TIMEOUT=${GEN_TIMEOUT:-3600} # seconds for tier_gen (a full year takes minutes)
QUERY_MAX_S=${QUERY_MAX_S:-300}  # seconds for one query (the served limit is 300 s too)
CATCHUP_MAX=120                  # seconds for the tier builder to catch up after ingest
# Query limits of the served store: one raw query reads a year of every series of a
# metric (SERIES / 5 × DAYS × 8640 samples: 126 M at the defaults), over the default
# 100 M; 10^10 samples and 8 GiB let it run, 300 s bounds it (as QUERY_MAX_S does).
QUERY_LIMITS='{"max_samples_per_query": 10000000000, "max_query_memory": 8589934592, "query_timeout": "300s"}'
# Whole hours between the last sample's hour and now: no query touches the present.
PAST_MARGIN_S=3600
# Targets, for the verdict column.
TARGET_SPEEDUP=50
TARGET_BYTES_PCT=5
TARGET_INGEST_PCT=90

STELE=$BUILD_DIR/stele
GEN=$BUILD_DIR/bench/tier_gen
LOAD=$BUILD_DIR/bench/ingest_load
QLOAD=$BUILD_DIR/bench/query_load
mkdir -p "$OUT"
WORK=${WORKDIR:-$(mktemp -d /tmp/stele-tiers.XXXXXX)}
mkdir -p "$WORK/answers"
RESULTS=$OUT/tiers.jsonl
: >"$RESULTS"

PIDS=() # servers and helpers we started; the exit trap ends exactly these
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
    done
    if [ "$KEEP" = 1 ]; then
        echo "tiers: work directory kept: $WORK" >&2
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

die() {
    echo "tiers: $*" >&2
    exit 1
}
log() { echo "tiers: $*" >&2; }
warn() { echo "tiers: WARNING: $*" >&2; }

# A loopback port nobody listens on (a race with other programs is possible; the server
# then fails to bind and we retry on another).
free_port() {
    local p
    for _ in $(seq 1 100); do
        p=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    die "no free port found"
}

# wait_status URL STATUS TIMEOUT_S PID: polls every 20 ms until URL answers STATUS;
# fails if PID dies or the time runs out.
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
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 $((STOP_TIMEOUT * 10))); do
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
json_get() { echo "$1" | jq -r ".$2"; }
calc() { awk "BEGIN {printf \"%s\", $1}"; }
fmt() { awk -v v="$1" -v f="$2" 'BEGIN {printf f, v}'; }
uri() { jq -rn --arg v "$1" '$v|@uri'; }
# median of the numbers given as arguments (the lower middle for an even count)
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
metric_value() { # metric_value METRICS_TEXT NAME → value of an unlabelled metric
    echo "$1" | awk -v n="$2" '$1 == n {print $2; exit}'
}
tier_metric() { # tier_metric METRICS_TEXT NAME TIER → value of NAME{…tier="TIER"…}, or "-"
    echo "$1" | awk -v n="$2" -v t="tier=\"$3\"" \
        'index($1, n "{") == 1 && index($1, t) {print $2; f = 1; exit} END {if (!f) print "-"}'
}
# Largest stele_tier_build_lag_seconds over the tiers (0 when there is none).
max_tier_lag() {
    echo "$1" | awk 'index($1, "stele_tier_build_lag_seconds{") == 1 && $2 + 0 > m {m = $2 + 0}
        END {print m + 0}'
}
# Tier labels of a --tiers spec ("raw:400d,1m:1y,1h:10y" → "1m 1h").
tier_labels() { echo "$1" | tr ',' '\n' | cut -d: -f1 | grep -v '^raw$' | tr '\n' ' '; }
# Bytes of a tier's directory DATA/tiers/<resolution>; the name may be spelled as the
# label (1h) or in seconds (3600, 3600s): the first that exists, or 0.
tier_bytes() {
    local dir=$1 label=$2 secs n
    secs=$(calc "$(echo "$label" | sed 's/s$/*1/; s/m$/*60/; s/h$/*3600/; s/d$/*86400/')")
    for n in "$label" "$secs" "${secs}s"; do
        [ -d "$dir/tiers/$n" ] && { du -sb "$dir/tiers/$n" | cut -f1; return 0; }
    done
    echo 0
}
dir_bytes() { [ -d "$1" ] && du -sb "$1" | cut -f1 || echo 0; }

# start_stele DIR LOG ARGS...: starts `stele serve` on a free loopback port, sets SPID,
# SURL and AUTH. A port taken between our probe and the bind is retried elsewhere.
start_stele() {
    local dir=$1 logf=$2 port
    shift 2
    for _ in 1 2 3 4 5; do
        port=$(free_port) || exit 1
        SURL=http://127.0.0.1:$port
        : >"$logf"
        "$STELE" serve --data "$dir" --http "127.0.0.1:$port" "$@" 2>>"$logf" &
        SPID=$!
        PIDS+=("$SPID")
        if wait_status "$SURL/ready" 200 "$READY_TIMEOUT" "$SPID"; then
            AUTH="Authorization: Token $(cat "$dir/admin.token")"
            return 0
        fi
        kill -9 "$SPID" 2>/dev/null || true
        wait "$SPID" 2>/dev/null || true
        grep -qi 'address already in use' "$logf" || break
        log "port $port was taken meanwhile; trying another"
    done
    tail -20 "$logf" >&2
    die "stele serve $* did not become ready"
}
metrics() { curl -sS --max-time 30 -H "$AUTH" "$SURL/metrics"; }

# ---- build ---------------------------------------------------------------------------
if [ "$BUILD" = 1 ]; then
    log "building $STELE, $GEN, $LOAD and $QLOAD"
    cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build "$BUILD_DIR" -j 2 --target stele tier_gen ingest_load query_load >/dev/null
fi
for bin in "$STELE" "$GEN" "$LOAD" "$QLOAD"; do
    [ -x "$bin" ] || die "$bin missing (BUILD=0 needs it built)"
done
command -v jq >/dev/null || die "jq is not installed"
command -v timeout >/dev/null || die "timeout (coreutils) is not installed"
REV=${STELE_REV:-$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)}
if [ -z "${STELE_REV:-}" ] && [ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no -- src include 2>/dev/null)" ]; then
    REV="$REV+dirty"
fi

# ---- (a) data ------------------------------------------------------------------------
NOW_S=$(date +%s)
END=$(((NOW_S - PAST_MARGIN_S) / 3600 * 3600)) # a whole hour, at least an hour ago
S0=$((END - DAYS * 86400))
QDIR=$WORK/year
log "generating $DAYS days x $SERIES series every $INTERVAL_S s into $QDIR (tiers $TIERS), $(date -u -d "@$S0" +%FT%TZ) to $(date -u -d "@$END" +%FT%TZ)"
G=$(timeout "$GEN_TIMEOUT" "$GEN" --data "$QDIR" --days "$DAYS" --series "$SERIES" \
    --interval-s "$INTERVAL_S" --seed "$SEED" --end-s "$END" --tiers "$TIERS") ||
    die "tier_gen failed or took more than ${GEN_TIMEOUT}s"
echo "$G" | jq -c '. + {phase: "generate"}' >>"$RESULTS"
NPOINTS=$(json_get "$G" points)
log "generated $NPOINTS points in $(json_get "$G" seconds) s ($(json_get "$G" points_per_s) points/s; tier builds $(json_get "$G" tier_build_s) s)"
sync
RAW_B=$(dir_bytes "$QDIR/blocks")
TIERS_B=$(dir_bytes "$QDIR/tiers")
declare -A TIER_B
for t in $(tier_labels "$TIERS"); do TIER_B[$t]=$(tier_bytes "$QDIR" "$t"); done
H1_ONLY_B=""
if [ "$GEN_1H_ONLY" = 1 ]; then
    H1_TIERS="${TIERS%%,*},1h:10y"
    log "generating the same data with tiers $H1_TIERS"
    G1=$(timeout "$GEN_TIMEOUT" "$GEN" --data "$WORK/year-1h" --days "$DAYS" --series "$SERIES" \
        --interval-s "$INTERVAL_S" --seed "$SEED" --end-s "$END" --tiers "$H1_TIERS") ||
        die "tier_gen ($H1_TIERS) failed or took more than ${GEN_TIMEOUT}s"
    echo "$G1" | jq -c '. + {phase: "generate-1h-only"}' >>"$RESULTS"
    H1_ONLY_B=$(dir_bytes "$WORK/year-1h/tiers")
    H1_ONLY_RAW_B=$(dir_bytes "$WORK/year-1h/blocks")
    rm -rf "$WORK/year-1h"
fi

# ---- (b) serve -----------------------------------------------------------------------
echo "{\"limits\": $QUERY_LIMITS}" >"$WORK/query-config.json"
start_stele "$QDIR" "$WORK/stele-query.log" --tiers "$TIERS" --config "$WORK/query-config.json"
log "stele serving $QDIR at $SURL; waiting for blocks and tier builds to settle"
PREV=""
STABLE=0
SETTLED=0
for ((w = 0; w < SETTLE_MAX; w++)); do
    M=$(metrics)
    NOW_STATE="$(metric_value "$M" stele_tsdb_blocks) $(metric_value "$M" stele_tsdb_compactions_total) $(max_tier_lag "$M")"
    if [ "$NOW_STATE" = "$PREV" ] && [ "$(max_tier_lag "$M")" = 0 ]; then
        STABLE=$((STABLE + 1))
        [ "$STABLE" -ge 3 ] && { SETTLED=1; break; }
    else
        STABLE=0
    fi
    PREV=$NOW_STATE
    sleep 1
done
[ "$SETTLED" = 1 ] || warn "blocks or tier builds still moving after ${SETTLE_MAX}s (state: $NOW_STATE); timing anyway"
Q_METRICS=$(metrics)
echo "$Q_METRICS" | grep -E '^stele_(tsdb_block|tsdb_blocks|tier_)' >"$WORK/query-metrics.txt" || true

# ---- (c) queries ---------------------------------------------------------------------
# Range grid: the first step ends the first full window (S0 + window), the last is END,
# just after the last sample; every step is a whole hour.
range_target() { # range_target QUERY STEP_S WINDOW_S
    echo "/api/v1/query_range?query=$(uri "$1")&start=$((S0 + $3))&end=$END&step=$2"
}
# time_query KEY TARGET RUNS: WARMUP untimed then RUNS timed requests with curl (one
# process each; time_total from connect to the last body byte — the loopback connect is
# ~0.1 ms). curl rather than query_load: the header X-Stele-Resolution of every request
# is kept (what answered, and that it did not change between runs), and a raw year may
# take longer than query_load's 60 s request timeout. Keeps the last body in
# answers/KEY.json. Prints one JSON line, or the failure (status 1).
time_query() {
    local key=$1 target=$2 runs=$3 k out code t h res="" times=() mixed=0
    for ((k = 0; k < WARMUP + runs; k++)); do
        out=$(curl -sS --max-time "$QUERY_MAX_S" -D "$WORK/answers/$key.hdr" \
            -o "$WORK/answers/$key.json" -w '%{http_code} %{time_total}' -H "$AUTH" \
            "$SURL$target" 2>"$WORK/answers/$key.err") || out="000 0"
        read -r code t <<<"$out"
        if [ "$code" != 200 ]; then
            echo "HTTP $code $(head -c 200 "$WORK/answers/$key.err")"
            return 1
        fi
        h=$(awk -F': *' 'tolower($1) == "x-stele-resolution" {gsub(/\r/, "", $2); print $2}' \
            "$WORK/answers/$key.hdr")
        h=${h:-none}
        [ -n "$res" ] && [ "$h" != "$res" ] && mixed=1
        res=$h
        [ "$k" -ge "$WARMUP" ] && times+=("$(calc "$t * 1000")")
    done
    [ "$mixed" = 1 ] && res="$res (changed between runs)"
    printf '%s\n' "${times[@]}" | sort -g | jq -sc --arg lbl "$key" --arg h "$res" \
        --argjson bytes "$(stat -c %s "$WORK/answers/$key.json")" \
        --argjson size "$(jq -c '[(.data.result | length), ([.data.result[] | (.values // [1]) | length] | add // 0)]' "$WORK/answers/$key.json")" \
        '{mode: "time", "label": $lbl, runs: length, answered_by: $h, bytes: $bytes,
          series: $size[0], points: $size[1], ms_min: .[0], ms_max: .[-1],
          ms_p50: .[((length * 0.5 | ceil) - 1)], ms_p90: .[((length * 0.9 | ceil) - 1)],
          ms_mean: (add / length)}'
}
QNAMES=(max_1h avg_1d increase_1d)
QDESC=("max_over_time(iot_temperature_celsius[1h]), step 1h"
    "avg_over_time(iot_temperature_celsius[1d]), step 1d"
    "sum by (site) (increase(iot_messages_total[1d])), step 1d")
QTARGET=("$(range_target 'max_over_time(iot_temperature_celsius[1h])' 3600 3600)"
    "$(range_target 'avg_over_time(iot_temperature_celsius[1d])' 86400 86400)"
    "$(range_target 'sum by (site) (increase(iot_messages_total[1d]))' 86400 86400)")
VARIANTS=(auto 1m raw)
WARNINGS=()
declare -A RES_HDR MS50 MS90 CPUMS SERIES_OF POINTS_OF BYTES_OF CHECK
for ((i = 0; i < ${#QNAMES[@]}; i++)); do
    for v in "${VARIANTS[@]}"; do
        key="${QNAMES[$i]}.$v"
        target="${QTARGET[$i]}&resolution=$v"
        runs=$RUNS
        [ "$v" = raw ] && runs=$RAW_RUNS
        c0=$(cpu_s "$SPID")
        if ! r=$(time_query "$key" "$target" "$runs"); then
            RES_HDR[$key]=${r:-failed}
            WARNINGS+=("${QDESC[$i]} with resolution=$v: $r: $(head -c 300 "$WORK/answers/$key.json" 2>/dev/null)")
            warn "${WARNINGS[-1]}"
            continue
        fi
        c1=$(cpu_s "$SPID")
        r=$(echo "$r" | jq -c --arg q "${QNAMES[$i]}" --arg v "$v" \
            --argjson cpu "$(calc "1000 * ($c1 - $c0) / ($runs + $WARMUP)")" \
            '. + {phase: "query", query: $q, resolution: $v, server_cpu_ms_per_query: $cpu}')
        echo "$r" >>"$RESULTS"
        RES_HDR[$key]=$(json_get "$r" answered_by)
        MS50[$key]=$(json_get "$r" ms_p50)
        MS90[$key]=$(json_get "$r" ms_p90)
        CPUMS[$key]=$(json_get "$r" server_cpu_ms_per_query)
        SERIES_OF[$key]=$(json_get "$r" series)
        POINTS_OF[$key]=$(json_get "$r" points)
        BYTES_OF[$key]=$(json_get "$r" bytes)
        log "$key: answered by ${RES_HDR[$key]}, median ${MS50[$key]} ms, ${SERIES_OF[$key]} series, ${POINTS_OF[$key]} points"
    done
    # What answered must be what was asked (auto: the coarsest exact tier, 1h here).
    for v in "${VARIANTS[@]}"; do
        key="${QNAMES[$i]}.$v"
        want=$v
        [ "$v" = auto ] && want=1h
        if [ -n "${MS50[$key]:-}" ] && [ "${RES_HDR[$key]}" != "$want" ]; then
            WARNINGS+=("${QDESC[$i]} with resolution=$v was answered by '${RES_HDR[$key]}', expected $want")
            warn "${WARNINGS[-1]}"
        fi
    done
    # Every tier answer against the raw one.
    for v in auto 1m; do
        key="${QNAMES[$i]}.$v"
        raw="${QNAMES[$i]}.raw"
        if [ -z "${MS50[$key]:-}" ] || [ -z "${MS50[$raw]:-}" ]; then
            CHECK[$key]="not compared (a request failed)"
            continue
        fi
        C=$("$QLOAD" compare --a "$WORK/answers/$key.json" --b "$WORK/answers/$raw.json" \
            --rel-tol "$REL_TOL" --label "$key" 2>"$WORK/compare.$key.txt") ||
            die "comparing $key with raw failed: $(cat "$WORK/compare.$key.txt")"
        echo "$C" | jq -c --arg q "${QNAMES[$i]}" --arg v "$v" '. + {phase: "compare", query: $q, resolution: $v}' >>"$RESULTS"
        if [ "$(json_get "$C" equal)" = true ]; then
            CHECK[$key]="equal to raw ($(json_get "$C" series_a) series, $(json_get "$C" points_matched) points, max rel diff $(json_get "$C" max_rel_diff))"
        else
            CHECK[$key]="DIFFERENT from raw: series $(json_get "$C" series_a)/$(json_get "$C" series_b) (only here $(json_get "$C" series_only_a), only in raw $(json_get "$C" series_only_b)), points $(json_get "$C" points_a)/$(json_get "$C" points_b) (only here $(json_get "$C" points_only_a), only in raw $(json_get "$C" points_only_b)), $(json_get "$C" values_differing) values beyond $REL_TOL (max rel diff $(json_get "$C" max_rel_diff), max abs diff $(json_get "$C" max_abs_diff))"
            WARNINGS+=("${QDESC[$i]}, resolution=$v: ${CHECK[$key]}; first differences: $(head -5 "$WORK/compare.$key.txt" | tr '\n' ';')")
            warn "${WARNINGS[-1]}"
        fi
    done
done
Q_RSS=$(awk '/^VmHWM:/ {print $2}' "/proc/$SPID/status")
stop_process "$SPID"
[ "$KEEP" = 1 ] || rm -rf "$QDIR"

# ---- (e) ingestion with and without tier building --------------------------------------
declare -A ING_PPS ING_NOTE
if [ "$INGEST" = 1 ]; then
    WL=$WORK/workload.lp
    log "generating the ingest workload: $POINTS points for $TRUCKS trucks"
    IG=$("$LOAD" gen --out "$WL" --trucks "$TRUCKS" --points "$POINTS")
    echo "$IG" | jq -c '. + {phase: "ingest-gen"}' >>"$RESULTS"
    sync
    # ingest_run CONFIG TIERS ROUND: one post into a fresh store; fills ING_PPS/ING_NOTE.
    ingest_run() {
        local cfg=$1 tiers=$2 round=$3 dir=$WORK/ingest-$1-$3 key=$1.$3 r c0 c1 m lag t w
        start_stele "$dir" "$WORK/stele-ingest-$key.log" --tiers "$tiers" \
            --head-max-points "$INGEST_HEAD_MAX"
        sync
        c0=$(cpu_s "$SPID")
        if ! r=$("$LOAD" post --url "$SURL" --file "$WL" --token-file "$dir/admin.token" \
            --clients "$CLIENTS" --batch-lines "$BATCH_LINES" --label "$key" 2>"$WORK/post.$key.err"); then
            ING_PPS[$key]=""
            ING_NOTE[$key]="post failed: $(tail -3 "$WORK/post.$key.err" | tr '\n' ' ' | head -c 300)"
            WARNINGS+=("ingest $cfg round $round: ${ING_NOTE[$key]}")
            warn "${WARNINGS[-1]}"
            stop_process "$SPID"
            rm -rf "$dir"
            return 0
        fi
        c1=$(cpu_s "$SPID")
        m=$(metrics)
        lag=$(max_tier_lag "$m")
        ING_PPS[$key]=$(json_get "$r" points_per_s)
        ING_NOTE[$key]="flushes $(metric_value "$m" stele_tsdb_flushes_total), overload 503s $(metric_value "$m" stele_tsdb_overload_rejections_total), server CPU $(fmt "$(calc "$c1 - $c0")" %.1f) s"
        if [ "$cfg" = tiers ]; then
            # Flush the rest and time the builder's catch-up (bounded): work the run
            # deferred is not free, only later.
            t=$(date +%s%N)
            curl -sS --max-time 120 -o /dev/null -X POST -H "$AUTH" "$SURL/api/v1/admin/flush" || true
            for ((w = 0; w < CATCHUP_MAX * 10; w++)); do
                [ "$(max_tier_lag "$(metrics)")" = 0 ] && break
                sleep 0.1
            done
            m=$(metrics)
            ING_NOTE[$key]+=", tier lag at the end of the post $(fmt "$lag" %.1f) s, caught up $(fmt "$(calc "($(date +%s%N) - $t) / 1e9")" %.1f) s after flush (lag now $(max_tier_lag "$m") s), tier points (buckets)$(for tl in $(tier_labels "$tiers"); do printf ' %s %s' "$tl" "$(tier_metric "$m" stele_tier_points "$tl")"; done)"
        fi
        echo "$r" | jq -c --arg c "$cfg" --arg t "$tiers" --argjson n "$round" --arg note "${ING_NOTE[$key]}" \
            '. + {phase: "ingest", config: $c, tiers: $t, round: $n, note: $note}' >>"$RESULTS"
        log "ingest $cfg round $round: ${ING_PPS[$key]} points/s (${ING_NOTE[$key]})"
        stop_process "$SPID"
        rm -rf "$dir"
    }
    for ((round = 1; round <= ROUNDS; round++)); do
        if [ $((round % 2)) = 1 ]; then
            ingest_run base "$INGEST_BASE_TIERS" "$round"
            ingest_run tiers "$INGEST_TIERS" "$round"
        else
            ingest_run tiers "$INGEST_TIERS" "$round"
            ingest_run base "$INGEST_BASE_TIERS" "$round"
        fi
    done
fi

# ---- report --------------------------------------------------------------------------
pct() { fmt "$(calc "100 * $1 / ($2 > 0 ? $2 : 1)")" %.2f; }
verdict() { [ "$(calc "($1) ? 1 : 0")" = 1 ] && echo met || echo "NOT met"; }
{
    echo "### Downsampling tiers benchmark (issue 4)"
    echo
    echo "$(date -u +%Y-%m-%dT%H:%MZ), stele $REV, $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)."
    echo "Data: $SERIES series (5 kinds: temperature, fuel and battery gauges with 1–3 decimals; messages and energy counters with weekly resets) × $DAYS days × one sample per $INTERVAL_S s = $NPOINTS points, $(date -u -d "@$S0" +%FT%TZ) to $(date -u -d "@$END" +%FT%TZ), written by tier_gen through the C API with tiers \`$TIERS\` in $(fmt "$(json_get "$G" seconds)" %.1f) s ($(fmt "$(json_get "$G" points_per_s)" %.0f) points/s; of which flushes $(fmt "$(json_get "$G" flush_s)" %.1f) s, tier builds $(fmt "$(json_get "$G" tier_build_s)" %.1f) s, compaction/retention $(fmt "$(json_get "$G" maintain_s)" %.1f) s)."
    echo
    echo "Range queries over the whole $DAYS days, $WARMUP warm-up(s) then $RUNS timed runs ($RAW_RUNS for raw), one curl each (time_total: connect to last body byte); \"answered by\" is the X-Stele-Resolution header; answers compared with raw at $REL_TOL relative."
    echo
    echo "| query | resolution= | answered by | median / p90 ms | speed-up vs raw (median) | server CPU ms/query | series · points · bytes | answer |"
    echo "|---|---|---|---:|---:|---:|---:|---|"
    for ((i = 0; i < ${#QNAMES[@]}; i++)); do
        raw="${QNAMES[$i]}.raw"
        for v in "${VARIANTS[@]}"; do
            key="${QNAMES[$i]}.$v"
            if [ -z "${MS50[$key]:-}" ]; then
                echo "| ${QDESC[$i]} | $v | ${RES_HDR[$key]:-?} | failed | | | | |"
                continue
            fi
            sp="—"
            [ "$v" != raw ] && [ -n "${MS50[$raw]:-}" ] && sp="$(fmt "$(calc "${MS50[$raw]} / ${MS50[$key]}")" %.1f)×"
            echo "| ${QDESC[$i]} | $v | ${RES_HDR[$key]} | $(fmt "${MS50[$key]}" %.1f) / $(fmt "${MS90[$key]}" %.1f) | $sp | $(fmt "${CPUMS[$key]}" %.0f) | ${SERIES_OF[$key]} · ${POINTS_OF[$key]} · ${BYTES_OF[$key]} | ${CHECK[$key]:-reference} |"
        done
    done
    echo
    echo "Bytes on disk after generation (\`du -sb\`), raw = DATA/blocks:"
    echo
    echo "| data | bytes | bytes/raw point | % of raw |"
    echo "|---|---:|---:|---:|"
    echo "| raw blocks | $RAW_B | $(fmt "$(calc "$RAW_B / $NPOINTS")" %.3f) | 100 |"
    echo "| all tiers ($(tier_labels "$TIERS" | sed 's/ $//; s/ /+/g')) | $TIERS_B | $(fmt "$(calc "$TIERS_B / $NPOINTS")" %.4f) | $(pct "$TIERS_B" "$RAW_B") |"
    for t in $(tier_labels "$TIERS"); do
        echo "| tier $t alone | ${TIER_B[$t]} | $(fmt "$(calc "${TIER_B[$t]} / $NPOINTS")" %.4f) | $(pct "${TIER_B[$t]}" "$RAW_B") |"
    done
    if [ -n "$H1_ONLY_B" ]; then
        echo "| tiers of a separately generated raw:…,1h:10y store (its raw: $H1_ONLY_RAW_B) | $H1_ONLY_B | $(fmt "$(calc "$H1_ONLY_B / $NPOINTS")" %.4f) | $(pct "$H1_ONLY_B" "$H1_ONLY_RAW_B") |"
    fi
    echo
    echo "Server's view while serving: \`$(tr '\n' ' ' <"$WORK/query-metrics.txt" | sed 's/ $//')\`; peak RSS $(fmt "$(calc "${Q_RSS:-0} / 1024")" %.0f) MiB."
    if [ "$INGEST" = 1 ]; then
        echo
        echo "Ingestion with tier building: ingest_load workload ($POINTS points, $TRUCKS trucks, $CLIENTS posters × $BATCH_LINES lines, fsync per acknowledgement), \`--head-max-points $INGEST_HEAD_MAX\`, fresh store per run, rounds interleaved:"
        echo
        echo "| --tiers | $(for ((r = 1; r <= ROUNDS; r++)); do printf 'run %d points/s | ' "$r"; done)median points/s | notes (last run) |"
        echo "|---|$(for ((r = 1; r <= ROUNDS; r++)); do printf -- '---:|'; done)---:|---|"
        for cfg in base tiers; do
            t=$INGEST_BASE_TIERS
            [ "$cfg" = tiers ] && t=$INGEST_TIERS
            vals=()
            row="| \`$t\` |"
            for ((r = 1; r <= ROUNDS; r++)); do
                p=${ING_PPS[$cfg.$r]:-}
                row+=" ${p:-failed} |"
                [ -n "$p" ] && vals+=("$p")
            done
            med=""
            [ "${#vals[@]}" -gt 0 ] && med=$(median "${vals[@]}")
            [ "$cfg" = base ] && BASE_MED=$med || TIERS_MED=$med
            echo "$row ${med:-—} | ${ING_NOTE[$cfg.$ROUNDS]:-} |"
        done
    fi
    echo
    echo "Against the issue's targets:"
    echo
    echo "| target | figure | verdict |"
    echo "|---|---:|---|"
    for q in max_1h avg_1d; do
        if [ -n "${MS50[$q.auto]:-}" ] && [ -n "${MS50[$q.raw]:-}" ]; then
            s=$(calc "${MS50[$q.raw]} / ${MS50[$q.auto]}")
            echo "| $q: auto ≥ ${TARGET_SPEEDUP}× faster than raw | $(fmt "$s" %.1f)× | $(verdict "$s >= $TARGET_SPEEDUP") |"
        fi
    done
    echo "| tiers ≤ ${TARGET_BYTES_PCT}% of raw bytes ($(tier_labels "$TIERS" | sed 's/ $//; s/ /+/g')) | $(pct "$TIERS_B" "$RAW_B")% | $(verdict "100 * $TIERS_B <= $TARGET_BYTES_PCT * $RAW_B") |"
    last_tier=$(tier_labels "$TIERS" | awk '{print $NF}')
    [ -n "$last_tier" ] && echo "| tiers ≤ ${TARGET_BYTES_PCT}% of raw bytes ($last_tier only) | $(pct "${TIER_B[$last_tier]}" "$RAW_B")% | $(verdict "100 * ${TIER_B[$last_tier]} <= $TARGET_BYTES_PCT * $RAW_B") |"
    if [ "$INGEST" = 1 ] && [ -n "${BASE_MED:-}" ] && [ -n "${TIERS_MED:-}" ]; then
        s=$(calc "100 * $TIERS_MED / $BASE_MED")
        echo "| ingestion with tiers ≥ ${TARGET_INGEST_PCT}% of without | $(fmt "$s" %.1f)% | $(verdict "$s >= $TARGET_INGEST_PCT") |"
    fi
    if [ "${#WARNINGS[@]}" -gt 0 ]; then
        echo
        echo "**Warnings:**"
        for w in "${WARNINGS[@]}"; do echo "- $w"; done
    fi
} >"$OUT/tiers.md"
cat "$OUT/tiers.md"
log "results: $OUT/tiers.md, $OUT/tiers.jsonl"
