/*
 * eval.c — PromQL evaluation, vectorised over the steps of a query (see query.h).
 *
 * Every node yields a `value`: a scalar (one float per step), an instant vector (a list
 * of step series: label set + one float and one presence flag per step), a raw matrix
 * (only as the whole result of an instant query of a range selector) or a string.
 * Selectors read the store series by series and reduce each to per-step values with a
 * sliding window at once; nothing else ever sees raw samples. The arithmetic and the
 * order of operations copy Prometheus 2.x (promql/engine.go, functions.go) so results
 * match it to the last bit wherever that is practical: the same extrapolation in rate,
 * the same incremental mean in avg, the same heap in topk.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/hashmap.h"
#include "query/arena.h"
#include "query/labels.h"
#include "query/query_internal.h"
#include "stele/query.h"

#define NS_PER_MS INT64_C(1000000)
#define NS_PER_SEC INT64_C(1000000000)
/* Prometheus' default lookback delta. */
#define LOOKBACK_NS (5 * 60 * NS_PER_SEC)

void stele_query_limits_default(stele_query_limits *l)
{
    /* Generous for dashboards, small enough that one query cannot take the machine:
     * 100k series and 100 M samples is a heavy ad-hoc query on a 2-core box; 30 s and
     * 1 GiB bound its time and memory; 11,000 points per series is Prometheus' own cap. */
    l->max_series = 100000;
    l->max_samples = 100000000;
    l->timeout_ns = 30 * NS_PER_SEC;
    l->max_memory = 1ull << 30;
    l->max_steps = 11000;
}

/* ---- errors and budgets ----------------------------------------------------------- */

static int qerror(qctx *q, stele_query_error_kind kind, const char *reason, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int qerror(qctx *q, stele_query_error_kind kind, const char *reason, const char *fmt, ...)
{
    if (q->err->kind == STELE_QERR_NONE) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(q->err->message, sizeof(q->err->message), fmt, ap);
        va_end(ap);
        q->err->kind = kind;
        q->err->reason = reason;
    }
    return -ECANCELED;
}

static int oom(qctx *q)
{
    if (q->a.limit && q->a.bytes + (1u << 20) > q->a.limit)
        return qerror(q, STELE_QERR_EXECUTION, "memory",
                      "query exceeded its memory limit of %llu bytes; narrow the selectors or "
                      "the time range",
                      (unsigned long long)q->a.limit);
    return qerror(q, STELE_QERR_INTERNAL, NULL, "out of memory");
}

static int check_budget(qctx *q)
{
    if (q->cancel && *q->cancel)
        return qerror(q, STELE_QERR_TIMEOUT, "time", "query was cancelled");
    if (clock_mono_ns() > q->deadline)
        return qerror(q, STELE_QERR_TIMEOUT, "time",
                      "query timed out after %.3f s; narrow the selectors or the time range",
                      q->limits->timeout_ns / 1e9);
    if (q->stats->samples > q->limits->max_samples)
        return qerror(q, STELE_QERR_EXECUTION, "samples",
                      "query scanned more than %llu samples; narrow the selectors or the time "
                      "range",
                      (unsigned long long)q->limits->max_samples);
    if (q->stats->series > q->limits->max_series)
        return qerror(q, STELE_QERR_EXECUTION, "series",
                      "query touched more than %llu series; add label matchers",
                      (unsigned long long)q->limits->max_series);
    if (q->a.bytes > q->stats->peak_memory)
        q->stats->peak_memory = q->a.bytes;
    return 0;
}

static int64_t step_time(const qctx *q, size_t k)
{
    return q->start + (int64_t)k * q->step;
}

/* ---- values ----------------------------------------------------------------------- */

static sseries *vec_add(qctx *q, value *v, const lset *ls)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 16;
        sseries *s = arena_alloc(&q->a, cap * sizeof(*s));
        if (!s)
            return NULL;
        if (v->n)
            memcpy(s, v->s, v->n * sizeof(*s));
        v->s = s;
        v->cap = cap;
    }
    sseries *s = &v->s[v->n];
    s->ls = *ls;
    s->v = arena_alloc(&q->a, q->nsteps * sizeof(double));
    s->ok = arena_calloc(&q->a, q->nsteps);
    if (!s->v || !s->ok)
        return NULL;
    v->n++;
    return s;
}

static int scalar_new(qctx *q, value *v)
{
    memset(v, 0, sizeof(*v));
    v->type = PQ_TYPE_SCALAR;
    v->scalar = arena_alloc(&q->a, q->nsteps * sizeof(double));
    return v->scalar ? 0 : oom(q);
}

static int series_cmp(const void *a, const void *b)
{
    return lset_compare(&((const sseries *)a)->ls, &((const sseries *)b)->ls);
}

static int series_value_desc(const void *a, const void *b)
{
    double x = ((const sseries *)a)->v[0], y = ((const sseries *)b)->v[0];
    if (x != y && !(isnan(x) && isnan(y)))
        return isnan(y) || x > y ? -1 : 1;
    return series_cmp(a, b);
}

static int series_value_asc(const void *a, const void *b)
{
    double x = ((const sseries *)a)->v[0], y = ((const sseries *)b)->v[0];
    if (x != y && !(isnan(x) && isnan(y)))
        return isnan(y) || x < y ? -1 : 1;
    return series_cmp(a, b);
}

static void vec_sort(value *v)
{
    if (v->n > 1)
        qsort(v->s, v->n, sizeof(*v->s), series_cmp);
}

/* Output builder keyed by label set: two results with the same labels at the same step
 * are an error, as in Prometheus. */
typedef struct {
    hashmap map; /* lset bytes → index + 1 */
} out_index;

static sseries *out_series(qctx *q, value *out, out_index *idx, const lset *ls)
{
    uintptr_t found = (uintptr_t)hashmap_get(&idx->map, ls->hash, ls->data, ls->len);
    if (found)
        return &out->s[found - 1];
    sseries *s = vec_add(q, out, ls);
    if (!s)
        return NULL;
    if (hashmap_put(&idx->map, ls->hash, s->ls.data, s->ls.len, (void *)(uintptr_t)out->n)) {
        out->n--;
        return NULL;
    }
    return s;
}

static int out_set(qctx *q, sseries *s, size_t k, double v)
{
    if (s->ok[k])
        return qerror(q, STELE_QERR_EXECUTION, NULL,
                      "vector cannot contain metrics with the same labelset");
    s->ok[k] = 1;
    s->v[k] = v;
    return 0;
}

/* ---- selectors -------------------------------------------------------------------- */

typedef struct {
    qctx *q;
    const pq_node *sel; /* the vector selector */
    int64_t range;      /* window length for range functions; lookback for instants */
    pq_function fn;     /* for range functions */
    bool is_function;
    const pq_node *call; /* function node, for its extra arguments (none needed) */
    value *out;
    int rc;
} select_ctx;

/* What every selector callback does first: count the series and its points against
 * the query's budget, then build its label set (without __name__ for functions that
 * drop it). 0, or the error to return. */
static int series_start(select_ctx *c, const stele_label *labels, size_t nlabels, size_t npoints,
                        bool drop_name, lset *ls)
{
    qctx *q = c->q;
    q->stats->series++;
    q->stats->samples += npoints;
    int rc = check_budget(q);
    if (rc)
        return rc;
    if (lset_from_labels(&q->a, labels, nlabels, ls))
        return oom(q);
    if (drop_name && lset_drop_name(&q->a, ls, ls))
        return oom(q);
    return 0;
}

