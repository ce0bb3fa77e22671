/*
 * registry_log.h — DATA/devices.log, the device registry's log, as bytes: the record a
 * mutation becomes, its encoding, and reading a log back with its torn tail told apart
 * from damage. The format is in registry_log.c and docs/format/registry.md.
 *
 * Internal to the registry: registry.c (state, group commit, API) is the only user. The
 * codec knows nothing of devices' states; whether a record may follow the ones before it
 * is the caller's question, asked through the replay callback.
 */
#ifndef STELE_CONTROL_REGISTRY_LOG_H
#define STELE_CONTROL_REGISTRY_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "stele/auth.h"
#include "stele/io.h"
#include "stele/registry.h"

#define REGISTRY_LOG_FILE_NAME "devices.log"
#define REGISTRY_LOG_HEADER_SIZE 16
/* Length, type and batch offset in front of a payload; checksum behind it. */
#define REGISTRY_RECORD_PREFIX_SIZE 16
#define REGISTRY_RECORD_CHECKSUM_SIZE 8
/* The format-wide cap on a payload in every version, so any reader can size one buffer
 * for any record; version 1's largest (an add with 64-byte id, tenant and cohort) is 243. */
#define REGISTRY_RECORD_MAX_PAYLOAD 1024
#define REGISTRY_RECORD_MAX_SIZE                                                                   \
    (REGISTRY_RECORD_PREFIX_SIZE + REGISTRY_RECORD_MAX_PAYLOAD + REGISTRY_RECORD_CHECKSUM_SIZE)

/* The most one batch (one pwrite + one fsync) holds: about 2,500 typical records. At
 * 0.2-10 ms per fsync that is 250,000+ mutations a second, more than the HTTP layer can
 * deliver, while a batch's buffers stay small (the registry keeps two for its life). It
 * also bounds a torn tail: recovery never scans more than this past a bad record. */
#define REGISTRY_BATCH_MAX_BYTES (256u << 10)

/* The log is replayed whole at open, so it is capped: 1 GiB holds the add and the
 * enrollment of every one of the registry's 1,000,000 devices at their largest
 * (~0.47 GB) twice over, or about 5 lifecycle changes per device at typical sizes, and
 * replays in a few seconds. A mutation that would pass it fails -EFBIG (and does not
 * fail the registry); a bigger file refuses to open. Compaction is the cure when fleets
 * churn. */
#define REGISTRY_MAX_FILE_SIZE (UINT64_C(1) << 30)

#define REGISTRY_TOKEN_HASH_BYTES 32 /* BLAKE2b-256 */
#define REGISTRY_PUBLIC_KEY_BYTES 32 /* Ed25519 */

enum {
    REGISTRY_RECORD_ADD = 1,
    REGISTRY_RECORD_ENROLL = 2,
    REGISTRY_RECORD_REVOKE = 3,
    REGISTRY_RECORD_QUARANTINE = 4,
    REGISTRY_RECORD_RELEASE = 5,
    REGISTRY_RECORD_REENROLL = 6,
    REGISTRY_RECORD_ROTATE = 7,
    REGISTRY_RECORD_PROMOTE = 8,
};

/* A record, decoded: what an appender builds, what replay reads, what apply takes. */
typedef struct {
    uint32_t type;
    char id[STELE_DEVICE_ID_MAX + 1];
    size_t id_len;
    int64_t time_ns;
    int64_t expires_ns;                            /* add, reenroll */
    uint8_t token_hash[REGISTRY_TOKEN_HASH_BYTES]; /* add, reenroll */
    char tenant[STELE_TENANT_MAX_LEN + 1];         /* add */
    char cohort[STELE_COHORT_MAX + 1];             /* add */
    uint32_t key_id;                               /* enroll, rotate, promote */
    uint8_t alg;                                   /* enroll, rotate */
    uint8_t public_key[REGISTRY_PUBLIC_KEY_BYTES]; /* enroll, rotate */
    char firmware[STELE_FIRMWARE_MAX + 1];         /* enroll */
    int64_t deadline_ns;                           /* rotate */
} registry_record;

/* The text rules of the format (device ids: stele_device_id_valid). A tenant is a valid
 * tenant name not starting with '_' (reserved for the server); a cohort 0..64 of
 * [A-Za-z0-9._-]; firmware 0..64 printable ASCII without '"' and '\\'. */
bool registry__tenant_valid(const char *tenant);
bool registry__cohort_valid(const char *cohort, size_t len);
bool registry__firmware_valid(const char *firmware, size_t len);

/* The file header of a new log. */
void registry_log__header(uint8_t header[REGISTRY_LOG_HEADER_SIZE]);

/* Encodes rec, whose fields are valid, as a record of the batch that starts at file
 * offset batch_offset into out (room for REGISTRY_RECORD_MAX_SIZE bytes); returns the
 * record's size. */
size_t registry_log__encode(const registry_record *rec, uint64_t batch_offset, uint8_t *out);

/* Called by replay for each whole, well-formed record in order. Returns NULL when rec
 * may follow the records before it (and has been applied), else why not (damage); a
 * resource failure sets *rc (negative) and stops the replay with it. */
typedef const char *(*registry_log_record_fn)(void *ctx, const registry_record *rec, int *rc);

/* Reads the log of file_size bytes, calling fn for each record. Sets *valid_end to the
 * end of the last whole record: below file_size when the rest is a torn tail, which the
 * caller cuts. Damage: -EBADMSG, with path, offset and reason in err; another version:
 * -ENOTSUP; I/O errors as they come. */
int registry_log__replay(stele_file *log, const char *path, uint64_t file_size,
                         registry_log_record_fn fn, void *ctx, uint64_t *valid_end, char *err,
                         size_t errcap);

#endif
