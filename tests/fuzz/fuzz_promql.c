/*
 * fuzz_promql.c — libFuzzer target for the PromQL parser (stele/promql.h).
 *
 * Parses arbitrary bytes (at most PQ_MAX_QUERY_BYTES; longer inputs must be refused
 * as too long) from an exactly-sized copy, so ASan sees any read past the end. On
 * success it walks the tree and checks what the header promises: every node's type
 * agrees with its kind and children (functions get their argument types and counts,
 * aggregations a vector and a scalar parameter for topk/bottomk, binary operations the
 * scalar/vector rules with bool, set operators and vector matching where allowed), the
 * tree is at most PQ_MAX_DEPTH deep, positions lie inside the query, selectors hold
 * 1..PQ_MAX_MATCHERS matchers with label-name-shaped names (several __name__ matchers
 * inside braces are legal PromQL), ranges are positive and every range vector is a
 * PQ_MATRIX_SELECTOR. Then it prints the tree back as PromQL, parses that and requires the same
 * tree (so the parser and the printer agree on precedence, escapes and numbers). On an error it
 * checks the message: "parse error at char N: …" with N inside the query (or 1 past its end),
 * non-empty, printable, valid UTF-8.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "stele/promql.h"

#define fuzz_check(cond, ...)                                                                      \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_promql: invariant failed: %s: ", #cond);                         \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* ---- printing back to PromQL -------------------------------------------------------- */

typedef struct {
    char *s;
    size_t len, cap;
} sbuf;

static void sb_putn(sbuf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (b->len + n + 1 > cap)
            cap *= 2;
        char *grown = realloc(b->s, cap);
        fuzz_check(grown != NULL, "out of memory");
        b->s = grown;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

static void sb_puts(sbuf *b, const char *s)
{
    sb_putn(b, s, strlen(s));
}

__attribute__((format(printf, 2, 3))) static void sb_printf(sbuf *b, const char *fmt, ...)
{
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0)
        abort();
    if ((size_t)n < sizeof(tmp)) {
        sb_putn(b, tmp, (size_t)n);
        return;
    }
    char *big = malloc((size_t)n + 1); /* a long name: format again into room for it */
    fuzz_check(big != NULL, "out of memory");
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    sb_putn(b, big, (size_t)n);
    free(big);
}

static void put_duration(sbuf *b, int64_t ns)
{
    static const struct {
        const char *u;
        int64_t ns;
    } units[] = {{"y", 365LL * 86400 * 1000000000LL},
                 {"w", 7LL * 86400 * 1000000000LL},
                 {"d", 86400LL * 1000000000LL},
                 {"h", 3600LL * 1000000000LL},
                 {"m", 60LL * 1000000000LL},
                 {"s", 1000000000LL},
                 {"ms", 1000000LL}};
    if (ns < 0) {
        sb_puts(b, "-");
        ns = -ns;
    }
    fuzz_check(ns > 0 && ns % 1000000 == 0, "duration %" PRId64 " ns is no whole ms", ns);
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (ns >= units[i].ns) {
            sb_printf(b, "%" PRId64 "%s", ns / units[i].ns, units[i].u);
            ns %= units[i].ns;
        }
    }
}

static void put_quoted(sbuf *b, const char *s)
{
    sb_puts(b, "\"");
    for (const unsigned char *u = (const unsigned char *)s; *u; u++) {
        if (*u == '"' || *u == '\\')
            sb_printf(b, "\\%c", *u);
        else if (*u >= 0x20 && *u < 0x7f)
            sb_putn(b, (const char *)u, 1);
        else
            sb_printf(b, "\\x%02x", *u);
    }
    sb_puts(b, "\"");
}

static void put_labels(sbuf *b, const char *const *labels, size_t n)
{
    sb_puts(b, "(");
    for (size_t i = 0; i < n; i++)
        sb_printf(b, "%s%s", i ? "," : "", labels[i]);
    sb_puts(b, ")");
}

static bool is_name_char(char c, bool first)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
           (!first && c >= '0' && c <= '9');
}

static bool is_label_name(const char *s)
{
    if (!is_name_char(*s, true))
        return false;
    for (s++; *s; s++)
        if (!is_name_char(*s, false))
            return false;
    return true;
}

/* Words that lex as something else than a metric name where an operand stands. */
static bool bare_name_ok(const char *s)
{
    static const char *const reserved[] = {"on",   "ignoring", "group_left", "group_right",
                                           "bool", "atan2",    "inf",        "nan"};
    if (!(is_name_char(*s, true) || *s == ':'))
        return false;
    for (const char *c = s; *c; c++)
        if (!(is_name_char(*c, false) || *c == ':'))
            return false;
    for (size_t i = 0; i < sizeof(reserved) / sizeof(reserved[0]); i++)
        if (strcasecmp(s, reserved[i]) == 0)
            return false;
    return true;
}

