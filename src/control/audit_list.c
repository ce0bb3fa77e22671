/*
 * audit_list.c — querying the audit trail: filters over records streamed from disk,
 * oldest or newest first, and the time syntax the CLI and the HTTP API share.
 *
 * Design: a listing never holds the trail's lock while it reads. It takes a snapshot of
 * the segment table and of the last acknowledged sequence, then reads files: records
 * up to that sequence were fsync'd before the head named them and are never written
 * again, so a reader bounded by it never meets a partial record whatever the writer is
 * doing. Sealed segments whose sequence range or time range (from the next segment's
 * header) misses the filter are skipped without being opened. Newest-first scans each
 * segment forward — records have no back pointers — keeping only the positions of the
 * last `limit` matches, then re-reads those few backwards; memory stays bounded by the
 * limit, not by the segment.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "control/audit_internal.h"

static bool prefixed(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static bool event_matches(const stele_audit_filter *f, const stele_audit_event *e)
{
    if (e->checkpoint && !f->checkpoints)
        return false;
    if (f->subject && strcmp(e->subject, f->subject) != 0)
        return false;
    if (f->subject_prefix && !prefixed(e->subject, f->subject_prefix))
        return false;
    if (f->action && strcmp(e->action, f->action) != 0)
        return false;
    if (f->action_prefix && !prefixed(e->action, f->action_prefix))
        return false;
    if (f->actor && strcmp(e->actor, f->actor) != 0)
        return false;
    if (f->since_ns && e->time_ns < f->since_ns)
        return false;
    if (f->until_ns && e->time_ns >= f->until_ns)
        return false;
    return true;
}

/* Positions of matching records in one segment, newest-first mode: a ring of the last
 * `cap` (cap 0: all, growing). */
typedef struct {
    uint64_t off, seq;
} match_pos;

typedef struct {
    match_pos *pos;
    size_t cap, count, start; /* ring: count entries from start */
    bool bounded;
} match_ring;

static int ring_push(match_ring *g, uint64_t off, uint64_t seq)
{
    if (g->bounded) {
        if (g->count < g->cap) {
            g->pos[(g->start + g->count++) % g->cap] = (match_pos){off, seq};
        } else {
            g->pos[g->start] = (match_pos){off, seq};
            g->start = (g->start + 1) % g->cap;
        }
        return 0;
    }
    if (g->count == g->cap) {
        size_t cap = g->cap ? g->cap * 2 : 256;
        match_pos *grown = realloc(g->pos, cap * sizeof(*grown));
        if (!grown)
            return -ENOMEM;
        g->pos = grown;
        g->cap = cap;
    }
    g->pos[g->count++] = (match_pos){off, seq};
    return 0;
}

typedef struct {
    stele_io *io;
    const char *dir;
    const stele_audit_filter *f;
    stele_audit_event_fn fn;
    void *ctx;
    uint64_t lo, hi; /* sequence bounds, inclusive */
    size_t emitted;
    bool stop;
    audit_reader *r;
} list_run;

/* Scans one segment forward: oldest-first emits matches, newest-first collects them in
 * the ring. `seg_last` is the last sequence the segment must hold. */
static int scan_segment(list_run *L, uint64_t no, uint64_t seg_last, match_ring *ring)
{
    audit_reader *r = L->r;
    int rc = audit__reader_open(r, L->io, L->dir, no);
    if (rc)
        goto out;
    uint64_t need = seg_last < L->hi ? seg_last : L->hi;
    for (;;) {
        audit_read_status st = audit__reader_next(r);
        if (st == AUDIT_READ_IOERR) {
            rc = r->err;
            goto out;
        }
        if (st != AUDIT_READ_RECORD)
            break;
        const audit_record *rec = &r->rec;
        if (rec->seq > L->hi)
            break;
        if (rec->seq < L->lo)
            continue;
        stele_audit_event e;
        audit__record_event(rec, &e);
        if (!event_matches(L->f, &e))
            continue;
        if (ring) {
            rc = ring_push(ring, rec->offset, rec->seq);
            if (rc)
                goto out;
            continue;
        }
        if (L->fn(L->ctx, &e) != 0 || (L->f->limit && ++L->emitted >= L->f->limit)) {
            L->stop = true;
            break;
        }
    }
    /* Ended (or broke) before a record it must hold: damaged or cut, never in flight. */
    if (!L->stop && r->seq < need)
        rc = -EBADMSG;
out:
    audit__reader_close(r);
    return rc;
}

