/* The norms' block-wide arithmetic and the register-resident norm kernel
 * (norm_vec_kernel), shared by the norm launches (kernels.cu).
 *
 * Included by kernels.cu after the CUDA headers, rn_math.h and the
 * dependent-launch helpers (store_out, which the other kernels share too,
 * lives here for the same reason), and by the unit tests' emulation of CUDA
 * (tests/unit/cuda_emu.h, RN_CUDA_EMU), which runs a row's statistics and
 * normalised values -- the block reductions, their shuffles and barriers --
 * and norm_vec_kernel itself on the CPU in every build
 * (tests/unit/norm_emu.cc). */
#ifndef RN_CUDA_NORM_DEV_CUH
#define RN_CUDA_NORM_DEV_CUH

#include <stdint.h>
#include <string.h>

#include "../model.h" /* RN_DT_BF16 */
#include "rk_half.h"

/* Stores v at out[i]: in fp32, or rounded to nearest even into h when
 * h.p is set (rk_half). */
__device__ static inline void store_out(float *out, rk_half h, size_t i, float v)
{
    if (!h.p)
        out[i] = v;
    else if (h.t == RN_DT_BF16)
        ((__nv_bfloat16 *)h.p)[i] = __float2bfloat16_rn(v);
    else
        ((__half *)h.p)[i] = __float2half_rn(v);
}

/* Sums a and b over a row's group of nthr threads (whole warps, tid the
 * thread's index within the group; norm_vec_kernel puts several groups in
 * a block, each with its own sh) in double (the CPU backend's norms
 * accumulate in double too); every thread of the group gets both totals.
 * Every thread of the block calls it (a barrier).  sh (64 doubles) may be
 * written again only after a barrier that every thread reaches once it
 * has read the totals: the norm kernels call it once, gemv_group_rows
 * ends each round with one. */
__device__ static void block_sum2(double &a, double &b, double *sh, int tid, int nthr)
{
    for (int o = 16; o > 0; o >>= 1) {
        a += __shfl_xor_sync(0xffffffffu, a, o);
        b += __shfl_xor_sync(0xffffffffu, b, o);
    }
    int warp = tid / 32, lane = tid % 32;
    if (lane == 0 && warp < 32)
        sh[warp] = a, sh[32 + warp] = b;
    __syncthreads();
    a = 0.0, b = 0.0;
    for (int w = 0; w < nthr / 32; w++)
        a += sh[w], b += sh[32 + w];
}

/* v into a running sum s and sum of squares ss, in double (the CPU
 * backend's norms accumulate in double too). */
__device__ static inline void sum2_add(double &s, double &ss, float v)
{
    double t = v;
    s += t;
    ss += t * t;
}

/* The mean (LayerNorm; 0 for RMSNorm) and the factor of a row of d values
 * from its sum s and sum of squares ss. */
__device__ static inline void norm_stats_of(double s, double ss, int d, int layer_kind, float eps,
                                            double &mu, float &r)
{
    mu = layer_kind ? s / d : 0.0;
    double dev = layer_kind ? fmax(ss - s * mu, 0.0) : ss;
    r = rn_norm_factor(dev, d, eps);
}

/* The mean (LayerNorm; 0 for RMSNorm) and the factor of a row of d values
 * from each thread's share of its sum s and sum of squares ss (block-wide:
 * every thread calls it; sh, tid, nthr as block_sum2's). */
__device__ static inline void norm_stats(double s, double ss, double *sh, int d, int layer_kind,
                                         float eps, double &mu, float &r, int tid, int nthr)
{
    block_sum2(s, ss, sh, tid, nthr);
    norm_stats_of(s, ss, d, layer_kind, eps, mu, r);
}

/* Value k of a row normalised: (x - mu) r, times w[k], plus b[k], times
 * act(g) when gated (g: the gate's value at k).  Each operation rounded on
 * its own (_rn): left to the compiler, a multiply and the add after it may
 * become one fused operation in one kernel and not in another, and the
 * kernels that form a norm (norm_vec_kernel, gemv_norm_kernel) must agree
 * to the bit. */
__device__ static inline float norm_value(float x, double mu, float r, const float *w,
                                          const float *b, int k, const float *g, int act)
{
    float v = __fmul_rn((float)((double)x - mu), r);
    v = w ? __fmul_rn(v, w[k]) : v;
    v = b ? __fadd_rn(v, b[k]) : v;
    return g ? __fmul_rn(v, rn_act_apply(act, *g)) : v;
}

