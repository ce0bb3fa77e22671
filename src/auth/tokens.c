/*
 * tokens.c — the API token store: an append-only log on disk, a table in memory.
 *
 * Design: tokens change rarely (an operator creates or revokes one) and are checked
 * on every request, so the store is a write-ahead log with no other on-disk state,
 * replayed into memory on open; authentication never touches the disk. Each create or
 * revoke is one record, written at the end of the log and fsync'd before the call
 * returns. Only a hash of each secret is stored, so the log is no use to a thief.
 *
 * DATA/tokens.log (docs/format/tokens.md has the same table and a test vector). All
 * integers are little-endian, written with the explicit encoders below.
 *
 *   file header, 16 bytes
 *       0   8  magic "STLTOKN1"
 *       8   4  version, 1
 *      12   4  low 32 bits of XXH3_64bits(header bytes 0..11)
 *   records, back to back until end of file
 *       0   4  payload length L
 *       4   4  type: 1 create, 2 revoke
 *       8   L  payload
 *     8+L   8  XXH3_64bits(record bytes 0 .. 8+L-1): length, type and payload
 *   create payload, L = 61 + T (62..125)
 *       0  16  id: 16 lowercase hex digits, ASCII
 *      16   1  T, tenant length, 1..64
 *      17   T  tenant: [A-Za-z0-9_-]
 *    17+T   4  scopes: STELE_SCOPE_* bits, non-zero, no unknown bit
 *    21+T   8  created_ns: int64, ns since the epoch
 *    29+T  32  BLAKE2b-256 (crypto_generichash, no key) of the 32 secret bytes
 *   revoke payload, L = 16
 *       0  16  id of a token created earlier in the log
 *
 * Invariants: every byte before `log_end` is a header and whole records, durable
 * (fsync'd); an id is created once, and the writer revokes it at most once; the
 * in-memory table is exactly the replay of the durable records, except for revokes
 * that failed to append (below).
 *
 * Recovery (open): the header must be intact. Records are read in order. Since every
 * append but the last unacknowledged one was fsync'd, a crash can leave only two kinds
 * of tail, both called torn: a record that runs past end of file, and a tail of zero
 * bytes no longer than one record (file systems such as XFS may persist the new file
 * size of an append but not its data; zeros never form a valid record, as no type is
 * 0). A torn tail is truncated back to the last whole record and fsync'd. A whole
 * record with a bad checksum, an impossible (type, length) pair, or contents that
 * contradict the log (unknown id revoked, id created twice) is damage: the open fails
 * with -EBADMSG and nothing is guessed. A flipped bit in the *last* record is therefore
 * reported, not cut off as if torn: silently dropping an acknowledged revoke would
 * resurrect a token. (The price: a disk that writes garbage, not just too little, into
 * an unacknowledged append also makes the open fail; the operator then cuts the file.)
 *
 * Failure: a failed write or fsync is never retried. The store turns `failed`: every
 * later create or revoke returns -EIO while authentication goes on from memory, and a
 * restart recovers from what the log holds. A revoke that cannot be made durable
 * (failed store, I/O error, -EFBIG from a full log) still returns the error, but marks
 * the token revoked in memory: the operator asked for it, and refusing more is the safe
 * side. A failed create's token is never usable.
 *
 * Threads: `append_lock` makes creates and revokes single-writer; it is held across
 * the append's I/O and no reader ever takes it. `table_lock` (a rwlock) guards the
 * in-memory table and is held only for memory work. Order: append_lock, then
 * table_lock. Since only append_lock holders change the table, they may read it without
 * table_lock.
 */
#include "stele/auth.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>
#include <xxhash.h>

#define TOKENS_FILE_NAME "tokens.log"
#define TOKENS_MAGIC "STLTOKN1"
#define TOKENS_MAGIC_LEN 8
#define TOKENS_VERSION 1u
#define TOKENS_HEADER_SIZE 16
/* Length and type in front of a payload, checksum behind it. */
#define TOKENS_RECORD_PREFIX_SIZE 8
#define TOKENS_RECORD_CHECKSUM_SIZE 8
/* The format-wide cap on a payload in every version, so that any reader can size one
 * buffer for any record; version 1's records are far smaller (≤ 125 bytes). */
#define TOKENS_RECORD_MAX_PAYLOAD 4096
#define TOKENS_RECORD_MAX_SIZE                                                                     \
    (TOKENS_RECORD_PREFIX_SIZE + TOKENS_RECORD_MAX_PAYLOAD + TOKENS_RECORD_CHECKSUM_SIZE)
