/*
 * audit.c — appending to the audit trail: open and crash recovery, group commit,
 * checkpoints, segment rolling (format: audit_format.c; API: stele/audit.h).
 *
 * GROUP COMMIT. Every critical action is audited durably before it is acknowledged,
 * and thousands arrive at once (an enrollment burst), so appends share the expensive
 * part: an appender encodes its record body on its own stack, queues it under the
 * mutex and, if no writer is active, becomes the writer (leader) for everything queued:
 * it assigns sequences, times and hashes, adds checkpoints where due, writes the batch
 * with one pwrite, fsyncs once, replaces the signed head once, then wakes the others
 * with their sequence numbers. Others queue meanwhile and wait; when the leader's own
 * record is done it leaves, and one of the waiters leads the next batch. The mutex is
 * never held across I/O: the writer state (open segment, chain state) belongs to
 * whichever thread set `writing`, and only that thread touches it.
 *
 * FAILURE. A failed write, fsync, segment roll or head replacement fails the trail for
 * good: the batch gets the error, everything queued and every later append -EIO. The
 * file's state after a failed fsync is unknown (SPEC §4: never retried as if nothing
 * happened); reopening recovers from what is on disk.
 *
 * RECOVERY (open). A crash can leave, after the record the signed head names, one
 * batch's worth of whole records and then a torn one (a batch is written by one pwrite
 * and the head replaced only after its fsync; the next batch starts after that). The
 * torn bytes are cut. The whole, chain-valid records are KEPT, though never
 * acknowledged: the action each describes may well have taken effect (the server
 * audits before acknowledging, not before acting), so cutting them could erase the
 * only evidence of something that happened, while keeping one that did not happen
 * costs a line that says "attempted". An "audit.recover" record then says what was
 * kept and cut, so verify and list show that a crash happened there. More than one
 * batch beyond the head cannot come from a crash; that trail refuses to open.
 *
 * Open validates only the tail segment record by record (plus every segment header
 * and the head); stele_audit_verify checks everything.
 */
#include "stele/audit.h"

#include <errno.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/bytes.h"
#include "common/clock.h"
#include "control/audit_internal.h"

/* One queued append, on the appender's stack until `done`. */
typedef struct audit_waiter {
    struct audit_waiter *next;
    unsigned kind; /* AUDIT_KIND_EVENT, or AUDIT_KIND_CHECKPOINT: "checkpoint now" */
    size_t body_len;
    uint64_t seq;
    int rc;
    bool done;
    uint8_t body[AUDIT_MAX_BODY];
} audit_waiter;

struct stele_audit {
    stele_io *io;
    char dir[AUDIT_PATH_MAX];
    uint8_t sk[64], pk[32];
    uint64_t segment_bytes;
    uint32_t checkpoint_records;
    int64_t checkpoint_ns;
    int64_t (*now_ns)(void *ctx);
    void *now_ctx;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    audit_waiter *queue_head, *queue_tail; /* mu */
    bool writing;                          /* mu: a leader owns the writer state */
    int failed;                            /* mu: sticky error */
    stele_audit_head head;                 /* mu: the last head written */
    audit_segment_info *segs;              /* mu: every segment, the tail last */
    size_t nsegs, segs_cap;                /* mu */
    stele_audit_stats stats;               /* mu */

    /* Writer state: only the thread that set `writing` (or open) touches these. */
    stele_file *seg;
    uint64_t seg_no, seg_size;
    int64_t seg_min_ns, seg_max_ns; /* time range of the tail's records */
    uint64_t seq;
    uint8_t hash[AUDIT_HASH];
    uint32_t since_checkpoint;
    int64_t last_checkpoint_ns;
    uint8_t *batch; /* AUDIT_BATCH_BUFFER bytes */
};

static int64_t audit_now(stele_audit *a)
{
    return a->now_ns ? a->now_ns(a->now_ctx) : clock_wall_ns();
}

