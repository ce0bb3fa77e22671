/*
 * test_tier_store.c — downsampled tiers through the store and the query planner (issue 4,
 * SPEC §5): whatever state the tiers are in, a query they accept must answer exactly what
 * raw data answers, and a query they cannot answer must be refused, never answered
 * differently.
 *
 * 1. Property test (seeded; STELE_TEST_SEED fixes the first seed, the seed is printed on
 *    failure): six series (gauges with NaN and negative values, counters with resets,
 *    sparse and irregular ones, one near the float64 limit where sums fall back to raw
 *    data), also written under a second tenant that must never show, in random batches —
 *    appends, out-of-order batches, rewrites of existing timestamps, late points into
 *    buckets the tiers already hold — interleaved at random with flushes, tier builds,
 *    maintenance (compaction), a clock jump that makes partitions cold, and reopening.
 *    At random points (data only in the head, only in unbuilt blocks, mixed) and at the
 *    end, every supported query shape is evaluated with the resolution forced to each
 *    tier (1m, 10m), forced to raw, and automatic: the answers must be equal (same
 *    series, same steps, values to 1e-9 relative, NaN equal to NaN); automatic planning
 *    must pick the coarsest tier that can answer; a forced tier must refuse what it
 *    cannot answer. Raw samples and tier buckets (stele_tsdb_select_buckets) are also
 *    checked directly against a model of everything written (later write wins).
 * 2. Raw data past its retention (2 d; tiers 1m:30d, 1h:365d; five days written as the
 *    clock passes): answers captured from raw data before it expired come back unchanged
 *    from the tiers afterwards, also after a reopen; queries only raw data could answer
 *    are refused with a message naming what can be asked; queries within unexpired raw
 *    data work at any alignment; late points at the oldest accepted time rebuild their
 *    buckets exactly. A minimal case: a NaN sample in a bucket once raw data expired.
 * 3. Tier retention: buckets past a tier's retention disappear and queries needing them
 *    are refused as expired instead of being answered from nothing.
 *
 * STELE_TEST_FILTER=<test name> runs one test.
 *
 * Everything runs on the fault-injecting in-memory file system (no faults scheduled)
 * with a fake clock, so time can pass by days in milliseconds.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "stele/io.h"
#include "stele/promql.h"
#include "stele/query.h"
#include "stele/tier.h"
#include "stele/tsdb.h"

#include "test_util.h"

#define NS INT64_C(1000000000)
#define MS (NS / 1000)
#define MIN (60 * NS)
#define HOUR (60 * MIN)
#define DAY (24 * HOUR)
/* A UTC day boundary, so partitions (1 d) and tier buckets line up with it. */
#define DAY0 (INT64_C(1750000000) / 86400 * 86400 * NS)

static int64_t align_down(int64_t x, int64_t r)
{
    return x / r * r - (x % r < 0 ? r : 0);
}

/* ---- a store on the in-memory file system with a fake clock ------------------------ */

typedef struct {
    stele_io *io;
    stele_tsdb *db;
    stele_tsdb_options o;
    int64_t now;
} store;

static int64_t store_clock(void *ctx)
{
    return ((store *)ctx)->now;
}

static void store_open(store *s)
{
    char err[512] = "";
    int rc = stele_tsdb_open(&s->o, &s->db, NULL, err, sizeof(err));
    if (rc)
        fail_msg("open failed: %d %s", rc, err);
}

/* tiers: "resolution:retention" pairs in ns, finest first. */
static void store_init(store *s, uint64_t seed, int64_t raw_retention, size_t ntiers,
                       const int64_t *tiers, int64_t now)
{
    memset(s, 0, sizeof(*s));
    assert_int_equal(stele_io_fault_create(seed, &s->io), 0);
    stele_tsdb_options_default(&s->o);
    s->o.dir = "data";
    s->o.io = s->io;
    s->o.background = false;
    s->o.retention_ns = raw_retention;
    s->o.ntiers = ntiers;
    for (size_t t = 0; t < ntiers; t++) {
        s->o.tier_resolution_ns[t] = tiers[2 * t];
        s->o.tier_retention_ns[t] = tiers[2 * t + 1];
    }
    s->o.now_ns = store_clock;
    s->o.now_ctx = s;
    s->now = now;
    store_open(s);
}

static void store_reopen(store *s)
{
    stele_tsdb_close(s->db);
    s->db = NULL;
    store_open(s);
}

static void store_fini(store *s)
{
    stele_tsdb_close(s->db);
    stele_io_destroy(s->io);
}

/* ---- query answers as rows (series, time, value) ------------------------------------ */

typedef struct {
    char metric[160]; /* the series' JSON label object, as the result prints it */
    int64_t t_ms;
    double v;
} row;

typedef struct {
    row *r;
    size_t n, cap;
} rows;

static void rows_add(rows *rs, const char *metric, size_t mlen, int64_t t_ms, double v)
{
    if (rs->n == rs->cap) {
        rs->cap = rs->cap ? 2 * rs->cap : 256;
        rs->r = realloc(rs->r, rs->cap * sizeof(*rs->r));
        assert_non_null(rs->r);
    }
    row *w = &rs->r[rs->n++];
    if (mlen >= sizeof(w->metric))
        mlen = sizeof(w->metric) - 1;
    memcpy(w->metric, metric, mlen);
    w->metric[mlen] = '\0';
    w->t_ms = t_ms;
    w->v = v;
}

static int row_cmp(const void *a, const void *b)
{
    const row *x = a, *y = b;
    int c = strcmp(x->metric, y->metric);
    if (c)
        return c;
    return x->t_ms < y->t_ms ? -1 : x->t_ms > y->t_ms;
}

static void rows_sort(rows *rs)
{
    if (rs->n)
        qsort(rs->r, rs->n, sizeof(*rs->r), row_cmp);
}

/* Keeps the rows with from_ns <= t <= to_ns. */
static void rows_keep(rows *rs, int64_t from_ns, int64_t to_ns)
{
    size_t k = 0;
    for (size_t i = 0; i < rs->n; i++)
        if (rs->r[i].t_ms * MS >= from_ns && rs->r[i].t_ms * MS <= to_ns)
            rs->r[k++] = rs->r[i];
    rs->n = k;
}

/* [t,"v"] at p; returns the position after the closing bracket. */
static const char *parse_pair(const char *p, const char *metric, size_t mlen, rows *out)
{
    char *end;
    double t = strtod(p + 1, &end);
    const char *q = strchr(end, '"');
    assert_non_null(q);
    double v = strtod(q + 1, NULL); /* also "NaN", "+Inf", "-Inf" */
    rows_add(out, metric, mlen, (int64_t)llround(t * 1000), v);
    return strchr(q + 1, ']') + 1;
}

/* Parses stele_query_result_json output (matrix, vector or scalar) into sorted rows. */
static void rows_parse(const char *json, rows *out)
{
    if (strstr(json, "\"resultType\":\"scalar\"")) {
        const char *p = strstr(json, "\"result\":[");
        assert_non_null(p);
        parse_pair(p + 9, "scalar", 6, out);
        return;
    }
    for (const char *p = json; (p = strstr(p, "\"metric\":")) != NULL;) {
        const char *m = p + 9, *me = strchr(m, '}');
        assert_non_null(me);
        me++;
        p = me;
        if (strncmp(p, ",\"values\":[", 11) == 0) {
            p += 11;
            while (*p == '[') {
                p = parse_pair(p, m, (size_t)(me - m), out);
                if (*p == ',')
                    p++;
            }
        } else if (strncmp(p, ",\"value\":", 9) == 0) {
            p = parse_pair(p + 9, m, (size_t)(me - m), out);
        }
    }
    rows_sort(out);
}

/* The magnitude of the values of the series of kind "huge" (1e-9 of it is its tolerance:
 * a result that cancels is as exact as its operands). */
#define P_HUGE 1e295

/* Equal to 1e-9 relative; results that cancel to almost zero (an increase of a gauge
 * that came back to where it was) are compared to 1e-10 absolute, the rounding of the
 * operands they came from. */
static bool same_value(double a, double b)
{
    if (isnan(a) || isnan(b))
        return isnan(a) && isnan(b);
    if (a == b)
        return true;
    return fabs(a - b) <= 1e-9 * fmax(fabs(a), fabs(b)) + 1e-10;
}

/* false and the first difference in why when want and got differ. */
static bool rows_equal(const rows *want, const rows *got, char *why, size_t cap)
{
    size_t i = 0, j = 0;
    while (i < want->n || j < got->n) {
        int c = i == want->n ? 1 : j == got->n ? -1 : row_cmp(&want->r[i], &got->r[j]);
        if (c < 0) {
            snprintf(why, cap, "%s at t=%.3f: expected %.17g, got no value", want->r[i].metric,
                     (double)want->r[i].t_ms / 1000, want->r[i].v);
            return false;
        }
        if (c > 0) {
            snprintf(why, cap, "%s at t=%.3f: expected no value, got %.17g", got->r[j].metric,
                     (double)got->r[j].t_ms / 1000, got->r[j].v);
            return false;
        }
        bool huge = strstr(want->r[i].metric, "\"huge\"") != NULL;
        if (!(huge ? fabs(want->r[i].v - got->r[j].v) <= 1e-9 * P_HUGE ||
                         same_value(want->r[i].v, got->r[j].v)
                   : same_value(want->r[i].v, got->r[j].v))) {
            snprintf(why, cap, "%s at t=%.3f: expected %.17g, got %.17g", want->r[i].metric,
                     (double)want->r[i].t_ms / 1000, want->r[i].v, got->r[j].v);
            return false;
        }
        i++;
        j++;
    }
    return true;
}

