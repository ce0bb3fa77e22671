/*
 * handle_query.c — the Prometheus HTTP API read endpoints (SPEC §3), so Grafana's
 * Prometheus data source works unchanged:
 *   /api/v1/query, /api/v1/query_range   (run on the query pool, limits of SPEC §8)
 *   /api/v1/series, /api/v1/labels, /api/v1/label/<name>/values, /api/v1/metadata
 * GET with query parameters, or POST with an application/x-www-form-urlencoded body.
 * Responses use Prometheus' JSON shapes, errorType values and status codes: 400
 * bad_data, 422 execution, 503 timeout, 429 when the query queue is full.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/text.h"
#include <time.h>

#include "common/clock.h"
#include "common/hashmap.h"
#include "server/server_internal.h"
#include "stele/promql.h"
#include "stele/query.h"
#include "stele/selector.h"

#define MAX_MATCH_PARAMS 16
/* A query's own wait on the pool: its timeout plus a margin for queueing. */
#define QUERY_WAIT_MARGIN_NS INT64_C(5000000000)

/* ---- parameters -------------------------------------------------------------------- */

/* Percent-decodes in[0..n) (and '+' → space) into out; returns the length. */
static size_t url_decode(const char *in, size_t n, char *out)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (in[i] == '+') {
            out[k++] = ' ';
        } else if (in[i] == '%' && i + 2 < n && hex_digit_value(in[i + 1]) >= 0 &&
                   hex_digit_value(in[i + 2]) >= 0) {
            out[k++] = (char)(hex_digit_value(in[i + 1]) * 16 + hex_digit_value(in[i + 2]));
            i += 2;
        } else {
            out[k++] = in[i];
        }
    }
    out[k] = '\0';
    return k;
}

/* Decodes a form body once into pairs "key\0value\0key\0value\0…". */
static void form_decode(request *r, struct MHD_Connection *c)
{
    if (r->form || !r->body || strcmp(r->method, "POST") != 0)
        return;
    const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
    if (!ct || strncasecmp(ct, "application/x-www-form-urlencoded", 33) != 0)
        return;
    char *out = malloc(2 * r->body_len + 4);
    if (!out)
        return;
    size_t n = 0, i = 0;
    while (i < r->body_len) {
        size_t amp = i;
        while (amp < r->body_len && r->body[amp] != '&')
            amp++;
        size_t eq = i;
        while (eq < amp && r->body[eq] != '=')
            eq++;
        n += url_decode(r->body + i, eq - i, out + n) + 1;
        if (eq < amp)
            n += url_decode(r->body + eq + 1, amp - eq - 1, out + n) + 1;
        else
            out[n++] = '\0';
        i = amp + 1;
    }
    r->form = out;
    r->form_len = n;
}

static void form_each(request *r, const char *name, void (*fn)(void *, const char *), void *ctx)
{
    for (size_t pos = 0; r->form && pos < r->form_len;) {
        const char *key = r->form + pos;
        pos += strlen(key) + 1;
        const char *value = r->form + pos;
        pos += strlen(value) + 1;
        if (!strcmp(key, name))
            fn(ctx, value);
    }
}

static void take_first(void *ctx, const char *value)
{
    const char **out = ctx;
    if (!*out)
        *out = value;
}

const char *request_param(struct MHD_Connection *c, request *r, const char *name)
{
    const char *v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, name);
    if (v)
        return v;
    form_decode(r, c);
    form_each(r, name, take_first, &v);
    return v;
}

typedef struct {
    const char *name;
    void (*fn)(void *, const char *);
    void *ctx;
} each_ctx;

static mhd_result each_get_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                               const char *value)
{
    (void)kind;
    each_ctx *e = cls;
    if (key && !strcmp(key, e->name))
        e->fn(e->ctx, value ? value : "");
    return MHD_YES;
}

void request_param_each(struct MHD_Connection *c, request *r, const char *name,
                        void (*fn)(void *ctx, const char *value), void *ctx)
{
    each_ctx e = {.name = name, .fn = fn, .ctx = ctx};
    MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, each_get_arg, &e);
    form_decode(r, c);
    form_each(r, name, fn, ctx);
}