static int segs_push(stele_audit *a, uint64_t no, uint64_t first_seq)
{
    if (a->nsegs == a->segs_cap) {
        size_t cap = a->segs_cap ? a->segs_cap * 2 : 16;
        audit_segment_info *grown = realloc(a->segs, cap * sizeof(*grown));
        if (!grown)
            return -ENOMEM;
        a->segs = grown;
        a->segs_cap = cap;
    }
    a->segs[a->nsegs++] = (audit_segment_info){.no = no, .first_seq = first_seq};
    return 0;
}

/* ---- writing --------------------------------------------------------------------- */

/* Writes the head for the writer's chain state and publishes it. */
static int head_write(stele_audit *a)
{
    uint8_t head[AUDIT_HEAD_BYTES];
    audit__head_encode(a->seq, a->hash, a->sk, head);
    int rc = stele_io_write_file_atomic(a->io, a->dir, AUDIT_HEAD_NAME, head, sizeof(head));
    if (rc == 0) {
        pthread_mutex_lock(&a->mu);
        a->head.seq = a->seq;
        memcpy(a->head.hash, a->hash, AUDIT_HASH);
        memcpy(a->head.signature, head + AUDIT_HEAD_SIGNED, AUDIT_SIG);
        a->stats.last_seq = a->seq;
        pthread_mutex_unlock(&a->mu);
    }
    return rc;
}

/* Creates segment `no` (atomically, header and all) continuing from (seq, hash) and
 * makes it the writer's open segment. */
static int segment_create(stele_audit *a, uint64_t no, int64_t prev_min, int64_t prev_max)
{
    uint8_t hdr[AUDIT_SEGMENT_HEADER];
    char name[48], path[AUDIT_PATH_MAX + 64];
    audit_segment_header h = {
        .no = no, .first_seq = a->seq + 1, .prev_min_ns = prev_min, .prev_max_ns = prev_max};
    memcpy(h.prev_hash, a->hash, AUDIT_HASH);
    audit__segment_header_encode(&h, hdr);
    audit__segment_name(no, name, sizeof(name));
    snprintf(path, sizeof(path), "%s/%s", a->dir, name);
    stele_file *f = NULL;
    int rc = stele_io_write_file_atomic(a->io, a->dir, name, hdr, sizeof(hdr));
    if (rc == 0)
        rc = stele_io_open(a->io, path, STELE_IO_READWRITE, &f);
    if (rc)
        return rc;
    pthread_mutex_lock(&a->mu);
    if (a->nsegs) { /* the old tail is sealed: its time range is now known */
        audit_segment_info *old = &a->segs[a->nsegs - 1];
        old->min_ns = prev_min;
        old->max_ns = prev_max;
        old->known = true;
    }
    rc = segs_push(a, no, a->seq + 1);
    pthread_mutex_unlock(&a->mu);
    if (rc) {
        stele_io_close(f);
        return rc;
    }
    stele_io_close(a->seg);
    a->seg = f; /* now the writer's */
    a->seg_no = no;
    a->seg_size = AUDIT_SEGMENT_HEADER;
    a->seg_min_ns = INT64_MAX;
    a->seg_max_ns = INT64_MIN;
    return 0;
}

/* Appends one record to the batch buffer, advancing the chain (seq, hash). */
static size_t emit(uint8_t *out, unsigned kind, const uint8_t *body, size_t blen, uint64_t seq,
                   int64_t time_ns, uint8_t hash[AUDIT_HASH])
{
    memcpy(out, AUDIT_RECORD_MAGIC, 4);
    put_le16(out + 4, (uint16_t)kind);
    put_le16(out + 6, (uint16_t)blen);
    put_le64(out + 8, seq);
    put_le64(out + 16, (uint64_t)time_ns);
    memcpy(out + AUDIT_RECORD_HEADER, body, blen);
    audit__chain_hash(hash, out, AUDIT_RECORD_HEADER + blen, hash);
    memcpy(out + AUDIT_RECORD_HEADER + blen, hash, AUDIT_HASH);
    return AUDIT_RECORD_HEADER + blen + AUDIT_HASH;
}

