/*
 * cmd_write.c — `stele write`: sends line protocol from a file or standard input to
 * POST /api/v2/write.
 *
 * Design: the input is streamed through one buffer of WRITE_REQUEST_MAX bytes, so
 * memory stays bounded whatever the input size. When the buffer is full it is sent up
 * to its last line boundary and the rest is kept for the next request. A line boundary
 * is a newline outside a quoted string field value: the scanner below follows line
 * protocol's escapes and quoting just enough to know, so a string field holding
 * newlines is never cut in two. Each request is atomic on the server; a failure stops
 * the command and says how much of the input was already stored. 429 and 503 answers
 * are retried after the server's Retry-After, a bounded number of times.
 */
#include "cli/cli.h"

#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "stele/auth.h"

/* Largest request body: half the server's default body limit (32 MiB), so a request
 * fits even on a server configured somewhat lower, and the input buffer stays modest. */
#define WRITE_REQUEST_MAX ((size_t)16 << 20)
/* One read from the input; big enough that reading costs little. */
#define WRITE_READ_PIECE ((size_t)1 << 20)
/* 429/503 retries per request: with waits of 1, 2, 4, 8, 16 s (when the server gives
 * no Retry-After) that is half a minute of patience before giving up. */
#define WRITE_MAX_RETRIES 5
/* Longest wait honoured from one Retry-After, so a confused server cannot park the
 * command for hours. */
#define WRITE_MAX_RETRY_WAIT_S 60

static const char write_usage[] =
    "usage: stele write [FILE|-] [--tenant T] [--precision ns|us|ms|s] [--url URL]\n"
    "                   [--token TOKEN] [--verbose] [--help]\n"
    "\n"
    "Sends InfluxDB line protocol from FILE, or from standard input when FILE is \"-\" or\n"
    "absent, to the server (POST /api/v2/write).\n"
    "\n"
    "  --tenant T       write into tenant T (it must be the token's tenant)\n"
    "  --precision P    unit of the timestamps: ns (default), us, ms or s\n"
    "  --url URL        server (default: $STELE_URL, else " CLI_DEFAULT_URL ")\n"
    "  --token TOKEN    API token with scope write (default: $STELE_TOKEN, else the first\n"
    "                   line of " CLI_DEFAULT_TOKEN_FILE ")\n"
    "  --verbose, -v    report retries and a summary on standard error\n"
    "  --help, -h       show this help\n"
    "\n"
    "Input over 16 MiB is sent as several requests, split at newlines between lines (never\n"
    "inside a line or a quoted string). Each request is atomic on its own: when one fails,\n"
    "the requests before it stay written and the rest of the input is not sent; the error\n"
    "says where the failed request began. Answers 429 and 503 are retried after the\n"
    "server's Retry-After, at most 5 times.\n"
    "\n"
    "Exit status: 0 all written, 1 failure, 2 usage error.\n";

/* ---- arguments ----------------------------------------------------------------- */

typedef struct {
    cli_client_options client;
    const char *input_path; /* NULL or "-": standard input */
    const char *tenant;     /* NULL: the token's own */
    const char *precision;
    bool verbose;
} write_options;

