/*
 * lineproto.h — InfluxDB line protocol parser, on the ingestion hot path.
 *
 *   measurement[,tag=value…] field=value[,field=value…] [timestamp]
 *
 * The parser walks the body once and hands each line to a callback as a parsed view:
 * names and values point into the input when they hold no escapes, and into the
 * parser's scratch buffer when they had to be unescaped (valid until the callback
 * returns). It allocates nothing per line; the scratch buffer is sized once from the
 * line-length limit. Tags are given sorted by key, so callers can build canonical
 * series keys without sorting again. Field values are parsed (numbers exactly, with a
 * correctly rounded decimal → double conversion); the timestamp is given raw, in the
 * request's precision — converting it is the caller's job.
 *
 * Grammar handled: escapes (`\,` `\ ` in measurements; `\,` `\=` `\ ` in tag keys,
 * tag values and field keys; `\"` `\\` in string field values), quoted strings with
 * embedded newlines, float / integer (`i`) / unsigned (`u`) / boolean
 * (t, T, true, True, TRUE, f, F, false, False, FALSE) / string fields, comment lines
 * (`#` first), blank lines, CRLF line ends. Duplicate tag keys are an error; a field
 * key repeated in one line keeps the last value (as InfluxDB does).
 *
 * Every error names the 1-based line number and what is wrong; parsing stops at the
 * first error (a write request is atomic).
 */
#ifndef STELE_LINEPROTO_H
#define STELE_LINEPROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Hard ceilings of the parser; configured limits must not exceed them. */
#define STELE_LP_MAX_TAGS_CEILING 256
#define STELE_LP_MAX_FIELDS_CEILING 1024

typedef struct {
    const char *ptr;
    uint32_t len;
} stele_lp_str;

typedef enum {
    STELE_LP_FLOAT = 0,
    STELE_LP_INT = 1,
    STELE_LP_UINT = 2,
    STELE_LP_BOOL = 3,
    STELE_LP_STRING = 4,
} stele_lp_field_type;

typedef struct {
    stele_lp_str key;
    stele_lp_field_type type;
    union {
        double f;
        int64_t i;
        uint64_t u;
        bool b;
        stele_lp_str s; /* unescaped string contents */
    } v;
} stele_lp_field;

typedef struct {
    stele_lp_str key;
    stele_lp_str value;
} stele_lp_tag;

typedef struct {
    stele_lp_str measurement;
    stele_lp_tag *tags; /* sorted by key (bytewise), no duplicates */
    uint32_t ntags;
    stele_lp_field *fields; /* in line order, duplicates removed (last wins) */
    uint32_t nfields;
    bool has_timestamp;
    int64_t timestamp; /* raw, in the request's precision */
    uint32_t line_no;  /* 1-based */
} stele_lp_line;

typedef struct {
    uint32_t max_line_len;  /* bytes of one line (a quoted string may span lines) */
    uint32_t max_tags;      /* per line, ≤ STELE_LP_MAX_TAGS_CEILING */
    uint32_t max_fields;    /* per line, ≤ STELE_LP_MAX_FIELDS_CEILING */
    uint32_t max_name_len;  /* measurement, tag key, field key */
    uint32_t max_value_len; /* tag value, string field value */
} stele_lp_limits;

/* Defaults: 64 KiB lines, 64 tags, 256 fields, 256-byte names, 4 KiB values. */
void stele_lp_limits_default(stele_lp_limits *limits);

typedef struct {
    uint32_t line_no; /* 1-based line where the error is */
    char message[160];
} stele_lp_error;

/* Return 0 to go on; any other value stops the parse and is returned by stele_lp_parse. */
typedef int (*stele_lp_line_fn)(void *ctx, const stele_lp_line *line);

typedef struct stele_lp_parser stele_lp_parser;

/* Creates a parser for these limits (copied). Owned by the caller. -EINVAL if a limit
 * is 0 or over its ceiling, -ENOMEM. */
int stele_lp_parser_create(const stele_lp_limits *limits, stele_lp_parser **out);
void stele_lp_parser_destroy(stele_lp_parser *p);

/* Parses buf[0..len). Returns 0 when every line parsed and every callback returned 0;
 * -EINVAL on a syntax or limit error (described in *err); otherwise the first non-zero
 * callback value. Not thread-safe per parser; use one parser per thread. */
int stele_lp_parse(stele_lp_parser *p, const char *buf, size_t len, stele_lp_line_fn fn, void *ctx,
                   stele_lp_error *err);

#endif
