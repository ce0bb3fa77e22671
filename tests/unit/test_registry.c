/*
 * test_registry.c — the device registry (src/control/registry.c) against its contract in
 * include/stele/registry.h and its file format in docs/format/registry.md.
 *
 * The lifecycle tests run on the real POSIX io in a fresh mkdtemp directory, so what is
 * checked is what lands on disk; damage and torn tails are made by editing the file.
 * The property tests drive a registry and an independent model of the lifecycle (written
 * from the header, not from registry.c) with the same seeded random operations, and
 * compare every field of every device after each operation, after reopening, and after
 * power cuts on the fault-injecting io (the state after a cut must be the model's — every
 * acknowledged mutation — or the model's plus the one mutation in flight). The format
 * test encodes the documented vector with its own encoder, compares it with the hex in
 * the document, then opens a registry on exactly those bytes.
 *
 * Seeds: STELE_TEST_SEED fixes the first seed; every failure prints the seed.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
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
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <sodium.h>
#include <xxhash.h>

#include "io/io_impl.h" /* struct stele_file, for the fsync-counting io below */
#include "stele/frame.h"
#include "stele/io.h"
#include "stele/registry.h"

#include "test_util.h"

#define NS INT64_C(1000000000)
#define T0 INT64_C(1795626000000000000) /* 2026-11-25T17:00:00Z */
#define TEST_TTL_NS (1000 * NS)
#define HEADER_SIZE 16
#define RECORD_OVERHEAD (16 + 8) /* length, type, batch offset; checksum */
#define TOKEN_BUF (STELE_ENROLL_TOKEN_LEN + 1)
#define TEST_KEYS 64 /* Ed25519 public keys from seeds 0..63 */
#define ALG STELE_FRAME_ALG_ED25519

static uint8_t test_pk[TEST_KEYS][32];

typedef struct {
    _Atomic int64_t now;
} test_clock;

static int64_t clock_now(void *ctx)
{
    return atomic_load(&((test_clock *)ctx)->now);
}

static void clock_set(test_clock *c, int64_t now)
{
    atomic_store(&c->now, now);
}

static stele_registry_options options_with(test_clock *c)
{
    stele_registry_options o;
    stele_registry_options_default(&o);
    o.enroll_ttl_ns = TEST_TTL_NS;
    o.now_ns = clock_now;
    o.now_ctx = c;
    return o;
}

typedef struct {
    stele_io *io;
    char dir[64];
    char log_path[128];
    test_clock clock;
} fixture;

/* ---- helpers ------------------------------------------------------------------- */

static uint64_t rng_below(uint64_t *s, uint64_t n)
{
    return test_rng_next(s) % n;
}

