/* The weight-streaming GEMVs of decode steps (rk_gemv_multi): the row
 * pairs of a set's jobs, their folded stores (gemv_store), gemv_kernel,
 * gemv_split_kernel and gemv_norm_kernel, which forms the input rows' pre-norm
 * itself.
 *
 * Included by kernels.cu after the CUDA headers, rn_math.h, the
 * dependent-launch helpers and norm_dev.cuh, and by the unit tests'
 * emulation of CUDA (tests/unit/cuda_emu.h, RN_CUDA_EMU), which runs the
 * split GEMV after norm_vec_kernel and gemv_norm_kernel on the same rows
 * and holds them to the same bits (tests/unit/gemv_emu.cc). */
#ifndef RN_CUDA_GEMV_DEV_CUH
#define RN_CUDA_GEMV_DEV_CUH

#include "norm_dev.cuh"
#include "rk_gemv.h"

/* 16 bytes of weights (8 halves or 4 floats): fetched raw, with the
 * streaming hint (each weight is read once per step, and should not push the
 * reused input rows out of L1), and unpacked to fp32 where used. */
template <typename T> struct wvec;
template <> struct wvec<float> {
    static constexpr int N = 4;
    typedef float4 raw;
    __device__ static raw fetch(const float *p)
    {
        return __ldcs((const float4 *)p);
    }
    __device__ static void unpack(const raw &v, float *f)
    {
        f[0] = v.x, f[1] = v.y, f[2] = v.z, f[3] = v.w;
    }
};
/* A pair of 16-bit values widened to fp32. */
__device__ static inline float2 pair_f32(__nv_bfloat162 h)
{
    return __bfloat1622float2(h);
}
__device__ static inline float2 pair_f32(__half2 h)
{
    return __half22float2(h);
}

