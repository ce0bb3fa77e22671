/*
 * tsdb_internal.h — the engine's shared state, for the files of src/tsdb only.
 *
 * Locks, in the order they may be taken:
 *   maint_mu   serializes flush, compaction and retention (one maintenance at a time)
 *   tier_mu    serializes what changes the tiers: build steps, tier compaction and
 *              retention, the tiers/state file (tier_store.c)
 *   append_mu  serializes log appends, ticket issue and head swaps
 *   view_mu    guards the (active, frozen, blocks) pointers readers snapshot
 *   apply_mu   orders head application by ticket
 *   head lock, index lock  leaf locks
 * No lock is held across an fsync except append_mu during a log rotation (one fsync,
 * once per flush).
 */
#ifndef STELE_TSDB_INTERNAL_H
#define STELE_TSDB_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "stele/tsdb.h"
#include "stele/wal.h"
#include "tsdb/block.h"
#include "tsdb/head.h"
#include "tsdb/index.h"
#include "tsdb/samples.h"

#define TSDB_PATH_MAX 4096
/* Log record types (payloads: the top of tsdb.c, docs/format/wal.md). */
#define TSDB_RECORD_WRITE 1
#define TSDB_RECORD_WRITE_ATTACHED 2 /* a write whose batch carries an attachment */

/* A write record's payload split into the attachment (type 2 only) and the body shared by
 * both types (definitions, then samples). */
typedef struct {
    bool attached;
    const uint8_t *attachment;
    size_t attachment_len;
    const uint8_t *body;
    size_t body_len;
} tsdb_record;
/* -EBADMSG for an unknown type or an attachment longer than the payload. */
int tsdb_record_split(uint32_t type, const uint8_t *payload, size_t len, tsdb_record *out);

typedef struct {
    int refs; /* atomic */
    size_t n;
    tsdb_block **blocks; /* ascending seq_hi */
} block_set;

/* A downsampled tier's configuration and counters. */
typedef struct {
    int64_t resolution, retention;
    int64_t partition_ns; /* tier blocks never span one of these */
    char dir[TSDB_PATH_MAX + 64];
    uint64_t builds, retention_drops; /* atomic */
} tier_conf;

/* The published state of the tiers (immutable; replaced whole under view_mu). */
typedef struct {
    int refs;                                    /* atomic */
    block_set *blocks[STELE_MAX_TIERS];          /* per downsampled tier, ascending seq_hi */
    uint64_t built_through;                      /* raw blocks with seq_hi ≤ this are reflected */
    uint64_t committed;                          /* highest tier block seq the state file records */
    int64_t expired_before[STELE_MAX_TIERS + 1]; /* raw first; INT64_MIN = never */
} tier_view;

struct stele_tsdb {
    stele_tsdb_options opts;
    char dir[TSDB_PATH_MAX];
    char wal_dir[TSDB_PATH_MAX];
    char blocks_dir[TSDB_PATH_MAX];
    stele_wal *wal;
    tsdb_index ix;

    pthread_mutex_t append_mu;
    uint64_t next_ticket;
    uint64_t active_points;  /* points appended to the active head (append_mu) */
    uint64_t frozen_segment; /* first log segment not covered by frozen + blocks */

    pthread_mutex_t view_mu;
    tsdb_head *active;
    tsdb_head *frozen; /* being flushed, or NULL */
    block_set *blocks;
    tier_view *tiers;

    char tiers_dir[TSDB_PATH_MAX + 16];
    size_t ntiers;
    tier_conf tier[STELE_MAX_TIERS];
    int64_t unbuilt_since_ns; /* atomic; when the oldest unbuilt flush was published, or 0 */
    int64_t replay_min_ts;    /* log points older than this are not replayed (expired) */

    pthread_mutex_t apply_mu;
    pthread_cond_t apply_cond;
    uint64_t applied_ticket;

    pthread_mutex_t maint_mu;
    uint64_t next_seq; /* atomic: flushes and tier builds take numbers concurrently */

    pthread_mutex_t tier_mu;
    pthread_cond_t tier_cond; /* kicks the tier builder (with tier_kick, under tier_mu) */
    pthread_t tier_thread;
    bool tier_started, tier_stop, tier_kick;

    pthread_mutex_t bg_mu;
    pthread_cond_t bg_cond;
    pthread_t bg_thread;
    bool bg_started;
    bool bg_stop;
    bool bg_kick;

    int health; /* atomic; 0 or the error that stopped writes */
    /* atomic: a record with an attachment was replayed or written. Without a
     * log_checkpoint hook, segments are then never deleted (their attachments' state
     * would be lost with them). */
    bool saw_attachment;

