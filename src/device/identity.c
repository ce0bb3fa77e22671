/*
 * identity.c — the device's key storage (see stele/device.h): its Ed25519 key, device id
 * and key id, and the next key while a rotation is under way, durable through the
 * firmware's slot callbacks.
 *
 * RECORD (256 bytes, little-endian), in slot 0 or 1:
 *   0   4  magic "STID"
 *   4   4  version (1)
 *   8   8  generation (the newer record has the higher one)
 *   16  1  algorithm (1 = Ed25519)
 *   17  1  flags: bit 0 = a rotation is prepared (the pending fields are set); others 0
 *   18  1  device id length d (0 while not enrolled, else 1..64)
 *   19  1  zero
 *   20  64 device id, [A-Za-z0-9._-], zero-padded
 *   84  4  current key id (0 while not enrolled, else ≥ 1)
 *   88  32 current key: Ed25519 seed
 *   120 32 current key: public key (derived from the seed; the loader checks it)
 *   152 4  pending key id (current + 1), or 0
 *   156 32 pending key seed, or zeros
 *   188 32 pending public key, or zeros
 *   220 8  pending rotation timestamp, ns (signed), or 0
 *   228 12 zero
 *   240 16 BLAKE2b-128 of bytes 0..240
 * A record is valid only when every rule above holds (a record that passes the checksum
 * but breaks a rule is damaged too). Every version keeps the envelope — 256 bytes, the
 * magic, the version at 4, the checksum of bytes 0..240 at 240 — so a record of another
 * version is told apart from a damaged one. docs/format/keyproof.md describes it for operators.
 *
 * Protocol: a new record (generation + 1) is always written to the slot the newest valid
 * record is NOT in, so a torn write leaves that one intact; the loader takes the valid
 * record with the highest generation. Every change is one record write, so a power cut
 * leaves the state before or after it, nothing else:
 *   keygen      → {key K1}
 *   enroll      → {device, K1 as id n}
 *   prepare     → {device, K1 as n, pending K2 as n+1, timestamp}   (then the request)
 *   commit      → {device, K2 as n+1}                               (after the answer)
 * Since the request is sent only once "prepare" is durable and built from the record
 * alone (Ed25519 is deterministic), a device that lost the answer, or the power, sends
 * the same bytes again. The old key is forgotten only by "commit", which is written to
 * both slots (no copy of the old secret stays behind; the second write is best effort —
 * the commit is durable with the first).
 *
 * Failing closed: a slot that does not read as a valid record counts as damaged; if no
 * slot is valid and one is damaged the store refuses to open (the key cannot be known —
 * it must never be silently made anew). A read error is returned, never taken for an
 * empty slot. A record of an unknown version refuses the open (downgraded firmware must
 * not fall back to an older record). Only stele_identity_create with force writes over
 * such a store, and it writes the new identity to both slots.
 */
#include "stele/device.h"

#include <errno.h>
#include <sodium.h>
#include <string.h>

#include "common/bytes.h"
#include "device/device_id.h"
#include "stele/frame.h"
#include "stele/keyproof.h"

#define IDENTITY_MAGIC "STID"
#define IDENTITY_VERSION 1u
#define IDENTITY_FLAG_PENDING 0x01u
#define IDENTITY_HASHED 240 /* bytes covered by the checksum */

/* Field offsets (see the layout above). */
#define OFF_GENERATION 8
#define OFF_ALG 16
#define OFF_FLAGS 17
#define OFF_DEVICE_LEN 18
#define OFF_DEVICE_PAD 19
#define OFF_DEVICE 20
#define OFF_KEY_ID 84
#define OFF_SEED 88
#define OFF_PUBLIC 120
#define OFF_PENDING_KEY_ID 152
#define OFF_PENDING_SEED 156
#define OFF_PENDING_PUBLIC 188
#define OFF_PENDING_TIME 220
#define OFF_RESERVED 228
#define OFF_HASH 240

_Static_assert(OFF_HASH + 16 == STELE_IDENTITY_RECORD_BYTES, "record size");
_Static_assert(OFF_DEVICE + STELE_IDENTITY_DEVICE_ID_MAX == OFF_KEY_ID, "device id field");
_Static_assert(OFF_PENDING_TIME + 8 == OFF_RESERVED, "pending fields");
_Static_assert(STELE_IDENTITY_DEVICE_ID_MAX == DEVICE_ID_MAX, "one device id rule");
_Static_assert(STELE_FRAME_ALG_ED25519 == STELE_KEYPROOF_ALG_ED25519, "one algorithm number");

