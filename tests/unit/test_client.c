/*
 * test_client.c — the HTTP/1.1 client (src/client/http_client.c) against a scripted
 * server.
 *
 * The server is a thread in this process on 127.0.0.1:0 speaking raw sockets: for each
 * request it reads (head, then a Content-Length body) it sends the next scripted reply
 * byte for byte, optionally waits first, closes afterwards, or closes without
 * answering. Each test checks both what the client returned and what the server saw
 * (the exact request bytes, how many connections were opened), so keep-alive reuse and
 * the reconnect-once rule are observed from the outside.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "stele/client.h"

/* How often the server thread looks at its stop flag while waiting. */
#define SERVER_POLL_MS 20
/* Largest request the scripted server keeps for inspection. */
#define SERVER_MAX_REQUEST 16384

typedef struct {
    const char *response; /* sent after the request; NULL: close without answering */
    bool close_after;     /* close the connection after answering */
    int delay_ms;         /* wait this long before answering */
} scripted_reply;

typedef struct {
    int listen_fd;
    uint16_t port;
    pthread_t thread;
    const scripted_reply *replies;
    size_t reply_count;
    atomic_bool stop;
    pthread_mutex_t lock; /* guards the fields below */
    size_t requests_seen;
    size_t connections_accepted;
    char last_request[SERVER_MAX_REQUEST + 1];
    size_t last_request_len;
} test_server;

/* ---- scripted server ----------------------------------------------------------- */

/* Waits for fd to become readable, checking the stop flag. 1 ready, 0 stopped. */
static int server_wait_readable(test_server *s, int fd)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    while (!atomic_load(&s->stop)) {
        if (poll(&pfd, 1, SERVER_POLL_MS) > 0)
            return 1;
    }
    return 0;
}

static size_t content_length_of(const char *head)
{
    const char *p = head;
    while ((p = strchr(p, '\n')) != NULL) {
        p++;
        if (strncasecmp(p, "Content-Length:", 15) == 0)
            return (size_t)strtoul(p + 15, NULL, 10);
    }
    return 0;
}

/* Reads one request (head and Content-Length body) into buf. Its length, or 0 at end
 * of stream or on stop. */
static size_t server_read_request(test_server *s, int fd, char *buf)
{
    size_t len = 0;
    size_t total = 0;
    for (;;) {
        if (!server_wait_readable(s, fd))
            return 0;
        ssize_t n = recv(fd, buf + len, SERVER_MAX_REQUEST - len, 0);
        if (n <= 0)
            return 0;
        len += (size_t)n;
        buf[len] = '\0';
        char *end = strstr(buf, "\r\n\r\n");
        if (end && total == 0)
            total = (size_t)(end + 4 - buf) + content_length_of(buf);
        if (total > 0 && len >= total)
            return len;
        if (len == SERVER_MAX_REQUEST)
            return 0;
    }
}

static void server_send_all(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
        if (n <= 0)
            return; /* the client went away: the test will say what it saw */
        data += n;
        len -= (size_t)n;
    }
}

static void server_serve_connection(test_server *s, int fd)
{
    static char request[SERVER_MAX_REQUEST + 1];
    for (;;) {
        size_t len = server_read_request(s, fd, request);
        if (len == 0)
            return;
        pthread_mutex_lock(&s->lock);
        size_t index = s->requests_seen++;
        memcpy(s->last_request, request, len + 1);
        s->last_request_len = len;
        pthread_mutex_unlock(&s->lock);
        if (index >= s->reply_count)
            return;
        const scripted_reply *reply = &s->replies[index];
        if (reply->delay_ms > 0)
            usleep((useconds_t)reply->delay_ms * 1000);
        if (!reply->response)
            return;
        server_send_all(fd, reply->response, strlen(reply->response));
        if (reply->close_after)
            return;
    }
}

static void *server_main(void *arg)
{
    test_server *s = arg;
    while (server_wait_readable(s, s->listen_fd)) {
        int fd = accept(s->listen_fd, NULL, NULL);
        if (fd < 0)
            continue;
        pthread_mutex_lock(&s->lock);
        s->connections_accepted++;
        pthread_mutex_unlock(&s->lock);
        server_serve_connection(s, fd);
        close(fd);
    }
    return NULL;
}