/* Re-reads the collected records newest first. */
static int emit_backwards(list_run *L, uint64_t no, match_ring *ring)
{
    audit_reader *r = L->r;
    int rc = audit__reader_open(r, L->io, L->dir, no);
    r->backward = true;
    for (size_t k = ring->count; rc == 0 && k-- > 0 && !L->stop;) {
        const match_pos *p = &ring->pos[ring->bounded ? (ring->start + k) % ring->cap : k];
        audit__reader_seek(r, p->off, p->seq);
        audit_read_status st = audit__reader_next(r);
        if (st != AUDIT_READ_RECORD) {
            rc = st == AUDIT_READ_IOERR ? r->err : -EBADMSG;
            break;
        }
        stele_audit_event e;
        audit__record_event(&r->rec, &e);
        if (L->fn(L->ctx, &e) != 0 || (L->f->limit && ++L->emitted >= L->f->limit))
            L->stop = true;
    }
    audit__reader_close(r);
    return rc;
}

/* Can segment i be skipped without reading it? */
static bool segment_outside(const list_run *L, const audit_segment_info *s, uint64_t last)
{
    if (last < s->first_seq || last < L->lo || s->first_seq > L->hi)
        return true;
    if (!s->known)
        return false;
    if (L->f->since_ns && s->max_ns < L->f->since_ns)
        return true;
    if (L->f->until_ns && s->min_ns >= L->f->until_ns)
        return true;
    return false;
}

int audit__list(stele_io *io, const char *dir, const audit_segment_info *segs, size_t nsegs,
                uint64_t last_seq, const stele_audit_filter *f, stele_audit_event_fn fn, void *ctx)
{
    list_run L = {.io = io, .dir = dir, .f = f, .fn = fn, .ctx = ctx};
    L.lo = f->after_seq + 1;
    L.hi = last_seq;
    if (f->before_seq && f->before_seq - 1 < L.hi)
        L.hi = f->before_seq - 1;
    if (L.lo > L.hi || L.lo == 0 || nsegs == 0)
        return 0;
    L.r = malloc(sizeof(*L.r));
    if (!L.r)
        return -ENOMEM;
    int rc = 0;
    for (size_t k = 0; k < nsegs && rc == 0 && !L.stop; k++) {
        size_t i = f->newest_first ? nsegs - 1 - k : k;
        uint64_t seg_last = i + 1 < nsegs ? segs[i + 1].first_seq - 1 : last_seq;
        if (segment_outside(&L, &segs[i], seg_last))
            continue;
        if (!f->newest_first) {
            rc = scan_segment(&L, segs[i].no, seg_last, NULL);
            continue;
        }
        match_ring ring = {0};
        if (f->limit) {
            ring.bounded = true;
            ring.cap = f->limit - L.emitted;
            ring.pos = malloc(ring.cap * sizeof(*ring.pos));
            if (!ring.pos) {
                rc = -ENOMEM;
                break;
            }
        }
        rc = scan_segment(&L, segs[i].no, seg_last, &ring);
        if (rc == 0)
            rc = emit_backwards(&L, segs[i].no, &ring);
        free(ring.pos);
    }
    free(L.r);
    return rc;
}

/* Lists a directory offline: segments from their headers, bounded by the head. */
int stele_audit_list_dir(stele_io *io, const char *dir, const stele_audit_filter *f,
                         stele_audit_event_fn fn, void *ctx)
{
    uint64_t *nos = NULL;
    size_t n = 0;
    stele_audit_head head;
    const char *why = NULL;
    int rc = audit__head_load(io, dir, NULL, &head, &why);
    if (rc)
        return rc;
    rc = audit__segments_list(io, dir, &nos, &n);
    if (rc)
        return rc;
    audit_segment_info *segs = calloc(n ? n : 1, sizeof(*segs));
    audit_reader *r = malloc(sizeof(*r));
    if (!segs || !r)
        rc = -ENOMEM;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        rc = audit__reader_open(r, io, dir, nos[i]);
        if (rc == 0 && r->hdr.no != nos[i])
            rc = -EBADMSG;
        if (rc == 0) {
            segs[i] = (audit_segment_info){.no = nos[i], .first_seq = r->hdr.first_seq};
            if (i > 0) {
                segs[i - 1].min_ns = r->hdr.prev_min_ns;
                segs[i - 1].max_ns = r->hdr.prev_max_ns;
                segs[i - 1].known = true;
            }
        }
        audit__reader_close(r);
    }
    if (rc == 0)
        rc = audit__list(io, dir, segs, n, head.seq, f, fn, ctx);
    free(r);
    free(segs);
    free(nos);
    return rc;
}

/* ---- times ---------------------------------------------------------------------- */

#define NS_PER_S INT64_C(1000000000)

