/*
 * wal.c — write-ahead log segments, group commit and replay.
 *
 * ON-DISK FORMAT (all integers little-endian; see also docs/format/wal.md)
 *
 * A log is a directory of segment files named "%020llu.seg" after their segment
 * number. Numbers only grow; a new process never appends to an old segment, it starts
 * the next number. Each segment is:
 *
 *   segment header, 32 bytes
 *     0   8  magic "STLWAL\0\1"
 *     8   4  format version (1)
 *     12  4  reserved, zero
 *     16  8  segment number (must match the file name)
 *     24  8  XXH3-64 of bytes 0..24
 *   records, back to back, each:
 *     0   4  payload length L (1 .. STELE_WAL_MAX_RECORD)
 *     4   2  record type (1 .. 0x7fff; meaning belongs to the user of the log)
 *     6   2  reserved, zero
 *     8   8  XXH3-64 of the payload, seeded with bytes 0..8 read as a u64 (so length,
 *            type and payload are all covered)
 *     16  L  payload
 *
 * INVARIANTS
 *  - A record is acknowledged only after an fsync of its segment that began after the
 *    record was fully written returned success; so after a crash, every acknowledged
 *    record is intact, and what follows the last fsync may be torn.
 *  - Replay of the last segment stops at the first record that is incomplete or fails
 *    its checksum; if a valid record can be found after that point, the damage is not
 *    a torn tail but corruption of fsync'd data, and the open fails naming the file
 *    and offset. In any segment but the last, any bad record is corruption.
 *  - Segment headers are written and fsync'd (file and directory) before any record
 *    goes in, so a segment file that exists with a bad header was never used for an
 *    acknowledged record only if it is the last one and shorter than a header.
 *
 * GROUP COMMIT
 * Appenders copy records into `fill` under the mutex. The writer thread swaps `fill`
 * with its own buffer, writes it with one pwrite, fsyncs, publishes the new synced
 * LSN and wakes waiters. An fsync thus covers every record that arrived while the
 * previous one ran; no timer or batching delay is needed.
 */
#include "stele/wal.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t on the stack */
#include <xxhash.h>

#include "common/bytes.h"

#define WAL_MAGIC "STLWAL\0\1"
#define WAL_VERSION 1u
#define WAL_HEADER_SIZE 32u
#define WAL_RECORD_HEADER_SIZE 16u
/* Appenders block beyond this much unwritten data, bounding memory when the disk is
 * slower than the network: 64 MiB is a few fsyncs' worth on any real disk. */
#define WAL_DEFAULT_MAX_PENDING (64u << 20)
/* Start buffers small; they grow to the largest batch seen. */
#define WAL_INITIAL_BUFFER (1u << 20)
/* A torn tail is at most one group-commit batch; scanning further for a valid record
 * to tell tail from corruption is bounded so a huge damaged file cannot stall start. */
#define WAL_MAX_TAIL_SCAN (512u << 20)
#define WAL_PATH_MAX 4096

static_assert(sizeof(WAL_MAGIC) - 1 == 8, "magic is 8 bytes");

typedef struct {
    uint8_t *data;
    size_t len;
    size_t cap;
} wal_buffer;

struct stele_wal {
    stele_io *io;
    char dir[WAL_PATH_MAX];
    bool buffered;
    size_t max_pending;

    pthread_mutex_t mu;
    pthread_cond_t wake_writer; /* fill has data, or stop */
    pthread_cond_t synced_cond; /* synced_lsn advanced, or failure */
    pthread_cond_t space_cond;  /* fill drained below max_pending */
    pthread_t writer;
    bool writer_started;
    bool stop;

    wal_buffer fill;       /* appends go here (under mu) */
    wal_buffer write;      /* owned by the writer thread while it writes */
    bool writing;          /* writer holds a batch not yet synced */
    uint64_t appended_lsn; /* bytes appended, all segments */
    uint64_t synced_lsn;   /* bytes durable */
    int error;             /* first failure, sticky */

