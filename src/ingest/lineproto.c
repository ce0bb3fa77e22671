/*
 * lineproto.c — InfluxDB line protocol parser (see include/stele/lineproto.h).
 *
 * DESIGN
 * One pass per line, no allocation per line. The body is cut into lines with memchr
 * (glibc's is vectorised), then each line is walked left to right with a 256-entry
 * byte-class table that tells, per byte, whether it ends the token being read. A name
 * or value that holds no escape sequence is handed out as a pointer into the body; one
 * that does is unescaped into the parser's scratch buffer. Everything a line needs is
 * allocated once, at create time, from the limits:
 *   scratch    max_line_len + 1 bytes: every unescaped string of a line comes from a
 *              distinct stretch of that line and unescaping only shrinks text, so a
 *              line's strings always fit; the + 1 leaves room for the NUL of a number
 *              copied out for strtod (its bytes are not among the unescaped ones).
 *   tags       max_tags entries, plus as many again for merge-sorting long tag sets.
 *   fields     max_fields entries, plus an open-addressed table for removing
 *              duplicate keys from long field sets in linear time.
 *
 * GRAMMAR, as accepted here
 *   body       = line *( "\n" line ) ; a "\r" right before "\n" (or the end) is dropped
 *   line       = *ws ( "" | "#" *any | point ) *ws
 *   point      = measurement *( "," tagkey "=" tagvalue ) 1*ws fieldset [ 1*ws timestamp ]
 *   fieldset   = fieldkey "=" fieldvalue *( "," fieldkey "=" fieldvalue )
 *   fieldvalue = float | int "i" | uint "u" | bool | '"' string '"'
 *   float      = ["-"] ( digits ["." *digit] | "." digits ) [("e"|"E") ["+"|"-"] digits]
 *   int        = ["-"] digits          ; must fit int64
 *   uint       = digits                ; must fit uint64
 *   bool       = t | T | true | True | TRUE | f | F | false | False | FALSE
 *   timestamp  = ["-"] digits          ; must fit int64
 *   ws         = " " | "\t"
 * Names end at an unescaped "," or " " (measurement) or "," " " "=" (tag keys, tag
 * values, field keys). A backslash followed by one of its element's delimiters stands
 * for that delimiter; any other backslash is an ordinary byte. So a name can hold any
 * byte but "\n", and cannot end with a backslash (that backslash would escape the
 * delimiter) — InfluxDB has the same limit. In strings, \" and \\ stand for " and \,
 * other backslashes are ordinary, and raw newlines are part of the string (the line
 * goes on after the closing quote). Tab is whitespace only around sections: inside
 * names it is an ordinary byte, except that a tab starting a measurement or the first
 * field key is taken for whitespace (as InfluxDB does). inf and nan are refused, as
 * InfluxDB refuses them. A line's length, for max_line_len, counts its bytes from the
 * first (leading blanks included) to its "\n" or "\r\n" (excluded); comment lines are
 * skipped unmeasured.
 *
 * NUMBERS
 * Floats take Clinger's fast path when it is exact: a decimal significand of at most
 * 19 digits that is ≤ 2^53 and a power of ten ≤ 10^22 are both exact doubles, so one
 * IEEE multiply or divide gives the correctly rounded result. Anything else goes to
 * strtod_l in the "C" locale on a NUL-terminated copy, so results always equal
 * strtod's bit for bit.
 */
#include "stele/lineproto.h"

#include <errno.h>
#include <float.h>
#include <locale.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* The fast float path needs each operation rounded once, to double. */
#if defined(__FAST_MATH__)
#error "lineproto.c must not be built with -ffast-math: float parsing must be exact"
#endif
#if defined(FLT_EVAL_METHOD) && FLT_EVAL_METHOD == 0
#define LP_FAST_FLOAT 1
#else
#define LP_FAST_FLOAT 0
#endif

/* Defaults. 64 KiB lines: real points are a few hundred bytes, and one line's worth of
 * scratch is what every parser (one per ingest thread) keeps. 64 tags and 256 fields
 * per point are well above what real schemas use (TSBS devops: 10 and 10) and bound
 * the per-line sort and dedup work. 256-byte names fit any sane metric or label name;
 * 4 KiB values fit labels and short status strings without letting one point carry a
 * document. */
#define LP_DEFAULT_MAX_LINE_LEN (64u * 1024u)
#define LP_DEFAULT_MAX_TAGS 64u
#define LP_DEFAULT_MAX_FIELDS 256u
#define LP_DEFAULT_MAX_NAME_LEN 256u
#define LP_DEFAULT_MAX_VALUE_LEN (4u * 1024u)

/* Below this many entries, pairwise comparison beats sorting or hashing for finding
 * duplicate field keys and insertion sort beats merge sort for tags. */
#define LP_SMALL_SET 16u

/* How much of a name or token an error message quotes, in output bytes: enough to
 * recognise it, short enough that two quotes and the text fit stele_lp_error. */
#define LP_QUOTE_MAX 40u
#define LP_QUOTE_CAP (LP_QUOTE_MAX + 16u)

