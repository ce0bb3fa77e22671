/*
 * client.h — a small blocking HTTP/1.1 client for the CLI's client subcommands and the
 * benchmarks. It keeps one connection alive between requests (reconnecting once when
 * the server closed an idle connection before any response byte), reads
 * Content-Length and chunked bodies, and bounds everything it receives: header bytes,
 * body bytes (configurable) and time (a poll timeout per read/write). Plain http://
 * only — the server binds to loopback by default; TLS terminates in front of it.
 */
#ifndef STELE_CLIENT_H
#define STELE_CLIENT_H

#include <stddef.h>
#include <stdint.h>

typedef struct stele_http_client stele_http_client;

typedef struct {
    int status;    /* e.g. 204 */
    char *headers; /* raw header block, NUL-terminated, owned by the response */
    uint8_t *body; /* NUL-terminated for convenience; owned by the response */
    size_t body_len;
} stele_http_response;

/* url: "http://HOST:PORT" with an optional trailing path prefix ignored.
 * -EINVAL on a malformed URL. *out owned by the caller. */
int stele_http_client_create(const char *url, stele_http_client **out);
void stele_http_client_destroy(stele_http_client *c);
/* Limits (defaults: 30 000 ms per I/O wait, 256 MiB body). */
void stele_http_client_set_timeout_ms(stele_http_client *c, int timeout_ms);
void stele_http_client_set_max_body(stele_http_client *c, size_t max_body);

/* Sends one request and reads the whole response into *resp (release it with
 * stele_http_response_free). `headers` is NULL or a NULL-terminated array of
 * "Name: value" strings. Returns 0 when a response was read (whatever its status),
 * or a negative errno: -ECONNREFUSED, -ETIMEDOUT, -EPROTO (malformed response),
 * -EMSGSIZE (over a limit). */
int stele_http_request(stele_http_client *c, const char *method, const char *target,
                       const char *const *headers, const void *body, size_t body_len,
                       stele_http_response *resp);
void stele_http_response_free(stele_http_response *resp);
/* Value of header `name` (case-insensitive) copied into buf; -ENOENT if absent. */
int stele_http_response_header(const stele_http_response *resp, const char *name, char *buf,
                               size_t cap);

#endif
