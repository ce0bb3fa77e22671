/*
 * block.h — immutable block files: the compressed, checksummed form of sealed data.
 * Format at the top of block.c and in docs/format/block.md.
 *
 * A block holds samples of many series within one time partition, written once (by a
 * head flush or a compaction) and never modified. Blocks carry a sequence range
 * [seq_lo, seq_hi]: a flush block has seq_lo = seq_hi = a fresh number; a compaction
 * output spans its inputs' range. When two blocks disagree about a timestamp, the one
 * with the higher seq_hi holds the later write. A block whose range lies inside
 * another block's range of the same partition is a leftover input of a compaction
 * interrupted after its output became durable; it is deleted on open.
 *
 * Threads: a block is immutable; reading needs a per-reader block_cache. Blocks are
 * reference counted; the last unref closes the file (and deletes it if retired).
 */
#ifndef STELE_TSDB_BLOCK_H
#define STELE_TSDB_BLOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "stele/io.h"
#include "stele/tier.h"

#define BLOCK_PATH_MAX 4096

typedef struct {
    uint64_t id;
    uint32_t npoints;
    uint32_t group;
    uint32_t offset; /* within the group's decompressed bytes */
    uint32_t ts_len;
    uint32_t val_len;
    int64_t mint;
    int64_t maxt;
} block_entry;

typedef struct {
    uint64_t file_offset;
    uint32_t comp_len;
    uint32_t raw_len;
    uint64_t checksum;
} block_group;

typedef struct tsdb_block {
    stele_io *io;
    stele_file *f;
    char path[BLOCK_PATH_MAX];
    uint64_t seq_lo, seq_hi;
    uint32_t level;
    int64_t partition;  /* start of its time partition, ns */
    int64_t resolution; /* 0: raw samples; else a tier block of buckets of this width */
    int64_t mint, maxt; /* of samples; for a tier block, of bucket starts */
    uint64_t npoints;
    uint64_t file_size;
    block_entry *entries; /* sorted by id */
    uint64_t nentries;
    block_group *groups;
    uint32_t ngroups;
    int refs;     /* atomic */
    bool retired; /* delete the file at the last unref */
} tsdb_block;

typedef struct {
    stele_io *io;
    const char *dir;
    uint64_t seq_lo, seq_hi;
    uint32_t level;
    int64_t partition;
    int64_t resolution; /* 0: raw samples (format version 1); else buckets (version 2) */
    int zstd_level;
} block_write_params;

typedef struct block_writer block_writer;

/* Starts a block in a temporary file. */
int block_writer_begin(const block_write_params *p, block_writer **out);
/* Adds one series (each id once, in any order — put similar series next to each other
 * for compression; ts strictly increasing, n ≥ 1). */
int block_writer_add(block_writer *w, uint64_t id, const uint8_t *key, size_t key_len,
                     const int64_t *ts, const double *v, size_t n);
/* Adds one series of a tier block: buckets b[0..n) of the writer's resolution, starts
 * strictly increasing (n ≥ 1). */
int block_writer_add_buckets(block_writer *w, uint64_t id, const uint8_t *key, size_t key_len,
                             const stele_bucket *b, size_t n);
/* Points (buckets, in a tier block) added so far. */
uint64_t block_writer_points(const block_writer *w);
/* Completes the file, fsyncs it, renames it into place and fsyncs the directory;
 * then frees the writer. name (≥ 64 bytes) receives the file name. On error the
 * temporary file is removed. */
int block_writer_finish(block_writer *w, char *name, size_t cap);
/* Abandons the block; accepts NULL. */
void block_writer_abort(block_writer *w);

/* File name of a block: "b<seq_lo>-<seq_hi>.blk", 20-digit zero-padded numbers. */
void block_file_name(uint64_t seq_lo, uint64_t seq_hi, char *buf, size_t cap);
/* Parses such a name; 0 or -EINVAL. */
int block_parse_name(const char *name, uint64_t *seq_lo, uint64_t *seq_hi);

/* Called for each series while opening, for rebuilding the index; non-zero aborts. */
typedef int (*block_key_fn)(void *ctx, uint64_t id, const uint8_t *key, size_t len);

/* Opens and validates header, footer and index (and, if verify_groups, the checksum of
 * every compressed group). err names the file and the problem. */
int block_open(stele_io *io, const char *path, bool verify_groups, block_key_fn fn, void *ctx,
               tsdb_block **out, char *err, size_t errcap);
void block_ref(tsdb_block *b);
void block_unref(tsdb_block *b);
/* The entries in the order their data lies in the file (group, then offset): reading
 * series in this order decompresses each group once, where id order would decompress a
 * group per series. *out malloc'd (b->nentries pointers). */
int block_entries_in_file_order(const tsdb_block *b, const block_entry ***out);
/* The entry for series id, or NULL. */
const block_entry *block_find(const tsdb_block *b, uint64_t id);

typedef struct {
    const tsdb_block *block;
    uint32_t group;
    uint8_t *raw;
    size_t cap;
    size_t len;
    uint8_t *comp;
    size_t comp_cap;
} block_cache;

void block_cache_free(block_cache *c);
/* Decodes a series into ts/v (room for e->npoints each). -EBADMSG on damage. */
int block_read_series(const tsdb_block *b, const block_entry *e, block_cache *c, int64_t *ts,
                      double *v);

/* Decodes a tier block's series into out (room for e->npoints). -EBADMSG on damage
 * (including buckets that break the aggregate's invariants). */
int block_read_buckets(const tsdb_block *b, const block_entry *e, block_cache *c,
                       stele_bucket *out);
/* As block_read_buckets, decoding only the columns of `fields` (STELE_BUCKET_*); the
 * other fields are left zero. */
int block_read_bucket_fields(const tsdb_block *b, const block_entry *e, block_cache *c,
                             stele_bucket *out, unsigned fields);

#endif
