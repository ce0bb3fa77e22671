/*
 * tier.c — bucket aggregates and exact window answers from them; see stele/tier.h.
 *
 * The window arithmetic mirrors the raw evaluator (src/query/eval.c, itself a copy of
 * Prometheus 2.x): the same NaN rule for min/max, Kahan sums, the same counter-reset
 * rule and the same extrapolation, fed with the first/last samples, the count and the
 * increase of the buckets instead of the samples themselves.
 */
#include "stele/tier.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NS_PER_MS INT64_C(1000000)
#define NS_PER_SEC INT64_C(1000000000)

static int parse_duration(const char *s, size_t len, int64_t *ns)
{
    if (len < 2)
        return -EINVAL;
    int64_t unit;
    switch (s[len - 1]) {
    case 's':
        unit = NS_PER_SEC;
        break;
    case 'm':
        unit = 60 * NS_PER_SEC;
        break;
    case 'h':
        unit = 3600 * NS_PER_SEC;
        break;
    case 'd':
        unit = 86400 * NS_PER_SEC;
        break;
    case 'w':
        unit = 7 * 86400 * NS_PER_SEC;
        break;
    case 'y':
        unit = 365 * 86400 * NS_PER_SEC;
        break;
    default:
        return -EINVAL;
    }
    int64_t v = 0;
    for (size_t i = 0; i + 1 < len; i++) {
        if (s[i] < '0' || s[i] > '9' || v > INT64_MAX / 10 / unit)
            return -EINVAL;
        v = v * 10 + (s[i] - '0');
    }
    if (v <= 0 || __builtin_mul_overflow(v, unit, ns))
        return -EINVAL;
    return 0;
}

int stele_tiers_parse(const char *text, int64_t *resolution_ns, int64_t *retention_ns, size_t *n,
                      char *err, size_t errcap)
{
    size_t count = 0;
    const char *p = text;
    while (*p) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *colon = memchr(p, ':', len);
        if (!colon || count == STELE_MAX_TIERS) {
            snprintf(err, errcap, "tier \"%.*s\": expected RESOLUTION:RETENTION (at most %d tiers)",
                     (int)len, p, STELE_MAX_TIERS);
            return -EINVAL;
        }
        size_t rl = (size_t)(colon - p);
        int64_t res = 0, ret;
        if (count == 0) {
            if (rl != 3 || memcmp(p, "raw", 3) != 0) {
                snprintf(err, errcap, "the first tier must be raw (e.g. raw:30d)");
                return -EINVAL;
            }
        } else if (parse_duration(p, rl, &res) != 0) {
            snprintf(err, errcap, "tier \"%.*s\": invalid resolution", (int)len, p);
            return -EINVAL;
        }
        if (parse_duration(colon + 1, len - rl - 1, &ret) != 0) {
            snprintf(err, errcap, "tier \"%.*s\": invalid retention", (int)len, p);
            return -EINVAL;
        }
        if (count > 0) {
            int64_t prev = resolution_ns[count - 1];
            if (res <= prev || (prev && res % prev) || ret < retention_ns[count - 1]) {
                snprintf(err, errcap,
                         "tier \"%.*s\": resolutions must grow, each a multiple of the previous, "
                         "and retentions must not shrink",
                         (int)len, p);
                return -EINVAL;
            }
        }
        resolution_ns[count] = res;
        retention_ns[count] = ret;
        count++;
        p = end ? end + 1 : p + len;
    }
    if (count == 0) {
        snprintf(err, errcap, "no tiers given");
        return -EINVAL;
    }
    *n = count;
    return 0;
}

static void kahan_add(double inc, double *sum, double *c)
{
    double t = *sum + inc;
    if (fabs(*sum) >= fabs(inc))
        *c += (*sum - t) + inc;
    else
        *c += (inc - t) + *sum;
    *sum = t;
}

/* Prometheus' min/max_over_time rule, order-free: NaN only when every value is NaN. */
static double min_keep(double m, double v)
{
    return (v < m || isnan(m)) ? v : m;
}

static double max_keep(double m, double v)
{
    return (v > m || isnan(m)) ? v : m;
}

static int64_t bucket_start(int64_t ts, int64_t r)
{
    int64_t q = ts / r;
    if (ts % r < 0)
        q--;
    return q * r;
}

