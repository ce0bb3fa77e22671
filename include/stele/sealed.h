/*
 * sealed.h — ingestion of sealed frames (SPEC §6; `POST /api/v1/frames`): every frame is
 * checked cheaply (size, structure, known device, state, pinned algorithm, key), then
 * its signature verified, then its counter checked against the (device, key) anti-replay
 * window; the accepted frames' points are written to the store in one atomic log record
 * that also carries their (device, key, counter) triples, and only once that record is
 * durable are the counters accepted into the windows and the verdicts returned.
 *
 * Windows are rebuilt on open from a checkpoint file (DATA/windows.ckpt, written before
 * the store deletes log segments after a flush) plus the counters of every log record
 * replayed after it, so a restart re-opens no window that was acknowledged, and never
 * closes one that was not.
 *
 * Identity labels: each point is stored with labels `device` and `tenant` from the
 * registry entry, never from the payload, in the device's tenant; a quarantined device's
 * points go to the reserved tenant STELE_QUARANTINE_TENANT instead (readable by admin
 * tokens, absent from every ordinary query).
 *
 * Construction order: stele_sealed_create (loads the checkpoint) → put
 * stele_sealed_tsdb_hooks into the store's options → stele_tsdb_open (replays the log
 * through them) → stele_sealed_attach. Teardown: stele_tsdb_close, then
 * stele_sealed_destroy.
 *
 * Threads: stele_sealed_ingest, _barrier, _take_rejections and _get_stats may be called
 * from any thread once attached. A request holds the locks of the devices it admits
 * frames for from the window check until their counters are applied (after the log
 * fsync), in one global order; the store's flush thread takes one device lock at a time
 * to copy its windows into the checkpoint.
 */
#ifndef STELE_SEALED_H
#define STELE_SEALED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "stele/io.h"
#include "stele/registry.h"
#include "stele/tsdb.h"

#define STELE_QUARANTINE_TENANT "_quarantine"

typedef enum {
    STELE_FRAME_ACCEPTED = 0,
    STELE_FRAME_DUPLICATE = 1,      /* seen before: a success, nothing changed */
    STELE_FRAME_UNKNOWN_DEVICE = 2, /* not registered, or pending (no key yet) */
    STELE_FRAME_REVOKED = 3,        /* device revoked, or a dead (rotated-out) key */
    STELE_FRAME_BAD_SIGNATURE = 4,  /* wrong signature, unknown key id, algorithm not pinned */
    STELE_FRAME_STALE = 5,          /* counter below the window */
    STELE_FRAME_CLOCK_SKEW = 6,     /* a timestamp too far ahead, or before retention */
    STELE_FRAME_MALFORMED = 7,      /* does not parse */
    STELE_FRAME_QUOTA = 8,          /* device or tenant rate / series quota */
} stele_frame_status;
#define STELE_FRAME_STATUSES 9

/* "accepted", "duplicate", "unknown_device", … as in SPEC §3. */
const char *stele_frame_status_name(stele_frame_status s);

typedef struct stele_sealed stele_sealed;

/* Most frames one request may carry. Bounds a request's working memory (~300 bytes per
 * frame) and, with the HTTP body limit (32 MiB), its log record; a device sends a
 * backlog in several requests. */
#define STELE_SEALED_MAX_FRAMES 4096

typedef struct {
    stele_io *io;
    const char *data_dir;
    stele_registry *registry;          /* borrowed; outlives this */
    uint32_t window;                   /* anti-replay window (0 = STELE_REPLAY_DEFAULT_WINDOW) */
    int64_t max_future_skew_ns;        /* 0 = the store's bound (never looser than it) */
    uint32_t device_frames_per_second; /* per-device rate limit, burst 2 s (0 = 100) */
    /* Series quota per tenant (stele_tsdb_write_quota; 0 = none). A request that would
     * pass it stores nothing: every frame of it that was new is answered `quota`. */
    uint64_t max_tenant_series;
    uint64_t shape_cache_max_bytes; /* all devices' series-handle caches (0 = 256 MiB) */
    int64_t (*now_ns)(void *ctx);   /* NULL = the wall clock */
    void *now_ctx;
} stele_sealed_options;

