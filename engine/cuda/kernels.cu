/*
 * kernels.cu -- the CUDA backend's own kernels (see kernels.cuh).  The scalar
 * formulas come from rn_math.h, which the CPU backend and its unit tests use
 * too; what is here is how work is spread over threads.
 */
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels.cuh"
#include "plan.h"

extern "C" {
#include "../model.h"
}
#include "../rn_math.h"

#define BLOCK 256

static unsigned blocks_for(size_t n, unsigned per = BLOCK)
{
    size_t b = (n + per - 1) / per;
    return (unsigned)(b > 65535u * 32u ? 65535u * 32u : b);
}

__device__ static inline float load_as_f32(const void *p, size_t i, int t)
{
    if (t == RN_DT_BF16)
        return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
    if (t == RN_DT_F16)
        return __half2float(((const __half *)p)[i]);
    return ((const float *)p)[i];
}

/* ------------------------------------------------------------- embedding */

/* One block per row. */
__global__ void embed_kernel(float *x, const void *E, int t, const int32_t *tok, int D, float scale)
{
    size_t row = blockIdx.x;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float v = load_as_f32(E, (size_t)tok[row] * (size_t)D + (size_t)d, t);
        x[row * (size_t)D + (size_t)d] = scale != 1.0f ? v * scale : v;
    }
}

void rk_embed(cudaStream_t st, float *x, const void *E, int t, const int32_t *tok, int n, int D,
              float scale)
{
    embed_kernel<<<(unsigned)n, BLOCK, 0, st>>>(x, E, t, tok, D, scale);
}

/* ----------------------------------------------------------------- norms */

/* Sum over the block in double (the CPU backend's norms accumulate in
 * double too); every thread gets the total. */
__device__ static double block_sum(double v, double *sh)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    int warp = (int)threadIdx.x / 32, lane = (int)threadIdx.x % 32;
    __syncthreads(); /* sh may still be read from the previous call */
    if (lane == 0)
        sh[warp] = v;
    __syncthreads();
    double t = 0.0;
    for (int w = 0; w < (int)blockDim.x / 32; w++)
        t += sh[w];
    return t;
}

__global__ void norm_kernel(float *y, const float *x, int d, int layer_kind, const float *w,
                            const float *b, float eps, const float *gate, int act)
{
    __shared__ double sh[32];
    size_t row = blockIdx.x;
    const float *xr = x + row * (size_t)d;
    double mu = 0.0;
    if (layer_kind) {
        double s = 0.0;
        for (int k = threadIdx.x; k < d; k += blockDim.x)
            s += xr[k];
        mu = block_sum(s, sh) / d;
    }
    double ss = 0.0;
    for (int k = threadIdx.x; k < d; k += blockDim.x) {
        double c = (double)xr[k] - mu;
        ss += c * c;
    }
    float r = rn_norm_factor(block_sum(ss, sh), d, eps);
    float *yr = y + row * (size_t)d;
    for (int k = threadIdx.x; k < d; k += blockDim.x) {
        float v = (float)((double)xr[k] - mu) * r;
        v = w ? v * w[k] : v;
        v = b ? v + b[k] : v;
        if (gate)
            v *= rn_act_apply(act, gate[row * (size_t)d + (size_t)k]);
        yr[k] = v;
    }
}

void rk_norm(cudaStream_t st, float *y, const float *x, int rows, int d, int layer_kind,
             const float *w, const float *b, float eps, const float *gate, int act)
{
    int threads = d >= 1024 ? 1024 : d >= 256 ? 256 : 64;
    norm_kernel<<<(unsigned)rows, (unsigned)threads, 0, st>>>(y, x, d, layer_kind, w, b, eps, gate,
                                                              act);
}

/* --------------------------------------------------------------- rotary */

/* Rotation: one thread per (row, head, feature pair). */
__global__ void qk_kernel(float *q, float *k, int n, int H, int dk, const int64_t *pos,
                          const float *freq, int interleaved)
{
    int half = dk / 2;
    size_t total = (size_t)n * (size_t)H * (size_t)half;
    for (size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x; t < total;
         t += (size_t)gridDim.x * blockDim.x) {
        int j = (int)(t % (size_t)half);
        size_t rh = t / (size_t)half;
        int row = (int)(rh / (size_t)H);
        int ia = interleaved ? 2 * j : j, ib = interleaved ? 2 * j + 1 : j + half;
        float *qv = q + rh * (size_t)dk, *kv = k + rh * (size_t)dk;
        double a = (double)rn_rope_angle((long long)pos[row], freq[ia]);
        double b = (double)rn_rope_angle((long long)pos[row], freq[ib]);
        float ca = (float)cos(a), sa = (float)sin(a), cb = (float)cos(b), sb = (float)sin(b);
        rn_rope_rotate(&qv[ia], &qv[ib], ca, sa, cb, sb);
        rn_rope_rotate(&kv[ia], &kv[ib], ca, sa, cb, sb);
    }
    (void)n;
}

