/* The norms of engine/cuda/norm_dev.cuh -- their block arithmetic
 * (norm_row_stats, norm_stats, block_sum2, norm_value) and norm_vec_kernel
 * whole -- run on the CPU through cuda_emu.h, against a double-precision
 * norm; check_norm_emu.c drives them. */
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

/* The norms' epsilon in every case here. */
static const float EMU_EPS = 1e-5f;

/* The worse of two errors, NaN the worst. */
static double worse(double w, double e)
{
    return e > w || e != e ? e : w;
}

/* The double-precision norm of the row v of d values: its mean (0 for
 * RMSNorm) and factor 1 / sqrt(deviation / d + eps), the deviations summed
 * in a second pass. */
static void ref_norm(const float *v, int d, int layer_kind, double *mu, double *f)
{
    double s = 0.0, dev = 0.0;
    for (int k = 0; k < d; k++)
        s += v[k];
    *mu = layer_kind ? s / d : 0.0;
    for (int k = 0; k < d; k++)
        dev += (v[k] - *mu) * (v[k] - *mu);
    *f = 1.0 / sqrt(dev / d + EMU_EPS);
}

/* The largest |y - norm(src)| over 1 + |norm(src)| of nb rows of d values. */
static double norm_worst(const float *y, const float *src, int nb, int d, const float *w,
                         const float *b, int layer_kind)
{
    double worst = 0.0;
    for (int bi = 0; bi < nb; bi++) {
        const float *x = src + (size_t)bi * d;
        double mu, r;
        ref_norm(x, d, layer_kind, &mu, &r);
        for (int k = 0; k < d; k++) {
            double want = (x[k] - mu) * r * (w ? w[k] : 1.0) + (b ? b[k] : 0.0);
            worst = worse(worst, fabs(y[(size_t)bi * d + k] - want) / (1.0 + fabs(want)));
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
                          (const float *)x, d, wa, ba, EMU_EPS, layer_kind) == 0)
            worst = norm_worst(y, x, nb, d, wa, ba, layer_kind);
    }
cleanup:
    free(x);
    free(y);
    free(w);
    free(b);
    return worst;
}

/* One norm_vec_kernel case: rows x d values, its mode (0: a plain norm; 1:
 * gated by swish of a gate; 2: the residual update x = alpha x + res first,
 * into x, the sink; 3: the sum of 3 partial rows first, into y, the sink;
 * 4: the sum of 6 partial rows, gated, as the decode step's group norm)
 * and its output (0: fp32; 1: rounded to bf16; 2: to fp16).  The inputs
 * carry a row past the last, which nothing may write. */
struct nv_case {
    int rows, d, mode, out, layer_kind, parts;
    size_t n, stride; /* values in the rows; between partial rows */
    float *x, *res, *gate, *w, *b;
};

/* What a launch left: y (fp32) and yh (16-bit), each a row longer than
 * the case's rows, and x (the residual stream after mode 2). */
struct nv_out {
    float *y, *x;
    uint16_t *yh;
};

static void nv_out_free(nv_out *o)
{
    free(o->y);
    free(o->x);
    free(o->yh);
}

/* c through norm_vec_kernel as norm_launch (kernels.cu) launches it, per
 * rows a block (norm_vec_rows(d), or 1), or with per 0 through norm_kernel
 * (a block of norm_threads(d) a row), into o; 0, or -1. */
static int nv_run(const nv_case *c, unsigned per, nv_out *o)
{
    size_t xn = c->stride * (size_t)c->parts, yn = c->n + (size_t)c->d;
    o->y = (float *)rn_emu_alloc(yn, sizeof(float));
    o->x = (float *)rn_emu_alloc(xn, sizeof(float));
    o->yh = (uint16_t *)rn_emu_alloc(yn, sizeof(uint16_t));
    if (!o->y || !o->x || !o->yh)
        return -1;
    memcpy(o->x, c->x, sizeof(float) * xn);
    for (size_t i = 0; i < yn; i++)
        o->y[i] = NAN, o->yh[i] = 0x7fc0; /* NaN in bf16 and fp16 alike */
    rk_half h = {c->out ? (void *)o->yh : NULL, c->out == 2 ? RN_DT_F16 : RN_DT_BF16};
    float *sink = c->mode == 2 ? o->x : c->mode >= 3 ? o->y : NULL;
    const float *gate = c->mode == 1 || c->mode == 4 ? c->gate : NULL;
    const float *res = c->mode == 2 ? c->res : NULL;
    if (!per)
        return rn_emu_launch(norm_kernel, dim3((unsigned)c->rows), dim3(norm_threads(c->d)), 0,
                             o->y, (const float *)o->x, c->d, c->layer_kind, (const float *)c->w,
                             (const float *)c->b, EMU_EPS, gate, 0, c->parts, c->stride, res, 0.75f,
                             sink, h);
    return rn_emu_launch(norm_vec_kernel, dim3(((unsigned)c->rows + per - 1) / per),
                         dim3((unsigned)norm_vec_threads(c->d), per), 0, o->y, (const float *)o->x,
                         c->d, c->layer_kind, (const float *)c->w, (const float *)c->b, EMU_EPS,
                         gate, 0, c->parts, c->stride, res, 0.75f, sink, h, c->rows);
}

