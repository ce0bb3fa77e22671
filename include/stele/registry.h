/*
 * registry.h — the device registry of the control plane (SPEC §6): which devices exist,
 * which tenant and cohort they belong to, their lifecycle state, their keys, firmware
 * and enrollment; plus their one-time enrollment tokens.
 *
 * Lifecycle: add → pending (an enrollment token is issued) → enroll → active;
 * quarantine ⇄ release; revoke (terminal for the current key); reenroll (from any
 * state) → pending again with a fresh token, the old keys dead, and the next enrollment
 * gets a key id never used before for this device (so its anti-replay window is new).
 *
 * Durability: DATA/devices.log is an append-only log of checksummed records replayed
 * into memory on open (format: docs/format/registry.md). Every mutation is durable
 * (fsync'd) before the call returns and before it is visible to lookups; concurrent
 * mutations share one fsync (group commit), so a burst of enrollments costs a few
 * fsyncs, not one each. A failed write or fsync is never retried: the registry turns
 * failed, every later mutation returns -EIO (so do the other mutations that were waiting
 * for the failed fsync), lookups go on from memory, and a restart recovers from the log.
 * Lookups never touch the disk.
 *
 * Every mutation may also return -EINVAL (malformed arguments), -ENOMEM, -EFBIG (the log
 * reached its size cap; the registry stays healthy) and -EIO (failed).
 *
 * Enrollment tokens: "sen_" + 64 lowercase hex digits (32 random bytes); only a
 * BLAKE2b-256 hash is stored, compared in constant time. Single use (consumed by the
 * enrollment that uses it, durably) and expiring.
 *
 * Threads: every function may be called from any thread.
 */
#ifndef STELE_REGISTRY_H
#define STELE_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "stele/io.h"

#define STELE_DEVICE_ID_MAX 64          /* 1..64 of [A-Za-z0-9._-], as in frames */
#define STELE_COHORT_MAX 64             /* 0..64 of [A-Za-z0-9._-] */
#define STELE_FIRMWARE_MAX 64           /* 0..64 printable ASCII, no quote or backslash */
#define STELE_ENROLL_TOKEN_LEN (4 + 64) /* "sen_" + hex */

typedef enum {
    STELE_DEVICE_PENDING = 0,
    STELE_DEVICE_ACTIVE = 1,
    STELE_DEVICE_QUARANTINED = 2,
    STELE_DEVICE_REVOKED = 3,
} stele_device_state;
#define STELE_DEVICE_STATES 4

/* "pending", "active", "quarantined", "revoked". */
const char *stele_device_state_name(stele_device_state s);

typedef struct {
    uint32_t key_id; /* 0: no key in this slot */
    uint8_t alg;     /* STELE_FRAME_ALG_* */
    uint8_t public_key[32];
    int64_t added_ns;
} stele_device_key;

typedef struct {
    char id[STELE_DEVICE_ID_MAX + 1];
    char tenant[65];
    char cohort[STELE_COHORT_MAX + 1];
    stele_device_state state;
    uint32_t allowed_algs; /* bit (1 << alg) per algorithm pinned at enrollment */
    stele_device_key key;  /* current key (key_id 0 while pending) */
    /* During a rotation: the new key. Both are valid until the first frame accepted
     * under `next` (stele_registry_promote_key) or the overlap deadline, whichever comes
     * first; then `next` becomes `key` and the old key is dead. */
    stele_device_key next;
    int64_t overlap_deadline_ns;
    uint32_t last_key_id; /* highest key id ever given to this device */
    char firmware[STELE_FIRMWARE_MAX + 1];
    int64_t added_ns;
    int64_t enrolled_ns;       /* 0 while pending */
    int64_t state_changed_ns;  /* last lifecycle change */
    int64_t enroll_expires_ns; /* pending: when the token stops working; else 0 */
    /* Newest accepted frame (stele_registry_touch); memory only, 0 after a restart until
     * the next frame. */
    int64_t last_seen_ns;
} stele_device_info;

typedef struct stele_registry stele_registry;

typedef struct {
    int64_t enroll_ttl_ns; /* enrollment tokens expire after this (default 24 h) */
    /* Clock; NULL = the real wall clock. */
    int64_t (*now_ns)(void *ctx);
    void *now_ctx;
} stele_registry_options;

void stele_registry_options_default(stele_registry_options *o);

/* 1 if id is a valid device id (1..64 of [A-Za-z0-9._-]). */
bool stele_device_id_valid(const char *id, size_t len);

/* Opens (creating when missing) DATA/devices.log in data_dir (which must exist) and
 * replays it. A torn tail is cut; any other damage fails with -EBADMSG, naming the file
 * and offset in err; -ENOTSUP for another format version; -EFBIG for a log beyond the
 * cap. o NULL = defaults; enroll_ttl_ns must be > 0. */
