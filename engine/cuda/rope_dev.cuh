/* Rotary position embedding of q and k (rk_qk_prepare, kernels.cu).
 *
 * Included by kernels.cu after the CUDA headers, rn_math.h and the
 * dependent-launch helpers, and by the unit tests' emulation of CUDA
 * (tests/unit/cuda_emu.h, RN_CUDA_EMU), which runs the kernel on the CPU in
 * every build (tests/unit/ret_emu.cc). */
#ifndef RN_CUDA_ROPE_DEV_CUH
#define RN_CUDA_ROPE_DEV_CUH

#include "rk_half.h" /* rk_qk_copies */

/* Heads whose pair a qk_kernel thread loads before it rotates and stores
 * any of them. */
#define QK_HEADS 8

/* Rotation: one thread per (row, feature pair, group of hpt heads): the
 * pair's angles (double-precision cos and sin, the costly part) are the
 * same for all heads of a row, so a thread works them out once for its hpt
 * heads.  It loads QK_HEADS heads' pairs of q and k before it rotates and
 * stores them (one head at a time, each head's stores ahead of the next
 * head's loads, kept a prefill chunk's rotary at about twice its memory
 * time).  With scale != 1 the pair of q (scale_k == 0) or k is scaled
 * first, in the same float products scale_kernel makes, so one pass does
 * both when every feature is in a pair.  Each value gets the same
 * operations whatever hpt is, so the same bits.  With COPY, the first
 * cp.rows rows' results go rounded to bf16 where cp says (rk_qk_copies)
 * instead of back in fp32: q and k as rk_to_half would round them, and k
 * times its piece's decay as scale_pieces_kernel's bf16 instance would
 * (the same fp32 product, rounded once) -- the fused retention read-out's
 * operands, the only readers of those rows, without the passes that read
 * q and k again, nor the fp32 stores nobody reads (its own instance, with half
 * the heads' loads ahead of the stores: with QK_HEADS of them the stores
 * took it from the plain kernel's 106 registers to 170, one block of 256
 * threads an SM instead of two). */
template <int COPY>
static __global__ void qk_kernel(float *q, float *k, int n, int H, int dk, const int64_t *pos,
                                 const float *freq, int interleaved, int scale_k, float scale,
                                 int hpt, rk_qk_copies cp)
{
    pdl_enter();
    int half = dk / 2, groups = (H + hpt - 1) / hpt;
    size_t total = (size_t)n * (size_t)half * (size_t)groups;
    for (size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x; t < total;
         t += (size_t)gridDim.x * blockDim.x) {
        int j = (int)(t % (size_t)half), grp = (int)(t / (size_t)half % (size_t)groups);
        size_t row = t / (size_t)half / (size_t)groups;
        int ia = interleaved ? 2 * j : j, ib = interleaved ? 2 * j + 1 : j + half;
        double a = (double)rn_rope_angle((long long)pos[row], freq[ia]);
        double b = (double)rn_rope_angle((long long)pos[row], freq[ib]);
        float ca = (float)cos(a), sa = (float)sin(a), cb = (float)cos(b), sb = (float)sin(b);
        int h1 = min(H, (grp + 1) * hpt);
        constexpr int HL = COPY ? QK_HEADS / 2 : QK_HEADS; /* heads loaded at once */
        for (int h0 = grp * hpt; h0 < h1; h0 += HL) {
            int m = min(HL, h1 - h0);
            float v[HL][4] = {}; /* q's pair, then k's */
            size_t rh0 = row * (size_t)H + (size_t)h0;
#pragma unroll
            for (int u = 0; u < HL; u++)
                if (u < m) {
                    const float *qv = q + (rh0 + (size_t)u) * (size_t)dk;
                    const float *kv = k + (rh0 + (size_t)u) * (size_t)dk;
                    v[u][0] = qv[ia], v[u][1] = qv[ib], v[u][2] = kv[ia], v[u][3] = kv[ib];
                }
#pragma unroll
            for (int u = 0; u < HL; u++)
                if (u < m) {
                    if (scale != 1.0f && scale_k) {
                        v[u][2] *= scale;
                        v[u][3] *= scale;
                    } else if (scale != 1.0f) {
                        v[u][0] *= scale;
                        v[u][1] *= scale;
                    }
                    rn_rope_rotate(&v[u][0], &v[u][1], ca, sa, cb, sb);
                    rn_rope_rotate(&v[u][2], &v[u][3], ca, sa, cb, sb);
                    if (!COPY || row >= (size_t)cp.rows) {
                        float *qv = q + (rh0 + (size_t)u) * (size_t)dk;
                        float *kv = k + (rh0 + (size_t)u) * (size_t)dk;
                        qv[ia] = v[u][0], qv[ib] = v[u][1], kv[ia] = v[u][2], kv[ib] = v[u][3];
                    } else {
                        __nv_bfloat16 *qh = (__nv_bfloat16 *)cp.qh, *kh = (__nv_bfloat16 *)cp.kh;
                        size_t at = (rh0 + (size_t)u) * (size_t)dk;
                        qh[at + (size_t)ia] = __float2bfloat16_rn(v[u][0]);
                        qh[at + (size_t)ib] = __float2bfloat16_rn(v[u][1]);
                        kh[at + (size_t)ia] = __float2bfloat16_rn(v[u][2]);
                        kh[at + (size_t)ib] = __float2bfloat16_rn(v[u][3]);
                        /* row i of a piece: block (piece H + h), times g^(P-1-i) */
                        int h = h0 + u, i = (int)(row % (size_t)cp.P);
                        size_t piece = row / (size_t)cp.P;
                        float f = cp.pw[(size_t)h * (size_t)(cp.P + 1) + (size_t)(cp.P - 1 - i)];
                        __nv_bfloat16 *kd =
                            (__nv_bfloat16 *)cp.kd +
                            ((piece * (size_t)H + (size_t)h) * (size_t)cp.P + (size_t)i) *
                                (size_t)dk;
                        kd[ia] = __float2bfloat16_rn(v[u][2] * f);
                        kd[ib] = __float2bfloat16_rn(v[u][3] * f);
                    }
                }
        }
    }
}

#endif
