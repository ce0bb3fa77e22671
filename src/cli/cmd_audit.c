/*
 * cmd_audit.c — `stele audit verify|list|head`: the audit trail from the operator's side.
 *
 *   verify  offline on the data directory (read-only, so the server may be running or
 *           not): every segment, record, checkpoint signature and the signed head, with
 *           the public key from DATA/audit/audit.pub or, better, a copy kept elsewhere
 *           (--public-key). One line per problem on stderr, a summary on stdout.
 *   list    asks the running server (GET /api/v1/audit) and prints a table or its JSON.
 *   head    prints the signed head as one line of text, to ship off the machine and give
 *           back later to `verify --expect-head` (detects a trail rolled back whole).
 *
 * Design: verify and head link the library and read files directly — they must work
 * with the server stopped — while list is a thin HTTP client like `stele token`, so the
 * server's own view (only acknowledged records) is what the operator sees. Times given
 * to list are turned into absolute unix times here, so "1h" means the last hour by this
 * machine's clock and nothing needs URL escaping beyond the plain strings.
 */
#include "cli/cli.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/clock.h"
#include "stele/audit.h"
#include "stele/io.h"

#define AUDIT_DEFAULT_DATA "./stele-data"
/* Largest --public-key or --expect-head file read: both are one short line. */
#define AUDIT_KEY_FILE_MAX 512
/* The request target: path plus a few escaped fields of at most 256 bytes each. */
#define AUDIT_TARGET_MAX 4096
/* Widest column printed for actor, action, subject, outcome; details get the rest. */
#define AUDIT_COLUMN_MAX 48
/* Largest page the server gives. */
#define AUDIT_LIMIT_MAX 10000

static const char audit_usage[] =
    "usage: stele audit verify [--data DIR] [--public-key HEX|FILE] [--expect-head FILE]\n"
    "       stele audit list [--device ID] [--action A] [--actor A] [--since T] [--until T]\n"
    "                        [--after N] [--limit N] [--newest] [--json]\n"
    "                        [--url URL] [--token TOKEN]\n"
    "       stele audit head [--data DIR] [--public-key HEX|FILE]\n"
    "\n"
    "verify  checks the audit trail in DIR/audit offline (read-only: the server may be\n"
    "        running): every record's hash chain, every segment, every checkpoint\n"
    "        signature and the signed head. Prints one line per problem on stderr and a\n"
    "        summary on stdout; exits 0 when intact, 1 otherwise.\n"
    "  --data DIR          data directory (default " AUDIT_DEFAULT_DATA ")\n"
    "  --public-key K      the audit public key: 64 hex digits, or a file holding them\n"
    "                      (default DIR/audit/audit.pub). Someone who can write the data\n"
    "                      directory can replace that file too: against them, pass a copy\n"
    "                      kept elsewhere.\n"
    "  --expect-head FILE  a head saved earlier with `stele audit head`: the trail must\n"
    "                      still hold it (detects a trail rolled back or replaced whole)\n"
    "\n"
    "list    prints events from the running server (scope admin), oldest first.\n"
    "  --device ID         events about device ID        --actor A   by actor A\n"
    "  --action A          exact, or a prefix ending in '.' (device.) or '*'\n"
    "  --since T           from T; --until T: before T. T is RFC 3339, unix seconds, or a\n"
    "                      duration ago: 90s, 15m, 1h, 2d, 1w\n"
    "  --after N           continue a listing: events after sequence N (with --newest:\n"
    "                      before it), as the note at the end of a page says\n"
    "  --limit N           at most N events (default 1000, at most 10000)\n"
    "  --newest            newest first\n"
    "  --json              print the server's JSON answer\n"
    "  --url URL           server (default: $STELE_URL, else " CLI_DEFAULT_URL ")\n"
    "  --token TOKEN       admin token (default: $STELE_TOKEN, else the first line of\n"
    "                      " CLI_DEFAULT_TOKEN_FILE ")\n"
    "\n"
    "head    prints the signed head (sequence, hash, signature) as one line: keep it off\n"
    "        the machine and pass it to `verify --expect-head` later.\n"
    "\n"
    "Exit status: 0 ok, 1 failure (or a damaged trail), 2 usage error.\n";

static int usage_error(const char *what, const char *fmt, const char *arg)
{
    char msg[256];
    snprintf(msg, sizeof(msg), fmt, arg ? arg : "");
    cli_error(what, "%s; see stele audit --help", msg);
    return CLI_EXIT_USAGE;
}

/* ---- verify and head (offline) ---------------------------------------------------- */

