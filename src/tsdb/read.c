/*
 * read.c — selecting series and merging their samples across blocks and heads.
 *
 * A select takes a snapshot (references to the active head, the frozen head and the
 * published block set) so flushes and compactions may proceed meanwhile, then for each
 * matching series merges its runs from oldest source to newest: blocks in sequence
 * order, the frozen head, the active head. Each merge lets the newer run win on equal
 * timestamps, which is exactly "the later write wins".
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stele/tsdb.h"
#include "tsdb/samples.h"
#include "tsdb/series_key.h"
#include "tsdb/tsdb_internal.h"

/* acc = merge(acc, newer[0..n)) using out as scratch. */
static int run_merge(sample_buf *acc, sample_buf *out, const int64_t *ts, const double *v, size_t n)
{
    if (n == 0)
        return 0;
    if (acc->n == 0 || ts[0] > acc->ts[acc->n - 1]) {
        /* The common case — blocks of consecutive partitions, then the head — appends:
         * merging would copy everything read so far once per block. */
        int rc = sample_buf_reserve(acc, acc->n + n);
        if (rc)
            return rc;
        memcpy(acc->ts + acc->n, ts, n * sizeof(*ts));
        memcpy(acc->v + acc->n, v, n * sizeof(*v));
        acc->n += n;
        return 0;
    }
    int rc = sample_buf_reserve(out, acc->n + n);
    if (rc)
        return rc;
    out->n = samples_merge(acc->ts, acc->v, acc->n, ts, v, n, out->ts, out->v);
    sample_buf t = *acc;
    *acc = *out;
    *out = t;
    return 0;
}

/* Keeps the part of a sorted run inside [mint, maxt]: returns start and count. */
static size_t clip_range(const int64_t *ts, size_t n, int64_t mint, int64_t maxt, size_t *count)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (ts[mid] < mint)
            lo = mid + 1;
        else
            hi = mid;
    }
    size_t start = lo;
    hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (ts[mid] <= maxt)
            lo = mid + 1;
        else
            hi = mid;
    }
    *count = lo - start;
    return start;
}

static int merge_head(tsdb_head *h, uint64_t id, int64_t mint, int64_t maxt, sample_buf *acc,
                      sample_buf *out)
{
    int64_t *ts = NULL;
    double *v = NULL;
    size_t n = 0;
    int rc = head_copy(h, id, mint, maxt, false, &ts, &v, &n);
    if (rc == 0)
        rc = run_merge(acc, out, ts, v, n);
    free(ts);
    free(v);
    return rc;
}

int raw_reader_init(raw_reader *r, tsdb_head *active, tsdb_head *frozen, block_set *blocks)
{
    memset(r, 0, sizeof(*r));
    r->active = active;
    r->frozen = frozen;
    r->blocks = blocks;
    r->caches = calloc(blocks->n + 1, sizeof(*r->caches));
    return r->caches ? 0 : -ENOMEM;
}

void raw_reader_free(raw_reader *r)
{
    for (size_t b = 0; r->caches && b < r->blocks->n; b++)
        block_cache_free(&r->caches[b]);
    free(r->caches);
    sample_buf_free(&r->acc);
    sample_buf_free(&r->out);
    sample_buf_free(&r->tmp);
    memset(r, 0, sizeof(*r));
}

