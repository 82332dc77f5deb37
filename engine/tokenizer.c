/*
 * tokenizer.c -- tokenizer.json loading and the encode/decode pipelines of
 * `tokenizers` (normalizer -> pre-tokenizer -> BPE; decoder chain), for the
 * components real RetNet checkpoints use.  Anything else in a tokenizer.json
 * is refused at load with a message naming it, never silently ignored.
 *
 * Encode:  sanitize UTF-8 -> split out added tokens -> per segment:
 *          normalizer (Prepend, Replace) -> pre-tokenizer (ByteLevel with the
 *          GPT-2 regex via PCRE2, Metaspace) -> BPE per word (cached).
 * Decode:  ids -> token strings -> decoder chain (ByteLevel, Metaspace,
 *          Replace, ByteFallback, Fuse, Strip) -> concatenation.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "tok_bpe.h"
#include "tokenizer.h"
#include "utf8.h"
#include "util.h"

#define MAX_TOKENIZER_BYTES (256u << 20)
#define MAX_STEPS 16
#define CACHE_WORDS 65536
/* GPT-2's split regex.  \s is spelled out as the Unicode White_Space set,
 * which is what `tokenizers` (Oniguruma) matches; PCRE2's \s leaves out
 * U+0085.  WS_NOT is its complement, for (?!\S). */
#define WS                                                                                         \
    "\\t\\n\\x{0b}\\f\\r "                                                                         \
    "\\x{85}\\x{a0}\\x{1680}\\x{2000}-\\x{200a}\\x{2028}\\x{2029}\\x{202f}\\x{205f}\\x{3000}"
#define GPT2_SPLIT                                                                                 \
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" WS "\\p{L}\\p{N}]+|[" WS "]+(?![^" WS       \
    "])|[" WS "]+"

typedef enum { NORM_PREPEND, NORM_REPLACE } norm_kind;
typedef enum { PRE_BYTELEVEL, PRE_METASPACE } pre_kind;
typedef enum { PREPEND_ALWAYS, PREPEND_FIRST, PREPEND_NEVER } prepend_scheme;
typedef enum {
    DEC_BYTELEVEL,
    DEC_METASPACE,
    DEC_REPLACE,
    DEC_BYTEFALLBACK,
    DEC_FUSE,
    DEC_STRIP
} dec_kind;

typedef struct {
    int kind;
    char *a, *b; /* prepend / replace pattern, replace content / metaspace char */
    size_t alen, blen;
    int add_prefix_space;   /* ByteLevel */
    int use_regex;          /* ByteLevel */
    prepend_scheme prepend; /* Metaspace */
    int split;              /* Metaspace */
    uint32_t strip_char;    /* Strip */
    int start, stop;        /* Strip */
} step;

typedef struct {
    char *s;
    size_t len;
    int32_t id;
    int special;
} added_token;

typedef struct {
    int32_t *ids;
    int n;
} cache_entry;

struct rn_tokenizer {
    rn_bpe bpe;
    int n_ids;
    char **piece;
    size_t *piece_len;
    unsigned char *special;
    int n_added;
    added_token *added;
    int n_norm, n_pre, n_dec;
    step norm[MAX_STEPS], pre[MAX_STEPS], dec[MAX_STEPS];
    pcre2_code *split_re;
    pcre2_match_data *md;
    char byte_char[256][3]; /* byte-level alphabet: byte -> UTF-8 of its char */
    unsigned char byte_char_len[256];
    int16_t char_byte[512]; /* code point (< 512) -> byte, -1 */
    rn_strmap cache;        /* word -> index in cache_entries */
    cache_entry *cache_entries;
    int n_cache;
};

/* ------------------------------------------------------------ buffers */

typedef struct {
    char *p;
    size_t n, cap;
} buf;

static int buf_add(buf *b, const void *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        size_t c = b->cap ? b->cap : 64;
        while (c < b->n + n + 1)
            c *= 2;
        char *p = realloc(b->p, c);
        if (!p)
            return RN_ENOMEM;
        b->p = p;
        b->cap = c;
    }
    if (n)
        memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
    return RN_OK;
}

/* A list of strings (the units pre-tokenizers and decoders work on). */
typedef struct {
    buf *v;
    int n, cap;
} strlist;

static buf *strlist_add(strlist *l)
{
    if (l->n == l->cap) {
        int c = l->cap ? 2 * l->cap : 16;
        buf *v = realloc(l->v, sizeof *v * (size_t)c);
        if (!v)
            return NULL;
        l->v = v;
        l->cap = c;
    }
    buf *b = &l->v[l->n++];
    memset(b, 0, sizeof *b);
    if (buf_add(b, "", 0) != RN_OK) {
        l->n--;
        return NULL;
    }
    return b;
}

static void strlist_free(strlist *l)
{
    for (int i = 0; i < l->n; i++)
        free(l->v[i].p);
    free(l->v);
    memset(l, 0, sizeof *l);
}

/* ------------------------------------------------------- byte level map */

/* GPT-2's reversible byte -> printable character map. */
static void init_byte_level(rn_tokenizer *t)
{
    int n = 0;
    memset(t->char_byte, 0xff, sizeof t->char_byte);
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        uint32_t cp = printable ? (uint32_t)b : (uint32_t)(256 + n++);
        t->byte_char_len[b] = (unsigned char)rn_utf8_put(cp, t->byte_char[b]);
        t->char_byte[cp] = (int16_t)b;
    }
}

/* ---------------------------------------------------------- JSON load */

static int json_str(const cJSON *o, const char *k, const char **out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!cJSON_IsString(v))
        return -1;
    *out = v->valuestring;
    return 0;
}

