/*
 * test_audit.c — the audit trail (stele/audit.h), on the fault-injecting file system:
 *   - a written trail verifies; any edited byte of any segment or of the head, a deleted,
 *     swapped or moved record, a deleted first/middle/last segment, renamed segments, a
 *     segment cut mid-record or at a record boundary, a foreign head, a misstated
 *     segment time range, a bad checkpoint signature and an exported head that the trail
 *     no longer holds are all detected by stele_audit_verify (and the server refuses to
 *     append where it can see them);
 *   - group commit: 16 threads × 1000 appends get distinct, consecutive sequences, the
 *     chain verifies, and far fewer fsyncs than appends are issued;
 *   - crash recovery: power cuts (drop/torn/garbage) during concurrent appends and
 *     scheduled I/O errors: reopen succeeds, every acknowledged record is there, the
 *     chain verifies, and records kept from beyond the head are followed by an
 *     "audit.recover" record; more than a crash can leave beyond the head is refused;
 *   - checkpoints every N records or T seconds; a copy verifies with the public key alone;
 *   - listing with every filter against a model, oldest and newest first, through the
 *     open trail and offline, and while appends run;
 *   - the key files, head export, time syntax.
 * Seeds: STELE_TEST_SEED fixes the crash test's first seed; failures print it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/io_impl.h"
#include "stele/audit.h"
#include "stele/io.h"

#include "test_util.h"

#define NS INT64_C(1000000000)
#define SEG_HEADER 80
#define REC_HEADER 24

static uint8_t pk[32], sk[64];

/* ---- helpers ---------------------------------------------------------------------- */

typedef struct {
    int problems;
    uint64_t records, events, checkpoints, gaps;
    char last[512];
    char all[4096]; /* every problem, one per line (cut when full) */
} verdict;

static void on_problem(void *ctx, const char *what)
{
    verdict *v = ctx;
    v->problems++;
    snprintf(v->last, sizeof(v->last), "%s", what);
    size_t n = strlen(v->all);
    snprintf(v->all + n, sizeof(v->all) - n, "%s\n", what);
}

/* Counts records; a sequence out of order counts as a gap (expected only in damaged
 * trails, where verify goes on past the damage). */
static int on_event(void *ctx, const stele_audit_event *e)
{
    verdict *v = ctx;
    v->records++;
    if (e->seq != v->records) {
        v->gaps++;
        v->records = e->seq;
    }
    if (e->checkpoint)
        v->checkpoints++;
    else
        v->events++;
    return 0;
}

static int verify_full(stele_io *io, verdict *v, const stele_audit_head *expect,
                       stele_audit_summary *sum)
{
    memset(v, 0, sizeof(*v));
    return stele_audit_verify(io, "audit", pk, expect, on_problem, on_event, v, sum);
}

static int verify(stele_io *io, verdict *v)
{
    return verify_full(io, v, NULL, NULL);
}

/* Verify of a trail that must be intact: no problem, every sequence in order. */
static void assert_intact(stele_io *io, verdict *v, stele_audit_summary *sum)
{
    int problems = verify_full(io, v, NULL, sum);
    if (problems || v->gaps)
        fail_msg("trail not intact: %d problems (last: %s), %" PRIu64 " gaps", problems, v->last,
                 v->gaps);
}

static int64_t fake_now = 1000 * NS;
static int64_t fake_clock(void *ctx)
{
    (void)ctx;
    return fake_now;
}

static stele_audit *open_with(stele_io *io, const stele_audit_options *o)
{
    stele_audit *a = NULL;
    char err[512] = "";
    int rc = stele_audit_open_with(io, "audit", sk, o, &a, err, sizeof(err));
    if (rc)
        fail_msg("open: %d: %s", rc, err);
    return a;
}

static void append_n(stele_audit *a, int from, int n)
{
    for (int i = from; i < from + n; i++) {
        char subject[32];
        snprintf(subject, sizeof(subject), "device:d%d", i);
        assert_int_equal(
            stele_audit_append(a, "admin", "device.revoke", subject, "ok", "reason=lost", NULL), 0);
    }
}

static stele_io *fresh_trail(int events, const stele_audit_options *o)
{
    stele_io *io;
    assert_int_equal(stele_io_fault_create(5, &io), 0);
    stele_audit *a = open_with(io, o);
    append_n(a, 0, events);
    stele_audit_close(a);
    return io;
}

static size_t load(stele_io *io, const char *path, uint8_t **buf)
{
    size_t n = 0;
    assert_int_equal(stele_io_read_file(io, path, 1u << 26, buf, &n), 0);
    return n;
}

static void store(stele_io *io, const char *path, const uint8_t *buf, size_t len)
{
    stele_file *f;
    assert_int_equal(
        stele_io_open(io, path, STELE_IO_READWRITE | STELE_IO_CREATE | STELE_IO_TRUNCATE, &f), 0);
    if (len)
        assert_int_equal(stele_io_pwrite(f, buf, len, 0), 0);
    assert_int_equal(stele_io_fsync(f), 0);
    stele_io_close(f);
    assert_int_equal(stele_io_fsync_dir(io, "audit"), 0);
}

static void seg_path(int no, char *buf, size_t cap)
{
    snprintf(buf, cap, "audit/audit-%06d.log", no);
}

static int count_segments(stele_io *io)
{
    int n = 0;
    char path[64];
    for (;;) {
        seg_path(n + 1, path, sizeof(path));
        if (stele_io_exists(io, path) != 1)
            return n;
        n++;
    }
}

static int open_rc(stele_io *io, const stele_audit_options *o, char *err, size_t cap)
{
    stele_audit *a = NULL;
    int rc = stele_audit_open_with(io, "audit", sk, o, &a, err, cap);
    stele_audit_close(a);
    return rc;
}

/* Verify must report a problem; open (when `open_sees` it) must refuse. */
/* ... and one of verify's problems must contain `says` (naming the right file and
 * cause: the message is what the operator acts on). */
static void assert_detected(stele_io *io, const char *what, bool open_sees, const char *says)
{
    verdict v;
    if (verify(io, &v) <= 0)
        fail_msg("%s: not detected by verify", what);
    if (says && !strstr(v.all, says))
        fail_msg("%s: no problem says \"%s\"; verify said:\n%s", what, says, v.all);
    if (open_sees) {
        char err[512] = "";
        int rc = open_rc(io, NULL, err, sizeof(err));
        if (rc != -EBADMSG)
            fail_msg("%s: open returned %d, expected -EBADMSG", what, rc);
        assert_true(err[0] != '\0');
    }
}

static uint32_t rec_len(const uint8_t *r)
{
    return REC_HEADER + (uint32_t)(r[6] | r[7] << 8) + 32;
}

/* Offsets of the records of a segment image; off[n] = len. */
static size_t record_offsets(const uint8_t *seg, size_t len, size_t *off, size_t cap)
{
    size_t n = 0, o = SEG_HEADER;
    while (o < len && n + 1 < cap) {
        off[n++] = o;
        o += rec_len(seg + o);
    }
    off[n] = len;
    return n;
}

/* Test-side copy of the format: recomputes every hash, header and the head, as someone
 * holding the secret key could (used to isolate one check, e.g. a checkpoint's). */
static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void rechain(stele_io *io)
{
    uint8_t hash[32] = {0}, *seg = NULL;
    uint64_t seq = 0;
    int n = count_segments(io);
    for (int no = 1; no <= n; no++) {
        char path[64];
        seg_path(no, path, sizeof(path));
        size_t len = load(io, path, &seg);
        memcpy(seg + 24, hash, 32);
        uint8_t sum[32];
        crypto_generichash(sum, 32, seg, 72, NULL, 0);
        memcpy(seg + 72, sum, 8);
        for (size_t o = SEG_HEADER; o < len;) {
            size_t l = rec_len(seg + o);
            crypto_generichash_state st;
            crypto_generichash_init(&st, NULL, 0, 32);
            crypto_generichash_update(&st, hash, 32);
            crypto_generichash_update(&st, seg + o, l - 32);
            crypto_generichash_final(&st, hash, 32);
            memcpy(seg + o + l - 32, hash, 32);
            seq++;
            o += l;
        }
        store(io, path, seg, len);
        free(seg);
    }
    uint8_t head[112], msg[sizeof("stele/audit-head/v2") + 48];
    memcpy(head, "STAH", 4);
    head[4] = 2, head[5] = head[6] = head[7] = 0;
    put64(head + 8, seq);
    memcpy(head + 16, hash, 32);
    memcpy(msg, "stele/audit-head/v2", sizeof("stele/audit-head/v2"));
    memcpy(msg + sizeof("stele/audit-head/v2"), head, 48);
    crypto_sign_detached(head + 48, NULL, msg, sizeof(msg), sk);
    store(io, "audit/audit.head", head, sizeof(head));
}

