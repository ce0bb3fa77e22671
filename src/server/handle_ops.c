/*
 * handle_ops.c — operations endpoints: POST /api/v1/admin/flush, GET /metrics
 * (Prometheus text format 0.0.4), the token API (/api/v1/tokens, scope admin) and
 * /api/v1/status/buildinfo.
 *
 * Token API:
 *   POST   /api/v1/tokens       {"tenant":"t","scopes":"read,write"} → 201 {"id","token",
 *                               "tenant","scopes","created"}; the secret appears only here
 *   GET    /api/v1/tokens       → {"tokens":[{"id","tenant","scopes","created","revoked"}]}
 *   DELETE /api/v1/tokens/<id>  → 204, or 404
 */
#include <errno.h>
#include <jansson.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "server/server_internal.h"

/* Token API bodies are tiny JSON objects. */
#define TOKEN_BODY_MAX 4096

mhd_result handle_flush(stele_server *s, struct MHD_Connection *c, request *r)
{
    mhd_result result;
    if (!require_scope(s, c, r, STELE_SCOPE_ADMIN, false, &result))
        return result;
    int64_t t0 = clock_mono_ns();
    int rc = stele_tsdb_flush(s->db);
    if (rc == 0)
        rc = stele_tsdb_maintain(s->db);
    if (rc) {
        char msg[200];
        snprintf(msg, sizeof(msg),
                 "flush failed: %s; the data stays in the log and will be "
                 "flushed again",
                 strerror(-rc));
        return respond_error(c, 503, "unavailable", msg);
    }
    stele_tsdb_stats st;
    stele_tsdb_get_stats(s->db, &st);
    char body[256];
    int n = snprintf(body, sizeof(body),
                     "{\"status\":\"ok\",\"blocks\":%llu,\"block_bytes\":%llu,\"head_points\":%llu,"
                     "\"duration_ms\":%.3f}\n",
                     (unsigned long long)st.blocks, (unsigned long long)st.block_bytes,
                     (unsigned long long)st.head_points, (clock_mono_ns() - t0) / 1e6);
    return respond(c, 200, "application/json", body, (size_t)n, false, NULL);
}

typedef struct {
    char *data;
    size_t len, cap;
} text_buf;

static void tb_printf(text_buf *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void tb_printf(text_buf *t, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n =
            vsnprintf(t->data ? t->data + t->len : NULL, t->data ? t->cap - t->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0)
            return;
        if (t->data && t->len + (size_t)n < t->cap) {
            t->len += (size_t)n;
            return;
        }
        size_t cap = t->cap ? t->cap * 2 : 8192;
        while (cap < t->len + (size_t)n + 1)
            cap *= 2;
        char *d = realloc(t->data, cap);
        if (!d)
            return;
        t->data = d;
        t->cap = cap;
    }
}

static void metric(text_buf *t, const char *name, const char *type, const char *help,
                   const char *labels, double value)
{
    tb_printf(t, "# HELP %s %s\n# TYPE %s %s\n%s%s %.17g\n", name, help, name, type, name,
              labels ? labels : "", value);
}

#define LOAD(field) ((double)__atomic_load_n(&s->counters.field, __ATOMIC_RELAXED))

