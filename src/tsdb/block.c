/*
 * block.c — writing and reading block files.
 *
 * ON-DISK FORMAT (little-endian; docs/format/block.md has the same with a diagram)
 *
 *   header, 64 bytes
 *     0   8  magic "STLBLK\0\1"
 *     8   4  format version (1: raw samples; 2: tier buckets)
 *     12  4  compaction level (0 = written by a head flush or a tier build)
 *     16  8  seq_lo
 *     24  8  seq_hi
 *     32  8  partition start (ns, signed)
 *     40  8  version 2: bucket resolution (ns, > 0); version 1: zero
 *     48  8  reserved, zero
 *     56  8  XXH3-64 of bytes 0..56
 *   groups: zstd frames, back to back. Each holds, for consecutive series in id order,
 *     their timestamp encoding then their value encoding (codec.h), concatenated.
 *     Version 2 (tier blocks): the "timestamps" are the bucket starts and the "values"
 *     are nine columns, each a varint length then a value encoding, in this order:
 *     count, sum (compensated: sum + compensation, one rounding), min, max, first,
 *     last, first_ts − start, last_ts − start, resets (stele/tier.h). Columns compress
 *     apart far better than interleaved records (counts and offsets are nearly
 *     constant); the compensation is folded into the sum because on its own it is
 *     rounding noise that no codec compresses, and a decimal sum stays decimal.
 *     Grouping ~256 KiB of encodings lets zstd find redundancy across series (same
 *     decimals, same regular intervals) while a read decompresses little it does not
 *     need.
 *   index: one zstd frame holding
 *     varint nseries, zigzag mint, zigzag maxt, varint npoints,
 *     varint ngroups, per group: varint file offset, varint compressed length,
 *       varint raw length, u64 XXH3-64 of the compressed bytes;
 *     per series (ids ascending): varint id delta (first: the id), varint key length,
 *       key (series_key.h), varint npoints, zigzag mint, varint maxt - mint,
 *       varint group, varint offset in group, varint timestamp bytes, varint value bytes
 *   footer, 48 bytes
 *     0   8  index file offset
 *     8   8  index compressed length
 *     16  8  index raw length
 *     24  8  XXH3-64 of the compressed index
 *     32  8  XXH3-64 of footer bytes 0..32
 *     40  8  magic "STLBEND\1"
 *
 * INVARIANTS
 *  - Written to "<name>.tmp", fsync'd, renamed, directory fsync'd: a block file under
 *    its final name is always complete.
 *  - Every byte read is covered by a checksum before it is interpreted; decoders are
 *    bounds-checked and the index is validated (ids ascending, offsets inside their
 *    group, counts consistent), so damage is reported as -EBADMSG, never read as data.
 */
#include "tsdb/block.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>
#include <zstd.h>

#include "common/bytes.h"
#include "stele/codec.h"
#include "stele/tsdb.h"
#include "stele/varint.h"

#define BLOCK_MAGIC "STLBLK\0\1"
#define BLOCK_FOOTER_MAGIC "STLBEND\1"
#define BLOCK_VERSION 1u
#define BLOCK_VERSION_TIER 2u
#define BLOCK_TIER_COLUMNS 9
#define BLOCK_HEADER_SIZE 64u
#define BLOCK_FOOTER_SIZE 48u
/* Uncompressed bytes per group: large enough for zstd to find cross-series
 * redundancy, small enough that reading one series decompresses little else. */
#define BLOCK_GROUP_TARGET (256u << 10)
/* Bounds a reader trusts before checksums are verified: no group or index in a valid
 * file comes near these, so larger values mean damage. */
#define BLOCK_MAX_GROUP_RAW (64u << 20)
#define BLOCK_MAX_INDEX_RAW (1u << 30)
/* A series with more points than this in one block is split by the writer's callers;
 * the index stores npoints as u32. */
#define BLOCK_MAX_SERIES_POINTS (1u << 30)

static_assert(sizeof(BLOCK_MAGIC) - 1 == 8, "magic is 8 bytes");
static_assert(sizeof(BLOCK_FOOTER_MAGIC) - 1 == 8, "footer magic is 8 bytes");

typedef struct {
    uint8_t *data;
    size_t len;
    size_t cap;
} byte_buffer;

static int buf_reserve(byte_buffer *b, size_t extra)
{
    if (b->cap - b->len >= extra)
        return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap - b->len < extra)
        cap *= 2;
    uint8_t *d = realloc(b->data, cap);
    if (!d)
        return -ENOMEM;
    b->data = d;
    b->cap = cap;
    return 0;
}