/* Prometheus time: unix seconds (fractional) or RFC 3339; rounded to milliseconds. */
static int parse_prom_time(const char *text, int64_t *ns)
{
    char *end;
    double secs = strtod(text, &end);
    if (end != text && *end == '\0') {
        if (isnan(secs))
            return -EINVAL;
        /* Clients send far-away bounds to mean "everything" (Prometheus accepts any
         * int64 milliseconds); beyond what nanoseconds hold, clamp. */
        if (secs > 9.2e9)
            *ns = INT64_MAX;
        else if (secs < -9.2e9)
            *ns = INT64_MIN;
        else
            *ns = (int64_t)llround(secs * 1000) * 1000000;
        return 0;
    }
    struct tm tm = {0};
    const char *p = strptime(text, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!p)
        return -EINVAL;
    int64_t frac_ms = 0;
    if (*p == '.') {
        int digits = 0;
        for (p++; *p >= '0' && *p <= '9'; p++, digits++)
            if (digits < 3)
                frac_ms = frac_ms * 10 + (*p - '0');
        for (; digits < 3; digits++)
            frac_ms *= 10;
    }
    int64_t offset = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int hh, mm;
        if (sscanf(p + 1, "%2d:%2d", &hh, &mm) != 2)
            return -EINVAL;
        offset = (hh * 3600 + mm * 60) * (*p == '+' ? 1 : -1);
        p += 6;
    } else {
        return -EINVAL;
    }
    if (*p)
        return -EINVAL;
    *ns = (((int64_t)timegm(&tm) - offset) * 1000 + frac_ms) * 1000000;
    return 0;
}

/* Step: seconds (fractional) or a PromQL duration. */
static int parse_step(const char *text, int64_t *ns)
{
    char *end;
    double secs = strtod(text, &end);
    if (end != text && *end == '\0') {
        if (!isfinite(secs) || secs > 1e9)
            return -EINVAL;
        *ns = (int64_t)llround(secs * 1000) * 1000000;
        return 0;
    }
    return pq_parse_duration(text, strlen(text), ns);
}

/* ---- refusal counters -------------------------------------------------------------- */

void server_count_refusal(stele_server *s, const char *tenant, const char *reason)
{
    pthread_mutex_lock(&s->refusals_mu);
    refusal_counter *c = s->refusals;
    for (; c; c = c->next)
        if (!strcmp(c->tenant, tenant) && !strcmp(c->reason, reason))
            break;
    if (!c && (c = calloc(1, sizeof(*c)))) {
        snprintf(c->tenant, sizeof(c->tenant), "%s", tenant);
        snprintf(c->reason, sizeof(c->reason), "%s", reason);
        c->next = s->refusals;
        s->refusals = c;
    }
    if (c)
        c->count++;
    pthread_mutex_unlock(&s->refusals_mu);
}

/* ---- /api/v1/query and /api/v1/query_range ------------------------------------------- */

typedef struct {
    stele_server *s;
    const char *tenant;
    pq_expr *expr;
    int64_t start, end, step;
    bool range;
    stele_query_limits limits;
    int64_t resolution; /* STELE_RESOLUTION_AUTO, _RAW or a tier's */
    /* results */
    int rc;
    stele_query_error err;
    stele_query_stats stats;
    char *json;
    size_t json_len;
} query_work;

static void run_query(query_job *job)
{
    query_work *w = job->ctx;
    stele_query_result *res = NULL;
    w->rc = stele_query_eval(w->s->db, w->tenant, w->expr, w->start, w->end, w->step, w->range,
                             &w->limits, w->resolution, &job->cancel, &res, &w->err, &w->stats);
    if (w->rc == 0) {
        w->rc = stele_query_result_json(res, &w->json, &w->json_len);
        if (w->rc) {
            w->err.kind = STELE_QERR_INTERNAL;
            snprintf(w->err.message, sizeof(w->err.message), "out of memory formatting result");
        }
    }
    stele_query_result_free(res);
}

