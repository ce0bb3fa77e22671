/*
 * io_fault.c — an in-memory file system that remembers what a power cut would leave.
 *
 * Crash tests run the real engine on this stele_io, cut the power at any instant and
 * reopen the engine on exactly what survived. The model is deliberately the weakest
 * that POSIX allows, so code that passes here does not depend on one file system's
 * kindness (ext4's ordered mode, for one, makes much more survive).
 *
 * Model
 *   Inodes. A file is an inode holding two byte images: `cur`, what running code reads
 *   and writes, and `dur`, what a power cut leaves. pwrite and truncate change `cur`;
 *   fsync of any handle on the inode copies `cur` to `dur`. Names point at inodes, so
 *   a rename moves no data: a file reached after a cut by a durable name shows that
 *   inode's durable bytes, whatever name it had when they were synced.
 *
 *   Directories. Each directory is an inode with a table of entries; an entry is one
 *   name with two targets, `cur_node` (the running namespace; NULL = no such name now)
 *   and `dur_node` (what a cut leaves; NULL = the name vanishes). create, rename,
 *   unlink, mkdir and rmdir change only `cur_node`s; fsync_dir(d) copies every
 *   `cur_node` of d to its `dur_node`. So a file created and fsync'd but whose
 *   directory was never fsync'd vanishes; a rename not dir-fsync'd reverts; an unlink
 *   not dir-fsync'd comes back with the file's durable bytes. A cross-directory rename
 *   with only one side fsync'd can leave the file under both names after a cut (or
 *   under neither), as POSIX permits.
 *
 *   Power cut. Every handle turns dead (every call -EIO except close, which frees it);
 *   each reachable directory's entries become their durable targets; each file's
 *   image becomes its durable image, except that TORN and GARBAGE keep a random
 *   prefix (0..all, both ends likely) of the unsynced tail past the durable length,
 *   GARBAGE then corrupts a random run of the kept tail bytes, and TORN and GARBAGE
 *   keep or revert each 512-byte sector of unsynced overwrites of durable bytes at
 *   random. Unsynced shrinking truncates are always undone. Scheduled faults are
 *   cleared (the machine rebooted); operation counters keep counting.
 *
 *   Faults. fail_after(op, n, e) makes the n-th next WRITE (pwrite, truncate) or FSYNC
 *   (file or directory) fail with -e, once. A failed pwrite has applied a random
 *   prefix (possibly empty, never all) of its data to `cur`, whatever the cut mode —
 *   the contract says a failed write may leave part of its data. A failed fsync leaves
 *   `dur` untouched and poisons its handle: every later fsync on it fails -EIO, as
 *   Linux may report a writeback error once and then call lost pages clean. Capacity
 *   bounds the sum of `cur` lengths of files reachable from the running namespace or
 *   an open handle; a write past it stores the prefix that fits and fails -ENOSPC,
 *   like a short write followed by ENOSPC.
 *
 * Memory. Inodes are freed by mark-and-sweep after every operation that can drop a
 * reference (durable entries can form cycles between directories, which reference
 * counts would leak). The sweep is O(inodes); crash tests hold few files.
 *
 * Determinism: every random choice comes from one splitmix64 stream seeded at
 * creation, consumed in operation order and inode creation order, so a seed and the
 * same sequence of calls replay the same run.
 *
 * Threads: one mutex guards everything; it is never held while a list callback runs.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "io/io_impl.h"

/* Largest file the model holds. Every file lives twice in RAM; a wild offset from a
 * bug should fail fast with -EFBIG instead of exhausting the test machine. */
#define FAULT_MAX_FILE_BYTES ((uint64_t)1 << 30)

/* Unit in which TORN keeps or reverts unsynced overwrites: the sector size disks
 * promise to write atomically (the 512-byte logical sector every drive supports). */
#define FAULT_SECTOR_BYTES 512

/* One TORN cut in this many keeps none of a file's unsynced tail, and one keeps all
 * of it (see fault__tail_keep). */
#define FAULT_TAIL_END_ODDS 8

/* Smallest buffer allocated for a file image, so small appends do not realloc each
 * time; one page. */
#define FAULT_MIN_IMAGE_CAP 4096

/* Longest name of one path component: Linux's NAME_MAX, for parity with io_posix. */
#define FAULT_NAME_MAX 255

/* "No byte changed since the last fsync". */
#define FAULT_CLEAN SIZE_MAX

/* GC mark bits. */
#define FAULT_MARK_REACHABLE 1u /* reachable by any name or handle: keep it */
#define FAULT_MARK_CURRENT 2u   /* reachable from running code: counts to capacity */

enum fault_kind { FAULT_FILE, FAULT_DIR };

struct fault_inode;

struct fault_entry {
    char *name;
    struct fault_inode *cur_node; /* target in the running namespace, or NULL */
    struct fault_inode *dur_node; /* target after a power cut, or NULL */
};

struct fault_inode {
    enum fault_kind kind;
    struct fault_inode *prev, *next; /* every inode, in creation order */
    struct fault_inode *gc_next;     /* intrusive stack of the mark phase */
    unsigned mark;

    /* FAULT_FILE. Invariants: cur_cap >= dur_len (dur is always a past cur), and
     * cur[i] == dur[i] for every i < min(dirty_lo, cur_len, dur_len). */
    uint8_t *cur;
    size_t cur_len, cur_cap;
    uint8_t *dur;
    size_t dur_len, dur_cap;
    size_t dirty_lo; /* lowest offset changed since the last fsync, or FAULT_CLEAN */

