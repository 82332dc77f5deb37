/* The emulated CUDA runtime and cuBLAS(Lt) themselves (cudart_emu.cc,
 * cublas_emu.cc), in the emulated build only: that they refuse what the
 * device refuses -- a copy past its allocation or in the wrong direction,
 * a captured copy from pageable memory, a synchronisation inside a
 * capture, a capture ended with a forked stream not joined back -- that a
 * captured graph runs nothing until it is launched and then runs its
 * operations in order each launch, after its graph is destroyed too, that
 * work waits in its stream until something needs it (so a missing wait
 * shows), and that the products are cuBLAS's on small operands against a
 * host sum. */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cublasLt.h"

extern "C" {
#include "fixture.h"
#include "suites.h"
}

START_TEST(test_cudart_emu_copies_stay_in_their_memory)
{
    char *d = NULL, *h = NULL, pageable[200] = {0};
    ck_assert_int_eq(cudaMalloc(&d, 100), cudaSuccess);
    ck_assert_int_eq(cudaMallocHost(&h, 100), cudaSuccess);
    ck_assert_int_eq(cudaMemcpy(d, pageable, 100, cudaMemcpyHostToDevice), cudaSuccess);
    ck_assert_int_eq(cudaMemcpy(d, h, 100, cudaMemcpyHostToDevice), cudaSuccess);
    ck_assert_int_ne(cudaMemcpy(d, pageable, 101, cudaMemcpyHostToDevice), cudaSuccess);
    ck_assert_int_ne(cudaMemcpy(pageable, d + 50, 60, cudaMemcpyDeviceToHost), cudaSuccess);
    ck_assert_int_ne(cudaMemcpy(h, pageable, 10, cudaMemcpyHostToDevice), cudaSuccess);
    ck_assert_int_ne(cudaMemcpy(d, d + 10, 10, cudaMemcpyDeviceToHost), cudaSuccess);
    ck_assert_int_ne(cudaMemsetAsync(pageable, 0, 10, NULL), cudaSuccess);
    ck_assert_int_ne(cudaFree(h), cudaSuccess); /* page-locked memory is not the device's */
    ck_assert_int_eq(cudaFreeHost(h), cudaSuccess);
    ck_assert_int_eq(cudaFree(d), cudaSuccess);
}
END_TEST

/* Adds one to *p (the test's device counter). */
static __global__ void emu_count_kernel(int *p)
{
    if (threadIdx.x == 0)
        (*p)++;
}

static void emu_count(cudaStream_t st, int *p)
{
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = 1;
    cfg.blockDim = 32;
    cfg.stream = st;
    ck_assert_int_eq(cudaLaunchKernelEx(&cfg, emu_count_kernel, p), cudaSuccess);
}

START_TEST(test_cudart_emu_graph_runs_when_launched)
{
    cudaStream_t st;
    cudaGraph_t g;
    cudaGraphExec_t e;
    int *d = NULL, *h = NULL, got = -1;
    ck_assert_int_eq(cudaStreamCreate(&st), cudaSuccess);
    ck_assert_int_eq(cudaMalloc(&d, sizeof(int)), cudaSuccess);
    ck_assert_int_eq(cudaMallocHost(&h, sizeof(int)), cudaSuccess);
    *h = 40;
    ck_assert_int_eq(cudaMemset(d, 0, sizeof(int)), cudaSuccess);
    ck_assert_int_eq(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal), cudaSuccess);
    ck_assert_int_eq(cudaMemcpyAsync(d, h, sizeof(int), cudaMemcpyHostToDevice, st), cudaSuccess);
    emu_count(st, d);
    emu_count(st, d);
    ck_assert_int_eq(cudaStreamEndCapture(st, &g), cudaSuccess);
    ck_assert_int_eq(cudaGraphInstantiate(&e, g, 0), cudaSuccess);
    ck_assert_int_eq(cudaGraphDestroy(g), cudaSuccess); /* the instance keeps its operations */
    ck_assert_int_eq(cudaMemcpy(&got, d, sizeof(int), cudaMemcpyDeviceToHost), cudaSuccess);
    ck_assert_int_eq(got, 0); /* nothing ran while capturing (the memset before it did) */
    *h = 1;                   /* the graph's copy reads the page-locked memory when it runs */
    ck_assert_int_eq(cudaGraphLaunch(e, st), cudaSuccess);
    ck_assert_int_eq(cudaMemcpy(&got, d, sizeof(int), cudaMemcpyDeviceToHost), cudaSuccess);
    ck_assert_int_eq(got, 3);
    ck_assert_int_eq(cudaGraphLaunch(e, st), cudaSuccess);
    ck_assert_int_eq(cudaMemcpy(&got, d, sizeof(int), cudaMemcpyDeviceToHost), cudaSuccess);
    ck_assert_int_eq(got, 3);
    cudaGraphExecDestroy(e);
    cudaFree(d);
    cudaFreeHost(h);
    cudaStreamDestroy(st);
}
END_TEST

