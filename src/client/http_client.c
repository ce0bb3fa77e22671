/*
 * http_client.c — a small blocking HTTP/1.1 client (include/stele/client.h) for the
 * CLI and the benchmarks.
 *
 * Design: one connection, kept alive between requests, driven by non-blocking sockets
 * and poll() so that every wait has a deadline; a request is one sendmsg of head and
 * body, a response is read through one receive buffer. Everything received is bounded
 * (header block, chunk lines, body) and anything the parser does not understand is
 * -EPROTO: the client talks to our own server, so strictness costs nothing and hides no
 * bug. After any error the connection is dropped, never reused in an unknown state.
 *
 * Reuse: a kept-alive connection may have been closed by the server while idle. Before
 * reuse the client checks it without blocking (anything readable on an idle connection
 * means EOF or junk: drop it). The close can still race the request; so when a reused
 * connection fails (EPIPE, ECONNRESET, EOF) before a single response byte arrived, the
 * request is sent once more on a fresh connection — the rule browsers and curl follow.
 * Only once, and never for a fresh connection: a server that closes without answering
 * a fresh connection has a real problem to report.
 *
 * Threads: a client is used by one thread at a time.
 */
#include "stele/client.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

/* Defaults promised by client.h: a wait longer than 30 s means the server is stuck
 * (a durable write of a full 32 MiB body takes well under that); 256 MiB is far more
 * than any API answer, yet bounded. */
#define CLIENT_DEFAULT_TIMEOUT_MS 30000
#define CLIENT_DEFAULT_MAX_BODY ((size_t)256 << 20)
/* A response's status line and headers together; our server sends a few hundred
 * bytes, and 64 KiB is the common limit of HTTP servers and proxies. */
#define CLIENT_MAX_HEAD_BYTES ((size_t)64 << 10)
/* The request line and headers we send, same reasoning. */
#define CLIENT_MAX_REQUEST_HEAD ((size_t)64 << 10)
/* One chunk-size line, extensions included. */
#define CLIENT_MAX_CHUNK_LINE 4096
/* Interim (1xx) responses skipped before the real one; a server sends at most one. */
#define CLIENT_MAX_INTERIM_RESPONSES 8
/* Longest DNS name (RFC 1035), also enough for any IPv6 literal. */
#define CLIENT_MAX_HOST_LEN 253
/* Receive buffer: a few segments per recv, small enough to sit inside the client. */
#define CLIENT_RECV_BUFFER 16384
/* First allocation of the head buffer; most heads fit. */
#define CLIENT_HEAD_INITIAL 1024

struct stele_http_client {
    char host[CLIENT_MAX_HOST_LEN + 1];                /* for getaddrinfo: no brackets */
    char port[6];                                      /* decimal, 1..65535 */
    char host_header[CLIENT_MAX_HOST_LEN + 2 + 1 + 6]; /* "[v6]:port" or "name:port" */
    int timeout_ms;
    size_t max_body;

    int fd;                 /* -1 when not connected */
    bool got_response_byte; /* during one attempt: any byte received */
    uint8_t recv_buf[CLIENT_RECV_BUFFER];
    size_t recv_pos;
    size_t recv_len;
};

typedef enum { BODY_NONE, BODY_LENGTH, BODY_CHUNKED, BODY_UNTIL_CLOSE } body_framing;

/* ---- URL ----------------------------------------------------------------------- */

static bool host_name_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '.' || ch == '-' || ch == '_';
}

static bool ipv6_literal_char(char ch)
{
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F') ||
           ch == ':' || ch == '.';
}

