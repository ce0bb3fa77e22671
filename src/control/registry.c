/*
 * registry.c — the device registry: an append-only log on disk, a table in memory, and
 * group commit between them (API: include/stele/registry.h, SPEC §6).
 *
 * Design: a device's entry is read on every frame and changed a few times in its life,
 * so the registry is a write-ahead log with no other on-disk state, replayed into memory
 * on open; lookups never touch the disk. Every mutation is one record. Enrollments come
 * in bursts of thousands, so records are not written one by one: appenders put their
 * encoded record into a shared pending batch, and one of them (the writer) writes the
 * whole batch with one pwrite and one fsync, then applies every record of it to memory,
 * in log order, through the same function replay uses — so memory is always exactly the
 * replay of the durable log.
 *
 * The log's format, its encoding and its recovery (torn tail or damage) are in
 * registry_log.c and docs/format/registry.md: a file header, then records (length, type,
 * batch offset, payload, checksum), one per mutation; the batch offset ties each record
 * to the one write + fsync it was part of.
 *
 * Invariants
 *   - Every byte before `log_end` is the header and whole records, fsync'd. A record is
 *     applied to memory (and so visible to stele_registry_get) only after the fsync of
 *     its batch returned success; the caller's answer comes after that.
 *   - Records are appended only by the writer of a batch, at `pending_offset`; batches
 *     never overlap and are at most REGISTRY_BATCH_MAX_BYTES long.
 *   - A record never contradicts the records before it (registry__contradiction): the
 *     appender checks the same rules against the same state, under `commit_lock`, and
 *     marks the device `in_flight` until its record is applied, so a second mutation of
 *     that device waits and then sees the outcome of the first (two enrollments with
 *     one token: the second finds the device active, -EACCES).
 *   - After a failed write or fsync nothing more is written (`failed`, sticky).
 *
 * Recovery (open): replay applies every record through registry__apply, after
 * registry__contradiction has confirmed it may follow the records before it (if not, the
 * log is damaged: -EBADMSG); a torn tail is cut and the cut fsync'd.
 *
 * Threads
 *   commit_lock (mutex) + commit_cond: the pending batch, the writer role, in_flight
 *     marks, log_end, failed. Held for memory work only: the writer drops it for its
 *     pwrite and fsync.
 *   table_lock (rwlock): the map, the add-order array, the counts, and every entry's
 *     info and visibility. Lookups hold it for reading; the writer applying a batch and
 *     an add reserving its entry hold it for writing. Order: commit_lock, then
 *     table_lock. Entries change only under both locks, so a commit_lock holder may read
 *     them without table_lock.
 *   last_seen_ns is an atomic of its own, so stele_registry_touch needs only the read
 *     lock (which keeps the entry's memory alive; entries are never freed before close).
 */
#include "stele/registry.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "common/clock.h"
#include "common/hashmap.h"
#include "control/registry_log.h"
#include "stele/auth.h"
#include "stele/frame.h"

/* 1,000,000 devices take about 0.6 GB of memory (an entry is ~550 bytes, plus map and
 * order slots) and a log of 0.2-0.5 GB that replays in a few seconds: the most one
 * control-plane process should carry. A bigger fleet needs sharding, not a bigger cap.
 * An add beyond it fails -ENOSPC. */
#define REGISTRY_MAX_DEVICES 1000000u

/* stele_registry_list copies this many entries per read-lock hold, so a list of a
 * million devices neither stalls lookups nor allocates a copy of the whole table. */
#define REGISTRY_LIST_CHUNK 256

#define REGISTRY_DEFAULT_ENROLL_TTL_NS (INT64_C(24) * 3600 * 1000000000)

#define ENROLL_TOKEN_PREFIX "sen_"
#define ENROLL_TOKEN_PREFIX_LEN 4
#define ENROLL_TOKEN_SECRET_BYTES 32
static_assert(STELE_ENROLL_TOKEN_LEN == ENROLL_TOKEN_PREFIX_LEN + 2 * ENROLL_TOKEN_SECRET_BYTES,
              "enrollment token layout");

typedef struct {
    stele_device_info info; /* info.last_seen_ns stays 0: see last_seen_ns */
    _Atomic int64_t last_seen_ns;
    uint8_t token_hash[REGISTRY_TOKEN_HASH_BYTES]; /* the live token's hash while pending */
    /* Its add is durable and applied: lookups see it. An entry whose add failed stays in
     * the map invisible (the map cannot delete); a later add of the id reuses it. */
    bool visible;
    bool in_flight; /* a record of it is pending or being written; under commit_lock */
} device_entry;

/* One mutation on its way to the log; lives on the appender's stack. */
typedef struct registry_request {
    struct registry_request *next;
    device_entry *entry;
    registry_record rec;
    stele_device_info info; /* the entry just after this record was applied */
    int rc;
    bool done;
} registry_request;

struct stele_registry {
    stele_io *io; /* not owned */
    stele_file *log;
    stele_registry_options opts;

    pthread_mutex_t commit_lock;
    pthread_cond_t commit_cond; /* a batch finished (or room, or an entry settled) */
    uint8_t *pending_buf;       /* REGISTRY_BATCH_MAX_BYTES; records waiting for a writer */
    size_t pending_len;
    uint64_t pending_offset; /* where the pending batch will be written */
    registry_request *pending_head;
    registry_request **pending_tail;
    uint8_t *write_buf; /* the batch being written; the writer's alone while `writing` */
    bool writing;
    uint64_t log_end; /* durable end of the log */
    int failed;       /* 0, or the error of the write or fsync that failed (sticky) */
    size_t adds_in_flight;

    pthread_rwlock_t table_lock;
    hashmap map; /* id → device_entry *; owns every entry, invisible ones included */
    device_entry **order;
    size_t order_count; /* visible entries, in add order */
    size_t order_cap;
    uint64_t counts[STELE_DEVICE_STATES];
};

