/*
 * test_batch_ref.c — series handles (stele_tsdb_series_ref, stele_batch_add_ref): points
 * added by handle are the points added by labels, in the head, after log replay, after a
 * flush and after both; each log segment defines the series its points use (a store that
 * wrote only by handle after a flush still replays); a handle never creates a series, so
 * it costs no quota and leaves nothing behind; a batch counts a series once however it
 * was added. Two stores side by side (in-memory file system) get the same writes, one by
 * labels only, one mixing handles and labels at random (seeded; the seed is printed on
 * failure), and must read back the same.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "stele/io.h"
#include "stele/tsdb.h"
#include "test_util.h"

#define NS INT64_C(1000000000)
#define T0 (INT64_C(1700000000) * NS)
#define NSERIES 12
#define MAX_SAMPLES 8192

typedef struct {
    int64_t now;
} fake_clock;

static int64_t fake_now(void *ctx)
{
    return ((fake_clock *)ctx)->now;
}

typedef struct {
    stele_io *io;
    fake_clock clock;
    stele_tsdb_options opts[2];
    stele_tsdb *db[2]; /* 0: by labels only; 1: by handle where it can */
} fixture;

static void open_db(fixture *f, int i)
{
    char err[512] = "";
    int rc = stele_tsdb_open(&f->opts[i], &f->db[i], NULL, err, sizeof(err));
    if (rc)
        fail_msg("open of store %d failed: %d %s", i, rc, err);
}

static fixture *fixture_new(void)
{
    fixture *f = calloc(1, sizeof(*f));
    assert_int_equal(stele_io_fault_create(7, &f->io), 0);
    f->clock.now = T0 + 3600 * NS;
    for (int i = 0; i < 2; i++) {
        stele_tsdb_options_default(&f->opts[i]);
        f->opts[i].dir = i ? "by_ref" : "by_labels";
        f->opts[i].io = f->io;
        f->opts[i].background = false;
        f->opts[i].now_ns = fake_now;
        f->opts[i].now_ctx = &f->clock;
        open_db(f, i);
    }
    return f;
}

static void fixture_free(fixture *f)
{
    for (int i = 0; i < 2; i++)
        stele_tsdb_close(f->db[i]);
    stele_io_destroy(f->io);
    free(f);
}

static void reopen(fixture *f)
{
    for (int i = 0; i < 2; i++) {
        stele_tsdb_close(f->db[i]);
        f->db[i] = NULL;
        open_db(f, i);
    }
}

/* Series k: metric m<k % 3>, host h<k>, tenant t<k % 2>. */
typedef struct {
    char tenant[8], metric[8], host[8];
    stele_label labels[2];
} series_def;

static void series_make(series_def *s, int k)
{
    snprintf(s->tenant, sizeof(s->tenant), "t%d", k % 2);
    snprintf(s->metric, sizeof(s->metric), "m%d", k % 3);
    snprintf(s->host, sizeof(s->host), "h%d", k);
    s->labels[0] = (stele_label){"__name__", 8, s->metric, (uint32_t)strlen(s->metric)};
    s->labels[1] = (stele_label){"host", 4, s->host, (uint32_t)strlen(s->host)};
}

/* Adds one point of series k to both batches: by labels to b[0], to b[1] by handle when
 * the store has the series and the coin says so. Returns whether a handle was used. */
static bool add_point(fixture *f, stele_batch *b[2], int k, int64_t ts, double v, bool coin)
{
    series_def s;
    series_make(&s, k);
    assert_int_equal(stele_batch_add(b[0], s.tenant, s.labels, 2, ts, v), 0);
    const stele_series_ref *ref = NULL;
    int rc = stele_tsdb_series_ref(f->db[1], s.tenant, s.labels, 2, &ref);
    assert_true(rc == 0 || rc == 1);
    if (rc == 1 && coin) {
        assert_int_equal(stele_batch_add_ref(b[1], ref, ts, v), 0);
        return true;
    }
    assert_int_equal(stele_batch_add(b[1], s.tenant, s.labels, 2, ts, v), 0);
    return false;
}

/* Writes `batches` random batches to both stores; returns the points added by handle. */
static size_t write_random(fixture *f, uint64_t *rng, int batches, int64_t *ts)
{
    stele_batch *b[2];
    size_t by_ref = 0;
    for (int i = 0; i < 2; i++)
        assert_int_equal(stele_batch_create(&b[i]), 0);
    for (int n = 0; n < batches; n++) {
        for (int i = 0; i < 2; i++)
            stele_batch_reset(b[i]);
        int points = 1 + (int)(test_rng_next(rng) % 40);
        for (int p = 0; p < points; p++) {
            int k = (int)(test_rng_next(rng) % NSERIES);
            /* Sometimes the same timestamp again (later write wins), mostly forward. */
            if (test_rng_next(rng) % 8)
                *ts += (int64_t)(test_rng_next(rng) % 1000) * 1000;
            double v = (double)(test_rng_next(rng) % 100000) / 7.0;
            by_ref += add_point(f, b, k, *ts, v, test_rng_next(rng) % 4 != 0);
        }
        for (int i = 0; i < 2; i++)
            assert_int_equal(stele_tsdb_write(f->db[i], b[i]), 0);
    }
    for (int i = 0; i < 2; i++)
        stele_batch_destroy(b[i]);
    return by_ref;
}

