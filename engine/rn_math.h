/*
 * rn_math.h -- scalar arithmetic shared by the CPU backend and the CUDA
 * kernels (RN_HD marks functions both compile), so the CPU unit tests check
 * the exact formulas the device uses: decay rates, decay powers, rotary
 * frequencies and angles, activations.
 *
 * Rounding follows the reference packages: constants they form in fp32
 * (log decay, frequencies, position x frequency) are rounded to fp32 here too
 * (docs/model-format.md; ../retnet-reference notes in docs/architecture.md).
 */
#ifndef RN_MATH_H
#define RN_MATH_H

#include <math.h>

#ifdef __CUDACC__
#define RN_HD __host__ __device__ static inline
#else
#define RN_HD static inline
#endif

/* ln(gamma_h) as a double holding an fp32 value.
 * pow2 (torchscale, FLA): ln(1 - 2^(-5-h)), each step rounded to fp32.
 * linspace (yar, paper): gamma_h = 1 - exp(x_h), x = linspace(ln 1/32, ln
 * 1/512, H). */
RN_HD double rn_log_decay(int decay_linspace, int h, int n_heads)
{
    if (!decay_linspace) {
        float g = (float)(1.0 - pow(2.0, -5.0 - (double)h));
        return (double)(float)log((double)g);
    }
    double a = log(1.0 / 32), b = log(1.0 / 512);
    double x = n_heads > 1 ? a + (b - a) * (double)h / (double)(n_heads - 1) : a;
    if (n_heads > 1 && h == n_heads - 1)
        x = b; /* numpy linspace puts the end point exactly */
    float g = (float)(1.0 - (double)(float)exp((double)(float)x));
    return log((double)g);
}

/* gamma^d (d >= 0 integer) rounded to fp32, from ln(gamma). */
RN_HD float rn_decay_pow(double log_gamma, double d)
{
    return (float)exp(d * log_gamma);
}

/* Rotary frequency of feature i (0 <= i < dk) in the layout's order.
 * half (FLA): j = i mod dk/2, w = theta^(-(fp32)(2j/dk)).
 * interleaved linspace (torchscale, yar): j = i/2, w =
 * theta^(-linspace(0,1,dk/2)_j). */
RN_HD float rn_rope_frequency(int interleaved, int freq_linspace, double theta, int i, int dk)
{
    int n = dk / 2;
    int j = interleaved ? i / 2 : i % n;
    double e;
    if (freq_linspace)
        e = (double)(float)(n > 1 ? (double)j / (double)(n - 1) : 0.0);
    else
        e = (double)((float)(2 * j) / (float)dk);
    return (float)(1.0 / pow(theta, e));
}

/* Angle of feature with frequency w at position pos, rounded to fp32 as the
 * packages' fp32 outer product does. */
RN_HD float rn_rope_angle(long long pos, float w)
{
    return (float)((double)pos * (double)w);
}

RN_HD float rn_act_swish(float x)
{
    return x / (1.0f + expf(-x));
}

RN_HD float rn_act_gelu(float x)
{
    return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
}

RN_HD float rn_act_relu(float x)
{
    return x > 0.0f ? x : 0.0f;
}

RN_HD float rn_act_apply(int act, float x)
{
    /* act: an rn_act value (0 swish, 1 gelu, 2 relu); an int so this header
   * stays free of model.h */
    return act == 0 ? rn_act_swish(x) : act == 1 ? rn_act_gelu(x) : rn_act_relu(x);
}

/* Decay mask of the chunkwise and parallel forms: g^(i-j) on and below the
 * diagonal (j <= i), 0 above; pw[d] = g^d. */
RN_HD float rn_decay_mask(const float *pw, int i, int j)
{
    return j <= i ? pw[i - j] : 0.0f;
}

/* One rotary rotation of the feature pair (a, b) whose angles' cosines and
 * sines are (ca, sa) for a and (cb, sb) for b; the packages form both
 * products in fp32. */
RN_HD void rn_rope_rotate(float *a, float *b, float ca, float sa, float cb, float sb)
{
    float x = *a, y = *b;
#ifdef __CUDA_ARCH__
    /* each product rounded before the sum, as on the host: left to itself
     * nvcc contracts one of the two into an FMA, and which one may differ
     * from kernel to kernel */
    *a = __fsub_rn(__fmul_rn(x, ca), __fmul_rn(y, sa));
    *b = __fadd_rn(__fmul_rn(y, cb), __fmul_rn(x, sb));
#else
    *a = x * ca - y * sa;
    *b = y * cb + x * sb;
#endif
}

/* torchscale's running normaliser after one recurrent step, s' = g s + 1,
 * and the factor 1/sqrt(s') the step's output is scaled by. */
RN_HD float rn_ts_norm_step(float *s, float g)
{
    *s = g * *s + 1.0f;
    return 1.0f / sqrtf(*s);
}

/* Per-row normalisation factor from the row's statistics (sum of squared
 * deviations ss over d values): 1/sqrt(ss/d + eps). */
RN_HD float rn_norm_factor(double ss, int d, float eps)
{
    return (float)(1.0 / sqrt(ss / d + (double)eps));
}

/* Greedy decoding's choice from one row of logits: the first index of the
 * largest value with NaN read as -inf, and 0 when nothing is above -inf
 * (what argmax over the sampler's sanitised copy gives).  The CUDA backend
 * picks on the device with rn_argmax_beats, so its tokens equal the host
 * sampler's on the same logits. */
RN_HD int rn_argmax_beats(float v, int i, float best, int best_i)
{
    return v > best || (v == best && i < best_i); /* v and best: never NaN */
}

RN_HD int rn_argmax_row(const float *l, int n)
{
    float best = -INFINITY;
    int best_i = 0;
    for (int i = 0; i < n; i++)
        if (l[i] > best) { /* NaN never compares greater */
            best = l[i];
            best_i = i;
        }
    return best_i;
}

#endif
