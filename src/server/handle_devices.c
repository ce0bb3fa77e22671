/*
 * handle_devices.c — the admin API of the device registry (SPEC §6; scope admin):
 *
 *   GET  /api/v1/devices[?tenant=T&state=S]   list
 *   POST /api/v1/devices {"id","tenant","cohort"}   add → 201, the enrollment token once
 *   GET  /api/v1/devices/ID                    show
 *   POST /api/v1/devices/ID/revoke|quarantine|release|reenroll
 *
 * Every change is durable in the registry, then audited durably, then — for revoke and
 * quarantine — waits until no frame of the device that was checked under the old state
 * is still in flight (stele_sealed_barrier), and only then answers: once the call
 * returns, the very next frame is refused or kept apart, and the trail shows who did it.
 */
#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "server/server_internal.h"

/* An add request is three short strings. */
#define DEVICE_BODY_MAX 4096
/* Devices listed per response: the whole registry of a large fleet fits. */
#define DEVICE_LIST_MAX 1000000

static json_t *time_or_null(int64_t ns)
{
    if (ns <= 0)
        return json_null();
    char buf[40];
    format_rfc3339(ns, buf, sizeof(buf));
    return json_string(buf);
}

static json_t *key_json(const stele_device_key *k)
{
    char hex[65];
    sodium_bin2hex(hex, sizeof(hex), k->public_key, sizeof(k->public_key));
    return json_pack("{s:I,s:s,s:s,s:o}", "key_id", (json_int_t)k->key_id, "algorithm",
                     k->alg == 1 ? "ed25519" : "unknown", "public_key", hex, "added",
                     time_or_null(k->added_ns));
}

static json_t *device_json(const stele_device_info *d)
{
    json_t *o = json_pack("{s:s,s:s,s:s,s:s,s:s,s:o,s:o,s:o,s:o}", "id", d->id, "tenant", d->tenant,
                          "cohort", d->cohort, "state", stele_device_state_name(d->state),
                          "firmware", d->firmware, "added", time_or_null(d->added_ns), "enrolled",
                          time_or_null(d->enrolled_ns), "last_seen", time_or_null(d->last_seen_ns),
                          "state_changed", time_or_null(d->state_changed_ns));
    if (!o)
        return NULL;
    json_object_set_new(o, "key", d->key.key_id ? key_json(&d->key) : json_null());
    json_object_set_new(o, "next_key", d->next.key_id ? key_json(&d->next) : json_null());
    json_object_set_new(o, "overlap_deadline",
                        d->next.key_id ? time_or_null(d->overlap_deadline_ns) : json_null());
    json_object_set_new(o, "enroll_expires",
                        d->state == STELE_DEVICE_PENDING ? time_or_null(d->enroll_expires_ns)
                                                         : json_null());
    return o;
}

typedef struct {
    json_t *arr;
    int state; /* -1: any */
    size_t n;
} list_ctx;

static int list_device(void *ctx, const stele_device_info *d)
{
    list_ctx *l = ctx;
    if (l->state >= 0 && (int)d->state != l->state)
        return 0;
    if (l->n++ >= DEVICE_LIST_MAX)
        return 1;
    json_t *o = device_json(d);
    if (!o)
        return -ENOMEM;
    return json_array_append_new(l->arr, o) ? -ENOMEM : 0;
}

static int parse_state(const char *text)
{
    for (int i = 0; i < STELE_DEVICE_STATES; i++)
        if (!strcmp(text, stele_device_state_name((stele_device_state)i)))
            return i;
    return -2;
}

static mhd_result respond_device(struct MHD_Connection *c, unsigned status,
                                 const stele_device_info *d, const char *token)
{
    json_t *o = json_object();
    if (o) {
        json_object_set_new(o, "device", device_json(d));
        if (token)
            json_object_set_new(o, "enroll_token", json_string(token));
    }
    return respond_json(c, status, o);
}

