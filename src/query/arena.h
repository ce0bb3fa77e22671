/*
 * arena.h — a bump allocator for one query. Everything a query builds (label sets,
 * per-step value arrays, results) lives in its arena and is released at once; the arena
 * counts its bytes, which is how the query memory limit is enforced.
 */
#ifndef STELE_QUERY_ARENA_H
#define STELE_QUERY_ARENA_H

#include <stddef.h>
#include <stdint.h>

typedef struct arena_chunk arena_chunk;

typedef struct {
    arena_chunk *head;
    uint64_t bytes; /* total allocated from the system */
    uint64_t limit; /* 0 = none; allocations beyond it fail */
} arena;

void arena_init(arena *a, uint64_t limit);
/* 8-byte aligned, uninitialised; NULL when out of memory or over the limit. */
void *arena_alloc(arena *a, size_t n);
void *arena_calloc(arena *a, size_t n);
void arena_free(arena *a);

#endif
