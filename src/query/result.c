/*
 * result.c — query results as Prometheus' JSON "data" object and as a text table.
 *
 * Floats print as Prometheus' JSON encoder does: the shortest digits that read back to
 * the same float64, in Go's 'f' form, or 'e' form below 1e-6 and from 1e21 — because
 * that is what Prometheus returns and what clients compare against. Timestamps are seconds with
 * millisecond resolution, trailing zeros dropped.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/text.h"
#include "query/query_internal.h"
#include "stele/query.h"

/* Decimal digits of u into out (NUL-terminated); returns the length. snprintf is too
 * slow for the hundreds of thousands of numbers a range query can return. */
static int u64_digits(unsigned long long u, char *out)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    for (int i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    out[n] = '\0';
    return n;
}

/* Writes "[-]d.ddde<exp>" for mantissa digits and decimal exponent. */
static void sci_string(bool neg, const char *digits, int e10, char *sci)
{
    size_t n = 0;
    if (neg)
        sci[n++] = '-';
    sci[n++] = digits[0];
    sci[n++] = '.';
    for (const char *d = digits + 1; *d; d++)
        sci[n++] = *d;
    sci[n++] = 'e';
    if (e10 < 0) {
        sci[n++] = '-';
        e10 = -e10;
    }
    n += (size_t)u64_digits((unsigned long long)e10, sci + n);
    sci[n] = '\0';
}

/* The shortest round-trip digits of a normal double as "[-]d.ddde±X" in sci, computed
 * in x87 extended precision (64-bit mantissa): |v| × 10^k is exact to ~1e-19, so the
 * 15-, 16- and 17-digit roundings are correct unless the scaled value lies within a
 * small margin of a rounding boundary; then (a few percent of values) -1 sends the
 * caller to the exact printf path. Each candidate is verified to read back to v with an
 * exact double operation, so a wrong result is impossible; only speed depends on luck. */
static int shortest_fast(double v, char *sci, size_t cap)
{
    static const double exact10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                     1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                     1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
    double a = fabs(v);
    if (!(a >= 1e-7 && a < 1e22))
        return -1;
    /* Powers of ten exact in the 64-bit mantissa of long double (5^27 < 2^64). */
    static const long double p10[] = {1e0L,  1e1L,  1e2L,  1e3L,  1e4L,  1e5L,  1e6L,
                                      1e7L,  1e8L,  1e9L,  1e10L, 1e11L, 1e12L, 1e13L,
                                      1e14L, 1e15L, 1e16L, 1e17L, 1e18L, 1e19L, 1e20L,
                                      1e21L, 1e22L, 1e23L, 1e24L, 1e25L, 1e26L, 1e27L};
    int e10 = (int)floor(log10(a));
    int k = 16 - e10; /* 1e-7 <= a < 1e22: k in -6 .. 23 */
    long double x17 = k >= 0 ? (long double)a * p10[k] : (long double)a / p10[-k];
    if (x17 < 1e16L) { /* log10 rounded the wrong way near a power of ten */
        e10--;
        x17 *= 10;
    } else if (x17 >= 1e17L) {
        e10++;
        x17 /= 10;
    }
    for (int p = 15; p <= 17; p++) {
        long double x = x17 / p10[17 - p];
        long double fl = floorl(x), frac = x - fl;
        if (fabsl(frac - 0.5L) < 0.02L)
            return -1; /* too close to call in extended precision */
        unsigned long long m = (unsigned long long)fl + (frac > 0.5L);
        int e = e10;
        unsigned long long limit = p == 15   ? 1000000000000000ull
                                   : p == 16 ? 10000000000000000ull
                                             : 100000000000000000ull;
        if (m >= limit) {
            m /= 10;
            e++;
        }
        int sc = e - (p - 1);
        /* 17 correctly rounded digits always read back: no check needed. */
        if (p < 17) {
            if (m >= (1ull << 53) || sc < -22 || sc > 22)
                return -1; /* cannot verify cheaply; a longer form might be wrong */
            double back = sc >= 0 ? (double)m * exact10[sc] : (double)m / exact10[-sc];
            if (back != a)
                continue;
        }
        char digits[24];
        u64_digits(m, digits);
        (void)cap;
        sci_string(v < 0, digits, e, sci);
        return 0;
    }
    return -1;
}