/* ---- names and text ------------------------------------------------------------ */

static const char *const state_names[STELE_DEVICE_STATES] = {"pending", "active", "quarantined",
                                                             "revoked"};

const char *stele_device_state_name(stele_device_state s)
{
    if ((unsigned)s >= STELE_DEVICE_STATES)
        return "unknown";
    return state_names[s];
}

void stele_registry_options_default(stele_registry_options *o)
{
    if (!o)
        return;
    memset(o, 0, sizeof(*o));
    o->enroll_ttl_ns = REGISTRY_DEFAULT_ENROLL_TTL_NS;
}

static int64_t add_saturated(int64_t a, int64_t b)
{
    if (b > 0 && a > INT64_MAX - b)
        return INT64_MAX;
    return a + b;
}

static int64_t registry__now(const stele_registry *r)
{
    return r->opts.now_ns ? r->opts.now_ns(r->opts.now_ctx) : clock_wall_ns();
}

/* ---- enrollment tokens --------------------------------------------------------- */

/* Makes a fresh token: its text into token (STELE_ENROLL_TOKEN_LEN + 1 bytes) and the
 * hash the log keeps into hash. */
static void token_issue(char token[STELE_ENROLL_TOKEN_LEN + 1],
                        uint8_t hash[REGISTRY_TOKEN_HASH_BYTES])
{
    uint8_t secret[ENROLL_TOKEN_SECRET_BYTES];
    randombytes_buf(secret, sizeof(secret));
    crypto_generichash(hash, REGISTRY_TOKEN_HASH_BYTES, secret, sizeof(secret), NULL, 0);
    memcpy(token, ENROLL_TOKEN_PREFIX, ENROLL_TOKEN_PREFIX_LEN);
    sodium_bin2hex(token + ENROLL_TOKEN_PREFIX_LEN, 2 * ENROLL_TOKEN_SECRET_BYTES + 1, secret,
                   sizeof(secret));
    sodium_memzero(secret, sizeof(secret));
}

/* Decodes one lowercase hex digit without branching on its value; sets *bad when c is
 * anything else. Used on secrets, so timing must not depend on the digits. */
static unsigned hex_digit_value_ct(unsigned char c, unsigned *bad)
{
    unsigned v = c;
    unsigned is_digit = (((unsigned)('0' - 1) - v) & (v - (unsigned)('9' + 1))) >> 31;
    unsigned is_lower = (((unsigned)('a' - 1) - v) & (v - (unsigned)('f' + 1))) >> 31;
    *bad |= 1u ^ (is_digit | is_lower);
    return ((v - '0') & (0u - is_digit)) | ((v - 'a' + 10) & (0u - is_lower));
}

/* Hashes a presented token the way token_issue hashed the real one. Returns non-zero
 * when it is malformed (the hash is then of whatever it decoded to, and unused). Only
 * the length shows in timing. */
static unsigned token_presented_hash(const char *token, size_t len,
                                     uint8_t hash[REGISTRY_TOKEN_HASH_BYTES])
{
    uint8_t secret[ENROLL_TOKEN_SECRET_BYTES];
    unsigned bad = 0;
    if (!token || len != STELE_ENROLL_TOKEN_LEN) {
        memset(hash, 0, REGISTRY_TOKEN_HASH_BYTES);
        return 1;
    }
    for (size_t i = 0; i < ENROLL_TOKEN_PREFIX_LEN; i++)
        bad |= (unsigned)(token[i] ^ ENROLL_TOKEN_PREFIX[i]);
    const char *hex = token + ENROLL_TOKEN_PREFIX_LEN;
    for (size_t i = 0; i < ENROLL_TOKEN_SECRET_BYTES; i++) {
        unsigned hi = hex_digit_value_ct((unsigned char)hex[2 * i], &bad);
        unsigned lo = hex_digit_value_ct((unsigned char)hex[2 * i + 1], &bad);
        secret[i] = (uint8_t)((hi << 4) | lo);
    }
    crypto_generichash(hash, REGISTRY_TOKEN_HASH_BYTES, secret, sizeof(secret), NULL, 0);
    sodium_memzero(secret, sizeof(secret));
    return bad;
}

/* ---- the state machine ------------------------------------------------------------ */

/* Whether rec may follow the log so far, given e, the entry of its device (NULL or
 * invisible when unknown). NULL when it may, else why not. Replay calls it on every
 * record; appenders, having checked their own (more specific) rules, assert it. */
static const char *registry__contradiction(const stele_registry *r, const device_entry *e,
                                           const registry_record *rec)
{
    bool known = e && e->visible;
    if (rec->type == REGISTRY_RECORD_ADD) {
        if (known)
            return "adds a device already added";
        if (r->order_count >= REGISTRY_MAX_DEVICES)
            return "adds more devices than the registry holds";
        return NULL;
    }
    if (!known)
        return "names a device never added";
    const stele_device_info *d = &e->info;
    bool keyed = d->state == STELE_DEVICE_ACTIVE || d->state == STELE_DEVICE_QUARANTINED;
    switch (rec->type) {
    case REGISTRY_RECORD_ENROLL:
        if (d->state != STELE_DEVICE_PENDING)
            return "enrolls a device that is not pending";
        if (rec->time_ns >= d->enroll_expires_ns)
            return "enrolls with an expired token";
        if (rec->key_id == 0 || rec->key_id != d->last_key_id + 1)
            return "gives a key id other than the next one";
        if (rec->alg != STELE_FRAME_ALG_ED25519)
            return "names an unsupported algorithm";
        return NULL;
    case REGISTRY_RECORD_REVOKE:
        return d->state == STELE_DEVICE_REVOKED ? "revokes a revoked device" : NULL;
    case REGISTRY_RECORD_QUARANTINE:
        return d->state == STELE_DEVICE_ACTIVE ? NULL : "quarantines a device that is not active";
    case REGISTRY_RECORD_RELEASE:
        return d->state == STELE_DEVICE_QUARANTINED ? NULL
                                                    : "releases a device that is not quarantined";
    case REGISTRY_RECORD_REENROLL:
        return NULL;
    case REGISTRY_RECORD_ROTATE:
        if (!keyed || d->next.key_id != 0)
            return "rotates a device that is not active, or mid-rotation";
        if (rec->key_id == 0 || rec->key_id != d->last_key_id + 1)
            return "gives a key id other than the next one";
        if (rec->alg >= 32 || !(d->allowed_algs & (1u << rec->alg)))
            return "names an algorithm not pinned at enrollment";
        return NULL;
    case REGISTRY_RECORD_PROMOTE:
        if (!keyed || d->next.key_id == 0 || d->next.key_id != rec->key_id)
            return "promotes a key that is not the pending one";
        return NULL;
    default:
        return "unknown record type";
    }
}

