/*
 * tier_store.c — downsampled tiers on disk: building, compaction, retention, and exact
 * bucket reads for the query planner (SPEC §5; arithmetic in tier.c, format in block.c).
 *
 * Design: a tier bucket is never updated incrementally. Whenever new raw data reaches a
 * bucket — in time or however late — the bucket is recomputed from *all* raw data of
 * its time range and written again in a newer tier block; readers take, per bucket,
 * the one from the newest tier block. That makes building idempotent (a crash mid-build
 * and a rebuild can never double-count) and exact with "later write wins".
 *
 * What has been built is one number, built_through: every raw block with seq_hi ≤ it
 * is reflected in every tier. A build step takes the flushed raw blocks above it (a
 * bounded number of points at a time, so ingestion keeps its share of the machine),
 * collects the finest-tier buckets their samples touch, recomputes them and the
 * buckets holding them in every tier from all raw data of the coarsest buckets around, writes the
 * tier blocks durably, then records the new built_through durably in tiers/state, then publishes. A
 * crash anywhere in between repeats the step on restart.
 *
 * Queries see the rest exactly: buckets touched by the heads or by raw blocks above
 * built_through are recomputed from raw data on the fly.
 *
 * Invariant that keeps recomputation exact: raw data of a bucket is complete whenever
 * something may still need the bucket recomputed. Writes are accepted from
 * ceil(now − raw retention) to the coarsest resolution R; raw blocks are dropped only
 * when every flushed block is reflected, and only when they end before
 * floor(min(now − raw retention, oldest timestamp in the heads)) to R. So no bucket that
 * may still be recomputed ever lost raw data (docs/tiers.md has the argument).
 *
 * STATE FILE (tiers/state, replaced atomically: write tmp, fsync, rename, fsync dir)
 *   0   8  magic "STLTIER\1"
 *   8   4  version (1)
 *   12  4  ntiers (downsampled tiers)
 *   16  8  built_through
 *   24  8  committed: the highest sequence number of a tier block written by a build
 *           step this state records; tier blocks above it are leftovers of a step that
 *           did not complete, deleted on open (their buckets are rebuilt)
 *   32  8×(ntiers+1)  expired_before, raw first (signed ns; INT64_MIN = never)
 *   ..  8×ntiers      resolutions (ns) the state was built for
 *   ..  8  XXH3-64 of everything before
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "common/bytes.h"
#include "tsdb/series_key.h"
#include "tsdb/tsdb_internal.h"

#define TIER_STATE_MAGIC "STLTIER\1"
#define TIER_STATE_VERSION 1u
#define TIER_STATE_MAX (8 + 4 + 4 + 8 + 8 + 8 * (2 * STELE_MAX_TIERS + 1) + 8)
#define TIER_STATE_FIXED 32
/* Raw points of flushed blocks one build step takes at most (at least one block). */
#define TIER_BUILD_STEP_POINTS (2u << 20)

static int64_t align_down(int64_t x, int64_t r)
{
    int64_t q = x / r;
    if (x % r < 0)
        q--;
    return q * r;
}

static int64_t align_up(int64_t x, int64_t r)
{
    int64_t d = align_down(x, r);
    return d == x ? x : d + r;
}

/* Where raw data may be partial: the coarse bucket holding the raw expiry, and before. */
static int64_t raw_complete_from(stele_tsdb *db, const tier_view *tv)
{
    int64_t e = tv->expired_before[0];
    if (e == INT64_MIN)
        return INT64_MIN;
    return db->ntiers ? align_up(e, db->tier[db->ntiers - 1].resolution) : e;
}

void tier_name(int64_t resolution, char *buf, size_t cap)
{
    stele_resolution_name(resolution, buf, cap);
}

/* ---- tier views ------------------------------------------------------------------ */

