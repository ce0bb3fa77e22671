/*
 * sealed.c — one `POST /api/v1/frames` request (see stele/sealed.h): split the body into
 * frames, judge each, and store the new ones' points in one atomic log record.
 *
 * Per frame, cheapest first, so a flood of junk costs no cryptography: parse (bounded,
 * sizes first) → registry entry (unknown or pending: unknown_device; revoked) → pinned
 * algorithm → key id (the current key, or the next one during a rotation; an older one
 * is revoked, a higher unknown one bad_signature) → per-device token bucket (quota) →
 * timestamps (clock_skew) → Ed25519 signature (bad_signature).
 *
 * Then, for the frames left: their devices are locked in one global order (creation
 * number), so requests sharing devices cannot deadlock, and held until the store has
 * applied the write. Each (device, key) window is copied, and the frames are judged in
 * body order against the copy, each new counter accepted into it — so a second copy in
 * one body is a duplicate and one pushed below the window by a later counter of the same
 * body is stale, exactly as if they had arrived one by one. The points of the new frames
 * (labels: the payload's plus `device` and `tenant` from the registry) go into one batch
 * whose attachment lists their (device, key, counter); the store applies that to the
 * real windows only once the record is durable (sealed_windows.c). A rotation is
 * completed by the first frame accepted under the new key: from then on, the old key is
 * refused (checked under the device lock, so no old-key frame admitted later slips in).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "ingest/sealed_internal.h"
#include "stele/frame.h"

/* Request contexts kept for reuse: one per concurrently served request avoids the
 * allocation of a batch and a 64 KiB verify buffer each time. Beyond this many idle ones
 * they are freed (a burst leaves no lasting memory). */
#define SEALED_POOL_MAX 16
/* Token bucket: burst of this many seconds of the rate (SPEC §3: per-source rate limits
 * before any crypto). */
#define SEALED_BURST_SECONDS 2
#define SEALED_DEFAULT_RATE 100

/* Per frame of a request. */
enum {
    FRAME_NEXT_KEY = 1 << 0,    /* signed with the rotation's new key */
    FRAME_OLD_KEY = 1 << 1,     /* signed with the current key while a rotation runs */
    FRAME_QUARANTINED = 1 << 2, /* stored in STELE_QUARANTINE_TENANT */
    FRAME_CANDIDATE = 1 << 3,   /* passed every check but the window */
    FRAME_NEW = 1 << 4,         /* new in its window: written */
};

typedef struct {
    const uint8_t *bytes;
    size_t len;
    stele_frame f;
    sealed_device *dev;
    uint32_t key_id;
    uint32_t next_key_id; /* for FRAME_OLD_KEY: the key whose first frame kills this one */
    uint32_t group;       /* index of its (device, key) window copy */
    uint32_t devslot;     /* index in the request's device list */
    unsigned flags;
    char tenant[65]; /* the device's, from the registry */
} sealed_frame;

typedef struct {
    sealed_device *dev;
    uint32_t promote_key; /* a frame under this next key was admitted (0: none) */
    bool accepted;
} sealed_reqdev;

/* A candidate's place in the (device order, key, position) sort. */
typedef struct {
    uint64_t dev_order;
    uint32_t key_id;
    uint32_t frame;
} sealed_sortkey;

struct sealed_request {
    sealed_request *next_free;
    stele_batch *batch;
    uint8_t *scratch; /* STELE_FRAME_SCRATCH_BYTES: signature verification */
    size_t cap;       /* frames the arrays below hold */
    sealed_frame *frames;
    sealed_sortkey *order;
    stele_replay_window *groups;
    sealed_device **group_dev;
    uint32_t *group_key;
    sealed_reqdev *devs;
    uint8_t *attach;
};

static const char *const status_names[STELE_FRAME_STATUSES] = {
    "accepted", "duplicate",  "unknown_device", "revoked", "bad_signature",
    "stale",    "clock_skew", "malformed",      "quota",
};

