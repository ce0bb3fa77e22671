/*
 * check.c — offline verification of a data directory (`stele check`): every log
 * segment record by record (checksums by the log's own checker, then each record's
 * payload decoded by its type: a write, or a write with an attachment — the tsdb's
 * record types of tsdb.c; an attachment is opaque here, only its length is checked),
 * every block file down to each decoded series. It opens
 * files read-only and changes nothing, so it is safe on a directory a server is using
 * (it may then report a torn tail that is merely being written).
 *
 * Tiers (SPEC §5) are checked block by block (checksums, every bucket decodes and keeps
 * the aggregate's invariants) and against each other: every bucket of a coarser tier
 * must equal the merge of the finer tier's buckets it covers, wherever the finer tier
 * still holds them — counts, extremes, first/last samples exactly, sums and counter
 * resets to 1e-9. Both are built from the same raw data, so any difference is damage
 * or a bug.
 */
#include <math.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "common/bytes.h"
#include "stele/tsdb.h"
#include "stele/varint.h"
#include "stele/wal.h"
#include "tsdb/block.h"
#include "tsdb/series_key.h"
#include "tsdb/tsdb_internal.h"

typedef struct {
    char **names;
    size_t n, cap;
    int rc;
} name_list;

static int add_name(void *ctx, const char *name)
{
    name_list *l = ctx;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 32;
        char **names = realloc(l->names, cap * sizeof(*names));
        if (!names) {
            l->rc = -ENOMEM;
            return 1;
        }
        l->names = names;
        l->cap = cap;
    }
    if (!(l->names[l->n] = strdup(name))) {
        l->rc = -ENOMEM;
        return 1;
    }
    l->n++;
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void name_list_free(name_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->names[i]);
    free(l->names);
}