    stele_file *segment_file; /* current segment (writer thread uses it) */
    uint64_t segment_no;
    uint64_t segment_offset;  /* bytes in the segment, header included, appended */
    uint64_t segment_written; /* bytes actually written to the file */

    uint64_t fsyncs;
    uint64_t records;
    uint64_t segments_on_disk;
    uint64_t oldest_segment;
};

static void segment_path(const char *dir, uint64_t no, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/%020" PRIu64 ".seg", dir, no);
}

static int buffer_reserve(wal_buffer *b, size_t need)
{
    if (b->cap - b->len >= need)
        return 0;
    size_t cap = b->cap ? b->cap : WAL_INITIAL_BUFFER;
    while (cap - b->len < need)
        cap *= 2;
    uint8_t *data = realloc(b->data, cap);
    if (!data)
        return -ENOMEM;
    b->data = data;
    b->cap = cap;
    return 0;
}

static void record_header_encode(uint8_t *h, uint32_t len, uint16_t type, const void *p1, size_t l1,
                                 const void *p2, size_t l2)
{
    put_le32(h, len);
    put_le16(h + 4, type);
    put_le16(h + 6, 0);
    uint64_t seed = get_le64(h);
    /* A state on the stack must be initialised before a seeded reset: the reset skips
     * deriving the secret when the stale `seed` field already equals the new seed, and
     * would then hash with whatever the stack held (a record checksummed wrongly, found
     * by the crash tests as a "damaged" record in the middle of the log). */
    XXH3_state_t st;
    XXH3_INITSTATE(&st);
    XXH3_64bits_reset_withSeed(&st, seed);
    if (l1)
        XXH3_64bits_update(&st, p1, l1);
    if (l2)
        XXH3_64bits_update(&st, p2, l2);
    put_le64(h + 8, XXH3_64bits_digest(&st));
}

static bool record_checksum_ok(const uint8_t *h, const uint8_t *payload, size_t len)
{
    return XXH3_64bits_withSeed(payload, len, get_le64(h)) == get_le64(h + 8);
}

static void segment_header_encode(uint8_t *h, uint64_t no)
{
    memcpy(h, WAL_MAGIC, 8);
    put_le32(h + 8, WAL_VERSION);
    put_le32(h + 12, 0);
    put_le64(h + 16, no);
    put_le64(h + 24, XXH3_64bits(h, 24));
}

/* Checks a segment header; 0, or -EBADMSG with a reason in why. */
static int segment_header_check(const uint8_t *h, uint64_t expect_no, const char **why)
{
    if (memcmp(h, WAL_MAGIC, 8) != 0) {
        *why = "not a Stele WAL segment (bad magic)";
        return -EBADMSG;
    }
    if (get_le64(h + 24) != XXH3_64bits(h, 24)) {
        *why = "segment header checksum mismatch";
        return -EBADMSG;
    }
    if (get_le32(h + 8) != WAL_VERSION) {
        *why = "unsupported WAL format version";
        return -EBADMSG;
    }
    if (get_le64(h + 16) != expect_no) {
        *why = "segment number in header does not match file name";
        return -EBADMSG;
    }
    return 0;
}

/* ---- writer thread ------------------------------------------------------------ */

static void wal_fail_locked(stele_wal *w, int rc)
{
    if (!w->error)
        w->error = rc;
    pthread_cond_broadcast(&w->synced_cond);
    pthread_cond_broadcast(&w->space_cond);
}

