#!/usr/bin/env bash
# 13_devices — device identity and sealed telemetry through the real binary (SPEC §6, §7):
# `stele device` (admin) and `stele agent` (acting as devices) against `stele serve`.
#
# Covers: add → enroll → sealed frames accepted, with the identity labels from the
# registry; a replayed frame is `duplicate` and changes nothing, also after a graceful
# restart and after kill -9; a frame re-addressed to another device, a flipped bit, a
# truncated frame and garbage are refused; enrollment tokens are single use and expire;
# quarantine keeps telemetry apart (admin-readable in tenant _quarantine, absent from the
# device's tenant) and release ends it; rotation moves the device to a new key and the
# old key dies; revocation refuses the very next frame and survives restart; every step
# is in the audit trail (`stele audit list`), which `stele audit verify` accepts, and
# refuses once a byte of it is edited; /metrics counts frames by status and devices by
# state.

. "$(dirname "$0")/lib.sh"
e2e_init 13_devices

server_start -- --enroll-ttl 1h
T=$ADMIN_TOKEN
export STELE_URL=$SERVER_URL STELE_TOKEN=$T
A=$E2E_WORK/agent-a
B=$E2E_WORK/agent-b

# query_tenant TENANT EXPR — instant query as admin for TENANT; sets HTTP_BODY.
query_tenant() {
    http POST /api/v1/query -H "Authorization: Token $T" -d "tenant=$1" --data-urlencode "query=$2"
}
# result_count — number of series in the last query answer.
result_count() {
    printf '%s' "$HTTP_BODY" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["data"]["result"]))'
}
# send_file STATE FILE — posts a frame file with the agent; sets SEND_OUT (COUNTER STATUS).
send_file() {
    SEND_OUT=$("$STELE_BIN" agent send --state "$1" "$2" 2>"$E2E_WORK/send.err")
    SEND_RC=$?
}
# post_frames FILE — posts raw bytes to /api/v1/frames; sets HTTP_BODY.
post_frames() {
    http POST /api/v1/frames -H 'Content-Type: application/vnd.stele.frames' --data-binary "@$1"
}
statuses() {
    printf '%s' "$HTTP_BODY" | python3 -c 'import json,sys; print(" ".join(r["status"] for r in json.load(sys.stdin)["results"]))'
}

# ---- registration and enrollment -------------------------------------------------
TOK_A=$("$STELE_BIN" device add pump-7 --tenant plant --cohort line1 2>/dev/null)
expect_match "device add prints the enrollment token alone" '^sen_[0-9a-f]{64}$' "$TOK_A"
TOK_B=$("$STELE_BIN" device add pump-8 --tenant plant 2>/dev/null)
"$STELE_BIN" device add pump-7 --tenant plant >/dev/null 2>"$E2E_WORK/err"
expect_eq "adding the same id twice fails" 1 $?
"$STELE_BIN" device add 'bad id!' >/dev/null 2>&1
expect_eq "a bad device id is a usage error" 2 $?
expect_match "device list shows pending" 'pump-7 plant line1 pending' "$("$STELE_BIN" device list 2>&1)"

"$STELE_BIN" agent keygen --state "$A" >/dev/null 2>&1
expect_eq "agent keygen" 0 $?
"$STELE_BIN" agent keygen --state "$B" >/dev/null 2>&1
"$STELE_BIN" agent keygen --state "$A" >/dev/null 2>&1
expect_ne "keygen refuses to overwrite an identity" 0 $?

"$STELE_BIN" agent enroll --state "$A" --device pump-7 --enroll-token "$TOK_B" >/dev/null 2>&1
expect_ne "another device's token does not enroll" 0 $?
"$STELE_BIN" agent enroll --state "$A" --device pump-7 --enroll-token "$TOK_A" --firmware 1.2.0 >/dev/null 2>&1
expect_eq "agent enroll with its token" 0 $?
"$STELE_BIN" agent enroll --state "$B" --device pump-7 --enroll-token "$TOK_A" >/dev/null 2>&1
expect_ne "an enrollment token works once" 0 $?
"$STELE_BIN" agent enroll --state "$B" --device pump-8 --enroll-token "$TOK_B" >/dev/null 2>&1
expect_eq "second device enrolls" 0 $?
SHOW=$("$STELE_BIN" device show pump-7 2>&1)
expect_match "device show: active with key 1 and firmware" 'state +active' "$SHOW"
expect_match "device show: key id 1" 'key +id 1' "$SHOW"
expect_match "device show: firmware" 'firmware +1.2.0' "$SHOW"

