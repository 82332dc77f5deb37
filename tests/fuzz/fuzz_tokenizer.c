/*
 * fuzz_tokenizer.c -- libFuzzer target: arbitrary bytes through encode,
 * decode and the streaming detokenizer of the fixture tokenizers.  Checks
 * that decode(encode(x)) is valid UTF-8, that every streamed piece is whole
 * UTF-8, and that the stream's concatenation equals the whole decode.
 * The first input byte picks the tokenizer.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer.h"
#include "utf8.h"

static rn_tokenizer *toks[3];

static void load(void)
{
    static const char *const names[3] = {"bytelevel", "spbpe", "spbpe_metaspace"};
    const char *root = getenv("RN_FIXTURES");
    char path[512];
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/tokenizer/%s.json", root ? root : "tests/fixtures",
                 names[i]);
        if (rn_tokenizer_load(&toks[i], path, NULL) != RN_OK)
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!toks[0])
        load();
    if (size == 0)
        return 0;
    rn_tokenizer *t = toks[data[0] % 3];
    int32_t *ids = NULL;
    int n = 0;
    if (rn_tokenizer_encode(t, (const char *)data + 1, size - 1, &ids, &n) != RN_OK)
        abort();
    char *text = NULL;
    size_t len = 0;
    if (rn_tokenizer_decode(t, ids, n, 0, &text, &len) != RN_OK ||
        !rn_utf8_valid((const unsigned char *)text, len))
        abort();
    rn_detok *d = NULL;
    if (rn_detok_new(&d, t, 0) != RN_OK)
        abort();
    char *cat = malloc(len + 1);
    size_t got = 0;
    for (int i = 0; i <= n; i++) {
        const char *s;
        size_t k;
        if ((i < n ? rn_detok_push(d, ids[i], &s, &k) : rn_detok_finish(d, &s, &k)) != RN_OK ||
            !rn_utf8_valid((const unsigned char *)s, k) || got + k > len)
            abort();
        memcpy(cat + got, s, k);
        got += k;
    }
    if (got != len || memcmp(cat, text, len) != 0)
        abort();
    rn_detok_free(d);
    free(cat);
    free(text);
    free(ids);
    return 0;
}
