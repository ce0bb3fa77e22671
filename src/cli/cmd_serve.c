/*
 * cmd_serve.c — `stele serve`: opens (recovering) the store, the token store and the
 * HTTP server, then waits for signals.
 *
 * Signals are handled without handlers: they are blocked in every thread (the mask is
 * set before any thread starts) and the main thread takes them with sigwaitinfo, so no
 * work ever runs in signal context. SIGTERM/SIGINT stop gracefully: stop accepting,
 * let requests in flight finish (each is acknowledged only if durable), flush the head
 * into blocks, close. SIGHUP reloads the config file's reloadable settings.
 *
 * Settings come from defaults, then the --config JSON file, then flags (flags win).
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <malloc.h>
#include <sodium.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "stele/audit.h"
#include "stele/auth.h"
#include "stele/io.h"
#include "stele/query.h"
#include "stele/registry.h"
#include "stele/sealed.h"
#include "stele/server.h"
#include "stele/tsdb.h"

#define NS_PER_SEC INT64_C(1000000000)
/* Tenants with their own limits in one config file. */
#define SERVE_MAX_TENANT_OVERRIDES 256
/* Config files are small; anything larger is a mistake. */
#define CONFIG_MAX_BYTES (1u << 20)

typedef struct {
    char data[1024];
    char http[256];
    char config[1024];
    bool ack_buffered;
    int64_t retention_ns;
    /* Tiers after raw (SPEC §5); tiers_set when --tiers or "tiers" gave them. */
    bool tiers_set;
    size_t ntiers;
    int64_t tier_resolution_ns[STELE_MAX_TIERS], tier_retention_ns[STELE_MAX_TIERS];
    int64_t max_future_skew_ns;
    uint64_t head_max_points;
    int64_t flush_interval_ns;
    bool metrics_open;
    uint64_t max_body_bytes;
    unsigned query_threads;
    stele_tenant_limits limits;
    stele_tenant_limits overrides[SERVE_MAX_TENANT_OVERRIDES];
    size_t noverrides;
    /* Control plane (SPEC §6); 0 = the defaults. */
    int64_t enroll_ttl_ns;
    int64_t rotation_overlap_ns;
    uint32_t replay_window;
} serve_settings;

static void serve_usage(FILE *out)
{
    fprintf(out,
            "usage: stele serve [--data DIR] [--http ADDR] [--config FILE] [options]\n\n"
            "Runs the server: HTTP API, write-ahead log, storage, on one data directory.\n\n"
            "  --data DIR             data directory (default ./stele-data)\n"
            "  --http ADDR            HTTP listen address (default 127.0.0.1:7400)\n"
            "  --config FILE          JSON settings (keys: http, ack, retention, tiers,\n"
            "                         max_future_skew, head_max_points, flush_interval,\n"
            "                         metrics_open, max_body_bytes, query_threads, limits,\n"
            "                         tenants); flags override it; see docs/operations.md\n"
            "  --ack durable|buffered acknowledge after fsync (default) or before it\n"
            "  --retention DUR        keep raw data this long (default 30d)\n"
            "  --tiers SPEC           downsampling tiers, raw first (default\n"
            "                         raw:30d,1m:1y,1h:10y; \"raw:30d\" alone: no tiers);\n"
            "                         raw's retention replaces --retention\n"
            "  --max-future-skew DUR  refuse points further ahead (default 10m)\n"
            "  --head-max-points N    flush the in-memory head at N points (default 4000000)\n"
            "  --flush-interval DUR   ...or when it is this old (default 10m)\n"
            "  --max-body-bytes N     request body limit after decompression (default 32 MiB)\n"
            "  --metrics-open         serve /metrics without a token\n"
            "  --enroll-ttl DUR       device enrollment tokens expire after this (default 24h)\n"
            "  --rotation-overlap DUR old device key stays valid this long after a rotation\n"
            "                         unless the new key is used first (default 1h)\n"
            "  --replay-window N      anti-replay window per device key, 64..1024, a multiple\n"
            "                         of 64 (default 1024)\n\n"
            "Durations: a number with unit s, m, h, d or w (e.g. 90s, 30d).\n"
            "Signals: SIGTERM/SIGINT stop gracefully (flush, exit 0); SIGHUP reloads --config.\n"
            "On first start an admin token is written to DIR/admin.token (mode 0600).\n");
}