/* 64 MiB holds about 450 000 creates: far beyond any real deployment, yet small enough
 * that replay at start stays well under a second and the table's memory stays small.
 * An append that would pass it fails -EFBIG (and does not fail the store). */
#define TOKENS_MAX_FILE_SIZE (64u << 20)

enum { TOKENS_RECORD_CREATE = 1, TOKENS_RECORD_REVOKE = 2 };

#define TOKEN_SECRET_BYTES 32
#define TOKEN_HASH_BYTES 32 /* BLAKE2b-256 */
#define TOKEN_ID_BYTES 8    /* 16 hex digits */
#define TOKEN_PREFIX "stl_"
#define TOKEN_PREFIX_LEN 4
#define TOKEN_SECRET_HEX_OFFSET (TOKEN_PREFIX_LEN + STELE_TOKEN_ID_LEN + 1)

/* Create payload layout, relative to its start; T = tenant length. */
#define CREATE_TENANT_LEN_OFFSET STELE_TOKEN_ID_LEN
#define CREATE_TENANT_OFFSET (CREATE_TENANT_LEN_OFFSET + 1)
#define CREATE_FIXED_SIZE (STELE_TOKEN_ID_LEN + 1 + 4 + 8 + TOKEN_HASH_BYTES) /* all but T */
#define REVOKE_PAYLOAD_SIZE STELE_TOKEN_ID_LEN

/* Recovery reads the log through a window this big: one pread per ~800 records, and
 * far more than the largest record, so one record always fits. */
#define TOKENS_READ_WINDOW (64u << 10)

#define TOKENS_KNOWN_SCOPES (STELE_SCOPE_READ | STELE_SCOPE_WRITE | STELE_SCOPE_ADMIN)

static_assert(TOKEN_PREFIX_LEN + STELE_TOKEN_ID_LEN + 1 + 2 * TOKEN_SECRET_BYTES ==
                  STELE_TOKEN_STRING_LEN,
              "token string layout");
static_assert(TOKEN_HASH_BYTES == crypto_generichash_BYTES, "BLAKE2b-256 hash size");
static_assert(CREATE_FIXED_SIZE == 61, "create payload layout (docs/format/tokens.md)");
static_assert(CREATE_FIXED_SIZE + STELE_TENANT_MAX_LEN <= TOKENS_RECORD_MAX_PAYLOAD,
              "largest create payload within the record cap");
static_assert(TOKENS_READ_WINDOW >= TOKENS_RECORD_MAX_SIZE, "one record fits the window");

typedef struct {
    stele_token_info info;
    uint64_t id_key; /* the id's 16 hex digits as a number: the index key */
    uint8_t secret_hash[TOKEN_HASH_BYTES];
    /* A revoke record for it is in the log (info.revoked alone may be memory only,
     * after a failed append). Under append_lock. */
    bool revoke_durable;
} token_entry;

struct stele_tokens {
    stele_io *io; /* not owned */
    stele_file *log;

    pthread_mutex_t append_lock;
    uint64_t log_end; /* offset of the next record; under append_lock */
    bool failed;      /* an append failed: refuse further ones; under append_lock */

    pthread_rwlock_t table_lock;
    token_entry *entries; /* creation order */
    size_t entry_count;
    size_t entry_cap;
    /* Open addressing, linear probing, power-of-two size, at most half full. A slot
     * holds an index into entries plus one; 0 is empty. */
    uint32_t *index_slots;
    size_t index_cap;
    size_t active_count;
};

/* ---- little-endian encoders ---------------------------------------------------- */

