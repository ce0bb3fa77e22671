/*
 * tier_gen.c — writes a long, regular IoT history straight into a Stele data directory
 * through the C API, for the downsampling benchmark of issue 4 (bench/tiers.sh).
 *
 *   tier_gen --data DIR [--days D] [--series N] [--interval-s S] [--seed X]
 *            [--end-s T] [--tiers SPEC] [--batch-points P]
 *
 * Why not over HTTP: a year of 10 s samples for 200 series is 630 M points; posting it
 * as line protocol would spend most of the run parsing text the benchmark is not about.
 * The engine's own write path (batch, log append, head, flush into blocks) is what a
 * server runs after parsing, so the directory ends up as a server would leave it.
 *
 * The data: series i is kind i mod 5 of device i / 5, labelled
 *   {__name__="iot_<kind>", device="dev-00042", site="site-3"}  (site = device mod 8)
 * sampled every S seconds (10) on whole multiples of S, the last sample S before --end-s
 * (default: the whole hour at least an hour before now, so every query of the
 * benchmark lies in the past), the first D days (365) earlier. Kinds:
 *
 *   kind                    type     decimals  behaviour per sample
 *   iot_temperature_celsius gauge    2         random walk, sd 0.02, clamped to -20 .. 45
 *   iot_fuel_level_percent  gauge    1         drains 0 .. 0.004 %, refuelled to 90 .. 100
 *                                              below 5 % (about every 3 days)
 *   iot_battery_volts       gauge    3         random walk, sd 0.001, clamped to 11.5 .. 14.6
 *   iot_messages_total      counter  0         + 0 .. 12; reset to 0 about weekly (reboot)
 *   iot_energy_kwh_total    counter  3         + 0 .. 0.050; reset to 0 about weekly
 *
 * Values are integers scaled by 10^decimals, divided once: the exact double a
 * line-protocol parser would read from the printed decimal. Each series has its own
 * splitmix64 stream seeded from (seed, series index), so the values do not depend on
 * the batch size or on how the work is split.
 *
 * Writing: in time order, in batches of about P points (100,000) spanning P / N ticks
 * (inside a batch series by series, the engine's cheap case), acknowledged before fsync
 * (ack_buffered: this is a bulk load; the final flush makes everything durable). The
 * head is flushed at every partition boundary (a UTC day), so each partition gets one
 * block, as compaction would leave it, or earlier when it holds FLUSH_MAX_POINTS.
 * After each flush the tiers are built (stele_tsdb_build_tiers) and compaction and
 * retention run once (stele_tsdb_maintain), as the server's background thread would.
 * The tiers and the raw retention come from --tiers (default raw:400d,1m:400d,1h:10y);
 * the raw retention must cover the data or the oldest points would be refused.
 *
 * Prints one JSON line: points, series, first/last sample and end (s), seconds spent
 * writing, flushing, building tiers and maintaining, points/s, and the engine's block
 * and tier figures. Progress goes to stderr every PROGRESS_DAYS simulated days.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "stele/io.h"
#include "stele/tier.h"
#include "stele/tsdb.h"

#define NS_PER_SEC INT64_C(1000000000)
#define SECONDS_PER_DAY INT64_C(86400)
/* The workload: a year of 10 s samples for 200 series. */
#define DEFAULT_DAYS 365
#define DEFAULT_SERIES 200
#define DEFAULT_INTERVAL_S 10
#define DEFAULT_SEED 42
/* 400 days, not 1y, for raw and 1m: a year of data ending an hour or two ago reaches
 * back further than 365 days, and retentions may not shrink from tier to tier. */
#define DEFAULT_TIERS "raw:400d,1m:400d,1h:10y"
/* 100,000 points (~1.6 MB in the log) per write: the per-call cost (one log record, a
 * lock) is spread thin, and a batch stays far below the head's size. */
#define DEFAULT_BATCH_POINTS 100000
#define MIN_BATCH_POINTS 1000
#define MAX_BATCH_POINTS 10000000
/* Ten years is the longest default tier retention; more is not a benchmark. */
#define MAX_DAYS 3660
/* Enough for a large fleet; the series' state and labels are ~100 bytes each. */
#define MAX_SERIES 1000000
/* 1e10 points is hours of writing on a small box and ~20 GB of blocks: a typo, not a
 * run anyone wants. */
#define MAX_TOTAL_POINTS UINT64_C(10000000000)
/* Flush before the head holds more than this even inside a partition (16 bytes a
 * point: 256 MiB), so a wide fleet cannot exhaust memory. */