static int parse_duration(const char *text, int64_t *ns)
{
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno || end == text || v <= 0)
        return -EINVAL;
    int64_t unit;
    if (!strcmp(end, "s"))
        unit = NS_PER_SEC;
    else if (!strcmp(end, "m"))
        unit = 60 * NS_PER_SEC;
    else if (!strcmp(end, "h"))
        unit = 3600 * NS_PER_SEC;
    else if (!strcmp(end, "d"))
        unit = 86400 * NS_PER_SEC;
    else if (!strcmp(end, "w"))
        unit = 7 * 86400 * NS_PER_SEC;
    else
        return -EINVAL;
    if (__builtin_mul_overflow((int64_t)v, unit, ns))
        return -EINVAL;
    return 0;
}

static int parse_count(const char *text, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno || end == text || *end || v == 0 || text[0] == '-')
        return -EINVAL;
    *out = v;
    return 0;
}

/* Applies a "limits" object (defaults or one tenant's) onto l. */
static int load_limits(const char *path, const char *where, json_t *obj, stele_tenant_limits *l)
{
    const char *key;
    json_t *v;
    int rc = 0;
    if (!json_is_object(obj)) {
        cli_error("serve", "--config %s: %s must be an object", path, where);
        return -EINVAL;
    }
    json_object_foreach(obj, key, v)
    {
        json_int_t n = json_is_integer(v) ? json_integer_value(v) : -1;
        const char *str = json_is_string(v) ? json_string_value(v) : NULL;
        if (!strcmp(key, "ingest_points_per_second") && n >= 0)
            l->ingest_points_per_second = (uint64_t)n;
        else if (!strcmp(key, "max_series") && n >= 0)
            l->max_series = (uint64_t)n;
        else if (!strcmp(key, "max_concurrent_queries") && n > 0)
            l->max_concurrent_queries = (unsigned)n;
        else if (!strcmp(key, "max_series_per_query") && n > 0)
            l->query.max_series = (uint64_t)n;
        else if (!strcmp(key, "max_samples_per_query") && n > 0)
            l->query.max_samples = (uint64_t)n;
        else if (!strcmp(key, "max_query_memory") && n > 0)
            l->query.max_memory = (uint64_t)n;
        else if (!strcmp(key, "query_timeout") && str &&
                 parse_duration(str, &l->query.timeout_ns) == 0)
            ;
        else {
            cli_error("serve", "--config %s: %s: invalid or unknown limit '%s'", path, where, key);
            rc = -EINVAL;
        }
    }
    return rc;
}

/* Parses a --tiers specification into s. Prints the problem itself. */
static int parse_tiers(const char *where, const char *text, serve_settings *s)
{
    int64_t res[STELE_MAX_TIERS], ret[STELE_MAX_TIERS];
    size_t n = 0;
    char err[256];
    if (stele_tiers_parse(text, res, ret, &n, err, sizeof(err)) != 0) {
        cli_error("serve", "%s %s: %s", where, text, err);
        return -EINVAL;
    }
    s->tiers_set = true;
    s->retention_ns = ret[0];
    s->ntiers = n - 1;
    for (size_t i = 1; i < n; i++) {
        s->tier_resolution_ns[i - 1] = res[i];
        s->tier_retention_ns[i - 1] = ret[i];
    }
    return 0;
}

