/*
 * server.c — the HTTP daemon: listening, request lifecycle, body collection, routing,
 * authentication and response helpers. Handlers live in handle_*.c.
 *
 * Request lifecycle under libmicrohttpd: the access handler is called once with the
 * headers (we allocate the request, check the declared size and, for writes, the
 * token before reading any body), then once per body chunk (we append, enforcing the
 * body limit), then once more with no data, when the handler runs. A request refused
 * early gets its response queued at once; MHD then discards the rest of the body and
 * closes the connection.
 */
#include "stele/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/text.h"
#include "server/server_internal.h"

/* 32 MiB per SPEC §3: a minute of a large plant's telemetry per request, yet small
 * enough that a few concurrent maximal requests fit in memory comfortably. */
#define DEFAULT_MAX_BODY (32u << 20)
/* Threads are per connection; 256 bounds them (and their stacks) under a connection
 * flood while leaving room for far more concurrent clients than cores. */
#define DEFAULT_MAX_CONNECTIONS 256
/* Idle keep-alive connections are closed after this many seconds. */
#define CONNECTION_TIMEOUT_S 120
/* Queries waiting for a worker before new ones get 429: a few seconds of work on a
 * small pool, enough to absorb a dashboard refresh burst. */
#define DEFAULT_QUERY_QUEUE 64
/* Queries one tenant may have queued or running: one heavy tenant cannot fill the
 * queue for everyone. */
#define DEFAULT_TENANT_CONCURRENT_QUERIES 8
/* Initial body buffer; grows by doubling up to the limit. */
#define BODY_INITIAL_CAP (64u << 10)

void stele_server_config_default(stele_server_config *c)
{
    memset(c, 0, sizeof(*c));
    c->http_addr = "127.0.0.1:7400";
    c->max_body_bytes = DEFAULT_MAX_BODY;
    c->max_connections = DEFAULT_MAX_CONNECTIONS;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    /* Leave a core to ingestion: queries get the others (at least one). */
    c->query_threads = cores > 1 ? (unsigned)cores - 1 : 1;
    c->query_queue = DEFAULT_QUERY_QUEUE;
    stele_tenant_limits_default(&c->limits);
    c->rotation_overlap_ns = 3600 * INT64_C(1000000000);
    c->device_failures_per_second = 20;
    c->audit_summary_interval_ns = 10 * INT64_C(1000000000);
}

void stele_tenant_limits_default(stele_tenant_limits *l)
{
    memset(l, 0, sizeof(*l));
    /* Sized so one tenant can use a whole node (which ingests ~2.5 M points/s on 2
     * cores) while still stopping a runaway client; lower them per tenant in the
     * config where tenants share a node. */
    l->ingest_points_per_second = 5000000;
    l->max_series = 2000000;
    l->max_concurrent_queries = DEFAULT_TENANT_CONCURRENT_QUERIES;
    stele_query_limits_default(&l->query);
}

/* Copies the overrides so the server owns them (they change on SIGHUP). */
static int server_set_limits(stele_server *s, const stele_server_config *cfg)
{
    stele_tenant_limits *copy = NULL;
    if (cfg->noverrides) {
        copy = calloc(cfg->noverrides, sizeof(*copy));
        if (!copy)
            return -ENOMEM;
        memcpy(copy, cfg->overrides, cfg->noverrides * sizeof(*copy));
    }
    pthread_mutex_lock(&s->limits_mu);
    free(s->overrides);
    s->overrides = copy;
    s->noverrides = cfg->noverrides;
    s->limits_default = cfg->limits;
    pthread_mutex_unlock(&s->limits_mu);
    return 0;
}

void server_tenant_limits(stele_server *s, const char *tenant, stele_tenant_limits *out)
{
    pthread_mutex_lock(&s->limits_mu);
    *out = s->limits_default;
    for (size_t i = 0; i < s->noverrides; i++)
        if (!strcmp(s->overrides[i].tenant, tenant))
            *out = s->overrides[i];
    pthread_mutex_unlock(&s->limits_mu);
}

