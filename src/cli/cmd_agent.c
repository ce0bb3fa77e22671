/*
 * cmd_agent.c — `stele agent keygen|enroll|seal|send|rotate|show`: the program acting as
 * a device, built on libstele-device (stele/device.h, stele/frame.h, stele/keyproof.h).
 *
 * Design: the device library does everything that must be right on a real device —
 * keys, counters, sealing, proofs — through its storage callbacks; this file supplies
 * those callbacks over files in the state directory (DIR/identity.0|1 and
 * DIR/counter.0|1, written in place, fsync'd, mode 0600, in a 0700 directory), speaks
 * HTTP, and formats. Devices authenticate with their keys, so no API token is sent.
 *
 * One agent at a time per state directory: every subcommand holds an exclusive lock on
 * DIR/lock (flock), since two processes opening the counter store at once would hand
 * out the same counters. A slot that cannot be read (an I/O error, not a missing file)
 * stops the command rather than being taken for empty; a file of the wrong size reads
 * as a damaged record, which the stores refuse (fail closed).
 *
 * Counters: `seal` reserves one counter per run (one small fsync'd write), so separate
 * runs hand out consecutive counters; `send` reserves AGENT_SEND_BLOCK at a time.
 *
 * Rotation follows the library's protocol: the new key is persisted next to the old one
 * before the request is sent, the request is rebuilt from storage (the same bytes) on a
 * retry, and the new key becomes current only once the server answered 200.
 */
#include "cli/cli.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "stele/device.h"
#include "stele/frame.h"
#include "stele/io.h"
#include "stele/keyproof.h"

/* Frames per POST /api/v1/frames: well under the server's 4096, small enough that a
 * refused request costs little to resend, large enough that a stream of lines costs a
 * request per 256 frames, not per frame. */
#define AGENT_SEND_BATCH_FRAMES 256
/* Bytes per request: 256 frames of the largest size (64 KiB) would be 16 MiB, half the
 * server's default body limit; a batch is sent once it reaches this. */
#define AGENT_SEND_BATCH_BYTES ((size_t)16 << 20)
/* Counters reserved per durable write while sending from standard input: one write
 * per batch; a power cut or exit skips at most this many unused counters. */
#define AGENT_SEND_BLOCK 256
/* `seal` hands out one counter per run: reserving more would skip them at exit, and
 * counters of separate runs should follow one another (well inside the window). */
#define AGENT_SEAL_BLOCK 1
/* A standard-input line: a frame is at most 64 KiB; its text is of the same order. */
#define AGENT_MAX_LINE ((size_t)64 << 10)
/* A frames file is read whole: a device's spool of unsent frames, far below this. */
#define AGENT_MAX_FILE ((size_t)256 << 20)
/* 429/503 retries per request, waits as `stele write` (1, 2, 4 … s, or Retry-After,
 * capped). Frames are safe to resend: the server answers a repeat `duplicate`. */
#define AGENT_MAX_RETRIES 5
#define AGENT_MAX_RETRY_WAIT_S 60
/* A value of NAME=VALUE: the longest exact decimal binary64 is under 800 characters. */
#define AGENT_MAX_VALUE_TEXT 1024
/* Default firmware string sent at enrollment (0..64 printable ASCII). */
#define AGENT_DEFAULT_FIRMWARE "stele-agent/" STELE_VERSION

/* ---- usage --------------------------------------------------------------------- */

static const char agent_usage[] =
    "usage: stele agent keygen --state DIR [--force]\n"
    "       stele agent enroll --state DIR --device ID --enroll-token T [--firmware V]\n"
    "                          [--url URL]\n"
    "       stele agent seal   --state DIR [--time T] [--label K=V]...\n"
    "                          NAME=VALUE[,NAME=VALUE...]\n"
    "       stele agent send   --state DIR [--label K=V]... [--url URL] [FILE...]\n"
    "       stele agent rotate --state DIR [--url URL] [--abandon]\n"
    "       stele agent show   --state DIR\n"
    "\n"
    "Acts as a device (SPEC §6), built on the device library: its key, counters and state\n"
    "live in DIR (mode 0700; key files 0600). Devices authenticate with their keys: no API\n"
    "token is used. `stele agent SUBCOMMAND --help` describes each.\n"
    "\n"
    "  --url URL   server (default: $STELE_URL, else " CLI_DEFAULT_URL ")\n"
    "\n"
    "Exit status: 0 done, 1 failure, 2 usage error.\n";

static const char keygen_usage[] =
    "usage: stele agent keygen --state DIR [--force]\n"
    "\n"
    "Makes the device's Ed25519 key and its counter store in DIR (created if missing) and\n"
    "prints the public key (64 hex digits) alone on standard output. The key never leaves\n"
    "DIR.\n"
    "\n"
    "  --state DIR  the device's state directory\n"
    "  --force      replace an existing or damaged identity: the old key is lost for good\n"
    "               and the device must be enrolled again (`stele device reenroll`)\n"
    "  --help, -h   show this help\n"
    "\n"
    "Exit status: 0 done, 1 failure (DIR already holds an identity, or storage error),\n"
    "2 usage error.\n";

static const char enroll_usage[] =
    "usage: stele agent enroll --state DIR --device ID --enroll-token T [--firmware V]\n"
    "                          [--url URL]\n"
    "\n"
    "Enrolls the key of DIR as device ID with its one-time enrollment token (from `stele\n"
    "device add`), proving possession of the key (POST /api/v1/enroll). On success the\n"
    "device id and the key id the server gave are stored in DIR and printed as\n"
    "`device=ID tenant=T key_id=N state=S`.\n"
    "\n"
    "  --state DIR         the device's state directory (made by `stele agent keygen`)\n"
    "  --device ID         1 to 64 of A-Z a-z 0-9 . _ -\n"
    "  --enroll-token T    sen_ followed by 64 hex digits\n"
    "  --firmware V        firmware version reported (default " AGENT_DEFAULT_FIRMWARE ";\n"
    "                      up to 64 printable characters, no quote or backslash)\n"
    "  --url URL           server (default: $STELE_URL, else " CLI_DEFAULT_URL ")\n"
    "  --help, -h          show this help\n"
    "\n"
    "Exit status: 0 enrolled, 1 failure (refused, unreachable, storage), 2 usage error.\n";

static const char seal_usage[] =
    "usage: stele agent seal --state DIR [--time T] [--label K=V]...\n"
    "                        NAME=VALUE[,NAME=VALUE...]\n"
    "\n"
    "Writes one sealed frame (binary; docs/format/frame.md) to standard output, signed with\n"
    "the device's current key under the next counter. Each NAME=VALUE is one point of\n"
    "metric NAME; every point gets the --label labels.\n"
    "\n"
    "  --state DIR    the device's state directory (enrolled)\n"
    "  --time T       timestamp of the points: ns since the epoch, or now (default)\n"
    "  --label K=V    a label on every point (repeatable, at most 16; not device or\n"
    "                 tenant: those come from the server's registry)\n"
    "  --help, -h     show this help\n"
    "\n"
    "Standard output must not be a terminal. Exit status: 0 done, 1 failure, 2 usage error.\n";

static const char send_usage[] =
    "usage: stele agent send --state DIR [--label K=V]... [--url URL] [FILE...]\n"
    "\n"
    "Posts sealed frames to the server (POST /api/v1/frames): those in each FILE (frames\n"
    "back to back, e.g. from `stele agent seal`), or else one frame sealed per line of\n"
    "standard input, each line `NAME=VALUE[,NAME=VALUE...] [TIMESTAMP_NS]` (now when no\n"
    "timestamp; empty lines and lines starting with # are skipped). Frames go in batches\n"
    "of up to 256 per request; standard input is sent whenever no more of it is waiting.\n"
    "Prints `COUNTER STATUS` per frame in order (accepted, duplicate, stale, revoked, ...).\n"
    "Answers 429 and 503 are retried after Retry-After, at most 5 times (resending frames\n"
    "is safe: a repeat is answered duplicate).\n"
    "\n"
    "  --state DIR    the device's state directory (enrolled)\n"
    "  --label K=V    a label on every point sealed from standard input (repeatable)\n"
    "  --url URL      server (default: $STELE_URL, else " CLI_DEFAULT_URL ")\n"
    "  --help, -h     show this help\n"
    "\n"
    "Exit status: 0 every frame accepted or duplicate, 1 otherwise (or a failure),\n"
    "2 usage error.\n";

