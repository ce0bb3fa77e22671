#!/usr/bin/env bash
# ingest.sh — the ingest benchmark of issue 2: Stele against VictoriaMetrics on the same
# TSBS-"iot"-like workload, in the same run, one server after the other (never both at
# once, so neither steals the other's cores or page cache while measured).
#
# Design: the workload is generated once into a file (build/bench/ingest_load gen) and
# the same bytes are posted to both servers by ingest_load post, which reads the file
# into memory and cuts it into batches before its clock starts. Each server gets a
# fresh data directory on a free loopback port. For each it reports: ingest points/s
# over HTTP with CLIENTS concurrent keep-alive posters, bytes per point on disk after a
# flush, peak RSS (VmHWM, read before any export inflates it), CPU seconds spent by the
# server, and ratios Stele/VM. Stele acknowledges only after fsync; VictoriaMetrics
# acknowledges before its data reaches the disk — the figures say so next to them.
# The box may be shared: the report shows how busy the machine was while each server
# ingested and which share of that no process of this run explains (and warns).
#
# Then (RECOVERY=1) the recovery time: Stele with a head large enough that the log holds
# every point, kill -9, restart, time until /ready answers 200, and a count of the points
# back. PROFILE=1 adds one more Stele ingest under `perf record` (not the measured run)
# and prints where the server's time goes.
#
# Knobs (environment): TRUCKS (1000), POINTS (10000000), CLIENTS (2), BATCH_LINES (5000),
# RECOVERY (1), COLD (0; 1 drops the page cache before the recovery restart, as root),
# PROFILE (0), VERIFY (1: count every point back through the export APIs),
# VM_SETTLE_MAX (60: seconds to wait for VictoriaMetrics' size to settle), KEEP (0: keep
# the work directory), WORKDIR (default: a fresh mktemp -d), BUILD_DIR (build), BUILD
# (1; 0 uses the binaries already in BUILD_DIR, e.g. built from a clean checkout, and
# STELE_REV then says which revision that is).
# Results: a table on stdout, bench/out/ingest.md (markdown) and bench/out/ingest.jsonl.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TRUCKS=${TRUCKS:-1000}
POINTS=${POINTS:-10000000}
CLIENTS=${CLIENTS:-2}
BATCH_LINES=${BATCH_LINES:-5000}
RECOVERY=${RECOVERY:-1}
PROFILE=${PROFILE:-0}
VERIFY=${VERIFY:-1}
VM_SETTLE_MAX=${VM_SETTLE_MAX:-60}
KEEP=${KEEP:-0}
BUILD=${BUILD:-1}
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
OUT=$ROOT/bench/out
# The recovery run must keep every point in the head (and so in the log): twice the
# points, and an interval far longer than the run.
RECOVERY_HEAD_MAX=$((POINTS * 2 > 4000000 ? POINTS * 2 : 4000000))
RECOVERY_FLUSH_INTERVAL=1h
# Bounds on every wait, so the script always ends by itself.
READY_TIMEOUT=120 # seconds for a server to answer (Stele recovers 10 M points well within)
STOP_TIMEOUT=120  # seconds for a graceful stop (Stele flushes its head on SIGTERM)

STELE=$BUILD_DIR/stele
LOAD=$BUILD_DIR/bench/ingest_load
mkdir -p "$OUT"
WORK=${WORKDIR:-$(mktemp -d /tmp/stele-ingest.XXXXXX)}
mkdir -p "$WORK"
RESULTS=$OUT/ingest.jsonl
: >"$RESULTS"

PIDS=() # servers and helpers we started; the exit trap ends exactly these
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
    done
    if [ "$KEEP" = 1 ]; then
        echo "ingest: work directory kept: $WORK" >&2
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

die() {
    echo "ingest: $*" >&2
    exit 1
}
log() { echo "ingest: $*" >&2; }

# A loopback port nobody listens on (a race with other programs is possible; the server
# then fails to bind and we stop loudly).
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