int server_admit_points(stele_server *s, const char *tenant, uint64_t points, uint64_t rate,
                        unsigned *retry_after_s)
{
    if (!rate)
        return 0;
    int64_t now = clock_mono_ns();
    int rc = 0;
    pthread_mutex_lock(&s->limits_mu);
    rate_bucket *b = s->buckets;
    for (; b; b = b->next)
        if (!strcmp(b->tenant, tenant))
            break;
    if (!b && (b = calloc(1, sizeof(*b)))) {
        snprintf(b->tenant, sizeof(b->tenant), "%s", tenant);
        b->tokens = (double)rate;
        b->last_ns = now;
        b->next = s->buckets;
        s->buckets = b;
    }
    if (b) {
        /* Refill up to one second's worth; a request may then take the bucket into
         * debt (large requests are legitimate), which later requests wait out. */
        b->tokens += (double)(now - b->last_ns) / 1e9 * (double)rate;
        if (b->tokens > (double)rate)
            b->tokens = (double)rate;
        b->last_ns = now;
        if (b->tokens <= 0) {
            double wait = -b->tokens / (double)rate + 1e-3;
            *retry_after_s = (unsigned)wait + 1;
            rc = -EDQUOT;
        } else {
            b->tokens -= (double)points;
        }
    }
    pthread_mutex_unlock(&s->limits_mu);
    return rc;
}

/* ---- responses ------------------------------------------------------------------ */

mhd_result respond(struct MHD_Connection *c, unsigned status, const char *content_type, char *body,
                   size_t len, bool must_free, const char *const *headers)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        len, body, must_free ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_MUST_COPY);
    if (!resp) {
        if (must_free)
            free(body);
        return MHD_NO;
    }
    if (content_type)
        MHD_add_response_header(resp, "Content-Type", content_type);
    for (size_t i = 0; headers && headers[i]; i += 2)
        MHD_add_response_header(resp, headers[i], headers[i + 1]);
    mhd_result rc = MHD_queue_response(c, status, resp);
    MHD_destroy_response(resp);
    return rc;
}

/* Appends s to out as a JSON string body (without quotes). */
/* Escapes a NUL-terminated message into out (cap bytes), truncating long ones. */
static size_t json_escape(const char *s, char *out, size_t cap)
{
    size_t k = 0;
    for (; *s && k + 7 < cap; s++)
        k += json_escape_bytes(s, 1, out + k);
    out[k] = '\0';
    return k;
}

mhd_result respond_error(struct MHD_Connection *c, unsigned status, const char *code,
                         const char *message)
{
    char esc[1024], body[1200];
    json_escape(message, esc, sizeof(esc));
    int n = snprintf(body, sizeof(body), "{\"code\":\"%s\",\"message\":\"%s\"}\n", code, esc);
    return respond(c, status, "application/json", body, (size_t)n, false, NULL);
}

mhd_result respond_prom_error(struct MHD_Connection *c, unsigned status, const char *type,
                              const char *message)
{
    char esc[1024], body[1200];
    json_escape(message, esc, sizeof(esc));
    int n = snprintf(body, sizeof(body),
                     "{\"status\":\"error\",\"errorType\":\"%s\",\"error\":\"%s\"}\n", type, esc);
    return respond(c, status, "application/json", body, (size_t)n, false, NULL);
}

mhd_result respond_json(struct MHD_Connection *c, unsigned status, json_t *j)
{
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!text)
        return respond_error(c, 503, "unavailable", "out of memory");
    size_t n = strlen(text);
    char *body = malloc(n + 2);
    if (!body) {
        free(text);
        return respond_error(c, 503, "unavailable", "out of memory");
    }
    memcpy(body, text, n);
    body[n] = '\n';
    free(text);
    return respond(c, status, "application/json", body, n + 1, true, NULL);
}