static mhd_result respond_registry_error(struct MHD_Connection *c, int rc, const char *id)
{
    char msg[200];
    switch (rc) {
    case -ENOENT:
        snprintf(msg, sizeof(msg), "no device '%.64s'; see GET /api/v1/devices", id);
        return respond_error(c, 404, "not_found", msg);
    case -EEXIST:
        snprintf(msg, sizeof(msg),
                 "device '%.64s' already exists; use reenroll to give it a new enrollment", id);
        return respond_error(c, 409, "conflict", msg);
    case -EPERM:
        return respond_error(c, 409, "conflict",
                             "not allowed from the device's current state (quarantine needs "
                             "active, release needs quarantined; revoked is final until "
                             "reenroll)");
    case -EINVAL:
        return respond_error(c, 400, "invalid",
                             "invalid device id, tenant or cohort: ids and cohorts use 1-64 of "
                             "A-Z a-z 0-9 . _ -, tenants 1-64 of A-Z a-z 0-9 _ - not starting "
                             "with _");
    default:
        return respond_error(c, 503, "unavailable",
                             "the registry could not store the change durably; check the "
                             "disk and the server log, then restart");
    }
}

static mhd_result respond_audit_failed(struct MHD_Connection *c)
{
    return respond_error(c, 503, "unavailable",
                         "the change is stored but could not be audited; the audit trail has "
                         "failed — check the disk, then restart the server");
}

static mhd_result device_add(stele_server *s, struct MHD_Connection *c, request *r)
{
    if (r->body_len > DEVICE_BODY_MAX)
        return respond_error(c, 413, "too_large", "device request body too large");
    json_error_t jerr;
    json_t *req = json_loadb(r->body ? r->body : "", r->body_len, 0, &jerr);
    const char *id = NULL, *tenant = NULL, *cohort = "";
    if (!req ||
        json_unpack(req, "{s:s,s?s,s?s}", "id", &id, "tenant", &tenant, "cohort", &cohort) != 0) {
        json_decref(req);
        return respond_error(c, 400, "invalid",
                             "expected a JSON body {\"id\":\"ID\",\"tenant\":\"T\","
                             "\"cohort\":\"C\"} (tenant and cohort optional)");
    }
    mhd_result result;
    const char *t = request_tenant(s, c, r, tenant, false, &result);
    if (!t) {
        json_decref(req);
        return result;
    }
    char token[STELE_ENROLL_TOKEN_LEN + 1];
    stele_device_info d;
    int rc = stele_registry_add(s->registry, id, t, cohort, token, sizeof(token), &d);
    if (rc) {
        char idc[STELE_DEVICE_ID_MAX + 1];
        snprintf(idc, sizeof(idc), "%s", id);
        json_decref(req);
        return respond_registry_error(c, rc, idc);
    }
    json_decref(req);
    char subject[STELE_DEVICE_ID_MAX + 8], details[160];
    snprintf(subject, sizeof(subject), "device:%s", d.id);
    snprintf(details, sizeof(details), "tenant=%s cohort=%s", d.tenant, d.cohort);
    if (server_audit(s, r, "device.add", subject, "ok", details) != 0) {
        sodium_memzero(token, sizeof(token));
        return respond_audit_failed(c);
    }
    mhd_result res = respond_device(c, 201, &d, token);
    sodium_memzero(token, sizeof(token));
    return res;
}

/* An admin acting for tenant A may not touch tenant B's devices unless the token's own
 * tenant is B or it may act for every tenant (admin scope, as in request_tenant). */
static bool device_visible(request *r, const stele_device_info *d)
{
    return (r->token.scopes & STELE_SCOPE_ADMIN) || !strcmp(r->token.tenant, d->tenant);
}

