/* Enough of CUDA, on the CPU, to run the tensor-core retention kernel of
 * engine/cuda/ret_fused.cuh, the piece scaling and rotary of
 * pieces_dev.cuh and rope_dev.cuh, the norms of norm_dev.cuh (their
 * block arithmetic and norm_vec_kernel), the GEMVs of gemv_dev.cuh and the
 * tensor-core GEMVs of gemv_tc_dev.cuh, the recurrent decode step of
 * step_dev.cuh and the sampling reduction of top_dev.cuh as they are
 * written (RN_CUDA_EMU;
 * the runtime is cuda_emu.cc):
 *
 * - a launch runs the grid's blocks one after another; a block's threads
 *   are fibers on the launching host thread (cuda_emu.cc), each running
 *   until it waits at a barrier, so a thread's own loops run as written
 *   and __syncthreads / __syncwarp are real barriers (of the block, of the
 *   warp); threads that wait at barriers none can fill abort the test;
 * - __shared__ becomes static storage, which the threads of the one block
 *   running share; the dynamic shared memory is a buffer the launch gives;
 * - the warp-wide instructions of mma_dev.cuh (mma.m16n8k16 on bf16 and
 *   fp16, ldmatrix)
 *   exchange every lane's operands through the warp's slots and give each
 *   lane its part as the PTX ISA's fragment tables say; cp.async lands its
 *   bytes only at the wait that covers its group, or (a second mode) at
 *   its issue, the two ends of the device's window;
 * - bf16 conversions round to nearest even, as the device's _rn ones do;
 * - an ldmatrix row or cp.async operand must be aligned as the device
 *   needs (else abort);
 * - __shfl_xor_sync, __shfl_up_sync, __shfl_down_sync, __ballot_sync,
 *   __any_sync and __match_any_sync exchange through the warp's slots
 *   between barriers, so all 32 lanes must call them (the masks are not
 *   read: a partial warp would wait forever, where the device would run
 *   the named lanes); atomicAdd on unsigned is a host atomic, and
 *   __threadfence a host fence (one thread runs at a time, so both are
 *   trivially ordered); blocks run in order or (a second mode,
 *   rn_emu_blocks_reversed) in reverse;
 * - the weight-streaming GEMVs of gemv_dev.cuh: their 16-byte streaming
 *   loads (__ldcs, alignment enforced) and 16-bit widenings.
 *
 * Static shared memory keeps the previous block's values (the dynamic
 * buffer is filled with bf16 NaN before each block), so a read before a
 * write there would not show.
 *
 * What the device does differently -- the order of the tensor cores' sums,
 * timing, memory ordering without barriers -- is out of its reach: this
 * checks indexing, tiling, masking and arithmetic, not races. */
#ifndef RN_TESTS_CUDA_EMU_H
#define RN_TESTS_CUDA_EMU_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "util.h"
}

#define RN_CUDA_EMU 1
#define __global__ __attribute__((unused)) /* a test may launch only some */
#define __device__
#define __host__
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __shared__ static /* one block runs at a time */
#define __trap() abort()

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_)
    {
    }
};

struct alignas(16) float4 {
    float x, y, z, w;
};

static inline float4 make_float4(float x, float y, float z, float w)
{
    return float4{x, y, z, w};
}

struct alignas(8) float2 {
    float x, y;
};

static inline float2 make_float2(float x, float y)
{
    return float2{x, y};
}

struct alignas(8) uint2 {
    uint32_t x, y;
};

static inline int min(int a, int b)
{
    return a < b ? a : b;
}

/* a * b + c rounded once, as the device's */
static inline float __fmaf_rn(float a, float b, float c)
{
    return __builtin_fmaf(a, b, c);
}

/* each rounded on its own (the build targets no FMA instruction, so the
 * compiler cannot fuse them) */
static inline float __fmul_rn(float a, float b)
{
    return a * b;
}
static inline float __fadd_rn(float a, float b)
{
    return a + b;
}

struct __nv_bfloat16 {
    uint16_t bits;
};
struct __nv_bfloat162 {
    __nv_bfloat16 x, y;
};

