/* The decode step's GEMVs of engine/cuda/gemv_dev.cuh on the CPU through
 * cuda_emu.h: gemv_norm_kernel, which forms its rows' pre-norm or the
 * retention's group norm itself, against what it replaces --
 * norm_vec_kernel into a buffer, then gemv_split_kernel on it, each
 * launched as kernels.cu launches them -- bit for bit, on every kind of
 * job; check_gemv_emu.c drives it. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <type_traits>

#include "cuda_emu.h"

#include "rn_math.h"
#include "cuda/gemv_dev.cuh"
#include "cuda/ret_ref.h" /* rf_uniform */

/* One case's device-side buffers (rn_emu_alloc: aligned as cudaMalloc's). */
struct ge_bufs {
    void *W[RK_GEMV_JOBS], *W2;
    float *bias[RK_GEMV_JOBS], *freq, *xraw, *hn, *y[2][RK_GEMV_JOBS];
    uint16_t *yh[2];
    int64_t *pos;
};

static void ge_free(ge_bufs *g)
{
    for (int j = 0; j < RK_GEMV_JOBS; j++) {
        free(g->W[j]);
        free(g->bias[j]);
        free(g->y[0][j]);
        free(g->y[1][j]);
    }
    free(g->W2);
    free(g->freq);
    free(g->xraw);
    free(g->hn);
    free(g->yh[0]);
    free(g->yh[1]);
    free(g->pos);
}

/* n random weights of dtype t (bf16: its bits; f32: floats) in [-a, a). */
static void *ge_weights(int t, size_t n, float a, uint32_t *seed)
{
    size_t size = t == RN_DT_F32 ? 4 : 2;
    void *p = rn_emu_alloc(n, size);
    if (!p)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        float v = rf_uniform(seed, -a, a);
        if (t == RN_DT_F32)
            ((float *)p)[i] = v;
        else
            ((uint16_t *)p)[i] = rn__f32_to_bf16(v);
    }
    return p;
}

static float *ge_floats(size_t n, float lo, float hi, uint32_t *seed)
{
    float *p = (float *)rn_emu_alloc(n, sizeof(float));
    for (size_t i = 0; p && i < n; i++)
        p[i] = rf_uniform(seed, lo, hi);
    return p;
}

/* The set of case `kinds` over rows of in values: 0, q/k/v/g as a block's
 * projections are (q and k rotary, 2 heads of dk = out / 2; k scaled; v
 * with a bias); 1, GLU's up and gate with the product rounded to bf16; 2,
 * one plain job added to the residual rows y in place.  Outputs into
 * g->y[which] (and g->yh[which]). */
static rk_gemv_set ge_set(const ge_bufs *g, int kinds, int which, int out)
{
    rk_gemv_set s = {};
    if (kinds == 0) {
        s.count = 4;
        for (int j = 0; j < 4; j++) {
            s.job[j].W = g->W[j], s.job[j].y = g->y[which][j];
            s.job[j].out = j < 2 ? out : 2 * out;
            s.job[j].kind = j < 2 ? RK_JOB_ROPE : RK_JOB_PLAIN;
        }
        s.job[1].scale = 0.125f;
        s.job[2].bias = g->bias[2];
        s.pos = g->pos, s.freq = g->freq, s.dk = out / 2, s.interleaved = 0;
    } else if (kinds == 1) {
        s.count = 1;
        s.job[0].W = g->W[0], s.job[0].W2 = g->W2, s.job[0].y = g->y[which][0];
        s.job[0].out = out, s.job[0].kind = RK_JOB_GLU;
        s.job[0].bias = g->bias[0], s.job[0].bias2 = g->bias[1];
        s.job[0].h = rk_half{g->yh[which], RN_DT_BF16};
        s.act = RN_ACT_SWISH;
    } else {
        s.count = 1;
        s.job[0].W = g->W[0], s.job[0].y = g->y[which][0], s.job[0].out = out;
        s.job[0].resid = 1, s.alpha = 0.75f;
    }
    return s;
}

