/*
 * audit.h — the tamper-evident audit trail (SPEC §7): append-only, hash-chained records
 * (BLAKE2b-256) with checkpoints signed by the server's Ed25519 audit key. Every critical
 * action is appended — durably — before it is acknowledged.
 *
 * Format (docs/format/audit.md, version 2): DIR/audit-NNNNNN.log segments hold records
 * back to back; each record's hash covers the previous record's hash, across segments,
 * so editing, deleting or reordering any record breaks the chain from there on. Every
 * N records or T seconds a checkpoint record carries a signature of the chain so far, so
 * a copy of the trail verifies up to its last checkpoint with the public key alone.
 * DIR/audit.head holds the sequence and hash of the last record, signed, replaced
 * atomically after every group commit: cutting whole records off the end no longer
 * matches it. Rolling back every file together to an older consistent state can only be
 * detected against a head exported earlier and kept elsewhere (stele_audit_head_export).
 *
 * Threads: stele_audit_append, _checkpoint, _list, _head_export, _stats and _health may
 * be called from any number of threads at once. Appends share one write, fsync and head
 * replacement (group commit); readers see only whole, acknowledged records. Open and
 * close are single-threaded: no call may be in flight during close. stele_audit_verify,
 * stele_audit_list_dir and stele_audit_head_read only read files, so they may run in
 * another process while a server appends.
 */
#ifndef STELE_AUDIT_H
#define STELE_AUDIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "stele/io.h"

#define STELE_AUDIT_MAX_FIELD 256 /* actor, action, subject, outcome */
#define STELE_AUDIT_MAX_DETAILS 2048

/* A segment is rolled once it would grow past this: open validates the tail segment
 * record by record, so this bounds start-up work (64 MiB hashes in about a tenth of a
 * second) while keeping a decade of events to a few thousand files. */
#define STELE_AUDIT_SEGMENT_BYTES (64u << 20)
/* A checkpoint after this many records or this long (whichever comes first): a copy of
 * the trail taken at any moment verifies up to at most a minute or a thousand records
 * before its end, at the cost of one signature (~20 µs) per thousand appends. */
#define STELE_AUDIT_CHECKPOINT_RECORDS 1000u
#define STELE_AUDIT_CHECKPOINT_NS (60 * INT64_C(1000000000))

/* Room for a head exported as text (stele_audit_head_format), with its newline. */
#define STELE_AUDIT_HEAD_TEXT_MAX 256

typedef struct stele_audit stele_audit;

typedef struct {
    uint64_t seq;    /* from 1, consecutive over the whole trail */
    int64_t time_ns; /* wall clock when appended */
    bool checkpoint; /* a signed checkpoint (fields below are synthesised for display) */
    const char *actor, *action, *subject, *outcome, *details;
} stele_audit_event;

typedef struct {
    uint64_t segment_bytes;       /* roll segments at this size; 0 = STELE_AUDIT_SEGMENT_BYTES */
    uint32_t checkpoint_records;  /* 0 = STELE_AUDIT_CHECKPOINT_RECORDS */
    int64_t checkpoint_ns;        /* 0 = STELE_AUDIT_CHECKPOINT_NS; < 0 = no time rule */
    int64_t (*now_ns)(void *ctx); /* clock for record times; NULL = the wall clock */
    void *now_ctx;
} stele_audit_options;

/* Opens (creating when missing) the trail in dir with the server's audit key (64-byte
 * libsodium Ed25519 secret key). Validates the tail segment record by record, every
 * segment header and the signed head: a damaged trail refuses to open (-EBADMSG),
 * naming the problem in err. Recovers a crash during an append: a torn tail is cut;
 * whole, chain-valid records beyond the head (written by one group commit, never
 * acknowledged) are kept, the head re-signed and an "audit.recover" record appended. */
int stele_audit_open(stele_io *io, const char *dir, const uint8_t secret_key[64], stele_audit **out,
                     char *err, size_t errcap);
/* The same with options (NULL = defaults). */
int stele_audit_open_with(stele_io *io, const char *dir, const uint8_t secret_key[64],
                          const stele_audit_options *opts, stele_audit **out, char *err,
                          size_t errcap);
void stele_audit_close(stele_audit *a);

/* Appends an event durably (record fsync'd, head replaced) before returning; time and
 * sequence are assigned. Fields are bounded (-EINVAL when over, or holding control
 * characters). After a failed write or fsync the trail is failed for good: that append
 * returns the error and every later one -EIO; reopen to recover. */
int stele_audit_append(stele_audit *a, const char *actor, const char *action, const char *subject,
                       const char *outcome, const char *details, uint64_t *seq);
/* Appends a checkpoint now if any record came since the last one (e.g. at shutdown). */
int stele_audit_checkpoint(stele_audit *a);
/* 0, or the error that failed the trail. */
int stele_audit_health(stele_audit *a);

typedef struct {
    uint64_t events;      /* events appended since open */
    uint64_t checkpoints; /* checkpoints appended since open */
    uint64_t batches;     /* group commits: one write, one fsync, one head replacement each */
    uint64_t last_seq;    /* last acknowledged record */
} stele_audit_stats;
void stele_audit_stats_get(stele_audit *a, stele_audit_stats *out);

/* ---- head: the signed end of the trail, exportable as one line of text ------------- */

typedef struct {
    uint64_t seq;
    uint8_t hash[32];
    uint8_t signature[64]; /* Ed25519 over "stele/audit-head/v2", 0, magic, version, seq, hash */
} stele_audit_head;

