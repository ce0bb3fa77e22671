/*
 * tsdb.c — the engine's write path, recovery, flush, compaction and retention.
 *
 * WRITE PATH. A request's points arrive as a stele_batch. Series are resolved in the
 * request's own thread (index lookups run in parallel), the sample part of the log
 * record is encoded there too, and only the definition part (series first seen in the
 * current segment) and the log append happen under append_mu. The request then waits
 * for the group-commit fsync covering its record, and applies its points to the head
 * in ticket order (the log's order), so that "the later write wins" means the same in
 * memory as on replay. Only then does it return success to be acknowledged.
 *
 * LOG RECORD (type TSDB_RECORD_WRITE = 1), one per request:
 *   varint ndefs, per def: varint series id, varint key length, key
 *   varint npoints, per point: varint series id, zigzag varint (ts − previous ts, the
 *     first against 0), 8-byte float64
 * Every segment defines each series it uses before its first use, so any suffix of
 * segments replays on its own: deleting segments after a flush never orphans an id.
 * A batch with an attachment (stele_batch_set_attachment) is written as type
 * TSDB_RECORD_WRITE_ATTACHED = 2: varint attachment length, the attachment, then the
 * payload of type 1 (npoints may be 0). One record holds both, so the state the
 * attachment stands for (anti-replay counters) is durable exactly when the points are.
 *
 * LOG HOOKS. An attachment is applied (options.log_apply) once its record is durable,
 * in ticket order inside the apply section, before applied_ticket passes it; on replay,
 * in log order. A flush waits for applied_ticket to cover the frozen head, so when it
 * calls options.log_checkpoint (after the blocks are published, before the segments are
 * deleted) every attachment of those segments was applied and is in the checkpoint;
 * attachments of later records may be too, which replaying them again must tolerate
 * (the hook's state must be idempotent under re-application).
 *
 * FLUSH swaps in a new head and a new log segment under append_mu; waits until every
 * write issued before the swap is applied; writes the frozen head as one block per time
 * partition it touches (durable before publication); publishes them; deletes the log
 * segments before the swap. A crash at any point leaves either the segments or the
 * blocks (or both: replay then re-adds the same points, which deduplicate).
 *
 * COMPACTION merges a run of consecutive (by sequence) same-level blocks of one
 * partition into one; the output's sequence range spans the inputs', so it takes their
 * place in "later write wins" order. Inputs are deleted after the output is durable;
 * leftovers of a crash in between are recognised by their nested sequence range.
 *
 * RETENTION drops whole blocks whose newest point is older than the retention.
 */
#include "stele/tsdb.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "common/bytes.h"
#include "common/clock.h"
#include "common/hashmap.h"
#include "stele/varint.h"
#include "tsdb/samples.h"
#include "tsdb/series_key.h"
#include "tsdb/tsdb_internal.h"

#define NS_PER_SEC INT64_C(1000000000)
#define NS_PER_DAY (86400 * NS_PER_SEC)
/* A head may grow to this multiple of head_max_points while its predecessor is still
 * being flushed; beyond it writes are refused with -EAGAIN (503), bounding memory. */
#define HEAD_OVERLOAD_FACTOR 2
/* The background thread wakes at least this often to check flush age and retention. */
#define BACKGROUND_TICK_NS (1 * NS_PER_SEC)
/* Consecutive background failures back off to at most this interval. */
#define BACKGROUND_MAX_BACKOFF_NS (60 * NS_PER_SEC)

void stele_tsdb_options_default(stele_tsdb_options *o)
{
    memset(o, 0, sizeof(*o));
    o->retention_ns = 30 * NS_PER_DAY;
    o->max_future_skew_ns = 10 * 60 * NS_PER_SEC;
    o->head_max_points = 4000000;
    o->flush_interval_ns = 10 * 60 * NS_PER_SEC;
    o->wal_segment_bytes = 128u << 20;
    o->partition_ns = NS_PER_DAY;
    o->compact_min_blocks = 4;
    o->background = true;
    o->ntiers = 2;
    o->tier_resolution_ns[0] = 60 * NS_PER_SEC;
    o->tier_retention_ns[0] = 365 * NS_PER_DAY;
    o->tier_resolution_ns[1] = 3600 * NS_PER_SEC;
    o->tier_retention_ns[1] = 3650 * NS_PER_DAY;
}

int64_t tsdb_now(stele_tsdb *db)
{
    return db->opts.now_ns ? db->opts.now_ns(db->opts.now_ctx) : clock_wall_ns();
}

static void tsdb_set_health(stele_tsdb *db, int rc)
{
    int expected = 0;
    if (__atomic_compare_exchange_n(&db->health, &expected, rc, false, __ATOMIC_ACQ_REL,
                                    __ATOMIC_ACQUIRE))
        fprintf(stderr, "stele: storage: writes stopped: %s; restart to recover from the log\n",
                strerror(-rc));
}

int stele_tsdb_health(stele_tsdb *db)
{
    return __atomic_load_n(&db->health, __ATOMIC_ACQUIRE);
}

/* ---- block sets and views ------------------------------------------------------- */

