/*
 * plan.c — choosing the data that answers a query: raw samples or a downsampled tier
 * (SPEC §5).
 *
 * A tier of resolution r answers a query exactly when every selector in it is either a
 * plain selector or the range argument of min/max/sum/count/avg/last_over_time or
 * rate/increase/delta, with ranges, the step and every evaluation time (after its
 * offset) multiples of r: each window is then a whole number of buckets plus the one
 * sample that may sit on its right edge (stele/tier.h), and everything above the
 * selectors computes the same from the same values. Any other function (irate, idelta)
 * or a bare range selector needs raw samples.
 *
 * Automatic planning takes the coarsest such tier whose data reaches back far enough,
 * else raw data; when raw data the query needs has expired and no tier answers it, the
 * query fails with a message naming what can be asked — never a silently different
 * answer.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "query/query_internal.h"

#define NS_PER_SEC INT64_C(1000000000)
#define LOOKBACK_NS (5 * 60 * NS_PER_SEC)

bool plan_tier_function(pq_function fn, stele_tier_fn *out)
{
    static const struct {
        pq_function pq;
        stele_tier_fn tier;
    } map[] = {
        {PQ_FN_MIN_OVER_TIME, STELE_TIER_MIN}, {PQ_FN_MAX_OVER_TIME, STELE_TIER_MAX},
        {PQ_FN_SUM_OVER_TIME, STELE_TIER_SUM}, {PQ_FN_COUNT_OVER_TIME, STELE_TIER_COUNT},
        {PQ_FN_AVG_OVER_TIME, STELE_TIER_AVG}, {PQ_FN_LAST_OVER_TIME, STELE_TIER_LAST},
        {PQ_FN_INCREASE, STELE_TIER_INCREASE}, {PQ_FN_RATE, STELE_TIER_RATE},
        {PQ_FN_DELTA, STELE_TIER_DELTA},
    };
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
        if (map[i].pq == fn) {
            if (out)
                *out = map[i].tier;
            return true;
        }
    }
    return false;
}

static bool multiple(int64_t x, int64_t r)
{
    return x % r == 0;
}

/* Whether buckets of resolution r answer the subtree exactly (see the top). */
static bool tier_answers(const pq_node *n, int64_t r, int64_t start, int64_t step)
{
    switch (n->kind) {
    case PQ_NUMBER:
    case PQ_STRING:
        return true;
    case PQ_VECTOR_SELECTOR:
        return multiple(start - n->selector.offset_ns, r) && multiple(step, r);
    case PQ_MATRIX_SELECTOR:
        return false; /* raw samples asked for */
    case PQ_CALL:
        if (n->call.nargs == 1 && n->call.args[0]->kind == PQ_MATRIX_SELECTOR) {
            const pq_node *m = n->call.args[0];
            return plan_tier_function(n->call.fn, NULL) && multiple(m->matrix.range_ns, r) &&
                   multiple(start - m->matrix.selector->selector.offset_ns, r) && multiple(step, r);
        }
        for (size_t i = 0; i < n->call.nargs; i++)
            if (!tier_answers(n->call.args[i], r, start, step))
                return false;
        return true;
    case PQ_AGGREGATE:
        return (!n->aggregate.param || tier_answers(n->aggregate.param, r, start, step)) &&
               tier_answers(n->aggregate.expr, r, start, step);
    case PQ_BINARY:
        return tier_answers(n->binary.lhs, r, start, step) &&
               tier_answers(n->binary.rhs, r, start, step);
    case PQ_UNARY_MINUS:
    case PQ_PAREN:
        return tier_answers(n->unary.expr, r, start, step);
    }
    return false;
}

/* The earliest time any selector of the subtree reads (INT64_MAX if none). */
static int64_t earliest_read(const pq_node *n, int64_t start)
{
    int64_t m = INT64_MAX, x;
    switch (n->kind) {
    case PQ_VECTOR_SELECTOR:
        return start - n->selector.offset_ns - LOOKBACK_NS;
    case PQ_MATRIX_SELECTOR:
        return start - n->matrix.selector->selector.offset_ns - n->matrix.range_ns;
    case PQ_CALL:
        for (size_t i = 0; i < n->call.nargs; i++)
            if ((x = earliest_read(n->call.args[i], start)) < m)
                m = x;
        return m;
    case PQ_AGGREGATE:
        if (n->aggregate.param && (x = earliest_read(n->aggregate.param, start)) < m)
            m = x;
        if ((x = earliest_read(n->aggregate.expr, start)) < m)
            m = x;
        return m;
    case PQ_BINARY:
        if ((x = earliest_read(n->binary.lhs, start)) < m)
            m = x;
        if ((x = earliest_read(n->binary.rhs, start)) < m)
            m = x;
        return m;
    case PQ_UNARY_MINUS:
    case PQ_PAREN:
        return earliest_read(n->unary.expr, start);
    default:
        return INT64_MAX;
    }
}