/* wvec for a 16-bit type T whose pairs are T2. */
template <typename T, typename T2> struct wvec16 {
    static constexpr int N = 8;
    typedef uint4 raw;
    __device__ static raw fetch(const T *p)
    {
        return __ldcs((const uint4 *)p);
    }
    __device__ static void unpack(const raw &v, float *f)
    {
        const T2 *h = (const T2 *)&v;
        for (int i = 0; i < 4; i++) {
            float2 t = pair_f32(h[i]);
            f[2 * i] = t.x, f[2 * i + 1] = t.y;
        }
    }
};
template <> struct wvec<__nv_bfloat16> : wvec16<__nv_bfloat16, __nv_bfloat162> {
};
template <> struct wvec<__half> : wvec16<__half, __half2> {
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

/* xs[u] = x[i .. i+N) as fp32 (N = 8 or 4, 16-byte aligned). */
template <int N> __device__ static inline void load_x(const float *x, float *xs)
{
    const float4 *p = (const float4 *)x;
    for (int j = 0; j < N / 4; j++) {
        float4 t = p[j];
        xs[4 * j] = t.x, xs[4 * j + 1] = t.y, xs[4 * j + 2] = t.z, xs[4 * j + 3] = t.w;
    }
}

/* A warp computes PW row pairs (gemv_pairs): every x value it loads serves
 * 2 PW weight rows, and a pair is what the folded stores need (the two
 * features one rotary angle turns, an up row and its gate).  One pair per
 * warp up to 2 input rows, two from 3: at 8 input rows and one pair, x's
 * loads from L1 outnumbered the weights' 8 to 1 and bounded the kernel. */
#define GEMV_PW(NB) ((NB) >= 3 ? 2 : 1)
/* 16-byte weight loads in flight per lane (4 KiB per warp), over its rows. */
#define GEMV_LOADS 8
#define GEMV_BLOCK 128

/* Row pairs of a job: plain rows go (0,1), (2,3), ...; rotary rows pair the
 * two features of each angle; GLU pairs row j of the up matrix with row j
 * of the gate. */
__host__ __device__ static inline int gemv_pairs(const rk_gemv_job &j)
{
    return j.kind == RK_JOB_GLU ? j.out : j.kind == RK_JOB_ROPE ? j.out / 2 : (j.out + 1) / 2;
}

/* One row pair: its job, rows ra and rb (rb absent for an odd plain job's
 * last row), and for rotary the features ia, ib within the head. */
struct gemv_pair {
    int m, ra, rb, has_b, ia, ib;
};

/* The pair with index pair over the set's jobs; false past the last. */
__device__ static bool gemv_pair_of(const rk_gemv_set &set, int pair, gemv_pair &p)
{
    int m = 0;
    while (m < set.count && pair >= gemv_pairs(set.job[m]))
        pair -= gemv_pairs(set.job[m]), m++;
    if (m >= set.count)
        return false;
    const rk_gemv_job &jb = set.job[m];
    p.m = m, p.has_b = 1, p.ia = 0, p.ib = 0;
    if (jb.kind == RK_JOB_ROPE) {
        int half = set.dk / 2, h = pair / half, jj = pair % half;
        p.ia = set.interleaved ? 2 * jj : jj, p.ib = set.interleaved ? 2 * jj + 1 : jj + half;
        p.ra = h * set.dk + p.ia, p.rb = h * set.dk + p.ib;
    } else if (jb.kind == RK_JOB_GLU) {
        p.ra = p.rb = pair;
    } else {
        p.ra = 2 * pair, p.rb = p.ra + 1, p.has_b = p.rb < jb.out;
    }
    return true;
}

/* Stores one input row's results a (row ra) and b (row rb) of pair p:
 * bias, then what the separate kernels would do next, in their order and
 * with their float operations (rk_qk_prepare's scale and rotation, rk_glu,
 * rk_add_norm's residual add), so the folded step's bits equal the unfused
 * one's. */
__device__ static void gemv_store(const rk_gemv_set &set, const gemv_pair &p, int bi, float a,
                                  float b)
{
    const rk_gemv_job &j = set.job[p.m];
    float *y = j.y + (size_t)bi * (size_t)j.out;
    a += j.bias ? j.bias[p.ra] : 0.0f;
    if (j.kind == RK_JOB_GLU) {
        b += j.bias2 ? j.bias2[p.rb] : 0.0f;
        store_out(j.y, j.h, (size_t)bi * (size_t)j.out + (size_t)p.ra,
                  a * rn_act_apply(set.act, b));
        return;
    }
    if (p.has_b)
        b += j.bias ? j.bias[p.rb] : 0.0f;
    if (j.scale != 0.0f && j.scale != 1.0f) {
        a *= j.scale;
        b *= j.scale;
    }
    if (j.kind == RK_JOB_ROPE) {
        double aa = (double)rn_rope_angle((long long)set.pos[bi], set.freq[p.ia]);
        double ab = (double)rn_rope_angle((long long)set.pos[bi], set.freq[p.ib]);
        float ca = (float)cos(aa), sa = (float)sin(aa), cb = (float)cos(ab), sb = (float)sin(ab);
        rn_rope_rotate(&a, &b, ca, sa, cb, sb);
    }
    if (j.resid) {
        y[p.ra] = __fmaf_rn(y[p.ra], set.alpha, a);
        if (p.has_b)
            y[p.rb] = __fmaf_rn(y[p.rb], set.alpha, b);
        return;
    }
    y[p.ra] = a;
    if (p.has_b)
        y[p.rb] = b;
}

/* Weight loads of the warp's RW rows for columns i0 + u * 32 * N (those
 * past in are left alone). */
template <typename T, int RW, int U>
__device__ static inline void gemv_fetch(typename wvec<T>::raw (*f)[U], const T *const *w, int i0,
                                         int in)
{
    constexpr int N = wvec<T>::N;
#pragma unroll
    for (int r = 0; r < RW; r++)
#pragma unroll
        for (int u = 0; u < U; u++)
            if (i0 + u * 32 * N < in)
                f[r][u] = wvec<T>::fetch(w[r] + i0 + u * 32 * N);
}

/* The rows of work item `item` (PW row pairs: gemv_kernel's warp, or a
 * block of gemv_split_kernel's): the pairs p, whether each exists (live;
 * one past the end streams pair 0's rows again and stores nothing) and
 * their RW weight rows w.  False when the item's first pair is past the end. */
template <typename T, int PW>
__device__ static inline bool gemv_rows(const rk_gemv_set &set, int item, int in, gemv_pair *p,
                                        int *live, const T **w)
{
#pragma unroll
    for (int t = 0; t < PW; t++) {
        live[t] = gemv_pair_of(set, item * PW + t, p[t]);
        if (!live[t]) {
            if (t == 0)
                return false;
            p[t] = p[0];
        }
        const rk_gemv_job &jb = set.job[p[t].m];
        w[2 * t] = (const T *)jb.W + (size_t)p[t].ra * (size_t)in;
        w[2 * t + 1] = p[t].has_b ? (const T *)(jb.kind == RK_JOB_GLU ? jb.W2 : jb.W) +
                                        (size_t)p[t].rb * (size_t)in
                                  : w[2 * t]; /* an odd last row: read twice, stored once */
    }
    return true;
}

/* acc[r][b] += the weights f (RW rows, U 16-byte pieces from column i0,
 * 32 N apart, those before column end) times input row b (x rows in
 * wide), in column order. */
template <typename T, int NB, int RW, int U>
__device__ static inline void gemv_accumulate(float (*acc)[NB], const typename wvec<T>::raw (*f)[U],
                                              const float *x, int i0, int end, int in)
{
    constexpr int N = wvec<T>::N;
#pragma unroll
    for (int u = 0; u < U; u++) {
        int i = i0 + u * 32 * N;
        if (i >= end)
            break;
        float fw[RW][N];
#pragma unroll
        for (int r = 0; r < RW; r++)
            wvec<T>::unpack(f[r][u], fw[r]);
#pragma unroll
        for (int b = 0; b < NB; b++) {
            float xs[N];
            load_x<N>(x + (size_t)b * (size_t)in + (size_t)i, xs);
#pragma unroll
            for (int j = 0; j < N; j++)
#pragma unroll
                for (int r = 0; r < RW; r++)
                    acc[r][b] = __fmaf_rn(fw[r][j], xs[j], acc[r][b]);
        }
    }
}

/* acc (zeroed by the caller) += the weights w (RW rows) times the NB input
 * rows x (in wide) over this lane's columns from first (its first piece
 * already in f, fetched by the caller, which may have waited since)
 * before end, 32 N U apart: one share's sums, in column order.  The one
 * streaming loop of gemv_kernel, gemv_split_kernel and gemv_norm_kernel,
 * whose bits must agree. */
template <typename T, int NB, int RW, int U>
__device__ static inline void gemv_stream(float (*acc)[NB], typename wvec<T>::raw (*f)[U],
                                          const T *const *w, const float *x, int first, int end,
                                          int in)
{
    constexpr int N = wvec<T>::N;
    for (int i0 = first; i0 < end; i0 += 32 * N * U) {
        if (i0 != first)
            gemv_fetch<T, RW, U>(f, w, i0, end);
        gemv_accumulate<T, NB, RW, U>(acc, f, x, i0, end, in);
    }
}

/* The warp's sums of pair t's rows for input row b (xor tree: every lane
 * gets them). */
template <int NB>
__device__ static inline void gemv_warp_sums(float (*acc)[NB], int t, int b, float &s0, float &s1)
{
    s0 = acc[2 * t][b], s1 = acc[2 * t + 1][b];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        s0 += __shfl_xor_sync(0xffffffffu, s0, o);
        s1 += __shfl_xor_sync(0xffffffffu, s1, o);
    }
}