typedef struct {
    int rc;
    stele_query_error err;
    stele_query_stats stats;
    rows rows;
} answer;

/* Evaluates query (an instant query when !range: at start) into a->rows (emptied first). */
static void ask(stele_tsdb *db, const char *query, int64_t start, int64_t end, int64_t step,
                bool range, int64_t resolution, answer *a)
{
    pq_expr *e = NULL;
    char perr[256] = "";
    if (pq_parse(query, strlen(query), &e, perr, sizeof(perr)) != 0)
        fail_msg("cannot parse %s: %s", query, perr);
    stele_query_limits lim;
    stele_query_limits_default(&lim);
    stele_query_result *r = NULL;
    a->rows.n = 0;
    a->rc = stele_query_eval(db, "t", e, start, range ? end : start, range ? step : 0, range, &lim,
                             resolution, NULL, &r, &a->err, &a->stats);
    if (a->rc == 0) {
        char *json = NULL;
        size_t len = 0;
        assert_int_equal(stele_query_result_json(r, &json, &len), 0);
        rows_parse(json, &a->rows);
        free(json);
        stele_query_result_free(r);
    }
    pq_expr_free(e);
}

static const char *res_name(int64_t resolution, char *buf, size_t cap)
{
    if (resolution == STELE_RESOLUTION_AUTO)
        snprintf(buf, cap, "auto");
    else
        stele_resolution_name(resolution, buf, cap);
    return buf;
}

/* ---- a model of what was written: per series, samples sorted, later write wins ---- */

typedef struct {
    int64_t *ts;
    double *v;
    size_t n, cap;
} model_series;

static void model_put(model_series *m, int64_t ts, double v)
{
    size_t lo = 0, hi = m->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (m->ts[mid] < ts)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < m->n && m->ts[lo] == ts) {
        m->v[lo] = v;
        return;
    }
    if (m->n == m->cap) {
        m->cap = m->cap ? 2 * m->cap : 1024;
        m->ts = realloc(m->ts, m->cap * sizeof(*m->ts));
        m->v = realloc(m->v, m->cap * sizeof(*m->v));
        assert_true(m->ts && m->v);
    }
    memmove(m->ts + lo + 1, m->ts + lo, (m->n - lo) * sizeof(*m->ts));
    memmove(m->v + lo + 1, m->v + lo, (m->n - lo) * sizeof(*m->v));
    m->ts[lo] = ts;
    m->v[lo] = v;
    m->n++;
}

static void model_free(model_series *m)
{
    free(m->ts);
    free(m->v);
}

static bool same_bits(double a, double b)
{
    return (isnan(a) && isnan(b)) || a == b;
}

/* The sum as tier blocks store it: compensation folded in (one rounding). */
static double finished_sum(const stele_bucket *b)
{
    return isinf(b->sum) ? b->sum : b->sum + b->sum_c;
}

static bool same_bucket(const stele_bucket *a, const stele_bucket *b)
{
    return a->start == b->start && a->count == b->count &&
           same_bits(finished_sum(a), finished_sum(b)) && same_bits(a->min, b->min) &&
           same_bits(a->max, b->max) && same_bits(a->first, b->first) &&
           same_bits(a->last, b->last) && a->first_ts == b->first_ts && a->last_ts == b->last_ts &&
           same_bits(a->resets, b->resets);
}

/* The value of label `name` in a label set ("" if absent), into buf. */
static const char *label_value(const stele_label *l, size_t n, const char *name, char *buf,
                               size_t cap)
{
    buf[0] = '\0';
    for (size_t i = 0; i < n; i++)
        if (l[i].name_len == strlen(name) && memcmp(l[i].name, name, l[i].name_len) == 0)
            snprintf(buf, cap, "%.*s", (int)l[i].value_len, l[i].value);
    return buf;
}

/* ======================================================================================
 * 1. Property test
 * ====================================================================================== */

#define P_SERIES 6
#define P_SPAN (5 * HOUR)       /* appends cover [t0, t0 + P_SPAN) */
#define P_T0 (DAY0 + 21 * HOUR) /* three hours before a partition boundary */
#define P_OPS 48                /* random operations per seed */
#define P_ROUNDS 4              /* seeds per run */
#define P_NTIERS 2              /* 1m and 10m */
static const int64_t p_tiers[] = {MIN, 60 * DAY, 10 * MIN, 365 * DAY};
static const char *const p_kind[P_SERIES] = {"gauge",   "gauge", "counter",
                                             "counter", "gauge", "huge"};

typedef struct {
    store st;
    uint64_t seed, r;
    int op; /* the operation being done, for messages */
    const char *doing;
    model_series model[P_SERIES];
    int64_t cursor[P_SERIES];
    double level[P_SERIES];
    bool light; /* a sampled check rather than every query */
} prop;

static void p_labels(int i, stele_label l[3], char *sbuf)
{
    sbuf[0] = (char)('0' + i);
    sbuf[1] = '\0';
    /* The series near the float64 limit has its own name: an aggregation adding it to
     * the others would cancel at its scale, where 1e-9 of the result means nothing. */
    l[0] = (stele_label){.name = "__name__",
                         .name_len = 8,
                         .value = i == P_SERIES - 1 ? "big" : "m",
                         .value_len = i == P_SERIES - 1 ? 3 : 1};
    l[1] = (stele_label){.name = "kind",
                         .name_len = 4,
                         .value = p_kind[i],
                         .value_len = (uint32_t)strlen(p_kind[i])};
    l[2] = (stele_label){.name = "s", .name_len = 1, .value = sbuf, .value_len = 1};
}

typedef struct {
    int series;
    int64_t ts;
    double v;
} point;

/* Writes pts[0..n) in this order as one batch; the model applies them the same way.
 * Sometimes the batch also writes the same series under another tenant, with other
 * values, that no answer for tenant "t" may show. */
static void p_write(prop *p, const point *pts, size_t n)
{
    if (n == 0)
        return;
    stele_batch *b = NULL;
    bool other = test_rng_next(&p->r) % 4 == 0;
    assert_int_equal(stele_batch_create(&b), 0);
    for (size_t i = 0; i < n; i++) {
        stele_label l[3];
        char sbuf[2];
        p_labels(pts[i].series, l, sbuf);
        assert_int_equal(stele_batch_add(b, "t", l, 3, pts[i].ts, pts[i].v), 0);
        if (other)
            assert_int_equal(stele_batch_add(b, "u", l, 3, pts[i].ts, pts[i].v * 3 + 1), 0);
    }
    int rc = stele_tsdb_write(p->st.db, b);
    if (rc)
        fail_msg("seed %llu, op %d (%s): write of %zu points failed: %d",
                 (unsigned long long)p->seed, p->op, p->doing, n, rc);
    stele_batch_destroy(b);
    for (size_t i = 0; i < n; i++)
        model_put(&p->model[pts[i].series], pts[i].ts, pts[i].v);
}

static double p_value(prop *p, int i)
{
    uint64_t x = test_rng_next(&p->r);
    switch (i) {
    case 0: /* gauge: random walk through negative values, NaN now and then */
        p->level[i] += ((double)(x % 2001) - 1000) / 100;
        return (x >> 20) % 40 == 0 ? NAN : p->level[i];
    case 1: /* sparse gauge around zero */
        return -500 + (double)(x % 100000) / 100;
    case 2: /* counter with resets */
        p->level[i] += (double)(x % 50);
        if ((x >> 16) % 60 == 0)
            p->level[i] = (double)((x >> 24) % 10);
        return p->level[i];
    case 3: /* counter with fractional steps, resets and the odd NaN */
        p->level[i] += (double)(x % 1000) / 10;
        if ((x >> 16) % 40 == 0)
            p->level[i] = (double)((x >> 24) % 100) / 10;
        return (x >> 32) % 150 == 0 ? NAN : p->level[i];
    case 4: /* small integers: ties for min/max */
        return (double)(x % 6);
    default: /* near the float64 limit: sums from buckets fall back to raw data */
        return ((double)(x % 2001) - 1000) / 1000 * P_HUGE;
    }
}

static int64_t p_gap(prop *p, int i)
{
    uint64_t x = test_rng_next(&p->r);
    switch (i) {
    case 0: /* multiples of 5 s (so samples sit on bucket boundaries), rare long gaps */
        return 5 * NS * (int64_t)(1 + x % 12) +
               ((x >> 20) % 50 == 0 ? (int64_t)(15 + x % 26) * MIN : 0);
    case 1: /* sparse, millisecond timestamps, gaps up to an hour */
        return 30 * NS + (int64_t)(x % 270000) * MS +
               ((x >> 24) % 10 == 0 ? (int64_t)((x >> 32) % 60) * MIN : 0);
    case 2:
        return 10 * NS;
    case 3: /* irregular */
        return NS + (int64_t)(x % 44000) * MS;
    case 4:
        return 15 * NS;
    default:
        return 20 * NS;
    }
}

static void p_shuffle(prop *p, point *pts, size_t n)
{
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)(test_rng_next(&p->r) % i);
        point t = pts[i - 1];
        pts[i - 1] = pts[j];
        pts[j] = t;
    }
}

#define P_BATCH_MAX 512

