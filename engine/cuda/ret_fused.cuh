/* Chunkwise retention on bf16 tensor cores: the fused read-out kernel
 * (ret_fused_kernel) and the pieces' own state parts (ret_own_kernel),
 * launched by rk_ret_fused and rk_ret_own (kernels.cu).
 *
 * Included by kernels.cu, after the CUDA headers, rn_math.h and
 * pdl_enter, and by the unit tests' emulation of the CUDA features these
 * kernels use (tests/unit/cuda_emu.h, RN_CUDA_EMU defined), which runs
 * the same source on the CPU: each thread a host thread, the barriers
 * real, a warp's WMMA operations done once on whole 16x16 tiles.  So the
 * kernels' indexing, tiling, masking and decay exponents are checked
 * against a double-precision reference in every CI run, without a GPU. */
#ifndef RN_CUDA_RET_FUSED_CUH
#define RN_CUDA_RET_FUSED_CUH

#include <type_traits>

/* A piece's read-out in one kernel on bf16 tensor cores (WMMA 16x16x16,
 * fp32 accumulation), for 16-bit models: a block owns 64 query rows of one
 * (piece, head) and all dv value columns.  For every 64-row key tile at or
 * before its rows it forms the scores q k^T once, scales them by the decay
 * mask, rounds them to bf16 and adds their product with the values; then
 * it adds the inter-piece term (q_i g^(i+1)) S_b, S_b the state entering
 * the piece.  The operands are rounded to bf16 as cuBLAS's FAST_16BF
 * rounds them (RETNET_CUDA_RET_BF16), and the mask is applied to the fp32
 * scores as rk_decay_mask applies it, but the scores, the masked matrix
 * and qd never go through memory.
 *
 * 16 warps: warp (g, c) owns the 16 query rows of row group g and the
 * value columns of column group c (dv / 4 of them, NC fragments), and
 * forms the scores of its rows against the keys of key group c, so each
 * score is computed once for all of dv (a block per column tile would
 * compute it dv / 128 times); a barrier then lets every warp of a row
 * group read the group's masked scores. */
#define RF_ROWS 64               /* query rows of a block, key rows of a step */
#define RF_GROUPS (RF_ROWS / 16) /* row groups; also column groups, key groups */
#define RF_THREADS (RF_GROUPS * RF_GROUPS * 32)
#define RF_MAX_NC 8 /* fragments of a warp's value columns: dv up to 512 */
#define RF_PAD 8    /* bf16 values of padding a row: 16 bytes, rows on other banks */

/* The read-out kernel's shared memory: byte offsets and row strides
 * (elements).  The value buffer also holds the entering state's rows, 64
 * at a time, and the query buffer the queries times g^(i+1). */
struct rf_layout {
    int ldq, ldv, ldf, lds;
    size_t q, k, v, f, s, total;
};

__host__ __device__ static constexpr size_t rf_round(size_t n)
{
    return (n + 127) & ~(size_t)127;
}

__host__ __device__ static inline rf_layout rf_layout_for(int dk, int dv)
{
    rf_layout L;
    L.ldq = dk + RF_PAD, L.ldv = dv + RF_PAD, L.ldf = RF_ROWS + 4, L.lds = RF_ROWS + RF_PAD;
    L.q = 0;
    L.k = L.q + rf_round((size_t)RF_ROWS * (size_t)L.ldq * 2);
    L.v = L.k + rf_round((size_t)RF_ROWS * (size_t)L.ldq * 2);
    L.f = L.v + rf_round((size_t)RF_ROWS * (size_t)L.ldv * 2);
    L.s = L.f + rf_round((size_t)RF_ROWS * (size_t)L.ldf * 4);
    L.total = L.s + rf_round((size_t)RF_ROWS * (size_t)L.lds * 2);
    return L;
}

/* RF_ROWS rows of cols fp32 values (cols a multiple of 4, rows 16-byte
 * aligned) from src (row stride ld) into bf16 dst (row stride ldd), each
 * row times scale[row * step] first when scale is non-NULL (the fp32
 * product, then the rounding), by a block of NT threads. */