size_t stele_buckets_build(const int64_t *ts, const double *v, size_t n, int64_t resolution,
                           stele_bucket *out)
{
    size_t nb = 0;
    stele_bucket *b = NULL;
    int64_t end = INT64_MIN;    /* of the open bucket: a division only per bucket */
    bool last_possible = false; /* the open bucket reaches past INT64_MAX */
    for (size_t i = 0; i < n; i++) {
        if (!b || (ts[i] >= end && !last_possible)) {
            int64_t start = bucket_start(ts[i], resolution);
            last_possible = __builtin_add_overflow(start, resolution, &end);
            b = &out[nb++];
            *b = (stele_bucket){
                .start = start, .min = v[i], .max = v[i], .first = v[i], .first_ts = ts[i]};
        } else {
            b->min = min_keep(b->min, v[i]);
            b->max = max_keep(b->max, v[i]);
            if (v[i] < b->last)
                b->resets += b->last; /* a counter reset: the value before counts */
        }
        b->count++;
        kahan_add(v[i], &b->sum, &b->sum_c);
        b->last = v[i];
        b->last_ts = ts[i];
    }
    return nb;
}

void stele_bucket_append(stele_bucket *acc, const stele_bucket *next)
{
    if (next->count == 0)
        return;
    if (acc->count == 0) {
        int64_t start = acc->start;
        *acc = *next;
        acc->start = start;
        return;
    }
    acc->min = min_keep(acc->min, next->min);
    acc->max = max_keep(acc->max, next->max);
    if (next->first < acc->last)
        acc->resets += acc->last; /* a reset across the boundary */
    acc->resets += next->resets;
    kahan_add(next->sum, &acc->sum, &acc->sum_c);
    kahan_add(next->sum_c, &acc->sum, &acc->sum_c);
    acc->count += next->count;
    acc->last = next->last;
    acc->last_ts = next->last_ts;
}

/* First bucket with start >= x. */
static size_t lower_bucket(const stele_bucket *b, size_t n, int64_t x)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (b[mid].start < x)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

bool stele_tier_window(const stele_bucket *b, size_t n, int64_t resolution, int64_t t,
                       int64_t range, stele_tier_fn fn, double *out)
{
    size_t lo = lower_bucket(b, n, t - range), hi = lower_bucket(b, n, t);
    /* The sample exactly at t belongs to the bucket starting at t. */
    bool edge = hi < n && b[hi].start == t && b[hi].first_ts == t && b[hi].count;
    double edge_v = edge ? b[hi].first : 0;
    (void)resolution;
    uint64_t count = edge ? 1 : 0;
    for (size_t i = lo; i < hi; i++)
        count += b[i].count;
    if (count == 0)
        return false;
    switch (fn) {
    case STELE_TIER_COUNT:
        *out = (double)count;
        return true;
    case STELE_TIER_MIN:
    case STELE_TIER_MAX: {
        bool is_min = fn == STELE_TIER_MIN, any = false;
        double m = NAN;
        for (size_t i = lo; i < hi; i++) {
            if (!b[i].count)
                continue;
            double x = is_min ? b[i].min : b[i].max;
            m = !any ? x : (is_min ? min_keep(m, x) : max_keep(m, x));
            any = true;
        }
        if (edge)
            m = !any ? edge_v : (is_min ? min_keep(m, edge_v) : max_keep(m, edge_v));
        *out = m;
        return true;
    }
    case STELE_TIER_SUM:
    case STELE_TIER_AVG: {
        double sum = 0, c = 0;
        for (size_t i = lo; i < hi; i++) {
            kahan_add(b[i].sum, &sum, &c);
            kahan_add(b[i].sum_c, &sum, &c);
        }
        if (edge)
            kahan_add(edge_v, &sum, &c);
        double total = isinf(sum) ? sum : sum + c;
        *out = fn == STELE_TIER_SUM ? total : total / (double)count;
        return true;
    }
    case STELE_TIER_LAST:
        if (edge) {
            *out = edge_v;
        } else {
            size_t i = hi;
            while (i > lo && b[i - 1].count == 0)
                i--;
            *out = b[i - 1].last;
        }
        return true;
    default:
        break;
    }
    /* increase, rate, delta: Prometheus' extrapolatedRate over the window's samples,
     * whose first/last/count and reset-aware increase the buckets provide. */
    if (count < 2)
        return false;
    bool counter = fn != STELE_TIER_DELTA;
    double first = 0, last = 0, resets = 0, prev_last = 0;
    int64_t first_ts = 0, last_ts = 0;
    bool started = false;
    for (size_t i = lo; i < hi; i++) {
        if (!b[i].count)
            continue;
        if (!started) {
            first = b[i].first;
            first_ts = b[i].first_ts;
            started = true;
        } else if (b[i].first < prev_last) {
            resets += prev_last; /* a reset across the bucket boundary */
        }
        resets += b[i].resets;
        prev_last = b[i].last;
        last = b[i].last;
        last_ts = b[i].last_ts;
    }
    if (edge) {
        if (!started) {
            first = edge_v;
            first_ts = t;
        } else if (edge_v < prev_last) {
            resets += prev_last;
        }
        last = edge_v;
        last_ts = t;
    }
    /* As Prometheus: the difference first, then the reset corrections. */
    double result = last - first;
    if (counter && resets != 0)
        result += resets;
    int64_t range_start = t - range, range_end = t;
    double to_start = (double)((first_ts - range_start) / NS_PER_MS) / 1000;
    double to_end = (double)((range_end - last_ts) / NS_PER_MS) / 1000;
    double sampled = (double)((last_ts - first_ts) / NS_PER_MS) / 1000;
    double avg_between = sampled / (double)(count - 1);
    if (counter && result > 0 && first >= 0) {
        double to_zero = sampled * (first / result);
        if (to_zero < to_start)
            to_start = to_zero;
    }
    double threshold = avg_between * 1.1, interval = sampled;
    interval += to_start < threshold ? to_start : avg_between / 2;
    interval += to_end < threshold ? to_end : avg_between / 2;
    double factor = interval / sampled;
    if (fn == STELE_TIER_RATE)
        factor /= (double)(range / NS_PER_MS) / 1000;
    *out = result * factor;
    return true;
}