__global__ void scale_kernel(float *x, size_t n, float scale)
{
    for (size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x; t < n;
         t += (size_t)gridDim.x * blockDim.x)
        x[t] *= scale;
}

void rk_qk_prepare(cudaStream_t st, float *q, float *k, int n, int H, int dk, const int64_t *pos,
                   const float *freq, int rotary, int interleaved, int scale_k, float scale)
{
    size_t all = (size_t)n * (size_t)H * (size_t)dk; /* every feature, odd dk too */
    scale_kernel<<<blocks_for(all), BLOCK, 0, st>>>(scale_k ? k : q, all, scale);
    if (!rotary)
        return;
    size_t pairs = (size_t)n * (size_t)H * (size_t)(dk / 2);
    qk_kernel<<<blocks_for(pairs), BLOCK, 0, st>>>(q, k, n, H, dk, pos, freq, interleaved);
}

/* ----------------------------------------------------- recurrent step */

/* Block (sequence i, head h) x (column tile): lane x owns state column e,
 * thread row y walks the state rows d = y, y + d_split, ...  Each row d of a
 * tile is e_tile consecutive floats, so every load and store is coalesced;
 * the state is read and written exactly once. */
__global__ void ret_step_kernel(float *o, rk_states S, const int *slots, const float *q,
                                const float *k, const float *v, const float *gamma, int H, int dk,
                                int dv)
{
    extern __shared__ float part[]; /* d_split x e_tile */
    int i = (int)blockIdx.x / H, h = (int)blockIdx.x % H;
    int e = (int)(blockIdx.y * blockDim.x + threadIdx.x);
    size_t rh = (size_t)i * (size_t)H + (size_t)h;
    float *layer = S.base + (size_t)slots[i] * S.slot_stride + S.layer_off;
    float *Sh = layer + (size_t)h * (size_t)dk * (size_t)dv;
    const float *qr = q + rh * (size_t)dk, *kr = k + rh * (size_t)dk;
    float g = gamma[h], ve = e < dv ? v[rh * (size_t)dv + (size_t)e] : 0.0f, acc = 0.0f;
    if (e < dv)
        for (int d = (int)threadIdx.y; d < dk; d += (int)blockDim.y) {
            float *p = Sh + (size_t)d * (size_t)dv + (size_t)e;
            float sv = g * *p + kr[d] * ve;
            *p = sv;
            acc += qr[d] * sv;
        }
    part[threadIdx.y * blockDim.x + threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y != 0 || e >= dv)
        return;
    float sum = 0.0f;
    for (int y = 0; y < (int)blockDim.y; y++)
        sum += part[(unsigned)y * blockDim.x + threadIdx.x];
    if (S.s_off) {
        /* every column block derives s' from the old s; the block of column 0
         * stores it once all blocks of this step have read it (next launch) */
        float s = layer[S.s_off + (size_t)h];
        sum *= rn_ts_norm_step(&s, g);
    }
    o[rh * (size_t)dv + (size_t)e] = sum;
}

/* s = g s + 1 for each (sequence, head): after ret_step_kernel read s. */
__global__ void ts_step_kernel(rk_states S, const int *slots, const float *gamma, int n, int H)
{
    int t = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    if (t >= n * H)
        return;
    int i = t / H, h = t % H;
    float *s = S.base + (size_t)slots[i] * S.slot_stride + S.layer_off + S.s_off + (size_t)h;
    rn_ts_norm_step(s, gamma[h]);
}

void rk_ret_step(cudaStream_t st, float *o, rk_states S, const int *slots, const float *q,
                 const float *k, const float *v, const float *gamma, int n, int H, int dk, int dv,
                 int e_tile, int d_split, int n_sms)
{
    (void)n_sms;
    dim3 grid((unsigned)(n * H), (unsigned)((dv + e_tile - 1) / e_tile));
    dim3 block((unsigned)e_tile, (unsigned)d_split);
    size_t shm = sizeof(float) * (size_t)e_tile * (size_t)d_split;
    ret_step_kernel<<<grid, block, shm, st>>>(o, S, slots, q, k, v, gamma, H, dk, dv);
    if (S.s_off)
        ts_step_kernel<<<blocks_for((size_t)n * (size_t)H), BLOCK, 0, st>>>(S, slots, gamma, n, H);
}

