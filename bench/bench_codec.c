/*
 * bench_codec — how small and how fast the block codecs (src/tsdb/codec.c) are on a
 * TSBS-"iot"-like workload (bench/iot_workload.h), the way the block writer uses them:
 * each series' timestamps and values are encoded per run, the encodings of many series
 * are concatenated into groups (1 MiB unless told), and each group goes through zstd.
 *
 *   bench_codec [trucks [points [run [seed [group_kib]]]]]
 *     trucks     trucks in the fleet, 10 series each       (default 1000)
 *     points     points per series                         (default 1000)
 *     run        points per encoder call (a block's run)   (default = points)
 *     seed       workload seed                             (default 42)
 *     group_kib  bytes of encodings per zstd frame, KiB    (default 1024)
 *
 * It prints bytes/point before zstd and after zstd at levels 1, 3 and 9 — per field
 * (values only), for the timestamps, and overall with ts+values of each series kept
 * together in two series orders: field-major (series sorted by field first, as a
 * metric-name-first key order gives) and truck-major (each truck's 10 fields next to
 * each other) — then encode and decode throughput in points/s on one core. Every
 * decoded run is checked bit for bit against the input; a mismatch fails the run.
 */
#include "stele/codec.h"
#include "iot_workload.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zstd.h>

/* Default of what a block writer hands to zstd at once: big enough that the frame
 * overhead and the per-frame tables are noise, small enough that a query decompresses
 * little it does not need. */
#define GROUP_BYTES_DEFAULT (1u << 20)
/* Largest group accepted on the command line; zstd's window covers it at every level
 * measured here. */
#define GROUP_BYTES_MAX (64u << 20)
/* Timed loops run this many times and report the fastest, to shed scheduler noise. */
#define TIMING_REPEATS 3
/* 2016-01-01T00:00:00Z, TSBS's default start. */
#define START_NS 1451606400000000000LL

static const int zstd_levels[] = {1, 3, 9};
static size_t group_bytes = GROUP_BYTES_DEFAULT;
#define ZSTD_LEVELS (int)(sizeof zstd_levels / sizeof zstd_levels[0])

typedef struct bench {
    uint32_t trucks;
    size_t points, run, runs_per_series, series;
    int64_t *ts;    /* points timestamps, shared by every series (all trucks tick together) */
    double *cols;   /* series x points values; series s = field * trucks + truck */
    uint8_t *arena; /* every encoding, run after run */
    size_t *ts_off, *ts_len, *val_off, *val_len; /* per (series, run) */
    size_t scheme_runs[256];                     /* runs per value scheme byte */
} bench;

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static size_t run_start(const bench *b, size_t r)
{
    return r * b->run;
}

static size_t run_points(const bench *b, size_t r)
{
    size_t start = run_start(b, r);
    return b->points - start < b->run ? b->points - start : b->run;
}

static double *series_values(const bench *b, size_t s)
{
    return b->cols + s * b->points;
}

static int build_columns(bench *b, uint64_t seed)
{
    iot_workload w;
    int rc = iot_workload_init(&w, b->trucks, seed, START_NS);
    if (rc != 0)
        goto fail;
    for (size_t t = 0; t < b->points; t++) {
        iot_workload_tick(&w);
        b->ts[t] = w.now_ns;
        for (uint32_t i = 0; i < b->trucks; i++)
            for (int f = 0; f < IOT_FIELDS; f++)
                series_values(b, (size_t)f * b->trucks + i)[t] =
                    iot_workload_value(&w, i, (enum iot_field)f);
    }
fail:
    iot_workload_free(&w);
    return rc;
}

/* Encodes every run into scratch, timing timestamps and values separately; records the
 * sizes so the arena can be allocated exactly. */
