/*
 * test_tier_crash.c — crash tests of tier building, tier compaction and retention on
 * the fault-injecting file system (issue 4). Random writes (in-order, slightly future,
 * late points into buckets already built, rewrites of acknowledged points), flushes,
 * tier builds and maintenance (tier build + raw retention + raw compaction + tier
 * retention + tier compaction) run single-threaded against a fake clock that advances,
 * so raw retention drops blocks and tiers drop theirs. Each cycle schedules one I/O
 * fault (EIO or ENOSPC on a write or an fsync) — at a random operation, or aimed inside
 * the next flush, tier build or maintenance by the operation counts such calls took
 * before (uniformly, or at their last few operations: the tiers/state write, the log
 * segment removal, the final directory fsyncs). Half the cycles the machine dies at the
 * first failure; the other half it carries on, as the server's background thread does,
 * so error paths must leave a consistent running state. Then the power is cut (DROP,
 * TORN or GARBAGE), and the store reopened on what survived — a third of the time with
 * a fault aimed into recovery itself, after which a fault-free reopen must succeed.
 * A failing operation followed by a cut is a cut at that instant.
 *
 * Checked before every cut (the running engine), after reopening, after a rebuild
 * (stele_tsdb_build_tiers) and after reopening that:
 *   - raw data is exactly the acknowledged state (as test_crash.c): every acknowledged
 *     point at or after the raw expiry (stele_tsdb_tiers()[0].expired_before) is
 *     present with its last acknowledged value or a later write's; nothing present was
 *     never written; below the expiry points may be missing (or outdated: retention
 *     drops whole blocks);
 *   - every tier's buckets (stele_tsdb_select_buckets) equal stele_buckets_build over
 *     the raw samples stele_tsdb_select returns, bucket for bucket (one present in only
 *     one of them is a failure), from the raw expiry rounded up to the coarsest
 *     resolution and the tier's own expiry on: exact for count/min/max/first/last and
 *     their timestamps, 1e-9 relative for sum and resets;
 *   - below that, where raw data is partial, a tier bucket never changes once seen (no
 *     write can reach it any more) until the tier's retention takes it;
 *   - before the cut and after recovery, count/min/max/last_over_time from
 *     stele_query_eval with each tier's resolution forced give the raw answer's JSON;
 *   - stele_tsdb_check finds no problem in the directory.
 * Values are the write's unique issue number (negated for every third), so an invented
 * or outdated value is recognisable, and rewrites and late points make counter resets.
 *
 * Seeds: STELE_TEST_SEED fixes the first seed, STELE_TIER_CRASH_SEEDS the number of
 * seeds (100; one takes ~50 ms, ~250 ms under ASan); every failure prints the seed.
 * STELE_TIER_CRASH_VERBOSE=1 traces every step and directory, to replay one seed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
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
#define MINUTE (60 * NS)
#define HOUR (60 * MINUTE)
/* A UTC midnight, so raw partitions, tier partitions and buckets all align on it. */
#define T0 (INT64_C(1750032000) * NS)
/* Timestamps sit on a 15 s grid: four per 1-minute bucket, so buckets hold several
 * points and random writes often hit a timestamp already written (rewrites). */
#define SLOT_NS (15 * NS)
#define SERIES 4
#define SLOTS 4096 /* 17 h of grid; the clock stops well before its end */
#define CLOCK_START (T0 + 10 * MINUTE)
#define CLOCK_END (T0 + 15 * HOUR)
#define MAX_ISSUES 100000 /* a seed issues ~5000 points */
/* Short retentions (raw and 1m tier 1 h, 10m tier 90 min) so that a run of several
 * simulated hours goes through raw and tier retention many times. */
#define RAW_RETENTION (1 * HOUR)
#define TIERS 2
#define TIER1_RES MINUTE
#define TIER1_RETENTION (1 * HOUR)
#define TIER2_RES (10 * MINUTE)
#define TIER2_RETENTION (90 * MINUTE)
#define PARTITION (30 * MINUTE)
/* A small head: writes fill it within a few batches; -EAGAIN makes the test flush. */
#define HEAD_MAX_POINTS 250
/* The window every verification reads: all the grid, bucket-aligned at both ends. */
#define WINDOW_MIN (T0 - HOUR)
#define WINDOW_MAX (T0 + 18 * HOUR - 1)
/* Bucket slots of the finest tier over the window, for the frozen-bucket record. */
#define GRID_BUCKETS ((WINDOW_MAX + 1 - WINDOW_MIN) / TIER1_RES)
#define CYCLES 8
#define DEFAULT_SEEDS 100
#define MAX_REPORTS 12 /* mismatch lines printed per verification */

/* STEP_OPEN is recovery, which faults may hit too; it is never a random step. */
enum step_kind { STEP_WRITE, STEP_FLUSH, STEP_BUILD, STEP_MAINTAIN, STEP_OPEN, NSTEP_KINDS };
static const char *step_name[NSTEP_KINDS] = {"write", "flush", "build_tiers", "maintain", "open"};

/* Where a cycle's fault is aimed. */
enum fault_aim { AIM_ANYWHERE, AIM_FLUSH, AIM_BUILD, AIM_MAINTAIN, AIM_NONE, NAIMS };

typedef struct {
    uint64_t cycles, faulted_calls[NSTEP_KINDS], aimed_hits[NAIMS], raw_drops, tier_drops,
        tier_builds, stale_below_expiry, expiry_cycles, points_acked, open_faults, open_refused,
        queries_compared;
} totals;

