/*
 * handle_enroll.c — the two key ceremonies a device performs itself, without an API
 * token (SPEC §6):
 *
 *   POST /api/v1/enroll   JSON {"device","token","algorithm":"ed25519","public_key":hex,
 *                         "firmware","proof":hex}: the one-time enrollment token plus a
 *                         proof that the caller holds the key it registers
 *                         (docs/format/keyproof.md) → 200 {"device","tenant","key_id",
 *                         "state"}.
 *   POST /api/v1/rotate   a rotation request (application/vnd.stele.rotation) signed by
 *                         the current and the new key → 200 {"device","key_id",
 *                         "overlap_deadline"}.
 *
 * Order of checks: the source's failure budget (429 before any work), then sizes and
 * formats, then the registry (memory only), then signatures; a refusal is charged to
 * the source. Refusals say as little as possible to a guesser: an unknown device, a wrong
 * token and a used or expired one all answer the same 403. Successes are audited
 * durably before the answer; refusals are counted and summarised into the trail per
 * interval (control.c), so guessing cannot grow it without bound.
 */
#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "common/clock.h"
#include "server/server_internal.h"
#include "stele/frame.h"
#include "stele/keyproof.h"

/* An enrollment is six short fields; a few KiB is generous. */
#define ENROLL_BODY_MAX 4096
#define SOURCE_RETRY_AFTER_S "5"

static mhd_result respond_throttled(stele_server *s, struct MHD_Connection *c)
{
    __atomic_add_fetch(&s->control.source_throttled, 1, __ATOMIC_RELAXED);
    static const char *const hdr[] = {"Retry-After", SOURCE_RETRY_AFTER_S, NULL};
    const char *body = "{\"code\":\"too_many_failures\",\"message\":\"too many failed device "
                       "requests from this address; check the device's keys and enrollment "
                       "token, then retry later\"}\n";
    return respond(c, 429, "application/json", (char *)body, strlen(body), false, hdr);
}

/* A refusal: counted, charged to the source, answered. */
static mhd_result refuse(stele_server *s, struct MHD_Connection *c, uint64_t *counter,
                         unsigned status, const char *code, const char *message)
{
    __atomic_add_fetch(counter, 1, __ATOMIC_RELAXED);
    source_limiter_charge(s->sources, c, 1, clock_wall_ns());
    return respond_error(c, status, code, message);
}

static bool hex_exact(const char *hex, uint8_t *out, size_t n)
{
    size_t got = 0;
    return hex && strlen(hex) == 2 * n &&
           sodium_hex2bin(out, n, hex, 2 * n, NULL, &got, NULL) == 0 && got == n;
}

