/*
 * query_load.c — the client side of the query benchmarks of issue 3 (bench/query.sh,
 * bench/isolation.sh): times Prometheus-API queries, keeps several clients querying in
 * a loop, and compares two servers' answers.
 *
 *   query_load time    --url URL --target T [--token-file F | --token T] [--runs N]
 *                      [--warmup W] [--save FILE] [--label L] [--expect-status S]
 *   query_load loop    --url URL --target T [--target T2 ...] [--token-file F]
 *                      [--clients C] [--seconds S] [--label L]
 *   query_load compare --a FILE --b FILE [--rel-tol X] [--by-value] [--label L]
 *
 * Design: the tool knows nothing of PromQL. A target is a request path with its query
 * string already encoded ("/api/v1/query_range?query=...&start=...&step=..."), built by
 * the script, so the same bytes go to Stele and to VictoriaMetrics (the script adds
 * VictoriaMetrics' own parameters, e.g. nocache=1, to its targets).
 *
 * time: one keep-alive connection; W warm-up requests, then N timed ones, one after the
 * other. A request's time runs from the first byte sent to the last byte of the body
 * received, so it includes the server's JSON encoding and the transfer, as a dashboard
 * sees it — but no parsing on our side. Prints one JSON line (median, p90, min, max ms,
 * and series/points of the last answer); a status other than the expected one (200)
 * prints the body and exits 1. --save keeps the last body for `compare`.
 *
 * loop: C threads, each with its own keep-alive connection, request the targets round
 * robin (thread i starts at target i mod n) until --seconds pass or SIGINT/SIGTERM
 * arrives (the script stops the loop when its ingestion run ends). The signal only sets
 * a flag; threads finish the request in flight and stop. Prints requests, answers by
 * status class, queries/s and latency percentiles. A 429 (the server's queue is full)
 * is counted, not fatal: shedding load is allowed, and the count says how much.
 *
 * compare: reads two saved answers (vector, matrix or scalar) and matches series by
 * their labels without __name__ (engines differ on when a function keeps the name),
 * then points by timestamp (ms). Prints one JSON line: series and points on each side,
 * matched, only on one side, values outside the relative tolerance and the largest
 * differences; the first few differences go to stderr in words. --by-value compares the
 * sorted multisets of values instead of series by label: for topk, where engines may
 * break ties between equal values differently. Exit 0 when both answers parsed
 * (whatever they say — the script reads "equal"), 1 otherwise.
 */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "stele/client.h"

/* The protocol: 20 timed runs after 2 warm-ups per query. */
#define DEFAULT_RUNS 20
#define DEFAULT_WARMUP 2
/* More runs than this would only repeat the same figure; the bound keeps the
 * per-run array small and fixed. */
#define MAX_RUNS 10000
/* The isolation benchmark's 8 query clients; the cap only bounds the thread array. */
#define DEFAULT_LOOP_CLIENTS 8
#define MAX_LOOP_CLIENTS 64
/* A loop that nobody stops still ends: ten minutes is longer than any measured run. */
#define DEFAULT_LOOP_SECONDS 600.0
#define MAX_TARGETS 16
/* Stele's default query timeout is 30 s and VictoriaMetrics' 30 s too; a request that
 * takes longer than twice that is a hung server, not a slow query. */
#define REQUEST_TIMEOUT_MS 60000
/* The largest answer of the benchmark (rate over 1,000 series × ~170 steps) is a few
 * MB; 512 MiB only stops a runaway. */
#define MAX_ANSWER_BYTES (512u << 20)
/* Latency samples each loop thread keeps; past it, requests are still counted but not
 * timed (a 10-minute loop of 1 ms queries would not fill it). */
#define LOOP_SAMPLES_MAX (1u << 20)
/* Main thread's polling period for the stop flag and the deadline of a loop. */
#define LOOP_POLL_NS 20000000L
/* Default tolerance of compare: values printed by two engines from the same doubles
 * agree far better; sums in a different order (Kahan vs plain) stay below 1e-9. */
