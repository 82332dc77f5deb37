/*
 * measure.cu -- rn_cuda_measure (rn_cuda.h): the device limits the GPU
 * benchmark reports its figures against, measured in the same run.
 */
#include <cublasLt.h>
#include <cuda_profiler_api.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "../model.h"
#include "../sampler.h"
#include "../util.h"
#include "plan.h"
#include "rn_cuda.h"
}
#include "kernels.cuh"
#include "lt_desc.cuh"
#include "ret_ref.h"

/* fn() back to back on stream st for at least ms milliseconds, so the
 * clocks and the power draw settle as under a long prefill before a
 * timing. */
template <typename F> static void run_for(cudaStream_t st, float ms, F fn)
{
    cudaEvent_t a, b;
    float spent = 0.0f;
    cudaEventCreate(&a);
    cudaEventCreate(&b);
    cudaEventRecord(a, st);
    do {
        for (int i = 0; i < 10; i++)
            fn();
        cudaEventRecord(b, st);
        cudaEventSynchronize(b);
        cudaEventElapsedTime(&spent, a, b);
    } while (spent < ms && spent >= 0.0f);
    cudaEventDestroy(a);
    cudaEventDestroy(b);
}

/* Best-of-reps milliseconds of fn() on stream st. */
template <typename F> static float best_ms(cudaStream_t st, int reps, F fn)
{
    cudaEvent_t a, b;
    float best = 0.0f;
    cudaEventCreate(&a);
    cudaEventCreate(&b);
    fn(); /* warm-up */
    for (int r = 0; r < reps; r++) {
        float ms = 0.0f;
        cudaEventRecord(a, st);
        fn();
        cudaEventRecord(b, st);
        cudaEventSynchronize(b);
        cudaEventElapsedTime(&ms, a, b);
        best = (r == 0 || ms < best) ? ms : best;
    }
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    return best;
}

static int measure_copy(rn_cuda_limits *l, cudaStream_t st, rn_error *err)
{
    size_t n = (size_t)1 << 30;
    void *src = NULL, *dst = NULL;
    int rc = RN_OK;
    if (cudaMalloc(&src, n) || cudaMalloc(&dst, n) || cudaMemset(src, 1, n)) {
        rc = rn_error_set(err, RN_EDEVICE, "measure: cannot allocate 2 GiB for the copy kernel");
        goto cleanup;
    }
    {
        float ms = best_ms(st, 10, [&] { rk_copy(st, dst, src, n); });
        l->copy_GBps = 2.0 * (double)n / ((double)ms * 1e-3) / 1e9;
    }
    if (cudaGetLastError() != cudaSuccess)
        rc = rn_error_set(err, RN_EDEVICE, "measure: copy kernel failed");
cleanup:
    cudaFree(src);
    cudaFree(dst);
    return rc;
}

/* n bf16 values with a random sign, exponent (2^-7 to 1) and all 7
 * mantissa bits, from a hash of the index and seed: operands like a
 * model's, since the tensor cores draw more power on varied bits than on
 * one value repeated, and clock down for it. */
__global__ void fill_random_bf16_kernel(uint16_t *p, size_t n, uint32_t seed)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        uint32_t h = (uint32_t)i * 2654435761u ^ seed;
        h ^= h >> 15, h *= 2246822519u, h ^= h >> 13;
        p[i] = (uint16_t)((h >> 31) << 15 | (120u + (h >> 8 & 7u)) << 7 | (h & 0x7fu));
    }
}

static void fill_random_bf16(cudaStream_t st, void *p, size_t n, uint32_t seed)
{
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = 1024;
    cfg.blockDim = 256;
    cfg.stream = st;
    cudaLaunchKernelEx(&cfg, fill_random_bf16_kernel, (uint16_t *)p, n, seed);
}

/* One cuBLASLt product as the prefill's projections run: batch weight
 * matrices (k x m, transposed; stride m k) times the same activations (k x
 * n), bf16 in, fp32 out (stride m n), the heuristic's first algorithm --
 * what the backend's lt_entry_make picks for a chunk's projection or pair. */
struct lt_prod {
    lt_desc d;
    cublasLtMatmulAlgo_t algo;
    int m, n, k, batch;
};

static void lt_prod_free(lt_prod *g)
{
    lt_desc_free(&g->d);
    memset(g, 0, sizeof *g);
}

