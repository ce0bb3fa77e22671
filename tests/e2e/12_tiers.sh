#!/usr/bin/env bash
# 12_tiers — downsampling tiers through the real server (SPEC §5): queries aligned to a
# tier are answered from it (header X-Stele-Resolution) with exactly the raw answer,
# before and after the tiers are built and after a restart; late points re-aggregate
# their buckets; `resolution=` forces raw or a tier and refuses what a tier cannot answer;
# /metrics shows the tiers; `stele check` verifies them; --tiers is validated; a
# restart with different tiers rebuilds them.
#
# Data: two gauges and a counter with a reset, every 10 s over the last 6 whole hours;
# timestamps whole seconds so 1m/1h bucket boundaries fall on samples, the hardest case
# for the windows' closed right edge.

. "$(dirname "$0")/lib.sh"
e2e_init 12_tiers

server_start -- --tiers raw:30d,1m:1y,1h:10y
T=$ADMIN_TOKEN
NOW=$(now_s)
H0=$(((NOW / 3600 - 6) * 3600)) # six whole hours ago
END=$((H0 + 6 * 3600))

python3 - "$H0" >"$E2E_WORK/data.lp" <<'EOF'
import math, sys
h0 = int(sys.argv[1])
for i in range(0, 6 * 3600, 10):
    t = h0 + i
    print(f"plant,line=a temp={20 + 5 * math.sin(i / 700):.3f},energy={(i % 9000) * 1.5:.1f} {t}")
    print(f"plant,line=b temp={30 + 3 * math.cos(i / 300):.3f},energy={i * 0.5:.1f} {t}")
EOF
http POST "/write?precision=s" -H "Authorization: Token $T" --data-binary "@$E2E_WORK/data.lp"
expect_status "6 h of 10 s data written" 204

# query_range Q START END STEP [RES] — sets HTTP_BODY, RES_HDR.
q() {
    local args=(--data-urlencode "query=$1" -d "start=$2" -d "end=$3" -d "step=$4")
    [ -n "${5:-}" ] && args+=(-d "resolution=$5")
    http POST /api/v1/query_range -H "Authorization: Token $T" "${args[@]}"
    RES_HDR=$(header X-Stele-Resolution)
}

# same_answers WHAT A B — two query_range bodies equal (values to 1e-9 relative).
same_answers() {
    if python3 - "$2" "$3" <<'EOF'; then e2e_pass "$1"; else e2e_fail "$1: answers differ (above)"; fi
import json, math, sys
a, b = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
def norm(d):
    assert d["status"] == "success", d
    return {json.dumps(r["metric"], sort_keys=True): r["values"] for r in d["data"]["result"]}
x, y = norm(a), norm(b)
if x.keys() != y.keys():
    print("series differ:", sorted(x), sorted(y), file=sys.stderr); sys.exit(1)
for k in x:
    if [t for t, _ in x[k]] != [t for t, _ in y[k]]:
        print("timestamps differ for", k, file=sys.stderr); sys.exit(1)
    for (t, u), (_, v) in zip(x[k], y[k]):
        u, v = float(u), float(v)
        if not (u == v or (math.isnan(u) and math.isnan(v)) or abs(u - v) <= 1e-9 * max(abs(u), abs(v))):
            print(f"{k} at {t}: {u} vs {v}", file=sys.stderr); sys.exit(1)
if not any(x.values()):
    print("empty answer", file=sys.stderr); sys.exit(1)
EOF
}

QUERIES=(
    "max_over_time(plant_temp[1h])|3600"
    "min_over_time(plant_temp[1h])|3600"
    "avg_over_time(plant_temp[2h])|3600"
    "sum by (line) (rate(plant_energy[1h]))|3600"
    "increase(plant_energy[10m])|600"
    "count_over_time(plant_temp[5m])|300"
    "last_over_time(plant_temp[1m])|60"
    "plant_temp|60"
    "delta(plant_temp[1h] offset 1h)|3600"
)

