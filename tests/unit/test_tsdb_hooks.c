/*
 * test_tsdb_hooks.c — the storage engine's log hooks (stele_tsdb_options.log_apply,
 * log_checkpoint; stele_batch_set_attachment): attachments ride in the same log record
 * as their batch's points, are applied live once durable and in log order, replayed at
 * open in log order (also when their points are below the replay expiry), a batch with
 * an attachment and no points is still written, reset removes the attachment; a flush
 * checkpoints after its blocks are published and before the log segments go, and keeps
 * them when the checkpoint fails; without a checkpoint hook a log with attachments is
 * never deleted; hook failures fail the open / the engine; `stele check` decodes both
 * record types and reports an unknown one; with writers and a flusher running
 * concurrently, checkpointed ∪ replayed attachments always equal the acknowledged ones.
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

#include "stele/io.h"
#include "stele/tsdb.h"
#include "stele/wal.h"

#define NS INT64_C(1000000000)
#define DAY (86400 * NS)
#define T0 (INT64_C(1700000000) * NS)
#define MAX_IDS 20000

typedef struct {
    pthread_mutex_t mu;
    uint32_t applied[MAX_IDS]; /* attachment ids in the order applied */
    size_t napplied;
    bool in_checkpoint[MAX_IDS]; /* the last checkpoint's set */
    bool applied_set[MAX_IDS];
    size_t checkpoints;
    int fail_apply_at;   /* fail when this id is applied (0: never) */
    int fail_checkpoint; /* errno to fail the checkpoint with (0: succeed) */
    stele_io *io;
    bool segments_at_checkpoint; /* a log segment existed when the checkpoint ran */
    int64_t now;
} hooks_state;

static int64_t fake_now(void *ctx)
{
    return ((hooks_state *)ctx)->now;
}

static int hook_apply(void *ctx, const uint8_t *a, size_t len)
{
    hooks_state *h = ctx;
    uint32_t id;
    if (len != sizeof(id))
        return -EBADMSG;
    memcpy(&id, a, sizeof(id));
    if (h->fail_apply_at && (int)id == h->fail_apply_at)
        return -EIO;
    pthread_mutex_lock(&h->mu);
    if (h->napplied < MAX_IDS)
        h->applied[h->napplied++] = id;
    h->applied_set[id] = true;
    pthread_mutex_unlock(&h->mu);
    return 0;
}

static int count_seg(void *ctx, const char *name)
{
    size_t n = strlen(name);
    if (n > 4 && !strcmp(name + n - 4, ".seg"))
        ++*(int *)ctx;
    return 0;
}

static int hook_checkpoint(void *ctx)
{
    hooks_state *h = ctx;
    if (h->fail_checkpoint)
        return -h->fail_checkpoint;
    int segs = 0;
    stele_io_list(h->io, "db/wal", count_seg, &segs);
    pthread_mutex_lock(&h->mu);
    h->segments_at_checkpoint = segs > 0;
    memcpy(h->in_checkpoint, h->applied_set, sizeof(h->in_checkpoint));
    h->checkpoints++;
    pthread_mutex_unlock(&h->mu);
    return 0;
}

static void options(hooks_state *h, stele_tsdb_options *o, bool hooks)
{
    stele_tsdb_options_default(o);
    o->dir = "db";
    o->io = h->io;
    o->background = false;
    o->ntiers = 0;
    o->retention_ns = 2 * DAY;
    o->now_ns = fake_now;
    o->now_ctx = h;
    if (hooks) {
        o->log_apply = hook_apply;
        o->log_checkpoint = hook_checkpoint;
        o->log_hooks_ctx = h;
    }
}

static stele_tsdb *open_db(hooks_state *h, bool hooks)
{
    stele_tsdb_options o;
    stele_tsdb *db = NULL;
    char err[512] = "";
    options(h, &o, hooks);
    int rc = stele_tsdb_open(&o, &db, NULL, err, sizeof(err));
    if (rc)
        fail_msg("open failed: %d %s", rc, err);
    return db;
}

static hooks_state *state_new(void)
{
    hooks_state *h = calloc(1, sizeof(*h));
    pthread_mutex_init(&h->mu, NULL);
    assert_int_equal(stele_io_fault_create(7, &h->io), 0);
    h->now = T0 + 10 * DAY;
    return h;
}

static void state_free(hooks_state *h)
{
    stele_io_destroy(h->io);
    pthread_mutex_destroy(&h->mu);
    free(h);
}