typedef struct {
    size_t n;
    int64_t ts[MAX_SAMPLES];
    double v[MAX_SAMPLES];
} samples;

static int collect(void *ctx, const stele_series_view *s)
{
    samples *out = ctx;
    for (size_t i = 0; i < s->n && out->n < MAX_SAMPLES; i++) {
        out->ts[out->n] = s->ts[i];
        out->v[out->n++] = s->values[i];
    }
    return 0;
}

/* Every series reads back the same from both stores. */
static void assert_same(fixture *f, uint64_t seed, const char *when)
{
    static samples got[2];
    for (int k = 0; k < NSERIES; k++) {
        series_def s;
        series_make(&s, k);
        stele_matcher m[2] = {{"__name__", s.metric, STELE_MATCH_EQUAL},
                              {"host", s.host, STELE_MATCH_EQUAL}};
        for (int i = 0; i < 2; i++) {
            char err[256];
            got[i].n = 0;
            assert_int_equal(stele_tsdb_select(f->db[i], s.tenant, m, 2, INT64_MIN, INT64_MAX,
                                               collect, &got[i], err, sizeof(err)),
                             0);
        }
        bool same = got[0].n == got[1].n &&
                    memcmp(got[0].ts, got[1].ts, got[0].n * sizeof(int64_t)) == 0 &&
                    memcmp(got[0].v, got[1].v, got[0].n * sizeof(double)) == 0;
        if (!same || got[0].n == 0)
            fail_msg("seed %" PRIu64 " %s: series %d: %zu samples by labels, %zu with handles%s",
                     seed, when, k, got[0].n, got[1].n, same ? " (expected some)" : ", differing");
    }
    stele_tsdb_stats st[2];
    for (int i = 0; i < 2; i++)
        stele_tsdb_get_stats(f->db[i], &st[i]);
    if (st[0].series != st[1].series || st[0].series != NSERIES)
        fail_msg("seed %" PRIu64 " %s: %" PRIu64 " series by labels, %" PRIu64
                 " with handles, expected %d",
                 seed, when, st[0].series, st[1].series, NSERIES);
}

static uint64_t first_seed(void)
{
    const char *s = getenv("STELE_TEST_SEED");
    return s ? strtoull(s, NULL, 10) : (uint64_t)time(NULL);
}

static void test_handles_equal_labels(void **state)
{
    (void)state;
    uint64_t seed = first_seed();
    for (int round = 0; round < 5; round++, seed++) {
        fixture *f = fixture_new();
        uint64_t rng = seed;
        int64_t ts = T0;
        size_t by_ref = write_random(f, &rng, 30, &ts);
        if (by_ref == 0)
            fail_msg("seed %" PRIu64 ": no point went by handle", seed);
        assert_same(f, seed, "in the head");
        reopen(f); /* replay of the log */
        assert_same(f, seed, "after replay");
        for (int i = 0; i < 2; i++)
            assert_int_equal(stele_tsdb_flush(f->db[i]), 0);
        assert_same(f, seed, "after a flush");
        /* A new segment: every series used by handle must be defined in it again. */
        write_random(f, &rng, 30, &ts);
        assert_same(f, seed, "after more writes");
        reopen(f);
        assert_same(f, seed, "after replay of the segment after the flush");
        for (int i = 0; i < 2; i++)
            assert_int_equal(stele_tsdb_flush(f->db[i]), 0);
        reopen(f);
        assert_same(f, seed, "after flush and reopen");
        fixture_free(f);
    }
}

/* Only handles after a flush, and the series' block since dropped by retention: the
 * last segment is all that defines the series, so it must (else the open fails). */
