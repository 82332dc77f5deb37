/* Chunkwise retention's read-out on bf16 tensor cores in one kernel
 * (ret_fused_kernel, launched by rk_ret_fused in kernels.cu): for each
 * (piece, head) of a chunk's full pieces, o_i = sum_(j <= i) g^(i-j)
 * (q_i . k_j) v_j + g^(i+1) q_i S_b, S_b the state entering the piece --
 * what retention_batched's cuBLAS products, decay mask and query scaling
 * give, without the scores, the masked matrix or the scaled queries going
 * through memory.
 *
 * Written in mma.m16n8k16, ldmatrix and cp.async (mma_dev.cuh): the
 * operands come in bf16 (q, k and v rounded once by rk_to_half, the
 * entering states by the scan), 16-byte copies land in shared memory behind the
 * tensor-core work, and the scores are masked in the registers the
 * product leaves them in.  Included by kernels.cu, after the CUDA
 * headers, rn_math.h and pdl_enter, and by the unit tests' emulation
 * (tests/unit/cuda_emu.h, RN_CUDA_EMU), which runs the same source on the
 * CPU with every lane's fragments placed as the PTX ISA's tables place
 * them, so the kernel's tiling, fragment bookkeeping, masking and decay
 * exponents are checked against a double-precision reference in every
 * CI run, without a GPU. */
#ifndef RN_CUDA_RET_FUSED_CUH
#define RN_CUDA_RET_FUSED_CUH

#include <type_traits>

#include "mma_dev.cuh"
#include "norm_dev.cuh"

/* A block owns 64 query rows of one (piece, head) and all dv value
 * columns, in 16 warps.  Narrow (RETNET_CUDA_RET_WIDE=0): warp (g, c)
 * owns the 16 rows of row group g and the value columns of column group c
 * (dv / 4 of them), and forms the scores of its rows against the 16 keys
 * of key group c of each 64-key tile, so each score is formed once for
 * all of dv (a block per column tile would form it dv / 128 times); a
 * barrier then lets every warp of a row group read the group's masked
 * scores.  Wide (the default, where dv / 64 is even): a warp owns 32 rows
 * by dv / 8 columns in the products (rf_tiling), and the first 8 warps
 * form the scores 16 rows by 32 keys (rf_score_tile), so fewer fragments
 * are loaded from shared memory for the same sums.
 *
 * Order: first the inter-piece term, q_i S_b over dk in rounds of 32
 * state rows (double-buffered), each row of it then times g^(i+1) (the
 * scaling commutes with the product); then for each key tile at or before
 * the rows, the scores, masked and rounded to bf16, times the tile's
 * values.  The key tile j+1 is copied in while tile j's values are
 * multiplied, and the values of tile j+1 while its scores are formed. */
#define RF_ROWS 64               /* query rows of a block, key rows of a tile */
#define RF_GROUPS (RF_ROWS / 16) /* row groups; also column groups, key groups */
#define RF_THREADS (RF_GROUPS * RF_GROUPS * 32)
#define RF_MAX_NC 8 /* value columns up to 64 RF_MAX_NC = 512 */
#define RF_PAD 8    /* bf16 values of padding a row: 16 bytes, so ldmatrix's 8 rows hit 8 banks */

/* The kernel's shared memory: byte offsets and row strides (elements) of
 * the queries, the key tile, the value tile (which first holds the
 * entering state's rows, two rounds of 32 at a time) and the masked
 * scores. */
struct rf_layout {
    int ldq, ldv, lds;
    size_t q, k, v, s, total;
};

__host__ __device__ static constexpr size_t rf_round(size_t n)
{
    return (n + 127) & ~(size_t)127;
}

