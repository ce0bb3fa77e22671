#!/usr/bin/env bash
# 03_crash_recovery — durability and damage detection of the real server (SPEC §4).
#
# 1. Crash cycles: three writer loops (bash + curl, bounded) post requests of 50 unique
#    points each and record which requests were acknowledged (204); after a random
#    0.3–2 s the server is killed with SIGKILL (in even cycles with a flush running; in
#    cycle 3 a few ms into a graceful stop; the last cycle is a graceful stop under
#    load instead, which must exit 0). It restarts on the same data directory, and the
#    export must hold every acknowledged point with its exact value, no point that was
#    never sent, and each request whole or not at all. The check covers every cycle so
#    far, so later crashes must not lose earlier data either; `stele check` must find
#    no damage after a crash.
# 2. A clean stop and start keeps everything; `stele check` passes.
# 3. A flipped byte in the middle of a block file: the server refuses to start naming
#    the file, `stele check` exits 1 naming it; restoring the file heals both.
# 4. A torn log tail (the last record cut short) is discarded on start and everything
#    before it is kept.
# 5. A flipped byte in a log record that has valid records after it is corruption, not
#    a torn tail: the server refuses to start naming the segment, `stele check` too.
#
# Randomness is seeded; the seed is printed and E2E_SEED=N reproduces a run.

# shellcheck disable=SC2119 # server_start takes no arguments here on purpose
# shellcheck disable=SC2012 # ls over our own fixed-pattern file names
. "$(dirname "$0")/lib.sh"
e2e_init 03_crash_recovery

SEED=${E2E_SEED:-$((($(date +%s) ^ $$) % 100000))}
RANDOM=$SEED
echo "03_crash_recovery: seed $SEED (rerun with E2E_SEED=$SEED)"

CYCLES=5
WRITERS=3    # concurrent requests share fsyncs (group commit)
REQUESTS=300 # per writer and cycle: ~2.5 s of writing, so the kill lands mid-stream
POINTS=50    # per request, one per series s=0..49
BASE_MS=$((($(now_s) - 3 * 3600) * 1000))

server_start
T=$ADMIN_TOKEN

# make_requests CYCLE — request bodies $E2E_WORK/req/C.W.I.lp. Point (c, w, i, s):
# series crash_v{c,w,s}, time BASE_MS + c*10^6 + i ms, value c*10^7 + w*10^6 + i*100
# + s + 0.25 (not an integer, so the float path is exercised and a mix-up shows).
mkdir -p "$E2E_WORK/req" "$E2E_WORK/log"
make_requests() {
    python3 - "$1" "$WRITERS" "$REQUESTS" "$POINTS" "$BASE_MS" "$E2E_WORK/req" <<'EOF'
import sys
c, writers, requests, points, base = map(int, sys.argv[1:6])
out = sys.argv[6]
for w in range(writers):
    for i in range(requests):
        ts = base + c * 10**6 + i
        body = "".join("crash,c=%d,w=%d,s=%d v=%d.25 %d\n" % (c, w, s, c * 10**7 + w * 10**6 + i * 100 + s, ts)
                       for s in range(points))
        with open("%s/%d.%d.%d.lp" % (out, c, w, i), "w") as f:
            f.write(body)
EOF
}

# writer CYCLE W URL — posts requests 0..REQUESTS-1 in order; appends I to
# log/sent.C.W before each and to log/acked.C.W after a 204. Stops after 3 requests in
# a row could not connect (the server is dead). Other answers go to log/other.C.W.
writer() {
    local c=$1 w=$2 url=$3 i code fails=0
    for ((i = 0; i < REQUESTS; i++)); do
        echo "$i" >>"$E2E_WORK/log/sent.$c.$w"
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 -X POST \
            -H "Authorization: Token $T" --data-binary "@$E2E_WORK/req/$c.$w.$i.lp" \
            "$url/write?precision=ms" 2>/dev/null)
        case $code in
            204) echo "$i" >>"$E2E_WORK/log/acked.$c.$w"; fails=0 ;;
            000) fails=$((fails + 1)); [ $fails -ge 3 ] && break ;;
            *) echo "$i $code" >>"$E2E_WORK/log/other.$c.$w"; fails=0 ;;
        esac
    done
}

