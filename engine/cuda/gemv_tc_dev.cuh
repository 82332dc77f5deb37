/* The tensor-core GEMV of decode batches (rk_gemv_tc): gemv_tc_kernel,
 * which streams the weights through registers, and gemv_tc_async_kernel,
 * which streams the same pieces through a ring of cp.async stages in
 * shared memory (RETNET_CUDA_TC_ASYNC) so more of them are in flight
 * without registers to hold them.  Both multiply the same fragments in the
 * same order, so their bits are the same.  gemv_tc_stream_kernel
 * (RETNET_CUDA_TC_STREAM) multiplies them too, in a stream-K grid: each
 * warp an even run of the whole launch's work.
 *
 * Included by kernels.cu after the CUDA headers, rn_math.h, the
 * dependent-launch helpers and gemv_dev.cuh, and by the unit tests'
 * emulation of CUDA (tests/unit/cuda_emu.h, RN_CUDA_EMU), which runs both
 * kernels on exact small-integer products and holds them to the same bits
 * and to the exact sums (tests/unit/gemv_tc_emu.cc). */
#ifndef RN_CUDA_GEMV_TC_DEV_CUH
#define RN_CUDA_GEMV_TC_DEV_CUH

#include <type_traits>

#include "gemv_dev.cuh"
#include "mma_dev.cuh"
#include "tc_layout.h"

extern "C" {
#include "plan.h"
}

/* mma.m16n8k16 with fp32 accumulation for the weights' 16-bit type T (the
 * input rows come in T too: the same two values per 32-bit word, the lower
 * k in the low half, as the fragments hold them). */
template <typename T> struct tc_op;
template <> struct tc_op<__nv_bfloat16> {
    __device__ static void mma(float *d, const uint32_t *a, const uint32_t *b)
    {
        rn_mma_bf16(d, a, b);
    }
};
template <> struct tc_op<__half> {
    __device__ static void mma(float *d, const uint32_t *a, const uint32_t *b)
    {
        rn_mma_f16(d, a, b);
    }
};

/* 16-byte weight loads in flight per lane, over its 2 NT weight rows: a
 * warp keeps 4 KiB in flight, as gemv_dev.cuh's GEMVs do (the register
 * kernel's L); RETNET_CUDA_TC_LOADS=16 doubles that for one m-tile and one
 * pair group (rk_tc_opts.loads, gemv_tc_launch).  A stage of the async
 * kernel's ring holds one round of TC_LOADS pieces a lane. */
#define TC_LOADS 8

/* Most warps a block of MT m-tiles and NT pair groups has: the reduction's
 * shared memory (MT NT KiB a warp) held to 32 KiB. */
__host__ __device__ constexpr int tc_max_warps(int mt, int nt)
{
    return 32 / (mt * nt) < RN_CUDA_TC_WARPS_MAX ? 32 / (mt * nt) : RN_CUDA_TC_WARPS_MAX;
}

#ifdef RN_CUDA_EMU
#define TC_DYNAMIC_SMEM(name) unsigned char *name = rn_emu_dynamic_smem()
#else
#define TC_DYNAMIC_SMEM(name) extern __shared__ __align__(16) unsigned char name[]
#endif

__device__ static inline uint32_t word_of(const uint4 &v, int w)
{
    return w == 0 ? v.x : w == 1 ? v.y : w == 2 ? v.z : v.w;
}

/* The lane's weight rows: w[nt][tile] is pair group nt's row for tile
 * (0: each pair's ra, 1: its rb) at the block's pairs from first, NULL
 * where the set has no such row. */
template <typename T, int NT>
__device__ static inline void tc_rows(const T *(*w)[2], const rk_gemv_set &set, int first, int g,
                                      int in)
{
#pragma unroll
    for (int nt = 0; nt < NT; nt++) {
        gemv_pair p;
        w[nt][0] = w[nt][1] = NULL;
        if (gemv_pair_of(set, first + nt * 8 + g, p)) {
            const rk_gemv_job &jb = set.job[p.m];
            w[nt][0] = (const T *)jb.W + (size_t)p.ra * (size_t)in;
            if (p.has_b)
                w[nt][1] =
                    (const T *)(jb.kind == RK_JOB_GLU ? jb.W2 : jb.W) + (size_t)p.rb * (size_t)in;
        }
    }
}

