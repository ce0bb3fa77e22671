/*
 * fuzz_lineproto.c — libFuzzer target for the line protocol parser.
 *
 * Parses arbitrary bytes with the default limits and checks, for every line handed to
 * the callback, what the header promises: lengths within limits and non-empty where
 * the grammar says so, tags sorted with unique keys, field keys unique, floats finite,
 * line numbers rising and inside the body, and every string either inside the input
 * or — only when the input holds a backslash to unescape — inside one scratch-sized
 * window, without overlapping the line's other unescaped strings. Then it renders the
 * parsed line back to canonical line protocol, parses that with a second parser and
 * requires the same line back (so escaping and number conversion are lossless). On an
 * error it checks the line number and that the message is non-empty, valid UTF-8.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stele/lineproto.h"

#define FUZZ_RENDER_CAP (1u << 20)
/* The rendering of a line can be longer than the line (".5" → "0.5", "t" → "true"),
 * so the second parser gets room for it. */
#define FUZZ_REPARSE_LINE_LEN (512u * 1024u)

#define fuzz_check(cond, ...)                                                                      \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_lineproto: invariant failed: %s: ", #cond);                      \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

typedef struct {
    const char *in;
    size_t in_len;
    uint32_t physical_lines;
    bool has_backslash;
    stele_lp_limits lim;
    uint32_t last_line_no;
    const stele_lp_line *want; /* the line the re-parse must reproduce */
    int reparsed;
} fuzz_ctx;

static stele_lp_parser *parser, *reparser;
static char *render_buf;

static bool in_input(const fuzz_ctx *c, stele_lp_str s)
{
    uintptr_t p = (uintptr_t)s.ptr, lo = (uintptr_t)c->in;
    return p >= lo && p + s.len <= lo + c->in_len;
}

static int str_cmp(stele_lp_str a, stele_lp_str b)
{
    uint32_t n = a.len < b.len ? a.len : b.len;
    int r = n ? memcmp(a.ptr, b.ptr, n) : 0;
    return r ? r : (a.len > b.len) - (a.len < b.len);
}