/* The input row i as the kernel forms it (fp32). */
static float nv_input(const nv_case *c, size_t i)
{
    if (c->mode == 2)
        return __fmaf_rn(c->x[i], 0.75f, c->res[i]);
    if (c->mode < 3)
        return c->x[i];
    float t = 0.0f;
    for (int p = 0; p < c->parts; p++)
        t += c->x[(size_t)p * c->stride + i];
    return t;
}

/* The largest error of o's output over 1 + |value| against the definition
 * (the input row, then the norm in double), less the output's rounding
 * (one bf16 or fp16 step); 1 for a sink value that is not the input row's
 * bits or any write past the rows. */
static double nv_worst(const nv_case *c, const nv_out *o)
{
    float *in = (float *)malloc(sizeof(float) * (size_t)c->d);
    double worst = 0.0;
    if (!in)
        return -1.0;
    for (int r = 0; r < c->rows; r++) {
        size_t r0 = (size_t)r * (size_t)c->d;
        for (int k = 0; k < c->d; k++)
            in[k] = nv_input(c, r0 + (size_t)k);
        double mu, f;
        ref_norm(in, c->d, c->layer_kind, &mu, &f);
        for (int k = 0; k < c->d; k++) {
            size_t i = r0 + (size_t)k;
            double want = (in[k] - mu) * f * c->w[k] + c->b[k];
            if (c->mode == 1 || c->mode == 4)
                want *= rn_act_apply(0, c->gate[i]);
            double got = c->out == 0   ? o->y[i]
                         : c->out == 1 ? rn__bf16_to_f32(o->yh[i])
                                       : rn__f16_to_f32(o->yh[i]);
            double step = c->out == 1 ? 1.0 / 128 : c->out == 2 ? 1.0 / 1024 : 0.0;
            worst = worse(worst, fabs(got - want) / (1.0 + fabs(want)) - step);
            const float *sink = c->mode == 2 ? o->x : c->mode >= 3 && c->out ? o->y : NULL;
            if (sink && memcmp(&sink[i], &in[k], sizeof(float)) != 0)
                worst = 1.0;
        }
    }
    for (size_t i = c->n; i < c->n + (size_t)c->d; i++) /* the row past the last */
        if ((c->out ? o->yh[i] != 0x7fc0 : o->y[i] == o->y[i]) ||
            memcmp(&o->x[i], &c->x[i], sizeof(float)) != 0)
            worst = 1.0;
    free(in);
    return worst;
}

/* norm_vec_kernel (vec set) or norm_kernel as rk_norm, rk_norm_parts and
 * rk_add_norm launch them (kernels.cu: norm_launch) on rows x d values in
 * mode, to out (see nv_case): the worst error against the definition
 * (nv_worst; 1e-5 is the bound), or 1 when norm_vec_kernel's launch with
 * one row a block gives other bits (a row's bits must not depend on the
 * rows beside it).  -1 on error. */
