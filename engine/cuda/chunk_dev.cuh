/* The chunkwise helpers of prefill: the decay table and masks, the state's
 * decay over a chunk, and torchscale's running normaliser.
 *
 * Included by kernels.cu after the CUDA headers, rn_math.h, the
 * dependent-launch helpers and norm_dev.cuh (load4, store4), and by the
 * unit tests' emulation of CUDA (tests/unit/cuda_emu.h, RN_CUDA_EMU), which
 * runs each on the CPU in every build against the CPU backend's arithmetic
 * (tests/unit/kernels_emu.cc). */
#ifndef RN_CUDA_CHUNK_DEV_CUH
#define RN_CUDA_CHUNK_DEV_CUH

#include <stddef.h>

#include "norm_dev.cuh"

static __global__ void decay_table_kernel(float *pw, const double *log_gamma, int H, int C)
{
    pdl_enter();
    size_t total = (size_t)H * (size_t)(C + 1);
    for (size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x; t < total;
         t += (size_t)gridDim.x * blockDim.x) {
        int h = (int)(t / (size_t)(C + 1)), d = (int)(t % (size_t)(C + 1));
        pw[t] = rn_decay_pow(log_gamma[h], (double)d);
    }
}

/* Block b C + i: row i of matrix b (head b % H); a 1-D grid, since both
 * the matrices (pieces x heads) and the rows may pass a y dimension's
 * 65,535; no index divisions per element. */
static __global__ void decay_mask_kernel(float *A, const float *pw, int H, int C)
{
    pdl_enter();
    int i = (int)(blockIdx.x % (unsigned)C), b = (int)(blockIdx.x / (unsigned)C);
    const float *p = pw + (size_t)(b % H) * (size_t)(C + 1);
    float *Ar = A + ((size_t)b * (size_t)C + (size_t)i) * (size_t)C;
    for (int j = threadIdx.x; j < C; j += blockDim.x)
        Ar[j] *= rn_decay_mask(p, i, j);
}

/* decay_mask_kernel with 16-byte loads and stores (C a multiple of 4, A on
 * 16 bytes): the same product per value. */
static __global__ void decay_mask4_kernel(float *A, const float *pw, int H, int C)
{
    pdl_enter();
    int i = (int)(blockIdx.x % (unsigned)C), b = (int)(blockIdx.x / (unsigned)C);
    const float *p = pw + (size_t)(b % H) * (size_t)(C + 1);
    float *Ar = A + ((size_t)b * (size_t)C + (size_t)i) * (size_t)C;
    for (int j = 4 * (int)threadIdx.x; j < C; j += 4 * (int)blockDim.x) {
        float v[4];
        load4(Ar + j, v);
#pragma unroll
        for (int q = 0; q < 4; q++)
            v[q] *= rn_decay_mask(p, i, j + q);
        store4(Ar, rk_half(), (size_t)j, v);
    }
}

static __global__ void decay_state_kernel(float *Sl, const float *pw, int C, size_t hkv,
                                          size_t per_head)
{
    pdl_enter();
    for (size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x; t < hkv;
         t += (size_t)gridDim.x * blockDim.x)
        Sl[t] *= pw[(t / per_head) * (size_t)(C + 1) + (size_t)C];
}

/* One block per head: the running sums are a sequential recurrence (in
 * double, as on the CPU), computed by thread 0; every thread then scales. */
static __global__ void ts_chunk_kernel(float *o, float *s_layer, const float *pw, float *sums,
                                       int H, int C, int dv)
{
    pdl_enter();
    int h = (int)blockIdx.x;
    const float *p = pw + (size_t)h * (size_t)(C + 1);
    float *sh = sums + (size_t)h * (size_t)C;
    if (threadIdx.x == 0) {
        double s0 = s_layer[h], cum = 0.0;
        for (int i = 0; i < C; i++) {
            cum += p[i];
            sh[i] = (float)(s0 * p[i + 1] + cum);
        }
        s_layer[h] = sh[C - 1];
    }
    __syncthreads();
    size_t total = (size_t)C * (size_t)dv;
    for (size_t t = threadIdx.x; t < total; t += blockDim.x) {
        int i = (int)(t / (size_t)dv), e = (int)(t % (size_t)dv);
        o[((size_t)i * (size_t)H + (size_t)h) * (size_t)dv + (size_t)e] *= 1.0f / sqrtf(sh[i]);
    }
}

#endif
