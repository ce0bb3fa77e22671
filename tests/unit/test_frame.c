/*
 * test_frame.c — sealed frames (stele/frame.h): build, seal, parse and verify round
 * trips; the test vector of docs/format/frame.md byte for byte (read from the doc, so the
 * doc cannot drift); every flipped bit and every truncation refused; oversized frames
 * refused before any cryptography; canonical-form rules (label order, reserved names,
 * one NaN) enforced on both sides; another device's key refused.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stele/frame.h"

#include "test_util.h"

static uint8_t scratch[STELE_FRAME_SCRATCH_BYTES];

/* The vector's key: Ed25519 from the seed 00 01 02 … 1f. */
static void vector_keys(uint8_t pk[32], uint8_t sk[64])
{
    uint8_t seed[32];
    for (int i = 0; i < 32; i++)
        seed[i] = (uint8_t)i;
    assert_int_equal(crypto_sign_seed_keypair(pk, sk, seed), 0);
}

/* The vector's frame: device "pump-7", key id 1, counter 42, two points. */
static size_t vector_frame(uint8_t *buf, size_t cap, const uint8_t sk[64])
{
    stele_frame_builder b;
    assert_int_equal(stele_frame_begin(&b, buf, cap, "pump-7", 1, 42), 0);
    stele_frame_point p = {.metric = "flow_lpm",
                           .metric_len = 8,
                           .nlabels = 2,
                           .ts = INT64_C(1764000000000000000),
                           .value = 12.5};
    p.labels[0] = (stele_frame_label){.name = "unit", .name_len = 4, .value = "a", .value_len = 1};
    p.labels[1] = (stele_frame_label){.name = "line", .name_len = 4, .value = "3", .value_len = 1};
    assert_int_equal(stele_frame_add(&b, &p), 0);
    stele_frame_point q = {.metric = "temp_c",
                           .metric_len = 6,
                           .nlabels = 0,
                           .ts = INT64_C(1764000000000000000),
                           .value = -3.25};
    assert_int_equal(stele_frame_add(&b, &q), 0);
    size_t len = 0;
    assert_int_equal(stele_frame_seal(&b, sk, &len), 0);
    return len;
}

static void test_vector_matches_the_doc(void **state)
{
    (void)state;
    uint8_t pk[32], sk[64], buf[512], want[512];
    vector_keys(pk, sk);
    size_t len = vector_frame(buf, sizeof(buf), sk);
    size_t wlen = test_doc_vector("frame.md", "vector:frame", want, sizeof(want));
    if (getenv("STELE_PRINT_VECTOR")) {
        test_print_hex(stdout, buf, len, 32, "");
        printf("public key:\n");
        test_print_hex(stdout, pk, 32, 32, "");
    }
    assert_int_equal(len, wlen);
    assert_memory_equal(buf, want, len);
    uint8_t doc_pk[32];
    assert_int_equal(test_doc_vector("frame.md", "vector:public-key", doc_pk, sizeof(doc_pk)), 32);
    assert_memory_equal(pk, doc_pk, 32);
}

static void test_round_trip(void **state)
{
    (void)state;
    uint8_t pk[32], sk[64], buf[512];
    vector_keys(pk, sk);
    size_t len = vector_frame(buf, sizeof(buf), sk);
    stele_frame f;
    const char *why = NULL;
    assert_int_equal(stele_frame_parse(buf, len, &f, &why), 0);
    assert_int_equal(f.device_id_len, 6);
    assert_memory_equal(f.device_id, "pump-7", 6);
    assert_int_equal(f.key_id, 1);
    assert_int_equal(f.counter, 42);
    assert_int_equal(f.npoints, 2);
    assert_int_equal(stele_frame_verify(&f, pk, scratch, sizeof(scratch)), 0);
    size_t cur = 0;
    stele_frame_point p;
    assert_true(stele_frame_next_point(&f, &cur, &p));
    assert_int_equal(p.metric_len, 8);
    assert_int_equal(p.nlabels, 2);
    /* Sorted on the wire whatever order they were given in. */
    assert_memory_equal(p.labels[0].name, "line", 4);
    assert_memory_equal(p.labels[1].name, "unit", 4);
    assert_true(p.value == 12.5);
    assert_true(stele_frame_next_point(&f, &cur, &p));
    assert_true(p.value == -3.25 && p.nlabels == 0);
    assert_false(stele_frame_next_point(&f, &cur, &p));
}

/* The unchecked walk of the ingestion hot path sees the same points as the checked one:
 * shape bytes are exactly the metric and labels as encoded (from the metric length byte
 * up to the timestamp), and the cursors advance alike. */
