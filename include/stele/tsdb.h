/*
 * tsdb.h — the time-series storage engine: series index, in-memory head, write-ahead
 * log, immutable block files, compaction and retention (SPEC §2, §4).
 *
 * Data model: a series is a tenant plus a sorted set of labels (the metric name is the
 * label "__name__"); a sample is (int64 ns timestamp, float64 value). The same series
 * and timestamp written again: the later write wins.
 *
 * Write path: the caller fills a stele_batch (one request's points; atomic), then
 * stele_tsdb_write resolves series, appends ONE log record holding the whole batch,
 * waits for the group-commit fsync that covers it, and only then makes the points
 * visible in the head and returns 0. A batch is all-or-nothing: if the log fails,
 * nothing of it is acknowledged and the engine stops accepting writes (-EIO) until a
 * restart recovers from disk.
 *
 * Storage: the head is flushed into block files (one per time partition touched,
 * compressed with the codecs of codec.h plus zstd, checksummed), after which the log
 * segments it came from are deleted. Blocks of a partition are merged by compaction;
 * whole blocks past retention are dropped. Formats: docs/format/block.md, wal.md.
 *
 * Threads: every function may be called from any thread. Writes run in parallel up to
 * the log append, which is serialized; reads never block writes for longer than a
 * per-series copy. A background thread (options.background) flushes, compacts and
 * applies retention.
 */
#ifndef STELE_TSDB_H
#define STELE_TSDB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "stele/io.h"
#include "stele/tier.h"

typedef struct stele_tsdb stele_tsdb;

typedef struct {
    const char *dir;             /* data directory; wal/ and blocks/ live inside */
    stele_io *io;                /* borrowed; outlives the tsdb */
    int64_t retention_ns;        /* raw data older than now - this is dropped (30 d) */
    int64_t max_future_skew_ns;  /* points further ahead of now are refused (10 min) */
    uint64_t head_max_points;    /* flush the head at this many points (4 M ≈ 64 MiB) */
    int64_t flush_interval_ns;   /* ...or when its oldest point is this old (10 min) */
    uint64_t wal_segment_bytes;  /* start a new segment past this size (128 MiB) */
    int64_t partition_ns;        /* blocks never span a partition boundary (1 d) */
    uint32_t compact_min_blocks; /* merge a partition's blocks at this count (4) */
    bool background;             /* run flush/compaction/retention in a thread */
    bool ack_buffered;           /* acknowledge before fsync (--ack=buffered) */
    /* Downsampled tiers after raw (SPEC §5), finest first: resolutions each a multiple
     * of the previous and dividing partition_ns or a multiple of it; retentions not
     * shrinking and not shorter than retention_ns. Default 1m:1y, 1h:10y; ntiers = 0
     * keeps raw data only. */
    size_t ntiers;
    int64_t tier_resolution_ns[STELE_MAX_TIERS];
    int64_t tier_retention_ns[STELE_MAX_TIERS];
    /* Clock for retention and skew checks; NULL = the real wall clock. */
    int64_t (*now_ns)(void *ctx);
    void *now_ctx;
    /* Log hooks, for state that must become durable together with the points of a write
     * (the anti-replay windows of sealed frames: stele/sealed.h). The engine does not
     * interpret attachments (stele_batch_set_attachment); it stores each in the same log
     * record as its batch's points and calls:
     *   log_apply for every record carrying one — while stele_tsdb_open replays the log,
     *     in log order (also when the record's points are older than the replay expiry),
     *     and in stele_tsdb_write once the record is durable, in log order, before the
     *     write counts as applied (so a flush that waits for it knows every attachment of
     *     the segments it deletes was applied). Non-zero fails the open, or marks the
     *     engine failed (as a log error does) and fails the write.
     *   log_checkpoint in every flush after the head is durable in blocks and before the
     *     log segments it came from are deleted: it must make durable whatever the
     *     attachments applied so far produced. Non-zero keeps the segments and fails the
     *     flush with that error.
     * Both may be NULL; without log_checkpoint, once a record with an attachment was
     * replayed or written, flushes keep every log segment (nothing would save the
     * attachments' state). With --ack=buffered, log_apply runs before the record is
     * fsync'd, so a checkpoint may hold the effect of a record a power cut then loses. */
    int (*log_apply)(void *ctx, const uint8_t *attachment, size_t len);
    int (*log_checkpoint)(void *ctx);
    void *log_hooks_ctx;
} stele_tsdb_options;