static uint64_t first_seed(uint64_t fallback)
{
    const char *env = getenv("STELE_TEST_SEED");
    return env && *env ? strtoull(env, NULL, 0) : fallback;
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    snprintf(f->dir, sizeof(f->dir), "/tmp/stele-test-registry-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->log_path, sizeof(f->log_path), "%s/devices.log", f->dir);
    assert_int_equal(stele_io_posix_create(&f->io), 0);
    clock_set(&f->clock, T0);
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

static stele_registry *open_at(stele_io *io, const char *dir, test_clock *c)
{
    stele_registry *r = NULL;
    char err[512];
    stele_registry_options o = options_with(c);
    int rc = stele_registry_open(io, dir, &o, &r, err, sizeof(err));
    if (rc != 0)
        fail_msg("stele_registry_open(%s): expected 0, got %d (%s): %s", dir, rc, strerror(-rc),
                 err);
    return r;
}

static stele_registry *open_registry(fixture *f)
{
    return open_at(f->io, f->dir, &f->clock);
}

static void add_device(stele_registry *r, const char *id, const char *tenant, const char *cohort,
                       char token[TOKEN_BUF], stele_device_info *info)
{
    int rc = stele_registry_add(r, id, tenant, cohort, token, TOKEN_BUF, info);
    if (rc != 0)
        fail_msg("add(%s): expected 0, got %d (%s)", id, rc, strerror(-rc));
    assert_int_equal(strlen(token), STELE_ENROLL_TOKEN_LEN);
}

static int enroll(stele_registry *r, const char *id, const char *token, int key,
                  stele_device_info *info)
{
    return stele_registry_enroll(r, id, token, strlen(token), ALG, test_pk[key], "fw-1.0", info);
}

static void enroll_ok(stele_registry *r, const char *id, const char *token, int key,
                      stele_device_info *info)
{
    int rc = enroll(r, id, token, key, info);
    if (rc != 0)
        fail_msg("enroll(%s): expected 0, got %d (%s)", id, rc, strerror(-rc));
}

static stele_device_info get_device(stele_registry *r, const char *id)
{
    stele_device_info info;
    int rc = stele_registry_get(r, id, strlen(id), &info);
    if (rc != 0)
        fail_msg("get(%s): expected 0, got %d", id, rc);
    return info;
}

/* Field-by-field comparison (struct padding is not compared); last_seen_ns is memory
 * only and compared by the callers that care. Returns the first differing field. */
static const char *device_diff(const stele_device_info *a, const stele_device_info *b)
{
#define SAME_STR(field)                                                                            \
    if (strcmp(a->field, b->field) != 0)                                                           \
        return #field;
#define SAME(field)                                                                                \
    if (a->field != b->field)                                                                      \
        return #field;
#define SAME_KEY(k)                                                                                \
    SAME(k.key_id)                                                                                 \
    SAME(k.alg)                                                                                    \
    SAME(k.added_ns)                                                                               \
    if (memcmp(a->k.public_key, b->k.public_key, 32) != 0)                                         \
        return #k ".public_key";
    SAME_STR(id)
    SAME_STR(tenant)
    SAME_STR(cohort)
    SAME(state)
    SAME(allowed_algs)
    SAME_KEY(key)
    SAME_KEY(next)
    SAME(overlap_deadline_ns)
    SAME(last_key_id)
    SAME_STR(firmware)
    SAME(added_ns)
    SAME(enrolled_ns)
    SAME(state_changed_ns)
    SAME(enroll_expires_ns)
    return NULL;
#undef SAME_STR
#undef SAME
#undef SAME_KEY
}

static void print_device(const char *label, const stele_device_info *d)
{
    fprintf(stderr,
            "  %s: id=%s tenant=%s cohort=%s state=%s algs=%u key=(%u,%u,%" PRId64
            ") next=(%u,%u,%" PRId64 ") deadline=%" PRId64 " last_key=%u fw=%s added=%" PRId64
            " enrolled=%" PRId64 " changed=%" PRId64 " expires=%" PRId64 "\n",
            label, d->id, d->tenant, d->cohort, stele_device_state_name(d->state), d->allowed_algs,
            d->key.key_id, d->key.alg, d->key.added_ns, d->next.key_id, d->next.alg,
            d->next.added_ns, d->overlap_deadline_ns, d->last_key_id, d->firmware, d->added_ns,
            d->enrolled_ns, d->state_changed_ns, d->enroll_expires_ns);
}

static void expect_device(const stele_device_info *got, const stele_device_info *want,
                          const char *what)
{
    const char *field = device_diff(got, want);
    if (field) {
        print_device("expected", want);
        print_device("got     ", got);
        fail_msg("%s: device %s differs in %s", what, want->id, field);
    }
}

/* ---- listing ------------------------------------------------------------------- */

#define LIST_MAX 20000

typedef struct {
    stele_device_info *infos;
    size_t count;
    int stop_after; /* 0: never */
} list_result;

static int collect_device(void *ctx, const stele_device_info *info)
{
    list_result *l = ctx;
    assert_true(l->count < LIST_MAX);
    l->infos[l->count++] = *info;
    if (l->stop_after && (int)l->count == l->stop_after)
        return 42;
    return 0;
}

static list_result list_all(stele_registry *r, const char *tenant)
{
    list_result l = {.infos = calloc(LIST_MAX, sizeof(stele_device_info)), .count = 0};
    assert_non_null(l.infos);
    assert_int_equal(stele_registry_list(r, tenant, collect_device, &l), 0);
    return l;
}

/* ---- names and validation ------------------------------------------------------ */

static void test_names_and_validation(void **state)
{
    fixture *f = *state;
    char token[TOKEN_BUF];
    char small[TOKEN_BUF - 1];
    char id64[65];
    char long_text[66];
    stele_device_info info;

    assert_string_equal(stele_device_state_name(STELE_DEVICE_PENDING), "pending");
    assert_string_equal(stele_device_state_name(STELE_DEVICE_ACTIVE), "active");
    assert_string_equal(stele_device_state_name(STELE_DEVICE_QUARANTINED), "quarantined");
    assert_string_equal(stele_device_state_name(STELE_DEVICE_REVOKED), "revoked");
    memset(id64, 'a', 64);
    id64[64] = '\0';
    memset(long_text, 'b', 65);
    long_text[65] = '\0';
    assert_true(stele_device_id_valid("dev-1.A_z", 9));
    assert_true(stele_device_id_valid(id64, 64));
    assert_false(stele_device_id_valid(long_text, 65));
    assert_false(stele_device_id_valid("", 0));
    assert_false(stele_device_id_valid("a b", 3));
    assert_false(stele_device_id_valid("a/b", 3));
    assert_false(stele_device_id_valid("a\0b", 3));
    assert_false(stele_device_id_valid(NULL, 1));

    stele_registry *r = open_registry(f);
    /* Refused arguments write nothing and leave token_out empty. */
    assert_int_equal(stele_registry_add(r, "d1", "acme", "", small, sizeof(small), NULL), -EINVAL);
    assert_int_equal(stele_registry_add(r, "", "acme", "", token, sizeof(token), NULL), -EINVAL);
    assert_int_equal(stele_registry_add(r, long_text, "acme", "", token, sizeof(token), NULL),
                     -EINVAL);
    assert_string_equal(token, "");
    assert_int_equal(stele_registry_add(r, "d1", "_system", "", token, sizeof(token), NULL),
                     -EINVAL);
    assert_int_equal(stele_registry_add(r, "d1", "a.b", "", token, sizeof(token), NULL), -EINVAL);
    assert_int_equal(stele_registry_add(r, "d1", "", "", token, sizeof(token), NULL), -EINVAL);
    assert_int_equal(stele_registry_add(r, "d1", NULL, "", token, sizeof(token), NULL), -EINVAL);
    assert_int_equal(stele_registry_add(r, "d1", "acme", "a b", token, sizeof(token), NULL),
                     -EINVAL);
    assert_int_equal(stele_registry_add(r, "d1", "acme", long_text, token, sizeof(token), NULL),
                     -EINVAL);
    assert_int_equal(test_file_size(f->log_path), HEADER_SIZE);

    /* The limits themselves are fine: a 64-character id, tenant and cohort; no cohort. */
    add_device(r, id64, id64, id64, token, &info);
    assert_string_equal(info.id, id64);
    assert_string_equal(info.tenant, id64);
    assert_string_equal(info.cohort, id64);
    add_device(r, "d1", "Team_7-prod", NULL, token, &info);
    assert_string_equal(info.cohort, "");

    /* Enrollment arguments: algorithm, key, firmware. */
    uint8_t identity[32] = {1}; /* the neutral element: small order */
    const char *fw_bad[] = {"has\"quote", "back\\slash", "tab\there", "caf\xc3\xa9", long_text};
    assert_int_equal(stele_registry_enroll(r, "d1", token, strlen(token), 2, test_pk[0], "", NULL),
                     -EINVAL);
    assert_int_equal(stele_registry_enroll(r, "d1", token, strlen(token), 0, test_pk[0], "", NULL),
                     -EINVAL);
    assert_int_equal(stele_registry_enroll(r, "d1", token, strlen(token), ALG, identity, "", NULL),
                     -EINVAL);
    for (size_t i = 0; i < sizeof(fw_bad) / sizeof(fw_bad[0]); i++) {
        if (stele_registry_enroll(r, "d1", token, strlen(token), ALG, test_pk[0], fw_bad[i],
                                  NULL) != -EINVAL)
            fail_msg("firmware \"%s\": expected -EINVAL", fw_bad[i]);
    }
    assert_int_equal(get_device(r, "d1").state, STELE_DEVICE_PENDING); /* token unused */
    assert_int_equal(stele_registry_enroll(r, "d1", token, strlen(token), ALG, test_pk[0],
                                           "v1.0 (build 7) ~!@#$%^&*", &info),
                     0);
    assert_string_equal(info.firmware, "v1.0 (build 7) ~!@#$%^&*");
    stele_registry_close(r);
    stele_registry_close(NULL);
}

/* ---- lifecycle ----------------------------------------------------------------- */

typedef enum {
    ACT_ENROLL,
    ACT_REVOKE,
    ACT_QUARANTINE,
    ACT_RELEASE,
    ACT_REENROLL,
    ACT_ROTATE,
    ACT_PROMOTE_NEXT,    /* promote key 2, which no device here is rotating to */
    ACT_PROMOTE_CURRENT, /* promote the current key: "already done" when it has one */
    ACT_COUNT
} action;

static const char *const action_names[ACT_COUNT] = {
    "enroll", "revoke", "quarantine", "release", "reenroll", "rotate", "promote 2", "promote 1"};

/* Expected outcome of each action from each state: rc, resulting state, and whether a
 * record is written. */
typedef struct {
    int rc;
    stele_device_state after;
    bool writes;
} outcome;

#define P STELE_DEVICE_PENDING
#define A STELE_DEVICE_ACTIVE
#define Q STELE_DEVICE_QUARANTINED
#define R STELE_DEVICE_REVOKED
static const outcome transitions[STELE_DEVICE_STATES][ACT_COUNT] = {
    /* pending */
    [P] = {{0, A, true},
           {0, R, true},
           {-EPERM, P, false},
           {-EPERM, P, false},
           {0, P, true},
           {-EPERM, P, false},
           {-EPERM, P, false},
           {-EPERM, P, false}},
    /* active */
    [A] = {{-EACCES, A, false},
           {0, R, true},
           {0, Q, true},
           {0, A, false},
           {0, P, true},
           {0, A, true},
           {-EPERM, A, false},
           {0, A, false}},
    /* quarantined */
    [Q] = {{-EACCES, Q, false},
           {0, R, true},
           {0, Q, false},
           {0, A, true},
           {0, P, true},
           {0, Q, true},
           {-EPERM, Q, false},
           {0, Q, false}},
    /* revoked (from active: it keeps key 1, dead) */
    [R] = {{-EACCES, R, false},
           {0, R, false},
           {-EPERM, R, false},
           {-EPERM, R, false},
           {0, P, true},
           {-EPERM, R, false},
           {-EPERM, R, false},
           {0, R, false}},
};
#undef P
#undef A
#undef Q
#undef R

/* Every action from every state, against the table: rc, state after, a record written
 * or not, and the refused ones change nothing at all. */
static void test_every_transition(void **state)
{
    fixture *f = *state;
    stele_registry *r = open_registry(f);
    char token[TOKEN_BUF];
    char fresh[TOKEN_BUF];
    stele_device_info before;
    stele_device_info after;
    int n = 0;

    for (int s = 0; s < STELE_DEVICE_STATES; s++) {
        for (int a = 0; a < ACT_COUNT; a++) {
            char id[32];
            snprintf(id, sizeof(id), "dev-%d", n++);
            clock_set(&f->clock, T0 + n * NS);
            add_device(r, id, "acme", "c", token, NULL);
            if (s != STELE_DEVICE_PENDING)
                enroll_ok(r, id, token, 1, NULL);
            if (s == STELE_DEVICE_QUARANTINED)
                assert_int_equal(stele_registry_quarantine(r, id, NULL), 0);
            if (s == STELE_DEVICE_REVOKED)
                assert_int_equal(stele_registry_revoke(r, id, NULL), 0);
            before = get_device(r, id);
            assert_int_equal(before.state, (stele_device_state)s);
            clock_set(&f->clock, T0 + n * NS + NS / 2);
            uint64_t size = test_file_size(f->log_path);

            int rc = 0;
            memset(&after, 0xa5, sizeof(after));
            switch ((action)a) {
            case ACT_ENROLL:
                rc = enroll(r, id, token, 2, &after);
                break;
            case ACT_REVOKE:
                rc = stele_registry_revoke(r, id, &after);
                break;
            case ACT_QUARANTINE:
                rc = stele_registry_quarantine(r, id, &after);
                break;
            case ACT_RELEASE:
                rc = stele_registry_release(r, id, &after);
                break;
            case ACT_REENROLL:
                rc = stele_registry_reenroll(r, id, fresh, sizeof(fresh), &after);
                break;
            case ACT_ROTATE:
                rc = stele_registry_rotate(r, id, 1, ALG, test_pk[3], T0 + 100000 * NS, &after);
                break;
            case ACT_PROMOTE_NEXT:
                rc = stele_registry_promote_key(r, id, 2);
                break;
            case ACT_PROMOTE_CURRENT:
                rc = stele_registry_promote_key(r, id, 1);
                break;
            default:
                break;
            }
            const outcome *want = &transitions[s][a];
            stele_device_info now = get_device(r, id);
            if (rc != want->rc || now.state != want->after)
                fail_msg("%s from %s: expected rc %d and state %s, got rc %d and state %s",
                         action_names[a], stele_device_state_name((stele_device_state)s), want->rc,
                         stele_device_state_name(want->after), rc,
                         stele_device_state_name(now.state));
            bool wrote = test_file_size(f->log_path) != size;
            if (wrote != want->writes)
                fail_msg("%s from %s: expected %s, but %s", action_names[a],
                         stele_device_state_name((stele_device_state)s),
                         want->writes ? "a record" : "nothing written",
                         wrote ? "one was written" : "nothing was");
            if (rc != 0 || !want->writes) {
                expect_device(&now, &before, "refused or repeated action"); /* unchanged */
            } else {
                if (want->after != (stele_device_state)s)
                    assert_int_equal(now.state_changed_ns, T0 + n * NS + NS / 2);
                if (a != ACT_PROMOTE_NEXT && a != ACT_PROMOTE_CURRENT)
                    expect_device(&after, &now, "info_out");
            }
            if (rc == 0 && !want->writes && a != ACT_PROMOTE_NEXT && a != ACT_PROMOTE_CURRENT)
                expect_device(&after, &now, "info_out of a repeated action");
        }
    }
    stele_registry_close(r);
}

/* Add, enroll, key ids, tokens single use, expiry, reenroll: the fields step by step. */
static void test_enrollment_and_tokens(void **state)
{
    fixture *f = *state;
    char token[TOKEN_BUF];
    char token2[TOKEN_BUF];
    char bad[TOKEN_BUF + 1];
    stele_device_info info;
    stele_device_info got;

    stele_registry *r = open_registry(f);
    add_device(r, "meter-1", "acme", "canary", token, &info);
    assert_memory_equal(token, "sen_", 4);
    for (size_t i = 4; i < STELE_ENROLL_TOKEN_LEN; i++)
        assert_true((token[i] >= '0' && token[i] <= '9') || (token[i] >= 'a' && token[i] <= 'f'));
    assert_string_equal(info.id, "meter-1");
    assert_string_equal(info.tenant, "acme");
    assert_string_equal(info.cohort, "canary");
    assert_int_equal(info.state, STELE_DEVICE_PENDING);
    assert_int_equal(info.added_ns, T0);
    assert_int_equal(info.state_changed_ns, T0);
    assert_int_equal(info.enroll_expires_ns, T0 + TEST_TTL_NS);
    assert_int_equal(info.key.key_id, 0);
    assert_int_equal(info.last_key_id, 0);
    assert_int_equal(info.enrolled_ns, 0);
    assert_int_equal(info.allowed_algs, 0);
    got = get_device(r, "meter-1");
    expect_device(&got, &info, "get after add");
    assert_int_equal(stele_registry_add(r, "meter-1", "other", "", token2, sizeof(token2), NULL),
                     -EEXIST);
    assert_string_equal(token2, "");

    /* Wrong tokens, all -EACCES; the right one still works after them. */
    for (size_t i = 0; i < STELE_ENROLL_TOKEN_LEN; i++) {
        memcpy(bad, token, TOKEN_BUF);
        bad[i] = i < 4 ? (token[i] == 'x' ? 'y' : 'x') : (token[i] == '0' ? '1' : '0');
        if (enroll(r, "meter-1", bad, 0, NULL) != -EACCES)
            fail_msg("token changed at %zu: expected -EACCES", i);
    }
    memcpy(bad, token, TOKEN_BUF);
    for (size_t i = 4; i < STELE_ENROLL_TOKEN_LEN; i++) {
        if (bad[i] >= 'a' && bad[i] <= 'f') {
            bad[i] = (char)(bad[i] - 'a' + 'A'); /* same bytes, not the token's spelling */
            break;
        }
    }
    if (strcmp(bad, token) != 0)
        assert_int_equal(enroll(r, "meter-1", bad, 0, NULL), -EACCES);
    assert_int_equal(stele_registry_enroll(r, "meter-1", token, STELE_ENROLL_TOKEN_LEN - 1, ALG,
                                           test_pk[0], "", NULL),
                     -EACCES);
    memcpy(bad, token, TOKEN_BUF);
    bad[STELE_ENROLL_TOKEN_LEN] = '0';
    bad[STELE_ENROLL_TOKEN_LEN + 1] = '\0';
    assert_int_equal(enroll(r, "meter-1", bad, 0, NULL), -EACCES);
    assert_int_equal(stele_registry_enroll(r, "meter-1", NULL, 0, ALG, test_pk[0], "", NULL),
                     -EACCES);
    assert_int_equal(enroll(r, "meter-1", "", 0, NULL), -EACCES);
    add_device(r, "meter-2", "acme", "", token2, NULL);
    assert_int_equal(enroll(r, "meter-1", token2, 0, NULL), -EACCES); /* another's token */
    assert_int_equal(enroll(r, "nobody", token, 0, NULL), -ENOENT);
    assert_int_equal(get_device(r, "meter-1").state, STELE_DEVICE_PENDING);

    /* Expiry: the last nanosecond before works, the expiry instant does not. */
    clock_set(&f->clock, T0 + TEST_TTL_NS);
    assert_int_equal(enroll(r, "meter-1", token, 0, NULL), -EACCES);
    clock_set(&f->clock, T0 + TEST_TTL_NS - 1);
    enroll_ok(r, "meter-1", token, 0, &info);
    assert_int_equal(info.state, STELE_DEVICE_ACTIVE);
    assert_int_equal(info.key.key_id, 1);
    assert_int_equal(info.key.alg, ALG);
    assert_memory_equal(info.key.public_key, test_pk[0], 32);
    assert_int_equal(info.key.added_ns, T0 + TEST_TTL_NS - 1);
    assert_int_equal(info.next.key_id, 0);
    assert_int_equal(info.last_key_id, 1);
    assert_int_equal(info.allowed_algs, 1u << ALG);
    assert_string_equal(info.firmware, "fw-1.0");
    assert_int_equal(info.enrolled_ns, T0 + TEST_TTL_NS - 1);
    assert_int_equal(info.state_changed_ns, T0 + TEST_TTL_NS - 1);
    assert_int_equal(info.enroll_expires_ns, 0);
    assert_int_equal(info.added_ns, T0);
    got = get_device(r, "meter-1");
    expect_device(&got, &info, "get after enroll");

    /* Single use: the same token again fails, even with the same key. */
    uint64_t size = test_file_size(f->log_path);
    assert_int_equal(enroll(r, "meter-1", token, 0, NULL), -EACCES);
    assert_int_equal(test_file_size(f->log_path), size);

    /* Reenroll: a new token, keys dead, the old token dead; next key id is 2. */
    clock_set(&f->clock, T0 + 5000 * NS);
    char again[TOKEN_BUF];
    assert_int_equal(stele_registry_reenroll(r, "meter-1", again, sizeof(again), &info), 0);
    assert_string_not_equal(again, token);
    assert_int_equal(info.state, STELE_DEVICE_PENDING);
    assert_int_equal(info.key.key_id, 0);
    assert_int_equal(info.next.key_id, 0);
    assert_int_equal(info.allowed_algs, 0);
    assert_int_equal(info.last_key_id, 1);
    assert_int_equal(info.enrolled_ns, 0);
    assert_string_equal(info.firmware, "");
    assert_int_equal(info.enroll_expires_ns, T0 + 5000 * NS + TEST_TTL_NS);
    assert_int_equal(info.state_changed_ns, T0 + 5000 * NS);
    assert_int_equal(info.added_ns, T0);
    assert_int_equal(enroll(r, "meter-1", token, 1, NULL), -EACCES);
    /* Reenroll while pending replaces the token. */
    char third[TOKEN_BUF];
    assert_int_equal(stele_registry_reenroll(r, "meter-1", third, sizeof(third), NULL), 0);
    assert_int_equal(enroll(r, "meter-1", again, 1, NULL), -EACCES);
    enroll_ok(r, "meter-1", third, 1, &info);
    assert_int_equal(info.key.key_id, 2);
    assert_int_equal(info.last_key_id, 2);
    assert_memory_equal(info.key.public_key, test_pk[1], 32);

    /* A revoked pending device's token is dead too. */
    assert_int_equal(stele_registry_revoke(r, "meter-2", &info), 0);
    assert_int_equal(info.enroll_expires_ns, 0);
    assert_int_equal(enroll(r, "meter-2", token2, 0, NULL), -EACCES);
    assert_int_equal(stele_registry_revoke(r, "nobody", NULL), -ENOENT);
    assert_int_equal(stele_registry_quarantine(r, "nobody", NULL), -ENOENT);
    assert_int_equal(stele_registry_release(r, "nobody", NULL), -ENOENT);
    assert_int_equal(stele_registry_reenroll(r, "nobody", again, sizeof(again), NULL), -ENOENT);
    assert_int_equal(stele_registry_rotate(r, "nobody", 1, ALG, test_pk[2], T0 + 9000 * NS, NULL),
                     -ENOENT);
    assert_int_equal(stele_registry_promote_key(r, "nobody", 1), -ENOENT);
    stele_registry_close(r);

    /* Everything above survives a restart; tokens stay single use across it. */
    r = open_registry(f);
    assert_int_equal(enroll(r, "meter-1", third, 2, NULL), -EACCES);
    info = get_device(r, "meter-1");
    assert_int_equal(info.key.key_id, 2);
    assert_int_equal(info.state, STELE_DEVICE_ACTIVE);
    stele_registry_close(r);
}

/* Rotation: next key id, deadline stored, retried requests, promotion, key ids never
 * reused across rotations and re-enrollments. */
static void test_rotation(void **state)
{
    fixture *f = *state;
    char token[TOKEN_BUF];
    stele_device_info info;
    stele_device_info got;

    stele_registry *r = open_registry(f);
    add_device(r, "cam", "acme", "", token, NULL);
    enroll_ok(r, "cam", token, 0, NULL);
    clock_set(&f->clock, T0 + 10 * NS);
    int64_t deadline = T0 + 3600 * NS;

    /* Refused starts: wrong old key, unsupported algorithm, invalid or same key, deadline
     * not after now. Nothing written. */
    uint64_t size = test_file_size(f->log_path);
    uint8_t identity[32] = {1};
    assert_int_equal(stele_registry_rotate(r, "cam", 2, ALG, test_pk[5], deadline, NULL), -EPERM);
    assert_int_equal(stele_registry_rotate(r, "cam", 0, ALG, test_pk[5], deadline, NULL), -EPERM);
    assert_int_equal(stele_registry_rotate(r, "cam", 1, 2, test_pk[5], deadline, NULL), -EINVAL);
    assert_int_equal(stele_registry_rotate(r, "cam", 1, ALG, identity, deadline, NULL), -EINVAL);
    assert_int_equal(stele_registry_rotate(r, "cam", 1, ALG, test_pk[0], deadline, NULL), -EINVAL);
    assert_int_equal(stele_registry_rotate(r, "cam", 1, ALG, test_pk[5], T0 + 10 * NS, NULL),
                     -EINVAL);
    assert_int_equal(test_file_size(f->log_path), size);

    assert_int_equal(stele_registry_rotate(r, "cam", 1, ALG, test_pk[5], deadline, &info), 0);
    assert_int_equal(info.key.key_id, 1);
    assert_memory_equal(info.key.public_key, test_pk[0], 32);
    assert_int_equal(info.next.key_id, 2);
    assert_int_equal(info.next.alg, ALG);
    assert_memory_equal(info.next.public_key, test_pk[5], 32);
    assert_int_equal(info.next.added_ns, T0 + 10 * NS);
    assert_int_equal(info.overlap_deadline_ns, deadline);
    assert_int_equal(info.last_key_id, 2);
    assert_int_equal(info.state_changed_ns, T0); /* not a lifecycle change */
    got = get_device(r, "cam");
    expect_device(&got, &info, "get after rotate");

    /* Retried: 0, nothing written, the first deadline kept. Another key meanwhile: no. */
    size = test_file_size(f->log_path);
    clock_set(&f->clock, T0 + 20 * NS);
    assert_int_equal(stele_registry_rotate(r, "cam", 1, ALG, test_pk[5], deadline + NS, &got), 0);
    expect_device(&got, &info, "retried rotate");
    assert_int_equal(stele_registry_rotate(r, "cam", 1, ALG, test_pk[6], deadline, NULL), -EPERM);
    assert_int_equal(stele_registry_rotate(r, "cam", 2, ALG, test_pk[6], deadline, NULL), -EPERM);
    assert_int_equal(test_file_size(f->log_path), size);
    got = get_device(r, "cam");
    expect_device(&got, &info, "after refused rotations");

    /* Promote: only the pending key; then again is a no-op. */
    assert_int_equal(stele_registry_promote_key(r, "cam", 3), -EPERM);
    assert_int_equal(stele_registry_promote_key(r, "cam", 0), -EINVAL);
    assert_int_equal(stele_registry_promote_key(r, "cam", 1), -EPERM); /* old key, mid-rotation */
    assert_int_equal(test_file_size(f->log_path), size);
    assert_int_equal(stele_registry_promote_key(r, "cam", 2), 0);
    info = get_device(r, "cam");
    assert_int_equal(info.key.key_id, 2);
    assert_memory_equal(info.key.public_key, test_pk[5], 32);
    assert_int_equal(info.key.added_ns, T0 + 10 * NS);
    assert_int_equal(info.next.key_id, 0);
    assert_int_equal(info.overlap_deadline_ns, 0);
    assert_int_equal(info.last_key_id, 2);
    size = test_file_size(f->log_path);
    assert_int_equal(stele_registry_promote_key(r, "cam", 2), 0);
    /* The rotation request retried after its promotion: 0, nothing written. */
    assert_int_equal(stele_registry_rotate(r, "cam", 1, ALG, test_pk[5], deadline, &got), 0);
    expect_device(&got, &info, "rotate retried after promotion");
    assert_int_equal(test_file_size(f->log_path), size);

    /* Quarantined devices rotate too; key ids go on: 3, and 4 after a reenroll. */
    assert_int_equal(stele_registry_quarantine(r, "cam", NULL), 0);
    assert_int_equal(stele_registry_rotate(r, "cam", 2, ALG, test_pk[7], deadline, &info), 0);
    assert_int_equal(info.next.key_id, 3);
    assert_int_equal(info.state, STELE_DEVICE_QUARANTINED);
    assert_int_equal(stele_registry_reenroll(r, "cam", token, sizeof(token), &info), 0);
    assert_int_equal(info.key.key_id, 0);
    assert_int_equal(info.next.key_id, 0);
    assert_int_equal(info.overlap_deadline_ns, 0);
    assert_int_equal(info.last_key_id, 3);
    assert_int_equal(stele_registry_promote_key(r, "cam", 3), -EPERM); /* dead with the reenroll */
    enroll_ok(r, "cam", token, 8, &info);
    assert_int_equal(info.key.key_id, 4);
    assert_int_equal(info.last_key_id, 4);

    /* Revoked: no rotation, no promotion of a pending one. */
    assert_int_equal(stele_registry_rotate(r, "cam", 4, ALG, test_pk[9], deadline, NULL), 0);
    assert_int_equal(stele_registry_revoke(r, "cam", NULL), 0);
    assert_int_equal(stele_registry_promote_key(r, "cam", 5), -EPERM);
    assert_int_equal(stele_registry_rotate(r, "cam", 4, ALG, test_pk[10], deadline, NULL), -EPERM);
    info = get_device(r, "cam");
    stele_registry_close(r);

    r = open_registry(f);
    got = get_device(r, "cam");
    expect_device(&got, &info, "after reopen");
    assert_int_equal(got.next.key_id, 5);
    assert_int_equal(got.overlap_deadline_ns, deadline);
    stele_registry_close(r);
}

static int call_back_into(void *ctx, const stele_device_info *info)
{
    stele_registry *r = ctx;
    stele_device_info again;
    /* The callback runs without the registry's locks: lookups and mutations work. */
    assert_int_equal(stele_registry_get(r, info->id, strlen(info->id), &again), 0);
    if (info->state == STELE_DEVICE_ACTIVE)
        assert_int_equal(stele_registry_quarantine(r, info->id, NULL), 0);
    return 0;
}

static void test_list_counts_touch_get(void **state)
{
    fixture *f = *state;
    char token[TOKEN_BUF];
    static const char *const ids[] = {"z-last-alpha", "a-first-alpha", "m", "b2", "c.3", "x_9"};
    static const char *const tenants[] = {"acme", "beta", "acme", "gamma", "acme", "beta"};
    enum { N = sizeof(ids) / sizeof(ids[0]) };
    uint64_t counts[STELE_DEVICE_STATES];

    stele_registry *r = open_registry(f);
    stele_registry_counts(r, counts);
    for (int i = 0; i < STELE_DEVICE_STATES; i++)
        assert_int_equal(counts[i], 0);
    list_result l = list_all(r, NULL);
    assert_int_equal(l.count, 0);
    free(l.infos);

    for (int i = 0; i < N; i++) {
        add_device(r, ids[i], tenants[i], "", token, NULL);
        if (i % 2 == 0)
            enroll_ok(r, ids[i], token, i, NULL);
    }
    assert_int_equal(stele_registry_quarantine(r, "m", NULL), 0);
    assert_int_equal(stele_registry_revoke(r, "b2", NULL), 0);
    stele_registry_counts(r, counts);
    assert_int_equal(counts[STELE_DEVICE_PENDING], 2);
    assert_int_equal(counts[STELE_DEVICE_ACTIVE], 2);
    assert_int_equal(counts[STELE_DEVICE_QUARANTINED], 1);
    assert_int_equal(counts[STELE_DEVICE_REVOKED], 1);

    /* Add order, not id order; tenant filter keeps that order. */
    l = list_all(r, NULL);
    assert_int_equal(l.count, N);
    for (int i = 0; i < N; i++)
        assert_string_equal(l.infos[i].id, ids[i]);
    free(l.infos);
    l = list_all(r, "acme");
    assert_int_equal(l.count, 3);
    assert_string_equal(l.infos[0].id, "z-last-alpha");
    assert_string_equal(l.infos[1].id, "m");
    assert_string_equal(l.infos[2].id, "c.3");
    free(l.infos);
    l = list_all(r, "nobody");
    assert_int_equal(l.count, 0);
    free(l.infos);
    l = (list_result){.infos = calloc(LIST_MAX, sizeof(stele_device_info)), .stop_after = 2};
    assert_int_equal(stele_registry_list(r, NULL, collect_device, &l), 42);
    assert_int_equal(l.count, 2);
    free(l.infos);
    assert_int_equal(stele_registry_list(r, "beta", call_back_into, r), 0);
    assert_int_equal(stele_registry_list(r, NULL, call_back_into, r), 0);
    stele_registry_counts(r, counts);
    assert_int_equal(counts[STELE_DEVICE_ACTIVE], 0);
    assert_int_equal(counts[STELE_DEVICE_QUARANTINED], 3);

    /* touch keeps the newest, ignores unknown ids; get takes a length, not a NUL. */
    stele_registry_touch(r, "c.3", 3, T0 + 50);
    stele_registry_touch(r, "c.3", 3, T0 + 20);
    stele_registry_touch(r, "nope", 4, T0 + 99);
    stele_registry_touch(r, "c.3xyz", 3, T0 + 40);
    stele_device_info info;
    const char buffer[] = "c.3xyz";
    assert_int_equal(stele_registry_get(r, buffer, 3, &info), 0);
    assert_string_equal(info.id, "c.3");
    assert_int_equal(info.last_seen_ns, T0 + 50);
    assert_int_equal(stele_registry_get(r, buffer, 4, &info), -ENOENT);
    assert_int_equal(stele_registry_get(r, buffer, 0, &info), -ENOENT);
    assert_int_equal(stele_registry_get(r, "nope", 4, &info), -ENOENT);
    l = list_all(r, NULL);
    assert_int_equal(l.infos[4].last_seen_ns, T0 + 50);
    free(l.infos);
    assert_int_equal(stele_registry_health(r), 0);
    stele_registry_close(r);

    /* last_seen is memory only; counts and order come back from the log. */
    r = open_registry(f);
    assert_int_equal(stele_registry_get(r, "c.3", 3, &info), 0);
    assert_int_equal(info.last_seen_ns, 0);
    uint64_t again[STELE_DEVICE_STATES];
    stele_registry_counts(r, again);
    stele_registry_counts(r, counts);
    assert_memory_equal(again, counts, sizeof(counts));
    assert_int_equal(counts[STELE_DEVICE_PENDING], 2);
    assert_int_equal(counts[STELE_DEVICE_QUARANTINED], 3);
    assert_int_equal(counts[STELE_DEVICE_REVOKED], 1);
    l = list_all(r, NULL);
    for (int i = 0; i < N; i++)
        assert_string_equal(l.infos[i].id, ids[i]);
    free(l.infos);
    stele_registry_close(r);
}

/* ---- the model ------------------------------------------------------------------- */

/* An independent model of the lifecycle, written from registry.h. */
#define MODEL_DEVICES 12

typedef struct {
    bool exists;
    stele_device_info info;
    char token[TOKEN_BUF]; /* the live token when known, else "" */
} model_device;

typedef struct {
    model_device dev[MODEL_DEVICES];
    int order[MODEL_DEVICES];
    int order_count;
} model;

typedef enum {
    OP_ADD,
    OP_ENROLL,       /* with the model's token (a made-up one when it knows none) */
    OP_ENROLL_WRONG, /* with a made-up token */
    OP_REVOKE,
    OP_QUARANTINE,
    OP_RELEASE,
    OP_REENROLL,
    OP_ROTATE,
    OP_PROMOTE,
    OP_TOUCH,
    OP_KINDS
} op_kind;

static const char *const op_names[OP_KINDS] = {"add",        "enroll",  "enroll-wrong", "revoke",
                                               "quarantine", "release", "reenroll",     "rotate",
                                               "promote",    "touch"};

typedef struct {
    op_kind kind;
    int dev;
    int key;         /* test_pk index: enroll, rotate */
    uint32_t key_id; /* rotate: the old key id; promote: the key id */
    int64_t deadline;
    int tenant; /* add */
} op;

static const char *const model_tenants[] = {"acme", "beta", "gamma"};
static const char *const model_cohorts[] = {"", "canary", "stable"};
static const char *const model_firmware[] = {"", "1.0.0", "2.3.4-rc1 (x86)"};

static void device_name(int dev, char *buf, size_t cap)
{
    snprintf(buf, cap, "dev-%02d", dev);
}

static bool keyed(const stele_device_info *d)
{
    return d->state == STELE_DEVICE_ACTIVE || d->state == STELE_DEVICE_QUARANTINED;
}

static bool model_key_is(const stele_device_key *k, int key)
{
    return k->key_id != 0 && k->alg == ALG && memcmp(k->public_key, test_pk[key], 32) == 0;
}

/* Applies o at `now` to m; returns the rc the registry must give. *writes: whether a
 * record is written (so a fault on it fails the call). */
static int model_apply(model *m, const op *o, int64_t now, bool *writes)
{
    model_device *md = &m->dev[o->dev];
    stele_device_info *d = &md->info;
    *writes = false;
    if (o->kind == OP_TOUCH)
        return 0;
    if (o->kind == OP_PROMOTE && o->key_id == 0)
        return -EINVAL;
    if (o->kind == OP_ADD) {
        if (md->exists)
            return -EEXIST;
        md->exists = true;
        memset(d, 0, sizeof(*d));
        device_name(o->dev, d->id, sizeof(d->id));
        snprintf(d->tenant, sizeof(d->tenant), "%s", model_tenants[o->tenant]);
        snprintf(d->cohort, sizeof(d->cohort), "%s", model_cohorts[o->dev % 3]);
        d->state = STELE_DEVICE_PENDING;
        d->added_ns = d->state_changed_ns = now;
        d->enroll_expires_ns = now + TEST_TTL_NS;
        md->token[0] = '\0'; /* filled from the registry's answer */
        m->order[m->order_count++] = o->dev;
        *writes = true;
        return 0;
    }
    if (!md->exists)
        return -ENOENT;
    switch (o->kind) {
    case OP_ENROLL:
    case OP_ENROLL_WRONG:
        if (o->kind == OP_ENROLL_WRONG || md->token[0] == '\0' ||
            d->state != STELE_DEVICE_PENDING || now >= d->enroll_expires_ns)
            return -EACCES;
        d->state = STELE_DEVICE_ACTIVE;
        d->last_key_id++;
        d->key = (stele_device_key){.key_id = d->last_key_id, .alg = ALG, .added_ns = now};
        memcpy(d->key.public_key, test_pk[o->key], 32);
        memset(&d->next, 0, sizeof(d->next));
        d->allowed_algs = 1u << ALG;
        snprintf(d->firmware, sizeof(d->firmware), "%s", model_firmware[o->key % 3]);
        d->enrolled_ns = d->state_changed_ns = now;
        d->enroll_expires_ns = 0;
        md->token[0] = '\0';
        break;
    case OP_REVOKE:
        if (d->state == STELE_DEVICE_REVOKED)
            return 0;
        d->state = STELE_DEVICE_REVOKED;
        d->state_changed_ns = now;
        d->enroll_expires_ns = 0;
        md->token[0] = '\0';
        break;
    case OP_QUARANTINE:
        if (d->state == STELE_DEVICE_QUARANTINED)
            return 0;
        if (d->state != STELE_DEVICE_ACTIVE)
            return -EPERM;
        d->state = STELE_DEVICE_QUARANTINED;
        d->state_changed_ns = now;
        break;
    case OP_RELEASE:
        if (d->state == STELE_DEVICE_ACTIVE)
            return 0;
        if (d->state != STELE_DEVICE_QUARANTINED)
            return -EPERM;
        d->state = STELE_DEVICE_ACTIVE;
        d->state_changed_ns = now;
        break;
    case OP_REENROLL:
        d->state = STELE_DEVICE_PENDING;
        memset(&d->key, 0, sizeof(d->key));
        memset(&d->next, 0, sizeof(d->next));
        d->overlap_deadline_ns = 0;
        d->allowed_algs = 0;
        d->firmware[0] = '\0';
        d->enrolled_ns = 0;
        d->state_changed_ns = now;
        d->enroll_expires_ns = now + TEST_TTL_NS;
        md->token[0] = '\0'; /* filled from the registry's answer */
        break;
    case OP_ROTATE:
        if (!keyed(d))
            return -EPERM;
        if (d->next.key_id != 0 && d->key.key_id == o->key_id && model_key_is(&d->next, o->key))
            return 0; /* retried */
        if (d->next.key_id == 0 && o->key_id < d->key.key_id && model_key_is(&d->key, o->key))
            return 0; /* retried after its promotion */
        if (d->next.key_id != 0 || d->key.key_id != o->key_id)
            return -EPERM;
        if (o->deadline <= now || model_key_is(&d->key, o->key))
            return -EINVAL;
        d->last_key_id++;
        d->next = (stele_device_key){.key_id = d->last_key_id, .alg = ALG, .added_ns = now};
        memcpy(d->next.public_key, test_pk[o->key], 32);
        d->overlap_deadline_ns = o->deadline;
        break;
    case OP_PROMOTE:
        if (d->key.key_id == o->key_id && d->next.key_id == 0)
            return 0;
        if (!keyed(d) || d->next.key_id != o->key_id)
            return -EPERM;
        d->key = d->next;
        memset(&d->next, 0, sizeof(d->next));
        d->overlap_deadline_ns = 0;
        break;
    default:
        break;
    }
    *writes = true;
    return 0;
}

/* A random operation, biased towards ones that succeed. */
static op random_op(uint64_t *rng, const model *m, int64_t now)
{
    op o = {.kind = (op_kind)rng_below(rng, OP_KINDS), .dev = (int)rng_below(rng, MODEL_DEVICES)};
    const stele_device_info *d = &m->dev[o.dev].info;
    o.key = (int)rng_below(rng, TEST_KEYS);
    o.tenant = (int)rng_below(rng, 3);
    switch (o.kind) {
    case OP_ROTATE: {
        uint64_t pick = rng_below(rng, 10);
        o.key_id = pick < 7 ? d->key.key_id : (uint32_t)rng_below(rng, 4);
        if (pick == 9 && d->next.key_id != 0) {
            /* the retried request */
            for (int k = 0; k < TEST_KEYS; k++)
                if (model_key_is(&d->next, k))
                    o.key = k;
        }
        o.deadline = now + (int64_t)rng_below(rng, 10) * 100 * NS - 50 * NS;
        break;
    }
    case OP_PROMOTE:
        o.key_id = rng_below(rng, 4) ? d->next.key_id : (uint32_t)rng_below(rng, 4);
        break;
    default:
        break;
    }
    return o;
}

/* The registry's answer to o; `token` is the model's token before the op. */
static int run_op_with_token(stele_registry *r, const op *o, const char *model_token,
                             char *token_out, stele_device_info *info)
{
    char id[32];
    char made_up[TOKEN_BUF];
    device_name(o->dev, id, sizeof(id));
    snprintf(made_up, sizeof(made_up), "sen_%064d", o->key);
    memset(info, 0, sizeof(*info));
    token_out[0] = '\0';
    switch (o->kind) {
    case OP_ADD:
        return stele_registry_add(r, id, model_tenants[o->tenant], model_cohorts[o->dev % 3],
                                  token_out, TOKEN_BUF, info);
    case OP_ENROLL:
    case OP_ENROLL_WRONG: {
        const char *t = o->kind == OP_ENROLL && model_token[0] ? model_token : made_up;
        return stele_registry_enroll(r, id, t, strlen(t), ALG, test_pk[o->key],
                                     model_firmware[o->key % 3], info);
    }
    case OP_REVOKE:
        return stele_registry_revoke(r, id, info);
    case OP_QUARANTINE:
        return stele_registry_quarantine(r, id, info);
    case OP_RELEASE:
        return stele_registry_release(r, id, info);
    case OP_REENROLL:
        return stele_registry_reenroll(r, id, token_out, TOKEN_BUF, info);
    case OP_ROTATE:
        return stele_registry_rotate(r, id, o->key_id, ALG, test_pk[o->key], o->deadline, info);
    case OP_PROMOTE:
        return stele_registry_promote_key(r, id, o->key_id);
    case OP_TOUCH:
        stele_registry_touch(r, id, strlen(id), T0);
        return 0;
    default:
        return -ENOSYS;
    }
}

/* Whether the registry holds exactly the model: every device, every field, add order,
 * counts. Returns NULL or what differs (details on stderr when verbose). */
static const char *registry_matches(stele_registry *r, const model *m, bool verbose)
{
    static char why[256];
    list_result l = list_all(r, NULL);
    uint64_t counts[STELE_DEVICE_STATES];
    uint64_t want[STELE_DEVICE_STATES] = {0};
    const char *result = NULL;
    if ((int)l.count != m->order_count) {
        snprintf(why, sizeof(why), "%zu devices listed, the model has %d", l.count, m->order_count);
        result = why;
        goto out;
    }
    for (int i = 0; i < m->order_count; i++) {
        const stele_device_info *d = &m->dev[m->order[i]].info;
        const char *field = device_diff(&l.infos[i], d);
        want[d->state]++;
        if (field) {
            if (verbose) {
                print_device("model   ", d);
                print_device("registry", &l.infos[i]);
            }
            snprintf(why, sizeof(why), "device #%d (%s) differs in %s", i, d->id, field);
            result = why;
            goto out;
        }
    }
    stele_registry_counts(r, counts);
    if (memcmp(counts, want, sizeof(want)) != 0) {
        snprintf(why, sizeof(why), "counts differ from the model's");
        result = why;
        goto out;
    }
    /* Lookups agree with the list, and know no device the model does not. */
    for (int dev = 0; dev < MODEL_DEVICES; dev++) {
        char id[32];
        stele_device_info got;
        device_name(dev, id, sizeof(id));
        int rc = stele_registry_get(r, id, strlen(id), &got);
        const char *field = rc == 0 ? device_diff(&got, &m->dev[dev].info) : NULL;
        if ((rc == 0) != m->dev[dev].exists || field) {
            snprintf(why, sizeof(why), "get(%s) gives %d%s%s, the model %s it", id, rc,
                     field ? ", differing in " : "", field ? field : "",
                     m->dev[dev].exists ? "has" : "does not have");
            result = why;
            goto out;
        }
    }
out:
    free(l.infos);
    return result;
}

/* ---- reopen: random operations -------------------------------------------------- */

/* Seeded random operations on a registry and the model; after each one the answer and
 * the device match the model; every few operations the registry is closed and reopened
 * and must list exactly what it listed before (every field of every device, in order). */
static void test_reopen_equals_before(void **state)
{
    fixture *f = *state;
    enum { SEEDS = 12, OPS = 400, REOPEN_EVERY = 37 };
    uint64_t seed0 = first_seed(1000);

    for (uint64_t seed = seed0; seed < seed0 + SEEDS; seed++) {
        uint64_t rng = seed;
        model m;
        memset(&m, 0, sizeof(m));
        unlink(f->log_path);
        int64_t now = T0;
        clock_set(&f->clock, now);
        stele_registry *r = open_registry(f);
        for (int step = 0; step < OPS; step++) {
            now += rng_below(&rng, 8) ? (int64_t)rng_below(&rng, 20) * NS : TEST_TTL_NS / 2;
            clock_set(&f->clock, now);
            op o = random_op(&rng, &m, now);
            char model_token[TOKEN_BUF];
            char token[TOKEN_BUF];
            stele_device_info info;
            bool writes = false;
            memcpy(model_token, m.dev[o.dev].token, TOKEN_BUF);
            model next = m;
            int want = model_apply(&next, &o, now, &writes);
            int rc = run_op_with_token(r, &o, model_token, token, &info);
            if (rc != want)
                fail_msg("seed %" PRIu64 " step %d: %s dev-%02d: expected %d, got %d", seed, step,
                         op_names[o.kind], o.dev, want, rc);
            if (rc == 0 && (o.kind == OP_ADD || o.kind == OP_REENROLL))
                memcpy(next.dev[o.dev].token, token, TOKEN_BUF);
            m = next;
            if (rc == 0 && o.kind != OP_PROMOTE && o.kind != OP_TOUCH) {
                const char *field = device_diff(&info, &m.dev[o.dev].info);
                if (field)
                    fail_msg("seed %" PRIu64 " step %d: %s: info_out differs in %s", seed, step,
                             op_names[o.kind], field);
            }
            if (step % REOPEN_EVERY == REOPEN_EVERY - 1 || step == OPS - 1) {
                const char *why = registry_matches(r, &m, true);
                if (why)
                    fail_msg("seed %" PRIu64 " step %d: before reopen: %s", seed, step, why);
                list_result before = list_all(r, NULL);
                stele_registry_close(r);
                r = open_registry(f);
                list_result after = list_all(r, NULL);
                if (after.count != before.count)
                    fail_msg("seed %" PRIu64 " step %d: %zu devices before reopen, %zu after", seed,
                             step, before.count, after.count);
                for (size_t i = 0; i < before.count; i++) {
                    const char *field = device_diff(&after.infos[i], &before.infos[i]);
                    if (field)
                        fail_msg("seed %" PRIu64 " step %d: device %s differs after reopen in %s",
                                 seed, step, before.infos[i].id, field);
                    assert_int_equal(after.infos[i].last_seen_ns, 0);
                }
                free(before.infos);
                free(after.infos);
                why = registry_matches(r, &m, true);
                if (why)
                    fail_msg("seed %" PRIu64 " step %d: after reopen: %s", seed, step, why);
            }
        }
        stele_registry_close(r);
    }
}

/* ---- crash safety (fault-injecting io) ------------------------------------------ */

#define FAULT_DATA_DIR "/data"

static const char *const cut_names[] = {"drop", "torn", "garbage"};

/* Random operations on the fault io, with power cuts: between operations (the state
 * after reopening must be exactly the model's), or during one whose write or fsync was
 * made to fail (it must answer -EIO, the registry must stay failed, and after the cut the
 * state must be the model's, or the model's plus that one operation). The run then goes
 * on on the reopened registry. */
static void test_power_cuts(void **state)
{
    (void)state;
    enum { SEEDS = 150, OPS = 120 };
    uint64_t seed0 = first_seed(1);
    int cuts = 0, in_flight_kept = 0, in_flight_lost = 0;

    for (uint64_t seed = seed0; seed < seed0 + SEEDS; seed++) {
        uint64_t rng = seed * 7919;
        stele_io *io = test_fault_io_with_dir(seed, FAULT_DATA_DIR);
        test_clock clock;
        int64_t now = T0;
        clock_set(&clock, now);
        model m;
        memset(&m, 0, sizeof(m));
        stele_registry *r = open_at(io, FAULT_DATA_DIR, &clock);

        for (int step = 0; step < OPS; step++) {
            now += (int64_t)rng_below(&rng, 30) * NS;
            clock_set(&clock, now);
            op o = random_op(&rng, &m, now);
            char model_token[TOKEN_BUF];
            char token[TOKEN_BUF];
            stele_device_info info;
            bool writes = false;
            memcpy(model_token, m.dev[o.dev].token, TOKEN_BUF);
            model next = m;
            int want = model_apply(&next, &o, now, &writes);
            uint64_t pick = rng_below(&rng, 100);
            bool fault = pick < 12;
            bool cut_between = pick >= 12 && pick < 18;
            enum stele_fault_cut_mode mode = (enum stele_fault_cut_mode)rng_below(&rng, 3);

            if (cut_between) {
                stele_io_fault_power_cut(io, mode);
                stele_registry_close(r);
                r = open_at(io, FAULT_DATA_DIR, &clock);
                const char *why = registry_matches(r, &m, true);
                if (why)
                    fail_msg("seed %" PRIu64 " step %d: after a %s cut between operations: %s",
                             seed, step, cut_names[mode], why);
                cuts++;
            }
            if (fault)
                stele_io_fault_fail_after(
                    io, rng_below(&rng, 3) ? STELE_FAULT_OP_FSYNC : STELE_FAULT_OP_WRITE, 1, EIO);
            int rc = run_op_with_token(r, &o, model_token, token, &info);
            if (fault && writes) {
                if (rc != -EIO)
                    fail_msg("seed %" PRIu64 " step %d: %s under a failing write/fsync: "
                             "expected -EIO, got %d",
                             seed, step, op_names[o.kind], rc);
                /* Not applied in memory, and the registry stays failed without I/O. */
                const char *why = registry_matches(r, &m, true);
                if (why)
                    fail_msg("seed %" PRIu64 " step %d: a failed %s changed memory: %s", seed, step,
                             op_names[o.kind], why);
                assert_int_equal(stele_registry_health(r), -EIO);
                uint64_t writes_before = stele_io_fault_op_count(io, STELE_FAULT_OP_WRITE);
                uint64_t fsyncs_before = stele_io_fault_op_count(io, STELE_FAULT_OP_FSYNC);
                char t2[TOKEN_BUF];
                assert_int_equal(
                    stele_registry_add(r, "after-failure", "acme", "", t2, sizeof(t2), NULL), -EIO);
                assert_int_equal(stele_registry_revoke(r, "dev-00", NULL), -EIO);
                assert_int_equal(stele_io_fault_op_count(io, STELE_FAULT_OP_WRITE), writes_before);
                assert_int_equal(stele_io_fault_op_count(io, STELE_FAULT_OP_FSYNC), fsyncs_before);

                stele_io_fault_power_cut(io, mode);
                stele_registry_close(r);
                r = open_at(io, FAULT_DATA_DIR, &clock);
                bool kept = registry_matches(r, &next, false) == NULL;
                if (!kept) {
                    const char *why = registry_matches(r, &m, true);
                    if (why)
                        fail_msg("seed %" PRIu64 " step %d: after a %s cut during %s: neither "
                                 "the acknowledged state nor it plus the operation: %s",
                                 seed, step, cut_names[mode], op_names[o.kind], why);
                    in_flight_lost++;
                } else {
                    m = next; /* the record survived; its token never reached anyone */
                    in_flight_kept++;
                }
                cuts++;
                continue;
            }
            if (rc != want)
                fail_msg("seed %" PRIu64 " step %d: %s dev-%02d: expected %d, got %d", seed, step,
                         op_names[o.kind], o.dev, want, rc);
            if (rc == 0 && (o.kind == OP_ADD || o.kind == OP_REENROLL))
                memcpy(next.dev[o.dev].token, token, TOKEN_BUF);
            m = next;
            if (fault) {
                /* Nothing was written, so the fault is still armed: clear it with a cut. */
                stele_io_fault_power_cut(io, mode);
                stele_registry_close(r);
                r = open_at(io, FAULT_DATA_DIR, &clock);
                const char *why = registry_matches(r, &m, true);
                if (why)
                    fail_msg("seed %" PRIu64 " step %d: after a cut: %s", seed, step, why);
            }
        }
        stele_registry_close(r);
        stele_io_destroy(io);
    }
    fprintf(stderr, "  power cuts: %d (in-flight mutation kept %d times, lost %d times)\n", cuts,
            in_flight_kept, in_flight_lost);
    assert_true(in_flight_kept > 0 && in_flight_lost > 0);
}

/* A failed fsync is final: the mutation is -EIO and invisible, every later one -EIO with
 * no I/O, lookups go on, health reports it; a restart recovers. */
static void test_failed_fsync_is_sticky(void **state)
{
    (void)state;
    test_clock clock;
    clock_set(&clock, T0);
    char token[TOKEN_BUF];
    char lost[TOKEN_BUF];
    stele_device_info info;

    for (int op_kind_i = 0; op_kind_i < 2; op_kind_i++) {
        enum stele_fault_op fault = op_kind_i ? STELE_FAULT_OP_WRITE : STELE_FAULT_OP_FSYNC;
        stele_io *io = test_fault_io_with_dir(77 + (uint64_t)op_kind_i, FAULT_DATA_DIR);
        stele_registry *r = open_at(io, FAULT_DATA_DIR, &clock);
        add_device(r, "kept", "acme", "", token, NULL);
        add_device(r, "pending", "acme", "", lost, NULL);
        enroll_ok(r, "kept", token, 0, NULL);

        stele_io_fault_fail_after(io, fault, 1, EIO);
        assert_int_equal(stele_registry_quarantine(r, "kept", &info), -EIO);
        assert_int_equal(get_device(r, "kept").state, STELE_DEVICE_ACTIVE); /* not claimed */
        assert_int_equal(stele_registry_health(r), -EIO);
        uint64_t writes = stele_io_fault_op_count(io, STELE_FAULT_OP_WRITE);
        uint64_t fsyncs = stele_io_fault_op_count(io, STELE_FAULT_OP_FSYNC);
        assert_int_equal(stele_registry_quarantine(r, "kept", NULL), -EIO);
        assert_int_equal(stele_registry_revoke(r, "kept", NULL), -EIO);
        assert_int_equal(enroll(r, "pending", lost, 1, NULL), -EIO);
        assert_int_equal(stele_registry_add(r, "new", "acme", "", token, sizeof(token), NULL),
                         -EIO);
        assert_string_equal(token, "");
        assert_int_equal(stele_registry_reenroll(r, "kept", token, sizeof(token), NULL), -EIO);
        assert_int_equal(stele_registry_rotate(r, "kept", 1, ALG, test_pk[4], T0 + 1000 * NS, NULL),
                         -EIO);
        assert_int_equal(stele_registry_promote_key(r, "kept", 1), -EIO);
        assert_int_equal(stele_io_fault_op_count(io, STELE_FAULT_OP_WRITE), writes);
        assert_int_equal(stele_io_fault_op_count(io, STELE_FAULT_OP_FSYNC), fsyncs);
        /* Lookups and touch go on from memory. */
        stele_registry_touch(r, "kept", 4, T0 + 5);
        info = get_device(r, "kept");
        assert_int_equal(info.state, STELE_DEVICE_ACTIVE);
        assert_int_equal(info.last_seen_ns, T0 + 5);
        assert_int_equal(get_device(r, "pending").state, STELE_DEVICE_PENDING);
        assert_int_equal(stele_registry_get(r, "new", 3, &info), -ENOENT);
        stele_registry_close(r);

        /* After a power cut: the acknowledged state, and the log goes on. */
        stele_io_fault_power_cut(io, STELE_FAULT_CUT_DROP);
        r = open_at(io, FAULT_DATA_DIR, &clock);
        assert_int_equal(stele_registry_health(r), 0);
        assert_int_equal(get_device(r, "kept").state, STELE_DEVICE_ACTIVE);
        enroll_ok(r, "pending", lost, 1, NULL);
        assert_int_equal(stele_registry_quarantine(r, "kept", NULL), 0);
        stele_registry_close(r);
        r = open_at(io, FAULT_DATA_DIR, &clock);
        assert_int_equal(get_device(r, "kept").state, STELE_DEVICE_QUARANTINED);
        assert_int_equal(get_device(r, "pending").state, STELE_DEVICE_ACTIVE);
        stele_registry_close(r);
        stele_io_destroy(io);
    }
}

/* ---- damage ---------------------------------------------------------------------- */

static int open_expecting(fixture *f, int expected, const char *why, char *err, size_t errcap)
{
    stele_registry *r = NULL;
    stele_registry_options o = options_with(&f->clock);
    int rc = stele_registry_open(f->io, f->dir, &o, &r, err, errcap);
    if (rc != expected)
        fail_msg("open after %s: expected %d, got %d (%s)", why, expected, rc, err);
    assert_null(r);
    return rc;
}

/* Offsets of the records of a log file, by their length fields. */
static size_t record_offsets(const uint8_t *file, size_t len, uint64_t *offsets, size_t cap)
{
    size_t n = 0;
    uint64_t off = HEADER_SIZE;
    while (off + 4 <= len && n < cap) {
        offsets[n++] = off;
        off += RECORD_OVERHEAD + test_get_le(file + off, 4);
    }
    assert_int_equal(off, len);
    return n;
}

/* Rewrites the record at off with a new batch offset and a matching checksum. */
static void set_batch_offset(uint8_t *file, uint64_t off, uint64_t batch)
{
    uint32_t len = (uint32_t)test_get_le(file + off, 4);
    test_put_le(file + off + 8, batch, 8);
    test_put_le(file + off + 16 + len, XXH3_64bits(file + off, 16 + len), 8);
}

static void test_damage_and_torn_tails(void **state)
{
    fixture *f = *state;
    char tokens[4][TOKEN_BUF];
    char err[512];

    stele_registry *r = open_registry(f);
    add_device(r, "d0", "acme", "", tokens[0], NULL);
    add_device(r, "d1", "acme", "", tokens[1], NULL);
    enroll_ok(r, "d0", tokens[0], 0, NULL);
    add_device(r, "d2", "acme", "", tokens[2], NULL);
    assert_int_equal(stele_registry_quarantine(r, "d0", NULL), 0);
    stele_registry_close(r);
    size_t len = 0;
    uint8_t *pristine = test_read_file(f->log_path, &len);
    uint8_t *edit = malloc(len + 8192);
    assert_non_null(edit);
    uint64_t rec[8];
    size_t n = record_offsets(pristine, len, rec, 8);
    assert_int_equal(n, 5);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(test_get_le(pristine + rec[i] + 8, 8), rec[i]); /* one batch each */

    /* A byte changed anywhere before the last batch: -EBADMSG, named, nothing cut. */
    const struct {
        uint64_t offset;
        const char *what;
    } flips[] = {
        {0, "header magic"},
        {13, "header checksum"},
        {rec[0] + 0, "first record length"},
        {rec[0] + 4, "first record type"},
        {rec[0] + 9, "first record batch offset"},
        {rec[0] + 20, "first record payload"},
        {rec[1] - 1, "first record checksum"},
        {rec[2] + 30, "middle record (enroll) payload"},
        {rec[3] + 16, "fourth record id length"},
    };
    for (size_t i = 0; i < sizeof(flips) / sizeof(flips[0]); i++) {
        memcpy(edit, pristine, len);
        edit[flips[i].offset] ^= 0x10;
        test_write_file(f->log_path, edit, len);
        open_expecting(f, -EBADMSG, flips[i].what, err, sizeof(err));
        if (!strstr(err, f->log_path))
            fail_msg("%s: the error does not name the file: %s", flips[i].what, err);
        if (flips[i].offset >= rec[0]) {
            uint64_t at = rec[0];
            for (size_t k = 0; k < n && rec[k] <= flips[i].offset; k++)
                at = rec[k];
            char where[64];
            snprintf(where, sizeof(where), "offset %" PRIu64, at);
            if (!strstr(err, where))
                fail_msg("%s: the error does not name %s: %s", flips[i].what, where, err);
        }
        assert_int_equal(test_file_size(f->log_path), len);
    }

    /* A header of another version, intact: -ENOTSUP. */
    memcpy(edit, pristine, len);
    test_put_le(edit + 8, 2, 4);
    test_put_le(edit + 12, (uint32_t)XXH3_64bits(edit, 12), 4);
    test_write_file(f->log_path, edit, len);
    open_expecting(f, -ENOTSUP, "version 2", err, sizeof(err));
    test_write_file(f->log_path, pristine, 10);
    open_expecting(f, -EBADMSG, "a short header", err, sizeof(err));

    /* Records valid in themselves but not in the log. */
    memcpy(edit, pristine, len);
    memcpy(edit + rec[2] + 17, "dX", 2); /* enroll of "dX", never added */
    set_batch_offset(edit, rec[2], rec[2]);
    test_write_file(f->log_path, edit, len);
    open_expecting(f, -EBADMSG, "an enroll of an unknown id", err, sizeof(err));
    if (!strstr(err, "never added"))
        fail_msg("unexpected reason: %s", err);
    memcpy(edit, pristine, len);
    memcpy(edit + rec[1] + 17, "d0", 2); /* d0 added twice */
    set_batch_offset(edit, rec[1], rec[1]);
    test_write_file(f->log_path, edit, len);
    open_expecting(f, -EBADMSG, "an id added twice", err, sizeof(err));
    memcpy(edit, pristine, len);
    memcpy(edit + rec[4] + 17, "d1", 2); /* quarantine of pending d1 */
    set_batch_offset(edit, rec[4], rec[4]);
    test_write_file(f->log_path, edit, len);
    open_expecting(f, -EBADMSG, "quarantine of a pending device", err, sizeof(err));
    /* The enroll of d0 (payload: 1 + 2 id, 8 time, 4 key id, 1 alg, ...) edited to give a
     * key id other than the next, an unknown algorithm, a time past the token's expiry. */
    const struct {
        size_t at;
        uint64_t value;
        int bytes;
        const char *what;
    } enroll_edits[] = {
        {16 + 11, 2, 4, "an enrollment with key id 2 where 1 is next"},
        {16 + 11, 0, 4, "an enrollment with key id 0"},
        {16 + 15, 2, 1, "an enrollment with algorithm 2"},
        {16 + 3, (uint64_t)(T0 + TEST_TTL_NS), 8, "an enrollment after the token expired"},
    };
    for (size_t i = 0; i < sizeof(enroll_edits) / sizeof(enroll_edits[0]); i++) {
        memcpy(edit, pristine, len);
        test_put_le(edit + rec[2] + enroll_edits[i].at, enroll_edits[i].value,
                    enroll_edits[i].bytes);
        set_batch_offset(edit, rec[2], rec[2]);
        test_write_file(f->log_path, edit, len);
        open_expecting(f, -EBADMSG, enroll_edits[i].what, err, sizeof(err));
    }
    /* A record moved: its batch offset no longer fits its place. */
    memcpy(edit, pristine, len);
    set_batch_offset(edit, rec[3], rec[1]);
    test_write_file(f->log_path, edit, len);
    open_expecting(f, -EBADMSG, "a record claiming an earlier batch", err, sizeof(err));
    if (!strstr(err, "out of place"))
        fail_msg("unexpected reason: %s", err);

    /* Torn tails: every cut inside the last record, zeros where it should be; cut back
     * to the last whole record, durably, and the rest intact. */
    static const uint64_t cuts[] = {1, 4, 15, 16, 30, 0 /* one byte short */};
    uint64_t last = rec[4];
    for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]) + 4; i++) {
        if (i < sizeof(cuts) / sizeof(cuts[0])) {
            uint64_t keep = cuts[i] ? cuts[i] : len - last - 1;
            test_write_file(f->log_path, pristine, (size_t)(last + keep));
        } else {
            static const uint64_t zeros[] = {3, 24, 100, 5000};
            test_write_file(f->log_path, pristine, (size_t)last);
            assert_int_equal(truncate(f->log_path, (off_t)(last + zeros[i - 6])), 0);
        }
        r = open_registry(f);
        assert_int_equal(test_file_size(f->log_path), last);
        assert_int_equal(get_device(r, "d0").state, STELE_DEVICE_ACTIVE); /* quarantine cut */
        assert_int_equal(get_device(r, "d2").state, STELE_DEVICE_PENDING);
        stele_registry_close(r);
    }

    /* One batch of two records (as group commit writes them), the first garbled, the
     * second intact: a torn tail — the batch was never acknowledged — cut at the first. */
    memcpy(edit, pristine, len);
    set_batch_offset(edit, rec[4], rec[3]);
    edit[rec[3] + 20] ^= 0xff;
    test_write_file(f->log_path, edit, len);
    r = open_registry(f);
    assert_int_equal(test_file_size(f->log_path), rec[3]);
    assert_int_equal(stele_registry_get(r, "d2", 2, &(stele_device_info){0}), -ENOENT);
    stele_registry_close(r);
    /* ...but garbled with a later batch behind it: damage. */
    memcpy(edit, pristine, len);
    edit[rec[3] + 20] ^= 0xff;
    test_write_file(f->log_path, edit, len);
    open_expecting(f, -EBADMSG, "a bad record before a later batch", err, sizeof(err));
    if (!strstr(err, "later batch"))
        fail_msg("unexpected reason: %s", err);
    /* ...and so is junk longer than any batch after the last record. */
    memcpy(edit, pristine, len);
    test_write_file(f->log_path, edit, len);
    assert_int_equal(truncate(f->log_path, (off_t)(len + (256u << 10) + 1)), 0);
    open_expecting(f, -EBADMSG, "256 KiB + 1 of zeros after the last record", err, sizeof(err));

    /* The documented price: a flip in the last batch is indistinguishable from a crash
     * during it, and that batch is cut. */
    memcpy(edit, pristine, len);
    edit[last + 20] ^= 0x01;
    test_write_file(f->log_path, edit, len);
    r = open_registry(f);
    assert_int_equal(test_file_size(f->log_path), last);
    stele_registry_close(r);

    /* Restored, the file opens with everything: the failed opens changed nothing. */
    test_write_file(f->log_path, pristine, len);
    r = open_registry(f);
    assert_int_equal(get_device(r, "d0").state, STELE_DEVICE_QUARANTINED);
    stele_registry_close(r);
    free(edit);
    free(pristine);
}

