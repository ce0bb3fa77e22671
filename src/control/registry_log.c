/*
 * registry_log.c — DATA/devices.log as bytes: encoding the device registry's records and
 * reading a log back, a torn tail told apart from damage (registry_log.h). The registry's
 * state machine and group commit are in registry.c.
 *
 * DATA/devices.log (docs/format/registry.md has the same tables and a test vector). All
 * integers little-endian, written with the encoders of common/bytes.h.
 *
 *   file header, 16 bytes
 *       0   8  magic "STLDEVS1"
 *       8   4  version, 1
 *      12   4  low 32 bits of XXH3_64bits(header bytes 0..11)
 *   records, back to back until end of file
 *       0   4  payload length L (1..1024 in every version)
 *       4   4  type, below
 *       8   8  batch offset: file offset of the first record of the batch (the one
 *              write + fsync) this record was written in; == its own offset for the
 *              first record of a batch, == the previous record's batch offset otherwise
 *      16   L  payload
 *    16+L   8  XXH3_64bits(record bytes 0 .. 16+L-1)
 *   every payload starts with
 *       0   1  I, device id length, 1..64
 *       1   I  device id, [A-Za-z0-9._-]
 *     1+I   8  time_ns: i64, the registry's clock when the mutation was made
 *   and goes on, by type (offsets from 9+I; T, C, F: lengths of what follows them)
 *     1 add         8 expires_ns, 32 token hash, 1 T, T tenant, 1 C, C cohort   L = 51+I+T+C
 *     2 enroll      4 key id, 1 alg, 32 public key, 1 F, F firmware             L = 47+I+F
 *     3 revoke      —                                                           L = 9+I
 *     4 quarantine  —                                                           L = 9+I
 *     5 release     —                                                           L = 9+I
 *     6 reenroll    8 expires_ns, 32 token hash                                 L = 49+I
 *     7 rotate      4 key id, 1 alg, 32 public key, 8 overlap deadline ns       L = 54+I
 *     8 promote     4 key id                                                    L = 13+I
 *   The token hash is BLAKE2b-256 (crypto_generichash, no key) of the token's 32 random
 *   bytes; an enroll record consumes the pending token of its device.
 *
 * Recovery: the header must be intact. Records are read in order; a whole record that
 * is out of place (its batch offset neither its own offset nor the previous record's),
 * malformed, or (says the caller's callback) contradicting the log is damage: -EBADMSG
 * naming the offset. At the first record that is incomplete, has an impossible (type,
 * length) pair or a bad checksum — at offset X — the rest of the file is either the torn
 * tail of the one batch a crash interrupted (never acknowledged: the writer fsyncs each
 * batch before it writes the next, and writes nothing after a failure), or damage. It is
 * a torn tail when it is no longer than a batch and no valid record with a batch offset
 * above X starts anywhere after X: a later batch would prove that X's batch had been
 * acknowledged. Records of X's own batch may follow X intact (a disk may write garbage
 * into part of an unsynced append), which is why a record carries its batch offset.
 * Zeros (an append whose new size reached the disk but not its data) are no record, as
 * no type is 0. The caller cuts the tail at X and fsyncs the cut; the whole records of
 * the interrupted batch before X stay (never acknowledged, but nothing depends on their
 * absence). The price: a bit flipped in the *last* batch of the log after it was
 * acknowledged cannot be told from a crash, and that batch is cut
 * (docs/format/registry.md, "Recovery", rule 5). Anywhere earlier it is reported.
 */
#include "control/registry_log.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>
#include <xxhash.h>

#include "common/bytes.h"
#include "stele/frame.h"

#define REGISTRY_MAGIC "STLDEVS1"
#define REGISTRY_MAGIC_LEN 8
#define REGISTRY_VERSION 1u

/* Recovery reads the log through a window this big: one pread per ~10,000 records, and
 * far more than the largest record, so one record always fits. */
#define REGISTRY_READ_WINDOW (1u << 20)

/* Payload sizes without the variable parts (I, T, C, F); see the table above. */
#define PAYLOAD_COMMON_FIXED 9 /* I, time */
#define ADD_FIXED (PAYLOAD_COMMON_FIXED + 8 + REGISTRY_TOKEN_HASH_BYTES + 1 + 1)
#define ENROLL_FIXED (PAYLOAD_COMMON_FIXED + 4 + 1 + REGISTRY_PUBLIC_KEY_BYTES + 1)
#define STATE_FIXED PAYLOAD_COMMON_FIXED
#define REENROLL_FIXED (PAYLOAD_COMMON_FIXED + 8 + REGISTRY_TOKEN_HASH_BYTES)
#define ROTATE_FIXED (PAYLOAD_COMMON_FIXED + 4 + 1 + REGISTRY_PUBLIC_KEY_BYTES + 8)
#define PROMOTE_FIXED (PAYLOAD_COMMON_FIXED + 4)