static void *wal_writer_main(void *arg)
{
    stele_wal *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (w->fill.len == 0 && !w->stop && !w->error)
            pthread_cond_wait(&w->wake_writer, &w->mu);
        if (w->error || (w->stop && w->fill.len == 0))
            break;
        /* Take the batch: swap buffers so appenders keep going while we write. */
        wal_buffer batch = w->fill;
        w->fill = w->write;
        w->fill.len = 0;
        w->write = batch;
        w->writing = true;
        uint64_t batch_end_lsn = w->appended_lsn;
        stele_file *f = w->segment_file;
        uint64_t off = w->segment_written;
        pthread_cond_broadcast(&w->space_cond);
        pthread_mutex_unlock(&w->mu);

        int rc = stele_io_pwrite(f, batch.data, batch.len, off);
        if (rc == 0)
            rc = stele_io_fsync(f);

        pthread_mutex_lock(&w->mu);
        w->writing = false;
        if (rc != 0) {
            wal_fail_locked(w, rc);
            break;
        }
        w->segment_written = off + batch.len;
        w->fsyncs++;
        w->synced_lsn = batch_end_lsn;
        pthread_cond_broadcast(&w->synced_cond);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* ---- segments ----------------------------------------------------------------- */

static int segment_create(stele_wal *w, uint64_t no, stele_file **out)
{
    char path[WAL_PATH_MAX + 64];
    uint8_t header[WAL_HEADER_SIZE];
    stele_file *f = NULL;
    segment_path(w->dir, no, path, sizeof(path));
    int rc =
        stele_io_open(w->io, path, STELE_IO_READWRITE | STELE_IO_CREATE | STELE_IO_TRUNCATE, &f);
    if (rc)
        goto fail;
    segment_header_encode(header, no);
    rc = stele_io_pwrite(f, header, sizeof(header), 0);
    if (rc)
        goto fail;
    rc = stele_io_fsync(f);
    if (rc)
        goto fail;
    rc = stele_io_fsync_dir(w->io, w->dir);
    if (rc)
        goto fail;
    *out = f;
    return 0;
fail:
    stele_io_close(f);
    return rc;
}

typedef struct {
    uint64_t *numbers;
    size_t count;
    size_t cap;
    int rc;
} segment_list;

static int segment_list_add(void *ctx, const char *name)
{
    segment_list *l = ctx;
    size_t n = strlen(name);
    if (n != 24 || strcmp(name + 20, ".seg") != 0)
        return 0; /* not ours (e.g. a .tmp); ignored */
    uint64_t no = 0;
    for (size_t i = 0; i < 20; i++) {
        if (name[i] < '0' || name[i] > '9')
            return 0;
        no = no * 10 + (uint64_t)(name[i] - '0');
    }
    if (l->count == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        uint64_t *nums = realloc(l->numbers, cap * sizeof(*nums));
        if (!nums) {
            l->rc = -ENOMEM;
            return 1;
        }
        l->numbers = nums;
        l->cap = cap;
    }
    l->numbers[l->count++] = no;
    return 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int segment_list_load(stele_io *io, const char *dir, segment_list *l)
{
    memset(l, 0, sizeof(*l));
    int rc = stele_io_list(io, dir, segment_list_add, l);
    if (rc == 0)
        rc = l->rc;
    if (rc == 0 && l->count)
        qsort(l->numbers, l->count, sizeof(uint64_t), cmp_u64);
    return rc;
}

/* ---- scanning (replay and check share it) --------------------------------------- */

typedef struct {
    stele_wal_replay_fn fn; /* may be NULL (check) */
    void *ctx;
    uint64_t records;
    uint64_t valid_end;  /* offset after the last good record */
    bool torn;           /* stopped at a bad record */
    const char *bad_why; /* why the first bad record is bad */
    bool corrupt;        /* valid data follows the bad record */
    uint64_t corrupt_at;
    int callback_rc;
} segment_scan;

static bool record_valid_at(const uint8_t *data, size_t size, size_t off)
{
    if (size - off < WAL_RECORD_HEADER_SIZE)
        return false;
    const uint8_t *h = data + off;
    uint32_t len = get_le32(h);
    uint16_t type = get_le16(h + 4);
    if (len == 0 || len > STELE_WAL_MAX_RECORD || type == 0 || type > 0x7fff ||
        get_le16(h + 6) != 0 || size - off - WAL_RECORD_HEADER_SIZE < len)
        return false;
    return record_checksum_ok(h, h + WAL_RECORD_HEADER_SIZE, len);
}

/* Walks the records of a segment image (header already checked). */
static void segment_scan_image(const uint8_t *data, size_t size, uint64_t no, segment_scan *s)
{
    size_t off = WAL_HEADER_SIZE;
    s->valid_end = off;
    while (off < size) {
        if (!record_valid_at(data, size, off)) {
            s->torn = true;
            if (size - off < WAL_RECORD_HEADER_SIZE)
                s->bad_why = "incomplete record header";
            else if (size - off - WAL_RECORD_HEADER_SIZE < get_le32(data + off))
                s->bad_why = "record extends past end of file";
            else
                s->bad_why = "record checksum mismatch";
            size_t limit = size - off > WAL_MAX_TAIL_SCAN ? off + WAL_MAX_TAIL_SCAN : size;
            for (size_t probe = off + 1; probe + WAL_RECORD_HEADER_SIZE <= limit; probe++) {
                if (record_valid_at(data, size, probe)) {
                    s->corrupt = true;
                    s->corrupt_at = off;
                    break;
                }
            }
            return;
        }
        uint32_t len = get_le32(data + off);
        if (s->fn) {
            int rc = s->fn(s->ctx, no, get_le16(data + off + 4),
                           data + off + WAL_RECORD_HEADER_SIZE, len);
            if (rc) {
                s->callback_rc = rc;
                return;
            }
        }
        s->records++;
        off += WAL_RECORD_HEADER_SIZE + len;
        s->valid_end = off;
    }
}

/* Reads a whole segment into memory. Segments are bounded by rotation, so this is a
 * bounded allocation; it keeps the scanner simple and fast (one read). */
static int segment_read(stele_io *io, const char *path, uint8_t **data, size_t *size)
{
    return stele_io_read_file(io, path, (size_t)8 << 30, data, size);
}

int stele_wal_check_segment(stele_io *io, const char *path, bool is_last,
                            stele_wal_problem_fn problem, stele_wal_problem_fn note, void *ctx)
{
    uint8_t *data = NULL;
    size_t size = 0;
    char msg[256];
    int problems = 0;
    int rc = segment_read(io, path, &data, &size);
    if (rc)
        return rc;
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    uint64_t no = strtoull(base, NULL, 10);
    const char *why = NULL;
    if (size < WAL_HEADER_SIZE) {
        if (is_last) {
            if (note)
                note(ctx, path, "segment shorter than its header (torn at creation)");
        } else {
            problem(ctx, path, "segment shorter than its header");
            problems++;
        }
        goto out;
    }
    if (segment_header_check(data, no, &why) != 0) {
        problem(ctx, path, why);
        problems++;
        goto out;
    }
    segment_scan s = {0};
    segment_scan_image(data, size, no, &s);
    if (s.corrupt || (s.torn && !is_last)) {
        snprintf(msg, sizeof(msg), "damaged record at offset %" PRIu64 ": %s",
                 s.corrupt ? s.corrupt_at : s.valid_end, s.bad_why);
        problem(ctx, path, msg);
        problems++;
    } else if (s.torn && note) {
        snprintf(msg, sizeof(msg),
                 "torn tail of %zu bytes after offset %" PRIu64 " (discarded on recovery)",
                 size - (size_t)s.valid_end, s.valid_end);
        note(ctx, path, msg);
    }
out:
    free(data);
    return problems;
}

/* Replays one segment. For the last segment a torn tail is cut off. */
static int segment_replay(stele_wal *w, uint64_t no, bool is_last, stele_wal_replay_fn fn,
                          void *ctx, stele_wal_replay_stats *stats, char *err, size_t errcap)
{
    char path[WAL_PATH_MAX + 64];
    uint8_t *data = NULL;
    size_t size = 0;
    stele_file *f = NULL;
    const char *why = NULL;
    segment_path(w->dir, no, path, sizeof(path));
    int rc = segment_read(w->io, path, &data, &size);
    if (rc) {
        snprintf(err, errcap, "%s: cannot read: %s", path, strerror(-rc));
        goto out;
    }
    if (size < WAL_HEADER_SIZE && is_last) {
        /* Crash while creating the segment: nothing in it was ever acknowledged. */
        stats->torn_bytes_discarded += size;
        rc = stele_io_unlink(w->io, path);
        if (rc == 0)
            rc = stele_io_fsync_dir(w->io, w->dir);
        if (rc)
            snprintf(err, errcap, "%s: cannot remove torn segment: %s", path, strerror(-rc));
        goto out;
    }
    if (size < WAL_HEADER_SIZE || segment_header_check(data, no, &why) != 0) {
        rc = -EBADMSG;
        snprintf(err, errcap, "%s: %s", path, why ? why : "segment shorter than its header");
        goto out;
    }
    segment_scan s = {.fn = fn, .ctx = ctx};
    segment_scan_image(data, size, no, &s);
    if (s.callback_rc) {
        rc = s.callback_rc;
        snprintf(err, errcap, "%s: replay of record %" PRIu64 " failed: %s", path, s.records,
                 rc < 0 ? strerror(-rc) : "rejected");
        goto out;
    }
    if (s.corrupt || (s.torn && !is_last)) {
        rc = -EBADMSG;
        snprintf(err, errcap,
                 "%s: damaged record at offset %" PRIu64 " (%s) with valid data after it; "
                 "refusing to start on a damaged log (run `stele check`)",
                 path, s.corrupt ? s.corrupt_at : s.valid_end, s.bad_why);
        goto out;
    }
    stats->segments_replayed++;
    stats->records_replayed += s.records;
    stats->bytes_replayed += s.valid_end;
    if (s.torn) {
        stats->torn_bytes_discarded += size - s.valid_end;
        rc = stele_io_open(w->io, path, STELE_IO_READWRITE, &f);
        if (rc == 0)
            rc = stele_io_truncate(f, s.valid_end);
        if (rc == 0)
            rc = stele_io_fsync(f);
        if (rc)
            snprintf(err, errcap, "%s: cannot cut torn tail: %s", path, strerror(-rc));
    } else if (is_last) {
        /* What was just replayed may have come from the page cache of a process that
         * died before its fsync: make it (and its name) durable before anything is
         * written after it, or a power cut later could leave a hole in mid-log. */
        rc = stele_io_open(w->io, path, STELE_IO_READWRITE, &f);
        if (rc == 0)
            rc = stele_io_fsync(f);
        if (rc == 0)
            rc = stele_io_fsync_dir(w->io, w->dir);
        if (rc)
            snprintf(err, errcap, "%s: cannot make the replayed log durable: %s", path,
                     strerror(-rc));
    }
out:
    stele_io_close(f);
    free(data);
    return rc;
}

/* ---- public API --------------------------------------------------------------- */

int stele_wal_open(const stele_wal_options *opts, stele_wal_replay_fn fn, void *ctx,
                   stele_wal_replay_stats *stats, stele_wal **out, char *err, size_t errcap)
{
    char errbuf[512];
    stele_wal_replay_stats local_stats = {0};
    segment_list segs = {0};
    stele_wal *w = NULL;
    int rc;
    if (!err) {
        err = errbuf;
        errcap = sizeof(errbuf);
    }
    err[0] = '\0';
    if (!stats)
        stats = &local_stats;
    memset(stats, 0, sizeof(*stats));
    if (strlen(opts->dir) >= WAL_PATH_MAX - 32) {
        snprintf(err, errcap, "wal directory path too long");
        return -ENAMETOOLONG;
    }
    w = calloc(1, sizeof(*w));
    if (!w)
        return -ENOMEM;
    w->io = opts->io;
    snprintf(w->dir, sizeof(w->dir), "%s", opts->dir);
    w->buffered = opts->buffered;
    w->max_pending = opts->max_pending_bytes ? opts->max_pending_bytes : WAL_DEFAULT_MAX_PENDING;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->wake_writer, NULL);
    pthread_cond_init(&w->synced_cond, NULL);
    pthread_cond_init(&w->space_cond, NULL);

    rc = stele_io_mkdir_durable(w->io, w->dir);
    if (rc) {
        snprintf(err, errcap, "%s: cannot create directory: %s", w->dir, strerror(-rc));
        goto fail;
    }
    rc = segment_list_load(w->io, w->dir, &segs);
    if (rc) {
        snprintf(err, errcap, "%s: cannot list: %s", w->dir, strerror(-rc));
        goto fail;
    }
    for (size_t i = 0; i < segs.count; i++) {
        rc = segment_replay(w, segs.numbers[i], i + 1 == segs.count, fn, ctx, stats, err, errcap);
        if (rc)
            goto fail;
    }
    w->segment_no = segs.count ? segs.numbers[segs.count - 1] + 1 : 1;
    w->oldest_segment = segs.count ? segs.numbers[0] : w->segment_no;
    w->segments_on_disk = stats->segments_replayed + 1;
    rc = segment_create(w, w->segment_no, &w->segment_file);
    if (rc) {
        snprintf(err, errcap, "%s: cannot create segment %" PRIu64 ": %s", w->dir, w->segment_no,
                 strerror(-rc));
        goto fail;
    }
    w->segment_offset = WAL_HEADER_SIZE;
    w->segment_written = WAL_HEADER_SIZE;
    if (pthread_create(&w->writer, NULL, wal_writer_main, w) != 0) {
        rc = -EAGAIN;
        snprintf(err, errcap, "cannot start the log writer thread");
        goto fail;
    }
    w->writer_started = true;
    free(segs.numbers);
    *out = w;
    return 0;
fail:
    free(segs.numbers);
    stele_wal_close(w);
    return rc;
}

void stele_wal_close(stele_wal *w)
{
    if (!w)
        return;
    if (w->writer_started) {
        pthread_mutex_lock(&w->mu);
        w->stop = true;
        pthread_cond_broadcast(&w->wake_writer);
        pthread_mutex_unlock(&w->mu);
        pthread_join(w->writer, NULL);
    }
    stele_io_close(w->segment_file);
    free(w->fill.data);
    free(w->write.data);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->wake_writer);
    pthread_cond_destroy(&w->synced_cond);
    pthread_cond_destroy(&w->space_cond);
    free(w);
}

