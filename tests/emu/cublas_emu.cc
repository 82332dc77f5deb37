/* cuBLAS's batched GEMMs and cuBLASLt's matmul on the CPU (cublas_v2.h,
 * cublasLt.h), issued on their stream as the runtime's other operations
 * (cudart_emu.cc): run now, or recorded into a graph being captured. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cublasLt.h"

/* ------------------------------------------------------------ products */

/* fp32 rounded to tf32 (10 bits of mantissa), to nearest even, as the
 * tensor cores take fp32 operands in CUBLAS_COMPUTE_32F_FAST_TF32. */
static float emu_tf32(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7f800000u) != 0x7f800000u) {
        u += 0xfffu + ((u >> 13) & 1u);
        u &= ~0x1fffu;
    }
    memcpy(&f, &u, 4);
    return f;
}

/* Value i of p (type t) as fp32, rounded as compute takes it. */
static float emu_load(const void *p, cudaDataType_t t, long i, cublasComputeType_t compute)
{
    if (t == CUDA_R_16BF)
        return rn__bf16_to_f32(((const uint16_t *)p)[i]);
    if (t == CUDA_R_16F)
        return rn__f16_to_f32(((const uint16_t *)p)[i]);
    float f = ((const float *)p)[i];
    if (compute == CUBLAS_COMPUTE_32F_FAST_TF32)
        return emu_tf32(f);
    if (compute == CUBLAS_COMPUTE_32F_FAST_16BF)
        return rn__bf16_to_f32(rn__f32_to_bf16(f));
    return f;
}

static void emu_store(void *p, cudaDataType_t t, long i, float v)
{
    if (t == CUDA_R_16BF)
        ((uint16_t *)p)[i] = rn__f32_to_bf16(v);
    else if (t == CUDA_R_16F)
        ((uint16_t *)p)[i] = rn__f32_to_f16(v);
    else
        ((float *)p)[i] = v;
}

static float emu_read(const void *p, cudaDataType_t t, long i)
{
    return emu_load(p, t, i, CUBLAS_COMPUTE_32F);
}

/* op(M) of a product's operand as rows of k fp32 values, rounded as
 * compute takes them: rows rows, row r's value l at M[r * rs + l * ls]. */
static void emu_rows(float *out, const void *M, cudaDataType_t t, int rows, int k, long rs, long ls,
                     cublasComputeType_t compute)
{
    for (int r = 0; r < rows; r++)
        for (int l = 0; l < k; l++)
            out[(size_t)r * (size_t)k + (size_t)l] = emu_load(M, t, r * rs + l * ls, compute);
}

void rn_emu_gemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, float alpha,
                 const void *A, cudaDataType_t at, long lda, const void *B, cudaDataType_t bt,
                 long ldb, float beta, void *C, cudaDataType_t ct, long ldc,
                 cublasComputeType_t compute)
{
    /* op(A)(i, l) and op(B)(l, j), column-major, taken once into rows of k
     * values (A's rows, B's columns) so each sum runs over contiguous values */
    float *a = (float *)malloc(sizeof(float) * ((size_t)m + (size_t)n) * (size_t)(k ? k : 1));
    if (!a) {
        /* out of host memory for a copy the device never makes: the test
         * cannot go on, and must not pass */
        fprintf(stderr, "cuda emulation: out of memory for a %d x %d x %d product\n", m, n, k);
        abort();
    }
    float *b = a + (size_t)m * (size_t)k;
    emu_rows(a, A, at, m, k, ta == CUBLAS_OP_N ? 1 : lda, ta == CUBLAS_OP_N ? lda : 1, compute);
    emu_rows(b, B, bt, n, k, tb == CUBLAS_OP_N ? ldb : 1, tb == CUBLAS_OP_N ? 1 : ldb, compute);
    for (int j = 0; j < n; j++)
        for (int i = 0; i < m; i++) {
            const float *ar = a + (size_t)i * (size_t)k, *bc = b + (size_t)j * (size_t)k;
            double s = 0.0;
            for (int l = 0; l < k; l++)
                s += (double)ar[l] * (double)bc[l];
            double v = (double)alpha * s;
            long c = i + j * ldc;
            if (beta != 0.0f)
                v += (double)beta * (double)emu_read(C, ct, c);
            emu_store(C, ct, c, (float)v);
        }
    free(a);
}

static size_t emu_type_size(cudaDataType_t t)
{
    return t == CUDA_R_32F ? 4 : 2;
}

static bool emu_type_ok(cudaDataType_t t)
{
    return t == CUDA_R_32F || t == CUDA_R_16F || t == CUDA_R_16BF;
}

/* ---------------------------------------------------------------- cuBLAS */

struct emu_blas {
    cudaStream_t st;
};

