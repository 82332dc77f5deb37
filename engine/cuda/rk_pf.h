/* rk_pf: weight bytes a kernel asks L2 to fetch ahead of the GEMV that reads
 * them (prefetch_dev.cuh, RETNET_CUDA_L2_PREFETCH).  Its own header, free of
 * the CUDA runtime, like rk_half.h, so the device headers the CPU emulation
 * runs can take it. */
#ifndef RN_CUDA_RK_PF_H
#define RN_CUDA_RK_PF_H

#define RK_PF_RANGES 4

/* Up to RK_PF_RANGES byte ranges (16-byte aligned, sizes multiples of 16;
 * bytes 0: unused), in the order the next kernel reads them. */
struct rk_pf {
    const void *p[RK_PF_RANGES];
    unsigned bytes[RK_PF_RANGES];
};

#endif