/* Appends going forward on one to three series; sometimes reversed or shuffled. */
static void p_append(prop *p)
{
    point pts[P_BATCH_MAX];
    size_t n = 0;
    int nser = 1 + (int)(test_rng_next(&p->r) % 3);
    for (int s = 0; s < nser; s++) {
        int i = (int)(test_rng_next(&p->r) % P_SERIES);
        int k = 10 + (int)(test_rng_next(&p->r) % 60);
        for (int j = 0; j < k && n < P_BATCH_MAX && p->cursor[i] < P_T0 + P_SPAN; j++) {
            pts[n++] = (point){i, p->cursor[i], p_value(p, i)};
            p->cursor[i] += p_gap(p, i);
        }
    }
    uint64_t order = test_rng_next(&p->r) % 10;
    if (order < 2) { /* reversed */
        for (size_t a = 0, z = n; a + 1 < z; a++, z--) {
            point t = pts[a];
            pts[a] = pts[z - 1];
            pts[z - 1] = t;
        }
    } else if (order < 4) {
        p_shuffle(p, pts, n);
    }
    p_write(p, pts, n);
}

/* Points older than the newest of their series, often on bucket boundaries: they land in
 * buckets that may already be built. */
static void p_late(prop *p)
{
    point pts[32];
    int i = (int)(test_rng_next(&p->r) % P_SERIES);
    int64_t lo = P_T0 - 5 * MIN, hi = p->cursor[i];
    if (hi < P_T0 + 10 * MIN)
        hi = P_T0 + 10 * MIN;
    if (hi > P_T0 + P_SPAN)
        hi = P_T0 + P_SPAN; /* the clock accepts up to 10 minutes past the span */
    size_t n = 1 + (size_t)(test_rng_next(&p->r) % 15);
    for (size_t j = 0; j < n; j++) {
        uint64_t x = test_rng_next(&p->r);
        int64_t ts = lo + (int64_t)((x >> 8) % (uint64_t)((hi - lo) / MS)) * MS;
        if (x % 10 < 3)
            ts = align_down(ts, MIN);
        else if (x % 10 == 3)
            ts = align_down(ts, 10 * MIN);
        double v = p_value(p, i);
        if (!strcmp(p_kind[i], "counter") && !isnan(v))
            v = v * (double)((x >> 40) % 1000) / 1000;
        pts[j] = (point){i, ts, v};
    }
    p_write(p, pts, n);
}

/* New values for timestamps already written; sometimes the same one twice in a batch. */
static void p_rewrite(prop *p)
{
    point pts[32];
    size_t n = 0;
    int i = (int)(test_rng_next(&p->r) % P_SERIES);
    const model_series *m = &p->model[i];
    if (m->n == 0)
        return;
    size_t k = 1 + (size_t)(test_rng_next(&p->r) % 10);
    for (size_t j = 0; j < k && n + 2 <= 32; j++) {
        int64_t ts = m->ts[test_rng_next(&p->r) % m->n];
        pts[n++] = (point){i, ts, p_value(p, i)};
        if (test_rng_next(&p->r) % 5 == 0)
            pts[n++] = (point){i, ts, p_value(p, i)}; /* the later one wins */
    }
    p_write(p, pts, n);
}

/* ---- checks ------------------------------------------------------------------------ */

typedef struct {
    prop *p;
    int64_t mint, maxt;
    int seen[P_SERIES];
    int64_t resolution; /* of the tier whose buckets are checked */
} p_collect;

static int p_on_series(void *ctx, const stele_series_view *s)
{
    p_collect *c = ctx;
    char sb[8];
    int i = label_value(s->labels, s->nlabels, "s", sb, sizeof(sb))[0] - '0';
    assert_true(i >= 0 && i < P_SERIES);
    c->seen[i]++;
    const model_series *m = &c->p->model[i];
    size_t j = 0;
    while (j < m->n && m->ts[j] < c->mint)
        j++;
    size_t k = 0;
    for (; j < m->n && m->ts[j] <= c->maxt; j++, k++) {
        if (k >= s->n || s->ts[k] != m->ts[j] || !same_bits(s->values[k], m->v[j]))
            fail_msg("seed %llu, op %d: raw samples of series %d differ from what was written at "
                     "sample %zu: expected t=%lld v=%.17g, got %s t=%lld v=%.17g",
                     (unsigned long long)c->p->seed, c->p->op, i, k, (long long)(m->ts[j] - P_T0),
                     m->v[j], k >= s->n ? "nothing:" : "",
                     k < s->n ? (long long)(s->ts[k] - P_T0) : 0, k < s->n ? s->values[k] : 0.0);
    }
    if (k != s->n)
        fail_msg("seed %llu, op %d: series %d has %zu raw samples in range, %zu were written",
                 (unsigned long long)c->p->seed, c->p->op, i, s->n, k);
    return 0;
}

static int p_on_buckets(void *ctx, const stele_label *labels, size_t nlabels, const stele_bucket *b,
                        size_t n)
{
    p_collect *c = ctx;
    char sb[8];
    int i = label_value(labels, nlabels, "s", sb, sizeof(sb))[0] - '0';
    assert_true(i >= 0 && i < P_SERIES);
    c->seen[i]++;
    const model_series *m = &c->p->model[i];
    int64_t r = c->resolution, lo = align_down(c->mint, r);
    /* Expected: stele_buckets_build over everything written, buckets starting in
     * [floor(mint), maxt]. */
    size_t a = 0, z = 0;
    while (a < m->n && m->ts[a] < lo)
        a++;
    z = a;
    while (z < m->n && align_down(m->ts[z], r) <= c->maxt)
        z++;
    stele_bucket *want = malloc((z - a + 1) * sizeof(*want));
    size_t nw = stele_buckets_build(m->ts + a, m->v + a, z - a, r, want);
    char rn[16];
    stele_resolution_name(r, rn, sizeof(rn));
    for (size_t k = 0; k < nw || k < n; k++) {
        if (k >= nw || k >= n || !same_bucket(&want[k], &b[k]))
            fail_msg("seed %llu, op %d (%s): tier %s bucket %zu of series %d (range [%+llds, "
                     "%+llds]): expected start %+llds count %llu sum %.17g min %.17g max %.17g "
                     "last %.17g resets %.17g; got start %+llds count %llu sum %.17g min %.17g "
                     "max %.17g last %.17g resets %.17g",
                     (unsigned long long)c->p->seed, c->p->op, c->p->doing, rn, k, i,
                     (long long)((c->mint - P_T0) / NS), (long long)((c->maxt - P_T0) / NS),
                     k < nw ? (long long)((want[k].start - P_T0) / NS) : -1,
                     k < nw ? (unsigned long long)want[k].count : 0, k < nw ? want[k].sum : 0,
                     k < nw ? want[k].min : 0, k < nw ? want[k].max : 0, k < nw ? want[k].last : 0,
                     k < nw ? want[k].resets : 0,
                     k < n ? (long long)((b[k].start - P_T0) / NS) : -1,
                     k < n ? (unsigned long long)b[k].count : 0, k < n ? b[k].sum : 0,
                     k < n ? b[k].min : 0, k < n ? b[k].max : 0, k < n ? b[k].last : 0,
                     k < n ? b[k].resets : 0);
    }
    free(want);
    return 0;
}

static const stele_matcher p_all[] = {{"__name__", "m|big", STELE_MATCH_REGEX}};

/* Raw samples equal the model; every tier's buckets equal buckets built from the model. */
static void p_check_storage(prop *p)
{
    char err[256] = "";
    int64_t ranges[2][2] = {{P_T0 - DAY, P_T0 + 2 * DAY}, {0, 0}};
    int64_t a = P_T0 - 10 * MIN + (int64_t)(test_rng_next(&p->r) % (uint64_t)(P_SPAN / MS)) * MS;
    ranges[1][0] = a;
    ranges[1][1] = a + (int64_t)(test_rng_next(&p->r) % (uint64_t)(2 * HOUR / MS)) * MS;
    for (int k = 0; k < 2; k++) {
        p_collect c = {.p = p, .mint = ranges[k][0], .maxt = ranges[k][1]};
        assert_int_equal(stele_tsdb_select(p->st.db, "t", p_all, 1, c.mint, c.maxt, p_on_series, &c,
                                           err, sizeof(err)),
                         0);
        for (int i = 0; i < P_SERIES; i++) {
            const model_series *m = &p->model[i];
            bool any = false;
            for (size_t j = 0; j < m->n && !any; j++)
                any = m->ts[j] >= c.mint && m->ts[j] <= c.maxt;
            if (any && c.seen[i] != 1)
                fail_msg("seed %llu, op %d: series %d has samples in range but select called it "
                         "%d times",
                         (unsigned long long)p->seed, p->op, i, c.seen[i]);
        }
        for (size_t t = 1; t <= P_NTIERS; t++) {
            p_collect cb = {.p = p, .mint = ranges[k][0], .maxt = ranges[k][1]};
            cb.resolution = p_tiers[2 * (t - 1)];
            assert_int_equal(stele_tsdb_select_buckets(p->st.db, "t", p_all, 1, t, cb.mint, cb.maxt,
                                                       p_on_buckets, &cb, err, sizeof(err)),
                             0);
            /* A series with samples in range must have come with its buckets. */
            for (int i = 0; i < P_SERIES; i++) {
                const model_series *m = &p->model[i];
                bool any = false;
                for (size_t j = 0; j < m->n && !any; j++)
                    any =
                        align_down(m->ts[j], cb.resolution) >= align_down(cb.mint, cb.resolution) &&
                        align_down(m->ts[j], cb.resolution) <= cb.maxt;
                if (any != (cb.seen[i] == 1))
                    fail_msg("seed %llu, op %d: tier %zu: series %d %s buckets in range but was "
                             "called %d times",
                             (unsigned long long)p->seed, p->op, t, i, any ? "has" : "has no",
                             cb.seen[i]);
            }
        }
    }
}

