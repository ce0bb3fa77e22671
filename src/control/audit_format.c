/*
 * audit_format.c — the audit trail's on-disk format (version 2) and the streaming reader
 * that open, verify and list share. Everything is little-endian; docs/format/audit.md
 * says the same for operators.
 *
 * DIRECTORY (DATA/audit/)
 *   audit-000001.log, audit-000002.log, …  segments, numbered from 1 without gaps
 *   audit.head                             the signed head, replaced atomically
 *   audit.key, audit.pub                   the audit key pair (audit_key.c)
 *   *.tmp                                  leftovers of an atomic replacement; ignored
 *
 * SEGMENT HEADER (80 bytes, written whole with the file, which is created atomically)
 *   0   4  magic "STAS"
 *   4   4  version (2)
 *   8   8  segment number (as in the file name)
 *   16  8  sequence of its first record
 *   24  32 hash of the record before that one (zeros in segment 1)
 *   56  8  time of the earliest record of the previous segment (0 in segment 1)
 *   64  8  time of the latest record of the previous segment (0 in segment 1)
 *   72  8  checksum: the first 8 bytes of BLAKE2b-256 of bytes [0, 72)
 *   The previous segment's time range lets a listing skip whole sealed segments by
 *   reading headers only; verify checks it against the records.
 *
 * RECORD (back to back after the header)
 *   0   4  magic "STAR"
 *   4   2  kind: 1 event, 2 checkpoint
 *   6   2  body length b (event ≤ 5 × 2 + 4 × 256 + 2048; checkpoint exactly 64)
 *   8   8  sequence (1, 2, 3, … over the whole trail)
 *   16  8  time, ns since the epoch
 *   24  b  body
 *   ..  32 hash = BLAKE2b-256(previous record's hash ‖ bytes [0, 24 + b)); the previous
 *          record of a segment's first record is the last record of the segment before
 *          (its hash is in the header); the first record of the trail chains to zeros
 *   Event body: actor, action, subject, outcome, details — each a u16 length + bytes,
 *   no control characters, filling the body exactly.
 *   Checkpoint body: Ed25519 signature by the audit key of
 *   "stele/audit-checkpoint/v2", a zero byte, the sequence (8) and hash (32) of the
 *   record before the checkpoint. The checkpoint is itself chained, so one signature
 *   vouches for every record before it.
 *
 * HEAD (audit.head, 112 bytes)
 *   0   4  magic "STAH"
 *   4   4  version (2)
 *   8   8  sequence of the last acknowledged record (0 for an empty trail)
 *   16  32 its hash
 *   48  64 Ed25519 signature of "stele/audit-head/v2", a zero byte, then bytes [0, 48)
 *   Exported as text: "stele-audit-head v2 seq=N hash=<64 hex> sig=<128 hex>".
 *
 * INVARIANTS (what the writer in audit.c guarantees and readers rely on)
 *   - Every record up to the head's sequence was fsync'd before the head named it, and
 *     nothing is ever written over it: readers bounded by the head never see a partial
 *     record.
 *   - At most one group commit (AUDIT_BATCH_BUFFER bytes) lies beyond the head, all of
 *     it in the last segment: a batch never spans segments, and a segment is rolled
 *     only after the previous batch's head was written.
 *   - Every sealed segment holds at least one record.
 */
#include "control/audit_internal.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/bytes.h"

_Static_assert(AUDIT_SEGMENT_HEADER == 4 + 4 + 8 + 8 + AUDIT_HASH + 8 + 8 + 8,
               "segment header layout");
_Static_assert(AUDIT_RECORD_HEADER == 4 + 2 + 2 + 8 + 8, "record header layout");
_Static_assert(AUDIT_HEAD_SIGNED == 4 + 4 + 8 + AUDIT_HASH, "head layout");
_Static_assert(AUDIT_MAX_BODY <= UINT16_MAX, "body length is a u16");
_Static_assert(AUDIT_MAX_RECORD <= AUDIT_READ_CHUNK, "a chunk holds the largest record");

void audit__chain_hash(const uint8_t prev[AUDIT_HASH], const uint8_t *rec, size_t len,
                       uint8_t out[AUDIT_HASH])
{
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, AUDIT_HASH);
    crypto_generichash_update(&st, prev, AUDIT_HASH);
    crypto_generichash_update(&st, rec, len);
    crypto_generichash_final(&st, out, AUDIT_HASH);
}