typedef struct {
    uint64_t seq;
    uint8_t hash[AUDIT_HASH];
    uint32_t since_checkpoint;
    int64_t last_checkpoint_ns;
    size_t len;
    uint64_t checkpoints, events;
} batch_state;

static void emit_checkpoint(stele_audit *a, batch_state *b, int64_t now)
{
    uint8_t msg[AUDIT_CHECKPOINT_MSG], sig[AUDIT_SIG];
    audit__checkpoint_message(b->seq, b->hash, msg);
    crypto_sign_detached(sig, NULL, msg, sizeof(msg), a->sk);
    b->seq++;
    b->len +=
        emit(a->batch + b->len, AUDIT_KIND_CHECKPOINT, sig, sizeof(sig), b->seq, now, b->hash);
    b->since_checkpoint = 0;
    b->last_checkpoint_ns = now;
    b->checkpoints++;
}

/* Writes a batch (the leader, without the mutex): records and due checkpoints, a
 * segment roll first when the tail is full, one pwrite, one fsync, the head. */
static int batch_write(stele_audit *a, audit_waiter *list, batch_state *b)
{
    int64_t now = audit_now(a);
    b->seq = a->seq;
    memcpy(b->hash, a->hash, AUDIT_HASH);
    b->since_checkpoint = a->since_checkpoint;
    b->last_checkpoint_ns = a->last_checkpoint_ns;
    b->len = 0;
    for (audit_waiter *w = list; w; w = w->next) {
        if (w->kind == AUDIT_KIND_EVENT) {
            b->seq++;
            b->len += emit(a->batch + b->len, AUDIT_KIND_EVENT, w->body, w->body_len, b->seq, now,
                           b->hash);
            b->events++;
            w->seq = b->seq;
            if (++b->since_checkpoint >= a->checkpoint_records)
                emit_checkpoint(a, b, now);
        } else {
            if (b->since_checkpoint > 0)
                emit_checkpoint(a, b, now);
            w->seq = b->seq;
        }
    }
    if (b->since_checkpoint > 0 && a->checkpoint_ns >= 0 &&
        now - b->last_checkpoint_ns >= a->checkpoint_ns)
        emit_checkpoint(a, b, now);
    if (b->len == 0)
        return 0; /* only checkpoint requests, and nothing to checkpoint */
    int rc = 0;
    if (a->seg_size > AUDIT_SEGMENT_HEADER && a->seg_size + b->len > a->segment_bytes)
        rc = segment_create(a, a->seg_no + 1, a->seg_min_ns, a->seg_max_ns);
    if (rc == 0)
        rc = stele_io_pwrite(a->seg, a->batch, b->len, a->seg_size);
    if (rc == 0)
        rc = stele_io_fsync(a->seg);
    if (rc)
        return rc;
    a->seg_size += b->len;
    a->seq = b->seq;
    memcpy(a->hash, b->hash, AUDIT_HASH);
    a->since_checkpoint = b->since_checkpoint;
    a->last_checkpoint_ns = b->last_checkpoint_ns;
    if (now < a->seg_min_ns)
        a->seg_min_ns = now;
    if (now > a->seg_max_ns)
        a->seg_max_ns = now;
    return head_write(a);
}

/* Detaches the next batch from the queue (mu held): at least one waiter, then as many
 * as the caps allow, in queue order. */
static audit_waiter *batch_take(stele_audit *a)
{
    audit_waiter *first = a->queue_head, *last = first;
    size_t bytes = AUDIT_RECORD_HEADER + first->body_len + AUDIT_HASH;
    unsigned count = 1;
    while (last->next && count < AUDIT_MAX_BATCH_EVENTS) {
        size_t next = AUDIT_RECORD_HEADER + last->next->body_len + AUDIT_HASH;
        if (bytes + next > AUDIT_MAX_BATCH_EVENT_BYTES)
            break;
        bytes += next;
        count++;
        last = last->next;
    }
    a->queue_head = last->next;
    if (!a->queue_head)
        a->queue_tail = NULL;
    last->next = NULL;
    return first;
}

