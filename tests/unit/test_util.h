/*
 * test_util.h — helpers that several unit tests share: finding the repository, reading
 * the test vectors in docs/format/, printing bytes as hex, whole-file helpers, the
 * seeded generator, and slot storage for libstele-device's stores on the fault-injecting
 * file system.
 *
 * Header-only: every test is its own executable (CMakeLists.txt), so static inline
 * functions need no extra library, and a test pays only for what it calls. Failures are
 * cmocka failures that say what was expected and what came, like the tests' own.
 */
#ifndef STELE_TEST_UTIL_H
#define STELE_TEST_UTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "stele/io.h"

/* ---- the repository and its format documents --------------------------------------- */

/* The repository root: $STELE_SOURCE_DIR (ctest sets it), else derived from this file's
 * path as the compiler saw it, else ".". */
static inline void test_source_dir(char *buf, size_t cap)
{
    const char *env = getenv("STELE_SOURCE_DIR");
    if (env && *env) {
        snprintf(buf, cap, "%s", env);
        return;
    }
    const char *file = __FILE__;
    const char *tail = strstr(file, "tests/unit/");
    size_t prefix = tail ? (size_t)(tail - file) : 0;
    if (prefix == 0)
        snprintf(buf, cap, ".");
    else
        snprintf(buf, cap, "%.*s", (int)prefix, file);
}

/* Reads a file whole, with a NUL after its last byte (so a text file is a string). */
static inline uint8_t *test_read_file(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        fail_msg("cannot open %s: %s", path, strerror(errno));
    assert_int_equal(fseek(fp, 0, SEEK_END), 0);
    long size = ftell(fp);
    assert_true(size >= 0);
    rewind(fp);
    uint8_t *data = malloc((size_t)size + 1);
    assert_non_null(data);
    assert_int_equal(fread(data, 1, (size_t)size, fp), (size_t)size);
    fclose(fp);
    data[size] = '\0';
    *len = (size_t)size;
    return data;
}

static inline void test_write_file(const char *path, const uint8_t *data, size_t len)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(data, 1, len, fp), len);
    assert_int_equal(fclose(fp), 0);
}

static inline uint64_t test_file_size(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return (uint64_t)st.st_size;
}

static inline int test__remove_entry(const char *path, const struct stat *st, int type,
                                     struct FTW *ftw)
{
    (void)st;
    (void)type;
    (void)ftw;
    return remove(path);
}