static bool str_eq(stele_lp_str a, stele_lp_str b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
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

/* Strings of one line that are not in the input: must all fit one scratch buffer's
 * span and not overlap. */
typedef struct {
    stele_lp_str s[2 * STELE_LP_MAX_TAGS_CEILING + 2 * STELE_LP_MAX_FIELDS_CEILING + 1];
    uint32_t n;
} off_input;

static void note_str(const fuzz_ctx *c, off_input *off, stele_lp_str s)
{
    fuzz_check(s.ptr != NULL, "null string view");
    if (s.len) {
        volatile char sink = s.ptr[0]; /* ASan checks the view is readable */
        sink = s.ptr[s.len - 1];
        (void)sink;
    }
    if (!in_input(c, s)) {
        fuzz_check(c->has_backslash, "string outside the input although nothing was escaped");
        off->s[off->n++] = s;
    }
}

static void check_off_input(const fuzz_ctx *c, const off_input *off)
{
    if (off->n == 0)
        return;
    uintptr_t lo = UINTPTR_MAX, hi = 0;
    for (uint32_t i = 0; i < off->n; i++) {
        uintptr_t a = (uintptr_t)off->s[i].ptr, b = a + off->s[i].len;
        lo = a < lo ? a : lo;
        hi = b > hi ? b : hi;
        for (uint32_t j = 0; j < i; j++) {
            uintptr_t x = (uintptr_t)off->s[j].ptr, y = x + off->s[j].len;
            fuzz_check(off->s[i].len == 0 || off->s[j].len == 0 || b <= x || y <= a,
                       "unescaped strings %u and %u overlap", i, j);
        }
    }
    fuzz_check(hi - lo <= (uintptr_t)c->lim.max_line_len + 1,
               "unescaped strings span %zu bytes, more than the scratch buffer", (size_t)(hi - lo));
}

static void render_name(char **o, stele_lp_str s, const char *special)
{
    for (uint32_t i = 0; i < s.len; i++) {
        if (s.ptr[i] != '\0' && strchr(special, s.ptr[i]))
            *(*o)++ = '\\';
        *(*o)++ = s.ptr[i];
    }
}

static size_t render_line(char *out, const stele_lp_line *l)
{
    char *o = out;
    render_name(&o, l->measurement, ", ");
    for (uint32_t i = 0; i < l->ntags; i++) {
        *o++ = ',';
        render_name(&o, l->tags[i].key, ", =");
        *o++ = '=';
        render_name(&o, l->tags[i].value, ", =");
    }
    *o++ = ' ';
    for (uint32_t i = 0; i < l->nfields; i++) {
        const stele_lp_field *f = &l->fields[i];
        if (i)
            *o++ = ',';
        render_name(&o, f->key, ", =");
        *o++ = '=';
        switch (f->type) {
        case STELE_LP_FLOAT:
            o += sprintf(o, "%.17g", f->v.f);
            break;
        case STELE_LP_INT:
            o += sprintf(o, "%" PRId64 "i", f->v.i);
            break;
        case STELE_LP_UINT:
            o += sprintf(o, "%" PRIu64 "u", f->v.u);
            break;
        case STELE_LP_BOOL:
            o += sprintf(o, "%s", f->v.b ? "true" : "false");
            break;
        case STELE_LP_STRING:
            *o++ = '"';
            render_name(&o, f->v.s, "\"\\");
            *o++ = '"';
            break;
        }
    }
    if (l->has_timestamp)
        o += sprintf(o, " %" PRId64, l->timestamp);
    return (size_t)(o - out);
}

static bool same_field(const stele_lp_field *a, const stele_lp_field *b)
{
    if (!str_eq(a->key, b->key) || a->type != b->type)
        return false;
    switch (a->type) {
    case STELE_LP_FLOAT:
        return memcmp(&a->v.f, &b->v.f, sizeof(double)) == 0;
    case STELE_LP_INT:
        return a->v.i == b->v.i;
    case STELE_LP_UINT:
        return a->v.u == b->v.u;
    case STELE_LP_BOOL:
        return a->v.b == b->v.b;
    case STELE_LP_STRING:
        return str_eq(a->v.s, b->v.s);
    }
    return false;
}

static int compare_reparsed(void *ctx, const stele_lp_line *got)
{
    fuzz_ctx *c = ctx;
    const stele_lp_line *want = c->want;
    c->reparsed++;
    fuzz_check(str_eq(got->measurement, want->measurement), "measurement changed");
    fuzz_check(got->ntags == want->ntags, "tag count %u became %u", want->ntags, got->ntags);
    for (uint32_t i = 0; i < got->ntags; i++)
        fuzz_check(str_eq(got->tags[i].key, want->tags[i].key) &&
                       str_eq(got->tags[i].value, want->tags[i].value),
                   "tag %u changed", i);
    fuzz_check(got->nfields == want->nfields, "field count %u became %u", want->nfields,
               got->nfields);
    for (uint32_t i = 0; i < got->nfields; i++)
        fuzz_check(same_field(&got->fields[i], &want->fields[i]), "field %u changed", i);
    fuzz_check(got->has_timestamp == want->has_timestamp &&
                   (!got->has_timestamp || got->timestamp == want->timestamp),
               "timestamp changed");
    return 0;
}

static int check_line(void *ctx, const stele_lp_line *l)
{
    fuzz_ctx *c = ctx;
    const stele_lp_limits *lim = &c->lim;
    static off_input off;
    off.n = 0;

    fuzz_check(l->line_no > c->last_line_no && l->line_no <= c->physical_lines,
               "line_no %u after %u, body has %u lines", l->line_no, c->last_line_no,
               c->physical_lines);
    c->last_line_no = l->line_no;

    note_str(c, &off, l->measurement);
    fuzz_check(l->measurement.len >= 1 && l->measurement.len <= lim->max_name_len,
               "measurement length %u", l->measurement.len);
    fuzz_check(!memchr(l->measurement.ptr, '\n', l->measurement.len), "newline in measurement");

    fuzz_check(l->ntags <= lim->max_tags, "%u tags", l->ntags);
    for (uint32_t i = 0; i < l->ntags; i++) {
        const stele_lp_tag *t = &l->tags[i];
        note_str(c, &off, t->key);
        note_str(c, &off, t->value);
        fuzz_check(t->key.len >= 1 && t->key.len <= lim->max_name_len, "tag key length %u",
                   t->key.len);
        fuzz_check(t->value.len >= 1 && t->value.len <= lim->max_value_len, "tag value length %u",
                   t->value.len);
        fuzz_check(i == 0 || str_cmp(l->tags[i - 1].key, t->key) < 0,
                   "tags not sorted or not unique at %u", i);
    }

    fuzz_check(l->nfields >= 1 && l->nfields <= lim->max_fields, "%u fields", l->nfields);
    for (uint32_t i = 0; i < l->nfields; i++) {
        const stele_lp_field *f = &l->fields[i];
        note_str(c, &off, f->key);
        fuzz_check(f->key.len >= 1 && f->key.len <= lim->max_name_len, "field key length %u",
                   f->key.len);
        for (uint32_t j = 0; j < i; j++)
            fuzz_check(!str_eq(l->fields[j].key, f->key), "field keys %u and %u repeat", j, i);
        switch (f->type) {
        case STELE_LP_FLOAT:
            fuzz_check(isfinite(f->v.f), "non-finite float");
            break;
        case STELE_LP_INT:
        case STELE_LP_UINT:
            break;
        case STELE_LP_BOOL:
            fuzz_check(f->v.b == true || f->v.b == false, "bool not 0/1");
            break;
        case STELE_LP_STRING:
            note_str(c, &off, f->v.s);
            fuzz_check(f->v.s.len <= lim->max_value_len, "string length %u", f->v.s.len);
            break;
        default:
            fuzz_check(false, "unknown field type %d", (int)f->type);
        }
    }
    check_off_input(c, &off);

    /* Canonical rendering parses back to the same line — unless the first field key
     * starts with a tab: legal after a ',' but taken for whitespace at the start of the
     * field set, so once "last wins" moved such a key first, no rendering keeps it. */
    if (l->fields[0].key.ptr[0] == '\t')
        return 0;
    size_t n = render_line(render_buf, l);
    fuzz_check(n < FUZZ_RENDER_CAP, "rendering overflow");
    stele_lp_error err;
    c->want = l;
    c->reparsed = 0;
    int rc = stele_lp_parse(reparser, render_buf, n, compare_reparsed, c, &err);
    fuzz_check(rc == 0, "re-parse of [%.*s] failed: line %u: %s", (int)(n < 300 ? n : 300),
               render_buf, err.line_no, err.message);
    fuzz_check(c->reparsed == 1, "re-parse gave %d lines", c->reparsed);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static fuzz_ctx c;
    stele_lp_limits lim;
    stele_lp_limits_default(&lim);
    if (!parser) {
        stele_lp_limits big = lim;
        big.max_line_len = FUZZ_REPARSE_LINE_LEN;
        render_buf = malloc(FUZZ_RENDER_CAP);
        if (!render_buf || stele_lp_parser_create(&lim, &parser) != 0 ||
            stele_lp_parser_create(&big, &reparser) != 0)
            abort();
    }

    /* A copy of exactly `size` bytes, so ASan sees any read past the end. */
    char *in = malloc(size ? size : 1);
    if (!in)
        return 0;
    if (size)
        memcpy(in, data, size);
    memset(&c, 0, sizeof(c));
    c.in = in;
    c.in_len = size;
    c.lim = lim;
    c.physical_lines = 1;
    for (size_t i = 0; i < size; i++) {
        c.physical_lines += in[i] == '\n';
        c.has_backslash |= in[i] == '\\';
    }

    stele_lp_error err;
    memset(&err, 0x5a, sizeof(err));
    int rc = stele_lp_parse(parser, in, size, check_line, &c, &err);
    fuzz_check(rc == 0 || rc == -EINVAL, "rc %d", rc);
    if (rc == -EINVAL) {
        fuzz_check(err.line_no >= 1 && err.line_no <= c.physical_lines, "error line %u of %u lines",
                   err.line_no, c.physical_lines);
        fuzz_check(err.line_no >= c.last_line_no, "error line %u before the last good line %u",
                   err.line_no, c.last_line_no);
        fuzz_check(memchr(err.message, '\0', sizeof(err.message)) != NULL, "unterminated message");
        fuzz_check(err.message[0] != '\0', "empty message");
        fuzz_check(utf8_valid(err.message), "message not UTF-8: %s", err.message);
    } else {
        fuzz_check(err.line_no == 0 && err.message[0] == '\0', "error set on success");
    }
    free(in);
    return 0;
}
