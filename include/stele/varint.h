/*
 * varint.h — LEB128 unsigned varints and zigzag signed mapping, shared by the codecs,
 * the write-ahead log and the block format. Decoders are bounds-checked: they never
 * read past `end` and reject encodings longer than 10 bytes.
 */
#ifndef STELE_VARINT_H
#define STELE_VARINT_H

#include <stddef.h>
#include <stdint.h>

#define STELE_VARINT_MAX 10

static inline uint64_t stele_zigzag_encode(int64_t v)
{
    return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
}

static inline int64_t stele_zigzag_decode(uint64_t u)
{
    return (int64_t)(u >> 1) ^ -(int64_t)(u & 1);
}

/* Writes v at p (room for STELE_VARINT_MAX bytes needed); returns bytes written. */
static inline size_t stele_varint_put(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

/* Reads a varint from *pp (not past end) into *v and advances *pp. 0, or -EINVAL on
 * truncation or overlong encoding. */
static inline int stele_varint_get(const uint8_t **pp, const uint8_t *end, uint64_t *v)
{
    const uint8_t *p = *pp;
    uint64_t result = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (p >= end)
            return -22; /* -EINVAL without pulling errno.h into every includer */
        uint8_t byte = *p++;
        if (shift == 63 && byte > 1)
            return -22;
        result |= (uint64_t)(byte & 0x7f) << shift;
        if (!(byte & 0x80)) {
            *v = result;
            *pp = p;
            return 0;
        }
    }
    return -22;
}

#endif