/* Listens on the loopback address of `family`; false if this host has none. */
static bool server_start_on(test_server *s, int family, const scripted_reply *replies, size_t count)
{
    struct sockaddr_storage addr;
    socklen_t addr_len = 0;
    memset(s, 0, sizeof(*s));
    memset(&addr, 0, sizeof(addr));
    s->replies = replies;
    s->reply_count = count;
    atomic_init(&s->stop, false);
    if (family == AF_INET6) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&addr;
        in6->sin6_family = AF_INET6;
        in6->sin6_addr = in6addr_loopback;
        addr_len = sizeof(*in6);
    } else {
        struct sockaddr_in *in = (struct sockaddr_in *)&addr;
        in->sin_family = AF_INET;
        in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        addr_len = sizeof(*in);
    }
    s->listen_fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s->listen_fd < 0)
        return false;
    if (bind(s->listen_fd, (struct sockaddr *)&addr, addr_len) != 0) {
        close(s->listen_fd);
        return false;
    }
    assert_int_equal(listen(s->listen_fd, 8), 0);
    assert_int_equal(getsockname(s->listen_fd, (struct sockaddr *)&addr, &addr_len), 0);
    s->port = ntohs(family == AF_INET6 ? ((struct sockaddr_in6 *)&addr)->sin6_port
                                       : ((struct sockaddr_in *)&addr)->sin_port);
    assert_int_equal(pthread_mutex_init(&s->lock, NULL), 0);
    assert_int_equal(pthread_create(&s->thread, NULL, server_main, s), 0);
    return true;
}

static void server_start(test_server *s, const scripted_reply *replies, size_t count)
{
    assert_true(server_start_on(s, AF_INET, replies, count));
}

static void server_stop(test_server *s)
{
    atomic_store(&s->stop, true);
    assert_int_equal(pthread_join(s->thread, NULL), 0);
    close(s->listen_fd);
    pthread_mutex_destroy(&s->lock);
}

static size_t server_connections(test_server *s)
{
    pthread_mutex_lock(&s->lock);
    size_t n = s->connections_accepted;
    pthread_mutex_unlock(&s->lock);
    return n;
}

static size_t server_requests(test_server *s)
{
    pthread_mutex_lock(&s->lock);
    size_t n = s->requests_seen;
    pthread_mutex_unlock(&s->lock);
    return n;
}

static stele_http_client *client_for(const test_server *s)
{
    char url[64];
    stele_http_client *c = NULL;
    snprintf(url, sizeof(url), "http://127.0.0.1:%u", (unsigned)s->port);
    assert_int_equal(stele_http_client_create(url, &c), 0);
    stele_http_client_set_timeout_ms(c, 5000);
    return c;
}

static void expect_get(stele_http_client *c, int status, const char *body)
{
    stele_http_response resp;
    int rc = stele_http_request(c, "GET", "/x", NULL, NULL, 0, &resp);
    if (rc != 0)
        fail_msg("GET: expected 0, got %d (%s)", rc, strerror(-rc));
    assert_int_equal(resp.status, status);
    assert_string_equal((const char *)resp.body, body);
    assert_int_equal(resp.body_len, strlen(body));
    stele_http_response_free(&resp);
}

static void expect_get_fails(stele_http_client *c, int expected)
{
    stele_http_response resp;
    int rc = stele_http_request(c, "GET", "/x", NULL, NULL, 0, &resp);
    if (rc != expected)
        fail_msg("GET: expected %d (%s), got %d (%s)", expected, strerror(-expected), rc,
                 strerror(-rc));
    assert_null(resp.body);
    assert_null(resp.headers);
    stele_http_response_free(&resp);
}

#define REPLY_COUNT(r) (sizeof(r) / sizeof((r)[0]))

/* ---- URL ----------------------------------------------------------------------- */

