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

/* The group norm and gate the fused retention read-out (rk_ret_fused)
 * applies to its rows in place of storing them in fp32
 * (RETNET_CUDA_RET_NORM): each (row, head)'s dv values normalised as the
 * group norm's launch does (norm_value: LayerNorm when layer_kind, else
 * RMSNorm, with eps; w: dv weights or NULL), times act(gate) at the same
 * place (gate: fp32, row stride H dv; NULL: none), rounded to bf16 into h
 * (row stride H dv), the output projection's rounded input. */
struct rk_group_norm {
    const float *gate, *w;
    void *h;
    float eps;
    int layer_kind, act;
};

#endif
