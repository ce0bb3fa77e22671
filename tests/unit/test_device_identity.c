/*
 * test_device_identity.c — libstele-device's key storage (stele_identity_*, stele/device.h).
 *
 * Power cuts: a device lives on the fault-injecting file system (dropped, torn and
 * garbage writes; write and fsync errors scheduled at random points) through keygen,
 * enrollment, rotations whose answers are sometimes lost, frames, and overlap deadlines,
 * against a model of the server. After every cut it boots again and the test checks:
 *   - what loads is exactly the state before or after the step that was cut (never
 *     another key: no key silently replaced);
 *   - it is usable: its current key, or the prepared one it will retry with, is a key
 *     the server accepts;
 *   - a prepared rotation is re-sent as the very same bytes;
 *   - refusing to open (-EBADMSG) happens only while no identity was ever durable (the
 *     first record torn) — then the device makes a key anew, as `keygen --force` does.
 * Seeds: STELE_TEST_SEED fixes the first; failures print it.
 *
 * Damage (in-memory slots): every flipped bit of a lone record fails closed; of the
 * newer of two, falls back to the older one — the same key; read errors are not taken
 * for empty slots; records of an unknown version and records that pass the checksum but
 * break a rule are refused; create never replaces anything without force.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "stele/device.h"
#include "stele/io.h"
#include "stele/keyproof.h"

#include "test_util.h"

/* ---- the model ------------------------------------------------------------------- */

/* A device state as the test knows it. any_key / any_pending_key: a step that makes a
 * random key failed, so which key it made is unknown (but not sent anywhere). */
typedef struct {
    bool exists;
    char device[STELE_IDENTITY_DEVICE_ID_MAX + 1];
    uint32_t key_id;
    uint8_t pk[32];
    bool has_pending;
    uint32_t pending_id;
    uint8_t pending_pk[32];
    int64_t ts;
    bool any_key, any_pending_key;
} snapshot;

static snapshot snap_of(const stele_identity *id)
{
    snapshot s = {.exists = true,
                  .key_id = id->current.key_id,
                  .has_pending = id->has_pending,
                  .pending_id = id->pending.key_id,
                  .ts = id->pending_timestamp_ns};
    memcpy(s.device, id->device_id, sizeof(s.device));
    memcpy(s.pk, id->current.public_key, 32);
    if (id->has_pending)
        memcpy(s.pending_pk, id->pending.public_key, 32);
    return s;
}

static bool snap_matches(const snapshot *want, const stele_identity *id)
{
    if (!want->exists || strcmp(want->device, id->device_id) != 0 ||
        want->key_id != id->current.key_id || want->has_pending != id->has_pending)
        return false;
    if (!want->any_key && memcmp(want->pk, id->current.public_key, 32) != 0)
        return false;
    if (want->has_pending &&
        (want->pending_id != id->pending.key_id || want->ts != id->pending_timestamp_ns ||
         (!want->any_pending_key && memcmp(want->pending_pk, id->pending.public_key, 32) != 0)))
        return false;
    return true;
}

typedef struct {
    bool enrolled;
    uint32_t cur_id;
    uint8_t cur_pk[32];
    bool has_next;
    uint32_t next_id;
    uint8_t next_pk[32];
    uint32_t last_id;
} server_model;

static bool server_accepts_key(const server_model *srv, const uint8_t pk[32])
{
    return srv->enrolled && (memcmp(srv->cur_pk, pk, 32) == 0 ||
                             (srv->has_next && memcmp(srv->next_pk, pk, 32) == 0));
}

/* The server's side of a rotation request: 0 and the new key id, or -1 refused. Answers
 * a repeat with 200, also once the new key became the current one. */
