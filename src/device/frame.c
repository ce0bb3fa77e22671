/*
 * frame.c — sealed telemetry frames: building and sealing (device side, no allocation),
 * parsing and verifying (server side). See stele/frame.h.
 *
 * WIRE FORMAT, version 1 (little-endian; docs/format/frame.md has test vectors)
 *   0   2  magic "SF"
 *   2   1  version (1)
 *   3   1  algorithm (1 = Ed25519)
 *   4   1  device id length d (1..64)
 *   5   d  device id, [A-Za-z0-9._-]
 *   .   4  key id
 *   .   8  counter
 *   .   2  point count n (1..1024)
 *   n × point:
 *       1  metric length m (1..128), m bytes [a-zA-Z_:][a-zA-Z0-9_:]*
 *       1  label count k (0..16), then k × (1 name length (1..64), name
 *          [a-zA-Z_][a-zA-Z0-9_]* — not "device", "tenant" or starting "__" — 1 value
 *          length (1..128), value of printable ASCII), names strictly ascending
 *       8  timestamp, ns since the epoch (signed)
 *       8  value, IEEE 754 binary64; a NaN only as 0x7ff8000000000000
 *   64 Ed25519 signature of STELE_FRAME_DOMAIN, a zero byte, and bytes [0, here)
 *
 * Design: fixed-width fields and the canonical rules (sorted unique labels, one NaN, no
 * trailing bytes) make the encoding unique, so the bytes signed are the bytes parsed and
 * nothing about a frame can be changed without breaking its signature. Every length is
 * checked against the bytes left before it is used, and the whole size against
 * STELE_FRAME_MAX_BYTES before anything else.
 */
#include "stele/frame.h"

#include <errno.h>
#include <math.h>
#include <sodium.h>
#include <string.h>

#include "common/bytes.h"

#define FRAME_MAGIC0 'S'
#define FRAME_MAGIC1 'F'
#define FRAME_HEADER_FIXED 5 /* magic, version, algorithm, device id length */
#define FRAME_CANONICAL_NAN UINT64_C(0x7ff8000000000000)

static bool device_id_char(uint8_t c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
}

static bool metric_valid(const char *s, size_t n)
{
    if (n == 0 || n > STELE_FRAME_MAX_METRIC)
        return false;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = (uint8_t)s[i];
        bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
        if (!alpha && !(i > 0 && c >= '0' && c <= '9'))
            return false;
    }
    return true;
}

static bool label_name_valid(const char *s, size_t n)
{
    if (n == 0 || n > STELE_FRAME_MAX_LABEL_NAME || (n >= 2 && s[0] == '_' && s[1] == '_'))
        return false;
    /* Identity labels come from the verified identity, never from the payload. */
    if ((n == 6 && memcmp(s, "device", 6) == 0) || (n == 6 && memcmp(s, "tenant", 6) == 0))
        return false;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = (uint8_t)s[i];
        bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
        if (!alpha && !(i > 0 && c >= '0' && c <= '9'))
            return false;
    }
    return true;
}

static bool label_value_valid(const char *s, size_t n)
{
    if (n == 0 || n > STELE_FRAME_MAX_LABEL_VALUE)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((uint8_t)s[i] < 0x20 || (uint8_t)s[i] > 0x7e)
            return false;
    return true;
}

static int bytes_cmp(const char *a, size_t an, const char *b, size_t bn)
{
    int c = memcmp(a, b, an < bn ? an : bn);
    return c ? c : (an < bn ? -1 : an > bn);
}

static uint64_t double_bits(double v)
{
    uint64_t u;
    memcpy(&u, &v, sizeof(u));
    return u;
}

/* ---- parsing ---------------------------------------------------------------------- */

#define BAD(msg)                                                                                   \
    do {                                                                                           \
        *why = msg;                                                                                \
        return -EBADMSG;                                                                           \
    } while (0)