# "busy steal total" jiffies of the whole machine (all cores), to show in the results
# how loaded the box was while a server ingested (and whether a hypervisor took time).
machine_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9, $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat; }
# machine_load BEFORE AFTER SERVER_CPU_S CLIENT_CPU_S → "busy% steal% other%": how busy
# all cores were, and the share of that no process of this run accounts for (other
# programs on the box — a benchmark on a shared machine says so rather than mislead).
machine_load() {
    echo "$1 $2 $3 $4" | awk -v hz="$(getconf CLK_TCK)" '{
        t = $6 - $3; if (t <= 0) t = 1
        other = 100 * (($4 - $1) / hz - $7 - $8) / (t / hz); if (other < 0) other = 0
        printf "%.0f %.1f %.0f", 100 * ($4 - $1) / t, 100 * ($5 - $2) / t, other}'
}
vmhwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }
# CPU seconds (user + system) of a process, all threads.
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"; }
# Per-thread CPU ticks "tid comm ticks" of process $1, one awk over every task (the
# comm may hold spaces: the fields are taken after its closing parenthesis).
thread_ticks() {
    awk 'FNR == 1 {
            s = $0; op = index(s, "("); cl = 0
            for (i = length(s); i > 0; i--) if (substr(s, i, 1) == ")") { cl = i; break }
            comm = substr(s, op + 1, cl - op - 1); gsub(/ /, "_", comm)
            split(substr(s, cl + 2), f, " "); split(FILENAME, p, "/")
            print p[5], comm, f[12] + f[13]
        }' /proc/"$1"/task/*/stat 2>/dev/null || true
}
# Connection threads come and go with their connections, so a snapshot after the run
# misses them: sample every 0.5 s while ingest_load runs (PID $2), keep the last sight.
thread_sampler() {
    local pid=$1 watch=$2 out=$3
    while kill -0 "$watch" 2>/dev/null && kill -0 "$pid" 2>/dev/null; do
        thread_ticks "$pid" >>"$out"
        sleep 0.5
    done
    thread_ticks "$pid" >>"$out"
}
# thread_cpu_diff BEFORE SAMPLES: CPU seconds per thread name between the snapshot
# before and the last sample of each thread.
thread_cpu_diff() {
    awk -v hz="$(getconf CLK_TCK)" 'NR == FNR {b[$1] = $3; next}
        {last[$1] = $3; name[$1] = $2}
        END {
            for (t in last) {d = last[t] - b[t]; if (d > 0) {n[name[t]] += d; c[name[t]]++}}
            for (k in n) printf "    %-20s %4d thread(s) %8.2f s\n", k, c[k], n[k] / hz
        }' "$1" "$2" | sort -k4 -nr
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

json_get() { # json_get JSON KEY → value (numbers and strings of our own flat JSON)
    echo "$1" | jq -r ".$2"
}
calc() { awk "BEGIN {printf \"%s\", $1}"; }
fmt() { awk -v v="$1" -v f="$2" 'BEGIN {printf f, v}'; }

metric_value() { # metric_value METRICS_TEXT NAME
    echo "$1" | awk -v n="$2" '$1 == n {print $2; exit}'
}

# count_points URL [TOKEN_FILE]: points of the readings_* and diagnostics_* metrics,
# exported one measurement at a time. Prints "points series".
count_points() {
    local url=$1 tf=${2:-} total=0 series=0 m r args=()
    [ -n "$tf" ] && args=(--token-file "$tf")
    for m in readings diagnostics; do
        r=$("$LOAD" count --url "$url" "${args[@]}" \
            --path "/api/v1/export?match%5B%5D=%7B__name__%3D~%22${m}_.%2A%22%7D") ||
            die "export of ${m}_* from $url failed"
        total=$((total + $(json_get "$r" points)))
        series=$((series + $(json_get "$r" series)))
    done
    echo "$total $series"
}

# ---- build ---------------------------------------------------------------------------
if [ "$BUILD" = 1 ]; then
    log "building $STELE and $LOAD"
    cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build "$BUILD_DIR" -j 2 --target stele ingest_load >/dev/null
fi
if [ ! -x "$STELE" ] || [ ! -x "$LOAD" ]; then
    die "$STELE or $LOAD missing (BUILD=0 needs them built)"
fi
command -v victoria-metrics >/dev/null || die "victoria-metrics is not installed (apt-get install victoria-metrics)"
command -v jq >/dev/null || die "jq is not installed"
# STELE_REV names the build when BUILD=0 points elsewhere than this checkout.
REV=${STELE_REV:-$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)}
if [ -z "${STELE_REV:-}" ] && [ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no -- src include 2>/dev/null)" ]; then
    REV="$REV+dirty"
