/*
 * ingest_load.c — the load generator behind bench/ingest.sh (Stele against
 * VictoriaMetrics, issue 2) and bench/killtest.sh (no acknowledged point lost to kill -9).
 *
 * The design choice: generating the workload and posting it are separate steps. `gen`
 * writes the TSBS-"iot"-like workload of bench/iot_workload.h to a file once; `post`
 * reads that file into memory and cuts it into batches BEFORE the clock starts, so the
 * same bytes reach both servers and neither disk reads nor text generation are on the
 * measured path. Each posting thread owns one keep-alive connection (stele_http_client)
 * and takes the next batch from a shared counter, so batches leave in file order.
 *
 *   ingest_load gen    --out FILE [--trucks N] [--points N] [--seed S] [--start-ns T]
 *   ingest_load post   --url URL --file FILE [--path P] [--token T | --token-file F]
 *                      [--clients C] [--batch-lines N] [--label L]
 *   ingest_load count  --url URL --path P [--token T | --token-file F]
 *   ingest_load stream --url URL --token-file F --log FILE --cycle R --t0-ms T
 *                      [--clients C] [--batch-points N] [--max-seconds S]
 *   ingest_load verify --url URL --token-file F --log FILE --t0-ms T
 *                      [--cycle R (default: every cycle in the log)]
 *                      [--match cycle | name-and-cycle]
 *
 * gen: --points is the total of points (fields); each truck tick is 10 points on two
 * lines, so the file holds ceil(points / (trucks * 10)) ticks. The first tick is at
 * now - ticks * 10 s, so every point lies in the past and within Stele's 30-day
 * retention. post: prints one JSON line (points/s, latency p50/p99/max, its own CPU
 * seconds, so that the script can tell its load from other load); any status
 * but 204 stops every thread, prints the body and exits 1. count: GETs an export
 * (JSON lines) and prints the number of series and points.
 *
 * stream/verify (the crash test). Point ids are global: cycle R owns ids
 * [R * CYCLE_SPAN, (R + 1) * CYCLE_SPAN); batch b of cycle R holds the ids
 * R * CYCLE_SPAN + b * n + i for i < n, as points
 *   kt,cycle=R,s=<i % KT_SERIES> v=<id> <(t0_ms + id) * 1e6>
 * so every point says which batch it came from, and its timestamp (in ms, as the export
 * gives it) is determined by its value. Before sending a batch the writer appends
 * "S R b n" to the log, after its 204 "A R b n" — one write(2) each, so a line is in
 * the file even if the writer dies next. The writer stops when the server goes away
 * (that is the point: the script kill -9s the server), after --max-seconds, or when the
 * cycle's ids run out. verify exports kt_v and checks: every acknowledged batch fully
 * present (else LOST), no point of a batch never sent (PHANTOM), batches in flight at
 * the kill all-or-nothing (else PARTIAL: a batch is atomic), no id twice, every
 * timestamp matching its value. It prints one JSON line; exit 0 only if all hold.
 * Each cycle is exported with the one-matcher selector {cycle="R"} (only kt points
 * carry that label), which reads one posting list; --match name-and-cycle selects
 * {__name__="kt_v",cycle="R"} instead, which makes the index intersect two lists — a
 * separate check of the query path, so that a query bug is not mistaken for data loss.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "iot_workload.h"
#include "stele/client.h"

/* Defaults of the issue's comparison: 1,000 trucks, 10 M points, 2 posters. */
#define DEFAULT_TRUCKS 1000u
#define DEFAULT_POINTS 10000000ull
#define DEFAULT_CLIENTS 2
/* 5,000 lines ≈ 25,000 points ≈ 1.2 MB: large enough that the per-request cost
 * (HTTP, one fsync wait) is spread over many points, small enough to stay far below
 * Stele's 32 MiB body limit and to give a few hundred latency samples per run. */
#define DEFAULT_BATCH_LINES 5000
/* More posting threads than this would only measure the scheduler on a small box. */
#define MAX_CLIENTS 64
#define DEFAULT_SEED 42
/* A stuck server must not hang the benchmark forever, but a flush may stall a write
 * for a while: two minutes per I/O wait. */
#define POST_TIMEOUT_MS 120000
/* Exports for count/verify can be large (10 M points ≈ 200 MB of JSON); Stele refuses
 * exports over 1 GiB itself, so that is the client limit too. */
#define EXPORT_MAX_BODY (1ull << 30)

/* Crash test: ids per cycle (2^20: far more than a cycle of a few seconds can
 * acknowledge with an fsync per request) and series per cycle. */
#define CYCLE_SPAN (UINT64_C(1) << 20)
#define MAX_CYCLES 4096
#define KT_SERIES 4
/* 50 points per request: small, so that a cycle holds many requests and many fsync
 * groups, and the kill lands inside one with good probability. */
#define DEFAULT_STREAM_BATCH 50
/* In the crash test the server is killed on purpose; a short wait finds out fast. */
#define STREAM_TIMEOUT_MS 5000
#define DEFAULT_STREAM_SECONDS 10
#define TOKEN_MAX 512