const char *stele_frame_status_name(stele_frame_status s)
{
    return (unsigned)s < STELE_FRAME_STATUSES ? status_names[s] : "unknown";
}

int64_t sealed_now(stele_sealed *s)
{
    return s->opts.now_ns ? s->opts.now_ns(s->opts.now_ctx) : clock_wall_ns();
}

/* ---- request contexts -------------------------------------------------------------- */

static void request_free(sealed_request *r)
{
    if (!r)
        return;
    stele_batch_destroy(r->batch);
    free(r->scratch);
    free(r->frames);
    free(r->order);
    free(r->groups);
    free(r->group_dev);
    free(r->group_key);
    free(r->devs);
    free(r->attach);
    free(r);
}

/* Makes room for n frames. */
static int request_reserve(sealed_request *r, size_t n)
{
    if (n <= r->cap)
        return 0;
    size_t cap = r->cap ? r->cap : 16;
    while (cap < n)
        cap *= 2;
    void *p;
#define REGROW(field, size)                                                                        \
    do {                                                                                           \
        if (!(p = realloc(r->field, (size))))                                                      \
            return -ENOMEM;                                                                        \
        r->field = p;                                                                              \
    } while (0)
    REGROW(frames, cap * sizeof(*r->frames));
    REGROW(order, cap * sizeof(*r->order));
    REGROW(groups, cap * sizeof(*r->groups));
    REGROW(group_dev, cap * sizeof(*r->group_dev));
    REGROW(group_key, cap * sizeof(*r->group_key));
    REGROW(devs, cap * sizeof(*r->devs));
    REGROW(attach, sealed_attachment_bound(cap));
#undef REGROW
    r->cap = cap;
    return 0;
}

static int request_get(stele_sealed *s, sealed_request **out)
{
    pthread_mutex_lock(&s->pool_mu);
    sealed_request *r = s->pool;
    if (r) {
        s->pool = r->next_free;
        s->pooled--;
    }
    pthread_mutex_unlock(&s->pool_mu);
    if (!r) {
        r = calloc(1, sizeof(*r));
        if (!r || stele_batch_create(&r->batch) ||
            !(r->scratch = malloc(STELE_FRAME_SCRATCH_BYTES))) {
            request_free(r);
            return -ENOMEM;
        }
    }
    *out = r;
    return 0;
}

static void request_put(stele_sealed *s, sealed_request *r)
{
    pthread_mutex_lock(&s->pool_mu);
    if (s->pooled < SEALED_POOL_MAX) {
        r->next_free = s->pool;
        s->pool = r;
        s->pooled++;
        r = NULL;
    }
    pthread_mutex_unlock(&s->pool_mu);
    request_free(r);
}

/* ---- in-flight requests (barrier) ------------------------------------------------------ */

static uint64_t flight_enter(stele_sealed *s)
{
    pthread_mutex_lock(&s->flight_mu);
    uint64_t e = s->epoch;
    s->inflight[e & 1]++;
    pthread_mutex_unlock(&s->flight_mu);
    return e;
}

static void flight_leave(stele_sealed *s, uint64_t e)
{
    pthread_mutex_lock(&s->flight_mu);
    if (--s->inflight[e & 1] == 0)
        pthread_cond_broadcast(&s->flight_cond);
    pthread_mutex_unlock(&s->flight_mu);
}

/* Every request that started before the call has finished when it returns: requests
 * count in under the epoch's parity; the barrier moves the epoch on and waits for the old
 * parity to drain. Barriers run one at a time, so the other parity holds only requests
 * that started after the previous barrier moved the epoch. */
void stele_sealed_barrier(stele_sealed *s, const char *device_id)
{
    (void)device_id;
    pthread_mutex_lock(&s->barrier_mu);
    pthread_mutex_lock(&s->flight_mu);
    uint64_t old = s->epoch++;
    while (s->inflight[old & 1])
        pthread_cond_wait(&s->flight_cond, &s->flight_mu);
    pthread_mutex_unlock(&s->flight_mu);
    pthread_mutex_unlock(&s->barrier_mu);
}