fi
VM_VERSION=$(dpkg-query -W -f='${Version}' victoria-metrics 2>/dev/null || echo unknown)

# ---- workload ------------------------------------------------------------------------
WL=$WORK/workload.lp
log "generating $POINTS points for $TRUCKS trucks into $WL"
GEN=$("$LOAD" gen --out "$WL" --trucks "$TRUCKS" --points "$POINTS")
echo "$GEN" >>"$RESULTS"
NPOINTS=$(json_get "$GEN" points)
WL_BYTES=$(json_get "$GEN" bytes)
log "workload: $(json_get "$GEN" lines) lines, $NPOINTS points, $WL_BYTES bytes"
# Write the workload out now, so its writeback does not compete with the first server's
# fsyncs (each phase below starts after a sync too).
sync

# ---- Stele ---------------------------------------------------------------------------
# start_stele DIR PORT LOGFILE [extra args]: sets SPID.
start_stele() {
    local dir=$1 port=$2 logf=$3
    shift 3
    "$STELE" serve --data "$dir" --http "127.0.0.1:$port" "$@" 2>>"$logf" &
    SPID=$!
    PIDS+=("$SPID")
    wait_status "http://127.0.0.1:$port/ready" 200 "$READY_TIMEOUT" "$SPID" ||
        { tail -20 "$logf" >&2; die "stele did not become ready on port $port"; }
}

log "stele: ingest"
SDIR=$WORK/stele-data
SLOG=$WORK/stele.log
SPORT=$(free_port) || exit 1
start_stele "$SDIR" "$SPORT" "$SLOG"
SURL=http://127.0.0.1:$SPORT
STOK=$SDIR/admin.token
AUTH="Authorization: Token $(cat "$STOK")"
sync
thread_ticks "$SPID" >"$WORK/threads.before"
CPU0=$(cpu_s "$SPID")
M0=$(machine_ticks)
"$LOAD" post --url "$SURL" --file "$WL" --token-file "$STOK" --clients "$CLIENTS" \
    --batch-lines "$BATCH_LINES" --label stele >"$WORK/stele.post" &
POSTER=$!
PIDS+=("$POSTER")
thread_sampler "$SPID" "$POSTER" "$WORK/threads.samples" &
SAMPLER=$!
wait "$POSTER" || { tail -20 "$SLOG" >&2; die "posting to stele failed"; }
CPU1=$(cpu_s "$SPID")
M1=$(machine_ticks)
wait "$SAMPLER" || true
S_POST=$(cat "$WORK/stele.post")
S_LOAD=$(machine_load "$M0" "$M1" "$(calc "$CPU1 - $CPU0")" "$(json_get "$S_POST" client_cpu_s)")
echo "$S_POST" >>"$RESULTS"
log "stele: $(json_get "$S_POST" points_per_s) points/s"
S_THREADS=$(thread_cpu_diff "$WORK/threads.before" "$WORK/threads.samples")

T=$(date +%s%N)
S_FLUSH=$(curl -sS --fail-with-body -X POST -H "$AUTH" "$SURL/api/v1/admin/flush") ||
    die "stele flush failed: $S_FLUSH"
