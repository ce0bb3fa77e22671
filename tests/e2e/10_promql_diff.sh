#!/usr/bin/env bash
# 10_promql_diff — differential test of the Prometheus-compatible query API (SPEC §3,
# issue 3): real Prometheus and Stele get the same data and the same queries, and must
# give the same answers.
#
# 1. promql/gen_data.py writes one seeded data set (3 h ending at the last whole
#    minute) twice: OpenMetrics for promtool, Influx line protocol for Stele.
# 2. `promtool tsdb create-blocks-from openmetrics` turns the first into TSDB blocks;
#    `prometheus` serves them on a free 127.0.0.1 port (config without scrape targets,
#    100 y retention, so nothing but those blocks is in it).
# 3. Stele starts on a fresh data directory; promql/compare.py load writes the line
#    protocol, with POST /api/v1/admin/flush halfway (the queries read blocks and the
#    head, and late points written after the flush into sealed time ranges).
# 4. The sample count through each server's query API equals the generator's.
# 5. promql/compare.py run sends every query of promql/queries.txt to both at fixed
#    instants and over fixed ranges (non-aligned starts, steps 15 s, 60 s, 5 m) and
#    compares status, result type, series, timestamps and values (1e-9 relative; NaN
#    equals NaN). Each mismatch is printed with the query, the time and both answers;
#    every (query, time) pair is one check in the summary line.
#
# Needs `prometheus` and `promtool` (Debian package prometheus). Without them the test
# FAILS, so CI cannot pass by not running it, unless STELE_SKIP_PROMETHEUS=1 (then it
# says it skipped and exits 0).
#
# Environment: PROMQL_DIFF_FILTER=REGEX runs only the queries matching REGEX;
# PROMQL_DIFF_SELF=1 compares Prometheus with itself (checks the harness, needs no
# Stele query API); PROMQL_DIFF_SEED=N changes the data; PROMQL_DIFF_FLUSH=0 never
# flushes (every answer comes from the head); PROMQL_DIFF_RESTART=1 restarts Stele
# between loading and querying (answers come from the recovered store);
# PROMQL_DIFF_MAX_PRINT=N shows both answers for the first N mismatches (default 60;
# all go to mismatches.txt in the work directory, kept with E2E_KEEP=1).
#
# Bounded: the whole test stays under 3 min (PROMQL_DIFF_BUDGET seconds, default 170);
# compare.py gets what is left as its deadline, and every request has a timeout.

# shellcheck disable=SC2119 # server_start takes no arguments here on purpose
. "$(dirname "$0")/lib.sh"
e2e_init 10_promql_diff

HERE=$E2E_LIB_DIR/promql
BUDGET=${PROMQL_DIFF_BUDGET:-170}
# Prometheus starts in 1–2 s on this small store; 30 s covers a loaded CI machine.
PROM_START_TIMEOUT=30

if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
    if [ "${STELE_SKIP_PROMETHEUS:-0}" = 1 ]; then
        echo "10_promql_diff: SKIPPED: prometheus/promtool not on PATH and STELE_SKIP_PROMETHEUS=1"
        e2e_finish
    fi
    e2e_fail "needs prometheus and promtool on PATH (Debian 12: apt-get install prometheus;" \
        "scripts/deps.sh installs it). Set STELE_SKIP_PROMETHEUS=1 to skip this test deliberately."
fi
echo "10_promql_diff: $(prometheus --version 2>&1 | head -n 1)"

# ---------------------------------------------------------------- data
python3 "$HERE/compare.py" selftest >"$E2E_WORK/selftest.out" 2>&1 ||
    e2e_fail "compare.py selftest: $(cat "$E2E_WORK/selftest.out")"
e2e_pass "compare.py selftest: $(tail -n 1 "$E2E_WORK/selftest.out")"

# The data ends at the last whole minute: recent for Stele's retention, never in the
# future, and the evaluation times (offsets from END) are the same for both servers.
END=$(($(now_s) / 60 * 60))
SEED=${PROMQL_DIFF_SEED:-20240611}
gen_out=$(python3 "$HERE/gen_data.py" --end "$END" --seed "$SEED" \
    --om "$E2E_WORK/data.om" --lp "$E2E_WORK/data.lp" 2>&1) ||
    e2e_fail "gen_data.py: $gen_out"