#define DEFAULT_REL_TOL 1e-6
/* Differences described in words on stderr; the rest are only counted. */
#define COMPARE_REPORT_MAX 8
#define TOKEN_MAX 512

typedef struct options {
    const char *mode;
    const char *url, *label, *save, *a, *b;
    const char *targets[MAX_TARGETS];
    int ntargets;
    char token[TOKEN_MAX];
    int runs, warmup, clients, expect_status;
    double seconds, rel_tol;
    bool by_value;
} options;

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: query_load time    --url URL --target T [--token-file F | --token T]\n"
            "                          [--runs N] [--warmup W] [--save FILE] [--label L]\n"
            "                          [--expect-status S]\n"
            "       query_load loop    --url URL --target T [--target T2 ...] [--token-file F]\n"
            "                          [--clients C] [--seconds S] [--label L]\n"
            "       query_load compare --a FILE --b FILE [--rel-tol X] [--by-value] [--label "
            "L]\n");
}

static int read_token_file(const char *path, options *opt)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "query_load: --token-file %s: %s\n", path, strerror(errno));
        return -errno;
    }
    int rc = 0;
    if (!fgets(opt->token, sizeof opt->token, f)) {
        fprintf(stderr, "query_load: --token-file %s: empty\n", path);
        rc = -EINVAL;
    }
    fclose(f);
    opt->token[strcspn(opt->token, "\r\n")] = '\0';
    return rc;
}

static int parse_int(const char *text, int lo, int hi, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno || end == text || *end || v < lo || v > hi)
        return -EINVAL;
    *out = (int)v;
    return 0;
}

static int parse_positive(const char *text, double *out)
{
    char *end;
    double v = strtod(text, &end);
    if (end == text || *end || !(v > 0) || !isfinite(v))
        return -EINVAL;
    *out = v;
    return 0;
}

static int parse_args(int argc, char **argv, options *opt)
{
    memset(opt, 0, sizeof *opt);
    opt->label = "";
    opt->runs = DEFAULT_RUNS;
    opt->warmup = DEFAULT_WARMUP;
    opt->clients = DEFAULT_LOOP_CLIENTS;
    opt->seconds = DEFAULT_LOOP_SECONDS;
    opt->rel_tol = DEFAULT_REL_TOL;
    opt->expect_status = 200;
    if (argc < 2)
        return -EINVAL;
    opt->mode = argv[1];
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int rc = 0;
        if (!strcmp(a, "--by-value")) {
            opt->by_value = true;
            continue;
        }
        if (!v) {
            fprintf(stderr, "query_load: %s: missing value\n", a);
            return -EINVAL;
        }
        if (!strcmp(a, "--url"))
            opt->url = v;
        else if (!strcmp(a, "--target")) {
            if (opt->ntargets == MAX_TARGETS)
                rc = -E2BIG;
            else
                opt->targets[opt->ntargets++] = v;
        } else if (!strcmp(a, "--token"))
            snprintf(opt->token, sizeof opt->token, "%s", v);
        else if (!strcmp(a, "--token-file"))
            rc = read_token_file(v, opt);
        else if (!strcmp(a, "--label"))
            opt->label = v;
        else if (!strcmp(a, "--save"))
            opt->save = v;
        else if (!strcmp(a, "--a"))
            opt->a = v;
        else if (!strcmp(a, "--b"))
            opt->b = v;
        else if (!strcmp(a, "--runs"))
            rc = parse_int(v, 1, MAX_RUNS, &opt->runs);
        else if (!strcmp(a, "--warmup"))
            rc = parse_int(v, 0, MAX_RUNS, &opt->warmup);
        else if (!strcmp(a, "--clients"))
            rc = parse_int(v, 1, MAX_LOOP_CLIENTS, &opt->clients);
        else if (!strcmp(a, "--expect-status"))
            rc = parse_int(v, 100, 599, &opt->expect_status);
        else if (!strcmp(a, "--seconds"))
            rc = parse_positive(v, &opt->seconds);
        else if (!strcmp(a, "--rel-tol"))
            rc = parse_positive(v, &opt->rel_tol);
        else {
            fprintf(stderr, "query_load: unknown option %s\n", a);
            return -EINVAL;
        }
        if (rc) {
            fprintf(stderr, "query_load: %s %s: invalid value\n", a, v);
            return -EINVAL;
        }
        i++;
    }
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile of sorted v[0..n), as ingest_load reports its latencies. */
static double percentile(const double *v, size_t n, double q)
{
    if (n == 0)
        return 0;
    size_t rank = (size_t)ceil(q * (double)n);
    return v[rank == 0 ? 0 : rank - 1];
}

