/*
 * test_keyproof.c — enrollment proofs and rotation requests (stele/keyproof.h): the
 * vectors of docs/format/keyproof.md byte for byte with their verdicts (read from the
 * doc, so it cannot drift); every flipped bit, every truncation, an appended byte and an
 * oversized body refused; a request signed by only one of its two keys refused; key ids
 * that do not step by one refused on both sides; the same key twice refused.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stele/keyproof.h"

#include "test_util.h"

#define VECTOR_DEVICE "pump-7"
#define VECTOR_TOKEN "sen_000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
#define VECTOR_TIME INT64_C(1764000000000000000)

typedef struct {
    uint8_t pk[32], sk[64];
} keypair;

/* The vectors' keys: old from the seed 00 01 … 1f, new from 20 21 … 3f. */
static void vector_keys(keypair *old_key, keypair *new_key)
{
    uint8_t seed[32];
    for (int i = 0; i < 32; i++)
        seed[i] = (uint8_t)i;
    assert_int_equal(crypto_sign_seed_keypair(old_key->pk, old_key->sk, seed), 0);
    for (int i = 0; i < 32; i++)
        seed[i] = (uint8_t)(32 + i);
    assert_int_equal(crypto_sign_seed_keypair(new_key->pk, new_key->sk, seed), 0);
}

/* A vector of docs/format/keyproof.md ("<!-- vector:NAME[ verdict:V] -->"); its verdict
 * (or "") into verdict when not NULL. */
static size_t doc_vector(const char *name, uint8_t *out, size_t cap, char *verdict,
                         size_t verdict_cap)
{
    char label[128], note[32];
    snprintf(label, sizeof(label), "vector:%s", name);
    size_t len = test_doc_vector_note("keyproof.md", label, out, cap, note, sizeof(note));
    if (verdict)
        snprintf(verdict, verdict_cap, "%s",
                 strncmp(note, "verdict:", 8) == 0 ? note + strlen("verdict:") : "");
    return len;
}

/* Prints bytes in the document's layout (32 to a line), for STELE_PRINT_VECTOR. */
static void print_hex(const char *what, const uint8_t *p, size_t n)
{
    printf("%s:\n", what);
    test_print_hex(stdout, p, n, 32, "");
}

/* The verdict on a rotation request: "accepted", "malformed" or "bad-signature". */
static const char *rotation_verdict(const uint8_t *buf, size_t len, const uint8_t old_pk[32])
{
    stele_keyproof_rotation r;
    const char *why = NULL;
    int rc = stele_keyproof_rotation_parse(buf, len, &r, &why);
    if (rc == -EMSGSIZE)
        return "oversized";
    if (rc)
        return "malformed";
    rc = stele_keyproof_rotation_verify(&r, old_pk);
    if (rc == -EBADMSG)
        return "bad-signature";
    return rc == 0 ? "accepted" : "refused-other";
}

static size_t vector_rotation(uint8_t *buf, size_t cap, const keypair *o, const keypair *n)
{
    size_t len = 0;
    assert_int_equal(stele_keyproof_rotation_build(buf, cap, VECTOR_DEVICE, 1, o->sk, 2, n->sk,
                                                   VECTOR_TIME, &len),
                     0);
    return len;
}

/* ---- enrollment ------------------------------------------------------------------ */