static int server_rotate(server_model *srv, const uint8_t *req, size_t len, uint32_t *key_id)
{
    stele_keyproof_rotation r;
    if (stele_keyproof_rotation_parse(req, len, &r, NULL) != 0)
        return -1;
    if (srv->cur_id == r.new_key_id && memcmp(srv->cur_pk, r.new_public_key, 32) == 0) {
        *key_id = r.new_key_id; /* already promoted: a retry */
        return 0;
    }
    if (r.old_key_id != srv->cur_id || stele_keyproof_rotation_verify(&r, srv->cur_pk) != 0)
        return -1;
    if (srv->has_next)
        return memcmp(srv->next_pk, r.new_public_key, 32) == 0 ? (*key_id = r.new_key_id, 0) : -1;
    srv->has_next = true;
    srv->next_id = r.new_key_id;
    memcpy(srv->next_pk, r.new_public_key, 32);
    srv->last_id = r.new_key_id;
    *key_id = r.new_key_id;
    return 0;
}

static void server_promote(server_model *srv)
{
    if (!srv->has_next)
        return;
    srv->cur_id = srv->next_id;
    memcpy(srv->cur_pk, srv->next_pk, 32);
    srv->has_next = false;
}

typedef struct {
    uint64_t seed;
    int cycle;
    snapshot known;   /* the state as of the last step that succeeded */
    snapshot attempt; /* the step in flight when a write failed (may have landed) */
    server_model srv;
    uint8_t sent[STELE_ROTATION_MAX_BYTES]; /* the last rotation request sent */
    size_t sent_len;
    uint8_t sent_pending_pk[32];
    int64_t clock;
    int refusals, rotations, lost_answers;
} life;

#define LIFE_FAIL(l, ...)                                                                          \
    do {                                                                                           \
        char msg_[256];                                                                            \
        snprintf(msg_, sizeof(msg_), __VA_ARGS__);                                                 \
        fail_msg("seed %" PRIu64 " cycle %d: %s", (l)->seed, (l)->cycle, msg_);                    \
    } while (0)

/* Boot: open and check what loaded against the model. Returns the open's result. */
static int life_boot(life *l, stele_identity *id, const stele_identity_storage *st)
{
    int rc = stele_identity_open(id, st);
    if (rc == -ENOENT || rc == -EBADMSG) {
        if (l->known.exists)
            LIFE_FAIL(l, "open returned %d after an identity was durable (key id %u)", rc,
                      l->known.key_id);
        if (rc == -EBADMSG)
            l->refusals++;
        l->attempt.exists = false;
        return rc;
    }
    if (rc != 0)
        LIFE_FAIL(l, "open returned %d", rc);
    if (!snap_matches(&l->known, id) && !(l->attempt.exists && snap_matches(&l->attempt, id))) {
        if (l->known.exists)
            LIFE_FAIL(l,
                      "loaded neither the state before nor after the cut step (loaded key id "
                      "%u pending %d; known key id %u pending %d; attempted %s)",
                      id->current.key_id, id->has_pending, l->known.key_id, l->known.has_pending,
                      l->attempt.exists ? "yes" : "no");
        LIFE_FAIL(l, "an identity appeared that no successful or attempted step made");
    }
    l->known = snap_of(id);
    l->attempt.exists = false;
    /* Usable: the server takes its key, or the prepared one it will retry with. */
    if (id->device_id[0] && !server_accepts_key(&l->srv, id->current.public_key) &&
        !(id->has_pending && server_accepts_key(&l->srv, id->pending.public_key)))
        LIFE_FAIL(l,
                  "unusable: the server accepts neither the current key (id %u) nor the "
                  "prepared one",
                  id->current.key_id);
    /* A prepared rotation that was sent is sent again as the same bytes. */
    if (id->has_pending && l->sent_len &&
        memcmp(l->sent_pending_pk, id->pending.public_key, 32) == 0) {
        uint8_t again[STELE_ROTATION_MAX_BYTES];
        size_t len = 0;
        assert_int_equal(stele_identity_rotation_request(id, again, sizeof(again), &len), 0);
        if (len != l->sent_len || memcmp(again, l->sent, len) != 0)
            LIFE_FAIL(l, "the rotation request after reboot differs from the one sent");
    }
    return 0;
}

/* One rotation attempt (prepare if needed, send, maybe lose the answer, commit). 0, or
 * a storage error (the device stops until the next boot). */