/* ---- file format ---------------------------------------------------------------- */

#define VECTOR_PK1 "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
#define VECTOR_PK2 "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c"
#define VECTOR_TOKEN1 "sen_000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
#define VECTOR_TOKEN2 "sen_202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
#define DAY (86400 * NS)

/* Encodes the vector of docs/format/registry.md, following the document's tables. */
typedef struct {
    uint8_t *base;
    uint8_t *p;
    uint8_t *record;
} vec_writer;

static void vec_begin(vec_writer *w, uint32_t type, uint64_t batch)
{
    w->record = w->p;
    test_put_le(w->p + 4, type, 4);
    test_put_le(w->p + 8, batch, 8);
    w->p += 16;
}

static void vec_string(vec_writer *w, const char *s)
{
    *w->p++ = (uint8_t)strlen(s);
    memcpy(w->p, s, strlen(s));
    w->p += strlen(s);
}

static void vec_int(vec_writer *w, uint64_t v, int bytes)
{
    test_put_le(w->p, v, bytes);
    w->p += bytes;
}

static void vec_bytes(vec_writer *w, const uint8_t *b, size_t n)
{
    memcpy(w->p, b, n);
    w->p += n;
}

static void vec_end(vec_writer *w)
{
    size_t payload = (size_t)(w->p - w->record) - 16;
    test_put_le(w->record, payload, 4);
    test_put_le(w->p, XXH3_64bits(w->record, 16 + payload), 8);
    w->p += 8;
}

