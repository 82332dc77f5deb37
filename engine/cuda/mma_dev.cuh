/* The warp-level tensor-core and asynchronous-copy instructions the fused
 * retention kernel (ret_fused.cuh) and the tensor-core GEMV
 * (gemv_tc_dev.cuh) are written in, one inline function each:
 * mma.m16n8k16 on bf16 and on fp16 with fp32 accumulation, ldmatrix (x4,
 * plain and transposed) and cp.async of 16 bytes (zero-filled in part or
 * whole where the source is shorter) with its group commit and wait.
 *
 * The unit tests' emulation (tests/unit/cuda_emu.h, RN_CUDA_EMU) defines
 * the same functions from the PTX ISA's fragment tables instead, so the
 * kernels' fragment bookkeeping -- which lane holds which row and column,
 * which matrix of an ldmatrix a lane's address starts -- runs on the CPU
 * in every build.
 *
 * Fragments (the PTX ISA's tables; lane = 4 g + t):
 *   A (16 x 16, row-major): a[0] row g, k 2t, 2t+1; a[1] row g+8; a[2]
 *     row g, k 2t+8, 2t+9; a[3] row g+8, k 2t+8, 2t+9.
 *   B (16 x 8): b[0] k 2t, 2t+1 of column g; b[1] k 2t+8, 2t+9.
 *   C, D (16 x 8, fp32): d[0], d[1] row g, columns 2t, 2t+1; d[2], d[3]
 *     row g+8.
 *   The lower k (or column) of a 32-bit register is in its low half.
 *   ldmatrix.x4: lanes 8m..8m+7 give the addresses of matrix m's eight
 *     rows (16 bytes each); r[m] is the lane's pair of matrix m: row g,
 *     columns 2t, 2t+1 -- transposed, rows 2t, 2t+1 of column g. */
#ifndef RN_CUDA_MMA_DEV_CUH
#define RN_CUDA_MMA_DEV_CUH

#include <stdint.h>

#ifndef RN_CUDA_EMU
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define RN_MMA_ASM 1
#else
#define RN_MMA_ASM 0 /* never launched there: the backend takes these paths on sm_80 on */
#endif

/* d += a b in mma.m16n8k16 on operands of PTX type TY (a string literal:
 * "bf16", "f16"), fp32 accumulation, the warp together. */
#if RN_MMA_ASM
#define RN_MMA_M16N8K16(TY, d, a, b)                                                               \
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32." TY "." TY ".f32 "                        \
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"                           \
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])                                  \
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]))
#else
#define RN_MMA_M16N8K16(TY, d, a, b) ((void)(d), (void)(a), (void)(b), __trap())
#endif

/* d += a b (16 x 8 fp32 += 16 x 16 bf16 times 16 x 8 bf16), the warp together. */
__device__ static inline void rn_mma_bf16(float *d, const uint32_t *a, const uint32_t *b)
{
    RN_MMA_M16N8K16("bf16", d, a, b);
}

/* The same on fp16 operands. */
__device__ static inline void rn_mma_f16(float *d, const uint32_t *a, const uint32_t *b)
{
    RN_MMA_M16N8K16("f16", d, a, b);
}

__device__ static inline uint32_t rn_smem_addr(const void *p)
{
    return (uint32_t)__cvta_generic_to_shared(p);
}

/* Four 8 x 8 bf16 matrices from shared memory, row address p per lane. */
__device__ static inline void rn_ldsm_x4(uint32_t *r, const void *p)
{
#if RN_MMA_ASM
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(rn_smem_addr(p)));
#else
    (void)r, (void)p;
    __trap();
#endif
}

/* The same, each matrix transposed. */
__device__ static inline void rn_ldsm_x4_t(uint32_t *r, const void *p)
{
#if RN_MMA_ASM
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(rn_smem_addr(p)));
#else
    (void)r, (void)p;
    __trap();
#endif
}

/* 16 bytes from global src to shared dst (both 16-byte aligned), in the
 * background until a cp.async wait covers the group it is committed in. */
__device__ static inline void rn_cp_async16(void *dst, const void *src)
{
#if RN_MMA_ASM
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(rn_smem_addr(dst)), "l"(src)
                 : "memory");
#else
    (void)dst, (void)src;
    __trap();
#endif
}

/* The same for the first n (0 or 16) of the 16 bytes, zeros after them:
 * with n 0 nothing is read, but src must still be an address the device
 * accepts (16-byte aligned, global). */
__device__ static inline void rn_cp_async16_zfill(void *dst, const void *src, int n)
{
#if RN_MMA_ASM
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(rn_smem_addr(dst)), "l"(src),
                 "r"(n)
                 : "memory");
#else
    (void)dst, (void)src, (void)n;
    __trap();
#endif
}

/* Closes the thread's group of copies issued since the last commit. */
__device__ static inline void rn_cp_async_commit(void)
{
#if RN_MMA_ASM
    asm volatile("cp.async.commit_group;" ::: "memory");
#endif
}

/* Waits until at most N of the thread's committed groups are in flight;
 * other threads' copies show after the barrier that follows. */
template <int N> __device__ static inline void rn_cp_async_wait(void)
{
#if RN_MMA_ASM
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
#endif
}
#endif /* !RN_CUDA_EMU */

/* Two floats rounded to bf16 (nearest even) in one register, lo in the
 * low half, as the fragments hold pairs. */
__device__ static inline uint32_t rn_pack_bf16(float lo, float hi)
{
    __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    uint32_t u;
    memcpy(&u, &h, sizeof u);
    return u;
}

#endif