static int on_instant_series(void *arg, const stele_series_view *s)
{
    select_ctx *c = arg;
    qctx *q = c->q;
    lset ls;
    int rc = series_start(c, s->labels, s->nlabels, s->n, false, &ls);
    if (rc)
        return rc;
    sseries *out = NULL;
    int64_t offset = c->sel->selector.offset_ns;
    size_t j = 0; /* first sample after the reference time */
    for (size_t k = 0; k < q->nsteps; k++) {
        int64_t ref = step_time(q, k) - offset;
        while (j < s->n && s->ts[j] <= ref)
            j++;
        if (j == 0 || s->ts[j - 1] < ref - LOOKBACK_NS)
            continue;
        if (!out && !(out = vec_add(q, c->out, &ls)))
            return oom(q);
        out->ok[k] = 1;
        out->v[k] = s->values[j - 1];
    }
    return 0;
}

/* Kahan-Neumaier compensated addition, as Prometheus' kahanSumInc. */
static void kahan_add(double inc, double *sum, double *c)
{
    double t = *sum + inc;
    if (fabs(*sum) >= fabs(inc))
        *c += (*sum - t) + inc;
    else
        *c += (inc - t) + *sum;
    *sum = t;
}

/* The range functions, over samples ts/v[0..n) of one window (n ≥ 1). Returns false
 * when the function has no value for this window. Copies Prometheus 2.x. */
static bool range_function(pq_function fn, const int64_t *ts, const double *v, size_t n,
                           int64_t range_start, int64_t range_end, int64_t range, double *out)
{
    switch (fn) {
    case PQ_FN_RATE:
    case PQ_FN_INCREASE:
    case PQ_FN_DELTA: {
        if (n < 2)
            return false;
        bool counter = fn != PQ_FN_DELTA, rate = fn == PQ_FN_RATE;
        double result = v[n - 1] - v[0];
        if (counter) {
            double last = 0;
            for (size_t i = 0; i < n; i++) {
                if (v[i] < last)
                    result += last;
                last = v[i];
            }
        }
        /* Prometheus works in milliseconds. */
        double to_start = (double)((ts[0] - range_start) / NS_PER_MS) / 1000;
        double to_end = (double)((range_end - ts[n - 1]) / NS_PER_MS) / 1000;
        double sampled = (double)((ts[n - 1] - ts[0]) / NS_PER_MS) / 1000;
        double avg_between = sampled / (double)(n - 1);
        if (counter && result > 0 && v[0] >= 0) {
            double to_zero = sampled * (v[0] / result);
            if (to_zero < to_start)
                to_start = to_zero;
        }
        double threshold = avg_between * 1.1, interval = sampled;
        interval += to_start < threshold ? to_start : avg_between / 2;
        interval += to_end < threshold ? to_end : avg_between / 2;
        double factor = interval / sampled;
        if (rate)
            factor /= (double)(range / NS_PER_MS) / 1000;
        *out = result * factor;
        return true;
    }
    case PQ_FN_IRATE:
    case PQ_FN_IDELTA: {
        if (n < 2)
            return false;
        double last = v[n - 1], prev = v[n - 2];
        double result = (fn == PQ_FN_IRATE && last < prev) ? last : last - prev;
        int64_t interval_ms = ts[n - 1] / NS_PER_MS - ts[n - 2] / NS_PER_MS;
        if (interval_ms == 0)
            return false;
        if (fn == PQ_FN_IRATE)
            result /= (double)interval_ms / 1000;
        *out = result;
        return true;
    }
    case PQ_FN_MIN_OVER_TIME:
    case PQ_FN_MAX_OVER_TIME: {
        double m = v[0];
        for (size_t i = 1; i < n; i++) {
            if (fn == PQ_FN_MIN_OVER_TIME ? (v[i] < m || isnan(m)) : (v[i] > m || isnan(m)))
                m = v[i];
        }
        *out = m;
        return true;
    }
    case PQ_FN_SUM_OVER_TIME: {
        double sum = 0, c = 0;
        for (size_t i = 0; i < n; i++)
            kahan_add(v[i], &sum, &c);
        *out = isinf(sum) ? sum : sum + c;
        return true;
    }
    case PQ_FN_AVG_OVER_TIME: {
        double mean = 0, count = 0, c = 0;
        for (size_t i = 0; i < n; i++) {
            count++;
            if (isinf(mean)) {
                if (isinf(v[i]) && (mean > 0) == (v[i] > 0))
                    continue;
                if (!isinf(v[i]) && !isnan(v[i]))
                    continue;
            }
            kahan_add(v[i] / count - mean / count, &mean, &c);
        }
        *out = isinf(mean) ? mean : mean + c;
        return true;
    }
    case PQ_FN_COUNT_OVER_TIME:
        *out = (double)n;
        return true;
    case PQ_FN_LAST_OVER_TIME:
        *out = v[n - 1];
        return true;
    default:
        return false;
    }
}

static int on_range_series(void *arg, const stele_series_view *s)
{
    select_ctx *c = arg;
    qctx *q = c->q;
    lset ls;
    int rc = series_start(c, s->labels, s->nlabels, s->n, c->fn != PQ_FN_LAST_OVER_TIME, &ls);
    if (rc)
        return rc;
    sseries *out = NULL;
    int64_t offset = c->sel->selector.offset_ns;
    /* Windows only move forward with the steps: two cursors, no searching. */
    size_t lo = 0, hi = 0;
    for (size_t k = 0; k < q->nsteps; k++) {
        int64_t end = step_time(q, k) - offset, start = end - c->range;
        while (lo < s->n && s->ts[lo] < start)
            lo++;
        while (hi < s->n && s->ts[hi] <= end)
            hi++;
        if (hi <= lo)
            continue;
        double result;
        if (!range_function(c->fn, s->ts + lo, s->values + lo, hi - lo, start, end, c->range,
                            &result))
            continue;
        if (!out) {
            out = vec_add(q, c->out, &ls);
            if (!out)
                return oom(q);
        }
        out->ok[k] = 1;
        out->v[k] = result;
    }
    return 0;
}

static int on_raw_series(void *arg, const stele_series_view *s)
{
    select_ctx *c = arg;
    qctx *q = c->q;
    q->stats->series++;
    q->stats->samples += s->n;
    int rc = check_budget(q);
    if (rc)
        return rc;
    value *v = c->out;
    if (v->nraw == v->raw_cap) {
        size_t cap = v->raw_cap ? v->raw_cap * 2 : 16;
        raw_series *r = arena_alloc(&q->a, cap * sizeof(*r));
        if (!r)
            return oom(q);
        if (v->nraw)
            memcpy(r, v->raw, v->nraw * sizeof(*r));
        v->raw = r;
        v->raw_cap = cap;
    }
    raw_series *r = &v->raw[v->nraw];
    if (lset_from_labels(&q->a, s->labels, s->nlabels, &r->ls))
        return oom(q);
    r->ts = arena_alloc(&q->a, s->n * sizeof(int64_t) + 8);
    r->v = arena_alloc(&q->a, s->n * sizeof(double) + 8);
    if (!r->ts || !r->v)
        return oom(q);
    memcpy(r->ts, s->ts, s->n * sizeof(int64_t));
    memcpy(r->v, s->values, s->n * sizeof(double));
    r->n = s->n;
    v->nraw++;
    return 0;
}

