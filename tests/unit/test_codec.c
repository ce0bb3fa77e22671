/*
 * test_codec.c — the block codecs (src/tsdb/codec.c): bit-exact round trips on random
 * and adversarial data, the scheme the encoder picks, pinned byte-level test vectors,
 * -ENOSPC at every too-small capacity, and decoders that answer damaged input with
 * -EINVAL without reading outside it (buffers are heap blocks of the exact size, so
 * ASan sees any overrun).
 *
 * Randomness is seeded from STELE_TEST_SEED or, if unset, from the clock; the seed is
 * printed at the start and again in every failure message, so a failure reruns with
 * STELE_TEST_SEED=<seed>.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "stele/codec.h"
#include "stele/varint.h"

#include "test_util.h"

#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Scheme bytes, as documented in codec.c. */
#define TS_DELTA 0x11
#define TS_DOD 0x12
#define VAL_CONST 0x21
#define VAL_XOR 0x22
#define VAL_DEC_DELTA 0x23
#define VAL_DEC_DOD 0x24

/* Random garbage inputs per decoder; enough to reach every header branch many times
 * over and still run in well under a second under ASan. */
#define GARBAGE_ROUNDS 200000
/* Longest garbage input: room for headers plus a few hundred residual bytes. */
#define GARBAGE_MAX_LEN 300
/* Random round trips per test, spread over its data families. */
#define RANDOM_ROUNDS 300
/* Longest random series: long enough for every width and layout, short enough that
 * the exhaustive truncation checks stay fast. */
#define RANDOM_MAX_N 600

static uint64_t g_seed;
static uint64_t g_rng;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            print_error("seed %" PRIu64 " (rerun: STELE_TEST_SEED=%" PRIu64 ")\n", g_seed,         \
                        g_seed);                                                                   \
            fail_msg(__VA_ARGS__);                                                                 \
        }                                                                                          \
    } while (0)

static uint64_t rnd(void)
{
    return test_rng_next(&g_rng);
}

static uint64_t rnd_below(uint64_t n)
{
    return n ? rnd() % n : 0;
}

static double rnd_unit(void)
{
    return (double)(rnd() >> 11) * 0x1p-53;
}

static double from_bits(uint64_t u)
{
    double v;
    memcpy(&v, &u, sizeof v);
    return v;
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    CHECK(p != NULL, "out of memory allocating %zu bytes", n);
    return p;
}

/* A heap copy of exactly len bytes, so ASan flags any read past it. */
static uint8_t *exact_copy(const uint8_t *p, size_t len)
{
    uint8_t *c = xmalloc(len);
    if (len)
        memcpy(c, p, len);
    return c;
}

/* ---- shared checks on one encoding ---- */

/* Word i of an array of int64_t or double, for messages. */
static uint64_t word_at(const void *base, size_t i)
{
    uint64_t u;
    memcpy(&u, (const uint8_t *)base + 8 * i, sizeof u);
    return u;
}

typedef int (*decode_fn)(const uint8_t *in, size_t len, void *out, size_t n);

static int decode_ts(const uint8_t *in, size_t len, void *out, size_t n)
{
    return stele_ts_decode(in, len, out, n);
}

static int decode_values(const uint8_t *in, size_t len, void *out, size_t n)
{
    return stele_values_decode(in, len, out, n);
}

/* Every strict prefix and every one-byte extension must be rejected; the exact
 * encoding must decode to `expect`. */
static void check_decode_strict(decode_fn decode, const uint8_t *enc, size_t len,
                                const void *expect, size_t n, const char *what)
{
    void *out = xmalloc(n * 8);
    uint8_t *in = exact_copy(enc, len);
    int rc = decode(in, len, out, n);
    CHECK(rc == 0, "%s: decode of a fresh encoding (n=%zu, %zu bytes) gave %d", what, n, len, rc);
    for (size_t i = 0; i < n; i++)
        CHECK(memcmp((const uint8_t *)out + 8 * i, (const uint8_t *)expect + 8 * i, 8) == 0,
              "%s: sample %zu of %zu: expected bits %016" PRIx64 ", got %016" PRIx64, what, i, n,
              word_at(expect, i), word_at(out, i));
    free(in);

    /* Truncations: all of them for short encodings, a sample for long ones. */
    size_t step = len <= 64 ? 1 : len / 32;
    for (size_t cut = 0; cut < len; cut += step) {
        in = exact_copy(enc, cut);
        rc = decode(in, cut, out, n);
        CHECK(rc == -EINVAL, "%s: %zu of %zu bytes (truncated): expected -EINVAL, got %d", what,
              cut, len, rc);
        free(in);
    }
    in = exact_copy(enc, len - (len > 0));
    rc = decode(in, len - (len > 0), out, n);
    CHECK(len == 0 || rc == -EINVAL, "%s: last byte cut: expected -EINVAL, got %d", what, rc);
    free(in);

    uint8_t *longer = xmalloc(len + 1);
    if (len)
        memcpy(longer, enc, len);
    longer[len] = (uint8_t)rnd();
    rc = decode(longer, len + 1, out, n);
    CHECK(rc == -EINVAL, "%s: one trailing byte: expected -EINVAL, got %d", what, rc);
    free(longer);
    free(out);
}

