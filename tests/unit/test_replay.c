/*
 * test_replay.c — the anti-replay window (stele/replay.h) against a plain model, on
 * random streams with duplicates, reorderings within and beyond the window, gaps, huge
 * jumps and restarts (the window rebuilt by replaying the accepted counters in log
 * order, as recovery does): every verdict must equal the model's, no counter may ever be
 * accepted twice, and a rebuilt window must answer exactly like the live one.
 *
 * Model: the set of accepted counters and the highest one; c is new if nothing was
 * accepted, c is above the highest, or c lies within `size` below it and is not in the
 * set; in the set (within the window) it is a duplicate; further below, stale.
 * Seeds: STELE_TEST_SEED fixes the first; failures print it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "stele/replay.h"

#include "test_util.h"

#define SPACE 200000 /* counters of a stream stay below this (model bitmap) */
#define LOG_MAX 400000

typedef struct {
    uint8_t *accepted; /* SPACE flags */
    uint64_t top;
    int any;
    uint32_t size;
} model;

static stele_replay_verdict model_check(const model *m, uint64_t c)
{
    if (!m->any || c > m->top)
        return STELE_REPLAY_NEW;
    if (m->top - c >= m->size)
        return STELE_REPLAY_STALE;
    return m->accepted[c] ? STELE_REPLAY_DUPLICATE : STELE_REPLAY_NEW;
}

static void model_accept(model *m, uint64_t c)
{
    m->accepted[c] = 1;
    if (!m->any || c > m->top)
        m->top = c;
    m->any = 1;
}

static void run_stream(uint64_t seed, uint32_t size_asked)
{
    uint64_t rng = seed;
    stele_replay_window w;
    stele_replay_init(&w, size_asked);
    model m = {.accepted = calloc(SPACE, 1), .size = w.size};
    uint64_t *log = malloc(LOG_MAX * sizeof(*log)); /* accepted counters, in order */
    size_t nlog = 0;
    uint64_t next = 1 + test_rng_next(&rng) % 5;
    for (int i = 0; i < 20000 && next < SPACE - 5000; i++) {
        uint64_t c, r = test_rng_next(&rng) % 100;
        if (r < 55) {
            c = next; /* in order, sometimes skipping (a lost frame) */
            next += 1 + (test_rng_next(&rng) % 10 == 0 ? test_rng_next(&rng) % 50 : 0);
        } else if (r < 70) {
            /* a duplicate or late frame within the window */
            uint64_t back = test_rng_next(&rng) % (w.size + 1);
            c = next > back ? next - back : 1;
        } else if (r < 80) {
            /* late beyond the window */
            uint64_t back = w.size + test_rng_next(&rng) % (3 * w.size);
            c = next > back ? next - back : 0;
        } else if (r < 85) {
            /* a jump ahead (a device that skipped a reservation after power loss) */
            next += test_rng_next(&rng) % (2 * w.size);
            c = next++;
        } else if (r < 95) {
            /* exactly at the window's edges */
            uint64_t top = w.any ? w.top : next;
            c = test_rng_next(&rng) % 2 ? top - (top >= w.size ? w.size - 1 : 0)
                                        : (top >= w.size ? top - w.size : 0);
        } else {
            /* restart: rebuild from the accepted log, as recovery does */
            stele_replay_window re;
            stele_replay_init(&re, size_asked);
            for (size_t k = 0; k < nlog; k++)
                stele_replay_accept(&re, log[k]);
            if (re.any != w.any || (w.any && re.top != w.top) ||
                memcmp(re.seen, w.seen, sizeof(w.seen)) != 0)
                fail_msg("seed %" PRIu64 " size %u step %d: rebuilt window differs", seed, w.size,
                         i);
            w = re;
            continue;
        }
        if (c >= SPACE)
            continue;
        stele_replay_verdict want = model_check(&m, c), got = stele_replay_check(&w, c);
        if (got != want)
            fail_msg("seed %" PRIu64 " size %u step %d: counter %" PRIu64 " (top %" PRIu64
                     "): verdict %d, model says %d",
                     seed, w.size, i, c, m.top, got, want);
        if (got == STELE_REPLAY_NEW) {
            if (m.accepted[c])
                fail_msg("seed %" PRIu64 ": counter %" PRIu64 " accepted twice", seed, c);
            assert_int_equal(stele_replay_accept(&w, c), STELE_REPLAY_NEW);
            model_accept(&m, c);
            assert_true(nlog < LOG_MAX);
            log[nlog++] = c;
        } else {
            /* accept refuses what check refused: nothing changes */
            stele_replay_window before = w;
            assert_int_equal(stele_replay_accept(&w, c), got);
            assert_memory_equal(&before, &w, sizeof(w));
        }
    }
    /* The rebuilt window, in another order (reversed), answers the same: the state
     * depends on the accepted set only. */
    stele_replay_window rev;
    stele_replay_init(&rev, size_asked);
    for (size_t k = nlog; k-- > 0;)
        stele_replay_accept(&rev, log[k]);
    for (uint64_t c = 0; c < next + 10 && c < SPACE; c++)
        if (stele_replay_check(&rev, c) != stele_replay_check(&w, c))
            fail_msg("seed %" PRIu64 ": reversed rebuild differs at %" PRIu64, seed, c);
    free(log);
    free(m.accepted);
}

static uint64_t first_seed(void)
{
    const char *env = getenv("STELE_TEST_SEED");
    return env ? strtoull(env, NULL, 10) : (uint64_t)time(NULL);
}

static void test_random_streams(void **state)
{
    (void)state;
    uint64_t seed = first_seed();
    static const uint32_t sizes[] = {64, 100, 1024, 0};
    for (int s = 0; s < 40; s++)
        run_stream(seed + (uint64_t)s, sizes[s % 4]);
}

static void test_edges(void **state)
{
    (void)state;
    stele_replay_window w;
    stele_replay_init(&w, 0);
    assert_int_equal(w.size, STELE_REPLAY_DEFAULT_WINDOW);
    assert_int_equal(stele_replay_check(&w, 0), STELE_REPLAY_NEW);
    assert_int_equal(stele_replay_accept(&w, 0), STELE_REPLAY_NEW);
    assert_int_equal(stele_replay_check(&w, 0), STELE_REPLAY_DUPLICATE);
    assert_int_equal(stele_replay_accept(&w, UINT64_MAX), STELE_REPLAY_NEW);
    assert_int_equal(stele_replay_check(&w, 0), STELE_REPLAY_STALE);
    assert_int_equal(stele_replay_check(&w, UINT64_MAX), STELE_REPLAY_DUPLICATE);
    assert_int_equal(stele_replay_check(&w, UINT64_MAX - 1023), STELE_REPLAY_NEW);
    assert_int_equal(stele_replay_check(&w, UINT64_MAX - 1024), STELE_REPLAY_STALE);
    /* A shift of exactly one word and of a non-multiple keeps the right bits. */
    stele_replay_init(&w, 256);
    for (uint64_t c = 1000; c < 1200; c += 3)
        stele_replay_accept(&w, c);
    stele_replay_accept(&w, 1200 + 64);
    stele_replay_accept(&w, 1200 + 64 + 7);
    for (uint64_t c = 1000; c < 1200; c++) {
        stele_replay_verdict want = 1271 - c >= 256       ? STELE_REPLAY_STALE
                                    : (c - 1000) % 3 == 0 ? STELE_REPLAY_DUPLICATE
                                                          : STELE_REPLAY_NEW;
        assert_int_equal(stele_replay_check(&w, c), want);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_streams),
        cmocka_unit_test(test_edges),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