mhd_result handle_enroll(stele_server *s, struct MHD_Connection *c, request *r)
{
    uint64_t *refused = &s->control.enroll_refused;
    if (!s->registry)
        return respond_error(c, 404, "not_found", "the device registry is not enabled");
    if (!source_limiter_allow(s->sources, c, clock_wall_ns()))
        return respond_throttled(s, c);
    if (r->body_len > ENROLL_BODY_MAX)
        return refuse(s, c, refused, 413, "too_large", "enrollment body too large");
    json_error_t jerr;
    json_t *req = json_loadb(r->body ? r->body : "", r->body_len, 0, &jerr);
    const char *device = NULL, *token = NULL, *alg = NULL, *pk_hex = NULL, *fw = "",
               *proof_hex = NULL;
    uint8_t pk[32], proof[64];
    if (!req ||
        json_unpack(req, "{s:s,s:s,s:s,s:s,s?s,s:s}", "device", &device, "token", &token,
                    "algorithm", &alg, "public_key", &pk_hex, "firmware", &fw, "proof",
                    &proof_hex) != 0 ||
        !hex_exact(pk_hex, pk, sizeof(pk)) || !hex_exact(proof_hex, proof, sizeof(proof))) {
        json_decref(req);
        return refuse(s, c, refused, 400, "invalid",
                      "expected {\"device\":ID,\"token\":\"sen_…\",\"algorithm\":\"ed25519\","
                      "\"public_key\":64 hex,\"firmware\":V,\"proof\":128 hex} (stele agent "
                      "enroll builds it)");
    }
    if (strcmp(alg, "ed25519") != 0) {
        json_decref(req);
        return refuse(s, c, refused, 400, "invalid", "algorithm must be \"ed25519\"");
    }
    size_t idlen = strlen(device);
    if (!stele_device_id_valid(device, idlen)) {
        json_decref(req);
        return refuse(s, c, refused, 400, "invalid",
                      "invalid device id: use 1-64 of A-Z a-z 0-9 . _ -");
    }
    /* Proof before the registry: a forged key never reaches the token check. */
    int rc = stele_keyproof_enroll_verify(device, idlen, token, strlen(token),
                                          STELE_FRAME_ALG_ED25519, pk, proof);
    stele_device_info d;
    bool proof_ok = rc == 0;
    if (proof_ok)
        rc = stele_registry_enroll(s->registry, device, token, strlen(token),
                                   STELE_FRAME_ALG_ED25519, pk, fw, &d);
    if (proof_ok && rc == -EINVAL) {
        json_decref(req);
        return refuse(s, c, refused, 400, "invalid",
                      "invalid firmware version: up to 64 printable characters");
    }
    if (rc == -EIO || rc == -ENOMEM) {
        json_decref(req);
        return respond_error(c, 503, "unavailable",
                             "the registry could not store the enrollment; retry later");
    }
    /* A retry after a lost answer: the token is spent, but the device is active under
     * exactly the key whose proof just verified over that token — answer as before,
     * changing nothing (the proof shows the caller holds the enrolled key). */
    if (proof_ok && rc == -EACCES && stele_registry_get(s->registry, device, idlen, &d) == 0 &&
        d.state == STELE_DEVICE_ACTIVE && sodium_memcmp(d.key.public_key, pk, 32) == 0) {
        json_decref(req);
        return respond_json(c, 200,
                            json_pack("{s:s,s:s,s:I,s:s}", "device", d.id, "tenant", d.tenant,
                                      "key_id", (json_int_t)d.key.key_id, "state",
                                      stele_device_state_name(d.state)));
    }
    if (rc) {
        json_decref(req);
        return refuse(s, c, refused, 403, "forbidden",
                      "enrollment refused: the device, token or proof is not valid, or the "
                      "token was used or has expired; ask an operator for a new one (stele "
                      "device reenroll)");
    }
    json_decref(req);
    char actor[STELE_DEVICE_ID_MAX + 8], details[160];
    snprintf(actor, sizeof(actor), "device:%s", d.id);
    snprintf(details, sizeof(details), "key_id=%u firmware=%s tenant=%s", d.key.key_id, d.firmware,
             d.tenant);
    if (server_audit_actor(s, actor, "device.enroll", actor, "ok", details) != 0)
        return respond_error(c, 503, "unavailable",
                             "enrolled, but the audit trail failed; the server must be "
                             "restarted — then enroll again with a new token");
    __atomic_add_fetch(&s->control.enroll_ok, 1, __ATOMIC_RELAXED);
    return respond_json(c, 200,
                        json_pack("{s:s,s:s,s:I,s:s}", "device", d.id, "tenant", d.tenant, "key_id",
                                  (json_int_t)d.key.key_id, "state",
                                  stele_device_state_name(d.state)));
}

static mhd_result respond_rotated(struct MHD_Connection *c, const stele_device_info *d,
                                  uint32_t key_id)
{
    char deadline[40] = "";
    if (d->next.key_id == key_id)
        format_rfc3339(d->overlap_deadline_ns, deadline, sizeof(deadline));
    json_t *o = json_pack("{s:s,s:I}", "device", d->id, "key_id", (json_int_t)key_id);
    if (o)
        json_object_set_new(o, "overlap_deadline",
                            deadline[0] ? json_string(deadline) : json_null());
    return respond_json(c, 200, o);
}