#define FLUSH_MAX_POINTS UINT64_C(16000000)
/* Progress lines on stderr: a 365-day run prints a dozen. */
#define PROGRESS_DAYS 30
/* Devices are spread over this many sites (a label to aggregate by). */
#define SITES 8
/* A counter resets with this probability per sample: once in 7 days of 10 s samples,
 * a device that reboots about weekly, so a year holds ~50 resets per counter. */
#define RESET_PROB (1.0 / (7.0 * 8640.0))
/* Only tenant of the benchmark; the server's admin token belongs to it. */
#define TENANT "default"
/* The data must lie this far inside the raw retention, so nothing is dropped while the
 * benchmark runs (a day). */
#define RETENTION_MARGIN_S SECONDS_PER_DAY

typedef enum {
    KIND_TEMPERATURE,
    KIND_FUEL,
    KIND_BATTERY,
    KIND_MESSAGES,
    KIND_ENERGY,
    KINDS
} series_kind;

typedef struct {
    const char *name;
    int decimals;
    bool counter;
    double lo, hi, step; /* clamp range; step sd (gauges) or largest increment */
} kind_spec;

static const kind_spec KIND_SPECS[KINDS] = {
    {"iot_temperature_celsius", 2, false, -20, 45, 0.02},
    {"iot_fuel_level_percent", 1, false, 5, 100, 0.004},
    {"iot_battery_volts", 3, false, 11.5, 14.6, 0.001},
    {"iot_messages_total", 0, true, 0, 0, 12},
    {"iot_energy_kwh_total", 3, true, 0, 0, 0.050},
};

typedef struct {
    uint64_t rng;   /* splitmix64 state */
    double walk;    /* gauges: the unrounded walk */
    int64_t scaled; /* the reading times 10^decimals */
    series_kind kind;
    char device[16], site[16];
    stele_label labels[3]; /* __name__, device, site: sorted by name */
} gen_series;

typedef struct {
    const char *data, *tiers;
    unsigned days, series, interval_s;
    uint64_t seed, batch_points;
    int64_t end_s;
    bool end_set;
} options;

static double mono_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static uint64_t rng_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Uniform in [0, 1) with 53 random bits. */
static double rng_unit(uint64_t *state)
{
    return (double)(rng_next(state) >> 11) * 0x1p-53;
}

/* Approximately N(0, 1): four 16-bit uniforms (Irwin–Hall), as bench/iot_workload.h. */
static double rng_normal(uint64_t *state)
{
    uint64_t r = rng_next(state);
    double sum = (double)(r & 0xffff) + (double)((r >> 16) & 0xffff) +
                 (double)((r >> 32) & 0xffff) + (double)(r >> 48);
    return (sum - 131070.0) * (1.7320508075688772 / 65536.0);
}

static double pow10_of(int d)
{
    static const double p[] = {1e0, 1e1, 1e2, 1e3};
    return p[d];
}

static double series_value(const gen_series *s)
{
    return (double)s->scaled / pow10_of(KIND_SPECS[s->kind].decimals);
}

static void series_init(gen_series *s, uint32_t index, uint64_t seed)
{
    memset(s, 0, sizeof *s);
    s->kind = (series_kind)(index % KINDS);
    uint32_t device = index / KINDS;
    /* Distinct, well-mixed streams: the seed and the index through one splitmix step. */
    s->rng = seed ^ (0x9e3779b97f4a7c15ULL * (uint64_t)(index + 1));
    rng_next(&s->rng);
    snprintf(s->device, sizeof s->device, "dev-%05" PRIu32, device);
    snprintf(s->site, sizeof s->site, "site-%" PRIu32, device % SITES);
    const kind_spec *k = &KIND_SPECS[s->kind];
    s->labels[0] = (stele_label){"__name__", 8, k->name, (uint32_t)strlen(k->name)};
    s->labels[1] = (stele_label){"device", 6, s->device, (uint32_t)strlen(s->device)};
    s->labels[2] = (stele_label){"site", 4, s->site, (uint32_t)strlen(s->site)};
    if (k->counter) {
        s->scaled = (int64_t)(rng_unit(&s->rng) * 1e6);
    } else {
        s->walk = k->lo + (k->hi - k->lo) * rng_unit(&s->rng);
        s->scaled = (int64_t)llround(s->walk * pow10_of(k->decimals));
    }
}

