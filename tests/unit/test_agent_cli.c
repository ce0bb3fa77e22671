/*
 * test_agent_cli.c — `stele agent` (src/cli/cmd_agent.c), the real program, against a
 * fake device server in this process.
 *
 * The program is build/stele next to this test's executable (skipped when absent). The
 * fake server is a thread on 127.0.0.1:0 that implements just enough of the device API
 * with the library's own checks — enrollment proofs verified, frames parsed and verified
 * with the enrolled key, counters checked for replay, rotation requests parsed and
 * verified with the current key — and can be told to lose its next answer. So each
 * test checks both what the program printed and what reached the server, and that what
 * the program stored is right: frames verify with the key `keygen` printed, counters
 * rise across runs, a rotation retried after a lost answer resends the same bytes, and
 * frames sealed after a rotation verify with the new key.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <sodium.h>

#include "stele/frame.h"
#include "stele/keyproof.h"

extern char **environ;

#define TEST_TOKEN "sen_00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
/* Largest request the fake server reads: a batch of 256 small frames is far below. */
#define SERVER_MAX_REQUEST ((size_t)4 << 20)
#define SERVER_POLL_MS 20

static char stele_bin[4200];
static char work_dir[4096];
static uint8_t scratch[STELE_FRAME_SCRATCH_BYTES];

/* ---- running the program ------------------------------------------------------------ */

typedef struct {
    int rc;
    char *out; /* NUL-terminated (binary output may hold NULs: use out_len) */
    size_t out_len;
    char *err;
} run_result;

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    if (len)
        *len = (size_t)n;
    return buf;
}

/* Runs build/stele with args (NULL-terminated), stdin from stdin_path (NULL: /dev/null). */
static run_result run_stele(const char *stdin_path, ...)
{
    char *argv[64];
    int argc = 0;
    argv[argc++] = stele_bin;
    va_list ap;
    va_start(ap, stdin_path);
    const char *a;
    while ((a = va_arg(ap, const char *)) != NULL) {
        assert_true(argc < 63);
        argv[argc++] = (char *)a;
    }
    va_end(ap);
    argv[argc] = NULL;
    char out_path[4200], err_path[4200];
    snprintf(out_path, sizeof(out_path), "%s/run.out", work_dir);
    snprintf(err_path, sizeof(err_path), "%s/run.err", work_dir);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, stdin_path ? stdin_path : "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_addopen(&fa, 2, err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    pid_t pid;
    assert_int_equal(posix_spawn(&pid, stele_bin, &fa, NULL, argv, environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    run_result r = {.rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status)};
    r.out = slurp(out_path, &r.out_len);
    r.err = slurp(err_path, NULL);
    return r;
}

static void run_free(run_result *r)
{
    free(r->out);
    free(r->err);
}

/* Exit rc, nothing on stdout, one line "stele: <what>: <why>" on stderr. */
static void expect_error(const run_result *r, int rc, const char *what)
{
    char prefix[128];
    snprintf(prefix, sizeof(prefix), "stele: %s: ", what);
    if (r->rc != rc || r->out_len != 0 || strncmp(r->err, prefix, strlen(prefix)) != 0 ||
        strchr(r->err, '\n') != r->err + strlen(r->err) - 1)
        fail_msg("expected exit %d and one line \"%s…\" on stderr only; got exit %d, stdout "
                 "%zu bytes, stderr \"%s\"",
                 rc, prefix, r->rc, r->out_len, r->err);
}

static void expect_ok(const run_result *r, const char *what)
{
    if (r->rc != 0)
        fail_msg("%s: expected exit 0, got %d with stderr \"%s\"", what, r->rc, r->err);
}

/* ---- the fake server ---------------------------------------------------------------- */

typedef struct {
    int listen_fd;
    uint16_t port;
    char url[64];
    pthread_t thread;
    atomic_bool stop;
    pthread_mutex_t lock; /* guards everything below */
    /* the device registry of one device */
    bool enrolled;
    char device[65];
    uint32_t key_id;
    uint8_t pk[32];
    bool has_next;
    uint32_t next_id;
    uint8_t next_pk[32];
    uint64_t seen[4096]; /* counters accepted (key id in the top bits) */
    size_t nseen;
    /* observations and scripted behaviour */
    size_t requests, frame_requests, frames, max_frames_per_request;
    int lose_next; /* > 0: answer the next requests 503 (the answer is "lost") */
    bool refuse_enroll;
    uint8_t last_rotation[STELE_ROTATION_MAX_BYTES];
    size_t last_rotation_len;
    char last_content_type[128];
} fake_server;

static bool wait_readable(fake_server *s, int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    while (!atomic_load(&s->stop))
        if (poll(&p, 1, SERVER_POLL_MS) > 0)
            return true;
    return false;
}

static void send_all(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
        if (n <= 0)
            return;
        data += n;
        len -= (size_t)n;
    }
}

