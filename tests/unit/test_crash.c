/*
 * test_crash.c — crash tests of the storage engine on the fault-injecting file system
 * (SQLite/RocksDB style): random writes, overwrites, flushes and compactions, with
 * I/O faults (EIO, ENOSPC, torn and garbage writes) scheduled at random operations and
 * power cuts after them; after every cut the engine is reopened on what survived and
 * must hold exactly the acknowledged state:
 *   - every acknowledged point is present, with its last acknowledged value or with a
 *     value written after it (a write whose acknowledgement was lost may survive);
 *   - nothing is invented: every point present was written, and never an older value
 *     than the last acknowledged one.
 * Every value is the unique number of the write that issued it, which is what makes
 * "older than the last acknowledged" checkable.
 *
 * A second test cuts the power at a random moment while several threads write and a
 * thread flushes concurrently, to exercise group commit and the head swap.
 *
 * Seeds: STELE_TEST_SEED fixes the first seed; every failure prints the seed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "stele/io.h"
#include "stele/tsdb.h"

#include "test_util.h"

#define NS INT64_C(1000000000)
#define HOUR (3600 * NS)
#define T0 (INT64_C(1750000000) * NS)
#define SERIES 6
#define SLOTS 1500 /* timestamps per series */
#define MAX_ISSUES 400000

typedef struct {
    int64_t acked[SERIES][SLOTS];    /* issue number of the last acknowledged write, or -1 */
    uint32_t issue_cell[MAX_ISSUES]; /* issue number → series * SLOTS + slot */
    int64_t issues;
    pthread_mutex_t mu;
} model;

static int64_t fake_now(void *ctx)
{
    (void)ctx;
    return T0 + 48 * HOUR;
}

static const char *series_host[SERIES] = {"h0", "h1", "h2", "h3", "h4", "h5"};

static int64_t slot_ts(int slot)
{
    /* Spread over ~42 hours so blocks span several 6-hour partitions. */
    return T0 + (int64_t)slot * 100 * NS;
}

static void options(stele_io *io, stele_tsdb_options *o)
{
    stele_tsdb_options_default(o);
    o->dir = "db";
    o->io = io;
    o->background = false;
    o->now_ns = fake_now;
    o->partition_ns = 6 * HOUR;
    o->compact_min_blocks = 2;
    o->head_max_points = 1u << 20;
}

static void add_point(stele_batch *b, int series, int slot, int64_t issue)
{
    stele_label labels[2] = {
        {.name = "__name__", .name_len = 8, .value = "m", .value_len = 1},
        {.name = "host", .name_len = 4, .value = series_host[series], .value_len = 2},
    };
    assert_int_equal(stele_batch_add(b, "t", labels, 2, slot_ts(slot), (double)issue), 0);
}

/* Issues a batch of n random points on series ≡ lane (mod lanes); returns the write's
 * result. Concurrent writers use separate lanes: between two threads, which write is
 * "later" is decided by the log order, not by issue numbers. */
static int write_batch_lane(stele_tsdb *db, stele_batch *b, model *m, uint64_t *rng, int n,
                            int lane, int lanes)
{
    int cells[64];
    int64_t first;
    stele_batch_reset(b);
    pthread_mutex_lock(&m->mu);
    first = m->issues;
    if (m->issues + n > MAX_ISSUES) {
        pthread_mutex_unlock(&m->mu);
        return -ENOSPC;
    }
    for (int i = 0; i < n; i++) {
        int series = lane + lanes * (int)(test_rng_next(rng) % (SERIES / lanes));
        int slot = (int)(test_rng_next(rng) % SLOTS);
        cells[i] = series * SLOTS + slot;
        m->issue_cell[m->issues] = (uint32_t)cells[i];
        add_point(b, series, slot, m->issues++);
    }
    pthread_mutex_unlock(&m->mu);
    int rc = stele_tsdb_write(db, b);
    if (rc == 0) {
        pthread_mutex_lock(&m->mu);
        for (int i = 0; i < n; i++) {
            int64_t *a = &m->acked[cells[i] / SLOTS][cells[i] % SLOTS];
            if (first + i > *a)
                *a = first + i;
        }
        pthread_mutex_unlock(&m->mu);
    }
    return rc;
}

static int write_batch(stele_tsdb *db, stele_batch *b, model *m, uint64_t *rng, int n)
{
    return write_batch_lane(db, b, m, rng, n, 0, 1);
}

typedef struct {
    model *m;
    uint64_t seed;
    int cycle;
    int found[SERIES][SLOTS];
    int failures;
} verify_ctx;