S_FLUSH_S=$(calc "($(date +%s%N) - $T) / 1e9")
S_METRICS=$(curl -sS --fail-with-body -H "$AUTH" "$SURL/metrics")
S_BLOCK_POINTS=$(metric_value "$S_METRICS" stele_tsdb_block_points)
S_HEAD_POINTS=$(metric_value "$S_METRICS" stele_tsdb_head_points)
S_INGESTED=$(metric_value "$S_METRICS" stele_ingest_points_total)
S_FSYNCS=$(metric_value "$S_METRICS" stele_wal_fsyncs_total)
S_REJECT=$(metric_value "$S_METRICS" stele_tsdb_overload_rejections_total)
S_BLOCKS_B=$(du -sb "$SDIR/blocks" | cut -f1)
S_WAL_B=$(du -sb "$SDIR/wal" | cut -f1)
S_TOTAL_B=$((S_BLOCKS_B + S_WAL_B))
S_RSS=$(vmhwm_kib "$SPID")
S_CPU=$(calc "$CPU1 - $CPU0")
S_COUNT="-"
S_SERIES="-"
if [ "$VERIFY" = 1 ]; then
    CNT=$(count_points "$SURL" "$STOK") || exit 1
    read -r S_COUNT S_SERIES <<<"$CNT"
    [ "$S_COUNT" = "$NPOINTS" ] || log "WARNING: stele exports $S_COUNT points, $NPOINTS were posted"
fi
stop_process "$SPID"
S_AFTER_STOP_B=$(du -sb "$SDIR" | cut -f1)
echo "{\"server\":\"stele\",\"flush\":$S_FLUSH,\"flush_s\":$S_FLUSH_S,\"blocks_bytes\":$S_BLOCKS_B,\"wal_bytes\":$S_WAL_B,\"block_points\":$S_BLOCK_POINTS,\"head_points\":$S_HEAD_POINTS,\"ingested\":$S_INGESTED,\"wal_fsyncs\":$S_FSYNCS,\"overload_rejections\":$S_REJECT,\"vmhwm_kib\":$S_RSS,\"cpu_s\":$S_CPU,\"exported_points\":\"$S_COUNT\",\"exported_series\":\"$S_SERIES\",\"dir_bytes_after_stop\":$S_AFTER_STOP_B}" >>"$RESULTS"
rm -rf "$SDIR"

# ---- VictoriaMetrics -----------------------------------------------------------------
log "victoria-metrics: ingest"
VDIR=$WORK/vm-data
VLOG=$WORK/vm.log
VPORT=$(free_port) || exit 1
VURL=http://127.0.0.1:$VPORT
victoria-metrics -storageDataPath="$VDIR" -httpListenAddr="127.0.0.1:$VPORT" \
    -retentionPeriod=100y >>"$VLOG" 2>&1 &
VPID=$!
PIDS+=("$VPID")
wait_status "$VURL/health" 200 "$READY_TIMEOUT" "$VPID" ||
    { tail -20 "$VLOG" >&2; die "victoria-metrics did not start"; }
sync
CPU0=$(cpu_s "$VPID")
M0=$(machine_ticks)
V_POST=$("$LOAD" post --url "$VURL" --file "$WL" --clients "$CLIENTS" \
    --batch-lines "$BATCH_LINES" --label victoria-metrics) ||
    { tail -20 "$VLOG" >&2; die "posting to victoria-metrics failed"; }
CPU1=$(cpu_s "$VPID")
V_LOAD=$(machine_load "$M0" "$(machine_ticks)" "$(calc "$CPU1 - $CPU0")" "$(json_get "$V_POST" client_cpu_s)")
echo "$V_POST" >>"$RESULTS"
log "victoria-metrics: $(json_get "$V_POST" points_per_s) points/s"
# VictoriaMetrics buffers rows in memory and merges parts in the background: flush,
# then re-flush every 5 s until the directory size holds still twice (bounded).
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
V_TOTAL_B=$(du -sb "$VDIR" | cut -f1)
V_DATA_B=$(du -sb "$VDIR/data" | cut -f1)
V_INDEX_B=$(du -sb "$VDIR/indexdb" | cut -f1)
V_RSS=$(vmhwm_kib "$VPID")
V_CPU=$(calc "$CPU1 - $CPU0")
V_COUNT="-"
V_SERIES="-"
if [ "$VERIFY" = 1 ]; then
    CNT=$(count_points "$VURL") || exit 1
    read -r V_COUNT V_SERIES <<<"$CNT"
    [ "$V_COUNT" = "$NPOINTS" ] || log "WARNING: victoria-metrics exports $V_COUNT points, $NPOINTS were posted"