__host__ __device__ static inline rf_layout rf_layout_for(int dk, int dv)
{
    rf_layout L;
    L.ldq = dk + RF_PAD, L.ldv = dv + RF_PAD, L.lds = RF_ROWS + RF_PAD;
    L.q = 0;
    L.k = L.q + rf_round((size_t)RF_ROWS * (size_t)L.ldq * 2);
    L.v = L.k + rf_round((size_t)RF_ROWS * (size_t)L.ldq * 2);
    L.s = L.v + rf_round((size_t)RF_ROWS * (size_t)L.ldv * 2);
    L.total = L.s + rf_round((size_t)RF_ROWS * (size_t)L.lds * 2);
    return L;
}

#ifdef RN_CUDA_EMU
#define RF_DYNAMIC_SMEM(name) unsigned char *name = rn_emu_dynamic_smem()
#else
#define RF_DYNAMIC_SMEM(name) extern __shared__ __align__(128) unsigned char name[]
#endif

/* Starts copying rows rows of cols bf16 values (a multiple of 8) from src
 * (row stride ld, 16-byte aligned) to dst (row stride ldd), by all
 * RF_THREADS threads; the caller commits the group. */
__device__ static void rf_copy_rows(__nv_bfloat16 *dst, int ldd, const __nv_bfloat16 *src,
                                    size_t ld, int rows, int cols)
{
    int per_row = cols / 8;
    for (int t = (int)threadIdx.x; t < rows * per_row; t += RF_THREADS) {
        int r = t / per_row, c = t % per_row * 8;
        rn_cp_async16(dst + (size_t)r * (size_t)ldd + c, src + (size_t)r * ld + (size_t)c);
    }
}

/* acc (the warp's MT row tiles of 16 rows, each x 8 NT columns: tile m's
 * n8 tiles at acc[m NT..], NT even) += a (16 MT rows at sa, row stride
 * lda, k wide) times b (k rows at sb, row stride ldb, row-major: ldmatrix
 * transposes it into the B fragments).  With stair, row tile m stops
 * 16 (MT - 1 - m) short of k: on the diagonal key tile the scores past a
 * row tile's last row are masked out, never formed.  Each B fragment
 * serves the MT row tiles, so a warp of 32 rows by 8 NT columns loads a
 * third fewer fragments than two warps of 16 rows; every output still sums
 * the same products in the same order of k, so the tiling changes no bit. */
template <int MT, int NT>
__device__ static void rf_mma_rows(float (*acc)[4], const __nv_bfloat16 *sa, int lda,
                                   const __nv_bfloat16 *sb, int ldb, int k, int stair)
{
    int lane = (int)threadIdx.x % 32;
    for (int kk = 0; kk < k; kk += 16) {
        uint32_t a[MT][4];
        bool on[MT];
#pragma unroll
        for (int m = 0; m < MT; m++) {
            on[m] = !stair || kk + 16 * (MT - 1 - m) < k;
            /* lanes 0-15: rows 0-15 at kk (a[0], a[1]); 16-31: at kk + 8 */
            if (on[m])
                rn_ldsm_x4(a[m],
                           sa + (size_t)(16 * m + lane % 16) * (size_t)lda + kk + lane / 16 * 8);
        }
        const __nv_bfloat16 *brow = sb + (size_t)(kk + lane / 8 % 2 * 8 + lane % 8) * (size_t)ldb;
#pragma unroll
        for (int n = 0; n < NT; n += 2) {
            uint32_t b[4];
            /* matrices: k 0-7 and 8-15 of columns 8n.., then of 8n + 8.. */
            rn_ldsm_x4_t(b, brow + n * 8 + lane / 16 * 8);
#pragma unroll
            for (int m = 0; m < MT; m++)
                if (on[m]) {
                    rn_mma_bf16(acc[m * NT + n], a[m], b);
                    rn_mma_bf16(acc[m * NT + n + 1], a[m], b + 2);
                }
        }
    }
}

/* Whether blocks of 64 nc columns go in wide warps when wide
 * (RETNET_CUDA_RET_WIDE) is asked for: where nc is even, so a product
 * warp's dv / 8 columns still come in pairs of n8 tiles.  Odd counts (no
 * preset has one) keep narrow warps: their wide instances would add to
 * the build for no model we serve. */
