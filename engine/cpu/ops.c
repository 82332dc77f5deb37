/*
 * ops.c -- CPU kernels for the dense parts of a RetNet block.
 *
 * Two linear paths: rn__linear_rows (decode; a hand-written dot product per
 * output, vectorised, bandwidth-bound, bit-stable across batch sizes) and
 * rn__linear_gemm (prefill; OpenBLAS sgemm, with f16/bf16 weights expanded to
 * fp32 one matrix at a time).  Hot loops are compiled for x86-64-v4/v3 and a
 * baseline, picked at load time (target_clones), so one binary runs anywhere.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include <cblas.h>

#include "../rn_math.h"
#include "../util.h"
#include "ops.h"

#if defined(__x86_64__) && !defined(RN_NO_CLONES)
#define RN_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define RN_CLONES
#endif

#define DOT_LANES 16
#define ROW_BLOCK 16 /* output rows per task: enough work to amortise a wake-up */
#define CVT_BLOCK 512
#define B_TILE 32

/* Sum of a[i]*b[i] in DOT_LANES interleaved partial sums, then a fixed-order
 * reduction: the order depends only on n. */
RN_CLONES static float dot_f32(const float *restrict a, const float *restrict b, int n)
{
    float acc[DOT_LANES] = {0};
    int i = 0;
    for (; i + DOT_LANES <= n; i += DOT_LANES)
        for (int j = 0; j < DOT_LANES; j++)
            acc[j] += a[i + j] * b[i + j];
    for (int j = 0; i < n; i++, j++)
        acc[j] += a[i] * b[i];
    for (int w = DOT_LANES / 2; w > 0; w /= 2)
        for (int j = 0; j < w; j++)
            acc[j] += acc[j + w];
    return acc[0];
}

RN_CLONES static void cvt_bf16(float *restrict dst, const uint16_t *restrict src, int n)
{
    for (int i = 0; i < n; i++) {
        uint32_t u = (uint32_t)src[i] << 16;
        memcpy(&dst[i], &u, 4);
    }
}

RN_CLONES static void cvt_f16(float *restrict dst, const uint16_t *restrict src, int n)
{
    for (int i = 0; i < n; i++) {
        _Float16 h;
        memcpy(&h, &src[i], 2);
        dst[i] = (float)h;
    }
}

static void cvt_row(float *dst, const void *src, rn_dtype t, int n)
{
    if (t == RN_DT_BF16)
        cvt_bf16(dst, src, n);
    else if (t == RN_DT_F16)
        cvt_f16(dst, src, n);
    else
        memcpy(dst, src, (size_t)n * 4);
}

typedef struct {
    float *y;
    const float *x;
    int n, in, out;
    const rn_tensor *W;
    const float *bias;
} rows_job;

/* Rows [r0, r1) of y for all n inputs.  Half-precision rows are expanded
 * CVT_BLOCK columns at a time and each block is used by up to B_TILE inputs;
 * every input's partial sums see the same lane order whatever n is. */
RN_CLONES static void rows_task_half(const rows_job *j, int r0, int r1)
{
    float buf[CVT_BLOCK];
    float acc[B_TILE][DOT_LANES];
    for (int r = r0; r < r1; r++) {
        const char *wrow = (const char *)j->W->data + (size_t)r * (size_t)j->in * 2;
        for (int b0 = 0; b0 < j->n; b0 += B_TILE) {
            int nb = j->n - b0 < B_TILE ? j->n - b0 : B_TILE;
            memset(acc, 0, sizeof acc);
            for (int c0 = 0; c0 < j->in; c0 += CVT_BLOCK) {
                int m = j->in - c0 < CVT_BLOCK ? j->in - c0 : CVT_BLOCK;
                cvt_row(buf, wrow + (size_t)c0 * 2, j->W->dtype, m);
                for (int bb = 0; bb < nb; bb++) {
                    const float *x = j->x + (size_t)(b0 + bb) * (size_t)j->in + (size_t)c0;
                    float *a = acc[bb];
                    int i = 0;
                    for (; i + DOT_LANES <= m; i += DOT_LANES)
                        for (int l = 0; l < DOT_LANES; l++)
                            a[l] += buf[i + l] * x[i + l];
                    for (int l = 0; i < m; i++, l++)
                        a[l] += buf[i] * x[i];
                }
            }
            for (int bb = 0; bb < nb; bb++) {
                float *a = acc[bb];
                for (int w = DOT_LANES / 2; w > 0; w /= 2)
                    for (int l = 0; l < w; l++)
                        a[l] += a[l + w];
                j->y[(size_t)(b0 + bb) * (size_t)j->out + (size_t)r] =
                    a[0] + (j->bias ? j->bias[r] : 0.0f);
            }
        }
    }
}

