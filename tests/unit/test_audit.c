/*
 * test_audit.c — the audit trail (stele/audit.h): a trail written by the server verifies;
 * any edited byte, deleted record, swapped pair of records, cut-off tail (mid-record or
 * at a record boundary) or foreign head is detected by stele_audit_verify, and the server
 * refuses to append to it; the crash windows (torn last record, record durable but head
 * not) recover without losing an acknowledged event; bad fields are refused.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stele/audit.h"
#include "stele/io.h"

typedef struct {
    int problems;
    int events;
    char last[256];
} verdict;

static void on_problem(void *ctx, const char *what)
{
    verdict *v = ctx;
    v->problems++;
    snprintf(v->last, sizeof(v->last), "%s", what);
}

static int on_event(void *ctx, const stele_audit_event *e)
{
    verdict *v = ctx;
    v->events++;
    assert_int_equal(e->seq, (uint64_t)v->events);
    return 0;
}

static uint8_t pk[32], sk[64];

static stele_io *fresh_trail(int events)
{
    stele_io *io;
    assert_int_equal(stele_io_fault_create(5, &io), 0);
    stele_audit *a;
    char err[256];
    assert_int_equal(stele_audit_open(io, "audit", sk, &a, err, sizeof(err)), 0);
    for (int i = 0; i < events; i++) {
        char subject[32];
        snprintf(subject, sizeof(subject), "device-%d", i);
        assert_int_equal(
            stele_audit_append(a, "admin", "device.revoke", subject, "ok", "reason=lost", NULL), 0);
    }
    stele_audit_close(a);
    return io;
}

static int verify(stele_io *io, verdict *v)
{
    memset(v, 0, sizeof(*v));
    return stele_audit_verify(io, "audit", pk, on_problem, on_event, v);
}

static size_t load(stele_io *io, const char *path, uint8_t *buf, size_t cap)
{
    stele_file *f;
    uint64_t size;
    assert_int_equal(stele_io_open(io, path, STELE_IO_READ, &f), 0);
    assert_int_equal(stele_io_size(f, &size), 0);
    assert_true(size <= cap);
    assert_int_equal(stele_io_pread_full(f, buf, size, 0), 0);
    stele_io_close(f);
    return size;
}

static void store(stele_io *io, const char *path, const uint8_t *buf, size_t len)
{
    stele_file *f;
    assert_int_equal(
        stele_io_open(io, path, STELE_IO_READWRITE | STELE_IO_CREATE | STELE_IO_TRUNCATE, &f), 0);
    if (len)
        assert_int_equal(stele_io_pwrite(f, buf, len, 0), 0);
    assert_int_equal(stele_io_fsync(f), 0);
    stele_io_close(f);
}

static void assert_refused(stele_io *io, const char *what)
{
    verdict v;
    int n = verify(io, &v);
    if (n <= 0)
        fail_msg("%s: not detected", what);
    stele_audit *a = NULL;
    char err[512] = "";
    assert_int_equal(stele_audit_open(io, "audit", sk, &a, err, sizeof(err)), -EBADMSG);
    assert_true(err[0] != '\0');
}

/* Offsets of the records in the log (each 24 + body + 32 bytes). */
static size_t record_offsets(const uint8_t *log, size_t len, size_t *off, size_t cap)
{
    size_t n = 0, o = 0;
    while (o < len && n < cap) {
        off[n++] = o;
        uint32_t blen = (uint32_t)log[o + 4] | (uint32_t)log[o + 5] << 8 |
                        (uint32_t)log[o + 6] << 16 | (uint32_t)log[o + 7] << 24;
        o += 24 + blen + 32;
    }
    return n;
}

static void test_written_trail_verifies(void **state)
{
    (void)state;
    stele_io *io = fresh_trail(20);
    verdict v;
    assert_int_equal(verify(io, &v), 0);
    assert_int_equal(v.events, 20);
    /* Reopen and append more: the chain continues. */
    stele_audit *a;
    char err[256];
    assert_int_equal(stele_audit_open(io, "audit", sk, &a, err, sizeof(err)), 0);
    uint64_t seq = 0;
    assert_int_equal(stele_audit_append(a, "admin", "token.create", "t1", "ok", "", &seq), 0);
    assert_int_equal(seq, 21);
    stele_audit_close(a);
    assert_int_equal(verify(io, &v), 0);
    assert_int_equal(v.events, 21);
    stele_io_destroy(io);
}

static void test_every_edit_detected(void **state)
{
    (void)state;
    static uint8_t log[65536];
    stele_io *io = fresh_trail(6);
    size_t len = load(io, "audit/audit.log", log, sizeof(log));
    for (size_t i = 0; i < len; i++) {
        log[i] ^= 0x20;
        store(io, "audit/audit.log", log, len);
        verdict v;
        if (verify(io, &v) <= 0)
            fail_msg("edit at byte %zu of %zu not detected", i, len);
        log[i] ^= 0x20;
    }
    store(io, "audit/audit.log", log, len);
    verdict v;
    assert_int_equal(verify(io, &v), 0);
    stele_io_destroy(io);
}