static int encode_timed(bench *b, double *ts_secs, double *val_secs)
{
    size_t cap = stele_values_encode_bound(b->run);
    if (stele_ts_encode_bound(b->run) > cap)
        cap = stele_ts_encode_bound(b->run);
    uint8_t *scratch = malloc(cap);
    int rc = 0;
    if (!scratch) {
        rc = -ENOMEM;
        goto fail;
    }
    *ts_secs = *val_secs = 1e300;
    for (int rep = 0; rep < TIMING_REPEATS; rep++) {
        double t0 = now_s();
        for (size_t s = 0; s < b->series; s++)
            for (size_t r = 0; r < b->runs_per_series; r++) {
                size_t k = s * b->runs_per_series + r;
                rc = stele_ts_encode(b->ts + run_start(b, r), run_points(b, r), scratch, cap,
                                     &b->ts_len[k]);
                if (rc != 0)
                    goto fail;
            }
        double t1 = now_s();
        for (size_t s = 0; s < b->series; s++)
            for (size_t r = 0; r < b->runs_per_series; r++) {
                size_t k = s * b->runs_per_series + r;
                rc = stele_values_encode(series_values(b, s) + run_start(b, r), run_points(b, r),
                                         scratch, cap, &b->val_len[k]);
                if (rc != 0)
                    goto fail;
                if (rep == 0)
                    b->scheme_runs[scratch[0]]++;
            }
        double t2 = now_s();
        if (t1 - t0 < *ts_secs)
            *ts_secs = t1 - t0;
        if (t2 - t1 < *val_secs)
            *val_secs = t2 - t1;
    }
fail:
    free(scratch);
    return rc;
}

/* Encodes again, now into the arena, at the sizes encode_timed() measured. */
static int encode_into_arena(bench *b)
{
    size_t total = 0, runs = b->series * b->runs_per_series;
    int rc = 0;
    for (size_t k = 0; k < runs; k++)
        total += b->ts_len[k] + b->val_len[k];
    b->arena = malloc(total ? total : 1);
    if (!b->arena)
        return -ENOMEM;
    size_t off = 0;
    for (size_t s = 0; s < b->series; s++)
        for (size_t r = 0; r < b->runs_per_series; r++) {
            size_t k = s * b->runs_per_series + r, len = 0;
            b->ts_off[k] = off;
            rc = stele_ts_encode(b->ts + run_start(b, r), run_points(b, r), b->arena + off,
                                 b->ts_len[k], &len);
            if (rc != 0 || len != b->ts_len[k])
                return rc ? rc : -EIO;
            off += len;
            b->val_off[k] = off;
            rc = stele_values_encode(series_values(b, s) + run_start(b, r), run_points(b, r),
                                     b->arena + off, b->val_len[k], &len);
            if (rc != 0 || len != b->val_len[k])
                return rc ? rc : -EIO;
            off += len;
        }
    return 0;
}

static int decode_timed(const bench *b, double *ts_secs, double *val_secs)
{
    int64_t *ts = malloc(b->run * sizeof *ts);
    double *v = malloc(b->run * sizeof *v);
    int rc = 0;
    if (!ts || !v) {
        rc = -ENOMEM;
        goto fail;
    }
    *ts_secs = *val_secs = 1e300;
    for (int rep = 0; rep < TIMING_REPEATS; rep++) {
        double t0 = now_s();
        for (size_t k = 0; k < b->series * b->runs_per_series; k++) {
            rc = stele_ts_decode(b->arena + b->ts_off[k], b->ts_len[k], ts,
                                 run_points(b, k % b->runs_per_series));
            if (rc != 0)
                goto fail;
        }
        double t1 = now_s();
        for (size_t k = 0; k < b->series * b->runs_per_series; k++) {
            rc = stele_values_decode(b->arena + b->val_off[k], b->val_len[k], v,
                                     run_points(b, k % b->runs_per_series));
            if (rc != 0)
                goto fail;
        }
        double t2 = now_s();
        if (t1 - t0 < *ts_secs)
            *ts_secs = t1 - t0;
        if (t2 - t1 < *val_secs)
            *val_secs = t2 - t1;
    }
fail:
    free(ts);
    free(v);
    return rc;
}

