#!/usr/bin/env bash
# 02_cli — the stele client commands against the real server (SPEC §1): `stele write`
# from a file and from standard input with --precision and --tenant; where the URL and
# token come from (flags, STELE_URL/STELE_TOKEN, ./stele-data/admin.token); `stele
# token create/list/revoke` and that a revoked token is refused at once; exit status
# (0 ok, 1 failure, 2 usage); the one-line error `stele: <what>: <why>` on stderr;
# `--help` everywhere; and input over 16 MiB sent as several atomic requests.

. "$(dirname "$0")/lib.sh"
e2e_init 02_cli

# The data directory is named stele-data so the default token file
# (./stele-data/admin.token, relative to the working directory) can be tested.
server_start "$E2E_WORK/stele-data"
T=$ADMIN_TOKEN
URL=$SERVER_URL
NOW=$(now_s)
BASE_S=$((NOW - 3600))

# cli [args...] — runs stele with stdin from CLI_STDIN (default /dev/null), bounded;
# sets CLI_RC, CLI_OUT, CLI_ERR.
CLI_STDIN=/dev/null
cli() {
    timeout 60 "$STELE_BIN" "$@" <"$CLI_STDIN" >"$E2E_WORK/cli.out" 2>"$E2E_WORK/cli.err"
    CLI_RC=$?
    CLI_OUT=$(cat "$E2E_WORK/cli.out")
    CLI_ERR=$(cat "$E2E_WORK/cli.err")
    CLI_STDIN=/dev/null
    [ "$CLI_RC" != 124 ] || e2e_fail "stele $*: still running after 60 s"
}

# expect_cli_ok WHAT — exit 0.
expect_cli_ok() {
    if [ "$CLI_RC" = 0 ]; then
        e2e_pass "$1"
    else
        e2e_fail "$1: expected exit 0, got $CLI_RC with stderr $(e2e_quote "$CLI_ERR")"
    fi
}

# expect_cli_error WHAT RC WHAT_RE — exit RC, nothing on stdout, and stderr exactly
# one line "stele: <what>: <why>" whose <what> matches WHAT_RE.
expect_cli_error() {
    local what=$1 rc=$2 what_re=$3
    expect_eq "$what: exit status" "$rc" "$CLI_RC"
    expect_eq "$what: nothing on stdout" "" "$CLI_OUT"
    local lines
    lines=$(printf '%s\n' "$CLI_ERR" | grep -c '')
    [ -n "$CLI_ERR" ] || lines=0
    expect_eq "$what: stderr is one line (got $(e2e_quote "$CLI_ERR"))" 1 "$lines"
    expect_match "$what: stderr is 'stele: <what>: <why>'" "^stele: ($what_re): [^ ].*[^ ]$" "$CLI_ERR"
}

# ---------------------------------------------------------------- --help everywhere
for args in "--help" "-h" "serve --help" "write --help" "write -h" "token --help" \
    "token create --help" "token list --help" "token revoke --help" "check --help"; do
    # shellcheck disable=SC2086 # word splitting of the argument list is intended
    cli $args
    expect_cli_ok "stele $args exits 0"
    expect_match "stele $args prints usage on stdout" '^usage: stele' "$CLI_OUT"
    expect_eq "stele $args: nothing on stderr" "" "$CLI_ERR"
done

# ---------------------------------------------------------------- stele write
printf 'clif,host=a v=1.5 %s\nclif,host=b v=-2 %s\nclif,host=a v=3 %s\n' \
    "$BASE_S" "$BASE_S" "$((BASE_S + 1))" >"$E2E_WORK/in.lp"
