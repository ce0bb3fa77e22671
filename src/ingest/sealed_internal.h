/*
 * sealed_internal.h — the shared state of sealed-frame ingestion (stele/sealed.h), for
 * src/ingest/sealed*.c only:
 *   sealed.c          the request flow: split, cheap checks, signature, window verdicts,
 *                     one store write, verdicts
 *   sealed_windows.c  the device table and its anti-replay windows, the attachment the
 *                     store's log carries, the checkpoint file (DATA/windows.ckpt)
 *   sealed_rejects.c  the bounded summary of refused frames for the audit trail
 *   sealed_shapes.c   per device, the store's series handles by point shape
 *
 * Locks, in the order they may be taken:
 *   device mu      (many: in ascending device `order`, only by a request; the flush
 *                  thread takes one at a time)
 *   table mu       the device table's map and list (rwlock, leaf)
 *   device rate_mu the token bucket (leaf)
 *   rejects mu, flight mu (leaves)
 */
#ifndef STELE_INGEST_SEALED_INTERNAL_H
#define STELE_INGEST_SEALED_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/hashmap.h"
#include "stele/replay.h"
#include "stele/sealed.h"

/* Windows kept per device: a device has at most two live keys (the current one and,
 * during a rotation, the next), and key ids only grow, so a third key's window replaces
 * the lowest-numbered one, which is dead. */
#define SEALED_KEYS_PER_DEVICE 2

typedef struct {
    uint32_t key_id; /* 0: free slot */
    stele_replay_window w;
} sealed_window;

/* Bounds of a device's shape cache (sealed_shapes.c). 256 distinct series per device
 * covers a frame of the benchmark's 50 sensors five times over and real fleets' few
 * dozen metrics; the byte budget allows 256 shapes of 64 bytes (a metric and two short
 * labels). When either fills, the cache is emptied whole: a device with more shapes than
 * this pays the per-point cost of before, no more. A longer shape is never cached. */
#define SEALED_SHAPES_PER_DEVICE 256
#define SEALED_SHAPE_BYTES (16u << 10)
#define SEALED_SHAPE_MAX_LEN 512
/* All devices' caches together: a registry may hold a million devices, and ~23 KiB each
 * at the per-device bounds would be 23 GiB. 256 MiB caches ~100,000 devices of 50 shapes;
 * beyond it, new shapes take the uncached path (correct, just slower). One growth step
 * per concurrently served device may overshoot it. */
#define SEALED_SHAPES_TOTAL_BYTES ((size_t)256 << 20) /* default of shape_cache_max_bytes */

typedef struct {
    uint64_t hash;
    const stele_series_ref *ref;
    uint32_t off, len; /* the shape's bytes in the cache's arena */
} sealed_shape;

/* A point shape (its metric and labels, exactly as the frame encodes them) → the store's
 * series handle, for the (store, store tenant, tenant label) it was filled for. */
typedef struct {
    const stele_tsdb *db; /* NULL: empty */
    bool quarantined;
    char tenant[65];
    sealed_shape *entries;
    uint32_t n, entries_cap;
    uint16_t *slots; /* open addressing: entry index + 1, 0 empty; at most half full */
    uint32_t nslots;
    uint8_t *bytes;
    uint32_t bytes_len, bytes_cap;
    size_t *total; /* all caches' bytes (stele_sealed.shape_bytes), atomic; NULL: unbound */
    size_t total_max;
} sealed_shape_cache;

typedef struct {
    char id[STELE_DEVICE_ID_MAX + 1];
    size_t id_len;
    uint64_t order; /* creation number: the global lock order of device locks */
    /* Guards win and last_seen_ns. A request holds it from the window check until its
     * counters are applied by the store's log hook (which therefore locks nothing);
     * while the store replays its log at open there are no other threads. */
    pthread_mutex_t mu;
    sealed_window win[SEALED_KEYS_PER_DEVICE];
    int64_t last_seen_ns;      /* newest receipt time of an accepted frame */
    sealed_shape_cache shapes; /* guarded by mu */
    pthread_mutex_t rate_mu;
    double tokens; /* token bucket of the per-device rate limit */
    int64_t tokens_at;
} sealed_device;

typedef struct {
    pthread_rwlock_t mu;
    hashmap map; /* id → sealed_device* (the key points into the device) */
    sealed_device **all;
    size_t n, cap;
} sealed_table;

/* Summary table of refusals: fixed size whatever an attacker sends. */
#define SEALED_REJECT_SLOTS 4096
typedef struct {
    char device[STELE_DEVICE_ID_MAX + 1];
    stele_frame_status status;
    uint64_t count;
    int64_t start_ns, end_ns;
} sealed_reject;