static int life_rotate(life *l, stele_identity *id, uint64_t *rng)
{
    bool had_pending = id->has_pending;
    uint8_t prepared_pk[32];
    memcpy(prepared_pk, id->pending.public_key, 32);
    if (!had_pending) {
        l->attempt = l->known;
        l->attempt.has_pending = true;
        l->attempt.pending_id = id->current.key_id + 1;
        l->attempt.ts = l->clock;
        l->attempt.any_pending_key = true;
    }
    int rc = stele_identity_rotate_prepare(id, l->clock);
    if (rc)
        return rc;
    l->known = snap_of(id);
    l->attempt.exists = false;
    if (had_pending && memcmp(prepared_pk, id->pending.public_key, 32) != 0)
        LIFE_FAIL(l, "prepare replaced a prepared rotation's key");
    uint8_t req[STELE_ROTATION_MAX_BYTES];
    size_t len = 0;
    assert_int_equal(stele_identity_rotation_request(id, req, sizeof(req), &len), 0);
    memcpy(l->sent, req, len);
    l->sent_len = len;
    memcpy(l->sent_pending_pk, id->pending.public_key, 32);
    uint32_t key_id = 0;
    if (server_rotate(&l->srv, req, len, &key_id) != 0) {
        /* Refused only while the server waits for the first frame under the key the
         * device committed last (a rotation at a time); retried later. */
        if (l->srv.has_next && memcmp(l->srv.next_pk, id->current.public_key, 32) == 0)
            return 0;
        LIFE_FAIL(l, "the server refused the rotation request (old key id %u)", id->current.key_id);
    }
    if (test_rng_next(rng) % 4 == 0) {
        l->lost_answers++;
        return 0; /* the answer is lost: retried later */
    }
    l->attempt = l->known;
    l->attempt.key_id = id->pending.key_id;
    memcpy(l->attempt.pk, id->pending.public_key, 32);
    l->attempt.has_pending = false;
    rc = stele_identity_rotate_commit(id, key_id);
    if (rc)
        return rc;
    l->known = snap_of(id);
    l->attempt.exists = false;
    l->rotations++;
    return 0;
}

typedef struct {
    int refusals, rotations, lost, torn_reads;
} life_totals;

