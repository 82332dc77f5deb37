/*
 * kernels.cu -- the CUDA backend's own kernels (see kernels.cuh).  The scalar
 * formulas come from rn_math.h, which the CPU backend and its unit tests use
 * too; what is here is how work is spread over threads.
 */
#include <atomic>
#include <type_traits>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "kernels.cuh"
#include "tc_layout.h"

extern "C" {
#include "../model.h"
#include "../sampler.h"
#include "plan.h"
}
#include "../rn_math.h"

#define BLOCK 256

static unsigned blocks_for(size_t n, unsigned per = BLOCK)
{
    size_t b = (n + per - 1) / per;
    return (unsigned)(b > 65535u * 32u ? 65535u * 32u : b);
}

/* Threads of a block that gives each of per items of a row one thread:
 * per rounded up to whole warps, at most BLOCK. */
static unsigned row_threads(unsigned per)
{
    return per >= BLOCK ? BLOCK : (per + 31) / 32u * 32u;
}

/* Programmatic dependent launch (sm_90 and later; rk_set_pdl).  Launched
 * this way, a kernel may be scheduled while its predecessor in the stream is
 * still running.  Every kernel here first lets its own successor be
 * scheduled (pdl_trigger), then waits until its predecessor has finished and
 * its writes are visible (pdl_wait), before it touches any activation or
 * state; so the only work that runs early is work that depends on no earlier
 * kernel -- launch, scheduling, the GEMVs' first weight loads (P - 1
 * rounds for the tensor-core GEMV's cp.async ring), and with
 * RETNET_CUDA_STEP_EARLY the recurrent step's first state rows, which no
 * other kernel of a decode step touches -- and a decode step's ~200 kernel
 * boundaries stop costing a drain and a ramp each.  The
 * wait is complete before the kernel ends, so completion stays transitive
 * down the stream.  Without the launch attribute both are no-ops. */
static thread_local int pdl_on;

void rk_set_pdl(int on)
{
    pdl_on = on;
}

#ifndef RN_CUDA_EMU /* the emulation has its own no-ops (tests/emu/cuda_runtime.h) */
__device__ static inline void pdl_trigger()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

__device__ static inline void pdl_wait()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ static inline void pdl_enter()
{
    pdl_trigger();
    pdl_wait();
}
#endif

/* k<<<grid, block, shm, st>>>(args), with the dependent-launch attribute
 * where pdl is set. */
template <typename... P, typename... A>
static void launch_as(int pdl, void (*k)(P...), dim3 grid, dim3 block, size_t shm, cudaStream_t st,
                      A... a)
{
    cudaLaunchAttribute attr;
    attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr.val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = shm;
    cfg.stream = st;
    cfg.attrs = &attr;
    cfg.numAttrs = pdl ? 1 : 0;
    cudaLaunchKernelEx(&cfg, k, ((P)a)...);
}

/* k launched as dependent while rk_set_pdl is on for this thread. */
template <typename... P, typename... A>
static void launch(void (*k)(P...), dim3 grid, dim3 block, size_t shm, cudaStream_t st, A... a)
{
    launch_as(pdl_on, k, grid, block, shm, st, a...);
}

/* k launched in plain stream order, for the kernels that do not wait on
 * their predecessor (pdl_wait) and so must not start before it ends. */
template <typename... P, typename... A>
static void launch_plain(void (*k)(P...), dim3 grid, dim3 block, size_t shm, cudaStream_t st,
                         A... a)
{
    launch_as(0, k, grid, block, shm, st, a...);
}

/* The kernels of the small launches below are in headers the CPU unit
 * tests also run (tests/unit/cuda_emu.h): the norms' arithmetic, norm_kernel,
 * norm_vec_kernel, load4, store4 and store_out in norm_dev.cuh; embedding,
 * scaling, the bf16 state copies, activation, the GLUs, the residual update
 * and the bias in elem_dev.cuh; the decay table and masks, the state's
 * decay over a chunk and torchscale's normaliser in chunk_dev.cuh. */
#include "norm_dev.cuh"
#include "elem_dev.cuh"
#include "chunk_dev.cuh"

/* ------------------------------------------------------------- embedding */

void rk_embed(cudaStream_t st, float *x, const void *E, int t, const int32_t *tok, int n, int D,
              float scale)
{
    launch_plain(embed_kernel, (unsigned)n, BLOCK, 0, st, x, E, t, tok, D, scale);
}

/* ----------------------------------------------------------------- norms */

/* Whether this thread's norms launch norm_vec_kernel (rk_set_norm_vec):
 * set by the backend at the start of every forward pass, the only place
 * norms are launched from, so one engine's choice never leaks into
 * another's on the same thread. */
static thread_local int norm_vec_on;

void rk_set_norm_vec(int on)
{
    norm_vec_on = on;
}

/* Whether this thread's norms of rows of d values with these operands run
 * norm_vec_kernel's code: it is on (rk_set_norm_vec), d and the parts'
 * stride are multiples of 4, the rows (the gate's too) start on 16 bytes
 * and h on 8, and the threads fit a block. */
static int norm_vec_fits(int d, size_t part_stride, const float *y, const float *x,
                         const float *res, const float *sink, const float *gate, rk_half h)
{
    uintptr_t rows16 =
        (uintptr_t)y | (uintptr_t)x | (uintptr_t)res | (uintptr_t)sink | (uintptr_t)gate;
    return norm_vec_on && d % 4 == 0 && part_stride % 4 == 0 && norm_vec_threads(d) <= 1024 &&
           rows16 % 16 == 0 && (uintptr_t)h.p % 8 == 0;
}