static void forget_applied(hooks_state *h)
{
    h->napplied = 0;
    memset(h->applied_set, 0, sizeof(h->applied_set));
}

/* A batch of npoints points of series host=<host> at ts, with attachment id (0: none). */
static int write(stele_tsdb *db, stele_batch *b, const char *host, int64_t ts, int npoints,
                 uint32_t id)
{
    stele_label l[2] = {{"__name__", 8, "m", 1}, {"host", 4, host, (uint32_t)strlen(host)}};
    stele_batch_reset(b);
    for (int i = 0; i < npoints; i++)
        assert_int_equal(stele_batch_add(b, "t", l, 2, ts + i, (double)id), 0);
    if (id)
        assert_int_equal(stele_batch_set_attachment(b, &id, sizeof(id)), 0);
    return stele_tsdb_write(db, b);
}

static int count_points(void *ctx, const stele_series_view *s)
{
    *(size_t *)ctx += s->n;
    return 0;
}

static size_t points(stele_tsdb *db)
{
    stele_matcher m = {"__name__", "m", STELE_MATCH_EQUAL};
    size_t n = 0;
    char err[256];
    assert_int_equal(
        stele_tsdb_select(db, "t", &m, 1, INT64_MIN, INT64_MAX, count_points, &n, err, sizeof(err)),
        0);
    return n;
}

typedef struct {
    int problems;
    char what[512];
} check_ctx;

static void on_problem(void *ctx, const char *path, const char *what)
{
    check_ctx *c = ctx;
    c->problems++;
    snprintf(c->what, sizeof(c->what), "%s: %s", path, what);
}

static void test_apply_live_and_on_replay(void **state)
{
    (void)state;
    hooks_state *h = state_new();
    stele_batch *b;
    assert_int_equal(stele_batch_create(&b), 0);
    stele_tsdb *db = open_db(h, true);
    int64_t ts = h->now - DAY;
    assert_int_equal(write(db, b, "a", ts, 3, 1), 0);
    assert_int_equal(write(db, b, "a", ts + 10, 0, 2), 0); /* no points: still written */
    assert_int_equal(write(db, b, "b", ts, 2, 0), 0);      /* no attachment */
    stele_batch_reset(b);                                  /* reset drops the attachment */
    stele_label l[2] = {{"__name__", 8, "m", 1}, {"host", 4, "c", 1}};
    assert_int_equal(stele_batch_add(b, "t", l, 2, ts, 1), 0);
    assert_int_equal(stele_tsdb_write(db, b), 0);
    assert_int_equal(write(db, b, "a", ts + 20, 1, 3), 0);
    assert_int_equal(h->napplied, 3);
    assert_int_equal(h->applied[0], 1);
    assert_int_equal(h->applied[1], 2);
    assert_int_equal(h->applied[2], 3);
    assert_int_equal(points(db), 7);
    /* Replay applies them again, in log order. */
    stele_tsdb_close(db);
    forget_applied(h);
    db = open_db(h, true);
    assert_int_equal(h->napplied, 3);
    assert_int_equal(h->applied[0], 1);
    assert_int_equal(h->applied[1], 2);
    assert_int_equal(h->applied[2], 3);
    assert_int_equal(points(db), 7);
    /* `stele check` decodes both record types. */
    stele_tsdb_close(db);
    check_ctx c = {0};
    assert_int_equal(stele_tsdb_check(h->io, "db", on_problem, NULL, &c), 0);
    /* Opened without hooks (a tool): attachments skipped, points replayed. */
    db = open_db(h, false);
    assert_int_equal(points(db), 7);
    stele_tsdb_close(db);
    stele_batch_destroy(b);
    state_free(h);
}

static void test_apply_below_replay_expiry(void **state)
{
    (void)state;
    hooks_state *h = state_new();
    stele_batch *b;
    assert_int_equal(stele_batch_create(&b), 0);
    stele_tsdb *db = open_db(h, true);
    int64_t ts = h->now - 2 * DAY + DAY / 10;
    assert_int_equal(write(db, b, "a", ts, 1, 0), 0);
    assert_int_equal(stele_tsdb_flush(db), 0); /* a block at ts */
    assert_int_equal(write(db, b, "a", ts, 1, 5), 0);
    h->now += DAY / 5;
    assert_int_equal(stele_tsdb_maintain(db), 0); /* drops the block: expiry past ts */
    stele_tsdb_close(db);
    forget_applied(h);
    db = open_db(h, true);
    assert_int_equal(points(db), 0);  /* the point is not replayed… */
    assert_int_equal(h->napplied, 1); /* …its attachment is */
    assert_int_equal(h->applied[0], 5);
    stele_tsdb_close(db);
    stele_batch_destroy(b);
    state_free(h);
}

