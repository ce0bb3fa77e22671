/*
 * test_tier_check.c — `stele check` on tiers (stele_tsdb_check): a healthy store has no
 * problem; a coarser tier that disagrees with the finer one is reported (the 1h tier of
 * a store with other values is put in place of the real one: every file is intact, only
 * the cross-tier comparison can see it); a flipped byte in a tier block is reported; a
 * tier block left by an interrupted build is only noted, and removed by the next open.
 * Also the bucket merge the check relies on: merging the 1m buckets of an hour equals
 * building the 1h bucket from the samples.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stele/io.h"
#include "stele/tier.h"
#include "stele/tsdb.h"

#define NS INT64_C(1000000000)
#define HOUR (3600 * NS)
#define T0 (INT64_C(1749999600) * NS) /* a whole hour */

static int64_t fake_now(void *ctx)
{
    return *(int64_t *)ctx;
}

static int64_t clock_now = T0 + 20 * HOUR;

/* The options of every store in these tests: default tiers, the fake clock. */
static void store_options(stele_io *io, const char *dir, stele_tsdb_options *o)
{
    stele_tsdb_options_default(o);
    o->dir = dir;
    o->io = io;
    o->background = false;
    o->now_ns = fake_now;
    o->now_ctx = &clock_now;
}

/* Writes 6 h of 10 s samples of two series (values from `seed`), flushes, builds;
 * `rounds` times, each round later in time. */
static void make_store_rounds(stele_io *io, const char *dir, unsigned seed, int rounds)
{
    stele_tsdb_options o;
    store_options(io, dir, &o);
    stele_tsdb *db;
    char err[256];
    assert_int_equal(stele_tsdb_open(&o, &db, NULL, err, sizeof(err)), 0);
    for (int round = 0; round < rounds; round++) {
        stele_batch *b;
        assert_int_equal(stele_batch_create(&b), 0);
        const char *hosts[] = {"a", "b"};
        for (int h = 0; h < 2; h++) {
            for (int i = round * 6 * 360; i < (round + 1) * 6 * 360; i++) {
                stele_label labels[2] = {
                    {.name = "__name__", .name_len = 8, .value = "temp", .value_len = 4},
                    {.name = "host", .name_len = 4, .value = hosts[h], .value_len = 1},
                };
                double v = (double)((i * 7919u + seed * 104729u + (unsigned)h) % 1000) / 10;
                assert_int_equal(stele_batch_add(b, "t", labels, 2, T0 + i * 10 * NS, v), 0);
            }
        }
        assert_int_equal(stele_tsdb_write(db, b), 0);
        stele_batch_destroy(b);
        assert_int_equal(stele_tsdb_flush(db), 0);
        assert_int_equal(stele_tsdb_maintain(db), 0);
    }
    stele_tsdb_close(db);
}

static void make_store(stele_io *io, const char *dir, unsigned seed)
{
    make_store_rounds(io, dir, seed, 1);
}

typedef struct {
    int problems;
    int notes;
    char last[512];
} check_result;

static void on_problem(void *ctx, const char *path, const char *what)
{
    check_result *r = ctx;
    r->problems++;
    snprintf(r->last, sizeof(r->last), "%s: %s", path, what);
}

static void on_note(void *ctx, const char *path, const char *what)
{
    check_result *r = ctx;
    (void)path;
    (void)what;
    r->notes++;
}

static int run_check(stele_io *io, const char *dir, check_result *r)
{
    memset(r, 0, sizeof(*r));
    return stele_tsdb_check(io, dir, on_problem, on_note, r);
}

/* The block with the highest sequence number (names are zero-padded). */
static int first_name(void *ctx, const char *name)
{
    if (strstr(name, ".blk") && strcmp(name, ctx) > 0)
        snprintf(ctx, 256, "%s", name);
    return 0;
}

static void copy_file(stele_io *io, const char *from, const char *to)
{
    stele_file *f;
    uint64_t size;
    assert_int_equal(stele_io_open(io, from, STELE_IO_READ, &f), 0);
    assert_int_equal(stele_io_size(f, &size), 0);
    char *buf = malloc(size);
    assert_int_equal(stele_io_pread_full(f, buf, size, 0), 0);
    stele_io_close(f);
    assert_int_equal(
        stele_io_open(io, to, STELE_IO_READWRITE | STELE_IO_CREATE | STELE_IO_TRUNCATE, &f), 0);
    assert_int_equal(stele_io_pwrite(f, buf, size, 0), 0);
    assert_int_equal(stele_io_fsync(f), 0);
    stele_io_close(f);
    free(buf);
}

static void test_healthy_store_has_no_problem(void **state)
{
    (void)state;
    stele_io *io;
    assert_int_equal(stele_io_fault_create(7, &io), 0);
    make_store(io, "a", 1);
    check_result r;
    assert_int_equal(run_check(io, "a", &r), 0);
    assert_int_equal(r.problems, 0);
    stele_io_destroy(io);
}

static void test_disagreeing_tiers_are_reported(void **state)
{
    (void)state;
    stele_io *io;
    assert_int_equal(stele_io_fault_create(8, &io), 0);
    make_store(io, "a", 1);
    make_store(io, "b", 2); /* same series, same ids, other values */
    char name[256] = "", from[512], to[512];
    assert_int_equal(stele_io_list(io, "b/tiers/1h", first_name, name), 0);
    assert_true(name[0]);
    snprintf(from, sizeof(from), "b/tiers/1h/%s", name);
    name[0] = '\0';
    assert_int_equal(stele_io_list(io, "a/tiers/1h", first_name, name), 0);
    assert_true(name[0]);
    snprintf(to, sizeof(to), "a/tiers/1h/%s", name);
    copy_file(io, from, to);
    check_result r;
    int n = run_check(io, "a", &r);
    assert_true(n > 0);
    assert_non_null(strstr(r.last, "differs from the merged buckets of the finer tier"));
    stele_io_destroy(io);
}

