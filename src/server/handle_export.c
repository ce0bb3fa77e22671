/*
 * handle_export.c — GET /api/v1/export?match[]=SEL&start=&end= : JSON lines, one object
 * per series, in VictoriaMetrics' export format:
 *   {"metric":{"__name__":"m","k":"v"},"values":[1,2.5],"timestamps":[1700000000000,…]}
 * Timestamps are milliseconds; values print in the shortest form that reads back to
 * the same float64 (non-finite values as the strings "NaN", "+Inf", "-Inf").
 *
 * The response is assembled in memory, bounded by EXPORT_MAX_BYTES; larger exports
 * are refused (422) with advice to narrow the selector or time range.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "common/text.h"
#include "common/hashmap.h"
#include "server/server_internal.h"
#include "stele/selector.h"

/* 1 GiB: a whole day of a 10,000-series plant at 10 s, with room to spare. */
#define EXPORT_MAX_BYTES (1ull << 30)
#define EXPORT_MAX_SELECTORS 16

typedef struct {
    char *data;
    size_t len;
    size_t cap;
    bool overflow;
} out_buf;

static bool out_reserve(out_buf *o, size_t extra)
{
    if (o->overflow)
        return false;
    if (o->len + extra <= o->cap)
        return true;
    if (o->len + extra > EXPORT_MAX_BYTES) {
        o->overflow = true;
        return false;
    }
    size_t cap = o->cap ? o->cap : 65536;
    while (cap < o->len + extra)
        cap *= 2;
    char *d = realloc(o->data, cap);
    if (!d) {
        o->overflow = true;
        return false;
    }
    o->data = d;
    o->cap = cap;
    return true;
}

static void out_json_string(out_buf *o, const char *s, size_t len)
{
    if (!out_reserve(o, len * 6 + 2))
        return;
    o->data[o->len++] = '"';
    o->len += json_escape_bytes(s, len, o->data + o->len);
    o->data[o->len++] = '"';
}

/* Shortest decimal that parses back to exactly v. */
static int format_double(double v, char *buf, size_t cap)
{
    if (isnan(v))
        return snprintf(buf, cap, "\"NaN\"");
    if (isinf(v))
        return snprintf(buf, cap, v > 0 ? "\"+Inf\"" : "\"-Inf\"");
    if (v == 0)
        return snprintf(buf, cap, signbit(v) ? "-0" : "0");
    if (fabs(v) < 1e15 && v == (double)(int64_t)v)
        return snprintf(buf, cap, "%lld", (long long)v);
    /* %.15g is shortest whenever it reads back (trailing zeros are dropped); only
     * subnormals can need fewer digits than that and still read back. */
    for (int prec = fpclassify(v) == FP_SUBNORMAL ? 1 : 15; prec <= 17; prec++) {
        int n = snprintf(buf, cap, "%.*g", prec, v);
        if (prec == 17 || strtod(buf, NULL) == v)
            return n;
    }
    return 0;
}

typedef struct {
    out_buf out;
    hashmap seen; /* series already exported (several selectors may match) */
    char **seen_keys;
    size_t nseen, seen_cap;
    bool dedupe;
} export_ctx;

static int export_series(void *arg, const stele_series_view *s)
{
    export_ctx *x = arg;
    out_buf *o = &x->out;
    size_t start = o->len;
    if (!out_reserve(o, 16))
        return -EMSGSIZE;
    memcpy(o->data + o->len, "{\"metric\":{", 11);
    o->len += 11;
    for (size_t i = 0; i < s->nlabels; i++) {
        if (i)
            o->data[o->len++] = ',';
        out_json_string(o, s->labels[i].name, s->labels[i].name_len);
        if (!out_reserve(o, 1))
            return -EMSGSIZE;
        o->data[o->len++] = ':';
        out_json_string(o, s->labels[i].value, s->labels[i].value_len);
        if (!out_reserve(o, 1))
            return -EMSGSIZE;
    }
    if (o->overflow)
        return -EMSGSIZE;
    /* Several selectors may match the same series: export it once. */
    size_t klen = o->len - start;
    if (x->dedupe) {
        uint64_t h = hashmap_hash(o->data + start, klen);
        if (hashmap_get(&x->seen, h, o->data + start, klen)) {
            o->len = start;
            return 0;
        }
        char *key = malloc(klen);
        if (!key)
            return -ENOMEM;
        memcpy(key, o->data + start, klen);
        if (x->nseen == x->seen_cap) {
            size_t cap = x->seen_cap ? x->seen_cap * 2 : 64;
            char **keys = realloc(x->seen_keys, cap * sizeof(*keys));
            if (!keys) {
                free(key);
                return -ENOMEM;
            }
            x->seen_keys = keys;
            x->seen_cap = cap;
        }
        x->seen_keys[x->nseen++] = key; /* owned by the context */
        if (hashmap_put(&x->seen, h, key, klen, key))
            return -ENOMEM;
    }

    if (!out_reserve(o, 16 + s->n * 48))
        return -EMSGSIZE;
    memcpy(o->data + o->len, "},\"values\":[", 12);
    o->len += 12;
    for (size_t i = 0; i < s->n; i++) {
        if (i)
            o->data[o->len++] = ',';
        o->len += (size_t)format_double(s->values[i], o->data + o->len, 32);
    }
    memcpy(o->data + o->len, "],\"timestamps\":[", 16);
    o->len += 16;
    for (size_t i = 0; i < s->n; i++) {
        if (i)
            o->data[o->len++] = ',';
        int64_t ms = s->ts[i] / 1000000;
        if (s->ts[i] % 1000000 < 0)
            ms--;
        o->len += (size_t)snprintf(o->data + o->len, 24, "%lld", (long long)ms);
    }
    memcpy(o->data + o->len, "]}\n", 3);
    o->len += 3;
    return 0;
}