static const char *match_op(stele_match_type t)
{
    static const char *const ops[] = {"=", "!=", "=~", "!~"};
    return (unsigned)t < 4 ? ops[t] : "?";
}

static void print_selector(sbuf *b, const pq_node *n, bool with_offset)
{
    const stele_matcher *m = n->selector.matchers;
    size_t from = 0;
    bool name_twice = false;
    for (size_t i = 1; i < n->selector.nmatchers; i++)
        name_twice |= strcmp(m[i].name, "__name__") == 0;
    if (strcmp(m[0].name, "__name__") == 0 && m[0].type == STELE_MATCH_EQUAL && !name_twice &&
        bare_name_ok(m[0].value)) {
        sb_puts(b, m[0].value);
        from = 1;
    }
    if (from < n->selector.nmatchers) {
        sb_puts(b, "{");
        for (size_t i = from; i < n->selector.nmatchers; i++) {
            sb_printf(b, "%s%s%s", i > from ? "," : "", m[i].name, match_op(m[i].type));
            put_quoted(b, m[i].value);
        }
        sb_puts(b, "}");
    }
    if (with_offset && n->selector.offset_ns) {
        sb_puts(b, " offset ");
        put_duration(b, n->selector.offset_ns);
    }
}

static void print_promql(sbuf *b, const pq_node *n)
{
    switch (n->kind) {
    case PQ_NUMBER:
        if (isnan(n->number))
            sb_puts(b, "NaN");
        else if (isinf(n->number))
            sb_puts(b, n->number < 0 ? "-Inf" : "Inf");
        else
            sb_printf(b, "%.17g", n->number);
        return;
    case PQ_STRING:
        put_quoted(b, n->string);
        return;
    case PQ_VECTOR_SELECTOR:
        print_selector(b, n, true);
        return;
    case PQ_MATRIX_SELECTOR:
        print_selector(b, n->matrix.selector, false);
        sb_puts(b, "[");
        put_duration(b, n->matrix.range_ns);
        sb_puts(b, "]");
        if (n->matrix.selector->selector.offset_ns) {
            sb_puts(b, " offset ");
            put_duration(b, n->matrix.selector->selector.offset_ns);
        }
        return;
    case PQ_CALL:
        sb_printf(b, "%s(", pq_function_name(n->call.fn));
        for (size_t i = 0; i < n->call.nargs; i++) {
            sb_puts(b, i ? ", " : "");
            print_promql(b, n->call.args[i]);
        }
        sb_puts(b, ")");
        return;
    case PQ_AGGREGATE:
        sb_puts(b, pq_aggop_name(n->aggregate.op));
        if (n->aggregate.without || n->aggregate.nlabels) {
            sb_puts(b, n->aggregate.without ? " without " : " by ");
            put_labels(b, n->aggregate.labels, n->aggregate.nlabels);
        }
        sb_puts(b, " (");
        if (n->aggregate.param) {
            print_promql(b, n->aggregate.param);
            sb_puts(b, ", ");
        }
        print_promql(b, n->aggregate.expr);
        sb_puts(b, ")");
        return;
    case PQ_BINARY:
        print_promql(b, n->binary.lhs);
        sb_printf(b, " %s%s", pq_binop_name(n->binary.op), n->binary.return_bool ? " bool" : "");
        if (n->binary.matching) {
            sb_puts(b, n->binary.on ? " on" : " ignoring");
            put_labels(b, n->binary.labels, n->binary.nlabels);
        }
        sb_puts(b, " ");
        print_promql(b, n->binary.rhs);
        return;
    case PQ_UNARY_MINUS:
        sb_puts(b, "-");
        print_promql(b, n->unary.expr);
        return;
    case PQ_PAREN:
        sb_puts(b, "(");
        print_promql(b, n->unary.expr);
        sb_puts(b, ")");
        return;
    }
}

/* ---- invariants ----------------------------------------------------------------------- */