START_TEST(test_cudart_emu_capture_refuses_what_the_device_does)
{
    cudaStream_t st;
    cudaGraph_t g = NULL;
    int *d = NULL, pageable = 1;
    ck_assert_int_eq(cudaStreamCreate(&st), cudaSuccess);
    ck_assert_int_eq(cudaMalloc(&d, sizeof(int)), cudaSuccess);
    /* a copy from pageable memory: refused, and the capture with it */
    ck_assert_int_eq(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal), cudaSuccess);
    ck_assert_int_ne(cudaMemcpyAsync(d, &pageable, sizeof(int), cudaMemcpyHostToDevice, st),
                     cudaSuccess);
    ck_assert_int_ne(cudaStreamEndCapture(st, &g), cudaSuccess);
    ck_assert_ptr_null(g);
    /* a synchronisation, a synchronous copy, an allocation: each refused
     * and the capture with it, whatever stream they name */
    for (int call = 0; call < 3; call++) {
        cudaStream_t other;
        void *p = NULL;
        ck_assert_int_eq(cudaStreamCreate(&other), cudaSuccess);
        ck_assert_int_eq(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal), cudaSuccess);
        cudaError_t e = call == 0   ? cudaStreamSynchronize(other)
                        : call == 1 ? cudaMemcpy(&pageable, d, sizeof(int), cudaMemcpyDeviceToHost)
                                    : cudaMalloc(&p, 64);
        ck_assert_int_eq(e, cudaErrorStreamCaptureUnsupported);
        ck_assert_int_eq(cudaGetLastError(), cudaErrorStreamCaptureUnsupported);
        ck_assert_int_ne(cudaStreamEndCapture(st, &g), cudaSuccess);
        ck_assert_ptr_null(g);
        ck_assert_int_eq(cudaStreamDestroy(other), cudaSuccess);
    }
    /* after the capture they are allowed again */
    ck_assert_int_eq(cudaStreamSynchronize(st), cudaSuccess);
    cudaGetLastError();
    cudaFree(d);
    cudaStreamDestroy(st);
}
END_TEST

