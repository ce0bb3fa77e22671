/*
 * test_tokens.c — the token store (src/auth/tokens.c) against its contract in
 * include/stele/auth.h and its file format in docs/format/tokens.md.
 *
 * The stores run on the real POSIX io in a fresh mkdtemp directory per test, so what
 * is checked is what lands on disk; damage and torn tails are made by editing the file
 * directly. The format test encodes the documented test vector with its own encoder
 * (written from the document, not from tokens.c), compares it with the hex in the
 * document, then opens a store on exactly those bytes: the doc, the reader and the
 * writer must all agree.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <sodium.h>
#include <xxhash.h>

#include "stele/auth.h"
#include "stele/io.h"

#include "test_util.h"

#define TOKENS_FILE_HEADER_SIZE 16
/* A create record for tenant "default": 8 + (61 + 7) + 8 bytes. */
#define DEFAULT_TENANT_CREATE_RECORD_SIZE 84
#define REVOKE_RECORD_SIZE (8 + 16 + 8)

/* Fixed inputs of the documented test vector (docs/format/tokens.md). */
#define VECTOR_ID "0123456789abcdef"
#define VECTOR_TENANT "default"
#define VECTOR_SCOPES (STELE_SCOPE_READ | STELE_SCOPE_WRITE)
#define VECTOR_CREATED_NS INT64_C(1795626000000000000) /* 2026-11-25T17:00:00Z */
#define VECTOR_TOKEN                                                                               \
    "stl_0123456789abcdef_000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"

typedef struct {
    stele_io *io;
    char dir[64];
    char log_path[128];
} fixture;

