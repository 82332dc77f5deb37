/* One cuBLASLt product as the backend's projections run it, shared by the
 * backend (backend_cuda.cu, its cached lt_entry) and the measurements
 * (measure.cu, the products' own rate): the description, its layouts and
 * the heuristic's algorithms.  Included after cublasLt.h. */
#ifndef RN_CUDA_LT_DESC_CUH
#define RN_CUDA_LT_DESC_CUH

#include <stdint.h>
#include <string.h>

extern "C" {
#include "plan.h" /* RN_CUDA_LT_WORKSPACE */
}

/* Column-major view: y^T (out x n) = W (stored in x out, transposed) . x^T
 * (in x n), fp32 accumulation.  batch > 1: that many products of the one
 * input (stride 0), the k-th weights and output stride_w and stride_y
 * elements after the first. */
struct lt_desc {
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t a, b, c;
};

static inline void lt_desc_free(lt_desc *d)
{
    if (d->op)
        cublasLtMatmulDescDestroy(d->op);
    if (d->a)
        cublasLtMatrixLayoutDestroy(d->a);
    if (d->b)
        cublasLtMatrixLayoutDestroy(d->b);
    if (d->c)
        cublasLtMatrixLayoutDestroy(d->c);
    memset(d, 0, sizeof *d);
}

/* The batch attributes of d's layouts; 0, or -1. */
static inline int lt_desc_batch(lt_desc *d, int32_t batch, int64_t stride_w, int64_t stride_y)
{
    cublasLtMatrixLayout_t lay[3] = {d->a, d->b, d->c};
    int64_t stride[3] = {stride_w, 0, stride_y};
    for (int i = 0; i < 3 && batch > 1; i++)
        if (cublasLtMatrixLayoutSetAttribute(lay[i], CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &batch,
                                             sizeof batch) ||
            cublasLtMatrixLayoutSetAttribute(lay[i], CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
                                             &stride[i], sizeof stride[i]))
            return -1;
    return 0;
}

/* Fills d for inputs and weights of type dt and an output of type ot; 0,
 * or -1 with d freed. */
static inline int lt_desc_make(lt_desc *d, int out, int in, int n, cudaDataType_t dt,
                               cudaDataType_t ot, int batch, int64_t stride_w, int64_t stride_y)
{
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    memset(d, 0, sizeof *d);
    if (cublasLtMatmulDescCreate(&d->op, CUBLAS_COMPUTE_32F, CUDA_R_32F) ||
        cublasLtMatmulDescSetAttribute(d->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta) ||
        cublasLtMatmulDescSetAttribute(d->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb) ||
        cublasLtMatrixLayoutCreate(&d->a, dt, (uint64_t)in, (uint64_t)out, in) ||
        cublasLtMatrixLayoutCreate(&d->b, dt, (uint64_t)in, (uint64_t)n, in) ||
        cublasLtMatrixLayoutCreate(&d->c, ot, (uint64_t)out, (uint64_t)n, out) ||
        lt_desc_batch(d, batch, stride_w, stride_y)) {
        lt_desc_free(d);
        return -1;
    }
    return 0;
}

/* Up to want (>= 1) of the heuristic's algorithms for d within
 * RN_CUDA_LT_WORKSPACE bytes of workspace, best first, into res: how many
 * (0: none). */
static inline int lt_desc_algos(cublasLtHandle_t lt, const lt_desc *d, int want,
                                cublasLtMatmulHeuristicResult_t *res)
{
    cublasLtMatmulPreference_t pref = NULL;
    size_t ws = RN_CUDA_LT_WORKSPACE;
    int found = 0;
    if (cublasLtMatmulPreferenceCreate(&pref) ||
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                             sizeof ws) ||
        cublasLtMatmulAlgoGetHeuristic(lt, d->op, d->a, d->b, d->c, d->c, pref, want, res, &found))
        found = 0;
    if (pref)
        cublasLtMatmulPreferenceDestroy(pref);
    return found;
}

#endif