static void test_checkpoint_before_segments_go(void **state)
{
    (void)state;
    hooks_state *h = state_new();
    stele_batch *b;
    assert_int_equal(stele_batch_create(&b), 0);
    stele_tsdb *db = open_db(h, true);
    int64_t ts = h->now - DAY;
    for (uint32_t id = 1; id <= 5; id++)
        assert_int_equal(write(db, b, "a", ts + id * 10, 2, id), 0);
    /* A failed checkpoint fails the flush and keeps the segments. */
    h->fail_checkpoint = EIO;
    assert_int_equal(stele_tsdb_flush(db), -EIO);
    stele_tsdb_close(db);
    forget_applied(h);
    db = open_db(h, true);
    assert_int_equal(h->napplied, 5);
    assert_int_equal(points(db), 10);
    /* A checkpoint runs while the segments are still there; after it they are gone. */
    h->fail_checkpoint = 0;
    assert_int_equal(write(db, b, "a", ts + 100, 1, 6), 0);
    assert_int_equal(stele_tsdb_flush(db), 0);
    assert_int_equal(h->checkpoints, 1);
    assert_true(h->segments_at_checkpoint);
    for (uint32_t id = 1; id <= 6; id++)
        assert_true(h->in_checkpoint[id]);
    assert_int_equal(write(db, b, "a", ts + 200, 1, 7), 0);
    stele_tsdb_close(db);
    forget_applied(h);
    db = open_db(h, true);
    assert_int_equal(h->napplied, 1); /* only what came after the checkpoint */
    assert_int_equal(h->applied[0], 7);
    assert_int_equal(points(db), 12);
    stele_tsdb_close(db);
    stele_batch_destroy(b);
    state_free(h);
}

static void test_no_checkpoint_hook_keeps_log(void **state)
{
    (void)state;
    hooks_state *h = state_new();
    stele_batch *b;
    assert_int_equal(stele_batch_create(&b), 0);
    stele_tsdb *db = open_db(h, false);
    assert_int_equal(write(db, b, "a", h->now - DAY, 2, 1), 0);
    assert_int_equal(stele_tsdb_flush(db), 0);
    assert_int_equal(write(db, b, "a", h->now - DAY + 5, 1, 2), 0);
    assert_int_equal(stele_tsdb_flush(db), 0);
    stele_tsdb_close(db);
    db = open_db(h, true);
    assert_int_equal(h->napplied, 2); /* both records are still in the log */
    assert_int_equal(points(db), 3);
    stele_tsdb_close(db);
    stele_batch_destroy(b);
    state_free(h);
}

static void test_hook_failures(void **state)
{
    (void)state;
    hooks_state *h = state_new();
    stele_batch *b;
    assert_int_equal(stele_batch_create(&b), 0);
    stele_tsdb *db = open_db(h, true);
    assert_int_equal(write(db, b, "a", h->now - DAY, 1, 1), 0);
    h->fail_apply_at = 2;
    assert_int_equal(write(db, b, "a", h->now - DAY + 1, 1, 2), -EIO);
    assert_int_equal(stele_tsdb_health(db), -EIO);
    assert_int_not_equal(write(db, b, "a", h->now - DAY + 2, 1, 3), 0);
    /* An unhealthy engine does not checkpoint or delete the log. */
    assert_int_not_equal(stele_tsdb_flush(db), 0);
    assert_int_equal(h->checkpoints, 0);
    stele_tsdb_close(db);
    /* Replay: the failing hook fails the open. */
    stele_tsdb_options o;
    options(h, &o, true);
    stele_tsdb *db2 = NULL;
    char err[512] = "";
    assert_int_equal(stele_tsdb_open(&o, &db2, NULL, err, sizeof(err)), -EIO);
    assert_null(db2);
    h->fail_apply_at = 0;
    forget_applied(h);
    db = open_db(h, true);
    assert_int_equal(h->napplied, 2); /* the durable record is replayed */
    stele_tsdb_close(db);
    stele_batch_destroy(b);
    state_free(h);
}