static const char rotate_usage[] =
    "usage: stele agent rotate --state DIR [--url URL] [--abandon]\n"
    "\n"
    "Rotates the device key (POST /api/v1/rotate): makes the next key and stores it beside\n"
    "the current one, sends the request signed by both, and once the server answers makes\n"
    "the new key current (frames sealed afterwards use it) and forgets the old one. Prints\n"
    "`device=ID key_id=N overlap_deadline=T`. If the answer is lost or refused, the new key\n"
    "stays prepared and running rotate again sends the very same request.\n"
    "\n"
    "  --state DIR    the device's state directory (enrolled)\n"
    "  --url URL      server (default: $STELE_URL, else " CLI_DEFAULT_URL ")\n"
    "  --abandon      forget a prepared rotation the server refused for good, without\n"
    "                 contacting it (if the server had accepted it, the old key stops\n"
    "                 working at the overlap deadline and the device must re-enroll)\n"
    "  --help, -h     show this help\n"
    "\n"
    "Exit status: 0 rotated, 1 failure, 2 usage error.\n";

static const char show_usage[] =
    "usage: stele agent show --state DIR\n"
    "\n"
    "Prints the device's identity as KEY=VALUE lines: device (- before enrollment),\n"
    "key_id, public_key, and pending_key_id and pending_public_key while a rotation is\n"
    "prepared. No secret is printed.\n"
    "\n"
    "  --state DIR    the device's state directory\n"
    "  --help, -h     show this help\n"
    "\n"
    "Exit status: 0 done, 1 failure, 2 usage error.\n";

/* ---- options ------------------------------------------------------------------- */

enum {
    SUB_KEYGEN = 1 << 0,
    SUB_ENROLL = 1 << 1,
    SUB_SEAL = 1 << 2,
    SUB_SEND = 1 << 3,
    SUB_ROTATE = 1 << 4,
    SUB_SHOW = 1 << 5,
};

typedef struct {
    const char *name;
    int sub;
    const char *usage;
} agent_subcommand;

static const agent_subcommand subcommands[] = {
    {"keygen", SUB_KEYGEN, keygen_usage}, {"enroll", SUB_ENROLL, enroll_usage},
    {"seal", SUB_SEAL, seal_usage},       {"send", SUB_SEND, send_usage},
    {"rotate", SUB_ROTATE, rotate_usage}, {"show", SUB_SHOW, show_usage},
};

typedef struct {
    const agent_subcommand *sub;
    char what[32]; /* "agent keygen" … for error lines */
    cli_client_options client;
    const char *state_dir;
    bool force, abandon;
    const char *device, *enroll_token, *firmware, *time;
    stele_frame_label labels[STELE_FRAME_MAX_LABELS];
    size_t nlabels;
    char **positionals;
    int npositionals;
} agent_options;

static int usage_error(const agent_options *o, const char *fmt, const char *arg)
{
    char message[512];
    snprintf(message, sizeof(message), fmt, arg ? arg : "");
    cli_error(o->what, "%s; see stele %s --help", message, o->what);
    return CLI_EXIT_USAGE;
}

/* K=V for --label: a label name and value the frame format accepts (checked again by
 * the builder, which also refuses reserved names). */
static int take_label(agent_options *o, const char *arg)
{
    const char *eq = strchr(arg, '=');
    if (!eq || eq == arg || eq[1] == '\0')
        return usage_error(o, "--label needs NAME=VALUE (got \"%s\")", arg);
    if (o->nlabels == STELE_FRAME_MAX_LABELS)
        return usage_error(o, "at most 16 labels (--label %s is one too many)", arg);
    stele_frame_label *l = &o->labels[o->nlabels++];
    l->name = arg;
    l->name_len = (size_t)(eq - arg);
    l->value = eq + 1;
    l->value_len = strlen(eq + 1);
    return CLI_EXIT_OK;
}

/* CLI_EXIT_OK, CLI_EXIT_USAGE (printed), or -1 when --help was printed. */
static int parse_agent_args(int argc, char **argv, agent_options *o)
{
    static const struct {
        const char *name;
        int subs;
    } value_options[] = {
        {"--state", SUB_KEYGEN | SUB_ENROLL | SUB_SEAL | SUB_SEND | SUB_ROTATE | SUB_SHOW},
        {"--device", SUB_ENROLL},
        {"--enroll-token", SUB_ENROLL},
        {"--firmware", SUB_ENROLL},
        {"--url", SUB_ENROLL | SUB_SEND | SUB_ROTATE},
        {"--time", SUB_SEAL},
        {"--label", SUB_SEAL | SUB_SEND},
    };
    bool only_positionals = false;
    o->positionals = calloc((size_t)argc, sizeof(char *));
    if (!o->positionals) {
        cli_error(o->what, "out of memory");
        return CLI_EXIT_FAILURE;
    }
    for (int i = 2; i < argc; i++) {
        const char *arg = argv[i];
        if (only_positionals || arg[0] != '-' || arg[1] == '\0') {
            o->positionals[o->npositionals++] = argv[i];
            continue;
        }
        if (strcmp(arg, "--") == 0) {
            only_positionals = true;
            continue;
        }
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            fputs(o->sub->usage, stdout);
            return -1;
        }
        if (strcmp(arg, "--force") == 0 && o->sub->sub == SUB_KEYGEN) {
            o->force = true;
            continue;
        }
        if (strcmp(arg, "--abandon") == 0 && o->sub->sub == SUB_ROTATE) {
            o->abandon = true;
            continue;
        }
        const char *value = NULL;
        int matched = 0;
        size_t which = 0;
        for (; which < sizeof(value_options) / sizeof(value_options[0]); which++) {
            if (!(value_options[which].subs & o->sub->sub))
                continue;
            matched = cli_take_option_value(argc, argv, &i, value_options[which].name, &value);
            if (matched != 0)
                break;
        }
        if (matched < 0)
            return usage_error(o, "%s needs a value", arg);
        if (matched == 0)
            return usage_error(o, "unknown option %s", arg);
        const char *name = value_options[which].name;
        if (strcmp(name, "--state") == 0) {
            o->state_dir = value;
        } else if (strcmp(name, "--device") == 0) {
            o->device = value;
        } else if (strcmp(name, "--enroll-token") == 0) {
            o->enroll_token = value;
        } else if (strcmp(name, "--firmware") == 0) {
            o->firmware = value;
        } else if (strcmp(name, "--time") == 0) {
            o->time = value;
        } else if (strcmp(name, "--label") == 0) {
            int rc = take_label(o, value);
            if (rc != CLI_EXIT_OK)
                return rc;
        } else { /* --url */
            if (strlen(value) >= sizeof(o->client.url))
                return usage_error(o, "--url is longer than 511 bytes%s", NULL);
            snprintf(o->client.url, sizeof(o->client.url), "%s", value);
        }
    }
    if (!o->state_dir || !*o->state_dir)
        return usage_error(o, "--state DIR is required%s", NULL);
    if (strlen(o->state_dir) > PATH_MAX - 32)
        return usage_error(o, "--state path too long%s", NULL);
    return CLI_EXIT_OK;
}

/* ---- the state directory: storage callbacks -------------------------------------- */

typedef struct agent_state agent_state;

typedef struct {
    agent_state *state;
    const char *name; /* "identity" or "counter" */
} agent_slots;