int stele_format_prom_float(double v, char *buf, size_t cap)
{
    if (isnan(v))
        return snprintf(buf, cap, "NaN");
    if (isinf(v))
        return snprintf(buf, cap, v > 0 ? "+Inf" : "-Inf");
    if (v == 0)
        return snprintf(buf, cap, signbit(v) ? "-0" : "0");
    /* Fast path for short decimals (most sensor data): the smallest d with
     * v = m / 10^d exactly; the division being correctly rounded like strtod, the
     * digits of m with the point d places from the right read back to v, and no shorter
     * form exists since every smaller d failed. */
    static const double pow10[] = {1, 10, 100, 1e3, 1e4, 1e5, 1e6};
    if (fabs(v) < 1e15) {
        for (int d = 0; d < 7; d++) {
            double m = nearbyint(v * pow10[d]);
            if (fabs(m) >= 9e15 || m / pow10[d] != v)
                continue;
            char digits[24];
            int nd = u64_digits((unsigned long long)fabs(m), digits);
            size_t n = 0;
            if (v < 0)
                buf[n++] = '-';
            /* At most 1 + 2 + 6 + 16 bytes: well within any cap callers use (≥ 400). */
            if (nd <= d) {
                buf[n++] = '0';
                buf[n++] = '.';
                for (int z = 0; z < d - nd; z++)
                    buf[n++] = '0';
                memcpy(buf + n, digits, (size_t)nd);
                n += (size_t)nd;
            } else if (d == 0) {
                memcpy(buf + n, digits, (size_t)nd);
                n += (size_t)nd;
            } else {
                memcpy(buf + n, digits, (size_t)(nd - d));
                n += (size_t)(nd - d);
                buf[n++] = '.';
                memcpy(buf + n, digits + nd - d, (size_t)d);
                n += (size_t)d;
            }
            buf[n] = '\0';
            return (int)n;
        }
    }
    /* Shortest digits that read back exactly: take the 17 significant digits (always
     * enough), then try them rounded to 15 and 16. A value with a representation of at
     * most 15 digits rounds at 15 to that representation padded with zeros (a double is
     * exact to ~15.95 digits), which the trimming below removes. Candidates are checked
     * with one exact multiplication or division when both factors are exact doubles
     * (Clinger's fast path), strtod otherwise. Subnormals have fewer significant digits
     * and go through strtod from one digit up. */
    char sci[40];
    if (fpclassify(v) == FP_SUBNORMAL) {
        int prec;
        for (prec = 0; prec < 17; prec++) {
            snprintf(sci, sizeof(sci), "%.*e", prec, v);
            if (strtod(sci, NULL) == v)
                break;
        }
        if (prec == 17)
            snprintf(sci, sizeof(sci), "%.16e", v);
    } else {
        static const double exact10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                         1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                         1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
        if (shortest_fast(v, sci, sizeof(sci)) == 0)
            goto have_sci;
        /* 20 correctly rounded digits: rounding them to 15..17 is correct rounding
         * except in exact ties at the 20th digit, which a double cannot produce. */
        snprintf(sci, sizeof(sci), "%.19e", v);
        const char *e = strchr(sci, 'e');
        int exp10 = atoi(e + 1);
        char d17[21];
        int k = 0;
        for (const char *q = sci; q < e; q++)
            if (*q >= '0' && *q <= '9')
                d17[k++] = *q;
        for (int p = 15; p <= 17; p++) {
            /* Round the digits to p (half up), as an integer mantissa. A 5 followed by
             * zeros may be a rounded-up tail or a true tie: printf rounds the exact
             * value correctly (ties to even, as Go), so ask it in that case. */
            bool tie = d17[p] == '5';
            for (int i = p + 1; tie && i < k; i++)
                tie = d17[i] == '0';
            unsigned long long m = 0;
            int e10 = exp10;
            if (tie) {
                char exact[40];
                snprintf(exact, sizeof(exact), "%.*e", p - 1, fabs(v));
                const char *ee = strchr(exact, 'e');
                for (const char *q = exact; q < ee; q++)
                    if (*q >= '0' && *q <= '9')
                        m = m * 10 + (unsigned long long)(*q - '0');
                e10 = atoi(ee + 1);
            } else {
                for (int i = 0; i < p; i++)
                    m = m * 10 + (unsigned long long)(d17[i] - '0');
                if (d17[p] >= '5') {
                    m++;
                    if (m == (p == 15   ? 1000000000000000ull
                              : p == 16 ? 10000000000000000ull
                                        : 100000000000000000ull)) {
                        m /= 10;
                        e10++;
                    }
                }
            }
            int scale = e10 - (p - 1); /* value = m × 10^scale */
            double back;
            if (m < (1ull << 53) && scale >= -22 && scale <= 22)
                back = scale >= 0 ? (double)m * exact10[scale] : (double)m / exact10[-scale];
            else {
                char cand[40];
                snprintf(cand, sizeof(cand), "%llue%d", m, scale);
                back = strtod(cand, NULL);
            }
            if (back == fabs(v) || p == 17) {
                char digits[24];
                u64_digits(m, digits);
                sci_string(v < 0, digits, e10, sci);
                break;
            }
        }
    }
have_sci:; /* a label cannot precede a declaration in C17 */
    /* sci = [-]d[.ddd]e[+-]XX → digits and exponent. */
    char digits[24];
    size_t nd = 0;
    const char *p = sci;
    bool neg = *p == '-';
    if (neg)
        p++;
    for (; *p && *p != 'e'; p++)
        if (*p >= '0' && *p <= '9')
            digits[nd++] = *p;
    int exp10 = atoi(p + 1);
    while (nd > 1 && digits[nd - 1] == '0')
        nd--;
    /* Prometheus (jsonutil.MarshalValue) switches to Go's 'e' format below 1e-6 and
     * from 1e21: d[.ddd]e±XX with at least two exponent digits. */
    if (fabs(v) < 1e-6 || fabs(v) >= 1e21) {
        size_t n = 0;
        if (neg)
            buf[n++] = '-';
        buf[n++] = digits[0];
        if (nd > 1) {
            buf[n++] = '.';
            memcpy(buf + n, digits + 1, nd - 1);
            n += nd - 1;
        }
        n += (size_t)snprintf(buf + n, cap - n, "e%c%02d", exp10 < 0 ? '-' : '+', abs(exp10));
        return (int)n;
    }
    /* Value = 0.d1d2… × 10^(exp10+1). */
    int point = exp10 + 1; /* digits before the decimal point */
    size_t n = 0;
    if (neg && n < cap)
        buf[n++] = '-';
    if (point <= 0) {
        n += (size_t)snprintf(buf + n, cap > n ? cap - n : 0, "0.");
        for (int i = 0; i < -point && n < cap; i++)
            buf[n++] = '0';
        for (size_t i = 0; i < nd && n < cap; i++)
            buf[n++] = digits[i];
    } else {
        for (int i = 0; i < point && n < cap; i++)
            buf[n++] = (size_t)i < nd ? digits[i] : '0';
        if ((size_t)point < nd) {
            if (n < cap)
                buf[n++] = '.';
            for (size_t i = (size_t)point; i < nd && n < cap; i++)
                buf[n++] = digits[i];
        }
    }
    if (n < cap)
        buf[n] = '\0';
    else if (cap)
        buf[cap - 1] = '\0';
    return (int)n;
}