/* Moves the series one sample on. */
static void series_step(gen_series *s)
{
    const kind_spec *k = &KIND_SPECS[s->kind];
    double p = pow10_of(k->decimals);
    if (k->counter) {
        if (rng_unit(&s->rng) < RESET_PROB)
            s->scaled = 0;
        else
            s->scaled += (int64_t)llround(k->step * p * rng_unit(&s->rng));
        return;
    }
    if (s->kind == KIND_FUEL) {
        s->walk -= k->step * rng_unit(&s->rng);
        if (s->walk < k->lo)
            s->walk = 90.0 + 10.0 * rng_unit(&s->rng);
    } else {
        double x = s->walk + k->step * rng_normal(&s->rng);
        s->walk = x < k->lo ? k->lo : x > k->hi ? k->hi : x;
    }
    s->scaled = (int64_t)llround(s->walk * p);
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: tier_gen --data DIR [--days D (%d)] [--series N (%d)]\n"
            "                [--interval-s S (%d)] [--seed X (%d)] [--end-s T]\n"
            "                [--tiers SPEC (%s)] [--batch-points P (%d)]\n",
            DEFAULT_DAYS, DEFAULT_SERIES, DEFAULT_INTERVAL_S, DEFAULT_SEED, DEFAULT_TIERS,
            DEFAULT_BATCH_POINTS);
}

static int parse_u64(const char *text, uint64_t lo, uint64_t hi, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno || end == text || *end || text[0] == '-' || v < lo || v > hi)
        return -EINVAL;
    *out = v;
    return 0;
}

static int parse_args(int argc, char **argv, options *opt)
{
    memset(opt, 0, sizeof *opt);
    opt->tiers = DEFAULT_TIERS;
    opt->days = DEFAULT_DAYS;
    opt->series = DEFAULT_SERIES;
    opt->interval_s = DEFAULT_INTERVAL_S;
    opt->seed = DEFAULT_SEED;
    opt->batch_points = DEFAULT_BATCH_POINTS;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        uint64_t n = 0;
        int rc = 0;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            exit(0);
        }
        if (!v) {
            fprintf(stderr, "tier_gen: %s: missing value\n", a);
            return -EINVAL;
        }
        if (!strcmp(a, "--data"))
            opt->data = v;
        else if (!strcmp(a, "--tiers"))
            opt->tiers = v;
        else if (!strcmp(a, "--days") && (rc = parse_u64(v, 1, MAX_DAYS, &n)) == 0)
            opt->days = (unsigned)n;
        else if (!strcmp(a, "--series") && (rc = parse_u64(v, 1, MAX_SERIES, &n)) == 0)
            opt->series = (unsigned)n;
        else if (!strcmp(a, "--interval-s") && (rc = parse_u64(v, 1, 3600, &n)) == 0)
            opt->interval_s = (unsigned)n;
        else if (!strcmp(a, "--seed"))
            rc = parse_u64(v, 0, UINT64_MAX, &opt->seed);
        else if (!strcmp(a, "--batch-points"))
            rc = parse_u64(v, MIN_BATCH_POINTS, MAX_BATCH_POINTS, &opt->batch_points);
        else if (!strcmp(a, "--end-s") && (rc = parse_u64(v, 1, INT64_MAX / NS_PER_SEC, &n)) == 0) {
            opt->end_s = (int64_t)n;
            opt->end_set = true;
        } else if (rc == 0) {
            fprintf(stderr, "tier_gen: unknown option %s\n", a);
            return -EINVAL;
        }
        if (rc) {
            fprintf(stderr, "tier_gen: %s %s: invalid value\n", a, v);
            return -EINVAL;
        }
        i++;
    }
    if (!opt->data) {
        fprintf(stderr, "tier_gen: --data is required\n");
        return -EINVAL;
    }
    /* Samples must fall on every hour, so that hourly query steps and tier buckets
     * meet sample timestamps exactly (the boundary case the tiers must get right). */
    if (3600 % opt->interval_s != 0) {
        fprintf(stderr, "tier_gen: --interval-s %u must divide 3600\n", opt->interval_s);
        return -EINVAL;
    }
    return 0;
}

/* Flushes the head, then builds the tiers and runs compaction and retention once,
 * adding the time of each step to t[0..2]. */
static int flush_and_build(stele_tsdb *db, bool tiers, double t[3])
{
    double t0 = mono_s();
    int rc = stele_tsdb_flush(db);
    if (rc) {
        fprintf(stderr, "tier_gen: flush failed: %s\n", strerror(-rc));
        return rc;
    }
    double t1 = mono_s();
    if (tiers && (rc = stele_tsdb_build_tiers(db)) != 0) {
        fprintf(stderr, "tier_gen: building the tiers failed: %s\n", strerror(-rc));
        return rc;
    }
    double t2 = mono_s();
    if ((rc = stele_tsdb_maintain(db)) != 0) {
        fprintf(stderr, "tier_gen: compaction/retention failed: %s\n", strerror(-rc));
        return rc;
    }
    double t3 = mono_s();
    t[0] += t1 - t0;
    t[1] += t2 - t1;
    t[2] += t3 - t2;
    return 0;
}

