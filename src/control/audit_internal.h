/*
 * audit_internal.h — what the audit trail's files share (src/control/audit*.c): the
 * on-disk layout constants, the encoders of segment headers and heads, and the
 * streaming segment reader that open, verify and list all walk records with. The
 * format itself is described at the top of audit_format.c and in docs/format/audit.md.
 */
#ifndef STELE_CONTROL_AUDIT_INTERNAL_H
#define STELE_CONTROL_AUDIT_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "stele/audit.h"
#include "stele/io.h"

#define AUDIT_VERSION 2u
#define AUDIT_HASH 32
#define AUDIT_SIG 64

/* Records */
#define AUDIT_RECORD_MAGIC "STAR"
#define AUDIT_KIND_EVENT 1u
#define AUDIT_KIND_CHECKPOINT 2u
#define AUDIT_RECORD_HEADER 24
#define AUDIT_FIELDS 5
#define AUDIT_MAX_BODY (AUDIT_FIELDS * 2 + 4 * STELE_AUDIT_MAX_FIELD + STELE_AUDIT_MAX_DETAILS)
#define AUDIT_MAX_RECORD (AUDIT_RECORD_HEADER + AUDIT_MAX_BODY + AUDIT_HASH)
#define AUDIT_CHECKPOINT_RECORD (AUDIT_RECORD_HEADER + AUDIT_SIG + AUDIT_HASH)
#define AUDIT_CHECKPOINT_DOMAIN "stele/audit-checkpoint/v2"

/* Segment files: "audit-" + at least six digits + ".log", each opening with a header. */
#define AUDIT_SEGMENT_MAGIC "STAS"
#define AUDIT_SEGMENT_HEADER 80
#define AUDIT_SEGMENT_PREFIX "audit-"
#define AUDIT_SEGMENT_SUFFIX ".log"

/* Head */
#define AUDIT_HEAD_MAGIC "STAH"
#define AUDIT_HEAD_NAME "audit.head"
#define AUDIT_HEAD_SIGNED 48
#define AUDIT_HEAD_BYTES (AUDIT_HEAD_SIGNED + AUDIT_SIG)
#define AUDIT_HEAD_DOMAIN "stele/audit-head/v2"

/* Group commit: one batch (one pwrite, one fsync, one head) holds at most this many
 * event bytes and records. Past a megabyte a larger write saves no further fsyncs worth
 * having, and the cap bounds what a crash can leave beyond the signed head — which is
 * how recovery tells a crash (at most one batch beyond) from records appended by hand. */
#define AUDIT_MAX_BATCH_EVENT_BYTES (1u << 20)
#define AUDIT_MAX_BATCH_EVENTS 4096u
/* The batch buffer: events plus, at worst, a checkpoint after every event and one more. */
#define AUDIT_BATCH_BUFFER                                                                         \
    (AUDIT_MAX_BATCH_EVENT_BYTES + (AUDIT_MAX_BATCH_EVENTS + 2) * AUDIT_CHECKPOINT_RECORD)

/* Readers fetch segments in chunks of this size: many records per read, bounded memory
 * whatever the segment size (a chunk holds 20 of the largest records). */
#define AUDIT_READ_CHUNK (64u << 10)

/* Paths: a data directory path plus the longest file name. */
#define AUDIT_PATH_MAX 4096

/* Who the trail names as actor of its own records. */
#define AUDIT_SELF_ACTOR "server"

typedef struct {
    uint64_t no;        /* segment number, from 1, as in the file name */
    uint64_t first_seq; /* sequence of its first record */
    uint8_t prev_hash[AUDIT_HASH];
    int64_t prev_min_ns, prev_max_ns; /* time range of the previous segment (0 for no. 1) */
} audit_segment_header;

void audit__chain_hash(const uint8_t prev[AUDIT_HASH], const uint8_t *rec, size_t len,
                       uint8_t out[AUDIT_HASH]);
void audit__segment_header_encode(const audit_segment_header *h, uint8_t out[AUDIT_SEGMENT_HEADER]);
/* NULL when good, else why not. */
const char *audit__segment_header_decode(const uint8_t in[AUDIT_SEGMENT_HEADER],
                                         audit_segment_header *h);