/* Makes g for batch products of m x n x k on lt; 0, or -1 (g freed) when
 * cuBLASLt offers none. */
static int lt_prod_make(cublasLtHandle_t lt, lt_prod *g, int m, int n, int k, int batch)
{
    cublasLtMatmulHeuristicResult_t res;
    memset(g, 0, sizeof *g);
    g->m = m, g->n = n, g->k = k, g->batch = batch;
    if (lt_desc_make(&g->d, m, k, n, CUDA_R_16BF, CUDA_R_32F, batch, (int64_t)m * k,
                     (int64_t)m * n))
        return -1;
    if (lt_desc_algos(lt, &g->d, 1, &res) < 1) {
        lt_prod_free(g);
        return -1;
    }
    g->algo = res.algo;
    return 0;
}

static void lt_prod_run(cublasLtHandle_t lt, const lt_prod *g, const void *A, const void *B,
                        float *C, void *ws, cudaStream_t st)
{
    float one = 1.0f, zero = 0.0f;
    cublasLtMatmul(lt, g->d.op, &one, A, g->d.a, B, g->d.b, &zero, C, g->d.c, C, g->d.c, &g->algo,
                   ws, RN_CUDA_LT_WORKSPACE, st);
}

static int measure_gemm(rn_cuda_limits *l, cudaStream_t st, int m, int n, int k, rn_error *err)
{
    cublasLtHandle_t lt = NULL;
    lt_prod g = {};
    void *A = NULL, *B = NULL, *ws = NULL;
    float *C = NULL;
    int rc = RN_OK;
    /* the prefill's shape: weights (k x m, transposed) times activations (k
     * x n), fp32 out */
    if (cudaMalloc(&A, (size_t)m * (size_t)k * 2) || cudaMalloc(&B, (size_t)k * (size_t)n * 2) ||
        cudaMalloc((void **)&C, (size_t)m * (size_t)n * 4) ||
        cudaMalloc(&ws, RN_CUDA_LT_WORKSPACE)) {
        rc = rn_error_set(err, RN_EDEVICE, "measure: cannot allocate the GEMM operands");
        goto cleanup;
    }
    /* first every operand one value, as the rates in docs/benchmarks.md up to
     * 27 Nov 2026 were measured (those without the settling and in single
     * products) */
    if (cudaMemset(A, 0x3c, (size_t)m * (size_t)k * 2) ||
        cudaMemset(B, 0x3c, (size_t)k * (size_t)n * 2)) {
        rc = rn_error_set(err, RN_EDEVICE, "measure: cannot fill the GEMM operands");
        goto cleanup;
    }
    if (cublasLtCreate(&lt) || lt_prod_make(lt, &g, m, n, k, 1)) {
        rc = rn_error_set(err, RN_EDEVICE, "measure: cuBLASLt has no bf16 GEMM for %dx%dx%d", m, n,
                          k);
        goto cleanup;
    }
    {
        double flop = 2.0 * m * (double)n * k;
        auto gemm = [&] { lt_prod_run(lt, &g, A, B, C, ws, st); };
        /* after 300 ms of the same products, the best of 5 runs of 20 */
        auto twenty = [&] {
            for (int i = 0; i < 20; i++)
                gemm();
        };
        run_for(st, 300.0f, gemm);
        l->gemm_const_TFLOPs = 20.0 * flop / ((double)best_ms(st, 5, twenty) * 1e-3) / 1e12;
        fill_random_bf16(st, A, (size_t)m * (size_t)k, 1u);
        fill_random_bf16(st, B, (size_t)k * (size_t)n, 2u);
        if (cudaGetLastError() != cudaSuccess) {
            rc = rn_error_set(err, RN_EDEVICE, "measure: cannot fill the GEMM operands");
            goto cleanup;
        }
        run_for(st, 300.0f, gemm);
        l->gemm_TFLOPs = 20.0 * flop / ((double)best_ms(st, 5, twenty) * 1e-3) / 1e12;
        l->gemm_m = m, l->gemm_n = n, l->gemm_k = k;
    }
cleanup:
    lt_prod_free(&g);
    if (lt)
        cublasLtDestroy(lt);
    cudaFree(A);
    cudaFree(B);
    cudaFree(C);
    cudaFree(ws);
    return rc;
}