cublasStatus_t cublasCreate(cublasHandle_t *h)
{
    *h = new emu_blas{NULL};
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy(cublasHandle_t h)
{
    delete h;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t st)
{
    h->st = st;
    return CUBLAS_STATUS_SUCCESS;
}

static cublasStatus_t emu_blas_status(cudaError_t e)
{
    return e == cudaSuccess ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_EXECUTION_FAILED;
}

/* What cuBLAS checks of a GEMM's arguments: sizes, types, and leading
 * dimensions that hold op(A)'s m or k rows, op(B)'s k or n, and C's m. */
static bool emu_gemm_args_ok(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                             cudaDataType_t at, int lda, cudaDataType_t bt, int ldb,
                             cudaDataType_t ct, int ldc, int count)
{
    int need_a = ta == CUBLAS_OP_N ? m : k, need_b = tb == CUBLAS_OP_N ? k : n;
    return m >= 0 && n >= 0 && k >= 0 && count >= 0 && emu_type_ok(at) && emu_type_ok(bt) &&
           emu_type_ok(ct) && lda >= (need_a > 1 ? need_a : 1) &&
           ldb >= (need_b > 1 ? need_b : 1) && ldc >= (m > 1 ? m : 1);
}

cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t h, cublasOperation_t ta,
                                          cublasOperation_t tb, int m, int n, int k,
                                          const void *alpha, const void *A, cudaDataType_t at,
                                          int lda, long long sa, const void *B, cudaDataType_t bt,
                                          int ldb, long long sb, const void *beta, void *C,
                                          cudaDataType_t ct, int ldc, long long sc, int count,
                                          cublasComputeType_t compute, cublasGemmAlgo_t)
{
    if (!h || !emu_gemm_args_ok(ta, tb, m, n, k, at, lda, bt, ldb, ct, ldc, count))
        return CUBLAS_STATUS_INVALID_VALUE;
    float al = *(const float *)alpha, be = *(const float *)beta;
    return emu_blas_status(rn_emu_issue_op(h->st, [=]() {
        for (int b = 0; b < count; b++)
            rn_emu_gemm(ta, tb, m, n, k, al, (const char *)A + b * sa * (long)emu_type_size(at), at,
                        lda, (const char *)B + b * sb * (long)emu_type_size(bt), bt, ldb, be,
                        (char *)C + b * sc * (long)emu_type_size(ct), ct, ldc, compute);
        return cudaSuccess;
    }));
}

cublasStatus_t cublasGemmBatchedEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb,
                                   int m, int n, int k, const void *alpha, const void *const A[],
                                   cudaDataType_t at, int lda, const void *const B[],
                                   cudaDataType_t bt, int ldb, const void *beta, void *const C[],
                                   cudaDataType_t ct, int ldc, int count,
                                   cublasComputeType_t compute, cublasGemmAlgo_t)
{
    size_t arrays = sizeof(void *) * (size_t)count;
    if (!h || !emu_gemm_args_ok(ta, tb, m, n, k, at, lda, bt, ldb, ct, ldc, count) ||
        (count > 0 && (rn_emu_kind(A, arrays) != 1 || rn_emu_kind(B, arrays) != 1 ||
                       rn_emu_kind(C, arrays) != 1)))
        return CUBLAS_STATUS_INVALID_VALUE;
    float al = *(const float *)alpha, be = *(const float *)beta;
    /* the address arrays are device memory, read when the product runs */
    return emu_blas_status(rn_emu_issue_op(h->st, [=]() {
        for (int b = 0; b < count; b++)
            rn_emu_gemm(ta, tb, m, n, k, al, A[b], at, lda, B[b], bt, ldb, be, C[b], ct, ldc,
                        compute);
        return cudaSuccess;
    }));
}

/* -------------------------------------------------------------- cuBLASLt */

struct emu_lt {
    int unused;
};

struct emu_lt_desc {
    cublasComputeType_t compute;
    cublasOperation_t ta, tb;
};

struct emu_lt_layout {
    cudaDataType_t t;
    uint64_t rows, cols;
    int64_t ld;
    int32_t batch;
    int64_t stride;
};

struct emu_lt_pref {
    size_t ws;
};