static mhd_result device_action(stele_server *s, struct MHD_Connection *c, request *r,
                                const char *id, const char *action)
{
    stele_device_info d;
    int rc = stele_registry_get(s->registry, id, strlen(id), &d);
    if (rc || !device_visible(r, &d))
        return respond_registry_error(c, -ENOENT, id);
    char token[STELE_ENROLL_TOKEN_LEN + 1] = "";
    stele_device_state before = d.state;
    if (!strcmp(action, "revoke"))
        rc = stele_registry_revoke(s->registry, id, &d);
    else if (!strcmp(action, "quarantine"))
        rc = stele_registry_quarantine(s->registry, id, &d);
    else if (!strcmp(action, "release"))
        rc = stele_registry_release(s->registry, id, &d);
    else if (!strcmp(action, "reenroll"))
        rc = stele_registry_reenroll(s->registry, id, token, sizeof(token), &d);
    else
        return respond_error(c, 404, "not_found",
                             "unknown device action; use revoke, quarantine, release or "
                             "reenroll");
    if (rc) {
        char subject[STELE_DEVICE_ID_MAX + 8], details[96];
        snprintf(subject, sizeof(subject), "device:%s", id);
        snprintf(details, sizeof(details), "state=%s error=%d", stele_device_state_name(before),
                 rc);
        if (rc == -EPERM) {
            char act[32];
            snprintf(act, sizeof(act), "device.%s", action);
            (void)server_audit(s, r, act, subject, "denied", details);
        }
        return respond_registry_error(c, rc, id);
    }
    /* Frames checked under the old state finish before the answer (see the top). */
    if (s->sealed)
        stele_sealed_barrier(s->sealed, d.id);
    char act[32], subject[STELE_DEVICE_ID_MAX + 8], details[96];
    snprintf(act, sizeof(act), "device.%s", action);
    snprintf(subject, sizeof(subject), "device:%s", d.id);
    snprintf(details, sizeof(details), "from=%s to=%s", stele_device_state_name(before),
             stele_device_state_name(d.state));
    if (server_audit(s, r, act, subject, "ok", details) != 0) {
        sodium_memzero(token, sizeof(token));
        return respond_audit_failed(c);
    }
    mhd_result res = respond_device(c, 200, &d, token[0] ? token : NULL);
    sodium_memzero(token, sizeof(token));
    return res;
}

mhd_result handle_devices(stele_server *s, struct MHD_Connection *c, request *r, const char *rest)
{
    mhd_result result;
    if (!require_scope(s, c, r, STELE_SCOPE_ADMIN, false, &result))
        return result;
    if (!s->registry)
        return respond_error(c, 404, "not_found", "the device registry is not enabled");
    bool get = !strcmp(r->method, "GET") || !strcmp(r->method, "HEAD");
    bool post = !strcmp(r->method, "POST");
    if (rest[0] == '\0') {
        if (get) {
            const char *tenant = request_param(c, r, "tenant");
            const char *state = request_param(c, r, "state");
            list_ctx l = {.arr = json_array(), .state = -1};
            if (state && *state && (l.state = parse_state(state)) < 0) {
                json_decref(l.arr);
                return respond_error(c, 400, "invalid",
                                     "state must be pending, active, quarantined or revoked");
            }
            if (tenant && *tenant && !(r->token.scopes & STELE_SCOPE_ADMIN) &&
                strcmp(tenant, r->token.tenant)) {
                json_decref(l.arr);
                return respond_error(c, 403, "forbidden", "this token cannot list that tenant");
            }
            if (!l.arr || stele_registry_list(s->registry, tenant && *tenant ? tenant : NULL,
                                              list_device, &l) < 0) {
                json_decref(l.arr);
                return respond_error(c, 503, "unavailable", "out of memory");
            }
            return respond_json(c, 200, json_pack("{s:o}", "devices", l.arr));
        }
        if (post)
            return device_add(s, c, r);
    } else if (rest[0] == '/' && rest[1]) {
        const char *id = rest + 1;
        const char *slash = strchr(id, '/');
        char idbuf[STELE_DEVICE_ID_MAX + 1];
        size_t idlen = slash ? (size_t)(slash - id) : strlen(id);
        if (idlen == 0 || idlen > STELE_DEVICE_ID_MAX || !stele_device_id_valid(id, idlen))
            return respond_error(c, 400, "invalid",
                                 "invalid device id: use 1-64 of A-Z a-z 0-9 . _ -");
        memcpy(idbuf, id, idlen);
        idbuf[idlen] = '\0';
        if (!slash && get) {
            stele_device_info d;
            if (stele_registry_get(s->registry, idbuf, idlen, &d) != 0 || !device_visible(r, &d))
                return respond_registry_error(c, -ENOENT, idbuf);
            return respond_device(c, 200, &d, NULL);
        }
        if (slash && post && slash[1] && !strchr(slash + 1, '/'))
            return device_action(s, c, r, idbuf, slash + 1);
    }
    return respond_error(c, 405, "method_not_allowed",
                         "use GET/POST /api/v1/devices, GET /api/v1/devices/<id>, or POST "
                         "/api/v1/devices/<id>/revoke|quarantine|release|reenroll");
}