static void run_seed(uint64_t seed, life_totals *t)
{
    uint64_t rng = seed;
    stele_io *io;
    assert_int_equal(stele_io_fault_create(seed, &io), 0);
    assert_int_equal(stele_io_mkdir_durable(io, "dev"), 0);
    test_slot_files s = {.io = io, .dir = "dev", .name = "identity"};
    if (seed % 4 == 0) {
        /* The very first write torn to nothing (a durable empty slot): the store must
         * refuse to open, and the device makes its key anew (keygen --force). */
        stele_file *f;
        assert_int_equal(
            stele_io_open(io, "dev/identity.0", STELE_IO_READWRITE | STELE_IO_CREATE, &f), 0);
        assert_int_equal(stele_io_fsync(f), 0);
        stele_io_close(f);
        assert_int_equal(stele_io_fsync_dir(io, "dev"), 0);
    }
    stele_identity_storage st = {.read = test_slot_read, .write = test_slot_write, .ctx = &s};
    life l = {.seed = seed, .clock = INT64_C(1764000000000000000)};
    for (l.cycle = 0; l.cycle < 60; l.cycle++) {
        stele_identity id;
        l.clock += 1000000000;
        /* Faults for this life: a write or fsync failing after a few operations. */
        if (test_rng_next(&rng) % 2 == 0)
            stele_io_fault_fail_after(
                io, test_rng_next(&rng) % 2 ? STELE_FAULT_OP_WRITE : STELE_FAULT_OP_FSYNC,
                1 + test_rng_next(&rng) % 6, test_rng_next(&rng) % 2 ? EIO : ENOSPC);
        int rc = life_boot(&l, &id, &st);
        if (rc == -ENOENT || rc == -EBADMSG) {
            l.attempt = (snapshot){.exists = true, .any_key = true};
            rc = stele_identity_create(&id, &st, rc == -EBADMSG);
            if (rc == 0) {
                l.known = snap_of(&id);
                l.attempt.exists = false;
            }
        }
        for (int step = 0; rc == 0 && step < 4; step++) {
            if (id.device_id[0] == '\0') {
                /* Enroll: the server registers the key (a repeat with the same key gets
                 * the same id); the answer may be lost. */
                if (!l.srv.enrolled) {
                    l.srv.enrolled = true;
                    l.srv.cur_id = l.srv.last_id = 1 + (uint32_t)(test_rng_next(&rng) % 5);
                    memcpy(l.srv.cur_pk, id.current.public_key, 32);
                } else if (memcmp(l.srv.cur_pk, id.current.public_key, 32) != 0) {
                    LIFE_FAIL(&l, "enrolling a key other than the one the server holds");
                }
                if (test_rng_next(&rng) % 4 == 0) {
                    l.lost_answers++;
                    continue;
                }
                l.attempt = l.known;
                snprintf(l.attempt.device, sizeof(l.attempt.device), "dev-%" PRIu64, seed % 1000);
                l.attempt.key_id = l.srv.cur_id;
                rc = stele_identity_enroll(&id, l.attempt.device, l.srv.cur_id);
                if (rc == 0) {
                    l.known = snap_of(&id);
                    l.attempt.exists = false;
                }
                continue;
            }
            switch (test_rng_next(&rng) % 4) {
            case 0:
            case 1:
                rc = life_rotate(&l, &id, &rng);
                break;
            case 2:
                /* A frame under the current key. When the server no longer takes it
                 * (the overlap deadline passed while the answer was lost), the prepared
                 * rotation is completed first. */
                if (!server_accepts_key(&l.srv, id.current.public_key) && id.has_pending) {
                    rc = life_rotate(&l, &id, &rng);
                    if (rc || id.has_pending)
                        break;
                }
                if (!server_accepts_key(&l.srv, id.current.public_key))
                    LIFE_FAIL(&l, "a frame under the current key (id %u) would be refused",
                              id.current.key_id);
                if (l.srv.has_next && memcmp(l.srv.next_pk, id.current.public_key, 32) == 0)
                    server_promote(&l.srv); /* the first frame under the new key */
                break;
            case 3:
                server_promote(&l.srv); /* the overlap deadline passes */
                break;
            }
        }
        stele_io_fault_fail_after(io, STELE_FAULT_OP_WRITE, 0, 0);
        stele_io_fault_fail_after(io, STELE_FAULT_OP_FSYNC, 0, 0);
        stele_identity_close(&id);
        stele_io_fault_power_cut(io, (enum stele_fault_cut_mode)(test_rng_next(&rng) % 3));
    }
    t->refusals += l.refusals;
    t->rotations += l.rotations;
    t->lost += l.lost_answers;
    t->torn_reads += s.torn_reads;
    stele_io_destroy(io);
}

static void test_power_cuts_during_keygen_and_rotation(void **state)
{
    (void)state;
    const char *env = getenv("STELE_TEST_SEED");
    uint64_t seed = env ? strtoull(env, NULL, 10) : (uint64_t)time(NULL);
    life_totals t = {0};
    printf("identity store: first seed %" PRIu64 "\n", seed);
    for (int i = 0; i < 300; i++)
        run_seed(seed + (uint64_t)i, &t);
    printf("identity store: 300 seeds x 60 power cuts: %d rotations committed, %d answers "
           "lost, %d torn slots read, %d refusals after a torn first record\n",
           t.rotations, t.lost, t.torn_reads, t.refusals);
    /* The test must have met what it is about. */
    assert_true(t.rotations > 0 && t.lost > 0 && t.torn_reads > 0 && t.refusals > 0);
}

/* ---- in-memory slots -------------------------------------------------------------- */

typedef struct {
    uint8_t data[2][STELE_IDENTITY_RECORD_BYTES];
    bool present[2];
    int read_error[2]; /* returned by read when non-zero */
    int write_error;   /* returned by write when non-zero */
    int writes;
} mem_slots;