void audit__segment_name(uint64_t no, char *buf, size_t cap);
/* Segment numbers in dir, ascending, in a malloc'd array (caller frees; may be NULL when
 * *n == 0). -ENOENT when dir does not exist. */
int audit__segments_list(stele_io *io, const char *dir, uint64_t **nos, size_t *n);

/* The message a checkpoint signs: domain, 0, the covered sequence and hash. */
#define AUDIT_CHECKPOINT_MSG (sizeof(AUDIT_CHECKPOINT_DOMAIN) + 8 + AUDIT_HASH)
void audit__checkpoint_message(uint64_t seq, const uint8_t hash[AUDIT_HASH],
                               uint8_t msg[AUDIT_CHECKPOINT_MSG]);

void audit__head_encode(uint64_t seq, const uint8_t hash[AUDIT_HASH], const uint8_t sk[64],
                        uint8_t out[AUDIT_HEAD_BYTES]);
/* Reads dir/audit.head: 0, -ENOENT, other errno, or -EBADMSG with *why. The signature is
 * checked when pk is given. */
int audit__head_load(stele_io *io, const char *dir, const uint8_t *pk, stele_audit_head *h,
                     const char **why);

/* ---- streaming segment reader ------------------------------------------------------ */

typedef enum {
    AUDIT_READ_RECORD, /* r->rec holds the next record */
    AUDIT_READ_END,    /* clean end of the segment */
    AUDIT_READ_TORN,   /* bytes at the end that are not a whole record */
    AUDIT_READ_BAD,    /* a damaged record at r->off: r->why */
    AUDIT_READ_IOERR,  /* r->err */
} audit_read_status;

typedef struct {
    uint64_t seq;
    int64_t time_ns;
    unsigned kind;
    uint64_t offset; /* in the segment file */
    uint32_t len;    /* whole record */
    uint8_t hash[AUDIT_HASH];
    uint8_t prev_hash[AUDIT_HASH];
    uint8_t sig[AUDIT_SIG]; /* checkpoints */
    char field[AUDIT_FIELDS][STELE_AUDIT_MAX_DETAILS + 1];
} audit_record;

typedef struct {
    stele_file *f;
    uint64_t no;
    audit_segment_header hdr;
    uint8_t *buf; /* AUDIT_READ_CHUNK bytes holding file bytes [buf_off, buf_off + buf_len) */
    uint64_t buf_off;
    size_t buf_len;
    uint64_t off;             /* next record */
    uint64_t seq;             /* chain state: the last record read (or the header's start) */
    uint8_t hash[AUDIT_HASH]; /* its hash */
    bool skip_chain;          /* re-reading known records: check seq only */
    bool backward;            /* re-reading from the end: fetch chunks ending at a record */
    uint64_t end;             /* bytes present when the torn/end status was returned */
    audit_record rec;
    const char *why;
    int err;
} audit_reader;

/* Opens segment `no` of dir and reads its header: 0; -EBADMSG with r->why when the
 * header is damaged; other negative errno. The chain starts from the header. Release
 * with audit__reader_close (also after a failed open). */
int audit__reader_open(audit_reader *r, stele_io *io, const char *dir, uint64_t no);
void audit__reader_close(audit_reader *r);
audit_read_status audit__reader_next(audit_reader *r);
/* Positions the reader on a known record (offset, its seq) for re-reading. */
void audit__reader_seek(audit_reader *r, uint64_t off, uint64_t seq);
/* The event view of r->rec (strings valid until the next read). */
void audit__record_event(const audit_record *rec, stele_audit_event *e);

/* ---- listing (audit_list.c) -------------------------------------------------------- */

typedef struct {
    uint64_t no, first_seq;
    int64_t min_ns, max_ns; /* time range; known == false for the tail */
    bool known;
} audit_segment_info;

int audit__list(stele_io *io, const char *dir, const audit_segment_info *segs, size_t nsegs,
                uint64_t last_seq, const stele_audit_filter *f, stele_audit_event_fn fn, void *ctx);

#endif