void tier_view_release(tier_view *v)
{
    if (!v || __atomic_sub_fetch(&v->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    for (size_t t = 0; t < STELE_MAX_TIERS; t++)
        block_set_release(v->blocks[t]);
    free(v);
}

tier_view *tier_view_acquire(stele_tsdb *db)
{
    pthread_mutex_lock(&db->view_mu);
    tier_view *v = db->tiers;
    __atomic_add_fetch(&v->refs, 1, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&db->view_mu);
    return v;
}

/* A copy of base (blocks referenced anew), for the caller to modify and publish. */
static tier_view *tier_view_copy(const tier_view *base)
{
    tier_view *v = calloc(1, sizeof(*v));
    if (!v)
        return NULL;
    *v = *base;
    v->refs = 1;
    for (size_t t = 0; t < STELE_MAX_TIERS; t++)
        if (v->blocks[t])
            __atomic_add_fetch(&v->blocks[t]->refs, 1, __ATOMIC_RELAXED);
    return v;
}

static void tier_view_publish(stele_tsdb *db, tier_view *next)
{
    pthread_mutex_lock(&db->view_mu);
    tier_view *old = db->tiers;
    db->tiers = next;
    pthread_mutex_unlock(&db->view_mu);
    tier_view_release(old);
}

/* ---- state file ------------------------------------------------------------------ */

static int tier_state_write(stele_tsdb *db, uint64_t built_through, uint64_t committed,
                            const int64_t *expired_before)
{
    uint8_t buf[TIER_STATE_MAX];
    size_t n = 0;
    memcpy(buf, TIER_STATE_MAGIC, 8);
    put_le32(buf + 8, TIER_STATE_VERSION);
    put_le32(buf + 12, (uint32_t)db->ntiers);
    put_le64(buf + 16, built_through);
    put_le64(buf + 24, committed);
    n = TIER_STATE_FIXED;
    for (size_t t = 0; t <= db->ntiers; t++, n += 8)
        put_le64(buf + n, (uint64_t)expired_before[t]);
    for (size_t t = 0; t < db->ntiers; t++, n += 8)
        put_le64(buf + n, (uint64_t)db->tier[t].resolution);
    put_le64(buf + n, XXH3_64bits(buf, n));
    n += 8;
    return stele_io_write_file_atomic(db->opts.io, db->tiers_dir, "state", buf, n);
}

static int tier_state_decode(const uint8_t *buf, size_t size, tier_state *st, const char **why);

int tier_state_load(stele_io *io, const char *path, tier_state *st, const char **why)
{
    uint8_t *buf = NULL;
    size_t size = 0;
    *why = "unreadable";
    int rc = stele_io_read_file(io, path, TIER_STATE_MAX, &buf, &size);
    if (rc == -EFBIG || (rc == 0 && size < TIER_STATE_FIXED + 16))
        rc = -EBADMSG, *why = "size out of range";
    if (rc == 0)
        rc = tier_state_decode(buf, size, st, why);
    free(buf);
    return rc;
}

/* Validates and decodes a state file's bytes. */
static int tier_state_decode(const uint8_t *buf, size_t size, tier_state *st, const char **why)
{
    uint32_t n = get_le32(buf + 12);
    size_t expect = TIER_STATE_FIXED + 8 * ((size_t)n + 1) + 8 * (size_t)n + 8;
    if (memcmp(buf, TIER_STATE_MAGIC, 8) != 0)
        return *why = "bad magic", -EBADMSG;
    if (get_le32(buf + 8) != TIER_STATE_VERSION)
        return *why = "unsupported version", -EBADMSG;
    if (n >= STELE_MAX_TIERS || size != expect)
        return *why = "size does not match its tier count", -EBADMSG;
    if (get_le64(buf + expect - 8) != XXH3_64bits(buf, expect - 8))
        return *why = "checksum mismatch", -EBADMSG;
    st->ntiers = n;
    st->built_through = get_le64(buf + 16);
    st->committed = get_le64(buf + 24);
    const uint8_t *p = buf + TIER_STATE_FIXED;
    for (size_t t = 0; t <= n; t++, p += 8)
        st->expired_before[t] = (int64_t)get_le64(p);
    for (size_t t = 0; t < n; t++, p += 8)
        st->resolution[t] = (int64_t)get_le64(p);
    return 0;
}

/* Reads tiers/state into v. A missing file means nothing was built yet; a state built
 * for other resolutions is kept for the tiers still configured and rebuilt from raw. */
static int tier_state_read(stele_tsdb *db, tier_view *v, char *err, size_t errcap)
{
    char path[TSDB_PATH_MAX + 32];
    tier_state st;
    const char *why;
    snprintf(path, sizeof(path), "%s/state", db->tiers_dir);
    for (size_t t = 0; t <= STELE_MAX_TIERS; t++)
        v->expired_before[t] = INT64_MIN;
    v->built_through = 0;
    v->committed = 0;
    int rc = tier_state_load(db->opts.io, path, &st, &why);
    if (rc == -ENOENT)
        return 0;
    if (rc) {
        snprintf(err, errcap,
                 "%s: damaged tier state (%s); tiers cannot be trusted — restore it, or delete "
                 "it to rebuild the tiers from raw data (see docs/operations.md)",
                 path, rc == -EBADMSG ? why : strerror(-rc));
        return rc;
    }
    bool same = st.ntiers == db->ntiers;
    for (size_t t = 0; same && t < st.ntiers; t++)
        same = st.resolution[t] == db->tier[t].resolution;
    v->committed = st.committed;
    v->expired_before[0] = st.expired_before[0];
    if (same) {
        v->built_through = st.built_through;
        for (size_t t = 1; t <= st.ntiers; t++)
            v->expired_before[t] = st.expired_before[t];
        return 0;
    }
    /* Tiers changed: rebuild them all from the raw data there is; whatever raw data
     * expired is missing from a new tier too. A tier kept keeps its own expiry. */
    fprintf(stderr, "stele: storage: tier configuration changed; rebuilding tiers from raw data\n");
    for (size_t u = 0; u < db->ntiers; u++) {
        v->expired_before[u + 1] = st.expired_before[0];
        for (size_t t = 0; t < st.ntiers; t++)
            if (st.resolution[t] == db->tier[u].resolution &&
                st.expired_before[t + 1] > v->expired_before[u + 1])
                v->expired_before[u + 1] = st.expired_before[t + 1];
    }
    return 0;
}

/* ---- opening ---------------------------------------------------------------------- */

int tier_store_open(stele_tsdb *db, stele_tsdb_recovery *rec, char *err, size_t errcap)
{
    tier_view *v = calloc(1, sizeof(*v));
    int rc;
    if (!v)
        return -ENOMEM;
    v->refs = 1;
    db->tiers = v;
    snprintf(db->tiers_dir, sizeof(db->tiers_dir), "%s/tiers", db->dir);
    int64_t partition = db->opts.partition_ns;
    for (size_t t = 0; t < db->ntiers; t++) {
        tier_conf *tc = &db->tier[t];
        int64_t base = tc->resolution > partition ? tc->resolution : partition;
        int64_t mult = (tc->resolution * 1440) / base;
        tc->partition_ns = base * (mult > 1 ? mult : 1);
        char name[32];
        tier_name(tc->resolution, name, sizeof(name));
        snprintf(tc->dir, sizeof(tc->dir), "%s/%s", db->tiers_dir, name);
    }
    rc = stele_io_mkdir_durable(db->opts.io, db->tiers_dir);
    for (size_t t = 0; rc == 0 && t < db->ntiers; t++)
        rc = stele_io_mkdir_durable(db->opts.io, db->tier[t].dir);
    if (rc) {
        snprintf(err, errcap, "%s: cannot create tier directories: %s", db->tiers_dir,
                 strerror(-rc));
        return rc;
    }
    rc = tier_state_read(db, v, err, errcap);
    if (rc)
        return rc;
    for (size_t t = 0; t < db->ntiers; t++) {
        rc = tsdb_load_block_dir(db, db->tier[t].dir, db->tier[t].resolution, rec, &v->blocks[t],
                                 err, errcap);
        if (rc)
            return rc;
        /* Blocks of a build step whose state never became durable: delete them (the
         * step runs again and writes the same buckets). */
        block_set *s = v->blocks[t];
        tsdb_block **late = calloc(s->n + 1, sizeof(*late));
        size_t nlate = 0;
        if (!late)
            return -ENOMEM;
        for (size_t i = 0; i < s->n; i++)
            if (s->blocks[i]->seq_lo > v->committed)
                late[nlate++] = s->blocks[i];
        if (nlate) {
            block_set *kept = block_set_derive(s, late, nlate, NULL, 0);
            if (!kept) {
                free(late);
                return -ENOMEM;
            }
            for (size_t i = 0; i < nlate; i++)
                late[i]->retired = true;
            v->blocks[t] = kept;
            block_set_release(s);
            free(late);
            late = NULL;
            rc = stele_io_fsync_dir(db->opts.io, db->tier[t].dir);
            if (rc) {
                snprintf(err, errcap, "%s: %s", db->tier[t].dir, strerror(-rc));
                return rc;
            }
        }
        free(late);
        for (size_t i = 0; i < v->blocks[t]->n; i++)
            if (v->blocks[t]->blocks[i]->seq_hi >= db->next_seq)
                db->next_seq = v->blocks[t]->blocks[i]->seq_hi + 1;
    }
    if (v->built_through >= db->next_seq)
        db->next_seq = v->built_through + 1;
    if (v->committed >= db->next_seq)
        db->next_seq = v->committed + 1;
    return 0;
}

size_t stele_tsdb_tiers(stele_tsdb *db, stele_tier_info *out)
{
    tier_view *v = tier_view_acquire(db);
    out[0] = (stele_tier_info){.resolution_ns = 0,
                               .retention_ns = db->opts.retention_ns,
                               .expired_before = v->expired_before[0]};
    for (size_t t = 0; t < db->ntiers; t++)
        out[t + 1] = (stele_tier_info){.resolution_ns = db->tier[t].resolution,
                                       .retention_ns = db->tier[t].retention,
                                       .expired_before = v->expired_before[t + 1]};
    tier_view_release(v);
    return db->ntiers + 1;
}

/* ---- bucket arrays ---------------------------------------------------------------- */

typedef struct {
    stele_bucket *b;
    size_t n, cap;
} bucket_buf;

static int bucket_buf_reserve(bucket_buf *bb, size_t need)
{
    if (need <= bb->cap)
        return 0;
    size_t cap = bb->cap ? bb->cap : 64;
    while (cap < need)
        cap *= 2;
    stele_bucket *p = realloc(bb->b, cap * sizeof(*p));
    if (!p)
        return -ENOMEM;
    bb->b = p;
    bb->cap = cap;
    return 0;
}

/* Folds each bucket's compensation into its sum, as tier blocks store it. */
static void buckets_finish_sums(stele_bucket *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!isinf(b[i].sum))
            b[i].sum += b[i].sum_c;
        b[i].sum_c = 0;
    }
}