static int mem_read(void *ctx, int slot, uint8_t *buf, size_t len)
{
    mem_slots *m = ctx;
    if (m->read_error[slot])
        return m->read_error[slot];
    if (!m->present[slot])
        return -ENOENT;
    assert_int_equal(len, STELE_IDENTITY_RECORD_BYTES);
    memcpy(buf, m->data[slot], len);
    return 0;
}

static int mem_write(void *ctx, int slot, const uint8_t *buf, size_t len)
{
    mem_slots *m = ctx;
    if (m->write_error)
        return m->write_error;
    assert_int_equal(len, STELE_IDENTITY_RECORD_BYTES);
    memcpy(m->data[slot], buf, len);
    m->present[slot] = true;
    m->writes++;
    return 0;
}

static stele_identity_storage mem_storage(mem_slots *m)
{
    return (stele_identity_storage){.read = mem_read, .write = mem_write, .ctx = m};
}

/* Recomputes a record's checksum after the test edited it. */
static void reseal(uint8_t *rec)
{
    crypto_generichash(rec + 240, 16, rec, 240, NULL, 0);
}

static void test_create_never_replaces(void **state)
{
    (void)state;
    mem_slots m = {0};
    stele_identity_storage st = mem_storage(&m);
    stele_identity id, again;
    assert_int_equal(stele_identity_open(&id, &st), -ENOENT);
    assert_int_equal(stele_identity_create(&id, &st, false), 0);
    assert_int_equal(m.writes, 1);
    uint8_t pk[32];
    memcpy(pk, id.current.public_key, 32);
    assert_int_equal(id.current.key_id, 0);
    assert_string_equal(id.device_id, "");
    assert_int_equal(stele_identity_create(&again, &st, false), -EEXIST);
    assert_int_equal(stele_identity_open(&again, &st), 0);
    assert_memory_equal(again.current.public_key, pk, 32);
    assert_memory_equal(again.current.secret_key, id.current.secret_key, 64);
    /* Force: a new key, written to both slots (nothing of the old one left). */
    assert_int_equal(stele_identity_create(&again, &st, true), 0);
    assert_memory_not_equal(again.current.public_key, pk, 32);
    assert_true(m.present[0] && m.present[1]);
    assert_null(memmem(m.data[0], sizeof(m.data[0]), id.current.secret_key, 32));
    assert_null(memmem(m.data[1], sizeof(m.data[1]), id.current.secret_key, 32));
    assert_int_equal(stele_identity_open(&id, &st), 0);
    assert_memory_equal(id.current.public_key, again.current.public_key, 32);
}

static void test_damage_fails_closed(void **state)
{
    (void)state;
    mem_slots m = {0};
    stele_identity_storage st = mem_storage(&m);
    stele_identity id, got;
    assert_int_equal(stele_identity_create(&id, &st, false), 0);
    /* A lone record: every flipped bit refuses the open, and create without force. */
    for (size_t bit = 0; bit < STELE_IDENTITY_RECORD_BYTES * 8; bit++) {
        m.data[0][bit / 8] ^= (uint8_t)(1u << (bit % 8));
        int rc = stele_identity_open(&got, &st);
        if (rc != -EBADMSG)
            fail_msg("lone record, bit %zu flipped: open returned %d, expected -EBADMSG", bit, rc);
        assert_int_equal(stele_identity_create(&got, &st, false), -EBADMSG);
        m.data[0][bit / 8] ^= (uint8_t)(1u << (bit % 8));
    }
    assert_int_equal(m.writes, 1);
    /* Two records: the newer damaged falls back to the older — the same key. */
    assert_int_equal(stele_identity_enroll(&id, "pump-7", 3), 0);
    assert_int_equal(id.slot, 1);
    for (size_t bit = 0; bit < STELE_IDENTITY_RECORD_BYTES * 8; bit++) {
        m.data[1][bit / 8] ^= (uint8_t)(1u << (bit % 8));
        assert_int_equal(stele_identity_open(&got, &st), 0);
        assert_memory_equal(got.current.public_key, id.current.public_key, 32);
        assert_int_equal(got.current.key_id, 0); /* the state before the enrollment */
        m.data[1][bit / 8] ^= (uint8_t)(1u << (bit % 8));
    }
    /* Both damaged: refused. */
    m.data[0][100] ^= 1;
    m.data[1][200] ^= 1;
    assert_int_equal(stele_identity_open(&got, &st), -EBADMSG);
    m.data[0][100] ^= 1;
    m.data[1][200] ^= 1;
    /* A torn slot (the storage says "not a record") next to an empty one: refused. */
    m.present[0] = false;
    m.read_error[1] = -EBADMSG;
    assert_int_equal(stele_identity_open(&got, &st), -EBADMSG);
}

