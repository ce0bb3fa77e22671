/*
 * replay.h — the anti-replay window of one (device, key) (SPEC §6; RFC 4303 §3.4.3
 * style): a frame's 64-bit counter is new if it is above the highest accepted, or inside
 * the window below it and not seen yet; seen before, it is a duplicate (answered as a
 * success, changing nothing); below the window, stale.
 *
 * Checking and accepting are separate: the server checks, verifies the signature, makes
 * the frame durable together with its counter, and only then accepts — the caller holds
 * the device's lock from check to accept, so two copies of one frame in flight cannot
 * both be new. The state after accepting a set of counters does not depend on the order
 * they were accepted in (a counter that has fallen below the window is refused as stale
 * whatever the order), so replaying the log's accepted counters in log order rebuilds
 * exactly the window that was acknowledged.
 */
#ifndef STELE_REPLAY_H
#define STELE_REPLAY_H

#include <stdbool.h>
#include <stdint.h>

#define STELE_REPLAY_MAX_WINDOW 1024
#define STELE_REPLAY_DEFAULT_WINDOW 1024

typedef struct {
    uint64_t top;  /* highest accepted counter (valid when any) */
    bool any;      /* a counter was accepted */
    uint32_t size; /* window size, 64..STELE_REPLAY_MAX_WINDOW, a multiple of 64 */
    /* bit i: counter top − i accepted (bit 0 is top itself) */
    uint64_t seen[STELE_REPLAY_MAX_WINDOW / 64];
} stele_replay_window;

typedef enum {
    STELE_REPLAY_NEW = 0,
    STELE_REPLAY_DUPLICATE = 1,
    STELE_REPLAY_STALE = 2,
} stele_replay_verdict;

/* An empty window of `size` counters (rounded up to a multiple of 64, capped at the max;
 * 0 means the default). */
void stele_replay_init(stele_replay_window *w, uint32_t size);
/* What a frame with this counter would be; changes nothing. */
stele_replay_verdict stele_replay_check(const stele_replay_window *w, uint64_t counter);
/* Records the counter as accepted (call only for a NEW verdict, once durable); returns
 * the verdict it had. */
stele_replay_verdict stele_replay_accept(stele_replay_window *w, uint64_t counter);

#endif