/* acc = acc merged with newer[0..n) (sorted by start); on equal starts the newer wins.
 * scratch is swapped with acc. */
static int buckets_merge_newer(bucket_buf *acc, bucket_buf *scratch, const stele_bucket *newer,
                               size_t n)
{
    if (n == 0)
        return 0;
    if (acc->n == 0 || newer[0].start > acc->b[acc->n - 1].start) {
        int rc = bucket_buf_reserve(acc, acc->n + n); /* appends: the common case */
        if (rc)
            return rc;
        memcpy(acc->b + acc->n, newer, n * sizeof(*newer));
        acc->n += n;
        return 0;
    }
    int rc = bucket_buf_reserve(scratch, acc->n + n);
    if (rc)
        return rc;
    size_t i = 0, j = 0, k = 0;
    while (i < acc->n || j < n) {
        if (j == n || (i < acc->n && acc->b[i].start < newer[j].start)) {
            scratch->b[k++] = acc->b[i++];
        } else {
            if (i < acc->n && acc->b[i].start == newer[j].start)
                i++;
            scratch->b[k++] = newer[j++];
        }
    }
    scratch->n = k;
    bucket_buf t = *acc;
    *acc = *scratch;
    *scratch = t;
    return 0;
}

/* ---- partition writers ------------------------------------------------------------ */

typedef struct {
    int64_t partition;
    block_writer *w;
} part_writer;

typedef struct {
    stele_tsdb *db;
    const tier_conf *tc;
    uint32_t level;
    uint64_t seq_lo, seq_hi; /* 0: a fresh sequence number per block */
    int zstd_level;          /* builds compress fast (1); compaction recompresses (5) */
    part_writer *pw;
    size_t n, cap;
} part_writers;

static int part_writers_get(part_writers *p, int64_t partition, block_writer **out)
{
    for (size_t i = 0; i < p->n; i++) {
        if (p->pw[i].partition == partition) {
            *out = p->pw[i].w;
            return 0;
        }
    }
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 8;
        part_writer *pw = realloc(p->pw, cap * sizeof(*pw));
        if (!pw)
            return -ENOMEM;
        p->pw = pw;
        p->cap = cap;
    }
    uint64_t lo = p->seq_lo, hi = p->seq_hi;
    if (lo == 0)
        lo = hi = __atomic_fetch_add(&p->db->next_seq, 1, __ATOMIC_RELAXED);
    block_write_params bp = {.io = p->db->opts.io,
                             .dir = p->tc->dir,
                             .seq_lo = lo,
                             .seq_hi = hi,
                             .level = p->level,
                             .partition = partition,
                             .resolution = p->tc->resolution,
                             .zstd_level = p->zstd_level};
    part_writer *w = &p->pw[p->n];
    w->partition = partition;
    int rc = block_writer_begin(&bp, &w->w);
    if (rc)
        return rc;
    p->n++;
    *out = w->w;
    return 0;
}

/* Adds a series' buckets (sorted), split at the tier's partition boundaries. */
static int part_writers_add(part_writers *p, const tsdb_series *s, const stele_bucket *b, size_t n)
{
    int64_t width = p->tc->partition_ns;
    for (size_t start = 0; start < n;) {
        int64_t part = align_down(b[start].start, width);
        size_t end = start + 1;
        while (end < n && b[end].start < part + width)
            end++;
        block_writer *w;
        int rc = part_writers_get(p, part, &w);
        if (rc == 0)
            rc = block_writer_add_buckets(w, s->id, s->key, s->key_len, b + start, end - start);
        if (rc)
            return rc;
        start = end;
    }
    return 0;
}

/* Completes every block (durably) and opens them; on error nothing is left behind. */
static int part_writers_finish(part_writers *p, tsdb_block ***out, size_t *nout)
{
    char name[64], path[TSDB_PATH_MAX + 160], err[512];
    tsdb_block **blocks = calloc(p->n + 1, sizeof(*blocks));
    size_t nb = 0;
    int rc = blocks ? 0 : -ENOMEM;
    for (size_t i = 0; i < p->n; i++) {
        if (rc) {
            block_writer_abort(p->pw[i].w);
            continue;
        }
        rc = block_writer_finish(p->pw[i].w, name, sizeof(name));
        if (rc == 0) {
            snprintf(path, sizeof(path), "%s/%s", p->tc->dir, name);
            rc = block_open(p->db->opts.io, path, false, NULL, NULL, &blocks[nb], err, sizeof(err));
            if (rc == 0)
                nb++;
        }
    }
    free(p->pw);
    p->pw = NULL;
    p->n = p->cap = 0;
    if (rc) {
        for (size_t i = 0; i < nb; i++) {
            blocks[i]->retired = true;
            block_unref(blocks[i]);
        }
        free(blocks);
        return rc;
    }
    *out = blocks;
    *nout = nb;
    return 0;
}