struct agent_state {
    char dir[PATH_MAX];
    stele_io *io;
    int lock_fd;
    /* Set by a slot read that failed with an I/O error: the command stops, whatever the
     * store made of it (the counter store would take the slot for empty). */
    int read_error;
    char read_error_path[PATH_MAX + 32];
    agent_slots identity_slots, counter_slots;
    stele_identity id;
    bool id_open;
    stele_counter counter;
};

static void slot_path(const agent_slots *s, int slot, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/%s.%d", s->state->dir, s->name, slot);
}

/* Missing: -ENOENT. The wrong size (a write torn by a power cut): zeros, which both
 * stores read as a damaged record. Any other failure: remembered, and returned. */
static int slot_read(void *ctx, int slot, uint8_t *buf, size_t len)
{
    agent_slots *s = ctx;
    char path[PATH_MAX + 32];
    stele_file *f = NULL;
    uint64_t size = 0;
    slot_path(s, slot, path, sizeof(path));
    int rc = stele_io_open(s->state->io, path, STELE_IO_READ, &f);
    if (rc == -ENOENT)
        return rc;
    if (rc == 0)
        rc = stele_io_size(f, &size);
    if (rc == 0 && size != len) {
        memset(buf, 0, len);
        stele_io_close(f);
        return 0;
    }
    if (rc == 0)
        rc = stele_io_pread_full(f, buf, len, 0);
    stele_io_close(f);
    if (rc && !s->state->read_error) {
        s->state->read_error = rc;
        snprintf(s->state->read_error_path, sizeof(s->state->read_error_path), "%s", path);
    }
    return rc;
}

/* Rewrites the slot's file in place and makes it durable (data, then the directory
 * entry when the file is new). A torn write leaves a file of the wrong size or a bad
 * checksum: the stores' other slot still holds the previous record. */
static int slot_write(void *ctx, int slot, const uint8_t *buf, size_t len)
{
    agent_slots *s = ctx;
    char path[PATH_MAX + 32];
    stele_file *f = NULL;
    slot_path(s, slot, path, sizeof(path));
    int rc = stele_io_open(s->state->io, path,
                           STELE_IO_READWRITE | STELE_IO_CREATE | STELE_IO_TRUNCATE, &f);
    if (rc)
        return rc;
    rc = stele_io_pwrite(f, buf, len, 0);
    if (rc == 0)
        rc = stele_io_fsync(f);
    int close_rc = stele_io_close(f);
    if (rc == 0)
        rc = close_rc;
    if (rc == 0)
        rc = stele_io_fsync_dir(s->state->io, s->state->dir);
    return rc;
}

static stele_identity_storage identity_storage(agent_state *st)
{
    return (stele_identity_storage){
        .read = slot_read, .write = slot_write, .ctx = &st->identity_slots};
}

static stele_counter_storage counter_storage(agent_state *st)
{
    return (stele_counter_storage){
        .read = slot_read, .write = slot_write, .ctx = &st->counter_slots};
}

static void state_close(agent_state *st)
{
    if (st->id_open)
        stele_identity_close(&st->id);
    st->id_open = false;
    if (st->lock_fd >= 0)
        close(st->lock_fd); /* releases the lock */
    st->lock_fd = -1;
    stele_io_destroy(st->io);
    st->io = NULL;
}

/* Opens DIR (creating it when create) and takes its lock. CLI_EXIT_OK or
 * CLI_EXIT_FAILURE, printed. */
static int state_lock(const agent_options *o, agent_state *st, bool create)
{
    char lock_path[PATH_MAX + 32];
    memset(st, 0, sizeof(*st));
    st->lock_fd = -1;
    snprintf(st->dir, sizeof(st->dir), "%s", o->state_dir);
    st->identity_slots = (agent_slots){.state = st, .name = "identity"};
    st->counter_slots = (agent_slots){.state = st, .name = "counter"};
    int rc = stele_io_posix_create(&st->io);
    if (rc) {
        cli_error(o->what, "cannot set up file access: %s", strerror(-rc));
        return CLI_EXIT_FAILURE;
    }
    if (create) {
        /* Like mkdir -p, each level durable (its entry fsync'd in its parent). */
        char prefix[PATH_MAX];
        for (size_t i = 1; st->dir[i] && rc == 0; i++) {
            if (st->dir[i] != '/' || st->dir[i - 1] == '/')
                continue;
            memcpy(prefix, st->dir, i);
            prefix[i] = '\0';
            rc = stele_io_mkdir_durable(st->io, prefix);
        }
        if (rc == 0)
            rc = stele_io_mkdir_durable(st->io, st->dir);
        if (rc) {
            cli_error(o->what, "cannot create the state directory %s: %s", st->dir, strerror(-rc));
            return CLI_EXIT_FAILURE;
        }
    }
    struct stat sb;
    if (stat(st->dir, &sb) != 0) {
        cli_error(o->what, "%s: %s", st->dir,
                  errno == ENOENT ? "no such state directory (run stele agent keygen --state DIR)"
                                  : strerror(errno));
        return CLI_EXIT_FAILURE;
    }
    if (!S_ISDIR(sb.st_mode)) {
        cli_error(o->what, "%s: not a directory", st->dir);
        return CLI_EXIT_FAILURE;
    }
    snprintf(lock_path, sizeof(lock_path), "%s/lock", st->dir);
    st->lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (st->lock_fd < 0) {
        cli_error(o->what, "cannot open %s: %s", lock_path, strerror(errno));
        return CLI_EXIT_FAILURE;
    }
    if (flock(st->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        cli_error(o->what, "%s is in use by another stele agent (%s is locked)", st->dir,
                  lock_path);
        return CLI_EXIT_FAILURE;
    }
    return CLI_EXIT_OK;
}

/* Warns when a key file can be read by others (it was not made by the agent). */
static void check_key_file_modes(const agent_options *o, const agent_state *st)
{
    for (int slot = 0; slot < 2; slot++) {
        char path[PATH_MAX + 32];
        struct stat sb;
        slot_path(&st->identity_slots, slot, path, sizeof(path));
        if (stat(path, &sb) == 0 && (sb.st_mode & 077))
            cli_error(o->what, "warning: %s holds a secret key but has mode %04o (chmod 600 it)",
                      path, (unsigned)(sb.st_mode & 07777));
    }
}

static int report_read_error(const agent_options *o, const agent_state *st)
{
    cli_error(o->what, "cannot read %s: %s", st->read_error_path, strerror(-st->read_error));
    return CLI_EXIT_FAILURE;
}

/* Loads the identity; when enrolled is set, it must be enrolled. */
static int state_open_identity(const agent_options *o, agent_state *st, bool enrolled)
{
    stele_identity_storage storage = identity_storage(st);
    int rc = stele_identity_open(&st->id, &storage);
    if (st->read_error)
        return report_read_error(o, st);
    switch (rc) {
    case 0:
        st->id_open = true;
        break;
    case -ENOENT:
        cli_error(o->what, "no device key in %s (run stele agent keygen --state %s first)", st->dir,
                  st->dir);
        return CLI_EXIT_FAILURE;
    case -EBADMSG:
        cli_error(o->what,
                  "the device identity in %s is damaged and no intact copy is left; the key "
                  "cannot be recovered: make a new one with keygen --force and enroll again",
                  st->dir);
        return CLI_EXIT_FAILURE;
    case -ENOTSUP:
        cli_error(o->what,
                  "the device identity in %s was written by a newer version of stele; "
                  "use that version",
                  st->dir);
        return CLI_EXIT_FAILURE;
    default:
        cli_error(o->what, "cannot load the device identity in %s: %s", st->dir, strerror(-rc));
        return CLI_EXIT_FAILURE;
    }
    check_key_file_modes(o, st);
    if (enrolled && st->id.device_id[0] == '\0') {
        cli_error(o->what, "the key in %s is not enrolled yet (run stele agent enroll first)",
                  st->dir);
        return CLI_EXIT_FAILURE;
    }
    return CLI_EXIT_OK;
}

static int state_open_counter(const agent_options *o, agent_state *st, uint32_t block)
{
    stele_counter_storage storage = counter_storage(st);
    int rc = stele_counter_open(&st->counter, &storage, block);
    if (st->read_error)
        return report_read_error(o, st);
    if (rc == -EBADMSG) {
        cli_error(o->what,
                  "the counter store in %s is damaged: counters already used cannot be known; "
                  "rotate or re-enroll the key (a new key id starts new counters), then "
                  "remove %s/counter.0 and %s/counter.1",
                  st->dir, st->dir, st->dir);
        return CLI_EXIT_FAILURE;
    }
    if (rc) {
        cli_error(o->what, "cannot load the counter store in %s: %s", st->dir, strerror(-rc));
        return CLI_EXIT_FAILURE;
    }
    return CLI_EXIT_OK;
}

static void hex_encode(const uint8_t *bytes, size_t n, char *out)
{
    sodium_bin2hex(out, 2 * n + 1, bytes, n);
}

/* ---- HTTP helpers ---------------------------------------------------------------- */

static void sleep_seconds(unsigned seconds)
{
    struct timespec left = {.tv_sec = seconds, .tv_nsec = 0};
    while (nanosleep(&left, &left) != 0 && errno == EINTR)
        ;
}

/* The server's Retry-After (delta-seconds) when given, else 1, 2, 4 … s; capped. */
static unsigned retry_wait_seconds(const stele_http_response *resp, int attempt)
{
    char value[32];
    unsigned wait = 1u << attempt;
    if (stele_http_response_header(resp, "Retry-After", value, sizeof(value)) == 0 &&
        value[0] >= '0' && value[0] <= '9') {
        char *end = NULL;
        unsigned long seconds = strtoul(value, &end, 10);
        if (*end == '\0')
            wait = seconds > AGENT_MAX_RETRY_WAIT_S ? AGENT_MAX_RETRY_WAIT_S : (unsigned)seconds;
    }
    return wait > AGENT_MAX_RETRY_WAIT_S ? AGENT_MAX_RETRY_WAIT_S : wait;
}

/* One POST; CLI_EXIT_OK with *resp filled (any status), or CLI_EXIT_FAILURE printed. */
static int agent_post(const agent_options *o, stele_http_client *client, const char *target,
                      const char *content_type, const void *body, size_t len,
                      stele_http_response *resp)
{
    char ct[128];
    snprintf(ct, sizeof(ct), "Content-Type: %s", content_type);
    const char *headers[] = {ct, "Accept: application/json", NULL};
    int rc = stele_http_request(client, "POST", target, headers, body, len, resp);
    if (rc < 0) {
        cli_error(o->what, "request to %s failed: %s", o->client.url, strerror(-rc));
        return CLI_EXIT_FAILURE;
    }
    return CLI_EXIT_OK;
}

/* A key id from the server's JSON: an integer 1..2^32-1, else 0. */
static uint32_t json_key_id(json_t *v)
{
    if (!json_is_integer(v))
        return 0;
    json_int_t k = json_integer_value(v);
    return k >= 1 && k <= (json_int_t)UINT32_MAX ? (uint32_t)k : 0;
}

/* ---- points: NAME=VALUE[,NAME=VALUE...] ------------------------------------------- */

static bool parse_ns(const char *text, int64_t *out)
{
    if (!text || !*text)
        return false;
    char *end = NULL;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno || *end != '\0' || end == text ||
        (text[0] != '-' && (text[0] < '0' || text[0] > '9')))
        return false;
    *out = (int64_t)v;
    return true;
}

