/*
 * samples.c — see samples.h. Out-of-order input is the exception (late data), so the
 * in-order case is a single check pass; the rest sorts (position, timestamp) pairs so
 * the sort is stable and "last write wins" falls out of taking the last of each run.
 */
#include "tsdb/samples.h"

#include <errno.h>
#include <stdlib.h>

typedef struct {
    int64_t ts;
    size_t pos;
} sample_order;

static int sample_order_cmp(const void *a, const void *b)
{
    const sample_order *x = a, *y = b;
    if (x->ts != y->ts)
        return x->ts < y->ts ? -1 : 1;
    return x->pos < y->pos ? -1 : x->pos > y->pos;
}

long samples_sort_dedup(int64_t *ts, double *v, size_t n)
{
    size_t i;
    for (i = 1; i < n; i++)
        if (ts[i] <= ts[i - 1])
            break;
    if (i >= n)
        return (long)n;
    sample_order *order = malloc(n * sizeof(*order));
    double *vals = malloc(n * sizeof(*vals));
    if (!order || !vals) {
        free(order);
        free(vals);
        return -ENOMEM;
    }
    for (i = 0; i < n; i++) {
        order[i].ts = ts[i];
        order[i].pos = i;
        vals[i] = v[i];
    }
    qsort(order, n, sizeof(*order), sample_order_cmp);
    size_t out = 0;
    for (i = 0; i < n; i++) {
        if (i + 1 < n && order[i + 1].ts == order[i].ts)
            continue; /* a later write of the same timestamp follows */
        ts[out] = order[i].ts;
        v[out] = vals[order[i].pos];
        out++;
    }
    free(order);
    free(vals);
    return (long)out;
}

size_t samples_merge(const int64_t *ats, const double *av, size_t na, const int64_t *bts,
                     const double *bv, size_t nb, int64_t *out_ts, double *out_v)
{
    size_t i = 0, j = 0, k = 0;
    while (i < na && j < nb) {
        if (ats[i] < bts[j]) {
            out_ts[k] = ats[i];
            out_v[k++] = av[i++];
        } else {
            if (ats[i] == bts[j])
                i++; /* the newer run wins */
            out_ts[k] = bts[j];
            out_v[k++] = bv[j++];
        }
    }
    for (; i < na; i++, k++) {
        out_ts[k] = ats[i];
        out_v[k] = av[i];
    }
    for (; j < nb; j++, k++) {
        out_ts[k] = bts[j];
        out_v[k] = bv[j];
    }
    return k;
}

int sample_buf_reserve(sample_buf *b, size_t need)
{
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap *= 2;
    int64_t *ts = realloc(b->ts, cap * sizeof(*ts));
    if (!ts)
        return -ENOMEM;
    b->ts = ts;
    double *v = realloc(b->v, cap * sizeof(*v));
    if (!v)
        return -ENOMEM;
    b->v = v;
    b->cap = cap;
    return 0;
}

void sample_buf_free(sample_buf *b)
{
    free(b->ts);
    free(b->v);
    b->ts = NULL;
    b->v = NULL;
    b->n = b->cap = 0;
}