/* _i 0: the forked stream joined back; 1: not. */
START_TEST(test_cudart_emu_fork_must_join)
{
    cudaStream_t st, st2;
    cudaEvent_t fork, join;
    cudaGraph_t g = NULL;
    cudaGraphExec_t e;
    int *d = NULL, got = 0;
    ck_assert_int_eq(cudaStreamCreate(&st), cudaSuccess);
    ck_assert_int_eq(cudaStreamCreate(&st2), cudaSuccess);
    ck_assert_int_eq(cudaEventCreate(&fork), cudaSuccess);
    ck_assert_int_eq(cudaEventCreate(&join), cudaSuccess);
    ck_assert_int_eq(cudaMalloc(&d, sizeof(int)), cudaSuccess);
    ck_assert_int_eq(cudaMemset(d, 0, sizeof(int)), cudaSuccess);
    ck_assert_int_eq(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal), cudaSuccess);
    emu_count(st, d);
    ck_assert_int_eq(cudaEventRecord(fork, st), cudaSuccess);
    ck_assert_int_eq(cudaStreamWaitEvent(st2, fork, 0), cudaSuccess);
    emu_count(st2, d); /* captured: the stream joined the capture */
    if (_i == 0) {
        ck_assert_int_eq(cudaEventRecord(join, st2), cudaSuccess);
        ck_assert_int_eq(cudaStreamWaitEvent(st, join, 0), cudaSuccess);
    }
    emu_count(st, d);
    cudaError_t end = cudaStreamEndCapture(st, &g);
    if (_i == 1) {
        ck_assert_int_eq(end, cudaErrorStreamCaptureUnjoined);
        ck_assert_ptr_null(g);
    } else {
        ck_assert_int_eq(end, cudaSuccess);
        ck_assert_int_eq(cudaMemcpy(&got, d, sizeof(int), cudaMemcpyDeviceToHost), cudaSuccess);
        ck_assert_int_eq(got, 0); /* nothing ran while capturing, on either stream */
        ck_assert_int_eq(cudaGraphInstantiate(&e, g, 0), cudaSuccess);
        ck_assert_int_eq(cudaGraphLaunch(e, st), cudaSuccess);
        ck_assert_int_eq(cudaMemcpy(&got, d, sizeof(int), cudaMemcpyDeviceToHost), cudaSuccess);
        ck_assert_int_eq(got, 3);
        cudaGraphExecDestroy(e);
        cudaGraphDestroy(g);
    }
    /* the forked stream left the capture with it: it runs at once again */
    emu_count(st2, d);
    ck_assert_int_eq(cudaMemcpy(&got, d, sizeof(int), cudaMemcpyDeviceToHost), cudaSuccess);
    ck_assert_int_eq(got, _i == 0 ? 4 : 1);
    cudaFree(d);
    cudaEventDestroy(fork);
    cudaEventDestroy(join);
    cudaStreamDestroy(st);
    cudaStreamDestroy(st2);
}
END_TEST

/* Deferred execution (RN_EMU_DEFER, on by default): work waits in its
 * stream until something needs it, so what a missing synchronisation or
 * wait leaves unordered has not happened yet when the host or another
 * stream looks. */
