/*
 * fuzz_frame.c — libFuzzer target for the sealed frame parser (stele/frame.h).
 *
 * Parses arbitrary bytes. When a frame parses, it checks what the header promises —
 * counts within limits, every point readable with the iterator, exactly npoints of
 * them — and the canonical-encoding property: rebuilding the frame from what was parsed
 * (same device, key id, counter and points, through the device-side builder) yields
 * exactly the bytes that were signed. So no two encodings of one frame exist. It then
 * verifies the signature against a fixed key, which must simply answer (never crash).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stele/frame.h"

#define fuzz_check(cond, what)                                                                     \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_frame: invariant failed: %s: %s\n", #cond, what);                \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static uint8_t rebuilt[STELE_FRAME_MAX_BYTES + 64];
static uint8_t scratch[STELE_FRAME_SCRATCH_BYTES];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    stele_frame f;
    const char *why = NULL;
    if (stele_frame_parse(data, size, &f, &why) != 0) {
        fuzz_check(why && *why, "a refusal names its reason");
        return 0;
    }
    fuzz_check(f.npoints >= 1 && f.npoints <= STELE_FRAME_MAX_POINTS, "point count");
    fuzz_check(f.signed_len + STELE_FRAME_SIGNATURE_BYTES == size, "signature at the end");
    char device[STELE_FRAME_MAX_DEVICE_ID + 1];
    memcpy(device, f.device_id, f.device_id_len);
    device[f.device_id_len] = '\0';
    stele_frame_builder b;
    fuzz_check(stele_frame_begin(&b, rebuilt, sizeof(rebuilt), device, f.key_id, f.counter) == 0,
               "a parsed device id is buildable");
    size_t cursor = 0, n = 0;
    stele_frame_point p;
    while (stele_frame_next_point(&f, &cursor, &p)) {
        fuzz_check(stele_frame_add(&b, &p) == 0, "a parsed point is buildable");
        n++;
    }
    fuzz_check(n == f.npoints, "iterator yields npoints points");
    fuzz_check(b.len == f.signed_len, "rebuilt length equals the signed length");
    fuzz_check(memcmp(b.buf, f.signed_bytes, f.signed_len) == 0,
               "rebuilt bytes equal the signed bytes (one encoding per frame)");
    static const uint8_t key[32] = {1};
    int rc = stele_frame_verify(&f, key, scratch, sizeof(scratch));
    fuzz_check(rc == 0 || rc < 0, "verify answers");
    return 0;
}