/* Whether data of a tier (or raw) reaching back to `from` is all still there. For a
 * tier, reads start at the bucket holding `from`. */
static bool reaches(const stele_tier_info *t, int64_t from)
{
    if (t->expired_before == INT64_MIN || from == INT64_MAX)
        return true;
    if (t->resolution_ns > 0) {
        int64_t r = t->resolution_ns, q = from / r;
        if (from % r < 0)
            q--;
        from = q * r;
    }
    return from >= t->expired_before;
}

static void format_time(int64_t ns, char *buf, size_t cap)
{
    time_t s = (time_t)(ns / NS_PER_SEC - (ns % NS_PER_SEC < 0));
    struct tm tm;
    gmtime_r(&s, &tm);
    strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* What can be asked instead, for the error message. */
static void explain(const stele_tier_info *tiers, size_t ntiers, int64_t from, char *msg,
                    size_t cap, const char *what)
{
    char when[64];
    format_time(tiers[0].expired_before, when, sizeof(when));
    size_t len =
        (size_t)snprintf(msg, cap, "%s: raw data before %s has expired (raw retention %llds)", what,
                         when, (long long)(tiers[0].retention_ns / NS_PER_SEC));
    bool any = false;
    for (size_t t = 1; t < ntiers && len < cap; t++) {
        if (!reaches(&tiers[t], from))
            continue;
        char name[32];
        stele_resolution_name(tiers[t].resolution_ns, name, sizeof(name));
        len += (size_t)snprintf(msg + len, cap - len, "%s tier %s", any ? ";" : ". Answerable from",
                                name);
        any = true;
    }
    if (len >= cap)
        return;
    if (any)
        snprintf(msg + len, cap - len,
                 ": min_over_time, max_over_time, sum_over_time, count_over_time, "
                 "avg_over_time, last_over_time, rate, increase or delta over ranges that are "
                 "multiples of the tier's resolution, and plain selectors, with start, step and "
                 "offsets multiples of the resolution");
    else
        snprintf(msg + len, cap - len, "; no tier keeps data that old either");
}

int query_plan_choose(stele_tsdb *db, const pq_node *root, int64_t start, int64_t step,
                      int64_t want, query_plan *out, char *msg, size_t cap)
{
    stele_tier_info tiers[STELE_MAX_TIERS + 1];
    size_t ntiers = stele_tsdb_tiers(db, tiers);
    int64_t from = earliest_read(root, start);
    *out = (query_plan){.raw_expired_before = tiers[0].expired_before};
    if (want == STELE_RESOLUTION_RAW) {
        if (reaches(&tiers[0], from))
            return 0;
        explain(tiers, ntiers, from, msg, cap, "resolution=raw cannot answer this query");
        return -EINVAL;
    }
    if (want > 0) {
        for (size_t t = 1; t < ntiers; t++) {
            if (tiers[t].resolution_ns != want)
                continue;
            if (!tier_answers(root, want, start, step)) {
                char name[32];
                stele_resolution_name(want, name, sizeof(name));
                snprintf(msg, cap,
                         "tier %s cannot answer this query exactly: it answers "
                         "min/max/sum/count/avg/last_over_time, rate, increase and delta over "
                         "ranges that are multiples of %s, and plain selectors, with start, step "
                         "and offsets multiples of %s",
                         name, name, name);
                return -EINVAL;
            }
            if (!reaches(&tiers[t], from)) {
                char name[32], when[64];
                stele_resolution_name(want, name, sizeof(name));
                format_time(tiers[t].expired_before, when, sizeof(when));
                snprintf(msg, cap, "tier %s: data before %s has expired", name, when);
                return -EINVAL;
            }
            out->tier = t;
            out->resolution = want;
            return 0;
        }
        snprintf(msg, cap, "no tier with that resolution; see --tiers");
        return -EINVAL;
    }
    for (size_t t = ntiers; t-- > 1;) {
        if (tier_answers(root, tiers[t].resolution_ns, start, step) && reaches(&tiers[t], from)) {
            out->tier = t;
            out->resolution = tiers[t].resolution_ns;
            return 0;
        }
    }
    if (reaches(&tiers[0], from))
        return 0;
    explain(tiers, ntiers, from, msg, cap, "this query needs raw samples");
    return -EINVAL;
}
