/*
 * test_lineproto.c — unit and property tests of the line protocol parser.
 *
 * The unit tests walk the grammar rule by rule and every error the parser can give,
 * checking the line number and that the message names the problem. The property tests
 * use a seeded PRNG (seed printed on failure; set STELE_TEST_SEED to replay): one
 * renders random valid lines — random bytes in names, every escape, every field type,
 * comments, blank lines and CRLF between them — and checks each component comes back
 * exactly; the other checks that float parsing equals strtod bit for bit.
 *
 * Parsed lines are deep-copied by the callback (the views are only valid during it).
 */
#include <errno.h>
#include <inttypes.h>
#include <locale.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "stele/lineproto.h"

/* ---- capture of parsed lines ------------------------------------------------------- */

#define CAP_MAX_LINES 64
#define CAP_ARENA (4u << 20)

typedef struct {
    const char *ptr; /* copy in the arena, NUL-terminated for convenience */
    uint32_t len;
    bool in_input; /* the parser's view pointed into the input */
} cstr;

typedef struct {
    cstr key;
    stele_lp_field_type type;
    double f;
    int64_t i;
    uint64_t u;
    bool b;
    cstr s;
} cfield;

typedef struct {
    cstr meas;
    cstr tag_key[STELE_LP_MAX_TAGS_CEILING];
    cstr tag_value[STELE_LP_MAX_TAGS_CEILING];
    uint32_t ntags;
    cfield fields[STELE_LP_MAX_FIELDS_CEILING];
    uint32_t nfields;
    bool has_ts;
    int64_t ts;
    uint32_t line_no;
} cline;

typedef struct {
    const char *input;
    size_t input_len;
    cline lines[CAP_MAX_LINES];
    uint32_t n;
    char *arena;
    size_t used;
    uint32_t stop_at; /* return stop_rc when this many lines were seen (0: never) */
    int stop_rc;
} capture;

static capture *cap_new(void)
{
    capture *c = calloc(1, sizeof(*c));
    assert_non_null(c);
    c->arena = malloc(CAP_ARENA);
    assert_non_null(c->arena);
    return c;
}

static void cap_free(capture *c)
{
    if (!c)
        return;
    free(c->arena);
    free(c);
}

static cstr cap_copy(capture *c, stele_lp_str s)
{
    cstr out = {0};
    assert_true(c->used + s.len + 1 <= CAP_ARENA);
    char *d = c->arena + c->used;
    if (s.len)
        memcpy(d, s.ptr, s.len);
    d[s.len] = '\0';
    c->used += s.len + 1;
    out.ptr = d;
    out.len = s.len;
    out.in_input = s.ptr >= c->input && s.ptr + s.len <= c->input + c->input_len;
    return out;
}

static int cap_line_fn(void *ctx, const stele_lp_line *line)
{
    capture *c = ctx;
    assert_true(c->n < CAP_MAX_LINES);
    cline *l = &c->lines[c->n++];
    l->meas = cap_copy(c, line->measurement);
    l->ntags = line->ntags;
    for (uint32_t i = 0; i < line->ntags; i++) {
        l->tag_key[i] = cap_copy(c, line->tags[i].key);
        l->tag_value[i] = cap_copy(c, line->tags[i].value);
    }
    l->nfields = line->nfields;
    for (uint32_t i = 0; i < line->nfields; i++) {
        const stele_lp_field *f = &line->fields[i];
        cfield *cf = &l->fields[i];
        cf->key = cap_copy(c, f->key);
        cf->type = f->type;
        switch (f->type) {
        case STELE_LP_FLOAT:
            cf->f = f->v.f;
            break;
        case STELE_LP_INT:
            cf->i = f->v.i;
            break;
        case STELE_LP_UINT:
            cf->u = f->v.u;
            break;
        case STELE_LP_BOOL:
            cf->b = f->v.b;
            break;
        case STELE_LP_STRING:
            cf->s = cap_copy(c, f->v.s);
            break;
        }
    }
    l->has_ts = line->has_timestamp;
    l->ts = line->timestamp;
    l->line_no = line->line_no;
    if (c->stop_at && c->n == c->stop_at)
        return c->stop_rc;
    return 0;
}

/* ---- helpers ----------------------------------------------------------------------- */

static stele_lp_parser *parser_with(const stele_lp_limits *lim)
{
    stele_lp_parser *p = NULL;
    assert_int_equal(stele_lp_parser_create(lim, &p), 0);
    assert_non_null(p);
    return p;
}

static stele_lp_parser *parser_default(void)
{
    stele_lp_limits lim;
    stele_lp_limits_default(&lim);
    return parser_with(&lim);
}

static int parse_buf(stele_lp_parser *p, capture *c, const char *buf, size_t len,
                     stele_lp_error *err)
{
    c->input = buf;
    c->input_len = len;
    return stele_lp_parse(p, buf, len, cap_line_fn, c, err);
}

/* Parses text with default limits, expecting success; returns the capture. */
static capture *parse_ok(const char *text)
{
    stele_lp_parser *p = parser_default();
    capture *c = cap_new();
    stele_lp_error err;
    int rc = parse_buf(p, c, text, strlen(text), &err);
    if (rc != 0)
        fail_msg("parsing [%s]: expected success, got %d at line %u: %s", text, rc, err.line_no,
                 err.message);
    stele_lp_parser_destroy(p);
    return c;
}

