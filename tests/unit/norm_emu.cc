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