static int run_select(qctx *q, const pq_node *sel, int64_t mint, int64_t maxt, stele_series_fn fn,
                      select_ctx *c)
{
    char err[256] = "";
    int rc = stele_tsdb_select(q->db, q->tenant, sel->selector.matchers, sel->selector.nmatchers,
                               mint, maxt, fn, c, err, sizeof(err));
    if (rc == -ECANCELED)
        return rc;
    if (rc == -EINVAL)
        return qerror(q, STELE_QERR_BAD_DATA, NULL, "%s", err);
    if (rc)
        return qerror(q, STELE_QERR_INTERNAL, NULL, "storage: %s", err[0] ? err : strerror(-rc));
    return 0;
}

/* ---- selectors answered from a downsampled tier (plan.c chose it) ------------------- */

typedef struct {
    select_ctx *c;
    stele_tier_fn tier_fn;
} bucket_ctx;

static int on_instant_buckets(void *arg, const stele_label *labels, size_t nlabels,
                              const stele_bucket *b, size_t n)
{
    select_ctx *c = ((bucket_ctx *)arg)->c;
    qctx *q = c->q;
    lset ls;
    int rc = series_start(c, labels, nlabels, n, false, &ls);
    if (rc)
        return rc;
    sseries *out = NULL;
    int64_t offset = c->sel->selector.offset_ns;
    for (size_t k = 0; k < q->nsteps; k++) {
        double v;
        if (!stele_tier_instant(b, n, step_time(q, k) - offset, LOOKBACK_NS, &v))
            continue;
        if (!out && !(out = vec_add(q, c->out, &ls)))
            return oom(q);
        out->ok[k] = 1;
        out->v[k] = v;
    }
    return 0;
}

/* Values this large can overflow a sum; buckets then add up in a different order than
 * Prometheus adds samples, and the results may differ (one Inf, one finite). */
#define TIER_SUM_SAFE_MAGNITUDE 1e290

static bool buckets_near_overflow(const stele_bucket *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((isfinite(b[i].min) && fabs(b[i].min) > TIER_SUM_SAFE_MAGNITUDE) ||
            (isfinite(b[i].max) && fabs(b[i].max) > TIER_SUM_SAFE_MAGNITUDE) ||
            (isinf(b[i].sum) && isfinite(b[i].min) && isfinite(b[i].max)))
            return true;
    return false;
}

typedef struct {
    select_ctx *c;
    size_t nlabels;
} exact_series_ctx;

static int on_exact_series(void *arg, const stele_series_view *s)
{
    exact_series_ctx *e = arg;
    /* Equality matchers also match series with more labels: keep the one series. */
    return s->nlabels == e->nlabels ? on_range_series(e->c, s) : 0;
}

/* Answers one series of a tier-planned range function from raw samples instead. */
static int range_series_from_raw(select_ctx *c, const stele_label *labels, size_t nlabels)
{
    qctx *q = c->q;
    int64_t off = c->sel->selector.offset_ns, from = q->start - off - c->range;
    if (q->plan.raw_expired_before != INT64_MIN && from < q->plan.raw_expired_before)
        return qerror(q, STELE_QERR_EXECUTION, NULL,
                      "a series holds values near the float64 limit, where sums from "
                      "downsampled buckets may differ from raw data, and the raw data of this "
                      "range has expired; ask max_over_time or min_over_time instead");
    stele_matcher m[STELE_MAX_LABELS];
    for (size_t i = 0; i < nlabels; i++) {
        char *name = arena_alloc(&q->a, labels[i].name_len + 1);
        char *value = arena_alloc(&q->a, labels[i].value_len + 1);
        if (!name || !value)
            return oom(q);
        memcpy(name, labels[i].name, labels[i].name_len);
        name[labels[i].name_len] = '\0';
        memcpy(value, labels[i].value, labels[i].value_len);
        value[labels[i].value_len] = '\0';
        m[i] = (stele_matcher){.name = name, .value = value, .type = STELE_MATCH_EQUAL};
    }
    exact_series_ctx e = {.c = c, .nlabels = nlabels};
    char err[256] = "";
    int rc = stele_tsdb_select(q->db, q->tenant, m, nlabels, from, q->end - off, on_exact_series,
                               &e, err, sizeof(err));
    if (rc && rc != -ECANCELED)
        return qerror(q, STELE_QERR_INTERNAL, NULL, "storage: %s", err[0] ? err : strerror(-rc));
    return rc;
}

static int on_range_buckets(void *arg, const stele_label *labels, size_t nlabels,
                            const stele_bucket *b, size_t n)
{
    bucket_ctx *bc = arg;
    select_ctx *c = bc->c;
    qctx *q = c->q;
    if ((bc->tier_fn == STELE_TIER_SUM || bc->tier_fn == STELE_TIER_AVG) &&
        buckets_near_overflow(b, n))
        return range_series_from_raw(c, labels, nlabels);
    lset ls;
    int rc = series_start(c, labels, nlabels, n, c->fn != PQ_FN_LAST_OVER_TIME, &ls);
    if (rc)
        return rc;
    sseries *out = NULL;
    int64_t offset = c->sel->selector.offset_ns;
    /* Windows only move forward: cursors give each step its slice of buckets (the
     * window's plus the one that may hold the sample on its right edge). */
    size_t lo = 0, hi = 0;
    for (size_t k = 0; k < q->nsteps; k++) {
        double v;
        int64_t t = step_time(q, k) - offset;
        while (lo < n && b[lo].start < t - c->range)
            lo++;
        if (hi < lo)
            hi = lo;
        while (hi < n && b[hi].start < t)
            hi++;
        size_t len = (hi < n ? hi + 1 : n) - lo;
        if (len == 0 ||
            !stele_tier_window(b + lo, len, q->plan.resolution, t, c->range, bc->tier_fn, &v))
            continue;
        if (!out && !(out = vec_add(q, c->out, &ls)))
            return oom(q);
        out->ok[k] = 1;
        out->v[k] = v;
    }
    return 0;
}

static int run_select_buckets(qctx *q, const pq_node *sel, int64_t mint, int64_t maxt,
                              stele_buckets_fn fn, bucket_ctx *bc)
{
    char err[256] = "";
    unsigned fields = fn == on_range_buckets
                          ? stele_tier_fields(bc->tier_fn)
                          : STELE_BUCKET_COUNT | STELE_BUCKET_FIRST | STELE_BUCKET_LAST;
    int rc = stele_tsdb_select_buckets_fields(q->db, q->tenant, sel->selector.matchers,
                                              sel->selector.nmatchers, q->plan.tier, fields, mint,
                                              maxt, fn, bc, err, sizeof(err));
    if (rc == -ECANCELED)
        return rc;
    if (rc == -EINVAL)
        return qerror(q, STELE_QERR_BAD_DATA, NULL, "%s", err);
    if (rc)
        return qerror(q, STELE_QERR_INTERNAL, NULL, "storage: %s", err[0] ? err : strerror(-rc));
    return 0;
}

static int eval_vector_selector(qctx *q, const pq_node *n, value *out)
{
    memset(out, 0, sizeof(*out));
    out->type = PQ_TYPE_VECTOR;
    select_ctx c = {.q = q, .sel = n, .out = out};
    int64_t off = n->selector.offset_ns;
    int rc;
    if (q->plan.tier) {
        bucket_ctx bc = {.c = &c};
        rc = run_select_buckets(q, n, q->start - off - LOOKBACK_NS, q->end - off,
                                on_instant_buckets, &bc);
    } else {
        rc = run_select(q, n, q->start - off - LOOKBACK_NS, q->end - off, on_instant_series, &c);
    }
    if (rc == 0)
        vec_sort(out);
    return rc;
}

