/*
 * wal.h — the write-ahead log: checksummed records in numbered segment files, with
 * group commit (SPEC §4).
 *
 * Appenders copy a record into an in-memory buffer and get back its log sequence
 * number (LSN: the total bytes appended before the record's end). One background
 * thread writes the buffer to the current segment and fsyncs it; while it does, new
 * appends collect in a second buffer, so every fsync covers all the requests that
 * arrived during the previous one (group commit). stele_wal_wait(lsn) returns once the
 * fsync covering lsn has succeeded — only then may a write be acknowledged.
 *
 * A failed write or fsync puts the log in a failed state for good: every waiter and
 * every later call gets the error; nothing is retried as if it had succeeded. The
 * process must restart and recover from what is on disk.
 *
 * Recovery: stele_wal_open replays every segment in order through a callback, cuts off
 * a torn tail of the last segment (an incomplete or checksum-failing record after
 * which no valid record follows), refuses to open when damage sits anywhere else, and
 * always starts appending into a fresh segment. The format is documented in
 * docs/format/wal.md and at the top of src/wal/wal.c.
 *
 * Threads: append, rotate and remove_before must be serialized by the caller (the
 * tsdb holds its append lock); wait and stats may be called from any thread.
 */
#ifndef STELE_WAL_H
#define STELE_WAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "stele/io.h"

typedef struct stele_wal stele_wal;

typedef struct {
    stele_io *io;             /* borrowed; outlives the wal */
    const char *dir;          /* segment directory, created if missing */
    bool buffered;            /* true: wait() does not wait for fsync (--ack=buffered) */
    size_t max_pending_bytes; /* appenders block while more is unwritten (0: 64 MiB) */
} stele_wal_options;

/* Called once per valid record during replay, in log order. Non-zero stops the open
 * and is returned by it. */
typedef int (*stele_wal_replay_fn)(void *ctx, uint64_t segment, uint32_t type,
                                   const uint8_t *payload, size_t len);

typedef struct {
    uint64_t segments_replayed;
    uint64_t records_replayed;
    uint64_t bytes_replayed;
    uint64_t torn_bytes_discarded;
} stele_wal_replay_stats;

/* Opens the log in opts->dir, replays it into fn, and starts a new segment. On error
 * err (if not NULL) says which file and why. *out owned by the caller. */
int stele_wal_open(const stele_wal_options *opts, stele_wal_replay_fn fn, void *ctx,
                   stele_wal_replay_stats *stats, stele_wal **out, char *err, size_t errcap);
/* Stops the writer after it has written and fsync'd everything appended; accepts NULL. */
void stele_wal_close(stele_wal *w);

/* Maximum payload of one record. */
#define STELE_WAL_MAX_RECORD (256u << 20)

/* Appends one record whose payload is part1 followed by part2 (either may be empty).
 * *lsn receives the position to wait for. -EIO (or the first error) once failed,
 * -EMSGSIZE over STELE_WAL_MAX_RECORD. */
int stele_wal_append(stele_wal *w, uint16_t type, const void *part1, size_t len1, const void *part2,
                     size_t len2, uint64_t *lsn);
/* Blocks until lsn is durable (or, buffered, returns at once). 0 or the log's error. */
int stele_wal_wait(stele_wal *w, uint64_t lsn);
/* Makes everything appended durable, then starts a new segment; appends after it go
 * there. *segment receives the new segment's number. */
int stele_wal_rotate(stele_wal *w, uint64_t *segment);
/* Number of the segment appends currently go to. */
uint64_t stele_wal_segment(stele_wal *w);
/* Bytes in the current segment so far (appended, written or not). */
uint64_t stele_wal_segment_bytes(stele_wal *w);
/* Deletes, durably, every segment numbered below `segment`. */
int stele_wal_remove_before(stele_wal *w, uint64_t segment);
/* 0 while healthy, else the negative errno that failed the log. */
int stele_wal_error(stele_wal *w);

typedef struct {
    uint64_t appended_bytes;
    uint64_t synced_bytes;
    uint64_t fsyncs;
    uint64_t records;
    uint64_t segments; /* on disk now */
} stele_wal_stats;
void stele_wal_get_stats(stele_wal *w, stele_wal_stats *st);

/* Checks one segment file without opening a log (for `stele check`): calls fn for each
 * problem found with a description; returns the number of problems, or a negative
 * errno if the file cannot be read. `is_last`: a torn tail is normal there (reported
 * as a note through `note` when not NULL, not as a problem). */
typedef void (*stele_wal_problem_fn)(void *ctx, const char *path, const char *what);
int stele_wal_check_segment(stele_io *io, const char *path, bool is_last,
                            stele_wal_problem_fn problem, stele_wal_problem_fn note, void *ctx);

#endif