static void part_writers_abort(part_writers *p)
{
    for (size_t i = 0; i < p->n; i++)
        block_writer_abort(p->pw[i].w);
    free(p->pw);
    p->pw = NULL;
    p->n = p->cap = 0;
}

/* ---- building --------------------------------------------------------------------- */

typedef struct {
    uint64_t id;
    int64_t start; /* of a bucket of the finest tier */
} dirty_bucket;

static int dirty_cmp(const void *a, const void *b)
{
    const dirty_bucket *x = a, *y = b;
    if (x->id != y->id)
        return x->id < y->id ? -1 : 1;
    return x->start < y->start ? -1 : x->start > y->start;
}

/* Appends the finest-tier buckets touched by samples ts[0..n) of series id. */
static int dirty_add(dirty_bucket **d, size_t *n, size_t *cap, uint64_t id, const int64_t *ts,
                     size_t nts, int64_t fine, int64_t coarse, int64_t complete_from)
{
    int64_t last = 0;
    bool have = false;
    for (size_t i = 0; i < nts; i++) {
        int64_t s = align_down(ts[i], fine);
        /* A bucket whose raw data retention may have thinned out is never recomputed:
         * its tier bucket was complete, and only complete buckets may replace one. */
        if ((have && s == last) || align_down(ts[i], coarse) < complete_from)
            continue;
        if (*n == *cap) {
            size_t c = *cap ? *cap * 2 : 1024;
            dirty_bucket *p = realloc(*d, c * sizeof(*p));
            if (!p)
                return -ENOMEM;
            *d = p;
            *cap = c;
        }
        (*d)[(*n)++] = (dirty_bucket){.id = id, .start = s};
        last = s;
        have = true;
    }
    return 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* One build step; *done = true when nothing flushed remains unreflected. */
static int tier_build_step(stele_tsdb *db, bool *done)
{
    block_set *raw = tsdb_blocks_acquire(db);
    tier_view *tv = tier_view_acquire(db);
    dirty_bucket *dirty = NULL;
    size_t ndirty = 0, dirty_cap = 0;
    uint64_t *ids = NULL;
    tsdb_series **order = NULL;
    sample_buf tmp = {0};
    bucket_buf series_buckets[STELE_MAX_TIERS] = {{0}};
    block_cache cache = {0};
    raw_reader rd;
    bool reader = false;
    part_writers pws[STELE_MAX_TIERS] = {{0}};
    tsdb_block **made[STELE_MAX_TIERS] = {0};
    size_t nmade[STELE_MAX_TIERS] = {0};
    char err[512];
    int rc = 0;
    int64_t coarse = db->tier[db->ntiers - 1].resolution;
    int64_t complete_from = raw_complete_from(db, tv);
    uint64_t new_built = tv->built_through, points = 0;

    *done = true;
    for (size_t i = 0; i < raw->n && rc == 0; i++) {
        tsdb_block *blk = raw->blocks[i];
        if (blk->seq_hi <= tv->built_through)
            continue;
        if (points > 0 && points + blk->npoints > TIER_BUILD_STEP_POINTS) {
            *done = false;
            break;
        }
        points += blk->npoints;
        new_built = blk->seq_hi;
        const block_entry **in_file = NULL;
        rc = block_entries_in_file_order(blk, &in_file);
        for (uint64_t j = 0; rc == 0 && j < blk->nentries; j++) {
            const block_entry *e = in_file[j];
            rc = sample_buf_reserve(&tmp, e->npoints);
            if (rc == 0)
                rc = block_read_series(blk, e, &cache, tmp.ts, tmp.v);
            if (rc == 0)
                rc = dirty_add(&dirty, &ndirty, &dirty_cap, e->id, tmp.ts, e->npoints,
                               db->tier[0].resolution, coarse, complete_from);
        }
        free(in_file);
    }
    block_cache_free(&cache);
    if (rc || new_built == tv->built_through)
        goto out;
    if (ndirty)
        qsort(dirty, ndirty, sizeof(*dirty), dirty_cmp);
    size_t nd = 0, nids = 0;
    for (size_t i = 0; i < ndirty; i++)
        if (nd == 0 || dirty_cmp(&dirty[nd - 1], &dirty[i]) != 0)
            dirty[nd++] = dirty[i];
    ndirty = nd;
    ids = malloc((ndirty + 1) * sizeof(*ids));
    if (!ids) {
        rc = -ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < ndirty; i++)
        if (nids == 0 || ids[nids - 1] != dirty[i].id)
            ids[nids++] = dirty[i].id;
    rc = series_in_key_order(db, ids, nids, &order);
    if (rc)
        goto out;
    rc = raw_reader_init(&rd, NULL, NULL, raw);
    if (rc)
        goto out;
    reader = true;
    for (size_t t = 0; t < db->ntiers; t++)
        pws[t] = (part_writers){.db = db, .tc = &db->tier[t], .zstd_level = 1};
    for (size_t k = 0; k < nids && rc == 0; k++) {
        const tsdb_series *s = order[k];
        dirty_bucket key = {.id = s->id, .start = INT64_MIN};
        size_t lo = 0, hi = ndirty;
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (dirty_cmp(&dirty[mid], &key) < 0)
                lo = mid + 1;
            else
                hi = mid;
        }
        /* Runs of consecutive coarse buckets: one raw read each (a coarse bucket is
         * recomputed from all its raw data); in every tier, only the buckets holding a
         * touched finest bucket are written. A series' buckets go into each tier block
         * at once (a block holds a series once). */
        for (size_t t = 0; t < db->ntiers; t++)
            series_buckets[t].n = 0;
        for (size_t i = lo; i < ndirty && dirty[i].id == s->id && rc == 0;) {
            size_t j = i + 1;
            while (j < ndirty && dirty[j].id == s->id &&
                   align_down(dirty[j].start, coarse) <=
                       align_down(dirty[j - 1].start, coarse) + coarse)
                j++;
            int64_t from = align_down(dirty[i].start, coarse);
            int64_t to = align_down(dirty[j - 1].start, coarse) + coarse - 1;
            rc = raw_reader_read(&rd, s->id, from, to, err, sizeof(err));
            for (size_t t = 0; t < db->ntiers && rc == 0 && rd.acc.n; t++) {
                bucket_buf *sb = &series_buckets[t];
                int64_t r = db->tier[t].resolution;
                rc = bucket_buf_reserve(sb, sb->n + rd.acc.n);
                if (rc)
                    break;
                size_t nb = stele_buckets_build(rd.acc.ts, rd.acc.v, rd.acc.n, r, sb->b + sb->n);
                /* Keep the touched ones: both lists are in time order. */
                size_t kept = 0, f = i;
                for (size_t k = 0; k < nb; k++) {
                    const stele_bucket *bk = &sb->b[sb->n + k];
                    while (f < j && align_down(dirty[f].start, r) < bk->start)
                        f++;
                    if (f < j && align_down(dirty[f].start, r) == bk->start)
                        sb->b[sb->n + kept++] = *bk;
                }
                sb->n += kept;
            }
            i = j;
        }
        for (size_t t = 0; t < db->ntiers && rc == 0; t++)
            if (series_buckets[t].n)
                rc = part_writers_add(&pws[t], s, series_buckets[t].b, series_buckets[t].n);
    }
    for (size_t t = 0; t < db->ntiers; t++) {
        if (rc) {
            part_writers_abort(&pws[t]);
            continue;
        }
        rc = part_writers_finish(&pws[t], &made[t], &nmade[t]);
    }
    if (rc)
        goto out;
    /* Durable tier blocks first, then the state that says they exist, then publish. */
    uint64_t committed = tv->committed;
    for (size_t t = 0; t < db->ntiers; t++)
        for (size_t i = 0; i < nmade[t]; i++)
            if (made[t][i]->seq_hi > committed)
                committed = made[t][i]->seq_hi;
    rc = tier_state_write(db, new_built, committed, tv->expired_before);
    if (rc)
        goto out;
    tier_view *next = tier_view_copy(tv);
    if (!next) {
        rc = -ENOMEM;
        goto out;
    }
    next->built_through = new_built;
    next->committed = committed;
    for (size_t t = 0; t < db->ntiers && rc == 0; t++) {
        block_set *s = block_set_derive(next->blocks[t], NULL, 0, made[t], nmade[t]);
        if (!s) {
            rc = -ENOMEM;
            break;
        }
        block_set_release(next->blocks[t]);
        next->blocks[t] = s;
    }
    if (rc) {
        tier_view_release(next);
        goto out;
    }
    tier_view_publish(db, next);
    for (size_t t = 0; t < db->ntiers; t++)
        __atomic_add_fetch(&db->tier[t].builds, 1, __ATOMIC_RELAXED);
    if (*done)
        __atomic_store_n(&db->unbuilt_since_ns, 0, __ATOMIC_RELAXED);
out:
    for (size_t t = 0; t < db->ntiers; t++) {
        for (size_t i = 0; i < nmade[t]; i++) {
            if (rc)
                made[t][i]->retired = true; /* not recorded: a rebuild writes them again */
            block_unref(made[t][i]);
        }
        free(made[t]);
    }
    if (reader)
        raw_reader_free(&rd);
    sample_buf_free(&tmp);
    for (size_t t = 0; t < STELE_MAX_TIERS; t++)
        free(series_buckets[t].b);
    free(dirty);
    free(ids);
    free(order);
    tier_view_release(tv);
    block_set_release(raw);
    return rc;
}

