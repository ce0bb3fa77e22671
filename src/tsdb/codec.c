/*
 * codec.c — the compression codecs for one series' timestamps and values inside a
 * block (API and intent: include/stele/codec.h).
 *
 * Design. The block writer concatenates the encodings of many series and compresses
 * them with zstd, so these codecs do the part zstd cannot — turn numbers into small,
 * byte-aligned residuals with a predictable byte distribution — and leave the entropy
 * coding to zstd. Timestamps become delta or delta-of-delta residuals; values that are
 * short decimals (almost all sensor readings) become integer mantissas, then delta or
 * delta-of-delta residuals; everything else is XOR-coded against the previous value.
 * Residuals are zigzag-mapped and stored fixed-width and TRANSPOSED: first the low byte
 * of every residual, then the next byte of every residual, and so on ("byte planes"),
 * or two per byte when they all fit in 4 bits. Transposition keeps the near-random low
 * bytes apart from the mostly-zero high bytes, so zstd's Huffman stage sees two
 * skewed distributions instead of one blurred one (zstd has one Huffman table per
 * block, and a random walk leaves little for its match finder).
 *
 * Measured (prototypes of each layout, then this file) on the TSBS-"iot"-like workload
 * of bench/bench_codec.c: 1000 trucks x 10 fields x 1000 points, a field's series
 * together in 1 MiB groups, zstd level 3; values only, in bytes/point:
 *     LEB128 varints of the deltas                 0.567
 *     fixed-width deltas, interleaved              0.587
 *     fixed-width deltas, byte planes              0.552
 *     byte planes, 4-bit packing when it fits      0.543   <- this format
 *     same with delta-of-delta instead of delta    0.610   (random walks)
 *     XOR against the previous value (0x22 below)  1.83
 *     order-0 entropy of the deltas (lower bound)  0.515
 * With timestamps, 0.547 overall (0.538 at zstd level 1). Sub-byte packing at 1 and 2
 * bits gained nothing over 4 bits there, so it is not in the format. Delta versus
 * delta-of-delta is chosen per run by the summed bit length of the residuals, a cheap
 * stand-in for what zstd will be left with. A regular timestamp series is delta-of-
 * delta with zero-width residuals: ~16 bytes per run, whatever its length.
 *
 * Speed (bench_codec, one core of a 2-core Xeon VM, gcc 12 -O2): values encode ~100 M
 * points/s (two passes, each value checked once per pass with a division), decode
 * ~860 M points/s; timestamps ~480 M and ~1.9 G points/s.
 *
 * Format. The first byte names the scheme; integers are little-endian; "varint" is
 * LEB128 (include/stele/varint.h) and "zz" the zigzag map of a signed integer. n, the
 * number of samples, is not stored: the block records it, and the decoder must be told.
 * n = 0 encodes as zero bytes (for either kind).
 *
 *   Timestamps, 0x11 (delta) and 0x12 (delta-of-delta):
 *     byte 0      scheme
 *     byte 1      wcode, the residual width (below); high nibble 0
 *     varint      zz(ts[0])
 *     varint      zz(ts[1] - ts[0])          only for 0x12 and n >= 2
 *     residuals   0x11: zz(ts[i] - ts[i-1]) for i = 1 .. n-1
 *                 0x12: zz((ts[i] - ts[i-1]) - (ts[i-1] - ts[i-2])) for i = 2 .. n-1
 *   Arithmetic is modulo 2^64, so any int64 sequence, even non-monotonic or spanning
 *   INT64_MIN .. INT64_MAX, round-trips.
 *
 *   Values, 0x21 (constant):
 *     byte 0      scheme
 *     bytes 1..8  the IEEE-754 bits of the value, repeated n times
 *
 *   Values, 0x22 (XOR):
 *     byte 0      scheme
 *     bytes 1..8  the bits of v[0]
 *     n-1 bytes   control byte per x[i] = bits(v[i]) ^ bits(v[i-1]), i = 1 .. n-1:
 *                 high nibble lz = leading zero bytes of x (0..8), low nibble tz =
 *                 trailing zero bytes (0..7); x = 0 is 0x80 and only 0x80
 *     data        per i, the 8-lz-tz middle bytes of x, least significant first
 *
 *   Values, 0x23 (decimal delta) and 0x24 (decimal delta-of-delta): every v[i] equals,
 *   bit for bit, the double nearest m[i] / 10^d for integers |m[i]| < 2^53 and one d:
 *     byte 0      scheme
 *     byte 1      d << 4 | wcode            d = 0..15 digits after the point
 *     varint      zz(m[0])
 *     varint      zz(m[1] - m[0])            only for 0x24 and n >= 2
 *     residuals   as for timestamps, over m instead of ts
 *   The decoder computes v[i] = (double)m[i] / 10^d, one correctly rounded division;
 *   the encoder has checked that this gives back v[i] exactly. -0.0, NaN and ±Inf are
 *   never decimal (m = 0 gives +0.0) and go to the XOR scheme, as does a run with any
 *   value that is not a short decimal (one 0.1 + 0.2 sends its whole run to XOR).
 *
 *   Residuals: count = n - 1 (delta) or n - 2 (delta-of-delta), zero if n is smaller;
 *   each residual is a zz'd value r[j]:
 *     wcode 0      no bytes: every r[j] is 0 (a regular series, an arithmetic run)
 *     wcode 1..8   wcode byte planes of count bytes; plane b holds byte b of every r[j]
 *     wcode 9      every r[j] < 16: ceil(count/2) bytes, r[2k] in the low nibble of
 *                  byte k, r[2k+1] in its high nibble (0 when count is odd)
 *   With count = 0 the wcode is 0.
 *
 * Invariants the decoders enforce, answering -EINVAL otherwise: a known scheme; fields
 * in range; varints well formed; the residuals or data take exactly the bytes left
 * (no trailing byte); decimal mantissas stay within ±(2^53-1). A flipped bit inside the
 * residuals of a valid encoding still decodes, to other numbers: catching that is the
 * block checksum's job, not the codec's. Decoders never read outside in[0..len) and
 * never write outside out[0..n), whatever the input.
 *
 * Threads: no state; every call is independent.
 */