static size_t encode_vector(uint8_t *out)
{
    uint8_t pk1[32], pk2[32], secret[32], hash[32];
    vec_writer w = {.base = out, .p = out};
    assert_int_equal(sodium_hex2bin(pk1, 32, VECTOR_PK1, 64, NULL, NULL, NULL), 0);
    assert_int_equal(sodium_hex2bin(pk2, 32, VECTOR_PK2, 64, NULL, NULL, NULL), 0);
    memcpy(w.p, "STLDEVS1", 8);
    test_put_le(w.p + 8, 1, 4);
    test_put_le(w.p + 12, (uint32_t)XXH3_64bits(w.p, 12), 4);
    w.p += 16;

    uint64_t batch = (uint64_t)(w.p - out);
    vec_begin(&w, 1, batch); /* add sensor-1 */
    vec_string(&w, "sensor-1");
    vec_int(&w, (uint64_t)T0, 8);
    vec_int(&w, (uint64_t)(T0 + DAY), 8);
    for (int i = 0; i < 32; i++)
        secret[i] = (uint8_t)i;
    crypto_generichash(hash, 32, secret, 32, NULL, 0);
    vec_bytes(&w, hash, 32);
    vec_string(&w, "acme");
    vec_string(&w, "canary");
    vec_end(&w);

    batch = (uint64_t)(w.p - out);
    vec_begin(&w, 2, batch); /* enroll sensor-1 */
    vec_string(&w, "sensor-1");
    vec_int(&w, (uint64_t)(T0 + 60 * NS), 8);
    vec_int(&w, 1, 4);
    vec_int(&w, ALG, 1);
    vec_bytes(&w, pk1, 32);
    vec_string(&w, "1.4.2");
    vec_end(&w);

    batch = (uint64_t)(w.p - out);
    vec_begin(&w, 1, batch); /* add sensor-2 */
    vec_string(&w, "sensor-2");
    vec_int(&w, (uint64_t)(T0 + 120 * NS), 8);
    vec_int(&w, (uint64_t)(T0 + 120 * NS + DAY), 8);
    for (int i = 0; i < 32; i++)
        secret[i] = (uint8_t)(32 + i);
    crypto_generichash(hash, 32, secret, 32, NULL, 0);
    vec_bytes(&w, hash, 32);
    vec_string(&w, "acme");
    vec_string(&w, "");
    vec_end(&w);
    vec_begin(&w, 7, batch); /* rotate sensor-1, same batch */
    vec_string(&w, "sensor-1");
    vec_int(&w, (uint64_t)(T0 + 120 * NS), 8);
    vec_int(&w, 2, 4);
    vec_int(&w, ALG, 1);
    vec_bytes(&w, pk2, 32);
    vec_int(&w, (uint64_t)(T0 + 120 * NS + 7 * DAY), 8);
    vec_end(&w);
    return (size_t)(w.p - out);
}

