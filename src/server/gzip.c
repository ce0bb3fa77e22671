/*
 * gzip.c — bounded gzip decompression of request bodies (Content-Encoding: gzip), with
 * zlib. The output limit is enforced while inflating, so a decompression bomb costs at
 * most the limit in memory and the time to produce it.
 */
#include <errno.h>
#include <stdlib.h>
#include <zlib.h>

#include "server/server_internal.h"

int gzip_inflate(const char *in, size_t in_len, size_t max, char **out, size_t *out_len)
{
    z_stream zs = {0};
    size_t cap = in_len * 4 + 4096;
    if (cap > max + 1)
        cap = max + 1;
    char *buf = malloc(cap);
    int rc = 0;
    if (!buf)
        return -ENOMEM;
    /* 16 + MAX_WBITS: gzip wrapper only. */
    if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) {
        free(buf);
        return -ENOMEM;
    }
    zs.next_in = (Bytef *)in;
    size_t consumed = 0, produced = 0;
    for (;;) {
        size_t in_chunk = in_len - consumed > (1u << 30) ? (1u << 30) : in_len - consumed;
        zs.next_in = (Bytef *)in + consumed;
        zs.avail_in = (uInt)in_chunk;
        if (produced == cap) {
            if (cap > max) {
                rc = -EMSGSIZE;
                break;
            }
            size_t ncap = cap * 2 > max + 1 ? max + 1 : cap * 2;
            char *nb = realloc(buf, ncap);
            if (!nb) {
                rc = -ENOMEM;
                break;
            }
            buf = nb;
            cap = ncap;
        }
        zs.next_out = (Bytef *)buf + produced;
        zs.avail_out = (uInt)(cap - produced);
        int z = inflate(&zs, Z_NO_FLUSH);
        consumed += in_chunk - zs.avail_in;
        produced = cap - zs.avail_out;
        if (produced > max) {
            rc = -EMSGSIZE;
            break;
        }
        if (z == Z_STREAM_END) {
            if (consumed != in_len) {
                /* Concatenated gzip members: reset and go on (gzip allows it). */
                if (inflateReset(&zs) != Z_OK) {
                    rc = -EINVAL;
                    break;
                }
                continue;
            }
            break;
        }
        if (z == Z_BUF_ERROR && zs.avail_out != 0) {
            rc = -EINVAL; /* truncated input */
            break;
        }
        if (z != Z_OK && z != Z_BUF_ERROR) {
            rc = -EINVAL;
            break;
        }
    }
    inflateEnd(&zs);
    if (rc) {
        free(buf);
        return rc;
    }
    *out = buf;
    *out_len = produced;
    return 0;
}
