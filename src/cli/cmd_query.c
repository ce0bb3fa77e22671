/*
 * cmd_query.c — `stele query EXPR [--time T | --start T --end T --step D] [--json]`:
 * runs a PromQL query on a server (/api/v1/query or /api/v1/query_range) and prints the
 * result as an aligned table (series, value, time), or the API's JSON with --json.
 */
#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"

/* Query text in a URL grows 3× at worst when escaped. */
#define QUERY_TARGET_MAX (3 * 65536 + 1024)

static const char query_usage[] =
    "usage: stele query EXPR [--time T | --start T --end T --step D] [--json]\n"
    "                   [--tenant T] [--url URL] [--token TOKEN]\n\n"
    "Runs a PromQL query. Without --start/--end it is an instant query at --time\n"
    "(default: now); with them a range query every --step (default 60s).\n"
    "Times: unix seconds or RFC 3339; steps: seconds or a duration like 15s, 5m.\n\n"
    "  --json           print the API's JSON response instead of a table\n"
    "  --tenant T       query another tenant (admin tokens only)\n"
    "  --url URL        server (default: $STELE_URL, else http://127.0.0.1:7400)\n"
    "  --token TOKEN    token with scope read (default: $STELE_TOKEN, else\n"
    "                   ./stele-data/admin.token)\n";

static void url_escape(const char *in, char *out, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = 0;
    for (; *in && n + 4 < cap; in++) {
        unsigned char c = (unsigned char)*in;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '_' || c == '.' || c == '~') {
            out[n++] = (char)c;
        } else {
            out[n++] = '%';
            out[n++] = hex[c >> 4];
            out[n++] = hex[c & 15];
        }
    }
    out[n] = '\0';
}

static void append_param(char *target, size_t cap, const char *name, const char *value)
{
    char esc[1024];
    url_escape(value, esc, sizeof(esc));
    size_t n = strlen(target);
    snprintf(target + n, cap - n, "&%s=%s", name, esc);
}

static void print_time(const char *seconds)
{
    double t = strtod(seconds, NULL);
    time_t secs = (time_t)t;
    struct tm tm;
    char buf[40];
    gmtime_r(&secs, &tm);
    strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
    int ms = (int)((t - (double)secs) * 1000 + 0.5);
    if (ms)
        printf("%s.%03dZ", buf, ms);
    else
        printf("%sZ", buf);
}

static void format_metric(json_t *metric, char *buf, size_t cap)
{
    const char *name = json_string_value(json_object_get(metric, "__name__"));
    size_t n = (size_t)snprintf(buf, cap, "%s{", name ? name : "");
    const char *key;
    json_t *v;
    bool first = true;
    json_object_foreach(metric, key, v)
    {
        if (!strcmp(key, "__name__") || n >= cap)
            continue;
        n += (size_t)snprintf(buf + n, cap - n, "%s%s=\"%s\"", first ? "" : ", ", key,
                              json_string_value(v) ? json_string_value(v) : "");
        first = false;
    }
    if (n < cap)
        snprintf(buf + n, cap - n, "}");
}

static int print_table(json_t *data)
{
    const char *type = json_string_value(json_object_get(data, "resultType"));
    json_t *result = json_object_get(data, "result");
    if (!type || !result)
        return -EINVAL;
    if (!strcmp(type, "scalar") || !strcmp(type, "string")) {
        char t[32];
        snprintf(t, sizeof(t), "%.3f", json_number_value(json_array_get(result, 0)));
        printf("%-10s  %s  ", type, json_string_value(json_array_get(result, 1)));
        print_time(t);
        printf("\n");
        return 0;
    }
    /* Column width: the longest series text. */
    size_t width = 6, index;
    json_t *row;
    char metric[2048];
    json_array_foreach(result, index, row)
    {
        format_metric(json_object_get(row, "metric"), metric, sizeof(metric));
        if (strlen(metric) > width)
            width = strlen(metric);
    }
    if (width > 120)
        width = 120;
    printf("%-*s  %-22s  %s\n", (int)width, "SERIES", "VALUE", "TIME");
    json_array_foreach(result, index, row)
    {
        format_metric(json_object_get(row, "metric"), metric, sizeof(metric));
        json_t *single = json_object_get(row, "value");
        json_t *values = json_object_get(row, "values");
        size_t i;
        json_t *point;
        if (single) {
            char t[32];
            snprintf(t, sizeof(t), "%.3f", json_number_value(json_array_get(single, 0)));
            printf("%-*s  %-22s  ", (int)width, metric,
                   json_string_value(json_array_get(single, 1)));
            print_time(t);
            printf("\n");
        }
        json_array_foreach(values, i, point)
        {
            char t[32];
            snprintf(t, sizeof(t), "%.3f", json_number_value(json_array_get(point, 0)));
            printf("%-*s  %-22s  ", (int)width, metric,
                   json_string_value(json_array_get(point, 1)));
            print_time(t);
            printf("\n");
        }
    }
    if (json_array_size(result) == 0)
        printf("(no data)\n");
    return 0;
}