/* Queues w and waits until a batch holding it is durable (leading batches meanwhile
 * when no one else does). */
static int submit(stele_audit *a, audit_waiter *w)
{
    pthread_mutex_lock(&a->mu);
    if (a->failed) {
        pthread_mutex_unlock(&a->mu);
        return -EIO;
    }
    w->next = NULL;
    w->done = false;
    if (a->queue_tail)
        a->queue_tail->next = w;
    else
        a->queue_head = w;
    a->queue_tail = w;
    while (!w->done) {
        if (a->writing) {
            pthread_cond_wait(&a->cv, &a->mu);
            continue;
        }
        a->writing = true;
        audit_waiter *list = batch_take(a);
        batch_state b = {0};
        pthread_mutex_unlock(&a->mu);
        int rc = batch_write(a, list, &b);
        pthread_mutex_lock(&a->mu);
        /* Read `next` before `done`: a finished waiter may return and free its frame. */
        for (audit_waiter *x = list, *next; x; x = next) {
            next = x->next;
            x->rc = rc;
            x->done = true;
        }
        if (rc) {
            a->failed = rc; /* never retried: the file's state is unknown */
            for (audit_waiter *x = a->queue_head, *next; x; x = next) {
                next = x->next;
                x->rc = -EIO;
                x->done = true;
            }
            a->queue_head = a->queue_tail = NULL;
        } else if (b.len) {
            a->stats.events += b.events;
            a->stats.checkpoints += b.checkpoints;
            a->stats.batches++;
        }
        a->writing = false;
        pthread_cond_broadcast(&a->cv);
    }
    int rc = w->rc;
    pthread_mutex_unlock(&a->mu);
    return rc;
}

static bool field_ok(const char *s, size_t n, size_t max)
{
    if (n > max)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return false;
    return true;
}

int stele_audit_append(stele_audit *a, const char *actor, const char *action, const char *subject,
                       const char *outcome, const char *details, uint64_t *seq)
{
    const char *f[AUDIT_FIELDS] = {actor ? actor : "", action ? action : "", subject ? subject : "",
                                   outcome ? outcome : "", details ? details : ""};
    audit_waiter w = {.kind = AUDIT_KIND_EVENT};
    for (int k = 0; k < AUDIT_FIELDS; k++) {
        size_t n = strlen(f[k]);
        if (!field_ok(f[k], n, k == 4 ? STELE_AUDIT_MAX_DETAILS : STELE_AUDIT_MAX_FIELD))
            return -EINVAL;
        put_le16(w.body + w.body_len, (uint16_t)n);
        memcpy(w.body + w.body_len + 2, f[k], n);
        w.body_len += 2 + n;
    }
    int rc = submit(a, &w);
    if (rc == 0 && seq)
        *seq = w.seq;
    return rc;
}

int stele_audit_checkpoint(stele_audit *a)
{
    audit_waiter w = {.kind = AUDIT_KIND_CHECKPOINT};
    return submit(a, &w);
}

int stele_audit_health(stele_audit *a)
{
    pthread_mutex_lock(&a->mu);
    int rc = a->failed;
    pthread_mutex_unlock(&a->mu);
    return rc;
}

void stele_audit_stats_get(stele_audit *a, stele_audit_stats *out)
{
    pthread_mutex_lock(&a->mu);
    *out = a->stats;
    pthread_mutex_unlock(&a->mu);
}

int stele_audit_head_export(stele_audit *a, char *buf, size_t cap)
{
    pthread_mutex_lock(&a->mu);
    stele_audit_head h = a->head;
    pthread_mutex_unlock(&a->mu);
    return stele_audit_head_format(&h, buf, cap);
}