void format_rfc3339(int64_t ns, char *buf, size_t cap)
{
    time_t secs = (time_t)(ns / 1000000000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* ---- authentication -------------------------------------------------------------- */

/* Extracts the presented token into buf; false if none. */
static bool presented_token(struct MHD_Connection *c, char *buf, size_t cap)
{
    const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (auth) {
        const char *tok = NULL;
        if (!strncasecmp(auth, "Token ", 6))
            tok = auth + 6;
        else if (!strncasecmp(auth, "Bearer ", 7))
            tok = auth + 7;
        else if (!strncasecmp(auth, "Basic ", 6)) {
            unsigned char decoded[512];
            size_t dlen = 0;
            const char *b64 = auth + 6;
            if (sodium_base642bin(decoded, sizeof(decoded) - 1, b64, strlen(b64), NULL, &dlen, NULL,
                                  sodium_base64_VARIANT_ORIGINAL) != 0)
                return false;
            decoded[dlen] = '\0';
            char *colon = memchr(decoded, ':', dlen);
            if (!colon)
                return false;
            snprintf(buf, cap, "%s", colon + 1); /* the password is the token */
            sodium_memzero(decoded, sizeof(decoded));
            return true;
        }
        if (tok) {
            while (*tok == ' ')
                tok++;
            snprintf(buf, cap, "%s", tok);
            return true;
        }
        return false;
    }
    const char *p = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "p");
    if (p) {
        snprintf(buf, cap, "%s", p);
        return true;
    }
    return false;
}

bool require_scope(stele_server *s, struct MHD_Connection *c, request *r, uint32_t scope,
                   bool prom_style, mhd_result *result)
{
    char token[512];
    if (!r->authenticated) {
        if (!presented_token(c, token, sizeof(token)) ||
            stele_tokens_authenticate(s->tokens, token, strlen(token), &r->token) != 0) {
            sodium_memzero(token, sizeof(token));
            __atomic_add_fetch(&s->counters.auth_failures, 1, __ATOMIC_RELAXED);
            const char *msg = "missing or invalid token: send 'Authorization: Token <token>' "
                              "(see `stele token create`)";
            *result = prom_style ? respond_prom_error(c, 401, "unauthorized", msg)
                                 : respond_error(c, 401, "unauthorized", msg);
            r->responded = true;
            return false;
        }
        sodium_memzero(token, sizeof(token));
        r->authenticated = true;
    }
    if ((r->token.scopes & scope) != scope) {
        char msg[160], need[32];
        stele_scopes_format(scope, need, sizeof(need));
        snprintf(msg, sizeof(msg),
                 "this token lacks the '%s' scope; create one with "
                 "`stele token create --scopes %s`",
                 need, need);
        __atomic_add_fetch(&s->counters.forbidden, 1, __ATOMIC_RELAXED);
        *result = prom_style ? respond_prom_error(c, 403, "forbidden", msg)
                             : respond_error(c, 403, "forbidden", msg);
        r->responded = true;
        return false;
    }
    return true;
}

const char *request_tenant(stele_server *s, struct MHD_Connection *c, request *r,
                           const char *requested, bool prom_style, mhd_result *result)
{
    if (!requested || !*requested || strcmp(requested, r->token.tenant) == 0)
        return r->token.tenant;
    if ((r->token.scopes & STELE_SCOPE_ADMIN) && stele_tenant_name_valid(requested))
        return requested;
    char msg[256];
    snprintf(msg, sizeof(msg), "this token belongs to tenant '%s' and cannot act for '%.64s'",
             r->token.tenant, requested);
    __atomic_add_fetch(&s->counters.forbidden, 1, __ATOMIC_RELAXED);
    *result = prom_style ? respond_prom_error(c, 403, "forbidden", msg)
                         : respond_error(c, 403, "forbidden", msg);
    r->responded = true;
    return NULL;
}

/* ---- routing -------------------------------------------------------------------- */

static mhd_result handle_simple_status(struct MHD_Connection *c, unsigned status, const char *json)
{
    return respond(c, status, "application/json", (char *)json, strlen(json), false, NULL);
}

static mhd_result route(stele_server *s, struct MHD_Connection *c, request *r, const char *url)
{
    const char *m = r->method;
    bool get = !strcmp(m, "GET") || !strcmp(m, "HEAD");
    bool post = !strcmp(m, "POST");
    if (!strcmp(url, "/ping") && get) {
        static const char *const hdr[] = {"X-Influxdb-Version", "1.8-stele", NULL};
        return respond(c, 204, NULL, "", 0, false, hdr);
    }
    if (!strcmp(url, "/health") && get)
        return handle_simple_status(c, 200, "{\"status\":\"ok\"}\n");
    if (!strcmp(url, "/ready") && get) {
        int health = stele_tsdb_health(s->db);
        if (health == 0)
            return handle_simple_status(c, 200, "{\"status\":\"ready\"}\n");
        char body[256];
        snprintf(body, sizeof(body),
                 "{\"status\":\"not ready\",\"reason\":\"storage stopped accepting writes: %s; "
                 "restart the server to recover from the log\"}\n",
                 strerror(-health));
        return respond(c, 503, "application/json", body, strlen(body), false, NULL);
    }
    if (!strcmp(url, "/write") && post)
        return handle_write(s, c, r, false);
    if (!strcmp(url, "/api/v2/write") && post)
        return handle_write(s, c, r, true);
    if (!strcmp(url, "/api/v1/export") && (get || post))
        return handle_export(s, c, r);
    if (!strcmp(url, "/api/v1/admin/flush") && post)
        return handle_flush(s, c, r);
    if (!strcmp(url, "/metrics") && get)
        return handle_metrics(s, c, r);
    if (!strcmp(url, "/api/v1/status/buildinfo") && (get || post))
        return handle_buildinfo(s, c, r);
    if (!strcmp(url, "/api/v1/query") && (get || post))
        return handle_query(s, c, r, false);
    if (!strcmp(url, "/api/v1/query_range") && (get || post))
        return handle_query(s, c, r, true);
    if (!strcmp(url, "/api/v1/series") && (get || post))
        return handle_series(s, c, r);
    if (!strcmp(url, "/api/v1/labels") && (get || post))
        return handle_labels(s, c, r, NULL);
    if (!strncmp(url, "/api/v1/label/", 14) && (get || post)) {
        const char *name = url + 14;
        size_t nl = strlen(name);
        if (nl > 7 && !strcmp(name + nl - 7, "/values")) {
            char label[STELE_MAX_LABEL_NAME + 1];
            if (nl - 7 == 0 || nl - 7 > STELE_MAX_LABEL_NAME)
                return respond_prom_error(c, 400, "bad_data", "invalid label name");
            memcpy(label, name, nl - 7);
            label[nl - 7] = '\0';
            return handle_labels(s, c, r, label);
        }
    }
    if (!strcmp(url, "/api/v1/metadata") && (get || post))
        return handle_metadata(s, c, r);
    if (!strncmp(url, "/api/v1/tokens", 14) && (url[14] == '\0' || url[14] == '/'))
        return handle_tokens(s, c, r, url + 14);
    if (!strcmp(url, "/api/v1/frames") && post)
        return handle_frames(s, c, r);
    if (!strcmp(url, "/api/v1/enroll") && post)
        return handle_enroll(s, c, r);
    if (!strcmp(url, "/api/v1/rotate") && post)
        return handle_rotate(s, c, r);
    if (!strncmp(url, "/api/v1/devices", 15) && (url[15] == '\0' || url[15] == '/'))
        return handle_devices(s, c, r, url + 15);
    if (!strcmp(url, "/api/v1/audit") && get)
        return handle_audit(s, c, r);
    static const char *known[] = {"/ping",
                                  "/health",
                                  "/ready",
                                  "/write",
                                  "/api/v2/write",
                                  "/api/v1/export",
                                  "/api/v1/admin/flush",
                                  "/metrics",
                                  "/api/v1/status/buildinfo",
                                  "/api/v1/frames",
                                  "/api/v1/enroll",
                                  "/api/v1/rotate",
                                  "/api/v1/audit",
                                  NULL};
    for (int i = 0; known[i]; i++)
        if (!strcmp(url, known[i]))
            return respond_error(c, 405, "method_not_allowed",
                                 "method not allowed on this endpoint; see the API docs");
    return respond_error(c, 404, "not_found", "no such endpoint; see docs/operations.md");
}

static mhd_result access_handler(void *cls, struct MHD_Connection *c, const char *url,
                                 const char *method, const char *version, const char *upload,
                                 size_t *upload_size, void **con_cls)
{
    stele_server *s = cls;
    request *r = *con_cls;
    (void)version;
    if (!r) {
        r = calloc(1, sizeof(*r));
        if (!r)
            return MHD_NO;
        snprintf(r->method, sizeof(r->method), "%s", method);
        *con_cls = r;
        size_t limit = __atomic_load_n(&s->max_body, __ATOMIC_RELAXED);
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoull(cl, NULL, 10) > limit) {
            r->responded = true;
            __atomic_add_fetch(&s->counters.write_too_large, 1, __ATOMIC_RELAXED);
            char msg[160];
            snprintf(msg, sizeof(msg),
                     "request body larger than the %zu-byte limit; split it "
                     "into smaller requests",
                     limit);
            return respond_error(c, 413, "too_large", msg);
        }
        /* Writes: refuse a bad token before reading the body. */
        if (!strcmp(method, "POST") && (!strcmp(url, "/write") || !strcmp(url, "/api/v2/write"))) {
            mhd_result result;
            if (!require_scope(s, c, r, STELE_SCOPE_WRITE, false, &result))
                return result;
        }
        return MHD_YES;
    }
    if (*upload_size) {
        if (!r->responded && !r->too_large) {
            size_t limit = __atomic_load_n(&s->max_body, __ATOMIC_RELAXED);
            if (r->body_len + *upload_size > limit) {
                r->too_large = true;
                free(r->body);
                r->body = NULL;
                r->body_len = r->body_cap = 0;
            } else {
                if (r->body_len + *upload_size + 1 > r->body_cap) {
                    size_t cap = r->body_cap ? r->body_cap : BODY_INITIAL_CAP;
                    while (cap < r->body_len + *upload_size + 1)
                        cap *= 2;
                    char *b = realloc(r->body, cap);
                    if (!b)
                        return MHD_NO;
                    r->body = b;
                    r->body_cap = cap;
                }
                memcpy(r->body + r->body_len, upload, *upload_size);
                r->body_len += *upload_size;
                __atomic_add_fetch(&s->counters.bytes_received, *upload_size, __ATOMIC_RELAXED);
            }
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (r->responded)
        return MHD_YES;
    r->responded = true;
    if (r->too_large) {
        __atomic_add_fetch(&s->counters.write_too_large, 1, __ATOMIC_RELAXED);
        return respond_error(c, 413, "too_large",
                             "request body larger than the limit; split it into smaller requests");
    }
    return route(s, c, r, url);
}

static void request_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                              enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)c;
    (void)toe;
    request *r = *con_cls;
    if (r) {
        free(r->body);
        free(r->form);
        sodium_memzero(&r->token, sizeof(r->token));
        free(r);
        *con_cls = NULL;
    }
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    /* Bind failures are reported by stele_server_start with the real address; MHD's own
     * message would name port 0 (we pass a socket address, not a port). */
    if (!strncmp(msg, "Failed to bind", 14))
        return;
    fprintf(stderr, "stele: http: %s\n", msg);
}