/* The warp's sums of acc, stored by lane b for input row b of each live
 * pair. */
template <int PW, int NB>
__device__ static inline void gemv_finish(const rk_gemv_set &set, const gemv_pair *p,
                                          const int *live, float (*acc)[NB], int lane)
{
#pragma unroll
    for (int t = 0; t < PW; t++)
#pragma unroll
        for (int b = 0; b < NB; b++) {
            float s0, s1;
            gemv_warp_sums<NB>(acc, t, b, s0, s1);
            if (lane == b && live[t]) /* every lane holds the sums: one store each */
                gemv_store(set, p[t], b, s0, s1);
        }
}

/* One warp per PW row pairs of the set's jobs: the rows are streamed once,
 * GEMV_LOADS 16-byte loads per lane in flight, and multiplied into all NB
 * inputs (x rows stay in L1).  Each output's sum runs in the same order
 * whatever NB and PW are (lane l takes columns l*N + 32*N*k, k rising), so
 * a sequence's bits do not depend on its batch.  The weights depend on no
 * earlier kernel: the first loads are issued before pdl_wait, so under
 * dependent launch they overlap the previous kernel.  x is written by that
 * kernel, which may still run when this one starts: it is read with plain
 * (coherent) loads, never the read-only path (no __restrict__). */