static void counts_move(stele_registry *r, stele_device_state from, stele_device_state to)
{
    r->counts[from]--;
    r->counts[to]++;
}

/* Applies a record that passed registry__contradiction. The caller holds table_lock for
 * writing (or has the registry to itself, in replay); for an add, room in `order` is
 * reserved and e is in the map. Never fails. */
static void registry__apply(stele_registry *r, device_entry *e, const registry_record *rec)
{
    stele_device_info *d = &e->info;
    stele_device_state before = d->state;

    switch (rec->type) {
    case REGISTRY_RECORD_ADD: {
        stele_device_info fresh;
        memset(&fresh, 0, sizeof(fresh));
        memcpy(fresh.id, rec->id, rec->id_len); /* equal to the map's key already there */
        snprintf(fresh.tenant, sizeof(fresh.tenant), "%s", rec->tenant);
        snprintf(fresh.cohort, sizeof(fresh.cohort), "%s", rec->cohort);
        fresh.state = STELE_DEVICE_PENDING;
        fresh.added_ns = rec->time_ns;
        fresh.state_changed_ns = rec->time_ns;
        fresh.enroll_expires_ns = rec->expires_ns;
        e->info = fresh;
        memcpy(e->token_hash, rec->token_hash, REGISTRY_TOKEN_HASH_BYTES);
        atomic_store_explicit(&e->last_seen_ns, 0, memory_order_relaxed);
        e->visible = true;
        assert(r->order_count < r->order_cap);
        r->order[r->order_count++] = e;
        r->counts[STELE_DEVICE_PENDING]++;
        return;
    }
    case REGISTRY_RECORD_ENROLL:
        d->state = STELE_DEVICE_ACTIVE;
        d->allowed_algs = 1u << rec->alg;
        d->key =
            (stele_device_key){.key_id = rec->key_id, .alg = rec->alg, .added_ns = rec->time_ns};
        memcpy(d->key.public_key, rec->public_key, REGISTRY_PUBLIC_KEY_BYTES);
        memset(&d->next, 0, sizeof(d->next));
        d->overlap_deadline_ns = 0;
        d->last_key_id = rec->key_id;
        snprintf(d->firmware, sizeof(d->firmware), "%s", rec->firmware);
        d->enrolled_ns = rec->time_ns;
        d->state_changed_ns = rec->time_ns;
        d->enroll_expires_ns = 0;
        sodium_memzero(e->token_hash, REGISTRY_TOKEN_HASH_BYTES); /* consumed */
        break;
    case REGISTRY_RECORD_REVOKE:
        /* Keys stay in the entry for forensics; the state makes them worthless. */
        d->state = STELE_DEVICE_REVOKED;
        d->state_changed_ns = rec->time_ns;
        d->enroll_expires_ns = 0;
        sodium_memzero(e->token_hash, REGISTRY_TOKEN_HASH_BYTES);
        break;
    case REGISTRY_RECORD_QUARANTINE:
        d->state = STELE_DEVICE_QUARANTINED;
        d->state_changed_ns = rec->time_ns;
        break;
    case REGISTRY_RECORD_RELEASE:
        d->state = STELE_DEVICE_ACTIVE;
        d->state_changed_ns = rec->time_ns;
        break;
    case REGISTRY_RECORD_REENROLL:
        d->state = STELE_DEVICE_PENDING;
        d->allowed_algs = 0;
        memset(&d->key, 0, sizeof(d->key));
        memset(&d->next, 0, sizeof(d->next));
        d->overlap_deadline_ns = 0;
        d->firmware[0] = '\0';
        d->enrolled_ns = 0;
        d->state_changed_ns = rec->time_ns;
        d->enroll_expires_ns = rec->expires_ns;
        memcpy(e->token_hash, rec->token_hash, REGISTRY_TOKEN_HASH_BYTES);
        break;
    case REGISTRY_RECORD_ROTATE:
        d->next =
            (stele_device_key){.key_id = rec->key_id, .alg = rec->alg, .added_ns = rec->time_ns};
        memcpy(d->next.public_key, rec->public_key, REGISTRY_PUBLIC_KEY_BYTES);
        d->overlap_deadline_ns = rec->deadline_ns;
        d->last_key_id = rec->key_id;
        break;
    case REGISTRY_RECORD_PROMOTE:
        d->key = d->next;
        memset(&d->next, 0, sizeof(d->next));
        d->overlap_deadline_ns = 0;
        break;
    default:
        assert(!"record type checked before apply");
        return;
    }
    if (d->state != before)
        counts_move(r, before, d->state);
}

/* ---- the table ---------------------------------------------------------------------- */

static device_entry *table_find(const stele_registry *r, const char *id, size_t id_len)
{
    return hashmap_get(&r->map, hashmap_hash(id, id_len), id, id_len);
}

