/* Greedy decoding's pick on the device: argmax_kernel, one block a row,
 * the same pick as rn_argmax_row (rn_math.h) on the host.
 *
 * Included by kernels.cu after the CUDA headers, rn_math.h and the
 * dependent-launch helpers, and by the unit tests' emulation of CUDA
 * (tests/unit/cuda_emu.h, RN_CUDA_EMU), which runs it on the CPU in every
 * build against rn_argmax_row (tests/unit/kernels_emu.cc). */
#ifndef RN_CUDA_ARGMAX_DEV_CUH
#define RN_CUDA_ARGMAX_DEV_CUH

#include <math.h>
#include <stdint.h>

#define ARGMAX_THREADS 1024
#define ARGMAX_LOADS 8

/* One block per row: each thread keeps the best (value, index) of its
 * stride with NaN read as -inf, ARGMAX_LOADS loads in flight at a time (the
 * row was just written and sits in L2: one load at a time would pay its
 * latency ~30 times), then the block reduces in shared memory with
 * rn_argmax_beats, so the pick equals rn_argmax_row's on the host. */
static __global__ void __launch_bounds__(ARGMAX_THREADS)
    argmax_kernel(int32_t *out, const float *logits, int V)
{
    pdl_enter();
    __shared__ float best_v[ARGMAX_THREADS];
    __shared__ int best_i[ARGMAX_THREADS];
    const float *row = logits + (size_t)blockIdx.x * (size_t)V;
    float bv = -INFINITY;
    int bi = 0x7fffffff, T = (int)blockDim.x;
    for (int i0 = (int)threadIdx.x; i0 < V; i0 += T * ARGMAX_LOADS) {
        float v[ARGMAX_LOADS];
#pragma unroll
        for (int u = 0; u < ARGMAX_LOADS; u++)
            v[u] = i0 + u * T < V ? row[i0 + u * T] : -INFINITY;
#pragma unroll
        for (int u = 0; u < ARGMAX_LOADS; u++) {
            int i = i0 + u * T;
            float t = isnan(v[u]) ? -INFINITY : v[u];
            if (i < V && rn_argmax_beats(t, i, bv, bi)) {
                bv = t;
                bi = i;
            }
        }
    }
    best_v[threadIdx.x] = bv;
    best_i[threadIdx.x] = bi;
    __syncthreads();
    for (int half = T / 2; half > 0; half /= 2) {
        if ((int)threadIdx.x < half &&
            rn_argmax_beats(best_v[threadIdx.x + half], best_i[threadIdx.x + half],
                            best_v[threadIdx.x], best_i[threadIdx.x])) {
            best_v[threadIdx.x] = best_v[threadIdx.x + half];
            best_i[threadIdx.x] = best_i[threadIdx.x + half];
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) /* nothing above -inf: index 0, as on the host */
        out[blockIdx.x] = best_v[0] == -INFINITY ? 0 : best_i[0];
}

#endif