/* ---- basic trail ------------------------------------------------------------------ */

static void test_written_trail_verifies(void **state)
{
    (void)state;
    stele_io *io = fresh_trail(20, NULL);
    verdict v;
    stele_audit_summary sum;
    assert_intact(io, &v, &sum);
    assert_int_equal(v.events, 20);
    assert_int_equal(sum.records, v.records);
    assert_int_equal(sum.head_seq, v.records);
    assert_int_equal(sum.last_seq, v.records);
    assert_int_equal(sum.segments, 1);
    /* Reopen and append more: the chain continues. */
    stele_audit *a = open_with(io, NULL);
    uint64_t seq = 0;
    assert_int_equal(stele_audit_append(a, "admin", "token.create", "t1", "ok", "", &seq), 0);
    assert_int_equal(seq, v.records + 1);
    stele_audit_close(a);
    assert_intact(io, &v, NULL);
    assert_int_equal(v.events, 21);
    /* A missing directory is an error, not an intact trail. */
    stele_io *empty;
    assert_int_equal(stele_io_fault_create(1, &empty), 0);
    assert_int_equal(stele_audit_verify(empty, "audit", pk, NULL, on_problem, NULL, &v, NULL),
                     -ENOENT);
    stele_io_destroy(empty);
    stele_io_destroy(io);
}

static void test_fields_bounded(void **state)
{
    (void)state;
    stele_io *io = fresh_trail(0, NULL);
    stele_audit *a = open_with(io, NULL);
    char big[STELE_AUDIT_MAX_DETAILS + 2];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(stele_audit_append(a, "a", "b", "c", "ok", big, NULL), -EINVAL);
    assert_int_equal(stele_audit_append(a, "a\n", "b", "c", "ok", "", NULL), -EINVAL);
    big[STELE_AUDIT_MAX_FIELD + 1] = '\0';
    assert_int_equal(stele_audit_append(a, big, "b", "c", "ok", "", NULL), -EINVAL);
    big[STELE_AUDIT_MAX_FIELD + 1] = 'x';
    big[STELE_AUDIT_MAX_DETAILS] = '\0';
    assert_int_equal(stele_audit_append(a, "a", "b", "c", "ok", big, NULL), 0);
    stele_audit_close(a);
    verdict v;
    assert_intact(io, &v, NULL);
    assert_int_equal(v.events, 1);
    stele_io_destroy(io);
}

/* ---- tampering -------------------------------------------------------------------- */

/* Every record at the same time (a fake clock that stands still), so that the check of
 * a segment header's time range cannot stand in for the chain checks. */
static const stele_audit_options small_segments = {
    .segment_bytes = 700, .checkpoint_ns = -1, .now_ns = fake_clock};

static void test_every_edit_detected(void **state)
{
    (void)state;
    stele_io *io = fresh_trail(14, &small_segments);
    int nseg = count_segments(io);
    assert_true(nseg >= 3);
    for (int no = 1; no <= nseg + 1; no++) {
        char path[64];
        bool head = no == nseg + 1;
        if (head)
            snprintf(path, sizeof(path), "audit/audit.head");
        else
            seg_path(no, path, sizeof(path));
        uint8_t *img = NULL;
        size_t len = load(io, path, &img);
        for (size_t i = 0; i < len; i++) {
            img[i] ^= 0x20;
            store(io, path, img, len);
            verdict v;
            if (verify(io, &v) <= 0)
                fail_msg("edit at byte %zu of %s not detected", i, path);
            if (!strstr(v.all, path + strlen("audit/")))
                fail_msg("edit at byte %zu of %s: no problem names that file:\n%s", i, path, v.all);
            if (head || no == nseg) { /* open validates the tail and the head */
                char err[512];
                if (open_rc(io, NULL, err, sizeof(err)) != -EBADMSG)
                    fail_msg("edit at byte %zu of %s: open did not refuse", i, path);
            }
            img[i] ^= 0x20;
        }
        store(io, path, img, len);
        free(img);
    }
    verdict v;
    assert_intact(io, &v, NULL);
    stele_io_destroy(io);
}

static void test_records_deleted_moved_truncated(void **state)
{
    (void)state;
    stele_io *io = fresh_trail(14, &small_segments);
    int nseg = count_segments(io);
    assert_true(nseg >= 3);
    char mid[64], last[64];
    seg_path(2, mid, sizeof(mid));
    seg_path(nseg, last, sizeof(last));
    uint8_t *m = NULL, *l = NULL;
    size_t mlen = load(io, mid, &m), llen = load(io, last, &l);
    size_t moff[64], loff[64];
    size_t mn = record_offsets(m, mlen, moff, 64), ln = record_offsets(l, llen, loff, 64);
    assert_true(mn >= 3 && ln >= 2);
    uint8_t *out = malloc(mlen + llen + 4096);

    /* Delete record 1 of the middle segment. */
    memcpy(out, m, moff[1]);
    memcpy(out + moff[1], m + moff[2], mlen - moff[2]);
    store(io, mid, out, mlen - (moff[2] - moff[1]));
    assert_detected(io, "a record deleted from a middle segment", false, "audit-000002.log: byte");
    store(io, mid, m, mlen);

    /* Swap records 0 and 2 of the middle segment (same sizes: same subject lengths). */
    assert_int_equal(moff[1] - moff[0], moff[3] - moff[2]);
    memcpy(out, m, mlen);
    memcpy(out + moff[0], m + moff[2], moff[3] - moff[2]);
    memcpy(out + moff[2], m + moff[0], moff[1] - moff[0]);
    store(io, mid, out, mlen);
    assert_detected(io, "two records of a segment swapped", false, "audit-000002.log: byte");
    store(io, mid, m, mlen);

    /* Move a record from the middle segment to the end of the last one. */
    memcpy(out, m, moff[mn - 1]);
    store(io, mid, out, moff[mn - 1]);
    memcpy(out, l, llen);
    memcpy(out + llen, m + moff[mn - 1], mlen - moff[mn - 1]);
    store(io, last, out, llen + mlen - moff[mn - 1]);
    /* (open validates only the tail; beyond its head the moved record is a torn write) */
    assert_detected(io, "a record moved to another segment", false,
                    "audit-000003.log: does not continue the chain");
    store(io, mid, m, mlen);
    store(io, last, l, llen);

    /* Truncate the last segment at a record boundary, then mid-record. */
    store(io, last, l, loff[ln - 1]);
    assert_detected(io, "the last segment cut at a record boundary", true, "(records cut off)");
    store(io, last, l, loff[ln - 1] + 10);
    assert_detected(io, "the last segment cut mid-record", true, "truncated record at byte");
    store(io, last, l, SEG_HEADER);
    assert_detected(io, "every record of the last segment cut", true, "(records cut off)");
    store(io, last, l, llen);

    /* Delete a whole middle segment, the first, the last. */
    assert_int_equal(stele_io_unlink(io, mid), 0);
    assert_detected(io, "a middle segment deleted", true, "segment 2 is missing");
    store(io, mid, m, mlen);
    char first[64];
    seg_path(1, first, sizeof(first));
    uint8_t *f1 = NULL;
    size_t f1len = load(io, first, &f1);
    assert_int_equal(stele_io_unlink(io, first), 0);
    assert_detected(io, "the first segment deleted", true, "segment 1 is missing");
    store(io, first, f1, f1len);
    assert_int_equal(stele_io_unlink(io, last), 0);
    assert_detected(io, "the last segment deleted", true, "(records cut off)");
    store(io, last, l, llen);

    /* Swap two segments' names (reorder whole segments). */
    assert_int_equal(stele_io_rename(io, first, "audit/x"), 0);
    assert_int_equal(stele_io_rename(io, mid, first), 0);
    assert_int_equal(stele_io_rename(io, "audit/x", mid), 0);
    assert_detected(io, "two segments swapped", true, "renamed or reordered");
    store(io, first, f1, f1len);
    store(io, mid, m, mlen);

    /* A header whose copy of the previous segment's time range lies (checksum redone). */
    memcpy(out, m, mlen);
    put64(out + 64, 1);
    uint8_t sum[32];
    crypto_generichash(sum, 32, out, 72, NULL, 0);
    memcpy(out + 72, sum, 8);
    store(io, mid, out, mlen);
    assert_detected(io, "a misstated segment time range", false, "misstates the time range");
    store(io, mid, m, mlen);

    /* A head signed by another key. */
    uint8_t other_pk[32], other_sk[64];
    crypto_sign_keypair(other_pk, other_sk);
    stele_io *io2;
    assert_int_equal(stele_io_fault_create(6, &io2), 0);
    stele_audit *a;
    char err[512];
    assert_int_equal(stele_audit_open(io2, "audit", other_sk, &a, err, sizeof(err)), 0);
    assert_int_equal(stele_audit_append(a, "x", "y", "z", "ok", "", NULL), 0);
    stele_audit_close(a);
    uint8_t *head = NULL, *own = NULL;
    size_t hl = load(io2, "audit/audit.head", &head), ol = load(io, "audit/audit.head", &own);
    store(io, "audit/audit.head", head, hl);
    assert_detected(io, "a head signed by another key", true, "head signature invalid");
    /* A missing head while records exist. */
    assert_int_equal(stele_io_unlink(io, "audit/audit.head"), 0);
    assert_detected(io, "a deleted head", true, "audit.head is missing");
    store(io, "audit/audit.head", own, ol);

    verdict v;
    assert_intact(io, &v, NULL);

    /* A record deleted by someone holding the key, who recomputed every hash and
     * re-signed the head: the gap in the sequence still shows. */
    memcpy(out, l, loff[0]);
    memcpy(out + loff[0], l + loff[1], llen - loff[1]);
    store(io, last, out, llen - (loff[1] - loff[0]));
    rechain(io);
    assert_detected(io, "a record deleted and the chain recomputed", true,
                    "sequence not consecutive");

    /* A single-segment trail whose head is gone. */
    stele_io *one = fresh_trail(3, NULL);
    assert_int_equal(stele_io_unlink(one, "audit/audit.head"), 0);
    assert_detected(one, "the head of a one-segment trail deleted", true, "audit.head is missing");
    stele_io_destroy(one);
    free(head);
    free(own);
    free(f1);
    free(out);
    free(m);
    free(l);
    stele_io_destroy(io2);
    stele_io_destroy(io);
}