/* Reads a small text file whole (NUL-terminated). */
static int read_small_file(const char *path, char *buf, size_t cap)
{
    FILE *fp = fopen(path, "r");
    if (!fp)
        return -errno;
    size_t n = fread(buf, 1, cap - 1, fp);
    bool more = fgetc(fp) != EOF;
    int rc = ferror(fp) ? -EIO : 0;
    fclose(fp);
    if (rc)
        return rc;
    if (more || memchr(buf, '\0', n))
        return -EINVAL;
    buf[n] = '\0';
    return 0;
}

/* The public key from --public-key (hex or a file) or the data directory. */
static int load_public_key(const char *what, stele_io *io, const char *audit_dir, const char *arg,
                           uint8_t pk[32])
{
    char text[AUDIT_KEY_FILE_MAX], err[4200];
    if (!arg) {
        int rc = stele_audit_pubkey_load(io, audit_dir, pk, err, sizeof(err));
        if (rc)
            cli_error(what, "%s%s", err,
                      rc == -ENOENT ? " (no audit trail here? pass --data or --public-key)" : "");
        return rc ? CLI_EXIT_FAILURE : CLI_EXIT_OK;
    }
    if (stele_audit_pubkey_parse(arg, pk) == 0)
        return CLI_EXIT_OK;
    int rc = read_small_file(arg, text, sizeof(text));
    if (rc) {
        cli_error(what, "--public-key %s: neither 64 hex digits nor a readable key file (%s)", arg,
                  rc == -EINVAL ? "not a key file" : strerror(-rc));
        return CLI_EXIT_USAGE;
    }
    rc = stele_audit_pubkey_parse(text, pk);
    if (rc) {
        cli_error(what, "--public-key %s: %s", arg,
                  rc == -EBADMSG ? "checksum mismatch (the key was damaged or mistyped)"
                                 : "does not hold an audit public key");
        return CLI_EXIT_FAILURE;
    }
    return CLI_EXIT_OK;
}

static void on_problem(void *ctx, const char *what)
{
    (void)ctx;
    fprintf(stderr, "stele: audit verify: %s\n", what);
}

/* What verify and head both start from: their options, the trail's directory, file
 * access and the public key. */
typedef struct {
    const char *data;
    const char *public_key;
    const char *expect_head; /* verify only */
    char audit_dir[4200];
    stele_io *io;
    uint8_t pk[32];
} offline_trail;

static int parse_offline(int argc, char **argv, const char *what, bool verify, offline_trail *o)
{
    o->data = AUDIT_DEFAULT_DATA;
    for (int i = 2; i < argc; i++) {
        const char *value = NULL;
        int m;
        if ((m = cli_take_option_value(argc, argv, &i, "--data", &value)) != 0) {
            o->data = value;
        } else if ((m = cli_take_option_value(argc, argv, &i, "--public-key", &value)) != 0) {
            o->public_key = value;
        } else if (verify &&
                   (m = cli_take_option_value(argc, argv, &i, "--expect-head", &value)) != 0) {
            o->expect_head = value;
        } else {
            return usage_error(what, "unexpected argument %s", argv[i]);
        }
        if (m < 0)
            return usage_error(what, "a value is needed after %s", argv[i]);
    }
    return CLI_EXIT_OK;
}

/* Parses the options, then sets up file access and loads the public key. CLI_EXIT_OK
 * with t->io to destroy, or an exit code with the error printed and nothing to free. */
static int offline_open(int argc, char **argv, const char *what, bool verify, offline_trail *t)
{
    int rc = parse_offline(argc, argv, what, verify, t);
    if (rc)
        return rc;
    if (strlen(t->data) > 4000)
        return usage_error(what, "--data path too long", NULL);
    snprintf(t->audit_dir, sizeof(t->audit_dir), "%s/audit", t->data);
    if (stele_io_posix_create(&t->io) != 0) {
        cli_error(what, "cannot initialise I/O");
        return CLI_EXIT_FAILURE;
    }
    rc = load_public_key(what, t->io, t->audit_dir, t->public_key, t->pk);
    if (rc) {
        stele_io_destroy(t->io);
        t->io = NULL;
    }
    return rc;
}