/* One norm launch: norm_vec_kernel where it is on and the shapes allow it. */
static void norm_launch(cudaStream_t st, float *y, const float *x, int rows, int d, int layer_kind,
                        const float *w, const float *b, float eps, const float *gate, int act,
                        int parts, size_t part_stride, const float *res, float alpha, float *sink,
                        rk_half h)
{
    if (norm_vec_fits(d, part_stride, y, x, res, sink, gate, h)) {
        unsigned per = (unsigned)norm_vec_block_rows(d, rows);
        launch(norm_vec_kernel, ((unsigned)rows + per - 1) / per,
               dim3((unsigned)norm_vec_threads(d), per), 0, st, y, x, d, layer_kind, w, b, eps,
               gate, act, parts, part_stride, res, alpha, sink, h, rows);
    } else
        launch(norm_kernel, (unsigned)rows, norm_threads(d), 0, st, y, x, d, layer_kind, w, b, eps,
               gate, act, parts, part_stride, res, alpha, sink, h);
}

void rk_norm(cudaStream_t st, float *y, const float *x, int rows, int d, int layer_kind,
             const float *w, const float *b, float eps, const float *gate, int act, rk_half h)
{
    norm_launch(st, y, x, rows, d, layer_kind, w, b, eps, gate, act, 1, 0, NULL, 1.0f, NULL, h);
}

void rk_norm_parts(cudaStream_t st, float *y, const float *x, int parts, size_t part_stride,
                   int rows, int d, int layer_kind, const float *w, const float *b, float eps,
                   const float *gate, int act, rk_half h)
{
    norm_launch(st, y, x, rows, d, layer_kind, w, b, eps, gate, act, parts, part_stride, NULL, 1.0f,
                parts > 1 ? y : NULL, h);
}

void rk_add_norm(cudaStream_t st, float *y, float *x, const float *res, float alpha, int rows,
                 int d, int layer_kind, const float *w, const float *b, float eps, rk_half h)
{
    norm_launch(st, y, x, rows, d, layer_kind, w, b, eps, NULL, 0, 1, 0, res, alpha, x, h);
}

/* --------------------------------------------------------------- rotary */

/* qk_kernel is in rope_dev.cuh, which the CPU unit tests also run
 * (tests/unit/cuda_emu.h) */
#include "rope_dev.cuh"

/* (row, feature pair)s from which qk_kernel gives a thread every head:
 * 64 Ki threads, a few hundred blocks, enough to keep the memory busy. */
#define QK_ALL_HEADS_PAIRS ((size_t)1 << 16)

static std::atomic<long> qk_half_passes;

long rk_qk_half_passes(void)
{
    return qk_half_passes.load();
}

int rk_qk_prepare(cudaStream_t st, float *q, float *k, int n, int H, int dk, const int64_t *pos,
                  const float *freq, int rotary, int interleaved, int scale_k, float scale,
                  const rk_qk_copies *cp)
{
    size_t all = (size_t)n * (size_t)H * (size_t)dk; /* every feature, odd dk too */
    int fused = rotary && dk % 2 == 0;
    if (!fused)
        launch(scale_kernel, blocks_for(all), BLOCK, 0, st, scale_k ? k : q, all, scale);
    if (!rotary)
        return 0;
    /* all heads a thread where the (row, pair)s alone fill the device (a
     * prefill chunk), else one head a thread (decode rows), so the loads
     * of one head after another do not become the kernel's latency */
    size_t pairs = (size_t)n * (size_t)(dk / 2);
    int hpt = pairs >= QK_ALL_HEADS_PAIRS ? H : 1, copies = fused && cp && cp->rows > 0;
    size_t threads = pairs * (size_t)((H + hpt - 1) / hpt);
    rk_qk_copies none = {};
    launch(copies ? qk_kernel<1> : qk_kernel<0>, blocks_for(threads), BLOCK, 0, st, q, k, n, H, dk,
           pos, freq, interleaved, scale_k, fused ? scale : 1.0f, hpt, copies ? *cp : none);
    if (copies)
        qk_half_passes++;
    return copies;
}

/* ----------------------------------------------------- recurrent step */

/* svec, step_load, ret_step_kernel and ts_step_kernel are in step_dev.cuh,
 * which the CPU unit tests also run (tests/unit/cuda_emu.h) */
#include "step_dev.cuh"

void rk_ret_step(cudaStream_t st, float *o, size_t part_stride, rk_states S, const int *slots,
                 const float *q, const float *k, const float *v, const float *gamma, int n, int H,
                 int dk, int dv, const rn_cuda_step_shape *sh, int early)
{
    dim3 grid((unsigned)(n * H), (unsigned)sh->grid_y, (unsigned)sh->row_split);
    dim3 block((unsigned)sh->lanes, (unsigned)sh->d_split);
    int rows = (dk + sh->row_split - 1) / sh->row_split;
    size_t shm = sizeof(float) * (size_t)sh->lanes * (size_t)sh->vec * (size_t)sh->d_split;
    if (S.bf16 && sh->vec == 4)
        launch(ret_step_kernel<4, __nv_bfloat16>, grid, block, shm, st, o, part_stride, S, slots, q,
               k, v, gamma, H, dk, dv, rows, early);
    else if (S.bf16)
        launch(ret_step_kernel<1, __nv_bfloat16>, grid, block, shm, st, o, part_stride, S, slots, q,
               k, v, gamma, H, dk, dv, rows, early);
    else if (sh->vec == 4)
        launch(ret_step_kernel<4, float>, grid, block, shm, st, o, part_stride, S, slots, q, k, v,
               gamma, H, dk, dv, rows, early);
    else
        launch(ret_step_kernel<1, float>, grid, block, shm, st, o, part_stride, S, slots, q, k, v,
               gamma, H, dk, dv, rows, early);
    if (S.s_off)
        launch(ts_step_kernel, blocks_for((size_t)n * (size_t)H), BLOCK, 0, st, S, slots, gamma, n,
               H);
}