static int eval_range_function(qctx *q, const pq_node *call, value *out)
{
    const pq_node *m = call->call.args[0];
    const pq_node *sel = m->matrix.selector;
    memset(out, 0, sizeof(*out));
    out->type = PQ_TYPE_VECTOR;
    select_ctx c = {.q = q,
                    .sel = sel,
                    .range = m->matrix.range_ns,
                    .fn = call->call.fn,
                    .is_function = true,
                    .out = out};
    int64_t off = sel->selector.offset_ns;
    int rc;
    bucket_ctx bc = {.c = &c};
    if (q->plan.tier && plan_tier_function(call->call.fn, &bc.tier_fn))
        rc = run_select_buckets(q, sel, q->start - off - m->matrix.range_ns, q->end - off,
                                on_range_buckets, &bc);
    else
        rc = run_select(q, sel, q->start - off - m->matrix.range_ns, q->end - off, on_range_series,
                        &c);
    if (rc)
        return rc;
    /* Dropping __name__ can make two series equal: Prometheus refuses that. */
    vec_sort(out);
    for (size_t i = 1; i < out->n; i++)
        if (lset_equal(&out->s[i - 1].ls, &out->s[i].ls))
            for (size_t k = 0; k < q->nsteps; k++)
                if (out->s[i - 1].ok[k] && out->s[i].ok[k])
                    return qerror(q, STELE_QERR_EXECUTION, NULL,
                                  "vector cannot contain metrics with the same labelset");
    return 0;
}

static int eval_matrix_raw(qctx *q, const pq_node *m, value *out)
{
    const pq_node *sel = m->matrix.selector;
    memset(out, 0, sizeof(*out));
    out->type = PQ_TYPE_MATRIX;
    select_ctx c = {.q = q, .sel = sel, .out = out};
    int64_t off = sel->selector.offset_ns;
    return run_select(q, sel, q->start - off - m->matrix.range_ns, q->end - off, on_raw_series, &c);
}

/* ---- functions on instant vectors --------------------------------------------------- */

/* Go's math.Max / math.Min: NaN wins, and +0 > -0. */
static double go_max(double a, double b)
{
    if (isinf(a) && a > 0)
        return a;
    if (isinf(b) && b > 0)
        return b;
    if (isnan(a) || isnan(b))
        return NAN;
    if (a == 0 && a == b)
        return signbit(a) ? b : a;
    return a > b ? a : b;
}

static double go_min(double a, double b)
{
    if (isinf(a) && a < 0)
        return a;
    if (isinf(b) && b < 0)
        return b;
    if (isnan(a) || isnan(b))
        return NAN;
    if (a == 0 && a == b)
        return signbit(a) ? a : b;
    return a < b ? a : b;
}

static int eval(qctx *q, const pq_node *n, value *out);

static int eval_simple_function(qctx *q, const pq_node *call, value *out)
{
    value in, param = {0};
    int rc = eval(q, call->call.args[0], &in);
    if (rc)
        return rc;
    if (call->call.nargs > 1 && (rc = eval(q, call->call.args[1], &param)) != 0)
        return rc;
    memset(out, 0, sizeof(*out));
    out->type = PQ_TYPE_VECTOR;
    out_index idx;
    hashmap_init(&idx.map);
    for (size_t i = 0; i < in.n && rc == 0; i++) {
        lset ls;
        if (lset_drop_name(&q->a, &in.s[i].ls, &ls)) {
            rc = oom(q);
            break;
        }
        sseries *o = out_series(q, out, &idx, &ls);
        if (!o) {
            rc = oom(q);
            break;
        }
        for (size_t k = 0; k < q->nsteps && rc == 0; k++) {
            if (!in.s[i].ok[k])
                continue;
            double v = in.s[i].v[k], r;
            switch (call->call.fn) {
            case PQ_FN_ABS:
                r = fabs(v);
                break;
            case PQ_FN_CLAMP_MIN:
                r = go_max(v, param.scalar[k]);
                break;
            case PQ_FN_CLAMP_MAX:
                r = go_min(v, param.scalar[k]);
                break;
            default: { /* round */
                double to_nearest = call->call.nargs > 1 ? param.scalar[k] : 1;
                double inverse = 1.0 / to_nearest;
                r = floor(v * inverse + 0.5) / inverse;
                break;
            }
            }
            rc = out_set(q, o, k, r);
        }
    }
    hashmap_free(&idx.map);
    if (rc == 0) {
        /* Series that never got a value (cannot happen for inputs with values) are
         * dropped by the result writer; keep order stable. */
        vec_sort(out);
    }
    return rc;
}

/* ---- aggregations ----------------------------------------------------------------- */

typedef struct {
    const sseries *s;
    double v;
} heap_item;

/* Go's container/heap with Prometheus' vectorByValueHeap (topk) or
 * vectorByReverseValueHeap (bottomk) ordering, reproduced so ties break the same way. */
static bool heap_less(const heap_item *h, size_t i, size_t j, bool bottom)
{
    if (!bottom) {
        if (isnan(h[i].v))
            return true;
        return h[i].v < h[j].v;
    }
    if (isnan(h[i].v))
        return true;
    return h[i].v > h[j].v;
}

static void heap_swap(heap_item *h, size_t i, size_t j)
{
    heap_item t = h[i];
    h[i] = h[j];
    h[j] = t;
}

static void heap_up(heap_item *h, size_t j, bool bottom)
{
    while (j > 0) {
        size_t i = (j - 1) / 2;
        if (i == j || !heap_less(h, j, i, bottom))
            break;
        heap_swap(h, i, j);
        j = i;
    }
}

static bool heap_down(heap_item *h, size_t i0, size_t n, bool bottom)
{
    size_t i = i0;
    for (;;) {
        size_t j1 = 2 * i + 1;
        if (j1 >= n)
            break;
        size_t j = j1;
        size_t j2 = j1 + 1;
        if (j2 < n && heap_less(h, j2, j1, bottom))
            j = j2;
        if (!heap_less(h, j, i, bottom))
            break;
        heap_swap(h, i, j);
        i = j;
    }
    return i > i0;
}

typedef struct {
    lset ls;
    size_t first_member;
} group_info;