static mhd_result respond_query_error(stele_server *s, struct MHD_Connection *c, const char *tenant,
                                      const stele_query_error *e)
{
    switch (e->kind) {
    case STELE_QERR_BAD_DATA:
        if (e->reason)
            server_count_refusal(s, tenant, e->reason);
        return respond_prom_error(c, 400, "bad_data", e->message);
    case STELE_QERR_LIMIT:
    case STELE_QERR_EXECUTION:
        if (e->reason)
            server_count_refusal(s, tenant, e->reason);
        return respond_prom_error(c, 422, "execution", e->message);
    case STELE_QERR_TIMEOUT:
        server_count_refusal(s, tenant, "time");
        return respond_prom_error(c, 503, "timeout", e->message);
    default:
        return respond_prom_error(c, 500, "internal", e->message[0] ? e->message : "internal");
    }
}

mhd_result handle_query(stele_server *s, struct MHD_Connection *c, request *r, bool range)
{
    mhd_result result;
    char err[512];
    if (!require_scope(s, c, r, STELE_SCOPE_READ, true, &result))
        return result;
    const char *tenant = request_tenant(s, c, r, request_param(c, r, "tenant"), true, &result);
    if (!tenant)
        return result;
    const char *query = request_param(c, r, "query");
    if (!query || !*query)
        return respond_prom_error(c, 400, "bad_data",
                                  "invalid parameter \"query\": unknown "
                                  "position: parse error: no expression "
                                  "found in input");
    stele_tenant_limits tl;
    server_tenant_limits(s, tenant, &tl);
    query_work w = {.s = s,
                    .tenant = tenant,
                    .range = range,
                    .limits = tl.query,
                    .resolution = STELE_RESOLUTION_AUTO};
    const char *pres = request_param(c, r, "resolution");
    if (pres && stele_resolution_parse(pres, &w.resolution) != 0)
        return respond_prom_error(c, 400, "bad_data",
                                  "invalid parameter \"resolution\": expected auto, raw or a "
                                  "tier's resolution such as 1m or 1h");
    if (range) {
        const char *ps = request_param(c, r, "start"), *pe = request_param(c, r, "end"),
                   *pst = request_param(c, r, "step");
        if (!ps || parse_prom_time(ps, &w.start))
            return respond_prom_error(c, 400, "bad_data",
                                      "invalid parameter \"start\": cannot "
                                      "parse it to a valid timestamp");
        if (!pe || parse_prom_time(pe, &w.end))
            return respond_prom_error(c, 400, "bad_data",
                                      "invalid parameter \"end\": cannot "
                                      "parse it to a valid timestamp");
        if (w.end < w.start)
            return respond_prom_error(c, 400, "bad_data",
                                      "invalid parameter \"end\": end "
                                      "timestamp must not be before start "
                                      "time");
        if (!pst || parse_step(pst, &w.step))
            return respond_prom_error(c, 400, "bad_data",
                                      "invalid parameter \"step\": cannot "
                                      "parse it to a valid duration");
        if (w.step <= 0)
            return respond_prom_error(c, 400, "bad_data",
                                      "invalid parameter \"step\": zero or negative query "
                                      "resolution step widths are not accepted. Try a positive "
                                      "integer");
        /* As Prometheus: the number of intervals, not of points, is capped. */
        if ((uint64_t)((w.end - w.start) / w.step) > w.limits.max_steps) {
            server_count_refusal(s, tenant, "steps");
            return respond_prom_error(c, 400, "bad_data",
                                      "exceeded maximum resolution of 11,000 points per "
                                      "timeseries. Try decreasing the query resolution "
                                      "(?step=XX)");
        }
    } else {
        const char *pt = request_param(c, r, "time");
        int64_t now_ms = clock_wall_ns() / 1000000;
        w.start = now_ms * 1000000;
        if (pt && parse_prom_time(pt, &w.start))
            return respond_prom_error(c, 400, "bad_data",
                                      "invalid parameter \"time\": cannot "
                                      "parse it to a valid timestamp");
        w.end = w.start;
    }
    const char *pto = request_param(c, r, "timeout");
    if (pto) {
        int64_t t;
        if (parse_step(pto, &t) || t <= 0)
            return respond_prom_error(c, 400, "bad_data", "invalid parameter \"timeout\"");
        if (t < w.limits.timeout_ns)
            w.limits.timeout_ns = t;
    }
    int rc = pq_parse(query, strlen(query), &w.expr, err, sizeof(err));
    if (rc) {
        char msg[600];
        snprintf(msg, sizeof(msg), "invalid parameter \"query\": %s", err);
        return respond_prom_error(c, 400, "bad_data", msg);
    }

    /* Over-limit queries are refused here, without waiting for a worker. */
    rc = stele_query_admit(s->db, tenant, w.expr, w.start, w.end, w.step, &w.limits, w.resolution,
                           &w.err, &w.stats);
    if (rc) {
        result = respond_query_error(s, c, tenant, &w.err);
        pq_expr_free(w.expr);
        return result;
    }
    query_job job;
    query_job_init(&job);
    job.run = run_query;
    job.ctx = &w;
    snprintf(job.tenant, sizeof(job.tenant), "%s", tenant);
    rc = query_pool_submit(s->pool, &job, tl.max_concurrent_queries);
    if (rc) {
        const char *reason = rc == -EUSERS ? "concurrency" : "queue";
        server_count_refusal(s, tenant, reason);
        static const char *const hdr[] = {"Retry-After", "1", NULL};
        const char *body =
            rc == -EUSERS
                ? "{\"status\":\"error\",\"errorType\":\"too_many_requests\",\"error\":\"this "
                  "tenant already has its maximum of concurrent queries; retry after the "
                  "indicated delay\"}\n"
                : "{\"status\":\"error\",\"errorType\":\"too_many_requests\",\"error\":\"the "
                  "query queue is full; retry after the indicated delay\"}\n";
        result = respond(c, 429, "application/json", (char *)body, strlen(body), false, hdr);
        goto out;
    }
    query_pool_wait(&job, w.limits.timeout_ns + QUERY_WAIT_MARGIN_NS);
    if (job.cancel && w.rc == 0 && !w.json) {
        w.err.kind = STELE_QERR_TIMEOUT;
        snprintf(w.err.message, sizeof(w.err.message), "query timed out in the queue");
        w.rc = -ETIMEDOUT;
    }
    if (w.rc) {
        result = respond_query_error(s, c, tenant, &w.err);
        goto out;
    }
    __atomic_add_fetch(&s->queries_ok, 1, __ATOMIC_RELAXED);
    size_t total = w.json_len + 64;
    char *body = malloc(total);
    if (!body) {
        result = respond_prom_error(c, 500, "internal", "out of memory");
        goto out;
    }
    int n = snprintf(body, total, "{\"status\":\"success\",\"data\":%s}\n", w.json);
    /* Which data answered (SPEC §5): "raw" or the tier's resolution. */
    char resolution[32];
    stele_resolution_name(w.stats.resolution_ns, resolution, sizeof(resolution));
    const char *const hdr[] = {"X-Stele-Resolution", resolution, NULL};
    result = respond(c, 200, "application/json", body, (size_t)n, true, hdr);
out:
    query_job_destroy(&job);
    free(w.json);
    pq_expr_free(w.expr);
    return result;
}

