/*
 * audit.h — the tamper-evident audit trail (SPEC §7): append-only, hash-chained records
 * (BLAKE2b-256) with checkpoints signed by the server's Ed25519 audit key. Every critical
 * action is appended — durably — before it is acknowledged.
 *
 * Format (docs/format/audit.md): DIR/audit.log holds records back to back; each record's
 * hash covers the previous record's hash, so editing, deleting or reordering any record
 * breaks the chain from there on. DIR/audit.head holds the sequence and hash of the last
 * record, signed, replaced atomically after each append: cutting whole records off the
 * end no longer matches it. (Rolling back both files together to an older consistent
 * state can only be detected against a checkpoint kept elsewhere: ship them off the box.)
 */
#ifndef STELE_AUDIT_H
#define STELE_AUDIT_H

#include <stddef.h>
#include <stdint.h>

#include "stele/io.h"

#define STELE_AUDIT_MAX_FIELD 256 /* actor, action, subject, outcome */
#define STELE_AUDIT_MAX_DETAILS 2048

typedef struct stele_audit stele_audit;

typedef struct {
    uint64_t seq;    /* from 1, consecutive */
    int64_t time_ns; /* wall clock when appended */
    const char *actor, *action, *subject, *outcome, *details;
} stele_audit_event;

/* Opens (creating when missing) the trail in dir with the server's audit key (64-byte
 * libsodium Ed25519 secret key). Validates the whole chain and the head first: a damaged
 * trail refuses to open, naming the problem in err. */
int stele_audit_open(stele_io *io, const char *dir, const uint8_t secret_key[64], stele_audit **out,
                     char *err, size_t errcap);
void stele_audit_close(stele_audit *a);
/* Appends an event durably (record and head fsync'd); time and sequence are assigned.
 * Fields are bounded (-EINVAL when over, or containing control characters). */
int stele_audit_append(stele_audit *a, const char *actor, const char *action, const char *subject,
                       const char *outcome, const char *details, uint64_t *seq);

/* Reads and verifies a trail offline with the audit public key: calls problem() for every
 * problem (edited, deleted, reordered or truncated records, a head that does not match,
 * a bad signature) and event() (optional) for each record read. Returns the number of
 * problems, or a negative errno when the files cannot be read. */
typedef void (*stele_audit_problem_fn)(void *ctx, const char *what);
typedef int (*stele_audit_event_fn)(void *ctx, const stele_audit_event *e);
int stele_audit_verify(stele_io *io, const char *dir, const uint8_t public_key[32],
                       stele_audit_problem_fn problem, stele_audit_event_fn event, void *ctx);

#endif