int raw_reader_read(raw_reader *r, uint64_t id, int64_t mint, int64_t maxt, char *err,
                    size_t errcap)
{
    int rc = 0;
    r->acc.n = 0;
    for (size_t b = 0; b < r->blocks->n && rc == 0; b++) {
        const tsdb_block *blk = r->blocks->blocks[b];
        if (blk->maxt < mint || blk->mint > maxt)
            continue;
        const block_entry *e = block_find(blk, id);
        if (!e || e->maxt < mint || e->mint > maxt)
            continue;
        rc = sample_buf_reserve(&r->tmp, e->npoints);
        if (rc == 0)
            rc = block_read_series(blk, e, &r->caches[b], r->tmp.ts, r->tmp.v);
        if (rc) {
            snprintf(err, errcap, "%s: damaged data for a series (%s)", blk->path, strerror(-rc));
            return rc;
        }
        size_t count, start = clip_range(r->tmp.ts, e->npoints, mint, maxt, &count);
        rc = run_merge(&r->acc, &r->out, r->tmp.ts + start, r->tmp.v + start, count);
    }
    if (rc == 0 && r->frozen)
        rc = merge_head(r->frozen, id, mint, maxt, &r->acc, &r->out);
    if (rc == 0 && r->active)
        rc = merge_head(r->active, id, mint, maxt, &r->acc, &r->out);
    return rc;
}

int stele_tsdb_select(stele_tsdb *db, const char *tenant, const stele_matcher *matchers,
                      size_t nmatchers, int64_t mint, int64_t maxt, stele_series_fn fn, void *ctx,
                      char *err, size_t errcap)
{
    char errbuf[256];
    uint64_t *ids = NULL;
    size_t nids = 0;
    tsdb_head *active = NULL, *frozen = NULL;
    block_set *blocks = NULL;
    raw_reader rd;
    stele_label labels[STELE_MAX_LABELS];
    if (!err) {
        err = errbuf;
        errcap = sizeof(errbuf);
    }
    int rc = index_match(&db->ix, tenant, matchers, nmatchers, &ids, &nids, err, errcap);
    if (rc)
        return rc;
    /* Key order is block order: each block's groups are then decompressed once. */
    tsdb_series **order = NULL;
    rc = series_in_key_order(db, ids, nids, &order);
    if (rc) {
        free(ids);
        return rc;
    }
    tsdb_view_acquire(db, &active, &frozen, &blocks);
    rc = raw_reader_init(&rd, active, frozen, blocks);
    for (size_t i = 0; i < nids && rc == 0; i++) {
        rc = raw_reader_read(&rd, order[i]->id, mint, maxt, err, errcap);
        if (rc || rd.acc.n == 0)
            continue;
        tsdb_series *s = order[i];
        const char *t;
        size_t tl, nl;
        if (series_key_decode(s->key, s->key_len, &t, &tl, labels, &nl) != 0) {
            rc = -EBADMSG;
            break;
        }
        stele_series_view view = {
            .labels = labels, .nlabels = nl, .ts = rd.acc.ts, .values = rd.acc.v, .n = rd.acc.n};
        rc = fn(ctx, &view);
    }
    raw_reader_free(&rd);
    head_unref(active);
    head_unref(frozen);
    block_set_release(blocks);
    free(order);
    free(ids);
    return rc;
}

/* Points of series id held in a head within [mint, maxt] (read lock taken here). */
static uint64_t head_points_in(tsdb_head *h, uint64_t id, int64_t mint, int64_t maxt)
{
    uint64_t n = 0;
    if (!h)
        return 0;
    pthread_rwlock_rdlock(&h->lock);
    head_series *s = id < h->id_cap ? h->by_id[id] : NULL;
    if (s && s->n && h->mint <= maxt && h->maxt >= mint)
        for (uint32_t i = 0; i < s->n; i++)
            n += s->ts[i] >= mint && s->ts[i] <= maxt;
    pthread_rwlock_unlock(&h->lock);
    return n;
}

/* Samples of a block entry expected within [mint, maxt], assuming even spacing. */
static uint64_t entry_points_in(const block_entry *e, int64_t mint, int64_t maxt)
{
    if (e->maxt < mint || e->mint > maxt)
        return 0;
    if (e->mint >= mint && e->maxt <= maxt)
        return e->npoints;
    int64_t lo = e->mint > mint ? e->mint : mint, hi = e->maxt < maxt ? e->maxt : maxt;
    double span = (double)e->maxt - (double)e->mint + 1;
    return (uint64_t)((double)e->npoints * ((double)hi - (double)lo + 1) / span) + 1;
}