/* The projections of a layer of c as a prefill chunk of rows rows runs
 * them with paired products on (RETNET_CUDA_LT_PAIRS, the default): q and
 * k, v and g, up and gate (GLU) as batches of two, o and down alone.
 * Fills the LAYER_PRODUCTS products; returns how many, or -1 when cuBLASLt
 * offers none for one (those made are freed). */
#define LAYER_PRODUCTS 5
static int layer_products(cublasLtHandle_t lt, const rn_config *c, int rows,
                          lt_prod g[LAYER_PRODUCTS])
{
    int D = c->hidden_size, K = c->key_dim, V = c->value_dim, F = c->intermediate_size;
    int glu = c->ffn_kind == RN_FFN_GLU;
    /* out, in, batch */
    int shape[LAYER_PRODUCTS][3] = {
        {K, D, 2}, {V, D, 2}, {D, V, 1}, {F, D, glu ? 2 : 1}, {D, F, 1}};
    int n = LAYER_PRODUCTS;
    for (int i = 0; i < n; i++)
        if (lt_prod_make(lt, &g[i], shape[i][0], rows, shape[i][1], shape[i][2])) {
            while (i-- > 0)
                lt_prod_free(&g[i]);
            return -1;
        }
    return n;
}

extern "C" int rn_cuda_products_rate(const rn_config *c, int rows, double *TFLOPs, double *rows_s,
                                     rn_error *err)
{
    cublasLtHandle_t lt = NULL;
    cudaStream_t st = NULL;
    lt_prod g[LAYER_PRODUCTS] = {};
    size_t woff[LAYER_PRODUCTS] = {}, wtotal = 0, in_max = 0, out_max = 0;
    char *W = NULL;
    void *X = NULL, *ws = NULL;
    float *Y = NULL;
    double flop = 0.0;
    int n = 0, rc = RN_OK;
    *TFLOPs = 0.0, *rows_s = 0.0;
    if (rows < 1)
        return rn_error_set(err, RN_EINVAL, "measure: %d rows", rows);
    if (cudaStreamCreate(&st) != cudaSuccess || cublasLtCreate(&lt) ||
        (n = layer_products(lt, c, rows, g)) < 0) {
        rc = rn_error_set(err, RN_EDEVICE, "measure: no cuBLASLt products for %d rows", rows);
        goto cleanup;
    }
    for (int i = 0; i < n; i++) {
        size_t w = (size_t)g[i].batch * (size_t)g[i].m * (size_t)g[i].k * 2;
        woff[i] = wtotal, wtotal += (w + 255) / 256 * 256;
        in_max = (size_t)g[i].k > in_max ? (size_t)g[i].k : in_max;
        out_max = (size_t)g[i].batch * (size_t)g[i].m > out_max
                      ? (size_t)g[i].batch * (size_t)g[i].m
                      : out_max;
        flop += 2.0 * g[i].batch * (double)g[i].m * (double)g[i].k * rows;
    }
    /* one layer's weights (over 100 MB for the 1.3B shape: more than L2, so
     * each layer's pass streams them as the model's distinct layers do) */
    if (cudaMalloc((void **)&W, wtotal) || cudaMalloc(&X, in_max * (size_t)rows * 2) ||
        cudaMalloc((void **)&Y, out_max * (size_t)rows * 4) ||
        cudaMalloc(&ws, RN_CUDA_LT_WORKSPACE)) {
        rc = rn_error_set(err, RN_EDEVICE, "measure: cannot allocate the products' operands");
        goto cleanup;
    }
    fill_random_bf16(st, W, wtotal / 2, 3u);
    fill_random_bf16(st, X, in_max * (size_t)rows, 4u);
    {
        auto pass = [&] {
            for (int l = 0; l < c->n_layers; l++)
                for (int i = 0; i < n; i++)
                    lt_prod_run(lt, &g[i], W + woff[i], X, Y, ws, st);
        };
        run_for(st, 100.0f, pass);
        float ms = best_ms(st, 3, pass);
        if (cudaGetLastError() != cudaSuccess || ms <= 0.0f) {
            rc = rn_error_set(err, RN_EDEVICE, "measure: the products failed");
            goto cleanup;
        }
        *TFLOPs = flop * c->n_layers / ((double)ms * 1e-3) / 1e12;
        *rows_s = rows / ((double)ms * 1e-3);
    }
cleanup:
    for (int i = 0; i < LAYER_PRODUCTS; i++)
        lt_prod_free(&g[i]);
    if (lt)
        cublasLtDestroy(lt);
    if (st)
        cudaStreamDestroy(st);
    cudaFree(W);
    cudaFree(X);
    cudaFree(Y);
    cudaFree(ws);
    return rc;
}