START_TEST(test_cudart_emu_work_waits_until_needed)
{
    cudaStream_t a, b;
    cudaEvent_t ev;
    int *d = NULL, *h = NULL, pageable = 5, got = 0;
    ck_assert_int_eq(cudaStreamCreateWithFlags(&a, cudaStreamNonBlocking), cudaSuccess);
    ck_assert_int_eq(cudaStreamCreateWithFlags(&b, cudaStreamNonBlocking), cudaSuccess);
    ck_assert_int_eq(cudaEventCreate(&ev), cudaSuccess);
    ck_assert_int_eq(cudaMalloc(&d, 2 * sizeof(int)), cudaSuccess);
    ck_assert_int_eq(cudaMallocHost(&h, 2 * sizeof(int)), cudaSuccess);
    ck_assert_int_eq(cudaMemset(d, 0, 2 * sizeof(int)), cudaSuccess);
    ck_assert_int_eq(cudaDeviceSynchronize(), cudaSuccess);

    /* a copy into page-locked memory: not there until its stream is synchronised */
    h[0] = -1;
    emu_count(a, d);
    ck_assert_int_eq(cudaMemcpyAsync(h, d, sizeof(int), cudaMemcpyDeviceToHost, a), cudaSuccess);
    ck_assert_int_eq(h[0], -1);
    ck_assert_int_eq(cudaStreamSynchronize(a), cudaSuccess);
    ck_assert_int_eq(h[0], 1);

    /* a copy from page-locked memory reads it when it runs: the host's later
     * write is what it copies; from pageable memory, what it held at the call */
    h[1] = 7;
    ck_assert_int_eq(cudaMemcpyAsync(d + 1, h + 1, sizeof(int), cudaMemcpyHostToDevice, a),
                     cudaSuccess);
    h[1] = 8;
    ck_assert_int_eq(cudaStreamSynchronize(a), cudaSuccess);
    ck_assert_int_eq(cudaMemcpy(&got, d + 1, sizeof(int), cudaMemcpyDeviceToHost), cudaSuccess);
    ck_assert_int_eq(got, 8);
    ck_assert_int_eq(cudaMemcpyAsync(d + 1, &pageable, sizeof(int), cudaMemcpyHostToDevice, a),
                     cudaSuccess);
    pageable = 6;
    ck_assert_int_eq(cudaStreamSynchronize(a), cudaSuccess);
    ck_assert_int_eq(cudaMemcpy(&got, d + 1, sizeof(int), cudaMemcpyDeviceToHost), cudaSuccess);
    ck_assert_int_eq(got, 5);

    /* into pageable memory the call returns once its stream got there */
    emu_count(a, d);
    ck_assert_int_eq(cudaMemcpyAsync(&got, d, sizeof(int), cudaMemcpyDeviceToHost, a), cudaSuccess);
    ck_assert_int_eq(got, 2);

    /* a non-blocking stream is not ordered with the legacy stream: the
     * synchronous copy does not see its work ... */
    emu_count(a, d);
    ck_assert_int_eq(cudaMemcpy(&got, d, sizeof(int), cudaMemcpyDeviceToHost), cudaSuccess);
    ck_assert_int_eq(got, 2);
    /* ... and b, with no wait, copies what was there before a's count */
    ck_assert_int_eq(cudaMemcpyAsync(h, d, sizeof(int), cudaMemcpyDeviceToHost, b), cudaSuccess);
    ck_assert_int_eq(cudaStreamSynchronize(b), cudaSuccess);
    ck_assert_int_eq(h[0], 2);
    /* waiting on an event a recorded after it, b sees it */
    ck_assert_int_eq(cudaEventRecord(ev, a), cudaSuccess);
    emu_count(a, d); /* after the record: not waited for */
    ck_assert_int_eq(cudaStreamWaitEvent(b, ev, 0), cudaSuccess);
    ck_assert_int_eq(cudaMemcpyAsync(h, d, sizeof(int), cudaMemcpyDeviceToHost, b), cudaSuccess);
    ck_assert_int_eq(cudaStreamSynchronize(b), cudaSuccess);
    ck_assert_int_eq(h[0], 3);
    ck_assert_int_eq(cudaEventSynchronize(ev), cudaSuccess);
    ck_assert_int_eq(cudaMemcpyAsync(&got, d, sizeof(int), cudaMemcpyDeviceToHost, b), cudaSuccess);
    ck_assert_int_eq(got, 3); /* the count after the record has still not run */
    /* a device-wide synchronisation runs everything */
    ck_assert_int_eq(cudaDeviceSynchronize(), cudaSuccess);
    ck_assert_int_eq(cudaMemcpy(&got, d, sizeof(int), cudaMemcpyDeviceToHost), cudaSuccess);
    ck_assert_int_eq(got, 4);

    /* a blocking stream and the legacy stream are ordered both ways */
    cudaStream_t c;
    ck_assert_int_eq(cudaStreamCreate(&c), cudaSuccess);
    ck_assert_int_eq(cudaMemset(d, 0, sizeof(int)), cudaSuccess);
    emu_count(c, d);
    ck_assert_int_eq(cudaMemcpy(&got, d, sizeof(int), cudaMemcpyDeviceToHost), cudaSuccess);
    ck_assert_int_eq(got, 1);

    /* freeing waits for all the work */
    emu_count(a, d);
    emu_count(b, d);
    ck_assert_int_eq(cudaFreeHost(h), cudaSuccess);
    ck_assert_int_eq(cudaMemcpy(&got, d, sizeof(int), cudaMemcpyDeviceToHost), cudaSuccess);
    ck_assert_int_eq(got, 3);
    ck_assert_int_eq(cudaFree(d), cudaSuccess);
    cudaEventDestroy(ev);
    cudaStreamDestroy(a), cudaStreamDestroy(b), cudaStreamDestroy(c);
}
END_TEST

