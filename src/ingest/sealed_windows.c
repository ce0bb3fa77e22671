/*
 * sealed_windows.c — the anti-replay windows of sealed-frame ingestion and how they
 * survive restarts (see stele/sealed.h, docs/format/windows.md).
 *
 * Design: a window's state is a pure function of the set of counters accepted into it
 * (stele/replay.h), so it can be rebuilt from any checkpoint plus any superset of the
 * log records written after it. Each store write of admitted frames carries an
 * attachment listing them (below) in the same log record as their points; the store
 * applies it once the record is durable (and again when it replays the log), and before
 * its flush deletes log segments it asks for a checkpoint of every window. A window
 * therefore holds a counter if and only if the points of that frame are durable.
 *
 * ATTACHMENT (opaque to the store; little-endian)
 *   0  1  version (1)
 *   1  8  receipt time, ns since the epoch (signed): the devices' last-seen time
 *   9  .. varint n (1 .. STELE_SEALED_MAX_FRAMES)
 *   n × admit:
 *      1  device id length d (1..64), then d bytes of device id
 *      4  key id (≥ 1)
 *      8  counter
 *
 * CHECKPOINT FILE DATA/windows.ckpt (replaced whole: tmp, fsync, rename, fsync dir)
 *   0   8  magic "STLWIN\0\1"
 *   8   4  version (1)
 *   12  4  reserved, 0
 *   16  8  device count m
 *   24  8  XXH3-64 of bytes 0..24
 *   m × device (ascending id, each id once):
 *      1  id length d (1..64), d bytes id
 *      8  last seen, ns (signed; 0 = never)
 *      1  window count w (0..2), then w × window (distinct key ids):
 *           4  key id (≥ 1)
 *           4  window size s (64..1024, a multiple of 64)
 *           1  any (0 or 1)
 *           8  top (0 unless any)
 *           s/8 bytes: s/64 words, bit i of the whole = counter top − i seen (bit 0 set
 *              when any; all zero when not)
 *   8  XXH3-64 of every byte before
 * Windows keep the size they were made with: a window grown on restart would forget
 * which counters of the added range it saw.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "common/bytes.h"
#include "ingest/sealed_internal.h"
#include "stele/varint.h"

#define ATTACH_VERSION 1
#define ATTACH_HEADER (1 + 8)
#define ATTACH_ADMIT_MAX (1 + STELE_DEVICE_ID_MAX + 4 + 8)

#define CKPT_NAME "windows.ckpt"
#define CKPT_MAGIC "STLWIN\0\1"
#define CKPT_VERSION 1u
#define CKPT_HEADER 32
#define CKPT_WINDOW_MAX (4 + 4 + 1 + 8 + STELE_REPLAY_MAX_WINDOW / 8)
#define CKPT_DEVICE_MAX (1 + STELE_DEVICE_ID_MAX + 8 + 1 + SEALED_KEYS_PER_DEVICE * CKPT_WINDOW_MAX)
/* The file is read whole at start: ~300 bytes a device, so 1 GiB is millions of
 * devices — far beyond one server — while a damaged length cannot make us allocate
 * without bound. */
#define CKPT_MAX_BYTES ((size_t)1 << 30)

/* ---- device table -------------------------------------------------------------- */

int sealed_table_init(sealed_table *t)
{
    memset(t, 0, sizeof(*t));
    hashmap_init(&t->map);
    return pthread_rwlock_init(&t->mu, NULL) ? -ENOMEM : 0;
}

void sealed_table_free(sealed_table *t)
{
    for (size_t i = 0; i < t->n; i++) {
        pthread_mutex_destroy(&t->all[i]->mu);
        pthread_mutex_destroy(&t->all[i]->rate_mu);
        sealed_shapes_free(&t->all[i]->shapes);
        free(t->all[i]);
    }
    free(t->all);
    hashmap_free(&t->map);
    pthread_rwlock_destroy(&t->mu);
}

static sealed_device *table_lookup(sealed_table *t, const char *id, size_t id_len)
{
    return hashmap_get(&t->map, hashmap_hash(id, id_len), id, id_len);
}

sealed_device *sealed_device_find(sealed_table *t, const char *id, size_t id_len)
{
    pthread_rwlock_rdlock(&t->mu);
    sealed_device *d = table_lookup(t, id, id_len);
    pthread_rwlock_unlock(&t->mu);
    return d;
}