int stele_wal_append(stele_wal *w, uint16_t type, const void *part1, size_t len1, const void *part2,
                     size_t len2, uint64_t *lsn)
{
    size_t len = len1 + len2;
    if (len == 0 || len > STELE_WAL_MAX_RECORD || type == 0 || type > 0x7fff)
        return len > STELE_WAL_MAX_RECORD ? -EMSGSIZE : -EINVAL;
    uint8_t header[WAL_RECORD_HEADER_SIZE];
    /* Checksum outside the lock: it is the costliest part of an append. */
    record_header_encode(header, (uint32_t)len, type, part1, len1, part2, len2);
    size_t total = WAL_RECORD_HEADER_SIZE + len;
    int rc = 0;
    pthread_mutex_lock(&w->mu);
    while (!w->error && w->fill.len > 0 && w->fill.len + total > w->max_pending)
        pthread_cond_wait(&w->space_cond, &w->mu);
    if (w->error) {
        rc = w->error;
        goto out;
    }
    rc = buffer_reserve(&w->fill, total);
    if (rc)
        goto out;
    uint8_t *dst = w->fill.data + w->fill.len;
    memcpy(dst, header, WAL_RECORD_HEADER_SIZE);
    if (len1)
        memcpy(dst + WAL_RECORD_HEADER_SIZE, part1, len1);
    if (len2)
        memcpy(dst + WAL_RECORD_HEADER_SIZE + len1, part2, len2);
    w->fill.len += total;
    w->appended_lsn += total;
    w->segment_offset += total;
    w->records++;
    *lsn = w->appended_lsn;
    pthread_cond_signal(&w->wake_writer);
out:
    pthread_mutex_unlock(&w->mu);
    return rc;
}