# ---- sealed frames ----------------------------------------------------------------
NOWNS=$(($(now_s) * 1000000000))
OUT=$(printf 'flow_lpm=12.5,temp_c=40\nflow_lpm=13\n' | "$STELE_BIN" agent send --state "$A" 2>&1)
expect_eq "agent send: two frames accepted" 2 "$(printf '%s\n' "$OUT" | grep -c ' accepted$')"
"$STELE_BIN" agent seal --state "$A" --time "$NOWNS" flow_lpm=99 >"$E2E_WORK/f1.bin"
expect_eq "agent seal writes a frame" 0 $?
post_frames "$E2E_WORK/f1.bin"
expect_eq "a sealed frame from a file is accepted" accepted "$(statuses)"
post_frames "$E2E_WORK/f1.bin"
expect_eq "the same frame again is a duplicate (a success)" duplicate "$(statuses)"
query_tenant plant 'flow_lpm{device="pump-7"}'
expect_match "points carry device and tenant from the registry" '"device":"pump-7".*"tenant":"plant"|"tenant":"plant".*"device":"pump-7"' "$HTTP_BODY"
query_tenant plant 'max_over_time(flow_lpm{device="pump-7"}[10m])'
expect_match "the file frame's point is stored" '"99"' "$HTTP_BODY"
query_tenant plant 'count_over_time(flow_lpm{device="pump-7"}[10m])'
expect_match "the duplicate stored nothing more (3 points)" '"3"' "$HTTP_BODY"

# Attacks on the wire.
python3 - "$E2E_WORK/f1.bin" "$E2E_WORK" <<'EOF'
import sys
b = bytearray(open(sys.argv[1], 'rb').read())
w = sys.argv[2]
# Re-address to pump-8 (same length id: last byte 7 -> 8): pump-7's signature, pump-8's key.
i = b.index(b'pump-7') + 5
x = bytearray(b); x[i] = ord('8'); open(w + '/readdressed.bin', 'wb').write(x)
# A flipped bit in the value of the last point (just before the signature).
x = bytearray(b); x[len(b) - 65] ^= 0x01; open(w + '/flipped.bin', 'wb').write(x)
open(w + '/truncated.bin', 'wb').write(b[:-1])
open(w + '/garbage.bin', 'wb').write(b'\x00' * 40)
# Two frames in one body, the second a copy of the first.
open(w + '/twice.bin', 'wb').write(b + b)
EOF
post_frames "$E2E_WORK/readdressed.bin"
expect_eq "a frame re-addressed to another device: bad_signature" bad_signature "$(statuses)"
post_frames "$E2E_WORK/flipped.bin"
expect_eq "a flipped bit: bad_signature" bad_signature "$(statuses)"
post_frames "$E2E_WORK/truncated.bin"
expect_eq "a truncated frame: malformed" malformed "$(statuses)"
post_frames "$E2E_WORK/garbage.bin"
expect_eq "garbage: malformed" malformed "$(statuses)"
"$STELE_BIN" agent seal --state "$A" flow_lpm=7 >"$E2E_WORK/f2.bin"
cat "$E2E_WORK/f2.bin" "$E2E_WORK/f2.bin" >"$E2E_WORK/twice.bin"
post_frames "$E2E_WORK/twice.bin"
expect_eq "one frame twice in one body: accepted, then duplicate" "accepted duplicate" "$(statuses)"
"$STELE_BIN" agent seal --state "$A" --time $((NOWNS + 3600 * 1000000000)) flow_lpm=1 >"$E2E_WORK/future.bin"
post_frames "$E2E_WORK/future.bin"
expect_eq "a point an hour ahead of the server clock: clock_skew" clock_skew "$(statuses)"
http POST /api/v1/frames -H 'Content-Type: text/plain' --data-binary "@$E2E_WORK/f2.bin"
expect_status "frames with a wrong content type" 415

# ---- restarts keep the windows ------------------------------------------------------
server_stop
server_start -- --enroll-ttl 1h
export STELE_URL=$SERVER_URL
post_frames "$E2E_WORK/f1.bin"
expect_eq "after a graceful restart the old frame is still a duplicate" duplicate "$(statuses)"
"$STELE_BIN" agent seal --state "$A" flow_lpm=21 >"$E2E_WORK/f3.bin"
post_frames "$E2E_WORK/f3.bin"
expect_eq "a new frame after restart" accepted "$(statuses)"
server_kill9
server_start -- --enroll-ttl 1h
export STELE_URL=$SERVER_URL
post_frames "$E2E_WORK/f3.bin"
expect_eq "after kill -9 an acknowledged frame is still a duplicate" duplicate "$(statuses)"

# ---- quarantine and release ------------------------------------------------------------
"$STELE_BIN" device quarantine pump-7 >/dev/null 2>&1
expect_eq "device quarantine" 0 $?
"$STELE_BIN" agent seal --state "$A" --time "$NOWNS" quarantined_metric=5 >"$E2E_WORK/q.bin"
post_frames "$E2E_WORK/q.bin"
expect_eq "a quarantined device's frame is taken (not tipped off)" accepted "$(statuses)"
query_tenant plant 'quarantined_metric'
expect_eq "quarantined telemetry is absent from the tenant's queries" 0 "$(result_count)"
query_tenant _quarantine 'quarantined_metric{device="pump-7"}'
expect_eq "an admin reads it in tenant _quarantine" 1 "$(result_count)"
"$STELE_BIN" device release pump-7 >/dev/null 2>&1
expect_eq "device release" 0 $?

