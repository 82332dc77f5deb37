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
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "../rn_math.h"
#include "../util.h"
#include "ops.h"
#include "simd.h"


#define DOT_LANES 16
#define ROW_BLOCK 16 /* output rows per task: enough work to amortise a wake-up */
#define B_TILE 32

/* The helpers below take and return 64-byte vectors; they are always inlined
 * into the cloned kernels, so the psabi note about passing them in registers
 * without AVX-512 never applies to a real call. */
#pragma GCC diagnostic ignored "-Wpsabi"

/* 16-lane vectors through GCC's vector extensions: native AVX-512 in the v4
 * clone, two AVX2 registers in v3, four SSE registers in the baseline. */
typedef float v16f __attribute__((vector_size(64)));
typedef uint32_t v16u __attribute__((vector_size(64)));
typedef uint16_t v16h __attribute__((vector_size(32)));

static inline __attribute__((always_inline)) v16f load_f32(const float *p)
{
    v16f f;
    memcpy(&f, p, sizeof f);
    return f;
}

/* 16 weights of any weight dtype as fp32 (bf16 is the top half of an fp32) */
static inline __attribute__((always_inline)) v16f load_w(const void *row, int i, rn_dtype t)
{
    if (t == RN_DT_F32)
        return load_f32((const float *)row + i);
    if (t == RN_DT_BF16) {
        v16h h;
        memcpy(&h, (const uint16_t *)row + i, sizeof h);
        v16u u = __builtin_convertvector(h, v16u) << 16;
        v16f f;
        memcpy(&f, &u, sizeof f);
        return f;
    }
    v16f f;
    for (int k = 0; k < DOT_LANES; k++) /* f16 weights: the portable path converts in scalar */
        f[k] = rn__f16_to_f32(((const uint16_t *)row)[i + k]);
    return f;
}

static inline float load_w1(const void *row, int i, rn_dtype t)
{
    if (t == RN_DT_F32)
        return ((const float *)row)[i];
    uint16_t h = ((const uint16_t *)row)[i];
    return t == RN_DT_BF16 ? rn__bf16_to_f32(h) : rn__f16_to_f32(h);
}

/* Fixed-order reduction of the 16 lanes. */
static inline __attribute__((always_inline)) float hsum(v16f a)
{
    float l[DOT_LANES];
    memcpy(l, &a, sizeof l);
    for (int w = DOT_LANES / 2; w > 0; w /= 2)
        for (int j = 0; j < w; j++)
            l[j] += l[j + w];
    return l[0];
}

typedef struct {
    float *y;
    const float *x;
    int n, in, out;
    const rn_tensor *W;
    const float *bias;
    int rows_per_task;
} rows_job;

/* One (row, input) dot product, 16 lanes then a fixed tree. */
static inline __attribute__((always_inline)) float dot_1x1(const void *row, const float *x, int in,
                                                          rn_dtype t)
{
    int vec_end = in - in % DOT_LANES;
    v16f acc = {0};
    for (int i = 0; i < vec_end; i += DOT_LANES)
        acc += load_w(row, i, t) * load_f32(x + i);
    for (int i = vec_end; i < in; i++)
        acc[i - vec_end] += load_w1(row, i, t) * x[i];
    return hsum(acc);
}

/* 4 rows x nc (1 or 4, a constant after inlining) inputs at once: 16 accumulators, 8 loads per 16 FMAs.  Each
 * (row, input) pair sees exactly dot_1x1's operations in dot_1x1's order, so
 * results do not depend on how rows and inputs were grouped. */
static inline __attribute__((always_inline)) void dot_4xn(const rows_job *j, int r, int b,
                                                         size_t esz, const int nc)
{
    rn_dtype t = j->W->dtype;
    int in = j->in, vec_end = in - in % DOT_LANES;
    const char *w0 = (const char *)j->W->data + (size_t)r * (size_t)in * esz;
    const float *x0 = j->x + (size_t)b * (size_t)in;
    v16f acc[4][4];
    for (int a = 0; a < 4; a++)
        for (int c = 0; c < nc; c++)
            acc[a][c] = (v16f){0};
    for (int i = 0; i < vec_end; i += DOT_LANES) {
        v16f w[4];
        for (int a = 0; a < 4; a++)
            w[a] = load_w(w0 + (size_t)a * (size_t)in * esz, i, t);
        for (int c = 0; c < nc; c++) {
            v16f xv = load_f32(x0 + (size_t)c * (size_t)in + i);
            for (int a = 0; a < 4; a++)
                acc[a][c] += w[a] * xv;
        }
    }
    for (int a = 0; a < 4; a++)
        for (int c = 0; c < nc; c++) {
            const void *row = w0 + (size_t)a * (size_t)in * esz;
            const float *x = x0 + (size_t)c * (size_t)in;
            for (int i = vec_end; i < in; i++)
                acc[a][c][i - vec_end] += load_w1(row, i, t) * x[i];
            j->y[(size_t)(b + c) * (size_t)j->out + (size_t)(r + a)] =
                hsum(acc[a][c]) + (j->bias ? j->bias[r + a] : 0.0f);
        }
}