/* piece(nt, tile, u, k, live) for each of the lane's 16-byte pieces of its
 * weight rows (w[nt][tile]) for the R blocks from kb: the piece starts at
 * w[nt][tile] + k, and is live unless past k1 (the warp's share of k) or
 * of an absent row. */
template <typename T, int NT, int R, typename F>
__device__ static inline void tc_pieces(const T *const (*w)[2], int kb, int k1, int lk, F piece)
{
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
        for (int tile = 0; tile < 2; tile++)
#pragma unroll
            for (int u = 0; u < R; u++) {
                int k = kb + u * RN_TC_KBLOCK + lk;
                piece(nt, tile, u, k, w[nt][tile] && k < k1);
            }
}

/* The lane's pieces (tc_pieces) for the R blocks from kb, zeros where
 * they are not live. */
template <typename T, int NT, int R>
__device__ static inline void tc_fetch(uint4 (*f)[2][R], const T *const (*w)[2], int kb, int k1,
                                       int lk)
{
    tc_pieces<T, NT, R>(w, kb, k1, lk, [&](int nt, int tile, int u, int k, bool live) {
        f[nt][tile][u] = live ? wvec<T>::fetch(w[nt][tile] + k) : make_uint4(0, 0, 0, 0);
    });
}

/* Where the lane's piece u of row (nt, tile) sits in a stage of the async
 * kernel's ring: [piece][lane] 16-byte slots, so a warp's 32 pieces of one
 * row and block are 512 contiguous bytes (no bank conflicts). */
template <int R> __host__ __device__ static inline int tc_slot(int nt, int tile, int u, int lane)
{
    return ((nt * 2 + tile) * R + u) * 32 + lane;
}

/* tc_fetch's pieces for the R blocks from kb, started as cp.async copies
 * into the stage (TC_LOADS slots a lane): a slot whose piece is not live
 * is zero-filled, reading nothing (src then points at any valid address, any).
 * The lane reads back only its own slots, so its own cp.async wait is all
 * the ordering it needs. */
template <typename T, int NT, int R>
__device__ static inline void tc_issue(uint4 *stage, const T *const (*w)[2], int kb, int k1, int lk,
                                       int lane, const void *any)
{
    tc_pieces<T, NT, R>(w, kb, k1, lk, [&](int nt, int tile, int u, int k, bool live) {
        rn_cp_async16_zfill(&stage[tc_slot<R>(nt, tile, u, lane)],
                            live ? (const void *)(w[nt][tile] + k) : any, live ? 16 : 0);
    });
}

/* One round of the tensor-core GEMV's main loop: the R 32-k blocks from kb
 * of the weights wf(nt, tile, u) (the lane's 16 bytes: tc_fetch's, from
 * registers or the ring) times the input rows, into acc.  The input rows
 * (g + 8 h) are read here, 16 bytes per row and block. */
template <typename T, int MT, int NT, int R, typename WF>
__device__ static inline void tc_round(float (*acc)[NT][2][4], WF wf, const T *xh, int n, int in,
                                       int kb, int k1, int lk, int g)
{
#pragma unroll
    for (int u = 0; u < R; u++) {
        int k = kb + u * RN_TC_KBLOCK + lk;
        uint4 xw[2 * MT]; /* input rows g + 8 h, 8 values at k */
#pragma unroll
        for (int h = 0; h < 2 * MT; h++) {
            int row = g + 8 * h;
            xw[h] = k < k1 && row < n ? *(const uint4 *)(xh + (size_t)row * (size_t)in + (size_t)k)
                                      : make_uint4(0, 0, 0, 0);
        }
#pragma unroll
        for (int s = 0; s < 2; s++)
#pragma unroll
            for (int mt = 0; mt < MT; mt++) {
                uint32_t a[4];
#pragma unroll
                for (int r = 0; r < 4; r++)
                    a[r] = word_of(xw[2 * mt + rn_tc_a_rowblk(r)], rn_tc_word(s, rn_tc_a_half(r)));
#pragma unroll
                for (int nt = 0; nt < NT; nt++)
#pragma unroll
                    for (int tile = 0; tile < 2; tile++) {
                        uint4 f = wf(nt, tile, u);
                        uint32_t b[2] = {word_of(f, rn_tc_word(s, 0)),
                                         word_of(f, rn_tc_word(s, 1))};
                        tc_op<T>::mma(acc[mt][nt][tile], a, b);
                    }
            }
    }
}

