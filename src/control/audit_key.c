/*
 * audit_key.c — the server's Ed25519 audit key pair in the audit directory.
 *
 * AUDIT.KEY (secret; mode 0600 like every file the server writes; 104 bytes)
 *   0   4  magic "STAK"
 *   4   4  version (1)
 *   8   64 libsodium Ed25519 secret key (32-byte seed ‖ public key)
 *   72  32 BLAKE2b-256 of bytes [0, 72)
 *
 * AUDIT.PUB (public; one line of text, so an operator can copy it anywhere)
 *   "stele-audit-public-key v1 <64 hex digits> <16 hex digits>\n"
 *   the second number is the first 8 bytes of BLAKE2b-256 of the key: a typo or a
 *   damaged copy is caught before it makes every signature look forged.
 *
 * Design: created on first start (key first, then the public file, each written
 * atomically), loaded and checked on every later one. A missing audit.pub is rewritten
 * from the key; a missing audit.key beside an existing audit.pub is refused rather than
 * replaced, because a new key would make the existing trail unverifiable — the operator
 * must restore the key. The public key sits beside the trail for convenience only: a
 * verifier guarding against someone who can write the data directory passes a copy
 * kept elsewhere (`stele audit verify --public-key`).
 */
#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/bytes.h"
#include "control/audit_internal.h"

#define KEY_MAGIC "STAK"
#define KEY_VERSION 1u
#define KEY_BYTES (4 + 4 + 64 + AUDIT_HASH)
#define KEY_NAME "audit.key"
#define PUB_NAME "audit.pub"
#define PUB_PREFIX "stele-audit-public-key v1 "
/* Longest audit.pub read: the line plus slack for trailing whitespace. */
#define PUB_MAX_FILE 256

static void pub_check(const uint8_t pk[32], uint8_t out[8])
{
    uint8_t full[AUDIT_HASH];
    crypto_generichash(full, sizeof(full), pk, 32, NULL, 0);
    memcpy(out, full, 8);
}

static int hex_to_bytes(const char *p, size_t n, uint8_t *out)
{
    for (size_t i = 0; i < 2 * n; i++) {
        char c = p[i];
        int v = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (v < 0)
            return -EINVAL;
        if (i % 2 == 0)
            out[i / 2] = (uint8_t)(v << 4);
        else
            out[i / 2] |= (uint8_t)v;
    }
    return 0;
}

void stele_audit_pubkey_format(const uint8_t public_key[32], char *buf, size_t cap)
{
    char hex[65], check_hex[17];
    uint8_t check[8];
    pub_check(public_key, check);
    sodium_bin2hex(hex, sizeof(hex), public_key, 32);
    sodium_bin2hex(check_hex, sizeof(check_hex), check, sizeof(check));
    snprintf(buf, cap, PUB_PREFIX "%s %s\n", hex, check_hex);
}