/* A kernel that fails on the device (a fault's sticky error) leaves the
 * CUDA backend lost: the call that meets it fails with RN_EDEVICE and
 * rn_engine_lost says so from then on, every later call fails the same
 * way, and the engine still frees everything.  A refused argument before
 * it is not a loss. */
START_TEST(test_cudart_emu_device_fault_loses_the_engine)
{
    fixture f;
    fixture_load(&f, "demo");
    rn_engine_opts o = fixture_opts(2, 64);
    o.device = RN_DEVICE_CUDA;
    rn_engine *e = fixture_engine_opts(&f, &o);
    int slot = 0, V = f.cfg->vocab_size;
    int32_t tok = 5, bad = V, pick = -1;
    ck_assert_int_eq(rn_prefill(e, 0, f.tokens, 8, NULL, NULL), RN_OK);
    ck_assert_int_eq(rn_decode_argmax(e, &slot, &tok, 1, &pick, NULL), RN_OK);
    ck_assert_int_eq(rn_decode(e, &slot, &bad, 1, NULL), RN_EINVAL);
    ck_assert_int_eq(rn_engine_lost(e), 0);
    rn_emu_fail_launch(3); /* inside the next step's layers */
    ck_assert_int_eq(rn_decode_argmax(e, &slot, &tok, 1, &pick, NULL), RN_EDEVICE);
    ck_assert_int_eq(rn_engine_lost(e), 1);
    ck_assert_int_eq(rn_decode_argmax(e, &slot, &tok, 1, &pick, NULL), RN_EDEVICE);
    ck_assert_int_eq(rn_prefill(e, 1, f.tokens, 8, NULL, NULL), RN_EDEVICE);
    float *st = (float *)malloc(rn_engine_state_bytes(e));
    ck_assert_int_eq(rn_state_export(e, 0, st, rn_engine_state_bytes(e)), RN_EDEVICE);
    free(st);
    rn_engine_free(e);
    rn_emu_device_reset();
    fixture_free(&f);
}
END_TEST

/* y^T (out x n) = W (in x out, transposed) x^T (in x n) through cuBLASLt as
 * the backend's lt_desc describes it, batch 2 with the input shared, bf16
 * operands and a bf16 output; against the host's sum of the same bf16
 * values, rounded once. */
