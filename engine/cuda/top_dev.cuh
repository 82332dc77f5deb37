/* Rows reduced for sampling on the device (sampler.h's rn_row_top):
 * top_kernel, one block a row.
 *
 * Included by kernels.cu after the CUDA headers, sampler.h and the
 * dependent-launch helpers, and by the unit tests' emulation of CUDA
 * (tests/unit/cuda_emu.h, RN_CUDA_EMU), which runs it on the CPU in every
 * build against the host's reduction (tests/unit/top_emu.cc).
 *
 * One block per row finds the row's RN_TOP_CANDIDATES first entries in the
 * sampler's order (larger value, then lower id; NaN as -inf; -0 = +0) by a
 * radix select over order-preserving 32-bit keys, 8 bits a pass: each pass
 * counts the entries still in the running by their next digit and keeps
 * the digit where the count from the top reaches the candidates still
 * wanted.  After four passes the key of the last candidate is known, and
 * how many entries equal to it are wanted; the lowest ids among equals are
 * taken in index order, so the set is the host's bit for bit.  The row was
 * just written and sits in L2: every pass over it keeps TOP_LOADS loads in
 * flight per thread. */
#ifndef RN_CUDA_TOP_DEV_CUH
#define RN_CUDA_TOP_DEV_CUH

#include <math.h>
#include <stdint.h>

#define TOP_THREADS 1024
#define TOP_LOADS 8
#define TOP_WARPS (TOP_THREADS / 32)
#define TOP_NONE 256u /* no digit: the entry is out of the running */

__device__ static inline float top_value(float v)
{
    return isnan(v) ? -INFINITY : v;
}

/* Larger value, larger key; -0 and +0 one key (they are equal to the
 * sampler's comparison). */
__device__ static inline unsigned top_key(float v)
{
    v = top_value(v);
    unsigned b = __float_as_uint(v == 0.0f ? 0.0f : v);
    return (b & 0x80000000u) ? ~b : b | 0x80000000u;
}

/* One pass of the block over the row: f(i, v, live) for each entry i the
 * thread takes, TOP_LOADS at a time with all their loads issued before any
 * value is used (v 0 and live false past the row's end, where f is still
 * called, so that warp-wide votes in it see every lane). */
template <typename F> __device__ static inline void top_each(const float *row, int V, F f)
{
    for (int i0 = 0; i0 < V; i0 += TOP_THREADS * TOP_LOADS) {
        float v[TOP_LOADS];
#pragma unroll
        for (int u = 0; u < TOP_LOADS; u++) {
            int i = i0 + u * TOP_THREADS + (int)threadIdx.x;
            v[u] = i < V ? row[i] : 0.0f;
        }
#pragma unroll
        for (int u = 0; u < TOP_LOADS; u++) {
            int i = i0 + u * TOP_THREADS + (int)threadIdx.x;
            f(i, v[u], i < V);
        }
    }
}

/* Counts, into hist, the digit at shift of every entry of the row whose key
 * matches prefix under mask.  Lanes with the same digit add once
 * (__match_any_sync): logits crowd into few leading digits, and a shared
 * counter hit by a whole warp would serialise. */
__device__ static void top_count(unsigned *hist, const float *row, int V, unsigned prefix,
                                 unsigned mask, int shift)
{
    int lane = (int)threadIdx.x & 31;
    top_each(row, V, [&](int, float v, bool live) {
        unsigned k = top_key(v);
        unsigned d = live && (k & mask) == prefix ? (k >> shift) & 0xffu : TOP_NONE;
        if (!__any_sync(0xffffffffu, d != TOP_NONE))
            return; /* after the first pass most warps hold none still running */
        unsigned peers = __match_any_sync(0xffffffffu, d);
        if (d != TOP_NONE && lane == __ffs(peers) - 1)
            atomicAdd(&hist[d], (unsigned)__popc(peers));
    });
}

/* Warp 0: the digit (from 255 down) where the counts from the top reach
 * *need, and *need less the count above that digit.  Lane l looks at digits
 * 255 - 8l down to 248 - 8l. */