static int json_bool(const cJSON *o, const char *k, int def)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsBool(v) ? cJSON_IsTrue(v) : def;
}

static char *dupn(const char *s, size_t *len)
{
    *len = strlen(s);
    return rn__strdup(s);
}

static int load_vocab(rn_tokenizer *t, const cJSON *model, const char *path, rn_error *err)
{
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    if (!cJSON_IsObject(vocab))
        return rn_error_set(err, RN_EFORMAT, "%s: model.vocab must be an object", path);
    int n = cJSON_GetArraySize(vocab), max_id = -1;
    if (rn__strmap_init(&t->bpe.vocab, (size_t)n) != RN_OK)
        return rn_error_set(err, RN_ENOMEM, "out of memory");
    const cJSON *it;
    cJSON_ArrayForEach(it, vocab)
    {
        if (!cJSON_IsNumber(it) || it->valuedouble < 0 || it->valuedouble >= (1 << 24) ||
            (double)(int)it->valuedouble != it->valuedouble)
            return rn_error_set(err, RN_EFORMAT, "%s: vocab entry '%s' has a bad id", path,
                                it->string);
        int id = (int)it->valuedouble;
        if (rn__strmap_put(&t->bpe.vocab, it->string, strlen(it->string), id) == RN_ENOMEM)
            return rn_error_set(err, RN_ENOMEM, "out of memory");
        max_id = id > max_id ? id : max_id;
    }
    t->n_ids = max_id + 1;
    return RN_OK;
}

static int load_merges(rn_tokenizer *t, const cJSON *model, const char *path, rn_error *err)
{
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (merges && !cJSON_IsArray(merges))
        return rn_error_set(err, RN_EFORMAT, "%s: model.merges must be an array", path);
    int n = merges ? cJSON_GetArraySize(merges) : 0, rank = 0;
    if (rn__bpe_init_merges(&t->bpe, (size_t)n) != RN_OK)
        return rn_error_set(err, RN_ENOMEM, "out of memory");
    const cJSON *it;
    buf joined = {0};
    int rc = RN_OK;
    cJSON_ArrayForEach(it, merges)
    {
        const char *a, *b;
        size_t la, lb;
        if (cJSON_IsString(it)) { /* "left right" */
            const char *sp = strchr(it->valuestring, ' ');
            if (!sp) {
                rc = rn_error_set(err, RN_EFORMAT, "%s: merge %d '%s' is not 'a b'", path, rank,
                                  it->valuestring);
                break;
            }
            a = it->valuestring, la = (size_t)(sp - a), b = sp + 1, lb = strlen(b);
        } else if (cJSON_IsArray(it) && cJSON_GetArraySize(it) == 2 &&
                   cJSON_IsString(cJSON_GetArrayItem(it, 0)) &&
                   cJSON_IsString(cJSON_GetArrayItem(it, 1))) {
            a = cJSON_GetArrayItem(it, 0)->valuestring, la = strlen(a);
            b = cJSON_GetArrayItem(it, 1)->valuestring, lb = strlen(b);
        } else {
            rc = rn_error_set(err, RN_EFORMAT, "%s: merge %d is malformed", path, rank);
            break;
        }
        int32_t ia = rn__strmap_get(&t->bpe.vocab, a, la),
                ib = rn__strmap_get(&t->bpe.vocab, b, lb);
        joined.n = 0;
        if (buf_add(&joined, a, la) != RN_OK || buf_add(&joined, b, lb) != RN_OK) {
            rc = rn_error_set(err, RN_ENOMEM, "out of memory");
            break;
        }
        int32_t inew = rn__strmap_get(&t->bpe.vocab, joined.p, joined.n);
        if (ia < 0 || ib < 0 || inew < 0) {
            rc = rn_error_set(err, RN_EFORMAT, "%s: merge %d uses a token not in the vocabulary",
                              path, rank);
            break;
        }
        rn__bpe_add_merge(&t->bpe, ia, ib, rank++, inew);
    }
    free(joined.p);
    return rc;
}

static int load_model(rn_tokenizer *t, const cJSON *root, const char *path, rn_error *err)
{
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const char *type = NULL, *unk = NULL, *s;
    if (!cJSON_IsObject(model) || json_str(model, "type", &type) != 0)
        return rn_error_set(err, RN_EFORMAT, "%s: missing model.type", path);
    if (strcmp(type, "BPE") != 0)
        return rn_error_set(err, RN_EUNSUPPORTED, "%s: model type '%s' (only BPE)", path, type);
    if ((json_str(model, "continuing_subword_prefix", &s) == 0 && s[0]) ||
        (json_str(model, "end_of_word_suffix", &s) == 0 && s[0]))
        return rn_error_set(err, RN_EUNSUPPORTED,
                            "%s: BPE subword prefixes/suffixes are not supported", path);
    int rc = load_vocab(t, model, path, err);
    if (rc == RN_OK)
        rc = load_merges(t, model, path, err);
    if (rc != RN_OK)
        return rc;
    t->bpe.unk_id = json_str(model, "unk_token", &unk) == 0
                        ? rn__strmap_get(&t->bpe.vocab, unk, strlen(unk))
                        : -1;
    t->bpe.fuse_unk = json_bool(model, "fuse_unk", 0);
    t->bpe.byte_fallback = json_bool(model, "byte_fallback", 0);
    t->bpe.ignore_merges = json_bool(model, "ignore_merges", 0);
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        t->bpe.byte_ids[b] = rn__strmap_get(&t->bpe.vocab, name, 6);
    }
    return RN_OK;
}