/* ---- /api/v1/series, labels, label values ---------------------------------------------- */

typedef struct {
    const char *values[MAX_MATCH_PARAMS];
    size_t n;
    bool too_many;
} match_list;

static void add_match(void *ctx, const char *value)
{
    match_list *m = ctx;
    if (m->n == MAX_MATCH_PARAMS)
        m->too_many = true;
    else
        m->values[m->n++] = value;
}

typedef struct {
    char *data;
    size_t len, cap;
    bool failed;
    hashmap seen;
    char **owned;
    size_t nowned, owned_cap;
    const char *value_name; /* label values: the name; labels: NULL; series: "" */
    bool series_mode;
    size_t count;
} collect_ctx;

static bool cc_reserve(collect_ctx *cc, size_t extra)
{
    if (cc->failed)
        return false;
    if (cc->len + extra + 1 <= cc->cap)
        return true;
    size_t cap = cc->cap ? cc->cap : 4096;
    while (cap < cc->len + extra + 1)
        cap *= 2;
    char *d = realloc(cc->data, cap);
    if (!d) {
        cc->failed = true;
        return false;
    }
    cc->data = d;
    cc->cap = cap;
    return true;
}

static void cc_json_string(collect_ctx *cc, const char *s, size_t n)
{
    if (!cc_reserve(cc, n * 6 + 2))
        return;
    cc->data[cc->len++] = '"';
    cc->len += json_escape_bytes(s, n, cc->data + cc->len);
    cc->data[cc->len++] = '"';
}