/* Removes dir and everything below it (a test's mkdtemp directory); best effort. */
static inline void test_remove_tree(const char *dir)
{
    nftw(dir, test__remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* The value of a lowercase hex digit (the form the documents use), else -1. */
static inline int test_hex_digit(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Reads a test vector from docs/format/DOC into out and returns its length in bytes.
 *
 * A vector starts at an HTML comment "<!-- LABEL -->" (LABEL such as "vector:frame";
 * more words may follow the label inside the comment: they go into note, trimmed, when
 * note is not NULL). Its bytes are either a fenced block right after the comment, or
 * the text up to "<!-- end -->". They are lowercase hex digits, two a byte, with any
 * white space between them and "#" comments to the end of a line; anything else fails
 * the test, as does a missing vector or one larger than cap. */
static inline size_t test_doc_vector_note(const char *doc, const char *label, uint8_t *out,
                                          size_t cap, char *note, size_t note_cap)
{
    char dir[4096], path[4200], opening[128];
    size_t len = 0;
    test_source_dir(dir, sizeof(dir));
    snprintf(path, sizeof(path), "%s/docs/format/%s", dir, doc);
    char *text = (char *)test_read_file(path, &len);

    /* The label must end at a space or the comment's end, not go on ("vector:rotation"
     * is not "vector:rotation-old-key-only"). */
    snprintf(opening, sizeof(opening), "<!-- %s", label);
    const char *p = text;
    while ((p = strstr(p, opening)) != NULL) {
        p += strlen(opening);
        if (*p == ' ' || strncmp(p, "-->", 3) == 0)
            break;
    }
    if (!p)
        fail_msg("%s: no test vector \"%s\" (expected a line <!-- %s -->)", path, label, label);
    const char *close = strstr(p, "-->");
    if (!close)
        fail_msg("%s: the comment that opens vector \"%s\" is not closed", path, label);
    if (note) {
        while (p < close && *p == ' ')
            p++;
        size_t n = (size_t)(close - p);
        while (n > 0 && p[n - 1] == ' ')
            n--;
        snprintf(note, note_cap, "%.*s", (int)n, p);
    }

    p = close + 3;
    p += strspn(p, " \t\r\n");
    const char *end = NULL;
    if (strncmp(p, "```", 3) == 0) {
        p = strchr(p, '\n');
        end = p ? strstr(p, "```") : NULL;
    } else {
        end = strstr(p, "<!-- end -->");
    }
    if (!p || !end)
        fail_msg("%s: vector \"%s\" has no end (a closing ``` or <!-- end -->)", path, label);

    size_t n = 0;
    int high = -1;
    for (; p < end; p++) {
        if (*p == '#') {
            p = strchr(p, '\n');
            if (!p || p > end)
                break;
            continue;
        }
        if (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
            continue;
        int v = test_hex_digit(*p);
        if (v < 0)
            fail_msg("%s: vector \"%s\": unexpected character '%c' (expected hex digits)", path,
                     label, *p);
        if (high < 0) {
            high = v;
            continue;
        }
        if (n == cap)
            fail_msg("%s: vector \"%s\" is longer than the %zu bytes expected", path, label, cap);
        out[n++] = (uint8_t)(high << 4 | v);
        high = -1;
    }
    if (high >= 0)
        fail_msg("%s: vector \"%s\" has an odd number of hex digits", path, label);
    free(text);
    return n;
}

static inline size_t test_doc_vector(const char *doc, const char *label, uint8_t *out, size_t cap)
{
    return test_doc_vector_note(doc, label, out, cap, NULL, 0);
}

/* Prints bytes as hex, per_line to a line with sep between them, every line ended: the
 * layout of the documents (16 with " ", or 32 with ""), so a vector can be pasted in. */
static inline void test_print_hex(FILE *to, const uint8_t *bytes, size_t len, size_t per_line,
                                  const char *sep)
{
    for (size_t i = 0; i < len; i++)
        fprintf(to, "%02x%s", bytes[i],
                (i % per_line == per_line - 1 || i + 1 == len) ? "\n" : sep);
}

/* ---- numbers -------------------------------------------------------------------------- */

static inline void test_put_le(uint8_t *p, uint64_t v, int bytes)
{
    for (int i = 0; i < bytes; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint64_t test_get_le(const uint8_t *p, int bytes)
{
    uint64_t v = 0;
    for (int i = bytes - 1; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* splitmix64: a seeded, reproducible stream, so a failure's seed replays it exactly. */
static inline uint64_t test_rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* ---- stele_io --------------------------------------------------------------------------- */

/* A fault-injecting file system with dir made and durable. */
static inline stele_io *test_fault_io_with_dir(uint64_t seed, const char *dir)
{
    stele_io *io = NULL;
    assert_int_equal(stele_io_fault_create(seed, &io), 0);
    assert_int_equal(stele_io_mkdir(io, dir), 0);
    assert_int_equal(stele_io_fsync_dir(io, "/"), 0);
    return io;
}

/* Slot storage for libstele-device's counter and identity stores
 * (stele_counter_storage / stele_identity_storage, with ctx a test_slot_files): slot N
 * is the file DIR/NAME.N, rewritten whole in place, then fsync'd, then DIR fsync'd. A file
 * of the wrong size (a torn write) reads as -EBADMSG and is counted in torn_reads. */
typedef struct {
    stele_io *io;
    const char *dir;  /* "dev" */
    const char *name; /* "counter", "identity" */
    int torn_reads;
} test_slot_files;

static inline int test_slot_read(void *ctx, int slot, uint8_t *buf, size_t len)
{
    test_slot_files *s = ctx;
    char path[256];
    snprintf(path, sizeof(path), "%s/%s.%d", s->dir, s->name, slot);
    stele_file *f;
    int rc = stele_io_open(s->io, path, STELE_IO_READ, &f);
    if (rc)
        return rc;
    uint64_t size = 0;
    rc = stele_io_size(f, &size);
    if (rc == 0 && size != len) {
        s->torn_reads++;
        rc = -EBADMSG;
    }
    if (rc == 0)
        rc = stele_io_pread_full(f, buf, len, 0);
    stele_io_close(f);
    return rc;
}

static inline int test_slot_write(void *ctx, int slot, const uint8_t *buf, size_t len)
{
    test_slot_files *s = ctx;
    char path[256];
    snprintf(path, sizeof(path), "%s/%s.%d", s->dir, s->name, slot);
    stele_file *f;
    int rc =
        stele_io_open(s->io, path, STELE_IO_READWRITE | STELE_IO_CREATE | STELE_IO_TRUNCATE, &f);
    if (rc)
        return rc;
    rc = stele_io_pwrite(f, buf, len, 0);
    if (rc == 0)
        rc = stele_io_fsync(f);
    int crc = stele_io_close(f);
    if (rc == 0)
        rc = crc;
    if (rc == 0)
        rc = stele_io_fsync_dir(s->io, s->dir);
    return rc;
}

#endif