/* Fills headers[] (NULL-terminated) with the token, if any; auth is the storage. */
static void auth_headers(const options *opt, char *auth, size_t cap, const char *headers[2])
{
    headers[0] = headers[1] = NULL;
    if (opt->token[0]) {
        snprintf(auth, cap, "Authorization: Token %s", opt->token);
        headers[0] = auth;
    }
}

/* ---- answers: series and points ------------------------------------------------- */

/* Series and points of a Prometheus query answer (0/0 when it is not one). */
static void answer_size(const uint8_t *body, size_t len, size_t *series, size_t *points)
{
    *series = *points = 0;
    json_t *root = json_loadb((const char *)body, len, 0, NULL);
    json_t *result = json_object_get(json_object_get(root, "data"), "result");
    const char *type =
        json_string_value(json_object_get(json_object_get(root, "data"), "resultType"));
    if (type && !strcmp(type, "scalar")) {
        *series = *points = 1;
    } else if (json_is_array(result)) {
        size_t i;
        json_t *s;
        json_array_foreach(result, i, s)
        {
            json_t *values = json_object_get(s, "values");
            (*series)++;
            *points += json_is_array(values) ? json_array_size(values) : 1;
        }
    }
    json_decref(root);
}

static int save_body(const char *path, const uint8_t *body, size_t len)
{
    FILE *f = fopen(path, "w");
    if (!f || fwrite(body, 1, len, f) != len || fclose(f) != 0) {
        int rc = -errno;
        fprintf(stderr, "query_load: --save %s: %s\n", path, strerror(errno));
        return rc ? rc : -EIO;
    }
    return 0;
}

/* ---- time ----------------------------------------------------------------------- */