fi
stop_process "$VPID"
# A check on the settled size: at shutdown VictoriaMetrics writes what it still held
# into data/ and indexdb/ (and its caches into cache/, which is not data).
V_AFTER_STOP_B=$(du -sb "$VDIR" | cut -f1)
V_AFTER_STOP_DATA_B=$(($(du -sb "$VDIR/data" | cut -f1) + $(du -sb "$VDIR/indexdb" | cut -f1)))
echo "{\"server\":\"victoria-metrics\",\"version\":\"$VM_VERSION\",\"settle_s\":$V_WAITED,\"total_bytes\":$V_TOTAL_B,\"data_bytes\":$V_DATA_B,\"indexdb_bytes\":$V_INDEX_B,\"vmhwm_kib\":$V_RSS,\"cpu_s\":$V_CPU,\"exported_points\":\"$V_COUNT\",\"exported_series\":\"$V_SERIES\",\"dir_bytes_after_stop\":$V_AFTER_STOP_B,\"data_indexdb_bytes_after_stop\":$V_AFTER_STOP_DATA_B}" >>"$RESULTS"
rm -rf "$VDIR"

# ---- recovery ------------------------------------------------------------------------
R_LINE="not measured (RECOVERY=0)"
if [ "$RECOVERY" = 1 ]; then
    log "stele: recovery of a log holding $NPOINTS points"
    RDIR=$WORK/stele-recovery
    RLOG=$WORK/stele-recovery.log
    RPORT=$(free_port) || exit 1
    RURL=http://127.0.0.1:$RPORT
    start_stele "$RDIR" "$RPORT" "$RLOG" --head-max-points "$RECOVERY_HEAD_MAX" \
        --flush-interval "$RECOVERY_FLUSH_INTERVAL"
    R_POST=$("$LOAD" post --url "$RURL" --file "$WL" --token-file "$RDIR/admin.token" \
        --clients "$CLIENTS" --batch-lines "$BATCH_LINES" --label stele-no-flush) ||
        { tail -20 "$RLOG" >&2; die "posting to stele (recovery run) failed"; }
    echo "$R_POST" >>"$RESULTS"
    RAUTH="Authorization: Token $(cat "$RDIR/admin.token")"
    R_HEAD_BEFORE=$(metric_value "$(curl -sS -H "$RAUTH" "$RURL/metrics")" stele_tsdb_head_points)
    R_WAL_B=$(du -sb "$RDIR/wal" | cut -f1)
    R_BLOCKS_BEFORE=$(du -sb "$RDIR/blocks" | cut -f1)
    R_RSS_BEFORE=$(vmhwm_kib "$SPID")
    kill -9 "$SPID"
    wait "$SPID" 2>/dev/null || true
    # Page cache: the log was just written, so it is cached; a cold-cache figure needs
    # `echo 3 > /proc/sys/vm/drop_caches` (root), which COLD=1 does.
    if [ "${COLD:-0}" = 1 ]; then
        sync
        echo 3 >/proc/sys/vm/drop_caches || log "cannot drop caches (not root?)"
    fi
    : >"$RLOG.restart"
    T=$(date +%s%N)
    "$STELE" serve --data "$RDIR" --http "127.0.0.1:$RPORT" --head-max-points "$RECOVERY_HEAD_MAX" \
        --flush-interval "$RECOVERY_FLUSH_INTERVAL" 2>>"$RLOG.restart" &
    SPID=$!
    PIDS+=("$SPID")
    wait_status "$RURL/ready" 200 "$READY_TIMEOUT" "$SPID" ||
        { tail -20 "$RLOG.restart" >&2; die "stele did not become ready after kill -9"; }
    R_READY_S=$(calc "($(date +%s%N) - $T) / 1e9")
    R_MSG=$(grep -m1 'recovered' "$RLOG.restart" || echo "no 'recovered' line")
    R_REPORTED_S=$(echo "$R_MSG" | sed -n 's/.* in \([0-9.]*\) s$/\1/p')
    R_REPORTED_POINTS=$(echo "$R_MSG" | sed -n 's/.*recovered \([0-9]*\) points.*/\1/p')
    R_HEAD_AFTER=$(metric_value "$(curl -sS -H "$RAUTH" "$RURL/metrics")" stele_tsdb_head_points)
    R_RSS_AFTER=$(vmhwm_kib "$SPID")
    R_COUNT="-"
    R_SERIES="-"
    if [ "$VERIFY" = 1 ]; then
        CNT=$(count_points "$RURL" "$RDIR/admin.token") || exit 1
    read -r R_COUNT R_SERIES <<<"$CNT"
    fi
    stop_process "$SPID"
    echo "{\"server\":\"stele-recovery\",\"wal_bytes\":$R_WAL_B,\"blocks_bytes_before_kill\":$R_BLOCKS_BEFORE,\"head_points_before_kill\":$R_HEAD_BEFORE,\"vmhwm_kib_before_kill\":$R_RSS_BEFORE,\"ready_s\":$R_READY_S,\"reported_s\":\"$R_REPORTED_S\",\"reported_points\":\"$R_REPORTED_POINTS\",\"head_points_after\":$R_HEAD_AFTER,\"vmhwm_kib_recovery\":$R_RSS_AFTER,\"exported_points\":\"$R_COUNT\",\"exported_series\":\"$R_SERIES\",\"message\":$(echo "$R_MSG" | jq -R .)}" >>"$RESULTS"
    R_LINE="restart to /ready 200: $(fmt "$R_READY_S" %.2f) s (server says: ${R_REPORTED_S:-?} s for ${R_REPORTED_POINTS:-?} points); log $(fmt "$R_WAL_B" %d) bytes; head before kill $R_HEAD_BEFORE, after restart $R_HEAD_AFTER, exported $R_COUNT of $NPOINTS; no-flush ingest $(json_get "$R_POST" points_per_s) points/s"
    rm -rf "$RDIR"