extern "C" int rn_cuda_measure(rn_cuda_limits *l, int m, int n, int k, rn_error *err)
{
    cudaDeviceProp p;
    cudaStream_t st = NULL;
    int rc;
    memset(l, 0, sizeof *l);
    if (cudaGetDeviceProperties(&p, 0) != cudaSuccess)
        return rn_error_set(err, RN_ENODEV, "measure: no CUDA device");
    snprintf(l->name, sizeof l->name, "%.*s", (int)sizeof l->name - 1, p.name);
    l->n_sms = p.multiProcessorCount;
    l->cc_major = p.major, l->cc_minor = p.minor;
    l->mem_total = p.totalGlobalMem;
    if (cudaStreamCreate(&st) != cudaSuccess)
        return rn_error_set(err, RN_EDEVICE, "measure: cannot create a stream");
    rc = measure_copy(l, st, err);
    if (rc == RN_OK)
        rc = measure_gemm(l, st, m, n, k, err);
    cudaStreamDestroy(st);
    return rc;
}

extern "C" void rn_cuda_profile(int on)
{
    if (on)
        cudaProfilerStart();
    else
        cudaProfilerStop();
}

extern "C" int rn_cuda_argmax_rows_host(const float *logits, int rows, int V, int32_t *out)
{
    float *d_l = NULL;
    int32_t *d_o = NULL;
    size_t bytes = sizeof(float) * (size_t)rows * (size_t)V;
    int rc = RN_EDEVICE;
    if (rows < 1 || V < 1)
        return RN_EINVAL;
    if (cudaMalloc(&d_l, bytes) != cudaSuccess ||
        cudaMalloc(&d_o, sizeof(int32_t) * rows) != cudaSuccess)
        goto cleanup;
    if (cudaMemcpy(d_l, logits, bytes, cudaMemcpyHostToDevice) != cudaSuccess)
        goto cleanup;
    rk_argmax_rows(0, d_o, d_l, rows, V);
    if (cudaGetLastError() == cudaSuccess &&
        cudaMemcpy(out, d_o, sizeof(int32_t) * rows, cudaMemcpyDeviceToHost) == cudaSuccess)
        rc = RN_OK;
cleanup:
    cudaFree(d_l);
    cudaFree(d_o);
    return rc;
}

extern "C" int rn_cuda_top_rows_host(const float *logits, int rows, int V, const float *temps,
                                     rn_row_top *out)
{
    float *d_l = NULL, *d_t = NULL;
    rn_row_top *d_o = NULL;
    size_t bytes = sizeof(float) * (size_t)rows * (size_t)V;
    int rc = RN_EDEVICE;
    if (rows < 1 || V < 1)
        return RN_EINVAL;
    if (cudaMalloc(&d_l, bytes) != cudaSuccess ||
        cudaMalloc(&d_t, sizeof(float) * (size_t)rows) != cudaSuccess ||
        cudaMalloc(&d_o, sizeof(rn_row_top) * (size_t)rows) != cudaSuccess)
        goto cleanup;
    if (cudaMemcpy(d_l, logits, bytes, cudaMemcpyHostToDevice) != cudaSuccess ||
        cudaMemcpy(d_t, temps, sizeof(float) * (size_t)rows, cudaMemcpyHostToDevice) != cudaSuccess)
        goto cleanup;
    rk_top_rows(0, d_o, d_l, d_t, rows, V);
    if (cudaGetLastError() == cudaSuccess && cudaMemcpy(out, d_o, sizeof(rn_row_top) * (size_t)rows,
                                                        cudaMemcpyDeviceToHost) == cudaSuccess)
        rc = RN_OK;
cleanup:
    cudaFree(d_l);
    cudaFree(d_t);
    cudaFree(d_o);
    return rc;
}