/* --------------------------------------------------- chunkwise helpers */

void rk_decay_table(cudaStream_t st, float *pw, const double *log_gamma, int H, int C)
{
    launch(decay_table_kernel, blocks_for((size_t)H * (size_t)(C + 1)), BLOCK, 0, st, pw, log_gamma,
           H, C);
}

void rk_decay_mask(cudaStream_t st, float *A, const float *pw, int count, int H, int C)
{
    unsigned rows = (unsigned)count * (unsigned)C;
    if (C % 4 == 0 && (uintptr_t)A % 16 == 0)
        launch(decay_mask4_kernel, rows, row_threads((unsigned)C / 4u), 0, st, A, pw, H, C);
    else
        launch(decay_mask_kernel, rows, BLOCK, 0, st, A, pw, H, C);
}

/* scale_pieces_kernel is in pieces_dev.cuh, which the CPU unit tests also
 * run (tests/unit/cuda_emu.h) */
#include "pieces_dev.cuh"

/* scale_pieces_kernel<N, T> for rows of dk values into dst. */
template <typename T>
static void scale_pieces_launch(cudaStream_t st, T *dst, const float *src, const float *pw, int H,
                                int P, int dk, int key, unsigned rows)
{
    unsigned bx, by, grid;
    /* 4 values a thread where every row starts on 16 bytes (the scratch's
     * split need not) */
    int n = dk % 4 == 0 && ((uintptr_t)dst | (uintptr_t)src) % 16 == 0 ? 4 : 1;
    scale_pieces_shape(dk, n, rows, &bx, &by, &grid);
    if (n == 4)
        launch(scale_pieces_kernel<4, T>, grid, dim3(bx, by), 0, st, dst, src, pw, H, P, dk, key,
               rows);
    else
        launch(scale_pieces_kernel<1, T>, grid, dim3(bx, by), 0, st, dst, src, pw, H, P, dk, key,
               rows);
}

void rk_scale_pieces(cudaStream_t st, void *dst, const float *src, const float *pw, int H, int P,
                     int pieces, int dk, int key, int bf16)
{
    unsigned rows = (unsigned)pieces * (unsigned)H * (unsigned)P;
    if (bf16)
        scale_pieces_launch(st, (__nv_bfloat16 *)dst, src, pw, H, P, dk, key, rows);
    else
        scale_pieces_launch(st, (float *)dst, src, pw, H, P, dk, key, rows);
}

/* scan_pieces_kernel is in scan_dev.cuh, which the CPU unit tests also
 * run (tests/unit/cuda_emu.h) */
#include "scan_dev.cuh"

void rk_scan_pieces(cudaStream_t st, float *Sl, float *U, void *Uh, const float *pw, int H, int P,
                    int pieces, size_t hkv)
{
    launch(scan_pieces_kernel, blocks_for(hkv), BLOCK, 0, st, Sl, U, (__nv_bfloat16 *)Uh, pw, P,
           pieces, hkv, hkv / (size_t)H);
}

/* ------------------------------------------- fused chunkwise retention
 * (the kernel is in ret_fused.cuh, which the CPU unit tests also run
 * through an emulation of the CUDA features it uses) */
#include "ret_fused.cuh"

size_t rk_ret_fused_smem(int dk, int dv)
{
    return dv % 64 == 0 && dv / 64 <= RF_MAX_NC ? rf_layout_for(dk, dv).total : 0;
}

size_t rk_ret_fused_norm_smem(int dk, int dv)
{
    return rk_ret_fused_smem(dk, dv) ? rf_norm_smem(dk, dv) : 0;
}

int rk_ret_fused_fits(int P, int dk, int dv, size_t smem_max)
{
    size_t need = rk_ret_fused_smem(dk, dv);
    return P % RF_ROWS == 0 && dk % RF_ROWS == 0 && need && need <= smem_max;
}

static_assert(RF_ROWS == RK_RET_FUSED_ROWS, "the query tiles the host plans for");
static_assert(RF_SPLIT_MIN_NC * 64 == RN_CUDA_RET_SPLIT_MIN_DV && 2 * RF_SPLIT_MAX_NC >= RF_MAX_NC,
              "an instance for every share rn_cuda_ret_parts gives");
static std::atomic<long> rf_launches, rf_split_launches, rf_normed_launches, rf_wide_launches;

/* A callable that lets a ret_fused_kernel instance take the device's whole
 * opt-in shared memory (smem_optin): 0, or -1 where it refuses.  The limit
 * set is the whole allowance, not one shape's need: it holds per instance
 * for the process, and an engine of other heads sharing an instance must
 * not lower it under one already running. */