void block_set_release(block_set *s)
{
    if (!s || __atomic_sub_fetch(&s->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    for (size_t i = 0; i < s->n; i++)
        block_unref(s->blocks[i]);
    free(s->blocks);
    free(s);
}

static int block_seq_cmp(const void *a, const void *b)
{
    const tsdb_block *x = *(tsdb_block *const *)a, *y = *(tsdb_block *const *)b;
    return x->seq_hi < y->seq_hi ? -1 : x->seq_hi > y->seq_hi;
}

/* A new set: `base` minus `remove` plus `add` (each block referenced anew). */
block_set *block_set_derive(const block_set *base, tsdb_block **remove, size_t nremove,
                            tsdb_block **add, size_t nadd)
{
    block_set *s = calloc(1, sizeof(*s));
    size_t cap = (base ? base->n : 0) + nadd + 1;
    if (!s || !(s->blocks = calloc(cap, sizeof(*s->blocks)))) {
        free(s);
        return NULL;
    }
    s->refs = 1;
    for (size_t i = 0; base && i < base->n; i++) {
        bool removed = false;
        for (size_t j = 0; j < nremove && !removed; j++)
            removed = base->blocks[i] == remove[j];
        if (!removed) {
            block_ref(base->blocks[i]);
            s->blocks[s->n++] = base->blocks[i];
        }
    }
    for (size_t i = 0; i < nadd; i++) {
        block_ref(add[i]);
        s->blocks[s->n++] = add[i];
    }
    qsort(s->blocks, s->n, sizeof(*s->blocks), block_seq_cmp);
    return s;
}

block_set *tsdb_blocks_acquire(stele_tsdb *db)
{
    pthread_mutex_lock(&db->view_mu);
    block_set *s = db->blocks;
    __atomic_add_fetch(&s->refs, 1, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&db->view_mu);
    return s;
}

void tsdb_view_acquire(stele_tsdb *db, tsdb_head **active, tsdb_head **frozen, block_set **blocks)
{
    pthread_mutex_lock(&db->view_mu);
    *active = db->active;
    head_ref(*active);
    *frozen = db->frozen;
    if (*frozen)
        head_ref(*frozen);
    *blocks = db->blocks;
    __atomic_add_fetch(&db->blocks->refs, 1, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&db->view_mu);
}

void tsdb_view_acquire_all(stele_tsdb *db, tsdb_head **active, tsdb_head **frozen,
                           block_set **blocks, tier_view **tiers)
{
    pthread_mutex_lock(&db->view_mu);
    *active = db->active;
    head_ref(*active);
    *frozen = db->frozen;
    if (*frozen)
        head_ref(*frozen);
    *blocks = db->blocks;
    __atomic_add_fetch(&db->blocks->refs, 1, __ATOMIC_RELAXED);
    *tiers = db->tiers;
    __atomic_add_fetch(&db->tiers->refs, 1, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&db->view_mu);
}

/* Replaces the published block set (and optionally retires the frozen head). */
static void tsdb_publish(stele_tsdb *db, block_set *next, bool drop_frozen)
{
    /* The write path reads `frozen` under append_mu (to refuse writes while a full head
     * is still being flushed); readers under view_mu. Clearing it takes both, in the
     * documented order. */
    if (drop_frozen)
        pthread_mutex_lock(&db->append_mu);
    pthread_mutex_lock(&db->view_mu);
    block_set *old = db->blocks;
    db->blocks = next;
    tsdb_head *frozen = NULL;
    if (drop_frozen) {
        frozen = db->frozen;
        db->frozen = NULL;
    }
    pthread_mutex_unlock(&db->view_mu);
    if (drop_frozen)
        pthread_mutex_unlock(&db->append_mu);
    block_set_release(old);
    head_unref(frozen);
}

/* ---- batches ------------------------------------------------------------------ */

typedef struct {
    uint64_t hash;
    uint32_t off; /* in key_bytes; unused by_ref (the series holds the key) */
    uint32_t len;
    bool by_ref;         /* added by handle: series is set from the start */
    tsdb_series *series; /* else resolved by the write */
} batch_key;

typedef struct {
    uint32_t key;
    int64_t ts;
    double value;
} batch_point;

struct stele_batch {
    uint8_t *key_bytes;
    size_t key_bytes_len, key_bytes_cap;
    batch_key *keys;
    uint32_t nkeys, keys_cap;
    hashmap key_map; /* key bytes → key index + 1 (as a pointer-sized integer) */
    /* Keys added by handle, deduplicated by series: open addressing on the series id
     * (key index + 1; 0 empty), at most half full. Cleared only when used. */
    uint32_t *ref_slots;
    uint32_t ref_cap, nrefs;
    batch_point *points;
    size_t npoints, points_cap;
    uint32_t last_key; /* index + 1 of the previous point's key, 0 if none */
    int64_t min_ts, max_ts;
    uint8_t *samples;
    size_t samples_len, samples_cap;
    /* defs[0..defs_front): varint attachment length + attachment (type 2 records), so
     * the two-part log append puts the attachment in front of the definitions. */
    uint8_t *defs;
    size_t defs_len, defs_cap, defs_front;
    uint8_t *attachment; /* owned copy, or NULL */
    size_t attachment_len, attachment_cap;
    bool attached;
    uint8_t key_tmp[STELE_MAX_SERIES_KEY];
};

/* A key's bytes: in the batch, or in the series of a handle. */
static const uint8_t *batch_key_bytes(const stele_batch *b, const batch_key *k)
{
    return k->by_ref ? k->series->key : b->key_bytes + k->off;
}

int stele_batch_create(stele_batch **out)
{
    stele_batch *b = calloc(1, sizeof(*b));
    if (!b)
        return -ENOMEM;
    hashmap_init(&b->key_map);
    stele_batch_reset(b);
    *out = b;
    return 0;
}

void stele_batch_destroy(stele_batch *b)
{
    if (!b)
        return;
    free(b->key_bytes);
    free(b->keys);
    hashmap_free(&b->key_map);
    free(b->ref_slots);
    free(b->points);
    free(b->samples);
    free(b->defs);
    free(b->attachment);
    free(b);
}

void stele_batch_reset(stele_batch *b)
{
    b->key_bytes_len = 0;
    b->nkeys = 0;
    /* Clearing touches the whole table: skip it when the last batch used none (a batch
     * of handles only leaves the key map empty). */
    if (b->key_map.count)
        hashmap_clear(&b->key_map);
    if (b->nrefs) {
        memset(b->ref_slots, 0, b->ref_cap * sizeof(*b->ref_slots));
        b->nrefs = 0;
    }
    b->npoints = 0;
    b->last_key = 0;
    b->min_ts = INT64_MAX;
    b->max_ts = INT64_MIN;
    b->attached = false;
    b->attachment_len = 0;
}

size_t stele_batch_points(const stele_batch *b)
{
    return b->npoints;
}

static int grow(void **p, size_t *cap, size_t need, size_t elem);

int stele_batch_set_attachment(stele_batch *b, const void *data, size_t len)
{
    if (len > STELE_BATCH_MAX_ATTACHMENT)
        return -EMSGSIZE;
    if (grow((void **)&b->attachment, &b->attachment_cap, len + 1, 1))
        return -ENOMEM;
    if (len)
        memcpy(b->attachment, data, len);
    b->attachment_len = len;
    b->attached = true;
    return 0;
}

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    size_t n = *cap ? *cap : 64;
    while (n < need)
        n *= 2;
    void *q = realloc(*p, n * elem);
    if (!q)
        return -ENOMEM;
    *p = q;
    *cap = n;
    return 0;
}

int stele_batch_add(stele_batch *b, const char *tenant, const stele_label *labels, size_t nlabels,
                    int64_t ts, double value)
{
    int len =
        series_key_encode(tenant, strlen(tenant), labels, nlabels, b->key_tmp, sizeof(b->key_tmp));
    if (len < 0)
        return -EINVAL;
    uint32_t key;
    const batch_key *last = b->last_key ? &b->keys[b->last_key - 1] : NULL;
    if (last && last->len == (uint32_t)len &&
        memcmp(batch_key_bytes(b, last), b->key_tmp, (size_t)len) == 0) {
        key = b->last_key - 1;
    } else {
        uint64_t h = hashmap_hash(b->key_tmp, (size_t)len);
        /* Keys are looked up by offset into key_bytes, which may move on growth; the
         * map therefore stores indexes and compares through the key array. */
        uintptr_t found = (uintptr_t)hashmap_get(&b->key_map, h, b->key_tmp, (size_t)len);
        if (found) {
            key = (uint32_t)(found - 1);
        } else {
            size_t kcap = b->keys_cap;
            if (grow((void **)&b->keys, &kcap, b->nkeys + 1, sizeof(*b->keys)))
                return -ENOMEM;
            b->keys_cap = (uint32_t)kcap;
            size_t old_cap = b->key_bytes_cap;
            uint8_t *old = b->key_bytes;
            if (grow((void **)&b->key_bytes, &b->key_bytes_cap, b->key_bytes_len + (size_t)len, 1))
                return -ENOMEM;
            if (b->key_bytes != old && old_cap) {
                /* Rebuild the map: its keys pointed into the old buffer. */
                hashmap_clear(&b->key_map);
                for (uint32_t i = 0; i < b->nkeys; i++)
                    if (!b->keys[i].by_ref &&
                        hashmap_put(&b->key_map, b->keys[i].hash, b->key_bytes + b->keys[i].off,
                                    b->keys[i].len, (void *)(uintptr_t)(i + 1)))
                        return -ENOMEM;
            }
            key = b->nkeys++;
            batch_key *k = &b->keys[key];
            k->hash = h;
            k->off = (uint32_t)b->key_bytes_len;
            k->len = (uint32_t)len;
            k->by_ref = false;
            k->series = NULL;
            memcpy(b->key_bytes + k->off, b->key_tmp, (size_t)len);
            b->key_bytes_len += (size_t)len;
            if (hashmap_put(&b->key_map, h, b->key_bytes + k->off, (size_t)len,
                            (void *)(uintptr_t)(key + 1)))
                return -ENOMEM;
        }
    }
    if (grow((void **)&b->points, &b->points_cap, b->npoints + 1, sizeof(*b->points)))
        return -ENOMEM;
    b->points[b->npoints++] = (batch_point){.key = key, .ts = ts, .value = value};
    b->last_key = key + 1;
    if (ts < b->min_ts)
        b->min_ts = ts;
    if (ts > b->max_ts)
        b->max_ts = ts;
    return 0;
}

/* The slot of series id in a ref table of cap slots (a power of two). */
static uint32_t ref_slot_of(uint64_t id, uint32_t cap)
{
    /* Fibonacci hashing: ids are dense small integers, the top bits of the product
     * spread them over the table. */
    return (uint32_t)((id * UINT64_C(0x9E3779B97F4A7C15)) >> 32) & (cap - 1);
}

/* Doubles the ref table and re-places every key added by handle. */
static int batch_grow_refs(stele_batch *b)
{
    uint32_t cap = b->ref_cap ? 2 * b->ref_cap : 256;
    uint32_t *slots = calloc(cap, sizeof(*slots));
    if (!slots)
        return -ENOMEM;
    for (uint32_t i = 0; i < b->nkeys; i++) {
        if (!b->keys[i].by_ref)
            continue;
        uint32_t at = ref_slot_of(b->keys[i].series->id, cap);
        while (slots[at])
            at = (at + 1) & (cap - 1);
        slots[at] = i + 1;
    }
    free(b->ref_slots);
    b->ref_slots = slots;
    b->ref_cap = cap;
    return 0;
}

int stele_tsdb_series_ref(stele_tsdb *db, const char *tenant, const stele_label *labels,
                          size_t nlabels, const stele_series_ref **ref)
{
    /* Label sets of sealed frames are short; the heap serves the rare long one. */
    uint8_t small[1024];
    uint8_t *key = small, *big = NULL;
    size_t tenant_len = strlen(tenant);
    int len = series_key_encode(tenant, tenant_len, labels, nlabels, small, sizeof(small));
    if (len == -ENOSPC) {
        if (!(big = malloc(STELE_MAX_SERIES_KEY)))
            return -ENOMEM;
        key = big;
        len = series_key_encode(tenant, tenant_len, labels, nlabels, big, STELE_MAX_SERIES_KEY);
    }
    int rc = -EINVAL;
    if (len >= 0) {
        tsdb_series *s = index_lookup(&db->ix, key, (size_t)len, hashmap_hash(key, (size_t)len));
        *ref = (const stele_series_ref *)s; /* borrowed: lives as long as the index */
        rc = s != NULL;
    }
    free(big);
    return rc;
}

int stele_batch_add_ref(stele_batch *b, const stele_series_ref *ref, int64_t ts, double value)
{
    tsdb_series *s = (tsdb_series *)ref;
    uint32_t key;
    if (b->last_key && b->keys[b->last_key - 1].series == s) {
        key = b->last_key - 1;
    } else {
        if (2 * (b->nrefs + 1) > b->ref_cap && batch_grow_refs(b))
            return -ENOMEM;
        uint32_t at = ref_slot_of(s->id, b->ref_cap);
        while (b->ref_slots[at] && b->keys[b->ref_slots[at] - 1].series != s)
            at = (at + 1) & (b->ref_cap - 1);
        if (b->ref_slots[at]) {
            key = b->ref_slots[at] - 1;
        } else {
            size_t kcap = b->keys_cap;
            if (grow((void **)&b->keys, &kcap, b->nkeys + 1, sizeof(*b->keys)))
                return -ENOMEM;
            b->keys_cap = (uint32_t)kcap;
            key = b->nkeys++;
            b->keys[key] = (batch_key){
                .hash = s->hash, .off = 0, .len = s->key_len, .by_ref = true, .series = s};
            b->ref_slots[at] = key + 1;
            b->nrefs++;
        }
    }
    if (grow((void **)&b->points, &b->points_cap, b->npoints + 1, sizeof(*b->points)))
        return -ENOMEM;
    b->points[b->npoints++] = (batch_point){.key = key, .ts = ts, .value = value};
    b->last_key = key + 1;
    if (ts < b->min_ts)
        b->min_ts = ts;
    if (ts > b->max_ts)
        b->max_ts = ts;
    return 0;
}

/* Encodes the sample part of the log record (outside any lock). */
static int batch_encode_samples(stele_batch *b)
{
    size_t need = STELE_VARINT_MAX + b->npoints * (2 * STELE_VARINT_MAX + 8);
    if (grow((void **)&b->samples, &b->samples_cap, need, 1))
        return -ENOMEM;
    uint8_t *p = b->samples;
    p += stele_varint_put(p, b->npoints);
    int64_t prev = 0;
    for (size_t i = 0; i < b->npoints; i++) {
        const batch_point *pt = &b->points[i];
        p += stele_varint_put(p, b->keys[pt->key].series->id);
        p += stele_varint_put(p, stele_zigzag_encode((int64_t)((uint64_t)pt->ts - (uint64_t)prev)));
        put_f64(p, pt->value);
        p += 8;
        prev = pt->ts;
    }
    b->samples_len = (size_t)(p - b->samples);
    return 0;
}

/* Encodes the attachment prefix of a type 2 record into defs[0..defs_front) (outside any
 * lock; the definitions go after it under append_mu). */
static int batch_encode_attachment(stele_batch *b)
{
    b->defs_front = 0;
    if (!b->attached)
        return 0;
    if (grow((void **)&b->defs, &b->defs_cap, STELE_VARINT_MAX + b->attachment_len, 1))
        return -ENOMEM;
    size_t n = stele_varint_put(b->defs, b->attachment_len);
    memcpy(b->defs + n, b->attachment, b->attachment_len);
    b->defs_front = n + b->attachment_len;
    return 0;
}

/* Encodes definitions of the series this segment has not defined yet (append_mu), after
 * the attachment prefix. */
static int batch_encode_defs(stele_batch *b, uint64_t segment)
{
    size_t need = b->defs_front + STELE_VARINT_MAX;
    for (uint32_t i = 0; i < b->nkeys; i++)
        if (b->keys[i].series->wal_def_segment != segment)
            need += 2 * STELE_VARINT_MAX + b->keys[i].len;
    if (grow((void **)&b->defs, &b->defs_cap, need, 1))
        return -ENOMEM;
    uint8_t *base = b->defs + b->defs_front;
    uint8_t *p = base + STELE_VARINT_MAX;
    uint64_t ndefs = 0;
    for (uint32_t i = 0; i < b->nkeys; i++) {
        tsdb_series *s = b->keys[i].series;
        if (s->wal_def_segment == segment)
            continue;
        p += stele_varint_put(p, s->id);
        p += stele_varint_put(p, s->key_len);
        memcpy(p, s->key, s->key_len);
        p += s->key_len;
        ndefs++;
    }
    /* Put the count right before the definitions. */
    uint8_t count[STELE_VARINT_MAX];
    size_t cl = stele_varint_put(count, ndefs);
    uint8_t *start = base + STELE_VARINT_MAX - cl;
    memcpy(start, count, cl);
    memmove(base, start, (size_t)(p - start));
    b->defs_len = b->defs_front + (size_t)(p - start);
    return 0;
}

static void batch_mark_defined(stele_batch *b, uint64_t segment)
{
    for (uint32_t i = 0; i < b->nkeys; i++)
        b->keys[i].series->wal_def_segment = segment;
}

/* ---- write ------------------------------------------------------------------- */

void stele_tsdb_time_bounds(stele_tsdb *db, int64_t *min_ts, int64_t *max_ts)
{
    int64_t now = tsdb_now(db);
    *min_ts = tier_accept_min(db, now);
    *max_ts = now + db->opts.max_future_skew_ns;
}

static void background_kick(stele_tsdb *db)
{
    pthread_mutex_lock(&db->bg_mu);
    db->bg_kick = true;
    pthread_cond_signal(&db->bg_cond);
    pthread_mutex_unlock(&db->bg_mu);
}

uint64_t stele_tsdb_tenant_series(stele_tsdb *db, const char *tenant)
{
    return index_tenant_series(&db->ix, tenant, strlen(tenant));
}

/* Checks the series quota of each tenant in the batch before creating any series. */
static int batch_check_series_quota(stele_tsdb *db, stele_batch *b, uint64_t limit)
{
    /* Fast path: even if every key of the batch were new, its tenant stays within the
     * limit (batches from the HTTP API hold one tenant: check the first key's). */
    if (b->nkeys) {
        const uint8_t *key = batch_key_bytes(b, &b->keys[0]);
        bool one_tenant = true;
        for (uint32_t i = 1; i < b->nkeys && one_tenant; i++) {
            const uint8_t *k = batch_key_bytes(b, &b->keys[i]);
            one_tenant = k[0] == key[0] && !memcmp(k + 1, key + 1, key[0]);
        }
        if (one_tenant &&
            index_tenant_series(&db->ix, (const char *)key + 1, key[0]) + b->nkeys <= limit)
            return 0;
    }
    /* New series per tenant; batches from the HTTP API hold one tenant, so a tiny
     * linear table is enough. */
    struct {
        const uint8_t *tenant;
        uint8_t len;
        uint64_t fresh;
    } seen[8];
    size_t nseen = 0;
    for (uint32_t i = 0; i < b->nkeys; i++) {
        batch_key *k = &b->keys[i];
        /* A handle is of an existing series; so may a key be (then it is no new one). */
        if (k->by_ref || index_lookup(&db->ix, b->key_bytes + k->off, k->len, k->hash))
            continue;
        const uint8_t *key = b->key_bytes + k->off;
        size_t j = 0;
        for (; j < nseen; j++)
            if (seen[j].len == key[0] && !memcmp(seen[j].tenant, key + 1, key[0]))
                break;
        if (j == nseen) {
            if (nseen == sizeof(seen) / sizeof(seen[0]))
                return -EDQUOT; /* more tenants in one batch than the API ever sends */
            seen[nseen].tenant = key + 1;
            seen[nseen].len = key[0];
            seen[nseen].fresh = 0;
            nseen++;
        }
        seen[j].fresh++;
    }
    for (size_t j = 0; j < nseen; j++)
        if (index_tenant_series(&db->ix, (const char *)seen[j].tenant, seen[j].len) +
                seen[j].fresh >
            limit)
            return -EDQUOT;
    return 0;
}

int stele_tsdb_write(stele_tsdb *db, stele_batch *b)
{
    return stele_tsdb_write_quota(db, b, 0);
}

int stele_tsdb_write_quota(stele_tsdb *db, stele_batch *b, uint64_t max_tenant_series)
{
    int rc = stele_tsdb_health(db);
    if (rc)
        return rc;
    if (b->npoints == 0 && !b->attached)
        return 0;
    int64_t min_ts, max_ts;
    stele_tsdb_time_bounds(db, &min_ts, &max_ts);
    if (b->npoints && (b->min_ts < min_ts || b->max_ts > max_ts))
        return -ERANGE;
    if (max_tenant_series && (rc = batch_check_series_quota(db, b, max_tenant_series)) != 0)
        return rc;
    for (uint32_t i = 0; i < b->nkeys; i++) {
        batch_key *k = &b->keys[i];
        if (k->by_ref)
            continue; /* resolved when the handle was */
        rc = index_get_or_create(&db->ix, b->key_bytes + k->off, k->len, k->hash, &k->series);
        if (rc)
            return rc;
    }
    rc = batch_encode_samples(b);
    if (rc == 0)
        rc = batch_encode_attachment(b);
    if (rc)
        return rc;

    uint64_t lsn = 0, ticket;
    bool kick = false;
    tsdb_head *head;
    pthread_mutex_lock(&db->append_mu);
    uint64_t limit = db->opts.head_max_points;
    if (db->active_points + b->npoints > limit * HEAD_OVERLOAD_FACTOR ||
        (db->frozen && db->active_points + b->npoints > limit)) {
        pthread_mutex_unlock(&db->append_mu);
        __atomic_add_fetch(&db->rejected_overload, 1, __ATOMIC_RELAXED);
        background_kick(db);
        return -EAGAIN;
    }
    uint64_t segment = stele_wal_segment(db->wal);
    rc = batch_encode_defs(b, segment);
    if (rc == 0)
        rc = stele_wal_append(db->wal, b->attached ? TSDB_RECORD_WRITE_ATTACHED : TSDB_RECORD_WRITE,
                              b->defs, b->defs_len, b->samples, b->samples_len, &lsn);
    if (rc) {
        pthread_mutex_unlock(&db->append_mu);
        if (rc != -ENOMEM && rc != -EMSGSIZE)
            tsdb_set_health(db, rc);
        return rc;
    }
    batch_mark_defined(b, segment);
    ticket = ++db->next_ticket;
    db->active_points += b->npoints;
    head = db->active;
    head_ref(head);
    head->last_ticket = ticket;
    kick = db->active_points >= limit ||
           stele_wal_segment_bytes(db->wal) >= db->opts.wal_segment_bytes;
    pthread_mutex_unlock(&db->append_mu);

    rc = stele_wal_wait(db->wal, lsn);

    /* Apply in log order, so the later write wins in memory as it does on replay. */
    pthread_mutex_lock(&db->apply_mu);
    while (db->applied_ticket != ticket - 1)
        pthread_cond_wait(&db->apply_cond, &db->apply_mu);
    pthread_mutex_unlock(&db->apply_mu);
    if (rc == 0 && b->attached) {
        __atomic_store_n(&db->saw_attachment, true, __ATOMIC_RELAXED);
        if (db->opts.log_apply)
            rc = db->opts.log_apply(db->opts.log_hooks_ctx, b->attachment, b->attachment_len);
    }
    if (rc == 0) {
        pthread_rwlock_wrlock(&head->lock);
        for (size_t i = 0; i < b->npoints && rc == 0; i++) {
            const batch_point *pt = &b->points[i];
            rc = head_append(head, b->keys[pt->key].series->id, pt->ts, pt->value);
        }
        pthread_rwlock_unlock(&head->lock);
    }
    pthread_mutex_lock(&db->apply_mu);
    db->applied_ticket = ticket;
    pthread_cond_broadcast(&db->apply_cond);
    pthread_mutex_unlock(&db->apply_mu);
    head_unref(head);

    if (rc) {
        /* Durable but not visible (out of memory), or not durable: either way this
         * process can no longer vouch for its state. Restart recovers from the log. */
        tsdb_set_health(db, rc);
        return rc;
    }
    __atomic_add_fetch(&db->points_written, b->npoints, __ATOMIC_RELAXED);
    if (kick)
        background_kick(db);
    return 0;
}

/* ---- recovery ------------------------------------------------------------------ */

int tsdb_record_split(uint32_t type, const uint8_t *payload, size_t len, tsdb_record *out)
{
    const uint8_t *p = payload, *end = payload + len;
    uint64_t alen = 0;
    memset(out, 0, sizeof(*out));
    if (type != TSDB_RECORD_WRITE && type != TSDB_RECORD_WRITE_ATTACHED)
        return -EBADMSG;
    if (type == TSDB_RECORD_WRITE_ATTACHED) {
        if (stele_varint_get(&p, end, &alen) || alen > (uint64_t)(end - p))
            return -EBADMSG;
        out->attached = true;
        out->attachment = p;
        out->attachment_len = (size_t)alen;
        p += alen;
    }
    out->body = p;
    out->body_len = (size_t)(end - p);
    return 0;
}

static int replay_record(void *ctx, uint64_t segment, uint32_t type, const uint8_t *payload,
                         size_t len)
{
    stele_tsdb *db = ctx;
    tsdb_record r;
    uint64_t ndefs, npoints, id, klen, zz;
    (void)segment;
    if (tsdb_record_split(type, payload, len, &r))
        return -EBADMSG;
    const uint8_t *p = r.body, *end = r.body + r.body_len;
    if (stele_varint_get(&p, end, &ndefs))
        return -EBADMSG;
    for (uint64_t i = 0; i < ndefs; i++) {
        if (stele_varint_get(&p, end, &id) || stele_varint_get(&p, end, &klen) ||
            klen > (uint64_t)(end - p))
            return -EBADMSG;
        int rc = index_register(&db->ix, id, p, klen);
        if (rc)
            return rc == -EINVAL ? -EBADMSG : rc;
        p += klen;
    }
    if (stele_varint_get(&p, end, &npoints) || npoints > len)
        return -EBADMSG;
    uint64_t kept = 0;
    int64_t ts = 0;
    for (uint64_t i = 0; i < npoints; i++) {
        if (stele_varint_get(&p, end, &id) || stele_varint_get(&p, end, &zz) || end - p < 8)
            return -EBADMSG;
        ts = (int64_t)((uint64_t)ts + (uint64_t)stele_zigzag_decode(zz));
        double v = get_f64(p);
        p += 8;
        if (!index_get(&db->ix, id))
            return -EBADMSG; /* a point of a series no segment or block defines */
        /* Below the expiry a point was flushed (its block since dropped by retention:
         * a log segment whose removal did not become durable came back) or never
         * acknowledged; replaying it would resurrect an old value into expired data. */
        if (ts < db->replay_min_ts)
            continue;
        int rc = head_append(db->active, id, ts, v);
        if (rc)
            return rc;
        kept++;
    }
    if (p != end)
        return -EBADMSG;
    db->active_points += kept;
    /* Applied even when every point was below the expiry: the attachment's state (a
     * frame's counter) outlives its points. */
    if (r.attached)
        db->saw_attachment = true;
    if (r.attached && db->opts.log_apply)
        return db->opts.log_apply(db->opts.log_hooks_ctx, r.attachment, r.attachment_len);
    return 0;
}

typedef struct {
    stele_tsdb *db;
    char **names;
    size_t n, cap;
    int rc;
} dir_names;

static int collect_name(void *ctx, const char *name)
{
    dir_names *d = ctx;
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 32;
        char **names = realloc(d->names, cap * sizeof(*names));
        if (!names) {
            d->rc = -ENOMEM;
            return 1;
        }
        d->names = names;
        d->cap = cap;
    }
    d->names[d->n] = strdup(name);
    if (!d->names[d->n]) {
        d->rc = -ENOMEM;
        return 1;
    }
    d->n++;
    return 0;
}

