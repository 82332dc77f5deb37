/*
 * sampler.h -- logits to a token: logit bias, repetition / presence /
 * frequency penalties, temperature, top-k, top-p, min-p, a seeded RNG per
 * request, and log-probabilities of the chosen token and the top alternatives.
 *
 * Order of operations (the order vLLM and HF transformers apply them):
 *   1. logit bias (added);
 *   2. repetition penalty over every token seen (prompt and output):
 *      l > 0 ? l / r : l * r  (HF / CTRL);
 *   3. presence and frequency penalties over output tokens (OpenAI):
 *      l -= frequency * count + presence * (count > 0);
 *   -> log-probabilities are reported from this distribution;
 *   4. temperature 0: argmax (lowest id on ties); otherwise l / T, then
 *      top-k, top-p (smallest set whose probability reaches p), min-p
 *      (p >= min_p * p_max), renormalise and draw: one uniform number
 *      walked along the kept ids in sampling order (larger logit first,
 *      lower id among equals) -- except that with top-k, top-p and min-p
 *      all off the ids past the first RN_TOP_CANDIDATES follow in index
 *      order.  Without a top-k cut the row's weight (for the top-p cut, and
 *      for a draw when everything is kept) is summed in index order.
 * Pure CPU.  A sampler holds 5 bytes a vocabulary entry (the counts the
 * penalties need); what a call works in is the calling thread's, allocated
 * on its first call (and again when a larger vocabulary comes) and freed
 * when the thread ends, so samplers used from one thread share it.
 */
#ifndef RN_SAMPLER_H
#define RN_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

#define RN_MAX_LOGPROBS 20
#define RN_NO_LOGPROBS (-1) /* n_logprobs: skip log-probabilities entirely (logprob = NaN) */

typedef struct rn_logit_bias {
    int32_t token;
    float bias;
} rn_logit_bias;

typedef struct rn_sample_params {
    float temperature;        /* 0 = greedy */
    int top_k;                /* 0 = off */
    float top_p;              /* 1 = off */
    float min_p;              /* 0 = off */
    float repetition_penalty; /* 1 = off */
    float presence_penalty;   /* 0 = off */
    float frequency_penalty;  /* 0 = off */
    const rn_logit_bias *logit_bias;
    int n_logit_bias;
    uint64_t seed;
} rn_sample_params;

typedef struct rn_token_logprob {
    int32_t token;
    float logprob;
} rn_token_logprob;

typedef struct rn_sample_result {
    int32_t token;
    float logprob;                         /* of the chosen token */
    int n_top;                             /* alternatives filled (<= asked) */
    rn_token_logprob top[RN_MAX_LOGPROBS]; /* most likely first */
} rn_sample_result;

typedef struct rn_sampler rn_sampler;

/* Checks p (ranges, bias token ids) and creates a sampler for vocab tokens.
 * Returns RN_OK and sets *out (owned by the caller, rn_sampler_free), or
 * RN_EINVAL with err->msg naming the parameter. */
int rn_sampler_new(rn_sampler **out, const rn_sample_params *p, int vocab, rn_error *err);
void rn_sampler_free(rn_sampler *s);

/* Records tokens the repetition penalty sees (the prompt). */
void rn_sampler_accept_prompt(rn_sampler *s, const int32_t *tokens, int n);
/* Picks the next token from logits[vocab] (left unchanged); RN_ENOMEM when
 * the thread's working memory cannot be had (then nothing is recorded).  n_logprobs
 * (0..RN_MAX_LOGPROBS) alternatives are reported, or RN_NO_LOGPROBS for
 * none and no logprob of the chosen token either (saves a vocabulary-wide
 * log-softmax per token).  The chosen token is
 * recorded for the penalties. */
int rn_sampler_sample(rn_sampler *s, const float *logits, int n_logprobs, rn_sample_result *res);