/* ---- crash windows ---------------------------------------------------------------- */

typedef struct {
    uint64_t recover_seq;
    char recover_details[256];
    uint64_t count;
} recover_scan;

static int find_recover(void *ctx, const stele_audit_event *e)
{
    recover_scan *s = ctx;
    if (!strcmp(e->action, "audit.recover")) {
        s->recover_seq = e->seq;
        snprintf(s->recover_details, sizeof(s->recover_details), "%s", e->details);
        s->count++;
    }
    return 0;
}

static void test_crash_windows_recover(void **state)
{
    (void)state;
    stele_io *io = fresh_trail(3, NULL);
    uint8_t *head = NULL, *log = NULL;
    size_t hl = load(io, "audit/audit.head", &head);
    stele_audit_head h0;
    assert_int_equal(stele_audit_head_read(io, "audit", pk, &h0), 0);
    /* Three more records durable, the head still before them (as if the machine died
     * between a batch's fsync and its head): kept, then an audit.recover record. */
    stele_audit *a = open_with(io, NULL);
    append_n(a, 100, 3);
    stele_audit_close(a);
    store(io, "audit/audit.head", head, hl);
    verdict v;
    stele_audit_summary sum;
    assert_intact(io, &v, &sum); /* beyond the head: not a problem */
    assert_int_equal(sum.beyond_head, 3);
    a = open_with(io, NULL);
    stele_audit_close(a);
    assert_intact(io, &v, &sum);
    assert_int_equal(sum.beyond_head, 0);
    recover_scan rs = {0};
    stele_audit_filter all = {.checkpoints = true};
    assert_int_equal(stele_audit_list_dir(io, "audit", &all, find_recover, &rs), 0);
    assert_int_equal(rs.count, 1);
    assert_int_equal(rs.recover_seq, sum.last_seq);
    char want[64];
    snprintf(want, sizeof(want), "kept records %" PRIu64 "..%" PRIu64, h0.seq + 1, h0.seq + 3);
    if (!strstr(rs.recover_details, want))
        fail_msg("recover details \"%s\" lack \"%s\"", rs.recover_details, want);
    assert_int_equal(v.events, 7);

    /* A torn record at the end (a crash mid-write, never acknowledged): cut on open. */
    char last[64];
    seg_path(1, last, sizeof(last));
    size_t len = load(io, last, &log);
    /* longer than the recover record that will be written over its start */
    size_t tl = 15 + 3000;
    uint8_t *torn = malloc(len + tl);
    memcpy(torn, log, len);
    memcpy(torn + len, "STAR\x01\x00\x05\x00garbage", 15);
    memset(torn + len + 15, 0x5a, tl - 15);
    store(io, last, torn, len + tl);
    assert_intact(io, &v, &sum);
    assert_int_equal(sum.torn_bytes, tl);
    a = open_with(io, NULL);
    stele_audit_close(a);
    assert_intact(io, &v, &sum);
    assert_int_equal(sum.torn_bytes, 0);
    memset(&rs, 0, sizeof(rs));
    assert_int_equal(stele_audit_list_dir(io, "audit", &all, find_recover, &rs), 0);
    assert_int_equal(rs.count, 2);
    assert_non_null(strstr(rs.recover_details, "cut 3015 bytes"));
    free(torn);
    free(log);
    free(head);
    stele_io_destroy(io);
}

static void test_too_much_beyond_head_refused(void **state)
{
    (void)state;
    stele_io *io = fresh_trail(1, NULL);
    uint8_t *head = NULL;
    size_t hl = load(io, "audit/audit.head", &head);
    /* More bytes beyond the head than one group commit can write. */
    char details[STELE_AUDIT_MAX_DETAILS + 1];
    memset(details, 'd', STELE_AUDIT_MAX_DETAILS);
    details[STELE_AUDIT_MAX_DETAILS] = '\0';
    stele_audit *a = open_with(io, NULL);
    for (int i = 0; i < 800; i++)
        assert_int_equal(stele_audit_append(a, "x", "y", "z", "ok", details, NULL), 0);
    stele_audit_close(a);
    store(io, "audit/audit.head", head, hl);
    assert_detected(io, "800 records appended beyond the signed head", true,
                    "beyond the signed head");
    free(head);
    stele_io_destroy(io);
}

/* ---- group commit ----------------------------------------------------------------- */

#define GC_THREADS 16
#define GC_APPENDS 1000

typedef struct {
    stele_audit *a;
    int id;
    uint64_t seqs[GC_APPENDS];
} gc_arg;

static void *gc_main(void *p)
{
    gc_arg *g = p;
    for (int i = 0; i < GC_APPENDS; i++) {
        char subject[32];
        snprintf(subject, sizeof(subject), "device:t%d-%d", g->id, i);
        if (stele_audit_append(g->a, "enroll", "device.enroll", subject, "ok", "", &g->seqs[i]))
            g->seqs[i] = 0;
    }
    return NULL;
}

typedef struct {
    uint64_t n;
    char **subject; /* by seq */
    uint64_t records;
} seq_map;

static int check_subject(void *ctx, const stele_audit_event *e)
{
    seq_map *m = ctx;
    m->records++;
    assert_int_equal(e->seq, m->records);
    if (e->seq < m->n && m->subject[e->seq]) {
        if (strcmp(m->subject[e->seq], e->subject) != 0)
            fail_msg("record %" PRIu64 ": subject %s, acknowledged with %s", e->seq, e->subject,
                     m->subject[e->seq]);
        free(m->subject[e->seq]);
        m->subject[e->seq] = NULL; /* seen */
    }
    return 0;
}

/* A disk whose fsync takes time (file and directory alike), over the fault file
 * system: group commit exists to share that time, and an in-memory fsync has none. */
#define SLOW_FSYNC_US 200

typedef struct {
    struct stele_file base;
    stele_file *inner;
} slow_file;

typedef struct {
    stele_io base;
    stele_io *inner;
} slow_io;

static const struct stele_io_ops slow_ops;
static const struct stele_io_ops slow_file_ops;