mhd_result handle_rotate(stele_server *s, struct MHD_Connection *c, request *r)
{
    uint64_t *refused = &s->control.rotate_refused;
    if (!s->registry)
        return respond_error(c, 404, "not_found", "the device registry is not enabled");
    int64_t now = clock_wall_ns();
    if (!source_limiter_allow(s->sources, c, now))
        return respond_throttled(s, c);
    stele_keyproof_rotation rot;
    const char *why = NULL;
    int rc = stele_keyproof_rotation_parse((const uint8_t *)r->body, r->body_len, &rot, &why);
    if (rc) {
        char msg[200];
        snprintf(msg, sizeof(msg), "malformed rotation request: %s (stele agent rotate builds it)",
                 why ? why : "too large");
        return refuse(s, c, refused, 400, "invalid", msg);
    }
    static const char forbidden[] =
        "rotation refused: unknown or revoked device, wrong current key id, or a signature "
        "that does not verify";
    stele_device_info d;
    if (stele_registry_get(s->registry, rot.device_id, rot.device_id_len, &d) != 0 ||
        (d.state != STELE_DEVICE_ACTIVE && d.state != STELE_DEVICE_QUARANTINED) ||
        !(d.allowed_algs & (1u << rot.alg)))
        return refuse(s, c, refused, 403, "forbidden", forbidden);
    /* A retry after the rotation completed: the new key is current already, and the
     * request's new-key signature must verify with it (the old key is gone). */
    if (d.key.key_id == rot.new_key_id &&
        sodium_memcmp(d.key.public_key, rot.new_public_key, 32) == 0) {
        uint8_t msg[sizeof(STELE_KEYPROOF_ROTATE_DOMAIN) + STELE_ROTATION_MAX_BYTES];
        if (rot.signed_len > STELE_ROTATION_MAX_BYTES)
            return refuse(s, c, refused, 403, "forbidden", forbidden);
        memcpy(msg, STELE_KEYPROOF_ROTATE_DOMAIN, sizeof(STELE_KEYPROOF_ROTATE_DOMAIN));
        memcpy(msg + sizeof(STELE_KEYPROOF_ROTATE_DOMAIN), rot.signed_bytes, rot.signed_len);
        if (crypto_sign_verify_detached(rot.new_signature, msg,
                                        sizeof(STELE_KEYPROOF_ROTATE_DOMAIN) + rot.signed_len,
                                        d.key.public_key) != 0)
            return refuse(s, c, refused, 403, "forbidden", forbidden);
        return respond_rotated(c, &d, rot.new_key_id);
    }
    if (d.key.key_id != rot.old_key_id ||
        stele_keyproof_rotation_verify(&rot, d.key.public_key) != 0)
        return refuse(s, c, refused, 403, "forbidden", forbidden);
    int64_t overlap =
        s->cfg.rotation_overlap_ns > 0 ? s->cfg.rotation_overlap_ns : 3600 * INT64_C(1000000000);
    bool retry = d.next.key_id == rot.new_key_id &&
                 sodium_memcmp(d.next.public_key, rot.new_public_key, 32) == 0;
    rc = stele_registry_rotate(s->registry, d.id, rot.old_key_id, rot.alg, rot.new_public_key,
                               now + overlap, &d);
    if (rc == -EPERM || rc == -ENOENT)
        return refuse(s, c, refused, 409, "conflict",
                      "a different rotation is already pending for this device; use the key "
                      "it announced, or wait for its overlap deadline");
    if (rc)
        return respond_error(c, 503, "unavailable",
                             "the registry could not store the rotation; retry the same "
                             "request later");
    if (!retry) {
        char actor[STELE_DEVICE_ID_MAX + 8], details[160], deadline[40];
        snprintf(actor, sizeof(actor), "device:%s", d.id);
        format_rfc3339(d.overlap_deadline_ns, deadline, sizeof(deadline));
        snprintf(details, sizeof(details), "old_key_id=%u new_key_id=%u overlap_deadline=%s",
                 rot.old_key_id, rot.new_key_id, deadline);
        if (server_audit_actor(s, actor, "device.rotate", actor, "ok", details) != 0)
            return respond_error(c, 503, "unavailable",
                                 "rotation stored but the audit trail failed; restart the "
                                 "server, then retry the same request");
    }
    __atomic_add_fetch(&s->control.rotate_ok, 1, __ATOMIC_RELAXED);
    return respond_rotated(c, &d, rot.new_key_id);
}