#include "stele/codec.h"
#include "stele/varint.h"

#include <endian.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <string.h>

enum codec_scheme {
    TS_DELTA = 0x11,
    TS_DOD = 0x12,
    VAL_CONST = 0x21,
    VAL_XOR = 0x22,
    VAL_DEC_DELTA = 0x23,
    VAL_DEC_DOD = 0x24,
};

/* Residual width codes (see the format above): 1..8 bytes, as a residual is at most 64
 * bits; the 4-bit packing takes the next code, 9, so codes above it are invalid. */
#define WCODE_NONE 0
#define WCODE_NIBBLE 9

/* Digits after the decimal point: the format's 4-bit field allows 0..15 and 10^15 is
 * an exact double; a double has at most 17 significant digits, so deeper scales would
 * rarely keep |m| < 2^53 anyway. */
#define DEC_MAX_DIGITS 15
/* Mantissas stay within ±(2^53-1): every such integer converts to double exactly, so
 * the decoder's (double)m / 10^d is one correctly rounded division, as in the encoder's
 * check. */
#define DEC_MANTISSA_MAX ((int64_t)((1ULL << 53) - 1))

/* Scheme, width byte and two varints (first sample, first delta): the fixed part of a
 * timestamp or decimal encoding. */
#define SEQ_HEADER_MAX (2 + 2 * STELE_VARINT_MAX)
/* Scheme byte and the 8 bytes of the first value: the fixed part of 0x21 and 0x22. */
#define RAW_HEADER_SIZE 9
/* An XOR sample costs at most its control byte and 8 data bytes. */
#define XOR_SAMPLE_MAX 9

_Static_assert(sizeof(double) == sizeof(uint64_t), "doubles must be 64-bit IEEE-754");
_Static_assert(RAW_HEADER_SIZE == 1 + sizeof(double), "scheme byte and one raw value");
_Static_assert(XOR_SAMPLE_MAX == 1 + sizeof(double), "control byte and all 8 bytes of x");

static const double pow10_table[DEC_MAX_DIGITS + 1] = {
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
};