/* ---- creation ------------------------------------------------------------------------ */

int stele_sealed_create(const stele_sealed_options *o, stele_sealed **out, char *err, size_t errcap)
{
    char errbuf[512];
    if (!err) {
        err = errbuf;
        errcap = sizeof(errbuf);
    }
    err[0] = '\0';
    *out = NULL;
    if (!o->io || !o->data_dir || !o->registry || strlen(o->data_dir) >= 4096 ||
        o->window > STELE_REPLAY_MAX_WINDOW) {
        snprintf(err, errcap, "invalid sealed-frame options");
        return -EINVAL;
    }
    stele_sealed *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->opts = *o;
    snprintf(s->data_dir, sizeof(s->data_dir), "%s", o->data_dir);
    s->opts.data_dir = s->data_dir;
    if (!s->opts.window)
        s->opts.window = STELE_REPLAY_DEFAULT_WINDOW;
    if (!s->opts.device_frames_per_second)
        s->opts.device_frames_per_second = SEALED_DEFAULT_RATE;
    pthread_mutex_init(&s->flight_mu, NULL);
    pthread_cond_init(&s->flight_cond, NULL);
    pthread_mutex_init(&s->barrier_mu, NULL);
    pthread_mutex_init(&s->pool_mu, NULL);
    sealed_rejects_init(&s->rejects);
    int rc = sealed_table_init(&s->table);
    if (rc == 0)
        rc = sealed_checkpoint_load(s, err, errcap);
    if (rc) {
        stele_sealed_destroy(s);
        return rc;
    }
    *out = s;
    return 0;
}

void stele_sealed_destroy(stele_sealed *s)
{
    if (!s)
        return;
    while (s->pool) {
        sealed_request *r = s->pool;
        s->pool = r->next_free;
        request_free(r);
    }
    sealed_table_free(&s->table);
    sealed_rejects_free(&s->rejects);
    pthread_mutex_destroy(&s->flight_mu);
    pthread_cond_destroy(&s->flight_cond);
    pthread_mutex_destroy(&s->barrier_mu);
    pthread_mutex_destroy(&s->pool_mu);
    free(s);
}

void stele_sealed_tsdb_hooks(stele_sealed *s, stele_tsdb_options *o)
{
    o->log_apply = sealed_log_apply;
    o->log_checkpoint = sealed_log_checkpoint;
    o->log_hooks_ctx = s;
}

int stele_sealed_attach(stele_sealed *s, stele_tsdb *db)
{
    /* No request runs yet: the table is stable and no device lock is needed. */
    for (size_t i = 0; i < s->table.n; i++) {
        sealed_device *d = s->table.all[i];
        stele_device_info info;
        if (d->last_seen_ns)
            stele_registry_touch(s->opts.registry, d->id, d->id_len, d->last_seen_ns);
        if (stele_registry_get(s->opts.registry, d->id, d->id_len, &info) != 0 ||
            (info.state != STELE_DEVICE_ACTIVE && info.state != STELE_DEVICE_QUARANTINED))
            continue;
        stele_replay_window *w = info.next.key_id ? sealed_window_find(d, info.next.key_id) : NULL;
        if (!w || !w->any)
            continue;
        /* A frame under the new key was accepted before the restart. Ingestion refuses
         * the old key from the windows alone, so a failure here costs no safety: it is
         * reported, and the next frame under the new key promotes again. */
        int rc = stele_registry_promote_key(s->opts.registry, d->id, info.next.key_id);
        if (rc)
            fprintf(stderr, "stele: sealed frames: cannot complete the key rotation of %s: %s\n",
                    d->id, strerror(-rc));
    }
    s->db = db;
    return 0;
}

