/*
 * test_tsdb.c — the storage engine end to end through its API: writes, reads merged
 * across head and blocks, later-write-wins, late and out-of-order points, flush,
 * compaction, retention, label matchers, reopen (recovery from blocks and log), and
 * damage detection. Runs on the fault-injecting in-memory file system so it needs no
 * disk and can inspect what survived.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stele/io.h"
#include "stele/tsdb.h"

#define NS INT64_C(1000000000)
#define T0 (INT64_C(1700000000) * NS)

typedef struct {
    int64_t now;
} fake_clock;

static int64_t fake_now(void *ctx)
{
    return ((fake_clock *)ctx)->now;
}

typedef struct {
    stele_io *io;
    stele_tsdb *db;
    fake_clock clock;
    stele_tsdb_options opts;
} fixture;

static void open_db(fixture *f)
{
    char err[512] = "";
    int rc = stele_tsdb_open(&f->opts, &f->db, NULL, err, sizeof(err));
    if (rc)
        fail_msg("open failed: %d %s", rc, err);
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    assert_int_equal(stele_io_fault_create(42, &f->io), 0);
    f->clock.now = T0 + 3600 * NS;
    stele_tsdb_options_default(&f->opts);
    f->opts.dir = "data";
    f->opts.io = f->io;
    f->opts.background = false;
    f->opts.now_ns = fake_now;
    f->opts.now_ctx = &f->clock;
    open_db(f);
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

static void reopen(fixture *f)
{
    stele_tsdb_close(f->db);
    f->db = NULL;
    open_db(f);
}

static void put(stele_batch *b, const char *tenant, const char *metric, const char *host,
                int64_t ts, double v)
{
    stele_label labels[2] = {
        {.name = "__name__", .name_len = 8, .value = metric, .value_len = (uint32_t)strlen(metric)},
        {.name = "host", .name_len = 4, .value = host, .value_len = (uint32_t)strlen(host)},
    };
    assert_int_equal(stele_batch_add(b, tenant, labels, 2, ts, v), 0);
}

/* Collects one series' samples (the tests select a single series). */
typedef struct {
    int series;
    int64_t ts[4096];
    double v[4096];
    size_t n;
    char host[64];
} collected;

static int collect(void *ctx, const stele_series_view *s)
{
    collected *c = ctx;
    c->series++;
    for (size_t i = 0; i < s->n && c->n < 4096; i++) {
        c->ts[c->n] = s->ts[i];
        c->v[c->n++] = s->values[i];
    }
    for (size_t i = 0; i < s->nlabels; i++)
        if (s->labels[i].name_len == 4 && memcmp(s->labels[i].name, "host", 4) == 0)
            snprintf(c->host, sizeof(c->host), "%.*s", (int)s->labels[i].value_len,
                     s->labels[i].value);
    return 0;
}

static collected *query(fixture *f, const char *tenant, const char *metric, const char *host)
{
    collected *c = calloc(1, sizeof(*c));
    stele_matcher m[2] = {{"__name__", metric, STELE_MATCH_EQUAL},
                          {"host", host, STELE_MATCH_EQUAL}};
    char err[256];
    assert_int_equal(
        stele_tsdb_select(f->db, tenant, m, 2, INT64_MIN, INT64_MAX, collect, c, err, sizeof(err)),
        0);
    return c;
}

static void write_range(fixture *f, const char *host, int64_t from, int n, double base)
{
    stele_batch *b;
    assert_int_equal(stele_batch_create(&b), 0);
    for (int i = 0; i < n; i++)
        put(b, "default", "cpu", host, from + i * 10 * NS, base + i);
    assert_int_equal(stele_tsdb_write(f->db, b), 0);
    stele_batch_destroy(b);
}

static void check_range(fixture *f, const char *host, int64_t from, int n, double base)
{
    collected *c = query(f, "default", "cpu", host);
    assert_int_equal(c->series, 1);
    assert_int_equal(c->n, n);
    for (int i = 0; i < n; i++) {
        assert_true(c->ts[i] == from + i * 10 * NS);
        assert_true(c->v[i] == base + i);
    }
    free(c);
}

