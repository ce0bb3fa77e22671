/*
 * io.c — the stele_io wrappers and the helpers built only on them.
 *
 * The wrappers validate what every implementation would otherwise have to validate
 * (open flags, NULL handles) and dispatch through the ops table, so the POSIX and the
 * fault-injecting implementations behave the same at the edges. The two helpers,
 * write_file_atomic and read_file, are written purely against the wrappers: run on
 * the fault file system, the crash tests exercise exactly the code the server runs.
 *
 * Listing: a callback that returns a negative value stops the listing and that value
 * is returned by stele_io_list (so a callback can report -ENOMEM); a positive value
 * stops it and stele_io_list returns 0.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/io_impl.h"

/* Every flag bit the API defines; anything else is a caller bug. */
#define IO_FLAGS_KNOWN                                                                             \
    (STELE_IO_READ | STELE_IO_READWRITE | STELE_IO_CREATE | STELE_IO_EXCL | STELE_IO_TRUNCATE)

/* Suffix of the temporary file write_file_atomic writes before renaming it into place.
 * Recovery code that lists a directory can recognise and delete leftovers by it. */
#define IO_ATOMIC_TMP_SUFFIX ".tmp"

static int io__check_flags(int flags)
{
    int access = flags & (STELE_IO_READ | STELE_IO_READWRITE);

    if ((flags & ~IO_FLAGS_KNOWN) != 0)
        return -EINVAL;
    if (access != STELE_IO_READ && access != STELE_IO_READWRITE)
        return -EINVAL;
    /* open(2) leaves O_TRUNC on a read-only descriptor unspecified (Linux truncates);
     * refuse it rather than let the two implementations differ. */
    if ((flags & STELE_IO_TRUNCATE) && access != STELE_IO_READWRITE)
        return -EINVAL;
    if ((flags & STELE_IO_EXCL) && !(flags & STELE_IO_CREATE))
        return -EINVAL;
    return 0;
}

int stele_io_open(stele_io *io, const char *path, int flags, stele_file **out)
{
    int rc = 0;

    if (out != NULL)
        *out = NULL;
    if (io == NULL || path == NULL || out == NULL)
        return -EINVAL;
    rc = io__check_flags(flags);
    if (rc != 0)
        return rc;
    return io->ops->open(io, path, flags, out);
}

int stele_io_pread(stele_file *f, void *buf, size_t len, uint64_t off, size_t *nread)
{
    if (nread != NULL)
        *nread = 0;
    if (f == NULL || nread == NULL || (buf == NULL && len > 0))
        return -EINVAL;
    if (len == 0)
        return 0;
    return f->ops->pread(f, buf, len, off, nread);
}

int stele_io_pread_full(stele_file *f, void *buf, size_t len, uint64_t off)
{
    int rc = 0;
    size_t done = 0;
    size_t got = 0;

    while (done < len) {
        rc = stele_io_pread(f, (uint8_t *)buf + done, len - done, off + done, &got);
        if (rc != 0)
            return rc;
        if (got == 0)
            return -EIO; /* the file ended before len bytes: a short read */
        done += got;
    }
    return 0;
}

int stele_io_pwrite(stele_file *f, const void *buf, size_t len, uint64_t off)
{
    if (f == NULL || (buf == NULL && len > 0))
        return -EINVAL;
    if (len == 0)
        return 0;
    return f->ops->pwrite(f, buf, len, off);
}

int stele_io_fsync(stele_file *f)
{
    if (f == NULL)
        return -EINVAL;
    return f->ops->fsync(f);
}

int stele_io_size(stele_file *f, uint64_t *size)
{
    if (size != NULL)
        *size = 0;
    if (f == NULL || size == NULL)
        return -EINVAL;
    return f->ops->size(f, size);
}

int stele_io_truncate(stele_file *f, uint64_t size)
{
    if (f == NULL)
        return -EINVAL;
    return f->ops->truncate(f, size);
}

int stele_io_close(stele_file *f)
{
    if (f == NULL)
        return 0;
    return f->ops->close(f);
}

int stele_io_rename(stele_io *io, const char *from, const char *to)
{
    if (io == NULL || from == NULL || to == NULL)
        return -EINVAL;
    return io->ops->rename(io, from, to);
}

int stele_io_unlink(stele_io *io, const char *path)
{
    if (io == NULL || path == NULL)
        return -EINVAL;
    return io->ops->unlink(io, path);
}

int stele_io_mkdir(stele_io *io, const char *path)
{
    if (io == NULL || path == NULL)
        return -EINVAL;
    return io->ops->mkdir(io, path);
}

int stele_io_rmdir(stele_io *io, const char *path)
{
    if (io == NULL || path == NULL)
        return -EINVAL;
    return io->ops->rmdir(io, path);
}

int stele_io_fsync_dir(stele_io *io, const char *path)
{
    if (io == NULL || path == NULL)
        return -EINVAL;
    return io->ops->fsync_dir(io, path);
}

int stele_io_list(stele_io *io, const char *dir, stele_io_list_fn fn, void *ctx)
{
    if (io == NULL || dir == NULL || fn == NULL)
        return -EINVAL;
    return io->ops->list(io, dir, fn, ctx);
}

int stele_io_exists(stele_io *io, const char *path)
{
    if (io == NULL || path == NULL)
        return -EINVAL;
    return io->ops->exists(io, path);
}

void stele_io_destroy(stele_io *io)
{
    if (io == NULL)
        return;
    io->ops->destroy(io);
}