static void test_format_vector_matches_doc(void **state)
{
    fixture *f = *state;
    uint8_t encoded[1024];
    uint8_t documented[1024];
    uint8_t pk1[32], pk2[32];
    assert_int_equal(sodium_hex2bin(pk1, 32, VECTOR_PK1, 64, NULL, NULL, NULL), 0);
    assert_int_equal(sodium_hex2bin(pk2, 32, VECTOR_PK2, 64, NULL, NULL, NULL), 0);

    size_t encoded_len = encode_vector(encoded);
    assert_int_equal(encoded_len, 366);
    size_t documented_len = test_doc_vector("registry.md", "test-vector: three-batches", documented,
                                            sizeof(documented));
    if (documented_len != encoded_len || memcmp(documented, encoded, encoded_len) != 0) {
        fprintf(stderr, "expected (docs/format/registry.md) (%zu bytes):\n", documented_len);
        test_print_hex(stderr, documented, documented_len, 16, " ");
        fprintf(stderr, "encoded from the documented layout (%zu bytes):\n", encoded_len);
        test_print_hex(stderr, encoded, encoded_len, 16, " ");
        fail_msg("the test vector in docs/format/registry.md does not match its layout");
    }

    test_write_file(f->log_path, documented, documented_len);
    clock_set(&f->clock, T0 + 200 * NS);
    stele_registry *r = open_registry(f);
    stele_device_info want;
    memset(&want, 0, sizeof(want));
    strcpy(want.id, "sensor-1");
    strcpy(want.tenant, "acme");
    strcpy(want.cohort, "canary");
    want.state = STELE_DEVICE_ACTIVE;
    want.allowed_algs = 2;
    want.key = (stele_device_key){.key_id = 1, .alg = 1, .added_ns = T0 + 60 * NS};
    memcpy(want.key.public_key, pk1, 32);
    want.next = (stele_device_key){.key_id = 2, .alg = 1, .added_ns = T0 + 120 * NS};
    memcpy(want.next.public_key, pk2, 32);
    want.overlap_deadline_ns = T0 + 120 * NS + 7 * DAY;
    want.last_key_id = 2;
    strcpy(want.firmware, "1.4.2");
    want.added_ns = T0;
    want.enrolled_ns = want.state_changed_ns = T0 + 60 * NS;
    stele_device_info got = get_device(r, "sensor-1");
    expect_device(&got, &want, "the documented sensor-1");
    memset(&want, 0, sizeof(want));
    strcpy(want.id, "sensor-2");
    strcpy(want.tenant, "acme");
    want.state = STELE_DEVICE_PENDING;
    want.added_ns = want.state_changed_ns = T0 + 120 * NS;
    want.enroll_expires_ns = T0 + 120 * NS + DAY;
    got = get_device(r, "sensor-2");
    expect_device(&got, &want, "the documented sensor-2");
    list_result l = list_all(r, NULL);
    assert_int_equal(l.count, 2);
    assert_string_equal(l.infos[0].id, "sensor-1");
    free(l.infos);

    /* The first token was consumed; the second is the documented one and works. */
    assert_int_equal(stele_registry_enroll(r, "sensor-1", VECTOR_TOKEN1, STELE_ENROLL_TOKEN_LEN,
                                           ALG, pk1, "", NULL),
                     -EACCES);
    assert_int_equal(stele_registry_enroll(r, "sensor-2", VECTOR_TOKEN1, STELE_ENROLL_TOKEN_LEN,
                                           ALG, pk1, "", NULL),
                     -EACCES);
    assert_int_equal(stele_registry_enroll(r, "sensor-2", VECTOR_TOKEN2, STELE_ENROLL_TOKEN_LEN,
                                           ALG, pk2, "9.9", &got),
                     0);
    assert_int_equal(got.key.key_id, 1);
    assert_int_equal(stele_registry_promote_key(r, "sensor-1", 2), 0);
    stele_registry_close(r);
    /* The appends went after the documented bytes, which are unchanged. */
    size_t len = 0;
    uint8_t *file = test_read_file(f->log_path, &len);
    assert_true(len > documented_len);
    assert_memory_equal(file, documented, documented_len);
    assert_int_equal(test_get_le(file + documented_len + 8, 8), documented_len); /* a new batch */
    free(file);
}