/* Applies a JSON config file onto s. Prints the problem itself. */
static int load_config(const char *path, serve_settings *s)
{
    json_error_t jerr;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        cli_error("serve", "--config %s: %s (line %d)", path, jerr.text, jerr.line);
        return -EINVAL;
    }
    int rc = 0;
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v)
    {
        const char *str = json_is_string(v) ? json_string_value(v) : NULL;
        if (!strcmp(key, "http") && str) {
            snprintf(s->http, sizeof(s->http), "%s", str);
        } else if (!strcmp(key, "ack") && str &&
                   (!strcmp(str, "durable") || !strcmp(str, "buffered"))) {
            s->ack_buffered = !strcmp(str, "buffered");
        } else if (!strcmp(key, "retention") && str && parse_duration(str, &s->retention_ns) == 0) {
        } else if (!strcmp(key, "tiers") && str) {
            if (parse_tiers("--config tiers", str, s) != 0)
                rc = -EINVAL;
        } else if (!strcmp(key, "max_future_skew") && str &&
                   parse_duration(str, &s->max_future_skew_ns) == 0) {
        } else if (!strcmp(key, "flush_interval") && str &&
                   parse_duration(str, &s->flush_interval_ns) == 0) {
        } else if (!strcmp(key, "head_max_points") && json_is_integer(v) &&
                   json_integer_value(v) > 0) {
            s->head_max_points = (uint64_t)json_integer_value(v);
        } else if (!strcmp(key, "max_body_bytes") && json_is_integer(v) &&
                   json_integer_value(v) > 0) {
            s->max_body_bytes = (uint64_t)json_integer_value(v);
        } else if (!strcmp(key, "metrics_open") && json_is_boolean(v)) {
            s->metrics_open = json_is_true(v);
        } else if (!strcmp(key, "query_threads") && json_is_integer(v) &&
                   json_integer_value(v) > 0 && json_integer_value(v) <= 256) {
            s->query_threads = (unsigned)json_integer_value(v);
        } else if (!strcmp(key, "limits")) {
            if (load_limits(path, "limits", v, &s->limits) != 0)
                rc = -EINVAL;
        } else if (!strcmp(key, "tenants") && json_is_object(v)) {
            const char *tenant;
            json_t *tv;
            s->noverrides = 0;
            json_object_foreach(v, tenant, tv)
            {
                if (!stele_tenant_name_valid(tenant) ||
                    s->noverrides == SERVE_MAX_TENANT_OVERRIDES) {
                    cli_error("serve", "--config %s: tenants: invalid tenant '%s' or too many",
                              path, tenant);
                    rc = -EINVAL;
                    continue;
                }
                stele_tenant_limits *o = &s->overrides[s->noverrides++];
                *o = s->limits; /* unset keys inherit the defaults given so far */
                snprintf(o->tenant, sizeof(o->tenant), "%s", tenant);
                if (load_limits(path, tenant, tv, o) != 0)
                    rc = -EINVAL;
            }
        } else {
            cli_error("serve", "--config %s: invalid or unknown setting '%s'", path, key);
            rc = -EINVAL;
        }
    }
    json_decref(root);
    return rc;
}