cli write "$E2E_WORK/in.lp" --precision s --url "$URL" --token "$T"
expect_cli_ok "write FILE --precision s"
expect_export "write FILE stored exact values and times" "$T" clif_v "\
clif_v{host=\"a\"} $((BASE_S * 1000)) 1.5
clif_v{host=\"b\"} $((BASE_S * 1000)) -2
clif_v{host=\"a\"} $(((BASE_S + 1) * 1000)) 3"

printf 'clis,p=ms v=1 %s\n' "$((BASE_S * 1000 + 7))" >"$E2E_WORK/stdin.lp"
CLI_STDIN=$E2E_WORK/stdin.lp
cli write - --precision ms --url "$URL" --token "$T"
expect_cli_ok "write - (stdin) --precision ms"
printf 'clis,p=us v=2 %s\n' "$(((BASE_S * 1000 + 8) * 1000))" >"$E2E_WORK/stdin.lp"
CLI_STDIN=$E2E_WORK/stdin.lp
cli write --precision us --url "$URL" --token "$T"
expect_cli_ok "write without FILE reads stdin (--precision us)"
printf 'clis,p=ns v=3 %s\n' "$(((BASE_S * 1000 + 9) * 1000000))" >"$E2E_WORK/stdin.lp"
CLI_STDIN=$E2E_WORK/stdin.lp
cli write - --url "$URL" --token "$T"
expect_cli_ok "write - with the default precision (ns)"
printf 'clis,p=s2 v=4 %s\n' "$((BASE_S + 2))" >"$E2E_WORK/stdin.lp"
CLI_STDIN=$E2E_WORK/stdin.lp
cli write - --precision=s --url="$URL" --token="$T"
expect_cli_ok "write - with --opt=value flags (--precision=s)"
expect_export "stdin writes stored at the right times" "$T" clis_v "\
clis_v{p=\"ms\"} $((BASE_S * 1000 + 7)) 1
clis_v{p=\"us\"} $((BASE_S * 1000 + 8)) 2
clis_v{p=\"ns\"} $((BASE_S * 1000 + 9)) 3
clis_v{p=\"s2\"} $(((BASE_S + 2) * 1000)) 4"

# Where the URL and the token come from.
printf 'clienv,how=env v=1 %s\n' "$BASE_S" >"$E2E_WORK/env.lp"
STELE_URL=$URL STELE_TOKEN=$T cli write "$E2E_WORK/env.lp" --precision s
expect_cli_ok "write with STELE_URL and STELE_TOKEN"
printf 'clienv,how=flags_over_env v=2 %s\n' "$BASE_S" >"$E2E_WORK/env.lp"
STELE_URL=http://127.0.0.1:1 STELE_TOKEN=bad cli write "$E2E_WORK/env.lp" --precision s --url "$URL" --token "$T"
expect_cli_ok "--url and --token override STELE_URL and STELE_TOKEN"
printf 'clienv,how=token_file v=3 %s\n' "$BASE_S" >"$E2E_WORK/env.lp"
cli_rc_file=$(cd "$E2E_WORK" && STELE_URL=$URL timeout 60 "$STELE_BIN" write env.lp --precision s </dev/null 2>&1; echo "rc=$?")
expect_eq "without --token/STELE_TOKEN the token comes from ./stele-data/admin.token" "rc=0" "$cli_rc_file"
expect_export "the three URL/token sources wrote" "$T" clienv_v "\
clienv_v{how=\"env\"} $((BASE_S * 1000)) 1
clienv_v{how=\"flags_over_env\"} $((BASE_S * 1000)) 2
clienv_v{how=\"token_file\"} $((BASE_S * 1000)) 3"
mkdir -p "$E2E_WORK/empty"
printf 'clienv,how=no_token v=4 %s\n' "$BASE_S" >"$E2E_WORK/empty/env.lp"
notoken_out=$(cd "$E2E_WORK/empty" && STELE_URL=$URL timeout 60 "$STELE_BIN" write env.lp --precision s </dev/null 2>&1)
notoken_rc=$?
expect_eq "no token anywhere: exit 1 (output: $notoken_out)" 1 "$notoken_rc"
expect_eq "no token anywhere: one line of output" 1 "$(printf '%s\n' "$notoken_out" | grep -c '')"
expect_match "no token anywhere: 'stele: write: <why>'" '^stele: write: ' "$notoken_out"

# A bad line: exit 1, one-line error naming the line, nothing stored.
printf 'clibad v=1 %s\nclibad v= %s\nclibad v=3 %s\n' "$BASE_S" "$BASE_S" "$BASE_S" >"$E2E_WORK/bad.lp"
cli write "$E2E_WORK/bad.lp" --precision s --url "$URL" --token "$T"
expect_cli_error "write with a bad line" 1 'write'
expect_match "the error names line 2" 'line 2' "$CLI_ERR"
expect_export "nothing of the bad input stored" "$T" clibad_v ""

# ---------------------------------------------------------------- stele token
cli token create --tenant clit --scopes read,write --url "$URL" --token "$T"
expect_cli_ok "token create"
expect_match "token create prints the token alone on stdout" '^stl_[0-9a-f]{16}_[0-9a-f]{64}$' "$CLI_OUT"
expect_eq "token create: stdout is one line" 1 "$(printf '%s\n' "$CLI_OUT" | grep -c '')"
TT=$CLI_OUT
TT_ID=$(printf '%s' "$TT" | cut -d_ -f2)
cli token create --tenant clit --scopes read --url "$URL" --token "$T"
expect_cli_ok "token create (read-only)"
TT_RO=$CLI_OUT

printf 'clitenant v=1 %s\n' "$BASE_S" >"$E2E_WORK/t.lp"
cli write "$E2E_WORK/t.lp" --tenant clit --precision s --url "$URL" --token "$TT"
expect_cli_ok "write --tenant with the tenant's own token"
expect_export "the tenant's token reads its point" "$TT" clitenant_v "clitenant_v{} $((BASE_S * 1000)) 1"
expect_export "the default tenant does not see it" "$T" clitenant_v ""
cli write "$E2E_WORK/t.lp" --tenant someoneelse --precision s --url "$URL" --token "$TT"
expect_cli_error "write --tenant of another tenant with a non-admin token" 1 'write'
expect_export "nothing written into the other tenant" "$T" clitenant_v "" tenant=someoneelse
printf 'clitenant v=2 %s\n' "$BASE_S" >"$E2E_WORK/t2.lp"
cli write "$E2E_WORK/t2.lp" --tenant clit2 --precision s --url "$URL" --token "$T"
expect_cli_ok "write --tenant with an admin token (admin manages every tenant)"
expect_export "the admin's --tenant write landed in that tenant" "$T" clitenant_v "clitenant_v{} $((BASE_S * 1000)) 2" tenant=clit2
cli write "$E2E_WORK/t.lp" --precision s --url "$URL" --token "$TT_RO"
expect_cli_error "write with a read-only token" 1 'write'

cli token list --url "$URL" --token "$T"
expect_cli_ok "token list"
expect_match "token list has a header ID TENANT SCOPES CREATED STATE" '^ID +TENANT +SCOPES +CREATED +STATE$' "$(printf '%s\n' "$CLI_OUT" | head -n 1)"
row=$(printf '%s\n' "$CLI_OUT" | awk -v id="$TT_ID" '$1 == id')
expect_match "token list shows the new token active" "^$TT_ID +clit +read,write +[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}Z +active$" "$row"
expect_eq "token list shows no secret" "" "$(printf '%s\n' "$CLI_OUT" | grep -F "${TT##*_}")"
cli token list --url "$URL" --token "$TT"
expect_cli_error "token list with a non-admin token" 1 'token list'
cli token create --tenant clit --scopes read --url "$URL" --token "$TT"
expect_cli_error "token create with a non-admin token" 1 'token create'

cli token revoke "$TT_ID" --url "$URL" --token "$T"
expect_cli_ok "token revoke ID"
cli token list --url "$URL" --token "$T"
row=$(printf '%s\n' "$CLI_OUT" | awk -v id="$TT_ID" '$1 == id')
expect_match "token list shows the token revoked" "^$TT_ID +clit +read,write +[^ ]+ +revoked$" "$row"
write_lp "$TT" "precision=s" "clirevoked v=1 $BASE_S"
expect_error "the revoked token gets 401 on write" 401
http GET /api/v1/export -G --data-urlencode 'match[]=clitenant_v' -H "Authorization: Token $TT"
expect_error "the revoked token gets 401 on export" 401
cli write "$E2E_WORK/t.lp" --precision s --url "$URL" --token "$TT"
expect_cli_error "stele write with the revoked token" 1 'write'
cli token revoke 0123456789abcdef --url "$URL" --token "$T"
expect_cli_error "token revoke of an unknown id" 1 'token revoke'
write_lp "$TT_RO" "precision=s" "x v=1 $BASE_S"
expect_error "another token of the same tenant is unaffected (still 403, not 401, on write)" 403

# Revocation is durable: after a restart the token stays refused.
server_stop
expect_eq "SIGTERM: exit 0" 0 "$SERVER_EXIT"
server_start "$E2E_WORK/stele-data"
URL=$SERVER_URL
write_lp "$TT" "precision=s" "clirevoked v=1 $BASE_S"
expect_error "the revoked token still gets 401 after a restart" 401
export_points "$TT_RO" clitenant_v
expect_eq "the tenant's read token still works after a restart" "clitenant_v{} $((BASE_S * 1000)) 1" "$EXPORT"

# ---------------------------------------------------------------- usage errors: exit 2
usage_case() { # WHAT_RE ARGS...
    local what_re=$1
    shift
    cli "$@"
    expect_cli_error "stele $* (usage error)" 2 "$what_re"
}
usage_case 'write' write --bogus
usage_case 'write' write --precision h
usage_case 'write' write --precision
usage_case 'write' write a.lp b.lp
usage_case 'token' token
usage_case 'token' token frobnicate
usage_case 'token create' token create
usage_case 'token create' token create --tenant x
usage_case 'token create' token create --tenant x --scopes bogus
usage_case 'token create' token create --tenant 'bad tenant' --scopes read
usage_case 'token revoke' token revoke
usage_case 'token revoke' token revoke not-an-id
usage_case 'check' check --bogus
usage_case 'serve' serve --bogus
usage_case '[a-z]+' frobnicate
cli
expect_eq "stele without a command: exit 2" 2 "$CLI_RC"

# ---------------------------------------------------------------- failures: exit 1
DOWN=http://127.0.0.1:$(free_port) # nothing listens there
cli write "$E2E_WORK/in.lp" --url "$DOWN" --token "$T"
expect_cli_error "write, server down" 1 'write'
CLI_STDIN=$E2E_WORK/in.lp
cli write - --url "$DOWN" --token "$T"
expect_cli_error "write from stdin, server down" 1 'write'
cli token list --url "$DOWN" --token "$T"
expect_cli_error "token list, server down" 1 'token list'
cli token create --tenant x --scopes read --url "$DOWN" --token "$T"
expect_cli_error "token create, server down" 1 'token create'
cli token revoke 0123456789abcdef --url "$DOWN" --token "$T"
expect_cli_error "token revoke, server down" 1 'token revoke'
cli write "$E2E_WORK/no-such-file.lp" --url "$URL" --token "$T"
expect_cli_error "write of a missing file" 1 'write'
cli check --data "$E2E_WORK/no-such-dir"
expect_cli_error "check of a missing directory" 1 'check'
cli serve --data "$SERVER_DATA" --http "127.0.0.1:$(free_port)"
expect_eq "a second server on a data directory in use: exit 1 (stderr: $CLI_ERR)" 1 "$CLI_RC"
expect_match "a second server: stderr says the directory is in use" '^stele: serve: .*(in use|using|lock)' "$CLI_ERR"
http GET /ready
expect_status "the first server is unaffected by the second's attempt" 200

# ---------------------------------------------------------------- input over 16 MiB
# 600 000 lines, ~18 MiB: sent as two requests (split at a newline), all stored.
python3 -c 'import sys
ts = int(sys.argv[1])
with open(sys.argv[2], "w") as f:
    f.write("".join("clibig,k=k%03d v=%d %d\n" % (i % 1000, i, ts + i // 1000) for i in range(600000)))' \
    "$((NOW - 7200))" "$E2E_WORK/big.lp"
size=$(stat -c %s "$E2E_WORK/big.lp")
[ "$size" -gt $((16 << 20)) ] || e2e_fail "test input should exceed 16 MiB, is $size bytes"
cli write "$E2E_WORK/big.lp" --precision s --url "$URL" --token "$T"
expect_cli_ok "write of $size bytes (over 16 MiB)"
export_points "$T" clibig_v
expect_eq "every line of the big input stored" 600000 "$EXPORT_N"
last=$(printf '%s\n' "$EXPORT" | awk -v k='clibig_v{k="k999"}' '$1 == k' | tail -n 1)
expect_eq "the last line of the big input stored exactly" "clibig_v{k=\"k999\"} $(((NOW - 7200 + 599) * 1000)) 599999" "$last"

# A bad line in the second request: the first request stays written, the rest is not
# sent, exit 1, and the (one-line) error says where the failed request began.
python3 -c 'import sys
src = open(sys.argv[1]).read().replace("clibig,", "clisplit,")
lines = src.split("\n")[:-1]
lines.insert(590000, "clisplit,k=bad v= 1")
data = "\n".join(lines) + "\n"
open(sys.argv[2], "w").write(data)
cut = data.rfind("\n", 0, (16 << 20) + 1) + 1
print(data[:cut].count("\n"))' "$E2E_WORK/big.lp" "$E2E_WORK/split.lp" >"$E2E_WORK/split.first"
first_lines=$(cat "$E2E_WORK/split.first")
cli write "$E2E_WORK/split.lp" --precision s --url "$URL" --token "$T"
export_points "$T" clisplit_v
expect_eq "a failed second request: the first request's $first_lines lines stay written" "$first_lines" "$EXPORT_N"
expect_cli_error "write of a big input whose second request fails" 1 'write'

# ---------------------------------------------------------------- malformed flag values
# A value that cannot be right is a usage error (2), as --precision h and --scopes
# bogus are above; and it is refused before anything is touched.
cli token list --url notaurl --token "$T"
expect_cli_error "token list --url notaurl (malformed URL)" 2 'token list'
cli serve --data "$E2E_WORK/never-created" --http nonsense
expect_eq "serve --http nonsense: exit 2 (stderr: $CLI_ERR)" 2 "$CLI_RC"
expect_eq "serve --http nonsense touches no data directory" no "$([ -e "$E2E_WORK/never-created" ] && echo yes || echo no)"

server_stop
e2e_finish