static bool parse_value(const char *text, size_t len, double *out)
{
    char buf[AGENT_MAX_VALUE_TEXT];
    if (len == 0 || len >= sizeof(buf) || text[0] == ' ' || text[0] == '\t')
        return false;
    memcpy(buf, text, len);
    buf[len] = '\0';
    char *end = NULL;
    errno = 0;
    double v = strtod(buf, &end);
    if (*end != '\0' || end == buf || (errno == ERANGE && isinf(v)))
        return false;
    if (isnan(v)) {
        uint64_t canonical = UINT64_C(0x7ff8000000000000); /* the frame's one NaN */
        memcpy(&v, &canonical, sizeof(v));
    }
    *out = v;
    return true;
}

/* Adds the points of text[0..len) to the builder, each with the options' labels and
 * timestamp ts. 0, or -EINVAL / -ENOSPC with *why. */
static int add_points(const agent_options *o, stele_frame_builder *b, const char *text, size_t len,
                      int64_t ts, char *why, size_t why_cap)
{
    size_t at = 0;
    if (len == 0) {
        snprintf(why, why_cap, "no points (expected NAME=VALUE[,NAME=VALUE...])");
        return -EINVAL;
    }
    while (at <= len) {
        const char *item = text + at;
        const char *comma = memchr(item, ',', len - at);
        size_t item_len = comma ? (size_t)(comma - item) : len - at;
        const char *eq = memchr(item, '=', item_len);
        if (!eq || eq == item) {
            snprintf(why, why_cap, "\"%.*s\" is not NAME=VALUE",
                     (int)(item_len > 80 ? 80 : item_len), item);
            return -EINVAL;
        }
        stele_frame_point p = {.metric = item, .metric_len = (size_t)(eq - item), .ts = ts};
        if (!parse_value(eq + 1, item_len - (size_t)(eq + 1 - item), &p.value)) {
            snprintf(why, why_cap, "\"%.*s\": the value is not a number",
                     (int)(item_len > 80 ? 80 : item_len), item);
            return -EINVAL;
        }
        memcpy(p.labels, o->labels, o->nlabels * sizeof(o->labels[0]));
        p.nlabels = o->nlabels;
        int rc = stele_frame_add(b, &p);
        if (rc == -EINVAL) {
            snprintf(why, why_cap,
                     "\"%.*s\": invalid metric name (letters, digits, _ and :, not starting "
                     "with a digit; at most 128) or label (names not device, tenant or __*)",
                     (int)(p.metric_len > 80 ? 80 : p.metric_len), p.metric);
            return rc;
        }
        if (rc == -ENOSPC) {
            snprintf(why, why_cap, "too many points for one frame (at most %d, %d bytes)",
                     STELE_FRAME_MAX_POINTS, STELE_FRAME_MAX_BYTES);
            return rc;
        }
        if (rc) {
            snprintf(why, why_cap, "cannot add a point: %s", strerror(-rc));
            return rc;
        }
        if (!comma)
            break;
        at = (size_t)(comma - text) + 1;
        if (at == len) {
            snprintf(why, why_cap, "a trailing comma");
            return -EINVAL;
        }
    }
    return 0;
}

/* Buffer for one frame while it is built: the builder needs room for the signing domain
 * in front of the frame. */
#define AGENT_FRAME_BUF (STELE_FRAME_MAX_BYTES + 64)

/* Builds and seals one frame of the points in text under the next counter. The points
 * are checked (a dry run under counter 0) before a counter is taken, so bad input
 * costs none. CLI_EXIT_OK with the frame at buf[0..*len); CLI_EXIT_USAGE for bad
 * points (*why); CLI_EXIT_FAILURE printed. */