static void test_write_read_reopen(void **state)
{
    fixture *f = *state;
    write_range(f, "a", T0, 100, 0);
    check_range(f, "a", T0, 100, 0);
    reopen(f); /* from the log */
    check_range(f, "a", T0, 100, 0);
    assert_int_equal(stele_tsdb_flush(f->db), 0);
    check_range(f, "a", T0, 100, 0);
    reopen(f); /* from blocks */
    check_range(f, "a", T0, 100, 0);
    stele_tsdb_stats st;
    stele_tsdb_get_stats(f->db, &st);
    assert_int_equal(st.blocks, 1);
    assert_int_equal(st.head_points, 0);
}

static void test_later_write_wins_everywhere(void **state)
{
    fixture *f = *state;
    write_range(f, "a", T0, 50, 0); /* 0..49 */
    assert_int_equal(stele_tsdb_flush(f->db), 0);
    write_range(f, "a", T0, 10, 1000); /* overwrite first 10 in the head */
    collected *c = query(f, "default", "cpu", "a");
    assert_int_equal(c->n, 50);
    assert_true(c->v[0] == 1000 && c->v[9] == 1009 && c->v[10] == 10);
    free(c);
    assert_int_equal(stele_tsdb_flush(f->db), 0);
    write_range(f, "a", T0 + 5 * 10 * NS, 1, 7777); /* and once more, in the head */
    reopen(f);
    c = query(f, "default", "cpu", "a");
    assert_int_equal(c->n, 50);
    assert_true(c->v[0] == 1000 && c->v[5] == 7777 && c->v[9] == 1009 && c->v[49] == 49);
    free(c);
    /* Within one batch, too: the last of equal timestamps wins. */
    stele_batch *b;
    assert_int_equal(stele_batch_create(&b), 0);
    put(b, "default", "cpu", "a", T0, 1);
    put(b, "default", "cpu", "a", T0, 2);
    assert_int_equal(stele_tsdb_write(f->db, b), 0);
    stele_batch_destroy(b);
    c = query(f, "default", "cpu", "a");
    assert_true(c->v[0] == 2);
    free(c);
}

static void test_out_of_order_and_late(void **state)
{
    fixture *f = *state;
    /* Points in reverse order, across two partitions (one day apart). */
    stele_batch *b;
    assert_int_equal(stele_batch_create(&b), 0);
    f->clock.now = T0 + 5 * 86400 * NS;
    for (int i = 99; i >= 0; i--)
        put(b, "default", "cpu", "late", T0 + i * 3600 * NS, i);
    assert_int_equal(stele_tsdb_write(f->db, b), 0);
    assert_int_equal(stele_tsdb_flush(f->db), 0);
    stele_batch_reset(b);
    put(b, "default", "cpu", "late", T0 + 50 * 3600 * NS + 1, -1); /* between two */
    assert_int_equal(stele_tsdb_write(f->db, b), 0);
    stele_batch_destroy(b);
    stele_tsdb_stats st;
    stele_tsdb_get_stats(f->db, &st);
    assert_true(st.blocks >= 2); /* one per partition touched */
    reopen(f);
    collected *c = query(f, "default", "cpu", "late");
    assert_int_equal(c->n, 101);
    for (size_t i = 1; i < c->n; i++)
        assert_true(c->ts[i] > c->ts[i - 1]);
    assert_true(c->ts[51] == T0 + 50 * 3600 * NS + 1 && c->v[51] == -1);
    free(c);
}