/* "http://HOST[:PORT][/anything]"; HOST a name, an IPv4 address or [IPv6]. */
static int url_parse(const char *url, stele_http_client *c)
{
    static const char scheme[] = "http://";
    const char *p = url;
    const char *host = NULL;
    size_t host_len = 0;
    bool bracketed = false;
    unsigned long port = 80;

    if (strncasecmp(p, scheme, sizeof(scheme) - 1) != 0)
        return -EINVAL;
    p += sizeof(scheme) - 1;
    if (*p == '[') {
        const char *end = strchr(p, ']');
        if (!end)
            return -EINVAL;
        host = p + 1;
        host_len = (size_t)(end - host);
        for (size_t i = 0; i < host_len; i++) {
            if (!ipv6_literal_char(host[i]))
                return -EINVAL;
        }
        if (!memchr(host, ':', host_len))
            return -EINVAL;
        bracketed = true;
        p = end + 1;
    } else {
        host = p;
        while (host_name_char(*p))
            p++;
        host_len = (size_t)(p - host);
    }
    if (host_len == 0 || host_len > CLIENT_MAX_HOST_LEN)
        return -EINVAL;
    if (*p == ':') {
        p++;
        const char *digits = p;
        port = 0;
        while (*p >= '0' && *p <= '9' && p - digits < 5)
            port = port * 10 + (unsigned long)(*p++ - '0');
        if (p == digits || port == 0 || port > 65535)
            return -EINVAL;
    }
    if (*p != '\0' && *p != '/')
        return -EINVAL; /* userinfo, query, a sixth port digit, anything else */

    memcpy(c->host, host, host_len);
    c->host[host_len] = '\0';
    snprintf(c->port, sizeof(c->port), "%lu", port);
    snprintf(c->host_header, sizeof(c->host_header), "%s%s%s:%lu", bracketed ? "[" : "", c->host,
             bracketed ? "]" : "", port);
    return 0;
}

int stele_http_client_create(const char *url, stele_http_client **out)
{
    stele_http_client *c = NULL;
    int rc = 0;

    if (out)
        *out = NULL;
    if (!url || !out)
        return -EINVAL;
    c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->fd = -1;
    c->timeout_ms = CLIENT_DEFAULT_TIMEOUT_MS;
    c->max_body = CLIENT_DEFAULT_MAX_BODY;
    rc = url_parse(url, c);
    if (rc < 0)
        goto fail;
    *out = c; /* now belongs to the caller */
    return 0;

fail:
    free(c);
    return rc;
}

static void conn_close(stele_http_client *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->recv_pos = 0;
    c->recv_len = 0;
}

void stele_http_client_destroy(stele_http_client *c)
{
    if (!c)
        return;
    conn_close(c);
    free(c);
}

void stele_http_client_set_timeout_ms(stele_http_client *c, int timeout_ms)
{
    if (c)
        c->timeout_ms = timeout_ms > 0 ? timeout_ms : CLIENT_DEFAULT_TIMEOUT_MS;
}

void stele_http_client_set_max_body(stele_http_client *c, size_t max_body)
{
    if (c)
        c->max_body = max_body;
}

/* ---- connection ---------------------------------------------------------------- */

static int64_t monotonic_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

/* Waits until fd is ready for `events`, at most timeout_ms. 0, -ETIMEDOUT, -errno. */
static int wait_ready(int fd, short events, int timeout_ms)
{
    int64_t deadline = monotonic_ms() + timeout_ms;
    struct pollfd pfd = {.fd = fd, .events = events};
    for (;;) {
        int64_t left = deadline - monotonic_ms();
        if (left < 0)
            left = 0;
        int n = poll(&pfd, 1, (int)left);
        if (n > 0)
            return 0; /* ready, or an error/hangup the next call will report */
        if (n == 0)
            return -ETIMEDOUT;
        if (errno != EINTR)
            return -errno;
    }
}

static int resolve_error(int gai_rc)
{
    switch (gai_rc) {
    case EAI_MEMORY:
        return -ENOMEM;
    case EAI_SYSTEM:
        return errno ? -errno : -EIO;
    default:
        return -EHOSTUNREACH; /* the name does not resolve (now) */
    }
}

static int connect_one(const struct addrinfo *ai, int timeout_ms, int *fd_out)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
    int rc = 0;
    if (fd < 0)
        return -errno;
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        if (errno != EINPROGRESS) {
            rc = -errno;
            goto fail;
        }
        rc = wait_ready(fd, POLLOUT, timeout_ms);
        if (rc < 0)
            goto fail;
        int err = 0;
        socklen_t err_len = sizeof(err);
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &err_len) != 0) {
            rc = -errno;
            goto fail;
        }
        if (err != 0) {
            rc = -err;
            goto fail;
        }
    }
    /* Requests are written whole; Nagle would only delay the last segment. */
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    *fd_out = fd;
    return 0;

fail:
    close(fd);
    return rc;
}