static int seal_points(const agent_options *o, agent_state *st, const char *text, size_t len,
                       int64_t ts, uint8_t *buf, size_t *frame_len, uint64_t *counter, char *why,
                       size_t why_cap)
{
    stele_frame_builder b;
    int rc =
        stele_frame_begin(&b, buf, AGENT_FRAME_BUF, st->id.device_id, st->id.current.key_id, 0);
    if (rc == 0)
        rc = add_points(o, &b, text, len, ts, why, why_cap);
    if (rc)
        return CLI_EXIT_USAGE;
    rc = stele_counter_next(&st->counter, counter);
    if (rc) {
        cli_error(o->what, "cannot reserve a counter in %s: %s", st->dir, strerror(-rc));
        return CLI_EXIT_FAILURE;
    }
    rc = stele_frame_begin(&b, buf, AGENT_FRAME_BUF, st->id.device_id, st->id.current.key_id,
                           *counter);
    if (rc == 0)
        rc = add_points(o, &b, text, len, ts, why, why_cap);
    if (rc == 0)
        rc = stele_frame_seal(&b, st->id.current.secret_key, frame_len);
    if (rc) {
        cli_error(o->what, "cannot seal the frame: %s", strerror(-rc));
        return CLI_EXIT_FAILURE;
    }
    return CLI_EXIT_OK;
}

/* ---- keygen ---------------------------------------------------------------------- */

static int agent_keygen(const agent_options *o)
{
    agent_state st = {.lock_fd = -1};
    char hex[65];
    if (o->npositionals)
        return usage_error(o, "unexpected argument %s", o->positionals[0]);
    int rc = state_lock(o, &st, true);
    if (rc != CLI_EXIT_OK)
        goto done;
    stele_identity_storage storage = identity_storage(&st);
    int err = stele_identity_create(&st.id, &storage, o->force);
    if (st.read_error) {
        rc = report_read_error(o, &st);
        goto done;
    }
    if (err == -EEXIST) {
        cli_error(o->what,
                  "%s already holds a device key; --force replaces it (the old key is lost and "
                  "the device must be enrolled again)",
                  st.dir);
        rc = CLI_EXIT_FAILURE;
        goto done;
    }
    if (err == -EBADMSG || err == -ENOTSUP) {
        cli_error(o->what,
                  "%s holds a %s device identity; --force replaces it with a new key (the "
                  "device must then be enrolled again)",
                  st.dir, err == -EBADMSG ? "damaged" : "newer version's");
        rc = CLI_EXIT_FAILURE;
        goto done;
    }
    if (err) {
        cli_error(o->what, "cannot store the new key in %s: %s", st.dir, strerror(-err));
        rc = CLI_EXIT_FAILURE;
        goto done;
    }
    st.id_open = true;
    /* The counter store: kept when intact (counters go on rising); a damaged one may be
     * started again, since no frame was ever sealed with this new key. */
    stele_counter_storage cs = counter_storage(&st);
    err = stele_counter_open(&st.counter, &cs, AGENT_SEAL_BLOCK);
    if (st.read_error) {
        rc = report_read_error(o, &st);
        goto done;
    }
    if (err == -EBADMSG) {
        for (int slot = 0; slot < 2 && err; slot++) {
            char path[PATH_MAX + 32];
            slot_path(&st.counter_slots, slot, path, sizeof(path));
            int u = stele_io_unlink(st.io, path);
            if (u && u != -ENOENT)
                err = u;
        }
        if (err == -EBADMSG)
            err = stele_io_fsync_dir(st.io, st.dir);
        if (err == 0)
            err = stele_counter_open(&st.counter, &cs, AGENT_SEAL_BLOCK);
    }
    if (err) {
        cli_error(o->what, "cannot set up the counter store in %s: %s", st.dir, strerror(-err));
        rc = CLI_EXIT_FAILURE;
        goto done;
    }
    hex_encode(st.id.current.public_key, 32, hex);
    printf("%s\n", hex);
    if (cli_flush_stdout(o->what) != CLI_EXIT_OK)
        rc = CLI_EXIT_FAILURE;
done:
    state_close(&st);
    return rc;
}

/* ---- enroll ---------------------------------------------------------------------- */

static bool firmware_valid(const char *s)
{
    size_t n = strlen(s);
    if (n > 64)
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] < 0x20 || s[i] > 0x7e || s[i] == '"' || s[i] == '\\')
            return false;
    return true;
}

static bool device_id_valid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > STELE_FRAME_MAX_DEVICE_ID)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

static bool enroll_token_valid(const char *t)
{
    if (strlen(t) != STELE_KEYPROOF_TOKEN_LEN || strncmp(t, "sen_", 4) != 0)
        return false;
    for (size_t i = 4; i < STELE_KEYPROOF_TOKEN_LEN; i++)
        if (!((t[i] >= '0' && t[i] <= '9') || (t[i] >= 'a' && t[i] <= 'f')))
            return false;
    return true;
}

static int agent_enroll(const agent_options *o)
{
    agent_state st = {.lock_fd = -1};
    stele_http_client *client = NULL;
    stele_http_response resp = {0};
    json_t *request = NULL, *answer = NULL;
    char *body = NULL;
    int rc = CLI_EXIT_OK;
    const char *firmware = o->firmware ? o->firmware : AGENT_DEFAULT_FIRMWARE;

    if (o->npositionals)
        return usage_error(o, "unexpected argument %s", o->positionals[0]);
    if (!o->device || !o->enroll_token)
        return usage_error(o, "--device and --enroll-token are required%s", NULL);
    if (!device_id_valid(o->device))
        return usage_error(o, "invalid device id \"%s\" (1 to 64 of A-Z a-z 0-9 . _ -)", o->device);
    if (!enroll_token_valid(o->enroll_token))
        return usage_error(o,
                           "malformed enrollment token%s (expected sen_ and 64 lowercase hex "
                           "digits, as `stele device add` prints)",
                           NULL);
    if (!firmware_valid(firmware))
        return usage_error(o,
                           "invalid --firmware \"%s\" (up to 64 printable characters, no "
                           "quote or backslash)",
                           firmware);
    rc = state_lock(o, &st, false);
    if (rc == CLI_EXIT_OK)
        rc = state_open_identity(o, &st, false);
    if (rc != CLI_EXIT_OK)
        goto done;
    if (st.id.device_id[0]) {
        cli_error(o->what,
                  "the key in %s is already enrolled as %s (key id %" PRIu32 "); to enroll "
                  "again (after `stele device reenroll`) make a new key with keygen --force",
                  st.dir, st.id.device_id, st.id.current.key_id);
        rc = CLI_EXIT_FAILURE;
        goto done;
    }
    uint8_t proof[STELE_KEYPROOF_SIGNATURE_BYTES];
    char proof_hex[2 * STELE_KEYPROOF_SIGNATURE_BYTES + 1], pk_hex[65];
    if (stele_keyproof_enroll_sign(st.id.current.secret_key, o->device, strlen(o->device),
                                   o->enroll_token, strlen(o->enroll_token), proof) != 0) {
        cli_error(o->what, "cannot make the enrollment proof");
        rc = CLI_EXIT_FAILURE;
        goto done;
    }
    hex_encode(proof, sizeof(proof), proof_hex);
    hex_encode(st.id.current.public_key, 32, pk_hex);
    request = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "device", o->device, "token",
                        o->enroll_token, "algorithm", "ed25519", "public_key", pk_hex, "firmware",
                        firmware, "proof", proof_hex);
    body = request ? json_dumps(request, JSON_COMPACT) : NULL;
    if (!body) {
        cli_error(o->what, "out of memory");
        rc = CLI_EXIT_FAILURE;
        goto done;
    }
    rc = cli_client_connect(o->what, &o->client, &client);
    if (rc == CLI_EXIT_OK)
        rc = agent_post(o, client, "/api/v1/enroll", "application/json", body, strlen(body), &resp);
    if (rc != CLI_EXIT_OK)
        goto done;
    if (resp.status != 200 && resp.status != 201) {
        cli_report_http_error(o->what, &resp);
        rc = CLI_EXIT_FAILURE;
        goto done;
    }
    answer = json_loadb((const char *)resp.body, resp.body_len, 0, NULL);
    const char *device = json_string_value(json_object_get(answer, "device"));
    uint32_t key_id = json_key_id(json_object_get(answer, "key_id"));
    if (!device || strcmp(device, o->device) != 0 || key_id == 0) {
        cli_error(o->what,
                  "the server's answer (HTTP %d) holds no matching \"device\" and \"key_id\" "
                  "(1 to 4294967295); nothing was stored",
                  resp.status);
        rc = CLI_EXIT_FAILURE;
        goto done;
    }
    int err = stele_identity_enroll(&st.id, o->device, key_id);
    if (err) {
        cli_error(o->what,
                  "the server enrolled %s as key id %" PRIu32 " but it could not be stored in "
                  "%s: %s",
                  o->device, key_id, st.dir, strerror(-err));
        rc = CLI_EXIT_FAILURE;
        goto done;
    }
    char tenant[80], state[32];
    cli_printable_copy(json_string_value(json_object_get(answer, "tenant")), tenant,
                       sizeof(tenant));
    cli_printable_copy(json_string_value(json_object_get(answer, "state")), state, sizeof(state));
    printf("device=%s tenant=%s key_id=%" PRIu32 " state=%s\n", o->device, tenant[0] ? tenant : "-",
           key_id, state[0] ? state : "-");
    if (cli_flush_stdout(o->what) != CLI_EXIT_OK)
        rc = CLI_EXIT_FAILURE;
