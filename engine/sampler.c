/* sampler.c -- see sampler.h. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rn_math.h"
#include "sampler.h"

struct rn_sampler {
    rn_sample_params p;
    rn_logit_bias *bias;
    int vocab;
    rn_rng rng;
    int32_t *count;      /* output occurrences per token */
    unsigned char *seen; /* prompt or output */
    float *work;         /* processed logits */
    int32_t *order;      /* candidate ids */
    double *prob;
};

/* ------------------------------------------------------------------ rng */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void rn_rng_seed(rn_rng *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

uint64_t rn_rng_next(rn_rng *r)
{
    uint64_t *s = r->s, out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

double rn_rng_uniform(rn_rng *r)
{
    return (double)(rn_rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
}

/* -------------------------------------------------------------- setup */

static int check_params(const rn_sample_params *p, int vocab, rn_error *err)
{
    if (!(p->temperature >= 0.0f && p->temperature <= 100.0f))
        return rn_error_set(err, RN_EINVAL, "temperature must be in [0, 100]");
    if (p->top_k < 0)
        return rn_error_set(err, RN_EINVAL, "top_k must be >= 0");
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return rn_error_set(err, RN_EINVAL, "top_p must be in (0, 1]");
    if (!(p->min_p >= 0.0f && p->min_p <= 1.0f))
        return rn_error_set(err, RN_EINVAL, "min_p must be in [0, 1]");
    if (!(p->repetition_penalty > 0.0f && p->repetition_penalty <= 100.0f))
        return rn_error_set(err, RN_EINVAL, "repetition_penalty must be in (0, 100]");
    if (!(fabsf(p->presence_penalty) <= 2.0f))
        return rn_error_set(err, RN_EINVAL, "presence_penalty must be in [-2, 2]");
    if (!(fabsf(p->frequency_penalty) <= 2.0f))
        return rn_error_set(err, RN_EINVAL, "frequency_penalty must be in [-2, 2]");
    for (int i = 0; i < p->n_logit_bias; i++) {
        const rn_logit_bias *b = &p->logit_bias[i];
        if (b->token < 0 || b->token >= vocab)
            return rn_error_set(err, RN_EINVAL, "logit_bias token %d is not in the vocabulary",
                                (int)b->token);
        if (!(b->bias >= -100.0f && b->bias <= 100.0f))
            return rn_error_set(err, RN_EINVAL, "logit_bias values must be in [-100, 100]");
    }
    return RN_OK;
}

int rn_sampler_new(rn_sampler **out, const rn_sample_params *p, int vocab, rn_error *err)
{
    *out = NULL;
    if (vocab < 1)
        return rn_error_set(err, RN_EINVAL, "empty vocabulary");
    int rc = check_params(p, vocab, err);
    if (rc != RN_OK)
        return rc;
    rn_sampler *s = calloc(1, sizeof *s);
    if (!s)
        return rn_error_set(err, RN_ENOMEM, "out of memory");
    s->p = *p;
    s->vocab = vocab;
    s->count = calloc((size_t)vocab, sizeof *s->count);
    s->seen = calloc((size_t)vocab, 1);
    s->work = malloc(sizeof(float) * (size_t)vocab);
    s->order = malloc(sizeof(int32_t) * (size_t)vocab);
    s->prob = malloc(sizeof(double) * (size_t)vocab);
    s->bias = p->n_logit_bias ? malloc(sizeof *s->bias * (size_t)p->n_logit_bias) : NULL;
    if (!s->count || !s->seen || !s->work || !s->order || !s->prob ||
        (p->n_logit_bias && !s->bias)) {
        rn_sampler_free(s);
        return rn_error_set(err, RN_ENOMEM, "out of memory");
    }
    if (p->n_logit_bias)
        memcpy(s->bias, p->logit_bias, sizeof *s->bias * (size_t)p->n_logit_bias);
    s->p.logit_bias = s->bias;
    rn_rng_seed(&s->rng, p->seed);
    *out = s;
    return RN_OK;
}

void rn_sampler_free(rn_sampler *s)
{
    if (!s)
        return;
    free(s->count);
    free(s->seen);
    free(s->work);
    free(s->order);
    free(s->prob);
    free(s->bias);
    free(s);
}

void rn_sampler_accept_prompt(rn_sampler *s, const int32_t *tokens, int n)
{
    for (int i = 0; i < n; i++)
        if (tokens[i] >= 0 && tokens[i] < s->vocab)
            s->seen[tokens[i]] = 1;
}

const float *rn_sampler_last_logits(const rn_sampler *s)
{
    return s->work;
}

/* ------------------------------------------------------------ process */

static void apply_penalties(rn_sampler *s)
{
    const rn_sample_params *p = &s->p;
    float *l = s->work;
    for (int i = 0; i < p->n_logit_bias; i++)
        l[p->logit_bias[i].token] += p->logit_bias[i].bias;
    int rep = p->repetition_penalty != 1.0f;
    int pf = p->presence_penalty != 0.0f || p->frequency_penalty != 0.0f;
    if (!rep && !pf)
        return;
    for (int t = 0; t < s->vocab; t++) {
        if (rep && s->seen[t])
            l[t] = l[t] > 0.0f ? l[t] / p->repetition_penalty : l[t] * p->repetition_penalty;
        if (pf && s->count[t] > 0)
            l[t] -= p->frequency_penalty * (float)s->count[t] + p->presence_penalty;
    }
}

/* log-sum-exp of the processed logits (in double: vocab-sized sums) */
static double log_normaliser(const float *l, int n)
{
    float mx = l[rn_argmax_row(l, n)];
    double z = 0.0;
    for (int i = 0; i < n; i++)
        z += exp((double)l[i] - (double)mx);
    return (double)mx + log(z);
}

static void fill_logprobs(rn_sampler *s, int n_top, rn_sample_result *res)
{
    const float *l = s->work;
    double lz = log_normaliser(l, s->vocab);
    res->logprob = (float)((double)l[res->token] - lz);
    res->n_top = 0;
    /* insertion into a small sorted list: n_top <= 20 */
    for (int t = 0; t < s->vocab && n_top > 0; t++) {
        int k = res->n_top;
        if (k == n_top && l[t] <= l[res->top[k - 1].token])
            continue;
        if (k < n_top)
            res->n_top++;
        else
            k--;
        while (k > 0 && l[res->top[k - 1].token] < l[t]) {
            res->top[k] = res->top[k - 1];
            k--;
        }
        res->top[k].token = t;
    }
    for (int i = 0; i < res->n_top; i++)
        res->top[i].logprob = (float)((double)l[res->top[i].token] - lz);
}

static int cmp_desc(const void *a, const void *b, void *ctx)
{
    const float *l = ctx;
    float x = l[*(const int32_t *)a], y = l[*(const int32_t *)b];
    if (x != y)
        return x > y ? -1 : 1;
    return *(const int32_t *)a - *(const int32_t *)b;
}

/* Partially orders s->order[0..n) so its first k are the k largest, sorted. */
static void top_k_sorted(rn_sampler *s, int n, int k)
{
    int32_t *o = s->order;
    const float *l = s->work;
    int lo = 0, hi = n - 1;
    while (k < n && lo < hi) { /* quickselect around the k-th largest */
        float pivot = l[o[(lo + hi) / 2]];
        int i = lo, j = hi;
        while (i <= j) {
            while (l[o[i]] > pivot)
                i++;
            while (l[o[j]] < pivot)
                j--;
            if (i <= j) {
                int32_t t = o[i];
                o[i++] = o[j];
                o[j--] = t;
            }
        }
        if (k - 1 <= j)
            hi = j;
        else if (k - 1 >= i)
            lo = i;
        else
            break;
    }
    qsort_r(o, (size_t)k, sizeof *o, cmp_desc, (void *)(uintptr_t)l);
}

static int32_t sample_filtered(rn_sampler *s)
{
    const rn_sample_params *p = &s->p;
    int n = s->vocab, k = p->top_k > 0 && p->top_k < n ? p->top_k : n;
    for (int i = 0; i < n; i++)
        s->order[i] = i;
    top_k_sorted(s, n, k);
    /* softmax over the k candidates at temperature T */
    double inv_t = 1.0 / (double)p->temperature, mx = (double)s->work[s->order[0]], z = 0.0;
    for (int i = 0; i < k; i++) {
        s->prob[i] = exp(((double)s->work[s->order[i]] - mx) * inv_t);
        z += s->prob[i];
    }
    int keep = k;
    if (p->top_p < 1.0f) {
        double cum = 0.0;
        for (int i = 0; i < k; i++) {
            cum += s->prob[i] / z;
            if (cum >= (double)p->top_p) {
                keep = i + 1;
                break;
            }
        }
    }
    if (p->min_p > 0.0f) {
        double floor_p = (double)p->min_p * s->prob[0];
        while (keep > 1 && s->prob[keep - 1] < floor_p)
            keep--;
    }
    double zk = 0.0;
    for (int i = 0; i < keep; i++)
        zk += s->prob[i];
    double u = rn_rng_uniform(&s->rng) * zk, acc = 0.0;
    for (int i = 0; i < keep; i++) {
        acc += s->prob[i];
        if (u < acc)
            return s->order[i];
    }
    return s->order[keep - 1];
}

/* Records a chosen token for the penalties. */
static void note_token(rn_sampler *s, int32_t token)
{
    s->count[token]++;
    s->seen[token] = 1;
}

void rn_sampler_take(rn_sampler *s, int32_t token, rn_sample_result *res)
{
    if (token < 0 || token >= s->vocab)
        token = 0; /* never from the engine; the counts must stay in bounds */
    res->token = token;
    res->logprob = NAN;
    res->n_top = 0;
    note_token(s, token);
}

int rn_sampler_plain_greedy(const rn_sampler *s, int n_logprobs)
{
    const rn_sample_params *p = &s->p;
    return p->temperature == 0.0f && n_logprobs == RN_NO_LOGPROBS && p->n_logit_bias == 0 &&
           p->repetition_penalty == 1.0f && p->presence_penalty == 0.0f &&
           p->frequency_penalty == 0.0f;
}

int rn_sampler_sample(rn_sampler *s, const float *logits, int n_logprobs, rn_sample_result *res)
{
    if (n_logprobs < RN_NO_LOGPROBS || n_logprobs > RN_MAX_LOGPROBS)
        return RN_EINVAL;
    if (rn_sampler_plain_greedy(s, n_logprobs)) {
        rn_sampler_take(s, rn_argmax_row(logits, s->vocab), res);
        return RN_OK;
    }
    for (int i = 0; i < s->vocab; i++)
        s->work[i] = isnan(logits[i]) ? -INFINITY : logits[i];
    apply_penalties(s);
    res->token = s->p.temperature == 0.0f ? rn_argmax_row(s->work, s->vocab) : sample_filtered(s);
    if (n_logprobs == RN_NO_LOGPROBS) { /* a log-softmax over the vocabulary nobody reads */
        res->logprob = NAN;
        res->n_top = 0;
    } else {
        fill_logprobs(s, n_logprobs, res);
    }
    note_token(s, res->token);
    return RN_OK;
}