static void dir_names_free(dir_names *d)
{
    for (size_t i = 0; i < d->n; i++)
        free(d->names[i]);
    free(d->names);
}

static int register_block_key(void *ctx, uint64_t id, const uint8_t *key, size_t len)
{
    return index_register(ctx, id, key, len);
}

int tsdb_load_block_dir(stele_tsdb *db, const char *dir, int64_t resolution,
                        stele_tsdb_recovery *rec, block_set **out, char *err, size_t errcap)
{
    dir_names d = {.db = db};
    tsdb_block **blocks = NULL;
    size_t nblocks = 0;
    char path[TSDB_PATH_MAX + 128];
    int rc = stele_io_list(db->opts.io, dir, collect_name, &d);
    if (rc == 0)
        rc = d.rc;
    if (rc) {
        snprintf(err, errcap, "%s: cannot list: %s", dir, strerror(-rc));
        goto out;
    }
    blocks = calloc(d.n + 1, sizeof(*blocks));
    if (!blocks) {
        rc = -ENOMEM;
        goto out;
    }
    bool removed_any = false;
    for (size_t i = 0; i < d.n; i++) {
        uint64_t lo, hi;
        snprintf(path, sizeof(path), "%s/%s", dir, d.names[i]);
        size_t nl = strlen(d.names[i]);
        if (nl > 4 && strcmp(d.names[i] + nl - 4, ".tmp") == 0) {
            /* An unfinished block: never published, its data is still in the log or
             * in its compaction inputs. */
            rc = stele_io_unlink(db->opts.io, path);
            if (rc)
                goto out;
            removed_any = true;
            continue;
        }
        if (block_parse_name(d.names[i], &lo, &hi) != 0)
            continue; /* not ours; left alone */
        /* Keys are registered after leftovers are known; open without them first. */
        rc = block_open(db->opts.io, path, true, NULL, NULL, &blocks[nblocks], err, errcap);
        if (rc)
            goto out;
        if (blocks[nblocks]->seq_lo != lo || blocks[nblocks]->seq_hi != hi) {
            snprintf(err, errcap, "%s: sequence range in header does not match file name", path);
            nblocks++;
            rc = -EBADMSG;
            goto out;
        }
        if (blocks[nblocks]->resolution != resolution) {
            snprintf(err, errcap, "%s: block of the wrong resolution for its directory", path);
            nblocks++;
            rc = -EBADMSG;
            goto out;
        }
        nblocks++;
    }
    /* A block whose sequence range nests inside another's of the same partition was an
     * input of a compaction whose output is durable. */
    bool *leftover = calloc(nblocks + 1, sizeof(*leftover));
    if (!leftover) {
        rc = -ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < nblocks; i++) {
        for (size_t j = 0; j < nblocks && !leftover[i]; j++) {
            if (i == j || blocks[i]->partition != blocks[j]->partition)
                continue;
            const tsdb_block *a = blocks[i], *b = blocks[j];
            leftover[i] = b->seq_lo <= a->seq_lo && a->seq_hi <= b->seq_hi &&
                          (b->seq_lo != a->seq_lo || b->seq_hi != a->seq_hi);
        }
    }
    size_t kept = 0;
    for (size_t i = 0; i < nblocks; i++) {
        if (leftover[i]) {
            blocks[i]->retired = true; /* the file goes with the last reference */
            block_unref(blocks[i]);
            rec->removed_leftover_blocks++;
            removed_any = true;
        } else {
            blocks[kept++] = blocks[i];
        }
    }
    free(leftover);
    nblocks = kept;
    if (removed_any) {
        rc = stele_io_fsync_dir(db->opts.io, dir);
        if (rc)
            goto out;
    }
    for (size_t i = 0; i < nblocks; i++) {
        tsdb_block *reopened = NULL;
        snprintf(path, sizeof(path), "%s", blocks[i]->path);
        rc = block_open(db->opts.io, path, false, register_block_key, &db->ix, &reopened, err,
                        errcap);
        if (rc)
            goto out;
        block_unref(blocks[i]);
        blocks[i] = reopened;
        if (blocks[i]->seq_hi >= db->next_seq)
            db->next_seq = blocks[i]->seq_hi + 1;
        if (resolution == 0) {
            rec->points += blocks[i]->npoints;
            rec->blocks++;
        }
    }
    block_set *set = block_set_derive(NULL, NULL, 0, blocks, nblocks);
    if (!set) {
        rc = -ENOMEM;
        goto out;
    }
    *out = set;
out:
    for (size_t i = 0; i < nblocks; i++)
        block_unref(blocks[i]);
    free(blocks);
    dir_names_free(&d);
    return rc;
}