done:
    json_decref(answer);
    json_decref(request);
    if (body)
        sodium_memzero(body, strlen(body)); /* holds the token */
    free(body);
    stele_http_response_free(&resp);
    stele_http_client_destroy(client);
    state_close(&st);
    return rc;
}

/* ---- seal ------------------------------------------------------------------------ */

static int agent_seal(const agent_options *o)
{
    agent_state st = {.lock_fd = -1};
    uint8_t *buf = NULL;
    int64_t ts = 0;
    char why[256] = "";
    int rc = CLI_EXIT_OK;

    if (o->npositionals == 0)
        return usage_error(o, "missing NAME=VALUE[,NAME=VALUE...]%s", NULL);
    if (o->npositionals > 1)
        return usage_error(o, "one NAME=VALUE[,...] argument (got also %s)", o->positionals[1]);
    if (o->time && strcmp(o->time, "now") != 0 && !parse_ns(o->time, &ts))
        return usage_error(o, "invalid --time \"%s\" (ns since the epoch, or now)", o->time);
    if (isatty(STDOUT_FILENO)) {
        cli_error(o->what, "refusing to write a binary frame to a terminal; redirect standard "
                           "output to a file or a pipe");
        return CLI_EXIT_USAGE;
    }
    if (!o->time || strcmp(o->time, "now") == 0)
        ts = clock_wall_ns();
    buf = malloc(AGENT_FRAME_BUF);
    if (!buf) {
        cli_error(o->what, "out of memory");
        return CLI_EXIT_FAILURE;
    }
    rc = state_lock(o, &st, false);
    if (rc == CLI_EXIT_OK)
        rc = state_open_identity(o, &st, true);
    if (rc == CLI_EXIT_OK)
        rc = state_open_counter(o, &st, AGENT_SEAL_BLOCK);
    if (rc != CLI_EXIT_OK)
        goto done;
    size_t len = 0;
    uint64_t counter = 0;
    rc = seal_points(o, &st, o->positionals[0], strlen(o->positionals[0]), ts, buf, &len, &counter,
                     why, sizeof(why));
    if (rc == CLI_EXIT_USAGE)
        usage_error(o, "%s", why);
    if (rc != CLI_EXIT_OK)
        goto done;
    if (fwrite(buf, 1, len, stdout) != len || fflush(stdout) != 0) {
        cli_error(o->what, "cannot write the frame (counter %" PRIu64 ") to standard output: %s",
                  counter, strerror(errno));
        rc = CLI_EXIT_FAILURE;
    }
done:
    free(buf);
    state_close(&st);
    return rc;
}

/* ---- send ------------------------------------------------------------------------ */

typedef struct {
    const agent_options *o;
    stele_http_client *client;
    uint8_t *body; /* frames back to back */
    size_t len, cap;
    uint64_t counters[AGENT_SEND_BATCH_FRAMES];
    size_t nframes;
    size_t sent, refused; /* frames answered, and of those not accepted/duplicate */
} send_batch;

