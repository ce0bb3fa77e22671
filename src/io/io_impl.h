/*
 * io_impl.h — what the stele_io implementations share, and nothing else.
 *
 * The public header keeps `stele_file` opaque so that callers cannot poke at a file's
 * state; the wrappers in io.c still need to find a file's operations. Every
 * implementation therefore starts its own file struct with this base (the classic C
 * "first member" inheritance), and io.c dispatches through `base.ops`. Only files in
 * src/io/ include this header.
 */
#ifndef STELE_IO_IMPL_H
#define STELE_IO_IMPL_H

#include "stele/io.h"

/* Base of every implementation's open file; must be the first member. */
struct stele_file {
    const struct stele_io_ops *ops;
};

/* Longest path the implementations accept, terminator included: Linux's PATH_MAX, so a
 * path that works in the fault file system also works on the real one. */
#define STELE_IO_PATH_MAX 4096

#endif