static int conn_open(stele_http_client *c)
{
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *addrs = NULL;
    int rc = -ECONNREFUSED;

    int gai_rc = getaddrinfo(c->host, c->port, &hints, &addrs);
    if (gai_rc != 0)
        return resolve_error(gai_rc);
    for (const struct addrinfo *ai = addrs; ai; ai = ai->ai_next) {
        rc = connect_one(ai, c->timeout_ms, &c->fd);
        if (rc == 0)
            break;
    }
    freeaddrinfo(addrs);
    c->recv_pos = 0;
    c->recv_len = 0;
    return rc; /* the last address's error when none connected */
}

/* An idle kept-alive connection has nothing to read; if it has, the server closed it
 * (or sent junk): either way it cannot carry a request. */
static bool conn_idle_closed(const stele_http_client *c)
{
    struct pollfd pfd = {.fd = c->fd, .events = POLLIN | POLLRDHUP};
    return poll(&pfd, 1, 0) != 0 || c->recv_pos != c->recv_len;
}

static int conn_send_all(stele_http_client *c, struct iovec *iov, int iov_count)
{
    while (iov_count > 0) {
        struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)iov_count};
        ssize_t n = sendmsg(c->fd, &msg, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                return -errno;
            int rc = wait_ready(c->fd, POLLOUT, c->timeout_ms);
            if (rc < 0)
                return rc;
            continue;
        }
        size_t sent = (size_t)n;
        while (iov_count > 0 && sent >= iov->iov_len) {
            sent -= iov->iov_len;
            iov++;
            iov_count--;
        }
        if (iov_count > 0) {
            iov->iov_base = (uint8_t *)iov->iov_base + sent;
            iov->iov_len -= sent;
        }
    }
    return 0;
}

/* Refills the receive buffer when empty. >0 bytes available, 0 at end of stream,
 * negative errno. */
static int conn_fill(stele_http_client *c)
{
    if (c->recv_pos < c->recv_len)
        return 1;
    c->recv_pos = 0;
    c->recv_len = 0;
    for (;;) {
        ssize_t n = recv(c->fd, c->recv_buf, sizeof(c->recv_buf), 0);
        if (n > 0) {
            c->recv_len = (size_t)n;
            c->got_response_byte = true;
            return 1;
        }
        if (n == 0)
            return 0;
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return -errno;
        int rc = wait_ready(c->fd, POLLIN, c->timeout_ms);
        if (rc < 0)
            return rc;
    }
}

/* Next byte of the response; -EPROTO if the stream ends (the caller expected more),
 * -ECONNRESET if it ends before the response's first byte. */
static int conn_read_byte(stele_http_client *c, uint8_t *byte)
{
    int rc = conn_fill(c);
    if (rc < 0)
        return rc;
    if (rc == 0)
        return c->got_response_byte ? -EPROTO : -ECONNRESET;
    *byte = c->recv_buf[c->recv_pos++];
    return 0;
}

/* Copies exactly len bytes of the stream into out. */
static int conn_read_exact(stele_http_client *c, uint8_t *out, size_t len)
{
    while (len > 0) {
        int rc = conn_fill(c);
        if (rc < 0)
            return rc;
        if (rc == 0)
            return -EPROTO; /* closed inside a body */
        size_t have = c->recv_len - c->recv_pos;
        size_t take = have < len ? have : len;
        memcpy(out, c->recv_buf + c->recv_pos, take);
        c->recv_pos += take;
        out += take;
        len -= take;
    }
    return 0;
}

/* ---- growable byte buffer (bounded) -------------------------------------------- */

typedef struct {
    uint8_t *data;
    size_t len;
    size_t cap;
    size_t limit; /* len never exceeds it: -EMSGSIZE */
} byte_buffer;

/* Makes room for `more` bytes plus a terminating NUL. */
static int byte_buffer_reserve(byte_buffer *b, size_t more)
{
    if (more > b->limit - b->len)
        return -EMSGSIZE;
    size_t need = b->len + more + 1;
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : CLIENT_HEAD_INITIAL;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    uint8_t *grown = realloc(b->data, cap);
    if (!grown)
        return -ENOMEM;
    b->data = grown;
    b->cap = cap;
    return 0;
}

/* ---- response parsing ---------------------------------------------------------- */

/* Reads the head (status line and headers) up to and including the empty line into
 * *head, NUL-terminated. Lines may end in CRLF or, leniently, LF. */
