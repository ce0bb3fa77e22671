/*
 * arena.c — bump allocation in chunks that double up to 1 MiB; big requests get a
 * chunk of their own. See arena.h.
 */
#include "query/arena.h"

#include <stdlib.h>
#include <string.h>

#define ARENA_FIRST_CHUNK 4096
#define ARENA_MAX_CHUNK (1u << 20)

struct arena_chunk {
    arena_chunk *next;
    size_t used;
    size_t cap;
    _Alignas(16) unsigned char data[];
};

void arena_init(arena *a, uint64_t limit)
{
    memset(a, 0, sizeof(*a));
    a->limit = limit;
}

void *arena_alloc(arena *a, size_t n)
{
    n = (n + 7) & ~(size_t)7;
    arena_chunk *c = a->head;
    if (!c || c->cap - c->used < n) {
        size_t cap = c ? c->cap * 2 : ARENA_FIRST_CHUNK;
        if (cap > ARENA_MAX_CHUNK)
            cap = ARENA_MAX_CHUNK;
        if (cap < n)
            cap = n;
        if (a->limit && a->bytes + cap > a->limit)
            return NULL;
        arena_chunk *nc = malloc(sizeof(*nc) + cap);
        if (!nc)
            return NULL;
        nc->used = 0;
        nc->cap = cap;
        a->bytes += cap;
        if (c && c->cap - c->used >= ARENA_FIRST_CHUNK && n > ARENA_FIRST_CHUNK) {
            /* Keep filling the current chunk; put the big one behind it. */
            nc->next = c->next;
            c->next = nc;
            nc->used = n;
            return nc->data;
        }
        nc->next = c;
        a->head = c = nc;
    }
    void *p = c->data + c->used;
    c->used += n;
    return p;
}

void *arena_calloc(arena *a, size_t n)
{
    void *p = arena_alloc(a, n);
    if (p)
        memset(p, 0, n);
    return p;
}

void arena_free(arena *a)
{
    arena_chunk *c = a->head;
    while (c) {
        arena_chunk *next = c->next;
        free(c);
        c = next;
    }
    a->head = NULL;
    a->bytes = 0;
}