template <typename T, int NB>
static int ge_run(const ge_bufs *g, int kinds, int out, int in, int cols, int grid,
                  const rk_gemv_norm *nm)
{
    rk_gemv_set ref = ge_set(g, kinds, 0, out), fused = ge_set(g, kinds, 1, out);
    size_t pairs = 0;
    for (int j = 0; j < ref.count; j++)
        pairs += (size_t)gemv_pairs(ref.job[j]);
    int items = (int)((pairs + GEMV_PW(NB) - 1) / GEMV_PW(NB)), shares = (in + cols - 1) / cols;
    unsigned threads = (unsigned)gemv_norm_threads(in);
    /* what the step launches without the fold: the norm (norm_launch), then
     * the split GEMV on its output (gemv_launch) */
    if (rn_emu_launch(norm_vec_kernel, dim3(NB), dim3((unsigned)norm_vec_threads(in), 1), 0, g->hn,
                      (const float *)g->xraw, in, nm->layer_kind, nm->w, nm->b, nm->eps,
                      (const float *)NULL, 0, 1, (size_t)0, (const float *)NULL, 1.0f,
                      (float *)NULL, rk_half(), NB) ||
        rn_emu_launch(gemv_split_kernel<T, NB>, dim3((unsigned)items), dim3(32u * shares), 0, ref,
                      (const float *)g->hn, in, cols))
        return -1;
    return rn_emu_launch(gemv_norm_kernel<T, NB, false>, dim3((unsigned)grid), dim3(threads),
                         sizeof(float) * (size_t)NB * (size_t)in, fused, (const float *)g->xraw, in,
                         cols, *nm, items);
}

/* The group norm's case: nb rows of in values, groups of nm->group, from
 * nm->parts parts at xparts; the reference as rk_norm_parts launches it
 * (norm_launch: rows of a group, several a block, the parts' sum written
 * to the output first), then the split GEMV of the output projection (a
 * job added to the residual rows). */
template <typename T, int NB>
static int ge_group_run(const ge_bufs *g, const float *xparts, int out, int in, int cols, int grid,
                        const rk_gemv_norm *nm)
{
    rk_gemv_set ref = ge_set(g, 2, 0, out), fused = ge_set(g, 2, 1, out);
    int items = (gemv_pairs(ref.job[0]) + GEMV_PW(NB) - 1) / GEMV_PW(NB);
    int shares = (in + cols - 1) / cols, rows = NB * (in / nm->group);
    int per = norm_vec_block_rows(nm->group, rows);
    if (rn_emu_launch(norm_vec_kernel, dim3((unsigned)((rows + per - 1) / per)),
                      dim3((unsigned)norm_vec_threads(nm->group), (unsigned)per), 0, g->hn, xparts,
                      nm->group, nm->layer_kind, nm->w, nm->b, nm->eps, nm->gate, nm->act,
                      nm->parts, nm->part_stride, (const float *)NULL, 1.0f,
                      nm->parts > 1 ? g->hn : (float *)NULL, rk_half(), rows) ||
        rn_emu_launch(gemv_split_kernel<T, NB>, dim3((unsigned)items), dim3(32u * shares), 0, ref,
                      (const float *)g->hn, in, cols))
        return -1;
    return rn_emu_launch(
        gemv_norm_kernel<T, NB, true>, dim3((unsigned)grid), dim3((unsigned)gemv_norm_threads(in)),
        sizeof(float) * (size_t)NB * (size_t)in, fused, xparts, in, cols, *nm, items);
}

/* f((T *)NULL, std::integral_constant<int, NB>()) for weights of dtype t
 * (f32, else bf16) and nb input rows (1, 2, else 3): the instances the
 * cases run. */
template <typename F> static int ge_with(int t, int nb, F f)
{
    auto rows = [&](auto tag) {
        switch (nb) {
        case 1:
            return f(tag, std::integral_constant<int, 1>());
        case 2:
            return f(tag, std::integral_constant<int, 2>());
        default:
            return f(tag, std::integral_constant<int, 3>());
        }
    };
    return t == RN_DT_F32 ? rows((float *)NULL) : rows((__nv_bfloat16 *)NULL);
}