int stele_audit_list(stele_audit *a, const stele_audit_filter *f, stele_audit_event_fn fn,
                     void *ctx)
{
    pthread_mutex_lock(&a->mu);
    size_t n = a->nsegs;
    uint64_t last = a->head.seq;
    audit_segment_info *segs = malloc((n ? n : 1) * sizeof(*segs));
    if (segs && n)
        memcpy(segs, a->segs, n * sizeof(*segs));
    pthread_mutex_unlock(&a->mu);
    if (!segs)
        return -ENOMEM;
    int rc = audit__list(a->io, a->dir, segs, n, last, f, fn, ctx);
    free(segs);
    return rc;
}

/* ---- open and recovery ------------------------------------------------------------ */

/* What scanning the tail segment found. */
typedef struct {
    bool head_found;
    uint64_t head_end; /* offset after the head's record (or the header) */
    uint64_t last_seq; /* last valid record */
    uint8_t last_hash[AUDIT_HASH];
    uint64_t valid_end; /* offset after it */
    uint64_t file_size;
    int64_t min_ns, max_ns;
    uint32_t since_checkpoint;
    int64_t last_checkpoint_ns;
    bool checkpoint_seen;
    const char *damage; /* why the scan stopped early (NULL at a clean end) */
    uint64_t damage_at;
} tail_scan;

static int scan_tail(stele_audit *a, uint64_t no, const stele_audit_head *head, tail_scan *t,
                     char *err, size_t errcap)
{
    audit_reader *r = calloc(1, sizeof(*r));
    int rc = r ? audit__reader_open(r, a->io, a->dir, no) : -ENOMEM;
    char name[48];
    audit__segment_name(no, name, sizeof(name));
    memset(t, 0, sizeof(*t));
    t->min_ns = INT64_MAX;
    t->max_ns = INT64_MIN;
    if (rc) {
        if (rc == -EBADMSG)
            snprintf(err, errcap, "%s/%s: %s", a->dir, name, r->why);
        else
            snprintf(err, errcap, "%s/%s: %s", a->dir, name, strerror(-rc));
        goto out;
    }
    rc = stele_io_size(r->f, &t->file_size);
    if (rc) {
        snprintf(err, errcap, "%s/%s: %s", a->dir, name, strerror(-rc));
        goto out;
    }
    t->last_seq = r->seq;
    memcpy(t->last_hash, r->hash, AUDIT_HASH);
    t->valid_end = r->off;
    if (head->seq == r->seq) {
        t->head_found = sodium_memcmp(head->hash, r->hash, AUDIT_HASH) == 0;
        t->head_end = r->off;
    }
    for (;;) {
        audit_read_status st = audit__reader_next(r);
        if (st == AUDIT_READ_IOERR) {
            rc = r->err;
            snprintf(err, errcap, "%s/%s: %s", a->dir, name, strerror(-rc));
            goto out;
        }
        if (st != AUDIT_READ_RECORD) {
            if (st == AUDIT_READ_BAD) {
                t->damage = r->why;
                t->damage_at = r->off;
            } else if (st == AUDIT_READ_TORN) {
                t->damage = "truncated record";
                t->damage_at = r->off;
            }
            break;
        }
        const audit_record *rec = &r->rec;
        if (rec->kind == AUDIT_KIND_CHECKPOINT) {
            uint8_t msg[AUDIT_CHECKPOINT_MSG];
            audit__checkpoint_message(rec->seq - 1, rec->prev_hash, msg);
            if (crypto_sign_verify_detached(rec->sig, msg, sizeof(msg), a->pk) != 0) {
                t->damage = "checkpoint signature invalid (not signed by this audit key)";
                t->damage_at = rec->offset;
                break;
            }
            t->since_checkpoint = 0;
            t->last_checkpoint_ns = rec->time_ns;
            t->checkpoint_seen = true;
        } else {
            t->since_checkpoint++;
        }
        if (rec->seq == head->seq) {
            if (sodium_memcmp(rec->hash, head->hash, AUDIT_HASH) != 0) {
                snprintf(err, errcap,
                         "%s/%s: record %llu differs from the one the signed head names "
                         "(replaced); refusing to append to a tampered trail (run `stele audit "
                         "verify`)",
                         a->dir, name, (unsigned long long)rec->seq);
                rc = -EBADMSG;
                goto out;
            }
            t->head_found = true;
            t->head_end = r->off;
        }
        t->last_seq = rec->seq;
        memcpy(t->last_hash, rec->hash, AUDIT_HASH);
        t->valid_end = r->off;
        if (rec->time_ns < t->min_ns)
            t->min_ns = rec->time_ns;
        if (rec->time_ns > t->max_ns)
            t->max_ns = rec->time_ns;
    }
    rc = 0;
out:
    if (r)
        audit__reader_close(r);
    free(r);
    return rc;
}