static void test_compaction_keeps_order(void **state)
{
    fixture *f = *state;
    f->opts.compact_min_blocks = 3;
    reopen(f);
    /* Five flushes overwriting the same timestamps: the last must win after merging. */
    for (int round = 0; round < 5; round++) {
        write_range(f, "c", T0, 20, round * 100);
        assert_int_equal(stele_tsdb_flush(f->db), 0);
    }
    assert_int_equal(stele_tsdb_maintain(f->db), 0);
    stele_tsdb_stats st;
    stele_tsdb_get_stats(f->db, &st);
    assert_true(st.blocks < 5);
    assert_true(st.compactions >= 1);
    check_range(f, "c", T0, 20, 400);
    reopen(f);
    check_range(f, "c", T0, 20, 400);
}

static void test_retention_drops_blocks(void **state)
{
    fixture *f = *state;
    f->opts.retention_ns = 2 * 86400 * NS;
    reopen(f);
    write_range(f, "r", T0, 10, 0);
    assert_int_equal(stele_tsdb_flush(f->db), 0);
    f->clock.now = T0 + 5 * 86400 * NS;
    assert_int_equal(stele_tsdb_maintain(f->db), 0);
    collected *c = query(f, "default", "cpu", "r");
    assert_int_equal(c->n, 0);
    free(c);
    /* Too old to write now. */
    stele_batch *b;
    assert_int_equal(stele_batch_create(&b), 0);
    put(b, "default", "cpu", "r", T0, 1);
    assert_int_equal(stele_tsdb_write(f->db, b), -ERANGE);
    stele_batch_reset(b);
    put(b, "default", "cpu", "r", f->clock.now + 3600 * NS, 1); /* an hour ahead */
    assert_int_equal(stele_tsdb_write(f->db, b), -ERANGE);
    stele_batch_destroy(b);
}

static int count_series(void *ctx, const stele_series_view *s)
{
    (void)s;
    (*(int *)ctx)++;
    return 0;
}

static int select_count(fixture *f, const char *tenant, stele_matcher *m, size_t n)
{
    int count = 0;
    char err[256];
    assert_int_equal(stele_tsdb_select(f->db, tenant, m, n, INT64_MIN, INT64_MAX, count_series,
                                       &count, err, sizeof(err)),
                     0);
    return count;
}

static void test_matchers_and_tenants(void **state)
{
    fixture *f = *state;
    stele_batch *b;
    assert_int_equal(stele_batch_create(&b), 0);
    put(b, "default", "cpu", "web1", T0, 1);
    put(b, "default", "cpu", "web2", T0, 1);
    put(b, "default", "cpu", "db1", T0, 1);
    put(b, "default", "mem", "web1", T0, 1);
    put(b, "other", "cpu", "web1", T0, 1);
    stele_label only_name = {.name = "__name__", .name_len = 8, .value = "cpu", .value_len = 3};
    assert_int_equal(stele_batch_add(b, "default", &only_name, 1, T0, 5), 0);
    assert_int_equal(stele_tsdb_write(f->db, b), 0);
    stele_batch_destroy(b);

    stele_matcher m1[] = {{"__name__", "cpu", STELE_MATCH_EQUAL}};
    assert_int_equal(select_count(f, "default", m1, 1), 4);
    assert_int_equal(select_count(f, "other", m1, 1), 1);
    assert_int_equal(select_count(f, "nobody", m1, 1), 0);
    stele_matcher m2[] = {{"__name__", "cpu", STELE_MATCH_EQUAL},
                          {"host", "web.*", STELE_MATCH_REGEX}};
    assert_int_equal(select_count(f, "default", m2, 2), 2);
    stele_matcher m3[] = {{"__name__", "cpu", STELE_MATCH_EQUAL},
                          {"host", "web1", STELE_MATCH_NOT_EQUAL}};
    assert_int_equal(select_count(f, "default", m3, 2), 3); /* includes the host-less one */
    stele_matcher m4[] = {{"__name__", "cpu", STELE_MATCH_EQUAL}, {"host", "", STELE_MATCH_EQUAL}};
    assert_int_equal(select_count(f, "default", m4, 2), 1);
    stele_matcher m5[] = {{"host", "web.*|db.*", STELE_MATCH_NOT_REGEX}};
    assert_int_equal(select_count(f, "default", m5, 1), 1);
    stele_matcher bad[] = {{"host", "(", STELE_MATCH_REGEX}};
    char err[256] = "";
    int dummy = 0;
    assert_int_equal(stele_tsdb_select(f->db, "default", bad, 1, 0, INT64_MAX, count_series, &dummy,
                                       err, sizeof(err)),
                     -EINVAL);
    assert_non_null(strstr(err, "regular expression"));
}

