/*
 * test_query.c — the PromQL evaluator against the store: hand-computed answers for the
 * functions whose arithmetic is easy to get subtly wrong (rate's extrapolation and
 * counter resets, irate, lookback edges, offset), vector matching errors, and every
 * query limit: refused before reading anything when the index estimate is over, stopped
 * while running (samples, memory), cancelled (timeout), and steps. The differential test
 * against real Prometheus (tests/e2e/10_promql_diff.sh) covers breadth; this covers the
 * edges precisely.
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
#include "stele/tsdb.h"

#define NS INT64_C(1000000000)
#define T0 (INT64_C(1750000000) * NS)

typedef struct {
    stele_io *io;
    stele_tsdb *db;
} fixture;

static int64_t fake_now(void *ctx)
{
    (void)ctx;
    return T0 + 86400 * NS;
}

static void put(stele_batch *b, const char *metric, const char *host, int64_t ts, double v)
{
    stele_label l[2] = {
        {.name = "__name__", .name_len = 8, .value = metric, .value_len = (uint32_t)strlen(metric)},
        {.name = "host", .name_len = 4, .value = host, .value_len = (uint32_t)strlen(host)},
    };
    assert_int_equal(stele_batch_add(b, "t", l, 2, ts, v), 0);
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    stele_tsdb_options o;
    assert_int_equal(stele_io_fault_create(7, &f->io), 0);
    stele_tsdb_options_default(&o);
    o.dir = "d";
    o.io = f->io;
    o.background = false;
    o.now_ns = fake_now;
    assert_int_equal(stele_tsdb_open(&o, &f->db, NULL, NULL, 0), 0);
    stele_batch *b;
    assert_int_equal(stele_batch_create(&b), 0);
    /* A counter every 15 s: 0, 10, 20, … with a reset to 5 at t = 150 s. */
    for (int i = 0; i <= 20; i++) {
        double v = i < 10 ? 10.0 * i : 5 + 10.0 * (i - 10);
        put(b, "req_total", "a", T0 + i * 15 * NS, v);
    }
    /* Ten gauges for limit tests, and two with a matching collision. */
    for (int h = 0; h < 10; h++) {
        char host[8];
        snprintf(host, sizeof(host), "g%d", h);
        for (int i = 0; i <= 20; i++)
            put(b, "gauge", host, T0 + i * 15 * NS, h * 100 + i);
    }
    put(b, "left", "x", T0, 1);
    put(b, "right", "x", T0, 2);
    /* A second "right" series that differs only in label z. */
    stele_label dup2[3] = {{.name = "__name__", .name_len = 8, .value = "right", .value_len = 5},
                           {.name = "host", .name_len = 4, .value = "x", .value_len = 1},
                           {.name = "z", .name_len = 1, .value = "1", .value_len = 1}};
    assert_int_equal(stele_batch_add(b, "t", dup2, 3, T0, 3), 0);
    assert_int_equal(stele_tsdb_write(f->db, b), 0);
    stele_batch_destroy(b);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    stele_tsdb_close(f->db);
    stele_io_destroy(f->io);
    free(f);
    return 0;
}

/* Runs an instant query and returns its JSON (caller frees), or NULL with *err set. */
static char *run(fixture *f, const char *q, int64_t t, const stele_query_limits *lim,
                 stele_query_error *err, stele_query_stats *st)
{
    pq_expr *e = NULL;
    char perr[256];
    if (pq_parse(q, strlen(q), &e, perr, sizeof(perr)) != 0)
        fail_msg("parse of %s failed: %s", q, perr);
    stele_query_limits def;
    stele_query_limits_default(&def);
    stele_query_result *r = NULL;
    char *json = NULL;
    size_t len;
    int rc = stele_query_eval(f->db, "t", e, t, t, 0, false, lim ? lim : &def,
                              STELE_RESOLUTION_AUTO, NULL, &r, err, st);
    if (rc == 0) {
        assert_int_equal(stele_query_result_json(r, &json, &len), 0);
        stele_query_result_free(r);
    }
    pq_expr_free(e);
    return json;
}

static double single_value(fixture *f, const char *q, int64_t t)
{
    stele_query_error err;
    char *json = run(f, q, t, NULL, &err, NULL);
    if (!json)
        fail_msg("%s failed: %s", q, err.message);
    const char *v = strstr(json, "\"value\":[");
    v = v ? strstr(v, ",\"") : NULL;
    double d = v ? strtod(v + 2, NULL) : NAN;
    if (!v)
        fail_msg("%s: no value in %s", q, json);
    free(json);
    return d;
}

