/* rk_gemv_set: the projections one weight-streaming launch computes
 * (kernels.cuh's rk_gemv_multi, rk_gemv_tc; gemv_dev.cuh).  Its own header,
 * free of the CUDA runtime, like rk_half.h, so the device code the CPU
 * emulation runs can take it. */
#ifndef RN_CUDA_RK_GEMV_H
#define RN_CUDA_RK_GEMV_H

#include <stddef.h>
#include <stdint.h>

#include "rk_half.h"

/* Up to RK_GEMV_JOBS matrices of one dtype that read the same input rows
 * (q, k, v, g; up and gate), streamed by one launch.  A job's kind and
 * flags fold the step that follows a projection into its store, with the
 * same float operations as the separate kernel (gemv_dev.cuh, gemv_store):
 *   RK_JOB_PLAIN  y = W x + bias, times scale when scale is neither 0 nor 1
 *                 (rk_qk_prepare's q or k scaling without rotary);
 *   RK_JOB_ROPE   the same, then rotated as rk_qk_prepare does, at positions
 *                 set.pos[row] with set.freq, heads of set.dk features (even);
 *   RK_JOB_GLU    y = (W x + bias) * act(W2 x + bias2) with act = set.act
 *                 (rk_glu over the up and gate projections);
 *   resid != 0    (PLAIN) y = set.alpha y + result: the projection added to
 *                 the residual stream y in place (rk_add_norm's add). */
#define RK_GEMV_JOBS 4
enum { RK_JOB_PLAIN = 0, RK_JOB_ROPE, RK_JOB_GLU };
struct rk_gemv_job {
    const void *W;     /* out x in */
    const float *bias; /* or NULL */
    float *y;          /* n x out */
    int out;
    int kind;       /* RK_JOB_* */
    const void *W2; /* GLU: the gate matrix (out x in) and its bias */
    const float *bias2;
    float scale; /* 0: none */
    int resid;
    rk_half h; /* GLU: the result rounded into h instead of y (rk_half) */
};
struct rk_gemv_set {
    rk_gemv_job job[RK_GEMV_JOBS];
    int count;
    const int64_t *pos; /* ROPE: position of each input row */
    const float *freq;
    int dk, interleaved;
    int act;     /* GLU */
    float alpha; /* resid */
};

/* The norm gemv_norm_kernel forms of its input rows: with group 0 a
 * pre-norm of whole rows (rk_norm's operands: LayerNorm when layer_kind,
 * else RMSNorm; w, b may be NULL); with group > 0 the retention's group
 * norm (rk_norm_parts' operands): each row's groups of `group` values
 * normalised on their own, w and b indexed within the group, from the sum
 * of `parts` partial rows part_stride floats apart (0 or 1: the rows
 * themselves), times act(gate) where gate is set (n x in, like the rows). */
struct rk_gemv_norm {
    const float *w, *b;
    float eps;
    int layer_kind;
    int group;
    const float *gate;
    int act;
    int parts;
    size_t part_stride;
};

#endif