static int parse_args(int argc, char **argv, serve_settings *s, bool *help)
{
    /* First pass: --config, so flags can override it in the second. */
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            *help = true;
            return 0;
        }
        if (!strcmp(argv[i], "--config") && i + 1 < argc)
            snprintf(s->config, sizeof(s->config), "%s", argv[i + 1]);
    }
    if (s->config[0] && load_config(s->config, s) != 0)
        return -EINVAL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        bool takes_value = true;
        int bad = 0;
        if (!strcmp(a, "--data") && val)
            snprintf(s->data, sizeof(s->data), "%s", val);
        else if (!strcmp(a, "--http") && val)
            snprintf(s->http, sizeof(s->http), "%s", val);
        else if (!strcmp(a, "--config") && val)
            ;
        else if (!strcmp(a, "--mqtt") && val) {
            cli_error("serve", "--mqtt: the MQTT endpoint is not part of this version yet");
            return -EINVAL;
        } else if (!strcmp(a, "--ack") && val) {
            if (!strcmp(val, "durable") || !strcmp(val, "buffered"))
                s->ack_buffered = !strcmp(val, "buffered");
            else
                bad = 1;
        } else if (!strcmp(a, "--retention") && val) {
            bad = parse_duration(val, &s->retention_ns);
        } else if (!strcmp(a, "--tiers") && val) {
            if (parse_tiers("--tiers", val, s) != 0)
                return -EINVAL;
        } else if (!strcmp(a, "--max-future-skew") && val)
            bad = parse_duration(val, &s->max_future_skew_ns);
        else if (!strcmp(a, "--flush-interval") && val)
            bad = parse_duration(val, &s->flush_interval_ns);
        else if (!strcmp(a, "--head-max-points") && val)
            bad = parse_count(val, &s->head_max_points);
        else if (!strcmp(a, "--max-body-bytes") && val)
            bad = parse_count(val, &s->max_body_bytes);
        else if (!strcmp(a, "--enroll-ttl") && val)
            bad = parse_duration(val, &s->enroll_ttl_ns) || s->enroll_ttl_ns <= 0;
        else if (!strcmp(a, "--rotation-overlap") && val)
            bad = parse_duration(val, &s->rotation_overlap_ns) || s->rotation_overlap_ns <= 0;
        else if (!strcmp(a, "--replay-window") && val) {
            uint64_t w = 0;
            bad = parse_count(val, &w) || w < 64 || w > 1024 || w % 64;
            s->replay_window = (uint32_t)w;
        } else if (!strcmp(a, "--metrics-open")) {
            s->metrics_open = true;
            takes_value = false;
        } else {
            cli_error("serve", "unexpected or incomplete argument '%s' (see --help)", a);
            return -EINVAL;
        }
        if (bad) {
            cli_error("serve", "%s %s: invalid value (see --help)", a, val);
            return -EINVAL;
        }
        if (takes_value)
            i++;
    }
    return 0;
}

/* Takes an exclusive lock on DATA/LOCK so two servers never share a directory. */
static int lock_data_dir(const char *dir, int *fd_out)
{
    char path[1100];
    snprintf(path, sizeof(path), "%s/LOCK", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int rc = -errno;
        close(fd);
        return rc;
    }
    *fd_out = fd;
    return 0;
}

/* On first start (no tokens yet), creates the admin token file. */
static int ensure_admin_token(stele_io *io, stele_tokens *tokens, const char *dir)
{
    char path[1100];
    snprintf(path, sizeof(path), "%s/admin.token", dir);
    if (stele_tokens_active_count(tokens) > 0 || stele_io_exists(io, path) == 1)
        return 0;
    char token[STELE_TOKEN_STRING_LEN + 2];
    stele_token_info info;
    int rc = stele_tokens_create(tokens, "default",
                                 STELE_SCOPE_READ | STELE_SCOPE_WRITE | STELE_SCOPE_ADMIN, token,
                                 sizeof(token) - 1, &info);
    if (rc)
        return rc;
    size_t n = strlen(token);
    token[n] = '\n';
    rc = stele_io_write_file_atomic(io, dir, "admin.token", token, n + 1);
    memset(token, 0, sizeof(token));
    if (rc == 0)
        chmod(path, 0600);
    if (rc == 0)
        fprintf(stderr, "stele: serve: created an admin token (tenant default) in %s\n", path);
    return rc;
}

static void settings_to_server_config(const serve_settings *s, stele_server_config *sc)
{
    stele_server_config_default(sc);
    sc->http_addr = s->http;
    sc->metrics_open = s->metrics_open;
    sc->ack_buffered = s->ack_buffered;
    if (s->max_body_bytes)
        sc->max_body_bytes = s->max_body_bytes;
    if (s->query_threads)
        sc->query_threads = s->query_threads;
    sc->limits = s->limits;
    sc->overrides = s->overrides;
    sc->noverrides = s->noverrides;
}

