/*
 * server_internal.h — what the request handlers of src/server share: the server and
 * request structs, response helpers and authentication.
 */
#ifndef STELE_SERVER_INTERNAL_H
#define STELE_SERVER_INTERNAL_H

#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "server/query_pool.h"
#include "stele/audit.h"
#include "stele/auth.h"
#include "stele/lineproto.h"
#include "stele/query.h"
#include "stele/registry.h"
#include "stele/sealed.h"
#include "stele/server.h"
#include "stele/tsdb.h"

#if MHD_VERSION < 0x00097002
typedef int mhd_result;
#else
typedef enum MHD_Result mhd_result;
#endif

/* A parser and batch reused across requests: allocating them per request would put
 * malloc/free of the largest buffers on the hot path. */
typedef struct ingest_worker {
    stele_lp_parser *parser;
    stele_batch *batch;
    struct ingest_worker *next;
} ingest_worker;

/* Refusals by tenant and reason (SPEC §8), for /metrics. */
typedef struct refusal_counter {
    char tenant[65];
    char reason[24];
    uint64_t count;
    struct refusal_counter *next;
} refusal_counter;

/* Ingestion rate per tenant: a token bucket that may go into debt. */
typedef struct rate_bucket {
    char tenant[65];
    double tokens;
    int64_t last_ns;
    struct rate_bucket *next;
} rate_bucket;

/* Per-source (client address) budget of failures on the unauthenticated device
 * endpoints: a source whose enrollments or frames keep failing is refused with 429
 * before any signature is checked (src/server/source_limit.c). */
typedef struct source_limiter source_limiter;
int source_limiter_create(double failures_per_second, double burst, source_limiter **out);
void source_limiter_destroy(source_limiter *l);
/* true while the source may still be served (its budget is not exhausted). */
bool source_limiter_allow(source_limiter *l, struct MHD_Connection *c, int64_t now_ns);
/* Charges `failures` to the source. */
void source_limiter_charge(source_limiter *l, struct MHD_Connection *c, double failures,
                           int64_t now_ns);

typedef struct {
    uint64_t enroll_ok;
    uint64_t enroll_refused;
    uint64_t rotate_ok;
    uint64_t rotate_refused;
    uint64_t source_throttled; /* device requests refused by the per-source budget */
    uint64_t audit_failures;
    uint64_t auth_denials_summarised;
} control_counters;

typedef struct {
    uint64_t write_requests;
    uint64_t write_ok;
    uint64_t write_bad_request;
    uint64_t write_unavailable;
    uint64_t write_too_large;
    uint64_t points_ingested;
    uint64_t skipped_string_fields;
    uint64_t time_skew_rejections;
    uint64_t too_old_rejections;
    uint64_t auth_failures;
    uint64_t forbidden;
    uint64_t export_requests;
    uint64_t bytes_received;
} server_counters;

struct stele_server {
    stele_server_config cfg;
    struct MHD_Daemon *daemon;
    uint16_t port;
    stele_tsdb *db;
    stele_tokens *tokens;
    pthread_mutex_t workers_mu;
    ingest_worker *idle_workers;
    server_counters counters; /* atomic */
    size_t max_body;          /* atomic: reloadable */
    bool metrics_open;        /* atomic: reloadable */
    int64_t started_ns;
    query_pool *pool;
    pthread_mutex_t refusals_mu;
    refusal_counter *refusals; /* by tenant and reason; refusals_mu */
    uint64_t queries_ok;       /* atomic */
    pthread_mutex_t limits_mu; /* guards the four fields below */
    stele_tenant_limits limits_default;
    stele_tenant_limits *overrides;
    size_t noverrides;
    rate_bucket *buckets;
    /* Control plane (SPEC §6, §7); borrowed from the config, NULL when not configured. */
    stele_registry *registry;
    stele_sealed *sealed;
    stele_audit *audit;
    source_limiter *sources;  /* per-source failure budget of the device endpoints */
    pthread_t summary_thread; /* folds refusal floods into audit summaries */
    bool summary_running;
    pthread_mutex_t summary_mu;
    pthread_cond_t summary_cond;
    bool stopping;                                     /* summary_mu */
    control_counters control;                          /* atomic */
    uint64_t enroll_refused_seen, rotate_refused_seen; /* summary thread only */
};

/* The limits that apply to a tenant. */
void server_tenant_limits(stele_server *s, const char *tenant, stele_tenant_limits *out);
/* Admits `points` against the tenant's rate; -EDQUOT (and *retry_after_s) when over. */
int server_admit_points(stele_server *s, const char *tenant, uint64_t points, uint64_t rate,
                        unsigned *retry_after_s);