/* Decodes every run once more and compares bits with the input. */
static int verify(const bench *b)
{
    int64_t *ts = malloc(b->run * sizeof *ts);
    double *v = malloc(b->run * sizeof *v);
    int rc = 0;
    if (!ts || !v) {
        rc = -ENOMEM;
        goto fail;
    }
    for (size_t s = 0; s < b->series; s++)
        for (size_t r = 0; r < b->runs_per_series; r++) {
            size_t k = s * b->runs_per_series + r, n = run_points(b, r);
            rc = stele_ts_decode(b->arena + b->ts_off[k], b->ts_len[k], ts, n);
            if (rc == 0)
                rc = stele_values_decode(b->arena + b->val_off[k], b->val_len[k], v, n);
            if (rc == 0 && (memcmp(ts, b->ts + run_start(b, r), n * sizeof *ts) != 0 ||
                            memcmp(v, series_values(b, s) + run_start(b, r), n * sizeof *v) != 0))
                rc = -EIO;
            if (rc != 0) {
                fprintf(stderr, "bench_codec: series %zu run %zu does not round-trip (%d)\n", s, r,
                        rc);
                goto fail;
            }
        }
fail:
    free(ts);
    free(v);
    return rc;
}

/* A sequence of pieces of the arena, compressed group by group. */
typedef struct zstd_tally {
    ZSTD_CCtx *cctx;
    ZSTD_DCtx *dctx;
    int level;
    uint8_t *group, *packed, *unpacked;
    size_t group_len, packed_cap;
    size_t raw_total, packed_total;
    double compress_secs, decompress_secs;
    int rc;
} zstd_tally;

static void tally_flush(zstd_tally *t)
{
    if (t->group_len == 0 || t->rc != 0)
        return;
    double t0 = now_s();
    size_t z =
        ZSTD_compressCCtx(t->cctx, t->packed, t->packed_cap, t->group, t->group_len, t->level);
    double t1 = now_s();
    if (ZSTD_isError(z)) {
        fprintf(stderr, "bench_codec: zstd level %d: %s\n", t->level, ZSTD_getErrorName(z));
        t->rc = -EIO;
        return;
    }
    size_t back = ZSTD_decompressDCtx(t->dctx, t->unpacked, group_bytes, t->packed, z);
    double t2 = now_s();
    if (ZSTD_isError(back) || back != t->group_len || memcmp(t->unpacked, t->group, back) != 0) {
        fprintf(stderr, "bench_codec: zstd level %d does not round-trip\n", t->level);
        t->rc = -EIO;
        return;
    }
    t->compress_secs += t1 - t0;
    t->decompress_secs += t2 - t1;
    t->raw_total += t->group_len;
    t->packed_total += z;
    t->group_len = 0;
}

/* Appends one encoding; a group never exceeds group_bytes (an encoding larger than
 * that, which this workload never makes, would be split across groups). */
static void tally_add(zstd_tally *t, const uint8_t *p, size_t len)
{
    while (len > 0) {
        if (t->group_len + len > group_bytes && t->group_len > 0)
            tally_flush(t);
        size_t take = len < group_bytes - t->group_len ? len : group_bytes - t->group_len;
        memcpy(t->group + t->group_len, p, take);
        t->group_len += take;
        p += take;
        len -= take;
    }
}

static int tally_init(zstd_tally *t, int level)
{
    memset(t, 0, sizeof *t);
    t->level = level;
    t->cctx = ZSTD_createCCtx();
    t->dctx = ZSTD_createDCtx();
    t->packed_cap = ZSTD_compressBound(group_bytes);
    t->group = malloc(group_bytes);
    t->unpacked = malloc(group_bytes);
    t->packed = malloc(t->packed_cap);
    return t->cctx && t->dctx && t->group && t->unpacked && t->packed ? 0 : -ENOMEM;
}