/* Fills in the defaults documented above (dir and io stay NULL). */
void stele_tsdb_options_default(stele_tsdb_options *o);

typedef struct {
    uint64_t wal_records;
    uint64_t wal_bytes;
    uint64_t wal_torn_bytes;
    uint64_t points;
    uint64_t blocks;
    uint64_t removed_leftover_blocks; /* inputs of an interrupted compaction */
    int64_t duration_ns;
} stele_tsdb_recovery;

/* Opens the store, recovering it from blocks and the log. On error, err says which
 * file is damaged or what failed. *out owned by the caller. */
int stele_tsdb_open(const stele_tsdb_options *o, stele_tsdb **out, stele_tsdb_recovery *rec,
                    char *err, size_t errcap);
/* Stops the background thread and closes files. Does not flush the head: everything
 * acknowledged is in the log already. Accepts NULL. */
void stele_tsdb_close(stele_tsdb *db);

/* ---- writing ------------------------------------------------------------------ */

/* A label as (name, value); both byte strings, not NUL-terminated. */
typedef struct {
    const char *name;
    uint32_t name_len;
    const char *value;
    uint32_t value_len;
} stele_label;

/* Limits on what one series key may hold. */
#define STELE_MAX_LABELS 64
#define STELE_MAX_LABEL_NAME 256
#define STELE_MAX_LABEL_VALUE 4096
#define STELE_MAX_SERIES_KEY 65536

typedef struct stele_batch stele_batch;

int stele_batch_create(stele_batch **out);
void stele_batch_destroy(stele_batch *b);
/* Empties the batch, keeping its memory for reuse. */
void stele_batch_reset(stele_batch *b);
/* Adds one point. labels must be sorted by name (bytewise), names unique and
 * non-empty, and include "__name__"; tenant must be a valid tenant name. Consecutive
 * points of the same series are cheap (the key is compared, not rehashed).
 * -EINVAL on a bad label set (limits above), -ENOMEM. */
int stele_batch_add(stele_batch *b, const char *tenant, const stele_label *labels, size_t nlabels,
                    int64_t ts, double value);
size_t stele_batch_points(const stele_batch *b);

/* Series handles, for writers that see the same series again and again (sealed frames:
 * stele/sealed.h): resolve a label set once, then add points by handle, which skips
 * encoding, hashing and looking up the series key per point.
 *
 * stele_tsdb_series_ref looks up an EXISTING series of db: 1 and *ref, or 0 when the
 * store has no such series yet — add that point with stele_batch_add; once the write
 * succeeds the series exists. It never creates one, so a handle costs no series quota
 * and leaves nothing to recover. -EINVAL on a bad label set (as stele_batch_add).
 * A handle stays valid while db is open: series are never removed while the store runs
 * (retention drops samples and blocks, not series; the index is rebuilt only by an
 * open). It is meaningful to db only: a batch holding handles must be written to it. */
typedef struct stele_series_ref stele_series_ref;
int stele_tsdb_series_ref(stele_tsdb *db, const char *tenant, const stele_label *labels,
                          size_t nlabels, const stele_series_ref **ref);
/* Adds one point of a series by handle; the write emits the series' definition into the
 * log exactly as for stele_batch_add. Points by handle and by labels mix freely in one
 * batch. -ENOMEM. */
int stele_batch_add_ref(stele_batch *b, const stele_series_ref *ref, int64_t ts, double value);
/* Attaches opaque bytes (copied; at most STELE_BATCH_MAX_ATTACHMENT) to the batch: they
 * are written in the same log record as its points and handed to the store's log_apply
 * hook (see stele_tsdb_options). A batch with an attachment is written even when it has
 * no points. Reset removes it. -EMSGSIZE over the limit, -ENOMEM. */
#define STELE_BATCH_MAX_ATTACHMENT (16u << 20)
int stele_batch_set_attachment(stele_batch *b, const void *data, size_t len);

