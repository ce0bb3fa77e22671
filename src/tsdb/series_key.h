/*
 * series_key.h — the canonical byte encoding of a series identity, shared by the write
 * batch, the index, log records and block files. One series has exactly one encoding
 * (labels sorted and unique), so keys compare and hash as plain bytes:
 *
 *   u8 tenant length (1..64), tenant bytes,
 *   varint label count (1..STELE_MAX_LABELS),
 *   per label, sorted by name: varint name length, name, varint value length, value.
 *
 * Decoding validates all of it (lengths, order, limits) because keys are read back
 * from disk.
 */
#ifndef STELE_TSDB_SERIES_KEY_H
#define STELE_TSDB_SERIES_KEY_H

#include <stddef.h>
#include <stdint.h>

#include "stele/tsdb.h"

/* Encodes into out (cap bytes). Returns the length, or -EINVAL (bad labels/tenant),
 * -ENOSPC (cap too small; STELE_MAX_SERIES_KEY always suffices for valid input). */
int series_key_encode(const char *tenant, size_t tenant_len, const stele_label *labels,
                      size_t nlabels, uint8_t *out, size_t cap);
/* Decodes and validates. labels (room for STELE_MAX_LABELS) point into key. */
int series_key_decode(const uint8_t *key, size_t len, const char **tenant, size_t *tenant_len,
                      stele_label *labels, size_t *nlabels);

#endif
