/*
 * cmd_token.c — `stele token create|list|revoke`: API token management through the
 * server's /api/v1/tokens endpoints.
 *
 * Design: the command is a thin client — the server owns the token store and its
 * audit trail — so this file only checks arguments early (the same tenant and scope
 * rules as the server, from stele/auth.h, for a usage error instead of a round trip),
 * speaks JSON with jansson, and formats the answer. `create` prints the secret alone on
 * stdout so that `TOKEN=$(stele token create …)` works; everything else goes to stderr.
 * Strings from the server are printed with control characters replaced, since a
 * terminal should never interpret what a server sent.
 */
#include "cli/cli.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "stele/auth.h"

/* Widest value shown in one `list` column; ids, tenants, scopes and RFC 3339 times are
 * all far shorter, so only a misbehaving server is cut. */
#define TOKEN_LIST_MAX_FIELD 64

static const char token_usage[] =
    "usage: stele token create --tenant T --scopes read,write[,admin]\n"
    "       stele token list\n"
    "       stele token revoke ID\n"
    "       (each also takes [--url URL] [--token TOKEN] [--help])\n"
    "\n"
    "Manages API tokens (needs a token with scope admin).\n"
    "\n"
    "  create   makes a token for tenant T with the given scopes and prints it alone on\n"
    "           standard output; it is shown this once and cannot be recovered\n"
    "  list     prints every token: ID TENANT SCOPES CREATED STATE (active or revoked)\n"
    "  revoke   revokes the token with this ID (16 hex digits, as `list` shows it); at once\n"
    "           and for good\n"
    "\n"
    "  --tenant T       tenant of the new token: 1 to 64 of A-Z a-z 0-9 _ -\n"
    "  --scopes S       comma-separated: read, write, admin\n"
    "  --url URL        server (default: $STELE_URL, else " CLI_DEFAULT_URL ")\n"
    "  --token TOKEN    admin token (default: $STELE_TOKEN, else the first line of\n"
    "                   " CLI_DEFAULT_TOKEN_FILE ")\n"
    "  --help, -h       show this help\n"
    "\n"
    "Exit status: 0 done, 1 failure, 2 usage error.\n";

typedef struct {
    cli_client_options client;
    const char *action;
    const char *id;
    const char *tenant;
    const char *scopes;
} token_options;

static int usage_error(const char *what, const char *message, const char *arg)
{
    cli_error(what, "%s%s; see stele token --help", message, arg ? arg : "");
    return CLI_EXIT_USAGE;
}

static bool token_id_valid(const char *id)
{
    if (strlen(id) != STELE_TOKEN_ID_LEN)
        return false;
    for (size_t i = 0; i < STELE_TOKEN_ID_LEN; i++) {
        if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f')))
            return false;
    }
    return true;
}

/* CLI_EXIT_OK, CLI_EXIT_USAGE (message printed), or -1 when --help was printed. */
static int parse_token_args(int argc, char **argv, token_options *o)
{
    static const char *const option_names[] = {"--tenant", "--scopes", "--url", "--token"};
    const char *positionals[2] = {NULL, NULL};
    int positional_count = 0;

    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            fputs(token_usage, stdout);
            return -1;
        }
        if (arg[0] != '-') {
            if (positional_count == 2)
                return usage_error("token", "unexpected argument ", arg);
            positionals[positional_count++] = arg;
            continue;
        }
        const char *value = NULL;
        int matched = 0;
        size_t which = 0;
        for (; which < sizeof(option_names) / sizeof(option_names[0]); which++) {
            matched = cli_take_option_value(argc, argv, &i, option_names[which], &value);
            if (matched != 0)
                break;
        }
        if (matched < 0)
            return usage_error("token", "a value is needed after ", arg);
        if (matched == 0)
            return usage_error("token", "unknown option ", arg);
        if (which == 0) {
            o->tenant = value;
        } else if (which == 1) {
            o->scopes = value;
        } else if (which == 2) {
            if (strlen(value) >= sizeof(o->client.url))
                return usage_error("token", "--url is too long", NULL);
            snprintf(o->client.url, sizeof(o->client.url), "%s", value);
        } else {
            if (strlen(value) >= sizeof(o->client.token))
                return usage_error("token", "--token is too long", NULL);
            snprintf(o->client.token, sizeof(o->client.token), "%s", value);
        }
    }

    o->action = positionals[0];
    if (!o->action)
        return usage_error("token", "missing action (create, list or revoke)", NULL);
    bool create = strcmp(o->action, "create") == 0;
    bool list = strcmp(o->action, "list") == 0;
    bool revoke = strcmp(o->action, "revoke") == 0;
    if (!create && !list && !revoke)
        return usage_error("token", "unknown action ", o->action);
    if (revoke) {
        o->id = positionals[1];
        if (!o->id)
            return usage_error("token revoke", "missing token ID", NULL);
    } else if (positionals[1]) {
        return usage_error(create ? "token create" : "token list", "unexpected argument ",
                           positionals[1]);
    }
    if (!create && (o->tenant || o->scopes))
        return usage_error(list ? "token list" : "token revoke",
                           "--tenant and --scopes apply to create only", NULL);
    if (create) {
        uint32_t scopes = 0;
        if (!o->tenant || !o->scopes)
            return usage_error("token create", "--tenant and --scopes are required", NULL);
        if (!stele_tenant_name_valid(o->tenant)) {
            cli_error("token create", "invalid tenant \"%s\" (1 to %d of A-Z a-z 0-9 _ -)",
                      o->tenant, STELE_TENANT_MAX_LEN);
            return CLI_EXIT_USAGE;
        }
        if (stele_scopes_parse(o->scopes, &scopes) < 0) {
            cli_error("token create", "invalid scopes \"%s\" (comma-separated: read, write, admin)",
                      o->scopes);
            return CLI_EXIT_USAGE;
        }
    }
    if (revoke && !token_id_valid(o->id)) {
        /* Also keeps anything but an id out of the request path. */
        cli_error("token revoke",
                  "malformed token id \"%s\" (16 lowercase hex digits, as `stele token list` "
                  "shows)",
                  o->id);
        return CLI_EXIT_USAGE;
    }
    return CLI_EXIT_OK;
}