int stele_audit_pubkey_parse(const char *text, uint8_t public_key[32])
{
    uint8_t pk[32], check[8], want[8];
    const char *p = text;
    while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
        p++;
    bool full = strncmp(p, PUB_PREFIX, strlen(PUB_PREFIX)) == 0;
    if (full)
        p += strlen(PUB_PREFIX);
    if (strnlen(p, 64) < 64 || hex_to_bytes(p, 32, pk) != 0)
        return -EINVAL;
    p += 64;
    if (full) {
        if (*p != ' ' || strnlen(p + 1, 16) < 16 || hex_to_bytes(p + 1, 8, check) != 0)
            return -EINVAL;
        pub_check(pk, want);
        if (memcmp(check, want, sizeof(want)) != 0)
            return -EBADMSG;
        p += 17;
    }
    for (; *p; p++)
        if (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\n')
            return -EINVAL;
    memcpy(public_key, pk, 32);
    return 0;
}

int stele_audit_pubkey_load(stele_io *io, const char *dir, uint8_t public_key[32], char *err,
                            size_t errcap)
{
    char path[AUDIT_PATH_MAX + 32], text[PUB_MAX_FILE + 1];
    uint8_t *data = NULL;
    size_t len = 0;
    snprintf(path, sizeof(path), "%s/" PUB_NAME, dir);
    int rc = stele_io_read_file(io, path, PUB_MAX_FILE, &data, &len);
    if (rc) {
        snprintf(err, errcap, "%s: %s", path,
                 rc == -EFBIG ? "too large to be an audit public key" : strerror(-rc));
        return rc == -EFBIG ? -EBADMSG : rc;
    }
    memcpy(text, data, len);
    text[len] = '\0';
    free(data);
    rc = strlen(text) == len ? stele_audit_pubkey_parse(text, public_key) : -EINVAL;
    if (rc) {
        snprintf(err, errcap, "%s: %s", path,
                 rc == -EBADMSG ? "checksum mismatch (the key was damaged or mistyped)"
                                : "not an audit public key");
        return -EBADMSG;
    }
    return 0;
}

static int key_create(stele_io *io, const char *dir, uint8_t sk[64], uint8_t pk[32], char *err,
                      size_t errcap)
{
    uint8_t file[KEY_BYTES];
    char pub[128];
    crypto_sign_keypair(pk, sk);
    memcpy(file, KEY_MAGIC, 4);
    put_le32(file + 4, KEY_VERSION);
    memcpy(file + 8, sk, 64);
    crypto_generichash(file + 72, AUDIT_HASH, file, 72, NULL, 0);
    int rc = stele_io_write_file_atomic(io, dir, KEY_NAME, file, sizeof(file));
    sodium_memzero(file, sizeof(file));
    if (rc) {
        snprintf(err, errcap, "%s/" KEY_NAME ": cannot write: %s", dir, strerror(-rc));
        return rc;
    }
    stele_audit_pubkey_format(pk, pub, sizeof(pub));
    rc = stele_io_write_file_atomic(io, dir, PUB_NAME, pub, strlen(pub));
    if (rc)
        snprintf(err, errcap, "%s/" PUB_NAME ": cannot write: %s", dir, strerror(-rc));
    return rc;
}

int stele_audit_key_load_or_create(stele_io *io, const char *dir, uint8_t secret_key[64],
                                   uint8_t public_key[32], char *err, size_t errcap)
{
    char path[AUDIT_PATH_MAX + 32];
    uint8_t *data = NULL, sum[AUDIT_HASH], seed_pk[32], seed_sk[64];
    size_t len = 0;
    if (strlen(dir) > AUDIT_PATH_MAX) {
        snprintf(err, errcap, "%s: path too long", dir);
        return -ENAMETOOLONG;
    }
    int rc = stele_io_mkdir_durable(io, dir);
    if (rc) {
        snprintf(err, errcap, "%s: %s", dir, strerror(-rc));
        return rc;
    }
    snprintf(path, sizeof(path), "%s/" KEY_NAME, dir);
    rc = stele_io_read_file(io, path, KEY_BYTES, &data, &len);
    if (rc == -ENOENT) {
        snprintf(path, sizeof(path), "%s/" PUB_NAME, dir);
        if (stele_io_exists(io, path) == 1) {
            snprintf(err, errcap,
                     "%s/" KEY_NAME " is missing but " PUB_NAME " exists: the audit key was lost "
                     "or moved; restore it (a new key could not continue the existing trail)",
                     dir);
            return -EBADMSG;
        }
        return key_create(io, dir, secret_key, public_key, err, errcap);
    }
    if (rc) {
        snprintf(err, errcap, "%s: %s", path,
                 rc == -EFBIG ? "too large to be an audit key" : strerror(-rc));
        return rc == -EFBIG ? -EBADMSG : rc;
    }
    rc = -EBADMSG;
    if (len != KEY_BYTES || memcmp(data, KEY_MAGIC, 4) != 0) {
        snprintf(err, errcap, "%s: not an audit key (bad magic or size)", path);
        goto out;
    }
    if (get_le32(data + 4) != KEY_VERSION) {
        snprintf(err, errcap, "%s: unknown key version %u", path, get_le32(data + 4));
        goto out;
    }
    crypto_generichash(sum, sizeof(sum), data, 72, NULL, 0);
    if (sodium_memcmp(sum, data + 72, AUDIT_HASH) != 0) {
        snprintf(err, errcap, "%s: checksum mismatch (the key file is damaged)", path);
        goto out;
    }
    /* The public half must be the one the seed derives. */
    crypto_sign_seed_keypair(seed_pk, seed_sk, data + 8);
    if (sodium_memcmp(seed_sk, data + 8, 64) != 0) {
        snprintf(err, errcap, "%s: the key's public half does not match its seed", path);
        goto out;
    }
    memcpy(secret_key, data + 8, 64);
    memcpy(public_key, seed_pk, 32);
    uint8_t pub_pk[32];
    char pub_err[AUDIT_PATH_MAX + 96];
    rc = stele_audit_pubkey_load(io, dir, pub_pk, pub_err, sizeof(pub_err));
    if (rc == -ENOENT) { /* a crash between the two files, or deleted: derive it again */
        char pub[128];
        stele_audit_pubkey_format(public_key, pub, sizeof(pub));
        rc = stele_io_write_file_atomic(io, dir, PUB_NAME, pub, strlen(pub));
        if (rc)
            snprintf(err, errcap, "%s/" PUB_NAME ": cannot write: %s", dir, strerror(-rc));
    } else if (rc) {
        snprintf(err, errcap, "%s", pub_err);
    } else if (sodium_memcmp(pub_pk, public_key, 32) != 0) {
        snprintf(err, errcap, "%s/" PUB_NAME " does not match " KEY_NAME " (one was replaced)",
                 dir);
        rc = -EBADMSG;
    }
out:
    sodium_memzero(seed_sk, sizeof(seed_sk));
    if (data)
        sodium_memzero(data, len);
    free(data);
    if (rc)
        sodium_memzero(secret_key, 64);
    return rc;
}