/* Round-trips n timestamps; returns the scheme byte (0 for an empty encoding). */
static int ts_roundtrip(const int64_t *ts, size_t n, const char *what)
{
    size_t cap = stele_ts_encode_bound(n), len = 0;
    uint8_t *enc = xmalloc(cap);
    int rc = stele_ts_encode(ts, n, enc, cap, &len);
    CHECK(rc == 0, "%s: ts encode of %zu gave %d", what, n, rc);
    CHECK(len <= cap, "%s: ts encoding of %zu bytes exceeds the bound %zu", what, len, cap);
    check_decode_strict(decode_ts, enc, len, ts, n, what);

    /* Exactly len bytes suffice, one fewer is -ENOSPC, and nothing lands outside. */
    uint8_t *tight = xmalloc(len);
    size_t len2 = 0;
    rc = stele_ts_encode(ts, n, tight, len, &len2);
    CHECK(rc == 0 && len2 == len && memcmp(tight, enc, len) == 0,
          "%s: ts encode into exactly %zu bytes: rc %d, %zu bytes", what, len, rc, len2);
    free(tight);
    if (len > 0) {
        tight = xmalloc(len - 1);
        rc = stele_ts_encode(ts, n, tight, len - 1, &len2);
        CHECK(rc == -ENOSPC, "%s: ts encode into %zu < %zu bytes: expected -ENOSPC, got %d", what,
              len - 1, len, rc);
        free(tight);
    }
    int scheme = len ? enc[0] : 0;
    free(enc);
    return scheme;
}

static int values_roundtrip(const double *v, size_t n, const char *what)
{
    size_t cap = stele_values_encode_bound(n), len = 0;
    uint8_t *enc = xmalloc(cap);
    int rc = stele_values_encode(v, n, enc, cap, &len);
    CHECK(rc == 0, "%s: values encode of %zu gave %d", what, n, rc);
    CHECK(len <= cap, "%s: values encoding of %zu bytes exceeds the bound %zu", what, len, cap);
    check_decode_strict(decode_values, enc, len, v, n, what);

    uint8_t *tight = xmalloc(len);
    size_t len2 = 0;
    rc = stele_values_encode(v, n, tight, len, &len2);
    CHECK(rc == 0 && len2 == len && memcmp(tight, enc, len) == 0,
          "%s: values encode into exactly %zu bytes: rc %d, %zu bytes", what, len, rc, len2);
    free(tight);
    if (len > 0) {
        /* Every capacity below len for short encodings (each scheme sizes differently),
         * the one just below for long ones. */
        size_t from = len > 64 ? len - 1 : 0;
        for (size_t c = from; c < len; c++) {
            tight = xmalloc(c);
            rc = stele_values_encode(v, n, tight, c, &len2);
            CHECK(rc == -ENOSPC, "%s: values encode into %zu < %zu bytes: expected -ENOSPC, got %d",
                  what, c, len, rc);
            free(tight);
        }
    }
    int scheme = len ? enc[0] : 0;
    free(enc);
    return scheme;
}

/* Encodes and returns the bytes (caller frees) for format checks. */
static uint8_t *values_encoding(const double *v, size_t n, size_t *len)
{
    size_t cap = stele_values_encode_bound(n);
    uint8_t *enc = xmalloc(cap);
    int rc = stele_values_encode(v, n, enc, cap, len);
    CHECK(rc == 0, "values encode of %zu gave %d", n, rc);
    return enc;
}

static uint8_t *ts_encoding(const int64_t *ts, size_t n, size_t *len)
{
    size_t cap = stele_ts_encode_bound(n);
    uint8_t *enc = xmalloc(cap);
    int rc = stele_ts_encode(ts, n, enc, cap, len);
    CHECK(rc == 0, "ts encode of %zu gave %d", n, rc);
    return enc;
}

static void check_bytes(const uint8_t *got, size_t got_len, const uint8_t *want, size_t want_len,
                        const char *what)
{
    char g[256] = "", w[256] = "";
    for (size_t i = 0; i < got_len && 3 * i + 3 < sizeof g; i++)
        snprintf(g + 3 * i, 4, "%02x ", got[i]);
    for (size_t i = 0; i < want_len && 3 * i + 3 < sizeof w; i++)
        snprintf(w + 3 * i, 4, "%02x ", want[i]);
    CHECK(got_len == want_len && memcmp(got, want, want_len) == 0,
          "%s: expected bytes [%s], got [%s]", what, w, g);
}

/* ---- timestamps ---- */

static void test_ts_small_n(void **state)
{
    (void)state;
    int64_t one[] = {1451606400000000000LL};
    int64_t two[] = {INT64_MAX, INT64_MIN};
    CHECK(ts_roundtrip(NULL, 0, "ts n=0") == 0, "n=0 must encode as zero bytes");
    ts_roundtrip(one, 1, "ts n=1");
    ts_roundtrip(two, 2, "ts n=2 wrapping");
    int64_t three[] = {0, -1, 0};
    ts_roundtrip(three, 3, "ts n=3");
}

