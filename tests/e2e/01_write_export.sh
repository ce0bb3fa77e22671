#!/usr/bin/env bash
# 01_write_export — the write and export paths of the HTTP API against the real server
# (SPEC §2, §3, §4): both Influx write endpoints with every precision, every way to
# authenticate, gzip, escapes and field types; exact values and millisecond timestamps
# back through /api/v1/export; last write wins; late and out-of-order points; atomic
# refusal of a bad request; the 2^53 rule; future timestamps and their metric; the body
# limit; tenant isolation, 401 and 403; the operations endpoints; and that flush,
# restart and `stele check` change nothing.
#
# Every point is written at a known time (an hour back unless a check needs otherwise)
# and compared exactly: export_points prints "NAME{labels} TS_MS VALUE" lines.

. "$(dirname "$0")/lib.sh"
e2e_init 01_write_export

# A small body limit so the 413 check needs only a 70 kB body.
MAX_BODY=65536
server_start -- --max-body-bytes "$MAX_BODY"
T=$ADMIN_TOKEN

NOW=$(now_s)
BASE_S=$((NOW - 3600)) # an hour back: inside retention, far from the future limit
BASE_MS=$((BASE_S * 1000))

# ---------------------------------------------------------------- operations endpoints
http GET /ping
expect_status "GET /ping without a token" 204
expect_eq "GET /ping has no body" "" "$HTTP_BODY"
http HEAD /ping
expect_status "HEAD /ping without a token" 204
http GET /health
expect_status "GET /health without a token" 200
http GET /ready
expect_status "GET /ready without a token" 200