    /* FAULT_DIR: entries in creation order (list order is stable and replayable). */
    struct fault_entry *entries;
    size_t n_entries, entries_cap;
};

struct fault_fs;

struct fault_file {
    struct stele_file base;   /* must be first: io.c dispatches through it */
    struct fault_fs *fs;      /* not owned */
    struct fault_inode *node; /* NULL once the handle is dead */
    bool writable;
    bool fsync_failed;
    struct fault_file *prev, *next; /* every handle, dead or alive */
};

struct fault_fs {
    stele_io base; /* must be first: the API passes stele_io * */
    pthread_mutex_t mu;
    uint64_t rng;
    struct fault_inode *root;
    struct fault_inode *inodes_head, *inodes_tail;
    struct fault_file *files;
    uint64_t op_count[2];       /* indexed by enum stele_fault_op */
    uint64_t fail_countdown[2]; /* 0 = nothing scheduled */
    int fail_errno[2];
    uint64_t capacity;      /* 0 = unlimited */
    uint64_t current_bytes; /* sum of cur_len over FAULT_MARK_CURRENT files */
};

static const struct stele_io_ops fault_ops;

/* ---- randomness ------------------------------------------------------------------ */

/* splitmix64: tiny, full-period, good enough to pick crash outcomes. */
static uint64_t fault__rand(struct fault_fs *fs)
{
    uint64_t z = (fs->rng += 0x9e3779b97f4a7c15ull);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform enough in [0, n); 0 when n == 0. The modulo bias is irrelevant here. */
static uint64_t fault__rand_below(struct fault_fs *fs, uint64_t n)
{
    return n == 0 ? 0 : fault__rand(fs) % n;
}

static size_t fault__min(size_t a, size_t b)
{
    return a < b ? a : b;
}

/* ---- inodes and entries ---------------------------------------------------------- */

static struct fault_inode *fault__inode_new(struct fault_fs *fs, enum fault_kind kind)
{
    struct fault_inode *n = calloc(1, sizeof *n);

    if (n == NULL)
        return NULL;
    n->kind = kind;
    n->dirty_lo = FAULT_CLEAN;
    n->prev = fs->inodes_tail;
    if (fs->inodes_tail != NULL)
        fs->inodes_tail->next = n;
    else
        fs->inodes_head = n;
    fs->inodes_tail = n;
    return n;
}

static void fault__inode_free(struct fault_fs *fs, struct fault_inode *n)
{
    size_t i;

    if (n->prev != NULL)
        n->prev->next = n->next;
    else
        fs->inodes_head = n->next;
    if (n->next != NULL)
        n->next->prev = n->prev;
    else
        fs->inodes_tail = n->prev;
    for (i = 0; i < n->n_entries; i++)
        free(n->entries[i].name);
    free(n->entries);
    free(n->cur);
    free(n->dur);
    free(n);
}

static struct fault_entry *fault__entry_find(struct fault_inode *dir, const char *name,
                                             size_t name_len)
{
    size_t i;

    for (i = 0; i < dir->n_entries; i++) {
        struct fault_entry *e = &dir->entries[i];

        if (strlen(e->name) == name_len && memcmp(e->name, name, name_len) == 0)
            return e;
    }
    return NULL;
}

/* The running target of `name` in dir, or NULL. */
static struct fault_inode *fault__lookup(struct fault_inode *dir, const char *name, size_t name_len)
{
    struct fault_entry *e = fault__entry_find(dir, name, name_len);

    return e != NULL ? e->cur_node : NULL;
}

/* Finds or adds the entry for `name` (a new one has both targets NULL). The returned
 * pointer is valid until the next add to the same directory. */
static int fault__entry_get(struct fault_inode *dir, const char *name, size_t name_len,
                            struct fault_entry **out)
{
    struct fault_entry *e = fault__entry_find(dir, name, name_len);
    char *copy = NULL;

    if (e != NULL) {
        *out = e;
        return 0;
    }
    if (dir->n_entries == dir->entries_cap) {
        size_t cap = dir->entries_cap != 0 ? dir->entries_cap * 2 : 8;
        struct fault_entry *grown = realloc(dir->entries, cap * sizeof *grown);

        if (grown == NULL)
            return -ENOMEM;
        dir->entries = grown;
        dir->entries_cap = cap;
    }
    copy = strndup(name, name_len);
    if (copy == NULL)
        return -ENOMEM;
    e = &dir->entries[dir->n_entries++];
    e->name = copy; /* now belongs to the entry */
    e->cur_node = NULL;
    e->dur_node = NULL;
    *out = e;
    return 0;
}

/* Drops entries that name nothing in either namespace; keeps the order of the rest. */
static void fault__entries_compact(struct fault_inode *dir)
{
    size_t i;
    size_t kept = 0;

    for (i = 0; i < dir->n_entries; i++) {
        struct fault_entry *e = &dir->entries[i];

        if (e->cur_node == NULL && e->dur_node == NULL) {
            free(e->name);
            continue;
        }
        dir->entries[kept++] = *e;
    }
    dir->n_entries = kept;
}

static bool fault__dir_has_current_entries(const struct fault_inode *dir)
{
    size_t i;

    for (i = 0; i < dir->n_entries; i++) {
        if (dir->entries[i].cur_node != NULL)
            return true;
    }
    return false;
}

/* ---- garbage collection ---------------------------------------------------------- */

static void fault__mark_push(struct fault_inode **stack, struct fault_inode *n, unsigned bit)
{
    if (n == NULL || (n->mark & bit))
        return;
    n->mark |= bit;
    n->gc_next = *stack;
    *stack = n;
}

/* Marks with `bit` everything reachable from the root and live handles, following
 * running entries, and durable ones too when `follow_durable`. */
static void fault__mark(struct fault_fs *fs, unsigned bit, bool follow_durable)
{
    struct fault_inode *stack = NULL;
    struct fault_file *f;

    fault__mark_push(&stack, fs->root, bit);
    for (f = fs->files; f != NULL; f = f->next)
        fault__mark_push(&stack, f->node, bit);
    while (stack != NULL) {
        struct fault_inode *n = stack;
        size_t i;

        stack = n->gc_next;
        for (i = 0; i < n->n_entries; i++) {
            fault__mark_push(&stack, n->entries[i].cur_node, bit);
            if (follow_durable)
                fault__mark_push(&stack, n->entries[i].dur_node, bit);
        }
    }
}

/* Frees unreachable inodes and recounts the bytes that count towards capacity. */
static void fault__gc(struct fault_fs *fs)
{
    struct fault_inode *n;
    struct fault_inode *next;

    for (n = fs->inodes_head; n != NULL; n = n->next)
        n->mark = 0;
    fault__mark(fs, FAULT_MARK_REACHABLE, true);
    fault__mark(fs, FAULT_MARK_CURRENT, false);
    fs->current_bytes = 0;
    for (n = fs->inodes_head; n != NULL; n = next) {
        next = n->next;
        if (!(n->mark & FAULT_MARK_REACHABLE))
            fault__inode_free(fs, n);
        else if (n->mark & FAULT_MARK_CURRENT)
            fs->current_bytes += n->cur_len;
    }
}

/* ---- paths ----------------------------------------------------------------------- */

/*
 * Walks `path` through the running namespace up to its last component. On success
 * *parent is that component's directory and *name, *name_len the component (length 0
 * when the path names the root). Empty components and "." are skipped; ".." is
 * refused (-EINVAL): the engine never needs it and resolving it would need parent
 * links. *passes_through (may be NULL) is set when `watch` is the parent or one of its
 * ancestors, which rename uses to refuse moving a directory into itself.
 */
static int fault__resolve_parent(struct fault_fs *fs, const char *path,
                                 const struct fault_inode *watch, bool *passes_through,
                                 struct fault_inode **parent, const char **name, size_t *name_len)
{
    struct fault_inode *dir = fs->root;
    const char *p = path;
    const char *comp = NULL;
    size_t comp_len = 0;
    bool seen = (dir == watch);

    if (path[0] == '\0')
        return -ENOENT;
    if (strnlen(path, STELE_IO_PATH_MAX) >= STELE_IO_PATH_MAX)
        return -ENAMETOOLONG;
    for (;;) {
        const char *start = NULL;
        size_t len = 0;

        while (*p == '/')
            p++;
        if (*p == '\0')
            break;
        start = p;
        while (*p != '\0' && *p != '/')
            p++;
        len = (size_t)(p - start);
        if (len == 1 && start[0] == '.')
            continue;
        if (len == 2 && start[0] == '.' && start[1] == '.')
            return -EINVAL;
        if (len > FAULT_NAME_MAX)
            return -ENAMETOOLONG;
        if (comp != NULL) {
            struct fault_inode *child = fault__lookup(dir, comp, comp_len);

            if (child == NULL)
                return -ENOENT;
            if (child->kind != FAULT_DIR)
                return -ENOTDIR;
            dir = child;
            seen = seen || (dir == watch);
        }
        comp = start;
        comp_len = len;
    }
    *parent = dir;
    *name = comp;
    *name_len = comp != NULL ? comp_len : 0;
    if (passes_through != NULL)
        *passes_through = seen;
    return 0;
}

/* The inode `path` names in the running namespace. */
static int fault__resolve(struct fault_fs *fs, const char *path, struct fault_inode **out)
{
    struct fault_inode *parent = NULL;
    const char *name = NULL;
    size_t name_len = 0;
    int rc = fault__resolve_parent(fs, path, NULL, NULL, &parent, &name, &name_len);

    if (rc != 0)
        return rc;
    if (name_len == 0) {
        *out = parent;
        return 0;
    }
    *out = fault__lookup(parent, name, name_len);
    return *out != NULL ? 0 : -ENOENT;
}

/* ---- file images ----------------------------------------------------------------- */

static int fault__reserve(uint8_t **buf, size_t *cap, size_t need)
{
    size_t new_cap = *cap != 0 ? *cap : FAULT_MIN_IMAGE_CAP;
    uint8_t *grown = NULL;

    if (need <= *cap)
        return 0;
    while (new_cap < need)
        new_cap = new_cap <= SIZE_MAX / 2 ? new_cap * 2 : need;
    grown = realloc(*buf, new_cap);
    if (grown == NULL)
        return -ENOMEM;
    *buf = grown;
    *cap = new_cap;
    return 0;
}

static void fault__note_dirty(struct fault_inode *n, size_t from)
{
    size_t lo = fault__min(from, n->cur_len);

    if (lo < n->dirty_lo)
        n->dirty_lo = lo;
}

/* Sets the running length, zero-filling growth (a shrink leaves stale bytes behind the
 * length in the buffer, so growth always clears). */
static int fault__set_len(struct fault_fs *fs, struct fault_inode *n, size_t len)
{
    int rc = fault__reserve(&n->cur, &n->cur_cap, len);

    if (rc != 0)
        return rc;
    fault__note_dirty(n, len);
    if (len > n->cur_len) {
        memset(n->cur + n->cur_len, 0, len - n->cur_len);
        fs->current_bytes += len - n->cur_len;
    } else {
        fs->current_bytes -= n->cur_len - len;
    }
    n->cur_len = len;
    return 0;
}

static int fault__write_image(struct fault_fs *fs, struct fault_inode *n, const uint8_t *buf,
                              size_t len, size_t off)
{
    int rc = 0;

    if (len == 0)
        return 0;
    if (off + len > n->cur_len) {
        rc = fault__set_len(fs, n, off + len);
        if (rc != 0)
            return rc;
    }
    fault__note_dirty(n, off);
    memcpy(n->cur + off, buf, len);
    return 0;
}

/* How many bytes of a write of len at off fit under the capacity. */
static size_t fault__capacity_fit(struct fault_fs *fs, const struct fault_inode *n, size_t len,
                                  size_t off)
{
    size_t end = off + len;
    uint64_t growth = end > n->cur_len ? end - n->cur_len : 0;
    uint64_t room = 0;
    uint64_t max_end = 0;

    if (fs->capacity == 0 || fs->current_bytes + growth <= fs->capacity)
        return len;
    room = fs->capacity > fs->current_bytes ? fs->capacity - fs->current_bytes : 0;
    max_end = (uint64_t)n->cur_len + room;
    if ((uint64_t)off >= max_end)
        return 0;
    return (size_t)(max_end - off) < len ? (size_t)(max_end - off) : len;
}

/* Counts one operation of kind `op`; a negative errno if a scheduled fault fires now. */
static int fault__take_fault(struct fault_fs *fs, enum stele_fault_op op)
{
    fs->op_count[op]++;
    if (fs->fail_countdown[op] == 0)
        return 0;
    fs->fail_countdown[op]--;
    return fs->fail_countdown[op] == 0 ? -fs->fail_errno[op] : 0;
}

/* How much of an unsynced tail of `tail` bytes a TORN cut keeps. The two ends are
 * the interesting cases (nothing survived; everything survived although no fsync
 * said so, so recovery meets unacknowledged records) and a uniform pick over a long
 * tail would almost never hit them: each end gets 1/FAULT_TAIL_END_ODDS of the cuts,
 * the rest tears somewhere in between. */
static size_t fault__tail_keep(struct fault_fs *fs, size_t tail)
{
    uint64_t pick = fault__rand_below(fs, FAULT_TAIL_END_ODDS);

    if (pick == 0)
        return 0;
    if (pick == 1)
        return tail;
    return (size_t)fault__rand_below(fs, (uint64_t)tail + 1);
}

/* What a cut leaves of one file: the durable image, plus (TORN, GARBAGE) a random
 * choice of unsynced sectors and a random prefix of the unsynced tail. Allocates
 * nothing that can fail the cut: dur grows only within what it can reserve, and cur
 * already has room for any result (cur_cap >= max(cur_len, dur_len)). */
static void fault__cut_file(struct fault_fs *fs, struct fault_inode *n,
                            enum stele_fault_cut_mode mode)
{
    size_t overlap = fault__min(n->cur_len, n->dur_len);
    size_t lo = fault__min(n->dirty_lo, overlap);

    if (mode != STELE_FAULT_CUT_DROP && n->dirty_lo != FAULT_CLEAN) {
        size_t sector = lo - lo % FAULT_SECTOR_BYTES;

        for (; sector < overlap; sector += FAULT_SECTOR_BYTES) {
            size_t end = fault__min(sector + FAULT_SECTOR_BYTES, overlap);

            if (memcmp(n->cur + sector, n->dur + sector, end - sector) != 0 &&
                (fault__rand(fs) & 1))
                memcpy(n->dur + sector, n->cur + sector, end - sector);
        }
        if (n->cur_len > n->dur_len) {
            size_t keep = fault__tail_keep(fs, n->cur_len - n->dur_len);

            if (fault__reserve(&n->dur, &n->dur_cap, n->dur_len + keep) != 0)
                keep = n->dur_cap - n->dur_len; /* out of memory: keep what fits */
            if (keep > 0)
                memcpy(n->dur + n->dur_len, n->cur + n->dur_len, keep);
            if (mode == STELE_FAULT_CUT_GARBAGE && keep > 0) {
                size_t start = (size_t)fault__rand_below(fs, keep);
                size_t run = 1 + (size_t)fault__rand_below(fs, keep - start);
                size_t i;

                /* XOR with a non-zero byte: every byte of the run really differs. */
                for (i = 0; i < run; i++)
                    n->dur[n->dur_len + start + i] ^= (uint8_t)(1 + fault__rand_below(fs, 255));
            }
            n->dur_len += keep;
        }
    }
    if (n->dur_len > 0)
        memcpy(n->cur, n->dur, n->dur_len);
    n->cur_len = n->dur_len;
    n->dirty_lo = FAULT_CLEAN;
}

/* ---- file operations ------------------------------------------------------------- */

static struct fault_fs *fault__fs(stele_io *io)
{
    return (struct fault_fs *)io;
}

static struct fault_file *fault__file(stele_file *f)
{
    return (struct fault_file *)f;
}

static int fault_open(stele_io *io, const char *path, int flags, stele_file **out)
{
    struct fault_fs *fs = fault__fs(io);
    struct fault_inode *parent = NULL;
    struct fault_inode *node = NULL;
    struct fault_inode *created = NULL;
    struct fault_entry *entry = NULL;
    struct fault_file *f = NULL;
    const char *name = NULL;
    size_t name_len = 0;
    int rc = 0;

    pthread_mutex_lock(&fs->mu);
    rc = fault__resolve_parent(fs, path, NULL, NULL, &parent, &name, &name_len);
    if (rc != 0)
        goto fail;
    if (name_len == 0) {
        rc = -EISDIR;
        goto fail;
    }
    f = calloc(1, sizeof *f);
    if (f == NULL) {
        rc = -ENOMEM;
        goto fail;
    }
    node = fault__lookup(parent, name, name_len);
    if (node != NULL && (flags & STELE_IO_CREATE) && (flags & STELE_IO_EXCL)) {
        rc = -EEXIST;
        goto fail;
    }
    if (node != NULL && node->kind == FAULT_DIR) {
        rc = -EISDIR;
        goto fail;
    }
    if (node == NULL) {
        if (!(flags & STELE_IO_CREATE)) {
            rc = -ENOENT;
            goto fail;
        }
        rc = fault__entry_get(parent, name, name_len, &entry);
        if (rc != 0)
            goto fail;
        created = fault__inode_new(fs, FAULT_FILE);
        if (created == NULL) {
            rc = -ENOMEM;
            goto fail;
        }
        entry->cur_node = created;
        node = created;
        created = NULL; /* now belongs to the namespace */
    }
    if (flags & STELE_IO_TRUNCATE) {
        rc = fault__set_len(fs, node, 0);
        if (rc != 0)
            goto fail;
    }
    f->base.ops = &fault_ops;
    f->fs = fs;
    f->node = node;
    f->writable = (flags & STELE_IO_READWRITE) != 0;
    f->next = fs->files;
    if (fs->files != NULL)
        fs->files->prev = f;
    fs->files = f;
    *out = &f->base;
    pthread_mutex_unlock(&fs->mu);
    return 0;

fail:
    free(f);
    if (parent != NULL)
        fault__entries_compact(parent); /* drops an empty entry of a failed create */
    pthread_mutex_unlock(&fs->mu);
    return rc;
}

static int fault_pread(stele_file *file, void *buf, size_t len, uint64_t off, size_t *nread)
{
    struct fault_file *f = fault__file(file);
    struct fault_fs *fs = f->fs;
    int rc = 0;

    pthread_mutex_lock(&fs->mu);
    if (f->node == NULL) {
        rc = -EIO;
        goto out;
    }
    if (off < f->node->cur_len) {
        size_t n = fault__min(len, f->node->cur_len - (size_t)off);

        memcpy(buf, f->node->cur + off, n);
        *nread = n;
    }
out:
    pthread_mutex_unlock(&fs->mu);
    return rc;
}

static int fault_pwrite(stele_file *file, const void *buf, size_t len, uint64_t off)
{
    struct fault_file *f = fault__file(file);
    struct fault_fs *fs = f->fs;
    struct fault_inode *n = NULL;
    size_t fit = 0;
    int rc = 0;
    int write_rc = 0;

    pthread_mutex_lock(&fs->mu);
    n = f->node;
    if (n == NULL) {
        rc = -EIO;
        goto out;
    }
    if (!f->writable) {
        rc = -EBADF;
        goto out;
    }
    if (off > FAULT_MAX_FILE_BYTES || len > FAULT_MAX_FILE_BYTES - off) {
        rc = -EFBIG;
        goto out;
    }
    rc = fault__take_fault(fs, STELE_FAULT_OP_WRITE);
    if (rc != 0) {
        /* A failed write may have stored part of its data: a prefix, never all. */
        len = (size_t)fault__rand_below(fs, len);
    }
    fit = fault__capacity_fit(fs, n, len, (size_t)off);
    if (fit < len && rc == 0)
        rc = -ENOSPC;
    write_rc = fault__write_image(fs, n, buf, fit, (size_t)off);
    if (rc == 0)
        rc = write_rc;
out:
    pthread_mutex_unlock(&fs->mu);
    return rc;
}

static int fault_fsync(stele_file *file)
{
    struct fault_file *f = fault__file(file);
    struct fault_fs *fs = f->fs;
    struct fault_inode *n = NULL;
    size_t lo = 0;
    int rc = 0;

    pthread_mutex_lock(&fs->mu);
    n = f->node;
    if (n == NULL) {
        rc = -EIO;
        goto out;
    }
    rc = fault__take_fault(fs, STELE_FAULT_OP_FSYNC);
    if (f->fsync_failed) {
        rc = -EIO;
        goto out;
    }
    if (rc != 0) {
        f->fsync_failed = true;
        goto out;
    }
    rc = fault__reserve(&n->dur, &n->dur_cap, n->cur_len);
    if (rc != 0) {
        f->fsync_failed = true; /* the contract allows no half-way success */
        goto out;
    }
    lo = fault__min(n->dirty_lo, fault__min(n->cur_len, n->dur_len));
    if (n->cur_len > lo)
        memcpy(n->dur + lo, n->cur + lo, n->cur_len - lo);
    n->dur_len = n->cur_len;
    n->dirty_lo = FAULT_CLEAN;
out:
    pthread_mutex_unlock(&fs->mu);
    return rc;
}

static int fault_size(stele_file *file, uint64_t *size)
{
    struct fault_file *f = fault__file(file);
    int rc = 0;

    pthread_mutex_lock(&f->fs->mu);
    if (f->node == NULL)
        rc = -EIO;
    else
        *size = f->node->cur_len;
    pthread_mutex_unlock(&f->fs->mu);
    return rc;
}

static int fault_truncate(stele_file *file, uint64_t size)
{
    struct fault_file *f = fault__file(file);
    struct fault_fs *fs = f->fs;
    struct fault_inode *n = NULL;
    int rc = 0;

    pthread_mutex_lock(&fs->mu);
    n = f->node;
    if (n == NULL) {
        rc = -EIO;
        goto out;
    }
    if (!f->writable) {
        rc = -EBADF;
        goto out;
    }
    if (size > FAULT_MAX_FILE_BYTES) {
        rc = -EFBIG;
        goto out;
    }
    rc = fault__take_fault(fs, STELE_FAULT_OP_WRITE);
    if (rc != 0)
        goto out; /* a failed truncate changed nothing */
    if (fs->capacity != 0 && size > n->cur_len &&
        fs->current_bytes + (size - n->cur_len) > fs->capacity) {
        rc = -ENOSPC;
        goto out;
    }
    rc = fault__set_len(fs, n, (size_t)size);
out:
    pthread_mutex_unlock(&fs->mu);
    return rc;
}

static int fault_close(stele_file *file)
{
    struct fault_file *f = fault__file(file);
    struct fault_fs *fs = f->fs;

    pthread_mutex_lock(&fs->mu);
    if (f->prev != NULL)
        f->prev->next = f->next;
    else
        fs->files = f->next;
    if (f->next != NULL)
        f->next->prev = f->prev;
    free(f);
    fault__gc(fs); /* the last reference to an unlinked file may have gone */
    pthread_mutex_unlock(&fs->mu);
    return 0;
}

/* ---- namespace operations -------------------------------------------------------- */

static int fault_rename(stele_io *io, const char *from, const char *to)
{
    struct fault_fs *fs = fault__fs(io);
    struct fault_inode *from_dir = NULL;
    struct fault_inode *to_dir = NULL;
    struct fault_inode *node = NULL;
    struct fault_inode *target = NULL;
    struct fault_entry *from_entry = NULL;
    struct fault_entry *to_entry = NULL;
    const char *from_name = NULL;
    const char *to_name = NULL;
    size_t from_len = 0;
    size_t to_len = 0;
    bool into_itself = false;
    int rc = 0;

    pthread_mutex_lock(&fs->mu);
    rc = fault__resolve_parent(fs, from, NULL, NULL, &from_dir, &from_name, &from_len);
    if (rc != 0)
        goto out;
    if (from_len == 0) {
        rc = -EBUSY; /* the root */
        goto out;
    }
    node = fault__lookup(from_dir, from_name, from_len);
    if (node == NULL) {
        rc = -ENOENT;
        goto out;
    }
    rc = fault__resolve_parent(fs, to, node, &into_itself, &to_dir, &to_name, &to_len);
    if (rc != 0)
        goto out;
    if (to_len == 0) {
        rc = -EBUSY;
        goto out;
    }
    if (node->kind == FAULT_DIR && into_itself) {
        rc = -EINVAL;
        goto out;
    }
    target = fault__lookup(to_dir, to_name, to_len);
    if (target == node)
        goto out; /* same inode: rename(2) does nothing and succeeds */
    if (target != NULL) {
        if (node->kind == FAULT_DIR && target->kind != FAULT_DIR) {
            rc = -ENOTDIR;
            goto out;
        }
        if (node->kind != FAULT_DIR && target->kind == FAULT_DIR) {
            rc = -EISDIR;
            goto out;
        }
        if (target->kind == FAULT_DIR && fault__dir_has_current_entries(target)) {
            rc = -ENOTEMPTY;
            goto out;
        }
    }
    rc = fault__entry_get(to_dir, to_name, to_len, &to_entry);
    if (rc != 0)
        goto out;
    /* Look the source up again: adding to_entry may have moved from_dir's table. */
    from_entry = fault__entry_find(from_dir, from_name, from_len);
    to_entry->cur_node = node;
    from_entry->cur_node = NULL;
    fault__entries_compact(from_dir);
    fault__gc(fs);
out:
    pthread_mutex_unlock(&fs->mu);
    return rc;
}

/* Shared by unlink and rmdir: removes the running name of a file (want_dir false) or
 * of an empty directory (want_dir true). */
static int fault__remove(struct fault_fs *fs, const char *path, bool want_dir)
{
    struct fault_inode *dir = NULL;
    struct fault_inode *node = NULL;
    const char *name = NULL;
    size_t name_len = 0;
    int rc = 0;

    pthread_mutex_lock(&fs->mu);
    rc = fault__resolve_parent(fs, path, NULL, NULL, &dir, &name, &name_len);
    if (rc != 0)
        goto out;
    if (name_len == 0) {
        rc = want_dir ? -EBUSY : -EISDIR; /* the root */
        goto out;
    }
    node = fault__lookup(dir, name, name_len);
    if (node == NULL) {
        rc = -ENOENT;
        goto out;
    }
    if (!want_dir && node->kind == FAULT_DIR) {
        rc = -EISDIR;
        goto out;
    }
    if (want_dir && node->kind != FAULT_DIR) {
        rc = -ENOTDIR;
        goto out;
    }
    if (want_dir && fault__dir_has_current_entries(node)) {
        rc = -ENOTEMPTY;
        goto out;
    }
    fault__entry_find(dir, name, name_len)->cur_node = NULL;
    fault__entries_compact(dir);
    fault__gc(fs);
out:
    pthread_mutex_unlock(&fs->mu);
    return rc;
}

static int fault_unlink(stele_io *io, const char *path)
{
    return fault__remove(fault__fs(io), path, false);
}

static int fault_rmdir(stele_io *io, const char *path)
{
    return fault__remove(fault__fs(io), path, true);
}

static int fault_mkdir(stele_io *io, const char *path)
{
    struct fault_fs *fs = fault__fs(io);
    struct fault_inode *dir = NULL;
    struct fault_inode *node = NULL;
    struct fault_entry *entry = NULL;
    const char *name = NULL;
    size_t name_len = 0;
    int rc = 0;

    pthread_mutex_lock(&fs->mu);
    rc = fault__resolve_parent(fs, path, NULL, NULL, &dir, &name, &name_len);
    if (rc != 0)
        goto out;
    if (name_len == 0)
        goto out; /* the root exists */
    node = fault__lookup(dir, name, name_len);
    if (node != NULL) {
        rc = node->kind == FAULT_DIR ? 0 : -EEXIST;
        goto out;
    }
    rc = fault__entry_get(dir, name, name_len, &entry);
    if (rc != 0)
        goto out;
    node = fault__inode_new(fs, FAULT_DIR);
    if (node == NULL) {
        rc = -ENOMEM;
        fault__entries_compact(dir);
        goto out;
    }
    entry->cur_node = node;
out:
    pthread_mutex_unlock(&fs->mu);
    return rc;
}

static int fault_fsync_dir(stele_io *io, const char *path)
{
    struct fault_fs *fs = fault__fs(io);
    struct fault_inode *dir = NULL;
    size_t i;
    int rc = 0;

    pthread_mutex_lock(&fs->mu);
    rc = fault__resolve(fs, path, &dir);
    if (rc != 0)
        goto out;
    if (dir->kind != FAULT_DIR) {
        rc = -ENOTDIR;
        goto out;
    }
    rc = fault__take_fault(fs, STELE_FAULT_OP_FSYNC);
    if (rc != 0)
        goto out;
    for (i = 0; i < dir->n_entries; i++)
        dir->entries[i].dur_node = dir->entries[i].cur_node;
    fault__entries_compact(dir);
    fault__gc(fs);
out:
    pthread_mutex_unlock(&fs->mu);
    return rc;
}

static int fault_list(stele_io *io, const char *path, stele_io_list_fn fn, void *ctx)
{
    struct fault_fs *fs = fault__fs(io);
    struct fault_inode *dir = NULL;
    char **names = NULL;
    size_t n_names = 0;
    size_t i;
    int rc = 0;

    /* Copy the names under the lock, call back without it: a callback may well call
     * back into this io (to unlink what it lists). */
    pthread_mutex_lock(&fs->mu);
    rc = fault__resolve(fs, path, &dir);
    if (rc == 0 && dir->kind != FAULT_DIR)
        rc = -ENOTDIR;
    if (rc == 0 && dir->n_entries > 0) {
        names = calloc(dir->n_entries, sizeof *names);
        if (names == NULL)
            rc = -ENOMEM;
    }
    for (i = 0; rc == 0 && i < dir->n_entries; i++) {
        if (dir->entries[i].cur_node == NULL)
            continue;
        names[n_names] = strdup(dir->entries[i].name);
        if (names[n_names] == NULL)
            rc = -ENOMEM;
        else
            n_names++;
    }
    pthread_mutex_unlock(&fs->mu);

    for (i = 0; rc == 0 && i < n_names; i++) {
        rc = fn(ctx, names[i]);
        if (rc > 0) {
            rc = 0;
            break;
        }
    }
    for (i = 0; i < n_names; i++)
        free(names[i]);
    free(names);
    return rc;
}

static int fault_exists(stele_io *io, const char *path)
{
    struct fault_fs *fs = fault__fs(io);
    struct fault_inode *node = NULL;
    int rc = 0;

    pthread_mutex_lock(&fs->mu);
    rc = fault__resolve(fs, path, &node);
    pthread_mutex_unlock(&fs->mu);
    if (rc == 0)
        return 1;
    if (rc == -ENOENT || rc == -ENOTDIR)
        return 0;
    return rc;
}

/* Open handles are the caller's to close, before this (closing one after it is a
 * use-after-free, which the sanitizer builds report). */
static void fault_destroy(stele_io *io)
{
    struct fault_fs *fs = fault__fs(io);

    while (fs->inodes_head != NULL)
        fault__inode_free(fs, fs->inodes_head);
    pthread_mutex_destroy(&fs->mu);
    free(fs);
}

static const struct stele_io_ops fault_ops = {
    .open = fault_open,
    .pread = fault_pread,
    .pwrite = fault_pwrite,
    .fsync = fault_fsync,
    .size = fault_size,
    .truncate = fault_truncate,
    .close = fault_close,
    .rename = fault_rename,
    .unlink = fault_unlink,
    .mkdir = fault_mkdir,
    .rmdir = fault_rmdir,
    .fsync_dir = fault_fsync_dir,
    .list = fault_list,
    .exists = fault_exists,
    .destroy = fault_destroy,
};

/* ---- test controls --------------------------------------------------------------- */

/* The fault io behind `io`, or NULL when `io` is another implementation. */
static struct fault_fs *fault__from(stele_io *io)
{
    return io != NULL && io->ops == &fault_ops ? fault__fs(io) : NULL;
}

int stele_io_fault_create(uint64_t seed, stele_io **out)
{
    struct fault_fs *fs = NULL;

    if (out == NULL)
        return -EINVAL;
    *out = NULL;
    fs = calloc(1, sizeof *fs);
    if (fs == NULL)
        return -ENOMEM;
    if (pthread_mutex_init(&fs->mu, NULL) != 0) {
        free(fs);
        return -ENOMEM;
    }
    fs->base.ops = &fault_ops;
    fs->rng = seed;
    fs->root = fault__inode_new(fs, FAULT_DIR);
    if (fs->root == NULL) {
        pthread_mutex_destroy(&fs->mu);
        free(fs);
        return -ENOMEM;
    }
    *out = &fs->base;
    return 0;
}

void stele_io_fault_fail_after(stele_io *io, enum stele_fault_op op, uint64_t nth, int errno_value)
{
    struct fault_fs *fs = fault__from(io);

    if (fs == NULL || (op != STELE_FAULT_OP_WRITE && op != STELE_FAULT_OP_FSYNC))
        return;
    pthread_mutex_lock(&fs->mu);
    fs->fail_countdown[op] = nth; /* 0 cancels */
    if (errno_value < 0)
        errno_value = -errno_value;
    fs->fail_errno[op] = errno_value != 0 ? errno_value : EIO;
    pthread_mutex_unlock(&fs->mu);
}

void stele_io_fault_set_capacity(stele_io *io, uint64_t bytes)
{
    struct fault_fs *fs = fault__from(io);

    if (fs == NULL)
        return;
    pthread_mutex_lock(&fs->mu);
    fs->capacity = bytes;
    pthread_mutex_unlock(&fs->mu);
}

void stele_io_fault_power_cut(stele_io *io, enum stele_fault_cut_mode mode)
{
    struct fault_fs *fs = fault__from(io);
    struct fault_file *f = NULL;
    struct fault_inode *n = NULL;
    struct fault_inode *stack = NULL;

    if (fs == NULL)
        return;
    pthread_mutex_lock(&fs->mu);
    for (f = fs->files; f != NULL; f = f->next)
        f->node = NULL; /* dead: only close works now */

    /* The namespace becomes the durable one, walked from the root. A directory
     * reached a second time (durable entries written at different moments can form a
     * loop or a second name) keeps only its first name, as fsck would. */
    for (n = fs->inodes_head; n != NULL; n = n->next)
        n->mark = 0;
    fault__mark_push(&stack, fs->root, FAULT_MARK_REACHABLE);
    while (stack != NULL) {
        size_t i;

        n = stack;
        stack = n->gc_next;
        for (i = 0; i < n->n_entries; i++) {
            struct fault_entry *e = &n->entries[i];

            if (e->dur_node != NULL && e->dur_node->kind == FAULT_DIR &&
                (e->dur_node->mark & FAULT_MARK_REACHABLE))
                e->dur_node = NULL;
            e->cur_node = e->dur_node;
            fault__mark_push(&stack, e->dur_node, FAULT_MARK_REACHABLE);
        }
        fault__entries_compact(n);
    }
    fault__gc(fs); /* frees what only the running namespace or handles held */
    for (n = fs->inodes_head; n != NULL; n = n->next) {
        if (n->kind == FAULT_FILE)
            fault__cut_file(fs, n, mode);
    }
    fault__gc(fs); /* recounts capacity on the new images */
    fs->fail_countdown[STELE_FAULT_OP_WRITE] = 0;
    fs->fail_countdown[STELE_FAULT_OP_FSYNC] = 0;
    pthread_mutex_unlock(&fs->mu);
}

uint64_t stele_io_fault_op_count(stele_io *io, enum stele_fault_op op)
{
    struct fault_fs *fs = fault__from(io);
    uint64_t count = 0;

    if (fs == NULL || (op != STELE_FAULT_OP_WRITE && op != STELE_FAULT_OP_FSYNC))
        return 0;
    pthread_mutex_lock(&fs->mu);
    count = fs->op_count[op];
    pthread_mutex_unlock(&fs->mu);
    return count;
}

int stele_io_fault_flip_bit(stele_io *io, const char *path, uint64_t bit_offset)
{
    struct fault_fs *fs = fault__from(io);
    struct fault_inode *n = NULL;
    uint64_t byte = bit_offset / 8;
    uint8_t mask = (uint8_t)(1u << (bit_offset % 8));
    int rc = 0;

    if (fs == NULL || path == NULL)
        return -EINVAL;
    pthread_mutex_lock(&fs->mu);
    rc = fault__resolve(fs, path, &n);
    if (rc != 0)
        goto out;
    if (n->kind != FAULT_FILE) {
        rc = -EISDIR;
        goto out;
    }
    if (byte >= n->cur_len && byte >= n->dur_len) {
        rc = -EINVAL;
        goto out;
    }
    if (byte < n->cur_len)
        n->cur[byte] ^= mask;
    if (byte < n->dur_len)
        n->dur[byte] ^= mask;
out:
    pthread_mutex_unlock(&fs->mu);
    return rc;
}
