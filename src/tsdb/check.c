/*
 * check.c — offline verification of a data directory (`stele check`): every log
 * segment record by record, every block file down to each decoded series. It opens
 * files read-only and changes nothing, so it is safe on a directory a server is using
 * (it may then report a torn tail that is merely being written).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stele/tsdb.h"
#include "stele/wal.h"
#include "tsdb/block.h"
#include "tsdb/series_key.h"

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

static int check_key(void *ctx, uint64_t id, const uint8_t *key, size_t len)
{
    (void)ctx;
    (void)id;
    const char *t;
    size_t tl, nl;
    stele_label labels[STELE_MAX_LABELS];
    return series_key_decode(key, len, &t, &tl, labels, &nl) ? -EBADMSG : 0;
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
    for (uint64_t i = 0; i < b->nentries; i++) {
        const block_entry *e = &b->entries[i];
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
        rc = block_read_series(b, e, &cache, ts, v);
        if (rc) {
            snprintf(err, sizeof(err), "series id %" PRIu64 " does not decode: %s", e->id,
                     strerror(-rc));
            problem(ctx, path, err);
            problems++;
        }
    }
    free(ts);
    free(v);
    block_cache_free(&cache);
    block_unref(b);
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
                problems += n;
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
    rc = 0;
out:
    name_list_free(&wal);
    name_list_free(&blocks);
    return rc ? rc : problems;
}
