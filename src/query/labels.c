/*
 * labels.c — encoded label sets; see labels.h.
 */
#include "query/labels.h"

#include <errno.h>
#include <string.h>

#include "common/hashmap.h"
#include "stele/varint.h"

static int lset_build(arena *a, const stele_label *labels, size_t n, lset *out)
{
    size_t need = 0;
    for (size_t i = 0; i < n; i++)
        need += 2 * STELE_VARINT_MAX + labels[i].name_len + labels[i].value_len;
    uint8_t *buf = arena_alloc(a, need ? need : 1);
    if (!buf)
        return -ENOMEM;
    uint8_t *p = buf;
    for (size_t i = 0; i < n; i++) {
        p += stele_varint_put(p, labels[i].name_len);
        memcpy(p, labels[i].name, labels[i].name_len);
        p += labels[i].name_len;
        p += stele_varint_put(p, labels[i].value_len);
        if (labels[i].value_len)
            memcpy(p, labels[i].value, labels[i].value_len);
        p += labels[i].value_len;
    }
    out->data = buf;
    out->len = (uint32_t)(p - buf);
    out->hash = hashmap_hash(buf, out->len);
    return 0;
}

int lset_from_labels(arena *a, const stele_label *labels, size_t n, lset *out)
{
    return lset_build(a, labels, n, out);
}

size_t lset_decode(const lset *ls, stele_label *labels)
{
    const uint8_t *p = ls->data, *end = ls->data + ls->len;
    size_t n = 0;
    uint64_t l = 0;
    while (p < end && n < STELE_MAX_LABELS) {
        stele_varint_get(&p, end, &l);
        labels[n].name = (const char *)p;
        labels[n].name_len = (uint32_t)l;
        p += l;
        stele_varint_get(&p, end, &l);
        labels[n].value = (const char *)p;
        labels[n].value_len = (uint32_t)l;
        p += l;
        n++;
    }
    return n;
}

static bool is_name_label(const stele_label *l)
{
    return l->name_len == 8 && !memcmp(l->name, "__name__", 8);
}

int lset_drop_name(arena *a, const lset *in, lset *out)
{
    stele_label labels[STELE_MAX_LABELS];
    size_t n = lset_decode(in, labels), k = 0;
    for (size_t i = 0; i < n; i++)
        if (!is_name_label(&labels[i]))
            labels[k++] = labels[i];
    if (k == n) {
        *out = *in;
        return 0;
    }
    return lset_build(a, labels, k, out);
}

static bool listed(const stele_label *l, const char *const *names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strlen(names[i]) == l->name_len && !memcmp(names[i], l->name, l->name_len))
            return true;
    return false;
}

int lset_filter(arena *a, const lset *in, const char *const *names, size_t n, bool keep,
                bool drop_name, lset *out)
{
    stele_label labels[STELE_MAX_LABELS];
    size_t total = lset_decode(in, labels), k = 0;
    for (size_t i = 0; i < total; i++) {
        bool in_list = listed(&labels[i], names, n);
        if (keep ? in_list : (!in_list && !(drop_name && is_name_label(&labels[i]))))
            labels[k++] = labels[i];
    }
    return lset_build(a, labels, k, out);
}

bool lset_equal(const lset *a, const lset *b)
{
    return a->hash == b->hash && a->len == b->len && !memcmp(a->data, b->data, a->len);
}

static int bytes_cmp(const char *a, size_t al, const char *b, size_t bl)
{
    int c = memcmp(a, b, al < bl ? al : bl);
    return c ? c : (al < bl ? -1 : al > bl);
}

int lset_compare(const lset *a, const lset *b)
{
    stele_label la[STELE_MAX_LABELS], lb[STELE_MAX_LABELS];
    size_t na = lset_decode(a, la), nb = lset_decode(b, lb);
    for (size_t i = 0; i < na && i < nb; i++) {
        int c = bytes_cmp(la[i].name, la[i].name_len, lb[i].name, lb[i].name_len);
        if (c)
            return c;
        c = bytes_cmp(la[i].value, la[i].value_len, lb[i].value, lb[i].value_len);
        if (c)
            return c;
    }
    return na < nb ? -1 : na > nb;
}