template <typename T, int NB, bool VEC>
__global__ void __launch_bounds__(GEMV_BLOCK) gemv_kernel(rk_gemv_set set, const float *x, int in)
{
    constexpr int PW = GEMV_PW(NB), RW = 2 * PW;
    pdl_trigger();
    int warp = (int)((blockIdx.x * blockDim.x + threadIdx.x) / 32), lane = (int)threadIdx.x % 32;
    gemv_pair p[PW];
    int live[PW];
    const T *w[RW];
    if (!gemv_rows<T, PW>(set, warp, in, p, live, w))
        return;
    float acc[RW][NB] = {};
    if (VEC) {
        constexpr int N = wvec<T>::N, U = GEMV_LOADS / RW;
        typename wvec<T>::raw f[RW][U];
        gemv_fetch<T, RW, U>(f, w, lane * N, in);
        pdl_wait();
        gemv_stream<T, NB, RW, U>(acc, f, w, x, lane * N, in, in);
    } else {
        pdl_wait();
        for (int i = lane; i < in; i += 32) {
            float fw[RW];
#pragma unroll
            for (int r = 0; r < RW; r++)
                fw[r] = to_f32(w[r][i]);
#pragma unroll
            for (int b = 0; b < NB; b++) {
                float xv = x[(size_t)b * (size_t)in + (size_t)i];
#pragma unroll
                for (int r = 0; r < RW; r++)
                    acc[r][b] = __fmaf_rn(fw[r], xv, acc[r][b]);
            }
        }
    }
    gemv_finish<PW, NB>(set, p, live, acc, lane);
}

/* Most warps (column shares) a block of gemv_split_kernel has. */
#define GEMV_SPLIT_WARPS 8

/* The warp's sums of acc (xor tree) for each pair and input row into
 * slots[share] (lane 0 writes, where put): the partial sums of one share
 * of an item's columns. */
template <int PW, int NB>
__device__ static inline void gemv_share_put(float (*slots)[PW][NB][2], int share, float (*acc)[NB],
                                             int lane, int put)
{
#pragma unroll
    for (int t = 0; t < PW; t++)
#pragma unroll
        for (int b = 0; b < NB; b++) {
            float s0, s1;
            gemv_warp_sums<NB>(acc, t, b, s0, s1);
            if (put && lane == 0)
                slots[share][t][b][0] = s0, slots[share][t][b][1] = s1;
        }
}

/* An item's outputs from the partial sums of its `shares` shares in
 * slots, added in share order (the split GEMV's bits), stored by lane b
 * for input row b of each live pair. */