static inline __attribute__((always_inline)) void dot_row_input(const rows_job *j, int r, int b,
                                                               size_t esz)
{
    const void *row = (const char *)j->W->data + (size_t)r * (size_t)j->in * esz;
    j->y[(size_t)b * (size_t)j->out + (size_t)r] =
        dot_1x1(row, j->x + (size_t)b * (size_t)j->in, j->in, j->W->dtype) +
        (j->bias ? j->bias[r] : 0.0f);
}

/* Rows [r0, r1) of y for all n inputs. */
RN_CLONES static void rows_range(const rows_job *j, int r0, int r1)
{
    size_t esz = rn_dtype_size(j->W->dtype);
    int r = r0;
    for (; r + 4 <= r1; r += 4) {
        int b = 0;
        for (; b + 4 <= j->n; b += 4)
            dot_4xn(j, r, b, esz, 4);
        for (; b < j->n; b++)
            dot_4xn(j, r, b, esz, 1);
    }
    for (; r < r1; r++)
        for (int b = 0; b < j->n; b++)
            dot_row_input(j, r, b, esz);
}

#if defined(__x86_64__) && !defined(RN_NO_CLONES)
#include <immintrin.h>
#define RN_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl")))

/* 16 weights as fp32; `mask` selects the lanes of a tail (zeros elsewhere). */
static inline __attribute__((always_inline)) RN_AVX512 __m512 avx512_w(const void *row, int i,
                                                                       rn_dtype t, __mmask16 mask)
{
    if (t == RN_DT_F32)
        return _mm512_maskz_loadu_ps(mask, (const float *)row + i);
    __m256i h = _mm256_maskz_loadu_epi16(mask, (const uint16_t *)row + i);
    if (t == RN_DT_BF16)
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    return _mm512_cvtph_ps(h);
}

/* nr rows x nc inputs (constants after inlining).  Every (row, input) pair
 * runs the same FMA sequence, masked tail and reduction whatever nr and nc
 * are, so grouping never changes a result. */
static inline __attribute__((always_inline)) RN_AVX512 void
avx512_tile(const rows_job *j, int r, int b, size_t esz, rn_dtype t, const int nr, const int nc)
{
    int in = j->in, vec_end = in - in % DOT_LANES;
    const char *w0 = (const char *)j->W->data + (size_t)r * (size_t)in * esz;
    const float *x0 = j->x + (size_t)b * (size_t)in;
    __m512 acc[4][4];
    for (int a = 0; a < nr; a++)
        for (int c = 0; c < nc; c++)
            acc[a][c] = _mm512_setzero_ps();
    /* Rows are short streams (one row of a 2048-wide bf16 matrix is a 4 KiB
     * page), too short for the hardware prefetcher to ramp up: fetch the next
     * tile's rows in step with this one. */
    const char *next = w0 + (size_t)nr * (size_t)in * esz;
    for (int i = 0; i < vec_end; i += DOT_LANES) {
        __m512 w[4];
        for (int a = 0; a < nr; a++) {
            _mm_prefetch(next + ((size_t)a * (size_t)in + (size_t)i) * esz, _MM_HINT_T0);
            w[a] = avx512_w(w0 + (size_t)a * (size_t)in * esz, i, t, 0xffff);
        }
        for (int c = 0; c < nc; c++) {
            __m512 xv = _mm512_loadu_ps(x0 + (size_t)c * (size_t)in + i);
            for (int a = 0; a < nr; a++)
                acc[a][c] = _mm512_fmadd_ps(w[a], xv, acc[a][c]);
        }
    }
    if (vec_end < in) {
        __mmask16 m = (__mmask16)((1u << (in - vec_end)) - 1u);
        for (int a = 0; a < nr; a++) {
            __m512 w = avx512_w(w0 + (size_t)a * (size_t)in * esz, vec_end, t, m);
            for (int c = 0; c < nc; c++)
                acc[a][c] = _mm512_fmadd_ps(
                    w, _mm512_maskz_loadu_ps(m, x0 + (size_t)c * (size_t)in + vec_end), acc[a][c]);
        }
    }
    for (int a = 0; a < nr; a++)
        for (int c = 0; c < nc; c++)
            j->y[(size_t)(b + c) * (size_t)j->out + (size_t)(r + a)] =
                _mm512_reduce_add_ps(acc[a][c]) + (j->bias ? j->bias[r + a] : 0.0f);
}

