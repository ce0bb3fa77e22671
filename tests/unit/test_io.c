/*
 * test_io.c — unit tests of the storage I/O seam: both implementations, and above all
 * the fault model the crash tests rely on.
 *
 * The same behavioural suite (run_common_suite) runs on the real disk, in a mkdtemp
 * directory under /tmp, and on the fault file system, so the two cannot drift apart
 * at the edges. The fault-model tests then check each promise io_fault.c makes about
 * what survives a power cut; the property tests loop over seeds and print the seed of
 * a failing case so it can be replayed alone.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "stele/io.h"

#include "test_util.h"

/* Seeds per property test: enough that every random branch of the cut (keep none,
 * keep all, keep some; each sector kept or reverted) is hit many times, while the
 * whole file still runs in well under a second under ASan. */
#define PROPERTY_SEEDS 400

/* Bytes per sector of the fault model's TORN overwrites (io_fault.c). */
#define SECTOR 512

/* Prints the seed and the broken property, then fails the test. */
#define PROP_CHECK(cond, seed, ...)                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            print_error("property broken with seed %" PRIu64 ": ", (uint64_t)(seed));              \
            print_error(__VA_ARGS__);                                                              \
            print_error("\n");                                                                     \
            fail();                                                                                \
        }                                                                                          \
    } while (0)

/* ---- helpers ------------------------------------------------------------------- */

static void fill_pattern(uint8_t *buf, size_t len, uint64_t seed)
{
    uint64_t state = seed;
    size_t i;

    for (i = 0; i < len; i++)
        buf[i] = (uint8_t)test_rng_next(&state);
}

/* Writes path completely (create/truncate), optionally fsync'ing the file. */
static void put_file(stele_io *io, const char *path, const void *buf, size_t len, bool sync)
{
    stele_file *f = NULL;

    assert_int_equal(
        stele_io_open(io, path, STELE_IO_READWRITE | STELE_IO_CREATE | STELE_IO_TRUNCATE, &f), 0);
    assert_int_equal(stele_io_pwrite(f, buf, len, 0), 0);
    if (sync)
        assert_int_equal(stele_io_fsync(f), 0);
    assert_int_equal(stele_io_close(f), 0);
}

/* Asserts path holds exactly buf[0..len). */
static void expect_file(stele_io *io, const char *path, const void *buf, size_t len)
{
    uint8_t *data = NULL;
    size_t data_len = 0;

    assert_int_equal(stele_io_read_file(io, path, len + 1, &data, &data_len), 0);
    assert_int_equal(data_len, len);
    if (len > 0)
        assert_memory_equal(data, buf, len);
    free(data);
}

static void expect_text(stele_io *io, const char *path, const char *text)
{
    expect_file(io, path, text, strlen(text));
}

struct name_set {
    char names[16][64];
    size_t count;
    int stop_after; /* > 0: return 1 after this many; < 0: return this errno */
};

static int collect_name(void *ctx, const char *name)
{
    struct name_set *set = ctx;

    if (set->stop_after < 0)
        return set->stop_after;
    if (set->count < 16)
        snprintf(set->names[set->count], sizeof set->names[0], "%s", name);
    set->count++;
    return set->stop_after > 0 && set->count >= (size_t)set->stop_after ? 1 : 0;
}

static bool name_set_has(const struct name_set *set, const char *name)
{
    size_t i;

    for (i = 0; i < set->count && i < 16; i++) {
        if (strcmp(set->names[i], name) == 0)
            return true;
    }
    return false;
}

/* "<dir>/<name>" into out; the test paths are short, so a truncation is a test bug. */
static char *join(char *out, size_t cap, const char *dir, const char *name)
{
    int n = snprintf(out, cap, "%s/%s", dir, name);

    assert_true(n > 0 && (size_t)n < cap);
    return out;
}

/* ---- the suite both implementations pass ---------------------------------------- */