static void test_enroll_vector_matches_the_doc(void **state)
{
    (void)state;
    keypair o, n;
    vector_keys(&o, &n);
    uint8_t doc_pk[32], sig[64], want[64];
    char verdict[32];
    assert_int_equal(doc_vector("old-public-key", doc_pk, sizeof(doc_pk), NULL, 0), 32);
    assert_memory_equal(doc_pk, o.pk, 32);
    assert_int_equal(doc_vector("new-public-key", doc_pk, sizeof(doc_pk), NULL, 0), 32);
    assert_memory_equal(doc_pk, n.pk, 32);

    /* The message as documented, signed by hand, gives the documented proof too. */
    uint8_t msg[256], doc_msg[256];
    size_t mlen = doc_vector("enroll-message", doc_msg, sizeof(doc_msg), NULL, 0);
    size_t at = 0;
    memcpy(msg, "stele/enroll/v1", 16);
    at = 16;
    msg[at++] = 6;
    memcpy(msg + at, VECTOR_DEVICE, 6);
    at += 6;
    memcpy(msg + at, VECTOR_TOKEN, 68);
    at += 68;
    msg[at++] = 1;
    memcpy(msg + at, o.pk, 32);
    at += 32;
    assert_int_equal(mlen, at);
    assert_memory_equal(msg, doc_msg, at);

    assert_int_equal(stele_keyproof_enroll_sign(o.sk, VECTOR_DEVICE, 6, VECTOR_TOKEN, 68, sig), 0);
    if (getenv("STELE_PRINT_VECTOR"))
        print_hex("enroll-proof", sig, 64);
    assert_int_equal(doc_vector("enroll-proof", want, sizeof(want), verdict, sizeof(verdict)), 64);
    assert_string_equal(verdict, "accepted");
    assert_memory_equal(sig, want, 64);
    uint8_t by_hand[64];
    crypto_sign_detached(by_hand, NULL, msg, at, o.sk);
    assert_memory_equal(by_hand, want, 64);
    assert_int_equal(
        stele_keyproof_enroll_verify(VECTOR_DEVICE, 6, VECTOR_TOKEN, 68, 1, o.pk, want), 0);
}

static void test_enroll_refusals(void **state)
{
    (void)state;
    keypair o, n;
    vector_keys(&o, &n);
    uint8_t sig[64];
    assert_int_equal(doc_vector("enroll-proof", sig, sizeof(sig), NULL, 0), 64);
    /* Another key, device or token. */
    assert_int_equal(stele_keyproof_enroll_verify(VECTOR_DEVICE, 6, VECTOR_TOKEN, 68, 1, n.pk, sig),
                     -EBADMSG);
    assert_int_equal(stele_keyproof_enroll_verify("pump-8", 6, VECTOR_TOKEN, 68, 1, o.pk, sig),
                     -EBADMSG);
    char token[69];
    memcpy(token, VECTOR_TOKEN, 69);
    token[67] = 'e';
    assert_int_equal(stele_keyproof_enroll_verify(VECTOR_DEVICE, 6, token, 68, 1, o.pk, sig),
                     -EBADMSG);
    /* Malformed token or device id, another algorithm: no cryptography. */
    token[67] = 'F'; /* uppercase hex is not the registry's form */
    assert_int_equal(stele_keyproof_enroll_verify(VECTOR_DEVICE, 6, token, 68, 1, o.pk, sig),
                     -EINVAL);
    assert_int_equal(stele_keyproof_enroll_verify(VECTOR_DEVICE, 6, VECTOR_TOKEN, 67, 1, o.pk, sig),
                     -EINVAL);
    assert_int_equal(stele_keyproof_enroll_verify("pump 7", 6, VECTOR_TOKEN, 68, 1, o.pk, sig),
                     -EINVAL);
    assert_int_equal(stele_keyproof_enroll_verify("", 0, VECTOR_TOKEN, 68, 1, o.pk, sig), -EINVAL);
    assert_int_equal(stele_keyproof_enroll_verify(VECTOR_DEVICE, 6, VECTOR_TOKEN, 68, 2, o.pk, sig),
                     -ENOTSUP);
    assert_int_equal(stele_keyproof_enroll_sign(o.sk, VECTOR_DEVICE, 6, token, 68, sig), -EINVAL);
    /* Every flipped bit of the proof. */
    assert_int_equal(doc_vector("enroll-proof", sig, sizeof(sig), NULL, 0), 64);
    for (size_t i = 0; i < 64 * 8; i++) {
        sig[i / 8] ^= (uint8_t)(1u << (i % 8));
        if (stele_keyproof_enroll_verify(VECTOR_DEVICE, 6, VECTOR_TOKEN, 68, 1, o.pk, sig) == 0)
            fail_msg("enrollment proof bit %zu flipped: still accepted", i);
        sig[i / 8] ^= (uint8_t)(1u << (i % 8));
    }
}

/* ---- rotation -------------------------------------------------------------------- */

