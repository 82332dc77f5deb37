/* The batched recurrent decode step (ret_step_kernel) and torchscale's
 * running normaliser (ts_step_kernel).
 *
 * Included by kernels.cu after the CUDA headers, rn_math.h and the
 * dependent-launch helpers, and by the unit tests' emulation of CUDA
 * (tests/unit/cuda_emu.h, RN_CUDA_EMU), which runs both on the CPU in
 * every build against a double-precision step (tests/unit/step_emu.cc). */
#ifndef RN_CUDA_STEP_DEV_CUH
#define RN_CUDA_STEP_DEV_CUH

#include <stddef.h>
#include <string.h>

#include "rk_step.h"

/* W consecutive values of a row as fp32: of an fp32 row, float4 when the
 * plan found every head block 16-byte aligned, else one float; of a bf16
 * state row, 4 values in 8 bytes (the same plan condition aligns them), or
 * one, rounded to nearest even when stored. */
template <int W, typename T = float> struct svec;
template <> struct svec<4, float> {
    float4 v;
    __device__ void load(const float *p)
    {
        v = *(const float4 *)p;
    }
    __device__ void store(float *p) const
    {
        *(float4 *)p = v;
    }
    __device__ float &operator[](int i)
    {
        return (&v.x)[i];
    }
};
template <> struct svec<1, float> {
    float v;
    __device__ void load(const float *p)
    {
        v = *p;
    }
    __device__ void store(float *p) const
    {
        *p = v;
    }
    __device__ float &operator[](int)
    {
        return v;
    }
};
template <> struct svec<4, __nv_bfloat16> {
    float f[4];
    __device__ void load(const __nv_bfloat16 *p)
    {
        uint2 u = *(const uint2 *)p;
        __nv_bfloat162 pa, pb;
        memcpy(&pa, &u.x, 4), memcpy(&pb, &u.y, 4); /* the pairs' bits, without type punning */
        float2 a = __bfloat1622float2(pa), b = __bfloat1622float2(pb);
        f[0] = a.x, f[1] = a.y, f[2] = b.x, f[3] = b.y;
    }
    __device__ void store(__nv_bfloat16 *p) const
    {
        __nv_bfloat162 a = __floats2bfloat162_rn(f[0], f[1]), b = __floats2bfloat162_rn(f[2], f[3]);
        uint2 u;
        memcpy(&u.x, &a, 4), memcpy(&u.y, &b, 4); /* the pairs' bits, without type punning */
        *(uint2 *)p = u;
    }
    __device__ float &operator[](int i)
    {
        return f[i];
    }
};
template <> struct svec<1, __nv_bfloat16> {
    float v;
    __device__ void load(const __nv_bfloat16 *p)
    {
        v = __bfloat162float(*p);
    }
    __device__ void store(__nv_bfloat16 *p) const
    {
        *p = __float2bfloat16_rn(v);
    }
    __device__ float &operator[](int)
    {
        return v;
    }
};

#define STEP_UNROLL 4

/* The STEP_UNROLL state rows of a ret_step_kernel thread from d0 (rows
 * d0, d0 + step, ...; none at or past r1). */
template <int W, typename TS>
__device__ static inline void step_load(svec<W, TS> *sv, const TS *Sh, int d0, int step, int r1,
                                        int dv)
{
#pragma unroll
    for (int u = 0; u < STEP_UNROLL; u++)
        if (d0 + u * step < r1)
            sv[u].load(Sh + (size_t)(d0 + u * step) * (size_t)dv);
}

/* Block (sequence i, head h) x (column tile) x (row share p): thread (x, y)
 * owns columns e .. e+W-1 and walks rows r0 + y, r0 + y + d_split, ... of
 * the share, STEP_UNROLL rows at a time with every load issued before the
 * first store, so each thread keeps several 16-byte requests in flight.  The
 * state is read and written exactly once.  Thread row sums meet in shared
 * memory (fixed order); the share's read-out goes to o + p * part_stride.
 * early (RETNET_CUDA_STEP_EARLY): the slot index and a thread's first
 * STEP_UNROLL state rows are read before pdl_wait, under the q/k/v
 * projection's tail.  Within a decode step only this kernel's launch for
 * this layer touches the layer's states, and the slot indices come from the
 * host before the step, so nothing the predecessors write is read early;
 * the same loads and sums.  Without early nothing is read before the wait. */