static void print_result(stele_tsdb *db, const options *opt, uint64_t points, int64_t start_s,
                         double total_s, const double write_s, const double t[3])
{
    stele_tsdb_stats st;
    stele_tsdb_get_stats(db, &st);
    printf("{\"points\":%" PRIu64 ",\"series\":%u,\"days\":%u,\"interval_s\":%u,"
           "\"first_s\":%" PRId64 ",\"last_s\":%" PRId64 ",\"end_s\":%" PRId64 ","
           "\"tiers\":\"%s\",\"seconds\":%.3f,\"write_s\":%.3f,\"flush_s\":%.3f,"
           "\"tier_build_s\":%.3f,\"maintain_s\":%.3f,\"points_per_s\":%.0f,"
           "\"blocks\":%" PRIu64 ",\"block_bytes\":%" PRIu64 ",\"block_points\":%" PRIu64
           ",\"head_points\":%" PRIu64 ",\"tier_stats\":[",
           points, opt->series, opt->days, opt->interval_s, start_s,
           opt->end_s - (int64_t)opt->interval_s, opt->end_s, opt->tiers, total_s, write_s, t[0],
           t[1], t[2], total_s > 0 ? (double)points / total_s : 0.0, st.blocks, st.block_bytes,
           st.block_points, st.head_points);
    for (size_t i = 0; i < st.ntiers && i < STELE_MAX_TIERS; i++)
        printf("%s{\"resolution_s\":%" PRId64 ",\"series\":%" PRIu64 ",\"buckets\":%" PRIu64
               ",\"blocks\":%" PRIu64 ",\"bytes\":%" PRIu64 ",\"build_lag_points\":%" PRIu64 "}",
               i ? "," : "", st.tiers[i].resolution_ns / NS_PER_SEC, st.tiers[i].series,
               st.tiers[i].buckets, st.tiers[i].blocks, st.tiers[i].bytes,
               st.tiers[i].build_lag_points);
    printf("]}\n");
}