static void put_u32le(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64le(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_u32le(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint64_t get_u64le(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* ---- names, scopes, ids -------------------------------------------------------- */

static bool tenant_char_valid(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
}

static bool tenant_bytes_valid(const char *tenant, size_t len)
{
    if (len < 1 || len > STELE_TENANT_MAX_LEN)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (!tenant_char_valid((unsigned char)tenant[i]))
            return false;
    }
    return true;
}

bool stele_tenant_name_valid(const char *tenant)
{
    if (!tenant)
        return false;
    return tenant_bytes_valid(tenant, strnlen(tenant, STELE_TENANT_MAX_LEN + 1));
}

static const struct {
    const char *name;
    uint32_t bit;
} scope_names[] = {
    /* Canonical order of the text form. */
    {"read", STELE_SCOPE_READ},
    {"write", STELE_SCOPE_WRITE},
    {"admin", STELE_SCOPE_ADMIN},
};

int stele_scopes_parse(const char *text, uint32_t *scopes)
{
    if (!text || !scopes || !*text)
        return -EINVAL;
    uint32_t bits = 0;
    const char *p = text;
    for (;;) {
        size_t len = strcspn(p, ",");
        uint32_t bit = 0;
        for (size_t i = 0; i < sizeof(scope_names) / sizeof(scope_names[0]); i++) {
            if (strlen(scope_names[i].name) == len && memcmp(scope_names[i].name, p, len) == 0)
                bit = scope_names[i].bit;
        }
        if (!bit)
            return -EINVAL; /* unknown, or an empty element as in "read,,write" */
        bits |= bit;
        if (p[len] == '\0')
            break;
        p += len + 1;
    }
    *scopes = bits;
    return 0;
}

void stele_scopes_format(uint32_t scopes, char *buf, size_t cap)
{
    if (!buf || cap == 0)
        return;
    char text[sizeof("read,write,admin")] = "";
    size_t len = 0;
    for (size_t i = 0; i < sizeof(scope_names) / sizeof(scope_names[0]); i++) {
        if (!(scopes & scope_names[i].bit))
            continue;
        size_t name_len = strlen(scope_names[i].name);
        if (len > 0)
            text[len++] = ',';
        memcpy(text + len, scope_names[i].name, name_len);
        len += name_len;
    }
    text[len] = '\0';
    size_t copy = len < cap - 1 ? len : cap - 1;
    memcpy(buf, text, copy);
    buf[copy] = '\0';
}

/* Decodes one lowercase hex digit without branching on its value; sets *bad when c
 * is anything else. Used on secrets, so timing must not depend on the digits. */
static unsigned hex_digit_value_ct(unsigned char c, unsigned *bad)
{
    unsigned v = c;
    /* (lo-1 - v) and (v - (hi+1)) are both negative exactly when lo ≤ v ≤ hi; their
     * AND then has the top bit set. */
    unsigned is_digit = (((unsigned)('0' - 1) - v) & (v - (unsigned)('9' + 1))) >> 31;
    unsigned is_lower = (((unsigned)('a' - 1) - v) & (v - (unsigned)('f' + 1))) >> 31;
    *bad |= 1u ^ (is_digit | is_lower);
    return ((v - '0') & (0u - is_digit)) | ((v - 'a' + 10) & (0u - is_lower));
}

/* Decodes 2*n lowercase hex digits into n bytes; returns non-zero if any was not one. */
static unsigned hex_decode_ct(const char *hex, uint8_t *out, size_t n)
{
    unsigned bad = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned hi = hex_digit_value_ct((unsigned char)hex[2 * i], &bad);
        unsigned lo = hex_digit_value_ct((unsigned char)hex[2 * i + 1], &bad);
        out[i] = (uint8_t)((hi << 4) | lo);
    }
    return bad;
}

/* The id's 16 digits as a big-endian number; 0 and *valid false if malformed. */
static uint64_t token_id_key(const char *id, bool *valid)
{
    uint8_t bytes[TOKEN_ID_BYTES];
    unsigned bad = hex_decode_ct(id, bytes, TOKEN_ID_BYTES);
    uint64_t key = 0;
    for (size_t i = 0; i < TOKEN_ID_BYTES; i++)
        key = (key << 8) | bytes[i];
    *valid = bad == 0;
    return key;
}

static int64_t wall_clock_ns(void)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
}

/* ---- in-memory table ----------------------------------------------------------- */

static size_t index_home_slot(uint64_t key, size_t cap)
{
    /* Ids are random, but a multiplicative mix keeps a hand-made log from clustering. */
    return (size_t)((key * 0x9e3779b97f4a7c15ull) >> 32) & (cap - 1);
}

/* Entry with this key, or NULL. Caller holds table_lock (or append_lock). */
static token_entry *table_find(const stele_tokens *t, uint64_t key)
{
    if (t->index_cap == 0)
        return NULL;
    for (size_t slot = index_home_slot(key, t->index_cap);;
         slot = (slot + 1) & (t->index_cap - 1)) {
        uint32_t ref = t->index_slots[slot];
        if (ref == 0)
            return NULL;
        if (t->entries[ref - 1].id_key == key)
            return &t->entries[ref - 1];
    }
}

static void index_put(uint32_t *slots, size_t cap, uint64_t key, uint32_t ref)
{
    size_t slot = index_home_slot(key, cap);
    while (slots[slot] != 0)
        slot = (slot + 1) & (cap - 1);
    slots[slot] = ref;
}

/* Grows entries and index so that `count` entries fit: the only step that allocates,
 * done before an append so that the insert after a durable append cannot fail. Caller
 * holds table_lock for writing. */
static int table_reserve(stele_tokens *t, size_t count)
{
    if (count > UINT32_MAX - 1)
        return -EFBIG; /* slots hold index+1 in 32 bits; the file cap keeps us far below */
    if (count > t->entry_cap) {
        size_t cap = t->entry_cap ? t->entry_cap * 2 : 64;
        while (cap < count)
            cap *= 2;
        token_entry *grown = realloc(t->entries, cap * sizeof(*grown));
        if (!grown)
            return -ENOMEM;
        t->entries = grown;
        t->entry_cap = cap;
    }
    if (count * 2 > t->index_cap) {
        size_t cap = t->index_cap ? t->index_cap : 128;
        while (count * 2 > cap)
            cap *= 2;
        uint32_t *slots = calloc(cap, sizeof(*slots));
        if (!slots)
            return -ENOMEM;
        for (size_t i = 0; i < t->entry_count; i++)
            index_put(slots, cap, t->entries[i].id_key, (uint32_t)(i + 1));
        free(t->index_slots);
        t->index_slots = slots;
        t->index_cap = cap;
    }
    return 0;
}

/* Appends an entry; room must have been reserved. Caller holds table_lock for writing. */
static void table_insert(stele_tokens *t, const token_entry *entry)
{
    assert(t->entry_count < t->entry_cap && (t->entry_count + 1) * 2 <= t->index_cap);
    t->entries[t->entry_count] = *entry;
    t->entry_count++;
    index_put(t->index_slots, t->index_cap, entry->id_key, (uint32_t)t->entry_count);
    if (!entry->info.revoked)
        t->active_count++;
}

static void table_mark_revoked(stele_tokens *t, token_entry *entry)
{
    if (!entry->info.revoked) {
        entry->info.revoked = true;
        t->active_count--;
    }
}

/* ---- record encoding ----------------------------------------------------------- */

static void encode_file_header(uint8_t header[TOKENS_HEADER_SIZE])
{
    memcpy(header, TOKENS_MAGIC, TOKENS_MAGIC_LEN);
    put_u32le(header + 8, TOKENS_VERSION);
    put_u32le(header + 12, (uint32_t)XXH3_64bits(header, 12));
}

/* Frames payload[0..len) as a record in out; returns the record's size. */
static size_t encode_record(uint32_t type, const uint8_t *payload, size_t len,
                            uint8_t out[TOKENS_RECORD_MAX_SIZE])
{
    assert(len <= TOKENS_RECORD_MAX_PAYLOAD);
    put_u32le(out, (uint32_t)len);
    put_u32le(out + 4, type);
    memcpy(out + TOKENS_RECORD_PREFIX_SIZE, payload, len);
    size_t body = TOKENS_RECORD_PREFIX_SIZE + len;
    put_u64le(out + body, XXH3_64bits(out, body));
    return body + TOKENS_RECORD_CHECKSUM_SIZE;
}

static size_t encode_create_payload(const token_entry *e, uint8_t *out)
{
    size_t tenant_len = strlen(e->info.tenant);
    memcpy(out, e->info.id, STELE_TOKEN_ID_LEN);
    out[CREATE_TENANT_LEN_OFFSET] = (uint8_t)tenant_len;
    memcpy(out + CREATE_TENANT_OFFSET, e->info.tenant, tenant_len);
    uint8_t *p = out + CREATE_TENANT_OFFSET + tenant_len;
    put_u32le(p, e->info.scopes);
    put_u64le(p + 4, (uint64_t)e->info.created_ns);
    memcpy(p + 12, e->secret_hash, TOKEN_HASH_BYTES);
    return CREATE_FIXED_SIZE + tenant_len;
}

/* Whether a version-1 record of this type may have this payload length. */
static bool record_shape_valid(uint32_t type, uint32_t len)
{
    if (type == TOKENS_RECORD_CREATE)
        return len >= CREATE_FIXED_SIZE + 1 && len <= CREATE_FIXED_SIZE + STELE_TENANT_MAX_LEN;
    if (type == TOKENS_RECORD_REVOKE)
        return len == REVOKE_PAYLOAD_SIZE;
    return false;
}

/* ---- appending ----------------------------------------------------------------- */

/* Writes one record at the end of the log and fsyncs it. Caller holds append_lock and
 * has checked !failed. On an I/O error the store turns failed (never retried). */
static int log_append(stele_tokens *t, uint32_t type, const uint8_t *payload, size_t len)
{
    uint8_t record[TOKENS_RECORD_MAX_SIZE];
    size_t size = encode_record(type, payload, len, record);
    if (t->log_end + size > TOKENS_MAX_FILE_SIZE)
        return -EFBIG;
    int rc = stele_io_pwrite(t->log, record, size, t->log_end);
    if (rc == 0)
        rc = stele_io_fsync(t->log);
    if (rc < 0) {
        /* The file may now hold part of the record, or all of it not durably; only a
         * restart's recovery can tell which. */
        t->failed = true;
        return rc;
    }
    t->log_end += size;
    return 0;
}

int stele_tokens_create(stele_tokens *t, const char *tenant, uint32_t scopes, char *token_out,
                        size_t token_cap, stele_token_info *info_out)
{
    uint8_t secret[TOKEN_SECRET_BYTES];
    uint8_t payload[TOKENS_RECORD_MAX_PAYLOAD];
    token_entry entry;
    bool append_locked = false;
    int rc = 0;

    if (token_out && token_cap > 0)
        token_out[0] = '\0';
    if (!t || !token_out || token_cap < STELE_TOKEN_STRING_LEN + 1 ||
        !stele_tenant_name_valid(tenant) || scopes == 0 || (scopes & ~TOKENS_KNOWN_SCOPES))
        return -EINVAL;

    memset(&entry, 0, sizeof(entry));
    snprintf(entry.info.tenant, sizeof(entry.info.tenant), "%s", tenant);
    entry.info.scopes = scopes;
    entry.info.created_ns = wall_clock_ns();
    randombytes_buf(secret, sizeof(secret));
    crypto_generichash(entry.secret_hash, sizeof(entry.secret_hash), secret, sizeof(secret), NULL,
                       0);

    pthread_mutex_lock(&t->append_lock);
    append_locked = true;
    if (t->failed) {
        rc = -EIO;
        goto fail;
    }
    /* A fresh random id; 64 bits collide only in theory, but the check is cheap. */
    do {
        uint8_t id_bytes[TOKEN_ID_BYTES];
        randombytes_buf(id_bytes, sizeof(id_bytes));
        sodium_bin2hex(entry.info.id, sizeof(entry.info.id), id_bytes, sizeof(id_bytes));
        bool valid = false;
        entry.id_key = token_id_key(entry.info.id, &valid);
        assert(valid);
    } while (table_find(t, entry.id_key) != NULL);

    pthread_rwlock_wrlock(&t->table_lock);
    rc = table_reserve(t, t->entry_count + 1);
    pthread_rwlock_unlock(&t->table_lock);
    if (rc < 0)
        goto fail;

    size_t payload_len = encode_create_payload(&entry, payload);
    rc = log_append(t, TOKENS_RECORD_CREATE, payload, payload_len);
    if (rc < 0)
        goto fail;

    pthread_rwlock_wrlock(&t->table_lock);
    table_insert(t, &entry);
    pthread_rwlock_unlock(&t->table_lock);
    pthread_mutex_unlock(&t->append_lock);
    append_locked = false;

    memcpy(token_out, TOKEN_PREFIX, TOKEN_PREFIX_LEN);
    memcpy(token_out + TOKEN_PREFIX_LEN, entry.info.id, STELE_TOKEN_ID_LEN);
    token_out[TOKEN_PREFIX_LEN + STELE_TOKEN_ID_LEN] = '_';
    sodium_bin2hex(token_out + TOKEN_SECRET_HEX_OFFSET, 2 * TOKEN_SECRET_BYTES + 1, secret,
                   sizeof(secret));
    if (info_out)
        *info_out = entry.info;

fail:
    if (append_locked)
        pthread_mutex_unlock(&t->append_lock);
    sodium_memzero(secret, sizeof(secret));
    return rc;
}

int stele_tokens_revoke(stele_tokens *t, const char *id)
{
    int rc = 0;
    if (!t || !id || strnlen(id, STELE_TOKEN_ID_LEN + 1) != STELE_TOKEN_ID_LEN)
        return -EINVAL;
    bool valid = false;
    uint64_t key = token_id_key(id, &valid);
    if (!valid)
        return -EINVAL;

    pthread_mutex_lock(&t->append_lock);
    token_entry *entry = table_find(t, key);
    if (!entry) {
        rc = -ENOENT;
        goto out;
    }
    if (entry->revoke_durable)
        goto out; /* revoking twice is a no-op, and writes nothing */
    if (t->failed)
        rc = -EIO;
    else
        rc = log_append(t, TOKENS_RECORD_REVOKE, (const uint8_t *)entry->info.id,
                        STELE_TOKEN_ID_LEN);
    /* Revoked in memory even when the append failed or was not tried: see "Failure". */
    pthread_rwlock_wrlock(&t->table_lock);
    table_mark_revoked(t, entry);
    pthread_rwlock_unlock(&t->table_lock);
    entry->revoke_durable = rc == 0;

out:
    pthread_mutex_unlock(&t->append_lock);
    return rc;
}

/* ---- reading ------------------------------------------------------------------- */

int stele_tokens_authenticate(stele_tokens *t, const char *token, size_t token_len,
                              stele_token_info *info)
{
    /* Compared against when the id is unknown, so that an unknown id and a wrong secret
     * cost the same work. */
    static const uint8_t no_hash[TOKEN_HASH_BYTES];
    uint8_t secret[TOKEN_SECRET_BYTES];
    uint8_t presented_hash[TOKEN_HASH_BYTES];
    uint8_t stored_hash[TOKEN_HASH_BYTES];
    stele_token_info found_info;

    memset(&found_info, 0, sizeof(found_info));
    if (!t || !token || token_len != STELE_TOKEN_STRING_LEN)
        return -EACCES; /* the length is the one thing allowed to show in timing */

    /* Every check runs whatever the earlier ones found; one branch at the end. */
    unsigned bad = 0;
    for (size_t i = 0; i < TOKEN_PREFIX_LEN; i++)
        bad |= (unsigned)(token[i] ^ TOKEN_PREFIX[i]);
    bad |= (unsigned)(token[TOKEN_PREFIX_LEN + STELE_TOKEN_ID_LEN] ^ '_');
    uint8_t id_bytes[TOKEN_ID_BYTES];
    bad |= hex_decode_ct(token + TOKEN_PREFIX_LEN, id_bytes, TOKEN_ID_BYTES);
    uint64_t key = 0;
    for (size_t i = 0; i < TOKEN_ID_BYTES; i++)
        key = (key << 8) | id_bytes[i];
    bad |= hex_decode_ct(token + TOKEN_SECRET_HEX_OFFSET, secret, TOKEN_SECRET_BYTES);
    crypto_generichash(presented_hash, sizeof(presented_hash), secret, sizeof(secret), NULL, 0);
    sodium_memzero(secret, sizeof(secret));

    pthread_rwlock_rdlock(&t->table_lock);
    const token_entry *entry = table_find(t, key);
    unsigned found = entry != NULL;
    memcpy(stored_hash, entry ? entry->secret_hash : no_hash, sizeof(stored_hash));
    if (entry)
        found_info = entry->info;
    pthread_rwlock_unlock(&t->table_lock);

    unsigned mismatch = sodium_memcmp(presented_hash, stored_hash, sizeof(stored_hash)) != 0;
    if (bad | mismatch | !found || found_info.revoked)
        return -EACCES;
    if (info)
        *info = found_info;
    return 0;
}

int stele_tokens_list(stele_tokens *t, stele_tokens_list_fn fn, void *ctx)
{
    stele_token_info *snapshot = NULL;
    size_t count = 0;
    int rc = 0;

    if (!t || !fn)
        return -EINVAL;
    /* Callbacks run on a copy, without the lock, so that one may call back into the
     * store (even revoke) without deadlocking. */
    pthread_rwlock_rdlock(&t->table_lock);
    count = t->entry_count;
    if (count > 0) {
        snapshot = malloc(count * sizeof(*snapshot));
        if (snapshot) {
            for (size_t i = 0; i < count; i++)
                snapshot[i] = t->entries[i].info;
        }
    }
    pthread_rwlock_unlock(&t->table_lock);
    if (count > 0 && !snapshot)
        return -ENOMEM;

    for (size_t i = 0; i < count; i++) {
        rc = fn(ctx, &snapshot[i]);
        if (rc != 0)
            break;
    }
    free(snapshot);
    return rc;
}

size_t stele_tokens_active_count(stele_tokens *t)
{
    if (!t)
        return 0;
    pthread_rwlock_rdlock(&t->table_lock);
    size_t count = t->active_count;
    pthread_rwlock_unlock(&t->table_lock);
    return count;
}

/* ---- open: replay -------------------------------------------------------------- */

static int replay_create(stele_tokens *t, const uint8_t *payload, uint32_t len)
{
    token_entry entry;
    memset(&entry, 0, sizeof(entry));
    size_t tenant_len = payload[CREATE_TENANT_LEN_OFFSET];
    if (len != CREATE_FIXED_SIZE + tenant_len)
        return -EBADMSG;
    memcpy(entry.info.id, payload, STELE_TOKEN_ID_LEN);
    bool valid = false;
    entry.id_key = token_id_key(entry.info.id, &valid);
    const char *tenant = (const char *)payload + CREATE_TENANT_OFFSET;
    if (!valid || !tenant_bytes_valid(tenant, tenant_len))
        return -EBADMSG;
    memcpy(entry.info.tenant, tenant, tenant_len);
    const uint8_t *p = payload + CREATE_TENANT_OFFSET + tenant_len;
    entry.info.scopes = get_u32le(p);
    entry.info.created_ns = (int64_t)get_u64le(p + 4);
    memcpy(entry.secret_hash, p + 12, TOKEN_HASH_BYTES);
    if (entry.info.scopes == 0 || (entry.info.scopes & ~TOKENS_KNOWN_SCOPES))
        return -EBADMSG;
    if (table_find(t, entry.id_key))
        return -EBADMSG; /* created twice */
    int rc = table_reserve(t, t->entry_count + 1);
    if (rc < 0)
        return rc;
    table_insert(t, &entry);
    return 0;
}

static int replay_revoke(stele_tokens *t, const uint8_t *payload)
{
    char id[STELE_TOKEN_ID_LEN + 1];
    memcpy(id, payload, STELE_TOKEN_ID_LEN);
    id[STELE_TOKEN_ID_LEN] = '\0';
    bool valid = false;
    uint64_t key = token_id_key(id, &valid);
    token_entry *entry = valid ? table_find(t, key) : NULL;
    if (!entry)
        return -EBADMSG; /* revokes a token the log never created */
    table_mark_revoked(t, entry);
    entry->revoke_durable = true;
    return 0;
}

/* Whether bytes [off, end of file) are zeros no longer than a record: the unwritten
 * data of an append whose new file size alone reached the disk. */
static int tail_is_zeros(stele_io_window *w, uint64_t off, bool *zeros)
{
    const uint8_t *bytes = NULL;
    uint64_t left = w->file_size - off;
    *zeros = false;
    if (left > TOKENS_RECORD_MAX_SIZE)
        return 0;
    int rc = stele_io_window_get(w, off, (size_t)left, &bytes);
    if (rc < 0)
        return rc;
    uint8_t any = 0;
    for (size_t i = 0; i < (size_t)left; i++)
        any |= bytes[i];
    *zeros = any == 0;
    return 0;
}

/* Reads every record into the table; sets *valid_end to the end of the last whole
 * record. Runs before the store is shared, so it takes no lock. */
static int replay_log(stele_tokens *t, uint64_t file_size, uint64_t *valid_end)
{
    stele_io_window window;
    const uint8_t *bytes = NULL;
    uint64_t off = 0;
    int rc = 0;

    if (stele_io_window_init(&window, t->log, file_size, TOKENS_READ_WINDOW) != 0)
        return -ENOMEM;

    rc = stele_io_window_get(&window, 0, TOKENS_HEADER_SIZE, &bytes);
    if (rc == -ENODATA)
        rc = -EBADMSG; /* the file is created whole (write_file_atomic): never torn */
    if (rc < 0)
        goto fail;
    if (memcmp(bytes, TOKENS_MAGIC, TOKENS_MAGIC_LEN) != 0 ||
        get_u32le(bytes + 12) != (uint32_t)XXH3_64bits(bytes, 12)) {
        rc = -EBADMSG;
        goto fail;
    }
    if (get_u32le(bytes + 8) != TOKENS_VERSION) {
        rc = -ENOTSUP; /* intact, but written by another version of Stele */
        goto fail;
    }
    off = TOKENS_HEADER_SIZE;

    while (off < file_size) {
        rc = stele_io_window_get(&window, off, TOKENS_RECORD_PREFIX_SIZE, &bytes);
        if (rc == -ENODATA)
            break; /* torn inside the length and type */
        if (rc < 0)
            goto fail;
        uint32_t len = get_u32le(bytes);
        uint32_t type = get_u32le(bytes + 4);
        if (!record_shape_valid(type, len)) {
            bool zeros = false;
            rc = tail_is_zeros(&window, off, &zeros);
            if (rc < 0)
                goto fail;
            if (zeros)
                break;
            rc = -EBADMSG;
            goto fail;
        }
        size_t record_size = TOKENS_RECORD_PREFIX_SIZE + len + TOKENS_RECORD_CHECKSUM_SIZE;
        rc = stele_io_window_get(&window, off, record_size, &bytes);
        if (rc == -ENODATA)
            break; /* torn inside the payload or checksum */
        if (rc < 0)
            goto fail;
        size_t body = TOKENS_RECORD_PREFIX_SIZE + len;
        if (get_u64le(bytes + body) != XXH3_64bits(bytes, body)) {
            rc = -EBADMSG;
            goto fail;
        }
        const uint8_t *payload = bytes + TOKENS_RECORD_PREFIX_SIZE;
        rc = type == TOKENS_RECORD_CREATE ? replay_create(t, payload, len)
                                          : replay_revoke(t, payload);
        if (rc < 0)
            goto fail;
        off += record_size;
    }
    rc = 0;
    *valid_end = off;

fail:
    stele_io_window_free(&window);
    return rc;
}

static void tokens_free(stele_tokens *t)
{
    free(t->entries);
    free(t->index_slots);
    free(t);
}

int stele_tokens_open(stele_io *io, const char *data_dir, stele_tokens **out)
{
    stele_tokens *t = NULL;
    char path[PATH_MAX];
    bool append_lock_ready = false;
    bool table_lock_ready = false;
    uint64_t file_size = 0;
    uint64_t valid_end = 0;
    int rc = 0;

    if (out)
        *out = NULL;
    if (!io || !data_dir || !out)
        return -EINVAL;
    /* Idempotent and thread-safe; -1 only when no randomness source exists. */
    if (sodium_init() < 0)
        return -EIO;
    if ((size_t)snprintf(path, sizeof(path), "%s/%s", data_dir, TOKENS_FILE_NAME) >= sizeof(path))
        return -ENAMETOOLONG;

    t = calloc(1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    t->io = io;
    if (pthread_mutex_init(&t->append_lock, NULL) != 0) {
        rc = -ENOMEM;
        goto fail;
    }
    append_lock_ready = true;
    if (pthread_rwlock_init(&t->table_lock, NULL) != 0) {
        rc = -ENOMEM;
        goto fail;
    }
    table_lock_ready = true;

    rc = stele_io_exists(io, path);
    if (rc < 0)
        goto fail;
    if (rc == 0) {
        /* Created whole and renamed into place, so the header is never torn. */
        uint8_t header[TOKENS_HEADER_SIZE];
        encode_file_header(header);
        rc = stele_io_write_file_atomic(io, data_dir, TOKENS_FILE_NAME, header, sizeof(header));
        if (rc < 0)
            goto fail;
    }
    rc = stele_io_open(io, path, STELE_IO_READWRITE, &t->log);
    if (rc < 0)
        goto fail;
    rc = stele_io_size(t->log, &file_size);
    if (rc < 0)
        goto fail;
    if (file_size > TOKENS_MAX_FILE_SIZE) {
        rc = -EFBIG;
        goto fail;
    }
    rc = replay_log(t, file_size, &valid_end);
    if (rc < 0)
        goto fail;
    if (valid_end < file_size) {
        /* Torn tail: the last append never returned, so nobody was told it succeeded. */
        rc = stele_io_truncate(t->log, valid_end);
        if (rc == 0)
            rc = stele_io_fsync(t->log);
        if (rc < 0)
            goto fail;
    }
    t->log_end = valid_end;
    *out = t; /* now belongs to the caller */
    return 0;

fail:
    stele_io_close(t->log);
    if (table_lock_ready)
        pthread_rwlock_destroy(&t->table_lock);
    if (append_lock_ready)
        pthread_mutex_destroy(&t->append_lock);
    tokens_free(t);
    return rc;
}

void stele_tokens_close(stele_tokens *t)
{
    if (!t)
        return;
    stele_io_close(t->log);
    pthread_rwlock_destroy(&t->table_lock);
    pthread_mutex_destroy(&t->append_lock);
    tokens_free(t);
}
