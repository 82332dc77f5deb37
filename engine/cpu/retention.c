/*
 * retention.c -- retention for one head on the CPU: recurrent step,
 * chunkwise (GEMM-shaped, any chunk length, continuing a state) and parallel.
 *
 * Chunk of length C at absolute start p0, decay g, state S0, sum s0:
 *   o_i = [ sum_{j<=i} g^(i-j) (q_i.k_j) v_j + g^(i+1) q_i S0 ] /
 * sqrt(s_{p0+i}) S'  = g^C S0 + sum_j g^(C-1-j) k_j v_j^T s_{p0+i} = s0 g^(i+1)
 * + sum_{t<=i} g^t    (torchscale only) which equals C recurrent steps exactly
 * (docs/architecture.md).
 */
#include <math.h>
#include <string.h>

#include <cblas.h>

#include "../rn_math.h"
#include "retention.h"
#include "simd.h"

#pragma GCC diagnostic ignored "-Wpsabi" /* 64-byte vectors stay inside inlined code */

/* Rows of the state ahead of the one being updated whose lines are
 * prefetched: each state is read and written once per token from memory,
 * and the hardware prefetchers alone leave the step at about half the
 * weight stream's bandwidth. */
#define STEP_PREFETCH_ROWS 2

typedef float v16f __attribute__((vector_size(64)));

/* row = g row + kd v ; o += qd row, over one state row.  Written with
 * vectors: -O2 leaves a loop of unknown length scalar. */
static inline __attribute__((always_inline)) void step_row(float *restrict row, float *restrict o,
                                                           const float *restrict v, size_t dv,
                                                           float g, float kd, float qd)
{
    size_t e = 0;
    for (; e + 16 <= dv; e += 16) {
        v16f r, vv, oo;
        memcpy(&r, row + e, sizeof r);
        memcpy(&vv, v + e, sizeof vv);
        memcpy(&oo, o + e, sizeof oo);
        r = g * r + kd * vv;
        oo += qd * r;
        memcpy(row + e, &r, sizeof r);
        memcpy(o + e, &oo, sizeof oo);
    }
    for (; e < dv; e++) {
        row[e] = g * row[e] + kd * v[e];
        o[e] += qd * row[e];
    }
}

RN_CLONES void rn__retention_step(const rn_head_io *h)
{
    float g = rn_decay_pow(h->log_gamma, 1.0);
    size_t dv = (size_t)h->dv;
    memset(h->o, 0, sizeof(float) * dv);
    for (int d = 0; d < h->dk; d++) {
        float *row = h->S + (size_t)d * dv;
        if (d + STEP_PREFETCH_ROWS < h->dk)
            for (size_t e = 0; e < dv; e += 16)
                __builtin_prefetch(row + STEP_PREFETCH_ROWS * dv + e, 1);
        step_row(row, h->o, h->v, dv, g, h->k[d], h->q[d]);
    }
    if (h->s) {
        float r = rn_ts_norm_step(h->s, g);
        for (size_t e = 0; e < dv; e++)
            h->o[e] *= r;
    }
}

long rn__retention_chunk_scratch(int c, int dk)
{
    return (long)c * c + 2L * c * dk + 2L * (c + 2);
}

/* pw[d] = g^d for d in [0, n] */
static void decay_table(float *pw, int n, double log_gamma)
{
    for (int d = 0; d <= n; d++)
        pw[d] = rn_decay_pow(log_gamma, (double)d);
}

/* A (c x c) = q k^T masked by g^(i-j) on and below the diagonal. */
static void masked_scores(const rn_head_io *h, int c, float *A, const float *pw)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, c, c, h->dk, 1.0f, h->q, h->qk_stride,
                h->k, h->qk_stride, 0.0f, A, c);
    for (int i = 0; i < c; i++) {
        float *r = A + (size_t)i * (size_t)c;
        for (int j = 0; j < c; j++)
            r[j] *= rn_decay_mask(pw, i, j);
    }
}

/* S = g^c S + sum_j g^(c-1-j) k_j v_j^T ; kd is scratch (c x dk). */
static void update_state(const rn_head_io *h, int c, const float *pw, float *kd)
{
    for (int j = 0; j < c; j++)
        for (int d = 0; d < h->dk; d++)
            kd[(size_t)j * (size_t)h->dk + (size_t)d] =
                h->k[(size_t)j * (size_t)h->qk_stride + (size_t)d] * pw[c - 1 - j];
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, h->dk, h->dv, c, 1.0f, kd, h->dk, h->v,
                h->v_stride, pw[c], h->S, h->dv);
}

void rn__retention_chunk(const rn_head_io *h, int c, float *scratch)
{
    float *A = scratch, *qd = A + (size_t)c * (size_t)c, *kd = qd + (size_t)c * (size_t)h->dk;
    float *pw = kd + (size_t)c * (size_t)h->dk;
    decay_table(pw, c, h->log_gamma);
    masked_scores(h, c, A, pw);
    /* o = A v  +  diag(g^(i+1)) q S0 */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, c, h->dv, c, 1.0f, A, c, h->v,
                h->v_stride, 0.0f, h->o, h->o_stride);
    for (int i = 0; i < c; i++)
        for (int d = 0; d < h->dk; d++)
            qd[(size_t)i * (size_t)h->dk + (size_t)d] =
                h->q[(size_t)i * (size_t)h->qk_stride + (size_t)d] * pw[i + 1];
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, c, h->dv, h->dk, 1.0f, qd, h->dk, h->S,
                h->dv, 1.0f, h->o, h->o_stride);
    if (h->s) {
        double s0 = *h->s, cum = 0.0;
        for (int i = 0; i < c; i++) {
            cum += pw[i];
            float si = (float)(s0 * pw[i + 1] + cum);
            float r = 1.0f / sqrtf(si);
            for (int e = 0; e < h->dv; e++)
                h->o[(size_t)i * (size_t)h->o_stride + (size_t)e] *= r;
            if (i == c - 1)
                *h->s = si;
        }
    }
    update_state(h, c, pw, kd);
}

long rn__retention_parallel_scratch(int t, int dk)
{
    return rn__retention_chunk_scratch(t, dk);
}

void rn__retention_parallel(const rn_head_io *h, int t, int ts_clamp, float *scratch)
{
    float *A = scratch, *kd = A + (size_t)t * (size_t)t + (size_t)t * (size_t)h->dk;
    float *pw = kd + (size_t)t * (size_t)h->dk;
    decay_table(pw, t, h->log_gamma);
    masked_scores(h, t, A, pw);
    if (h->s) {
        /* torchscale: mask rows / sqrt(sum_{t<=n} g^t), then optionally the clamp
     */
        double cum = 0.0;
        for (int i = 0; i < t; i++) {
            float *r = A + (size_t)i * (size_t)t;
            cum += pw[i];
            float inv = 1.0f / sqrtf((float)cum);
            double rs = 0.0;
            for (int j = 0; j <= i; j++) {
                r[j] *= inv;
                rs += r[j];
            }
            float cl = ts_clamp ? fmaxf((float)fabs(rs), 1.0f) : 1.0f;
            for (int j = 0; j <= i && cl != 1.0f; j++)
                r[j] /= cl;
        }
        *h->s = (float)cum;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, t, h->dv, t, 1.0f, A, t, h->v,
                h->v_stride, 0.0f, h->o, h->o_stride);
    memset(h->S, 0, sizeof(float) * (size_t)h->dk * (size_t)h->dv);
    update_state(h, t, pw, kd);
}