static void respond(int fd, int status, const char *body)
{
    char head[256];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: "
                     "%zu\r\n\r\n",
                     status, strlen(body));
    send_all(fd, head, (size_t)n);
    send_all(fd, body, strlen(body));
}

static void handle_enroll(fake_server *s, int fd, const char *body, size_t len)
{
    json_t *j = json_loadb(body, len, 0, NULL);
    const char *device = json_string_value(json_object_get(j, "device"));
    const char *token = json_string_value(json_object_get(j, "token"));
    const char *alg = json_string_value(json_object_get(j, "algorithm"));
    const char *pk_hex = json_string_value(json_object_get(j, "public_key"));
    const char *proof_hex = json_string_value(json_object_get(j, "proof"));
    const char *firmware = json_string_value(json_object_get(j, "firmware"));
    uint8_t pk[32], proof[64];
    size_t n1 = 0, n2 = 0;
    if (s->refuse_enroll) {
        respond(fd, 403,
                "{\"code\":\"forbidden\",\"message\":\"enrollment token invalid, used or "
                "expired\"}");
    } else if (!device || !token || !alg || strcmp(alg, "ed25519") != 0 || !pk_hex || !proof_hex ||
               !firmware || strcmp(token, TEST_TOKEN) != 0 ||
               sodium_hex2bin(pk, 32, pk_hex, strlen(pk_hex), NULL, &n1, NULL) != 0 || n1 != 32 ||
               sodium_hex2bin(proof, 64, proof_hex, strlen(proof_hex), NULL, &n2, NULL) != 0 ||
               n2 != 64 ||
               stele_keyproof_enroll_verify(device, strlen(device), token, strlen(token), 1, pk,
                                            proof) != 0) {
        respond(fd, 400, "{\"code\":\"invalid\",\"message\":\"bad enrollment\"}");
    } else {
        s->enrolled = true;
        snprintf(s->device, sizeof(s->device), "%s", device);
        s->key_id = 7; /* not 1: the agent must store what the server says */
        memcpy(s->pk, pk, 32);
        char answer[256];
        snprintf(answer, sizeof(answer),
                 "{\"device\":\"%s\",\"tenant\":\"t1\",\"key_id\":%u,\"state\":\"active\"}", device,
                 s->key_id);
        respond(fd, 200, answer);
    }
    json_decref(j);
}

static bool seen_before(fake_server *s, uint32_t key_id, uint64_t counter)
{
    uint64_t tag = (uint64_t)key_id << 48 | counter;
    for (size_t i = 0; i < s->nseen; i++)
        if (s->seen[i] == tag)
            return true;
    assert_true(s->nseen < sizeof(s->seen) / sizeof(s->seen[0]));
    s->seen[s->nseen++] = tag;
    return false;
}