extern "C" long rn_cuda_qk_half_passes(void)
{
    return rk_qk_half_passes();
}

extern "C" long rn_cuda_ret_fused_launches(void)
{
    return rk_ret_fused_launches();
}

extern "C" long rn_cuda_ret_split_launches(void)
{
    return rk_ret_fused_split_launches();
}

extern "C" long rn_cuda_ret_normed_launches(void)
{
    return rk_ret_fused_normed_launches();
}

extern "C" long rn_cuda_ret_wide_launches(void)
{
    return rk_ret_fused_wide_launches();
}

extern "C" long rn_cuda_tc_stream_launches(void)
{
    return rk_gemv_tc_stream_launches();
}

extern "C" long rn_cuda_tc_stream_short(void)
{
    return rk_gemv_tc_stream_short();
}

extern "C" long rn_cuda_l2_fetches(void)
{
    return rk_l2_fetches();
}

extern "C" long rn_cuda_gemv_group_launches(void)
{
    return rk_gemv_group_launches();
}

extern "C" int rn_cuda_device_major(void)
{
    int dev = 0, major = -1;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess)
        return -1;
    return major;
}

/* The bf16 copies (rk_to_half's rounding) of problem p's q, k, v and
 * entering states in h, packed in that order into one host buffer of
 * p->o + (p->pw - p->S) values (q, k at their offsets, v at p->v, the
 * states at p->o); NULL when out of memory.  Caller frees. */
static uint16_t *rf_bf16_inputs(const rf_problem *p, const float *h)
{
    size_t ns = p->pw - p->S;
    uint16_t *b = (uint16_t *)malloc(sizeof(uint16_t) * (p->o + ns));
    if (!b)
        return NULL;
    for (size_t i = 0; i < p->o; i++)
        b[i] = rn__f32_to_bf16(h[i]);
    for (size_t i = 0; i < ns; i++)
        b[p->o + i] = rn__f32_to_bf16(h[p->S + i]);
    return b;
}

/* Runs the fused read-out on problem p filled from seed, dv in parts
 * shares, in wide warps or not, and returns the worst error of its
 * outputs (rf_fused_worst) in *worst. */
static int rf_device_check(const rf_problem *p, int zero_v, int parts, int wide, uint32_t seed,
                           double *worst)
{
    size_t ns = p->pw - p->S, nb = p->o + ns;
    float *h = (float *)malloc(sizeof(float) * p->total), *d = NULL;
    uint16_t *hb = NULL, *db = NULL;
    int rc = RN_EDEVICE;
    if (!h) {
        rc = RN_ENOMEM;
        goto cleanup;
    }
    rf_problem_fill(p, h, zero_v, seed);
    if (!(hb = rf_bf16_inputs(p, h))) {
        rc = RN_ENOMEM;
        goto cleanup;
    }
    if (cudaMalloc(&d, sizeof(float) * p->total) != cudaSuccess ||
        cudaMalloc(&db, sizeof(uint16_t) * nb) != cudaSuccess ||
        cudaMemcpy(d, h, sizeof(float) * p->total, cudaMemcpyHostToDevice) != cudaSuccess ||
        cudaMemcpy(db, hb, sizeof(uint16_t) * nb, cudaMemcpyHostToDevice) != cudaSuccess)
        goto cleanup;
    if (rk_ret_fused(0, d + p->o, db + p->q, db + p->k, db + p->v, db + p->o, d + p->pw, p->pieces,
                     p->H, p->P, p->dk, p->dv, parts, NULL, wide) ||
        cudaDeviceSynchronize() != cudaSuccess ||
        cudaMemcpy(h + p->o, d + p->o, sizeof(float) * (p->S - p->o), cudaMemcpyDeviceToHost) !=
            cudaSuccess)
        goto cleanup;
    *worst = rf_fused_worst(p, h);
    rc = *worst < 0.0 ? RN_ENOMEM : RN_OK;
cleanup:
    cudaFree(d);
    cudaFree(db);
    free(h);
    free(hb);
    return rc;
}

/* Whether this device runs the tensor-core retention kernel (sm_80 on):
 * RN_OK, RN_EUNSUPPORTED or RN_EDEVICE; *optin: its opt-in shared memory. */