__host__ __device__ static constexpr int rf_wide_for(int nc, int wide)
{
    return wide && nc % 2 == 0;
}

/* How a block's 16 warps tile its 64 rows by dv columns for the products
 * into its accumulators: MT row tiles of 16 a warp, so RF_GROUPS / MT row
 * groups by RF_GROUPS MT column groups of cw = dv / (RF_GROUPS MT)
 * columns, nt = cw / 8 n8 tiles (even).  Warp w is (w % rg, w / rg); the
 * scores have a tiling of their own (rf_score_tile). */
template <int MT> struct rf_tiling {
    static constexpr int rg = RF_GROUPS / MT, cg = RF_GROUPS * MT;
};

/* Warp (g, c)'s 16 x 16 KT piece of the tile's masked scores -- query
 * rows i0 + 16 g.., keys j0 + 16 KT c.. of the piece, q k^T over dk from
 * sq and sk -- times the decay mask (pw: the head's table), rounded to
 * bf16 into ss.  On the diagonal tile (diag) the key groups of 16 past the
 * row group are masked out entirely: never formed (nor read by the
 * products).  With KT 2 each q fragment serves two key groups: 3 loads
 * for 4 mma instead of 4, in half the warps; each score sums the same
 * products in the same order either way. */
template <int KT>
__device__ static void rf_score_tile(__nv_bfloat16 *ss, const __nv_bfloat16 *sq,
                                     const __nv_bfloat16 *sk, const rf_layout &L, int dk,
                                     const float *pw, int i0, int j0, int g, int c, int diag)
{
    int lane = (int)threadIdx.x % 32;
    bool on[KT];
#pragma unroll
    for (int t = 0; t < KT; t++)
        on[t] = !diag || KT * c + t <= g;
    if (!on[0])
        return; /* the first key group is the warp's earliest */
    float s[KT][2][4] = {};
    const __nv_bfloat16 *qrow = sq + (size_t)(g * 16 + lane % 16) * (size_t)L.ldq + lane / 16 * 8;
    /* matrices: keys 0-7 at k and k + 8, then keys 8-15 at k and k + 8 --
     * key rows hold k^T's columns, so no transposition */
    const __nv_bfloat16 *krow =
        sk + (size_t)(KT * c * 16 + lane / 16 * 8 + lane % 8) * (size_t)L.ldq + lane / 8 % 2 * 8;
    for (int kk = 0; kk < dk; kk += 16) {
        uint32_t a[4];
        rn_ldsm_x4(a, qrow + kk);
#pragma unroll
        for (int t = 0; t < KT; t++)
            if (on[t]) {
                uint32_t b[4];
                rn_ldsm_x4(b, krow + (size_t)(16 * t) * (size_t)L.ldq + kk);
                rn_mma_bf16(s[t][0], a, b);
                rn_mma_bf16(s[t][1], a, b + 2);
            }
    }
    int r = g * 16 + lane / 4;
#pragma unroll
    for (int t = 0; t < KT; t++) {
        if (!on[t])
            continue;
        int col = (KT * c + t) * 16 + 2 * (lane % 4);
#pragma unroll
        for (int n = 0; n < 2; n++)
#pragma unroll
            for (int h = 0; h < 2; h++) { /* rows r and r + 8 */
                int row = r + 8 * h, key = col + 8 * n, i = i0 + row, j = j0 + key;
                uint32_t p = rn_pack_bf16(s[t][n][2 * h] * rn_decay_mask(pw, i, j),
                                          s[t][n][2 * h + 1] * rn_decay_mask(pw, i, j + 1));
                memcpy(ss + (size_t)row * (size_t)L.lds + key, &p, sizeof p);
            }
    }
}

/* Row stride, in floats, of the fp32 tile the normalising instance stages
 * its read-outs in: 8 past dv, so a warp's float2 stores of 8 rows by 4
 * lanes spread over the banks. */
