/*
 * cmd_check.c — `stele check [--data DIR]`: verifies every log segment and block of a
 * data directory, reports each problem as one line, exits 1 when there is any.
 */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "stele/io.h"
#include "stele/tsdb.h"

static void on_problem(void *ctx, const char *path, const char *what)
{
    (*(int *)ctx)++;
    fprintf(stderr, "stele: check: %s: %s\n", path, what);
}

static void on_note(void *ctx, const char *path, const char *what)
{
    (void)ctx;
    fprintf(stderr, "stele: check: note: %s: %s\n", path, what);
}

int cmd_check(int argc, char **argv)
{
    const char *dir = "./stele-data";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: stele check [--data DIR]\n\n"
                   "Verifies every file of a data directory: log segments record by record,\n"
                   "blocks down to every encoded series. Prints one line per problem and\n"
                   "exits 1 if there is any. Safe to run while a server uses the directory.\n");
            return CLI_EXIT_OK;
        }
        if (!strcmp(argv[i], "--data") && i + 1 < argc) {
            dir = argv[++i];
        } else {
            cli_error("check", "unexpected argument '%s' (see --help)", argv[i]);
            return CLI_EXIT_USAGE;
        }
    }
    stele_io *io = NULL;
    if (stele_io_posix_create(&io) != 0) {
        cli_error("check", "cannot initialise I/O");
        return CLI_EXIT_FAILURE;
    }
    int problems = 0;
    int rc = stele_tsdb_check(io, dir, on_problem, on_note, &problems);
    stele_io_destroy(io);
    if (rc < 0) {
        cli_error("check", "%s: %s", dir, strerror(-rc));
        return CLI_EXIT_FAILURE;
    }
    if (problems) {
        fprintf(stderr, "stele: check: %d problem%s found in %s\n", problems,
                problems == 1 ? "" : "s", dir);
        return CLI_EXIT_FAILURE;
    }
    printf("ok: %s has no damaged files\n", dir);
    return CLI_EXIT_OK;
}