static int cmp_u64_ids(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int check_key(void *ctx, uint64_t id, const uint8_t *key, size_t len)
{
    (void)ctx;
    (void)id;
    const char *t;
    size_t tl, nl;
    stele_label labels[STELE_MAX_LABELS];
    return series_key_decode(key, len, &t, &tl, labels, &nl) ? -EBADMSG : 0;
}

/* The payload of a write record (either type): definitions whose keys decode, then
 * points that are whole. NULL if it decodes, else what is wrong. */
static const char *check_write_payload(uint32_t type, const uint8_t *payload, size_t len)
{
    tsdb_record r;
    uint64_t ndefs, npoints, id, klen, zz;
    if (tsdb_record_split(type, payload, len, &r))
        return type == TSDB_RECORD_WRITE || type == TSDB_RECORD_WRITE_ATTACHED
                   ? "attachment longer than its record"
                   : "unknown record type";
    const uint8_t *p = r.body, *end = r.body + r.body_len;
    if (stele_varint_get(&p, end, &ndefs))
        return "truncated definition count";
    for (uint64_t i = 0; i < ndefs; i++) {
        if (stele_varint_get(&p, end, &id) || stele_varint_get(&p, end, &klen) ||
            klen > (uint64_t)(end - p))
            return "truncated series definition";
        if (check_key(NULL, id, p, klen))
            return "series key does not decode";
        p += klen;
    }
    if (stele_varint_get(&p, end, &npoints) || npoints > len)
        return "bad point count";
    for (uint64_t i = 0; i < npoints; i++) {
        if (stele_varint_get(&p, end, &id) || stele_varint_get(&p, end, &zz) || end - p < 8)
            return "truncated point";
        p += 8;
    }
    return p == end ? NULL : "bytes after the last point";
}

/* Decodes the payload of every intact record of a segment. The walk stops at the first
 * record whose frame or checksum fails: stele_wal_check_segment judges that one (torn
 * tail or damage). Record framing: docs/format/wal.md. */
static int check_wal_payloads(stele_io *io, const char *path, stele_check_fn problem, void *ctx)
{
    uint8_t *data = NULL;
    size_t size = 0;
    char msg[512];
    int problems = 0;
    int rc = stele_io_read_file(io, path, (size_t)8 << 30, &data, &size);
    if (rc)
        return 0; /* reported by the segment check */
    for (size_t off = 32; off < size && size - off >= 16 && problems < 20;) {
        const uint8_t *h = data + off;
        uint32_t len = get_le32(h);
        if (len == 0 || size - off - 16 < len ||
            XXH3_64bits_withSeed(h + 16, len, get_le64(h)) != get_le64(h + 8))
            break;
        const char *why = check_write_payload(get_le16(h + 4), h + 16, len);
        if (why) {
            snprintf(msg, sizeof(msg), "record at offset %zu (type %u): %s", off,
                     (unsigned)get_le16(h + 4), why);
            problem(ctx, path, msg);
            problems++;
        }
        off += 16 + (size_t)len;
    }
    free(data);
    return problems;
}

static int check_block(stele_io *io, const char *path, stele_check_fn problem, void *ctx)
{
    char err[512];
    tsdb_block *b = NULL;
    block_cache cache = {0};
    int64_t *ts = NULL;
    double *v = NULL;
    int problems = 0;
    int rc = block_open(io, path, true, check_key, NULL, &b, err, sizeof(err));
    if (rc) {
        const char *colon = strstr(err, ": ");
        problem(ctx, path, colon ? colon + 2 : err);
        return 1;
    }
    const block_entry **in_file = NULL;
    if (block_entries_in_file_order(b, &in_file) != 0) {
        problem(ctx, path, "out of memory while checking");
        block_unref(b);
        return 1;
    }
    for (uint64_t i = 0; i < b->nentries; i++) {
        const block_entry *e = in_file[i];
        int64_t *nts = realloc(ts, e->npoints * sizeof(*ts));
        double *nv = nts ? realloc(v, e->npoints * sizeof(*v)) : NULL;
        if (nts)
            ts = nts;
        if (nv)
            v = nv;
        if (!nts || !nv) {
            problem(ctx, path, "out of memory while checking");
            problems++;
            break;
        }
        if (b->resolution) {
            stele_bucket *bk = malloc(e->npoints * sizeof(*bk));
            rc = bk ? block_read_buckets(b, e, &cache, bk) : -ENOMEM;
            free(bk);
        } else {
            rc = block_read_series(b, e, &cache, ts, v);
        }
        if (rc) {
            snprintf(err, sizeof(err), "series id %" PRIu64 " does not decode: %s", e->id,
                     strerror(-rc));
            problem(ctx, path, err);
            problems++;
        }
    }
    free(in_file);
    free(ts);
    free(v);
    block_cache_free(&cache);
    block_unref(b);
    return problems;
}

/* ---- tiers ----------------------------------------------------------------------- */

typedef struct {
    int64_t resolution;
    char dir[4500];
    tsdb_block **blocks; /* committed ones, ascending seq_hi */
    size_t n;
    int64_t expired_before;
} checked_tier;

static int block_seq_order(const void *a, const void *b)
{
    const tsdb_block *x = *(tsdb_block *const *)a, *y = *(tsdb_block *const *)b;
    return x->seq_hi < y->seq_hi ? -1 : x->seq_hi > y->seq_hi;
}

static int tier_order(const void *a, const void *b)
{
    const checked_tier *x = a, *y = b;
    return x->resolution < y->resolution ? -1 : x->resolution > y->resolution;
}

/* A series' buckets across a tier's blocks, the newest block winning per bucket.
 * *out malloc'd. -EBADMSG if a block does not decode. */
static int tier_series_buckets(const checked_tier *t, uint64_t id, block_cache *caches,
                               stele_bucket **out, size_t *nout)
{
    stele_bucket *acc = NULL, *tmp = NULL, *merged = NULL;
    size_t n = 0;
    int rc = 0;
    for (size_t i = 0; i < t->n && rc == 0; i++) {
        const block_entry *e = block_find(t->blocks[i], id);
        if (!e)
            continue;
        tmp = malloc(e->npoints * sizeof(*tmp));
        merged = malloc((n + e->npoints) * sizeof(*merged));
        if (!tmp || !merged) {
            rc = -ENOMEM;
            break;
        }
        rc = block_read_buckets(t->blocks[i], e, &caches[i], tmp);
        size_t a = 0, b = 0, k = 0;
        while (rc == 0 && (a < n || b < e->npoints)) {
            if (b == e->npoints || (a < n && acc[a].start < tmp[b].start)) {
                merged[k++] = acc[a++];
            } else {
                if (a < n && acc[a].start == tmp[b].start)
                    a++;
                merged[k++] = tmp[b++];
            }
        }
        free(acc);
        free(tmp);
        tmp = NULL;
        acc = merged;
        merged = NULL;
        n = k;
    }
    free(tmp);
    free(merged);
    if (rc) {
        free(acc);
        return rc;
    }
    *out = acc;
    *nout = n;
    return 0;
}

static bool close_enough(double a, double b)
{
    if (isnan(a) || isnan(b))
        return isnan(a) && isnan(b);
    if (a == b)
        return true;
    return fabs(a - b) <= 1e-9 * fmax(fabs(a), fabs(b));
}

static bool same_value(double a, double b)
{
    return (isnan(a) && isnan(b)) || a == b;
}

/* Compares tier `coarse` with the merge of tier `fine`; returns the problems found. */
static int check_tier_pair(const checked_tier *fine, const checked_tier *coarse,
                           stele_check_fn problem, void *ctx)
{
    int problems = 0;
    char msg[512];
    block_cache *fc = calloc(fine->n + 1, sizeof(*fc)), *cc = calloc(coarse->n + 1, sizeof(*cc));
    uint64_t *ids = NULL;
    size_t nids = 0, total = 0;
    for (size_t i = 0; i < coarse->n; i++)
        total += coarse->blocks[i]->nentries;
    ids = malloc((total + 1) * sizeof(*ids));
    if (!fc || !cc || !ids) {
        problem(ctx, coarse->dir, "out of memory while checking");
        problems++;
        goto out;
    }
    for (size_t i = 0; i < coarse->n; i++)
        for (uint64_t j = 0; j < coarse->blocks[i]->nentries; j++)
            ids[nids++] = coarse->blocks[i]->entries[j].id;
    qsort(ids, nids, sizeof(*ids), cmp_u64_ids);
    for (size_t i = 0; i < nids && problems < 20; i++) {
        if (i && ids[i] == ids[i - 1])
            continue;
        stele_bucket *cb = NULL, *fb = NULL;
        size_t nc = 0, nf = 0;
        if (tier_series_buckets(coarse, ids[i], cc, &cb, &nc) ||
            tier_series_buckets(fine, ids[i], fc, &fb, &nf)) {
            free(cb);
            free(fb);
            continue; /* reported by the block checks */
        }
        /* Compare where the finer tier still holds the whole coarse bucket. */
        int64_t fine_from = nf ? fb[0].start : INT64_MAX;
        if (fine->expired_before != INT64_MIN && fine->expired_before > fine_from)
            fine_from = fine->expired_before;
        size_t f = 0;
        for (size_t k = 0; k < nc && problems < 20; k++) {
            int64_t lo = cb[k].start, hi = lo + coarse->resolution;
            while (f < nf && fb[f].start < lo)
                f++;
            if (lo < fine_from)
                continue;
            stele_bucket m = {.start = lo};
            for (; f < nf && fb[f].start < hi; f++)
                stele_bucket_append(&m, &fb[f]);
            const stele_bucket *c = &cb[k];
            const char *what = NULL;
            if (m.count != c->count)
                what = "count";
            else if (!same_value(m.min, c->min) || !same_value(m.max, c->max))
                what = "min/max";
            else if (!same_value(m.first, c->first) || !same_value(m.last, c->last) ||
                     m.first_ts != c->first_ts || m.last_ts != c->last_ts)
                what = "first/last sample";
            else if (!close_enough(m.sum + m.sum_c, c->sum + c->sum_c) && isfinite(c->sum))
                what = "sum";
            else if (!close_enough(m.resets, c->resets))
                what = "counter resets";
            if (what) {
                snprintf(msg, sizeof(msg),
                         "series id %llu, bucket at %lld ns: %s differs from the merged buckets "
                         "of the finer tier",
                         (unsigned long long)ids[i], (long long)lo, what);
                problem(ctx, coarse->dir, msg);
                problems++;
            }
        }
        free(cb);
        free(fb);
    }
out:
    for (size_t i = 0; fc && i < fine->n; i++)
        block_cache_free(&fc[i]);
    for (size_t i = 0; cc && i < coarse->n; i++)
        block_cache_free(&cc[i]);
    free(fc);
    free(cc);
    free(ids);
    return problems;
}

static int add_tier_dir(void *ctx, const char *name)
{
    return add_name(ctx, name);
}

/* Checks dir/tiers: the state file, every tier block, the tiers against each other. */
static int check_tiers(stele_io *io, const char *dir, stele_check_fn problem, stele_check_fn note,
                       void *ctx)
{
    char tiers_dir[4200], path[4800];
    name_list subdirs = {0};
    checked_tier tiers[STELE_MAX_TIERS] = {{0}};
    size_t ntiers = 0;
    int problems = 0;
    tier_state st = {0};
    const char *why;
    snprintf(tiers_dir, sizeof(tiers_dir), "%s/tiers", dir);
    if (stele_io_exists(io, tiers_dir) != 1)
        return 0;
    snprintf(path, sizeof(path), "%s/state", tiers_dir);
    int rc = tier_state_load(io, path, &st, &why);
    bool have_state = rc == 0;
    if (rc && rc != -ENOENT) {
        problem(ctx, path, rc == -EBADMSG ? why : strerror(-rc));
        problems++;
    }
    rc = stele_io_list(io, tiers_dir, add_tier_dir, &subdirs);
    if (rc || subdirs.rc) {
        problem(ctx, tiers_dir, "cannot list");
        name_list_free(&subdirs);
        return problems + 1;
    }
    for (size_t i = 0; i < subdirs.n && ntiers < STELE_MAX_TIERS; i++) {
        int64_t res;
        if (stele_resolution_parse(subdirs.names[i], &res) != 0 || res <= 0)
            continue; /* the state file and anything foreign */
        checked_tier *t = &tiers[ntiers++];
        t->resolution = res;
        t->expired_before = INT64_MIN;
        for (size_t k = 0; have_state && k < st.ntiers; k++)
            if (st.resolution[k] == res)
                t->expired_before = st.expired_before[k + 1];
        snprintf(t->dir, sizeof(t->dir), "%s/%s", tiers_dir, subdirs.names[i]);
        name_list files = {0};
        if (stele_io_list(io, t->dir, add_name, &files) || files.rc) {
            problem(ctx, t->dir, "cannot list");
            problems++;
            name_list_free(&files);
            continue;
        }
        if (files.n)
            qsort(files.names, files.n, sizeof(char *), cmp_str);
        t->blocks = calloc(files.n + 1, sizeof(*t->blocks));
        for (size_t k = 0; t->blocks && k < files.n; k++) {
            uint64_t lo, hi;
            snprintf(path, sizeof(path), "%s/%s", t->dir, files.names[k]);
            if (block_parse_name(files.names[k], &lo, &hi) != 0) {
                if (note)
                    note(ctx, path, "not a block file (unfinished or foreign); ignored");
                continue;
            }
            if (have_state && lo > st.committed) {
                if (note)
                    note(ctx, path,
                         "written by a tier build that did not complete; removed at the next "
                         "start and rebuilt");
                continue;
            }
            int p = check_block(io, path, problem, ctx);
            problems += p;
            char err[512];
            tsdb_block *b = NULL;
            if (p == 0 && block_open(io, path, false, NULL, NULL, &b, err, sizeof(err)) == 0) {
                if (b->resolution != res) {
                    problem(ctx, path, "block resolution does not match its tier directory");
                    problems++;
                    block_unref(b);
                } else {
                    t->blocks[t->n++] = b;
                }
            }
        }
        name_list_free(&files);
        if (t->n)
            qsort(t->blocks, t->n, sizeof(*t->blocks), block_seq_order);
    }
    if (ntiers)
        qsort(tiers, ntiers, sizeof(*tiers), tier_order);
    for (size_t i = 1; i < ntiers; i++)
        if (tiers[i].resolution % tiers[i - 1].resolution == 0)
            problems += check_tier_pair(&tiers[i - 1], &tiers[i], problem, ctx);
    for (size_t i = 0; i < ntiers; i++) {
        for (size_t k = 0; k < tiers[i].n; k++)
            block_unref(tiers[i].blocks[k]);
        free(tiers[i].blocks);
    }
    name_list_free(&subdirs);
    return problems;
}

int stele_tsdb_check(stele_io *io, const char *dir, stele_check_fn problem, stele_check_fn note,
                     void *ctx)
{
    char sub[4096], path[4200];
    name_list wal = {0}, blocks = {0};
    int problems = 0;
    int rc = stele_io_exists(io, dir);
    if (rc <= 0)
        return rc < 0 ? rc : -ENOENT;

    snprintf(sub, sizeof(sub), "%s/wal", dir);
    if (stele_io_exists(io, sub) == 1) {
        rc = stele_io_list(io, sub, add_name, &wal);
        if (rc == 0)
            rc = wal.rc;
        if (rc)
            goto out;
        if (wal.n)
            qsort(wal.names, wal.n, sizeof(char *), cmp_str);
        size_t last = SIZE_MAX;
        for (size_t i = 0; i < wal.n; i++)
            if (strlen(wal.names[i]) == 24 && strcmp(wal.names[i] + 20, ".seg") == 0)
                last = i;
        for (size_t i = 0; i < wal.n; i++) {
            snprintf(path, sizeof(path), "%s/%s", sub, wal.names[i]);
            if (strlen(wal.names[i]) != 24 || strcmp(wal.names[i] + 20, ".seg") != 0) {
                if (note)
                    note(ctx, path, "not a log segment; ignored");
                continue;
            }
            int n = stele_wal_check_segment(io, path, i == last, problem, note, ctx);
            if (n < 0) {
                problem(ctx, path, strerror(-n));
                problems++;
            } else {
                problems += n + check_wal_payloads(io, path, problem, ctx);
            }
        }
    }
    snprintf(sub, sizeof(sub), "%s/blocks", dir);
    if (stele_io_exists(io, sub) == 1) {
        rc = stele_io_list(io, sub, add_name, &blocks);
        if (rc == 0)
            rc = blocks.rc;
        if (rc)
            goto out;
        if (blocks.n)
            qsort(blocks.names, blocks.n, sizeof(char *), cmp_str);
        for (size_t i = 0; i < blocks.n; i++) {
            uint64_t lo, hi;
            snprintf(path, sizeof(path), "%s/%s", sub, blocks.names[i]);
            if (block_parse_name(blocks.names[i], &lo, &hi) != 0) {
                if (note)
                    note(ctx, path, "not a block file (unfinished or foreign); ignored");
                continue;
            }
            problems += check_block(io, path, problem, ctx);
        }
    }
    problems += check_tiers(io, dir, problem, note, ctx);
    rc = 0;
out:
    name_list_free(&wal);
    name_list_free(&blocks);
    return rc ? rc : problems;
}