static int cmd_time(const options *opt)
{
    int rc = 1;
    stele_http_client *c = NULL;
    stele_http_response resp = {0};
    double ms[MAX_RUNS];
    char auth[TOKEN_MAX + 32];
    const char *headers[2];
    if (!opt->url || opt->ntargets != 1) {
        fprintf(stderr, "query_load time: --url and one --target are required\n");
        return 2;
    }
    auth_headers(opt, auth, sizeof auth, headers);
    if (stele_http_client_create(opt->url, &c) != 0) {
        fprintf(stderr, "query_load time: bad URL %s\n", opt->url);
        goto fail;
    }
    stele_http_client_set_timeout_ms(c, REQUEST_TIMEOUT_MS);
    stele_http_client_set_max_body(c, MAX_ANSWER_BYTES);
    for (int i = 0; i < opt->warmup + opt->runs; i++) {
        stele_http_response_free(&resp);
        memset(&resp, 0, sizeof resp);
        double t = now_s();
        int err = stele_http_request(c, "GET", opt->targets[0], headers, NULL, 0, &resp);
        double elapsed_ms = 1e3 * (now_s() - t);
        if (err) {
            fprintf(stderr, "query_load time: %s GET %s%s: %s\n", opt->label, opt->url,
                    opt->targets[0], strerror(-err));
            goto fail;
        }
        if (resp.status != opt->expect_status) {
            fprintf(stderr, "query_load time: %s GET %s%s: status %d, expected %d\n%.2000s\n",
                    opt->label, opt->url, opt->targets[0], resp.status, opt->expect_status,
                    resp.body ? (const char *)resp.body : "");
            goto fail;
        }
        if (i >= opt->warmup)
            ms[i - opt->warmup] = elapsed_ms;
    }
    size_t series = 0, points = 0;
    answer_size(resp.body, resp.body_len, &series, &points);
    if (opt->save && save_body(opt->save, resp.body, resp.body_len) != 0)
        goto fail;
    double sum = 0;
    for (int i = 0; i < opt->runs; i++)
        sum += ms[i];
    qsort(ms, (size_t)opt->runs, sizeof *ms, cmp_double);
    size_t n = (size_t)opt->runs;
    printf("{\"mode\":\"time\",\"label\":\"%s\",\"runs\":%d,\"warmup\":%d,\"status\":%d,"
           "\"bytes\":%zu,\"series\":%zu,\"points\":%zu,\"ms_p50\":%.3f,\"ms_p90\":%.3f,"
           "\"ms_min\":%.3f,\"ms_max\":%.3f,\"ms_mean\":%.3f}\n",
           opt->label, opt->runs, opt->warmup, resp.status, resp.body_len, series, points,
           percentile(ms, n, 0.5), percentile(ms, n, 0.9), ms[0], ms[n - 1], sum / (double)n);
    rc = 0;
fail:
    stele_http_response_free(&resp);
    stele_http_client_destroy(c);
    return rc;
}

/* ---- loop ----------------------------------------------------------------------- */

/* Set by SIGINT/SIGTERM; the main thread turns it into run->stop. */
static volatile sig_atomic_t stop_signalled;

static void on_stop_signal(int sig)
{
    (void)sig;
    stop_signalled = 1;
}

typedef struct loop_thread {
    struct loop_run *run;
    int index;
    double *ms; /* latency samples, LOOP_SAMPLES_MAX, owned by this struct */
    size_t nms;
    uint64_t requests, ok, status_429, other_status, transport_errors;
    int first_bad_status;
    char first_bad_body[256];
} loop_thread;

typedef struct loop_run {
    const options *opt;
    const char *const *headers;
    double deadline;
    int stop; /* atomic: set by the main thread */
} loop_run;

static void *loop_main(void *arg)
{
    loop_thread *t = arg;
    loop_run *run = t->run;
    const options *opt = run->opt;
    stele_http_client *c = NULL;
    if (stele_http_client_create(opt->url, &c) != 0) {
        t->transport_errors++;
        return NULL;
    }
    stele_http_client_set_timeout_ms(c, REQUEST_TIMEOUT_MS);
    stele_http_client_set_max_body(c, MAX_ANSWER_BYTES);
    for (int k = t->index;
         !__atomic_load_n(&run->stop, __ATOMIC_RELAXED) && now_s() < run->deadline; k++) {
        stele_http_response resp = {0};
        double start = now_s();
        int err = stele_http_request(c, "GET", opt->targets[k % opt->ntargets], run->headers, NULL,
                                     0, &resp);
        double elapsed_ms = 1e3 * (now_s() - start);
        int status = err ? 0 : resp.status;
        t->requests++;
        if (err) {
            t->transport_errors++;
        } else if (resp.status == 200) {
            t->ok++;
            if (t->nms < LOOP_SAMPLES_MAX)
                t->ms[t->nms++] = elapsed_ms;
        } else if (resp.status == 429) {
            t->status_429++;
        } else {
            if (!t->other_status++) {
                t->first_bad_status = resp.status;
                snprintf(t->first_bad_body, sizeof t->first_bad_body, "%s",
                         resp.body ? (const char *)resp.body : "");
            }
        }
        stele_http_response_free(&resp);
        /* A refused request (429) is retried after a pause, as a client honouring
         * Retry-After would — but bounded to 100 ms, so the pressure stays high. */
        if (status == 429) {
            struct timespec pause = {0, 100000000L};
            nanosleep(&pause, NULL);
        }
        if (err) /* the server is gone or hung: stop rather than spin */
            break;
    }
    stele_http_client_destroy(c);
    return NULL;
}