static void test_ts_regular_is_constant_size(void **state)
{
    (void)state;
    enum { N = 5000 };
    int64_t *ts = xmalloc(N * sizeof *ts);
    for (size_t i = 0; i < N; i++)
        ts[i] = 1451606400000000000LL + (int64_t)i * 10000000000LL;
    size_t len = 0;
    uint8_t *enc = ts_encoding(ts, N, &len);
    /* scheme, width 0, a 9-byte first timestamp and a 5-byte interval. */
    CHECK(enc[0] == TS_DOD && enc[1] == 0 && len == 16,
          "regular series: expected scheme 0x12, width 0, 16 bytes; got 0x%02x, %u, %zu", enc[0],
          enc[1], len);
    free(enc);
    ts_roundtrip(ts, N, "ts regular");
    free(ts);
}

static void test_ts_vectors(void **state)
{
    (void)state;
    size_t len = 0;
    int64_t regular[] = {1000, 2000, 3000};
    const uint8_t want_regular[] = {0x12, 0x00, 0xd0, 0x0f, 0xd0, 0x0f};
    uint8_t *enc = ts_encoding(regular, 3, &len);
    check_bytes(enc, len, want_regular, sizeof want_regular, "ts {1000,2000,3000}");
    free(enc);

    /* Deltas 5, -5, 5, -5 (zz 10, 9, 10, 9) beat delta-of-deltas of ±10: 4-bit
     * residuals, two per byte, the first in the low nibble. */
    int64_t zigzag[] = {0, 5, 0, 5, 0};
    const uint8_t want_zigzag[] = {0x11, 0x09, 0x00, 0x9a, 0x9a};
    enc = ts_encoding(zigzag, 5, &len);
    check_bytes(enc, len, want_zigzag, sizeof want_zigzag, "ts {0,5,0,5,0}");
    free(enc);

    /* Deltas 3, 1, 2 cost 8 bits; first delta 3 (zz 6) and delta-of-deltas -2, 1
     * (zz 3, 2) cost 7: delta-of-delta, residuals 3 and 2 in one byte. */
    int64_t jitter[] = {7, 10, 11, 13};
    const uint8_t want_jitter[] = {0x12, 0x09, 0x0e, 0x06, 0x23};
    enc = ts_encoding(jitter, 4, &len);
    check_bytes(enc, len, want_jitter, sizeof want_jitter, "ts {7,10,11,13}");
    free(enc);
}

static void test_ts_adversarial(void **state)
{
    (void)state;
    int64_t extremes[] = {INT64_MIN, INT64_MAX,        INT64_MIN,          0,
                          INT64_MAX, INT64_MAX - 1,    INT64_MIN + 1,      -1,
                          1,         (int64_t)1 << 62, -((int64_t)1 << 62)};
    ts_roundtrip(extremes, sizeof extremes / sizeof extremes[0], "ts extremes");

    /* 2^63 ns is ~292 years: timestamps near both ends of int64 with steps of 1 s. */
    int64_t near_max[64], near_min[64];
    for (int i = 0; i < 64; i++) {
        near_max[i] = INT64_MAX - (int64_t)(63 - i) * 1000000000LL;
        near_min[i] = INT64_MIN + (int64_t)i * 1000000000LL;
    }
    ts_roundtrip(near_max, 64, "ts near INT64_MAX");
    ts_roundtrip(near_min, 64, "ts near INT64_MIN");

    int64_t backwards[100];
    for (int i = 0; i < 100; i++)
        backwards[i] = 1000000 - (int64_t)i * 7;
    ts_roundtrip(backwards, 100, "ts decreasing");
    int64_t equal[50];
    for (int i = 0; i < 50; i++)
        equal[i] = 42;
    ts_roundtrip(equal, 50, "ts all equal");
}

static void test_ts_random(void **state)
{
    (void)state;
    int64_t *ts = xmalloc(RANDOM_MAX_N * sizeof *ts);
    char what[64];
    for (int iter = 0; iter < RANDOM_ROUNDS; iter++) {
        size_t n = rnd_below(RANDOM_MAX_N + 1);
        int family = (int)rnd_below(5);
        /* Modulo 2^64, like the codec: sequences may wrap past INT64_MAX. */
        uint64_t t = rnd();
        uint64_t step = rnd_below(1ULL << rnd_below(40));
        for (size_t i = 0; i < n; i++) {
            switch (family) {
            case 0: /* regular with jitter */
                t += step + rnd_below(1000) - 500;
                break;
            case 1: /* arbitrary 64-bit values */
                t = rnd();
                break;
            case 2: /* regular with rare gaps */
                t += step * (rnd_below(50) == 0 ? rnd_below(100) : 1);
                break;
            case 3: /* small non-monotonic wobble */
                t += rnd_below(64) - 32;
                break;
            default: /* steps of every magnitude */
                t += rnd() >> rnd_below(64);
                break;
            }
            ts[i] = (int64_t)t;
        }
        snprintf(what, sizeof what, "ts random family %d n=%zu", family, n);
        ts_roundtrip(ts, n, what);
    }
    free(ts);
}

/* ---- values ---- */