/* Prometheus time parameter: unix seconds (may be fractional) or RFC 3339. */
static int parse_time(const char *text, int64_t *ns)
{
    char *end;
    double secs = strtod(text, &end);
    if (end != text && *end == '\0') {
        if (!isfinite(secs) || fabs(secs) > 9.2e9)
            return -EINVAL;
        *ns = (int64_t)(secs * 1e9);
        return 0;
    }
    struct tm tm = {0};
    const char *p = strptime(text, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!p)
        return -EINVAL;
    int64_t frac = 0;
    if (*p == '.') {
        int64_t scale = 100000000;
        for (p++; *p >= '0' && *p <= '9'; p++) {
            frac += (*p - '0') * scale;
            scale /= 10;
        }
    }
    int64_t offset = 0;
    if (*p == 'Z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int hh, mm;
        if (sscanf(p + 1, "%2d:%2d", &hh, &mm) != 2)
            return -EINVAL;
        offset = (hh * 3600 + mm * 60) * (*p == '+' ? 1 : -1);
        p += 6;
    } else {
        return -EINVAL;
    }
    if (*p)
        return -EINVAL;
    *ns = ((int64_t)timegm(&tm) - offset) * 1000000000 + frac;
    return 0;
}

typedef struct {
    const char *values[EXPORT_MAX_SELECTORS];
    size_t n;
    bool too_many;
} match_params;

static mhd_result collect_match(void *cls, enum MHD_ValueKind kind, const char *key,
                                const char *value)
{
    (void)kind;
    match_params *m = cls;
    if (key && value && !strcmp(key, "match[]")) {
        if (m->n == EXPORT_MAX_SELECTORS)
            m->too_many = true;
        else
            m->values[m->n++] = value;
    }
    return MHD_YES;
}

mhd_result handle_export(stele_server *s, struct MHD_Connection *c, request *r)
{
    mhd_result result;
    char err[256];
    export_ctx x = {0};
    if (!require_scope(s, c, r, STELE_SCOPE_READ, true, &result))
        return result;
    const char *tenant = request_tenant(
        s, c, r, MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "tenant"), true, &result);
    if (!tenant)
        return result;
    __atomic_add_fetch(&s->counters.export_requests, 1, __ATOMIC_RELAXED);
    match_params mp = {0};
    MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, collect_match, &mp);
    if (mp.n == 0)
        return respond_prom_error(c, 400, "bad_data",
                                  "missing match[] parameter, e.g. match[]={__name__=~\".+\"}");
    if (mp.too_many)
        return respond_prom_error(c, 400, "bad_data", "at most 16 match[] parameters");
    int64_t start = INT64_MIN, end = INT64_MAX;
    const char *ps = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "start");
    const char *pe = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "end");
    if ((ps && parse_time(ps, &start)) || (pe && parse_time(pe, &end)))
        return respond_prom_error(c, 400, "bad_data",
                                  "invalid start or end: use unix seconds or RFC 3339");
    hashmap_init(&x.seen);
    x.dedupe = mp.n > 1;
    int rc = 0;
    for (size_t i = 0; i < mp.n && rc == 0; i++) {
        stele_selector sel;
        rc = stele_selector_parse(mp.values[i], strlen(mp.values[i]), &sel, err, sizeof(err));
        if (rc) {
            result = respond_prom_error(c, 400, "bad_data", err);
            goto out;
        }
        rc = stele_tsdb_select(s->db, tenant, sel.matchers, sel.n, start, end, export_series, &x,
                               err, sizeof(err));
        stele_selector_free(&sel);
    }
    if (rc == -EMSGSIZE || x.out.overflow) {
        result = respond_prom_error(c, 422, "execution",
                                    "export larger than 1 GiB; narrow match[] or start/end");
    } else if (rc == -EINVAL) {
        result = respond_prom_error(c, 400, "bad_data", err);
    } else if (rc) {
        snprintf(err, sizeof(err), "export failed: %s", strerror(-rc));
        result = respond_prom_error(c, 500, "internal", err);
    } else {
        result = respond(c, 200, "application/stream+json", x.out.data ? x.out.data : "", x.out.len,
                         x.out.data != NULL, NULL);
        x.out.data = NULL; /* now owned by the response */
    }
out:
    free(x.out.data);
    for (size_t i = 0; i < x.nseen; i++)
        free(x.seen_keys[i]);
    free(x.seen_keys);
    hashmap_free(&x.seen);
    return result;
}