/* ---- helpers ------------------------------------------------------------------- */

/* Sends one request with the auth header (and a JSON body when given). CLI_EXIT_OK
 * with *resp filled, or CLI_EXIT_FAILURE with the error printed. */
static int token_request(const token_options *o, stele_http_client *client, const char *what,
                         const char *method, const char *target, const char *json_body,
                         stele_http_response *resp)
{
    char auth[sizeof("Authorization: Token ") + sizeof(o->client.token)];
    const char *headers[4] = {"Accept: application/json", NULL, NULL, NULL};
    size_t count = 1;

    cli_auth_header(&o->client, auth, sizeof(auth));
    if (auth[0])
        headers[count++] = auth;
    if (json_body)
        headers[count++] = "Content-Type: application/json";
    int rc = stele_http_request(client, method, target, headers, json_body,
                                json_body ? strlen(json_body) : 0, resp);
    if (rc < 0) {
        cli_error(what, "request to %s failed: %s", o->client.url, strerror(-rc));
        return CLI_EXIT_FAILURE;
    }
    return CLI_EXIT_OK;
}

/* ---- actions ------------------------------------------------------------------- */

static int token_create(const token_options *o, stele_http_client *client)
{
    static const char what[] = "token create";
    stele_http_response resp = {0};
    json_t *request = NULL;
    json_t *answer = NULL;
    char *body = NULL;
    uint32_t scopes = 0;
    char canonical_scopes[sizeof("read,write,admin")];
    int rc = CLI_EXIT_OK;

    stele_scopes_parse(o->scopes, &scopes); /* checked by parse_token_args */
    stele_scopes_format(scopes, canonical_scopes, sizeof(canonical_scopes));

    request = json_pack("{s:s, s:s}", "tenant", o->tenant, "scopes", canonical_scopes);
    body = request ? json_dumps(request, JSON_COMPACT) : NULL;
    if (!body) {
        cli_error(what, "out of memory");
        rc = CLI_EXIT_FAILURE;
        goto done;
    }
    rc = token_request(o, client, what, "POST", "/api/v1/tokens", body, &resp);
    if (rc != CLI_EXIT_OK)
        goto done;
    if (resp.status != 201 && resp.status != 200) {
        cli_report_http_error(what, &resp);
        rc = CLI_EXIT_FAILURE;
        goto done;
    }
    answer = json_loadb((const char *)resp.body, resp.body_len, 0, NULL);
    const char *token = json_string_value(json_object_get(answer, "token"));
    if (!token || !*token || strpbrk(token, " \t\r\n")) {
        cli_error(what, "the server's answer holds no usable \"token\" (HTTP %d)", resp.status);
        rc = CLI_EXIT_FAILURE;
        goto done;
    }
    printf("%s\n", token);
    if (fflush(stdout) != 0) {
        cli_error(what, "cannot write the token to standard output: %s", strerror(errno));
        rc = CLI_EXIT_FAILURE;
    }

done:
    json_decref(answer);
    json_decref(request);
    free(body);
    stele_http_response_free(&resp);
    return rc;
}

typedef struct {
    char id[TOKEN_LIST_MAX_FIELD + 1];
    char tenant[TOKEN_LIST_MAX_FIELD + 1];
    char scopes[TOKEN_LIST_MAX_FIELD + 1];
    char created[TOKEN_LIST_MAX_FIELD + 1];
    const char *state;
} token_row;

