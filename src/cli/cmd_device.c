/*
 * cmd_device.c — `stele device add|list|show|revoke|quarantine|release|reenroll`: the
 * identity lifecycle (SPEC §6) through the server's /api/v1/devices endpoints.
 *
 * A thin client, like cmd_token.c: the server owns the registry and audits every
 * change. `add` and `reenroll` print the one-time enrollment token alone on stdout
 * (`T=$(stele device add pump-7)`); other output is a table (or the server's JSON with
 * --json). Strings from the server have control characters replaced before printing.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli/cli.h"
#include "stele/registry.h"

static const char device_usage[] =
    "usage: stele device add ID [--tenant T] [--cohort C]\n"
    "       stele device list [--tenant T] [--state S] [--json]\n"
    "       stele device show ID [--json]\n"
    "       stele device revoke|quarantine|release|reenroll ID\n"
    "       (each also takes [--url URL] [--token TOKEN] [--help])\n"
    "\n"
    "Manages device identities (needs a token with scope admin).\n"
    "\n"
    "  add         registers device ID (pending) and prints its one-time enrollment token\n"
    "              alone on standard output; give it to the device (stele agent enroll)\n"
    "  list        one line per device: ID TENANT COHORT STATE KEY_ID LAST_SEEN\n"
    "  show        every field of one device\n"
    "  revoke      refuses everything from the device, from its very next frame on\n"
    "  quarantine  keeps its telemetry apart (tenant _quarantine, for forensics), out of\n"
    "              every ordinary query; release makes it active again\n"
    "  reenroll    back to pending with a fresh enrollment token (printed alone on\n"
    "              standard output) and a new key; the old keys are dead\n"
    "\n"
    "  --tenant T   tenant of the device (default: the token's)\n"
    "  --cohort C   rollout cohort (1-64 of A-Z a-z 0-9 . _ -)\n"
    "  --state S    list only devices in state pending, active, quarantined or revoked\n"
    "  --json       print the server's JSON answer\n"
    "  --url URL    server (default: $STELE_URL, else " CLI_DEFAULT_URL ")\n"
    "  --token T    admin token (default: $STELE_TOKEN, else " CLI_DEFAULT_TOKEN_FILE ")\n"
    "\n"
    "Exit status: 0 done, 1 failure, 2 usage error.\n";

typedef struct {
    cli_client_options client;
    const char *action, *id, *tenant, *cohort, *state;
    bool json;
} device_options;

static int usage_error(const char *message, const char *arg)
{
    cli_error("device", "%s%s; see stele device --help", message, arg ? arg : "");
    return CLI_EXIT_USAGE;
}

/* Prints s with control characters replaced by '?'. */
static void print_clean(const char *s, FILE *out)
{
    for (; s && *s; s++)
        fputc((unsigned char)*s < 0x20 || *s == 0x7f ? '?' : *s, out);
}

static const char *jstr(json_t *o, const char *key)
{
    const char *v = json_string_value(json_object_get(o, key));
    return v ? v : "-";
}

static void print_device_line(json_t *d)
{
    json_t *key = json_object_get(d, "key");
    json_int_t kid = json_is_object(key) ? json_integer_value(json_object_get(key, "key_id")) : 0;
    const char *cols[] = {jstr(d, "id"), jstr(d, "tenant"), jstr(d, "cohort"), jstr(d, "state")};
    for (size_t i = 0; i < 4; i++) {
        print_clean(cols[i][0] ? cols[i] : "-", stdout);
        fputc(' ', stdout);
    }
    printf("%lld ", (long long)kid);
    print_clean(jstr(d, "last_seen"), stdout);
    fputc('\n', stdout);
}

static void print_key(const char *label, json_t *k)
{
    if (!json_is_object(k))
        return;
    printf("%-17s id %lld, ", label, (long long)json_integer_value(json_object_get(k, "key_id")));
    print_clean(jstr(k, "algorithm"), stdout);
    fputs(", ", stdout);
    print_clean(jstr(k, "public_key"), stdout);
    fputc('\n', stdout);
}

