/*
 * hashmap.h — an open-addressing hash map from byte strings to pointers, used by the
 * series index, postings and per-request batches. Linear probing over a power-of-two
 * table with the full 64-bit hash stored beside each entry, so a probe compares keys
 * only when hashes match. The map does not copy keys: each key must stay valid, at the
 * same address, while its entry exists (callers point into the object the value is).
 * No deletion: the index only grows while a process runs.
 *
 * Not thread-safe; callers lock.
 */
#ifndef STELE_COMMON_HASHMAP_H
#define STELE_COMMON_HASHMAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t hash;
    const void *key;
    uint32_t key_len;
    void *value; /* NULL marks an empty slot */
} hashmap_entry;

typedef struct {
    hashmap_entry *slots;
    size_t cap; /* power of two, or 0 */
    size_t count;
} hashmap;

uint64_t hashmap_hash(const void *key, size_t len);
void hashmap_init(hashmap *m);
void hashmap_free(hashmap *m);
/* Value stored under key, or NULL. */
void *hashmap_get(const hashmap *m, uint64_t hash, const void *key, size_t len);
/* Inserts key → value (value must not be NULL; key must not be present). -ENOMEM. */
int hashmap_put(hashmap *m, uint64_t hash, const void *key, size_t len, void *value);
/* Removes every entry, keeping the table. */
void hashmap_clear(hashmap *m);

#endif
