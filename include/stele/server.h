/*
 * server.h — the HTTP API of `stele serve` (SPEC §3) on libmicrohttpd.
 *
 * One thread per connection: a write request blocks its thread while it waits for the
 * group-commit fsync, which is the simplest correct shape for "acknowledge only once
 * durable"; the connection limit bounds the threads. Bodies are read into memory up to
 * the body limit (checked against Content-Length before reading, and while reading,
 * and again after gzip decompression).
 */
#ifndef STELE_SERVER_H
#define STELE_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "stele/audit.h"
#include "stele/auth.h"
#include "stele/query.h"
#include "stele/registry.h"
#include "stele/sealed.h"
#include "stele/tsdb.h"

/* Per-tenant limits (SPEC §8). The server config holds the defaults and overrides for
 * named tenants; every limit is on by default. */
typedef struct {
    char tenant[65];                   /* for overrides; ignored in the defaults */
    uint64_t ingest_points_per_second; /* sustained rate; one request may borrow ahead */
    uint64_t max_series;               /* series the tenant may have */
    unsigned max_concurrent_queries;   /* queued or running */
    stele_query_limits query;          /* per query */
} stele_tenant_limits;

void stele_tenant_limits_default(stele_tenant_limits *l);

typedef struct {
    const char *http_addr;                /* "HOST:PORT", default 127.0.0.1:7400 */
    size_t max_body_bytes;                /* after decompression (32 MiB) */
    unsigned max_connections;             /* (256) */
    bool metrics_open;                    /* /metrics without a token */
    bool ack_buffered;                    /* report X-Stele-Durability: buffered */
    unsigned query_threads;               /* query worker pool size (default: cores - 1, >= 1) */
    unsigned query_queue;                 /* queued queries before 429 (64) */
    stele_tenant_limits limits;           /* defaults for every tenant */
    const stele_tenant_limits *overrides; /* per named tenant; borrowed */
    size_t noverrides;
    /* Control plane (SPEC §6, §7), borrowed; NULL leaves the device endpoints off. */
    stele_registry *registry;
    stele_sealed *sealed;
    stele_audit *audit;
    int64_t rotation_overlap_ns;       /* old key valid this long after a rotation (1 h) */
    double device_failures_per_second; /* per source, before 429 (20/s, burst 200) */
    int64_t audit_summary_interval_ns; /* refusal floods folded per interval (10 s) */
} stele_server_config;

void stele_server_config_default(stele_server_config *c);

typedef struct stele_server stele_server;

/* Starts listening. db and tokens are borrowed and must outlive the server. */
int stele_server_start(const stele_server_config *cfg, stele_tsdb *db, stele_tokens *tokens,
                       stele_server **out, char *err, size_t errcap);
/* 0 if addr is a listen address the server accepts ("HOST:PORT", "[V6]:PORT"). */
int stele_server_check_addr(const char *addr);
/* The port actually bound (useful with port 0). */
uint16_t stele_server_port(const stele_server *s);
/* Applies the reloadable settings of cfg (body limit, metrics_open). */
void stele_server_reload(stele_server *s, const stele_server_config *cfg);
/* Stops accepting, waits for requests in flight to finish, frees. Accepts NULL. */
void stele_server_stop(stele_server *s);

#endif
