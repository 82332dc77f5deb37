/* The norms' block arithmetic (engine/cuda/norm_dev.cuh: norm_row_stats,
 * norm_stats, block_sum2, norm_value) run on the CPU through cuda_emu.h,
 * against a double-precision norm; check_norm_emu.c drives it. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_emu.h"

#include "rn_math.h"
#include "cuda/norm_dev.cuh"
#include "cuda/ret_ref.h" /* rf_uniform */

/* norm_kernel's statistics and values (kernels.cu) without its sink, gate
 * and rounded output: a block per row of x. */
static void row_norm_kernel(float *y, const float *x, int d, const float *w, const float *b,
                            float eps, int layer_kind)
{
    __shared__ double sh[64];
    size_t row = blockIdx.x;
    const float *xr = x + row * (size_t)d;
    double mu;
    float r;
    if (threadIdx.x == 0) /* a slot the sums read but no warp wrote shows as NaN */
        for (int i = 0; i < 64; i++)
            sh[i] = NAN;
    __syncthreads();
    norm_row_stats(xr, d, layer_kind, eps, sh, mu, r);
    for (int k = (int)threadIdx.x; k < d; k += (int)blockDim.x)
        y[row * (size_t)d + (size_t)k] = norm_value(xr[k], mu, r, w, b, k, NULL, 0);
}

/* The largest |y - norm(src)| over 1 + |norm(src)| of nb rows of d values. */
static double norm_worst(const float *y, const float *src, int nb, int d, const float *w,
                         const float *b, float eps, int layer_kind)
{
    double worst = 0.0;
    for (int bi = 0; bi < nb; bi++) {
        const float *x = src + (size_t)bi * d;
        double mu = 0.0, dev = 0.0;
        for (int k = 0; k < d; k++)
            mu += x[k];
        mu = layer_kind ? mu / d : 0.0;
        for (int k = 0; k < d; k++)
            dev += (x[k] - mu) * (x[k] - mu);
        double r = 1.0 / sqrt(dev / d + eps);
        for (int k = 0; k < d; k++) {
            double want = (x[k] - mu) * r * (w ? w[k] : 1.0) + (b ? b[k] : 0.0);
            double e = fabs(y[(size_t)bi * d + k] - want) / (1.0 + fabs(want));
            worst = e > worst || e != e ? e : worst;
        }
    }
    return worst;
}

extern "C" double rn_emu_norm_check(int nb, int d, int threads, int layer_kind, int affine,
                                    uint32_t seed)
{
    size_t n = (size_t)nb * (size_t)d;
    float *x = (float *)malloc(sizeof(float) * n), *y = (float *)malloc(sizeof(float) * n);
    float *w = (float *)malloc(sizeof(float) * d), *b = (float *)malloc(sizeof(float) * d);
    double worst = -1.0;
    const float eps = 1e-5f;
    if (!x || !y || !w || !b || nb < 1)
        goto cleanup;
    for (int k = 0; k < d; k++) {
        w[k] = rf_uniform(&seed, 0.5f, 1.5f);
        b[k] = rf_uniform(&seed, -0.5f, 0.5f);
    }
    for (size_t i = 0; i < n; i++)
        x[i] = rf_uniform(&seed, -3.0f, 5.0f); /* a mean away from 0 */
    for (size_t i = 0; i < n; i++)
        y[i] = NAN;
    {
        const float *wa = affine ? w : NULL, *ba = affine ? b : NULL;
        if (rn_emu_launch(row_norm_kernel, dim3((unsigned)nb), dim3((unsigned)threads), 0, y,
                          (const float *)x, d, wa, ba, eps, layer_kind) == 0)
            worst = norm_worst(y, x, nb, d, wa, ba, eps, layer_kind);
    }
cleanup:
    free(x);
    free(y);
    free(w);
    free(b);
    return worst;
}

/* norm_vec_kernel as rk_norm, rk_norm_parts and rk_add_norm launch it
 * (kernels.cu: norm_launch), on rows x d values.  mode 0: a plain norm; 1:
 * gated by act (act 0, swish) of a gate; 2: the residual update x = alpha x
 * + res first (into x, the sink); 3: the sum of 3 partial rows first (into
 * y, the sink).  half: the output rounded to bf16.  Against the
 * definition: the input row as the kernel forms it (fp32), then the norm
 * in double: returns the largest error over 1 + |value| (1e-5 is the
 * bound for fp32, a bf16 rounding for half), with any sink value not the
 * bits the definition gives, any output left NaN, or a write past the
 * rows made to count as 1.  -1 on error. */