/* ---- points ------------------------------------------------------------------------- */

/* ---- per-frame checks ---------------------------------------------------------------- */

/* Token bucket of the device: true if a frame may pass now. */
static bool rate_admit(stele_sealed *s, sealed_device *d, int64_t now)
{
    double rate = s->opts.device_frames_per_second;
    double burst = rate * SEALED_BURST_SECONDS;
    bool ok;
    pthread_mutex_lock(&d->rate_mu);
    if (d->tokens < 0) {
        d->tokens = burst;
        d->tokens_at = now;
    } else if (now > d->tokens_at) {
        d->tokens += (double)(now - d->tokens_at) * rate / 1e9;
        if (d->tokens > burst)
            d->tokens = burst;
        d->tokens_at = now;
    } else if (now < d->tokens_at) {
        d->tokens_at = now; /* the clock went back: no refill until it passes again */
    }
    ok = d->tokens >= 1;
    if (ok)
        d->tokens -= 1;
    pthread_mutex_unlock(&d->rate_mu);
    return ok;
}

/* The cheap checks and the signature of one parsed frame. On success (status
 * ACCEPTED) fr is a candidate: device, key, tenant and flags filled. */
static stele_frame_status check_frame(stele_sealed *s, sealed_request *r, sealed_frame *fr,
                                      int64_t now, int64_t min_ts, int64_t max_ts)
{
    const stele_frame *f = &fr->f;
    stele_device_info info;
    if (stele_registry_get(s->opts.registry, f->device_id, f->device_id_len, &info) != 0 ||
        info.state == STELE_DEVICE_PENDING)
        return STELE_FRAME_UNKNOWN_DEVICE;
    if (info.state == STELE_DEVICE_REVOKED)
        return STELE_FRAME_REVOKED;
    if (f->alg >= 32 || !((info.allowed_algs >> f->alg) & 1))
        return STELE_FRAME_BAD_SIGNATURE;
    /* Which key: the rotation's next one, the current one (dead once the overlap
     * deadline passed), an older one (dead), or one never issued. */
    const stele_device_key *key = NULL;
    bool rotating = info.next.key_id != 0;
    fr->flags = 0;
    if (rotating && f->key_id == info.next.key_id) {
        key = &info.next;
        fr->flags |= FRAME_NEXT_KEY;
    } else if (info.key.key_id && f->key_id == info.key.key_id) {
        if (rotating && info.overlap_deadline_ns && now >= info.overlap_deadline_ns)
            return STELE_FRAME_REVOKED;
        key = &info.key;
        if (rotating) {
            fr->flags |= FRAME_OLD_KEY;
            fr->next_key_id = info.next.key_id;
        }
    } else if (f->key_id <= info.last_key_id) {
        return STELE_FRAME_REVOKED;
    } else {
        return STELE_FRAME_BAD_SIGNATURE;
    }
    if (key->alg != f->alg)
        return STELE_FRAME_BAD_SIGNATURE;
    int rc = sealed_device_get(s, f->device_id, f->device_id_len, &fr->dev);
    if (rc)
        return STELE_FRAME_QUOTA; /* out of memory for a new device: refuse, softly */
    if (!rate_admit(s, fr->dev, now))
        return STELE_FRAME_QUOTA;
    stele_frame_raw_point pt;
    size_t cursor = 0;
    while (stele_frame_next_raw(f, &cursor, &pt))
        if (pt.ts < min_ts || pt.ts > max_ts)
            return STELE_FRAME_CLOCK_SKEW;
    if (stele_frame_verify(f, key->public_key, r->scratch, STELE_FRAME_SCRATCH_BYTES) != 0)
        return STELE_FRAME_BAD_SIGNATURE;
    fr->key_id = f->key_id;
    if (info.state == STELE_DEVICE_QUARANTINED)
        fr->flags |= FRAME_QUARANTINED;
    snprintf(fr->tenant, sizeof(fr->tenant), "%s", info.tenant);
    fr->flags |= FRAME_CANDIDATE;
    return STELE_FRAME_ACCEPTED;
}