static inline uint64_t double_bits(double v)
{
    uint64_t u;
    memcpy(&u, &v, sizeof u);
    return u;
}

static inline double bits_double(uint64_t u)
{
    double v;
    memcpy(&v, &u, sizeof v);
    return v;
}

/* The decoders stage residuals in their output arrays before turning them into
 * samples; these move 64-bit words in and out of either int64_t or double storage
 * without breaking aliasing rules (compilers emit plain loads and stores). */
static inline void slot_put(void *base, size_t i, uint64_t u)
{
    memcpy((unsigned char *)base + i * sizeof u, &u, sizeof u);
}

static inline uint64_t slot_get(const void *base, size_t i)
{
    uint64_t u;
    memcpy(&u, (const unsigned char *)base + i * sizeof u, sizeof u);
    return u;
}

static inline void put_le64(uint8_t *p, uint64_t u)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(u >> (8 * i));
}

static inline uint64_t get_le64(const uint8_t *p)
{
    uint64_t u = 0;
    for (int i = 0; i < 8; i++)
        u |= (uint64_t)p[i] << (8 * i);
    return u;
}

static inline unsigned bit_length(uint64_t u)
{
    return u ? 64 - (unsigned)__builtin_clzll(u) : 0;
}

/* ---- residuals: the byte-plane layout shared by timestamps and decimals ---- */

/* Summary of one candidate residual sequence, gathered before anything is written. */
typedef struct resid_stats {
    uint64_t or_all; /* OR of every zz'd residual: its bit length sets the width */
    uint64_t cost;   /* sum of bit lengths: what zstd will roughly be left with */
} resid_stats;

static inline void resid_stats_add(resid_stats *s, uint64_t zz)
{
    s->or_all |= zz;
    s->cost += bit_length(zz | 1);
}

static unsigned resid_wcode(uint64_t or_all)
{
    unsigned bits = bit_length(or_all);
    if (bits == 0)
        return WCODE_NONE;
    if (bits <= 4)
        return WCODE_NIBBLE;
    return (bits + 7) / 8;
}

static size_t resid_size(unsigned wcode, size_t count)
{
    if (wcode == WCODE_NIBBLE)
        return count / 2 + (count & 1);
    return count * wcode;
}

/* Stores residual j of count; the caller walks j upwards from 0, so a nibble byte is
 * set by its even residual before its odd one is ORed in. */
static inline void resid_put(uint8_t *dst, size_t count, unsigned wcode, size_t j, uint64_t zz)
{
    switch (wcode) {
    case WCODE_NONE:
        break;
    case WCODE_NIBBLE:
        if (j & 1)
            dst[j >> 1] |= (uint8_t)(zz << 4);
        else
            dst[j >> 1] = (uint8_t)zz;
        break;
    case 1:
        dst[j] = (uint8_t)zz;
        break;
    case 2:
        dst[j] = (uint8_t)zz;
        dst[count + j] = (uint8_t)(zz >> 8);
        break;
    default:
        for (unsigned b = 0; b < wcode; b++)
            dst[b * count + j] = (uint8_t)(zz >> (8 * b));
        break;
    }
}

/* Unpacks count residuals from src (resid_size(wcode, count) bytes) into 64-bit slots
 * of dst. -EINVAL if a packed tail nibble is not zero. */
static int resid_unpack(const uint8_t *src, size_t count, unsigned wcode, void *dst)
{
    switch (wcode) {
    case WCODE_NONE:
        for (size_t j = 0; j < count; j++)
            slot_put(dst, j, 0);
        break;
    case WCODE_NIBBLE:
        for (size_t k = 0; k < count / 2; k++) {
            slot_put(dst, 2 * k, src[k] & 0xf);
            slot_put(dst, 2 * k + 1, src[k] >> 4);
        }
        if (count & 1) {
            uint8_t last = src[count / 2];
            if (last >> 4)
                return -EINVAL;
            slot_put(dst, count - 1, last);
        }
        break;
    case 1:
        for (size_t j = 0; j < count; j++)
            slot_put(dst, j, src[j]);
        break;
    case 2:
        for (size_t j = 0; j < count; j++)
            slot_put(dst, j, src[j] | (uint64_t)src[count + j] << 8);
        break;
    default:
        for (size_t j = 0; j < count; j++) {
            uint64_t zz = 0;
            for (unsigned b = 0; b < wcode; b++)
                zz |= (uint64_t)src[b * count + j] << (8 * b);
            slot_put(dst, j, zz);
        }
        break;
    }
    return 0;
}

