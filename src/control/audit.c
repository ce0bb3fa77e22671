/*
 * audit.c — the hash-chained audit trail with a signed head (see stele/audit.h).
 *
 * RECORD (DIR/audit.log, back to back; little-endian)
 *   0   4  magic "STAR"
 *   4   4  body length b (≤ 5 × 2 + 4 × 256 + 2048)
 *   8   8  sequence (1, 2, 3, …)
 *   16  8  time, ns since the epoch
 *   24  b  body: actor, action, subject, outcome, details — each a u16 length + bytes
 *   ..  32 hash = BLAKE2b-256(previous record's hash ‖ bytes [0, 24 + b)); the first
 *          record's previous hash is 32 zero bytes
 *
 * HEAD (DIR/audit.head, replaced atomically after every append)
 *   0   4  magic "STAH"
 *   4   4  version (1)
 *   8   8  sequence of the last record
 *   16  32 its hash
 *   48  64 Ed25519 signature of "stele/audit-head/v1", a zero byte, then bytes [0, 48)
 *
 * Recovery: a torn record at the end of the log (a crash mid-append: never
 * acknowledged) is cut; a single whole record beyond the head (a crash between the
 * record's fsync and the head's) is kept and the head re-signed — that window is one
 * record wide because appends are serialized. Anything else that does not match refuses
 * to open, naming the problem.
 */
#include "stele/audit.h"

#include <errno.h>
#include <pthread.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/bytes.h"
#include "common/clock.h"

#define AUDIT_MAGIC "STAR"
#define AUDIT_HEAD_MAGIC "STAH"
#define AUDIT_HEAD_VERSION 1u
#define AUDIT_HEAD_DOMAIN "stele/audit-head/v1"
#define AUDIT_HEADER 24
#define AUDIT_HASH 32
#define AUDIT_FIELDS 5
#define AUDIT_MAX_BODY (AUDIT_FIELDS * 2 + 4 * STELE_AUDIT_MAX_FIELD + STELE_AUDIT_MAX_DETAILS)
#define AUDIT_HEAD_BYTES (48 + 64)
#define AUDIT_PATH_MAX 4096
/* The log is read whole when opened and verified; segmenting it is the next step. */
#define AUDIT_MAX_LOG (1u << 30)

struct stele_audit {
    stele_io *io;
    char log_path[AUDIT_PATH_MAX], head_path[AUDIT_PATH_MAX];
    char dir[AUDIT_PATH_MAX];
    uint8_t sk[64];
    pthread_mutex_t mu;
    stele_file *log;
    uint64_t size; /* bytes of valid records */
    uint64_t seq;
    uint8_t hash[AUDIT_HASH];
    int failed; /* sticky: after a failed write or fsync the file's state is unknown */
};

static void chain_hash(const uint8_t prev[AUDIT_HASH], const uint8_t *rec, size_t len,
                       uint8_t out[AUDIT_HASH])
{
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, AUDIT_HASH);
    crypto_generichash_update(&st, prev, AUDIT_HASH);
    crypto_generichash_update(&st, rec, len);
    crypto_generichash_final(&st, out, AUDIT_HASH);
}

static void head_message(const uint8_t head[48], uint8_t msg[sizeof(AUDIT_HEAD_DOMAIN) + 48])
{
    memcpy(msg, AUDIT_HEAD_DOMAIN, sizeof(AUDIT_HEAD_DOMAIN));
    memcpy(msg + sizeof(AUDIT_HEAD_DOMAIN), head, 48);
}

/* ---- reading (shared by open and verify) -------------------------------------------- */

typedef struct {
    uint64_t seq;             /* of the last good record */
    uint8_t hash[AUDIT_HASH]; /* its hash (zeros when none) */
    uint64_t good_end;        /* offset after it */
    uint64_t records;         /* good records */
    bool torn_tail;           /* bytes after good_end that are not a whole record */
    uint64_t seq_before_last; /* for the one-record repair */
    uint8_t hash_before_last[AUDIT_HASH];
    uint64_t end_before_last;
    const char *broken; /* a problem inside the log (not at its end) */
    uint64_t broken_at;
} log_scan;

static bool field_ok(const uint8_t *p, size_t n, size_t max)
{
    if (n > max)
        return false;
    for (size_t i = 0; i < n; i++)
        if (p[i] < 0x20 || p[i] == 0x7f)
            return false;
    return true;
}