static int batch_reserve(send_batch *b, size_t more)
{
    if (b->len + more <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : ((size_t)1 << 20);
    while (cap < b->len + more)
        cap *= 2;
    uint8_t *body = realloc(b->body, cap);
    if (!body)
        return -ENOMEM;
    b->body = body;
    b->cap = cap;
    return 0;
}

/* Prints the server's answer for the batch: `COUNTER STATUS` per frame. */
static int batch_report(send_batch *b, const stele_http_response *resp)
{
    json_t *answer = json_loadb((const char *)resp->body, resp->body_len, 0, NULL);
    json_t *results = json_object_get(answer, "results");
    int rc = CLI_EXIT_OK;
    if (!json_is_array(results) || json_array_size(results) != b->nframes) {
        cli_error(b->o->what,
                  "the server's answer holds %zu results for %zu frames (HTTP %d); their fate "
                  "is unknown — sending them again is safe",
                  json_is_array(results) ? json_array_size(results) : (size_t)0, b->nframes,
                  resp->status);
        rc = CLI_EXIT_FAILURE;
        goto done;
    }
    for (size_t i = 0; i < b->nframes; i++) {
        json_t *r = json_array_get(results, i);
        char status[40];
        cli_printable_copy(json_string_value(json_object_get(r, "status")), status, sizeof(status));
        if (!status[0])
            snprintf(status, sizeof(status), "unknown");
        printf("%" PRIu64 " %s\n", b->counters[i], status);
        if (strcmp(status, "accepted") != 0 && strcmp(status, "duplicate") != 0)
            b->refused++;
    }
    b->sent += b->nframes;
    if (cli_flush_stdout(b->o->what) != CLI_EXIT_OK)
        rc = CLI_EXIT_FAILURE;
done:
    json_decref(answer);
    return rc;
}

/* Sends the batch (retrying 429/503) and reports it; empties it. */
static int batch_flush(send_batch *b)
{
    if (b->nframes == 0)
        return CLI_EXIT_OK;
    int rc = CLI_EXIT_FAILURE;
    for (int attempt = 0;; attempt++) {
        stele_http_response resp = {0};
        rc = agent_post(b->o, b->client, "/api/v1/frames", "application/vnd.stele.frames", b->body,
                        b->len, &resp);
        if (rc != CLI_EXIT_OK)
            break;
        if (resp.status == 200) {
            rc = batch_report(b, &resp);
            stele_http_response_free(&resp);
            break;
        }
        if ((resp.status == 429 || resp.status == 503) && attempt < AGENT_MAX_RETRIES) {
            unsigned wait = retry_wait_seconds(&resp, attempt);
            stele_http_response_free(&resp);
            sleep_seconds(wait);
            continue;
        }
        cli_report_http_error(b->o->what, &resp);
        stele_http_response_free(&resp);
        rc = CLI_EXIT_FAILURE;
        break;
    }
    b->len = 0;
    b->nframes = 0;
    return rc;
}

static int batch_add(send_batch *b, const uint8_t *frame, size_t len, uint64_t counter)
{
    if (b->nframes == AGENT_SEND_BATCH_FRAMES ||
        (b->len && b->len + len > AGENT_SEND_BATCH_BYTES)) {
        int rc = batch_flush(b);
        if (rc != CLI_EXIT_OK)
            return rc;
    }
    if (batch_reserve(b, len) != 0) {
        cli_error(b->o->what, "out of memory for a batch of frames");
        return CLI_EXIT_FAILURE;
    }
    memcpy(b->body + b->len, frame, len);
    b->len += len;
    b->counters[b->nframes++] = counter;
    return CLI_EXIT_OK;
}

/* Reads a whole frames file (bounded). */
static int read_whole_file(const agent_options *o, const char *path, uint8_t **out, size_t *len)
{
    FILE *f = fopen(path, "rb");
    uint8_t *data = NULL;
    size_t n = 0, cap = 0;
    if (!f) {
        cli_error(o->what, "cannot open %s: %s", path, strerror(errno));
        return CLI_EXIT_FAILURE;
    }
    for (;;) {
        if (n == cap) {
            if (cap >= AGENT_MAX_FILE) {
                cli_error(o->what, "%s: larger than %zu MiB; split it", path, AGENT_MAX_FILE >> 20);
                goto fail;
            }
            cap = cap ? cap * 2 : ((size_t)1 << 16);
            uint8_t *grown = realloc(data, cap);
            if (!grown) {
                cli_error(o->what, "out of memory reading %s", path);
                goto fail;
            }
            data = grown;
        }
        size_t got = fread(data + n, 1, cap - n, f);
        n += got;
        if (got == 0) {
            if (ferror(f)) {
                cli_error(o->what, "cannot read %s: %s", path, strerror(errno));
                goto fail;
            }
            break;
        }
    }
    fclose(f);
    *out = data;
    *len = n;
    return CLI_EXIT_OK;
fail:
    fclose(f);
    free(data);
    return CLI_EXIT_FAILURE;
}

/* Sends every frame of one file; the whole file is checked before any of it is sent. */
static int send_file(send_batch *b, const char *path)
{
    uint8_t *data = NULL;
    size_t len = 0;
    int rc = read_whole_file(b->o, path, &data, &len);
    if (rc != CLI_EXIT_OK)
        return rc;
    if (len == 0) {
        cli_error(b->o->what, "%s: no frames (the file is empty)", path);
        free(data);
        return CLI_EXIT_FAILURE;
    }
    for (size_t at = 0; at < len;) {
        size_t flen = 0;
        stele_frame f;
        const char *why = "not a frame";
        if (stele_frame_span(data + at, len - at, &flen) != 0 ||
            stele_frame_parse(data + at, flen, &f, &why) != 0) {
            cli_error(b->o->what,
                      "%s: the bytes at offset %zu are not a sealed frame (%s); "
                      "nothing of this file was sent",
                      path, at, why);
            free(data);
            return CLI_EXIT_FAILURE;
        }
        at += flen;
    }
    for (size_t at = 0; at < len && rc == CLI_EXIT_OK;) {
        size_t flen = 0;
        stele_frame f;
        stele_frame_span(data + at, len - at, &flen); /* checked above */
        stele_frame_parse(data + at, flen, &f, NULL);
        rc = batch_add(b, data + at, flen, f.counter);
        at += flen;
    }
    free(data);
    return rc;
}

/* True when standard input has bytes (or its end) waiting right now. */
static bool input_waiting(void)
{
    struct pollfd p = {.fd = STDIN_FILENO, .events = POLLIN};
    return poll(&p, 1, 0) > 0;
}

/* One line of standard input: `NAME=VALUE[,...] [TIMESTAMP_NS]`. Blank lines and
 * comments are skipped. A bad line is reported and skipped (*bad_lines counts it). */
static int send_line(send_batch *b, agent_state *st, char *line, size_t len, size_t lineno,
                     uint8_t *frame, size_t *bad_lines)
{
    while (len && (line[len - 1] == '\r' || line[len - 1] == ' ' || line[len - 1] == '\t'))
        len--;
    size_t start = 0;
    while (start < len && (line[start] == ' ' || line[start] == '\t'))
        start++;
    if (start == len || line[start] == '#')
        return CLI_EXIT_OK;
    line += start;
    len -= start;
    line[len] = '\0';
    int64_t ts = clock_wall_ns();
    char *space = memchr(line, ' ', len);
    if (space) {
        *space = '\0';
        char *t = space + 1;
        while (*t == ' ' || *t == '\t')
            t++;
        if (!parse_ns(t, &ts)) {
            cli_error(b->o->what, "line %zu: \"%.80s\" is not a timestamp in ns; line skipped",
                      lineno, t);
            (*bad_lines)++;
            return CLI_EXIT_OK;
        }
        len = (size_t)(space - line);
    }
    char why[256] = "";
    size_t flen = 0;
    uint64_t counter = 0;
    int rc = seal_points(b->o, st, line, len, ts, frame, &flen, &counter, why, sizeof(why));
    if (rc == CLI_EXIT_USAGE) {
        cli_error(b->o->what, "line %zu: %s; line skipped", lineno, why);
        (*bad_lines)++;
        return CLI_EXIT_OK;
    }
    if (rc != CLI_EXIT_OK)
        return rc;
    return batch_add(b, frame, flen, counter);
}

/* Seals one frame per line of standard input; a batch goes out when full or when no
 * more input is waiting (so a slow stream is not held back). */
static int send_stdin(send_batch *b, agent_state *st, size_t *bad_lines)
{
    size_t cap = AGENT_MAX_LINE + 1, have = 0, lineno = 0;
    char *buf = malloc(cap + 1);
    uint8_t *frame = malloc(AGENT_FRAME_BUF);
    bool eof = false;
    int rc = CLI_EXIT_OK;
    if (!buf || !frame) {
        cli_error(b->o->what, "out of memory");
        rc = CLI_EXIT_FAILURE;
        goto done;
    }
    while (rc == CLI_EXIT_OK) {
        size_t start = 0;
        char *nl;
        while (rc == CLI_EXIT_OK && (nl = memchr(buf + start, '\n', have - start)) != NULL) {
            size_t len = (size_t)(nl - (buf + start));
            rc = send_line(b, st, buf + start, len, ++lineno, frame, bad_lines);
            start += len + 1;
        }
        memmove(buf, buf + start, have - start);
        have -= start;
        if (rc != CLI_EXIT_OK)
            break;
        if (eof) {
            if (have)
                rc = send_line(b, st, buf, have, ++lineno, frame, bad_lines);
            break;
        }
        if (have == cap) {
            cli_error(b->o->what, "line %zu: longer than %zu bytes", lineno + 1, AGENT_MAX_LINE);
            rc = CLI_EXIT_FAILURE;
            break;
        }
        if (b->nframes && !input_waiting())
            rc = batch_flush(b);
        if (rc != CLI_EXIT_OK)
            break;
        ssize_t n = read(STDIN_FILENO, buf + have, cap - have);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            cli_error(b->o->what, "cannot read standard input: %s", strerror(errno));
            rc = CLI_EXIT_FAILURE;
            break;
        }
        if (n == 0)
            eof = true;
        have += (size_t)n;
    }
    if (rc == CLI_EXIT_OK)
        rc = batch_flush(b);
done:
    free(buf);
    free(frame);
    return rc;
}

static int agent_send(const agent_options *o)
{
    agent_state st = {.lock_fd = -1};
    send_batch b = {.o = o};
    size_t bad_lines = 0;
    int rc = state_lock(o, &st, false);
    if (rc != CLI_EXIT_OK)
        goto done;
    if (o->npositionals && o->nlabels) {
        rc = usage_error(o,
                         "--label applies to lines read from standard input, not to sealed "
                         "frames in files%s",
                         NULL);
        goto done;
    }
    if (o->npositionals == 0) {
        rc = state_open_identity(o, &st, true);
        if (rc == CLI_EXIT_OK)
            rc = state_open_counter(o, &st, AGENT_SEND_BLOCK);
        if (rc != CLI_EXIT_OK)
            goto done;
    }
    rc = cli_client_connect(o->what, &o->client, &b.client);
    if (rc != CLI_EXIT_OK)
        goto done;
    if (o->npositionals) {
        for (int i = 0; i < o->npositionals && rc == CLI_EXIT_OK; i++)
            rc = send_file(&b, o->positionals[i]);
        if (rc == CLI_EXIT_OK)
            rc = batch_flush(&b);
    } else {
        rc = send_stdin(&b, &st, &bad_lines);
    }
    if (rc == CLI_EXIT_OK && (b.refused || bad_lines)) {
        if (b.refused)
            cli_error(o->what, "%zu of %zu frames were not accepted", b.refused, b.sent);
        if (bad_lines)
            cli_error(o->what, "%zu input lines were skipped", bad_lines);
        rc = CLI_EXIT_FAILURE;
    }
done:
    free(b.body);
    stele_http_client_destroy(b.client);
    state_close(&st);
    return rc;
}

