/*
 * codec.h — compression of one series' timestamps and values inside a block.
 *
 * A block stores, per series, a run of samples sorted by timestamp (strictly
 * increasing: the writer has removed duplicates). Timestamps and values are encoded
 * separately into self-describing byte strings that the block writer then feeds,
 * many series together, to zstd. The codecs are therefore designed to leave byte-
 * aligned, repetitive output that zstd's entropy stage can still shrink, rather than
 * bit-packing everything themselves.
 *
 * Timestamps: delta-of-delta, zigzag varints (a regular 10 s series costs ~1 bit/pt
 * after zstd). Non-monotonic input is still encoded correctly (for robustness), just
 * less compactly.
 *
 * Values: the encoder picks, per run, the smallest of several schemes, each
 * round-trip exact to the bit:
 *   - constant run;
 *   - decimal: values that are all exactly v = m / 10^d for integers m (|m| < 2^53)
 *     and one d in 0..15 (sensor readings with a fixed number of decimals) are stored
 *     as m, delta- or delta-of-delta-coded as zigzag varints;
 *   - XOR (Gorilla-style) against the previous value, for everything else (NaN,
 *     ±Inf, -0.0, arbitrary doubles).
 * The first byte of every encoding names the scheme; decoders reject unknown schemes
 * and any inconsistency with -EINVAL, so damaged input is never read as data.
 */
#ifndef STELE_CODEC_H
#define STELE_CODEC_H

#include <stddef.h>
#include <stdint.h>

/* Largest encoding of n timestamps / values; size the output buffer with it. */
size_t stele_ts_encode_bound(size_t n);
size_t stele_values_encode_bound(size_t n);

/* Encodes n timestamps into out[0..cap); *out_len gets the size. -ENOSPC if cap is
 * smaller than needed (never with cap ≥ stele_ts_encode_bound(n)). */
int stele_ts_encode(const int64_t *ts, size_t n, uint8_t *out, size_t cap, size_t *out_len);
/* Decodes exactly n timestamps from in[0..len); -EINVAL if in is malformed or does not
 * hold exactly n (trailing bytes are an error). */
int stele_ts_decode(const uint8_t *in, size_t len, int64_t *ts, size_t n);

int stele_values_encode(const double *v, size_t n, uint8_t *out, size_t cap, size_t *out_len);
int stele_values_decode(const uint8_t *in, size_t len, double *v, size_t n);

#endif