__device__ static void top_pick_digit(const unsigned *hist, unsigned *need, unsigned *digit)
{
    unsigned lane = threadIdx.x & 31u, c[8], sum = 0;
#pragma unroll
    for (int j = 0; j < 8; j++) {
        c[j] = hist[255u - 8u * lane - (unsigned)j];
        sum += c[j];
    }
    unsigned incl = sum;
#pragma unroll
    for (int off = 1; off < 32; off *= 2) {
        unsigned t = __shfl_up_sync(0xffffffffu, incl, off);
        if (lane >= (unsigned)off)
            incl += t;
    }
    unsigned acc = incl - sum, want = *need;
    __syncwarp();
    if (acc < want && want <= incl) {
#pragma unroll
        for (int j = 0; j < 8; j++) {
            if (acc + c[j] >= want) {
                *digit = 255u - 8u * lane - (unsigned)j;
                *need = want - acc;
                break;
            }
            acc += c[j];
        }
    }
}

/* Every entry with a key above kth, and with all_eq the ones equal to it
 * too, into (ckey, cid) at *count (any order: they are sorted after). */
__device__ static void top_take_above(unsigned *ckey, int *cid, unsigned *count, const float *row,
                                      int V, unsigned kth, int all_eq)
{
    top_each(row, V, [&](int i, float v, bool live) {
        unsigned k = top_key(v);
        if (live && (k > kth || (all_eq && k == kth))) {
            unsigned at = atomicAdd(count, 1u);
            ckey[at] = k;
            cid[at] = i;
        }
    });
}

/* The first `need` entries (by index) whose key equals kth into (ckey, cid)
 * from `first` on: a tile of the row at a time, each entry ranked by the
 * equal entries before it (warp ballots, then the warps before). */
__device__ static void top_take_equal(unsigned *ckey, int *cid, unsigned first, unsigned need,
                                      const float *row, int V, unsigned kth)
{
    __shared__ unsigned warp_count[TOP_WARPS];
    unsigned lane = threadIdx.x & 31u, warp = threadIdx.x / 32u, taken = 0;
    for (int i0 = 0; i0 < V && taken < need; i0 += TOP_THREADS) {
        int i = i0 + (int)threadIdx.x;
        int eq = i < V && top_key(row[i]) == kth;
        unsigned ballot = __ballot_sync(0xffffffffu, eq);
        if (lane == 0)
            warp_count[warp] = (unsigned)__popc(ballot);
        __syncthreads();
        unsigned before = 0, total = 0;
        for (unsigned w = 0; w < TOP_WARPS; w++) {
            before += w < warp ? warp_count[w] : 0u;
            total += warp_count[w];
        }
        unsigned r = taken + before + (unsigned)__popc(ballot & ((1u << lane) - 1u));
        if (eq && r < need) {
            ckey[first + r] = kth;
            cid[first + r] = i;
        }
        taken += total; /* the same in every thread: the loop ends together */
        __syncthreads();
    }
}

/* Whether candidate a comes before candidate b in the sampler's order. */
__device__ static inline bool top_before(unsigned ka, int ia, unsigned kb, int ib)
{
    return ka > kb || (ka == kb && ia < ib);
}

/* Bitonic sort of the RN_TOP_CANDIDATES (key, id) pairs into the sampler's
 * order; unused places hold key 0 (below every real key) and INT_MAX. */
__device__ static void top_sort(unsigned *ckey, int *cid)
{
    const int n = RN_TOP_CANDIDATES, t = (int)threadIdx.x;
    for (int size = 2; size <= n; size *= 2)
        for (int stride = size / 2; stride > 0; stride /= 2) {
            if (t < n / 2) {
                int a = 2 * t - (t & (stride - 1)), b = a + stride;
                bool up = (a & size) == 0;
                if (up ? top_before(ckey[b], cid[b], ckey[a], cid[a])
                       : top_before(ckey[a], cid[a], ckey[b], cid[b])) {
                    unsigned k = ckey[a];
                    int id = cid[a];
                    ckey[a] = ckey[b];
                    cid[a] = cid[b];
                    ckey[b] = k;
                    cid[b] = id;
                }
            }
            __syncthreads();
        }
}

/* The row's sums of exp(l - mx) and exp((l - mx) inv_t) (inv_t 0: the
 * second is 0), in double, reduced in a fixed order so a row gives the same
 * sums every time.  At inv_t 1 the second sum's terms are the first's
 * (d * 1.0 is d), so it is the first, without a second pass of double
 * exponentials on the block's one SM (temperature 1 is the API's default). */