static int load_added(rn_tokenizer *t, const cJSON *root, const char *path, rn_error *err)
{
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(root, "added_tokens"), *it;
    if (!arr)
        return RN_OK;
    if (!cJSON_IsArray(arr))
        return rn_error_set(err, RN_EFORMAT, "%s: added_tokens must be an array", path);
    t->added = calloc((size_t)cJSON_GetArraySize(arr) + 1, sizeof *t->added);
    if (!t->added)
        return rn_error_set(err, RN_ENOMEM, "out of memory");
    cJSON_ArrayForEach(it, arr)
    {
        const char *content;
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(it, "id");
        if (json_str(it, "content", &content) != 0 || !content[0] || !cJSON_IsNumber(id) ||
            id->valuedouble < 0 || id->valuedouble >= (1 << 24))
            return rn_error_set(err, RN_EFORMAT, "%s: malformed added token", path);
        added_token *a = &t->added[t->n_added++];
        a->s = dupn(content, &a->len);
        a->id = (int32_t)id->valuedouble;
        a->special = json_bool(it, "special", 0);
        if (!a->s)
            return rn_error_set(err, RN_ENOMEM, "out of memory");
        if (a->id >= t->n_ids)
            t->n_ids = a->id + 1;
    }
    return RN_OK;
}

/* id -> piece table: vocabulary strings, overridden by added tokens. */
static int build_pieces(rn_tokenizer *t, rn_error *err)
{
    t->piece = calloc((size_t)t->n_ids + 1, sizeof *t->piece);
    t->piece_len = calloc((size_t)t->n_ids + 1, sizeof *t->piece_len);
    t->special = calloc((size_t)t->n_ids + 1, 1);
    if (!t->piece || !t->piece_len || !t->special)
        return rn_error_set(err, RN_ENOMEM, "out of memory");
    const rn_strmap *v = &t->bpe.vocab;
    for (size_t i = 0; i < v->cap; i++)
        if (v->keys[i] && !t->piece[v->vals[i]]) {
            t->piece[v->vals[i]] = v->keys[i]; /* borrowed from the map */
            t->piece_len[v->vals[i]] = v->klen[i];
        }
    for (int i = 0; i < t->n_added; i++) {
        t->piece[t->added[i].id] = t->added[i].s;
        t->piece_len[t->added[i].id] = t->added[i].len;
        t->special[t->added[i].id] = (unsigned char)t->added[i].special;
    }
    return RN_OK;
}

/* -------------------------------------------------- pipeline components */

static int add_steps(step *steps, int *n, const cJSON *node, const char *section, const char *path,
                     int (*one)(step *, const cJSON *, const char *, rn_error *), rn_error *err)
{
    const char *type = "";
    if (!node || cJSON_IsNull(node))
        return RN_OK;
    if (json_str(node, "type", &type) != 0)
        return rn_error_set(err, RN_EFORMAT, "%s: %s without a type", path, section);
    if (strcmp(type, "Sequence") == 0) {
        const char *key = strcmp(section, "normalizer") == 0 ? "normalizers"
                          : strcmp(section, "decoder") == 0  ? "decoders"
                                                             : "pretokenizers";
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(node, key), *it;
        if (!cJSON_IsArray(arr))
            return rn_error_set(err, RN_EFORMAT, "%s: %s Sequence without '%s'", path, section,
                                key);
        cJSON_ArrayForEach(it, arr)
        {
            int rc = add_steps(steps, n, it, section, path, one, err);
            if (rc != RN_OK)
                return rc;
        }
        return RN_OK;
    }
    if (*n == MAX_STEPS)
        return rn_error_set(err, RN_EUNSUPPORTED, "%s: more than %d %s steps", path, MAX_STEPS,
                            section);
    memset(&steps[*n], 0, sizeof steps[*n]);
    int rc = one(&steps[*n], node, path, err);
    if (rc == RN_OK)
        (*n)++;
    return rc;
}

/* Replace's pattern: {"String": "..."}; regex patterns are not supported. */
static int replace_pattern(step *s, const cJSON *node, const char *path, rn_error *err)
{
    const cJSON *pat = cJSON_GetObjectItemCaseSensitive(node, "pattern");
    const char *str, *content;
    if (!cJSON_IsObject(pat) || json_str(pat, "String", &str) != 0 ||
        json_str(node, "content", &content) != 0 || !str[0])
        return rn_error_set(err, RN_EUNSUPPORTED,
                            "%s: Replace needs a non-empty String pattern and a content", path);
    s->a = dupn(str, &s->alen);
    s->b = dupn(content, &s->blen);
    return s->a && s->b ? RN_OK : rn_error_set(err, RN_ENOMEM, "out of memory");
}

static int one_normalizer(step *s, const cJSON *node, const char *path, rn_error *err)
{
    const char *type = "", *prepend;
    json_str(node, "type", &type);
    if (strcmp(type, "Prepend") == 0 && json_str(node, "prepend", &prepend) == 0) {
        s->kind = NORM_PREPEND;
        s->a = dupn(prepend, &s->alen);
        return s->a ? RN_OK : rn_error_set(err, RN_ENOMEM, "out of memory");
    }
    if (strcmp(type, "Replace") == 0) {
        s->kind = NORM_REPLACE;
        return replace_pattern(s, node, path, err);
    }
    return rn_error_set(err, RN_EUNSUPPORTED, "%s: normalizer '%s' is not supported", path, type);
}

static int metaspace_fields(step *s, const cJSON *node, const char *path, rn_error *err)
{
    const char *rep, *scheme;
    if (json_str(node, "replacement", &rep) != 0 || !rep[0])
        return rn_error_set(err, RN_EFORMAT, "%s: Metaspace without a replacement", path);
    s->a = dupn(rep, &s->alen);
    if (!s->a)
        return rn_error_set(err, RN_ENOMEM, "out of memory");
    s->split = json_bool(node, "split", 1);
    if (json_str(node, "prepend_scheme", &scheme) == 0)
        s->prepend = !strcmp(scheme, "first")   ? PREPEND_FIRST
                     : !strcmp(scheme, "never") ? PREPEND_NEVER
                                                : PREPEND_ALWAYS;
    else /* older files: add_prefix_space */
        s->prepend = json_bool(node, "add_prefix_space", 1) ? PREPEND_ALWAYS : PREPEND_NEVER;
    return RN_OK;
}

