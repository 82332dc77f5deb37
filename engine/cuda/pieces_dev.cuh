/* The prefill's piece scaling (rk_scale_pieces, kernels.cu): the queries
 * times g^(i+1) and the keys times g^(P-1-i), copied out per (piece, head).
 *
 * Included by kernels.cu after the CUDA headers and the dependent-launch
 * helpers, and by the unit tests' emulation of CUDA (tests/unit/cuda_emu.h,
 * RN_CUDA_EMU), which runs the kernel on the CPU in every build
 * (tests/unit/ret_emu.cc). */
#ifndef RN_CUDA_PIECES_DEV_CUH
#define RN_CUDA_PIECES_DEV_CUH

#include <type_traits>

/* Destination rows a thread row of scale_pieces_kernel moves, all their
 * loads issued before the first store. */
#define SP_UNROLL 4

/* Threads of a scale_pieces_kernel block (x: a row's dk / N values, whole
 * warps, at most 256; y: rows side by side, to 256 threads in all). */
#define SP_THREADS 256

/* pieces full pieces of P rows, each piece's rows scaled as a chunk of its
 * own (key: g^(P-1-i), else g^(i+1)) into its block dst[piece][h] (P x dk,
 * rows numbered (piece H + h) P + i); one piece is a whole chunk.  A block
 * of blockDim.x x blockDim.y threads takes blockDim.y x SP_UNROLL of those
 * rows, thread (x, y) N values at a time of rows (blockIdx.x SP_UNROLL +
 * u) blockDim.y + y: every load of its rows is in flight before it stores
 * (at dk 256 one row a block kept 1 KiB in flight and moved about 1.5 TB/s
 * on an H200).  The index arithmetic is a few 32-bit divisions per row,
 * not per value.  N: 4 (float4) when dk is a multiple of 4 and the rows
 * start on 16 bytes, else 1; each value gets the same one product either
 * way.  T: float, or __nv_bfloat16 for the fused path's own-part
 * products (the product rounded to nearest even once, as cuBLAS's
 * FAST_16BF rounds an fp32 operand).  src is written by an earlier kernel
 * that may still be running when this one starts (RETNET_CUDA_PREFILL_PDL):
 * plain loads after the wait, not the read-only path (so no __restrict__),
 * as the GEMVs read their input. */
template <int N, typename T = float>
__global__ void __launch_bounds__(SP_THREADS)
    scale_pieces_kernel(T *__restrict__ dst, const float *src, const float *pw, int H, int P,
                        int dk, int key, unsigned rows)
{
    pdl_enter();
    const float *sr[SP_UNROLL];
    T *dr[SP_UNROLL];
    float f[SP_UNROLL];
#pragma unroll
    for (int u = 0; u < SP_UNROLL; u++) {
        unsigned r = (blockIdx.x * SP_UNROLL + (unsigned)u) * blockDim.y + threadIdx.y;
        sr[u] = NULL, dr[u] = NULL, f[u] = 0.0f;
        if (r >= rows)
            continue;
        unsigned b = r / (unsigned)P; /* piece H + head */
        int i = (int)(r % (unsigned)P), h = (int)(b % (unsigned)H);
        size_t row = (size_t)(b / (unsigned)H) * (size_t)P + (size_t)i;
        f[u] = pw[(size_t)h * (size_t)(P + 1) + (size_t)(key ? P - 1 - i : i + 1)];
        sr[u] = src + (row * (size_t)H + (size_t)h) * (size_t)dk;
        dr[u] = dst + (size_t)r * (size_t)dk;
    }
    for (int d = N * (int)threadIdx.x; d < dk; d += N * (int)blockDim.x) {
        /* uninitialised: a row's values are read only where they were
         * loaded (dr[u] set exactly when sr[u] is), and zeroing them let
         * ptxas interleave the loads with the stores two by two */
        float v[SP_UNROLL][N];
#pragma unroll
        for (int u = 0; u < SP_UNROLL; u++) {
            if (!sr[u])
                continue;
            if constexpr (N == 4) {
                float4 t = *(const float4 *)(sr[u] + d);
                v[u][0] = t.x, v[u][1] = t.y, v[u][2] = t.z, v[u][3] = t.w;
            } else {
                v[u][0] = sr[u][d];
            }
        }
#pragma unroll
        for (int u = 0; u < SP_UNROLL; u++) {
            if (!dr[u])
                continue;
            if constexpr (N == 4 && std::is_same<T, float>::value) {
                float4 t;
                t.x = v[u][0] * f[u], t.y = v[u][1] * f[u], t.z = v[u][2] * f[u];
                t.w = v[u][3] * f[u];
                *(float4 *)(dr[u] + d) = t;
            } else if constexpr (N == 4) { /* d a multiple of 4: 4-byte aligned pairs */
                __nv_bfloat162 *t = (__nv_bfloat162 *)(dr[u] + d);
                t[0] = __floats2bfloat162_rn(v[u][0] * f[u], v[u][1] * f[u]);
                t[1] = __floats2bfloat162_rn(v[u][2] * f[u], v[u][3] * f[u]);
            } else if constexpr (std::is_same<T, float>::value) {
                dr[u][d] = v[u][0] * f[u];
            } else {
                dr[u][d] = __float2bfloat16_rn(v[u][0] * f[u]);
            }
        }
    }
}

/* The launch shape of scale_pieces_kernel<N> for rows of dk values:
 * block (x, y) and the grid's blocks for `rows` destination rows. */
__host__ __device__ static inline void
scale_pieces_shape(int dk, int n, unsigned rows, unsigned *bx, unsigned *by, unsigned *grid)
{
    unsigned per = (unsigned)((dk + n - 1) / n);
    *bx = per >= SP_THREADS ? SP_THREADS : (per + 31) / 32 * 32;
    *by = SP_THREADS / *bx;
    unsigned rows_a_block = *by * SP_UNROLL;
    *grid = (rows + rows_a_block - 1) / rows_a_block;
}

#endif