/* ---- window verdicts ----------------------------------------------------------------- */

static int candidate_cmp(const void *a, const void *b)
{
    const sealed_sortkey *x = a, *y = b;
    if (x->dev_order != y->dev_order)
        return x->dev_order < y->dev_order ? -1 : 1;
    if (x->key_id != y->key_id)
        return x->key_id < y->key_id ? -1 : 1;
    return x->frame < y->frame ? -1 : x->frame > y->frame;
}

/* Orders the candidates by (device order, key, position) and numbers their devices and
 * (device, key) groups. Returns the number of devices. */
static size_t group_candidates(sealed_request *r, size_t n, size_t *ngroups)
{
    size_t nc = 0, nd = 0, ng = 0;
    for (size_t i = 0; i < n; i++) {
        const sealed_frame *fr = &r->frames[i];
        if (fr->flags & FRAME_CANDIDATE)
            r->order[nc++] = (sealed_sortkey){fr->dev->order, fr->key_id, (uint32_t)i};
    }
    qsort(r->order, nc, sizeof(*r->order), candidate_cmp);
    for (size_t k = 0; k < nc; k++) {
        sealed_frame *fr = &r->frames[r->order[k].frame];
        if (nd == 0 || r->devs[nd - 1].dev != fr->dev)
            r->devs[nd++] = (sealed_reqdev){.dev = fr->dev};
        if (ng == 0 || r->group_dev[ng - 1] != fr->dev || r->group_key[ng - 1] != fr->key_id) {
            r->group_dev[ng] = fr->dev;
            r->group_key[ng] = fr->key_id;
            ng++;
        }
        fr->devslot = (uint32_t)(nd - 1);
        fr->group = (uint32_t)(ng - 1);
    }
    *ngroups = ng;
    return nd;
}

/* Judges every candidate against its window (devices locked), in body order. */
static void judge_windows(stele_sealed *s, sealed_request *r, size_t n, size_t ngroups,
                          stele_frame_result *results)
{
    for (size_t g = 0; g < ngroups; g++) {
        const stele_replay_window *w = sealed_window_find(r->group_dev[g], r->group_key[g]);
        if (w)
            r->groups[g] = *w;
        else
            stele_replay_init(&r->groups[g], s->opts.window);
    }
    for (size_t i = 0; i < n; i++) {
        sealed_frame *fr = &r->frames[i];
        if (!(fr->flags & FRAME_CANDIDATE))
            continue;
        sealed_reqdev *rd = &r->devs[fr->devslot];
        if (fr->flags & FRAME_OLD_KEY) {
            /* The old key dies with the first frame accepted under the next one: before
             * this request (its window has a counter) or earlier in this body. */
            const stele_replay_window *nw = sealed_window_find(fr->dev, fr->next_key_id);
            if ((nw && nw->any) || rd->promote_key == fr->next_key_id) {
                results[i].status = STELE_FRAME_REVOKED;
                continue;
            }
        }
        switch (stele_replay_accept(&r->groups[fr->group], fr->f.counter)) {
        case STELE_REPLAY_NEW:
            fr->flags |= FRAME_NEW;
            if (fr->flags & FRAME_NEXT_KEY)
                rd->promote_key = fr->key_id;
            break;
        case STELE_REPLAY_DUPLICATE:
            results[i].status = STELE_FRAME_DUPLICATE;
            break;
        case STELE_REPLAY_STALE:
            results[i].status = STELE_FRAME_STALE;
            break;
        }
    }
}

/* ---- the batch ---------------------------------------------------------------------- */

static int label_cmp(const stele_label *a, const stele_label *b)
{
    uint32_t n = a->name_len < b->name_len ? a->name_len : b->name_len;
    int c = memcmp(a->name, b->name, n);
    return c ? c : (a->name_len < b->name_len ? -1 : a->name_len > b->name_len);
}