static void buf_varint(byte_buffer *b, uint64_t v)
{
    b->len += stele_varint_put(b->data + b->len, v);
}

typedef struct {
    block_entry e;
    uint64_t key_off;
    uint32_t key_len;
} pending_entry;

static int pending_entry_cmp(const void *a, const void *b)
{
    const pending_entry *x = a, *y = b;
    return x->e.id < y->e.id ? -1 : x->e.id > y->e.id;
}

struct block_writer {
    block_write_params p;
    char dir[BLOCK_PATH_MAX];
    char tmp_path[BLOCK_PATH_MAX];
    stele_file *f;
    uint64_t file_off;
    byte_buffer group;  /* raw bytes of the open group */
    byte_buffer groups; /* encoded group table */
    uint32_t ngroups;
    pending_entry *entries; /* in the order added; sorted by id at finish */
    uint64_t nseries, entries_cap;
    byte_buffer keys; /* series keys, back to back */
    uint64_t npoints;
    int64_t mint, maxt;
    byte_buffer comp;    /* zstd output */
    byte_buffer scratch; /* codec output */
    ZSTD_CCtx *zctx;
};

void block_file_name(uint64_t seq_lo, uint64_t seq_hi, char *buf, size_t cap)
{
    snprintf(buf, cap, "b%020" PRIu64 "-%020" PRIu64 ".blk", seq_lo, seq_hi);
}

int block_parse_name(const char *name, uint64_t *seq_lo, uint64_t *seq_hi)
{
    if (strlen(name) != 1 + 20 + 1 + 20 + 4 || name[0] != 'b' || name[21] != '-' ||
        strcmp(name + 42, ".blk") != 0)
        return -EINVAL;
    uint64_t v[2] = {0, 0};
    for (int k = 0; k < 2; k++) {
        const char *p = name + 1 + k * 21;
        for (int i = 0; i < 20; i++) {
            if (p[i] < '0' || p[i] > '9')
                return -EINVAL;
            v[k] = v[k] * 10 + (uint64_t)(p[i] - '0');
        }
    }
    *seq_lo = v[0];
    *seq_hi = v[1];
    return v[0] <= v[1] ? 0 : -EINVAL;
}

int block_writer_begin(const block_write_params *p, block_writer **out)
{
    uint8_t header[BLOCK_HEADER_SIZE] = {0};
    char name[64];
    block_writer *w = calloc(1, sizeof(*w));
    int rc = -ENOMEM;
    if (!w)
        return -ENOMEM;
    w->p = *p;
    snprintf(w->dir, sizeof(w->dir), "%s", p->dir);
    w->p.dir = w->dir;
    w->mint = INT64_MAX;
    w->maxt = INT64_MIN;
    w->zctx = ZSTD_createCCtx();
    if (!w->zctx)
        goto fail;
    ZSTD_CCtx_setParameter(w->zctx, ZSTD_c_compressionLevel, p->zstd_level ? p->zstd_level : 3);
    block_file_name(p->seq_lo, p->seq_hi, name, sizeof(name));
    snprintf(w->tmp_path, sizeof(w->tmp_path), "%s/%s.tmp", p->dir, name);
    rc = stele_io_open(p->io, w->tmp_path, STELE_IO_READWRITE | STELE_IO_CREATE | STELE_IO_TRUNCATE,
                       &w->f);
    if (rc)
        goto fail;
    memcpy(header, BLOCK_MAGIC, 8);
    put_le32(header + 8, p->resolution ? BLOCK_VERSION_TIER : BLOCK_VERSION);
    put_le32(header + 12, p->level);
    put_le64(header + 16, p->seq_lo);
    put_le64(header + 24, p->seq_hi);
    put_le64(header + 32, (uint64_t)p->partition);
    put_le64(header + 40, (uint64_t)p->resolution);
    put_le64(header + 56, XXH3_64bits(header, 56));
    rc = stele_io_pwrite(w->f, header, sizeof(header), 0);
    if (rc)
        goto fail;
    w->file_off = BLOCK_HEADER_SIZE;
    *out = w;
    return 0;
fail:
    block_writer_abort(w);
    return rc;
}