typedef enum { SLOT_EMPTY, SLOT_DAMAGED, SLOT_UNSUPPORTED, SLOT_VALID } slot_state;

static void record_hash(const uint8_t *rec, uint8_t out[16])
{
    crypto_generichash(out, 16, rec, IDENTITY_HASHED, NULL, 0);
}

static bool all_zero(const uint8_t *p, size_t n)
{
    uint8_t acc = 0;
    for (size_t i = 0; i < n; i++)
        acc |= p[i];
    return acc == 0;
}

static void record_encode(const stele_identity *id, uint64_t generation,
                          uint8_t rec[STELE_IDENTITY_RECORD_BYTES])
{
    size_t d = strlen(id->device_id);
    memset(rec, 0, STELE_IDENTITY_RECORD_BYTES);
    memcpy(rec, IDENTITY_MAGIC, 4);
    put_le32(rec + 4, IDENTITY_VERSION);
    put_le64(rec + OFF_GENERATION, generation);
    rec[OFF_ALG] = id->alg;
    rec[OFF_FLAGS] = id->has_pending ? IDENTITY_FLAG_PENDING : 0;
    rec[OFF_DEVICE_LEN] = (uint8_t)d;
    memcpy(rec + OFF_DEVICE, id->device_id, d);
    put_le32(rec + OFF_KEY_ID, id->current.key_id);
    memcpy(rec + OFF_SEED, id->current.secret_key, 32); /* libsodium: seed first */
    memcpy(rec + OFF_PUBLIC, id->current.public_key, 32);
    if (id->has_pending) {
        put_le32(rec + OFF_PENDING_KEY_ID, id->pending.key_id);
        memcpy(rec + OFF_PENDING_SEED, id->pending.secret_key, 32);
        memcpy(rec + OFF_PENDING_PUBLIC, id->pending.public_key, 32);
        put_le64(rec + OFF_PENDING_TIME, (uint64_t)id->pending_timestamp_ns);
    }
    record_hash(rec, rec + OFF_HASH);
}

/* Rebuilds a key from its stored seed; false when the stored public key is not the
 * seed's (a record that passed its checksum yet holds a broken key). */
static bool key_decode(const uint8_t *seed, const uint8_t *public_key, uint32_t key_id,
                       stele_identity_key *out)
{
    out->key_id = key_id;
    crypto_sign_seed_keypair(out->public_key, out->secret_key, seed);
    return sodium_memcmp(out->public_key, public_key, 32) == 0;
}

/* Decodes a record whose checksum passed into *out's identity fields; false when a rule
 * of the layout is broken. */
static bool record_decode(const uint8_t *rec, stele_identity *out)
{
    size_t d = rec[OFF_DEVICE_LEN];
    uint32_t key_id = get_le32(rec + OFF_KEY_ID);
    bool pending = rec[OFF_FLAGS] & IDENTITY_FLAG_PENDING;
    if (rec[OFF_ALG] != STELE_KEYPROOF_ALG_ED25519 || (rec[OFF_FLAGS] & ~IDENTITY_FLAG_PENDING) ||
        rec[OFF_DEVICE_PAD] != 0 || d > STELE_IDENTITY_DEVICE_ID_MAX ||
        !all_zero(rec + OFF_DEVICE + d, STELE_IDENTITY_DEVICE_ID_MAX - d) ||
        !all_zero(rec + OFF_RESERVED, OFF_HASH - OFF_RESERVED))
        return false;
    /* Enrolled (a device id) exactly when the key has an id. */
    if ((d == 0) != (key_id == 0) || (d && !device__id_valid((const char *)rec + OFF_DEVICE, d)))
        return false;
    out->alg = rec[OFF_ALG];
    memcpy(out->device_id, rec + OFF_DEVICE, d);
    out->device_id[d] = '\0';
    out->generation = get_le64(rec + OFF_GENERATION);
    if (!key_decode(rec + OFF_SEED, rec + OFF_PUBLIC, key_id, &out->current))
        return false;
    out->has_pending = pending;
    if (!pending)
        return all_zero(rec + OFF_PENDING_KEY_ID, OFF_RESERVED - OFF_PENDING_KEY_ID);
    uint32_t next_id = get_le32(rec + OFF_PENDING_KEY_ID);
    if (key_id == 0 || key_id == UINT32_MAX || next_id != key_id + 1)
        return false;
    out->pending_timestamp_ns = (int64_t)get_le64(rec + OFF_PENDING_TIME);
    return key_decode(rec + OFF_PENDING_SEED, rec + OFF_PENDING_PUBLIC, next_id, &out->pending);
}