/* ---- segment headers and names -------------------------------------------------- */

static void header_checksum(const uint8_t in[72], uint8_t out[8])
{
    uint8_t full[AUDIT_HASH];
    crypto_generichash(full, sizeof(full), in, 72, NULL, 0);
    memcpy(out, full, 8);
}

void audit__segment_header_encode(const audit_segment_header *h, uint8_t out[AUDIT_SEGMENT_HEADER])
{
    memcpy(out, AUDIT_SEGMENT_MAGIC, 4);
    put_le32(out + 4, AUDIT_VERSION);
    put_le64(out + 8, h->no);
    put_le64(out + 16, h->first_seq);
    memcpy(out + 24, h->prev_hash, AUDIT_HASH);
    put_le64(out + 56, (uint64_t)h->prev_min_ns);
    put_le64(out + 64, (uint64_t)h->prev_max_ns);
    header_checksum(out, out + 72);
}

const char *audit__segment_header_decode(const uint8_t in[AUDIT_SEGMENT_HEADER],
                                         audit_segment_header *h)
{
    uint8_t sum[8];
    if (memcmp(in, AUDIT_SEGMENT_MAGIC, 4) != 0)
        return "segment header damaged (bad magic)";
    if (get_le32(in + 4) != AUDIT_VERSION)
        return "segment header has an unknown version (not a version 2 trail)";
    header_checksum(in, sum);
    if (memcmp(sum, in + 72, 8) != 0)
        return "segment header damaged (checksum mismatch)";
    h->no = get_le64(in + 8);
    h->first_seq = get_le64(in + 16);
    memcpy(h->prev_hash, in + 24, AUDIT_HASH);
    h->prev_min_ns = (int64_t)get_le64(in + 56);
    h->prev_max_ns = (int64_t)get_le64(in + 64);
    if (h->no == 0 || h->first_seq == 0)
        return "segment header damaged (zero number or sequence)";
    return NULL;
}

void audit__segment_name(uint64_t no, char *buf, size_t cap)
{
    snprintf(buf, cap, AUDIT_SEGMENT_PREFIX "%06llu" AUDIT_SEGMENT_SUFFIX, (unsigned long long)no);
}

/* The number of a segment file name, or 0 when the name is not one. */
static uint64_t segment_number(const char *name)
{
    size_t plen = strlen(AUDIT_SEGMENT_PREFIX), slen = strlen(AUDIT_SEGMENT_SUFFIX);
    size_t len = strlen(name);
    if (len <= plen + slen || strncmp(name, AUDIT_SEGMENT_PREFIX, plen) != 0 ||
        strcmp(name + len - slen, AUDIT_SEGMENT_SUFFIX) != 0)
        return 0;
    size_t digits = len - plen - slen;
    if (digits > 19)
        return 0;
    uint64_t no = 0;
    for (size_t i = 0; i < digits; i++) {
        char c = name[plen + i];
        if (c < '0' || c > '9')
            return 0;
        no = no * 10 + (uint64_t)(c - '0');
    }
    return no;
}

typedef struct {
    uint64_t *nos;
    size_t n, cap;
} segment_list;

static int collect_segment(void *ctx, const char *name)
{
    segment_list *l = ctx;
    uint64_t no = segment_number(name);
    if (no == 0)
        return 0;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        uint64_t *grown = realloc(l->nos, cap * sizeof(*grown));
        if (!grown)
            return -ENOMEM;
        l->nos = grown;
        l->cap = cap;
    }
    l->nos[l->n++] = no;
    return 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int audit__segments_list(stele_io *io, const char *dir, uint64_t **nos, size_t *n)
{
    segment_list l = {0};
    int rc = stele_io_list(io, dir, collect_segment, &l);
    if (rc) {
        free(l.nos);
        *nos = NULL;
        *n = 0;
        return rc;
    }
    if (l.n)
        qsort(l.nos, l.n, sizeof(*l.nos), cmp_u64);
    *nos = l.nos; /* now belongs to the caller */
    *n = l.n;
    return 0;
}

/* ---- checkpoints and the head ---------------------------------------------------- */