/* Byte classes. */
enum {
    LP_C_MEAS_END = 1u << 0, /* ends a measurement: , space */
    LP_C_KEY_END = 1u << 1,  /* ends a tag key, tag value or field key: , space = */
    LP_C_BACKSLASH = 1u << 2,
    LP_C_VALUE_END = 1u << 3, /* ends a field value or timestamp: , space tab */
    LP_C_DIGIT = 1u << 4,
};

static const uint8_t lp__class[256] = {
    [','] = LP_C_MEAS_END | LP_C_KEY_END | LP_C_VALUE_END,
    [' '] = LP_C_MEAS_END | LP_C_KEY_END | LP_C_VALUE_END,
    ['='] = LP_C_KEY_END,
    ['\\'] = LP_C_BACKSLASH,
    ['\t'] = LP_C_VALUE_END,
    ['0'] = LP_C_DIGIT,
    ['1'] = LP_C_DIGIT,
    ['2'] = LP_C_DIGIT,
    ['3'] = LP_C_DIGIT,
    ['4'] = LP_C_DIGIT,
    ['5'] = LP_C_DIGIT,
    ['6'] = LP_C_DIGIT,
    ['7'] = LP_C_DIGIT,
    ['8'] = LP_C_DIGIT,
    ['9'] = LP_C_DIGIT,
};

/* Powers of ten that are exact doubles (10^22 < 2^53 · 2^22 with 5^22 < 2^53). */
static const double lp__pow10[23] = {
    1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
    1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
};

#define LP_TWO_POW_53 (UINT64_C(1) << 53)

typedef struct {
    uint32_t generation; /* slot is live when equal to the table's generation */
    uint32_t field;      /* index into the fields array */
} lp_dedup_slot;

struct stele_lp_parser {
    stele_lp_limits limits;
    char *scratch; /* max_line_len + 1 bytes, reset per line */
    size_t scratch_cap;
    size_t scratch_used;
    stele_lp_tag *tags;     /* max_tags */
    stele_lp_tag *tags_aux; /* max_tags, merge sort buffer */
    stele_lp_field *fields; /* max_fields */
    lp_dedup_slot *dedup;   /* dedup_mask + 1 slots, a power of two ≥ 2 · max_fields */
    uint32_t dedup_mask;
    uint32_t dedup_generation;
    locale_t c_locale; /* for strtod_l, whatever the process locale is */
    stele_lp_line line;
};

/* One line being parsed. A line may run over several physical lines when a string
 * field holds newlines; `newlines` counts those seen so far, so errors name the
 * physical line they are on. */
typedef struct {
    stele_lp_parser *p;
    const char *start;   /* first byte of the line, leading whitespace included */
    const char *eol;     /* end of the line's text: its "\n" or "\r\n", or the body's end */
    const char *next;    /* first byte after the line's "\n" */
    const char *buf_end; /* end of the body */
    uint32_t line_no;    /* physical line the line starts on */
    uint32_t newlines;   /* newlines inside string values so far */
    stele_lp_error *err;
} lp_cursor;

void stele_lp_limits_default(stele_lp_limits *limits)
{
    limits->max_line_len = LP_DEFAULT_MAX_LINE_LEN;
    limits->max_tags = LP_DEFAULT_MAX_TAGS;
    limits->max_fields = LP_DEFAULT_MAX_FIELDS;
    limits->max_name_len = LP_DEFAULT_MAX_NAME_LEN;
    limits->max_value_len = LP_DEFAULT_MAX_VALUE_LEN;
}

int stele_lp_parser_create(const stele_lp_limits *limits, stele_lp_parser **out)
{
    int rc = 0;
    stele_lp_parser *p = NULL;

    if (!out)
        return -EINVAL;
    *out = NULL;
    if (!limits || limits->max_line_len == 0 || limits->max_tags == 0 || limits->max_fields == 0 ||
        limits->max_name_len == 0 || limits->max_value_len == 0 ||
        limits->max_tags > STELE_LP_MAX_TAGS_CEILING ||
        limits->max_fields > STELE_LP_MAX_FIELDS_CEILING)
        return -EINVAL;

    p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->limits = *limits;
    p->c_locale = (locale_t)0;

    uint32_t slots = 1;
    while (slots < 2u * limits->max_fields)
        slots <<= 1;
    p->dedup_mask = slots - 1;

    p->scratch_cap = (size_t)limits->max_line_len + 1;
    p->scratch = malloc(p->scratch_cap);
    p->tags = calloc(limits->max_tags, sizeof(*p->tags));
    p->tags_aux = calloc(limits->max_tags, sizeof(*p->tags_aux));
    p->fields = calloc(limits->max_fields, sizeof(*p->fields));
    p->dedup = calloc(slots, sizeof(*p->dedup));
    if (!p->scratch || !p->tags || !p->tags_aux || !p->fields || !p->dedup) {
        rc = -ENOMEM;
        goto fail;
    }
    p->c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0);
    if (p->c_locale == (locale_t)0) {
        rc = errno ? -errno : -ENOMEM;
        goto fail;
    }
    p->line.tags = p->tags;
    p->line.fields = p->fields;
    *out = p; /* now belongs to the caller */
    return 0;

fail:
    stele_lp_parser_destroy(p);
    return rc;
}