static int slow_open(stele_io *io, const char *path, int flags, stele_file **out)
{
    slow_file *f = calloc(1, sizeof(*f));
    if (!f)
        return -ENOMEM;
    int rc = stele_io_open(((slow_io *)io)->inner, path, flags, &f->inner);
    if (rc) {
        free(f);
        return rc;
    }
    f->base.ops = &slow_file_ops;
    *out = &f->base;
    return 0;
}
static int slow_pread(stele_file *f, void *buf, size_t len, uint64_t off, size_t *nread)
{
    return stele_io_pread(((slow_file *)f)->inner, buf, len, off, nread);
}
static int slow_pwrite(stele_file *f, const void *buf, size_t len, uint64_t off)
{
    return stele_io_pwrite(((slow_file *)f)->inner, buf, len, off);
}
static int slow_fsync(stele_file *f)
{
    usleep(SLOW_FSYNC_US);
    return stele_io_fsync(((slow_file *)f)->inner);
}
static int slow_size(stele_file *f, uint64_t *size)
{
    return stele_io_size(((slow_file *)f)->inner, size);
}
static int slow_truncate(stele_file *f, uint64_t size)
{
    return stele_io_truncate(((slow_file *)f)->inner, size);
}
static int slow_close(stele_file *f)
{
    int rc = stele_io_close(((slow_file *)f)->inner);
    free(f);
    return rc;
}
static int slow_rename(stele_io *io, const char *from, const char *to)
{
    return stele_io_rename(((slow_io *)io)->inner, from, to);
}
static int slow_unlink(stele_io *io, const char *path)
{
    return stele_io_unlink(((slow_io *)io)->inner, path);
}
static int slow_mkdir(stele_io *io, const char *path)
{
    return stele_io_mkdir(((slow_io *)io)->inner, path);
}
static int slow_rmdir(stele_io *io, const char *path)
{
    return stele_io_rmdir(((slow_io *)io)->inner, path);
}
static int slow_fsync_dir(stele_io *io, const char *path)
{
    usleep(SLOW_FSYNC_US);
    return stele_io_fsync_dir(((slow_io *)io)->inner, path);
}
static int slow_list(stele_io *io, const char *dir, stele_io_list_fn fn, void *ctx)
{
    return stele_io_list(((slow_io *)io)->inner, dir, fn, ctx);
}
static int slow_exists(stele_io *io, const char *path)
{
    return stele_io_exists(((slow_io *)io)->inner, path);
}
static void slow_destroy(stele_io *io)
{
    (void)io; /* the wrapper lives on the test's stack; the inner io is the test's */
}
static const struct stele_io_ops slow_ops = {
    .open = slow_open,
    .rename = slow_rename,
    .unlink = slow_unlink,
    .mkdir = slow_mkdir,
    .rmdir = slow_rmdir,
    .fsync_dir = slow_fsync_dir,
    .list = slow_list,
    .exists = slow_exists,
    .destroy = slow_destroy,
};
static const struct stele_io_ops slow_file_ops = {
    .pread = slow_pread,
    .pwrite = slow_pwrite,
    .fsync = slow_fsync,
    .size = slow_size,
    .truncate = slow_truncate,
    .close = slow_close,
};

/* 16 threads × 1000 appends on `io`; checks sequences and the trail on `check_io`;
 * returns the fsyncs issued and fills *st. */
static uint64_t group_commit_run(stele_io *io, stele_io *check_io, stele_audit_stats *st)
{
    stele_audit *a = open_with(io, NULL);
    uint64_t fsyncs0 = stele_io_fault_op_count(check_io, STELE_FAULT_OP_FSYNC);
    static gc_arg args[GC_THREADS];
    pthread_t th[GC_THREADS];
    for (int t = 0; t < GC_THREADS; t++) {
        args[t] = (gc_arg){.a = a, .id = t};
        pthread_create(&th[t], NULL, gc_main, &args[t]);
    }
    for (int t = 0; t < GC_THREADS; t++)
        pthread_join(th[t], NULL);
    uint64_t fsyncs = stele_io_fault_op_count(check_io, STELE_FAULT_OP_FSYNC) - fsyncs0;
    stele_audit_stats_get(a, st);
    stele_audit_close(a);

    seq_map m = {.n = 2 * GC_THREADS * GC_APPENDS};
    m.subject = calloc(m.n, sizeof(char *));
    for (int t = 0; t < GC_THREADS; t++)
        for (int i = 0; i < GC_APPENDS; i++) {
            uint64_t s = args[t].seqs[i];
            if (s == 0 || s >= m.n)
                fail_msg("thread %d append %d: sequence %" PRIu64, t, i, s);
            if (m.subject[s])
                fail_msg("sequence %" PRIu64 " given twice", s);
            char buf[32];
            snprintf(buf, sizeof(buf), "device:t%d-%d", t, i);
            m.subject[s] = strdup(buf);
        }
    verdict v;
    memset(&v, 0, sizeof(v));
    int problems =
        stele_audit_verify(check_io, "audit", pk, NULL, on_problem, check_subject, &m, NULL);
    if (problems)
        fail_msg("%d problems: %s", problems, v.last);
    for (uint64_t s = 0; s < m.n; s++)
        if (m.subject[s])
            fail_msg("acknowledged record %" PRIu64 " (%s) missing", s, m.subject[s]);
    assert_int_equal(st->events, GC_THREADS * GC_APPENDS);
    /* Every record besides the events is a checkpoint: sequences are consecutive. */
    assert_int_equal(m.records, st->events + st->checkpoints);
    assert_int_equal(st->last_seq, m.records);
    free(m.subject);
    return fsyncs;
}

static void test_group_commit(void **state)
{
    (void)state;
    stele_audit_stats st;
    /* In-memory fsyncs take no time: little to share, yet everything must hold. */
    stele_io *io;
    assert_int_equal(stele_io_fault_create(11, &io), 0);
    uint64_t fast = group_commit_run(io, io, &st);
    fprintf(stderr,
            "group commit, instant fsync: %d appends, %" PRIu64 " batches (%.1f per batch), "
            "%" PRIu64 " fsyncs\n",
            GC_THREADS * GC_APPENDS, st.batches, (double)st.events / (double)st.batches, fast);
    assert_int_equal(fast, 3 * st.batches); /* segment, head tmp file, directory */
    stele_io_destroy(io);
    /* A disk whose fsync takes 200 µs: appends queue behind it and share it. */
    assert_int_equal(stele_io_fault_create(12, &io), 0);
    slow_io slow = {.base = {.ops = &slow_ops}, .inner = io};
    uint64_t fsyncs = group_commit_run(&slow.base, io, &st);
    fprintf(stderr,
            "group commit, %d us fsync: %d appends, %" PRIu64 " batches (%.1f per batch), "
            "%" PRIu64 " fsyncs, %" PRIu64 " checkpoints\n",
            SLOW_FSYNC_US, GC_THREADS * GC_APPENDS, st.batches,
            (double)st.events / (double)st.batches, fsyncs, st.checkpoints);
    assert_int_equal(fsyncs, 3 * st.batches);
    assert_true(st.batches < GC_THREADS * GC_APPENDS / 4);
    assert_true(fsyncs < GC_THREADS * GC_APPENDS / 2);
    stele_io_destroy(io);
}

/* ---- crash during concurrent appends ---------------------------------------------- */

#define CR_THREADS 6
#define CR_MAX 4000

typedef struct {
    stele_audit *a;
    int id, cycle;
    int issued;
    uint64_t acked_seq[CR_MAX];
    volatile int stop;
} cr_arg;

static void *cr_main(void *p)
{
    cr_arg *c = p;
    while (!c->stop && c->issued < CR_MAX) {
        char subject[48];
        uint64_t seq = 0;
        snprintf(subject, sizeof(subject), "c%d-t%d-%d", c->cycle, c->id, c->issued);
        int i = c->issued++;
        if (stele_audit_append(c->a, "enroll", "device.enroll", subject, "ok", "", &seq) != 0)
            break;
        c->acked_seq[i] = seq;
    }
    return NULL;
}

typedef struct {
    uint64_t seed;
    uint64_t records, last_recover;
    uint64_t *subject_seq; /* by (cycle, thread, i): the seq its record has, or 0 */
    int unacked_seen;
    uint64_t unacked_max_seq;
} cr_scan;

static size_t cr_index(int cycle, int t, int i)
{
    return ((size_t)cycle * CR_THREADS + (size_t)t) * CR_MAX + (size_t)i;
}

static int cr_event(void *ctx, const stele_audit_event *e)
{
    cr_scan *s = ctx;
    s->records++;
    if (!strcmp(e->action, "audit.recover"))
        s->last_recover = e->seq;
    int cycle, t, i;
    if (!e->checkpoint && sscanf(e->subject, "c%d-t%d-%d", &cycle, &t, &i) == 3) {
        if (cycle < 0 || cycle > 2 || t < 0 || t >= CR_THREADS || i < 0 || i >= CR_MAX)
            fail_msg("seed %" PRIu64 ": invented record %s", s->seed, e->subject);
        if (s->subject_seq[cr_index(cycle, t, i)])
            fail_msg("seed %" PRIu64 ": record %s twice", s->seed, e->subject);
        s->subject_seq[cr_index(cycle, t, i)] = e->seq;
    }
    return 0;
}

static uint64_t first_seed(void)
{
    const char *env = getenv("STELE_TEST_SEED");
    return env ? strtoull(env, NULL, 10) : 1;
}