typedef struct options {
    const char *mode;
    const char *out, *file, *url, *path, *token_file, *label, *log;
    char token[TOKEN_MAX];
    uint32_t trucks;
    uint64_t points, seed;
    int64_t start_ns;
    bool start_set;
    int clients;
    size_t batch_lines, batch_points;
    long cycle; /* -1: every cycle in the log */
    int64_t t0_ms;
    bool t0_set;
    double max_seconds;
    bool match_name; /* verify: select {__name__="kt_v",cycle="R"}, not {cycle="R"} */
} options;

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* CPU seconds (user + system) this process has used so far. */
static double cpu_self_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static int64_t wall_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: ingest_load gen    --out FILE [--trucks N] [--points N] [--seed S] "
            "[--start-ns T]\n"
            "       ingest_load post   --url URL --file FILE [--path P] [--token T | "
            "--token-file F]\n"
            "                          [--clients C] [--batch-lines N] [--label L]\n"
            "       ingest_load count  --url URL --path P [--token T | --token-file F]\n"
            "       ingest_load stream --url URL --token-file F --log FILE --cycle R --t0-ms T\n"
            "                          [--clients C] [--batch-points N] [--max-seconds S]\n"
            "       ingest_load verify --url URL --token-file F --log FILE --t0-ms T "
            "[--cycle R]\n"
            "                          [--match cycle | name-and-cycle]\n");
}

static int parse_u64(const char *text, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno || end == text || *end || text[0] == '-')
        return -EINVAL;
    *out = v;
    return 0;
}

static int parse_i64(const char *text, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno || end == text || *end)
        return -EINVAL;
    *out = v;
    return 0;
}

/* Reads the first line of path (a token file) into opt->token. */
static int read_token_file(const char *path, options *opt)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "ingest_load: --token-file %s: %s\n", path, strerror(errno));
        return -errno;
    }
    int rc = 0;
    if (!fgets(opt->token, sizeof opt->token, f)) {
        fprintf(stderr, "ingest_load: --token-file %s: empty\n", path);
        rc = -EINVAL;
    }
    fclose(f);
    opt->token[strcspn(opt->token, "\r\n")] = '\0';
    return rc;
}

static int parse_args(int argc, char **argv, options *opt)
{
    memset(opt, 0, sizeof *opt);
    opt->trucks = DEFAULT_TRUCKS;
    opt->points = DEFAULT_POINTS;
    opt->seed = DEFAULT_SEED;
    opt->clients = DEFAULT_CLIENTS;
    opt->batch_lines = DEFAULT_BATCH_LINES;
    opt->batch_points = DEFAULT_STREAM_BATCH;
    opt->path = NULL;
    opt->label = "";
    opt->cycle = -1;
    opt->max_seconds = DEFAULT_STREAM_SECONDS;
    if (argc < 2)
        return -EINVAL;
    opt->mode = argv[1];
    /* Every option takes a value: they come in pairs. */
    for (int i = 2; i < argc; i += 2) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        uint64_t u = 0;
        int rc = 0;
        if (!v) {
            fprintf(stderr, "ingest_load: %s: missing value\n", a);
            return -EINVAL;
        }
        if (!strcmp(a, "--out"))
            opt->out = v;
        else if (!strcmp(a, "--file"))
            opt->file = v;
        else if (!strcmp(a, "--url"))
            opt->url = v;
        else if (!strcmp(a, "--path"))
            opt->path = v;
        else if (!strcmp(a, "--label"))
            opt->label = v;
        else if (!strcmp(a, "--log"))
            opt->log = v;
        else if (!strcmp(a, "--token"))
            snprintf(opt->token, sizeof opt->token, "%s", v);
        else if (!strcmp(a, "--token-file"))
            rc = read_token_file(v, opt);
        else if (!strcmp(a, "--trucks")) {
            rc = parse_u64(v, &u);
            if (!rc && (u == 0 || u > UINT32_MAX))
                rc = -EINVAL;
            opt->trucks = (uint32_t)u;
        } else if (!strcmp(a, "--points")) {
            rc = parse_u64(v, &opt->points);
            if (!rc && opt->points == 0)
                rc = -EINVAL;
        } else if (!strcmp(a, "--seed"))
            rc = parse_u64(v, &opt->seed);
        else if (!strcmp(a, "--start-ns")) {
            rc = parse_i64(v, &opt->start_ns);
            opt->start_set = true;
        } else if (!strcmp(a, "--clients")) {
            rc = parse_u64(v, &u);
            if (!rc && (u == 0 || u > MAX_CLIENTS))
                rc = -EINVAL;
            opt->clients = (int)u;
        } else if (!strcmp(a, "--batch-lines")) {
            rc = parse_u64(v, &u);
            if (!rc && u == 0)
                rc = -EINVAL;
            opt->batch_lines = (size_t)u;
        } else if (!strcmp(a, "--batch-points")) {
            rc = parse_u64(v, &u);
            if (!rc && (u == 0 || u > CYCLE_SPAN))
                rc = -EINVAL;
            opt->batch_points = (size_t)u;
        } else if (!strcmp(a, "--cycle")) {
            rc = parse_u64(v, &u);
            if (!rc && u >= MAX_CYCLES)
                rc = -EINVAL;
            opt->cycle = (long)u;
        } else if (!strcmp(a, "--t0-ms")) {
            rc = parse_i64(v, &opt->t0_ms);
            opt->t0_set = true;
        } else if (!strcmp(a, "--match")) {
            if (!strcmp(v, "name-and-cycle"))
                opt->match_name = true;
            else if (strcmp(v, "cycle") != 0)
                rc = -EINVAL;
        } else if (!strcmp(a, "--max-seconds")) {
            char *end;
            opt->max_seconds = strtod(v, &end);
            if (end == v || *end || !(opt->max_seconds > 0))
                rc = -EINVAL;
        } else {
            fprintf(stderr, "ingest_load: unknown option %s\n", a);
            return -EINVAL;
        }
        if (rc) {
            fprintf(stderr, "ingest_load: %s %s: invalid value\n", a, v);
            return -EINVAL;
        }
    }
    return 0;
}