static auto rf_allow(size_t smem_optin)
{
    int optin = smem_optin > (size_t)INT_MAX ? INT_MAX : (int)smem_optin;
    return [optin](auto kern) {
        return cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, optin) ==
                       cudaSuccess
                   ? 0
                   : -1;
    };
}

/* rf_allow for the instances of both tilings (narrow and wide: the
 * engine's RETNET_CUDA_RET_WIDE picks one, another engine may pick the
 * other) of blocks of share columns, split or not, normalising or not:
 * 0, or -1 where the device refuses either. */
static int rf_allow_tilings(int share, int split, int norm, size_t smem_optin)
{
    for (int wide = 0; wide < 2; wide++)
        if (rf_with_kernel(share, split, norm, wide, rf_allow(smem_optin)) != 0)
            return -1;
    return 0;
}

int rk_ret_fused_prepare(int dk, int dv, size_t smem_optin)
{
    int rc = -1;
    /* each instance a split may launch (rn_cuda_ret_parts) too; the whole
     * head's decides, the shares only ever need less */
    for (int parts = 1; parts <= RN_CUDA_RET_SPLIT_MAX; parts *= 2) {
        int share = dv / parts;
        size_t smem = rk_ret_fused_smem(dk, share);
        int ok = dv % parts == 0 && smem && smem <= smem_optin &&
                 rf_allow_tilings(share, parts > 1, 0, smem_optin) == 0;
        if (parts == 1)
            rc = ok ? 0 : -1;
        if (!ok)
            cudaGetLastError(); /* a share that cannot be launched is never asked for */
    }
    return rc;
}

int rk_ret_fused(cudaStream_t st, float *o, const void *q, const void *k, const void *v,
                 const void *U, const float *pw, int pieces, int H, int P, int dk, int dv,
                 int parts, const rk_group_norm *gn, int wide)
{
    int share = parts >= 1 && dv % parts == 0 ? dv / parts : 0;
    rk_group_norm none = {}, norm = gn ? *gn : none;
    size_t smem = !share   ? 0
                  : norm.h ? rk_ret_fused_norm_smem(dk, share)
                           : rk_ret_fused_smem(dk, share);
    typedef const __nv_bfloat16 *bp;
    if (!smem || P % RF_ROWS || dk % RF_ROWS || pieces < 1 || (norm.h && parts > 1) ||
        rf_with_kernel(share, parts > 1, norm.h != NULL, wide, [&](auto kern) {
            launch(kern, dim3((unsigned)(pieces * H * parts), (unsigned)(P / RF_ROWS)), RF_THREADS,
                   smem, st, o, (bp)q, (bp)k, (bp)v, (bp)U, pw, H, P, dk, dv, norm);
            return 0;
        }))
        return -1;
    if (cudaGetLastError() != cudaSuccess)
        return -1; /* e.g. the shared memory was not allowed: rk_ret_fused_prepare */
    rf_launches++;
    rf_split_launches += parts > 1;
    rf_normed_launches += norm.h != NULL;
    rf_wide_launches += rf_wide_for(share / 64, wide);
    return 0;
}

int rk_ret_fused_prepare_norm(int dk, int dv, size_t smem_optin)
{
    size_t need = rk_ret_fused_norm_smem(dk, dv);
    int rc = need && need <= smem_optin ? rf_allow_tilings(dv, 0, 1, smem_optin) : -1;
    if (rc)
        cudaGetLastError(); /* refused: the caller keeps the separate norm */
    return rc;
}

long rk_ret_fused_launches(void)
{
    return rf_launches.load();
}

long rk_ret_fused_split_launches(void)
{
    return rf_split_launches.load();
}

long rk_ret_fused_normed_launches(void)
{
    return rf_normed_launches.load();
}

long rk_ret_fused_wide_launches(void)
{
    return rf_wide_launches.load();
}

void rk_decay_state(cudaStream_t st, rk_states S, int slot, const float *pw, int H, int C,
                    size_t hkv)
{
    float *Sl = (float *)S.base + (size_t)slot * S.slot_stride + S.layer_off;
    launch(decay_state_kernel, blocks_for(hkv), BLOCK, 0, st, Sl, pw, C, hkv, hkv / (size_t)H);
}

void rk_ts_chunk(cudaStream_t st, float *o, rk_states S, int slot, const float *pw, float *sums,
                 int H, int C, int dv)
{
    float *s_layer = (float *)S.base + (size_t)slot * S.slot_stride + S.layer_off + S.s_off;
    launch(ts_chunk_kernel, (unsigned)H, BLOCK, 0, st, o, s_layer, pw, sums, H, C, dv);
}

/* ---------------------------------------------------------- bf16 states */

void rk_state_expand(cudaStream_t st, float *dst, const void *src, size_t n)
{
    launch(state_expand_kernel, blocks_for(n), BLOCK, 0, st, dst, (const __nv_bfloat16 *)src, n);
}

void rk_state_compress(cudaStream_t st, void *dst, const float *src, size_t n)
{
    launch(state_compress_kernel, blocks_for(n), BLOCK, 0, st, (__nv_bfloat16 *)dst, src, n);
}

/* ---------------------------------------------------------- elementwise */

void rk_act(cudaStream_t st, float *x, size_t n, int act, rk_half h)
{
    launch(act_kernel, blocks_for(n), BLOCK, 0, st, x, n, act, h);
}

/* argmax_kernel is in argmax_dev.cuh, which the CPU unit tests also run */
#include "argmax_dev.cuh"