/* What the registry writes decodes, by the document's layout, to what it returned. */
static void test_written_records_follow_the_doc(void **state)
{
    fixture *f = *state;
    char token[TOKEN_BUF];
    stele_device_info added;
    stele_device_info enrolled;
    uint8_t secret[32];
    uint8_t hash[32];

    stele_registry *r = open_registry(f);
    add_device(r, "probe.7", "tenant_x", "blue", token, &added);
    clock_set(&f->clock, T0 + 5 * NS);
    assert_int_equal(stele_registry_enroll(r, "probe.7", token, strlen(token), ALG, test_pk[9],
                                           "3.1", &enrolled),
                     0);
    assert_int_equal(stele_registry_revoke(r, "probe.7", NULL), 0);
    stele_registry_close(r);

    size_t len = 0;
    uint8_t *file = test_read_file(f->log_path, &len);
    uint8_t header[16];
    memcpy(header, "STLDEVS1", 8);
    test_put_le(header + 8, 1, 4);
    test_put_le(header + 12, (uint32_t)XXH3_64bits(header, 12), 4);
    assert_memory_equal(file, header, 16);

    const uint8_t *rec = file + 16;
    size_t payload_len = (size_t)test_get_le(rec, 4);
    assert_int_equal(payload_len, 51 + 7 + 8 + 4);
    assert_int_equal(test_get_le(rec + 4, 4), 1);
    assert_int_equal(test_get_le(rec + 8, 8), 16);
    const uint8_t *p = rec + 16;
    assert_int_equal(p[0], 7);
    assert_memory_equal(p + 1, "probe.7", 7);
    assert_int_equal((int64_t)test_get_le(p + 8, 8), added.added_ns);
    assert_int_equal((int64_t)test_get_le(p + 16, 8), added.enroll_expires_ns);
    assert_int_equal(sodium_hex2bin(secret, 32, token + 4, 64, NULL, NULL, NULL), 0);
    crypto_generichash(hash, 32, secret, 32, NULL, 0);
    assert_memory_equal(p + 24, hash, 32);
    assert_int_equal(p[56], 8);
    assert_memory_equal(p + 57, "tenant_x", 8);
    assert_int_equal(p[65], 4);
    assert_memory_equal(p + 66, "blue", 4);
    assert_int_equal(test_get_le(p + payload_len, 8), XXH3_64bits(rec, 16 + payload_len));

    rec = p + payload_len + 8;
    uint64_t at = (uint64_t)(rec - file);
    payload_len = (size_t)test_get_le(rec, 4);
    assert_int_equal(payload_len, 47 + 7 + 3);
    assert_int_equal(test_get_le(rec + 4, 4), 2);
    assert_int_equal(test_get_le(rec + 8, 8), at);
    p = rec + 16;
    assert_int_equal((int64_t)test_get_le(p + 8, 8), enrolled.enrolled_ns);
    assert_int_equal(test_get_le(p + 16, 4), 1);
    assert_int_equal(p[20], ALG);
    assert_memory_equal(p + 21, test_pk[9], 32);
    assert_int_equal(p[53], 3);
    assert_memory_equal(p + 54, "3.1", 3);
    assert_int_equal(test_get_le(p + payload_len, 8), XXH3_64bits(rec, 16 + payload_len));

    rec = p + payload_len + 8;
    at = (uint64_t)(rec - file);
    assert_int_equal(test_get_le(rec, 4), 9 + 7);
    assert_int_equal(test_get_le(rec + 4, 4), 3);
    assert_int_equal(test_get_le(rec + 8, 8), at);
    assert_int_equal(test_get_le(rec + 32, 8), XXH3_64bits(rec, 32));
    assert_int_equal(len, at + 40);
    free(file);
}