int stele_wal_wait(stele_wal *w, uint64_t lsn)
{
    pthread_mutex_lock(&w->mu);
    if (!w->buffered) {
        while (!w->error && w->synced_lsn < lsn)
            pthread_cond_wait(&w->synced_cond, &w->mu);
    }
    int rc = w->error;
    pthread_mutex_unlock(&w->mu);
    return rc;
}

int stele_wal_rotate(stele_wal *w, uint64_t *segment)
{
    pthread_mutex_lock(&w->mu);
    uint64_t target = w->appended_lsn;
    while (!w->error && w->synced_lsn < target)
        pthread_cond_wait(&w->synced_cond, &w->mu);
    int rc = w->error;
    uint64_t next = w->segment_no + 1;
    pthread_mutex_unlock(&w->mu);
    if (rc)
        return rc;

    /* No appends can run (caller serializes them) and the writer is idle: everything
     * appended is synced. Create the next segment before switching, so a failure here
     * leaves the log usable on the old segment. */
    stele_file *f = NULL;
    rc = segment_create(w, next, &f);
    pthread_mutex_lock(&w->mu);
    if (rc) {
        wal_fail_locked(w, rc);
        pthread_mutex_unlock(&w->mu);
        return rc;
    }
    stele_file *old = w->segment_file;
    w->segment_file = f;
    w->segment_no = next;
    w->segment_offset = WAL_HEADER_SIZE;
    w->segment_written = WAL_HEADER_SIZE;
    w->segments_on_disk++;
    pthread_mutex_unlock(&w->mu);
    stele_io_close(old);
    if (segment)
        *segment = next;
    return 0;
}