static int eval_aggregate(qctx *q, const pq_node *n, value *out)
{
    value in, param = {0};
    int rc = 0;
    pq_aggop op = n->aggregate.op;
    if (n->aggregate.param && (rc = eval(q, n->aggregate.param, &param)) != 0)
        return rc;
    if ((rc = eval(q, n->aggregate.expr, &in)) != 0)
        return rc;
    memset(out, 0, sizeof(*out));
    out->type = PQ_TYPE_VECTOR;

    /* Group of each input series. */
    size_t *group_of = arena_alloc(&q->a, (in.n + 1) * sizeof(size_t));
    lset *group_ls = arena_alloc(&q->a, (in.n + 1) * sizeof(lset));
    if (!group_of || !group_ls)
        return oom(q);
    size_t ngroups = 0;
    hashmap groups;
    hashmap_init(&groups);
    for (size_t i = 0; i < in.n; i++) {
        lset g;
        if (lset_filter(&q->a, &in.s[i].ls, n->aggregate.labels, n->aggregate.nlabels,
                        !n->aggregate.without, true, &g)) {
            rc = oom(q);
            break;
        }
        uintptr_t found = (uintptr_t)hashmap_get(&groups, g.hash, g.data, g.len);
        if (!found) {
            group_ls[ngroups] = g;
            if (hashmap_put(&groups, g.hash, g.data, g.len, (void *)(uintptr_t)(ngroups + 1))) {
                rc = oom(q);
                break;
            }
            found = ++ngroups;
        }
        group_of[i] = found - 1;
    }
    hashmap_free(&groups);
    if (rc)
        return rc;

    if (op == PQ_AGG_TOPK || op == PQ_AGG_BOTTOMK) {
        bool bottom = op == PQ_AGG_BOTTOMK;
        heap_item *heap = arena_alloc(&q->a, (in.n + 1) * sizeof(*heap));
        size_t *hn = arena_alloc(&q->a, (ngroups + 1) * sizeof(size_t));
        size_t *hstart = arena_alloc(&q->a, (ngroups + 1) * sizeof(size_t));
        sseries **outs = arena_calloc(&q->a, (in.n + 1) * sizeof(sseries *));
        size_t *members = arena_calloc(&q->a, (ngroups + 1) * sizeof(size_t));
        if (!heap || !hn || !hstart || !outs || !members)
            return oom(q);
        for (size_t i = 0; i < in.n; i++)
            members[group_of[i]]++;
        size_t acc = 0;
        for (size_t g = 0; g < ngroups; g++) {
            hstart[g] = acc;
            acc += members[g];
        }
        for (size_t k = 0; k < q->nsteps; k++) {
            double kf = param.scalar[k];
            int64_t kk = (int64_t)kf;
            if (kk < 1)
                continue;
            memset(hn, 0, ngroups * sizeof(size_t));
            for (size_t i = 0; i < in.n; i++) {
                if (!in.s[i].ok[k])
                    continue;
                size_t g = group_of[i];
                heap_item *h = heap + hstart[g];
                heap_item it = {.s = &in.s[i], .v = in.s[i].v[k]};
                if ((int64_t)hn[g] < kk) {
                    h[hn[g]++] = it;
                    heap_up(h, hn[g] - 1, bottom);
                } else if (bottom ? (h[0].v > it.v || (isnan(h[0].v) && !isnan(it.v)))
                                  : (h[0].v < it.v || (isnan(h[0].v) && !isnan(it.v)))) {
                    h[0] = it;
                    if (!heap_down(h, 0, hn[g], bottom))
                        heap_up(h, 0, bottom);
                }
            }
            for (size_t g = 0; g < ngroups; g++) {
                heap_item *h = heap + hstart[g];
                for (size_t j = 0; j < hn[g]; j++) {
                    size_t idx = (size_t)(h[j].s - in.s);
                    if (!outs[idx] && !(outs[idx] = vec_add(q, out, &h[j].s->ls)))
                        return oom(q);
                    outs[idx]->ok[k] = 1;
                    outs[idx]->v[k] = h[j].v;
                }
            }
        }
        /* An instant result lists the selected series best first, as Prometheus does. */
        if (q->nsteps == 1 && out->n > 1)
            qsort(out->s, out->n, sizeof(*out->s), bottom ? series_value_asc : series_value_desc);
        else
            vec_sort(out);
        return 0;
    }

    /* sum, avg, min, max, count: one accumulator per group and step. */
    sseries **go = arena_alloc(&q->a, (ngroups + 1) * sizeof(sseries *));
    double **count = arena_alloc(&q->a, (ngroups + 1) * sizeof(double *));
    if (!go || !count)
        return oom(q);
    for (size_t g = 0; g < ngroups; g++) {
        go[g] = vec_add(q, out, &group_ls[g]);
        count[g] = arena_calloc(&q->a, q->nsteps * sizeof(double));
        if (!go[g] || !count[g])
            return oom(q);
    }
    for (size_t i = 0; i < in.n; i++) {
        sseries *o = go[group_of[i]];
        double *cnt = count[group_of[i]];
        for (size_t k = 0; k < q->nsteps; k++) {
            if (!in.s[i].ok[k])
                continue;
            double v = in.s[i].v[k];
            if (!o->ok[k]) {
                o->ok[k] = 1;
                cnt[k] = 1;
                o->v[k] = op == PQ_AGG_COUNT ? 1 : v;
                continue;
            }
            cnt[k]++;
            switch (op) {
            case PQ_AGG_SUM:
                o->v[k] += v;
                break;
            case PQ_AGG_COUNT:
                o->v[k] += 1;
                break;
            case PQ_AGG_MIN:
                if (o->v[k] > v || isnan(o->v[k]))
                    o->v[k] = v;
                break;
            case PQ_AGG_MAX:
                if (o->v[k] < v || isnan(o->v[k]))
                    o->v[k] = v;
                break;
            default: { /* avg: Prometheus' incremental mean */
                double mean = o->v[k];
                if (isinf(mean)) {
                    if (isinf(v) && (mean > 0) == (v > 0))
                        break;
                    if (!isinf(v) && !isnan(v))
                        break;
                }
                /* Parenthesised as Prometheus evaluates it: the difference first, so
                 * values near the float64 maximum do not overflow. */
                o->v[k] = mean + (v / cnt[k] - mean / cnt[k]);
                break;
            }
            }
        }
    }
    vec_sort(out);
    return 0;
}

/* ---- binary operators ----------------------------------------------------------- */

static bool is_comparison(pq_binop op)
{
    return op >= PQ_OP_EQ && op <= PQ_OP_LE;
}

static bool is_set_op(pq_binop op)
{
    return op == PQ_OP_AND || op == PQ_OP_OR || op == PQ_OP_UNLESS;
}

/* Prometheus' vectorElemBinop/scalarBinop: the value, and for comparisons whether the
 * element is kept. */
static double binop_apply(pq_binop op, double l, double r, bool *keep)
{
    *keep = true;
    switch (op) {
    case PQ_OP_ADD:
        return l + r;
    case PQ_OP_SUB:
        return l - r;
    case PQ_OP_MUL:
        return l * r;
    case PQ_OP_DIV:
        return l / r;
    case PQ_OP_POW:
        return pow(l, r);
    case PQ_OP_MOD:
        return fmod(l, r);
    case PQ_OP_EQ:
        *keep = l == r;
        return l;
    case PQ_OP_NE:
        *keep = l != r;
        return l;
    case PQ_OP_GT:
        *keep = l > r;
        return l;
    case PQ_OP_LT:
        *keep = l < r;
        return l;
    case PQ_OP_GE:
        *keep = l >= r;
        return l;
    case PQ_OP_LE:
        *keep = l <= r;
        return l;
    default:
        *keep = false;
        return 0;
    }
}