static void test_rate_extrapolation_and_reset(void **state)
{
    fixture *f = *state;
    /* Window [60 s, 120 s] holds samples at 60..120: 40..80, increase 40 over 60 s of
     * samples; the window edges coincide with samples, so no extrapolation. */
    assert_true(fabs(single_value(f, "increase(req_total[1m])", T0 + 120 * NS) - 40) < 1e-9);
    assert_true(fabs(single_value(f, "rate(req_total[1m])", T0 + 120 * NS) - 40.0 / 60) < 1e-12);
    /* Across the reset at 150 s (90 → 5): samples 120..180 are 80, 90, 5, 15, 25;
     * increase = 25 - 80 + 90 (the reset adds the last value before it) = 35. */
    assert_true(fabs(single_value(f, "increase(req_total[1m])", T0 + 180 * NS) - 35) < 1e-9);
    /* Extrapolation: window [50 s, 110 s] holds 60..105 (4 samples, 45 s span, 15 s
     * apart): 10 s to the start and 5 s to the end are below 1.1 × 15 s, so the 30
     * increase is stretched to 45 + 10 + 5 = 60 s: 40. */
    assert_true(fabs(single_value(f, "increase(req_total[1m])", T0 + 110 * NS) - 40) < 1e-9);
    /* irate uses the last two samples; across the reset it takes the value after it. */
    assert_true(fabs(single_value(f, "irate(req_total[1m])", T0 + 150 * NS) - 5.0 / 15) < 1e-12);
    assert_true(fabs(single_value(f, "idelta(req_total[1m])", T0 + 150 * NS) + 85) < 1e-9);
    assert_true(fabs(single_value(f, "delta(req_total[1m])", T0 + 120 * NS) - 40) < 1e-9);
}

static void test_lookback_and_offset(void **state)
{
    fixture *f = *state;
    /* Last sample at 300 s: visible for 5 minutes, inclusive, then gone. */
    assert_true(single_value(f, "req_total", T0 + 600 * NS) == 105);
    stele_query_error err;
    char *json = run(f, "req_total", T0 + 601 * NS, NULL, &err, NULL);
    assert_non_null(json);
    assert_non_null(strstr(json, "\"result\":[]"));
    free(json);
    assert_true(single_value(f, "req_total offset 1m", T0 + 120 * NS) == 40);
    assert_true(single_value(f, "sum(gauge)", T0 + 15 * NS) == 4500 + 10);
    assert_true(single_value(f, "count(gauge > 500)", T0) == 4);
}

static void test_matching_errors(void **state)
{
    fixture *f = *state;
    stele_query_error err;
    /* Two right-hand series with the same signature on host: many-to-many. */
    char *json = run(f, "left + on(host) right", T0, NULL, &err, NULL);
    assert_null(json);
    assert_int_equal(err.kind, STELE_QERR_EXECUTION);
    assert_non_null(strstr(err.message, "duplicate series"));
    json = run(f, "left + ignoring(z) right{z=\"\"}", T0, NULL, &err, NULL);
    assert_non_null(json);
    assert_non_null(strstr(json, "\"3\""));
    free(json);
}

static void test_limits_refuse_before_reading(void **state)
{
    fixture *f = *state;
    stele_query_limits lim;
    stele_query_limits_default(&lim);
    lim.max_series = 5;
    stele_query_error err;
    stele_query_stats st;
    char *json = run(f, "sum(gauge)", T0, &lim, &err, &st);
    assert_null(json);
    assert_int_equal(err.kind, STELE_QERR_LIMIT);
    assert_string_equal(err.reason, "series");
    assert_int_equal(st.samples, 0); /* refused from the index alone */
    assert_int_equal(st.estimated_series, 10);

    stele_query_limits_default(&lim);
    lim.max_samples = 50;
    json = run(f, "max_over_time(gauge[10m])", T0 + 300 * NS, &lim, &err, &st);
    assert_null(json);
    assert_int_equal(err.kind, STELE_QERR_LIMIT);
    assert_string_equal(err.reason, "samples");
    assert_int_equal(st.samples, 0);
    assert_true(st.estimated_samples >= 200);
}