/* Reads every segment header: numbers contiguous from 1, each header sound and
 * matching its name, sequences increasing. Fills the segment table. */
static int check_headers(stele_audit *a, const uint64_t *nos, size_t n, audit_segment_header *tail,
                         char *err, size_t errcap)
{
    audit_segment_header prev = {0};
    for (size_t i = 0; i < n; i++) {
        char name[48];
        audit__segment_name(nos[i], name, sizeof(name));
        if (nos[i] != i + 1) {
            snprintf(err, errcap,
                     "%s: segment %llu is missing (the next is %s); refusing to append to a "
                     "trail with a segment deleted (run `stele audit verify`)",
                     a->dir, (unsigned long long)(i + 1), name);
            return -EBADMSG;
        }
        audit_reader r;
        int rc = audit__reader_open(&r, a->io, a->dir, nos[i]);
        audit_segment_header h = r.hdr;
        const char *why = r.why;
        audit__reader_close(&r);
        if (rc) {
            snprintf(err, errcap, "%s/%s: %s", a->dir, name,
                     rc == -EBADMSG && why ? why : strerror(-rc));
            return rc;
        }
        if (h.no != nos[i] || (i > 0 && h.first_seq <= prev.first_seq) ||
            (i == 0 && h.first_seq != 1)) {
            snprintf(err, errcap,
                     "%s/%s: header names segment %llu starting at record %llu, out of order "
                     "(segments renamed or replaced; run `stele audit verify`)",
                     a->dir, name, (unsigned long long)h.no, (unsigned long long)h.first_seq);
            return -EBADMSG;
        }
        if (i > 0) {
            a->segs[i - 1].min_ns = h.prev_min_ns;
            a->segs[i - 1].max_ns = h.prev_max_ns;
            a->segs[i - 1].known = true;
        }
        rc = segs_push(a, h.no, h.first_seq);
        if (rc)
            return rc;
        prev = h;
    }
    *tail = prev;
    return 0;
}