static void tally_free(zstd_tally *t)
{
    ZSTD_freeCCtx(t->cctx);
    ZSTD_freeDCtx(t->dctx);
    free(t->group);
    free(t->unpacked);
    free(t->packed);
}

enum piece { PIECE_TS = 1, PIECE_VALUES = 2, PIECE_BOTH = 3 };

/* Feeds the runs of series [s_first, s_last) (s_step apart) to t. */
static void tally_series(zstd_tally *t, const bench *b, size_t s, int pieces)
{
    for (size_t r = 0; r < b->runs_per_series; r++) {
        size_t k = s * b->runs_per_series + r;
        if (pieces & PIECE_TS)
            tally_add(t, b->arena + b->ts_off[k], b->ts_len[k]);
        if (pieces & PIECE_VALUES)
            tally_add(t, b->arena + b->val_off[k], b->val_len[k]);
    }
}

/* Compressed bytes of one ordering of the arena at one level. `order`: 0..IOT_FIELDS-1
 * = that field's values only; IOT_FIELDS = every series' timestamps; IOT_FIELDS + 1 =
 * field-major ts+values; IOT_FIELDS + 2 = truck-major ts+values. */
static int measure(const bench *b, int order, int level, zstd_tally *out)
{
    int rc = tally_init(out, level);
    if (rc != 0)
        return rc;
    if (order < IOT_FIELDS) {
        for (uint32_t i = 0; i < b->trucks; i++)
            tally_series(out, b, (size_t)order * b->trucks + i, PIECE_VALUES);
    } else if (order == IOT_FIELDS) {
        for (size_t s = 0; s < b->series; s++)
            tally_series(out, b, s, PIECE_TS);
    } else if (order == IOT_FIELDS + 1) {
        for (size_t s = 0; s < b->series; s++)
            tally_series(out, b, s, PIECE_BOTH);
    } else {
        for (uint32_t i = 0; i < b->trucks; i++)
            for (int f = 0; f < IOT_FIELDS; f++)
                tally_series(out, b, (size_t)f * b->trucks + i, PIECE_BOTH);
    }
    tally_flush(out);
    return out->rc;
}

static int report(const bench *b)
{
    double field_points = (double)b->trucks * (double)b->points;
    double all_points = field_points * IOT_FIELDS;
    int rc = 0;

    printf("\nbytes/point          codec   zstd-1  zstd-3  zstd-9\n");
    for (int order = 0; order < IOT_FIELDS + 3; order++) {
        const char *name = order < IOT_FIELDS    ? iot_field_spec_of((enum iot_field)order)->name
                           : order == IOT_FIELDS ? "timestamps"
                           : order == IOT_FIELDS + 1 ? "ALL field-major"
                                                     : "ALL truck-major";
        double points = order < IOT_FIELDS ? field_points : all_points;
        zstd_tally t[ZSTD_LEVELS];
        int made = 0;
        for (; made < ZSTD_LEVELS; made++) {
            rc = measure(b, order, zstd_levels[made], &t[made]);
            if (rc != 0) {
                made++;
                goto fail_order;
            }
        }
        if (order == IOT_FIELDS + 1)
            printf("\n");
        printf("%-18s %7.3f", name, (double)t[0].raw_total / points);
        for (int l = 0; l < ZSTD_LEVELS; l++)
            printf(" %7.3f", (double)t[l].packed_total / points);
        printf("\n");
        if (order == IOT_FIELDS + 1) {
            for (int l = 0; l < ZSTD_LEVELS; l++)
                printf("  zstd-%d on it: compress %.1f M points/s, decompress %.1f M points/s\n",
                       zstd_levels[l], all_points / t[l].compress_secs / 1e6,
                       all_points / t[l].decompress_secs / 1e6);
        }
    fail_order:
        for (int l = 0; l < made; l++)
            tally_free(&t[l]);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int parse_arg(const char *s, uint64_t *out)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || v == 0)
        return -EINVAL;
    *out = v;
    return 0;
}