# verify_crash_data UP_TO_CYCLE WHAT — exports crash_v and checks it against the logs of
# cycles 1..UP_TO_CYCLE (python3: the rules are in its messages).
cat >"$E2E_WORK/verify.py" <<'EOF'
import json, os, sys
export, logdir, cycles, writers, requests, points, base = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:8])
def read_set(path):
    if not os.path.exists(path):
        return set()
    return {int(l.split()[0]) for l in open(path) if l.strip()}
present = {}   # (c, w, i) -> set of s
errors = []
for line in open(export):
    if not line.strip():
        continue
    o = json.loads(line)
    m = o["metric"]
    try:
        c, w, s = int(m["c"]), int(m["w"]), int(m["s"])
    except Exception:
        errors.append("a series that was never written: %s" % m); continue
    if set(m) != {"__name__", "c", "w", "s"} or m["__name__"] != "crash_v":
        errors.append("unexpected labels: %s" % m); continue
    for ts, v in zip(o["timestamps"], o["values"]):
        i = ts - base - c * 10**6
        want = c * 10**7 + w * 10**6 + i * 100 + s + 0.25
        if not (1 <= c <= cycles and 0 <= w < writers and 0 <= s < points and 0 <= i < requests):
            errors.append("invented point %s at %d = %r" % (m, ts, v)); continue
        if v != want:
            errors.append("point c=%d w=%d i=%d s=%d: expected value %r, got %r" % (c, w, i, s, want, v))
        present.setdefault((c, w, i), set()).add(s)
stats = []
for c in range(1, cycles + 1):
    n_acked = n_sent = n_present = 0
    for w in range(writers):
        sent = read_set("%s/sent.%d.%d" % (logdir, c, w))
        acked = read_set("%s/acked.%d.%d" % (logdir, c, w))
        n_acked += len(acked); n_sent += len(sent)
        for i in sorted(acked):
            got = present.get((c, w, i), set())
            if len(got) != points:
                errors.append("acknowledged request c=%d w=%d i=%d: expected %d points, found %d" % (c, w, i, points, len(got)))
        for (pc, pw, pi), got in present.items():
            if (pc, pw) != (c, w):
                continue
            n_present += 1
            if pi not in sent:
                errors.append("request c=%d w=%d i=%d was never sent, yet %d of its points exist" % (pc, pw, pi, len(got)))
            elif len(got) != points:
                errors.append("request c=%d w=%d i=%d is partly stored: %d of %d points (a request is atomic)" % (pc, pw, pi, len(got), points))
    stats.append("cycle %d: %d sent, %d acked, %d present" % (c, n_sent, n_acked, n_present))
print("; ".join(stats))
if errors:
    print("%d problems, first ones:" % len(errors))
    for e in errors[:12]:
        print("  " + e)
    sys.exit(1)
EOF
verify_crash_data() {
    http GET /api/v1/export -G --data-urlencode 'match[]=crash_v' -H "Authorization: Token $T"
    [ "$HTTP_STATUS" = 200 ] || e2e_fail "$2: export answered $HTTP_STATUS: $(e2e_quote "$HTTP_BODY")"
    cp "$E2E_WORK/http.body" "$E2E_WORK/crash.export"
    local out
    out=$(python3 "$E2E_WORK/verify.py" "$E2E_WORK/crash.export" "$E2E_WORK/log" "$1" \
        "$WRITERS" "$REQUESTS" "$POINTS" "$BASE_MS" 2>&1)
    local rc=$?
    echo "   $out" | head -n 1
    if [ $rc = 0 ]; then
        e2e_pass "$2: every acknowledged point exact, nothing invented, requests whole"
    else
        e2e_fail "$2: $out"
    fi
}

# sleep_ms MS — sleeps MS milliseconds.
sleep_ms() {
    sleep "$(($1 / 1000)).$(printf '%03d' $(($1 % 1000)))"
}

# wait_pids_bounded SECONDS PID... — waits for helper processes, failing past the bound.
wait_pids_bounded() {
    local deadline=$((SECONDS + $1)) pid
    shift
    for pid in "$@"; do
        while kill -0 "$pid" 2>/dev/null; do
            [ $SECONDS -lt "$deadline" ] || e2e_fail "helper pid $pid still running after the bound"
            sleep 0.05
        done
        e2e_reap "$pid"
    done
}