static void entry_snapshot(device_entry *e, stele_device_info *out)
{
    *out = e->info;
    out->last_seen_ns = atomic_load_explicit(&e->last_seen_ns, memory_order_relaxed);
}

/* Grows `order` to hold `count` entries. Caller holds table_lock for writing. */
static int order_reserve(stele_registry *r, size_t count)
{
    if (count <= r->order_cap)
        return 0;
    size_t cap = r->order_cap ? r->order_cap * 2 : 1024;
    while (cap < count)
        cap *= 2;
    device_entry **grown = realloc(r->order, cap * sizeof(*grown));
    if (!grown)
        return -ENOMEM;
    r->order = grown;
    r->order_cap = cap;
    return 0;
}

/* An entry for rec's id in the map, invisible until its add is applied: the one step of
 * an add that allocates, done before the record is queued so that applying it cannot
 * fail. Reuses the entry of an earlier add that failed. Caller holds commit_lock. */
static int registry__reserve_entry(stele_registry *r, const registry_record *rec,
                                   device_entry *ghost, device_entry **out)
{
    device_entry *e = ghost;
    int rc = 0;

    pthread_rwlock_wrlock(&r->table_lock);
    rc = order_reserve(r, r->order_count + r->adds_in_flight + 1);
    if (rc < 0)
        goto out;
    if (!e) {
        e = calloc(1, sizeof(*e));
        if (!e) {
            rc = -ENOMEM;
            goto out;
        }
        memcpy(e->info.id, rec->id, rec->id_len);
        rc =
            hashmap_put(&r->map, hashmap_hash(e->info.id, rec->id_len), e->info.id, rec->id_len, e);
        if (rc < 0) {
            free(e);
            goto out;
        }
        /* now belongs to the map */
    }
    r->adds_in_flight++;
    *out = e;
out:
    pthread_rwlock_unlock(&r->table_lock);
    return rc;
}

/* ---- group commit ------------------------------------------------------------------- */

/* Waits until the registry can take a record for this device: not failed, the device
 * not in flight, room in the pending batch. *entry: the device's entry, NULL if none
 * (possibly invisible). Caller holds commit_lock. */
static int registry__settle(stele_registry *r, const char *id, size_t id_len, device_entry **entry)
{
    for (;;) {
        if (r->failed)
            return -EIO;
        device_entry *e = table_find(r, id, id_len);
        if ((e && e->in_flight) ||
            r->pending_len + REGISTRY_RECORD_MAX_SIZE > REGISTRY_BATCH_MAX_BYTES) {
            pthread_cond_wait(&r->commit_cond, &r->commit_lock);
            continue;
        }
        *entry = e;
        return 0;
    }
}

/* registry__settle for a mutation of a device that must exist: -ENOENT when it does not
 * (or its add never became durable). */
static int registry__settle_known(stele_registry *r, const char *id, size_t id_len,
                                  device_entry **entry)
{
    int rc = registry__settle(r, id, id_len, entry);
    if (rc == 0 && !(*entry && (*entry)->visible))
        rc = -ENOENT;
    return rc;
}

/* Writes the pending batch and applies it: the writer's part. Called with commit_lock
 * held and no writer active; drops the lock for the I/O only. */
static void registry__write_batch(stele_registry *r)
{
    registry_request *batch = r->pending_head;
    uint8_t *bytes = r->pending_buf;
    size_t len = r->pending_len;
    uint64_t offset = r->pending_offset;
    int rc = r->failed ? -EIO : 0;

    /* The batch is the writer's now; appenders fill the other buffer meanwhile. */
    r->pending_buf = r->write_buf;
    r->write_buf = bytes;
    r->pending_len = 0;
    r->pending_offset = offset + len;
    r->pending_head = NULL;
    r->pending_tail = &r->pending_head;
    r->writing = true;

    if (rc == 0) {
        pthread_mutex_unlock(&r->commit_lock);
        rc = stele_io_pwrite(r->log, bytes, len, offset);
        if (rc == 0)
            rc = stele_io_fsync(r->log);
        pthread_mutex_lock(&r->commit_lock);
    }
    if (rc == 0) {
        r->log_end = offset + len;
        pthread_rwlock_wrlock(&r->table_lock);
        for (registry_request *q = batch; q; q = q->next) {
            assert(registry__contradiction(r, q->entry, &q->rec) == NULL);
            registry__apply(r, q->entry, &q->rec);
            entry_snapshot(q->entry, &q->info);
        }
        pthread_rwlock_unlock(&r->table_lock);
    } else if (!r->failed) {
        /* Never retried: the file may hold part of the batch, or all of it not durably;
         * only a restart's recovery can tell which. */
        r->failed = rc < 0 ? rc : -EIO;
    }
    /* Each appender reads its outcome under commit_lock, after the broadcast. */
    for (registry_request *q = batch; q; q = q->next) {
        q->entry->in_flight = false;
        if (q->rec.type == REGISTRY_RECORD_ADD)
            r->adds_in_flight--;
        q->rc = rc == 0 ? 0 : -EIO;
        q->done = true;
    }
    r->writing = false;
    pthread_cond_broadcast(&r->commit_cond);
}

/* Queues req for e, the device's entry as registry__settle left it (for an add the id's
 * ghost entry, to reuse, or NULL), and returns once its batch is durable and applied (0:
 * the device's info just after it goes into info_out, if not NULL) or failed (-EIO); or
 * -EFBIG / -ENOMEM without queuing it. Caller holds commit_lock throughout. */