/* Creates the ingester and loads DATA/windows.ckpt (missing = empty; damaged =
 * -EBADMSG naming it in err). */
int stele_sealed_create(const stele_sealed_options *o, stele_sealed **out, char *err,
                        size_t errcap);
void stele_sealed_destroy(stele_sealed *s);

/* Fills the store options' log hooks so that opening the store replays the counters
 * carried by its log, and flushing it checkpoints the windows before log segments go. */
void stele_sealed_tsdb_hooks(stele_sealed *s, stele_tsdb_options *o);
/* Binds the opened store (after stele_tsdb_open), restores the devices' last-seen times
 * into the registry, and promotes keys whose rotation the recovered windows show
 * completed (a failed promotion is reported on stderr, not returned: ingestion refuses
 * the old key from the windows anyway). Returns 0. */
int stele_sealed_attach(stele_sealed *s, stele_tsdb *db);

typedef struct {
    char device[STELE_DEVICE_ID_MAX + 1]; /* as claimed in the frame ("" if unreadable) */
    uint64_t counter;                     /* as claimed (0 if unreadable) */
    stele_frame_status status;
} stele_frame_result;

/* Ingests a body of frames back to back. results (capacity cap) gets one entry per
 * frame, in order (*n of them); a frame that is delimited but does not parse is one
 * `malformed` entry, and where the body cannot be split any further (a length that runs
 * past the body, a frame over STELE_FRAME_MAX_BYTES, bytes that are no frame) the rest
 * of it is one `malformed` entry. Returns 0 once every accepted frame is durable;
 * -E2BIG when the body holds more than cap (or STELE_SEALED_MAX_FRAMES) entries (nothing
 * stored); -EINVAL before stele_sealed_attach; -EAGAIN when the store is overloaded and
 * -EIO (or the log's error) when it failed — then nothing of the request was
 * acknowledged, no window changed, and *n is 0. */
int stele_sealed_ingest(stele_sealed *s, const uint8_t *body, size_t len,
                        stele_frame_result *results, size_t cap, size_t *n);

/* Returns once no frame of this device that was checked before the call is still in
 * flight: after a revoke or quarantine, call it before acknowledging, so every frame
 * answered afterwards saw the new state. (It waits for every request in flight when
 * called, whatever its devices: at most one log fsync, and revocations are rare.) */
void stele_sealed_barrier(stele_sealed *s, const char *device_id);

/* A rejected-frame summary for the audit trail: `count` frames of one device (as
 * claimed) refused for one reason in [start_ns, end_ns). */
typedef struct {
    char device[STELE_DEVICE_ID_MAX + 1];
    stele_frame_status status;
    uint64_t count;
    int64_t start_ns, end_ns;
} stele_reject_summary;
/* Hands over (and clears) the refusals counted since the last call, one summary per
 * (device, reason), at most `cap` (the rest stay for the next call; devices beyond a
 * fixed table size are folded into device "*"). Memory is bounded whatever an attacker
 * sends. */
size_t stele_sealed_take_rejections(stele_sealed *s, stele_reject_summary *out, size_t cap);

typedef struct {
    uint64_t frames[STELE_FRAME_STATUSES]; /* by status */
    uint64_t points_accepted;              /* stored, in any tenant */
    uint64_t points_quarantined;           /* of which in STELE_QUARANTINE_TENANT */
    uint64_t skew_refusals;                /* clock_skew verdicts */
    uint64_t windows;                      /* (device, key) windows held */
    uint64_t checkpoints;
    uint64_t shape_cache_bytes; /* memory of the per-device series-handle caches */
} stele_sealed_stats;
void stele_sealed_get_stats(stele_sealed *s, stele_sealed_stats *st);

#endif