static int audit_verify(int argc, char **argv)
{
    static const char what[] = "audit verify";
    offline_trail t = {0};
    char text[AUDIT_KEY_FILE_MAX];
    stele_audit_head expect;
    int rc = offline_open(argc, argv, what, true, &t);
    if (rc)
        return rc;
    if (t.expect_head) {
        int hrc = read_small_file(t.expect_head, text, sizeof(text));
        if (hrc == 0)
            hrc = stele_audit_head_parse(text, t.pk, &expect);
        if (hrc) {
            cli_error(what, "--expect-head %s: %s", t.expect_head,
                      hrc == -EBADMSG  ? "signature invalid for this public key"
                      : hrc == -EINVAL ? "not a head saved by `stele audit head`"
                                       : strerror(-hrc));
            rc = CLI_EXIT_FAILURE;
            goto out;
        }
    }
    stele_audit_summary sum;
    int problems = stele_audit_verify(t.io, t.audit_dir, t.pk, t.expect_head ? &expect : NULL,
                                      on_problem, NULL, NULL, &sum);
    if (problems < 0) {
        cli_error(what, "%s: %s", t.audit_dir,
                  problems == -ENOENT ? "no audit trail here" : strerror(-problems));
        rc = CLI_EXIT_FAILURE;
        goto out;
    }
    printf("%s: %s\n", t.audit_dir, problems ? "DAMAGED" : "intact");
    printf("records %" PRIu64 " (checkpoints %" PRIu64 ") in %" PRIu64
           " segments, last seq %" PRIu64 "\n",
           sum.records, sum.checkpoints, sum.segments, sum.last_seq);
    printf("signed head at seq %" PRIu64 "; last checkpoint covers seq %" PRIu64 "\n", sum.head_seq,
           sum.last_checkpoint_seq);
    if (sum.beyond_head || sum.torn_bytes)
        printf("beyond the head: %" PRIu64 " records, %" PRIu64
               " torn bytes (an append in flight, or a crash the next start recovers)\n",
               sum.beyond_head, sum.torn_bytes);
    if (problems)
        fprintf(stderr, "stele: audit verify: %d problem%s found\n", problems,
                problems == 1 ? "" : "s");
    rc = problems ? CLI_EXIT_FAILURE : CLI_EXIT_OK;
out:
    stele_io_destroy(t.io);
    return rc;
}

static int audit_head(int argc, char **argv)
{
    static const char what[] = "audit head";
    offline_trail t = {0};
    char text[STELE_AUDIT_HEAD_TEXT_MAX];
    stele_audit_head head;
    int rc = offline_open(argc, argv, what, false, &t);
    if (rc)
        return rc;
    int hrc = stele_audit_head_read(t.io, t.audit_dir, t.pk, &head);
    if (hrc == 0 && stele_audit_head_format(&head, text, sizeof(text)) > 0) {
        fputs(text, stdout);
    } else {
        cli_error(what, "%s/audit.head: %s", t.audit_dir,
                  hrc == -EBADMSG ? "damaged or not signed by this key" : strerror(-hrc));
        rc = CLI_EXIT_FAILURE;
    }
    stele_io_destroy(t.io);
    return rc;
}

/* ---- list (client) ---------------------------------------------------------------- */

static void url_escape_append(char *target, size_t cap, const char *name, const char *value)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = strlen(target);
    n += (size_t)snprintf(target + n, cap - n, "%s%s=", strchr(target, '?') ? "&" : "?", name);
    for (const unsigned char *p = (const unsigned char *)value; *p && n + 4 < cap; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
            *p == '-' || *p == '_' || *p == '.' || *p == '~') {
            target[n++] = (char)*p;
        } else {
            target[n++] = '%';
            target[n++] = hex[*p >> 4];
            target[n++] = hex[*p & 15];
        }
    }
    target[n] = '\0';
}

typedef struct {
    cli_client_options client;
    const char *device, *action, *actor, *since, *until, *after, *limit;
    bool newest, json;
} list_options;