/* Compresses the open group and writes it. */
static int block_writer_seal_group(block_writer *w)
{
    if (w->group.len == 0)
        return 0;
    size_t bound = ZSTD_compressBound(w->group.len);
    w->comp.len = 0;
    int rc = buf_reserve(&w->comp, bound);
    if (rc)
        return rc;
    size_t n = ZSTD_compress2(w->zctx, w->comp.data, bound, w->group.data, w->group.len);
    if (ZSTD_isError(n))
        return -EIO;
    rc = stele_io_pwrite(w->f, w->comp.data, n, w->file_off);
    if (rc)
        return rc;
    rc = buf_reserve(&w->groups, 3 * STELE_VARINT_MAX + 8);
    if (rc)
        return rc;
    buf_varint(&w->groups, w->file_off);
    buf_varint(&w->groups, n);
    buf_varint(&w->groups, w->group.len);
    put_le64(w->groups.data + w->groups.len, XXH3_64bits(w->comp.data, n));
    w->groups.len += 8;
    w->file_off += n;
    w->ngroups++;
    w->group.len = 0;
    return 0;
}

static int block_writer_add_encoded(block_writer *w, uint64_t id, const uint8_t *key,
                                    size_t key_len, const int64_t *ts, size_t n, size_t ts_len,
                                    size_t val_len);

int block_writer_add(block_writer *w, uint64_t id, const uint8_t *key, size_t key_len,
                     const int64_t *ts, const double *v, size_t n)
{
    if (n == 0 || n > BLOCK_MAX_SERIES_POINTS || id == 0 || key_len > UINT32_MAX ||
        w->p.resolution != 0)
        return -EINVAL;
    size_t need = stele_ts_encode_bound(n) + stele_values_encode_bound(n);
    w->scratch.len = 0;
    int rc = buf_reserve(&w->scratch, need);
    if (rc)
        return rc;
    size_t ts_len = 0, val_len = 0;
    rc = stele_ts_encode(ts, n, w->scratch.data, w->scratch.cap, &ts_len);
    if (rc)
        return rc;
    rc = stele_values_encode(v, n, w->scratch.data + ts_len, w->scratch.cap - ts_len, &val_len);
    if (rc)
        return rc;
    return block_writer_add_encoded(w, id, key, key_len, ts, n, ts_len, val_len);
}

/* Appends the encodings in w->scratch (ts_len + val_len bytes) as series id. */
static int block_writer_add_encoded(block_writer *w, uint64_t id, const uint8_t *key,
                                    size_t key_len, const int64_t *ts, size_t n, size_t ts_len,
                                    size_t val_len)
{
    int rc;
    if (w->group.len && w->group.len + ts_len + val_len > BLOCK_GROUP_TARGET) {
        rc = block_writer_seal_group(w);
        if (rc)
            return rc;
    }
    uint32_t offset = (uint32_t)w->group.len;
    rc = buf_reserve(&w->group, ts_len + val_len);
    if (rc == 0)
        rc = buf_reserve(&w->keys, key_len);
    if (rc)
        return rc;
    if (w->nseries == w->entries_cap) {
        uint64_t cap = w->entries_cap ? w->entries_cap * 2 : 256;
        pending_entry *e = realloc(w->entries, cap * sizeof(*e));
        if (!e)
            return -ENOMEM;
        w->entries = e;
        w->entries_cap = cap;
    }
    memcpy(w->group.data + w->group.len, w->scratch.data, ts_len + val_len);
    w->group.len += ts_len + val_len;
    pending_entry *pe = &w->entries[w->nseries++];
    pe->e = (block_entry){.id = id,
                          .npoints = (uint32_t)n,
                          .group = w->ngroups,
                          .offset = offset,
                          .ts_len = (uint32_t)ts_len,
                          .val_len = (uint32_t)val_len,
                          .mint = ts[0],
                          .maxt = ts[n - 1]};
    pe->key_off = w->keys.len;
    pe->key_len = (uint32_t)key_len;
    memcpy(w->keys.data + w->keys.len, key, key_len);
    w->keys.len += key_len;
    w->npoints += n;
    if (ts[0] < w->mint)
        w->mint = ts[0];
    if (ts[n - 1] > w->maxt)
        w->maxt = ts[n - 1];
    return 0;
}

/* The value of column k of bucket b (see the format above). */
static double bucket_column(const stele_bucket *b, int k)
{
    switch (k) {
    case 0:
        return (double)b->count;
    case 1:
        return isinf(b->sum) ? b->sum : b->sum + b->sum_c; /* as the sum is finished */
    case 2:
        return b->min;
    case 3:
        return b->max;
    case 4:
        return b->first;
    case 5:
        return b->last;
    case 6:
        return (double)(b->first_ts - b->start);
    case 7:
        return (double)(b->last_ts - b->start);
    default:
        return b->resets;
    }
}