fi

# ---- profile (optional, not the measured run) -------------------------------------------
P_TEXT=""
if [ "$PROFILE" = 1 ]; then
    command -v perf >/dev/null || die "PROFILE=1 needs perf"
    log "stele: profiling one more ingest with perf record"
    PDIR=$WORK/stele-profile
    PPORT=$(free_port) || exit 1
    start_stele "$PDIR" "$PPORT" "$WORK/stele-profile.log"
    perf record -F 499 -g -p "$SPID" -o "$WORK/perf.data" >/dev/null 2>&1 &
    PERF=$!
    PIDS+=("$PERF")
    sleep 1
    "$LOAD" post --url "http://127.0.0.1:$PPORT" --file "$WL" --token-file "$PDIR/admin.token" \
        --clients "$CLIENTS" --batch-lines "$BATCH_LINES" --label stele-profiled >>"$RESULTS"
    kill -INT "$PERF"
    wait "$PERF" 2>/dev/null || true
    stop_process "$SPID"
    P_TEXT=$(perf report -i "$WORK/perf.data" --stdio --no-children --sort comm,dso,symbol \
        --percent-limit 1 -g none 2>/dev/null | grep -v '^#' | grep -v '^$' |
        awk '{printf "%8s  %-16s %-26s %s\n", $1, $2, $3, $5}' | head -40)
    perf report -i "$WORK/perf.data" --stdio --no-children --sort symbol -g caller,0.5,callee \
        --percent-limit 2 2>/dev/null >"$OUT/ingest-perf.txt" || true
    rm -rf "$PDIR"
fi

# ---- report --------------------------------------------------------------------------
S_PPS=$(json_get "$S_POST" points_per_s)
V_PPS=$(json_get "$V_POST" points_per_s)
S_BPP=$(calc "$S_BLOCKS_B / $NPOINTS")
S_TBPP=$(calc "$S_TOTAL_B / $NPOINTS")
V_BPP=$(calc "$V_TOTAL_B / $NPOINTS")
S_RSS_MB=$(calc "$S_RSS / 1024")
V_RSS_MB=$(calc "$V_RSS / 1024")
S_CPU_PM=$(calc "$S_CPU / ($NPOINTS / 1e6)")
V_CPU_PM=$(calc "$V_CPU / ($NPOINTS / 1e6)")