/* Parses one point at *p (bounded by end); advances *p. */
static int parse_point(const uint8_t **pp, const uint8_t *end, stele_frame_point *out,
                       const char **why)
{
    const uint8_t *p = *pp;
    if (end - p < 1)
        BAD("truncated point");
    size_t m = *p++;
    if ((size_t)(end - p) < m)
        BAD("truncated metric name");
    if (!metric_valid((const char *)p, m))
        BAD("invalid metric name");
    out->metric = (const char *)p;
    out->metric_len = m;
    p += m;
    if (end - p < 1)
        BAD("truncated label count");
    size_t k = *p++;
    if (k > STELE_FRAME_MAX_LABELS)
        BAD("too many labels");
    out->nlabels = k;
    for (size_t i = 0; i < k; i++) {
        stele_frame_label *l = &out->labels[i];
        if (end - p < 1)
            BAD("truncated label");
        l->name_len = *p++;
        if ((size_t)(end - p) < l->name_len + 1)
            BAD("truncated label name");
        l->name = (const char *)p;
        p += l->name_len;
        l->value_len = *p++;
        if ((size_t)(end - p) < l->value_len)
            BAD("truncated label value");
        l->value = (const char *)p;
        p += l->value_len;
        if (!label_name_valid(l->name, l->name_len))
            BAD("invalid or reserved label name");
        if (!label_value_valid(l->value, l->value_len))
            BAD("invalid label value");
        if (i && bytes_cmp(out->labels[i - 1].name, out->labels[i - 1].name_len, l->name,
                           l->name_len) >= 0)
            BAD("labels not in ascending order or repeated");
    }
    if (end - p < 16)
        BAD("truncated timestamp or value");
    out->ts = (int64_t)get_le64(p);
    uint64_t bits = get_le64(p + 8);
    memcpy(&out->value, &bits, sizeof(bits));
    if (isnan(out->value) && bits != FRAME_CANONICAL_NAN)
        BAD("non-canonical NaN");
    *pp = p + 16;
    return 0;
}

int stele_frame_parse(const uint8_t *buf, size_t len, stele_frame *out, const char **why)
{
    static const char *unused;
    if (!why)
        why = &unused;
    if (len > STELE_FRAME_MAX_BYTES) {
        *why = "frame larger than the limit";
        return -EMSGSIZE;
    }
    const uint8_t *p = buf, *end = buf + len;
    if (len < FRAME_HEADER_FIXED + STELE_FRAME_SIGNATURE_BYTES)
        BAD("frame too short");
    if (p[0] != FRAME_MAGIC0 || p[1] != FRAME_MAGIC1)
        BAD("not a frame (bad magic)");
    memset(out, 0, sizeof(*out));
    out->version = p[2];
    out->alg = p[3];
    if (out->version != STELE_FRAME_VERSION)
        BAD("unsupported frame version");
    if (out->alg != STELE_FRAME_ALG_ED25519)
        BAD("unsupported signature algorithm");
    size_t d = p[4];
    p += FRAME_HEADER_FIXED;
    const uint8_t *body_end = end - STELE_FRAME_SIGNATURE_BYTES;
    if (d == 0 || d > STELE_FRAME_MAX_DEVICE_ID || (size_t)(body_end - p) < d + 14)
        BAD("invalid device id length or truncated header");
    for (size_t i = 0; i < d; i++)
        if (!device_id_char(p[i]))
            BAD("invalid device id");
    out->device_id = (const char *)p;
    out->device_id_len = d;
    p += d;
    out->key_id = get_le32(p);
    out->counter = get_le64(p + 4);
    out->npoints = get_le16(p + 12);
    p += 14;
    if (out->npoints == 0 || out->npoints > STELE_FRAME_MAX_POINTS)
        BAD("point count out of range");
    out->points = p;
    stele_frame_point pt;
    for (uint16_t i = 0; i < out->npoints; i++) {
        int rc = parse_point(&p, body_end, &pt, why);
        if (rc)
            return rc;
    }
    if (p != body_end)
        BAD("bytes between the points and the signature");
    out->points_len = (size_t)(p - out->points);
    out->signed_bytes = buf;
    out->signed_len = (size_t)(body_end - buf);
    out->signature = body_end;
    return 0;
}