/* ---- gen ------------------------------------------------------------------------ */

/* Output buffer: lines are gathered and written in large pieces. */
#define GEN_BUF_BYTES (4u << 20)

static int cmd_gen(const options *opt)
{
    int rc = 1;
    iot_workload w = {0};
    FILE *f = NULL;
    char *buf = NULL;
    if (!opt->out) {
        fprintf(stderr, "ingest_load gen: --out FILE is required\n");
        return 2;
    }
    uint64_t per_tick = (uint64_t)opt->trucks * IOT_FIELDS;
    uint64_t ticks = (opt->points + per_tick - 1) / per_tick;
    /* Whole 10 s steps, as TSBS writes them (and as a millisecond store keeps them). */
    int64_t now = wall_ns() / IOT_INTERVAL_NS * IOT_INTERVAL_NS;
    int64_t start = opt->start_set ? opt->start_ns : now - (int64_t)ticks * IOT_INTERVAL_NS;
    if (iot_workload_init(&w, opt->trucks, opt->seed, start) != 0) {
        fprintf(stderr, "ingest_load gen: out of memory for %u trucks\n", opt->trucks);
        goto fail;
    }
    f = fopen(opt->out, "w");
    buf = malloc(GEN_BUF_BYTES);
    if (!f || !buf) {
        fprintf(stderr, "ingest_load gen: %s: %s\n", opt->out, strerror(errno));
        goto fail;
    }
    uint64_t lines = ticks * opt->trucks * 2, bytes = 0;
    size_t used = 0;
    for (uint64_t i = 0; i < lines; i++) {
        if (GEN_BUF_BYTES - used < IOT_LINE_MAX) {
            if (fwrite(buf, 1, used, f) != used)
                goto write_error;
            used = 0;
        }
        int n = iot_workload_next_line(&w, buf + used, IOT_LINE_MAX);
        if (n < 0) {
            fprintf(stderr, "ingest_load gen: line %" PRIu64 " longer than %d bytes\n", i,
                    IOT_LINE_MAX);
            goto fail;
        }
        used += (size_t)n;
        bytes += (uint64_t)n;
    }
    if (fwrite(buf, 1, used, f) != used || fflush(f) != 0)
        goto write_error;
    printf("{\"mode\":\"gen\",\"file\":\"%s\",\"trucks\":%u,\"ticks\":%" PRIu64
           ",\"lines\":%" PRIu64 ",\"points\":%" PRIu64 ",\"bytes\":%" PRIu64
           ",\"start_ns\":%" PRId64 ",\"end_ns\":%" PRId64 "}\n",
           opt->out, opt->trucks, ticks, lines, ticks * per_tick, bytes, start,
           (int64_t)(start + (int64_t)(ticks - 1) * IOT_INTERVAL_NS));
    rc = 0;
    goto fail;
write_error:
    fprintf(stderr, "ingest_load gen: writing %s: %s\n", opt->out, strerror(errno));
fail:
    if (f && fclose(f) != 0 && rc == 0) {
        fprintf(stderr, "ingest_load gen: closing %s: %s\n", opt->out, strerror(errno));
        rc = 1;
    }
    free(buf);
    iot_workload_free(&w);
    return rc;
}

/* ---- post ----------------------------------------------------------------------- */

typedef struct batch {
    const char *body; /* points into the file buffer */
    size_t len;
    uint64_t lines, points;
} batch;

typedef struct post_run {
    const options *opt;
    const char *const *headers;
    batch *batches;
    size_t nbatches;
    double *latency_s;   /* per batch, written by the thread that posted it */
    size_t next;         /* next batch to take (atomic) */
    int failed;          /* set by the first thread that fails (atomic) */
    pthread_mutex_t err; /* serialises the failure report */
} post_run;

/* Fields of one line-protocol line [p, end): 1 + the commas of the field set, outside
 * quoted strings. The field set starts after the first unescaped space. */
static uint64_t line_fields(const char *p, const char *end)
{
    while (p < end && *p != ' ') {
        if (*p == '\\' && p + 1 < end)
            p++;
        p++;
    }
    if (p == end)
        return 0;
    uint64_t n = 1;
    bool quoted = false;
    for (p++; p < end; p++) {
        if (*p == '\\' && p + 1 < end)
            p++;
        else if (*p == '"')
            quoted = !quoted;
        else if (!quoted && *p == ',')
            n++;
        else if (!quoted && *p == ' ')
            break;
    }
    return n;
}

static int read_whole_file(const char *path, char **out, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    char *buf = NULL;
    if (fd < 0 || fstat(fd, &st) != 0)
        goto fail;
    buf = malloc((size_t)st.st_size + 1);
    if (!buf)
        goto fail;
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (n == 0)
                errno = EIO; /* the file shrank under us */
            goto fail;
        }
        got += (size_t)n;
    }
    buf[got] = '\0';
    close(fd);
    *out = buf; /* now belongs to the caller */
    *len = got;
    return 0;
