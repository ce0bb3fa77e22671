/*
 * labels.h — label sets as the query engine handles them: one immutable encoded byte
 * string per set (varint name length, name, varint value length, value; sorted by
 * name), allocated in the query's arena. Comparing and hashing are byte operations;
 * ordering for output follows Prometheus (name, then value, label by label).
 */
#ifndef STELE_QUERY_LABELS_H
#define STELE_QUERY_LABELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "query/arena.h"
#include "stele/tsdb.h"

typedef struct {
    const uint8_t *data;
    uint32_t len;
    uint64_t hash;
} lset;

/* Builds a set from labels sorted by name. -ENOMEM. */
int lset_from_labels(arena *a, const stele_label *labels, size_t n, lset *out);
/* Decodes into labels (room for STELE_MAX_LABELS); returns the count. */
size_t lset_decode(const lset *ls, stele_label *labels);
/* The set without __name__. */
int lset_drop_name(arena *a, const lset *in, lset *out);
/* Only the named labels (keep = true) or all but them (keep = false; __name__ is then
 * dropped too when drop_name). */
int lset_filter(arena *a, const lset *in, const char *const *names, size_t n, bool keep,
                bool drop_name, lset *out);
bool lset_equal(const lset *a, const lset *b);
/* Prometheus' labels.Compare order. */
int lset_compare(const lset *a, const lset *b);

#endif