/* The mean and factor (norm_stats) of the row of d values at xr, each
 * thread of the block summing its strided share (block-wide: every thread
 * calls it; sh as block_sum2's). */
__device__ static inline void norm_row_stats(const float *xr, int d, int layer_kind, float eps,
                                             double *sh, double &mu, float &r)
{
    double s = 0.0, ss = 0.0;
    for (int k = (int)threadIdx.x; k < d; k += (int)blockDim.x)
        sum2_add(s, ss, xr[k]);
    norm_stats(s, ss, sh, d, layer_kind, eps, mu, r, (int)threadIdx.x, (int)blockDim.x);
}

/* Values a thread of norm_vec_kernel holds: two adjacent 16-byte pieces. */
#define NORM_VEC 8

/* Partial rows norm_vec_row has in flight at once when it sums a row's
 * parts (a decode step's group norm sums RN_CUDA_STEP_SPLIT_MAX of them):
 * a part's load then its add, part after part, waited out a round trip to
 * L2 each. */
#ifndef NORM_PARTS_AT_ONCE
#define NORM_PARTS_AT_ONCE 4
#endif

/* Most rows a norm_vec_kernel block takes side by side (blockDim.y). */
#define NORM_VEC_ROWS 8

/* Threads of norm_vec_kernel's block for a row of d values (NORM_VEC each,
 * whole warps). */
__host__ __device__ static inline int norm_vec_threads(int d)
{
    return ((d + NORM_VEC - 1) / NORM_VEC + 31) / 32 * 32;
}

/* Rows a norm_vec_kernel block can take side by side: up to 256 threads
 * in all (at most NORM_VEC_ROWS rows), so rows of 512 values (64 threads)
 * go four to a block instead of living a block each. */
static inline int norm_vec_rows(int d)
{
    int t = norm_vec_threads(d), r = 256 / t;
    return r < 1 ? 1 : r > NORM_VEC_ROWS ? NORM_VEC_ROWS : r;
}

/* Rows a block of a launch over `rows` rows takes: norm_vec_rows(d), but
 * no more than leaves 64 blocks, so a decode step's few rows keep a block
 * each (as measured before rows shared blocks) and only long launches --
 * a prefill chunk's 32 Ki rows of the group norm -- fill their blocks.  A
 * row's bits do not depend on it. */
static inline int norm_vec_block_rows(int d, int rows)
{
    int r = norm_vec_rows(d), cap = rows / 64;
    return r < cap ? r : cap < 1 ? 1 : cap;
}

/* The four values from x (16-byte aligned), as fp32. */
__device__ static inline void load4(const float *x, float *v)
{
    float4 t = *(const float4 *)x;
    v[0] = t.x, v[1] = t.y, v[2] = t.z, v[3] = t.w;
}

/* Four results at out[i] (i a multiple of 4): fp32, or rounded into h. */
__device__ static inline void store4(float *out, rk_half h, size_t i, const float *v)
{
    if (!h.p) {
        *(float4 *)(out + i) = make_float4(v[0], v[1], v[2], v[3]);
    } else if (h.t == RN_DT_BF16) {
        __nv_bfloat162 a = __floats2bfloat162_rn(v[0], v[1]), b = __floats2bfloat162_rn(v[2], v[3]);
        uint2 u;
        memcpy(&u.x, &a, 4), memcpy(&u.y, &b, 4); /* the pairs' bits, without type punning */
        *(uint2 *)((__nv_bfloat16 *)h.p + i) = u;
    } else {
        __half2 a = __floats2half2_rn(v[0], v[1]), b = __floats2half2_rn(v[2], v[3]);
        uint2 u;
        memcpy(&u.x, &a, 4), memcpy(&u.y, &b, 4);
        *(uint2 *)((__half *)h.p + i) = u;
    }
}

/* Values a to_half_kernel thread converts per round: two 16-byte loads. */
#define TO_HALF_VEC 8

/* Whether to_half_kernel can take src and h 8 values at a time: float4
 * loads need src on 16 bytes, store4's 8-byte stores h on 8. */
__host__ __device__ static inline int to_half_vec_fits(const float *src, rk_half h)
{
    return (uintptr_t)src % 16 == 0 && (uintptr_t)h.p % 8 == 0;
}

