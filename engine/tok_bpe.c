/*
 * tok_bpe.c -- BPE merges as `tokenizers` applies them (models/bpe/word.rs):
 * start from the word's characters (or their <0xNN> bytes with byte
 * fallback, or unk), then repeatedly merge the adjacent pair with the lowest
 * rank, leftmost first among equal ranks, until no pair has a merge.
 */
#include <stdlib.h>
#include <string.h>

#include "status.h"
#include "tok_bpe.h"
#include "utf8.h"

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

static uint64_t hash_u64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return x;
}

int rn__strmap_init(rn_strmap *m, size_t expected)
{
    size_t cap = 16;
    while (cap < expected * 2 + 16)
        cap <<= 1;
    memset(m, 0, sizeof *m);
    m->cap = cap;
    m->keys = calloc(cap, sizeof *m->keys);
    m->klen = calloc(cap, sizeof *m->klen);
    m->vals = calloc(cap, sizeof *m->vals);
    if (!m->keys || !m->klen || !m->vals) {
        rn__strmap_deinit(m);
        return RN_ENOMEM;
    }
    return RN_OK;
}

void rn__strmap_deinit(rn_strmap *m)
{
    for (size_t i = 0; m->keys && i < m->cap; i++)
        free(m->keys[i]);
    free(m->keys);
    free(m->klen);
    free(m->vals);
    memset(m, 0, sizeof *m);
}

static int strmap_grow(rn_strmap *m)
{
    rn_strmap n;
    if (rn__strmap_init(&n, m->cap) != RN_OK)
        return RN_ENOMEM;
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->keys[i])
            continue;
        size_t j = hash_bytes(m->keys[i], m->klen[i]) & (n.cap - 1);
        while (n.keys[j])
            j = (j + 1) & (n.cap - 1);
        n.keys[j] = m->keys[i];
        n.klen[j] = m->klen[i];
        n.vals[j] = m->vals[i];
        n.count++;
    }
    free(m->keys);
    free(m->klen);
    free(m->vals);
    *m = n;
    return RN_OK;
}

int rn__strmap_put(rn_strmap *m, const char *key, size_t len, int32_t val)
{
    if ((m->count + 1) * 2 > m->cap && strmap_grow(m) != RN_OK)
        return RN_ENOMEM;
    size_t j = hash_bytes(key, len) & (m->cap - 1);
    while (m->keys[j]) {
        if (m->klen[j] == len && memcmp(m->keys[j], key, len) == 0)
            return 1;
        j = (j + 1) & (m->cap - 1);
    }
    char *k = malloc(len + 1);
    if (!k)
        return RN_ENOMEM;
    memcpy(k, key, len);
    k[len] = '\0';
    m->keys[j] = k;
    m->klen[j] = len;
    m->vals[j] = val;
    m->count++;
    return RN_OK;
}

int32_t rn__strmap_get(const rn_strmap *m, const char *key, size_t len)
{
    if (m->cap == 0)
        return -1;
    size_t j = hash_bytes(key, len) & (m->cap - 1);
    while (m->keys[j]) {
        if (m->klen[j] == len && memcmp(m->keys[j], key, len) == 0)
            return m->vals[j];
        j = (j + 1) & (m->cap - 1);
    }
    return -1;
}

/* ------------------------------------------------------------- merges */

int rn__bpe_init_merges(rn_bpe *b, size_t n_merges)
{
    size_t cap = 16;
    while (cap < n_merges * 2 + 16)
        cap <<= 1;
    b->mcap = cap;
    b->mkeys = calloc(cap, sizeof *b->mkeys);
    b->mrank = calloc(cap, sizeof *b->mrank);
    b->mnew = calloc(cap, sizeof *b->mnew);
    return b->mkeys && b->mrank && b->mnew ? RN_OK : RN_ENOMEM;
}

void rn__bpe_deinit(rn_bpe *b)
{
    rn__strmap_deinit(&b->vocab);
    free(b->mkeys);
    free(b->mrank);
    free(b->mnew);
    b->mkeys = NULL;
    b->mrank = b->mnew = NULL;
}

/* The first occurrence of a pair keeps its rank, as in `tokenizers`. */
int rn__bpe_add_merge(rn_bpe *b, int32_t left, int32_t right, int32_t rank, int32_t new_id)
{
    uint64_t key = (((uint64_t)(uint32_t)left << 32) | (uint32_t)right) + 1;
    size_t j = hash_u64(key) & (b->mcap - 1);
    while (b->mkeys[j]) {
        if (b->mkeys[j] == key)
            return 1;
        j = (j + 1) & (b->mcap - 1);
    }
    b->mkeys[j] = key;
    b->mrank[j] = rank;
    b->mnew[j] = new_id;
    return RN_OK;
}

static int find_merge(const rn_bpe *b, int32_t left, int32_t right, int32_t *rank, int32_t *new_id)
{
    uint64_t key = (((uint64_t)(uint32_t)left << 32) | (uint32_t)right) + 1;
    size_t j = hash_u64(key) & (b->mcap - 1);
    while (b->mkeys[j]) {
        if (b->mkeys[j] == key) {
            *rank = b->mrank[j];
            *new_id = b->mnew[j];
            return 1;
        }
        j = (j + 1) & (b->mcap - 1);
    }
    return 0;
}

/* ------------------------------------------------------------ the word */

typedef struct {
    int32_t id;
    int prev, next; /* -1 at the ends; next == -2 marks a merged-away symbol */
} sym;

