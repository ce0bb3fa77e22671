/*
 * test_device_counter.c — libstele-device's counter store (stele/device.h) on the
 * fault-injecting file system: random power cuts (dropped, torn and garbage writes) and
 * I/O errors at any moment while counters are handed out; after every cut the store is
 * reopened and must never hand out a counter that was handed out before. A refusal to
 * open (-EBADMSG) is allowed only while no reservation of the current key ever became
 * durable (the first one torn); the test then moves to a "new key", as a device must.
 * Seeds: STELE_TEST_SEED fixes the first; failures print it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "stele/device.h"
#include "stele/io.h"

#include "test_util.h"

static void erase(stele_io *io)
{
    stele_io_unlink(io, "dev/counter.0");
    stele_io_unlink(io, "dev/counter.1");
    stele_io_fsync_dir(io, "dev");
}

static void run_seed(uint64_t seed, int *refusals)
{
    uint64_t rng = seed;
    stele_io *io;
    assert_int_equal(stele_io_fault_create(seed, &io), 0);
    assert_int_equal(stele_io_mkdir_durable(io, "dev"), 0);
    test_slot_files s = {.io = io, .dir = "dev", .name = "counter"};
    stele_counter_storage st = {.read = test_slot_read, .write = test_slot_write, .ctx = &s};
    uint64_t max_handed = 0; /* of the current key */
    int key = 0;
    uint32_t block = (uint32_t)(1 + test_rng_next(&rng) % 64);
    for (int cycle = 0; cycle < 60; cycle++) {
        stele_counter c;
        int rc = stele_counter_open(&c, &st, block);
        if (rc == -EBADMSG) {
            if (max_handed != 0)
                fail_msg("seed %" PRIu64 " cycle %d: open refused after counters up to %" PRIu64
                         " were handed out under a durable reservation",
                         seed, cycle, max_handed);
            (*refusals)++;
            key++; /* a new key: a new window; the store starts again */
            erase(io);
            assert_int_equal(stele_counter_open(&c, &st, block), 0);
        } else {
            assert_int_equal(rc, 0);
        }
        if (test_rng_next(&rng) % 3 == 0)
            stele_io_fault_fail_after(
                io, test_rng_next(&rng) % 2 ? STELE_FAULT_OP_WRITE : STELE_FAULT_OP_FSYNC,
                1 + test_rng_next(&rng) % 6, test_rng_next(&rng) % 2 ? EIO : ENOSPC);
        int n = (int)(test_rng_next(&rng) % 200);
        for (int i = 0; i < n; i++) {
            uint64_t v;
            if (stele_counter_next(&c, &v) != 0)
                break; /* the device stops at a storage error */
            if (v <= max_handed)
                fail_msg("seed %" PRIu64 " cycle %d key %d: counter %" PRIu64
                         " handed out again (highest before: %" PRIu64 ")",
                         seed, cycle, key, v, max_handed);
            max_handed = v;
        }
        stele_io_fault_power_cut(io, (enum stele_fault_cut_mode)(test_rng_next(&rng) % 3));
    }
    stele_io_destroy(io);
}

static void test_never_repeats_across_power_loss(void **state)
{
    (void)state;
    const char *env = getenv("STELE_TEST_SEED");
    uint64_t seed = env ? strtoull(env, NULL, 10) : (uint64_t)time(NULL);
    int refusals = 0;
    for (int i = 0; i < 300; i++)
        run_seed(seed + (uint64_t)i, &refusals);
    printf("counter store: 300 seeds x 60 power cuts, %d refusals after a torn first record\n",
           refusals);
}

static int fail_write(void *ctx, int slot, const uint8_t *buf, size_t len)
{
    (void)ctx, (void)slot, (void)buf, (void)len;
    return -EIO;
}

static int empty_read(void *ctx, int slot, uint8_t *buf, size_t len)
{
    (void)ctx, (void)slot, (void)buf, (void)len;
    return -ENOENT;
}

static int eio_read(void *ctx, int slot, uint8_t *buf, size_t len)
{
    (void)ctx, (void)buf, (void)len;
    return slot == 1 ? -EIO : -ENOENT;
}

/* A slot that cannot be read is not an empty slot: it may hold the newest reservation,
 * and starting below it would repeat counters. */
static void test_unreadable_slot_fails_the_open(void **state)
{
    (void)state;
    stele_counter_storage st = {.read = eio_read, .write = fail_write};
    stele_counter c;
    assert_int_equal(stele_counter_open(&c, &st, 16), -EIO);
}

static void test_nothing_handed_out_without_a_durable_reservation(void **state)
{
    (void)state;
    stele_counter_storage st = {.read = empty_read, .write = fail_write};
    stele_counter c;
    assert_int_equal(stele_counter_open(&c, &st, 16), 0);
    uint64_t v = 0;
    assert_int_equal(stele_counter_next(&c, &v), -EIO);
    assert_int_equal(v, 0);
}

static int garbage_read(void *ctx, int slot, uint8_t *buf, size_t len)
{
    (void)ctx;
    if (slot == 1)
        return -ENOENT;
    for (size_t i = 0; i < len; i++)
        buf[i] = (uint8_t)(i * 7 + 1);
    return 0;
}

static void test_damaged_store_fails_closed(void **state)
{
    (void)state;
    /* One slot damaged, none valid: counters may have been used — refuse, never restart
     * at 1 behind the device's back. */
    stele_counter_storage st = {.read = garbage_read, .write = fail_write};
    stele_counter c;
    assert_int_equal(stele_counter_open(&c, &st, 16), -EBADMSG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_never_repeats_across_power_loss),
        cmocka_unit_test(test_nothing_handed_out_without_a_durable_reservation),
        cmocka_unit_test(test_unreadable_slot_fails_the_open),
        cmocka_unit_test(test_damaged_store_fails_closed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