static int read_head(stele_http_client *c, byte_buffer *head)
{
    head->len = 0;
    head->limit = CLIENT_MAX_HEAD_BYTES;
    for (;;) {
        uint8_t byte = 0;
        int rc = conn_read_byte(c, &byte);
        if (rc < 0)
            return rc;
        rc = byte_buffer_reserve(head, 1);
        if (rc < 0)
            return rc;
        head->data[head->len++] = byte;
        head->data[head->len] = '\0';
        if (byte != '\n')
            continue;
        const uint8_t *d = head->data;
        size_t n = head->len;
        if ((n >= 2 && d[n - 2] == '\n') || (n >= 3 && d[n - 2] == '\r' && d[n - 3] == '\n'))
            return 0;
    }
}

/* Parses "HTTP/1.x SSS[ reason]"; sets *status and *http10. */
static int parse_status_line(const char *line, size_t len, int *status, bool *http10)
{
    if (len < 12 || memcmp(line, "HTTP/1.", 7) != 0 || (line[7] != '0' && line[7] != '1') ||
        line[8] != ' ')
        return -EPROTO;
    int code = 0;
    for (int i = 9; i < 12; i++) {
        if (line[i] < '0' || line[i] > '9')
            return -EPROTO;
        code = code * 10 + (line[i] - '0');
    }
    if (code < 100 || (len > 12 && line[12] != ' '))
        return -EPROTO;
    *status = code;
    *http10 = line[7] == '0';
    return 0;
}

static bool token_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch != '\0' && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

/* Length of the line at p (up to, not including, its LF or CRLF) and where the next
 * one starts. */
static size_t line_length(const char *p, const char **next)
{
    const char *lf = strchr(p, '\n');
    size_t len = lf ? (size_t)(lf - p) : strlen(p);
    *next = lf ? lf + 1 : p + len;
    if (len > 0 && p[len - 1] == '\r')
        len--;
    return len;
}

/* Finds header `name` in a header block (lines "Name: value"); the value, without
 * surrounding blanks, in *value and *value_len. Starts looking at *cursor and leaves it
 * after the match, so repeated calls find repeated headers. */
static bool header_next(const char **cursor, const char *name, const char **value,
                        size_t *value_len)
{
    size_t name_len = strlen(name);
    const char *p = *cursor;
    while (*p) {
        const char *next = NULL;
        size_t len = line_length(p, &next);
        if (len > name_len && p[name_len] == ':' && strncasecmp(p, name, name_len) == 0) {
            const char *v = p + name_len + 1;
            const char *end = p + len;
            while (v < end && (*v == ' ' || *v == '\t'))
                v++;
            while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
                end--;
            *value = v;
            *value_len = (size_t)(end - v);
            *cursor = next;
            return true;
        }
        p = next;
    }
    *cursor = p;
    return false;
}

/* Whether a comma-separated header value lists `token` (case-insensitive). */
static bool value_has_token(const char *value, size_t len, const char *token)
{
    size_t token_len = strlen(token);
    size_t i = 0;
    while (i < len) {
        while (i < len && (value[i] == ' ' || value[i] == '\t' || value[i] == ','))
            i++;
        size_t start = i;
        while (i < len && value[i] != ',')
            i++;
        size_t end = i;
        while (end > start && (value[end - 1] == ' ' || value[end - 1] == '\t'))
            end--;
        if (end - start == token_len && strncasecmp(value + start, token, token_len) == 0)
            return true;
    }
    return false;
}

typedef struct {
    int status;
    bool http10;
    bool has_length;
    uint64_t content_length;
    bool chunked;
    bool other_transfer_coding;
    bool connection_close;
    bool connection_keep_alive;
} response_head;