/* Adds the point at `cursor` of a frame by its label set: the payload's plus __name__,
 * device and tenant (the registry's; the parser refuses them in payloads). When the store
 * has the series already, *ref receives its handle (the point is added by it), else NULL
 * (the point is added by labels and the write creates the series, within the quota). */
static int batch_add_labels(stele_sealed *s, stele_batch *b, const sealed_frame *fr, size_t cursor,
                            const char *store_tenant, const stele_series_ref **ref)
{
    stele_label labels[STELE_FRAME_MAX_LABELS + 3];
    stele_frame_point pt;
    *ref = NULL;
    if (!stele_frame_next_point(&fr->f, &cursor, &pt))
        return -EINVAL; /* cannot happen: the frame was parsed */
    size_t n = 0;
    labels[n++] = (stele_label){"__name__", 8, pt.metric, (uint32_t)pt.metric_len};
    labels[n++] = (stele_label){"device", 6, fr->f.device_id, (uint32_t)fr->f.device_id_len};
    labels[n++] = (stele_label){"tenant", 6, fr->tenant, (uint32_t)strlen(fr->tenant)};
    for (size_t k = 0; k < pt.nlabels; k++)
        labels[n++] = (stele_label){pt.labels[k].name, (uint32_t)pt.labels[k].name_len,
                                    pt.labels[k].value, (uint32_t)pt.labels[k].value_len};
    for (size_t k = 1; k < n; k++) /* insertion sort: at most 19 */
        for (size_t j = k; j > 0 && label_cmp(&labels[j - 1], &labels[j]) > 0; j--) {
            stele_label t = labels[j];
            labels[j] = labels[j - 1];
            labels[j - 1] = t;
        }
    int rc = stele_tsdb_series_ref(s->db, store_tenant, labels, n, ref);
    if (rc == 1)
        return stele_batch_add_ref(b, *ref, pt.ts, pt.value);
    if (rc == 0)
        rc = stele_batch_add(b, store_tenant, labels, n, pt.ts, pt.value);
    return rc;
}

/* Adds a frame's points. Each shape's series handle comes from the device's cache (the
 * device is locked); on a miss the label set is built and resolved, and the handle
 * cached once the series exists. */
static int batch_add_frame(stele_sealed *s, stele_batch *b, const sealed_frame *fr)
{
    bool quarantined = fr->flags & FRAME_QUARANTINED;
    const char *store_tenant = quarantined ? STELE_QUARANTINE_TENANT : fr->tenant;
    sealed_shape_cache *cache = &fr->dev->shapes;
    sealed_shapes_bind(cache, s->db, fr->tenant, quarantined, &s->shape_bytes,
                       s->opts.shape_cache_max_bytes ? (size_t)s->opts.shape_cache_max_bytes
                                                     : SEALED_SHAPES_TOTAL_BYTES);
    stele_frame_raw_point pt;
    size_t cursor = 0, at = 0;
    while (stele_frame_next_raw(&fr->f, &cursor, &pt)) {
        size_t this_point = at;
        at = cursor;
        uint64_t hash = hashmap_hash(pt.shape, pt.shape_len);
        const stele_series_ref *ref = sealed_shapes_find(cache, pt.shape, pt.shape_len, hash);
        int rc;
        if (ref) {
            rc = stele_batch_add_ref(b, ref, pt.ts, pt.value);
        } else {
            rc = batch_add_labels(s, b, fr, this_point, store_tenant, &ref);
            if (rc == 0 && ref)
                sealed_shapes_put(cache, pt.shape, pt.shape_len, hash, ref);
        }
        if (rc)
            return rc;
    }
    return 0;
}

