/*
 * replay.c — the anti-replay window (see stele/replay.h): a bitmap of the last `size`
 * counters below and including the highest accepted one, shifted when a higher counter
 * is accepted. Constant time per frame and 144 bytes per (device, key).
 */
#include "stele/replay.h"

#include <string.h>

void stele_replay_init(stele_replay_window *w, uint32_t size)
{
    memset(w, 0, sizeof(*w));
    if (size == 0)
        size = STELE_REPLAY_DEFAULT_WINDOW;
    if (size > STELE_REPLAY_MAX_WINDOW)
        size = STELE_REPLAY_MAX_WINDOW;
    w->size = (size + 63) / 64 * 64;
}

static bool bit_get(const stele_replay_window *w, uint64_t i)
{
    return (w->seen[i / 64] >> (i % 64)) & 1;
}

stele_replay_verdict stele_replay_check(const stele_replay_window *w, uint64_t counter)
{
    if (!w->any || counter > w->top)
        return STELE_REPLAY_NEW;
    uint64_t behind = w->top - counter;
    if (behind >= w->size)
        return STELE_REPLAY_STALE;
    return bit_get(w, behind) ? STELE_REPLAY_DUPLICATE : STELE_REPLAY_NEW;
}

/* Moves the window up by `by` counters: bit i becomes bit i + by. */
static void shift_up(stele_replay_window *w, uint64_t by)
{
    size_t words = w->size / 64;
    if (by >= w->size) {
        memset(w->seen, 0, sizeof(w->seen));
        return;
    }
    size_t wshift = (size_t)(by / 64), bshift = (size_t)(by % 64);
    for (size_t i = words; i-- > 0;) {
        uint64_t v = 0;
        if (i >= wshift) {
            v = w->seen[i - wshift] << bshift;
            if (bshift && i > wshift)
                v |= w->seen[i - wshift - 1] >> (64 - bshift);
        }
        w->seen[i] = v;
    }
}

stele_replay_verdict stele_replay_accept(stele_replay_window *w, uint64_t counter)
{
    stele_replay_verdict v = stele_replay_check(w, counter);
    if (v != STELE_REPLAY_NEW)
        return v;
    if (!w->any) {
        w->any = true;
        w->top = counter;
        memset(w->seen, 0, sizeof(w->seen));
    } else if (counter > w->top) {
        shift_up(w, counter - w->top);
        w->top = counter;
    }
    uint64_t behind = w->top - counter;
    w->seen[behind / 64] |= UINT64_C(1) << (behind % 64);
    return STELE_REPLAY_NEW;
}
