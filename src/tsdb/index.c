/*
 * index.c — series index and postings; see index.h.
 *
 * Matching follows Prometheus: a label a series lacks has the value "". For each
 * matcher we take the union of the posting lists of the label's values that match;
 * if the matcher also matches "", the series lacking the label match too, which we get
 * as all series of the tenant minus those having the label with a non-matching value.
 * The result is the intersection over matchers. All sets are sorted id arrays.
 */
#include "tsdb/index.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/promre.h"
#include "tsdb/series_key.h"

typedef struct {
    uint64_t *ids;
    uint32_t n;
    uint32_t cap;
    uint32_t value_len; /* for postings: length of the value at the end of key */
    uint32_t key_len;
    char key[];
} posting_list;

typedef struct {
    posting_list **values; /* one posting list per distinct value of the name */
    uint32_t n;
    uint32_t cap;
    uint32_t key_len;
    char key[];
} name_values;

static int posting_append(posting_list *p, uint64_t id)
{
    /* Recovery registers series in block and log order, not id order; lists are then
     * sorted once by index_sort_postings. At run time ids only grow. */
    if (p->n == p->cap) {
        uint32_t cap = p->cap ? p->cap * 2 : 4;
        uint64_t *ids = realloc(p->ids, cap * sizeof(*ids));
        if (!ids)
            return -ENOMEM;
        p->ids = ids;
        p->cap = cap;
    }
    p->ids[p->n++] = id;
    return 0;
}

static posting_list *posting_new(const char *key, size_t len, uint32_t value_len)
{
    posting_list *p = calloc(1, sizeof(*p) + len + 1);
    if (!p)
        return NULL;
    memcpy(p->key, key, len);
    p->key_len = (uint32_t)len;
    p->value_len = value_len;
    return p;
}

static void posting_free(posting_list *p)
{
    if (p) {
        free(p->ids);
        free(p);
    }
}

int index_init(tsdb_index *ix)
{
    memset(ix, 0, sizeof(*ix));
    if (pthread_rwlock_init(&ix->lock, NULL) != 0)
        return -ENOMEM;
    hashmap_init(&ix->by_key);
    hashmap_init(&ix->postings);
    hashmap_init(&ix->names);
    hashmap_init(&ix->tenants);
    ix->next_id = 1;
    return 0;
}

void index_free(tsdb_index *ix)
{
    for (size_t i = 0; i < ix->postings.cap; i++)
        if (ix->postings.slots[i].value)
            posting_free(ix->postings.slots[i].value);
    for (size_t i = 0; i < ix->tenants.cap; i++)
        if (ix->tenants.slots[i].value)
            posting_free(ix->tenants.slots[i].value);
    for (size_t i = 0; i < ix->names.cap; i++) {
        name_values *nv = ix->names.slots[i].value;
        if (nv) {
            free(nv->values);
            free(nv);
        }
    }
    for (uint64_t i = 0; i < ix->id_cap; i++)
        free(ix->by_id[i]);
    free(ix->by_id);
    hashmap_free(&ix->by_key);
    hashmap_free(&ix->postings);
    hashmap_free(&ix->names);
    hashmap_free(&ix->tenants);
    pthread_rwlock_destroy(&ix->lock);
}

/* Adds id to the posting list under key, creating it. */
static int postings_add(hashmap *m, const char *key, size_t len, uint32_t value_len, uint64_t id,
                        posting_list **created)
{
    uint64_t h = hashmap_hash(key, len);
    posting_list *p = hashmap_get(m, h, key, len);
    if (created)
        *created = NULL;
    if (!p) {
        p = posting_new(key, len, value_len);
        if (!p)
            return -ENOMEM;
        int rc = hashmap_put(m, h, p->key, len, p);
        if (rc) {
            posting_free(p);
            return rc;
        }
        if (created)
            *created = p;
    }
    return posting_append(p, id);
}

