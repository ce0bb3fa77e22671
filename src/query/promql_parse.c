/*
 * promql_parse.c — lexer, parser and type checker for the PromQL subset of SPEC §3; the
 * grammar and the contract are in stele/promql.h.
 *
 * DESIGN
 * A hand-written precedence-climbing parser over a lazy lexer with one token of
 * lookahead. PromQL's lexer is modal (inside {…} keywords are plain label names, inside
 * […] only a duration may follow), and the parser always knows which mode it is in, so
 * instead of a lexer state machine the parser scans braces and brackets itself with
 * small dedicated scanners: the lexer never looks past the token the parser asked for.
 *
 * Semantics follow Prometheus 2.x's yacc grammar (generated_parser.y) where they can
 * change a result:
 *   precedence  or < and unless < == != <= < >= > < + - < * / % < ^, all left-
 *               associative but ^; a unary sign binds like * (so -2^2 = -4, -a*b =
 *               (-a)*b) and `- <number>` folds into the number; `offset` and `[range]`
 *               are postfix and bind tightest (-x offset 5m = -(x offset 5m)).
 *   keywords    are case-insensitive (SUM, By). The aggregation names and by, without,
 *               and, or, unless, offset, start, end are metric names where an operand is
 *               expected and no aggregation follows (`sum` alone selects the metric
 *               "sum"); on, ignoring, bool, group_left, group_right, atan2 are not. Any
 *               word is a label name inside {} and in grouping lists.
 *   numbers     as strconv.ParseInt(s, 0, 64) then ParseFloat: 0x1f, 1e3, .5, and a
 *               leading 0 makes an integer octal (017 = 15, 019 = 19); Inf/NaN in any case.
 *   strings     "…" and '…' with Go's escapes (\a \b \f \n \r \t \v \\ \<quote> \ooo \xhh
 *               \uhhhh \Uhhhhhhhh), `raw` verbatim; valid UTF-8 only.
 *   durations   (digits unit)+ with units in the order y w d h m s ms, each at most
 *               once, > 0 in ranges and offsets; `offset -5m` is allowed.
 * Errors come in two kinds, as in Prometheus: a syntax error stops the parse at once;
 * a type error (argument types and counts, operand types, selector checks) is noted and
 * the parse goes on, so a query that is also syntactically broken reports the syntax
 * error, which is the one to fix first. The message is "parse error at char N: …",
 * N the 1-based byte position.
 *
 * Outside the subset, with errors that say so: subqueries, @, group_left/group_right,
 * atan2, and the other Prometheus functions and aggregations.
 *
 * Deviations, chosen for the evaluator's sake: a parenthesised range vector, which is
 * only legal as a function argument or as the whole query, is returned as the range
 * selector itself (Prometheus' engine unwraps it the same way), so every node of type
 * range vector is a PQ_MATRIX_SELECTOR; strings may not contain NUL (they are C
 * strings); the tree may be at most PQ_MAX_DEPTH nodes deep (a 64 KiB `1+1+…` would
 * otherwise be 32768 levels for the evaluator to recurse through); regular expressions
 * are compiled here with common/promre, as the store will match them, so a bad one is a
 * parse error, and one that glibc's regex would take long over is refused first: stacked
 * repetition operators (a*+, an error in Go's regexp too) and repetitions whose compiled
 * form would be huge (see REGEX_MAX_EXPANSION).
 *
 * MEMORY
 * All nodes and strings of a tree come from one arena owned by the pq_expr. Its budget
 * follows from the query's length: every node consumes at least one byte of the query
 * that no other node consumes (a number, a name, an operator, a pair of parentheses),
 * and every string the tree holds is a decoded or copied piece of the query plus a NUL,
 * so a query of n bytes needs at most n nodes and 2n bytes of strings. Running past
 * that budget would be a bug here, and fails with -ENOMEM rather than growing. A node is
 * ~800 bytes (pq_node holds its matcher and label arrays inline), so the densest 64 KiB
 * query, a shallow tree of `(1+1)+(1+1)…`, takes ~45 MB for ~20 ms.
 */
#include "stele/promql.h"

#include <errno.h>
#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/promre.h"

/* First arena block; most queries are a handful of nodes of ~800 bytes each. */
#define ARENA_FIRST_BLOCK (8u * 1024u)
/* Blocks double up to this size, so a big query costs few mallocs and wastes little. */
#define ARENA_MAX_BLOCK (1024u * 1024u)
/* Messages quote pieces of the query; longer pieces are cut, as Prometheus does. */
#define QUOTE_MAX_BYTES 40
/* glibc's regcomp copies a bounded repetition's operand once per repeat, so `(a{99}){99}`
 * compiles to ~10^4 nodes and one more level to ~10^6. This bounds the product of
 * repetition counts along any nesting path times the pattern's size: enough for any
 * real label regex (hostnames, IPs, `.{0,1000}`), small enough that compiling one costs
 * at most ~10 ms and ~15 MB. */
#define REGEX_MAX_EXPANSION 65536u
/* The same bound over all regexes of one query, so a 64 KiB query of thousands of
 * near-limit regexes cannot buy seconds of compiling (each near-limit one is ~10 ms). */
#define REGEX_MAX_TOTAL_EXPANSION (16u * REGEX_MAX_EXPANSION)
/* Group nesting in a regex. glibc's regex parser recurses per group; this keeps its
 * stack use small, and no real label regex nests deeper. */
#define REGEX_MAX_NESTING PQ_MAX_DEPTH

/* ---- arena ---------------------------------------------------------------------- */

typedef struct arena_block {
    struct arena_block *next;
    size_t used, cap;
    max_align_t data[]; /* cap bytes */
} arena_block;

struct pq_expr {
    arena_block *blocks;
    size_t charged; /* bytes handed out */
    size_t budget;  /* what the query's length allows (see MEMORY above) */
    pq_node *root;
};

/* Every node carries, out of the public struct's sight, its subtree's height (for the
 * PQ_MAX_DEPTH bound) and whether it stood in parentheses (for range vectors, whose
 * parentheses are dropped but still forbid `offset` and `[…]` after them). */
typedef struct {
    pq_node node; /* first, so a pq_node * is a node_box * */
    uint32_t height;
    bool parenthesized;
} node_box;

static node_box *box_of(const pq_node *n)
{
    return (node_box *)n;
}

static void *arena_alloc(pq_expr *e, size_t size, size_t align)
{
    if (size > e->budget - e->charged)
        return NULL;
    arena_block *b = e->blocks;
    size_t at = b ? (b->used + align - 1) & ~(align - 1) : 0;
    if (!b || at + size > b->cap) {
        size_t cap = b ? b->cap * 2 : ARENA_FIRST_BLOCK;
        if (cap > ARENA_MAX_BLOCK)
            cap = ARENA_MAX_BLOCK;
        if (cap < size)
            cap = size;
        arena_block *nb = malloc(sizeof(*nb) + cap);
        if (!nb)
            return NULL;
        nb->next = b;
        nb->used = 0;
        nb->cap = cap;
        e->blocks = nb;
        b = nb;
        at = 0;
    }
    b->used = at + size;
    e->charged += size;
    return (unsigned char *)b->data + at;
}

/* ---- tables --------------------------------------------------------------------- */

typedef enum {
    KW_AND,
    KW_OR,
    KW_UNLESS,
    KW_ATAN2,
    KW_SUM,
    KW_AVG,
    KW_COUNT,
    KW_MIN,
    KW_MAX,
    KW_TOPK,
    KW_BOTTOMK,
    KW_GROUP,
    KW_STDDEV,
    KW_STDVAR,
    KW_COUNT_VALUES,
    KW_QUANTILE,
    KW_LIMITK,
    KW_LIMIT_RATIO,
    KW_OFFSET,
    KW_BY,
    KW_WITHOUT,
    KW_ON,
    KW_IGNORING,
    KW_GROUP_LEFT,
    KW_GROUP_RIGHT,
    KW_BOOL,
    KW_START,
    KW_END,
} keyword;

typedef enum {
    KWC_OPERATOR,   /* and or unless atan2: printed <op:and> */
    KWC_AGGREGATOR, /* printed <aggr:sum> */
    KWC_MODIFIER,   /* printed <by> */
} keyword_class;

static const struct {
    const char *word;
    keyword kw;
    keyword_class cls;
    bool metric_name_ok; /* Prometheus' metric_identifier accepts it as a metric name */
} keyword_table[] = {
    {"and", KW_AND, KWC_OPERATOR, true},
    {"or", KW_OR, KWC_OPERATOR, true},
    {"unless", KW_UNLESS, KWC_OPERATOR, true},
    {"atan2", KW_ATAN2, KWC_OPERATOR, false},
    {"sum", KW_SUM, KWC_AGGREGATOR, true},
    {"avg", KW_AVG, KWC_AGGREGATOR, true},
    {"count", KW_COUNT, KWC_AGGREGATOR, true},
    {"min", KW_MIN, KWC_AGGREGATOR, true},
    {"max", KW_MAX, KWC_AGGREGATOR, true},
    {"topk", KW_TOPK, KWC_AGGREGATOR, true},
    {"bottomk", KW_BOTTOMK, KWC_AGGREGATOR, true},
    {"group", KW_GROUP, KWC_AGGREGATOR, true},
    {"stddev", KW_STDDEV, KWC_AGGREGATOR, true},
    {"stdvar", KW_STDVAR, KWC_AGGREGATOR, true},
    {"count_values", KW_COUNT_VALUES, KWC_AGGREGATOR, true},
    {"quantile", KW_QUANTILE, KWC_AGGREGATOR, true},
    {"limitk", KW_LIMITK, KWC_AGGREGATOR, true},
    {"limit_ratio", KW_LIMIT_RATIO, KWC_AGGREGATOR, true},
    {"offset", KW_OFFSET, KWC_MODIFIER, true},
    {"by", KW_BY, KWC_MODIFIER, true},
    {"without", KW_WITHOUT, KWC_MODIFIER, true},
    {"on", KW_ON, KWC_MODIFIER, false},
    {"ignoring", KW_IGNORING, KWC_MODIFIER, false},
    {"group_left", KW_GROUP_LEFT, KWC_MODIFIER, false},
    {"group_right", KW_GROUP_RIGHT, KWC_MODIFIER, false},
    {"bool", KW_BOOL, KWC_MODIFIER, false},
    {"start", KW_START, KWC_MODIFIER, true},
    {"end", KW_END, KWC_MODIFIER, true},
};
#define KEYWORD_COUNT (sizeof(keyword_table) / sizeof(keyword_table[0]))