START_TEST(test_cudart_emu_lt_matmul_is_the_product)
{
    enum { OUT = 5, IN = 7, N = 3, B = 2 };
    uint16_t W[B][OUT * IN], x[N * IN], y[B][OUT * N];
    for (int b = 0; b < B; b++)
        for (int i = 0; i < OUT * IN; i++)
            W[b][i] = rn__f32_to_bf16((float)((i * 7 + b * 3) % 11) / 4.0f - 1.0f);
    for (int i = 0; i < N * IN; i++)
        x[i] = rn__f32_to_bf16((float)(i % 5) / 3.0f - 0.5f);
    uint16_t *dW, *dx, *dy;
    ck_assert_int_eq(cudaMalloc(&dW, sizeof W), cudaSuccess);
    ck_assert_int_eq(cudaMalloc(&dx, sizeof x), cudaSuccess);
    ck_assert_int_eq(cudaMalloc(&dy, sizeof y), cudaSuccess);
    cudaMemcpy(dW, W, sizeof W, cudaMemcpyHostToDevice);
    cudaMemcpy(dx, x, sizeof x, cudaMemcpyHostToDevice);
    cublasLtHandle_t lt;
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t la, lb, lc;
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    int32_t batch = B;
    int64_t sw = OUT * IN, sx = 0, sy = OUT * N;
    ck_assert_int_eq(cublasLtCreate(&lt), CUBLAS_STATUS_SUCCESS);
    ck_assert_int_eq(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F), 0);
    ck_assert_int_eq(
        cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta), 0);
    ck_assert_int_eq(
        cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb), 0);
    ck_assert_int_eq(cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, IN, OUT, IN), 0);
    ck_assert_int_eq(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, IN, N, IN), 0);
    ck_assert_int_eq(cublasLtMatrixLayoutCreate(&lc, CUDA_R_16BF, OUT, N, OUT), 0);
    cublasLtMatrixLayout_t lays[3] = {la, lb, lc};
    int64_t strides[3] = {sw, sx, sy};
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(cublasLtMatrixLayoutSetAttribute(
                             lays[i], CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &batch, sizeof batch),
                         0);
        ck_assert_int_eq(
            cublasLtMatrixLayoutSetAttribute(lays[i], CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
                                             &strides[i], sizeof strides[i]),
            0);
    }
    cublasLtMatmulHeuristicResult_t res;
    int found = 0;
    ck_assert_int_eq(cublasLtMatmulAlgoGetHeuristic(lt, op, la, lb, lc, lc, NULL, 1, &res, &found),
                     0);
    ck_assert_int_eq(found, 1);
    float one = 1.0f, zero = 0.0f;
    ck_assert_int_eq(cublasLtMatmul(lt, op, &one, dW, la, dx, lb, &zero, dy, lc, dy, lc, &res.algo,
                                    NULL, 0, NULL),
                     CUBLAS_STATUS_SUCCESS);
    cudaMemcpy(y, dy, sizeof y, cudaMemcpyDeviceToHost);
    for (int b = 0; b < B; b++)
        for (int j = 0; j < N; j++)
            for (int o = 0; o < OUT; o++) {
                double s = 0.0;
                for (int l = 0; l < IN; l++)
                    s += (double)rn__bf16_to_f32(W[b][o * IN + l]) *
                         (double)rn__bf16_to_f32(x[j * IN + l]);
                ck_assert_uint_eq(y[b][o + j * OUT], rn__f32_to_bf16((float)s));
            }
    /* a k that does not match is refused */
    cublasLtMatrixLayout_t bad;
    ck_assert_int_eq(cublasLtMatrixLayoutCreate(&bad, CUDA_R_16BF, IN + 1, N, IN + 1), 0);
    ck_assert_int_ne(cublasLtMatmul(lt, op, &one, dW, la, dx, bad, &zero, dy, lc, dy, lc, &res.algo,
                                    NULL, 0, NULL),
                     CUBLAS_STATUS_SUCCESS);
    cublasLtMatrixLayoutDestroy(bad);
    for (int i = 0; i < 3; i++)
        cublasLtMatrixLayoutDestroy(lays[i]);
    cublasLtMatmulDescDestroy(op);
    cublasLtDestroy(lt);
    cudaFree(dW), cudaFree(dx), cudaFree(dy);
}
END_TEST

/* C = A^T B + beta C in fp32 through the strided batched GEMM, column-major,
 * against the host's sum. */