static void test_values_small_n(void **state)
{
    (void)state;
    double one[] = {-0.0};
    double two[] = {0.1, 0.1 + 0.2};
    CHECK(values_roundtrip(NULL, 0, "values n=0") == 0, "n=0 must encode as zero bytes");
    CHECK(values_roundtrip(one, 1, "values n=1") == VAL_CONST, "n=1 is a constant run");
    CHECK(values_roundtrip(two, 2, "values n=2") == VAL_XOR, "0.1+0.2 is not a short decimal");
    double two_dec[] = {12.5, 12.25};
    CHECK(values_roundtrip(two_dec, 2, "values n=2 decimal") == VAL_DEC_DELTA,
          "two short decimals: expected the decimal scheme");
}

static void test_values_special(void **state)
{
    (void)state;
    const double nan_payloads[] = {
        from_bits(0x7ff8000000000000ULL), /* the default quiet NaN */
        from_bits(0xfff8000000000000ULL), /* negative quiet NaN */
        from_bits(0x7ff0000000000001ULL), /* signalling NaN, smallest payload */
        from_bits(0x7ff4000000000000ULL), /* signalling NaN */
        from_bits(0x7fffffffffffffffULL), /* all payload bits */
        from_bits(0xfff0000000abcdefULL), /* negative, odd payload */
    };
    double mix[] = {nan_payloads[0],
                    INFINITY,
                    -INFINITY,
                    0.0,
                    -0.0,
                    nan_payloads[1],
                    1.0,
                    nan_payloads[2],
                    DBL_TRUE_MIN,
                    -DBL_TRUE_MIN,
                    DBL_MIN,
                    nan_payloads[3],
                    DBL_MAX,
                    -DBL_MAX,
                    nan_payloads[4],
                    0x1p-1060,
                    nan_payloads[5],
                    -0.0,
                    0.0,
                    DBL_EPSILON,
                    1.0 + DBL_EPSILON,
                    0x1p53 + 2,
                    -0x1p63,
                    1e308,
                    5e-324};
    size_t n = sizeof mix / sizeof mix[0];
    CHECK(values_roundtrip(mix, n, "values special mix") == VAL_XOR, "special values need XOR");

    /* Each NaN payload as a constant run, and alone among decimals. */
    double run[40];
    for (size_t k = 0; k < sizeof nan_payloads / sizeof nan_payloads[0]; k++) {
        for (int i = 0; i < 40; i++)
            run[i] = nan_payloads[k];
        CHECK(values_roundtrip(run, 40, "values NaN constant") == VAL_CONST, "constant NaN run");
        for (int i = 0; i < 40; i++)
            run[i] = i * 0.5;
        run[17] = nan_payloads[k];
        CHECK(values_roundtrip(run, 40, "values NaN among decimals") == VAL_XOR,
              "a NaN sends the run to XOR");
    }

    /* -0.0 among decimals must not come back as +0.0. */
    for (int i = 0; i < 40; i++)
        run[i] = (i % 3) * 0.25;
    run[5] = -0.0;
    CHECK(values_roundtrip(run, 40, "values -0.0 among decimals") == VAL_XOR,
          "-0.0 is not a decimal");
    for (int i = 0; i < 40; i++)
        run[i] = i % 2 ? 0.0 : -0.0;
    values_roundtrip(run, 40, "values alternating zeros");

    /* Denormals: a walk through the subnormal range. */
    for (int i = 0; i < 40; i++)
        run[i] = DBL_TRUE_MIN * (double)(i * i);
    values_roundtrip(run, 40, "values subnormal");

    /* Huge jumps. */
    for (int i = 0; i < 40; i++)
        run[i] = i % 2 ? DBL_MAX : -DBL_MAX;
    values_roundtrip(run, 40, "values ±DBL_MAX");
    for (int i = 0; i < 40; i++)
        run[i] = i % 4 == 0 ? INFINITY : i % 4 == 1 ? -INFINITY : i % 4 == 2 ? DBL_MAX : 0.0;
    values_roundtrip(run, 40, "values Inf and DBL_MAX");
}

static void test_values_integers(void **state)
{
    (void)state;
    double big[64];
    /* Around 2^53: the largest exact mantissa is 2^53-1, beyond it XOR. */
    for (int i = 0; i < 64; i++)
        big[i] = 0x1p53 - 1 - (double)(63 - i);
    CHECK(values_roundtrip(big, 64, "values up to 2^53-1") != VAL_XOR,
          "integers below 2^53 are decimals with d=0");
    for (int i = 0; i < 64; i++)
        big[i] = 0x1p53 + 2 * (double)i;
    CHECK(values_roundtrip(big, 64, "values above 2^53") == VAL_XOR, "above 2^53: XOR");
    for (int i = 0; i < 64; i++)
        big[i] = (double)(rnd() >> rnd_below(12)) * (i % 2 ? -1 : 1);
    values_roundtrip(big, 64, "values random large integers");
    for (int i = 0; i < 64; i++)
        big[i] = -0x1p53 + 1 + (double)i;
    values_roundtrip(big, 64, "values near -2^53");
}