/* Checks every header line's syntax and pulls out what framing needs. */
static int parse_header_block(const char *headers, response_head *h)
{
    const char *p = headers;
    while (*p) {
        const char *next = NULL;
        size_t len = line_length(p, &next);
        if (len == 0)
            break; /* the empty line that ends the head */
        size_t name_len = 0;
        while (name_len < len && token_char(p[name_len]))
            name_len++;
        if (name_len == 0 || name_len >= len || p[name_len] != ':')
            return -EPROTO; /* no name, blank before ':', or an obsolete folded line */
        p = next;
    }

    const char *cursor = headers;
    const char *value = NULL;
    size_t value_len = 0;
    while (header_next(&cursor, "Content-Length", &value, &value_len)) {
        uint64_t length = 0;
        if (value_len == 0 || value_len > 19)
            return -EPROTO; /* 19 digits cannot overflow 64 bits */
        for (size_t i = 0; i < value_len; i++) {
            if (value[i] < '0' || value[i] > '9')
                return -EPROTO;
            length = length * 10 + (uint64_t)(value[i] - '0');
        }
        if (h->has_length && h->content_length != length)
            return -EPROTO; /* two different lengths: which body is it? */
        h->has_length = true;
        h->content_length = length;
    }
    cursor = headers;
    while (header_next(&cursor, "Transfer-Encoding", &value, &value_len)) {
        /* Only the final coding decides the framing (RFC 9112 §6.3). */
        size_t start = value_len;
        while (start > 0 && value[start - 1] != ',')
            start--;
        while (start < value_len && (value[start] == ' ' || value[start] == '\t'))
            start++;
        bool chunked = value_len - start == 7 && strncasecmp(value + start, "chunked", 7) == 0;
        h->chunked = chunked;
        h->other_transfer_coding = !chunked;
    }
    cursor = headers;
    while (header_next(&cursor, "Connection", &value, &value_len)) {
        h->connection_close |= value_has_token(value, value_len, "close");
        h->connection_keep_alive |= value_has_token(value, value_len, "keep-alive");
    }
    return 0;
}

static int read_body_length(stele_http_client *c, uint64_t length, byte_buffer *body)
{
    if (length > c->max_body)
        return -EMSGSIZE;
    int rc = byte_buffer_reserve(body, (size_t)length);
    if (rc < 0)
        return rc;
    rc = conn_read_exact(c, body->data + body->len, (size_t)length);
    if (rc < 0)
        return rc;
    body->len += (size_t)length;
    return 0;
}

/* Reads one line (for chunked framing) into line[0..cap), without its CRLF/LF. */
static int read_line(stele_http_client *c, char *line, size_t cap, size_t *len)
{
    size_t n = 0;
    for (;;) {
        uint8_t byte = 0;
        int rc = conn_read_byte(c, &byte);
        if (rc < 0)
            return rc;
        if (byte == '\n')
            break;
        if (n + 1 >= cap)
            return -EMSGSIZE;
        line[n++] = (char)byte;
    }
    if (n > 0 && line[n - 1] == '\r')
        n--;
    line[n] = '\0';
    *len = n;
    return 0;
}

