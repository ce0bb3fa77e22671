/*
 * hashmap.c — open addressing with linear probing; see hashmap.h. The table doubles
 * when it is 3/4 full, which keeps expected probe lengths short (Knuth) while wasting
 * at most 62% of the slots just after a resize.
 */
#include "common/hashmap.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#define HASHMAP_MIN_CAP 16

uint64_t hashmap_hash(const void *key, size_t len)
{
    return XXH3_64bits(key, len);
}

void hashmap_init(hashmap *m)
{
    memset(m, 0, sizeof(*m));
}

void hashmap_free(hashmap *m)
{
    free(m->slots);
    memset(m, 0, sizeof(*m));
}

void hashmap_clear(hashmap *m)
{
    if (m->slots)
        memset(m->slots, 0, m->cap * sizeof(*m->slots));
    m->count = 0;
}

void *hashmap_get(const hashmap *m, uint64_t hash, const void *key, size_t len)
{
    if (!m->cap)
        return NULL;
    size_t mask = m->cap - 1;
    for (size_t i = hash & mask;; i = (i + 1) & mask) {
        const hashmap_entry *e = &m->slots[i];
        if (!e->value)
            return NULL;
        if (e->hash == hash && e->key_len == len && memcmp(e->key, key, len) == 0)
            return e->value;
    }
}

static void slot_place(hashmap_entry *slots, size_t cap, const hashmap_entry *e)
{
    size_t mask = cap - 1;
    size_t i = e->hash & mask;
    while (slots[i].value)
        i = (i + 1) & mask;
    slots[i] = *e;
}

static int hashmap_grow(hashmap *m)
{
    size_t cap = m->cap ? m->cap * 2 : HASHMAP_MIN_CAP;
    hashmap_entry *slots = calloc(cap, sizeof(*slots));
    if (!slots)
        return -ENOMEM;
    for (size_t i = 0; i < m->cap; i++)
        if (m->slots[i].value)
            slot_place(slots, cap, &m->slots[i]);
    free(m->slots);
    m->slots = slots;
    m->cap = cap;
    return 0;
}

int hashmap_put(hashmap *m, uint64_t hash, const void *key, size_t len, void *value)
{
    if ((m->count + 1) * 4 > m->cap * 3) {
        int rc = hashmap_grow(m);
        if (rc)
            return rc;
    }
    hashmap_entry e = {.hash = hash, .key = key, .key_len = (uint32_t)len, .value = value};
    slot_place(m->slots, m->cap, &e);
    m->count++;
    return 0;
}