static const char *const binop_names[] = {
    [PQ_OP_ADD] = "+",   [PQ_OP_SUB] = "-", [PQ_OP_MUL] = "*",         [PQ_OP_DIV] = "/",
    [PQ_OP_MOD] = "%",   [PQ_OP_POW] = "^", [PQ_OP_EQ] = "==",         [PQ_OP_NE] = "!=",
    [PQ_OP_GT] = ">",    [PQ_OP_LT] = "<",  [PQ_OP_GE] = ">=",         [PQ_OP_LE] = "<=",
    [PQ_OP_AND] = "and", [PQ_OP_OR] = "or", [PQ_OP_UNLESS] = "unless",
};

static const char *const aggop_names[] = {
    [PQ_AGG_SUM] = "sum",         [PQ_AGG_AVG] = "avg",     [PQ_AGG_MIN] = "min",
    [PQ_AGG_MAX] = "max",         [PQ_AGG_COUNT] = "count", [PQ_AGG_TOPK] = "topk",
    [PQ_AGG_BOTTOMK] = "bottomk",
};

/* Argument types of each function; the last `optional` of them may be left out. */
static const struct {
    const char *name;
    pq_type args[2];
    uint8_t nargs, optional;
} function_table[PQ_FN_COUNT_] = {
    [PQ_FN_RATE] = {"rate", {PQ_TYPE_MATRIX}, 1, 0},
    [PQ_FN_IRATE] = {"irate", {PQ_TYPE_MATRIX}, 1, 0},
    [PQ_FN_INCREASE] = {"increase", {PQ_TYPE_MATRIX}, 1, 0},
    [PQ_FN_DELTA] = {"delta", {PQ_TYPE_MATRIX}, 1, 0},
    [PQ_FN_IDELTA] = {"idelta", {PQ_TYPE_MATRIX}, 1, 0},
    [PQ_FN_MIN_OVER_TIME] = {"min_over_time", {PQ_TYPE_MATRIX}, 1, 0},
    [PQ_FN_MAX_OVER_TIME] = {"max_over_time", {PQ_TYPE_MATRIX}, 1, 0},
    [PQ_FN_AVG_OVER_TIME] = {"avg_over_time", {PQ_TYPE_MATRIX}, 1, 0},
    [PQ_FN_SUM_OVER_TIME] = {"sum_over_time", {PQ_TYPE_MATRIX}, 1, 0},
    [PQ_FN_COUNT_OVER_TIME] = {"count_over_time", {PQ_TYPE_MATRIX}, 1, 0},
    [PQ_FN_LAST_OVER_TIME] = {"last_over_time", {PQ_TYPE_MATRIX}, 1, 0},
    [PQ_FN_ABS] = {"abs", {PQ_TYPE_VECTOR}, 1, 0},
    [PQ_FN_CLAMP_MIN] = {"clamp_min", {PQ_TYPE_VECTOR, PQ_TYPE_SCALAR}, 2, 0},
    [PQ_FN_CLAMP_MAX] = {"clamp_max", {PQ_TYPE_VECTOR, PQ_TYPE_SCALAR}, 2, 0},
    [PQ_FN_ROUND] = {"round", {PQ_TYPE_VECTOR, PQ_TYPE_SCALAR}, 2, 1},
};

/* Prometheus functions outside the subset: named in the error, so the user learns the
 * query is fine PromQL that this server does not run, not a typo. */
static const char *const unsupported_functions[] = {"absent",
                                                    "absent_over_time",
                                                    "acos",
                                                    "acosh",
                                                    "asin",
                                                    "asinh",
                                                    "atan",
                                                    "atanh",
                                                    "ceil",
                                                    "changes",
                                                    "clamp",
                                                    "cos",
                                                    "cosh",
                                                    "day_of_month",
                                                    "day_of_week",
                                                    "day_of_year",
                                                    "days_in_month",
                                                    "deg",
                                                    "deriv",
                                                    "double_exponential_smoothing",
                                                    "exp",
                                                    "floor",
                                                    "histogram_avg",
                                                    "histogram_count",
                                                    "histogram_fraction",
                                                    "histogram_quantile",
                                                    "histogram_stddev",
                                                    "histogram_stdvar",
                                                    "histogram_sum",
                                                    "holt_winters",
                                                    "hour",
                                                    "info",
                                                    "label_join",
                                                    "label_replace",
                                                    "ln",
                                                    "log10",
                                                    "log2",
                                                    "mad_over_time",
                                                    "minute",
                                                    "month",
                                                    "pi",
                                                    "predict_linear",
                                                    "present_over_time",
                                                    "quantile_over_time",
                                                    "rad",
                                                    "resets",
                                                    "scalar",
                                                    "sgn",
                                                    "sin",
                                                    "sinh",
                                                    "sort",
                                                    "sort_by_label",
                                                    "sort_by_label_desc",
                                                    "sort_desc",
                                                    "sqrt",
                                                    "stddev_over_time",
                                                    "stdvar_over_time",
                                                    "tan",
                                                    "tanh",
                                                    "time",
                                                    "timestamp",
                                                    "vector",
                                                    "year"};

const char *pq_function_name(pq_function fn)
{
    return (unsigned)fn < PQ_FN_COUNT_ ? function_table[fn].name : "unknown";
}

const char *pq_aggop_name(pq_aggop op)
{
    return (unsigned)op <= PQ_AGG_BOTTOMK ? aggop_names[op] : "unknown";
}

const char *pq_binop_name(pq_binop op)
{
    return (unsigned)op <= PQ_OP_UNLESS ? binop_names[op] : "unknown";
}

static const char *type_name(pq_type t)
{
    switch (t) {
    case PQ_TYPE_SCALAR:
        return "scalar";
    case PQ_TYPE_VECTOR:
        return "instant vector";
    case PQ_TYPE_MATRIX:
        return "range vector";
    case PQ_TYPE_STRING:
        return "string";
    }
    return "unknown";
}

/* ---- durations ------------------------------------------------------------------ */

/* Units in the only order Prometheus accepts them, each at most once. */
static const struct {
    const char *unit;
    int64_t ns;
} duration_units[] = {
    {"y", 365LL * 24 * 3600 * 1000000000LL},
    {"w", 7LL * 24 * 3600 * 1000000000LL},
    {"d", 24LL * 3600 * 1000000000LL},
    {"h", 3600LL * 1000000000LL},
    {"m", 60LL * 1000000000LL},
    {"s", 1000000000LL},
    {"ms", 1000000LL},
};
#define DURATION_UNIT_COUNT (sizeof(duration_units) / sizeof(duration_units[0]))

/* 0, -EINVAL for text that is no duration, -ERANGE past int64 nanoseconds (~292 y). */
static int duration_parse(const char *text, size_t len, int64_t *ns)
{
    size_t i = 0, next_unit = 0;
    int64_t total = 0;
    bool overflow = false;
    if (len == 1 && text[0] == '0') { /* Prometheus allows a bare 0 */
        *ns = 0;
        return 0;
    }
    if (len == 0)
        return -EINVAL;
    while (i < len) {
        if (text[i] < '0' || text[i] > '9')
            return -EINVAL;
        uint64_t n = 0;
        while (i < len && text[i] >= '0' && text[i] <= '9') {
            if (n > (UINT64_MAX - 9) / 10)
                overflow = true;
            else
                n = n * 10 + (uint64_t)(text[i] - '0');
            i++;
        }
        size_t u;
        for (u = next_unit; u < DURATION_UNIT_COUNT; u++) {
            size_t ulen = strlen(duration_units[u].unit);
            /* "m" must not take the m of "ms" */
            if (ulen <= len - i && memcmp(text + i, duration_units[u].unit, ulen) == 0 &&
                !(ulen == 1 && text[i] == 'm' && i + 1 < len && text[i + 1] == 's'))
                break;
        }
        if (u == DURATION_UNIT_COUNT)
            return -EINVAL;
        i += strlen(duration_units[u].unit);
        next_unit = u + 1;
        if (n > (uint64_t)(INT64_MAX / duration_units[u].ns))
            overflow = true;
        else if (!overflow) {
            int64_t part = (int64_t)n * duration_units[u].ns;
            if (part > INT64_MAX - total)
                overflow = true;
            else
                total += part;
        }
    }
    if (overflow)
        return -ERANGE;
    *ns = total;
    return 0;
}

int pq_parse_duration(const char *text, size_t len, int64_t *ns)
{
    int64_t v;
    if (!text || !ns || duration_parse(text, len, &v) != 0)
        return -EINVAL;
    *ns = v;
    return 0;
}

/* ---- parser state --------------------------------------------------------------- */

typedef enum {
    TOK_EOF,
    TOK_ERROR, /* the lexer's message is already recorded */
    TOK_NUMBER,
    TOK_DURATION,
    TOK_STRING,
    TOK_IDENTIFIER,        /* [a-zA-Z_][a-zA-Z0-9_]*, not a keyword */
    TOK_METRIC_IDENTIFIER, /* holds a ':' */
    TOK_KEYWORD,
    TOK_OPERATOR,
    TOK_LEFT_PAREN,
    TOK_RIGHT_PAREN,
    TOK_LEFT_BRACE,
    TOK_RIGHT_BRACE, /* only inside braces */
    TOK_LEFT_BRACKET,
    TOK_COMMA,
    TOK_EQUAL,    /* a lone '=' outside braces */
    TOK_MATCH_OP, /* inside braces: = != =~ !~ */
    TOK_AT,
} token_kind;

typedef struct {
    token_kind kind;
    uint32_t start, end;    /* bytes [start, end) of the query */
    keyword kw;             /* TOK_KEYWORD */
    pq_binop op;            /* TOK_OPERATOR */
    stele_match_type match; /* TOK_MATCH_OP */
    double number;          /* TOK_NUMBER */
    const char *string;     /* TOK_STRING, decoded, in the arena */
} token;

typedef struct {
    const char *src;
    size_t len;
    size_t pos; /* scanner position */
    token tok;  /* lookahead, valid when have_tok */
    bool have_tok;
    int paren_depth; /* '(' the lexer handed out minus ')' */
    unsigned depth;  /* parse_expr recursion */
    pq_expr *expr;   /* the arena */
    bool syntax_failed;
    bool oom;
    char syntax_msg[256];
    char type_msg[256]; /* the first type error; reported if no syntax error comes */
    bool type_failed;
    size_t regex_expansion; /* summed over the query's regexes so far */
} parser;

static void vformat_error(char *buf, size_t cap, size_t pos, const char *fmt, va_list ap)
{
    int n = snprintf(buf, cap, "parse error at char %zu: ", pos + 1);
    if (n > 0 && (size_t)n < cap)
        vsnprintf(buf + n, cap - (size_t)n, fmt, ap);
}