static int recover(stele_audit *a, const uint64_t *nos, size_t n, char *err, size_t errcap)
{
    stele_audit_head head = {0};
    const char *why = NULL;
    audit_segment_header tail_hdr;
    char name[48], path[AUDIT_PATH_MAX + 64], details[256];
    int rc = audit__head_load(a->io, a->dir, a->pk, &head, &why);
    if (rc && rc != -ENOENT) {
        snprintf(err, errcap, "%s/" AUDIT_HEAD_NAME ": %s", a->dir, why ? why : strerror(-rc));
        return rc;
    }
    bool head_missing = rc == -ENOENT;
    if (head_missing && n > 1) {
        snprintf(err, errcap,
                 "%s/" AUDIT_HEAD_NAME " is missing while the trail holds records; refusing to "
                 "open (run `stele audit verify`)",
                 a->dir);
        return -EBADMSG;
    }
    rc = check_headers(a, nos, n, &tail_hdr, err, errcap);
    if (rc)
        return rc;
    uint64_t tail_no = nos[n - 1];
    audit__segment_name(tail_no, name, sizeof(name));
    if (head.seq + 1 < tail_hdr.first_seq) {
        snprintf(err, errcap,
                 "%s: the signed head names record %llu but %s starts at record %llu (records "
                 "cut off before it); refusing to open (run `stele audit verify`)",
                 a->dir, (unsigned long long)head.seq, name,
                 (unsigned long long)tail_hdr.first_seq);
        return -EBADMSG;
    }
    tail_scan t;
    rc = scan_tail(a, tail_no, &head, &t, err, errcap);
    if (rc)
        return rc;
    if (head_missing && (t.valid_end > AUDIT_SEGMENT_HEADER || t.damage)) {
        snprintf(err, errcap,
                 "%s/" AUDIT_HEAD_NAME " is missing while the trail holds records; refusing to "
                 "open (run `stele audit verify`)",
                 a->dir);
        return -EBADMSG;
    }
    if (!head_missing && !t.head_found) {
        if (t.damage && t.last_seq < head.seq)
            snprintf(err, errcap,
                     "%s/%s: byte %llu, after record %llu: %s; refusing to append to a tampered "
                     "trail (run `stele audit verify`)",
                     a->dir, name, (unsigned long long)t.damage_at, (unsigned long long)t.last_seq,
                     t.damage);
        else
            snprintf(err, errcap,
                     "%s: the trail ends at record %llu but the signed head names record %llu "
                     "(records cut off or replaced); refusing to open (run `stele audit "
                     "verify`)",
                     a->dir, (unsigned long long)t.last_seq, (unsigned long long)head.seq);
        return -EBADMSG;
    }
    uint64_t adopted = t.last_seq - head.seq;
    uint64_t adopted_bytes = t.valid_end - t.head_end;
    uint64_t cut = t.file_size - t.valid_end;
    if (adopted_bytes > AUDIT_BATCH_BUFFER) {
        snprintf(err, errcap,
                 "%s/%s: %llu records (%llu bytes) lie beyond the signed head, more than one "
                 "group commit writes: records were appended without the audit key; refusing to "
                 "open (run `stele audit verify`)",
                 a->dir, name, (unsigned long long)adopted, (unsigned long long)adopted_bytes);
        return -EBADMSG;
    }
    snprintf(path, sizeof(path), "%s/%s", a->dir, name);
    rc = stele_io_open(a->io, path, STELE_IO_READWRITE, &a->seg);
    if (rc == 0 && cut) /* a crash mid-append: those bytes were never acknowledged */
        rc = stele_io_truncate(a->seg, t.valid_end);
    if (rc == 0) /* what survived a process crash may sit in the page cache only */
        rc = stele_io_fsync(a->seg);
    if (rc) {
        snprintf(err, errcap, "%s: %s", path, strerror(-rc));
        return rc;
    }
    a->seg_no = tail_no;
    a->seg_size = t.valid_end;
    a->seg_min_ns = t.min_ns;
    a->seg_max_ns = t.max_ns;
    a->seq = t.last_seq;
    memcpy(a->hash, t.last_hash, AUDIT_HASH);
    /* With no checkpoint in the tail, the time rule makes one due at the first append. */
    a->since_checkpoint = t.since_checkpoint;
    a->last_checkpoint_ns = t.checkpoint_seen ? t.last_checkpoint_ns : 0;
    a->head = head;
    a->stats.last_seq = head.seq;
    if (head_missing) { /* crash between creating segment 1 and its first head */
        rc = head_write(a);
        if (rc) {
            snprintf(err, errcap, "%s/" AUDIT_HEAD_NAME ": %s", a->dir, strerror(-rc));
            return rc;
        }
    }
    if (adopted == 0 && cut == 0)
        return 0;
    if (adopted)
        snprintf(details, sizeof(details),
                 "kept records %llu..%llu (written before a crash, never acknowledged); cut %llu "
                 "bytes of a torn record",
                 (unsigned long long)(head.seq + 1), (unsigned long long)t.last_seq,
                 (unsigned long long)cut);
    else
        snprintf(details, sizeof(details),
                 "cut %llu bytes of a torn record (written before a crash, never acknowledged)",
                 (unsigned long long)cut);
    rc = stele_audit_append(a, AUDIT_SELF_ACTOR, "audit.recover", "audit", "ok", details, NULL);
    if (rc)
        snprintf(err, errcap, "%s: cannot record the recovery: %s", a->dir, strerror(-rc));
    return rc;
}