/* Query shapes: {R} is replaced by a range, {O} by an offset, both multiples of the tier's
 * resolution under test. tier: whether a tier can answer it (plan.c). */
typedef struct {
    const char *q;
    bool tier;
} p_query;

static const p_query p_queries[] = {
    {"min_over_time(m[{R}])", true},
    {"max_over_time(m[{R}])", true},
    {"sum_over_time(m[{R}])", true},
    {"count_over_time(m[{R}])", true},
    {"avg_over_time(m[{R}])", true},
    {"last_over_time(m[{R}])", true},
    {"increase(m[{R}])", true},
    {"rate(m[{R}])", true},
    {"delta(m[{R}])", true},
    {"max_over_time(m[{R}] offset {O})", true},
    {"rate(m{kind=\"counter\"}[{R}] offset {O})", true},
    {"last_over_time(m[{R}] offset {O})", true},
    {"sum_over_time(m{kind=\"gauge\"}[{R}] offset {O})", true},
    {"increase(m[{R}] offset {O})", true},
    {"m", true},
    {"m offset {O}", true},
    {"m{kind=\"counter\"}", true},
    {"sum by (kind) (rate(m[{R}]))", true},
    {"max(max_over_time(m[{R}]))", true},
    {"sum(m)", true},
    {"max by (kind) (m offset {O})", true},
    {"count(count_over_time(m[{R}]))", true},
    {"avg by (kind) (avg_over_time(m[{R}]))", true},
    {"topk(2, last_over_time(m[{R}]))", true},
    {"min without (s) (increase(m[{R}]))", true},
    {"max_over_time(m[{R}]) - min_over_time(m[{R}])", true},
    {"increase(m{kind=\"counter\"}[{R}]) / 2", true},
    {"sum_over_time(m[{R}]) / count_over_time(m[{R}])", true},
    {"m > 0", true},
    {"last_over_time(m[{R}]) - m", true},
    {"-delta(m[{R}])", true},
    {"abs(delta(m[{R}] offset {O}))", true},
    {"clamp_max(m, 100)", true},
    /* Discontinuous functions only over exact values: raw avg_over_time is an incremental
     * mean and the tier's sum / count, equal to 1e-9 but not bit for bit, so
     * round(avg_over_time(…)) can differ by 1 at a .5 (reported; a spec question). The
     * threshold below is one no rate here meets exactly. */
    {"round(max_over_time(m[{R}]) / 7)", true},
    {"rate(m[{R}]) > bool 0.123456789", true},
    {"max_over_time(m[{R}]) and m > 10", true},
    {"sum(rate(m[{R}])) * 60", true},
    {"sum_over_time(big[{R}])", true},
    {"avg_over_time(big[{R}] offset {O})", true},
    {"sum_over_time(big[{R}]) / count_over_time(big[{R}])", true},
    {"rate(big[{R}])", true},
    {"max_over_time(big[{R}]) - min_over_time(big[{R}])", true},
    {"irate(m[{R}])", false},
    {"idelta(m[{R}])", false},
    {"max_over_time(m[{R}]) + irate(m[{R}])", false},
};

static void p_expand(const char *tmpl, int64_t range, int64_t offset, char *out, size_t cap)
{
    size_t n = 0;
    for (const char *s = tmpl; *s && n + 24 < cap;) {
        if (s[0] == '{' && (s[1] == 'R' || s[1] == 'O') && s[2] == '}') {
            n += (size_t)snprintf(out + n, cap - n, "%llds",
                                  (long long)((s[1] == 'R' ? range : offset) / NS));
            s += 3;
        } else {
            out[n++] = *s++;
        }
    }
    out[n] = '\0';
}

/* What automatic planning must pick: the coarsest tier whose resolution divides every
 * range, the step and every evaluation time after its offset (start − offset); else raw. */
static int64_t p_expected_auto(const p_query *pq, int64_t range, int64_t offset, int64_t start,
                               int64_t step)
{
    if (!pq->tier)
        return 0;
    int64_t at = start - (strstr(pq->q, "{O}") ? offset : 0);
    for (size_t t = P_NTIERS; t-- > 0;) {
        int64_t r = p_tiers[2 * t];
        if ((!strstr(pq->q, "{R}") || range % r == 0) && at % r == 0 && step % r == 0)
            return r;
    }
    return 0;
}

static void p_fail_answer(prop *p, const char *q, int64_t start, int64_t end, int64_t step,
                          bool range, int64_t resolution, const char *what)
{
    char rn[16];
    if (range)
        fail_msg("seed %llu, op %d (%s): %s, range query start %+llds end %+llds step %llds "
                 "(seconds from t0=%lld), resolution=%s: %s",
                 (unsigned long long)p->seed, p->op, p->doing, q, (long long)((start - P_T0) / NS),
                 (long long)((end - P_T0) / NS), (long long)(step / NS), (long long)(P_T0 / NS),
                 res_name(resolution, rn, sizeof(rn)), what);
    else
        fail_msg("seed %llu, op %d (%s): %s, instant query at %+llds (seconds from t0=%lld), "
                 "resolution=%s: %s",
                 (unsigned long long)p->seed, p->op, p->doing, q, (long long)((start - P_T0) / NS),
                 (long long)(P_T0 / NS), res_name(resolution, rn, sizeof(rn)), what);
}

/* Forced tier, forced raw and automatic answers of one query at one (start, step). */
static void p_compare(prop *p, const p_query *pq, const char *q, int64_t r, int64_t range,
                      int64_t offset, int64_t start, int64_t end, int64_t step, bool is_range,
                      answer *raw, answer *tier, answer *autom)
{
    char why[512];
    ask(p->st.db, q, start, end, step, is_range, STELE_RESOLUTION_RAW, raw);
    if (raw->rc)
        p_fail_answer(p, q, start, end, step, is_range, 0, raw->err.message);
    ask(p->st.db, q, start, end, step, is_range, r, tier);
    if (pq->tier) {
        if (tier->rc)
            p_fail_answer(p, q, start, end, step, is_range, r, tier->err.message);
        if (tier->stats.resolution_ns != r)
            p_fail_answer(p, q, start, end, step, is_range, r, "stats name another resolution");
        if (!rows_equal(&raw->rows, &tier->rows, why, sizeof(why))) {
            char msg[700];
            snprintf(msg, sizeof(msg), "differs from raw: %s", why);
            p_fail_answer(p, q, start, end, step, is_range, r, msg);
        }
    } else if (tier->rc == 0 || tier->err.kind != STELE_QERR_BAD_DATA) {
        p_fail_answer(p, q, start, end, step, is_range, r,
                      "a tier cannot answer this exactly, yet it was not refused as bad data");
    }
    ask(p->st.db, q, start, end, step, is_range, STELE_RESOLUTION_AUTO, autom);
    if (autom->rc)
        p_fail_answer(p, q, start, end, step, is_range, STELE_RESOLUTION_AUTO, autom->err.message);
    int64_t want = p_expected_auto(pq, range, offset, start, is_range ? step : 0);
    if (autom->stats.resolution_ns != want) {
        char msg[128], a[16], b[16];
        snprintf(msg, sizeof(msg), "planned at %s, expected the coarsest exact one, %s",
                 res_name(autom->stats.resolution_ns, a, sizeof(a)), res_name(want, b, sizeof(b)));
        p_fail_answer(p, q, start, end, step, is_range, STELE_RESOLUTION_AUTO, msg);
    }
    if (!rows_equal(&raw->rows, &autom->rows, why, sizeof(why))) {
        char msg[700];
        snprintf(msg, sizeof(msg), "differs from raw: %s", why);
        p_fail_answer(p, q, start, end, step, is_range, STELE_RESOLUTION_AUTO, msg);
    }
}

/* A forced tier must refuse this query as bad data, saying it cannot answer exactly. */
static void p_refuse(prop *p, const char *q, int64_t start, int64_t end, int64_t step, bool range,
                     int64_t resolution, const char *fragment, answer *a)
{
    ask(p->st.db, q, start, end, step, range, resolution, a);
    if (a->rc == 0 || a->err.kind != STELE_QERR_BAD_DATA || !strstr(a->err.message, fragment)) {
        char msg[700];
        snprintf(msg, sizeof(msg),
                 "expected a bad-data error mentioning \"%s\", got rc %d kind %d: %s", fragment,
                 a->rc, (int)a->err.kind, a->rc ? a->err.message : "an answer");
        p_fail_answer(p, q, start, end, step, range, resolution, msg);
    }
    /* Automatic planning answers it from raw data. */
    ask(p->st.db, q, start, end, step, range, STELE_RESOLUTION_AUTO, a);
    if (a->rc != 0)
        p_fail_answer(p, q, start, end, step, range, STELE_RESOLUTION_AUTO, a->err.message);
}

