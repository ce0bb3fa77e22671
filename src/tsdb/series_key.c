/*
 * series_key.c — canonical series key encoding; format in series_key.h.
 */
#include "tsdb/series_key.h"

#include <errno.h>
#include <string.h>

#include "stele/varint.h"

static int label_cmp(const stele_label *a, const stele_label *b)
{
    uint32_t n = a->name_len < b->name_len ? a->name_len : b->name_len;
    int c = memcmp(a->name, b->name, n);
    if (c)
        return c;
    return a->name_len < b->name_len ? -1 : a->name_len > b->name_len;
}

int series_key_encode(const char *tenant, size_t tenant_len, const stele_label *labels,
                      size_t nlabels, uint8_t *out, size_t cap)
{
    if (tenant_len == 0 || tenant_len > 64 || nlabels == 0 || nlabels > STELE_MAX_LABELS)
        return -EINVAL;
    size_t need = 1 + tenant_len + STELE_VARINT_MAX;
    for (size_t i = 0; i < nlabels; i++) {
        const stele_label *l = &labels[i];
        if (l->name_len == 0 || l->name_len > STELE_MAX_LABEL_NAME ||
            l->value_len > STELE_MAX_LABEL_VALUE)
            return -EINVAL;
        if (i && label_cmp(&labels[i - 1], l) >= 0)
            return -EINVAL; /* unsorted or duplicate */
        need += 2 * STELE_VARINT_MAX + l->name_len + l->value_len;
    }
    if (need > cap)
        return -ENOSPC;
    uint8_t *p = out;
    *p++ = (uint8_t)tenant_len;
    memcpy(p, tenant, tenant_len);
    p += tenant_len;
    p += stele_varint_put(p, nlabels);
    for (size_t i = 0; i < nlabels; i++) {
        p += stele_varint_put(p, labels[i].name_len);
        memcpy(p, labels[i].name, labels[i].name_len);
        p += labels[i].name_len;
        p += stele_varint_put(p, labels[i].value_len);
        if (labels[i].value_len)
            memcpy(p, labels[i].value, labels[i].value_len);
        p += labels[i].value_len;
    }
    return (int)(p - out);
}

int series_key_decode(const uint8_t *key, size_t len, const char **tenant, size_t *tenant_len,
                      stele_label *labels, size_t *nlabels)
{
    const uint8_t *p = key, *end = key + len;
    uint64_t n, l;
    if (len < 1 || key[0] == 0 || key[0] > 64 || (size_t)key[0] + 1 > len)
        return -EINVAL;
    *tenant = (const char *)key + 1;
    *tenant_len = key[0];
    p = key + 1 + key[0];
    if (stele_varint_get(&p, end, &n) || n == 0 || n > STELE_MAX_LABELS)
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        if (stele_varint_get(&p, end, &l) || l == 0 || l > STELE_MAX_LABEL_NAME ||
            l > (uint64_t)(end - p))
            return -EINVAL;
        labels[i].name = (const char *)p;
        labels[i].name_len = (uint32_t)l;
        p += l;
        if (stele_varint_get(&p, end, &l) || l > STELE_MAX_LABEL_VALUE || l > (uint64_t)(end - p))
            return -EINVAL;
        labels[i].value = (const char *)p;
        labels[i].value_len = (uint32_t)l;
        p += l;
        if (i && label_cmp(&labels[i - 1], &labels[i]) >= 0)
            return -EINVAL;
    }
    if (p != end)
        return -EINVAL;
    *nlabels = n;
    return 0;
}
