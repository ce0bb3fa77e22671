/*
 * audit_verify.c — offline verification of a whole audit trail with the public key
 * (stele_audit_verify; `stele audit verify`).
 *
 * Design: one pass over every segment in order, streaming through a fixed buffer, so a
 * trail of any size verifies in bounded memory; read-only, so it runs beside a server
 * that appends. It keeps going after a problem — the next segment's header says where
 * its chain starts — so one damaged record does not hide a deleted segment further on.
 *
 * What must hold: segments numbered 1, 2, … without gaps, each header sound and naming
 * its own number; each segment continuing the chain where the previous one ended, and
 * its header's copy of the previous segment's time range true; every record chained,
 * consecutive and well formed; every checkpoint signature valid; the signed head naming
 * a record the trail holds, with that hash; an exported head (when given) still held.
 *
 * Beside a running server: the head is read first, so every record up to it is complete
 * on disk. Whole records after it and a partial record at the very end of the last
 * segment are an append in flight (or a crash the next open recovers): counted in the
 * summary, not problems. If the head has not moved by the end of the pass, though, no
 * append was in flight, and more than one group commit beyond the head — or beyond-head
 * records outside the last segment — cannot come from a crash: that is a problem.
 */
#include <errno.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control/audit_internal.h"

typedef struct {
    stele_audit_problem_fn problem;
    void *ctx;
    int problems;
} verify_report;