static void test_power_cut_during_concurrent_appends(void **state)
{
    (void)state;
    static cr_arg args[3][CR_THREADS];
    int rounds = getenv("STELE_CRASH_SEEDS") ? atoi(getenv("STELE_CRASH_SEEDS")) : 24;
    uint64_t seed0 = first_seed();
    int adopted_rounds = 0, cut_rounds = 0;
    for (int round = 0; round < rounds; round++) {
        uint64_t seed = seed0 + (uint64_t)round, rng = seed;
        stele_io *fault;
        assert_int_equal(stele_io_fault_create(seed, &fault), 0);
        /* fsyncs that take time, so that cuts land inside batches */
        slow_io slow = {.base = {.ops = &slow_ops}, .inner = fault};
        stele_io *io = &slow.base;
        stele_audit_options o = {.segment_bytes = 4096 + test_rng_next(&rng) % 60000,
                                 .checkpoint_records = 1 + (uint32_t)(test_rng_next(&rng) % 50)};
        stele_audit *a = open_with(io, &o);
        cr_scan s = {.seed = seed};
        s.subject_seq = calloc(cr_index(3, 0, 0), sizeof(uint64_t));
        for (int cycle = 0; cycle < 3; cycle++) {
            pthread_t th[CR_THREADS];
            for (int t = 0; t < CR_THREADS; t++) {
                memset(&args[cycle][t], 0, sizeof(args[cycle][t]));
                args[cycle][t].a = a;
                args[cycle][t].id = t;
                args[cycle][t].cycle = cycle;
                pthread_create(&th[t], NULL, cr_main, &args[cycle][t]);
            }
            usleep((useconds_t)(500 + test_rng_next(&rng) % 15000));
            stele_io_fault_power_cut(fault, (enum stele_fault_cut_mode)(test_rng_next(&rng) % 3));
            for (int t = 0; t < CR_THREADS; t++)
                args[cycle][t].stop = 1;
            for (int t = 0; t < CR_THREADS; t++)
                pthread_join(th[t], NULL);
            /* Failed for good once an append failed (a later one may still succeed when
             * nothing was in flight at the cut: the machine "rebooted" under it). */
            if (stele_audit_health(a))
                assert_int_equal(stele_audit_append(a, "x", "y", "z", "ok", "", NULL), -EIO);
            stele_audit_close(a);
            stele_audit_summary before;
            verdict v;
            memset(&v, 0, sizeof(v));
            stele_audit_verify(io, "audit", pk, NULL, NULL, NULL, NULL, &before);
            char err[512] = "";
            a = NULL;
            int rc = stele_audit_open_with(io, "audit", sk, &o, &a, err, sizeof(err));
            if (rc)
                fail_msg("seed %" PRIu64 " cycle %d: reopen failed: %s", seed, cycle, err);
            if (before.beyond_head)
                adopted_rounds++;
            if (before.torn_bytes)
                cut_rounds++;
            /* Everything acknowledged is there, the chain verifies. */
            memset(s.subject_seq, 0, cr_index(3, 0, 0) * sizeof(uint64_t));
            s.records = 0;
            s.last_recover = 0;
            memset(&v, 0, sizeof(v));
            int problems =
                stele_audit_verify(io, "audit", pk, NULL, on_problem, cr_event, &s, NULL);
            /* the trail is open: that is fine, verify only reads */
            if (problems)
                fail_msg("seed %" PRIu64 " cycle %d: %s", seed, cycle, v.last);
            for (int c = 0; c <= cycle; c++)
                for (int t = 0; t < CR_THREADS; t++)
                    for (int i = 0; i < args[c][t].issued; i++) {
                        uint64_t want = args[c][t].acked_seq[i];
                        uint64_t got = s.subject_seq[cr_index(c, t, i)];
                        if (want && got != want)
                            fail_msg("seed %" PRIu64 " cycle %d: acknowledged c%d-t%d-%d (seq "
                                     "%" PRIu64 ") found at %" PRIu64,
                                     seed, cycle, c, t, i, want, got);
                        /* Kept though never acknowledged: a recover record follows it. */
                        if (!want && got && s.last_recover < got)
                            fail_msg("seed %" PRIu64 ": unacknowledged record %" PRIu64
                                     " kept without an audit.recover after it",
                                     seed, got);
                    }
        }
        stele_audit_close(a);
        free(s.subject_seq);
        stele_io_destroy(fault);
    }
    fprintf(stderr,
            "crash test: seeds %" PRIu64 "..%" PRIu64 ": %d reopens kept records beyond the "
            "head, %d cut a torn tail\n",
            seed0, seed0 + (uint64_t)rounds - 1, adopted_rounds, cut_rounds);
    if (rounds >= 24) /* both recovery paths must have been exercised */
        assert_true(adopted_rounds > 0 && cut_rounds > 0);
}

static void test_io_errors_fail_for_good(void **state)
{
    (void)state;
    for (int op = 0; op < 2; op++) {
        stele_io *io = fresh_trail(5, NULL);
        stele_audit *a = open_with(io, NULL);
        uint64_t seq = 0;
        assert_int_equal(stele_audit_append(a, "a", "b", "c", "ok", "", &seq), 0);
        stele_io_fault_fail_after(io, op ? STELE_FAULT_OP_FSYNC : STELE_FAULT_OP_WRITE, 1, ENOSPC);
        assert_int_equal(stele_audit_append(a, "a", "b", "lost", "ok", "", NULL), -ENOSPC);
        assert_int_equal(stele_audit_health(a), -ENOSPC);
        /* never retried, even though the disk would take it now */
        assert_int_equal(stele_audit_append(a, "a", "b", "c", "ok", "", NULL), -EIO);
        assert_int_equal(stele_audit_checkpoint(a), -EIO);
        stele_audit_close(a);
        a = open_with(io, NULL);
        assert_int_equal(stele_audit_append(a, "a", "b", "after", "ok", "", NULL), 0);
        stele_audit_close(a);
        verdict v;
        stele_audit_summary sum;
        assert_intact(io, &v, &sum);
        assert_true(sum.last_seq > seq);
        stele_io_destroy(io);
    }
}

/* ---- checkpoints ------------------------------------------------------------------ */

typedef struct {
    uint64_t cps[64];
    size_t n;
    uint64_t last_seq;
    bool last_was_checkpoint;
} cp_scan;

static int scan_checkpoints(void *ctx, const stele_audit_event *e)
{
    cp_scan *s = ctx;
    if (e->checkpoint && s->n < 64)
        s->cps[s->n++] = e->seq;
    s->last_seq = e->seq;
    s->last_was_checkpoint = e->checkpoint;
    return 0;
}

static void test_checkpoints(void **state)
{
    (void)state;
    /* Every 10 records, no time rule: 35 events → checkpoints at 11, 22, 33. */
    stele_audit_options o = {.checkpoint_records = 10, .checkpoint_ns = -1, .segment_bytes = 900};
    stele_io *io = fresh_trail(35, &o);
    cp_scan s = {0};
    stele_audit_summary sum;
    assert_int_equal(
        stele_audit_verify(io, "audit", pk, NULL, on_problem, scan_checkpoints, &s, &sum), 0);
    assert_int_equal(s.n, 3);
    assert_int_equal(s.cps[0], 11);
    assert_int_equal(s.cps[1], 22);
    assert_int_equal(s.cps[2], 33);
    assert_int_equal(sum.checkpoints, 3);
    assert_int_equal(sum.last_checkpoint_seq, 32);
    /* A forced checkpoint covers the rest; another with nothing new adds nothing. */
    stele_audit *a = open_with(io, &o);
    assert_int_equal(stele_audit_checkpoint(a), 0);
    assert_int_equal(stele_audit_checkpoint(a), 0);
    stele_audit_close(a);
    memset(&s, 0, sizeof(s));
    assert_int_equal(
        stele_audit_verify(io, "audit", pk, NULL, on_problem, scan_checkpoints, &s, &sum), 0);
    assert_int_equal(s.n, 4);
    assert_int_equal(s.cps[3], 39);
    assert_int_equal(sum.last_checkpoint_seq, 38);

    /* A bad signature in the last checkpoint, with the chain and head recomputed around
     * it (as by someone holding the key who forgot to re-sign): only that is wrong. (Any
     * earlier one would take every later checkpoint with it: they sign the chain.) */
    char path[64];
    uint8_t *img = NULL;
    int nseg = count_segments(io);
    bool done = false;
    for (int no = 1; no <= nseg && !done; no++) {
        seg_path(no, path, sizeof(path));
        size_t len = load(io, path, &img);
        size_t off[64];
        size_t n = record_offsets(img, len, off, 64);
        for (size_t k = 0; k < n && !done; k++)
            if (img[off[k] + 4] == 2 && (img[off[k] + 8] | img[off[k] + 9] << 8) == 39) {
                img[off[k] + REC_HEADER + 5] ^= 1;
                store(io, path, img, len);
                done = true;
            }
        free(img);
    }
    assert_true(done);
    rechain(io);
    verdict v;
    int problems = verify(io, &v);
    if (problems != 1 || !strstr(v.last, "record 39: checkpoint signature invalid"))
        fail_msg("%d problems, the last: %s", problems, v.last);
    char err[512];
    assert_int_equal(open_rc(io, &o, err, sizeof(err)), -EBADMSG); /* it is in the tail */
    stele_io_destroy(io);

    /* The time rule, on a fake clock: a checkpoint once T has passed since the last. */
    fake_now = 5000 * NS;
    stele_audit_options t = {.checkpoint_records = 1000, .now_ns = fake_clock};
    io = fresh_trail(0, &t);
    a = open_with(io, &t);
    append_n(a, 0, 1); /* no checkpoint yet in this trail: one is due at once */
    append_n(a, 1, 3);
    fake_now += 59 * NS;
    append_n(a, 4, 1);
    memset(&s, 0, sizeof(s));
    stele_audit_verify(io, "audit", pk, NULL, on_problem, scan_checkpoints, &s, NULL);
    if (s.n != 1)
        fail_msg("%zu checkpoints: %" PRIu64 " %" PRIu64 " %" PRIu64, s.n, s.cps[0], s.cps[1],
                 s.cps[2]);
    assert_int_equal(s.cps[0], 2);
    fake_now += 2 * NS; /* 61 s since the checkpoint */
    append_n(a, 5, 1);
    stele_audit_close(a);
    memset(&s, 0, sizeof(s));
    stele_audit_verify(io, "audit", pk, NULL, on_problem, scan_checkpoints, &s, NULL);
    assert_int_equal(s.n, 2);
    assert_true(s.last_was_checkpoint);
    assert_int_equal(s.cps[1], 8);
    stele_io_destroy(io);
}