/* Parses exactly one line of text and returns it in *c_out. */
static const cline *parse_one(const char *text, capture **c_out)
{
    capture *c = parse_ok(text);
    if (c->n != 1)
        fail_msg("parsing [%s]: expected 1 line, got %u", text, c->n);
    *c_out = c;
    return &c->lines[0];
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

/* Expects parsing buf[0..len) with lim to fail at line_no with a message containing
 * every one of the NULL-terminated substrings. */
static void expect_error_lim(const stele_lp_limits *lim, const char *buf, size_t len,
                             uint32_t line_no, ...)
{
    stele_lp_parser *p = parser_with(lim);
    capture *c = cap_new();
    stele_lp_error err;
    int rc = parse_buf(p, c, buf, len, &err);
    if (rc != -EINVAL)
        fail_msg("parsing [%.*s]: expected -EINVAL, got %d", (int)len, buf, rc);
    if (err.line_no != line_no)
        fail_msg("parsing [%.*s]: expected the error on line %u, got line %u: %s", (int)len, buf,
                 line_no, err.line_no, err.message);
    if (!utf8_valid(err.message) || strlen(err.message) == 0)
        fail_msg("parsing [%.*s]: empty or invalid UTF-8 error message", (int)len, buf);
    va_list ap;
    va_start(ap, line_no);
    for (const char *want; (want = va_arg(ap, const char *)) != NULL;)
        if (!strstr(err.message, want))
            fail_msg("parsing [%.*s]: expected the message to contain [%s], got [%s]", (int)len,
                     buf, want, err.message);
    va_end(ap);
    cap_free(c);
    stele_lp_parser_destroy(p);
}

#define expect_error(text, line_no, ...)                                                           \
    do {                                                                                           \
        stele_lp_limits lim_;                                                                      \
        stele_lp_limits_default(&lim_);                                                            \
        expect_error_lim(&lim_, (text), strlen(text), (line_no), __VA_ARGS__, (const char *)NULL); \
    } while (0)

static void assert_cstr(cstr got, const char *want, size_t want_len)
{
    if (got.len != want_len || memcmp(got.ptr, want, want_len) != 0)
        fail_msg("expected [%.*s] (%zu bytes), got [%.*s] (%u bytes)", (int)want_len, want,
                 want_len, (int)got.len, got.ptr, got.len);
}

#define assert_str(got, lit) assert_cstr((got), (lit), sizeof(lit) - 1)

static const cfield *field_named(const cline *l, const char *key)
{
    for (uint32_t i = 0; i < l->nfields; i++)
        if (l->fields[i].key.len == strlen(key) &&
            memcmp(l->fields[i].key.ptr, key, l->fields[i].key.len) == 0)
            return &l->fields[i];
    fail_msg("no field [%s]", key);
    return NULL;
}

static double float_of(const char *value)
{
    char text[512];
    capture *c;
    snprintf(text, sizeof(text), "m f=%s", value);
    const cline *l = parse_one(text, &c);
    assert_int_equal(l->fields[0].type, STELE_LP_FLOAT);
    double d = l->fields[0].f;
    cap_free(c);
    return d;
}

static bool same_bits(double a, double b)
{
    return memcmp(&a, &b, sizeof(a)) == 0;
}

/* ---- structure --------------------------------------------------------------------- */

static void test_full_line(void **state)
{
    (void)state;
    capture *c;
    const cline *l = parse_one("cpu,host=server01,region=us-west usage=0.64,count=3i,"
                               "ok=true,note=\"fine\",total=7u 1434055562000000000",
                               &c);
    assert_str(l->meas, "cpu");
    assert_int_equal(l->ntags, 2);
    assert_str(l->tag_key[0], "host");
    assert_str(l->tag_value[0], "server01");
    assert_str(l->tag_key[1], "region");
    assert_str(l->tag_value[1], "us-west");
    assert_int_equal(l->nfields, 5);
    assert_str(l->fields[0].key, "usage");
    assert_int_equal(l->fields[0].type, STELE_LP_FLOAT);
    assert_true(l->fields[0].f == 0.64);
    assert_str(l->fields[1].key, "count");
    assert_int_equal(l->fields[1].type, STELE_LP_INT);
    assert_int_equal(l->fields[1].i, 3);
    assert_int_equal(l->fields[2].type, STELE_LP_BOOL);
    assert_true(l->fields[2].b);
    assert_int_equal(l->fields[3].type, STELE_LP_STRING);
    assert_str(l->fields[3].s, "fine");
    assert_int_equal(l->fields[4].type, STELE_LP_UINT);
    assert_int_equal(l->fields[4].u, 7);
    assert_true(l->has_ts);
    assert_true(l->ts == INT64_C(1434055562000000000));
    assert_int_equal(l->line_no, 1);
    /* Nothing was escaped: every view pointed into the input. */
    assert_true(l->meas.in_input && l->tag_value[1].in_input && l->fields[3].s.in_input);
    cap_free(c);
}

static void test_no_tags_no_timestamp(void **state)
{
    (void)state;
    capture *c;
    const cline *l = parse_one("m v=1", &c);
    assert_str(l->meas, "m");
    assert_int_equal(l->ntags, 0);
    assert_int_equal(l->nfields, 1);
    assert_false(l->has_ts);
    cap_free(c);
}

static void test_whitespace(void **state)
{
    (void)state;
    capture *c;
    /* Leading and trailing blanks, runs of spaces and tabs between sections. */
    const cline *l = parse_one(" \t m,t=1  \t f=1,g=2 \t 42 \t ", &c);
    assert_str(l->meas, "m");
    assert_int_equal(l->nfields, 2);
    assert_true(l->has_ts && l->ts == 42);
    cap_free(c);
    l = parse_one("m f=1 ", &c);
    assert_false(l->has_ts);
    cap_free(c);
    /* A tab inside a name is an ordinary byte. */
    l = parse_one("m\tx,t\tk=v\tw f\tk=1", &c);
    assert_str(l->meas, "m\tx");
    assert_str(l->tag_key[0], "t\tk");
    assert_str(l->tag_value[0], "v\tw");
    assert_str(l->fields[0].key, "f\tk");
    cap_free(c);
    /* Before the first field key a tab is whitespace; after a ',' it is part of the key. */
    l = parse_one("m \tf=1,\tg=2", &c);
    assert_str(l->fields[0].key, "f");
    assert_str(l->fields[1].key, "\tg");
    cap_free(c);
}

static void test_comments_and_blank_lines(void **state)
{
    (void)state;
    capture *c = parse_ok("# a comment\n\n   \n\t# indented comment\ncpu f=1\n\n# x f=1\n"
                          "mem#x f=2\n");
    assert_int_equal(c->n, 2);
    assert_int_equal(c->lines[0].line_no, 5);
    assert_str(c->lines[1].meas, "mem#x");
    assert_int_equal(c->lines[1].line_no, 8);
    cap_free(c);
    c = parse_ok("");
    assert_int_equal(c->n, 0);
    cap_free(c);
    c = parse_ok("\n\n# only comments");
    assert_int_equal(c->n, 0);
    cap_free(c);
}

static void test_crlf(void **state)
{
    (void)state;
    capture *c = parse_ok("a f=1\r\nb,t=x g=2 10\r\n\r\nc s=\"x\" \r\nd h=1i\r");
    assert_int_equal(c->n, 4);
    assert_str(c->lines[1].tag_value[0], "x");
    assert_true(c->lines[1].ts == 10);
    assert_str(c->lines[2].fields[0].s, "x");
    assert_int_equal(c->lines[3].fields[0].i, 1);
    assert_int_equal(c->lines[3].line_no, 5);
    cap_free(c);
    /* Inside a string, CR LF is content. */
    c = parse_ok("m s=\"a\r\nb\"\r\nn f=1\r\n");
    assert_int_equal(c->n, 2);
    assert_str(c->lines[0].fields[0].s, "a\r\nb");
    assert_int_equal(c->lines[1].line_no, 3);
    cap_free(c);
    /* A CR anywhere else is not a line end. */
    expect_error("m f=1\r \n", 1, "invalid value \"1\\x0d\" for field \"f\"");
}

static void test_body_without_final_newline(void **state)
{
    (void)state;
    capture *c = parse_ok("a f=1\nb f=2");
    assert_int_equal(c->n, 2);
    assert_int_equal(c->lines[1].line_no, 2);
    cap_free(c);
}

/* ---- escapes ----------------------------------------------------------------------- */

static void test_measurement_escapes(void **state)
{
    (void)state;
    capture *c;
    const cline *l = parse_one("my\\ meas\\,ure=x,t=1 f=1", &c);
    assert_str(l->meas, "my meas,ure=x");
    assert_false(l->meas.in_input); /* unescaped into scratch */
    cap_free(c);
    /* '=' is not special in a measurement, so "\=" is two ordinary bytes. */
    l = parse_one("m\\=x f=1", &c);
    assert_str(l->meas, "m\\=x");
    assert_true(l->meas.in_input);
    cap_free(c);
    /* A backslash before an ordinary byte (or another backslash) is itself ordinary. */
    l = parse_one("a\\b\\\\,t=1 f=1", &c);
    assert_str(l->meas, "a\\b\\,t=1");
    cap_free(c);
    l = parse_one("\\ lead f=1", &c);
    assert_str(l->meas, " lead");
    cap_free(c);
    l = parse_one("\\#not-a-comment f=1", &c);
    assert_str(l->meas, "\\#not-a-comment");
    cap_free(c);
}

static void test_tag_escapes(void **state)
{
    (void)state;
    capture *c;
    const cline *l = parse_one("m,k\\ e\\,y\\=1=v\\ a\\,l\\=ue,plain=x\\y f=1", &c);
    assert_int_equal(l->ntags, 2);
    assert_str(l->tag_key[0], "k e,y=1");
    assert_str(l->tag_value[0], "v a,l=ue");
    assert_false(l->tag_key[0].in_input);
    assert_str(l->tag_key[1], "plain");
    assert_str(l->tag_value[1], "x\\y");
    assert_true(l->tag_value[1].in_input);
    cap_free(c);
    /* Quotes are ordinary in tags. */
    l = parse_one("m,t=\"q\" f=1", &c);
    assert_str(l->tag_value[0], "\"q\"");
    cap_free(c);
}

static void test_field_key_escapes(void **state)
{
    (void)state;
    capture *c;
    const cline *l = parse_one("m f\\ i\\,e\\=ld=1,g\\\\h=2", &c);
    assert_str(l->fields[0].key, "f i,e=ld");
    assert_str(l->fields[1].key, "g\\\\h");
    cap_free(c);
}

static void test_string_values(void **state)
{
    (void)state;
    capture *c;
    const cline *l = parse_one("m a=\"hello\",b=\"say \\\"hi\\\" \\\\ ok\",c=\"\",d=\"x,y z=w\","
                               "e=\"back\\slash\\n\",f=\"\\\\\" 5",
                               &c);
    assert_str(field_named(l, "a")->s, "hello");
    assert_str(field_named(l, "b")->s, "say \"hi\" \\ ok");
    assert_false(field_named(l, "b")->s.in_input);
    assert_str(field_named(l, "c")->s, "");
    assert_str(field_named(l, "d")->s, "x,y z=w");
    assert_str(field_named(l, "e")->s, "back\\slash\\n");
    assert_str(field_named(l, "f")->s, "\\");
    assert_true(l->ts == 5);
    cap_free(c);
}

static void test_string_spans_lines(void **state)
{
    (void)state;
    capture *c = parse_ok("m s=\"line1\nline2\n\",x=1 5\nm2 y=2\n");
    assert_int_equal(c->n, 2);
    assert_int_equal(c->lines[0].line_no, 1);
    assert_str(c->lines[0].fields[0].s, "line1\nline2\n");
    assert_true(c->lines[0].fields[1].f == 1.0);
    assert_true(c->lines[0].ts == 5);
    assert_int_equal(c->lines[1].line_no, 4);
    cap_free(c);
    /* A '#' at the start of a physical line inside a string is not a comment. */
    c = parse_ok("m s=\"a\n# not a comment\" 1\n");
    assert_int_equal(c->n, 1);
    assert_str(c->lines[0].fields[0].s, "a\n# not a comment");
    cap_free(c);
}

/* ---- field types ------------------------------------------------------------------- */

static void test_integers(void **state)
{
    (void)state;
    capture *c;
    const cline *l = parse_one("m a=1i,b=-1i,c=0i,d=9223372036854775807i,"
                               "e=-9223372036854775808i,f=007i,g=-0i,"
                               "h=00000000000000000000000000042i",
                               &c);
    for (uint32_t i = 0; i < l->nfields; i++)
        assert_int_equal(l->fields[i].type, STELE_LP_INT);
    assert_true(field_named(l, "a")->i == 1);
    assert_true(field_named(l, "b")->i == -1);
    assert_true(field_named(l, "c")->i == 0);
    assert_true(field_named(l, "d")->i == INT64_MAX);
    assert_true(field_named(l, "e")->i == INT64_MIN);
    assert_true(field_named(l, "f")->i == 7);
    assert_true(field_named(l, "g")->i == 0);
    assert_true(field_named(l, "h")->i == 42);
    cap_free(c);
}

static void test_integer_overflow(void **state)
{
    (void)state;
    expect_error("m f=9223372036854775808i", 1, "\"f\"", "out of range", "signed 64-bit");
    expect_error("m f=-9223372036854775809i", 1, "out of range");
    expect_error("m f=99999999999999999999i", 1, "out of range");
    expect_error("m f=123456789012345678901234567890i", 1, "out of range");
}

static void test_unsigned(void **state)
{
    (void)state;
    capture *c;
    const cline *l = parse_one("m a=0u,b=18446744073709551615u,c=9223372036854775808u,d=0018u", &c);
    for (uint32_t i = 0; i < l->nfields; i++)
        assert_int_equal(l->fields[i].type, STELE_LP_UINT);
    assert_true(l->fields[0].u == 0);
    assert_true(l->fields[1].u == UINT64_MAX);
    assert_true(l->fields[2].u == UINT64_C(9223372036854775808));
    assert_true(l->fields[3].u == 18);
    cap_free(c);
    expect_error("m f=18446744073709551616u", 1, "\"f\"", "out of range", "unsigned 64-bit");
    expect_error("m f=99999999999999999999u", 1, "out of range");
    expect_error("m f=-1u", 1, "\"f\"", "negative");
    expect_error("m f=-0u", 1, "negative");
}

static void test_booleans(void **state)
{
    (void)state;
    static const char *const yes[] = {"t", "T", "true", "True", "TRUE"};
    static const char *const no[] = {"f", "F", "false", "False", "FALSE"};
    char text[64];
    capture *c;
    for (size_t i = 0; i < 5; i++) {
        snprintf(text, sizeof(text), "m a=%s,b=%s 1", yes[i], no[i]);
        const cline *l = parse_one(text, &c);
        assert_int_equal(l->fields[0].type, STELE_LP_BOOL);
        assert_true(l->fields[0].b);
        assert_int_equal(l->fields[1].type, STELE_LP_BOOL);
        assert_false(l->fields[1].b);
        cap_free(c);
    }
    static const char *const bad[] = {"tru", "TRue", "truee", "fals", "fAlse", "t1", "yes", "F0"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(text, sizeof(text), "m flag=%s", bad[i]);
        expect_error(text, 1, "invalid value", "\"flag\"", bad[i]);
    }
}

static void test_floats(void **state)
{
    (void)state;
    static const char *const forms[] = {
        "1",
        "-1.5",
        "1e10",
        "1.5E-3",
        "1.",
        ".5",
        "-.5",
        "1e+10",
        "0.1",
        "52.31854",
        "1E0",
        "000123.4500",
        "1e-400",
        "4.9e-324",
        "1e22",
        "1e23",
        "12e30",
        "9007199254740993",
        "0.3",
        "1e-22",
        "123456789e-30",
        "2.2250738585072011e-308",
        "1.7976931348623157e308",
        "123456789012345678901234567890",
        "0.000000000000000000000000000000001",
    };
    for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
        double got = float_of(forms[i]);
        double want = strtod(forms[i], NULL);
        if (!same_bits(got, want))
            fail_msg("float [%s]: expected %.17g, got %.17g", forms[i], want, got);
    }
    assert_true(same_bits(float_of("-0"), -0.0));
    assert_true(same_bits(float_of("0"), 0.0));
    assert_true(same_bits(float_of("-0.0e5"), -0.0));
    assert_true(same_bits(float_of("-1e-400"), -0.0));
}

