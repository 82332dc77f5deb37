/*
 * check_tokenizer.c -- parity with Hugging Face `tokenizers` 0.23.3 on the
 * fixtures of tools/make_tokenizer_fixtures.py (tests/fixtures/tokenizer/):
 * ids of every corpus line (1 MB of prose, code, whitespace, CJK, emoji,
 * combining marks, control characters, invalid UTF-8), decode of those ids,
 * decode of 200 random id sequences with and without special tokens, and the
 * streaming detokenizer: never a partial UTF-8 character, and its
 * concatenated output equals the whole-sequence decode.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "suites.h"
#include "tokenizer.h"
#include "utf8.h"
#include "util.h"

/* "demo" is the shipped model's tokenizer (models/tokenizer.json). */
static const char *const tok_names[] = {"bytelevel", "spbpe", "spbpe_metaspace", "demo"};
#define N_TOK 4

static const char *tok_dir(void)
{
    const char *r = getenv("RN_FIXTURES");
    static char buf[512];
    snprintf(buf, sizeof buf, "%s/tokenizer", r ? r : "tests/fixtures");
    return buf;
}

static rn_tokenizer *load_tok(const char *name)
{
    char path[600];
    rn_tokenizer *t = NULL;
    rn_error err = {0};
    if (strcmp(name, "demo") == 0)
        snprintf(path, sizeof path, "%s/tokenizer.json",
                 getenv("RN_DEMO_MODEL") ? getenv("RN_DEMO_MODEL") : "models");
    else
        snprintf(path, sizeof path, "%s/%s.json", tok_dir(), name);
    ck_assert_msg(rn_tokenizer_load(&t, path, &err) == RN_OK, "%s: %s", path, err.msg);
    return t;
}

/* Reads a .jsonl file into an array of lines (caller frees both). */
static char **read_lines(const char *name, int *n, char **blob)
{
    char path[600];
    size_t len;
    snprintf(path, sizeof path, "%s/%s", tok_dir(), name);
    ck_assert_msg(rn__read_file(path, 64u << 20, blob, &len) == 0, "cannot read %s", path);
    int cap = 1024;
    char **lines = malloc(sizeof *lines * (size_t)cap);
    *n = 0;
    for (char *p = *blob, *nl; p && *p; p = nl ? nl + 1 : NULL) {
        nl = strchr(p, '\n');
        if (nl)
            *nl = '\0';
        if (*n == cap)
            lines = realloc(lines, sizeof *lines * (size_t)(cap *= 2));
        lines[(*n)++] = p;
    }
    return lines;
}

static int b64val(int c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
}

/* base64 -> new malloc'd bytes */
static char *b64decode(const char *s, size_t *out_len)
{
    size_t n = strlen(s), o = 0;
    char *out = malloc(n * 3 / 4 + 4);
    unsigned acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n && s[i] != '='; i++) {
        int v = b64val((unsigned char)s[i]);
        if (v < 0)
            continue;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (char)((acc >> bits) & 0xFF);
        }
    }
    out[o] = '\0';
    *out_len = o;
    return out;
}

static int hexval(const char *p)
{
    int v = 0;
    for (int i = 0; i < 4; i++) {
        int c = p[i], d = c >= '0' && c <= '9'   ? c - '0'
                          : c >= 'a' && c <= 'f' ? c - 'a' + 10
                          : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                                 : -1;
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

/* The string value of "key" in a one-line JSON object, unescaped with its
 * length (cJSON stops at an escaped NUL, which the fixtures contain); a new
 * malloc'd buffer, or NULL if the key is absent. */
static char *json_string(const char *line, const char *key, size_t *len)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":\"", key);
    const char *p = strstr(line, pat);
    if (!p)
        return NULL;
    p += strlen(pat);
    char *out = malloc(strlen(p) + 1);
    size_t o = 0;
    while (*p && *p != '"') {
        if (*p != '\\') {
            out[o++] = *p++;
            continue;
        }
        p++;
        char c = *p++;
        if (c == 'u') {
            uint32_t cp = (uint32_t)hexval(p);
            p += 4;
            if (cp >= 0xD800 && cp < 0xDC00 && p[0] == '\\' && p[1] == 'u') {
                cp = 0x10000 + ((cp - 0xD800) << 10) + ((uint32_t)hexval(p + 2) - 0xDC00);
                p += 6;
            }
            o += rn_utf8_put(cp, out + o);
        } else {
            out[o++] = c == 'n'   ? '\n'
                       : c == 't' ? '\t'
                       : c == 'r' ? '\r'
                       : c == 'b' ? '\b'
                       : c == 'f' ? '\f'
                                  : c;
        }
    }
    out[o] = '\0';
    *len = o;
    return out;
}