/* Indexes a new series (write lock held). */
static int index_add_postings(tsdb_index *ix, tsdb_series *s)
{
    const char *tenant;
    size_t tenant_len, nlabels;
    stele_label labels[STELE_MAX_LABELS];
    char buf[64 + 1 + STELE_MAX_LABEL_NAME + 1 + STELE_MAX_LABEL_VALUE];
    int rc = series_key_decode(s->key, s->key_len, &tenant, &tenant_len, labels, &nlabels);
    if (rc)
        return rc;
    rc = postings_add(&ix->tenants, tenant, tenant_len, 0, s->id, NULL);
    for (size_t i = 0; rc == 0 && i < nlabels; i++) {
        size_t n = 0;
        memcpy(buf, tenant, tenant_len);
        n += tenant_len;
        buf[n++] = '\0';
        memcpy(buf + n, labels[i].name, labels[i].name_len);
        n += labels[i].name_len;
        size_t name_key_len = n;
        buf[n++] = '\0';
        memcpy(buf + n, labels[i].value, labels[i].value_len);
        n += labels[i].value_len;
        posting_list *created = NULL;
        rc = postings_add(&ix->postings, buf, n, labels[i].value_len, s->id, &created);
        if (rc)
            break;
        uint64_t h = hashmap_hash(buf, name_key_len);
        name_values *nv = hashmap_get(&ix->names, h, buf, name_key_len);
        if (!nv) {
            nv = calloc(1, sizeof(*nv) + name_key_len + 1);
            if (!nv)
                return -ENOMEM;
            memcpy(nv->key, buf, name_key_len);
            nv->key_len = (uint32_t)name_key_len;
            rc = hashmap_put(&ix->names, h, nv->key, name_key_len, nv);
            if (rc) {
                free(nv);
                return rc;
            }
        }
        if (created) {
            if (nv->n == nv->cap) {
                uint32_t cap = nv->cap ? nv->cap * 2 : 4;
                posting_list **v = realloc(nv->values, cap * sizeof(*v));
                if (!v)
                    return -ENOMEM;
                nv->values = v;
                nv->cap = cap;
            }
            nv->values[nv->n++] = created;
        }
    }
    return rc;
}

static int index_insert_locked(tsdb_index *ix, uint64_t id, const uint8_t *key, size_t len,
                               uint64_t hash, tsdb_series **out)
{
    if (id >= ix->id_cap) {
        uint64_t cap = ix->id_cap ? ix->id_cap : 1024;
        while (cap <= id)
            cap *= 2;
        tsdb_series **by_id = realloc(ix->by_id, cap * sizeof(*by_id));
        if (!by_id)
            return -ENOMEM;
        memset(by_id + ix->id_cap, 0, (cap - ix->id_cap) * sizeof(*by_id));
        ix->by_id = by_id;
        ix->id_cap = cap;
    }
    tsdb_series *s = calloc(1, sizeof(*s) + len);
    if (!s)
        return -ENOMEM;
    s->id = id;
    s->hash = hash;
    s->key_len = (uint32_t)len;
    memcpy(s->key, key, len);
    int rc = hashmap_put(&ix->by_key, hash, s->key, len, s);
    if (rc) {
        free(s);
        return rc;
    }
    ix->by_id[id] = s; /* now owned by the index */
    ix->count++;
    if (id >= ix->next_id)
        ix->next_id = id + 1;
    rc = index_add_postings(ix, s);
    if (rc == 0)
        *out = s;
    return rc;
}

int index_get_or_create(tsdb_index *ix, const uint8_t *key, size_t len, uint64_t hash,
                        tsdb_series **out)
{
    pthread_rwlock_rdlock(&ix->lock);
    tsdb_series *s = hashmap_get(&ix->by_key, hash, key, len);
    pthread_rwlock_unlock(&ix->lock);
    if (s) {
        *out = s;
        return 0;
    }
    pthread_rwlock_wrlock(&ix->lock);
    s = hashmap_get(&ix->by_key, hash, key, len);
    int rc = 0;
    if (s)
        *out = s;
    else
        rc = index_insert_locked(ix, ix->next_id, key, len, hash, out);
    pthread_rwlock_unlock(&ix->lock);
    return rc;
}

int index_register(tsdb_index *ix, uint64_t id, const uint8_t *key, size_t len)
{
    const char *tenant;
    size_t tenant_len, nlabels;
    stele_label labels[STELE_MAX_LABELS];
    if (id == 0 || id > (1ull << 48) ||
        series_key_decode(key, len, &tenant, &tenant_len, labels, &nlabels) != 0)
        return -EINVAL;
    uint64_t hash = hashmap_hash(key, len);
    int rc = 0;
    pthread_rwlock_wrlock(&ix->lock);
    tsdb_series *by_key = hashmap_get(&ix->by_key, hash, key, len);
    tsdb_series *by_id = id < ix->id_cap ? ix->by_id[id] : NULL;
    if (by_key || by_id) {
        if (by_key != by_id)
            rc = -EBADMSG;
    } else {
        tsdb_series *s;
        rc = index_insert_locked(ix, id, key, len, hash, &s);
    }
    pthread_rwlock_unlock(&ix->lock);
    return rc;
}