/* --------------------------------------------------- chunkwise helpers */

__global__ void decay_table_kernel(float *pw, const double *log_gamma, int H, int C)
{
    size_t total = (size_t)H * (size_t)(C + 1);
    for (size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x; t < total;
         t += (size_t)gridDim.x * blockDim.x) {
        int h = (int)(t / (size_t)(C + 1)), d = (int)(t % (size_t)(C + 1));
        pw[t] = rn_decay_pow(log_gamma[h], (double)d);
    }
}

void rk_decay_table(cudaStream_t st, float *pw, const double *log_gamma, int H, int C)
{
    decay_table_kernel<<<blocks_for((size_t)H * (size_t)(C + 1)), BLOCK, 0, st>>>(pw, log_gamma, H,
                                                                                  C);
}

__global__ void decay_mask_kernel(float *A, const float *pw, int H, int C)
{
    size_t cc = (size_t)C * (size_t)C, total = (size_t)H * cc;
    for (size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x; t < total;
         t += (size_t)gridDim.x * blockDim.x) {
        int h = (int)(t / cc), i = (int)(t % cc / (size_t)C), j = (int)(t % (size_t)C);
        A[t] *= rn_decay_mask(pw + (size_t)h * (size_t)(C + 1), i, j);
    }
}

void rk_decay_mask(cudaStream_t st, float *A, const float *pw, int H, int C)
{
    decay_mask_kernel<<<blocks_for((size_t)H * (size_t)C * (size_t)C), BLOCK, 0, st>>>(A, pw, H, C);
}

__global__ void scale_rows_kernel(float *dst, const float *src, const float *pw, int H, int C,
                                  int dk, int a, int b)
{
    size_t total = (size_t)H * (size_t)C * (size_t)dk;
    for (size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x; t < total;
         t += (size_t)gridDim.x * blockDim.x) {
        int d = (int)(t % (size_t)dk), i = (int)(t / (size_t)dk % (size_t)C);
        int h = (int)(t / ((size_t)dk * (size_t)C));
        float f = pw[(size_t)h * (size_t)(C + 1) + (size_t)(a * i + b)];
        dst[t] = src[((size_t)i * (size_t)H + (size_t)h) * (size_t)dk + (size_t)d] * f;
    }
}

void rk_scale_rows(cudaStream_t st, float *dst, const float *src, const float *pw, int H, int C,
                   int dk, int a, int b)
{
    scale_rows_kernel<<<blocks_for((size_t)H * (size_t)C * (size_t)dk), BLOCK, 0, st>>>(
        dst, src, pw, H, C, dk, a, b);
}

__global__ void decay_state_kernel(float *Sl, const float *pw, int C, size_t hkv, size_t per_head)
{
    for (size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x; t < hkv;
         t += (size_t)gridDim.x * blockDim.x)
        Sl[t] *= pw[(t / per_head) * (size_t)(C + 1) + (size_t)C];
}

void rk_decay_state(cudaStream_t st, rk_states S, int slot, const float *pw, int H, int C,
                    size_t hkv)
{
    float *Sl = S.base + (size_t)slot * S.slot_stride + S.layer_off;
    decay_state_kernel<<<blocks_for(hkv), BLOCK, 0, st>>>(Sl, pw, C, hkv, hkv / (size_t)H);
}

/* One block per head: the running sums are a sequential recurrence (in
 * double, as on the CPU), computed by thread 0; every thread then scales. */
__global__ void ts_chunk_kernel(float *o, float *s_layer, const float *pw, float *sums, int H,
                                int C, int dv)
{
    int h = (int)blockIdx.x;
    const float *p = pw + (size_t)h * (size_t)(C + 1);
    float *sh = sums + (size_t)h * (size_t)C;
    if (threadIdx.x == 0) {
        double s0 = s_layer[h], cum = 0.0;
        for (int i = 0; i < C; i++) {
            cum += p[i];
            sh[i] = (float)(s0 * p[i + 1] + cum);
        }
        s_layer[h] = sh[C - 1];
    }
    __syncthreads();
    size_t total = (size_t)C * (size_t)dv;
    for (size_t t = threadIdx.x; t < total; t += blockDim.x) {
        int i = (int)(t / (size_t)dv), e = (int)(t % (size_t)dv);
        o[((size_t)i * (size_t)H + (size_t)h) * (size_t)dv + (size_t)e] *= 1.0f / sqrtf(sh[i]);
    }
}