static void test_verify_with_public_key_only(void **state)
{
    (void)state;
    stele_io *io;
    uint8_t ksk[64], kpk[32], pk2[32];
    char err[512];
    assert_int_equal(stele_io_fault_create(21, &io), 0);
    assert_int_equal(stele_audit_key_load_or_create(io, "audit", ksk, kpk, err, sizeof(err)), 0);
    stele_audit *a = NULL;
    stele_audit_options o = {.checkpoint_records = 10, .segment_bytes = 1000};
    assert_int_equal(stele_audit_open_with(io, "audit", ksk, &o, &a, err, sizeof(err)), 0);
    append_n(a, 0, 25);
    stele_audit_close(a);
    /* What a copy off the machine holds: no secret key. */
    assert_int_equal(stele_io_unlink(io, "audit/audit.key"), 0);
    assert_int_equal(stele_audit_pubkey_load(io, "audit", pk2, err, sizeof(err)), 0);
    assert_memory_equal(pk2, kpk, 32);
    verdict v;
    stele_audit_summary sum;
    memset(&v, 0, sizeof(v));
    assert_int_equal(stele_audit_verify(io, "audit", pk2, NULL, on_problem, NULL, &v, &sum), 0);
    assert_true(sum.checkpoints >= 2);
    /* Without the head it verifies up to its last checkpoint, and says the head is gone. */
    assert_int_equal(stele_io_unlink(io, "audit/audit.head"), 0);
    memset(&v, 0, sizeof(v));
    stele_audit_summary sum2;
    assert_int_equal(stele_audit_verify(io, "audit", pk2, NULL, on_problem, NULL, &v, &sum2), 1);
    assert_non_null(strstr(v.last, "audit.head is missing"));
    assert_int_equal(sum2.last_checkpoint_seq, sum.last_checkpoint_seq);
    assert_int_equal(sum2.checkpoints, sum.checkpoints);
    /* The wrong public key: every checkpoint fails. */
    uint8_t wrong_pk[32], wrong_sk[64];
    crypto_sign_keypair(wrong_pk, wrong_sk);
    memset(&v, 0, sizeof(v));
    assert_int_equal(stele_audit_verify(io, "audit", wrong_pk, NULL, on_problem, NULL, &v, NULL),
                     (int)sum.checkpoints + 1);
    stele_io_destroy(io);
}

/* ---- head export ------------------------------------------------------------------ */

typedef struct {
    char path[64];
    uint8_t *img;
    size_t len;
} saved_file;

static void test_head_export_detects_rollback(void **state)
{
    (void)state;
    stele_audit_options o = {.segment_bytes = 900};
    stele_io *io = fresh_trail(10, &o);
    stele_audit *a = open_with(io, &o);
    char old_text[STELE_AUDIT_HEAD_TEXT_MAX], text[STELE_AUDIT_HEAD_TEXT_MAX];
    assert_true(stele_audit_head_export(a, old_text, sizeof(old_text)) > 0);
    stele_audit_close(a);
    /* Save the whole trail as it is now. */
    saved_file saved[16];
    int nsaved = count_segments(io);
    for (int i = 0; i < nsaved; i++) {
        seg_path(i + 1, saved[i].path, sizeof(saved[i].path));
        saved[i].len = load(io, saved[i].path, &saved[i].img);
    }
    snprintf(saved[nsaved].path, sizeof(saved[nsaved].path), "audit/audit.head");
    saved[nsaved].len = load(io, saved[nsaved].path, &saved[nsaved].img);
    nsaved++;
    a = open_with(io, &o);
    append_n(a, 10, 10);
    assert_true(stele_audit_head_export(a, text, sizeof(text)) > 0);
    stele_audit_close(a);
    stele_audit_head expect, old;
    assert_int_equal(stele_audit_head_parse(text, pk, &expect), 0);
    assert_int_equal(stele_audit_head_parse(old_text, pk, &old), 0);
    verdict v;
    assert_int_equal(verify_full(io, &v, &expect, NULL), 0);
    assert_int_equal(verify_full(io, &v, &old, NULL), 0);
    stele_audit_head read_back;
    assert_int_equal(stele_audit_head_read(io, "audit", pk, &read_back), 0);
    assert_memory_equal(&read_back, &expect, sizeof(expect));
    /* Roll everything back to the saved state: consistent and signed, so only the
     * exported head shows it. */
    for (int k = count_segments(io); k > nsaved - 1; k--) {
        char p[64];
        seg_path(k, p, sizeof(p));
        assert_int_equal(stele_io_unlink(io, p), 0);
    }
    for (int i = 0; i < nsaved; i++) {
        store(io, saved[i].path, saved[i].img, saved[i].len);
        free(saved[i].img);
    }
    assert_intact(io, &v, NULL);
    assert_int_equal(verify_full(io, &v, &expect, NULL), 1);
    assert_non_null(strstr(v.last, "rolled back"));
    /* ... and grown again past it with other records: a forked history. */
    a = open_with(io, &o);
    append_n(a, 500, 15);
    stele_audit_close(a);
    stele_audit_summary sum;
    assert_int_equal(verify_full(io, &v, &expect, &sum), 1);
    assert_true(sum.last_seq > expect.seq);
    assert_non_null(strstr(v.last, "rolled back or replaced"));
    /* Forged or damaged heads do not parse. */
    char *h = strstr(text, "hash=") + 5;
    *h = *h == '0' ? '1' : '0';
    assert_int_equal(stele_audit_head_parse(text, pk, &expect), -EBADMSG);
    assert_int_equal(stele_audit_head_parse("stele-audit-head v2 seq=1 hash=zz", pk, &expect),
                     -EINVAL);
    assert_int_equal(stele_audit_head_format(&old, text, 20), -ENOSPC);
    stele_io_destroy(io);
}

/* ---- listing ---------------------------------------------------------------------- */

#define LM_EVENTS 600

typedef struct {
    uint64_t seq;
    int64_t time_ns;
    char actor[16], action[24], subject[24];
} model_event;

static model_event lm[LM_EVENTS];

static bool model_match(const stele_audit_filter *f, const model_event *e)
{
    if (f->subject && strcmp(e->subject, f->subject))
        return false;
    if (f->subject_prefix && strncmp(e->subject, f->subject_prefix, strlen(f->subject_prefix)))
        return false;
    if (f->action && strcmp(e->action, f->action))
        return false;
    if (f->action_prefix && strncmp(e->action, f->action_prefix, strlen(f->action_prefix)))
        return false;
    if (f->actor && strcmp(e->actor, f->actor))
        return false;
    if (f->since_ns && e->time_ns < f->since_ns)
        return false;
    if (f->until_ns && e->time_ns >= f->until_ns)
        return false;
    if (e->seq <= f->after_seq || (f->before_seq && e->seq >= f->before_seq))
        return false;
    return true;
}