static_assert(sizeof(REGISTRY_MAGIC) - 1 == REGISTRY_MAGIC_LEN, "magic is 8 bytes");
static_assert(REGISTRY_RECORD_PREFIX_SIZE == 16 && REGISTRY_LOG_HEADER_SIZE == 16,
              "record and file headers (docs/format/registry.md)");
static_assert(REGISTRY_TOKEN_HASH_BYTES == crypto_generichash_BYTES, "BLAKE2b-256 hash size");
static_assert(REGISTRY_PUBLIC_KEY_BYTES == crypto_sign_PUBLICKEYBYTES, "Ed25519 public key size");
static_assert(ADD_FIXED == 51 && ENROLL_FIXED == 47 && STATE_FIXED == 9 && REENROLL_FIXED == 49 &&
                  ROTATE_FIXED == 54 && PROMOTE_FIXED == 13,
              "payload layouts (docs/format/registry.md)");
static_assert(ADD_FIXED + STELE_DEVICE_ID_MAX + STELE_TENANT_MAX_LEN + STELE_COHORT_MAX <=
                  REGISTRY_RECORD_MAX_PAYLOAD,
              "largest payload within the record cap");
static_assert(REGISTRY_READ_WINDOW >= REGISTRY_RECORD_MAX_SIZE, "one record fits the window");
static_assert(REGISTRY_BATCH_MAX_BYTES >= REGISTRY_RECORD_MAX_SIZE, "one record fits a batch");
static_assert(STELE_DEVICE_ID_MAX == STELE_FRAME_MAX_DEVICE_ID, "device ids as in frames");

/* ---- text -------------------------------------------------------------------------- */

static bool id_char_valid(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
}

static bool id_chars_valid(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (!id_char_valid((unsigned char)s[i]))
            return false;
    }
    return true;
}

bool stele_device_id_valid(const char *id, size_t len)
{
    return id && len >= 1 && len <= STELE_DEVICE_ID_MAX && id_chars_valid(id, len);
}

bool registry__cohort_valid(const char *cohort, size_t len)
{
    return len <= STELE_COHORT_MAX && id_chars_valid(cohort, len);
}

/* Printable ASCII without '"' and '\\', so it goes into JSON and logs unescaped. */
bool registry__firmware_valid(const char *firmware, size_t len)
{
    if (len > STELE_FIRMWARE_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)firmware[i];
        if (c < 0x20 || c > 0x7e || c == '"' || c == '\\')
            return false;
    }
    return true;
}

/* Tenants starting with '_' are reserved for the server's own use. */
bool registry__tenant_valid(const char *tenant)
{
    return stele_tenant_name_valid(tenant) && tenant[0] != '_';
}

/* ---- writing -------------------------------------------------------------------- */

void registry_log__header(uint8_t header[REGISTRY_LOG_HEADER_SIZE])
{
    memcpy(header, REGISTRY_MAGIC, REGISTRY_MAGIC_LEN);
    put_le32(header + 8, REGISTRY_VERSION);
    put_le32(header + 12, (uint32_t)XXH3_64bits(header, 12));
}

static uint8_t *put_string8(uint8_t *p, const char *s, size_t len)
{
    assert(len <= UINT8_MAX);
    *p++ = (uint8_t)len;
    memcpy(p, s, len);
    return p + len;
}