/* Splits "--name=value" arguments into "--name" "value" (SPEC writes --ack=durable).
 * Returns a malloc'd argv (the strings point into the original or into *storage). */
static char **split_equals_args(int argc, char **argv, int *argc_out, char **storage)
{
    size_t total = 0;
    for (int i = 0; i < argc; i++)
        total += strlen(argv[i]) + 1;
    char **out = calloc((size_t)argc * 2 + 1, sizeof(*out));
    char *buf = malloc(total + 1);
    if (!out || !buf) {
        free(out);
        free(buf);
        return NULL;
    }
    int n = 0;
    char *p = buf;
    for (int i = 0; i < argc; i++) {
        const char *eq = strchr(argv[i], '=');
        if (i > 0 && !strncmp(argv[i], "--", 2) && eq) {
            size_t nl = (size_t)(eq - argv[i]);
            memcpy(p, argv[i], nl);
            p[nl] = '\0';
            out[n++] = p;
            p += nl + 1;
            out[n++] = (char *)eq + 1;
        } else {
            out[n++] = argv[i];
        }
    }
    *argc_out = n;
    *storage = buf;
    return out;
}

static int cmd_serve_args(int argc, char **argv);

int cmd_serve(int argc, char **argv)
{
    char *storage = NULL;
    int n = 0;
    char **args = split_equals_args(argc, argv, &n, &storage);
    if (!args) {
        cli_error("serve", "out of memory");
        return CLI_EXIT_FAILURE;
    }
    int rc = cmd_serve_args(n, args);
    free(args);
    free(storage);
    return rc;
}