typedef struct {
    int32_t rank;
    int pos;       /* left symbol */
    int32_t right; /* right symbol id when queued: stale entries are skipped */
    int32_t left;
    int32_t new_id;
} cand;

static int cand_less(const cand *a, const cand *b)
{
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

typedef struct {
    cand *v;
    int n, cap;
} heap;

static int heap_push(heap *h, cand c)
{
    if (h->n == h->cap) {
        int cap = h->cap ? 2 * h->cap : 64;
        cand *v = realloc(h->v, sizeof *v * (size_t)cap);
        if (!v)
            return RN_ENOMEM;
        h->v = v;
        h->cap = cap;
    }
    int i = h->n++;
    while (i > 0 && cand_less(&c, &h->v[(i - 1) / 2])) {
        h->v[i] = h->v[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h->v[i] = c;
    return RN_OK;
}

static cand heap_pop(heap *h)
{
    cand top = h->v[0], last = h->v[--h->n];
    int i = 0;
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        const cand *mv = &last;
        if (l < h->n && cand_less(&h->v[l], mv))
            m = l, mv = &h->v[l];
        if (r < h->n && cand_less(&h->v[r], mv))
            m = r;
        if (m == i)
            break;
        h->v[i] = h->v[m];
        i = m;
    }
    if (h->n > 0)
        h->v[i] = last;
    return top;
}

static int push_pair(const rn_bpe *b, heap *h, const sym *s, int pos)
{
    int nx = s[pos].next;
    int32_t rank, nid;
    if (nx < 0 || !find_merge(b, s[pos].id, s[nx].id, &rank, &nid))
        return RN_OK;
    return heap_push(h, (cand){rank, pos, s[nx].id, s[pos].id, nid});
}

static int append_sym(sym **s, int *n, int *cap, int32_t id)
{
    if (*n == *cap) {
        int c = *cap ? 2 * *cap : 32;
        sym *v = realloc(*s, sizeof *v * (size_t)c);
        if (!v)
            return RN_ENOMEM;
        *s = v;
        *cap = c;
    }
    (*s)[*n] = (sym){id, *n - 1, -1};
    if (*n > 0)
        (*s)[*n - 1].next = *n;
    (*n)++;
    return RN_OK;
}

static int have_byte_tokens(const rn_bpe *b, const char *s, size_t k)
{
    for (size_t q = 0; q < k; q++)
        if (b->byte_ids[(unsigned char)s[q]] < 0)
            return 0;
    return 1;
}

/* The word's initial symbols: vocabulary characters, else byte tokens, else unk. */
static int initial_symbols(const rn_bpe *b, const char *w, size_t len, sym **s, int *n, int *cap)
{
    size_t i = 0;
    int last_unk = 0;
    while (i < len) {
        uint32_t cp;
        size_t k = rn_utf8_next((const unsigned char *)w + i, len - i, &cp);
        int32_t id = rn__strmap_get(&b->vocab, w + i, k);
        int rc = RN_OK;
        if (id >= 0) {
            rc = append_sym(s, n, cap, id);
            last_unk = 0;
        } else if (b->byte_fallback && have_byte_tokens(b, w + i, k)) {
            for (size_t q = 0; q < k && rc == RN_OK; q++)
                rc = append_sym(s, n, cap, b->byte_ids[(unsigned char)w[i + q]]);
            last_unk = 0;
        } else if (b->unk_id >= 0) {
            if (!(b->fuse_unk && last_unk))
                rc = append_sym(s, n, cap, b->unk_id);
            last_unk = 1;
        }
        if (rc != RN_OK)
            return rc;
        i += k;
    }
    return RN_OK;
}

int rn__ids_push(int32_t **out, int *n, int *cap, int32_t id)
{
    if (*n == *cap) {
        int c = *cap ? 2 * *cap : 64;
        int32_t *v = realloc(*out, sizeof *v * (size_t)c);
        if (!v)
            return RN_ENOMEM;
        *out = v;
        *cap = c;
    }
    (*out)[(*n)++] = id;
    return RN_OK;
}

int rn__bpe_word(const rn_bpe *b, const char *word, size_t len, int32_t **out, int *n, int *cap)
{
    if (len == 0)
        return RN_OK;
    if (b->ignore_merges) {
        int32_t id = rn__strmap_get(&b->vocab, word, len);
        if (id >= 0)
            return rn__ids_push(out, n, cap, id);
    }
    sym *s = NULL;
    heap h = {0};
    int ns = 0, scap = 0, rc = initial_symbols(b, word, len, &s, &ns, &scap);
    for (int i = 0; rc == RN_OK && i < ns; i++)
        rc = push_pair(b, &h, s, i);
    while (rc == RN_OK && h.n > 0) {
        cand c = heap_pop(&h);
        int nx = s[c.pos].next;
        /* stale: the left symbol was merged away or changed, or its right neighbour changed */
        if (nx < 0 || s[c.pos].next == -2 || s[c.pos].id != c.left || s[nx].id != c.right)
            continue;
        s[c.pos].id = c.new_id;
        s[c.pos].next = s[nx].next;
        if (s[nx].next >= 0)
            s[s[nx].next].prev = c.pos;
        s[nx].next = -2;
        s[nx].id = -1;
        if (s[c.pos].prev >= 0)
            rc = push_pair(b, &h, s, s[c.pos].prev);
        if (rc == RN_OK)
            rc = push_pair(b, &h, s, c.pos);
    }
    for (int i = 0; rc == RN_OK && ns > 0 && i >= 0; i = s[i].next)
        rc = rn__ids_push(out, n, cap, s[i].id);
    free(s);
    free(h.v);
    return rc;
}