static void test_float_invalid(void **state)
{
    (void)state;
    static const char *const bad[] = {"1.5.3", "12a", "1e",   "1e+",   "-",    ".",    "-.",
                                      "--1",   "+1",  "0x10", "1_000", "1.5i", "1e5u", "1ee5",
                                      "e5",    "1.e", "1..2", "1i5",   "1\"",  "1-"};
    char text[64];
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(text, sizeof(text), "m temp=%s", bad[i]);
        expect_error(text, 1, "invalid value", "\"temp\"",
                     "expected a number (1.5, 2i, 3u), a boolean (true/false) or a quoted string");
    }
    expect_error("m f=1e400", 1, "\"f\"", "out of range");
    expect_error("m f=-1.8e308", 1, "out of range");
}

static void test_inf_nan_rejected(void **state)
{
    (void)state;
    static const char *const bad[] = {"inf",      "-inf", "+inf", "Inf",  "INF", "infinity",
                                      "Infinity", "nan",  "NaN",  "-nan", "NAN"};
    char text[64];
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(text, sizeof(text), "m f=%s", bad[i]);
        expect_error(text, 1, "no inf or nan");
    }
}

/* ---- tags and fields as sets ------------------------------------------------------- */

static void test_tags_sorted(void **state)
{
    (void)state;
    capture *c;
    const cline *l = parse_one("m,z=1,a=2,m=3,ab=4,B=5 f=1", &c);
    static const char *const want[] = {"B", "a", "ab", "m", "z"};
    assert_int_equal(l->ntags, 5);
    for (uint32_t i = 0; i < 5; i++)
        assert_cstr(l->tag_key[i], want[i], strlen(want[i]));
    assert_str(l->tag_value[0], "5");
    assert_str(l->tag_value[4], "1");
    cap_free(c);

    /* A long set in reverse order takes the merge sort. */
    char text[4096];
    size_t o = (size_t)snprintf(text, sizeof(text), "m");
    for (int i = 59; i >= 0; i--)
        o += (size_t)snprintf(text + o, sizeof(text) - o, ",k%02d=v%d", i, i);
    snprintf(text + o, sizeof(text) - o, " f=1");
    l = parse_one(text, &c);
    assert_int_equal(l->ntags, 60);
    for (uint32_t i = 0; i < 60; i++) {
        char k[8], v[8];
        snprintf(k, sizeof(k), "k%02u", i);
        snprintf(v, sizeof(v), "v%u", i);
        assert_cstr(l->tag_key[i], k, strlen(k));
        assert_cstr(l->tag_value[i], v, strlen(v));
    }
    cap_free(c);
}