fail:;
    int rc = -errno;
    if (fd >= 0)
        close(fd);
    free(buf);
    return rc;
}

/* Cuts [data, data + len) into batches of opt->batch_lines lines. */
static int split_batches(const char *data, size_t len, size_t batch_lines, batch **out, size_t *n)
{
    size_t cap = 1024, count = 0;
    batch *b = malloc(cap * sizeof *b);
    if (!b)
        return -ENOMEM;
    const char *p = data, *end = data + len;
    while (p < end) {
        if (count == cap) {
            batch *nb = realloc(b, 2 * cap * sizeof *b);
            if (!nb) {
                free(b);
                return -ENOMEM;
            }
            b = nb;
            cap *= 2;
        }
        batch *cur = &b[count++];
        cur->body = p;
        cur->lines = cur->points = 0;
        while (p < end && cur->lines < batch_lines) {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            const char *eol = nl ? nl : end;
            if (eol > p) {
                cur->points += line_fields(p, eol);
                cur->lines++;
            }
            p = nl ? nl + 1 : end;
        }
        cur->len = (size_t)(p - cur->body);
    }
    *out = b; /* now belongs to the caller */
    *n = count;
    return 0;
}

static void post_fail(post_run *run, size_t index, const char *what, int status, const char *body)
{
    pthread_mutex_lock(&run->err);
    if (!__atomic_exchange_n(&run->failed, 1, __ATOMIC_SEQ_CST)) {
        fprintf(stderr, "ingest_load post: %s batch %zu of %zu (%s%s): %s", run->opt->label, index,
                run->nbatches, run->opt->url, run->opt->path, what);
        if (status)
            fprintf(stderr, " %d\n%s\n", status, body ? body : "");
        else
            fprintf(stderr, "\n");
    }
    pthread_mutex_unlock(&run->err);
}