static void test_rotation_vectors_match_the_doc(void **state)
{
    (void)state;
    keypair o, n;
    vector_keys(&o, &n);
    uint8_t buf[STELE_ROTATION_MAX_BYTES], want[512];
    char verdict[32];
    size_t len = vector_rotation(buf, sizeof(buf), &o, &n);
    if (getenv("STELE_PRINT_VECTOR"))
        print_hex("rotation", buf, len);
    size_t wlen = doc_vector("rotation", want, sizeof(want), verdict, sizeof(verdict));
    assert_int_equal(len, wlen);
    assert_int_equal(len, STELE_ROTATION_FIXED_BYTES + 6);
    assert_memory_equal(buf, want, len);
    assert_string_equal(rotation_verdict(want, wlen, o.pk), verdict);

    /* The negative vectors and the verdicts the doc gives them. */
    static const char *const names[] = {"rotation-skipped-key-id", "rotation-old-key-only"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        wlen = doc_vector(names[i], want, sizeof(want), verdict, sizeof(verdict));
        assert_true(verdict[0] != '\0');
        const char *got = rotation_verdict(want, wlen, o.pk);
        if (strcmp(got, verdict) != 0)
            fail_msg("vector %s: the doc says %s, got %s", names[i], verdict, got);
    }
}

static void test_rotation_round_trip(void **state)
{
    (void)state;
    keypair o, n;
    vector_keys(&o, &n);
    uint8_t buf[STELE_ROTATION_MAX_BYTES];
    size_t len = vector_rotation(buf, sizeof(buf), &o, &n);
    stele_keyproof_rotation r;
    const char *why = NULL;
    assert_int_equal(stele_keyproof_rotation_parse(buf, len, &r, &why), 0);
    assert_int_equal(r.version, 1);
    assert_int_equal(r.alg, 1);
    assert_int_equal(r.device_id_len, 6);
    assert_memory_equal(r.device_id, VECTOR_DEVICE, 6);
    assert_int_equal(r.old_key_id, 1);
    assert_int_equal(r.new_key_id, 2);
    assert_memory_equal(r.new_public_key, n.pk, 32);
    assert_true(r.timestamp_ns == VECTOR_TIME);
    assert_int_equal(stele_keyproof_rotation_verify(&r, o.pk), 0);
    /* Any other old key, the new key included (then also "same key twice"). */
    keypair other;
    crypto_sign_keypair(other.pk, other.sk);
    assert_int_equal(stele_keyproof_rotation_verify(&r, other.pk), -EBADMSG);
    assert_int_equal(stele_keyproof_rotation_verify(&r, n.pk), -EINVAL);
    /* Deterministic: built again, the same bytes (a retry after a lost answer). */
    uint8_t again[STELE_ROTATION_MAX_BYTES];
    assert_int_equal(vector_rotation(again, sizeof(again), &o, &n), len);
    assert_memory_equal(buf, again, len);
    /* The longest device id fills the maximum exactly. */
    char longest[65];
    memset(longest, 'd', 64);
    longest[64] = '\0';
    assert_int_equal(
        stele_keyproof_rotation_build(buf, sizeof(buf), longest, 7, o.sk, 8, n.sk, 0, &len), 0);
    assert_int_equal(len, STELE_ROTATION_MAX_BYTES);
    assert_int_equal(stele_keyproof_rotation_parse(buf, len, &r, &why), 0);
    assert_int_equal(stele_keyproof_rotation_verify(&r, o.pk), 0);
}

static void test_rotation_every_flipped_bit_refused(void **state)
{
    (void)state;
    keypair o, n;
    vector_keys(&o, &n);
    uint8_t buf[STELE_ROTATION_MAX_BYTES];
    size_t len = vector_rotation(buf, sizeof(buf), &o, &n);
    for (size_t i = 0; i < len * 8; i++) {
        buf[i / 8] ^= (uint8_t)(1u << (i % 8));
        const char *v = rotation_verdict(buf, len, o.pk);
        if (strcmp(v, "accepted") == 0)
            fail_msg("bit %zu (byte %zu) flipped: rotation request still accepted", i, i / 8);
        buf[i / 8] ^= (uint8_t)(1u << (i % 8));
    }
    assert_string_equal(rotation_verdict(buf, len, o.pk), "accepted");
}