static void p_check_queries(prop *p)
{
    answer raw = {0}, tier = {0}, autom = {0};
    char q[256];
    int64_t last = P_T0 + P_SPAN + 15 * MIN;
    for (size_t t = 0; t < P_NTIERS; t++) {
        int64_t r = p_tiers[2 * t];
        int64_t ranges[3] = {r, 3 * r, t == 0 ? 10 * r : 0};
        for (size_t k = 0; k < sizeof(p_queries) / sizeof(p_queries[0]); k++) {
            const p_query *pq = &p_queries[k];
            for (int ri = 0; ri < 3 && ranges[ri]; ri++) {
                if (ri > 0 && !strstr(pq->q, "{R}"))
                    break;
                if (p->light && test_rng_next(&p->r) % 8 != 0)
                    continue;
                int64_t range = ranges[ri], offset = r * (int64_t)(1 + test_rng_next(&p->r) % 2);
                p_expand(pq->q, range, offset, q, sizeof(q));
                /* Range queries: start on the resolution (for 1m sometimes also on 10m),
                 * step the resolution and a multiple of it. */
                for (int combo = 0; combo < 2; combo++) {
                    int64_t step = combo == 0 ? r : r * (int64_t)(2 + test_rng_next(&p->r) % 5);
                    int64_t start =
                        align_down(P_T0 - 10 * MIN, r) + r * (int64_t)(test_rng_next(&p->r) % 12);
                    int64_t end = start + (last - start) / step * step + step;
                    p_compare(p, pq, q, r, range, offset, start, end, step, true, &raw, &tier,
                              &autom);
                }
                /* Instant queries at times on the resolution. */
                for (int inst = 0; inst < 2; inst++) {
                    int64_t at = align_down(P_T0 + (int64_t)(test_rng_next(&p->r) %
                                                             (uint64_t)((P_SPAN + 20 * MIN) / NS)) *
                                                       NS,
                                            r);
                    p_compare(p, pq, q, r, range, offset, at, at, 0, false, &raw, &tier, &autom);
                }
                /* An offset of half the resolution with a start just as far past a
                 * boundary: the evaluation times after the offset are aligned, so a tier
                 * answers. */
                if (strstr(pq->q, "{O}")) {
                    int64_t half = r / 2, step = r * (int64_t)(1 + test_rng_next(&p->r) % 3);
                    int64_t start = align_down(P_T0, r) + half;
                    p_expand(pq->q, range, half, q, sizeof(q));
                    p_compare(p, pq, q, r, range, half, start, start + (last - start) / step * step,
                              step, true, &raw, &tier, &autom);
                    p_compare(p, pq, q, r, range, half, start + 7 * r, start + 7 * r, 0, false,
                              &raw, &tier, &autom);
                }
            }
        }
        /* What a forced tier must refuse. */
        int64_t start = align_down(P_T0, r), end = start + P_SPAN, step = r;
        const char *exact = "cannot answer this query exactly";
        snprintf(q, sizeof(q), "max_over_time(m[%llds])", (long long)(r / NS + r / NS / 2));
        p_refuse(p, q, start, end, step, true, r, exact, &tier); /* range not a multiple */
        snprintf(q, sizeof(q), "rate(m[%llds])", (long long)(r / NS));
        p_refuse(p, q, start + 30 * NS, end, step, true, r, exact, &tier); /* unaligned start */
        p_refuse(p, q, start, end, step + 30 * NS, true, r, exact, &tier); /* step */
        p_refuse(p, q, start + 30 * NS, start, 0, false, r, exact, &tier); /* unaligned instant */
        snprintf(q, sizeof(q), "m offset %llds", (long long)(r / NS / 2));
        p_refuse(p, q, start, end, step, true, r, exact, &tier); /* offset not a multiple */
        snprintf(q, sizeof(q), "irate(m[%llds])", (long long)(3 * r / NS));
        p_refuse(p, q, start, end, step, true, r, exact, &tier);
        snprintf(q, sizeof(q), "m[%llds]", (long long)(r / NS));
        p_refuse(p, q, start, start, 0, false, r, exact, &tier); /* raw samples asked for */
    }
    p_refuse(p, "rate(m[10m])", align_down(P_T0, HOUR), align_down(P_T0, HOUR) + P_SPAN, 5 * MIN,
             true, 5 * MIN, "no tier with that resolution", &tier);
    free(raw.rows.r);
    free(tier.rows.r);
    free(autom.rows.r);
}

static void p_check(prop *p, bool light, const char *why)
{
    const char *was = p->doing;
    p->light = light;
    p->doing = why;
    p_check_storage(p);
    p_check_queries(p);
    p->doing = was;
}

static void p_round(uint64_t seed)
{
    prop *p = calloc(1, sizeof(*p));
    assert_non_null(p);
    p->seed = seed;
    p->r = seed;
    store_init(&p->st, seed, 30 * DAY, P_NTIERS, p_tiers, P_T0 + P_SPAN + 10 * MIN);
    p->st.o.compact_min_blocks = 2 + (uint32_t)(test_rng_next(&p->r) % 3);
    store_reopen(&p->st);
    for (int i = 0; i < P_SERIES; i++)
        p->cursor[i] = P_T0 + (int64_t)(test_rng_next(&p->r) % 60) * NS + (i == 1 ? 30 * MIN : 0);
    p->doing = "start";
    for (p->op = 0; p->op < P_OPS; p->op++) {
        uint64_t x = test_rng_next(&p->r) % 100;
        /* The overlay paths on purpose: data only in the head, then only in unbuilt
         * blocks, early on. */
        if (p->op == 3) {
            p->doing = "head only";
            p_check(p, true, "data only in the head");
            continue;
        }
        if (p->op == 5) {
            p->doing = "flush";
            assert_int_equal(stele_tsdb_flush(p->st.db), 0);
            p_check(p, true, "flushed, tiers not built");
            continue;
        }
        if (x < 35) {
            p->doing = "append";
            p_append(p);
        } else if (x < 50) {
            p->doing = "late points";
            p_late(p);
        } else if (x < 58) {
            p->doing = "rewrite";
            p_rewrite(p);
        } else if (x < 67) {
            p->doing = "flush";
            assert_int_equal(stele_tsdb_flush(p->st.db), 0);
        } else if (x < 75) {
            p->doing = "build tiers";
            assert_int_equal(stele_tsdb_build_tiers(p->st.db), 0);
        } else if (x < 82) {
            p->doing = "maintain";
            assert_int_equal(stele_tsdb_maintain(p->st.db), 0);
        } else if (x < 87) {
            p->doing = "reopen";
            store_reopen(&p->st);
        } else if (x < 89) {
            p->doing = "clock jump";
            p->st.now = P_T0 + 3 * DAY; /* every partition cold: compaction merges whole */
        } else {
            p->doing = "check";
            p_check(p, true, "random point");
        }
    }
    /* Late points into built buckets, seen from the head, from an unbuilt block, then
     * from the rebuilt tiers. */
    p->doing = "late after build";
    assert_int_equal(stele_tsdb_flush(p->st.db), 0);
    assert_int_equal(stele_tsdb_maintain(p->st.db), 0);
    p_late(p);
    p_late(p);
    p_rewrite(p);
    p_check(p, true, "late points in the head over built buckets");
    assert_int_equal(stele_tsdb_flush(p->st.db), 0);
    p_check(p, test_rng_next(&p->r) % 2, "late points flushed, not built");
    assert_int_equal(stele_tsdb_build_tiers(p->st.db), 0);
    p_check(p, false, "all built");
    store_reopen(&p->st);
    p_check(p, true, "reopened");
    store_fini(&p->st);
    for (int i = 0; i < P_SERIES; i++)
        model_free(&p->model[i]);
    free(p);
}

static void test_tiers_answer_as_raw(void **state)
{
    (void)state;
    const char *env = getenv("STELE_TEST_SEED");
    uint64_t seed0 = env ? strtoull(env, NULL, 10) : (uint64_t)time(NULL);
    for (uint64_t round = 0; round < P_ROUNDS; round++) {
        print_message("test_tiers_answer_as_raw: seed %llu\n", (unsigned long long)(seed0 + round));
        p_round(seed0 + round);
    }
}

/* ======================================================================================
 * 2 and 3. Time passing: raw data and tiers past their retention
 * ====================================================================================== */

#define X_T0 DAY0
#define X_HOURS (5 * 24)

/* Two series written hour by hour as time passes: x{s="c"} a counter with resets,
 * x{s="g"} a gauge with negative values and NaN. */
typedef struct {
    store st;
    uint64_t r;
    model_series model[2]; /* 0: "c", 1: "g" */
    double counter, gauge;
} timeline;

static void x_add(timeline *tl, stele_batch *b, int i, int64_t ts, double v)
{
    stele_label l[2] = {{.name = "__name__", .name_len = 8, .value = "x", .value_len = 1},
                        {.name = "s", .name_len = 1, .value = i ? "g" : "c", .value_len = 1}};
    assert_int_equal(stele_batch_add(b, "t", l, 2, ts, v), 0);
    model_put(&tl->model[i], ts, v);
}

/* Hour h: the gauge every 30 s (every fourth exactly on its mark, so on whole minutes
 * and hours, the rest with millisecond jitter), the counter every 20 s, plus late points strictly
 * inside hour h − 1 (so a step at the start of an hour, once captured, never changes). The clock is
 * at the end of the hour. */