static int one_pretokenizer(step *s, const cJSON *node, const char *path, rn_error *err)
{
    const char *type = "";
    json_str(node, "type", &type);
    if (strcmp(type, "ByteLevel") == 0) {
        s->kind = PRE_BYTELEVEL;
        s->add_prefix_space = json_bool(node, "add_prefix_space", 1);
        s->use_regex = json_bool(node, "use_regex", 1);
        return RN_OK;
    }
    if (strcmp(type, "Metaspace") == 0) {
        s->kind = PRE_METASPACE;
        return metaspace_fields(s, node, path, err);
    }
    return rn_error_set(err, RN_EUNSUPPORTED, "%s: pre_tokenizer '%s' is not supported", path,
                        type);
}

static int one_decoder(step *s, const cJSON *node, const char *path, rn_error *err)
{
    const char *type = "", *content;
    json_str(node, "type", &type);
    if (strcmp(type, "ByteLevel") == 0) {
        s->kind = DEC_BYTELEVEL;
        return RN_OK;
    }
    if (strcmp(type, "Metaspace") == 0) {
        s->kind = DEC_METASPACE;
        return metaspace_fields(s, node, path, err);
    }
    if (strcmp(type, "Replace") == 0) {
        s->kind = DEC_REPLACE;
        return replace_pattern(s, node, path, err);
    }
    if (strcmp(type, "ByteFallback") == 0) {
        s->kind = DEC_BYTEFALLBACK;
        return RN_OK;
    }
    if (strcmp(type, "Fuse") == 0) {
        s->kind = DEC_FUSE;
        return RN_OK;
    }
    if (strcmp(type, "Strip") == 0 && json_str(node, "content", &content) == 0) {
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(node, "start");
        const cJSON *sp = cJSON_GetObjectItemCaseSensitive(node, "stop");
        s->kind = DEC_STRIP;
        rn_utf8_next((const unsigned char *)content, strlen(content), &s->strip_char);
        s->start = cJSON_IsNumber(st) ? (int)st->valuedouble : 0;
        s->stop = cJSON_IsNumber(sp) ? (int)sp->valuedouble : 0;
        return RN_OK;
    }
    return rn_error_set(err, RN_EUNSUPPORTED, "%s: decoder '%s' is not supported", path, type);
}

static int compile_regex(rn_tokenizer *t, const char *path, rn_error *err)
{
    int errcode;
    PCRE2_SIZE erroff;
    t->split_re =
        pcre2_compile((PCRE2_SPTR)GPT2_SPLIT, PCRE2_ZERO_TERMINATED,
                      PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK, &errcode, &erroff, NULL);
    if (!t->split_re)
        return rn_error_set(err, RN_EUNSUPPORTED, "%s: cannot compile the ByteLevel regex", path);
    pcre2_jit_compile(t->split_re, PCRE2_JIT_COMPLETE); /* falls back to the interpreter */
    t->md = pcre2_match_data_create_from_pattern(t->split_re, NULL);
    return t->md ? RN_OK : rn_error_set(err, RN_ENOMEM, "out of memory");
}

static int load_pipeline(rn_tokenizer *t, const cJSON *root, const char *path, rn_error *err)
{
    int rc;
    if ((rc = add_steps(t->norm, &t->n_norm, cJSON_GetObjectItemCaseSensitive(root, "normalizer"),
                        "normalizer", path, one_normalizer, err)) ||
        (rc = add_steps(t->pre, &t->n_pre, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"),
                        "pre_tokenizer", path, one_pretokenizer, err)) ||
        (rc = add_steps(t->dec, &t->n_dec, cJSON_GetObjectItemCaseSensitive(root, "decoder"),
                        "decoder", path, one_decoder, err)))
        return rc;
    for (int i = 0; i < t->n_pre; i++)
        if (t->pre[i].kind == PRE_BYTELEVEL && t->pre[i].use_regex && !t->split_re &&
            (rc = compile_regex(t, path, err)) != RN_OK)
            return rc;
    return RN_OK;
}

int rn_tokenizer_load(rn_tokenizer **out, const char *path, rn_error *err)
{
    char *text = NULL;
    size_t len = 0;
    cJSON *root = NULL;
    int rc;
    *out = NULL;
    rn_tokenizer *t = calloc(1, sizeof *t);
    if (!t)
        return rn_error_set(err, RN_ENOMEM, "out of memory");
    t->bpe.unk_id = -1;
    init_byte_level(t);
    rc = rn__read_file(path, MAX_TOKENIZER_BYTES, &text, &len);
    if (rc != 0) {
        rc = rn_error_set(err, RN_EIO, "%s: %s", path, rn__read_error(rc));
        goto fail;
    }
    root = cJSON_ParseWithLength(text, len);
    if (!cJSON_IsObject(root)) {
        rc = rn_error_set(err, RN_EFORMAT, "%s: not a JSON object", path);
        goto fail;
    }
    if ((rc = load_model(t, root, path, err)) || (rc = load_added(t, root, path, err)) ||
        (rc = build_pieces(t, err)) || (rc = load_pipeline(t, root, path, err)))
        goto fail;
    if (rn__strmap_init(&t->cache, CACHE_WORDS) != RN_OK ||
        !(t->cache_entries = calloc(CACHE_WORDS, sizeof *t->cache_entries))) {
        rc = rn_error_set(err, RN_ENOMEM, "out of memory");
        goto fail;
    }
    cJSON_Delete(root);
    free(text);
    *out = t;
    return RN_OK;
fail:
    cJSON_Delete(root);
    free(text);
    rn_tokenizer_free(t);
    return rc;
}