static void handle_frames(fake_server *s, int fd, const uint8_t *body, size_t len)
{
    size_t cap = 64 + len * 2 + 4096, n = 0, at = 0, count = 0;
    char *out = malloc(cap);
    assert_non_null(out);
    n += (size_t)snprintf(out, cap, "{\"results\":[");
    s->frame_requests++;
    while (at < len) {
        size_t fl = 0;
        if (stele_frame_span(body + at, len - at, &fl) != 0)
            fl = 0;
        stele_frame f;
        const char *status = "malformed";
        uint64_t counter = 0;
        if (fl && stele_frame_parse(body + at, fl, &f, NULL) == 0) {
            counter = f.counter;
            const uint8_t *key = NULL;
            if (s->enrolled && f.key_id == s->key_id)
                key = s->pk;
            else if (s->has_next && f.key_id == s->next_id)
                key = s->next_pk;
            if (!key || f.device_id_len != strlen(s->device) ||
                memcmp(f.device_id, s->device, f.device_id_len) != 0 ||
                stele_frame_verify(&f, key, scratch, sizeof(scratch)) != 0) {
                status = "bad_signature";
            } else {
                status = seen_before(s, f.key_id, f.counter) ? "duplicate" : "accepted";
                if (key == s->next_pk) { /* the first frame under the new key */
                    s->key_id = s->next_id;
                    memcpy(s->pk, s->next_pk, 32);
                    s->has_next = false;
                }
            }
        }
        n += (size_t)snprintf(out + n, cap - n,
                              "%s{\"device\":\"%s\",\"counter\":%llu,"
                              "\"status\":\"%s\"}",
                              count ? "," : "", s->device, (unsigned long long)counter, status);
        count++;
        if (!fl)
            break;
        at += fl;
    }
    snprintf(out + n, cap - n, "]}");
    s->frames += count;
    if (count > s->max_frames_per_request)
        s->max_frames_per_request = count;
    respond(fd, 200, out);
    free(out);
}

static void handle_rotate(fake_server *s, int fd, const uint8_t *body, size_t len)
{
    stele_keyproof_rotation r;
    if (len <= sizeof(s->last_rotation)) {
        memcpy(s->last_rotation, body, len);
        s->last_rotation_len = len;
    }
    if (stele_keyproof_rotation_parse(body, len, &r, NULL) != 0 || r.old_key_id != s->key_id ||
        stele_keyproof_rotation_verify(&r, s->pk) != 0 ||
        (s->has_next && memcmp(s->next_pk, r.new_public_key, 32) != 0)) {
        respond(fd, 403, "{\"code\":\"forbidden\",\"message\":\"rotation refused\"}");
        return;
    }
    s->has_next = true;
    s->next_id = r.new_key_id;
    memcpy(s->next_pk, r.new_public_key, 32);
    char answer[256];
    snprintf(answer, sizeof(answer),
             "{\"device\":\"%s\",\"key_id\":%u,\"overlap_deadline\":\"2025-11-25T16:00:00Z\"}",
             s->device, r.new_key_id);
    respond(fd, 200, answer);
}

static void serve_connection(fake_server *s, int fd)
{
    char *buf = malloc(SERVER_MAX_REQUEST + 1);
    assert_non_null(buf);
    size_t have = 0;
    for (;;) {
        /* Read one request: head, then Content-Length bytes. */
        char *end = NULL;
        size_t total = 0;
        for (;;) {
            buf[have] = '\0';
            end = strstr(buf, "\r\n\r\n");
            if (end) {
                const char *cl = strcasestr(buf, "\r\nContent-Length:");
                total = (size_t)(end + 4 - buf) + (cl && cl < end ? strtoul(cl + 17, NULL, 10) : 0);
                if (have >= total)
                    break;
            }
            if (have == SERVER_MAX_REQUEST || !wait_readable(s, fd))
                goto done;
            ssize_t n = recv(fd, buf + have, SERVER_MAX_REQUEST - have, 0);
            if (n <= 0)
                goto done;
            have += (size_t)n;
        }
        const uint8_t *body = (const uint8_t *)end + 4;
        size_t body_len = total - (size_t)(end + 4 - buf);
        pthread_mutex_lock(&s->lock);
        s->requests++;
        const char *ct = strcasestr(buf, "\r\nContent-Type: ");
        if (ct && ct < end) {
            const char *eol = strstr(ct + 2, "\r\n");
            snprintf(s->last_content_type, sizeof(s->last_content_type), "%.*s",
                     (int)(eol - (ct + 16)), ct + 16);
        }
        if (s->lose_next > 0) {
            s->lose_next--;
            if (!strncmp(buf, "POST /api/v1/rotate ", 20)) {
                /* The server did the work; only the answer is lost. */
                memcpy(s->last_rotation, body, body_len);
                s->last_rotation_len = body_len;
                stele_keyproof_rotation r;
                if (stele_keyproof_rotation_parse(body, body_len, &r, NULL) == 0 &&
                    stele_keyproof_rotation_verify(&r, s->pk) == 0) {
                    s->has_next = true;
                    s->next_id = r.new_key_id;
                    memcpy(s->next_pk, r.new_public_key, 32);
                }
            }
            respond(fd, 503, "{\"code\":\"unavailable\",\"message\":\"answer lost\"}");
        } else if (!strncmp(buf, "POST /api/v1/enroll ", 20)) {
            handle_enroll(s, fd, (const char *)body, body_len);
        } else if (!strncmp(buf, "POST /api/v1/frames ", 20)) {
            handle_frames(s, fd, body, body_len);
        } else if (!strncmp(buf, "POST /api/v1/rotate ", 20)) {
            handle_rotate(s, fd, body, body_len);
        } else {
            respond(fd, 404, "{\"code\":\"not_found\",\"message\":\"no such endpoint\"}");
        }
        pthread_mutex_unlock(&s->lock);
        memmove(buf, buf + total, have - total);
        have -= total;
    }
done:
    free(buf);
}