/* Remembers a distinct string (label name or value, or a series' JSON). */
static bool cc_first_time(collect_ctx *cc, const char *s, size_t n)
{
    uint64_t h = hashmap_hash(s, n);
    if (hashmap_get(&cc->seen, h, s, n))
        return false;
    char *copy = malloc(n + 1);
    if (!copy) {
        cc->failed = true;
        return false;
    }
    memcpy(copy, s, n);
    copy[n] = '\0';
    if (cc->nowned == cc->owned_cap) {
        size_t cap = cc->owned_cap ? cc->owned_cap * 2 : 64;
        char **o = realloc(cc->owned, cap * sizeof(*o));
        if (!o) {
            free(copy);
            cc->failed = true;
            return false;
        }
        cc->owned = o;
        cc->owned_cap = cap;
    }
    cc->owned[cc->nowned++] = copy;
    if (hashmap_put(&cc->seen, h, copy, n, copy)) {
        cc->failed = true;
        return false;
    }
    return true;
}

static int collect_labels(void *ctx, const stele_label *labels, size_t n)
{
    collect_ctx *cc = ctx;
    if (cc->series_mode) {
        size_t start = cc->len;
        if (!cc_reserve(cc, 2))
            return -ENOMEM;
        cc->data[cc->len++] = '{';
        for (size_t i = 0; i < n; i++) {
            if (i && cc_reserve(cc, 1))
                cc->data[cc->len++] = ',';
            cc_json_string(cc, labels[i].name, labels[i].name_len);
            if (cc_reserve(cc, 1))
                cc->data[cc->len++] = ':';
            cc_json_string(cc, labels[i].value, labels[i].value_len);
        }
        if (cc_reserve(cc, 1))
            cc->data[cc->len++] = '}';
        if (cc->failed)
            return -ENOMEM;
        if (!cc_first_time(cc, cc->data + start, cc->len - start))
            cc->len = start; /* several match[] matched it */
        return cc->failed ? -ENOMEM : 0;
    }
    for (size_t i = 0; i < n; i++) {
        const char *s = labels[i].name;
        size_t len = labels[i].name_len;
        if (cc->value_name) {
            if (strlen(cc->value_name) != len || memcmp(cc->value_name, s, len))
                continue;
            s = labels[i].value;
            len = labels[i].value_len;
        }
        cc_first_time(cc, s, len);
    }
    return cc->failed ? -ENOMEM : 0;
}

static int str_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void collect_free(collect_ctx *cc)
{
    for (size_t i = 0; i < cc->nowned; i++)
        free(cc->owned[i]);
    free(cc->owned);
    free(cc->data);
    hashmap_free(&cc->seen);
}

/* Runs the selection shared by series/labels/values: every match[] (or all series).
 * Returns true when it already answered (an error), with MHD's result in *result. */
static bool select_labels(stele_server *s, struct MHD_Connection *c, request *r, collect_ctx *cc,
                          bool match_required, mhd_result *result)
{
    char err[256];
    const char *tenant = request_tenant(s, c, r, request_param(c, r, "tenant"), true, result);
    if (!tenant)
        return true;
    match_list ml = {0};
    request_param_each(c, r, "match[]", add_match, &ml);
    if (ml.too_many) {
        *result = respond_prom_error(c, 400, "bad_data", "at most 16 match[] parameters");
        return true;
    }
    if (match_required && ml.n == 0) {
        *result = respond_prom_error(c, 400, "bad_data", "no match[] parameter provided");
        return true;
    }
    int64_t start = INT64_MIN, end = INT64_MAX;
    const char *ps = request_param(c, r, "start"), *pe = request_param(c, r, "end");
    if ((ps && parse_prom_time(ps, &start)) || (pe && parse_prom_time(pe, &end))) {
        *result = respond_prom_error(c, 400, "bad_data",
                                     "invalid parameter \"start\" or \"end\": cannot parse it "
                                     "to a valid timestamp");
        return true;
    }
    if (ml.n == 0) {
        ml.values[0] = "{__name__=~\".+\"}";
        ml.n = 1;
    }
    for (size_t i = 0; i < ml.n; i++) {
        stele_selector sel;
        int rc = stele_selector_parse(ml.values[i], strlen(ml.values[i]), &sel, err, sizeof(err));
        if (rc) {
            char msg[400];
            snprintf(msg, sizeof(msg), "invalid parameter \"match[]\": %s", err);
            *result = respond_prom_error(c, 400, "bad_data", msg);
            return true;
        }
        rc = stele_tsdb_series(s->db, tenant, sel.matchers, sel.n, start, end, collect_labels, cc,
                               err, sizeof(err));
        stele_selector_free(&sel);
        if (rc) {
            *result = rc == -EINVAL ? respond_prom_error(c, 400, "bad_data", err)
                                    : respond_prom_error(c, 500, "internal", "storage error");
            return true;
        }
    }
    return false;
}