int sealed_device_get(stele_sealed *s, const char *id, size_t id_len, sealed_device **out)
{
    sealed_table *t = &s->table;
    sealed_device *d = NULL;
    int rc = 0;
    if (id_len == 0 || id_len > STELE_DEVICE_ID_MAX)
        return -EINVAL;
    if ((*out = sealed_device_find(t, id, id_len)) != NULL)
        return 0;
    pthread_rwlock_wrlock(&t->mu);
    if ((d = table_lookup(t, id, id_len)) != NULL)
        goto out; /* created meanwhile */
    if (t->n == t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 64;
        sealed_device **all = realloc(t->all, cap * sizeof(*all));
        if (!all) {
            rc = -ENOMEM;
            goto out;
        }
        t->all = all;
        t->cap = cap;
    }
    d = calloc(1, sizeof(*d));
    if (!d) {
        rc = -ENOMEM;
        goto out;
    }
    memcpy(d->id, id, id_len);
    d->id_len = id_len;
    d->order = t->n;
    d->tokens = -1; /* full at first use */
    pthread_mutex_init(&d->mu, NULL);
    pthread_mutex_init(&d->rate_mu, NULL);
    rc = hashmap_put(&t->map, hashmap_hash(d->id, id_len), d->id, id_len, d);
    if (rc) {
        pthread_mutex_destroy(&d->mu);
        pthread_mutex_destroy(&d->rate_mu);
        free(d);
        d = NULL;
        goto out;
    }
    t->all[t->n++] = d; /* the table owns it now */
out:
    pthread_rwlock_unlock(&t->mu);
    *out = d;
    return rc;
}

stele_replay_window *sealed_window_find(sealed_device *d, uint32_t key_id)
{
    for (int i = 0; i < SEALED_KEYS_PER_DEVICE; i++)
        if (d->win[i].key_id == key_id && key_id != 0)
            return &d->win[i].w;
    return NULL;
}

stele_replay_window *sealed_window_get(stele_sealed *s, sealed_device *d, uint32_t key_id)
{
    stele_replay_window *w = sealed_window_find(d, key_id);
    if (w || key_id == 0)
        return w;
    sealed_window *slot = NULL;
    for (int i = 0; i < SEALED_KEYS_PER_DEVICE; i++)
        if (!slot || d->win[i].key_id < slot->key_id)
            slot = &d->win[i];
    if (slot->key_id > key_id)
        return NULL; /* older than both live keys: dead */
    if (slot->key_id == 0)
        __atomic_add_fetch(&s->windows, 1, __ATOMIC_RELAXED);
    slot->key_id = key_id;
    stele_replay_init(&slot->w, s->opts.window);
    return &slot->w;
}

/* ---- attachment ------------------------------------------------------------------- */

size_t sealed_attachment_bound(size_t n)
{
    return ATTACH_HEADER + STELE_VARINT_MAX + n * ATTACH_ADMIT_MAX;
}

size_t sealed_attachment_begin(uint8_t *buf, int64_t receipt_ns, uint32_t n)
{
    buf[0] = ATTACH_VERSION;
    put_le64(buf + 1, (uint64_t)receipt_ns);
    return ATTACH_HEADER + stele_varint_put(buf + ATTACH_HEADER, n);
}

size_t sealed_attachment_add(uint8_t *buf, const sealed_admit *a)
{
    buf[0] = (uint8_t)a->device_len;
    memcpy(buf + 1, a->device, a->device_len);
    put_le32(buf + 1 + a->device_len, a->key_id);
    put_le64(buf + 5 + a->device_len, a->counter);
    return 13 + a->device_len;
}

int sealed_log_apply(void *ctx, const uint8_t *attachment, size_t len)
{
    stele_sealed *s = ctx;
    const uint8_t *p = attachment, *end = attachment + len;
    uint64_t n;
    if (len < ATTACH_HEADER || p[0] != ATTACH_VERSION)
        return -EBADMSG;
    int64_t receipt = (int64_t)get_le64(p + 1);
    p += ATTACH_HEADER;
    if (stele_varint_get(&p, end, &n) || n == 0 || n > STELE_SEALED_MAX_FRAMES)
        return -EBADMSG;
    for (uint64_t i = 0; i < n; i++) {
        if (end - p < 1 || p[0] == 0 || p[0] > STELE_DEVICE_ID_MAX || end - p < 13 + p[0])
            return -EBADMSG;
        size_t dl = p[0];
        const char *id = (const char *)p + 1;
        uint32_t key_id = get_le32(p + 1 + dl);
        uint64_t counter = get_le64(p + 5 + dl);
        p += 13 + dl;
        if (key_id == 0)
            return -EBADMSG;
        /* Live, the writing request holds this device's lock; at open, there are no other
         * threads. Either way nothing here locks the device. */
        sealed_device *d = NULL;
        int rc = sealed_device_get(s, id, dl, &d);
        if (rc)
            return rc;
        stele_replay_window *w = sealed_window_get(s, d, key_id);
        if (w)
            stele_replay_accept(w, counter); /* a duplicate or stale one: already reflected */
        if (receipt > d->last_seen_ns)
            d->last_seen_ns = receipt;
    }
    return p == end ? 0 : -EBADMSG;
}

