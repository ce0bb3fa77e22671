/*
 * ingest.c — line protocol to storage batch; see ingest.h.
 *
 * Per line the tag labels are built once; each field then only inserts its metric
 * name (measurement + "_" + field) at the sorted position of "__name__". Tags arrive
 * sorted from the parser, so the label set is canonical without another sort.
 */
#include "stele/ingest.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define MAX_EXACT_INTEGER (INT64_C(1) << 53)

typedef struct {
    stele_batch *batch;
    const stele_ingest_params *params;
    stele_ingest_result *result;
    char name[2 * STELE_MAX_LABEL_NAME + 2];
    stele_label labels[STELE_MAX_LABELS];
} ingest_ctx;

static int fail(ingest_ctx *c, const stele_lp_line *line, stele_ingest_error_kind kind,
                const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int fail(ingest_ctx *c, const stele_lp_line *line, stele_ingest_error_kind kind,
                const char *fmt, ...)
{
    va_list ap;
    c->result->kind = kind;
    c->result->line = line->line_no;
    va_start(ap, fmt);
    vsnprintf(c->result->message, sizeof(c->result->message), fmt, ap);
    va_end(ap);
    return -EINVAL;
}

static int label_name_cmp(const char *a, uint32_t al, const char *b, uint32_t bl)
{
    uint32_t n = al < bl ? al : bl;
    int c = memcmp(a, b, n);
    return c ? c : (al < bl ? -1 : al > bl);
}

static int ingest_line(void *ctx, const stele_lp_line *line)
{
    ingest_ctx *c = ctx;
    const stele_ingest_params *p = c->params;
    static const char name_label[] = "__name__";
    const uint32_t name_label_len = sizeof(name_label) - 1;
    c->result->lines++;
    if (line->ntags + 1 > STELE_MAX_LABELS)
        return fail(c, line, STELE_INGEST_SYNTAX, "too many tags (at most %d per line)",
                    STELE_MAX_LABELS - 1);

    int64_t ts = p->now_ns;
    if (line->has_timestamp) {
        if (__builtin_mul_overflow(line->timestamp, p->precision_ns, &ts))
            return fail(c, line, STELE_INGEST_SYNTAX,
                        "timestamp out of range for the precision; check the precision "
                        "parameter");
    }
    if (ts < p->min_ts)
        return fail(c, line, STELE_INGEST_TOO_OLD,
                    "timestamp is older than the retention period; such points cannot be "
                    "stored");
    if (ts > p->max_ts)
        return fail(c, line, STELE_INGEST_FUTURE,
                    "timestamp is too far in the future; check the device clock (NTP) and "
                    "the precision parameter");

    /* Labels: tags with "__name__" inserted at its sorted place. */
    size_t n = 0, name_pos = 0;
    bool placed = false;
    for (uint32_t i = 0; i < line->ntags; i++) {
        const stele_lp_tag *t = &line->tags[i];
        int cmp = label_name_cmp(t->key.ptr, t->key.len, name_label, name_label_len);
        if (cmp == 0)
            return fail(c, line, STELE_INGEST_SYNTAX,
                        "tag key \"__name__\" is reserved; rename the tag");
        if (!placed && cmp > 0) {
            name_pos = n++;
            placed = true;
        }
        c->labels[n++] = (stele_label){.name = t->key.ptr,
                                       .name_len = t->key.len,
                                       .value = t->value.ptr,
                                       .value_len = t->value.len};
    }
    if (!placed)
        name_pos = n++;

    size_t mlen = line->measurement.len;
    if (mlen > STELE_MAX_LABEL_NAME)
        return fail(c, line, STELE_INGEST_SYNTAX, "measurement name too long (at most %d bytes)",
                    STELE_MAX_LABEL_NAME);
    memcpy(c->name, line->measurement.ptr, mlen);
    c->name[mlen] = '_';
    for (uint32_t f = 0; f < line->nfields; f++) {
        const stele_lp_field *fd = &line->fields[f];
        double v;
        switch (fd->type) {
        case STELE_LP_FLOAT:
            v = fd->v.f;
            break;
        case STELE_LP_INT:
            if (fd->v.i > MAX_EXACT_INTEGER || fd->v.i < -MAX_EXACT_INTEGER)
                return fail(c, line, STELE_INGEST_SYNTAX,
                            "integer field \"%.*s\" is not exactly representable as float64 "
                            "(|v| must be at most 2^53)",
                            (int)fd->key.len, fd->key.ptr);
            v = (double)fd->v.i;
            break;
        case STELE_LP_UINT:
            if (fd->v.u > (uint64_t)MAX_EXACT_INTEGER)
                return fail(c, line, STELE_INGEST_SYNTAX,
                            "unsigned field \"%.*s\" is not exactly representable as float64 "
                            "(must be at most 2^53)",
                            (int)fd->key.len, fd->key.ptr);
            v = (double)fd->v.u;
            break;
        case STELE_LP_BOOL:
            v = fd->v.b ? 1.0 : 0.0;
            break;
        default:
            c->result->skipped_string_fields++;
            continue;
        }
        if (mlen + 1 + fd->key.len > STELE_MAX_LABEL_NAME)
            return fail(c, line, STELE_INGEST_SYNTAX,
                        "metric name \"%.*s_%.*s\" longer than %d bytes", (int)mlen,
                        line->measurement.ptr, (int)fd->key.len, fd->key.ptr, STELE_MAX_LABEL_NAME);
        memcpy(c->name + mlen + 1, fd->key.ptr, fd->key.len);
        c->labels[name_pos] = (stele_label){.name = name_label,
                                            .name_len = name_label_len,
                                            .value = c->name,
                                            .value_len = (uint32_t)(mlen + 1 + fd->key.len)};
        int rc = stele_batch_add(c->batch, p->tenant, c->labels, n, ts, v);
        if (rc == -EINVAL)
            return fail(c, line, STELE_INGEST_SYNTAX,
                        "invalid series (empty or over-long label name or value)");
        if (rc)
            return rc;
        c->result->points++;
    }
    return 0;
}

int stele_ingest_lines(stele_lp_parser *parser, stele_batch *b, const char *body, size_t len,
                       const stele_ingest_params *params, stele_ingest_result *result)
{
    ingest_ctx c = {.batch = b, .params = params, .result = result};
    stele_lp_error perr;
    memset(result, 0, sizeof(*result));
    int rc = stele_lp_parse(parser, body, len, ingest_line, &c, &perr);
    if (rc == -EINVAL && result->kind == STELE_INGEST_OK) {
        result->kind = STELE_INGEST_SYNTAX;
        result->line = perr.line_no;
        snprintf(result->message, sizeof(result->message), "%s", perr.message);
    }
    return rc;
}

int64_t stele_precision_ns(const char *precision)
{
    if (!precision || !*precision || !strcmp(precision, "ns") || !strcmp(precision, "n"))
        return 1;
    if (!strcmp(precision, "us") || !strcmp(precision, "u"))
        return 1000;
    if (!strcmp(precision, "ms"))
        return 1000000;
    if (!strcmp(precision, "s"))
        return INT64_C(1000000000);
    if (!strcmp(precision, "m"))
        return INT64_C(60000000000);
    if (!strcmp(precision, "h"))
        return INT64_C(3600000000000);
    return 0;
}
