# shellcheck shell=bash
# shellcheck disable=SC2034 # SERVER_*, EXPORT_N, METRIC… are results read by the tests
# lib.sh — shared helpers for the end-to-end tests in tests/e2e/.
#
# Each numbered test sources this file, calls e2e_init NAME, and then drives the REAL
# build/stele: it starts `stele serve` on a free 127.0.0.1 port in a fresh mktemp data
# directory, talks to it with curl and the stele CLI, and checks results exactly. The
# first failed check ends the test (exit 1) with "expected X, got Y"; an EXIT trap
# always stops every server the test started, removes the temporary directory and
# prints the summary line "NAME: P passed, F failed".
#
# Design choices:
# - No `set -e`: every check is explicit, so a failure says what was expected. `set -u`
#   and pipefail catch typos and broken pipelines.
# - Every wait is bounded (E2E_START_TIMEOUT, E2E_STOP_TIMEOUT, curl --max-time), so a
#   hung server fails the test instead of hanging ctest until its 600 s timeout.
# - JSON is read with python3 (standard library only), the one tool besides curl, gzip
#   and coreutils these tests need.
# - Servers are children of the test shell (started with &), so `wait` yields their
#   exit status and the trap can kill exactly the processes the test started, by pid.
#
# Environment: STELE_BIN (default: build/stele of the repository holding this file),
# STELE_SOURCE_DIR (default: that repository), E2E_KEEP=1 keeps the temporary directory
# for a post-mortem.

set -uo pipefail

# Bounds. Start: recovery of a small test store takes well under a second; 20 s leaves
# room for a loaded CI machine. Stop: a graceful stop flushes the head, same reasoning.
E2E_START_TIMEOUT=${E2E_START_TIMEOUT:-20}
E2E_STOP_TIMEOUT=${E2E_STOP_TIMEOUT:-20}
# Per-request bound for curl: every request in these tests is small.
E2E_CURL_TIMEOUT=${E2E_CURL_TIMEOUT:-15}

E2E_PASSED=0
E2E_FAILED=0
E2E_NAME=e2e
E2E_WORK=
E2E_DONE=0
SERVER_PID=
SERVER_PORT=
SERVER_URL=
SERVER_DATA=
SERVER_LOG=
ADMIN_TOKEN=
# Every pid this test started in the background (servers and helper loops), for the trap.
E2E_PIDS=()

e2e_init() {
    E2E_NAME=$1
    local here
    here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
    STELE_SOURCE_DIR=${STELE_SOURCE_DIR:-$(cd "$here/../.." && pwd)}
    STELE_BIN=${STELE_BIN:-$STELE_SOURCE_DIR/build/stele}
    export STELE_SOURCE_DIR STELE_BIN
    # Client commands must never pick up the caller's server or token by accident.
    unset STELE_URL STELE_TOKEN
    trap e2e_cleanup EXIT
    trap 'e2e_fail "interrupted"' INT TERM
    local tool
    for tool in curl python3 gzip; do
        command -v "$tool" >/dev/null 2>&1 || {
            echo "$E2E_NAME: needs $tool on PATH" >&2
            exit 1
        }
    done
    [ -x "$STELE_BIN" ] || {
        echo "$E2E_NAME: no executable at STELE_BIN=$STELE_BIN (build first: cmake -S . -B build && cmake --build build)" >&2
        exit 1
    }
    E2E_WORK=$(mktemp -d "${TMPDIR:-/tmp}/stele-e2e-$E2E_NAME.XXXXXX") || exit 1
    echo "$E2E_NAME: using $STELE_BIN, work dir $E2E_WORK"
}

e2e_cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local pid
    for pid in "${E2E_PIDS[@]}"; do
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
    done
    for pid in "${E2E_PIDS[@]}"; do
        wait "$pid" 2>/dev/null
    done
    if [ "$E2E_DONE" != 1 ] && [ "$E2E_FAILED" = 0 ]; then
        # Left early without going through e2e_fail (e.g. a helper exited): count it.
        E2E_FAILED=1
        rc=1
    fi
    if [ -n "$E2E_WORK" ] && [ -d "$E2E_WORK" ]; then
        if [ "${E2E_KEEP:-0}" = 1 ] || [ "$E2E_FAILED" != 0 ]; then
            if [ -n "$SERVER_LOG" ] && [ -s "$SERVER_LOG" ]; then
                echo "--- last lines of the server log ($SERVER_LOG):"
                tail -n 15 "$SERVER_LOG"
            fi
        fi
        if [ "${E2E_KEEP:-0}" = 1 ]; then
            echo "$E2E_NAME: kept $E2E_WORK"
        else
            rm -rf "$E2E_WORK"
        fi
    fi
    echo "$E2E_NAME: $E2E_PASSED passed, $E2E_FAILED failed"
    [ "$E2E_FAILED" = 0 ] || rc=1
    exit "$rc"
}

