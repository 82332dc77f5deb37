/* Weights pulled into L2 ahead of the GEMV that reads them
 * (RETNET_CUDA_L2_PREFETCH): a kernel of the decode chain, as it starts,
 * asks the copy engine of its SM for the first bytes of the next weight
 * matrices (cp.async.bulk.prefetch.L2, sm_90 and later; elsewhere
 * nothing), so memory works while the chain waits on a norm, the
 * recurrent step or a GEMV's last blocks.  A hint: nothing waits on it,
 * nothing reads it back, no result changes.
 *
 * Included by kernels.cu and norm_dev.cuh (so also by the CPU emulation,
 * tests/unit/cuda_emu.h, where it does nothing). */
#ifndef RN_CUDA_PREFETCH_DEV_CUH
#define RN_CUDA_PREFETCH_DEV_CUH

#include "rk_pf.h"

/* bytes one prefetch instruction asks for: a lane's requests spread over
 * L2's slices instead of one long run */
#define RK_PF_CHUNK (64u << 10)

/* The ranges of pf asked for by the first 32 threads of block (0, 0, 0)
 * (fewer in a smaller block), whatever the block's shape; every other
 * thread returns at once. */
__device__ static inline void pf_issue(const rk_pf &pf)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    unsigned t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    unsigned size = blockDim.x * blockDim.y * blockDim.z, k = size < 32 ? size : 32;
    if (blockIdx.x | blockIdx.y | blockIdx.z || t >= k)
        return;
    for (int r = 0; r < RK_PF_RANGES; r++)
        for (unsigned off = t * RK_PF_CHUNK; off < pf.bytes[r]; off += k * RK_PF_CHUNK) {
            unsigned n = pf.bytes[r] - off < RK_PF_CHUNK ? pf.bytes[r] - off : RK_PF_CHUNK;
            asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(
                             (const char *)pf.p[r] + off),
                         "r"(n)
                         : "memory");
        }
#else
    (void)pf;
#endif
}

#endif