static void test_values_decimals(void **state)
{
    (void)state;
    enum { N = 300 };
    double *v = xmalloc(N * sizeof *v);
    static const double p10[] = {1e0, 1e1, 1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15};
    char what[80];
    for (int d = 0; d <= 15; d++) {
        for (int shape = 0; shape < 4; shape++) {
            /* Mantissas under 2^50 so that the encoder's v * 10^d lands within 0.5 of m. */
            int64_t m = (int64_t)(rnd() >> 14) - (1LL << 49);
            int64_t step = (int64_t)rnd_below(1ULL << rnd_below(30)) + 1;
            for (int i = 0; i < N; i++) {
                if (shape == 0)
                    m += (int64_t)rnd_below(2 * (uint64_t)step + 1) - step; /* random walk */
                else if (shape == 1)
                    m += step; /* linear: delta-of-delta with zero residuals */
                else if (shape == 2)
                    m = (int64_t)rnd_below(1000) - 500; /* small noise */
                else
                    m = (int64_t)(rnd() >> 14) - (1LL << 49); /* full range */
                v[i] = (double)m / p10[d];
            }
            snprintf(what, sizeof what, "values %d-digit decimals, shape %d", d, shape);
            int scheme = values_roundtrip(v, N, what);
            CHECK(scheme == VAL_DEC_DELTA || scheme == VAL_DEC_DOD,
                  "%s: expected a decimal scheme, got 0x%02x", what, scheme);
            size_t len = 0;
            uint8_t *enc = values_encoding(v, N, &len);
            CHECK((enc[1] >> 4) <= d, "%s: used %d digits, needs at most %d", what, enc[1] >> 4, d);
            if (shape == 1)
                CHECK(enc[0] == VAL_DEC_DOD && (enc[1] & 0xf) == 0,
                      "%s: a linear run is delta-of-delta with zero-width residuals", what);
            free(enc);
        }
    }

    /* The fewest digits: {1.5, 2.25, 3} needs 2. */
    double mixed[] = {1.5, 2.25, 3, 4.75, 0.01};
    size_t len = 0;
    uint8_t *enc = values_encoding(mixed, 5, &len);
    CHECK((enc[0] == VAL_DEC_DELTA || enc[0] == VAL_DEC_DOD) && enc[1] >> 4 == 2,
          "{1.5,2.25,3,4.75,0.01}: expected a decimal scheme with 2 digits, got 0x%02x, %d", enc[0],
          enc[1] >> 4);
    free(enc);
    values_roundtrip(mixed, 5, "values mixed digits");

    /* 0.1 + 0.2 is not 0.3: one such value sends the run to XOR, bit-exact. */
    double sums[] = {0.1, 0.2, 0.3, 0.1 + 0.2, 0.4};
    CHECK(values_roundtrip(sums, 5, "values 0.1+0.2") == VAL_XOR, "0.1+0.2 needs XOR");
    double clean[] = {0.1, 0.2, 0.3, 0.4, 0.5};
    CHECK(values_roundtrip(clean, 5, "values 0.1..0.5") != VAL_XOR, "0.1..0.5 are decimals");

    /* More than 15 digits: XOR. */
    double deep[] = {1e-16, 2e-16, 3e-16};
    CHECK(values_roundtrip(deep, 3, "values 16 digits") == VAL_XOR, "16 digits needs XOR");
    free(v);
}

static void test_values_vectors(void **state)
{
    (void)state;
    size_t len = 0;
    double one[] = {1.0, 1.0};
    const uint8_t want_const[] = {0x21, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f};
    uint8_t *enc = values_encoding(one, 2, &len);
    check_bytes(enc, len, want_const, sizeof want_const, "values {1,1}");
    free(enc);

    /* d = 1, m = 15, 25, 20: deltas 10, -5 (zz 20, 9) in one byte plane. */
    double dec[] = {1.5, 2.5, 2.0};
    const uint8_t want_dec[] = {0x23, 0x11, 0x1e, 0x14, 0x09};
    enc = values_encoding(dec, 3, &len);
    check_bytes(enc, len, want_dec, sizeof want_dec, "values {1.5,2.5,2}");
    free(enc);

    /* m = 0, 1, 2, 3, 2: first delta 1 (zz 2), then delta-of-deltas 0, 0, -2 (zz 3)
     * packed as nibbles: 0x00, then 0x03 with a zero high nibble. */
    double dod[] = {0, 1, 2, 3, 2};
    const uint8_t want_dod[] = {0x24, 0x09, 0x00, 0x02, 0x00, 0x03};
    enc = values_encoding(dod, 5, &len);
    check_bytes(enc, len, want_dod, sizeof want_dod, "values {0,1,2,3,2}");
    free(enc);

    /* 1.0 ^ NaN = 0x4008000000000000: 0 leading and 6 trailing zero bytes. */
    double x[] = {1.0, from_bits(0x7ff8000000000000ULL)};
    const uint8_t want_xor[] = {0x22, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f, 0x06, 0x08, 0x40};
    enc = values_encoding(x, 2, &len);
    check_bytes(enc, len, want_xor, sizeof want_xor, "values {1,NaN}");
    free(enc);
}

static double random_double(int family)
{
    switch (family) {
    case 0:
        return from_bits(rnd()); /* any bits: NaNs, Inf, denormals included */
    case 1:
        return (rnd_unit() - 0.5) * 1e6;
    case 2:
        return (double)(int64_t)rnd_below(100) / 8; /* dyadic decimals */
    case 3:
        return rnd_below(10) == 0 ? NAN : (double)rnd_below(1000) / 100;
    default:
        return rnd_below(4) == 0 ? -0.0 : 0.0;
    }
}