/* ---- checkpoint ------------------------------------------------------------------ */

static int device_id_cmp(const void *a, const void *b)
{
    const sealed_device *x = *(sealed_device *const *)a, *y = *(sealed_device *const *)b;
    size_t n = x->id_len < y->id_len ? x->id_len : y->id_len;
    int c = memcmp(x->id, y->id, n);
    return c ? c : (x->id_len < y->id_len ? -1 : x->id_len > y->id_len);
}

/* Encodes one device (under its lock) at p; returns the bytes written, 0 to skip it. */
static size_t checkpoint_encode_device(sealed_device *d, uint8_t *p)
{
    uint8_t *start = p;
    pthread_mutex_lock(&d->mu);
    int nwin = 0;
    for (int i = 0; i < SEALED_KEYS_PER_DEVICE; i++)
        nwin += d->win[i].key_id != 0;
    if (nwin == 0 && d->last_seen_ns == 0) {
        pthread_mutex_unlock(&d->mu);
        return 0; /* known only to the rate limiter: nothing to keep */
    }
    *p++ = (uint8_t)d->id_len;
    memcpy(p, d->id, d->id_len);
    p += d->id_len;
    put_le64(p, (uint64_t)d->last_seen_ns);
    p += 8;
    *p++ = (uint8_t)nwin;
    for (int i = 0; i < SEALED_KEYS_PER_DEVICE; i++) {
        const sealed_window *sw = &d->win[i];
        if (sw->key_id == 0)
            continue;
        put_le32(p, sw->key_id);
        put_le32(p + 4, sw->w.size);
        p[8] = sw->w.any ? 1 : 0;
        put_le64(p + 9, sw->w.any ? sw->w.top : 0);
        p += 17;
        for (uint32_t k = 0; k < sw->w.size / 64; k++, p += 8)
            put_le64(p, sw->w.seen[k]);
    }
    pthread_mutex_unlock(&d->mu);
    return (size_t)(p - start);
}

int sealed_log_checkpoint(void *ctx)
{
    stele_sealed *s = ctx;
    sealed_device **devs = NULL;
    uint8_t *buf = NULL;
    size_t n = 0;
    int rc = 0;
    /* A snapshot of the list: devices created later have nothing in the segments this
     * checkpoint lets go (their first write was applied after the flush waited). */
    pthread_rwlock_rdlock(&s->table.mu);
    n = s->table.n;
    devs = malloc((n + 1) * sizeof(*devs));
    if (devs && n)
        memcpy(devs, s->table.all, n * sizeof(*devs));
    pthread_rwlock_unlock(&s->table.mu);
    if (!devs)
        return -ENOMEM;
    qsort(devs, n, sizeof(*devs), device_id_cmp);
    buf = malloc(CKPT_HEADER + n * CKPT_DEVICE_MAX + 8);
    if (!buf) {
        rc = -ENOMEM;
        goto out;
    }
    size_t len = CKPT_HEADER;
    uint64_t m = 0;
    for (size_t i = 0; i < n; i++) {
        /* One device lock at a time: this runs on the flush thread. */
        size_t k = checkpoint_encode_device(devs[i], buf + len);
        len += k;
        m += k != 0;
    }
    memcpy(buf, CKPT_MAGIC, 8);
    put_le32(buf + 8, CKPT_VERSION);
    put_le32(buf + 12, 0);
    put_le64(buf + 16, m);
    put_le64(buf + 24, XXH3_64bits(buf, 24));
    put_le64(buf + len, XXH3_64bits(buf, len));
    len += 8;
    rc = stele_io_write_file_atomic(s->opts.io, s->data_dir, CKPT_NAME, buf, len);
    if (rc)
        fprintf(stderr, "stele: sealed frames: cannot write %s/%s: %s\n", s->data_dir, CKPT_NAME,
                strerror(-rc));
    else
        __atomic_add_fetch(&s->checkpoints, 1, __ATOMIC_RELAXED);
out:
    free(buf);
    free(devs);
    return rc;
}