template <int NT>
__device__ static void rf_load(__nv_bfloat16 *dst, int ldd, const float *src, size_t ld, int cols,
                               const float *scale, int step = 1)
{
    int per_row = cols / 4;
    for (int t = (int)threadIdx.x; t < RF_ROWS * per_row; t += NT) {
        int r = t / per_row, c = t % per_row * 4;
        float4 x = *(const float4 *)(src + (size_t)r * ld + (size_t)c);
        if (scale) {
            float s = scale[r * step];
            x.x *= s, x.y *= s, x.z *= s, x.w *= s;
        }
        __nv_bfloat162 *d = (__nv_bfloat162 *)(dst + (size_t)r * (size_t)ldd + (size_t)c);
        d[0] = __floats2bfloat162_rn(x.x, x.y);
        d[1] = __floats2bfloat162_rn(x.z, x.w);
    }
}

#if (defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800) || defined(RN_CUDA_EMU)
#define RF_WMMA 1
#else
#define RF_WMMA 0 /* the backend takes this path on sm_80 and later only */
#endif

#ifdef RN_CUDA_EMU
#define RF_DYNAMIC_SMEM(name) unsigned char *name = rn_emu_dynamic_smem()
#else
#define RF_DYNAMIC_SMEM(name) extern __shared__ __align__(128) unsigned char name[]
#endif

#if RF_WMMA
typedef nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, float> rf_acc;
typedef nvcuda::wmma::fragment<nvcuda::wmma::matrix_a, 16, 16, 16, __nv_bfloat16,
                               nvcuda::wmma::row_major>
    rf_a;
typedef nvcuda::wmma::fragment<nvcuda::wmma::matrix_a, 16, 16, 16, __nv_bfloat16,
                               nvcuda::wmma::col_major>
    rf_a_col;
typedef nvcuda::wmma::fragment<nvcuda::wmma::matrix_b, 16, 16, 16, __nv_bfloat16,
                               nvcuda::wmma::row_major>
    rf_b_row;
typedef nvcuda::wmma::fragment<nvcuda::wmma::matrix_b, 16, 16, 16, __nv_bfloat16,
                               nvcuda::wmma::col_major>
    rf_b_col;

/* The 16x16 piece of the masked scores of row group g against key group c
 * (query rows i0 + 16 g .., keys j0 + 16 c .. of the piece), by warp (g, c):
 * q k^T over dk from sq and sk, times the decay mask, rounded to bf16 into
 * ss (through the warp's own part of sf). */
__device__ static void rf_score_piece(__nv_bfloat16 *ss, float *sf, const __nv_bfloat16 *sq,
                                      const __nv_bfloat16 *sk, const rf_layout &L, int dk,
                                      const float *pw, int i0, int j0, int g, int c)
{
    using namespace nvcuda;
    int lane = (int)threadIdx.x % 32;
    rf_acc s;
    wmma::fill_fragment(s, 0.0f);
    for (int kk = 0; kk < dk; kk += 16) {
        rf_a a;
        rf_b_col b; /* k^T: key rows stored row-major are its columns */
        wmma::load_matrix_sync(a, sq + (size_t)g * 16 * L.ldq + kk, (unsigned)L.ldq);
        wmma::load_matrix_sync(b, sk + (size_t)c * 16 * L.ldq + kk, (unsigned)L.ldq);
        wmma::mma_sync(s, a, b, s);
    }
    float *f = sf + (size_t)g * 16 * L.ldf + c * 16;
    wmma::store_matrix_sync(f, s, (unsigned)L.ldf, wmma::mem_row_major);
    __syncwarp();
    __nv_bfloat16 *o = ss + (size_t)g * 16 * L.lds + c * 16;
    for (int e = lane; e < 16 * 16; e += 32) {
        int r = e / 16, col = e % 16;
        float m = rn_decay_mask(pw, i0 + g * 16 + r, j0 + c * 16 + col);
        o[r * L.lds + col] = __float2bfloat16_rn(f[r * L.ldf + col] * m);
    }
}

