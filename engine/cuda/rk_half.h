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

/* Where the rotary pass (rk_qk_prepare, qk_kernel<1>) writes the fused
 * retention read-out's bf16 operands for the first rows rows of a chunk
 * (whole pieces of P): q and k as rotated (qh, kh, rows of the chunk's
 * layout), and k scaled for the pieces' own state parts (kd: (piece, head)
 * blocks of P rows, row i times g^(P-1-i) from the decay table pw, as
 * rk_scale_pieces writes them).  rows 0: none. */
struct rk_qk_copies {
    void *qh, *kh, *kd;
    const float *pw;
    int P, rows;
};

#endif