__host__ __device__ static inline int rf_norm_ld(int dv)
{
    return dv + 8;
}

/* Dynamic shared memory of the normalising instance: the kernel's own, or
 * the staged 64-row tile of fp32 read-outs where that is larger. */
__host__ __device__ static inline size_t rf_norm_smem(int dk, int dv)
{
    size_t tile = (size_t)RF_ROWS * (size_t)rf_norm_ld(dv) * sizeof(float);
    size_t own = rf_layout_for(dk, dv).total;
    return tile > own ? tile : own;
}

/* The group norm and gate (gn) of the block's 64 rows, each a whole
 * head's dv values, into gn.h in bf16 in place of the fp32 store: every
 * thread first stages its accumulators (rows (g MT + m) 16 + lane / 4 and
 * + 8 of its row tiles m, its columns of column group c: rf_tiling) in an
 * fp32 tile over the shared memory the products are done with; then each
 * warp takes 4 rows, a lane 4 adjacent
 * values per 128 columns: the row's sum and sum of squares in double, as
 * the norm kernels take them (in another order: a lane's values, then a
 * shuffle tree, so a mean's last bits may differ from the separate
 * launch's), each value then as norm_value forms it, the gate read and
 * the bf16 values stored 4 at a time, a warp's loads and stores
 * contiguous.  row0: the element index of the block's first row, head's
 * first column, in rows of stride HV. */
template <int NC, int MT>
__device__ static void rf_store_normed(const float (*acc)[4], const rk_group_norm &gn, float *tile,
                                       size_t row0, size_t HV, int g, int c)
{
    const int dv = 64 * NC, cw = dv / rf_tiling<MT>::cg, nt = cw / 8, ld = rf_norm_ld(dv);
    int lane = (int)threadIdx.x % 32, warp = (int)threadIdx.x / 32;
    __syncthreads(); /* every warp past its last read of the products' operands */
#pragma unroll
    for (int m = 0; m < MT; m++)
#pragma unroll
        for (int n = 0; n < nt; n++) {
            const float *a = acc[m * nt + n];
            float *t = tile + (size_t)((g * MT + m) * 16 + lane / 4) * ld + c * cw + 8 * n +
                       2 * (lane % 4);
            *(float2 *)t = make_float2(a[0], a[1]);
            *(float2 *)(t + 8 * ld) = make_float2(a[2], a[3]);
        }
    __syncthreads();
    constexpr int J = (64 * NC + 127) / 128; /* a lane's 4-value pieces of a row */
    for (int row = warp; row < RF_ROWS; row += RF_THREADS / 32) {
        float v[J][4];
        double s = 0.0, ss = 0.0;
#pragma unroll
        for (int j = 0; j < J; j++) {
            int k = 128 * j + 4 * lane;
            if (k < dv) {
                load4(tile + (size_t)row * ld + k, v[j]);
#pragma unroll
                for (int e = 0; e < 4; e++)
                    sum2_add(s, ss, v[j][e]);
            }
        }
        for (int o = 16; o > 0; o >>= 1) {
            s += __shfl_xor_sync(0xffffffffu, s, o);
            ss += __shfl_xor_sync(0xffffffffu, ss, o);
        }
        double mu;
        float r;
        norm_stats_of(s, ss, dv, gn.layer_kind, gn.eps, mu, r);
        size_t at = row0 + (size_t)row * HV;
#pragma unroll
        for (int j = 0; j < J; j++) {
            int k = 128 * j + 4 * lane;
            if (k >= dv)
                continue;
            float gv[4] = {}, out[4];
            if (gn.gate)
                load4(gn.gate + at + (size_t)k, gv);
#pragma unroll
            for (int e = 0; e < 4; e++)
                out[e] =
                    norm_value(v[j][e], mu, r, gn.w, NULL, k + e, gn.gate ? gv + e : NULL, gn.act);
            store4(NULL, rk_half{gn.h, RN_DT_BF16}, at + (size_t)k, out);
        }
    }
}