static int rf_device_ok(int *optin)
{
    int dev = 0, major = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
        cudaDeviceGetAttribute(optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess)
        return RN_EDEVICE;
    return major < 8 ? RN_EUNSUPPORTED : RN_OK;
}

extern "C" int rn_cuda_ret_fused_check(int P, int pieces, int H, int dk, int dv, int zero_v,
                                       int parts, int wide, uint32_t seed, double *worst)
{
    int optin = 0, rc;
    *worst = -1.0;
    if ((rc = rf_device_ok(&optin)))
        return rc;
    if (pieces < 1 || H < 1 || !rk_ret_fused_fits(P, dk, dv, (size_t)-1) ||
        rn_cuda_ret_parts(1, dv, 1, parts) != parts)
        return RN_EINVAL;
    if (!rk_ret_fused_fits(P, dk, dv, (size_t)optin))
        return RN_EUNSUPPORTED; /* more shared memory than a block may have here */
    if (rk_ret_fused_prepare(dk, dv, (size_t)optin) != 0)
        return RN_EDEVICE;
    rf_problem p = rf_problem_make(P, pieces, H, dk, dv);
    return rf_device_check(&p, zero_v, parts, wide, seed, worst);
}

/* count random 16-bit values of dtype t into h, from *seed (advanced):
 * small integers times a power of two, exact in bf16 and fp16 alike. */
static void tc_check_values(uint16_t *h, size_t count, int t, uint32_t *seed)
{
    for (size_t i = 0; i < count; i++) {
        *seed = *seed * 1664525u + 1013904223u;
        float v = (float)((int)(*seed >> 24) - 128) * 0x1p-7f;
        h[i] = rn__f32_to_half(v, t == RN_DT_BF16);
    }
}

/* One rk_gemv_tc launch (options o) of the plain job W (out x in, dtype t)
 * over n input rows xh into y, and y's n x out values into host.  y
 * starts as NaN each time, so a launch that stores nothing cannot match
 * (nor pass as the reference).  false on a device error. */
static bool tc_run_plain(const void *W, const void *xh, float *y, int t, int n, int in, int out,
                         const rk_tc_opts *o, float *host)
{
    size_t yn = (size_t)n * (size_t)out;
    rk_gemv_set set;
    memset(&set, 0, sizeof set);
    set.count = 1;
    set.job[0].W = W, set.job[0].y = y, set.job[0].out = out, set.job[0].kind = RK_JOB_PLAIN;
    if (cudaMemset(y, 0xff, yn * sizeof(float)) != cudaSuccess)
        return false;
    rk_gemv_tc(0, &set, t, xh, n, in, o);
    return cudaGetLastError() == cudaSuccess &&
           cudaMemcpy(host, y, yn * sizeof(float), cudaMemcpyDeviceToHost) == cudaSuccess;
}

