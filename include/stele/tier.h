/*
 * tier.h — downsampling tiers (SPEC §5): the per-bucket aggregate, how buckets are
 * built from raw samples, and how queries are answered from them exactly.
 *
 * A tier has a resolution r and a retention. Each bucket [start, start + r) of a series
 * keeps: count, sum (with its Kahan compensation), min and max (of the non-NaN values,
 * NaN when all are NaN — the order-free result of Prometheus' min/max_over_time), the
 * first and last sample with their timestamps, and the counter resets: the sum of the
 * value before every decrease, so that the reset-aware increase is last − first +
 * resets (Prometheus' counter rule; kept in this form so a NaN inside a bucket affects
 * the increase exactly as it does on raw data).
 *
 * Exactness. A Prometheus range window is [t − R, t], closed at both ends. With R a
 * multiple of r and t on a bucket boundary, it is the buckets covering [t − R, t) plus
 * the one sample that may sit exactly at t, which is the *first* sample of the bucket
 * starting at t when its timestamp is t. The functions below combine those buckets in
 * the same way Prometheus combines samples, so min/max/count/last/sum/avg_over_time and
 * increase/rate/delta (with extrapolation) equal the raw answers (to rounding, 1e-9).
 * A plain selector at t (5-minute lookback) is the boundary sample or the last sample of
 * the latest non-empty bucket in [t − 5m, t), exact for r dividing 5 minutes.
 *
 * This header is the arithmetic only; storage and building live in src/tsdb.
 */
#ifndef STELE_TIER_H
#define STELE_TIER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    int64_t start; /* bucket start, ns, a multiple of the resolution */
    uint64_t count;
    double sum, sum_c; /* Kahan-Neumaier sum and compensation */
    double min, max;   /* of non-NaN values; NaN if all NaN */
    double first, last;
    int64_t first_ts, last_ts;
    double resets; /* Σ value before each decrease; increase = last − first + resets */
} stele_bucket;

/* Parses "raw:30d,1m:1y,1h:10y": resolutions (raw first, then increasing, each a
 * multiple of the previous) and retentions (non-decreasing). n receives the count (at
 * most STELE_MAX_TIERS); resolution_ns[0] = 0 for raw. -EINVAL with a message. */
#define STELE_MAX_TIERS 8
int stele_tiers_parse(const char *text, int64_t *resolution_ns, int64_t *retention_ns, size_t *n,
                      char *err, size_t errcap);

/* Aggregates samples ts/v[0..n) (sorted, strictly increasing) into buckets of the
 * resolution; out (room for the number of distinct buckets, ≤ n) receives them in time
 * order. Returns the number of buckets. */
size_t stele_buckets_build(const int64_t *ts, const double *v, size_t n, int64_t resolution,
                           stele_bucket *out);

/* Extends acc (a bucket or a merge of consecutive buckets) with `next`, whose samples
 * all come after acc's: the aggregate of the union, as if built from the samples
 * (sums to rounding). acc->start is left as it is. */
void stele_bucket_append(stele_bucket *acc, const stele_bucket *next);

/* Bucket fields, to read only some (stele_tsdb_select_buckets_fields); fields not asked
 * for are left zero. FIRST and LAST include their timestamps. */
#define STELE_BUCKET_COUNT (1u << 0)
#define STELE_BUCKET_SUM (1u << 1)
#define STELE_BUCKET_MIN (1u << 2)
#define STELE_BUCKET_MAX (1u << 3)
#define STELE_BUCKET_FIRST (1u << 4)
#define STELE_BUCKET_LAST (1u << 5)
#define STELE_BUCKET_RESETS (1u << 6)
#define STELE_BUCKET_ALL 0x7fu

/* Functions answerable from buckets. */
typedef enum {
    STELE_TIER_MIN,
    STELE_TIER_MAX,
    STELE_TIER_SUM,
    STELE_TIER_COUNT,
    STELE_TIER_AVG,
    STELE_TIER_LAST,
    STELE_TIER_INCREASE,
    STELE_TIER_RATE,
    STELE_TIER_DELTA,
} stele_tier_fn;

/* Evaluates fn over the window [t − range, t] from the buckets b[0..n) (sorted) of one
 * series, t and range multiples of the resolution. Returns false when the window has no
 * value (no sample; fewer than two for increase/rate/delta). */
bool stele_tier_window(const stele_bucket *b, size_t n, int64_t resolution, int64_t t,
                       int64_t range, stele_tier_fn fn, double *out);

/* The fields stele_tier_window needs for fn (stele_tier_instant: COUNT | FIRST | LAST). */
unsigned stele_tier_fields(stele_tier_fn fn);

/* A plain selector's value at t (t a multiple of the resolution) with Prometheus'
 * lookback window [t − lookback, t]: the sample at t, else the last sample of the latest
 * non-empty bucket before t if it lies within the window. Exact for any resolution.
 * false when there is no sample in the window. */
bool stele_tier_instant(const stele_bucket *b, size_t n, int64_t t, int64_t lookback, double *out);

/* "auto" → -1, "raw" → 0, a duration ("1m", "1h", "90s") → its length in ns. -EINVAL. */
int stele_resolution_parse(const char *text, int64_t *ns);
/* The short name of a resolution: "raw" for 0, else "1m", "1h", "10s", "1d"... */
void stele_resolution_name(int64_t ns, char *buf, size_t cap);

#endif