/* Parsed fixed part of a timestamp or decimal encoding. */
typedef struct seq_header {
    int order;       /* 1 = delta, 2 = delta-of-delta */
    unsigned wcode;  /* residual width */
    unsigned digits; /* decimals only: d */
    uint64_t first;  /* zz(first sample) */
    uint64_t delta0; /* zz(first delta), order 2 and n >= 2 only */
    size_t count;    /* residuals */
    const uint8_t *resid;
} seq_header;

/* Parses byte 1, the varints and checks that the residuals fill the rest exactly. */
static int seq_header_parse(const uint8_t *in, size_t len, size_t n, int order, bool decimal,
                            seq_header *h)
{
    const uint8_t *p = in + 1, *end = in + len;
    int rc = 0;

    if (p >= end)
        return -EINVAL;
    h->order = order;
    h->wcode = *p & 0xf;
    h->digits = *p >> 4;
    p++;
    if (h->wcode > WCODE_NIBBLE || (!decimal && h->digits != 0))
        return -EINVAL;
    rc = stele_varint_get(&p, end, &h->first);
    if (rc != 0)
        return -EINVAL;
    h->delta0 = 0;
    if (order == 2 && n >= 2) {
        rc = stele_varint_get(&p, end, &h->delta0);
        if (rc != 0)
            return -EINVAL;
    }
    h->count = n > (size_t)order ? n - (size_t)order : 0;
    if (h->count == 0 && h->wcode != WCODE_NONE)
        return -EINVAL;
    /* count * wcode must not overflow before it is compared with what is left. */
    size_t left = (size_t)(end - p);
    if (h->wcode != WCODE_NONE && h->wcode != WCODE_NIBBLE && h->count > left / h->wcode)
        return -EINVAL;
    if (resid_size(h->wcode, h->count) != left)
        return -EINVAL;
    h->resid = p;
    return 0;
}

/* Writes scheme, width byte and varints to hdr; returns the header length. */
static size_t seq_header_put(uint8_t *hdr, uint8_t scheme, uint8_t width_byte, uint64_t first,
                             bool with_delta0, uint64_t delta0)
{
    size_t len = 0;
    hdr[len++] = scheme;
    hdr[len++] = width_byte;
    len += stele_varint_put(hdr + len, first);
    if (with_delta0)
        len += stele_varint_put(hdr + len, delta0);
    return len;
}

/* ---- timestamps ---- */

size_t stele_ts_encode_bound(size_t n)
{
    if (n > (SIZE_MAX - SEQ_HEADER_MAX) / sizeof(int64_t))
        return SIZE_MAX;
    return SEQ_HEADER_MAX + n * sizeof(int64_t);
}