int stele_frame_span(const uint8_t *buf, size_t len, size_t *frame_len)
{
    /* Past the limit nothing more is looked at: an oversized frame is refused whole. */
    size_t avail = len < STELE_FRAME_MAX_BYTES ? len : STELE_FRAME_MAX_BYTES;
    size_t at = FRAME_HEADER_FIXED;
    if (avail < at || buf[0] != FRAME_MAGIC0 || buf[1] != FRAME_MAGIC1 ||
        buf[2] != STELE_FRAME_VERSION)
        return -EBADMSG;
    at += (size_t)buf[4] + 14; /* device id, key id, counter, point count */
    if (at > avail)
        return len > avail ? -EMSGSIZE : -EBADMSG;
    uint16_t npoints = get_le16(buf + at - 2);
    if (npoints == 0 || npoints > STELE_FRAME_MAX_POINTS)
        return -EBADMSG;
    for (uint16_t i = 0; i < npoints; i++) {
        /* Each step reads one length byte at `at` (checked) and moves past what it
         * says; `at` never exceeds avail + 256 + 16, so nothing overflows. */
        if (at >= avail)
            goto short_frame;
        at += 1 + (size_t)buf[at]; /* metric */
        if (at >= avail)
            goto short_frame;
        size_t k = buf[at++];
        if (k > STELE_FRAME_MAX_LABELS)
            return -EBADMSG;
        for (size_t j = 0; j < 2 * k; j++) { /* names and values */
            if (at >= avail)
                goto short_frame;
            at += 1 + (size_t)buf[at];
        }
        at += 16; /* timestamp, value */
    }
    at += STELE_FRAME_SIGNATURE_BYTES;
    if (at > avail)
        goto short_frame;
    *frame_len = at;
    return 0;
short_frame:
    return len > avail ? -EMSGSIZE : -EBADMSG;
}

bool stele_frame_next_point(const stele_frame *f, size_t *cursor, stele_frame_point *p)
{
    if (*cursor >= f->points_len)
        return false;
    const uint8_t *at = f->points + *cursor;
    const char *why;
    if (parse_point(&at, f->points + f->points_len, p, &why) != 0)
        return false; /* cannot happen on a parsed frame */
    *cursor = (size_t)(at - f->points);
    return true;
}

bool stele_frame_next_raw(const stele_frame *f, size_t *cursor, stele_frame_raw_point *p)
{
    if (*cursor >= f->points_len)
        return false;
    /* Every length was checked by the parse: this walk only steps over them. */
    const uint8_t *start = f->points + *cursor, *at = start;
    at += 1 + (size_t)at[0]; /* metric */
    size_t k = *at++;
    for (size_t i = 0; i < 2 * k; i++) /* label names and values */
        at += 1 + (size_t)at[0];
    p->shape = start;
    p->shape_len = (size_t)(at - start);
    p->ts = (int64_t)get_le64(at);
    p->value = get_f64(at + 8);
    *cursor = (size_t)(at + 16 - f->points);
    return true;
}

/* The message signed (pure Ed25519, RFC 8032): the domain with its terminating zero,
 * then the frame up to the signature. */
#define FRAME_DOMAIN_BYTES sizeof(STELE_FRAME_DOMAIN)

int stele_frame_verify(const stele_frame *f, const uint8_t public_key[32], uint8_t *scratch,
                       size_t scratch_cap)
{
    if (f->alg != STELE_FRAME_ALG_ED25519)
        return -ENOTSUP;
    if (scratch_cap < FRAME_DOMAIN_BYTES + f->signed_len)
        return -ENOSPC;
    memcpy(scratch, STELE_FRAME_DOMAIN, FRAME_DOMAIN_BYTES);
    memcpy(scratch + FRAME_DOMAIN_BYTES, f->signed_bytes, f->signed_len);
    return crypto_sign_verify_detached(f->signature, scratch, FRAME_DOMAIN_BYTES + f->signed_len,
                                       public_key) == 0
               ? 0
               : -EBADMSG;
}

/* ---- building --------------------------------------------------------------------- */