static inline __nv_bfloat16 __float2bfloat16_rn(float f)
{
    return __nv_bfloat16{rn__f32_to_bf16(f)};
}

static inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b)
{
    return __nv_bfloat162{__float2bfloat16_rn(a), __float2bfloat16_rn(b)};
}

struct __half {
    uint16_t bits;
};
struct __half2 {
    __half x, y;
};

static inline __half2 __floats2half2_rn(float a, float b)
{
    return __half2{__half{rn__f32_to_f16(a)}, __half{rn__f32_to_f16(b)}};
}

static inline __half __float2half_rn(float f)
{
    return __half{rn__f32_to_f16(f)};
}

/* 16-bit values widened, exactly as the device's conversions do */
static inline float __bfloat162float(__nv_bfloat16 h)
{
    return rn__bf16_to_f32(h.bits);
}
static inline float __half2float(__half h)
{
    return rn__f16_to_f32(h.bits);
}
static inline float2 __bfloat1622float2(__nv_bfloat162 h)
{
    return float2{rn__bf16_to_f32(h.x.bits), rn__bf16_to_f32(h.y.bits)};
}
static inline float2 __half22float2(__half2 h)
{
    return float2{rn__f16_to_f32(h.x.bits), rn__f16_to_f32(h.y.bits)};
}

struct alignas(16) uint4 {
    uint32_t x, y, z, w;
};

static inline uint4 make_uint4(uint32_t x, uint32_t y, uint32_t z, uint32_t w)
{
    return uint4{x, y, z, w};
}

/* the streaming loads (cache hints only): plain loads, alignment enforced */
static inline float4 __ldcs(const float4 *p)
{
    if ((uintptr_t)p % 16 != 0)
        abort();
    return *p;
}
static inline uint4 __ldcs(const uint4 *p)
{
    if ((uintptr_t)p % 16 != 0)
        abort();
    return *p;
}

extern dim3 threadIdx;                   /* the running thread's own */
extern dim3 blockIdx, gridDim, blockDim; /* the one block running */

void __syncthreads(void);
void __syncwarp(void);
unsigned char *rn_emu_dynamic_smem(void);

/* n values of size bytes on 256 bytes, as cudaMalloc places them, so a
 * kernel's vector and 16-byte accesses are aligned as on the device (the size
 * rounded up, as aligned_alloc wants); free() releases it. */
static inline void *rn_emu_alloc(size_t n, size_t size)
{
    return aligned_alloc(256, (n * size + 255) / 256 * 256);
}

/* rn_emu_alloc holding a copy of the n values at src; NULL when out of
 * memory.  free() releases it. */
static inline void *rn_emu_copy(const void *src, size_t n, size_t size)
{
    void *a = rn_emu_alloc(n, size);
    if (a)
        memcpy(a, src, n * size);
    return a;
}

static inline void pdl_enter(void)
{
}
static inline void pdl_wait(void)
{
}
static inline void pdl_trigger(void)
{
}

unsigned rn_emu_lane_id(void);
double *rn_emu_exchange(void); /* the calling thread's warp's 32 slots, this instruction's set */

/* Every lane of the warp (all 32 call it) gets the value of lane src
 * (its own where src names no lane): each writes its own into the warp's
 * slots, and after a barrier reads its source's.  The slots alternate
 * between two sets (rn_emu_exchange), so no second barrier is needed
 * before they are written again.  The shuffles below are this with their
 * own source lane. */
template <typename T> static inline T emu_shfl(T v, unsigned src)
{
    double *slot = rn_emu_exchange();
    unsigned lane = rn_emu_lane_id();
    slot[lane] = (double)v;
    __syncwarp();
    return src < 32u ? (T)slot[src] : v;
}
template <typename T> static inline T __shfl_sync(unsigned, T v, int src)
{
    return emu_shfl(v, (unsigned)src % 32u);
}
template <typename T> static inline T __shfl_xor_sync(unsigned, T v, int o)
{
    return emu_shfl(v, rn_emu_lane_id() ^ (unsigned)o);
}
template <typename T> static inline T __shfl_up_sync(unsigned, T v, int o)
{
    unsigned lane = rn_emu_lane_id();
    return emu_shfl(v, lane >= (unsigned)o ? lane - (unsigned)o : 32u);
}
template <typename T> static inline T __shfl_down_sync(unsigned, T v, int o)
{
    return emu_shfl(v, rn_emu_lane_id() + (unsigned)o);
}