static void *post_thread(void *arg)
{
    post_run *run = arg;
    stele_http_client *c = NULL;
    if (stele_http_client_create(run->opt->url, &c) != 0) {
        post_fail(run, 0, "bad URL", 0, NULL);
        return NULL;
    }
    stele_http_client_set_timeout_ms(c, POST_TIMEOUT_MS);
    while (!__atomic_load_n(&run->failed, __ATOMIC_RELAXED)) {
        size_t i = __atomic_fetch_add(&run->next, 1, __ATOMIC_RELAXED);
        if (i >= run->nbatches)
            break;
        stele_http_response resp = {0};
        double t = now_s();
        int rc = stele_http_request(c, "POST", run->opt->path, run->headers, run->batches[i].body,
                                    run->batches[i].len, &resp);
        run->latency_s[i] = now_s() - t;
        if (rc != 0) {
            post_fail(run, i, strerror(-rc), 0, NULL);
        } else if (resp.status != 204) {
            post_fail(run, i, "unexpected status", resp.status, (const char *)resp.body);
        }
        stele_http_response_free(&resp);
    }
    stele_http_client_destroy(c);
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile of sorted v[0..n). */
static double percentile(const double *v, size_t n, double q)
{
    if (n == 0)
        return 0;
    size_t rank = (size_t)ceil(q * (double)n);
    return v[rank == 0 ? 0 : rank - 1];
}

static int cmd_post(const options *opt)
{
    int rc = 1;
    char *data = NULL;
    size_t len = 0;
    post_run run = {.opt = opt};
    pthread_t threads[MAX_CLIENTS];
    int started = 0;
    char auth[TOKEN_MAX + 32];
    const char *headers[3] = {"Content-Type: text/plain; charset=utf-8", NULL, NULL};
    pthread_mutex_init(&run.err, NULL);
    if (!opt->url || !opt->file || !opt->path) {
        fprintf(stderr, "ingest_load post: --url, --file and --path are required\n");
        rc = 2;
        goto fail;
    }
    if (opt->token[0]) {
        snprintf(auth, sizeof auth, "Authorization: Token %s", opt->token);
        headers[1] = auth;
    }
    run.headers = headers;
    int err = read_whole_file(opt->file, &data, &len);
    if (err) {
        fprintf(stderr, "ingest_load post: %s: %s\n", opt->file, strerror(-err));
        goto fail;
    }
    err = split_batches(data, len, opt->batch_lines, &run.batches, &run.nbatches);
    run.latency_s = calloc(run.nbatches ? run.nbatches : 1, sizeof *run.latency_s);
    if (err || !run.latency_s) {
        fprintf(stderr, "ingest_load post: out of memory splitting %s\n", opt->file);
        goto fail;
    }
    uint64_t points = 0, lines = 0;
    for (size_t i = 0; i < run.nbatches; i++) {
        points += run.batches[i].points;
        lines += run.batches[i].lines;
    }

    double cpu0 = cpu_self_s();
    double t0 = now_s();
    for (; started < opt->clients; started++) {
        err = pthread_create(&threads[started], NULL, post_thread, &run);
        if (err) {
            fprintf(stderr, "ingest_load post: cannot start thread: %s\n", strerror(err));
            __atomic_store_n(&run.failed, 1, __ATOMIC_SEQ_CST);
            break;
        }
    }
    for (int i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
    double seconds = now_s() - t0;
    double cpu = cpu_self_s() - cpu0;
    started = 0;
    if (__atomic_load_n(&run.failed, __ATOMIC_SEQ_CST))
        goto fail;

    qsort(run.latency_s, run.nbatches, sizeof *run.latency_s, cmp_double);
    printf("{\"mode\":\"post\",\"label\":\"%s\",\"url\":\"%s%s\",\"clients\":%d,"
           "\"batch_lines\":%zu,\"batches\":%zu,\"lines\":%" PRIu64 ",\"points\":%" PRIu64
           ",\"bytes\":%zu,\"seconds\":%.3f,\"points_per_s\":%.0f,\"mb_per_s\":%.1f,"
           "\"latency_ms_p50\":%.2f,\"latency_ms_p99\":%.2f,\"latency_ms_max\":%.2f,"
           "\"client_cpu_s\":%.2f}\n",
           opt->label, opt->url, opt->path, opt->clients, opt->batch_lines, run.nbatches, lines,
           points, len, seconds, (double)points / seconds, (double)len / seconds / 1e6,
           1e3 * percentile(run.latency_s, run.nbatches, 0.50),
           1e3 * percentile(run.latency_s, run.nbatches, 0.99),
           1e3 * (run.nbatches ? run.latency_s[run.nbatches - 1] : 0), cpu);
    rc = 0;
fail:
    for (int i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
    pthread_mutex_destroy(&run.err);
    free(run.latency_s);
    free(run.batches);
    free(data);
    return rc;
}

/* ---- export reading (count, verify) ---------------------------------------------- */

/* Called for each exported series; a nonzero return stops the walk. */
typedef int (*series_fn)(void *ctx, json_t *metric, json_t *values, json_t *timestamps);

/* GETs path and calls fn for every JSON line of the export. *status gets the HTTP
 * status; the walk happens only for 200. */
static int export_walk(const options *opt, const char *path, series_fn fn, void *ctx, int *status)
{
    stele_http_client *c = NULL;
    stele_http_response resp = {0};
    char auth[TOKEN_MAX + 32];
    const char *headers[2] = {NULL, NULL};
    int rc = stele_http_client_create(opt->url, &c);
    if (rc == 0) {
        stele_http_client_set_timeout_ms(c, POST_TIMEOUT_MS);
        stele_http_client_set_max_body(c, EXPORT_MAX_BODY);
        if (opt->token[0]) {
            snprintf(auth, sizeof auth, "Authorization: Token %s", opt->token);
            headers[0] = auth;
        }
        rc = stele_http_request(c, "GET", path, headers, NULL, 0, &resp);
    }
    if (rc) {
        fprintf(stderr, "ingest_load: GET %s%s: %s\n", opt->url, path, strerror(-rc));
        goto fail;
    }
    *status = resp.status;
    if (resp.status != 200) {
        fprintf(stderr, "ingest_load: GET %s: status %d\n%s\n", path, resp.status,
                resp.body ? (const char *)resp.body : "");
        goto fail;
    }
    const char *p = (const char *)resp.body, *end = p + resp.body_len;
    while (p < end && rc == 0) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *eol = nl ? nl : end;
        if (eol > p) {
            json_error_t jerr;
            json_t *obj = json_loadb(p, (size_t)(eol - p), 0, &jerr);
            json_t *metric = obj ? json_object_get(obj, "metric") : NULL;
            json_t *values = obj ? json_object_get(obj, "values") : NULL;
            json_t *stamps = obj ? json_object_get(obj, "timestamps") : NULL;
            if (!json_is_object(metric) || !json_is_array(values) || !json_is_array(stamps) ||
                json_array_size(values) != json_array_size(stamps)) {
                fprintf(stderr, "ingest_load: GET %s: malformed export line: %.200s\n", path, p);
                rc = -EPROTO;
            } else {
                rc = fn(ctx, metric, values, stamps);
            }
            json_decref(obj);
        }
        p = nl ? nl + 1 : end;
    }
fail:
    stele_http_response_free(&resp);
    stele_http_client_destroy(c);
    return rc;
}

typedef struct count_ctx {
    uint64_t series, points;
} count_ctx;

static int count_series(void *arg, json_t *metric, json_t *values, json_t *timestamps)
{
    count_ctx *x = arg;
    (void)metric;
    (void)timestamps;
    x->series++;
    x->points += json_array_size(values);
    return 0;
}

static int cmd_count(const options *opt)
{
    count_ctx x = {0};
    int status = 0;
    if (!opt->url || !opt->path) {
        fprintf(stderr, "ingest_load count: --url and --path are required\n");
        return 2;
    }
    double t = now_s();
    if (export_walk(opt, opt->path, count_series, &x, &status) != 0 || status != 200)
        return 1;
    printf("{\"mode\":\"count\",\"series\":%" PRIu64 ",\"points\":%" PRIu64 ",\"seconds\":%.3f}\n",
           x.series, x.points, now_s() - t);
    return 0;
}

/* ---- stream (crash-test writer) ------------------------------------------------- */

typedef struct stream_run {
    const options *opt;
    const char *const *headers;
    int log_fd;
    uint64_t max_batches;
    uint64_t next;   /* next batch number (atomic) */
    uint64_t acked;  /* acknowledged batches (atomic) */
    int stop;        /* set when any thread stops (atomic) */
    int bad_status;  /* a status other than 204 came (atomic) */
    int server_gone; /* a request failed at the transport level (atomic) */
    double deadline;
} stream_run;

static int log_line(int fd, char kind, long cycle, uint64_t b, size_t n)
{
    char line[96];
    int len = snprintf(line, sizeof line, "%c %ld %" PRIu64 " %zu\n", kind, cycle, b, n);
    return write(fd, line, (size_t)len) == len ? 0 : -errno;
}

static void *stream_thread(void *arg)
{
    stream_run *run = arg;
    const options *opt = run->opt;
    stele_http_client *c = NULL;
    size_t cap = opt->batch_points * 96 + 1;
    char *body = malloc(cap);
    if (!body || stele_http_client_create(opt->url, &c) != 0) {
        fprintf(stderr, "ingest_load stream: out of memory or bad URL\n");
        __atomic_store_n(&run->bad_status, 1, __ATOMIC_SEQ_CST);
        goto out;
    }
    stele_http_client_set_timeout_ms(c, STREAM_TIMEOUT_MS);
    while (!__atomic_load_n(&run->stop, __ATOMIC_RELAXED) && now_s() < run->deadline) {
        uint64_t b = __atomic_fetch_add(&run->next, 1, __ATOMIC_RELAXED);
        if (b >= run->max_batches)
            break;
        size_t len = 0;
        uint64_t first = (uint64_t)opt->cycle * CYCLE_SPAN + b * opt->batch_points;
        for (size_t i = 0; i < opt->batch_points; i++) {
            uint64_t id = first + i;
            len += (size_t)snprintf(body + len, cap - len,
                                    "kt,cycle=%ld,s=%zu v=%" PRIu64 " %" PRId64 "000000\n",
                                    opt->cycle, i % KT_SERIES, id, opt->t0_ms + (int64_t)id);
        }
        if (log_line(run->log_fd, 'S', opt->cycle, b, opt->batch_points) != 0) {
            fprintf(stderr, "ingest_load stream: cannot write the log: %s\n", strerror(errno));
            __atomic_store_n(&run->bad_status, 1, __ATOMIC_SEQ_CST);
            break;
        }
        stele_http_response resp = {0};
        int rc =
            stele_http_request(c, "POST", "/write?precision=ns", run->headers, body, len, &resp);
        if (rc != 0) {
            __atomic_store_n(&run->server_gone, 1, __ATOMIC_SEQ_CST);
        } else if (resp.status != 204) {
            fprintf(stderr, "ingest_load stream: cycle %ld batch %" PRIu64 ": status %d\n%s\n",
                    opt->cycle, b, resp.status, resp.body ? (const char *)resp.body : "");
            __atomic_store_n(&run->bad_status, 1, __ATOMIC_SEQ_CST);
        } else if (log_line(run->log_fd, 'A', opt->cycle, b, opt->batch_points) != 0) {
            fprintf(stderr, "ingest_load stream: cannot write the log: %s\n", strerror(errno));
            __atomic_store_n(&run->bad_status, 1, __ATOMIC_SEQ_CST);
        } else {
            __atomic_add_fetch(&run->acked, 1, __ATOMIC_RELAXED);
        }
        stele_http_response_free(&resp);
        if (rc != 0 || __atomic_load_n(&run->bad_status, __ATOMIC_RELAXED))
            break;
    }
out:
    __atomic_store_n(&run->stop, 1, __ATOMIC_SEQ_CST);
    stele_http_client_destroy(c);
    free(body);
    return NULL;
}

static int cmd_stream(const options *opt)
{
    int rc = 1;
    stream_run run = {.opt = opt, .log_fd = -1};
    pthread_t threads[MAX_CLIENTS];
    int started = 0;
    char auth[TOKEN_MAX + 32];
    const char *headers[3] = {"Content-Type: text/plain; charset=utf-8", auth, NULL};
    if (!opt->url || !opt->log || opt->cycle < 0 || !opt->t0_set || !opt->token[0]) {
        fprintf(stderr, "ingest_load stream: --url, --token-file, --log, --cycle and --t0-ms "
                        "are required\n");
        return 2;
    }
    snprintf(auth, sizeof auth, "Authorization: Token %s", opt->token);
    run.headers = headers;
    run.max_batches = CYCLE_SPAN / opt->batch_points;
    run.deadline = now_s() + opt->max_seconds;
    run.log_fd = open(opt->log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (run.log_fd < 0) {
        fprintf(stderr, "ingest_load stream: %s: %s\n", opt->log, strerror(errno));
        return 1;
    }
    for (; started < opt->clients; started++)
        if (pthread_create(&threads[started], NULL, stream_thread, &run) != 0)
            break;
    for (int i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
    bool bad = started < opt->clients || __atomic_load_n(&run.bad_status, __ATOMIC_SEQ_CST);
    printf("{\"mode\":\"stream\",\"cycle\":%ld,\"acked_batches\":%" PRIu64
           ",\"batch_points\":%zu,\"server_gone\":%s,\"error\":%s}\n",
           opt->cycle, run.acked, opt->batch_points, run.server_gone ? "true" : "false",
           bad ? "true" : "false");
    rc = bad ? 1 : 0;
    close(run.log_fd);
    return rc;
}

/* ---- verify (crash-test checker) ------------------------------------------------ */

enum { BATCH_SENT = 1, BATCH_ACKED = 2 };

typedef struct verify_ctx {
    const options *opt;
    long max_cycle;   /* cycles 0..max_cycle are tracked */
    uint32_t batch_n; /* points per batch, the same for every line of the log */
    uint8_t *state;   /* per batch slot: BATCH_* bits */
    uint32_t *found;  /* per batch slot: points seen in the export */
    uint8_t *seen;    /* bitmap over ids */
    uint64_t slots_per_cycle;
    uint64_t points, duplicates, phantoms, bad_stamps, bad_labels;
    int reported; /* details printed so far, to keep the report short */
} verify_ctx;

/* Details beyond this many are only counted. */
#define VERIFY_REPORT_MAX 20

static int verify_series(void *arg, json_t *metric, json_t *values, json_t *timestamps)
{
    verify_ctx *x = arg;
    const char *cycle_text = json_string_value(json_object_get(metric, "cycle"));
    const char *s_text = json_string_value(json_object_get(metric, "s"));
    long cycle = cycle_text ? strtol(cycle_text, NULL, 10) : -1;
    long s = s_text ? strtol(s_text, NULL, 10) : -1;
    if (cycle < 0 || cycle > x->max_cycle || s < 0 || s >= KT_SERIES) {
        if (x->reported++ < VERIFY_REPORT_MAX)
            fprintf(stderr, "verify: series with unexpected labels cycle=%s s=%s\n",
                    cycle_text ? cycle_text : "?", s_text ? s_text : "?");
        x->bad_labels += json_array_size(values);
        return 0;
    }
    for (size_t k = 0; k < json_array_size(values); k++) {
        json_t *jv = json_array_get(values, k), *jt = json_array_get(timestamps, k);
        double v = json_number_value(jv);
        int64_t ts = json_integer_value(jt);
        x->points++;
        if (!json_is_number(jv) || v < 0 || v != floor(v) ||
            (uint64_t)v / CYCLE_SPAN != (uint64_t)cycle) {
            if (x->reported++ < VERIFY_REPORT_MAX)
                fprintf(stderr, "verify: cycle %ld s %ld: value %.17g is no id of this cycle\n",
                        cycle, s, v);
            x->phantoms++;
            continue;
        }
        uint64_t id = (uint64_t)v, off = id % CYCLE_SPAN;
        if (ts != x->opt->t0_ms + (int64_t)id) {
            if (x->reported++ < VERIFY_REPORT_MAX)
                fprintf(stderr,
                        "verify: id %" PRIu64 ": timestamp %" PRId64 " ms, expected %" PRId64 "\n",
                        id, ts, x->opt->t0_ms + (int64_t)id);
            x->bad_stamps++;
        }
        if (x->seen[id / 8] & (1u << (id % 8))) {
            if (x->reported++ < VERIFY_REPORT_MAX)
                fprintf(stderr, "verify: id %" PRIu64 " exported twice\n", id);
            x->duplicates++;
            continue;
        }
        x->seen[id / 8] |= (uint8_t)(1u << (id % 8));
        uint32_t n = x->batch_n;
        uint64_t slot = (uint64_t)cycle * x->slots_per_cycle + off / n;
        if (off / n >= x->slots_per_cycle || !(x->state[slot] & BATCH_SENT) ||
            (off % n) % KT_SERIES != (uint64_t)s) {
            if (x->reported++ < VERIFY_REPORT_MAX)
                fprintf(stderr, "verify: id %" PRIu64 " (cycle %ld s %ld) was never sent\n", id,
                        cycle, s);
            x->phantoms++;
            continue;
        }
        x->found[slot]++;
    }
    return 0;
}

static int cmd_verify(const options *opt)
{
    int rc = 1;
    verify_ctx x = {.opt = opt, .max_cycle = -1};
    FILE *log = NULL;
    if (!opt->url || !opt->log || !opt->t0_set) {
        fprintf(stderr, "ingest_load verify: --url, --token-file, --log and --t0-ms are "
                        "required\n");
        return 2;
    }
    log = fopen(opt->log, "r");
    if (!log) {
        fprintf(stderr, "ingest_load verify: %s: %s\n", opt->log, strerror(errno));
        return 1;
    }
    /* First pass: the highest cycle and the batch size (fixed per run of the script). */
    char kind;
    long cycle;
    uint64_t b;
    size_t n, batch_n = 0;
    while (fscanf(log, " %c %ld %" SCNu64 " %zu", &kind, &cycle, &b, &n) == 4) {
        if (cycle < 0 || cycle >= MAX_CYCLES || n == 0 || n > CYCLE_SPAN ||
            (batch_n && n != batch_n)) {
            fprintf(stderr, "ingest_load verify: %s: bad line '%c %ld %" PRIu64 " %zu'\n", opt->log,
                    kind, cycle, b, n);
            goto fail;
        }
        batch_n = n;
        if (cycle > x.max_cycle)
            x.max_cycle = cycle;
    }
    if (opt->cycle > x.max_cycle)
        x.max_cycle = opt->cycle;
    if (x.max_cycle < 0 || batch_n == 0) {
        printf("{\"mode\":\"verify\",\"note\":\"empty log\",\"ok\":true}\n");
        rc = 0;
        goto fail;
    }
    x.batch_n = (uint32_t)batch_n;
    x.slots_per_cycle = CYCLE_SPAN / batch_n;
    uint64_t slots = (uint64_t)(x.max_cycle + 1) * x.slots_per_cycle;
    uint64_t ids = (uint64_t)(x.max_cycle + 1) * CYCLE_SPAN;
    x.state = calloc(slots, 1);
    x.found = calloc(slots, sizeof *x.found);
    x.seen = calloc(ids / 8 + 1, 1);
    if (!x.state || !x.found || !x.seen) {
        fprintf(stderr, "ingest_load verify: out of memory for %ld cycles\n", x.max_cycle + 1);
        goto fail;
    }
    rewind(log);
    while (fscanf(log, " %c %ld %" SCNu64 " %zu", &kind, &cycle, &b, &n) == 4) {
        if (b >= x.slots_per_cycle)
            continue;
        uint64_t slot = (uint64_t)cycle * x.slots_per_cycle + b;
        x.state[slot] |= kind == 'A' ? BATCH_ACKED | BATCH_SENT : BATCH_SENT;
    }

    /* One export per cycle keeps each response far below the export limit however many
     * cycles the log holds. */
    long first = opt->cycle >= 0 ? opt->cycle : 0;
    long last = opt->cycle >= 0 ? opt->cycle : x.max_cycle;
    double t = now_s();
    for (long c = first; c <= last; c++) {
        char path[256];
        int status = 0;
        if (opt->match_name)
            snprintf(path, sizeof path,
                     "/api/v1/export?match%%5B%%5D=%%7B__name__%%3D%%22kt_v%%22%%2Ccycle%%3D%%22%ld"
                     "%%22%%7D",
                     c);
        else
            snprintf(path, sizeof path, "/api/v1/export?match%%5B%%5D=%%7Bcycle%%3D%%22%ld%%22%%7D",
                     c);
        if (export_walk(opt, path, verify_series, &x, &status) != 0 || status != 200)
            goto fail;
    }
    double export_s = now_s() - t;

    uint64_t acked_batches = 0, acked_points = 0, lost_points = 0, lost_batches = 0;
    uint64_t inflight = 0, inflight_present = 0, partial = 0;
    for (long c = first; c <= last; c++) {
        for (uint64_t k = 0; k < x.slots_per_cycle; k++) {
            uint64_t slot = (uint64_t)c * x.slots_per_cycle + k;
            uint8_t st = x.state[slot];
            if (st & BATCH_ACKED) {
                acked_batches++;
                acked_points += x.batch_n;
                if (x.found[slot] != x.batch_n) {
                    lost_batches++;
                    lost_points += x.batch_n - x.found[slot];
                    if (x.reported++ < VERIFY_REPORT_MAX)
                        fprintf(stderr,
                                "verify: LOST cycle %ld batch %" PRIu64 ": acknowledged, %u of "
                                "%u points present\n",
                                c, k, x.found[slot], x.batch_n);
                }
            } else if (st & BATCH_SENT) {
                inflight++;
                if (x.found[slot] == x.batch_n)
                    inflight_present++;
                else if (x.found[slot] != 0) {
                    partial++;
                    if (x.reported++ < VERIFY_REPORT_MAX)
                        fprintf(stderr,
                                "verify: PARTIAL cycle %ld batch %" PRIu64 ": in flight at the "
                                "kill, %u of %u points present (a batch is atomic)\n",
                                c, k, x.found[slot], x.batch_n);
                }
            }
        }
    }
    bool ok = lost_points == 0 && partial == 0 && x.phantoms == 0 && x.duplicates == 0 &&
              x.bad_stamps == 0 && x.bad_labels == 0;
    printf("{\"mode\":\"verify\",\"cycles\":\"%ld..%ld\",\"acked_batches\":%" PRIu64
           ",\"acked_points\":%" PRIu64 ",\"exported_points\":%" PRIu64 ",\"lost_batches\":%" PRIu64
           ",\"lost_points\":%" PRIu64 ",\"inflight_batches\":%" PRIu64
           ",\"inflight_present\":%" PRIu64 ",\"partial_batches\":%" PRIu64
           ",\"phantom_points\":%" PRIu64 ",\"duplicate_points\":%" PRIu64
           ",\"bad_timestamps\":%" PRIu64 ",\"export_s\":%.3f,\"ok\":%s}\n",
           first, last, acked_batches, acked_points, x.points, lost_batches, lost_points, inflight,
           inflight_present, partial, x.phantoms, x.duplicates, x.bad_stamps, export_s,
           ok ? "true" : "false");
    rc = ok ? 0 : 1;
fail:
    if (log)
        fclose(log);
    free(x.state);
    free(x.found);
    free(x.seen);
    return rc;
}

int main(int argc, char **argv)
{
    options opt;
    if (parse_args(argc, argv, &opt) != 0) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(opt.mode, "gen"))
        return cmd_gen(&opt);
    if (!strcmp(opt.mode, "post")) {
        if (!opt.path)
            opt.path = "/write?precision=ns";
        return cmd_post(&opt);
    }
    if (!strcmp(opt.mode, "count"))
        return cmd_count(&opt);
    if (!strcmp(opt.mode, "stream"))
        return cmd_stream(&opt);
    if (!strcmp(opt.mode, "verify"))
        return cmd_verify(&opt);
    if (!strcmp(opt.mode, "--help") || !strcmp(opt.mode, "-h")) {
        usage(stdout);
        return 0;
    }
    usage(stderr);
    return 2;
}
