/*
 * ops.c -- CPU kernels for the dense parts of a RetNet block other than the
 * decode products (packed.c): rn__linear_gemm for prefill (OpenBLAS sgemm
 * on column slices spread over the pool, f16/bf16 weights expanded to fp32
 * one matrix at a time), norms,
 * activations, gating, rotary.  Hot loops are compiled for x86-64-v4/v3 and
 * a baseline, picked at load time (target_clones).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "../rn_math.h"
#include "../util.h"
#include "ops.h"
#include "simd.h"

#pragma GCC diagnostic ignored "-Wpsabi" /* 64-byte vectors stay inside inlined code */

typedef float v16f __attribute__((vector_size(64)));
typedef uint32_t v16u __attribute__((vector_size(64)));
typedef uint16_t v16h __attribute__((vector_size(32)));

#define DOT_LANES 16

/* 16 weights of any weight dtype as fp32 (bf16 is the top half of an fp32) */
static inline __attribute__((always_inline)) v16f load_w(const void *row, int i, rn_dtype t)
{
    v16f f;
    if (t == RN_DT_BF16) {
        v16h h;
        memcpy(&h, (const uint16_t *)row + i, sizeof h);
        v16u u = __builtin_convertvector(h, v16u) << 16;
        memcpy(&f, &u, sizeof f);
    } else {
        for (int k = 0; k < DOT_LANES; k++)
            f[k] = rn__f16_to_f32(((const uint16_t *)row)[i + k]);
    }
    return f;
}

static inline float load_w1(const void *row, int i, rn_dtype t)
{
    uint16_t h = ((const uint16_t *)row)[i];
    return rn__half_to_f32(h, t == RN_DT_BF16);
}

/* dst[i] = fp32 of n half-precision weights */
RN_CLONES static void cvt_row(float *dst, const void *src, rn_dtype t, int64_t n)
{
    int64_t i = 0;
    for (; i + DOT_LANES <= n; i += DOT_LANES) {
        v16f f = load_w((const char *)src + i * 2, 0, t);
        memcpy(dst + i, &f, sizeof f);
    }
    for (; i < n; i++)
        dst[i] = load_w1(src, (int)i, t);
}

typedef struct {
    float *dst;
    const rn_tensor *W;
    int64_t n;
} cvt_job;

static void cvt_task(void *ctx, int i)
{
    const cvt_job *j = ctx;
    int64_t per = ((j->n + 63) / 64 + 15) & ~(int64_t)15, s = (int64_t)i * per,
            e = s + per < j->n ? s + per : j->n;
    if (s < e)
        cvt_row(j->dst + s, (const char *)j->W->data + s * 2, j->W->dtype, e - s);
}

/* One slice of the output columns of y = x W^T (+ b): its own sgemm. */
typedef struct {
    float *y;
    const float *x, *w, *b;
    int n, out, in, per;
} gemm_job;

static void gemm_task(void *ctx, int i)
{
    const gemm_job *j = ctx;
    int o0 = i * j->per, o1 = o0 + j->per < j->out ? o0 + j->per : j->out;
    if (o0 >= o1)
        return;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, j->n, o1 - o0, j->in, 1.0f, j->x, j->in,
                j->w + (size_t)o0 * (size_t)j->in, j->in, 0.0f, j->y + o0, j->out);
    if (j->b)
        for (int r = 0; r < j->n; r++)
            for (int o = o0; o < o1; o++)
                j->y[(size_t)r * (size_t)j->out + (size_t)o] += j->b[o];
}

/* OpenBLAS runs single-threaded (backend_cpu.c): its own threads spin in
 * sched_yield for a long while after each call and then compete with the
 * pool and the server's threads.  The pool splits the output columns
 * instead, in multiples of 64 so every slice keeps whole SIMD panels. */