int stele_frame_begin(stele_frame_builder *b, uint8_t *buf, size_t cap, const char *device_id,
                      uint32_t key_id, uint64_t counter)
{
    size_t d = device_id ? strlen(device_id) : 0;
    if (d == 0 || d > STELE_FRAME_MAX_DEVICE_ID || cap < 128)
        return -EINVAL;
    for (size_t i = 0; i < d; i++)
        if (!device_id_char((uint8_t)device_id[i]))
            return -EINVAL;
    /* The frame is built after room for the signing domain, so sealing signs one
     * contiguous message without a copy elsewhere; seal moves it to the front. */
    if (cap > STELE_FRAME_MAX_BYTES + FRAME_DOMAIN_BYTES)
        cap = STELE_FRAME_MAX_BYTES + FRAME_DOMAIN_BYTES;
    if (cap < FRAME_DOMAIN_BYTES + FRAME_HEADER_FIXED + d + 14 + STELE_FRAME_SIGNATURE_BYTES)
        return -ENOSPC;
    *b = (stele_frame_builder){.buf = buf + FRAME_DOMAIN_BYTES, .cap = cap - FRAME_DOMAIN_BYTES};
    buf = b->buf;
    buf[0] = FRAME_MAGIC0;
    buf[1] = FRAME_MAGIC1;
    buf[2] = STELE_FRAME_VERSION;
    buf[3] = STELE_FRAME_ALG_ED25519;
    buf[4] = (uint8_t)d;
    memcpy(buf + 5, device_id, d);
    size_t at = FRAME_HEADER_FIXED + d;
    put_le32(buf + at, key_id);
    put_le64(buf + at + 4, counter);
    b->count_at = at + 12;
    put_le16(buf + b->count_at, 0);
    b->len = at + 14;
    return 0;
}

int stele_frame_add(stele_frame_builder *b, const stele_frame_point *p)
{
    if (!metric_valid(p->metric, p->metric_len) || p->nlabels > STELE_FRAME_MAX_LABELS)
        return -EINVAL;
    if (isnan(p->value) && double_bits(p->value) != FRAME_CANONICAL_NAN)
        return -EINVAL; /* the device must say which NaN; only the canonical one exists */
    /* Sort the labels by name (insertion sort: at most 16). */
    const stele_frame_label *order[STELE_FRAME_MAX_LABELS];
    size_t need = 1 + p->metric_len + 1 + 16;
    for (size_t i = 0; i < p->nlabels; i++) {
        const stele_frame_label *l = &p->labels[i];
        if (!label_name_valid(l->name, l->name_len) || !label_value_valid(l->value, l->value_len))
            return -EINVAL;
        size_t j = i;
        while (j > 0 &&
               bytes_cmp(order[j - 1]->name, order[j - 1]->name_len, l->name, l->name_len) > 0) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = l;
        need += 2 + l->name_len + l->value_len;
    }
    for (size_t i = 1; i < p->nlabels; i++)
        if (bytes_cmp(order[i - 1]->name, order[i - 1]->name_len, order[i]->name,
                      order[i]->name_len) == 0)
            return -EINVAL;
    if (b->npoints == STELE_FRAME_MAX_POINTS ||
        b->len + need + STELE_FRAME_SIGNATURE_BYTES > b->cap)
        return -ENOSPC;
    uint8_t *w = b->buf + b->len;
    *w++ = (uint8_t)p->metric_len;
    memcpy(w, p->metric, p->metric_len);
    w += p->metric_len;
    *w++ = (uint8_t)p->nlabels;
    for (size_t i = 0; i < p->nlabels; i++) {
        *w++ = (uint8_t)order[i]->name_len;
        memcpy(w, order[i]->name, order[i]->name_len);
        w += order[i]->name_len;
        *w++ = (uint8_t)order[i]->value_len;
        memcpy(w, order[i]->value, order[i]->value_len);
        w += order[i]->value_len;
    }
    put_le64(w, (uint64_t)p->ts);
    put_le64(w + 8, double_bits(p->value));
    b->len += need;
    b->npoints++;
    put_le16(b->buf + b->count_at, b->npoints);
    return 0;
}

int stele_frame_seal(stele_frame_builder *b, const uint8_t secret_key[64], size_t *len)
{
    if (b->npoints == 0)
        return -EINVAL;
    if (b->len + STELE_FRAME_SIGNATURE_BYTES > b->cap)
        return -ENOSPC;
    uint8_t *start = b->buf - FRAME_DOMAIN_BYTES;
    memcpy(start, STELE_FRAME_DOMAIN, FRAME_DOMAIN_BYTES);
    crypto_sign_detached(b->buf + b->len, NULL, start, FRAME_DOMAIN_BYTES + b->len, secret_key);
    b->len += STELE_FRAME_SIGNATURE_BYTES;
    memmove(start, b->buf, b->len);
    b->buf = start;
    b->cap += FRAME_DOMAIN_BYTES;
    *len = b->len;
    return 0;
}
