/*
 * main.c — the `stele` program: dispatches to one subcommand per file (cmd_*.c).
 */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} subcommand;

static const subcommand commands[] = {
    {"serve", cmd_serve, "run the server (HTTP API, storage) on a data directory"},
    {"write", cmd_write, "send line protocol to a server"},
    {"query", cmd_query, "run a PromQL query on a server"},
    {"token", cmd_token, "create, list and revoke API tokens"},
    {"check", cmd_check, "verify every file of a data directory (offline)"},
    {"device", cmd_device, "register devices and manage their identity lifecycle"},
    {"agent", cmd_agent, "act as a device: keys, enrollment, sealed frames, rotation"},
    {"audit", cmd_audit, "verify the audit trail (offline) or list its events"},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: stele <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(out, "  %-8s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\n`stele <command> --help` describes each command.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return CLI_EXIT_USAGE;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return CLI_EXIT_OK;
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version")) {
        printf("stele %s\n", STELE_VERSION);
        return CLI_EXIT_OK;
    }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (!strcmp(argv[1], commands[i].name))
            return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "stele: %s: unknown command (see `stele --help`)\n", argv[1]);
    return CLI_EXIT_USAGE;
}