extern "C" int rn_cuda_tc_variant_check(int in, int out, int n, int t, uint32_t seed, int loads,
                                        int stages, int *ran, long *differ)
{
    long before[RN_CUDA_TC_STAGES_MAX + 1];
    for (int p = 0; p <= RN_CUDA_TC_STAGES_MAX; p++)
        before[p] = rk_gemv_tc_ring_launches(p);
    *ran = 0;
    size_t wn = (size_t)out * (size_t)in, xn = (size_t)n * (size_t)in, yn = (size_t)n * out;
    uint16_t *hw = (uint16_t *)malloc(wn * 2), *hx = (uint16_t *)malloc(xn * 2);
    float *hy[2] = {(float *)malloc(yn * sizeof(float)), (float *)malloc(yn * sizeof(float))};
    void *dw = NULL, *dx = NULL;
    float *dy = NULL;
    int rc = RN_EDEVICE, major = 0, optin = 0, per_sm = 0;
    rk_tc_opts o[2] = {};
    *differ = -1;
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0) != cudaSuccess ||
        cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0) != cudaSuccess ||
        cudaDeviceGetAttribute(&per_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, 0) !=
            cudaSuccess)
        goto cleanup;
    if (major < 8) { /* mma.m16n8k16 */
        rc = RN_EUNSUPPORTED;
        goto cleanup;
    }
    if (in < 8 || in % 8 || out < 2 || n < 1 || n > RN_CUDA_TC_MAX ||
        (t != RN_DT_BF16 && t != RN_DT_F16))
        rc = RN_EINVAL;
    if (rc == RN_EINVAL || !hw || !hx || !hy[0] || !hy[1]) {
        rc = rc == RN_EINVAL ? rc : RN_ENOMEM;
        goto cleanup;
    }
    /* one SM: the plan keeps each warp's whole share of k, so loads 16
     * takes one round where 8 takes two or more, and the ring's stages
     * (2 to 4, each a round) wrap where a warp has more rounds */
    for (int v = 0; v < 2; v++) {
        o[v].n_sms = 1, o[v].smem_block = (size_t)optin, o[v].smem_sm = (size_t)per_sm;
        o[v].loads = v ? loads : 8, o[v].stages = v ? stages : 0;
    }
    if (stages && rk_gemv_tc_prepare((size_t)optin) != 0)
        goto cleanup;
    tc_check_values(hw, wn, t, &seed);
    tc_check_values(hx, xn, t, &seed);
    if (cudaMalloc(&dw, wn * 2) != cudaSuccess || cudaMalloc(&dx, xn * 2) != cudaSuccess ||
        cudaMalloc((void **)&dy, yn * sizeof(float)) != cudaSuccess ||
        cudaMemcpy(dw, hw, wn * 2, cudaMemcpyHostToDevice) != cudaSuccess ||
        cudaMemcpy(dx, hx, xn * 2, cudaMemcpyHostToDevice) != cudaSuccess)
        goto cleanup;
    for (int v = 0; v < 2; v++)
        if (!tc_run_plain(dw, dx, dy, t, n, in, out, &o[v], hy[v]))
            goto cleanup;
    for (int p = 2; p <= RN_CUDA_TC_STAGES_MAX; p++)
        if (rk_gemv_tc_ring_launches(p) != before[p])
            *ran = p;
    *differ = 0; /* the inputs are small and finite: a NaN is an output never stored */
    for (size_t i = 0; i < yn; i++)
        *differ += memcmp(&hy[0][i], &hy[1][i], sizeof(float)) != 0 || hy[0][i] != hy[0][i];
    rc = RN_OK;
cleanup:
    cudaFree(dw);
    cudaFree(dx);
    cudaFree(dy);
    free(hw);
    free(hx);
    free(hy[0]);
    free(hy[1]);
    return rc;
}

/* count 16-bit values of dtype t in [-1, 1) with every mantissa bit
 * drawn (a sum's order shows in its bits) into h, and as floats into f. */
static void tc_rough_values(uint16_t *h, float *f, size_t count, int t, uint32_t *seed)
{
    for (size_t i = 0; i < count; i++) {
        *seed = *seed * 1664525u + 1013904223u;
        float v = (float)(*seed >> 8) * 0x1p-23f - 1.0f;
        h[i] = rn__f32_to_half(v, t == RN_DT_BF16);
        f[i] = rn__half_to_f32(h[i], t == RN_DT_BF16);
    }
}

/* The largest |a - b| over the sum of its products' magnitudes (out x n
 * outputs of W x rows), INFINITY where either is NaN. */
static double tc_worst_gap(const float *a, const float *b, const float *w, const float *x, int in,
                           int out, int n)
{
    double worst = 0.0;
    for (int i = 0; i < n; i++)
        for (int r = 0; r < out; r++) {
            size_t at = (size_t)i * (size_t)out + (size_t)r;
            double mag = 0.0;
            for (int k = 0; k < in; k++)
                mag += fabs((double)w[(size_t)r * (size_t)in + (size_t)k] *
                            (double)x[(size_t)i * (size_t)in + (size_t)k]);
            double gap = a[at] != a[at] || b[at] != b[at] ? INFINITY : fabs((double)a[at] - b[at]);
            gap = mag > 0.0 ? gap / mag : gap;
            worst = gap > worst ? gap : worst;
        }
    return worst;
}