mhd_result handle_series(stele_server *s, struct MHD_Connection *c, request *r)
{
    mhd_result result;
    if (!require_scope(s, c, r, STELE_SCOPE_READ, true, &result))
        return result;
    collect_ctx cc = {.series_mode = true};
    hashmap_init(&cc.seen);
    cc_reserve(&cc, 64);
    if (!cc.failed) {
        memcpy(cc.data, "{\"status\":\"success\",\"data\":[", 28);
        cc.len = 28;
    }
    size_t header = cc.len;
    /* Each distinct series' JSON is collected; the list is then rebuilt with commas. */
    if (select_labels(s, c, r, &cc, true, &result)) {
        collect_free(&cc);
        return result;
    }
    /* Rebuild with separators from the owned (distinct) series JSON. */
    cc.len = header;
    for (size_t i = 0; i < cc.nowned; i++) {
        size_t n = strlen(cc.owned[i]);
        if (!cc_reserve(&cc, n + 1))
            break;
        if (i)
            cc.data[cc.len++] = ',';
        memcpy(cc.data + cc.len, cc.owned[i], n);
        cc.len += n;
    }
    if (cc_reserve(&cc, 4)) {
        memcpy(cc.data + cc.len, "]}\n", 3);
        cc.len += 3;
    }
    if (cc.failed) {
        collect_free(&cc);
        return respond_prom_error(c, 500, "internal", "out of memory");
    }
    result = respond(c, 200, "application/json", cc.data, cc.len, true, NULL);
    cc.data = NULL;
    collect_free(&cc);
    return result;
}

mhd_result handle_labels(stele_server *s, struct MHD_Connection *c, request *r,
                         const char *value_name)
{
    mhd_result result;
    if (!require_scope(s, c, r, STELE_SCOPE_READ, true, &result))
        return result;
    collect_ctx cc = {.value_name = value_name};
    hashmap_init(&cc.seen);
    if (select_labels(s, c, r, &cc, false, &result)) {
        collect_free(&cc);
        return result;
    }
    qsort(cc.owned, cc.nowned, sizeof(char *), str_cmp);
    cc.len = 0;
    if (cc_reserve(&cc, 32)) {
        memcpy(cc.data, "{\"status\":\"success\",\"data\":[", 28);
        cc.len = 28;
    }
    for (size_t i = 0; i < cc.nowned; i++) {
        if (i && cc_reserve(&cc, 1))
            cc.data[cc.len++] = ',';
        cc_json_string(&cc, cc.owned[i], strlen(cc.owned[i]));
    }
    if (cc_reserve(&cc, 4)) {
        memcpy(cc.data + cc.len, "]}\n", 3);
        cc.len += 3;
    }
    if (cc.failed) {
        collect_free(&cc);
        return respond_prom_error(c, 500, "internal", "out of memory");
    }
    result = respond(c, 200, "application/json", cc.data, cc.len, true, NULL);
    cc.data = NULL;
    collect_free(&cc);
    return result;
}

mhd_result handle_metadata(stele_server *s, struct MHD_Connection *c, request *r)
{
    mhd_result result;
    if (!require_scope(s, c, r, STELE_SCOPE_READ, true, &result))
        return result;
    /* Stele stores no metric metadata (types, help); Grafana accepts an empty map. */
    static const char body[] = "{\"status\":\"success\",\"data\":{}}\n";
    return respond(c, 200, "application/json", (char *)body, sizeof(body) - 1, false, NULL);
}