/* A new trail: segment 1, then a head for the empty chain. */
static int create_fresh(stele_audit *a, char *err, size_t errcap)
{
    int rc = segment_create(a, 1, 0, 0);
    if (rc == 0)
        rc = head_write(a);
    if (rc)
        snprintf(err, errcap, "%s: cannot create the audit trail: %s", a->dir, strerror(-rc));
    return rc;
}

int stele_audit_open_with(stele_io *io, const char *dir, const uint8_t secret_key[64],
                          const stele_audit_options *opts, stele_audit **out, char *err,
                          size_t errcap)
{
    stele_audit *a = NULL;
    uint64_t *nos = NULL;
    size_t n = 0;
    int rc;
    *out = NULL;
    if (errcap)
        err[0] = '\0';
    if (strlen(dir) > AUDIT_PATH_MAX - 64) {
        snprintf(err, errcap, "%s: path too long", dir);
        return -ENAMETOOLONG;
    }
    a = calloc(1, sizeof(*a));
    if (!a || !(a->batch = malloc(AUDIT_BATCH_BUFFER))) {
        free(a);
        snprintf(err, errcap, "%s: out of memory", dir);
        return -ENOMEM;
    }
    a->io = io;
    snprintf(a->dir, sizeof(a->dir), "%s", dir);
    memcpy(a->sk, secret_key, 64);
    crypto_sign_ed25519_sk_to_pk(a->pk, secret_key);
    a->segment_bytes =
        opts && opts->segment_bytes ? opts->segment_bytes : STELE_AUDIT_SEGMENT_BYTES;
    a->checkpoint_records = opts && opts->checkpoint_records ? opts->checkpoint_records
                                                             : STELE_AUDIT_CHECKPOINT_RECORDS;
    a->checkpoint_ns =
        opts && opts->checkpoint_ns ? opts->checkpoint_ns : STELE_AUDIT_CHECKPOINT_NS;
    a->now_ns = opts ? opts->now_ns : NULL;
    a->now_ctx = opts ? opts->now_ctx : NULL;
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->cv, NULL);
    rc = stele_io_mkdir_durable(io, dir);
    if (rc) {
        snprintf(err, errcap, "%s: %s", dir, strerror(-rc));
        goto fail;
    }
    rc = audit__segments_list(io, dir, &nos, &n);
    if (rc) {
        snprintf(err, errcap, "%s: %s", dir, strerror(-rc));
        goto fail;
    }
    if (n == 0) {
        stele_audit_head head;
        const char *why = NULL;
        rc = audit__head_load(io, dir, NULL, &head, &why);
        if (rc == 0 && head.seq > 0) {
            snprintf(err, errcap,
                     "%s: the signed head names record %llu but no segment exists (segments "
                     "deleted); refusing to start a new trail over it",
                     dir, (unsigned long long)head.seq);
            rc = -EBADMSG;
            goto fail;
        }
        rc = create_fresh(a, err, errcap);
    } else {
        rc = recover(a, nos, n, err, errcap);
    }
    if (rc)
        goto fail;
    free(nos);
    *out = a;
    return 0;
fail:
    free(nos);
    stele_audit_close(a);
    return rc;
}

int stele_audit_open(stele_io *io, const char *dir, const uint8_t secret_key[64], stele_audit **out,
                     char *err, size_t errcap)
{
    return stele_audit_open_with(io, dir, secret_key, NULL, out, err, errcap);
}

void stele_audit_close(stele_audit *a)
{
    if (!a)
        return;
    stele_io_close(a->seg);
    sodium_memzero(a->sk, sizeof(a->sk));
    pthread_cond_destroy(&a->cv);
    pthread_mutex_destroy(&a->mu);
    free(a->segs);
    free(a->batch);
    free(a);
}