/* Reads one slot into *out (identity fields) and says what it holds. 0, or the
 * storage's I/O error. */
static int slot_load(const stele_identity_storage *st, int slot, stele_identity *out,
                     slot_state *state)
{
    uint8_t rec[STELE_IDENTITY_RECORD_BYTES], h[16];
    int rc = st->read(st->ctx, slot, rec, sizeof(rec));
    *state = SLOT_DAMAGED;
    if (rc == -ENOENT) {
        *state = SLOT_EMPTY;
        rc = 0;
    } else if (rc == -EBADMSG) {
        rc = 0; /* a torn or foreign slot: damaged */
    } else if (rc == 0) {
        record_hash(rec, h);
        /* The checksum first: a torn write can leave the magic and a garbage version. */
        if (memcmp(rec, IDENTITY_MAGIC, 4) != 0 || sodium_memcmp(h, rec + OFF_HASH, 16) != 0)
            *state = SLOT_DAMAGED;
        else if (get_le32(rec + 4) != IDENTITY_VERSION)
            *state = SLOT_UNSUPPORTED;
        else if (record_decode(rec, out))
            *state = SLOT_VALID;
    } else if (rc > 0) {
        rc = -EIO; /* a callback that broke its contract */
    }
    sodium_memzero(rec, sizeof(rec));
    return rc;
}

/* The slots' states and the newest valid record (*newest = -1 when none). */
static int slots_scan(const stele_identity_storage *st, stele_identity cand[2], slot_state state[2],
                      int *newest)
{
    *newest = -1;
    for (int s = 0; s < 2; s++) {
        memset(&cand[s], 0, sizeof(cand[s]));
        int rc = slot_load(st, s, &cand[s], &state[s]);
        if (rc)
            return rc;
        if (state[s] == SLOT_VALID &&
            (*newest < 0 || cand[s].generation > cand[*newest].generation))
            *newest = s;
    }
    return 0;
}

static void identity_wipe(stele_identity *id)
{
    sodium_memzero(id, sizeof(*id));
}

int stele_identity_open(stele_identity *id, const stele_identity_storage *storage)
{
    stele_identity cand[2];
    slot_state state[2];
    int newest = -1;
    int rc = slots_scan(storage, cand, state, &newest);
    identity_wipe(id);
    id->slot = -1;
    id->storage = *storage;
    if (rc)
        goto done;
    if (state[0] == SLOT_UNSUPPORTED || state[1] == SLOT_UNSUPPORTED) {
        rc = -ENOTSUP;
        goto done;
    }
    if (newest < 0) {
        rc = (state[0] == SLOT_DAMAGED || state[1] == SLOT_DAMAGED) ? -EBADMSG : -ENOENT;
        goto done;
    }
    /* Two valid records of one generation are never written; if they differ, which key
     * is the device's cannot be told. */
    int other = 1 - newest;
    if (state[other] == SLOT_VALID && cand[other].generation == cand[newest].generation &&
        (strcmp(cand[0].device_id, cand[1].device_id) != 0 ||
         cand[0].current.key_id != cand[1].current.key_id ||
         sodium_memcmp(cand[0].current.secret_key, cand[1].current.secret_key, 64) != 0 ||
         cand[0].has_pending != cand[1].has_pending ||
         (cand[0].has_pending &&
          sodium_memcmp(cand[0].pending.secret_key, cand[1].pending.secret_key, 64) != 0))) {
        rc = -EBADMSG;
        goto done;
    }
    *id = cand[newest];
    id->storage = *storage;
    id->slot = newest;
done:
    sodium_memzero(cand, sizeof(cand));
    return rc;
}

/* Writes *next as the new newest record (generation + 1) into the slot the newest is
 * not in; on success *id becomes *next. On failure *id is unchanged. */
static int identity_persist(stele_identity *id, stele_identity *next)
{
    uint8_t rec[STELE_IDENTITY_RECORD_BYTES];
    int slot = id->slot == 0 ? 1 : 0;
    record_encode(next, id->generation + 1, rec);
    int rc = id->storage.write(id->storage.ctx, slot, rec, sizeof(rec));
    sodium_memzero(rec, sizeof(rec));
    if (rc)
        return rc < 0 ? rc : -EIO;
    next->storage = id->storage;
    next->generation = id->generation + 1;
    next->slot = slot;
    *id = *next;
    return 0;
}