/* ---- concurrency ------------------------------------------------------------------- */

/* A stele_io that forwards to another and counts fsyncs: the registry's own I/O on the
 * real disk, measured. */
typedef struct {
    stele_io base;
    stele_io *inner;
    atomic_uint_fast64_t fsyncs;
    atomic_uint_fast64_t writes;
} counting_io;

typedef struct {
    struct stele_file base;
    stele_file *inner;
    counting_io *io;
} counting_file;

static const struct stele_io_ops counting_ops;

static int counting_open(stele_io *io, const char *path, int flags, stele_file **out)
{
    counting_io *c = (counting_io *)io;
    counting_file *f = calloc(1, sizeof(*f));
    if (!f)
        return -ENOMEM;
    int rc = stele_io_open(c->inner, path, flags, &f->inner);
    if (rc != 0) {
        free(f);
        return rc;
    }
    f->base.ops = &counting_ops;
    f->io = c;
    *out = &f->base;
    return 0;
}

static int counting_pread(stele_file *f, void *buf, size_t len, uint64_t off, size_t *nread)
{
    return stele_io_pread(((counting_file *)f)->inner, buf, len, off, nread);
}

static int counting_pwrite(stele_file *f, const void *buf, size_t len, uint64_t off)
{
    atomic_fetch_add(&((counting_file *)f)->io->writes, 1);
    return stele_io_pwrite(((counting_file *)f)->inner, buf, len, off);
}

/* An fsync takes at least this long here: a fast SSD's flush. On a real disk it takes
 * longer by itself; on tmpfs it would be free, and a test of fsync sharing would then
 * measure the scheduler rather than the registry. */
#define COUNTING_MIN_FSYNC_NS 100000

static int64_t monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * NS + ts.tv_nsec;
}

static int counting_fsync(stele_file *f)
{
    int64_t start = monotonic_ns();
    atomic_fetch_add(&((counting_file *)f)->io->fsyncs, 1);
    int rc = stele_io_fsync(((counting_file *)f)->inner);
    int64_t left = COUNTING_MIN_FSYNC_NS - (monotonic_ns() - start);
    if (left > 0)
        nanosleep(&(struct timespec){.tv_sec = 0, .tv_nsec = left}, NULL);
    return rc;
}

static int counting_size(stele_file *f, uint64_t *size)
{
    return stele_io_size(((counting_file *)f)->inner, size);
}

static int counting_truncate(stele_file *f, uint64_t size)
{
    return stele_io_truncate(((counting_file *)f)->inner, size);
}

static int counting_close(stele_file *f)
{
    int rc = stele_io_close(((counting_file *)f)->inner);
    free(f);
    return rc;
}

static int counting_rename(stele_io *io, const char *from, const char *to)
{
    return stele_io_rename(((counting_io *)io)->inner, from, to);
}

static int counting_unlink(stele_io *io, const char *path)
{
    return stele_io_unlink(((counting_io *)io)->inner, path);
}

static int counting_mkdir(stele_io *io, const char *path)
{
    return stele_io_mkdir(((counting_io *)io)->inner, path);
}

static int counting_rmdir(stele_io *io, const char *path)
{
    return stele_io_rmdir(((counting_io *)io)->inner, path);
}

static int counting_fsync_dir(stele_io *io, const char *path)
{
    return stele_io_fsync_dir(((counting_io *)io)->inner, path);
}

static int counting_list(stele_io *io, const char *dir, stele_io_list_fn fn, void *ctx)
{
    return stele_io_list(((counting_io *)io)->inner, dir, fn, ctx);
}

static int counting_exists(stele_io *io, const char *path)
{
    return stele_io_exists(((counting_io *)io)->inner, path);
}

static void counting_destroy(stele_io *io)
{
    (void)io; /* the test owns it and its inner io */
}

static const struct stele_io_ops counting_ops = {
    .open = counting_open,
    .pread = counting_pread,
    .pwrite = counting_pwrite,
    .fsync = counting_fsync,
    .size = counting_size,
    .truncate = counting_truncate,
    .close = counting_close,
    .rename = counting_rename,
    .unlink = counting_unlink,
    .mkdir = counting_mkdir,
    .rmdir = counting_rmdir,
    .fsync_dir = counting_fsync_dir,
    .list = counting_list,
    .exists = counting_exists,
    .destroy = counting_destroy,
};

enum { THREADS = 8, BURST_DEVICES = 10000 };

typedef struct {
    stele_registry *r;
    char (*tokens)[TOKEN_BUF];
    int first, count;
    int failures;
    int last_error;
} burst_args;

static void *add_range(void *arg)
{
    burst_args *a = arg;
    for (int i = a->first; i < a->first + a->count; i++) {
        char id[32];
        snprintf(id, sizeof(id), "burst-%05d", i);
        int rc = stele_registry_add(a->r, id, "fleet", "", a->tokens[i], TOKEN_BUF, NULL);
        if (rc != 0) {
            a->failures++;
            a->last_error = rc;
        }
    }
    return NULL;
}

static void *enroll_range(void *arg)
{
    burst_args *a = arg;
    for (int i = a->first; i < a->first + a->count; i++) {
        char id[32];
        stele_device_info info;
        snprintf(id, sizeof(id), "burst-%05d", i);
        int rc = stele_registry_enroll(a->r, id, a->tokens[i], STELE_ENROLL_TOKEN_LEN, ALG,
                                       test_pk[i % TEST_KEYS], "1.0", &info);
        if (rc == 0 &&
            (info.state != STELE_DEVICE_ACTIVE || info.key.key_id != 1 || strcmp(info.id, id) != 0))
            rc = -EPROTO;
        if (rc == 0) {
            /* Visible to lookups once acknowledged. */
            stele_device_info seen;
            if (stele_registry_get(a->r, id, strlen(id), &seen) != 0 ||
                seen.state != STELE_DEVICE_ACTIVE)
                rc = -EPROTO;
        }
        if (rc != 0) {
            a->failures++;
            a->last_error = rc;
        }
    }
    return NULL;
}

static void run_burst(stele_registry *r, char (*tokens)[TOKEN_BUF], void *(*fn)(void *))
{
    pthread_t threads[THREADS];
    burst_args args[THREADS];
    for (int t = 0; t < THREADS; t++) {
        args[t] = (burst_args){.r = r,
                               .tokens = tokens,
                               .first = t * (BURST_DEVICES / THREADS),
                               .count = BURST_DEVICES / THREADS};
        assert_int_equal(pthread_create(&threads[t], NULL, fn, &args[t]), 0);
    }
    for (int t = 0; t < THREADS; t++) {
        assert_int_equal(pthread_join(threads[t], NULL), 0);
        if (args[t].failures)
            fail_msg("thread %d: %d failures, the last %d", t, args[t].failures,
                     args[t].last_error);
    }
}