/* Counts a refusal (limit, queue, quota) for /metrics. */
void server_count_refusal(stele_server *s, const char *tenant, const char *reason);

typedef struct {
    char method[8];
    char *form; /* decoded form body: "k\0v\0k\0v\0…", for form POSTs */
    size_t form_len;
    char *body;
    size_t body_len;
    size_t body_cap;
    bool too_large;
    bool responded;
    bool authenticated;
    stele_token_info token;
} request;

/* Parameter lookup over the query string and, for form POSTs, the body. */
const char *request_param(struct MHD_Connection *c, request *r, const char *name);
/* Calls fn for every value of a repeated parameter (match[]) in both places. */
void request_param_each(struct MHD_Connection *c, request *r, const char *name,
                        void (*fn)(void *ctx, const char *value), void *ctx);

/* Response helpers; they queue the response and return MHD's result. */
mhd_result respond(struct MHD_Connection *c, unsigned status, const char *content_type, char *body,
                   size_t len, bool must_free, const char *const *headers);
/* Influx-style error: {"code":code,"message":message}. */
mhd_result respond_error(struct MHD_Connection *c, unsigned status, const char *code,
                         const char *message);
/* Sends j (consumed) as a JSON body. */
mhd_result respond_json(struct MHD_Connection *c, unsigned status, json_t *j);
/* "2026-11-25T22:40:00Z" (seconds precision). */
void format_rfc3339(int64_t ns, char *buf, size_t cap);
/* Prometheus-style error: {"status":"error","errorType":type,"error":message}. */
mhd_result respond_prom_error(struct MHD_Connection *c, unsigned status, const char *type,
                              const char *message);

/* Authenticates the request (headers, Basic, u/p); on failure queues 401 and returns
 * false. On success fills r->token. */
bool require_scope(stele_server *s, struct MHD_Connection *c, request *r, uint32_t scope,
                   bool prom_style, mhd_result *result);
/* The tenant a request acts for: `requested` (db/bucket/tenant parameter) if given
 * and allowed, else the token's. Queues 403 and returns NULL when not allowed. */
const char *request_tenant(stele_server *s, struct MHD_Connection *c, request *r,
                           const char *requested, bool prom_style, mhd_result *result);

mhd_result handle_write(stele_server *s, struct MHD_Connection *c, request *r, bool v2);
mhd_result handle_export(stele_server *s, struct MHD_Connection *c, request *r);
mhd_result handle_flush(stele_server *s, struct MHD_Connection *c, request *r);
mhd_result handle_metrics(stele_server *s, struct MHD_Connection *c, request *r);
mhd_result handle_tokens(stele_server *s, struct MHD_Connection *c, request *r, const char *url);
mhd_result handle_buildinfo(stele_server *s, struct MHD_Connection *c, request *r);
mhd_result handle_query(stele_server *s, struct MHD_Connection *c, request *r, bool range);
mhd_result handle_series(stele_server *s, struct MHD_Connection *c, request *r);
mhd_result handle_labels(stele_server *s, struct MHD_Connection *c, request *r,
                         const char *value_name);
mhd_result handle_metadata(stele_server *s, struct MHD_Connection *c, request *r);

/* Appends an audit event for an action (NULL-safe when no trail is configured); on
 * failure counts it and returns the error: the caller must then not acknowledge. actor
 * is the request's token ("token:<id>") when r is not NULL, else "server". */
int server_audit(stele_server *s, request *r, const char *action, const char *subject,
                 const char *outcome, const char *details);
/* The same with an explicit actor (e.g. "device:pump-7"). */
int server_audit_actor(stele_server *s, const char *actor, const char *action, const char *subject,
                       const char *outcome, const char *details);

/* Starts / stops the control-plane pieces of the server (control.c). */
int server_control_start(stele_server *s);
void server_control_stop(stele_server *s);

mhd_result handle_devices(stele_server *s, struct MHD_Connection *c, request *r, const char *rest);
mhd_result handle_enroll(stele_server *s, struct MHD_Connection *c, request *r);
mhd_result handle_rotate(stele_server *s, struct MHD_Connection *c, request *r);
mhd_result handle_frames(stele_server *s, struct MHD_Connection *c, request *r);
mhd_result handle_audit(stele_server *s, struct MHD_Connection *c, request *r);

/* Decompresses gzip data into a malloc'd buffer of at most max bytes. -EMSGSIZE over
 * the limit, -EINVAL if not valid gzip. */
int gzip_inflate(const char *in, size_t in_len, size_t max, char **out, size_t *out_len);

#endif
