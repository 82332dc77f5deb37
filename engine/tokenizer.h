/*
 * tokenizer.h -- Hugging Face tokenizer.json, encode and decode exactly as the
 * `tokenizers` library does, for the two BPE families RetNet checkpoints use:
 *   - byte-level BPE (GPT-2 / NeoX: ByteLevel pre-tokenizer and decoder);
 *   - SentencePiece-style BPE (Prepend/Replace normalizer or Metaspace
 *     pre-tokenizer, byte_fallback <0xNN> tokens, ByteFallback/Fuse/Strip
 *     decoders, as in Llama-family and fla-hub tokenizers).
 * Added and special tokens are matched in the text before the model runs.
 *
 * Input bytes that are not valid UTF-8 are read as U+FFFD per maximal
 * subpart (Python's errors='replace'), the text `tokenizers` would be given.
 * A tokenizer is immutable after load except for an internal word cache, so
 * one instance serves one thread; rn_tokenizer_decode is read-only.
 */
#ifndef RN_TOKENIZER_H
#define RN_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

typedef struct rn_tokenizer rn_tokenizer;

/* Loads a tokenizer.json.  Returns RN_OK and sets *out (owned by the caller,
 * rn_tokenizer_free), or RN_EIO/RN_EFORMAT/RN_EUNSUPPORTED with err->msg. */
int rn_tokenizer_load(rn_tokenizer **out, const char *path, rn_error *err);
void rn_tokenizer_free(rn_tokenizer *t);

/* One past the largest token id. */
int rn_tokenizer_vocab_size(const rn_tokenizer *t);
/* The token's string as stored in the vocabulary (NULL if no such id). */
const char *rn_tokenizer_piece(const rn_tokenizer *t, int32_t id);
/* Id of a vocabulary or added token string, or -1. */
int32_t rn_tokenizer_find(const rn_tokenizer *t, const char *piece);
int rn_tokenizer_is_special(const rn_tokenizer *t, int32_t id);

/* Encodes text[0..len) (no special tokens added).  Returns RN_OK and sets
 * *ids to a new malloc'd array owned by the caller (free()) of *n ids. */
int rn_tokenizer_encode(rn_tokenizer *t, const char *text, size_t len, int32_t **ids, int *n);

/* Decodes ids; skip_special drops special tokens.  Returns RN_OK and sets
 * *out to a new malloc'd NUL-terminated UTF-8 string owned by the caller. */
int rn_tokenizer_decode(const rn_tokenizer *t, const int32_t *ids, int n, int skip_special,
                        char **out, size_t *len);

/* Incremental decoding for streaming: push ids one at a time and receive
 * only complete UTF-8 text; the concatenation of everything returned
 * (finish included) equals rn_tokenizer_decode of the whole sequence. */
typedef struct rn_detok rn_detok;
/* Returns RN_OK and sets *out (owned by the caller, rn_detok_free); t is
 * retained and must outlive it. */
int rn_detok_new(rn_detok **out, const rn_tokenizer *t, int skip_special);
void rn_detok_free(rn_detok *d);
/* Adds one id.  *text points to the newly completed text (valid until the
 * next call on d), *len its length (possibly 0). */
int rn_detok_push(rn_detok *d, int32_t id, const char **text, size_t *len);
/* Ends the sequence: returns whatever was held back (with the replacements
 * a whole-sequence decode would make). */
int rn_detok_finish(rn_detok *d, const char **text, size_t *len);

#endif