static void test_raw_walk_equals_checked_walk(void **state)
{
    (void)state;
    uint8_t pk[32], sk[64], buf[512];
    vector_keys(pk, sk);
    size_t len = vector_frame(buf, sizeof(buf), sk);
    stele_frame f;
    const char *why = NULL;
    assert_int_equal(stele_frame_parse(buf, len, &f, &why), 0);
    size_t checked = 0, raw = 0, n = 0;
    stele_frame_point p;
    stele_frame_raw_point r;
    while (stele_frame_next_point(&f, &checked, &p)) {
        size_t start = raw;
        assert_true(stele_frame_next_raw(&f, &raw, &r));
        assert_int_equal(raw, checked);
        assert_ptr_equal(r.shape, f.points + start);
        assert_int_equal(r.shape_len, checked - start - 16);
        assert_int_equal(r.shape[0], p.metric_len);
        assert_memory_equal(r.shape + 1, p.metric, p.metric_len);
        assert_int_equal(r.shape[1 + p.metric_len], p.nlabels);
        assert_true(r.ts == p.ts && r.value == p.value);
        n++;
    }
    assert_false(stele_frame_next_raw(&f, &raw, &r));
    assert_int_equal(n, 2);
}

static void test_other_key_refused(void **state)
{
    (void)state;
    uint8_t pk[32], sk[64], other_pk[32], other_sk[64], buf[512];
    vector_keys(pk, sk);
    crypto_sign_keypair(other_pk, other_sk);
    size_t len = vector_frame(buf, sizeof(buf), other_sk);
    stele_frame f;
    assert_int_equal(stele_frame_parse(buf, len, &f, NULL), 0);
    assert_int_equal(stele_frame_verify(&f, pk, scratch, sizeof(scratch)), -EBADMSG);
    assert_int_equal(stele_frame_verify(&f, other_pk, scratch, sizeof(scratch)), 0);
}

static void test_every_flipped_bit_refused(void **state)
{
    (void)state;
    uint8_t pk[32], sk[64], buf[512];
    vector_keys(pk, sk);
    size_t len = vector_frame(buf, sizeof(buf), sk);
    for (size_t i = 0; i < len * 8; i++) {
        buf[i / 8] ^= (uint8_t)(1u << (i % 8));
        stele_frame f;
        int rc = stele_frame_parse(buf, len, &f, NULL);
        if (rc == 0)
            rc = stele_frame_verify(&f, pk, scratch, sizeof(scratch));
        if (rc == 0)
            fail_msg("bit %zu flipped: frame still accepted", i);
        buf[i / 8] ^= (uint8_t)(1u << (i % 8));
    }
}

static void test_every_truncation_refused(void **state)
{
    (void)state;
    uint8_t pk[32], sk[64], buf[512];
    vector_keys(pk, sk);
    size_t len = vector_frame(buf, sizeof(buf), sk);
    for (size_t n = 0; n < len; n++) {
        stele_frame f;
        int rc = stele_frame_parse(buf, n, &f, NULL);
        if (rc == 0)
            rc = stele_frame_verify(&f, pk, scratch, sizeof(scratch));
        if (rc == 0)
            fail_msg("truncated to %zu of %zu bytes: still accepted", n, len);
    }
    /* And with a byte appended. */
    stele_frame f;
    buf[len] = 0;
    assert_int_equal(stele_frame_parse(buf, len + 1, &f, NULL) == 0 &&
                         stele_frame_verify(&f, pk, scratch, sizeof(scratch)) == 0,
                     0);
}

static void test_oversized_refused_before_crypto(void **state)
{
    (void)state;
    static uint8_t big[STELE_FRAME_MAX_BYTES + 1];
    stele_frame f;
    const char *why = NULL;
    assert_int_equal(stele_frame_parse(big, sizeof(big), &f, &why), -EMSGSIZE);
    assert_non_null(why);
}

