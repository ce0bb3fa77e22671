/*
 * keyproof.c — enrollment proofs and key rotation requests (see stele/keyproof.h;
 * docs/format/keyproof.md has the test vectors).
 *
 * ENROLLMENT PROOF: a 64-byte Ed25519 signature (RFC 8032, pure) by the new key of
 *   "stele/enroll/v1" 00 | d (1) | device id (d) | token (68) | alg (1) | public key (32)
 * The message is at most 182 bytes and is built on the stack.
 *
 * ROTATION REQUEST, version 1 (little-endian, fixed width; 181 + d bytes):
 *   0     2  magic "SR"
 *   2     1  version (1)
 *   3     1  algorithm (1 = Ed25519) of both keys
 *   4     1  device id length d (1..64)
 *   5     d  device id, [A-Za-z0-9._-]
 *   5+d   4  old key id (≥ 1: the device's current key)
 *   9+d   4  new key id (= old + 1)
 *   13+d  32 new public key
 *   45+d  8  timestamp, ns since the epoch (signed; when the device prepared it)
 *   53+d  64 Ed25519 signature by the OLD key  } both over "stele/rotate/v1" 00 and
 *   117+d 64 Ed25519 signature by the NEW key  } bytes [0, 53+d)
 *
 * Design: the request is canonical (every field fixed width, no trailing bytes, its
 * size a function of d), so the bytes signed are the bytes parsed. Both signatures cover
 * the same bytes — which include the new public key — so neither can be moved onto
 * another request. The size is checked first, then every field, and the signatures only
 * once all of that passed: a flood of junk costs no cryptography. The timestamp is not
 * judged here: the server bounds its age, and a device that retries after a lost answer
 * sends the same bytes, timestamp included.
 */
#include "stele/keyproof.h"

#include <errno.h>
#include <sodium.h>
#include <string.h>

#include "common/bytes.h"
#include "device/device_id.h"

#define ENROLL_DOMAIN_BYTES sizeof(STELE_KEYPROOF_ENROLL_DOMAIN) /* with its zero byte */
#define ROTATE_DOMAIN_BYTES sizeof(STELE_KEYPROOF_ROTATE_DOMAIN)
#define ENROLL_MESSAGE_MAX                                                                         \
    (ENROLL_DOMAIN_BYTES + 1 + DEVICE_ID_MAX + STELE_KEYPROOF_TOKEN_LEN + 1 + 32)

#define ROTATION_MAGIC0 'S'
#define ROTATION_MAGIC1 'R'
/* Fixed part of the signed bytes: magic, version, algorithm, d, key ids, key, time. */
#define ROTATION_SIGNED_FIXED (2 + 1 + 1 + 1 + 4 + 4 + 32 + 8)
#define ROTATION_MESSAGE_MAX (ROTATE_DOMAIN_BYTES + ROTATION_SIGNED_FIXED + DEVICE_ID_MAX)

_Static_assert(ROTATION_SIGNED_FIXED + 2 * STELE_KEYPROOF_SIGNATURE_BYTES ==
                   STELE_ROTATION_FIXED_BYTES,
               "rotation layout and STELE_ROTATION_FIXED_BYTES agree");
_Static_assert(DEVICE_ID_MAX == STELE_ROTATION_MAX_BYTES - STELE_ROTATION_FIXED_BYTES,
               "the longest device id fills STELE_ROTATION_MAX_BYTES");
_Static_assert(ENROLL_MESSAGE_MAX == 182, "enrollment message as documented");

/* "sen_" + 64 lowercase hex digits. */
static bool token_valid(const char *t, size_t n)
{
    if (!t || n != STELE_KEYPROOF_TOKEN_LEN || memcmp(t, "sen_", 4) != 0)
        return false;
    for (size_t i = 4; i < n; i++)
        if (!((t[i] >= '0' && t[i] <= '9') || (t[i] >= 'a' && t[i] <= 'f')))
            return false;
    return true;
}