static int cmd_serve_args(int argc, char **argv)
{
    serve_settings s = {0};
    stele_tsdb_options o;
    stele_tsdb_options_default(&o);
    snprintf(s.data, sizeof(s.data), "./stele-data");
    snprintf(s.http, sizeof(s.http), "127.0.0.1:7400");
    s.retention_ns = o.retention_ns;
    s.max_future_skew_ns = o.max_future_skew_ns;
    s.head_max_points = o.head_max_points;
    s.flush_interval_ns = o.flush_interval_ns;
    stele_tenant_limits_default(&s.limits);
    bool help = false;
    if (parse_args(argc, argv, &s, &help) != 0)
        return CLI_EXIT_USAGE;
    if (help) {
        serve_usage(stdout);
        return CLI_EXIT_OK;
    }
    if (stele_server_check_addr(s.http) != 0) {
        cli_error("serve",
                  "--http %s: expected HOST:PORT with an IP address or localhost "
                  "(e.g. 127.0.0.1:7400)",
                  s.http);
        return CLI_EXIT_USAGE;
    }

    /* The server's working memory (heads, request buffers, batches) is freed and needed
     * again at a steady rhythm. glibc's defaults hand it back to the kernel (trim, and
     * mmap for anything over 128 KiB) and fault it in again zeroed on the next request:
     * about 5% of the CPU of sealed-frame ingestion went to clearing fresh pages. Keep
     * up to 256 MiB per arena and serve allocations up to 32 MiB from the heap. */
    mallopt(M_TRIM_THRESHOLD, 256 << 20);
    mallopt(M_TOP_PAD, 16 << 20);
    mallopt(M_MMAP_THRESHOLD, 32 << 20);

    int exit_code = CLI_EXIT_FAILURE, lock_fd = -1, rc;
    stele_io *io = NULL;
    stele_tokens *tokens = NULL;
    stele_tsdb *db = NULL;
    stele_server *server = NULL;
    stele_audit *audit = NULL;
    stele_registry *registry = NULL;
    stele_sealed *sealed = NULL;
    uint8_t audit_sk[64], audit_pk[32];
    char err[1024], audit_dir[1100], details[256];
    const char *sig_name = "SIGTERM";

    /* Block the signals we wait for before any thread exists, so all threads inherit
     * the mask and only sigwaitinfo below receives them. */
    sigset_t wait_set;
    sigemptyset(&wait_set);
    sigaddset(&wait_set, SIGINT);
    sigaddset(&wait_set, SIGTERM);
    sigaddset(&wait_set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &wait_set, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (mkdir(s.data, 0700) != 0 && errno != EEXIST) {
        cli_error("serve", "%s: cannot create data directory: %s", s.data, strerror(errno));
        goto out;
    }
    rc = lock_data_dir(s.data, &lock_fd);
    if (rc) {
        cli_error("serve", "%s: %s", s.data,
                  rc == -EWOULDBLOCK ? "another stele server is using this data directory"
                                     : strerror(-rc));
        goto out;
    }
    if (stele_io_posix_create(&io) != 0) {
        cli_error("serve", "cannot initialise I/O");
        goto out;
    }
    rc = stele_tokens_open(io, s.data, &tokens);
    if (rc) {
        cli_error("serve", "%s/tokens.log: %s", s.data,
                  rc == -EBADMSG ? "damaged (checksum mismatch); restore it from a backup"
                                 : strerror(-rc));
        goto out;
    }
    rc = ensure_admin_token(io, tokens, s.data);
    if (rc) {
        cli_error("serve", "cannot create the admin token: %s", strerror(-rc));
        goto out;
    }
    snprintf(audit_dir, sizeof(audit_dir), "%s/audit", s.data);
    rc = stele_audit_key_load_or_create(io, audit_dir, audit_sk, audit_pk, err, sizeof(err));
    if (rc == 0)
        rc = stele_audit_open(io, audit_dir, audit_sk, &audit, err, sizeof(err));
    sodium_memzero(audit_sk, sizeof(audit_sk));
    if (rc) {
        cli_error("serve", "cannot open the audit trail: %s", err);
        goto out;
    }
    stele_registry_options ro;
    stele_registry_options_default(&ro);
    if (s.enroll_ttl_ns)
        ro.enroll_ttl_ns = s.enroll_ttl_ns;
    rc = stele_registry_open(io, s.data, &ro, &registry, err, sizeof(err));
    if (rc) {
        cli_error("serve", "cannot open the device registry: %s", err);
        goto out;
    }
    stele_sealed_options so = {.io = io,
                               .data_dir = s.data,
                               .registry = registry,
                               .window = s.replay_window,
                               .max_future_skew_ns = s.max_future_skew_ns};
    rc = stele_sealed_create(&so, &sealed, err, sizeof(err));
    if (rc) {
        cli_error("serve", "cannot load the anti-replay windows: %s", err);
        goto out;
    }
    stele_sealed_tsdb_hooks(sealed, &o);
    o.dir = s.data;
    o.io = io;
    o.retention_ns = s.retention_ns;
    if (s.tiers_set) {
        o.ntiers = s.ntiers;
        memcpy(o.tier_resolution_ns, s.tier_resolution_ns, sizeof(o.tier_resolution_ns));
        memcpy(o.tier_retention_ns, s.tier_retention_ns, sizeof(o.tier_retention_ns));
    }
    o.max_future_skew_ns = s.max_future_skew_ns;
    o.head_max_points = s.head_max_points;
    o.flush_interval_ns = s.flush_interval_ns;
    o.ack_buffered = s.ack_buffered;
    stele_tsdb_recovery rec;
    rc = stele_tsdb_open(&o, &db, &rec, err, sizeof(err));
    if (rc) {
        cli_error("serve", "cannot open the store: %s", err);
        goto out;
    }
    fprintf(stderr,
            "stele: serve: recovered %llu points (%llu blocks, %llu log records, %llu torn log "
            "bytes discarded) in %.3f s\n",
            (unsigned long long)rec.points, (unsigned long long)rec.blocks,
            (unsigned long long)rec.wal_records, (unsigned long long)rec.wal_torn_bytes,
            rec.duration_ns / 1e9);
    rc = stele_sealed_attach(sealed, db);
    if (rc) {
        cli_error("serve", "cannot attach the frame ingester: %s", strerror(-rc));
        goto out;
    }
    snprintf(details, sizeof(details),
             "points=%llu blocks=%llu log_records=%llu torn_bytes=%llu seconds=%.3f",
             (unsigned long long)rec.points, (unsigned long long)rec.blocks,
             (unsigned long long)rec.wal_records, (unsigned long long)rec.wal_torn_bytes,
             rec.duration_ns / 1e9);
    rc = stele_audit_append(audit, "server", "server.recover", "store", "ok", details, NULL);
    if (rc == 0)
        rc = stele_audit_append(audit, "server", "server.start", "server", "ok", s.http, NULL);
    if (rc) {
        cli_error("serve", "cannot append to the audit trail: %s", strerror(-rc));
        goto out;
    }
    stele_server_config sc;
    settings_to_server_config(&s, &sc);
    sc.registry = registry;
    sc.sealed = sealed;
    sc.audit = audit;
    if (s.rotation_overlap_ns)
        sc.rotation_overlap_ns = s.rotation_overlap_ns;
    rc = stele_server_start(&sc, db, tokens, &server, err, sizeof(err));
    if (rc) {
        cli_error("serve", "%s", err);
        goto out;
    }
    fprintf(
        stderr,
        "stele: serve: listening on http://%s (data %s, ack %s); admin token in %s/admin.token\n",
        s.http, s.data, s.ack_buffered ? "buffered" : "durable", s.data);

    for (;;) {
        siginfo_t si;
        int sig = sigwaitinfo(&wait_set, &si);
        if (sig < 0)
            continue; /* EINTR */
        if (sig == SIGHUP) {
            if (!s.config[0]) {
                fprintf(stderr, "stele: serve: SIGHUP: no --config file to reload\n");
                continue;
            }
            serve_settings fresh = s;
            if (load_config(s.config, &fresh) == 0) {
                s.metrics_open = fresh.metrics_open;
                s.max_body_bytes = fresh.max_body_bytes;
                s.limits = fresh.limits;
                memcpy(s.overrides, fresh.overrides, sizeof(s.overrides));
                s.noverrides = fresh.noverrides;
                settings_to_server_config(&s, &sc);
                stele_server_reload(server, &sc);
                (void)stele_audit_append(audit, "server", "config.reload", s.config, "ok",
                                         "metrics_open max_body_bytes limits", NULL);
                fprintf(stderr,
                        "stele: serve: reloaded %s (metrics_open, max_body_bytes, limits)\n",
                        s.config);
            }
            continue;
        }
        sig_name = sig == SIGINT ? "SIGINT" : "SIGTERM";
        fprintf(stderr, "stele: serve: %s received; stopping\n", sig_name);
        break;
    }
    stele_server_stop(server);
    server = NULL;
    rc = stele_tsdb_flush(db);
    if (rc) {
        cli_error("serve", "final flush failed: %s (data stays in the log)", strerror(-rc));
        goto out;
    }
    (void)stele_audit_append(audit, "server", "server.stop", "server", "ok", sig_name, NULL);
    (void)stele_audit_checkpoint(audit); /* a signed checkpoint covers the whole trail */
    exit_code = CLI_EXIT_OK;
out:
    stele_server_stop(server);
    stele_tsdb_close(db);
    stele_sealed_destroy(sealed);
    stele_registry_close(registry);
    stele_audit_close(audit);
    stele_tokens_close(tokens);
    stele_io_destroy(io);
    if (lock_fd >= 0)
        close(lock_fd);
    return exit_code;
}