static void test_values_random(void **state)
{
    (void)state;
    double *v = xmalloc(RANDOM_MAX_N * sizeof *v);
    char what[64];
    for (int iter = 0; iter < RANDOM_ROUNDS; iter++) {
        size_t n = rnd_below(RANDOM_MAX_N + 1);
        int family = (int)rnd_below(6);
        double walk = 0;
        int digits = (int)rnd_below(8);
        for (size_t i = 0; i < n; i++) {
            if (family == 5) { /* a rounded random walk, like a sensor */
                walk += rnd_unit() - 0.5;
                v[i] = round(walk * pow(10, digits)) / pow(10, digits);
            } else {
                v[i] = random_double(family);
            }
        }
        snprintf(what, sizeof what, "values random family %d n=%zu", family, n);
        values_roundtrip(v, n, what);
    }
    free(v);
}

/* ---- damaged input ---- */

static void expect_values_einval(const uint8_t *bytes, size_t len, size_t n, const char *what)
{
    uint8_t *in = exact_copy(bytes, len);
    double *out = xmalloc(n * sizeof *out);
    int rc = stele_values_decode(in, len, out, n);
    CHECK(rc == -EINVAL, "%s: expected -EINVAL, got %d", what, rc);
    free(in);
    free(out);
}

static void expect_ts_einval(const uint8_t *bytes, size_t len, size_t n, const char *what)
{
    uint8_t *in = exact_copy(bytes, len);
    int64_t *out = xmalloc(n * sizeof *out);
    int rc = stele_ts_decode(in, len, out, n);
    CHECK(rc == -EINVAL, "%s: expected -EINVAL, got %d", what, rc);
    free(in);
    free(out);
}

static void test_reject_inconsistent(void **state)
{
    (void)state;
    uint8_t b[32];
    double v[4];
    int64_t ts[4];

    /* Unknown schemes, including the other kind's. */
    for (int s = 0; s < 256; s++) {
        memset(b, 0, sizeof b);
        b[0] = (uint8_t)s;
        if (s != VAL_CONST && s != VAL_XOR && s != VAL_DEC_DELTA && s != VAL_DEC_DOD)
            for (size_t len = 1; len <= 12; len++)
                expect_values_einval(b, len, 2, "values unknown scheme");
        if (s != TS_DELTA && s != TS_DOD)
            for (size_t len = 1; len <= 12; len++)
                expect_ts_einval(b, len, 2, "ts unknown scheme");
    }
    /* Width codes 10..15; a timestamp width byte with a high nibble. */
    for (int w = 10; w < 16; w++) {
        const uint8_t dec[] = {VAL_DEC_DELTA, (uint8_t)w, 0x02, 0, 0, 0};
        expect_values_einval(dec, sizeof dec, 4, "values width code > 9");
        const uint8_t t[] = {TS_DELTA, (uint8_t)w, 0x02, 0, 0, 0};
        expect_ts_einval(t, sizeof t, 4, "ts width code > 9");
    }
    const uint8_t ts_digits[] = {TS_DELTA, 0x11, 0x02, 0x01};
    expect_ts_einval(ts_digits, sizeof ts_digits, 2, "ts with digits");
    /* Width must be 0 with no residuals. */
    const uint8_t stray_width[] = {VAL_DEC_DELTA, 0x01, 0x02};
    expect_values_einval(stray_width, sizeof stray_width, 1, "values width without residuals");
    /* Overlong and unterminated varints. */
    const uint8_t overlong[] = {TS_DOD, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff,
                                0xff,   0xff, 0xff, 0xff, 0x7f, 0x00};
    expect_ts_einval(overlong, sizeof overlong, 2, "ts overlong varint");
    const uint8_t unterminated[] = {VAL_DEC_DELTA, 0x00, 0x80, 0x80};
    expect_values_einval(unterminated, sizeof unterminated, 1, "values unterminated varint");
    /* Mantissa 2^53 (zz 2^54): out of the exact range. */
    uint8_t big[16] = {VAL_DEC_DELTA, 0x00};
    size_t blen = 2 + stele_varint_put(big + 2, stele_zigzag_encode((int64_t)1 << 53));
    expect_values_einval(big, blen, 1, "values mantissa 2^53");
    blen = 2 + stele_varint_put(big + 2, stele_zigzag_encode(-((int64_t)1 << 53)));
    expect_values_einval(big, blen, 1, "values mantissa -2^53");
    /* A residual walking the mantissa out of range. */
    const uint8_t walk_out[] = {VAL_DEC_DELTA, 0x08, 0x00, 0, 0, 0, 0, 0, 0, 0x40, 0};
    expect_values_einval(walk_out, sizeof walk_out, 2, "values mantissa walks to 2^53");
    /* Nibble tail must be zero. */
    const uint8_t tail[] = {VAL_DEC_DELTA, 0x09, 0x00, 0x12, 0x13};
    expect_values_einval(tail, sizeof tail, 4, "values nonzero nibble tail");
    const uint8_t ts_tail[] = {TS_DELTA, 0x09, 0x00, 0x12, 0x13};
    expect_ts_einval(ts_tail, sizeof ts_tail, 4, "ts nonzero nibble tail");
    /* XOR control bytes: tz 8, lz+tz 9, a non-canonical zero, data length mismatch. */
    const uint8_t bad_controls[] = {0x08, 0x90, 0x45, 0x17, 0x44, 0x62};
    for (size_t i = 0; i < sizeof bad_controls; i++) {
        uint8_t x[18] = {VAL_XOR, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f, bad_controls[i]};
        expect_values_einval(x, sizeof x, 2, "values bad XOR control");
    }
    const uint8_t xor_short[] = {VAL_XOR, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f, 0x06, 0x08};
    expect_values_einval(xor_short, sizeof xor_short, 2, "values XOR data short");
    /* Constant of the wrong length. */
    const uint8_t const_long[] = {VAL_CONST, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f, 0};
    expect_values_einval(const_long, sizeof const_long, 3, "values constant + 1 byte");
    /* n = 0 with bytes, bytes missing with n > 0, NULL with n > 0. */
    expect_values_einval(const_long, 9, 0, "values n=0 with bytes");
    CHECK(stele_values_decode(NULL, 0, v, 1) == -EINVAL, "values: empty input for n=1");
    CHECK(stele_ts_decode(NULL, 0, ts, 1) == -EINVAL, "ts: empty input for n=1");
    CHECK(stele_values_decode(const_long, 9, NULL, 1) == -EINVAL, "values: NULL output");
    CHECK(stele_values_decode(NULL, 0, NULL, 0) == 0, "values: n=0, nothing");
    size_t len = 0;
    CHECK(stele_values_encode(v, 1, b, sizeof b, NULL) == -EINVAL, "encode without out_len");
    CHECK(stele_ts_encode(NULL, 2, b, sizeof b, &len) == -EINVAL, "ts encode of NULL");
}