/* Grid: (pieces x H x parts, P / 64 query tiles), RF_THREADS threads.
 * With SPLIT, a head's dvf value columns go in `parts` (gridDim.x /
 * (pieces H)) shares of dv = 64 NC, a block each, so a short chunk's few
 * (piece, head)s can still fill the SMs; each share forms the scores
 * again, and each output sums the same products in the same order as
 * with one share, so the split changes no bit.  Without, dvf is dv and
 * the block takes the head's every column (an instance of its own, so the
 * whole heads' code keeps its registers).  o (fp32, row stride H dvf):
 * the chunk's read-outs; q, k (row stride H dk) and v (H dvf): its rows
 * in bf16; U: the (piece, head)s' entering states in bf16, dk x dvf
 * row-major at (piece H + head) dk dvf; pw: the decay table for P, a row
 * of P + 1 a head.  NORM (whole heads only, gn.h set): the rows go
 * through the group norm and gate into gn.h (rf_store_normed, with
 * rf_norm_smem bytes of shared memory) and o is not written; an instance
 * of its own, so the others keep their registers.  WIDE (NC even:
 * rf_wide_for): warps of 32 rows in the products (rf_tiling with MT 2)
 * and of 32 keys in the scores (rf_score_tile with KT 2), the same bits
 * either way. */