RN_AVX512 static void rows_range_avx512_t(const rows_job *j, int r0, int r1, rn_dtype t)
{
    size_t esz = rn_dtype_size(t);
    int r = r0;
    for (; r + 4 <= r1; r += 4) {
        int b = 0;
        for (; b + 4 <= j->n; b += 4)
            avx512_tile(j, r, b, esz, t, 4, 4);
        for (; b < j->n; b++)
            avx512_tile(j, r, b, esz, t, 4, 1);
    }
    for (; r < r1; r++)
        for (int b = 0; b < j->n; b++)
            avx512_tile(j, r, b, esz, t, 1, 1);
}

/* One instantiation per weight dtype so the dtype test leaves the hot loop. */
RN_AVX512 static void rows_range_avx512(const rows_job *j, int r0, int r1)
{
    switch (j->W->dtype) {
    case RN_DT_BF16:
        rows_range_avx512_t(j, r0, r1, RN_DT_BF16);
        break;
    case RN_DT_F16:
        rows_range_avx512_t(j, r0, r1, RN_DT_F16);
        break;
    default:
        rows_range_avx512_t(j, r0, r1, RN_DT_F32);
        break;
    }
}

static int have_avx512(void)
{
    /* RETNET_NO_AVX512=1 forces the portable kernels (tests run them so the
     * path machines without AVX-512 take is not left untested). */
    static int cached = -1;
    if (cached < 0) {
        const char *off = getenv("RETNET_NO_AVX512");
        cached = !(off && off[0] == '1') && __builtin_cpu_supports("avx512f") &&
                 __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
    }
    return cached;
}
#else
static int have_avx512(void)
{
    return 0;
}
static void rows_range_avx512(const rows_job *j, int r0, int r1)
{
    rows_range(j, r0, r1);
}
#endif

static void rows_run(const rows_job *j, int r0, int r1)
{
    if (have_avx512())
        rows_range_avx512(j, r0, r1);
    else
        rows_range(j, r0, r1);
}

/* Several products of the same input, run as one pool job: the task list is
 * each matrix's row ranges in turn. */
typedef struct {
    rows_job m[RN_LINEAR_MAX];
    int first_task[RN_LINEAR_MAX + 1];
    int count;
} multi_job;

static void multi_task(void *ctx, int t)
{
    const multi_job *mj = ctx;
    int k = 0;
    while (t >= mj->first_task[k + 1])
        k++;
    const rows_job *j = &mj->m[k];
    int r0 = (t - mj->first_task[k]) * j->rows_per_task;
    int r1 = r0 + j->rows_per_task < j->out ? r0 + j->rows_per_task : j->out;
    rows_run(j, r0, r1);
}

void rn__linear_rows_multi(rn_cpu_ops_ctx *c, const rn_linear_out *outs, int count, const float *x,
                           int n)
{
    multi_job mj = {.count = count};
    /* Few, long, contiguous row ranges: long streams for the prefetchers,
     * 4 per thread per matrix to even out the finishing times. */
    int per_matrix = 4 * rn__pool_threads(c->pool);
    for (int k = 0; k < count; k++) {
        const rn_tensor *W = outs[k].W, *b = outs[k].b;
        rows_job *j = &mj.m[k];
        *j = (rows_job){outs[k].y, x, n, (int)W->shape[1], (int)W->shape[0], W,
                        b ? b->data : NULL, 0};
        int per = (j->out + per_matrix - 1) / per_matrix;
        j->rows_per_task = per < ROW_BLOCK ? ROW_BLOCK : (per + 3) & ~3;
        mj.first_task[k + 1] =
            mj.first_task[k] + (j->out + j->rows_per_task - 1) / j->rows_per_task;
    }
    rn__pool_run(c->pool, mj.first_task[count], multi_task, &mj);
}

void rn__linear_rows(rn_cpu_ops_ctx *c, float *y, const float *x, int n, const rn_tensor *W,
                     const rn_tensor *b)
{
    rn_linear_out o = {y, W, b};
    rn__linear_rows_multi(c, &o, 1, x, n);
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
    int64_t per = ((j->n + 63) / 64 + 15) & ~(int64_t)15, s = (int64_t)i * per, e = s + per < j->n ? s + per : j->n;
    if (s < e)
        cvt_row(j->dst + s, (const char *)j->W->data + s * 2, j->W->dtype, e - s);
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