http GET /metrics
expect_error "GET /metrics without a token" 401
http GET /metrics -H "Authorization: Token $T"
expect_status "GET /metrics with a read token" 200
expect_match "/metrics Content-Type is Prometheus text 0.0.4" '^text/plain.*version=0\.0\.4' "$(header Content-Type)"
# Prometheus text format 0.0.4: HELP/TYPE comments, then samples "name{l="v",…} value
# [timestamp]"; every sample's family has a TYPE line before it; no family twice.
shape=$(python3 -c '
import re, sys
name = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
label = r"[a-zA-Z_][a-zA-Z0-9_]*=\"(?:[^\"\\\\\n]|\\\\[\\\\\"n])*\""
num = r"(?:[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|[-+]?Inf|NaN)"
sample = re.compile(r"^(%s)(?:\{(?:%s(?:,%s)*,?)?\})? %s(?: -?[0-9]+)?$" % (name, label, label, num))
help_ = re.compile(r"^# HELP (%s) .*$" % name)
type_ = re.compile(r"^# TYPE (%s) (counter|gauge|histogram|summary|untyped)$" % name)
typed, samples = {}, 0
text = sys.stdin.read()
if not text.endswith("\n"):
    print("body does not end with a newline"); sys.exit(1)
for n, line in enumerate(text.split("\n")[:-1], 1):
    m = type_.match(line)
    if m:
        if m.group(1) in typed:
            print("line %d: second TYPE for %s" % (n, m.group(1))); sys.exit(1)
        typed[m.group(1)] = m.group(2); continue
    if help_.match(line):
        continue
    m = sample.match(line)
    if not m:
        print("line %d is not HELP, TYPE or a sample: %r" % (n, line)); sys.exit(1)
    fam = m.group(1)
    if fam not in typed:
        base = re.sub(r"_(bucket|sum|count)$", "", fam)
        if typed.get(base) not in ("histogram", "summary"):
            print("line %d: sample %s has no TYPE line before it" % (n, fam)); sys.exit(1)
    samples += 1
print("ok" if samples else "no samples")
' <"$E2E_WORK/http.body")
expect_eq "/metrics is well-formed Prometheus text" ok "$shape"
for fam in stele_ingest_rejected_timestamps_total stele_ingest_skipped_fields_total; do
    expect_match "/metrics declares $fam" "^# TYPE $fam counter$" "$HTTP_BODY"
done

http GET /no/such/endpoint -H "Authorization: Token $T"
expect_error "unknown endpoint" 404

# ---------------------------------------------------------------- precisions, v1 and v2
M=$((BASE_S / 60))   # whole minutes
H=$((BASE_S / 3600)) # whole hours
write_lp "$T" "precision=n" "prec1,p=n v=1 $(((BASE_MS + 1) * 1000000))"
expect_status "v1 precision=n" 204
write_lp "$T" "precision=u" "prec1,p=u v=2 $(((BASE_MS + 2) * 1000))"
expect_status "v1 precision=u" 204
write_lp "$T" "precision=ms" "prec1,p=ms v=3 $((BASE_MS + 3))"
expect_status "v1 precision=ms" 204
write_lp "$T" "precision=s" "prec1,p=s v=4 $((BASE_S + 4))"
expect_status "v1 precision=s" 204
write_lp "$T" "precision=m" "prec1,p=m v=5 $M"
expect_status "v1 precision=m" 204
write_lp "$T" "precision=h" "prec1,p=h v=6 $H"
expect_status "v1 precision=h" 204
write_lp "$T" "" "prec1,p=default v=7 $(((BASE_MS + 7) * 1000000))"
expect_status "v1 without precision (nanoseconds)" 204
write_lp "$T" "precision=xx" "prec1,p=xx v=8 $BASE_S"
expect_error "v1 precision=xx is refused" 400

write_v2 "$T" "precision=ns" "prec2,p=ns v=11 $(((BASE_MS + 11) * 1000000))"
expect_status "v2 precision=ns" 204
write_v2 "$T" "precision=us" "prec2,p=us v=12 $(((BASE_MS + 12) * 1000))"
expect_status "v2 precision=us" 204
write_v2 "$T" "precision=ms" "prec2,p=ms v=13 $((BASE_MS + 13))"
expect_status "v2 precision=ms" 204
write_v2 "$T" "precision=s" "prec2,p=s v=14 $((BASE_S + 14))"
expect_status "v2 precision=s" 204
write_v2 "$T" "" "prec2,p=default v=15 $(((BASE_MS + 15) * 1000000))"
expect_status "v2 without precision (nanoseconds)" 204
write_v2 "$T" "precision=xx" "prec2,p=xx v=16 $BASE_S"
expect_error "v2 precision=xx is refused" 400

expect_export "v1 precisions: exact values and ms timestamps" "$T" '{__name__="prec1_v"}' "\
prec1_v{p=\"n\"} $((BASE_MS + 1)) 1
prec1_v{p=\"u\"} $((BASE_MS + 2)) 2
prec1_v{p=\"ms\"} $((BASE_MS + 3)) 3
prec1_v{p=\"s\"} $(((BASE_S + 4) * 1000)) 4
prec1_v{p=\"m\"} $((M * 60000)) 5
prec1_v{p=\"h\"} $((H * 3600000)) 6
prec1_v{p=\"default\"} $((BASE_MS + 7)) 7"
expect_export "v2 precisions: exact values and ms timestamps" "$T" 'prec2_v' "\
prec2_v{p=\"ns\"} $((BASE_MS + 11)) 11
prec2_v{p=\"us\"} $((BASE_MS + 12)) 12
prec2_v{p=\"ms\"} $((BASE_MS + 13)) 13
prec2_v{p=\"s\"} $(((BASE_S + 14) * 1000)) 14
prec2_v{p=\"default\"} $((BASE_MS + 15)) 15"

# A line without a timestamp takes the server's clock.
before_ms=$(($(date +%s%N) / 1000000))
write_lp "$T" "" "nots v=1"
after_ms=$(($(date +%s%N) / 1000000))
expect_status "v1 line without a timestamp" 204
export_points "$T" nots_v
ts=$(printf '%s' "$EXPORT" | awk '{print $2}')
if [ "$EXPORT_N" = 1 ] && [ "$ts" -ge "$before_ms" ] && [ "$ts" -le "$after_ms" ]; then
    e2e_pass "a line without a timestamp is stored at the server's time"
else
    e2e_fail "line without a timestamp: expected one point in [$before_ms, $after_ms], got $(e2e_quote "$EXPORT")"
fi

# ---------------------------------------------------------------- db / bucket, auth forms
TS=$((BASE_S + 100))
write_lp "$T" "db=default&precision=s" "dbb,how=v1_db v=1 $TS"
expect_status "v1 with db=<own tenant>" 204
write_lp "$T" "precision=s" "dbb,how=v1_nodb v=2 $TS"
expect_status "v1 without db" 204
write_v2 "$T" "bucket=default&org=default&precision=s" "dbb,how=v2_bucket v=3 $TS"
expect_status "v2 with bucket=<own tenant>&org" 204
write_v2 "$T" "org=whatever&precision=s" "dbb,how=v2_nobucket v=4 $TS"
expect_status "v2 without bucket" 204
write_v2 "$T" "bucket=default&precision=s" "dbb,how=v2_noorg v=5 $TS"
expect_status "v2 with bucket, without org" 204
expect_export "db/bucket variants all stored in the token's tenant" "$T" dbb_v "\
dbb_v{how=\"v1_db\"} $((TS * 1000)) 1
dbb_v{how=\"v1_nodb\"} $((TS * 1000)) 2
dbb_v{how=\"v2_bucket\"} $((TS * 1000)) 3
dbb_v{how=\"v2_nobucket\"} $((TS * 1000)) 4
dbb_v{how=\"v2_noorg\"} $((TS * 1000)) 5"

http POST "/write?precision=s" -H "Authorization: Bearer $T" --data-binary "authw,how=v1_bearer v=1 $TS"
expect_status "v1 with Authorization: Bearer" 204
http POST "/api/v2/write?precision=s" -H "Authorization: Bearer $T" --data-binary "authw,how=v2_bearer v=2 $TS"
expect_status "v2 with Authorization: Bearer" 204
http POST "/write?precision=s" -u "anyuser:$T" --data-binary "authw,how=v1_basic v=3 $TS"
expect_status "v1 with Basic auth (password = token)" 204
http POST "/api/v2/write?precision=s" -u "anyuser:$T" --data-binary "authw,how=v2_basic v=4 $TS"
expect_status "v2 with Basic auth (password = token)" 204
http POST "/write?precision=s&u=anyuser&p=$T" --data-binary "authw,how=v1_up v=5 $TS"
expect_status "v1 with u/p query parameters" 204
http POST "/api/v2/write?precision=s" -H "Authorization: Token $T" --data-binary "authw,how=v2_token v=6 $TS"
expect_status "v2 with Authorization: Token" 204
expect_export "every auth form wrote its point" "$T" authw_v "\
authw_v{how=\"v1_bearer\"} $((TS * 1000)) 1
authw_v{how=\"v2_bearer\"} $((TS * 1000)) 2
authw_v{how=\"v1_basic\"} $((TS * 1000)) 3
authw_v{how=\"v2_basic\"} $((TS * 1000)) 4
authw_v{how=\"v1_up\"} $((TS * 1000)) 5
authw_v{how=\"v2_token\"} $((TS * 1000)) 6"
http GET /api/v1/export -G --data-urlencode 'match[]=authw_v' -H "Authorization: Bearer $T"
expect_status "export with Bearer" 200
http GET /api/v1/export -G --data-urlencode 'match[]=authw_v' -u "x:$T"
expect_status "export with Basic auth" 200

# ---------------------------------------------------------------- gzip
printf 'gz,api=v1 a=1,b=2 %s\ngz,api=v1 a=3 %s\n' "$TS" "$((TS + 1))" | gzip -c >"$E2E_WORK/v1.gz"
printf 'gz,api=v2 a=4 %s\n' "$TS" | gzip -c >"$E2E_WORK/v2.gz"
http POST "/write?precision=s" -H "Authorization: Token $T" -H "Content-Encoding: gzip" --data-binary "@$E2E_WORK/v1.gz"
expect_status "v1 gzip body" 204
http POST "/api/v2/write?precision=s" -H "Authorization: Token $T" -H "Content-Encoding: gzip" --data-binary "@$E2E_WORK/v2.gz"
expect_status "v2 gzip body" 204
expect_export "gzip bodies decoded exactly" "$T" '{__name__=~"gz_.*"}' "\
gz_a{api=\"v1\"} $((TS * 1000)) 1
gz_b{api=\"v1\"} $((TS * 1000)) 2
gz_a{api=\"v1\"} $(((TS + 1) * 1000)) 3
gz_a{api=\"v2\"} $((TS * 1000)) 4"
printf 'not gzip at all' >"$E2E_WORK/bad.gz"
http POST "/write?precision=s" -H "Authorization: Token $T" -H "Content-Encoding: gzip" --data-binary "@$E2E_WORK/bad.gz"
expect_error "a body that is not gzip, sent as gzip" 400

# ---------------------------------------------------------------- escapes and field types
metric_value 'stele_ingest_skipped_fields_total{reason="string"}'
skipped_before=$METRIC
body='esc\ m\,x,tag\ k=v\,1\=2,t2=a\"b,uni=héllo f\ 1=1,f\=2=2,s="q \"x\" ,=y\\" '"$TS"
write_lp "$T" "precision=s" "$body"
expect_status "escaped measurement, tags, fields and string" 204
expect_eq "X-Stele-Skipped-Fields for one string field" 1 "$(header X-Stele-Skipped-Fields)"
expect_export "escapes decoded into names and labels" "$T" '{__name__=~"esc m,x_.*"}' "\
esc m,x_f 1{t2=\"a\\\\\\\"b\",tag k=\"v,1=2\",uni=\"héllo\"} $((TS * 1000)) 1
esc m,x_f=2{t2=\"a\\\\\\\"b\",tag k=\"v,1=2\",uni=\"héllo\"} $((TS * 1000)) 2"

body="types,k=v f=1.5,neg=-2.25e3,sci=1e-3,tiny=0.1,i=42i,ineg=-7i,u=8u"
body+=",bt=t,bT=T,btrue=true,bTrue=True,bTRUE=TRUE,bf=f,bF=F,bfalse=false,bFalse=False,bFALSE=FALSE"
body+=",s1=\"hello\",s2=\"a b\",imax=9007199254740992i,imin=-9007199254740992i,umax=9007199254740992u $TS"
write_lp "$T" "precision=s" "$body"
expect_status "every field type in one line" 204
expect_eq "X-Stele-Skipped-Fields counts the two string fields" 2 "$(header X-Stele-Skipped-Fields)"
P="{k=\"v\"} $((TS * 1000))"
expect_export "field types: floats, ints, unsigned, bools exact; strings skipped" "$T" '{__name__=~"types_.*"}' "\
types_f$P 1.5
types_neg$P -2250
types_sci$P 0.001
types_tiny$P 0.1
types_i$P 42
types_ineg$P -7
types_u$P 8
types_bt$P 1
types_bT$P 1
types_btrue$P 1
types_bTrue$P 1
types_bTRUE$P 1
types_bf$P 0
types_bF$P 0
types_bfalse$P 0
types_bFalse$P 0
types_bFALSE$P 0
types_imax$P 9007199254740992
types_imin$P -9007199254740992
types_umax$P 9007199254740992"
# Escaped separators make distinct series, never collide; a repeated field: last wins.
write_lp "$T" "precision=s" 'sep,a=x,b=y v=1 '"$TS"'
sep,a=x\=y v=2 '"$TS"'
sep,a\=x=y v=3 '"$TS"'
sep,a=x\ y v=4 '"$TS"'
sep,a=x\,b v=5 '"$TS"'
sep,a=x v=6,v=7 '"$TS"
expect_status "tags with escaped separators" 204
expect_export "escaped separators: six distinct series" "$T" sep_v "\
sep_v{a=\"x\",b=\"y\"} $((TS * 1000)) 1
sep_v{a=\"x=y\"} $((TS * 1000)) 2
sep_v{a=x=\"y\"} $((TS * 1000)) 3
sep_v{a=\"x y\"} $((TS * 1000)) 4
sep_v{a=\"x,b\"} $((TS * 1000)) 5
sep_v{a=\"x\"} $((TS * 1000)) 7"
write_lp "$T" "precision=s" "reserved,__name__=x v=1 $TS"
expect_error "a tag named __name__ is refused" 400

write_lp "$T" "precision=s" "onlystr,k=v s=\"text\" $TS"
expect_status "a line with only a string field" 204
expect_eq "X-Stele-Skipped-Fields for a string-only line" 1 "$(header X-Stele-Skipped-Fields)"
expect_export "a string-only line stores nothing" "$T" '{__name__=~"onlystr.*"}' ""
metric_value 'stele_ingest_skipped_fields_total{reason="string"}'
expect_eq "stele_ingest_skipped_fields_total{reason=\"string\"} counted 4 more" "$((skipped_before + 4))" "$METRIC"

# |v| > 2^53 is refused whole (SPEC §2).
for v in 9007199254740993i -9007199254740993i 9007199254740993u 18446744073709551615u; do
    write_lp "$T" "precision=s" "big,k=v ok=1 $TS
big,k=v v=$v $TS"
    expect_error "field value $v (|v| > 2^53) refused" 400
    expect_eq "field value $v: error names line 2" 2 "$(json_get line)"
done
expect_export "nothing of the refused 2^53 requests stored" "$T" '{__name__=~"big_.*"}' ""

# ---------------------------------------------------------------- last write wins
write_lp "$T" "precision=s" "lww,k=a v=1 $TS"
expect_status "lww: first write" 204
write_lp "$T" "precision=s" "lww,k=a v=2 $TS"
expect_status "lww: rewrite of the same series and time" 204
expect_export "the later write wins" "$T" lww_v "lww_v{k=\"a\"} $((TS * 1000)) 2"
write_lp "$T" "precision=s" "lww,k=a v=2 $TS"
expect_status "lww: the same value again" 204
expect_export "the same value again changes nothing" "$T" lww_v "lww_v{k=\"a\"} $((TS * 1000)) 2"
write_lp "$T" "precision=s" "lww,k=b v=1 $TS
lww,k=b v=3 $TS"
expect_status "lww: same point twice in one request" 204
expect_export "inside one request the later line wins" "$T" lww_v "\
lww_v{k=\"a\"} $((TS * 1000)) 2
lww_v{k=\"b\"} $((TS * 1000)) 3"

# ---------------------------------------------------------------- out of order and late
OOO=$((NOW - 1800))
write_lp "$T" "precision=s" "ooo v=10 $((OOO + 10))"
expect_status "ooo: newest first" 204
write_lp "$T" "precision=s" "ooo v=0 $OOO"
expect_status "ooo: then older" 204
write_lp "$T" "precision=s" "ooo v=5 $((OOO + 5))
ooo v=3 $((OOO + 3))
ooo v=7 $((OOO + 7))"
expect_status "ooo: unsorted lines in one request" 204
write_lp "$T" "precision=s" "ooo v=-1 $((OOO - 3 * 3600))"
expect_status "late point, 3 hours back" 204
write_lp "$T" "precision=s" "ooo v=-2 $((NOW - 2 * 86400))"
expect_status "late point, 2 days back" 204
write_lp "$T" "precision=s" "ooo v=-3 $((NOW - 20 * 86400))"
expect_status "late point, 20 days back (inside 30d retention)" 204
expect_export "out-of-order and late points all stored, in time order" "$T" ooo_v "\
ooo_v{} $(((NOW - 20 * 86400) * 1000)) -3
ooo_v{} $(((NOW - 2 * 86400) * 1000)) -2
ooo_v{} $(((OOO - 3 * 3600) * 1000)) -1
ooo_v{} $((OOO * 1000)) 0
ooo_v{} $(((OOO + 3) * 1000)) 3
ooo_v{} $(((OOO + 5) * 1000)) 5
ooo_v{} $(((OOO + 7) * 1000)) 7
ooo_v{} $(((OOO + 10) * 1000)) 10"

# export's start/end (unix seconds or RFC 3339, both ends inclusive) and matchers.
expect_export "export start/end in unix seconds, inclusive" "$T" ooo_v "\
ooo_v{} $((OOO * 1000)) 0
ooo_v{} $(((OOO + 3) * 1000)) 3
ooo_v{} $(((OOO + 5) * 1000)) 5" "start=$OOO" "end=$((OOO + 5))"
expect_export "export start/end in RFC 3339" "$T" ooo_v "\
ooo_v{} $(((OOO + 7) * 1000)) 7
ooo_v{} $(((OOO + 10) * 1000)) 10" "start=$(date -u -d "@$((OOO + 6))" +%Y-%m-%dT%H:%M:%SZ)" "end=$(date -u -d "@$((OOO + 60))" +%Y-%m-%dT%H:%M:%SZ)"
expect_export "export matcher != " "$T" '{__name__="prec2_v",p!="ns",p!="us",p!="default"}' "\
prec2_v{p=\"ms\"} $((BASE_MS + 13)) 13
prec2_v{p=\"s\"} $(((BASE_S + 14) * 1000)) 14"
expect_export "export matcher =~ (anchored)" "$T" 'prec2_v{p=~"n|m"}' ""
expect_export "export matcher !~" "$T" 'prec2_v{p!~"n.|u.|default"}' "\
prec2_v{p=\"ms\"} $((BASE_MS + 13)) 13
prec2_v{p=\"s\"} $(((BASE_S + 14) * 1000)) 14"
expect_export "two overlapping match[] selectors export each series once" "$T" 'prec2_v{p="ms"}' "\
prec2_v{p=\"ms\"} $((BASE_MS + 13)) 13
prec2_v{p=\"s\"} $(((BASE_S + 14) * 1000)) 14" 'match[]={__name__="prec2_v",p=~"ms|s"}'
http GET /api/v1/export -G --data-urlencode 'match[]=ooo_v{' -H "Authorization: Token $T"
expect_error "export with a malformed selector" 400

# ---------------------------------------------------------------- atomic refusal
write_lp "$T" "precision=s" "atom1 v=1 $TS
lww,k=a v=99 $TS
atom2 v= $TS
atom3 v=3 $TS
atom4 v=4 $TS"
expect_error "a bad line in the middle fails the request" 400
expect_eq "error code" invalid "$(json_get code)"
expect_eq "error names the bad line" 3 "$(json_get line)"
expect_export "nothing of the failed request stored (new series)" "$T" '{__name__=~"atom.*"}' ""
expect_export "nothing of the failed request stored (rewrite of an old point)" "$T" lww_v "\
lww_v{k=\"a\"} $((TS * 1000)) 2
lww_v{k=\"b\"} $((TS * 1000)) 3"
write_v2 "$T" "precision=s" "atom1 v=1 $TS
atom2 v=2 $TS
atom3 v=3,x=1i $TS
atom4 v=4 $((NOW + 3600))"
expect_error "v2: a future timestamp on the last line fails the request" 400
expect_eq "v2: error names line 4" 4 "$(json_get line)"
expect_export "nothing of the failed v2 request stored" "$T" '{__name__=~"atom.*"}' ""

# ---------------------------------------------------------------- future timestamps
metric_value 'stele_ingest_rejected_timestamps_total{reason="future"}'
future_before=$METRIC
[ "$future_before" != absent ] || e2e_fail "/metrics has no stele_ingest_rejected_timestamps_total{reason=\"future\"}"
write_lp "$T" "precision=s" "fut v=1 $(($(now_s) + 900))"
expect_error "a timestamp 15 minutes ahead is refused" 400
metric_value 'stele_ingest_rejected_timestamps_total{reason="future"}'
expect_eq "the refusal is counted as reason=\"future\"" "$((future_before + 1))" "$METRIC"
FUT_OK=$(($(now_s) + 300))
write_lp "$T" "precision=s" "fut v=2 $FUT_OK"
expect_status "a timestamp 5 minutes ahead is inside max_future_skew" 204
expect_export "only the point inside the skew stored" "$T" fut_v "fut_v{} $((FUT_OK * 1000)) 2"

# ---------------------------------------------------------------- body limit
python3 -c 'import sys
ts = int(sys.argv[1]); i = 0; out = []; n = 0
while n <= int(sys.argv[2]):
    line = "limit,k=k%06d v=%d %d\n" % (i, i, ts); out.append(line); n += len(line); i += 1
sys.stdout.write("".join(out))' "$TS" "$MAX_BODY" >"$E2E_WORK/big.lp"
http POST "/write?precision=s" -H "Authorization: Token $T" --data-binary "@$E2E_WORK/big.lp"
expect_error "a body over --max-body-bytes gets 413" 413
gzip -c "$E2E_WORK/big.lp" >"$E2E_WORK/big.lp.gz"
http POST "/api/v2/write?precision=s" -H "Authorization: Token $T" -H "Content-Encoding: gzip" --data-binary "@$E2E_WORK/big.lp.gz"
expect_error "a gzip body over the limit after decompression gets 413 ($(stat -c %s "$E2E_WORK/big.lp.gz") bytes compressed)" 413
head -c $((MAX_BODY - 200)) "$E2E_WORK/big.lp" | sed '$d' >"$E2E_WORK/small.lp"
http POST "/write?precision=s" -H "Authorization: Token $T" --data-binary "@$E2E_WORK/small.lp"
expect_status "a body just under the limit is accepted" 204
http POST "/write?precision=s" -H "Authorization: Token $T" -H "Transfer-Encoding: chunked" --data-binary "@$E2E_WORK/big.lp"
expect_error "a chunked body (no Content-Length) over the limit gets 413" 413
http POST "/write?precision=s" -H "Authorization: Token $T" -H "Transfer-Encoding: chunked" --data-binary "@$E2E_WORK/small.lp"
expect_status "a chunked body under the limit is accepted" 204
n_small=$(wc -l <"$E2E_WORK/small.lp" | tr -d ' ')
export_points "$T" limit_v
expect_eq "exactly the lines of the accepted body are stored" "$n_small" "$EXPORT_N"

# ---------------------------------------------------------------- tokens, tenants, 401/403
# new_token TENANT SCOPES — creates a token through the API, sets NEW_TOKEN.
new_token() {
    http POST /api/v1/tokens -H "Authorization: Token $T" -H "Content-Type: application/json" \
        --data-binary "{\"tenant\":\"$1\",\"scopes\":\"$2\"}"
    expect_status "create token tenant=$1 scopes=$2" 201
    NEW_TOKEN=$(json_get token)
    expect_match "token for $1 has the documented form" '^stl_[0-9a-f]{16}_[0-9a-f]{64}$' "$NEW_TOKEN"
}
new_token ta read,write
TA=$NEW_TOKEN
new_token tb read,write
TB=$NEW_TOKEN
new_token ta read
TA_RO=$NEW_TOKEN
new_token ta write
TA_WO=$NEW_TOKEN

write_lp "$TA" "precision=s" "iso v=1 $TS"
expect_status "tenant ta writes" 204
write_lp "$TB" "db=tb&precision=s" "iso v=2 $TS"
expect_status "tenant tb writes (db=tb)" 204
write_lp "$TA" "precision=s" "isolabel,tenant=tb v=1 $TS"
expect_status "ta writes a point with a tag named tenant=tb" 204
expect_export "a tenant=tb tag does not put the point into tenant tb" "$TB" isolabel_v ""
expect_export "it stays in ta as an ordinary label" "$TA" isolabel_v "isolabel_v{tenant=\"tb\"} $((TS * 1000)) 1"
expect_export "ta reads only its own point" "$TA" iso_v "iso_v{} $((TS * 1000)) 1"
expect_export "tb reads only its own point" "$TB" iso_v "iso_v{} $((TS * 1000)) 2"
expect_export "the admin's own tenant (default) holds neither" "$T" iso_v ""
expect_export "admin reads ta with tenant=ta" "$T" iso_v "iso_v{} $((TS * 1000)) 1" "tenant=ta"
http GET /api/v1/export -G --data-urlencode 'match[]=iso_v' --data-urlencode tenant=tb -H "Authorization: Token $TA"
expect_error "ta's token cannot read tenant tb" 403
write_lp "$TA" "db=tb&precision=s" "iso v=3 $TS"
expect_error "v1: ta's token cannot write db=tb" 403
write_lp "$TA" "db=other&precision=s" "iso v=3 $TS"
expect_error "v1: ta's token cannot write db=other" 403
write_v2 "$TA" "bucket=tb&org=tb&precision=s" "iso v=3 $TS"
expect_error "v2: ta's token cannot write bucket=tb" 403
write_lp "$TA" "db=ta&precision=s" "iso v=4 $((TS + 1))"
expect_status "ta writes with db=ta" 204
expect_export "tb unchanged by ta's refused writes" "$TB" iso_v "iso_v{} $((TS * 1000)) 2"
expect_export "ta holds its two points" "$TA" iso_v "\
iso_v{} $((TS * 1000)) 1
iso_v{} $(((TS + 1) * 1000)) 4"

write_lp "$TA_RO" "precision=s" "iso v=5 $TS"
expect_error "a read-only token cannot write (v1)" 403
write_v2 "$TA_RO" "precision=s" "iso v=5 $TS"
expect_error "a read-only token cannot write (v2)" 403
expect_export "a read-only token can export" "$TA_RO" iso_v "\
iso_v{} $((TS * 1000)) 1
iso_v{} $(((TS + 1) * 1000)) 4"
http GET /api/v1/export -G --data-urlencode 'match[]=iso_v' -H "Authorization: Token $TA_WO"
expect_error "a write-only token cannot export" 403
http GET /metrics -H "Authorization: Token $TA_WO"
expect_error "a write-only token cannot read /metrics" 403
http POST /api/v1/admin/flush -H "Authorization: Token $TA"
expect_error "a non-admin token cannot flush" 403
http GET /api/v1/tokens -H "Authorization: Token $TA"
expect_error "a non-admin token cannot list tokens" 403
http POST /api/v1/tokens -H "Authorization: Token $TA" --data-binary '{"tenant":"ta","scopes":"read"}'
expect_error "a non-admin token cannot create tokens" 403

# Revocation through the API: DELETE /api/v1/tokens/ID (admin), effective at once.
new_token ta read,write
TA_GONE=$NEW_TOKEN
TA_GONE_ID=$(printf '%s' "$TA_GONE" | cut -d_ -f2)
write_lp "$TA_GONE" "precision=s" "gone v=1 $TS"
expect_status "a token works before it is revoked" 204
http DELETE "/api/v1/tokens/$TA_GONE_ID" -H "Authorization: Token $TA"
expect_error "a non-admin token cannot revoke tokens" 403
http DELETE "/api/v1/tokens/$TA_GONE_ID" -H "Authorization: Token $T"
expect_status "DELETE /api/v1/tokens/ID by the admin" 204
write_lp "$TA_GONE" "precision=s" "gone v=2 $((TS + 1))"
expect_error "the revoked token gets 401 at once" 401
http GET /api/v1/tokens -H "Authorization: Token $T"
revoked=$(printf '%s' "$HTTP_BODY" | python3 -c 'import json, sys
print([t["revoked"] for t in json.load(sys.stdin)["tokens"] if t["id"] == sys.argv[1]])' "$TA_GONE_ID")
expect_eq "GET /api/v1/tokens lists it as revoked" "[True]" "$revoked"
expect_no_match "GET /api/v1/tokens shows no secret" "${TA##*_}" "$HTTP_BODY"
http DELETE /api/v1/tokens/0123456789abcdef -H "Authorization: Token $T"
expect_error "DELETE of an unknown token id" 404
expect_export "only the write before the revocation is stored" "$TA" gone_v "gone_v{} $((TS * 1000)) 1"

BAD="stl_0123456789abcdef_$(printf '0%.0s' $(seq 64))"
WRONG_SECRET="${TA%_*}_$(printf 'f%.0s' $(seq 64))"
write_lp "" "precision=s" "auth401 v=1 $TS"
expect_error "write with an empty Token header" 401
http POST "/write?precision=s" --data-binary "auth401 v=1 $TS"
expect_error "v1 write without a token" 401
http POST "/api/v2/write?precision=s" --data-binary "auth401 v=1 $TS"
expect_error "v2 write without a token" 401
write_lp "$BAD" "precision=s" "auth401 v=1 $TS"
expect_error "write with an unknown token" 401
write_lp "$WRONG_SECRET" "precision=s" "auth401 v=1 $TS"
expect_error "write with a known id but a wrong secret" 401
write_lp "garbage" "precision=s" "auth401 v=1 $TS"
expect_error "write with a malformed token" 401
http POST "/write?precision=s" -u "x:$BAD" --data-binary "auth401 v=1 $TS"
expect_error "Basic auth with a bad password" 401
http POST "/write?precision=s&u=x&p=$BAD" --data-binary "auth401 v=1 $TS"
expect_error "u/p with a bad p" 401
http GET /api/v1/export -G --data-urlencode 'match[]=iso_v'
expect_error "export without a token" 401
http GET /api/v1/export -G --data-urlencode 'match[]=iso_v' -H "Authorization: Bearer $BAD"
expect_error "export with a bad Bearer token" 401
http POST /api/v1/admin/flush
expect_error "flush without a token" 401
http GET /api/v1/tokens
expect_error "token list without a token" 401
expect_export "nothing of the unauthorized writes stored" "$T" auth401_v ""

# ---------------------------------------------------------------- flush, restart, check
# dump_all FILE — every point of tenants default, ta and tb, canonical, into FILE.
dump_all() {
    : >"$1"
    local tenant
    for tenant in default ta tb; do
        export_points "$T" '{__name__=~".+"}' "tenant=$tenant"
        [ -n "$EXPORT" ] && printf '%s\n' "$EXPORT" | sed "s/^/$tenant /" >>"$1"
    done
}
dump_all "$E2E_WORK/dump.before"
n_points=$(wc -l <"$E2E_WORK/dump.before" | tr -d ' ')
[ "$n_points" -gt 1000 ] || e2e_fail "expected over 1000 points stored by now, got $n_points"
http POST /api/v1/admin/flush -H "Authorization: Token $T"
expect_status "admin flush" 200
blocks=$(find "$SERVER_DATA/blocks" -name '*.blk' | wc -l | tr -d ' ')
expect_ne "flush wrote block files" 0 "$blocks"
metric_value stele_tsdb_head_points
expect_eq "the head is empty after flush" 0 "$METRIC"
dump_all "$E2E_WORK/dump.flushed"
expect_file_eq "export after flush equals export before ($n_points points)" "$E2E_WORK/dump.before" "$E2E_WORK/dump.flushed"

# Writes after a flush land in the head and merge with the blocks: a rewrite of a
# flushed point wins, and a point older than the block range is still accepted.
write_lp "$T" "precision=s" "lww,k=a v=6 $TS"
expect_status "rewrite of a flushed point" 204
write_lp "$T" "precision=s" "ooo v=-4 $((NOW - 21 * 86400))"
expect_status "a late point older than every block" 204
expect_export "a rewrite after flush wins over the block" "$T" 'lww_v{k="a"}' "lww_v{k=\"a\"} $((TS * 1000)) 6"
export_points "$T" ooo_v
expect_eq "the late point after flush joins the series" "ooo_v{} $(((NOW - 21 * 86400) * 1000)) -4" "$(printf '%s\n' "$EXPORT" | head -n 1)"
for v in 1 2 3; do
    write_lp "$T" "precision=s" "lww,k=c v=$v $TS"
    expect_status "lww k=c: rewrite $v before the restart" 204
done
dump_all "$E2E_WORK/dump.before"
# A second flush makes a second block that overlaps the first (lww k=a, ooo_v); reading
# and compacting them must keep the later write.
http POST /api/v1/admin/flush -H "Authorization: Token $T"
expect_status "second admin flush" 200
dump_all "$E2E_WORK/dump.flushed"
expect_file_eq "export after the second flush equals export before" "$E2E_WORK/dump.before" "$E2E_WORK/dump.flushed"
for v in 4 5; do
    write_lp "$T" "precision=s" "lww,k=c v=$v $TS"
    expect_status "lww k=c: rewrite $v after the second flush" 204
done
dump_all "$E2E_WORK/dump.before"
expect_export "lww after two flushes" "$T" lww_v "\
lww_v{k=\"a\"} $((TS * 1000)) 6
lww_v{k=\"b\"} $((TS * 1000)) 3
lww_v{k=\"c\"} $((TS * 1000)) 5"

server_stop
expect_eq "SIGTERM: the server exits 0" 0 "$SERVER_EXIT"
out=$("$STELE_BIN" check --data "$SERVER_DATA" 2>&1)
rc=$?
expect_eq "stele check on the stopped data directory exits 0 (output: $out)" 0 "$rc"

server_start -- --max-body-bytes "$MAX_BODY"
dump_all "$E2E_WORK/dump.restarted"
expect_file_eq "export after restart equals export before" "$E2E_WORK/dump.before" "$E2E_WORK/dump.restarted"
write_lp "$TA" "precision=s" "iso v=7 $((TS + 2))"
expect_status "tokens survive a restart (ta writes)" 204
export_points "$TA" iso_v
expect_eq "ta's point written after restart is there" 3 "$EXPORT_N"
out=$("$STELE_BIN" check --data "$SERVER_DATA" 2>&1)
rc=$?
expect_eq "stele check while the server runs exits 0 (output: $out)" 0 "$rc"

server_stop
expect_eq "second SIGTERM: the server exits 0" 0 "$SERVER_EXIT"
server_start -- --max-body-bytes "$MAX_BODY"
export_points "$TA" iso_v
expect_eq "a point written after the first restart survives the second" 3 "$EXPORT_N"
dump_all "$E2E_WORK/dump.restarted"
expect_export "lww after two flushes and two restarts" "$T" lww_v "\
lww_v{k=\"a\"} $((TS * 1000)) 6
lww_v{k=\"b\"} $((TS * 1000)) 3
lww_v{k=\"c\"} $((TS * 1000)) 5"

# --ack buffered: acknowledged before the fsync, and the reply says so (SPEC §4); the
# default (durable) reply does not.
write_lp "$T" "precision=s" "ackmode,mode=durable v=1 $TS"
expect_status "durable write" 204
expect_eq "a durable reply has no X-Stele-Durability header" "" "$(header X-Stele-Durability)"
server_stop
expect_eq "SIGTERM: exit 0" 0 "$SERVER_EXIT"
server_start -- --max-body-bytes "$MAX_BODY" --ack buffered
write_lp "$T" "precision=s" "ackmode,mode=buffered v=2 $TS"
expect_status "v1 write with --ack buffered" 204
expect_eq "v1 buffered reply: X-Stele-Durability" buffered "$(header X-Stele-Durability)"
write_v2 "$T" "precision=s" "ackmode,mode=buffered v=3 $((TS + 1))"
expect_status "v2 write with --ack buffered" 204
expect_eq "v2 buffered reply: X-Stele-Durability" buffered "$(header X-Stele-Durability)"
server_stop
expect_eq "SIGTERM with --ack buffered: exit 0" 0 "$SERVER_EXIT"
server_start -- --max-body-bytes "$MAX_BODY"
expect_export "buffered writes survive a graceful stop" "$T" ackmode_v "\
ackmode_v{mode=\"durable\"} $((TS * 1000)) 1
ackmode_v{mode=\"buffered\"} $((TS * 1000)) 2
ackmode_v{mode=\"buffered\"} $(((TS + 1) * 1000)) 3"

# Last, so a wording problem does not hide the checks above: an error message names
# the field it refuses (SPEC §3: every error says what to do).
for v in 9007199254740993i 9007199254740993u; do
    write_lp "$T" "precision=s" "big,k=v bigfield=$v $TS"
    expect_error "bigfield=$v refused" 400
    expect_match "the 2^53 error message names the field \"bigfield\"" 'bigfield' "$(json_get message)"
done
server_stop

e2e_finish