static void test_limits_stop_running_queries(void **state)
{
    fixture *f = *state;
    stele_query_limits lim;
    stele_query_limits_default(&lim);
    lim.max_memory = 64 << 10; /* far too little for a 2,000-step range query */
    pq_expr *e;
    char perr[128];
    assert_int_equal(pq_parse("gauge * 2", 9, &e, perr, sizeof(perr)), 0);
    stele_query_result *r = NULL;
    stele_query_error err;
    int rc = stele_query_eval(f->db, "t", e, T0, T0 + 2000 * NS, NS, true, &lim,
                              STELE_RESOLUTION_AUTO, NULL, &r, &err, NULL);
    assert_int_not_equal(rc, 0);
    assert_null(r);
    assert_int_equal(err.kind, STELE_QERR_EXECUTION);
    assert_string_equal(err.reason, "memory");

    /* A cancelled query (the pool's deadline) stops with a timeout. */
    stele_query_limits_default(&lim);
    volatile int cancel = 1;
    rc = stele_query_eval(f->db, "t", e, T0, T0 + 300 * NS, 15 * NS, true, &lim,
                          STELE_RESOLUTION_AUTO, &cancel, &r, &err, NULL);
    assert_int_not_equal(rc, 0);
    assert_int_equal(err.kind, STELE_QERR_TIMEOUT);

    /* Too many steps. */
    rc = stele_query_eval(f->db, "t", e, T0, T0 + 20000 * NS, NS, true, &lim, STELE_RESOLUTION_AUTO,
                          NULL, &r, &err, NULL);
    assert_int_not_equal(rc, 0);
    assert_int_equal(err.kind, STELE_QERR_BAD_DATA);
    assert_non_null(strstr(err.message, "11000"));
    pq_expr_free(e);
}

static void test_float_format(void **state)
{
    (void)state;
    char buf[400];
    struct {
        double v;
        const char *want;
    } cases[] = {{0.1, "0.1"},
                 {1e21, "1e+21"},
                 {1.5e21, "1.5e+21"},
                 {1e-7, "1e-07"},
                 {0.000001, "0.000001"},
                 {-2.5, "-2.5"},
                 {123456789, "123456789"},
                 {0.35000000000000003, "0.35000000000000003"},
                 {-973771.6208221955, "-973771.6208221955"},
                 {-7.145884305278594e+277, "-7.145884305278594e+277"},
                 {NAN, "NaN"},
                 {INFINITY, "+Inf"},
                 {-INFINITY, "-Inf"},
                 {5e-324, "5e-324"},
                 {-0.0, "-0"}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        stele_format_prom_float(cases[i].v, buf, sizeof(buf));
        if (strcmp(buf, cases[i].want) != 0)
            fail_msg("format(%.17g): expected %s, got %s", cases[i].v, cases[i].want, buf);
    }
}

/* Property: every formatted value reads back exactly and is shortest (one digit fewer,
 * correctly rounded, does not read back). Seeded; prints the seed on failure. */
static void test_float_format_shortest_property(void **state)
{
    (void)state;
    uint64_t seed = (uint64_t)time(NULL), x = seed;
    char buf[400], shorter[64];
    for (int i = 0; i < 200000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        double v;
        uint64_t bits = x;
        if (i % 3 == 0) {
            memcpy(&v, &bits, 8);
        } else {
            v = (double)(int64_t)(x % 2000000001) / (double)(1 + x % 100000);
            if (i % 3 == 2)
                v = round(v * 1000) / 1000;
        }
        if (!isfinite(v) || v == 0)
            continue;
        stele_format_prom_float(v, buf, sizeof(buf));
        if (strtod(buf, NULL) != v)
            fail_msg("seed %llu: %.17g formatted as %s does not read back",
                     (unsigned long long)seed, v, buf);
        int digits = 0;
        bool leading = true;
        for (const char *p = buf; *p && *p != 'e'; p++) {
            if (*p >= '1' && *p <= '9')
                leading = false;
            if (*p >= '0' && *p <= '9' && !leading)
                digits++;
        }
        /* trailing zeros of an integer are not significant */
        if (!strchr(buf, '.') && !strchr(buf, 'e'))
            for (const char *p = buf + strlen(buf) - 1; p > buf && *p == '0'; p--)
                digits--;
        if (digits > 1) {
            snprintf(shorter, sizeof(shorter), "%.*e", digits - 2, v);
            if (strtod(shorter, NULL) == v)
                fail_msg("seed %llu: %.17g formatted as %s, but %s is shorter",
                         (unsigned long long)seed, v, buf, shorter);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_rate_extrapolation_and_reset, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lookback_and_offset, setup, teardown),
        cmocka_unit_test_setup_teardown(test_matching_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_limits_refuse_before_reading, setup, teardown),
        cmocka_unit_test_setup_teardown(test_limits_stop_running_queries, setup, teardown),
        cmocka_unit_test(test_float_format),
        cmocka_unit_test(test_float_format_shortest_property),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