static int registry__submit(stele_registry *r, registry_request *req, device_entry *e,
                            stele_device_info *info_out)
{
    uint8_t *at = r->pending_buf + r->pending_len;
    size_t size = registry_log__encode(&req->rec, r->pending_offset, at);
    int rc = 0;

    req->entry = e;
    assert(r->pending_len + size <= REGISTRY_BATCH_MAX_BYTES);
    assert(req->rec.type == REGISTRY_RECORD_ADD ||
           registry__contradiction(r, req->entry, &req->rec) == NULL);
    if (r->pending_offset + r->pending_len + size > REGISTRY_MAX_FILE_SIZE)
        return -EFBIG;
    if (req->rec.type == REGISTRY_RECORD_ADD) {
        rc = registry__reserve_entry(r, &req->rec, req->entry, &req->entry);
        if (rc < 0)
            return rc;
    }
    r->pending_len += size; /* the bytes encoded above are now part of the batch */
    req->next = NULL;
    req->done = false;
    *r->pending_tail = req;
    r->pending_tail = &req->next;
    req->entry->in_flight = true;

    while (!req->done) {
        if (!r->writing && r->pending_head)
            registry__write_batch(r);
        else
            pthread_cond_wait(&r->commit_cond, &r->commit_lock);
    }
    if (req->rc == 0 && info_out)
        *info_out = req->info;
    return req->rc;
}

static void request_init(registry_request *req, uint32_t type, const char *id, size_t id_len)
{
    memset(req, 0, sizeof(*req));
    req->rec.type = type;
    memcpy(req->rec.id, id, id_len);
    req->rec.id_len = id_len;
}

/* ---- mutations ------------------------------------------------------------------ */

/* What add and reenroll share: their record carries a fresh enrollment token. req has
 * the record's own fields (its id, and for an add the tenant and cohort). The token is
 * made before commit_lock is taken; only its hash goes into the record and the log, and
 * its text reaches token_out (STELE_ENROLL_TOKEN_LEN + 1 bytes) only once the record is
 * durable. */
static int registry__submit_with_token(stele_registry *r, registry_request *req, char *token_out,
                                       stele_device_info *info_out)
{
    char token[STELE_ENROLL_TOKEN_LEN + 1];
    device_entry *e = NULL;
    int rc = 0;

    token_issue(token, req->rec.token_hash);
    pthread_mutex_lock(&r->commit_lock);
    rc = registry__settle(r, req->rec.id, req->rec.id_len, &e);
    if (rc < 0)
        goto out;
    /* An add needs an id not taken, and room; a reenroll, a device that exists. */
    bool known = e && e->visible;
    if (req->rec.type == REGISTRY_RECORD_REENROLL)
        rc = known ? 0 : -ENOENT;
    else if (known)
        rc = -EEXIST;
    else if (r->order_count + r->adds_in_flight >= REGISTRY_MAX_DEVICES)
        rc = -ENOSPC;
    if (rc < 0)
        goto out;
    req->rec.time_ns = registry__now(r);
    req->rec.expires_ns = add_saturated(req->rec.time_ns, r->opts.enroll_ttl_ns);
    /* For an add, e is an earlier failed add's entry, to reuse, or NULL. */
    rc = registry__submit(r, req, e, info_out);
out:
    pthread_mutex_unlock(&r->commit_lock);
    if (rc == 0)
        memcpy(token_out, token, sizeof(token)); /* the only copy in clear, now the caller's */
    sodium_memzero(token, sizeof(token));
    sodium_memzero(req->rec.token_hash, sizeof(req->rec.token_hash));
    return rc;
}

int stele_registry_add(stele_registry *r, const char *id, const char *tenant, const char *cohort,
                       char *token_out, size_t token_cap, stele_device_info *info_out)
{
    registry_request req;

    if (token_out && token_cap > 0)
        token_out[0] = '\0';
    if (!cohort)
        cohort = "";
    size_t id_len = id ? strnlen(id, STELE_DEVICE_ID_MAX + 1) : 0;
    size_t cohort_len = strnlen(cohort, STELE_COHORT_MAX + 1);
    if (!r || !token_out || token_cap < STELE_ENROLL_TOKEN_LEN + 1 ||
        !stele_device_id_valid(id, id_len) || !registry__tenant_valid(tenant) ||
        !registry__cohort_valid(cohort, cohort_len))
        return -EINVAL;

    request_init(&req, REGISTRY_RECORD_ADD, id, id_len);
    snprintf(req.rec.tenant, sizeof(req.rec.tenant), "%s", tenant);
    memcpy(req.rec.cohort, cohort, cohort_len);
    return registry__submit_with_token(r, &req, token_out, info_out);
}

int stele_registry_enroll(stele_registry *r, const char *id, const char *token, size_t token_len,
                          uint8_t alg, const uint8_t public_key[32], const char *firmware,
                          stele_device_info *info_out)
{
    /* Compared against when the device has no live token, so that every refusal costs
     * the same work. */
    static const uint8_t no_hash[REGISTRY_TOKEN_HASH_BYTES];
    uint8_t presented[REGISTRY_TOKEN_HASH_BYTES];
    registry_request req;
    device_entry *e = NULL;
    int rc = 0;

    if (!firmware)
        firmware = "";
    size_t id_len = id ? strnlen(id, STELE_DEVICE_ID_MAX + 1) : 0;
    size_t firmware_len = strnlen(firmware, STELE_FIRMWARE_MAX + 1);
    if (!r || !public_key || !stele_device_id_valid(id, id_len) ||
        !registry__firmware_valid(firmware, firmware_len) || alg != STELE_FRAME_ALG_ED25519 ||
        !crypto_core_ed25519_is_valid_point(public_key))
        return -EINVAL;
    unsigned bad = token_presented_hash(token, token_len, presented);

    request_init(&req, REGISTRY_RECORD_ENROLL, id, id_len);
    req.rec.alg = alg;
    memcpy(req.rec.public_key, public_key, REGISTRY_PUBLIC_KEY_BYTES);
    memcpy(req.rec.firmware, firmware, firmware_len);

    pthread_mutex_lock(&r->commit_lock);
    rc = registry__settle_known(r, id, id_len, &e);
    if (rc < 0)
        goto out;
    int64_t now = registry__now(r);
    bool pending = e->info.state == STELE_DEVICE_PENDING;
    unsigned mismatch =
        sodium_memcmp(presented, pending ? e->token_hash : no_hash, REGISTRY_TOKEN_HASH_BYTES) != 0;
    /* Wrong, used (the device is no longer pending), expired: one answer for all. */
    if (bad | mismatch | !pending || now >= e->info.enroll_expires_ns) {
        rc = -EACCES;
        goto out;
    }
    if (e->info.last_key_id == UINT32_MAX) {
        rc = -EOVERFLOW; /* 4 billion keys: the log cap makes this unreachable */
        goto out;
    }
    req.rec.time_ns = now;
    req.rec.key_id = e->info.last_key_id + 1;
    rc = registry__submit(r, &req, e, info_out);
out:
    pthread_mutex_unlock(&r->commit_lock);
    sodium_memzero(presented, sizeof(presented));
    return rc;
}