static int cmd_loop(const options *opt)
{
    int rc = 1;
    loop_thread threads[MAX_LOOP_CLIENTS];
    pthread_t tids[MAX_LOOP_CLIENTS];
    int started = 0;
    char auth[TOKEN_MAX + 32];
    const char *headers[2];
    double *all = NULL;
    memset(threads, 0, sizeof threads);
    if (!opt->url || opt->ntargets == 0) {
        fprintf(stderr, "query_load loop: --url and at least one --target are required\n");
        return 2;
    }
    auth_headers(opt, auth, sizeof auth, headers);
    loop_run run = {.opt = opt, .headers = headers, .deadline = now_s() + opt->seconds};

    /* Workers start with the stop signals blocked, so only this thread takes them and a
     * request in flight is never cut by EINTR. */
    sigset_t stop_set, old_set;
    sigemptyset(&stop_set);
    sigaddset(&stop_set, SIGINT);
    sigaddset(&stop_set, SIGTERM);
    struct sigaction sa = {.sa_handler = on_stop_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    pthread_sigmask(SIG_BLOCK, &stop_set, &old_set);
    double t0 = now_s();
    for (; started < opt->clients; started++) {
        loop_thread *t = &threads[started];
        t->run = &run;
        t->index = started;
        t->ms = malloc(LOOP_SAMPLES_MAX * sizeof *t->ms);
        if (!t->ms || pthread_create(&tids[started], NULL, loop_main, t) != 0) {
            fprintf(stderr, "query_load loop: cannot start client %d\n", started);
            free(t->ms);
            t->ms = NULL;
            __atomic_store_n(&run.stop, 1, __ATOMIC_SEQ_CST);
            break;
        }
    }
    pthread_sigmask(SIG_SETMASK, &old_set, NULL);
    while (!stop_signalled && now_s() < run.deadline && started == opt->clients) {
        struct timespec poll = {0, LOOP_POLL_NS};
        nanosleep(&poll, NULL);
    }
    __atomic_store_n(&run.stop, 1, __ATOMIC_SEQ_CST);
    for (int i = 0; i < started; i++)
        pthread_join(tids[i], NULL);
    double seconds = now_s() - t0;
    if (started < opt->clients)
        goto fail;

    uint64_t requests = 0, ok = 0, s429 = 0, other = 0, transport = 0;
    size_t nms = 0;
    for (int i = 0; i < started; i++) {
        /* The first unexpected answer is enough to say what went wrong. */
        if (threads[i].other_status && !other)
            fprintf(stderr, "query_load loop: %s: unexpected status %d: %s\n", opt->label,
                    threads[i].first_bad_status, threads[i].first_bad_body);
        if (threads[i].transport_errors && !transport)
            fprintf(stderr, "query_load loop: %s: a request failed (server gone or hung)\n",
                    opt->label);
        requests += threads[i].requests;
        ok += threads[i].ok;
        s429 += threads[i].status_429;
        other += threads[i].other_status;
        transport += threads[i].transport_errors;
        nms += threads[i].nms;
    }
    all = malloc((nms ? nms : 1) * sizeof *all);
    if (!all) {
        fprintf(stderr, "query_load loop: out of memory for %zu samples\n", nms);
        goto fail;
    }
    size_t k = 0;
    for (int i = 0; i < started; i++) {
        memcpy(all + k, threads[i].ms, threads[i].nms * sizeof *all);
        k += threads[i].nms;
    }
    qsort(all, nms, sizeof *all, cmp_double);
    printf("{\"mode\":\"loop\",\"label\":\"%s\",\"clients\":%d,\"targets\":%d,\"seconds\":%.3f,"
           "\"requests\":%" PRIu64 ",\"ok\":%" PRIu64 ",\"status_429\":%" PRIu64
           ",\"other_status\":%" PRIu64 ",\"transport_errors\":%" PRIu64
           ",\"ok_per_s\":%.2f,\"ms_p50\":%.1f,\"ms_p99\":%.1f,\"ms_max\":%.1f}\n",
           opt->label, opt->clients, opt->ntargets, seconds, requests, ok, s429, other, transport,
           (double)ok / seconds, percentile(all, nms, 0.5), percentile(all, nms, 0.99),
           nms ? all[nms - 1] : 0.0);
    rc = other || transport ? 1 : 0;
fail:
    for (int i = 0; i < started; i++)
        free(threads[i].ms);
    free(all);
    return rc;
}

/* ---- compare -------------------------------------------------------------------- */

typedef struct point {
    int64_t ms;
    double v;
} point;

typedef struct series {
    char *key; /* labels without __name__, sorted, compact JSON; owned */
    point *p;  /* owned, sorted by time */
    size_t n;
} series;

typedef struct answer {
    series *s;
    size_t n;
    size_t points;
} answer;

static void answer_free(answer *a)
{
    for (size_t i = 0; i < a->n; i++) {
        free(a->s[i].key);
        free(a->s[i].p);
    }
    free(a->s);
    memset(a, 0, sizeof *a);
}

/* [t, "v"] → point; -EPROTO when it is not one. */
static int parse_point(json_t *pair, point *out)
{
    json_t *t = json_array_get(pair, 0), *v = json_array_get(pair, 1);
    if (!json_is_number(t) || !json_is_string(v))
        return -EPROTO;
    out->ms = llround(json_number_value(t) * 1000.0);
    out->v = strtod(json_string_value(v), NULL); /* "NaN", "+Inf" included */
    return 0;
}

static int cmp_point(const void *a, const void *b)
{
    const point *x = a, *y = b;
    return (x->ms > y->ms) - (x->ms < y->ms);
}

static int cmp_series(const void *a, const void *b)
{
    return strcmp(((const series *)a)->key, ((const series *)b)->key);
}

static int load_answer(const char *path, answer *out)
{
    int rc = -EPROTO;
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    memset(out, 0, sizeof *out);
    if (!root) {
        fprintf(stderr, "query_load compare: %s: %s (line %d)\n", path, jerr.text, jerr.line);
        return -EPROTO;
    }
    json_t *data = json_object_get(root, "data");
    json_t *result = json_object_get(data, "result");
    const char *type = json_string_value(json_object_get(data, "resultType"));
    if (!type || !result) {
        fprintf(stderr, "query_load compare: %s: no data.resultType/data.result\n", path);
        goto fail;
    }
    if (!strcmp(type, "scalar")) {
        out->s = calloc(1, sizeof *out->s);
        if (!out->s)
            goto oom;
        out->n = 1;
        out->s[0].key = strdup("scalar");
        out->s[0].p = malloc(sizeof(point));
        if (!out->s[0].key || !out->s[0].p)
            goto oom;
        out->s[0].n = 1;
        if (parse_point(result, &out->s[0].p[0]) != 0)
            goto bad;
    } else if (!json_is_array(result)) {
        goto bad;
    } else {
        out->s = calloc(json_array_size(result) + 1, sizeof *out->s);
        if (!out->s)
            goto oom;
        size_t i;
        json_t *js;
        json_array_foreach(result, i, js)
        {
            series *s = &out->s[out->n++];
            json_t *labels = json_deep_copy(json_object_get(js, "metric"));
            if (!json_is_object(labels)) {
                json_decref(labels);
                goto bad;
            }
            json_object_del(labels, "__name__");
            s->key = json_dumps(labels, JSON_SORT_KEYS | JSON_COMPACT);
            json_decref(labels);
            json_t *values = json_object_get(js, "values");
            json_t *value = json_object_get(js, "value");
            size_t np = json_is_array(values) ? json_array_size(values) : 1;
            s->p = malloc(np * sizeof *s->p);
            if (!s->key || !s->p)
                goto oom;
            if (json_is_array(values)) {
                size_t k;
                json_t *pair;
                json_array_foreach(values, k, pair)
                {
                    if (parse_point(pair, &s->p[s->n++]) != 0)
                        goto bad;
                }
            } else if (parse_point(value, &s->p[s->n++]) != 0) {
                goto bad;
            }
            qsort(s->p, s->n, sizeof *s->p, cmp_point);
        }
    }
    for (size_t i = 0; i < out->n; i++)
        out->points += out->s[i].n;
    qsort(out->s, out->n, sizeof *out->s, cmp_series);
    json_decref(root);
    return 0;
oom:
    fprintf(stderr, "query_load compare: %s: out of memory\n", path);
    rc = -ENOMEM;
    goto fail;
bad:
    fprintf(stderr, "query_load compare: %s: not a Prometheus query answer\n", path);
fail:
    json_decref(root);
    answer_free(out);
    return rc;
}

typedef struct diff_stats {
    size_t points_matched, only_a, only_b, differing, reported;
    double max_rel, max_abs;
} diff_stats;

/* Relative difference, 0 for equal values (NaN equals NaN, as both print "NaN"). */
static double rel_diff(double a, double b)
{
    if (a == b || (isnan(a) && isnan(b)))
        return 0;
    if (isnan(a) || isnan(b) || isinf(a) || isinf(b))
        return INFINITY;
    double scale = fmax(fabs(a), fabs(b));
    return fabs(a - b) / scale;
}

static void compare_values(const options *opt, const char *where, int64_t ms, double a, double b,
                           diff_stats *d)
{
    double rel = rel_diff(a, b);
    d->points_matched++;
    if (rel > d->max_rel)
        d->max_rel = rel;
    if (isfinite(a) && isfinite(b) && fabs(a - b) > d->max_abs)
        d->max_abs = fabs(a - b);
    if (rel > opt->rel_tol) {
        if (d->reported++ < COMPARE_REPORT_MAX)
            fprintf(stderr, "compare %s: %s at %" PRId64 " ms: a=%.17g b=%.17g (rel %.3g)\n",
                    opt->label, where, ms, a, b, rel);
        d->differing++;
    }
}

static void compare_series(const options *opt, const series *a, const series *b, diff_stats *d)
{
    size_t i = 0, j = 0;
    while (i < a->n || j < b->n) {
        if (j == b->n || (i < a->n && a->p[i].ms < b->p[j].ms)) {
            if (d->reported++ < COMPARE_REPORT_MAX)
                fprintf(stderr, "compare %s: %s: point at %" PRId64 " ms only in a (%.17g)\n",
                        opt->label, a->key, a->p[i].ms, a->p[i].v);
            d->only_a++;
            i++;
        } else if (i == a->n || b->p[j].ms < a->p[i].ms) {
            if (d->reported++ < COMPARE_REPORT_MAX)
                fprintf(stderr, "compare %s: %s: point at %" PRId64 " ms only in b (%.17g)\n",
                        opt->label, b->key, b->p[j].ms, b->p[j].v);
            d->only_b++;
            j++;
        } else {
            compare_values(opt, a->key, a->p[i].ms, a->p[i].v, b->p[j].v, d);
            i++;
            j++;
        }
    }
}

/* All values of an answer, sorted (for --by-value). */
static double *sorted_values(const answer *x)
{
    double *v = malloc((x->points ? x->points : 1) * sizeof *v);
    if (!v)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < x->n; i++)
        for (size_t j = 0; j < x->s[i].n; j++)
            v[k++] = x->s[i].p[j].v;
    qsort(v, k, sizeof *v, cmp_double);
    return v;
}

