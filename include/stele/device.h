/*
 * device.h — libstele-device: what firmware embeds to act as a Stele device (SPEC §6).
 * No allocation after init; storage through callbacks the firmware provides. Frames are
 * built and sealed with stele/frame.h.
 *
 * Counters that never repeat across power loss: a frame's counter is what makes a replay
 * detectable, so a device that reused one after a power cut would have its fresh data
 * refused as a duplicate — or worse, a recorded frame accepted in its place. The
 * counter store reserves a block of counters ahead, makes the reservation durable
 * (checksummed, versioned, in two alternating slots so a torn write leaves the other
 * intact) before handing out any counter of it, and on boot skips past the last durable
 * reservation. A power cut costs at most one block of unused counters.
 *
 * Identity (key storage): the device's Ed25519 key, its device id and key id, and during
 * a rotation the prepared next key, in one checksummed, versioned record written to two
 * alternating slots (like the counters; format in src/device/identity.c). Keys are made
 * on the device and never leave it. Rotation is crash-safe because the device persists
 * the new key *next to* the current one before it asks the server, and forgets the old
 * one only after the server confirmed: a power cut at any point leaves either the old
 * key (valid at the server until the overlap deadline) with the new one still prepared,
 * or the new key alone. Damage fails closed; nothing here ever replaces a key it did not
 * make through this protocol.
 *
 * Threads: a stele_counter or stele_identity belongs to one thread at a time.
 */
#ifndef STELE_DEVICE_H
#define STELE_DEVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Two storage slots of STELE_COUNTER_RECORD_BYTES each (flash pages, files...). */
#define STELE_COUNTER_RECORD_BYTES 40
typedef struct {
    /* Reads slot 0 or 1 into buf (exactly len bytes): 0; -ENOENT when the slot was never
     * written (empty); -EBADMSG when it holds something that is not a whole record (a
     * torn write); any other negative errno when it cannot be read — the open then fails
     * with it, since taking an unreadable slot for empty could repeat counters. */
    int (*read)(void *ctx, int slot, uint8_t *buf, size_t len);
    /* Writes the slot and makes it durable; 0 only once it is (never report a write
     * that may not survive power loss as done). */
    int (*write)(void *ctx, int slot, const uint8_t *buf, size_t len);
    void *ctx;
} stele_counter_storage;

typedef struct {
    stele_counter_storage storage;
    uint64_t next;           /* the next counter to hand out */
    uint64_t reserved_until; /* counters below this are covered by a durable record */
    uint64_t generation;     /* of the newest durable record */
    uint32_t block;          /* counters reserved per record write */
    int slot;                /* slot of the newest durable record, -1 if none */
} stele_counter;

/* Loads the newest valid record (or starts at 1 when both slots are empty) and skips
 * past its reservation. block: counters per reservation (0 = 1024). No counter is handed
 * out until a reservation is durable. -EBADMSG when a slot is damaged and none is
 * valid: counters may have been used that cannot be known, so the device must move to
 * a new key (a new window) before erasing the store and starting again. */
int stele_counter_open(stele_counter *c, const stele_counter_storage *storage, uint32_t block);
/* The next counter, strictly greater than every counter handed out before, across power
 * loss. Writes a new reservation when the current one is used up; on a storage error
 * returns it and hands out nothing (-EOVERFLOW when the counter space is exhausted). */
int stele_counter_next(stele_counter *c, uint64_t *out);

/* ---- identity: key storage ------------------------------------------------------ */

/* Two slots of STELE_IDENTITY_RECORD_BYTES each, through the same kind of callbacks as
 * the counters (but other slots: the ctx tells them apart). The identity is stricter
 * about read errors than the counters: read returns 0 with the slot's bytes, -ENOENT
 * when the slot was never written (or erased), -EBADMSG when it holds something that is
 * not a record of this size (a torn write); any other error is an I/O failure and is
 * returned, never taken for "empty" — an unreadable identity must not be replaced. */