/* Random bytes — a few shapes that pass the first checks more often than pure noise —
 * must give 0 or -EINVAL, never a crash or an out-of-bounds access. */
static void test_garbage(void **state)
{
    (void)state;
    static const uint8_t schemes[] = {TS_DELTA, TS_DOD,        VAL_CONST,
                                      VAL_XOR,  VAL_DEC_DELTA, VAL_DEC_DOD};
    uint8_t raw[GARBAGE_MAX_LEN];
    size_t ok = 0;
    for (int iter = 0; iter < GARBAGE_ROUNDS; iter++) {
        size_t len = rnd_below(GARBAGE_MAX_LEN + 1);
        for (size_t i = 0; i < len; i++)
            raw[i] = (uint8_t)rnd();
        if (len > 0 && rnd_below(4) != 0)
            raw[0] = schemes[rnd_below(sizeof schemes)];
        if (len > 1 && rnd_below(2) == 0)
            raw[1] = (uint8_t)(rnd_below(16) << 4 | rnd_below(10)); /* a valid width byte */
        if (len > 2 && rnd_below(2) == 0)
            raw[2] &= 0x7f; /* a one-byte first varint */
        size_t n = rnd_below(4) == 0 ? rnd_below(4) : rnd_below(2 * len + 8);
        uint8_t *in = exact_copy(raw, len);
        void *out = xmalloc(n * 8);
        int rc = stele_values_decode(in, len, out, n);
        CHECK(rc == 0 || rc == -EINVAL, "garbage values decode (len %zu, n %zu) gave %d", len, n,
              rc);
        ok += rc == 0;
        rc = stele_ts_decode(in, len, out, n);
        CHECK(rc == 0 || rc == -EINVAL, "garbage ts decode (len %zu, n %zu) gave %d", len, n, rc);
        ok += rc == 0;
        free(in);
        free(out);
    }
    print_message("garbage: %zu of %d decodes accepted (structurally valid)\n", ok,
                  2 * GARBAGE_ROUNDS);
}

/* Inputs that pass the header checks — a valid scheme, width byte and varints, and
 * exactly as many residual or XOR data bytes as n asks for — with random contents, so
 * the decode loops themselves run on garbage (pure noise rarely gets that far). */