echo "$gen_out"
NSAMPLES=$(printf '%s\n' "$gen_out" | sed -n 's/.* \([0-9]*\) samples,.*/\1/p')
[ -n "$NSAMPLES" ] || e2e_fail "gen_data.py: no sample count in its output: $gen_out"
echo "10_promql_diff: END=$END (data $((END - 3 * 3600)) .. $END), seed $SEED (rerun with PROMQL_DIFF_SEED=$SEED)"

# ---------------------------------------------------------------- prometheus
PROM_DATA=$E2E_WORK/prometheus
if ! promtool tsdb create-blocks-from openmetrics "$E2E_WORK/data.om" "$PROM_DATA" \
    >"$E2E_WORK/promtool.log" 2>&1; then
    tail -n 20 "$E2E_WORK/promtool.log" >&2
    e2e_fail "promtool tsdb create-blocks-from openmetrics refused the generated data (log above)"
fi
e2e_pass "promtool built blocks: $(grep -c '^[0-9A-Z]\{26\} ' "$E2E_WORK/promtool.log") block(s)"

cat >"$E2E_WORK/prometheus.yml" <<'EOF'
# No scrape targets: this Prometheus only serves the blocks promtool built.
global:
  scrape_interval: 1m
scrape_configs: []
EOF

PROM_LOG=$E2E_WORK/prometheus.log
PROM_PID=
PROM_URL=
# prom_start — prometheus on a free loopback port; bounded wait for /-/ready.
prom_start() {
    local _ port
    for _ in 1 2 3; do
        port=$(free_port) || e2e_fail "free_port: python3 could not bind 127.0.0.1"
        PROM_URL=http://127.0.0.1:$port
        echo "=== start $(date +%T.%N) port $port" >>"$PROM_LOG"
        prometheus --config.file="$E2E_WORK/prometheus.yml" \
            --storage.tsdb.path="$PROM_DATA" \
            --storage.tsdb.retention.time=100y \
            --web.listen-address="127.0.0.1:$port" \
            --log.level=warn >>"$PROM_LOG" 2>&1 &
        PROM_PID=$!
        E2E_PIDS+=("$PROM_PID")
        local deadline=$((SECONDS + PROM_START_TIMEOUT))
        while [ $SECONDS -lt "$deadline" ] && kill -0 "$PROM_PID" 2>/dev/null; do
            [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$PROM_URL/-/ready")" = 200 ] && return 0
            sleep 0.1
        done
        if kill -0 "$PROM_PID" 2>/dev/null; then
            kill -9 "$PROM_PID" 2>/dev/null
            e2e_reap "$PROM_PID"
            e2e_fail "prometheus: /-/ready did not answer 200 within ${PROM_START_TIMEOUT}s (log: $PROM_LOG)"
        fi
        e2e_reap "$PROM_PID"
        grep -qi 'address already in use' "$PROM_LOG" || {
            tail -n 20 "$PROM_LOG" >&2
            e2e_fail "prometheus exited before it was ready (log above)"
        }
    done
    e2e_fail "prometheus: no free port after 3 attempts"
}
prom_start
e2e_pass "prometheus ready at $PROM_URL"

