/*
 * test_promql.c — unit and property tests of the PromQL parser (stele/promql.h).
 *
 * Tree shapes are checked through a compact S-expression rendering ("(+ 1 (* 2 3))"),
 * so a table row states a query and the exact tree Prometheus builds for it. Errors are
 * checked by position and message. Two property tests use a seeded PRNG (the seed is
 * printed on failure; STELE_TEST_SEED replays it): one generates random trees from the
 * grammar, prints them as PromQL (with random blanks and comments between tokens),
 * parses the text and compares the trees field by field; the other parses random token
 * soup and checks that whatever parses prints back to text that parses to the same tree.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <cmocka.h>

#include "stele/promql.h"

/* ---- text buffers ------------------------------------------------------------------ */

typedef struct {
    char *s;
    size_t len, cap;
} sbuf;

static void sb_putn(sbuf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (b->len + n + 1 > cap)
            cap *= 2;
        b->s = realloc(b->s, cap);
        assert_non_null(b->s);
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
    assert_non_null(big);
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    sb_putn(b, big, (size_t)n);
    free(big);
}

/* ---- rendering -------------------------------------------------------------------- */

static const char *match_op(stele_match_type t)
{
    switch (t) {
    case STELE_MATCH_EQUAL:
        return "=";
    case STELE_MATCH_NOT_EQUAL:
        return "!=";
    case STELE_MATCH_REGEX:
        return "=~";
    case STELE_MATCH_NOT_REGEX:
        return "!~";
    }
    return "?";
}

/* A duration in Prometheus' units, largest first: 5400 s → "1h30m". */
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
    assert_int_equal(ns % 1000000, 0);
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

static void put_number(sbuf *b, double v)
{
    if (isnan(v))
        sb_puts(b, "NaN");
    else if (isinf(v))
        sb_puts(b, v < 0 ? "-Inf" : "Inf");
    else
        sb_printf(b, "%.17g", v);
}

static void put_labels(sbuf *b, const char *const *labels, size_t n)
{
    sb_puts(b, "(");
    for (size_t i = 0; i < n; i++)
        sb_printf(b, "%s%s", i ? "," : "", labels[i]);
    sb_puts(b, ")");
}

static void put_matchers(sbuf *b, const pq_node *sel, size_t from)
{
    sb_puts(b, "{");
    for (size_t i = from; i < sel->selector.nmatchers; i++) {
        const stele_matcher *m = &sel->selector.matchers[i];
        sb_printf(b, "%s%s%s", i > from ? "," : "", m->name, match_op(m->type));
        put_quoted(b, m->value);
    }
    sb_puts(b, "}");
}

/* S-expression of a tree: what the table tests compare. */
static void sexpr(sbuf *b, const pq_node *n)
{
    switch (n->kind) {
    case PQ_NUMBER:
        put_number(b, n->number);
        return;
    case PQ_STRING:
        put_quoted(b, n->string);
        return;
    case PQ_VECTOR_SELECTOR: {
        const stele_matcher *m0 = &n->selector.matchers[0];
        size_t from = 0;
        if (n->selector.nmatchers && strcmp(m0->name, "__name__") == 0 &&
            m0->type == STELE_MATCH_EQUAL) {
            sb_puts(b, m0->value);
            from = 1;
        }
        if (from < n->selector.nmatchers)
            put_matchers(b, n, from);
        if (n->selector.offset_ns) {
            sb_puts(b, " offset ");
            put_duration(b, n->selector.offset_ns);
        }
        return;
    }
    case PQ_MATRIX_SELECTOR:
        sb_puts(b, "(range ");
        sexpr(b, n->matrix.selector);
        sb_puts(b, " ");
        put_duration(b, n->matrix.range_ns);
        sb_puts(b, ")");
        return;
    case PQ_CALL:
        sb_printf(b, "(%s", pq_function_name(n->call.fn));
        for (size_t i = 0; i < n->call.nargs; i++) {
            sb_puts(b, " ");
            sexpr(b, n->call.args[i]);
        }
        sb_puts(b, ")");
        return;
    case PQ_AGGREGATE:
        sb_printf(b, "(%s", pq_aggop_name(n->aggregate.op));
        if (n->aggregate.without || n->aggregate.nlabels) {
            sb_puts(b, n->aggregate.without ? " without" : " by");
            put_labels(b, n->aggregate.labels, n->aggregate.nlabels);
        }
        if (n->aggregate.param) {
            sb_puts(b, " ");
            sexpr(b, n->aggregate.param);
        }
        sb_puts(b, " ");
        sexpr(b, n->aggregate.expr);
        sb_puts(b, ")");
        return;
    case PQ_BINARY:
        sb_printf(b, "(%s", pq_binop_name(n->binary.op));
        if (n->binary.return_bool)
            sb_puts(b, " bool");
        if (n->binary.matching) {
            sb_puts(b, n->binary.on ? " on" : " ignoring");
            put_labels(b, n->binary.labels, n->binary.nlabels);
        }
        sb_puts(b, " ");
        sexpr(b, n->binary.lhs);
        sb_puts(b, " ");
        sexpr(b, n->binary.rhs);
        sb_puts(b, ")");
        return;
    case PQ_UNARY_MINUS:
        sb_puts(b, "(neg ");
        sexpr(b, n->unary.expr);
        sb_puts(b, ")");
        return;
    case PQ_PAREN:
        sb_puts(b, "(paren ");
        sexpr(b, n->unary.expr);
        sb_puts(b, ")");
        return;
    }
    fail_msg("unknown node kind %d", (int)n->kind);
}

/* ---- PromQL printer (for the round trips) ------------------------------------------ */

/* Blanks between tokens: a space, or (when the PRNG is given) random blanks and
 * comments, which the lexer must skip wherever a space may stand. */
static uint64_t *print_noise;

static uint64_t prng_step(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15u); /* splitmix64 */
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
    return z ^ (z >> 31);
}

static void put_blank(sbuf *b)
{
    static const char *const blanks[] = {" ", "  ", "\t", "\n", " # a comment\n", "\r\n", "#\n"};
    if (!print_noise || prng_step(print_noise) % 4 != 0)
        sb_puts(b, " ");
    else
        sb_puts(b, blanks[prng_step(print_noise) % (sizeof(blanks) / sizeof(blanks[0]))]);
}

/* Words that lex as something else than a metric name where an operand stands. */
static bool bare_name_ok(const char *s)
{
    static const char *const reserved[] = {"on",   "ignoring", "group_left", "group_right",
                                           "bool", "atan2",    "inf",        "nan"};
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '_' || *s == ':'))
        return false;
    for (const char *c = s; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || *c == '_' || *c == ':' ||
              (*c >= '0' && *c <= '9')))
            return false;
    for (size_t i = 0; i < sizeof(reserved) / sizeof(reserved[0]); i++)
        if (strcasecmp(s, reserved[i]) == 0)
            return false;
    return true;
}

static void print_selector(sbuf *b, const pq_node *n, bool with_offset)
{
    const stele_matcher *m = n->selector.matchers;
    size_t from = 0;
    bool name_twice = false;
    for (size_t i = 1; i < n->selector.nmatchers; i++)
        name_twice |= strcmp(m[i].name, "__name__") == 0;
    if (n->selector.nmatchers && strcmp(m[0].name, "__name__") == 0 &&
        m[0].type == STELE_MATCH_EQUAL && !name_twice && bare_name_ok(m[0].value)) {
        sb_puts(b, m[0].value);
        from = 1;
    }
    if (from < n->selector.nmatchers)
        put_matchers(b, n, from);
    if (with_offset && n->selector.offset_ns) {
        put_blank(b);
        sb_puts(b, "offset");
        put_blank(b);
        put_duration(b, n->selector.offset_ns);
    }
}