template <int PW, int NB>
__device__ static inline void gemv_share_store(const rk_gemv_set &set, const gemv_pair *p,
                                               const int *live, float (*slots)[PW][NB][2],
                                               int shares, int lane)
{
#pragma unroll
    for (int t = 0; t < PW; t++)
#pragma unroll
        for (int b = 0; b < NB; b++) {
            float s0 = slots[0][t][b][0], s1 = slots[0][t][b][1];
            for (int o = 1; o < shares; o++)
                s0 += slots[o][t][b][0], s1 += slots[o][t][b][1];
            if (lane == b && live[t])
                gemv_store(set, p[t], b, s0, s1);
        }
}

/* gemv_kernel with the input width split over a block's warps
 * (RETNET_CUDA_GEMV_SPLIT=cols, vector loads, widths of 2 to
 * GEMV_SPLIT_WARPS shares): a block per work item (gemv_kernel's PW row
 * pairs), warp s taking columns [s cols, (s + 1) cols), so each warp issues
 * its whole share of the rows at once instead of draining one round before
 * the next (at 1024 columns a share is one round of 16-byte loads per row
 * in bf16/fp16 at one row pair a warp, two in fp32).  On an H100
 * gemv_kernel moved a step's matrices at a rate that followed the loads in
 * flight per SM: 1.0-1.1 TB/s for the 2048-output ones (about 8 warps an
 * SM, 4 rounds each at 4096 inputs), 2.6 for the LM head (28 warps an
 * SM).  The warps' sums are added in warp
 * order, so the bits depend on the width and cols, not on the batch; they
 * are not gemv_kernel's (a different order of sums).  cols is a multiple
 * of 32, so every share starts 16-byte aligned. */
template <typename T, int NB>
__global__ void __launch_bounds__(32 * GEMV_SPLIT_WARPS)
    gemv_split_kernel(rk_gemv_set set, const float *x, int in, int cols)
{
    constexpr int PW = GEMV_PW(NB), RW = 2 * PW, N = wvec<T>::N, U = GEMV_LOADS / RW;
    __shared__ float part[GEMV_SPLIT_WARPS][PW][NB][2];
    pdl_trigger();
    int share = (int)threadIdx.x / 32, lane = (int)threadIdx.x % 32, shares = (int)blockDim.x / 32;
    gemv_pair p[PW];
    int live[PW];
    const T *w[RW];
    if (!gemv_rows<T, PW>(set, (int)blockIdx.x, in, p, live, w)) /* the whole block */
        return;
    int k0 = share * cols, k1 = min(in, k0 + cols);
    float acc[RW][NB] = {};
    typename wvec<T>::raw f[RW][U];
    gemv_fetch<T, RW, U>(f, w, k0 + lane * N, k1);
    pdl_wait();
    gemv_stream<T, NB, RW, U>(acc, f, w, x, k0 + lane * N, k1, in);
    gemv_share_put<PW, NB>(part, share, acc, lane, 1);
    __syncthreads();
    if (share == 0)
        gemv_share_store<PW, NB>(set, p, live, part, shares, lane);
}

/* Most row-pair items a block of gemv_norm_kernel streams side by side. */
#define GEMV_NORM_SLOTS 8
/* Warps of gemv_norm_kernel's block, unless the norm's row needs more. */
#define GEMV_NORM_WARPS 8
/* Most threads a block may have: rows of up to 4096 values (the norm's
 * 8 a thread), and room for 128 registers a thread, which the kernel
 * needs (capped at 64 for 1024 threads, it spilled). */
#define GEMV_NORM_MAX_THREADS 512

/* Rows of sums (64 doubles each, norm_vec_row's sh) gemv_norm_kernel
 * keeps: one per input row for a pre-norm, one per group its threads
 * normalise at once for a group norm (gemv_group_rows: at least a warp a
 * group). */