mhd_result handle_metrics(stele_server *s, struct MHD_Connection *c, request *r)
{
    mhd_result result;
    if (!__atomic_load_n(&s->metrics_open, __ATOMIC_RELAXED) &&
        !require_scope(s, c, r, STELE_SCOPE_READ, false, &result))
        return result;
    stele_tsdb_stats st;
    stele_tsdb_get_stats(s->db, &st);
    text_buf t = {0};
    metric(&t, "stele_ready", "gauge", "1 when the store accepts writes.", NULL,
           st.health == 0 ? 1 : 0);
    metric(&t, "stele_uptime_seconds", "gauge", "Seconds since the server started.", NULL,
           (clock_wall_ns() - s->started_ns) / 1e9);
    tb_printf(&t, "# HELP stele_http_write_requests_total Write requests by outcome.\n"
                  "# TYPE stele_http_write_requests_total counter\n");
    tb_printf(&t, "stele_http_write_requests_total{outcome=\"ok\"} %.0f\n", LOAD(write_ok));
    tb_printf(&t, "stele_http_write_requests_total{outcome=\"bad_request\"} %.0f\n",
              LOAD(write_bad_request));
    tb_printf(&t, "stele_http_write_requests_total{outcome=\"unavailable\"} %.0f\n",
              LOAD(write_unavailable));
    tb_printf(&t, "stele_http_write_requests_total{outcome=\"too_large\"} %.0f\n",
              LOAD(write_too_large));
    metric(&t, "stele_ingest_points_total", "counter", "Points acknowledged.", NULL,
           LOAD(points_ingested));
    metric(&t, "stele_ingest_skipped_fields_total", "counter",
           "Line-protocol fields not stored, by reason.", "{reason=\"string\"}",
           LOAD(skipped_string_fields));
    tb_printf(&t,
              "# HELP stele_ingest_rejected_timestamps_total Requests refused for their "
              "timestamps; reason=\"future\" is a time-sync signal.\n"
              "# TYPE stele_ingest_rejected_timestamps_total counter\n"
              "stele_ingest_rejected_timestamps_total{reason=\"future\"} %.0f\n"
              "stele_ingest_rejected_timestamps_total{reason=\"too_old\"} %.0f\n",
              LOAD(time_skew_rejections), LOAD(too_old_rejections));
    metric(&t, "stele_http_auth_failures_total", "counter", "Requests with a missing or bad token.",
           NULL, LOAD(auth_failures));
    metric(&t, "stele_http_forbidden_total", "counter", "Requests refused for scope or tenant.",
           NULL, LOAD(forbidden));
    metric(&t, "stele_http_received_bytes_total", "counter", "Request body bytes received.", NULL,
           LOAD(bytes_received));
    metric(&t, "stele_tsdb_series", "gauge", "Series in the index.", NULL, (double)st.series);
    metric(&t, "stele_tsdb_head_points", "gauge", "Points in memory, not yet in blocks.", NULL,
           (double)st.head_points);
    metric(&t, "stele_tsdb_blocks", "gauge", "Block files.", NULL, (double)st.blocks);
    metric(&t, "stele_tsdb_block_bytes", "gauge", "Bytes of block files.", NULL,
           (double)st.block_bytes);
    metric(&t, "stele_tsdb_block_points", "gauge", "Points in block files.", NULL,
           (double)st.block_points);
    metric(&t, "stele_tsdb_flushes_total", "counter", "Head flushes.", NULL, (double)st.flushes);
    metric(&t, "stele_tsdb_compactions_total", "counter", "Block compactions.", NULL,
           (double)st.compactions);
    metric(&t, "stele_tsdb_retention_dropped_blocks_total", "counter",
           "Blocks dropped by retention.", NULL, (double)st.retention_drops);
    metric(&t, "stele_tsdb_overload_rejections_total", "counter",
           "Writes refused because the head was full during a flush.", NULL,
           (double)st.rejected_overload);
    /* Per tier (SPEC §5): raw first, then the downsampled tiers (points are buckets). */
    static const struct {
        const char *name, *type, *help;
    } tier_metrics[] = {
        {"stele_tier_series", "gauge", "Series with data in the tier."},
        {"stele_tier_points", "gauge", "Points (raw: samples; tiers: buckets) stored."},
        {"stele_tier_bytes", "gauge", "Bytes of the tier's block files."},
        {"stele_tier_blocks", "gauge", "Block files of the tier."},
        {"stele_tier_build_lag_seconds", "gauge",
         "Age of the oldest flushed raw data not yet built into the tier (0: up to date)."},
        {"stele_tier_build_lag_points", "gauge", "Flushed raw points not yet built into the tier."},
        {"stele_tier_builds_total", "counter", "Tier build steps completed."},
        {"stele_tier_retention_dropped_blocks_total", "counter",
         "Tier blocks dropped by retention."},
    };
    for (size_t m = 0; m < sizeof(tier_metrics) / sizeof(tier_metrics[0]); m++) {
        tb_printf(&t, "# HELP %s %s\n# TYPE %s %s\n", tier_metrics[m].name, tier_metrics[m].help,
                  tier_metrics[m].name, tier_metrics[m].type);
        double raw[] = {(double)st.series,
                        (double)(st.block_points + st.head_points),
                        (double)st.block_bytes,
                        (double)st.blocks,
                        0,
                        0,
                        0,
                        (double)st.retention_drops};
        tb_printf(&t, "%s{tier=\"raw\"} %.17g\n", tier_metrics[m].name, raw[m]);
        for (size_t i = 0; i < st.ntiers; i++) {
            char name[32];
            stele_resolution_name(st.tiers[i].resolution_ns, name, sizeof(name));
            double v[] = {(double)st.tiers[i].series,     (double)st.tiers[i].buckets,
                          (double)st.tiers[i].bytes,      (double)st.tiers[i].blocks,
                          st.tiers[i].build_lag_ns / 1e9, (double)st.tiers[i].build_lag_points,
                          (double)st.tiers[i].builds,     (double)st.tiers[i].retention_drops};
            tb_printf(&t, "%s{tier=\"%s\"} %.17g\n", tier_metrics[m].name, name, v[m]);
        }
    }
    metric(&t, "stele_wal_fsyncs_total", "counter", "Log fsyncs (each covers a group of writes).",
           NULL, (double)st.wal_fsyncs);
    metric(&t, "stele_wal_bytes_total", "counter", "Bytes appended to the log.", NULL,
           (double)st.wal_bytes);
    metric(&t, "stele_wal_segments", "gauge", "Log segment files.", NULL, (double)st.wal_segments);
    metric(&t, "stele_tokens_active", "gauge", "API tokens not revoked.", NULL,
           (double)stele_tokens_active_count(s->tokens));
    query_pool_stats qs;
    query_pool_get_stats(s->pool, &qs);
    metric(&t, "stele_queries_total", "counter", "Queries answered successfully.", NULL,
           (double)__atomic_load_n(&s->queries_ok, __ATOMIC_RELAXED));
    metric(&t, "stele_query_queue_length", "gauge", "Queries waiting for a worker.", NULL,
           (double)qs.queued);
    metric(&t, "stele_query_running", "gauge", "Queries being evaluated.", NULL,
           (double)qs.running);
    if (s->sealed) {
        stele_sealed_stats ss;
        stele_sealed_get_stats(s->sealed, &ss);
        tb_printf(&t, "# HELP stele_frames_total Sealed frames by outcome (accepted, duplicate, "
                      "or the refusal reason).\n# TYPE stele_frames_total counter\n");
        for (int i = 0; i < STELE_FRAME_STATUSES; i++)
            tb_printf(&t, "stele_frames_total{status=\"%s\"} %llu\n",
                      stele_frame_status_name((stele_frame_status)i),
                      (unsigned long long)ss.frames[i]);
        metric(&t, "stele_frame_points_total", "counter",
               "Points stored from accepted frames (quarantined ones included).", NULL,
               (double)ss.points_accepted);
        metric(&t, "stele_frame_points_quarantined_total", "counter",
               "Points of quarantined devices, stored apart for forensics.", NULL,
               (double)ss.points_quarantined);
        metric(&t, "stele_frame_clock_skew_refusals_total", "counter",
               "Frames refused for timestamps outside the accepted range (device clock "
               "signal).",
               NULL, (double)ss.skew_refusals);
        metric(&t, "stele_replay_windows", "gauge", "Anti-replay windows held (device, key).", NULL,
               (double)ss.windows);
        metric(&t, "stele_replay_checkpoints_total", "counter",
               "Anti-replay window checkpoints written.", NULL, (double)ss.checkpoints);
        metric(&t, "stele_frame_shape_cache_bytes", "gauge",
               "Memory of the per-device series-handle caches (capped at 256 MiB).", NULL,
               (double)ss.shape_cache_bytes);
    }
    if (s->registry) {
        uint64_t counts[STELE_DEVICE_STATES];
        stele_registry_counts(s->registry, counts);
        tb_printf(&t, "# HELP stele_devices Registered devices by lifecycle state.\n"
                      "# TYPE stele_devices gauge\n");
        for (int i = 0; i < STELE_DEVICE_STATES; i++)
            tb_printf(&t, "stele_devices{state=\"%s\"} %llu\n",
                      stele_device_state_name((stele_device_state)i),
                      (unsigned long long)counts[i]);
    }
#define CLOAD(field) ((double)__atomic_load_n(&s->control.field, __ATOMIC_RELAXED))
    tb_printf(&t,
              "# HELP stele_enrollments_total Device enrollments by outcome.\n"
              "# TYPE stele_enrollments_total counter\n"
              "stele_enrollments_total{outcome=\"ok\"} %.0f\n"
              "stele_enrollments_total{outcome=\"refused\"} %.0f\n",
              CLOAD(enroll_ok), CLOAD(enroll_refused));
    tb_printf(&t,
              "# HELP stele_key_rotations_total Device key rotations by outcome.\n"
              "# TYPE stele_key_rotations_total counter\n"
              "stele_key_rotations_total{outcome=\"ok\"} %.0f\n"
              "stele_key_rotations_total{outcome=\"refused\"} %.0f\n",
              CLOAD(rotate_ok), CLOAD(rotate_refused));
    metric(&t, "stele_device_source_throttled_total", "counter",
           "Device requests refused (429) because their source kept failing verification.", NULL,
           CLOAD(source_throttled));
    metric(&t, "stele_audit_failures_total", "counter",
           "Audit appends that failed (the action was not acknowledged).", NULL,
           CLOAD(audit_failures));
#undef CLOAD
    tb_printf(&t, "# HELP stele_refusals_total Requests refused by a limit, by tenant and "
                  "reason.\n# TYPE stele_refusals_total counter\n");
    pthread_mutex_lock(&s->refusals_mu);
    for (refusal_counter *rc = s->refusals; rc; rc = rc->next)
        tb_printf(&t, "stele_refusals_total{tenant=\"%s\",reason=\"%s\"} %llu\n", rc->tenant,
                  rc->reason, (unsigned long long)rc->count);
    pthread_mutex_unlock(&s->refusals_mu);
    if (!t.data)
        return respond_error(c, 503, "unavailable", "out of memory");
    return respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", t.data, t.len, true, NULL);
}

