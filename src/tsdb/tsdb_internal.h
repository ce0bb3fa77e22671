/*
 * tsdb_internal.h — the engine's shared state, for the files of src/tsdb only.
 *
 * Locks, in the order they may be taken:
 *   maint_mu   serializes flush, compaction and retention (one maintenance at a time)
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

#define TSDB_PATH_MAX 4096
/* Log record types. */
#define TSDB_RECORD_WRITE 1

typedef struct {
    int refs; /* atomic */
    size_t n;
    tsdb_block **blocks; /* ascending seq_hi */
} block_set;

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

    pthread_mutex_t apply_mu;
    pthread_cond_t apply_cond;
    uint64_t applied_ticket;

    pthread_mutex_t maint_mu;
    uint64_t next_seq;

    pthread_mutex_t bg_mu;
    pthread_cond_t bg_cond;
    pthread_t bg_thread;
    bool bg_started;
    bool bg_stop;
    bool bg_kick;

    int health; /* atomic; 0 or the error that stopped writes */

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

#endif