# e2e_forget_pid PID — the process was reaped: drop it from E2E_PIDS, so the trap never
# signals a pid the kernel may since have given to an unrelated process.
e2e_forget_pid() {
    local keep=() p
    for p in "${E2E_PIDS[@]}"; do
        [ "$p" = "$1" ] || keep+=("$p")
    done
    E2E_PIDS=("${keep[@]}")
}

# e2e_reap PID — waits for a process that has exited (or is about to) and forgets it;
# sets REAPED_STATUS to its exit status.
e2e_reap() {
    wait "$1" 2>/dev/null
    REAPED_STATUS=$?
    e2e_forget_pid "$1"
}

# e2e_fail MESSAGE — the first failure ends the test.
e2e_fail() {
    E2E_FAILED=$((E2E_FAILED + 1))
    echo "FAIL: $*" >&2
    exit 1
}

# e2e_pass WHAT — one passed check.
e2e_pass() {
    E2E_PASSED=$((E2E_PASSED + 1))
    echo "ok $E2E_PASSED - $*"
}

# e2e_finish — call at the very end of a test.
e2e_finish() {
    E2E_DONE=1
    exit 0
}

# expect_eq WHAT EXPECTED GOT
expect_eq() {
    if [ "$2" == "$3" ]; then
        e2e_pass "$1"
    else
        e2e_fail "$1: expected $(e2e_quote "$2"), got $(e2e_quote "$3")"
    fi
}

# expect_ne WHAT UNEXPECTED GOT
expect_ne() {
    if [ "$2" != "$3" ]; then
        e2e_pass "$1"
    else
        e2e_fail "$1: expected anything but $(e2e_quote "$2"), got it"
    fi
}

# expect_match WHAT ERE TEXT — TEXT matches the extended regular expression.
expect_match() {
    if printf '%s' "$3" | grep -Eq -- "$2"; then
        e2e_pass "$1"
    else
        e2e_fail "$1: expected text matching /$2/, got $(e2e_quote "$3")"
    fi
}

# expect_no_match WHAT ERE TEXT
expect_no_match() {
    if printf '%s' "$3" | grep -Eq -- "$2"; then
        e2e_fail "$1: expected no text matching /$2/, got $(e2e_quote "$3")"
    else
        e2e_pass "$1"
    fi
}

# expect_file_eq WHAT EXPECTED_FILE GOT_FILE — shows a diff on mismatch.
expect_file_eq() {
    if cmp -s "$2" "$3"; then
        e2e_pass "$1"
    else
        echo "--- diff expected got ($1):" >&2
        diff -u "$2" "$3" | head -n 40 >&2
        e2e_fail "$1: expected the content of $2, got that of $3 (diff above)"
    fi
}