static int parse_list(int argc, char **argv, list_options *o)
{
    static const char what[] = "audit list";
    static const char *const names[] = {"--device", "--action", "--actor", "--since", "--until",
                                        "--after",  "--limit",  "--url",   "--token"};
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--newest")) {
            o->newest = true;
            continue;
        }
        if (!strcmp(argv[i], "--json")) {
            o->json = true;
            continue;
        }
        const char *value = NULL;
        int m = 0;
        size_t which = 0;
        for (; which < sizeof(names) / sizeof(names[0]); which++)
            if ((m = cli_take_option_value(argc, argv, &i, names[which], &value)) != 0)
                break;
        if (m < 0)
            return usage_error(what, "a value is needed after %s", argv[i]);
        if (m == 0)
            return usage_error(what, "unexpected argument %s", argv[i]);
        const char **slots[] = {&o->device, &o->action, &o->actor, &o->since,
                                &o->until,  &o->after,  &o->limit};
        if (which < sizeof(slots) / sizeof(slots[0])) {
            *slots[which] = value;
        } else {
            char *dst = which == 7 ? o->client.url : o->client.token;
            size_t cap = which == 7 ? sizeof(o->client.url) : sizeof(o->client.token);
            if (strlen(value) >= cap)
                return usage_error(what, "%s is too long", names[which]);
            snprintf(dst, cap, "%s", value);
        }
    }
    const char *fields[] = {o->device, o->action, o->actor};
    for (size_t k = 0; k < 3; k++)
        if (fields[k] && (!*fields[k] || strlen(fields[k]) > STELE_AUDIT_MAX_FIELD))
            return usage_error(what, "filter value \"%s\" is empty or too long", fields[k]);
    return CLI_EXIT_OK;
}

/* Puts an absolute time for T (RFC 3339, unix seconds, or a duration ago) in out. */
static int time_param(const char *opt, const char *text, char *out, size_t cap)
{
    int64_t ns;
    if (stele_audit_time_parse(text, clock_wall_ns(), &ns) != 0) {
        cli_error("audit list",
                  "%s %s: not a time (RFC 3339, unix seconds, or a duration ago like 1h)", opt,
                  text);
        return CLI_EXIT_USAGE;
    }
    int64_t secs = ns / 1000000000, frac = ns % 1000000000;
    if (frac < 0) {
        frac += 1000000000;
        secs--;
    }
    if (secs < 0) {
        cli_error("audit list", "%s %s: before 1970", opt, text);
        return CLI_EXIT_USAGE;
    }
    snprintf(out, cap, "%lld.%09lld", (long long)secs, (long long)frac);
    return CLI_EXIT_OK;
}

static bool digits_only(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return false;
    return true;
}

typedef struct {
    uint64_t seq;
    char when[40], actor[AUDIT_COLUMN_MAX + 1], action[AUDIT_COLUMN_MAX + 1];
    char subject[AUDIT_COLUMN_MAX + 1], outcome[AUDIT_COLUMN_MAX + 1];
    char details[STELE_AUDIT_MAX_DETAILS + 1];
} audit_row;

static void widen(int *width, const char *text)
{
    int len = (int)strlen(text);
    if (len > *width)
        *width = len;
}

/* Prints the events as aligned columns (each as wide as its widest value, capped). */
static int print_table(json_t *data)
{
    size_t count = json_array_size(data), i;
    json_t *ev;
    audit_row *rows = calloc(count ? count : 1, sizeof(*rows));
    if (!rows) {
        cli_error("audit list", "out of memory for %zu events", count);
        return CLI_EXIT_FAILURE;
    }
    int w_seq = 3, w_when = 4, w_actor = 5, w_action = 6, w_subject = 7, w_outcome = 7;
    json_array_foreach(data, i, ev)
    {
        audit_row *r = &rows[i];
        char seq[24];
        r->seq = (uint64_t)json_integer_value(json_object_get(ev, "seq"));
        snprintf(seq, sizeof(seq), "%" PRIu64, r->seq);
        cli_printable_copy(json_string_value(json_object_get(ev, "time")), r->when,
                           sizeof(r->when));
        cli_printable_copy(json_string_value(json_object_get(ev, "actor")), r->actor,
                           sizeof(r->actor));
        cli_printable_copy(json_string_value(json_object_get(ev, "action")), r->action,
                           sizeof(r->action));
        cli_printable_copy(json_string_value(json_object_get(ev, "subject")), r->subject,
                           sizeof(r->subject));
        cli_printable_copy(json_string_value(json_object_get(ev, "outcome")), r->outcome,
                           sizeof(r->outcome));
        cli_printable_copy(json_string_value(json_object_get(ev, "details")), r->details,
                           sizeof(r->details));
        widen(&w_seq, seq);
        widen(&w_when, r->when);
        widen(&w_actor, r->actor);
        widen(&w_action, r->action);
        widen(&w_subject, r->subject);
        widen(&w_outcome, r->outcome);
    }
    printf("%-*s  %-*s  %-*s  %-*s  %-*s  %-*s  %s\n", w_seq, "SEQ", w_when, "TIME", w_actor,
           "ACTOR", w_action, "ACTION", w_subject, "SUBJECT", w_outcome, "OUTCOME", "DETAILS");
    for (i = 0; i < count; i++) {
        const audit_row *r = &rows[i];
        printf("%-*" PRIu64 "  %-*s  %-*s  %-*s  %-*s  %-*s  %s\n", w_seq, r->seq, w_when, r->when,
               w_actor, r->actor, w_action, r->action, w_subject, r->subject, w_outcome, r->outcome,
               r->details);
    }
    if (count == 0)
        printf("(no events)\n");
    free(rows);
    return CLI_EXIT_OK;
}