static const pq_type function_args[PQ_FN_COUNT_][2] = {
    [PQ_FN_RATE] = {PQ_TYPE_MATRIX},
    [PQ_FN_IRATE] = {PQ_TYPE_MATRIX},
    [PQ_FN_INCREASE] = {PQ_TYPE_MATRIX},
    [PQ_FN_DELTA] = {PQ_TYPE_MATRIX},
    [PQ_FN_IDELTA] = {PQ_TYPE_MATRIX},
    [PQ_FN_MIN_OVER_TIME] = {PQ_TYPE_MATRIX},
    [PQ_FN_MAX_OVER_TIME] = {PQ_TYPE_MATRIX},
    [PQ_FN_AVG_OVER_TIME] = {PQ_TYPE_MATRIX},
    [PQ_FN_SUM_OVER_TIME] = {PQ_TYPE_MATRIX},
    [PQ_FN_COUNT_OVER_TIME] = {PQ_TYPE_MATRIX},
    [PQ_FN_LAST_OVER_TIME] = {PQ_TYPE_MATRIX},
    [PQ_FN_ABS] = {PQ_TYPE_VECTOR},
    [PQ_FN_CLAMP_MIN] = {PQ_TYPE_VECTOR, PQ_TYPE_SCALAR},
    [PQ_FN_CLAMP_MAX] = {PQ_TYPE_VECTOR, PQ_TYPE_SCALAR},
    [PQ_FN_ROUND] = {PQ_TYPE_VECTOR, PQ_TYPE_SCALAR},
};

static void check_labels(const char *const *labels, size_t n)
{
    fuzz_check(n <= PQ_MAX_GROUPING_LABELS, "%zu grouping labels", n);
    for (size_t i = 0; i < n; i++)
        fuzz_check(labels[i] && is_label_name(labels[i]), "bad grouping label %zu", i);
}

static bool is_vector_or_scalar(pq_type t)
{
    return t == PQ_TYPE_SCALAR || t == PQ_TYPE_VECTOR;
}

