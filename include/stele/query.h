/*
 * query.h — PromQL evaluation over the store (SPEC §3, §8).
 *
 * Evaluation is vectorised over time like Prometheus' range evaluation: every node of
 * the tree yields, for each output series, one value per step (plus a presence bit), so
 * an instant query is a range query with one step. Selectors stream series out of the
 * store one at a time and reduce them to per-step values at once (a sliding window over
 * the sorted samples), so no raw series is kept longer than its own reduction.
 *
 * Semantics follow Prometheus 2.x: 5-minute lookback with the window [t−5m, t]
 * inclusive, range windows [t−r, t] inclusive, extrapolated rate/increase/delta with
 * counter resets, irate/idelta from the last two samples, metric-name dropping, one-to-
 * one vector matching with on/ignoring, set operators, comparison filters and `bool`.
 *
 * Limits are enforced twice: before any sample is read, from the index (series that
 * would be touched and an estimate of samples from block metadata), and while running
 * (samples actually scanned, memory held by intermediate results, the deadline).
 */
#ifndef STELE_QUERY_H
#define STELE_QUERY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "stele/promql.h"
#include "stele/tsdb.h"

typedef struct {
    uint64_t max_series;  /* series one query may touch (across all its selectors) */
    uint64_t max_samples; /* samples one query may scan */
    int64_t timeout_ns;   /* wall-clock budget of one query */
    uint64_t max_memory;  /* bytes of intermediate results one query may hold */
    uint64_t max_steps;   /* points per series in a range query (Prometheus: 11,000) */
} stele_query_limits;

void stele_query_limits_default(stele_query_limits *l);

typedef enum {
    STELE_QERR_NONE = 0,
    STELE_QERR_BAD_DATA,  /* invalid query or parameters: 400 */
    STELE_QERR_LIMIT,     /* refused before running: a limit would be exceeded: 422 */
    STELE_QERR_EXECUTION, /* failed or stopped while running (limit, eval error): 422 */
    STELE_QERR_TIMEOUT,   /* the deadline passed: 503 */
    STELE_QERR_INTERNAL,  /* storage error: 500 */
} stele_query_error_kind;

typedef struct {
    stele_query_error_kind kind;
    const char *reason; /* for limits: "series", "samples", "memory", "time", "steps" */
    char message[512];
} stele_query_error;

typedef struct {
    uint64_t series;      /* series touched */
    uint64_t samples;     /* samples scanned */
    uint64_t peak_memory; /* bytes */
    uint64_t estimated_series;
    uint64_t estimated_samples;
    int64_t resolution_ns; /* what answered: 0 raw, else the tier's resolution */
} stele_query_stats;

/* Which data answers a query (SPEC §5). AUTO: the coarsest downsampled tier that gives
 * exactly the raw answer, else raw data; an error when raw data the query needs has
 * expired and no tier answers it exactly. RAW, or a tier's resolution in ns: that data
 * only (an error when it cannot answer exactly). */
#define STELE_RESOLUTION_AUTO INT64_C(-1)
#define STELE_RESOLUTION_RAW INT64_C(0)

typedef struct stele_query_result stele_query_result;

/* Evaluates expr at [start, end] every step (ns; an instant query has start == end and
 * step 0). Returns 0 and *out, or a negative errno with err filled. `cancel`, if not
 * NULL, is polled: when it becomes non-zero the query stops with a timeout error. */
int stele_query_eval(stele_tsdb *db, const char *tenant, const pq_expr *expr, int64_t start,
                     int64_t end, int64_t step, bool range_query, const stele_query_limits *limits,
                     int64_t resolution, const volatile int *cancel, stele_query_result **out,
                     stele_query_error *err, stele_query_stats *stats);
void stele_query_result_free(stele_query_result *r);

/* The check stele_query_eval starts with, on its own: estimates the query's cost from
 * the index and block metadata (no sample read) and refuses with STELE_QERR_LIMIT when
 * a limit would be exceeded. Cheap enough for the connection thread, so an over-limit
 * query is refused at once even when the query pool is busy. */
int stele_query_admit(stele_tsdb *db, const char *tenant, const pq_expr *expr, int64_t start,
                      int64_t end, int64_t step, const stele_query_limits *limits,
                      int64_t resolution, stele_query_error *err, stele_query_stats *stats);

/* Appends the result as Prometheus' "data" object ({"resultType":…,"result":…}) to a
 * malloc'd buffer. */
int stele_query_result_json(const stele_query_result *r, char **json, size_t *len);

/* Formats a float as Prometheus does in JSON (shortest round-trip digits; exponent form
 * below 1e-6 and from 1e21; "NaN", "+Inf", "-Inf"). Returns the length written (buf ≥ 400 bytes).
 */
int stele_format_prom_float(double v, char *buf, size_t cap);

#endif