static int32_t *json_ids(const cJSON *arr, int *n)
{
    *n = cJSON_GetArraySize(arr);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)(*n + 1));
    for (int i = 0; i < *n; i++)
        ids[i] = (int32_t)cJSON_GetArrayItem(arr, i)->valuedouble;
    return ids;
}

static void fmt_ids(char *buf, size_t cap, const int32_t *ids, int n)
{
    size_t o = 0;
    buf[0] = '\0';
    for (int i = 0; i < n && o + 16 < cap; i++)
        o += (size_t)snprintf(buf + o, cap - o, "%s%d", i ? "," : "", ids[i]);
}

START_TEST(test_tokenizer_corpus_parity)
{
    const char *name = tok_names[_i];
    rn_tokenizer *t = load_tok(name);
    char file[64], *cblob, *eblob;
    int nc, ne;
    snprintf(file, sizeof file, "%s.expect.jsonl", name);
    char **corpus = read_lines("corpus.jsonl", &nc, &cblob);
    char **expect = read_lines(file, &ne, &eblob);
    ck_assert_int_gt(ne, 0);
    int checked = 0;
    for (int k = 0; k < ne; k++) {
        cJSON *e = cJSON_Parse(expect[k]);
        ck_assert_ptr_nonnull(e);
        int line = (int)cJSON_GetObjectItem(e, "line")->valuedouble;
        ck_assert_int_lt(line, nc);
        cJSON *c = cJSON_Parse(corpus[line]);
        size_t blen, tlen, dlen;
        char *bytes = b64decode(cJSON_GetObjectItem(c, "b64")->valuestring, &blen);
        char *text = rn_utf8_sanitize(bytes, blen, &tlen);
        int n_want, n_got;
        int32_t *want = json_ids(cJSON_GetObjectItem(e, "ids"), &n_want), *got = NULL;
        ck_assert_int_eq(rn_tokenizer_encode(t, bytes, blen, &got, &n_got), RN_OK);
        if (n_got != n_want || memcmp(got, want, sizeof(int32_t) * (size_t)n_want) != 0) {
            char a[400], b[400];
            fmt_ids(a, sizeof a, got, n_got);
            fmt_ids(b, sizeof b, want, n_want);
            ck_abort_msg("%s line %d (%.60s): ids differ\n  got  %s\n  want %s", name, line, text,
                         a, b);
        }
        /* decode of the reference ids */
        char *dec = NULL;
        size_t want_len;
        char *dj = json_string(expect[k], "decoded", &want_len);
        const char *want_dec = dj ? dj : text;
        want_len = dj ? want_len : tlen;
        ck_assert_int_eq(rn_tokenizer_decode(t, want, n_want, 0, &dec, &dlen), RN_OK);
        ck_assert_msg(dlen == want_len && memcmp(dec, want_dec, dlen) == 0,
                      "%s line %d: decode differs: got '%.80s' want '%.80s'", name, line, dec,
                      want_dec);
        free(dj);
        checked++;
        free(dec);
        free(want);
        free(got);
        free(text);
        free(bytes);
        cJSON_Delete(c);
        cJSON_Delete(e);
    }
    ck_assert_int_eq(checked, ne);
    free(corpus);
    free(expect);
    free(cblob);
    free(eblob);
    rn_tokenizer_free(t);
}
END_TEST

/* Streams ids through a detokenizer; checks every piece is whole UTF-8 and
 * returns the concatenation (malloc'd). */
static char *stream_all(const rn_tokenizer *t, const int32_t *ids, int n, int skip, size_t *len)
{
    rn_detok *d = NULL;
    ck_assert_int_eq(rn_detok_new(&d, t, skip), RN_OK);
    char *all = malloc(1);
    size_t total = 0;
    for (int i = 0; i <= n; i++) {
        const char *s;
        size_t k;
        int rc = i < n ? rn_detok_push(d, ids[i], &s, &k) : rn_detok_finish(d, &s, &k);
        ck_assert_int_eq(rc, RN_OK);
        ck_assert_msg(rn_utf8_complete_prefix((const unsigned char *)s, k) == k,
                      "streamed piece ends inside a character");
        ck_assert_msg(rn_utf8_valid((const unsigned char *)s, k), "streamed piece is not UTF-8");
        all = realloc(all, total + k + 1);
        memcpy(all + total, s, k);
        total += k;
    }
    all[total] = '\0';
    *len = total;
    rn_detok_free(d);
    return all;
}