/* The kernels carry griddepcontrol only where they were compiled for sm_90
 * or later (pdl_wait): code JIT-compiled from older PTX must not be launched
 * as dependent, or it would race its predecessor. */
int rk_pdl_supported(void)
{
    cudaFuncAttributes a;
    return cudaFuncGetAttributes(&a, (const void *)argmax_kernel) == cudaSuccess &&
           a.ptxVersion >= 90 && a.binaryVersion >= 90;
}

void rk_argmax_rows(cudaStream_t st, int32_t *out, const float *logits, int rows, int V)
{
    launch(argmax_kernel, (unsigned)rows, ARGMAX_THREADS, 0, st, out, logits, V);
}

/* ------------------------------------------------- rows reduced for sampling
 * (the kernels are in top_dev.cuh, which the CPU unit tests also run) */
#include "top_dev.cuh"

void rk_top_rows(cudaStream_t st, rn_row_top *out, const float *logits, const float *temperature,
                 int rows, int V)
{
    launch(top_kernel, (unsigned)rows, TOP_THREADS, 0, st, out, logits, temperature, V);
}

void rk_glu(cudaStream_t st, float *up, const float *gate, size_t n, int act, rk_half h)
{
    if (n % 4 == 0 && ((uintptr_t)up | (uintptr_t)gate) % 16 == 0 && (uintptr_t)h.p % 8 == 0)
        launch(glu4_kernel, blocks_for(n / 4), BLOCK, 0, st, up, gate, n / 4, act, h);
    else
        launch(glu_kernel, blocks_for(n), BLOCK, 0, st, up, gate, n, act, h);
}

void rk_glu_halves(cudaStream_t st, rk_half h, const void *up, const void *gate, size_t n, int act)
{
    int one = n % 4 != 0 || ((uintptr_t)up | (uintptr_t)gate | (uintptr_t)h.p) % 8 != 0;
    launch(glu_halves_kernel, blocks_for(one ? n : n / 4), BLOCK, 0, st, h, up, gate, n, act, one);
}

void rk_residual(cudaStream_t st, float *x, const float *y, size_t n, float alpha)
{
    launch(residual_kernel, blocks_for(n), BLOCK, 0, st, x, y, n, alpha);
}

void rk_add_bias(cudaStream_t st, float *y, const float *b, int rows, int cols)
{
    launch(add_bias_kernel, blocks_for((size_t)rows * (size_t)cols), BLOCK, 0, st, y, b, rows,
           cols);
}

/* to_half_kernel is in norm_dev.cuh, beside the stores it shares, which
 * the CPU unit tests also run (tests/unit/cuda_emu.h) */
void rk_to_half(cudaStream_t st, void *dst, const float *src, size_t n, int t)
{
    rk_half h = {dst, t};
    int vec = to_half_vec_fits(src, h);
    size_t threads = vec ? (n + TO_HALF_VEC - 1) / TO_HALF_VEC : n;
    launch(to_half_kernel, blocks_for(threads), BLOCK, 0, st, h, src, n, vec);
}

/* ------------------------------------------------------------------ GEMV */

/* wvec, the row pairs, gemv_store, gemv_kernel and gemv_split_kernel are in
 * gemv_dev.cuh, which the CPU unit tests also run (tests/unit/cuda_emu.h) */
#include "gemv_dev.cuh"

/* Row pairs over all of set's jobs. */
static size_t set_pairs(const rk_gemv_set *set)
{
    size_t pairs = 0;
    for (int m = 0; m < set->count; m++)
        pairs += (size_t)gemv_pairs(set->job[m]);
    return pairs;
}

/* The work items of set for nb input rows: GEMV_PW(nb) row pairs each
 * (gemv_kernel's warps, gemv_split_kernel's blocks). */
static size_t set_items(const rk_gemv_set *set, int nb)
{
    return (set_pairs(set) + GEMV_PW(nb) - 1) / GEMV_PW(nb);
}

/* Columns a share of gemv_split_kernel takes at split (rounded up to 32,
 * so every share starts 16-byte aligned); 0 when split is 0. */
static int gemv_cols(int split)
{
    return (split + 31) / 32 * 32;
}

/* Whether rows of in values of weights loaded vec at a time go through
 * gemv_split_kernel at split: vector loads, 2 to GEMV_SPLIT_WARPS shares.
 * The split GEMV's bits, which gemv_norm_kernel also keeps. */
static int gemv_splits(int vec, int in, int split)
{
    int cols = gemv_cols(split), shares = cols > 0 ? (in + cols - 1) / cols : 0;
    return in % vec == 0 && shares > 1 && shares <= GEMV_SPLIT_WARPS;
}

/* f(std::integral_constant<int, n>()) for a batch of n rows (the GEMV
 * kernels are instantiated per row count; 8 for anything above 7). */
template <typename F> static void with_rows(int n, F f)
{
    static_assert(RN_CUDA_GEMV_MAX == 8, "with_rows instantiates batches 1..8");
    switch (n) {
    case 1:
        f(std::integral_constant<int, 1>());
        break;
    case 2:
        f(std::integral_constant<int, 2>());
        break;
    case 3:
        f(std::integral_constant<int, 3>());
        break;
    case 4:
        f(std::integral_constant<int, 4>());
        break;
    case 5:
        f(std::integral_constant<int, 5>());
        break;
    case 6:
        f(std::integral_constant<int, 6>());
        break;
    case 7:
        f(std::integral_constant<int, 7>());
        break;
    default:
        f(std::integral_constant<int, 8>());
    }
}

