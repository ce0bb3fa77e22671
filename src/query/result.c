/*
 * result.c — query results as Prometheus' JSON "data" object and as a text table.
 *
 * Floats print as Go's strconv.FormatFloat(v, 'f', -1, 64) does — the shortest digits
 * that read back to the same float64, never in exponent form — because that is what
 * Prometheus returns and what clients compare against. Timestamps are seconds with
 * millisecond resolution, trailing zeros dropped.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "query/query_internal.h"
#include "stele/query.h"

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
            int nd = snprintf(digits, sizeof(digits), "%lld", (long long)fabs(m));
            size_t n = 0;
            if (v < 0)
                buf[n++] = '-';
            if (nd <= d) {
                buf[n++] = '0';
                buf[n++] = '.';
                for (int z = 0; z < d - nd; z++)
                    buf[n++] = '0';
                n += (size_t)snprintf(buf + n, cap - n, "%s", digits);
            } else if (d == 0) {
                n += (size_t)snprintf(buf + n, cap - n, "%s", digits);
            } else {
                n += (size_t)snprintf(buf + n, cap - n, "%.*s.%s", nd - d, digits, digits + nd - d);
            }
            return (int)n;
        }
    }
    /* Shortest scientific form that reads back exactly. A value with a representation
     * of at most 15 significant digits rounds, at 15 digits, to that representation
     * padded with zeros (a double is exact to ~15.95 digits), so trying 15, 16 and 17
     * digits and trimming trailing zeros finds the shortest in at most three tries.
     * Subnormals have fewer significant digits, so they search from one. */
    char sci[40];
    int prec;
    for (prec = fpclassify(v) == FP_SUBNORMAL ? 0 : 14; prec < 17; prec++) {
        snprintf(sci, sizeof(sci), "%.*e", prec, v);
        if (strtod(sci, NULL) == v)
            break;
    }
    if (prec == 17)
        snprintf(sci, sizeof(sci), "%.16e", v);
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

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n > 0)
        sb_put(b, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

static void sb_json_string(sbuf *b, const char *s, size_t n)
{
    sb_reserve(b, n * 6 + 2);
    if (b->failed)
        return;
    b->data[b->len++] = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            b->data[b->len++] = '\\';
            b->data[b->len++] = (char)c;
        } else if (c < 0x20) {
            b->len += (size_t)snprintf(b->data + b->len, 7, "\\u%04x", c);
        } else {
            b->data[b->len++] = (char)c;
        }
    }
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
    if (rem == 0) {
        sb_printf(b, "%" PRId64, sec);
        return;
    }
    char frac[8];
    snprintf(frac, sizeof(frac), "%03d", (int)rem);
    size_t fl = strlen(frac);
    while (fl && frac[fl - 1] == '0')
        frac[--fl] = '\0';
    if (sec == 0 && ns < 0)
        sb_printf(b, "-0.%s", frac);
    else
        sb_printf(b, "%" PRId64 ".%s", sec, frac);
}

static void sb_value(sbuf *b, double v)
{
    char num[400];
    stele_format_prom_float(v, num, sizeof(num));
    sb_put(b, "\"", 1);
    sb_str(b, num);
    sb_put(b, "\"", 1);
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