typedef struct {
    uint64_t seed, rng;
    int cycle;
    const char *phase;
    int64_t now;
    stele_io *io;
    stele_tsdb *db;
    stele_batch *batch;
    int64_t acked[SERIES][SLOTS];    /* issue number of the last acknowledged write, or -1 */
    uint32_t issue_cell[MAX_ISSUES]; /* issue number → series * SLOTS + slot */
    int64_t issues;
    uint64_t est_ops[NSTEP_KINDS][2];  /* most write/fsync operations one call took */
    uint64_t last_ops[NSTEP_KINDS][2]; /* ...and the last call */
    uint32_t compact_min_blocks;       /* per seed: 2 compacts tiers often, 4 keeps more
                                        * small tier blocks for tier retention to drop */
    /* Tier buckets seen below the raw expiry, by (start − WINDOW_MIN) / resolution: no
     * write can reach them any more, so they must never change until the tier's own
     * retention takes them. */
    stele_bucket frozen[SERIES][TIERS + 1][GRID_BUCKETS];
    uint8_t frozen_set[SERIES][TIERS + 1][GRID_BUCKETS];
    totals *tot;
} run_state;

static uint64_t below(run_state *rs, uint64_t n)
{
    return n ? test_rng_next(&rs->rng) % n : 0;
}

static int64_t test_clock(void *ctx)
{
    return ((const run_state *)ctx)->now;
}

static double issue_value(int64_t issue)
{
    return issue % 3 == 2 ? -(double)issue : (double)issue;
}

static int64_t slot_ts(int slot)
{
    return T0 + (int64_t)slot * SLOT_NS;
}

static const char *series_host[SERIES] = {"h0", "h1", "h2", "h3"};

/* An expiry for messages: "T0+3600s", or "never". */
static const char *expiry_name(int64_t t, char *buf, size_t cap)
{
    if (t == INT64_MIN)
        return "never";
    snprintf(buf, cap, "T0%+" PRId64 "s", (t - T0) / NS);
    return buf;
}

static void options(run_state *rs, stele_tsdb_options *o)
{
    stele_tsdb_options_default(o);
    o->dir = "db";
    o->io = rs->io;
    o->background = false;
    o->now_ns = test_clock;
    o->now_ctx = rs;
    o->retention_ns = RAW_RETENTION;
    o->partition_ns = PARTITION;
    o->compact_min_blocks = rs->compact_min_blocks;
    o->head_max_points = HEAD_MAX_POINTS;
    o->ntiers = TIERS;
    o->tier_resolution_ns[0] = TIER1_RES;
    o->tier_retention_ns[0] = TIER1_RETENTION;
    o->tier_resolution_ns[1] = TIER2_RES;
    o->tier_retention_ns[1] = TIER2_RETENTION;
}

/* Opens the store; counts the write and fsync operations recovery took. */
static int db_try_open(run_state *rs, char *err, size_t errcap)
{
    stele_tsdb_options o;
    uint64_t w0 = stele_io_fault_op_count(rs->io, STELE_FAULT_OP_WRITE);
    uint64_t f0 = stele_io_fault_op_count(rs->io, STELE_FAULT_OP_FSYNC);
    options(rs, &o);
    rs->db = NULL;
    err[0] = '\0';
    int rc = stele_tsdb_open(&o, &rs->db, NULL, err, errcap);
    uint64_t ops[2] = {stele_io_fault_op_count(rs->io, STELE_FAULT_OP_WRITE) - w0,
                       stele_io_fault_op_count(rs->io, STELE_FAULT_OP_FSYNC) - f0};
    for (int op = 0; op < 2; op++) {
        if (ops[op] > rs->est_ops[STEP_OPEN][op])
            rs->est_ops[STEP_OPEN][op] = ops[op];
        rs->last_ops[STEP_OPEN][op] = ops[op];
    }
    if (rc)
        rs->db = NULL;
    return rc;
}

static void db_open(run_state *rs)
{
    char err[512];
    int rc = db_try_open(rs, err, sizeof(err));
    if (rc)
        fail_msg("seed %" PRIu64 " cycle %d (%s): reopen refused: %d %s (rerun with "
                 "STELE_TEST_SEED=%" PRIu64 " STELE_TIER_CRASH_SEEDS=1)",
                 rs->seed, rs->cycle, rs->phase, rc, err, rs->seed);
}

/* Adds up what the engine reports about retention and builds before it goes. */
static void db_close(run_state *rs)
{
    stele_tsdb_stats st;
    stele_tsdb_get_stats(rs->db, &st);
    rs->tot->raw_drops += st.retention_drops;
    for (size_t t = 0; t < st.ntiers; t++) {
        rs->tot->tier_drops += st.tiers[t].retention_drops;
        rs->tot->tier_builds += st.tiers[t].builds;
    }
    stele_tsdb_close(rs->db);
    rs->db = NULL;
}

/* ---- writing -------------------------------------------------------------------- */

/* A slot for a new point: mostly recent, some slightly ahead of the clock, some
 * anywhere the engine still accepts (late points into built buckets), some exactly
 * on a recently written cell (rewrites). -1 when nothing is acceptable. */