/* Writes "<dir>/<name><suffix>" into out; -ENAMETOOLONG if it does not fit. */
static int io__join(char *out, size_t cap, const char *dir, const char *name, const char *suffix)
{
    int n = snprintf(out, cap, "%s/%s%s", dir, name, suffix);

    if (n < 0)
        return -EINVAL;
    if ((size_t)n >= cap)
        return -ENAMETOOLONG;
    return 0;
}

/*
 * The classic sequence: the tmp file is written and fsync'd completely before the
 * rename, so the name points either at the old complete file or at the new complete
 * one; fsync of the directory makes the rename itself durable. The tmp name is fixed
 * (not random) so a crash leaves at most one leftover per target, which the next call
 * truncates and reuses. Callers must not run two writers of the same name at once.
 */
int stele_io_write_file_atomic(stele_io *io, const char *dir, const char *name, const void *buf,
                               size_t len)
{
    int rc = 0;
    int close_rc = 0;
    stele_file *f = NULL;
    char tmp_path[STELE_IO_PATH_MAX];
    char final_path[STELE_IO_PATH_MAX];

    if (io == NULL || dir == NULL || name == NULL || (buf == NULL && len > 0))
        return -EINVAL;
    if (dir[0] == '\0' || name[0] == '\0' || strchr(name, '/') != NULL)
        return -EINVAL;
    rc = io__join(tmp_path, sizeof tmp_path, dir, name, IO_ATOMIC_TMP_SUFFIX);
    if (rc != 0)
        return rc;
    rc = io__join(final_path, sizeof final_path, dir, name, "");
    if (rc != 0)
        return rc;

    rc = stele_io_open(io, tmp_path, STELE_IO_READWRITE | STELE_IO_CREATE | STELE_IO_TRUNCATE, &f);
    if (rc != 0)
        goto fail; /* may have been created (or be a leftover of a crash): remove it */
    rc = stele_io_pwrite(f, buf, len, 0);
    if (rc != 0)
        goto fail;
    rc = stele_io_fsync(f);
    if (rc != 0)
        goto fail;
    close_rc = stele_io_close(f);
    f = NULL;
    if (close_rc != 0) {
        rc = close_rc;
        goto fail;
    }
    rc = stele_io_rename(io, tmp_path, final_path);
    if (rc != 0)
        goto fail;
    rc = stele_io_fsync_dir(io, dir);
    if (rc != 0)
        goto fail; /* the rename happened but may not survive a crash: report it */
    return 0;

fail:
    stele_io_close(f);
    /* After a successful rename the tmp name no longer exists and this is a no-op. */
    stele_io_unlink(io, tmp_path);
    return rc;
}

int stele_io_read_file(stele_io *io, const char *path, size_t max_len, uint8_t **out,
                       size_t *out_len)
{
    int rc = 0;
    stele_file *f = NULL;
    uint8_t *data = NULL;
    uint64_t size = 0;

    if (out != NULL)
        *out = NULL;
    if (out_len != NULL)
        *out_len = 0;
    if (io == NULL || path == NULL || out == NULL || out_len == NULL)
        return -EINVAL;

    rc = stele_io_open(io, path, STELE_IO_READ, &f);
    if (rc != 0)
        goto fail;
    rc = stele_io_size(f, &size);
    if (rc != 0)
        goto fail;
    if (size > max_len) {
        rc = -EFBIG;
        goto fail;
    }
    /* malloc(0) may return NULL; one spare byte keeps "empty file" distinct from ENOMEM. */
    data = malloc((size_t)size + 1);
    if (data == NULL) {
        rc = -ENOMEM;
        goto fail;
    }
    rc = stele_io_pread_full(f, data, (size_t)size, 0);
    if (rc != 0)
        goto fail;
    rc = stele_io_close(f);
    f = NULL;
    if (rc != 0)
        goto fail;

    *out = data;
    data = NULL; /* now belongs to the caller */
    *out_len = (size_t)size;
    return 0;

fail:
    stele_io_close(f);
    free(data);
    return rc;
}

int stele_io_mkdir_durable(stele_io *io, const char *path)
{
    char parent[4096];
    int existed = stele_io_exists(io, path);
    if (existed < 0)
        return existed;
    int rc = stele_io_mkdir(io, path);
    if (rc || existed == 1)
        return rc;
    if (strlen(path) >= sizeof(parent))
        return -ENAMETOOLONG;
    snprintf(parent, sizeof(parent), "%s", path);
    char *slash = strrchr(parent, '/');
    if (!slash)
        snprintf(parent, sizeof(parent), ".");
    else if (slash == parent)
        parent[1] = '\0';
    else
        *slash = '\0';
    return stele_io_fsync_dir(io, parent);
}

int stele_io_window_init(stele_io_window *w, stele_file *f, uint64_t file_size, size_t cap)
{
    *w = (stele_io_window){.file = f, .file_size = file_size, .cap = cap};
    w->buf = malloc(cap);
    return w->buf ? 0 : -ENOMEM;
}

void stele_io_window_free(stele_io_window *w)
{
    free(w->buf);
    w->buf = NULL;
}

int stele_io_window_get(stele_io_window *w, uint64_t off, size_t len, const uint8_t **out)
{
    if (len > w->cap)
        return -EINVAL;
    /* Written so that off + len cannot overflow. */
    if (off > w->file_size || len > w->file_size - off)
        return -ENODATA;
    if (off < w->buf_offset || off - w->buf_offset + len > w->buf_len) {
        uint64_t left = w->file_size - off;
        size_t want = left < w->cap ? (size_t)left : w->cap;
        w->buf_len = 0;
        int rc = stele_io_pread_full(w->file, w->buf, want, off);
        if (rc < 0)
            return rc;
        w->buf_offset = off;
        w->buf_len = want;
    }
    *out = w->buf + (off - w->buf_offset);
    return 0;
}
