/*
 * sealed_rejects.c — summaries of refused frames for the audit trail (SPEC §7: floods of
 * rejected frames are summarised per device, per reason, per interval, so an attacker
 * cannot grow the log without bound).
 *
 * A fixed table of SEALED_REJECT_SLOTS (device as claimed, reason) counters with an
 * open-addressing index; once it is full, refusals of devices not in it are counted
 * under device "*". Memory is fixed whatever arrives; the audit writer drains it
 * periodically with stele_sealed_take_rejections, which starts new intervals.
 */
#include <string.h>

#include "common/hashmap.h"
#include "ingest/sealed_internal.h"

void sealed_rejects_init(sealed_rejects *r)
{
    memset(r, 0, sizeof(*r));
    pthread_mutex_init(&r->mu, NULL);
}

void sealed_rejects_free(sealed_rejects *r)
{
    pthread_mutex_destroy(&r->mu);
}

#define INDEX_MASK (2 * SEALED_REJECT_SLOTS - 1)

static size_t reject_hash(const char *device, size_t len, stele_frame_status status)
{
    return (size_t)(hashmap_hash(device, len) ^ ((uint64_t)status * 0x9e3779b97f4a7c15ull));
}

static void count(sealed_reject *e, int64_t now)
{
    if (e->count == 0 || now < e->start_ns)
        e->start_ns = now;
    if (e->count == 0 || now >= e->end_ns)
        e->end_ns = now + 1; /* the interval is [start, end) */
    e->count++;
}

void sealed_rejects_note(sealed_rejects *r, const char *device, size_t len,
                         stele_frame_status status, int64_t now)
{
    if (len > STELE_DEVICE_ID_MAX)
        len = STELE_DEVICE_ID_MAX;
    pthread_mutex_lock(&r->mu);
    size_t h = reject_hash(device, len, status) & INDEX_MASK;
    for (;; h = (h + 1) & INDEX_MASK) {
        uint16_t at = r->index[h];
        if (at == 0)
            break;
        sealed_reject *e = &r->slots[at - 1];
        if (e->status == status && strlen(e->device) == len && !memcmp(e->device, device, len)) {
            count(e, now);
            goto out;
        }
    }
    if (r->n == SEALED_REJECT_SLOTS) {
        sealed_reject *e = &r->overflow[status];
        memcpy(e->device, "*", 2);
        e->status = status;
        count(e, now);
        goto out;
    }
    sealed_reject *e = &r->slots[r->n];
    memset(e, 0, sizeof(*e));
    memcpy(e->device, device, len);
    e->status = status;
    count(e, now);
    r->index[h] = (uint16_t)(++r->n);
out:
    pthread_mutex_unlock(&r->mu);
}

size_t sealed_rejects_take(sealed_rejects *r, stele_reject_summary *out, size_t cap)
{
    size_t k = 0;
    pthread_mutex_lock(&r->mu);
    size_t take = r->n < cap ? r->n : cap;
    for (; k < take; k++) {
        const sealed_reject *e = &r->slots[k];
        memcpy(out[k].device, e->device, sizeof(out[k].device));
        out[k].status = e->status;
        out[k].count = e->count;
        out[k].start_ns = e->start_ns;
        out[k].end_ns = e->end_ns;
    }
    for (int st = 0; st < STELE_FRAME_STATUSES && k < cap; st++) {
        sealed_reject *e = &r->overflow[st];
        if (e->count == 0)
            continue;
        memcpy(out[k].device, e->device, sizeof(out[k].device));
        out[k].status = e->status;
        out[k].count = e->count;
        out[k].start_ns = e->start_ns;
        out[k].end_ns = e->end_ns;
        memset(e, 0, sizeof(*e));
        k++;
    }
    if (take) {
        /* Keep the rest, re-indexed. */
        memmove(r->slots, r->slots + take, (r->n - take) * sizeof(r->slots[0]));
        r->n -= take;
        memset(r->index, 0, sizeof(r->index));
        for (size_t i = 0; i < r->n; i++) {
            const sealed_reject *e = &r->slots[i];
            size_t h = reject_hash(e->device, strlen(e->device), e->status) & INDEX_MASK;
            while (r->index[h])
                h = (h + 1) & INDEX_MASK;
            r->index[h] = (uint16_t)(i + 1);
        }
    }
    pthread_mutex_unlock(&r->mu);
    return k;
}