static int pick_cell(run_state *rs, int slot_lo, int slot_hi, int slot_now, int *series)
{
    uint64_t how = below(rs, 20);
    *series = (int)below(rs, SERIES);
    if (how < 2 && rs->issues > 0) {
        int64_t back = rs->issues < 3000 ? rs->issues : 3000;
        uint32_t cell = rs->issue_cell[rs->issues - 1 - (int64_t)below(rs, (uint64_t)back)];
        int slot = (int)(cell % SLOTS);
        if (slot >= slot_lo && slot <= slot_hi) {
            *series = (int)(cell / SLOTS);
            return slot;
        }
    }
    int lo = slot_lo, hi = slot_now < slot_hi ? slot_now : slot_hi;
    if (how < 11) /* the last five minutes */
        lo = hi - 20 > slot_lo ? hi - 20 : slot_lo;
    else if (how < 13) /* up to five minutes ahead */
        lo = hi + 1, hi = hi + 20 < slot_hi ? hi + 20 : slot_hi;
    if (lo > hi)
        return -1;
    return lo + (int)below(rs, (uint64_t)(hi - lo + 1));
}

/* Issues one batch of random points; returns the write's result (-EAGAIN: head full,
 * nothing written). Acknowledged points go into the model. */
static int write_batch(run_state *rs, int n)
{
    int cells[64];
    int64_t min_ts, max_ts, first = rs->issues;
    stele_tsdb_time_bounds(rs->db, &min_ts, &max_ts);
    int64_t lo_off = min_ts - T0, hi_off = max_ts - T0;
    int slot_lo = lo_off <= 0 ? 0 : (int)((lo_off + SLOT_NS - 1) / SLOT_NS);
    int slot_hi = (int)(hi_off / SLOT_NS);
    int slot_now = (int)((rs->now - T0) / SLOT_NS);
    if (slot_hi >= SLOTS)
        slot_hi = SLOTS - 1;
    if (rs->issues + n > MAX_ISSUES)
        return 0;
    stele_batch_reset(rs->batch);
    int k = 0;
    for (int i = 0; i < n; i++) {
        int series, slot = pick_cell(rs, slot_lo, slot_hi, slot_now, &series);
        if (slot < 0)
            continue;
        stele_label labels[2] = {
            {.name = "__name__", .name_len = 8, .value = "m", .value_len = 1},
            {.name = "host", .name_len = 4, .value = series_host[series], .value_len = 2},
        };
        cells[k++] = series * SLOTS + slot;
        rs->issue_cell[rs->issues] = (uint32_t)(series * SLOTS + slot);
        assert_int_equal(
            stele_batch_add(rs->batch, "t", labels, 2, slot_ts(slot), issue_value(rs->issues)), 0);
        rs->issues++;
    }
    int rc = stele_tsdb_write(rs->db, rs->batch);
    if (rc == -ERANGE)
        fail_msg("seed %" PRIu64 ": a point inside stele_tsdb_time_bounds was refused -ERANGE",
                 rs->seed);
    if (rc == 0) {
        for (int i = 0; i < k; i++) {
            int64_t *a = &rs->acked[cells[i] / SLOTS][cells[i] % SLOTS];
            if (first + i > *a)
                *a = first + i;
        }
        rs->tot->points_acked += (uint64_t)k;
    }
    return rc;
}

/* Moves the fake clock on by 0 to 4 minutes (a quarter of the steps leave it). */
static void advance_clock(run_state *rs)
{
    if (below(rs, 4) == 0)
        return;
    rs->now += (int64_t)below(rs, 17) * SLOT_NS;
    if (rs->now > CLOCK_END)
        rs->now = CLOCK_END;
}

/* Runs one step; counts the write and fsync operations it took. */
static int run_step(run_state *rs, enum step_kind kind)
{
    uint64_t w0 = stele_io_fault_op_count(rs->io, STELE_FAULT_OP_WRITE);
    uint64_t f0 = stele_io_fault_op_count(rs->io, STELE_FAULT_OP_FSYNC);
    int rc = 0;
    switch (kind) {
    case STEP_WRITE:
        rc = write_batch(rs, 1 + (int)below(rs, 40));
        if (rc == -EAGAIN) /* head full: what a background flush would do */
            rc = stele_tsdb_flush(rs->db);
        break;
    case STEP_FLUSH:
        rc = stele_tsdb_flush(rs->db);
        break;
    case STEP_BUILD:
        rc = stele_tsdb_build_tiers(rs->db);
        break;
    case STEP_MAINTAIN:
        rc = stele_tsdb_maintain(rs->db);
        break;
    default:
        break;
    }
    uint64_t dw = stele_io_fault_op_count(rs->io, STELE_FAULT_OP_WRITE) - w0;
    uint64_t df = stele_io_fault_op_count(rs->io, STELE_FAULT_OP_FSYNC) - f0;
    if (dw > rs->est_ops[kind][STELE_FAULT_OP_WRITE])
        rs->est_ops[kind][STELE_FAULT_OP_WRITE] = dw;
    if (df > rs->est_ops[kind][STELE_FAULT_OP_FSYNC])
        rs->est_ops[kind][STELE_FAULT_OP_FSYNC] = df;
    rs->last_ops[kind][STELE_FAULT_OP_WRITE] = dw;
    rs->last_ops[kind][STELE_FAULT_OP_FSYNC] = df;
    if (rc)
        rs->tot->faulted_calls[kind]++;
    if (getenv("STELE_TIER_CRASH_VERBOSE"))
        fprintf(stderr, "seed %" PRIu64 " cycle %d: now T0%+" PRId64 "s %s: %d\n", rs->seed,
                rs->cycle, (rs->now - T0) / NS, step_name[kind], rc);
    return rc;
}

static enum step_kind random_kind(run_state *rs)
{
    uint64_t x = below(rs, 100);
    return x < 55 ? STEP_WRITE : x < 70 ? STEP_FLUSH : x < 85 ? STEP_BUILD : STEP_MAINTAIN;
}