/* acc (16 rows x NC 16-column fragments) += a (16 rows of sa, k wide, row
 * stride lda) times b (k rows of sb, 16 NC columns, row stride ldb). */
template <int NC>
__device__ static void rf_accumulate(rf_acc *acc, const __nv_bfloat16 *sa, int lda,
                                     const __nv_bfloat16 *sb, int ldb, int k)
{
    using namespace nvcuda;
    for (int kk = 0; kk < k; kk += 16) {
        rf_a a;
        wmma::load_matrix_sync(a, sa + kk, (unsigned)lda);
#pragma unroll
        for (int n = 0; n < NC; n++) {
            rf_b_row b;
            wmma::load_matrix_sync(b, sb + (size_t)kk * ldb + n * 16, (unsigned)ldb);
            wmma::mma_sync(acc[n], a, b, acc[n]);
        }
    }
}

/* The end of a read-out block, by every one of its NT threads: acc (the
 * warp's 16 rows of row group g, NC fragments from column col of sv) +=
 * (q_i g^(i+1)) S -- the block's query rows q (row stride HK, dk wide)
 * reloaded into sq times qscale[row], the entering state's rows s (row
 * stride dv, cols wide) brought into sv 64 at a time -- then the warp's
 * tile stored at o (row stride HV). */
template <int NT, int NC>
__device__ static void rf_inter_and_store(rf_acc *acc, __nv_bfloat16 *sq, __nv_bfloat16 *sv,
                                          const rf_layout &L, const float *q, int HK, int dk,
                                          const float *qscale, const float *s, int dv, int cols,
                                          int g, int col, float *o, int HV)
{
    using namespace nvcuda;
    const __nv_bfloat16 *my_q = sq + (size_t)g * 16 * L.ldq;
    rf_load<NT>(sq, L.ldq, q, (size_t)HK, dk, qscale);
    for (int k0 = 0; k0 < dk; k0 += RF_ROWS) {
        rf_load<NT>(sv, L.ldv, s + (size_t)k0 * (size_t)dv, (size_t)dv, cols, NULL);
        __syncthreads();
        rf_accumulate<NC>(acc, my_q + k0, L.ldq, sv + col, L.ldv, RF_ROWS);
        __syncthreads();
    }
#pragma unroll
    for (int n = 0; n < NC; n++)
        wmma::store_matrix_sync(o + n * 16, acc[n], (unsigned)HV, wmma::mem_row_major);
}
#endif

/* Grid: (pieces x H, P / 64 query tiles), RF_THREADS threads, dv = 64 NC;
 * op, qp, kp, vp, sp: the (piece, head)s' read-out, q, k, v and entering
 * state (retention_batched's pointer arrays); pw: the decay table for P. */
