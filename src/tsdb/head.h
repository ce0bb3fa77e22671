/*
 * head.h — the in-memory head: the samples written since the last flush, per series,
 * as plain (timestamp, value) arrays in write order.
 *
 * Design choice: raw 16-byte samples rather than compressed in-memory chunks. Inserts
 * are an array append (the ingestion hot path), reads and flushes need no decoding, and
 * memory is bounded by the head's point cap (stele_tsdb_options.head_max_points × 16
 * bytes plus array slack), which is what an operator sizes. Out-of-order and repeated
 * timestamps are appended too; readers and the flusher sort and deduplicate (later
 * write wins), so late data costs nothing on the write path.
 *
 * Threads: the head's rwlock guards it; the tsdb applies writes under the write lock in
 * log order, readers copy series under the read lock. A frozen head (being flushed) is
 * immutable and read without locks. Heads are reference counted so readers can keep
 * one alive after a flush has retired it.
 */
#ifndef STELE_TSDB_HEAD_H
#define STELE_TSDB_HEAD_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct {
    int64_t *ts;
    double *v;
    uint32_t n;
    uint32_t cap;
    bool sorted; /* strictly increasing timestamps so far */
} head_series;

typedef struct tsdb_head {
    pthread_rwlock_t lock;
    head_series **by_id; /* index = series id */
    uint64_t id_cap;
    uint64_t *ids; /* ids present, in first-write order */
    uint64_t nids;
    uint64_t ids_cap;
    uint64_t points;
    int64_t mint, maxt;
    int64_t created_mono_ns;
    uint64_t last_ticket; /* last write ticket applied here (tsdb append lock) */
    int refs;             /* atomic */
} tsdb_head;

tsdb_head *head_create(void);
void head_ref(tsdb_head *h);
/* Drops a reference; frees the head at zero. Accepts NULL. */
void head_unref(tsdb_head *h);
/* Appends one sample (caller holds the write lock). */
int head_append(tsdb_head *h, uint64_t id, int64_t ts, double v);
/* Copies series id's samples within [mint, maxt], sorted and deduplicated, into
 * malloc'd arrays (caller frees both; NULL/0 when none). Takes the read lock unless
 * `locked`. */
int head_copy(tsdb_head *h, uint64_t id, int64_t mint, int64_t maxt, bool locked, int64_t **ts,
              double **v, size_t *n);
/* Frozen heads only: sorts and deduplicates a series in place; *out = it, or NULL when
 * the head has no such series. -ENOMEM. */
int head_series_prepare(tsdb_head *h, uint64_t id, head_series **out);

#endif