/* ---- verification --------------------------------------------------------------- */

typedef struct {
    int64_t *ts;
    double *v;
    size_t n;
    int seen;
    stele_bucket *b[TIERS + 1];
    size_t nb[TIERS + 1];
    int seen_b[TIERS + 1];
} series_snap;

typedef struct {
    run_state *rs;
    series_snap s[SERIES];
    size_t tier; /* the tier a select_buckets callback fills */
    int failures;
} snapshot;

static void report(snapshot *sn, const char *fmt, ...)
{
    if (sn->failures++ >= MAX_REPORTS)
        return;
    va_list ap;
    fprintf(stderr, "seed %" PRIu64 " cycle %d (%s): ", sn->rs->seed, sn->rs->cycle, sn->rs->phase);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static int series_of(const stele_label *labels, size_t nlabels)
{
    for (size_t i = 0; i < nlabels; i++)
        if (labels[i].name_len == 4 && !memcmp(labels[i].name, "host", 4) &&
            labels[i].value_len == 2 && labels[i].value[0] == 'h' && labels[i].value[1] >= '0' &&
            labels[i].value[1] < '0' + SERIES)
            return labels[i].value[1] - '0';
    return -1;
}

static int snap_raw(void *ctx, const stele_series_view *v)
{
    snapshot *sn = ctx;
    int s = series_of(v->labels, v->nlabels);
    if (s < 0 || sn->s[s].seen++) {
        report(sn, "raw select returned an unknown or repeated series");
        return 0;
    }
    sn->s[s].ts = malloc((v->n + 1) * sizeof(int64_t));
    sn->s[s].v = malloc((v->n + 1) * sizeof(double));
    assert_non_null(sn->s[s].ts);
    assert_non_null(sn->s[s].v);
    memcpy(sn->s[s].ts, v->ts, v->n * sizeof(int64_t));
    memcpy(sn->s[s].v, v->values, v->n * sizeof(double));
    sn->s[s].n = v->n;
    return 0;
}

static int snap_buckets(void *ctx, const stele_label *labels, size_t nlabels, const stele_bucket *b,
                        size_t n)
{
    snapshot *sn = ctx;
    size_t t = sn->tier;
    int s = series_of(labels, nlabels);
    if (s < 0 || sn->s[s].seen_b[t]++) {
        report(sn, "tier %zu: select_buckets returned an unknown or repeated series", t);
        return 0;
    }
    sn->s[s].b[t] = malloc((n + 1) * sizeof(*b));
    assert_non_null(sn->s[s].b[t]);
    memcpy(sn->s[s].b[t], b, n * sizeof(*b));
    sn->s[s].nb[t] = n;
    return 0;
}

static void snap_free(snapshot *sn)
{
    for (int s = 0; s < SERIES; s++) {
        free(sn->s[s].ts);
        free(sn->s[s].v);
        for (size_t t = 0; t <= TIERS; t++)
            free(sn->s[s].b[t]);
    }
    free(sn);
}

/* Raw data against the model: see the top of the file. */
static void check_raw(snapshot *sn, int64_t raw_expired)
{
    run_state *rs = sn->rs;
    static uint8_t found[SERIES][SLOTS];
    memset(found, 0, sizeof(found));
    for (int s = 0; s < SERIES; s++) {
        const series_snap *ss = &sn->s[s];
        for (size_t i = 0; i < ss->n; i++) {
            int64_t off = ss->ts[i] - T0;
            int slot = (int)(off / SLOT_NS);
            double v = ss->v[i];
            int64_t issue = (int64_t)fabs(v);
            if (i > 0 && ss->ts[i] <= ss->ts[i - 1])
                report(sn, "h%d: timestamps not increasing at %" PRId64, s, ss->ts[i]);
            if (off < 0 || off % SLOT_NS || slot >= SLOTS || issue >= rs->issues ||
                issue_value(issue) != v || rs->issue_cell[issue] != (uint32_t)(s * SLOTS + slot)) {
                report(sn, "h%d: invented point ts T0%+" PRId64 "s value %g", s, off / NS, v);
                continue;
            }
            found[s][slot] = 1;
            if (issue >= rs->acked[s][slot])
                continue;
            if (ss->ts[i] >= raw_expired)
                report(sn,
                       "h%d slot %d (T0%+" PRId64 "s): holds write %" PRId64
                       ", older than acknowledged write %" PRId64,
                       s, slot, off / NS, issue, rs->acked[s][slot]);
            else
                rs->tot->stale_below_expiry++;
        }
    }
    char exp[32];
    for (int s = 0; s < SERIES; s++)
        for (int slot = 0; slot < SLOTS; slot++)
            if (rs->acked[s][slot] >= 0 && !found[s][slot] && slot_ts(slot) >= raw_expired)
                report(sn,
                       "h%d slot %d (T0%+" PRId64 "s): acknowledged write %" PRId64
                       " lost (raw expired before %s)",
                       s, slot, (slot_ts(slot) - T0) / NS, rs->acked[s][slot],
                       expiry_name(raw_expired, exp, sizeof(exp)));
}

static bool same_double(double a, double b)
{
    return (isnan(a) && isnan(b)) || a == b;
}

static bool close_double(double a, double b)
{
    if (same_double(a, b))
        return true;
    double scale = fabs(a) > fabs(b) ? fabs(a) : fabs(b);
    return fabs(a - b) <= 1e-9 * (scale > 1 ? scale : 1);
}

static void bucket_diff(snapshot *sn, int s, size_t t, const stele_bucket *got,
                        const stele_bucket *want)
{
    const char *field = NULL;
    if (got->count != want->count)
        field = "count";
    else if (!same_double(got->min, want->min))
        field = "min";
    else if (!same_double(got->max, want->max))
        field = "max";
    else if (!same_double(got->first, want->first) || got->first_ts != want->first_ts)
        field = "first";
    else if (!same_double(got->last, want->last) || got->last_ts != want->last_ts)
        field = "last";
    else if (!close_double(got->sum + got->sum_c, want->sum + want->sum_c))
        field = "sum";
    else if (!close_double(got->resets, want->resets))
        field = "resets";
    if (field)
        report(sn,
               "h%d tier %zu bucket T0%+" PRId64 "s: %s differs from raw: tier count %" PRIu64
               " sum %.17g min %g max %g first %g@%+" PRId64 " last %g@%+" PRId64
               " resets %g; raw count %" PRIu64 " sum %.17g min %g max %g first %g@%+" PRId64
               " last %g@%+" PRId64 " resets %g",
               s, t, (got->start - T0) / NS, field, got->count, got->sum + got->sum_c, got->min,
               got->max, got->first, (got->first_ts - T0) / NS, got->last, (got->last_ts - T0) / NS,
               got->resets, want->count, want->sum + want->sum_c, want->min, want->max, want->first,
               (want->first_ts - T0) / NS, want->last, (want->last_ts - T0) / NS, want->resets);
}

/* Tier t's buckets against stele_buckets_build over the raw samples, from `from` on. */
static void check_tier(snapshot *sn, size_t t, int64_t r, int64_t from)
{
    for (int s = 0; s < SERIES; s++) {
        const series_snap *ss = &sn->s[s];
        stele_bucket *want = malloc((ss->n + 1) * sizeof(*want));
        assert_non_null(want);
        size_t nwant = stele_buckets_build(ss->ts, ss->v, ss->n, r, want);
        const stele_bucket *got = ss->b[t];
        size_t ngot = ss->nb[t], i = 0, j = 0;
        for (size_t k = 0; k < ngot; k++)
            if (got[k].start % r || (k && got[k].start <= got[k - 1].start))
                report(sn, "h%d tier %zu: bucket start T0%+" PRId64 "s unaligned or out of order",
                       s, t, (got[k].start - T0) / NS);
        while (i < ngot && got[i].start < from)
            i++;
        while (j < nwant && want[j].start < from)
            j++;
        while (i < ngot || j < nwant) {
            if (j == nwant || (i < ngot && got[i].start < want[j].start)) {
                report(sn,
                       "h%d tier %zu: bucket T0%+" PRId64 "s (count %" PRIu64
                       ") has no raw data behind it",
                       s, t, (got[i].start - T0) / NS, got[i].count);
                i++;
            } else if (i == ngot || want[j].start < got[i].start) {
                report(sn,
                       "h%d tier %zu: bucket T0%+" PRId64 "s missing (raw has %" PRIu64
                       " samples in it)",
                       s, t, (want[j].start - T0) / NS, want[j].count);
                j++;
            } else {
                bucket_diff(sn, s, t, &got[i], &want[j]);
                i++;
                j++;
            }
        }
        free(want);
    }
}

static bool bucket_same(const stele_bucket *a, const stele_bucket *b)
{
    return a->start == b->start && a->count == b->count && same_double(a->min, b->min) &&
           same_double(a->max, b->max) && same_double(a->first, b->first) &&
           same_double(a->last, b->last) && a->first_ts == b->first_ts &&
           a->last_ts == b->last_ts && close_double(a->sum + a->sum_c, b->sum + b->sum_c) &&
           close_double(a->resets, b->resets);
}

/* Below the raw expiry the raw data may be partial, so buckets there are checked
 * against what the tier said before: they must stay as they were (see run_state). */
static void check_frozen(snapshot *sn, size_t t, int64_t r, int64_t tiers_final,
                         int64_t tier_expired)
{
    run_state *rs = sn->rs;
    for (int s = 0; s < SERIES; s++) {
        const series_snap *ss = &sn->s[s];
        uint8_t present[GRID_BUCKETS] = {0};
        for (size_t k = 0; k < ss->nb[t]; k++) {
            const stele_bucket *b = &ss->b[t][k];
            if (b->start >= tiers_final || b->start < tier_expired || b->start < WINDOW_MIN ||
                b->start % r)
                continue;
            size_t i = (size_t)((b->start - WINDOW_MIN) / r);
            present[i] = 1;
            stele_bucket *f = &rs->frozen[s][t][i];
            if (!rs->frozen_set[s][t][i]) {
                *f = *b;
                rs->frozen_set[s][t][i] = 1;
            } else if (!bucket_same(f, b)) {
                report(sn,
                       "h%d tier %zu bucket T0%+" PRId64 "s below the raw expiry changed: "
                       "count %" PRIu64 " sum %.17g first %g@%+" PRId64 " last %g@%+" PRId64
                       ", was count %" PRIu64 " sum %.17g first %g@%+" PRId64 " last %g@%+" PRId64,
                       s, t, (b->start - T0) / NS, b->count, b->sum + b->sum_c, b->first,
                       (b->first_ts - T0) / NS, b->last, (b->last_ts - T0) / NS, f->count,
                       f->sum + f->sum_c, f->first, (f->first_ts - T0) / NS, f->last,
                       (f->last_ts - T0) / NS);
                *f = *b; /* report each change once */
            }
        }
        for (size_t i = 0; i < (size_t)((WINDOW_MAX + 1 - WINDOW_MIN) / r); i++) {
            int64_t start = WINDOW_MIN + (int64_t)i * r;
            if (rs->frozen_set[s][t][i] && !present[i] && start < tiers_final &&
                start >= tier_expired) {
                report(sn, "h%d tier %zu bucket T0%+" PRId64 "s below the raw expiry vanished", s,
                       t, (start - T0) / NS);
                rs->frozen_set[s][t][i] = 0;
            }
        }
    }
}

static int dump_name(void *ctx, const char *name)
{
    fprintf(stderr, " %s", name);
    (void)ctx;
    return 0;
}

/* STELE_TIER_CRASH_VERBOSE: the directories and the tier state, for replaying a seed. */
static void dump_dirs(run_state *rs)
{
    static const char *dirs[] = {"db/wal", "db/blocks", "db/tiers/1m", "db/tiers/10m"};
    uint8_t *st = NULL;
    size_t len = 0;
    for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
        fprintf(stderr, "  %s:", dirs[i]);
        stele_io_list(rs->io, dirs[i], dump_name, NULL);
        fputc('\n', stderr);
    }
    if (stele_io_read_file(rs->io, "db/tiers/state", 4096, &st, &len) == 0 && len >= 32) {
        uint64_t built = 0, committed = 0;
        for (int k = 7; k >= 0; k--) {
            built = built << 8 | st[16 + k];
            committed = committed << 8 | st[24 + k];
        }
        fprintf(stderr, "  tiers/state: built_through %" PRIu64 " committed %" PRIu64 "\n", built,
                committed);
    }
    free(st);
}