static void test_duplicate_tag_key(void **state)
{
    (void)state;
    expect_error("m,host=a,host=b f=1", 1, "duplicate tag key", "\"host\"");
    expect_error("m,b=1,host=a,c=2,host=a f=1", 1, "duplicate tag key \"host\"");
    /* Escaped and plain spellings of the same key are the same key. */
    expect_error("m,a\\ b=1,a\\ b=2 f=1", 1, "duplicate tag key \"a b\"");

    char text[4096];
    size_t o = (size_t)snprintf(text, sizeof(text), "m");
    for (int i = 0; i < 40; i++)
        o += (size_t)snprintf(text + o, sizeof(text) - o, ",k%02d=v", 39 - i);
    snprintf(text + o, sizeof(text) - o, ",k17=again f=1");
    expect_error(text, 1, "duplicate tag key \"k17\"");
}

static void test_duplicate_field_last_wins(void **state)
{
    (void)state;
    capture *c;
    const cline *l = parse_one("m a=1,b=2,a=3i,c=4,b=\"x\"", &c);
    assert_int_equal(l->nfields, 3);
    assert_str(l->fields[0].key, "a");
    assert_int_equal(l->fields[0].type, STELE_LP_INT);
    assert_true(l->fields[0].i == 3);
    assert_str(l->fields[1].key, "c");
    assert_str(l->fields[2].key, "b");
    assert_str(l->fields[2].s, "x");
    cap_free(c);

    /* Long field sets dedup through the hash table. */
    char text[8192];
    size_t o = (size_t)snprintf(text, sizeof(text), "m ");
    for (int i = 0; i < 100; i++)
        o += (size_t)snprintf(text + o, sizeof(text) - o, "%sf%d=%di", i ? "," : "", i % 30, i);
    l = parse_one(text, &c);
    assert_int_equal(l->nfields, 30);
    for (uint32_t i = 0; i < 30; i++) {
        /* Survivors are the last occurrences (i = 70..99), in line order. */
        uint32_t want = 70 + i;
        char k[8];
        snprintf(k, sizeof(k), "f%u", want % 30);
        assert_cstr(l->fields[i].key, k, strlen(k));
        assert_true(l->fields[i].i == (int64_t)want);
    }
    cap_free(c);

    /* Many parses through one parser keep the hash table's generations apart. */
    stele_lp_parser *p = parser_default();
    c = cap_new();
    for (int round = 0; round < 3; round++) {
        c->n = 0;
        c->used = 0;
        assert_int_equal(parse_buf(p, c, text, strlen(text), NULL), 0);
        assert_int_equal(c->lines[0].nfields, 30);
    }
    cap_free(c);
    stele_lp_parser_destroy(p);
}

/* ---- syntax errors ----------------------------------------------------------------- */

static void test_missing_fields(void **state)
{
    (void)state;
    expect_error("cpu", 1, "missing fields", "\"cpu\"");
    expect_error("cpu ", 1, "missing fields");
    expect_error("cpu,host=a", 1, "missing fields");
    expect_error("cpu,host=a \t ", 1, "missing fields");
    expect_error("ok f=1\ncpu\r\n", 2, "missing fields");
}

static void test_missing_measurement(void **state)
{
    (void)state;
    expect_error(",t=1 f=1", 1, "missing measurement");
    expect_error("  ,t=1 f=1", 1, "missing measurement");
}

static void test_missing_field_value(void **state)
{
    (void)state;
    expect_error("m f=", 1, "missing value for field \"f\"");
    expect_error("m f=,g=1", 1, "missing value for field \"f\"");
    expect_error("m f= 1", 1, "missing value for field \"f\"");
    expect_error("m g=1,f=\t1", 1, "missing value for field \"f\"");
}

static void test_field_key_errors(void **state)
{
    (void)state;
    expect_error("m =1", 1, "empty field key");
    expect_error("m f=1,", 1, "empty field key", "trailing comma");
    expect_error("m f=1,=2", 1, "empty field key");
    expect_error("m f=1, g=2", 1, "empty field key");
    expect_error("m f", 1, "field \"f\" has no value");
    expect_error("m f 123", 1, "field \"f\" has no value");
    expect_error("m f=1,g", 1, "field \"g\" has no value");
    expect_error("m f,g=1", 1, "field \"f\" has no value");
}

static void test_tag_errors(void **state)
{
    (void)state;
    expect_error("m,t= f=1", 1, "empty value for tag \"t\"");
    expect_error("m,t=,u=1 f=1", 1, "empty value for tag \"t\"");
    expect_error("m,=v f=1", 1, "empty tag key");
    expect_error("m, f=1", 1, "empty tag key");
    expect_error("m,t=1, f=1", 1, "empty tag key");
    expect_error("m,t f=1", 1, "tag key \"t\" has no value");
    expect_error("m,t,u=1 f=1", 1, "tag key \"t\" has no value");
    expect_error("m,t", 1, "tag key \"t\" has no value");
    expect_error("m,t=a=b f=1", 1, "unescaped '='", "\"t\"");
}

static void test_string_errors(void **state)
{
    (void)state;
    expect_error("m s=\"abc", 1, "unterminated string", "\"s\"");
    expect_error("m s=\"abc\\\"", 1, "unterminated string");
    expect_error("ok f=1\nm s=\"abc\ndef\n", 2, "unterminated string");
    expect_error("m s=\"abc\"x", 1, "unexpected text after the string value of field \"s\"");
    expect_error("m s=\"abc\"\"", 1, "unexpected text after the string");
}