static void clear_cache(rn_tokenizer *t)
{
    for (int i = 0; i < t->n_cache; i++)
        free(t->cache_entries[i].ids);
    t->n_cache = 0;
    if (t->cache.cap) {
        rn__strmap_deinit(&t->cache);
        rn__strmap_init(&t->cache, CACHE_WORDS);
    }
}

void rn_tokenizer_free(rn_tokenizer *t)
{
    if (!t)
        return;
    step *all[] = {t->norm, t->pre, t->dec};
    int counts[] = {t->n_norm, t->n_pre, t->n_dec};
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < counts[k]; i++) {
            free(all[k][i].a);
            free(all[k][i].b);
        }
    for (int i = 0; i < t->n_added; i++)
        free(t->added[i].s);
    free(t->added);
    free(t->piece);
    free(t->piece_len);
    free(t->special);
    for (int i = 0; i < t->n_cache; i++)
        free(t->cache_entries[i].ids);
    free(t->cache_entries);
    rn__strmap_deinit(&t->cache);
    if (t->md)
        pcre2_match_data_free(t->md);
    if (t->split_re)
        pcre2_code_free(t->split_re);
    rn__bpe_deinit(&t->bpe);
    free(t);
}

int rn_tokenizer_vocab_size(const rn_tokenizer *t)
{
    return t->n_ids;
}

const char *rn_tokenizer_piece(const rn_tokenizer *t, int32_t id)
{
    return id >= 0 && id < t->n_ids ? t->piece[id] : NULL;
}

int32_t rn_tokenizer_find(const rn_tokenizer *t, const char *piece)
{
    for (int i = 0; i < t->n_added; i++)
        if (strcmp(t->added[i].s, piece) == 0)
            return t->added[i].id;
    return rn__strmap_get(&t->bpe.vocab, piece, strlen(piece));
}

int rn_tokenizer_is_special(const rn_tokenizer *t, int32_t id)
{
    return id >= 0 && id < t->n_ids && t->special[id];
}

/* ------------------------------------------------------------- encode */

/* Replaces every occurrence of pat with rep in b (in place via a copy). */
static int replace_all(buf *b, const char *pat, size_t plen, const char *rep, size_t rlen)
{
    buf out = {0};
    int rc = buf_add(&out, "", 0);
    for (size_t i = 0; rc == RN_OK && i < b->n;) {
        if (i + plen <= b->n && memcmp(b->p + i, pat, plen) == 0) {
            rc = buf_add(&out, rep, rlen);
            i += plen;
        } else {
            rc = buf_add(&out, b->p + i, 1);
            i++;
        }
    }
    if (rc != RN_OK) {
        free(out.p);
        return rc;
    }
    free(b->p);
    *b = out;
    return RN_OK;
}

static int prepend(buf *b, const char *s, size_t n)
{
    buf out = {0};
    int rc = buf_add(&out, s, n);
    if (rc == RN_OK)
        rc = buf_add(&out, b->p, b->n);
    if (rc != RN_OK) {
        free(out.p);
        return rc;
    }
    free(b->p);
    *b = out;
    return RN_OK;
}

static int normalize(const rn_tokenizer *t, buf *b)
{
    int rc = RN_OK;
    for (int i = 0; rc == RN_OK && i < t->n_norm; i++) {
        const step *s = &t->norm[i];
        if (s->kind == NORM_PREPEND && b->n > 0)
            rc = prepend(b, s->a, s->alen);
        else if (s->kind == NORM_REPLACE)
            rc = replace_all(b, s->a, s->alen, s->b, s->blen);
    }
    return rc;
}

/* Splits w by the GPT-2 regex: matches and the gaps between them. */
static int regex_split(rn_tokenizer *t, const buf *w, strlist *out)
{
    size_t off = 0, last = 0;
    while (off < w->n) {
        int r =
            pcre2_match(t->split_re, (PCRE2_SPTR)w->p, w->n, off, PCRE2_NO_UTF_CHECK, t->md, NULL);
        if (r < 0)
            break;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(t->md);
        if (ov[1] == ov[0]) { /* never for this pattern; guard against a loop */
            off = ov[1] + 1;
            continue;
        }
        buf *b;
        if (ov[0] > last && (!(b = strlist_add(out)) || buf_add(b, w->p + last, ov[0] - last)))
            return RN_ENOMEM;
        if (!(b = strlist_add(out)) || buf_add(b, w->p + ov[0], ov[1] - ov[0]))
            return RN_ENOMEM;
        off = last = ov[1];
    }
    buf *b;
    if (last < w->n && (!(b = strlist_add(out)) || buf_add(b, w->p + last, w->n - last)))
        return RN_ENOMEM;
    return RN_OK;
}

static int byte_level_words(rn_tokenizer *t, const step *s, const buf *w, strlist *out)
{
    strlist parts = {0};
    buf tmp = {0};
    int rc = buf_add(&tmp, "", 0);
    if (rc == RN_OK && s->add_prefix_space && (w->n == 0 || w->p[0] != ' '))
        rc = buf_add(&tmp, " ", 1);
    if (rc == RN_OK)
        rc = buf_add(&tmp, w->p, w->n);
    if (rc == RN_OK && s->use_regex)
        rc = regex_split(t, &tmp, &parts);
    else if (rc == RN_OK) {
        buf *b = strlist_add(&parts);
        rc = b ? buf_add(b, tmp.p, tmp.n) : RN_ENOMEM;
    }
    for (int i = 0; rc == RN_OK && i < parts.n; i++) {
        buf *b = strlist_add(out);
        for (size_t k = 0; b && rc == RN_OK && k < parts.v[i].n; k++) {
            unsigned char c = (unsigned char)parts.v[i].p[k];
            rc = buf_add(b, t->byte_char[c], t->byte_char_len[c]);
        }
        if (!b)
            rc = RN_ENOMEM;
    }
    free(tmp.p);
    strlist_free(&parts);
    return rc;
}