static void rows_task(void *ctx, int blk)
{
    const rows_job *j = ctx;
    int r0 = blk * ROW_BLOCK, r1 = r0 + ROW_BLOCK < j->out ? r0 + ROW_BLOCK : j->out;
    if (j->W->dtype != RN_DT_F32) {
        rows_task_half(j, r0, r1);
        return;
    }
    for (int r = r0; r < r1; r++) {
        const float *wrow = (const float *)j->W->data + (size_t)r * (size_t)j->in;
        for (int b = 0; b < j->n; b++) {
            float s = dot_f32(wrow, j->x + (size_t)b * (size_t)j->in, j->in);
            j->y[(size_t)b * (size_t)j->out + (size_t)r] = s + (j->bias ? j->bias[r] : 0.0f);
        }
    }
}

void rn__linear_rows(rn_cpu_ops_ctx *c, float *y, const float *x, int n, const rn_tensor *W,
                     const rn_tensor *b)
{
    rows_job j = {y, x, n, (int)W->shape[1], (int)W->shape[0], W, b ? b->data : NULL};
    rn__pool_run(c->pool, (j.out + ROW_BLOCK - 1) / ROW_BLOCK, rows_task, &j);
}

typedef struct {
    float *dst;
    const rn_tensor *W;
    int64_t n;
} cvt_job;

static void cvt_task(void *ctx, int i)
{
    const cvt_job *j = ctx;
    int64_t per = (j->n + 63) / 64, s = (int64_t)i * per, e = s + per < j->n ? s + per : j->n;
    if (s < e)
        cvt_row(j->dst + s, (const char *)j->W->data + s * 2, j->W->dtype, (int)(e - s));
}

void rn__linear_gemm(rn_cpu_ops_ctx *c, float *y, const float *x, int n, const rn_tensor *W,
                     const rn_tensor *b)
{
    int out = (int)W->shape[0], in = (int)W->shape[1];
    const float *w = W->data;
    if (W->dtype != RN_DT_F32) {
        cvt_job j = {c->wbuf, W, W->numel};
        rn__pool_run(c->pool, 64, cvt_task, &j);
        w = c->wbuf;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, out, in, 1.0f, x, in, w, in, 0.0f, y,
                out);
    if (b && b->data)
        for (int i = 0; i < n; i++)
            for (int o = 0; o < out; o++)
                y[(size_t)i * (size_t)out + (size_t)o] += ((const float *)b->data)[o];
}

/* ----------------------------------------------------------- elementwise */

void rn__norm(float *y, const float *x, int n, int d, rn_norm_kind kind, const float *w,
              const float *b, float eps)
{
    for (int i = 0; i < n; i++) {
        const float *xi = x + (size_t)i * (size_t)d;
        float *yi = y + (size_t)i * (size_t)d;
        double mu = 0.0, ss = 0.0;
        if (kind == RN_NORM_LAYER) {
            for (int k = 0; k < d; k++)
                mu += xi[k];
            mu /= d;
        }
        for (int k = 0; k < d; k++)
            ss += ((double)xi[k] - mu) * ((double)xi[k] - mu);
        float r = (float)(1.0 / sqrt(ss / d + (double)eps));
        for (int k = 0; k < d; k++) {
            float v = (float)((double)xi[k] - mu) * r;
            v = w ? v * w[k] : v;
            yi[k] = b ? v + b[k] : v;
        }
    }
}

void rn__group_norm(float *o, int n, int heads, int dv, rn_norm_kind kind, float eps,
                    const float *w)
{
    for (int i = 0; i < n * heads; i++)
        rn__norm(o + (size_t)i * (size_t)dv, o + (size_t)i * (size_t)dv, 1, dv, kind, w, NULL,
                 eps);
}

static float act1(float v, rn_act a)
{
    return a == RN_ACT_SWISH ? rn_act_swish(v) : a == RN_ACT_GELU ? rn_act_gelu(v)
                                                                  : rn_act_relu(v);
}

void rn__act(float *x, size_t n, rn_act a)
{
    for (size_t i = 0; i < n; i++)
        x[i] = act1(x[i], a);
}

void rn__gate(float *y, const float *g, size_t n, rn_act a)
{
    for (size_t i = 0; i < n; i++)
        y[i] *= act1(g[i], a);
}

void rn__rope(float *x, int n, int heads, int dk, const long long *pos, const float *freq,
              int interleaved)
{
    float cs[2 * 1024], *c = cs, *s = cs + 1024;
    int half = dk / 2;
    for (int i = 0; i < n; i++) {
        for (int f = 0; f < dk && f < 1024; f++) {
            double a = (double)rn_rope_angle(pos[i], freq[f]);
            c[f] = (float)cos(a);
            s[f] = (float)sin(a);
        }
        for (int h = 0; h < heads; h++) {
            float *v = x + ((size_t)i * (size_t)heads + (size_t)h) * (size_t)dk;
            if (interleaved) {
                for (int j = 0; j < dk; j += 2) {
                    float a = v[j], b = v[j + 1];
                    v[j] = a * c[j] - b * s[j];
                    v[j + 1] = b * c[j + 1] + a * s[j + 1];
                }
            } else {
                for (int j = 0; j < half; j++) {
                    float a = v[j], b = v[j + half];
                    v[j] = a * c[j] - b * s[j];
                    v[j + half] = b * c[j + half] + a * s[j + half];
                }
            }
        }
    }
}