# ---- rotation ----------------------------------------------------------------------------
"$STELE_BIN" agent seal --state "$A" flow_lpm=30 >"$E2E_WORK/oldkey.bin"
"$STELE_BIN" agent rotate --state "$A" >/dev/null 2>"$E2E_WORK/rot.err"
expect_eq "agent rotate" 0 $?
expect_match "the new key is pending with an overlap deadline" 'next_key +id 2' "$("$STELE_BIN" device show pump-7 2>&1)"
post_frames "$E2E_WORK/oldkey.bin"
expect_eq "the old key still works during the overlap" accepted "$(statuses)"
OUT=$(echo flow_lpm=31 | "$STELE_BIN" agent send --state "$A" 2>&1)
expect_match "the first frame under the new key" ' accepted$' "$OUT"
expect_match "the new key is now the current one" 'key +id 2' "$("$STELE_BIN" device show pump-7 2>&1)"
# Re-posting the old-key frame is refused for its dead key before any window is looked
# at (it would otherwise be a duplicate).
post_frames "$E2E_WORK/oldkey.bin"
expect_eq "the old key is dead after the first new-key frame" revoked "$(statuses)"

# ---- revocation ---------------------------------------------------------------------------
"$STELE_BIN" device revoke pump-8 >/dev/null 2>&1
expect_eq "device revoke" 0 $?
OUT=$(echo flow_lpm=2 | "$STELE_BIN" agent send --state "$B" 2>&1)
expect_match "the very next frame of a revoked device is refused" ' revoked$' "$OUT"
"$STELE_BIN" device quarantine pump-8 >/dev/null 2>&1
expect_ne "a revoked device cannot be quarantined (or released)" 0 $?
server_stop
server_start -- --enroll-ttl 1h
export STELE_URL=$SERVER_URL
OUT=$(echo flow_lpm=3 | "$STELE_BIN" agent send --state "$B" 2>&1)
expect_match "revocation survives a restart" ' revoked$' "$OUT"
TOK_B2=$("$STELE_BIN" device reenroll pump-8 2>/dev/null)
expect_match "reenroll prints a fresh token" '^sen_[0-9a-f]{64}$' "$TOK_B2"
expect_match "reenroll: pending again" 'state +pending' "$("$STELE_BIN" device show pump-8 2>&1)"

# ---- token expiry ---------------------------------------------------------------------------
server_stop
server_start -- --enroll-ttl 1s
export STELE_URL=$SERVER_URL
TOK_C=$("$STELE_BIN" device add pump-9 --tenant plant 2>/dev/null)
sleep 2
"$STELE_BIN" agent keygen --state "$E2E_WORK/agent-c" >/dev/null 2>&1
"$STELE_BIN" agent enroll --state "$E2E_WORK/agent-c" --device pump-9 --enroll-token "$TOK_C" >/dev/null 2>&1
expect_ne "an expired enrollment token is refused" 0 $?

# ---- audit trail and metrics ---------------------------------------------------------------
http GET /metrics -H "Authorization: Token $T"
expect_match "metrics: frames by status" 'stele_frames_total\{status="accepted"\}' "$HTTP_BODY"
expect_match "metrics: devices by state" 'stele_devices\{state="revoked"\} 0|stele_devices\{state="pending"\} [12]' "$HTTP_BODY"
LIST=$("$STELE_BIN" audit list --device pump-7 2>&1)
for a in device.add device.enroll device.quarantine device.release device.rotate; do
    expect_match "audit list shows $a for pump-7" "$a" "$LIST"
done
expect_match "audit list shows the revocation of pump-8" 'device.revoke' "$("$STELE_BIN" audit list --device pump-8 2>&1)"
server_stop
"$STELE_BIN" audit verify --data "$SERVER_DATA" >"$E2E_WORK/verify.out" 2>&1
expect_eq "audit verify accepts the untouched trail" 0 $?
SEG=$(ls "$SERVER_DATA"/audit/*.log | head -n 1)
python3 - "$SEG" <<'EOF'
import sys
p = sys.argv[1]
b = bytearray(open(p, 'rb').read())
i = b.find(b'device.enroll')
b[i] ^= 0x20 # DEVICE... -> one letter's case
open(p, 'wb').write(b)
EOF
"$STELE_BIN" audit verify --data "$SERVER_DATA" >"$E2E_WORK/verify.out" 2>&1
expect_eq "audit verify detects an edited record" 1 $?

e2e_finish
