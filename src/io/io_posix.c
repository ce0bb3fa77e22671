/*
 * io_posix.c — the real-disk stele_io, a thin layer over POSIX file calls.
 *
 * Design: keep the kernel's semantics and add only what the contract in io.h needs
 * that raw syscalls do not give: loops over EINTR and short transfers (so a write is
 * all-or-error), O_CLOEXEC everywhere (the server never leaks descriptors into
 * children), files 0600 and directories 0700 (telemetry and token stores are private),
 * and a sticky fsync failure per handle. Linux reports a writeback error to an fsync
 * only once and then marks the lost pages clean, so a second fsync may "succeed" over
 * lost data; remembering the first failure turns that trap into a plain -EIO.
 *
 * fsync(2) rather than fdatasync(2): the engine grows files by appending, and the new
 * size is metadata that fdatasync also has to flush; fsync is simpler to reason about
 * and costs the same in that case.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "io/io_impl.h"

/* Modes of what the engine creates: owner-only, the data directory holds secrets. */
#define POSIX_FILE_MODE 0600
#define POSIX_DIR_MODE 0700

/* Largest single read/write request: Linux transfers at most 0x7ffff000 bytes per
 * call anyway, and a power-of-two chunk below that keeps the loop's arithmetic in
 * ssize_t range on every platform. */
#define POSIX_IO_CHUNK ((size_t)1 << 30)

struct posix_file {
    struct stele_file base; /* must be first: io.c dispatches through it */
    int fd;
    atomic_int fsync_failed; /* set once an fsync failed; every later fsync fails */
};

static const struct stele_io_ops posix_ops;

static struct posix_file *posix__file(stele_file *f)
{
    return (struct posix_file *)f;
}

/* An offset + length that does not fit in off_t cannot be a position in a file. */
static int posix__check_range(uint64_t off, size_t len)
{
    if (off > (uint64_t)INT64_MAX || (uint64_t)len > (uint64_t)INT64_MAX - off)
        return -EFBIG;
    return 0;
}

static int posix_open(stele_io *io, const char *path, int flags, stele_file **out)
{
    int rc = 0;
    int oflags = O_CLOEXEC;
    int fd = -1;
    struct stat st;
    struct posix_file *pf = NULL;

    (void)io;
    oflags |= (flags & STELE_IO_READWRITE) ? O_RDWR : O_RDONLY;
    if (flags & STELE_IO_CREATE)
        oflags |= O_CREAT;
    if (flags & STELE_IO_EXCL)
        oflags |= O_EXCL;
    if (flags & STELE_IO_TRUNCATE)
        oflags |= O_TRUNC;

    do {
        fd = open(path, oflags, POSIX_FILE_MODE);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) {
        rc = -errno;
        goto fail;
    }
    /* open(2) lets O_RDONLY open a directory; the contract is about files, and the
     * fault file system refuses here too, so both report -EISDIR at the same step. */
    if (fstat(fd, &st) != 0) {
        rc = -errno;
        goto fail;
    }
    if (S_ISDIR(st.st_mode)) {
        rc = -EISDIR;
        goto fail;
    }
    pf = calloc(1, sizeof *pf);
    if (pf == NULL) {
        rc = -ENOMEM;
        goto fail;
    }
    pf->base.ops = &posix_ops;
    pf->fd = fd;
    atomic_init(&pf->fsync_failed, 0);
    *out = &pf->base;
    return 0;

fail:
    if (fd >= 0)
        close(fd);
    return rc;
}

static int posix_pread(stele_file *f, void *buf, size_t len, uint64_t off, size_t *nread)
{
    struct posix_file *pf = posix__file(f);
    size_t done = 0;
    int rc = posix__check_range(off, len);

    if (rc != 0)
        return rc;
    while (done < len) {
        size_t want = len - done < POSIX_IO_CHUNK ? len - done : POSIX_IO_CHUNK;
        ssize_t n = pread(pf->fd, (uint8_t *)buf + done, want, (off_t)(off + done));

        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            break; /* end of file */
        done += (size_t)n;
    }
    *nread = done;
    return 0;
}

static int posix_pwrite(stele_file *f, const void *buf, size_t len, uint64_t off)
{
    struct posix_file *pf = posix__file(f);
    size_t done = 0;
    int rc = posix__check_range(off, len);

    if (rc != 0)
        return rc;
    while (done < len) {
        size_t want = len - done < POSIX_IO_CHUNK ? len - done : POSIX_IO_CHUNK;
        ssize_t n = pwrite(pf->fd, (const uint8_t *)buf + done, want, (off_t)(off + done));

        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno; /* ENOSPC, EIO, EDQUOT… as the kernel said */
        }
        if (n == 0)
            return -EIO; /* no progress and no reason: never report it as success */
        done += (size_t)n;
    }
    return 0;
}