/* A warp's sums acc of the pair groups from pair first, stored by
 * gemv_store: each lane its C positions, rows past n left alone. */
template <int MT, int NT>
__device__ static inline void tc_store(const rk_gemv_set &set, float (*acc)[NT][2][4], int lane,
                                       int n, int first)
{
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int j = 0; j < 4; j++) {
                int row = 16 * mt + rn_tc_c_row(lane, j);
                gemv_pair q;
                if (row < n && gemv_pair_of(set, first + nt * 8 + rn_tc_c_col(lane, j), q))
                    gemv_store(set, q, row, acc[mt][nt][0][j], acc[mt][nt][1][j]);
            }
}

/* The end of both kernels: the warps' sums added in warp order through
 * part (warps x MT NT 8 x 32 floats, when warps > 1; warp 0 goes on alone)
 * and stored by tc_store. */
template <typename T, int MT, int NT>
__device__ static inline void tc_finish(const rk_gemv_set &set, float (*acc)[NT][2][4], float *part,
                                        int warp, int warps, int lane, int n, int first)
{
    constexpr int V = MT * NT * 8; /* accumulators per lane */
    if (warps > 1) {               /* value v: acc[v / (8 NT)][v / 8 % NT][v / 4 % 2][v % 4] */
#pragma unroll
        for (int v = 0; v < V; v++)
            part[((size_t)warp * V + (size_t)v) * 32 + (size_t)lane] =
                acc[v / (8 * NT)][v / 8 % NT][v / 4 % 2][v % 4];
        __syncthreads();
        if (warp != 0)
            return;
#pragma unroll
        for (int v = 0; v < V; v++) {
            float sum = part[(size_t)v * 32 + (size_t)lane];
            for (int o = 1; o < warps; o++)
                sum += part[((size_t)o * V + (size_t)v) * 32 + (size_t)lane];
            acc[v / (8 * NT)][v / 8 % NT][v / 4 % 2][v % 4] = sum;
        }
    }
    tc_store<MT, NT>(set, acc, lane, n, first);
}

/* rk_gemv_multi on the tensor cores.  A block owns 8 NT row pairs of the
 * set, in NT groups of 8: tile 0 holds each pair's row ra, tile 1 its rb,
 * so a lane's two results at one C position are a pair, as gemv_store
 * takes them.  Its warps split the input width (kpw each) and stream their
 * share of those weight rows once; the input rows (T, 16 per m-tile, MT
 * m-tiles) are read in the same 16-byte pieces and serve every tile.  The
 * warps' parts are summed in warp order, so the bits depend on the input
 * width and the launch shape, never on n within one MT.  Fragment positions:
 * tc_layout.h.  PDL as gemv_kernel: the first weight loads go out before
 * pdl_wait; the input rows are read after it, with plain loads.  Dynamic
 * shared memory: tc_finish's part. */
