/*
 * promql.h — the PromQL subset of SPEC §3: abstract syntax tree and parser.
 *
 * Grammar (Prometheus 2.x semantics and precedence):
 *   expr      := unary | expr binop [bool] [on(l,…) | ignoring(l,…)] expr
 *   binop     := ^ (right assoc.) > * / % > + - > == != <= < >= > (and unless) > or
 *   unary     := [+|-] primary ; a unary minus binds looser than ^ (as in Prometheus:
 *                -2^2 = -4)
 *   primary   := number | string | selector [ '[' duration ']' ] [offset duration]
 *              | func '(' args ')' | agg | '(' expr ')'
 *   agg       := aggop [by|without (l,…)] '(' [param ','] expr ')' [by|without (l,…)]
 *   selector  := metric_name ['{' matchers '}'] | '{' matchers '}'  (stele/selector.h)
 *   duration  := (number unit)+ with units ms s m h d w y, e.g. 1h30m
 *   number    := decimal or hex integer, float with exponent, Inf, NaN (any case)
 * Comments start with # and run to the end of the line.
 *
 * Types are checked while parsing, with Prometheus' messages where they exist:
 * functions get the argument types they need, `offset` applies to selectors, range
 * selectors only to vector selectors, comparison between scalars needs `bool`, set
 * operators (and/or/unless) need vectors on both sides, vector matching clauses only
 * between vectors, an aggregation's parameter (topk/bottomk) must be a scalar.
 *
 * Memory: the whole tree lives in one arena owned by the pq_expr; free it with
 * pq_expr_free. Strings in the tree are NUL-terminated and belong to the arena.
 */
#ifndef STELE_PROMQL_H
#define STELE_PROMQL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "stele/tsdb.h"

/* Bounds on what a query may contain: hostile queries must not cost unbounded memory
 * or stack. */
#define PQ_MAX_QUERY_BYTES 65536
#define PQ_MAX_DEPTH 128
#define PQ_MAX_MATCHERS 32
#define PQ_MAX_GROUPING_LABELS 64
#define PQ_MAX_ARGS 4

typedef enum {
    PQ_TYPE_SCALAR = 0,
    PQ_TYPE_VECTOR = 1, /* instant vector */
    PQ_TYPE_MATRIX = 2, /* range vector */
    PQ_TYPE_STRING = 3,
} pq_type;

typedef enum {
    PQ_NUMBER = 0,
    PQ_STRING = 1,
    PQ_VECTOR_SELECTOR = 2,
    PQ_MATRIX_SELECTOR = 3,
    PQ_CALL = 4,
    PQ_AGGREGATE = 5,
    PQ_BINARY = 6,
    PQ_UNARY_MINUS = 7,
    PQ_PAREN = 8,
} pq_node_kind;

typedef enum {
    PQ_OP_ADD = 0,
    PQ_OP_SUB,
    PQ_OP_MUL,
    PQ_OP_DIV,
    PQ_OP_MOD,
    PQ_OP_POW,
    PQ_OP_EQ,
    PQ_OP_NE,
    PQ_OP_GT,
    PQ_OP_LT,
    PQ_OP_GE,
    PQ_OP_LE,
    PQ_OP_AND,
    PQ_OP_OR,
    PQ_OP_UNLESS,
} pq_binop;

typedef enum {
    PQ_AGG_SUM = 0,
    PQ_AGG_AVG,
    PQ_AGG_MIN,
    PQ_AGG_MAX,
    PQ_AGG_COUNT,
    PQ_AGG_TOPK,
    PQ_AGG_BOTTOMK,
} pq_aggop;

typedef enum {
    PQ_FN_RATE = 0,
    PQ_FN_IRATE,
    PQ_FN_INCREASE,
    PQ_FN_DELTA,
    PQ_FN_IDELTA,
    PQ_FN_MIN_OVER_TIME,
    PQ_FN_MAX_OVER_TIME,
    PQ_FN_AVG_OVER_TIME,
    PQ_FN_SUM_OVER_TIME,
    PQ_FN_COUNT_OVER_TIME,
    PQ_FN_LAST_OVER_TIME,
    PQ_FN_ABS,
    PQ_FN_CLAMP_MIN,
    PQ_FN_CLAMP_MAX,
    PQ_FN_ROUND,
    PQ_FN_COUNT_ /* number of functions */
} pq_function;

typedef struct pq_node pq_node;

struct pq_node {
    pq_node_kind kind;
    pq_type type;
    uint32_t pos; /* byte offset in the query where the node starts */
    union {
        double number;
        const char *string;
        struct {
            stele_matcher matchers[PQ_MAX_MATCHERS]; /* __name__ included when named */
            size_t nmatchers;
            int64_t offset_ns; /* the `offset` modifier, 0 if none */
        } selector;            /* PQ_VECTOR_SELECTOR */
        struct {
            pq_node *selector; /* a PQ_VECTOR_SELECTOR (its offset applies) */
            int64_t range_ns;
        } matrix; /* PQ_MATRIX_SELECTOR */
        struct {
            pq_function fn;
            pq_node *args[PQ_MAX_ARGS];
            size_t nargs;
        } call;
        struct {
            pq_aggop op;
            pq_node *expr;
            pq_node *param; /* topk/bottomk: k; otherwise NULL */
            const char *labels[PQ_MAX_GROUPING_LABELS];
            size_t nlabels;
            bool without; /* false: by (possibly empty: aggregate everything) */
        } aggregate;
        struct {
            pq_binop op;
            pq_node *lhs, *rhs;
            bool return_bool; /* comparison with the `bool` modifier */
            bool matching;    /* an on()/ignoring() clause was given */
            bool on;          /* on(…) rather than ignoring(…) */
            const char *labels[PQ_MAX_GROUPING_LABELS];
            size_t nlabels;
        } binary;
        struct {
            pq_node *expr;
        } unary; /* PQ_UNARY_MINUS and PQ_PAREN */
    };
};

typedef struct pq_expr pq_expr;

/* Parses a query of len bytes. On success *out owns the tree (root via pq_expr_root).
 * On a syntax or type error returns -EINVAL and writes a message like Prometheus'
 * ("parse error at char 7: unexpected …") into err. -ENOMEM. */
int pq_parse(const char *query, size_t len, pq_expr **out, char *err, size_t errcap);
pq_node *pq_expr_root(const pq_expr *e);
void pq_expr_free(pq_expr *e);

/* Name of a function / aggregation / operator as written in PromQL. */
const char *pq_function_name(pq_function fn);
const char *pq_aggop_name(pq_aggop op);
const char *pq_binop_name(pq_binop op);

/* Parses a PromQL duration ("5m", "1h30m", "90s", "100ms") into ns; -EINVAL. */
int pq_parse_duration(const char *text, size_t len, int64_t *ns);

#endif
