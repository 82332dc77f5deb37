/* rk_half: where a kernel that feeds a cuBLASLt projection may write
 * instead of its fp32 output (kernels.cuh).  Its own header, free of the
 * CUDA runtime, so the device arithmetic headers (norm_dev.cuh) and the
 * unit tests' emulation of CUDA can use it too. */
#ifndef RN_CUDA_RK_HALF_H
#define RN_CUDA_RK_HALF_H

/* The same values rounded to the projection's dtype t (bf16 or fp16), what
 * rk_to_half would make of them.  p NULL: the fp32 output. */
struct rk_half {
    void *p;
    int t;
};

#endif