static void test_timestamps(void **state)
{
    (void)state;
    capture *c;
    const cline *l = parse_one("m f=1 -1", &c);
    assert_true(l->ts == -1);
    cap_free(c);
    l = parse_one("m f=1 -9223372036854775808", &c);
    assert_true(l->ts == INT64_MIN);
    cap_free(c);
    l = parse_one("m f=1 9223372036854775807", &c);
    assert_true(l->ts == INT64_MAX);
    cap_free(c);
    l = parse_one("m f=1 0", &c);
    assert_true(l->has_ts && l->ts == 0);
    cap_free(c);

    expect_error("m f=1 abc", 1, "invalid timestamp \"abc\"", "integer");
    expect_error("m f=1 1.5", 1, "invalid timestamp \"1.5\"");
    expect_error("m f=1 12a", 1, "invalid timestamp");
    expect_error("m f=1 +5", 1, "invalid timestamp");
    expect_error("m f=1 -", 1, "invalid timestamp");
    expect_error("m f=1 1e9", 1, "invalid timestamp");
    expect_error("m f=1 9223372036854775808", 1, "timestamp", "out of range");
    expect_error("m f=1 -9223372036854775809", 1, "out of range");
    expect_error("m f=1 123456789012345678901234", 1, "out of range");
    expect_error("m f=1 g=2", 1, "invalid timestamp", "separate fields with ','");
    expect_error("m f=1 123 456", 1, "unexpected text \"456\" after the timestamp");
    expect_error("m f=1 123 x", 1, "after the timestamp");
    expect_error("m f=1 123,", 1, "unexpected text \",\" after the timestamp");
}

static void test_error_line_numbers(void **state)
{
    (void)state;
    expect_error("a f=1\n# c\n\nb f=1\nc f=x", 5, "invalid value");
    /* After a string spanning lines, errors name the physical line. */
    expect_error("m s=\"a\nb\nc\",x=1.5.3", 3, "invalid value \"1.5.3\" for field \"x\"");
    expect_error("m s=\"a\nb\"\nbad", 3, "missing fields", "\"bad\"");
    expect_error("m s=\"a\nb\" 1 2", 2, "after the timestamp");
    expect_error("m s=\"a\nb\"x", 2, "unexpected text after the string value");
    expect_error("m s=\"a\nb\nc\r\nd\" x", 4, "invalid timestamp \"x\"");
    expect_error("m s=\"a\nb\",t=\"c\nd\",u=oops", 3, "\"u\"");
    expect_error("\r\n\r\nm f=1 1\r\nm f", 4, "has no value");
}

/* ---- limits ------------------------------------------------------------------------ */

static void test_create_limits(void **state)
{
    (void)state;
    stele_lp_limits lim;
    stele_lp_parser *p = NULL;
    stele_lp_limits_default(&lim);
    assert_int_equal(lim.max_line_len, 64 * 1024);
    assert_int_equal(lim.max_tags, 64);
    assert_int_equal(lim.max_fields, 256);
    assert_int_equal(lim.max_name_len, 256);
    assert_int_equal(lim.max_value_len, 4096);

    uint32_t *each[] = {&lim.max_line_len, &lim.max_tags, &lim.max_fields, &lim.max_name_len,
                        &lim.max_value_len};
    for (size_t i = 0; i < 5; i++) {
        uint32_t keep = *each[i];
        *each[i] = 0;
        assert_int_equal(stele_lp_parser_create(&lim, &p), -EINVAL);
        assert_null(p);
        *each[i] = keep;
    }
    lim.max_tags = STELE_LP_MAX_TAGS_CEILING + 1;
    assert_int_equal(stele_lp_parser_create(&lim, &p), -EINVAL);
    lim.max_tags = STELE_LP_MAX_TAGS_CEILING;
    lim.max_fields = STELE_LP_MAX_FIELDS_CEILING + 1;
    assert_int_equal(stele_lp_parser_create(&lim, &p), -EINVAL);
    lim.max_fields = STELE_LP_MAX_FIELDS_CEILING;
    assert_int_equal(stele_lp_parser_create(&lim, &p), 0);
    stele_lp_parser_destroy(p);
    stele_lp_parser_destroy(NULL);
}

static void test_limit_line_length(void **state)
{
    (void)state;
    stele_lp_limits lim;
    stele_lp_limits_default(&lim);
    lim.max_line_len = 16;
    stele_lp_parser *p = parser_with(&lim);
    capture *c = cap_new();
    const char *ok = "m f=123456789012\r\n  m f=1234567890\n"; /* 16 bytes each, CR LF aside */
    assert_int_equal(parse_buf(p, c, ok, strlen(ok), NULL), 0);
    assert_int_equal(c->n, 2);
    cap_free(c);
    stele_lp_parser_destroy(p);

    const char *over = "m f=1\nm f=1234567890123\n";
    expect_error_lim(&lim, over, strlen(over), 2, "line is 17 bytes long", "limit of 16",
                     (const char *)NULL);
    /* Comment lines are skipped whatever their length. */
    const char *comment = "# a comment longer than sixteen bytes\nm f=1";
    c = cap_new();
    p = parser_with(&lim);
    assert_int_equal(parse_buf(p, c, comment, strlen(comment), NULL), 0);
    cap_free(c);
    stele_lp_parser_destroy(p);
    /* A string that spans lines counts the whole line. */
    const char *span = "m s=\"a\nbcdefghijklmn\"\n";
    expect_error_lim(&lim, span, strlen(span), 1, "line is 21 bytes long", "\"s\"",
                     (const char *)NULL);
}

static void test_limit_counts(void **state)
{
    (void)state;
    stele_lp_limits lim;
    stele_lp_limits_default(&lim);
    lim.max_tags = 2;
    lim.max_fields = 3;
    stele_lp_parser *p = parser_with(&lim);
    capture *c = cap_new();
    const char *ok = "m,a=1,b=2 x=1,y=2,z=3";
    assert_int_equal(parse_buf(p, c, ok, strlen(ok), NULL), 0);
    assert_int_equal(c->lines[0].ntags, 2);
    assert_int_equal(c->lines[0].nfields, 3);
    cap_free(c);
    stele_lp_parser_destroy(p);

    const char *tags = "m,a=1,b=2,c=3 x=1";
    expect_error_lim(&lim, tags, strlen(tags), 1, "too many tags", "limit of 2",
                     (const char *)NULL);
    const char *fields = "m x=1,y=2,z=3,w=4";
    expect_error_lim(&lim, fields, strlen(fields), 1, "too many fields", "limit of 3",
                     (const char *)NULL);
    /* The limit counts fields as written, before duplicates are removed. */
    const char *dups = "m x=1,x=2,x=3,x=4";
    expect_error_lim(&lim, dups, strlen(dups), 1, "too many fields", (const char *)NULL);
}

static void test_limit_lengths(void **state)
{
    (void)state;
    stele_lp_limits lim;
    stele_lp_limits_default(&lim);
    lim.max_name_len = 4;
    lim.max_value_len = 5;
    stele_lp_parser *p = parser_with(&lim);
    capture *c = cap_new();
    /* At the limit; escaped names count their unescaped length. */
    const char *ok = "mmmm,k\\ \\ k=vvvvv f\\,\\,f=1,s=\"\\\"\\\"ab\\\\\"";
    assert_int_equal(parse_buf(p, c, ok, strlen(ok), NULL), 0);
    assert_str(c->lines[0].tag_key[0], "k  k");
    assert_str(c->lines[0].fields[1].s, "\"\"ab\\");
    cap_free(c);
    stele_lp_parser_destroy(p);

    static const struct {
        const char *text;
        const char *want1, *want2;
    } over[] = {
        {"mmmmm f=1", "measurement name \"mmmmm\" is 5 bytes", "limit of 4"},
        {"m,kkkkk=v f=1", "tag key \"kkkkk\" is 5 bytes", "limit of 4"},
        {"m,k=vvvvvv f=1", "value of tag \"k\" is 6 bytes", "limit of 5"},
        {"m fffff=1", "field key \"fffff\" is 5 bytes", "limit of 4"},
        {"m s=\"ssssss\"", "string value for field \"s\" is 6 bytes", "limit of 5"},
    };
    for (size_t i = 0; i < sizeof(over) / sizeof(over[0]); i++)
        expect_error_lim(&lim, over[i].text, strlen(over[i].text), 1, over[i].want1, over[i].want2,
                         (const char *)NULL);
}

/* ---- callback and API -------------------------------------------------------------- */