template <typename T, int MT, int NT, int L>
__global__ void __launch_bounds__(32 * tc_max_warps(MT, NT))
    gemv_tc_kernel(rk_gemv_set set, const T *xh, int n, int in, int kpw)
{
    constexpr int R = L / (2 * NT);     /* 32-k blocks per round */
    constexpr int S = RN_TC_KBLOCK * R; /* k per round */
    TC_DYNAMIC_SMEM(tc_part);
    pdl_trigger();
    int warp = (int)threadIdx.x / 32, lane = (int)threadIdx.x % 32, g = lane / 4;
    int warps = (int)blockDim.x / 32, first = (int)blockIdx.x * 8 * NT;
    const T *w[NT][2];
    tc_rows<T, NT>(w, set, first, g, in);
    int k0 = warp * kpw, k1 = min(in, k0 + kpw), lk = rn_tc_lane_k(lane);
    float acc[MT][NT][2][4] = {};
    uint4 f[NT][2][R];
    tc_fetch<T, NT, R>(f, w, k0, k1, lk);
    pdl_wait();
    for (int kb = k0; kb < k1; kb += S) {
        if (kb != k0)
            tc_fetch<T, NT, R>(f, w, kb, k1, lk);
        tc_round<T, MT, NT, R>(
            acc, [&](int nt, int tile, int u) { return f[nt][tile][u]; }, xh, n, in, kb, k1, lk, g);
    }
    tc_finish<T, MT, NT>(set, acc, (float *)tc_part, warp, warps, lane, n, first);
}

/* Bytes of one warp's stage of the async kernel's ring. */
#define TC_STAGE_BYTES (TC_LOADS * 16 * 32)

/* gemv_tc_kernel with the weights streamed through a ring of P stages (one
 * round of TC_LOADS pieces a lane each) in shared memory, a ring per warp:
 * P - 1 rounds are in flight while one is multiplied, and none of them
 * holds a register, so the warp's whole share of k (up to P rounds) can be
 * on its way at once.  The same pieces meet the same fragments in the
 * same order: the bits of gemv_tc_kernel at L = TC_LOADS.  The first P - 1
 * rounds go out before pdl_wait.  A lane reads only the slots its own
 * copies fill (tc_issue), and a stage is refilled only in the round after
 * the lane's last read of it, so the lane's cp.async waits are the only
 * ordering; tc_finish's part reuses the ring after a barrier.  Dynamic
 * shared memory: warps x P x TC_STAGE_BYTES (rn_cuda_tc_stages). */
template <typename T, int MT, int NT, int P>
__global__ void __launch_bounds__(32 * tc_max_warps(MT, NT))
    gemv_tc_async_kernel(rk_gemv_set set, const T *xh, int n, int in, int kpw)
{
    constexpr int R = TC_LOADS / (2 * NT); /* 32-k blocks per round */
    constexpr int S = RN_TC_KBLOCK * R;    /* k per round */
    constexpr int SLOTS = TC_LOADS * 32;   /* 16-byte slots of a stage */
    static_assert(P >= 2, "a stage is refilled only after the round that read it");
    TC_DYNAMIC_SMEM(tc_smem);
    pdl_trigger();
    int warp = (int)threadIdx.x / 32, lane = (int)threadIdx.x % 32, g = lane / 4;
    int warps = (int)blockDim.x / 32, first = (int)blockIdx.x * 8 * NT;
    uint4 *ring = (uint4 *)tc_smem + (size_t)warp * P * SLOTS;
    const T *w[NT][2];
    tc_rows<T, NT>(w, set, first, g, in);
    int k0 = warp * kpw, k1 = min(in, k0 + kpw), lk = rn_tc_lane_k(lane);
    int rounds = k1 > k0 ? (k1 - k0 + S - 1) / S : 0;
    float acc[MT][NT][2][4] = {};
    const void *any = set.job[0].W; /* a valid address for the zero-filled pieces */
    for (int r = 0; r < P - 1; r++) {
        if (r < rounds)
            tc_issue<T, NT, R>(ring + (size_t)r * SLOTS, w, k0 + r * S, k1, lk, lane, any);
        rn_cp_async_commit(); /* empty past the last round: the waits count groups */
    }
    pdl_wait();
    for (int r = 0; r < rounds; r++) {
        int ahead = r + P - 1;
        if (ahead < rounds)
            tc_issue<T, NT, R>(ring + (size_t)(ahead % P) * SLOTS, w, k0 + ahead * S, k1, lk, lane,
                               any);
        rn_cp_async_commit();
        rn_cp_async_wait<P - 1>(); /* round r's group */
        const uint4 *stage = ring + (size_t)(r % P) * SLOTS;
        tc_round<T, MT, NT, R>(
            acc, [&](int nt, int tile, int u) { return stage[tc_slot<R>(nt, tile, u, lane)]; }, xh,
            n, in, k0 + r * S, k1, lk, g);
    }
    rn_cp_async_wait<0>(); /* only empty groups are left; none outlives the kernel */
    if (warps > 1)
        __syncthreads(); /* part overlays the other warps' rings */
    tc_finish<T, MT, NT>(set, acc, (float *)tc_smem, warp, warps, lane, n, first);
}