typedef struct {
    pthread_mutex_t mu;
    sealed_reject slots[SEALED_REJECT_SLOTS];
    size_t n;
    /* Open addressing over slots (index + 1; 0 empty), twice as many buckets as slots so
     * probes stay short when the table is full. */
    uint16_t index[2 * SEALED_REJECT_SLOTS];
    sealed_reject overflow[STELE_FRAME_STATUSES]; /* device "*", by status */
} sealed_rejects;

typedef struct sealed_request sealed_request;

struct stele_sealed {
    stele_sealed_options opts;
    char data_dir[4096];
    stele_tsdb *db; /* NULL until attached */
    sealed_table table;
    sealed_rejects rejects;

    /* Requests in flight, by epoch parity (see stele_sealed_barrier). */
    pthread_mutex_t flight_mu;
    pthread_cond_t flight_cond;
    uint64_t epoch;
    uint64_t inflight[2];
    pthread_mutex_t barrier_mu; /* one barrier at a time */

    pthread_mutex_t pool_mu;
    sealed_request *pool; /* reusable request contexts */
    size_t pooled;

    /* counters, atomic */
    uint64_t frames[STELE_FRAME_STATUSES];
    uint64_t points_accepted, points_quarantined;
    uint64_t windows, checkpoints;
    size_t shape_bytes; /* memory of all shape caches (SEALED_SHAPES_TOTAL_BYTES) */
};

int64_t sealed_now(stele_sealed *s);

/* ---- device table and windows (sealed_windows.c) --------------------------------- */

int sealed_table_init(sealed_table *t);
void sealed_table_free(sealed_table *t);
/* The device's entry, or NULL. */
sealed_device *sealed_device_find(sealed_table *t, const char *id, size_t id_len);
/* The device's entry, created when missing. -ENOMEM. */
int sealed_device_get(stele_sealed *s, const char *id, size_t id_len, sealed_device **out);
/* The window of (d, key_id), or NULL. Caller holds d->mu (or is the replay). */
stele_replay_window *sealed_window_find(sealed_device *d, uint32_t key_id);
/* As find, creating an empty window when missing (replacing the lowest-numbered key's
 * if both slots are used and that key is older); NULL when key_id is older than both
 * windows held (a dead key). */
stele_replay_window *sealed_window_get(stele_sealed *s, sealed_device *d, uint32_t key_id);

/* Attachment of a store write: the frames it admits. Format: docs/format/windows.md. */
typedef struct {
    const char *device;
    size_t device_len;
    uint32_t key_id;
    uint64_t counter;
} sealed_admit;
/* Bytes an attachment of n admits may need. */
size_t sealed_attachment_bound(size_t n);
/* Encodes the header (receipt time, count); then sealed_attachment_add per admit. */
size_t sealed_attachment_begin(uint8_t *buf, int64_t receipt_ns, uint32_t n);
size_t sealed_attachment_add(uint8_t *buf, const sealed_admit *a);

/* The store's hooks (stele_tsdb_options.log_apply / log_checkpoint). */
int sealed_log_apply(void *ctx, const uint8_t *attachment, size_t len);
int sealed_log_checkpoint(void *ctx);
/* Loads DATA/windows.ckpt into the (empty) table; a missing file is an empty one. */
int sealed_checkpoint_load(stele_sealed *s, char *err, size_t errcap);

/* ---- series handles by point shape (sealed_shapes.c) ----------------------------- */

/* Makes the cache hold handles of (db, store tenant — the device's or the quarantine's —,
 * tenant label): emptied first if it held another's. */
void sealed_shapes_bind(sealed_shape_cache *c, const stele_tsdb *db, const char *tenant,
                        bool quarantined, size_t *total, size_t total_max);
/* The handle for a shape, or NULL. hash: hashmap_hash of the shape. */
const stele_series_ref *sealed_shapes_find(const sealed_shape_cache *c, const uint8_t *shape,
                                           size_t len, uint64_t hash);
/* Remembers shape → ref (best effort: out of memory, an overlong shape or the fleet-wide
 * budget reached caches nothing). */
void sealed_shapes_put(sealed_shape_cache *c, const uint8_t *shape, size_t len, uint64_t hash,
                       const stele_series_ref *ref);
void sealed_shapes_free(sealed_shape_cache *c);

/* ---- refusal summaries (sealed_rejects.c) ---------------------------------------- */

void sealed_rejects_init(sealed_rejects *r);
void sealed_rejects_free(sealed_rejects *r);
void sealed_rejects_note(sealed_rejects *r, const char *device, size_t device_len,
                         stele_frame_status status, int64_t now);
size_t sealed_rejects_take(sealed_rejects *r, stele_reject_summary *out, size_t cap);

#endif