static int eval_binary_scalar_vector(qctx *q, const pq_node *n, value *lhs, value *rhs, value *out)
{
    bool swap = lhs->type == PQ_TYPE_SCALAR; /* the vector is on the right */
    value *vec = swap ? rhs : lhs, *sc = swap ? lhs : rhs;
    pq_binop op = n->binary.op;
    bool drop = !is_comparison(op) || n->binary.return_bool;
    memset(out, 0, sizeof(*out));
    out->type = PQ_TYPE_VECTOR;
    out_index idx;
    hashmap_init(&idx.map);
    int rc = 0;
    for (size_t i = 0; i < vec->n && rc == 0; i++) {
        lset ls = vec->s[i].ls;
        if (drop && lset_drop_name(&q->a, &ls, &ls)) {
            rc = oom(q);
            break;
        }
        sseries *o = NULL;
        for (size_t k = 0; k < q->nsteps && rc == 0; k++) {
            if (!vec->s[i].ok[k])
                continue;
            double lv = vec->s[i].v[k], rv = sc->scalar[k];
            if (swap) {
                double t = lv;
                lv = rv;
                rv = t;
            }
            bool keep;
            double value = binop_apply(op, lv, rv, &keep);
            if (is_comparison(op) && swap)
                value = rv; /* the vector's value, even on the right */
            if (n->binary.return_bool) {
                value = keep ? 1 : 0;
                keep = true;
            }
            if (!keep)
                continue;
            if (!o && !(o = out_series(q, out, &idx, &ls))) {
                rc = oom(q);
                break;
            }
            rc = out_set(q, o, k, value);
        }
    }
    hashmap_free(&idx.map);
    if (rc == 0)
        vec_sort(out);
    return rc;
}

/* Matching signature of a series for vector matching. */
static int signature(qctx *q, const pq_node *n, const lset *ls, lset *sig)
{
    if (n->binary.matching && n->binary.on)
        return lset_filter(&q->a, ls, n->binary.labels, n->binary.nlabels, true, true, sig);
    return lset_filter(&q->a, ls, n->binary.labels, n->binary.matching ? n->binary.nlabels : 0,
                       false, true, sig);
}

static int eval_set_op(qctx *q, const pq_node *n, value *lhs, value *rhs, value *out)
{
    pq_binop op = n->binary.op;
    lset *lsig = arena_alloc(&q->a, (lhs->n + 1) * sizeof(lset));
    lset *rsig = arena_alloc(&q->a, (rhs->n + 1) * sizeof(lset));
    if (!lsig || !rsig)
        return oom(q);
    for (size_t i = 0; i < lhs->n; i++)
        if (signature(q, n, &lhs->s[i].ls, &lsig[i]))
            return oom(q);
    for (size_t i = 0; i < rhs->n; i++)
        if (signature(q, n, &rhs->s[i].ls, &rsig[i]))
            return oom(q);
    memset(out, 0, sizeof(*out));
    out->type = PQ_TYPE_VECTOR;
    /* Per step, which signatures are present on each side. */
    hashmap rmap, lmap;
    hashmap_init(&rmap);
    hashmap_init(&lmap);
    int rc = 0;
    size_t *rnext = arena_alloc(&q->a, (rhs->n + 1) * sizeof(size_t));
    size_t *lnext = arena_alloc(&q->a, (lhs->n + 1) * sizeof(size_t));
    if (!rnext || !lnext)
        return oom(q);
    /* Series sharing a signature are chained: the map holds the first (index + 1),
     * next[] links the rest (0 ends a chain). */
    for (size_t i = 0; i < rhs->n && rc == 0; i++) {
        uintptr_t head = (uintptr_t)hashmap_get(&rmap, rsig[i].hash, rsig[i].data, rsig[i].len);
        rnext[i] = 0;
        if (head) {
            rnext[i] = rnext[head - 1];
            rnext[head - 1] = i + 1;
        } else if (hashmap_put(&rmap, rsig[i].hash, rsig[i].data, rsig[i].len,
                               (void *)(uintptr_t)(i + 1))) {
            rc = oom(q);
        }
    }
    for (size_t i = 0; i < lhs->n && rc == 0; i++) {
        uintptr_t head = (uintptr_t)hashmap_get(&lmap, lsig[i].hash, lsig[i].data, lsig[i].len);
        lnext[i] = 0;
        if (head) {
            lnext[i] = lnext[head - 1];
            lnext[head - 1] = i + 1;
        } else if (hashmap_put(&lmap, lsig[i].hash, lsig[i].data, lsig[i].len,
                               (void *)(uintptr_t)(i + 1))) {
            rc = oom(q);
        }
    }
    /* Output series: lhs series (and for `or`, rhs series too), values copied where
     * the set rule keeps them; series with equal labels from both sides are one. */
    out_index idx;
    hashmap_init(&idx.map);
    sseries **lo = arena_calloc(&q->a, (lhs->n + 1) * sizeof(sseries *));
    sseries **ro = arena_calloc(&q->a, (rhs->n + 1) * sizeof(sseries *));
    if (!lo || !ro)
        rc = oom(q);
    for (size_t k = 0; k < q->nsteps && rc == 0; k++) {
        for (size_t i = 0; i < lhs->n && rc == 0; i++) {
            if (!lhs->s[i].ok[k])
                continue;
            bool in_rhs = false;
            uintptr_t r = (uintptr_t)hashmap_get(&rmap, lsig[i].hash, lsig[i].data, lsig[i].len);
            for (; r && !in_rhs; r = rnext[r - 1])
                in_rhs = rhs->s[r - 1].ok[k];
            bool keep = op == PQ_OP_OR || (op == PQ_OP_AND ? in_rhs : !in_rhs);
            if (!keep)
                continue;
            if (!lo[i] && !(lo[i] = out_series(q, out, &idx, &lhs->s[i].ls)))
                rc = oom(q);
            else
                rc = out_set(q, lo[i], k, lhs->s[i].v[k]);
        }
        if (op != PQ_OP_OR)
            continue;
        for (size_t i = 0; i < rhs->n && rc == 0; i++) {
            if (!rhs->s[i].ok[k])
                continue;
            bool in_lhs = false;
            uintptr_t l = (uintptr_t)hashmap_get(&lmap, rsig[i].hash, rsig[i].data, rsig[i].len);
            for (; l && !in_lhs; l = lnext[l - 1])
                in_lhs = lhs->s[l - 1].ok[k];
            if (in_lhs)
                continue;
            if (!ro[i] && !(ro[i] = out_series(q, out, &idx, &rhs->s[i].ls)))
                rc = oom(q);
            else
                rc = out_set(q, ro[i], k, rhs->s[i].v[k]);
        }
    }
    hashmap_free(&rmap);
    hashmap_free(&lmap);
    hashmap_free(&idx.map);
    if (rc == 0)
        vec_sort(out);
    return rc;
}

static int format_labels(const lset *ls, char *buf, size_t cap)
{
    stele_label l[STELE_MAX_LABELS];
    size_t n = lset_decode(ls, l), used = 0;
    used += (size_t)snprintf(buf, cap, "{");
    for (size_t i = 0; i < n && used < cap; i++)
        used += (size_t)snprintf(buf + used, cap - used, "%s%.*s=\"%.*s\"", i ? ", " : "",
                                 (int)l[i].name_len, l[i].name, (int)l[i].value_len, l[i].value);
    if (used < cap)
        snprintf(buf + used, cap - used, "}");
    return 0;
}