/* The current head as text ("stele-audit-head v2 seq=N hash=HEX sig=HEX\n"), for an
 * operator to ship off the machine. Bytes written (without the NUL), or -ENOSPC. */
int stele_audit_head_export(stele_audit *a, char *buf, size_t cap);
int stele_audit_head_format(const stele_audit_head *h, char *buf, size_t cap);
/* Parses an exported head and checks its signature: 0, -EINVAL (not a head) or
 * -EBADMSG (signature invalid for this key). */
int stele_audit_head_parse(const char *text, const uint8_t public_key[32], stele_audit_head *out);
/* Reads DIR/audit.head offline and checks its signature (same errors; -ENOENT). */
int stele_audit_head_read(stele_io *io, const char *dir, const uint8_t public_key[32],
                          stele_audit_head *out);

/* ---- verification (offline, read-only, streaming) ----------------------------------- */

typedef struct {
    uint64_t segments;
    uint64_t records;             /* whole chain-valid records read, checkpoints included */
    uint64_t checkpoints;         /* checkpoints whose signature is valid */
    uint64_t last_seq;            /* last chain-valid record */
    uint64_t head_seq;            /* what the signed head names (0 when missing or bad) */
    uint64_t last_checkpoint_seq; /* last record covered by a valid checkpoint */
    uint64_t beyond_head;         /* whole records after the head: an append in flight,
                                     or a crash that the next open recovers */
    uint64_t torn_bytes;          /* incomplete bytes after them (same causes) */
} stele_audit_summary;

/* Reads and verifies a whole trail with the audit public key, in bounded memory:
 * calls problem() for every problem (an edited, deleted, reordered or truncated record
 * or segment, a head that does not match, a bad head or checkpoint signature, an
 * exported head `expect` (optional) that the trail no longer holds) and event()
 * (optional; non-zero stops) for each record. Returns the number of problems, or a
 * negative errno when the directory cannot be read. summary may be NULL. */
typedef void (*stele_audit_problem_fn)(void *ctx, const char *what);
typedef int (*stele_audit_event_fn)(void *ctx, const stele_audit_event *e);
int stele_audit_verify(stele_io *io, const char *dir, const uint8_t public_key[32],
                       const stele_audit_head *expect, stele_audit_problem_fn problem,
                       stele_audit_event_fn event, void *ctx, stele_audit_summary *summary);

/* ---- listing ------------------------------------------------------------------------ */

/* Every set field must match (zero/NULL = any). */
typedef struct {
    const char *subject;        /* exact */
    const char *subject_prefix; /* e.g. "device:" */
    const char *action;         /* exact */
    const char *action_prefix;  /* e.g. "device." */
    const char *actor;          /* exact */
    int64_t since_ns;           /* time >= since (0 = no bound) */
    int64_t until_ns;           /* time < until (0 = no bound) */
    uint64_t after_seq;         /* seq > after */
    uint64_t before_seq;        /* seq < before (0 = no bound) */
    size_t limit;               /* at most this many (0 = all) */
    bool newest_first;          /* descending sequence */
    bool checkpoints;           /* include checkpoint records */
} stele_audit_filter;

/* Calls fn (non-zero stops) for every acknowledged record that matches, in sequence
 * order (or reversed). Streams from disk; sealed segments whose sequence or time range
 * lies outside the filter are skipped by their headers. Safe while appends run: only
 * records acknowledged when the call began are read. 0, or a negative errno
 * (-EBADMSG when a record read is damaged). */
int stele_audit_list(stele_audit *a, const stele_audit_filter *f, stele_audit_event_fn fn,
                     void *ctx);
/* The same offline on a directory (up to the head's sequence; no key needed). */
int stele_audit_list_dir(stele_io *io, const char *dir, const stele_audit_filter *f,
                         stele_audit_event_fn fn, void *ctx);

/* Times for filters: RFC 3339 ("2025-06-01T12:00:00.5Z", "…+02:00"), unix seconds
 * (fractions allowed), or a duration ago ("90s", "15m", "1h30m", "2d", "1w"). */
int stele_audit_time_parse(const char *text, int64_t now_ns, int64_t *ns);
/* RFC 3339 UTC with nanoseconds: "2025-06-01T12:00:00.000000000Z" (cap >= 32). */
void stele_audit_time_format(int64_t ns, char *buf, size_t cap);

/* ---- the audit key ------------------------------------------------------------------ */

/* Loads dir/audit.key (secret, 0600) or, on first start, creates it and dir/audit.pub
 * (the public key, for offline verification). Checks magic, version, checksum and that
 * the two files agree; rewrites a missing audit.pub from the key. */
int stele_audit_key_load_or_create(stele_io *io, const char *dir, uint8_t secret_key[64],
                                   uint8_t public_key[32], char *err, size_t errcap);
/* Loads dir/audit.pub (checked) for offline verification. */
int stele_audit_pubkey_load(stele_io *io, const char *dir, uint8_t public_key[32], char *err,
                            size_t errcap);
/* Parses a public key given as 64 hex digits or as the text of an audit.pub file. */
int stele_audit_pubkey_parse(const char *text, uint8_t public_key[32]);
/* The text of an audit.pub file for a key (cap >= 128). */
void stele_audit_pubkey_format(const uint8_t public_key[32], char *buf, size_t cap);

#endif
