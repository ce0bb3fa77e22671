/*
 * source_limit.c — a failure budget per client address for the unauthenticated device
 * endpoints (SPEC §3: "cheap checks and per-source rate limits come before any crypto").
 *
 * Enrollment and frames carry no API token: the device's key authenticates them, which
 * costs a signature check (~90 µs). A source that keeps sending frames that fail
 * (malformed, bad signature, unknown device) or guessing enrollment tokens would
 * otherwise buy that CPU for free. Each failure spends from a token bucket of the
 * source; an empty bucket answers 429 before anything is parsed or verified. Successes
 * cost nothing, so a gateway relaying thousands of healthy devices is never slowed.
 *
 * Memory is fixed whatever an attacker does: a direct-mapped table of SOURCE_SLOTS
 * entries indexed by a keyed hash of the address (a random key per process, so nobody
 * can aim collisions). A slot holding a recovered (full) bucket is taken over by a new
 * address; a slot whose bucket is in debt is shared — the newcomer is held to it, which
 * errs on the side of refusing.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "server/server_internal.h"

/* 4096 sources × 40 bytes: 160 KiB, more distinct misbehaving sources than one node
 * sees outside a DDoS (which a front proxy must absorb anyway). */
#define SOURCE_SLOTS 4096

typedef struct {
    uint8_t addr[16];
    bool used;
    double tokens;
    int64_t last_ns;
} source_slot;

struct source_limiter {
    pthread_mutex_t mu;
    double rate, burst;
    uint8_t hash_key[crypto_shorthash_KEYBYTES];
    source_slot slots[SOURCE_SLOTS];
};

int source_limiter_create(double failures_per_second, double burst, source_limiter **out)
{
    source_limiter *l = calloc(1, sizeof(*l));
    if (!l)
        return -ENOMEM;
    pthread_mutex_init(&l->mu, NULL);
    l->rate = failures_per_second > 0 ? failures_per_second : 20;
    l->burst = burst > 0 ? burst : 10 * l->rate;
    randombytes_buf(l->hash_key, sizeof(l->hash_key));
    *out = l;
    return 0;
}

void source_limiter_destroy(source_limiter *l)
{
    if (!l)
        return;
    pthread_mutex_destroy(&l->mu);
    free(l);
}

/* The client address as 16 bytes (IPv4 mapped into IPv6 form); false if unknown. */
static bool source_address(struct MHD_Connection *c, uint8_t addr[16])
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (!ci || !ci->client_addr)
        return false;
    memset(addr, 0, 16);
    if (ci->client_addr->sa_family == AF_INET) {
        const struct sockaddr_in *a4 = (const struct sockaddr_in *)ci->client_addr;
        addr[10] = addr[11] = 0xff;
        memcpy(addr + 12, &a4->sin_addr, 4);
        return true;
    }
    if (ci->client_addr->sa_family == AF_INET6) {
        const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)ci->client_addr;
        memcpy(addr, &a6->sin6_addr, 16);
        return true;
    }
    return false;
}

/* The slot of addr, refilled to now; mu held. */
static source_slot *slot_for(source_limiter *l, const uint8_t addr[16], int64_t now_ns)
{
    uint8_t h[crypto_shorthash_BYTES];
    crypto_shorthash(h, addr, 16, l->hash_key);
    uint64_t v;
    memcpy(&v, h, sizeof(v));
    source_slot *s = &l->slots[v % SOURCE_SLOTS];
    if (s->used && s->last_ns && now_ns > s->last_ns) {
        s->tokens += (double)(now_ns - s->last_ns) * 1e-9 * l->rate;
        if (s->tokens > l->burst)
            s->tokens = l->burst;
    }
    if (!s->used || (memcmp(s->addr, addr, 16) != 0 && s->tokens >= l->burst)) {
        memcpy(s->addr, addr, 16);
        s->used = true;
        s->tokens = l->burst;
    }
    s->last_ns = now_ns;
    return s;
}

bool source_limiter_allow(source_limiter *l, struct MHD_Connection *c, int64_t now_ns)
{
    uint8_t addr[16];
    if (!l || !source_address(c, addr))
        return true;
    pthread_mutex_lock(&l->mu);
    bool ok = slot_for(l, addr, now_ns)->tokens > 0;
    pthread_mutex_unlock(&l->mu);
    return ok;
}

void source_limiter_charge(source_limiter *l, struct MHD_Connection *c, double failures,
                           int64_t now_ns)
{
    uint8_t addr[16];
    if (!l || failures <= 0 || !source_address(c, addr))
        return;
    pthread_mutex_lock(&l->mu);
    source_slot *s = slot_for(l, addr, now_ns);
    s->tokens -= failures;
    /* Debt is capped at one burst: a source that stops misbehaving recovers in bounded
     * time. */
    if (s->tokens < -l->burst)
        s->tokens = -l->burst;
    pthread_mutex_unlock(&l->mu);
}