static int verify_series(void *arg, const stele_series_view *s)
{
    verify_ctx *v = arg;
    int series = -1;
    for (size_t i = 0; i < s->nlabels; i++)
        if (s->labels[i].name_len == 4 && !memcmp(s->labels[i].name, "host", 4))
            series = s->labels[i].value[1] - '0';
    if (series < 0 || series >= SERIES) {
        fprintf(stderr, "seed %" PRIu64 ": invented series\n", v->seed);
        v->failures++;
        return 0;
    }
    for (size_t i = 0; i < s->n; i++) {
        int64_t off = s->ts[i] - T0;
        int slot = (int)(off / (100 * NS));
        int64_t issue = (int64_t)s->values[i];
        if (off % (100 * NS) || slot < 0 || slot >= SLOTS || issue < 0 || issue >= v->m->issues ||
            (double)issue != s->values[i] ||
            v->m->issue_cell[issue] != (uint32_t)(series * SLOTS + slot)) {
            fprintf(stderr,
                    "seed %" PRIu64 " cycle %d: invented point h%d ts %" PRId64 " value %g\n",
                    v->seed, v->cycle, series, s->ts[i], s->values[i]);
            v->failures++;
            continue;
        }
        if (issue < v->m->acked[series][slot]) {
            fprintf(stderr,
                    "seed %" PRIu64 " cycle %d: h%d slot %d holds write %" PRId64
                    ", older than acknowledged write %" PRId64 "\n",
                    v->seed, v->cycle, series, slot, issue, v->m->acked[series][slot]);
            v->failures++;
        }
        v->found[series][slot] = 1;
    }
    return 0;
}

static void verify(stele_tsdb *db, model *m, uint64_t seed, int cycle)
{
    verify_ctx *v = calloc(1, sizeof(*v));
    v->m = m;
    v->seed = seed;
    v->cycle = cycle;
    stele_matcher all = {"__name__", "m", STELE_MATCH_EQUAL};
    char err[256];
    int rc = stele_tsdb_select(db, "t", &all, 1, INT64_MIN, INT64_MAX, verify_series, v, err,
                               sizeof(err));
    if (rc)
        fail_msg("seed %" PRIu64 ": select failed: %d %s", seed, rc, err);
    for (int s = 0; s < SERIES; s++)
        for (int t = 0; t < SLOTS; t++)
            if (m->acked[s][t] >= 0 && !v->found[s][t]) {
                fprintf(stderr,
                        "seed %" PRIu64 " cycle %d: acknowledged point h%d slot %d (write %" PRId64
                        ") lost\n",
                        seed, cycle, s, t, m->acked[s][t]);
                v->failures++;
            }
    int failures = v->failures;
    free(v);
    if (failures)
        fail_msg("seed %" PRIu64 " cycle %d: %d violations (rerun with STELE_TEST_SEED=%" PRIu64
                 ")",
                 seed, cycle, failures, seed);
}

static stele_tsdb *reopen(stele_io *io, uint64_t seed, int cycle)
{
    stele_tsdb_options o;
    stele_tsdb *db = NULL;
    char err[512] = "";
    options(io, &o);
    int rc = stele_tsdb_open(&o, &db, NULL, err, sizeof(err));
    if (rc)
        fail_msg("seed %" PRIu64 " cycle %d: recovery failed: %d %s", seed, cycle, rc, err);
    return db;
}

static model *model_new(void)
{
    model *m = calloc(1, sizeof(*m));
    for (int s = 0; s < SERIES; s++)
        for (int t = 0; t < SLOTS; t++)
            m->acked[s][t] = -1;
    pthread_mutex_init(&m->mu, NULL);
    return m;
}

static uint64_t first_seed(void)
{
    const char *env = getenv("STELE_TEST_SEED");
    return env ? strtoull(env, NULL, 10) : (uint64_t)time(NULL);
}