static void test_url_parsing(void **state)
{
    (void)state;
    static const char *const good[] = {
        "http://127.0.0.1:7400",        "http://127.0.0.1:7400/", "http://localhost:1/api/prefix",
        "HTTP://example.com",           "http://[::1]:7400",      "http://[::ffff:127.0.0.1]:80/",
        "http://my-host_1.local:65535",
    };
    static const char *const bad[] = {
        "",
        "https://x:1",
        "http://",
        "http://:80",
        "http://h:0",
        "http://h:65536",
        "http://h:123456",
        "http://u@h:1",
        "http://h:1?x",
        "http://[::1",
        "http://[zz]:1",
        "http://[]:1",
        "ftp://h:1",
        "http://h:/",
        "http://h:1x",
        "http://h h:1",
        "127.0.0.1:7400",
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        stele_http_client *c = NULL;
        int rc = stele_http_client_create(good[i], &c);
        if (rc != 0)
            fail_msg("URL \"%s\": expected 0, got %d", good[i], rc);
        stele_http_client_destroy(c);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        stele_http_client *c = (stele_http_client *)&c; /* must be reset to NULL */
        int rc = stele_http_client_create(bad[i], &c);
        if (rc != -EINVAL)
            fail_msg("URL \"%s\": expected -EINVAL, got %d", bad[i], rc);
        assert_null(c);
    }
    stele_http_client_destroy(NULL);
}