static void *background_main(void *arg);
static void *tier_builder_main(void *arg);

int stele_tsdb_open(const stele_tsdb_options *o, stele_tsdb **out, stele_tsdb_recovery *rec_out,
                    char *err, size_t errcap)
{
    char errbuf[512];
    stele_tsdb_recovery rec = {0};
    int64_t t0 = clock_mono_ns();
    if (!err) {
        err = errbuf;
        errcap = sizeof(errbuf);
    }
    err[0] = '\0';
    if (!o->dir || !o->io || o->head_max_points == 0 || o->partition_ns <= 0 ||
        o->retention_ns <= 0 || strlen(o->dir) > TSDB_PATH_MAX - 64 ||
        o->ntiers >= STELE_MAX_TIERS) {
        snprintf(err, errcap, "invalid storage options");
        return -EINVAL;
    }
    for (size_t t = 0; t < o->ntiers; t++) {
        int64_t r = o->tier_resolution_ns[t], prev = t ? o->tier_resolution_ns[t - 1] : 0;
        int64_t keep = t ? o->tier_retention_ns[t - 1] : o->retention_ns;
        if (r <= 0 || r % NS_PER_SEC || (prev && r % prev) ||
            (o->partition_ns % r && r % o->partition_ns) || o->tier_retention_ns[t] < keep) {
            snprintf(err, errcap,
                     "invalid tiers: resolutions must be whole seconds, each a multiple of the "
                     "previous, dividing the partition (1d) or a multiple of it; retentions must "
                     "not shrink");
            return -EINVAL;
        }
    }
    stele_tsdb *db = calloc(1, sizeof(*db));
    if (!db)
        return -ENOMEM;
    int rc = index_init(&db->ix);
    if (rc) {
        free(db);
        return rc;
    }
    db->opts = *o;
    snprintf(db->dir, sizeof(db->dir), "%s", o->dir);
    db->opts.dir = db->dir;
    snprintf(db->wal_dir, sizeof(db->wal_dir), "%s/wal", o->dir);
    snprintf(db->blocks_dir, sizeof(db->blocks_dir), "%s/blocks", o->dir);
    if (db->opts.compact_min_blocks < 2)
        db->opts.compact_min_blocks = 2;
    pthread_mutex_init(&db->append_mu, NULL);
    pthread_mutex_init(&db->view_mu, NULL);
    pthread_mutex_init(&db->apply_mu, NULL);
    pthread_cond_init(&db->apply_cond, NULL);
    pthread_mutex_init(&db->maint_mu, NULL);
    pthread_mutex_init(&db->tier_mu, NULL);
    pthread_cond_init(&db->tier_cond, NULL);
    pthread_mutex_init(&db->bg_mu, NULL);
    pthread_cond_init(&db->bg_cond, NULL);
    db->next_seq = 1;
    db->ntiers = o->ntiers;
    for (size_t t = 0; t < o->ntiers; t++) {
        db->tier[t].resolution = o->tier_resolution_ns[t];
        db->tier[t].retention = o->tier_retention_ns[t];
    }
    db->active = head_create();
    if (!db->active) {
        rc = -ENOMEM;
        goto fail;
    }
    rc = stele_io_mkdir_durable(o->io, o->dir);
    if (rc == 0)
        rc = stele_io_mkdir_durable(o->io, db->blocks_dir);
    if (rc == 0)
        rc = stele_io_mkdir_durable(o->io, db->wal_dir);
    if (rc) {
        snprintf(err, errcap, "%s: cannot create data directory: %s", o->dir, strerror(-rc));
        goto fail;
    }
    rc = tsdb_load_block_dir(db, db->blocks_dir, 0, &rec, &db->blocks, err, errcap);
    if (rc)
        goto fail;
    rc = tier_store_open(db, &rec, err, errcap);
    if (rc)
        goto fail;
    db->replay_min_ts = tier_replay_min_ts(db);
    stele_wal_options wo = {.io = o->io, .dir = db->wal_dir, .buffered = o->ack_buffered};
    stele_wal_replay_stats ws;
    rc = stele_wal_open(&wo, replay_record, db, &ws, &db->wal, err, errcap);
    if (rc)
        goto fail;
    index_sort_postings(&db->ix);
    rec.wal_records = ws.records_replayed;
    rec.wal_bytes = ws.bytes_replayed;
    rec.wal_torn_bytes = ws.torn_bytes_discarded;
    rec.points += db->active->points;
    rec.duration_ns = clock_mono_ns() - t0;
    if (o->background) {
        if (pthread_create(&db->bg_thread, NULL, background_main, db) != 0) {
            rc = -EAGAIN;
            snprintf(err, errcap, "cannot start the background thread");
            goto fail;
        }
        db->bg_started = true;
        if (db->ntiers) {
            if (pthread_create(&db->tier_thread, NULL, tier_builder_main, db) != 0) {
                rc = -EAGAIN;
                snprintf(err, errcap, "cannot start the tier builder thread");
                goto fail;
            }
            db->tier_started = true;
        }
    }
    if (rec_out)
        *rec_out = rec;
    *out = db;
    return 0;
fail:
    stele_tsdb_close(db);
    return rc;
}