/* Writes the enrollment message into msg (ENROLL_MESSAGE_MAX bytes); returns its size. */
static size_t enroll_message(uint8_t *msg, const char *device_id, size_t d, const char *token,
                             uint8_t alg, const uint8_t public_key[32])
{
    size_t at = 0;
    memcpy(msg, STELE_KEYPROOF_ENROLL_DOMAIN, ENROLL_DOMAIN_BYTES);
    at += ENROLL_DOMAIN_BYTES;
    msg[at++] = (uint8_t)d;
    memcpy(msg + at, device_id, d);
    at += d;
    memcpy(msg + at, token, STELE_KEYPROOF_TOKEN_LEN);
    at += STELE_KEYPROOF_TOKEN_LEN;
    msg[at++] = alg;
    memcpy(msg + at, public_key, 32);
    return at + 32;
}

int stele_keyproof_enroll_sign(const uint8_t secret_key[64], const char *device_id,
                               size_t device_id_len, const char *token, size_t token_len,
                               uint8_t signature[STELE_KEYPROOF_SIGNATURE_BYTES])
{
    uint8_t msg[ENROLL_MESSAGE_MAX];
    if (!device__id_valid(device_id, device_id_len) || !token_valid(token, token_len))
        return -EINVAL;
    size_t n = enroll_message(msg, device_id, device_id_len, token, STELE_KEYPROOF_ALG_ED25519,
                              secret_key + 32);
    crypto_sign_detached(signature, NULL, msg, n, secret_key);
    sodium_memzero(msg, sizeof(msg)); /* holds the token */
    return 0;
}

int stele_keyproof_enroll_verify(const char *device_id, size_t device_id_len, const char *token,
                                 size_t token_len, uint8_t alg, const uint8_t public_key[32],
                                 const uint8_t signature[STELE_KEYPROOF_SIGNATURE_BYTES])
{
    uint8_t msg[ENROLL_MESSAGE_MAX];
    if (!device__id_valid(device_id, device_id_len) || !token_valid(token, token_len))
        return -EINVAL;
    if (alg != STELE_KEYPROOF_ALG_ED25519)
        return -ENOTSUP;
    size_t n = enroll_message(msg, device_id, device_id_len, token, alg, public_key);
    int rc = crypto_sign_verify_detached(signature, msg, n, public_key) == 0 ? 0 : -EBADMSG;
    sodium_memzero(msg, sizeof(msg));
    return rc;
}

/* ---- rotation request ---------------------------------------------------------- */

int stele_keyproof_rotation_build(uint8_t *buf, size_t cap, const char *device_id,
                                  uint32_t old_key_id, const uint8_t old_secret_key[64],
                                  uint32_t new_key_id, const uint8_t new_secret_key[64],
                                  int64_t timestamp_ns, size_t *len)
{
    size_t d = device_id ? strlen(device_id) : 0;
    if (!device__id_valid(device_id, d) || old_key_id == 0 || old_key_id == UINT32_MAX ||
        new_key_id != old_key_id + 1 ||
        sodium_memcmp(old_secret_key + 32, new_secret_key + 32, 32) == 0)
        return -EINVAL;
    size_t signed_len = ROTATION_SIGNED_FIXED + d;
    if (cap < signed_len + 2 * STELE_KEYPROOF_SIGNATURE_BYTES)
        return -ENOSPC;
    /* The message (domain, then the request's signed bytes) is built on the stack and
     * copied out: one contiguous buffer to sign, no allocation. */
    uint8_t msg[ROTATION_MESSAGE_MAX];
    uint8_t *p = msg + ROTATE_DOMAIN_BYTES;
    memcpy(msg, STELE_KEYPROOF_ROTATE_DOMAIN, ROTATE_DOMAIN_BYTES);
    p[0] = ROTATION_MAGIC0;
    p[1] = ROTATION_MAGIC1;
    p[2] = STELE_ROTATION_VERSION;
    p[3] = STELE_KEYPROOF_ALG_ED25519;
    p[4] = (uint8_t)d;
    memcpy(p + 5, device_id, d);
    put_le32(p + 5 + d, old_key_id);
    put_le32(p + 9 + d, new_key_id);
    memcpy(p + 13 + d, new_secret_key + 32, 32);
    put_le64(p + 45 + d, (uint64_t)timestamp_ns);
    size_t msg_len = ROTATE_DOMAIN_BYTES + signed_len;
    memcpy(buf, p, signed_len);
    crypto_sign_detached(buf + signed_len, NULL, msg, msg_len, old_secret_key);
    crypto_sign_detached(buf + signed_len + STELE_KEYPROOF_SIGNATURE_BYTES, NULL, msg, msg_len,
                         new_secret_key);
    *len = signed_len + 2 * STELE_KEYPROOF_SIGNATURE_BYTES;
    return 0;
}