static int hex_digit(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

static int read_body_chunked(stele_http_client *c, byte_buffer *body)
{
    char line[CLIENT_MAX_CHUNK_LINE];
    size_t len = 0;
    int rc = 0;

    for (;;) {
        rc = read_line(c, line, sizeof(line), &len);
        if (rc < 0)
            return rc;
        uint64_t size = 0;
        size_t i = 0;
        for (; i < len && hex_digit(line[i]) >= 0; i++) {
            if (i >= 15)
                return -EPROTO; /* more than 15 hex digits could overflow */
            size = size * 16 + (uint64_t)hex_digit(line[i]);
        }
        if (i == 0 || (i < len && line[i] != ';' && line[i] != ' ' && line[i] != '\t'))
            return -EPROTO;
        if (size == 0)
            break;
        if (size > body->limit - body->len)
            return -EMSGSIZE;
        rc = read_body_length(c, size, body);
        if (rc < 0)
            return rc;
        rc = read_line(c, line, sizeof(line), &len);
        if (rc < 0)
            return rc;
        if (len != 0)
            return -EPROTO; /* chunk data longer than its size said */
    }
    /* Trailer fields, ignored, bounded like a head. */
    size_t trailer_bytes = 0;
    do {
        rc = read_line(c, line, sizeof(line), &len);
        if (rc < 0)
            return rc;
        trailer_bytes += len + 2;
        if (trailer_bytes > CLIENT_MAX_HEAD_BYTES)
            return -EMSGSIZE;
    } while (len > 0);
    return 0;
}

static int read_body_until_close(stele_http_client *c, byte_buffer *body)
{
    for (;;) {
        int rc = conn_fill(c);
        if (rc < 0)
            return rc;
        if (rc == 0)
            return 0;
        size_t have = c->recv_len - c->recv_pos;
        rc = byte_buffer_reserve(body, have);
        if (rc < 0)
            return rc;
        memcpy(body->data + body->len, c->recv_buf + c->recv_pos, have);
        body->len += have;
        c->recv_pos += have;
    }
}

/* Reads one whole response. *keep_alive tells whether the connection can carry the
 * next request. */
static int read_response(stele_http_client *c, bool head_request, stele_http_response *resp,
                         bool *keep_alive)
{
    byte_buffer head = {0};
    byte_buffer body = {.limit = c->max_body};
    response_head h;
    int rc = 0;

    *keep_alive = false;
    for (int interim = 0;; interim++) {
        memset(&h, 0, sizeof(h));
        rc = read_head(c, &head);
        if (rc < 0)
            goto fail;
        const char *header_lines = NULL;
        size_t status_len = line_length((const char *)head.data, &header_lines);
        rc = parse_status_line((const char *)head.data, status_len, &h.status, &h.http10);
        if (rc < 0)
            goto fail;
        rc = parse_header_block(header_lines, &h);
        if (rc < 0)
            goto fail;
        if (h.status >= 200)
            break;
        /* 101 would switch protocols, which we never ask for; other 1xx are interim. */
        if (h.status == 101 || interim + 1 >= CLIENT_MAX_INTERIM_RESPONSES) {
            rc = -EPROTO;
            goto fail;
        }
    }

    body_framing framing = BODY_UNTIL_CLOSE;
    if (head_request || h.status == 204 || h.status == 304)
        framing = BODY_NONE;
    else if (h.chunked)
        framing = BODY_CHUNKED;
    else if (h.other_transfer_coding)
        framing = BODY_UNTIL_CLOSE;
    else if (h.has_length)
        framing = BODY_LENGTH;

    rc = byte_buffer_reserve(&body, 0); /* room for the NUL even when empty */
    if (rc < 0)
        goto fail;
    if (framing == BODY_LENGTH)
        rc = read_body_length(c, h.content_length, &body);
    else if (framing == BODY_CHUNKED)
        rc = read_body_chunked(c, &body);
    else if (framing == BODY_UNTIL_CLOSE)
        rc = read_body_until_close(c, &body);
    if (rc < 0)
        goto fail;
    body.data[body.len] = '\0';

    /* Message framing with both length and chunked is a smuggling pattern: serve the
     * response (chunked wins) but do not trust the connection after it. */
    bool ambiguous = h.chunked && h.has_length;
    *keep_alive = framing != BODY_UNTIL_CLOSE && !h.connection_close && !ambiguous &&
                  (!h.http10 || h.connection_keep_alive) && c->recv_pos == c->recv_len;

    /* The header block without the status line, owned by the response. */
    const char *header_lines = NULL;
    line_length((const char *)head.data, &header_lines);
    size_t headers_offset = (size_t)(header_lines - (const char *)head.data);
    memmove(head.data, head.data + headers_offset, head.len - headers_offset + 1);

    resp->status = h.status;
    resp->headers = (char *)head.data;
    resp->body = body.data;
    resp->body_len = body.len;
    return 0; /* head and body now belong to resp */

fail:
    free(head.data);
    free(body.data);
    return rc;
}

/* ---- request ------------------------------------------------------------------- */

static bool header_named(const char *line, const char *name)
{
    size_t len = strlen(name);
    return strncasecmp(line, name, len) == 0 && line[len] == ':';
}

/* Builds the request head; refuses anything that could split or confuse it. */
static int build_request_head(const stele_http_client *c, const char *method, const char *target,
                              const char *const *headers, size_t body_len, byte_buffer *out)
{
    int rc = 0;
    out->limit = CLIENT_MAX_REQUEST_HEAD;

    if (!*method || !*target)
        return -EINVAL;
    for (const char *p = method; *p; p++) {
        if (!token_char(*p))
            return -EINVAL;
    }
    for (const char *p = target; *p; p++) {
        if ((unsigned char)*p <= ' ' || *p == 0x7f)
            return -EINVAL;
    }
    bool sends_content = body_len > 0 || strcmp(method, "POST") == 0 ||
                         strcmp(method, "PUT") == 0 || strcmp(method, "PATCH") == 0;

    char fixed[sizeof(" HTTP/1.1\r\nHost: \r\n") + sizeof(c->host_header)];
    int n = snprintf(fixed, sizeof(fixed), " HTTP/1.1\r\nHost: %s\r\n", c->host_header);
    if (n < 0 || (size_t)n >= sizeof(fixed))
        return -EINVAL;
    const char *parts[3] = {method, " ", target};
    for (int i = 0; i < 3; i++) {
        size_t len = strlen(parts[i]);
        rc = byte_buffer_reserve(out, len);
        if (rc < 0)
            return rc;
        memcpy(out->data + out->len, parts[i], len);
        out->len += len;
    }
    rc = byte_buffer_reserve(out, (size_t)n);
    if (rc < 0)
        return rc;
    memcpy(out->data + out->len, fixed, (size_t)n);
    out->len += (size_t)n;
    if (sends_content) {
        n = snprintf(fixed, sizeof(fixed), "Content-Length: %zu\r\n", body_len);
        rc = byte_buffer_reserve(out, (size_t)n);
        if (rc < 0)
            return rc;
        memcpy(out->data + out->len, fixed, (size_t)n);
        out->len += (size_t)n;
    }
    for (size_t i = 0; headers && headers[i]; i++) {
        const char *h = headers[i];
        size_t len = strlen(h);
        size_t name_len = strcspn(h, ":");
        if (name_len == 0 || name_len == len || strpbrk(h, "\r\n"))
            return -EINVAL;
        for (size_t k = 0; k < name_len; k++) {
            if (!token_char(h[k]))
                return -EINVAL;
        }
        /* The client owns the framing. */
        if (header_named(h, "Host") || header_named(h, "Content-Length") ||
            header_named(h, "Transfer-Encoding"))
            return -EINVAL;
        rc = byte_buffer_reserve(out, len + 2);
        if (rc < 0)
            return rc;
        memcpy(out->data + out->len, h, len);
        memcpy(out->data + out->len + len, "\r\n", 2);
        out->len += len + 2;
    }
    rc = byte_buffer_reserve(out, 2);
    if (rc < 0)
        return rc;
    memcpy(out->data + out->len, "\r\n", 2);
    out->len += 2;
    return 0;
}

int stele_http_request(stele_http_client *c, const char *method, const char *target,
                       const char *const *headers, const void *body, size_t body_len,
                       stele_http_response *resp)
{
    byte_buffer head = {0};
    int rc = 0;

    if (resp)
        memset(resp, 0, sizeof(*resp));
    if (!c || !method || !target || !resp || (!body && body_len > 0))
        return -EINVAL;
    rc = build_request_head(c, method, target, headers, body_len, &head);
    if (rc < 0)
        goto fail;
    bool head_request = strcmp(method, "HEAD") == 0;

    for (int attempt = 0;; attempt++) {
        bool reused = c->fd >= 0;
        if (reused && conn_idle_closed(c)) {
            conn_close(c);
            reused = false;
        }
        if (c->fd < 0) {
            rc = conn_open(c);
            if (rc < 0)
                goto fail;
        }
        c->got_response_byte = false;
        struct iovec iov[2] = {
            {.iov_base = head.data, .iov_len = head.len},
            {.iov_base = (void *)body, .iov_len = body_len},
        };
        rc = conn_send_all(c, iov, body_len > 0 ? 2 : 1);
        bool keep_alive = false;
        if (rc == 0)
            rc = read_response(c, head_request, resp, &keep_alive);
        if (rc == 0) {
            if (!keep_alive)
                conn_close(c);
            break;
        }
        conn_close(c);
        bool closed_before_answer = (rc == -EPIPE || rc == -ECONNRESET) && !c->got_response_byte;
        if (!(reused && attempt == 0 && closed_before_answer))
            goto fail;
    }
    free(head.data);
    return 0;

fail:
    free(head.data);
    return rc;
}

void stele_http_response_free(stele_http_response *resp)
{
    if (!resp)
        return;
    free(resp->headers);
    free(resp->body);
    memset(resp, 0, sizeof(*resp));
}

int stele_http_response_header(const stele_http_response *resp, const char *name, char *buf,
                               size_t cap)
{
    const char *value = NULL;
    size_t value_len = 0;

    if (buf && cap > 0)
        buf[0] = '\0';
    if (!resp || !name || !buf || cap == 0)
        return -EINVAL;
    const char *cursor = resp->headers ? resp->headers : "";
    if (!header_next(&cursor, name, &value, &value_len))
        return -ENOENT;
    if (value_len >= cap)
        return -ERANGE;
    memcpy(buf, value, value_len);
    buf[value_len] = '\0';
    return 0;
}