template <int W, typename TS>
static __global__ void
ret_step_kernel(float *__restrict__ o, size_t part_stride, rk_states S,
                const int *__restrict__ slots, const float *q, const float *k, const float *v,
                const float *__restrict__ gamma, int H, int dk, int dv, int rows, int early)
{
    pdl_trigger();
#ifdef RN_CUDA_EMU
    float *part = (float *)rn_emu_dynamic_smem(); /* d_split x (lanes * W) */
#else
    extern __shared__ float part[]; /* d_split x (lanes * W) */
#endif
    int i = (int)blockIdx.x / H, h = (int)blockIdx.x % H;
    int tile = (int)blockDim.x * W, col = (int)threadIdx.x * W;
    int e = (int)blockIdx.y * tile + col;
    int r0 = (int)blockIdx.z * rows, r1 = min(dk, r0 + rows);
    int step = (int)blockDim.y, first = r0 + (int)threadIdx.y;
    size_t rh = (size_t)i * (size_t)H + (size_t)h, head = (size_t)h * (size_t)dk * (size_t)dv;
    TS *layer = NULL, *Sh = NULL;
    svec<W, TS> sv[STEP_UNROLL]; /* updated in fp32, rounded when stored */
    if (early) {
        layer = (TS *)S.base + (size_t)slots[i] * S.slot_stride + S.layer_off;
        Sh = layer + head + (size_t)e;
        if (e < dv)
            step_load<W, TS>(sv, Sh, first, step, r1, dv);
    }
    pdl_wait();
    if (!early) {
        layer = (TS *)S.base + (size_t)slots[i] * S.slot_stride + S.layer_off;
        Sh = layer + head + (size_t)e;
    }
    const float *qr = q + rh * (size_t)dk, *kr = k + rh * (size_t)dk;
    float g = gamma[h];
    svec<W> ve, acc;
    for (int w = 0; w < W; w++)
        acc[w] = 0.0f, ve[w] = 0.0f;
    if (e < dv) {
        ve.load(v + rh * (size_t)dv + (size_t)e);
        for (int d0 = first; d0 < r1; d0 += STEP_UNROLL * step) {
            if (!early || d0 != first)
                step_load<W, TS>(sv, Sh, d0, step, r1, dv);
#pragma unroll
            for (int u = 0; u < STEP_UNROLL; u++) {
                int d = d0 + u * step;
                if (d < r1) {
                    float kd = kr[d], qd = qr[d];
                    for (int w = 0; w < W; w++) {
                        sv[u][w] = g * sv[u][w] + kd * ve[w];
                        acc[w] += qd * sv[u][w];
                    }
                    sv[u].store(Sh + (size_t)d * (size_t)dv);
                }
            }
        }
    }
    for (int w = 0; w < W; w++)
        part[threadIdx.y * (unsigned)tile + (unsigned)(col + w)] = acc[w];
    __syncthreads();
    if (threadIdx.y == 0 && e < dv) {
        float scale = 1.0f;
        if (S.s_off) {
            /* every block derives s' from the old s; ts_step_kernel stores
             * it once all blocks of this step have read it (next launch) */
            svec<1, TS> s; /* fp32 pools only (plan.h) */
            s.load(layer + S.s_off + (size_t)h);
            scale = rn_ts_norm_step(&s[0], g);
        }
        float *out = o + blockIdx.z * part_stride + rh * (size_t)dv + (size_t)e;
        for (int w = 0; w < W && e + w < dv; w++) {
            float sum = 0.0f;
            for (int y = 0; y < (int)blockDim.y; y++)
                sum += part[(unsigned)y * (unsigned)tile + (unsigned)(col + w)];
            out[w] = S.s_off ? sum * scale : sum;
        }
    }
}

/* s = g s + 1 for each (sequence, head): after ret_step_kernel read s. */
static __global__ void ts_step_kernel(rk_states S, const int *slots, const float *gamma, int n,
                                      int H)
{
    pdl_enter();
    int t = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    if (t >= n * H)
        return;
    int i = t / H, h = t % H;
    float *s =
        (float *)S.base + (size_t)slots[i] * S.slot_stride + S.layer_off + S.s_off + (size_t)h;
    rn_ts_norm_step(s, gamma[h]);
}

#endif