static void x_write_hour(timeline *tl, int h)
{
    int64_t base = X_T0 + h * HOUR;
    stele_batch *b = NULL;
    assert_int_equal(stele_batch_create(&b), 0);
    tl->st.now = base + HOUR;
    for (int k = 0; k < 120; k++) {
        uint64_t x = test_rng_next(&tl->r);
        tl->gauge += ((double)(x % 2001) - 1000) / 100;
        int64_t ts = base + k * 30 * NS + (k % 4 ? (int64_t)((x >> 16) % 20000) * MS : 0);
        x_add(tl, b, 1, ts, (x >> 40) % 100 == 0 ? NAN : tl->gauge);
    }
    for (int k = 0; k < 180; k++) {
        uint64_t x = test_rng_next(&tl->r);
        tl->counter += (double)(x % 10);
        if ((x >> 20) % 200 == 0)
            tl->counter = (double)((x >> 30) % 5);
        x_add(tl, b, 0, base + k * 20 * NS, tl->counter);
    }
    if (h > 0) {
        for (int k = 0; k < 3; k++) {
            uint64_t x = test_rng_next(&tl->r);
            int64_t ts = base - HOUR + MS + (int64_t)(x % (uint64_t)((HOUR - 2 * MS) / MS)) * MS;
            x_add(tl, b, (int)(x >> 60) & 1, ts, ((double)((x >> 20) % 2001) - 1000) / 10);
        }
    }
    int rc = stele_tsdb_write(tl->st.db, b);
    if (rc)
        fail_msg("hour %d: write failed: %d", h, rc);
    stele_batch_destroy(b);
}

/* Appends the raw answer of an instant query at t to into. */
static void x_capture(timeline *tl, const char *q, int64_t t, rows *into)
{
    answer a = {0};
    ask(tl->st.db, q, t, t, 0, false, STELE_RESOLUTION_RAW, &a);
    if (a.rc)
        fail_msg("%s at %+llds from t0: raw answer failed: %s", q, (long long)((t - X_T0) / NS),
                 a.err.message);
    for (size_t i = 0; i < a.rows.n; i++)
        rows_add(into, a.rows.r[i].metric, strlen(a.rows.r[i].metric), a.rows.r[i].t_ms,
                 a.rows.r[i].v);
    free(a.rows.r);
}

/* A range query answered automatically must give the captured raw answers. */
static void x_expect_same(timeline *tl, const char *q, int64_t start, int64_t end, int64_t step,
                          rows *captured, int64_t want_resolution, const char *when)
{
    answer a = {0};
    char why[512], rn[16], wn[16];
    rows_sort(captured);
    rows want = *captured;
    want.r = malloc((captured->n + 1) * sizeof(row));
    memcpy(want.r, captured->r, captured->n * sizeof(row));
    want.n = captured->n;
    rows_keep(&want, start, end);
    ask(tl->st.db, q, start, end, step, true, STELE_RESOLUTION_AUTO, &a);
    if (a.rc)
        fail_msg("%s: %s [%+llds, %+llds] step %llds from t0: %s", when, q,
                 (long long)((start - X_T0) / NS), (long long)((end - X_T0) / NS),
                 (long long)(step / NS), a.err.message);
    if (a.stats.resolution_ns != want_resolution)
        fail_msg("%s: %s answered at %s, expected %s", when, q,
                 res_name(a.stats.resolution_ns, rn, sizeof(rn)),
                 res_name(want_resolution, wn, sizeof(wn)));
    if (want.n == 0)
        fail_msg("%s: %s: nothing was captured to compare with", when, q);
    if (!rows_equal(&want, &a.rows, why, sizeof(why)))
        fail_msg("%s: %s [%+llds, %+llds] step %llds from t0 (t0 = %lld s) differs from the "
                 "answer raw data gave before it expired: %s",
                 when, q, (long long)((start - X_T0) / NS), (long long)((end - X_T0) / NS),
                 (long long)(step / NS), (long long)(X_T0 / NS), why);
    free(want.r);
    free(a.rows.r);
}

/* The query must be refused as bad data with a message holding every fragment (and
 * none of the `absent` ones). */
static void x_expect_refused(timeline *tl, const char *q, int64_t start, int64_t end, int64_t step,
                             bool range, int64_t resolution, const char *const *fragments,
                             const char *const *absent, const char *when)
{
    answer a = {0};
    char rn[16];
    ask(tl->st.db, q, start, end, step, range, resolution, &a);
    if (a.rc == 0)
        fail_msg("%s: %s at %+llds from t0, resolution=%s: expected a refusal, got an answer with "
                 "%zu values (planned at %lld ns)",
                 when, q, (long long)((start - X_T0) / NS), res_name(resolution, rn, sizeof(rn)),
                 a.rows.n, (long long)a.stats.resolution_ns);
    if (a.err.kind != STELE_QERR_BAD_DATA)
        fail_msg("%s: %s, resolution=%s: expected a bad-data error, got kind %d: %s", when, q,
                 res_name(resolution, rn, sizeof(rn)), (int)a.err.kind, a.err.message);
    for (size_t i = 0; fragments && fragments[i]; i++)
        if (!strstr(a.err.message, fragments[i]))
            fail_msg("%s: %s, resolution=%s: the error should mention \"%s\": %s", when, q,
                     res_name(resolution, rn, sizeof(rn)), fragments[i], a.err.message);
    for (size_t i = 0; absent && absent[i]; i++)
        if (strstr(a.err.message, absent[i]))
            fail_msg("%s: %s, resolution=%s: the error should not mention \"%s\": %s", when, q,
                     res_name(resolution, rn, sizeof(rn)), absent[i], a.err.message);
    free(a.rows.r);
}

static void timeline_fini(timeline *tl)
{
    store_fini(&tl->st);
    model_free(&tl->model[0]);
    model_free(&tl->model[1]);
}

/* --- 2. raw data past its retention ------------------------------------------------- */

enum { XQ_MAX1H, XQ_AVG1D, XQ_RATE1H, XQ_SELECTOR, XQ_MAX7M, XQ_N };
static const struct {
    const char *q;
    int64_t step;
    int64_t resolution; /* what automatic planning answers it from */
} xq[XQ_N] = {
    {"max_over_time(x[1h])", HOUR, HOUR},
    {"avg_over_time(x[1d])", DAY, HOUR},
    {"rate(x[1h])", HOUR, HOUR},
    {"x", HOUR, HOUR},
    /* 7m is a multiple of 1m: the 1m tier answers it exactly. */
    {"max_over_time(x[7m])", HOUR, MIN},
};