static void test_damaged_tier_block_is_reported(void **state)
{
    (void)state;
    stele_io *io;
    assert_int_equal(stele_io_fault_create(9, &io), 0);
    make_store(io, "a", 1);
    char name[256] = "", path[512];
    assert_int_equal(stele_io_list(io, "a/tiers/1m", first_name, name), 0);
    snprintf(path, sizeof(path), "a/tiers/1m/%s", name);
    stele_file *f;
    uint8_t byte;
    assert_int_equal(stele_io_open(io, path, STELE_IO_READWRITE, &f), 0);
    assert_int_equal(stele_io_pread_full(f, &byte, 1, 80), 0);
    byte ^= 0x10;
    assert_int_equal(stele_io_pwrite(f, &byte, 1, 80), 0);
    assert_int_equal(stele_io_fsync(f), 0);
    stele_io_close(f);
    check_result r;
    assert_true(run_check(io, "a", &r) > 0);
    assert_non_null(strstr(r.last, "tiers/1m"));
    /* The server refuses to start on it, naming the file. */
    stele_tsdb_options o;
    store_options(io, "a", &o);
    stele_tsdb *db = NULL;
    char err[512] = "";
    assert_int_not_equal(stele_tsdb_open(&o, &db, NULL, err, sizeof(err)), 0);
    assert_non_null(strstr(err, "tiers/1m"));
    stele_io_destroy(io);
}

static void test_uncommitted_tier_block_is_noted_and_removed(void **state)
{
    (void)state;
    stele_io *io;
    assert_int_equal(stele_io_fault_create(10, &io), 0);
    make_store(io, "a", 1);
    /* A block with a sequence number above the state's committed watermark: what a
     * build step leaves when the power goes before its state is written. A store with
     * more build steps has one. */
    make_store_rounds(io, "b", 1, 3);
    char name[256] = "", from[512], to[512];
    assert_int_equal(stele_io_list(io, "b/tiers/1m", first_name, name), 0);
    snprintf(from, sizeof(from), "b/tiers/1m/%s", name);
    snprintf(to, sizeof(to), "a/tiers/1m/%s", name);
    copy_file(io, from, to);
    check_result r;
    assert_int_equal(run_check(io, "a", &r), 0);
    assert_true(r.notes >= 1);
    stele_tsdb_options o;
    store_options(io, "a", &o);
    stele_tsdb *db = NULL;
    char err[512] = "";
    assert_int_equal(stele_tsdb_open(&o, &db, NULL, err, sizeof(err)), 0);
    stele_tsdb_close(db);
    assert_int_equal(
        stele_io_exists(io, "a/tiers/1m/b00000000000000000900-00000000000000000900.blk"), 0);
    stele_io_destroy(io);
}

static void test_merged_minute_buckets_equal_the_hour(void **state)
{
    (void)state;
    uint64_t s = 12345;
    for (int round = 0; round < 200; round++) {
        int64_t ts[400];
        double v[400];
        size_t n = 0;
        int64_t t = T0 + (int64_t)(s % 600) * NS;
        while (n < 400 && t < T0 + HOUR) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            ts[n] = t;
            v[n] = (s >> 40) % 7 == 0 ? NAN : (double)((int64_t)(s >> 33) % 2000) / 8;
            if ((s >> 20) % 11 == 0)
                v[n] = 0; /* counter reset-like drops */
            n++;
            t += (int64_t)(1 + (s >> 50) % 90) * NS;
        }
        if (n == 0)
            continue;
        stele_bucket hour[2], minutes[400];
        size_t nh = stele_buckets_build(ts, v, n, HOUR, hour);
        size_t nm = stele_buckets_build(ts, v, n, 60 * NS, minutes);
        assert_int_equal(nh, 1);
        stele_bucket m = {.start = hour[0].start};
        for (size_t i = 0; i < nm; i++)
            stele_bucket_append(&m, &minutes[i]);
        assert_int_equal(m.count, hour[0].count);
        assert_true((isnan(m.min) && isnan(hour[0].min)) || m.min == hour[0].min);
        assert_true((isnan(m.max) && isnan(hour[0].max)) || m.max == hour[0].max);
        assert_true(m.first_ts == hour[0].first_ts && m.last_ts == hour[0].last_ts);
        double a = m.sum + m.sum_c, b = hour[0].sum + hour[0].sum_c;
        assert_true((isnan(a) && isnan(b)) || fabs(a - b) <= 1e-9 * fmax(fabs(a), fabs(b)));
        a = m.resets;
        b = hour[0].resets;
        assert_true((isnan(a) && isnan(b)) || fabs(a - b) <= 1e-9 * fmax(fabs(a), fabs(b)));
        s += (uint64_t)round;
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_healthy_store_has_no_problem),
        cmocka_unit_test(test_disagreeing_tiers_are_reported),
        cmocka_unit_test(test_damaged_tier_block_is_reported),
        cmocka_unit_test(test_uncommitted_tier_block_is_noted_and_removed),
        cmocka_unit_test(test_merged_minute_buckets_equal_the_hour),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