uint64_t stele_wal_segment(stele_wal *w)
{
    pthread_mutex_lock(&w->mu);
    uint64_t no = w->segment_no;
    pthread_mutex_unlock(&w->mu);
    return no;
}

uint64_t stele_wal_segment_bytes(stele_wal *w)
{
    pthread_mutex_lock(&w->mu);
    uint64_t n = w->segment_offset;
    pthread_mutex_unlock(&w->mu);
    return n;
}

int stele_wal_remove_before(stele_wal *w, uint64_t segment)
{
    segment_list segs = {0};
    char path[WAL_PATH_MAX + 64];
    int rc = segment_list_load(w->io, w->dir, &segs);
    size_t removed = 0;
    for (size_t i = 0; rc == 0 && i < segs.count; i++) {
        if (segs.numbers[i] >= segment)
            break;
        segment_path(w->dir, segs.numbers[i], path, sizeof(path));
        rc = stele_io_unlink(w->io, path);
        if (rc == 0)
            removed++;
    }
    if (rc == 0 && removed)
        rc = stele_io_fsync_dir(w->io, w->dir);
    pthread_mutex_lock(&w->mu);
    w->segments_on_disk = segs.count - removed;
    if (w->segments_on_disk == 0)
        w->segments_on_disk = 1;
    pthread_mutex_unlock(&w->mu);
    free(segs.numbers);
    return rc;
}

int stele_wal_error(stele_wal *w)
{
    pthread_mutex_lock(&w->mu);
    int rc = w->error;
    pthread_mutex_unlock(&w->mu);
    return rc;
}

void stele_wal_get_stats(stele_wal *w, stele_wal_stats *st)
{
    pthread_mutex_lock(&w->mu);
    st->appended_bytes = w->appended_lsn;
    st->synced_bytes = w->synced_lsn;
    st->fsyncs = w->fsyncs;
    st->records = w->records;
    st->segments = w->segments_on_disk;
    pthread_mutex_unlock(&w->mu);
}