/* f((T *)NULL) for the weights' dtype t: bf16, fp16, else fp32. */
template <typename F> static void with_dtype(int t, F f)
{
    if (t == RN_DT_BF16)
        f((__nv_bfloat16 *)NULL);
    else if (t == RN_DT_F16)
        f((__half *)NULL);
    else
        f((float *)NULL);
}

/* split > 0 columns a share (where gemv_splits): gemv_split_kernel, a
 * block per item; else gemv_kernel, a warp per item. */
template <typename T, int NB>
static void gemv_launch(cudaStream_t st, const rk_gemv_set *set, const float *x, int in, int split)
{
    size_t warps = set_items(set, NB);
    unsigned blocks = (unsigned)((warps * 32 + GEMV_BLOCK - 1) / GEMV_BLOCK);
    int cols = gemv_cols(split);
    if (gemv_splits(wvec<T>::N, in, split))
        launch(gemv_split_kernel<T, NB>, (unsigned)warps, 32u * (unsigned)((in + cols - 1) / cols),
               0, st, *set, x, in, cols);
    else if (in % wvec<T>::N == 0)
        launch(gemv_kernel<T, NB, true>, blocks, GEMV_BLOCK, 0, st, *set, x, in);
    else
        launch(gemv_kernel<T, NB, false>, blocks, GEMV_BLOCK, 0, st, *set, x, in);
}

/* Whether nm's group norm (group > 0) fits gemv_group_rows: whole groups
 * in a row, the block's threads a multiple of a group's, and the operands
 * norm_vec_kernel would take in rk_norm_parts (norm_vec_fits: the raw rows
 * src, their parts and the gate on 16 bytes), so the launch it replaces
 * had the same values. */
static int gemv_group_fits(int in, const rk_gemv_norm *nm, const float *src)
{
    int g = nm->group, per = g > 0 ? norm_vec_threads(g) : 0;
    size_t stride = nm->parts > 1 ? nm->part_stride : 0;
    return g > 0 && in % g == 0 && gemv_norm_threads(in) % per == 0 &&
           gemv_norm_threads(in) / per <= GEMV_NORM_GROUP_SH &&
           norm_vec_fits(g, stride, src, src, NULL, NULL, nm->gate, rk_half());
}

int rk_gemv_norm_fits(int t, int n, int in, int split, const rk_gemv_norm *nm, const float *src)
{
    int group = nm->group > 0;
    return norm_vec_on && n >= 1 && n <= RN_CUDA_GEMV_MAX &&
           gemv_splits(t == RN_DT_F32 ? 4 : 8, in, split) &&
           gemv_norm_threads(in) <= GEMV_NORM_MAX_THREADS &&
           (!group || gemv_group_fits(in, nm, src)) &&
           (size_t)n * (size_t)in * sizeof(float) + gemv_norm_static_smem(n, group) <=
               RK_GEMV_NORM_SMEM;
}

/* Blocks of gemv_norm_kernel<T, NB, G> an SM holds at once with rows of in
 * values, as rk_gemv_norm_prepare found it: the width asked for and the
 * answer in one word (0: not asked, or for another width).  Asked at engine
 * init, outside any graph capture, where the occupancy query would be
 * refused and spoil the capture. */
template <typename T, int NB, bool G> static std::atomic<long> &gemv_norm_occ()
{
    static std::atomic<long> v{0};
    return v;
}

template <typename T, int NB, bool G> static int gemv_norm_per_sm(int in)
{
    long v = gemv_norm_occ<T, NB, G>().load(std::memory_order_relaxed);
    return v >> 16 == in ? (int)(v & 0xffff) : 0;
}

template <typename T, int NB, bool G> static void gemv_norm_occupancy(int in)
{
    int per_sm = 0;
    size_t shm = sizeof(float) * (size_t)NB * (size_t)in;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, gemv_norm_kernel<T, NB, G>,
                                                      gemv_norm_threads(in), shm) != cudaSuccess ||
        per_sm < 0 || per_sm > 0xffff) {
        per_sm = 0;
        cudaGetLastError();
    }
    gemv_norm_occ<T, NB, G>().store((long)in << 16 | per_sm, std::memory_order_relaxed);
}

/* f(std::integral_constant<bool, group>()) */
template <typename F> static void with_group(int group, F f)
{
    if (group)
        f(std::true_type());
    else
        f(std::false_type());
}

void rk_gemv_norm_prepare(int t, int max_n, int in, int group)
{
    with_dtype(t, [&](auto tag) {
        using T = std::remove_pointer_t<decltype(tag)>;
        with_group(group, [&](auto g) {
            for (int n = 1; n <= max_n && n <= RN_CUDA_GEMV_MAX; n++)
                with_rows(n, [&](auto nb) {
                    gemv_norm_occupancy<T, decltype(nb)::value, decltype(g)::value>(in);
                });
        });
    });
}

/* Launches of gemv_norm_kernel with a group norm so far in this process. */
static std::atomic<long> gemv_group_launches;

long rk_gemv_group_launches(void)
{
    return gemv_group_launches.load();
}