# count_samples NAME URL [TOKEN] — sets COUNTED to the number of samples the server
# holds, read through its query API as one range vector (every sample lies in the
# 3h10m before END+5m; count_over_time cannot do it: without __name__ the series of
# different metrics would collide).
count_samples() {
    local auth=()
    [ -n "${3:-}" ] && auth=(-H "Authorization: Token $3")
    COUNTED=$(curl -s -g --max-time "$E2E_CURL_TIMEOUT" "${auth[@]}" "$2/api/v1/query" \
        --data-urlencode 'query={__name__=~".+"}[3h10m]' \
        --data-urlencode "time=$((END + 300))" | python3 -c '
import json, sys
try:
    print(sum(len(s["values"]) for s in json.load(sys.stdin)["data"]["result"]))
except Exception as e:
    print("no answer (%s: %s)" % (type(e).__name__, e))')
}
# soft_eq WHAT EXPECTED GOT — like expect_eq, but a mismatch is counted and the test
# goes on, so the query comparison still runs and reports what differs.
soft_eq() {
    if [ "$2" == "$3" ]; then
        e2e_pass "$1"
    else
        E2E_FAILED=$((E2E_FAILED + 1))
        echo "FAIL: $1: expected $(e2e_quote "$2"), got $(e2e_quote "$3")" >&2
    fi
}
count_samples prometheus "$PROM_URL"
expect_eq "prometheus holds every generated sample" "$NSAMPLES" "$COUNTED"

# ---------------------------------------------------------------- stele
if [ "${PROMQL_DIFF_SELF:-0}" = 1 ]; then
    echo "10_promql_diff: PROMQL_DIFF_SELF=1: comparing Prometheus with itself"
    ACTUAL_URL=$PROM_URL ACTUAL_NAME=self ACTUAL_TOKEN=
else
    server_start
    noflush=()
    [ "${PROMQL_DIFF_FLUSH:-1}" = 0 ] && noflush=(--no-flush)
    load_out=$(python3 "$HERE/compare.py" load --url "$SERVER_URL" --token "$ADMIN_TOKEN" \
        --lp "$E2E_WORK/data.lp" "${noflush[@]}" 2>&1) || e2e_fail "loading the line protocol into Stele: $load_out"
    e2e_pass "stele: $load_out"
    if [ "${PROMQL_DIFF_RESTART:-0}" = 1 ]; then
        server_stop
        soft_eq "stele serve exits 0 after SIGTERM (before the queries)" 0 "$SERVER_EXIT"
        server_start "$SERVER_DATA"
        e2e_pass "stele restarted: the queries read the recovered store"
    fi
    count_samples stele "$SERVER_URL" "$ADMIN_TOKEN"
    soft_eq "stele holds every generated sample (counted through /api/v1/query)" "$NSAMPLES" "$COUNTED"
    ACTUAL_URL=$SERVER_URL ACTUAL_NAME=stele ACTUAL_TOKEN=$ADMIN_TOKEN
fi

# ---------------------------------------------------------------- compare
# Kept back from the budget: one request's timeout (10 s) past the deadline, both
# servers' stops (normally well under a second, bounded at 20 s for Stele by lib.sh
# and 10 s here for Prometheus).
left=$((BUDGET - SECONDS - 30))
[ "$left" -gt 10 ] || e2e_fail "no time left for the queries (${SECONDS}s used of ${BUDGET}s)"
filter=()
[ -n "${PROMQL_DIFF_FILTER:-}" ] && filter=(--filter "$PROMQL_DIFF_FILTER")
# In the background and waited for, so that an interrupt runs the trap (which stops
# it with the servers) at once rather than after the last query.
python3 "$HERE/compare.py" run --expected "$PROM_URL" \
    --actual "$ACTUAL_URL" --actual-name "$ACTUAL_NAME" --actual-token "$ACTUAL_TOKEN" \
    --queries "$HERE/queries.txt" --end "$END" --deadline "$left" --timeout 10 \
    --report "$E2E_WORK/mismatches.txt" --max-print "${PROMQL_DIFF_MAX_PRINT:-60}" \
    "${filter[@]}" &
compare_pid=$!
E2E_PIDS+=("$compare_pid")
e2e_reap "$compare_pid"
result=$(grep '^RESULT ' "$E2E_WORK/mismatches.txt" 2>/dev/null | tail -n 1)
[ -n "$result" ] || e2e_fail "compare.py run ended without a RESULT line (output above)"
p=$(printf '%s' "$result" | sed -n 's/.*passed=\([0-9]*\).*/\1/p')
f=$(printf '%s' "$result" | sed -n 's/.*failed=\([0-9]*\).*/\1/p')
E2E_PASSED=$((E2E_PASSED + p))
E2E_FAILED=$((E2E_FAILED + f))

# ---------------------------------------------------------------- stop
if [ "${PROMQL_DIFF_SELF:-0}" != 1 ]; then
    server_stop
    soft_eq "stele serve exits 0 after SIGTERM" 0 "$SERVER_EXIT"
fi
kill -TERM "$PROM_PID" 2>/dev/null
deadline=$((SECONDS + 10))
while kill -0 "$PROM_PID" 2>/dev/null && [ $SECONDS -lt "$deadline" ]; do sleep 0.1; done
kill -9 "$PROM_PID" 2>/dev/null
e2e_reap "$PROM_PID"
if [ "$E2E_FAILED" != 0 ]; then
    [ "${E2E_KEEP:-0}" = 1 ] && echo "10_promql_diff: every mismatch in full: $E2E_WORK/mismatches.txt"
    E2E_DONE=1
    exit 1
fi
e2e_finish