# ---------------------------------------------------------------- 1. crash cycles
total_acked=0
for ((c = 1; c <= CYCLES; c++)); do
    make_requests "$c" || e2e_fail "could not generate the request bodies of cycle $c"
    pids=()
    for ((w = 0; w < WRITERS; w++)); do
        writer "$c" "$w" "$SERVER_URL" &
        pids+=($!)
        E2E_PIDS+=($!)
    done
    delay_ms=$((300 + RANDOM % 1701))
    flush_note=
    if [ $((c % 2)) = 0 ]; then
        # Even cycles also seal the head into a block while the writers run, so the
        # kill may land in the middle of a flush.
        flush_ms=$((RANDOM % delay_ms))
        (sleep_ms "$flush_ms"
         curl -s -o /dev/null --max-time 10 -X POST -H "Authorization: Token $T" "$SERVER_URL/api/v1/admin/flush") &
        pids+=($!)
        E2E_PIDS+=($!)
        flush_note=", flush at ${flush_ms} ms"
    fi
    sleep_ms "$delay_ms"
    case $c in
        3)  # SIGTERM, then SIGKILL while the graceful stop is under way (a supervisor
            # that gives up early): the stop's own flush is interrupted.
            grace_ms=$((RANDOM % 100))
            kill -TERM "$SERVER_PID" 2>/dev/null
            sleep_ms "$grace_ms"
            server_kill9
            how="SIGTERM, then SIGKILL ${grace_ms} ms later"
            ;;
        "$CYCLES")  # a graceful stop under load must still exit 0 (SPEC §1)
            server_stop
            expect_eq "cycle $c: SIGTERM under load: exit 0" 0 "$SERVER_EXIT"
            how="SIGTERM under load"
            ;;
        *)
            server_kill9
            how=SIGKILL
            ;;
    esac
    wait_pids_bounded 60 "${pids[@]}"
    acked=$(cat "$E2E_WORK"/log/acked."$c".* 2>/dev/null | wc -l | tr -d ' ')
    others=$(cat "$E2E_WORK"/log/other."$c".* 2>/dev/null | head -n 3 | tr '\n' ' ')
    echo "   cycle $c: after ${delay_ms} ms: $how$flush_note; $acked requests acknowledged${others:+; other answers: $others}"
    total_acked=$((total_acked + acked))
    # A crash leaves at most a torn log tail, which is not damage (SPEC §4).
    out=$("$STELE_BIN" check --data "$SERVER_DATA" 2>&1)
    expect_eq "cycle $c: stele check after $how exits 0 (output: $out)" 0 "$?"
    server_start
    verify_crash_data "$c" "cycle $c: after $how and restart"
done
[ "$total_acked" -gt 0 ] || e2e_fail "no request was ever acknowledged: the crash cycles tested nothing"
e2e_pass "crash cycles acknowledged $total_acked requests in all"

# ---------------------------------------------------------------- 2. clean restart
http POST /api/v1/admin/flush -H "Authorization: Token $T"
expect_status "flush after the crash cycles" 200
server_stop
expect_eq "SIGTERM: exit 0" 0 "$SERVER_EXIT"
out=$("$STELE_BIN" check --data "$SERVER_DATA" 2>&1)
expect_eq "stele check after the crash cycles exits 0 (output: $out)" 0 "$?"
server_start
verify_crash_data "$CYCLES" "after a clean stop and start"
server_stop
expect_eq "SIGTERM: exit 0" 0 "$SERVER_EXIT"

# ---------------------------------------------------------------- 3. damaged block file
# flip_byte FILE OFFSET — inverts one byte in place.
flip_byte() {
    python3 -c 'import sys
path, off = sys.argv[1], int(sys.argv[2])
with open(path, "r+b") as f:
    f.seek(off); b = f.read(1)
    if len(b) != 1: sys.exit("offset %d is past the end of %s" % (off, path))
    f.seek(off); f.write(bytes([b[0] ^ 0xFF]))' "$1" "$2" || e2e_fail "could not flip byte $2 of $1"
}

# serve_expect_refusal WHAT NAME — starts stele serve, which must exit non-zero within
# the start bound without ever becoming ready, with NAME in its stderr.
serve_expect_refusal() {
    local port
    port=$(free_port)
    timeout "$E2E_START_TIMEOUT" "$STELE_BIN" serve --data "$SERVER_DATA" --http "127.0.0.1:$port" \
        >"$E2E_WORK/refused.out" 2>"$E2E_WORK/refused.err"
    local rc=$?
    local err
    err=$(cat "$E2E_WORK/refused.err")
    [ $rc != 124 ] || e2e_fail "$1: the server did not refuse to start; still running after ${E2E_START_TIMEOUT}s (stderr: $err)"
    expect_ne "$1: the server refuses to start (exit status non-zero; stderr: $err)" 0 "$rc"
    expect_match "$1: the error names $2" "$2" "$err"
}