static void test_callback_stops_parse(void **state)
{
    (void)state;
    stele_lp_parser *p = parser_default();
    capture *c = cap_new();
    c->stop_at = 2;
    c->stop_rc = 42;
    const char *text = "a f=1\nb f=2\nc f=3\nd f=oops\n";
    stele_lp_error err;
    assert_int_equal(parse_buf(p, c, text, strlen(text), &err), 42);
    assert_int_equal(c->n, 2);
    /* The error slot is left for the callback's own use. */
    assert_int_equal(err.line_no, 0);
    c->n = 0;
    c->stop_rc = -ENOSPC;
    assert_int_equal(parse_buf(p, c, text, strlen(text), &err), -ENOSPC);
    cap_free(c);
    stele_lp_parser_destroy(p);
}

static void test_lines_before_error_are_delivered(void **state)
{
    (void)state;
    stele_lp_parser *p = parser_default();
    capture *c = cap_new();
    const char *text = "a f=1\nb f=2\nc f=x\nd f=3\n";
    stele_lp_error err;
    assert_int_equal(parse_buf(p, c, text, strlen(text), &err), -EINVAL);
    assert_int_equal(c->n, 2);
    assert_int_equal(err.line_no, 3);
    /* The parser is reusable after an error. */
    c->n = 0;
    assert_int_equal(parse_buf(p, c, "z f=1", 5, &err), 0);
    assert_int_equal(c->n, 1);
    assert_int_equal(err.line_no, 0);
    assert_string_equal(err.message, "");
    cap_free(c);
    stele_lp_parser_destroy(p);
}

static void test_api_arguments(void **state)
{
    (void)state;
    stele_lp_parser *p = parser_default();
    capture *c = cap_new();
    stele_lp_error err;
    assert_int_equal(stele_lp_parse(p, NULL, 0, cap_line_fn, c, &err), 0);
    assert_int_equal(stele_lp_parse(p, NULL, 3, cap_line_fn, c, &err), -EINVAL);
    assert_int_equal(stele_lp_parse(p, "m f=1", 5, NULL, c, &err), -EINVAL);
    assert_int_equal(stele_lp_parse(NULL, "m f=1", 5, cap_line_fn, c, &err), -EINVAL);
    assert_int_equal(stele_lp_parse(p, "m f", 3, cap_line_fn, c, NULL), -EINVAL);
    /* Input need not be NUL-terminated: only len bytes are read. */
    assert_int_equal(parse_buf(p, c, "m f=12XYZ", 6, &err), 0);
    assert_true(c->lines[0].fields[0].f == 12.0);
    cap_free(c);
    stele_lp_parser_destroy(p);
}

static void test_error_message_is_safe_text(void **state)
{
    (void)state;
    /* Control bytes and broken UTF-8 are shown escaped; good UTF-8 is kept. */
    expect_error("m t\x01\xff\xc3\xa9=oops", 1, "\"t\\x01\\xff\xc3\xa9\"");
    /* Long names are cut short. */
    char text[600];
    memset(text, 'k', sizeof(text));
    memcpy(text, "m ", 2);
    memcpy(text + sizeof(text) - 6, "=oops", 6);
    expect_error(text, 1, "...\"");
    /* A cut never splits a UTF-8 sequence. */
    size_t o = (size_t)snprintf(text, sizeof(text), "m ");
    for (int i = 0; i < 80; i++)
        o += (size_t)snprintf(text + o, sizeof(text) - o, "\xe2\x82\xac");
    snprintf(text + o, sizeof(text) - o, "=1.5.3");
    expect_error(text, 1, "invalid value");
}

static void test_locale_independent(void **state)
{
    (void)state;
    static const char *const decimal_comma[] = {"de_DE.UTF-8", "de_DE.utf8", "fr_FR.UTF-8",
                                                "ru_RU.UTF-8"};
    const char *set = NULL;
    for (size_t i = 0; i < 4 && !set; i++)
        set = setlocale(LC_NUMERIC, decimal_comma[i]);
    if (!set)
        skip(); /* no decimal-comma locale installed */
    /* 25 digits: beyond the fast path, so strtod_l decides. */
    double d = float_of("1.234567890123456789012345");
    setlocale(LC_NUMERIC, "C");
    assert_true(same_bits(d, strtod("1.234567890123456789012345", NULL)));
}

/* ---- property tests ---------------------------------------------------------------- */

static uint64_t prop_seed;
static uint64_t prng_state;

static uint64_t prng_next(void)
{
    uint64_t z = (prng_state += 0x9E3779B97F4A7C15u); /* splitmix64 */
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
    return z ^ (z >> 31);
}

static uint32_t prng_below(uint32_t n)
{
    return (uint32_t)(prng_next() % n);
}

static void prop_seed_init(void)
{
    const char *env = getenv("STELE_TEST_SEED");
    prop_seed = env ? strtoull(env, NULL, 0) : (uint64_t)time(NULL) ^ ((uint64_t)clock() << 32);
    prng_state = prop_seed;
}

/* The body under test, shown (escaped) when a property fails. */
static const char *prop_body;
static size_t prop_body_len;

static void prop_dump_body(void)
{
    if (!prop_body)
        return;
    fprintf(stderr, "body under test (%zu bytes):\n", prop_body_len);
    for (size_t i = 0; i < prop_body_len; i++) {
        unsigned char ch = (unsigned char)prop_body[i];
        if (ch == '\n')
            fputs("\\n\n", stderr);
        else if (ch >= 0x20 && ch < 0x7f)
            fputc(ch, stderr);
        else
            fprintf(stderr, "<%02x>", ch);
    }
    fputc('\n', stderr);
}

