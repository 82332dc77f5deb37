/* sampler.c -- see sampler.h. */
#include <math.h>
#include <pthread.h>
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
};

/* What one sampling call works in.  Every choice of every running request
 * has a sampler, and a vocabulary-sized copy of all this for each would
 * cost 36 bytes an entry (1.2 MB a choice at 32,000 ids), while a
 * thread samples one row at a time.  So each thread has one, grown to the
 * largest vocabulary it has sampled and freed when the thread ends
 * (scratch_for). */
typedef struct sample_scratch {
    int vocab;
    float *work;          /* processed logits */
    int32_t *order;       /* candidate ids, the first ones in sampling order */
    double *prob;         /* the sorted candidates' weights at the temperature */
    double *weight;       /* the row's weights at the temperature, by id (row_weight) */
    uint32_t *key, *key2; /* sort_rest's keys and */
    int32_t *id2;         /* ids, ping-pong */
} sample_scratch;

static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
static int scratch_key_made;

static void scratch_free(void *p)
{
    sample_scratch *w = p;
    if (!w)
        return;
    free(w->work);
    free(w->order);
    free(w->prob);
    free(w->weight);
    free(w->key);
    free(w->key2);
    free(w->id2);
    free(w);
}

static void scratch_key_make(void)
{
    scratch_key_made = pthread_key_create(&scratch_key, scratch_free) == 0;
}

/* A new scratch for vocab entries (owned by the caller: scratch_free), or
 * NULL when out of memory. */
static sample_scratch *scratch_new(int vocab)
{
    sample_scratch *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    size_t n = (size_t)vocab;
    w->vocab = vocab;
    w->work = malloc(sizeof(float) * n);
    w->order = malloc(sizeof(int32_t) * n);
    w->prob = malloc(sizeof(double) * n);
    w->weight = malloc(sizeof(double) * n);
    w->key = malloc(sizeof(uint32_t) * n);
    w->key2 = malloc(sizeof(uint32_t) * n);
    w->id2 = malloc(sizeof(int32_t) * n);
    if (!w->work || !w->order || !w->prob || !w->weight || !w->key || !w->key2 || !w->id2) {
        scratch_free(w);
        return NULL;
    }
    return w;
}

/* The calling thread's scratch, holding at least vocab entries (owned by
 * the thread, freed as it exits), or NULL when out of memory. */
static sample_scratch *scratch_for(int vocab)
{
    pthread_once(&scratch_once, scratch_key_make);
    if (!scratch_key_made)
        return NULL;
    sample_scratch *w = pthread_getspecific(scratch_key);
    if (w && w->vocab >= vocab)
        return w;
    sample_scratch *grown = scratch_new(vocab);
    if (!grown || pthread_setspecific(scratch_key, grown) != 0) {
        scratch_free(grown);
        return NULL;
    }
    scratch_free(w);
    return grown;
}

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
    s->bias = p->n_logit_bias ? malloc(sizeof *s->bias * (size_t)p->n_logit_bias) : NULL;
    if (!s->count || !s->seen || (p->n_logit_bias && !s->bias)) {
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
    pthread_once(&scratch_once, scratch_key_make);
    sample_scratch *w = scratch_key_made ? pthread_getspecific(scratch_key) : NULL;
    return w && w->vocab >= s->vocab ? w->work : NULL; /* never allocates: nothing to show */
}

/* ------------------------------------------------------------ process */