#define GEMV_NORM_GROUP_SH (GEMV_NORM_MAX_THREADS / 32)
__host__ __device__ static constexpr int gemv_norm_sh_rows(int nb, bool group)
{
    return group ? GEMV_NORM_GROUP_SH : nb;
}

/* Bytes of gemv_norm_kernel<*, NB, GROUP>'s static shared memory (gn_sh,
 * part), which count with the dynamic rows against a block's limit. */
__host__ __device__ static inline unsigned gemv_norm_static_smem(int nb, bool group)
{
    return (unsigned)(gemv_norm_sh_rows(nb, group) * 64 * sizeof(double) +
                      GEMV_NORM_SLOTS * GEMV_SPLIT_WARPS * GEMV_PW(nb) * nb * 2 * sizeof(float));
}

/* gemv_norm_kernel's threads for rows of in values: GEMV_NORM_WARPS warps,
 * or the threads norm_vec_kernel gives such a row (norm_vec_threads). */
static inline int gemv_norm_threads(int in)
{
    int t = norm_vec_threads(in);
    return t > 32 * GEMV_NORM_WARPS ? t : 32 * GEMV_NORM_WARPS;
}

/* Items a block of gemv_norm_kernel takes at once: one per `shares` warps
 * (shares = the input width's column shares), at most GEMV_NORM_SLOTS. */
__host__ __device__ static inline int gemv_norm_slots(int threads, int shares)
{
    int s = threads / 32 / shares;
    return s > GEMV_NORM_SLOTS ? GEMV_NORM_SLOTS : s;
}

/* The group norm nm (group > 0) of the NB rows of in values whose parts
 * are at xraw, into rows (shared memory): each group one row of
 * norm_vec_kernel as rk_norm_parts launches it -- norm_vec_row with its
 * thread layout, the parts summed into the output first -- so the same
 * values.  The block's threads take threads / per groups at a time, each
 * with its own sums sh[]; a barrier ends every round, so no group's sums
 * are written while another round still reads them.  threads must be a
 * multiple of per (rk_gemv_norm_fits). */
template <int NB>
__device__ static void gemv_group_rows(float *rows, const float *xraw, int in,
                                       const rk_gemv_norm &nm, double (*sh)[64], int tid,
                                       int threads)
{
    int per = norm_vec_threads(nm.group), at_once = threads / per, slot = tid / per;
    int groups = NB * (in / nm.group), parts = nm.parts > 1 ? nm.parts : 1;
    for (int g0 = 0; g0 < groups; g0 += at_once) {
        int g = g0 + slot;
        int live = g < groups;
        float *sink = parts > 1 ? rows : NULL; /* the parts' sum, as rk_norm_parts writes it */
        norm_vec_row((size_t)g, live, tid % per, per, rows, xraw, nm.group, nm.layer_kind, nm.w,
                     nm.b, nm.eps, nm.gate, nm.act, parts, nm.part_stride, NULL, 1.0f, sink,
                     rk_half(), sh[slot]);
        __syncthreads();
    }
}

/* gemv_split_kernel reading the norm of its input rows, which it forms
 * itself, so a decode step needs no norm launch before the q/k/v/g, the
 * up/gate and the LM head projections (RETNET_CUDA_GEMV_PRENORM), nor with
 * GROUP between the recurrent step and the output projection
 * (RETNET_CUDA_GEMV_GROUPNORM: the retention's group norm and gate, from
 * the step's partial read-outs; gemv_group_rows).  Every
 * block normalises the NB raw rows xraw with norm_vec_row -- the thread
 * layout and operations of norm_vec_kernel, so the same values -- into
 * shared memory, then streams items (gemv_split_kernel's blocks: PW row
 * pairs, each warp of an item one share of cols columns) item after item,
 * `slots` side by side, the next item's first weights fetched while the
 * current one's sums meet.  Every output's sum runs in gemv_split_kernel's
 * order, so the bits are those of norm_vec_kernel then gemv_split_kernel.
 * The blocks stay resident and each reads the rows once (n_items items in
 * all): a block per item would read them as often as the weights.  The
 * first item's weights are fetched before pdl_wait, as the other GEMVs do.
 * Dynamic shared memory: NB x in floats.  The launch bounds name one block
 * an SM: with that hint ptxas gives one bf16 row 101 registers, the
 * allocation the H100 runs were measured with (99 without it). */