int stele_ts_encode(const int64_t *ts, size_t n, uint8_t *out, size_t cap, size_t *out_len)
{
    resid_stats delta = {0, 0}, dod = {0, 0};
    uint8_t hdr[SEQ_HEADER_MAX];
    int rc = 0;

    if (!out_len || (n && !ts) || (cap && !out)) {
        rc = -EINVAL;
        goto fail;
    }
    *out_len = 0;
    if (n == 0)
        return 0;

    /* Deltas in uint64_t: wrap-around is the format's arithmetic, not an overflow. */
    for (size_t i = 1; i < n; i++) {
        uint64_t d = (uint64_t)ts[i] - (uint64_t)ts[i - 1];
        uint64_t zz = stele_zigzag_encode((int64_t)d);
        resid_stats_add(&delta, zz);
        if (i == 1) {
            dod.cost += bit_length(zz | 1); /* the header varint delta-of-delta pays */
        } else {
            uint64_t prev = (uint64_t)ts[i - 1] - (uint64_t)ts[i - 2];
            resid_stats_add(&dod, stele_zigzag_encode((int64_t)(d - prev)));
        }
    }
    int order = n >= 3 && dod.cost < delta.cost ? 2 : 1;
    unsigned wcode = resid_wcode(order == 2 ? dod.or_all : delta.or_all);
    size_t count = n > (size_t)order ? n - (size_t)order : 0;
    uint64_t delta0 = n >= 2 ? (uint64_t)ts[1] - (uint64_t)ts[0] : 0;
    size_t hlen = seq_header_put(hdr, order == 2 ? TS_DOD : TS_DELTA, (uint8_t)wcode,
                                 stele_zigzag_encode(ts[0]), order == 2,
                                 stele_zigzag_encode((int64_t)delta0));
    size_t total = hlen + resid_size(wcode, count);
    if (total > cap) {
        rc = -ENOSPC;
        goto fail;
    }
    memcpy(out, hdr, hlen);
    uint8_t *dst = out + hlen;
    if (order == 1) {
        for (size_t j = 0; j < count; j++) {
            uint64_t d = (uint64_t)ts[j + 1] - (uint64_t)ts[j];
            resid_put(dst, count, wcode, j, stele_zigzag_encode((int64_t)d));
        }
    } else {
        uint64_t prev = delta0;
        for (size_t j = 0; j < count; j++) {
            uint64_t d = (uint64_t)ts[j + 2] - (uint64_t)ts[j + 1];
            resid_put(dst, count, wcode, j, stele_zigzag_encode((int64_t)(d - prev)));
            prev = d;
        }
    }
    *out_len = total;
    return 0;

fail:
    return rc;
}

int stele_ts_decode(const uint8_t *in, size_t len, int64_t *ts, size_t n)
{
    seq_header h;
    int rc = 0;

    if ((len && !in) || (n && !ts)) {
        rc = -EINVAL;
        goto fail;
    }
    if (n == 0) {
        rc = len == 0 ? 0 : -EINVAL;
        goto fail;
    }
    if (len < 1 || (in[0] != TS_DELTA && in[0] != TS_DOD)) {
        rc = -EINVAL;
        goto fail;
    }
    rc = seq_header_parse(in, len, n, in[0] == TS_DOD ? 2 : 1, false, &h);
    if (rc != 0)
        goto fail;
    /* Residual j lands in the slot of the sample it produces, then is replaced by it. */
    if (h.count > 0) {
        rc = resid_unpack(h.resid, h.count, h.wcode, ts + h.order);
        if (rc != 0)
            goto fail;
    }

    uint64_t t = (uint64_t)stele_zigzag_decode(h.first);
    ts[0] = (int64_t)t;
    if (h.order == 1) {
        for (size_t i = 1; i < n; i++) {
            t += (uint64_t)stele_zigzag_decode(slot_get(ts, i));
            ts[i] = (int64_t)t;
        }
    } else {
        uint64_t d = (uint64_t)stele_zigzag_decode(h.delta0);
        if (n >= 2) {
            t += d;
            ts[1] = (int64_t)t;
        }
        for (size_t i = 2; i < n; i++) {
            d += (uint64_t)stele_zigzag_decode(slot_get(ts, i));
            t += d;
            ts[i] = (int64_t)t;
        }
    }
    return 0;

fail:
    return rc;
}

/* ---- values: decimal detection ---- */

/* Nearest integer to s, for |s| < 2^53 (ties away from zero; the caller verifies the
 * result anyway, so the tie rule only has to be the same in both passes). Truncation
 * and the subtraction are exact in that range, and unlike llrint() this inlines to a
 * handful of instructions on any x86-64. */
static inline int64_t dec_round(double s)
{
    int64_t c = (int64_t)s;
    double frac = s - (double)c;
    return c + (frac >= 0.5) - (frac <= -0.5);
}

/* Whether v is exactly the double nearest m / 10^d for an |m| < 2^53, and that m. */
static inline bool dec_mantissa(double v, unsigned d, int64_t *m)
{
    double s = v * pow10_table[d];
    if (!(fabs(s) < 0x1p53)) /* also rejects NaN and ±Inf */
        return false;
    int64_t c = dec_round(s);
    if (c > DEC_MANTISSA_MAX || c < -DEC_MANTISSA_MAX)
        return false;
    if (double_bits((double)c / pow10_table[d]) != double_bits(v)) /* -0.0 fails here */
        return false;
    *m = c;
    return true;
}