void stele_tsdb_close(stele_tsdb *db)
{
    if (!db)
        return;
    if (db->tier_started) {
        pthread_mutex_lock(&db->tier_mu);
        db->tier_stop = true;
        pthread_cond_signal(&db->tier_cond);
        pthread_mutex_unlock(&db->tier_mu);
        pthread_join(db->tier_thread, NULL);
    }
    if (db->bg_started) {
        pthread_mutex_lock(&db->bg_mu);
        db->bg_stop = true;
        pthread_cond_signal(&db->bg_cond);
        pthread_mutex_unlock(&db->bg_mu);
        pthread_join(db->bg_thread, NULL);
    }
    stele_wal_close(db->wal);
    head_unref(db->active);
    head_unref(db->frozen);
    block_set_release(db->blocks);
    tier_view_release(db->tiers);
    index_free(&db->ix);
    pthread_mutex_destroy(&db->append_mu);
    pthread_mutex_destroy(&db->view_mu);
    pthread_mutex_destroy(&db->apply_mu);
    pthread_cond_destroy(&db->apply_cond);
    pthread_mutex_destroy(&db->maint_mu);
    pthread_mutex_destroy(&db->tier_mu);
    pthread_cond_destroy(&db->tier_cond);
    pthread_mutex_destroy(&db->bg_mu);
    pthread_cond_destroy(&db->bg_cond);
    free(db);
}