static void print_device_full(json_t *d)
{
    static const char *const fields[] = {
        "id",       "tenant",        "cohort",    "state",          "firmware",        "added",
        "enrolled", "state_changed", "last_seen", "enroll_expires", "overlap_deadline"};
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        json_t *v = json_object_get(d, fields[i]);
        if (!json_is_string(v))
            continue;
        printf("%-17s ", fields[i]);
        print_clean(json_string_value(v), stdout);
        fputc('\n', stdout);
    }
    print_key("key", json_object_get(d, "key"));
    print_key("next_key", json_object_get(d, "next_key"));
}

static int parse_device_args(int argc, char **argv, device_options *o)
{
    static const char *const names[] = {"--tenant", "--cohort", "--state", "--url", "--token"};
    const char *pos[2] = {NULL, NULL};
    int npos = 0;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
            fputs(device_usage, stdout);
            return -1;
        }
        if (!strcmp(arg, "--json")) {
            o->json = true;
            continue;
        }
        if (arg[0] != '-') {
            if (npos == 2)
                return usage_error("unexpected argument ", arg);
            pos[npos++] = arg;
            continue;
        }
        const char *value = NULL;
        int matched = 0;
        size_t which = 0;
        for (; which < sizeof(names) / sizeof(names[0]); which++)
            if ((matched = cli_take_option_value(argc, argv, &i, names[which], &value)) != 0)
                break;
        if (matched < 0)
            return usage_error("a value is needed after ", arg);
        if (matched == 0)
            return usage_error("unknown option ", arg);
        if (which == 0)
            o->tenant = value;
        else if (which == 1)
            o->cohort = value;
        else if (which == 2)
            o->state = value;
        else if (which == 3) {
            if (strlen(value) >= sizeof(o->client.url))
                return usage_error("--url is too long", NULL);
            snprintf(o->client.url, sizeof(o->client.url), "%s", value);
        } else {
            if (strlen(value) >= sizeof(o->client.token))
                return usage_error("--token is too long", NULL);
            snprintf(o->client.token, sizeof(o->client.token), "%s", value);
        }
    }
    o->action = pos[0];
    o->id = pos[1];
    if (!o->action)
        return usage_error("missing action (add, list, show, revoke, quarantine, release, "
                           "reenroll)",
                           NULL);
    static const char *const actions[] = {"add",        "list",    "show",    "revoke",
                                          "quarantine", "release", "reenroll"};
    bool known = false;
    for (size_t i = 0; i < sizeof(actions) / sizeof(actions[0]); i++)
        known |= !strcmp(o->action, actions[i]);
    if (!known)
        return usage_error("unknown action ", o->action);
    bool list = !strcmp(o->action, "list");
    if (list && o->id)
        return usage_error("unexpected argument ", o->id);
    if (!list && !o->id)
        return usage_error("missing device ID", NULL);
    if (o->id && !stele_device_id_valid(o->id, strlen(o->id)))
        return usage_error("invalid device ID (1-64 of A-Z a-z 0-9 . _ -): ", o->id);
    if ((o->tenant && strcmp(o->action, "add") && !list) || (o->cohort && strcmp(o->action, "add")))
        return usage_error("--tenant/--cohort only go with add (and --tenant with list)", NULL);
    if (o->state && !list)
        return usage_error("--state only goes with list", NULL);
    return CLI_EXIT_OK;
}

/* Appends "?k=v" / "&k=v" with v percent-encoded (tenants and states are plain, but a
 * typo should not turn into another parameter). */
static void append_param(char *target, size_t cap, const char *k, const char *v)
{
    size_t n = strlen(target);
    n += (size_t)snprintf(target + n, cap - n, "%s%s=", strchr(target, '?') ? "&" : "?", k);
    for (; *v && n + 4 < cap; v++) {
        unsigned char ch = (unsigned char)*v;
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
            ch == '-' || ch == '_' || ch == '.')
            target[n++] = (char)ch;
        else
            n += (size_t)snprintf(target + n, cap - n, "%%%02X", ch);
    }
    target[n] = '\0';
}