/* An IPv6 literal is connected to without brackets and named with them in Host. */
static void test_ipv6_literal(void **state)
{
    (void)state;
    static const scripted_reply replies[] = {
        {.response = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nv6"},
    };
    test_server s;
    if (!server_start_on(&s, AF_INET6, replies, REPLY_COUNT(replies)))
        skip(); /* no IPv6 loopback here */
    char url[64];
    snprintf(url, sizeof(url), "http://[::1]:%u/ignored/prefix", (unsigned)s.port);
    stele_http_client *c = NULL;
    assert_int_equal(stele_http_client_create(url, &c), 0);
    expect_get(c, 200, "v6");
    stele_http_client_destroy(c);
    server_stop(&s);
    char expected[128];
    snprintf(expected, sizeof(expected), "GET /x HTTP/1.1\r\nHost: [::1]:%u\r\n\r\n",
             (unsigned)s.port);
    assert_string_equal(s.last_request, expected);
}

/* ---- framing ------------------------------------------------------------------- */

static void test_content_length_response(void **state)
{
    (void)state;
    static const scripted_reply replies[] = {
        {.response = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Thing:  two words \r\n"
                     "Content-Length: 5\r\n\r\nhello"},
    };
    test_server s;
    server_start(&s, replies, REPLY_COUNT(replies));
    stele_http_client *c = client_for(&s);

    const char *const headers[] = {"Authorization: Token abc", "Content-Type: text/plain", NULL};
    stele_http_response resp;
    assert_int_equal(
        stele_http_request(c, "POST", "/api/v2/write?precision=s", headers, "m f=1 1", 7, &resp),
        0);
    assert_int_equal(resp.status, 200);
    assert_int_equal(resp.body_len, 5);
    assert_string_equal((const char *)resp.body, "hello");
    char value[32];
    assert_int_equal(stele_http_response_header(&resp, "content-type", value, sizeof(value)), 0);
    assert_string_equal(value, "text/plain");
    assert_int_equal(stele_http_response_header(&resp, "X-THING", value, sizeof(value)), 0);
    assert_string_equal(value, "two words");
    assert_int_equal(stele_http_response_header(&resp, "X-Thing", value, 4), -ERANGE);
    assert_int_equal(stele_http_response_header(&resp, "X-Missing", value, sizeof(value)), -ENOENT);
    assert_int_equal(stele_http_response_header(&resp, "Content", value, sizeof(value)), -ENOENT);
    stele_http_response_free(&resp);
    stele_http_response_free(&resp); /* twice is harmless */

    char expected[256];
    snprintf(expected, sizeof(expected),
             "POST /api/v2/write?precision=s HTTP/1.1\r\nHost: 127.0.0.1:%u\r\n"
             "Content-Length: 7\r\nAuthorization: Token abc\r\nContent-Type: text/plain\r\n"
             "\r\nm f=1 1",
             (unsigned)s.port);
    stele_http_client_destroy(c);
    server_stop(&s);
    assert_string_equal(s.last_request, expected);
}

static void test_chunked_response(void **state)
{
    (void)state;
    static const scripted_reply replies[] = {
        {.response = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                     "5\r\nhello\r\n6;name=value\r\n world\r\nA\r\n, chunked!\r\n0\r\n"
                     "Trailer-Field: x\r\n\r\n"},
        {.response = "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"},
        {.response = "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext"},
    };
    test_server s;
    server_start(&s, replies, REPLY_COUNT(replies));
    stele_http_client *c = client_for(&s);
    expect_get(c, 200, "hello world, chunked!");
    expect_get(c, 200, "");
    expect_get(c, 200, "next"); /* the chunked framing left the stream in step */
    assert_int_equal(server_connections(&s), 1);
    stele_http_client_destroy(c);
    server_stop(&s);
}

static void test_no_body_statuses_and_keep_alive(void **state)
{
    (void)state;
    static const scripted_reply replies[] = {
        {.response = "HTTP/1.1 204 No Content\r\n\r\n"},
        {.response = "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n"},
        {.response = "HTTP/1.1 200 OK\r\nContent-Length: 123\r\n\r\n"}, /* answers a HEAD */
        {.response = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"},
        {.response = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"},
    };
    test_server s;
    server_start(&s, replies, REPLY_COUNT(replies));
    stele_http_client *c = client_for(&s);
    stele_http_response resp;

    expect_get(c, 204, "");
    expect_get(c, 304, "");
    assert_int_equal(stele_http_request(c, "HEAD", "/ping", NULL, NULL, 0, &resp), 0);
    assert_int_equal(resp.status, 200);
    assert_int_equal(resp.body_len, 0);
    assert_non_null(resp.body);
    assert_string_equal((const char *)resp.body, "");
    stele_http_response_free(&resp);
    expect_get(c, 200, "ok"); /* after an interim 100 */
    expect_get(c, 200, "");
    assert_int_equal(server_connections(&s), 1);
    assert_int_equal(server_requests(&s), 5);
    stele_http_client_destroy(c);
    server_stop(&s);
}

static void test_http10_and_connection_close(void **state)
{
    (void)state;
    static const scripted_reply replies[] = {
        {.response = "HTTP/1.0 200 OK\r\n\r\nold style, until close", .close_after = true},
        {.response = "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\nbye"},
        {.response = "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nka"},
        {.response = "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlast"},
    };
    test_server s;
    server_start(&s, replies, REPLY_COUNT(replies));
    stele_http_client *c = client_for(&s);
    expect_get(c, 200, "old style, until close");
    expect_get(c, 200, "bye"); /* on a new connection */
    /* The server kept the connection open after "Connection: close"; the client did
     * not, so the next request opens a third. */
    expect_get(c, 200, "ka");
    expect_get(c, 200, "last"); /* HTTP/1.0 keep-alive was honoured */
    assert_int_equal(server_connections(&s), 3);
    stele_http_client_destroy(c);
    server_stop(&s);
}

/* ---- reconnecting ---------------------------------------------------------------- */

static void test_server_closes_idle_connection(void **state)
{
    (void)state;
    static const scripted_reply replies[] = {
        {.response = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst", .close_after = true},
        {.response = "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond"},
    };
    test_server s;
    server_start(&s, replies, REPLY_COUNT(replies));
    stele_http_client *c = client_for(&s);
    expect_get(c, 200, "first");
    usleep(50 * 1000); /* the close reaches the client while it is idle */
    expect_get(c, 200, "second");
    assert_int_equal(server_connections(&s), 2);
    assert_int_equal(server_requests(&s), 2);
    stele_http_client_destroy(c);
    server_stop(&s);
}

static void test_resend_once_when_closed_before_answer(void **state)
{
    (void)state;
    static const scripted_reply replies[] = {
        {.response = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst"},
        {.response = NULL}, /* reads the request, closes without a byte */
        {.response = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nagain"},
    };
    test_server s;
    server_start(&s, replies, REPLY_COUNT(replies));
    stele_http_client *c = client_for(&s);
    expect_get(c, 200, "first");
    expect_get(c, 200, "again");
    assert_int_equal(server_connections(&s), 2);
    assert_int_equal(server_requests(&s), 3);
    stele_http_client_destroy(c);
    server_stop(&s);
}

static void test_resend_only_once(void **state)
{
    (void)state;
    static const scripted_reply replies[] = {
        {.response = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst"},
        {.response = NULL},
        {.response = NULL},
        {.response = NULL}, /* a fresh connection that closes is not retried */
    };
    test_server s;
    server_start(&s, replies, REPLY_COUNT(replies));
    stele_http_client *c = client_for(&s);
    expect_get(c, 200, "first");
    expect_get_fails(c, -ECONNRESET);
    assert_int_equal(server_requests(&s), 3);
    expect_get_fails(c, -ECONNRESET);
    assert_int_equal(server_requests(&s), 4);
    assert_int_equal(server_connections(&s), 3);
    stele_http_client_destroy(c);
    server_stop(&s);
}

/* A response that had begun is never resent: the request may have taken effect. */
static void test_no_resend_after_response_bytes(void **state)
{
    (void)state;
    static const scripted_reply replies[] = {
        {.response = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst"},
        {.response = "HTTP/1.1 200 OK\r\nContent-Le", .close_after = true},
        {.response = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nnever"},
    };
    test_server s;
    server_start(&s, replies, REPLY_COUNT(replies));
    stele_http_client *c = client_for(&s);
    expect_get(c, 200, "first");
    expect_get_fails(c, -EPROTO);
    assert_int_equal(server_requests(&s), 2);
    stele_http_client_destroy(c);
    server_stop(&s);
}

/* ---- limits and malformed responses ---------------------------------------------- */

static void test_oversize_body(void **state)
{
    (void)state;
    static const scripted_reply replies[] = {
        {.response = "HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n0123456789A"},
        {.response = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                     "6\r\n012345\r\n5\r\n6789A\r\n0\r\n\r\n"},
        {.response = "HTTP/1.0 200 OK\r\n\r\n0123456789A", .close_after = true},
        {.response = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789"},
    };
    test_server s;
    server_start(&s, replies, REPLY_COUNT(replies));
    stele_http_client *c = client_for(&s);
    stele_http_client_set_max_body(c, 10);
    expect_get_fails(c, -EMSGSIZE);
    expect_get_fails(c, -EMSGSIZE);
    expect_get_fails(c, -EMSGSIZE);
    expect_get(c, 200, "0123456789"); /* exactly the limit */
    stele_http_client_destroy(c);
    server_stop(&s);
}

static void test_oversize_head(void **state)
{
    (void)state;
    enum { FILLER = 70 * 1024 }; /* over the 64 KiB head limit */
    char *big = malloc(FILLER + 128);
    assert_non_null(big);
    int n = snprintf(big, 128, "HTTP/1.1 200 OK\r\nX-Filler: ");
    memset(big + n, 'a', FILLER);
    strcpy(big + n + FILLER, "\r\nContent-Length: 0\r\n\r\n");
    scripted_reply replies[] = {{.response = big}};
    test_server s;
    server_start(&s, replies, REPLY_COUNT(replies));
    stele_http_client *c = client_for(&s);
    expect_get_fails(c, -EMSGSIZE);
    stele_http_client_destroy(c);
    server_stop(&s);
    free(big);
}

static void test_malformed_responses(void **state)
{
    (void)state;
    static const char *const garbage[] = {
        "FOO/1.1 200 OK\r\n\r\n",
        "HTTP/2.0 200 OK\r\n\r\n",
        "HTTP/1.1 20 OK\r\n\r\n",
        "HTTP/1.1 2000 OK\r\n\r\n",
        "HTTP/1.1 099 Low\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\n\r\n",
        "HTTP/1.1 200 OK\r\nNoColon\r\n\r\n",
        "HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n folded\r\n\r\nhello",
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 12345678901234567890\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
        "HTTP/1.1 200 OK\r\nContent-Le",
    };
    enum { GARBAGE_COUNT = sizeof(garbage) / sizeof(garbage[0]) };
    scripted_reply replies[GARBAGE_COUNT];
    for (size_t i = 0; i < GARBAGE_COUNT; i++)
        replies[i] = (scripted_reply){.response = garbage[i], .close_after = true};
    test_server s;
    server_start(&s, replies, GARBAGE_COUNT);
    stele_http_client *c = client_for(&s);
    for (size_t i = 0; i < GARBAGE_COUNT; i++) {
        stele_http_response resp;
        int rc = stele_http_request(c, "GET", "/x", NULL, NULL, 0, &resp);
        if (rc != -EPROTO)
            fail_msg("reply %zu (%.40s...): expected -EPROTO, got %d", i, garbage[i], rc);
        assert_null(resp.body);
    }
    assert_int_equal(server_connections(&s), GARBAGE_COUNT);
    stele_http_client_destroy(c);
    server_stop(&s);
}

static void test_timeout(void **state)
{
    (void)state;
    static const scripted_reply replies[] = {
        {.response = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", .delay_ms = 1000},
    };
    test_server s;
    server_start(&s, replies, REPLY_COUNT(replies));
    stele_http_client *c = client_for(&s);
    stele_http_client_set_timeout_ms(c, 100);
    struct timespec start, end;
    clock_gettime(CLOCK_MONOTONIC, &start);
    expect_get_fails(c, -ETIMEDOUT);
    clock_gettime(CLOCK_MONOTONIC, &end);
    long elapsed_ms = (end.tv_sec - start.tv_sec) * 1000 + (end.tv_nsec - start.tv_nsec) / 1000000;
    /* Well before the answer would have come: the client gave up on its own. */
    assert_true(elapsed_ms >= 90 && elapsed_ms < 900);
    stele_http_client_destroy(c);
    server_stop(&s);
}

static void test_connection_refused(void **state)
{
    (void)state;
    /* A port that was just free: bind, read it, close. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = 0};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
    socklen_t len = sizeof(addr);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&addr, &len), 0);
    close(fd);

    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%u/", (unsigned)ntohs(addr.sin_port));
    stele_http_client *c = NULL;
    assert_int_equal(stele_http_client_create(url, &c), 0);
    expect_get_fails(c, -ECONNREFUSED);
    stele_http_client_destroy(c);
}

static void test_request_arguments_checked(void **state)
{
    (void)state;
    static const scripted_reply replies[] = {
        {.response = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"},
    };
    test_server s;
    server_start(&s, replies, REPLY_COUNT(replies));
    stele_http_client *c = client_for(&s);
    stele_http_response resp;
    const char *const injected[] = {"X-A: 1\r\nX-B: 2", NULL};
    const char *const framing[] = {"Content-Length: 5", NULL};
    const char *const host[] = {"host: elsewhere", NULL};
    const char *const nameless[] = {": value", NULL};
    assert_int_equal(stele_http_request(c, "GET", "/", injected, NULL, 0, &resp), -EINVAL);
    assert_int_equal(stele_http_request(c, "GET", "/", framing, NULL, 0, &resp), -EINVAL);
    assert_int_equal(stele_http_request(c, "GET", "/", host, NULL, 0, &resp), -EINVAL);
    assert_int_equal(stele_http_request(c, "GET", "/", nameless, NULL, 0, &resp), -EINVAL);
    assert_int_equal(stele_http_request(c, "GET", "/a b", NULL, NULL, 0, &resp), -EINVAL);
    assert_int_equal(stele_http_request(c, "G T", "/", NULL, NULL, 0, &resp), -EINVAL);
    assert_int_equal(stele_http_request(c, "POST", "/", NULL, NULL, 3, &resp), -EINVAL);
    assert_int_equal(server_requests(&s), 0); /* nothing was sent */
    /* A GET carries no Content-Length, a DELETE neither. */
    assert_int_equal(stele_http_request(c, "GET", "/ok", NULL, NULL, 0, &resp), 0);
    stele_http_response_free(&resp);
    stele_http_client_destroy(c);
    server_stop(&s);
    char expected[128];
    snprintf(expected, sizeof(expected), "GET /ok HTTP/1.1\r\nHost: 127.0.0.1:%u\r\n\r\n",
             (unsigned)s.port);
    assert_string_equal(s.last_request, expected);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_url_parsing),
        cmocka_unit_test(test_ipv6_literal),
        cmocka_unit_test(test_content_length_response),
        cmocka_unit_test(test_chunked_response),
        cmocka_unit_test(test_no_body_statuses_and_keep_alive),
        cmocka_unit_test(test_http10_and_connection_close),
        cmocka_unit_test(test_server_closes_idle_connection),
        cmocka_unit_test(test_resend_once_when_closed_before_answer),
        cmocka_unit_test(test_resend_only_once),
        cmocka_unit_test(test_no_resend_after_response_bytes),
        cmocka_unit_test(test_oversize_body),
        cmocka_unit_test(test_oversize_head),
        cmocka_unit_test(test_malformed_responses),
        cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_connection_refused),
        cmocka_unit_test(test_request_arguments_checked),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
