/*
 * io.h — the one seam through which the storage engine touches the disk.
 *
 * Every byte the write-ahead log, the block files and the token store write goes
 * through a `stele_io`, a small vtable-style interface with two implementations:
 * the real POSIX one, and a fault-injecting in-memory file system for crash tests
 * (modelled on SQLite's and RocksDB's test file systems). The fault file system keeps,
 * for every file, what a crash would leave (the "durable" image) apart from what
 * running code sees, so a test can cut the power at any instant and reopen the engine
 * on exactly what survived.
 *
 * Conventions: every function returns 0 or a negative errno (-EIO, -ENOSPC, -ENOENT…).
 * Writes are positional and all-or-error: a short write is reported as an error, never
 * as success. Paths are ordinary '/'-separated strings; the engine builds them from its
 * data directory. A failed fsync is final for that file: callers must not retry it as
 * if the data were safe (see SPEC §4).
 *
 * Threads: a stele_io and its files may be used from several threads at once; the
 * POSIX implementation relies on the kernel, the fault one on an internal mutex.
 */
#ifndef STELE_IO_H
#define STELE_IO_H

#include <stddef.h>
#include <stdint.h>

typedef struct stele_io stele_io;
typedef struct stele_file stele_file;

/* Open flags. Exactly one of READ / READWRITE; CREATE and EXCL as with open(2). */
enum {
    STELE_IO_READ = 1 << 0,
    STELE_IO_READWRITE = 1 << 1,
    STELE_IO_CREATE = 1 << 2,
    STELE_IO_EXCL = 1 << 3,
    STELE_IO_TRUNCATE = 1 << 4,
};

/* Called once per directory entry (not "." or ".."); return non-zero to stop early. */
typedef int (*stele_io_list_fn)(void *ctx, const char *name);

/* The operations an implementation provides. Internal to implementations; users call
 * the stele_io_* wrappers below. */
struct stele_io_ops {
    int (*open)(stele_io *io, const char *path, int flags, stele_file **out);
    int (*pread)(stele_file *f, void *buf, size_t len, uint64_t off, size_t *nread);
    int (*pwrite)(stele_file *f, const void *buf, size_t len, uint64_t off);
    int (*fsync)(stele_file *f);
    int (*size)(stele_file *f, uint64_t *size);
    int (*truncate)(stele_file *f, uint64_t size);
    int (*close)(stele_file *f);
    int (*rename)(stele_io *io, const char *from, const char *to);
    int (*unlink)(stele_io *io, const char *path);
    int (*mkdir)(stele_io *io, const char *path);
    int (*rmdir)(stele_io *io, const char *path);
    int (*fsync_dir)(stele_io *io, const char *path);
    int (*list)(stele_io *io, const char *dir, stele_io_list_fn fn, void *ctx);
    int (*exists)(stele_io *io, const char *path);
    void (*destroy)(stele_io *io);
};

struct stele_io {
    const struct stele_io_ops *ops;
};

/* Opens `path`. *out is owned by the caller and released with stele_io_close. */
int stele_io_open(stele_io *io, const char *path, int flags, stele_file **out);
/* Reads up to len bytes at off; *nread < len only at end of file. */
int stele_io_pread(stele_file *f, void *buf, size_t len, uint64_t off, size_t *nread);
/* Reads exactly len bytes at off, -EIO ("short read") if the file ends first. */
int stele_io_pread_full(stele_file *f, void *buf, size_t len, uint64_t off);
/* Writes all len bytes at off, or returns an error (the file may hold part of them). */
int stele_io_pwrite(stele_file *f, const void *buf, size_t len, uint64_t off);
/* Makes the file's contents durable. An error means they may not be; never retry it
 * as if they were. */