check_all() { # PHASE EXPECTED_1H_RES
    local spec qry step want
    for spec in "${QUERIES[@]}"; do
        qry=${spec%|*}
        step=${spec#*|}
        q "$qry" $((H0 + 3600)) "$END" "$step" raw
        expect_eq "$1: $qry answered from raw when asked" raw "$RES_HDR"
        printf '%s' "$HTTP_BODY" >"$E2E_WORK/raw.json"
        q "$qry" $((H0 + 3600)) "$END" "$step"
        want=1m
        [ $((step % 3600)) = 0 ] && want=$2
        expect_eq "$1: $qry at step ${step}s answered by the coarsest exact tier" "$want" "$RES_HDR"
        printf '%s' "$HTTP_BODY" >"$E2E_WORK/tier.json"
        same_answers "$1: $qry from the tier equals raw" "$E2E_WORK/raw.json" "$E2E_WORK/tier.json"
    done
}

# In the head only: the tiers answer by recomputing buckets on the fly.
check_all "head" 1h

http POST /api/v1/admin/flush -H "Authorization: Token $T"
expect_status "flush (builds the tiers)" 200
metric_value 'stele_tier_points{tier="1h"}'
expect_eq "1h tier holds 4 series (2 lines x 2 fields) x 6 hours = 24 buckets" 24 "$METRIC"
metric_value 'stele_tier_points{tier="1m"}'
expect_eq "1m tier holds 4 x 360 buckets" 1440 "$METRIC"
metric_value 'stele_tier_build_lag_points{tier="1m"}'
expect_eq "build lag is 0 after the flush" 0 "$METRIC"
metric_value 'stele_tier_bytes{tier="1h"}'
expect_match "1h tier bytes reported" '^[1-9][0-9]*$' "$METRIC"
check_all "built" 1h

# A late point into an already built bucket, then rewrite of an existing sample.
write_lp "$T" "precision=s" "plant,line=a temp=99.5 $((H0 + 3600 + 1805))"
expect_status "late point into a built bucket" 204
write_lp "$T" "precision=s" "plant,line=b temp=-40 $((H0 + 7200))"
expect_status "rewrite of a sample on an hour boundary" 204
q "max_over_time(plant_temp{line=\"a\"}[1h])" $((H0 + 7200)) $((H0 + 7200)) 3600
expect_match "the late point is in the 1h answer at once (from the head)" '"99\.5"' "$HTTP_BODY"
check_all "late, unflushed" 1h
http POST /api/v1/admin/flush -H "Authorization: Token $T"
expect_status "flush again" 200
check_all "late, built" 1h

server_stop
expect_eq "stele serve exits 0" 0 "$SERVER_EXIT"
"$STELE_BIN" check --data "$SERVER_DATA" >"$E2E_WORK/check.out" 2>&1
expect_eq "stele check: no problem in raw data and tiers" 0 "$?"

server_start "$SERVER_DATA" -- --tiers raw:30d,1m:1y,1h:10y
T=$ADMIN_TOKEN
check_all "restarted" 1h

# Forcing and refusing.
q "irate(plant_energy[5m])" $((H0 + 3600)) "$END" 3600 1h
expect_status "irate cannot come from a tier" 400
expect_match "the refusal says what a tier answers" 'cannot answer this query exactly' "$HTTP_BODY"
q "max_over_time(plant_temp[1h])" $((H0 + 3600 + 30)) "$END" 3600 1m
expect_status "an unaligned start cannot come from a tier" 400
q "max_over_time(plant_temp[1h])" $((H0 + 3600)) "$END" 3600 5m
expect_status "no 5m tier" 400
q "max_over_time(plant_temp[1h])" $((H0 + 3600)) "$END" 3600 weekly
expect_status "resolution must be auto, raw or a duration" 400
q "max_over_time(plant_temp[90s])" $((H0 + 3600)) "$END" 3600
expect_eq "a 90 s range is answered from raw" raw "$RES_HDR"

# Changed tiers: rebuilt from raw on start, answers still equal.
server_stop
server_start "$SERVER_DATA" -- --tiers raw:30d,5m:1y
T=$ADMIN_TOKEN
expect_match "the server says it rebuilds the tiers" 'tier configuration changed' "$(cat "$SERVER_LOG")"
http POST /api/v1/admin/flush -H "Authorization: Token $T"
q "max_over_time(plant_temp[1h])" $((H0 + 3600)) "$END" 3600 raw
printf '%s' "$HTTP_BODY" >"$E2E_WORK/raw.json"
q "max_over_time(plant_temp[1h])" $((H0 + 3600)) "$END" 3600
expect_eq "the new 5m tier answers" 5m "$RES_HDR"
printf '%s' "$HTTP_BODY" >"$E2E_WORK/tier.json"
same_answers "the rebuilt 5m tier equals raw" "$E2E_WORK/raw.json" "$E2E_WORK/tier.json"
server_stop

# Invalid tier specifications are refused with a message, exit 2.
for bad in "1m:1y" "raw:30d,7m:1y" "raw:30d,1h:1y,1m:10y" "raw:30d,1m:1d" "raw:30d,1m"; do
    "$STELE_BIN" serve --data "$E2E_WORK/bad" --http 127.0.0.1:1 --tiers "$bad" >"$E2E_WORK/bad.out" 2>&1
    rc=$?
    expect_ne "--tiers $bad is refused" 0 "$rc"
    expect_match "--tiers $bad: the error names the problem" 'tier|raw' "$(cat "$E2E_WORK/bad.out")"
done
e2e_finish