/* What gemv_tc_stream_kernel takes besides the set: its plan
 * (rn_cuda_tc_stream_plan), the partial sums' slots (slots a warp, MT NT 8
 * x 32 floats each) and a counter a pair group, zero between launches (a
 * group's last warp puts its counter back). */
struct tc_stream_args {
    long long units;
    int kb, warps, slots;
    float *part;
    unsigned *count;
};

/* Slot j of warp w: its sums of the j-th group its run touches. */
template <int V>
__device__ static inline float *tc_stream_slot(const tc_stream_args &a, int w, int j)
{
    return a.part + ((size_t)w * (size_t)a.slots + (size_t)j) * V * 32;
}

/* Warp w's sums acc of pair group g (the g - g0-th its run touches): stored
 * at once where the group is the warp's alone; else left in the warp's
 * slot, and the group's last warp to count itself adds every one of the
 * group's slots in warp order -- the same order whichever warp comes last,
 * so the same bits -- and stores the sums.  Each lane's fence orders its
 * slot before the count, the last warp's orders the count before its reads
 * (L2 reads: other SMs wrote them). */
template <int MT, int NT>
__device__ static inline void tc_stream_settle(const rk_gemv_set &set, float (*acc)[NT][2][4],
                                               const tc_stream_args &a, int w, int g, int g0,
                                               int lane, int n)
{
    constexpr int V = MT * NT * 8;
    long long u0 = (long long)g * a.kb;
    int wf = rn_tc_stream_warp_of(a.units, a.warps, u0);
    int wl = rn_tc_stream_warp_of(a.units, a.warps, u0 + a.kb - 1);
    if (wf == wl) {
        tc_store<MT, NT>(set, acc, lane, n, g * 8 * NT);
        return;
    }
    float *mine = tc_stream_slot<V>(a, w, g - g0);
#pragma unroll
    for (int v = 0; v < V; v++)
        mine[v * 32 + lane] = acc[v / (8 * NT)][v / 8 % NT][v / 4 % 2][v % 4];
    __threadfence();
    __syncwarp();
    unsigned arrived = 0;
    if (lane == 0)
        arrived = atomicAdd(&a.count[g], 1u);
    arrived = __shfl_sync(0xffffffffu, arrived, 0);
    if (arrived != (unsigned)(wl - wf))
        return;
    __threadfence();
    __syncwarp();                       /* lane 0 saw the count: the others read after it */
    for (int o = wf; o <= wl; o += 2) { /* two slots' loads in flight, then their adds */
        float part[2][V];
#pragma unroll
        for (int h = 0; h < 2; h++) {
            if (o + h > wl)
                break;
            int j = g - (int)(rn_tc_stream_begin(a.units, a.warps, o + h) / a.kb);
            const float *p = tc_stream_slot<V>(a, o + h, j);
#pragma unroll
            for (int v = 0; v < V; v++)
                part[h][v] = __ldcg(p + v * 32 + lane);
        }
#pragma unroll
        for (int h = 0; h < 2; h++) {
            if (o + h > wl)
                break;
#pragma unroll
            for (int v = 0; v < V; v++) {
                float &sum = acc[v / (8 * NT)][v / 8 % NT][v / 4 % 2][v % 4];
                sum = o + h == wf ? part[h][v] : sum + part[h][v];
            }
        }
    }
    if (lane == 0)
        a.count[g] = 0; /* all of the group's warps have counted */
    tc_store<MT, NT>(set, acc, lane, n, g * 8 * NT);
}