/* src's n fp32 values rounded to nearest even into h (rk_half): a prefill
 * chunk's q, k and v for the fused retention read-out, 8 adjacent values a
 * thread through load4 and store4 where vec (to_half_vec_fits), then the
 * last n % 8 (all n without vec) one at a time through store_out.  Both
 * round each value on its own, so vec changes no bit.  With one 4-byte load
 * and one 2-byte store per thread, the H100 moved these at about 1.2 TB/s,
 * 13% of a 4096-token chunk (docs/benchmarks.md). */
static __global__ void to_half_kernel(rk_half h, const float *src, size_t n, int vec)
{
    pdl_enter();
    size_t t0 = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    size_t stride = (size_t)gridDim.x * blockDim.x;
    size_t groups = vec ? n / TO_HALF_VEC : 0;
    for (size_t g = t0; g < groups; g += stride) {
        size_t i = g * TO_HALF_VEC;
        float v[TO_HALF_VEC];
        load4(src + i, v);
        load4(src + i + 4, v + 4);
        store4(NULL, h, i, v);
        store4(NULL, h, i + 4, v + 4);
    }
    for (size_t i = groups * TO_HALF_VEC + t0; i < n; i += stride)
        store_out(NULL, h, i, src[i]);
}

/* norm_kernel's row `row` with each thread's NORM_VEC adjacent values held
 * in registers from their one read to their write (tid: the thread's index
 * within the row, nthr the row's threads; sh: the row's own 64 doubles):
 * norm_vec_kernel's body.  A thread of a row past the launch's (live 0)
 * reads and writes nothing but still takes part in the block's barrier. */
__device__ static inline void norm_vec_row(size_t row, int live, int tid, int nthr, float *y,
                                           const float *x, int d, int layer_kind, const float *w,
                                           const float *b, float eps, const float *gate, int act,
                                           int parts, size_t part_stride, const float *res,
                                           float alpha, float *sink, rk_half h, double *sh)
{
    size_t base = row * (size_t)d;
    int k0 = tid * NORM_VEC, m = !live ? 0 : d - k0 < NORM_VEC ? d - k0 : NORM_VEC;
    float v[NORM_VEC] = {}, g[NORM_VEC] = {};
    if (gate) /* 16-byte loads, in flight with the row's */
#pragma unroll
        for (int q = 0; q < NORM_VEC; q += 4)
            if (q < m)
                load4(gate + base + (size_t)(k0 + q), g + q);
    /* every read before the sink's write (sink may be x): one trip to memory */
    if (sink && res) {
        float a[NORM_VEC] = {}, r[NORM_VEC] = {};
#pragma unroll
        for (int q = 0; q < NORM_VEC; q += 4)
            if (q < m) {
                load4(x + base + (size_t)(k0 + q), a + q);
                load4(res + base + (size_t)(k0 + q), r + q);
            }
#pragma unroll
        for (int j = 0; j < NORM_VEC; j++)
            v[j] = __fmaf_rn(a[j], alpha, r[j]); /* as gemv_store's */
    } else if (sink) {
        /* NORM_PARTS_AT_ONCE parts' loads in flight before any is added
         * (in part order, as one at a time would) */
        for (int p0 = 0; p0 < parts; p0 += NORM_PARTS_AT_ONCE) {
            float a[NORM_PARTS_AT_ONCE][NORM_VEC] = {};
#pragma unroll
            for (int u = 0; u < NORM_PARTS_AT_ONCE; u++)
#pragma unroll
                for (int q = 0; q < NORM_VEC; q += 4)
                    if (p0 + u < parts && q < m)
                        load4(x + (size_t)(p0 + u) * part_stride + base + (size_t)(k0 + q),
                              a[u] + q);
#pragma unroll
            for (int u = 0; u < NORM_PARTS_AT_ONCE; u++)
                if (p0 + u < parts)
#pragma unroll
                    for (int j = 0; j < NORM_VEC; j++)
                        v[j] += a[u][j];
        }
    } else {
#pragma unroll
        for (int q = 0; q < NORM_VEC; q += 4)
            if (q < m)
                load4(x + base + (size_t)(k0 + q), v + q);
    }
    if (sink)
#pragma unroll
        for (int q = 0; q < NORM_VEC; q += 4)
            if (q < m)
                store4(sink, rk_half(), base + (size_t)(k0 + q), v + q);
    double s = 0.0, ss = 0.0;
#pragma unroll
    for (int j = 0; j < NORM_VEC; j++)
        if (j < m)
            sum2_add(s, ss, v[j]);
    double mu;
    float r;
    norm_stats(s, ss, sh, d, layer_kind, eps, mu, r, tid, nthr);
#pragma unroll
    for (int q = 0; q < NORM_VEC; q += 4) {
        if (q >= m)
            break;
        int k = k0 + q;
        float o[4];
        for (int j = 0; j < 4; j++)
            o[j] = norm_value(v[q + j], mu, r, w, b, k + j, gate ? g + q + j : NULL, act);
        store4(y, h, base + (size_t)k, o);
    }
}