/* Parses "HOST:PORT" / "[V6]:PORT" / ":PORT" into a socket address. */
static int parse_listen_addr(const char *text, struct sockaddr_storage *ss, socklen_t *len)
{
    char host[256];
    const char *colon = strrchr(text, ':');
    if (!colon || colon == text + strlen(text) - 1)
        return -EINVAL;
    char *end;
    unsigned long port = strtoul(colon + 1, &end, 10);
    if (*end || port > 65535)
        return -EINVAL;
    size_t hl = (size_t)(colon - text);
    if (hl >= sizeof(host))
        return -EINVAL;
    memcpy(host, text, hl);
    host[hl] = '\0';
    memset(ss, 0, sizeof(*ss));
    if (hl == 0)
        snprintf(host, sizeof(host), "127.0.0.1");
    if (host[0] == '[' && host[hl - 1] == ']') {
        struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
        host[hl - 1] = '\0';
        if (inet_pton(AF_INET6, host + 1, &a6->sin6_addr) != 1)
            return -EINVAL;
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        *len = sizeof(*a6);
        return 0;
    }
    if (!strcmp(host, "localhost"))
        snprintf(host, sizeof(host), "127.0.0.1");
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    if (inet_pton(AF_INET, host, &a4->sin_addr) != 1)
        return -EINVAL;
    a4->sin_family = AF_INET;
    a4->sin_port = htons((uint16_t)port);
    *len = sizeof(*a4);
    return 0;
}