/* One query at the given resolution, as JSON (malloc'd), or NULL with *err filled. */
static char *query_json(run_state *rs, const pq_expr *e, int64_t start, int64_t end,
                        int64_t resolution, stele_query_error *err)
{
    stele_query_limits lim;
    stele_query_result *r = NULL;
    char *json = NULL;
    size_t len = 0;
    stele_query_limits_default(&lim);
    if (stele_query_eval(rs->db, "t", e, start, end, TIER2_RES, true, &lim, resolution, NULL, &r,
                         err, NULL) != 0)
        return NULL;
    if (stele_query_result_json(r, &json, &len) != 0)
        json = NULL;
    stele_query_result_free(r);
    return json;
}

/* The query planner's view of the same data: range functions answered by each tier
 * (resolution forced) equal the raw answers over the part nothing has expired from.
 * The functions compared are exact on buckets, so the JSON must be identical. */
static void check_queries(snapshot *sn, const stele_tier_info *info, size_t ntiers,
                          int64_t tiers_final)
{
    static const char *queries[] = {"count_over_time(m[10m])", "max_over_time(m[10m])",
                                    "min_over_time(m[10m])", "last_over_time(m[10m])"};
    run_state *rs = sn->rs;
    int64_t lo = tiers_final > T0 ? tiers_final : T0;
    for (size_t t = 1; t < ntiers; t++)
        if (info[t].expired_before > lo)
            lo = info[t].expired_before;
    int64_t start = lo - lo % TIER2_RES + 2 * TIER2_RES, end = rs->now - rs->now % TIER2_RES;
    if (start > end)
        return;
    for (size_t q = 0; q < sizeof(queries) / sizeof(queries[0]); q++) {
        pq_expr *e = NULL;
        char perr[128];
        stele_query_error err;
        assert_int_equal(pq_parse(queries[q], strlen(queries[q]), &e, perr, sizeof(perr)), 0);
        char *raw = query_json(rs, e, start, end, STELE_RESOLUTION_RAW, &err);
        if (!raw)
            report(sn, "%s at raw resolution failed: %s", queries[q], err.message);
        for (size_t t = 1; raw && t < ntiers; t++) {
            char *tier = query_json(rs, e, start, end, info[t].resolution_ns, &err);
            if (!tier)
                report(sn, "%s from tier %zu failed: %s", queries[q], t, err.message);
            else if (strcmp(raw, tier) != 0)
                report(sn,
                       "%s from tier %zu differs from raw over T0%+" PRId64 "s..T0%+" PRId64
                       "s:\n  raw  %.300s\n  tier %.300s",
                       queries[q], t, (start - T0) / NS, (end - T0) / NS, raw, tier);
            free(tier);
            rs->tot->queries_compared++;
        }
        free(raw);
        pq_expr_free(e);
    }
}