void rk_ts_chunk(cudaStream_t st, float *o, rk_states S, int slot, const float *pw, float *sums,
                 int H, int C, int dv)
{
    float *s_layer = S.base + (size_t)slot * S.slot_stride + S.layer_off + S.s_off;
    ts_chunk_kernel<<<(unsigned)H, BLOCK, 0, st>>>(o, s_layer, pw, sums, H, C, dv);
}

/* ---------------------------------------------------------- elementwise */

__global__ void act_kernel(float *x, size_t n, int act)
{
    for (size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x; t < n;
         t += (size_t)gridDim.x * blockDim.x)
        x[t] = rn_act_apply(act, x[t]);
}

void rk_act(cudaStream_t st, float *x, size_t n, int act)
{
    act_kernel<<<blocks_for(n), BLOCK, 0, st>>>(x, n, act);
}

__global__ void glu_kernel(float *up, const float *gate, size_t n, int act)
{
    for (size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x; t < n;
         t += (size_t)gridDim.x * blockDim.x)
        up[t] *= rn_act_apply(act, gate[t]);
}

void rk_glu(cudaStream_t st, float *up, const float *gate, size_t n, int act)
{
    glu_kernel<<<blocks_for(n), BLOCK, 0, st>>>(up, gate, n, act);
}

__global__ void residual_kernel(float *x, const float *y, size_t n, float alpha)
{
    for (size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x; t < n;
         t += (size_t)gridDim.x * blockDim.x)
        x[t] = x[t] * alpha + y[t];
}

void rk_residual(cudaStream_t st, float *x, const float *y, size_t n, float alpha)
{
    residual_kernel<<<blocks_for(n), BLOCK, 0, st>>>(x, y, n, alpha);
}

__global__ void add_bias_kernel(float *y, const float *b, int rows, int cols)
{
    size_t total = (size_t)rows * (size_t)cols;
    for (size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x; t < total;
         t += (size_t)gridDim.x * blockDim.x)
        y[t] += b[t % (size_t)cols];
}

void rk_add_bias(cudaStream_t st, float *y, const float *b, int rows, int cols)
{
    add_bias_kernel<<<blocks_for((size_t)rows * (size_t)cols), BLOCK, 0, st>>>(y, b, rows, cols);
}

__global__ void to_half_kernel(void *dst, const float *src, size_t n, int t)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        if (t == RN_DT_BF16)
            ((__nv_bfloat16 *)dst)[i] = __float2bfloat16_rn(src[i]);
        else
            ((__half *)dst)[i] = __float2half_rn(src[i]);
    }
}

void rk_to_half(cudaStream_t st, void *dst, const float *src, size_t n, int t)
{
    to_half_kernel<<<blocks_for(n), BLOCK, 0, st>>>(dst, src, n, t);
}

/* ------------------------------------------------------------------ GEMV */

/* 16 bytes of weights (8 halves or 4 floats) as fp32. */
template <typename T> struct wvec;
template <> struct wvec<float> {
    static constexpr int N = 4;
    __device__ static void load(const float *p, float *f)
    {
        float4 v = __ldg((const float4 *)p);
        f[0] = v.x, f[1] = v.y, f[2] = v.z, f[3] = v.w;
    }
};
template <> struct wvec<__nv_bfloat16> {
    static constexpr int N = 8;
    __device__ static void load(const __nv_bfloat16 *p, float *f)
    {
        uint4 v = __ldg((const uint4 *)p);
        const __nv_bfloat162 *h = (const __nv_bfloat162 *)&v;
        for (int i = 0; i < 4; i++) {
            float2 t = __bfloat1622float2(h[i]);
            f[2 * i] = t.x, f[2 * i + 1] = t.y;
        }
    }
};
template <> struct wvec<__half> {
    static constexpr int N = 8;
    __device__ static void load(const __half *p, float *f)
    {
        uint4 v = __ldg((const uint4 *)p);
        const __half2 *h = (const __half2 *)&v;
        for (int i = 0; i < 4; i++) {
            float2 t = __half22float2(h[i]);
            f[2 * i] = t.x, f[2 * i + 1] = t.y;
        }
    }
};