/* revoke, quarantine, release: a state change with nothing but a time in its record. */
static int registry__change_state(stele_registry *r, const char *id, uint32_t type,
                                  stele_device_info *info_out)
{
    registry_request req;
    device_entry *e = NULL;
    int rc = 0;

    size_t id_len = id ? strnlen(id, STELE_DEVICE_ID_MAX + 1) : 0;
    if (!r || !stele_device_id_valid(id, id_len))
        return -EINVAL;
    request_init(&req, type, id, id_len);

    pthread_mutex_lock(&r->commit_lock);
    rc = registry__settle_known(r, id, id_len, &e);
    if (rc < 0)
        goto out;
    stele_device_state state = e->info.state;
    stele_device_state target = type == REGISTRY_RECORD_REVOKE       ? STELE_DEVICE_REVOKED
                                : type == REGISTRY_RECORD_QUARANTINE ? STELE_DEVICE_QUARANTINED
                                                                     : STELE_DEVICE_ACTIVE;
    if (state == target) {
        if (info_out)
            entry_snapshot(e, info_out); /* done already: nothing to write */
        goto out;
    }
    bool allowed = type == REGISTRY_RECORD_REVOKE       ? true
                   : type == REGISTRY_RECORD_QUARANTINE ? state == STELE_DEVICE_ACTIVE
                                                        : state == STELE_DEVICE_QUARANTINED;
    if (!allowed) {
        rc = -EPERM;
        goto out;
    }
    req.rec.time_ns = registry__now(r);
    rc = registry__submit(r, &req, e, info_out);
out:
    pthread_mutex_unlock(&r->commit_lock);
    return rc;
}

int stele_registry_revoke(stele_registry *r, const char *id, stele_device_info *info_out)
{
    return registry__change_state(r, id, REGISTRY_RECORD_REVOKE, info_out);
}

int stele_registry_quarantine(stele_registry *r, const char *id, stele_device_info *info_out)
{
    return registry__change_state(r, id, REGISTRY_RECORD_QUARANTINE, info_out);
}

int stele_registry_release(stele_registry *r, const char *id, stele_device_info *info_out)
{
    return registry__change_state(r, id, REGISTRY_RECORD_RELEASE, info_out);
}

int stele_registry_reenroll(stele_registry *r, const char *id, char *token_out, size_t token_cap,
                            stele_device_info *info_out)
{
    registry_request req;

    if (token_out && token_cap > 0)
        token_out[0] = '\0';
    size_t id_len = id ? strnlen(id, STELE_DEVICE_ID_MAX + 1) : 0;
    if (!r || !token_out || token_cap < STELE_ENROLL_TOKEN_LEN + 1 ||
        !stele_device_id_valid(id, id_len))
        return -EINVAL;
    request_init(&req, REGISTRY_RECORD_REENROLL, id, id_len);
    return registry__submit_with_token(r, &req, token_out, info_out);
}

static bool key_equal(const stele_device_key *k, uint8_t alg, const uint8_t public_key[32])
{
    return k->key_id != 0 && k->alg == alg &&
           memcmp(k->public_key, public_key, REGISTRY_PUBLIC_KEY_BYTES) == 0;
}

int stele_registry_rotate(stele_registry *r, const char *id, uint32_t old_key_id, uint8_t alg,
                          const uint8_t new_public_key[32], int64_t overlap_deadline_ns,
                          stele_device_info *info_out)
{
    registry_request req;
    device_entry *e = NULL;
    int rc = 0;

    size_t id_len = id ? strnlen(id, STELE_DEVICE_ID_MAX + 1) : 0;
    if (!r || !new_public_key || !stele_device_id_valid(id, id_len) ||
        alg != STELE_FRAME_ALG_ED25519 || !crypto_core_ed25519_is_valid_point(new_public_key))
        return -EINVAL;
    request_init(&req, REGISTRY_RECORD_ROTATE, id, id_len);
    req.rec.alg = alg;
    memcpy(req.rec.public_key, new_public_key, REGISTRY_PUBLIC_KEY_BYTES);
    req.rec.deadline_ns = overlap_deadline_ns;

    pthread_mutex_lock(&r->commit_lock);
    rc = registry__settle_known(r, id, id_len, &e);
    if (rc < 0)
        goto out;
    const stele_device_info *d = &e->info;
    if (d->state != STELE_DEVICE_ACTIVE && d->state != STELE_DEVICE_QUARANTINED) {
        rc = -EPERM;
        goto out;
    }
    /* A retried request: the same new key, still pending or already promoted. */
    if ((d->next.key_id != 0 && d->key.key_id == old_key_id &&
         key_equal(&d->next, alg, new_public_key)) ||
        (d->next.key_id == 0 && old_key_id < d->key.key_id &&
         key_equal(&d->key, alg, new_public_key))) {
        if (info_out)
            entry_snapshot(e, info_out);
        goto out;
    }
    if (d->next.key_id != 0 || d->key.key_id != old_key_id || old_key_id == 0 ||
        !(d->allowed_algs & (1u << alg))) {
        rc = -EPERM;
        goto out;
    }
    int64_t now = registry__now(r);
    if (overlap_deadline_ns <= now || key_equal(&d->key, alg, new_public_key)) {
        rc = -EINVAL;
        goto out;
    }
    if (d->last_key_id == UINT32_MAX) {
        rc = -EOVERFLOW; /* 4 billion keys: the log cap makes this unreachable */
        goto out;
    }
    req.rec.time_ns = now;
    req.rec.key_id = d->last_key_id + 1;
    rc = registry__submit(r, &req, e, info_out);
out:
    pthread_mutex_unlock(&r->commit_lock);
    return rc;
}

