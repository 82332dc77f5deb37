/* Enough of CUDA, on the CPU, to run the tensor-core retention kernels of
 * engine/cuda/ret_fused.cuh, the piece scaling and rotary of
 * pieces_dev.cuh and rope_dev.cuh, and the norms of norm_dev.cuh (their
 * block arithmetic and norm_vec_kernel) as they are written (RN_CUDA_EMU; the runtime is cuda_emu.cc):
 *
 * - a launch runs the grid's blocks one after another; a block's threads
 *   are host threads, so a thread's own loops run as written and
 *   __syncthreads / __syncwarp are real barriers (of the block, of the warp);
 * - __shared__ becomes static storage, which the threads of the one block
 *   running share; the dynamic shared memory is a buffer the launch gives;
 * - the WMMA operations are warp-wide: lane 0 of each warp carries them out
 *   on whole 16x16 tiles (fp32 sums of exact bf16 products, k in order) and
 *   the other lanes skip them, which the kernels cannot tell apart, since
 *   every lane of a warp passes the same operands;
 * - bf16 conversions round to nearest even, as the device's _rn ones do;
 * - a WMMA operand must be aligned as the device needs (else abort);
 * - __shfl_xor_sync exchanges through the warp's slots between barriers.
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

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

extern "C" {
#include "util.h"
}

#define RN_CUDA_EMU 1
#define __global__
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

static inline float rn_emu_float(__nv_bfloat16 h)
{
    return rn__bf16_to_f32(h.bits);
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

extern thread_local dim3 threadIdx;      /* each thread's own */
extern dim3 blockIdx, gridDim, blockDim; /* the one block running */

void __syncthreads(void);
void __syncwarp(void);
unsigned char *rn_emu_dynamic_smem(void);

/* n values of size bytes on 256 bytes, as cudaMalloc places them, so a
 * kernel's vector and WMMA accesses are aligned as on the device (the size
 * rounded up, as aligned_alloc wants); free() releases it. */
static inline void *rn_emu_alloc(size_t n, size_t size)
{
    return aligned_alloc(256, (n * size + 255) / 256 * 256);
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
double *rn_emu_exchange(void); /* the calling thread's warp's 32 slots */

/* Every lane of the warp (all 32 call it) gets lane ^ o's value: each
 * writes its own into the warp's slots, and after a barrier reads its
 * partner's; a second barrier before the slots are used again. */
template <typename T> static inline T __shfl_xor_sync(unsigned, T v, int o)
{
    double *slot = rn_emu_exchange();
    unsigned lane = rn_emu_lane_id();
    slot[lane] = (double)v;
    __syncwarp();
    T r = (T)slot[lane ^ (unsigned)o];
    __syncwarp();
    return r;
}

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

static inline int rn_emu_lane0(void)
{
    return threadIdx.x % 32 == 0;
}

namespace nvcuda
{
namespace wmma
{
struct matrix_a {
};
struct matrix_b {
};
struct accumulator {
};
struct row_major {
};
struct col_major {
};
enum layout_t { mem_row_major, mem_col_major };

/* A whole M x N tile (rows of the product for accumulators, the operand
 * as A (M x K) or B (K x N) otherwise), as float: bf16 values are exact.
 * Lane 0's x holds all of it (num_elements of them, row-major), so a
 * kernel's element-wise loop over two fragments of one type pairs the
 * same elements as on the device, where each lane holds a few. */
template <typename Use, int M, int N, int K, typename T, typename Layout = void> struct fragment {
    static const int num_elements = 16 * 16;
    float x[16 * 16] = {};
};

template <typename Use, int M, int N, int K, typename T, typename L>
static inline void fill_fragment(fragment<Use, M, N, K, T, L> &f, float x)
{
    if (rn_emu_lane0())
        for (int i = 0; i < 256; i++)
            f.x[i] = x;
}

/* Element (r, c) of a 16x16 operand at p, row- or column-major with ldm. */
template <typename L> static inline float emu_at(const __nv_bfloat16 *p, unsigned ldm, int r, int c)
{
    size_t i = L::row ? (size_t)r * ldm + (size_t)c : (size_t)r + (size_t)c * ldm;
    return rn_emu_float(p[i]);
}

struct emu_row {
    static const bool row = true;
};
struct emu_col {
    static const bool row = false;
};
template <typename L> struct emu_layout;
template <> struct emu_layout<row_major> {
    typedef emu_row t;
};
template <> struct emu_layout<col_major> {
    typedef emu_col t;
};

/* What the device requires of a WMMA operand: a 256-bit aligned pointer
 * and a stride of a multiple of 16 bytes; a kernel that breaks either
 * aborts the emulation (the test fails) instead of passing here. */
static inline void emu_wmma_operand(const void *p, unsigned ldm, unsigned elem)
{
    if ((uintptr_t)p % 32 != 0 || (ldm * elem) % 16 != 0)
        abort();
}

template <typename Use, typename L>
static inline void load_matrix_sync(fragment<Use, 16, 16, 16, __nv_bfloat16, L> &f,
                                    const __nv_bfloat16 *p, unsigned ldm)
{
    emu_wmma_operand(p, ldm, 2);
    if (!rn_emu_lane0())
        return;
    for (int r = 0; r < 16; r++)
        for (int c = 0; c < 16; c++)
            f.x[r * 16 + c] = emu_at<typename emu_layout<L>::t>(p, ldm, r, c);
}

template <typename LA, typename LB>
static inline void mma_sync(fragment<accumulator, 16, 16, 16, float> &d,
                            const fragment<matrix_a, 16, 16, 16, __nv_bfloat16, LA> &a,
                            const fragment<matrix_b, 16, 16, 16, __nv_bfloat16, LB> &b,
                            const fragment<accumulator, 16, 16, 16, float> &c)
{
    if (!rn_emu_lane0())
        return;
    float out[256];
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 16; j++) {
            float s = c.x[i * 16 + j];
            for (int k = 0; k < 16; k++)
                s += a.x[i * 16 + k] * b.x[k * 16 + j];
            out[i * 16 + j] = s;
        }
    for (int i = 0; i < 256; i++)
        d.x[i] = out[i];
}

static inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, float> &f, const float *p,
                                    unsigned ldm, layout_t layout)
{
    emu_wmma_operand(p, ldm, 4);
    if (!rn_emu_lane0())
        return;
    for (int r = 0; r < 16; r++)
        for (int c = 0; c < 16; c++)
            f.x[r * 16 + c] = p[layout == mem_row_major ? (size_t)r * ldm + (size_t)c
                                                        : (size_t)r + (size_t)c * ldm];
}

static inline void store_matrix_sync(float *p, const fragment<accumulator, 16, 16, 16, float> &f,
                                     unsigned ldm, layout_t layout)
{
    emu_wmma_operand(p, ldm, 4);
    if (!rn_emu_lane0())
        return;
    for (int r = 0; r < 16; r++)
        for (int c = 0; c < 16; c++) {
            size_t i =
                layout == mem_row_major ? (size_t)r * ldm + (size_t)c : (size_t)r + (size_t)c * ldm;
            p[i] = f.x[r * 16 + c];
        }
}
} // namespace wmma
} // namespace nvcuda

#endif