static void test_read_errors_are_not_empty_slots(void **state)
{
    (void)state;
    mem_slots m = {0};
    stele_identity_storage st = mem_storage(&m);
    stele_identity id;
    m.read_error[1] = -EIO;
    assert_int_equal(stele_identity_open(&id, &st), -EIO);
    /* Even with force: the unreadable slot might hold a newer record. */
    assert_int_equal(stele_identity_create(&id, &st, true), -EIO);
    assert_int_equal(m.writes, 0);
}

static void test_unknown_version_and_broken_rules_refused(void **state)
{
    (void)state;
    mem_slots m = {0};
    stele_identity_storage st = mem_storage(&m);
    stele_identity id, got;
    assert_int_equal(stele_identity_create(&id, &st, false), 0);
    assert_int_equal(stele_identity_enroll(&id, "pump-7", 3), 0);
    uint8_t saved[STELE_IDENTITY_RECORD_BYTES];
    memcpy(saved, m.data[1], sizeof(saved));

    /* Version 2 with a valid checksum in the newer slot: refused, never the older one. */
    m.data[1][4] = 2;
    reseal(m.data[1]);
    assert_int_equal(stele_identity_open(&got, &st), -ENOTSUP);
    assert_int_equal(stele_identity_create(&got, &st, false), -EEXIST);

    /* Checksum fine, rules broken: the public key is not the seed's; a device id without
     * a key id; the pending flag without a pending key; a stray flag; non-zero padding. */
    struct {
        size_t at;
        uint8_t value;
        const char *what;
    } edits[] = {
        {120, (uint8_t)(saved[120] ^ 0xff), "public key not the seed's"},
        {84, 0, "device id without key id"},
        {17, 1, "pending flag, no pending key"},
        {17, 4, "unknown flag"},
        {230, 1, "reserved byte set"},
        {19, 1, "device id pad byte set"},
        {18, 65, "device id too long"},
        {20, ' ', "invalid device id"},
        {16, 2, "unknown algorithm"},
    };
    for (size_t i = 0; i < sizeof(edits) / sizeof(edits[0]); i++) {
        memcpy(m.data[1], saved, sizeof(saved));
        m.data[1][edits[i].at] = edits[i].value;
        reseal(m.data[1]);
        assert_int_equal(stele_identity_open(&got, &st), 0);
        if (got.current.key_id != 0) /* must have fallen back to the older record */
            fail_msg("%s: the broken record was loaded", edits[i].what);
        m.present[0] = false; /* alone, it refuses the open */
        int rc = stele_identity_open(&got, &st);
        if (rc != -EBADMSG)
            fail_msg("%s: open returned %d, expected -EBADMSG", edits[i].what, rc);
        m.present[0] = true;
    }
    memcpy(m.data[1], saved, sizeof(saved));
    assert_int_equal(stele_identity_open(&got, &st), 0);
    assert_string_equal(got.device_id, "pump-7");
    assert_int_equal(got.current.key_id, 3);
}