int stele_identity_create(stele_identity *id, const stele_identity_storage *storage, bool force)
{
    stele_identity cand[2], next;
    slot_state state[2];
    int newest = -1;
    int rc = slots_scan(storage, cand, state, &newest);
    identity_wipe(id);
    id->storage = *storage;
    id->slot = -1;
    memset(&next, 0, sizeof(next));
    if (rc)
        goto done;
    bool present = state[0] != SLOT_EMPTY || state[1] != SLOT_EMPTY;
    if (present && !force) {
        rc = newest >= 0                                                      ? -EEXIST
             : (state[0] == SLOT_UNSUPPORTED || state[1] == SLOT_UNSUPPORTED) ? -ENOTSUP
                                                                              : -EBADMSG;
        goto done;
    }
    /* Above every generation on the device, into the slot the newest valid record is
     * not in: a torn write leaves what was there. */
    if (newest >= 0) {
        id->slot = newest;
        id->generation = cand[newest].generation;
        if (state[1 - newest] == SLOT_VALID && cand[1 - newest].generation > id->generation)
            id->generation = cand[1 - newest].generation;
    }
    uint8_t seed[32];
    randombytes_buf(seed, sizeof(seed));
    next.alg = STELE_KEYPROOF_ALG_ED25519;
    crypto_sign_seed_keypair(next.current.public_key, next.current.secret_key, seed);
    sodium_memzero(seed, sizeof(seed));
    rc = identity_persist(id, &next);
    /* Over an existing store, the other slot gets the new identity too: nothing of the
     * old one (its key, or a record of an unknown version) stays behind to win later. */
    if (rc == 0 && present)
        rc = identity_persist(id, &next);
done:
    sodium_memzero(&next, sizeof(next));
    sodium_memzero(cand, sizeof(cand));
    return rc;
}

int stele_identity_enroll(stele_identity *id, const char *device_id, uint32_t key_id)
{
    size_t d = device_id ? strlen(device_id) : 0;
    if (!device__id_valid(device_id, d) || key_id == 0)
        return -EINVAL;
    stele_identity next = *id;
    memcpy(next.device_id, device_id, d + 1);
    next.current.key_id = key_id;
    next.has_pending = false;
    memset(&next.pending, 0, sizeof(next.pending));
    next.pending_timestamp_ns = 0;
    int rc = identity_persist(id, &next);
    sodium_memzero(&next, sizeof(next));
    return rc;
}

int stele_identity_rotate_prepare(stele_identity *id, int64_t timestamp_ns)
{
    if (id->current.key_id == 0 || id->device_id[0] == '\0')
        return -EPERM;
    if (id->has_pending)
        return 0; /* prepared before: the same request again */
    if (id->current.key_id == UINT32_MAX)
        return -EOVERFLOW;
    stele_identity next = *id;
    uint8_t seed[32];
    randombytes_buf(seed, sizeof(seed));
    crypto_sign_seed_keypair(next.pending.public_key, next.pending.secret_key, seed);
    sodium_memzero(seed, sizeof(seed));
    next.pending.key_id = id->current.key_id + 1;
    next.pending_timestamp_ns = timestamp_ns;
    next.has_pending = true;
    int rc = identity_persist(id, &next);
    sodium_memzero(&next, sizeof(next));
    return rc;
}

int stele_identity_rotation_request(const stele_identity *id, uint8_t *buf, size_t cap, size_t *len)
{
    if (!id->has_pending)
        return -ENOENT;
    return stele_keyproof_rotation_build(buf, cap, id->device_id, id->current.key_id,
                                         id->current.secret_key, id->pending.key_id,
                                         id->pending.secret_key, id->pending_timestamp_ns, len);
}

int stele_identity_rotate_commit(stele_identity *id, uint32_t key_id)
{
    if (!id->has_pending)
        return id->current.key_id == key_id && key_id != 0 ? 0 : -EINVAL;
    if (id->pending.key_id != key_id)
        return -EINVAL;
    stele_identity next = *id;
    next.current = id->pending;
    next.has_pending = false;
    memset(&next.pending, 0, sizeof(next.pending));
    next.pending_timestamp_ns = 0;
    int rc = identity_persist(id, &next);
    if (rc == 0)
        (void)identity_persist(id, &next); /* wipes the old key's last copy; best effort */
    sodium_memzero(&next, sizeof(next));
    return rc;
}

int stele_identity_rotate_abandon(stele_identity *id)
{
    if (!id->has_pending)
        return 0;
    stele_identity next = *id;
    next.has_pending = false;
    memset(&next.pending, 0, sizeof(next.pending));
    next.pending_timestamp_ns = 0;
    int rc = identity_persist(id, &next);
    sodium_memzero(&next, sizeof(next));
    return rc;
}

void stele_identity_close(stele_identity *id)
{
    if (id)
        identity_wipe(id);
}