__device__ static void top_sums(double *z1, double *zt, const float *row, int V, double mx,
                                double inv_t)
{
    __shared__ double part[2][TOP_WARPS];
    double s1 = 0.0, st = 0.0;
    top_each(row, V, [&](int, float v, bool live) {
        if (live) {
            double d = (double)top_value(v) - mx;
            s1 += exp(d);
            if (inv_t > 0.0 && inv_t != 1.0)
                st += exp(d * inv_t);
        }
    });
    for (int off = 16; off > 0; off /= 2) {
        s1 += __shfl_down_sync(0xffffffffu, s1, off);
        st += __shfl_down_sync(0xffffffffu, st, off);
    }
    if ((threadIdx.x & 31u) == 0) {
        part[0][threadIdx.x / 32u] = s1;
        part[1][threadIdx.x / 32u] = st;
    }
    __syncthreads();
    if (threadIdx.x < 32) {
        s1 = part[0][threadIdx.x];
        st = part[1][threadIdx.x];
        for (int off = 16; off > 0; off /= 2) {
            s1 += __shfl_down_sync(0xffffffffu, s1, off);
            st += __shfl_down_sync(0xffffffffu, st, off);
        }
        if (threadIdx.x == 0) {
            *z1 = s1;
            *zt = inv_t == 1.0 ? s1 : st;
        }
    }
}

/* The n (at most RN_TOP_CANDIDATES and V) first entries of row[0, V) in
 * the sampler's order into (ckey, cid), sorted, as keys and indices into
 * row (places past n: key 0, INT_MAX): four radix passes, the entries
 * above the cut, then the lowest indices among those equal to it.
 * Block-wide (TOP_THREADS threads, every one calls it). */
__device__ static void top_select(unsigned *ckey, int *cid, const float *row, int V, unsigned n)
{
    __shared__ unsigned hist[256], s_need, s_digit, s_count;
    unsigned prefix = 0, mask = 0;
    if (threadIdx.x == 0)
        s_need = n;
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int d = (int)threadIdx.x; d < 256; d += TOP_THREADS)
            hist[d] = 0;
        __syncthreads();
        top_count(hist, row, V, prefix, mask, shift);
        __syncthreads();
        if (threadIdx.x < 32)
            top_pick_digit(hist, &s_need, &s_digit);
        __syncthreads();
        prefix |= s_digit << shift;
        mask |= 0xffu << shift;
    }
    /* prefix is now the last candidate's key; s_need entries equal to it are
     * wanted, hist[s_digit] of them exist */
    unsigned need = s_need, all_eq = hist[s_digit] == need;
    if (threadIdx.x < RN_TOP_CANDIDATES) {
        ckey[threadIdx.x] = 0;
        cid[threadIdx.x] = 0x7fffffff;
    }
    if (threadIdx.x == 0)
        s_count = 0;
    __syncthreads();
    top_take_above(ckey, cid, &s_count, row, V, prefix, all_eq);
    __syncthreads();
    if (!all_eq) /* ties across the cut: the lowest ids, in index order */
        top_take_equal(ckey, cid, n - need, need, row, V, prefix);
    __syncthreads();
    top_sort(ckey, cid);
}

/* 1 / temperature, 0 for temperature 0 (greedy: no second sum). */
__device__ static inline double top_inv_t(float temp)
{
    return temp > 0.0f ? 1.0 / (double)temp : 0.0;
}

static __global__ void __launch_bounds__(TOP_THREADS)
    top_kernel(struct rn_row_top *out, const float *logits, const float *temperature, int V)
{
    __shared__ unsigned ckey[RN_TOP_CANDIDATES];
    __shared__ int cid[RN_TOP_CANDIDATES];
    pdl_enter();
    rn_row_top *o = out + blockIdx.x;
    const float *row = logits + (size_t)blockIdx.x * (size_t)V;
    float temp = temperature[blockIdx.x];
    if (temp < 0.0f || V < 1) { /* not wanted: the host reads n only */
        if (threadIdx.x == 0)
            o->n = 0;
        return;
    }
    unsigned n = V < RN_TOP_CANDIDATES ? (unsigned)V : RN_TOP_CANDIDATES;
    top_select(ckey, cid, row, V, n);
    if (threadIdx.x < n) {
        o->id[threadIdx.x] = cid[threadIdx.x];
        o->logit[threadIdx.x] = top_value(row[cid[threadIdx.x]]);
    }
    double mx = (double)top_value(row[cid[0]]);
    top_sums(&o->z1, &o->zt, row, V, mx, top_inv_t(temp));
    if (threadIdx.x == 0) {
        o->n = (int32_t)n;
        o->reserved = 0;
    }
}

#endif