# Long values are cut so a failure message stays readable.
e2e_quote() {
    local s=$1
    [ ${#s} -gt 600 ] && s="${s:0:600}…(${#1} bytes)"
    printf '"%s"' "$s"
}

# free_port — prints a TCP port on 127.0.0.1 that was free a moment ago. The kernel
# picks it (bind to port 0), so parallel tests do not collide; the small window before
# the server binds it is covered by server_start's retry.
free_port() {
    python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
}

# server_start [DATA_DIR] [-- extra serve flags...]
# Starts `stele serve` in the background on a free port and waits (bounded) until
# GET /ready answers 200. Sets SERVER_PID, SERVER_PORT, SERVER_URL, SERVER_DATA,
# SERVER_LOG and ADMIN_TOKEN. The data directory defaults to $E2E_WORK/data and
# persists between starts, so a restart sees the same store.
server_start() {
    local data=$E2E_WORK/data
    if [ $# -gt 0 ] && [ "$1" != "--" ]; then
        data=$1
        shift
    fi
    [ $# -gt 0 ] && [ "$1" = "--" ] && shift
    SERVER_DATA=$data
    SERVER_LOG=$E2E_WORK/server.log
    local _
    for _ in 1 2 3; do
        SERVER_PORT=$(free_port) || e2e_fail "free_port: python3 could not bind 127.0.0.1"
        SERVER_URL=http://127.0.0.1:$SERVER_PORT
        echo "=== start $(date +%T.%N) port $SERVER_PORT: stele serve --data $data $*" >>"$SERVER_LOG"
        local mark
        mark=$(wc -l <"$SERVER_LOG")
        "$STELE_BIN" serve --data "$data" --http "127.0.0.1:$SERVER_PORT" "$@" >>"$SERVER_LOG" 2>&1 &
        SERVER_PID=$!
        E2E_PIDS+=("$SERVER_PID")
        if server_wait_ready; then
            ADMIN_TOKEN=$(head -n 1 "$data/admin.token" 2>/dev/null)
            [ -n "$ADMIN_TOKEN" ] || e2e_fail "server_start: no admin token in $data/admin.token"
            return 0
        fi
        # Died before ready. Retry only when someone else took the port in between.
        if kill -0 "$SERVER_PID" 2>/dev/null; then
            kill -9 "$SERVER_PID" 2>/dev/null
            e2e_reap "$SERVER_PID"
            e2e_fail "server_start: /ready did not answer 200 within ${E2E_START_TIMEOUT}s (log: $SERVER_LOG)"
        fi
        e2e_reap "$SERVER_PID"
        if ! tail -n +"$((mark + 1))" "$SERVER_LOG" | grep -qi 'in use'; then
            tail -n +"$((mark + 1))" "$SERVER_LOG" >&2
            e2e_fail "server_start: stele serve exited before it was ready (log above)"
        fi
    done
    e2e_fail "server_start: no free port after 3 attempts"
}

# server_wait_ready — 0 once /ready is 200; 1 if the server died or the time ran out.
server_wait_ready() {
    local deadline=$((SECONDS + E2E_START_TIMEOUT))
    while [ $SECONDS -lt "$deadline" ]; do
        kill -0 "$SERVER_PID" 2>/dev/null || return 1
        local code
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$SERVER_URL/ready" 2>/dev/null)
        [ "$code" = 200 ] && return 0
        sleep 0.05
    done
    return 1
}

# server_stop — SIGTERM, then a bounded wait; the graceful stop must exit 0.
server_stop() {
    [ -n "$SERVER_PID" ] || return 0
    local pid=$SERVER_PID
    SERVER_PID=
    kill -TERM "$pid" 2>/dev/null
    local deadline=$((SECONDS + E2E_STOP_TIMEOUT))
    while kill -0 "$pid" 2>/dev/null; do
        if [ $SECONDS -ge "$deadline" ]; then
            kill -9 "$pid" 2>/dev/null
            e2e_reap "$pid"
            e2e_fail "server_stop: pid $pid still running ${E2E_STOP_TIMEOUT}s after SIGTERM (killed it)"
        fi
        sleep 0.05
    done
    e2e_reap "$pid"
    SERVER_EXIT=$REAPED_STATUS
    return 0
}

# server_kill9 — kill -9, as a power cut would; reaps the process.
server_kill9() {
    [ -n "$SERVER_PID" ] || return 0
    local pid=$SERVER_PID
    SERVER_PID=
    kill -9 "$pid" 2>/dev/null
    e2e_reap "$pid"
    return 0
}

# http METHOD PATH_AND_QUERY [curl args...]
# One request to the running server. Sets HTTP_STATUS, HTTP_BODY (the body text) and
# HTTP_HEADERS (the response header block, CRs removed). Never fails by itself.
http() {
    local method=$1 path=$2
    shift 2
    local bodyf=$E2E_WORK/http.body hdrf=$E2E_WORK/http.headers
    : >"$bodyf"
    : >"$hdrf"
    local method_args=(-X "$method")
    [ "$method" = HEAD ] && method_args=(-I)
    HTTP_STATUS=$(curl -s -g "${method_args[@]}" -o "$bodyf" -D "$hdrf" -w '%{http_code}' \
        --max-time "$E2E_CURL_TIMEOUT" "$@" "$SERVER_URL$path" 2>/dev/null)
    [ -n "$HTTP_STATUS" ] || HTTP_STATUS=000
    HTTP_BODY=$(cat "$bodyf")
    HTTP_HEADERS=$(tr -d '\r' <"$hdrf")
}

# header NAME — value of response header NAME from the last http call (case-insensitive).
header() {
    printf '%s\n' "$HTTP_HEADERS" | awk -v n="$(printf '%s' "$1" | tr '[:upper:]' '[:lower:]')" '
        { i = index($0, ":"); if (i && tolower(substr($0, 1, i - 1)) == n) { v = substr($0, i + 1); sub(/^[ \t]+/, "", v); print v; exit } }'
}

# write_lp TOKEN QUERY BODY — POST BODY to /write?QUERY with token auth.
write_lp() {
    http POST "/write?$2" -H "Authorization: Token $1" --data-binary "$3"
}

# write_v2 TOKEN QUERY BODY — POST BODY to /api/v2/write?QUERY with token auth.
write_v2() {
    http POST "/api/v2/write?$2" -H "Authorization: Token $1" --data-binary "$3"
}

# json_get FIELD — prints top-level FIELD of the JSON in HTTP_BODY (empty if absent or
# not JSON). Numbers print as Python prints them.
json_get() {
    printf '%s' "$HTTP_BODY" | python3 -c '
import json, sys
try:
    v = json.load(sys.stdin)
except Exception:
    sys.exit(0)
if isinstance(v, dict) and sys.argv[1] in v:
    x = v[sys.argv[1]]
    print(x if not isinstance(x, bool) else str(x).lower())' "$1"
}

# is_json_error — 0 if HTTP_BODY is a JSON error object with a non-empty explanation:
# Stele's {"code":…,"message":…} or, on the Prometheus-compatible read endpoints,
# Prometheus' {"status":"error","errorType":…,"error":…} (SPEC §3).
is_json_error() {
    printf '%s' "$HTTP_BODY" | python3 -c '
import json, sys
try:
    v = json.load(sys.stdin)
except Exception:
    sys.exit(1)
ok = lambda k: isinstance(v.get(k), str) and v[k] != ""
sys.exit(0 if isinstance(v, dict) and (ok("message") or (v.get("status") == "error" and ok("error"))) else 1)'
}

# expect_status WHAT CODE — checks HTTP_STATUS of the last request; on mismatch the
# message carries the body, which says why.
expect_status() {
    if [ "$HTTP_STATUS" == "$2" ]; then
        e2e_pass "$1"
    else
        e2e_fail "$1: expected HTTP $2, got HTTP $HTTP_STATUS with body $(e2e_quote "$HTTP_BODY")"
    fi
}

# expect_error WHAT CODE — status CODE and a JSON error body with a message (SPEC §3).
expect_error() {
    expect_status "$1" "$2"
    if is_json_error; then
        e2e_pass "$1: JSON error body with a message"
    else
        e2e_fail "$1: expected a JSON error body with \"message\" (or Prometheus' \"error\"), got $(e2e_quote "$HTTP_BODY")"
    fi
}

# export_points TOKEN SELECTOR [extra query args...] — exports SELECTOR and sets EXPORT
# to canonical lines "NAME{k="v",…} TS_MS VALUE", one per point, sorted, and EXPORT_N
# to their count. Labels are sorted by name; values print as integers when integral,
# else as Python's shortest repr (so equal text means equal float64). Fails the test if
# the export is not well-formed: HTTP status other than 200, a line that is not an
# object with metric/values/timestamps, values and timestamps of different lengths or
# empty, timestamps not strictly increasing within a series, one series on two lines.
export_points() {
    local token=$1 sel=$2
    shift 2
    local args=(--data-urlencode "match[]=$sel")
    local a
    for a in "$@"; do args+=(--data-urlencode "$a"); done
    http GET "/api/v1/export" -G -H "Authorization: Token $token" "${args[@]}"
    [ "$HTTP_STATUS" = 200 ] || e2e_fail "export $sel: expected HTTP 200, got $HTTP_STATUS with body $(e2e_quote "$HTTP_BODY")"
    if ! EXPORT=$(python3 "$E2E_LIB_DIR/export_norm.py" <"$E2E_WORK/http.body" 2>&1); then
        e2e_fail "export $sel: malformed export: $EXPORT"
    fi
    if [ -z "$EXPORT" ]; then EXPORT_N=0; else EXPORT_N=$(printf '%s\n' "$EXPORT" | wc -l | tr -d ' '); fi
}

# expect_export WHAT TOKEN SELECTOR EXPECTED [extra query args...] — the export of
# SELECTOR is exactly the canonical lines EXPECTED (any order; "" for none).
expect_export() {
    local what=$1 token=$2 sel=$3 expected=$4
    shift 4
    export_points "$token" "$sel" "$@"
    local want=$E2E_WORK/export.want got=$E2E_WORK/export.got
    if [ -n "$expected" ]; then printf '%s\n' "$expected" | LC_ALL=C sort >"$want"; else : >"$want"; fi
    if [ -n "$EXPORT" ]; then printf '%s\n' "$EXPORT" | LC_ALL=C sort >"$got"; else : >"$got"; fi
    expect_file_eq "$what" "$want" "$got"
}

# metric_value NAME_WITH_LABELS — sets METRIC to the value of that sample in GET
# /metrics (admin token), or "absent"; e.g.
# metric_value 'stele_ingest_rejected_timestamps_total{reason="future"}'.
metric_value() {
    http GET /metrics -H "Authorization: Token $ADMIN_TOKEN"
    [ "$HTTP_STATUS" = 200 ] || e2e_fail "GET /metrics: expected 200, got $HTTP_STATUS"
    METRIC=$(printf '%s\n' "$HTTP_BODY" | awk -v n="$1" '$1 == n { print $2; found = 1; exit } END { if (!found) print "absent" }')
}

# now_s — wall clock, whole seconds.
now_s() { date +%s; }

E2E_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
