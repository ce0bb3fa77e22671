/*
 * cli.h — what the `stele` subcommands share: the dispatch signature, error output in
 * the one-line form "stele: <what>: <why>", exit codes (0 ok, 1 failure, 2 usage), and
 * the client options every client subcommand takes (--url / STELE_URL, --token /
 * STELE_TOKEN / ./stele-data/admin.token).
 */
#ifndef STELE_CLI_H
#define STELE_CLI_H

#include <stddef.h>

#include "stele/client.h"

enum { CLI_EXIT_OK = 0, CLI_EXIT_FAILURE = 1, CLI_EXIT_USAGE = 2 };

#define CLI_DEFAULT_URL "http://127.0.0.1:7400"
#define CLI_DEFAULT_TOKEN_FILE "./stele-data/admin.token"

/* Prints "stele: <what>: <why>\n" to stderr. */
void cli_error(const char *what, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Resolved client settings. */
typedef struct {
    char url[512];
    char token[256]; /* empty when none was found */
} cli_client_options;

/* Fills *opts from the environment and the default token file; then the subcommand
 * overrides from its own --url/--token flags. */
void cli_client_options_init(cli_client_options *opts);
/* Sets up a client for opts, printing any error itself as "stele: <what>: …".
 * CLI_EXIT_OK, CLI_EXIT_USAGE (malformed URL) or CLI_EXIT_FAILURE. */
int cli_client_connect(const char *what, const cli_client_options *opts, stele_http_client **out);
/* Builds the "Authorization: Token …" header line into buf. */
void cli_auth_header(const cli_client_options *opts, char *buf, size_t cap);
/* Prints the error message of a JSON error body ({"message":…} or Prometheus'
 * {"error":…}) as "stele: <what>: HTTP <status>: <message>". */
void cli_report_http_error(const char *what, const stele_http_response *resp);

/* Copies a string from a server's answer for the terminal: control characters become
 * '?', capped to cap - 1 bytes; NULL copies as "". A terminal should never interpret
 * what a server sent. */
void cli_printable_copy(const char *text, char *out, size_t cap);
/* Flushes standard output; when that fails (a closed pipe, a full disk), prints
 * "stele: <what>: cannot write to standard output: …" and returns CLI_EXIT_FAILURE. */
int cli_flush_stdout(const char *what);

/* Matches "--name VALUE" or "--name=VALUE" at argv[*i], advancing *i past the value.
 * 1 matched, 0 another argument, -1 the value is missing. */
int cli_take_option_value(int argc, char **argv, int *i, const char *name, const char **value);

/* Subcommands: argv[0] is the subcommand name. Return an exit code. */
int cmd_serve(int argc, char **argv);
int cmd_write(int argc, char **argv);
int cmd_token(int argc, char **argv);
int cmd_check(int argc, char **argv);
int cmd_query(int argc, char **argv);
int cmd_device(int argc, char **argv);
int cmd_agent(int argc, char **argv);
int cmd_audit(int argc, char **argv);

#endif
