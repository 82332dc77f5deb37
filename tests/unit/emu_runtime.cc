/* Kernels that exercise the CUDA emulation's runtime itself (cuda_emu.cc):
 * its barriers, shuffles, thread and block indices and its refusal of
 * barriers no thread can fill; check_emu_runtime.c runs them.  Every other
 * emulated suite leans on these, so they are checked on their own. */
#include <stdlib.h>
#include <string.h>

#include "cuda_emu.h"

/* Each thread writes its own index to shared memory, waits at the block's
 * barrier and reads its neighbour's: a barrier that let a thread through
 * early would have it read the NaN the launch filled in.  The odd warps
 * pass three warp barriers first, so the block's barrier sees its threads
 * arrive over several turns and its first ones are let run again before
 * it fills. */
__global__ static void emu_rt_neighbour(unsigned *out)
{
    unsigned *s = (unsigned *)rn_emu_dynamic_smem();
    unsigned n = blockDim.x * blockDim.y, t = threadIdx.x + blockDim.x * threadIdx.y;
    if (t / 32 % 2)
        for (int i = 0; i < 3; i++)
            __syncwarp();
    s[t] = t + 1000u * blockIdx.x;
    __syncthreads();
    out[blockIdx.x * n + t] = s[(t + 1) % n];
    __syncthreads();
    s[t] = 0; /* and the barrier after: the neighbour has read it */
}

/* A warp's sum by butterfly shuffles, and the warp's vote on odd lanes. */
__global__ static void emu_rt_warp(float *sums, unsigned *votes)
{
    float v = (float)(threadIdx.x + 1);
    for (int o = 16; o > 0; o /= 2)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    sums[threadIdx.x] = v;
    votes[threadIdx.x] = __ballot_sync(0xffffffffu, threadIdx.x % 2);
}

/* Only the first warp reaches the block's barrier: a deadlock the device
 * would hang on too. */
__global__ static void emu_rt_divergent(unsigned *out)
{
    if (threadIdx.x >= 32)
        return;
    __syncthreads();
    out[threadIdx.x] = 1;
}

/* blocks x threads (threads of two rows when ty is 2) of emu_rt_neighbour
 * into out (blocks * threads values); 0 or -1. */
extern "C" int rn_emu_rt_neighbour(unsigned blocks, unsigned threads, unsigned ty, unsigned *out)
{
    unsigned n = blocks * threads;
    unsigned *o = (unsigned *)rn_emu_alloc(n, sizeof(unsigned));
    int rc = -1;
    if (!o || ty == 0 || threads % ty)
        goto cleanup;
    memset(o, 0xff, sizeof(unsigned) * n);
    rc = rn_emu_launch(emu_rt_neighbour, dim3(blocks), dim3(threads / ty, ty),
                       sizeof(unsigned) * threads, o);
    if (rc == 0)
        memcpy(out, o, sizeof(unsigned) * n);
cleanup:
    free(o);
    return rc;
}

/* One warp of emu_rt_warp: each lane's sum and vote (32 each). */
extern "C" int rn_emu_rt_warp(float *sums, unsigned *votes)
{
    return rn_emu_launch(emu_rt_warp, dim3(1), dim3(32), 0, sums, votes);
}

/* emu_rt_divergent on a block of threads: aborts the process. */
extern "C" int rn_emu_rt_divergent(unsigned threads)
{
    unsigned *o = (unsigned *)rn_emu_alloc(threads, sizeof(unsigned));
    int rc = o ? rn_emu_launch(emu_rt_divergent, dim3(1), dim3(threads), 0, o) : -1;
    free(o);
    return rc;
}