bool stele_tier_instant(const stele_bucket *b, size_t n, int64_t t, int64_t lookback, double *out)
{
    size_t hi = lower_bucket(b, n, t);
    if (hi < n && b[hi].start == t && b[hi].first_ts == t && b[hi].count) {
        *out = b[hi].first;
        return true;
    }
    while (hi > 0 && b[hi - 1].count == 0)
        hi--;
    if (hi == 0 || b[hi - 1].last_ts < t - lookback)
        return false;
    *out = b[hi - 1].last;
    return true;
}

int stele_resolution_parse(const char *text, int64_t *ns)
{
    if (!strcmp(text, "auto")) {
        *ns = -1;
        return 0;
    }
    if (!strcmp(text, "raw")) {
        *ns = 0;
        return 0;
    }
    return parse_duration(text, strlen(text), ns);
}

void stele_resolution_name(int64_t ns, char *buf, size_t cap)
{
    static const struct {
        int64_t ns;
        char unit;
    } units[] = {{86400 * NS_PER_SEC, 'd'},
                 {3600 * NS_PER_SEC, 'h'},
                 {60 * NS_PER_SEC, 'm'},
                 {NS_PER_SEC, 's'}};
    if (ns <= 0) {
        snprintf(buf, cap, "raw");
        return;
    }
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (ns % units[i].ns == 0) {
            snprintf(buf, cap, "%lld%c", (long long)(ns / units[i].ns), units[i].unit);
            return;
        }
    }
    snprintf(buf, cap, "%lldns", (long long)ns);
}

unsigned stele_tier_fields(stele_tier_fn fn)
{
    /* Every window may end on a sample at t: the first of the bucket starting at t. */
    unsigned base = STELE_BUCKET_COUNT | STELE_BUCKET_FIRST;
    switch (fn) {
    case STELE_TIER_MIN:
        return base | STELE_BUCKET_MIN;
    case STELE_TIER_MAX:
        return base | STELE_BUCKET_MAX;
    case STELE_TIER_SUM:
    case STELE_TIER_AVG:
        /* min/max too: sum_over_time checks them for values near the float64 limit. */
        return base | STELE_BUCKET_SUM | STELE_BUCKET_MIN | STELE_BUCKET_MAX;
    case STELE_TIER_COUNT:
        return base;
    case STELE_TIER_LAST:
        return base | STELE_BUCKET_LAST;
    default:
        return base | STELE_BUCKET_LAST | STELE_BUCKET_RESETS;
    }
}