/* Bytes of outputs that differ between the two paths (n values of size
 * each at a and b), NaN-free or not. */
static long ge_differ(const void *a, const void *b, size_t n, size_t size)
{
    long d = 0;
    for (size_t i = 0; i < n; i++)
        d += memcmp((const char *)a + i * size, (const char *)b + i * size, size) != 0;
    return d;
}

/* Runs case (dtype t: bf16 or f32; nb rows of in values; the split GEMV's
 * shares of cols columns; gemv_norm_kernel on grid blocks; the set of
 * `kinds`; LayerNorm or RMSNorm, with or without weights) both ways and
 * returns the outputs whose bits differ, or -1 if a launch failed.  *unset:
 * outputs the fused path left as they were filled (NaN). */
extern "C" long rn_emu_gemv_norm_check(int t, int nb, int in, int cols, int grid, int kinds,
                                       int layer_kind, int affine, uint32_t seed, long *unset)
{
    ge_bufs g = {};
    int out = 32; /* 2 rotary heads of 16; GLU and residual rows of 32 */
    long differ = -1;
    size_t rows = (size_t)nb, yn[RK_GEMV_JOBS];
    for (int j = 0; j < RK_GEMV_JOBS; j++) {
        yn[j] = rows * (size_t)(j < 2 || kinds != 0 ? out : 2 * out);
        g.W[j] = ge_weights(t, yn[j] / rows * (size_t)in, 0.05f, &seed);
        g.bias[j] = ge_floats(yn[j] / rows, -0.5f, 0.5f, &seed);
        for (int w = 0; w < 2; w++)
            g.y[w][j] = (float *)rn_emu_alloc(yn[j], sizeof(float));
        if (!g.W[j] || !g.bias[j] || !g.y[0][j] || !g.y[1][j])
            goto cleanup;
        for (size_t i = 0; i < yn[j]; i++) /* the residual rows, or NaN: unwritten shows */
            g.y[0][j][i] = g.y[1][j][i] = kinds == 2 ? (float)i * 0.01f - 0.3f : NAN;
    }
    g.W2 = ge_weights(t, (size_t)out * (size_t)in, 0.05f, &seed);
    g.freq = ge_floats((size_t)out / 4, 0.01f, 1.0f, &seed);
    g.xraw = ge_floats(rows * (size_t)in, -2.0f, 3.0f, &seed); /* a mean far from 0 */
    g.hn = (float *)rn_emu_alloc(rows * (size_t)in, sizeof(float));
    g.pos = (int64_t *)rn_emu_alloc(rows, sizeof(int64_t));
    for (int w = 0; w < 2; w++) {
        g.yh[w] = (uint16_t *)rn_emu_alloc(rows * (size_t)out, sizeof(uint16_t));
        if (g.yh[w])
            memset(g.yh[w], 0xff, rows * (size_t)out * sizeof(uint16_t));
    }
    if (!g.W2 || !g.freq || !g.xraw || !g.hn || !g.pos || !g.yh[0] || !g.yh[1])
        goto cleanup;
    for (size_t r = 0; r < rows; r++)
        g.pos[r] = 3 + 1000 * (int64_t)r;
    {
        float *nw = affine ? ge_floats((size_t)in, 0.5f, 1.5f, &seed) : NULL;
        float *nbias = affine ? ge_floats((size_t)in, -0.2f, 0.2f, &seed) : NULL;
        rk_gemv_norm nm = {};
        nm.w = nw, nm.b = nbias, nm.eps = 1e-5f, nm.layer_kind = layer_kind;
        int rc = ge_with(t, nb, [&](auto tag, auto nb_c) {
            using T = std::remove_pointer_t<decltype(tag)>;
            return ge_run<T, decltype(nb_c)::value>(&g, kinds, out, in, cols, grid, &nm);
        });
        free(nw);
        free(nbias);
        if (rc)
            goto cleanup;
    }
    differ = 0, *unset = 0;
    for (int j = 0; j < (kinds == 0 ? 4 : 1); j++) {
        differ += ge_differ(g.y[0][j], g.y[1][j], yn[j], sizeof(float));
        for (size_t i = 0; i < yn[j] && kinds != 1; i++)
            *unset += g.y[1][j][i] != g.y[1][j][i];
    }
    if (kinds == 1) {
        differ += ge_differ(g.yh[0], g.yh[1], rows * (size_t)out, sizeof(uint16_t));
        for (size_t i = 0; i < rows * (size_t)out; i++)
            *unset += g.yh[1][i] == 0xffff;
    }
cleanup:
    ge_free(&g);
    return differ;
}