int stele_registry_open(stele_io *io, const char *data_dir, const stele_registry_options *o,
                        stele_registry **out, char *err, size_t errcap);
void stele_registry_close(stele_registry *r);

/* Registers a device (pending) and issues its enrollment token into token_out (at least
 * STELE_ENROLL_TOKEN_LEN + 1 bytes; the only time it exists in clear). tenant must be a
 * valid tenant name and not start with '_' (reserved); cohort NULL = "". -EEXIST when the
 * id is taken, -EINVAL for a bad id/tenant/cohort, -ENOSPC when the registry holds its
 * maximum number of devices (1,000,000), -EIO once failed. */
int stele_registry_add(stele_registry *r, const char *id, const char *tenant, const char *cohort,
                       char *token_out, size_t token_cap, stele_device_info *info_out);

/* Enrolls a pending device with its public key, algorithm and firmware, consuming the
 * token. -ENOENT unknown device; -EACCES wrong, used or expired token, or the device is
 * not pending (not distinguished: nothing is revealed to a guesser); -EINVAL bad id,
 * bad firmware text (NULL = ""), unsupported algorithm, or a public key that is not a
 * valid Ed25519 point (crypto_core_ed25519_is_valid_point: no small-order or
 * non-canonical keys). The device becomes active with key id last_key_id + 1 and
 * allowed_algs = 1 << alg. */
int stele_registry_enroll(stele_registry *r, const char *id, const char *token, size_t token_len,
                          uint8_t alg, const uint8_t public_key[32], const char *firmware,
                          stele_device_info *info_out);

/* Lifecycle actions by an operator. revoke: any state but revoked → revoked.
 * quarantine: active → quarantined. release: quarantined → active. -ENOENT unknown,
 * -EPERM not allowed from the current state (state unchanged). Doing it again when
 * already in the target state is 0 and writes nothing. */
int stele_registry_revoke(stele_registry *r, const char *id, stele_device_info *info_out);
int stele_registry_quarantine(stele_registry *r, const char *id, stele_device_info *info_out);
int stele_registry_release(stele_registry *r, const char *id, stele_device_info *info_out);
/* Any state → pending, a fresh enrollment token (the old one dead), both keys dead,
 * firmware and enrolled_ns cleared; last_key_id kept. Always writes a record. */
int stele_registry_reenroll(stele_registry *r, const char *id, char *token_out, size_t token_cap,
                            stele_device_info *info_out);

/* Starts a rotation (the caller verified the request signed by both keys): next = the
 * new key with id last_key_id + 1 (never used before for this device), valid alongside
 * the current one until overlap_deadline_ns, which is stored. Only for an active or
 * quarantined device whose current key is old_key_id and no rotation pending (the same
 * new key again — still pending, or already promoted — is 0 and writes nothing: a
 * retried request; the first deadline stays). -EPERM otherwise (also for an algorithm
 * not pinned at enrollment); -ENOENT unknown; -EINVAL unsupported algorithm, invalid
 * key, the current key again, or a deadline not after now. */
int stele_registry_rotate(stele_registry *r, const char *id, uint32_t old_key_id, uint8_t alg,
                          const uint8_t new_public_key[32], int64_t overlap_deadline_ns,
                          stele_device_info *info_out);
/* Completes a rotation: `next` (whose id must be key_id) becomes the current key, the
 * old one dead. Called when the first frame under the new key has been accepted (and on
 * recovery when the windows show one was). 0 when already done (key_id is the current
 * key and no rotation is pending); -EPERM when key_id is not the pending key of an
 * active or quarantined device; -ENOENT unknown. */
int stele_registry_promote_key(stele_registry *r, const char *id, uint32_t key_id);

/* Records that a frame was accepted at `seen_ns` (memory only: the anti-replay
 * checkpoint makes it durable). Keeps the newest. */
void stele_registry_touch(stele_registry *r, const char *id, size_t id_len, int64_t seen_ns);

/* Copies a device's current entry (memory only; the hot path of every frame).
 * -ENOENT when unknown. id need not be NUL-terminated. */
int stele_registry_get(stele_registry *r, const char *id, size_t id_len, stele_device_info *out);

/* Calls fn for every device in the order they were added; tenant NULL = all. A non-zero
 * return from fn stops and is returned. fn runs on a copy without any lock held, so it
 * may call back into the registry; devices added during the walk may or may not be seen. */
typedef int (*stele_registry_list_fn)(void *ctx, const stele_device_info *info);
int stele_registry_list(stele_registry *r, const char *tenant, stele_registry_list_fn fn,
                        void *ctx);

/* Devices by state, indexed by stele_device_state. */
void stele_registry_counts(stele_registry *r, uint64_t counts[STELE_DEVICE_STATES]);
/* 0 while healthy, else the error that failed the registry. */
int stele_registry_health(stele_registry *r);

#endif
