/*
 * test_tier.c — downsampling arithmetic (stele/tier.h) checked against the real raw
 * evaluator: random series (regular and irregular spacing, gaps, counter resets, NaN,
 * negative values) are written to a store and queried with range queries at the tier's
 * resolution; every supported function answered from buckets must equal the raw answer
 * (1e-9 relative) at every step. Seeded (STELE_TEST_SEED); the seed is printed on
 * failure. Also the --tiers syntax.
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
#define MIN (60 * NS)
#define T0 (INT64_C(1750000000) / 3600 * 3600 * NS) /* on an hour */
#define NPTS 2000

static int64_t fake_now(void *ctx)
{
    (void)ctx;
    return T0 + 86400 * NS;
}

/* Random series: kind 0 regular 10 s, 1 irregular with gaps, 2 counter with resets. */
static size_t make_series(uint64_t *r, int kind, int64_t *ts, double *v)
{
    int64_t t = T0 + (int64_t)(test_rng_next(r) % 30) * NS;
    double x = (double)(test_rng_next(r) % 1000) / 10;
    size_t n = 0;
    while (n < NPTS && t < T0 + 3 * 3600 * NS) {
        ts[n] = t;
        if (kind == 2) {
            x += (double)(test_rng_next(r) % 50);
            if (test_rng_next(r) % 97 == 0)
                x = (double)(test_rng_next(r) % 10); /* reset */
        } else {
            x += ((double)(test_rng_next(r) % 2001) - 1000) / 100;
        }
        v[n] = (kind == 1 && test_rng_next(r) % 53 == 0) ? NAN : x;
        n++;
        if (kind == 1)
            t += (int64_t)(1 + test_rng_next(r) % 40) * NS +
                 (test_rng_next(r) % 29 == 0 ? 20 * MIN : 0);
        else
            t += 10 * NS;
    }
    return n;
}

typedef struct {
    double *v;
    uint8_t *ok;
    size_t nsteps;
    int64_t start, step;
} raw_answer;

static int parse_json_matrix(const char *json, raw_answer *a)
{
    /* One series: "values":[[t,"v"],...] */
    const char *p = strstr(json, "\"values\":[");
    memset(a->ok, 0, a->nsteps);
    if (!p)
        return 0;
    p += 10;
    while (*p == '[') {
        char *end;
        double t = strtod(p + 1, &end);
        const char *q = strchr(end, '"');
        double v = strtod(q + 1, NULL);
        if (!strncmp(q + 1, "NaN", 3))
            v = NAN;
        int64_t tns = (int64_t)llround(t * 1000) * 1000000;
        size_t k = (size_t)((tns - a->start) / a->step);
        a->v[k] = v;
        a->ok[k] = 1;
        p = strchr(q + 1, ']') + 1;
        if (*p == ',')
            p++;
    }
    return 0;
}

static bool close_enough(double a, double b)
{
    if (isnan(a) || isnan(b))
        return isnan(a) && isnan(b);
    if (a == b)
        return true;
    return fabs(a - b) <= 1e-9 * fmax(fabs(a), fabs(b)) + 1e-12;
}

static void check_function(stele_tsdb *db, const char *fname, stele_tier_fn fn,
                           const stele_bucket *b, size_t nb, int64_t res, int64_t range,
                           uint64_t seed)
{
    char q[128];
    snprintf(q, sizeof(q), "%s(m[%lldm])", fname, (long long)(range / MIN));
    pq_expr *e;
    char perr[128];
    assert_int_equal(pq_parse(q, strlen(q), &e, perr, sizeof(perr)), 0);
    int64_t start = T0 + range, end = T0 + 3 * 3600 * NS + 2 * res;
    stele_query_limits lim;
    stele_query_limits_default(&lim);
    stele_query_result *r;
    stele_query_error err;
    assert_int_equal(stele_query_eval(db, "t", e, start, end, res, true, &lim, STELE_RESOLUTION_RAW,
                                      NULL, &r, &err, NULL),
                     0);
    char *json;
    size_t len;
    assert_int_equal(stele_query_result_json(r, &json, &len), 0);
    raw_answer a = {.nsteps = (size_t)((end - start) / res) + 1, .start = start, .step = res};
    a.v = calloc(a.nsteps, sizeof(double));
    a.ok = calloc(a.nsteps, 1);
    parse_json_matrix(json, &a);
    for (size_t k = 0; k < a.nsteps; k++) {
        int64_t t = start + (int64_t)k * res;
        double tv;
        bool has = stele_tier_window(b, nb, res, t, range, fn, &tv);
        if (has != (bool)a.ok[k] || (has && !close_enough(tv, a.v[k])))
            fail_msg("seed %llu: %s at step %zu: raw %s %.17g, tier %s %.17g",
                     (unsigned long long)seed, q, k, a.ok[k] ? "has" : "no", a.v[k],
                     has ? "has" : "no", tv);
    }
    free(a.v);
    free(a.ok);
    free(json);
    stele_query_result_free(r);
    pq_expr_free(e);
}

