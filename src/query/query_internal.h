/*
 * query_internal.h — the evaluator's values and context, shared by eval.c and
 * result.c only.
 */
#ifndef STELE_QUERY_INTERNAL_H
#define STELE_QUERY_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "query/arena.h"
#include "query/labels.h"
#include "stele/query.h"

/* One output series of an instant-vector node: a value and a presence flag per step. */
typedef struct {
    lset ls;
    double *v;
    uint8_t *ok;
} sseries;

/* Raw samples of a range selector (only the result of an instant query like x[5m]). */
typedef struct {
    lset ls;
    int64_t *ts;
    double *v;
    size_t n;
} raw_series;

typedef struct {
    pq_type type;
    double *scalar; /* PQ_TYPE_SCALAR: one per step */
    sseries *s;     /* PQ_TYPE_VECTOR */
    size_t n, cap;
    raw_series *raw; /* PQ_TYPE_MATRIX */
    size_t nraw, raw_cap;
    const char *str; /* PQ_TYPE_STRING */
} value;

/* The data a query is answered from (plan.c). */
typedef struct {
    size_t tier;                /* 0: raw samples; else the downsampled tier (stele_tsdb_tiers) */
    int64_t resolution;         /* 0 for raw */
    int64_t raw_expired_before; /* raw data before this is gone (INT64_MIN: none) */
} query_plan;

typedef struct {
    stele_tsdb *db;
    const char *tenant;
    int64_t start, end, step;
    size_t nsteps;
    bool range_query;
    const stele_query_limits *limits;
    const volatile int *cancel;
    int64_t deadline; /* monotonic ns */
    arena a;
    stele_query_error *err;
    stele_query_stats *stats;
    query_plan plan;
} qctx;

/* Chooses the data for a query (want: STELE_RESOLUTION_AUTO, _RAW or a resolution).
 * -EINVAL with msg (what can be asked instead) when it cannot be answered exactly. */
int query_plan_choose(stele_tsdb *db, const pq_node *root, int64_t start, int64_t step,
                      int64_t want, query_plan *out, char *msg, size_t cap);
/* The tier function for a PromQL range function, if tiers can answer it. */
bool plan_tier_function(pq_function fn, stele_tier_fn *out);

struct stele_query_result {
    arena a; /* owns everything below */
    value v;
    int64_t start, step;
    size_t nsteps;
    bool range_query;
};

#endif