/* ---- flush --------------------------------------------------------------------- */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int series_key_cmp(const void *a, const void *b)
{
    const tsdb_series *x = *(tsdb_series *const *)a, *y = *(tsdb_series *const *)b;
    size_t n = x->key_len < y->key_len ? x->key_len : y->key_len;
    int c = memcmp(x->key, y->key, n);
    return c ? c : (x->key_len < y->key_len ? -1 : x->key_len > y->key_len);
}

/* The series of ids sorted by key: blocks store similar series (same tenant and metric,
 * hence similar values) next to each other, which zstd compresses markedly better than
 * creation order. *out malloc'd. */
int series_in_key_order(stele_tsdb *db, const uint64_t *ids, size_t n, tsdb_series ***out)
{
    tsdb_series **order = malloc((n + 1) * sizeof(*order));
    if (!order)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        order[i] = index_get(&db->ix, ids[i]);
        if (!order[i]) {
            free(order);
            return -EBADMSG;
        }
    }
    qsort(order, n, sizeof(*order), series_key_cmp);
    *out = order;
    return 0;
}

static int64_t partition_of(const stele_tsdb *db, int64_t ts)
{
    int64_t p = db->opts.partition_ns;
    int64_t q = ts / p;
    if (ts % p < 0)
        q--;
    return q * p;
}

typedef struct {
    int64_t partition;
    block_writer *writer;
    uint64_t seq;
} partition_writer;

/* Writes the frozen head as blocks, one per partition; *out and *nout receive the opened blocks. */
static int flush_write_blocks(stele_tsdb *db, tsdb_head *h, tsdb_block ***out, size_t *nout)
{
    partition_writer *pw = NULL;
    size_t npw = 0, pw_cap = 0;
    tsdb_block **blocks = NULL;
    size_t nblocks = 0;
    tsdb_series **order = NULL;
    char name[64], path[TSDB_PATH_MAX + 64], err[512];
    int rc = series_in_key_order(db, h->ids, h->nids, &order);
    if (rc)
        return rc;
    for (uint64_t i = 0; i < h->nids && rc == 0; i++) {
        head_series *s;
        tsdb_series *series = order[i];
        rc = head_series_prepare(h, series->id, &s);
        if (rc || !s || s->n == 0)
            continue;
        /* Split the run at partition boundaries. */
        for (uint32_t start = 0; start < s->n && rc == 0;) {
            int64_t part = partition_of(db, s->ts[start]);
            uint32_t end = start + 1;
            while (end < s->n && s->ts[end] < part + db->opts.partition_ns)
                end++;
            partition_writer *w = NULL;
            for (size_t k = 0; k < npw; k++)
                if (pw[k].partition == part)
                    w = &pw[k];
            if (!w) {
                if (grow((void **)&pw, &pw_cap, npw + 1, sizeof(*pw))) {
                    rc = -ENOMEM;
                    break;
                }
                w = &pw[npw];
                memset(w, 0, sizeof(*w));
                w->partition = part;
                w->seq = __atomic_fetch_add(&db->next_seq, 1, __ATOMIC_RELAXED);
                block_write_params bp = {.io = db->opts.io,
                                         .dir = db->blocks_dir,
                                         .seq_lo = w->seq,
                                         .seq_hi = w->seq,
                                         .level = 0,
                                         .partition = part};
                rc = block_writer_begin(&bp, &w->writer);
                if (rc)
                    break;
                npw++;
            }
            rc = block_writer_add(w->writer, series->id, series->key, series->key_len,
                                  s->ts + start, s->v + start, end - start);
            start = end;
        }
    }
    blocks = calloc(npw + 1, sizeof(*blocks));
    if (!blocks && rc == 0)
        rc = -ENOMEM;
    for (size_t k = 0; k < npw; k++) {
        if (rc) {
            block_writer_abort(pw[k].writer);
            continue;
        }
        rc = block_writer_finish(pw[k].writer, name, sizeof(name));
        if (rc == 0) {
            snprintf(path, sizeof(path), "%s/%s", db->blocks_dir, name);
            rc = block_open(db->opts.io, path, false, NULL, NULL, &blocks[nblocks], err,
                            sizeof(err));
            if (rc == 0)
                nblocks++;
        }
    }
    if (rc) {
        /* Nothing published: the data is still in the log. Remove what was written. */
        for (size_t k = 0; k < nblocks; k++) {
            blocks[k]->retired = true;
            block_unref(blocks[k]);
        }
        free(blocks);
        blocks = NULL;
        nblocks = 0;
    }
    free(pw);
    free(order);
    *out = blocks;
    *nout = nblocks;
    return rc;
}