size_t registry_log__encode(const registry_record *rec, uint64_t batch_offset, uint8_t *out)
{
    uint8_t *payload = out + REGISTRY_RECORD_PREFIX_SIZE;
    uint8_t *p = put_string8(payload, rec->id, rec->id_len);
    put_le64(p, (uint64_t)rec->time_ns);
    p += 8;
    switch (rec->type) {
    case REGISTRY_RECORD_ADD:
        put_le64(p, (uint64_t)rec->expires_ns);
        memcpy(p + 8, rec->token_hash, REGISTRY_TOKEN_HASH_BYTES);
        p = put_string8(p + 8 + REGISTRY_TOKEN_HASH_BYTES, rec->tenant, strlen(rec->tenant));
        p = put_string8(p, rec->cohort, strlen(rec->cohort));
        break;
    case REGISTRY_RECORD_ENROLL:
        put_le32(p, rec->key_id);
        p[4] = rec->alg;
        memcpy(p + 5, rec->public_key, REGISTRY_PUBLIC_KEY_BYTES);
        p = put_string8(p + 5 + REGISTRY_PUBLIC_KEY_BYTES, rec->firmware, strlen(rec->firmware));
        break;
    case REGISTRY_RECORD_REENROLL:
        put_le64(p, (uint64_t)rec->expires_ns);
        memcpy(p + 8, rec->token_hash, REGISTRY_TOKEN_HASH_BYTES);
        p += 8 + REGISTRY_TOKEN_HASH_BYTES;
        break;
    case REGISTRY_RECORD_ROTATE:
        put_le32(p, rec->key_id);
        p[4] = rec->alg;
        memcpy(p + 5, rec->public_key, REGISTRY_PUBLIC_KEY_BYTES);
        put_le64(p + 5 + REGISTRY_PUBLIC_KEY_BYTES, (uint64_t)rec->deadline_ns);
        p += 5 + REGISTRY_PUBLIC_KEY_BYTES + 8;
        break;
    case REGISTRY_RECORD_PROMOTE:
        put_le32(p, rec->key_id);
        p += 4;
        break;
    default: /* revoke, quarantine, release: nothing more */
        break;
    }
    size_t len = (size_t)(p - payload);
    assert(len <= REGISTRY_RECORD_MAX_PAYLOAD);
    put_le32(out, (uint32_t)len);
    put_le32(out + 4, rec->type);
    put_le64(out + 8, batch_offset);
    put_le64(p, XXH3_64bits(out, REGISTRY_RECORD_PREFIX_SIZE + len));
    return REGISTRY_RECORD_PREFIX_SIZE + len + REGISTRY_RECORD_CHECKSUM_SIZE;
}

/* ---- reading -------------------------------------------------------------------- */

/* Whether a version-1 record of this type may have this payload length (the variable
 * parts at their extremes); the decoder checks the exact sum. */
static bool record_shape_valid(uint32_t type, uint32_t len)
{
    size_t fixed = 0;
    size_t variable_max = STELE_DEVICE_ID_MAX;
    switch (type) {
    case REGISTRY_RECORD_ADD:
        fixed = ADD_FIXED;
        variable_max += STELE_TENANT_MAX_LEN + STELE_COHORT_MAX;
        break;
    case REGISTRY_RECORD_ENROLL:
        fixed = ENROLL_FIXED;
        variable_max += STELE_FIRMWARE_MAX;
        break;
    case REGISTRY_RECORD_REVOKE:
    case REGISTRY_RECORD_QUARANTINE:
    case REGISTRY_RECORD_RELEASE:
        fixed = STATE_FIXED;
        break;
    case REGISTRY_RECORD_REENROLL:
        fixed = REENROLL_FIXED;
        break;
    case REGISTRY_RECORD_ROTATE:
        fixed = ROTATE_FIXED;
        break;
    case REGISTRY_RECORD_PROMOTE:
        fixed = PROMOTE_FIXED;
        break;
    default:
        return false;
    }
    return len >= fixed + 1 && len <= fixed + variable_max; /* id: 1..64 */
}

/* A bounds-checked cursor over a payload. */
typedef struct {
    const uint8_t *p;
    size_t left;
    bool bad;
} payload_reader;

static const uint8_t *reader_take(payload_reader *rd, size_t n)
{
    if (rd->bad || n > rd->left) {
        rd->bad = true;
        return NULL;
    }
    const uint8_t *at = rd->p;
    rd->p += n;
    rd->left -= n;
    return at;
}

static uint8_t reader_u8(payload_reader *rd)
{
    const uint8_t *p = reader_take(rd, 1);
    return p ? p[0] : 0;
}

static uint32_t reader_u32(payload_reader *rd)
{
    const uint8_t *p = reader_take(rd, 4);
    return p ? get_le32(p) : 0;
}

static int64_t reader_i64(payload_reader *rd)
{
    const uint8_t *p = reader_take(rd, 8);
    return p ? (int64_t)get_le64(p) : 0;
}

static void reader_bytes(payload_reader *rd, uint8_t *out, size_t n)
{
    const uint8_t *p = reader_take(rd, n);
    if (p)
        memcpy(out, p, n);
}