/* Index of the first sample after t. */
static size_t model_after(const model_series *m, int64_t t)
{
    size_t lo = 0, hi = m->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (m->ts[mid] <= t)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* The latest sample of series i in [t − 5m, t] (Prometheus' lookback). */
static bool model_instant(const model_series *m, int64_t t, double *v)
{
    size_t j = model_after(m, t);
    if (j == 0 || m->ts[j - 1] < t - 5 * MIN)
        return false;
    *v = m->v[j - 1];
    return true;
}

/* max_over_time over [t − range, t]: NaN only when every sample is NaN. */
static bool model_max(const model_series *m, int64_t t, int64_t range, double *v)
{
    bool any = false;
    double best = NAN;
    for (size_t j = model_after(m, t); j-- > 0 && m->ts[j] >= t - range;) {
        any = true;
        if (isnan(best) || m->v[j] > best)
            best = m->v[j];
    }
    *v = best;
    return any;
}

/* Checks answers at unaligned times in unexpired raw data against the model. */
static void x_check_unaligned_raw(timeline *tl, const char *when)
{
    int64_t start = tl->st.now - DAY + 17 * NS, end = tl->st.now - 10 * MIN, step = 37 * NS;
    static const char *const qs[] = {"irate(x[5m])", "max_over_time(x[90s])", "x",
                                     "max_over_time(x[1h])"};
    for (size_t k = 0; k < sizeof(qs) / sizeof(qs[0]); k++) {
        answer a = {0};
        ask(tl->st.db, qs[k], start, end, step, true, STELE_RESOLUTION_AUTO, &a);
        if (a.rc)
            fail_msg("%s: %s within unexpired raw data at an unaligned start: %s", when, qs[k],
                     a.err.message);
        if (a.stats.resolution_ns != 0 || a.rows.n == 0)
            fail_msg("%s: %s within unexpired raw data: planned at %lld ns with %zu values, "
                     "expected raw with values",
                     when, qs[k], (long long)a.stats.resolution_ns, a.rows.n);
        if (k == 0) {
            free(a.rows.r);
            continue;
        }
        /* The selector and max_over_time against the model, step by step. */
        rows want = {0};
        for (int64_t t = start; t <= end; t += step) {
            for (int i = 0; i < 2; i++) {
                double v;
                bool has = k == 2 ? model_instant(&tl->model[i], t, &v)
                                  : model_max(&tl->model[i], t, k == 1 ? 90 * NS : HOUR, &v);
                if (!has)
                    continue;
                const char *metric = k == 2 ? (i ? "{\"__name__\":\"x\",\"s\":\"g\"}"
                                                 : "{\"__name__\":\"x\",\"s\":\"c\"}")
                                            : (i ? "{\"s\":\"g\"}" : "{\"s\":\"c\"}");
                rows_add(&want, metric, strlen(metric), t / MS, v);
            }
        }
        rows_sort(&want);
        char why[512];
        if (!rows_equal(&want, &a.rows, why, sizeof(why)))
            fail_msg("%s: %s within unexpired raw data, start %+llds step 37s: differs from what "
                     "was written: %s",
                     when, qs[k], (long long)((start - X_T0) / NS), why);
        free(want.r);
        free(a.rows.r);
    }
    /* Aligned and answerable there: the tier and raw data agree. */
    answer tier = {0}, raw = {0};
    char why[512];
    int64_t s = align_down(tl->st.now - DAY, HOUR), e = tl->st.now - HOUR;
    ask(tl->st.db, "rate(x[1h])", s, e, HOUR, true, STELE_RESOLUTION_AUTO, &tier);
    ask(tl->st.db, "rate(x[1h])", s, e, HOUR, true, STELE_RESOLUTION_RAW, &raw);
    if (tier.rc || raw.rc || tier.stats.resolution_ns != HOUR)
        fail_msg("%s: rate(x[1h]) within unexpired raw data: auto rc %d at %lld ns (%s), raw rc "
                 "%d (%s)",
                 when, tier.rc, (long long)tier.stats.resolution_ns, tier.err.message, raw.rc,
                 raw.err.message);
    if (!rows_equal(&raw.rows, &tier.rows, why, sizeof(why)))
        fail_msg("%s: rate(x[1h]) within unexpired raw data, 1h tier vs raw: %s", when, why);
    free(tier.rows.r);
    free(raw.rows.r);
}

static void x_check_expired(timeline *tl, rows *captured, const char *when)
{
    int64_t last = X_T0 + (X_HOURS - 1) * HOUR;
    /* (a) answerable: the answers raw data gave before it expired. */
    for (int k = 0; k < XQ_N; k++)
        x_expect_same(tl, xq[k].q, X_T0, k == XQ_AVG1D ? X_T0 + 4 * DAY : last, xq[k].step,
                      &captured[k], xq[k].resolution, when);
    /* (b) not answerable over the expired range: refused, naming what can be asked. */
    int64_t s = X_T0 + 2 * HOUR, e = X_T0 + 10 * HOUR;
    static const char *const needs_raw[] = {"needs raw samples",
                                            "expired",
                                            "Answerable from tier 1m; tier 1h",
                                            "max_over_time",
                                            "rate",
                                            "plain selectors",
                                            "multiples of the tier's resolution",
                                            NULL};
    x_expect_refused(tl, "irate(x[5m])", s, e, HOUR, true, STELE_RESOLUTION_AUTO, needs_raw, NULL,
                     when);
    x_expect_refused(tl, "max_over_time(x[90s])", s, e, HOUR, true, STELE_RESOLUTION_AUTO,
                     needs_raw, NULL, when);
    x_expect_refused(tl, "max_over_time(x[1h])", s + 30 * NS, e, HOUR, true, STELE_RESOLUTION_AUTO,
                     needs_raw, NULL, when);
    x_expect_refused(tl, "x[5m]", s, s, 0, false, STELE_RESOLUTION_AUTO, needs_raw, NULL, when);
    static const char *const raw_forced[] = {"resolution=raw cannot answer", "expired",
                                             "Answerable from tier 1m; tier 1h", NULL};
    x_expect_refused(tl, "max_over_time(x[1h])", s, e, HOUR, true, STELE_RESOLUTION_RAW, raw_forced,
                     NULL, when);
    static const char *const inexact[] = {"tier 1h cannot answer this query exactly", NULL};
    x_expect_refused(tl, "max_over_time(x[7m])", s, e, HOUR, true, HOUR, inexact, NULL, when);
    /* (c) within unexpired raw data: any alignment. */
    x_check_unaligned_raw(tl, when);
}

static void test_raw_expiry(void **state)
{
    (void)state;
    static const int64_t tiers[] = {MIN, 30 * DAY, HOUR, 365 * DAY};
    timeline *tl = calloc(1, sizeof(*tl));
    rows captured[XQ_N] = {{0}};
    assert_non_null(tl);
    tl->r = 4242;
    store_init(&tl->st, 7, 2 * DAY, 2, tiers, X_T0 + HOUR);
    stele_tier_info info[STELE_MAX_TIERS + 1];
    for (int h = 0; h < X_HOURS; h++) {
        x_write_hour(tl, h);
        /* Steps at the start of hour h are final now: capture them from raw data. */
        int64_t t = X_T0 + h * HOUR;
        for (int k = 0; k < XQ_N; k++)
            if (t % xq[k].step == 0)
                x_capture(tl, xq[k].q, t, &captured[k]);
        if (h % 3 == 2)
            assert_int_equal(stele_tsdb_flush(tl->st.db), 0);
        if (h % 6 == 5)
            assert_int_equal(stele_tsdb_maintain(tl->st.db), 0);
        if (h == 24) {
            stele_tsdb_tiers(tl->st.db, info);
            assert_true(info[0].expired_before == INT64_MIN); /* nothing old enough yet */
        }
    }
    assert_int_equal(stele_tsdb_flush(tl->st.db), 0);
    assert_int_equal(stele_tsdb_maintain(tl->st.db), 0);

    size_t n = stele_tsdb_tiers(tl->st.db, info);
    assert_int_equal(n, 3);
    int64_t expired = info[0].expired_before;
    if (expired == INT64_MIN || expired <= X_T0 + DAY || expired > tl->st.now - 2 * DAY)
        fail_msg("raw expired_before should have moved to within (t0 + 1d, now − 2d]: %+lld s from "
                 "t0",
                 expired == INT64_MIN ? (long long)INT64_MIN : (long long)((expired - X_T0) / NS));
    assert_true(info[1].expired_before == INT64_MIN && info[2].expired_before == INT64_MIN);
    stele_tsdb_stats st;
    stele_tsdb_get_stats(tl->st.db, &st);
    assert_true(st.retention_drops > 0);

    x_check_expired(tl, captured, "after raw expiry");
    /* (d) durable: the same after a reopen. */
    store_reopen(&tl->st);
    stele_tsdb_tiers(tl->st.db, info);
    if (info[0].expired_before != expired)
        fail_msg("after reopen, raw expired_before is %lld, was %lld",
                 (long long)info[0].expired_before, (long long)expired);
    x_check_expired(tl, captured, "after raw expiry and a reopen");
    /* And after more maintenance (compaction of what is left) an hour later. */
    tl->st.now += HOUR;
    assert_int_equal(stele_tsdb_maintain(tl->st.db), 0);
    x_check_expired(tl, captured, "after raw expiry, a reopen and maintenance");

    /* (e) Late points at the oldest time still accepted land in buckets whose raw data is
     * complete: the rebuilt buckets answer as raw data does. Older ones are refused. */
    int64_t min_ts, max_ts;
    stele_tsdb_time_bounds(tl->st.db, &min_ts, &max_ts);
    assert_true(min_ts % HOUR == 0 && min_ts >= tl->st.now - 2 * DAY);
    stele_batch *b = NULL;
    assert_int_equal(stele_batch_create(&b), 0);
    stele_label old[2] = {{.name = "__name__", .name_len = 8, .value = "x", .value_len = 1},
                          {.name = "s", .name_len = 1, .value = "g", .value_len = 1}};
    assert_int_equal(stele_batch_add(b, "t", old, 2, min_ts - 1, 1e6), 0); /* not in the model */
    assert_int_equal(stele_tsdb_write(tl->st.db, b), -ERANGE);
    stele_batch_reset(b);
    x_add(tl, b, 1, min_ts, 1e6);             /* a new maximum on the bucket's edge */
    x_add(tl, b, 0, min_ts + 30 * MIN, 0);    /* a counter reset */
    x_add(tl, b, 1, min_ts + 59 * MIN, -1e6); /* a new minimum */
    x_add(tl, b, 0, min_ts + 2 * HOUR, 1e5);  /* and a jump */
    assert_int_equal(stele_tsdb_write(tl->st.db, b), 0);
    stele_batch_destroy(b);
    static const char *const late_qs[] = {"max_over_time(x[1h])", "min_over_time(x[1h])",
                                          "rate(x[1h])", "avg_over_time(x[2h])", "x"};
    for (int pass = 0; pass < 3; pass++) {
        if (pass == 1)
            assert_int_equal(stele_tsdb_flush(tl->st.db), 0);
        if (pass == 2)
            assert_int_equal(stele_tsdb_maintain(tl->st.db), 0);
        for (size_t k = 0; k < sizeof(late_qs) / sizeof(late_qs[0]); k++) {
            answer tier = {0}, raw = {0};
            char why[512];
            int64_t s = min_ts + HOUR, e = min_ts + 4 * HOUR;
            ask(tl->st.db, late_qs[k], s, e, HOUR, true, STELE_RESOLUTION_AUTO, &tier);
            ask(tl->st.db, late_qs[k], s, e, HOUR, true, STELE_RESOLUTION_RAW, &raw);
            if (tier.rc || raw.rc || tier.stats.resolution_ns != HOUR)
                fail_msg("late points at the oldest accepted time (pass %d): %s: auto rc %d at "
                         "%lld ns (%s), raw rc %d (%s)",
                         pass, late_qs[k], tier.rc, (long long)tier.stats.resolution_ns,
                         tier.err.message, raw.rc, raw.err.message);
            if (!rows_equal(&raw.rows, &tier.rows, why, sizeof(why)))
                fail_msg("late points at the oldest accepted time (pass %d): %s, 1h tier vs raw: "
                         "%s",
                         pass, late_qs[k], why);
            free(tier.rows.r);
            free(raw.rows.r);
        }
    }

    for (int k = 0; k < XQ_N; k++)
        free(captured[k].r);
    timeline_fini(tl);
    free(tl);
}

/* Minimal case: a NaN sample in a bucket once raw data has expired. A bucket's sum is NaN
 * then while its min and max are finite; that is not an overflow, and the tier's answer
 * (NaN, as raw data gave) must come back rather than a refusal. */
static void test_nan_bucket_after_raw_expiry(void **state)
{
    (void)state;
    static const int64_t tiers[] = {MIN, 30 * DAY, HOUR, 365 * DAY};
    timeline *tl = calloc(1, sizeof(*tl));
    rows before[2] = {{0}};
    assert_non_null(tl);
    store_init(&tl->st, 9, 2 * DAY, 2, tiers, X_T0 + HOUR);
    stele_batch *b = NULL;
    assert_int_equal(stele_batch_create(&b), 0);
    x_add(tl, b, 1, X_T0 + 10 * MIN, 1);
    x_add(tl, b, 1, X_T0 + 20 * MIN, NAN);
    x_add(tl, b, 1, X_T0 + 30 * MIN, 3);
    assert_int_equal(stele_tsdb_write(tl->st.db, b), 0);
    stele_batch_destroy(b);
    static const char *const qs[] = {"sum_over_time(x[1h])", "avg_over_time(x[1h])"};
    for (int k = 0; k < 2; k++)
        x_capture(tl, qs[k], X_T0 + HOUR, &before[k]);
    assert_int_equal(stele_tsdb_flush(tl->st.db), 0);
    tl->st.now = X_T0 + 3 * DAY;
    assert_int_equal(stele_tsdb_maintain(tl->st.db), 0);
    stele_tier_info info[STELE_MAX_TIERS + 1];
    stele_tsdb_tiers(tl->st.db, info);
    assert_true(info[0].expired_before > X_T0 + 30 * MIN); /* the raw samples are gone */
    for (int k = 0; k < 2; k++) {
        x_expect_same(tl, qs[k], X_T0 + HOUR, X_T0 + HOUR, HOUR, &before[k], HOUR,
                      "NaN in a bucket, raw expired");
        free(before[k].r);
    }
    timeline_fini(tl);
    free(tl);
}

/* --- 3. tier retention --------------------------------------------------------------- */

static int count_buckets(void *ctx, const stele_label *labels, size_t nlabels,
                         const stele_bucket *b, size_t n)
{
    (void)labels;
    (void)nlabels;
    (void)b;
    *(size_t *)ctx += n;
    return 0;
}

static size_t x_buckets(timeline *tl, size_t tier, int64_t mint, int64_t maxt)
{
    size_t n = 0;
    char err[256] = "";
    stele_matcher m[] = {{"__name__", "x", STELE_MATCH_EQUAL}};
    assert_int_equal(stele_tsdb_select_buckets(tl->st.db, "t", m, 1, tier, mint, maxt,
                                               count_buckets, &n, err, sizeof(err)),
                     0);
    return n;
}

static int count_samples(void *ctx, const stele_series_view *s)
{
    *(size_t *)ctx += s->n;
    return 0;
}

static size_t x_samples(timeline *tl, int64_t mint, int64_t maxt)
{
    size_t n = 0;
    char err[256] = "";
    stele_matcher m[] = {{"__name__", "x", STELE_MATCH_EQUAL}};
    assert_int_equal(
        stele_tsdb_select(tl->st.db, "t", m, 1, mint, maxt, count_samples, &n, err, sizeof(err)),
        0);
    return n;
}

static void x_check_tier_expired(timeline *tl, rows *hourly, rows *fine, const char *when)
{
    stele_tier_info info[STELE_MAX_TIERS + 1];
    stele_tsdb_tiers(tl->st.db, info);
    int64_t exp1 = info[1].expired_before;
    /* 1m tier retention 2 d at now = t0 + 5 d: days 0..2 (whole partitions) are gone. */
    if (exp1 == INT64_MIN || exp1 < X_T0 + 2 * DAY || exp1 > X_T0 + 3 * DAY)
        fail_msg("%s: 1m tier expired_before should be in [t0 + 2d, t0 + 3d]: %lld", when,
                 (long long)exp1);
    if (info[2].expired_before != INT64_MIN)
        fail_msg("%s: 1h tier (30 d) should have expired nothing", when);
    size_t gone = x_buckets(tl, 1, X_T0, X_T0 + 3 * DAY - 1);
    if (gone)
        fail_msg("%s: the 1m tier still returns %zu buckets older than its retention", when, gone);
    assert_int_equal(x_samples(tl, X_T0, X_T0 + 4 * DAY - 1), 0);      /* raw: 1 d */
    assert_true(x_buckets(tl, 2, X_T0, X_T0 + 3 * DAY - 1) >= 2 * 72); /* 1h still there */
    assert_true(x_buckets(tl, 1, X_T0 + 4 * DAY, X_T0 + 5 * DAY) > 0);

    int64_t s = X_T0 + HOUR, e = X_T0 + 5 * HOUR;
    static const char *const tier_gone[] = {"tier 1m", "expired", NULL};
    x_expect_refused(tl, "max_over_time(x[5m])", s, e, 5 * MIN, true, MIN, tier_gone, NULL, when);
    static const char *const only_1h[] = {"expired", "Answerable from tier 1h", "max_over_time",
                                          NULL};
    static const char *const not_1m[] = {"tier 1m", NULL};
    x_expect_refused(tl, "max_over_time(x[5m])", s, e, 5 * MIN, true, STELE_RESOLUTION_AUTO,
                     only_1h, not_1m, when);
    x_expect_refused(tl, "x", s, e, 5 * MIN, true, STELE_RESOLUTION_AUTO, only_1h, not_1m, when);
    /* The 1h tier still answers the whole range as raw data did. */
    x_expect_same(tl, "max_over_time(x[1h])", X_T0, X_T0 + (X_HOURS - 1) * HOUR, HOUR, hourly, HOUR,
                  when);
    /* Where raw data expired and the 1m tier did not, the 1m tier answers 5m windows. */
    int64_t fs = (exp1 + 5 * MIN + 5 * MIN - 1) / (5 * MIN) * (5 * MIN);
    assert_true(fs < X_T0 + 3 * DAY + 11 * HOUR);
    assert_true(info[0].expired_before > X_T0 + 3 * DAY + 12 * HOUR);
    x_expect_same(tl, "max_over_time(x[5m])", fs, X_T0 + 3 * DAY + 12 * HOUR - 5 * MIN, 5 * MIN,
                  fine, MIN, when);
}

static void test_tier_retention(void **state)
{
    (void)state;
    static const int64_t tiers[] = {MIN, 2 * DAY, HOUR, 30 * DAY};
    timeline *tl = calloc(1, sizeof(*tl));
    rows hourly = {0}, fine = {0};
    assert_non_null(tl);
    tl->r = 99;
    store_init(&tl->st, 8, DAY, 2, tiers, X_T0 + HOUR);
    for (int h = 0; h < X_HOURS; h++) {
        x_write_hour(tl, h);
        x_capture(tl, "max_over_time(x[1h])", X_T0 + h * HOUR, &hourly);
        /* 5m steps of hour h − 1 (final now: late points only go one hour back). */
        if (h - 1 >= 72 && h - 1 < 84)
            for (int k = 0; k < 12; k++)
                x_capture(tl, "max_over_time(x[5m])", X_T0 + (h - 1) * HOUR + k * 5 * MIN, &fine);
        if (h % 3 == 2)
            assert_int_equal(stele_tsdb_flush(tl->st.db), 0);
        if (h % 6 == 5)
            assert_int_equal(stele_tsdb_maintain(tl->st.db), 0);
    }
    assert_int_equal(stele_tsdb_flush(tl->st.db), 0);
    assert_int_equal(stele_tsdb_maintain(tl->st.db), 0);
    stele_tsdb_stats st;
    stele_tsdb_get_stats(tl->st.db, &st);
    assert_true(st.tiers[0].retention_drops > 0);
    x_check_tier_expired(tl, &hourly, &fine, "1m tier past its retention");
    store_reopen(&tl->st);
    x_check_tier_expired(tl, &hourly, &fine, "1m tier past its retention, reopened");

    /* Much later: everything has expired everywhere; nothing answers from nothing. */
    tl->st.now = X_T0 + 40 * DAY;
    assert_int_equal(stele_tsdb_maintain(tl->st.db), 0);
    for (int pass = 0; pass < 2; pass++) {
        const char *when = pass ? "everything expired, reopened" : "everything expired";
        stele_tier_info info[STELE_MAX_TIERS + 1];
        stele_tsdb_tiers(tl->st.db, info);
        for (int t = 0; t < 3; t++)
            if (info[t].expired_before < X_T0 + 5 * DAY - HOUR)
                fail_msg("%s: tier %d expired_before %lld should be past the data", when, t,
                         (long long)info[t].expired_before);
        assert_int_equal(x_buckets(tl, 2, X_T0, X_T0 + 6 * DAY), 0);
        static const char *const none[] = {"expired", "no tier keeps data that old either", NULL};
        x_expect_refused(tl, "max_over_time(x[1h])", X_T0 + HOUR, X_T0 + 4 * DAY, HOUR, true,
                         STELE_RESOLUTION_AUTO, none, NULL, when);
        x_expect_refused(tl, "x", X_T0 + HOUR, X_T0 + HOUR, 0, false, STELE_RESOLUTION_AUTO, none,
                         NULL, when);
        static const char *const tier_gone[] = {"tier 1h", "expired", NULL};
        x_expect_refused(tl, "max_over_time(x[1h])", X_T0 + HOUR, X_T0 + 4 * DAY, HOUR, true, HOUR,
                         tier_gone, NULL, when);
        if (pass == 0)
            store_reopen(&tl->st);
    }
    free(hourly.r);
    free(fine.r);
    timeline_fini(tl);
    free(tl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tiers_answer_as_raw),
        cmocka_unit_test(test_raw_expiry),
        cmocka_unit_test(test_nan_bucket_after_raw_expiry),
        cmocka_unit_test(test_tier_retention),
    };
    /* STELE_TEST_FILTER=test_raw_expiry runs one test (with STELE_TEST_SEED, one seed). */
    if (getenv("STELE_TEST_FILTER"))
        cmocka_set_test_filter(getenv("STELE_TEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