START_TEST(test_cudart_emu_strided_gemm_is_the_product)
{
    enum { M = 4, N = 3, K = 5, B = 2 };
    float A[B][K * M], Bm[B][K * N], C[B][M * N], C0[B][M * N];
    for (int b = 0; b < B; b++) {
        for (int i = 0; i < K * M; i++)
            A[b][i] = (float)((i + b) % 7) - 3.0f;
        for (int i = 0; i < K * N; i++)
            Bm[b][i] = (float)((i * 3 + b) % 5) * 0.5f;
        for (int i = 0; i < M * N; i++)
            C[b][i] = C0[b][i] = (float)i;
    }
    float *dA, *dB, *dC;
    cudaMalloc(&dA, sizeof A), cudaMalloc(&dB, sizeof Bm), cudaMalloc(&dC, sizeof C);
    cudaMemcpy(dA, A, sizeof A, cudaMemcpyHostToDevice);
    cudaMemcpy(dB, Bm, sizeof Bm, cudaMemcpyHostToDevice);
    cudaMemcpy(dC, C, sizeof C, cudaMemcpyHostToDevice);
    cublasHandle_t h;
    ck_assert_int_eq(cublasCreate(&h), CUBLAS_STATUS_SUCCESS);
    float alpha = 2.0f, beta = 0.5f;
    ck_assert_int_eq(cublasGemmStridedBatchedEx(h, CUBLAS_OP_T, CUBLAS_OP_N, M, N, K, &alpha, dA,
                                                CUDA_R_32F, K, K * M, dB, CUDA_R_32F, K, K * N,
                                                &beta, dC, CUDA_R_32F, M, M * N, B,
                                                CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                     CUBLAS_STATUS_SUCCESS);
    cudaMemcpy(C, dC, sizeof C, cudaMemcpyDeviceToHost);
    for (int b = 0; b < B; b++)
        for (int j = 0; j < N; j++)
            for (int i = 0; i < M; i++) {
                double s = 0.0;
                for (int l = 0; l < K; l++)
                    s += (double)A[b][l + i * K] * (double)Bm[b][l + j * K];
                ck_assert_float_eq(C[b][i + j * M], (float)(2.0 * s + 0.5 * C0[b][i + j * M]));
            }
    cublasDestroy(h);
    cudaFree(dA), cudaFree(dB), cudaFree(dC);
}
END_TEST

/* Launches are held to the device's limits when issued: an empty grid, a
 * block of 1025 threads, and more dynamic shared memory than the kernel was
 * allowed (48 KiB until cudaFuncSetAttribute raises it, at most 227 KiB)
 * are refused, and each leaves its error for cudaGetLastError, the most
 * recent winning. */
START_TEST(test_cudart_emu_launches_keep_the_limits)
{
    int *d = NULL;
    ck_assert_int_eq(cudaMalloc(&d, sizeof(int)), cudaSuccess);
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = 0;
    cfg.blockDim = 32;
    ck_assert_int_eq(cudaLaunchKernelEx(&cfg, emu_count_kernel, d), cudaErrorInvalidConfiguration);
    cfg.gridDim = 1;
    cfg.blockDim = 1025;
    ck_assert_int_eq(cudaLaunchKernelEx(&cfg, emu_count_kernel, d), cudaErrorInvalidConfiguration);
    cfg.blockDim = 32;
    cfg.dynamicSmemBytes = (48 << 10) + 16;
    ck_assert_int_eq(cudaLaunchKernelEx(&cfg, emu_count_kernel, d), cudaErrorInvalidValue);
    ck_assert_int_eq(cudaGetLastError(), cudaErrorInvalidValue);
    ck_assert_int_eq(cudaGetLastError(), cudaSuccess);
    ck_assert_int_ne(
        cudaFuncSetAttribute(emu_count_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 232449),
        cudaSuccess);
    ck_assert_int_eq(cudaFuncSetAttribute(emu_count_kernel,
                                          cudaFuncAttributeMaxDynamicSharedMemorySize, 64 << 10),
                     cudaSuccess);
    ck_assert_int_eq(cudaLaunchKernelEx(&cfg, emu_count_kernel, d), cudaSuccess);
    cudaFree(d);
}
END_TEST

extern "C" Suite *cudart_emu_suite(void)
{
    Suite *s = suite_create("cudart_emu");
    TCase *tc = tcase_create("runtime");
    tcase_add_test(tc, test_cudart_emu_copies_stay_in_their_memory);
    tcase_add_test(tc, test_cudart_emu_graph_runs_when_launched);
    tcase_add_test(tc, test_cudart_emu_capture_refuses_what_the_device_does);
    tcase_add_loop_test(tc, test_cudart_emu_fork_must_join, 0, 2);
    tcase_add_test(tc, test_cudart_emu_launches_keep_the_limits);
    if (!getenv("RN_EMU_DEFER") || strcmp(getenv("RN_EMU_DEFER"), "0") != 0)
        tcase_add_test(tc, test_cudart_emu_work_waits_until_needed);
    tcase_add_test(tc, test_cudart_emu_lt_matmul_is_the_product);
    tcase_add_test(tc, test_cudart_emu_strided_gemm_is_the_product);
    suite_add_tcase(s, tc);
    TCase *lost = tcase_create("device_fault");
    tcase_set_timeout(lost, 60);
    tcase_add_test(lost, test_cudart_emu_device_fault_loses_the_engine);
    suite_add_tcase(s, lost);
    return s;
}