int main(int argc, char **argv)
{
    uint64_t trucks = 1000, points = 1000, run = 0, seed = 42, group_kib = 0;
    bench b;
    int rc = 0;
    memset(&b, 0, sizeof b);

    if (argc > 6 || (argc > 1 && parse_arg(argv[1], &trucks) != 0) ||
        (argc > 2 && parse_arg(argv[2], &points) != 0) ||
        (argc > 3 && parse_arg(argv[3], &run) != 0) ||
        (argc > 4 && parse_arg(argv[4], &seed) != 0) ||
        (argc > 5 && parse_arg(argv[5], &group_kib) != 0) || trucks > UINT32_MAX ||
        group_kib > GROUP_BYTES_MAX / 1024) {
        fprintf(stderr,
                "usage: bench_codec [trucks [points [run [seed [group_kib]]]]] (positive "
                "integers; group_kib at most %u)\n",
                GROUP_BYTES_MAX / 1024);
        return 2;
    }
    if (group_kib)
        group_bytes = (size_t)group_kib * 1024;
    b.trucks = (uint32_t)trucks;
    b.points = points;
    b.run = run && run < points ? run : points;
    b.runs_per_series = (b.points + b.run - 1) / b.run;
    b.series = (size_t)b.trucks * IOT_FIELDS;
    size_t runs = b.series * b.runs_per_series;
    b.ts = malloc(b.points * sizeof *b.ts);
    b.cols = malloc(b.series * b.points * sizeof *b.cols);
    b.ts_off = malloc(runs * sizeof(size_t));
    b.ts_len = malloc(runs * sizeof(size_t));
    b.val_off = malloc(runs * sizeof(size_t));
    b.val_len = malloc(runs * sizeof(size_t));
    if (!b.ts || !b.cols || !b.ts_off || !b.ts_len || !b.val_off || !b.val_len) {
        rc = -ENOMEM;
        goto fail;
    }

    double all_points = (double)b.series * (double)b.points;
    printf("bench_codec: %" PRIu32 " trucks x %d fields = %zu series x %zu points = %.0f points,"
           " runs of %zu, seed %" PRIu64 ", zstd groups of %zu KiB\n",
           b.trucks, IOT_FIELDS, b.series, b.points, all_points, b.run, seed, group_bytes / 1024);
    rc = build_columns(&b, seed);
    if (rc != 0)
        goto fail;

    double enc_ts, enc_val, dec_ts, dec_val;
    rc = encode_timed(&b, &enc_ts, &enc_val);
    if (rc == 0)
        rc = encode_into_arena(&b);
    if (rc == 0)
        rc = verify(&b);
    if (rc == 0)
        rc = decode_timed(&b, &dec_ts, &dec_val);
    if (rc != 0)
        goto fail;

    printf("value schemes (runs):");
    for (int s = 0; s < 256; s++)
        if (b.scheme_runs[s])
            printf(" 0x%02x=%zu", s, b.scheme_runs[s]);
    printf("\nround trip: bit-exact for every run\n");
    printf("encode: timestamps %.1f M points/s, values %.1f M points/s, both %.1f M points/s\n",
           all_points / enc_ts / 1e6, all_points / enc_val / 1e6,
           all_points / (enc_ts + enc_val) / 1e6);
    printf("decode: timestamps %.1f M points/s, values %.1f M points/s, both %.1f M points/s\n",
           all_points / dec_ts / 1e6, all_points / dec_val / 1e6,
           all_points / (dec_ts + dec_val) / 1e6);
    rc = report(&b);

fail:
    if (rc != 0)
        fprintf(stderr, "bench_codec: failed: %s\n", strerror(-rc));
    free(b.ts);
    free(b.cols);
    free(b.arena);
    free(b.ts_off);
    free(b.ts_len);
    free(b.val_off);
    free(b.val_len);
    return rc == 0 ? 0 : 1;
}