/* Builds the batch and its attachment from the frames judged new. */
static int build_write(stele_sealed *s, sealed_request *r, size_t n, int64_t now, uint64_t *points,
                       uint64_t *quarantined)
{
    uint32_t nnew = 0;
    for (size_t i = 0; i < n; i++)
        nnew += (r->frames[i].flags & FRAME_NEW) != 0;
    stele_batch_reset(r->batch);
    size_t alen = sealed_attachment_begin(r->attach, now, nnew);
    *points = *quarantined = 0;
    for (size_t i = 0; i < n; i++) {
        const sealed_frame *fr = &r->frames[i];
        if (!(fr->flags & FRAME_NEW))
            continue;
        int rc = batch_add_frame(s, r->batch, fr);
        if (rc)
            return rc;
        sealed_admit a = {fr->f.device_id, fr->f.device_id_len, fr->key_id, fr->f.counter};
        alen += sealed_attachment_add(r->attach + alen, &a);
        *points += fr->f.npoints;
        if (fr->flags & FRAME_QUARANTINED)
            *quarantined += fr->f.npoints;
    }
    return stele_batch_set_attachment(r->batch, r->attach, alen);
}

/* ---- the request ---------------------------------------------------------------------- */

/* Splits the body into r->frames; *n entries (a tail that cannot be split is one more,
 * with bytes = NULL). -E2BIG over cap. */
static int split_body(sealed_request *r, const uint8_t *body, size_t len, size_t cap, size_t *n)
{
    size_t count = 0;
    for (size_t at = 0; at < len;) {
        size_t flen = 0;
        if (count == cap)
            return -E2BIG;
        int rc = request_reserve(r, count + 1);
        if (rc)
            return rc;
        sealed_frame *fr = &r->frames[count++];
        memset(fr, 0, sizeof(*fr));
        if (stele_frame_span(body + at, len - at, &flen) != 0) {
            fr->bytes = NULL; /* the rest: one malformed entry */
            break;
        }
        fr->bytes = body + at;
        fr->len = flen;
        at += flen;
    }
    *n = count;
    return 0;
}

static void lock_devices(sealed_request *r, size_t nd)
{
    for (size_t k = 0; k < nd; k++) /* ascending creation number: the global order */
        pthread_mutex_lock(&r->devs[k].dev->mu);
}

static void unlock_devices(sealed_request *r, size_t nd)
{
    for (size_t k = nd; k-- > 0;)
        pthread_mutex_unlock(&r->devs[k].dev->mu);
}