/* Walks the log image; event() for each good record. */
static void scan_log(const uint8_t *data, uint64_t size, log_scan *s, stele_audit_event_fn event,
                     void *ctx)
{
    memset(s, 0, sizeof(*s));
    uint64_t off = 0;
    while (off < size) {
        if (size - off < AUDIT_HEADER + AUDIT_HASH) {
            s->torn_tail = true;
            return;
        }
        const uint8_t *r = data + off;
        uint32_t blen = get_le32(r + 4);
        if (memcmp(r, AUDIT_MAGIC, 4) != 0 || blen > AUDIT_MAX_BODY) {
            s->broken = "record header damaged";
            s->broken_at = off;
            return;
        }
        if (size - off < AUDIT_HEADER + (uint64_t)blen + AUDIT_HASH) {
            s->torn_tail = true;
            return;
        }
        uint8_t h[AUDIT_HASH];
        chain_hash(s->hash, r, AUDIT_HEADER + blen, h);
        if (sodium_memcmp(h, r + AUDIT_HEADER + blen, AUDIT_HASH) != 0) {
            s->broken = "hash chain broken (a record edited, deleted or reordered)";
            s->broken_at = off;
            return;
        }
        uint64_t seq = get_le64(r + 8);
        if (seq != s->seq + 1) {
            s->broken = "sequence not consecutive (records deleted or reordered)";
            s->broken_at = off;
            return;
        }
        /* Fields: five length-prefixed strings filling the body exactly. */
        const char *f[AUDIT_FIELDS];
        char buf[AUDIT_FIELDS][STELE_AUDIT_MAX_DETAILS + 1];
        const uint8_t *p = r + AUDIT_HEADER, *end = p + blen;
        for (int k = 0; k < AUDIT_FIELDS; k++) {
            size_t max = k == 4 ? STELE_AUDIT_MAX_DETAILS : STELE_AUDIT_MAX_FIELD;
            if (end - p < 2 || (size_t)(end - p - 2) < get_le16(p) ||
                !field_ok(p + 2, get_le16(p), max)) {
                s->broken = "record fields malformed";
                s->broken_at = off;
                return;
            }
            size_t n = get_le16(p);
            memcpy(buf[k], p + 2, n);
            buf[k][n] = '\0';
            f[k] = buf[k];
            p += 2 + n;
        }
        if (p != end) {
            s->broken = "record fields malformed";
            s->broken_at = off;
            return;
        }
        s->seq_before_last = s->seq;
        memcpy(s->hash_before_last, s->hash, AUDIT_HASH);
        s->end_before_last = s->good_end;
        s->seq = seq;
        memcpy(s->hash, h, AUDIT_HASH);
        off += AUDIT_HEADER + blen + AUDIT_HASH;
        s->good_end = off;
        s->records++;
        if (event) {
            stele_audit_event e = {.seq = seq,
                                   .time_ns = (int64_t)get_le64(r + 16),
                                   .actor = f[0],
                                   .action = f[1],
                                   .subject = f[2],
                                   .outcome = f[3],
                                   .details = f[4]};
            if (event(ctx, &e) != 0)
                return;
        }
    }
}

/* Reads a whole file; the log is read whole on open and verify (segments: later). */
static int read_file(stele_io *io, const char *path, size_t max, uint8_t **data, uint64_t *size)
{
    size_t n = 0;
    int rc = stele_io_read_file(io, path, max, data, &n);
    *size = n;
    return rc;
}

/* Reads and checks the head: 0 with seq/hash, -ENOENT, or -EBADMSG with *why. */
static int head_read(stele_io *io, const char *path, const uint8_t pk[32], uint64_t *seq,
                     uint8_t hash[AUDIT_HASH], const char **why)
{
    uint8_t *data;
    uint64_t size;
    int rc = read_file(io, path, AUDIT_HEAD_BYTES, &data, &size);
    if (rc == -EFBIG) {
        *why = "head damaged";
        return -EBADMSG;
    }
    if (rc)
        return rc;
    uint8_t msg[sizeof(AUDIT_HEAD_DOMAIN) + 48];
    rc = -EBADMSG;
    if (size != AUDIT_HEAD_BYTES || memcmp(data, AUDIT_HEAD_MAGIC, 4) != 0 ||
        get_le32(data + 4) != AUDIT_HEAD_VERSION) {
        *why = "head damaged";
    } else {
        head_message(data, msg);
        if (crypto_sign_verify_detached(data + 48, msg, sizeof(msg), pk) != 0) {
            *why = "head signature invalid (not signed by this audit key)";
        } else {
            *seq = get_le64(data + 8);
            memcpy(hash, data + 16, AUDIT_HASH);
            rc = 0;
        }
    }
    free(data);
    return rc;
}

/* ---- verification ------------------------------------------------------------------- */