static void print_promql(sbuf *b, const pq_node *n)
{
    switch (n->kind) {
    case PQ_NUMBER:
        put_number(b, n->number);
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
            put_blank(b);
            sb_puts(b, "offset");
            put_blank(b);
            put_duration(b, n->matrix.selector->selector.offset_ns);
        }
        return;
    case PQ_CALL:
        sb_printf(b, "%s(", pq_function_name(n->call.fn));
        for (size_t i = 0; i < n->call.nargs; i++) {
            if (i) {
                sb_puts(b, ",");
                put_blank(b);
            }
            print_promql(b, n->call.args[i]);
        }
        sb_puts(b, ")");
        return;
    case PQ_AGGREGATE: {
        bool grouping_first = n->aggregate.nlabels % 2 == 0; /* both forms, stably */
        sb_puts(b, pq_aggop_name(n->aggregate.op));
        if (grouping_first && (n->aggregate.without || n->aggregate.nlabels)) {
            put_blank(b);
            sb_puts(b, n->aggregate.without ? "without" : "by");
            put_blank(b);
            put_labels(b, n->aggregate.labels, n->aggregate.nlabels);
            put_blank(b);
        }
        sb_puts(b, "(");
        if (n->aggregate.param) {
            print_promql(b, n->aggregate.param);
            sb_puts(b, ",");
            put_blank(b);
        }
        print_promql(b, n->aggregate.expr);
        sb_puts(b, ")");
        if (!grouping_first && (n->aggregate.without || n->aggregate.nlabels)) {
            put_blank(b);
            sb_puts(b, n->aggregate.without ? "without" : "by");
            put_labels(b, n->aggregate.labels, n->aggregate.nlabels);
        }
        return;
    }
    case PQ_BINARY:
        print_promql(b, n->binary.lhs);
        put_blank(b);
        sb_puts(b, pq_binop_name(n->binary.op));
        if (n->binary.return_bool) {
            put_blank(b);
            sb_puts(b, "bool");
        }
        if (n->binary.matching) {
            put_blank(b);
            sb_puts(b, n->binary.on ? "on" : "ignoring");
            put_labels(b, n->binary.labels, n->binary.nlabels);
        }
        put_blank(b);
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

/* ---- structural comparison -------------------------------------------------------- */

static bool same_string(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

static bool same_labels(const char *const *a, size_t na, const char *const *b, size_t nb)
{
    if (na != nb)
        return false;
    for (size_t i = 0; i < na; i++)
        if (!same_string(a[i], b[i]))
            return false;
    return true;
}

/* Equal trees, positions aside; on a difference *why names it. */
static bool same_tree(const pq_node *a, const pq_node *b, const char **why)
{
    if (!a || !b) {
        *why = "missing node";
        return a == b;
    }
    if (a->kind != b->kind || a->type != b->type) {
        *why = "kind or type";
        return false;
    }
    switch (a->kind) {
    case PQ_NUMBER:
        if (!(isnan(a->number) && isnan(b->number)) &&
            memcmp(&a->number, &b->number, sizeof(double)) != 0) {
            *why = "number";
            return false;
        }
        return true;
    case PQ_STRING:
        *why = "string";
        return same_string(a->string, b->string);
    case PQ_VECTOR_SELECTOR:
        *why = "selector";
        if (a->selector.nmatchers != b->selector.nmatchers ||
            a->selector.offset_ns != b->selector.offset_ns)
            return false;
        for (size_t i = 0; i < a->selector.nmatchers; i++) {
            const stele_matcher *x = &a->selector.matchers[i], *y = &b->selector.matchers[i];
            if (x->type != y->type || !same_string(x->name, y->name) ||
                !same_string(x->value, y->value))
                return false;
        }
        return true;
    case PQ_MATRIX_SELECTOR:
        if (a->matrix.range_ns != b->matrix.range_ns) {
            *why = "range";
            return false;
        }
        return same_tree(a->matrix.selector, b->matrix.selector, why);
    case PQ_CALL:
        if (a->call.fn != b->call.fn || a->call.nargs != b->call.nargs) {
            *why = "call";
            return false;
        }
        for (size_t i = 0; i < a->call.nargs; i++)
            if (!same_tree(a->call.args[i], b->call.args[i], why))
                return false;
        return true;
    case PQ_AGGREGATE:
        if (a->aggregate.op != b->aggregate.op || a->aggregate.without != b->aggregate.without ||
            !same_labels(a->aggregate.labels, a->aggregate.nlabels, b->aggregate.labels,
                         b->aggregate.nlabels) ||
            !a->aggregate.param != !b->aggregate.param) {
            *why = "aggregate";
            return false;
        }
        if (a->aggregate.param && !same_tree(a->aggregate.param, b->aggregate.param, why))
            return false;
        return same_tree(a->aggregate.expr, b->aggregate.expr, why);
    case PQ_BINARY:
        if (a->binary.op != b->binary.op || a->binary.return_bool != b->binary.return_bool ||
            a->binary.matching != b->binary.matching || a->binary.on != b->binary.on ||
            !same_labels(a->binary.labels, a->binary.nlabels, b->binary.labels,
                         b->binary.nlabels)) {
            *why = "binary";
            return false;
        }
        return same_tree(a->binary.lhs, b->binary.lhs, why) &&
               same_tree(a->binary.rhs, b->binary.rhs, why);
    case PQ_UNARY_MINUS:
    case PQ_PAREN:
        return same_tree(a->unary.expr, b->unary.expr, why);
    }
    *why = "unknown kind";
    return false;
}

/* ---- helpers ---------------------------------------------------------------------- */

static pq_expr *parse_ok(const char *q)
{
    pq_expr *e = NULL;
    char err[512];
    int rc = pq_parse(q, strlen(q), &e, err, sizeof(err));
    if (rc != 0)
        fail_msg("query [%s]: expected success, got %d: %s", q, rc, err);
    assert_non_null(e);
    assert_non_null(pq_expr_root(e));
    return e;
}

/* Parses q and compares its S-expression with want. */
static void check_shape(const char *q, const char *want)
{
    pq_expr *e = parse_ok(q);
    sbuf b = {0};
    sexpr(&b, pq_expr_root(e));
    if (strcmp(b.s, want) != 0)
        fail_msg("query [%s]: expected tree %s, got %s", q, want, b.s);
    free(b.s);
    pq_expr_free(e);
}

static void check_type(const char *q, pq_type want)
{
    pq_expr *e = parse_ok(q);
    if (pq_expr_root(e)->type != want)
        fail_msg("query [%s]: expected type %d, got %d", q, (int)want, (int)pq_expr_root(e)->type);
    pq_expr_free(e);
}

/* Parses q expecting -EINVAL with "parse error at char <pos>: <...what...>". pos 0
 * skips the position check. */
static void check_error(const char *q, size_t pos, const char *what)
{
    pq_expr *e = (pq_expr *)0x1;
    char err[512];
    memset(err, 'x', sizeof(err));
    int rc = pq_parse(q, strlen(q), &e, err, sizeof(err));
    if (rc == 0) {
        sbuf b = {0};
        sexpr(&b, pq_expr_root(e));
        fail_msg("query [%s]: expected error \"%s\", got tree %s", q, what, b.s);
    }
    if (rc != -EINVAL)
        fail_msg("query [%s]: expected -EINVAL, got %d (%s)", q, rc, err);
    assert_null(e);
    if (!strstr(err, what))
        fail_msg("query [%s]: expected message with \"%s\", got \"%s\"", q, what, err);
    if (pos) {
        char prefix[64];
        snprintf(prefix, sizeof(prefix), "parse error at char %zu: ", pos);
        if (strncmp(err, prefix, strlen(prefix)) != 0)
            fail_msg("query [%s]: expected \"%s…\", got \"%s\"", q, prefix, err);
    }
}

/* ---- precedence and associativity -------------------------------------------------- */

static void test_precedence(void **state)
{
    (void)state;
    static const char *const cases[][2] = {
        {"1 + 2 * 3", "(+ 1 (* 2 3))"},
        {"1 * 2 + 3", "(+ (* 1 2) 3)"},
        {"a + b * c ^ d", "(+ a (* b (^ c d)))"},
        {"a ^ b * c + d", "(+ (* (^ a b) c) d)"},
        {"a / b % c", "(% (/ a b) c)"},
        {"a + b > c - d", "(> (+ a b) (- c d))"},
        {"a > b and c", "(and (> a b) c)"},
        {"a and b or c", "(or (and a b) c)"},
        {"a or b and c", "(or a (and b c))"},
        {"a or b unless c", "(or a (unless b c))"},
        {"a unless b and c", "(and (unless a b) c)"},
        {"a == b != c", "(!= (== a b) c)"},
        {"a <= b >= c < d > e", "(> (< (>= (<= a b) c) d) e)"},
        {"(1 + 2) * 3", "(* (paren (+ 1 2)) 3)"},
        {"a - (b - c)", "(- a (paren (- b c)))"},
        {"a * b and c + d or e", "(or (and (* a b) (+ c d)) e)"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        check_shape(cases[i][0], cases[i][1]);
}

static void test_associativity(void **state)
{
    (void)state;
    check_shape("a - b - c", "(- (- a b) c)");
    check_shape("a / b / c", "(/ (/ a b) c)");
    check_shape("2 ^ 3 ^ 2", "(^ 2 (^ 3 2))");
    check_shape("a ^ b ^ c ^ d", "(^ a (^ b (^ c d)))");
    check_shape("a and b and c", "(and (and a b) c)");
    check_shape("a or b or c", "(or (or a b) c)");
    check_shape("a == bool b == bool c", "(== bool (== bool a b) c)");
}

static void test_unary(void **state)
{
    (void)state;
    check_shape("-2 ^ 2", "(neg (^ 2 2))"); /* -4, as in Prometheus */
    check_shape("-a ^ b", "(neg (^ a b))");
    check_shape("-a * b", "(* (neg a) b)");
    check_shape("-a + b", "(+ (neg a) b)");
    check_shape("a * -b", "(* a (neg b))");
    check_shape("a + -b * c", "(+ a (* (neg b) c))");
    check_shape("2 ^ -1", "(^ 2 -1)");
    check_shape("2 ^ -x ^ 2", "(^ 2 (neg (^ x 2)))");
    check_shape("2 ^ -3 * 4", "(* (^ 2 -3) 4)");
    check_shape("-1", "-1");
    check_shape("- 1", "-1");
    check_shape("--1", "1");
    check_shape("+1", "1");
    check_shape("-(1)", "(neg (paren 1))");
    check_shape("+x", "x");
    check_shape("-x offset 5m", "(neg x offset 5m)");
    check_shape("- -x", "(neg (neg x))");
    check_shape("-Inf", "-Inf");
    check_type("-1", PQ_TYPE_SCALAR);
    check_type("-x", PQ_TYPE_VECTOR);
    check_type("-(1)", PQ_TYPE_SCALAR);
    check_error("-x[5m]", 1,
                "unary expression only allowed on expressions of type scalar or instant vector, "
                "got \"range vector\"");
    check_error("-\"a\"", 1, "unary expression only allowed");
    check_error("+\"a\"", 1, "unary expression only allowed");
}

/* ---- node kinds ------------------------------------------------------------------- */

static void test_node_kinds(void **state)
{
    (void)state;
    pq_expr *e = parse_ok("1.5");
    pq_node *n = pq_expr_root(e);
    assert_int_equal(n->kind, PQ_NUMBER);
    assert_int_equal(n->type, PQ_TYPE_SCALAR);
    assert_true(n->number == 1.5);
    assert_int_equal(n->pos, 0);
    pq_expr_free(e);

    e = parse_ok("  \"str\"");
    n = pq_expr_root(e);
    assert_int_equal(n->kind, PQ_STRING);
    assert_int_equal(n->type, PQ_TYPE_STRING);
    assert_string_equal(n->string, "str");
    assert_int_equal(n->pos, 2);
    pq_expr_free(e);

    e = parse_ok("up{job=\"a\"} offset 1m");
    n = pq_expr_root(e);
    assert_int_equal(n->kind, PQ_VECTOR_SELECTOR);
    assert_int_equal(n->type, PQ_TYPE_VECTOR);
    assert_int_equal(n->selector.nmatchers, 2);
    assert_string_equal(n->selector.matchers[0].name, "__name__");
    assert_string_equal(n->selector.matchers[0].value, "up");
    assert_int_equal(n->selector.matchers[0].type, STELE_MATCH_EQUAL);
    assert_string_equal(n->selector.matchers[1].name, "job");
    assert_string_equal(n->selector.matchers[1].value, "a");
    assert_true(n->selector.offset_ns == 60000000000LL);
    pq_expr_free(e);

    e = parse_ok("up[5m] offset 1h");
    n = pq_expr_root(e);
    assert_int_equal(n->kind, PQ_MATRIX_SELECTOR);
    assert_int_equal(n->type, PQ_TYPE_MATRIX);
    assert_true(n->matrix.range_ns == 300000000000LL);
    assert_int_equal(n->matrix.selector->kind, PQ_VECTOR_SELECTOR);
    assert_true(n->matrix.selector->selector.offset_ns == 3600000000000LL);
    pq_expr_free(e);

    e = parse_ok("clamp_max(up, 3)");
    n = pq_expr_root(e);
    assert_int_equal(n->kind, PQ_CALL);
    assert_int_equal(n->type, PQ_TYPE_VECTOR);
    assert_int_equal(n->call.fn, PQ_FN_CLAMP_MAX);
    assert_int_equal(n->call.nargs, 2);
    assert_int_equal(n->call.args[0]->kind, PQ_VECTOR_SELECTOR);
    assert_int_equal(n->call.args[1]->kind, PQ_NUMBER);
    pq_expr_free(e);

    e = parse_ok("bottomk without (a, b) (2, up)");
    n = pq_expr_root(e);
    assert_int_equal(n->kind, PQ_AGGREGATE);
    assert_int_equal(n->type, PQ_TYPE_VECTOR);
    assert_int_equal(n->aggregate.op, PQ_AGG_BOTTOMK);
    assert_true(n->aggregate.without);
    assert_int_equal(n->aggregate.nlabels, 2);
    assert_string_equal(n->aggregate.labels[0], "a");
    assert_string_equal(n->aggregate.labels[1], "b");
    assert_int_equal(n->aggregate.param->kind, PQ_NUMBER);
    assert_int_equal(n->aggregate.expr->kind, PQ_VECTOR_SELECTOR);
    pq_expr_free(e);

    e = parse_ok("a / ignoring(x) b");
    n = pq_expr_root(e);
    assert_int_equal(n->kind, PQ_BINARY);
    assert_int_equal(n->binary.op, PQ_OP_DIV);
    assert_true(n->binary.matching);
    assert_false(n->binary.on);
    assert_false(n->binary.return_bool);
    assert_int_equal(n->binary.nlabels, 1);
    assert_string_equal(n->binary.labels[0], "x");
    pq_expr_free(e);

    e = parse_ok("-up");
    n = pq_expr_root(e);
    assert_int_equal(n->kind, PQ_UNARY_MINUS);
    assert_int_equal(n->type, PQ_TYPE_VECTOR);
    assert_int_equal(n->unary.expr->kind, PQ_VECTOR_SELECTOR);
    pq_expr_free(e);

    e = parse_ok("(up)");
    n = pq_expr_root(e);
    assert_int_equal(n->kind, PQ_PAREN);
    assert_int_equal(n->type, PQ_TYPE_VECTOR);
    assert_int_equal(n->unary.expr->kind, PQ_VECTOR_SELECTOR);
    assert_int_equal(n->unary.expr->pos, 1);
    pq_expr_free(e);

    /* A parenthesised range vector comes back as the range selector itself. */
    check_shape("(up[5m])", "(range up 5m)");
    check_shape("((up[5m]))", "(range up 5m)");
    check_shape("rate((up[5m]))", "(rate (range up 5m))");
}

static void test_positions(void **state)
{
    (void)state;
    pq_expr *e = parse_ok("a + sum(rate(x[5m]))");
    pq_node *n = pq_expr_root(e);
    assert_int_equal(n->pos, 0); /* a binary starts where its left side does */
    assert_int_equal(n->binary.rhs->pos, 4);
    assert_int_equal(n->binary.rhs->aggregate.expr->pos, 8);
    assert_int_equal(n->binary.rhs->aggregate.expr->call.args[0]->pos, 13);
    pq_expr_free(e);

    e = parse_ok("  - 5");
    assert_int_equal(pq_expr_root(e)->pos, 2); /* a folded number starts at its sign */
    pq_expr_free(e);
}

/* ---- functions -------------------------------------------------------------------- */

static void test_functions(void **state)
{
    (void)state;
    static const char *const range_functions[] = {
        "rate",          "irate",           "increase",      "delta",
        "idelta",        "min_over_time",   "max_over_time", "avg_over_time",
        "sum_over_time", "count_over_time", "last_over_time"};
    char q[256], msg[256];
    for (size_t i = 0; i < sizeof(range_functions) / sizeof(range_functions[0]); i++) {
        const char *f = range_functions[i];
        snprintf(q, sizeof(q), "%s(x[5m])", f);
        pq_expr *e = parse_ok(q);
        assert_int_equal(pq_expr_root(e)->kind, PQ_CALL);
        assert_string_equal(pq_function_name(pq_expr_root(e)->call.fn), f);
        assert_int_equal(pq_expr_root(e)->type, PQ_TYPE_VECTOR);
        pq_expr_free(e);

        snprintf(q, sizeof(q), "%s(x)", f);
        snprintf(msg, sizeof(msg),
                 "expected type range vector in call to function \"%s\", got instant vector", f);
        check_error(q, strlen(f) + 2, msg);
        snprintf(q, sizeof(q), "%s(1)", f);
        snprintf(msg, sizeof(msg),
                 "expected type range vector in call to function \"%s\", got scalar", f);
        check_error(q, strlen(f) + 2, msg);
        snprintf(q, sizeof(q), "%s()", f);
        snprintf(msg, sizeof(msg), "expected 1 argument(s) in call to \"%s\", got 0", f);
        check_error(q, 1, msg);
        snprintf(q, sizeof(q), "%s(x[5m], x[5m])", f);
        snprintf(msg, sizeof(msg), "expected 1 argument(s) in call to \"%s\", got 2", f);
        check_error(q, 1, msg);
    }

    check_shape("abs(x)", "(abs x)");
    check_shape("abs(-1 * x)", "(abs (* -1 x))");
    check_error("abs(x[5m])", 5,
                "expected type instant vector in call to function \"abs\", got range vector");
    check_error("abs(1)", 5,
                "expected type instant vector in call to function \"abs\", got scalar");
    check_error("abs(\"a\")", 5, "got string");
    check_error("abs()", 1, "expected 1 argument(s) in call to \"abs\", got 0");
    check_error("abs(x, x)", 1, "expected 1 argument(s) in call to \"abs\", got 2");

    static const char *const clamps[] = {"clamp_min", "clamp_max"};
    for (size_t i = 0; i < 2; i++) {
        const char *f = clamps[i];
        snprintf(q, sizeof(q), "%s(x, 1 + 2)", f);
        check_shape(q, i == 0 ? "(clamp_min x (+ 1 2))" : "(clamp_max x (+ 1 2))");
        snprintf(q, sizeof(q), "%s(x)", f);
        snprintf(msg, sizeof(msg), "expected 2 argument(s) in call to \"%s\", got 1", f);
        check_error(q, 1, msg);
        snprintf(q, sizeof(q), "%s(x, 1, 2)", f);
        snprintf(msg, sizeof(msg), "expected 2 argument(s) in call to \"%s\", got 3", f);
        check_error(q, 1, msg);
        snprintf(q, sizeof(q), "%s(x, y)", f);
        snprintf(msg, sizeof(msg),
                 "expected type scalar in call to function \"%s\", got instant vector", f);
        check_error(q, strlen(f) + 5, msg);
        snprintf(q, sizeof(q), "%s(1, 1)", f);
        snprintf(msg, sizeof(msg),
                 "expected type instant vector in call to function \"%s\", got scalar", f);
        check_error(q, strlen(f) + 2, msg);
    }

    check_shape("round(x)", "(round x)");
    check_shape("round(x, 0.5)", "(round x 0.5)");
    check_error("round()", 1, "expected at least 1 argument(s) in call to \"round\", got 0");
    check_error("round(x, 1, 2)", 1, "expected at most 2 argument(s) in call to \"round\", got 3");
    check_error("round(x, y)", 10, "expected type scalar in call to function \"round\"");
    check_error("round(x, 1, 2, 3, 4, 5)", 1, "expected at most 2 argument(s)");

    /* Function names are case-sensitive, unlike keywords. */
    check_error("Rate(x[5m])", 1, "unknown function with name \"Rate\"");
    check_error("foo(x)", 1, "unknown function with name \"foo\"");
    check_error("histogram_quantile(0.9, x)", 1,
                "function \"histogram_quantile\" is not supported");
    check_error("label_replace(x, \"a\", \"b\", \"c\", \"d\")", 1,
                "function \"label_replace\" is not supported");
    check_error("time()", 1, "function \"time\" is not supported");
    check_error("vector(1)", 1, "function \"vector\" is not supported");
    check_error("scalar(x)", 1, "function \"scalar\" is not supported");
    check_error("a:b(x)", 4, "unexpected \"(\"");
    check_error("rate(x[5m],)", 11, "trailing commas not allowed in function call args");
    check_error("rate(x[5m] x)", 12, "unexpected identifier \"x\" in argument list");

    /* A function name without parentheses is a metric name, as in Prometheus. */
    check_shape("rate", "rate");
    check_shape("rate{a=\"b\"} + abs", "(+ rate{a=\"b\"} abs)");
}

static void test_name_tables(void **state)
{
    (void)state;
    static const char *const fns[PQ_FN_COUNT_] = {
        "rate",           "irate",         "increase",      "delta",         "idelta",
        "min_over_time",  "max_over_time", "avg_over_time", "sum_over_time", "count_over_time",
        "last_over_time", "abs",           "clamp_min",     "clamp_max",     "round"};
    for (int i = 0; i < PQ_FN_COUNT_; i++)
        assert_string_equal(pq_function_name((pq_function)i), fns[i]);
    static const char *const aggs[] = {"sum", "avg", "min", "max", "count", "topk", "bottomk"};
    for (int i = 0; i <= PQ_AGG_BOTTOMK; i++)
        assert_string_equal(pq_aggop_name((pq_aggop)i), aggs[i]);
    static const char *const ops[] = {
        "+", "-", "*", "/", "%", "^", "==", "!=", ">", "<", ">=", "<=", "and", "or", "unless"};
    for (int i = 0; i <= PQ_OP_UNLESS; i++)
        assert_string_equal(pq_binop_name((pq_binop)i), ops[i]);
    assert_string_equal(pq_function_name(PQ_FN_COUNT_), "unknown");
    assert_string_equal(pq_aggop_name((pq_aggop)99), "unknown");
    assert_string_equal(pq_binop_name((pq_binop)-1), "unknown");
}

/* ---- aggregations ----------------------------------------------------------------- */

static void test_aggregations(void **state)
{
    (void)state;
    check_shape("sum(x)", "(sum x)");
    check_shape("sum by (a) (x)", "(sum by(a) x)");
    check_shape("sum(x) by (a)", "(sum by(a) x)");
    check_shape("sum by (a, b,) (x)", "(sum by(a,b) x)");
    check_shape("sum without () (x)", "(sum without() x)");
    check_shape("sum(x) without (a)", "(sum without(a) x)");
    check_shape("sum by () (x)", "(sum x)");
    check_shape("avg(x)", "(avg x)");
    check_shape("min(x)", "(min x)");
    check_shape("max(x)", "(max x)");
    check_shape("count(x)", "(count x)");
    check_shape("topk(3, x)", "(topk 3 x)");
    check_shape("bottomk(1 + 1, x) by (a)", "(bottomk by(a) (+ 1 1) x)");
    check_shape("topk by (a) (-3, x)", "(topk by(a) -3 x)");
    check_shape("SUM BY (a) (x)", "(sum by(a) x)");
    check_shape("Sum(x) Without (A)", "(sum without(A) x)");
    check_shape("sum(rate(x[5m])) by (job)", "(sum by(job) (rate (range x 5m)))");
    check_shape("sum(sum(x))", "(sum (sum x))");
    check_type("count(x) + 1", PQ_TYPE_VECTOR);

    check_error("sum()", 1, "no arguments for aggregate expression provided");
    check_error("sum(x, y)", 1,
                "wrong number of arguments for aggregate expression provided, expected 1, got 2");
    check_error("topk(x)", 1,
                "wrong number of arguments for aggregate expression provided, expected 2, got 1");
    check_error("topk(1, 2, x)", 1, "expected 2, got 3");
    check_error("topk(y, x)", 6,
                "expected type scalar in aggregation parameter, got instant vector");
    check_error("topk(\"a\", x)", 6, "expected type scalar in aggregation parameter, got string");
    check_error("sum(1)", 5, "expected type instant vector in aggregation expression, got scalar");
    check_error("sum(x[5m])", 5,
                "expected type instant vector in aggregation expression, got range");
    check_error("sum by (a) (x) by (b)", 16, "unexpected <by>");
    check_error("sum by (a)", 11, "unexpected end of input in aggregation, expected \"(\"");
    check_error("sum by (a) + 1", 12, "unexpected <op:+> in aggregation, expected \"(\"");
    check_error("sum by a (x)", 8, "unexpected identifier \"a\" in grouping opts, expected \"(\"");
    check_error("sum by (a b) (x)", 11, "in grouping opts, expected \",\" or \")\"");
    check_error("sum by (a:b) (x)", 9, "unexpected metric identifier \"a:b\" in grouping opts");
    check_error("sum by (\"a\") (x)", 9, "unexpected string");
    check_error("sum by (,) (x)", 9, "unexpected \",\" in grouping opts, expected label");
    check_error("sum(x,)", 6, "trailing commas not allowed");

    /* Outside the subset: named as such. */
    static const char *const unsupported[] = {"stddev",       "stdvar", "group",      "quantile",
                                              "count_values", "limitk", "limit_ratio"};
    char q[64], msg[96];
    for (size_t i = 0; i < sizeof(unsupported) / sizeof(unsupported[0]); i++) {
        snprintf(q, sizeof(q), "%s(x)", unsupported[i]);
        snprintf(msg, sizeof(msg), "aggregation \"%s\" is not supported", unsupported[i]);
        check_error(q, 1, msg);
        snprintf(q, sizeof(q), "%s by (a) (x)", unsupported[i]);
        check_error(q, 1, msg);
    }
    check_error("STDDEV(x)", 1, "aggregation \"stddev\" is not supported");

    /* Grouping lists hold labels of any name, keywords included. */
    check_shape("sum by (sum, by, without, on, ignoring, bool, offset, and, or, unless, "
                "group_left, inf, nan, start, end, atan2) (x)",
                "(sum by(sum,by,without,on,ignoring,bool,offset,and,or,unless,group_left,inf,"
                "nan,start,end,atan2) x)");
}

static void test_keywords_as_metric_names(void **state)
{
    (void)state;
    /* Prometheus' metric_identifier rule takes these words as metric names. */
    check_shape("sum", "sum");
    check_shape("sum{a=\"b\"}", "sum{a=\"b\"}");
    check_shape("stddev + count", "(+ stddev count)");
    check_shape("offset", "offset");
    check_shape("offset offset 5m", "offset offset 5m");
    check_shape("by", "by");
    check_shape("without", "without");
    check_shape("and and and", "(and and and)");
    check_shape("or or unless", "(or or unless)");
    check_shape("start + end", "(+ start end)");
    check_shape("sum(sum)", "(sum sum)");
    check_shape("topk(1, topk)", "(topk 1 topk)");
    check_shape("rate(sum[5m])", "(rate (range sum 5m))");
    check_shape("sum offset 1m", "sum offset 1m");
    check_shape("SUM", "SUM");
    check_shape("x:y:z", "x:y:z");
    check_shape(":x", ":x");
    check_shape("x_1:2{y=\"z\"}", "x_1:2{y=\"z\"}");
    /* …and these it does not. */
    check_error("on", 1, "unexpected <on>");
    check_error("ignoring", 1, "unexpected <ignoring>");
    check_error("bool", 1, "unexpected <bool>");
    check_error("group_left", 1, "unexpected <group_left>");
    check_error("x + group_right", 5, "group_left/group_right are not supported");
    check_error("atan2", 1, "unexpected <op:atan2>");
}

/* ---- selectors -------------------------------------------------------------------- */

static void test_matchers(void **state)
{
    (void)state;
    check_shape("x{a=\"1\", b!=\"2\", c=~\"3\", d!~\"4\"}",
                "x{a=\"1\",b!=\"2\",c=~\"3\",d!~\"4\"}");
    check_shape("x{a=\"1\",}", "x{a=\"1\"}");
    check_shape("x{}", "x");
    check_shape("x { a = \"1\" , b = '2' }", "x{a=\"1\",b=\"2\"}");
    check_shape("{__name__=\"x\"}", "x");
    check_shape("{__name__=~\"x.*\"}", "{__name__=~\"x.*\"}");
    check_shape("{a=\"b\"}", "{a=\"b\"}");
    check_shape("{a!=\"\"}", "{a!=\"\"}");
    check_shape("{a=~\".+\"}", "{a=~\".+\"}");
    check_shape("{a!~\"\"}", "{a!~\"\"}");
    check_shape("{a=~\"\", b=\"c\"}", "{a=~\"\",b=\"c\"}");
    check_shape("x{a=\"\"}", "x{a=\"\"}"); /* the name is the non-empty matcher */
    check_shape("x{a=~\".*\"}", "x{a=~\".*\"}");
    /* Keywords are plain label names inside braces. */
    check_shape("x{sum=\"1\", by=\"2\", offset=\"3\", on=\"4\", bool=\"5\", and=\"6\", inf=\"7\"}",
                "x{sum=\"1\",by=\"2\",offset=\"3\",on=\"4\",bool=\"5\",and=\"6\",inf=\"7\"}");
    check_shape("x{a=\"b\" # comment\n}", "x{a=\"b\"}");

    check_error("{}", 1, "vector selector must contain at least one non-empty matcher");
    check_error("{a=\"\"}", 1, "vector selector must contain at least one non-empty matcher");
    check_error("{a=~\".*\"}", 1, "at least one non-empty matcher");
    check_error("{a=~\"x|\"}", 1, "at least one non-empty matcher");
    check_error("{a!~\".+\"}", 1, "at least one non-empty matcher");
    check_error("{a!=\"x\"}", 1, "at least one non-empty matcher");
    check_error("x{__name__=\"y\"}", 1, "metric name must not be set twice: \"x\" or \"y\"");
    check_error("x{__name__=~\"y\"}", 1, "metric name must not be set twice");
    check_error("x{a=~\"(\"}", 1, "invalid regular expression \"(\"");
    check_error("x{a=~\"a{2,1}\"}", 1, "invalid regular expression");
    check_error("x{a=~\"((a{50}){50}){50}\"}", 1, "too complex");
    check_error("x{a=~\"a{99999999999999999999}\"}", 1, "too complex");
    char deep[600];
    size_t o = (size_t)snprintf(deep, sizeof(deep), "x{a=~\"");
    for (int i = 0; i < 200; i++)
        deep[o++] = '(';
    for (int i = 0; i < 200; i++)
        deep[o++] = ')';
    snprintf(deep + o, sizeof(deep) - o, "\"}");
    check_error(deep, 1, "nests groups deeper than");
    /* Stacked repetition operators are errors in Go's regexp, and exponential in
     * glibc's (a*+*+*+*+ ran for minutes). */
    check_error("x{a=~\"a*+*+*+*+\"}", 1, "invalid nested repetition operator: \"*+\"");
    check_error("x{a=~\"a**\"}", 1, "invalid nested repetition operator: \"**\"");
    check_error("x{a=~\"(a)?+\"}", 1, "invalid nested repetition operator: \"?+\"");
    check_error("x{a=~\"a{2}{3}\"}", 1, "invalid nested repetition operator: \"{2}{3}\"");
    check_error("x{a=~\"b|a*{2}\"}", 1, "invalid nested repetition operator: \"*{2}\"");
    check_error("x{a=~\"a*??\"}", 1, "invalid nested repetition operator: \"*??\"");
    check_shape("x{a=~\"((a*)*b+)?[*+]+\\\\*\"}", "x{a=~\"((a*)*b+)?[*+]+\\\\*\"}");
    /* Near-limit regexes are fine alone but not by the thousand. */
    sbuf many = {0};
    for (int i = 0; i < 17; i++)
        sb_printf(&many, "%sx{a=~\"(a{250}){250}\"}", i ? " + " : "");
    check_error(many.s, 0, "too complex together");
    free(many.s);
    check_shape("x{a=~\"(a{250}){250}\"} + x{a=~\"(a{250}){250}\"}",
                "(+ x{a=~\"(a{250}){250}\"} x{a=~\"(a{250}){250}\"})");
    check_shape("x{a=~\"[0-9]{1,3}(\\\\.[0-9]{1,3}){3}\"}",
                "x{a=~\"[0-9]{1,3}(\\\\.[0-9]{1,3}){3}\"}");

    check_error("x{a=\"b\"", 8, "unexpected end of input inside braces");
    check_error("x{a}", 4, "unexpected \"}\" in label matching, expected label matching operator");
    check_error("x{a=}", 5, "unexpected \"}\" in label matching, expected string");
    check_error("x{a==\"b\"}", 5, "in label matching, expected string");
    check_error("x{a=b}", 5, "unexpected identifier \"b\" in label matching, expected string");
    check_error("x{a=\"b\" c=\"d\"}", 9, "expected \",\" or \"}\"");
    check_error("x{,}", 3, "unexpected \",\" in label matching, expected identifier or \"}\"");
    check_error("x{\"a\"=\"b\"}", 3, "unexpected string");
    check_error("x{1=\"a\"}", 3, "unexpected character inside braces: '1'");
    check_error("x{a:b=\"a\"}", 4, "unexpected character inside braces: ':'");
    check_error("x{a!\"b\"}", 4, "unexpected character after '!' inside braces: '\"'");
    check_error("x{{", 3, "unexpected left brace '{'");
    check_error("x}", 2, "unexpected character: '}'");

    char q[2048];
    o = (size_t)snprintf(q, sizeof(q), "x{");
    for (int i = 0; i < PQ_MAX_MATCHERS - 1; i++)
        o += (size_t)snprintf(q + o, sizeof(q) - o, "l%d=\"v\",", i);
    snprintf(q + o, sizeof(q) - o, "}");
    pq_expr *e = parse_ok(q);
    assert_int_equal(pq_expr_root(e)->selector.nmatchers, PQ_MAX_MATCHERS);
    pq_expr_free(e);
    snprintf(q + o, sizeof(q) - o, "extra=\"v\"}");
    check_error(q, o + 1, "too many label matchers (at most 32)");
    o = (size_t)snprintf(q, sizeof(q), "{");
    for (int i = 0; i < PQ_MAX_MATCHERS; i++)
        o += (size_t)snprintf(q + o, sizeof(q) - o, "l%d=\"v\",", i);
    snprintf(q + o, sizeof(q) - o, "}");
    e = parse_ok(q);
    assert_int_equal(pq_expr_root(e)->selector.nmatchers, PQ_MAX_MATCHERS);
    pq_expr_free(e);
}

static void test_range_selectors(void **state)
{
    (void)state;
    check_shape("x[5m]", "(range x 5m)");
    check_shape("x{a=\"b\"}[1h30m]", "(range x{a=\"b\"} 1h30m)");
    check_shape("x[ 5m ]", "(range x 5m)");
    check_shape("x[100ms]", "(range x 100ms)");
    check_shape("x[1y2w3d4h5m6s7ms]", "(range x 1y2w3d4h5m6s7ms)");
    check_type("x[5m]", PQ_TYPE_MATRIX);

    check_error("x[5m:1m]", 2, "subqueries are not supported");
    check_error("x[5m:]", 2, "subqueries are not supported");
    check_error("rate(x[5m])[5m:1m]", 12, "subqueries are not supported");
    check_error("(x)[5m]", 4, "ranges only allowed for vector selectors");
    check_error("(x[5m])[5m]", 8, "ranges only allowed for vector selectors");
    check_error("x[5m][5m]", 6, "ranges only allowed for vector selectors");
    check_error("1[5m]", 2, "ranges only allowed for vector selectors");
    check_error("sum(x)[5m]", 7, "ranges only allowed for vector selectors");
    check_error("x offset 1m [5m]", 13, "no offset modifiers allowed before range");
    check_error("x[5]", 3, "missing unit character in duration");
    check_error("x[5x]", 3, "bad duration syntax: \"5x\"");
    check_error("x[0s]", 3, "duration must be greater than 0");
    check_error("x[1m1h]", 3, "not a valid duration string: \"1m1h\"");
    check_error("x[1.5h]", 3, "not a valid duration string: \"1.5h\"");
    check_error("x[]", 3, "unexpected character in range selector: ']', expected a duration");
    check_error("x[5m", 5, "unclosed left bracket");
    check_error("x[", 3, "unclosed left bracket");
    check_error("x[5m 1m]", 6, "expected \"]\"");
    check_error("x]", 2, "unexpected right bracket ']'");
    check_error("x[300y]", 3, "duration out of range");
}

static void test_offset(void **state)
{
    (void)state;
    check_shape("x offset 5m", "x offset 5m");
    check_shape("x offset -5m", "x offset -5m");
    check_shape("x offset - 1h30m", "x offset -1h30m");
    check_shape("x[5m] offset 1h", "(range x offset 1h 5m)");
    check_shape("x[5m] offset -1h", "(range x offset -1h 5m)");
    check_shape("rate(x[5m] offset 1w)", "(rate (range x offset 1w 5m))");
    check_shape("x OFFSET 1d", "x offset 1d");
    check_shape("a + b offset 1m", "(+ a b offset 1m)");
    check_shape("a offset 1m ^ 2", "(^ a offset 1m 2)");
    check_shape("x{a=\"b\"} offset 10s", "x{a=\"b\"} offset 10s");

    check_error("x offset 1m offset 2m", 13, "offset may not be set multiple times");
    check_error("x[5m] offset 1m offset 2m", 17, "offset may not be set multiple times");
    check_error("sum(x) offset 5m", 8, "offset modifier must be preceded by an instant vector");
    check_error("rate(x[5m]) offset 5m", 13, "offset modifier must be preceded by");
    check_error("(x) offset 5m", 5, "offset modifier must be preceded by");
    check_error("(x[5m]) offset 5m", 9, "offset modifier must be preceded by");
    check_error("1 offset 5m", 3, "offset modifier must be preceded by");
    check_error("x offset 5", 10, "unexpected number \"5\" in offset, expected duration");
    check_error("x offset", 9, "unexpected end of input in offset, expected duration");
    check_error("x offset 0s", 10, "duration must be greater than 0");
    check_error("x offset -0m", 11, "duration must be greater than 0");
    check_error("x offset 1h1h", 10, "not a valid duration string");
    check_error("x offset --5m", 11, "unexpected <op:->");
    check_error("x @ 100", 3, "@ modifier is not supported");
    check_error("x @ start()", 3, "@ modifier is not supported");
}

/* ---- operators -------------------------------------------------------------------- */

static void test_binary_types(void **state)
{
    (void)state;
    check_type("1 + 2", PQ_TYPE_SCALAR);
    check_type("1 + x", PQ_TYPE_VECTOR);
    check_type("x + 1", PQ_TYPE_VECTOR);
    check_type("x + y", PQ_TYPE_VECTOR);
    check_type("(1 + 2) * 3", PQ_TYPE_SCALAR);
    check_type("1 == bool 2", PQ_TYPE_SCALAR);
    check_type("x == 2", PQ_TYPE_VECTOR);
    check_type("x and y", PQ_TYPE_VECTOR);
    check_type("\"s\"", PQ_TYPE_STRING);
    static const char *const comparisons[] = {"==", "!=", ">", "<", ">=", "<="};
    char q[64];
    for (size_t i = 0; i < 6; i++) {
        snprintf(q, sizeof(q), "1 %s 2", comparisons[i]);
        check_error(q, 3, "comparisons between scalars must use BOOL modifier");
        snprintf(q, sizeof(q), "1 %s bool 2", comparisons[i]);
        check_type(q, PQ_TYPE_SCALAR);
        snprintf(q, sizeof(q), "x %s 2", comparisons[i]);
        check_type(q, PQ_TYPE_VECTOR);
        snprintf(q, sizeof(q), "x %s bool y", comparisons[i]);
        check_type(q, PQ_TYPE_VECTOR);
    }
    static const char *const set_ops[] = {"and", "or", "unless"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(q, sizeof(q), "x %s 1", set_ops[i]);
        check_error(q, 1, "not allowed in binary scalar expression");
        snprintf(q, sizeof(q), "1 %s x", set_ops[i]);
        check_error(q, 1, "not allowed in binary scalar expression");
        snprintf(q, sizeof(q), "1 %s 1", set_ops[i]);
        check_error(q, 1, "not allowed in binary scalar expression");
    }
    check_error("x and 1", 1, "set operator \"and\" not allowed in binary scalar expression");
    check_error("x + \"a\"", 5,
                "binary expression must contain only scalar and instant vector types");
    check_error("x[5m] + 1", 1, "binary expression must contain only scalar and instant vector");
    check_error("1 + x[5m]", 5, "binary expression must contain only scalar and instant vector");
    check_error("x atan2 y", 3, "operator \"atan2\" is not supported");
    check_error("x + + ", 7, "unexpected end of input");
    check_error("x +", 4, "unexpected end of input");
    check_error("* x", 1, "unexpected <op:*>");
}

static void test_bool_modifier(void **state)
{
    (void)state;
    check_shape("x == bool 1", "(== bool x 1)");
    check_shape("x > bool y", "(> bool x y)");
    check_shape("1 < bool 2", "(< bool 1 2)");
    check_shape("x != BOOL 1", "(!= bool x 1)");
    check_error("x + bool 1", 3, "bool modifier can only be used on comparison operators");
    check_error("x and bool y", 3, "bool modifier can only be used on comparison operators");
    check_error("x == on(a) bool y", 12, "unexpected <bool>");
}

static void test_vector_matching(void **state)
{
    (void)state;
    check_shape("a + on(x, y) b", "(+ on(x,y) a b)");
    check_shape("a + ignoring(x) b", "(+ ignoring(x) a b)");
    check_shape("a + on() b", "(+ on() a b)");
    check_shape("a + ignoring() b", "(+ ignoring() a b)");
    check_shape("a == bool on(x) b", "(== bool on(x) a b)");
    check_shape("a and on(x) b", "(and on(x) a b)");
    check_shape("a unless ignoring(x) b", "(unless ignoring(x) a b)");
    check_shape("a + ON(x,) b", "(+ on(x) a b)");
    check_shape("a + on(sum, by, on, bool) b", "(+ on(sum,by,on,bool) a b)");
    /* Prometheus drops an empty clause when a side is a scalar. */
    check_shape("1 + on() b", "(+ 1 b)");
    check_shape("a * ignoring() 2", "(* a 2)");
    check_error("1 + on(x) b", 1, "vector matching only allowed between instant vectors");
    check_error("a + ignoring(x) 1", 1, "vector matching only allowed between instant vectors");
    check_error("a + on(x) group_left b", 11, "group_left/group_right are not supported");
    check_error("a + on(x) group_right(y) b", 11, "group_left/group_right are not supported");
    check_error("a + ignoring(x) group_left() b", 17, "group_left/group_right are not supported");
    check_error("a + group_left b", 5, "group_left/group_right are not supported");
    check_error("a + on b", 8, "unexpected identifier \"b\" in grouping opts, expected \"(\"");
    check_error("a + on(x b", 10, "expected \",\" or \")\"");
}

/* ---- literals --------------------------------------------------------------------- */

static void test_numbers(void **state)
{
    (void)state;
    static const struct {
        const char *q;
        double v;
    } cases[] = {
        {"1", 1},
        {"0", 0},
        {"1.5", 1.5},
        {".5", 0.5},
        {"5.", 5},
        {"1e3", 1000},
        {"1E3", 1000},
        {"1e+3", 1000},
        {"2.5e-3", 0.0025},
        {"0x1f", 31},
        {"0X1F", 31},
        {"0xff", 255},
        {"017", 15},
        {"0755", 493},
        {"019", 19},
        {"08.5", 8.5},
        {"00", 0},
        {"123456789012345678901234567890", 1.2345678901234568e29},
        {"0x7fffffffffffffff", 9223372036854775807.0},
        {"1e308", 1e308},
        {"4.9e-324", 4.9e-324},
        {"1e-400", 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        pq_expr *e = parse_ok(cases[i].q);
        pq_node *n = pq_expr_root(e);
        assert_int_equal(n->kind, PQ_NUMBER);
        if (n->number != cases[i].v)
            fail_msg("number [%s]: expected %.17g, got %.17g", cases[i].q, cases[i].v, n->number);
        pq_expr_free(e);
    }
    static const char *const specials[] = {"Inf", "inf", "INF", "+Inf", "NaN", "nan", "NAN", "nAn"};
    for (size_t i = 0; i < sizeof(specials) / sizeof(specials[0]); i++) {
        pq_expr *e = parse_ok(specials[i]);
        double v = pq_expr_root(e)->number;
        assert_true(specials[i][1] == 'a' || specials[i][1] == 'A' ? isnan(v) : isinf(v) && v > 0);
        pq_expr_free(e);
    }
    check_shape("-Inf", "-Inf");
    check_shape("infinity", "infinity"); /* not a number word: a metric name */
    check_shape("nan_total", "nan_total");

    check_error("1e400", 1, "error parsing number \"1e400\": value out of range");
    check_error("0x", 1, "error parsing number \"0x\": invalid syntax");
    check_error("1e", 1, "error parsing number \"1e\": invalid syntax");
    check_error("0x1.8", 1, "error parsing number");
    check_error("0x10000000000000000", 1, "error parsing number");
    check_error("1_0", 1, "bad number or duration syntax: \"1_0\"");
    check_error("5x", 1, "bad number or duration syntax: \"5x\"");
    check_error("1 2", 3, "unexpected number \"2\"");
    check_error("1.2.3", 4, "unexpected number \".3\"");
    check_error("5m", 1, "unexpected duration \"5m\"");
    check_error(".", 1, "unexpected character: '.'");
}

static void test_strings(void **state)
{
    (void)state;
    static const struct {
        const char *q, *want;
    } cases[] = {
        {"\"abc\"", "abc"},
        {"'abc'", "abc"},
        {"`abc`", "abc"},
        {"\"\"", ""},
        {"\"a\\\"b\"", "a\"b"},
        {"'a\\'b'", "a'b"},
        {"\"a'b\"", "a'b"},
        {"'a\"b'", "a\"b"},
        {"\"\\a\\b\\f\\n\\r\\t\\v\\\\\"", "\a\b\f\n\r\t\v\\"},
        {"\"\\x41\\x7a\"", "Az"},
        {"\"\\101\\172\"", "Az"},
        {"\"\\u00e9\"", "\xc3\xa9"},
        {"\"\\U0001F600\"", "\xf0\x9f\x98\x80"},
        {"\"\\xff\"", "\xff"},
        {"\"h\xc3\xa9llo\"", "h\xc3\xa9llo"},
        {"`a\\nb`", "a\\nb"},
        {"`a\nb`", "a\nb"},
        {"`\"'`", "\"'"},
        {"\"#not a comment\"", "#not a comment"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        pq_expr *e = parse_ok(cases[i].q);
        pq_node *n = pq_expr_root(e);
        assert_int_equal(n->kind, PQ_STRING);
        if (strcmp(n->string, cases[i].want) != 0)
            fail_msg("string [%s]: got [%s]", cases[i].q, n->string);
        pq_expr_free(e);

        char q[128];
        snprintf(q, sizeof(q), "x{a=%s}", cases[i].q);
        if (cases[i].want[0] == '\0')
            continue;
        e = parse_ok(q);
        assert_string_equal(pq_expr_root(e)->selector.matchers[1].value, cases[i].want);
        pq_expr_free(e);
    }
    check_error("\"abc", 1, "unterminated quoted string");
    check_error("'abc", 1, "unterminated quoted string");
    check_error("\"a\nb\"", 1, "unterminated quoted string");
    check_error("`abc", 1, "unterminated raw string");
    check_error("\"\\q\"", 2, "unknown escape sequence U+0071 'q'");
    check_error("\"\\'\"", 2, "unknown escape sequence U+0027");
    check_error("'\\\"'", 2, "unknown escape sequence U+0022");
    check_error("\"\\", 2, "escape sequence not terminated");
    check_error("\"\\x4\"", 5, "illegal character '\"' in escape sequence");
    check_error("\"\\xg0\"", 4, "illegal character 'g' in escape sequence");
    check_error("\"\\18\"", 4, "illegal character '8' in escape sequence");
    check_error("\"\\400\"", 2, "escape sequence is an invalid Unicode code point");
    check_error("\"\\ud800\"", 2, "escape sequence is an invalid Unicode code point");
    check_error("\"\\U00110000\"", 2, "escape sequence is an invalid Unicode code point");
    check_error("\"\\x00\"", 2, "strings may not contain NUL characters");
    check_error("\"\\000\"", 2, "strings may not contain NUL characters");
    check_error("\"a\xff\"", 3, "invalid UTF-8 rune");
    check_error("\"\xc0\xaf\"", 2, "invalid UTF-8 rune");     /* overlong */
    check_error("\"\xed\xa0\x80\"", 2, "invalid UTF-8 rune"); /* surrogate */
    check_error("`\xff`", 2, "invalid UTF-8 rune");
    {
        pq_expr *e = NULL;
        char err[256];
        assert_int_equal(pq_parse("\"a\0b\"", 5, &e, err, sizeof(err)), -EINVAL);
        assert_non_null(strstr(err, "parse error at char 3: strings may not contain NUL"));
    }
}

static void test_durations(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        int64_t ns;
    } good[] = {
        {"5m", 300000000000LL},
        {"1h30m", 5400000000000LL},
        {"90s", 90000000000LL},
        {"100ms", 100000000LL},
        {"1s500ms", 1500000000LL},
        {"1y", 365LL * 86400 * 1000000000LL},
        {"2w", 14LL * 86400 * 1000000000LL},
        {"1d", 86400LL * 1000000000LL},
        {"1y1w1d1h1m1s1ms", (365LL + 7 + 1) * 86400 * 1000000000LL + 3661001000000LL},
        {"0s", 0},
        {"0", 0},
        {"007m", 420000000000LL},
        {"292y", 292LL * 365 * 86400 * 1000000000LL},
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        int64_t ns = -1;
        int rc = pq_parse_duration(good[i].text, strlen(good[i].text), &ns);
        if (rc != 0 || ns != good[i].ns)
            fail_msg("duration [%s]: expected %" PRId64 ", got rc %d, %" PRId64, good[i].text,
                     good[i].ns, rc, ns);
    }
    static const char *const bad[] = {"",
                                      "5",
                                      "m",
                                      "5x",
                                      "1m1h",
                                      "1h1h",
                                      "1.5h",
                                      "-5m",
                                      "5 m",
                                      "5M",
                                      "1ms1s",
                                      "5hs",
                                      "1m ",
                                      " 1m",
                                      "300y",
                                      "9223372036854775807ms",
                                      "99999999999999999999s",
                                      "1y1y",
                                      "s5",
                                      "5mm"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int64_t ns = 12345;
        int rc = pq_parse_duration(bad[i], strlen(bad[i]), &ns);
        if (rc != -EINVAL || ns != 12345)
            fail_msg("duration [%s]: expected -EINVAL and no output, got %d, %" PRId64, bad[i], rc,
                     ns);
    }
    /* len, not the NUL, bounds the text */
    int64_t ns = 0;
    assert_int_equal(pq_parse_duration("5m30s", 2, &ns), 0);
    assert_true(ns == 300000000000LL);
    assert_int_equal(pq_parse_duration(NULL, 0, &ns), -EINVAL);
    assert_int_equal(pq_parse_duration("5m", 2, NULL), -EINVAL);
}

/* ---- errors, limits, API ---------------------------------------------------------- */

static void test_error_positions(void **state)
{
    (void)state;
    static const struct {
        const char *q;
        size_t pos;
        const char *what;
    } cases[] = {
        {"", 1, "no expression found in input"},
        {"   # only a comment", 1, "no expression found in input"},
        {"x @", 3, "@ modifier is not supported"},
        {"@", 1, "@ modifier is not supported"},
        {"x $ y", 3, "unexpected character: '$'"},
        {"x \xc3\xa9", 3, "unexpected character: '\xc3\xa9'"},
        {"x \xff", 3, "unexpected character: '\\xff'"},
        {"x\n  + $", 7, "unexpected character: '$'"},
        {"(", 2, "unclosed left parenthesis"},
        {"((x)", 5, "unclosed left parenthesis"},
        {"sum(rate(x[5m])", 16, "unclosed left parenthesis"},
        {")", 1, "unexpected right parenthesis ')'"},
        {"x)", 2, "unexpected right parenthesis ')'"},
        {"()", 2, "unexpected \")\""},
        {"(x y)", 4, "unexpected identifier \"y\" in parenthesized expression, expected \")\""},
        {"x y", 3, "unexpected identifier \"y\""},
        {"x \"s\"", 3, "unexpected string \"\\\"s\\\"\""},
        {"x, y", 2, "unexpected \",\""},
        {"x = y", 3, "unexpected \"=\""},
        {"x =~ y", 3, "unexpected character after '=': '~'"},
        {"x ! y", 3, "unexpected character after '!': ' '"},
        {"x !~ y", 3, "unexpected character after '!': '~'"},
        {"x {", 4, "unexpected end of input inside braces"},
        {"x{a=\"b\"}{c=\"d\"}", 9, "unexpected \"{\""},
        {"sum(x) sum(y)", 8, "unexpected <aggr:sum>"},
        {"x and", 6, "unexpected end of input"},
        {"x or on(a)", 11, "unexpected end of input"},
        {"1 + (2", 7, "unclosed left parenthesis"},
        {"x[5m] offset", 13, "unexpected end of input in offset"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        check_error(cases[i].q, cases[i].pos, cases[i].what);
    /* A syntax error anywhere outranks an earlier type error. */
    check_error("rate(x) + )", 11, "unexpected right parenthesis");
    check_error("rate(x) + abs(1) +", 19, "unexpected end of input");
    /* Of two type errors, the first is reported. */
    check_error("rate(x) + abs(1)", 6, "call to function \"rate\"");
}

static void test_comments_and_blanks(void **state)
{
    (void)state;
    check_shape("# leading\nx # trailing", "x");
    check_shape("sum # c\n by # c\n (a # c\n) # c\n (x)", "(sum by(a) x)");
    check_shape("x[ # c\n 5m # c\n ]", "(range x 5m)");
    check_shape("\t\r\nx\t+\r\n1\n", "(+ x 1)");
    check_shape("rate ( x [5m] )", "(rate (range x 5m))");
    check_shape("x#c", "x");
}

static void test_nesting_limit(void **state)
{
    (void)state;
    char q[PQ_MAX_DEPTH * 6 + 64];
    /* k parentheses around a number: a tree k + 1 deep. */
    for (int k = PQ_MAX_DEPTH - 2; k <= PQ_MAX_DEPTH + 1; k++) {
        size_t o = 0;
        for (int i = 0; i < k; i++)
            q[o++] = '(';
        q[o++] = '1';
        for (int i = 0; i < k; i++)
            q[o++] = ')';
        q[o] = '\0';
        if (k + 1 <= PQ_MAX_DEPTH)
            pq_expr_free(parse_ok(q));
        else
            check_error(q, 0, "query too deeply nested");
    }
    /* A left-deep chain is as deep as it is long. */
    for (int n = PQ_MAX_DEPTH; n <= PQ_MAX_DEPTH + 1; n++) {
        size_t o = 0;
        for (int i = 0; i < n; i++)
            o += (size_t)snprintf(q + o, sizeof(q) - o, "%sx", i ? "+" : "");
        if (n <= PQ_MAX_DEPTH)
            pq_expr_free(parse_ok(q));
        else
            check_error(q, 0, "query too deeply nested");
    }
    /* Nested calls and unary minus count too. */
    size_t o = 0;
    for (int i = 0; i < PQ_MAX_DEPTH; i++)
        o += (size_t)snprintf(q + o, sizeof(q) - o, "-");
    snprintf(q + o, sizeof(q) - o, "x");
    check_error(q, 0, "query too deeply nested");
    o = 0;
    for (int i = 0; i < PQ_MAX_DEPTH; i++)
        o += (size_t)snprintf(q + o, sizeof(q) - o, "abs(");
    q[o++] = 'x';
    for (int i = 0; i < PQ_MAX_DEPTH; i++)
        q[o++] = ')';
    q[o] = '\0';
    check_error(q, 0, "query too deeply nested");

    /* Deep parentheses far past the limit fail cleanly, without deep recursion. */
    size_t big = 60000;
    char *deep = malloc(big + 1);
    assert_non_null(deep);
    memset(deep, '(', big);
    deep[big] = '\0';
    check_error(deep, 0, "query too deeply nested");
    free(deep);
}

static void test_query_size_limit(void **state)
{
    (void)state;
    char *q = malloc(PQ_MAX_QUERY_BYTES + 2);
    assert_non_null(q);
    memset(q, 'a', PQ_MAX_QUERY_BYTES);
    q[PQ_MAX_QUERY_BYTES] = '\0';
    pq_expr *e = parse_ok(q); /* one 64 KiB metric name */
    assert_int_equal(strlen(pq_expr_root(e)->selector.matchers[0].value), PQ_MAX_QUERY_BYTES);
    pq_expr_free(e);
    q[PQ_MAX_QUERY_BYTES] = 'a';
    q[PQ_MAX_QUERY_BYTES + 1] = '\0';
    char err[256];
    e = (pq_expr *)0x1;
    assert_int_equal(pq_parse(q, PQ_MAX_QUERY_BYTES + 1, &e, err, sizeof(err)), -EINVAL);
    assert_null(e);
    assert_non_null(strstr(err, "query too long: 65537 bytes, at most 65536"));

    /* The densest queries in nodes per byte stay within the arena budget. */
    static const char *const units[] = {"1+", "-x+", "x+", "(1)+", "x[1s]+", "\"\"+", "abs(x)+"};
    for (size_t u = 0; u < sizeof(units) / sizeof(units[0]); u++) {
        size_t ul = strlen(units[u]), o = 0;
        /* as many terms as fit, grouped in parentheses to stay under the depth limit */
        while (o + ul * 100 + 8 < PQ_MAX_QUERY_BYTES) {
            q[o++] = '(';
            for (int i = 0; i < 100; i++) {
                memcpy(q + o, units[u], ul);
                o += ul;
            }
            memcpy(q + o, "1)+", 3);
            o += 3;
        }
        q[o++] = '1';
        q[o] = '\0';
        pq_parse(q, o, &e, err, sizeof(err)); /* type errors are fine; no -ENOMEM */
        int rc = pq_parse(q, o, &e, err, sizeof(err));
        if (rc == -ENOMEM)
            fail_msg("dense query of \"%s\" ran out of its arena", units[u]);
        pq_expr_free(rc == 0 ? e : NULL);
    }
    free(q);
}

static void test_api_arguments(void **state)
{
    (void)state;
    pq_expr *e = NULL;
    char err[64];
    assert_int_equal(pq_parse("x", 1, NULL, err, sizeof(err)), -EINVAL);
    assert_int_equal(pq_parse(NULL, 1, &e, err, sizeof(err)), -EINVAL);
    assert_int_equal(pq_parse(NULL, 0, &e, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "no expression found"));
    /* no room for a message is fine */
    assert_int_equal(pq_parse("x +", 3, &e, NULL, 0), -EINVAL);
    assert_int_equal(pq_parse("x +", 3, &e, err, 0), -EINVAL);
    /* a short buffer gets a truncated, terminated message */
    char small[16];
    assert_int_equal(pq_parse("x + )", 5, &e, small, sizeof(small)), -EINVAL);
    assert_int_equal(strlen(small), sizeof(small) - 1);
    assert_memory_equal(small, "parse error at ", 15);
    /* len, not the NUL, ends the query */
    assert_int_equal(pq_parse("x + garbage", 1, &e, err, sizeof(err)), 0);
    assert_int_equal(pq_expr_root(e)->kind, PQ_VECTOR_SELECTOR);
    pq_expr_free(e);
    assert_int_equal(pq_parse("0171", 3, &e, err, sizeof(err)), 0); /* octal 017 */
    assert_true(pq_expr_root(e)->number == 15);
    pq_expr_free(e);
    /* a NUL inside the query is a character like any other */
    assert_int_equal(pq_parse("x\0", 2, &e, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "char 2: unexpected character: '\\x00'"));
    pq_expr_free(NULL);
    assert_null(pq_expr_root(NULL));
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

static void test_error_messages_are_safe_text(void **state)
{
    (void)state;
    static const char *const queries[] = {
        "x\xff",
        "\"\xff",
        "foo\xc3(x)",
        "x{a=~\"\xff\"}",
        "x{\xe2\x82}",
        "\x01",
        "x{a=~\"(\x01\"}",
        "unknown_\x7f(x)",
        "sum by (\xff) (x)",
        "x{a=~\"(?\x1am)\"}",
        "x{a=~\"(?\xc3\xa9)\"}",
    };
    for (size_t i = 0; i < sizeof(queries) / sizeof(queries[0]); i++) {
        pq_expr *e = NULL;
        char err[512];
        assert_int_equal(pq_parse(queries[i], strlen(queries[i]), &e, err, sizeof(err)), -EINVAL);
        assert_true(err[0] != '\0');
        if (!utf8_valid(err))
            fail_msg("message for query %zu is not UTF-8: %s", i, err);
        for (const char *c = err; *c; c++)
            if ((unsigned char)*c < 0x20)
                fail_msg("control character in message for query %zu: %s", i, err);
    }
    /* Long pieces of the query are cut short. */
    char q[600];
    memset(q, 'a', 500);
    memcpy(q + 500, "(x)", 4);
    pq_expr *e = NULL;
    char err[256];
    assert_int_equal(pq_parse(q, strlen(q), &e, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "unknown function with name \"aaaaaaaaaa"));
    assert_non_null(strstr(err, "...\""));
}

/* ---- property tests --------------------------------------------------------------- */

static uint64_t prop_seed;
static uint64_t prng_state;

static uint32_t prng_below(uint32_t n)
{
    return (uint32_t)(prng_step(&prng_state) % n);
}

static void prop_seed_init(void)
{
    const char *env = getenv("STELE_TEST_SEED");
    prop_seed = env ? strtoull(env, NULL, 0) : (uint64_t)time(NULL) ^ ((uint64_t)clock() << 32);
    prng_state = prop_seed;
}

#define prop_fail(fmt, ...)                                                                        \
    fail_msg("property failed (replay with STELE_TEST_SEED=%" PRIu64 "): " fmt, prop_seed,         \
             ##__VA_ARGS__)

/* Generated trees live in a pool that is reset for every case. */
#define GEN_POOL_NODES 4096
static pq_node gen_pool[GEN_POOL_NODES];
static size_t gen_used;

static pq_node *gen_node(pq_node_kind kind, pq_type type)
{
    assert_true(gen_used < GEN_POOL_NODES);
    pq_node *n = &gen_pool[gen_used++];
    memset(n, 0, sizeof(*n));
    n->kind = kind;
    n->type = type;
    return n;
}

static const char *gen_pick(const char *const *list, size_t n)
{
    return list[prng_below((uint32_t)n)];
}
#define PICK(list) gen_pick(list, sizeof(list) / sizeof(list[0]))

static const char *const metric_names[] = {"up",
                                           "http_requests_total",
                                           "node:cpu:rate5m",
                                           ":x",
                                           "a_1",
                                           "sum",
                                           "avg",
                                           "count",
                                           "offset",
                                           "by",
                                           "without",
                                           "and",
                                           "or",
                                           "unless",
                                           "stddev",
                                           "topk",
                                           "start",
                                           "end",
                                           "rate",
                                           "abs",
                                           "Rate",
                                           "SUM",
                                           "on",
                                           "bool",
                                           "inf",
                                           "NaN",
                                           "group_left",
                                           "atan2"};
static const char *const label_names[] = {"job", "instance",   "a",      "_b",   "sum",
                                          "by",  "on",         "offset", "bool", "inf",
                                          "le",  "group_left", "x9"};
static const char *const label_values[] = {
    "",  "a", "api", "x\"y", "back\\slash", "tab\t", "new\nline", "h\xc3\xa9", "\xe2\x82\xac",
    "#", "'", "{}",  "0"};
static const char *const regexes[] = {".+", "a.*", "(api|web)", "[0-9]+",       "x|y",
                                      "",   ".*",  "a{2,3}",    "[[:alpha:]]+", "\\."};

static int64_t gen_duration(void)
{
    static const int64_t choices[] = {1000000LL,        1000000000LL,      60000000000LL,
                                      300000000000LL,   3600000000000LL,   5400000000000LL,
                                      86400000000000LL, 604800000000000LL, 31536000000000000LL,
                                      90061001000000LL};
    return choices[prng_below(sizeof(choices) / sizeof(choices[0]))];
}

static pq_node *gen_selector(void)
{
    pq_node *n = gen_node(PQ_VECTOR_SELECTOR, PQ_TYPE_VECTOR);
    bool named = prng_below(4) != 0;
    if (named)
        n->selector.matchers[n->selector.nmatchers++] = (stele_matcher){
            .name = "__name__", .value = PICK(metric_names), .type = STELE_MATCH_EQUAL};
    size_t extra = prng_below(4) + (named ? 0 : 1);
    for (size_t i = 0; i < extra; i++) {
        stele_matcher m = {.name = PICK(label_names), .type = (stele_match_type)prng_below(4)};
        m.value = m.type >= STELE_MATCH_REGEX ? PICK(regexes) : PICK(label_values);
        if (!named && i == 0) { /* one matcher that does not match "" */
            m.type = STELE_MATCH_EQUAL;
            m.value = "v";
        }
        n->selector.matchers[n->selector.nmatchers++] = m;
    }
    if (prng_below(4) == 0)
        n->selector.offset_ns = gen_duration() * (prng_below(2) ? 1 : -1);
    return n;
}

static pq_node *gen_matrix(void)
{
    pq_node *n = gen_node(PQ_MATRIX_SELECTOR, PQ_TYPE_MATRIX);
    n->matrix.selector = gen_selector();
    n->matrix.range_ns = gen_duration();
    return n;
}

static pq_node *gen_expr(pq_type type, int depth);

static pq_node *gen_number(void)
{
    pq_node *n = gen_node(PQ_NUMBER, PQ_TYPE_SCALAR);
    static const double values[] = {0, 1, -1, 2.5, -0.125, 1e300, 3e-300, 31, 1e21, 12345678.9};
    switch (prng_below(8)) {
    case 0:
        n->number = INFINITY;
        break;
    case 1:
        n->number = -INFINITY;
        break;
    case 2:
        n->number = NAN;
        break;
    case 3:
        n->number = (double)(int64_t)prng_step(&prng_state) / 1024.0;
        break;
    default:
        n->number = values[prng_below(sizeof(values) / sizeof(values[0]))];
    }
    return n;
}

static pq_node *gen_paren(pq_node *inner)
{
    pq_node *n = gen_node(PQ_PAREN, inner->type);
    n->unary.expr = inner;
    return n;
}

static int gen_precedence(pq_binop op)
{
    switch (op) {
    case PQ_OP_OR:
        return 1;
    case PQ_OP_AND:
    case PQ_OP_UNLESS:
        return 2;
    case PQ_OP_ADD:
    case PQ_OP_SUB:
        return 4;
    case PQ_OP_MUL:
    case PQ_OP_DIV:
    case PQ_OP_MOD:
        return 5;
    case PQ_OP_POW:
        return 6;
    default:
        return 3;
    }
}

static bool is_negative_number(const pq_node *n)
{
    return n->kind == PQ_NUMBER && signbit(n->number);
}

/* Wraps what the printed text would otherwise parse differently (see the file
 * comment of promql_parse.c for the precedence rules). */
static pq_node *gen_binary(pq_binop op, pq_node *lhs, pq_node *rhs)
{
    int prec = gen_precedence(op);
    if (lhs->kind == PQ_BINARY) {
        int lp = gen_precedence(lhs->binary.op);
        if (lp < prec || (lp == prec && op == PQ_OP_POW))
            lhs = gen_paren(lhs);
    }
    if (op == PQ_OP_POW && (lhs->kind == PQ_UNARY_MINUS || is_negative_number(lhs)))
        lhs = gen_paren(lhs); /* -a ^ b is -(a ^ b) */
    if (rhs->kind == PQ_BINARY) {
        int rp = gen_precedence(rhs->binary.op);
        if (rp < prec || (rp == prec && op != PQ_OP_POW))
            rhs = gen_paren(rhs);
    }
    pq_node *n = gen_node(PQ_BINARY, lhs->type == PQ_TYPE_SCALAR && rhs->type == PQ_TYPE_SCALAR
                                         ? PQ_TYPE_SCALAR
                                         : PQ_TYPE_VECTOR);
    n->binary.op = op;
    n->binary.lhs = lhs;
    n->binary.rhs = rhs;
    bool comparison = op >= PQ_OP_EQ && op <= PQ_OP_LE;
    if (comparison)
        n->binary.return_bool = n->type == PQ_TYPE_SCALAR || prng_below(2); /* scalars need bool */
    if (lhs->type == PQ_TYPE_VECTOR && rhs->type == PQ_TYPE_VECTOR && prng_below(3) == 0) {
        n->binary.matching = true;
        n->binary.on = prng_below(2);
        n->binary.nlabels = prng_below(4);
        for (size_t i = 0; i < n->binary.nlabels; i++)
            n->binary.labels[i] = PICK(label_names);
    }
    return n;
}

static pq_node *gen_unary(pq_node *operand)
{
    if (operand->kind == PQ_NUMBER || /* `-5` would fold */
        (operand->kind == PQ_BINARY && operand->binary.op != PQ_OP_POW))
        operand = gen_paren(operand);
    pq_node *n = gen_node(PQ_UNARY_MINUS, operand->type);
    n->unary.expr = operand;
    return n;
}

static pq_node *gen_call(int depth)
{
    pq_node *n = gen_node(PQ_CALL, PQ_TYPE_VECTOR);
    n->call.fn = (pq_function)prng_below(PQ_FN_COUNT_);
    if (n->call.fn <= PQ_FN_LAST_OVER_TIME) {
        n->call.args[n->call.nargs++] = gen_matrix();
        return n;
    }
    n->call.args[n->call.nargs++] = gen_expr(PQ_TYPE_VECTOR, depth - 1);
    if (n->call.fn == PQ_FN_CLAMP_MIN || n->call.fn == PQ_FN_CLAMP_MAX ||
        (n->call.fn == PQ_FN_ROUND && prng_below(2)))
        n->call.args[n->call.nargs++] = gen_expr(PQ_TYPE_SCALAR, depth - 1);
    return n;
}

static pq_node *gen_aggregate(int depth)
{
    pq_node *n = gen_node(PQ_AGGREGATE, PQ_TYPE_VECTOR);
    n->aggregate.op = (pq_aggop)prng_below(PQ_AGG_BOTTOMK + 1);
    if (n->aggregate.op == PQ_AGG_TOPK || n->aggregate.op == PQ_AGG_BOTTOMK)
        n->aggregate.param = gen_expr(PQ_TYPE_SCALAR, depth - 1);
    n->aggregate.expr = gen_expr(PQ_TYPE_VECTOR, depth - 1);
    if (prng_below(2)) {
        n->aggregate.without = prng_below(2);
        n->aggregate.nlabels = prng_below(4);
        for (size_t i = 0; i < n->aggregate.nlabels; i++)
            n->aggregate.labels[i] = PICK(label_names);
    }
    return n;
}

static pq_node *gen_expr(pq_type type, int depth)
{
    static const pq_binop arithmetic[] = {PQ_OP_ADD, PQ_OP_SUB, PQ_OP_MUL, PQ_OP_DIV,
                                          PQ_OP_MOD, PQ_OP_POW, PQ_OP_EQ,  PQ_OP_NE,
                                          PQ_OP_GT,  PQ_OP_LT,  PQ_OP_GE,  PQ_OP_LE};
    uint32_t choice = depth <= 0 ? 0 : prng_below(8);
    if (type == PQ_TYPE_SCALAR) {
        switch (choice) {
        case 0:
        case 1:
        case 2:
            return gen_number();
        case 3:
            return gen_paren(gen_expr(PQ_TYPE_SCALAR, depth - 1));
        case 4:
            return gen_unary(gen_expr(PQ_TYPE_SCALAR, depth - 1));
        default:
            return gen_binary(arithmetic[prng_below(12)], gen_expr(PQ_TYPE_SCALAR, depth - 1),
                              gen_expr(PQ_TYPE_SCALAR, depth - 1));
        }
    }
    switch (choice) {
    case 0:
    case 1:
        return gen_selector();
    case 2:
        return gen_call(depth);
    case 3:
        return gen_aggregate(depth);
    case 4:
        return prng_below(2) ? gen_paren(gen_expr(PQ_TYPE_VECTOR, depth - 1))
                             : gen_unary(gen_expr(PQ_TYPE_VECTOR, depth - 1));
    case 5: {
        static const pq_binop set_ops[] = {PQ_OP_AND, PQ_OP_OR, PQ_OP_UNLESS};
        return gen_binary(set_ops[prng_below(3)], gen_expr(PQ_TYPE_VECTOR, depth - 1),
                          gen_expr(PQ_TYPE_VECTOR, depth - 1));
    }
    default: {
        /* at least one side a vector */
        uint32_t sides = prng_below(3);
        pq_node *lhs = gen_expr(sides == 1 ? PQ_TYPE_SCALAR : PQ_TYPE_VECTOR, depth - 1);
        pq_node *rhs = gen_expr(sides == 2 ? PQ_TYPE_SCALAR : PQ_TYPE_VECTOR, depth - 1);
        return gen_binary(arithmetic[prng_below(12)], lhs, rhs);
    }
    }
}

static pq_node *gen_query(void)
{
    switch (prng_below(10)) {
    case 0:
        return gen_matrix();
    case 1: {
        pq_node *n = gen_node(PQ_STRING, PQ_TYPE_STRING);
        n->string = PICK(label_values);
        return prng_below(2) ? n : gen_paren(n);
    }
    case 2:
    case 3:
        return gen_expr(PQ_TYPE_SCALAR, 5);
    default:
        return gen_expr(PQ_TYPE_VECTOR, 5);
    }
}

static void test_property_roundtrip(void **state)
{
    (void)state;
    prop_seed_init();
    uint64_t noise = prop_seed ^ 0x5eed;
    for (int iter = 0; iter < 20000; iter++) {
        gen_used = 0;
        pq_node *tree = gen_query();
        sbuf text = {0};
        print_noise = iter % 2 ? &noise : NULL;
        print_promql(&text, tree);
        print_noise = NULL;
        pq_expr *e = NULL;
        char err[512];
        int rc = pq_parse(text.s, text.len, &e, err, sizeof(err));
        if (rc != 0)
            prop_fail("case %d: generated query does not parse: %s\nquery: %s", iter, err, text.s);
        const char *why = "?";
        if (!same_tree(tree, pq_expr_root(e), &why)) {
            sbuf want = {0}, got = {0};
            sexpr(&want, tree);
            sexpr(&got, pq_expr_root(e));
            prop_fail("case %d: tree differs (%s)\nquery: %s\nwant:  %s\ngot:   %s", iter, why,
                      text.s, want.s, got.s);
        }
        pq_expr_free(e);
        free(text.s);
    }
}

/* Token soup: what parses must print to text that parses to the same tree. */
static void test_property_token_soup(void **state)
{
    (void)state;
    static const char *const tokens[] = {
        "x",      "up",      "sum",         "rate",      "abs",
        "round",  "topk",    "(",           ")",         "(",
        ")",      "[5m]",    "{a=\"b\"}",   "{}",        "1",
        "-",      "+",       "*",           "/",         "^",
        "==",     "bool",    ">",           "and",       "or",
        "unless", "on(a)",   "by",          "(a)",       ",",
        "offset", "1h",      "-",           "2.5",       "\"s\"",
        "Inf",    "without", "ignoring(b)", "clamp_min", "count",
        "%",      "<=",      "NaN",         "offset 5m", "x{a=~\".+\"}",
        "#c\n",   "[1m:]",   "@",           "idelta",    "y[1h]"};
    prop_seed_init();
    int parsed = 0;
    for (int iter = 0; iter < 200000; iter++) {
        sbuf text = {0};
        uint32_t n = 1 + prng_below(9);
        for (uint32_t i = 0; i < n; i++) {
            sb_puts(&text, PICK(tokens));
            sb_puts(&text, prng_below(3) ? " " : "");
        }
        pq_expr *e = NULL;
        char err[512];
        int rc = pq_parse(text.s, text.len, &e, err, sizeof(err));
        if (rc != 0 && rc != -EINVAL)
            prop_fail("query [%s]: rc %d", text.s, rc);
        if (rc != 0) {
            if (strncmp(err, "parse error at char ", 20) != 0)
                prop_fail("query [%s]: message without a position: %s", text.s, err);
            free(text.s);
            continue;
        }
        parsed++;
        sbuf again = {0};
        print_promql(&again, pq_expr_root(e));
        pq_expr *e2 = NULL;
        rc = pq_parse(again.s, again.len, &e2, err, sizeof(err));
        if (rc != 0)
            prop_fail("query [%s] printed as [%s] does not parse: %s", text.s, again.s, err);
        const char *why = "?";
        if (!same_tree(pq_expr_root(e), pq_expr_root(e2), &why))
            prop_fail("query [%s] printed as [%s] parses to another tree (%s)", text.s, again.s,
                      why);
        pq_expr_free(e);
        pq_expr_free(e2);
        free(text.s);
        free(again.s);
    }
    assert_true(parsed > 1000); /* the soup is not all errors */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_precedence),
        cmocka_unit_test(test_associativity),
        cmocka_unit_test(test_unary),
        cmocka_unit_test(test_node_kinds),
        cmocka_unit_test(test_positions),
        cmocka_unit_test(test_functions),
        cmocka_unit_test(test_name_tables),
        cmocka_unit_test(test_aggregations),
        cmocka_unit_test(test_keywords_as_metric_names),
        cmocka_unit_test(test_matchers),
        cmocka_unit_test(test_range_selectors),
        cmocka_unit_test(test_offset),
        cmocka_unit_test(test_binary_types),
        cmocka_unit_test(test_bool_modifier),
        cmocka_unit_test(test_vector_matching),
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_strings),
        cmocka_unit_test(test_durations),
        cmocka_unit_test(test_error_positions),
        cmocka_unit_test(test_comments_and_blanks),
        cmocka_unit_test(test_nesting_limit),
        cmocka_unit_test(test_query_size_limit),
        cmocka_unit_test(test_api_arguments),
        cmocka_unit_test(test_error_messages_are_safe_text),
        cmocka_unit_test(test_property_roundtrip),
        cmocka_unit_test(test_property_token_soup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