static int posix_fsync(stele_file *f)
{
    struct posix_file *pf = posix__file(f);

    if (atomic_load(&pf->fsync_failed))
        return -EIO;
    /* No retry on EINTR: an interrupted fsync may have lost the error it was about to
     * report, and the contract says a failed fsync is final. */
    if (fsync(pf->fd) != 0) {
        int rc = -errno;

        atomic_store(&pf->fsync_failed, 1);
        return rc;
    }
    return 0;
}

static int posix_size(stele_file *f, uint64_t *size)
{
    struct stat st;

    if (fstat(posix__file(f)->fd, &st) != 0)
        return -errno;
    *size = (uint64_t)st.st_size;
    return 0;
}

static int posix_truncate(stele_file *f, uint64_t size)
{
    int rc = posix__check_range(size, 0);

    if (rc != 0)
        return rc;
    while (ftruncate(posix__file(f)->fd, (off_t)size) != 0) {
        if (errno != EINTR)
            return -errno;
    }
    return 0;
}

static int posix_close(stele_file *f)
{
    struct posix_file *pf = posix__file(f);
    int rc = 0;

    /* Linux releases the descriptor even when close fails, so it is never retried;
     * EINTR is not an error of the file. Other errors (NFS's deferred EIO) are real. */
    if (close(pf->fd) != 0 && errno != EINTR)
        rc = -errno;
    free(pf);
    return rc;
}

static int posix_rename(stele_io *io, const char *from, const char *to)
{
    (void)io;
    return rename(from, to) == 0 ? 0 : -errno;
}

static int posix_unlink(stele_io *io, const char *path)
{
    (void)io;
    return unlink(path) == 0 ? 0 : -errno;
}

static int posix_mkdir(stele_io *io, const char *path)
{
    struct stat st;

    (void)io;
    if (mkdir(path, POSIX_DIR_MODE) == 0)
        return 0;
    if (errno != EEXIST)
        return -errno;
    /* "Already exists" is success only when what exists is a directory. */
    if (stat(path, &st) != 0)
        return -errno;
    return S_ISDIR(st.st_mode) ? 0 : -EEXIST;
}

static int posix_rmdir(stele_io *io, const char *path)
{
    (void)io;
    return rmdir(path) == 0 ? 0 : -errno;
}

static int posix_fsync_dir(stele_io *io, const char *path)
{
    int rc = 0;
    int fd = -1;

    (void)io;
    do {
        fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0)
        return -errno;
    if (fsync(fd) != 0)
        rc = -errno;
    close(fd);
    return rc;
}

static int posix_list(stele_io *io, const char *dir, stele_io_list_fn fn, void *ctx)
{
    int rc = 0;
    DIR *d = NULL;
    struct dirent *de = NULL;

    (void)io;
    d = opendir(dir);
    if (d == NULL)
        return -errno;
    for (;;) {
        errno = 0; /* readdir signals errors only through errno */
        de = readdir(d);
        if (de == NULL) {
            rc = -errno;
            break;
        }
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        rc = fn(ctx, de->d_name);
        if (rc != 0) {
            rc = rc < 0 ? rc : 0;
            break;
        }
    }
    closedir(d);
    return rc;
}

static int posix_exists(stele_io *io, const char *path)
{
    struct stat st;

    (void)io;
    if (stat(path, &st) == 0)
        return 1;
    if (errno == ENOENT || errno == ENOTDIR)
        return 0;
    return -errno;
}

static void posix_destroy(stele_io *io)
{
    free(io);
}

static const struct stele_io_ops posix_ops = {
    .open = posix_open,
    .pread = posix_pread,
    .pwrite = posix_pwrite,
    .fsync = posix_fsync,
    .size = posix_size,
    .truncate = posix_truncate,
    .close = posix_close,
    .rename = posix_rename,
    .unlink = posix_unlink,
    .mkdir = posix_mkdir,
    .rmdir = posix_rmdir,
    .fsync_dir = posix_fsync_dir,
    .list = posix_list,
    .exists = posix_exists,
    .destroy = posix_destroy,
};

int stele_io_posix_create(stele_io **out)
{
    stele_io *io = NULL;

    if (out == NULL)
        return -EINVAL;
    *out = NULL;
    io = calloc(1, sizeof *io);
    if (io == NULL)
        return -ENOMEM;
    io->ops = &posix_ops;
    *out = io;
    return 0;
}