block=$(ls -S "$SERVER_DATA"/blocks/*.blk 2>/dev/null | head -n 1)
[ -n "$block" ] || e2e_fail "no block file in $SERVER_DATA/blocks after a flush"
block_name=$(basename "$block")
cp -p "$block" "$E2E_WORK/block.orig"
block_size=$(stat -c %s "$block")
flip_byte "$block" $((block_size / 2))
echo "   flipped byte $((block_size / 2)) of $block_name ($block_size bytes)"
serve_expect_refusal "block $block_name with a flipped byte" "$block_name"
out=$("$STELE_BIN" check --data "$SERVER_DATA" 2>&1)
rc=$?
expect_eq "stele check on the damaged block exits 1 (output: $out)" 1 "$rc"
expect_match "stele check names the damaged block" "$block_name" "$out"
cp -p "$E2E_WORK/block.orig" "$block"
out=$("$STELE_BIN" check --data "$SERVER_DATA" 2>&1)
expect_eq "stele check passes once the block is restored (output: $out)" 0 "$?"

# ---------------------------------------------------------------- 4. torn log tail
server_start
verify_crash_data "$CYCLES" "restored block: data intact"
# write_tagged_requests TAG — 5 sequential requests of 10 points, series TAG_v{r=I}.
TORN_TS=$((BASE_MS + 9 * 10**6)) # after every crash-cycle point, half an hour back
write_tagged_requests() {
    local tag=$1 i s body
    for i in 0 1 2 3 4; do
        body=
        for s in 0 1 2 3 4 5 6 7 8 9; do
            body+="$tag,r=$i v=$((i * 10 + s)).5 $((TORN_TS + s))"$'\n'
        done
        write_lp "$T" "precision=ms" "$body"
        expect_status "$tag: request $i acknowledged" 204
    done
}
# expected_tagged TAG N — canonical export lines of requests 0..N-1.
expected_tagged() {
    local tag=$1 n=$2 i s
    for ((i = 0; i < n; i++)); do
        for s in 0 1 2 3 4 5 6 7 8 9; do
            printf '%s_v{r="%d"} %d %d.5\n' "$tag" "$i" "$((TORN_TS + s))" "$((i * 10 + s))"
        done
    done
}
write_tagged_requests torn
server_kill9
segment=$(ls "$SERVER_DATA"/wal/*.seg | sort | tail -n 1)
seg_size=$(stat -c %s "$segment")
truncate -s $((seg_size - 7)) "$segment"
echo "   cut the last 7 bytes of $(basename "$segment") ($seg_size bytes)"
server_start
expect_export "torn tail: the cut record is discarded, the four before it kept" "$T" torn_v "$(expected_tagged torn 4)"

# ---------------------------------------------------------------- 5. damaged log record
write_tagged_requests walbad
server_kill9
segment=$(ls "$SERVER_DATA"/wal/*.seg | sort | tail -n 1)
seg_name=$(basename "$segment")
cp -p "$segment" "$E2E_WORK/segment.orig"
# The first record's payload starts after the 32-byte segment header and the 16-byte
# record header; records after it are intact, so this is not a torn tail.
flip_byte "$segment" $((32 + 16 + 20))
echo "   flipped byte 68 (first record's payload) of $seg_name ($(stat -c %s "$segment") bytes)"
serve_expect_refusal "log segment $seg_name with a damaged first record" "$seg_name"
out=$("$STELE_BIN" check --data "$SERVER_DATA" 2>&1)
rc=$?
expect_eq "stele check on the damaged log segment exits 1 (output: $out)" 1 "$rc"
expect_match "stele check names the damaged segment" "$seg_name" "$out"
cp -p "$E2E_WORK/segment.orig" "$segment"
server_start
expect_export "restored segment: all five requests back" "$T" walbad_v "$(expected_tagged walbad 5)"
verify_crash_data "$CYCLES" "end: crash-cycle data intact"
server_stop
expect_eq "SIGTERM: exit 0" 0 "$SERVER_EXIT"

e2e_finish
