/* The inter-chunk scan of chunkwise prefill: scan_pieces_kernel.
 *
 * Included by kernels.cu after the CUDA headers and the dependent-launch
 * helpers, and by the unit tests' emulation of CUDA (tests/unit/cuda_emu.h,
 * RN_CUDA_EMU), which runs it on the CPU in every build against the same
 * recurrence on the host (tests/unit/kernels_emu.cc). */
#ifndef RN_CUDA_SCAN_DEV_CUH
#define RN_CUDA_SCAN_DEV_CUH

#include <stddef.h>

/* Pieces whose U values a thread loads before storing any: the loads of a
 * group are all in flight at once, instead of one load's latency per piece. */
#define SCAN_GROUP 8

/* Element e of the layer state walks the pieces in order: U[p] (piece p's
 * own k^T v) is swapped for the state entering piece p -- or, with Uh, that
 * state goes rounded to bf16 into Uh[p] (the fused read-out's operand) and
 * U keeps the own parts -- and the state moves on to g^P S + U[p].  Sl, U
 * and Uh do not overlap (__restrict__), so a group's loads may go out
 * ahead of the previous pieces' stores. */
static __global__ void scan_pieces_kernel(float *__restrict__ Sl, float *__restrict__ U,
                                          __nv_bfloat16 *__restrict__ Uh, const float *pw, int P,
                                          int pieces, size_t hkv, size_t per_head)
{
    pdl_enter();
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < hkv;
         e += (size_t)gridDim.x * blockDim.x) {
        float g = pw[(e / per_head) * (size_t)(P + 1) + (size_t)P], s = Sl[e];
        for (int p0 = 0; p0 < pieces; p0 += SCAN_GROUP) {
            float own[SCAN_GROUP];
#pragma unroll
            for (int j = 0; j < SCAN_GROUP; j++)
                if (p0 + j < pieces)
                    own[j] = U[(size_t)(p0 + j) * hkv + e];
#pragma unroll
            for (int j = 0; j < SCAN_GROUP; j++)
                if (p0 + j < pieces) {
                    if (Uh)
                        Uh[(size_t)(p0 + j) * hkv + e] = __float2bfloat16_rn(s);
                    else
                        U[(size_t)(p0 + j) * hkv + e] = s;
                    s = g * s + own[j];
                }
        }
        Sl[e] = s;
    }
}

#endif