int stele_io_fsync(stele_file *f);
int stele_io_size(stele_file *f, uint64_t *size);
int stele_io_truncate(stele_file *f, uint64_t size);
/* Closes f; accepts NULL. Never makes anything durable by itself. */
int stele_io_close(stele_file *f);
/* Atomic rename; durable only after stele_io_fsync_dir on the parent directory. */
int stele_io_rename(stele_io *io, const char *from, const char *to);
int stele_io_unlink(stele_io *io, const char *path);
/* Creates a directory; 0 if it already exists. */
int stele_io_mkdir(stele_io *io, const char *path);
/* Creates a directory if missing and makes its entry durable (fsyncs the parent). */
int stele_io_mkdir_durable(stele_io *io, const char *path);
int stele_io_rmdir(stele_io *io, const char *path);
/* Makes the creations, renames and removals of entries in directory `path` durable. */
int stele_io_fsync_dir(stele_io *io, const char *path);
/* Lists the entries of `dir` in no particular order. */
int stele_io_list(stele_io *io, const char *dir, stele_io_list_fn fn, void *ctx);
/* 1 if path exists, 0 if not, negative errno on error. */
int stele_io_exists(stele_io *io, const char *path);
/* Releases an io created by one of the constructors below; accepts NULL. */
void stele_io_destroy(stele_io *io);

/* Writes a whole small file crash-safely: tmp file, write, fsync, rename, fsync dir. */
int stele_io_write_file_atomic(stele_io *io, const char *dir, const char *name, const void *buf,
                               size_t len);
/* Reads a whole file of at most max_len bytes into a malloc'd buffer (caller frees). */
int stele_io_read_file(stele_io *io, const char *path, size_t max_len, uint8_t **out,
                       size_t *out_len);

/* A sliding read window over a file, for replaying a log record by record: any byte
 * range of at most `cap` bytes is made available while the file is read in pieces of
 * `cap`, so a replay reads each byte about once and holds one piece in memory. */
typedef struct {
    stele_file *file;
    uint64_t file_size;
    uint8_t *buf;
    size_t cap;
    uint64_t buf_offset; /* file offset of buf[0] */
    size_t buf_len;
} stele_io_window;

/* Sets up a window of cap bytes (malloc'd) over the first file_size bytes of f. -ENOMEM. */
int stele_io_window_init(stele_io_window *w, stele_file *f, uint64_t file_size, size_t cap);
void stele_io_window_free(stele_io_window *w);
/* Points *out at bytes [off, off+len) of the file, valid until the next call.
 * -ENODATA when the file ends first, -EINVAL when len exceeds the window, or the read's
 * error. */
int stele_io_window_get(stele_io_window *w, uint64_t off, size_t len, const uint8_t **out);

/* ---- POSIX implementation -------------------------------------------------------- */

/* Creates the real-disk implementation. Owned by the caller. */
int stele_io_posix_create(stele_io **out);

/* ---- Fault-injecting in-memory implementation (tests) ----------------------------- */

/* What a power cut leaves of data written but not fsync'd. */
enum stele_fault_cut_mode {
    STELE_FAULT_CUT_DROP = 0,    /* all unsynced writes vanish */
    STELE_FAULT_CUT_TORN = 1,    /* a random prefix of each file's unsynced tail survives */
    STELE_FAULT_CUT_GARBAGE = 2, /* like TORN, but the surviving tail may hold random bytes */
};

/* Which operation a scheduled fault hits. */
enum stele_fault_op {
    STELE_FAULT_OP_WRITE = 0,
    STELE_FAULT_OP_FSYNC = 1,
};

/* Creates an empty in-memory file system; `seed` drives every random choice so a
 * failing run can be replayed. Owned by the caller (stele_io_destroy). */
int stele_io_fault_create(uint64_t seed, stele_io **out);
/* Makes the `nth` next operation of kind `op` (1 = the very next one) fail with
 * -errno_value (EIO, ENOSPC…). For WRITE with cut mode TORN, part of the data may
 * land before the error. */
void stele_io_fault_fail_after(stele_io *io, enum stele_fault_op op, uint64_t nth, int errno_value);
/* Every write that would grow the total stored bytes above `bytes` fails -ENOSPC
 * (0 = no limit). */
void stele_io_fault_set_capacity(stele_io *io, uint64_t bytes);
/* Cuts the power: every open file handle becomes dead (all calls on it fail -EIO,
 * close succeeds), and the file system becomes what was durable, as `mode` says.
 * The io itself stays usable, like a machine that rebooted. */
void stele_io_fault_power_cut(stele_io *io, enum stele_fault_cut_mode mode);
/* Counts of operations so far, for tests that schedule faults at random points. */
uint64_t stele_io_fault_op_count(stele_io *io, enum stele_fault_op op);
/* Flips one bit of a stored file (both images), to test checksum detection. */
int stele_io_fault_flip_bit(stele_io *io, const char *path, uint64_t bit_offset);

#endif
