/*
 * keyproof.h — proofs that a device holds a key (SPEC §6): the enrollment proof a device
 * sends with its new public key, and the key rotation request. Shared by the device
 * library (making them, no allocation) and the server (checking them). Format and test
 * vectors: docs/format/keyproof.md.
 *
 * Enrollment proof: an Ed25519 signature by the device's new key over a domain prefix,
 * the device id, the one-time enrollment token, the algorithm and the public key. It
 * shows the server that whoever presents the token holds the secret half of the key it
 * registers, and binds the key to that token and device: a proof seen on the wire is
 * worthless with any other token, device or key.
 *
 * Rotation request: a small canonical binary message (magic "SR", fixed-width
 * little-endian fields) naming the device, its current (old) key id, the new key id (old
 * + 1) and the new public key, with a timestamp, signed by BOTH keys over the same
 * domain-prefixed bytes: the old signature shows the device asks for it, the new one that
 * it holds the new key. The request is deterministic (Ed25519 signatures are), so a
 * device that lost the answer sends the very same bytes again. Sizes are checked before
 * any cryptography; the algorithm byte is checked against what the device's registry
 * entry pins (the caller's job), as for frames.
 */
#ifndef STELE_KEYPROOF_H
#define STELE_KEYPROOF_H

#include <stddef.h>
#include <stdint.h>

#define STELE_KEYPROOF_ALG_ED25519 1 /* = STELE_FRAME_ALG_ED25519 */
#define STELE_KEYPROOF_SIGNATURE_BYTES 64
/* "sen_" + 64 lowercase hex digits: the registry's enrollment token. */
#define STELE_KEYPROOF_TOKEN_LEN 68
/* Signed before the bytes of each proof (with a terminating zero byte), so a signature
 * a device key makes for a frame or anything else never passes for a key proof, and an
 * enrollment proof never for a rotation. */
#define STELE_KEYPROOF_ENROLL_DOMAIN "stele/enroll/v1"
#define STELE_KEYPROOF_ROTATE_DOMAIN "stele/rotate/v1"

/* ---- enrollment proof ---------------------------------------------------------- */

/* Device side: signs the enrollment message with secret_key (64 bytes, libsodium's form:
 * seed then public key; the public key in the message is its second half).
 * -EINVAL for a bad device id (1..64 of [A-Za-z0-9._-]) or token (not "sen_" + 64
 * lowercase hex). */
int stele_keyproof_enroll_sign(const uint8_t secret_key[64], const char *device_id,
                               size_t device_id_len, const char *token, size_t token_len,
                               uint8_t signature[STELE_KEYPROOF_SIGNATURE_BYTES]);

/* Server side: 0 when signature is public_key's over this device id, token, algorithm
 * and key; -EBADMSG when it is not; -EINVAL for a bad device id or token format;
 * -ENOTSUP for an algorithm other than Ed25519. */
int stele_keyproof_enroll_verify(const char *device_id, size_t device_id_len, const char *token,
                                 size_t token_len, uint8_t alg, const uint8_t public_key[32],
                                 const uint8_t signature[STELE_KEYPROOF_SIGNATURE_BYTES]);

/* ---- rotation request ---------------------------------------------------------- */

#define STELE_ROTATION_CONTENT_TYPE "application/vnd.stele.rotation"
#define STELE_ROTATION_VERSION 1
/* Bytes of a request: 181 + the device id length (1..64). */
#define STELE_ROTATION_FIXED_BYTES 181
#define STELE_ROTATION_MIN_BYTES (STELE_ROTATION_FIXED_BYTES + 1)
#define STELE_ROTATION_MAX_BYTES (STELE_ROTATION_FIXED_BYTES + 64)

/* A parsed request: views into the caller's buffer, valid while it lives. */
typedef struct {
    uint8_t version, alg;
    const char *device_id;
    size_t device_id_len;
    uint32_t old_key_id;
    uint32_t new_key_id;           /* old_key_id + 1 (the parser refuses anything else) */
    const uint8_t *new_public_key; /* 32 bytes */
    int64_t timestamp_ns;          /* the device's clock when it prepared the rotation */
    const uint8_t *signed_bytes;   /* what both signatures cover (after the prefix) */
    size_t signed_len;
    const uint8_t *old_signature; /* by the old (current) key */
    const uint8_t *new_signature; /* by the new key */
} stele_keyproof_rotation;

/* Device side (no allocation): writes the request into buf[0..cap) and its size into
 * *len (≤ STELE_ROTATION_MAX_BYTES). Keys in libsodium's 64-byte form.
 * -EINVAL for a bad device id, new_key_id != old_key_id + 1, old_key_id 0, or the same
 * key twice; -ENOSPC when cap is too small. */
int stele_keyproof_rotation_build(uint8_t *buf, size_t cap, const char *device_id,
                                  uint32_t old_key_id, const uint8_t old_secret_key[64],
                                  uint32_t new_key_id, const uint8_t new_secret_key[64],
                                  int64_t timestamp_ns, size_t *len);

/* Server side: parses and validates buf[0..len) completely (size first, then magic,
 * version, algorithm, device id, key ids); no cryptography. 0; -EMSGSIZE over
 * STELE_ROTATION_MAX_BYTES; -EBADMSG with *why (may be NULL) naming the first problem. */
int stele_keyproof_rotation_parse(const uint8_t *buf, size_t len, stele_keyproof_rotation *out,
                                  const char **why);

/* Server side: verifies both signatures — the old one with old_public_key (the key the
 * registry holds for old_key_id), the new one with the key carried in the request.
 * 0; -EBADMSG when either fails; -EINVAL when the new key equals the old one; -ENOTSUP
 * for another algorithm. */
int stele_keyproof_rotation_verify(const stele_keyproof_rotation *r,
                                   const uint8_t old_public_key[32]);

#endif
