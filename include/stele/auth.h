/*
 * auth.h — API tokens: creation, revocation, authentication (SPEC §1, §3).
 *
 * A token is the string "stl_<id>_<secret>": id is 16 lowercase hex digits (public;
 * shown by `stele token list`, used by `revoke`), secret 64 lowercase hex digits (32
 * random bytes from libsodium). Only a BLAKE2b-256 hash of the secret is stored, so a
 * stolen data directory yields no usable token; authentication hashes the presented
 * secret and compares in constant time (sodium_memcmp).
 *
 * Durability: DATA/tokens.log is an append-only log of create/revoke records, each
 * length-prefixed and checksummed (format in docs/format/tokens.md); a record is
 * fsync'd before the call returns, so an acknowledged create or revoke survives any
 * crash. On open, a torn tail (an incomplete last record) is cut off; any other damage
 * fails the open with -EBADMSG.
 *
 * Threads: all functions may be called concurrently; authentication takes a read lock.
 */
#ifndef STELE_AUTH_H
#define STELE_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "stele/io.h"

enum {
    STELE_SCOPE_READ = 1u << 0,
    STELE_SCOPE_WRITE = 1u << 1,
    STELE_SCOPE_ADMIN = 1u << 2,
};

#define STELE_TOKEN_ID_LEN 16
#define STELE_TOKEN_STRING_LEN (4 + 16 + 1 + 64) /* "stl_" id "_" secret */
#define STELE_TENANT_MAX_LEN 64

typedef struct {
    char id[STELE_TOKEN_ID_LEN + 1];
    char tenant[STELE_TENANT_MAX_LEN + 1];
    uint32_t scopes;    /* STELE_SCOPE_* bits */
    int64_t created_ns; /* wall clock, ns since the epoch */
    bool revoked;
} stele_token_info;

typedef struct stele_tokens stele_tokens;

/* 1 if `tenant` is a valid tenant name: 1..64 of [A-Za-z0-9_-]. */
bool stele_tenant_name_valid(const char *tenant);
/* Parses "read,write,admin" (any subset, any order) into scope bits; -EINVAL if empty
 * or unknown. Writes the canonical text form with stele_scopes_format. */
int stele_scopes_parse(const char *text, uint32_t *scopes);
void stele_scopes_format(uint32_t scopes, char *buf, size_t cap);

/* Opens (creating if absent) DATA/tokens.log in `data_dir`. *out owned by caller. */
int stele_tokens_open(stele_io *io, const char *data_dir, stele_tokens **out);
void stele_tokens_close(stele_tokens *t);

/* Creates a token; durable before returning. `token_out` (≥ STELE_TOKEN_STRING_LEN+1
 * bytes) receives the full token string, the only time it exists in clear. */
int stele_tokens_create(stele_tokens *t, const char *tenant, uint32_t scopes, char *token_out,
                        size_t token_cap, stele_token_info *info_out);
/* Revokes by id; durable before returning. -ENOENT unknown id; revoking twice is 0. */
int stele_tokens_revoke(stele_tokens *t, const char *id);
/* Checks a presented token string. 0 and *info filled when valid and not revoked;
 * -EACCES otherwise (malformed, unknown, wrong secret, revoked — not distinguished). */
int stele_tokens_authenticate(stele_tokens *t, const char *token, size_t token_len,
                              stele_token_info *info);
/* Calls fn for every token, revoked ones included, in creation order. */
typedef int (*stele_tokens_list_fn)(void *ctx, const stele_token_info *info);
int stele_tokens_list(stele_tokens *t, stele_tokens_list_fn fn, void *ctx);
/* Number of tokens that are not revoked. */
size_t stele_tokens_active_count(stele_tokens *t);

#endif