/* Records a syntax error (the first one wins) and returns -EINVAL to unwind with. */
__attribute__((format(printf, 3, 4))) static int syntax_error(parser *p, size_t pos,
                                                              const char *fmt, ...)
{
    if (!p->syntax_failed) {
        va_list ap;
        va_start(ap, fmt);
        vformat_error(p->syntax_msg, sizeof(p->syntax_msg), pos, fmt, ap);
        va_end(ap);
        p->syntax_failed = true;
    }
    return -EINVAL;
}

/* Records a type error (the first one wins); parsing goes on. */
__attribute__((format(printf, 3, 4))) static void type_error(parser *p, size_t pos, const char *fmt,
                                                             ...)
{
    if (!p->type_failed) {
        va_list ap;
        va_start(ap, fmt);
        vformat_error(p->type_msg, sizeof(p->type_msg), pos, fmt, ap);
        va_end(ap);
        p->type_failed = true;
    }
}

static int out_of_memory(parser *p)
{
    p->oom = true;
    return -ENOMEM;
}

/* Appends s[0..len) to buf (cap bytes, NUL-terminated) with what is not printable ASCII
 * as \xNN, and " and \ escaped when quoting; stops after max bytes with "...". So
 * messages stay short, printable and valid UTF-8 whatever the query holds. */
static void escape_text(char *buf, size_t cap, const char *s, size_t len, size_t max, bool quoting)
{
    size_t o = strlen(buf);
    for (size_t i = 0; i < len && o + 8 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (i == max) {
            o += (size_t)snprintf(buf + o, cap - o, "...");
            break;
        }
        if (quoting && (c == '"' || c == '\\'))
            o += (size_t)snprintf(buf + o, cap - o, "\\%c", c);
        else if (c >= 0x20 && c < 0x7f)
            buf[o++] = (char)c;
        else
            o += (size_t)snprintf(buf + o, cap - o, "\\x%02x", c);
    }
    buf[o] = '\0';
}

/* s[0..len) double-quoted and escaped, cut after QUOTE_MAX_BYTES. */
static const char *quote_text(char *buf, size_t cap, const char *s, size_t len)
{
    snprintf(buf, cap, "\"");
    escape_text(buf, cap - 1, s, len, QUOTE_MAX_BYTES, true);
    strcat(buf, "\"");
    return buf;
}

/* One byte of the query as Go's %q shows a character: 'x', '\n', '\x00'. */
static const char *quote_char(char *buf, size_t cap, const char *s)
{
    unsigned char c = (unsigned char)s[0];
    if (c == '\'' || c == '\\')
        snprintf(buf, cap, "'\\%c'", c);
    else if (c >= 0x20 && c < 0x7f)
        snprintf(buf, cap, "'%c'", c);
    else if (c == '\n')
        snprintf(buf, cap, "'\\n'");
    else if (c == '\t')
        snprintf(buf, cap, "'\\t'");
    else if (c == '\r')
        snprintf(buf, cap, "'\\r'");
    else
        snprintf(buf, cap, "'\\x%02x'", c);
    return buf;
}

/* ---- UTF-8 ---------------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at s (as Go decodes: no overlongs, surrogates or
 * code points past U+10FFFF), or 0. */
static size_t utf8_sequence(const unsigned char *s, size_t avail)
{
    unsigned char c = s[0];
    size_t n;
    uint32_t cp, min;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
        cp = c & 0x1F;
        min = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        cp = c & 0x0F;
        min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        cp = c & 0x07;
        min = 0x10000;
    } else {
        return 0;
    }
    if (avail < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return n;
}