/* Returns the height of the subtree at n. */
static unsigned check_node(const pq_node *n, size_t qlen, unsigned depth)
{
    fuzz_check(n != NULL, "null node at depth %u", depth);
    fuzz_check(depth <= PQ_MAX_DEPTH, "tree deeper than %d", PQ_MAX_DEPTH);
    fuzz_check(n->pos < qlen, "node at %u past the query's %zu bytes", n->pos, qlen);
    unsigned h = 0, k;
    switch (n->kind) {
    case PQ_NUMBER:
        fuzz_check(n->type == PQ_TYPE_SCALAR, "number of type %d", n->type);
        return 1;
    case PQ_STRING:
        fuzz_check(n->type == PQ_TYPE_STRING && n->string, "bad string node");
        return 1;
    case PQ_VECTOR_SELECTOR: {
        fuzz_check(n->type == PQ_TYPE_VECTOR, "selector of type %d", n->type);
        size_t nm = n->selector.nmatchers;
        fuzz_check(nm >= 1 && nm <= PQ_MAX_MATCHERS, "%zu matchers", nm);
        for (size_t i = 0; i < nm; i++) {
            const stele_matcher *m = &n->selector.matchers[i];
            fuzz_check(m->name && m->value && (unsigned)m->type <= STELE_MATCH_NOT_REGEX,
                       "bad matcher %zu", i);
            fuzz_check(is_label_name(m->name), "bad label name in matcher %zu", i);
        }
        return 1;
    }
    case PQ_MATRIX_SELECTOR:
        fuzz_check(n->type == PQ_TYPE_MATRIX, "matrix of type %d", n->type);
        fuzz_check(n->matrix.range_ns > 0, "range %" PRId64, n->matrix.range_ns);
        fuzz_check(n->matrix.selector && n->matrix.selector->kind == PQ_VECTOR_SELECTOR,
                   "matrix over a non-selector");
        return 1 + check_node(n->matrix.selector, qlen, depth + 1);
    case PQ_CALL: {
        fuzz_check((unsigned)n->call.fn < PQ_FN_COUNT_, "function %d", n->call.fn);
        fuzz_check(n->type == PQ_TYPE_VECTOR, "call of type %d", n->type);
        size_t lo = n->call.fn == PQ_FN_CLAMP_MIN || n->call.fn == PQ_FN_CLAMP_MAX ? 2 : 1;
        size_t hi = lo == 2 || n->call.fn == PQ_FN_ROUND ? 2 : 1;
        fuzz_check(n->call.nargs >= lo && n->call.nargs <= hi, "%s with %zu arguments",
                   pq_function_name(n->call.fn), n->call.nargs);
        for (size_t i = 0; i < n->call.nargs; i++) {
            fuzz_check(n->call.args[i]->type == function_args[n->call.fn][i],
                       "%s argument %zu of type %d", pq_function_name(n->call.fn), i,
                       n->call.args[i]->type);
            k = check_node(n->call.args[i], qlen, depth + 1);
            h = k > h ? k : h;
        }
        return 1 + h;
    }
    case PQ_AGGREGATE: {
        fuzz_check((unsigned)n->aggregate.op <= PQ_AGG_BOTTOMK, "aggregation %d", n->aggregate.op);
        fuzz_check(n->type == PQ_TYPE_VECTOR, "aggregation of type %d", n->type);
        fuzz_check(n->aggregate.expr && n->aggregate.expr->type == PQ_TYPE_VECTOR,
                   "aggregation over a non-vector");
        bool param = n->aggregate.op == PQ_AGG_TOPK || n->aggregate.op == PQ_AGG_BOTTOMK;
        fuzz_check(param == (n->aggregate.param != NULL), "parameter presence");
        check_labels(n->aggregate.labels, n->aggregate.nlabels);
        h = check_node(n->aggregate.expr, qlen, depth + 1);
        if (param) {
            fuzz_check(n->aggregate.param->type == PQ_TYPE_SCALAR, "non-scalar parameter");
            k = check_node(n->aggregate.param, qlen, depth + 1);
            h = k > h ? k : h;
        }
        return 1 + h;
    }
    case PQ_BINARY: {
        pq_binop op = n->binary.op;
        fuzz_check((unsigned)op <= PQ_OP_UNLESS, "operator %d", op);
        pq_type lt = n->binary.lhs->type, rt = n->binary.rhs->type;
        fuzz_check(is_vector_or_scalar(lt) && is_vector_or_scalar(rt), "operand types %d %d", lt,
                   rt);
        bool scalar = lt == PQ_TYPE_SCALAR && rt == PQ_TYPE_SCALAR;
        fuzz_check(n->type == (scalar ? PQ_TYPE_SCALAR : PQ_TYPE_VECTOR), "binary of type %d",
                   n->type);
        bool comparison = op >= PQ_OP_EQ && op <= PQ_OP_LE;
        bool set = op >= PQ_OP_AND;
        fuzz_check(!n->binary.return_bool || comparison, "bool on %s", pq_binop_name(op));
        fuzz_check(!(comparison && scalar) || n->binary.return_bool, "scalar comparison");
        fuzz_check(!set || (lt == PQ_TYPE_VECTOR && rt == PQ_TYPE_VECTOR), "set op on scalar");
        fuzz_check(!n->binary.matching || (lt == PQ_TYPE_VECTOR && rt == PQ_TYPE_VECTOR),
                   "vector matching with a scalar");
        fuzz_check(n->binary.matching || (!n->binary.on && n->binary.nlabels == 0),
                   "matching fields without a clause");
        check_labels(n->binary.labels, n->binary.nlabels);
        h = check_node(n->binary.lhs, qlen, depth + 1);
        k = check_node(n->binary.rhs, qlen, depth + 1);
        return 1 + (k > h ? k : h);
    }
    case PQ_UNARY_MINUS:
        fuzz_check(is_vector_or_scalar(n->type) && n->unary.expr->type == n->type,
                   "unary minus of type %d over %d", n->type, n->unary.expr->type);
        return 1 + check_node(n->unary.expr, qlen, depth + 1);
    case PQ_PAREN:
        fuzz_check(n->type != PQ_TYPE_MATRIX && n->unary.expr->type == n->type,
                   "parentheses of type %d over %d", n->type, n->unary.expr->type);
        return 1 + check_node(n->unary.expr, qlen, depth + 1);
    }
    fuzz_check(false, "unknown node kind %d", (int)n->kind);
    return 0;
}