static int metaspace_words(const step *s, const buf *w, int first, strlist *out)
{
    buf tmp = {0};
    int rc = buf_add(&tmp, w->p, w->n);
    if (rc == RN_OK)
        rc = replace_all(&tmp, " ", 1, s->a, s->alen);
    int want = s->prepend == PREPEND_ALWAYS || (s->prepend == PREPEND_FIRST && first);
    if (rc == RN_OK && want && !(tmp.n >= s->alen && memcmp(tmp.p, s->a, s->alen) == 0))
        rc = prepend(&tmp, s->a, s->alen);
    if (rc == RN_OK && !s->split) {
        buf *b = strlist_add(out);
        rc = b ? buf_add(b, tmp.p, tmp.n) : RN_ENOMEM;
    } else if (rc == RN_OK) { /* split before each replacement char (MergedWithNext) */
        size_t start = 0;
        for (size_t i = 1; rc == RN_OK && i <= tmp.n; i++) {
            if (i == tmp.n || (i + s->alen <= tmp.n && memcmp(tmp.p + i, s->a, s->alen) == 0)) {
                buf *b = strlist_add(out);
                rc = b ? buf_add(b, tmp.p + start, i - start) : RN_ENOMEM;
                start = i;
            }
        }
    }
    free(tmp.p);
    return rc;
}

/* Runs the pre-tokenizer steps over one normalized segment. */
static int pretokenize(rn_tokenizer *t, const buf *seg, int first, strlist *words)
{
    strlist cur = {0};
    buf *b = strlist_add(&cur);
    int rc = b ? buf_add(b, seg->p, seg->n) : RN_ENOMEM;
    for (int i = 0; rc == RN_OK && i < t->n_pre; i++) {
        strlist next = {0};
        for (int k = 0; rc == RN_OK && k < cur.n; k++)
            rc = t->pre[i].kind == PRE_BYTELEVEL
                     ? byte_level_words(t, &t->pre[i], &cur.v[k], &next)
                     : metaspace_words(&t->pre[i], &cur.v[k], first, &next);
        strlist_free(&cur);
        cur = next;
    }
    if (rc == RN_OK) {
        *words = cur;
        return RN_OK;
    }
    strlist_free(&cur);
    return rc;
}

/* BPE of one word through the word cache. */
static int encode_word(rn_tokenizer *t, const char *w, size_t n, int32_t **out, int *no, int *cap)
{
    int32_t ci = rn__strmap_get(&t->cache, w, n);
    if (ci >= 0) {
        const cache_entry *e = &t->cache_entries[ci];
        int rc = RN_OK;
        for (int i = 0; i < e->n && rc == RN_OK; i++)
            rc = rn__ids_push(out, no, cap, e->ids[i]);
        return rc;
    }
    int start = *no, rc = rn__bpe_word(&t->bpe, w, n, out, no, cap);
    if (rc != RN_OK || n > 256)
        return rc; /* long words are not worth caching */
    if (t->n_cache == CACHE_WORDS)
        clear_cache(t);
    cache_entry *e = &t->cache_entries[t->n_cache];
    e->n = *no - start;
    e->ids = malloc(sizeof(int32_t) * (size_t)(e->n ? e->n : 1));
    if (!e->ids || rn__strmap_put(&t->cache, w, n, t->n_cache) != RN_OK) {
        free(e->ids);
        e->ids = NULL;
        return RN_OK; /* caching is optional */
    }
    memcpy(e->ids, *out + start, sizeof(int32_t) * (size_t)e->n);
    t->n_cache++;
    return RN_OK;
}

static int encode_segment(rn_tokenizer *t, const char *s, size_t n, int first, int32_t **out,
                          int *no, int *cap)
{
    buf seg = {0};
    strlist words = {0};
    int rc = buf_add(&seg, s, n);
    if (rc == RN_OK)
        rc = normalize(t, &seg);
    if (rc == RN_OK)
        rc = pretokenize(t, &seg, first, &words);
    for (int i = 0; rc == RN_OK && i < words.n; i++)
        rc = encode_word(t, words.v[i].p, words.v[i].n, out, no, cap);
    strlist_free(&words);
    free(seg.p);
    return rc;
}

/* The longest added token starting at s[0..n), or NULL. */
static const added_token *match_added(const rn_tokenizer *t, const char *s, size_t n)
{
    const added_token *best = NULL;
    for (int i = 0; i < t->n_added; i++) {
        const added_token *a = &t->added[i];
        if (a->len <= n && (!best || a->len > best->len) && memcmp(s, a->s, a->len) == 0)
            best = a;
    }
    return best;
}