int cmd_device(int argc, char **argv)
{
    device_options o = {0};
    cli_client_options_init(&o.client);
    int rc = parse_device_args(argc, argv, &o);
    if (rc < 0)
        return CLI_EXIT_OK;
    if (rc)
        return rc;
    char what[48];
    snprintf(what, sizeof(what), "device %s", o.action);
    stele_http_client *client = NULL;
    rc = cli_client_connect(what, &o.client, &client);
    if (rc)
        return rc;
    char auth[300], target[512], *body = NULL;
    cli_auth_header(&o.client, auth, sizeof(auth));
    const char *headers[] = {auth, "Content-Type: application/json", NULL};
    const char *method = "GET";
    bool list = !strcmp(o.action, "list"), add = !strcmp(o.action, "add");
    if (list) {
        snprintf(target, sizeof(target), "/api/v1/devices");
        if (o.tenant)
            append_param(target, sizeof(target), "tenant", o.tenant);
        if (o.state)
            append_param(target, sizeof(target), "state", o.state);
    } else if (add) {
        method = "POST";
        snprintf(target, sizeof(target), "/api/v1/devices");
        json_t *req = json_pack("{s:s}", "id", o.id);
        if (req && o.tenant)
            json_object_set_new(req, "tenant", json_string(o.tenant));
        if (req && o.cohort)
            json_object_set_new(req, "cohort", json_string(o.cohort));
        body = req ? json_dumps(req, JSON_COMPACT) : NULL;
        json_decref(req);
        if (!body) {
            cli_error(what, "out of memory");
            stele_http_client_destroy(client);
            return CLI_EXIT_FAILURE;
        }
    } else if (!strcmp(o.action, "show")) {
        snprintf(target, sizeof(target), "/api/v1/devices/%s", o.id);
    } else {
        method = "POST";
        snprintf(target, sizeof(target), "/api/v1/devices/%s/%s", o.id, o.action);
    }
    stele_http_response resp = {0};
    rc = stele_http_request(client, method, target, headers, body ? body : "",
                            body ? strlen(body) : 0, &resp);
    free(body);
    int exit_code = CLI_EXIT_FAILURE;
    if (rc) {
        cli_error(what, "%s: %s", o.client.url, strerror(-rc));
        goto done;
    }
    if (resp.status != 200 && resp.status != 201) {
        cli_report_http_error(what, &resp);
        goto done;
    }
    if (o.json) {
        fwrite(resp.body, 1, resp.body_len, stdout);
        exit_code = CLI_EXIT_OK;
        goto done;
    }
    json_error_t jerr;
    json_t *j = json_loadb((const char *)resp.body, resp.body_len, 0, &jerr);
    if (!j) {
        cli_error(what, "the server's answer is not JSON: %s", jerr.text);
        goto done;
    }
    if (list) {
        json_t *arr = json_object_get(j, "devices"), *d;
        size_t i;
        json_array_foreach(arr, i, d) print_device_line(d);
    } else {
        const char *token = json_string_value(json_object_get(j, "enroll_token"));
        json_t *d = json_object_get(j, "device");
        if (token) {
            print_clean(token, stdout);
            fputc('\n', stdout);
            fprintf(stderr,
                    "stele: device %s: %s is pending; its enrollment token (above) is "
                    "shown once and expires at ",
                    o.action, o.id);
            print_clean(jstr(d, "enroll_expires"), stderr);
            fputc('\n', stderr);
        } else if (!strcmp(o.action, "show")) {
            print_device_full(d);
        } else {
            fprintf(stderr, "stele: device %s: %s is now ", o.action, o.id);
            print_clean(jstr(d, "state"), stderr);
            fputc('\n', stderr);
        }
    }
    json_decref(j);
    exit_code = CLI_EXIT_OK;
done:
    stele_http_response_free(&resp);
    stele_http_client_destroy(client);
    return exit_code;
}