static double nv_check(int rows, int d, int mode, int out, uint32_t seed, int vec)
{
    nv_case c = {};
    nv_out multi = {}, single = {};
    double worst = -1.0;
    c.rows = rows, c.d = d, c.mode = mode, c.out = out, c.layer_kind = (int)(seed & 1);
    c.parts = mode == 3 ? 3 : mode == 4 ? 6 : 1;
    c.n = (size_t)rows * (size_t)d, c.stride = c.n + (size_t)d;
    c.x = (float *)rn_emu_alloc(c.stride * (size_t)c.parts, sizeof(float));
    c.res = (float *)rn_emu_alloc(c.stride, sizeof(float));
    c.gate = (float *)rn_emu_alloc(c.stride, sizeof(float));
    c.w = (float *)malloc(sizeof(float) * d), c.b = (float *)malloc(sizeof(float) * d);
    if (!c.x || !c.res || !c.gate || !c.w || !c.b || (vec && d % 4))
        goto cleanup;
    for (int k = 0; k < d; k++)
        c.w[k] = rf_uniform(&seed, 0.5f, 1.5f), c.b[k] = rf_uniform(&seed, -0.5f, 0.5f);
    for (size_t i = 0; i < c.stride * (size_t)c.parts; i++)
        c.x[i] = rf_uniform(&seed, -3.0f, 5.0f);
    for (size_t i = 0; i < c.stride; i++)
        c.res[i] = rf_uniform(&seed, -1.0f, 1.0f), c.gate[i] = rf_uniform(&seed, -4.0f, 4.0f);
    if (nv_run(&c, vec ? (unsigned)norm_vec_rows(d) : 0, &multi) || (vec && nv_run(&c, 1, &single)))
        goto cleanup;
    worst = nv_worst(&c, &multi);
    if (vec) {
        size_t yn = c.n + (size_t)d, xn = c.stride * (size_t)c.parts;
        if (memcmp(multi.y, single.y, sizeof(float) * yn) ||
            memcmp(multi.yh, single.yh, sizeof(uint16_t) * yn) ||
            memcmp(multi.x, single.x, sizeof(float) * xn))
            worst = 1.0;
    }
cleanup:
    nv_out_free(&multi);
    nv_out_free(&single);
    free(c.x);
    free(c.res);
    free(c.gate);
    free(c.w);
    free(c.b);
    return worst;
}

extern "C" double rn_emu_norm_vec_check(int rows, int d, int mode, int out, uint32_t seed)
{
    return nv_check(rows, d, mode, out, seed, 1);
}

/* nv_check through norm_kernel, the norms' kernel where norm_vec_kernel
 * does not fit (a width not a multiple of 4, rows off 16 bytes). */
extern "C" double rn_emu_norm_kernel_check(int rows, int d, int mode, int out, uint32_t seed)
{
    return nv_check(rows, d, mode, out, seed, 0);
}

/* norm_vec_block_rows(d, rows) and norm_vec_rows(d), for the launch rule's
 * test. */
extern "C" void rn_emu_norm_vec_rows(int d, int rows, int *block_rows, int *most)
{
    *block_rows = norm_vec_block_rows(d, rows);
    *most = norm_vec_rows(d);
}

/* to_half_kernel (norm_dev.cuh) over n values of src taken skew floats past
 * a 16-byte boundary, into h skew_h values past an 8-byte one, in a grid
 * of grid x block threads (few enough for the grid-stride rounds to wrap):
 * how many of the n values differ from their own rounding, plus how many
 * of the 8 values after them (and the skew_h before them) were written.
 * *vec: whether the launch took 8 values a thread.  -1 on error. */
extern "C" long rn_emu_to_half_check(size_t n, int skew, int skew_h, int t, unsigned grid,
                                     unsigned block, uint32_t seed, int *vec)
{
    const uint16_t guard = 0xabcd;
    long bad = -1;
    size_t total = n + 16;
    float *src = (float *)rn_emu_alloc(total, sizeof(float));
    uint16_t *dst = (uint16_t *)rn_emu_alloc(total, sizeof(uint16_t));
    if (!src || !dst)
        goto cleanup;
    {
        /* every kind of value a rounding can meet: ties, specials, subnormals */
        static const float special[] = {0.0f,    -0.0f,       INFINITY, -INFINITY, 1e-40f,
                                        -3e-39f, 1.00390625f, 65520.0f, 3.4e38f,   1.0f + 0x1p-8f};
        for (size_t i = 0; i < total; i++)
            src[i] = i % 7 == 3 ? special[(i / 7) % (sizeof special / sizeof special[0])]
                                : rf_uniform(&seed, -300.0f, 300.0f);
        for (size_t i = 0; i < total; i++)
            dst[i] = guard;
        const float *s = src + skew;
        rk_half h = {dst + skew_h, t};
        *vec = to_half_vec_fits(s, h);
        if (rn_emu_launch(to_half_kernel, dim3(grid), dim3(block), 0, h, s, n, *vec))
            goto cleanup;
        bad = 0;
        for (size_t i = 0; i < n; i++) {
            uint16_t want = rn__f32_to_half(s[i], t == RN_DT_BF16);
            bad += dst[(size_t)skew_h + i] != want;
        }
        for (size_t i = 0; i < (size_t)skew_h; i++)
            bad += dst[i] != guard;
        for (size_t i = (size_t)skew_h + n; i < total; i++)
            bad += dst[i] != guard;
    }
cleanup:
    free(src);
    free(dst);
    return bad;
}
