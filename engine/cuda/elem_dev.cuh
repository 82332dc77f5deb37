/* The elementwise kernels: embedding, scaling, the bf16 state copies,
 * activation and GLU, the residual update and bias.
 *
 * Included by kernels.cu after the CUDA headers, rn_math.h, the
 * dependent-launch helpers and norm_dev.cuh (store_out, load4, store4), and
 * by the unit tests' emulation of CUDA (tests/unit/cuda_emu.h,
 * RN_CUDA_EMU), which runs each on the CPU in every build against the
 * host's arithmetic (tests/unit/kernels_emu.cc). */
#ifndef RN_CUDA_ELEM_DEV_CUH
#define RN_CUDA_ELEM_DEV_CUH

#include <stddef.h>
#include <stdint.h>

#include "../model.h" /* RN_DT_BF16, RN_DT_F16 */
#include "norm_dev.cuh"
#include "rk_half.h"

__device__ static inline float load_as_f32(const void *p, size_t i, int t)
{
    if (t == RN_DT_BF16)
        return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
    if (t == RN_DT_F16)
        return __half2float(((const __half *)p)[i]);
    return ((const float *)p)[i];
}

/* One block per row. */
static __global__ void embed_kernel(float *x, const void *E, int t, const int32_t *tok, int D,
                                    float scale)
{
    size_t row = blockIdx.x;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float v = load_as_f32(E, (size_t)tok[row] * (size_t)D + (size_t)d, t);
        x[row * (size_t)D + (size_t)d] = scale != 1.0f ? v * scale : v;
    }
}

static __global__ void scale_kernel(float *x, size_t n, float scale)
{
    pdl_enter();
    for (size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x; t < n;
         t += (size_t)gridDim.x * blockDim.x)
        x[t] *= scale;
}

static __global__ void state_expand_kernel(float *dst, const __nv_bfloat16 *src, size_t n)
{
    pdl_enter();
    for (size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x; t < n;
         t += (size_t)gridDim.x * blockDim.x)
        dst[t] = __bfloat162float(src[t]);
}

static __global__ void state_compress_kernel(__nv_bfloat16 *dst, const float *src, size_t n)
{
    pdl_enter();
    for (size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x; t < n;
         t += (size_t)gridDim.x * blockDim.x)
        dst[t] = __float2bfloat16_rn(src[t]);
}

static __global__ void act_kernel(float *x, size_t n, int act, rk_half h)
{
    pdl_enter();
    for (size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x; t < n;
         t += (size_t)gridDim.x * blockDim.x)
        store_out(x, h, t, rn_act_apply(act, x[t]));
}

static __global__ void glu_kernel(float *up, const float *gate, size_t n, int act, rk_half h)
{
    pdl_enter();
    for (size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x; t < n;
         t += (size_t)gridDim.x * blockDim.x)
        store_out(up, h, t, up[t] * rn_act_apply(act, gate[t]));
}

/* glu_kernel four values a thread (16-byte loads, store4), for n a multiple
 * of 4 with up and gate on 16 bytes and h.p on 8: each value's same
 * product, rounded the same way. */
static __global__ void glu4_kernel(float *up, const float *gate, size_t n4, int act, rk_half h)
{
    pdl_enter();
    for (size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x; t < n4;
         t += (size_t)gridDim.x * blockDim.x) {
        float u[4], g[4];
        load4(up + 4 * t, u);
        load4(gate + 4 * t, g);
#pragma unroll
        for (int q = 0; q < 4; q++)
            u[q] = u[q] * rn_act_apply(act, g[q]);
        store4(up, h, 4 * t, u);
    }
}

/* The 16-bit value i of p (bf16 or fp16, t) as fp32. */
__device__ static inline float half_at(const void *p, int t, size_t i)
{
    return t == RN_DT_BF16 ? __bfloat162float(((const __nv_bfloat16 *)p)[i])
                           : __half2float(((const __half *)p)[i]);
}

/* rk_glu_halves, four values a thread (n4 groups) while n is a multiple of
 * 4 and the buffers are 8-byte aligned, else one (n4 = n, one = 1). */
static __global__ void glu_halves_kernel(rk_half h, const void *up, const void *gate, size_t n,
                                         int act, int one)
{
    pdl_enter();
    int w = one ? 1 : 4;
    size_t groups = n / (size_t)w;
    for (size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x; t < groups;
         t += (size_t)gridDim.x * blockDim.x) {
        float u[4];
        for (int q = 0; q < w; q++) {
            size_t i = t * (size_t)w + (size_t)q;
            u[q] = half_at(up, h.t, i) * rn_act_apply(act, half_at(gate, h.t, i));
        }
        if (one)
            store_out(NULL, h, t, u[0]);
        else
            store4(NULL, h, 4 * t, u);
    }
}

static __global__ void residual_kernel(float *x, const float *y, size_t n, float alpha)
{
    pdl_enter();
    for (size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x; t < n;
         t += (size_t)gridDim.x * blockDim.x)
        x[t] = __fmaf_rn(x[t], alpha, y[t]);
}

static __global__ void add_bias_kernel(float *y, const float *b, int rows, int cols)
{
    pdl_enter();
    size_t total = (size_t)rows * (size_t)cols;
    for (size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x; t < total;
         t += (size_t)gridDim.x * blockDim.x)
        y[t] += b[t % (size_t)cols];
}

#endif