int stele_server_check_addr(const char *addr)
{
    struct sockaddr_storage ss;
    socklen_t len;
    return parse_listen_addr(addr, &ss, &len);
}

int stele_server_start(const stele_server_config *cfg, stele_tsdb *db, stele_tokens *tokens,
                       stele_server **out, char *err, size_t errcap)
{
    struct sockaddr_storage ss;
    socklen_t sslen;
    if (parse_listen_addr(cfg->http_addr, &ss, &sslen) != 0) {
        snprintf(err, errcap, "--http %s: expected HOST:PORT (e.g. 127.0.0.1:7400)",
                 cfg->http_addr);
        return -EINVAL;
    }
    stele_server *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->cfg = *cfg;
    s->db = db;
    s->tokens = tokens;
    s->max_body = cfg->max_body_bytes ? cfg->max_body_bytes : DEFAULT_MAX_BODY;
    s->metrics_open = cfg->metrics_open;
    s->started_ns = clock_wall_ns();
    pthread_mutex_init(&s->workers_mu, NULL);
    pthread_mutex_init(&s->refusals_mu, NULL);
    pthread_mutex_init(&s->limits_mu, NULL);
    if (server_set_limits(s, cfg) != 0 ||
        query_pool_create(cfg->query_threads ? cfg->query_threads : 1,
                          cfg->query_queue ? cfg->query_queue : DEFAULT_QUERY_QUEUE,
                          &s->pool) != 0) {
        snprintf(err, errcap, "cannot start the query workers");
        pthread_mutex_destroy(&s->workers_mu);
        pthread_mutex_destroy(&s->refusals_mu);
        pthread_mutex_destroy(&s->limits_mu);
        free(s->overrides);
        free(s);
        return -EAGAIN;
    }
    if (server_control_start(s) != 0) {
        snprintf(err, errcap, "cannot start the control-plane thread");
        server_control_stop(s);
        query_pool_destroy(s->pool);
        pthread_mutex_destroy(&s->workers_mu);
        pthread_mutex_destroy(&s->refusals_mu);
        pthread_mutex_destroy(&s->limits_mu);
        free(s->overrides);
        free(s);
        return -EAGAIN;
    }
    unsigned flags =
        MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
    if (ss.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    s->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, access_handler, s, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, s,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)(cfg->max_connections ? cfg->max_connections : DEFAULT_MAX_CONNECTIONS),
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)CONNECTION_TIMEOUT_S, MHD_OPTION_NOTIFY_COMPLETED,
        request_completed, s, MHD_OPTION_END);
    if (!s->daemon) {
        snprintf(err, errcap, "cannot listen on %s: %s", cfg->http_addr,
                 errno ? strerror(errno) : "address in use or not available");
        server_control_stop(s);
        query_pool_destroy(s->pool);
        pthread_mutex_destroy(&s->workers_mu);
        pthread_mutex_destroy(&s->refusals_mu);
        pthread_mutex_destroy(&s->limits_mu);
        free(s->overrides);
        free(s);
        return -EADDRINUSE;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    s->port = info ? info->port : 0;
    *out = s;
    return 0;
}