    /* counters, atomic */
    uint64_t points_written;
    uint64_t flushes;
    uint64_t compactions;
    uint64_t retention_drops;
    uint64_t rejected_overload;
};

int64_t tsdb_now(stele_tsdb *db);
block_set *tsdb_blocks_acquire(stele_tsdb *db);
void block_set_release(block_set *s);
/* The series of ids sorted by key — the order blocks store them in, so reading in it
 * walks every block's groups sequentially. *out malloc'd. */
int series_in_key_order(stele_tsdb *db, const uint64_t *ids, size_t n, tsdb_series ***out);
/* Snapshot for readers: references to the heads and the block set. */
void tsdb_view_acquire(stele_tsdb *db, tsdb_head **active, tsdb_head **frozen, block_set **blocks);

/* As tsdb_view_acquire, plus the tier view, all from one instant. */
void tsdb_view_acquire_all(stele_tsdb *db, tsdb_head **active, tsdb_head **frozen,
                           block_set **blocks, tier_view **tiers);
/* Opens every block of a directory into *out (removing temporary files and leftovers of
 * interrupted compactions); every block must have this resolution (0 = raw). Series
 * keys are registered in the index. */
int tsdb_load_block_dir(stele_tsdb *db, const char *dir, int64_t resolution,
                        stele_tsdb_recovery *rec, block_set **out, char *err, size_t errcap);
/* One compaction run among blocks of a set (partitions of width partition_ns; blocks
 * with seq_hi > max_seq are left alone). 1 and run/nrun filled if there is one. */
int tsdb_compaction_pick(stele_tsdb *db, const block_set *s, int64_t partition_ns, uint64_t max_seq,
                         tsdb_block **run, size_t *nrun);
block_set *block_set_derive(const block_set *base, tsdb_block **remove, size_t nremove,
                            tsdb_block **add, size_t nadd);

/* Tiers (tier_store.c). The durable state file (format at the top of tier_store.c). */
typedef struct {
    uint64_t built_through, committed;
    size_t ntiers;
    int64_t expired_before[STELE_MAX_TIERS + 1];
    int64_t resolution[STELE_MAX_TIERS];
} tier_state;
/* Reads and validates a state file; -ENOENT if missing, -EBADMSG with *why. */
int tier_state_load(stele_io *io, const char *path, tier_state *st, const char **why);
void tier_name(int64_t resolution, char *buf, size_t cap);
int tier_store_open(stele_tsdb *db, stele_tsdb_recovery *rec, char *err, size_t errcap);
tier_view *tier_view_acquire(stele_tsdb *db);
void tier_view_release(tier_view *v);
/* Builds tiers for flushed raw blocks: one bounded step, or (all) until caught up;
 * *done (optional) tells whether anything flushed is left unbuilt. Takes tier_mu per
 * step; never maint_mu, so flushes and compaction go on meanwhile. */
int tier_build(stele_tsdb *db, bool all, bool *done);
/* Retention and compaction of tier blocks (takes tier_mu). */
int tier_maintain(stele_tsdb *db);
/* Highest raw seq reflected in the tiers (UINT64_MAX without tiers). */
uint64_t tier_built_through(stele_tsdb *db);
/* Raw blocks ending before this may be dropped (see tier_store.c on why it lags). */
int64_t tier_raw_drop_cutoff(stele_tsdb *db, int64_t now);
/* The oldest timestamp a replayed log point may have: ceil(raw expiry) to R. */
int64_t tier_replay_min_ts(stele_tsdb *db);
/* The oldest timestamp a write may have. */
int64_t tier_accept_min(stele_tsdb *db, int64_t now);
/* Records durably that raw data before expired_before is gone. */
int tier_record_raw_expiry(stele_tsdb *db, int64_t expired_before);
void tier_get_stats(stele_tsdb *db, stele_tsdb_stats *st);

/* Reads series merged across a snapshot's blocks and heads (later writes winning). */
typedef struct {
    tsdb_head *active, *frozen; /* borrowed; either may be NULL (blocks only) */
    block_set *blocks;          /* borrowed */
    block_cache *caches;        /* one per block */
    sample_buf acc, out, tmp;
} raw_reader;
int raw_reader_init(raw_reader *r, tsdb_head *active, tsdb_head *frozen, block_set *blocks);
void raw_reader_free(raw_reader *r);
/* r->acc receives the samples of series id in [mint, maxt]. err names a damaged file. */
int raw_reader_read(raw_reader *r, uint64_t id, int64_t mint, int64_t maxt, char *err,
                    size_t errcap);

#endif