int stele_tsdb_estimate(stele_tsdb *db, const char *tenant, const stele_matcher *matchers,
                        size_t nmatchers, int64_t mint, int64_t maxt, uint64_t *series,
                        uint64_t *samples, char *err, size_t errcap)
{
    uint64_t *ids = NULL;
    size_t nids = 0;
    tsdb_head *active = NULL, *frozen = NULL;
    block_set *blocks = NULL;
    int rc = index_match(&db->ix, tenant, matchers, nmatchers, &ids, &nids, err, errcap);
    if (rc)
        return rc;
    *series = nids;
    *samples = 0;
    tsdb_view_acquire(db, &active, &frozen, &blocks);
    for (size_t b = 0; b < blocks->n; b++) {
        const tsdb_block *blk = blocks->blocks[b];
        if (blk->maxt < mint || blk->mint > maxt)
            continue;
        for (size_t i = 0; i < nids; i++) {
            const block_entry *e = block_find(blk, ids[i]);
            if (e)
                *samples += entry_points_in(e, mint, maxt);
        }
    }
    for (size_t i = 0; i < nids; i++)
        *samples +=
            head_points_in(active, ids[i], mint, maxt) + head_points_in(frozen, ids[i], mint, maxt);
    head_unref(active);
    head_unref(frozen);
    block_set_release(blocks);
    free(ids);
    return 0;
}

int stele_tsdb_series(stele_tsdb *db, const char *tenant, const stele_matcher *matchers,
                      size_t nmatchers, int64_t mint, int64_t maxt, stele_labels_fn fn, void *ctx,
                      char *err, size_t errcap)
{
    uint64_t *ids = NULL;
    size_t nids = 0;
    tsdb_head *active = NULL, *frozen = NULL;
    block_set *blocks = NULL;
    stele_label labels[STELE_MAX_LABELS];
    char errbuf[256];
    if (!err) {
        err = errbuf;
        errcap = sizeof(errbuf);
    }
    int rc = index_match(&db->ix, tenant, matchers, nmatchers, &ids, &nids, err, errcap);
    if (rc)
        return rc;
    tier_view *tiers = NULL;
    tsdb_view_acquire_all(db, &active, &frozen, &blocks, &tiers);
    for (size_t i = 0; i < nids && rc == 0; i++) {
        bool has_data = false;
        for (size_t b = 0; b < blocks->n && !has_data; b++) {
            const block_entry *e = block_find(blocks->blocks[b], ids[i]);
            has_data = e && e->maxt >= mint && e->mint <= maxt;
        }
        if (!has_data)
            has_data = head_points_in(active, ids[i], mint, maxt) ||
                       head_points_in(frozen, ids[i], mint, maxt);
        /* Series whose raw data expired still have data in the tiers (bucket starts:
         * a bucket overlaps [mint, maxt] when it starts before maxt and ends after mint). */
        for (size_t t = 0; t < db->ntiers && !has_data; t++) {
            const block_set *ts = tiers->blocks[t];
            int64_t r = db->tier[t].resolution;
            for (size_t b = 0; b < ts->n && !has_data; b++) {
                const block_entry *e = block_find(ts->blocks[b], ids[i]);
                has_data = e && e->maxt + r > mint && e->mint <= maxt;
            }
        }
        if (!has_data)
            continue;
        tsdb_series *s = index_get(&db->ix, ids[i]);
        const char *t;
        size_t tl, nl;
        if (!s || series_key_decode(s->key, s->key_len, &t, &tl, labels, &nl) != 0) {
            rc = -EBADMSG;
            break;
        }
        rc = fn(ctx, labels, nl);
    }
    head_unref(active);
    head_unref(frozen);
    block_set_release(blocks);
    tier_view_release(tiers);
    free(ids);
    return rc;
}