void audit__checkpoint_message(uint64_t seq, const uint8_t hash[AUDIT_HASH],
                               uint8_t msg[AUDIT_CHECKPOINT_MSG])
{
    memcpy(msg, AUDIT_CHECKPOINT_DOMAIN, sizeof(AUDIT_CHECKPOINT_DOMAIN));
    put_le64(msg + sizeof(AUDIT_CHECKPOINT_DOMAIN), seq);
    memcpy(msg + sizeof(AUDIT_CHECKPOINT_DOMAIN) + 8, hash, AUDIT_HASH);
}

#define HEAD_MSG (sizeof(AUDIT_HEAD_DOMAIN) + AUDIT_HEAD_SIGNED)

static void head_signed_bytes(uint64_t seq, const uint8_t hash[AUDIT_HASH],
                              uint8_t out[AUDIT_HEAD_SIGNED])
{
    memcpy(out, AUDIT_HEAD_MAGIC, 4);
    put_le32(out + 4, AUDIT_VERSION);
    put_le64(out + 8, seq);
    memcpy(out + 16, hash, AUDIT_HASH);
}

static void head_message(const uint8_t head[AUDIT_HEAD_SIGNED], uint8_t msg[HEAD_MSG])
{
    memcpy(msg, AUDIT_HEAD_DOMAIN, sizeof(AUDIT_HEAD_DOMAIN));
    memcpy(msg + sizeof(AUDIT_HEAD_DOMAIN), head, AUDIT_HEAD_SIGNED);
}

void audit__head_encode(uint64_t seq, const uint8_t hash[AUDIT_HASH], const uint8_t sk[64],
                        uint8_t out[AUDIT_HEAD_BYTES])
{
    uint8_t msg[HEAD_MSG];
    head_signed_bytes(seq, hash, out);
    head_message(out, msg);
    crypto_sign_detached(out + AUDIT_HEAD_SIGNED, NULL, msg, sizeof(msg), sk);
}

static bool head_signature_ok(const stele_audit_head *h, const uint8_t pk[32])
{
    uint8_t bytes[AUDIT_HEAD_SIGNED], msg[HEAD_MSG];
    head_signed_bytes(h->seq, h->hash, bytes);
    head_message(bytes, msg);
    return crypto_sign_verify_detached(h->signature, msg, sizeof(msg), pk) == 0;
}

int audit__head_load(stele_io *io, const char *dir, const uint8_t *pk, stele_audit_head *h,
                     const char **why)
{
    char path[AUDIT_PATH_MAX + 32];
    uint8_t *data = NULL;
    size_t size = 0;
    snprintf(path, sizeof(path), "%s/" AUDIT_HEAD_NAME, dir);
    int rc = stele_io_read_file(io, path, AUDIT_HEAD_BYTES, &data, &size);
    if (rc == -EFBIG) {
        *why = "head damaged (wrong size)";
        return -EBADMSG;
    }
    if (rc)
        return rc;
    rc = -EBADMSG;
    if (size != AUDIT_HEAD_BYTES || memcmp(data, AUDIT_HEAD_MAGIC, 4) != 0) {
        *why = "head damaged";
    } else if (get_le32(data + 4) != AUDIT_VERSION) {
        *why = "head has an unknown version (not a version 2 trail)";
    } else {
        h->seq = get_le64(data + 8);
        memcpy(h->hash, data + 16, AUDIT_HASH);
        memcpy(h->signature, data + AUDIT_HEAD_SIGNED, AUDIT_SIG);
        if (pk && !head_signature_ok(h, pk))
            *why = "head signature invalid (not signed by this audit key)";
        else
            rc = 0;
    }
    free(data);
    return rc;
}

int stele_audit_head_read(stele_io *io, const char *dir, const uint8_t public_key[32],
                          stele_audit_head *out)
{
    const char *why = NULL;
    return audit__head_load(io, dir, public_key, out, &why);
}