/* A u8 length and that many bytes, into a NUL-terminated buffer of cap bytes. */
static size_t reader_string8(payload_reader *rd, char *out, size_t cap)
{
    size_t len = reader_u8(rd);
    const uint8_t *p = len < cap ? reader_take(rd, len) : NULL;
    if (!p) {
        rd->bad = true;
        out[0] = '\0';
        return 0;
    }
    memcpy(out, p, len);
    out[len] = '\0';
    return len;
}

/* Decodes a payload whose (type, length) passed record_shape_valid. Returns NULL, or
 * what is wrong with it. */
static const char *record_decode(uint32_t type, const uint8_t *payload, size_t len,
                                 registry_record *rec)
{
    payload_reader rd = {.p = payload, .left = len, .bad = false};
    size_t tenant_len = 0;
    size_t cohort_len = 0;
    size_t firmware_len = 0;

    memset(rec, 0, sizeof(*rec));
    rec->type = type;
    rec->id_len = reader_string8(&rd, rec->id, sizeof(rec->id));
    rec->time_ns = reader_i64(&rd);
    switch (type) {
    case REGISTRY_RECORD_ADD:
        rec->expires_ns = reader_i64(&rd);
        reader_bytes(&rd, rec->token_hash, REGISTRY_TOKEN_HASH_BYTES);
        tenant_len = reader_string8(&rd, rec->tenant, sizeof(rec->tenant));
        cohort_len = reader_string8(&rd, rec->cohort, sizeof(rec->cohort));
        break;
    case REGISTRY_RECORD_ENROLL:
        rec->key_id = reader_u32(&rd);
        rec->alg = reader_u8(&rd);
        reader_bytes(&rd, rec->public_key, REGISTRY_PUBLIC_KEY_BYTES);
        firmware_len = reader_string8(&rd, rec->firmware, sizeof(rec->firmware));
        break;
    case REGISTRY_RECORD_REENROLL:
        rec->expires_ns = reader_i64(&rd);
        reader_bytes(&rd, rec->token_hash, REGISTRY_TOKEN_HASH_BYTES);
        break;
    case REGISTRY_RECORD_ROTATE:
        rec->key_id = reader_u32(&rd);
        rec->alg = reader_u8(&rd);
        reader_bytes(&rd, rec->public_key, REGISTRY_PUBLIC_KEY_BYTES);
        rec->deadline_ns = reader_i64(&rd);
        break;
    case REGISTRY_RECORD_PROMOTE:
        rec->key_id = reader_u32(&rd);
        break;
    default:
        break;
    }
    if (rd.bad || rd.left != 0)
        return "the field lengths do not add up to the record's length";
    if (!stele_device_id_valid(rec->id, rec->id_len))
        return "invalid device id";
    /* Lengths agree with the strings: no NUL hides inside one. */
    if (type == REGISTRY_RECORD_ADD &&
        (strlen(rec->tenant) != tenant_len || !registry__tenant_valid(rec->tenant) ||
         !registry__cohort_valid(rec->cohort, cohort_len)))
        return "invalid tenant or cohort";
    if (type == REGISTRY_RECORD_ENROLL && (strlen(rec->firmware) != firmware_len ||
                                           !registry__firmware_valid(rec->firmware, firmware_len)))
        return "invalid firmware text";
    return NULL;
}

/* The whole record at off, if one is there: sets *size (0 when none: incomplete, an
 * impossible type/length, or a bad checksum) and *batch_offset. */
static int record_at(stele_io_window *w, uint64_t off, const uint8_t **bytes, size_t *size,
                     uint64_t *batch_offset)
{
    const uint8_t *p = NULL;
    *size = 0;
    int rc = stele_io_window_get(w, off, REGISTRY_RECORD_PREFIX_SIZE, &p);
    if (rc == -ENODATA)
        return 0;
    if (rc < 0)
        return rc;
    uint32_t len = get_le32(p);
    uint32_t type = get_le32(p + 4);
    if (!record_shape_valid(type, len))
        return 0;
    size_t record_size = REGISTRY_RECORD_PREFIX_SIZE + len + REGISTRY_RECORD_CHECKSUM_SIZE;
    rc = stele_io_window_get(w, off, record_size, &p);
    if (rc == -ENODATA)
        return 0;
    if (rc < 0)
        return rc;
    if (get_le64(p + REGISTRY_RECORD_PREFIX_SIZE + len) !=
        XXH3_64bits(p, REGISTRY_RECORD_PREFIX_SIZE + len))
        return 0;
    *bytes = p;
    *size = record_size;
    *batch_offset = get_le64(p + 8);
    return 0;
}

