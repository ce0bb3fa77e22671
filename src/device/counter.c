/*
 * counter.c — counters that never repeat across power loss (see stele/device.h).
 *
 * RECORD (40 bytes, little-endian), in slot 0 or 1:
 *   0   4  magic "STCN"
 *   4   4  version (1)
 *   8   8  generation (the newer record has the higher one)
 *   16  8  reserved_until: every counter handed out is below it
 *   24  16 BLAKE2b-128 of bytes 0..24
 *
 * Protocol: on open, the valid record with the highest generation gives R; counters
 * from R on may be handed out only after a record with reserved_until = R + block is
 * durable in the *other* slot (a torn write there leaves the current one valid). So a
 * power cut at any moment leaves a durable record whose reserved_until is above every
 * counter handed out, and the next boot starts from there.
 */
#include "stele/device.h"

#include <errno.h>
#include <stdbool.h>
#include <sodium.h>
#include <string.h>

#include "common/bytes.h"

#define COUNTER_MAGIC "STCN"
#define COUNTER_VERSION 1u
#define COUNTER_DEFAULT_BLOCK 1024u

static void record_hash(const uint8_t *rec, uint8_t out[16])
{
    crypto_generichash(out, 16, rec, 24, NULL, 0);
}

/* Parses a slot: 0 and the generation and reservation when it holds a valid record. */
static int record_load(const stele_counter_storage *st, int slot, uint64_t *gen, uint64_t *until)
{
    uint8_t rec[STELE_COUNTER_RECORD_BYTES], h[16];
    int rc = st->read(st->ctx, slot, rec, sizeof(rec));
    if (rc == -ENOENT || rc == -EBADMSG)
        return rc; /* empty, or torn/damaged: both judged below */
    if (rc)
        return rc < 0 ? rc : -EIO; /* unreadable is not empty: counters could repeat */
    record_hash(rec, h);
    if (memcmp(rec, COUNTER_MAGIC, 4) != 0 || get_le32(rec + 4) != COUNTER_VERSION ||
        sodium_memcmp(h, rec + 24, 16) != 0)
        return -EBADMSG;
    *gen = get_le64(rec + 8);
    *until = get_le64(rec + 16);
    return 0;
}

/* Makes a reservation up to `until` durable in the slot the newest record is not in. */
static int reserve(stele_counter *c, uint64_t until)
{
    uint8_t rec[STELE_COUNTER_RECORD_BYTES];
    int slot = c->slot == 0 ? 1 : 0;
    memcpy(rec, COUNTER_MAGIC, 4);
    put_le32(rec + 4, COUNTER_VERSION);
    put_le64(rec + 8, c->generation + 1);
    put_le64(rec + 16, until);
    record_hash(rec, rec + 24);
    int rc = c->storage.write(c->storage.ctx, slot, rec, sizeof(rec));
    if (rc)
        return rc < 0 ? rc : -EIO;
    c->generation++;
    c->reserved_until = until;
    c->slot = slot;
    return 0;
}

int stele_counter_open(stele_counter *c, const stele_counter_storage *storage, uint32_t block)
{
    memset(c, 0, sizeof(*c));
    c->storage = *storage;
    c->block = block ? block : COUNTER_DEFAULT_BLOCK;
    c->slot = -1;
    c->next = 1;
    bool damaged = false;
    for (int s = 0; s < 2; s++) {
        uint64_t gen, until;
        int rc = record_load(storage, s, &gen, &until);
        damaged = damaged || rc == -EBADMSG;
        if (rc && rc != -ENOENT && rc != -EBADMSG)
            return rc;
        if (rc)
            continue;
        if (c->slot < 0 || gen > c->generation) {
            c->slot = s;
            c->generation = gen;
            c->reserved_until = until;
        }
    }
    /* A damaged slot and no valid one: either the very first reservation was torn, or
     * the storage lost a record — which cannot be told apart, and restarting at 1 could
     * repeat counters. Fail closed: the device must take a new key (rotation or
     * re-enrollment: a new key id starts a new window) and then erase the store. */
    if (c->slot < 0 && damaged)
        return -EBADMSG;
    /* Everything below the durable reservation may have been handed out already. */
    if (c->slot >= 0)
        c->next = c->reserved_until;
    else
        c->reserved_until = c->next; /* nothing reserved: reserve before the first */
    return 0;
}

int stele_counter_next(stele_counter *c, uint64_t *out)
{
    if (c->next >= c->reserved_until) {
        if (c->next > UINT64_MAX - c->block)
            return -EOVERFLOW;
        int rc = reserve(c, c->next + c->block);
        if (rc)
            return rc;
    }
    *out = c->next++;
    return 0;
}