template <int NC, int SPLIT, int NORM, int WIDE>
__global__ void __launch_bounds__(RF_THREADS, 1)
    ret_fused_kernel(float *o, const __nv_bfloat16 *q, const __nv_bfloat16 *k,
                     const __nv_bfloat16 *v, const __nv_bfloat16 *U, const float *pw, int H, int P,
                     int dk, int dv_head, rk_group_norm gn)
{
    static_assert(!(SPLIT && NORM), "a split block holds part of a head");
    static_assert(!WIDE || rf_wide_for(NC, 1), "wide warps take an even count of 64 columns");
    constexpr int MT = WIDE ? 2 : 1, KT = WIDE ? 2 : 1;
    pdl_enter();
    RF_DYNAMIC_SMEM(rf_smem);
    /* the block's share; a product warp's columns and their n8 tiles */
    const int dv = 64 * NC, cw = dv / rf_tiling<MT>::cg, nt = cw / 8;
    const int dvf = SPLIT ? dv_head : dv, parts = SPLIT ? dvf / dv : 1;
    const int HK = H * dk, HV = H * dvf;
    const rf_layout L = rf_layout_for(dk, dv);
    __nv_bfloat16 *sq = (__nv_bfloat16 *)(rf_smem + L.q), *sk = (__nv_bfloat16 *)(rf_smem + L.k);
    __nv_bfloat16 *sv = (__nv_bfloat16 *)(rf_smem + L.v), *ss = (__nv_bfloat16 *)(rf_smem + L.s);
    /* the last query tiles have the most key tiles: they start first (the
     * shares of a (piece, head) are adjacent in x, so they start together) */
    int b = SPLIT ? (int)blockIdx.x / parts : (int)blockIdx.x;
    int col0 = SPLIT ? (int)blockIdx.x % parts * dv : 0;
    int qt = (int)(gridDim.y - 1 - blockIdx.y), i0 = qt * RF_ROWS;
    int head = b % H, lane = (int)threadIdx.x % 32, warp = (int)threadIdx.x / 32;
    /* (g, c): the warp's 16 x 16 KT tile of scores (the first 16 / KT
     * warps); (pg, pc): its row group of 16 MT rows and its column group
     * in the products */
    int g = warp % RF_GROUPS, c = warp / RF_GROUPS;
    int pg = warp % rf_tiling<MT>::rg, pc = warp / rf_tiling<MT>::rg, pr = pg * MT * 16;
    size_t row0 = (size_t)(b / H) * (size_t)P; /* the piece's first row in the chunk */
    const __nv_bfloat16 *qb = q + row0 * (size_t)HK + (size_t)head * (size_t)dk;
    const __nv_bfloat16 *kb = k + row0 * (size_t)HK + (size_t)head * (size_t)dk;
    const __nv_bfloat16 *vb = v + row0 * (size_t)HV + (size_t)head * (size_t)dvf + col0;
    const __nv_bfloat16 *Sb = U + (size_t)b * (size_t)dk * (size_t)dvf + col0;
    const float *p = pw + (size_t)head * (size_t)(P + 1);
    float acc[2 * NC][4] = {}; /* MT row tiles of nt n8 tiles: 2 NC either way */

    /* q_i S_b over dk: the state's rows 32 at a time, through the two
     * halves of sv in turn, so each half fills while the other is used;
     * key tile 0 comes in behind them, and sv takes value tile 0 once the
     * last round is done */
    const int SR = RF_ROWS / 2;
    rf_copy_rows(sq, L.ldq, qb + (size_t)i0 * (size_t)HK, (size_t)HK, RF_ROWS, dk);
    rf_copy_rows(sv, L.ldv, Sb, (size_t)dvf, SR, dv);
    rn_cp_async_commit();
    rf_copy_rows(sv + (size_t)SR * L.ldv, L.ldv, Sb + (size_t)SR * dvf, (size_t)dvf, SR, dv);
    rn_cp_async_commit();
    rf_copy_rows(sk, L.ldq, kb, (size_t)HK, RF_ROWS, dk);
    rn_cp_async_commit();
    for (int m0 = 0; m0 < dk; m0 += SR) {
        __nv_bfloat16 *half = sv + (size_t)(m0 / SR % 2) * SR * L.ldv;
        if (m0 == 0)
            rn_cp_async_wait<2>(); /* q and the first rows */
        else
            rn_cp_async_wait<1>(); /* this round's rows (and key tile 0 by now) */
        __syncthreads();
        rf_mma_rows<MT, 2 * NC / MT>(acc, sq + (size_t)pr * L.ldq + m0, L.ldq, half + pc * cw,
                                     L.ldv, SR, 0);
        __syncthreads(); /* before the half takes the rows two rounds on */
        if (m0 + 2 * SR < dk)
            rf_copy_rows(half, L.ldv, Sb + (size_t)(m0 + 2 * SR) * dvf, (size_t)dvf, SR, dv);
        else if (m0 + SR == dk) /* the last round: both halves are free */
            rf_copy_rows(sv, L.ldv, vb, (size_t)HV, RF_ROWS, dv);
        rn_cp_async_commit();
    }
#pragma unroll
    for (int m = 0; m < MT; m++) {
        int r = i0 + pr + 16 * m + lane / 4;
        float s0 = p[r + 1], s8 = p[r + 9];
#pragma unroll
        for (int n = 0; n < nt; n++) {
            float *a = acc[m * nt + n];
            a[0] *= s0, a[1] *= s0, a[2] *= s8, a[3] *= s8;
        }
    }
    for (int j0 = 0; j0 <= i0; j0 += RF_ROWS) { /* the key tiles at or before the rows */
        int diag = j0 == i0;
        rn_cp_async_wait<1>(); /* key tile j0 (its value tile may still be coming) */
        __syncthreads();
        if (warp < RF_THREADS / 32 / KT) /* the others wait at the barrier */
            rf_score_tile<KT>(ss, sq, sk, L, dk, p, i0, j0, g, c, diag);
        __syncthreads(); /* the row groups' scores; sk is free */
        if (!diag)
            rf_copy_rows(sk, L.ldq, kb + (size_t)(j0 + RF_ROWS) * (size_t)HK, (size_t)HK, RF_ROWS,
                         dk);
        rn_cp_async_commit();
        rn_cp_async_wait<1>(); /* value tile j0 */
        __syncthreads();
        /* on the diagonal, row tile m of the warp's takes the keys up to
         * its own last row (the stair) */
        rf_mma_rows<MT, 2 * NC / MT>(acc, ss + (size_t)pr * L.lds, L.lds, sv + pc * cw, L.ldv,
                                     diag ? pr + 16 * MT : RF_ROWS, diag);
        __syncthreads(); /* before sv and ss take the next tile's */
        if (!diag)
            rf_copy_rows(sv, L.ldv, vb + (size_t)(j0 + RF_ROWS) * (size_t)HV, (size_t)HV, RF_ROWS,
                         dv);
        rn_cp_async_commit();
    }
    rn_cp_async_wait<0>(); /* the diagonal's empty groups */
    if constexpr (NORM) {
        rf_store_normed<NC, MT>(acc, gn, (float *)rf_smem,
                                (row0 + (size_t)i0) * (size_t)HV + (size_t)head * dvf, (size_t)HV,
                                pg, pc);
    } else {
#pragma unroll
        for (int m = 0; m < MT; m++) {
            float *ob = o + (row0 + (size_t)(i0 + pr + 16 * m + lane / 4)) * (size_t)HV +
                        (size_t)head * dvf + (size_t)(col0 + pc * cw + 2 * (lane % 4));
#pragma unroll
            for (int n = 0; n < nt; n++) {
                const float *a = acc[m * nt + n];
                *(float2 *)(ob + n * 8) = make_float2(a[0], a[1]);
                *(float2 *)(ob + (size_t)8 * HV + n * 8) = make_float2(a[2], a[3]);
            }
        }
    }
}