int block_writer_add_buckets(block_writer *w, uint64_t id, const uint8_t *key, size_t key_len,
                             const stele_bucket *b, size_t n)
{
    if (n == 0 || n > BLOCK_MAX_SERIES_POINTS || id == 0 || key_len > UINT32_MAX ||
        w->p.resolution <= 0)
        return -EINVAL;
    int64_t *starts = malloc(n * sizeof(*starts));
    double *col = malloc(n * sizeof(*col));
    size_t need = stele_ts_encode_bound(n) +
                  BLOCK_TIER_COLUMNS * (STELE_VARINT_MAX + stele_values_encode_bound(n));
    size_t ts_len = 0, val_len = 0;
    int rc = starts && col ? 0 : -ENOMEM;
    w->scratch.len = 0;
    if (rc == 0)
        rc = buf_reserve(&w->scratch, need);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        starts[i] = b[i].start;
        if (b[i].start % w->p.resolution != 0 || (i && b[i].start <= b[i - 1].start))
            rc = -EINVAL;
    }
    if (rc == 0)
        rc = stele_ts_encode(starts, n, w->scratch.data, w->scratch.cap, &ts_len);
    uint8_t *p = w->scratch.data + ts_len;
    for (int k = 0; rc == 0 && k < BLOCK_TIER_COLUMNS; k++) {
        for (size_t i = 0; i < n; i++)
            col[i] = bucket_column(&b[i], k);
        /* Encode after a gap for the length prefix, then move it into place. */
        size_t len = 0;
        uint8_t *dst = p + val_len + STELE_VARINT_MAX;
        size_t room = w->scratch.cap - (size_t)(dst - w->scratch.data);
        rc = stele_values_encode(col, n, dst, room, &len);
        if (rc)
            break;
        size_t vl = stele_varint_put(p + val_len, len);
        memmove(p + val_len + vl, dst, len);
        val_len += vl + len;
    }
    if (rc == 0)
        rc = block_writer_add_encoded(w, id, key, key_len, starts, n, ts_len, val_len);
    free(starts);
    free(col);
    return rc;
}

uint64_t block_writer_points(const block_writer *w)
{
    return w->npoints;
}

int block_writer_finish(block_writer *w, char *name, size_t cap)
{
    byte_buffer index = {0};
    uint8_t footer[BLOCK_FOOTER_SIZE];
    char final_path[BLOCK_PATH_MAX + 64];
    int rc = block_writer_seal_group(w);
    if (rc)
        goto fail;
    /* Readers look series up by id: the table is in id order, whatever order the data
     * groups were written in (callers group similar series for compression). */
    if (w->nseries)
        qsort(w->entries, w->nseries, sizeof(*w->entries), pending_entry_cmp);
    rc = buf_reserve(&index, 6 * STELE_VARINT_MAX + w->groups.len + w->keys.len +
                                 w->nseries * 10 * STELE_VARINT_MAX);
    if (rc)
        goto fail;
    buf_varint(&index, w->nseries);
    buf_varint(&index, stele_zigzag_encode(w->nseries ? w->mint : 0));
    buf_varint(&index, stele_zigzag_encode(w->nseries ? w->maxt : 0));
    buf_varint(&index, w->npoints);
    buf_varint(&index, w->ngroups);
    memcpy(index.data + index.len, w->groups.data, w->groups.len);
    index.len += w->groups.len;
    uint64_t last_id = 0;
    for (uint64_t i = 0; i < w->nseries; i++) {
        const pending_entry *pe = &w->entries[i];
        if (pe->e.id == last_id) {
            rc = -EINVAL; /* the same series twice */
            goto fail;
        }
        buf_varint(&index, pe->e.id - last_id);
        buf_varint(&index, pe->key_len);
        memcpy(index.data + index.len, w->keys.data + pe->key_off, pe->key_len);
        index.len += pe->key_len;
        buf_varint(&index, pe->e.npoints);
        buf_varint(&index, stele_zigzag_encode(pe->e.mint));
        buf_varint(&index, (uint64_t)pe->e.maxt - (uint64_t)pe->e.mint);
        buf_varint(&index, pe->e.group);
        buf_varint(&index, pe->e.offset);
        buf_varint(&index, pe->e.ts_len);
        buf_varint(&index, pe->e.val_len);
        last_id = pe->e.id;
    }

    size_t bound = ZSTD_compressBound(index.len);
    w->comp.len = 0;
    rc = buf_reserve(&w->comp, bound);
    if (rc)
        goto fail;
    size_t n = ZSTD_compress2(w->zctx, w->comp.data, bound, index.data, index.len);
    if (ZSTD_isError(n)) {
        rc = -EIO;
        goto fail;
    }
    rc = stele_io_pwrite(w->f, w->comp.data, n, w->file_off);
    if (rc)
        goto fail;
    put_le64(footer, w->file_off);
    put_le64(footer + 8, n);
    put_le64(footer + 16, index.len);
    put_le64(footer + 24, XXH3_64bits(w->comp.data, n));
    put_le64(footer + 32, XXH3_64bits(footer, 32));
    memcpy(footer + 40, BLOCK_FOOTER_MAGIC, 8);
    rc = stele_io_pwrite(w->f, footer, sizeof(footer), w->file_off + n);
    if (rc)
        goto fail;
    rc = stele_io_fsync(w->f);
    if (rc)
        goto fail;
    rc = stele_io_close(w->f);
    w->f = NULL;
    if (rc)
        goto fail;
    char base[64];
    block_file_name(w->p.seq_lo, w->p.seq_hi, base, sizeof(base));
    snprintf(final_path, sizeof(final_path), "%s/%s", w->dir, base);
    rc = stele_io_rename(w->p.io, w->tmp_path, final_path);
    if (rc)
        goto fail;
    w->tmp_path[0] = '\0'; /* the file now lives under its final name */
    rc = stele_io_fsync_dir(w->p.io, w->dir);
    if (rc)
        goto fail;
    snprintf(name, cap, "%s", base);
    free(index.data);
    block_writer_abort(w);
    return 0;
fail:
    free(index.data);
    block_writer_abort(w);
    return rc;
}