int stele_registry_promote_key(stele_registry *r, const char *id, uint32_t key_id)
{
    registry_request req;
    device_entry *e = NULL;
    int rc = 0;

    size_t id_len = id ? strnlen(id, STELE_DEVICE_ID_MAX + 1) : 0;
    if (!r || !stele_device_id_valid(id, id_len) || key_id == 0)
        return -EINVAL;
    request_init(&req, REGISTRY_RECORD_PROMOTE, id, id_len);
    req.rec.key_id = key_id;

    pthread_mutex_lock(&r->commit_lock);
    rc = registry__settle_known(r, id, id_len, &e);
    if (rc < 0)
        goto out;
    const stele_device_info *d = &e->info;
    if (d->key.key_id == key_id && d->next.key_id == 0)
        goto out; /* done already */
    if ((d->state != STELE_DEVICE_ACTIVE && d->state != STELE_DEVICE_QUARANTINED) ||
        d->next.key_id != key_id) {
        rc = -EPERM;
        goto out;
    }
    req.rec.time_ns = registry__now(r);
    rc = registry__submit(r, &req, e, NULL);
out:
    pthread_mutex_unlock(&r->commit_lock);
    return rc;
}

/* ---- lookups -------------------------------------------------------------------- */

void stele_registry_touch(stele_registry *r, const char *id, size_t id_len, int64_t seen_ns)
{
    if (!r || !id || id_len == 0 || id_len > STELE_DEVICE_ID_MAX)
        return;
    pthread_rwlock_rdlock(&r->table_lock);
    device_entry *e = table_find(r, id, id_len);
    if (e && e->visible) {
        int64_t seen = atomic_load_explicit(&e->last_seen_ns, memory_order_relaxed);
        while (seen < seen_ns &&
               !atomic_compare_exchange_weak_explicit(&e->last_seen_ns, &seen, seen_ns,
                                                      memory_order_relaxed, memory_order_relaxed)) {
        }
    }
    pthread_rwlock_unlock(&r->table_lock);
}

int stele_registry_get(stele_registry *r, const char *id, size_t id_len, stele_device_info *out)
{
    int rc = 0;
    if (!r || !out)
        return -EINVAL;
    if (!id || id_len == 0 || id_len > STELE_DEVICE_ID_MAX)
        return -ENOENT;
    pthread_rwlock_rdlock(&r->table_lock);
    device_entry *e = table_find(r, id, id_len);
    if (e && e->visible)
        entry_snapshot(e, out);
    else
        rc = -ENOENT;
    pthread_rwlock_unlock(&r->table_lock);
    return rc;
}

int stele_registry_list(stele_registry *r, const char *tenant, stele_registry_list_fn fn, void *ctx)
{
    stele_device_info *chunk = NULL;
    size_t next = 0;
    int rc = 0;

    if (!r || !fn)
        return -EINVAL;
    chunk = malloc(REGISTRY_LIST_CHUNK * sizeof(*chunk));
    if (!chunk)
        return -ENOMEM;
    /* Callbacks run on copies, without the lock, so one may call back into the registry
     * (even mutate it). `order` only grows, so an index resumes the walk. */
    for (;;) {
        size_t count = 0;
        pthread_rwlock_rdlock(&r->table_lock);
        while (next < r->order_count && count < REGISTRY_LIST_CHUNK) {
            device_entry *e = r->order[next++];
            if (!tenant || strcmp(e->info.tenant, tenant) == 0)
                entry_snapshot(e, &chunk[count++]);
        }
        bool more = next < r->order_count;
        pthread_rwlock_unlock(&r->table_lock);
        for (size_t i = 0; i < count && rc == 0; i++)
            rc = fn(ctx, &chunk[i]);
        if (rc != 0 || !more)
            break;
    }
    free(chunk);
    return rc;
}

void stele_registry_counts(stele_registry *r, uint64_t counts[STELE_DEVICE_STATES])
{
    if (!counts)
        return;
    memset(counts, 0, STELE_DEVICE_STATES * sizeof(counts[0]));
    if (!r)
        return;
    pthread_rwlock_rdlock(&r->table_lock);
    memcpy(counts, r->counts, sizeof(r->counts));
    pthread_rwlock_unlock(&r->table_lock);
}

int stele_registry_health(stele_registry *r)
{
    if (!r)
        return -EINVAL;
    pthread_mutex_lock(&r->commit_lock);
    int rc = r->failed;
    pthread_mutex_unlock(&r->commit_lock);
    return rc;
}

/* ---- open: replay ------------------------------------------------------------------- */

/* The replay callback (registry_log_record_fn): checks and applies one record. Runs
 * before the registry is shared, so it takes no lock. */