static bool same_tree(const pq_node *a, const pq_node *b)
{
    if (a->kind != b->kind || a->type != b->type)
        return false;
    switch (a->kind) {
    case PQ_NUMBER:
        return (isnan(a->number) && isnan(b->number)) ||
               memcmp(&a->number, &b->number, sizeof(double)) == 0;
    case PQ_STRING:
        return strcmp(a->string, b->string) == 0;
    case PQ_VECTOR_SELECTOR:
        if (a->selector.nmatchers != b->selector.nmatchers ||
            a->selector.offset_ns != b->selector.offset_ns)
            return false;
        for (size_t i = 0; i < a->selector.nmatchers; i++) {
            const stele_matcher *x = &a->selector.matchers[i], *y = &b->selector.matchers[i];
            if (x->type != y->type || strcmp(x->name, y->name) || strcmp(x->value, y->value))
                return false;
        }
        return true;
    case PQ_MATRIX_SELECTOR:
        return a->matrix.range_ns == b->matrix.range_ns &&
               same_tree(a->matrix.selector, b->matrix.selector);
    case PQ_CALL:
        if (a->call.fn != b->call.fn || a->call.nargs != b->call.nargs)
            return false;
        for (size_t i = 0; i < a->call.nargs; i++)
            if (!same_tree(a->call.args[i], b->call.args[i]))
                return false;
        return true;
    case PQ_AGGREGATE:
        if (a->aggregate.op != b->aggregate.op || a->aggregate.without != b->aggregate.without ||
            a->aggregate.nlabels != b->aggregate.nlabels ||
            !a->aggregate.param != !b->aggregate.param)
            return false;
        for (size_t i = 0; i < a->aggregate.nlabels; i++)
            if (strcmp(a->aggregate.labels[i], b->aggregate.labels[i]))
                return false;
        return (!a->aggregate.param || same_tree(a->aggregate.param, b->aggregate.param)) &&
               same_tree(a->aggregate.expr, b->aggregate.expr);
    case PQ_BINARY:
        if (a->binary.op != b->binary.op || a->binary.return_bool != b->binary.return_bool ||
            a->binary.matching != b->binary.matching || a->binary.on != b->binary.on ||
            a->binary.nlabels != b->binary.nlabels)
            return false;
        for (size_t i = 0; i < a->binary.nlabels; i++)
            if (strcmp(a->binary.labels[i], b->binary.labels[i]))
                return false;
        return same_tree(a->binary.lhs, b->binary.lhs) && same_tree(a->binary.rhs, b->binary.rhs);
    case PQ_UNARY_MINUS:
    case PQ_PAREN:
        return same_tree(a->unary.expr, b->unary.expr);
    }
    return false;
}

static bool utf8_valid(const char *s)
{
    const unsigned char *u = (const unsigned char *)s;
    while (*u) {
        if (*u < 0x80) {
            u++;
            continue;
        }
        int n = *u >= 0xF0 ? 3 : *u >= 0xE0 ? 2 : *u >= 0xC2 ? 1 : -1;
        if (n < 0 || *u > 0xF4)
            return false;
        u++;
        for (int i = 0; i < n; i++, u++)
            if ((*u & 0xC0) != 0x80)
                return false;
    }
    return true;
}

static void check_message(const char *err, size_t errcap, size_t qlen)
{
    fuzz_check(memchr(err, '\0', errcap) != NULL, "unterminated message");
    fuzz_check(err[0] != '\0', "empty message");
    fuzz_check(utf8_valid(err), "message not UTF-8: %s", err);
    for (const char *c = err; *c; c++)
        fuzz_check((unsigned char)*c >= 0x20, "control character in message: %s", err);
    size_t pos = 0;
    int used = 0;
    fuzz_check(sscanf(err, "parse error at char %zu: %n", &pos, &used) == 1 && used > 0,
               "message without a position: %s", err);
    fuzz_check(pos >= 1 && pos <= qlen + 1, "position %zu in a %zu-byte query: %s", pos, qlen, err);
    fuzz_check(err[used] != '\0', "message says nothing after the position: %s", err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[512];
    pq_expr *e = NULL;
    if (size > PQ_MAX_QUERY_BYTES) {
        int rc = pq_parse((const char *)data, size, &e, err, sizeof(err));
        fuzz_check(rc == -EINVAL && e == NULL && strstr(err, "query too long"),
                   "a %zu-byte query was not refused as too long", size);
        return 0;
    }
    /* A copy of exactly `size` bytes, so ASan sees any read past the end. */
    char *q = malloc(size ? size : 1);
    if (!q)
        return 0;
    if (size)
        memcpy(q, data, size);
    memset(err, 0x5a, sizeof(err));
    int rc = pq_parse(q, size, &e, err, sizeof(err));
    fuzz_check(rc == 0 || rc == -EINVAL, "rc %d", rc);
    if (rc != 0) {
        fuzz_check(e == NULL, "tree left behind on error");
        check_message(err, sizeof(err), size);
        free(q);
        return 0;
    }
    const pq_node *root = pq_expr_root(e);
    fuzz_check(root != NULL, "no root");
    check_node(root, size, 1);

    sbuf text = {0};
    print_promql(&text, root);
    pq_expr *again = NULL;
    rc = pq_parse(text.s, text.len, &again, err, sizeof(err));
    fuzz_check(rc == 0 || (text.len > PQ_MAX_QUERY_BYTES && rc == -EINVAL),
               "printed query does not parse: %s\nprinted: %.300s", err, text.s);
    if (rc == 0) {
        fuzz_check(same_tree(root, pq_expr_root(again)),
                   "printed query parses to another tree\nprinted: %.300s", text.s);
        pq_expr_free(again);
    }
    free(text.s);
    pq_expr_free(e);
    free(q);
    return 0;
}