static int eval_vector_vector(qctx *q, const pq_node *n, value *lhs, value *rhs, value *out)
{
    pq_binop op = n->binary.op;
    if (is_set_op(op))
        return eval_set_op(q, n, lhs, rhs, out);
    bool drop = !is_comparison(op) || n->binary.return_bool;
    lset *lsig = arena_alloc(&q->a, (lhs->n + 1) * sizeof(lset));
    lset *rsig = arena_alloc(&q->a, (rhs->n + 1) * sizeof(lset));
    lset *res = arena_alloc(&q->a, (lhs->n + 1) * sizeof(lset));
    size_t *rnext = arena_alloc(&q->a, (rhs->n + 1) * sizeof(size_t));
    if (!lsig || !rsig || !res || !rnext)
        return oom(q);
    int rc = 0;
    for (size_t i = 0; i < lhs->n && rc == 0; i++) {
        if (signature(q, n, &lhs->s[i].ls, &lsig[i]))
            return oom(q);
        /* Result labels: drop the name for arithmetic and bool; with on(), keep only the
         * matching labels; with ignoring(), drop them. */
        lset r = lhs->s[i].ls;
        if (drop && lset_drop_name(&q->a, &r, &r))
            return oom(q);
        if (n->binary.matching &&
            lset_filter(&q->a, &r, n->binary.labels, n->binary.nlabels, n->binary.on, false, &r))
            return oom(q);
        res[i] = r;
    }
    hashmap rmap;
    hashmap_init(&rmap);
    for (size_t i = 0; i < rhs->n && rc == 0; i++) {
        if (signature(q, n, &rhs->s[i].ls, &rsig[i])) {
            rc = oom(q);
            break;
        }
        uintptr_t head = (uintptr_t)hashmap_get(&rmap, rsig[i].hash, rsig[i].data, rsig[i].len);
        rnext[i] = 0;
        if (head) {
            rnext[i] = rnext[head - 1];
            rnext[head - 1] = i + 1;
        } else if (hashmap_put(&rmap, rsig[i].hash, rsig[i].data, rsig[i].len,
                               (void *)(uintptr_t)(i + 1))) {
            rc = oom(q);
        }
    }
    memset(out, 0, sizeof(*out));
    out->type = PQ_TYPE_VECTOR;
    out_index idx;
    hashmap_init(&idx.map);
    hashmap lseen;
    hashmap_init(&lseen);
    for (size_t k = 0; k < q->nsteps && rc == 0; k++) {
        hashmap_clear(&lseen);
        for (size_t i = 0; i < lhs->n && rc == 0; i++) {
            if (!lhs->s[i].ok[k])
                continue;
            size_t match = 0;
            uintptr_t r = (uintptr_t)hashmap_get(&rmap, lsig[i].hash, lsig[i].data, lsig[i].len);
            for (; r; r = rnext[r - 1]) {
                if (!rhs->s[r - 1].ok[k])
                    continue;
                if (match) {
                    char buf[512];
                    format_labels(&lsig[i], buf, sizeof(buf));
                    rc = qerror(q, STELE_QERR_EXECUTION, NULL,
                                "found duplicate series for the match group %s on the right "
                                "hand-side of the operation; many-to-many matching not allowed: "
                                "matching labels must be unique on one side",
                                buf);
                    break;
                }
                match = r;
            }
            if (rc || !match)
                continue;
            /* Two left series with one signature both matching: many-to-one. */
            if (hashmap_get(&lseen, lsig[i].hash, lsig[i].data, lsig[i].len)) {
                rc = qerror(q, STELE_QERR_EXECUTION, NULL,
                            "multiple matches for labels: many-to-one matching must be explicit "
                            "(group_left/group_right)");
                break;
            }
            if (hashmap_put(&lseen, lsig[i].hash, lsig[i].data, lsig[i].len, (void *)1)) {
                rc = oom(q);
                break;
            }
            bool keep;
            double value = binop_apply(op, lhs->s[i].v[k], rhs->s[match - 1].v[k], &keep);
            if (n->binary.return_bool) {
                value = keep ? 1 : 0;
                keep = true;
            }
            if (!keep)
                continue;
            sseries *o = out_series(q, out, &idx, &res[i]);
            if (!o) {
                rc = oom(q);
                break;
            }
            rc = out_set(q, o, k, value);
        }
    }
    hashmap_free(&lseen);
    hashmap_free(&idx.map);
    hashmap_free(&rmap);
    if (rc == 0)
        vec_sort(out);
    return rc;
}

static int eval_binary(qctx *q, const pq_node *n, value *out)
{
    value lhs, rhs;
    int rc = eval(q, n->binary.lhs, &lhs);
    if (rc == 0)
        rc = eval(q, n->binary.rhs, &rhs);
    if (rc)
        return rc;
    if (lhs.type == PQ_TYPE_SCALAR && rhs.type == PQ_TYPE_SCALAR) {
        if ((rc = scalar_new(q, out)) != 0)
            return rc;
        for (size_t k = 0; k < q->nsteps; k++) {
            bool keep;
            double v = binop_apply(n->binary.op, lhs.scalar[k], rhs.scalar[k], &keep);
            out->scalar[k] = is_comparison(n->binary.op) ? (keep ? 1 : 0) : v;
        }
        return 0;
    }
    if (lhs.type == PQ_TYPE_SCALAR || rhs.type == PQ_TYPE_SCALAR)
        return eval_binary_scalar_vector(q, n, &lhs, &rhs, out);
    return eval_vector_vector(q, n, &lhs, &rhs, out);
}

static int eval_unary_minus(qctx *q, const pq_node *n, value *out)
{
    value in;
    int rc = eval(q, n->unary.expr, &in);
    if (rc)
        return rc;
    if (in.type == PQ_TYPE_SCALAR) {
        if ((rc = scalar_new(q, out)) != 0)
            return rc;
        for (size_t k = 0; k < q->nsteps; k++)
            out->scalar[k] = -in.scalar[k];
        return 0;
    }
    memset(out, 0, sizeof(*out));
    out->type = PQ_TYPE_VECTOR;
    out_index idx;
    hashmap_init(&idx.map);
    for (size_t i = 0; i < in.n && rc == 0; i++) {
        lset ls;
        sseries *o;
        if (lset_drop_name(&q->a, &in.s[i].ls, &ls) || !(o = out_series(q, out, &idx, &ls))) {
            rc = oom(q);
            break;
        }
        for (size_t k = 0; k < q->nsteps && rc == 0; k++)
            if (in.s[i].ok[k])
                rc = out_set(q, o, k, -in.s[i].v[k]);
    }
    hashmap_free(&idx.map);
    if (rc == 0)
        vec_sort(out);
    return rc;
}

static int eval(qctx *q, const pq_node *n, value *out)
{
    int rc = check_budget(q);
    if (rc)
        return rc;
    switch (n->kind) {
    case PQ_NUMBER:
        if ((rc = scalar_new(q, out)) != 0)
            return rc;
        for (size_t k = 0; k < q->nsteps; k++)
            out->scalar[k] = n->number;
        return 0;
    case PQ_STRING:
        memset(out, 0, sizeof(*out));
        out->type = PQ_TYPE_STRING;
        out->str = n->string;
        return 0;
    case PQ_VECTOR_SELECTOR:
        return eval_vector_selector(q, n, out);
    case PQ_MATRIX_SELECTOR:
        return eval_matrix_raw(q, n, out);
    case PQ_CALL:
        switch (n->call.fn) {
        case PQ_FN_ABS:
        case PQ_FN_CLAMP_MIN:
        case PQ_FN_CLAMP_MAX:
        case PQ_FN_ROUND:
            return eval_simple_function(q, n, out);
        default:
            return eval_range_function(q, n, out);
        }
    case PQ_AGGREGATE:
        return eval_aggregate(q, n, out);
    case PQ_BINARY:
        return eval_binary(q, n, out);
    case PQ_UNARY_MINUS:
        return eval_unary_minus(q, n, out);
    case PQ_PAREN:
        return eval(q, n->unary.expr, out);
    }
    return qerror(q, STELE_QERR_INTERNAL, NULL, "unknown expression node");
}

/* ---- planning: cost estimate before any sample is read ----------------------------- */