/* What the decimal scheme would store for a run. */
typedef struct dec_plan {
    unsigned digits;
    resid_stats delta, dod;
    int64_t m0, m1;
} dec_plan;

/* Finds the fewest digits d that make every value an exact decimal and gathers the
 * residual statistics at that d. false if there is none (the run goes to XOR). A value
 * needing more digits than the ones seen so far restarts the scan at the new d: a
 * decimal at d is also one at d + k unless its mantissa outgrows 2^53, so one scan at
 * the final d re-verifies everything; at most DEC_MAX_DIGITS restarts. */
static bool dec_plan_make(const double *v, size_t n, dec_plan *plan)
{
    unsigned d = 0;

restart:
    plan->digits = d;
    plan->delta = (resid_stats){0, 0};
    plan->dod = (resid_stats){0, 0};
    plan->m0 = plan->m1 = 0;
    int64_t prev = 0, prev_delta = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t m;
        if (!dec_mantissa(v[i], d, &m)) {
            unsigned more = d + 1;
            while (more <= DEC_MAX_DIGITS && !dec_mantissa(v[i], more, &m))
                more++;
            if (more > DEC_MAX_DIGITS)
                return false;
            d = more;
            goto restart;
        }
        /* |m| < 2^53: deltas and deltas of deltas fit in int64_t without overflow. */
        if (i == 0) {
            plan->m0 = m;
        } else {
            int64_t delta = m - prev;
            uint64_t zz = stele_zigzag_encode(delta);
            resid_stats_add(&plan->delta, zz);
            if (i == 1) {
                plan->m1 = m;
                plan->dod.cost += bit_length(zz | 1); /* the header varint */
            } else {
                resid_stats_add(&plan->dod, stele_zigzag_encode(delta - prev_delta));
            }
            prev_delta = delta;
        }
        prev = m;
    }
    return true;
}

/* Writes the decimal encoding that plan describes. 0, -ENOSPC, or -EDOM if a value no
 * longer re-verifies (the caller then falls back to XOR). */
static int dec_encode(const double *v, size_t n, const dec_plan *plan, uint8_t *out, size_t cap,
                      size_t *out_len)
{
    uint8_t hdr[SEQ_HEADER_MAX];
    int order = n >= 3 && plan->dod.cost < plan->delta.cost ? 2 : 1;
    unsigned wcode = resid_wcode(order == 2 ? plan->dod.or_all : plan->delta.or_all);
    size_t count = n > (size_t)order ? n - (size_t)order : 0;
    size_t hlen = seq_header_put(
        hdr, order == 2 ? VAL_DEC_DOD : VAL_DEC_DELTA, (uint8_t)(plan->digits << 4 | wcode),
        stele_zigzag_encode(plan->m0), order == 2, stele_zigzag_encode(plan->m1 - plan->m0));
    size_t total = hlen + resid_size(wcode, count);

    if (total > cap)
        return -ENOSPC;
    memcpy(out, hdr, hlen);
    uint8_t *dst = out + hlen;
    int64_t prev = order == 2 ? plan->m1 : plan->m0, prev_delta = plan->m1 - plan->m0;
    for (size_t j = 0; j < count; j++) {
        /* Verified again rather than trusted from dec_plan_make(): the mantissa comes
         * from floating-point rounding, and a compiler allowed to contract v * 10^d into
         * a fused multiply-add could round one pass differently from the other. The
         * check costs a division a value; a wrong mantissa would cost the data. */
        int64_t m;
        if (!dec_mantissa(v[j + (size_t)order], plan->digits, &m))
            return -EDOM;
        int64_t delta = m - prev;
        resid_put(dst, count, wcode, j,
                  stele_zigzag_encode(order == 1 ? delta : delta - prev_delta));
        prev_delta = delta;
        prev = m;
    }
    *out_len = total;
    return 0;
}

/* ---- values: XOR ---- */