static void test_builder_limits_and_names(void **state)
{
    (void)state;
    uint8_t buf[STELE_FRAME_MAX_BYTES + 64], pk[32], sk[64];
    vector_keys(pk, sk);
    stele_frame_builder b;
    assert_int_equal(stele_frame_begin(&b, buf, sizeof(buf), "bad id!", 1, 1), -EINVAL);
    assert_int_equal(stele_frame_begin(&b, buf, sizeof(buf), "", 1, 1), -EINVAL);
    assert_int_equal(stele_frame_begin(&b, buf, sizeof(buf), "d1", 1, 1), 0);
    stele_frame_point p = {.metric = "m", .metric_len = 1, .ts = 1, .value = 1};
    /* Identity labels come from the registry, never from the payload. */
    p.nlabels = 1;
    p.labels[0] =
        (stele_frame_label){.name = "device", .name_len = 6, .value = "x", .value_len = 1};
    assert_int_equal(stele_frame_add(&b, &p), -EINVAL);
    p.labels[0].name = "tenant";
    assert_int_equal(stele_frame_add(&b, &p), -EINVAL);
    p.labels[0] = (stele_frame_label){.name = "__x", .name_len = 3, .value = "x", .value_len = 1};
    assert_int_equal(stele_frame_add(&b, &p), -EINVAL);
    p.nlabels = 2;
    p.labels[0] = (stele_frame_label){.name = "a", .name_len = 1, .value = "x", .value_len = 1};
    p.labels[1] = (stele_frame_label){.name = "a", .name_len = 1, .value = "y", .value_len = 1};
    assert_int_equal(stele_frame_add(&b, &p), -EINVAL); /* repeated name */
    p.nlabels = 0;
    uint64_t odd_nan = UINT64_C(0x7ff8000000000001);
    memcpy(&p.value, &odd_nan, sizeof(p.value));
    assert_int_equal(stele_frame_add(&b, &p), -EINVAL);
    p.value = NAN;
    assert_int_equal(stele_frame_add(&b, &p), 0);
    p.value = 2;
    /* Fill to the point limit: the 1025th point does not fit. */
    int added = 1, rc = 0;
    while ((rc = stele_frame_add(&b, &p)) == 0)
        added++;
    assert_int_equal(rc, -ENOSPC);
    assert_int_equal(added, STELE_FRAME_MAX_POINTS);
    size_t len;
    assert_int_equal(stele_frame_seal(&b, sk, &len), 0);
    stele_frame f;
    const char *why = NULL;
    assert_int_equal(stele_frame_parse(buf, len, &f, &why), 0);
    assert_int_equal(f.npoints, STELE_FRAME_MAX_POINTS);
    assert_int_equal(stele_frame_verify(&f, pk, scratch, sizeof(scratch)), 0);
}

static void test_parser_refuses_non_canonical(void **state)
{
    (void)state;
    uint8_t pk[32], sk[64], buf[512];
    vector_keys(pk, sk);
    size_t len = vector_frame(buf, sizeof(buf), sk);
    stele_frame f;
    const char *why = NULL;
    /* Swap the two labels of the first point (same lengths): unsorted on the wire. */
    uint8_t *line = memmem(buf, len, "\x04line", 5), *unit = memmem(buf, len, "\x04unit", 5);
    assert_non_null(line);
    assert_non_null(unit);
    uint8_t tmp[8];
    memcpy(tmp, line, 7);
    memcpy(line, unit, 7);
    memcpy(unit, tmp, 7);
    assert_int_equal(stele_frame_parse(buf, len, &f, &why), -EBADMSG);
    assert_non_null(strstr(why, "order"));
    vector_frame(buf, sizeof(buf), sk);
    /* A NaN other than the canonical one in the second point's value (the last 8 bytes
     * before the signature). */
    uint64_t odd_nan = UINT64_C(0x7ff8000000000001);
    memcpy(buf + len - 64 - 8, &odd_nan, 8);
    assert_int_equal(stele_frame_parse(buf, len, &f, &why), -EBADMSG);
    assert_non_null(strstr(why, "NaN"));
    /* A label named "device" on the wire: build one named "devicx" and patch the last
     * letter (the parser refuses the name before it looks at the signature). */
    stele_frame_builder fb;
    assert_int_equal(stele_frame_begin(&fb, buf, sizeof(buf), "d1", 1, 1), 0);
    stele_frame_point p = {.metric = "m", .metric_len = 1, .nlabels = 1, .ts = 1, .value = 1};
    p.labels[0] =
        (stele_frame_label){.name = "devicx", .name_len = 6, .value = "1", .value_len = 1};
    assert_int_equal(stele_frame_add(&fb, &p), 0);
    assert_int_equal(stele_frame_seal(&fb, sk, &len), 0);
    assert_int_equal(stele_frame_parse(buf, len, &f, &why), 0);
    uint8_t *name = memmem(buf, len, "devicx", 6);
    assert_non_null(name);
    name[5] = 'e';
    assert_int_equal(stele_frame_parse(buf, len, &f, &why), -EBADMSG);
    assert_non_null(strstr(why, "reserved"));
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vector_matches_the_doc),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_raw_walk_equals_checked_walk),
        cmocka_unit_test(test_other_key_refused),
        cmocka_unit_test(test_every_flipped_bit_refused),
        cmocka_unit_test(test_every_truncation_refused),
        cmocka_unit_test(test_oversized_refused_before_crypto),
        cmocka_unit_test(test_builder_limits_and_names),
        cmocka_unit_test(test_parser_refuses_non_canonical),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