/* The votes the same way: each lane's value x into the slots, and the
 * mask of the lanes whose value `keeps` says yes to. */
template <typename F> static inline unsigned emu_lanes(double x, F keeps)
{
    double *slot = rn_emu_exchange();
    slot[rn_emu_lane_id()] = x;
    __syncwarp();
    unsigned r = 0;
    for (unsigned l = 0; l < 32; l++)
        r |= keeps(slot[l]) ? 1u << l : 0u;
    return r;
}
static inline unsigned __ballot_sync(unsigned, int pred)
{
    return emu_lanes(pred ? 1.0 : 0.0, [](double y) { return y != 0.0; });
}
static inline int __any_sync(unsigned m, int pred)
{
    return __ballot_sync(m, pred) != 0;
}
/* The lanes whose value equals this lane's (unsigned values are exact in
 * the slots' doubles). */
static inline unsigned __match_any_sync(unsigned, unsigned v)
{
    return emu_lanes((double)v, [v](double y) { return y == (double)v; });
}
static inline int __popc(unsigned v)
{
    return __builtin_popcount(v);
}
static inline int __ffs(unsigned v)
{
    return __builtin_ffs((int)v);
}
static inline unsigned __float_as_uint(float f)
{
    unsigned u;
    memcpy(&u, &f, 4);
    return u;
}
/* The atomic and the fence as the host's (a block's threads take turns on
 * one host thread, so nothing else could reorder them). */
static inline unsigned atomicAdd(unsigned *p, unsigned v)
{
    return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST);
}
static inline void __threadfence(void)
{
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
}
/* a load from L2 (another SM's stores): a plain load */
static inline float __ldcg(const float *p)
{
    return *p;
}

/* Nonzero: a launch runs its grid's blocks from the last to the first,
 * so work that a grid's later blocks finish first (a stream-K group's
 * last warp) is finished by other ones. */
extern int rn_emu_blocks_reversed;

/* Runs body(ctx) as the kernel of a grid x block launch with smem bytes of
 * dynamic shared memory (rn_emu_launch: kernel(args...)); 0, or -1 when
 * the block is empty or over 1024 threads, or out of memory. */
int rn_emu_launch_impl(dim3 grid, dim3 block, size_t smem, void (*body)(void *), void *ctx);

template <typename F> static void rn_emu_trampoline(void *f)
{
    (*(F *)f)();
}

template <typename K, typename... A>
static int rn_emu_launch(K kernel, dim3 grid, dim3 block, size_t smem, A... args)
{
    auto call = [&]() { kernel(args...); };
    return rn_emu_launch_impl(grid, block, smem, rn_emu_trampoline<decltype(call)>, &call);
}

/* ------------------------------------------------------------ mma_dev.cuh
 * The warp-wide instructions, from the PTX ISA's tables (mma_dev.cuh): each
 * lane puts its operands in the warp's slots, and after a barrier works out
 * its own result from all 32 lanes' -- so a kernel whose lanes disagree on
 * where a row or column lives gets the wrong numbers here as on the device.
 * The products of bf16 values are exact in fp32; they are summed in fp32, k
 * in order, onto the accumulator. */

/* The calling thread's warp's 32 slots of 64 bytes for its next warp-wide
 * instruction (the set it did not use last). */
unsigned char *rn_emu_xbytes(void);

static inline float emu_bf16_half(uint32_t u, int hi)
{
    return rn__bf16_to_f32((uint16_t)(hi ? u >> 16 : u & 0xffffu));
}

static inline float emu_f16_half(uint32_t u, int hi)
{
    return rn__f16_to_f32((uint16_t)(hi ? u >> 16 : u & 0xffffu));
}