static int audit_list(int argc, char **argv)
{
    static const char what[] = "audit list";
    list_options o = {0};
    char target[AUDIT_TARGET_MAX] = "/api/v1/audit", when[48];
    stele_http_client *http = NULL;
    stele_http_response resp = {0};
    json_t *answer = NULL;
    cli_client_options_init(&o.client);
    int rc = parse_list(argc, argv, &o);
    if (rc)
        return rc;
    if (o.after && !digits_only(o.after))
        return usage_error(what, "--after %s: a sequence number", o.after);
    if (o.limit && (!digits_only(o.limit) || strlen(o.limit) > 5 || atoi(o.limit) < 1 ||
                    atoi(o.limit) > AUDIT_LIMIT_MAX))
        return usage_error(what, "--limit %s: a number from 1 to 10000", o.limit);
    if (o.device)
        url_escape_append(target, sizeof(target), "device", o.device);
    if (o.action)
        url_escape_append(target, sizeof(target), "action", o.action);
    if (o.actor)
        url_escape_append(target, sizeof(target), "actor", o.actor);
    if (o.since) {
        if ((rc = time_param("--since", o.since, when, sizeof(when))) != 0)
            return rc;
        url_escape_append(target, sizeof(target), "since", when);
    }
    if (o.until) {
        if ((rc = time_param("--until", o.until, when, sizeof(when))) != 0)
            return rc;
        url_escape_append(target, sizeof(target), "until", when);
    }
    if (o.after)
        url_escape_append(target, sizeof(target), o.newest ? "before" : "after", o.after);
    if (o.limit)
        url_escape_append(target, sizeof(target), "limit", o.limit);
    if (o.newest)
        url_escape_append(target, sizeof(target), "order", "desc");

    rc = cli_client_connect(what, &o.client, &http);
    if (rc)
        return rc;
    char auth[sizeof("Authorization: Token ") + sizeof(o.client.token)];
    const char *headers[3] = {"Accept: application/json", NULL, NULL};
    cli_auth_header(&o.client, auth, sizeof(auth));
    if (auth[0])
        headers[1] = auth;
    int hrc = stele_http_request(http, "GET", target, headers, NULL, 0, &resp);
    if (hrc < 0) {
        cli_error(what, "request to %s failed: %s", o.client.url, strerror(-hrc));
        rc = CLI_EXIT_FAILURE;
        goto out;
    }
    if (resp.status != 200) {
        cli_report_http_error(what, &resp);
        rc = CLI_EXIT_FAILURE;
        goto out;
    }
    answer = json_loadb((const char *)resp.body, resp.body_len, 0, NULL);
    json_t *data = json_object_get(answer, "data");
    if (!json_is_array(data)) {
        cli_error(what, "the server's answer holds no \"data\" array");
        rc = CLI_EXIT_FAILURE;
        goto out;
    }
    if (o.json)
        fwrite(resp.body, 1, resp.body_len, stdout);
    else
        rc = print_table(data);
    json_t *next = json_object_get(answer, o.newest ? "next_before" : "next_after");
    if (json_is_integer(next) && !o.json)
        fprintf(stderr, "stele: audit list: more events; continue with --after %" PRIu64 "%s\n",
                (uint64_t)json_integer_value(next), o.newest ? " --newest" : "");
    if (cli_flush_stdout(what) != CLI_EXIT_OK)
        rc = CLI_EXIT_FAILURE;
out:
    json_decref(answer);
    stele_http_response_free(&resp);
    stele_http_client_destroy(http);
    return rc;
}

int cmd_audit(int argc, char **argv)
{
    if (argc < 2) {
        cli_error("audit", "missing action (verify, list or head); see stele audit --help");
        return CLI_EXIT_USAGE;
    }
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(audit_usage, stdout);
            return CLI_EXIT_OK;
        }
    if (!strcmp(argv[1], "verify"))
        return audit_verify(argc, argv);
    if (!strcmp(argv[1], "list"))
        return audit_list(argc, argv);
    if (!strcmp(argv[1], "head"))
        return audit_head(argc, argv);
    return usage_error("audit", "unknown action %s (verify, list or head)", argv[1]);
}
