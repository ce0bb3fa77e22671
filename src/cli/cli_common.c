/*
 * cli_common.c — what the client subcommands share (src/cli/cli.h): the one-line error
 * form, resolving the server URL and token, turning an HTTP error answer into one line
 * an operator can act on, and printing what a server sent without letting it steer the
 * terminal.
 *
 * Design: every subcommand resolves its settings the same way — built-in default, then
 * environment (STELE_URL, STELE_TOKEN), then the admin token file the server writes on
 * first start, then the subcommand's own flags — so a script behaves the same whichever
 * command it runs. Messages from the server are printed on one line: control characters
 * are replaced, and length is capped, because a body can hold anything.
 */
#include "cli/cli.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

/* Longest server message printed: a sentence or three of explanation, not a dump. */
#define CLI_MAX_MESSAGE 400
/* The token file is one line; reading a little more than a token detects a file that
 * is not one (and keeps a stray huge file from being read). */
#define CLI_TOKEN_FILE_READ 512

void cli_error(const char *what, const char *fmt, ...)
{
    va_list args;
    fprintf(stderr, "stele: %s: ", what);
    va_start(args, fmt);
    vfprintf(stderr, fmt, args);
    va_end(args);
    fputc('\n', stderr);
}

static void trim_in_place(char *s)
{
    size_t len = strlen(s);
    while (len > 0 && isspace((unsigned char)s[len - 1]))
        s[--len] = '\0';
    size_t start = 0;
    while (isspace((unsigned char)s[start]))
        start++;
    memmove(s, s + start, len - start + 1);
}

/* First line of the token file, trimmed, when it exists and fits. */
static void token_from_file(const char *path, char *token, size_t cap)
{
    char line[CLI_TOKEN_FILE_READ];
    FILE *fp = fopen(path, "r");
    if (!fp)
        return; /* absent or unreadable: no default token, the server will say 401 */
    if (fgets(line, sizeof(line), fp)) {
        trim_in_place(line);
        if (strlen(line) < cap)
            snprintf(token, cap, "%s", line);
        else
            cli_error("token", "%s: first line longer than %zu bytes; ignored", path, cap - 1);
    }
    fclose(fp);
}

void cli_client_options_init(cli_client_options *opts)
{
    memset(opts, 0, sizeof(*opts));
    snprintf(opts->url, sizeof(opts->url), "%s", CLI_DEFAULT_URL);
    const char *url = getenv("STELE_URL");
    if (url && *url) {
        if (strlen(url) < sizeof(opts->url))
            snprintf(opts->url, sizeof(opts->url), "%s", url);
        else
            cli_error("url", "STELE_URL longer than %zu bytes; using %s", sizeof(opts->url) - 1,
                      CLI_DEFAULT_URL);
    }

    const char *token = getenv("STELE_TOKEN");
    if (token && *token) {
        if (strlen(token) < sizeof(opts->token)) {
            snprintf(opts->token, sizeof(opts->token), "%s", token);
            trim_in_place(opts->token);
        } else {
            cli_error("token", "STELE_TOKEN longer than %zu bytes; ignored",
                      sizeof(opts->token) - 1);
        }
        return;
    }
    token_from_file(CLI_DEFAULT_TOKEN_FILE, opts->token, sizeof(opts->token));
}

int cli_client_connect(const char *what, const cli_client_options *opts, stele_http_client **out)
{
    int rc = stele_http_client_create(opts->url, out);
    if (rc < 0) {
        if (rc == -EINVAL) {
            cli_error(what, "--url: malformed server URL \"%s\" (expected http://HOST:PORT)",
                      opts->url);
            return CLI_EXIT_USAGE;
        }
        cli_error(what, "cannot set up a client for %s: %s", opts->url, strerror(-rc));
        return CLI_EXIT_FAILURE;
    }
    return CLI_EXIT_OK;
}

void cli_auth_header(const cli_client_options *opts, char *buf, size_t cap)
{
    if (cap == 0)
        return;
    if (opts->token[0] == '\0')
        buf[0] = '\0'; /* no token known: send none rather than an empty one */
    else
        snprintf(buf, cap, "Authorization: Token %s", opts->token);
}

/* Copies text into out as one printable line, capped. */
static void one_line(const char *text, size_t len, char *out, size_t cap)
{
    size_t n = 0;
    for (size_t i = 0; i < len && n + 1 < cap; i++) {
        unsigned char ch = (unsigned char)text[i];
        out[n++] = (ch < 0x20 || ch == 0x7f) ? ' ' : (char)ch;
    }
    out[n] = '\0';
    trim_in_place(out);
    size_t kept = strlen(out);
    if (len > cap - 1 && kept >= 3)
        memcpy(out + kept - 3, "...", 4); /* say that it was cut */
}

/* What to tell the operator when the body says nothing. */
static const char *status_hint(int status)
{
    switch (status) {
    case 400:
        return "bad request";
    case 401:
        return "missing or invalid token (set --token or STELE_TOKEN)";
    case 403:
        return "the token lacks the scope or tenant for this";
    case 404:
        return "not found";
    case 413:
        return "request body too large";
    case 429:
        return "too many requests";
    case 500:
        return "internal server error";
    case 503:
        return "server unavailable";
    default:
        return "unexpected answer";
    }
}

void cli_report_http_error(const char *what, const stele_http_response *resp)
{
    char message[CLI_MAX_MESSAGE + 1] = "";
    json_t *root = NULL;

    if (resp->body && resp->body_len > 0) {
        root = json_loadb((const char *)resp->body, resp->body_len, 0, NULL);
        json_t *field = NULL;
        if (json_is_object(root)) {
            field = json_object_get(root, "message");
            if (!json_is_string(field))
                field = json_object_get(root, "error");
        }
        if (json_is_string(field))
            one_line(json_string_value(field), json_string_length(field), message, sizeof(message));
        else
            one_line((const char *)resp->body, resp->body_len, message, sizeof(message));
    }
    if (message[0] == '\0')
        snprintf(message, sizeof(message), "%s", status_hint(resp->status));
    cli_error(what, "HTTP %d: %s", resp->status, message);
    json_decref(root);
}

void cli_printable_copy(const char *text, char *out, size_t cap)
{
    size_t n = 0;
    for (; text && text[n] && n + 1 < cap; n++) {
        unsigned char ch = (unsigned char)text[n];
        out[n] = (ch < 0x20 || ch == 0x7f) ? '?' : (char)ch;
    }
    out[n] = '\0';
}

int cli_flush_stdout(const char *what)
{
    if (fflush(stdout) == 0)
        return CLI_EXIT_OK;
    cli_error(what, "cannot write to standard output: %s", strerror(errno));
    return CLI_EXIT_FAILURE;
}

int cli_take_option_value(int argc, char **argv, int *i, const char *name, const char **value)
{
    size_t len = strlen(name);
    const char *arg = argv[*i];
    if (strncmp(arg, name, len) != 0)
        return 0;
    if (arg[len] == '=') {
        *value = arg + len + 1;
        return 1;
    }
    if (arg[len] != '\0')
        return 0;
    if (*i + 1 >= argc)
        return -1;
    *value = argv[++*i];
    return 1;
}