#define STELE_IDENTITY_RECORD_BYTES 256
#define STELE_IDENTITY_DEVICE_ID_MAX 64
typedef stele_counter_storage stele_identity_storage;

typedef struct {
    uint32_t key_id; /* the server's id for it; 0 while not enrolled */
    uint8_t public_key[32];
    uint8_t secret_key[64]; /* libsodium's form (seed, then public key); never leaves */
} stele_identity_key;

/* The identity as last made durable (a failed write leaves it as it was). Read the
 * fields; change them only through the functions below. */
typedef struct {
    stele_identity_storage storage;
    uint8_t alg;                                      /* STELE_FRAME_ALG_ED25519 */
    char device_id[STELE_IDENTITY_DEVICE_ID_MAX + 1]; /* "" until enrolled */
    stele_identity_key current;                       /* signs frames */
    bool has_pending;                                 /* a rotation is prepared */
    stele_identity_key pending;                       /* key_id = current.key_id + 1 */
    int64_t pending_timestamp_ns; /* in the rotation request (retries send the same) */
    uint64_t generation;          /* of the newest durable record */
    int slot;                     /* its slot, -1 if none */
} stele_identity;

/* Loads the newest valid record. 0; -ENOENT when both slots are empty (no identity yet:
 * stele_identity_create); -EBADMSG when a slot is damaged and none is valid (fail
 * closed: the key cannot be known, so the device must be enrolled again with a new one);
 * -ENOTSUP for a record of a version this library does not know (written by newer
 * firmware: never fall back to an older record behind its back); or the storage's error. */
int stele_identity_open(stele_identity *id, const stele_identity_storage *storage);

/* Makes a new key pair (libsodium's random source) and writes it as a new identity, not
 * enrolled. Refuses to replace anything: -EEXIST when a valid identity is stored,
 * -EBADMSG/-ENOTSUP when the slots hold something unreadable as one, unless force — then
 * the new identity is written above whatever is there (a torn write leaves the old one).
 * Storage read errors are returned even with force: a slot that cannot be read might
 * hold a newer record that would later win over the new key. */
int stele_identity_create(stele_identity *id, const stele_identity_storage *storage, bool force);

/* Records a completed enrollment: the device id (NUL-terminated, 1..64 of
 * [A-Za-z0-9._-]) and the key id the server gave the current key (≥ 1). Drops a prepared
 * rotation (the server forgot every older key). -EINVAL for bad arguments. */
int stele_identity_enroll(stele_identity *id, const char *device_id, uint32_t key_id);

/* Rotation, step 1: makes the next key and persists it beside the current one, with the
 * request's timestamp, before anything is sent. When a rotation is already prepared this
 * keeps it (a retry sends the same request) and returns 0. -EPERM when not enrolled;
 * -EOVERFLOW when the key id space is used up. */
int stele_identity_rotate_prepare(stele_identity *id, int64_t timestamp_ns);
/* Rotation, step 2: the request for the prepared rotation (stele/keyproof.h), the same
 * bytes every time. -ENOENT when none is prepared; -ENOSPC when cap is too small
 * (STELE_ROTATION_MAX_BYTES is enough). */
int stele_identity_rotation_request(const stele_identity *id, uint8_t *buf, size_t cap,
                                    size_t *len);
/* Rotation, step 3, once the server confirmed new key id key_id (or accepted a frame
 * under the new key): the prepared key becomes the current one and the old one is
 * forgotten. 0 when it already happened (same key_id current, nothing pending); -EINVAL
 * when key_id is not the prepared key's. */
int stele_identity_rotate_commit(stele_identity *id, uint32_t key_id);
/* Forgets a prepared rotation the server refused for good. Only safe when the server
 * never accepted it: if it had, the old key dies at the overlap deadline. */
int stele_identity_rotate_abandon(stele_identity *id);

/* Wipes the key material from memory (the storage keeps it). */
void stele_identity_close(stele_identity *id);

#endif