/* CLI_EXIT_OK, CLI_EXIT_USAGE (message printed), or -1 when --help was printed. */
static int parse_write_args(int argc, char **argv, write_options *o)
{
    static const char *const option_names[] = {"--tenant", "--precision", "--url", "--token"};
    bool only_positionals = false;

    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (!only_positionals && arg[0] == '-' && arg[1] != '\0') {
            if (strcmp(arg, "--") == 0) {
                only_positionals = true;
                continue;
            }
            if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
                fputs(write_usage, stdout);
                return -1;
            }
            if (strcmp(arg, "--verbose") == 0 || strcmp(arg, "-v") == 0) {
                o->verbose = true;
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
            if (matched < 0) {
                cli_error("write", "%s needs a value; see stele write --help", arg);
                return CLI_EXIT_USAGE;
            }
            if (matched == 0) {
                cli_error("write", "unknown option %s; see stele write --help", arg);
                return CLI_EXIT_USAGE;
            }
            if (which == 0) {
                o->tenant = value;
            } else if (which == 1) {
                o->precision = value;
            } else if (which == 2) {
                if (strlen(value) >= sizeof(o->client.url)) {
                    cli_error("write", "--url longer than %zu bytes", sizeof(o->client.url) - 1);
                    return CLI_EXIT_USAGE;
                }
                snprintf(o->client.url, sizeof(o->client.url), "%s", value);
            } else {
                if (strlen(value) >= sizeof(o->client.token)) {
                    cli_error("write", "--token longer than %zu bytes",
                              sizeof(o->client.token) - 1);
                    return CLI_EXIT_USAGE;
                }
                snprintf(o->client.token, sizeof(o->client.token), "%s", value);
            }
            continue;
        }
        if (o->input_path) {
            cli_error("write", "one input at a time (got %s and %s); see stele write --help",
                      o->input_path, arg);
            return CLI_EXIT_USAGE;
        }
        o->input_path = arg;
    }

    if (o->tenant && !stele_tenant_name_valid(o->tenant)) {
        cli_error("write", "invalid tenant \"%s\" (1 to %d of A-Z a-z 0-9 _ -)", o->tenant,
                  STELE_TENANT_MAX_LEN);
        return CLI_EXIT_USAGE;
    }
    if (strcmp(o->precision, "ns") != 0 && strcmp(o->precision, "us") != 0 &&
        strcmp(o->precision, "ms") != 0 && strcmp(o->precision, "s") != 0) {
        cli_error("write", "invalid precision \"%s\" (one of ns, us, ms, s)", o->precision);
        return CLI_EXIT_USAGE;
    }
    return CLI_EXIT_OK;
}

/* ---- line boundaries ----------------------------------------------------------- */

typedef enum {
    SCAN_LINE_START, /* nothing of the line seen yet (blanks only) */
    SCAN_COMMENT,    /* a line starting with '#' */
    SCAN_SERIES,     /* measurement and tags, up to the first unescaped space */
    SCAN_FIELDS,     /* field set */
    SCAN_STRING,     /* inside a quoted string field value; newlines belong to it */
    SCAN_TIMESTAMP,  /* after the field set */
} scan_state;

typedef struct {
    scan_state state;
    bool escaped; /* the previous byte was an escaping backslash */
    char prev;    /* previous byte in the field set: '=' opens a string */
} line_scanner;

/* Feeds one byte; true when it is a newline that ends a line. */
static bool line_scanner_step(line_scanner *s, char ch)
{
    if (s->escaped) {
        s->escaped = false;
        s->prev = 0;
        if (s->state == SCAN_STRING || ch != '\n')
            return false;
        /* A backslash does not carry a line across a newline outside a string. */
    }
    switch (s->state) {
    case SCAN_LINE_START:
        if (ch == '#') {
            s->state = SCAN_COMMENT;
        } else if (ch == '\\') {
            s->state = SCAN_SERIES;
            s->escaped = true;
        } else if (ch != '\n' && ch != ' ' && ch != '\t' && ch != '\r') {
            s->state = SCAN_SERIES;
        }
        break;
    case SCAN_COMMENT:
    case SCAN_TIMESTAMP:
        break;
    case SCAN_SERIES:
        if (ch == '\\')
            s->escaped = true;
        else if (ch == ' ')
            s->state = SCAN_FIELDS;
        s->prev = ch;
        break;
    case SCAN_FIELDS:
        if (ch == '\\')
            s->escaped = true;
        else if (ch == '"' && s->prev == '=')
            s->state = SCAN_STRING;
        else if (ch == ' ')
            s->state = SCAN_TIMESTAMP;
        s->prev = ch;
        break;
    case SCAN_STRING:
        if (ch == '\\')
            s->escaped = true;
        else if (ch == '"')
            s->state = SCAN_FIELDS;
        s->prev = ch;
        return false;
    }
    if (ch == '\n') {
        s->state = SCAN_LINE_START;
        s->prev = 0;
        return true;
    }
    return false;
}

/* ---- sending ------------------------------------------------------------------- */

typedef struct {
    const write_options *options;
    stele_http_client *client;
    char target[128];
    char auth_header[sizeof("Authorization: Token ") + sizeof(((cli_client_options *)0)->token)];
    size_t bytes_written;
    size_t requests_sent;
    size_t lines_written; /* newlines in what was sent before, to number input lines */
} write_session;

static void sleep_seconds(unsigned seconds)
{
    struct timespec left = {.tv_sec = seconds, .tv_nsec = 0};
    while (nanosleep(&left, &left) != 0 && errno == EINTR)
        ;
}