/* ---- rotate ---------------------------------------------------------------------- */

static int agent_rotate(const agent_options *o)
{
    agent_state st = {.lock_fd = -1};
    stele_http_client *client = NULL;
    stele_http_response resp = {0};
    json_t *answer = NULL;
    int rc = CLI_EXIT_OK;
    if (o->npositionals)
        return usage_error(o, "unexpected argument %s", o->positionals[0]);
    rc = state_lock(o, &st, false);
    if (rc == CLI_EXIT_OK)
        rc = state_open_identity(o, &st, true);
    if (rc != CLI_EXIT_OK)
        goto done;
    if (o->abandon) {
        if (!st.id.has_pending) {
            cli_error(o->what, "no rotation is prepared in %s", st.dir);
            rc = CLI_EXIT_FAILURE;
            goto done;
        }
        uint32_t dropped = st.id.pending.key_id;
        int err = stele_identity_rotate_abandon(&st.id);
        if (err) {
            cli_error(o->what, "cannot store the change in %s: %s", st.dir, strerror(-err));
            rc = CLI_EXIT_FAILURE;
            goto done;
        }
        fprintf(stderr, "stele: agent rotate: the prepared key id %" PRIu32 " was forgotten\n",
                dropped);
        goto done;
    }
    /* Persisted before anything is sent; kept as is when a rotation is already prepared
     * (the same request again). */
    int err = stele_identity_rotate_prepare(&st.id, clock_wall_ns());
    if (err) {
        cli_error(o->what, "cannot prepare the new key in %s: %s", st.dir,
                  err == -EOVERFLOW ? "no key id is left" : strerror(-err));
        rc = CLI_EXIT_FAILURE;
        goto done;
    }
    uint8_t req[STELE_ROTATION_MAX_BYTES];
    size_t len = 0;
    err = stele_identity_rotation_request(&st.id, req, sizeof(req), &len);
    if (err) {
        cli_error(o->what, "cannot build the rotation request: %s", strerror(-err));
        rc = CLI_EXIT_FAILURE;
        goto done;
    }
    rc = cli_client_connect(o->what, &o->client, &client);
    if (rc == CLI_EXIT_OK)
        rc = agent_post(o, client, "/api/v1/rotate", STELE_ROTATION_CONTENT_TYPE, req, len, &resp);
    if (rc != CLI_EXIT_OK) {
        fprintf(stderr,
                "stele: agent rotate: the new key (id %" PRIu32 ") stays prepared; run "
                "rotate again to resend the same request\n",
                st.id.pending.key_id);
        goto done;
    }
    if (resp.status != 200) {
        cli_report_http_error(o->what, &resp);
        fprintf(stderr,
                "stele: agent rotate: the new key (id %" PRIu32 ") stays prepared; run "
                "rotate again to resend the same request, or rotate --abandon if the "
                "server refuses it for good\n",
                st.id.pending.key_id);
        rc = CLI_EXIT_FAILURE;
        goto done;
    }
    answer = json_loadb((const char *)resp.body, resp.body_len, 0, NULL);
    const char *device = json_string_value(json_object_get(answer, "device"));
    uint32_t key_id = json_key_id(json_object_get(answer, "key_id"));
    if (!device || strcmp(device, st.id.device_id) != 0 || key_id != st.id.pending.key_id) {
        cli_error(o->what,
                  "the server's answer does not confirm key id %" PRIu32 " of device %s; the "
                  "new key stays prepared",
                  st.id.pending.key_id, st.id.device_id);
        rc = CLI_EXIT_FAILURE;
        goto done;
    }
    err = stele_identity_rotate_commit(&st.id, key_id);
    if (err) {
        cli_error(o->what,
                  "the server accepted key id %" PRIu32 " but %s could not be updated (%s); "
                  "run rotate again",
                  key_id, st.dir, strerror(-err));
        rc = CLI_EXIT_FAILURE;
        goto done;
    }
    char deadline[80];
    cli_printable_copy(json_string_value(json_object_get(answer, "overlap_deadline")), deadline,
                       sizeof(deadline));
    printf("device=%s key_id=%" PRIu32 " overlap_deadline=%s\n", st.id.device_id, key_id,
           deadline[0] ? deadline : "-");
    if (cli_flush_stdout(o->what) != CLI_EXIT_OK)
        rc = CLI_EXIT_FAILURE;
done:
    json_decref(answer);
    stele_http_response_free(&resp);
    stele_http_client_destroy(client);
    state_close(&st);
    return rc;
}

/* ---- show ------------------------------------------------------------------------ */

static int agent_show(const agent_options *o)
{
    agent_state st = {.lock_fd = -1};
    char hex[65];
    if (o->npositionals)
        return usage_error(o, "unexpected argument %s", o->positionals[0]);
    int rc = state_lock(o, &st, false);
    if (rc == CLI_EXIT_OK)
        rc = state_open_identity(o, &st, false);
    if (rc != CLI_EXIT_OK)
        goto done;
    hex_encode(st.id.current.public_key, 32, hex);
    printf("device=%s\nkey_id=%" PRIu32 "\npublic_key=%s\n",
           st.id.device_id[0] ? st.id.device_id : "-", st.id.current.key_id, hex);
    if (st.id.has_pending) {
        hex_encode(st.id.pending.public_key, 32, hex);
        printf("pending_key_id=%" PRIu32 "\npending_public_key=%s\n", st.id.pending.key_id, hex);
    }
    if (cli_flush_stdout(o->what) != CLI_EXIT_OK)
        rc = CLI_EXIT_FAILURE;
done:
    state_close(&st);
    return rc;
}

/* ---- dispatch -------------------------------------------------------------------- */

int cmd_agent(int argc, char **argv)
{
    agent_options o = {0};
    if (argc < 2) {
        fputs(agent_usage, stderr);
        return CLI_EXIT_USAGE;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        fputs(agent_usage, stdout);
        return CLI_EXIT_OK;
    }
    for (size_t i = 0; i < sizeof(subcommands) / sizeof(subcommands[0]); i++)
        if (!strcmp(argv[1], subcommands[i].name))
            o.sub = &subcommands[i];
    if (!o.sub) {
        cli_error("agent",
                  "unknown subcommand %s (keygen, enroll, seal, send, rotate, show); "
                  "see stele agent --help",
                  argv[1]);
        return CLI_EXIT_USAGE;
    }
    snprintf(o.what, sizeof(o.what), "agent %s", o.sub->name);
    if (sodium_init() < 0) {
        cli_error(o.what, "cannot initialise libsodium");
        return CLI_EXIT_FAILURE;
    }
    cli_client_options_init(&o.client);
    o.client.token[0] = '\0'; /* devices authenticate with their keys */
    int rc = parse_agent_args(argc, argv, &o);
    if (rc < 0) {
        rc = CLI_EXIT_OK; /* --help */
    } else if (rc == CLI_EXIT_OK) {
        switch (o.sub->sub) {
        case SUB_KEYGEN:
            rc = agent_keygen(&o);
            break;
        case SUB_ENROLL:
            rc = agent_enroll(&o);
            break;
        case SUB_SEAL:
            rc = agent_seal(&o);
            break;
        case SUB_SEND:
            rc = agent_send(&o);
            break;
        case SUB_ROTATE:
            rc = agent_rotate(&o);
            break;
        default:
            rc = agent_show(&o);
            break;
        }
    }
    free(o.positionals);
    return rc;
}