static void hex_encode(const uint8_t *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decodes exactly 2n hex digits at p into out; the number of characters used or 0. */
static size_t hex_decode(const char *p, uint8_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int hi = hex_value(p[2 * i]), lo = hi < 0 ? -1 : hex_value(p[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return 0;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 2 * n;
}

int stele_audit_head_format(const stele_audit_head *h, char *buf, size_t cap)
{
    char hash[2 * AUDIT_HASH + 1], sig[2 * AUDIT_SIG + 1];
    hex_encode(h->hash, AUDIT_HASH, hash);
    hex_encode(h->signature, AUDIT_SIG, sig);
    int n = snprintf(buf, cap, "stele-audit-head v2 seq=%llu hash=%s sig=%s\n",
                     (unsigned long long)h->seq, hash, sig);
    return n < 0 || (size_t)n >= cap ? -ENOSPC : n;
}

int stele_audit_head_parse(const char *text, const uint8_t public_key[32], stele_audit_head *out)
{
    static const char prefix[] = "stele-audit-head v2 seq=";
    stele_audit_head h;
    const char *p = text;
    while (*p == ' ' || *p == '\t')
        p++;
    if (strncmp(p, prefix, strlen(prefix)) != 0)
        return -EINVAL;
    p += strlen(prefix);
    if (*p < '0' || *p > '9')
        return -EINVAL;
    char *end;
    errno = 0;
    unsigned long long seq = strtoull(p, &end, 10);
    if (errno || strncmp(end, " hash=", 6) != 0)
        return -EINVAL;
    p = end + 6;
    size_t used = hex_decode(p, h.hash, AUDIT_HASH);
    if (!used || strncmp(p + used, " sig=", 5) != 0)
        return -EINVAL;
    p += used + 5;
    used = hex_decode(p, h.signature, AUDIT_SIG);
    if (!used)
        return -EINVAL;
    for (p += used; *p; p++)
        if (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\n')
            return -EINVAL;
    h.seq = seq;
    if (!head_signature_ok(&h, public_key))
        return -EBADMSG;
    *out = h;
    return 0;
}

/* ---- the reader ------------------------------------------------------------------ */

int audit__reader_open(audit_reader *r, stele_io *io, const char *dir, uint64_t no)
{
    char path[AUDIT_PATH_MAX + 64], name[48];
    uint8_t hdr[AUDIT_SEGMENT_HEADER];
    size_t got = 0;
    memset(r, 0, sizeof(*r));
    r->no = no;
    audit__segment_name(no, name, sizeof(name));
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    r->buf = malloc(AUDIT_READ_CHUNK);
    if (!r->buf)
        return -ENOMEM;
    int rc = stele_io_open(io, path, STELE_IO_READ, &r->f);
    if (rc)
        return rc;
    rc = stele_io_pread(r->f, hdr, sizeof(hdr), 0, &got);
    if (rc)
        return rc;
    if (got < sizeof(hdr)) {
        r->why = "segment header truncated";
        return -EBADMSG;
    }
    r->why = audit__segment_header_decode(hdr, &r->hdr);
    if (r->why)
        return -EBADMSG;
    r->off = AUDIT_SEGMENT_HEADER;
    r->seq = r->hdr.first_seq - 1;
    memcpy(r->hash, r->hdr.prev_hash, AUDIT_HASH);
    return 0;
}

void audit__reader_close(audit_reader *r)
{
    stele_io_close(r->f);
    r->f = NULL;
    free(r->buf);
    r->buf = NULL;
}

void audit__reader_seek(audit_reader *r, uint64_t off, uint64_t seq)
{
    r->off = off;
    r->seq = seq - 1;
    r->skip_chain = true;
}

/* Makes bytes [off, off + n) available; returns them, or NULL with *avail = how many
 * the file holds from off (fewer than n: the file ends). */
static const uint8_t *reader_fetch(audit_reader *r, uint64_t off, size_t n, size_t *avail)
{
    if (off >= r->buf_off && off + n <= r->buf_off + r->buf_len)
        return r->buf + (off - r->buf_off);
    uint64_t start = off;
    if (r->backward) /* the records wanted next lie before this one */
        start = off + AUDIT_MAX_RECORD > AUDIT_READ_CHUNK
                    ? off + AUDIT_MAX_RECORD - AUDIT_READ_CHUNK
                    : 0;
    size_t got = 0;
    int rc = stele_io_pread(r->f, r->buf, AUDIT_READ_CHUNK, start, &got);
    r->buf_off = start;
    r->buf_len = rc ? 0 : got;
    if (rc) {
        r->err = rc;
        *avail = 0;
        return NULL;
    }
    if (off + n > start + got) {
        *avail = start + got > off ? (size_t)(start + got - off) : 0;
        return NULL;
    }
    return r->buf + (off - start);
}

static bool field_ok(const uint8_t *p, size_t n, size_t max)
{
    if (n > max)
        return false;
    for (size_t i = 0; i < n; i++)
        if (p[i] < 0x20 || p[i] == 0x7f)
            return false;
    return true;
}

audit_read_status audit__reader_next(audit_reader *r)
{
    size_t avail = 0;
    const uint8_t *p = reader_fetch(r, r->off, AUDIT_RECORD_HEADER, &avail);
    if (!p) {
        if (r->err)
            return AUDIT_READ_IOERR;
        r->end = r->off + avail;
        return avail == 0 ? AUDIT_READ_END : AUDIT_READ_TORN;
    }
    unsigned kind = get_le16(p + 4);
    size_t blen = get_le16(p + 6);
    if (memcmp(p, AUDIT_RECORD_MAGIC, 4) != 0 ||
        (kind != AUDIT_KIND_EVENT && kind != AUDIT_KIND_CHECKPOINT) || blen > AUDIT_MAX_BODY ||
        (kind == AUDIT_KIND_CHECKPOINT && blen != AUDIT_SIG)) {
        r->why = "record header damaged";
        return AUDIT_READ_BAD;
    }
    size_t total = AUDIT_RECORD_HEADER + blen + AUDIT_HASH;
    p = reader_fetch(r, r->off, total, &avail);
    if (!p) {
        if (r->err)
            return AUDIT_READ_IOERR;
        r->end = r->off + avail;
        return AUDIT_READ_TORN;
    }
    audit_record *rec = &r->rec;
    if (!r->skip_chain) {
        audit__chain_hash(r->hash, p, AUDIT_RECORD_HEADER + blen, rec->hash);
        if (sodium_memcmp(rec->hash, p + AUDIT_RECORD_HEADER + blen, AUDIT_HASH) != 0) {
            r->why = "hash chain broken (a record edited, deleted or reordered)";
            return AUDIT_READ_BAD;
        }
    } else {
        memcpy(rec->hash, p + AUDIT_RECORD_HEADER + blen, AUDIT_HASH);
    }
    uint64_t seq = get_le64(p + 8);
    if (seq != r->seq + 1) {
        r->why = "sequence not consecutive (records deleted or reordered)";
        return AUDIT_READ_BAD;
    }
    const uint8_t *b = p + AUDIT_RECORD_HEADER, *end = b + blen;
    if (kind == AUDIT_KIND_CHECKPOINT) {
        memcpy(rec->sig, b, AUDIT_SIG);
        for (int k = 0; k < AUDIT_FIELDS; k++)
            rec->field[k][0] = '\0';
    } else {
        for (int k = 0; k < AUDIT_FIELDS; k++) {
            size_t max = k == 4 ? STELE_AUDIT_MAX_DETAILS : STELE_AUDIT_MAX_FIELD;
            if (end - b < 2 || (size_t)(end - b - 2) < get_le16(b) ||
                !field_ok(b + 2, get_le16(b), max)) {
                r->why = "record fields malformed";
                return AUDIT_READ_BAD;
            }
            size_t n = get_le16(b);
            memcpy(rec->field[k], b + 2, n);
            rec->field[k][n] = '\0';
            b += 2 + n;
        }
        if (b != end) {
            r->why = "record fields malformed";
            return AUDIT_READ_BAD;
        }
    }
    rec->seq = seq;
    rec->time_ns = (int64_t)get_le64(p + 16);
    rec->kind = kind;
    rec->offset = r->off;
    rec->len = (uint32_t)total;
    memcpy(rec->prev_hash, r->hash, AUDIT_HASH);
    r->seq = seq;
    memcpy(r->hash, rec->hash, AUDIT_HASH);
    r->off += total;
    return AUDIT_READ_RECORD;
}

void audit__record_event(const audit_record *rec, stele_audit_event *e)
{
    e->seq = rec->seq;
    e->time_ns = rec->time_ns;
    e->checkpoint = rec->kind == AUDIT_KIND_CHECKPOINT;
    if (e->checkpoint) {
        e->actor = AUDIT_SELF_ACTOR;
        e->action = "audit.checkpoint";
        e->subject = "audit";
        e->outcome = "ok";
        e->details = "signs the chain up to the previous record";
    } else {
        e->actor = rec->field[0];
        e->action = rec->field[1];
        e->subject = rec->field[2];
        e->outcome = rec->field[3];
        e->details = rec->field[4];
    }
}