static inline uint8_t xor_control(uint64_t x)
{
    if (x == 0)
        return 0x80;
    unsigned lz = (unsigned)__builtin_clzll(x) / 8, tz = (unsigned)__builtin_ctzll(x) / 8;
    return (uint8_t)(lz << 4 | tz);
}

static inline unsigned xor_control_bytes(uint8_t c)
{
    return 8 - (c >> 4) - (c & 0xf);
}

static size_t xor_size(const double *v, size_t n)
{
    size_t total = RAW_HEADER_SIZE + (n - 1);
    for (size_t i = 1; i < n; i++)
        total += xor_control_bytes(xor_control(double_bits(v[i]) ^ double_bits(v[i - 1])));
    return total;
}

static size_t xor_encode(const double *v, size_t n, uint8_t *out, size_t cap, int *rc)
{
    /* The exact size takes a pass; skip it when the caller gave the bound. */
    if (cap < RAW_HEADER_SIZE + (n - 1) * XOR_SAMPLE_MAX && xor_size(v, n) > cap) {
        *rc = -ENOSPC;
        return 0;
    }
    uint8_t *control = out + RAW_HEADER_SIZE, *data = control + (n - 1);
    uint64_t prev = double_bits(v[0]);
    out[0] = VAL_XOR;
    put_le64(out + 1, prev);
    for (size_t i = 1; i < n; i++) {
        uint64_t cur = double_bits(v[i]), x = cur ^ prev;
        uint8_t c = xor_control(x);
        unsigned nb = xor_control_bytes(c);
        control[i - 1] = c;
        x >>= 8 * (c & 0xf);
        for (unsigned b = 0; b < nb; b++)
            *data++ = (uint8_t)(x >> (8 * b));
        prev = cur;
    }
    *rc = 0;
    return (size_t)(data - out);
}

/* nb (0..8) little-endian bytes at p, where p + nb <= end. */
static inline uint64_t load_le_partial(const uint8_t *p, unsigned nb, const uint8_t *end)
{
    if (end - p >= 8) { /* one unaligned load, then keep nb bytes */
        uint64_t u;
        memcpy(&u, p, sizeof u);
        u = le64toh(u);
        return nb == 8 ? u : u & ((1ULL << (8 * nb)) - 1);
    }
    uint64_t u = 0;
    for (unsigned b = 0; b < nb; b++)
        u |= (uint64_t)p[b] << (8 * b);
    return u;
}

static int xor_decode(const uint8_t *in, size_t len, double *v, size_t n)
{
    const uint8_t *end = in + len;
    if (len < RAW_HEADER_SIZE || n - 1 > len - RAW_HEADER_SIZE)
        return -EINVAL;
    const uint8_t *control = in + RAW_HEADER_SIZE, *data = control + (n - 1);

    /* Validate every control byte and the total first, so the loop below cannot run
     * past the end. */
    size_t total = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        uint8_t c = control[i];
        unsigned lz = c >> 4, tz = c & 0xf;
        if (tz > 7 || lz + tz > 8 || (lz + tz == 8 && c != 0x80))
            return -EINVAL;
        total += 8 - lz - tz;
    }
    if (total != (size_t)(end - data))
        return -EINVAL;

    uint64_t prev = get_le64(in + 1);
    v[0] = bits_double(prev);
    for (size_t i = 1; i < n; i++) {
        uint8_t c = control[i - 1];
        unsigned nb = xor_control_bytes(c);
        prev ^= load_le_partial(data, nb, end) << (8 * (c & 0xf));
        data += nb;
        v[i] = bits_double(prev);
    }
    return 0;
}

/* ---- values: entry points ---- */

size_t stele_values_encode_bound(size_t n)
{
    /* XOR's worst case, 9 bytes a sample, exceeds every other scheme's. */
    if (n > (SIZE_MAX - SEQ_HEADER_MAX) / XOR_SAMPLE_MAX)
        return SIZE_MAX;
    return SEQ_HEADER_MAX + n * XOR_SAMPLE_MAX;
}