static int estimate(qctx *q, const pq_node *n, uint64_t *series, uint64_t *samples)
{
    const pq_node *sel = NULL;
    int64_t window = LOOKBACK_NS;
    switch (n->kind) {
    case PQ_VECTOR_SELECTOR:
        sel = n;
        break;
    case PQ_MATRIX_SELECTOR:
        sel = n->matrix.selector;
        window = n->matrix.range_ns;
        break;
    case PQ_CALL:
        for (size_t i = 0; i < n->call.nargs; i++) {
            int rc = estimate(q, n->call.args[i], series, samples);
            if (rc)
                return rc;
        }
        return 0;
    case PQ_AGGREGATE:
        if (n->aggregate.param) {
            int rc = estimate(q, n->aggregate.param, series, samples);
            if (rc)
                return rc;
        }
        return estimate(q, n->aggregate.expr, series, samples);
    case PQ_BINARY: {
        int rc = estimate(q, n->binary.lhs, series, samples);
        return rc ? rc : estimate(q, n->binary.rhs, series, samples);
    }
    case PQ_UNARY_MINUS:
    case PQ_PAREN:
        return estimate(q, n->unary.expr, series, samples);
    default:
        return 0;
    }
    uint64_t s = 0, p = 0;
    char err[256] = "";
    int64_t off = sel->selector.offset_ns;
    int rc = q->plan.tier ? stele_tsdb_estimate_buckets(q->db, q->tenant, sel->selector.matchers,
                                                        sel->selector.nmatchers, q->plan.tier,
                                                        q->start - off - window, q->end - off, &s,
                                                        &p, err, sizeof(err))
                          : stele_tsdb_estimate(q->db, q->tenant, sel->selector.matchers,
                                                sel->selector.nmatchers, q->start - off - window,
                                                q->end - off, &s, &p, err, sizeof(err));
    if (rc == -EINVAL)
        return qerror(q, STELE_QERR_BAD_DATA, NULL, "%s", err);
    if (rc)
        return qerror(q, STELE_QERR_INTERNAL, NULL, "storage: %s", strerror(-rc));
    *series += s;
    *samples += p;
    return 0;
}

/* Chooses raw data or a tier, then estimates the cost and checks the limits
 * (STELE_QERR_LIMIT when over). */
static int query_admit(qctx *q, const pq_node *root, int64_t resolution)
{
    stele_query_stats *stats = q->stats;
    const stele_query_limits *limits = q->limits;
    char msg[sizeof(q->err->message)];
    if (query_plan_choose(q->db, root, q->start, q->step, resolution, &q->plan, msg, sizeof(msg)) !=
        0)
        return qerror(q, STELE_QERR_BAD_DATA, "resolution", "%s", msg);
    stats->resolution_ns = q->plan.resolution;
    int rc = estimate(q, root, &stats->estimated_series, &stats->estimated_samples);
    if (rc)
        return rc;
    if (stats->estimated_series > limits->max_series)
        return qerror(q, STELE_QERR_LIMIT, "series",
                      "query would touch %llu series, over the limit of %llu; add label matchers",
                      (unsigned long long)stats->estimated_series,
                      (unsigned long long)limits->max_series);
    if (stats->estimated_samples > limits->max_samples)
        return qerror(q, STELE_QERR_LIMIT, "samples",
                      "query would scan about %llu samples, over the limit of %llu; narrow the "
                      "selectors or the time range",
                      (unsigned long long)stats->estimated_samples,
                      (unsigned long long)limits->max_samples);
    return 0;
}

int stele_query_admit(stele_tsdb *db, const char *tenant, const pq_expr *expr, int64_t start,
                      int64_t end, int64_t step, const stele_query_limits *limits,
                      int64_t resolution, stele_query_error *err, stele_query_stats *stats)
{
    stele_query_stats local;
    if (!stats)
        stats = &local;
    memset(stats, 0, sizeof(*stats));
    memset(err, 0, sizeof(*err));
    qctx q = {.db = db,
              .tenant = tenant,
              .start = start,
              .end = end,
              .step = start == end ? 0 : step,
              .limits = limits,
              .deadline = clock_mono_ns() + limits->timeout_ns,
              .err = err,
              .stats = stats};
    return query_admit(&q, pq_expr_root(expr), resolution);
}

int stele_query_eval(stele_tsdb *db, const char *tenant, const pq_expr *expr, int64_t start,
                     int64_t end, int64_t step, bool range_query, const stele_query_limits *limits,
                     int64_t resolution, const volatile int *cancel, stele_query_result **out,
                     stele_query_error *err, stele_query_stats *stats)
{
    stele_query_stats local_stats;
    if (!stats)
        stats = &local_stats;
    memset(stats, 0, sizeof(*stats));
    memset(err, 0, sizeof(*err));
    const pq_node *root = pq_expr_root(expr);
    stele_query_result *r = calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    qctx q = {.db = db,
              .tenant = tenant,
              .start = start,
              .end = end,
              .step = step,
              .range_query = range_query,
              .limits = limits,
              .cancel = cancel,
              .deadline = clock_mono_ns() + limits->timeout_ns,
              .err = err,
              .stats = stats};
    int rc = 0;
    if (range_query) {
        if (step <= 0 || end < start) {
            rc = qerror(&q, STELE_QERR_BAD_DATA, NULL,
                        step <= 0 ? "zero or negative query resolution step widths are not "
                                    "accepted. Try a positive integer"
                                  : "end timestamp must not be before start time");
            goto fail;
        }
        uint64_t steps = (uint64_t)((end - start) / step) + 1;
        if (steps - 1 > limits->max_steps) { /* intervals, as Prometheus counts */
            rc = qerror(&q, STELE_QERR_BAD_DATA, "steps",
                        "exceeded maximum resolution of %llu points per timeseries. Try "
                        "decreasing the query resolution (?step=XX)",
                        (unsigned long long)limits->max_steps);
            goto fail;
        }
        q.nsteps = (size_t)steps;
        if (root->type != PQ_TYPE_SCALAR && root->type != PQ_TYPE_VECTOR) {
            rc = qerror(&q, STELE_QERR_BAD_DATA, NULL,
                        "invalid expression type \"%s\" for range query, must be Scalar or "
                        "instant Vector",
                        root->type == PQ_TYPE_MATRIX ? "range vector" : "string");
            goto fail;
        }
    } else {
        q.nsteps = 1;
        q.end = start;
        q.step = 0;
    }
    arena_init(&q.a, limits->max_memory);
    /* Refuse before reading anything when the index says it would not fit. */
    rc = query_admit(&q, root, resolution);
    if (rc)
        goto fail_arena;
    rc = eval(&q, root, &r->v);
    if (rc == 0)
        rc = check_budget(&q);
    if (rc)
        goto fail_arena;
    r->a = q.a;
    r->start = q.start;
    r->step = q.step;
    r->nsteps = q.nsteps;
    r->range_query = range_query;
    if (q.a.bytes > stats->peak_memory)
        stats->peak_memory = q.a.bytes;
    *out = r;
    return 0;
fail_arena:
    arena_free(&q.a);
fail:
    free(r);
    if (err->kind == STELE_QERR_NONE)
        qerror(&q, STELE_QERR_INTERNAL, NULL, "query failed: %s", strerror(rc < 0 ? -rc : rc));
    return rc ? rc : -EINVAL;
}

void stele_query_result_free(stele_query_result *r)
{
    if (!r)
        return;
    arena_free(&r->a);
    free(r);
}