/* mma.m16n8k16 with the operands' halves widened by half(u, hi). */
static inline void emu_mma(float *d, const uint32_t *a, const uint32_t *b,
                           float (*half)(uint32_t, int))
{
    uint32_t(*x)[16] = (uint32_t(*)[16])rn_emu_xbytes();
    unsigned lane = rn_emu_lane_id();
    for (int i = 0; i < 4; i++)
        x[lane][i] = a[i];
    x[lane][4] = b[0], x[lane][5] = b[1];
    __syncwarp();
    float out[4];
    for (int j = 0; j < 4; j++) {
        int row = (int)lane / 4 + 8 * (j >> 1), col = 2 * ((int)lane % 4) + (j & 1);
        float s = d[j];
        for (int k = 0; k < 16; k++) {
            /* A (row, k): lane 4 (row % 8) + (k % 8) / 2, register row / 8
             * + 2 (k / 8); B (k, col): lane 4 col + (k % 8) / 2, register
             * k / 8; the half k % 2 */
            uint32_t ra = x[4 * (row % 8) + (k % 8) / 2][row / 8 + 2 * (k / 8)];
            uint32_t rb = x[4 * col + (k % 8) / 2][4 + k / 8];
            s += half(ra, k % 2) * half(rb, k % 2);
        }
        out[j] = s;
    }
    for (int j = 0; j < 4; j++)
        d[j] = out[j];
}

static inline void rn_mma_bf16(float *d, const uint32_t *a, const uint32_t *b)
{
    emu_mma(d, a, b, emu_bf16_half);
}

/* The products of fp16 values are exact in fp32 too. */
static inline void rn_mma_f16(float *d, const uint32_t *a, const uint32_t *b)
{
    emu_mma(d, a, b, emu_f16_half);
}

/* ldmatrix.x4, transposed or not; a row address the device would refuse
 * (not 16-byte aligned) aborts. */
static inline void emu_ldsm_x4(uint32_t *r, const void *p, int trans)
{
    const uint16_t **x = (const uint16_t **)rn_emu_xbytes();
    unsigned lane = rn_emu_lane_id();
    if ((uintptr_t)p % 16 != 0)
        abort();
    x[lane * 8] = (const uint16_t *)p; /* a slot each: 64 bytes apart */
    __syncwarp();
    int g = (int)lane / 4, t = (int)lane % 4;
    uint32_t out[4];
    for (int m = 0; m < 4; m++) {
        uint16_t lo, hi;
        if (trans) { /* rows 2t, 2t+1 of column g */
            lo = x[(8 * m + 2 * t) * 8][g], hi = x[(8 * m + 2 * t + 1) * 8][g];
        } else { /* row g, columns 2t, 2t+1 */
            lo = x[(8 * m + g) * 8][2 * t], hi = x[(8 * m + g) * 8][2 * t + 1];
        }
        out[m] = (uint32_t)lo | (uint32_t)hi << 16;
    }
    for (int m = 0; m < 4; m++)
        r[m] = out[m];
}

static inline void rn_ldsm_x4(uint32_t *r, const void *p)
{
    emu_ldsm_x4(r, p, 0);
}

static inline void rn_ldsm_x4_t(uint32_t *r, const void *p)
{
    emu_ldsm_x4(r, p, 1);
}

/* cp.async: the source's 16 bytes are taken at the issue and reach the
 * destination only when a wait covers their group, so a kernel that reads
 * its tile before waiting for it reads the NaN the launch filled in (or an
 * older tile).  With rn_emu_cp_async_at_issue set they land at the issue
 * instead -- the device may land them any time between -- so a kernel
 * that copies over a tile before every warp has passed the barrier after
 * its last read of it gets the new values in that read. */
extern int rn_emu_cp_async_at_issue;
void rn_cp_async16(void *dst, const void *src);
/* The first n bytes (0 or 16; else abort) of src, zeros after them. */
void rn_cp_async16_zfill(void *dst, const void *src, int n);
void rn_cp_async_commit(void);
void rn_emu_cp_async_wait(int n);
template <int N> static inline void rn_cp_async_wait(void)
{
    rn_emu_cp_async_wait(N);
}

#endif