static void apply_penalties(rn_sampler *s, sample_scratch *w)
{
    const rn_sample_params *p = &s->p;
    float *l = w->work;
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

static void fill_logprobs(rn_sampler *s, int n_top, rn_sample_result *res, sample_scratch *w)
{
    const float *l = w->work;
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

/* The sampler's order of candidates: larger logit first, lower id first
 * among equals -- a total order, so the set a top-k cut keeps does not depend
 * on how it is found (the device's reduction keeps the same set). */
static int pair_before(float va, int32_t a, float vb, int32_t b)
{
    return va > vb || (va == vb && a < b);
}

/* pair_before for ids a and b of the row l. */
static int before(const float *l, int32_t a, int32_t b)
{
    return pair_before(l[a], a, l[b], b);
}

static int cmp_desc(const void *a, const void *b, void *ctx)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return x == y ? 0 : before(ctx, x, y) ? -1 : 1;
}

/* With w->order[0..from) the first `from` ids in `before` order, makes
 * w->order[from..to) the next ones, sorted (a quickselect over the rest,
 * then a sort of the part taken). */
static void sort_next(rn_sampler *s, int from, int to, sample_scratch *w)
{
    int32_t *o = w->order;
    const float *l = w->work;
    int lo = from, hi = s->vocab - 1;
    while (to < s->vocab && lo < hi) { /* quickselect around the to-th */
        int32_t pivot = o[(lo + hi) / 2];
        int i = lo, j = hi;
        while (i <= j) {
            while (before(l, o[i], pivot))
                i++;
            while (before(l, pivot, o[j]))
                j--;
            if (i <= j) {
                int32_t t = o[i];
                o[i++] = o[j];
                o[j--] = t;
            }
        }
        if (to - 1 <= j)
            hi = j;
        else if (to - 1 >= i)
            lo = i;
        else
            break;
    }
    qsort_r(o + from, (size_t)(to - from), sizeof *o, cmp_desc, (void *)(uintptr_t)l);
}

/* Sorting more than this many candidates at once sorts the whole rest of
 * the row instead (sort_rest): a radix sort is linear in the row, a
 * comparison sort of a few thousand ids already costs more. */
#define SORT_REST_FROM 2048

/* The sampling order as an unsigned key: smaller key, earlier (larger
 * value); -0 and +0 one key, as `before` compares them.  v is never NaN. */
static uint32_t order_key(float v)
{
    uint32_t b;
    v = v == 0.0f ? 0.0f : v;
    memcpy(&b, &v, sizeof b);
    b = (b & 0x80000000u) ? ~b : b | 0x80000000u; /* larger value, larger key */
    return ~b;
}

/* With w->order[0..from) the first `from` ids in sampling order, makes
 * w->order[from..vocab) all the others in sampling order: gathered by id,
 * then a stable radix sort by order_key, 8 bits a pass, so equal values
 * keep the lower id first. */
static void sort_rest(rn_sampler *s, int from, sample_scratch *w)
{
    const float *l = w->work;
    int32_t last = from > 0 ? w->order[from - 1] : -1, *ids = w->order + from, *ids2 = w->id2;
    uint32_t *keys = w->key, *keys2 = w->key2;
    int n = 0;
    for (int32_t t = 0; t < s->vocab; t++)
        if (last < 0 || before(l, last, t)) { /* not among the first `from` */
            ids[n] = t;
            keys[n] = order_key(l[t]);
            n++;
        }
    for (int shift = 0; shift < 32; shift += 8) { /* an even number of passes: back in ids */
        size_t at[257] = {0};
        for (int i = 0; i < n; i++)
            at[((keys[i] >> shift) & 255u) + 1]++;
        for (int d = 0; d < 256; d++)
            at[d + 1] += at[d];
        for (int i = 0; i < n; i++) {
            size_t j = at[(keys[i] >> shift) & 255u]++;
            keys2[j] = keys[i];
            ids2[j] = ids[i];
        }
        uint32_t *tk = keys;
        int32_t *ti = ids;
        keys = keys2, ids = ids2, keys2 = tk, ids2 = ti;
    }
}

/* A logit's weight at the temperature (inv_t = 1 / T), relative to the
 * row's largest logit mx: the one formula every weight, sum and draw uses,
 * here and on the device. */
static double weight_of(float l, double mx, double inv_t)
{
    return exp(((double)l - mx) * inv_t);
}

/* How many of the first k candidates in sampling order top-p and min-p
 * keep, from prob (their weights at the temperature, relative to the
 * first) and z (the weights' sum over all k).  Only prob[0..m) is known
 * (m <= k): -1 when the answer depends on the rest. */
static int kept_candidates(const rn_sample_params *p, const double *prob, int m, int k, double z)
{
    int keep = k;
    if (p->top_p < 1.0f) {
        double cum = 0.0;
        int i = 0;
        while (i < m && (cum += prob[i] / z) < (double)p->top_p)
            i++;
        if (i < m)
            keep = i + 1; /* the smallest set reaching top_p */
        else if (m < k)
            return -1;
    }
    if (p->min_p > 0.0f) {
        double floor_p = (double)p->min_p * prob[0];
        if (keep > m) { /* the weights fall along the order: the cut is inside prob or past it */
            if (prob[m - 1] >= floor_p)
                return -1;
            keep = m;
        }
        while (keep > 1 && prob[keep - 1] < floor_p)
            keep--;
    }
    return keep;
}

static double weight_sum(const double *prob, int n)
{
    double z = 0.0;
    for (int i = 0; i < n; i++)
        z += prob[i];
    return z;
}

/* The index whose cumulative weight first exceeds u, among prob[0..n); -1
 * when u is past them all. */
static int draw_index(const double *prob, int n, double u)
{
    double acc = 0.0;
    for (int i = 0; i < n; i++) {
        acc += prob[i];
        if (u < acc)
            return i;
    }
    return -1;
}

/* The draw from the first m of the k candidates the top-k cut keeps, in
 * sampling order, whose weights are prob[0..m), with rng: the candidate's
 * index, or -1 when it needs candidates past m.  Where k is the whole row,
 * its weight is z_row (summed in index order) for the top-p cut and for a
 * draw over all of it; a top-k cut's weight is summed here, along the
 * order (then m == k). */
static int draw_from(const rn_sampler *s, const double *prob, int m, int k, double z_row,
                     rn_rng *rng)
{
    double z = k == s->vocab ? z_row : weight_sum(prob, m);
    int keep = kept_candidates(&s->p, prob, m, k, z);
    if (keep < 0)
        return -1;
    double zk = keep == s->vocab ? z_row : weight_sum(prob, keep);
    int i = draw_index(prob, keep <= m ? keep : m, rn_rng_uniform(rng) * zk);
    if (i < 0 && keep <= m)
        i = keep - 1; /* past the sum: rounding */
    return i;
}

/* The sum over the row of exp((l - max) / T), in index order: what
 * rn_row_top_fill's zt sums; each id's term goes to w->weight. */
static double row_weight(rn_sampler *s, sample_scratch *w)
{
    double inv_t = 1.0 / (double)s->p.temperature, z = 0.0;
    double mx = (double)w->work[rn_argmax_row(w->work, s->vocab)];
    for (int i = 0; i < s->vocab; i++)
        z += w->weight[i] = weight_of(w->work[i], mx, inv_t);
    return z;
}

/* A draw with nothing cut (no top-k, top-p or min-p) that passed the m
 * candidates, whose weights add up to acc: it walks the rest of the row in
 * index order (no sort: the order is part of the draw's definition, and
 * any order gives the same distribution) to where u, the draw's point,
 * falls; the last of them when rounding leaves u past the end. */
static int32_t draw_rest(const rn_sampler *s, int m, double u, double acc, sample_scratch *w)
{
    int32_t last = w->order[m - 1], got = last;
    for (int32_t t = 0; t < s->vocab; t++) {
        if (!before(w->work, last, t))
            continue; /* a candidate */
        got = t;
        if (u < (acc += w->weight[t]))
            break;
    }
    return got;
}

/* The weights of the candidates w->order[from..to) into w->prob: the
 * row's, computed once by row_weight, without a top-k cut; else from their
 * logits, relative to the first (the largest). */
static void candidate_weights(const rn_sampler *s, sample_scratch *w, int from, int to)
{
    const rn_sample_params *p = &s->p;
    int cut = p->top_k > 0 && p->top_k < s->vocab;
    double inv_t = 1.0 / (double)p->temperature, mx = (double)w->work[w->order[0]];
    for (int i = from; i < to; i++)
        w->prob[i] = cut ? weight_of(w->work[w->order[i]], mx, inv_t) : w->weight[w->order[i]];
}

/* Temperature, top-k, top-p, min-p and the draw.  Without a top-k cut only
 * as many candidates are sorted as the truncation reaches: 128, then 1024,
 * then the whole rest by radix (sort_rest; rows of up to 3,072 ids stay with
 * the comparison sort), the row's weight summed once --
 * the same candidates and weights as sorting the whole row, at a fraction
 * of the cost (a comparison sort of a 32,000-token row took milliseconds).
 * With nothing cut a draw past the first 128 walks the rest unsorted
 * (draw_rest). */
static int32_t sample_filtered(rn_sampler *s, sample_scratch *w)
{
    const rn_sample_params *p = &s->p;
    int n = s->vocab, k = p->top_k > 0 && p->top_k < n ? p->top_k : n, m = 0, i = -1;
    int uncut = k == n && p->top_p >= 1.0f && p->min_p <= 0.0f;
    double z_all = k < n ? 0.0 : row_weight(s, w);
    rn_rng rng = s->rng;
    int all = 0; /* the whole row sorted (sort_rest) */
    for (int t = 0; t < n; t++)
        w->order[t] = t;
    while (i < 0) { /* ends: with m == k every draw is decided */
        if (uncut && m > 0) {
            rng = s->rng;
            double u = rn_rng_uniform(&rng) * z_all;
            s->rng = rng;
            return draw_rest(s, m, u, weight_sum(w->prob, m), w);
        }
        int next = k < n ? k : m == 0 ? RN_TOP_CANDIDATES : 8 * m; /* past 1024: the rest */
        next = next < k ? next : k;
        if (!all && next - m > SORT_REST_FROM)
            all = (sort_rest(s, m, w), 1);
        else if (!all)
            sort_next(s, m, next, w);
        candidate_weights(s, w, m, next);
        m = next;
        rng = s->rng; /* the same number for every try */
        i = draw_from(s, w->prob, m, k, z_all, &rng);
    }
    s->rng = rng;
    return w->order[i];
}

/* A result without log-probabilities (none asked, or none computed). */
static void no_logprobs(rn_sample_result *res)
{
    res->logprob = NAN;
    res->n_top = 0;
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
    no_logprobs(res);
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
    sample_scratch *w = scratch_for(s->vocab);
    if (!w)
        return RN_ENOMEM;
    for (int i = 0; i < s->vocab; i++)
        w->work[i] = isnan(logits[i]) ? -INFINITY : logits[i];
    apply_penalties(s, w);
    res->token =
        s->p.temperature == 0.0f ? rn_argmax_row(w->work, s->vocab) : sample_filtered(s, w);
    if (n_logprobs == RN_NO_LOGPROBS)
        no_logprobs(res); /* skips a log-softmax over the vocabulary nobody reads */
    else
        fill_logprobs(s, n_logprobs, res, w);
    note_token(s, res->token);
    return RN_OK;
}

/* ------------------------------------------------ drawing from candidates */

int rn_sampler_top_ok(const rn_sampler *s)
{
    const rn_sample_params *p = &s->p;
    return p->n_logit_bias == 0 && p->repetition_penalty == 1.0f && p->presence_penalty == 0.0f &&
           p->frequency_penalty == 0.0f;
}

/* The temperature the sampler draws at: what a reduction of its rows is
 * made for (rn_decode_top). */
float rn_sampler_temperature(const rn_sampler *s)
{
    return s->p.temperature;
}

/* draw_from over t's candidates: -1 when the row is needed. */
static int top_draw(rn_sampler *s, const rn_row_top *t, rn_rng *rng)
{
    const rn_sample_params *p = &s->p;
    int V = s->vocab, k = p->top_k > 0 && p->top_k < V ? p->top_k : V, m = t->n < k ? t->n : k;
    double prob[RN_TOP_CANDIDATES], inv_t = 1.0 / (double)p->temperature;
    if (m < k && k < V)
        return -1; /* the top-k's weight reaches past the candidates */
    for (int i = 0; i < m; i++)
        prob[i] = weight_of(t->logit[i], (double)t->logit[0], inv_t);
    return draw_from(s, prob, m, k, t->zt, rng);
}

/* fill_logprobs from t: its sums give the normaliser, and the alternatives
 * are its first candidates (the same order as fill_logprobs's list). */
static void top_logprobs(const rn_row_top *t, int idx, int n_top, rn_sample_result *res)
{
    double lz = (double)t->logit[0] + log(t->z1);
    res->logprob = (float)((double)t->logit[idx] - lz);
    res->n_top = n_top < t->n ? n_top : t->n;
    for (int i = 0; i < res->n_top; i++) {
        res->top[i].token = t->id[i];
        res->top[i].logprob = (float)((double)t->logit[i] - lz);
    }
}

/* Whether t's candidates are ids of the vocabulary: a reduction made
 * elsewhere (on a device) is checked before its ids index the counts. */
static int top_ids_ok(const rn_sampler *s, const rn_row_top *t)
{
    for (int i = 0; i < t->n; i++)
        if (t->id[i] < 0 || t->id[i] >= s->vocab)
            return 0;
    return 1;
}

int rn_sampler_sample_top(rn_sampler *s, const rn_row_top *t, int n_logprobs, rn_sample_result *res)
{
    int most = s->vocab < RN_TOP_CANDIDATES ? s->vocab : RN_TOP_CANDIDATES;
    if (n_logprobs < RN_NO_LOGPROBS || n_logprobs > RN_MAX_LOGPROBS || !rn_sampler_top_ok(s) ||
        t->n < 1 || t->n > most)
        return RN_EINVAL;
    if (!top_ids_ok(s, t))
        return RN_SAMPLE_NEED_ROW; /* never from a sound reduction: the row decides */
    rn_rng rng = s->rng;           /* kept only when the draw is decided here */
    int idx = s->p.temperature == 0.0f ? 0 : top_draw(s, t, &rng);
    if (idx < 0)
        return RN_SAMPLE_NEED_ROW;
    s->rng = rng;
    res->token = t->id[idx];
    if (n_logprobs == RN_NO_LOGPROBS)
        no_logprobs(res);
    else
        top_logprobs(t, idx, n_logprobs, res);
    note_token(s, res->token);
    return RN_OK;
}

/* rn_row_top_fill's candidates: a heap of the best so far with the worst
 * at its root (`before` order over (value, id) pairs). */
typedef struct top_heap {
    int n;
    float v[RN_TOP_CANDIDATES];
    int32_t id[RN_TOP_CANDIDATES];
} top_heap;

static void heap_swap(top_heap *h, int a, int b)
{
    float v = h->v[a];
    int32_t id = h->id[a];
    h->v[a] = h->v[b];
    h->id[a] = h->id[b];
    h->v[b] = v;
    h->id[b] = id;
}

/* Restores the heap below i: a parent comes after its children. */
static void heap_sift_down(top_heap *h, int i)
{
    for (;;) {
        int c = 2 * i + 1, w = i;
        if (c < h->n && pair_before(h->v[w], h->id[w], h->v[c], h->id[c]))
            w = c;
        if (c + 1 < h->n && pair_before(h->v[w], h->id[w], h->v[c + 1], h->id[c + 1]))
            w = c + 1;
        if (w == i)
            return;
        heap_swap(h, i, w);
        i = w;
    }
}

static void heap_offer(top_heap *h, float v, int32_t id)
{
    if (h->n < RN_TOP_CANDIDATES) {
        int i = h->n++;
        h->v[i] = v;
        h->id[i] = id;
        while (i > 0 && pair_before(h->v[(i - 1) / 2], h->id[(i - 1) / 2], v, id)) {
            heap_swap(h, i, (i - 1) / 2);
            i = (i - 1) / 2;
        }
    } else if (pair_before(v, id, h->v[0], h->id[0])) {
        h->v[0] = v;
        h->id[0] = id;
        heap_sift_down(h, 0);
    }
}

void rn_row_top_fill(const float *logits, int vocab, float temperature, rn_row_top *t)
{
    top_heap h;
    h.n = 0;
    for (int i = 0; i < vocab; i++)
        heap_offer(&h, isnan(logits[i]) ? -INFINITY : logits[i], i);
    memset(t, 0, sizeof *t);
    t->n = h.n;
    for (int i = h.n - 1; i >= 0; i--) { /* the worst leaves the root first */
        t->id[i] = h.id[0];
        t->logit[i] = h.v[0];
        heap_swap(&h, 0, --h.n);
        heap_sift_down(&h, 0);
    }
    double mx = (double)t->logit[0], inv_t = temperature > 0.0f ? 1.0 / (double)temperature : 0.0;
    for (int i = 0; i < vocab; i++) {
        float l = isnan(logits[i]) ? -INFINITY : logits[i];
        t->z1 += weight_of(l, mx, 1.0);
        if (inv_t > 0.0)
            t->zt += weight_of(l, mx, inv_t);
    }
}