static const char *scopes_text_of(const stele_token_info *info)
{
    static const char *const names[] = {"",      "read",       "write",       "read,write",
                                        "admin", "read,admin", "write,admin", "read,write,admin"};
    return names[info->scopes & 7];
}

static json_t *token_json(const stele_token_info *info)
{
    char scopes[32], created[32];
    stele_scopes_format(info->scopes, scopes, sizeof(scopes));
    format_rfc3339(info->created_ns, created, sizeof(created));
    return json_pack("{s:s,s:s,s:s,s:s,s:b}", "id", info->id, "tenant", info->tenant, "scopes",
                     scopes, "created", created, "revoked", info->revoked);
}

static int list_token(void *ctx, const stele_token_info *info)
{
    json_t *o = token_json(info);
    if (!o)
        return -ENOMEM;
    return json_array_append_new(ctx, o) ? -ENOMEM : 0;
}

mhd_result handle_tokens(stele_server *s, struct MHD_Connection *c, request *r, const char *rest)
{
    mhd_result result;
    if (!require_scope(s, c, r, STELE_SCOPE_ADMIN, false, &result))
        return result;
    if (!strcmp(r->method, "GET") && rest[0] == '\0') {
        json_t *arr = json_array();
        if (!arr || stele_tokens_list(s->tokens, list_token, arr) != 0) {
            json_decref(arr);
            return respond_error(c, 503, "unavailable", "out of memory");
        }
        return respond_json(c, 200, json_pack("{s:o}", "tokens", arr));
    }
    if (!strcmp(r->method, "POST") && rest[0] == '\0') {
        if (r->body_len > TOKEN_BODY_MAX)
            return respond_error(c, 413, "too_large", "token request body too large");
        json_error_t jerr;
        json_t *req = json_loadb(r->body ? r->body : "", r->body_len, 0, &jerr);
        const char *tenant = NULL, *scopes_text = NULL;
        if (!req || json_unpack(req, "{s:s,s:s}", "tenant", &tenant, "scopes", &scopes_text)) {
            json_decref(req);
            return respond_error(
                c, 400, "invalid",
                "expected a JSON body {\"tenant\":\"T\",\"scopes\":\"read,write\"}");
        }
        uint32_t scopes;
        if (!stele_tenant_name_valid(tenant)) {
            json_decref(req);
            return respond_error(c, 400, "invalid",
                                 "invalid tenant name: use 1-64 of A-Z a-z 0-9 _ -");
        }
        if (stele_scopes_parse(scopes_text, &scopes) != 0) {
            json_decref(req);
            return respond_error(
                c, 400, "invalid",
                "invalid scopes: use a comma-separated subset of read,write,admin");
        }
        char token[STELE_TOKEN_STRING_LEN + 1];
        stele_token_info info;
        int rc = stele_tokens_create(s->tokens, tenant, scopes, token, sizeof(token), &info);
        json_decref(req);
        if (rc)
            return respond_error(c, 503, "unavailable",
                                 "could not store the token durably; check the disk");
        char subject[40], details[120];
        snprintf(subject, sizeof(subject), "token:%s", info.id);
        snprintf(details, sizeof(details), "tenant=%s scopes=%s", info.tenant,
                 scopes_text_of(&info));
        if (server_audit(s, r, "token.create", subject, "ok", details) != 0) {
            sodium_memzero(token, sizeof(token));
            (void)stele_tokens_revoke(s->tokens, info.id);
            return respond_error(c, 503, "unavailable",
                                 "the token could not be audited, so it was revoked again; the "
                                 "audit trail has failed — check the disk, then restart");
        }
        json_t *o = token_json(&info);
        if (o)
            json_object_set_new(o, "token", json_string(token));
        sodium_memzero(token, sizeof(token));
        return respond_json(c, 201, o);
    }
    if (!strcmp(r->method, "DELETE") && rest[0] == '/' && rest[1]) {
        int rc = stele_tokens_revoke(s->tokens, rest + 1);
        if (rc == -ENOENT)
            return respond_error(c, 404, "not_found",
                                 "no token with this id; see GET /api/v1/tokens");
        if (rc)
            return respond_error(c, 503, "unavailable",
                                 "could not store the revocation durably; check the disk");
        char subject[40];
        snprintf(subject, sizeof(subject), "token:%.16s", rest + 1);
        if (server_audit(s, r, "token.revoke", subject, "ok", "") != 0)
            return respond_error(c, 503, "unavailable",
                                 "the token is revoked but the revocation could not be audited; "
                                 "the audit trail has failed — check the disk, then restart");
        return respond(c, 204, NULL, "", 0, false, NULL);
    }
    return respond_error(c, 405, "method_not_allowed",
                         "use GET or POST /api/v1/tokens, or DELETE /api/v1/tokens/<id>");
}

mhd_result handle_buildinfo(stele_server *s, struct MHD_Connection *c, request *r)
{
    mhd_result result;
    if (!require_scope(s, c, r, STELE_SCOPE_READ, true, &result))
        return result;
    const char *body = "{\"status\":\"success\",\"data\":{\"version\":\"" STELE_VERSION
                       "\",\"revision\":\"\",\"branch\":\"\",\"buildUser\":\"\",\"buildDate\":"
                       "\"\",\"goVersion\":\"\",\"application\":\"stele\"}}\n";
    return respond(c, 200, "application/json", (char *)body, strlen(body), false, NULL);
}