/* The group norm's case both ways (dtype t; nb rows of `heads` groups of
 * `group` values, summed from `parts` partial rows; the split GEMV's
 * shares of cols columns; gemv_norm_kernel on grid blocks; LayerNorm or
 * RMSNorm, with or without weights and a bias, with or without the gate):
 * the outputs whose bits differ, or -1 if a launch failed; *unset as
 * rn_emu_gemv_norm_check's. */
extern "C" long rn_emu_gemv_group_check(int t, int nb, int heads, int group, int parts, int cols,
                                        int grid, int layer_kind, int affine, int gated,
                                        uint32_t seed, long *unset)
{
    ge_bufs g = {};
    int out = 32, in = heads * group;
    size_t rows = (size_t)nb, stride = rows * (size_t)in + 12; /* parts apart, not adjacent */
    long differ = -1;
    float *xparts = NULL, *gate = NULL, *nw = NULL, *nbias = NULL;
    g.W[0] = ge_weights(t, (size_t)out * (size_t)in, 0.05f, &seed);
    for (int w = 0; w < 2; w++)
        g.y[w][0] = (float *)rn_emu_alloc(rows * (size_t)out, sizeof(float));
    g.hn = (float *)rn_emu_alloc(rows * (size_t)in, sizeof(float));
    xparts = ge_floats(stride * (size_t)parts, -1.0f, 1.5f, &seed); /* a mean far from 0 */
    gate = gated ? ge_floats(rows * (size_t)in, -3.0f, 3.0f, &seed) : NULL;
    nw = affine ? ge_floats((size_t)group, 0.5f, 1.5f, &seed) : NULL;
    nbias = affine ? ge_floats((size_t)group, -0.2f, 0.2f, &seed) : NULL;
    if (!g.W[0] || !g.y[0][0] || !g.y[1][0] || !g.hn || !xparts || (gated && !gate) ||
        (affine && (!nw || !nbias)))
        goto cleanup;
    for (size_t i = 0; i < rows * (size_t)out; i++) /* the residual rows */
        g.y[0][0][i] = g.y[1][0][i] = (float)i * 0.01f - 0.3f;
    {
        rk_gemv_norm nm = {};
        nm.w = nw, nm.b = nbias, nm.eps = 1e-6f, nm.layer_kind = layer_kind, nm.group = group;
        nm.gate = gate, nm.act = RN_ACT_SWISH, nm.parts = parts, nm.part_stride = stride;
        int rc = ge_with(t, nb, [&](auto tag, auto nb_c) {
            using T = std::remove_pointer_t<decltype(tag)>;
            return ge_group_run<T, decltype(nb_c)::value>(&g, xparts, out, in, cols, grid, &nm);
        });
        if (rc)
            goto cleanup;
    }
    differ = ge_differ(g.y[0][0], g.y[1][0], rows * (size_t)out, sizeof(float));
    *unset = 0;
    for (size_t i = 0; i < rows * (size_t)out; i++)
        *unset += g.y[1][0][i] != g.y[1][0][i] || g.y[1][0][i] == (float)i * 0.01f - 0.3f;
cleanup:
    free(xparts);
    free(gate);
    free(nw);
    free(nbias);
    ge_free(&g);
    return differ;
}