template <typename T, int NB, bool GROUP>
__global__ void __launch_bounds__(GEMV_NORM_MAX_THREADS, 1)
    gemv_norm_kernel(rk_gemv_set set, const float *xraw, int in, int cols, rk_gemv_norm nm,
                     int n_items)
{
    constexpr int PW = GEMV_PW(NB), RW = 2 * PW, N = wvec<T>::N, U = GEMV_LOADS / RW;
#ifdef RN_CUDA_EMU
    float *gn_rows = (float *)rn_emu_dynamic_smem(); /* NB x in, normalised */
#else
    extern __shared__ float gn_rows[]; /* NB x in, normalised */
#endif
    __shared__ double gn_sh[gemv_norm_sh_rows(NB, GROUP)][64]; /* gemv_norm_static_smem bytes
                                                                   * with part */
    __shared__ float part[GEMV_NORM_SLOTS][GEMV_SPLIT_WARPS][PW][NB][2];
    pdl_trigger();
    int tid = (int)threadIdx.x, lane = tid % 32, warp = tid / 32;
    int shares = (in + cols - 1) / cols, slots = gemv_norm_slots((int)blockDim.x, shares);
    int slot = warp / shares, share = warp % shares, busy = slot < slots;
    int k0 = share * cols, k1 = min(in, k0 + cols), stride = (int)gridDim.x * slots;
    int rounds = (n_items + stride - 1) / stride; /* the same for every thread: barriers */
    gemv_pair p[PW] = {}, pn[PW] = {};
    int live[PW] = {}, liven[PW] = {};
    const T *w[RW];
    typename wvec<T>::raw f[RW][U];
    int item = (int)blockIdx.x * slots + slot;
    int have = busy && gemv_rows<T, PW>(set, item, in, p, live, w);
    if (have)
        gemv_fetch<T, RW, U>(f, w, k0 + lane * N, k1);
    pdl_wait();
    if (GROUP) {
        gemv_group_rows<NB>(gn_rows, xraw, in, nm, gn_sh, tid, (int)blockDim.x);
    } else {
        int nthr = norm_vec_threads(in);
        for (int b = 0; b < NB; b++)
            norm_vec_row((size_t)b, tid < nthr, tid, nthr, gn_rows, xraw, in, nm.layer_kind, nm.w,
                         nm.b, nm.eps, NULL, 0, 1, 0, NULL, 1.0f, NULL, rk_half(), gn_sh[b]);
        __syncthreads();
    }
    for (int r = 0; r < rounds; r++) {
        float acc[RW][NB] = {};
        if (have)
            gemv_stream<T, NB, RW, U>(acc, f, w, gn_rows, k0 + lane * N, k1, in);
        /* the next item's first weights, in flight while these sums meet */
        int next = item + stride;
        int have_next = busy && r + 1 < rounds && gemv_rows<T, PW>(set, next, in, pn, liven, w);
        if (have_next)
            gemv_fetch<T, RW, U>(f, w, k0 + lane * N, k1);
        gemv_share_put<PW, NB>(part[slot], share, acc, lane, have);
        __syncthreads();
        if (have && share == 0)
            gemv_share_store<PW, NB>(set, p, live, part[slot], shares, lane);
        __syncthreads(); /* part is written again next round */
        item = next, have = have_next;
#pragma unroll
        for (int t = 0; t < PW; t++)
            p[t] = pn[t], live[t] = liven[t];
    }
}

#endif