int tier_build(stele_tsdb *db, bool all, bool *done_out)
{
    bool done = true;
    int rc = 0;
    if (db->ntiers) {
        do {
            pthread_mutex_lock(&db->tier_mu);
            rc = tier_build_step(db, &done);
            pthread_mutex_unlock(&db->tier_mu);
        } while (rc == 0 && !done && all);
    }
    if (done_out)
        *done_out = done;
    return rc;
}

int stele_tsdb_build_tiers(stele_tsdb *db)
{
    return tier_build(db, true, NULL);
}

uint64_t tier_built_through(stele_tsdb *db)
{
    if (db->ntiers == 0)
        return UINT64_MAX;
    tier_view *v = tier_view_acquire(db);
    uint64_t b = v->built_through;
    tier_view_release(v);
    return b;
}

/* ---- retention ------------------------------------------------------------------- */

int64_t tier_raw_drop_cutoff(stele_tsdb *db, int64_t now)
{
    if (db->ntiers == 0)
        return now - db->opts.retention_ns;
    /* Buckets that may still be recomputed: those of future writes (accepted from
     * ceil(now − retention)) and those of data in the heads (which may be older after a
     * restart replayed a log written long ago). */
    int64_t oldest = now - db->opts.retention_ns;
    tsdb_head *active, *frozen;
    block_set *blocks;
    tsdb_view_acquire(db, &active, &frozen, &blocks);
    for (int i = 0; i < 2; i++) {
        tsdb_head *h = i ? frozen : active;
        if (!h)
            continue;
        pthread_rwlock_rdlock(&h->lock);
        if (h->points && h->mint < oldest)
            oldest = h->mint;
        pthread_rwlock_unlock(&h->lock);
    }
    head_unref(active);
    head_unref(frozen);
    block_set_release(blocks);
    return align_down(oldest, db->tier[db->ntiers - 1].resolution);
}

int64_t tier_replay_min_ts(stele_tsdb *db)
{
    tier_view *tv = tier_view_acquire(db);
    int64_t m = raw_complete_from(db, tv);
    tier_view_release(tv);
    return m;
}

int64_t tier_accept_min(stele_tsdb *db, int64_t now)
{
    int64_t min = now - db->opts.retention_ns;
    return db->ntiers ? align_up(min, db->tier[db->ntiers - 1].resolution) : min;
}

int tier_record_raw_expiry(stele_tsdb *db, int64_t expired_before)
{
    pthread_mutex_lock(&db->tier_mu);
    tier_view *tv = tier_view_acquire(db);
    int rc = 0;
    if (expired_before > tv->expired_before[0]) {
        int64_t exp[STELE_MAX_TIERS + 1];
        memcpy(exp, tv->expired_before, sizeof(exp));
        exp[0] = expired_before;
        rc = tier_state_write(db, tv->built_through, tv->committed, exp);
        tier_view *next = rc == 0 ? tier_view_copy(tv) : NULL;
        if (rc == 0 && !next)
            rc = -ENOMEM;
        if (rc == 0) {
            next->expired_before[0] = expired_before;
            tier_view_publish(db, next);
        }
    }
    tier_view_release(tv);
    pthread_mutex_unlock(&db->tier_mu);
    return rc;
}