int rn_tokenizer_encode(rn_tokenizer *t, const char *text, size_t len, int32_t **ids, int *n)
{
    size_t clen;
    char *clean = rn_utf8_sanitize(text, len, &clen);
    int32_t *out = NULL;
    int no = 0, cap = 0, rc = clean ? RN_OK : RN_ENOMEM;
    size_t seg = 0;
    for (size_t i = 0; rc == RN_OK && i <= clen;) {
        const added_token *a = i < clen ? match_added(t, clean + i, clen - i) : NULL;
        if (i < clen && !a) {
            i++;
            continue;
        }
        if (i > seg)
            rc = encode_segment(t, clean + seg, i - seg, seg == 0, &out, &no, &cap);
        if (rc == RN_OK && a) {
            rc = rn__ids_push(&out, &no, &cap, a->id);
            i += a->len;
            seg = i;
        } else {
            break;
        }
    }
    free(clean);
    if (rc == RN_OK && !out && !(out = malloc(sizeof *out))) /* never NULL, even for 0 ids */
        rc = RN_ENOMEM;
    if (rc != RN_OK) {
        free(out);
        return rc;
    }
    *ids = out;
    *n = no;
    return RN_OK;
}

/* ------------------------------------------------------------- decode */

static int byte_token(const buf *b)
{
    unsigned v;
    char tail;
    if (b->n != 6 || memcmp(b->p, "<0x", 3) != 0 || b->p[5] != '>')
        return -1;
    if (sscanf(b->p + 3, "%2x%c", &v, &tail) != 2 || tail != '>')
        return -1;
    return (int)v;
}

/* ByteFallback: runs of <0xNN> become their bytes if valid UTF-8, else one
 * U+FFFD per byte.  *pending = 1 when the list ends in such a run (more byte
 * tokens could still change it). */
static int dec_byte_fallback(strlist *l, int *pending)
{
    strlist out = {0};
    buf run = {0};
    int rc = buf_add(&run, "", 0);
    *pending = 0;
    for (int i = 0; rc == RN_OK && i <= l->n; i++) {
        int v = i < l->n ? byte_token(&l->v[i]) : -1;
        if (v >= 0) {
            unsigned char c = (unsigned char)v;
            rc = buf_add(&run, &c, 1);
            continue;
        }
        if (run.n > 0) {
            buf *b = strlist_add(&out);
            if (!b)
                rc = RN_ENOMEM;
            else if (rn_utf8_valid((unsigned char *)run.p, run.n))
                rc = buf_add(b, run.p, run.n);
            else
                for (size_t k = 0; rc == RN_OK && k < run.n; k++)
                    rc = buf_add(b, "\xEF\xBF\xBD", 3);
            *pending = i == l->n;
            run.n = 0;
        }
        if (i < l->n && rc == RN_OK) {
            buf *b = strlist_add(&out);
            rc = b ? buf_add(b, l->v[i].p, l->v[i].n) : RN_ENOMEM;
        }
    }
    free(run.p);
    strlist_free(l);
    *l = out;
    return rc;
}

/* ByteLevel: every token's characters back to bytes (a token with a
 * character outside the alphabet keeps its own bytes), joined, then lossy
 * UTF-8.  *pending = 1 when the bytes end inside an unfinished character. */
static int dec_byte_level(const rn_tokenizer *t, strlist *l, int *pending)
{
    buf bytes = {0};
    int rc = buf_add(&bytes, "", 0);
    for (int i = 0; rc == RN_OK && i < l->n; i++) {
        const buf *tok = &l->v[i];
        size_t mark = bytes.n;
        int all = 1;
        for (size_t k = 0; all && rc == RN_OK && k < tok->n;) {
            uint32_t cp;
            size_t m = rn_utf8_next((const unsigned char *)tok->p + k, tok->n - k, &cp);
            if (cp < 512 && t->char_byte[cp] >= 0) {
                unsigned char c = (unsigned char)t->char_byte[cp];
                rc = buf_add(&bytes, &c, 1);
            } else {
                all = 0;
            }
            k += m;
        }
        if (!all && rc == RN_OK) {
            bytes.n = mark;
            rc = buf_add(&bytes, tok->p, tok->n);
        }
    }
    size_t clen = 0;
    *pending = rc == RN_OK && rn_utf8_complete_prefix((unsigned char *)bytes.p, bytes.n) < bytes.n;
    char *clean = rc == RN_OK ? rn_utf8_sanitize(bytes.p, bytes.n, &clen) : NULL;
    free(bytes.p);
    if (!clean)
        return RN_ENOMEM;
    strlist_free(l);
    buf *b = strlist_add(l);
    rc = b ? buf_add(b, clean, clen) : RN_ENOMEM;
    free(clean);
    return rc;
}

static int dec_metaspace(const step *s, strlist *l)
{
    for (int i = 0; i < l->n; i++) {
        int rc;
        if (i == 0 && s->prepend != PREPEND_NEVER)
            rc = replace_all(&l->v[i], s->a, s->alen, "", 0);
        else
            rc = replace_all(&l->v[i], s->a, s->alen, " ", 1);
        if (rc != RN_OK)
            return rc;
    }
    return RN_OK;
}

static int dec_fuse(strlist *l)
{
    buf all = {0};
    int rc = buf_add(&all, "", 0);
    for (int i = 0; rc == RN_OK && i < l->n; i++)
        rc = buf_add(&all, l->v[i].p, l->v[i].n);
    strlist_free(l);
    buf *b = rc == RN_OK ? strlist_add(l) : NULL;
    if (b)
        rc = buf_add(b, all.p, all.n);
    free(all.p);
    return b ? rc : RN_ENOMEM;
}

/* Strip: up to `start` leading and `stop` trailing copies of a character, per token. */
static void dec_strip(const step *s, strlist *l)
{
    char enc[4];
    size_t cl = rn_utf8_put(s->strip_char, enc);
    for (int i = 0; i < l->n; i++) {
        buf *b = &l->v[i];
        size_t lead = 0;
        for (int k = 0; k < s->start && lead + cl <= b->n && !memcmp(b->p + lead, enc, cl); k++)
            lead += cl;
        size_t end = b->n;
        for (int k = 0; k < s->stop && end >= lead + cl && !memcmp(b->p + end - cl, enc, cl); k++)
            end -= cl;
        memmove(b->p, b->p + lead, end - lead);
        b->n = end - lead;
        b->p[b->n] = '\0';
    }
}