table() {
    echo "| | Stele (fsync per ack) | VictoriaMetrics $VM_VERSION (no fsync) | Stele/VM |"
    echo "|---|---:|---:|---:|"
    echo "| ingest points/s | $(fmt "$S_PPS" %.0f) | $(fmt "$V_PPS" %.0f) | $(fmt "$(calc "$S_PPS / $V_PPS")" %.2f) |"
    echo "| request latency p50 / p99 ms | $(json_get "$S_POST" latency_ms_p50) / $(json_get "$S_POST" latency_ms_p99) | $(json_get "$V_POST" latency_ms_p50) / $(json_get "$V_POST" latency_ms_p99) | |"
    echo "| bytes/point on disk after flush | $(fmt "$S_BPP" %.3f) (blocks) · $(fmt "$S_TBPP" %.3f) (blocks + log) | $(fmt "$V_BPP" %.3f) (whole dir) | $(fmt "$(calc "$S_BPP / $V_BPP")" %.2f) · $(fmt "$(calc "$S_TBPP / $V_BPP")" %.2f) |"
    echo "| bytes on disk | $S_BLOCKS_B blocks + $S_WAL_B log | $V_TOTAL_B ($V_DATA_B data + $V_INDEX_B indexdb) | |"
    echo "| peak RSS (VmHWM) MiB | $(fmt "$S_RSS_MB" %.0f) | $(fmt "$V_RSS_MB" %.0f) | $(fmt "$(calc "$S_RSS / $V_RSS")" %.2f) |"
    echo "| server CPU s per M points (ingest) | $(fmt "$S_CPU_PM" %.2f) | $(fmt "$V_CPU_PM" %.2f) | $(fmt "$(calc "$S_CPU_PM / $V_CPU_PM")" %.2f) |"
    echo "| points (series) exported back | $S_COUNT ($S_SERIES) | $V_COUNT ($V_SERIES) | |"
    echo "| load generator CPU s | $(json_get "$S_POST" client_cpu_s) | $(json_get "$V_POST" client_cpu_s) | |"
    echo "| machine while posting: busy % / steal % / other programs % | ${S_LOAD// / \/ } | ${V_LOAD// / \/ } | |"
}

{
    echo "### Ingest benchmark (issue 2)"
    echo
    echo "$(date -u +%Y-%m-%dT%H:%MZ), stele $REV, $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)."
    echo "Workload: $TRUCKS trucks, $NPOINTS points ($(json_get "$GEN" lines) lines, $(fmt "$(calc "$WL_BYTES / 1e6")" %.0f) MB of line protocol), $CLIENTS concurrent keep-alive posters, $BATCH_LINES lines per request."
    echo
    table
    echo
    echo "VictoriaMetrics: size settled after ${V_WAITED} s of force_flush every 5 s; data + indexdb after its stop: $V_AFTER_STOP_DATA_B bytes ($(fmt "$(calc "$V_AFTER_STOP_DATA_B / $NPOINTS")" %.3f) bytes/point; it also writes $((V_AFTER_STOP_B - V_AFTER_STOP_DATA_B)) bytes of caches and metadata at shutdown)."
    echo
    echo "Stele: flush took $(fmt "$S_FLUSH_S" %.2f) s; $S_FSYNCS log fsyncs for $(json_get "$S_POST" batches) requests; $S_REJECT overload rejections; $S_BLOCK_POINTS points in blocks, $S_HEAD_POINTS in the head."
    echo
    echo "Recovery (kill -9 with all points in the log): $R_LINE."
    echo
    echo "Stele CPU by thread during ingest:"
    echo '```'
    echo "$S_THREADS"
    echo '```'
    if [ -n "$P_TEXT" ]; then
        echo
        echo "perf (Stele, separate run, self time by symbol, >= 1%):"
        echo '```'
        echo "$P_TEXT"
        echo '```'
    fi
} >"$OUT/ingest.md"
for l in "stele:$S_LOAD" "victoria-metrics:$V_LOAD"; do
    other=${l##* }
    if [ "$other" -gt 15 ]; then
        W="WARNING: other programs used ${other}% of the machine while ${l%%:*} ingested; its figures are low"
        log "$W"
        printf '\n**%s.**\n' "$W" >>"$OUT/ingest.md"
    fi
done
cat "$OUT/ingest.md"
log "results: $OUT/ingest.md, $OUT/ingest.jsonl"