static int tier_retention(stele_tsdb *db, int64_t now)
{
    tier_view *tv = tier_view_acquire(db);
    tsdb_block **expired[STELE_MAX_TIERS] = {0};
    size_t nexp[STELE_MAX_TIERS] = {0}, total = 0;
    int64_t exp[STELE_MAX_TIERS + 1];
    int rc = 0;
    memcpy(exp, tv->expired_before, sizeof(exp));
    for (size_t t = 0; t < db->ntiers && rc == 0; t++) {
        const tier_conf *tc = &db->tier[t];
        block_set *s = tv->blocks[t];
        int64_t cutoff = now - tc->retention;
        expired[t] = calloc(s->n + 1, sizeof(**expired));
        if (!expired[t]) {
            rc = -ENOMEM;
            break;
        }
        for (size_t i = 0; i < s->n; i++) {
            tsdb_block *b = s->blocks[i];
            if (b->maxt + tc->resolution <= cutoff) {
                expired[t][nexp[t]++] = b;
                if (b->maxt + tc->resolution > exp[t + 1])
                    exp[t + 1] = b->maxt + tc->resolution;
            }
        }
        total += nexp[t];
    }
    if (rc == 0 && total) {
        /* Record the expiry before the files go: a query must never take a gap left by
         * retention for an answer. */
        rc = tier_state_write(db, tv->built_through, tv->committed, exp);
        tier_view *next = rc == 0 ? tier_view_copy(tv) : NULL;
        if (rc == 0 && !next)
            rc = -ENOMEM;
        for (size_t t = 0; rc == 0 && t < db->ntiers; t++) {
            block_set *s = block_set_derive(next->blocks[t], expired[t], nexp[t], NULL, 0);
            if (!s) {
                rc = -ENOMEM;
                break;
            }
            block_set_release(next->blocks[t]);
            next->blocks[t] = s;
            next->expired_before[t + 1] = exp[t + 1];
        }
        if (rc == 0) {
            for (size_t t = 0; t < db->ntiers; t++) {
                for (size_t i = 0; i < nexp[t]; i++)
                    expired[t][i]->retired = true;
                __atomic_add_fetch(&db->tier[t].retention_drops, nexp[t], __ATOMIC_RELAXED);
            }
            tier_view_publish(db, next);
        } else {
            tier_view_release(next);
        }
    }
    for (size_t t = 0; t < db->ntiers; t++)
        free(expired[t]);
    tier_view_release(tv);
    for (size_t t = 0; rc == 0 && total && t < db->ntiers; t++)
        rc = stele_io_fsync_dir(db->opts.io, db->tier[t].dir);
    return rc;
}

/* ---- compaction ------------------------------------------------------------------- */

/* Merges tier blocks `in` (one partition, ascending seq) into one, newest bucket wins. */
static int tier_compact(stele_tsdb *db, size_t t, tsdb_block **in, size_t nin)
{
    const tier_conf *tc = &db->tier[t];
    block_cache *caches = calloc(nin, sizeof(*caches));
    bucket_buf acc = {0}, scratch = {0}, tmp = {0};
    uint64_t *all = NULL;
    tsdb_series **order = NULL;
    tsdb_block **made = NULL;
    size_t nmade = 0, total = 0, nids = 0;
    uint32_t level = 0;
    int rc = caches ? 0 : -ENOMEM;
    for (size_t i = 0; i < nin; i++) {
        total += in[i]->nentries;
        if (in[i]->level + 1 > level)
            level = in[i]->level + 1;
    }
    part_writers pw = {.db = db,
                       .tc = tc,
                       .level = level,
                       .seq_lo = in[0]->seq_lo,
                       .seq_hi = in[nin - 1]->seq_hi,
                       .zstd_level = 5};
    if (rc == 0 && !(all = malloc((total + 1) * sizeof(*all))))
        rc = -ENOMEM;
    for (size_t i = 0; rc == 0 && i < nin; i++)
        for (uint64_t j = 0; j < in[i]->nentries; j++)
            all[nids++] = in[i]->entries[j].id;
    if (rc == 0) {
        qsort(all, nids, sizeof(*all), cmp_u64);
        size_t k = 0;
        for (size_t i = 0; i < nids; i++)
            if (k == 0 || all[k - 1] != all[i])
                all[k++] = all[i];
        nids = k;
        rc = series_in_key_order(db, all, nids, &order);
    }
    for (size_t k = 0; rc == 0 && k < nids; k++) {
        acc.n = 0;
        for (size_t i = 0; i < nin && rc == 0; i++) {
            const block_entry *e = block_find(in[i], order[k]->id);
            if (!e)
                continue;
            rc = bucket_buf_reserve(&tmp, e->npoints);
            if (rc == 0)
                rc = block_read_buckets(in[i], e, &caches[i], tmp.b);
            if (rc == 0)
                rc = buckets_merge_newer(&acc, &scratch, tmp.b, e->npoints);
        }
        /* All in one partition: the writer keeps the input's partition. */
        if (rc == 0 && acc.n)
            rc = part_writers_add(&pw, order[k], acc.b, acc.n);
    }
    if (rc == 0)
        rc = part_writers_finish(&pw, &made, &nmade);
    else
        part_writers_abort(&pw);
    if (rc == 0) {
        tier_view *tv = tier_view_acquire(db);
        tier_view *next = tier_view_copy(tv);
        tier_view_release(tv);
        block_set *s = next ? block_set_derive(next->blocks[t], in, nin, made, nmade) : NULL;
        if (!s) {
            tier_view_release(next);
            rc = -ENOMEM;
            for (size_t i = 0; i < nmade; i++)
                made[i]->retired = true;
        } else {
            block_set_release(next->blocks[t]);
            next->blocks[t] = s;
            for (size_t i = 0; i < nin; i++)
                in[i]->retired = true;
            tier_view_publish(db, next);
        }
    }
    for (size_t i = 0; i < nmade; i++)
        block_unref(made[i]);
    free(made);
    for (size_t i = 0; caches && i < nin; i++)
        block_cache_free(&caches[i]);
    free(caches);
    free(acc.b);
    free(scratch.b);
    free(tmp.b);
    free(all);
    free(order);
    return rc;
}

static int tier_maintain_locked(stele_tsdb *db);

int tier_maintain(stele_tsdb *db)
{
    if (db->ntiers == 0)
        return 0;
    pthread_mutex_lock(&db->tier_mu);
    int rc = tier_maintain_locked(db);
    pthread_mutex_unlock(&db->tier_mu);
    return rc;
}