static void test_segment_defines_series_used_by_handle(void **state)
{
    (void)state;
    fixture *f = fixture_new();
    stele_tsdb_close(f->db[1]);
    f->opts[1].ntiers = 0; /* raw blocks go at retention at once */
    f->opts[1].retention_ns = 3600 * NS;
    open_db(f, 1);
    stele_tsdb *db = f->db[1];
    series_def s;
    series_make(&s, 0);
    stele_batch *b;
    assert_int_equal(stele_batch_create(&b), 0);
    assert_int_equal(stele_batch_add(b, s.tenant, s.labels, 2, f->clock.now - NS, 1), 0);
    assert_int_equal(stele_tsdb_write(db, b), 0);
    const stele_series_ref *ref = NULL;
    assert_int_equal(stele_tsdb_series_ref(db, s.tenant, s.labels, 2, &ref), 1);
    assert_int_equal(stele_tsdb_flush(db), 0); /* its segment goes */
    f->clock.now += 3 * 86400 * NS;
    assert_int_equal(stele_tsdb_maintain(db), 0); /* and its block */
    stele_tsdb_stats st;
    stele_tsdb_get_stats(db, &st);
    assert_int_equal(st.blocks, 0);
    int64_t t1 = f->clock.now - 10 * NS;
    for (int i = 0; i < 3; i++) {
        stele_batch_reset(b);
        assert_int_equal(stele_batch_add_ref(b, ref, t1 + i * NS, i + 2), 0);
        assert_int_equal(stele_tsdb_write(db, b), 0);
    }
    stele_batch_destroy(b);
    stele_tsdb_close(db);
    f->db[1] = NULL;
    open_db(f, 1);
    samples *got = calloc(1, sizeof(*got));
    stele_matcher m[1] = {{"host", s.host, STELE_MATCH_EQUAL}};
    char err[256];
    assert_int_equal(stele_tsdb_select(f->db[1], s.tenant, m, 1, INT64_MIN, INT64_MAX, collect, got,
                                       err, sizeof(err)),
                     0);
    assert_int_equal(got->n, 3);
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(got->ts[i], t1 + (int64_t)i * NS);
        assert_true(got->v[i] == (double)(i + 2));
    }
    free(got);
    fixture_free(f);
}

static void test_handles_and_quota(void **state)
{
    (void)state;
    fixture *f = fixture_new();
    stele_tsdb *db = f->db[1];
    stele_batch *b;
    const stele_series_ref *refs[4], *ref = NULL;
    series_def s[6];
    assert_int_equal(stele_batch_create(&b), 0);
    for (int k = 0; k < 6; k++) {
        series_make(&s[k], 2 * k); /* all of tenant t0 */
        /* A handle is never made for a series the store lacks. */
        assert_int_equal(stele_tsdb_series_ref(db, s[k].tenant, s[k].labels, 2, &ref), 0);
    }
    assert_int_equal(stele_tsdb_tenant_series(db, "t0"), 0);
    for (int k = 0; k < 4; k++)
        assert_int_equal(stele_batch_add(b, s[k].tenant, s[k].labels, 2, T0, k), 0);
    assert_int_equal(stele_tsdb_write_quota(db, b, 4), 0);
    for (int k = 0; k < 4; k++)
        assert_int_equal(stele_tsdb_series_ref(db, s[k].tenant, s[k].labels, 2, &refs[k]), 1);
    /* At the limit: many points of the four by handle (and one by labels) still fit. */
    stele_batch_reset(b);
    for (int p = 0; p < 100; p++)
        assert_int_equal(stele_batch_add_ref(b, refs[p % 4], T0 + (p + 1) * NS, p), 0);
    assert_int_equal(stele_batch_add(b, s[1].tenant, s[1].labels, 2, T0 + 200 * NS, 0), 0);
    assert_int_equal(stele_batch_points(b), 101);
    assert_int_equal(stele_tsdb_write_quota(db, b, 4), 0);
    /* A fifth series does not, whatever rides along by handle; nothing is stored. */
    stele_batch_reset(b);
    assert_int_equal(stele_batch_add_ref(b, refs[0], T0 + 300 * NS, 1), 0);
    assert_int_equal(stele_batch_add(b, s[4].tenant, s[4].labels, 2, T0 + 300 * NS, 1), 0);
    assert_int_equal(stele_tsdb_write_quota(db, b, 4), -EDQUOT);
    assert_int_equal(stele_tsdb_tenant_series(db, "t0"), 4);
    assert_int_equal(stele_tsdb_series_ref(db, s[4].tenant, s[4].labels, 2, &ref), 0);
    /* Bad label sets are refused as by stele_batch_add. */
    stele_label unsorted[2] = {s[0].labels[1], s[0].labels[0]};
    assert_int_equal(stele_tsdb_series_ref(db, "t0", unsorted, 2, &ref), -EINVAL);
    assert_int_equal(stele_tsdb_series_ref(db, "", s[0].labels, 2, &ref), -EINVAL);
    stele_batch_destroy(b);
    /* After a restart the handles' series are the same ones, nothing more. */
    stele_tsdb_close(db);
    f->db[1] = NULL;
    open_db(f, 1);
    assert_int_equal(stele_tsdb_tenant_series(f->db[1], "t0"), 4);
    stele_tsdb_stats st;
    stele_tsdb_get_stats(f->db[1], &st);
    assert_int_equal(st.head_points, 4 + 101);
    fixture_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_handles_equal_labels),
        cmocka_unit_test(test_segment_defines_series_used_by_handle),
        cmocka_unit_test(test_handles_and_quota),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