/* One seed: several cycles of work → fault → power cut → recovery → verify. */
static void run_fault_seed(uint64_t seed)
{
    stele_io *io = NULL;
    stele_batch *b = NULL;
    model *m = model_new();
    uint64_t rng = seed;
    assert_int_equal(stele_io_fault_create(seed, &io), 0);
    assert_int_equal(stele_batch_create(&b), 0);
    stele_tsdb *db = reopen(io, seed, 0);
    for (int cycle = 1; cycle <= 4; cycle++) {
        /* Schedule one fault somewhere in the next stretch of work. */
        enum stele_fault_op op =
            test_rng_next(&rng) % 2 ? STELE_FAULT_OP_WRITE : STELE_FAULT_OP_FSYNC;
        int errno_value = test_rng_next(&rng) % 3 == 0 ? ENOSPC : EIO;
        stele_io_fault_fail_after(io, op, 1 + test_rng_next(&rng) % 40, errno_value);
        int steps = 10 + (int)(test_rng_next(&rng) % 30);
        for (int step = 0; step < steps; step++) {
            uint64_t what = test_rng_next(&rng) % 10;
            int rc;
            if (what < 7)
                rc = write_batch(db, b, m, &rng, 1 + (int)(test_rng_next(&rng) % 60));
            else if (what < 9)
                rc = stele_tsdb_flush(db);
            else
                rc = stele_tsdb_maintain(db);
            if (rc)
                break; /* the machine dies at the first failure */
        }
        enum stele_fault_cut_mode mode = (enum stele_fault_cut_mode)(test_rng_next(&rng) % 3);
        stele_io_fault_power_cut(io, mode);
        stele_tsdb_close(db);
        db = reopen(io, seed, cycle);
        verify(db, m, seed, cycle);
    }
    stele_tsdb_close(db);
    stele_batch_destroy(b);
    stele_io_destroy(io);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

static void test_random_faults_and_power_cuts(void **state)
{
    (void)state;
    uint64_t seed = first_seed();
    int seeds = getenv("STELE_CRASH_SEEDS") ? atoi(getenv("STELE_CRASH_SEEDS")) : 150;
    fprintf(stderr, "crash test: seeds %" PRIu64 "..%" PRIu64 "\n", seed, seed + seeds - 1);
    for (int i = 0; i < seeds; i++)
        run_fault_seed(seed + (uint64_t)i);
}

typedef struct {
    stele_tsdb *db;
    model *m;
    uint64_t rng;
    int lane;
    volatile int stop;
} worker_arg;

static void *writer_main(void *p)
{
    worker_arg *w = p;
    stele_batch *b;
    if (stele_batch_create(&b))
        return NULL;
    while (!w->stop)
        if (write_batch_lane(w->db, b, w->m, &w->rng, 1 + (int)(test_rng_next(&w->rng) % 40),
                             w->lane, 2) != 0 &&
            stele_tsdb_health(w->db) != 0)
            break;
    stele_batch_destroy(b);
    return NULL;
}

static void *flusher_main(void *p)
{
    worker_arg *w = p;
    while (!w->stop) {
        if (stele_tsdb_flush(w->db) != 0 && stele_tsdb_health(w->db) != 0)
            break;
        stele_tsdb_maintain(w->db);
        usleep(2000);
    }
    return NULL;
}

static void test_power_cut_during_concurrent_writes(void **state)
{
    (void)state;
    uint64_t seed = first_seed() ^ 0x5151;
    int rounds = getenv("STELE_CRASH_SEEDS") ? atoi(getenv("STELE_CRASH_SEEDS")) / 5 + 1 : 30;
    for (int r = 0; r < rounds; r++, seed++) {
        stele_io *io = NULL;
        model *m = model_new();
        uint64_t rng = seed;
        assert_int_equal(stele_io_fault_create(seed, &io), 0);
        stele_tsdb *db = reopen(io, seed, 0);
        for (int cycle = 1; cycle <= 2; cycle++) {
            worker_arg args[3];
            pthread_t threads[3];
            for (int i = 0; i < 3; i++) {
                args[i] = (worker_arg){
                    .db = db, .m = m, .rng = test_rng_next(&rng), .lane = i % 2, .stop = 0};
                pthread_create(&threads[i], NULL, i < 2 ? writer_main : flusher_main, &args[i]);
            }
            usleep((useconds_t)(1000 + test_rng_next(&rng) % 20000));
            stele_io_fault_power_cut(io, (enum stele_fault_cut_mode)(test_rng_next(&rng) % 3));
            for (int i = 0; i < 3; i++)
                args[i].stop = 1;
            for (int i = 0; i < 3; i++)
                pthread_join(threads[i], NULL);
            stele_tsdb_close(db);
            db = reopen(io, seed, cycle);
            verify(db, m, seed, cycle);
        }
        stele_tsdb_close(db);
        stele_io_destroy(io);
        pthread_mutex_destroy(&m->mu);
        free(m);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_faults_and_power_cuts),
        cmocka_unit_test(test_power_cut_during_concurrent_writes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