template <int NC>
__global__ void __launch_bounds__(RF_THREADS, 1)
    ret_fused_kernel(float *const *op, const float *const *qp, const float *const *kp,
                     const float *const *vp, const float *const *sp, const float *pw, int H, int P,
                     int dk, int HK, int HV)
{
    pdl_enter();
#if RF_WMMA
    using namespace nvcuda;
    RF_DYNAMIC_SMEM(rf_smem);
    const int dv = 64 * NC, cw = 16 * NC; /* a column group's width */
    const rf_layout L = rf_layout_for(dk, dv);
    __nv_bfloat16 *sq = (__nv_bfloat16 *)(rf_smem + L.q), *sk = (__nv_bfloat16 *)(rf_smem + L.k);
    __nv_bfloat16 *sv = (__nv_bfloat16 *)(rf_smem + L.v), *ss = (__nv_bfloat16 *)(rf_smem + L.s);
    float *sf = (float *)(rf_smem + L.f);
    /* the last query tiles have the most key tiles: they start first */
    int b = (int)blockIdx.x, qt = (int)(gridDim.y - 1 - blockIdx.y), i0 = qt * RF_ROWS;
    int warp = (int)threadIdx.x / 32, g = warp % RF_GROUPS, c = warp / RF_GROUPS;
    const float *p = pw + (size_t)(b % H) * (size_t)(P + 1);
    const __nv_bfloat16 *my_s = ss + (size_t)g * 16 * L.lds;
    rf_acc acc[NC];
#pragma unroll
    for (int n = 0; n < NC; n++)
        wmma::fill_fragment(acc[n], 0.0f);
    rf_load<RF_THREADS>(sq, L.ldq, qp[b] + (size_t)i0 * (size_t)HK, (size_t)HK, dk, NULL);
    for (int j0 = 0; j0 <= i0; j0 += RF_ROWS) { /* the key tiles at or before the rows */
        int diag = j0 == i0;
        rf_load<RF_THREADS>(sk, L.ldq, kp[b] + (size_t)j0 * (size_t)HK, (size_t)HK, dk, NULL);
        rf_load<RF_THREADS>(sv, L.ldv, vp[b] + (size_t)j0 * (size_t)HV, (size_t)HV, dv, NULL);
        __syncthreads();
        /* on the diagonal tile the key groups past a row group are masked
         * out entirely: never formed, never read */
        if (!diag || c <= g)
            rf_score_piece(ss, sf, sq, sk, L, dk, p, i0, j0, g, c);
        __syncthreads(); /* the row group's scores, from all four of its warps */
        rf_accumulate<NC>(acc, my_s, L.lds, sv + c * cw, L.ldv, diag ? 16 * (g + 1) : RF_ROWS);
        __syncthreads(); /* before the next tile replaces sk, sv and ss */
    }
    rf_inter_and_store<RF_THREADS, NC>(acc, sq, sv, L, qp[b] + (size_t)i0 * (size_t)HK, HK, dk,
                                       p + i0 + 1, sp[b], dv, dv, g, c * cw,
                                       op[b] + (size_t)(i0 + g * 16) * (size_t)HV + c * cw, HV);
#else
    (void)op, (void)qp, (void)kp, (void)vp, (void)sp, (void)pw, (void)H, (void)P, (void)dk;
    (void)HK, (void)HV;
    __trap();
#endif
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
 * 64 RF_MAX_NC: the read-out kernel's instance for these heads; -1 for
 * other widths. */
template <typename F> static int rf_with_nc(int dv, F f)
{
    return dv % 64 || dv < 64 ? -1 : rf_with_nc_from<1>(dv / 64, f);
}

/* Shared memory of the pieces' own-state kernel: a key tile (64 tokens of
 * 64 key columns) and a value tile (64 tokens of DT columns), bf16. */
#define RU_LDK (RF_ROWS + RF_PAD)
#define RU_THREADS 128 /* 4 warps, 16 key columns each */
/* Value columns a block of the own-state kernel owns: 64, so the 1.3B
 * shape's grid is 256 blocks (8 heads x 4 x 8 tiles), two an SM, where
 * 128-column tiles would leave one block of 4 warps an SM walking the
 * pieces alone. */
#define RU_COLS 64

__host__ __device__ static constexpr size_t ru_smem(int dt)
{
    return rf_round((size_t)RF_ROWS * RU_LDK * 2) + (size_t)RF_ROWS * (size_t)(dt + RF_PAD) * 2;
}

/* The pieces' own state parts and the scan over them in one kernel, for
 * a chunk's pieces pieces of P rows: a block owns one head's 64 key
 * columns m0.. and DT value columns c0.. of the state and walks the pieces
 * in order, forming each piece's own part U_p = sum_j (k_j g^(P-1-j))^T
 * v_j on the tensor cores (k_j scaled in fp32, then rounded to bf16 as
 * rk_scale_pieces and cuBLAS's FAST_16BF round it) while the running state
 * S stays in accumulator fragments: it stores S as the state entering piece
 * p into U + p hkv (what rk_scan_pieces leaves there), then S = g^P S + U_p,
 * and after the last piece S into Sl.  S and U_p are fragments of one type,
 * so their elements pair up whatever the fragment layout.  Grid: (H, dk /
 * 64, dv / DT), DT = RU_COLS; k, v: the chunk's
 * rows (row strides H dk, H dv); Sl, U: the layer's state and the pieces'
 * entering states, head h's dk x dv row-major at h dk dv. */
template <int DT>
__global__ void __launch_bounds__(RU_THREADS, 1)
    ret_own_kernel(float *Sl, float *U, const float *k, const float *v, const float *pw, int pieces,
                   int P, int dk, int dv, int HK, int HV)
{
    pdl_enter();
#if RF_WMMA
    using namespace nvcuda;
    __shared__ __align__(128) unsigned char ru_mem[ru_smem(DT)];
    __nv_bfloat16 *sk = (__nv_bfloat16 *)ru_mem;
    __nv_bfloat16 *sv = (__nv_bfloat16 *)(ru_mem + rf_round((size_t)RF_ROWS * RU_LDK * 2));
    int h = (int)blockIdx.x, m0 = (int)blockIdx.y * RF_ROWS, c0 = (int)blockIdx.z * DT;
    int warp = (int)threadIdx.x / 32;
    size_t hkv = (size_t)gridDim.x * (size_t)dk * (size_t)dv;
    size_t tile = (size_t)h * (size_t)dk * (size_t)dv + (size_t)(m0 + warp * 16) * (size_t)dv + c0;
    const float *p = pw + (size_t)h * (size_t)(P + 1);
    const float gP = p[P];
    rf_acc S[DT / 16], acc[DT / 16];
#pragma unroll
    for (int n = 0; n < DT / 16; n++)
        wmma::load_matrix_sync(S[n], Sl + tile + n * 16, (unsigned)dv, wmma::mem_row_major);
    for (int b = 0; b < pieces; b++) {
        const float *kb = k + (size_t)b * (size_t)P * (size_t)HK + (size_t)h * (size_t)dk + m0;
        const float *vb = v + (size_t)b * (size_t)P * (size_t)HV + (size_t)h * (size_t)dv + c0;
#pragma unroll
        for (int n = 0; n < DT / 16; n++) {
            wmma::store_matrix_sync(U + (size_t)b * hkv + tile + n * 16, S[n], (unsigned)dv,
                                    wmma::mem_row_major);
            wmma::fill_fragment(acc[n], 0.0f);
        }
        for (int j0 = 0; j0 < P; j0 += RF_ROWS) {
            /* token j0 + r scaled by g^(P-1-j0-r) */
            rf_load<RU_THREADS>(sk, RU_LDK, kb + (size_t)j0 * (size_t)HK, (size_t)HK, RF_ROWS,
                                p + (P - 1 - j0), -1);
            rf_load<RU_THREADS>(sv, DT + RF_PAD, vb + (size_t)j0 * (size_t)HV, (size_t)HV, DT,
                                NULL);
            __syncthreads();
            for (int kk = 0; kk < RF_ROWS; kk += 16) {
                rf_a_col a; /* (k g)^T: the tile's token rows are its columns */
                wmma::load_matrix_sync(a, sk + (size_t)kk * RU_LDK + warp * 16, (unsigned)RU_LDK);
#pragma unroll
                for (int n = 0; n < DT / 16; n++) {
                    rf_b_row bv;
                    wmma::load_matrix_sync(bv, sv + (size_t)kk * (DT + RF_PAD) + n * 16,
                                           (unsigned)(DT + RF_PAD));
                    wmma::mma_sync(acc[n], a, bv, acc[n]);
                }
            }
            __syncthreads(); /* before the next tile replaces sk and sv */
        }
#pragma unroll
        for (int n = 0; n < DT / 16; n++)
            for (int i = 0; i < S[n].num_elements; i++)
                S[n].x[i] = gP * S[n].x[i] + acc[n].x[i]; /* as rk_scan_pieces */
    }
#pragma unroll
    for (int n = 0; n < DT / 16; n++)
        wmma::store_matrix_sync(Sl + tile + n * 16, S[n], (unsigned)dv, wmma::mem_row_major);
#else
    (void)Sl, (void)U, (void)k, (void)v, (void)pw, (void)pieces, (void)P, (void)dk, (void)dv;
    (void)HK, (void)HV;
    __trap();
#endif
}

#endif