/* After the first bad record, at bad_off: whether the rest is the torn tail of the
 * batch a crash interrupted (*torn) or damage; *later gets the offset of the valid
 * record of a later batch that proves damage. */
static int tail_is_torn(stele_io_window *w, uint64_t bad_off, bool *torn, uint64_t *later)
{
    *torn = false;
    *later = 0;
    if (w->file_size - bad_off > REGISTRY_BATCH_MAX_BYTES)
        return 0; /* longer than any batch: not one interrupted append */
    for (uint64_t off = bad_off + 1;
         off + REGISTRY_RECORD_PREFIX_SIZE + REGISTRY_RECORD_CHECKSUM_SIZE < w->file_size; off++) {
        const uint8_t *bytes = NULL;
        size_t size = 0;
        uint64_t batch_offset = 0;
        int rc = record_at(w, off, &bytes, &size, &batch_offset);
        if (rc < 0)
            return rc;
        if (size > 0 && batch_offset > bad_off && batch_offset <= off) {
            *later = off;
            return 0;
        }
    }
    *torn = true;
    return 0;
}

/* Formats the error for a damaged log: file, offset, what is wrong. */
static int replay_damage(char *err, size_t errcap, const char *path, uint64_t off, const char *why)
{
    if (err && errcap > 0)
        snprintf(err, errcap, "%s: damaged at offset %" PRIu64 ": %s", path, off, why);
    return -EBADMSG;
}

int registry_log__replay(stele_file *log, const char *path, uint64_t file_size,
                         registry_log_record_fn fn, void *ctx, uint64_t *valid_end, char *err,
                         size_t errcap)
{
    stele_io_window window;
    registry_record rec;
    const uint8_t *bytes = NULL;
    uint64_t off = 0;
    uint64_t batch = 0; /* batch offset of the previous record; 0 before the first */
    int rc = 0;

    if (stele_io_window_init(&window, log, file_size, REGISTRY_READ_WINDOW) != 0)
        return -ENOMEM;

    rc = stele_io_window_get(&window, 0, REGISTRY_LOG_HEADER_SIZE, &bytes);
    if (rc == -ENODATA) {
        /* The file is created whole (write_file_atomic): never torn. */
        rc = replay_damage(err, errcap, path, 0, "shorter than its header");
        goto fail;
    }
    if (rc < 0)
        goto fail;
    if (memcmp(bytes, REGISTRY_MAGIC, REGISTRY_MAGIC_LEN) != 0 ||
        get_le32(bytes + 12) != (uint32_t)XXH3_64bits(bytes, 12)) {
        rc = replay_damage(err, errcap, path, 0, "bad magic or header checksum");
        goto fail;
    }
    if (get_le32(bytes + 8) != REGISTRY_VERSION) {
        if (err && errcap > 0)
            snprintf(err, errcap, "%s: format version %" PRIu32 ", this build reads %u", path,
                     get_le32(bytes + 8), REGISTRY_VERSION);
        rc = -ENOTSUP; /* intact, but written by another version of Stele */
        goto fail;
    }
    off = REGISTRY_LOG_HEADER_SIZE;

    while (off < file_size) {
        size_t size = 0;
        uint64_t record_batch = 0;
        rc = record_at(&window, off, &bytes, &size, &record_batch);
        if (rc < 0)
            goto fail;
        if (size == 0) {
            bool torn = false;
            uint64_t later = 0;
            rc = tail_is_torn(&window, off, &torn, &later);
            if (rc < 0)
                goto fail;
            if (torn)
                break;
            char why[160];
            if (later)
                snprintf(why, sizeof(why),
                         "a bad record, yet a later batch follows at offset %" PRIu64, later);
            else
                snprintf(why, sizeof(why),
                         "a bad record with more than a batch (256 KiB) after it");
            rc = replay_damage(err, errcap, path, off, why);
            goto fail;
        }
        if (record_batch != off && (batch == 0 || record_batch != batch)) {
            rc = replay_damage(err, errcap, path, off, "record out of place (batch offset)");
            goto fail;
        }
        uint32_t len = get_le32(bytes);
        const char *why =
            record_decode(get_le32(bytes + 4), bytes + REGISTRY_RECORD_PREFIX_SIZE, len, &rec);
        if (!why)
            why = fn(ctx, &rec, &rc);
        if (rc < 0)
            goto fail;
        if (why) {
            rc = replay_damage(err, errcap, path, off, why);
            goto fail;
        }
        batch = record_batch;
        off += size;
    }
    rc = 0;
    *valid_end = off;

fail:
    stele_io_window_free(&window);
    return rc;
}