static void test_rotation_steps(void **state)
{
    (void)state;
    mem_slots m = {0};
    stele_identity_storage st = mem_storage(&m);
    stele_identity id, got;
    uint8_t req[STELE_ROTATION_MAX_BYTES], again[STELE_ROTATION_MAX_BYTES];
    size_t len = 0, len2 = 0;
    assert_int_equal(stele_identity_create(&id, &st, false), 0);
    assert_int_equal(stele_identity_rotate_prepare(&id, 5), -EPERM); /* not enrolled */
    assert_int_equal(stele_identity_rotation_request(&id, req, sizeof(req), &len), -ENOENT);
    assert_int_equal(stele_identity_enroll(&id, "bad id", 1), -EINVAL);
    assert_int_equal(stele_identity_enroll(&id, "pump-7", 0), -EINVAL);
    assert_int_equal(stele_identity_enroll(&id, "pump-7", 4), 0);
    uint8_t old_pk[32], old_seed[32];
    memcpy(old_pk, id.current.public_key, 32);
    memcpy(old_seed, id.current.secret_key, 32);

    assert_int_equal(stele_identity_rotate_prepare(&id, 777), 0);
    assert_true(id.has_pending);
    assert_int_equal(id.pending.key_id, 5);
    assert_memory_not_equal(id.pending.public_key, old_pk, 32);
    assert_int_equal(stele_identity_rotation_request(&id, req, sizeof(req), &len), 0);
    stele_keyproof_rotation r;
    assert_int_equal(stele_keyproof_rotation_parse(req, len, &r, NULL), 0);
    assert_int_equal(r.old_key_id, 4);
    assert_int_equal(r.new_key_id, 5);
    assert_true(r.timestamp_ns == 777);
    assert_int_equal(stele_keyproof_rotation_verify(&r, old_pk), 0);
    /* Preparing again keeps the prepared key; reloaded, the same request. */
    assert_int_equal(stele_identity_rotate_prepare(&id, 999), 0);
    assert_int_equal(stele_identity_open(&got, &st), 0);
    assert_true(got.has_pending);
    assert_int_equal(stele_identity_rotation_request(&got, again, sizeof(again), &len2), 0);
    assert_int_equal(len2, len);
    assert_memory_equal(again, req, len);
    assert_int_equal(stele_identity_rotation_request(&got, again, 100, &len2), -ENOSPC);

    /* A write failure changes nothing in memory. */
    m.write_error = -EIO;
    assert_int_equal(stele_identity_rotate_commit(&id, 5), -EIO);
    assert_true(id.has_pending);
    assert_memory_equal(id.current.public_key, old_pk, 32);
    m.write_error = 0;

    assert_int_equal(stele_identity_rotate_commit(&id, 6), -EINVAL);
    assert_int_equal(stele_identity_rotate_commit(&id, 5), 0);
    assert_false(id.has_pending);
    assert_int_equal(id.current.key_id, 5);
    assert_memory_equal(id.current.public_key, r.new_public_key, 32);
    assert_int_equal(stele_identity_rotate_commit(&id, 5), 0); /* already done */
    assert_int_equal(stele_identity_rotate_commit(&id, 4), -EINVAL);
    /* The old secret is gone from both slots. */
    assert_null(memmem(m.data[0], sizeof(m.data[0]), old_seed, 32));
    assert_null(memmem(m.data[1], sizeof(m.data[1]), old_seed, 32));
    assert_int_equal(stele_identity_open(&got, &st), 0);
    assert_int_equal(got.current.key_id, 5);
    assert_memory_equal(got.current.secret_key, id.current.secret_key, 64);

    /* Abandon forgets a prepared rotation; enroll does too. */
    assert_int_equal(stele_identity_rotate_prepare(&id, 1), 0);
    assert_int_equal(stele_identity_rotate_abandon(&id), 0);
    assert_false(id.has_pending);
    assert_int_equal(stele_identity_open(&got, &st), 0);
    assert_false(got.has_pending);
    assert_int_equal(got.current.key_id, 5);
    assert_int_equal(stele_identity_rotate_prepare(&id, 1), 0);
    assert_int_equal(stele_identity_enroll(&id, "pump-8", 9), 0);
    assert_false(id.has_pending);
    stele_identity_close(&id);
    stele_identity_close(&got);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_power_cuts_during_keygen_and_rotation),
        cmocka_unit_test(test_create_never_replaces),
        cmocka_unit_test(test_damage_fails_closed),
        cmocka_unit_test(test_read_errors_are_not_empty_slots),
        cmocka_unit_test(test_unknown_version_and_broken_rules_refused),
        cmocka_unit_test(test_rotation_steps),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