/* ---- helpers ------------------------------------------------------------------- */

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    snprintf(f->dir, sizeof(f->dir), "/tmp/stele-test-tokens-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->log_path, sizeof(f->log_path), "%s/tokens.log", f->dir);
    assert_int_equal(stele_io_posix_create(&f->io), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    stele_io_destroy(f->io);
    test_remove_tree(f->dir);
    free(f);
    return 0;
}

static stele_tokens *open_store(const fixture *f)
{
    stele_tokens *t = NULL;
    int rc = stele_tokens_open(f->io, f->dir, &t);
    if (rc != 0)
        fail_msg("stele_tokens_open(%s): expected 0, got %d (%s)", f->dir, rc, strerror(-rc));
    return t;
}

static void create_token(stele_tokens *t, const char *tenant, uint32_t scopes, char *token,
                         stele_token_info *info)
{
    int rc = stele_tokens_create(t, tenant, scopes, token, STELE_TOKEN_STRING_LEN + 1, info);
    if (rc != 0)
        fail_msg("stele_tokens_create(%s): expected 0, got %d (%s)", tenant, rc, strerror(-rc));
    assert_int_equal(strlen(token), STELE_TOKEN_STRING_LEN);
}

static int authenticate(stele_tokens *t, const char *token, stele_token_info *info)
{
    return stele_tokens_authenticate(t, token, strlen(token), info);
}

static void flip_file_bit(const char *path, uint64_t byte_offset, unsigned bit)
{
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    uint8_t byte = 0;
    assert_int_equal(pread(fd, &byte, 1, (off_t)byte_offset), 1);
    byte ^= (uint8_t)(1u << bit);
    assert_int_equal(pwrite(fd, &byte, 1, (off_t)byte_offset), 1);
    close(fd);
}

/* ---- scopes and tenants -------------------------------------------------------- */

static void test_scopes_parse_and_format(void **state)
{
    (void)state;
    uint32_t scopes = 0;
    char text[32];

    assert_int_equal(stele_scopes_parse("read", &scopes), 0);
    assert_int_equal(scopes, STELE_SCOPE_READ);
    assert_int_equal(stele_scopes_parse("admin,read,write", &scopes), 0);
    assert_int_equal(scopes, STELE_SCOPE_READ | STELE_SCOPE_WRITE | STELE_SCOPE_ADMIN);
    assert_int_equal(stele_scopes_parse("write,write", &scopes), 0);
    assert_int_equal(scopes, STELE_SCOPE_WRITE);

    static const char *const bad[] = {"",       ",",   "read,",      ",read", "read,,write", "Read",
                                      "reader", "rea", "read write", " read", "delete"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        scopes = 12345;
        if (stele_scopes_parse(bad[i], &scopes) != -EINVAL)
            fail_msg("scopes \"%s\": expected -EINVAL", bad[i]);
        assert_int_equal(scopes, 12345); /* untouched on error */
    }
    assert_int_equal(stele_scopes_parse(NULL, &scopes), -EINVAL);

    stele_scopes_format(STELE_SCOPE_ADMIN | STELE_SCOPE_READ, text, sizeof(text));
    assert_string_equal(text, "read,admin");
    stele_scopes_format(STELE_SCOPE_READ | STELE_SCOPE_WRITE | STELE_SCOPE_ADMIN, text,
                        sizeof(text));
    assert_string_equal(text, "read,write,admin");
    assert_int_equal(stele_scopes_parse(text, &scopes), 0);
    assert_int_equal(scopes, STELE_SCOPE_READ | STELE_SCOPE_WRITE | STELE_SCOPE_ADMIN);
    stele_scopes_format(0, text, sizeof(text));
    assert_string_equal(text, "");
    stele_scopes_format(STELE_SCOPE_READ | STELE_SCOPE_WRITE, text, 5); /* truncates */
    assert_string_equal(text, "read");
}

static void test_tenant_validation(void **state)
{
    (void)state;
    char longest[STELE_TENANT_MAX_LEN + 2];
    memset(longest, 'a', sizeof(longest));
    longest[STELE_TENANT_MAX_LEN] = '\0';

    assert_true(stele_tenant_name_valid("default"));
    assert_true(stele_tenant_name_valid("Team_7-prod"));
    assert_true(stele_tenant_name_valid("x"));
    assert_true(stele_tenant_name_valid(longest));
    longest[STELE_TENANT_MAX_LEN] = 'a';
    longest[STELE_TENANT_MAX_LEN + 1] = '\0';
    assert_false(stele_tenant_name_valid(longest));
    assert_false(stele_tenant_name_valid(""));
    assert_false(stele_tenant_name_valid(NULL));
    assert_false(stele_tenant_name_valid("a b"));
    assert_false(stele_tenant_name_valid("a/b"));
    assert_false(stele_tenant_name_valid("a.b"));
    assert_false(stele_tenant_name_valid("caf\xc3\xa9"));
}

/* ---- lifecycle ----------------------------------------------------------------- */

typedef struct {
    stele_token_info infos[16];
    size_t count;
} list_result;

static int collect_token(void *ctx, const stele_token_info *info)
{
    list_result *result = ctx;
    assert_true(result->count < 16);
    result->infos[result->count++] = *info;
    return 0;
}

static void test_create_authenticate_revoke_list(void **state)
{
    fixture *f = *state;
    stele_tokens *t = open_store(f);
    char reader[STELE_TOKEN_STRING_LEN + 1];
    char admin[STELE_TOKEN_STRING_LEN + 1];
    stele_token_info reader_info;
    stele_token_info admin_info;
    stele_token_info info;

    create_token(t, "acme", STELE_SCOPE_READ, reader, &reader_info);
    create_token(t, "default", STELE_SCOPE_READ | STELE_SCOPE_ADMIN, admin, &admin_info);
    assert_memory_equal(reader, "stl_", 4);
    assert_memory_equal(reader + 4, reader_info.id, STELE_TOKEN_ID_LEN);
    assert_int_equal(reader[20], '_');
    assert_string_equal(reader_info.tenant, "acme");
    assert_int_equal(reader_info.scopes, STELE_SCOPE_READ);
    assert_false(reader_info.revoked);
    assert_true(reader_info.created_ns > INT64_C(1600000000) * 1000000000);
    assert_string_not_equal(reader_info.id, admin_info.id);
    assert_int_equal(stele_tokens_active_count(t), 2);

    assert_int_equal(authenticate(t, reader, &info), 0);
    assert_string_equal(info.id, reader_info.id);
    assert_string_equal(info.tenant, "acme");
    assert_int_equal(info.scopes, STELE_SCOPE_READ);
    assert_int_equal(info.created_ns, reader_info.created_ns);
    assert_int_equal(authenticate(t, admin, NULL), 0);

    list_result listed = {.count = 0};
    assert_int_equal(stele_tokens_list(t, collect_token, &listed), 0);
    assert_int_equal(listed.count, 2);
    assert_string_equal(listed.infos[0].id, reader_info.id); /* creation order */
    assert_string_equal(listed.infos[1].id, admin_info.id);

    assert_int_equal(stele_tokens_revoke(t, reader_info.id), 0);
    assert_int_equal(authenticate(t, reader, &info), -EACCES);
    assert_int_equal(authenticate(t, admin, NULL), 0);
    assert_int_equal(stele_tokens_active_count(t), 1);
    uint64_t size_after_revoke = test_file_size(f->log_path);
    assert_int_equal(stele_tokens_revoke(t, reader_info.id), 0); /* twice: no-op */
    assert_int_equal(test_file_size(f->log_path), size_after_revoke);
    assert_int_equal(stele_tokens_revoke(t, "0000000000000000"), -ENOENT);
    assert_int_equal(stele_tokens_revoke(t, "not-an-id"), -EINVAL);

    listed.count = 0;
    assert_int_equal(stele_tokens_list(t, collect_token, &listed), 0);
    assert_int_equal(listed.count, 2);
    assert_true(listed.infos[0].revoked);
    assert_false(listed.infos[1].revoked);

    /* Refused arguments. */
    char small[STELE_TOKEN_STRING_LEN];
    assert_int_equal(stele_tokens_create(t, "acme", STELE_SCOPE_READ, small, sizeof(small), NULL),
                     -EINVAL);
    assert_int_equal(
        stele_tokens_create(t, "bad tenant", STELE_SCOPE_READ, reader, sizeof(reader), NULL),
        -EINVAL);
    assert_int_equal(stele_tokens_create(t, "acme", 0, reader, sizeof(reader), NULL), -EINVAL);
    assert_int_equal(stele_tokens_create(t, "acme", 1u << 7, reader, sizeof(reader), NULL),
                     -EINVAL);
    assert_int_equal(stele_tokens_active_count(t), 1);
    stele_tokens_close(t);
    stele_tokens_close(NULL);
}

static int stop_after_first(void *ctx, const stele_token_info *info)
{
    (void)info;
    (*(int *)ctx)++;
    return 7;
}

static void test_list_stops_on_callback_value(void **state)
{
    fixture *f = *state;
    stele_tokens *t = open_store(f);
    char token[STELE_TOKEN_STRING_LEN + 1];
    int calls = 0;

    assert_int_equal(stele_tokens_list(t, stop_after_first, &calls), 0); /* empty */
    assert_int_equal(calls, 0);
    create_token(t, "a", STELE_SCOPE_READ, token, NULL);
    create_token(t, "b", STELE_SCOPE_READ, token, NULL);
    assert_int_equal(stele_tokens_list(t, stop_after_first, &calls), 7);
    assert_int_equal(calls, 1);
    stele_tokens_close(t);
}

static void test_wrong_secret_and_malformed_strings(void **state)
{
    fixture *f = *state;
    stele_tokens *t = open_store(f);
    char token[STELE_TOKEN_STRING_LEN + 1];
    char bad[STELE_TOKEN_STRING_LEN + 2];
    create_token(t, "acme", STELE_SCOPE_WRITE, token, NULL);
    assert_int_equal(authenticate(t, token, NULL), 0);

    /* Each position of the token, changed to a character that is wrong there. */
    for (size_t i = 0; i < STELE_TOKEN_STRING_LEN; i++) {
        memcpy(bad, token, sizeof(token));
        if (i < 4 || i == 20)
            bad[i] = token[i] == '_' ? 'x' : '_';
        else
            bad[i] = token[i] == '0' ? '1' : '0';
        if (authenticate(t, bad, NULL) != -EACCES)
            fail_msg("token changed at %zu (%s): expected -EACCES", i, bad);
    }
    /* Uppercase hex names the same bytes but is not the token's spelling. */
    memcpy(bad, token, sizeof(token));
    for (size_t i = 21; i < STELE_TOKEN_STRING_LEN; i++) {
        if (bad[i] >= 'a' && bad[i] <= 'f') {
            bad[i] = (char)(bad[i] - 'a' + 'A');
            break;
        }
    }
    if (strcmp(bad, token) != 0)
        assert_int_equal(authenticate(t, bad, NULL), -EACCES);
    /* Wrong lengths, a NUL inside, an explicit length shorter than the string. */
    memcpy(bad, token, sizeof(token));
    bad[STELE_TOKEN_STRING_LEN] = '0';
    bad[STELE_TOKEN_STRING_LEN + 1] = '\0';
    assert_int_equal(authenticate(t, bad, NULL), -EACCES);
    assert_int_equal(stele_tokens_authenticate(t, token, STELE_TOKEN_STRING_LEN - 1, NULL),
                     -EACCES);
    memcpy(bad, token, sizeof(token));
    bad[40] = '\0';
    assert_int_equal(stele_tokens_authenticate(t, bad, STELE_TOKEN_STRING_LEN, NULL), -EACCES);
    assert_int_equal(authenticate(t, "", NULL), -EACCES);
    assert_int_equal(authenticate(t, "stl_", NULL), -EACCES);
    assert_int_equal(stele_tokens_authenticate(t, NULL, 0, NULL), -EACCES);
    /* A well-formed token whose id is unknown. */
    assert_int_equal(authenticate(t, VECTOR_TOKEN, NULL), -EACCES);
    stele_tokens_close(t);
}

static void test_persistence_across_reopen(void **state)
{
    fixture *f = *state;
    char kept[STELE_TOKEN_STRING_LEN + 1];
    char revoked[STELE_TOKEN_STRING_LEN + 1];
    stele_token_info kept_info;
    stele_token_info revoked_info;
    stele_token_info info;

    stele_tokens *t = open_store(f);
    create_token(t, "acme", STELE_SCOPE_READ | STELE_SCOPE_WRITE, kept, &kept_info);
    create_token(t, "other", STELE_SCOPE_ADMIN, revoked, &revoked_info);
    assert_int_equal(stele_tokens_revoke(t, revoked_info.id), 0);
    stele_tokens_close(t);

    for (int round = 0; round < 2; round++) {
        t = open_store(f);
        assert_int_equal(stele_tokens_active_count(t), 1);
        assert_int_equal(authenticate(t, kept, &info), 0);
        assert_string_equal(info.id, kept_info.id);
        assert_string_equal(info.tenant, "acme");
        assert_int_equal(info.scopes, STELE_SCOPE_READ | STELE_SCOPE_WRITE);
        assert_int_equal(info.created_ns, kept_info.created_ns);
        assert_int_equal(authenticate(t, revoked, NULL), -EACCES);
        list_result listed = {.count = 0};
        assert_int_equal(stele_tokens_list(t, collect_token, &listed), 0);
        assert_int_equal(listed.count, 2);
        assert_string_equal(listed.infos[0].id, kept_info.id);
        assert_string_equal(listed.infos[1].id, revoked_info.id);
        assert_true(listed.infos[1].revoked);
        assert_int_equal(stele_tokens_revoke(t, revoked_info.id), 0);
        stele_tokens_close(t);
    }
    assert_int_equal(test_file_size(f->log_path),
                     TOKENS_FILE_HEADER_SIZE + DEFAULT_TENANT_CREATE_RECORD_SIZE - 3 +
                         DEFAULT_TENANT_CREATE_RECORD_SIZE - 2 + REVOKE_RECORD_SIZE);
}

/* Many tokens: the table and its index grow past their first sizes. */
static void test_many_tokens(void **state)
{
    enum { TOKEN_COUNT = 300 }; /* > the first index size (128 slots, half full) */
    fixture *f = *state;
    static char tokens[TOKEN_COUNT][STELE_TOKEN_STRING_LEN + 1];
    stele_token_info info;

    stele_tokens *t = open_store(f);
    for (int i = 0; i < TOKEN_COUNT; i++)
        create_token(t, "bulk", STELE_SCOPE_WRITE, tokens[i], NULL);
    stele_tokens_close(t);
    t = open_store(f);
    assert_int_equal(stele_tokens_active_count(t), TOKEN_COUNT);
    for (int i = 0; i < TOKEN_COUNT; i++) {
        assert_int_equal(authenticate(t, tokens[i], &info), 0);
        assert_memory_equal(info.id, tokens[i] + 4, STELE_TOKEN_ID_LEN);
    }
    stele_tokens_close(t);
}

/* ---- concurrency --------------------------------------------------------------- */

enum { WORKER_THREADS = 4, CREATES_PER_WORKER = 25 };

typedef struct {
    stele_tokens *store;
    const char *probe_token;
    int failures;
} worker_args;

static void *create_and_check(void *arg)
{
    worker_args *w = arg;
    char token[STELE_TOKEN_STRING_LEN + 1];
    for (int i = 0; i < CREATES_PER_WORKER; i++) {
        if (stele_tokens_create(w->store, "busy", STELE_SCOPE_READ, token, sizeof(token), NULL))
            w->failures++;
        if (stele_tokens_authenticate(w->store, token, strlen(token), NULL) != 0)
            w->failures++;
        if (stele_tokens_authenticate(w->store, w->probe_token, strlen(w->probe_token), NULL))
            w->failures++;
    }
    return NULL;
}

static void test_concurrent_create_and_authenticate(void **state)
{
    fixture *f = *state;
    char probe[STELE_TOKEN_STRING_LEN + 1];
    pthread_t threads[WORKER_THREADS];
    worker_args args[WORKER_THREADS];

    stele_tokens *t = open_store(f);
    create_token(t, "probe", STELE_SCOPE_READ, probe, NULL);
    for (int i = 0; i < WORKER_THREADS; i++) {
        args[i] = (worker_args){.store = t, .probe_token = probe, .failures = 0};
        assert_int_equal(pthread_create(&threads[i], NULL, create_and_check, &args[i]), 0);
    }
    for (int i = 0; i < WORKER_THREADS; i++) {
        assert_int_equal(pthread_join(threads[i], NULL), 0);
        assert_int_equal(args[i].failures, 0);
    }
    assert_int_equal(stele_tokens_active_count(t), 1 + WORKER_THREADS * CREATES_PER_WORKER);
    stele_tokens_close(t);
    t = open_store(f);
    assert_int_equal(stele_tokens_active_count(t), 1 + WORKER_THREADS * CREATES_PER_WORKER);
    stele_tokens_close(t);
}

/* ---- recovery and damage ------------------------------------------------------- */

static void test_torn_tail_is_cut_off(void **state)
{
    fixture *f = *state;
    char tokens[3][STELE_TOKEN_STRING_LEN + 1];
    char later[STELE_TOKEN_STRING_LEN + 1];

    stele_tokens *t = open_store(f);
    for (int i = 0; i < 3; i++)
        create_token(t, "default", STELE_SCOPE_READ, tokens[i], NULL);
    stele_tokens_close(t);
    uint64_t two_records = TOKENS_FILE_HEADER_SIZE + 2 * DEFAULT_TENANT_CREATE_RECORD_SIZE;
    assert_int_equal(test_file_size(f->log_path), two_records + DEFAULT_TENANT_CREATE_RECORD_SIZE);

    size_t len = 0;
    uint8_t *pristine = test_read_file(f->log_path, &len);

    /* Every cut inside the third record: in its length, its payload, its checksum. */
    static const uint64_t cuts[] = {1, 7, 8, 40, DEFAULT_TENANT_CREATE_RECORD_SIZE - 1};
    /* Zeros where the third record should be (the file's new size reached the disk,
     * its data did not): shorter than, as long as, and longer than the record. */
    static const uint64_t zero_tails[] = {5, 8, 40, DEFAULT_TENANT_CREATE_RECORD_SIZE, 200};
    size_t cut_count = sizeof(cuts) / sizeof(cuts[0]);
    for (size_t i = 0; i < cut_count + sizeof(zero_tails) / sizeof(zero_tails[0]); i++) {
        if (i < cut_count) {
            test_write_file(f->log_path, pristine, (size_t)(two_records + cuts[i]));
        } else {
            test_write_file(f->log_path, pristine, (size_t)two_records);
            /* truncate() extending a file fills it with zeros. */
            assert_int_equal(
                truncate(f->log_path, (off_t)(two_records + zero_tails[i - cut_count])), 0);
        }
        t = open_store(f);
        assert_int_equal(test_file_size(f->log_path), two_records); /* cut back, durably */
        assert_int_equal(authenticate(t, tokens[0], NULL), 0);
        assert_int_equal(authenticate(t, tokens[1], NULL), 0);
        assert_int_equal(authenticate(t, tokens[2], NULL), -EACCES);
        assert_int_equal(stele_tokens_active_count(t), 2);
        stele_tokens_close(t);
    }
    free(pristine);

    /* The log goes on cleanly after the cut. */
    t = open_store(f);
    create_token(t, "default", STELE_SCOPE_READ, later, NULL);
    stele_tokens_close(t);
    t = open_store(f);
    assert_int_equal(authenticate(t, later, NULL), 0);
    assert_int_equal(stele_tokens_active_count(t), 3);
    stele_tokens_close(t);
}

static void expect_open_fails(const fixture *f, int expected, const char *why)
{
    stele_tokens *t = NULL;
    int rc = stele_tokens_open(f->io, f->dir, &t);
    if (rc != expected)
        fail_msg("open after %s: expected %d, got %d", why, expected, rc);
    assert_null(t);
}

static void test_damage_is_reported(void **state)
{
    fixture *f = *state;
    char token[STELE_TOKEN_STRING_LEN + 1];
    stele_token_info info;

    stele_tokens *t = open_store(f);
    create_token(t, "default", STELE_SCOPE_READ, token, NULL);
    create_token(t, "default", STELE_SCOPE_READ, token, &info);
    assert_int_equal(stele_tokens_revoke(t, info.id), 0);
    stele_tokens_close(t);
    size_t len = 0;
    uint8_t *pristine = test_read_file(f->log_path, &len);
    uint64_t second = TOKENS_FILE_HEADER_SIZE + DEFAULT_TENANT_CREATE_RECORD_SIZE;
    uint64_t revoke = second + DEFAULT_TENANT_CREATE_RECORD_SIZE;
    assert_int_equal(len, revoke + REVOKE_RECORD_SIZE);

    /* A bit flipped anywhere in a whole record is damage, the last record included. */
    const struct {
        uint64_t offset;
        const char *what;
    } flips[] = {
        {0, "header magic"},
        {9, "header version"},
        {14, "header checksum"},
        {TOKENS_FILE_HEADER_SIZE + 0, "first record length"},
        {TOKENS_FILE_HEADER_SIZE + 4, "first record type"},
        {TOKENS_FILE_HEADER_SIZE + 30, "first record payload"},
        {second - 1, "first record checksum"},
        {second + 60, "second record payload"},
        {revoke + 12, "last record (revoke) payload"},
        {revoke + REVOKE_RECORD_SIZE - 1, "last record checksum"},
    };
    for (size_t i = 0; i < sizeof(flips) / sizeof(flips[0]); i++) {
        for (unsigned bit = 0; bit < 8; bit += 7) {
            test_write_file(f->log_path, pristine, len);
            flip_file_bit(f->log_path, flips[i].offset, bit);
            expect_open_fails(f, -EBADMSG, flips[i].what);
            assert_int_equal(test_file_size(f->log_path), len); /* nothing cut off */
        }
    }

    /* A header shorter than 16 bytes cannot be a crash (the file is created whole). */
    test_write_file(f->log_path, pristine, 10);
    expect_open_fails(f, -EBADMSG, "a short header");

    /* Another version's file, intact: not damage, but not readable either. */
    test_write_file(f->log_path, pristine, len);
    uint8_t header[TOKENS_FILE_HEADER_SIZE];
    memcpy(header, pristine, sizeof(header));
    test_put_le(header + 8, 2, 4);
    test_put_le(header + 12, (uint32_t)XXH3_64bits(header, 12), 4);
    uint8_t *v2 = malloc(len);
    assert_non_null(v2);
    memcpy(v2, pristine, len);
    memcpy(v2, header, sizeof(header));
    test_write_file(f->log_path, v2, len);
    expect_open_fails(f, -ENOTSUP, "version 2");

    /* Records consistent in themselves but not with the log: revoke of an unknown id. */
    memcpy(v2, pristine, len);
    memcpy(v2 + revoke + 8, "ffffffffffffffff", 16);
    test_put_le(v2 + revoke + 8 + 16, XXH3_64bits(v2 + revoke, 8 + 16), 8);
    test_write_file(f->log_path, v2, len);
    expect_open_fails(f, -EBADMSG, "revoke of an unknown id");

    /* ...and the same id created twice. */
    memcpy(v2, pristine, len);
    memcpy(v2 + second, v2 + TOKENS_FILE_HEADER_SIZE, DEFAULT_TENANT_CREATE_RECORD_SIZE);
    test_write_file(f->log_path, v2, len);
    expect_open_fails(f, -EBADMSG, "an id created twice");

    /* Bytes after the last record that are neither a cut record nor zeros... */
    memcpy(v2, pristine, len);
    test_write_file(f->log_path, v2, len);
    FILE *fp = fopen(f->log_path, "ab");
    assert_non_null(fp);
    assert_int_equal(fwrite("\xff\xff\xff\xff\xff\xff\xff\xff", 1, 8, fp), 8);
    assert_int_equal(fclose(fp), 0);
    expect_open_fails(f, -EBADMSG, "8 bytes of 0xff after the last record");
    /* ...or zeros longer than any record (8 + 4096 + 8) are damage too. */
    test_write_file(f->log_path, pristine, len);
    assert_int_equal(truncate(f->log_path, (off_t)(len + 8 + 4096 + 8 + 1)), 0);
    expect_open_fails(f, -EBADMSG, "4113 zero bytes after the last record");

    /* Restored, the file opens again: nothing was changed by the failed opens. */
    test_write_file(f->log_path, pristine, len);
    t = open_store(f);
    assert_int_equal(stele_tokens_active_count(t), 1);
    stele_tokens_close(t);
    free(v2);
    free(pristine);
}

/* ---- failures (fault-injecting io) ---------------------------------------------- */

#define FAULT_DATA_DIR "/data"

static stele_tokens *open_fault_store(stele_io *io)
{
    stele_tokens *t = NULL;
    int rc = stele_tokens_open(io, FAULT_DATA_DIR, &t);
    if (rc != 0)
        fail_msg("stele_tokens_open on the fault io: expected 0, got %d (%s)", rc, strerror(-rc));
    return t;
}

/* A failed fsync is final: no later change is attempted, none is claimed, and
 * authentication goes on from memory. */
static void test_failed_append_is_final(void **state)
{
    (void)state;
    char kept[STELE_TOKEN_STRING_LEN + 1];
    char revoked[STELE_TOKEN_STRING_LEN + 1];
    char lost[STELE_TOKEN_STRING_LEN + 1];
    stele_token_info revoked_info;

    stele_io *io = test_fault_io_with_dir(1, FAULT_DATA_DIR);
    stele_tokens *t = open_fault_store(io);
    create_token(t, "default", STELE_SCOPE_READ, kept, NULL);
    create_token(t, "default", STELE_SCOPE_READ, revoked, &revoked_info);

    stele_io_fault_fail_after(io, STELE_FAULT_OP_FSYNC, 1, EIO);
    assert_int_equal(stele_tokens_create(t, "default", STELE_SCOPE_READ, lost, sizeof(lost), NULL),
                     -EIO);
    assert_string_equal(lost, ""); /* no token handed out */
    assert_int_equal(stele_tokens_active_count(t), 2);

    uint64_t writes = stele_io_fault_op_count(io, STELE_FAULT_OP_WRITE);
    uint64_t fsyncs = stele_io_fault_op_count(io, STELE_FAULT_OP_FSYNC);
    assert_int_equal(stele_tokens_create(t, "default", STELE_SCOPE_READ, lost, sizeof(lost), NULL),
                     -EIO);
    /* The revoke cannot be made durable, but refuses the token from now on. */
    assert_int_equal(stele_tokens_revoke(t, revoked_info.id), -EIO);
    assert_int_equal(stele_tokens_revoke(t, revoked_info.id), -EIO); /* still not durable */
    assert_int_equal(stele_tokens_revoke(t, "0000000000000000"), -ENOENT);
    assert_int_equal(stele_io_fault_op_count(io, STELE_FAULT_OP_WRITE), writes);
    assert_int_equal(stele_io_fault_op_count(io, STELE_FAULT_OP_FSYNC), fsyncs);
    assert_int_equal(authenticate(t, kept, NULL), 0);
    assert_int_equal(authenticate(t, revoked, NULL), -EACCES);
    assert_int_equal(stele_tokens_active_count(t), 1);
    stele_tokens_close(t);

    /* After a power cut, the log holds exactly the acknowledged changes. */
    stele_io_fault_power_cut(io, STELE_FAULT_CUT_DROP);
    t = open_fault_store(io);
    assert_int_equal(stele_tokens_active_count(t), 2);
    assert_int_equal(authenticate(t, kept, NULL), 0);
    assert_int_equal(authenticate(t, revoked, NULL), 0); /* its revoke never became durable */
    assert_int_equal(stele_tokens_revoke(t, revoked_info.id), 0);
    assert_int_equal(authenticate(t, revoked, NULL), -EACCES);
    stele_tokens_close(t);
    stele_io_destroy(io);
}

/* A crash during an append (failed write or fsync, then a power cut that keeps any
 * prefix of the unsynced bytes) loses nothing acknowledged, and the log goes on. */
static void test_crash_during_append_recovers(void **state)
{
    (void)state;
    enum { SEEDS = 64, ACKED = 3 };
    char tokens[ACKED + 1][STELE_TOKEN_STRING_LEN + 1];

    for (uint64_t seed = 1; seed <= SEEDS; seed++) {
        stele_io *io = test_fault_io_with_dir(seed, FAULT_DATA_DIR);
        stele_tokens *t = open_fault_store(io);
        for (int i = 0; i < ACKED; i++)
            create_token(t, "default", STELE_SCOPE_WRITE, tokens[i], NULL);
        enum stele_fault_op op = seed % 2 ? STELE_FAULT_OP_WRITE : STELE_FAULT_OP_FSYNC;
        stele_io_fault_fail_after(io, op, 1, EIO);
        if (stele_tokens_create(t, "default", STELE_SCOPE_WRITE, tokens[ACKED],
                                sizeof(tokens[ACKED]), NULL) != -EIO)
            fail_msg("seed %llu: the create under a failing %s was not refused",
                     (unsigned long long)seed, op == STELE_FAULT_OP_WRITE ? "write" : "fsync");
        stele_tokens_close(t);
        stele_io_fault_power_cut(io, STELE_FAULT_CUT_TORN);

        t = NULL;
        int rc = stele_tokens_open(io, FAULT_DATA_DIR, &t);
        if (rc != 0)
            fail_msg("seed %llu: reopen after the cut: expected 0, got %d",
                     (unsigned long long)seed, rc);
        for (int i = 0; i < ACKED; i++) {
            if (authenticate(t, tokens[i], NULL) != 0)
                fail_msg("seed %llu: acknowledged token %d lost", (unsigned long long)seed, i);
        }
        /* The unacknowledged record may or may not have survived whole. */
        size_t active = stele_tokens_active_count(t);
        assert_true(active == ACKED || active == ACKED + 1);
        create_token(t, "default", STELE_SCOPE_WRITE, tokens[ACKED], NULL);
        stele_tokens_close(t);
        t = open_fault_store(io);
        assert_int_equal(authenticate(t, tokens[ACKED], NULL), 0);
        stele_tokens_close(t);
        stele_io_destroy(io);
    }
}

/* ---- file format --------------------------------------------------------------- */

/* Encodes the vector from docs/format/tokens.md, following the document. */
static size_t encode_vector(uint8_t *out)
{
    uint8_t secret[32];
    for (int i = 0; i < 32; i++)
        secret[i] = (uint8_t)i;
    uint8_t *p = out;
    memcpy(p, "STLTOKN1", 8);
    test_put_le(p + 8, 1, 4);
    test_put_le(p + 12, (uint32_t)XXH3_64bits(p, 12), 4);
    p += 16;

    uint8_t *record = p;
    size_t tenant_len = strlen(VECTOR_TENANT);
    size_t payload_len = 16 + 1 + tenant_len + 4 + 8 + 32;
    test_put_le(p, payload_len, 4);
    test_put_le(p + 4, 1, 4); /* create */
    p += 8;
    memcpy(p, VECTOR_ID, 16);
    p[16] = (uint8_t)tenant_len;
    memcpy(p + 17, VECTOR_TENANT, tenant_len);
    p += 17 + tenant_len;
    test_put_le(p, VECTOR_SCOPES, 4);
    test_put_le(p + 4, (uint64_t)VECTOR_CREATED_NS, 8);
    assert_int_equal(crypto_generichash(p + 12, 32, secret, sizeof(secret), NULL, 0), 0);
    p += 44;
    test_put_le(p, XXH3_64bits(record, (size_t)(p - record)), 8);
    p += 8;
    return (size_t)(p - out);
}

static void test_format_vector_matches_doc(void **state)
{
    fixture *f = *state;
    uint8_t encoded[256];
    uint8_t documented[256];
    stele_token_info info;

    size_t encoded_len = encode_vector(encoded);
    assert_int_equal(encoded_len, TOKENS_FILE_HEADER_SIZE + DEFAULT_TENANT_CREATE_RECORD_SIZE);
    size_t documented_len = test_doc_vector("tokens.md", "test-vector: header-and-create",
                                            documented, sizeof(documented));
    if (documented_len != encoded_len || memcmp(documented, encoded, encoded_len) != 0) {
        fprintf(stderr, "expected (docs/format/tokens.md) (%zu bytes):\n", documented_len);
        test_print_hex(stderr, documented, documented_len, 16, " ");
        fprintf(stderr, "encoded from the documented layout (%zu bytes):\n", encoded_len);
        test_print_hex(stderr, encoded, encoded_len, 16, " ");
        fail_msg("the test vector in docs/format/tokens.md does not match its layout");
    }

    /* The store reads the documented bytes as the documented token. */
    test_write_file(f->log_path, documented, documented_len);
    stele_tokens *t = open_store(f);
    assert_int_equal(authenticate(t, VECTOR_TOKEN, &info), 0);
    assert_string_equal(info.id, VECTOR_ID);
    assert_string_equal(info.tenant, VECTOR_TENANT);
    assert_int_equal(info.scopes, VECTOR_SCOPES);
    assert_int_equal(info.created_ns, VECTOR_CREATED_NS);
    assert_false(info.revoked);
    stele_tokens_close(t);
    assert_int_equal(test_file_size(f->log_path), documented_len);
}

/* What the store writes decodes, by the document's layout, to what it returned. */
static void test_written_records_follow_the_doc(void **state)
{
    fixture *f = *state;
    char token[STELE_TOKEN_STRING_LEN + 1];
    stele_token_info info;
    uint8_t secret[32];
    uint8_t hash[32];

    stele_tokens *t = open_store(f);
    create_token(t, "acme-prod", STELE_SCOPE_WRITE | STELE_SCOPE_ADMIN, token, &info);
    assert_int_equal(stele_tokens_revoke(t, info.id), 0);
    stele_tokens_close(t);

    size_t len = 0;
    uint8_t *file = test_read_file(f->log_path, &len);
    uint8_t header[16];
    memcpy(header, "STLTOKN1", 8);
    test_put_le(header + 8, 1, 4);
    test_put_le(header + 12, (uint32_t)XXH3_64bits(header, 12), 4);
    assert_memory_equal(file, header, 16);

    const uint8_t *record = file + 16;
    size_t payload_len = (size_t)test_get_le(record, 4);
    assert_int_equal(payload_len, 61 + strlen("acme-prod"));
    assert_int_equal(test_get_le(record + 4, 4), 1);
    const uint8_t *payload = record + 8;
    assert_memory_equal(payload, info.id, 16);
    assert_int_equal(payload[16], strlen("acme-prod"));
    assert_memory_equal(payload + 17, "acme-prod", strlen("acme-prod"));
    const uint8_t *fixed = payload + 17 + strlen("acme-prod");
    assert_int_equal(test_get_le(fixed, 4), STELE_SCOPE_WRITE | STELE_SCOPE_ADMIN);
    assert_int_equal((int64_t)test_get_le(fixed + 4, 8), info.created_ns);
    assert_int_equal(sodium_hex2bin(secret, sizeof(secret), token + 21, 64, NULL, NULL, NULL), 0);
    crypto_generichash(hash, sizeof(hash), secret, sizeof(secret), NULL, 0);
    assert_memory_equal(fixed + 12, hash, 32);
    assert_int_equal(test_get_le(record + 8 + payload_len, 8),
                     XXH3_64bits(record, 8 + payload_len));

    const uint8_t *revoke = record + 8 + payload_len + 8;
    assert_int_equal(test_get_le(revoke, 4), 16);
    assert_int_equal(test_get_le(revoke + 4, 4), 2);
    assert_memory_equal(revoke + 8, info.id, 16);
    assert_int_equal(test_get_le(revoke + 24, 8), XXH3_64bits(revoke, 24));
    assert_int_equal(len, (size_t)(revoke + 32 - file));
    free(file);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scopes_parse_and_format),
        cmocka_unit_test(test_tenant_validation),
        cmocka_unit_test_setup_teardown(test_create_authenticate_revoke_list, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_stops_on_callback_value, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_secret_and_malformed_strings, setup, teardown),
        cmocka_unit_test_setup_teardown(test_persistence_across_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many_tokens, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_create_and_authenticate, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_tail_is_cut_off, setup, teardown),
        cmocka_unit_test_setup_teardown(test_damage_is_reported, setup, teardown),
        cmocka_unit_test(test_failed_append_is_final),
        cmocka_unit_test(test_crash_during_append_recovers),
        cmocka_unit_test_setup_teardown(test_format_vector_matches_doc, setup, teardown),
        cmocka_unit_test_setup_teardown(test_written_records_follow_the_doc, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
