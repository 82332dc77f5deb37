/* cuBLAS's batched GEMMs on the CPU, for the emulated build of the CUDA
 * backend (cuda_runtime.h; the products are in cublas_emu.cc). */
#ifndef RN_TESTS_EMU_CUBLAS_V2_H
#define RN_TESTS_EMU_CUBLAS_V2_H

#include "cuda_runtime.h"

typedef enum {
    CUBLAS_STATUS_SUCCESS = 0,
    CUBLAS_STATUS_NOT_INITIALIZED = 1,
    CUBLAS_STATUS_ALLOC_FAILED = 3,
    CUBLAS_STATUS_INVALID_VALUE = 7,
    CUBLAS_STATUS_EXECUTION_FAILED = 13,
    CUBLAS_STATUS_NOT_SUPPORTED = 15,
} cublasStatus_t;

typedef enum { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 } cublasOperation_t;

typedef enum {
    CUBLAS_COMPUTE_32F = 68,
    CUBLAS_COMPUTE_32F_FAST_16BF = 75,
    CUBLAS_COMPUTE_32F_FAST_TF32 = 77,
} cublasComputeType_t;

typedef enum { CUBLAS_GEMM_DEFAULT = -1 } cublasGemmAlgo_t;

typedef struct emu_blas *cublasHandle_t;

cublasStatus_t cublasCreate(cublasHandle_t *h);
cublasStatus_t cublasDestroy(cublasHandle_t h);
cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t st);

cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t h, cublasOperation_t ta,
                                          cublasOperation_t tb, int m, int n, int k,
                                          const void *alpha, const void *A, cudaDataType_t at,
                                          int lda, long long sa, const void *B, cudaDataType_t bt,
                                          int ldb, long long sb, const void *beta, void *C,
                                          cudaDataType_t ct, int ldc, long long sc, int count,
                                          cublasComputeType_t compute, cublasGemmAlgo_t algo);

cublasStatus_t cublasGemmBatchedEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb,
                                   int m, int n, int k, const void *alpha, const void *const A[],
                                   cudaDataType_t at, int lda, const void *const B[],
                                   cudaDataType_t bt, int ldb, const void *beta, void *const C[],
                                   cudaDataType_t ct, int ldc, int count,
                                   cublasComputeType_t compute, cublasGemmAlgo_t algo);

/* One column-major product as cuBLAS defines it: C (m x n, ldc) = alpha
 * op(A) op(B) + beta C, fp32 scalars, the operands of types at, bt and ct
 * (fp32, fp16 or bf16), summed in double; fp32 operands rounded first to
 * what compute's fast modes take (tf32, bf16).  Reads C only where beta is
 * not 0, as cuBLAS. */
void rn_emu_gemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, float alpha,
                 const void *A, cudaDataType_t at, long lda, const void *B, cudaDataType_t bt,
                 long ldb, float beta, void *C, cudaDataType_t ct, long ldc,
                 cublasComputeType_t compute);

#endif