static void report(verify_report *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void report(verify_report *v, const char *fmt, ...)
{
    char msg[512];
    va_list args;
    va_start(args, fmt);
    vsnprintf(msg, sizeof(msg), fmt, args);
    va_end(args);
    v->problems++;
    if (v->problem)
        v->problem(v->ctx, msg);
}

int stele_audit_verify(stele_io *io, const char *dir, const uint8_t public_key[32],
                       const stele_audit_head *expect, stele_audit_problem_fn problem,
                       stele_audit_event_fn event, void *ctx, stele_audit_summary *summary)
{
    verify_report v = {.problem = problem, .ctx = ctx};
    stele_audit_summary sum = {0};
    stele_audit_head head = {0};
    const char *why = NULL;
    uint64_t *nos = NULL;
    size_t n = 0;
    audit_reader *r = NULL;
    static const uint8_t zeros[AUDIT_HASH];

    int hrc = audit__head_load(io, dir, public_key, &head, &why);
    if (hrc && hrc != -ENOENT && hrc != -EBADMSG)
        return hrc;
    if (hrc == -EBADMSG)
        report(&v, AUDIT_HEAD_NAME ": %s", why);
    bool have_head = hrc == 0;
    int rc = audit__segments_list(io, dir, &nos, &n);
    if (rc)
        return rc;
    r = malloc(sizeof(*r));
    if (!r) {
        free(nos);
        return -ENOMEM;
    }

    /* Chain state where the next segment must start. */
    bool chained = true;
    uint64_t run_seq = 0;
    uint8_t run_hash[AUDIT_HASH] = {0};
    int64_t prev_min = 0, prev_max = 0;
    uint64_t expect_no = 1;
    bool head_found =
        have_head && head.seq == 0 && sodium_memcmp(head.hash, zeros, AUDIT_HASH) == 0;
    bool expect_found = expect && expect->seq == 0 && sodium_memcmp(expect->hash, zeros, 32) == 0;
    bool events_on = event != NULL;
    uint64_t beyond_bytes = 0;
    bool beyond_outside_tail = false;

    for (size_t i = 0; i < n; i++) {
        char name[48];
        bool last = i + 1 == n;
        audit__segment_name(nos[i], name, sizeof(name));
        if (nos[i] != expect_no) {
            if (nos[i] == expect_no + 1)
                report(&v, "segment %llu is missing (deleted)", (unsigned long long)expect_no);
            else
                report(&v, "segments %llu to %llu are missing (deleted)",
                       (unsigned long long)expect_no, (unsigned long long)(nos[i] - 1));
            chained = false;
        }
        expect_no = nos[i] + 1;
        rc = audit__reader_open(r, io, dir, nos[i]);
        if (rc) {
            if (rc == -EBADMSG)
                report(&v, "%s: %s", name, r->why);
            else
                report(&v, "%s: cannot read: %s", name, strerror(-rc));
            audit__reader_close(r);
            chained = false;
            continue;
        }
        sum.segments++;
        const audit_segment_header *h = &r->hdr;
        if (h->no != nos[i]) {
            report(&v, "%s: its header says segment %llu (segment files renamed or reordered)",
                   name, (unsigned long long)h->no);
        } else if (chained && (h->first_seq != run_seq + 1 ||
                               sodium_memcmp(h->prev_hash, run_hash, AUDIT_HASH) != 0)) {
            report(&v,
                   "%s: does not continue the chain where the previous segment ends (record "
                   "%llu): segments replaced or reordered, or records cut",
                   name, (unsigned long long)run_seq);
        } else if (chained && (h->prev_min_ns != prev_min || h->prev_max_ns != prev_max)) {
            report(&v, "%s: its header misstates the time range of the previous segment", name);
        }
        int64_t seg_min = INT64_MAX, seg_max = INT64_MIN;
        bool segment_ok = false;
        for (;;) {
            audit_read_status st = audit__reader_next(r);
            if (st == AUDIT_READ_END) {
                segment_ok = true;
                break;
            }
            if (st == AUDIT_READ_IOERR) {
                report(&v, "%s: cannot read: %s", name, strerror(-r->err));
                break;
            }
            if (st != AUDIT_READ_RECORD) {
                /* Past the head in the last segment: an append in flight or a crash. */
                uint64_t size = 0;
                if (last && have_head && r->seq >= head.seq) {
                    if (stele_io_size(r->f, &size) == 0 && size > r->off)
                        sum.torn_bytes = size - r->off;
                    segment_ok = true;
                } else if (st == AUDIT_READ_TORN) {
                    report(&v, "%s: truncated record at byte %llu, after record %llu", name,
                           (unsigned long long)r->off, (unsigned long long)r->seq);
                } else {
                    report(&v, "%s: byte %llu, after record %llu: %s", name,
                           (unsigned long long)r->off, (unsigned long long)r->seq, r->why);
                }
                break;
            }
            const audit_record *rec = &r->rec;
            sum.records++;
            if (rec->kind == AUDIT_KIND_CHECKPOINT) {
                uint8_t msg[AUDIT_CHECKPOINT_MSG];
                audit__checkpoint_message(rec->seq - 1, rec->prev_hash, msg);
                if (crypto_sign_verify_detached(rec->sig, msg, sizeof(msg), public_key) == 0) {
                    sum.checkpoints++;
                    sum.last_checkpoint_seq = rec->seq - 1;
                } else {
                    report(&v,
                           "%s: record %llu: checkpoint signature invalid (not signed by this "
                           "audit key)",
                           name, (unsigned long long)rec->seq);
                }
            }
            if (have_head && rec->seq == head.seq) {
                head_found = sodium_memcmp(rec->hash, head.hash, AUDIT_HASH) == 0;
                if (!head_found)
                    report(&v, "%s: record %llu differs from the one the signed head names", name,
                           (unsigned long long)rec->seq);
            }
            if (expect && rec->seq == expect->seq)
                expect_found = sodium_memcmp(rec->hash, expect->hash, AUDIT_HASH) == 0;
            if (have_head && rec->seq > head.seq) {
                sum.beyond_head++;
                beyond_bytes += rec->len;
                if (!last)
                    beyond_outside_tail = true;
            }
            if (rec->time_ns < seg_min)
                seg_min = rec->time_ns;
            if (rec->time_ns > seg_max)
                seg_max = rec->time_ns;
            if (events_on) {
                stele_audit_event e;
                audit__record_event(rec, &e);
                if (event(ctx, &e) != 0)
                    events_on = false; /* the caller has seen enough; keep verifying */
            }
        }
        chained = segment_ok;
        run_seq = r->seq;
        memcpy(run_hash, r->hash, AUDIT_HASH);
        prev_min = seg_min;
        prev_max = seg_max;
        audit__reader_close(r);
    }
    sum.last_seq = run_seq;

    if (hrc == -ENOENT && sum.records > 0)
        report(&v,
               AUDIT_HEAD_NAME " is missing (a copy without it verifies up to its last "
                               "checkpoint, record %llu)",
               (unsigned long long)sum.last_checkpoint_seq);
    if (have_head) {
        sum.head_seq = head.seq;
        if (!head_found && head.seq > run_seq && !chained)
            report(&v,
                   "the signed head names record %llu but the trail is readable only to record "
                   "%llu (see the damage above)",
                   (unsigned long long)head.seq, (unsigned long long)run_seq);
        else if (!head_found && head.seq > run_seq)
            report(&v,
                   "the trail ends at record %llu but the signed head names record %llu (records "
                   "cut off)",
                   (unsigned long long)run_seq, (unsigned long long)head.seq);
        else if (!head_found && sum.records == 0)
            report(&v, "the signed head names record %llu but the trail is empty",
                   (unsigned long long)head.seq);
        stele_audit_head later;
        bool idle =
            audit__head_load(io, dir, public_key, &later, &why) == 0 && later.seq == head.seq;
        if (idle && (beyond_bytes > AUDIT_BATCH_BUFFER || beyond_outside_tail))
            report(&v,
                   "%llu records lie beyond the signed head (record %llu), more than a crash "
                   "leaves: records appended without the audit key",
                   (unsigned long long)sum.beyond_head, (unsigned long long)head.seq);
    }
    if (expect && !expect_found)
        report(&v,
               "the exported head (record %llu) is not in the trail: it was rolled back or "
               "replaced",
               (unsigned long long)expect->seq);
    free(r);
    free(nos);
    if (summary)
        *summary = sum;
    return v.problems;
}