static void test_rotation_truncations_and_oversize_refused(void **state)
{
    (void)state;
    keypair o, n;
    vector_keys(&o, &n);
    static uint8_t buf[4096];
    size_t len = vector_rotation(buf, sizeof(buf), &o, &n);
    for (size_t cut = 0; cut < len; cut++) {
        const char *v = rotation_verdict(buf, cut, o.pk);
        if (strcmp(v, "accepted") == 0)
            fail_msg("cut to %zu of %zu bytes: still accepted", cut, len);
    }
    for (size_t extra = 1; extra <= 64; extra++) {
        buf[len + extra - 1] = (uint8_t)extra;
        if (strcmp(rotation_verdict(buf, len + extra, o.pk), "accepted") == 0)
            fail_msg("%zu bytes appended: still accepted", extra);
    }
    /* Over the maximum: refused on size alone, whatever the bytes. */
    stele_keyproof_rotation r;
    const char *why = NULL;
    assert_int_equal(stele_keyproof_rotation_parse(buf, STELE_ROTATION_MAX_BYTES + 1, &r, &why),
                     -EMSGSIZE);
    assert_non_null(why);
    assert_int_equal(stele_keyproof_rotation_parse(buf, sizeof(buf), &r, &why), -EMSGSIZE);
}

/* Re-signs bytes [0, signed_len) of a request with the given keys (either may be NULL:
 * that signature then stays as it is). */
static void resign(uint8_t *buf, size_t len, const uint8_t *old_sk, const uint8_t *new_sk)
{
    size_t signed_len = len - 128;
    uint8_t msg[512];
    memcpy(msg, "stele/rotate/v1", 16);
    memcpy(msg + 16, buf, signed_len);
    if (old_sk)
        crypto_sign_detached(buf + signed_len, NULL, msg, 16 + signed_len, old_sk);
    if (new_sk)
        crypto_sign_detached(buf + signed_len + 64, NULL, msg, 16 + signed_len, new_sk);
}

static void test_rotation_needs_both_signatures(void **state)
{
    (void)state;
    keypair o, n, other;
    vector_keys(&o, &n);
    crypto_sign_keypair(other.pk, other.sk);
    uint8_t buf[STELE_ROTATION_MAX_BYTES];
    size_t len = vector_rotation(buf, sizeof(buf), &o, &n);
    size_t sl = len - 128;

    /* Only the old key signed (the new signature by the old key, by another key, or
     * zeros): a rotation to a key nobody proved to hold. */
    resign(buf, len, NULL, o.sk);
    assert_string_equal(rotation_verdict(buf, len, o.pk), "bad-signature");
    resign(buf, len, NULL, other.sk);
    assert_string_equal(rotation_verdict(buf, len, o.pk), "bad-signature");
    memset(buf + sl + 64, 0, 64);
    assert_string_equal(rotation_verdict(buf, len, o.pk), "bad-signature");

    /* Only the new key signed: an attacker's key pushed onto a device it does not own. */
    len = vector_rotation(buf, sizeof(buf), &o, &n);
    resign(buf, len, n.sk, NULL);
    assert_string_equal(rotation_verdict(buf, len, o.pk), "bad-signature");
    resign(buf, len, other.sk, NULL);
    assert_string_equal(rotation_verdict(buf, len, o.pk), "bad-signature");
    memset(buf + sl, 0, 64);
    assert_string_equal(rotation_verdict(buf, len, o.pk), "bad-signature");

    /* The signatures swapped. */
    len = vector_rotation(buf, sizeof(buf), &o, &n);
    uint8_t tmp[64];
    memcpy(tmp, buf + sl, 64);
    memcpy(buf + sl, buf + sl + 64, 64);
    memcpy(buf + sl + 64, tmp, 64);
    assert_string_equal(rotation_verdict(buf, len, o.pk), "bad-signature");

    /* Signed by both keys but over another domain (a frame's). */
    len = vector_rotation(buf, sizeof(buf), &o, &n);
    uint8_t msg[512];
    memcpy(msg, "stele/frame/v1", 15);
    memcpy(msg + 15, buf, sl);
    crypto_sign_detached(buf + sl, NULL, msg, 15 + sl, o.sk);
    crypto_sign_detached(buf + sl + 64, NULL, msg, 15 + sl, n.sk);
    assert_string_equal(rotation_verdict(buf, len, o.pk), "bad-signature");
}