uint16_t stele_server_port(const stele_server *s)
{
    return s->port;
}

void stele_server_reload(stele_server *s, const stele_server_config *cfg)
{
    __atomic_store_n(&s->max_body, cfg->max_body_bytes ? cfg->max_body_bytes : DEFAULT_MAX_BODY,
                     __ATOMIC_RELAXED);
    __atomic_store_n(&s->metrics_open, cfg->metrics_open, __ATOMIC_RELAXED);
    server_set_limits(s, cfg);
}

void stele_server_stop(stele_server *s)
{
    if (!s)
        return;
    MHD_stop_daemon(s->daemon);
    server_control_stop(s);
    query_pool_destroy(s->pool);
    while (s->refusals) {
        refusal_counter *next = s->refusals->next;
        free(s->refusals);
        s->refusals = next;
    }
    pthread_mutex_destroy(&s->refusals_mu);
    while (s->buckets) {
        rate_bucket *next = s->buckets->next;
        free(s->buckets);
        s->buckets = next;
    }
    free(s->overrides);
    pthread_mutex_destroy(&s->limits_mu);
    while (s->idle_workers) {
        ingest_worker *w = s->idle_workers;
        s->idle_workers = w->next;
        stele_lp_parser_destroy(w->parser);
        stele_batch_destroy(w->batch);
        free(w);
    }
    pthread_mutex_destroy(&s->workers_mu);
    free(s);
}