/* Checks the store against the model; `queries` adds the query planner's view (the
 * costliest part, so only where unbuilt data is overlaid most: before a cut and right
 * after recovery). */
static void verify(run_state *rs, const char *phase, bool queries)
{
    snapshot *sn = calloc(1, sizeof(*sn));
    stele_tier_info info[STELE_MAX_TIERS + 1];
    stele_matcher all = {"__name__", "m", STELE_MATCH_EQUAL};
    char err[256] = "";
    assert_non_null(sn);
    sn->rs = rs;
    rs->phase = phase;
    size_t ntiers = stele_tsdb_tiers(rs->db, info);
    assert_int_equal(ntiers, TIERS + 1);
    int rc = stele_tsdb_select(rs->db, "t", &all, 1, WINDOW_MIN, WINDOW_MAX, snap_raw, sn, err,
                               sizeof(err));
    if (rc)
        fail_msg("seed %" PRIu64 " cycle %d (%s): select failed: %d %s", rs->seed, rs->cycle, phase,
                 rc, err);
    for (size_t t = 1; t < ntiers; t++) {
        sn->tier = t;
        rc = stele_tsdb_select_buckets(rs->db, "t", &all, 1, t, WINDOW_MIN, WINDOW_MAX,
                                       snap_buckets, sn, err, sizeof(err));
        if (rc)
            fail_msg("seed %" PRIu64 " cycle %d (%s): select_buckets tier %zu failed: %d %s",
                     rs->seed, rs->cycle, phase, t, rc, err);
    }
    int64_t raw_expired = info[0].expired_before;
    if (getenv("STELE_TIER_CRASH_VERBOSE")) {
        char e0[32], e1[32], e2[32];
        fprintf(stderr,
                "seed %" PRIu64 " cycle %d (%s): now T0%+" PRId64
                "s, expired before: raw %s, tier 1 %s, tier 2 %s\n",
                rs->seed, rs->cycle, phase, (rs->now - T0) / NS,
                expiry_name(raw_expired, e0, sizeof(e0)),
                expiry_name(info[1].expired_before, e1, sizeof(e1)),
                expiry_name(info[2].expired_before, e2, sizeof(e2)));
        dump_dirs(rs);
    }
    if (raw_expired != INT64_MIN)
        rs->tot->expiry_cycles++;
    check_raw(sn, raw_expired);
    /* Tier buckets are final below the raw expiry rounded up to the coarsest resolution:
     * writes are accepted only from there on (tier_store.c), and the coarsest bucket
     * that holds the expiry has lost raw data. */
    int64_t coarse = info[ntiers - 1].resolution_ns, tiers_final = raw_expired;
    if (raw_expired != INT64_MIN && raw_expired % coarse) /* positive here */
        tiers_final = raw_expired - raw_expired % coarse + coarse;
    for (size_t t = 1; t < ntiers; t++) {
        int64_t from = info[t].expired_before > tiers_final ? info[t].expired_before : tiers_final;
        check_tier(sn, t, info[t].resolution_ns, from);
        check_frozen(sn, t, info[t].resolution_ns, tiers_final, info[t].expired_before);
    }
    if (queries)
        check_queries(sn, info, ntiers, tiers_final);
    int failures = sn->failures;
    snap_free(sn);
    if (failures)
        fail_msg("seed %" PRIu64
                 " cycle %d (%s): %d violations (rerun with STELE_TEST_SEED=%" PRIu64
                 " STELE_TIER_CRASH_SEEDS=1)",
                 rs->seed, rs->cycle, phase, failures, rs->seed);
}