int cmd_query(int argc, char **argv)
{
    cli_client_options client;
    const char *expr = NULL, *time_arg = NULL, *start = NULL, *end = NULL, *step = NULL;
    const char *tenant = NULL;
    bool json_out = false;
    cli_client_options_init(&client);
    for (int i = 1; i < argc; i++) {
        const char *value = NULL;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(query_usage, stdout);
            return CLI_EXIT_OK;
        }
        if (!strcmp(argv[i], "--json")) {
            json_out = true;
            continue;
        }
        static const char *const names[] = {"--time",   "--start", "--end",  "--step",
                                            "--tenant", "--url",   "--token"};
        int matched = 0;
        size_t which = 0;
        for (; which < sizeof(names) / sizeof(names[0]); which++)
            if ((matched = cli_take_option_value(argc, argv, &i, names[which], &value)) != 0)
                break;
        if (matched < 0) {
            cli_error("query", "a value is needed after %s; see stele query --help", argv[i]);
            return CLI_EXIT_USAGE;
        }
        if (matched == 0) {
            if (argv[i][0] == '-' && argv[i][1] == '-') {
                cli_error("query", "unknown option %s; see stele query --help", argv[i]);
                return CLI_EXIT_USAGE;
            }
            if (expr) {
                cli_error("query", "one expression only (quote it); see stele query --help");
                return CLI_EXIT_USAGE;
            }
            expr = argv[i];
            continue;
        }
        const char **slots[] = {&time_arg, &start, &end, &step, &tenant, NULL, NULL};
        if (which < 5) {
            *slots[which] = value;
        } else if (which == 5) {
            snprintf(client.url, sizeof(client.url), "%s", value);
        } else {
            snprintf(client.token, sizeof(client.token), "%s", value);
        }
    }
    if (!expr) {
        cli_error("query", "missing EXPR; see stele query --help");
        return CLI_EXIT_USAGE;
    }
    if (strlen(expr) > 65536) {
        cli_error("query", "expression longer than 65536 bytes");
        return CLI_EXIT_USAGE;
    }
    bool range = start || end;
    if (range && (!start || !end)) {
        cli_error("query", "a range query needs both --start and --end");
        return CLI_EXIT_USAGE;
    }
    if (!range && step) {
        cli_error("query", "--step is for range queries; add --start and --end");
        return CLI_EXIT_USAGE;
    }
    if (range && time_arg) {
        cli_error("query", "--time is for instant queries; use --start/--end or --time");
        return CLI_EXIT_USAGE;
    }
    char *target = malloc(QUERY_TARGET_MAX);
    if (!target)
        return CLI_EXIT_FAILURE;
    char *esc = malloc(QUERY_TARGET_MAX);
    if (!esc) {
        free(target);
        return CLI_EXIT_FAILURE;
    }
    url_escape(expr, esc, QUERY_TARGET_MAX);
    snprintf(target, QUERY_TARGET_MAX, "/api/v1/%s?query=%s", range ? "query_range" : "query", esc);
    free(esc);
    if (range) {
        append_param(target, QUERY_TARGET_MAX, "start", start);
        append_param(target, QUERY_TARGET_MAX, "end", end);
        append_param(target, QUERY_TARGET_MAX, "step", step ? step : "60");
    } else if (time_arg) {
        append_param(target, QUERY_TARGET_MAX, "time", time_arg);
    }
    if (tenant)
        append_param(target, QUERY_TARGET_MAX, "tenant", tenant);

    stele_http_client *http = NULL;
    int rc = cli_client_connect("query", &client, &http);
    if (rc != CLI_EXIT_OK) {
        free(target);
        return rc;
    }
    char auth[400];
    cli_auth_header(&client, auth, sizeof(auth));
    const char *headers[] = {auth, NULL};
    stele_http_response resp;
    int hrc = stele_http_request(http, "GET", target, auth[0] ? headers : NULL, NULL, 0, &resp);
    free(target);
    if (hrc) {
        cli_error("query", "request to %s failed: %s", client.url, strerror(-hrc));
        stele_http_client_destroy(http);
        return CLI_EXIT_FAILURE;
    }
    rc = CLI_EXIT_OK;
    if (resp.status != 200) {
        cli_report_http_error("query", &resp);
        rc = CLI_EXIT_FAILURE;
    } else if (json_out) {
        fwrite(resp.body, 1, resp.body_len, stdout);
        if (resp.body_len && resp.body[resp.body_len - 1] != '\n')
            putchar('\n');
    } else {
        json_t *root = json_loadb((const char *)resp.body, resp.body_len, 0, NULL);
        if (!root || print_table(json_object_get(root, "data")) != 0) {
            cli_error("query", "unexpected response from the server (not Prometheus JSON)");
            rc = CLI_EXIT_FAILURE;
        }
        json_decref(root);
    }
    stele_http_response_free(&resp);
    stele_http_client_destroy(http);
    return rc;
}
