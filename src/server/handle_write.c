/*
 * handle_write.c — POST /write (Influx v1) and POST /api/v2/write (Influx v2).
 *
 * Flow: token (checked before the body was read) → tenant from db/bucket → precision
 * → gunzip if needed → parse the whole body into a batch (any bad line fails the whole
 * request: nothing is stored) → stele_tsdb_write, which returns only once the batch is
 * durable → 204. Parsers and batches come from a small free list so their buffers are
 * reused across requests.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "server/server_internal.h"
#include "stele/ingest.h"

static int worker_take(stele_server *s, ingest_worker **out)
{
    pthread_mutex_lock(&s->workers_mu);
    ingest_worker *w = s->idle_workers;
    if (w)
        s->idle_workers = w->next;
    pthread_mutex_unlock(&s->workers_mu);
    if (!w) {
        stele_lp_limits limits;
        stele_lp_limits_default(&limits);
        w = calloc(1, sizeof(*w));
        if (!w)
            return -ENOMEM;
        int rc = stele_lp_parser_create(&limits, &w->parser);
        if (rc == 0)
            rc = stele_batch_create(&w->batch);
        if (rc) {
            stele_lp_parser_destroy(w->parser);
            free(w);
            return rc;
        }
    }
    stele_batch_reset(w->batch);
    *out = w;
    return 0;
}

static void worker_give_back(stele_server *s, ingest_worker *w)
{
    pthread_mutex_lock(&s->workers_mu);
    w->next = s->idle_workers;
    s->idle_workers = w;
    pthread_mutex_unlock(&s->workers_mu);
}

mhd_result handle_write(stele_server *s, struct MHD_Connection *c, request *r, bool v2)
{
    mhd_result result;
    ingest_worker *w = NULL;
    char *inflated = NULL;
    char msg[512];
    __atomic_add_fetch(&s->counters.write_requests, 1, __ATOMIC_RELAXED);
    if (!require_scope(s, c, r, STELE_SCOPE_WRITE, false, &result))
        return result;
    const char *requested =
        MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, v2 ? "bucket" : "db");
    const char *tenant = request_tenant(s, c, r, requested, false, &result);
    if (!tenant)
        return result;
    const char *precision = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "precision");
    int64_t precision_ns = stele_precision_ns(precision);
    if (!precision_ns) {
        __atomic_add_fetch(&s->counters.write_bad_request, 1, __ATOMIC_RELAXED);
        return respond_error(c, 400, "invalid",
                             v2 ? "unknown precision: use ns, us, ms or s"
                                : "unknown precision: use n, u, ms, s, m or h");
    }

    const char *body = r->body ? r->body : "";
    size_t len = r->body_len;
    const char *encoding = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Encoding");
    if (encoding && !strcasecmp(encoding, "gzip")) {
        size_t limit = __atomic_load_n(&s->max_body, __ATOMIC_RELAXED);
        int rc = gzip_inflate(body, len, limit, &inflated, &len);
        if (rc == -EMSGSIZE) {
            __atomic_add_fetch(&s->counters.write_too_large, 1, __ATOMIC_RELAXED);
            return respond_error(c, 413, "too_large",
                                 "decompressed body larger than the limit; split the request");
        }
        if (rc) {
            __atomic_add_fetch(&s->counters.write_bad_request, 1, __ATOMIC_RELAXED);
            return respond_error(c, 400, "invalid",
                                 "body is not valid gzip although Content-Encoding says so");
        }
        body = inflated;
    } else if (encoding && strcasecmp(encoding, "identity") != 0) {
        __atomic_add_fetch(&s->counters.write_bad_request, 1, __ATOMIC_RELAXED);
        return respond_error(c, 415, "unsupported_encoding",
                             "unsupported Content-Encoding: send gzip or no encoding");
    }

    int rc = worker_take(s, &w);
    if (rc) {
        free(inflated);
        return respond_error(c, 503, "unavailable", "out of memory; retry later");
    }
    stele_ingest_params params = {
        .tenant = tenant, .precision_ns = precision_ns, .now_ns = clock_wall_ns()};
    stele_tsdb_time_bounds(s->db, &params.min_ts, &params.max_ts);
    stele_ingest_result ir;
    rc = stele_ingest_lines(w->parser, w->batch, body, len, &params, &ir);
    if (rc == -EINVAL) {
        if (ir.kind == STELE_INGEST_FUTURE)
            __atomic_add_fetch(&s->counters.time_skew_rejections, 1, __ATOMIC_RELAXED);
        if (ir.kind == STELE_INGEST_TOO_OLD)
            __atomic_add_fetch(&s->counters.too_old_rejections, 1, __ATOMIC_RELAXED);
        __atomic_add_fetch(&s->counters.write_bad_request, 1, __ATOMIC_RELAXED);
        char esc_msg[300];
        size_t k = 0;
        for (const char *p = ir.message; *p && k + 2 < sizeof(esc_msg); p++) {
            if (*p == '"' || *p == '\\')
                esc_msg[k++] = '\\';
            esc_msg[k++] = (unsigned char)*p < 0x20 ? ' ' : *p;
        }
        esc_msg[k] = '\0';
        int n = snprintf(msg, sizeof(msg),
                         "{\"code\":\"invalid\",\"line\":%u,\"message\":\"line %u: %s; nothing "
                         "of this request was stored\"}\n",
                         ir.line, ir.line, esc_msg);
        result = respond(c, 400, "application/json", msg, (size_t)n, false, NULL);
        goto out;
    }
    if (rc) {
        result = respond_error(c, 503, "unavailable", "out of memory; retry later");
        goto out;
    }
    stele_tenant_limits tl;
    server_tenant_limits(s, tenant, &tl);
    unsigned retry = 1;
    if (server_admit_points(s, tenant, ir.points, tl.ingest_points_per_second, &retry) != 0) {
        server_count_refusal(s, tenant, "ingest_rate");
        char retry_text[16];
        snprintf(retry_text, sizeof(retry_text), "%u", retry);
        const char *hdr[] = {"Retry-After", retry_text, NULL};
        int n = snprintf(msg, sizeof(msg),
                         "{\"code\":\"too_many_requests\",\"reason\":\"ingest_rate\",\"message\":"
                         "\"tenant '%s' is over its ingestion rate of %llu points/s; nothing of "
                         "this request was stored; retry after %u s\"}\n",
                         tenant, (unsigned long long)tl.ingest_points_per_second, retry);
        result = respond(c, 429, "application/json", msg, (size_t)n, false, hdr);
        goto out;
    }
    rc = stele_tsdb_write_quota(s->db, w->batch, tl.max_series);
    if (rc == -EDQUOT) {
        server_count_refusal(s, tenant, "series");
        static const char *const hdr[] = {"Retry-After", "60", NULL};
        int n = snprintf(msg, sizeof(msg),
                         "{\"code\":\"too_many_requests\",\"reason\":\"series\",\"message\":"
                         "\"tenant '%s' would exceed its limit of %llu series; nothing of this "
                         "request was stored; ask the operator to raise max_series\"}\n",
                         tenant, (unsigned long long)tl.max_series);
        result = respond(c, 429, "application/json", msg, (size_t)n, false, hdr);
        goto out;
    }
    if (rc == 0) {
        __atomic_add_fetch(&s->counters.write_ok, 1, __ATOMIC_RELAXED);
        __atomic_add_fetch(&s->counters.points_ingested, ir.points, __ATOMIC_RELAXED);
        __atomic_add_fetch(&s->counters.skipped_string_fields, ir.skipped_string_fields,
                           __ATOMIC_RELAXED);
        char skipped[24];
        snprintf(skipped, sizeof(skipped), "%llu", (unsigned long long)ir.skipped_string_fields);
        const char *headers[5] = {NULL};
        int h = 0;
        if (ir.skipped_string_fields) {
            headers[h++] = "X-Stele-Skipped-Fields";
            headers[h++] = skipped;
        }
        if (s->cfg.ack_buffered) {
            headers[h++] = "X-Stele-Durability";
            headers[h++] = "buffered";
        }
        result = respond(c, 204, NULL, "", 0, false, headers);
        goto out;
    }
    if (rc == -EAGAIN) {
        __atomic_add_fetch(&s->counters.write_unavailable, 1, __ATOMIC_RELAXED);
        static const char *const hdr[] = {"Retry-After", "1", NULL};
        const char *b = "{\"code\":\"overloaded\",\"message\":\"the storage head is full while a "
                        "flush is running; retry after the indicated delay\"}\n";
        result = respond(c, 503, "application/json", (char *)b, strlen(b), false, hdr);
        goto out;
    }
    if (rc == -ERANGE) {
        __atomic_add_fetch(&s->counters.write_bad_request, 1, __ATOMIC_RELAXED);
        result = respond_error(c, 400, "invalid",
                               "a timestamp is outside the accepted range (retention or clock "
                               "skew); nothing of this request was stored");
        goto out;
    }
    __atomic_add_fetch(&s->counters.write_unavailable, 1, __ATOMIC_RELAXED);
    {
        static const char *const hdr[] = {"Retry-After", "10", NULL};
        int n = snprintf(msg, sizeof(msg),
                         "{\"code\":\"unavailable\",\"message\":\"storage cannot make writes "
                         "durable (%s); nothing of this request was acknowledged. %s\"}\n",
                         strerror(-rc),
                         rc == -ENOSPC ? "Free disk space, then restart the server."
                                       : "Check the disk, then restart the server.");
        result = respond(c, 503, "application/json", msg, (size_t)n, false, hdr);
    }
out:
    if (w)
        worker_give_back(s, w);
    free(inflated);
    return result;
}
