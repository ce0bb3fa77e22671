#!/usr/bin/env bash
# frames.sh — the sealed-telemetry benchmark of issue 5: verified ingestion through
# POST /api/v1/frames against the bare cost of Ed25519 verification measured in the same
# run, a burst of enrollments, and revocation latency.
#
# Design: a fresh data directory; `stele serve` with default settings (fsync per
# acknowledgement, anti-replay windows, audit trail) and nothing else running; then
# build/bench/frames_load (see its header) against it: DEVICES (10,000) devices are added
# and enrolled in a burst by ENROLL_CLIENTS (32) concurrent clients, FRAMES (400,000)
# frames of POINTS (50) points are sealed in advance, the bare verification rate is
# measured with 1 and 2 threads while the server idles (2 = the machine's cores: the
# verification limit), then CLIENTS (4) keep-alive clients post BATCH (256) frames per
# request (a gateway's batch), and REVOCATIONS (20) revocations are timed against a device that keeps
# sending. The server's CPU time over the send phase comes from /proc.
#
# Target (issue 5): frames/s >= 70% of the 2-thread verification rate.
# Knobs (environment): DEVICES, FRAMES, POINTS, BATCH, CLIENTS, ENROLL_CLIENTS,
# VERIFY_SECONDS (3), REVOCATIONS, BUILD_DIR (build), BUILD (1), KEEP (0).
# Results: the JSON lines on stdout, bench/out/frames.jsonl and bench/out/frames.md.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEVICES=${DEVICES:-10000}
FRAMES=${FRAMES:-400000}
POINTS=${POINTS:-50}
BATCH=${BATCH:-256}
CLIENTS=${CLIENTS:-4}
ENROLL_CLIENTS=${ENROLL_CLIENTS:-32}
VERIFY_SECONDS=${VERIFY_SECONDS:-3}
REVOCATIONS=${REVOCATIONS:-20}
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
OUT=$ROOT/bench/out
mkdir -p "$OUT"

if [ "${BUILD:-1}" = 1 ]; then
    cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build "$BUILD_DIR" -j2 --target stele frames_load >/dev/null
fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/stele-bench-frames.XXXXXX")
PID=
cleanup() {
    [ -n "$PID" ] && kill -9 "$PID" 2>/dev/null
    [ "${KEEP:-0}" = 1 ] && echo "kept $WORK" >&2 || rm -rf "$WORK"
}
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
URL=http://127.0.0.1:$PORT
"$BUILD_DIR/stele" serve --data "$WORK/data" --http "127.0.0.1:$PORT" --metrics-open \
    >"$WORK/server.log" 2>&1 &
PID=$!
for _ in $(seq 1 200); do
    curl -sf "$URL/ready" >/dev/null 2>&1 && break
    sleep 0.05
done
TOKEN=$(head -n 1 "$WORK/data/admin.token")

cpu_ticks() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
CPU0=$(cpu_ticks)
"$BUILD_DIR/bench/frames_load" --url "$URL" --token "$TOKEN" --devices "$DEVICES" \
    --frames "$FRAMES" --points "$POINTS" --batch "$BATCH" --clients "$CLIENTS" \
    --enroll-clients "$ENROLL_CLIENTS" --verify-seconds "$VERIFY_SECONDS" \
    --revocations "$REVOCATIONS" | tee "$WORK/run.jsonl"
CPU1=$(cpu_ticks)
HZ=$(getconf CLK_TCK)
curl -s "$URL/metrics" | grep -E '^stele_(frames_total|devices|wal_fsyncs_total|enrollments_total)' \
    >"$WORK/metrics.txt" || true
kill -TERM "$PID"
wait "$PID" || true
PID=

python3 - "$WORK/run.jsonl" "$OUT" "$((CPU1 - CPU0))" "$HZ" "$WORK/metrics.txt" \
    "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith('{')]
out, ticks, hz, metrics, head = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
by = {r['phase']: r for r in rows}
s = by['summary']
with open(out + '/frames.jsonl', 'a') as f:
    f.write(json.dumps({'head': head, 'rows': rows, 'server_cpu_seconds': ticks / hz}) + '\n')
lines = [f"# frames benchmark (HEAD {head})", "",
         "| figure | value |", "|---|---|",
         f"| bare Ed25519 verify, 1 thread | {s['verify_1_thread']:,.0f} /s |",
         f"| bare Ed25519 verify, 2 threads (the limit) | {s['verify_2_threads']:,.0f} /s |",
         f"| POST /api/v1/frames, frames/s | {s['frames_per_second']:,.0f} |",
         f"| points/s | {s['points_per_second']:,.0f} |",
         f"| of the verification limit | {100 * s['of_verify_limit']:.1f} % |",
         f"| client CPU during the send (cores) | {by['send'].get('client_cpu_cores', 0):.2f} |",
         f"| frames not accepted | {by['send']['not_accepted']} |",
         f"| requests retried after 503 (head full during a flush) | {by['send'].get('retried_503', 0)} |",
         f"| add {by['add']['devices']:,} devices | {by['add']['seconds']:.2f} s, {by['add']['errors']} errors |",
         f"| enroll burst ({by['enroll']['clients']} clients) | {by['enroll']['seconds']:.2f} s ({by['enroll']['per_second']:,.0f}/s), {by['enroll']['errors']} errors |",
         f"| after the burst: listed / active / key id 1 / duplicates | {by['enroll_check']['listed']} / {by['enroll_check']['active']} / {by['enroll_check']['key_id_1']} / {by['enroll_check']['duplicates']} |"]
if 'revoke' in by:
    r = by['revoke']
    lines += [f"| revocation: admin call (median / max) | {r['call_ms_median']:.2f} / {r['call_ms_max']:.2f} ms |",
              f"| revocation: call start → first refused frame (median / max) | {r['first_refusal_ms_median']:.2f} / {r['first_refusal_ms_max']:.2f} ms |",
              f"| frames accepted after the revoke call returned | {r['accepted_after_revoke_returned']} |"]
lines += [f"| server CPU over the whole run | {ticks / hz:.1f} s |", "", "```", open(metrics).read().strip(), "```"]
open(out + '/frames.md', 'w').write('\n'.join(lines) + '\n')
print('\n'.join(lines))
EOF