/* rk_gemv_multi on the tensor cores, stream-K (RETNET_CUDA_TC_STREAM): as
 * many warps as the SMs hold (rn_cuda_tc_stream_plan), warp w streaming
 * its run of units -- a pair group's rows by a 32-k block, group after
 * group -- in gemv_tc_kernel's rounds and fragments, and settling each
 * group's part (tc_stream_settle).  No block has a barrier and no warp
 * waits on another, so every SM streams from the first unit to the last,
 * where gemv_tc_kernel's grid of whole groups can leave a partial second
 * wave (384 blocks on the 264 two an SM of an H100 hold, for the 1.3B
 * q/k/v/g at 16 rows).  The next group's first round is in flight while a
 * part settles, the first one before pdl_wait.  The runs split a group's k
 * where the plan puts them, not evenly as gemv_tc_kernel's warps do: other
 * bits than it, the same for every n up to 32 (one NT).  Two blocks an SM
 * hold the plan's 16 warps: 125 registers a thread for one m-tile (sm_90a),
 * 128 and 80 bytes of spill loads for two; four m-tiles (past 32 rows)
 * would spill 800 bytes in the loop at that bound, so they take 218
 * registers and run the plan's grid in two waves. */
template <typename T, int MT, int NT>
__global__ void __launch_bounds__(32 * RN_CUDA_TC_STREAM_BLOCK_WARPS, MT < 4 ? 2 : 1)
    gemv_tc_stream_kernel(rk_gemv_set set, const T *xh, int n, int in, tc_stream_args a)
{
    constexpr int R = TC_LOADS / (2 * NT); /* 32-k blocks per round */
    constexpr int S = RN_TC_KBLOCK * R;    /* k per round */
    pdl_trigger();
    int lane = (int)threadIdx.x % 32, g8 = lane / 4, lk = rn_tc_lane_k(lane);
    int w = (int)blockIdx.x * ((int)blockDim.x / 32) + (int)threadIdx.x / 32;
    if (w >= a.warps)
        return;
    long long end = rn_tc_stream_begin(a.units, a.warps, w + 1);
    long long at = rn_tc_stream_begin(a.units, a.warps, w);
    int g0 = (int)(at / a.kb), g = g0;
    /* group g's part of the run: its units from `at` to `stop`, k0 to k1 */
    long long stop = end < (long long)(g + 1) * a.kb ? end : (long long)(g + 1) * a.kb;
    int k0 = (int)(at - (long long)g * a.kb) * RN_TC_KBLOCK;
    int k1 = min(in, (int)(stop - (long long)g * a.kb) * RN_TC_KBLOCK);
    const T *wr[NT][2];
    uint4 f[NT][2][R];
    tc_rows<T, NT>(wr, set, g * 8 * NT, g8, in);
    tc_fetch<T, NT, R>(f, wr, k0, k1, lk);
    pdl_wait();
    for (;;) {
        float acc[MT][NT][2][4] = {};
        for (int kb = k0; kb < k1; kb += S) {
            if (kb != k0)
                tc_fetch<T, NT, R>(f, wr, kb, k1, lk);
            tc_round<T, MT, NT, R>(
                acc, [&](int nt, int tile, int u) { return f[nt][tile][u]; }, xh, n, in, kb, k1, lk,
                g8);
        }
        int done = g;
        bool more = stop < end;
        if (more) { /* the next group's first round */
            g++;
            stop = end < (long long)(g + 1) * a.kb ? end : (long long)(g + 1) * a.kb;
            k0 = 0, k1 = min(in, (int)(stop - (long long)g * a.kb) * RN_TC_KBLOCK);
            tc_rows<T, NT>(wr, set, g * 8 * NT, g8, in);
            tc_fetch<T, NT, R>(f, wr, k0, k1, lk);
        }
        tc_stream_settle<MT, NT>(set, acc, a, w, done, g0, lane, n);
        if (!more)
            break;
    }
}

/* f(std::integral_constant<int, p>()) for the ring's stages p (2..4). */
template <typename F> static void tc_with_stages(int p, F f)
{
    static_assert(RN_CUDA_TC_STAGES_MAX == 4, "an instance for each count of stages");
    if (p <= 2)
        f(std::integral_constant<int, 2>());
    else if (p == 3)
        f(std::integral_constant<int, 3>());
    else
        f(std::integral_constant<int, 4>());
}