/* Regression: recovery registers series in block order, not id order, and matching
 * intersects posting lists that must be sorted. Series "z" (id 1) lives in day 1 and
 * "a" (id 2) in day 2; a flush writes partitions in the order it meets them walking
 * series by key, so the day-2 block (holding id 2) is written, listed and registered
 * before the day-1 block (holding id 1). */
static void test_matchers_after_recovery_from_blocks(void **state)
{
    fixture *f = *state;
    f->clock.now = T0 + 3 * 86400 * NS;
    stele_batch *b;
    assert_int_equal(stele_batch_create(&b), 0);
    put(b, "default", "m", "z", T0, 1);
    assert_int_equal(stele_tsdb_write(f->db, b), 0);
    stele_batch_reset(b);
    put(b, "default", "m", "a", T0 + 86400 * NS, 2);
    put(b, "default", "other", "a", T0 + 86400 * NS, 3);
    assert_int_equal(stele_tsdb_write(f->db, b), 0);
    stele_batch_destroy(b);
    assert_int_equal(stele_tsdb_flush(f->db), 0);
    reopen(f);
    const char *hosts[] = {"z", "a"};
    for (int i = 0; i < 2; i++) {
        collected *c = query(f, "default", "m", hosts[i]);
        if (c->series != 1)
            fail_msg("{__name__=\"m\",host=\"%s\"}: expected 1 series, got %d", hosts[i],
                     c->series);
        free(c);
    }
}

static int find_block(void *ctx, const char *n)
{
    if (strstr(n, ".blk"))
        snprintf(ctx, 256, "%s", n);
    return 0;
}

static void on_problem(void *ctx, const char *p, const char *what)
{
    (void)p;
    (void)what;
    (*(int *)ctx)++;
}

static void test_damaged_block_refuses_start(void **state)
{
    fixture *f = *state;
    write_range(f, "d", T0, 200, 0);
    assert_int_equal(stele_tsdb_flush(f->db), 0);
    stele_tsdb_close(f->db);
    f->db = NULL;
    /* Flip a bit in the middle of the only block. */
    char name[256] = "";
    stele_io_list(f->io, "data/blocks", find_block, name);
    assert_true(name[0] != '\0');
    char path[512];
    snprintf(path, sizeof(path), "data/blocks/%s", name);
    assert_int_equal(stele_io_fault_flip_bit(f->io, path, 8 * 80), 0);
    char err[512] = "";
    assert_int_not_equal(stele_tsdb_open(&f->opts, &f->db, NULL, err, sizeof(err)), 0);
    assert_non_null(strstr(err, name)); /* the error names the file */
    int problems = 0;
    assert_true(stele_tsdb_check(f->io, "data", on_problem, NULL, &problems) >= 1);
    assert_true(problems >= 1);
    /* Put the bit back and all is well again. */
    assert_int_equal(stele_io_fault_flip_bit(f->io, path, 8 * 80), 0);
    open_db(f);
    check_range(f, "d", T0, 200, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_write_read_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_later_write_wins_everywhere, setup, teardown),
        cmocka_unit_test_setup_teardown(test_out_of_order_and_late, setup, teardown),
        cmocka_unit_test_setup_teardown(test_compaction_keeps_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retention_drops_blocks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_matchers_and_tenants, setup, teardown),
        cmocka_unit_test_setup_teardown(test_damaged_block_refuses_start, setup, teardown),
        cmocka_unit_test_setup_teardown(test_matchers_after_recovery_from_blocks, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
