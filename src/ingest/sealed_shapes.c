/*
 * sealed_shapes.c — per device, a cache from a point's shape (its metric and labels
 * exactly as the frame encodes them) to the store's series handle
 * (stele_tsdb_series_ref), so a device's points reach the batch without building,
 * sorting, encoding and looking up their label sets frame after frame.
 *
 * Why a shape names one series: frames are canonical (labels sorted and unique, one
 * encoding per label set: stele/frame.h), so equal label sets have equal bytes. The
 * other inputs of the series key are the device id (one cache per device), the store
 * tenant (the device's, or STELE_QUARANTINE_TENANT) and the `tenant` label; the cache
 * keeps them beside its entries, and a frame that differs in them empties it first.
 * Handles stay valid while their store is open (stele/tsdb.h); the cache remembers which
 * store filled it.
 *
 * Bounds (sealed_internal.h): SEALED_SHAPES_PER_DEVICE entries and SEALED_SHAPE_BYTES of
 * shape bytes per device, then the cache is emptied whole — the simplest eviction, and a
 * device with that many shapes pays the per-point cost of the uncached path, no more.
 * Memory grows with the shapes a device uses (about 60 bytes per shape of the benchmark),
 * not with the bounds; all caches together stop growing at shape_cache_max_bytes.
 *
 * Threads: a device's cache is used only under the device's lock, which a request holds
 * from judging its windows until its write is applied (sealed.c).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ingest/sealed_internal.h"

/* Slots start at this many and double up to 2 × SEALED_SHAPES_PER_DEVICE (load ≤ 1/2:
 * short probes). Entry indexes fit the uint16_t slots. */
#define SHAPE_SLOTS_MIN 16
_Static_assert(2 * SEALED_SHAPES_PER_DEVICE <= UINT16_MAX, "shape slots hold uint16_t indexes");

static void shapes_empty(sealed_shape_cache *c)
{
    if (c->slots)
        memset(c->slots, 0, c->nslots * sizeof(*c->slots));
    c->n = 0;
    c->bytes_len = 0;
}

/* Bytes the cache holds (what the fleet-wide budget counts). */
static size_t shapes_footprint(const sealed_shape_cache *c)
{
    return (size_t)c->entries_cap * sizeof(*c->entries) + (size_t)c->nslots * sizeof(*c->slots) +
           c->bytes_cap;
}

void sealed_shapes_bind(sealed_shape_cache *c, const stele_tsdb *db, const char *tenant,
                        bool quarantined, size_t *total, size_t total_max)
{
    c->total = total;
    c->total_max = total_max;
    if (c->db == db && c->quarantined == quarantined && strcmp(c->tenant, tenant) == 0)
        return;
    shapes_empty(c);
    c->db = db;
    c->quarantined = quarantined;
    snprintf(c->tenant, sizeof(c->tenant), "%s", tenant);
}

const stele_series_ref *sealed_shapes_find(const sealed_shape_cache *c, const uint8_t *shape,
                                           size_t len, uint64_t hash)
{
    if (!c->n)
        return NULL;
    uint32_t mask = c->nslots - 1;
    for (uint32_t at = (uint32_t)hash & mask; c->slots[at]; at = (at + 1) & mask) {
        const sealed_shape *e = &c->entries[c->slots[at] - 1];
        if (e->hash == hash && e->len == len && memcmp(c->bytes + e->off, shape, len) == 0)
            return e->ref;
    }
    return NULL;
}

/* Re-places every entry into a table of nslots slots (the old one freed). */
static int shapes_rehash(sealed_shape_cache *c, uint32_t nslots)
{
    uint16_t *slots = calloc(nslots, sizeof(*slots));
    if (!slots)
        return -ENOMEM;
    for (uint32_t i = 0; i < c->n; i++) {
        uint32_t at = (uint32_t)c->entries[i].hash & (nslots - 1);
        while (slots[at])
            at = (at + 1) & (nslots - 1);
        slots[at] = (uint16_t)(i + 1);
    }
    free(c->slots);
    c->slots = slots;
    c->nslots = nslots;
    return 0;
}

/* Grows a byte or entry array to hold need items (at most max), doubling. */
static int shapes_grow(void **p, uint32_t *cap, uint32_t need, uint32_t max, size_t elem)
{
    if (need <= *cap)
        return 0;
    uint32_t n = *cap ? *cap : 16;
    while (n < need)
        n *= 2;
    if (n > max)
        n = max;
    void *q = realloc(*p, (size_t)n * elem);
    if (!q)
        return -ENOMEM;
    *p = q;
    *cap = n;
    return 0;
}

void sealed_shapes_put(sealed_shape_cache *c, const uint8_t *shape, size_t len, uint64_t hash,
                       const stele_series_ref *ref)
{
    if (len > SEALED_SHAPE_MAX_LEN)
        return;
    if (c->n == SEALED_SHAPES_PER_DEVICE || c->bytes_len + len > SEALED_SHAPE_BYTES)
        shapes_empty(c);
    uint32_t need_slots = c->nslots ? c->nslots : SHAPE_SLOTS_MIN;
    while (2 * (c->n + 1) > need_slots)
        need_slots *= 2;
    bool grows =
        need_slots != c->nslots || c->n + 1 > c->entries_cap || c->bytes_len + len > c->bytes_cap;
    if (grows && c->total && __atomic_load_n(c->total, __ATOMIC_RELAXED) >= c->total_max)
        return; /* the fleet's caches are full: this shape stays uncached */
    size_t before = shapes_footprint(c);
    int rc = need_slots != c->nslots ? shapes_rehash(c, need_slots) : 0;
    if (rc == 0)
        rc = shapes_grow((void **)&c->entries, &c->entries_cap, c->n + 1, SEALED_SHAPES_PER_DEVICE,
                         sizeof(*c->entries));
    if (rc == 0)
        rc = shapes_grow((void **)&c->bytes, &c->bytes_cap, c->bytes_len + (uint32_t)len,
                         SEALED_SHAPE_BYTES, 1);
    if (c->total)
        __atomic_add_fetch(c->total, shapes_footprint(c) - before, __ATOMIC_RELAXED);
    if (rc)
        return;
    sealed_shape *e = &c->entries[c->n];
    *e = (sealed_shape){.hash = hash, .ref = ref, .off = c->bytes_len, .len = (uint32_t)len};
    memcpy(c->bytes + e->off, shape, len);
    c->bytes_len += (uint32_t)len;
    uint32_t mask = c->nslots - 1, at = (uint32_t)hash & mask;
    while (c->slots[at])
        at = (at + 1) & mask;
    c->slots[at] = (uint16_t)(++c->n);
}

void sealed_shapes_free(sealed_shape_cache *c)
{
    if (c->total)
        __atomic_sub_fetch(c->total, shapes_footprint(c), __ATOMIC_RELAXED);
    free(c->entries);
    free(c->slots);
    free(c->bytes);
    memset(c, 0, sizeof(*c));
}