/* Digits then up to nine fraction digits: seconds → ns. */
static int parse_seconds(const char *p, const char **end, int64_t *ns)
{
    int64_t secs = 0, frac = 0, scale = NS_PER_S / 10;
    if (*p < '0' || *p > '9')
        return -EINVAL;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (secs > (INT64_MAX / NS_PER_S - 9) / 10)
            return -ERANGE;
        secs = secs * 10 + (*p - '0');
    }
    if (*p == '.') {
        p++;
        if (*p < '0' || *p > '9')
            return -EINVAL;
        for (; *p >= '0' && *p <= '9'; p++) {
            frac += (*p - '0') * scale;
            scale /= 10;
        }
    }
    *end = p;
    *ns = secs * NS_PER_S + frac;
    return 0;
}

static int parse_rfc3339(const char *text, int64_t *ns)
{
    struct tm tm = {0};
    const char *p = strptime(text, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!p)
        return -EINVAL;
    int64_t frac = 0, scale = NS_PER_S / 10;
    if (*p == '.') {
        p++;
        if (*p < '0' || *p > '9')
            return -EINVAL;
        for (; *p >= '0' && *p <= '9'; p++) {
            frac += (*p - '0') * scale;
            scale /= 10;
        }
    }
    int64_t offset = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if ((*p == '+' || *p == '-') && p[1] >= '0' && p[1] <= '9' && p[2] >= '0' &&
               p[2] <= '9' && p[3] == ':' && p[4] >= '0' && p[4] <= '9' && p[5] >= '0' &&
               p[5] <= '9') {
        int hh = (p[1] - '0') * 10 + (p[2] - '0'), mm = (p[4] - '0') * 10 + (p[5] - '0');
        if (hh > 23 || mm > 59)
            return -EINVAL;
        offset = (hh * 3600 + mm * 60) * (*p == '+' ? 1 : -1);
        p += 6;
    } else {
        return -EINVAL;
    }
    if (*p)
        return -EINVAL;
    *ns = ((int64_t)timegm(&tm) - offset) * NS_PER_S + frac;
    return 0;
}

/* "1h30m", "90s", "2d", "1w", "500ms": a total in ns. */
static int parse_duration(const char *p, int64_t *ns)
{
    static const struct {
        const char *unit;
        int64_t ns;
    } units[] = {{"ms", NS_PER_S / 1000}, {"s", NS_PER_S},         {"m", 60 * NS_PER_S},
                 {"h", 3600 * NS_PER_S},  {"d", 86400 * NS_PER_S}, {"w", 7 * 86400 * NS_PER_S}};
    int64_t total = 0;
    if (!*p)
        return -EINVAL;
    while (*p) {
        int64_t n = 0;
        if (*p < '0' || *p > '9')
            return -EINVAL;
        for (; *p >= '0' && *p <= '9'; p++) {
            if (n > (INT64_MAX - 9) / 10)
                return -ERANGE;
            n = n * 10 + (*p - '0');
        }
        size_t u = 0;
        for (; u < sizeof(units) / sizeof(units[0]); u++) {
            size_t len = strlen(units[u].unit);
            /* "m" must not swallow the "m" of "ms" */
            if (strncmp(p, units[u].unit, len) == 0 && !(len == 1 && p[0] == 'm' && p[1] == 's'))
                break;
        }
        if (u == sizeof(units) / sizeof(units[0]))
            return -EINVAL;
        if (n > (INT64_MAX - total) / units[u].ns)
            return -ERANGE;
        total += n * units[u].ns;
        p += strlen(units[u].unit);
    }
    *ns = total;
    return 0;
}

int stele_audit_time_parse(const char *text, int64_t now_ns, int64_t *ns)
{
    const char *end = NULL;
    int64_t v = 0;
    if (!text || !*text)
        return -EINVAL;
    if (parse_seconds(text, &end, &v) == 0 && *end == '\0') {
        *ns = v;
        return 0;
    }
    if (parse_rfc3339(text, &v) == 0) {
        *ns = v;
        return 0;
    }
    int rc = parse_duration(text, &v);
    if (rc)
        return rc;
    *ns = now_ns - v;
    return 0;
}

void stele_audit_time_format(int64_t ns, char *buf, size_t cap)
{
    int64_t secs = ns / NS_PER_S, frac = ns % NS_PER_S;
    if (frac < 0) {
        frac += NS_PER_S;
        secs--;
    }
    time_t t = (time_t)secs;
    struct tm tm;
    char date[32];
    gmtime_r(&t, &tm);
    strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf, cap, "%s.%09lldZ", date, (long long)frac);
}