template <typename T, int NB, bool G>
static void gemv_norm_launch(cudaStream_t st, const rk_gemv_set *set, const float *xraw, int in,
                             int split, const rk_gemv_norm *nm, int n_sms)
{
    int cols = gemv_cols(split), shares = (in + cols - 1) / cols;
    int threads = gemv_norm_threads(in), slots = gemv_norm_slots(threads, shares);
    int items = (int)set_items(set, NB), per_sm = gemv_norm_per_sm<T, NB, G>(in);
    size_t shm = sizeof(float) * (size_t)NB * (size_t)in;
    /* one wave; unasked, one block an SM (more would only queue) */
    long blocks = ((long)items + slots - 1) / slots;
    long cap = (long)(per_sm > 0 ? per_sm : 1) * (n_sms > 0 ? n_sms : 1);
    launch(gemv_norm_kernel<T, NB, G>, (unsigned)(blocks < cap ? blocks : cap), (unsigned)threads,
           shm, st, *set, xraw, in, cols, *nm, items);
    if (G)
        gemv_group_launches++;
}

void rk_gemv_multi_norm(cudaStream_t st, const rk_gemv_set *set, int t, const float *xraw, int n,
                        int in, int split, const rk_gemv_norm *nm, int n_sms)
{
    with_dtype(t, [&](auto tag) {
        using T = std::remove_pointer_t<decltype(tag)>;
        with_group(nm->group > 0, [&](auto g) {
            with_rows(n, [&](auto nb) {
                gemv_norm_launch<T, decltype(nb)::value, decltype(g)::value>(st, set, xraw, in,
                                                                             split, nm, n_sms);
            });
        });
    });
}

void rk_gemv_multi(cudaStream_t st, const rk_gemv_set *set, int t, const float *x, int n, int in,
                   int split)
{
    with_dtype(t, [&](auto tag) {
        using T = std::remove_pointer_t<decltype(tag)>;
        with_rows(n, [&](auto nb) { gemv_launch<T, decltype(nb)::value>(st, set, x, in, split); });
    });
}

/* ---------------------------------------------------- tensor-core GEMV */

/* gemv_tc_kernel and gemv_tc_async_kernel are in gemv_tc_dev.cuh, which the
 * CPU unit tests also run (tests/unit/cuda_emu.h) */
#include "gemv_tc_dev.cuh"

/* Launches through the ring of p stages so far in this process. */
static std::atomic<long> tc_ring_launches[RN_CUDA_TC_STAGES_MAX + 1];

long rk_gemv_tc_ring_launches(int p)
{
    return p >= 2 && p <= RN_CUDA_TC_STAGES_MAX ? tc_ring_launches[p].load() : 0;
}

/* MT, NT's launch (tc_shape_for): through the cp.async ring where
 * o->stages asks for it and it finds room, else TC_LOADS loads in flight
 * per lane in registers, or twice that (loads 16) for one m-tile and one
 * pair group when a warp's share of k fills such a round (below that the
 * extra loads would only be zeros, at 128 registers instead of 78). */
template <typename T, int MT, int NT>
static void gemv_tc_launch(cudaStream_t st, const rk_gemv_set *set, const T *xh, int n, int in,
                           const rk_tc_opts *o)
{
    tc_shape s = tc_shape_for<MT, NT>(set_pairs(set), in, o->n_sms, o->stages, o->smem_block,
                                      o->smem_sm, o->k_per_warp);
    unsigned blocks = (unsigned)s.blocks, threads = 32u * (unsigned)s.sh.warps;
    static_assert(TC_LOADS == 8, "rn_cuda_tc_loads picks 8 or 16");
    static_assert(TC_STAGE_BYTES == RN_CUDA_TC_STAGE_BYTES, "the plan sizes the ring");
    if (s.stages) {
        tc_with_stages(s.stages, [&](auto pc) {
            launch(gemv_tc_async_kernel<T, MT, NT, decltype(pc)::value>, blocks, threads,
                   s.ring_bytes, st, *set, xh, n, in, s.sh.k_per_warp);
        });
        tc_ring_launches[s.stages]++;
        return;
    }
    if constexpr (MT == 1 && NT == 1) {
        if (rn_cuda_tc_loads(o->loads, MT, NT, s.sh.k_per_warp) == 2 * TC_LOADS) {
            launch(gemv_tc_kernel<T, 1, 1, 2 * TC_LOADS>, blocks, threads, s.part_bytes, st, *set,
                   xh, n, in, s.sh.k_per_warp);
            return;
        }
    }
    launch(gemv_tc_kernel<T, MT, NT, TC_LOADS>, blocks, threads, s.part_bytes, st, *set, xh, n, in,
           s.sh.k_per_warp);
}

static std::atomic<long> tc_stream_launches, tc_stream_short;

long rk_gemv_tc_stream_launches(void)
{
    return tc_stream_launches.load();
}

long rk_gemv_tc_stream_short(void)
{
    return tc_stream_short.load();
}

/* The stream-K launch of MT, NT (gemv_tc_stream_kernel) where the plan
 * takes the set (its groups spread over few enough warps) and o's buffers
 * hold what it needs; false where not (nothing launched).  Buffers too
 * small mean rn_cuda_tc_stream_bytes missed a launch the backend makes:
 * counted, and said once on stderr. */