int stele_audit_verify(stele_io *io, const char *dir, const uint8_t public_key[32],
                       stele_audit_problem_fn problem, stele_audit_event_fn event, void *ctx)
{
    char path[AUDIT_PATH_MAX + 32], msg[256];
    uint8_t *data;
    uint64_t size;
    int problems = 0;
    snprintf(path, sizeof(path), "%s/audit.log", dir);
    int rc = read_file(io, path, AUDIT_MAX_LOG, &data, &size);
    if (rc == -ENOENT) {
        data = NULL;
        size = 0;
    } else if (rc) {
        return rc;
    }
    log_scan s;
    scan_log(data, size, &s, event, ctx);
    free(data);
    if (s.broken) {
        snprintf(msg, sizeof(msg), "audit.log at byte %llu, after record %llu: %s",
                 (unsigned long long)s.broken_at, (unsigned long long)s.seq, s.broken);
        problem(ctx, msg);
        problems++;
    }
    if (s.torn_tail) {
        snprintf(msg, sizeof(msg), "audit.log: truncated record after record %llu",
                 (unsigned long long)s.seq);
        problem(ctx, msg);
        problems++;
    }
    uint64_t hseq = 0;
    uint8_t hhash[AUDIT_HASH];
    const char *why = NULL;
    snprintf(path, sizeof(path), "%s/audit.head", dir);
    rc = head_read(io, path, public_key, &hseq, hhash, &why);
    if (rc == -ENOENT) {
        if (s.records) {
            problem(ctx, "audit.head missing while the log has records");
            problems++;
        }
    } else if (rc) {
        snprintf(msg, sizeof(msg), "audit.head: %s", why ? why : "unreadable");
        problem(ctx, msg);
        problems++;
    } else if (!s.broken && (hseq != s.seq || sodium_memcmp(hhash, s.hash, AUDIT_HASH) != 0)) {
        snprintf(msg, sizeof(msg),
                 "the log ends at record %llu but the signed head names record %llu "
                 "(records cut off, appended or replaced)",
                 (unsigned long long)s.seq, (unsigned long long)hseq);
        problem(ctx, msg);
        problems++;
    }
    return problems;
}

/* ---- appending ---------------------------------------------------------------------- */

static int head_write(stele_audit *a)
{
    uint8_t head[AUDIT_HEAD_BYTES], msg[sizeof(AUDIT_HEAD_DOMAIN) + 48];
    memcpy(head, AUDIT_HEAD_MAGIC, 4);
    put_le32(head + 4, AUDIT_HEAD_VERSION);
    put_le64(head + 8, a->seq);
    memcpy(head + 16, a->hash, AUDIT_HASH);
    head_message(head, msg);
    crypto_sign_detached(head + 48, NULL, msg, sizeof(msg), a->sk);
    return stele_io_write_file_atomic(a->io, a->dir, "audit.head", head, sizeof(head));
}

