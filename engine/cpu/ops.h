/*
 * ops.h -- CPU building blocks: linear layers, norms, activations, rotary.
 * Called only from the CPU backend's thread (kernels may fan out to the pool).
 */
#ifndef RN_CPU_OPS_H
#define RN_CPU_OPS_H

#include <stddef.h>

#include "../model.h"
#include "pool.h"

typedef struct rn_cpu_ops_ctx {
    rn_pool *pool;
    float *wbuf;     /* fp32 scratch for converting one f16/bf16 matrix before sgemm */
    size_t wbuf_len; /* floats */
    int blas_lanes;  /* threads that may call sgemm at once: the pool's, or 1
                         with an OpenMP OpenBLAS (not safe to call concurrently) */
} rn_cpu_ops_ctx;

/* y (n x out) = x (n x in) W^T + b through sgemm, W (out x in) of any
 * weight dtype (f16/bf16 expanded into wbuf first).  For prefill; decode uses
 * the packed kernels (packed.h). */
void rn__linear_gemm(rn_cpu_ops_ctx *c, float *y, const float *x, int n, const rn_tensor *W,
                     const rn_tensor *b);

/* Row-wise norm of x (n x d) into y: RMS (w) or LayerNorm (w, b). */
void rn__norm(float *y, const float *x, int n, int d, rn_norm_kind kind, const float *w,
              const float *b, float eps);
/* In place: group norm over each head's dv values (n rows of H*dv), optional
 * shared (dv) weight. */
void rn__group_norm(float *o, int n, int heads, int dv, rn_norm_kind kind, float eps,
                    const float *w);
void rn__act(float *x, size_t n, rn_act a);
/* y *= act(g), elementwise */
void rn__gate(float *y, const float *g, size_t n, rn_act a);
/* cs (n x 2dk): for row i, the cosines then the sines of angle(pos_i,
 * freq[f]) for the dk features, shared by q and k and by every layer. */
void rn__rope_table(float *cs, int n, int dk, const long long *pos, const float *freq);
/* Rotates n rows of H heads of dk features in place by row i's angles in cs
 * (rn__rope_table). */
void rn__rope(float *x, int n, int heads, int dk, const float *cs, int interleaved);

#endif