static void widen(int *width, const char *text)
{
    int len = (int)strlen(text);
    if (len > *width)
        *width = len;
}

static int token_list(const token_options *o, stele_http_client *client)
{
    static const char what[] = "token list";
    stele_http_response resp = {0};
    json_t *answer = NULL;
    token_row *rows = NULL;
    int rc = CLI_EXIT_OK;

    rc = token_request(o, client, what, "GET", "/api/v1/tokens", NULL, &resp);
    if (rc != CLI_EXIT_OK)
        goto done;
    if (resp.status != 200) {
        cli_report_http_error(what, &resp);
        rc = CLI_EXIT_FAILURE;
        goto done;
    }
    answer = json_loadb((const char *)resp.body, resp.body_len, 0, NULL);
    json_t *tokens = json_object_get(answer, "tokens");
    if (!json_is_array(tokens)) {
        cli_error(what, "the server's answer holds no \"tokens\" array");
        rc = CLI_EXIT_FAILURE;
        goto done;
    }
    size_t count = json_array_size(tokens);
    rows = calloc(count ? count : 1, sizeof(*rows));
    if (!rows) {
        cli_error(what, "out of memory for %zu tokens", count);
        rc = CLI_EXIT_FAILURE;
        goto done;
    }
    int w_id = (int)strlen("ID"), w_tenant = (int)strlen("TENANT");
    int w_scopes = (int)strlen("SCOPES"), w_created = (int)strlen("CREATED");
    for (size_t i = 0; i < count; i++) {
        json_t *item = json_array_get(tokens, i);
        token_row *row = &rows[i];
        cli_printable_copy(json_string_value(json_object_get(item, "id")), row->id,
                           sizeof(row->id));
        cli_printable_copy(json_string_value(json_object_get(item, "tenant")), row->tenant,
                           sizeof(row->tenant));
        cli_printable_copy(json_string_value(json_object_get(item, "scopes")), row->scopes,
                           sizeof(row->scopes));
        cli_printable_copy(json_string_value(json_object_get(item, "created")), row->created,
                           sizeof(row->created));
        row->state = json_is_true(json_object_get(item, "revoked")) ? "revoked" : "active";
        widen(&w_id, row->id);
        widen(&w_tenant, row->tenant);
        widen(&w_scopes, row->scopes);
        widen(&w_created, row->created);
    }
    printf("%-*s  %-*s  %-*s  %-*s  %s\n", w_id, "ID", w_tenant, "TENANT", w_scopes, "SCOPES",
           w_created, "CREATED", "STATE");
    for (size_t i = 0; i < count; i++) {
        const token_row *row = &rows[i];
        printf("%-*s  %-*s  %-*s  %-*s  %s\n", w_id, row->id, w_tenant, row->tenant, w_scopes,
               row->scopes, w_created, row->created, row->state);
    }
    if (cli_flush_stdout(what) != CLI_EXIT_OK)
        rc = CLI_EXIT_FAILURE;

done:
    free(rows);
    json_decref(answer);
    stele_http_response_free(&resp);
    return rc;
}

static int token_revoke(const token_options *o, stele_http_client *client)
{
    static const char what[] = "token revoke";
    stele_http_response resp = {0};
    char target[sizeof("/api/v1/tokens/") + STELE_TOKEN_ID_LEN];
    int rc = CLI_EXIT_OK;

    snprintf(target, sizeof(target), "/api/v1/tokens/%s", o->id);
    rc = token_request(o, client, what, "DELETE", target, NULL, &resp);
    if (rc != CLI_EXIT_OK)
        goto done;
    if (resp.status == 404) {
        cli_error(what, "no token with id %s", o->id);
        rc = CLI_EXIT_FAILURE;
    } else if (resp.status != 204 && resp.status != 200) {
        cli_report_http_error(what, &resp);
        rc = CLI_EXIT_FAILURE;
    }

done:
    stele_http_response_free(&resp);
    return rc;
}

int cmd_token(int argc, char **argv)
{
    token_options options = {0};
    stele_http_client *client = NULL;
    int rc = CLI_EXIT_OK;

    cli_client_options_init(&options.client);
    rc = parse_token_args(argc, argv, &options);
    if (rc < 0)
        return CLI_EXIT_OK; /* --help */
    if (rc != CLI_EXIT_OK)
        return rc;
    char what[32];
    snprintf(what, sizeof(what), "token %s", options.action);
    rc = cli_client_connect(what, &options.client, &client);
    if (rc != CLI_EXIT_OK)
        return rc;
    if (strcmp(options.action, "create") == 0)
        rc = token_create(&options, client);
    else if (strcmp(options.action, "list") == 0)
        rc = token_list(&options, client);
    else
        rc = token_revoke(&options, client);
    stele_http_client_destroy(client);
    return rc;
}