static int tsdb_flush_locked(stele_tsdb *db)
{
    int rc = 0;
    pthread_mutex_lock(&db->append_mu);
    if (!db->frozen) {
        if (db->active_points == 0) {
            pthread_mutex_unlock(&db->append_mu);
            return 0;
        }
        tsdb_head *fresh = head_create();
        if (!fresh) {
            pthread_mutex_unlock(&db->append_mu);
            return -ENOMEM;
        }
        uint64_t segment;
        rc = stele_wal_rotate(db->wal, &segment);
        if (rc) {
            pthread_mutex_unlock(&db->append_mu);
            head_unref(fresh);
            tsdb_set_health(db, rc);
            return rc;
        }
        pthread_mutex_lock(&db->view_mu);
        db->frozen = db->active;
        db->active = fresh;
        pthread_mutex_unlock(&db->view_mu);
        db->frozen_segment = segment;
        db->active_points = 0;
    }
    tsdb_head *frozen = db->frozen;
    head_ref(frozen);
    uint64_t last_ticket = frozen->last_ticket;
    uint64_t segment = db->frozen_segment;
    pthread_mutex_unlock(&db->append_mu);

    pthread_mutex_lock(&db->apply_mu);
    while (db->applied_ticket < last_ticket)
        pthread_cond_wait(&db->apply_cond, &db->apply_mu);
    pthread_mutex_unlock(&db->apply_mu);

    tsdb_block **blocks = NULL;
    size_t nblocks = 0;
    rc = flush_write_blocks(db, frozen, &blocks, &nblocks);
    if (rc == 0) {
        block_set *cur = tsdb_blocks_acquire(db);
        block_set *next = block_set_derive(cur, NULL, 0, blocks, nblocks);
        block_set_release(cur);
        if (!next) {
            rc = -ENOMEM;
            for (size_t k = 0; k < nblocks; k++)
                blocks[k]->retired = true;
        } else {
            tsdb_publish(db, next, true);
            int64_t zero = 0, now = tsdb_now(db);
            if (db->ntiers && nblocks) {
                __atomic_compare_exchange_n(&db->unbuilt_since_ns, &zero, now, false,
                                            __ATOMIC_RELAXED, __ATOMIC_RELAXED);
                pthread_mutex_lock(&db->tier_mu);
                db->tier_kick = true;
                pthread_cond_signal(&db->tier_cond);
                pthread_mutex_unlock(&db->tier_mu);
            }
        }
        for (size_t k = 0; k < nblocks; k++)
            block_unref(blocks[k]);
        free(blocks);
    }
    head_unref(frozen);
    if (rc == 0)
        __atomic_add_fetch(&db->flushes, 1, __ATOMIC_RELAXED);
    if (rc == 0 && db->opts.log_checkpoint) {
        /* A write whose attachment could not be applied failed the engine: a checkpoint
         * now would miss it while the segments holding it go. Keep them for recovery. */
        rc = stele_tsdb_health(db);
        if (rc == 0)
            rc = db->opts.log_checkpoint(db->opts.log_hooks_ctx);
    }
    if (rc == 0 && !db->opts.log_checkpoint &&
        __atomic_load_n(&db->saw_attachment, __ATOMIC_RELAXED))
        return 0; /* no hook saves the attachments' state: the log keeps it */
    if (rc == 0)
        rc = stele_wal_remove_before(db->wal, segment);
    return rc;
}

int stele_tsdb_flush(stele_tsdb *db)
{
    pthread_mutex_lock(&db->maint_mu);
    int rc = tsdb_flush_locked(db);
    pthread_mutex_unlock(&db->maint_mu);
    return rc;
}

/* ---- compaction and retention ---------------------------------------------------- */

/* Sorted, distinct ids of all series in the blocks. *ids malloc'd. */
static int block_union_ids(tsdb_block **in, size_t nin, uint64_t **ids, size_t *nids)
{
    size_t total = 0;
    for (size_t i = 0; i < nin; i++)
        total += in[i]->nentries;
    uint64_t *all = malloc((total + 1) * sizeof(*all));
    if (!all)
        return -ENOMEM;
    size_t n = 0;
    for (size_t i = 0; i < nin; i++)
        for (uint64_t j = 0; j < in[i]->nentries; j++)
            all[n++] = in[i]->entries[j].id;
    qsort(all, n, sizeof(*all), cmp_u64);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (k == 0 || all[k - 1] != all[i])
            all[k++] = all[i];
    *ids = all;
    *nids = k;
    return 0;
}

/* Merges `in` (same partition, consecutive by sequence, ascending) into one block. */
static int compact_blocks(stele_tsdb *db, tsdb_block **in, size_t nin)
{
    block_writer *w = NULL;
    block_cache *caches = calloc(nin, sizeof(*caches)); /* one per input */
    sample_buf acc = {0}, tmp = {0}, out = {0};
    tsdb_block *merged = NULL;
    char name[64], path[TSDB_PATH_MAX + 64], err[512];
    int rc = 0;
    uint32_t level = 0;
    for (size_t i = 0; i < nin; i++)
        if (in[i]->level + 1 > level)
            level = in[i]->level + 1;
    block_write_params bp = {.io = db->opts.io,
                             .dir = db->blocks_dir,
                             .seq_lo = in[0]->seq_lo,
                             .seq_hi = in[nin - 1]->seq_hi,
                             .level = level,
                             .partition = in[0]->partition,
                             .zstd_level = 5};
    rc = caches ? block_writer_begin(&bp, &w) : -ENOMEM;
    /* The union of the inputs' series, in key order (see series_in_key_order). */
    uint64_t *ids = NULL;
    size_t nids = 0;
    tsdb_series **order = NULL;
    if (rc == 0)
        rc = block_union_ids(in, nin, &ids, &nids);
    if (rc == 0)
        rc = series_in_key_order(db, ids, nids, &order);
    for (size_t k = 0; rc == 0 && k < nids; k++) {
        uint64_t id = order[k]->id;
        acc.n = 0;
        /* Older inputs first: each merge lets the newer run win. */
        for (size_t i = 0; i < nin && rc == 0; i++) {
            const block_entry *e = block_find(in[i], id);
            if (!e)
                continue;
            rc = sample_buf_reserve(&tmp, e->npoints);
            if (rc == 0)
                rc = block_read_series(in[i], e, &caches[i], tmp.ts, tmp.v);
            if (rc == 0)
                rc = sample_buf_reserve(&out, acc.n + e->npoints);
            if (rc)
                break;
            out.n = samples_merge(acc.ts, acc.v, acc.n, tmp.ts, tmp.v, e->npoints, out.ts, out.v);
            sample_buf t = acc;
            acc = out;
            out = t;
        }
        if (rc == 0)
            rc = block_writer_add(w, id, order[k]->key, order[k]->key_len, acc.ts, acc.v, acc.n);
    }
    free(ids);
    free(order);
    if (rc == 0) {
        rc = block_writer_finish(w, name, sizeof(name));
        w = NULL;
        if (rc == 0) {
            snprintf(path, sizeof(path), "%s/%s", db->blocks_dir, name);
            rc = block_open(db->opts.io, path, false, NULL, NULL, &merged, err, sizeof(err));
        }
    }
    if (rc == 0) {
        block_set *cur = tsdb_blocks_acquire(db);
        block_set *next = block_set_derive(cur, in, nin, &merged, 1);
        block_set_release(cur);
        if (!next) {
            rc = -ENOMEM;
            merged->retired = true;
        } else {
            for (size_t i = 0; i < nin; i++)
                in[i]->retired = true; /* files go when the last reader lets go */
            tsdb_publish(db, next, false);
            __atomic_add_fetch(&db->compactions, 1, __ATOMIC_RELAXED);
        }
    }
    block_unref(merged);
    block_writer_abort(w);
    for (size_t i = 0; caches && i < nin; i++)
        block_cache_free(&caches[i]);
    free(caches);
    sample_buf_free(&acc);
    sample_buf_free(&tmp);
    sample_buf_free(&out);
    return rc;
}

int tsdb_compaction_pick(stele_tsdb *db, const block_set *s, int64_t partition_ns, uint64_t max_seq,
                         tsdb_block **run, size_t *nrun)
{
    int64_t now = tsdb_now(db);
    for (size_t i = 0; i < s->n; i++) {
        int64_t part = s->blocks[i]->partition;
        if (s->blocks[i]->seq_hi > max_seq)
            continue;
        /* Blocks of this partition, in sequence order (up to max_seq: a block not yet
         * reflected in the tiers is kept apart so a build step knows what it covers). */
        size_t n = 0;
        for (size_t j = 0; j < s->n; j++)
            if (s->blocks[j]->partition == part && s->blocks[j]->seq_hi <= max_seq)
                run[n++] = s->blocks[j];
        if (run[0] != s->blocks[i])
            continue; /* each partition once */
        bool cold = part + 2 * partition_ns < now;
        if (cold && n >= 2) {
            *nrun = n; /* a partition no longer written regularly: merge it whole */
            return 1;
        }
        /* A run of consecutive same-level blocks long enough to merge. */
        size_t start = 0;
        for (size_t j = 1; j <= n; j++) {
            if (j < n && run[j]->level == run[start]->level)
                continue;
            if (j - start >= db->opts.compact_min_blocks) {
                memmove(run, run + start, (j - start) * sizeof(*run));
                *nrun = j - start;
                return 1;
            }
            start = j;
        }
    }
    return 0;
}