int stele_sealed_ingest(stele_sealed *s, const uint8_t *body, size_t len,
                        stele_frame_result *results, size_t cap, size_t *n_out)
{
    sealed_request *r = NULL;
    size_t n = 0, nd = 0, ngroups = 0;
    bool locked = false;
    *n_out = 0;
    if (!s->db)
        return -EINVAL;
    if (cap > STELE_SEALED_MAX_FRAMES)
        cap = STELE_SEALED_MAX_FRAMES;
    uint64_t epoch = flight_enter(s);
    int rc = request_get(s, &r);
    if (rc == 0)
        rc = split_body(r, body, len, cap, &n);
    if (rc)
        goto out;
    int64_t now = sealed_now(s), min_ts, max_ts;
    stele_tsdb_time_bounds(s->db, &min_ts, &max_ts);
    if (s->opts.max_future_skew_ns > 0 && now + s->opts.max_future_skew_ns < max_ts)
        max_ts = now + s->opts.max_future_skew_ns;

    size_t candidates = 0;
    for (size_t i = 0; i < n; i++) {
        sealed_frame *fr = &r->frames[i];
        stele_frame_result *res = &results[i];
        memset(res, 0, sizeof(*res));
        res->status = STELE_FRAME_MALFORMED;
        if (!fr->bytes || stele_frame_parse(fr->bytes, fr->len, &fr->f, NULL) != 0)
            continue;
        memcpy(res->device, fr->f.device_id, fr->f.device_id_len);
        res->counter = fr->f.counter;
        res->status = check_frame(s, r, fr, now, min_ts, max_ts);
        candidates += res->status == STELE_FRAME_ACCEPTED;
    }

    uint64_t points = 0, quarantined = 0;
    bool wrote = false;
    if (candidates) {
        nd = group_candidates(r, n, &ngroups);
        lock_devices(r, nd);
        locked = true;
        judge_windows(s, r, n, ngroups, results);
        rc = build_write(s, r, n, now, &points, &quarantined);
        if (rc == 0 && points) {
            /* The store applies the attachment to the windows (sealed_log_apply) once the
             * record is durable, in this thread, while the devices are still locked. */
            rc = stele_tsdb_write_quota(s->db, r->batch, s->opts.max_tenant_series);
            wrote = rc == 0;
        }
        unlock_devices(r, nd);
        locked = false;
        if (rc == -EDQUOT || rc == -ERANGE) {
            /* Nothing stored, no window changed: the new frames are refused. */
            for (size_t i = 0; i < n; i++)
                if (r->frames[i].flags & FRAME_NEW) {
                    r->frames[i].flags &= ~(unsigned)FRAME_NEW;
                    results[i].status = rc == -EDQUOT ? STELE_FRAME_QUOTA : STELE_FRAME_CLOCK_SKEW;
                }
            rc = 0;
        }
        if (rc)
            goto out;
    }
    if (wrote) {
        __atomic_add_fetch(&s->points_accepted, points, __ATOMIC_RELAXED);
        __atomic_add_fetch(&s->points_quarantined, quarantined, __ATOMIC_RELAXED);
        for (size_t i = 0; i < n; i++)
            if (r->frames[i].flags & FRAME_NEW)
                r->devs[r->frames[i].devslot].accepted = true;
        for (size_t k = 0; k < nd; k++) {
            sealed_reqdev *rd = &r->devs[k];
            if (!rd->accepted)
                continue;
            stele_registry_touch(s->opts.registry, rd->dev->id, rd->dev->id_len, now);
            /* Durable already: a failure here leaves the rotation to the deadline or to
             * the next start, which promotes it from the windows. */
            if (rd->promote_key)
                stele_registry_promote_key(s->opts.registry, rd->dev->id, rd->promote_key);
        }
    }
    for (size_t i = 0; i < n; i++) {
        stele_frame_status st = results[i].status;
        __atomic_add_fetch(&s->frames[st], 1, __ATOMIC_RELAXED);
        if (st != STELE_FRAME_ACCEPTED && st != STELE_FRAME_DUPLICATE)
            sealed_rejects_note(&s->rejects, results[i].device, strlen(results[i].device), st, now);
    }
    *n_out = n;
out:
    if (locked)
        unlock_devices(r, nd);
    if (r)
        request_put(s, r);
    flight_leave(s, epoch);
    return rc;
}

size_t stele_sealed_take_rejections(stele_sealed *s, stele_reject_summary *out, size_t cap)
{
    return sealed_rejects_take(&s->rejects, out, cap);
}

void stele_sealed_get_stats(stele_sealed *s, stele_sealed_stats *st)
{
    memset(st, 0, sizeof(*st));
    for (int i = 0; i < STELE_FRAME_STATUSES; i++)
        st->frames[i] = __atomic_load_n(&s->frames[i], __ATOMIC_RELAXED);
    st->points_accepted = __atomic_load_n(&s->points_accepted, __ATOMIC_RELAXED);
    st->points_quarantined = __atomic_load_n(&s->points_quarantined, __ATOMIC_RELAXED);
    st->skew_refusals = st->frames[STELE_FRAME_CLOCK_SKEW];
    st->windows = __atomic_load_n(&s->windows, __ATOMIC_RELAXED);
    st->checkpoints = __atomic_load_n(&s->checkpoints, __ATOMIC_RELAXED);
    st->shape_cache_bytes = __atomic_load_n(&s->shape_bytes, __ATOMIC_RELAXED);
}
