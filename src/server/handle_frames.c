/*
 * handle_frames.c — POST /api/v1/frames (SPEC §3, §6): sealed frames back to back in
 * the body (Content-Type application/vnd.stele.frames), no API token — each frame is
 * signed by its device. The answer, one result per frame in order, is sent only once
 * the accepted frames are durable (stele_sealed_ingest returns then).
 *
 * Before anything is parsed the source's failure budget is checked (source_limit.c):
 * a client whose frames keep failing verification gets 429 without costing a signature
 * check. Afterwards the frames that failed cheaply-detectable-but-costly ways
 * (malformed, unknown device, bad signature) are charged to it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/text.h"
#include "server/server_internal.h"

/* Frames per request: a gateway's batch of a few seconds for a few thousand devices;
 * the results array (≈ 90 bytes each) stays under half a MiB. */
#define FRAMES_PER_REQUEST_MAX 4096
/* Seconds a throttled source is told to wait. */
#define SOURCE_RETRY_AFTER_S "5"

static bool content_type_ok(struct MHD_Connection *c)
{
    const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
    if (!ct)
        return true; /* curl --data-binary without -H: take it as frames */
    return !strncmp(ct, "application/vnd.stele.frames", 28) ||
           !strncmp(ct, "application/octet-stream", 24);
}

/* {"results":[{"device":ID,"counter":N,"status":S}…]}\n, built by hand: at tens of
 * thousands of frames per second a JSON tree per result would cost more than the
 * write. */
static char *results_json(const stele_frame_result *res, size_t n, size_t *len)
{
    size_t cap = 16 + n * (6 * STELE_DEVICE_ID_MAX + 96);
    char *out = malloc(cap), *p = out;
    if (!out)
        return NULL;
    p += sprintf(p, "{\"results\":[");
    for (size_t i = 0; i < n; i++) {
        p += sprintf(p, "%s{\"device\":\"", i ? "," : "");
        p += json_escape_bytes(res[i].device, strnlen(res[i].device, STELE_DEVICE_ID_MAX), p);
        p += sprintf(p, "\",\"counter\":%llu,\"status\":\"%s\"}",
                     (unsigned long long)res[i].counter, stele_frame_status_name(res[i].status));
    }
    p += sprintf(p, "]}\n");
    *len = (size_t)(p - out);
    return out;
}

mhd_result handle_frames(stele_server *s, struct MHD_Connection *c, request *r)
{
    if (!s->sealed)
        return respond_error(c, 404, "not_found", "sealed frames are not enabled");
    int64_t now = clock_wall_ns();
    if (!source_limiter_allow(s->sources, c, now)) {
        __atomic_add_fetch(&s->control.source_throttled, 1, __ATOMIC_RELAXED);
        static const char *const hdr[] = {"Retry-After", SOURCE_RETRY_AFTER_S, NULL};
        const char *body = "{\"code\":\"too_many_failures\",\"message\":\"too many frames "
                           "from this address failed verification; fix the sender (keys, "
                           "enrollment, encoding) and retry later\"}\n";
        return respond(c, 429, "application/json", (char *)body, strlen(body), false, hdr);
    }
    if (!content_type_ok(c))
        return respond_error(c, 415, "unsupported_media_type",
                             "send frames as Content-Type: application/vnd.stele.frames");
    if (r->body_len == 0)
        return respond_error(c, 400, "invalid", "empty body: send one or more sealed frames");
    stele_frame_result *res = malloc(FRAMES_PER_REQUEST_MAX * sizeof(*res));
    if (!res)
        return respond_error(c, 503, "unavailable", "out of memory");
    size_t n = 0;
    int rc = stele_sealed_ingest(s->sealed, (const uint8_t *)r->body, r->body_len, res,
                                 FRAMES_PER_REQUEST_MAX, &n);
    if (rc == -E2BIG) {
        free(res);
        return respond_error(c, 413, "too_large",
                             "more than 4096 frames in one request; split the batch");
    }
    if (rc == -EAGAIN) {
        free(res);
        static const char *const hdr[] = {"Retry-After", "1", NULL};
        const char *body = "{\"code\":\"unavailable\",\"message\":\"storage is busy flushing; "
                           "retry the same frames shortly (duplicates are safe)\"}\n";
        return respond(c, 503, "application/json", (char *)body, strlen(body), false, hdr);
    }
    if (rc) {
        free(res);
        return respond_error(c, 503, "unavailable",
                             "the frames could not be stored durably; nothing was acknowledged "
                             "— retry against a healthy server (duplicates are safe)");
    }
    double failures = 0;
    for (size_t i = 0; i < n; i++)
        if (res[i].status == STELE_FRAME_MALFORMED || res[i].status == STELE_FRAME_BAD_SIGNATURE ||
            res[i].status == STELE_FRAME_UNKNOWN_DEVICE)
            failures += 1;
    source_limiter_charge(s->sources, c, failures, now);
    size_t len = 0;
    char *body = results_json(res, n, &len);
    free(res);
    if (!body)
        return respond_error(c, 503, "unavailable", "out of memory");
    return respond(c, 200, "application/json", body, len, true, NULL);
}