int main(int argc, char **argv)
{
    int rc = 1;
    options opt;
    stele_io *io = NULL;
    stele_tsdb *db = NULL;
    stele_batch *batch = NULL;
    gen_series *series = NULL;
    char err[512];
    if (parse_args(argc, argv, &opt) != 0) {
        usage(stderr);
        return 2;
    }
    int64_t res[STELE_MAX_TIERS], ret[STELE_MAX_TIERS];
    size_t ntiers = 0;
    if (stele_tiers_parse(opt.tiers, res, ret, &ntiers, err, sizeof err) != 0) {
        fprintf(stderr, "tier_gen: --tiers %s: %s\n", opt.tiers, err);
        return 2;
    }
    int64_t now_s = (int64_t)time(NULL);
    if (!opt.end_set)
        opt.end_s = (now_s / 3600 - 1) * 3600; /* a whole hour, at least 1 h ago */
    if (opt.end_s % opt.interval_s != 0 || opt.end_s > now_s) {
        fprintf(stderr, "tier_gen: --end-s %" PRId64 " must be a multiple of %u s, not after now\n",
                opt.end_s, opt.interval_s);
        return 2;
    }
    int64_t start_s = opt.end_s - (int64_t)opt.days * SECONDS_PER_DAY;
    uint64_t ticks = (uint64_t)opt.days * SECONDS_PER_DAY / opt.interval_s;
    uint64_t total = ticks * opt.series;
    if (total > MAX_TOTAL_POINTS) {
        fprintf(stderr, "tier_gen: %" PRIu64 " points is more than the %" PRIu64 " allowed\n",
                total, MAX_TOTAL_POINTS);
        return 2;
    }
    if (ret[0] / NS_PER_SEC < now_s - start_s + RETENTION_MARGIN_S) {
        fprintf(stderr,
                "tier_gen: the raw retention of --tiers %s does not cover %u days back from "
                "now (and a day of margin); the oldest points would be refused\n",
                opt.tiers, opt.days);
        return 2;
    }

    /* Series-major batches of whole ticks; a head flushed every partition (one day)
     * or at FLUSH_MAX_POINTS, whichever comes first. */
    uint64_t ticks_per_batch = opt.batch_points / opt.series ? opt.batch_points / opt.series : 1;
    uint64_t ticks_per_day = SECONDS_PER_DAY / opt.interval_s;
    uint64_t ticks_per_flush = FLUSH_MAX_POINTS / opt.series ? FLUSH_MAX_POINTS / opt.series : 1;
    stele_tsdb_options o;
    stele_tsdb_options_default(&o);
    o.dir = opt.data;
    o.retention_ns = ret[0];
    o.ntiers = ntiers - 1;
    for (size_t i = 1; i < ntiers; i++) {
        o.tier_resolution_ns[i - 1] = res[i];
        o.tier_retention_ns[i - 1] = ret[i];
    }
    o.background = false; /* we flush, build and compact at chosen points */
    o.ack_buffered = true;
    /* Never refused for a full head: room for a flush period and one more batch. */
    uint64_t per_flush =
        (ticks_per_flush < ticks_per_day ? ticks_per_flush : ticks_per_day) * (uint64_t)opt.series;
    o.head_max_points = per_flush + ticks_per_batch * opt.series;

    if (stele_io_posix_create(&io) != 0) {
        fprintf(stderr, "tier_gen: cannot create the POSIX I/O layer\n");
        goto fail;
    }
    o.io = io;
    int orc = stele_tsdb_open(&o, &db, NULL, err, sizeof err);
    if (orc != 0) {
        fprintf(stderr, "tier_gen: cannot open the store in %s: %s (%s)\n", opt.data, err,
                strerror(-orc));
        goto fail;
    }
    series = calloc(opt.series, sizeof *series);
    if (!series || stele_batch_create(&batch) != 0) {
        fprintf(stderr, "tier_gen: out of memory\n");
        goto fail;
    }
    for (uint32_t i = 0; i < opt.series; i++)
        series_init(&series[i], i, opt.seed);

    double t0 = mono_s(), write_s = 0, steps[3] = {0, 0, 0};
    double next_progress = PROGRESS_DAYS;
    uint64_t written = 0, since_flush = 0;
    for (uint64_t tick = 0; tick < ticks;) {
        int64_t ts_s = start_s + (int64_t)(tick * opt.interval_s);
        /* The batch ends at the batch size, the data's end, or the next partition
         * boundary (UTC midnight), whichever comes first. */
        uint64_t to_midnight =
            (uint64_t)((SECONDS_PER_DAY - ts_s % SECONDS_PER_DAY) / (int64_t)opt.interval_s);
        uint64_t n = ticks_per_batch;
        if (n > ticks - tick)
            n = ticks - tick;
        if (n > to_midnight)
            n = to_midnight;
        if (n > ticks_per_flush - since_flush)
            n = ticks_per_flush - since_flush;
        stele_batch_reset(batch);
        for (uint32_t i = 0; i < opt.series; i++) {
            gen_series *s = &series[i];
            for (uint64_t k = 0; k < n; k++) {
                if (tick + k > 0)
                    series_step(s);
                int64_t ts = (ts_s + (int64_t)(k * opt.interval_s)) * NS_PER_SEC;
                if (stele_batch_add(batch, TENANT, s->labels, 3, ts, series_value(s)) != 0) {
                    fprintf(stderr, "tier_gen: cannot add a point to the batch\n");
                    goto fail;
                }
            }
        }
        double tw = mono_s();
        int wrc = stele_tsdb_write(db, batch);
        write_s += mono_s() - tw;
        if (wrc != 0) {
            fprintf(stderr, "tier_gen: write at %" PRId64 " s failed: %s\n", ts_s, strerror(-wrc));
            goto fail;
        }
        written += n * opt.series;
        tick += n;
        since_flush += n;
        bool at_midnight = (start_s + (int64_t)(tick * opt.interval_s)) % SECONDS_PER_DAY == 0;
        if (at_midnight || since_flush >= ticks_per_flush || tick == ticks) {
            if (flush_and_build(db, o.ntiers > 0, steps) != 0)
                goto fail;
            since_flush = 0;
        }
        double day = (double)tick / (double)ticks_per_day;
        if (day >= next_progress) {
            double el = mono_s() - t0;
            fprintf(stderr,
                    "tier_gen: %.0f of %u days, %" PRIu64 " points, %.0f s, %.0f points/s "
                    "(write %.0f s, flush %.0f s, tiers %.0f s, maintain %.0f s)\n",
                    day, opt.days, written, el, (double)written / el, write_s, steps[0], steps[1],
                    steps[2]);
            next_progress += PROGRESS_DAYS;
        }
    }
    print_result(db, &opt, written, start_s, mono_s() - t0, write_s, steps);
    fflush(stdout);
    rc = 0;
fail:
    stele_batch_destroy(batch);
    free(series);
    stele_tsdb_close(db);
    stele_io_destroy(io);
    return rc;
}