/* Decodes ids to text; *unstable = 1 if later ids could still change the end
 * of the text (an unfinished character or byte-token run). */
static int decode_ids(const rn_tokenizer *t, const int32_t *ids, int n, int skip_special, buf *out,
                      int *unstable)
{
    strlist l = {0};
    int rc = RN_OK, pend = 0;
    *unstable = 0;
    for (int i = 0; rc == RN_OK && i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->n_ids || !t->piece[ids[i]])
            rc = RN_EINVAL;
        else if (!(skip_special && t->special[ids[i]])) {
            buf *b = strlist_add(&l);
            rc = b ? buf_add(b, t->piece[ids[i]], t->piece_len[ids[i]]) : RN_ENOMEM;
        }
    }
    for (int k = 0; rc == RN_OK && k < t->n_dec; k++) {
        const step *s = &t->dec[k];
        switch (s->kind) {
        case DEC_BYTELEVEL:
            rc = dec_byte_level(t, &l, &pend);
            *unstable |= pend;
            break;
        case DEC_BYTEFALLBACK:
            rc = dec_byte_fallback(&l, &pend);
            *unstable |= pend;
            break;
        case DEC_METASPACE:
            rc = dec_metaspace(s, &l);
            break;
        case DEC_REPLACE:
            for (int i = 0; rc == RN_OK && i < l.n; i++)
                rc = replace_all(&l.v[i], s->a, s->alen, s->b, s->blen);
            break;
        case DEC_FUSE:
            rc = dec_fuse(&l);
            break;
        case DEC_STRIP:
            dec_strip(s, &l);
            break;
        }
    }
    out->n = 0;
    if (rc == RN_OK)
        rc = buf_add(out, "", 0);
    for (int i = 0; rc == RN_OK && i < l.n; i++) {
        if (t->n_dec == 0 && i > 0) /* no decoder: `tokenizers` joins with spaces */
            rc = buf_add(out, " ", 1);
        if (rc == RN_OK)
            rc = buf_add(out, l.v[i].p, l.v[i].n);
    }
    strlist_free(&l);
    return rc;
}

int rn_tokenizer_decode(const rn_tokenizer *t, const int32_t *ids, int n, int skip_special,
                        char **out, size_t *len)
{
    buf b = {0};
    int unstable;
    int rc = decode_ids(t, ids, n, skip_special, &b, &unstable);
    if (rc != RN_OK) {
        free(b.p);
        return rc;
    }
    *out = b.p;
    *len = b.n;
    return RN_OK;
}

/* ------------------------------------------------------------ streaming */

/* The window method: text is emitted as decode(ids[prefix..]) minus
 * decode(ids[prefix..read]), where [prefix, read) are the ids of the last
 * emission, so decoders that look at the first token of a sequence (Strip,
 * Metaspace) see the same start in both decodes; emission waits while the
 * end is unstable. */
struct rn_detok {
    const rn_tokenizer *t;
    int skip_special;
    int32_t *ids;
    int n, cap, prefix, read;
    buf a, b, out;
};

int rn_detok_new(rn_detok **out, const rn_tokenizer *t, int skip_special)
{
    rn_detok *d = calloc(1, sizeof *d);
    *out = NULL;
    if (!d)
        return RN_ENOMEM;
    d->t = t;
    d->skip_special = skip_special;
    *out = d;
    return RN_OK;
}

void rn_detok_free(rn_detok *d)
{
    if (!d)
        return;
    free(d->ids);
    free(d->a.p);
    free(d->b.p);
    free(d->out.p);
    free(d);
}

static int detok_emit(rn_detok *d, int force, const char **text, size_t *len)
{
    int ua, ub, rc;
    *text = "";
    *len = 0;
    if ((rc = decode_ids(d->t, d->ids + d->prefix, d->read - d->prefix, d->skip_special, &d->a,
                         &ua)) ||
        (rc = decode_ids(d->t, d->ids + d->prefix, d->n - d->prefix, d->skip_special, &d->b, &ub)))
        return rc;
    if (!force && (ub || d->b.n < d->a.n || memcmp(d->a.p, d->b.p, d->a.n) != 0))
        return RN_OK; /* hold: the end may still change */
    size_t from = d->a.n <= d->b.n && memcmp(d->a.p, d->b.p, d->a.n) == 0 ? d->a.n : 0;
    d->out.n = 0;
    if ((rc = buf_add(&d->out, d->b.p + from, d->b.n - from)) != RN_OK)
        return rc;
    d->prefix = d->read;
    d->read = d->n;
    *text = d->out.p;
    *len = d->out.n;
    return RN_OK;
}

int rn_detok_push(rn_detok *d, int32_t id, const char **text, size_t *len)
{
    *text = "";
    *len = 0;
    if (id < 0 || id >= d->t->n_ids || !d->t->piece[id])
        return RN_EINVAL;
    if (d->skip_special && d->t->special[id])
        return RN_OK;
    if (d->n == d->cap) {
        int c = d->cap ? 2 * d->cap : 64;
        int32_t *v = realloc(d->ids, sizeof *v * (size_t)c);
        if (!v)
            return RN_ENOMEM;
        d->ids = v;
        d->cap = c;
    }
    d->ids[d->n++] = id;
    return detok_emit(d, 0, text, len);
}

int rn_detok_finish(rn_detok *d, const char **text, size_t *len)
{
    if (d->n == d->read) {
        *text = "";
        *len = 0;
        return RN_OK;
    }
    return detok_emit(d, 1, text, len);
}