static int cmd_compare(const options *opt)
{
    int rc = 1;
    answer a = {0}, b = {0};
    double *va = NULL, *vb = NULL;
    diff_stats d = {0};
    size_t series_matched = 0, series_only_a = 0, series_only_b = 0;
    if (!opt->a || !opt->b) {
        fprintf(stderr, "query_load compare: --a and --b are required\n");
        return 2;
    }
    if (load_answer(opt->a, &a) != 0 || load_answer(opt->b, &b) != 0)
        goto fail;
    size_t i = 0, j = 0;
    while (i < a.n || j < b.n) {
        int c = i == a.n ? 1 : j == b.n ? -1 : strcmp(a.s[i].key, b.s[j].key);
        if (c < 0) {
            if (!opt->by_value && d.reported++ < COMPARE_REPORT_MAX)
                fprintf(stderr, "compare %s: series %s only in a\n", opt->label, a.s[i].key);
            series_only_a++;
            i++;
        } else if (c > 0) {
            if (!opt->by_value && d.reported++ < COMPARE_REPORT_MAX)
                fprintf(stderr, "compare %s: series %s only in b\n", opt->label, b.s[j].key);
            series_only_b++;
            j++;
        } else {
            if (!opt->by_value)
                compare_series(opt, &a.s[i], &b.s[j], &d);
            series_matched++;
            i++;
            j++;
        }
    }
    if (opt->by_value) {
        va = sorted_values(&a);
        vb = sorted_values(&b);
        if (!va || !vb) {
            fprintf(stderr, "query_load compare: out of memory\n");
            goto fail;
        }
        size_t n = a.points < b.points ? a.points : b.points;
        for (size_t k = 0; k < n; k++)
            compare_values(opt, "value rank", (int64_t)k, va[k], vb[k], &d);
        if (a.points > n)
            d.only_a = a.points - n;
        else
            d.only_b = b.points - n;
    }
    bool equal = a.n == b.n && d.only_a == 0 && d.only_b == 0 && d.differing == 0 &&
                 (opt->by_value || (series_only_a == 0 && series_only_b == 0));
    printf("{\"mode\":\"compare\",\"label\":\"%s\",\"by_value\":%s,\"series_a\":%zu,"
           "\"series_b\":%zu,\"series_matched\":%zu,\"series_only_a\":%zu,"
           "\"series_only_b\":%zu,\"points_a\":%zu,\"points_b\":%zu,\"points_matched\":%zu,"
           "\"points_only_a\":%zu,\"points_only_b\":%zu,\"values_differing\":%zu,"
           "\"rel_tol\":%g,\"max_rel_diff\":%.3g,\"max_abs_diff\":%.6g,\"equal\":%s}\n",
           opt->label, opt->by_value ? "true" : "false", a.n, b.n, series_matched, series_only_a,
           series_only_b, a.points, b.points, d.points_matched, d.only_a, d.only_b, d.differing,
           opt->rel_tol, isinf(d.max_rel) ? 1e308 : d.max_rel, d.max_abs, equal ? "true" : "false");
    rc = 0;
fail:
    free(va);
    free(vb);
    answer_free(&a);
    answer_free(&b);
    return rc;
}

int main(int argc, char **argv)
{
    options opt;
    if (parse_args(argc, argv, &opt) != 0) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(opt.mode, "time"))
        return cmd_time(&opt);
    if (!strcmp(opt.mode, "loop"))
        return cmd_loop(&opt);
    if (!strcmp(opt.mode, "compare"))
        return cmd_compare(&opt);
    if (!strcmp(opt.mode, "--help") || !strcmp(opt.mode, "-h")) {
        usage(stdout);
        return 0;
    }
    usage(stderr);
    return 2;
}