#define CKPT_BAD(msg)                                                                              \
    do {                                                                                           \
        why = msg;                                                                                 \
        rc = -EBADMSG;                                                                             \
        goto out;                                                                                  \
    } while (0)

int sealed_checkpoint_load(stele_sealed *s, char *err, size_t errcap)
{
    char path[4096 + 32];
    uint8_t *buf = NULL;
    size_t size = 0;
    const char *why = NULL;
    snprintf(path, sizeof(path), "%s/%s", s->data_dir, CKPT_NAME);
    int rc = stele_io_read_file(s->opts.io, path, CKPT_MAX_BYTES, &buf, &size);
    if (rc == -ENOENT)
        return 0;
    if (rc == -EFBIG)
        CKPT_BAD("larger than any checkpoint");
    if (rc) {
        snprintf(err, errcap, "%s: cannot read: %s", path, strerror(-rc));
        goto out;
    }
    if (size < CKPT_HEADER + 8 || memcmp(buf, CKPT_MAGIC, 8) != 0)
        CKPT_BAD("not a window checkpoint (bad magic or too short)");
    if (get_le64(buf + 24) != XXH3_64bits(buf, 24))
        CKPT_BAD("header checksum mismatch");
    if (get_le32(buf + 8) != CKPT_VERSION)
        CKPT_BAD("unsupported version");
    if (get_le64(buf + size - 8) != XXH3_64bits(buf, size - 8))
        CKPT_BAD("checksum mismatch");
    const uint8_t *p = buf + CKPT_HEADER, *end = buf + size - 8;
    uint64_t m = get_le64(buf + 16);
    for (uint64_t i = 0; i < m; i++) {
        if (end - p < 1 || p[0] == 0 || p[0] > STELE_DEVICE_ID_MAX || end - p < 1 + p[0] + 9)
            CKPT_BAD("truncated device");
        size_t dl = p[0];
        const char *id = (const char *)p + 1;
        if (!stele_device_id_valid(id, dl))
            CKPT_BAD("invalid device id");
        if (sealed_device_find(&s->table, id, dl))
            CKPT_BAD("a device listed twice");
        sealed_device *d = NULL;
        rc = sealed_device_get(s, id, dl, &d);
        if (rc)
            goto out;
        p += 1 + dl;
        d->last_seen_ns = (int64_t)get_le64(p);
        uint8_t nwin = p[8];
        p += 9;
        if (nwin > SEALED_KEYS_PER_DEVICE)
            CKPT_BAD("too many windows for a device");
        for (uint8_t k = 0; k < nwin; k++) {
            if (end - p < 17)
                CKPT_BAD("truncated window");
            uint32_t key_id = get_le32(p), wsize = get_le32(p + 4);
            uint8_t any = p[8];
            uint64_t top = get_le64(p + 9);
            p += 17;
            if (key_id == 0 || sealed_window_find(d, key_id))
                CKPT_BAD("invalid or repeated key id");
            if (wsize < 64 || wsize > STELE_REPLAY_MAX_WINDOW || wsize % 64 || any > 1 ||
                (!any && top))
                CKPT_BAD("invalid window header");
            if ((size_t)(end - p) < wsize / 8)
                CKPT_BAD("truncated window bitmap");
            sealed_window *sw = &d->win[k];
            sw->key_id = key_id;
            stele_replay_init(&sw->w, wsize);
            sw->w.any = any;
            sw->w.top = top;
            uint64_t bits = 0;
            for (uint32_t j = 0; j < wsize / 64; j++, p += 8)
                bits |= sw->w.seen[j] = get_le64(p);
            if (any ? !(sw->w.seen[0] & 1) : bits != 0)
                CKPT_BAD("window bitmap disagrees with its top");
            __atomic_add_fetch(&s->windows, 1, __ATOMIC_RELAXED);
        }
    }
    if (p != end)
        CKPT_BAD("bytes after the last device");
out:
    if (rc == -EBADMSG)
        snprintf(err, errcap,
                 "%s: damaged: %s; refusing to start without the anti-replay state (without it "
                 "replayed frames could be accepted again): restore the file from a backup",
                 path, why);
    else if (rc && !err[0])
        snprintf(err, errcap, "%s: cannot load: %s", path, strerror(-rc));
    free(buf);
    return rc;
}