static void check_problem(void *ctx, const char *path, const char *what)
{
    run_state *rs = ctx;
    fprintf(stderr, "seed %" PRIu64 " cycle %d: stele_tsdb_check: %s: %s\n", rs->seed, rs->cycle,
            path, what);
}

static void check_dir(run_state *rs)
{
    int problems = stele_tsdb_check(rs->io, "db", check_problem, NULL, rs);
    if (problems != 0)
        fail_msg("seed %" PRIu64 " cycle %d: stele_tsdb_check reported %d (rerun with "
                 "STELE_TEST_SEED=%" PRIu64 " STELE_TIER_CRASH_SEEDS=1)",
                 rs->seed, rs->cycle, problems, rs->seed);
}

/* ---- the run -------------------------------------------------------------------- */

/* Makes the n-th next write or fsync fail. Half the time n is drawn over what a call of
 * `kind` took at most so far (the fault lands anywhere inside it, or just after it);
 * half the time among the last few operations the previous such call took, where a
 * build writes tiers/state, a flush removes log segments and maintenance compacts the
 * coarsest tier — the commit points. */
static void aim_fault(run_state *rs, enum step_kind kind)
{
    enum stele_fault_op op = below(rs, 2) ? STELE_FAULT_OP_WRITE : STELE_FAULT_OP_FSYNC;
    int err = below(rs, 3) == 0 ? ENOSPC : EIO;
    uint64_t last = rs->last_ops[kind][op], nth;
    if (below(rs, 2) || last == 0)
        nth = 1 + below(rs, rs->est_ops[kind][op] + 1);
    else
        nth = last - (last > 3 ? below(rs, 4) : below(rs, last));
    stele_io_fault_fail_after(rs->io, op, nth, err);
}

/* Reopens after a cut. A third of the time a fault is aimed into recovery itself: if it
 * makes the open fail, the machine restarts (after another power cut half the time)
 * and the next, fault-free, open must succeed. */
static void reopen_after_cut(run_state *rs)
{
    char err[512];
    rs->phase = "reopen after the cut";
    if (below(rs, 3) == 0) {
        rs->tot->open_faults++;
        aim_fault(rs, STEP_OPEN);
        int rc = db_try_open(rs, err, sizeof(err));
        stele_io_fault_fail_after(rs->io, STELE_FAULT_OP_WRITE, 0, 0); /* 0 cancels */
        stele_io_fault_fail_after(rs->io, STELE_FAULT_OP_FSYNC, 0, 0);
        if (rc == 0)
            return;
        if (getenv("STELE_TIER_CRASH_VERBOSE")) {
            fprintf(stderr, "seed %" PRIu64 " cycle %d: open under a fault: %d %s\n", rs->seed,
                    rs->cycle, rc, err);
            dump_dirs(rs);
        }
        rs->tot->open_refused++;
        if (below(rs, 2))
            stele_io_fault_power_cut(rs->io, (enum stele_fault_cut_mode)below(rs, 3));
        rs->phase = "reopen after a failed recovery";
    }
    db_open(rs);
}