static size_t utf8_encode(uint32_t cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* ---- scanning helpers ----------------------------------------------------------- */

static bool is_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool is_alnum(char c)
{
    return is_alpha(c) || is_digit(c);
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static char char_at(const parser *p, size_t i)
{
    return i < p->len ? p->src[i] : '\0';
}

static bool at_end(const parser *p)
{
    return p->pos >= p->len;
}

/* Skips blanks and # comments (to the end of the line). */
static void skip_blanks(parser *p)
{
    while (p->pos < p->len) {
        char c = p->src[p->pos];
        if (is_space(c)) {
            p->pos++;
        } else if (c == '#') {
            while (p->pos < p->len && p->src[p->pos] != '\n' && p->src[p->pos] != '\r')
                p->pos++;
        } else {
            break;
        }
    }
}

static bool accept_one_of(parser *p, const char *set)
{
    if (!at_end(p) && p->src[p->pos] != '\0' && strchr(set, p->src[p->pos])) {
        p->pos++;
        return true;
    }
    return false;
}

static void accept_run(parser *p, const char *set)
{
    while (accept_one_of(p, set))
        ;
}

static char *arena_strndup(parser *p, const char *s, size_t len)
{
    char *d = arena_alloc(p->expr, len + 1, 1);
    if (!d)
        return NULL;
    memcpy(d, s, len);
    d[len] = '\0';
    return d;
}

/* ---- numbers -------------------------------------------------------------------- */

static pthread_once_t c_locale_once = PTHREAD_ONCE_INIT;
static locale_t c_locale;

static void c_locale_create(void)
{
    c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0);
}

/* Scans what Prometheus 2.x's scanNumber accepts; true if a number ends here (the next
 * character is not alphanumeric). */
static bool scan_number(parser *p)
{
    const char *digits = "0123456789";
    if (char_at(p, p->pos) == '0' &&
        (char_at(p, p->pos + 1) == 'x' || char_at(p, p->pos + 1) == 'X')) {
        p->pos += 2;
        digits = "0123456789abcdefABCDEF";
    }
    accept_run(p, digits);
    if (accept_one_of(p, "."))
        accept_run(p, digits);
    if (accept_one_of(p, "eE")) {
        accept_one_of(p, "+-");
        accept_run(p, "0123456789");
    }
    return !is_alnum(char_at(p, p->pos));
}

/* The rest of a duration after its first number: unit, then (digits unit)*; true if it
 * ends before a non-alphanumeric character. The units are checked later. */
static bool scan_duration_rest(parser *p)
{
    if (!accept_one_of(p, "smhdwy"))
        return false;
    accept_one_of(p, "s");
    while (accept_one_of(p, "0123456789")) {
        accept_run(p, "0123456789");
        if (!accept_one_of(p, "smhdw"))
            return false;
        accept_one_of(p, "s");
    }
    return !is_alnum(char_at(p, p->pos));
}

/* The value of a number token as strconv.ParseInt(s, 0, 64), else ParseFloat(s, 64). */
static int number_value(parser *p, const char *s, size_t len, double *out)
{
    char buf[128];
    char q[64];
    if (len >= 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        uint64_t v = 0;
        bool ok = len > 2;
        for (size_t i = 2; i < len && ok; i++) {
            int h = hex_value(s[i]);
            if (h < 0 || v > ((uint64_t)INT64_MAX - (uint64_t)h) / 16)
                ok = false;
            else
                v = v * 16 + (uint64_t)h;
        }
        if (!ok) /* ParseFloat wants a p exponent in hex, which the lexer never takes */
            return syntax_error(p, (size_t)(s - p->src), "error parsing number %s: invalid syntax",
                                quote_text(q, sizeof(q), s, len));
        *out = (double)v;
        return 0;
    }
    size_t octal_digits = 0;
    while (octal_digits < len && s[octal_digits] >= '0' && s[octal_digits] <= '7')
        octal_digits++;
    if (len >= 2 && s[0] == '0' && octal_digits == len) {
        uint64_t v = 0;
        bool ok = true;
        for (size_t i = 1; i < len && ok; i++) {
            if (v > ((uint64_t)INT64_MAX - 7) / 8)
                ok = false;
            else
                v = v * 8 + (uint64_t)(s[i] - '0');
        }
        if (ok) {
            *out = (double)v;
            return 0;
        }
        /* out of int64 range: ParseFloat reads it as decimal */
    }
    char *copy = len < sizeof(buf) ? buf : malloc(len + 1);
    if (!copy)
        return out_of_memory(p);
    memcpy(copy, s, len);
    copy[len] = '\0';
    char *end;
    double v = strtod_l(copy, &end, c_locale);
    bool whole = end == copy + len;
    if (copy != buf)
        free(copy);
    if (!whole)
        return syntax_error(p, (size_t)(s - p->src), "error parsing number %s: invalid syntax",
                            quote_text(q, sizeof(q), s, len));
    if (isinf(v))
        return syntax_error(p, (size_t)(s - p->src), "error parsing number %s: value out of range",
                            quote_text(q, sizeof(q), s, len));
    *out = v;
    return 0;
}

/* ---- strings -------------------------------------------------------------------- */

/* Decodes the string whose opening quote is at p->pos into the arena. */
static int lex_string(parser *p, token *t)
{
    char q[16];
    size_t start = p->pos;
    char quote = p->src[p->pos++];
    /* Decoding only shrinks, so the raw text up to the closing quote (or to where the
     * string turns out unterminated) bounds the decoded one. */
    size_t raw_end = p->pos;
    while (raw_end < p->len && p->src[raw_end] != quote &&
           (quote == '`' || p->src[raw_end] != '\n'))
        raw_end += (p->src[raw_end] == '\\' && quote != '`' && raw_end + 1 < p->len) ? 2 : 1;
    char *out = arena_alloc(p->expr, raw_end - start, 1);
    size_t o = 0;
    if (!out)
        return out_of_memory(p);
    for (;;) {
        if (at_end(p))
            return syntax_error(
                p, start, quote == '`' ? "unterminated raw string" : "unterminated quoted string");
        size_t at = p->pos;
        unsigned char c = (unsigned char)p->src[p->pos];
        if (c == (unsigned char)quote) {
            p->pos++;
            break;
        }
        if (c == '\n' && quote != '`')
            return syntax_error(p, start, "unterminated quoted string");
        if (c == '\0')
            return syntax_error(p, at, "strings may not contain NUL characters");
        if (c >= 0x80) {
            size_t n = utf8_sequence((const unsigned char *)p->src + at, p->len - at);
            if (n == 0)
                return syntax_error(p, at, "invalid UTF-8 rune");
            memcpy(out + o, p->src + at, n);
            o += n;
            p->pos += n;
            continue;
        }
        p->pos++;
        if (c != '\\' || quote == '`') {
            out[o++] = (char)c;
            continue;
        }
        if (at_end(p))
            return syntax_error(p, at, "escape sequence not terminated");
        char e = p->src[p->pos++];
        int ndigits = 0, base = 0;
        uint32_t max = 0;
        switch (e) {
        case 'a':
            out[o++] = '\a';
            continue;
        case 'b':
            out[o++] = '\b';
            continue;
        case 'f':
            out[o++] = '\f';
            continue;
        case 'n':
            out[o++] = '\n';
            continue;
        case 'r':
            out[o++] = '\r';
            continue;
        case 't':
            out[o++] = '\t';
            continue;
        case 'v':
            out[o++] = '\v';
            continue;
        case '\\':
            out[o++] = '\\';
            continue;
        case '0':
        case '1':
        case '2':
        case '3':
        case '4':
        case '5':
        case '6':
        case '7':
            p->pos--; /* the first digit is part of the value */
            ndigits = 3;
            base = 8;
            max = 255;
            break;
        case 'x':
            ndigits = 2;
            base = 16;
            max = 255;
            break;
        case 'u':
            ndigits = 4;
            base = 16;
            max = 0x10FFFF;
            break;
        case 'U':
            ndigits = 8;
            base = 16;
            max = 0x10FFFF;
            break;
        default:
            if (e == quote) {
                out[o++] = e;
                continue;
            }
            if ((unsigned char)e >= 0x20 && (unsigned char)e < 0x7f)
                return syntax_error(p, at, "unknown escape sequence U+%04X '%c'", (unsigned)e, e);
            return syntax_error(p, at, "unknown escape sequence U+%04X",
                                (unsigned)(unsigned char)e);
        }
        uint32_t v = 0;
        for (int i = 0; i < ndigits; i++) {
            if (at_end(p))
                return syntax_error(p, at, "escape sequence not terminated");
            char d = p->src[p->pos];
            int dv = hex_value(d);
            if (dv < 0 || dv >= base)
                return syntax_error(p, p->pos, "illegal character %s in escape sequence",
                                    quote_char(q, sizeof(q), &d));
            v = v * (uint32_t)base + (uint32_t)dv;
            p->pos++;
        }
        if (v > max || (v >= 0xD800 && v < 0xE000 && max > 255))
            return syntax_error(p, at, "escape sequence is an invalid Unicode code point");
        if (v == 0)
            return syntax_error(p, at, "strings may not contain NUL characters");
        if (e == 'u' || e == 'U')
            o += utf8_encode(v, out + o);
        else
            out[o++] = (char)v; /* \x and octal give bytes, as in Go */
    }
    out[o] = '\0';
    t->kind = TOK_STRING;
    t->string = out;
    return 0;
}

/* ---- lexer ---------------------------------------------------------------------- */

static bool keyword_lookup(const char *s, size_t len, keyword *kw)
{
    for (size_t i = 0; i < KEYWORD_COUNT; i++) {
        if (strlen(keyword_table[i].word) == len &&
            strncasecmp(keyword_table[i].word, s, len) == 0) {
            *kw = keyword_table[i].kw;
            return true;
        }
    }
    return false;
}

static bool is_inf_or_nan(const char *s, size_t len, double *v)
{
    if (len == 3 && strncasecmp(s, "inf", 3) == 0) {
        *v = INFINITY;
        return true;
    }
    if (len == 3 && strncasecmp(s, "nan", 3) == 0) {
        *v = NAN;
        return true;
    }
    return false;
}

/* Number or duration starting at p->pos (a digit, or '.' and a digit). */
static int lex_number_or_duration(parser *p, token *t, bool in_brackets)
{
    char q[64];
    size_t start = p->pos;
    if (scan_number(p)) {
        if (in_brackets)
            return syntax_error(p, start, "missing unit character in duration");
        t->kind = TOK_NUMBER;
        return number_value(p, p->src + start, p->pos - start, &t->number);
    }
    if (scan_duration_rest(p)) {
        t->kind = TOK_DURATION;
        return 0;
    }
    while (is_alnum(char_at(p, p->pos)))
        p->pos++;
    return syntax_error(
        p, start, in_brackets ? "bad duration syntax: %s" : "bad number or duration syntax: %s",
        quote_text(q, sizeof(q), p->src + start, p->pos - start));
}

/* Lexes the next token outside braces and brackets into t. */
static int lex_statement_token(parser *p, token *t)
{
    char q[16];
    skip_blanks(p);
    memset(t, 0, sizeof(*t));
    t->start = (uint32_t)p->pos;
    int rc = 0;
    if (at_end(p)) {
        if (p->paren_depth > 0)
            return syntax_error(p, p->pos, "unclosed left parenthesis");
        t->kind = TOK_EOF;
        t->end = t->start;
        return 0;
    }
    char c = p->src[p->pos];
    char n = char_at(p, p->pos + 1);
    t->kind = TOK_OPERATOR;
    switch (c) {
    case '+':
        t->op = PQ_OP_ADD;
        p->pos++;
        break;
    case '-':
        t->op = PQ_OP_SUB;
        p->pos++;
        break;
    case '*':
        t->op = PQ_OP_MUL;
        p->pos++;
        break;
    case '/':
        t->op = PQ_OP_DIV;
        p->pos++;
        break;
    case '%':
        t->op = PQ_OP_MOD;
        p->pos++;
        break;
    case '^':
        t->op = PQ_OP_POW;
        p->pos++;
        break;
    case '=':
        if (n == '=') {
            t->op = PQ_OP_EQ;
            p->pos += 2;
        } else if (n == '~') {
            return syntax_error(p, p->pos, "unexpected character after '=': '~'");
        } else {
            t->kind = TOK_EQUAL;
            p->pos++;
        }
        break;
    case '!':
        if (n != '=')
            return syntax_error(p, p->pos, "unexpected character after '!': %s",
                                p->pos + 1 < p->len ? quote_char(q, sizeof(q), p->src + p->pos + 1)
                                                    : "end of input");
        t->op = PQ_OP_NE;
        p->pos += 2;
        break;
    case '<':
        t->op = n == '=' ? PQ_OP_LE : PQ_OP_LT;
        p->pos += n == '=' ? 2 : 1;
        break;
    case '>':
        t->op = n == '=' ? PQ_OP_GE : PQ_OP_GT;
        p->pos += n == '=' ? 2 : 1;
        break;
    case ',':
        t->kind = TOK_COMMA;
        p->pos++;
        break;
    case '(':
        t->kind = TOK_LEFT_PAREN;
        p->paren_depth++;
        p->pos++;
        break;
    case ')':
        if (p->paren_depth == 0)
            return syntax_error(p, p->pos, "unexpected right parenthesis ')'");
        t->kind = TOK_RIGHT_PAREN;
        p->paren_depth--;
        p->pos++;
        break;
    case '{':
        t->kind = TOK_LEFT_BRACE;
        p->pos++;
        break;
    case '[':
        t->kind = TOK_LEFT_BRACKET;
        p->pos++;
        break;
    case ']':
        return syntax_error(p, p->pos, "unexpected right bracket ']'");
    case '@':
        t->kind = TOK_AT;
        p->pos++;
        break;
    case '"':
    case '\'':
    case '`':
        rc = lex_string(p, t);
        break;
    default:
        if (is_digit(c) || (c == '.' && is_digit(n))) {
            rc = lex_number_or_duration(p, t, false);
        } else if (is_alpha(c) || c == ':') {
            bool has_colon = false;
            while (!at_end(p) && (is_alnum(p->src[p->pos]) || p->src[p->pos] == ':'))
                has_colon |= p->src[p->pos++] == ':';
            const char *w = p->src + t->start;
            size_t wlen = p->pos - t->start;
            if (has_colon)
                t->kind = TOK_METRIC_IDENTIFIER;
            else if (keyword_lookup(w, wlen, &t->kw))
                t->kind = TOK_KEYWORD;
            else if (is_inf_or_nan(w, wlen, &t->number))
                t->kind = TOK_NUMBER;
            else
                t->kind = TOK_IDENTIFIER;
        } else {
            size_t avail = p->len - p->pos;
            size_t nb = (unsigned char)c >= 0x80
                            ? utf8_sequence((const unsigned char *)p->src + p->pos, avail)
                            : 0;
            if (nb > 1)
                return syntax_error(p, p->pos, "unexpected character: '%.*s'", (int)nb,
                                    p->src + p->pos);
            return syntax_error(p, p->pos, "unexpected character: %s",
                                quote_char(q, sizeof(q), p->src + p->pos));
        }
    }
    t->end = (uint32_t)p->pos;
    return rc;
}

/* The lookahead token; a lexer error turns into TOK_ERROR, which no rule accepts, so
 * it surfaces as a failure wherever it is met with its message already recorded. */
static const token *peek(parser *p)
{
    if (!p->have_tok) {
        if (lex_statement_token(p, &p->tok) != 0) {
            p->tok.kind = TOK_ERROR;
            p->tok.start = p->tok.end = (uint32_t)p->pos;
        }
        p->have_tok = true;
    }
    return &p->tok;
}

static void advance(parser *p)
{
    p->have_tok = false;
}

static bool peek_keyword(parser *p, keyword kw)
{
    const token *t = peek(p);
    return t->kind == TOK_KEYWORD && t->kw == kw;
}

static const char *keyword_class_of(keyword kw)
{
    for (size_t i = 0; i < KEYWORD_COUNT; i++)
        if (keyword_table[i].kw == kw)
            return keyword_table[i].cls == KWC_OPERATOR     ? "op:"
                   : keyword_table[i].cls == KWC_AGGREGATOR ? "aggr:"
                                                            : "";
    return "";
}

/* How Prometheus names a token in "unexpected …" messages. */
static const char *describe_token(const parser *p, const token *t, char *buf, size_t cap)
{
    char q[QUOTE_MAX_BYTES * 4 + 16];
    const char *text = p->src + t->start;
    int len = (int)(t->end - t->start);
    switch (t->kind) {
    case TOK_EOF:
        return "end of input";
    case TOK_ERROR:
        return "error";
    case TOK_NUMBER:
        snprintf(buf, cap, "number %s", quote_text(q, sizeof(q), text, (size_t)len));
        return buf;
    case TOK_DURATION:
        snprintf(buf, cap, "duration %s", quote_text(q, sizeof(q), text, (size_t)len));
        return buf;
    case TOK_STRING:
        snprintf(buf, cap, "string %s", quote_text(q, sizeof(q), text, (size_t)len));
        return buf;
    case TOK_IDENTIFIER:
        snprintf(buf, cap, "identifier %s", quote_text(q, sizeof(q), text, (size_t)len));
        return buf;
    case TOK_METRIC_IDENTIFIER:
        snprintf(buf, cap, "metric identifier %s", quote_text(q, sizeof(q), text, (size_t)len));
        return buf;
    case TOK_KEYWORD:
        snprintf(buf, cap, "<%s%.*s>", keyword_class_of(t->kw), len, text);
        return buf;
    case TOK_OPERATOR:
    case TOK_MATCH_OP:
        snprintf(buf, cap, "<op:%.*s>", len, text);
        return buf;
    default:
        snprintf(buf, cap, "\"%.*s\"", len, text);
        return buf;
    }
}

/* "unexpected <token>[ in <context>][, expected <what>]" at the token. */
static int unexpected(parser *p, const token *t, const char *context, const char *expected)
{
    char d[QUOTE_MAX_BYTES * 4 + 64];
    if (t->kind == TOK_ERROR)
        return -EINVAL; /* the lexer said why */
    const char *what = describe_token(p, t, d, sizeof(d));
    return syntax_error(p, t->start, "unexpected %s%s%s%s%s", what, context ? " in " : "",
                        context ? context : "", expected ? ", expected " : "",
                        expected ? expected : "");
}

/* ---- nodes ---------------------------------------------------------------------- */

static pq_node *node_new(parser *p, pq_node_kind kind, pq_type type, size_t pos)
{
    node_box *b = arena_alloc(p->expr, sizeof(node_box), _Alignof(node_box));
    if (!b)
        return NULL;
    memset(b, 0, sizeof(*b));
    b->node.kind = kind;
    b->node.type = type;
    b->node.pos = (uint32_t)pos;
    b->height = 1;
    return &b->node;
}

/* Sets n's height from its children; a syntax error past PQ_MAX_DEPTH. */
static int node_seal(parser *p, pq_node *n)
{
    uint32_t h = 0;
    const pq_node *kids[PQ_MAX_ARGS + 1] = {0};
    size_t nkids = 0;
    switch (n->kind) {
    case PQ_MATRIX_SELECTOR:
        kids[nkids++] = n->matrix.selector;
        break;
    case PQ_CALL:
        for (size_t i = 0; i < n->call.nargs && i < PQ_MAX_ARGS; i++)
            kids[nkids++] = n->call.args[i];
        break;
    case PQ_AGGREGATE:
        kids[nkids++] = n->aggregate.expr;
        kids[nkids++] = n->aggregate.param;
        break;
    case PQ_BINARY:
        kids[nkids++] = n->binary.lhs;
        kids[nkids++] = n->binary.rhs;
        break;
    case PQ_UNARY_MINUS:
    case PQ_PAREN:
        kids[nkids++] = n->unary.expr;
        break;
    default:
        break;
    }
    for (size_t i = 0; i < nkids; i++)
        if (kids[i] && box_of(kids[i])->height > h)
            h = box_of(kids[i])->height;
    box_of(n)->height = h + 1;
    if (h + 1 > PQ_MAX_DEPTH)
        return syntax_error(p, n->pos, "query too deeply nested (at most %d levels)", PQ_MAX_DEPTH);
    return 0;
}

/* ---- regular expressions -------------------------------------------------------- */

static size_t sat_add(size_t a, size_t b)
{
    return a > SIZE_MAX - b ? SIZE_MAX : a + b;
}

static size_t sat_mul(size_t a, size_t b)
{
    return b && a > SIZE_MAX / b ? SIZE_MAX : a * b;
}

typedef struct {
    const char *s;
    size_t i;
    unsigned depth;
    bool too_deep;
    size_t nested_repeat_at; /* where a repetition operator follows another; 0 if none */
    size_t nested_repeat_len;
} regex_scan;

static size_t regex_alternation(regex_scan *r);

/* Skips a bracket expression ([abc], [^]a], [[:alpha:]]); r->i is past the '['. */
static void regex_skip_bracket(regex_scan *r)
{
    if (r->s[r->i] == '^')
        r->i++;
    if (r->s[r->i] == ']')
        r->i++;
    while (r->s[r->i] && r->s[r->i] != ']') {
        if (r->s[r->i] == '[' &&
            (r->s[r->i + 1] == ':' || r->s[r->i + 1] == '.' || r->s[r->i + 1] == '=')) {
            char close = r->s[r->i + 1];
            r->i += 2;
            while (r->s[r->i] && !(r->s[r->i] == close && r->s[r->i + 1] == ']'))
                r->i++;
            if (r->s[r->i])
                r->i += 2;
        } else {
            r->i++;
        }
    }
    if (r->s[r->i])
        r->i++;
}

/* A rough count of the nodes regcomp builds: an atom is 1, a group its contents, and a
 * repetition {n,m} multiplies its operand by m+1 (glibc copies it that often). */
static size_t regex_branch(regex_scan *r)
{
    size_t total = 0;
    while (r->s[r->i] && r->s[r->i] != '|' && !(r->s[r->i] == ')' && r->depth > 0)) {
        size_t atom = 1;
        char c = r->s[r->i++];
        if (c == '(') {
            if (++r->depth > REGEX_MAX_NESTING) {
                r->too_deep = true;
                return SIZE_MAX;
            }
            atom = sat_add(regex_alternation(r), 1);
            if (r->too_deep)
                return SIZE_MAX;
            r->depth--;
            if (r->s[r->i] == ')')
                r->i++;
        } else if (c == '[') {
            regex_skip_bracket(r);
        } else if (c == '\\' && r->s[r->i]) {
            r->i++;
        }
        /* Go's regexp (Prometheus) refuses a repetition of a repetition ("a**", "a?+",
         * "a{2}{3}"), and glibc's regex takes exponential time on stacks of them
         * (a*+*+*+*+ runs for minutes), so the first stacked operator is noted. A '?'
         * right after an operator is Go's lazy marker, which promre refuses itself. */
        size_t repeat_start = 0;
        for (;;) {
            char qc = r->s[r->i];
            size_t op_start = r->i;
            if (qc == '*' || qc == '+' || qc == '?') {
                atom = sat_mul(atom, 2);
                r->i++;
            } else if (qc == '{' && is_digit(r->s[r->i + 1])) {
                size_t j = r->i + 1, lo = 0, hi = 0;
                while (is_digit(r->s[j]))
                    lo = sat_add(sat_mul(lo, 10), (size_t)(r->s[j++] - '0'));
                hi = lo;
                if (r->s[j] == ',') {
                    j++;
                    if (is_digit(r->s[j])) {
                        hi = 0;
                        while (is_digit(r->s[j]))
                            hi = sat_add(sat_mul(hi, 10), (size_t)(r->s[j++] - '0'));
                    }
                }
                if (r->s[j] != '}')
                    break; /* not a repetition; promre judges it */
                r->i = j + 1;
                atom = sat_mul(atom, sat_add(hi > lo ? hi : lo, 1));
            } else {
                break;
            }
            if (repeat_start && !r->nested_repeat_at) {
                r->nested_repeat_at = repeat_start;
                r->nested_repeat_len = r->i - repeat_start;
            }
            if (!repeat_start)
                repeat_start = op_start;
            if (r->s[r->i] == '?')
                r->i++; /* lazy */
        }
        total = sat_add(total, atom);
    }
    return total;
}

static size_t regex_alternation(regex_scan *r)
{
    size_t total = regex_branch(r);
    while (!r->too_deep && r->s[r->i] == '|') {
        r->i++;
        total = sat_add(total, regex_branch(r));
    }
    return total;
}

/* Compiles a matcher's regex as the store will (POSIX ERE, anchored ^(re)$) and tells
 * whether it matches the empty string. A type error, not a syntax error, so a later
 * syntax error is still the one reported (Prometheus does the same). */
static int regex_check(parser *p, size_t pos, const char *re, bool *matches_empty)
{
    char q[QUOTE_MAX_BYTES * 4 + 16];
    regex_scan scan = {.s = re};
    *matches_empty = false;
    size_t size = regex_alternation(&scan);
    while (!scan.too_deep && re[scan.i]) { /* a stray ')' at the top: count on */
        scan.i++;
        size = sat_add(size, regex_alternation(&scan));
    }
    if (scan.too_deep) {
        type_error(p, pos, "regular expression %s nests groups deeper than %d",
                   quote_text(q, sizeof(q), re, strlen(re)), REGEX_MAX_NESTING);
        return 0;
    }
    if (scan.nested_repeat_at) {
        char op[QUOTE_MAX_BYTES * 4 + 16];
        type_error(p, pos, "invalid regular expression %s: invalid nested repetition operator: %s",
                   quote_text(q, sizeof(q), re, strlen(re)),
                   quote_text(op, sizeof(op), re + scan.nested_repeat_at, scan.nested_repeat_len));
        return 0;
    }
    if (size > REGEX_MAX_EXPANSION) {
        type_error(p, pos,
                   "regular expression %s is too complex (its repetitions expand to "
                   "more than %u elements)",
                   quote_text(q, sizeof(q), re, strlen(re)), REGEX_MAX_EXPANSION);
        return 0;
    }
    p->regex_expansion += size;
    if (p->regex_expansion > REGEX_MAX_TOTAL_EXPANSION) {
        type_error(p, pos,
                   "the query's regular expressions are too complex together (their "
                   "repetitions expand to more than %u elements)",
                   REGEX_MAX_TOTAL_EXPANSION);
        return 0;
    }
    size_t len = strlen(re);
    promre compiled;
    char msg[200];
    int rc = promre_compile(&compiled, re, msg, sizeof(msg));
    if (rc == -ENOMEM)
        return out_of_memory(p);
    if (rc != 0) {
        /* promre's message may quote bytes of the pattern: escape it like our own quotes */
        char safe[256] = "";
        escape_text(safe, sizeof(safe), msg, strnlen(msg, sizeof(msg)), sizeof(msg), false);
        type_error(p, pos, "invalid regular expression %s: %s", quote_text(q, sizeof(q), re, len),
                   safe);
        return 0;
    }
    *matches_empty = promre_match(&compiled, "", 0);
    promre_free(&compiled);
    return 0;
}

/* ---- selectors ------------------------------------------------------------------ */

/* Lexes one token inside {…}: a label name, a string, a match operator, ',' or '}'. */
static int lex_brace_token(parser *p, token *t)
{
    char q[16];
    skip_blanks(p);
    memset(t, 0, sizeof(*t));
    t->start = (uint32_t)p->pos;
    if (at_end(p))
        return syntax_error(p, p->pos, "unexpected end of input inside braces");
    char c = p->src[p->pos];
    char n = char_at(p, p->pos + 1);
    int rc = 0;
    if (is_alpha(c)) {
        while (!at_end(p) && is_alnum(p->src[p->pos]))
            p->pos++;
        t->kind = TOK_IDENTIFIER;
    } else if (c == '"' || c == '\'' || c == '`') {
        rc = lex_string(p, t);
    } else if (c == ',') {
        t->kind = TOK_COMMA;
        p->pos++;
    } else if (c == '}') {
        t->kind = TOK_RIGHT_BRACE;
        p->pos++;
    } else if (c == '=') {
        t->kind = TOK_MATCH_OP;
        t->match = n == '~' ? STELE_MATCH_REGEX : STELE_MATCH_EQUAL;
        p->pos += n == '~' ? 2 : 1;
    } else if (c == '!') {
        if (n != '=' && n != '~')
            return syntax_error(p, p->pos, "unexpected character after '!' inside braces: %s",
                                p->pos + 1 < p->len ? quote_char(q, sizeof(q), p->src + p->pos + 1)
                                                    : "end of input");
        t->kind = TOK_MATCH_OP;
        t->match = n == '~' ? STELE_MATCH_NOT_REGEX : STELE_MATCH_NOT_EQUAL;
        p->pos += 2;
    } else if (c == '{') {
        return syntax_error(p, p->pos, "unexpected left brace '{'");
    } else {
        return syntax_error(p, p->pos, "unexpected character inside braces: %s",
                            quote_char(q, sizeof(q), p->src + p->pos));
    }
    t->end = (uint32_t)p->pos;
    return rc;
}

/* Parses the matchers after a '{' (already consumed) up to and including '}', adding
 * them to sel. */
static int parse_matchers(parser *p, pq_node *sel)
{
    token t;
    int rc;
    for (;;) {
        if ((rc = lex_brace_token(p, &t)) != 0)
            return rc;
        if (t.kind == TOK_RIGHT_BRACE)
            return 0;
        if (t.kind != TOK_IDENTIFIER)
            return unexpected(p, &t, "label matching", "identifier or \"}\"");
        size_t name_pos = t.start;
        const char *name = arena_strndup(p, p->src + t.start, t.end - t.start);
        if (!name)
            return out_of_memory(p);
        if ((rc = lex_brace_token(p, &t)) != 0)
            return rc;
        if (t.kind != TOK_MATCH_OP)
            return unexpected(p, &t, "label matching", "label matching operator");
        stele_match_type type = t.match;
        if ((rc = lex_brace_token(p, &t)) != 0)
            return rc;
        if (t.kind != TOK_STRING)
            return unexpected(p, &t, "label matching", "string");
        if (sel->selector.nmatchers == PQ_MAX_MATCHERS)
            return syntax_error(p, name_pos, "too many label matchers (at most %d)",
                                PQ_MAX_MATCHERS);
        sel->selector.matchers[sel->selector.nmatchers++] =
            (stele_matcher){.name = name, .value = t.string, .type = type};
        if ((rc = lex_brace_token(p, &t)) != 0)
            return rc;
        if (t.kind == TOK_RIGHT_BRACE)
            return 0;
        if (t.kind != TOK_COMMA)
            return unexpected(p, &t, "label matching", "\",\" or \"}\"");
    }
}

static bool matcher_matches_empty(parser *p, const stele_matcher *m, size_t pos, int *rc)
{
    bool empty = false;
    *rc = 0;
    switch (m->type) {
    case STELE_MATCH_EQUAL:
        return m->value[0] == '\0';
    case STELE_MATCH_NOT_EQUAL:
        return m->value[0] != '\0';
    case STELE_MATCH_REGEX:
    case STELE_MATCH_NOT_REGEX:
        *rc = regex_check(p, pos, m->value, &empty);
        return m->type == STELE_MATCH_REGEX ? empty : !empty;
    }
    return false;
}

/* A vector selector: `name`, `name{…}` or `{…}`. name_tok is the name, already
 * consumed, or NULL when the current token is the '{'. */
static int parse_vector_selector(parser *p, const token *name_tok, pq_node **out)
{
    char q1[QUOTE_MAX_BYTES * 4 + 16], q2[QUOTE_MAX_BYTES * 4 + 16];
    size_t pos = name_tok ? name_tok->start : peek(p)->start;
    int rc;
    pq_node *sel = node_new(p, PQ_VECTOR_SELECTOR, PQ_TYPE_VECTOR, pos);
    if (!sel)
        return out_of_memory(p);
    const char *name = NULL;
    if (name_tok) {
        name = arena_strndup(p, p->src + name_tok->start, name_tok->end - name_tok->start);
        if (!name)
            return out_of_memory(p);
        sel->selector.matchers[sel->selector.nmatchers++] =
            (stele_matcher){.name = "__name__", .value = name, .type = STELE_MATCH_EQUAL};
    }
    if (peek(p)->kind == TOK_LEFT_BRACE) {
        advance(p);
        if ((rc = parse_matchers(p, sel)) != 0)
            return rc;
    }
    bool selective = name != NULL;
    for (size_t i = name ? 1 : 0; i < sel->selector.nmatchers; i++) {
        const stele_matcher *m = &sel->selector.matchers[i];
        if (name && strcmp(m->name, "__name__") == 0)
            type_error(p, pos, "metric name must not be set twice: %s or %s",
                       quote_text(q1, sizeof(q1), name, strlen(name)),
                       quote_text(q2, sizeof(q2), m->value, strlen(m->value)));
        if (!matcher_matches_empty(p, m, pos, &rc))
            selective = true;
        if (rc)
            return rc;
    }
    if (!selective)
        type_error(p, pos, "vector selector must contain at least one non-empty matcher");
    *out = sel;
    return node_seal(p, sel);
}

/* A duration token's value; ranges and offsets must be positive. */
static int duration_value(parser *p, const char *text, size_t len, size_t pos, int64_t *ns)
{
    char q[QUOTE_MAX_BYTES * 4 + 16];
    int rc = duration_parse(text, len, ns);
    if (rc == -ERANGE)
        return syntax_error(p, pos, "duration out of range");
    if (rc)
        return syntax_error(p, pos, "not a valid duration string: %s",
                            quote_text(q, sizeof(q), text, len));
    if (*ns == 0)
        return syntax_error(p, pos, "duration must be greater than 0");
    return 0;
}

/* `[duration]` after an expression; the '[' is the current token. */
static int parse_range(parser *p, pq_node **node)
{
    char q[16];
    size_t bracket_pos = p->tok.start;
    advance(p);
    skip_blanks(p);
    if (at_end(p))
        return syntax_error(p, p->pos, "unclosed left bracket");
    char c = p->src[p->pos];
    if (!(is_digit(c) || (c == '.' && is_digit(char_at(p, p->pos + 1)))))
        return syntax_error(p, p->pos,
                            "unexpected character in range selector: %s, expected a "
                            "duration",
                            quote_char(q, sizeof(q), p->src + p->pos));
    token t;
    size_t dur_pos = p->pos;
    int rc = lex_number_or_duration(p, &t, true);
    if (rc)
        return rc;
    int64_t range_ns;
    if ((rc = duration_value(p, p->src + dur_pos, p->pos - dur_pos, dur_pos, &range_ns)) != 0)
        return rc;
    skip_blanks(p);
    if (at_end(p))
        return syntax_error(p, p->pos, "unclosed left bracket");
    if (p->src[p->pos] == ':')
        return syntax_error(p, bracket_pos, "subqueries are not supported");
    if (p->src[p->pos] != ']')
        return syntax_error(p, p->pos,
                            "unexpected character in range selector: %s, expected "
                            "\"]\"",
                            quote_char(q, sizeof(q), p->src + p->pos));
    p->pos++;

    pq_node *base = *node;
    if (base->kind != PQ_VECTOR_SELECTOR || box_of(base)->parenthesized)
        return syntax_error(p, bracket_pos, "ranges only allowed for vector selectors");
    if (base->selector.offset_ns != 0)
        return syntax_error(p, bracket_pos, "no offset modifiers allowed before range");
    pq_node *m = node_new(p, PQ_MATRIX_SELECTOR, PQ_TYPE_MATRIX, base->pos);
    if (!m)
        return out_of_memory(p);
    m->matrix.selector = base;
    m->matrix.range_ns = range_ns;
    *node = m;
    return node_seal(p, m);
}

/* `offset [-]duration` after an expression; the keyword is the current token. */
static int parse_offset(parser *p, pq_node **node)
{
    size_t offset_pos = p->tok.start;
    advance(p);
    bool negative = false;
    const token *t = peek(p);
    if (t->kind == TOK_OPERATOR && t->op == PQ_OP_SUB) {
        negative = true;
        advance(p);
        t = peek(p);
    }
    if (t->kind != TOK_DURATION)
        return unexpected(p, t, "offset", "duration");
    int64_t ns;
    int rc = duration_value(p, p->src + t->start, t->end - t->start, t->start, &ns);
    if (rc)
        return rc;
    advance(p);
    pq_node *target = *node;
    if (target->kind == PQ_MATRIX_SELECTOR && !box_of(target)->parenthesized)
        target = target->matrix.selector;
    if (target->kind != PQ_VECTOR_SELECTOR || box_of(target)->parenthesized)
        return syntax_error(p, offset_pos,
                            "offset modifier must be preceded by an instant "
                            "vector selector or range vector selector");
    if (target->selector.offset_ns != 0)
        return syntax_error(p, offset_pos, "offset may not be set multiple times");
    target->selector.offset_ns = negative ? -ns : ns;
    return 0;
}

/* ---- expressions ---------------------------------------------------------------- */

static int parse_expr(parser *p, int min_prec, pq_node **out);

enum {
    PREC_OR = 1,
    PREC_AND = 2, /* and, unless */
    PREC_COMPARISON = 3,
    PREC_ADD = 4,
    PREC_MUL = 5, /* also unary minus and plus */
    PREC_POW = 6,
};

static int binop_precedence(pq_binop op)
{
    switch (op) {
    case PQ_OP_OR:
        return PREC_OR;
    case PQ_OP_AND:
    case PQ_OP_UNLESS:
        return PREC_AND;
    case PQ_OP_EQ:
    case PQ_OP_NE:
    case PQ_OP_GT:
    case PQ_OP_LT:
    case PQ_OP_GE:
    case PQ_OP_LE:
        return PREC_COMPARISON;
    case PQ_OP_ADD:
    case PQ_OP_SUB:
        return PREC_ADD;
    case PQ_OP_MUL:
    case PQ_OP_DIV:
    case PQ_OP_MOD:
        return PREC_MUL;
    case PQ_OP_POW:
        return PREC_POW;
    }
    return 0;
}

static bool is_comparison(pq_binop op)
{
    return op >= PQ_OP_EQ && op <= PQ_OP_LE;
}

static bool is_set_operator(pq_binop op)
{
    return op == PQ_OP_AND || op == PQ_OP_OR || op == PQ_OP_UNLESS;
}

/* A label name in a grouping list: any word without ':' (keywords included). */
static bool token_is_label_name(const parser *p, const token *t)
{
    if (t->kind == TOK_IDENTIFIER || t->kind == TOK_KEYWORD)
        return true;
    return t->kind == TOK_NUMBER && is_alpha(p->src[t->start]); /* inf, nan */
}

/* `(label, …)` after by/without/on/ignoring; the keyword is already consumed. */
static int parse_grouping(parser *p, const char **labels, size_t *nlabels)
{
    const token *t = peek(p);
    *nlabels = 0;
    if (t->kind != TOK_LEFT_PAREN)
        return unexpected(p, t, "grouping opts", "\"(\"");
    advance(p);
    for (;;) {
        t = peek(p);
        if (t->kind == TOK_RIGHT_PAREN) {
            advance(p);
            return 0;
        }
        if (!token_is_label_name(p, t))
            return unexpected(p, t, "grouping opts", "label");
        if (*nlabels == PQ_MAX_GROUPING_LABELS)
            return syntax_error(p, t->start, "too many grouping labels (at most %d)",
                                PQ_MAX_GROUPING_LABELS);
        labels[*nlabels] = arena_strndup(p, p->src + t->start, t->end - t->start);
        if (!labels[*nlabels])
            return out_of_memory(p);
        (*nlabels)++;
        advance(p);
        t = peek(p);
        if (t->kind == TOK_COMMA) {
            advance(p);
            continue;
        }
        if (t->kind != TOK_RIGHT_PAREN)
            return unexpected(p, t, "grouping opts", "\",\" or \")\"");
    }
}

/* `(expr, …)` of a call or aggregation; the '(' is the current token. Keeps the first
 * PQ_MAX_ARGS arguments and counts them all. */
static int parse_call_args(parser *p, pq_node **args, size_t *nargs)
{
    int rc;
    *nargs = 0;
    advance(p); /* '(' */
    if (peek(p)->kind == TOK_RIGHT_PAREN) {
        advance(p);
        return 0;
    }
    for (;;) {
        pq_node *arg;
        if ((rc = parse_expr(p, 0, &arg)) != 0)
            return rc;
        if (*nargs < PQ_MAX_ARGS)
            args[*nargs] = arg;
        (*nargs)++;
        const token *t = peek(p);
        if (t->kind == TOK_RIGHT_PAREN) {
            advance(p);
            return 0;
        }
        if (t->kind != TOK_COMMA)
            return unexpected(p, t, "argument list", "\",\" or \")\"");
        size_t comma_pos = t->start;
        advance(p);
        if (peek(p)->kind == TOK_RIGHT_PAREN)
            return syntax_error(p, comma_pos, "trailing commas not allowed in function call args");
    }
}

static void expect_type(parser *p, const pq_node *n, pq_type want, const char *context)
{
    if (n->type != want)
        type_error(p, n->pos, "expected type %s in %s, got %s", type_name(want), context,
                   type_name(n->type));
}

/* A function call; the name is consumed and '(' is the current token. */
static int parse_call(parser *p, const token *name_tok, pq_node **out)
{
    char q[QUOTE_MAX_BYTES * 4 + 16];
    const token name = *name_tok;
    const char *text = p->src + name.start;
    size_t len = name.end - name.start;
    size_t fn;
    for (fn = 0; fn < PQ_FN_COUNT_; fn++)
        if (strlen(function_table[fn].name) == len &&
            memcmp(function_table[fn].name, text, len) == 0)
            break;
    if (fn == PQ_FN_COUNT_) {
        for (size_t i = 0; i < sizeof(unsupported_functions) / sizeof(unsupported_functions[0]);
             i++)
            if (strlen(unsupported_functions[i]) == len &&
                memcmp(unsupported_functions[i], text, len) == 0)
                return syntax_error(p, name.start, "function %s is not supported",
                                    quote_text(q, sizeof(q), text, len));
        return syntax_error(p, name.start, "unknown function with name %s",
                            quote_text(q, sizeof(q), text, len));
    }
    pq_node *call = node_new(p, PQ_CALL, PQ_TYPE_VECTOR, name.start);
    if (!call)
        return out_of_memory(p);
    call->call.fn = (pq_function)fn;
    int rc = parse_call_args(p, call->call.args, &call->call.nargs);
    if (rc)
        return rc;

    const char *fname = function_table[fn].name;
    size_t want = function_table[fn].nargs, optional = function_table[fn].optional;
    size_t got = call->call.nargs;
    if (optional == 0 && got != want)
        type_error(p, name.start, "expected %zu argument(s) in call to \"%s\", got %zu", want,
                   fname, got);
    else if (got < want - optional)
        type_error(p, name.start, "expected at least %zu argument(s) in call to \"%s\", got %zu",
                   want - optional, fname, got);
    else if (got > want)
        type_error(p, name.start, "expected at most %zu argument(s) in call to \"%s\", got %zu",
                   want, fname, got);
    if (got > PQ_MAX_ARGS)
        call->call.nargs = PQ_MAX_ARGS; /* an error anyway; keep the tree consistent */
    char context[64];
    snprintf(context, sizeof(context), "call to function \"%s\"", fname);
    for (size_t i = 0; i < call->call.nargs && i < want; i++)
        expect_type(p, call->call.args[i], function_table[fn].args[i], context);
    *out = call;
    return node_seal(p, call);
}

static bool aggop_of(keyword kw, pq_aggop *op)
{
    switch (kw) {
    case KW_SUM:
        *op = PQ_AGG_SUM;
        return true;
    case KW_AVG:
        *op = PQ_AGG_AVG;
        return true;
    case KW_MIN:
        *op = PQ_AGG_MIN;
        return true;
    case KW_MAX:
        *op = PQ_AGG_MAX;
        return true;
    case KW_COUNT:
        *op = PQ_AGG_COUNT;
        return true;
    case KW_TOPK:
        *op = PQ_AGG_TOPK;
        return true;
    case KW_BOTTOMK:
        *op = PQ_AGG_BOTTOMK;
        return true;
    default:
        return false;
    }
}

/* An aggregation; the operator keyword has been consumed (op_tok) and '(' or by/without
 * is the current token. */
static int parse_aggregate(parser *p, const token *op_tok, pq_node **out)
{
    char q[QUOTE_MAX_BYTES * 4 + 16];
    pq_aggop op;
    if (!aggop_of(op_tok->kw, &op)) {
        char lower[32];
        size_t len = op_tok->end - op_tok->start;
        for (size_t i = 0; i < len && i < sizeof(lower) - 1; i++) {
            char c = p->src[op_tok->start + i];
            lower[i] = c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
        }
        lower[len < sizeof(lower) - 1 ? len : sizeof(lower) - 1] = '\0';
        return syntax_error(p, op_tok->start, "aggregation %s is not supported",
                            quote_text(q, sizeof(q), lower, strlen(lower)));
    }
    pq_node *agg = node_new(p, PQ_AGGREGATE, PQ_TYPE_VECTOR, op_tok->start);
    if (!agg)
        return out_of_memory(p);
    agg->aggregate.op = op;
    int rc;
    bool grouped = false;
    if (peek_keyword(p, KW_BY) || peek_keyword(p, KW_WITHOUT)) {
        agg->aggregate.without = peek_keyword(p, KW_WITHOUT);
        advance(p);
        if ((rc = parse_grouping(p, agg->aggregate.labels, &agg->aggregate.nlabels)) != 0)
            return rc;
        grouped = true;
    }
    const token *t = peek(p);
    if (t->kind != TOK_LEFT_PAREN)
        return unexpected(p, t, "aggregation", "\"(\"");
    pq_node *args[PQ_MAX_ARGS];
    size_t nargs;
    if ((rc = parse_call_args(p, args, &nargs)) != 0)
        return rc;
    if (!grouped && (peek_keyword(p, KW_BY) || peek_keyword(p, KW_WITHOUT))) {
        agg->aggregate.without = peek_keyword(p, KW_WITHOUT);
        advance(p);
        if ((rc = parse_grouping(p, agg->aggregate.labels, &agg->aggregate.nlabels)) != 0)
            return rc;
    }
    size_t want = (op == PQ_AGG_TOPK || op == PQ_AGG_BOTTOMK) ? 2 : 1;
    if (nargs == 0) {
        type_error(p, op_tok->start, "no arguments for aggregate expression provided");
    } else if (nargs != want) {
        type_error(p, op_tok->start,
                   "wrong number of arguments for aggregate expression provided, expected %zu, "
                   "got %zu",
                   want, nargs);
    } else {
        agg->aggregate.expr = args[want - 1];
        agg->aggregate.param = want == 2 ? args[0] : NULL;
        expect_type(p, agg->aggregate.expr, PQ_TYPE_VECTOR, "aggregation expression");
        if (agg->aggregate.param)
            expect_type(p, agg->aggregate.param, PQ_TYPE_SCALAR, "aggregation parameter");
    }
    if (!agg->aggregate.expr) /* after a type error: keep the tree walkable */
        agg->aggregate.expr = nargs ? args[0] : NULL;
    *out = agg;
    return node_seal(p, agg);
}

/* number | string | selector | call | aggregation | '(' expr ')' */
static int parse_primary(parser *p, pq_node **out)
{
    const token *t = peek(p);
    int rc;
    switch (t->kind) {
    case TOK_NUMBER:
    case TOK_STRING: {
        pq_node *n = node_new(p, t->kind == TOK_NUMBER ? PQ_NUMBER : PQ_STRING,
                              t->kind == TOK_NUMBER ? PQ_TYPE_SCALAR : PQ_TYPE_STRING, t->start);
        if (!n)
            return out_of_memory(p);
        if (t->kind == TOK_NUMBER)
            n->number = t->number;
        else
            n->string = t->string;
        advance(p);
        *out = n;
        return 0;
    }
    case TOK_LEFT_PAREN: {
        size_t pos = t->start;
        advance(p);
        pq_node *inner;
        if ((rc = parse_expr(p, 0, &inner)) != 0)
            return rc;
        t = peek(p);
        if (t->kind != TOK_RIGHT_PAREN)
            return unexpected(p, t, "parenthesized expression", "\")\"");
        advance(p);
        if (inner->type == PQ_TYPE_MATRIX) {
            /* Returned bare: see the file comment. The mark keeps (x[5m]) offset 1h and
             * (x[5m])[5m] errors, as in Prometheus. */
            box_of(inner)->parenthesized = true;
            *out = inner;
            return 0;
        }
        pq_node *n = node_new(p, PQ_PAREN, inner->type, pos);
        if (!n)
            return out_of_memory(p);
        n->unary.expr = inner;
        *out = n;
        return node_seal(p, n);
    }
    case TOK_LEFT_BRACE:
        return parse_vector_selector(p, NULL, out);
    case TOK_IDENTIFIER:
    case TOK_METRIC_IDENTIFIER: {
        token name = *t;
        advance(p);
        if (name.kind == TOK_IDENTIFIER && peek(p)->kind == TOK_LEFT_PAREN)
            return parse_call(p, &name, out);
        return parse_vector_selector(p, &name, out);
    }
    case TOK_KEYWORD: {
        size_t i;
        for (i = 0; i < KEYWORD_COUNT && keyword_table[i].kw != t->kw; i++)
            ;
        if (!keyword_table[i].metric_name_ok)
            return unexpected(p, t, NULL, NULL);
        token word = *t;
        advance(p);
        if (keyword_table[i].cls == KWC_AGGREGATOR) {
            const token *next = peek(p);
            if (next->kind == TOK_LEFT_PAREN ||
                (next->kind == TOK_KEYWORD && (next->kw == KW_BY || next->kw == KW_WITHOUT)))
                return parse_aggregate(p, &word, out);
        }
        return parse_vector_selector(p, &word, out); /* `sum`, `offset`, … as metric names */
    }
    case TOK_AT:
        return syntax_error(p, t->start, "@ modifier is not supported");
    default:
        return unexpected(p, t, NULL, NULL);
    }
}

/* primary followed by any number of `[range]` and `offset d`. */
static int parse_postfix(parser *p, pq_node **out)
{
    int rc = parse_primary(p, out);
    while (rc == 0) {
        const token *t = peek(p);
        if (t->kind == TOK_LEFT_BRACKET)
            rc = parse_range(p, out);
        else if (t->kind == TOK_KEYWORD && t->kw == KW_OFFSET)
            rc = parse_offset(p, out);
        else if (t->kind == TOK_AT)
            rc = syntax_error(p, t->start, "@ modifier is not supported");
        else
            break;
    }
    return rc;
}

/* [+|-] operand; the operand is parsed at ^ precedence, so -a^b = -(a^b), -a*b = (-a)*b. */
static int parse_unary(parser *p, pq_node **out)
{
    const token *t = peek(p);
    if (t->kind != TOK_OPERATOR || (t->op != PQ_OP_ADD && t->op != PQ_OP_SUB))
        return parse_postfix(p, out);
    bool minus = t->op == PQ_OP_SUB;
    size_t pos = t->start;
    advance(p);
    pq_node *operand;
    int rc = parse_expr(p, PREC_POW, &operand);
    if (rc)
        return rc;
    if (operand->kind == PQ_NUMBER) { /* folded, as Prometheus does */
        if (minus)
            operand->number = -operand->number;
        operand->pos = (uint32_t)pos;
        *out = operand;
        return 0;
    }
    if (operand->type != PQ_TYPE_SCALAR && operand->type != PQ_TYPE_VECTOR)
        type_error(p, pos,
                   "unary expression only allowed on expressions of type scalar or instant "
                   "vector, got \"%s\"",
                   type_name(operand->type));
    if (!minus) { /* +x is x */
        *out = operand;
        return 0;
    }
    pq_node *n = node_new(p, PQ_UNARY_MINUS, operand->type, pos);
    if (!n)
        return out_of_memory(p);
    n->unary.expr = operand;
    *out = n;
    return node_seal(p, n);
}

static bool token_binop(const token *t, pq_binop *op)
{
    if (t->kind == TOK_OPERATOR) {
        *op = t->op;
        return true;
    }
    if (t->kind == TOK_KEYWORD && (t->kw == KW_AND || t->kw == KW_OR || t->kw == KW_UNLESS)) {
        *op = t->kw == KW_AND ? PQ_OP_AND : t->kw == KW_OR ? PQ_OP_OR : PQ_OP_UNLESS;
        return true;
    }
    return false;
}

/* Type rules of a binary operation (Prometheus' checkAST), then its result type. */
static void check_binary(parser *p, pq_node *n, size_t op_pos)
{
    pq_binop op = n->binary.op;
    pq_type lt = n->binary.lhs->type, rt = n->binary.rhs->type;
    if (n->binary.return_bool && !is_comparison(op))
        type_error(p, op_pos, "bool modifier can only be used on comparison operators");
    if (is_comparison(op) && !n->binary.return_bool && lt == PQ_TYPE_SCALAR && rt == PQ_TYPE_SCALAR)
        type_error(p, op_pos, "comparisons between scalars must use BOOL modifier");
    if (lt != PQ_TYPE_SCALAR && lt != PQ_TYPE_VECTOR)
        type_error(p, n->binary.lhs->pos,
                   "binary expression must contain only scalar and instant vector types");
    if (rt != PQ_TYPE_SCALAR && rt != PQ_TYPE_VECTOR)
        type_error(p, n->binary.rhs->pos,
                   "binary expression must contain only scalar and instant vector types");
    if ((lt != PQ_TYPE_VECTOR || rt != PQ_TYPE_VECTOR) && n->binary.matching) {
        /* Prometheus drops an empty on()/ignoring() here and refuses a non-empty one. */
        if (n->binary.nlabels > 0)
            type_error(p, n->pos, "vector matching only allowed between instant vectors");
        n->binary.matching = false;
        n->binary.on = false;
        n->binary.nlabels = 0;
    }
    if (is_set_operator(op) && (lt == PQ_TYPE_SCALAR || rt == PQ_TYPE_SCALAR))
        type_error(p, n->pos, "set operator \"%s\" not allowed in binary scalar expression",
                   binop_names[op]);
    n->type = lt == PQ_TYPE_SCALAR && rt == PQ_TYPE_SCALAR ? PQ_TYPE_SCALAR : PQ_TYPE_VECTOR;
}

/* Precedence climbing: operators binding at least as tight as min_prec. */
static int parse_expr(parser *p, int min_prec, pq_node **out)
{
    pq_node *lhs = NULL;
    int rc;
    if (++p->depth > PQ_MAX_DEPTH) {
        rc = syntax_error(p, peek(p)->start, "query too deeply nested (at most %d levels)",
                          PQ_MAX_DEPTH);
        goto fail;
    }
    if ((rc = parse_unary(p, &lhs)) != 0)
        goto fail;
    for (;;) {
        const token *t = peek(p);
        pq_binop op;
        if (t->kind == TOK_KEYWORD && t->kw == KW_ATAN2) {
            rc = syntax_error(p, t->start, "operator \"atan2\" is not supported");
            goto fail;
        }
        if (!token_binop(t, &op) || binop_precedence(op) < min_prec)
            break;
        size_t op_pos = t->start;
        advance(p);
        pq_node *n = node_new(p, PQ_BINARY, PQ_TYPE_VECTOR, lhs->pos);
        if (!n) {
            rc = out_of_memory(p);
            goto fail;
        }
        n->binary.op = op;
        n->binary.lhs = lhs;
        if (peek_keyword(p, KW_BOOL)) {
            n->binary.return_bool = true;
            advance(p);
        }
        if (peek_keyword(p, KW_ON) || peek_keyword(p, KW_IGNORING)) {
            n->binary.matching = true;
            n->binary.on = peek_keyword(p, KW_ON);
            advance(p);
            if ((rc = parse_grouping(p, n->binary.labels, &n->binary.nlabels)) != 0)
                goto fail;
            if (peek_keyword(p, KW_GROUP_LEFT) || peek_keyword(p, KW_GROUP_RIGHT)) {
                rc = syntax_error(p, peek(p)->start, "group_left/group_right are not supported");
                goto fail;
            }
        } else if (peek_keyword(p, KW_GROUP_LEFT) || peek_keyword(p, KW_GROUP_RIGHT)) {
            /* Prometheus needs on/ignoring first; say what is wrong either way */
            rc = syntax_error(p, peek(p)->start, "group_left/group_right are not supported");
            goto fail;
        }
        int prec = binop_precedence(op);
        if ((rc = parse_expr(p, op == PQ_OP_POW ? prec : prec + 1, &n->binary.rhs)) != 0)
            goto fail;
        check_binary(p, n, op_pos);
        if ((rc = node_seal(p, n)) != 0)
            goto fail;
        lhs = n;
    }
    p->depth--;
    *out = lhs;
    return 0;
fail:
    p->depth--;
    return rc;
}

/* ---- entry points --------------------------------------------------------------- */

void pq_expr_free(pq_expr *e)
{
    if (!e)
        return;
    arena_block *b = e->blocks;
    while (b) {
        arena_block *next = b->next;
        free(b);
        b = next;
    }
    free(e);
}

pq_node *pq_expr_root(const pq_expr *e)
{
    return e ? e->root : NULL;
}

int pq_parse(const char *query, size_t len, pq_expr **out, char *err, size_t errcap)
{
    parser *p = NULL;
    pq_expr *e = NULL;
    int rc = 0;
    if (out)
        *out = NULL;
    if (err && errcap)
        err[0] = '\0';
    if (!out || (!query && len)) {
        rc = -EINVAL;
        goto fail;
    }
    if (len > PQ_MAX_QUERY_BYTES) {
        if (err && errcap)
            snprintf(err, errcap, "query too long: %zu bytes, at most %d", len, PQ_MAX_QUERY_BYTES);
        rc = -EINVAL;
        goto fail;
    }
    pthread_once(&c_locale_once, c_locale_create);
    if (c_locale == (locale_t)0) {
        rc = -ENOMEM;
        goto fail;
    }
    p = calloc(1, sizeof(*p));
    e = calloc(1, sizeof(*e));
    if (!p || !e) {
        rc = -ENOMEM;
        goto fail;
    }
    e->budget = len * (sizeof(node_box) + 2) + 64;
    *p = (parser){.src = query ? query : "", .len = len, .expr = e};

    const token *t = peek(p);
    if (t->kind == TOK_EOF) {
        rc = syntax_error(p, 0, "no expression found in input");
        goto fail_msg;
    }
    pq_node *root;
    if ((rc = parse_expr(p, 0, &root)) != 0)
        goto fail_msg;
    t = peek(p);
    if (t->kind != TOK_EOF) {
        rc = unexpected(p, t, NULL, NULL);
        goto fail_msg;
    }
    if (p->type_failed) {
        rc = -EINVAL;
        goto fail_msg;
    }
    e->root = root;
    *out = e; /* now belongs to the caller */
    free(p);
    return 0;

fail_msg:
    if (p->oom)
        rc = -ENOMEM;
    else
        rc = -EINVAL;
    if (err && errcap)
        snprintf(err, errcap, "%s",
                 p->oom             ? "out of memory while parsing the query"
                 : p->syntax_failed ? p->syntax_msg
                                    : p->type_msg);
fail:
    free(p);
    pq_expr_free(e);
    return rc;
}