/* Writes the batch atomically. 0 once durable (or appended, with ack_buffered);
 * -EIO (or the log's errno) when the log failed — the engine then refuses writes
 * until restarted; -EAGAIN when the head is full and a flush is behind (answer 503 +
 * Retry-After); -ERANGE if a point is outside stele_tsdb_time_bounds. */
int stele_tsdb_write(stele_tsdb *db, stele_batch *b);
/* As stele_tsdb_write, but refuses with -EDQUOT, storing nothing, when the batch would
 * bring a tenant above max_tenant_series series (0 = no limit). Concurrent writers of
 * one tenant may overshoot by the new series of the requests in flight. */
int stele_tsdb_write_quota(stele_tsdb *db, stele_batch *b, uint64_t max_tenant_series);
/* Number of series a tenant has. */
uint64_t stele_tsdb_tenant_series(stele_tsdb *db, const char *tenant);
/* Timestamps accepted now: [*min_ts, *max_ts] (retention and future skew). */
void stele_tsdb_time_bounds(stele_tsdb *db, int64_t *min_ts, int64_t *max_ts);

/* ---- reading ------------------------------------------------------------------ */

typedef enum {
    STELE_MATCH_EQUAL = 0,     /* =  */
    STELE_MATCH_NOT_EQUAL = 1, /* != */
    STELE_MATCH_REGEX = 2,     /* =~ (fully anchored, POSIX extended syntax) */
    STELE_MATCH_NOT_REGEX = 3, /* !~ */
} stele_match_type;

typedef struct {
    const char *name;  /* NUL-terminated */
    const char *value; /* NUL-terminated; the regex for =~ / !~ */
    stele_match_type type;
} stele_matcher;

/* One series handed to a select callback; arrays valid during the call only. */
typedef struct {
    const stele_label *labels; /* sorted by name, "__name__" included */
    size_t nlabels;
    const int64_t *ts; /* strictly increasing */
    const double *values;
    size_t n;
} stele_series_view;

/* Return 0 to go on, non-zero to stop (returned by stele_tsdb_select). */
typedef int (*stele_series_fn)(void *ctx, const stele_series_view *series);

/* Calls fn, in no particular order, for every series of `tenant` matching all
 * matchers (Prometheus semantics: a missing label equals "") that has samples in
 * [mint, maxt]; samples are merged across head and blocks, later writes winning.
 * -EINVAL (message in err) for a bad regex or no matcher. */
int stele_tsdb_select(stele_tsdb *db, const char *tenant, const stele_matcher *matchers,
                      size_t nmatchers, int64_t mint, int64_t maxt, stele_series_fn fn, void *ctx,
                      char *err, size_t errcap);

/* Estimates, from the index and block metadata alone (no sample is read), what a select
 * with these arguments would touch: matching series and samples in [mint, maxt]. */
int stele_tsdb_estimate(stele_tsdb *db, const char *tenant, const stele_matcher *matchers,
                        size_t nmatchers, int64_t mint, int64_t maxt, uint64_t *series,
                        uint64_t *samples, char *err, size_t errcap);

/* Label sets (no samples) of the tenant's series matching all matchers that have data
 * in [mint, maxt] (block metadata and head presence; no sample is decoded). */
typedef int (*stele_labels_fn)(void *ctx, const stele_label *labels, size_t nlabels);
int stele_tsdb_series(stele_tsdb *db, const char *tenant, const stele_matcher *matchers,
                      size_t nmatchers, int64_t mint, int64_t maxt, stele_labels_fn fn, void *ctx,
                      char *err, size_t errcap);

/* ---- tiers (SPEC §5) --------------------------------------------------------------- */

/* What a query planner needs to know about one tier; index 0 is raw. */
typedef struct {
    int64_t resolution_ns; /* 0 for raw */
    int64_t retention_ns;
    /* Data before this time may have been dropped by retention (INT64_MIN: nothing was
     * ever dropped). A query reaching before it cannot be answered from this tier. */
    int64_t expired_before;
} stele_tier_info;

/* Fills out[0..STELE_MAX_TIERS] (raw first) and returns the number of tiers incl. raw. */
size_t stele_tsdb_tiers(stele_tsdb *db, stele_tier_info *out);