static void run_cycle(run_state *rs)
{
    enum fault_aim aim = (enum fault_aim)below(rs, NAIMS);
    int steps = 10 + (int)below(rs, 40);
    int aim_step = (int)below(rs, (uint64_t)steps);
    bool stop_at_failure = below(rs, 2) == 0;
    bool failed = false, aimed_failed = false;
    rs->tot->cycles++;
    if (aim == AIM_ANYWHERE) {
        enum stele_fault_op op = below(rs, 2) ? STELE_FAULT_OP_WRITE : STELE_FAULT_OP_FSYNC;
        stele_io_fault_fail_after(rs->io, op, 1 + below(rs, 60), below(rs, 3) ? EIO : ENOSPC);
    }
    for (int step = 0; step < steps; step++) {
        advance_clock(rs);
        enum step_kind kind = random_kind(rs);
        int rc;
        if (step == aim_step && aim != AIM_ANYWHERE && aim != AIM_NONE) {
            /* Give the aimed call work: late points and a flush for a build or a
             * maintenance to take up. */
            if (!failed) {
                rc = run_step(rs, STEP_WRITE);
                if (rc == 0 && aim != AIM_FLUSH)
                    rc = run_step(rs, STEP_FLUSH);
                failed = failed || rc != 0;
            }
            kind = aim == AIM_FLUSH ? STEP_FLUSH : aim == AIM_BUILD ? STEP_BUILD : STEP_MAINTAIN;
            if (aim == AIM_FLUSH)
                run_step(rs, STEP_WRITE);
            aim_fault(rs, kind);
            rc = run_step(rs, kind);
            aimed_failed = rc != 0;
        } else {
            rc = run_step(rs, kind);
        }
        if (rc) {
            failed = true;
            if (stop_at_failure)
                break; /* the machine dies at its first failure */
        }
    }
    if (aimed_failed)
        rs->tot->aimed_hits[aim]++;
    verify(rs, "running, before the cut", true);
    stele_io_fault_power_cut(rs->io, (enum stele_fault_cut_mode)below(rs, 3));
    db_close(rs);
    reopen_after_cut(rs);
    verify(rs, "after reopen", true);
    int rc = stele_tsdb_build_tiers(rs->db);
    if (rc)
        fail_msg("seed %" PRIu64 " cycle %d: build_tiers after reopen failed: %d", rs->seed,
                 rs->cycle, rc);
    verify(rs, "after rebuild", false);
    db_close(rs);
    rs->phase = "reopen after rebuild";
    db_open(rs);
    verify(rs, "after rebuild and reopen", false);
    check_dir(rs);
}

static void run_seed(uint64_t seed, totals *tot)
{
    run_state *rs = calloc(1, sizeof(*rs));
    assert_non_null(rs);
    rs->seed = seed;
    rs->rng = seed;
    rs->now = CLOCK_START;
    rs->tot = tot;
    rs->phase = "first open";
    rs->compact_min_blocks = 2 + (uint32_t)(seed % 3);
    for (int s = 0; s < SERIES; s++)
        for (int t = 0; t < SLOTS; t++)
            rs->acked[s][t] = -1;
    for (int k = 0; k < NSTEP_KINDS; k++)
        rs->est_ops[k][0] = rs->est_ops[k][1] = 8;
    assert_int_equal(stele_io_fault_create(seed, &rs->io), 0);
    assert_int_equal(stele_batch_create(&rs->batch), 0);
    db_open(rs);
    for (rs->cycle = 1; rs->cycle <= CYCLES; rs->cycle++)
        run_cycle(rs);
    db_close(rs);
    stele_batch_destroy(rs->batch);
    stele_io_destroy(rs->io);
    free(rs);
}

static void test_tier_faults_and_power_cuts(void **state)
{
    (void)state;
    const char *env = getenv("STELE_TEST_SEED");
    const char *count = getenv("STELE_TIER_CRASH_SEEDS");
    uint64_t seed = env ? strtoull(env, NULL, 10) : (uint64_t)time(NULL);
    int seeds = count ? atoi(count) : DEFAULT_SEEDS;
    totals tot = {0};
    fprintf(stderr, "tier crash test: seeds %" PRIu64 "..%" PRIu64 "\n", seed,
            seed + (uint64_t)seeds - 1);
    for (int i = 0; i < seeds; i++)
        run_seed(seed + (uint64_t)i, &tot);
    fprintf(stderr,
            "tier crash test: %" PRIu64 " cycles, %" PRIu64 " points acknowledged; failed calls: "
            "write %" PRIu64 ", flush %" PRIu64 ", build_tiers %" PRIu64 ", maintain %" PRIu64
            "; aimed faults that hit: flush %" PRIu64 ", build %" PRIu64 ", maintain %" PRIu64
            "; raw blocks dropped %" PRIu64 ", tier blocks dropped %" PRIu64
            ", tier builds %" PRIu64 "; verifications with raw expiry %" PRIu64
            "; outdated values below the raw expiry %" PRIu64 "; recoveries under a fault %" PRIu64
            ", of which refused %" PRIu64 "; tier queries compared with raw %" PRIu64 "\n",
            tot.cycles, tot.points_acked, tot.faulted_calls[STEP_WRITE],
            tot.faulted_calls[STEP_FLUSH], tot.faulted_calls[STEP_BUILD],
            tot.faulted_calls[STEP_MAINTAIN], tot.aimed_hits[AIM_FLUSH], tot.aimed_hits[AIM_BUILD],
            tot.aimed_hits[AIM_MAINTAIN], tot.raw_drops, tot.tier_drops, tot.tier_builds,
            tot.expiry_cycles, tot.stale_below_expiry, tot.open_faults, tot.open_refused,
            tot.queries_compared);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tier_faults_and_power_cuts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