cublasStatus_t cublasLtCreate(cublasLtHandle_t *h)
{
    *h = new emu_lt{0};
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtDestroy(cublasLtHandle_t h)
{
    delete h;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *d, cublasComputeType_t compute,
                                        cudaDataType_t scale)
{
    if (scale != CUDA_R_32F)
        return CUBLAS_STATUS_NOT_SUPPORTED;
    *d = new emu_lt_desc{compute, CUBLAS_OP_N, CUBLAS_OP_N};
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d)
{
    delete d;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d,
                                              cublasLtMatmulDescAttributes_t a, const void *v,
                                              size_t n)
{
    if (n != sizeof(cublasOperation_t))
        return CUBLAS_STATUS_INVALID_VALUE;
    cublasOperation_t op = *(const cublasOperation_t *)v;
    if (a == CUBLASLT_MATMUL_DESC_TRANSA)
        d->ta = op;
    else if (a == CUBLASLT_MATMUL_DESC_TRANSB)
        d->tb = op;
    else
        return CUBLAS_STATUS_NOT_SUPPORTED;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *l, cudaDataType_t t,
                                          uint64_t rows, uint64_t cols, int64_t ld)
{
    if (!emu_type_ok(t) || ld < (int64_t)rows)
        return CUBLAS_STATUS_INVALID_VALUE;
    *l = new emu_lt_layout{t, rows, cols, ld, 1, 0};
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l)
{
    delete l;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t l,
                                                cublasLtMatrixLayoutAttribute_t a, const void *v,
                                                size_t n)
{
    if (a == CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT && n == sizeof(int32_t))
        l->batch = *(const int32_t *)v;
    else if (a == CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET && n == sizeof(int64_t))
        l->stride = *(const int64_t *)v;
    else
        return CUBLAS_STATUS_INVALID_VALUE;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *p)
{
    *p = new emu_lt_pref{0};
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p)
{
    delete p;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t p,
                                                    cublasLtMatmulPreferenceAttributes_t a,
                                                    const void *v, size_t n)
{
    if (a != CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES || n != sizeof(size_t))
        return CUBLAS_STATUS_INVALID_VALUE;
    p->ws = *(const size_t *)v;
    return CUBLAS_STATUS_SUCCESS;
}

/* The product's m, n and k from the layouts (D = op(A) op(B) + C, all
 * column-major), or false where they do not fit together. */
static bool emu_lt_shape(const emu_lt_desc *d, const emu_lt_layout *a, const emu_lt_layout *b,
                         const emu_lt_layout *c, int *m, int *n, int *k)
{
    uint64_t am = d->ta == CUBLAS_OP_N ? a->rows : a->cols;
    uint64_t ak = d->ta == CUBLAS_OP_N ? a->cols : a->rows;
    uint64_t bk = d->tb == CUBLAS_OP_N ? b->rows : b->cols;
    uint64_t bn = d->tb == CUBLAS_OP_N ? b->cols : b->rows;
    *m = (int)c->rows, *n = (int)c->cols, *k = (int)ak;
    return am == c->rows && bn == c->cols && ak == bk && a->batch == c->batch &&
           b->batch == c->batch && a->t == b->t;
}

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t h, cublasLtMatmulDesc_t d,
                                              cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                              cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t,
                                              cublasLtMatmulPreference_t, int want,
                                              cublasLtMatmulHeuristicResult_t *res, int *found)
{
    int m, n, k;
    *found = 0;
    if (!h || want < 1)
        return CUBLAS_STATUS_INVALID_VALUE;
    if (!emu_lt_shape(d, a, b, c, &m, &n, &k))
        return CUBLAS_STATUS_NOT_SUPPORTED;
    /* a few candidates, so a caller that times them (RETNET_CUDA_LT_TUNE)
     * has a choice to make; all compute the same */
    int n_algos = want < 3 ? want : 3;
    for (int i = 0; i < n_algos; i++) {
        memset(&res[i], 0, sizeof res[i]);
        res[i].algo.data[0] = (uint64_t)i;
        res[i].state = CUBLAS_STATUS_SUCCESS;
        res[i].wavesCount = 1.0f;
    }
    *found = n_algos;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t h, cublasLtMatmulDesc_t d, const void *alpha,
                              const void *A, cublasLtMatrixLayout_t al, const void *B,
                              cublasLtMatrixLayout_t bl, const void *beta, const void *C,
                              cublasLtMatrixLayout_t cl, void *D, cublasLtMatrixLayout_t dl,
                              const cublasLtMatmulAlgo_t *, void *, size_t, cudaStream_t st)
{
    int m, n, k;
    if (!h || !emu_lt_shape(d, al, bl, cl, &m, &n, &k) || dl->t != cl->t || dl->rows != cl->rows ||
        dl->cols != cl->cols || dl->batch != cl->batch)
        return CUBLAS_STATUS_INVALID_VALUE;
    float a0 = *(const float *)alpha, b0 = *(const float *)beta;
    emu_lt_desc op = *d;
    emu_lt_layout la = *al, lb = *bl, lc = *cl, ld = *dl;
    return emu_blas_status(rn_emu_issue_op(st, [=]() {
        for (int i = 0; i < lc.batch; i++) {
            const char *ai = (const char *)A + i * la.stride * (long)emu_type_size(la.t);
            const char *bi = (const char *)B + i * lb.stride * (long)emu_type_size(lb.t);
            const char *ci = (const char *)C + i * lc.stride * (long)emu_type_size(lc.t);
            char *di = (char *)D + i * ld.stride * (long)emu_type_size(ld.t);
            if (b0 != 0.0f && ci != di)
                for (int j = 0; j < n; j++) /* D = C first: the product adds beta D */
                    for (int r = 0; r < m; r++)
                        emu_store(di, ld.t, r + j * ld.ld, emu_read(ci, lc.t, r + j * lc.ld));
            rn_emu_gemm(op.ta, op.tb, m, n, k, a0, ai, la.t, la.ld, bi, lb.t, lb.ld, b0, di, ld.t,
                        ld.ld, op.compute);
        }
        return cudaSuccess;
    }));
}