static int no_replay(void *ctx, uint64_t seg, uint32_t type, const uint8_t *p, size_t len)
{
    (void)ctx, (void)seg, (void)type, (void)p, (void)len;
    return 0;
}

static void test_check_unknown_record_type(void **state)
{
    (void)state;
    hooks_state *h = state_new();
    stele_wal_options wo = {.io = h->io, .dir = "db/wal"};
    stele_wal *w = NULL;
    uint64_t lsn;
    assert_int_equal(stele_io_mkdir(h->io, "db"), 0);
    stele_wal_replay_stats ws;
    assert_int_equal(stele_wal_open(&wo, no_replay, NULL, &ws, &w, NULL, 0), 0);
    uint8_t attached[] = {200, 1}; /* attachment length 200 in a 2-byte payload */
    assert_int_equal(stele_wal_append(w, 2, attached, sizeof(attached), NULL, 0, &lsn), 0);
    assert_int_equal(stele_wal_append(w, 3, "x", 1, NULL, 0, &lsn), 0);
    assert_int_equal(stele_wal_wait(w, lsn), 0);
    stele_wal_close(w);
    check_ctx c = {0};
    assert_int_equal(stele_tsdb_check(h->io, "db", on_problem, NULL, &c), 2);
    assert_non_null(strstr(c.what, "unknown record type"));
    state_free(h);
}

/* Writers with attachments and a flusher, concurrently: the last checkpoint plus what
 * the log replays must be exactly the acknowledged attachments — an attachment applied
 * after the flush stopped waiting would be in neither. */
typedef struct {
    stele_tsdb *db;
    hooks_state *h;
    uint32_t first, count;
    bool acked[MAX_IDS];
} writer_arg;

static void *writer_main(void *p)
{
    writer_arg *w = p;
    stele_batch *b;
    if (stele_batch_create(&b))
        return NULL;
    char host[16];
    for (uint32_t i = 0; i < w->count; i++) {
        uint32_t id = w->first + i;
        snprintf(host, sizeof(host), "w%u", w->first);
        stele_label l[2] = {{"__name__", 8, "m", 1}, {"host", 4, host, (uint32_t)strlen(host)}};
        stele_batch_reset(b);
        stele_batch_add(b, "t", l, 2, w->h->now - DAY + id, (double)id);
        stele_batch_set_attachment(b, &id, sizeof(id));
        if (stele_tsdb_write(w->db, b) == 0)
            w->acked[id] = true;
    }
    stele_batch_destroy(b);
    return NULL;
}

static void *flusher_main(void *p)
{
    writer_arg *w = p;
    for (uint32_t i = 0; i < w->count; i++)
        stele_tsdb_flush(w->db);
    return NULL;
}

static void test_concurrent_flush_checkpoints_everything(void **state)
{
    (void)state;
    for (int round = 0; round < 10; round++) {
        hooks_state *h = state_new();
        stele_tsdb *db = open_db(h, true);
        static writer_arg args[4];
        pthread_t t[4];
        for (int i = 0; i < 4; i++) {
            memset(&args[i], 0, sizeof(args[i]));
            args[i].db = db;
            args[i].h = h;
            args[i].first = 1 + (uint32_t)i * 1000;
            args[i].count = i < 3 ? 600 : 60;
            pthread_create(&t[i], NULL, i < 3 ? writer_main : flusher_main, &args[i]);
        }
        for (int i = 0; i < 4; i++)
            pthread_join(t[i], NULL);
        stele_tsdb_close(db);
        forget_applied(h);
        db = open_db(h, true);
        for (int i = 0; i < 3; i++)
            for (uint32_t k = 0; k < args[i].count; k++) {
                uint32_t id = args[i].first + k;
                bool have = h->applied_set[id] || (h->checkpoints && h->in_checkpoint[id]);
                if (args[i].acked[id] && !have)
                    fail_msg("round %d: acknowledged attachment %u neither checkpointed nor "
                             "replayed (%zu checkpoints)",
                             round, id, h->checkpoints);
            }
        stele_tsdb_close(db);
        state_free(h);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_apply_live_and_on_replay),
        cmocka_unit_test(test_apply_below_replay_expiry),
        cmocka_unit_test(test_checkpoint_before_segments_go),
        cmocka_unit_test(test_no_checkpoint_hook_keeps_log),
        cmocka_unit_test(test_hook_failures),
        cmocka_unit_test(test_check_unknown_record_type),
        cmocka_unit_test(test_concurrent_flush_checkpoints_everything),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