void stele_lp_parser_destroy(stele_lp_parser *p)
{
    if (!p)
        return;
    if (p->c_locale != (locale_t)0)
        freelocale(p->c_locale);
    free(p->scratch);
    free(p->tags);
    free(p->tags_aux);
    free(p->fields);
    free(p->dedup);
    free(p);
}

/* ---- error messages ---------------------------------------------------------------- */

/* Length of the well-formed UTF-8 sequence at s[0..n), or 0 if there is none. */
static size_t lp__utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF;

    if (c >= 0xC2 && c <= 0xDF)
        len = 2;
    else if (c >= 0xE0 && c <= 0xEF)
        len = 3;
    else if (c >= 0xF0 && c <= 0xF4)
        len = 4;
    else
        return 0;
    if (c == 0xE0)
        lo = 0xA0; /* no overlong forms */
    else if (c == 0xED)
        hi = 0x9F; /* no surrogates */
    else if (c == 0xF0)
        lo = 0x90;
    else if (c == 0xF4)
        hi = 0x8F; /* nothing above U+10FFFF */
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xBF)
            return 0;
    return len;
}

/* Writes s[0..n) into out as a double-quoted excerpt that is valid UTF-8 whatever the
 * input (error messages end up in JSON): control bytes and broken UTF-8 become \xNN,
 * quotes and backslashes are escaped, and long text is cut with "...". */
static const char *lp__quote(char out[LP_QUOTE_CAP], const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *u = (const unsigned char *)s;
    size_t o = 0, i = 0;

    out[o++] = '"';
    while (i < n) {
        unsigned char c = u[i];
        size_t seq = c >= 0x80 ? lp__utf8_seq(u + i, n - i) : 0;
        size_t need = seq ? seq : (c >= 0x20 && c < 0x7F) ? (c == '"' || c == '\\' ? 2 : 1) : 4;
        if (o + need > LP_QUOTE_MAX) {
            memcpy(out + o, "...", 3);
            o += 3;
            break;
        }
        if (seq) {
            memcpy(out + o, u + i, seq);
            o += seq;
            i += seq;
            continue;
        }
        if (need == 4) {
            out[o++] = '\\';
            out[o++] = 'x';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        } else {
            if (need == 2)
                out[o++] = '\\';
            out[o++] = (char)c;
        }
        i++;
    }
    out[o++] = '"';
    out[o] = '\0';
    return out;
}