/* f(MT, NT) as template arguments for n rows: MT from n (16 rows an
 * m-tile); NT = 2 (two groups of 8 pairs a block, each input piece loaded
 * serving twice the weights) when wide (rn_cuda_tc_groups gave 2: that
 * still gives every SM two blocks).  How the weights stream never changes
 * the shape, so never the bits. */
template <typename F> static void tc_with_shape(int n, int wide, F f)
{
    typedef std::integral_constant<int, 1> one;
    typedef std::integral_constant<int, 2> two;
    if (n > 32)
        f(std::integral_constant<int, 4>(), one());
    else if (n > 16)
        wide ? f(two(), two()) : f(two(), one());
    else
        wide ? f(one(), two()) : f(one(), one());
}

/* A launch of MT m-tiles and NT pair groups over pairs row pairs of in
 * columns on n_sms SMs: blocks of 8 NT pairs, the k split from
 * rn_cuda_tc_plan within tc_max_warps (kpw: its want_kpw), the ring's
 * stages for want
 * (rn_cuda_tc_stages; 0: the register kernel), and each kernel's dynamic
 * shared memory: the register kernel's tc_finish part (none for one warp),
 * the async kernel's ring. */
struct tc_shape {
    long blocks;
    rn_cuda_tc_shape sh;
    int stages;
    size_t part_bytes, ring_bytes;
};

template <int MT, int NT>
static tc_shape tc_shape_for(size_t pairs, int in, int n_sms, int want, size_t smem_block,
                             size_t smem_sm, int kpw)
{
    constexpr int S = RN_TC_KBLOCK * (TC_LOADS / (2 * NT)); /* k a round */
    static_assert(MT * NT * 8 * 32 * sizeof(float) <= 2 * TC_STAGE_BYTES,
                  "tc_finish's part fits in the ring it overlays");
    tc_shape s;
    s.blocks = (long)((pairs + 8 * NT - 1) / (8 * NT));
    s.sh = rn_cuda_tc_plan(in, s.blocks, n_sms, tc_max_warps(MT, NT), kpw);
    s.stages =
        rn_cuda_tc_stages(want, (s.sh.k_per_warp + S - 1) / S, s.sh.warps, smem_block, smem_sm);
    s.part_bytes = s.sh.warps > 1 ? (size_t)s.sh.warps * MT * NT * 8 * 32 * sizeof(float) : 0;
    s.ring_bytes = (size_t)s.sh.warps * (size_t)s.stages * TC_STAGE_BYTES;
    return s;
}

/* The stream-K launch (gemv_tc_stream_kernel) of MT m-tiles and NT pair
 * groups over pairs row pairs of in columns on n_sms SMs: the kernel's
 * arguments but for the buffers (a.warps 0: the plan declines the set),
 * its blocks, and what its buffers must hold: part_bytes of partial sums
 * and a counter for each of its groups. */
struct tc_stream_launch_plan {
    tc_stream_args a;
    int blocks;
    size_t part_bytes;
    long groups;
};

template <int MT, int NT>
static tc_stream_launch_plan tc_stream_for(size_t pairs, int in, int n_sms)
{
    long groups = (long)((pairs + 8 * NT - 1) / (8 * NT));
    rn_cuda_tc_stream p = rn_cuda_tc_stream_plan(groups, in, n_sms);
    tc_stream_launch_plan l = {{p.units, p.kb, p.warps, p.slots, NULL, NULL},
                               p.blocks,
                               rn_cuda_tc_stream_part_bytes(&p, MT * NT * 8),
                               groups};
    return l;
}

/* f(MT, NT) for the stream-K launch of n rows: two pair groups up to 32
 * rows (its warps' runs balance whatever the groups, so each input piece
 * can serve two), one from 33. */
template <typename F> static void tc_stream_with_shape(int n, F f)
{
    typedef std::integral_constant<int, 1> one;
    typedef std::integral_constant<int, 2> two;
    if (n > 32)
        f(std::integral_constant<int, 4>(), one());
    else if (n > 16)
        f(two(), two());
    else
        f(one(), two());
}

#endif