__device__ static inline float to_f32(float v)
{
    return v;
}
__device__ static inline float to_f32(__nv_bfloat16 v)
{
    return __bfloat162float(v);
}
__device__ static inline float to_f32(__half v)
{
    return __half2float(v);
}

/* One warp per output row: the row is streamed once with 16-byte loads and
 * multiplied into all NB inputs (x rows stay in L1/L2). */
template <typename T, int NB, bool VEC>
__global__ void gemv_kernel(float *y, const T *W, const float *bias, const float *x, int out,
                            int in)
{
    int row = (int)((blockIdx.x * blockDim.x + threadIdx.x) / 32), lane = (int)threadIdx.x % 32;
    if (row >= out)
        return;
    const T *w = W + (size_t)row * (size_t)in;
    float acc[NB];
    for (int b = 0; b < NB; b++)
        acc[b] = 0.0f;
    if (VEC) {
        constexpr int N = wvec<T>::N;
        for (int i = lane * N; i < in; i += 32 * N) {
            float f[N];
            wvec<T>::load(w + i, f);
            for (int b = 0; b < NB; b++) {
                const float *xb = x + (size_t)b * (size_t)in + (size_t)i;
                for (int u = 0; u < N; u++)
                    acc[b] += f[u] * xb[u];
            }
        }
    } else {
        for (int i = lane; i < in; i += 32) {
            float f = to_f32(w[i]);
            for (int b = 0; b < NB; b++)
                acc[b] += f * x[(size_t)b * (size_t)in + (size_t)i];
        }
    }
    for (int b = 0; b < NB; b++) {
        float s = acc[b];
        for (int o = 16; o > 0; o >>= 1)
            s += __shfl_xor_sync(0xffffffffu, s, o);
        if (lane == 0)
            y[(size_t)b * (size_t)out + (size_t)row] = s + (bias ? bias[row] : 0.0f);
    }
}

template <typename T, int NB>
static void gemv_launch(cudaStream_t st, float *y, const void *W, const float *bias, const float *x,
                        int out, int in)
{
    unsigned blocks = (unsigned)(((size_t)out * 32 + BLOCK - 1) / BLOCK);
    if (in % wvec<T>::N == 0)
        gemv_kernel<T, NB, true><<<blocks, BLOCK, 0, st>>>(y, (const T *)W, bias, x, out, in);
    else
        gemv_kernel<T, NB, false><<<blocks, BLOCK, 0, st>>>(y, (const T *)W, bias, x, out, in);
}

template <typename T>
static void gemv_dispatch(cudaStream_t st, float *y, const void *W, const float *bias,
                          const float *x, int n, int out, int in)
{
    switch (n) {
    case 1:
        gemv_launch<T, 1>(st, y, W, bias, x, out, in);
        break;
    case 2:
        gemv_launch<T, 2>(st, y, W, bias, x, out, in);
        break;
    case 3:
        gemv_launch<T, 3>(st, y, W, bias, x, out, in);
        break;
    case 4:
        gemv_launch<T, 4>(st, y, W, bias, x, out, in);
        break;
    case 5:
        gemv_launch<T, 5>(st, y, W, bias, x, out, in);
        break;
    case 6:
        gemv_launch<T, 6>(st, y, W, bias, x, out, in);
        break;
    case 7:
        gemv_launch<T, 7>(st, y, W, bias, x, out, in);
        break;
    default:
        gemv_launch<T, 8>(st, y, W, bias, x, out, in);
        break;
    }
}

void rk_gemv(cudaStream_t st, float *y, const void *W, int t, const float *bias, const float *x,
             int n, int out, int in)
{
    static_assert(RN_CUDA_GEMV_MAX == 8, "gemv_dispatch instantiates batches 1..8");
    if (t == RN_DT_BF16)
        gemv_dispatch<__nv_bfloat16>(st, y, W, bias, x, n, out, in);
    else if (t == RN_DT_F16)
        gemv_dispatch<__half>(st, y, W, bias, x, n, out, in);
    else
        gemv_dispatch<float>(st, y, W, bias, x, n, out, in);
}

/* ------------------------------------------------------------------ copy */

__global__ void copy_kernel(uint4 *dst, const uint4 *src, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dst[i] = src[i];
}

void rk_copy(cudaStream_t st, void *dst, const void *src, size_t n)
{
    size_t v = n / sizeof(uint4);
    copy_kernel<<<blocks_for(v, BLOCK * 8), BLOCK, 0, st>>>((uint4 *)dst, (const uint4 *)src, v);
}