typedef struct {
    uint64_t seqs[2 * LM_EVENTS];
    size_t n;
    bool bad;
} list_out;

static int collect(void *ctx, const stele_audit_event *e)
{
    list_out *o = ctx;
    if (o->n == 2 * LM_EVENTS)
        return 1;
    /* fields must be the ones appended */
    if (!e->checkpoint) {
        size_t k = 0;
        while (k < LM_EVENTS && lm[k].seq != e->seq)
            k++;
        if (k == LM_EVENTS || strcmp(lm[k].subject, e->subject) || strcmp(lm[k].actor, e->actor) ||
            strcmp(lm[k].action, e->action) || lm[k].time_ns != e->time_ns)
            o->bad = true;
    }
    o->seqs[o->n++] = e->seq;
    return 0;
}

static void test_list_filters_against_model(void **state)
{
    (void)state;
    static const char *actors[] = {"admin", "server", "token:7"};
    static const char *actions[] = {"device.add", "device.revoke", "device.enroll", "token.create",
                                    "auth.denied"};
    uint64_t rng = 77;
    fake_now = 1700000000 * NS;
    stele_audit_options o = {.segment_bytes = 2048, .checkpoint_records = 9, .now_ns = fake_clock};
    stele_io *io;
    assert_int_equal(stele_io_fault_create(3, &io), 0);
    stele_audit *a = open_with(io, &o);
    for (int i = 0; i < LM_EVENTS; i++) {
        /* Mostly forward, sometimes the clock steps back. */
        fake_now += (int64_t)(test_rng_next(&rng) % (10 * NS));
        if (test_rng_next(&rng) % 40 == 0)
            fake_now -= 30 * NS;
        model_event *e = &lm[i];
        snprintf(e->actor, sizeof(e->actor), "%s", actors[test_rng_next(&rng) % 3]);
        snprintf(e->action, sizeof(e->action), "%s", actions[test_rng_next(&rng) % 5]);
        int dev = (int)(test_rng_next(&rng) % 12);
        if (test_rng_next(&rng) % 4)
            snprintf(e->subject, sizeof(e->subject), "device:d%d", dev);
        else
            snprintf(e->subject, sizeof(e->subject), "token:%d", dev);
        e->time_ns = fake_now;
        assert_int_equal(stele_audit_append(a, e->actor, e->action, e->subject, "ok", "", &e->seq),
                         0);
    }
    assert_true(count_segments(io) > 10);
    int64_t t0 = lm[0].time_ns, t1 = fake_now;
    uint64_t last = lm[LM_EVENTS - 1].seq;
    static const char *prefixes[] = {"device.", "token.", "auth.", "device.en", "x"};
    static const char *subject_prefixes[] = {"device:", "token:", "device:d1", "nothing"};
    for (int trial = 0; trial < 3000; trial++) {
        stele_audit_filter f = {0};
        char subject[24];
        if (test_rng_next(&rng) % 3 == 0) {
            snprintf(subject, sizeof(subject), "device:d%d", (int)(test_rng_next(&rng) % 13));
            f.subject = subject;
        }
        if (test_rng_next(&rng) % 5 == 0)
            f.subject_prefix = subject_prefixes[test_rng_next(&rng) % 4];
        if (test_rng_next(&rng) % 4 == 0)
            f.action = actions[test_rng_next(&rng) % 5];
        if (test_rng_next(&rng) % 4 == 0)
            f.action_prefix = prefixes[test_rng_next(&rng) % 5];
        if (test_rng_next(&rng) % 4 == 0)
            f.actor = actors[test_rng_next(&rng) % 3];
        /* bounds anywhere, or exactly on an event's time (the edge cases) */
        if (test_rng_next(&rng) % 3 == 0)
            f.since_ns =
                test_rng_next(&rng) % 2
                    ? lm[test_rng_next(&rng) % LM_EVENTS].time_ns
                    : t0 - NS + (int64_t)(test_rng_next(&rng) % (uint64_t)(t1 - t0 + 2 * NS));
        if (test_rng_next(&rng) % 3 == 0)
            f.until_ns =
                test_rng_next(&rng) % 2
                    ? lm[test_rng_next(&rng) % LM_EVENTS].time_ns
                    : t0 - NS + (int64_t)(test_rng_next(&rng) % (uint64_t)(t1 - t0 + 2 * NS));
        if (test_rng_next(&rng) % 3 == 0)
            f.after_seq = test_rng_next(&rng) % (last + 2);
        if (test_rng_next(&rng) % 4 == 0)
            f.before_seq = 1 + test_rng_next(&rng) % (last + 2);
        if (test_rng_next(&rng) % 2)
            f.limit = test_rng_next(&rng) % 25;
        f.newest_first = test_rng_next(&rng) % 2;

        list_out want = {0};
        for (int k = 0; k < LM_EVENTS; k++) {
            int i = f.newest_first ? LM_EVENTS - 1 - k : k;
            if (model_match(&f, &lm[i]) && (!f.limit || want.n < f.limit))
                want.seqs[want.n++] = lm[i].seq;
        }
        for (int via = 0; via < 2; via++) {
            static list_out got;
            memset(&got, 0, sizeof(got));
            int rc = via ? stele_audit_list_dir(io, "audit", &f, collect, &got)
                         : stele_audit_list(a, &f, collect, &got);
            assert_int_equal(rc, 0);
            if (got.bad)
                fail_msg("trial %d: a listed event's fields differ from the appended", trial);
            if (got.n != want.n || memcmp(got.seqs, want.seqs, want.n * sizeof(uint64_t)))
                fail_msg("trial %d (%s, %s): listed %zu events, the model %zu (first %" PRIu64
                         " vs %" PRIu64 ")",
                         trial, via ? "dir" : "open", f.newest_first ? "newest" : "oldest", got.n,
                         want.n, got.n ? got.seqs[0] : 0, want.n ? want.seqs[0] : 0);
        }
    }
    /* Checkpoints are listed only when asked for, and are exactly the other sequences. */
    stele_audit_filter f = {.checkpoints = true};
    static list_out all;
    memset(&all, 0, sizeof(all));
    assert_int_equal(stele_audit_list(a, &f, collect, &all), 0);
    stele_audit_stats st;
    stele_audit_stats_get(a, &st);
    assert_int_equal(all.n, st.last_seq);
    assert_true(st.checkpoints >= LM_EVENTS / 9);
    stele_audit_close(a);
    /* A damaged sealed segment makes a listing that reads it fail, not skip it. */
    char p2[64];
    seg_path(2, p2, sizeof(p2));
    uint8_t *img = NULL;
    size_t len = load(io, p2, &img);
    img[SEG_HEADER + 30] ^= 1;
    store(io, p2, img, len);
    memset(&all, 0, sizeof(all));
    assert_int_equal(stele_audit_list_dir(io, "audit", &f, collect, &all), -EBADMSG);
    free(img);
    stele_io_destroy(io);
}

typedef struct {
    stele_audit *a;
    volatile int stop;
    int lists;
} lister_arg;

static int consecutive(void *ctx, const stele_audit_event *e)
{
    uint64_t *next = ctx;
    if (e->seq != *next)
        fail_msg("listing while appending: record %" PRIu64 " where %" PRIu64 " was expected",
                 e->seq, *next);
    (*next)++;
    return 0;
}

static void *lister_main(void *p)
{
    lister_arg *l = p;
    stele_audit_filter f = {.checkpoints = true};
    while (!l->stop) {
        uint64_t next = 1;
        assert_int_equal(stele_audit_list(l->a, &f, consecutive, &next), 0);
        stele_audit_stats st;
        stele_audit_stats_get(l->a, &st);
        assert_true(next - 1 <= st.last_seq);
        l->lists++;
    }
    return NULL;
}

static void test_list_while_appending(void **state)
{
    (void)state;
    stele_audit_options o = {.segment_bytes = 4096, .checkpoint_records = 50};
    stele_io *io = fresh_trail(0, &o);
    stele_audit *a = open_with(io, &o);
    lister_arg l = {.a = a};
    pthread_t th;
    pthread_create(&th, NULL, lister_main, &l);
    append_n(a, 0, 3000);
    l.stop = 1;
    pthread_join(th, NULL);
    assert_true(l.lists > 0);
    stele_audit_close(a);
    verdict v;
    assert_intact(io, &v, NULL);
    stele_io_destroy(io);
}

/* ---- key, time --------------------------------------------------------------------- */