static int tier_maintain_locked(stele_tsdb *db)
{
    int64_t now = tsdb_now(db);
    int rc = tier_retention(db, now);
    for (size_t t = 0; rc == 0 && t < db->ntiers; t++) {
        for (int rounds = 0; rc == 0 && rounds < 64; rounds++) {
            tier_view *tv = tier_view_acquire(db);
            block_set *cur = tv->blocks[t];
            tsdb_block **run = calloc(cur->n + 1, sizeof(*run));
            size_t nrun = 0;
            int found = run ? tsdb_compaction_pick(db, cur, db->tier[t].partition_ns, UINT64_MAX,
                                                   run, &nrun)
                            : 0;
            if (!run)
                rc = -ENOMEM;
            for (size_t i = 0; found && i < nrun; i++)
                block_ref(run[i]);
            tier_view_release(tv);
            if (found) {
                rc = tier_compact(db, t, run, nrun);
                for (size_t i = 0; i < nrun; i++)
                    block_unref(run[i]);
            }
            free(run);
            if (!found)
                break;
        }
        if (rc == 0)
            rc = stele_io_fsync_dir(db->opts.io, db->tier[t].dir);
    }
    return rc;
}

/* ---- reading ---------------------------------------------------------------------- */

/* Bucket starts (of resolution r, within [lo, maxt]) that samples ts[0..n) touch, added
 * to *d (sorted, distinct after dirty_normalize). */
