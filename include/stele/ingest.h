/*
 * ingest.h — turns a line-protocol body into a storage batch (SPEC §2): measurement m
 * and field f become metric m_f, tags become labels, integers and unsigned integers
 * must be exactly representable as float64 (|v| ≤ 2^53), booleans become 1/0, string
 * fields are skipped and counted. A request is atomic: the first bad line fails it all,
 * naming the line.
 */
#ifndef STELE_INGEST_H
#define STELE_INGEST_H

#include <stdint.h>

#include "stele/lineproto.h"
#include "stele/tsdb.h"

typedef struct {
    const char *tenant;
    int64_t precision_ns; /* nanoseconds per timestamp unit: 1, 1000, 1e6, 1e9, 6e10, 3.6e12 */
    int64_t now_ns;       /* timestamp of lines without one */
    int64_t min_ts;       /* accepted range (stele_tsdb_time_bounds) */
    int64_t max_ts;
} stele_ingest_params;

typedef enum {
    STELE_INGEST_OK = 0,
    STELE_INGEST_SYNTAX = 1,  /* parse error or unrepresentable value */
    STELE_INGEST_TOO_OLD = 2, /* before retention */
    STELE_INGEST_FUTURE = 3,  /* beyond the allowed clock skew: a time-sync signal */
} stele_ingest_error_kind;

typedef struct {
    uint64_t lines;
    uint64_t points;
    uint64_t skipped_string_fields;
    stele_ingest_error_kind kind;
    uint32_t line;     /* 1-based line of the error */
    char message[256]; /* what is wrong and what to do */
} stele_ingest_result;

/* Parses body into b (which the caller reset). 0 on success; -EINVAL for a bad line
 * (kind, line and message set); -ENOMEM. */
int stele_ingest_lines(stele_lp_parser *parser, stele_batch *b, const char *body, size_t len,
                       const stele_ingest_params *params, stele_ingest_result *result);

/* Nanoseconds per unit for an Influx precision string: "ns"/"n", "us"/"u", "ms", "s",
 * "m", "h"; 0 if unknown. NULL or "" means ns. */
int64_t stele_precision_ns(const char *precision);

#endif