void block_writer_abort(block_writer *w)
{
    if (!w)
        return;
    stele_io_close(w->f);
    if (w->tmp_path[0])
        stele_io_unlink(w->p.io, w->tmp_path);
    free(w->group.data);
    free(w->groups.data);
    free(w->entries);
    free(w->keys.data);
    free(w->comp.data);
    free(w->scratch.data);
    ZSTD_freeCCtx(w->zctx);
    free(w);
}

/* ---- reading ------------------------------------------------------------------ */

void block_ref(tsdb_block *b)
{
    __atomic_add_fetch(&b->refs, 1, __ATOMIC_RELAXED);
}

void block_unref(tsdb_block *b)
{
    if (!b || __atomic_sub_fetch(&b->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    stele_io_close(b->f);
    if (b->retired)
        stele_io_unlink(b->io, b->path);
    free(b->entries);
    free(b->groups);
    free(b);
}

static int entry_file_cmp(const void *a, const void *b)
{
    const block_entry *x = *(const block_entry *const *)a, *y = *(const block_entry *const *)b;
    if (x->group != y->group)
        return x->group < y->group ? -1 : 1;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

int block_entries_in_file_order(const tsdb_block *b, const block_entry ***out)
{
    const block_entry **order = malloc((b->nentries + 1) * sizeof(*order));
    if (!order)
        return -ENOMEM;
    for (uint64_t i = 0; i < b->nentries; i++)
        order[i] = &b->entries[i];
    if (b->nentries)
        qsort(order, b->nentries, sizeof(*order), entry_file_cmp);
    *out = order;
    return 0;
}

const block_entry *block_find(const tsdb_block *b, uint64_t id)
{
    uint64_t lo = 0, hi = b->nentries;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        if (b->entries[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < b->nentries && b->entries[lo].id == id ? &b->entries[lo] : NULL;
}

#define BAD(msg)                                                                                   \
    do {                                                                                           \
        why = msg;                                                                                 \
        rc = -EBADMSG;                                                                             \
        goto fail;                                                                                 \
    } while (0)

/* Parses the decompressed index into b (validating everything). */
static int block_parse_index(tsdb_block *b, const uint8_t *p, const uint8_t *end, block_key_fn fn,
                             void *ctx, const char **whyp)
{
    const char *why = NULL;
    uint64_t nseries, zmint, zmaxt, npoints, ngroups;
    int rc = 0;
    if (stele_varint_get(&p, end, &nseries) || stele_varint_get(&p, end, &zmint) ||
        stele_varint_get(&p, end, &zmaxt) || stele_varint_get(&p, end, &npoints) ||
        stele_varint_get(&p, end, &ngroups))
        BAD("truncated index header");
    if (ngroups > (uint64_t)(end - p) || nseries > (uint64_t)(end - p) ||
        (nseries == 0) != (ngroups == 0))
        BAD("index counts inconsistent with its size");
    b->mint = stele_zigzag_decode(zmint);
    b->maxt = stele_zigzag_decode(zmaxt);
    b->npoints = npoints;
    b->groups = calloc(ngroups ? ngroups : 1, sizeof(*b->groups));
    b->entries = calloc(nseries ? nseries : 1, sizeof(*b->entries));
    if (!b->groups || !b->entries) {
        rc = -ENOMEM;
        goto fail;
    }
    b->ngroups = (uint32_t)ngroups;
    b->nentries = nseries;
    uint64_t expect_off = BLOCK_HEADER_SIZE;
    for (uint64_t i = 0; i < ngroups; i++) {
        block_group *g = &b->groups[i];
        uint64_t off, comp, raw;
        if (stele_varint_get(&p, end, &off) || stele_varint_get(&p, end, &comp) ||
            stele_varint_get(&p, end, &raw) || end - p < 8)
            BAD("truncated group table");
        if (off != expect_off || comp == 0 || comp > BLOCK_MAX_GROUP_RAW || raw == 0 ||
            raw > BLOCK_MAX_GROUP_RAW)
            BAD("group table entry out of range");
        g->file_offset = off;
        g->comp_len = (uint32_t)comp;
        g->raw_len = (uint32_t)raw;
        g->checksum = get_le64(p);
        p += 8;
        expect_off = off + comp;
    }
    uint64_t id = 0, points = 0;
    for (uint64_t i = 0; i < nseries; i++) {
        block_entry *e = &b->entries[i];
        uint64_t delta, key_len, n, zm, span, group, offset, ts_len, val_len;
        if (stele_varint_get(&p, end, &delta) || delta == 0 ||
            stele_varint_get(&p, end, &key_len) || key_len > (uint64_t)(end - p))
            BAD("truncated or unordered series table");
        id += delta;
        const uint8_t *key = p;
        p += key_len;
        if (stele_varint_get(&p, end, &n) || stele_varint_get(&p, end, &zm) ||
            stele_varint_get(&p, end, &span) || stele_varint_get(&p, end, &group) ||
            stele_varint_get(&p, end, &offset) || stele_varint_get(&p, end, &ts_len) ||
            stele_varint_get(&p, end, &val_len))
            BAD("truncated series entry");
        if (n == 0 || n > BLOCK_MAX_SERIES_POINTS || group >= ngroups ||
            offset + ts_len + val_len > b->groups[group].raw_len || ts_len == 0 || val_len == 0)
            BAD("series entry out of range");
        e->id = id;
        e->npoints = (uint32_t)n;
        e->group = (uint32_t)group;
        e->offset = (uint32_t)offset;
        e->ts_len = (uint32_t)ts_len;
        e->val_len = (uint32_t)val_len;
        e->mint = stele_zigzag_decode(zm);
        e->maxt = (int64_t)((uint64_t)e->mint + span);
        if (e->maxt < e->mint || e->mint < b->mint || e->maxt > b->maxt)
            BAD("series time range outside the block's");
        points += n;
        if (fn) {
            rc = fn(ctx, id, key, key_len);
            if (rc) {
                why = "series key rejected by the index (damaged or conflicting)";
                goto fail;
            }
        }
    }
    if (p != end)
        BAD("trailing bytes after the series table");
    if (points != npoints)
        BAD("point count does not match the series table");
    return 0;
fail:
    *whyp = why;
    return rc;
}

int block_open(stele_io *io, const char *path, bool verify_groups, block_key_fn fn, void *ctx,
               tsdb_block **out, char *err, size_t errcap)
{
    uint8_t header[BLOCK_HEADER_SIZE], footer[BLOCK_FOOTER_SIZE];
    uint8_t *comp = NULL, *raw = NULL;
    const char *why = NULL;
    int rc;
    tsdb_block *b = calloc(1, sizeof(*b));
    if (!b)
        return -ENOMEM;
    b->io = io;
    b->refs = 1;
    snprintf(b->path, sizeof(b->path), "%s", path);
    rc = stele_io_open(io, path, STELE_IO_READ, &b->f);
    if (rc) {
        why = strerror(-rc);
        goto fail;
    }
    rc = stele_io_size(b->f, &b->file_size);
    if (rc) {
        why = strerror(-rc);
        goto fail;
    }
    if (b->file_size < BLOCK_HEADER_SIZE + BLOCK_FOOTER_SIZE)
        BAD("file too short to be a block");
    rc = stele_io_pread_full(b->f, header, sizeof(header), 0);
    if (rc == 0)
        rc = stele_io_pread_full(b->f, footer, sizeof(footer), b->file_size - BLOCK_FOOTER_SIZE);
    if (rc) {
        why = strerror(-rc);
        goto fail;
    }
    if (memcmp(header, BLOCK_MAGIC, 8) != 0)
        BAD("not a Stele block (bad magic)");
    if (get_le64(header + 56) != XXH3_64bits(header, 56))
        BAD("header checksum mismatch");
    uint32_t version = get_le32(header + 8);
    if (version != BLOCK_VERSION && version != BLOCK_VERSION_TIER)
        BAD("unsupported block format version");
    b->resolution = (int64_t)get_le64(header + 40);
    if ((version == BLOCK_VERSION) != (b->resolution == 0) || b->resolution < 0)
        BAD("resolution does not match the format version");
    if (memcmp(footer + 40, BLOCK_FOOTER_MAGIC, 8) != 0 ||
        get_le64(footer + 32) != XXH3_64bits(footer, 32))
        BAD("footer damaged (checksum or magic)");
    b->level = get_le32(header + 12);
    b->seq_lo = get_le64(header + 16);
    b->seq_hi = get_le64(header + 24);
    b->partition = (int64_t)get_le64(header + 32);
    uint64_t index_off = get_le64(footer), index_comp = get_le64(footer + 8);
    uint64_t index_raw = get_le64(footer + 16);
    if (index_off < BLOCK_HEADER_SIZE || index_comp == 0 ||
        index_off + index_comp != b->file_size - BLOCK_FOOTER_SIZE || index_raw == 0 ||
        index_raw > BLOCK_MAX_INDEX_RAW)
        BAD("index position out of range");
    comp = malloc(index_comp);
    raw = malloc(index_raw);
    if (!comp || !raw) {
        rc = -ENOMEM;
        why = "out of memory";
        goto fail;
    }
    rc = stele_io_pread_full(b->f, comp, index_comp, index_off);
    if (rc) {
        why = strerror(-rc);
        goto fail;
    }
    if (XXH3_64bits(comp, index_comp) != get_le64(footer + 24))
        BAD("index checksum mismatch");
    size_t got = ZSTD_decompress(raw, index_raw, comp, index_comp);
    if (ZSTD_isError(got) || got != index_raw)
        BAD("index does not decompress to its recorded size");
    rc = block_parse_index(b, raw, raw + index_raw, fn, ctx, &why);
    if (rc)
        goto fail;
    if (b->ngroups &&
        b->groups[b->ngroups - 1].file_offset + b->groups[b->ngroups - 1].comp_len != index_off)
        BAD("groups do not end where the index starts");
    if (verify_groups) {
        for (uint32_t i = 0; i < b->ngroups; i++) {
            block_group *g = &b->groups[i];
            uint8_t *gbuf = malloc(g->comp_len);
            if (!gbuf) {
                rc = -ENOMEM;
                why = "out of memory";
                goto fail;
            }
            rc = stele_io_pread_full(b->f, gbuf, g->comp_len, g->file_offset);
            bool ok = rc == 0 && XXH3_64bits(gbuf, g->comp_len) == g->checksum;
            free(gbuf);
            if (rc) {
                why = strerror(-rc);
                goto fail;
            }
            if (!ok)
                BAD("data group checksum mismatch");
        }
    }
    free(comp);
    free(raw);
    *out = b;
    return 0;
fail:
    if (err)
        snprintf(err, errcap, "%s: %s", path, why ? why : "cannot open");
    free(comp);
    free(raw);
    block_unref(b);
    return rc ? rc : -EBADMSG;
}

void block_cache_free(block_cache *c)
{
    free(c->raw);
    free(c->comp);
    memset(c, 0, sizeof(*c));
}

static int block_load_group(const tsdb_block *b, uint32_t gi, block_cache *c)
{
    if (c->block == b && c->group == gi && c->raw)
        return 0;
    const block_group *g = &b->groups[gi];
    c->block = NULL;
    if (c->comp_cap < g->comp_len) {
        uint8_t *p = realloc(c->comp, g->comp_len);
        if (!p)
            return -ENOMEM;
        c->comp = p;
        c->comp_cap = g->comp_len;
    }
    if (c->cap < g->raw_len) {
        uint8_t *p = realloc(c->raw, g->raw_len);
        if (!p)
            return -ENOMEM;
        c->raw = p;
        c->cap = g->raw_len;
    }
    int rc = stele_io_pread_full(b->f, c->comp, g->comp_len, g->file_offset);
    if (rc)
        return rc;
    if (XXH3_64bits(c->comp, g->comp_len) != g->checksum)
        return -EBADMSG;
    size_t got = ZSTD_decompress(c->raw, g->raw_len, c->comp, g->comp_len);
    if (ZSTD_isError(got) || got != g->raw_len)
        return -EBADMSG;
    c->len = got;
    c->block = b;
    c->group = gi;
    return 0;
}

int block_read_series(const tsdb_block *b, const block_entry *e, block_cache *c, int64_t *ts,
                      double *v)
{
    int rc = block_load_group(b, e->group, c);
    if (rc)
        return rc;
    const uint8_t *p = c->raw + e->offset;
    if (stele_ts_decode(p, e->ts_len, ts, e->npoints) != 0 ||
        stele_values_decode(p + e->ts_len, e->val_len, v, e->npoints) != 0)
        return -EBADMSG;
    if (ts[0] != e->mint || ts[e->npoints - 1] != e->maxt)
        return -EBADMSG;
    for (uint32_t i = 1; i < e->npoints; i++)
        if (ts[i] <= ts[i - 1])
            return -EBADMSG;
    return 0;
}

int block_read_buckets(const tsdb_block *b, const block_entry *e, block_cache *c, stele_bucket *out)
{
    return block_read_bucket_fields(b, e, c, out, STELE_BUCKET_ALL);
}

/* The field each column belongs to. */
static const unsigned column_field[BLOCK_TIER_COLUMNS] = {
    STELE_BUCKET_COUNT, STELE_BUCKET_SUM,   STELE_BUCKET_MIN,
    STELE_BUCKET_MAX,   STELE_BUCKET_FIRST, STELE_BUCKET_LAST,
    STELE_BUCKET_FIRST, STELE_BUCKET_LAST,  STELE_BUCKET_RESETS,
};

int block_read_bucket_fields(const tsdb_block *b, const block_entry *e, block_cache *c,
                             stele_bucket *out, unsigned fields)
{
    if (b->resolution <= 0)
        return -EINVAL;
    int rc = block_load_group(b, e->group, c);
    if (rc)
        return rc;
    uint32_t n = e->npoints;
    int64_t *starts = malloc(n * sizeof(*starts));
    double *col = malloc(n * sizeof(*col));
    if (!starts || !col) {
        rc = -ENOMEM;
        goto out;
    }
    const uint8_t *p = c->raw + e->offset;
    rc = -EBADMSG;
    if (stele_ts_decode(p, e->ts_len, starts, n) != 0 || starts[0] != e->mint ||
        starts[n - 1] != e->maxt)
        goto out;
    for (uint32_t i = 0; i < n; i++) {
        if (starts[i] % b->resolution != 0 || (i && starts[i] <= starts[i - 1]))
            goto out;
        out[i] = (stele_bucket){.start = starts[i]};
    }
    const uint8_t *v = p + e->ts_len, *end = v + e->val_len;
    for (int k = 0; k < BLOCK_TIER_COLUMNS; k++) {
        uint64_t len;
        if (stele_varint_get(&v, end, &len) || len > (uint64_t)(end - v) ||
            ((fields & column_field[k]) && stele_values_decode(v, len, col, n) != 0))
            goto out;
        v += len;
        if (!(fields & column_field[k]))
            continue; /* its bytes are covered by the group checksum all the same */
        for (uint32_t i = 0; i < n; i++) {
            stele_bucket *o = &out[i];
            double x = col[i];
            switch (k) {
            case 0:
                if (!(x >= 1 && x <= 9007199254740992.0) || x != floor(x))
                    goto out;
                o->count = (uint64_t)x;
                break;
            case 1:
                o->sum = x;
                o->sum_c = 0;
                break;
            case 2:
                o->min = x;
                break;
            case 3:
                o->max = x;
                break;
            case 4:
                o->first = x;
                break;
            case 5:
                o->last = x;
                break;
            case 6:
            case 7:
                if (!(x >= 0 && x < (double)b->resolution) || x != floor(x))
                    goto out;
                if (k == 6)
                    o->first_ts = o->start + (int64_t)x;
                else
                    o->last_ts = o->start + (int64_t)x;
                break;
            default:
                o->resets = x;
                break;
            }
        }
    }
    if (v != end)
        goto out;
    unsigned all = STELE_BUCKET_COUNT | STELE_BUCKET_FIRST | STELE_BUCKET_LAST;
    for (uint32_t i = 0; (fields & all) == all && i < n; i++)
        if (out[i].count == 1 ? out[i].first_ts != out[i].last_ts
                              : out[i].first_ts >= out[i].last_ts)
            goto out;
    rc = 0;
out:
    free(starts);
    free(col);
    return rc;
}
