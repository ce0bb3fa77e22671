/*
 * head.c — in-memory head; see head.h.
 */
#include "tsdb/head.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "tsdb/samples.h"

/* First allocation per series: a few minutes of 10 s data, small enough that a million
 * idle series cost little. Arrays double from there. */
#define HEAD_SERIES_INITIAL_CAP 32

tsdb_head *head_create(void)
{
    tsdb_head *h = calloc(1, sizeof(*h));
    if (!h)
        return NULL;
    if (pthread_rwlock_init(&h->lock, NULL) != 0) {
        free(h);
        return NULL;
    }
    h->mint = INT64_MAX;
    h->maxt = INT64_MIN;
    h->created_mono_ns = clock_mono_ns();
    h->refs = 1;
    return h;
}

void head_ref(tsdb_head *h)
{
    __atomic_add_fetch(&h->refs, 1, __ATOMIC_RELAXED);
}

void head_unref(tsdb_head *h)
{
    if (!h || __atomic_sub_fetch(&h->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    for (uint64_t i = 0; i < h->nids; i++) {
        head_series *s = h->by_id[h->ids[i]];
        free(s->ts);
        free(s->v);
        free(s);
    }
    free(h->by_id);
    free(h->ids);
    pthread_rwlock_destroy(&h->lock);
    free(h);
}

static int head_series_new(tsdb_head *h, uint64_t id, head_series **out)
{
    if (id >= h->id_cap) {
        uint64_t cap = h->id_cap ? h->id_cap : 1024;
        while (cap <= id)
            cap *= 2;
        head_series **by_id = realloc(h->by_id, cap * sizeof(*by_id));
        if (!by_id)
            return -ENOMEM;
        memset(by_id + h->id_cap, 0, (cap - h->id_cap) * sizeof(*by_id));
        h->by_id = by_id;
        h->id_cap = cap;
    }
    if (h->nids == h->ids_cap) {
        uint64_t cap = h->ids_cap ? h->ids_cap * 2 : 1024;
        uint64_t *ids = realloc(h->ids, cap * sizeof(*ids));
        if (!ids)
            return -ENOMEM;
        h->ids = ids;
        h->ids_cap = cap;
    }
    head_series *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->sorted = true;
    h->by_id[id] = s;
    h->ids[h->nids++] = id;
    *out = s;
    return 0;
}

int head_append(tsdb_head *h, uint64_t id, int64_t ts, double v)
{
    head_series *s = id < h->id_cap ? h->by_id[id] : NULL;
    int rc;
    if (!s && (rc = head_series_new(h, id, &s)) != 0)
        return rc;
    if (s->n == s->cap) {
        uint32_t cap = s->cap ? s->cap * 2 : HEAD_SERIES_INITIAL_CAP;
        int64_t *nts = realloc(s->ts, cap * sizeof(*nts));
        if (!nts)
            return -ENOMEM;
        s->ts = nts;
        double *nv = realloc(s->v, cap * sizeof(*nv));
        if (!nv)
            return -ENOMEM;
        s->v = nv;
        s->cap = cap;
    }
    if (s->n && ts <= s->ts[s->n - 1])
        s->sorted = false;
    s->ts[s->n] = ts;
    s->v[s->n] = v;
    s->n++;
    h->points++;
    if (ts < h->mint)
        h->mint = ts;
    if (ts > h->maxt)
        h->maxt = ts;
    return 0;
}

int head_copy(tsdb_head *h, uint64_t id, int64_t mint, int64_t maxt, bool locked, int64_t **out_ts,
              double **out_v, size_t *out_n)
{
    int rc = 0;
    int64_t *ts = NULL;
    double *v = NULL;
    size_t n = 0;
    if (!locked)
        pthread_rwlock_rdlock(&h->lock);
    head_series *s = id < h->id_cap ? h->by_id[id] : NULL;
    bool sorted = true;
    if (s && s->n) {
        sorted = s->sorted;
        ts = malloc(s->n * sizeof(*ts));
        v = malloc(s->n * sizeof(*v));
        if (!ts || !v) {
            rc = -ENOMEM;
        } else {
            /* Unsorted series keep their duplicates until sorted, so the last write
             * can win. */
            for (uint32_t i = 0; i < s->n; i++) {
                if (s->ts[i] < mint || s->ts[i] > maxt)
                    continue;
                ts[n] = s->ts[i];
                v[n++] = s->v[i];
            }
        }
    }
    if (!locked)
        pthread_rwlock_unlock(&h->lock);
    if (rc == 0 && !sorted && n) {
        long m = samples_sort_dedup(ts, v, n);
        if (m < 0)
            rc = (int)m;
        else
            n = (size_t)m;
    }
    if (rc || n == 0) {
        free(ts);
        free(v);
        ts = NULL;
        v = NULL;
        n = 0;
    }
    *out_ts = ts;
    *out_v = v;
    *out_n = n;
    return rc;
}

int head_series_prepare(tsdb_head *h, uint64_t id, head_series **out)
{
    head_series *s = id < h->id_cap ? h->by_id[id] : NULL;
    *out = s;
    if (s && !s->sorted) {
        long m = samples_sort_dedup(s->ts, s->v, s->n);
        if (m < 0)
            return (int)m;
        s->n = (uint32_t)m;
        s->sorted = true;
    }
    return 0;
}
