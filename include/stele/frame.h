/*
 * frame.h — sealed telemetry frames (SPEC §6): the wire format a device signs and the
 * server verifies. Shared by the device library (building and sealing, no allocation)
 * and the server (parsing and verifying). Format and test vectors: docs/format/frame.md.
 *
 * A frame carries a device id, a key id, a 64-bit counter and a batch of points, then
 * an Ed25519 signature over a domain-separation prefix and every byte before it. The
 * encoding is canonical — fixed-width integers, labels sorted and unique, one NaN — so a
 * frame has exactly one valid encoding, and a parser accepts nothing else. Sizes are
 * checked before any cryptography. The algorithm byte is checked against what the
 * device's registry entry allows (the caller's job): no frame can choose a weaker one.
 */
#ifndef STELE_FRAME_H
#define STELE_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define STELE_FRAME_VERSION 1
#define STELE_FRAME_ALG_ED25519 1
#define STELE_FRAME_MAX_BYTES 65536
#define STELE_FRAME_MAX_POINTS 1024
#define STELE_FRAME_MAX_DEVICE_ID 64
#define STELE_FRAME_MAX_METRIC 128
#define STELE_FRAME_MAX_LABELS 16
#define STELE_FRAME_MAX_LABEL_NAME 64
#define STELE_FRAME_MAX_LABEL_VALUE 128
#define STELE_FRAME_SIGNATURE_BYTES 64
/* Signed together with the frame's bytes, so a signature made for anything else (another
 * protocol using the same key) never verifies as a frame. */
#define STELE_FRAME_DOMAIN "stele/frame/v1"

typedef struct {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
} stele_frame_label;

/* One point, as parsed (views into the frame's bytes) or as given to the builder. */
typedef struct {
    const char *metric;
    size_t metric_len;
    stele_frame_label labels[STELE_FRAME_MAX_LABELS];
    size_t nlabels;
    int64_t ts; /* ns since the epoch (the device's clock: checked by the server) */
    double value;
} stele_frame_point;

/* A parsed frame: views into the caller's buffer, valid while it lives. */
typedef struct {
    uint8_t version, alg;
    const char *device_id;
    size_t device_id_len;
    uint32_t key_id;
    uint64_t counter;
    uint16_t npoints;
    const uint8_t *signed_bytes; /* everything the signature covers (after the prefix) */
    size_t signed_len;
    const uint8_t *signature; /* STELE_FRAME_SIGNATURE_BYTES */
    const uint8_t *points;    /* the encoded points, for stele_frame_next_point */
    size_t points_len;
} stele_frame;

/* Parses and validates buf[0..len) completely (structure, limits, canonical form); no
 * cryptography. Returns 0, -EMSGSIZE (over STELE_FRAME_MAX_BYTES), or -EBADMSG with
 * *why naming the first problem. */
int stele_frame_parse(const uint8_t *buf, size_t len, stele_frame *out, const char **why);

/* Finds where the frame starting at buf[0] ends in a body of frames back to back, by
 * walking its length fields only (no validation beyond them, no cryptography): 0 and
 * *frame_len, or -EMSGSIZE when it would exceed STELE_FRAME_MAX_BYTES, -EBADMSG when buf
 * does not start with a frame of this version or ends before the frame does. Reads at
 * most STELE_FRAME_MAX_BYTES bytes. */
int stele_frame_span(const uint8_t *buf, size_t len, size_t *frame_len);

/* Iterates the points of a parsed frame: *cursor starts at 0; returns true and fills *p
 * while there are points. */
bool stele_frame_next_point(const stele_frame *f, size_t *cursor, stele_frame_point *p);

/* A point of a parsed frame as stored bytes: its shape — the metric and labels exactly as
 * encoded (canonical: equal shapes have equal bytes, so they can key a cache) — and its
 * timestamp and value. */
typedef struct {
    const uint8_t *shape;
    size_t shape_len;
    int64_t ts;
    double value;
} stele_frame_raw_point;

/* As stele_frame_next_point without decoding labels or validating again (the parse did
 * that once): for the hot path of ingestion. Only for frames stele_frame_parse accepted. */
bool stele_frame_next_raw(const stele_frame *f, size_t *cursor, stele_frame_raw_point *p);

/* Verifies the signature (pure Ed25519 over STELE_FRAME_DOMAIN, its zero byte, and the
 * signed bytes) with the device's public key (32 bytes): 0 or -EBADMSG; -ENOTSUP for
 * another algorithm. scratch (≥ STELE_FRAME_SCRATCH_BYTES) holds the message. */
#define STELE_FRAME_SCRATCH_BYTES (STELE_FRAME_MAX_BYTES + 16)
int stele_frame_verify(const stele_frame *f, const uint8_t public_key[32], uint8_t *scratch,
                       size_t scratch_cap);

/* ---- building (device side; no allocation) --------------------------------------- */

typedef struct {
    uint8_t *buf;
    size_t cap, len;
    size_t count_at; /* where the point count goes */
    uint16_t npoints;
} stele_frame_builder;

/* Starts a frame in buf[0..cap) (cap ≥ 128; the frame is built 15 bytes in, where
 * sealing needs room for the signing domain; seal moves it to buf[0]; at most
 * STELE_FRAME_MAX_BYTES + 15 bytes are used).
 * -EINVAL for a bad device id (1..64 bytes of [A-Za-z0-9._-]). */
int stele_frame_begin(stele_frame_builder *b, uint8_t *buf, size_t cap, const char *device_id,
                      uint32_t key_id, uint64_t counter);
/* Adds a point; labels in any order (they are sorted), names unique and not reserved
 * ("device", "tenant", "__…"). -EINVAL for a bad name/value/NaN payload, -ENOSPC when
 * the frame would exceed its buffer or the limits (seal what there is, start another). */
int stele_frame_add(stele_frame_builder *b, const stele_frame_point *p);
/* Signs with the Ed25519 secret key (64 bytes, libsodium's form) and completes the
 * frame: *len receives its size. -EINVAL if empty, -ENOSPC if the signature does not fit. */
int stele_frame_seal(stele_frame_builder *b, const uint8_t secret_key[64], size_t *len);

#endif