/* 8 threads add 10,000 devices, then 8 threads enroll them, on the real disk: all
 * succeed, each exactly once, and fsyncs are shared (group commit). */
static void test_concurrent_enrollment_burst(void **state)
{
    fixture *f = *state;
    static_assert(BURST_DEVICES % THREADS == 0, "even split");
    counting_io cio = {.base = {.ops = &counting_ops}, .inner = f->io};
    char(*tokens)[TOKEN_BUF] = calloc(BURST_DEVICES, TOKEN_BUF);
    assert_non_null(tokens);

    stele_registry *r = open_at(&cio.base, f->dir, &f->clock);
    uint64_t fsyncs0 = atomic_load(&cio.fsyncs);
    run_burst(r, tokens, add_range);
    uint64_t add_fsyncs = atomic_load(&cio.fsyncs) - fsyncs0;
    uint64_t fsyncs1 = atomic_load(&cio.fsyncs);
    uint64_t writes1 = atomic_load(&cio.writes);
    run_burst(r, tokens, enroll_range);
    uint64_t enroll_fsyncs = atomic_load(&cio.fsyncs) - fsyncs1;
    uint64_t enroll_writes = atomic_load(&cio.writes) - writes1;
    fprintf(stderr,
            "  %d concurrent adds: %" PRIu64 " fsyncs; %d concurrent enrollments: %" PRIu64
            " fsyncs, %" PRIu64 " writes (%.1f records per fsync)\n",
            BURST_DEVICES, add_fsyncs, BURST_DEVICES, enroll_fsyncs, enroll_writes,
            (double)BURST_DEVICES / (double)enroll_fsyncs);
    assert_int_equal(enroll_writes, enroll_fsyncs); /* one write per batch */
    assert_true(enroll_fsyncs < BURST_DEVICES / 2);
    assert_true(add_fsyncs < BURST_DEVICES / 2);

    /* Every device once, active with key 1; no token works twice. */
    uint64_t counts[STELE_DEVICE_STATES];
    stele_registry_counts(r, counts);
    assert_int_equal(counts[STELE_DEVICE_ACTIVE], BURST_DEVICES);
    assert_int_equal(counts[STELE_DEVICE_PENDING], 0);
    assert_int_equal(enroll(r, "burst-00042", tokens[42], 1, NULL), -EACCES);
    stele_registry_close(r);

    r = open_at(&cio.base, f->dir, &f->clock);
    list_result l = list_all(r, NULL);
    assert_int_equal(l.count, BURST_DEVICES);
    static bool seen[BURST_DEVICES];
    memset(seen, 0, sizeof(seen));
    for (size_t i = 0; i < l.count; i++) {
        int n = atoi(l.infos[i].id + strlen("burst-"));
        assert_true(n >= 0 && n < BURST_DEVICES);
        assert_false(seen[n]);
        seen[n] = true;
        assert_int_equal(l.infos[i].state, STELE_DEVICE_ACTIVE);
        assert_int_equal(l.infos[i].key.key_id, 1);
        assert_memory_equal(l.infos[i].key.public_key, test_pk[n % TEST_KEYS], 32);
    }
    free(l.infos);
    stele_registry_close(r);
    free(tokens);
}

typedef struct {
    stele_registry *r;
    pthread_barrier_t *start;
    const char *id;
    const char *token;
    int key;
    int rc;
} race_args;

static void *race_enroll(void *arg)
{
    race_args *a = arg;
    pthread_barrier_wait(a->start);
    a->rc = enroll(a->r, a->id, a->token, a->key, NULL);
    return NULL;
}

static void *race_add(void *arg)
{
    race_args *a = arg;
    char token[TOKEN_BUF];
    pthread_barrier_wait(a->start);
    a->rc = stele_registry_add(a->r, a->id, "acme", "", token, sizeof(token), NULL);
    return NULL;
}

/* The same token used by several threads at once: exactly one enrollment; the same id
 * added by several threads at once: exactly one add. */
static void test_concurrent_double_use(void **state)
{
    fixture *f = *state;
    enum { ROUNDS = 100, RACERS = 6 };
    char token[TOKEN_BUF];
    pthread_barrier_t start;
    pthread_t threads[RACERS];
    race_args args[RACERS];

    stele_registry *r = open_registry(f);
    assert_int_equal(pthread_barrier_init(&start, NULL, RACERS), 0);
    for (int round = 0; round < ROUNDS; round++) {
        char id[32];
        snprintf(id, sizeof(id), "race-%03d", round);
        add_device(r, id, "acme", "", token, NULL);
        for (int t = 0; t < RACERS; t++) {
            args[t] = (race_args){.r = r, .start = &start, .id = id, .token = token, .key = t};
            assert_int_equal(pthread_create(&threads[t], NULL, race_enroll, &args[t]), 0);
        }
        int wins = 0, winner = -1;
        for (int t = 0; t < RACERS; t++) {
            assert_int_equal(pthread_join(threads[t], NULL), 0);
            if (args[t].rc == 0) {
                wins++;
                winner = t;
            } else if (args[t].rc != -EACCES) {
                fail_msg("round %d: an enrollment failed with %d, not -EACCES", round, args[t].rc);
            }
        }
        if (wins != 1)
            fail_msg("round %d: %d enrollments with one token succeeded", round, wins);
        stele_device_info info = get_device(r, id);
        assert_int_equal(info.key.key_id, 1);
        assert_memory_equal(info.key.public_key, test_pk[winner], 32);

        snprintf(id, sizeof(id), "dup-%03d", round);
        for (int t = 0; t < RACERS; t++) {
            args[t] = (race_args){.r = r, .start = &start, .id = id};
            assert_int_equal(pthread_create(&threads[t], NULL, race_add, &args[t]), 0);
        }
        wins = 0;
        for (int t = 0; t < RACERS; t++) {
            assert_int_equal(pthread_join(threads[t], NULL), 0);
            if (args[t].rc == 0)
                wins++;
            else if (args[t].rc != -EEXIST)
                fail_msg("round %d: an add failed with %d, not -EEXIST", round, args[t].rc);
        }
        if (wins != 1)
            fail_msg("round %d: %d adds of one id succeeded", round, wins);
    }
    pthread_barrier_destroy(&start);
    stele_registry_close(r);

    /* The log agrees: one enrollment per device (replay refuses a second one). */
    r = open_registry(f);
    uint64_t counts[STELE_DEVICE_STATES];
    stele_registry_counts(r, counts);
    assert_int_equal(counts[STELE_DEVICE_ACTIVE], ROUNDS);
    assert_int_equal(counts[STELE_DEVICE_PENDING], ROUNDS);
    stele_registry_close(r);
}

/* Threads enroll while the power is cut at a random moment: after reopening, every
 * acknowledged enrollment is there, every device is pending or active (with key 1), and
 * nothing else changed. */
typedef struct {
    stele_registry *r;
    char (*tokens)[TOKEN_BUF];
    int first, count;
    bool *acked;
    atomic_int *acked_count;
} cut_args;

static void *enroll_until_failure(void *arg)
{
    cut_args *a = arg;
    for (int i = a->first; i < a->first + a->count; i++) {
        char id[32];
        snprintf(id, sizeof(id), "cut-%04d", i);
        int rc = stele_registry_enroll(a->r, id, a->tokens[i], STELE_ENROLL_TOKEN_LEN, ALG,
                                       test_pk[i % TEST_KEYS], "", NULL);
        if (rc != 0) {
            if (rc != -EIO)
                fail_msg("enroll %s: expected 0 or -EIO, got %d", id, rc);
            return NULL;
        }
        a->acked[i] = true;
        atomic_fetch_add(a->acked_count, 1);
    }
    return NULL;
}

static void test_power_cut_during_concurrent_enrollments(void **state)
{
    (void)state;
    enum { SEEDS = 30, DEVICES = 800, CUT_THREADS = 4 };
    uint64_t seed0 = first_seed(500);
    char(*tokens)[TOKEN_BUF] = calloc(DEVICES, TOKEN_BUF);
    assert_non_null(tokens);
    static bool acked[DEVICES];
    int kept_unacked = 0;
    int interrupted = 0;
    int acked_total = 0;

    for (uint64_t seed = seed0; seed < seed0 + SEEDS; seed++) {
        uint64_t rng = seed;
        test_clock clock;
        clock_set(&clock, T0);
        stele_io *io = test_fault_io_with_dir(seed, FAULT_DATA_DIR);
        stele_registry *r = open_at(io, FAULT_DATA_DIR, &clock);
        for (int i = 0; i < DEVICES; i++) {
            char id[32];
            snprintf(id, sizeof(id), "cut-%04d", i);
            add_device(r, id, "acme", "", tokens[i], NULL);
        }
        memset(acked, 0, sizeof(acked));
        atomic_int acked_count = 0;
        pthread_t threads[CUT_THREADS];
        cut_args args[CUT_THREADS];
        for (int t = 0; t < CUT_THREADS; t++) {
            args[t] = (cut_args){.r = r,
                                 .tokens = tokens,
                                 .first = t * (DEVICES / CUT_THREADS),
                                 .count = DEVICES / CUT_THREADS,
                                 .acked = acked,
                                 .acked_count = &acked_count};
            assert_int_equal(pthread_create(&threads[t], NULL, enroll_until_failure, &args[t]), 0);
        }
        /* Cut after a random number of acknowledged enrollments, mid-burst. */
        int target = (int)rng_below(&rng, DEVICES * 9 / 10);
        while (atomic_load(&acked_count) < target)
            usleep(50);
        usleep((useconds_t)rng_below(&rng, 300));
        enum stele_fault_cut_mode mode = (enum stele_fault_cut_mode)(seed % 3);
        stele_io_fault_power_cut(io, mode);
        for (int t = 0; t < CUT_THREADS; t++)
            assert_int_equal(pthread_join(threads[t], NULL), 0);
        stele_registry_close(r);

        r = open_at(io, FAULT_DATA_DIR, &clock);
        uint64_t counts[STELE_DEVICE_STATES];
        stele_registry_counts(r, counts);
        if (counts[STELE_DEVICE_PENDING] + counts[STELE_DEVICE_ACTIVE] != DEVICES)
            fail_msg("seed %" PRIu64 ": devices lost or in other states after a %s cut", seed,
                     cut_names[mode]);
        int acked_now = 0;
        for (int i = 0; i < DEVICES; i++)
            acked_now += acked[i];
        acked_total += acked_now;
        interrupted += acked_now < DEVICES;
        for (int i = 0; i < DEVICES; i++) {
            char id[32];
            snprintf(id, sizeof(id), "cut-%04d", i);
            stele_device_info info = get_device(r, id);
            if (acked[i] && info.state != STELE_DEVICE_ACTIVE)
                fail_msg("seed %" PRIu64 ": acknowledged enrollment of %s lost after a %s cut",
                         seed, id, cut_names[mode]);
            if (info.state == STELE_DEVICE_ACTIVE) {
                assert_int_equal(info.key.key_id, 1);
                assert_memory_equal(info.key.public_key, test_pk[i % TEST_KEYS], 32);
                if (!acked[i])
                    kept_unacked++;
            } else if (info.state != STELE_DEVICE_PENDING) {
                fail_msg("seed %" PRIu64 ": %s in state %s", seed, id,
                         stele_device_state_name(info.state));
            }
        }
        /* The log goes on after the cut. */
        for (int i = 0; i < DEVICES; i++) {
            char id[32];
            snprintf(id, sizeof(id), "cut-%04d", i);
            if (get_device(r, id).state == STELE_DEVICE_PENDING && !acked[i]) {
                enroll_ok(r, id, tokens[i], i % TEST_KEYS, NULL);
                break;
            }
        }
        stele_registry_close(r);
        stele_io_destroy(io);
    }
    fprintf(stderr,
            "  %d of %d runs cut mid-burst (%d of %d enrollments acknowledged); unacknowledged "
            "enrollments that survived a cut: %d\n",
            interrupted, SEEDS, acked_total, SEEDS * DEVICES, kept_unacked);
    assert_true(interrupted >= SEEDS * 9 / 10); /* the cuts land while enrollments run */
    free(tokens);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    for (int k = 0; k < TEST_KEYS; k++) {
        uint8_t seed[32];
        uint8_t sk[64];
        memset(seed, k, sizeof(seed));
        crypto_sign_seed_keypair(test_pk[k], sk, seed);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_names_and_validation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_every_transition, setup, teardown),
        cmocka_unit_test_setup_teardown(test_enrollment_and_tokens, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rotation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_counts_touch_get, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reopen_equals_before, setup, teardown),
        cmocka_unit_test(test_power_cuts),
        cmocka_unit_test(test_failed_fsync_is_sticky),
        cmocka_unit_test_setup_teardown(test_damage_and_torn_tails, setup, teardown),
        cmocka_unit_test_setup_teardown(test_format_vector_matches_doc, setup, teardown),
        cmocka_unit_test_setup_teardown(test_written_records_follow_the_doc, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_enrollment_burst, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_double_use, setup, teardown),
        cmocka_unit_test(test_power_cut_during_concurrent_enrollments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