static void test_structured_garbage(void **state)
{
    (void)state;
    static const uint8_t seq_schemes[] = {TS_DELTA, TS_DOD, VAL_DEC_DELTA, VAL_DEC_DOD};
    uint8_t raw[2 * GARBAGE_MAX_LEN];
    size_t ok = 0, total = 0;
    for (int iter = 0; iter < GARBAGE_ROUNDS / 4; iter++) {
        size_t len = 0, n = 0;
        if (rnd_below(3) == 0) { /* XOR with canonical control bytes */
            size_t count = rnd_below(GARBAGE_MAX_LEN / 9);
            raw[len++] = VAL_XOR;
            for (int i = 0; i < 8; i++)
                raw[len++] = (uint8_t)rnd();
            size_t data = 0;
            for (size_t i = 0; i < count; i++) {
                unsigned lz = (unsigned)rnd_below(9),
                         tz = lz == 8 ? 0 : (unsigned)rnd_below(9 - lz);
                tz = tz > 7 ? 7 : tz;
                if (lz + tz == 8)
                    lz = 8, tz = 0;
                raw[len++] = (uint8_t)(lz << 4 | tz);
                data += 8 - lz - tz;
            }
            for (size_t i = 0; i < data; i++)
                raw[len++] = (uint8_t)rnd();
            n = count + 1;
        } else {
            uint8_t scheme = seq_schemes[rnd_below(4)];
            int order = scheme == TS_DOD || scheme == VAL_DEC_DOD ? 2 : 1;
            bool decimal = scheme >= VAL_DEC_DELTA;
            size_t count = rnd_below(GARBAGE_MAX_LEN / 8) + 1;
            unsigned wcode = (unsigned)rnd_below(10);
            raw[len++] = scheme;
            raw[len++] = (uint8_t)((decimal ? rnd_below(16) << 4 : 0) | wcode);
            uint64_t first = rnd() >> rnd_below(64);
            len += stele_varint_put(raw + len, first);
            if (order == 2)
                len += stele_varint_put(raw + len, rnd() >> rnd_below(64));
            size_t bytes = wcode == 9 ? count / 2 + (count & 1) : count * wcode;
            for (size_t i = 0; i < bytes; i++)
                raw[len++] = (uint8_t)(rnd() >> (8 * rnd_below(8))); /* skewed to zero */
            n = count + (size_t)order;
        }
        uint8_t *in = exact_copy(raw, len);
        void *out = xmalloc(n * 8);
        int rc = stele_values_decode(in, len, out, n);
        CHECK(rc == 0 || rc == -EINVAL, "structured values decode (len %zu, n %zu) gave %d", len, n,
              rc);
        ok += rc == 0;
        rc = stele_ts_decode(in, len, out, n);
        CHECK(rc == 0 || rc == -EINVAL, "structured ts decode (len %zu, n %zu) gave %d", len, n,
              rc);
        ok += rc == 0;
        total += 2;
        free(in);
        free(out);
    }
    print_message("structured garbage: %zu of %zu decodes accepted\n", ok, total);
    CHECK(ok > total / 10, "structured garbage should mostly reach the decode loops");
}

/* Every single-bit flip of valid encodings: 0 or -EINVAL, nothing else, no overrun. */
static void test_bit_flips(void **state)
{
    (void)state;
    enum { N = 48 };
    double v[N];
    int64_t ts[N];
    double *out = xmalloc(N * sizeof *out);
    for (int family = 0; family < 6; family++) {
        for (int i = 0; i < N; i++) {
            ts[i] =
                1451606400000000000LL + i * 10000000000LL + (family ? (int64_t)rnd_below(99) : 0);
            v[i] = family == 5 ? round((rnd_unit() * 100) * 1e3) / 1e3 : random_double(family);
        }
        size_t vlen = 0, tlen = 0;
        uint8_t *venc = values_encoding(v, N, &vlen);
        uint8_t *tenc = ts_encoding(ts, N, &tlen);
        for (size_t bit = 0; bit < 8 * vlen; bit++) {
            uint8_t *in = exact_copy(venc, vlen);
            in[bit / 8] ^= (uint8_t)(1u << (bit % 8));
            int rc = stele_values_decode(in, vlen, out, N);
            CHECK(rc == 0 || rc == -EINVAL, "values bit flip %zu gave %d", bit, rc);
            free(in);
        }
        for (size_t bit = 0; bit < 8 * tlen; bit++) {
            uint8_t *in = exact_copy(tenc, tlen);
            in[bit / 8] ^= (uint8_t)(1u << (bit % 8));
            int rc = stele_ts_decode(in, tlen, (int64_t *)(void *)out, N);
            CHECK(rc == 0 || rc == -EINVAL, "ts bit flip %zu gave %d", bit, rc);
            free(in);
        }
        free(venc);
        free(tenc);
    }
    free(out);
}

static void test_bounds(void **state)
{
    (void)state;
    CHECK(stele_ts_encode_bound(SIZE_MAX) == SIZE_MAX, "ts bound must saturate");
    CHECK(stele_values_encode_bound(SIZE_MAX / 2) == SIZE_MAX, "values bound must saturate");
    CHECK(stele_ts_encode_bound(1) >= 12 && stele_values_encode_bound(1) >= 9,
          "bounds cover the headers");
}

int main(void)
{
    const char *env = getenv("STELE_TEST_SEED");
    g_seed = env && *env ? strtoull(env, NULL, 10)
                         : (uint64_t)time(NULL) * 1000003u ^ (uint64_t)getpid();
    g_rng = g_seed;
    print_message("test_codec: seed %" PRIu64 " (set STELE_TEST_SEED to repeat)\n", g_seed);

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ts_small_n),      cmocka_unit_test(test_ts_regular_is_constant_size),
        cmocka_unit_test(test_ts_vectors),      cmocka_unit_test(test_ts_adversarial),
        cmocka_unit_test(test_ts_random),       cmocka_unit_test(test_values_small_n),
        cmocka_unit_test(test_values_special),  cmocka_unit_test(test_values_integers),
        cmocka_unit_test(test_values_decimals), cmocka_unit_test(test_values_vectors),
        cmocka_unit_test(test_values_random),   cmocka_unit_test(test_reject_inconsistent),
        cmocka_unit_test(test_garbage),         cmocka_unit_test(test_structured_garbage),
        cmocka_unit_test(test_bit_flips),       cmocka_unit_test(test_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
