/*
 * fuzz_keyproof.c — libFuzzer target for the key proofs (stele/keyproof.h).
 *
 * Parses arbitrary bytes as a rotation request. When one parses, it checks what the
 * parser promises — the size is exactly 181 + the device id length, the key ids step by
 * one, every view lies inside the input, the signatures follow the signed bytes — and
 * that verifying against a fixed key and against the request's own new key simply
 * answers (a request never verifies with its new key as the old one). The same bytes are
 * then read as an enrollment attempt (device id, token, key, proof cut from the input),
 * whose verification must also just answer.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stele/keyproof.h"

#define fuzz_check(cond, what)                                                                     \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_keyproof: invariant failed: %s: %s\n", #cond, what);             \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static void fuzz_rotation(const uint8_t *data, size_t size)
{
    stele_keyproof_rotation r;
    const char *why = NULL;
    if (stele_keyproof_rotation_parse(data, size, &r, &why) != 0) {
        fuzz_check(why && *why, "a refusal names its reason");
        return;
    }
    fuzz_check(size == STELE_ROTATION_FIXED_BYTES + r.device_id_len, "size is 181 + d");
    fuzz_check(r.device_id_len >= 1 && r.device_id_len <= 64, "device id length");
    fuzz_check(r.old_key_id >= 1 && r.new_key_id == r.old_key_id + 1, "key ids step by one");
    fuzz_check(r.signed_bytes == data && r.signed_len + 128 == size, "signed bytes");
    fuzz_check(r.old_signature == data + r.signed_len, "old signature follows");
    fuzz_check(r.new_signature == r.old_signature + 64, "new signature follows");
    fuzz_check(r.new_public_key + 32 <= r.old_signature, "new key inside the signed bytes");
    static const uint8_t key[32] = {1};
    int rc = stele_keyproof_rotation_verify(&r, key);
    fuzz_check(rc == 0 || rc < 0, "verify answers");
    fuzz_check(stele_keyproof_rotation_verify(&r, r.new_public_key) != 0,
               "the new key cannot stand for the old one");
}

static void fuzz_enroll(const uint8_t *data, size_t size)
{
    /* d, device id, 68 token bytes, alg, 32 key, 64 proof */
    if (size < 1)
        return;
    size_t d = data[0] % 70;
    if (size < 1 + d + STELE_KEYPROOF_TOKEN_LEN + 1 + 32 + 64)
        return;
    const char *device = (const char *)data + 1;
    const char *token = device + d;
    const uint8_t *rest = (const uint8_t *)token + STELE_KEYPROOF_TOKEN_LEN;
    int rc = stele_keyproof_enroll_verify(device, d, token, STELE_KEYPROOF_TOKEN_LEN, rest[0],
                                          rest + 1, rest + 33);
    fuzz_check(rc == 0 || rc < 0, "verify answers");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_rotation(data, size);
    fuzz_enroll(data, size);
    return 0;
}