START_TEST(test_tokenizer_decode_sequences)
{
    const char *name = tok_names[_i];
    rn_tokenizer *t = load_tok(name);
    char file[64], *blob;
    int n;
    snprintf(file, sizeof file, "%s.decode.jsonl", name);
    char **lines = read_lines(file, &n, &blob);
    ck_assert_int_eq(n, 200);
    for (int k = 0; k < n; k++) {
        cJSON *e = cJSON_Parse(lines[k]);
        int ni;
        int32_t *ids = json_ids(cJSON_GetObjectItem(e, "ids"), &ni);
        for (int skip = 0; skip <= 1; skip++) {
            size_t wlen;
            char *want = json_string(lines[k], skip ? "decoded_skip_special" : "decoded", &wlen);
            char *got;
            size_t len, slen;
            ck_assert_ptr_nonnull(want);
            ck_assert_int_eq(rn_tokenizer_decode(t, ids, ni, skip, &got, &len), RN_OK);
            ck_assert_msg(len == wlen && memcmp(got, want, len) == 0,
                          "%s seq %d skip=%d: got '%s' want '%s'", name, k, skip, got, want);
            char *streamed = stream_all(t, ids, ni, skip, &slen);
            ck_assert_msg(slen == len && memcmp(streamed, got, len) == 0,
                          "%s seq %d: streamed '%s' != whole '%s'", name, k, streamed, got);
            free(streamed);
            free(got);
            free(want);
        }
        free(ids);
        cJSON_Delete(e);
    }
    free(lines);
    free(blob);
    rn_tokenizer_free(t);
}
END_TEST

/* Property: random id sequences (byte tokens over-represented) stream to
 * exactly the whole decode, never emitting part of a character. */
START_TEST(test_tokenizer_stream_property)
{
    rn_tokenizer *t = load_tok(tok_names[_i]);
    int V = rn_tokenizer_vocab_size(t);
    uint64_t x = 0x9e3779b97f4a7c15ull + (uint64_t)_i;
    for (int seq = 0; seq < 2000; seq++) {
        int32_t ids[48];
        int n = 1 + (int)(x % 47);
        for (int i = 0; i < n; i++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            int32_t id = (int32_t)((x >> 33) % (uint64_t)V);
            if ((x >> 20) % 2) /* low ids hold the byte tokens in all three files */
                id = (int32_t)((x >> 40) % 260);
            ids[i] = rn_tokenizer_piece(t, id) ? id : 3;
        }
        char *whole, *streamed;
        size_t wl, sl;
        ck_assert_int_eq(rn_tokenizer_decode(t, ids, n, 0, &whole, &wl), RN_OK);
        streamed = stream_all(t, ids, n, 0, &sl);
        ck_assert_msg(wl == sl && memcmp(whole, streamed, wl) == 0, "seq %d differs", seq);
        free(whole);
        free(streamed);
    }
    rn_tokenizer_free(t);
}
END_TEST

START_TEST(test_tokenizer_rejects_bad_files)
{
    static const char *const bad[] = {
        "",
        "[]",
        "{\"model\":{\"type\":\"WordPiece\",\"vocab\":{}}}",
        "{\"model\":{\"type\":\"BPE\",\"vocab\":[]}}",
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[\"a b\"]}}",
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":-1}}}",
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0}},\"normalizer\":{\"type\":\"NFKC\"}}",
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0}},\"pre_tokenizer\":{\"type\":"
        "\"BertPreTokenizer\"}}",
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0}},\"decoder\":{\"type\":\"WordPiece\"}}",
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0}},\"added_tokens\":[{\"id\":1}]}",
    };
    char path[] = "/tmp/rn_tok_XXXXXX";
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int fd = mkstemp(path);
        ck_assert_int_ge(fd, 0);
        FILE *f = fdopen(fd, "w");
        fputs(bad[i], f);
        fclose(f);
        rn_tokenizer *t = NULL;
        rn_error err = {0};
        int rc = rn_tokenizer_load(&t, path, &err);
        unlink(path);
        strcpy(path, "/tmp/rn_tok_XXXXXX");
        ck_assert_msg(rc != RN_OK && t == NULL && strlen(err.msg) > 0, "case %zu loaded", i);
    }
}
END_TEST

Suite *tokenizer_suite(void)
{
    Suite *s = suite_create("tokenizer");
    TCase *tc = tcase_create("parity");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_tokenizer_corpus_parity, 0, N_TOK);
    tcase_add_loop_test(tc, test_tokenizer_decode_sequences, 0, N_TOK);
    tcase_add_loop_test(tc, test_tokenizer_stream_property, 0, N_TOK);
    tcase_add_test(tc, test_tokenizer_rejects_bad_files);
    suite_add_tcase(s, tc);
    return s;
}