typedef struct {
    char *data;
    size_t len, cap;
    bool failed;
} sbuf;

static void sb_reserve(sbuf *b, size_t extra)
{
    if (b->failed || b->len + extra + 1 <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra + 1)
        cap *= 2;
    char *d = realloc(b->data, cap);
    if (!d) {
        b->failed = true;
        return;
    }
    b->data = d;
    b->cap = cap;
}

static void sb_put(sbuf *b, const char *s, size_t n)
{
    sb_reserve(b, n);
    if (b->failed)
        return;
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static void sb_str(sbuf *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

static void sb_json_string(sbuf *b, const char *s, size_t n)
{
    sb_reserve(b, n * 6 + 2);
    if (b->failed)
        return;
    b->data[b->len++] = '"';
    b->len += json_escape_bytes(s, n, b->data + b->len);
    b->data[b->len++] = '"';
    b->data[b->len] = '\0';
}

/* Milliseconds as Prometheus prints timestamps: seconds, up to 3 decimals. */
static void sb_time(sbuf *b, int64_t ns)
{
    int64_t ms = ns / 1000000;
    if (ns % 1000000 < 0)
        ms--;
    int64_t sec = ms / 1000, rem = ms % 1000;
    if (rem < 0) {
        rem += 1000;
        sec--;
    }
    char out[40];
    size_t n = 0;
    if (sec < 0) {
        out[n++] = '-';
        n += (size_t)u64_digits((unsigned long long)-(sec + (rem ? 1 : 0)), out + n);
        rem = rem ? 1000 - rem : 0;
    } else {
        n += (size_t)u64_digits((unsigned long long)sec, out + n);
    }
    if (rem) {
        out[n++] = '.';
        out[n++] = (char)('0' + rem / 100);
        out[n++] = (char)('0' + rem / 10 % 10);
        out[n++] = (char)('0' + rem % 10);
        while (out[n - 1] == '0')
            n--;
    }
    sb_put(b, out, n);
}

static void sb_value(sbuf *b, double v)
{
    sb_reserve(b, 404);
    if (b->failed)
        return;
    b->data[b->len++] = '"';
    b->len += (size_t)stele_format_prom_float(v, b->data + b->len, 400);
    b->data[b->len++] = '"';
    b->data[b->len] = '\0';
}

static void sb_metric(sbuf *b, const lset *ls)
{
    stele_label l[STELE_MAX_LABELS];
    size_t n = lset_decode(ls, l);
    sb_put(b, "{", 1);
    for (size_t i = 0; i < n; i++) {
        if (i)
            sb_put(b, ",", 1);
        sb_json_string(b, l[i].name, l[i].name_len);
        sb_put(b, ":", 1);
        sb_json_string(b, l[i].value, l[i].value_len);
    }
    sb_put(b, "}", 1);
}

static int64_t result_time(const stele_query_result *r, size_t k)
{
    return r->start + (int64_t)k * r->step;
}

int stele_query_result_json(const stele_query_result *r, char **json, size_t *len)
{
    sbuf b = {0};
    const value *v = &r->v;
    if (!r->range_query) {
        switch (v->type) {
        case PQ_TYPE_SCALAR:
            sb_str(&b, "{\"resultType\":\"scalar\",\"result\":[");
            sb_time(&b, r->start);
            sb_put(&b, ",", 1);
            sb_value(&b, v->scalar[0]);
            sb_str(&b, "]}");
            break;
        case PQ_TYPE_STRING:
            sb_str(&b, "{\"resultType\":\"string\",\"result\":[");
            sb_time(&b, r->start);
            sb_put(&b, ",", 1);
            sb_json_string(&b, v->str, strlen(v->str));
            sb_str(&b, "]}");
            break;
        case PQ_TYPE_VECTOR: {
            sb_str(&b, "{\"resultType\":\"vector\",\"result\":[");
            bool first = true;
            for (size_t i = 0; i < v->n; i++) {
                if (!v->s[i].ok[0])
                    continue;
                if (!first)
                    sb_put(&b, ",", 1);
                first = false;
                sb_str(&b, "{\"metric\":");
                sb_metric(&b, &v->s[i].ls);
                sb_str(&b, ",\"value\":[");
                sb_time(&b, r->start);
                sb_put(&b, ",", 1);
                sb_value(&b, v->s[i].v[0]);
                sb_str(&b, "]}");
            }
            sb_str(&b, "]}");
            break;
        }
        case PQ_TYPE_MATRIX:
            sb_str(&b, "{\"resultType\":\"matrix\",\"result\":[");
            for (size_t i = 0; i < v->nraw; i++) {
                if (i)
                    sb_put(&b, ",", 1);
                sb_str(&b, "{\"metric\":");
                sb_metric(&b, &v->raw[i].ls);
                sb_str(&b, ",\"values\":[");
                for (size_t j = 0; j < v->raw[i].n; j++) {
                    sb_str(&b, j ? ",[" : "[");
                    sb_time(&b, v->raw[i].ts[j]);
                    sb_put(&b, ",", 1);
                    sb_value(&b, v->raw[i].v[j]);
                    sb_put(&b, "]", 1);
                }
                sb_str(&b, "]}");
            }
            sb_str(&b, "]}");
            break;
        }
    } else {
        sb_str(&b, "{\"resultType\":\"matrix\",\"result\":[");
        if (v->type == PQ_TYPE_SCALAR) {
            sb_str(&b, "{\"metric\":{},\"values\":[");
            for (size_t k = 0; k < r->nsteps; k++) {
                sb_str(&b, k ? ",[" : "[");
                sb_time(&b, result_time(r, k));
                sb_put(&b, ",", 1);
                sb_value(&b, v->scalar[k]);
                sb_put(&b, "]", 1);
            }
            sb_str(&b, "]}");
        } else {
            bool first_series = true;
            for (size_t i = 0; i < v->n; i++) {
                bool any = false;
                for (size_t k = 0; k < r->nsteps && !any; k++)
                    any = v->s[i].ok[k];
                if (!any)
                    continue;
                if (!first_series)
                    sb_put(&b, ",", 1);
                first_series = false;
                sb_str(&b, "{\"metric\":");
                sb_metric(&b, &v->s[i].ls);
                sb_str(&b, ",\"values\":[");
                bool first = true;
                for (size_t k = 0; k < r->nsteps; k++) {
                    if (!v->s[i].ok[k])
                        continue;
                    sb_str(&b, first ? "[" : ",[");
                    first = false;
                    sb_time(&b, result_time(r, k));
                    sb_put(&b, ",", 1);
                    sb_value(&b, v->s[i].v[k]);
                    sb_put(&b, "]", 1);
                }
                sb_str(&b, "]}");
            }
        }
        sb_str(&b, "]}");
    }
    if (b.failed) {
        free(b.data);
        return -ENOMEM;
    }
    *json = b.data;
    *len = b.len;
    return 0;
}