static void *server_main(void *arg)
{
    fake_server *s = arg;
    while (wait_readable(s, s->listen_fd)) {
        int fd = accept(s->listen_fd, NULL, NULL);
        if (fd < 0)
            continue;
        serve_connection(s, fd);
        close(fd);
    }
    return NULL;
}

static fake_server *server_start(void)
{
    fake_server *s = calloc(1, sizeof(*s));
    assert_non_null(s);
    struct sockaddr_in in = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(in);
    s->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(s->listen_fd >= 0);
    assert_int_equal(bind(s->listen_fd, (struct sockaddr *)&in, sizeof(in)), 0);
    assert_int_equal(listen(s->listen_fd, 16), 0);
    assert_int_equal(getsockname(s->listen_fd, (struct sockaddr *)&in, &alen), 0);
    s->port = ntohs(in.sin_port);
    snprintf(s->url, sizeof(s->url), "http://127.0.0.1:%u", (unsigned)s->port);
    atomic_init(&s->stop, false);
    assert_int_equal(pthread_mutex_init(&s->lock, NULL), 0);
    assert_int_equal(pthread_create(&s->thread, NULL, server_main, s), 0);
    return s;
}

static void server_stop(fake_server *s)
{
    atomic_store(&s->stop, true);
    assert_int_equal(pthread_join(s->thread, NULL), 0);
    close(s->listen_fd);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

/* ---- helpers -------------------------------------------------------------------------- */

static void state_path(char *buf, size_t cap, const char *name)
{
    snprintf(buf, cap, "%s/%s", work_dir, name);
}

static void keygen(const char *state, uint8_t pk[32])
{
    run_result r = run_stele(NULL, "agent", "keygen", "--state", state, NULL);
    expect_ok(&r, "keygen");
    size_t n = 0;
    assert_int_equal(r.out_len, 65);
    assert_int_equal(r.out[64], '\n');
    assert_int_equal(sodium_hex2bin(pk, 32, r.out, 64, NULL, &n, NULL), 0);
    assert_int_equal(n, 32);
    run_free(&r);
}

static void enroll(const char *state, fake_server *s)
{
    run_result r = run_stele(NULL, "agent", "enroll", "--state", state, "--device", "pump-7",
                             "--enroll-token", TEST_TOKEN, "--url", s->url, NULL);
    expect_ok(&r, "enroll");
    assert_string_equal(r.out, "device=pump-7 tenant=t1 key_id=7 state=active\n");
    run_free(&r);
}

/* Seals one frame and checks it: parses, verifies with pk, device, key id; returns its
 * counter. */
static uint64_t seal_and_check(const char *state, const char *points, const uint8_t pk[32],
                               uint32_t key_id, stele_frame_point *first)
{
    run_result r = run_stele(NULL, "agent", "seal", "--state", state, "--time",
                             "1764000000000000000", "--label", "site=a", points, NULL);
    expect_ok(&r, "seal");
    stele_frame f;
    const char *why = NULL;
    if (stele_frame_parse((const uint8_t *)r.out, r.out_len, &f, &why) != 0)
        fail_msg("seal wrote %zu bytes that do not parse: %s", r.out_len, why);
    assert_int_equal(stele_frame_verify(&f, pk, scratch, sizeof(scratch)), 0);
    assert_int_equal(f.key_id, key_id);
    assert_int_equal(f.device_id_len, 6);
    assert_memory_equal(f.device_id, "pump-7", 6);
    if (first) {
        size_t cursor = 0;
        assert_true(stele_frame_next_point(&f, &cursor, first));
        first->metric = NULL; /* views into the output, which is freed below */
        memset(first->labels, 0, sizeof(first->labels));
    }
    uint64_t c = f.counter;
    run_free(&r);
    return c;
}

/* ---- tests ---------------------------------------------------------------------------- */

static void test_help_and_usage_errors(void **state)
{
    (void)state;
    static const char *const subs[] = {"keygen", "enroll", "seal", "send", "rotate", "show"};
    run_result r = run_stele(NULL, "agent", "--help", NULL);
    expect_ok(&r, "agent --help");
    assert_int_equal(strncmp(r.out, "usage: stele agent", 18), 0);
    run_free(&r);
    for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++) {
        r = run_stele(NULL, "agent", subs[i], "--help", NULL);
        expect_ok(&r, subs[i]);
        assert_int_equal(strncmp(r.out, "usage: stele agent ", 19), 0);
        assert_string_equal(r.err, "");
        run_free(&r);
        r = run_stele(NULL, "agent", subs[i], NULL); /* no --state */
        char what[32];
        snprintf(what, sizeof(what), "agent %s", subs[i]);
        expect_error(&r, 2, what);
        run_free(&r);
        r = run_stele(NULL, "agent", subs[i], "--state", work_dir, "--bogus", NULL);
        expect_error(&r, 2, what);
        run_free(&r);
    }
    r = run_stele(NULL, "agent", "frobnicate", NULL);
    expect_error(&r, 2, "agent");
    run_free(&r);
    r = run_stele(NULL, "agent", "keygen", "--state", work_dir, "--device", "x", NULL);
    expect_error(&r, 2, "agent keygen"); /* an option of another subcommand */
    run_free(&r);
}