/* Seconds to wait before retrying: the server's Retry-After (delta-seconds) when given,
 * else an exponential backoff; capped either way. */
static unsigned retry_wait_seconds(const stele_http_response *resp, int attempt)
{
    char value[32];
    unsigned wait = 1u << attempt;
    if (stele_http_response_header(resp, "Retry-After", value, sizeof(value)) == 0 &&
        value[0] >= '0' && value[0] <= '9') {
        char *end = NULL;
        unsigned long seconds = strtoul(value, &end, 10);
        if (*end == '\0')
            wait = seconds > WRITE_MAX_RETRY_WAIT_S ? WRITE_MAX_RETRY_WAIT_S : (unsigned)seconds;
    }
    return wait > WRITE_MAX_RETRY_WAIT_S ? WRITE_MAX_RETRY_WAIT_S : wait;
}

/* Sends one request body, retrying on 429/503. CLI_EXIT_OK or CLI_EXIT_FAILURE, the
 * error printed. */
/* One error line. A bad line is numbered within the input, not within the request
 * (the input may have been split into several), and earlier requests that were stored
 * are mentioned, since each request is atomic only on its own. */
static void report_write_error(const write_session *w, const stele_http_response *resp)
{
    json_t *root = json_loadb((const char *)resp->body, resp->body_len, 0, NULL);
    json_t *line = json_is_object(root) ? json_object_get(root, "line") : NULL;
    json_t *msg = json_is_object(root) ? json_object_get(root, "message") : NULL;
    if (!json_is_integer(line) || !json_is_string(msg)) {
        json_decref(root);
        if (w->requests_sent == 0) {
            cli_report_http_error("write", resp);
            return;
        }
        cli_error("write",
                  "HTTP %d after %zu stored requests (%zu bytes); nothing of the failed "
                  "request was stored",
                  resp->status, w->requests_sent, w->bytes_written);
        return;
    }
    const char *text = json_string_value(msg);
    /* The server says "line N: …"; renumber it for the whole input. */
    if (!strncmp(text, "line ", 5)) {
        const char *colon = strstr(text, ": ");
        if (colon)
            text = colon + 2;
    }
    long long input_line = json_integer_value(line) + (long long)w->lines_written;
    if (w->requests_sent)
        cli_error("write",
                  "HTTP %d: input line %lld: %.400s (the %zu requests before it, %zu "
                  "bytes, were stored)",
                  resp->status, input_line, text, w->requests_sent, w->bytes_written);
    else
        cli_error("write", "HTTP %d: input line %lld: %.400s", resp->status, input_line, text);
    json_decref(root);
}

static int send_request(write_session *w, const char *data, size_t len)
{
    const char *headers[3] = {"Content-Type: text/plain; charset=utf-8", NULL, NULL};
    if (w->auth_header[0])
        headers[1] = w->auth_header;

    for (int attempt = 0;; attempt++) {
        stele_http_response resp;
        int rc = stele_http_request(w->client, "POST", w->target, headers, data, len, &resp);
        if (rc < 0) {
            cli_error("write", "request to %s failed: %s", w->options->client.url, strerror(-rc));
            return CLI_EXIT_FAILURE;
        }
        if (resp.status >= 200 && resp.status < 300) {
            stele_http_response_free(&resp);
            w->bytes_written += len;
            w->requests_sent++;
            for (size_t i = 0; i < len; i++)
                w->lines_written += data[i] == '\n';
            return CLI_EXIT_OK;
        }
        if ((resp.status == 429 || resp.status == 503) && attempt < WRITE_MAX_RETRIES) {
            unsigned wait = retry_wait_seconds(&resp, attempt);
            if (w->options->verbose)
                cli_error("write", "HTTP %d, retrying in %u s (%d of %d)", resp.status, wait,
                          attempt + 1, WRITE_MAX_RETRIES);
            stele_http_response_free(&resp);
            sleep_seconds(wait);
            continue;
        }
        report_write_error(w, &resp);
        stele_http_response_free(&resp);
        return CLI_EXIT_FAILURE;
    }
}

/* A piece of input with nothing but blank lines carries no point: not worth a request. */
static bool only_blanks(const char *data, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (data[i] != ' ' && data[i] != '\t' && data[i] != '\r' && data[i] != '\n')
            return false;
    }
    return true;
}