static int starts_add(int64_t **d, size_t *n, size_t *cap, const int64_t *ts, size_t nts, int64_t r,
                      int64_t lo, int64_t maxt)
{
    for (size_t i = 0; i < nts; i++) {
        if (ts[i] < lo || ts[i] > maxt + r)
            continue;
        int64_t s = align_down(ts[i], r);
        if (s > maxt || (*n && (*d)[*n - 1] == s))
            continue;
        if (*n == *cap) {
            size_t c = *cap ? *cap * 2 : 64;
            int64_t *p = realloc(*d, c * sizeof(*p));
            if (!p)
                return -ENOMEM;
            *d = p;
            *cap = c;
        }
        (*d)[(*n)++] = s;
    }
    return 0;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

int stele_tsdb_select_buckets(stele_tsdb *db, const char *tenant, const stele_matcher *matchers,
                              size_t nmatchers, size_t tier, int64_t mint, int64_t maxt,
                              stele_buckets_fn fn, void *ctx, char *err, size_t errcap)
{
    return stele_tsdb_select_buckets_fields(db, tenant, matchers, nmatchers, tier, STELE_BUCKET_ALL,
                                            mint, maxt, fn, ctx, err, errcap);
}

int stele_tsdb_select_buckets_fields(stele_tsdb *db, const char *tenant,
                                     const stele_matcher *matchers, size_t nmatchers, size_t tier,
                                     unsigned fields, int64_t mint, int64_t maxt,
                                     stele_buckets_fn fn, void *ctx, char *err, size_t errcap)
{
    char errbuf[256];
    uint64_t *ids = NULL;
    size_t nids = 0;
    tsdb_series **order = NULL;
    tsdb_head *active = NULL, *frozen = NULL;
    block_set *raw = NULL;
    tier_view *tv = NULL;
    block_cache *caches = NULL, *pcaches = NULL;
    bucket_buf acc = {0}, scratch = {0}, tmp = {0};
    sample_buf st = {0};
    int64_t *dirty = NULL;
    size_t ndirty = 0, dirty_cap = 0;
    raw_reader rd;
    bool reader = false;
    stele_label labels[STELE_MAX_LABELS];
    if (!err) {
        err = errbuf;
        errcap = sizeof(errbuf);
    }
    if (tier < 1 || tier > db->ntiers) {
        snprintf(err, errcap, "no tier %zu", tier);
        return -EINVAL;
    }
    const tier_conf *tc = &db->tier[tier - 1];
    int64_t r = tc->resolution, lo = align_down(mint, r);
    int rc = index_match(&db->ix, tenant, matchers, nmatchers, &ids, &nids, err, errcap);
    if (rc)
        return rc;
    rc = series_in_key_order(db, ids, nids, &order);
    if (rc)
        goto out;
    tsdb_view_acquire_all(db, &active, &frozen, &raw, &tv);
    block_set *tb = tv->blocks[tier - 1];
    /* Buckets where raw data may be partial are taken from the tier as they are. */
    int64_t complete_from = raw_complete_from(db, tv);
    int64_t fresh_lo = complete_from > lo ? complete_from : lo;
    caches = calloc(tb->n + 1, sizeof(*caches));
    pcaches = calloc(raw->n + 1, sizeof(*pcaches));
    if (!caches || !pcaches) {
        rc = -ENOMEM;
        goto out;
    }
    rc = raw_reader_init(&rd, active, frozen, raw);
    if (rc)
        goto out;
    reader = true;
    for (size_t i = 0; i < nids && rc == 0; i++) {
        uint64_t id = order[i]->id;
        acc.n = 0;
        for (size_t b = 0; b < tb->n && rc == 0; b++) {
            const tsdb_block *blk = tb->blocks[b];
            if (blk->maxt < lo || blk->mint > maxt)
                continue;
            const block_entry *e = block_find(blk, id);
            if (!e || e->maxt < lo || e->mint > maxt)
                continue;
            rc = bucket_buf_reserve(&tmp, e->npoints);
            if (rc == 0)
                rc = block_read_bucket_fields(blk, e, &caches[b], tmp.b, fields);
            if (rc) {
                snprintf(err, errcap, "%s: damaged tier data for a series (%s)", blk->path,
                         strerror(-rc));
                break;
            }
            size_t a = 0, z = e->npoints;
            while (a < z && tmp.b[a].start < lo)
                a++;
            while (z > a && tmp.b[z - 1].start > maxt)
                z--;
            rc = buckets_merge_newer(&acc, &scratch, tmp.b + a, z - a);
        }
        /* Buckets the tier blocks do not reflect yet: touched by the heads or by raw
         * blocks flushed after the last build. */
        ndirty = 0;
        for (int h = 0; h < 2 && rc == 0; h++) {
            tsdb_head *head = h ? active : frozen;
            if (!head)
                continue;
            int64_t *hts = NULL;
            double *hv = NULL;
            size_t hn = 0;
            rc = head_copy(head, id, fresh_lo, maxt + r - 1, false, &hts, &hv, &hn);
            if (rc == 0)
                rc = starts_add(&dirty, &ndirty, &dirty_cap, hts, hn, r, fresh_lo, maxt);
            free(hts);
            free(hv);
        }
        for (size_t b = 0; b < raw->n && rc == 0; b++) {
            const tsdb_block *blk = raw->blocks[b];
            if (blk->seq_hi <= tv->built_through || blk->maxt < lo || blk->mint > maxt + r - 1)
                continue;
            const block_entry *e = block_find(blk, id);
            if (!e || e->maxt < lo || e->mint > maxt + r - 1)
                continue;
            rc = sample_buf_reserve(&st, e->npoints);
            if (rc == 0)
                rc = block_read_series(blk, e, &pcaches[b], st.ts, st.v);
            if (rc == 0)
                rc = starts_add(&dirty, &ndirty, &dirty_cap, st.ts, e->npoints, r, fresh_lo, maxt);
        }
        if (rc)
            break;
        if (ndirty) {
            qsort(dirty, ndirty, sizeof(*dirty), cmp_i64);
            size_t k = 0;
            for (size_t j = 0; j < ndirty; j++)
                if (k == 0 || dirty[k - 1] != dirty[j])
                    dirty[k++] = dirty[j];
            ndirty = k;
            for (size_t j = 0; j < ndirty && rc == 0;) {
                size_t e = j + 1;
                while (e < ndirty && dirty[e] == dirty[e - 1] + r)
                    e++;
                rc = raw_reader_read(&rd, id, dirty[j], dirty[e - 1] + r - 1, err, errcap);
                if (rc == 0)
                    rc = bucket_buf_reserve(&tmp, rd.acc.n);
                if (rc == 0) {
                    tmp.n = stele_buckets_build(rd.acc.ts, rd.acc.v, rd.acc.n, r, tmp.b);
                    buckets_finish_sums(tmp.b, tmp.n);
                    rc = buckets_merge_newer(&acc, &scratch, tmp.b, tmp.n);
                }
                j = e;
            }
        }
        if (rc || acc.n == 0)
            continue;
        const char *t;
        size_t tl, nl;
        if (series_key_decode(order[i]->key, order[i]->key_len, &t, &tl, labels, &nl) != 0) {
            rc = -EBADMSG;
            break;
        }
        rc = fn(ctx, labels, nl, acc.b, acc.n);
    }
out:
    if (reader)
        raw_reader_free(&rd);
    for (size_t b = 0; caches && b < tv->blocks[tier - 1]->n; b++)
        block_cache_free(&caches[b]);
    for (size_t b = 0; pcaches && b < raw->n; b++)
        block_cache_free(&pcaches[b]);
    free(caches);
    free(pcaches);
    head_unref(active);
    head_unref(frozen);
    block_set_release(raw);
    tier_view_release(tv);
    free(acc.b);
    free(scratch.b);
    free(tmp.b);
    sample_buf_free(&st);
    free(dirty);
    free(order);
    free(ids);
    return rc;
}

int stele_tsdb_estimate_buckets(stele_tsdb *db, const char *tenant, const stele_matcher *matchers,
                                size_t nmatchers, size_t tier, int64_t mint, int64_t maxt,
                                uint64_t *series, uint64_t *samples, char *err, size_t errcap)
{
    uint64_t *ids = NULL;
    size_t nids = 0;
    *series = *samples = 0;
    if (tier < 1 || tier > db->ntiers) {
        snprintf(err, errcap, "no tier %zu", tier);
        return -EINVAL;
    }
    int64_t r = db->tier[tier - 1].resolution, lo = align_down(mint, r);
    int rc = index_match(&db->ix, tenant, matchers, nmatchers, &ids, &nids, err, errcap);
    if (rc)
        return rc;
    tier_view *tv = tier_view_acquire(db);
    block_set *tb = tv->blocks[tier - 1];
    *series = nids;
    for (size_t i = 0; i < nids; i++) {
        for (size_t b = 0; b < tb->n; b++) {
            const tsdb_block *blk = tb->blocks[b];
            if (blk->maxt < lo || blk->mint > maxt)
                continue;
            const block_entry *e = block_find(blk, ids[i]);
            if (!e || e->maxt < lo || e->mint > maxt)
                continue;
            /* Assume buckets spread evenly over the entry's span. */
            int64_t a = e->mint > lo ? e->mint : lo, z = e->maxt < maxt ? e->maxt : maxt;
            double span = (double)(e->maxt - e->mint) + 1;
            *samples += (uint64_t)((double)e->npoints * ((double)(z - a) + 1) / span) + 1;
        }
        /* Plus what the heads may add: at most one bucket per resolution step. */
    }
    tier_view_release(tv);
    free(ids);
    return 0;
}

/* ---- stats ------------------------------------------------------------------------ */

void tier_get_stats(stele_tsdb *db, stele_tsdb_stats *st)
{
    tier_view *tv = tier_view_acquire(db);
    block_set *raw = tsdb_blocks_acquire(db);
    uint64_t lag_points = 0;
    for (size_t i = 0; i < raw->n; i++)
        if (raw->blocks[i]->seq_hi > tv->built_through)
            lag_points += raw->blocks[i]->npoints;
    int64_t since = __atomic_load_n(&db->unbuilt_since_ns, __ATOMIC_RELAXED);
    int64_t lag_ns = lag_points && since ? tsdb_now(db) - since : 0;
    uint64_t max_id = index_max_id(&db->ix);
    uint8_t *seen = calloc(max_id / 8 + 1, 1);
    st->ntiers = db->ntiers;
    for (size_t t = 0; t < db->ntiers; t++) {
        block_set *s = tv->blocks[t];
        st->tiers[t].resolution_ns = db->tier[t].resolution;
        st->tiers[t].blocks = s->n;
        if (seen)
            memset(seen, 0, max_id / 8 + 1);
        for (size_t i = 0; i < s->n; i++) {
            st->tiers[t].bytes += s->blocks[i]->file_size;
            st->tiers[t].buckets += s->blocks[i]->npoints;
            for (uint64_t j = 0; seen && j < s->blocks[i]->nentries; j++) {
                uint64_t id = s->blocks[i]->entries[j].id;
                if (id <= max_id && !(seen[id / 8] & (1u << (id % 8)))) {
                    seen[id / 8] |= (uint8_t)(1u << (id % 8));
                    st->tiers[t].series++;
                }
            }
        }
        st->tiers[t].builds = __atomic_load_n(&db->tier[t].builds, __ATOMIC_RELAXED);
        st->tiers[t].retention_drops =
            __atomic_load_n(&db->tier[t].retention_drops, __ATOMIC_RELAXED);
        st->tiers[t].build_lag_points = lag_points;
        st->tiers[t].build_lag_ns = lag_ns;
    }
    free(seen);
    block_set_release(raw);
    tier_view_release(tv);
}