static void test_keygen_refuses_to_overwrite(void **state)
{
    (void)state;
    char dir[4200], path[4300];
    uint8_t pk[32], pk2[32];
    state_path(dir, sizeof(dir), "kg");
    keygen(dir, pk);
    struct stat sb;
    snprintf(path, sizeof(path), "%s/identity.0", dir);
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    assert_int_equal(stat(dir, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0700);
    run_result r = run_stele(NULL, "agent", "keygen", "--state", dir, NULL);
    expect_error(&r, 1, "agent keygen");
    run_free(&r);
    r = run_stele(NULL, "agent", "show", "--state", dir, NULL);
    expect_ok(&r, "show");
    char want[200];
    char hex[65];
    sodium_bin2hex(hex, sizeof(hex), pk, 32);
    snprintf(want, sizeof(want), "device=-\nkey_id=0\npublic_key=%s\n", hex);
    assert_string_equal(r.out, want);
    run_free(&r);
    r = run_stele(NULL, "agent", "keygen", "--state", dir, "--force", NULL);
    expect_ok(&r, "keygen --force");
    sodium_hex2bin(pk2, 32, r.out, 64, NULL, NULL, NULL);
    assert_memory_not_equal(pk, pk2, 32);
    run_free(&r);
    /* A damaged identity: refused, and keygen does not replace it without --force. */
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    fseek(f, 100, SEEK_SET);
    fputc(0x5a, f);
    fclose(f);
    snprintf(path, sizeof(path), "%s/identity.1", dir);
    f = fopen(path, "r+b");
    assert_non_null(f);
    fseek(f, 100, SEEK_SET);
    fputc(0x5a, f);
    fclose(f);
    r = run_stele(NULL, "agent", "show", "--state", dir, NULL);
    expect_error(&r, 1, "agent show");
    assert_non_null(strstr(r.err, "damaged"));
    run_free(&r);
    r = run_stele(NULL, "agent", "keygen", "--state", dir, NULL);
    expect_error(&r, 1, "agent keygen");
    assert_non_null(strstr(r.err, "damaged"));
    run_free(&r);
}

static void test_enroll_seal_send_rotate(void **state)
{
    (void)state;
    char dir[4200], frames_path[4300], lines_path[4300];
    uint8_t pk[32];
    fake_server *s = server_start();
    state_path(dir, sizeof(dir), "dev");
    keygen(dir, pk);

    /* Not enrolled: seal refuses. Bad enrollment arguments: usage errors. */
    run_result r = run_stele(NULL, "agent", "seal", "--state", dir, "x=1", NULL);
    expect_error(&r, 1, "agent seal");
    run_free(&r);
    r = run_stele(NULL, "agent", "enroll", "--state", dir, "--device", "pump 7", "--enroll-token",
                  TEST_TOKEN, "--url", s->url, NULL);
    expect_error(&r, 2, "agent enroll");
    run_free(&r);
    r = run_stele(NULL, "agent", "enroll", "--state", dir, "--device", "pump-7", "--enroll-token",
                  "sen_123", "--url", s->url, NULL);
    expect_error(&r, 2, "agent enroll");
    run_free(&r);
    /* Refused by the server: its message, exit 1, nothing stored. */
    s->refuse_enroll = true;
    r = run_stele(NULL, "agent", "enroll", "--state", dir, "--device", "pump-7", "--enroll-token",
                  TEST_TOKEN, "--url", s->url, NULL);
    expect_error(&r, 1, "agent enroll");
    assert_non_null(strstr(r.err, "HTTP 403: enrollment token invalid"));
    run_free(&r);
    s->refuse_enroll = false;
    enroll(dir, s); /* the server verified the proof */
    assert_true(s->enrolled);
    assert_memory_equal(s->pk, pk, 32);
    assert_string_equal(s->last_content_type, "application/json");
    r = run_stele(NULL, "agent", "enroll", "--state", dir, "--device", "pump-7", "--enroll-token",
                  TEST_TOKEN, "--url", s->url, NULL);
    expect_error(&r, 1, "agent enroll"); /* already enrolled */
    run_free(&r);

    /* seal: frames verify with the key keygen printed, counters rise by one per run. */
    stele_frame_point p;
    uint64_t c1 = seal_and_check(dir, "temp_c=21.5,rpm=1200", pk, 7, &p);
    assert_true(p.value == 21.5 && p.ts == INT64_C(1764000000000000000) && p.nlabels == 1);
    uint64_t c2 = seal_and_check(dir, "temp_c=nan", pk, 7, NULL);
    assert_int_equal(c2, c1 + 1);
    /* Bad input: refused, nothing on stdout, no counter used. */
    static const char *const bad[] = {"x", "1x=2", "a=notnum", "a=1,", "=1", "a=", "a=1,,b=2"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        r = run_stele(NULL, "agent", "seal", "--state", dir, bad[i], NULL);
        if (r.rc != 2)
            fail_msg("seal \"%s\": expected exit 2, got %d (%s)", bad[i], r.rc, r.err);
        expect_error(&r, 2, "agent seal");
        run_free(&r);
    }
    r = run_stele(NULL, "agent", "seal", "--state", dir, "--label", "device=x", "a=1", NULL);
    expect_error(&r, 2, "agent seal");
    run_free(&r);
    r = run_stele(NULL, "agent", "seal", "--state", dir, "--time", "yesterday", "a=1", NULL);
    expect_error(&r, 2, "agent seal");
    run_free(&r);
    uint64_t c3 = seal_and_check(dir, "a=1", pk, 7, NULL);
    assert_int_equal(c3, c2 + 1);

    /* Another agent on the same directory: refused while the lock is held. */
    char lock_path[4300];
    snprintf(lock_path, sizeof(lock_path), "%s/lock", dir);
    int lock_fd = open(lock_path, O_RDWR);
    assert_true(lock_fd >= 0);
    assert_int_equal(flock(lock_fd, LOCK_EX), 0);
    r = run_stele(NULL, "agent", "seal", "--state", dir, "a=1", NULL);
    expect_error(&r, 1, "agent seal");
    assert_non_null(strstr(r.err, "in use"));
    run_free(&r);
    close(lock_fd);

    /* send FILE: three sealed frames back to back; then again: duplicates, exit 0. */
    snprintf(frames_path, sizeof(frames_path), "%s/frames.bin", work_dir);
    FILE *fp = fopen(frames_path, "wb");
    assert_non_null(fp);
    uint64_t counters[3];
    for (int i = 0; i < 3; i++) {
        char pts[32];
        snprintf(pts, sizeof(pts), "m=%d", i);
        r = run_stele(NULL, "agent", "seal", "--state", dir, pts, NULL);
        expect_ok(&r, "seal");
        stele_frame f;
        assert_int_equal(stele_frame_parse((const uint8_t *)r.out, r.out_len, &f, NULL), 0);
        counters[i] = f.counter;
        assert_int_equal(fwrite(r.out, 1, r.out_len, fp), r.out_len);
        run_free(&r);
    }
    fclose(fp);
    assert_true(counters[0] == c3 + 1 && counters[1] == c3 + 2 && counters[2] == c3 + 3);
    r = run_stele(NULL, "agent", "send", "--state", dir, "--url", s->url, frames_path, NULL);
    expect_ok(&r, "send FILE");
    char want[256];
    snprintf(want, sizeof(want), "%llu accepted\n%llu accepted\n%llu accepted\n",
             (unsigned long long)counters[0], (unsigned long long)counters[1],
             (unsigned long long)counters[2]);
    assert_string_equal(r.out, want);
    assert_string_equal(s->last_content_type, "application/vnd.stele.frames");
    run_free(&r);
    r = run_stele(NULL, "agent", "send", "--state", dir, "--url", s->url, frames_path, NULL);
    expect_ok(&r, "send FILE again");
    assert_non_null(strstr(r.out, " duplicate\n"));
    assert_null(strstr(r.out, "accepted"));
    run_free(&r);
    /* A file that is not frames: nothing of it is sent. */
    size_t before = s->frame_requests;
    char junk_path[4300];
    snprintf(junk_path, sizeof(junk_path), "%s/junk.bin", work_dir);
    fp = fopen(junk_path, "wb");
    assert_non_null(fp);
    fputs("SF\001\001 this is not a frame", fp);
    fclose(fp);
    r = run_stele(NULL, "agent", "send", "--state", dir, "--url", s->url, frames_path, junk_path,
                  NULL);
    expect_error(&r, 1, "agent send");
    run_free(&r);
    assert_int_equal(s->frame_requests, before);

    /* send from standard input: 300 lines, batched (≤ 256 per request), one frame each,
     * counters rising; then a bad line is skipped and makes the exit 1. */
    snprintf(lines_path, sizeof(lines_path), "%s/lines.txt", work_dir);
    fp = fopen(lines_path, "w");
    assert_non_null(fp);
    fprintf(fp, "# a comment\n\n");
    for (int i = 0; i < 300; i++)
        fprintf(fp, "load=%d,temp=%d.5 %d\n", i, i, 1000 + i);
    fclose(fp);
    before = s->frame_requests;
    size_t frames_before = s->frames;
    r = run_stele(lines_path, "agent", "send", "--state", dir, "--label", "line=3", "--url", s->url,
                  NULL);
    expect_ok(&r, "send < lines");
    assert_int_equal(s->frames - frames_before, 300);
    assert_true(s->frame_requests - before >= 2);
    assert_true(s->max_frames_per_request <= 256);
    unsigned long long prev = 0;
    int lines = 0;
    for (char *line = r.out; *line; lines++) {
        char *nl = strchr(line, '\n');
        assert_non_null(nl);
        unsigned long long c = strtoull(line, NULL, 10);
        assert_true(c > prev);
        prev = c;
        assert_int_equal(strncmp(strchr(line, ' '), " accepted\n", 10), 0);
        line = nl + 1;
    }
    assert_int_equal(lines, 300);
    run_free(&r);
    fp = fopen(lines_path, "w");
    fprintf(fp, "ok=1\nbad metric=1\nok=2\n");
    fclose(fp);
    r = run_stele(lines_path, "agent", "send", "--state", dir, "--url", s->url, NULL);
    assert_int_equal(r.rc, 1);
    assert_non_null(strstr(r.err, "line 2"));
    assert_int_equal(strchr(r.out, '\n') != NULL, 1);
    run_free(&r);

    /* rotate, with the first answer lost: the new key stays prepared, the retry sends the
     * same bytes, and then frames are sealed with the new key. */
    s->lose_next = 1;
    r = run_stele(NULL, "agent", "rotate", "--state", dir, "--url", s->url, NULL);
    assert_int_equal(r.rc, 1);
    assert_int_equal(r.out_len, 0);
    uint8_t first[STELE_ROTATION_MAX_BYTES];
    size_t first_len = s->last_rotation_len;
    memcpy(first, s->last_rotation, first_len);
    assert_string_equal(s->last_content_type, "application/vnd.stele.rotation");
    run_free(&r);
    r = run_stele(NULL, "agent", "show", "--state", dir, NULL);
    expect_ok(&r, "show");
    assert_non_null(strstr(r.out, "key_id=7\n"));
    assert_non_null(strstr(r.out, "pending_key_id=8\n"));
    run_free(&r);
    uint64_t c4 = seal_and_check(dir, "a=2", pk, 7, NULL); /* still the old key */
    r = run_stele(NULL, "agent", "rotate", "--state", dir, "--url", s->url, NULL);
    expect_ok(&r, "rotate (retry)");
    assert_string_equal(r.out, "device=pump-7 key_id=8 overlap_deadline=2025-11-25T16:00:00Z\n");
    run_free(&r);
    assert_int_equal(s->last_rotation_len, first_len);
    assert_memory_equal(s->last_rotation, first, first_len);
    stele_keyproof_rotation rot;
    assert_int_equal(stele_keyproof_rotation_parse(first, first_len, &rot, NULL), 0);
    assert_int_equal(stele_keyproof_rotation_verify(&rot, pk), 0);
    uint8_t new_pk[32];
    memcpy(new_pk, rot.new_public_key, 32);
    uint64_t c5 = seal_and_check(dir, "a=3", new_pk, 8, NULL);
    assert_true(c5 > c4);
    r = run_stele(NULL, "agent", "show", "--state", dir, NULL);
    assert_null(strstr(r.out, "pending"));
    assert_non_null(strstr(r.out, "key_id=8\n"));
    run_free(&r);
    /* The server takes frames under the new key (and promotes it). */
    fp = fopen(lines_path, "w");
    fprintf(fp, "after_rotation=1\n");
    fclose(fp);
    r = run_stele(lines_path, "agent", "send", "--state", dir, "--url", s->url, NULL);
    expect_ok(&r, "send after rotation");
    assert_non_null(strstr(r.out, " accepted\n"));
    run_free(&r);
    assert_int_equal(s->key_id, 8);
    assert_false(s->has_next);

    /* Unreachable server: exit 1, one line. */
    r = run_stele(NULL, "agent", "rotate", "--state", dir, "--url", "http://127.0.0.1:1", NULL);
    assert_int_equal(r.rc, 1);
    assert_int_equal(strncmp(r.err, "stele: agent rotate: ", 21), 0);
    run_free(&r);
    /* ... and abandon forgets that prepared rotation. */
    r = run_stele(NULL, "agent", "rotate", "--state", dir, "--abandon", NULL);
    expect_ok(&r, "rotate --abandon");
    run_free(&r);
    r = run_stele(NULL, "agent", "show", "--state", dir, NULL);
    assert_null(strstr(r.out, "pending"));
    run_free(&r);
    server_stop(s);
}

static int setup(void **state)
{
    (void)state;
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0)
        return -1;
    self[n] = '\0';
    char *slash = strrchr(self, '/');
    *slash = '\0';
    snprintf(stele_bin, sizeof(stele_bin), "%s/stele", self);
    snprintf(work_dir, sizeof(work_dir), "%s/stele-agent-test.XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(work_dir))
        return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    if (getenv("STELE_KEEP_TMP"))
        return 0;
    char cmd[4200];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", work_dir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    unsetenv("STELE_URL");
    unsetenv("STELE_TOKEN");
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n > 0) {
        self[n] = '\0';
        *strrchr(self, '/') = '\0';
        char bin[4200];
        snprintf(bin, sizeof(bin), "%s/stele", self);
        if (access(bin, X_OK) != 0) {
            printf("test_agent_cli: no %s (build the stele target); skipped\n", bin);
            return 0;
        }
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_help_and_usage_errors),
        cmocka_unit_test(test_keygen_refuses_to_overwrite),
        cmocka_unit_test(test_enroll_seal_send_rotate),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