extern "C" double rn_emu_norm_vec_check(int rows, int d, int mode, int half, uint32_t seed)
{
    const int parts = mode == 3 ? 3 : 1, layer_kind = (int)(seed & 1);
    size_t n = (size_t)rows * (size_t)d, pad = (size_t)d; /* a row past the end */
    size_t stride = n + pad;                              /* between partial rows */
    float *x = (float *)aligned_alloc(64, sizeof(float) * stride * (size_t)parts);
    float *res = (float *)aligned_alloc(64, sizeof(float) * (n + pad));
    float *gate = (float *)aligned_alloc(64, sizeof(float) * (n + pad));
    float *y = (float *)aligned_alloc(64, sizeof(float) * (n + pad));
    float *want_in = (float *)malloc(sizeof(float) * n),
          *x_pad = (float *)malloc(sizeof(float) * d);
    uint16_t *yh = (uint16_t *)aligned_alloc(64, sizeof(uint16_t) * (n + pad));
    float *w = (float *)malloc(sizeof(float) * d), *b = (float *)malloc(sizeof(float) * d);
    double worst = -1.0;
    const float eps = 1e-5f, alpha = 0.75f;
    if (!x || !res || !gate || !y || !want_in || !x_pad || !yh || !w || !b || d % 4)
        goto cleanup;
    for (int k = 0; k < d; k++)
        w[k] = rf_uniform(&seed, 0.5f, 1.5f), b[k] = rf_uniform(&seed, -0.5f, 0.5f);
    for (size_t i = 0; i < stride * (size_t)parts; i++)
        x[i] = rf_uniform(&seed, -3.0f, 5.0f);
    memcpy(x_pad, x + n, sizeof(float) * pad);
    for (size_t i = 0; i < n + pad; i++) {
        res[i] = rf_uniform(&seed, -1.0f, 1.0f), gate[i] = rf_uniform(&seed, -4.0f, 4.0f);
        y[i] = NAN, yh[i] = 0x7fc0; /* bf16 NaN */
    }
    for (size_t i = 0; i < n; i++) { /* the row as the kernel forms it */
        if (mode == 2) {
            want_in[i] = __fmaf_rn(x[i], alpha, res[i]);
        } else if (mode == 3) {
            float t = 0.0f;
            for (int p = 0; p < parts; p++)
                t += x[(size_t)p * stride + i];
            want_in[i] = t;
        } else {
            want_in[i] = x[i];
        }
    }
    {
        rk_half h = {half ? (void *)yh : NULL, RN_DT_BF16};
        float *sink = mode == 2 ? x : mode == 3 ? y : NULL;
        unsigned per = (unsigned)norm_vec_rows(d);
        if (rn_emu_launch(norm_vec_kernel, dim3(((unsigned)rows + per - 1) / per),
                          dim3((unsigned)norm_vec_threads(d), per), 0, y, (const float *)x, d,
                          layer_kind, (const float *)w, (const float *)b, eps,
                          (const float *)(mode == 1 ? gate : NULL), 0, parts, stride,
                          (const float *)(mode == 2 ? res : NULL), alpha, sink, h, rows) != 0)
            goto cleanup;
        /* the sink holds the fp32 row (x: the residual stream; y: unless
         * the output went there too) */
        if (mode == 2 || (mode == 3 && half))
            for (size_t i = 0; i < n; i++)
                if (memcmp(&sink[i], &want_in[i], sizeof(float)) != 0)
                    worst = 1.0;
    }
    if (worst < 0.0)
        worst = 0.0;
    for (int r = 0; r < rows; r++) {
        const float *v = want_in + (size_t)r * d;
        double s = 0.0, ss = 0.0;
        for (int k = 0; k < d; k++)
            s += v[k], ss += (double)v[k] * v[k];
        double mu = layer_kind ? s / d : 0.0, dev = layer_kind ? ss - s * mu : ss;
        double f = 1.0 / sqrt(dev / d + eps);
        for (int k = 0; k < d; k++) {
            size_t i = (size_t)r * d + (size_t)k;
            double want = (v[k] - mu) * f * w[k] + b[k];
            if (mode == 1)
                want *= rn_act_apply(0, gate[i]);
            double got = half ? rn__bf16_to_f32(yh[i]) : y[i];
            double bound = half ? 1.0 / 128 : 0.0; /* one bf16 rounding */
            double e = fabs(got - want) / (1.0 + fabs(want)) - bound;
            worst = e > worst || e != e ? e : worst;
        }
    }
    for (size_t i = n; i < n + pad; i++) /* nothing past the rows */
        if ((half ? yh[i] != 0x7fc0 : y[i] == y[i]) || memcmp(&x[i], &x_pad[i - n], sizeof(float)))
            worst = 1.0;
cleanup:
    free(x);
    free(res);
    free(gate);
    free(y);
    free(want_in);
    free(x_pad);
    free(yh);
    free(w);
    free(b);
    return worst;
}