static void test_tiers_equal_raw(void **state)
{
    (void)state;
    const char *env = getenv("STELE_TEST_SEED");
    uint64_t seed0 = env ? strtoull(env, NULL, 10) : (uint64_t)time(NULL);
    int64_t *ts = malloc(NPTS * sizeof(int64_t));
    double *v = malloc(NPTS * sizeof(double));
    stele_bucket *b = malloc(NPTS * sizeof(stele_bucket));
    for (uint64_t round = 0; round < 12; round++) {
        uint64_t seed = seed0 + round, r = seed;
        stele_io *io;
        stele_tsdb *db;
        stele_tsdb_options o;
        assert_int_equal(stele_io_fault_create(seed, &io), 0);
        stele_tsdb_options_default(&o);
        o.dir = "d";
        o.io = io;
        o.background = false;
        o.now_ns = fake_now;
        assert_int_equal(stele_tsdb_open(&o, &db, NULL, NULL, 0), 0);
        size_t n = make_series(&r, (int)(round % 3), ts, v);
        stele_batch *batch;
        assert_int_equal(stele_batch_create(&batch), 0);
        stele_label l = {.name = "__name__", .name_len = 8, .value = "m", .value_len = 1};
        for (size_t i = 0; i < n; i++)
            assert_int_equal(stele_batch_add(batch, "t", &l, 1, ts[i], v[i]), 0);
        assert_int_equal(stele_tsdb_write(db, batch), 0);
        stele_batch_destroy(batch);
        if (round % 2)
            assert_int_equal(stele_tsdb_flush(db), 0);

        int64_t res = MIN * (round % 4 == 3 ? 5 : 1);
        size_t nb = stele_buckets_build(ts, v, n, res, b);
        static const struct {
            const char *name;
            stele_tier_fn fn;
        } fns[] = {{"min_over_time", STELE_TIER_MIN}, {"max_over_time", STELE_TIER_MAX},
                   {"sum_over_time", STELE_TIER_SUM}, {"count_over_time", STELE_TIER_COUNT},
                   {"avg_over_time", STELE_TIER_AVG}, {"last_over_time", STELE_TIER_LAST},
                   {"increase", STELE_TIER_INCREASE}, {"rate", STELE_TIER_RATE},
                   {"delta", STELE_TIER_DELTA}};
        for (size_t f = 0; f < sizeof(fns) / sizeof(fns[0]); f++)
            for (int mult = 1; mult <= 3; mult++)
                check_function(db, fns[f].name, fns[f].fn, b, nb, res, res * mult, seed);
        stele_tsdb_close(db);
        stele_io_destroy(io);
    }
    free(ts);
    free(v);
    free(b);
}

static void test_tiers_syntax(void **state)
{
    (void)state;
    int64_t res[STELE_MAX_TIERS], ret[STELE_MAX_TIERS];
    size_t n;
    char err[200];
    assert_int_equal(stele_tiers_parse("raw:30d,1m:1y,1h:10y", res, ret, &n, err, sizeof(err)), 0);
    assert_int_equal(n, 3);
    assert_true(res[0] == 0 && res[1] == MIN && res[2] == 60 * MIN);
    assert_true(ret[0] == 30 * 86400 * NS && ret[2] == 3650 * 86400 * NS);
    assert_int_equal(stele_tiers_parse("1m:1y", res, ret, &n, err, sizeof(err)), -EINVAL);
    assert_int_equal(stele_tiers_parse("raw:30d,1h:1y,1m:10y", res, ret, &n, err, sizeof(err)),
                     -EINVAL);
    assert_int_equal(stele_tiers_parse("raw:30d,1m:1y,90s:2y", res, ret, &n, err, sizeof(err)),
                     -EINVAL); /* not a multiple */
    assert_int_equal(stele_tiers_parse("raw:30d,1m:1d", res, ret, &n, err, sizeof(err)),
                     -EINVAL); /* retention shrinks */
    assert_int_equal(stele_tiers_parse("raw:30x", res, ret, &n, err, sizeof(err)), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tiers_equal_raw),
        cmocka_unit_test(test_tiers_syntax),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