/* norm_kernel with each thread's NORM_VEC adjacent values held in registers
 * from their one read to their write (RETNET_CUDA_NORM_VEC=1; d a multiple
 * of 4, the parts' stride too, at most 1024 threads of NORM_VEC): the row
 * is read once with 16-byte loads, where norm_kernel reads it again to
 * normalise (and the residual update a third time).  Under ncu on an H100,
 * norm_kernel moved 4096-row prefill chunks at about 1.4 TB/s, 12% of the
 * chunk's kernel time.  Each value is computed with norm_kernel's
 * operations; the sums run in another order (a thread's adjacent values,
 * then the same tree), so the bits are not norm_kernel's.  A block takes
 * blockDim.y rows side by side (norm_vec_rows), row y with its own threads
 * and its own shared sums, so a row's bits do not depend on how many share
 * its block (on an H200 the group norm's rows of 512, a 64-thread block
 * each, moved about 2 TB/s). */
static __global__ void __launch_bounds__(1024)
    norm_vec_kernel(float *y, const float *x, int d, int layer_kind, const float *w, const float *b,
                    float eps, const float *gate, int act, int parts, size_t part_stride,
                    const float *res, float alpha, float *sink, rk_half h, int rows)
{
    pdl_enter();
    __shared__ double sh[NORM_VEC_ROWS][64];
    size_t row = (size_t)blockIdx.x * blockDim.y + threadIdx.y;
    norm_vec_row(row, row < (size_t)rows, (int)threadIdx.x, (int)blockDim.x, y, x, d, layer_kind, w,
                 b, eps, gate, act, parts, part_stride, res, alpha, sink, h, sh[threadIdx.y]);
}

/* One block per row.  The row's input is x, or, first written to sink:
 * the sum of parts partial read-outs (x + p * part_stride), or the residual
 * update alpha x + res.  Sum and sum of squares come from one pass (in
 * double, so the deviation sum ss - s mu loses nothing that matters for fp32
 * inputs); each thread later reads back only values it wrote itself. */
static __global__ void norm_kernel(float *y, const float *x, int d, int layer_kind, const float *w,
                                   const float *b, float eps, const float *gate, int act, int parts,
                                   size_t part_stride, const float *res, float alpha, float *sink,
                                   rk_half h)
{
    pdl_enter();
    __shared__ double sh[64];
    size_t row = blockIdx.x;
    const float *xr = x + row * (size_t)d;
    if (sink) {
        float *sr = sink + row * (size_t)d;
        const float *rr = res ? res + row * (size_t)d : NULL;
        for (int k = threadIdx.x; k < d; k += blockDim.x) {
            float t;
            if (rr) {
                t = __fmaf_rn(xr[k], alpha, rr[k]); /* as gemv_store's */
            } else {
                t = 0.0f;
                for (int p = 0; p < parts; p++)
                    t += xr[(size_t)p * part_stride + (size_t)k];
            }
            sr[k] = t;
        }
        xr = sr;
    }
    double mu;
    float r;
    norm_row_stats(xr, d, layer_kind, eps, sh, mu, r);
    for (int k = threadIdx.x; k < d; k += blockDim.x) {
        size_t i = row * (size_t)d + (size_t)k;
        store_out(y, h, i, norm_value(xr[k], mu, r, w, b, k, gate ? gate + i : NULL, act));
    }
}

static inline unsigned norm_threads(int d)
{
    return d >= 2048 ? 256u : d >= 256 ? 128u : 64u; /* 4-8 values per thread */
}

#endif