static void test_rotation_key_ids_must_step_by_one(void **state)
{
    (void)state;
    keypair o, n;
    vector_keys(&o, &n);
    uint8_t buf[STELE_ROTATION_MAX_BYTES];
    size_t len = 0;
    /* The builder refuses. */
    assert_int_equal(
        stele_keyproof_rotation_build(buf, sizeof(buf), VECTOR_DEVICE, 1, o.sk, 3, n.sk, 0, &len),
        -EINVAL);
    assert_int_equal(
        stele_keyproof_rotation_build(buf, sizeof(buf), VECTOR_DEVICE, 2, o.sk, 2, n.sk, 0, &len),
        -EINVAL);
    assert_int_equal(
        stele_keyproof_rotation_build(buf, sizeof(buf), VECTOR_DEVICE, 0, o.sk, 1, n.sk, 0, &len),
        -EINVAL);
    assert_int_equal(stele_keyproof_rotation_build(buf, sizeof(buf), VECTOR_DEVICE, UINT32_MAX,
                                                   o.sk, 0, n.sk, 0, &len),
                     -EINVAL);
    assert_int_equal(
        stele_keyproof_rotation_build(buf, sizeof(buf), VECTOR_DEVICE, 1, o.sk, 2, o.sk, 0, &len),
        -EINVAL); /* the same key twice */
    assert_int_equal(
        stele_keyproof_rotation_build(buf, sizeof(buf), "bad id", 1, o.sk, 2, n.sk, 0, &len),
        -EINVAL);
    assert_int_equal(
        stele_keyproof_rotation_build(buf, 186, VECTOR_DEVICE, 1, o.sk, 2, n.sk, 0, &len), -ENOSPC);
    /* The parser refuses, even when both keys signed what it says: new = old + 2,
     * new = old, a wrapped id, old id 0. */
    static const uint32_t pairs[][2] = {{1, 3}, {1, 1}, {2, 1}, {UINT32_MAX, 0}, {0, 1}};
    for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
        len = vector_rotation(buf, sizeof(buf), &o, &n);
        for (int b = 0; b < 4; b++) {
            buf[5 + 6 + b] = (uint8_t)(pairs[i][0] >> (8 * b));
            buf[9 + 6 + b] = (uint8_t)(pairs[i][1] >> (8 * b));
        }
        resign(buf, len, o.sk, n.sk);
        const char *v = rotation_verdict(buf, len, o.pk);
        if (strcmp(v, "malformed") != 0)
            fail_msg("key ids %u -> %u: expected malformed, got %s", pairs[i][0], pairs[i][1], v);
    }
}

static void test_rotation_same_key_twice_refused(void **state)
{
    (void)state;
    keypair o, n;
    vector_keys(&o, &n);
    uint8_t buf[STELE_ROTATION_MAX_BYTES];
    size_t len = vector_rotation(buf, sizeof(buf), &o, &n);
    /* Put the old public key in as the new one, signed twice by the old key: both
     * signatures check out, but one key cannot rotate to itself. */
    memcpy(buf + 13 + 6, o.pk, 32);
    resign(buf, len, o.sk, o.sk);
    stele_keyproof_rotation r;
    assert_int_equal(stele_keyproof_rotation_parse(buf, len, &r, NULL), 0);
    assert_int_equal(stele_keyproof_rotation_verify(&r, o.pk), -EINVAL);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_enroll_vector_matches_the_doc),
        cmocka_unit_test(test_enroll_refusals),
        cmocka_unit_test(test_rotation_vectors_match_the_doc),
        cmocka_unit_test(test_rotation_round_trip),
        cmocka_unit_test(test_rotation_every_flipped_bit_refused),
        cmocka_unit_test(test_rotation_truncations_and_oversize_refused),
        cmocka_unit_test(test_rotation_needs_both_signatures),
        cmocka_unit_test(test_rotation_key_ids_must_step_by_one),
        cmocka_unit_test(test_rotation_same_key_twice_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