/* Whether rn_sampler_sample(s, logits, n_logprobs, ...) would pick
 * rn_argmax_row(logits) and nothing else: temperature 0, no logprobs, no
 * bias or penalties.  Such a pick may be made where the logits are (the
 * engine's rn_decode_argmax) and handed to rn_sampler_take. */
int rn_sampler_plain_greedy(const rn_sampler *s, int n_logprobs);
/* Records token (in [0, vocab)), chosen elsewhere, as rn_sampler_sample
 * would have (res: the token, no logprob). */
void rn_sampler_take(rn_sampler *s, int32_t token, rn_sample_result *res);

/* ------------------------------------------------ drawing from candidates
 * A GPU need not copy a row's vocab logits back for the sampler: it can
 * reduce the row to its RN_TOP_CANDIDATES largest logits and two sums, and
 * the sampler completes the draw from those whenever what it draws from
 * lies within them -- top-k <= RN_TOP_CANDIDATES, a top-p nucleus or min-p
 * set inside them, or a draw that lands in them.  Otherwise it says so, and
 * the caller fetches the row for rn_sampler_sample, which then draws the
 * same random number.  Rows whose logits the sampler adjusts (bias,
 * penalties) always take the row. */
#define RN_TOP_CANDIDATES 128
#define RN_SAMPLE_NEED_ROW 1 /* rn_sampler_sample_top: decide from the whole row */

/* One row reduced (the same layout on the host and the device).  With
 * m = logit[0], the row's largest value: */
typedef struct rn_row_top {
    int32_t n;        /* candidates: min(RN_TOP_CANDIDATES, vocab); 0: not reduced */
    int32_t reserved; /* 0; keeps the sums 8-byte aligned on host and device alike */
    double z1;        /* sum over the row of exp(l - m), NaN read as -inf */
    double zt; /* sum over the row of exp((l - m) / T) at the row's temperature; 0 if T = 0 */
    int32_t id[RN_TOP_CANDIDATES];  /* largest first, lowest id on ties */
    float logit[RN_TOP_CANDIDATES]; /* their values, NaN read as -inf */
} rn_row_top;

/* Reduces logits[vocab] at temperature (what a device computes, on the
 * host: the sums in index order, in double). */
void rn_row_top_fill(const float *logits, int vocab, float temperature, rn_row_top *t);

/* Whether rn_sampler_sample_top may be used: nothing adjusts the logits. */
int rn_sampler_top_ok(const rn_sampler *s);
float rn_sampler_temperature(const rn_sampler *s);
/* rn_sampler_sample from the reduced row t: RN_OK with the result and the
 * token recorded, the same token rn_sampler_sample picks from the row up to
 * the rounding of t's sums (bit for bit with top-k <= RN_TOP_CANDIDATES,
 * where it sums the kept candidates itself; elsewhere the row's sum decides
 * a top-p cut and the draw's scale, and the full sampler adds the same
 * terms in index order while a device adds them in its own order);
 * RN_SAMPLE_NEED_ROW, with s untouched, when the row is needed (or t holds
 * an id outside the vocabulary); RN_EINVAL for bad n_logprobs,
 * !rn_sampler_top_ok, or t->n not in 1..min(RN_TOP_CANDIDATES, vocab).
 * It needs no working memory of the thread's. */
int rn_sampler_sample_top(rn_sampler *s, const rn_row_top *t, int n_logprobs,
                          rn_sample_result *res);

/* The processed logits (steps 1-3) of the last call on this thread that
 * processed them (a plain greedy call does not), for tests; NULL when this
 * thread has not processed a row of s's size. */
const float *rn_sampler_last_logits(const rn_sampler *s);

/* xoshiro256** seeded by splitmix64: the per-request generator. */
typedef struct rn_rng {
    uint64_t s[4];
} rn_rng;
void rn_rng_seed(rn_rng *r, uint64_t seed);
uint64_t rn_rng_next(rn_rng *r);
/* uniform in [0, 1) with 53 random bits */
double rn_rng_uniform(rn_rng *r);

#endif