#define BAD(msg)                                                                                   \
    do {                                                                                           \
        *why = msg;                                                                                \
        return -EBADMSG;                                                                           \
    } while (0)

int stele_keyproof_rotation_parse(const uint8_t *buf, size_t len, stele_keyproof_rotation *out,
                                  const char **why)
{
    static const char *unused;
    if (!why)
        why = &unused;
    if (len > STELE_ROTATION_MAX_BYTES) {
        *why = "rotation request larger than the limit";
        return -EMSGSIZE;
    }
    if (len < STELE_ROTATION_MIN_BYTES)
        BAD("rotation request too short");
    if (buf[0] != ROTATION_MAGIC0 || buf[1] != ROTATION_MAGIC1)
        BAD("not a rotation request (bad magic)");
    if (buf[2] != STELE_ROTATION_VERSION)
        BAD("unsupported rotation request version");
    if (buf[3] != STELE_KEYPROOF_ALG_ED25519)
        BAD("unsupported signature algorithm");
    size_t d = buf[4];
    if (d == 0 || d > DEVICE_ID_MAX || len != STELE_ROTATION_FIXED_BYTES + d)
        BAD("device id length does not match the request size");
    if (!device__id_valid((const char *)buf + 5, d))
        BAD("invalid device id");
    memset(out, 0, sizeof(*out));
    out->version = buf[2];
    out->alg = buf[3];
    out->device_id = (const char *)buf + 5;
    out->device_id_len = d;
    out->old_key_id = get_le32(buf + 5 + d);
    out->new_key_id = get_le32(buf + 9 + d);
    if (out->old_key_id == 0)
        BAD("old key id 0 (no key has it)");
    if (out->old_key_id == UINT32_MAX || out->new_key_id != out->old_key_id + 1)
        BAD("new key id is not the old key id + 1");
    out->new_public_key = buf + 13 + d;
    out->timestamp_ns = (int64_t)get_le64(buf + 45 + d);
    out->signed_bytes = buf;
    out->signed_len = ROTATION_SIGNED_FIXED + d;
    out->old_signature = buf + out->signed_len;
    out->new_signature = out->old_signature + STELE_KEYPROOF_SIGNATURE_BYTES;
    return 0;
}

int stele_keyproof_rotation_verify(const stele_keyproof_rotation *r,
                                   const uint8_t old_public_key[32])
{
    if (r->alg != STELE_KEYPROOF_ALG_ED25519)
        return -ENOTSUP;
    if (r->signed_len > ROTATION_MESSAGE_MAX - ROTATE_DOMAIN_BYTES)
        return -EINVAL; /* not from stele_keyproof_rotation_parse */
    /* The same key twice would let one signature stand for both. */
    if (sodium_memcmp(old_public_key, r->new_public_key, 32) == 0)
        return -EINVAL;
    uint8_t msg[ROTATION_MESSAGE_MAX];
    memcpy(msg, STELE_KEYPROOF_ROTATE_DOMAIN, ROTATE_DOMAIN_BYTES);
    memcpy(msg + ROTATE_DOMAIN_BYTES, r->signed_bytes, r->signed_len);
    size_t n = ROTATE_DOMAIN_BYTES + r->signed_len;
    if (crypto_sign_verify_detached(r->old_signature, msg, n, old_public_key) != 0)
        return -EBADMSG;
    if (crypto_sign_verify_detached(r->new_signature, msg, n, r->new_public_key) != 0)
        return -EBADMSG;
    return 0;
}