void rn__linear_gemm(rn_cpu_ops_ctx *c, float *y, const float *x, int n, const rn_tensor *W,
                     const rn_tensor *b)
{
    int out = (int)W->shape[0], in = (int)W->shape[1], parts = c->blas_lanes;
    const float *w = W->data;
    if (W->dtype != RN_DT_F32) {
        cvt_job j = {c->wbuf, W, W->numel};
        rn__pool_run(c->pool, 64, cvt_task, &j);
        w = c->wbuf;
    }
    int per = ((out + parts - 1) / parts + 63) & ~63;
    gemm_job j = {y, x, w, b && b->data ? b->data : NULL, n, out, in, per};
    rn__pool_run(c->pool, (out + per - 1) / per, gemm_task, &j);
}

/* ----------------------------------------------------------- elementwise */

#define NORM_LANES 8

/* Sum of x[k] (sq = 0) or of (x[k] - mu)^2 (sq = 1) over d values, in
 * double, in NORM_LANES interleaved partial sums added up in a fixed order:
 * the lanes are independent, so the loop runs in vector registers, and the
 * order depends on d alone, so a row's bits do not depend on its batch. */
static inline double norm_sum(const float *x, int d, double mu, int sq)
{
    double acc[NORM_LANES] = {0};
    int k = 0;
    for (; k + NORM_LANES <= d; k += NORM_LANES)
        for (int j = 0; j < NORM_LANES; j++) {
            double v = (double)x[k + j] - mu;
            acc[j] += sq ? v * v : v;
        }
    double t = 0.0;
    for (int j = 0; j < NORM_LANES; j++)
        t += acc[j];
    for (; k < d; k++) {
        double v = (double)x[k] - mu;
        t += sq ? v * v : v;
    }
    return t;
}

RN_CLONES void rn__norm(float *y, const float *x, int n, int d, rn_norm_kind kind, const float *w,
                        const float *b, float eps)
{
    for (int i = 0; i < n; i++) {
        const float *xi = x + (size_t)i * (size_t)d;
        float *yi = y + (size_t)i * (size_t)d;
        double mu = kind == RN_NORM_LAYER ? norm_sum(xi, d, 0.0, 0) / d : 0.0;
        double ss = norm_sum(xi, d, mu, 1);
        float r = rn_norm_factor(ss, d, eps);
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
        rn__norm(o + (size_t)i * (size_t)dv, o + (size_t)i * (size_t)dv, 1, dv, kind, w, NULL, eps);
}

void rn__act(float *x, size_t n, rn_act a)
{
    for (size_t i = 0; i < n; i++)
        x[i] = rn_act_apply((int)a, x[i]);
}

void rn__gate(float *y, const float *g, size_t n, rn_act a)
{
    for (size_t i = 0; i < n; i++)
        y[i] *= rn_act_apply((int)a, g[i]);
}

void rn__rope_table(float *cs, int n, int dk, const long long *pos, const float *freq)
{
    for (int i = 0; i < n; i++) {
        float *c = cs + (size_t)i * 2 * (size_t)dk, *s = c + dk;
        for (int f = 0; f < dk; f++) {
            double a = (double)rn_rope_angle(pos[i], freq[f]);
            c[f] = (float)cos(a);
            s[f] = (float)sin(a);
        }
    }
}

void rn__rope(float *x, int n, int heads, int dk, const float *cs, int interleaved)
{
    int half = dk / 2;
    for (int i = 0; i < n; i++) {
        const float *c = cs + (size_t)i * 2 * (size_t)dk, *s = c + dk;
        for (int h = 0; h < heads; h++) {
            float *v = x + ((size_t)i * (size_t)heads + (size_t)h) * (size_t)dk;
            if (interleaved) {
                for (int j = 0; j < dk; j += 2)
                    rn_rope_rotate(&v[j], &v[j + 1], c[j], s[j], c[j + 1], s[j + 1]);
            } else {
                for (int j = 0; j < half; j++)
                    rn_rope_rotate(&v[j], &v[j + half], c[j], s[j], c[j + half], s[j + half]);
            }
        }
    }
}
