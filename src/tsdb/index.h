/*
 * index.h — the series index: canonical key → series, id → series, and inverted
 * postings (tenant, label name, label value) → sorted series ids for label matchers.
 *
 * Series ids are assigned in increasing order, so appending to a posting list keeps it
 * sorted, and set operations are linear merges. Series are never removed while the
 * process runs (a series whose data all expired costs its key and postings until the
 * next restart, which rebuilds the index from what is on disk).
 *
 * Threads: one rwlock; lookups and matching take it shared, creation exclusive.
 */
#ifndef STELE_TSDB_INDEX_H
#define STELE_TSDB_INDEX_H

#include <pthread.h>
#include <stdint.h>

#include "common/hashmap.h"
#include "stele/tsdb.h"

typedef struct tsdb_series {
    uint64_t id;
    uint64_t hash;
    uint64_t wal_def_segment; /* segment holding its definition; tsdb append lock */
    uint32_t key_len;
    uint8_t key[]; /* canonical series key (series_key.h) */
} tsdb_series;

typedef struct {
    pthread_rwlock_t lock;
    hashmap by_key;      /* key → tsdb_series */
    tsdb_series **by_id; /* index = id; NULL where unused */
    uint64_t id_cap;
    uint64_t next_id; /* ids start at 1 */
    uint64_t count;
    hashmap postings; /* "tenant\0name\0value" → posting_list */
    hashmap names;    /* "tenant\0name" → name_values */
    hashmap tenants;  /* "tenant" → posting_list of all its series */
} tsdb_index;

int index_init(tsdb_index *ix);
void index_free(tsdb_index *ix);

/* Finds or creates the series for key. *out borrowed (lives as long as the index). */
int index_get_or_create(tsdb_index *ix, const uint8_t *key, size_t len, uint64_t hash,
                        tsdb_series **out);
/* Recovery: registers key under a given id. 0 if new or already registered with the
 * same id and key; -EBADMSG if the id or key is taken by something else; -EINVAL for
 * an invalid key. */
int index_register(tsdb_index *ix, uint64_t id, const uint8_t *key, size_t len);
/* The series for key if it exists, else NULL (never creates). */
tsdb_series *index_lookup(tsdb_index *ix, const uint8_t *key, size_t len, uint64_t hash);
/* Number of series of a tenant. */
uint64_t index_tenant_series(tsdb_index *ix, const char *tenant, size_t tenant_len);
/* Sorts every posting list: recovery registers series out of id order (blocks in key
 * order, concurrent writers in log order), and matching needs sorted lists. */
void index_sort_postings(tsdb_index *ix);
/* Series by id, or NULL. */
tsdb_series *index_get(tsdb_index *ix, uint64_t id);
uint64_t index_count(tsdb_index *ix);
/* The largest id handed out or registered so far (0 if none). */
uint64_t index_max_id(tsdb_index *ix);

/* Sorted ids of tenant's series matching all matchers. *ids malloc'd (caller frees).
 * -EINVAL with a message in err for a bad regex or an empty matcher list. */
int index_match(tsdb_index *ix, const char *tenant, const stele_matcher *m, size_t nm,
                uint64_t **ids, size_t *nids, char *err, size_t errcap);

#endif