static const char *replay_record(void *ctx, const registry_record *rec, int *rc)
{
    stele_registry *r = ctx;
    device_entry *e = table_find(r, rec->id, rec->id_len);
    const char *why = registry__contradiction(r, e, rec);
    *rc = 0;
    if (why)
        return why;
    if (rec->type == REGISTRY_RECORD_ADD) {
        *rc = order_reserve(r, r->order_count + 1);
        if (*rc < 0)
            return "out of memory";
        e = calloc(1, sizeof(*e));
        if (!e) {
            *rc = -ENOMEM;
            return "out of memory";
        }
        memcpy(e->info.id, rec->id, rec->id_len);
        *rc =
            hashmap_put(&r->map, hashmap_hash(e->info.id, rec->id_len), e->info.id, rec->id_len, e);
        if (*rc < 0) {
            free(e);
            return "out of memory";
        }
    }
    registry__apply(r, e, rec);
    return NULL;
}

/* Lookups come from many threads all the time; glibc's default rwlock prefers readers, so
 * a steady stream of them could keep the writer of a batch (and every enrollment waiting
 * on it) out indefinitely. Writers first, then: no reader takes the lock recursively. */
static int table_lock_init(pthread_rwlock_t *lock)
{
#ifdef __GLIBC__
    pthread_rwlockattr_t attr;
    int rc = pthread_rwlockattr_init(&attr);
    if (rc == 0) {
        pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
        rc = pthread_rwlock_init(lock, &attr);
        pthread_rwlockattr_destroy(&attr);
    }
    return rc;
#else
    return pthread_rwlock_init(lock, NULL);
#endif
}

static void registry_free(stele_registry *r)
{
    for (size_t i = 0; i < r->map.cap; i++)
        free(r->map.slots[i].value); /* the map owns every entry */
    hashmap_free(&r->map);
    free(r->order);
    free(r->pending_buf);
    free(r->write_buf);
    free(r);
}

int stele_registry_open(stele_io *io, const char *data_dir, const stele_registry_options *o,
                        stele_registry **out, char *err, size_t errcap)
{
    stele_registry *r = NULL;
    char path[PATH_MAX];
    bool mutex_ready = false;
    bool cond_ready = false;
    bool rwlock_ready = false;
    uint64_t file_size = 0;
    uint64_t valid_end = 0;
    int rc = 0;

    if (err && errcap > 0)
        err[0] = '\0';
    if (out)
        *out = NULL;
    if (!io || !data_dir || !out || (o && o->enroll_ttl_ns <= 0))
        return -EINVAL;
    /* Idempotent and thread-safe; -1 only when no randomness source exists. */
    if (sodium_init() < 0)
        return -EIO;
    if ((size_t)snprintf(path, sizeof(path), "%s/%s", data_dir, REGISTRY_LOG_FILE_NAME) >=
        sizeof(path))
        return -ENAMETOOLONG;

    r = calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    r->io = io;
    if (o)
        r->opts = *o;
    else
        stele_registry_options_default(&r->opts);
    hashmap_init(&r->map);
    r->pending_tail = &r->pending_head;
    r->pending_buf = malloc(REGISTRY_BATCH_MAX_BYTES);
    r->write_buf = malloc(REGISTRY_BATCH_MAX_BYTES);
    if (!r->pending_buf || !r->write_buf) {
        rc = -ENOMEM;
        goto fail;
    }
    mutex_ready = pthread_mutex_init(&r->commit_lock, NULL) == 0;
    cond_ready = mutex_ready && pthread_cond_init(&r->commit_cond, NULL) == 0;
    rwlock_ready = cond_ready && table_lock_init(&r->table_lock) == 0;
    if (!rwlock_ready) {
        rc = -ENOMEM;
        goto fail;
    }

    rc = stele_io_exists(io, path);
    if (rc < 0)
        goto fail;
    if (rc == 0) {
        /* Created whole and renamed into place, so the header is never torn. */
        uint8_t header[REGISTRY_LOG_HEADER_SIZE];
        registry_log__header(header);
        rc = stele_io_write_file_atomic(io, data_dir, REGISTRY_LOG_FILE_NAME, header,
                                        sizeof(header));
        if (rc < 0)
            goto fail;
    }
    rc = stele_io_open(io, path, STELE_IO_READWRITE, &r->log);
    if (rc == 0)
        rc = stele_io_size(r->log, &file_size);
    if (rc < 0)
        goto fail;
    if (file_size > REGISTRY_MAX_FILE_SIZE) {
        if (err && errcap > 0)
            snprintf(err, errcap,
                     "%s: %" PRIu64 " bytes, more than the %" PRIu64 " a registry log "
                     "may hold",
                     path, file_size, REGISTRY_MAX_FILE_SIZE);
        rc = -EFBIG;
        goto fail;
    }
    rc = registry_log__replay(r->log, path, file_size, replay_record, r, &valid_end, err, errcap);
    if (rc < 0)
        goto fail;
    if (valid_end < file_size) {
        /* Torn tail: the batch it belonged to never returned, so nobody was told. */
        rc = stele_io_truncate(r->log, valid_end);
        if (rc == 0)
            rc = stele_io_fsync(r->log);
        if (rc < 0)
            goto fail;
    }
    r->log_end = valid_end;
    r->pending_offset = valid_end;
    *out = r; /* now belongs to the caller */
    return 0;

fail:
    if (rc < 0 && err && errcap > 0 && err[0] == '\0')
        snprintf(err, errcap, "%s: %s", path, strerror(-rc));
    stele_io_close(r->log);
    if (rwlock_ready)
        pthread_rwlock_destroy(&r->table_lock);
    if (cond_ready)
        pthread_cond_destroy(&r->commit_cond);
    if (mutex_ready)
        pthread_mutex_destroy(&r->commit_lock);
    registry_free(r);
    return rc;
}

void stele_registry_close(stele_registry *r)
{
    if (!r)
        return;
    stele_io_close(r->log);
    pthread_rwlock_destroy(&r->table_lock);
    pthread_cond_destroy(&r->commit_cond);
    pthread_mutex_destroy(&r->commit_lock);
    registry_free(r);
}