static int cmp_id(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void sort_lists(hashmap *m)
{
    for (size_t i = 0; i < m->cap; i++) {
        posting_list *p = m->slots[i].value;
        if (!p)
            continue;
        bool sorted = true;
        for (uint32_t j = 1; j < p->n && sorted; j++)
            sorted = p->ids[j - 1] < p->ids[j];
        if (!sorted)
            qsort(p->ids, p->n, sizeof(*p->ids), cmp_id);
    }
}

void index_sort_postings(tsdb_index *ix)
{
    pthread_rwlock_wrlock(&ix->lock);
    sort_lists(&ix->postings);
    sort_lists(&ix->tenants);
    pthread_rwlock_unlock(&ix->lock);
}

tsdb_series *index_lookup(tsdb_index *ix, const uint8_t *key, size_t len, uint64_t hash)
{
    pthread_rwlock_rdlock(&ix->lock);
    tsdb_series *s = hashmap_get(&ix->by_key, hash, key, len);
    pthread_rwlock_unlock(&ix->lock);
    return s;
}

uint64_t index_tenant_series(tsdb_index *ix, const char *tenant, size_t tenant_len)
{
    pthread_rwlock_rdlock(&ix->lock);
    posting_list *p =
        hashmap_get(&ix->tenants, hashmap_hash(tenant, tenant_len), tenant, tenant_len);
    uint64_t n = p ? p->n : 0;
    pthread_rwlock_unlock(&ix->lock);
    return n;
}

tsdb_series *index_get(tsdb_index *ix, uint64_t id)
{
    pthread_rwlock_rdlock(&ix->lock);
    tsdb_series *s = id < ix->id_cap ? ix->by_id[id] : NULL;
    pthread_rwlock_unlock(&ix->lock);
    return s;
}

uint64_t index_max_id(tsdb_index *ix)
{
    pthread_rwlock_rdlock(&ix->lock);
    uint64_t n = ix->next_id ? ix->next_id - 1 : 0;
    pthread_rwlock_unlock(&ix->lock);
    return n;
}

uint64_t index_count(tsdb_index *ix)
{
    pthread_rwlock_rdlock(&ix->lock);
    uint64_t n = ix->count;
    pthread_rwlock_unlock(&ix->lock);
    return n;
}

/* ---- sorted id set operations --------------------------------------------------- */

typedef struct {
    uint64_t *ids;
    size_t n;
} idset;

static int idset_union(idset *acc, const uint64_t *b, size_t nb)
{
    uint64_t *out = malloc((acc->n + nb + 1) * sizeof(*out));
    if (!out)
        return -ENOMEM;
    size_t i = 0, j = 0, k = 0;
    while (i < acc->n && j < nb) {
        if (acc->ids[i] < b[j])
            out[k++] = acc->ids[i++];
        else if (acc->ids[i] > b[j])
            out[k++] = b[j++];
        else {
            out[k++] = acc->ids[i++];
            j++;
        }
    }
    while (i < acc->n)
        out[k++] = acc->ids[i++];
    while (j < nb)
        out[k++] = b[j++];
    free(acc->ids);
    acc->ids = out;
    acc->n = k;
    return 0;
}

static void idset_intersect(idset *acc, const idset *b)
{
    size_t i = 0, j = 0, k = 0;
    while (i < acc->n && j < b->n) {
        if (acc->ids[i] < b->ids[j])
            i++;
        else if (acc->ids[i] > b->ids[j])
            j++;
        else {
            acc->ids[k++] = acc->ids[i++];
            j++;
        }
    }
    acc->n = k;
}

/* acc = a − b (a copied). */
static int idset_difference(idset *out, const uint64_t *a, size_t na, const idset *b)
{
    out->ids = malloc((na + 1) * sizeof(uint64_t));
    if (!out->ids)
        return -ENOMEM;
    size_t i = 0, j = 0, k = 0;
    while (i < na) {
        while (j < b->n && b->ids[j] < a[i])
            j++;
        if (j < b->n && b->ids[j] == a[i])
            i++;
        else
            out->ids[k++] = a[i++];
    }
    out->n = k;
    return 0;
}

typedef struct {
    const stele_matcher *m;
    promre re;
    bool has_re;
} compiled_matcher;

static bool matcher_matches(const compiled_matcher *cm, const char *value, size_t len)
{
    bool match;
    switch (cm->m->type) {
    case STELE_MATCH_EQUAL:
    case STELE_MATCH_NOT_EQUAL:
        match = strlen(cm->m->value) == len && memcmp(cm->m->value, value, len) == 0;
        return cm->m->type == STELE_MATCH_EQUAL ? match : !match;
    default:
        match = promre_match(&cm->re, value, len);
        return cm->m->type == STELE_MATCH_REGEX ? match : !match;
    }
}

/* The series of tenant matching one matcher (read lock held). */
static int match_one(tsdb_index *ix, const char *tenant, const posting_list *all,
                     const compiled_matcher *cm, idset *out)
{
    char key[64 + 1 + STELE_MAX_LABEL_NAME + 1];
    size_t tl = strlen(tenant), nl = strlen(cm->m->name);
    int rc = 0;
    memset(out, 0, sizeof(*out));
    if (nl == 0 || nl > STELE_MAX_LABEL_NAME)
        return 0; /* no series has such a label: only "" could match */
    memcpy(key, tenant, tl);
    key[tl] = '\0';
    memcpy(key + tl + 1, cm->m->name, nl);
    size_t klen = tl + 1 + nl;
    name_values *nv = hashmap_get(&ix->names, hashmap_hash(key, klen), key, klen);

    if (cm->m->type == STELE_MATCH_EQUAL && cm->m->value[0] != '\0') {
        /* Fast path: one posting list. */
        size_t vl = strlen(cm->m->value);
        if (!nv || vl > STELE_MAX_LABEL_VALUE)
            return 0;
        char *pk = malloc(klen + 1 + vl);
        if (!pk)
            return -ENOMEM;
        memcpy(pk, key, klen);
        pk[klen] = '\0';
        memcpy(pk + klen + 1, cm->m->value, vl);
        posting_list *p =
            hashmap_get(&ix->postings, hashmap_hash(pk, klen + 1 + vl), pk, klen + 1 + vl);
        free(pk);
        if (p)
            rc = idset_union(out, p->ids, p->n);
        return rc;
    }
    /* Values of the label that match, and those that do not. */
    idset matching = {0}, not_matching = {0};
    for (uint32_t i = 0; nv && rc == 0 && i < nv->n; i++) {
        posting_list *p = nv->values[i];
        const char *value = p->key + p->key_len - p->value_len;
        if (matcher_matches(cm, value, p->value_len))
            rc = idset_union(&matching, p->ids, p->n);
        else
            rc = idset_union(&not_matching, p->ids, p->n);
    }
    if (rc == 0 && matcher_matches(cm, "", 0) && all) {
        /* Series without the label match as well: all minus the non-matching ones. */
        free(matching.ids);
        matching.ids = NULL;
        rc = idset_difference(&matching, all->ids, all->n, &not_matching);
    }
    free(not_matching.ids);
    if (rc) {
        free(matching.ids);
        return rc;
    }
    *out = matching;
    return 0;
}

int index_match(tsdb_index *ix, const char *tenant, const stele_matcher *m, size_t nm,
                uint64_t **ids, size_t *nids, char *err, size_t errcap)
{
    compiled_matcher *cms = NULL;
    idset acc = {0};
    int rc = 0;
    size_t compiled = 0;
    *ids = NULL;
    *nids = 0;
    if (nm == 0) {
        snprintf(err, errcap, "at least one label matcher is required");
        return -EINVAL;
    }
    cms = calloc(nm, sizeof(*cms));
    if (!cms)
        return -ENOMEM;
    for (; compiled < nm; compiled++) {
        cms[compiled].m = &m[compiled];
        if (m[compiled].type == STELE_MATCH_REGEX || m[compiled].type == STELE_MATCH_NOT_REGEX) {
            char msg[200];
            if (promre_compile(&cms[compiled].re, m[compiled].value, msg, sizeof(msg)) != 0) {
                snprintf(err, errcap, "label %s: %s", m[compiled].name, msg);
                rc = -EINVAL;
                goto out;
            }
            cms[compiled].has_re = true;
        }
    }
    pthread_rwlock_rdlock(&ix->lock);
    size_t tl = strlen(tenant);
    posting_list *all = hashmap_get(&ix->tenants, hashmap_hash(tenant, tl), tenant, tl);
    for (size_t i = 0; rc == 0 && i < nm; i++) {
        idset one;
        rc = match_one(ix, tenant, all, &cms[i], &one);
        if (rc)
            break;
        if (i == 0) {
            acc = one;
        } else {
            idset_intersect(&acc, &one);
            free(one.ids);
        }
        if (acc.n == 0)
            break;
    }
    pthread_rwlock_unlock(&ix->lock);
    if (rc == 0) {
        *ids = acc.ids;
        *nids = acc.n;
        acc.ids = NULL;
    }
out:
    for (size_t i = 0; i < compiled; i++)
        if (cms[i].has_re)
            promre_free(&cms[i].re);
    free(cms);
    free(acc.ids);
    return rc;
}