extern "C" int rn_cuda_tc_stream_check(int in, int out, int n, int t, int n_sms, uint32_t seed,
                                       double *worst, long *differ, long *left)
{
    long launched = rk_gemv_tc_stream_launches(), groups = 0;
    size_t wn = (size_t)out * (size_t)in, xn = (size_t)n * (size_t)in, yn = (size_t)n * out;
    uint16_t *hw = (uint16_t *)malloc(wn * 2), *hx = (uint16_t *)malloc(xn * 2);
    float *fw = (float *)malloc(wn * sizeof(float)), *fx = (float *)malloc(xn * sizeof(float));
    float *hy[4] = {NULL, NULL, NULL, NULL};
    unsigned *hc = NULL;
    void *dw = NULL, *dx = NULL, *dbuf = NULL;
    float *dy = NULL;
    int rc = RN_EDEVICE, major = 0, sms = 0;
    rk_tc_opts o[2] = {};
    size_t part = 0, at = 0;
    *worst = -1.0, *differ = *left = -1;
    for (int v = 0; v < 4; v++)
        hy[v] = (float *)malloc(yn * sizeof(float));
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0) != cudaSuccess ||
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0) != cudaSuccess)
        goto cleanup;
    if (major < 8) { /* mma.m16n8k16 */
        rc = RN_EUNSUPPORTED;
        goto cleanup;
    }
    if (in < 8 || in % 8 || out < 2 || n < 1 || n > RN_CUDA_TC_MAX ||
        (t != RN_DT_BF16 && t != RN_DT_F16)) {
        rc = RN_EINVAL;
        goto cleanup;
    }
    if (!hw || !hx || !fw || !fx || !hy[0] || !hy[1] || !hy[2] || !hy[3]) {
        rc = RN_ENOMEM;
        goto cleanup;
    }
    n_sms = n_sms > 0 ? n_sms : sms;
    part = rk_gemv_tc_stream_need((size_t)(out + 1) / 2, in, n, n_sms, &groups);
    at = (part + 255) / 256 * 256;
    hc = (unsigned *)malloc((size_t)groups * sizeof(unsigned));
    tc_rough_values(hw, fw, wn, t, &seed);
    tc_rough_values(hx, fx, xn, t, &seed);
    if (!hc || cudaMalloc(&dw, wn * 2) != cudaSuccess || cudaMalloc(&dx, xn * 2) != cudaSuccess ||
        cudaMalloc((void **)&dy, yn * sizeof(float)) != cudaSuccess ||
        cudaMalloc(&dbuf, at + (size_t)groups * sizeof(unsigned)) != cudaSuccess ||
        cudaMemset((char *)dbuf + at, 0, (size_t)groups * sizeof(unsigned)) != cudaSuccess ||
        cudaMemcpy(dw, hw, wn * 2, cudaMemcpyHostToDevice) != cudaSuccess ||
        cudaMemcpy(dx, hx, xn * 2, cudaMemcpyHostToDevice) != cudaSuccess)
        goto cleanup;
    o[0].n_sms = o[1].n_sms = n_sms, o[0].loads = o[1].loads = 8;
    o[1].stream_part = (float *)dbuf, o[1].stream_part_bytes = part;
    o[1].stream_count = (unsigned *)((char *)dbuf + at), o[1].stream_groups = groups;
    /* the register kernel, then the stream-K one three times: the same
     * bits each time (its counters back at zero, its parts summed in one
     * order whichever warp comes last) */
    for (int v = 0; v < 4; v++)
        if (!tc_run_plain(dw, dx, dy, t, n, in, out, &o[v ? 1 : 0], hy[v]))
            goto cleanup;
    if (cudaMemcpy(hc, (char *)dbuf + at, (size_t)groups * sizeof(unsigned),
                   cudaMemcpyDeviceToHost) != cudaSuccess)
        goto cleanup;
    if (rk_gemv_tc_stream_launches() - launched != 3) {
        rc = RN_EUNSUPPORTED; /* the stream-K launch did not run */
        goto cleanup;
    }
    *worst = tc_worst_gap(hy[1], hy[0], fw, fx, in, out, n);
    *differ = *left = 0;
    for (size_t i = 0; i < yn; i++)
        for (int v = 2; v < 4; v++)
            *differ += memcmp(&hy[1][i], &hy[v][i], sizeof(float)) != 0;
    for (long g = 0; g < groups; g++)
        *left += hc[g] != 0;
    rc = RN_OK;
cleanup:
    cudaFree(dw);
    cudaFree(dx);
    cudaFree(dy);
    cudaFree(dbuf);
    free(hw);
    free(hx);
    free(fw);
    free(fx);
    free(hc);
    for (int v = 0; v < 4; v++)
        free(hy[v]);
    return rc;
}