static int retention_apply(stele_tsdb *db)
{
    int64_t cutoff = tier_raw_drop_cutoff(db, tsdb_now(db));
    uint64_t built = tier_built_through(db);
    block_set *cur = tsdb_blocks_acquire(db);
    tsdb_block **expired = calloc(cur->n + 1, sizeof(*expired));
    size_t nexp = 0;
    int64_t expired_before = INT64_MIN;
    int rc = 0;
    if (!expired) {
        block_set_release(cur);
        return -ENOMEM;
    }
    /* Raw data goes only once the tiers reflect every flushed block (SPEC §5). */
    bool all_built = true;
    for (size_t i = 0; i < cur->n; i++)
        all_built = all_built && cur->blocks[i]->seq_hi <= built;
    for (size_t i = 0; all_built && i < cur->n; i++) {
        if (cur->blocks[i]->maxt < cutoff) {
            expired[nexp++] = cur->blocks[i];
            if (cur->blocks[i]->maxt + 1 > expired_before)
                expired_before = cur->blocks[i]->maxt + 1;
        }
    }
    if (nexp)
        rc = tier_record_raw_expiry(db, expired_before);
    if (nexp && rc == 0) {
        block_set *next = block_set_derive(cur, expired, nexp, NULL, 0);
        if (!next) {
            rc = -ENOMEM;
        } else {
            for (size_t i = 0; i < nexp; i++)
                expired[i]->retired = true;
            tsdb_publish(db, next, false);
            __atomic_add_fetch(&db->retention_drops, nexp, __ATOMIC_RELAXED);
        }
    }
    block_set_release(cur);
    free(expired);
    if (rc == 0 && nexp)
        rc = stele_io_fsync_dir(db->opts.io, db->blocks_dir);
    return rc;
}

static int tsdb_maintain_locked(stele_tsdb *db)
{
    /* Tiers first: raw blocks are compacted and dropped only once reflected in them. */
    int rc = tier_build(db, true, NULL);
    if (rc == 0)
        rc = retention_apply(db);
    for (int rounds = 0; rc == 0 && rounds < 64; rounds++) {
        block_set *cur = tsdb_blocks_acquire(db);
        tsdb_block **run = calloc(cur->n + 1, sizeof(*run));
        size_t nrun = 0;
        int found = run ? tsdb_compaction_pick(db, cur, db->opts.partition_ns,
                                               tier_built_through(db), run, &nrun)
                        : 0;
        if (!run)
            rc = -ENOMEM;
        for (size_t i = 0; found && i < nrun; i++)
            block_ref(run[i]);
        block_set_release(cur);
        if (found) {
            rc = compact_blocks(db, run, nrun);
            for (size_t i = 0; i < nrun; i++)
                block_unref(run[i]);
        }
        free(run);
        if (!found)
            break;
    }
    if (rc == 0)
        rc = stele_io_fsync_dir(db->opts.io, db->blocks_dir);
    if (rc == 0)
        rc = tier_maintain(db);
    return rc;
}

int stele_tsdb_maintain(stele_tsdb *db)
{
    pthread_mutex_lock(&db->maint_mu);
    int rc = tsdb_maintain_locked(db);
    pthread_mutex_unlock(&db->maint_mu);
    return rc;
}

/* Waits on cond (mu held) for at most ns. */
static void cond_wait_ns(pthread_cond_t *cond, pthread_mutex_t *mu, int64_t ns)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += ns / NS_PER_SEC;
    until.tv_nsec += ns % NS_PER_SEC;
    if (until.tv_nsec >= NS_PER_SEC) {
        until.tv_sec++;
        until.tv_nsec -= NS_PER_SEC;
    }
    pthread_cond_timedwait(cond, mu, &until);
}

/* The delay before retrying background work: doubling after each failure, capped; none
 * after a success. */
static int64_t next_backoff(int64_t backoff, int rc)
{
    if (rc == 0)
        return 0;
    backoff = backoff ? backoff * 2 : NS_PER_SEC;
    return backoff > BACKGROUND_MAX_BACKOFF_NS ? BACKGROUND_MAX_BACKOFF_NS : backoff;
}

static void *background_main(void *arg)
{
    stele_tsdb *db = arg;
    pthread_setname_np(pthread_self(), "stele-storage");
    int64_t backoff = 0, next_maintain = 0;
    pthread_mutex_lock(&db->bg_mu);
    while (!db->bg_stop) {
        if (!db->bg_kick) {
            cond_wait_ns(&db->bg_cond, &db->bg_mu, BACKGROUND_TICK_NS + backoff);
        }
        if (db->bg_stop)
            break;
        db->bg_kick = false;
        pthread_mutex_unlock(&db->bg_mu);

        pthread_mutex_lock(&db->append_mu);
        bool due = db->frozen != NULL || db->active_points >= db->opts.head_max_points ||
                   stele_wal_segment_bytes(db->wal) >= db->opts.wal_segment_bytes ||
                   (db->active_points > 0 &&
                    clock_mono_ns() - db->active->created_mono_ns >= db->opts.flush_interval_ns);
        pthread_mutex_unlock(&db->append_mu);
        int rc = 0;
        if (due && stele_tsdb_health(db) == 0) {
            rc = stele_tsdb_flush(db);
            if (rc)
                fprintf(stderr, "stele: storage: flush failed: %s (will retry)\n", strerror(-rc));
        }
        if (rc == 0 && clock_mono_ns() >= next_maintain) {
            rc = stele_tsdb_maintain(db);
            if (rc)
                fprintf(stderr, "stele: storage: compaction failed: %s (will retry)\n",
                        strerror(-rc));
            next_maintain = clock_mono_ns() + 10 * NS_PER_SEC;
        }
        backoff = next_backoff(backoff, rc);
        pthread_mutex_lock(&db->bg_mu);
    }
    pthread_mutex_unlock(&db->bg_mu);
    return NULL;
}

/* The tier builder: builds the tiers after each flush, in bounded steps, on a thread of
 * its own at a lower priority (nice 5), so neither flushes nor ingestion wait for it. */
static void *tier_builder_main(void *arg)
{
    stele_tsdb *db = arg;
    setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 19);
    pthread_setname_np(pthread_self(), "stele-tiers");
    int64_t backoff = 0;
    pthread_mutex_lock(&db->tier_mu);
    while (!db->tier_stop) {
        if (!db->tier_kick) {
            cond_wait_ns(&db->tier_cond, &db->tier_mu, BACKGROUND_TICK_NS + backoff);
        }
        if (db->tier_stop)
            break;
        db->tier_kick = false;
        pthread_mutex_unlock(&db->tier_mu);
        int rc = 0;
        for (bool done = false;
             rc == 0 && !done && !__atomic_load_n(&db->tier_stop, __ATOMIC_RELAXED);)
            rc = tier_build(db, false, &done);
        if (rc)
            fprintf(stderr, "stele: storage: tier build failed: %s (will retry)\n", strerror(-rc));
        backoff = next_backoff(backoff, rc);
        pthread_mutex_lock(&db->tier_mu);
    }
    pthread_mutex_unlock(&db->tier_mu);
    return NULL;
}

/* ---- stats ------------------------------------------------------------------- */

void stele_tsdb_get_stats(stele_tsdb *db, stele_tsdb_stats *st)
{
    memset(st, 0, sizeof(*st));
    tsdb_head *active, *frozen;
    block_set *blocks;
    tsdb_view_acquire(db, &active, &frozen, &blocks);
    pthread_rwlock_rdlock(&active->lock);
    st->head_points = active->points;
    st->head_series = active->nids;
    pthread_rwlock_unlock(&active->lock);
    if (frozen) {
        pthread_rwlock_rdlock(&frozen->lock);
        st->head_points += frozen->points;
        pthread_rwlock_unlock(&frozen->lock);
    }
    st->blocks = blocks->n;
    for (size_t i = 0; i < blocks->n; i++) {
        st->block_bytes += blocks->blocks[i]->file_size;
        st->block_points += blocks->blocks[i]->npoints;
    }
    head_unref(active);
    head_unref(frozen);
    block_set_release(blocks);
    stele_wal_stats ws;
    stele_wal_get_stats(db->wal, &ws);
    st->wal_segments = ws.segments;
    st->wal_fsyncs = ws.fsyncs;
    st->wal_bytes = ws.appended_bytes;
    st->series = index_count(&db->ix);
    st->points_written = __atomic_load_n(&db->points_written, __ATOMIC_RELAXED);
    st->flushes = __atomic_load_n(&db->flushes, __ATOMIC_RELAXED);
    st->compactions = __atomic_load_n(&db->compactions, __ATOMIC_RELAXED);
    st->retention_drops = __atomic_load_n(&db->retention_drops, __ATOMIC_RELAXED);
    st->rejected_overload = __atomic_load_n(&db->rejected_overload, __ATOMIC_RELAXED);
    st->health = stele_tsdb_health(db);
    tier_get_stats(db, st);
}