int stele_audit_open(stele_io *io, const char *dir, const uint8_t secret_key[64], stele_audit **out,
                     char *err, size_t errcap)
{
    stele_audit *a = calloc(1, sizeof(*a));
    uint8_t *data = NULL, pk[32];
    uint64_t size = 0;
    const char *why = NULL;
    int rc;
    if (!a)
        return -ENOMEM;
    if (strlen(dir) > AUDIT_PATH_MAX - 32) {
        free(a);
        return -ENAMETOOLONG;
    }
    a->io = io;
    snprintf(a->dir, sizeof(a->dir), "%s", dir);
    snprintf(a->log_path, sizeof(a->log_path), "%s/audit.log", dir);
    snprintf(a->head_path, sizeof(a->head_path), "%s/audit.head", dir);
    memcpy(a->sk, secret_key, 64);
    crypto_sign_ed25519_sk_to_pk(pk, secret_key);
    pthread_mutex_init(&a->mu, NULL);
    rc = stele_io_mkdir_durable(io, dir);
    if (rc) {
        snprintf(err, errcap, "%s: %s", dir, strerror(-rc));
        goto fail;
    }
    rc = read_file(io, a->log_path, AUDIT_MAX_LOG, &data, &size);
    if (rc && rc != -ENOENT) {
        snprintf(err, errcap, "%s: %s", a->log_path, strerror(-rc));
        goto fail;
    }
    log_scan s;
    scan_log(data, size, &s, NULL, NULL);
    free(data);
    data = NULL;
    if (s.broken) {
        snprintf(err, errcap,
                 "%s: byte %llu: %s; refusing to append to a tampered trail (run "
                 "`stele audit verify`)",
                 a->log_path, (unsigned long long)s.broken_at, s.broken);
        rc = -EBADMSG;
        goto fail;
    }
    uint64_t hseq = 0;
    uint8_t hhash[AUDIT_HASH] = {0};
    rc = head_read(io, a->head_path, pk, &hseq, hhash, &why);
    if (rc && rc != -ENOENT) {
        snprintf(err, errcap, "%s: %s", a->head_path, why ? why : strerror(-rc));
        goto fail;
    }
    bool head_missing = rc == -ENOENT;
    bool matches = hseq == s.seq && sodium_memcmp(hhash, s.hash, AUDIT_HASH) == 0;
    bool one_beyond = s.records >= 1 && hseq == s.seq_before_last &&
                      sodium_memcmp(hhash, s.hash_before_last, AUDIT_HASH) == 0;
    if (head_missing ? s.records > 1 : !(matches || one_beyond)) {
        snprintf(err, errcap,
                 "%s: the log ends at record %llu but the signed head names record %llu; "
                 "refusing to open a trail that was cut or extended (run `stele audit verify`)",
                 a->log_path, (unsigned long long)s.seq, (unsigned long long)hseq);
        rc = -EBADMSG;
        goto fail;
    }
    rc = stele_io_open(io, a->log_path, STELE_IO_READWRITE | STELE_IO_CREATE, &a->log);
    if (rc == 0 && s.torn_tail) /* a crash mid-append: that record was never acknowledged */
        rc = stele_io_truncate(a->log, s.good_end);
    if (rc == 0)
        rc = stele_io_fsync(a->log);
    if (rc == 0)
        rc = stele_io_fsync_dir(io, dir);
    a->size = s.good_end;
    a->seq = s.seq;
    memcpy(a->hash, s.hash, AUDIT_HASH);
    if (rc == 0 && !matches) /* the crash window between record and head */
        rc = head_write(a);
    if (rc) {
        snprintf(err, errcap, "%s: %s", a->log_path, strerror(-rc));
        goto fail;
    }
    *out = a;
    return 0;
fail:
    stele_audit_close(a);
    return rc ? rc : -EBADMSG;
}

void stele_audit_close(stele_audit *a)
{
    if (!a)
        return;
    stele_io_close(a->log);
    sodium_memzero(a->sk, sizeof(a->sk));
    pthread_mutex_destroy(&a->mu);
    free(a);
}

int stele_audit_append(stele_audit *a, const char *actor, const char *action, const char *subject,
                       const char *outcome, const char *details, uint64_t *seq)
{
    const char *f[AUDIT_FIELDS] = {actor ? actor : "", action ? action : "", subject ? subject : "",
                                   outcome ? outcome : "", details ? details : ""};
    uint8_t rec[AUDIT_HEADER + AUDIT_MAX_BODY + AUDIT_HASH];
    size_t blen = 0;
    for (int k = 0; k < AUDIT_FIELDS; k++) {
        size_t n = strlen(f[k]);
        if (!field_ok((const uint8_t *)f[k], n,
                      k == 4 ? STELE_AUDIT_MAX_DETAILS : STELE_AUDIT_MAX_FIELD))
            return -EINVAL;
        put_le16(rec + AUDIT_HEADER + blen, (uint16_t)n);
        memcpy(rec + AUDIT_HEADER + blen + 2, f[k], n);
        blen += 2 + n;
    }
    pthread_mutex_lock(&a->mu);
    if (a->failed) {
        pthread_mutex_unlock(&a->mu);
        return a->failed;
    }
    memcpy(rec, AUDIT_MAGIC, 4);
    put_le32(rec + 4, (uint32_t)blen);
    put_le64(rec + 8, a->seq + 1);
    put_le64(rec + 16, (uint64_t)clock_wall_ns());
    uint8_t h[AUDIT_HASH];
    chain_hash(a->hash, rec, AUDIT_HEADER + blen, h);
    memcpy(rec + AUDIT_HEADER + blen, h, AUDIT_HASH);
    size_t total = AUDIT_HEADER + blen + AUDIT_HASH;
    int rc = stele_io_pwrite(a->log, rec, total, a->size);
    if (rc == 0)
        rc = stele_io_fsync(a->log);
    if (rc == 0) {
        a->size += total;
        a->seq++;
        memcpy(a->hash, h, AUDIT_HASH);
        rc = head_write(a);
        if (seq)
            *seq = a->seq;
    }
    if (rc)
        a->failed = rc; /* never retried as if it had succeeded; reopen to recover */
    pthread_mutex_unlock(&a->mu);
    return rc;
}