static void test_delete_reorder_truncate_detected(void **state)
{
    (void)state;
    static uint8_t log[65536], out[65536];
    size_t off[64];
    stele_io *io = fresh_trail(8);
    size_t len = load(io, "audit/audit.log", log, sizeof(log));
    size_t n = record_offsets(log, len, off, 64);
    assert_int_equal(n, 8);
    off[n] = len;
    /* Delete record 3. */
    size_t k = 0;
    for (size_t r = 0; r < n; r++)
        if (r != 3) {
            memcpy(out + k, log + off[r], off[r + 1] - off[r]);
            k += off[r + 1] - off[r];
        }
    store(io, "audit/audit.log", out, k);
    assert_refused(io, "a deleted record");
    /* Swap records 2 and 5 (same length: same body size). */
    memcpy(out, log, len);
    size_t l2 = off[3] - off[2], l5 = off[6] - off[5];
    assert_int_equal(l2, l5);
    memcpy(out + off[2], log + off[5], l5);
    memcpy(out + off[5], log + off[2], l2);
    store(io, "audit/audit.log", out, len);
    assert_refused(io, "two records swapped");
    /* Cut off the last two whole records: the signed head says otherwise. */
    store(io, "audit/audit.log", log, off[6]);
    assert_refused(io, "records cut off at a boundary");
    /* Cut in the middle of record 4 (and the head left as is). */
    store(io, "audit/audit.log", log, off[4] + 10);
    assert_refused(io, "a record cut in the middle");
    /* A head signed by another key. */
    store(io, "audit/audit.log", log, len);
    uint8_t other_pk[32], other_sk[64];
    crypto_sign_keypair(other_pk, other_sk);
    stele_audit *a;
    char err[256];
    stele_io *io2;
    assert_int_equal(stele_io_fault_create(6, &io2), 0);
    assert_int_equal(stele_audit_open(io2, "audit", other_sk, &a, err, sizeof(err)), 0);
    assert_int_equal(stele_audit_append(a, "x", "y", "z", "ok", "", NULL), 0);
    stele_audit_close(a);
    uint8_t head[512];
    size_t hl = load(io2, "audit/audit.head", head, sizeof(head));
    store(io, "audit/audit.head", head, hl);
    assert_refused(io, "a head signed by another key");
    stele_io_destroy(io2);
    stele_io_destroy(io);
}

static void test_crash_windows_recover(void **state)
{
    (void)state;
    static uint8_t log[65536], head[512];
    stele_io *io = fresh_trail(3);
    size_t hl = load(io, "audit/audit.head", head, sizeof(head));
    stele_audit *a;
    char err[256];
    /* Record 4 durable, head still at 3 (crash between the two): kept, head re-signed. */
    assert_int_equal(stele_audit_open(io, "audit", sk, &a, err, sizeof(err)), 0);
    assert_int_equal(stele_audit_append(a, "admin", "device.quarantine", "d9", "ok", "", NULL), 0);
    stele_audit_close(a);
    store(io, "audit/audit.head", head, hl);
    assert_int_equal(stele_audit_open(io, "audit", sk, &a, err, sizeof(err)), 0);
    stele_audit_close(a);
    verdict v;
    assert_int_equal(verify(io, &v), 0);
    assert_int_equal(v.events, 4);
    /* A torn fifth record (crash mid-append, never acknowledged): cut on open. */
    size_t len = load(io, "audit/audit.log", log, sizeof(log));
    memcpy(log + len, "STAR\x05\x00\x00\x00garbage", 15);
    store(io, "audit/audit.log", log, len + 15);
    assert_true(verify(io, &v) > 0); /* offline it shows */
    assert_int_equal(stele_audit_open(io, "audit", sk, &a, err, sizeof(err)), 0);
    stele_audit_close(a);
    assert_int_equal(verify(io, &v), 0);
    assert_int_equal(v.events, 4);
    stele_io_destroy(io);
}

static void test_fields_bounded(void **state)
{
    (void)state;
    stele_io *io = fresh_trail(0);
    stele_audit *a;
    char err[256];
    assert_int_equal(stele_audit_open(io, "audit", sk, &a, err, sizeof(err)), 0);
    char big[STELE_AUDIT_MAX_DETAILS + 2];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(stele_audit_append(a, "a", "b", "c", "ok", big, NULL), -EINVAL);
    assert_int_equal(stele_audit_append(a, "a\n", "b", "c", "ok", "", NULL), -EINVAL);
    big[STELE_AUDIT_MAX_DETAILS] = '\0';
    assert_int_equal(stele_audit_append(a, "a", "b", "c", "ok", big, NULL), 0);
    stele_audit_close(a);
    verdict v;
    assert_int_equal(verify(io, &v), 0);
    assert_int_equal(v.events, 1);
    stele_io_destroy(io);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    crypto_sign_keypair(pk, sk);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_written_trail_verifies),
        cmocka_unit_test(test_every_edit_detected),
        cmocka_unit_test(test_delete_reorder_truncate_detected),
        cmocka_unit_test(test_crash_windows_recover),
        cmocka_unit_test(test_fields_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