/* f(std::integral_constant<int, nc>()) for the first NC from which nc is
 * reached, up to RF_MAX_NC; -1 past it. */
template <int NC, typename F> static int rf_with_nc_from(int nc, F f)
{
    if constexpr (NC > RF_MAX_NC)
        return -1;
    else
        return nc == NC ? f(std::integral_constant<int, NC>()) : rf_with_nc_from<NC + 1>(nc, f);
}

/* f(std::integral_constant<int, dv / 64>()) for dv a multiple of 64 up to
 * 64 RF_MAX_NC: the kernel's instance for these heads; -1 for other
 * widths. */
template <typename F> static int rf_with_nc(int dv, F f)
{
    return dv % 64 || dv < 64 ? -1 : rf_with_nc_from<1>(dv / 64, f);
}

/* Narrowest and widest shares a split launch gives a block, in 64
 * columns: 128 columns (rn_cuda_ret_parts's least), and half the widest
 * head. */
#define RF_SPLIT_MIN_NC 2
#define RF_SPLIT_MAX_NC (RF_MAX_NC / 2)

/* f(kernel) with ret_fused_kernel's instance for blocks of share value
 * columns, a share of a split head's (split) or a whole head's, normalising
 * its rows (norm; whole heads only), its warps wide where asked and the
 * share allows (rf_wide_for); -1
 * where there is none (a share outside RF_SPLIT_MIN_NC..RF_SPLIT_MAX_NC
 * 64 columns, or norm with split). */
template <typename F> static int rf_with_kernel(int share, int split, int norm, int wide, F f)
{
    if (split && norm)
        return -1;
    return rf_with_nc(share, [&](auto nc) {
        constexpr int NC = decltype(nc)::value;
        auto with = [&](auto w) {
            constexpr int W = decltype(w)::value;
            if (norm)
                return f(ret_fused_kernel<NC, 0, 1, W>);
            if constexpr (NC >= RF_SPLIT_MIN_NC && NC <= RF_SPLIT_MAX_NC)
                return split ? f(ret_fused_kernel<NC, 1, 0, W>) : f(ret_fused_kernel<NC, 0, 0, W>);
            else
                return split ? -1 : f(ret_fused_kernel<NC, 0, 0, W>);
        };
        if constexpr (rf_wide_for(NC, 1))
            if (wide)
                return with(std::integral_constant<int, 1>());
        return with(std::integral_constant<int, 0>());
    });
}

#endif