#define prop_fail(fmt, ...)                                                                        \
    do {                                                                                           \
        prop_dump_body();                                                                          \
        fail_msg("property failed (replay with STELE_TEST_SEED=%" PRIu64 "): " fmt, prop_seed,     \
                 ##__VA_ARGS__);                                                                   \
    } while (0)

typedef struct {
    char buf[64];
    uint32_t len;
} gname;

typedef struct {
    gname key;
    stele_lp_field_type type;
    double f;
    int64_t i;
    uint64_t u;
    bool b;
    char s[64];
    uint32_t slen;
    const char *bool_spelling;
} gfield;

typedef struct {
    gname meas;
    gname tag_key[12], tag_value[12];
    uint32_t ntags;
    gfield fields[12];
    uint32_t nfields;
    bool has_ts;
    int64_t ts;
    uint32_t line_no;
} gline;

/* Bytes that names draw from: the delimiters and escape characters many times over,
 * then ordinary text, UTF-8 and odd bytes. */
static const char name_bytes[] = ",, ==\\\\\"#\tabcxyzABC019_-.:/\r\x01\x7f\xc3\xa9";

enum { NAME_PLAIN = 0, NAME_MEASUREMENT = 1, NAME_FIRST_FIELD_KEY = 2 };

static void gen_name(gname *n, int kind)
{
    do {
        n->len = 1 + prng_below(10);
        for (uint32_t i = 0; i < n->len; i++) {
            uint32_t r = prng_below(40);
            n->buf[i] = r < sizeof(name_bytes) - 1 ? name_bytes[r] : (char)(1 + prng_below(255));
            if (n->buf[i] == '\n')
                n->buf[i] = 'n';
        }
        /* Not representable: a trailing backslash would escape the delimiter; a
         * measurement cannot start like a comment; a tab that starts a measurement or
         * the first field key is taken for the blank before it. */
    } while (n->buf[n->len - 1] == '\\' || (kind == NAME_MEASUREMENT && n->buf[0] == '#') ||
             (kind != NAME_PLAIN && n->buf[0] == '\t'));
}

static bool gname_eq(const gname *a, const gname *b)
{
    return a->len == b->len && memcmp(a->buf, b->buf, a->len) == 0;
}

static int gname_cmp(const gname *a, const gname *b)
{
    uint32_t n = a->len < b->len ? a->len : b->len;
    int c = memcmp(a->buf, b->buf, n);
    return c ? c : (a->len > b->len) - (a->len < b->len);
}

static void render_escaped(char **o, const char *s, uint32_t len, const char *special)
{
    for (uint32_t i = 0; i < len; i++) {
        if (strchr(special, s[i]) && s[i] != '\0')
            *(*o)++ = '\\';
        *(*o)++ = s[i];
    }
}

static double gen_double(void)
{
    double d;
    switch (prng_below(4)) {
    case 0: { /* any finite bit pattern */
        uint64_t bits;
        do {
            bits = prng_next();
            memcpy(&d, &bits, sizeof(d));
        } while (!isfinite(d));
        return d;
    }
    case 1:
        return (double)(int64_t)(prng_next() % 2000001) - 1000000.0;
    case 2:
        return (double)(prng_next() % 100000) / 1000.0;
    default:
        return prng_below(2) ? 0.0 : -0.0;
    }
}

static void gen_field(gfield *f)
{
    static const char *const trues[] = {"t", "T", "true", "True", "TRUE"};
    static const char *const falses[] = {"f", "F", "false", "False", "FALSE"};
    static const char string_bytes[] = "\"\"\\\\\n\r, =abcxyz\t#\xc3\xa9";
    f->type = (stele_lp_field_type)prng_below(5);
    switch (f->type) {
    case STELE_LP_FLOAT:
        f->f = gen_double();
        break;
    case STELE_LP_INT:
        f->i = prng_below(4) == 0 ? (prng_below(2) ? INT64_MIN : INT64_MAX)
                                  : (int64_t)prng_next() >> prng_below(64);
        break;
    case STELE_LP_UINT:
        f->u = prng_below(4) == 0 ? UINT64_MAX : prng_next() >> prng_below(64);
        break;
    case STELE_LP_BOOL:
        f->b = prng_below(2);
        f->bool_spelling = f->b ? trues[prng_below(5)] : falses[prng_below(5)];
        break;
    case STELE_LP_STRING:
        f->slen = prng_below(20);
        for (uint32_t i = 0; i < f->slen; i++) {
            uint32_t r = prng_below(30);
            f->s[i] = r < sizeof(string_bytes) - 1 ? string_bytes[r] : (char)prng_next();
        }
        break;
    }
}

/* Renders g as a line into *o; counts the newlines its strings hold. */
static uint32_t render_line(char **o, const gline *g, const gfield *written, uint32_t nwritten)
{
    uint32_t newlines = 0;
    render_escaped(o, g->meas.buf, g->meas.len, ", ");
    for (uint32_t i = 0; i < g->ntags; i++) {
        *(*o)++ = ',';
        render_escaped(o, g->tag_key[i].buf, g->tag_key[i].len, ", =");
        *(*o)++ = '=';
        render_escaped(o, g->tag_value[i].buf, g->tag_value[i].len, ", =");
    }
    /* The key section ends at an unescaped space; more blanks may follow. */
    *(*o)++ = ' ';
    if (prng_below(4) == 0)
        *(*o)++ = prng_below(2) ? ' ' : '\t';
    for (uint32_t i = 0; i < nwritten; i++) {
        const gfield *f = &written[i];
        if (i)
            *(*o)++ = ',';
        render_escaped(o, f->key.buf, f->key.len, ", =");
        *(*o)++ = '=';
        switch (f->type) {
        case STELE_LP_FLOAT:
            *o += sprintf(*o, "%.17g", f->f);
            break;
        case STELE_LP_INT:
            *o += sprintf(*o, "%" PRId64 "i", f->i);
            break;
        case STELE_LP_UINT:
            *o += sprintf(*o, "%" PRIu64 "u", f->u);
            break;
        case STELE_LP_BOOL:
            *o += sprintf(*o, "%s", f->bool_spelling);
            break;
        case STELE_LP_STRING:
            *(*o)++ = '"';
            render_escaped(o, f->s, f->slen, "\"\\");
            *(*o)++ = '"';
            for (uint32_t k = 0; k < f->slen; k++)
                newlines += f->s[k] == '\n';
            break;
        }
    }
    if (g->has_ts)
        *o += sprintf(*o, " %" PRId64, g->ts);
    if (prng_below(4) == 0)
        *(*o)++ = prng_below(2) ? ' ' : '\t';
    return newlines;
}

static void check_line(const cline *got, const gline *want, uint32_t index)
{
    if (got->line_no != want->line_no)
        prop_fail("line %u: expected line_no %u, got %u", index, want->line_no, got->line_no);
    if (got->meas.len != want->meas.len || memcmp(got->meas.ptr, want->meas.buf, got->meas.len))
        prop_fail("line %u: measurement differs", index);
    if (got->ntags != want->ntags)
        prop_fail("line %u: expected %u tags, got %u", index, want->ntags, got->ntags);
    for (uint32_t i = 0; i < got->ntags; i++) {
        const gname *k = &want->tag_key[i], *v = &want->tag_value[i];
        if (got->tag_key[i].len != k->len || memcmp(got->tag_key[i].ptr, k->buf, k->len) ||
            got->tag_value[i].len != v->len || memcmp(got->tag_value[i].ptr, v->buf, v->len))
            prop_fail("line %u: tag %u differs", index, i);
    }
    if (got->nfields != want->nfields)
        prop_fail("line %u: expected %u fields, got %u", index, want->nfields, got->nfields);
    for (uint32_t i = 0; i < got->nfields; i++) {
        const cfield *gf = &got->fields[i];
        const gfield *wf = &want->fields[i];
        if (gf->key.len != wf->key.len || memcmp(gf->key.ptr, wf->key.buf, wf->key.len))
            prop_fail("line %u: key of field %u differs", index, i);
        if (gf->type != wf->type)
            prop_fail("line %u field %u: expected type %d, got %d", index, i, wf->type, gf->type);
        bool same = false;
        switch (wf->type) {
        case STELE_LP_FLOAT:
            same = same_bits(gf->f, wf->f);
            break;
        case STELE_LP_INT:
            same = gf->i == wf->i;
            break;
        case STELE_LP_UINT:
            same = gf->u == wf->u;
            break;
        case STELE_LP_BOOL:
            same = gf->b == wf->b;
            break;
        case STELE_LP_STRING:
            same = gf->s.len == wf->slen && memcmp(gf->s.ptr, wf->s, wf->slen) == 0;
            break;
        }
        if (!same)
            prop_fail("line %u field %u: value differs", index, i);
    }
    if (got->has_ts != want->has_ts || (want->has_ts && got->ts != want->ts))
        prop_fail("line %u: timestamp differs", index);
}

static void test_property_roundtrip(void **state)
{
    (void)state;
    prop_seed_init();
    enum { ITERATIONS = 20000, MAX_LINES = 8, BODY = 64 * 1024 };
    static gline want[MAX_LINES];
    char *body = malloc(BODY);
    assert_non_null(body);
    stele_lp_parser *p = parser_default();
    capture *c = cap_new();

    for (int iter = 0; iter < ITERATIONS; iter++) {
        char *o = body;
        uint32_t nlines = 1 + prng_below(MAX_LINES), line_no = 1;
        bool crlf = prng_below(2);
        for (uint32_t li = 0; li < nlines; li++) {
            gline *g = &want[li];
            /* Blank and comment lines between points. */
            while (prng_below(4) == 0) {
                if (prng_below(2))
                    o += sprintf(o, "# comment, with = \" \\ marks");
                o += sprintf(o, crlf ? "\r\n" : "\n");
                line_no++;
            }
            gen_name(&g->meas, NAME_MEASUREMENT);
            g->ntags = prng_below(6);
            for (uint32_t i = 0; i < g->ntags; i++) {
                bool dup;
                do {
                    gen_name(&g->tag_key[i], NAME_PLAIN);
                    dup = false;
                    for (uint32_t j = 0; j < i; j++)
                        dup |= gname_eq(&g->tag_key[i], &g->tag_key[j]);
                } while (dup);
                gen_name(&g->tag_value[i], NAME_PLAIN);
            }
            /* Fields as written, keys sometimes repeated; the expectation keeps the
             * last of each key, in line order. */
            gfield written[12];
            uint32_t nwritten = 1 + prng_below(6);
            for (uint32_t i = 0; i < nwritten; i++) {
                if (i && prng_below(5) == 0)
                    written[i].key = written[prng_below(i)].key;
                else
                    gen_name(&written[i].key, i ? NAME_PLAIN : NAME_FIRST_FIELD_KEY);
                gen_field(&written[i]);
            }
            g->has_ts = prng_below(3) != 0;
            g->ts = prng_below(8) == 0 ? INT64_MIN : (int64_t)prng_next();
            g->line_no = line_no;
            line_no += render_line(&o, g, written, nwritten);
            o += sprintf(o, crlf ? "\r\n" : "\n");
            line_no++;

            g->nfields = 0;
            for (uint32_t i = 0; i < nwritten; i++) {
                for (uint32_t j = 0; j < g->nfields; j++) {
                    if (gname_eq(&g->fields[j].key, &written[i].key)) {
                        memmove(&g->fields[j], &g->fields[j + 1],
                                (g->nfields - j - 1) * sizeof(g->fields[0]));
                        g->nfields--;
                        break;
                    }
                }
                g->fields[g->nfields++] = written[i];
            }
            /* Tags come back sorted. */
            for (uint32_t i = 1; i < g->ntags; i++)
                for (uint32_t j = i; j > 0 && gname_cmp(&g->tag_key[j - 1], &g->tag_key[j]) > 0;
                     j--) {
                    gname t = g->tag_key[j];
                    g->tag_key[j] = g->tag_key[j - 1];
                    g->tag_key[j - 1] = t;
                    t = g->tag_value[j];
                    g->tag_value[j] = g->tag_value[j - 1];
                    g->tag_value[j - 1] = t;
                }
        }
        /* Sometimes drop the final newline. */
        if (prng_below(3) == 0)
            o -= crlf ? 2 : 1;
        assert_true(o < body + BODY);

        c->n = 0;
        c->used = 0;
        prop_body = body;
        prop_body_len = (size_t)(o - body);
        stele_lp_error err;
        int rc = parse_buf(p, c, body, (size_t)(o - body), &err);
        if (rc != 0)
            prop_fail("iteration %d: parse failed at line %u: %s", iter, err.line_no, err.message);
        if (c->n != nlines)
            prop_fail("iteration %d: expected %u lines, got %u", iter, nlines, c->n);
        for (uint32_t li = 0; li < nlines; li++)
            check_line(&c->lines[li], &want[li], li);
    }
    prop_body = NULL;
    cap_free(c);
    stele_lp_parser_destroy(p);
    free(body);
}

static void test_property_float_matches_strtod(void **state)
{
    (void)state;
    prop_seed_init();
    stele_lp_parser *p = parser_default();
    capture *c = cap_new();
    char num[128], text[160];

    for (int iter = 0; iter < 200000; iter++) {
        size_t o = 0;
        if (prng_below(2))
            num[o++] = '-';
        uint32_t lead_zeros = prng_below(4) == 0 ? prng_below(20) : 0;
        uint32_t int_digits = prng_below(4) == 0 ? 0 : 1 + prng_below(prng_below(2) ? 6 : 25);
        uint32_t frac_digits = prng_below(2) ? prng_below(prng_below(2) ? 8 : 30) : 0;
        bool point = frac_digits > 0 || prng_below(4) == 0;
        if (int_digits == 0 && frac_digits == 0)
            int_digits = 1;
        for (uint32_t i = 0; i < lead_zeros; i++)
            num[o++] = '0';
        for (uint32_t i = 0; i < int_digits; i++)
            num[o++] = (char)('0' + prng_below(10));
        if (point)
            num[o++] = '.';
        for (uint32_t i = 0; i < frac_digits; i++)
            num[o++] = (char)('0' + prng_below(10));
        if (prng_below(2)) {
            num[o++] = prng_below(2) ? 'e' : 'E';
            uint32_t r = prng_below(3);
            if (r)
                num[o++] = r == 1 ? '+' : '-';
            int e = prng_below(3) ? (int)prng_below(25) : (int)prng_below(400);
            o += (size_t)sprintf(num + o, "%d", e);
        }
        num[o] = '\0';
        snprintf(text, sizeof(text), "m f=%s", num);

        double want = strtod(num, NULL);
        c->n = 0;
        c->used = 0;
        stele_lp_error err;
        int rc = parse_buf(p, c, text, strlen(text), &err);
        if (isinf(want)) {
            if (rc != -EINVAL || !strstr(err.message, "out of range"))
                prop_fail("[%s] overflows, expected an out-of-range error, got %d", num, rc);
            continue;
        }
        if (rc != 0)
            prop_fail("[%s]: parse failed: %s", num, err.message);
        if (c->lines[0].fields[0].type != STELE_LP_FLOAT ||
            !same_bits(c->lines[0].fields[0].f, want))
            prop_fail("[%s]: expected %a, got %a", num, want, c->lines[0].fields[0].f);
    }
    cap_free(c);
    stele_lp_parser_destroy(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_line),
        cmocka_unit_test(test_no_tags_no_timestamp),
        cmocka_unit_test(test_whitespace),
        cmocka_unit_test(test_comments_and_blank_lines),
        cmocka_unit_test(test_crlf),
        cmocka_unit_test(test_body_without_final_newline),
        cmocka_unit_test(test_measurement_escapes),
        cmocka_unit_test(test_tag_escapes),
        cmocka_unit_test(test_field_key_escapes),
        cmocka_unit_test(test_string_values),
        cmocka_unit_test(test_string_spans_lines),
        cmocka_unit_test(test_integers),
        cmocka_unit_test(test_integer_overflow),
        cmocka_unit_test(test_unsigned),
        cmocka_unit_test(test_booleans),
        cmocka_unit_test(test_floats),
        cmocka_unit_test(test_float_invalid),
        cmocka_unit_test(test_inf_nan_rejected),
        cmocka_unit_test(test_tags_sorted),
        cmocka_unit_test(test_duplicate_tag_key),
        cmocka_unit_test(test_duplicate_field_last_wins),
        cmocka_unit_test(test_missing_fields),
        cmocka_unit_test(test_missing_measurement),
        cmocka_unit_test(test_missing_field_value),
        cmocka_unit_test(test_field_key_errors),
        cmocka_unit_test(test_tag_errors),
        cmocka_unit_test(test_string_errors),
        cmocka_unit_test(test_timestamps),
        cmocka_unit_test(test_error_line_numbers),
        cmocka_unit_test(test_create_limits),
        cmocka_unit_test(test_limit_line_length),
        cmocka_unit_test(test_limit_counts),
        cmocka_unit_test(test_limit_lengths),
        cmocka_unit_test(test_callback_stops_parse),
        cmocka_unit_test(test_lines_before_error_are_delivered),
        cmocka_unit_test(test_api_arguments),
        cmocka_unit_test(test_error_message_is_safe_text),
        cmocka_unit_test(test_locale_independent),
        cmocka_unit_test(test_property_roundtrip),
        cmocka_unit_test(test_property_float_matches_strtod),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