int stele_values_encode(const double *v, size_t n, uint8_t *out, size_t cap, size_t *out_len)
{
    dec_plan plan;
    size_t len = 0;
    int rc = 0;

    if (!out_len || (n && !v) || (cap && !out)) {
        rc = -EINVAL;
        goto fail;
    }
    *out_len = 0;
    if (n == 0)
        return 0;

    uint64_t first = double_bits(v[0]);
    size_t same = 1;
    while (same < n && double_bits(v[same]) == first)
        same++;
    if (same == n) {
        if (cap < RAW_HEADER_SIZE) {
            rc = -ENOSPC;
            goto fail;
        }
        out[0] = VAL_CONST;
        put_le64(out + 1, first);
        len = RAW_HEADER_SIZE;
    } else {
        rc = dec_plan_make(v, n, &plan) ? dec_encode(v, n, &plan, out, cap, &len) : -EDOM;
        if (rc == -EDOM)
            len = xor_encode(v, n, out, cap, &rc);
    }
    if (rc != 0)
        goto fail;
    *out_len = len;
    return 0;

fail:
    return rc;
}

static int dec_decode(const uint8_t *in, size_t len, double *v, size_t n)
{
    seq_header h;
    int rc = seq_header_parse(in, len, n, in[0] == VAL_DEC_DOD ? 2 : 1, true, &h);
    if (rc != 0)
        return rc;
    if (h.count > 0) {
        rc = resid_unpack(h.resid, h.count, h.wcode, v + h.order);
        if (rc != 0)
            return rc;
    }

    /* Mantissas are tracked modulo 2^64 (damaged input must not overflow a signed
     * type) and checked in bulk: `bad` collects any that left ±DEC_MANTISSA_MAX. */
    const uint64_t bias = (uint64_t)DEC_MANTISSA_MAX, span = 2 * bias;
    const double scale = pow10_table[h.digits];
    uint64_t m = (uint64_t)stele_zigzag_decode(h.first);
    uint64_t d = (uint64_t)stele_zigzag_decode(h.delta0);
    bool bad = m + bias > span;
    v[0] = (double)(int64_t)m / scale;
    size_t i = 1;
    if (h.order == 2 && n >= 2) {
        m += d;
        bad |= m + bias > span;
        v[1] = (double)(int64_t)m / scale;
        i = 2;
    }
    /* Four loops so the common cases carry no per-sample branch; d = 0 skips the
     * division (integers are frequent, and dividing by 1 changes nothing). */
    if (h.order == 1 && h.digits == 0) {
        for (; i < n; i++) {
            m += (uint64_t)stele_zigzag_decode(slot_get(v, i));
            bad |= m + bias > span;
            v[i] = (double)(int64_t)m;
        }
    } else if (h.order == 1) {
        for (; i < n; i++) {
            m += (uint64_t)stele_zigzag_decode(slot_get(v, i));
            bad |= m + bias > span;
            v[i] = (double)(int64_t)m / scale;
        }
    } else {
        for (; i < n; i++) {
            d += (uint64_t)stele_zigzag_decode(slot_get(v, i));
            m += d;
            bad |= m + bias > span;
            v[i] = (double)(int64_t)m / scale;
        }
    }
    return bad ? -EINVAL : 0;
}

int stele_values_decode(const uint8_t *in, size_t len, double *v, size_t n)
{
    int rc = 0;

    if ((len && !in) || (n && !v)) {
        rc = -EINVAL;
        goto fail;
    }
    if (n == 0) {
        rc = len == 0 ? 0 : -EINVAL;
        goto fail;
    }
    if (len < 1) {
        rc = -EINVAL;
        goto fail;
    }
    switch (in[0]) {
    case VAL_CONST: {
        if (len != RAW_HEADER_SIZE) {
            rc = -EINVAL;
            goto fail;
        }
        double c = bits_double(get_le64(in + 1));
        for (size_t i = 0; i < n; i++)
            v[i] = c;
        break;
    }
    case VAL_XOR:
        rc = xor_decode(in, len, v, n);
        break;
    case VAL_DEC_DELTA:
    case VAL_DEC_DOD:
        rc = dec_decode(in, len, v, n);
        break;
    default:
        rc = -EINVAL;
        break;
    }
    if (rc != 0)
        goto fail;
    return 0;

fail:
    return rc;
}
