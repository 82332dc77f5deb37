/* The folded GEMV's norm tail (engine/cuda/norm_dev.cuh: norm_tail_rows)
 * run on the CPU through cuda_emu.h, against a double-precision norm;
 * check_norm_emu.c drives it. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_emu.h"

#include "rn_math.h"
#include "cuda/norm_dev.cuh"
#include "cuda/ret_ref.h" /* rf_uniform */

/* What the GEMV does before its tail: block b writes its share of the NB
 * rows' d columns (src into x), then every block runs the tail. */
template <int NB>
static void tail_kernel(float *x, const float *src, int d, float *y, const float *w, const float *b,
                        float eps, int layer_kind, unsigned *count)
{
    int per = (d + (int)gridDim.x - 1) / (int)gridDim.x, k0 = (int)blockIdx.x * per;
    int k1 = k0 + per < d ? k0 + per : d;
    for (int bi = 0; bi < NB; bi++)
        for (int k = k0 + (int)threadIdx.x; k < k1; k += (int)blockDim.x)
            x[(size_t)bi * d + k] = src[(size_t)bi * d + k];
    norm_tail_rows<NB>(x, d, y, w, b, eps, layer_kind, count);
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

extern "C" double rn_emu_norm_tail_check(int nb, int d, int threads, int blocks, int layer_kind,
                                         int affine, uint32_t seed, unsigned *count_after)
{
    size_t n = (size_t)nb * (size_t)d;
    float *x = (float *)malloc(sizeof(float) * n), *src = (float *)malloc(sizeof(float) * n);
    float *y = (float *)malloc(sizeof(float) * n), *w = (float *)malloc(sizeof(float) * d);
    float *b = (float *)malloc(sizeof(float) * d);
    unsigned *count = (unsigned *)calloc(1, sizeof(unsigned));
    double worst = -1.0;
    const float eps = 1e-5f;
    if (!x || !src || !y || !w || !b || !count || nb < 1 || nb > 2)
        goto cleanup;
    for (int k = 0; k < d; k++) {
        w[k] = rf_uniform(&seed, 0.5f, 1.5f);
        b[k] = rf_uniform(&seed, -0.5f, 0.5f);
    }
    worst = 0.0;
    for (int launch = 0; launch < 2 && worst >= 0.0; launch++) { /* the ticket comes back to 0 */
        for (size_t i = 0; i < n; i++)
            src[i] = rf_uniform(&seed, -3.0f, 5.0f); /* a mean away from 0 */
        for (size_t i = 0; i < n; i++)
            y[i] = NAN;
        const float *wa = affine ? w : NULL, *ba = affine ? b : NULL;
        int rc =
            nb == 1 ? rn_emu_launch(tail_kernel<1>, dim3((unsigned)blocks), dim3((unsigned)threads),
                                    0, x, (const float *)src, d, y, wa, ba, eps, layer_kind, count)
                    : rn_emu_launch(tail_kernel<2>, dim3((unsigned)blocks), dim3((unsigned)threads),
                                    0, x, (const float *)src, d, y, wa, ba, eps, layer_kind, count);
        double e = rc ? -1.0 : norm_worst(y, src, nb, d, wa, ba, eps, layer_kind);
        worst = e < 0.0 || e > worst || e != e ? e : worst;
    }
    *count_after = *count;
cleanup:
    free(x);
    free(src);
    free(y);
    free(w);
    free(b);
    free(count);
    return worst;
}