static void run_common_suite(stele_io *io, const char *root)
{
    char path[512];
    char dir[512];
    char other[512];
    stele_file *f = NULL;
    uint8_t buf[64];
    size_t n = 0;
    uint64_t size = 0;
    struct name_set set = {0};

    /* Open flags: exactly one access mode; TRUNCATE needs write; EXCL needs CREATE. */
    join(path, sizeof path, root, "a");
    assert_int_equal(stele_io_open(io, path, STELE_IO_READ | STELE_IO_READWRITE, &f), -EINVAL);
    assert_null(f);
    assert_int_equal(stele_io_open(io, path, STELE_IO_CREATE, &f), -EINVAL);
    assert_int_equal(stele_io_open(io, path, STELE_IO_READ | STELE_IO_TRUNCATE, &f), -EINVAL);
    assert_int_equal(stele_io_open(io, path, STELE_IO_READWRITE | STELE_IO_EXCL, &f), -EINVAL);
    assert_int_equal(stele_io_open(io, path, STELE_IO_READWRITE | (1 << 20), &f), -EINVAL);

    /* Missing file, create, EXCL. */
    assert_int_equal(stele_io_exists(io, path), 0);
    assert_int_equal(stele_io_open(io, path, STELE_IO_READ, &f), -ENOENT);
    assert_int_equal(
        stele_io_open(io, path, STELE_IO_READWRITE | STELE_IO_CREATE | STELE_IO_EXCL, &f), 0);
    assert_int_equal(stele_io_exists(io, path), 1);

    /* Positional writes, holes read as zeros, reads stop at the end. */
    assert_int_equal(stele_io_pwrite(f, "hello", 5, 0), 0);
    assert_int_equal(stele_io_pwrite(f, "world", 5, 10), 0);
    assert_int_equal(stele_io_size(f, &size), 0);
    assert_int_equal(size, 15);
    assert_int_equal(stele_io_pread(f, buf, sizeof buf, 0, &n), 0);
    assert_int_equal(n, 15);
    assert_memory_equal(buf, "hello\0\0\0\0\0world", 15);
    assert_int_equal(stele_io_pread(f, buf, sizeof buf, 15, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(stele_io_pread(f, buf, sizeof buf, 1000, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(stele_io_pread_full(f, buf, 5, 10), 0);
    assert_memory_equal(buf, "world", 5);
    assert_int_equal(stele_io_pread_full(f, buf, 6, 10), -EIO); /* short read */

    /* Truncate shrinks, and growth after it reads zeros, not the old bytes. */
    assert_int_equal(stele_io_truncate(f, 3), 0);
    assert_int_equal(stele_io_truncate(f, 6), 0);
    assert_int_equal(stele_io_pread(f, buf, sizeof buf, 0, &n), 0);
    assert_int_equal(n, 6);
    assert_memory_equal(buf, "hel\0\0\0", 6);
    assert_int_equal(stele_io_fsync(f), 0);
    assert_int_equal(stele_io_close(f), 0);
    f = NULL;
    assert_int_equal(stele_io_close(NULL), 0);

    assert_int_equal(
        stele_io_open(io, path, STELE_IO_READWRITE | STELE_IO_CREATE | STELE_IO_EXCL, &f), -EEXIST);

    /* A read-only handle refuses writes; fsync on it is allowed. */
    assert_int_equal(stele_io_open(io, path, STELE_IO_READ, &f), 0);
    assert_true(stele_io_pwrite(f, "x", 1, 0) < 0);
    assert_int_equal(stele_io_fsync(f), 0);
    assert_int_equal(stele_io_close(f), 0);
    f = NULL;

    /* TRUNCATE empties an existing file. */
    assert_int_equal(stele_io_open(io, path, STELE_IO_READWRITE | STELE_IO_TRUNCATE, &f), 0);
    assert_int_equal(stele_io_size(f, &size), 0);
    assert_int_equal(size, 0);
    assert_int_equal(stele_io_close(f), 0);
    f = NULL;

    /* Directories. */
    join(dir, sizeof dir, root, "sub");
    assert_int_equal(stele_io_mkdir(io, dir), 0);
    assert_int_equal(stele_io_mkdir(io, dir), 0);        /* exists: fine */
    assert_int_equal(stele_io_mkdir(io, path), -EEXIST); /* a file is in the way */
    assert_int_equal(stele_io_exists(io, dir), 1);
    assert_int_equal(stele_io_open(io, dir, STELE_IO_READ, &f), -EISDIR);
    assert_null(f);
    assert_int_equal(stele_io_open(io, dir, STELE_IO_READWRITE, &f), -EISDIR);
    assert_int_equal(stele_io_unlink(io, dir), -EISDIR);
    join(other, sizeof other, root, "missing/x");
    assert_int_equal(stele_io_open(io, other, STELE_IO_READWRITE | STELE_IO_CREATE, &f), -ENOENT);
    assert_int_equal(stele_io_exists(io, other), 0);
    join(other, sizeof other, root, "a/x"); /* "a" is a file */
    assert_int_equal(stele_io_open(io, other, STELE_IO_READWRITE | STELE_IO_CREATE, &f), -ENOTDIR);
    assert_int_equal(stele_io_exists(io, other), 0);
    join(other, sizeof other, root, "missing/deeper");
    assert_int_equal(stele_io_mkdir(io, other), -ENOENT);

    join(other, sizeof other, dir, "inner");
    put_file(io, other, "in", 2, true);
    assert_int_equal(stele_io_rmdir(io, dir), -ENOTEMPTY);
    assert_int_equal(stele_io_rmdir(io, path), -ENOTDIR);
    assert_int_equal(stele_io_fsync_dir(io, dir), 0);
    assert_int_equal(stele_io_fsync_dir(io, root), 0);

    /* Listing: files and subdirectories, no "." or "..", early stop, error passed up. */
    assert_int_equal(stele_io_list(io, root, collect_name, &set), 0);
    assert_int_equal(set.count, 2);
    assert_true(name_set_has(&set, "a"));
    assert_true(name_set_has(&set, "sub"));
    memset(&set, 0, sizeof set);
    set.stop_after = 1;
    assert_int_equal(stele_io_list(io, root, collect_name, &set), 0);
    assert_int_equal(set.count, 1);
    memset(&set, 0, sizeof set);
    set.stop_after = -ENOMEM;
    assert_int_equal(stele_io_list(io, root, collect_name, &set), -ENOMEM);
    memset(&set, 0, sizeof set);
    assert_int_equal(stele_io_list(io, path, collect_name, &set), -ENOTDIR);
    join(other, sizeof other, root, "nope");
    assert_int_equal(stele_io_list(io, other, collect_name, &set), -ENOENT);

    /* Rename replaces the target atomically; a missing source is ENOENT. */
    join(other, sizeof other, root, "b");
    put_file(io, other, "bee", 3, true);
    put_file(io, path, "ay", 2, true);
    assert_int_equal(stele_io_rename(io, path, other), 0);
    assert_int_equal(stele_io_exists(io, path), 0);
    expect_text(io, other, "ay");
    assert_int_equal(stele_io_rename(io, path, other), -ENOENT);
    assert_int_equal(stele_io_rename(io, other, dir), -EISDIR);

    /* Unlink, then rmdir of an emptied directory. */
    assert_int_equal(stele_io_unlink(io, other), 0);
    assert_int_equal(stele_io_unlink(io, other), -ENOENT);
    join(other, sizeof other, dir, "inner");
    assert_int_equal(stele_io_unlink(io, other), 0);
    assert_int_equal(stele_io_rmdir(io, dir), 0);
    assert_int_equal(stele_io_exists(io, dir), 0);
    assert_int_equal(stele_io_rmdir(io, dir), -ENOENT);

    /* write_file_atomic: new file, replacement, no leftover tmp. */
    assert_int_equal(stele_io_write_file_atomic(io, root, "state", "one", 3), 0);
    expect_text(io, join(path, sizeof path, root, "state"), "one");
    assert_int_equal(stele_io_write_file_atomic(io, root, "state", "second", 6), 0);
    expect_text(io, path, "second");
    assert_int_equal(stele_io_exists(io, join(other, sizeof other, root, "state.tmp")), 0);
    assert_int_equal(stele_io_write_file_atomic(io, root, "a/b", "x", 1), -EINVAL);
    assert_int_equal(stele_io_write_file_atomic(io, root, "empty", "", 0), 0);
    expect_text(io, join(path, sizeof path, root, "empty"), "");

    /* read_file is bounded. */
    {
        uint8_t *data = (uint8_t *)"not null";
        size_t len = 99;

        join(path, sizeof path, root, "state");
        assert_int_equal(stele_io_read_file(io, path, 5, &data, &len), -EFBIG);
        assert_null(data);
        assert_int_equal(len, 0);
        assert_int_equal(stele_io_read_file(io, path, 6, &data, &len), 0);
        assert_int_equal(len, 6);
        assert_memory_equal(data, "second", 6);
        free(data);
        data = NULL;
        assert_int_equal(
            stele_io_read_file(io, join(path, sizeof path, root, "empty"), 0, &data, &len), 0);
        assert_non_null(data);
        assert_int_equal(len, 0);
        free(data);
        data = NULL;
        assert_int_equal(
            stele_io_read_file(io, join(path, sizeof path, root, "nope"), 10, &data, &len),
            -ENOENT);
        assert_null(data);
    }
}

/* ---- POSIX ---------------------------------------------------------------------- */

struct posix_fixture {
    stele_io *io;
    char root[64];
};

static int posix_setup(void **state)
{
    struct posix_fixture *fx = calloc(1, sizeof *fx);

    if (fx == NULL)
        return -1;
    snprintf(fx->root, sizeof fx->root, "/tmp/stele_test_io_XXXXXX");
    if (mkdtemp(fx->root) == NULL || stele_io_posix_create(&fx->io) != 0) {
        free(fx);
        return -1;
    }
    *state = fx;
    return 0;
}

static int posix_teardown(void **state)
{
    struct posix_fixture *fx = *state;

    stele_io_destroy(fx->io);
    test_remove_tree(fx->root);
    free(fx);
    return 0;
}

static void test_posix_common(void **state)
{
    struct posix_fixture *fx = *state;

    run_common_suite(fx->io, fx->root);
}

/* The descriptor behind an open file, found through /proc by its path. */
static int find_fd_of(const char *path)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *de = NULL;
    char link[PATH_MAX];
    char target[PATH_MAX];
    int found = -1;

    assert_non_null(d);
    while ((de = readdir(d)) != NULL) {
        ssize_t n;

        if (de->d_name[0] == '.')
            continue;
        snprintf(link, sizeof link, "/proc/self/fd/%s", de->d_name);
        n = readlink(link, target, sizeof target - 1);
        if (n < 0)
            continue;
        target[n] = '\0';
        if (strcmp(target, path) == 0)
            found = atoi(de->d_name);
    }
    closedir(d);
    return found;
}

static void test_posix_modes_and_cloexec(void **state)
{
    struct posix_fixture *fx = *state;
    char path[512];
    char dir[512];
    struct stat st;
    stele_file *f = NULL;
    int fd = -1;
    mode_t old_umask = umask(0); /* so the modes seen are the ones we asked for */

    join(path, sizeof path, fx->root, "secret");
    assert_int_equal(stele_io_open(fx->io, path, STELE_IO_READWRITE | STELE_IO_CREATE, &f), 0);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    fd = find_fd_of(path);
    assert_true(fd >= 0);
    assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
    assert_int_equal(stele_io_close(f), 0);

    join(dir, sizeof dir, fx->root, "d");
    assert_int_equal(stele_io_mkdir(fx->io, dir), 0);
    assert_int_equal(stat(dir, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    umask(old_umask);
}

/* /dev/full fails every write with ENOSPC and refuses fsync: real kernel errors. */
static void test_posix_errors_propagate_and_fsync_is_sticky(void **state)
{
    struct posix_fixture *fx = *state;
    stele_file *f = NULL;

    if (stele_io_open(fx->io, "/dev/full", STELE_IO_READWRITE, &f) != 0)
        skip();
    assert_int_equal(stele_io_pwrite(f, "x", 1, 0), -ENOSPC);
    assert_int_equal(stele_io_fsync(f), -EINVAL);
    /* The first failure is final: a retry must not report success. */
    assert_int_equal(stele_io_fsync(f), -EIO);
    assert_int_equal(stele_io_close(f), 0);
}

/* ---- fault file system: common suite and basics ---------------------------------- */

static int fault_setup(void **state)
{
    stele_io *io = NULL;

    if (stele_io_fault_create(42, &io) != 0)
        return -1;
    *state = io;
    return 0;
}

static int fault_teardown(void **state)
{
    stele_io_destroy(*state);
    return 0;
}

static void test_fault_common(void **state)
{
    stele_io *io = *state;

    assert_int_equal(stele_io_mkdir(io, "/data"), 0);
    run_common_suite(io, "/data");
    /* Paths are normalised: repeated and trailing slashes, "." components. */
    assert_int_equal(stele_io_exists(io, "data//state"), 1);
    assert_int_equal(stele_io_exists(io, "./data/./state"), 1);
    assert_int_equal(stele_io_exists(io, "/data/"), 1);
    assert_int_equal(stele_io_exists(io, "/data/../data"), -EINVAL);
}

static void test_fault_rename_directory_rules(void **state)
{
    stele_io *io = *state;

    assert_int_equal(stele_io_mkdir(io, "d"), 0);
    assert_int_equal(stele_io_mkdir(io, "d/e"), 0);
    /* A directory cannot move below itself. */
    assert_int_equal(stele_io_rename(io, "d", "d/e/f"), -EINVAL);
    assert_int_equal(stele_io_rename(io, "d", "d/f"), -EINVAL);
    /* A directory replaces only an empty directory, and never a file (nor vice versa). */
    assert_int_equal(stele_io_mkdir(io, "g"), 0);
    assert_int_equal(stele_io_rename(io, "g", "d"), -ENOTEMPTY);
    assert_int_equal(stele_io_mkdir(io, "h"), 0);
    assert_int_equal(stele_io_rename(io, "g", "h"), 0);
    assert_int_equal(stele_io_exists(io, "g"), 0);
    put_file(io, "file", "x", 1, false);
    assert_int_equal(stele_io_rename(io, "h", "file"), -ENOTDIR);
    assert_int_equal(stele_io_rename(io, "file", "h"), -EISDIR);
    /* Renaming a name onto itself does nothing. */
    assert_int_equal(stele_io_rename(io, "file", "file"), 0);
    expect_text(io, "file", "x");
    /* The root is not a name that can move or be removed. */
    assert_int_equal(stele_io_rename(io, "/", "x"), -EBUSY);
    assert_int_equal(stele_io_rmdir(io, "/"), -EBUSY);
}

/* ---- fault file system: the power-cut model ------------------------------------- */

static stele_io *new_fault(uint64_t seed)
{
    stele_io *io = NULL;

    assert_int_equal(stele_io_fault_create(seed, &io), 0);
    return io;
}

static void test_fault_synced_data_survives_cut(void **state)
{
    stele_io *io = new_fault(1);
    stele_file *f = NULL;
    uint8_t buf[16];
    size_t n = 0;
    uint64_t size = 0;
    enum stele_fault_cut_mode mode;

    (void)state;
    for (mode = STELE_FAULT_CUT_DROP; mode <= STELE_FAULT_CUT_GARBAGE; mode++) {
        put_file(io, "f", "durable", 7, true);
        assert_int_equal(stele_io_fsync_dir(io, "/"), 0);
        stele_io_fault_power_cut(io, mode);
        expect_text(io, "f", "durable");
    }

    /* Every open handle is dead after the cut; close still works and frees it. */
    assert_int_equal(stele_io_open(io, "f", STELE_IO_READWRITE, &f), 0);
    stele_io_fault_power_cut(io, STELE_FAULT_CUT_DROP);
    assert_int_equal(stele_io_pread(f, buf, sizeof buf, 0, &n), -EIO);
    assert_int_equal(stele_io_pwrite(f, "x", 1, 0), -EIO);
    assert_int_equal(stele_io_fsync(f), -EIO);
    assert_int_equal(stele_io_size(f, &size), -EIO);
    assert_int_equal(stele_io_truncate(f, 0), -EIO);
    assert_int_equal(stele_io_close(f), 0);
    /* The io itself works on, like a rebooted machine. */
    expect_text(io, "f", "durable");
    stele_io_destroy(io);
}

static void test_fault_drop_loses_unsynced_writes(void **state)
{
    stele_io *io = new_fault(2);
    stele_file *f = NULL;

    (void)state;
    put_file(io, "f", "AAAAAAAA", 8, true);
    assert_int_equal(stele_io_fsync_dir(io, "/"), 0);
    assert_int_equal(stele_io_open(io, "f", STELE_IO_READWRITE, &f), 0);
    assert_int_equal(stele_io_pwrite(f, "tail", 4, 8), 0); /* append */
    assert_int_equal(stele_io_pwrite(f, "BB", 2, 2), 0);   /* overwrite durable bytes */
    expect_text(io, "f", "AABBAAAAtail");                  /* running code sees all */
    stele_io_fault_power_cut(io, STELE_FAULT_CUT_DROP);
    assert_int_equal(stele_io_close(f), 0);
    expect_text(io, "f", "AAAAAAAA");

    /* An unsynced shrinking truncate is undone too. */
    assert_int_equal(stele_io_open(io, "f", STELE_IO_READWRITE, &f), 0);
    assert_int_equal(stele_io_truncate(f, 2), 0);
    assert_int_equal(stele_io_close(f), 0);
    stele_io_fault_power_cut(io, STELE_FAULT_CUT_TORN);
    expect_text(io, "f", "AAAAAAAA");
    stele_io_destroy(io);
}

/* TORN keeps exactly durable image + a prefix of the unsynced tail, and over many
 * seeds every prefix length class occurs (so TORN is not secretly DROP or "keep all"). */
static void test_fault_torn_keeps_prefix_of_tail(void **state)
{
    uint8_t durable[700];
    uint8_t tail[3000];
    uint64_t seed;
    int saw_none = 0, saw_all = 0, saw_part = 0;

    (void)state;
    for (seed = 0; seed < PROPERTY_SEEDS; seed++) {
        stele_io *io = new_fault(seed);
        stele_file *f = NULL;
        uint64_t rng = seed;
        size_t durable_len = (size_t)(test_rng_next(&rng) % sizeof durable);
        size_t tail_len = 1 + (size_t)(test_rng_next(&rng) % sizeof tail);
        uint8_t *got = NULL;
        size_t got_len = 0;

        fill_pattern(durable, durable_len, seed);
        fill_pattern(tail, tail_len, ~seed);
        put_file(io, "seg", durable, durable_len, true);
        assert_int_equal(stele_io_fsync_dir(io, "/"), 0);
        assert_int_equal(stele_io_open(io, "seg", STELE_IO_READWRITE, &f), 0);
        /* Several appends, as a log writes them. */
        {
            size_t off = 0;

            while (off < tail_len) {
                size_t chunk = 1 + (size_t)(test_rng_next(&rng) % 400);

                if (chunk > tail_len - off)
                    chunk = tail_len - off;
                assert_int_equal(stele_io_pwrite(f, tail + off, chunk, durable_len + off), 0);
                off += chunk;
            }
        }
        stele_io_fault_power_cut(io, STELE_FAULT_CUT_TORN);
        assert_int_equal(stele_io_close(f), 0);
        assert_int_equal(stele_io_read_file(io, "seg", 1 << 20, &got, &got_len), 0);
        PROP_CHECK(got_len >= durable_len && got_len <= durable_len + tail_len, seed,
                   "length %zu outside [%zu, %zu]", got_len, durable_len, durable_len + tail_len);
        PROP_CHECK(durable_len == 0 || memcmp(got, durable, durable_len) == 0, seed,
                   "durable bytes changed");
        PROP_CHECK(got_len == durable_len ||
                       memcmp(got + durable_len, tail, got_len - durable_len) == 0,
                   seed, "kept tail is not a prefix of what was written");
        saw_none += got_len == durable_len;
        saw_all += got_len == durable_len + tail_len;
        saw_part += got_len > durable_len && got_len < durable_len + tail_len;
        free(got);
        stele_io_destroy(io);
    }
    assert_true(saw_part > PROPERTY_SEEDS / 2);
    assert_true(saw_none > 0);
    assert_true(saw_all > 0);
}

/* GARBAGE keeps a prefix's length but corrupts some kept bytes; durable bytes intact. */
static void test_fault_garbage_corrupts_kept_tail(void **state)
{
    uint8_t durable[100];
    uint8_t tail[1000];
    uint64_t seed;
    int saw_garbage = 0;

    (void)state;
    fill_pattern(durable, sizeof durable, 7);
    fill_pattern(tail, sizeof tail, 8);
    for (seed = 0; seed < PROPERTY_SEEDS; seed++) {
        stele_io *io = new_fault(seed);
        stele_file *f = NULL;
        uint8_t *got = NULL;
        size_t got_len = 0;

        put_file(io, "seg", durable, sizeof durable, true);
        assert_int_equal(stele_io_fsync_dir(io, "/"), 0);
        assert_int_equal(stele_io_open(io, "seg", STELE_IO_READWRITE, &f), 0);
        assert_int_equal(stele_io_pwrite(f, tail, sizeof tail, sizeof durable), 0);
        stele_io_fault_power_cut(io, STELE_FAULT_CUT_GARBAGE);
        assert_int_equal(stele_io_close(f), 0);
        assert_int_equal(stele_io_read_file(io, "seg", 1 << 20, &got, &got_len), 0);
        PROP_CHECK(got_len >= sizeof durable && got_len <= sizeof durable + sizeof tail, seed,
                   "length %zu", got_len);
        PROP_CHECK(memcmp(got, durable, sizeof durable) == 0, seed, "durable bytes changed");
        if (got_len > sizeof durable) {
            PROP_CHECK(memcmp(got + sizeof durable, tail, got_len - sizeof durable) != 0, seed,
                       "GARBAGE kept %zu tail bytes without corrupting any",
                       got_len - sizeof durable);
            saw_garbage++;
        }
        free(got);
        stele_io_destroy(io);
    }
    assert_true(saw_garbage > PROPERTY_SEEDS / 2);
}

/* Unsynced overwrites of durable bytes: DROP reverts them; TORN keeps or reverts each
 * whole 512-byte sector, and both outcomes occur. */
static void test_fault_torn_overwrites_per_sector(void **state)
{
    enum { SECTORS = 8 };
    uint8_t old_img[SECTORS * SECTOR];
    uint8_t new_img[SECTORS * SECTOR];
    uint64_t seed;
    int saw_kept = 0, saw_reverted = 0;

    (void)state;
    memset(old_img, 'o', sizeof old_img);
    memset(new_img, 'n', sizeof new_img);
    for (seed = 0; seed < PROPERTY_SEEDS / 4; seed++) {
        stele_io *io = new_fault(seed);
        stele_file *f = NULL;
        uint8_t *got = NULL;
        size_t got_len = 0;
        size_t s;

        put_file(io, "blk", old_img, sizeof old_img, true);
        assert_int_equal(stele_io_fsync_dir(io, "/"), 0);
        assert_int_equal(stele_io_open(io, "blk", STELE_IO_READWRITE, &f), 0);
        assert_int_equal(stele_io_pwrite(f, new_img, sizeof new_img, 0), 0);
        assert_int_equal(stele_io_close(f), 0);
        stele_io_fault_power_cut(io, STELE_FAULT_CUT_TORN);
        assert_int_equal(stele_io_read_file(io, "blk", 1 << 20, &got, &got_len), 0);
        PROP_CHECK(got_len == sizeof old_img, seed, "length changed to %zu", got_len);
        for (s = 0; s < SECTORS; s++) {
            bool old_sector = memcmp(got + s * SECTOR, old_img, SECTOR) == 0;
            bool new_sector = memcmp(got + s * SECTOR, new_img, SECTOR) == 0;

            PROP_CHECK(old_sector || new_sector, seed, "sector %zu is mixed", s);
            saw_kept += new_sector;
            saw_reverted += old_sector;
        }
        free(got);

        /* DROP always reverts. */
        assert_int_equal(stele_io_open(io, "blk", STELE_IO_READWRITE, &f), 0);
        assert_int_equal(stele_io_pwrite(f, new_img, sizeof new_img, 0), 0);
        assert_int_equal(stele_io_close(f), 0);
        stele_io_fault_power_cut(io, STELE_FAULT_CUT_DROP);
        assert_int_equal(stele_io_read_file(io, "blk", 1 << 20, &got, &got_len), 0);
        PROP_CHECK(got_len == sizeof old_img || got_len == sizeof new_img, seed, "length");
        free(got);
        stele_io_destroy(io);
    }
    assert_true(saw_kept > 0);
    assert_true(saw_reverted > 0);
}

static void test_fault_new_file_needs_dir_fsync(void **state)
{
    stele_io *io = new_fault(3);

    (void)state;
    /* Created and fsync'd, but the directory never was: the name vanishes. */
    put_file(io, "lost", "data", 4, true);
    stele_io_fault_power_cut(io, STELE_FAULT_CUT_TORN);
    assert_int_equal(stele_io_exists(io, "lost"), 0);

    /* With the directory fsync'd, it survives. */
    put_file(io, "kept", "data", 4, true);
    assert_int_equal(stele_io_fsync_dir(io, "/"), 0);
    stele_io_fault_power_cut(io, STELE_FAULT_CUT_TORN);
    expect_text(io, "kept", "data");

    /* Directory fsync'd right after create, file never: the name survives, empty. */
    put_file(io, "empty", "data", 4, false);
    assert_int_equal(stele_io_fsync_dir(io, "/"), 0);
    stele_io_fault_power_cut(io, STELE_FAULT_CUT_DROP);
    expect_text(io, "empty", "");

    /* A new directory needs its parent fsync'd; everything below it vanishes with it. */
    assert_int_equal(stele_io_mkdir(io, "wal"), 0);
    put_file(io, "wal/000001", "rec", 3, true);
    assert_int_equal(stele_io_fsync_dir(io, "wal"), 0);
    stele_io_fault_power_cut(io, STELE_FAULT_CUT_DROP);
    assert_int_equal(stele_io_exists(io, "wal"), 0);

    assert_int_equal(stele_io_mkdir(io, "wal"), 0);
    assert_int_equal(stele_io_fsync_dir(io, "/"), 0);
    put_file(io, "wal/000001", "rec", 3, true);
    assert_int_equal(stele_io_fsync_dir(io, "wal"), 0);
    stele_io_fault_power_cut(io, STELE_FAULT_CUT_DROP);
    expect_text(io, "wal/000001", "rec");
    stele_io_destroy(io);
}

static void test_fault_rename_reverts_without_dir_fsync(void **state)
{
    stele_io *io = new_fault(4);

    (void)state;
    put_file(io, "cfg", "old", 3, true);
    put_file(io, "cfg.tmp", "new", 3, true);
    assert_int_equal(stele_io_fsync_dir(io, "/"), 0); /* both names durable */

    assert_int_equal(stele_io_rename(io, "cfg.tmp", "cfg"), 0);
    expect_text(io, "cfg", "new");
    assert_int_equal(stele_io_exists(io, "cfg.tmp"), 0);
    stele_io_fault_power_cut(io, STELE_FAULT_CUT_TORN);
    /* The rename reverts; each name keeps its own inode's durable bytes. */
    expect_text(io, "cfg", "old");
    expect_text(io, "cfg.tmp", "new");

    assert_int_equal(stele_io_rename(io, "cfg.tmp", "cfg"), 0);
    assert_int_equal(stele_io_fsync_dir(io, "/"), 0);
    stele_io_fault_power_cut(io, STELE_FAULT_CUT_TORN);
    expect_text(io, "cfg", "new");
    assert_int_equal(stele_io_exists(io, "cfg.tmp"), 0);

    /* Renaming moves the inode, not data: the unsynced write made through the old name
     * is still unsynced under the new one. */
    {
        stele_file *f = NULL;

        assert_int_equal(stele_io_open(io, "cfg", STELE_IO_READWRITE, &f), 0);
        assert_int_equal(stele_io_pwrite(f, "NEWER", 5, 0), 0);
        assert_int_equal(stele_io_close(f), 0);
        assert_int_equal(stele_io_rename(io, "cfg", "moved"), 0);
        assert_int_equal(stele_io_fsync_dir(io, "/"), 0);
        stele_io_fault_power_cut(io, STELE_FAULT_CUT_DROP);
        expect_text(io, "moved", "new");
    }

    /* Cross-directory rename with only the destination fsync'd: after a cut the file
     * has both names (a hard link), which POSIX allows and recovery must tolerate. */
    assert_int_equal(stele_io_mkdir(io, "a"), 0);
    assert_int_equal(stele_io_mkdir(io, "b"), 0);
    assert_int_equal(stele_io_fsync_dir(io, "/"), 0);
    put_file(io, "a/x", "xx", 2, true);
    assert_int_equal(stele_io_fsync_dir(io, "a"), 0);
    assert_int_equal(stele_io_rename(io, "a/x", "b/x"), 0);
    assert_int_equal(stele_io_fsync_dir(io, "b"), 0);
    stele_io_fault_power_cut(io, STELE_FAULT_CUT_DROP);
    expect_text(io, "a/x", "xx");
    expect_text(io, "b/x", "xx");
    stele_io_destroy(io);
}

static void test_fault_unlink_reverts_without_dir_fsync(void **state)
{
    stele_io *io = new_fault(5);
    stele_file *f = NULL;
    uint8_t buf[8];
    size_t n = 0;

    (void)state;
    put_file(io, "seg", "synced", 6, true);
    assert_int_equal(stele_io_fsync_dir(io, "/"), 0);
    assert_int_equal(stele_io_open(io, "seg", STELE_IO_READWRITE, &f), 0);
    assert_int_equal(stele_io_pwrite(f, "+more", 5, 6), 0);
    assert_int_equal(stele_io_unlink(io, "seg"), 0);
    assert_int_equal(stele_io_exists(io, "seg"), 0);
    /* The open handle still reads the unlinked file. */
    assert_int_equal(stele_io_pread(f, buf, sizeof buf, 0, &n), 0);
    assert_int_equal(n, 8);
    assert_int_equal(stele_io_close(f), 0);
    /* A new file under the same name is a different inode. */
    put_file(io, "seg", "other", 5, true);
    stele_io_fault_power_cut(io, STELE_FAULT_CUT_DROP);
    /* The unlink and the re-create were never dir-fsync'd: the old file is back with
     * its durable bytes only. */
    expect_text(io, "seg", "synced");

    assert_int_equal(stele_io_unlink(io, "seg"), 0);
    assert_int_equal(stele_io_fsync_dir(io, "/"), 0);
    stele_io_fault_power_cut(io, STELE_FAULT_CUT_DROP);
    assert_int_equal(stele_io_exists(io, "seg"), 0);

    /* rmdir reverts the same way, with the directory's durable contents. */
    assert_int_equal(stele_io_mkdir(io, "d"), 0);
    assert_int_equal(stele_io_fsync_dir(io, "/"), 0);
    put_file(io, "d/f", "in d", 4, true);
    assert_int_equal(stele_io_fsync_dir(io, "d"), 0);
    assert_int_equal(stele_io_unlink(io, "d/f"), 0);
    assert_int_equal(stele_io_rmdir(io, "d"), 0);
    stele_io_fault_power_cut(io, STELE_FAULT_CUT_DROP);
    expect_text(io, "d/f", "in d");
    stele_io_destroy(io);
}

static void test_fault_directory_rename_and_cycles(void **state)
{
    stele_io *io = new_fault(6);
    struct name_set set = {0};

    (void)state;
    /* The block-publishing pattern: fill "blk.tmp", rename it to "blk". */
    assert_int_equal(stele_io_mkdir(io, "blk.tmp"), 0);
    put_file(io, "blk.tmp/chunks", "c", 1, true);
    assert_int_equal(stele_io_fsync_dir(io, "blk.tmp"), 0);
    assert_int_equal(stele_io_fsync_dir(io, "/"), 0);
    assert_int_equal(stele_io_rename(io, "blk.tmp", "blk"), 0);
    expect_text(io, "blk/chunks", "c");
    stele_io_fault_power_cut(io, STELE_FAULT_CUT_DROP);
    expect_text(io, "blk.tmp/chunks", "c"); /* root not fsync'd after the rename */
    assert_int_equal(stele_io_rename(io, "blk.tmp", "blk"), 0);
    assert_int_equal(stele_io_fsync_dir(io, "/"), 0);
    stele_io_fault_power_cut(io, STELE_FAULT_CUT_DROP);
    expect_text(io, "blk/chunks", "c");

    /* Durable entries written at different moments can point two directories at each
     * other; the cut must still terminate and leave a tree. */
    assert_int_equal(stele_io_mkdir(io, "p"), 0);
    assert_int_equal(stele_io_mkdir(io, "q"), 0);
    assert_int_equal(stele_io_fsync_dir(io, "/"), 0);
    assert_int_equal(stele_io_rename(io, "q", "p/q"), 0);
    assert_int_equal(stele_io_fsync_dir(io, "p"), 0); /* durable p -> q */
    assert_int_equal(stele_io_rename(io, "p/q", "q"), 0);
    assert_int_equal(stele_io_rename(io, "p", "q/p"), 0);
    assert_int_equal(stele_io_fsync_dir(io, "q"), 0); /* durable q -> p */
    stele_io_fault_power_cut(io, STELE_FAULT_CUT_DROP);
    assert_int_equal(stele_io_exists(io, "p"), 1);
    assert_int_equal(stele_io_exists(io, "q"), 1);
    assert_int_equal(stele_io_list(io, "p", collect_name, &set), 0);
    assert_int_equal(set.count, 0);
    assert_int_equal(stele_io_list(io, "q", collect_name, &set), 0);
    assert_int_equal(set.count, 0);
    stele_io_destroy(io);
}

static void test_fault_fail_after_write(void **state)
{
    stele_io *io = new_fault(7);
    stele_file *f = NULL;
    uint8_t data[1000];
    uint8_t *got = NULL;
    size_t got_len = 0;
    uint64_t before = 0;

    (void)state;
    fill_pattern(data, sizeof data, 9);
    assert_int_equal(stele_io_open(io, "f", STELE_IO_READWRITE | STELE_IO_CREATE, &f), 0);
    before = stele_io_fault_op_count(io, STELE_FAULT_OP_WRITE);
    stele_io_fault_fail_after(io, STELE_FAULT_OP_WRITE, 3, EIO);
    assert_int_equal(stele_io_pwrite(f, data, 10, 0), 0);
    assert_int_equal(stele_io_pwrite(f, data + 10, 10, 10), 0);
    assert_int_equal(stele_io_pwrite(f, data + 20, 500, 20), -EIO); /* the 3rd */
    assert_int_equal(stele_io_fault_op_count(io, STELE_FAULT_OP_WRITE), before + 3);
    /* What landed is a strict prefix of the failed write. */
    assert_int_equal(stele_io_close(f), 0);
    assert_int_equal(stele_io_read_file(io, "f", sizeof data, &got, &got_len), 0);
    assert_true(got_len >= 20 && got_len < 520);
    assert_memory_equal(got, data, got_len);
    free(got);
    got = NULL;

    /* One-shot: the next write succeeds. Truncate counts as a write. */
    assert_int_equal(stele_io_open(io, "f", STELE_IO_READWRITE, &f), 0);
    assert_int_equal(stele_io_pwrite(f, data, 520, 0), 0);
    stele_io_fault_fail_after(io, STELE_FAULT_OP_WRITE, 1, ENOSPC);
    assert_int_equal(stele_io_truncate(f, 5), -ENOSPC);
    expect_file(io, "f", data, 520); /* a failed truncate changed nothing */
    stele_io_fault_fail_after(io, STELE_FAULT_OP_WRITE, 1, ENOSPC);
    assert_int_equal(stele_io_pwrite(f, data, 1, 600), -ENOSPC);
    stele_io_fault_fail_after(io, STELE_FAULT_OP_WRITE, 1, EIO);
    stele_io_fault_fail_after(io, STELE_FAULT_OP_WRITE, 0, EIO); /* 0 cancels */
    assert_int_equal(stele_io_pwrite(f, data, 1, 0), 0);
    assert_int_equal(stele_io_close(f), 0);
    stele_io_destroy(io);
}

static void test_fault_fail_after_fsync_is_sticky(void **state)
{
    stele_io *io = new_fault(8);
    stele_file *f = NULL;
    stele_file *g = NULL;

    (void)state;
    put_file(io, "log", "base", 4, true);
    assert_int_equal(stele_io_fsync_dir(io, "/"), 0);
    assert_int_equal(stele_io_open(io, "log", STELE_IO_READWRITE, &f), 0);
    assert_int_equal(stele_io_pwrite(f, "+rec", 4, 4), 0);
    stele_io_fault_fail_after(io, STELE_FAULT_OP_FSYNC, 1, EIO);
    assert_int_equal(stele_io_fsync(f), -EIO);
    /* Never again on this handle, though no further fault is scheduled. */
    assert_int_equal(stele_io_fsync(f), -EIO);
    assert_int_equal(stele_io_pwrite(f, "!", 1, 8), 0);
    assert_int_equal(stele_io_fsync(f), -EIO);
    stele_io_fault_power_cut(io, STELE_FAULT_CUT_DROP);
    assert_int_equal(stele_io_close(f), 0);
    expect_text(io, "log", "base"); /* the failed fsync made nothing durable */

    /* The errno is the one scheduled; the nth counts from the call. */
    assert_int_equal(stele_io_open(io, "log", STELE_IO_READWRITE, &f), 0);
    assert_int_equal(stele_io_open(io, "log", STELE_IO_READ, &g), 0);
    stele_io_fault_fail_after(io, STELE_FAULT_OP_FSYNC, 2, ENOSPC);
    assert_int_equal(stele_io_fsync(g), 0);
    assert_int_equal(stele_io_fsync(f), -ENOSPC);
    assert_int_equal(stele_io_fsync(f), -EIO);
    assert_int_equal(stele_io_fsync(g), 0); /* another handle is not poisoned */
    assert_int_equal(stele_io_close(f), 0);
    assert_int_equal(stele_io_close(g), 0);

    /* Directory fsyncs count as FSYNC and fail the same way: nothing becomes durable. */
    put_file(io, "new", "n", 1, true);
    stele_io_fault_fail_after(io, STELE_FAULT_OP_FSYNC, 1, EIO);
    assert_int_equal(stele_io_fsync_dir(io, "/"), -EIO);
    stele_io_fault_power_cut(io, STELE_FAULT_CUT_DROP);
    assert_int_equal(stele_io_exists(io, "new"), 0);

    /* A cut clears scheduled faults: the rebooted machine starts clean. */
    stele_io_fault_fail_after(io, STELE_FAULT_OP_FSYNC, 1, EIO);
    stele_io_fault_power_cut(io, STELE_FAULT_CUT_DROP);
    assert_int_equal(stele_io_fsync_dir(io, "/"), 0);
    stele_io_destroy(io);
}

static void test_fault_capacity(void **state)
{
    stele_io *io = new_fault(9);
    stele_file *f = NULL;
    uint8_t data[100];
    uint64_t size = 0;

    (void)state;
    memset(data, 'd', sizeof data);
    stele_io_fault_set_capacity(io, 150);
    assert_int_equal(stele_io_open(io, "a", STELE_IO_READWRITE | STELE_IO_CREATE, &f), 0);
    assert_int_equal(stele_io_pwrite(f, data, 100, 0), 0);
    assert_int_equal(stele_io_pwrite(f, data, 100, 0), 0); /* overwrite: no growth */
    assert_int_equal(stele_io_pwrite(f, data, 100, 100), -ENOSPC);
    assert_int_equal(stele_io_size(f, &size), 0);
    assert_int_equal(size, 150); /* the part that fitted, like a short write */
    assert_int_equal(stele_io_truncate(f, 151), -ENOSPC);
    assert_int_equal(stele_io_close(f), 0);
    put_file(io, "b", "", 0, false);
    assert_int_equal(stele_io_open(io, "b", STELE_IO_READWRITE, &f), 0);
    assert_int_equal(stele_io_pwrite(f, "x", 1, 0), -ENOSPC);
    /* Unlinking frees the space once no name or handle in the running system holds it. */
    assert_int_equal(stele_io_unlink(io, "a"), 0);
    assert_int_equal(stele_io_pwrite(f, data, 100, 0), 0);
    assert_int_equal(stele_io_close(f), 0);
    stele_io_fault_set_capacity(io, 0); /* unlimited */
    put_file(io, "c", data, 100, false);
    stele_io_destroy(io);
}

static void test_fault_flip_bit_and_counts(void **state)
{
    stele_io *io = new_fault(10);
    uint64_t writes = 0;
    uint64_t fsyncs = 0;

    (void)state;
    put_file(io, "f", "AB", 2, true);
    assert_int_equal(stele_io_fsync_dir(io, "/"), 0);
    writes = stele_io_fault_op_count(io, STELE_FAULT_OP_WRITE);
    fsyncs = stele_io_fault_op_count(io, STELE_FAULT_OP_FSYNC);
    assert_int_equal(writes, 1);
    assert_int_equal(fsyncs, 2);
    assert_int_equal(stele_io_fault_flip_bit(io, "f", 9), 0); /* 'B' ^ 0x02 = '@' */
    expect_text(io, "f", "A@");
    stele_io_fault_power_cut(io, STELE_FAULT_CUT_DROP);
    expect_text(io, "f", "A@"); /* both images were flipped */
    assert_int_equal(stele_io_fault_flip_bit(io, "f", 16), -EINVAL);
    assert_int_equal(stele_io_fault_flip_bit(io, "nope", 0), -ENOENT);
    assert_int_equal(stele_io_fault_flip_bit(io, "/", 0), -EISDIR);
    stele_io_destroy(io);
}

/* The same seed and the same calls give the same crash outcome, byte for byte. */
/* The replay window hands out exactly the file's bytes for every range, across piece
 * boundaries, and refuses ranges past the end (also ones whose end would overflow) or
 * wider than the window. */
static void test_window_reads_exact_ranges(void **state)
{
    uint8_t data[1000];
    const uint8_t *got = NULL;
    (void)state;
    fill_pattern(data, sizeof data, 5);
    stele_io *io = new_fault(1);
    assert_int_equal(stele_io_write_file_atomic(io, ".", "log", data, sizeof data), 0);
    stele_file *f = NULL;
    assert_int_equal(stele_io_open(io, "log", STELE_IO_READ, &f), 0);
    stele_io_window w;
    assert_int_equal(stele_io_window_init(&w, f, sizeof data, 64), 0);
    for (uint64_t off = 0; off < sizeof data; off += 7)
        for (size_t len = 0; len <= 64 && off + len <= sizeof data; len += 13) {
            assert_int_equal(stele_io_window_get(&w, off, len, &got), 0);
            assert_memory_equal(got, data + off, len);
        }
    /* Backwards too. */
    assert_int_equal(stele_io_window_get(&w, 3, 60, &got), 0);
    assert_memory_equal(got, data + 3, 60);
    assert_int_equal(stele_io_window_get(&w, 990, 11, &got), -ENODATA);
    assert_int_equal(stele_io_window_get(&w, UINT64_MAX - 2, 8, &got), -ENODATA);
    assert_int_equal(stele_io_window_get(&w, 0, 65, &got), -EINVAL);
    stele_io_window_free(&w);
    stele_io_close(f);
    stele_io_destroy(io);
}

static void test_fault_deterministic_by_seed(void **state)
{
    uint8_t tail[4000];
    uint8_t *first = NULL;
    size_t first_len = 0;
    int round;

    (void)state;
    fill_pattern(tail, sizeof tail, 11);
    for (round = 0; round < 2; round++) {
        stele_io *io = new_fault(12345);
        stele_file *f = NULL;
        uint8_t *got = NULL;
        size_t got_len = 0;

        put_file(io, "f", "x", 1, true);
        assert_int_equal(stele_io_fsync_dir(io, "/"), 0);
        assert_int_equal(stele_io_open(io, "f", STELE_IO_READWRITE, &f), 0);
        assert_int_equal(stele_io_pwrite(f, tail, sizeof tail, 1), 0);
        stele_io_fault_power_cut(io, STELE_FAULT_CUT_GARBAGE);
        assert_int_equal(stele_io_close(f), 0);
        assert_int_equal(stele_io_read_file(io, "f", 1 << 20, &got, &got_len), 0);
        if (round == 0) {
            first = got;
            first_len = got_len;
        } else {
            assert_int_equal(got_len, first_len);
            assert_memory_equal(got, first, got_len);
            free(got);
        }
        stele_io_destroy(io);
    }
    free(first);
}

/* write_file_atomic under a fault at every write or fsync it makes, then a power cut
 * of a random kind: the file is always the old or the new content, complete. */
static void test_fault_write_file_atomic_is_atomic(void **state)
{
    uint8_t old_content[3000];
    uint8_t new_content[5000];
    uint64_t seed;
    int saw_old = 0, saw_new = 0;

    (void)state;
    for (seed = 0; seed < PROPERTY_SEEDS; seed++) {
        stele_io *io = new_fault(seed);
        uint64_t rng = seed ^ 0xa5a5a5a5u;
        size_t old_len = (size_t)(test_rng_next(&rng) % sizeof old_content);
        size_t new_len = (size_t)(test_rng_next(&rng) % sizeof new_content);
        bool had_old = test_rng_next(&rng) % 4 != 0;
        enum stele_fault_op op = (enum stele_fault_op)(test_rng_next(&rng) % 2);
        /* write_file_atomic makes 1 write and 2 fsyncs; +1 lets some runs finish. */
        uint64_t nth = 1 + test_rng_next(&rng) % (op == STELE_FAULT_OP_WRITE ? 2 : 3);
        int err = test_rng_next(&rng) % 2 ? EIO : ENOSPC;
        enum stele_fault_cut_mode mode = (enum stele_fault_cut_mode)(test_rng_next(&rng) % 3);
        uint8_t *got = NULL;
        size_t got_len = 0;
        int rc;
        int exists;

        fill_pattern(old_content, old_len, seed * 2);
        fill_pattern(new_content, new_len, seed * 2 + 1);
        assert_int_equal(stele_io_mkdir(io, "d"), 0);
        assert_int_equal(stele_io_fsync_dir(io, "/"), 0);
        if (had_old)
            assert_int_equal(stele_io_write_file_atomic(io, "d", "meta", old_content, old_len), 0);
        if (test_rng_next(&rng) % 3 == 0) /* a leftover tmp from an earlier crash */
            put_file(io, "d/meta.tmp", "junk", 4, true);
        stele_io_fault_fail_after(io, op, nth, err);
        rc = stele_io_write_file_atomic(io, "d", "meta", new_content, new_len);
        PROP_CHECK(rc == 0 || rc == -err, seed, "rc %d, scheduled %d", rc, -err);
        PROP_CHECK(stele_io_exists(io, "d/meta.tmp") == 0, seed, "tmp file left (rc %d)", rc);
        stele_io_fault_power_cut(io, mode);

        exists = stele_io_exists(io, "d/meta");
        PROP_CHECK(exists == 1 || !had_old, seed, "old file lost (rc %d, mode %d)", rc, mode);
        if (rc == 0)
            PROP_CHECK(exists == 1, seed, "acknowledged file missing after cut");
        if (exists == 1) {
            assert_int_equal(stele_io_read_file(io, "d/meta", 1 << 20, &got, &got_len), 0);
            bool is_old = had_old && got_len == old_len &&
                          (old_len == 0 || memcmp(got, old_content, old_len) == 0);
            bool is_new =
                got_len == new_len && (new_len == 0 || memcmp(got, new_content, new_len) == 0);

            PROP_CHECK(is_old || is_new, seed,
                       "torn file: %zu bytes, old %zu, new %zu (rc %d, op %d, nth %" PRIu64
                       ", mode %d)",
                       got_len, old_len, new_len, rc, op, nth, mode);
            if (rc == 0)
                PROP_CHECK(is_new, seed, "acknowledged write reverted");
            saw_old += is_old && !is_new;
            saw_new += is_new;
            free(got);
        }
        stele_io_destroy(io);
    }
    assert_true(saw_old > 0);
    assert_true(saw_new > 0);
}

/* Two threads hammering one io: the sanitizer builds check the locking. */
struct thread_arg {
    stele_io *io;
    const char *path;
    int rc;
};

static void *append_worker(void *p)
{
    struct thread_arg *arg = p;
    stele_file *f = NULL;
    uint8_t rec[100];
    int i;

    memset(rec, 'r', sizeof rec);
    arg->rc = stele_io_open(arg->io, arg->path, STELE_IO_READWRITE | STELE_IO_CREATE, &f);
    for (i = 0; arg->rc == 0 && i < 200; i++) {
        arg->rc = stele_io_pwrite(f, rec, sizeof rec, (uint64_t)i * sizeof rec);
        if (arg->rc == 0 && i % 10 == 0)
            arg->rc = stele_io_fsync(f);
    }
    stele_io_close(f);
    return NULL;
}

static void test_fault_threads(void **state)
{
    stele_io *io = new_fault(13);
    pthread_t threads[2];
    struct thread_arg args[2] = {{io, "t0", 0}, {io, "t1", 0}};
    uint64_t size = 0;
    stele_file *f = NULL;
    int i;

    (void)state;
    for (i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&threads[i], NULL, append_worker, &args[i]), 0);
    for (i = 0; i < 2; i++) {
        assert_int_equal(pthread_join(threads[i], NULL), 0);
        assert_int_equal(args[i].rc, 0);
        assert_int_equal(stele_io_open(io, args[i].path, STELE_IO_READ, &f), 0);
        assert_int_equal(stele_io_size(f, &size), 0);
        assert_int_equal(size, 200 * 100);
        assert_int_equal(stele_io_close(f), 0);
    }
    stele_io_destroy(io);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_posix_common, posix_setup, posix_teardown),
        cmocka_unit_test_setup_teardown(test_posix_modes_and_cloexec, posix_setup, posix_teardown),
        cmocka_unit_test_setup_teardown(test_posix_errors_propagate_and_fsync_is_sticky,
                                        posix_setup, posix_teardown),
        cmocka_unit_test_setup_teardown(test_fault_common, fault_setup, fault_teardown),
        cmocka_unit_test_setup_teardown(test_fault_rename_directory_rules, fault_setup,
                                        fault_teardown),
        cmocka_unit_test(test_fault_synced_data_survives_cut),
        cmocka_unit_test(test_fault_drop_loses_unsynced_writes),
        cmocka_unit_test(test_fault_torn_keeps_prefix_of_tail),
        cmocka_unit_test(test_fault_garbage_corrupts_kept_tail),
        cmocka_unit_test(test_fault_torn_overwrites_per_sector),
        cmocka_unit_test(test_fault_new_file_needs_dir_fsync),
        cmocka_unit_test(test_fault_rename_reverts_without_dir_fsync),
        cmocka_unit_test(test_fault_unlink_reverts_without_dir_fsync),
        cmocka_unit_test(test_fault_directory_rename_and_cycles),
        cmocka_unit_test(test_fault_fail_after_write),
        cmocka_unit_test(test_fault_fail_after_fsync_is_sticky),
        cmocka_unit_test(test_fault_capacity),
        cmocka_unit_test(test_fault_flip_bit_and_counts),
        cmocka_unit_test(test_fault_deterministic_by_seed),
        cmocka_unit_test(test_window_reads_exact_ranges),
        cmocka_unit_test(test_fault_write_file_atomic_is_atomic),
        cmocka_unit_test(test_fault_threads),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