/* The buckets of one series, in time order; arrays valid during the call only. */
typedef int (*stele_buckets_fn)(void *ctx, const stele_label *labels, size_t nlabels,
                                const stele_bucket *buckets, size_t n);

/* Calls fn for every series of `tenant` matching all matchers with buckets of tier
 * `tier` (1 = the first downsampled tier) starting in [floor(mint), maxt], where floor
 * rounds down to the resolution. The buckets are exact: equal to stele_buckets_build
 * over everything acknowledged (buckets the background build has not reached yet, or
 * that later writes touched, are computed from raw data on the fly). -EINVAL (message in
 * err) for a bad regex, no matcher or no such tier. Sums come finished, as tier blocks
 * store them: sum holds sum + compensation (or ±Inf) and sum_c is 0. */
int stele_tsdb_select_buckets(stele_tsdb *db, const char *tenant, const stele_matcher *matchers,
                              size_t nmatchers, size_t tier, int64_t mint, int64_t maxt,
                              stele_buckets_fn fn, void *ctx, char *err, size_t errcap);

/* As stele_tsdb_select_buckets, reading only the fields in `fields` (STELE_BUCKET_*,
 * stele/tier.h) from tier blocks — the others may be zero; a query needs only a few of
 * the nine columns. */
int stele_tsdb_select_buckets_fields(stele_tsdb *db, const char *tenant,
                                     const stele_matcher *matchers, size_t nmatchers, size_t tier,
                                     unsigned fields, int64_t mint, int64_t maxt,
                                     stele_buckets_fn fn, void *ctx, char *err, size_t errcap);

/* As stele_tsdb_estimate for a select_buckets: *samples counts buckets. */
int stele_tsdb_estimate_buckets(stele_tsdb *db, const char *tenant, const stele_matcher *matchers,
                                size_t nmatchers, size_t tier, int64_t mint, int64_t maxt,
                                uint64_t *series, uint64_t *samples, char *err, size_t errcap);

/* Builds the tiers for everything flushed so far (the background thread does this after
 * each flush, in bounded steps). */
int stele_tsdb_build_tiers(stele_tsdb *db);

/* ---- operations --------------------------------------------------------------- */

/* Seals the head into blocks, then deletes the log segments it came from. Returns when
 * done. Concurrent writes go on into a new head meanwhile. */
int stele_tsdb_flush(stele_tsdb *db);
/* Builds the tiers for everything flushed, then runs retention and compaction once, for
 * raw data and tiers (the background thread does this by itself). */
int stele_tsdb_maintain(stele_tsdb *db);
/* 0 if writes are accepted; else the error that stopped them (e.g. -EIO). */
int stele_tsdb_health(stele_tsdb *db);

typedef struct {
    uint64_t series;
    uint64_t head_points;
    uint64_t head_series;
    uint64_t blocks;
    uint64_t block_bytes;
    uint64_t block_points;
    uint64_t wal_segments;
    uint64_t wal_fsyncs;
    uint64_t wal_bytes;
    uint64_t points_written;
    uint64_t flushes;
    uint64_t compactions;
    uint64_t retention_drops;
    uint64_t rejected_overload;
    int health;    /* as stele_tsdb_health */
    size_t ntiers; /* downsampled tiers below, finest first */
    struct {
        int64_t resolution_ns;
        uint64_t series; /* series with buckets in this tier's blocks */
        uint64_t buckets;
        uint64_t blocks;
        uint64_t bytes;
        uint64_t builds;
        uint64_t build_lag_points; /* flushed raw points not yet reflected in the tier */
        int64_t build_lag_ns;      /* age of the oldest flush not yet reflected (0: none) */
        uint64_t retention_drops;
    } tiers[STELE_MAX_TIERS];
} stele_tsdb_stats;
void stele_tsdb_get_stats(stele_tsdb *db, stele_tsdb_stats *st);

/* Verifies a data directory offline: every log segment and block, every checksum,
 * every encoded series. Calls problem() for each problem, note() (optional) for
 * harmless findings such as a torn log tail. Returns the number of problems, or a
 * negative errno if the directory cannot be read. */
typedef void (*stele_check_fn)(void *ctx, const char *path, const char *what);
int stele_tsdb_check(stele_io *io, const char *dir, stele_check_fn problem, stele_check_fn note,
                     void *ctx);

#endif
