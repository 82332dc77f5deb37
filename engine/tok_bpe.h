/*
 * tok_bpe.h -- the BPE model behind the tokenizer (engine-internal):
 * vocabulary hash map, merge ranks keyed by token-id pairs, and the merge
 * loop (a min-heap over candidate pairs, so a long word costs n log n, never
 * a rescan per merge).
 */
#ifndef RN_TOK_BPE_H
#define RN_TOK_BPE_H

#include <stddef.h>
#include <stdint.h>

/* Open-addressing map from byte strings to int32 values. */
typedef struct rn_strmap {
    size_t cap, count;
    char **keys;
    size_t *klen;
    int32_t *vals;
} rn_strmap;

int rn__strmap_init(rn_strmap *m, size_t expected);
void rn__strmap_deinit(rn_strmap *m);
/* Inserts a copy of key; an existing key keeps its first value (returns 1). */
int rn__strmap_put(rn_strmap *m, const char *key, size_t len, int32_t val);
/* Returns the value or -1. */
int32_t rn__strmap_get(const rn_strmap *m, const char *key, size_t len);

typedef struct rn_bpe {
    rn_strmap vocab;
    /* merges: open addressing on (left id, right id) */
    size_t mcap;
    uint64_t *mkeys; /* (left << 32 | right) + 1; 0 = empty */
    int32_t *mrank, *mnew;
    int32_t unk_id; /* -1 when none */
    int fuse_unk;
    int byte_fallback;
    int ignore_merges;
    int32_t byte_ids[256]; /* <0xNN> ids, -1 when absent */
} rn_bpe;

int rn__bpe_add_merge(rn_bpe *b, int32_t left, int32_t right, int32_t rank, int32_t new_id);
int rn__bpe_init_merges(rn_bpe *b, size_t n_merges);
void rn__bpe_deinit(rn_bpe *b);

/* Appends id to the growing array *out (*n used, *cap allocated).
 * Returns 0 or RN_ENOMEM (then *out is unchanged). */
int rn__ids_push(int32_t **out, int *n, int *cap, int32_t id);

/* Appends the ids of one pre-tokenized word (UTF-8) to *out (a growing
 * array: *n used, *cap allocated).  Returns 0 or RN_ENOMEM. */
int rn__bpe_word(const rn_bpe *b, const char *word, size_t len, int32_t **out, int *n, int *cap);

#endif