template <typename T, int MT, int NT>
static bool gemv_tc_stream_launch(cudaStream_t st, const rk_gemv_set *set, const T *xh, int n,
                                  int in, const rk_tc_opts *o)
{
    tc_stream_launch_plan l = tc_stream_for<MT, NT>(set_pairs(set), in, o->n_sms);
    tc_stream_args a = l.a;
    if (a.warps < 1)
        return false;
    if (l.part_bytes > o->stream_part_bytes || l.groups > o->stream_groups) {
        if (tc_stream_short++ == 0)
            fprintf(stderr,
                    "cuda backend: a stream-K GEMV needs %zu bytes and %ld counters, more than "
                    "its buffers: the register kernel instead\n",
                    l.part_bytes, l.groups);
        return false;
    }
    a.part = o->stream_part, a.count = o->stream_count;
    launch(gemv_tc_stream_kernel<T, MT, NT>, (unsigned)l.blocks,
           32u * RN_CUDA_TC_STREAM_BLOCK_WARPS, 0, st, *set, xh, n, in, a);
    tc_stream_launches++;
    return true;
}

size_t rk_gemv_tc_stream_need(size_t pairs, int in, int n, int n_sms, long *groups)
{
    size_t bytes = 0;
    tc_stream_with_shape(n, [&](auto mt, auto nt) {
        constexpr int MT = decltype(mt)::value, NT = decltype(nt)::value;
        tc_stream_launch_plan l = tc_stream_for<MT, NT>(pairs, in, n_sms);
        bytes = l.part_bytes, *groups = l.groups;
    });
    return bytes;
}

void rk_gemv_tc(cudaStream_t st, const rk_gemv_set *set, int t, const void *xh, int n, int in,
                const rk_tc_opts *o)
{
    if (o->stream_part && o->stream_count) {
        bool done = false;
        tc_stream_with_shape(n, [&](auto mt, auto nt) {
            constexpr int MT = decltype(mt)::value, NT = decltype(nt)::value;
            done =
                t == RN_DT_BF16
                    ? gemv_tc_stream_launch<__nv_bfloat16, MT, NT>(
                          st, set, (const __nv_bfloat16 *)xh, n, in, o)
                    : gemv_tc_stream_launch<__half, MT, NT>(st, set, (const __half *)xh, n, in, o);
        });
        if (done)
            return;
    }
    int wide = rn_cuda_tc_groups(set_pairs(set), o->n_sms, o->groups) == 2;
    tc_with_shape(n, wide, [&](auto mt, auto nt) {
        constexpr int MT = decltype(mt)::value, NT = decltype(nt)::value;
        if (t == RN_DT_BF16)
            gemv_tc_launch<__nv_bfloat16, MT, NT>(st, set, (const __nv_bfloat16 *)xh, n, in, o);
        else
            gemv_tc_launch<__half, MT, NT>(st, set, (const __half *)xh, n, in, o);
    });
}

/* The async kernel's instance for dtype T, MT, NT and every ring depth
 * allowed up to smem bytes of dynamic shared memory. */
template <typename T> static int tc_prepare_dtype(int smem)
{
    int bad = 0;
    for (int wide = 0; wide < 2; wide++)
        for (int n = 1; n <= 33; n += 16)
            tc_with_shape(n, wide, [&](auto mt, auto nt) {
                constexpr int MT = decltype(mt)::value, NT = decltype(nt)::value;
                for (int p = 2; p <= RN_CUDA_TC_STAGES_MAX; p++)
                    tc_with_stages(p, [&](auto pc) {
                        const void *k =
                            (const void *)gemv_tc_async_kernel<T, MT, NT, decltype(pc)::value>;
                        bad |= cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                    smem) != cudaSuccess;
                    });
            });
    return bad ? -1 : 0;
}

int rk_gemv_tc_prepare(size_t smem_block)
{
    int smem = (int)smem_block;
    return tc_prepare_dtype<__nv_bfloat16>(smem) | tc_prepare_dtype<__half>(smem) ? -1 : 0;
}

/* ------------------------------------------------------------------ copy */

/* Asks L2 for bytes bytes from p (both multiples of 16), RK_L2_PIECE
 * bytes a thread, through the copy engine of its SM (bulk prefetch:
 * nothing comes back to the thread); a no-op before sm_90. */
#define RK_L2_PIECE ((size_t)16 << 10)
#define RK_L2_THREADS 32
__global__ void l2_fetch_kernel(const char *p, size_t bytes)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    size_t at = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) * RK_L2_PIECE;
    if (at < bytes) {
        unsigned len = (unsigned)(bytes - at < RK_L2_PIECE ? bytes - at : RK_L2_PIECE);
        asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(p + at), "r"(len)
                     : "memory");
    }
#else
    (void)p, (void)bytes;
#endif
}

static std::atomic<long> l2_fetches;

void rk_l2_fetch(cudaStream_t st, const void *p, size_t bytes)
{
    bytes &= ~(size_t)15;
    size_t per_block = RK_L2_PIECE * RK_L2_THREADS;
    if (!bytes || (uintptr_t)p % 16)
        return;
    launch_plain(l2_fetch_kernel, (unsigned)((bytes + per_block - 1) / per_block), RK_L2_THREADS, 0,
                 st, (const char *)p, bytes);
    l2_fetches++;
}

long rk_l2_fetches(void)
{
    return l2_fetches.load();
}

__global__ void copy_kernel(uint4 *dst, const uint4 *src, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dst[i] = src[i];
}

void rk_copy(cudaStream_t st, void *dst, const void *src, size_t n)
{
    size_t v = n / sizeof(uint4);
    launch_plain(copy_kernel, blocks_for(v, BLOCK * 8), BLOCK, 0, st, (uint4 *)dst,
                 (const uint4 *)src, v);
}