/* Streams the input through the buffer, sending at line boundaries. */
static int stream_input(write_session *w, FILE *input, const char *input_name)
{
    char *buf = NULL;
    size_t buf_len = 0;
    size_t scanned = 0;      /* bytes of buf fed to the scanner */
    size_t last_split = 0;   /* just after the last line-ending newline in buf; 0: none */
    size_t input_offset = 0; /* input offset of buf[0] */
    line_scanner scanner = {.state = SCAN_LINE_START};
    bool at_eof = false;
    int rc = CLI_EXIT_OK;

    buf = malloc(WRITE_REQUEST_MAX);
    if (!buf) {
        cli_error("write", "out of memory for a %zu-byte buffer", WRITE_REQUEST_MAX);
        return CLI_EXIT_FAILURE;
    }
    while (!at_eof || buf_len > 0) {
        if (!at_eof && buf_len < WRITE_REQUEST_MAX) {
            size_t room = WRITE_REQUEST_MAX - buf_len;
            size_t n =
                fread(buf + buf_len, 1, room < WRITE_READ_PIECE ? room : WRITE_READ_PIECE, input);
            if (n == 0) {
                if (ferror(input)) {
                    cli_error("write", "cannot read %s: %s", input_name, strerror(errno));
                    rc = CLI_EXIT_FAILURE;
                    goto fail;
                }
                at_eof = true;
            }
            buf_len += n;
        }
        for (; scanned < buf_len; scanned++) {
            if (line_scanner_step(&scanner, buf[scanned]))
                last_split = scanned + 1;
        }
        if (!at_eof && buf_len < WRITE_REQUEST_MAX)
            continue;

        size_t send_len = at_eof ? buf_len : last_split;
        if (send_len == 0 && at_eof)
            break; /* empty input */
        if (send_len == 0) {
            cli_error("write",
                      "%s: the line at byte %zu is longer than %zu MiB, the most one request "
                      "carries",
                      input_name, input_offset, WRITE_REQUEST_MAX >> 20);
            rc = CLI_EXIT_FAILURE;
            goto fail;
        }
        rc = only_blanks(buf, send_len) ? CLI_EXIT_OK : send_request(w, buf, send_len);
        if (rc != CLI_EXIT_OK)
            goto fail;
        memmove(buf, buf + send_len, buf_len - send_len);
        buf_len -= send_len;
        scanned -= send_len;
        input_offset += send_len;
        last_split = 0; /* it was the last boundary, so none remains in the rest */
    }

fail:
    free(buf);
    return rc;
}

int cmd_write(int argc, char **argv)
{
    write_options options = {.precision = "ns"};
    write_session session = {.options = &options};
    FILE *input = NULL;
    bool close_input = false;
    int rc = CLI_EXIT_OK;

    cli_client_options_init(&options.client);
    rc = parse_write_args(argc, argv, &options);
    if (rc < 0)
        return CLI_EXIT_OK; /* --help */
    if (rc != CLI_EXIT_OK)
        return rc;

    const char *input_name = "standard input";
    if (options.input_path && strcmp(options.input_path, "-") != 0) {
        input = fopen(options.input_path, "rb");
        if (!input) {
            cli_error("write", "cannot open %s: %s", options.input_path, strerror(errno));
            return CLI_EXIT_FAILURE;
        }
        close_input = true;
        input_name = options.input_path;
    } else {
        input = stdin;
    }

    rc = cli_client_connect("write", &options.client, &session.client);
    if (rc != CLI_EXIT_OK)
        goto fail;
    if (options.tenant)
        snprintf(session.target, sizeof(session.target), "/api/v2/write?bucket=%s&precision=%s",
                 options.tenant, options.precision);
    else
        snprintf(session.target, sizeof(session.target), "/api/v2/write?precision=%s",
                 options.precision);
    cli_auth_header(&options.client, session.auth_header, sizeof(session.auth_header));

    rc = stream_input(&session, input, input_name);
    if (rc == CLI_EXIT_OK && options.verbose)
        cli_error("write", "wrote %zu bytes in %zu requests", session.bytes_written,
                  session.requests_sent);

fail:
    stele_http_client_destroy(session.client);
    if (close_input)
        fclose(input);
    return rc;
}