static void test_key_files(void **state)
{
    (void)state;
    stele_io *io;
    uint8_t s1[64], p1[32], s2[64], p2[32], p3[32];
    char err[512], text[160];
    assert_int_equal(stele_io_fault_create(9, &io), 0);
    assert_int_equal(stele_audit_key_load_or_create(io, "audit", s1, p1, err, sizeof(err)), 0);
    assert_int_equal(stele_audit_key_load_or_create(io, "audit", s2, p2, err, sizeof(err)), 0);
    assert_memory_equal(s1, s2, 64);
    assert_memory_equal(p1, p2, 32);
    /* A lost audit.pub is derived again. */
    assert_int_equal(stele_io_unlink(io, "audit/audit.pub"), 0);
    assert_int_equal(stele_audit_key_load_or_create(io, "audit", s2, p2, err, sizeof(err)), 0);
    assert_int_equal(stele_audit_pubkey_load(io, "audit", p3, err, sizeof(err)), 0);
    assert_memory_equal(p1, p3, 32);
    /* Every damaged byte of the key file is refused. */
    uint8_t *key = NULL;
    size_t klen = load(io, "audit/audit.key", &key);
    assert_int_equal(klen, 104);
    for (size_t i = 0; i < klen; i++) {
        key[i] ^= 4;
        store(io, "audit/audit.key", key, klen);
        if (stele_audit_key_load_or_create(io, "audit", s2, p2, err, sizeof(err)) != -EBADMSG)
            fail_msg("damaged byte %zu of audit.key accepted", i);
        key[i] ^= 4;
    }
    store(io, "audit/audit.key", key, klen);
    /* A public key that does not match, a lost secret key beside a public one. */
    uint8_t opk[32], osk[64];
    crypto_sign_keypair(opk, osk);
    stele_audit_pubkey_format(opk, text, sizeof(text));
    store(io, "audit/audit.pub", (const uint8_t *)text, strlen(text));
    assert_int_equal(stele_audit_key_load_or_create(io, "audit", s2, p2, err, sizeof(err)),
                     -EBADMSG);
    assert_non_null(strstr(err, "does not match"));
    assert_int_equal(stele_io_unlink(io, "audit/audit.key"), 0);
    assert_int_equal(stele_audit_key_load_or_create(io, "audit", s2, p2, err, sizeof(err)),
                     -EBADMSG);
    assert_non_null(strstr(err, "lost"));
    /* Parsing: the file's line, bare hex; a typo is caught by the check digits. */
    assert_int_equal(stele_audit_pubkey_parse(text, p3), 0);
    assert_memory_equal(p3, opk, 32);
    char hex[65];
    sodium_bin2hex(hex, sizeof(hex), opk, 32);
    assert_int_equal(stele_audit_pubkey_parse(hex, p3), 0);
    assert_memory_equal(p3, opk, 32);
    char *digit = text + strlen("stele-audit-public-key v1 ") + 3;
    *digit = *digit == 'a' ? 'b' : 'a';
    assert_int_equal(stele_audit_pubkey_parse(text, p3), -EBADMSG);
    assert_int_equal(stele_audit_pubkey_parse("abc", p3), -EINVAL);
    free(key);
    stele_io_destroy(io);
}

static void test_time_syntax(void **state)
{
    (void)state;
    int64_t ns, now = 1750000000 * NS;
    assert_int_equal(stele_audit_time_parse("1700000000", now, &ns), 0);
    assert_int_equal(ns, 1700000000 * NS);
    assert_int_equal(stele_audit_time_parse("1700000000.000000123", now, &ns), 0);
    assert_int_equal(ns, 1700000000 * NS + 123);
    assert_int_equal(stele_audit_time_parse("2023-11-14T22:13:20Z", now, &ns), 0);
    assert_int_equal(ns, 1700000000 * NS);
    assert_int_equal(stele_audit_time_parse("2023-11-15T00:13:20.5+02:00", now, &ns), 0);
    assert_int_equal(ns, 1700000000 * NS + NS / 2);
    assert_int_equal(stele_audit_time_parse("1h30m", now, &ns), 0);
    assert_int_equal(ns, now - 5400 * NS);
    assert_int_equal(stele_audit_time_parse("2d", now, &ns), 0);
    assert_int_equal(ns, now - 2 * 86400 * NS);
    assert_int_equal(stele_audit_time_parse("500ms", now, &ns), 0);
    assert_int_equal(ns, now - NS / 2);
    assert_int_equal(stele_audit_time_parse("1w", now, &ns), 0);
    assert_int_equal(ns, now - 7 * 86400 * NS);
    const char *bad[] = {"",   "h",  "1x", "2023-11-14T22:13:20", "2023-11-14T22:13:20+2",
                         "1.", "-5", "1h-"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (stele_audit_time_parse(bad[i], now, &ns) == 0)
            fail_msg("\"%s\" parsed as a time", bad[i]);
    char buf[40];
    stele_audit_time_format(1700000000 * NS + 5, buf, sizeof(buf));
    assert_string_equal(buf, "2023-11-14T22:13:20.000000005Z");
    assert_int_equal(stele_audit_time_parse(buf, now, &ns), 0);
    assert_int_equal(ns, 1700000000 * NS + 5);
}

/* ---- test vector (docs/format/audit.md) ------------------------------------------- */

/* Prints a vector in the document's layout, ready to paste into docs/format/audit.md. */
static void print_doc_vector(const char *name, const uint8_t *b, size_t n)
{
    printf("<!-- vector:%s -->\n```\n", name);
    test_print_hex(stdout, b, n, 16, " ");
    printf("```\n<!-- end -->\n");
}

static void test_vector_matches_the_doc(void **state)
{
    (void)state;
    uint8_t seed[32], vpk[32], vsk[64], want[4096];
    memset(seed, 1, sizeof(seed));
    crypto_sign_seed_keypair(vpk, vsk, seed);
    fake_now = 1700000000 * NS;
    stele_audit_options o = {.checkpoint_records = 2, .checkpoint_ns = -1, .now_ns = fake_clock};
    stele_io *io;
    stele_audit *a = NULL;
    char err[256];
    assert_int_equal(stele_io_fault_create(1, &io), 0);
    assert_int_equal(stele_audit_open_with(io, "audit", vsk, &o, &a, err, sizeof(err)), 0);
    assert_int_equal(stele_audit_append(a, "server", "server.start", "server", "ok", "", NULL), 0);
    fake_now += NS;
    assert_int_equal(stele_audit_append(a, "token:1", "device.revoke", "device:pump-7", "ok",
                                        "reason=lost", NULL),
                     0);
    stele_audit_close(a);
    uint8_t *seg = NULL, *head = NULL;
    size_t slen = load(io, "audit/audit-000001.log", &seg);
    size_t hlen = load(io, "audit/audit.head", &head);
    if (getenv("STELE_PRINT_VECTOR")) {
        print_doc_vector("audit-segment", seg, slen);
        print_doc_vector("audit-head", head, hlen);
    }
    size_t wlen = test_doc_vector("audit.md", "vector:audit-segment", want, sizeof(want));
    assert_int_equal(wlen, slen);
    assert_memory_equal(want, seg, slen);
    wlen = test_doc_vector("audit.md", "vector:audit-head", want, sizeof(want));
    assert_int_equal(wlen, hlen);
    assert_memory_equal(want, head, hlen);
    /* and it verifies with the vector's public key */
    verdict v;
    memset(&v, 0, sizeof(v));
    assert_int_equal(stele_audit_verify(io, "audit", vpk, NULL, on_problem, on_event, &v, NULL), 0);
    assert_int_equal(v.records, 3);
    assert_int_equal(v.checkpoints, 1);
    free(seg);
    free(head);
    stele_io_destroy(io);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    crypto_sign_keypair(pk, sk);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_written_trail_verifies),
        cmocka_unit_test(test_fields_bounded),
        cmocka_unit_test(test_every_edit_detected),
        cmocka_unit_test(test_records_deleted_moved_truncated),
        cmocka_unit_test(test_crash_windows_recover),
        cmocka_unit_test(test_too_much_beyond_head_refused),
        cmocka_unit_test(test_group_commit),
        cmocka_unit_test(test_power_cut_during_concurrent_appends),
        cmocka_unit_test(test_io_errors_fail_for_good),
        cmocka_unit_test(test_checkpoints),
        cmocka_unit_test(test_verify_with_public_key_only),
        cmocka_unit_test(test_head_export_detects_rollback),
        cmocka_unit_test(test_list_filters_against_model),
        cmocka_unit_test(test_list_while_appending),
        cmocka_unit_test(test_key_files),
        cmocka_unit_test(test_time_syntax),
        cmocka_unit_test(test_vector_matches_the_doc),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