static int lp__fail(const lp_cursor *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int lp__fail(const lp_cursor *c, const char *fmt, ...)
{
    stele_lp_error *err = c->err;
    if (!err)
        return -EINVAL;
    err->line_no = c->line_no + c->newlines;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
    if (n >= (int)sizeof(err->message)) {
        /* Cut: drop a UTF-8 sequence that lost its tail, so the message stays valid. */
        size_t len = sizeof(err->message) - 1, k = len;
        while (k > 0 && ((unsigned char)err->message[k - 1] & 0xC0) == 0x80)
            k--;
        if (k > 0 && (unsigned char)err->message[k - 1] >= 0xC0 &&
            lp__utf8_seq((const unsigned char *)err->message + k - 1, len - (k - 1)) == 0)
            err->message[k - 1] = '\0';
    }
    return -EINVAL;
}

/* ---- names ------------------------------------------------------------------------- */

/* Returns the end of the token at s: the first byte of class `stop` not escaped by a
 * backslash, or eol. Sets *escaped when a backslash escaped a byte of class `esc`. */
static inline const char *lp__scan_token(const char *s, const char *eol, unsigned stop,
                                         unsigned esc, bool *escaped)
{
    for (;;) {
        while (s < eol && !(lp__class[(unsigned char)*s] & (stop | LP_C_BACKSLASH)))
            s++;
        if (s == eol || *s != '\\')
            return s;
        if (s + 1 < eol && (lp__class[(unsigned char)s[1]] & esc)) {
            *escaped = true;
            s += 2;
        } else {
            s++; /* a backslash that escapes nothing is an ordinary byte */
        }
    }
}

static size_t lp__unescape_name(char *dst, const char *s, const char *e, unsigned esc)
{
    char *d = dst;
    while (s < e) {
        if (*s == '\\' && s + 1 < e && (lp__class[(unsigned char)s[1]] & esc))
            s++;
        *d++ = *s++;
    }
    return (size_t)(d - dst);
}

/* Reads a name or tag value at s into *out, unescaping into scratch when needed;
 * returns where it ends. */
static inline const char *lp__read_name(lp_cursor *c, const char *s, unsigned stop,
                                        stele_lp_str *out)
{
    bool escaped = false;
    const char *end = lp__scan_token(s, c->eol, stop, stop, &escaped);
    if (!escaped) {
        out->ptr = s;
        out->len = (uint32_t)(end - s);
        return end;
    }
    stele_lp_parser *p = c->p;
    char *dst = p->scratch + p->scratch_used;
    size_t n = lp__unescape_name(dst, s, end, stop);
    p->scratch_used += n;
    out->ptr = dst;
    out->len = (uint32_t)n;
    return end;
}

static inline int lp__str_cmp(stele_lp_str a, stele_lp_str b)
{
    uint32_t n = a.len < b.len ? a.len : b.len;
    int c = n ? memcmp(a.ptr, b.ptr, n) : 0;
    if (c)
        return c;
    return (a.len > b.len) - (a.len < b.len);
}

static inline bool lp__str_eq(stele_lp_str a, stele_lp_str b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

/* ---- numbers ----------------------------------------------------------------------- */

/* Parses the decimal digits s[0..e) (at least one, all digits) into *out; false when
 * the value does not fit 64 bits. */
static bool lp__parse_u64(const char *s, const char *e, uint64_t *out)
{
    while (s < e - 1 && *s == '0')
        s++;
    size_t n = (size_t)(e - s);
    if (n > 20)
        return false;
    uint64_t v = 0;
    size_t fast = n < 19 ? n : 19; /* 19 digits always fit: 10^19 - 1 < 2^64 */
    for (size_t i = 0; i < fast; i++)
        v = v * 10 + (uint64_t)(s[i] - '0');
    if (n == 20) {
        if (__builtin_mul_overflow(v, 10u, &v) ||
            __builtin_add_overflow(v, (uint64_t)(s[19] - '0'), &v))
            return false;
    } else if (n > fast) {
        return false;
    }
    *out = v;
    return true;
}

/* Signed 64-bit from an optional "-" and digits s[0..e); false on bad syntax (*range
 * false) or overflow (*range true). */
static bool lp__parse_i64(const char *s, const char *e, int64_t *out, bool *range)
{
    bool neg = false;
    uint64_t mag;

    *range = false;
    if (s < e && *s == '-') {
        neg = true;
        s++;
    }
    if (s == e)
        return false;
    for (const char *q = s; q < e; q++)
        if (!(lp__class[(unsigned char)*q] & LP_C_DIGIT))
            return false;
    if (!lp__parse_u64(s, e, &mag) || mag > (uint64_t)INT64_MAX + (neg ? 1u : 0u)) {
        *range = true;
        return false;
    }
    *out = neg ? (int64_t)(0 - mag) : (int64_t)mag;
    return true;
}

/* End of the non-string field value at s (for error messages and booleans). */
static inline const char *lp__value_end(const char *s, const char *eol)
{
    while (s < eol && !(lp__class[(unsigned char)*s] & LP_C_VALUE_END))
        s++;
    return s;
}

static bool lp__is_inf_or_nan(const char *s, const char *e)
{
    if (s < e && (*s == '-' || *s == '+'))
        s++;
    size_t n = (size_t)(e - s);
    return (n == 3 && (strncasecmp(s, "inf", 3) == 0 || strncasecmp(s, "nan", 3) == 0)) ||
           (n == 8 && strncasecmp(s, "infinity", 8) == 0);
}

static int lp__bad_value(lp_cursor *c, const stele_lp_field *f, const char *s)
{
    char qk[LP_QUOTE_CAP], qv[LP_QUOTE_CAP];
    const char *e = lp__value_end(s, c->eol);
    lp__quote(qk, f->key.ptr, f->key.len);
    lp__quote(qv, s, (size_t)(e - s));
    if (lp__is_inf_or_nan(s, e))
        return lp__fail(c, "invalid value %s for field %s: line protocol has no inf or nan", qv,
                        qk);
    return lp__fail(c,
                    "invalid value %s for field %s: expected a number (1.5, 2i, 3u), a "
                    "boolean (true/false) or a quoted string",
                    qv, qk);
}

/* Parses the number at s into f; *end gets where it stops. */
static int lp__parse_number(lp_cursor *c, const char *s, stele_lp_field *f, const char **end)
{
    const char *eol = c->eol;
    const char *q = s;
    bool neg = false;
    char qk[LP_QUOTE_CAP];

    if (*q == '-') {
        neg = true;
        q++;
    }

    /* Significand: up to 19 significant digits go into mant (leading zeros are not
     * significant); further nonzero digits make it inexact. */
    uint64_t mant = 0;
    unsigned nsig = 0;
    int64_t exp10 = 0;
    bool inexact = false;
    const char *int_start = q;
    while (q < eol && (lp__class[(unsigned char)*q] & LP_C_DIGIT)) {
        unsigned d = (unsigned)(*q - '0');
        if (nsig < 19) {
            mant = mant * 10 + d;
            nsig += mant != 0;
        } else {
            exp10++;
            inexact |= d != 0;
        }
        q++;
    }
    const char *int_end = q;

    if (q < eol && (*q == 'i' || *q == 'u') && int_end > int_start) {
        bool is_int = *q == 'i';
        q++;
        if (q < eol && !(lp__class[(unsigned char)*q] & LP_C_VALUE_END))
            return lp__bad_value(c, f, s);
        *end = q;
        /* mant is exact unless digits were dropped past the 19th (exp10 > 0). */
        uint64_t mag = mant;
        bool fits = exp10 == 0 || lp__parse_u64(int_start, int_end, &mag);
        if (is_int) {
            if (!fits || mag > (uint64_t)INT64_MAX + (neg ? 1u : 0u))
                return lp__fail(c,
                                "integer value for field %s is out of range: it must fit "
                                "a signed 64-bit integer",
                                lp__quote(qk, f->key.ptr, f->key.len));
            f->type = STELE_LP_INT;
            f->v.i = neg ? (int64_t)(0 - mag) : (int64_t)mag;
            return 0;
        }
        if (neg)
            return lp__fail(c, "unsigned value for field %s is negative",
                            lp__quote(qk, f->key.ptr, f->key.len));
        if (!fits)
            return lp__fail(c,
                            "unsigned value for field %s is out of range: it must fit an "
                            "unsigned 64-bit integer",
                            lp__quote(qk, f->key.ptr, f->key.len));
        f->type = STELE_LP_UINT;
        f->v.u = mag;
        return 0;
    }

    size_t ndigits = (size_t)(int_end - int_start);
    if (q < eol && *q == '.') {
        q++;
        const char *frac_start = q;
        while (q < eol && (lp__class[(unsigned char)*q] & LP_C_DIGIT)) {
            unsigned d = (unsigned)(*q - '0');
            if (nsig < 19) {
                mant = mant * 10 + d;
                nsig += mant != 0;
                exp10--;
            } else {
                inexact |= d != 0;
            }
            q++;
        }
        ndigits += (size_t)(q - frac_start);
    }
    if (ndigits == 0)
        return lp__bad_value(c, f, s);
    if (q < eol && (*q == 'e' || *q == 'E')) {
        q++;
        bool eneg = false;
        if (q < eol && (*q == '+' || *q == '-')) {
            eneg = *q == '-';
            q++;
        }
        const char *exp_start = q;
        int64_t e = 0;
        while (q < eol && (lp__class[(unsigned char)*q] & LP_C_DIGIT)) {
            if (e < 100000) /* far past any double; only decides fast or slow path */
                e = e * 10 + (*q - '0');
            q++;
        }
        if (q == exp_start)
            return lp__bad_value(c, f, s);
        exp10 += eneg ? -e : e;
    }
    if (q < eol && !(lp__class[(unsigned char)*q] & LP_C_VALUE_END))
        return lp__bad_value(c, f, s);
    *end = q;
    f->type = STELE_LP_FLOAT;

#if LP_FAST_FLOAT
    if (!inexact && mant <= LP_TWO_POW_53) {
        if (mant == 0) {
            f->v.f = neg ? -0.0 : 0.0;
            return 0;
        }
        double d = (double)mant;
        bool fast = true;
        if (exp10 >= 0 && exp10 <= 22) {
            d *= lp__pow10[exp10];
        } else if (exp10 < 0 && exp10 >= -22) {
            d /= lp__pow10[-exp10];
        } else if (exp10 > 22 && exp10 <= 22 + 18) {
            /* 12e30 = 12000000000 · 10^22: exact when the widened significand still
             * fits 53 bits. */
            uint64_t m = mant;
            for (int64_t k = exp10 - 22; k > 0 && m <= LP_TWO_POW_53; k--)
                m *= 10;
            if (m <= LP_TWO_POW_53)
                d = (double)m * lp__pow10[22];
            else
                fast = false;
        } else {
            fast = false;
        }
        if (fast) {
            f->v.f = neg ? -d : d;
            return 0;
        }
    }
#else
    (void)inexact;
    (void)mant;
#endif

    /* Slow path: strtod_l on a NUL-terminated copy, in scratch past the line's strings
     * (see the sizing note at the top). */
    stele_lp_parser *p = c->p;
    size_t n = (size_t)(q - s);
    if (p->scratch_used + n + 1 > p->scratch_cap)
        return lp__fail(c, "internal error: number too long for the parser's scratch buffer");
    char *copy = p->scratch + p->scratch_used;
    memcpy(copy, s, n);
    copy[n] = '\0';
    char *stop = NULL;
    double d = strtod_l(copy, &stop, p->c_locale);
    if (stop != copy + n)
        return lp__bad_value(c, f, s);
    if (isinf(d))
        return lp__fail(c,
                        "float value for field %s is out of range: its magnitude exceeds "
                        "the largest 64-bit float",
                        lp__quote(qk, f->key.ptr, f->key.len));
    f->v.f = d;
    return 0;
}

/* ---- string and boolean values ----------------------------------------------------- */

/* The closing quote in [from, e) of a string whose contents start at `open`: the first
 * '"' preceded by an even run of backslashes (each \\ pair is one escaped backslash). */
static const char *lp__find_close_quote(const char *open, const char *from, const char *e)
{
    while (from < e) {
        const char *q = memchr(from, '"', (size_t)(e - from));
        if (!q)
            return NULL;
        const char *b = q;
        while (b > open && b[-1] == '\\')
            b--;
        if (((q - b) & 1) == 0)
            return q;
        from = q + 1;
    }
    return NULL;
}

static int lp__parse_string(lp_cursor *c, const char *s, stele_lp_field *f, const char **end)
{
    stele_lp_parser *p = c->p;
    const char *open = s + 1;
    char qk[LP_QUOTE_CAP];

    const char *close = lp__find_close_quote(open, open, c->eol);
    bool spans_lines = false;
    if (!close && c->eol < c->buf_end) {
        /* The string holds a newline: the line goes on after the closing quote. */
        close = lp__find_close_quote(open, c->eol, c->buf_end);
        spans_lines = close != NULL;
    }
    if (!close)
        return lp__fail(c, "unterminated string value for field %s: no closing '\"'",
                        lp__quote(qk, f->key.ptr, f->key.len));
    const char *after = close + 1;
    if (spans_lines) {
        const char *nl = memchr(after, '\n', (size_t)(c->buf_end - after));
        c->next = nl ? nl + 1 : c->buf_end;
        c->eol = nl ? nl : c->buf_end;
        if (c->eol > after && c->eol[-1] == '\r')
            c->eol--;
        if ((size_t)(c->eol - c->start) > p->limits.max_line_len)
            return lp__fail(c,
                            "line is %zu bytes long (string field %s spans lines), over the "
                            "limit of %u",
                            (size_t)(c->eol - c->start), lp__quote(qk, f->key.ptr, f->key.len),
                            p->limits.max_line_len);
    }

    size_t raw = (size_t)(close - open);
    f->type = STELE_LP_STRING;
    if (!memchr(open, '\\', raw)) {
        f->v.s.ptr = open;
        f->v.s.len = (uint32_t)raw;
    } else {
        char *dst = p->scratch + p->scratch_used, *d = dst;
        for (const char *r = open; r < close;) {
            if (*r == '\\' && r + 1 < close && (r[1] == '"' || r[1] == '\\'))
                r++;
            *d++ = *r++;
        }
        f->v.s.ptr = dst;
        f->v.s.len = (uint32_t)(d - dst);
        p->scratch_used += (size_t)(d - dst);
    }
    if (f->v.s.len > p->limits.max_value_len)
        return lp__fail(c, "string value for field %s is %u bytes, over the limit of %u",
                        lp__quote(qk, f->key.ptr, f->key.len), f->v.s.len, p->limits.max_value_len);

    /* From here on, errors are on the physical line where the string ends. */
    if (spans_lines)
        for (const char *r = open; (r = memchr(r, '\n', (size_t)(close - r))) != NULL; r++)
            c->newlines++;
    if (after < c->eol && !(lp__class[(unsigned char)*after] & LP_C_VALUE_END))
        return lp__fail(c,
                        "unexpected text after the string value of field %s: expected ',' "
                        "or ' ' after the closing quote",
                        lp__quote(qk, f->key.ptr, f->key.len));
    *end = after;
    return 0;
}

static int lp__parse_bool(lp_cursor *c, const char *s, stele_lp_field *f, const char **end)
{
    const char *e = lp__value_end(s, c->eol);
    size_t n = (size_t)(e - s);
    bool ok = false, v = false;

    if (n == 1) {
        ok = true;
        v = *s == 't' || *s == 'T';
    } else if (n == 4) {
        ok = !memcmp(s, "true", 4) || !memcmp(s, "True", 4) || !memcmp(s, "TRUE", 4);
        v = true;
    } else if (n == 5) {
        ok = !memcmp(s, "false", 5) || !memcmp(s, "False", 5) || !memcmp(s, "FALSE", 5);
    }
    if (!ok)
        return lp__bad_value(c, f, s);
    f->type = STELE_LP_BOOL;
    f->v.b = v;
    *end = e;
    return 0;
}

/* ---- tag sorting and field dedup --------------------------------------------------- */

static void lp__insertion_sort_tags(stele_lp_tag *t, uint32_t n)
{
    for (uint32_t i = 1; i < n; i++) {
        if (lp__str_cmp(t[i - 1].key, t[i].key) <= 0)
            continue;
        stele_lp_tag x = t[i];
        uint32_t j = i;
        while (j > 0 && lp__str_cmp(t[j - 1].key, x.key) > 0) {
            t[j] = t[j - 1];
            j--;
        }
        t[j] = x;
    }
}

/* Bottom-up merge sort of t[0..n) using aux[0..n); O(n log n) for long tag sets. */
static void lp__merge_sort_tags(stele_lp_tag *t, stele_lp_tag *aux, uint32_t n)
{
    const uint32_t run = 8;
    for (uint32_t i = 0; i < n; i += run)
        lp__insertion_sort_tags(t + i, n - i < run ? n - i : run);
    stele_lp_tag *src = t, *dst = aux;
    for (uint32_t width = run; width < n; width *= 2) {
        for (uint32_t lo = 0; lo < n; lo += 2 * width) {
            uint32_t mid = lo + width < n ? lo + width : n;
            uint32_t hi = lo + 2 * width < n ? lo + 2 * width : n;
            uint32_t a = lo, b = mid, k = lo;
            while (a < mid && b < hi)
                dst[k++] = lp__str_cmp(src[b].key, src[a].key) < 0 ? src[b++] : src[a++];
            while (a < mid)
                dst[k++] = src[a++];
            while (b < hi)
                dst[k++] = src[b++];
        }
        stele_lp_tag *swap = src;
        src = dst;
        dst = swap;
    }
    if (src != t)
        memcpy(t, src, (size_t)n * sizeof(*t));
}

static int lp__sort_tags(lp_cursor *c, stele_lp_tag *t, uint32_t n)
{
    bool sorted = true;
    for (uint32_t i = 1; i < n && sorted; i++)
        sorted = lp__str_cmp(t[i - 1].key, t[i].key) < 0;
    if (sorted)
        return 0; /* already sorted and without duplicates: the common case */
    if (n <= LP_SMALL_SET)
        lp__insertion_sort_tags(t, n);
    else
        lp__merge_sort_tags(t, c->p->tags_aux, n);
    for (uint32_t i = 1; i < n; i++) {
        if (lp__str_eq(t[i - 1].key, t[i].key)) {
            char qk[LP_QUOTE_CAP];
            return lp__fail(c, "duplicate tag key %s: a tag may appear once per line",
                            lp__quote(qk, t[i].key.ptr, t[i].key.len));
        }
    }
    return 0;
}

static uint32_t lp__hash(stele_lp_str s)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (uint32_t i = 0; i < s.len; i++)
        h = (h ^ (unsigned char)s.ptr[i]) * 16777619u;
    return h;
}

/* Removes fields whose key appears again later in the line (last wins), keeping line
 * order; returns the new count. */
static uint32_t lp__dedup_fields(stele_lp_parser *p, stele_lp_field *f, uint32_t n)
{
    bool any = false;
    /* Mark the dropped ones by clearing their key pointer. */
    if (n <= LP_SMALL_SET) {
        for (uint32_t i = 0; i + 1 < n; i++)
            for (uint32_t j = i + 1; j < n; j++)
                if (lp__str_eq(f[i].key, f[j].key)) {
                    f[i].key.ptr = NULL;
                    any = true;
                    break;
                }
    } else {
        if (++p->dedup_generation == 0) { /* wrapped: clear stale slots once */
            memset(p->dedup, 0, ((size_t)p->dedup_mask + 1) * sizeof(*p->dedup));
            p->dedup_generation = 1;
        }
        uint32_t gen = p->dedup_generation;
        for (uint32_t i = n; i-- > 0;) {
            uint32_t h = lp__hash(f[i].key) & p->dedup_mask;
            for (;; h = (h + 1) & p->dedup_mask) {
                lp_dedup_slot *slot = &p->dedup[h];
                if (slot->generation != gen) {
                    slot->generation = gen;
                    slot->field = i;
                    break;
                }
                if (lp__str_eq(f[slot->field].key, f[i].key)) {
                    f[i].key.ptr = NULL;
                    any = true;
                    break;
                }
            }
        }
    }
    if (!any)
        return n;
    uint32_t k = 0;
    for (uint32_t i = 0; i < n; i++)
        if (f[i].key.ptr)
            f[k++] = f[i];
    return k;
}

/* ---- one line ---------------------------------------------------------------------- */

static int lp__parse_line(lp_cursor *c, stele_lp_line *line)
{
    stele_lp_parser *p = c->p;
    const stele_lp_limits *lim = &p->limits;
    const char *s = c->start;
    int rc;
    char q1[LP_QUOTE_CAP];

    while (*s == ' ' || *s == '\t')
        s++; /* the caller saw a non-blank, non-comment line */

    /* Measurement. */
    s = lp__read_name(c, s, LP_C_MEAS_END, &line->measurement);
    if (line->measurement.len == 0)
        return lp__fail(c, "missing measurement name at the start of the line");
    if (line->measurement.len > lim->max_name_len)
        return lp__fail(c, "measurement name %s is %u bytes, over the limit of %u",
                        lp__quote(q1, line->measurement.ptr, line->measurement.len),
                        line->measurement.len, lim->max_name_len);

    /* Tags. */
    uint32_t ntags = 0;
    while (s < c->eol && *s == ',') {
        stele_lp_tag *t = &p->tags[ntags];
        if (ntags == lim->max_tags)
            return lp__fail(c, "too many tags: more than the limit of %u per line", lim->max_tags);
        s = lp__read_name(c, s + 1, LP_C_KEY_END, &t->key);
        if (t->key.len == 0)
            return lp__fail(c, "empty tag key after ',' in the tags of measurement %s",
                            lp__quote(q1, line->measurement.ptr, line->measurement.len));
        if (s == c->eol || *s != '=')
            return lp__fail(c, "tag key %s has no value: expected key=value after ','",
                            lp__quote(q1, t->key.ptr, t->key.len));
        if (t->key.len > lim->max_name_len)
            return lp__fail(c, "tag key %s is %u bytes, over the limit of %u",
                            lp__quote(q1, t->key.ptr, t->key.len), t->key.len, lim->max_name_len);
        s = lp__read_name(c, s + 1, LP_C_KEY_END, &t->value);
        if (s < c->eol && *s == '=')
            return lp__fail(c, "unescaped '=' in the value of tag %s: write it as \\=",
                            lp__quote(q1, t->key.ptr, t->key.len));
        if (t->value.len == 0)
            return lp__fail(c, "empty value for tag %s: leave the tag out instead",
                            lp__quote(q1, t->key.ptr, t->key.len));
        if (t->value.len > lim->max_value_len)
            return lp__fail(c, "value of tag %s is %u bytes, over the limit of %u",
                            lp__quote(q1, t->key.ptr, t->key.len), t->value.len,
                            lim->max_value_len);
        ntags++;
    }
    while (s < c->eol && (*s == ' ' || *s == '\t'))
        s++;
    if (s == c->eol)
        return lp__fail(c,
                        "missing fields after measurement %s: a line needs at least one "
                        "field, as in \"cpu,host=a value=1\"",
                        lp__quote(q1, line->measurement.ptr, line->measurement.len));

    /* Fields. */
    uint32_t nfields = 0;
    for (;;) {
        if (nfields == lim->max_fields)
            return lp__fail(c, "too many fields: more than the limit of %u per line",
                            lim->max_fields);
        stele_lp_field *f = &p->fields[nfields];
        s = lp__read_name(c, s, LP_C_KEY_END, &f->key);
        if (f->key.len == 0)
            return lp__fail(c, nfields ? "empty field key after ',' (a trailing comma?)"
                                       : "empty field key before '='");
        if (s == c->eol || *s != '=')
            return lp__fail(c,
                            "field %s has no value: expected key=value pairs separated by "
                            "',' (no spaces)",
                            lp__quote(q1, f->key.ptr, f->key.len));
        if (f->key.len > lim->max_name_len)
            return lp__fail(c, "field key %s is %u bytes, over the limit of %u",
                            lp__quote(q1, f->key.ptr, f->key.len), f->key.len, lim->max_name_len);
        s++;
        if (s == c->eol || (lp__class[(unsigned char)*s] & LP_C_VALUE_END))
            return lp__fail(c, "missing value for field %s after '='",
                            lp__quote(q1, f->key.ptr, f->key.len));
        switch (*s) {
        case '"':
            rc = lp__parse_string(c, s, f, &s);
            break;
        case 't':
        case 'T':
        case 'f':
        case 'F':
            rc = lp__parse_bool(c, s, f, &s);
            break;
        default:
            rc = lp__parse_number(c, s, f, &s);
            break;
        }
        if (rc)
            return rc;
        nfields++;
        if (s < c->eol && *s == ',') {
            s++;
            continue;
        }
        break;
    }

    /* Timestamp. */
    while (s < c->eol && (*s == ' ' || *s == '\t'))
        s++;
    line->has_timestamp = s < c->eol;
    line->timestamp = 0;
    if (line->has_timestamp) {
        const char *ts = s;
        bool range;
        s = lp__value_end(s, c->eol);
        if (!lp__parse_i64(ts, s, &line->timestamp, &range)) {
            if (range)
                return lp__fail(c,
                                "timestamp %s is out of range: it must fit a signed 64-bit "
                                "integer",
                                lp__quote(q1, ts, (size_t)(s - ts)));
            if (memchr(ts, '=', (size_t)(s - ts)))
                return lp__fail(c,
                                "invalid timestamp %s: separate fields with ',' not with a "
                                "space",
                                lp__quote(q1, ts, (size_t)(s - ts)));
            return lp__fail(c, "invalid timestamp %s: expected an integer",
                            lp__quote(q1, ts, (size_t)(s - ts)));
        }
        while (s < c->eol && (*s == ' ' || *s == '\t'))
            s++;
        if (s < c->eol)
            return lp__fail(c, "unexpected text %s after the timestamp",
                            lp__quote(q1, s, (size_t)(c->eol - s)));
    }

    rc = lp__sort_tags(c, p->tags, ntags);
    if (rc)
        return rc;
    line->ntags = ntags;
    line->nfields = lp__dedup_fields(p, p->fields, nfields);
    line->line_no = c->line_no;
    return 0;
}

int stele_lp_parse(stele_lp_parser *p, const char *buf, size_t len, stele_lp_line_fn fn, void *ctx,
                   stele_lp_error *err)
{
    if (err) {
        err->line_no = 0;
        err->message[0] = '\0';
    }
    if (!p || !fn || (!buf && len)) {
        if (err)
            snprintf(err->message, sizeof(err->message),
                     "internal error: stele_lp_parse called without a parser, callback "
                     "or body");
        return -EINVAL;
    }

    if (len > PTRDIFF_MAX) { /* no such object exists; keeps pointer differences sane */
        if (err)
            snprintf(err->message, sizeof(err->message), "body of %zu bytes is too large", len);
        return -EINVAL;
    }

    if (len == 0)
        return 0;

    const char *s = buf, *end = buf + len;
    uint32_t line_no = 1;
    while (s < end) {
        const char *start = s;
        while (s < end && (*s == ' ' || *s == '\t'))
            s++;
        size_t rest = len - (size_t)(s - buf);
        const char *nl = memchr(s, '\n', rest);
        const char *eol = nl ? nl : end;
        const char *next = nl ? nl + 1 : end;
        if (eol > s && eol[-1] == '\r')
            eol--;
        if (s == eol || *s == '#') { /* blank line or comment */
            s = next;
            line_no++;
            continue;
        }
        lp_cursor c = {
            .p = p,
            .start = start,
            .eol = eol,
            .next = next,
            .buf_end = end,
            .line_no = line_no,
            .newlines = 0,
            .err = err,
        };
        if ((size_t)(eol - start) > p->limits.max_line_len)
            return lp__fail(&c, "line is %zu bytes long, over the limit of %u",
                            (size_t)(eol - start), p->limits.max_line_len);
        p->scratch_used = 0;
        int rc = lp__parse_line(&c, &p->line);
        if (rc)
            return rc;
        rc = fn(ctx, &p->line);
        if (rc)
            return rc;
        line_no += 1 + c.newlines;
        s = c.next;
    }
    return 0;
}
