/*
 * backend_cuda.cu -- the CUDA backend (backend.h): weights and every
 * session's recurrent state resident in device memory.
 *
 * Memory is planned once at init (plan.h) and never grows: the weights as
 * they are in the checkpoint (bf16, fp16 or fp32; vectors fp32), the state
 * pool (n_slots x state bytes, so admission stays exact arithmetic), the
 * activation rows, the chunkwise scratch and a cuBLASLt workspace.
 *
 * A forward pass mirrors the CPU backend's step for step (backend_cpu.c):
 *   - projections: decode batches up to x->gemv_max rows (RN_CUDA_GEMV_DEFAULT,
 *     or RN_CUDA_GEMV_NO_TC where the tensor-core GEMV does not run)
 *     stream each weight matrix once through rk_gemv_multi (fp32
 *     activations, fp32 accumulation), which also folds what follows a
 *     projection into its store (q/k scale and rotary, up * act(gate), the
 *     residual add); bf16/fp16 batches above that and up to x->tc_max rows
 *     (RN_CUDA_TC_DEFAULT) go the same way through rk_gemv_tc (tensor cores,
 *     the rows rounded to the weights' dtype); larger batches and prefill
 *     chunks use cuBLASLt with the activations rounded to the weights' dtype
 *     and fp32 accumulation and output; the kernels producing those rounded
 *     inputs write them rounded (half_out);
 *   - recurrent step: rk_ret_step reads and writes each state once, gathered
 *     by slot index, so a batch needs no copies;
 *   - chunkwise retention: per-head strided-batched fp32 GEMMs (cuBLAS) for
 *     q k^T, A v, the inter-chunk term q S0 and the state update, plus the
 *     decay mask and scalings as kernels, in pieces of 256 or 512 tokens
 *     (rn_cuda_ret_piece_default, RETNET_CUDA_RET_CHUNK), the full ones
 *     batched (retention_batched; torchscale's normaliser keeps whole
 *     chunks by default).
 * The parallel form is the chunkwise form over the whole prompt from a zero
 * state (the same sums; torchscale's clamp is not offered here).
 *
 * Decode steps run as CUDA graphs, one per (batch size, step_tail),
 * captured on first use: a 1.3B-shaped step is ~200 launches, whose
 * CPU-side cost would otherwise exceed the step's memory time at batch 1.
 * Where the projections stream they are also dependent launches (kernels.cu,
 * rk_set_pdl), so each kernel's start overlaps its predecessor's end.
 * Environment switches, each read when an engine is made and each run by
 * `make check-cuda`: RETNET_CUDA_GRAPHS=0, RETNET_CUDA_PDL=0,
 * RETNET_CUDA_FUSE=0 (none changes a bit: the form suite checks),
 * RETNET_CUDA_GEMV_MAX=n, RETNET_CUDA_TC_MAX=n, RETNET_CUDA_RET_CHUNK=n.
 *
 * Greedy tokens can be picked on the device, inside the graph
 * (decode_argmax: n ids come back, not n x vocab logits), and rows to be
 * sampled reduced there to their candidates and sums (decode_top: n
 * rn_row_top come back, and only the rows the sampler cannot decide from
 * those, decode_rows).
 */
#include <atomic>

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "../backend.h"
#include "plan.h"
#include "rn_cuda.h"
}
#include "../rn_math.h"
#include "kernels.cuh"
#include "lt_desc.cuh"

#define LT_CACHE 64
#define LT_CANDIDATES 8 /* the heuristic's algorithms RETNET_CUDA_LT_TUNE times */

/* What a decode step ends with: nothing (the layers only), the logits in
 * x->logits, also greedy's picks (over the step's token ids), or also the
 * rows reduced for sampling in x->top. */
typedef enum { STEP_BARE = 0, STEP_LOGITS, STEP_PICKS, STEP_TOP, STEP_TAILS } step_tail;

struct lt_entry {
    int out, in, n, dtype, otype; /* otype: the output's (fp32, or the weights' with half_act) */
    /* strided batch (lt_pair): products of the one input, the k-th weights
     * and output stride_w and stride_y elements after the first; batch 1:
     * one product */
    int batch;
    int64_t stride_w, stride_y;
    lt_desc d;
    cublasLtMatmulAlgo_t algo;
    /* RETNET_CUDA_LT_TUNE: the heuristic's candidates, timed on the first
     * call outside a graph capture (lt_tune); 0 once timed, or untuned */
    cublasLtMatmulAlgo_t cand[LT_CANDIDATES];
    int n_cand;
};

/* Device pointers of one block's tensors (NULL when absent). */
struct dev_layer {
    const void *q, *k, *v, *g, *o, *up, *gate, *down;
    const float *q_b, *k_b, *v_b, *g_b, *o_b, *up_b, *gate_b, *down_b;
    const float *norm1_w, *norm1_b, *norm2_w, *norm2_b, *gn_w;
};

/* The operands of one (piece, head) product of retention_batched, each a
 * device array of pieces x H addresses (b = piece * H + head); PP_VH and
 * PP_KDH: the fused path's bf16 copies of v (fused_copies) and scaled k. */
enum { PP_K, PP_Q, PP_V, PP_O, PP_A, PP_KD, PP_QD, PP_U, PP_VH, PP_KDH, PP_COUNT };
static_assert(PP_COUNT == RN_CUDA_PIECE_ARRAYS, "the plan counts the arrays alloc_pieces makes");

/* The token ids, positions, slots and temperatures the pass being launched
 * reads: a prefill chunk's arrays (no slots or temperatures), or a decode
 * step's packed input block (step_in_at). */
struct pass_in {
    int32_t *tok;
    int64_t *pos;
    int *slots;
    float *temps;
};

struct cuda_ctx {
    const rn_config *c;
    const rn_weights *w;
    rn_cuda_plan plan;
    int n_sms, broken;
    cudaStream_t st;
    cublasHandle_t blas;
    cublasLtHandle_t lt;
    /* weights: one allocation, tensors at 256-byte offsets */
    char *wdev;
    size_t wsize, wused;
    dev_layer *layers;
    const void *embed, *lm_head;
    const float *lm_head_b, *final_norm_w, *final_norm_b, *embed_norm_w;
    /* state pool (fp32 or bf16 values, plan.state_bf16) and positions (host) */
    void *states;
    float *sscr; /* bf16 pools: one layer's state in fp32 (plan.layer_scratch_bytes) */
    int64_t *pos;
    /* activations */
    float *x, *hn, *y, *q, *k, *v, *g, *o, *f1, *f2, *logits;
    void *half[2]; /* cuBLASLt / tensor-core inputs in the weights' dtype; [1]: F wide */
    float *A, *qd, *kd, *pw, *pw_tail, *sums;
    rn_row_top *top; /* decode_top's reduced rows (max_batch) */
    /* a decode step's inputs (rn_cuda_step_in): packed on the host into
     * page-locked step_host, taken in by one copy at the start of the step
     * (inside its graph), to step_dev just after x->top; step_back: the
     * picks or reduced rows the step copies out at its end, likewise */
    char *step_dev, *step_host;
    void *step_back;
    pass_in in;    /* what the kernels being launched read */
    int ret_chunk; /* retention piece length in prefill chunks (ret_piece) */
    /* full pieces run together (retention_batched): each (piece, head)'s
     * entering state, and device arrays of its operands' addresses */
    float *U;
    void **pp[PP_COUNT];
    float *part; /* the recurrent step's partial read-outs (plan.step_bytes) */
    double *log_gamma;
    float *gamma, *freq;
    int32_t *tok;    /* a prefill chunk's token ids (max_rows) */
    int64_t *rowpos; /* and positions */
    void *ws;
    lt_entry cache[LT_CACHE];
    int n_cache; /* valid entries */
    long n_made; /* entries ever made: the next one replaces n_made % LT_CACHE */
    int64_t *host_rowpos;
    /* decode graphs: [step_tail][n], n in 1..max_batch; NULL until captured */
    cudaGraphExec_t *graphs[STEP_TAILS];
    int use_graphs;
    int fuse;       /* fold the steps after projections into them (folding) */
    int gemv_max;   /* largest row count the projections stream through rk_gemv_multi */
    int tc_max;     /* above gemv_max and up to this, through rk_gemv_tc (0: never) */
    int gemv_split; /* columns a warp of rk_gemv_multi takes, 0: whole rows */
    rk_tc_opts tc;  /* how rk_gemv_tc streams (RETNET_CUDA_TC_LOADS, RETNET_CUDA_TC_ASYNC) */
    int step_early; /* rk_ret_step loads early up to these rows (RETNET_CUDA_STEP_EARLY) */
    int norm_vec;   /* norms hold their rows in registers (RETNET_CUDA_NORM_VEC) */
    int half_t;     /* common_half: the dtype producers may round their output to, or -1 */
    const float *rounded[2]; /* rows a producer wrote only rounded, into half[i] (half_out) */
    int pdl;                 /* dependent launch for decode steps on the GEMV path (rk_set_pdl) */
    int prefill_pdl;         /* and for prefill chunks' own kernels (RETNET_CUDA_PREFILL_PDL) */
    int resid_gemm;  /* cuBLASLt adds the output projections to x (RETNET_CUDA_RESID_GEMM) */
    int resid_added; /* it just did: the next residual_into only normalises */
    cublasComputeType_t ret_compute; /* the chunkwise retention GEMMs */
    int ret_fused; /* batched pieces through rk_ret_fused (RETNET_CUDA_RET_FUSED) */
    int ret_split; /* rk_ret_fused's dv shares: rn_cuda_ret_parts's want (RETNET_CUDA_RET_SPLIT) */
    int ret_norm;  /* rk_ret_fused applies the group norm in its store (RETNET_CUDA_RET_NORM) */
    int ret_wide;  /* rk_ret_fused's wide warp tiles (RETNET_CUDA_RET_WIDE) */
    /* RETNET_CUDA_L2_FORK: decode steps of up to l2_fork rows ask L2 for
     * each layer's output-projection weights on st2 while the recurrent
     * step and group norm run on st (l2_fork_out); forked: st has yet to
     * wait for the last such request (l2_join) */
    int l2_fork, forked;
    cudaStream_t st2;
    cudaEvent_t ev_fork, ev_join;
    /* while retention_pieces runs a chunk through a layer: the group norm
     * rk_ret_fused may apply (NULL: none), and the first rows it applied
     * it to (retention_block normalises the rest) */
    const rk_group_norm *gn;
    int gn_rows;
    int qk_half;       /* the rotary pass writes rk_ret_fused's q, k copies (RETNET_CUDA_QK_HALF) */
    int qk_rounded;    /* it just did, for this layer's retention_fused */
    int v_half;        /* v's product writes rk_ret_fused's v copy (RETNET_CUDA_V_HALF) */
    int lt_pairs;      /* q and k, v and g, up and gate as one cuBLASLt product (lt_pair) */
    int lt_paired;     /* a paired product has run: a later failure is the device's */
    int v_rounded;     /* it just did, for this layer's retention_fused */
    int half_act;      /* cuBLASLt writes GLU's up and gate rounded (RETNET_CUDA_HALF_ACT) */
    int lt_tune;       /* rows from which cuBLASLt's algorithm is timed per shape, 0: never
                          (RETNET_CUDA_LT_TUNE) */
    size_t smem_optin; /* shared memory a block may opt in to */
    /* RETNET_CUDA_GEMV_PRENORM: a pre-norm whose only reader is one
     * streaming GEMV is formed by that GEMV (rk_gemv_multi_norm) instead of
     * a norm launch; RETNET_CUDA_GEMV_GROUPNORM (group_norm): a decode
     * step's group norm too, by the output projection's GEMV.  pend: such a
     * norm of the rows pend_rows, not yet launched, whose raw input is at
     * pend_src (pend_rows itself for a pre-norm, the step's read-out for
     * a group norm; pre_norm and retention_block set it, gemv_run or
     * settle_rows takes it) */
    int prenorm;
    int group_norm;
    int pend;
    const float *pend_rows, *pend_src;
    rk_gemv_norm pend_nm;
};

/* ---------------------------------------------------------------- errors */

static int cuda_fail(rn_error *err, cudaError_t e, const char *what)
{
    return rn_error_set(err, RN_EDEVICE, "cuda backend: %s: %s", what, cudaGetErrorString(e));
}

#define CU(call, what)                                                                             \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) {                                                                   \
            rc = cuda_fail(err, e_, what);                                                         \
            goto cleanup;                                                                          \
        }                                                                                          \
    } while (0)

/* ------------------------------------------------------------- weights */

static size_t tensor_bytes(const rn_tensor *t)
{
    return t->data ? (size_t)t->numel * rn_dtype_size(t->dtype) : 0;
}

static size_t align256(size_t n)
{
    return (n + 255) & ~(size_t)255;
}

/* Copies t into the weight buffer (or only counts its bytes when x->wdev is
 * NULL); returns its device address, NULL for an absent tensor. */
static const void *upload(cuda_ctx *x, const rn_tensor *t, int *rc)
{
    size_t n = tensor_bytes(t);
    if (!n)
        return NULL;
    char *d = x->wdev ? x->wdev + x->wused : NULL;
    x->wused += align256(n);
    if (d && cudaMemcpy(d, t->data, n, cudaMemcpyHostToDevice) != cudaSuccess)
        *rc = RN_EDEVICE;
    return d;
}

static int upload_all(cuda_ctx *x)
{
    const rn_weights *w = x->w;
    int rc = RN_OK;
    x->wused = 0;
    x->embed = upload(x, &w->embed, &rc);
    x->lm_head = w->lm_head_w.data == w->embed.data ? x->embed : upload(x, &w->lm_head_w, &rc);
    x->lm_head_b = (const float *)upload(x, &w->lm_head_b, &rc);
    x->final_norm_w = (const float *)upload(x, &w->final_norm_w, &rc);
    x->final_norm_b = (const float *)upload(x, &w->final_norm_b, &rc);
    x->embed_norm_w = (const float *)upload(x, &w->embed_norm_w, &rc);
    for (int l = 0; l < x->c->n_layers; l++) {
        const rn_layer_weights *s = &w->layers[l];
        dev_layer *d = &x->layers[l];
        d->q = upload(x, &s->q_w, &rc), d->k = upload(x, &s->k_w, &rc);
        d->v = upload(x, &s->v_w, &rc), d->g = upload(x, &s->g_w, &rc);
        d->o = upload(x, &s->o_w, &rc), d->up = upload(x, &s->up_w, &rc);
        d->gate = upload(x, &s->gate_w, &rc), d->down = upload(x, &s->down_w, &rc);
        d->q_b = (const float *)upload(x, &s->q_b, &rc),
        d->k_b = (const float *)upload(x, &s->k_b, &rc);
        d->v_b = (const float *)upload(x, &s->v_b, &rc),
        d->g_b = (const float *)upload(x, &s->g_b, &rc);
        d->o_b = (const float *)upload(x, &s->o_b, &rc),
        d->up_b = (const float *)upload(x, &s->up_b, &rc);
        d->gate_b = (const float *)upload(x, &s->gate_b, &rc);
        d->down_b = (const float *)upload(x, &s->down_b, &rc);
        d->norm1_w = (const float *)upload(x, &s->norm1_w, &rc);
        d->norm1_b = (const float *)upload(x, &s->norm1_b, &rc);
        d->norm2_w = (const float *)upload(x, &s->norm2_w, &rc);
        d->norm2_b = (const float *)upload(x, &s->norm2_b, &rc);
        d->gn_w = (const float *)upload(x, &s->gn_w, &rc);
    }
    return rc;
}

/* ------------------------------------------------------------ cuBLASLt */

static cudaDataType_t cuda_type(int t)
{
    return t == RN_DT_BF16 ? CUDA_R_16BF : t == RN_DT_F16 ? CUDA_R_16F : CUDA_R_32F;
}

static void lt_entry_free(lt_entry *e)
{
    lt_desc_free(&e->d);
    memset(e, 0, sizeof *e);
}

/* y^T (out x n) = W x^T as lt_desc says, output in otype (fp32, or rounded
 * to the weights' 16-bit dtype); batch products as lt_entry says.  Fills
 * e; RN_EDEVICE if cuBLASLt offers no algorithm. */
static int lt_entry_make(cuda_ctx *x, lt_entry *e, int out, int in, int n, int dtype, int otype,
                         int batch, int64_t stride_w, int64_t stride_y)
{
    cublasLtMatmulHeuristicResult_t res[LT_CANDIDATES];
    int want = x->lt_tune && n >= x->lt_tune ? LT_CANDIDATES : 1, found;
    *e = (lt_entry){out, in, n, dtype, otype, batch, stride_w, stride_y, {}, {}, {}, 0};
    if (lt_desc_make(&e->d, out, in, n, cuda_type(dtype), cuda_type(otype), batch, stride_w,
                     stride_y))
        return RN_EDEVICE;
    if ((found = lt_desc_algos(x->lt, &e->d, want, res)) < 1) {
        lt_entry_free(e);
        return RN_EDEVICE;
    }
    e->algo = res[0].algo;
    for (int i = 0; found > 1 && i < found; i++)
        e->cand[e->n_cand++] = res[i].algo;
    return RN_OK;
}

/* The cached plan for this shape, made on first use.  NULL on failure. */
static lt_entry *lt_lookup_batch(cuda_ctx *x, int out, int in, int n, int dtype, int otype,
                                 int batch, int64_t stride_w, int64_t stride_y)
{
    for (int i = 0; i < x->n_cache; i++) {
        lt_entry *e = &x->cache[i];
        if (e->out == out && e->in == in && e->n == n && e->dtype == dtype && e->otype == otype &&
            e->batch == batch && e->stride_w == stride_w && e->stride_y == stride_y)
            return e;
    }
    /* full: replace entries round-robin (decode batch sizes come and go) */
    lt_entry *e = &x->cache[x->n_made % LT_CACHE];
    if (x->n_made >= LT_CACHE)
        lt_entry_free(e);
    if (lt_entry_make(x, e, out, in, n, dtype, otype, batch, stride_w, stride_y) != RN_OK)
        return NULL;
    x->n_made++;
    x->n_cache = x->n_made < LT_CACHE ? x->n_made : LT_CACHE;
    return e;
}

static lt_entry *lt_lookup(cuda_ctx *x, int out, int in, int n, int dtype, int otype)
{
    return lt_lookup_batch(x, out, in, n, dtype, otype, 1, 0, 0);
}

/* Milliseconds of e's product with algorithm a on these operands: the
 * best of 3 runs after one to warm up; -1 where cuBLASLt refuses it. */
static float lt_time(cuda_ctx *x, lt_entry *e, const cublasLtMatmulAlgo_t *a, void *y,
                     const void *W, const void *in_rows, cudaEvent_t t0, cudaEvent_t t1)
{
    float one = 1.0f, zero = 0.0f, best = -1.0f;
    for (int r = 0; r < 4; r++) {
        float ms = 0.0f;
        if (cudaEventRecord(t0, x->st) != cudaSuccess ||
            cublasLtMatmul(x->lt, e->d.op, &one, W, e->d.a, in_rows, e->d.b, &zero, y, e->d.c, y,
                           e->d.c, a, x->ws, RN_CUDA_LT_WORKSPACE,
                           x->st) != CUBLAS_STATUS_SUCCESS ||
            cudaEventRecord(t1, x->st) != cudaSuccess || cudaEventSynchronize(t1) != cudaSuccess ||
            cudaEventElapsedTime(&ms, t0, t1) != cudaSuccess)
            return -1.0f;
        if (r > 0 && (best < 0.0f || ms < best))
            best = ms;
    }
    return best;
}

/* Shapes lt_tune has timed in this process, for tests. */
static std::atomic<long> lt_tuned;

extern "C" long rn_cuda_lt_tuned(void)
{
    return lt_tuned.load();
}

/* Pairs of projections lt_pair ran as one product, for tests. */
static std::atomic<long> lt_pair_products;

extern "C" long rn_cuda_lt_pair_products(void)
{
    return lt_pair_products.load();
}

/* Chunks whose v product wrote the fused read-out's bf16 copy
 * (qkvg_products), for tests. */
static std::atomic<long> v_half_products;

extern "C" long rn_cuda_v_half_products(void)
{
    return v_half_products.load();
}

/* RETNET_CUDA_LT_TUNE: e's heuristic candidates timed on the operands of
 * its first call (the output written each time; the caller's product
 * writes it again), and the fastest kept, with a line on stderr.  Not
 * while the stream is captured into a graph (a decode step's): the entry
 * keeps the heuristic's first choice there and waits for an eager call. */
static int lt_tune(cuda_ctx *x, lt_entry *e, void *y, const void *W, const void *in_rows)
{
    cudaStreamCaptureStatus cs;
    cudaEvent_t t0 = NULL, t1 = NULL;
    float first = -1.0f, best = -1.0f;
    int pick = 0, rc = RN_EDEVICE;
    if (cudaStreamIsCapturing(x->st, &cs) != cudaSuccess)
        return RN_EDEVICE;
    if (cs != cudaStreamCaptureStatusNone)
        return RN_OK;
    if (cudaPeekAtLastError() != cudaSuccess)
        return RN_EDEVICE; /* an earlier launch's error: the forward reports it, not cleared here */
    if (cudaEventCreate(&t0) != cudaSuccess || cudaEventCreate(&t1) != cudaSuccess)
        goto cleanup;
    for (int i = 0; i < e->n_cand; i++) {
        float ms = lt_time(x, e, &e->cand[i], y, W, in_rows, t0, t1);
        if (ms < 0.0f)
            cudaGetLastError(); /* a refused candidate is only skipped (none was pending) */
        if (i == 0)
            first = ms;
        if (ms >= 0.0f && (best < 0.0f || ms < best))
            best = ms, pick = i;
    }
    if (best < 0.0f)
        goto cleanup; /* not even the heuristic's choice ran */
    fprintf(stderr,
            "cuda backend: GEMM %d x %d x %d: candidate %d of %d, %.4f ms (the heuristic's "
            "first: %.4f ms)\n",
            e->n, e->out, e->in, pick + 1, e->n_cand, (double)best, (double)first);
    e->algo = e->cand[pick];
    e->n_cand = 0;
    lt_tuned++;
    rc = RN_OK;
cleanup:
    if (t0)
        cudaEventDestroy(t0);
    if (t1)
        cudaEventDestroy(t1);
    return rc;
}

/* y = in_rows W^T + beta y (n x out) in otype (RN_DT_F32, or dtype when
 * 16-bit; beta 0: y is only written), through e (its first call times
 * LT_TUNE's candidates).  cuBLASLt reads and writes y in place (C and D
 * one buffer of one layout).  probe: where LT_TUNE's candidates may write
 * (lt_tune), an n x out buffer of otype other than y when y's values are
 * read (beta != 0); NULL: y.  lt_matmul_beta: the same through the cached
 * entry of that shape (lt_lookup). */
static int lt_run(cuda_ctx *x, lt_entry *e, void *y, void *probe, const void *W,
                  const void *in_rows, float beta)
{
    float one = 1.0f;
    if (e->n_cand && lt_tune(x, e, probe ? probe : y, W, in_rows) != RN_OK)
        return RN_EDEVICE;
    cublasStatus_t s =
        cublasLtMatmul(x->lt, e->d.op, &one, W, e->d.a, in_rows, e->d.b, &beta, y, e->d.c, y,
                       e->d.c, &e->algo, x->ws, RN_CUDA_LT_WORKSPACE, x->st);
    return s == CUBLAS_STATUS_SUCCESS ? RN_OK : RN_EDEVICE;
}

static int lt_matmul_beta(cuda_ctx *x, void *y, void *probe, const void *W, const void *in_rows,
                          int n, int out, int in, int dtype, int otype, float beta)
{
    lt_entry *e = lt_lookup(x, out, in, n, dtype, otype);
    return e ? lt_run(x, e, y, probe, W, in_rows, beta) : RN_EDEVICE;
}

/* y = in_rows W^T (n x out) in otype (RN_DT_F32, or dtype when 16-bit). */
static int lt_matmul(cuda_ctx *x, void *y, const void *W, const void *in_rows, int n, int out,
                     int in, int dtype, int otype)
{
    return lt_matmul_beta(x, y, NULL, W, in_rows, n, out, in, dtype, otype, 0.0f);
}

/* The rows as cuBLASLt and the tensor-core GEMV read them: as they are for
 * fp32 weights, else rounded to the weights' dtype in x->half[0] (valid
 * until the next call), or already in x->half[i] when their producer wrote
 * them that way (half_out).  fp16 weights: activations beyond 65504 would
 * become inf here; the models we know of are bf16 or fp32, and the parity
 * suite covers both. */
static const void *lt_input(cuda_ctx *x, const float *rows, int n, int in, int t)
{
    if (t == RN_DT_F32)
        return rows;
    for (int i = 0; i < 2; i++)
        if (rows == x->rounded[i] && t == x->half_t) {
            x->rounded[i] = NULL; /* read once: the next producer of rows says again */
            return x->half[i];
        }
    x->rounded[0] = NULL; /* overwritten */
    rk_to_half(x->st, x->half[0], rows, (size_t)n * (size_t)in, t);
    return x->half[0];
}

/* y (n x out) = src W^T + b through cuBLASLt; src from lt_input. */
static int linear_lt(cuda_ctx *x, float *y, const void *src, int n, const void *W,
                     const rn_tensor *Wt, const float *b)
{
    int out = (int)Wt->shape[0], in = (int)Wt->shape[1];
    int rc = lt_matmul(x, y, W, src, n, out, in, (int)Wt->dtype, RN_DT_F32);
    if (rc == RN_OK && b)
        rk_add_bias(x->st, y, b, n, out);
    return rc;
}

/* Whether projections of n rows stream their weights through this file's
 * kernels (rk_gemv_multi up to gemv_max rows, rk_gemv_tc up to tc_max) rather
 * than cuBLASLt. */
static int streaming(const cuda_ctx *x, int n)
{
    return n <= x->gemv_max || n <= x->tc_max;
}

/* Where a kernel writes rows (n of them) that only a projection reads
 * next (half_out; rounds_out says when): when that projection reads rounded inputs (cuBLASLt or the
 * tensor-core GEMV: n > gemv_max), every matrix has one 16-bit dtype and
 * folding is on (x->fuse), straight into x->half (the F-wide half[1] for
 * f1, which the folded GLU writes while half[0] holds its input), rounded
 * as lt_input would round them, and never in fp32 (lt_input finds them
 * through x->rounded); else to rows as usual.  Same bits either way, one
 * pass less. */
static int rounds_out(const cuda_ctx *x, int n)
{
    return x->fuse && n > x->gemv_max && x->half_t >= 0;
}

static rk_half half_out(cuda_ctx *x, const float *rows, int n)
{
    rk_half h = {};
    int i = rows == x->f1 ? 1 : 0;
    for (int b = 0; b < 2; b++)
        if (x->rounded[b] == rows)
            x->rounded[b] = NULL; /* rows are about to change */
    if (rounds_out(x, n)) {
        h.p = x->half[i], h.t = x->half_t;
        x->rounded[i] = rows;
    }
    return h;
}

/* ----------------------------------------------------------- retention */

/* RETNET_CUDA_L2_FORK: the weights W of the projection that follows the
 * recurrent step and the group norm -- latency-bound kernels under which
 * the memory idles at small batches -- asked of L2 by a launch on x->st2
 * that starts once everything before it on x->st is done and that nothing
 * on x->st waits for until the step's end (l2_join), so the projection
 * finds them there instead of in HBM.  A fork of the stream: inside a
 * decode graph's capture it becomes a branch of the graph. */
static int l2_fork_out(cuda_ctx *x, int n, const void *W, const rn_tensor *Wt)
{
    if (!x->l2_fork || n > x->l2_fork || !W)
        return RN_OK;
    if (cudaEventRecord(x->ev_fork, x->st) != cudaSuccess ||
        cudaStreamWaitEvent(x->st2, x->ev_fork, 0) != cudaSuccess)
        return RN_EDEVICE;
    rk_l2_fetch(x->st2, W, tensor_bytes(Wt));
    /* joined at the step's end whatever happens from here: st2 is in the
     * capture now, and a capture cannot end with it left out */
    x->forked = 1;
    return cudaEventRecord(x->ev_join, x->st2) == cudaSuccess ? RN_OK : RN_EDEVICE;
}

/* x->st waits for the requests l2_fork_out made (the stream's in order, so
 * the last one's event covers them all): a capture must join its branches
 * before it ends. */
static int l2_join(cuda_ctx *x)
{
    if (!x->forked)
        return RN_OK;
    x->forked = 0;
    return cudaStreamWaitEvent(x->st, x->ev_join, 0) == cudaSuccess ? RN_OK : RN_EDEVICE;
}

static rk_states layer_states(const cuda_ctx *x, int l)
{
    const rn_config *c = x->c;
    size_t hkv = (size_t)c->n_heads * (size_t)c->head_dim_k * (size_t)c->head_dim_v;
    rk_states s = {x->states, x->plan.state_vals, (size_t)l * x->plan.layer_vals,
                   c->retention_norm == RN_RETNORM_TORCHSCALE ? hkv : 0, x->plan.state_bf16};
    return s;
}

/* Layer l's values of slot in the pool (whatever their type). */
static void *pool_layer(const cuda_ctx *x, int slot, int l)
{
    size_t elem = x->plan.state_bf16 ? 2 : 4;
    return (char *)x->states + (size_t)slot * x->plan.state_bytes +
           (size_t)l * x->plan.layer_vals * elem;
}

/* C = op(A) op(B), fp32, one matrix per head (batch stride per operand). */
static int gemm_heads(cuda_ctx *x, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                      const float *A, int lda, long long sa, const float *B, int ldb, long long sb,
                      float beta, float *C, int ldc, long long sc)
{
    float one = 1.0f;
    cublasStatus_t s = cublasGemmStridedBatchedEx(
        x->blas, ta, tb, m, n, k, &one, A, CUDA_R_32F, lda, sa, B, CUDA_R_32F, ldb, sb, &beta, C,
        CUDA_R_32F, ldc, sc, x->c->n_heads, x->ret_compute, CUBLAS_GEMM_DEFAULT);
    return s == CUBLAS_STATUS_SUCCESS ? RN_OK : RN_EDEVICE;
}

/* C tokens, rows r0.. of the chunk in x->q, k, v, through one layer's
 * retention from slot's fp32 state in S; o gets those rows' read-outs and
 * the state moves past them.  pw: the decay table for C (rk_decay_table).  The column-major views
 * of each product are spelled out in docs/architecture.md, "CUDA backend". */
static int retention_chunk(cuda_ctx *x, rk_states S, int slot, int r0, int C, const float *pw)
{
    const rn_config *c = x->c;
    int H = c->n_heads, dk = c->head_dim_k, dv = c->head_dim_v, HK = H * dk, HV = H * dv;
    float *Sl = (float *)S.base + (size_t)slot * S.slot_stride + S.layer_off;
    const float *q = x->q + (size_t)r0 * HK, *k = x->k + (size_t)r0 * HK;
    const float *v = x->v + (size_t)r0 * HV;
    float *o = x->o + (size_t)r0 * HV;
    long long cc = (long long)C * C, hkv = (long long)dk * dv;
    int rc;
    /* A^T = K Q^T per head, then the decay mask */
    if ((rc = gemm_heads(x, CUBLAS_OP_T, CUBLAS_OP_N, C, C, dk, k, HK, dk, q, HK, dk, 0.0f, x->A, C,
                         cc)))
        return rc;
    rk_decay_mask(x->st, x->A, pw, H, H, C);
    /* O^T = V^T A^T */
    if ((rc = gemm_heads(x, CUBLAS_OP_N, CUBLAS_OP_N, dv, C, C, v, HV, dv, x->A, C, cc, 0.0f, o, HV,
                         dv)))
        return rc;
    /* O^T += S0^T (diag(g^(i+1)) Q)^T */
    rk_scale_pieces(x->st, x->qd, q, pw, H, C, 1, dk, 0);
    if ((rc = gemm_heads(x, CUBLAS_OP_N, CUBLAS_OP_N, dv, C, dk, Sl, dv, hkv, x->qd, dk,
                         (long long)C * dk, 1.0f, o, HV, dv)))
        return rc;
    if (S.s_off)
        rk_ts_chunk(x->st, o, S, slot, pw, x->sums, H, C, dv);
    /* S = g^C S + (diag(g^(C-1-j)) K)^T V, i.e. S^T += V^T Kd */
    rk_scale_pieces(x->st, x->kd, k, pw, H, C, 1, dk, 1);
    rk_decay_state(x->st, S, slot, pw, H, C, (size_t)H * (size_t)hkv);
    return gemm_heads(x, CUBLAS_OP_N, CUBLAS_OP_T, dv, dk, C, v, HV, dv, x->kd, dk,
                      (long long)C * dk, 1.0f, Sl, dv, hkv);
}

/* C_b = op(A_b) op(B_b) (+ C_b with beta 1) for count (piece, head) pairs
 * whose operands' addresses are the device arrays A, B, C (x->pp). */
static int gemm_pieces(cuda_ctx *x, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                       void **A, int lda, void **B, int ldb, float beta, void **C, int ldc,
                       int count)
{
    float one = 1.0f;
    cublasStatus_t s =
        cublasGemmBatchedEx(x->blas, ta, tb, m, n, k, &one, (const void *const *)A, CUDA_R_32F, lda,
                            (const void *const *)B, CUDA_R_32F, ldb, &beta, (void *const *)C,
                            CUDA_R_32F, ldc, count, x->ret_compute, CUBLAS_GEMM_DEFAULT);
    return s == CUBLAS_STATUS_SUCCESS ? RN_OK : RN_EDEVICE;
}

/* gemm_pieces with A and B in bf16 (fp32 sums and output): the fused
 * path's own parts, from its bf16 copies. */
static int gemm_pieces_bf16(cuda_ctx *x, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                            int k, void **A, int lda, void **B, int ldb, void **C, int ldc,
                            int count)
{
    float one = 1.0f, zero = 0.0f;
    cublasStatus_t s =
        cublasGemmBatchedEx(x->blas, ta, tb, m, n, k, &one, (const void *const *)A, CUDA_R_16BF,
                            lda, (const void *const *)B, CUDA_R_16BF, ldb, &zero, (void *const *)C,
                            CUDA_R_32F, ldc, count, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    return s == CUBLAS_STATUS_SUCCESS ? RN_OK : RN_EDEVICE;
}

/* U_b^T = V_b^T (diag(g^(P-1-j)) K_b), each piece's own part of the state,
 * by cuBLAS; then the scan that turns those into the state entering each
 * piece (in x->U) and moves the layer's state Sl past all of them.  With
 * Uh (the fused path, its bf16 copy of v made): the scaled keys rounded to
 * bf16 and the products on the bf16 copies, and the entering states
 * rounded to bf16 into Uh. */
static int own_parts_scan(cuda_ctx *x, float *Sl, int pieces, int P, const float *pw, void *Uh)
{
    const rn_config *c = x->c;
    int H = c->n_heads, dk = c->head_dim_k, dv = c->head_dim_v, rc;
    void **const *pp = x->pp;
    if (!Uh || !x->qk_rounded) /* else the rotary pass wrote them (retention_block) */
        rk_scale_pieces(x->st, x->kd, x->k, pw, H, P, pieces, dk, 1, Uh != NULL);
    if (Uh)
        rc = gemm_pieces_bf16(x, CUBLAS_OP_N, CUBLAS_OP_T, dv, dk, P, pp[PP_VH], H * dv, pp[PP_KDH],
                              dk, pp[PP_U], dv, pieces * H);
    else
        rc = gemm_pieces(x, CUBLAS_OP_N, CUBLAS_OP_T, dv, dk, P, pp[PP_V], H * dv, pp[PP_KD], dk,
                         0.0f, pp[PP_U], dv, pieces * H);
    if (rc)
        return rc;
    rk_scan_pieces(x->st, Sl, x->U, Uh, pw, H, P, pieces, (size_t)H * (size_t)dk * (size_t)dv);
    return RN_OK;
}

/* Where retention_fused puts the bf16 copies of the chunk's first pieces
 * P rows of v, q and k and of the pieces' entering states, each on 256
 * bytes: in the score matrix's place (x->A, H C C floats for the plan's
 * largest chunk C), which the fused path leaves unused.  Returns 0 when
 * they do not fit there (short chunks of wide heads), 1 with dst[4]. */
static int fused_copies(cuda_ctx *x, int pieces, int P, void **dst)
{
    const rn_config *c = x->c;
    size_t H = (size_t)c->n_heads, C = (size_t)x->plan.max_chunk, rows = (size_t)pieces * P;
    /* v first: at the start of x->A, where PP_VH points (alloc_pieces) */
    size_t n[4] = {rows * (size_t)c->value_dim, rows * (size_t)c->key_dim,
                   rows * (size_t)c->key_dim,
                   (size_t)pieces * H * (size_t)c->head_dim_k * (size_t)c->head_dim_v};
    size_t at = 0;
    for (int i = 0; i < 4; i++) {
        dst[i] = (char *)x->A + at;
        at += align256(n[i] * 2);
    }
    return at <= H * C * C * sizeof(float);
}

/* retention_batched with the read-outs in one tensor-core launch
 * (rk_ret_fused): the pieces' own parts of the state and the scan over
 * them from bf16 copies of v and the scaled keys (the scan writing the
 * entering states rounded to bf16), then q and k rounded to bf16 once
 * (fused_copies) and the read-outs -- in place of the two score products,
 * the decay mask, the query scaling and the inter-piece product. */
static int retention_fused(cuda_ctx *x, float *Sl, int pieces, int P, const float *pw,
                           void *const *h)
{
    const rn_config *c = x->c;
    int H = c->n_heads, dk = c->head_dim_k, dv = c->head_dim_v, rc;
    size_t rows = (size_t)pieces * (size_t)P;
    if (!x->v_rounded) /* else v's product wrote it (qkvg_products) */
        rk_to_half(x->st, h[0], x->v, rows * (size_t)c->value_dim, RN_DT_BF16);
    if ((rc = own_parts_scan(x, Sl, pieces, P, pw, h[3])))
        return rc;
    if (!x->qk_rounded) { /* else the rotary pass wrote them (retention_block) */
        rk_to_half(x->st, h[1], x->q, rows * (size_t)c->key_dim, RN_DT_BF16);
        rk_to_half(x->st, h[2], x->k, rows * (size_t)c->key_dim, RN_DT_BF16);
    }
    long blocks = (long)pieces * H * (P / RK_RET_FUSED_ROWS);
    int parts = rn_cuda_ret_parts(blocks, dv, x->n_sms, x->ret_split);
    const rk_group_norm *gn = parts == 1 ? x->gn : NULL; /* a block holds the whole head */
    if (rk_ret_fused(x->st, x->o, h[1], h[2], h[0], h[3], pw, pieces, H, P, dk, dv, parts, gn,
                     x->ret_wide))
        return RN_EDEVICE;
    x->gn_rows = gn ? (int)rows : 0;
    return RN_OK;
}

/* Whether retention_batched reads pieces pieces of P tokens out through
 * retention_fused, and then where its bf16 copies go (fused_copies). */
static int fused_path(cuda_ctx *x, int pieces, int P, void **h)
{
    const rn_config *c = x->c;
    return x->ret_fused && rk_ret_fused_fits(P, c->head_dim_k, c->head_dim_v, x->smem_optin) &&
           fused_copies(x, pieces, P, h);
}

/* The first pieces full pieces of P tokens of the chunk in x->q, k, v
 * through one layer's retention from slot's fp32 state in S (no
 * torchscale s), as one batch of (piece, head) products instead of a
 * piece at a time: the intra-piece products of every piece, each piece's
 * own k^T v, then a scan that turns those into the state entering each
 * piece and moves S past all of them, then every piece's inter-piece term.
 * The same sums as retention_chunk piece after piece (the state update's
 * add is rounded apart from the product here), in 8 launches per layer
 * whatever the number of pieces.  pw: the decay table for P. */
static int retention_batched(cuda_ctx *x, rk_states S, int slot, int pieces, int P, const float *pw)
{
    const rn_config *c = x->c;
    int H = c->n_heads, dk = c->head_dim_k, dv = c->head_dim_v, HK = H * dk, HV = H * dv;
    int count = pieces * H, rc;
    float *Sl = (float *)S.base + (size_t)slot * S.slot_stride + S.layer_off;
    void **const *pp = x->pp;
    void *h[4];
    if (fused_path(x, pieces, P, h))
        return retention_fused(x, Sl, pieces, P, pw, h);
    /* A_b^T = K_b Q_b^T, then the decay mask; O_b^T = V_b^T A_b^T */
    if ((rc = gemm_pieces(x, CUBLAS_OP_T, CUBLAS_OP_N, P, P, dk, pp[PP_K], HK, pp[PP_Q], HK, 0.0f,
                          pp[PP_A], P, count)))
        return rc;
    rk_decay_mask(x->st, x->A, pw, count, H, P);
    if ((rc = gemm_pieces(x, CUBLAS_OP_N, CUBLAS_OP_N, dv, P, P, pp[PP_V], HV, pp[PP_A], P, 0.0f,
                          pp[PP_O], HV, count)))
        return rc;
    if ((rc = own_parts_scan(x, Sl, pieces, P, pw, NULL)))
        return rc;
    /* O_b^T += S_b^T (diag(g^(i+1)) Q_b)^T, S_b the state entering piece b */
    rk_scale_pieces(x->st, x->qd, x->q, pw, H, P, pieces, dk, 0);
    return gemm_pieces(x, CUBLAS_OP_N, CUBLAS_OP_N, dv, P, dk, pp[PP_U], dv, pp[PP_QD], dk, 1.0f,
                       pp[PP_O], HV, count);
}

/* Length of the retention pieces of an n-token chunk: the projections run
 * over the whole chunk (each weight read once per chunk), the retention
 * products in pieces of at most x->ret_chunk tokens, whose intra-piece work
 * grows with the piece's length.  0: one piece. */
static int ret_piece(const cuda_ctx *x, int n)
{
    return x->ret_chunk > 0 && x->ret_chunk < n ? x->ret_chunk : n;
}

/* The full pieces of an n-token chunk that retention_pieces runs through
 * layer l together (retention_batched), of *P tokens each; 0: none. */
static int batched_pieces(const cuda_ctx *x, int l, int n, int *P)
{
    int p = ret_piece(x, n), full = p < n ? n / p : 0;
    *P = p;
    /* a bf16 pool has no torchscale s (plan.h) */
    return full >= 2 && full <= x->plan.pieces && !layer_states(x, l).s_off ? full : 0;
}

/* The n-token chunk through layer l's retention, piece by piece (the decay
 * tables for the piece length and the tail are at x->pw, x->pw_tail); two
 * or more full pieces go together (retention_batched) unless the layer has
 * torchscale's s.  A
 * bf16 pool's layer state is expanded to fp32 for the chunk's products and
 * rounded back once after them. */
static int retention_pieces(cuda_ctx *x, int slot, int l, int n)
{
    rk_states S = layer_states(x, l);
    int P = 0, full = batched_pieces(x, l, n, &P), rc = RN_OK, s = slot;
    void *pooled = NULL;
    if (S.bf16) {
        pooled = pool_layer(x, slot, l);
        rk_state_expand(x->st, x->sscr, pooled, x->plan.layer_vals);
        S = rk_states{x->sscr, 0, 0, 0, 0}; /* bf16 pools have no s (plan.h) */
        s = 0;
    }
    int r0 = 0;
    if (full) {
        rc = retention_batched(x, S, s, full, P, x->pw);
        r0 = full * P; /* the tail, if any, continues from their state */
    }
    for (; r0 < n && rc == RN_OK; r0 += P) {
        int m = n - r0 < P ? n - r0 : P;
        rc = retention_chunk(x, S, s, r0, m, m == P ? x->pw : x->pw_tail);
    }
    if (pooled && rc == RN_OK)
        rk_state_compress(x->st, pooled, x->sscr, x->plan.layer_vals);
    return rc;
}

/* -------------------------------------------------------------- forward */

typedef enum { FWD_DECODE, FWD_CHUNK } fwd_mode;

/* Products i and i + 1 of a list (ys, Ws, Wts, bs) of the same n input
 * rows src (lt_input) as one strided-batched cuBLASLt product
 * (RETNET_CUDA_LT_PAIRS), into fp32: where the two share shape and dtype,
 * have no bias, and the second's weights and output lie a fixed distance
 * after the first's (upload_all and alloc_buffers place q and k, v and g,
 * up and gate so), one launch where there were two.  RN_EUNSUPPORTED where
 * that does not hold, or where cuBLASLt offers no algorithm (then the
 * switch is dropped, with a line): the caller takes them one by one. */
static int lt_pair(cuda_ctx *x, const void *src, int n, float *const *ys, const void *const *Ws,
                   const rn_tensor *const *Wts, const float *const *bs, int i)
{
    const rn_tensor *a = Wts[i], *b = Wts[i + 1];
    int t = (int)a->dtype, out = (int)a->shape[0], in = (int)a->shape[1];
    ptrdiff_t esz = t == RN_DT_F32 ? 4 : 2;
    ptrdiff_t dw = (const char *)Ws[i + 1] - (const char *)Ws[i], dy = ys[i + 1] - ys[i];
    if (!x->lt_pairs || bs[i] || bs[i + 1] || b->dtype != a->dtype || b->shape[0] != a->shape[0] ||
        b->shape[1] != a->shape[1] || dw <= 0 || dw % esz || dy < (ptrdiff_t)n * out)
        return RN_EUNSUPPORTED;
    if (cudaPeekAtLastError() != cudaSuccess)
        return RN_EDEVICE; /* an earlier launch's error: the forward reports it */
    lt_entry *e = lt_lookup_batch(x, out, in, n, t, RN_DT_F32, 2, dw / esz, dy);
    int ok = e && lt_run(x, e, ys[i], NULL, Ws[i], src, 0.0f) == RN_OK;
    if (!ok && x->lt_paired)
        return RN_EDEVICE; /* paired products ran before: not the pairing's fault */
    if (!ok) {             /* refused from the first: the pairs are not for this cuBLASLt */
        fprintf(stderr,
                "cuda backend: cuBLASLt %s the paired product %d x %d x %d; "
                "RETNET_CUDA_LT_PAIRS off\n",
                e ? "refuses" : "offers no algorithm for", n, out, in);
        x->lt_pairs = 0;
        cudaGetLastError(); /* this attempt's own, if any: nothing of it ran */
        return RN_EUNSUPPORTED;
    }
    x->lt_paired = 1;
    lt_pair_products++;
    return RN_OK;
}

/* The count products of a list from src: in pairs where lt_pair takes
 * them, else one by one (linear_lt).  skip: a product left out (-1: none). */
static int lt_products(cuda_ctx *x, const void *src, int n, int count, float *const *ys,
                       const void *const *Ws, const rn_tensor *const *Wts, const float *const *bs,
                       int skip)
{
    for (int i = 0; i < count;) {
        int rc = i + 1 < count && i != skip && i + 1 != skip
                     ? lt_pair(x, src, n, ys, Ws, Wts, bs, i)
                     : RN_EUNSUPPORTED;
        if (rc == RN_OK) {
            i += 2;
            continue;
        }
        if (rc != RN_EUNSUPPORTED)
            return rc;
        if (i != skip && (rc = linear_lt(x, ys[i], src, n, Ws[i], Wts[i], bs[i])))
            return rc;
        i++;
    }
    return RN_OK;
}

/* Whether this step's projections fold the work that follows them into
 * their stores (rk_gemv_job kinds): only where they stream (streaming) and
 * unless RETNET_CUDA_FUSE=0.  The folded step computes the same floats as
 * the separate kernels, so this changes speed, never bits. */
static int folding(const cuda_ctx *x, int n)
{
    return x->fuse && streaming(x, n);
}

/* The residual add folds into the o and down projections (pre-norm: the
 * stream is only normalised when read). */
static int fold_residual(const cuda_ctx *x, int n)
{
    return folding(x, n) && x->c->norm_position == RN_NORMPOS_PRE;
}

/* Whether a sublayer's output projection of n rows without a bias, on
 * cuBLASLt, adds itself to the residual stream in the product's epilogue
 * (RETNET_CUDA_RESID_GEMM: x = y + alpha x with x read and written in
 * place), so the pre-norm after it reads the stream once instead of the
 * stream and y, and writes no updated stream (sublayer_out). */
static int resid_in_gemm(const cuda_ctx *x, int n, const float *b)
{
    return x->resid_gemm && !b && !streaming(x, n) && x->c->norm_position == RN_NORMPOS_PRE;
}

/* A block's projections of one input, in order: their outputs, device
 * weights, tensors (dtype and shape) and biases, as linear_set and
 * gemv_set take them. */
typedef struct {
    float *ys[RK_GEMV_JOBS];
    const void *Ws[RK_GEMV_JOBS];
    const rn_tensor *Wts[RK_GEMV_JOBS];
    const float *bs[RK_GEMV_JOBS];
} proj_list;

/* Layer l's q, k, v and g projections, into x->q, k, v and g. */
static proj_list qkvg_projs(const cuda_ctx *x, int l)
{
    const rn_layer_weights *lw = &x->w->layers[l];
    const dev_layer *d = &x->layers[l];
    proj_list p = {{x->q, x->k, x->v, x->g},
                   {d->q, d->k, d->v, d->g},
                   {&lw->q_w, &lw->k_w, &lw->v_w, &lw->g_w},
                   {d->q_b, d->k_b, d->v_b, d->g_b}};
    return p;
}

/* Layer l's FFN up projection, into x->f1, then GLU's gate, into x->f2
 * (listed for any FFN; only a GLU has it). */
static proj_list ffn_projs(const cuda_ctx *x, int l)
{
    const rn_layer_weights *lw = &x->w->layers[l];
    const dev_layer *d = &x->layers[l];
    proj_list p = {
        {x->f1, x->f2}, {d->up, d->gate}, {&lw->up_w, &lw->gate_w}, {d->up_b, d->gate_b}};
    return p;
}

/* Whether count matrices share dtype and input width (one GEMV launch). */
static int same_shape(const rn_tensor *const *Wts, int count)
{
    int same = 1;
    for (int i = 1; i < count; i++)
        same &= Wts[i]->dtype == Wts[0]->dtype && Wts[i]->shape[1] == Wts[0]->shape[1];
    return same;
}

/* Whether layer l's q, k, v and g projections of n rows are one folded GEMV
 * launch, q and k scaled and rotated in its store (retention_block). */
static int qkvg_folds(const cuda_ctx *x, int n, int l)
{
    const rn_config *c = x->c;
    return folding(x, n) && same_shape(qkvg_projs(x, l).Wts, 4) &&
           (c->position != RN_POS_ROTARY || c->head_dim_k % 2 == 0);
}

/* Whether layer l's GLU up and gate projections of n rows are one folded
 * GEMV launch, up * act(gate) in its store (ffn_block). */
static int glu_folds(const cuda_ctx *x, int n, int l)
{
    return x->c->ffn_kind == RN_FFN_GLU && folding(x, n) && same_shape(ffn_projs(x, l).Wts, 2);
}

/* The projection that reads a pre-norm's rows (prenorm_fold). */
typedef enum { NEXT_QKVG, NEXT_FFN, NEXT_HEAD } norm_reader;

/* Whether the pre-norm of n rows, read next by `next` of layer l (the LM
 * head past the last layer), is left to that projection's GEMV
 * (RETNET_CUDA_GEMV_PRENORM): where the projection is one streaming GEMV
 * launch on rk_gemv_multi's split path -- the conditions retention_block's
 * and ffn_block's folded branches and linear's streaming one take -- and
 * rk_gemv_norm_fits. */
static int prenorm_fold(const cuda_ctx *x, int n, norm_reader next, int l)
{
    const rn_config *c = x->c;
    if (!x->prenorm || !folding(x, n) || n > x->gemv_max || c->norm_position != RN_NORMPOS_PRE)
        return 0;
    const rn_tensor *t0 = &x->w->lm_head_w;
    if (next != NEXT_HEAD && l < c->n_layers) {
        if (next == NEXT_QKVG && !qkvg_folds(x, n, l))
            return 0;
        /* a GLU that does not fold reads its input twice; a plain FFN's
         * one projection streams (linear_set) */
        if (next == NEXT_FFN && c->ffn_kind == RN_FFN_GLU && !glu_folds(x, n, l))
            return 0;
        t0 = next == NEXT_QKVG ? &x->w->layers[l].q_w : &x->w->layers[l].up_w;
    }
    rk_gemv_norm nm = {};
    return rk_gemv_norm_fits((int)t0->dtype, n, c->hidden_size, x->gemv_split, &nm, NULL);
}

/* The pre-norm of the n rows at rows (w, b) into x->hn, or, with
 * prenorm_fold, left pending for the GEMV that reads them (rows returned
 * raw). */
static const float *pre_norm(cuda_ctx *x, int n, const float *rows, const float *w, const float *b,
                             norm_reader next, int l)
{
    const rn_config *c = x->c;
    if (prenorm_fold(x, n, next, l)) {
        x->pend = 1, x->pend_rows = x->pend_src = rows;
        x->pend_nm = rk_gemv_norm{};
        x->pend_nm.w = w, x->pend_nm.b = b, x->pend_nm.eps = c->norm_eps;
        x->pend_nm.layer_kind = c->norm_kind == RN_NORM_LAYER;
        return rows;
    }
    rk_norm(x->st, x->hn, rows, n, c->hidden_size, c->norm_kind == RN_NORM_LAYER, w, b, c->norm_eps,
            NULL, 0, half_out(x, x->hn, n));
    return x->hn;
}

/* rows, or, where a norm of them is pending (pre_norm, group_norm_fold)
 * and their reader is not the GEMV that forms it, that norm launched now:
 * a pre-norm into x->hn, a group norm into rows (x->o) as retention_block
 * would have launched it. */
static const float *settle_rows(cuda_ctx *x, const float *rows, int n)
{
    if (!x->pend || rows != x->pend_rows)
        return rows;
    x->pend = 0;
    const rk_gemv_norm *nm = &x->pend_nm;
    if (nm->group > 0) {
        int groups = x->c->value_dim / nm->group;
        rk_norm_parts(x->st, (float *)rows, x->pend_src, nm->parts, nm->part_stride, n * groups,
                      nm->group, nm->layer_kind, nm->w, nm->b, nm->eps, nm->gate, nm->act,
                      rk_half());
        return rows;
    }
    rk_norm(x->st, x->hn, rows, n, x->c->hidden_size, nm->layer_kind, nm->w, nm->b, nm->eps, NULL,
            0, half_out(x, x->hn, n));
    return x->hn;
}

/* A block's input: the residual stream, pre-normalised (w, b) for `next`
 * of layer l with pre-norm. */
static const float *block_input(cuda_ctx *x, int n, const float *w, const float *b,
                                norm_reader next, int l)
{
    if (x->c->norm_position != RN_NORMPOS_PRE)
        return x->x;
    return pre_norm(x, n, x->x, w, b, next, l);
}

static void residual(cuda_ctx *x, int n, const float *w, const float *b)
{
    const rn_config *c = x->c;
    int D = c->hidden_size, lk = c->norm_kind == RN_NORM_LAYER;
    if (c->norm_position == RN_NORMPOS_POST)
        rk_norm(x->st, x->y, x->y, n, D, lk, w, b, c->norm_eps, NULL, 0);
    rk_residual(x->st, x->x, x->y, (size_t)n * (size_t)D, c->residual_alpha);
    if (c->norm_position == RN_NORMPOS_DEEPNORM)
        rk_norm(x->st, x->x, x->x, n, D, lk, w, b, c->norm_eps, NULL, 0);
}

/* The sublayer output x->y joins the residual stream (sublayer norm w, b
 * for post- and deep-norm); returns the next sublayer's input.  With
 * pre-norm the add and the next norm (w_next, b_next) are one kernel.  last:
 * no next sublayer (output_logits applies the final norm). */
static const float *residual_into(cuda_ctx *x, int n, const float *w, const float *b,
                                  const float *w_next, const float *b_next, int last,
                                  norm_reader next, int l_next)
{
    const rn_config *c = x->c;
    int added = x->resid_added; /* by the product's epilogue (resid_in_gemm) */
    x->resid_added = 0;
    if (fold_residual(x, n) || added) /* the projection already added y to the stream */
        return last ? x->x : block_input(x, n, w_next, b_next, next, l_next);
    if (c->norm_position == RN_NORMPOS_PRE && !last) {
        rk_add_norm(x->st, x->hn, x->x, x->y, c->residual_alpha, n, c->hidden_size,
                    c->norm_kind == RN_NORM_LAYER, w_next, b_next, c->norm_eps,
                    half_out(x, x->hn, n));
        return x->hn;
    }
    residual(x, n, w, b);
    return last ? x->x : block_input(x, n, w_next, b_next, next, l_next);
}

/* One job of a GEMV set. */
static rk_gemv_job gemv_job(const void *W, const rn_tensor *Wt, const float *b, float *y)
{
    rk_gemv_job j = {};
    j.W = W, j.bias = b, j.y = y, j.out = (int)Wt->shape[0];
    return j;
}

/* count plain projections of the same input rows, as one GEMV set. */
static rk_gemv_set gemv_set(int count, float *const *ys, const void *const *Ws,
                            const rn_tensor *const *Wts, const float *const *bs)
{
    rk_gemv_set set = {};
    for (int i = 0; i < count; i++)
        set.job[i] = gemv_job(Ws[i], Wts[i], bs[i], ys[i]);
    set.count = count;
    return set;
}

/* Streams set over n input rows (streaming(x, n)); Wt (the set's first
 * matrix) gives the dtype and the input width they all share. */
static void gemv_run(cuda_ctx *x, const rk_gemv_set *set, const rn_tensor *Wt, const float *rows,
                     int n)
{
    int in = (int)Wt->shape[1], t = (int)Wt->dtype;
    if (x->pend && rows == x->pend_rows && n <= x->gemv_max &&
        rk_gemv_norm_fits(t, n, in, x->gemv_split, &x->pend_nm, x->pend_src)) {
        x->pend = 0;
        rk_gemv_multi_norm(x->st, set, t, x->pend_src, n, in, x->gemv_split, &x->pend_nm, x->n_sms);
        return;
    }
    rows = settle_rows(x, rows, n);
    if (n <= x->gemv_max)
        rk_gemv_multi(x->st, set, t, rows, n, in, x->gemv_split);
    else
        rk_gemv_tc(x->st, set, t, lt_input(x, rows, n, in, t), n, in, &x->tc);
}

/* y (n x out) = rows (n x in) W^T + b; W is the device copy of Wt. */
static int linear(cuda_ctx *x, float *y, const float *rows, int n, const void *W,
                  const rn_tensor *Wt, const float *b)
{
    int in = (int)Wt->shape[1], t = (int)Wt->dtype;
    if (streaming(x, n)) {
        rk_gemv_set set = gemv_set(1, &y, &W, &Wt, &b);
        gemv_run(x, &set, Wt, rows, n);
        return RN_OK;
    }
    rows = settle_rows(x, rows, n);
    return linear_lt(x, y, lt_input(x, rows, n, in, t), n, W, Wt, b);
}

/* Several projections of the same input rows (the matrices of a block
 * share dtype and input width): one weight-streaming launch for decode
 * batches, else one cuBLASLt product each from one rounded copy of the rows. */
static int linear_set(cuda_ctx *x, const float *rows, int n, int count, float *const *ys,
                      const void *const *Ws, const rn_tensor *const *Wts, const float *const *bs)
{
    int same = same_shape(Wts, count), rc;
    if (streaming(x, n) && same && count <= RK_GEMV_JOBS) {
        rk_gemv_set set = gemv_set(count, ys, Ws, Wts, bs);
        gemv_run(x, &set, Wts[0], rows, n);
        return RN_OK;
    }
    rows = settle_rows(x, rows, n); /* several readers: the norm itself */
    if (!same) { /* never with a half_out tag: common_half needs one dtype, and the sets
                  * share their input width, so the rows are not read twice */
        for (int i = 0; i < count; i++)
            if ((rc = linear(x, ys[i], rows, n, Ws[i], Wts[i], bs[i])))
                return rc;
        return RN_OK;
    }
    /* the shared input is rounded once for all of them */
    const void *src = lt_input(x, rows, n, (int)Wts[0]->shape[1], (int)Wts[0]->dtype);
    return lt_products(x, src, n, count, ys, Ws, Wts, bs, -1);
}

/* A sublayer's output projection: into x->y, or, with fold_residual,
 * added to the residual stream x->x in place. */
static int sublayer_out(cuda_ctx *x, const float *rows, int n, const void *W, const rn_tensor *Wt,
                        const float *b)
{
    if (resid_in_gemm(x, n, b)) {
        int out = (int)Wt->shape[0], in = (int)Wt->shape[1], t = (int)Wt->dtype;
        rows = settle_rows(x, rows, n);
        x->resid_added = 1; /* x->y (n x hidden) takes LT_TUNE's trial products */
        return lt_matmul_beta(x, x->x, x->y, W, lt_input(x, rows, n, in, t), n, out, in, t,
                              RN_DT_F32, x->c->residual_alpha);
    }
    if (!fold_residual(x, n))
        return linear(x, x->y, rows, n, W, Wt, b);
    float *const ys[] = {x->x};
    rk_gemv_set set = gemv_set(1, ys, &W, &Wt, &b);
    set.job[0].resid = 1;
    set.alpha = x->c->residual_alpha;
    gemv_run(x, &set, Wt, rows, n);
    return RN_OK;
}

/* Whether v's product of an n-row chunk can write its first rows rows
 * rounded to bf16 for the fused read-out (RETNET_CUDA_V_HALF): the four
 * products of p on cuBLASLt from one rounded input (one dtype and width,
 * bf16), v without a bias (it would be added to the fp32 sums), and
 * cuBLASLt offering a bf16 output for that shape. */
static int v_half_fits(cuda_ctx *x, const proj_list *p, int n, int rows)
{
    const rn_tensor *v = p->Wts[2];
    if (streaming(x, n) || !same_shape(p->Wts, 4) || v->dtype != RN_DT_BF16 || p->bs[2])
        return 0;
    if (lt_lookup(x, (int)v->shape[0], (int)v->shape[1], rows, RN_DT_BF16, RN_DT_BF16))
        return 1;
    /* once: each refused lookup would evict a cached shape */
    fprintf(stderr,
            "cuda backend: cuBLASLt offers no bf16 output for v (%d x %d x %d); "
            "RETNET_CUDA_V_HALF off\n",
            rows, (int)v->shape[0], (int)v->shape[1]);
    x->v_half = 0;
    return 0;
}

/* p's four products of the n rows at in (linear_set), with v's first
 * v_rows rows (v_half_fits; 0: none) written by cuBLASLt rounded to bf16
 * into vh, the fused read-out's copy, instead of in fp32 into x->v, and
 * its other rows in fp32 as usual: no fp32 v of those rows is read after
 * (the read-out and the pieces' own state parts take the copy, the tail
 * its own rows), and the copy comes from the same fp32 sums, rounded
 * once, though cuBLASLt may pick another algorithm, so another order of
 * the sums, for a bf16 output. */
static int qkvg_products(cuda_ctx *x, const float *in, int n, const proj_list *p, int v_rows,
                         void *vh)
{
    if (!v_rows)
        return linear_set(x, in, n, 4, p->ys, p->Ws, p->Wts, p->bs);
    int out = (int)p->Wts[2]->shape[0], w = (int)p->Wts[2]->shape[1], rc = RN_OK;
    const float *rows = settle_rows(x, in, n);
    const char *src = (const char *)lt_input(x, rows, n, w, RN_DT_BF16); /* read by all four */
    rc = lt_products(x, src, n, 4, p->ys, p->Ws, p->Wts, p->bs, 2);
    if (rc == RN_OK)
        rc = lt_matmul(x, vh, p->Ws[2], src, v_rows, out, w, RN_DT_BF16, RN_DT_BF16);
    if (rc == RN_OK && n > v_rows)
        rc = lt_matmul(x, x->v + (size_t)v_rows * (size_t)out, p->Ws[2],
                       src + (size_t)v_rows * (size_t)w * 2, n - v_rows, out, w, RN_DT_BF16,
                       RN_DT_F32);
    if (rc == RN_OK)
        v_half_products++;
    return rc;
}

/* Whether the group norm gn of a decode step's n rows, from the step's
 * `parts` partial read-outs at ro (part_stride floats apart), is left to
 * the output projection's GEMV (RETNET_CUDA_GEMV_GROUPNORM): where that
 * projection streams x->o through gemv_run (n <= gemv_max; sublayer_out
 * takes no other path there), the norm writes fp32 (gn->h NULL: the GEMV
 * reads fp32 rows) and rk_gemv_norm_fits takes it.  Then it is pending
 * (settle_rows launches it if another reader comes first), and the GEMV
 * forms the same values itself. */
static int group_norm_fold(cuda_ctx *x, int n, int l, const float *ro, int parts,
                           size_t part_stride, const rk_group_norm *gn)
{
    const rn_config *c = x->c;
    const rn_tensor *Wt = &x->w->layers[l].o_w;
    if (!x->group_norm || !streaming(x, n) || n > x->gemv_max || gn->h)
        return 0;
    rk_gemv_norm nm = {};
    nm.w = gn->w, nm.eps = gn->eps, nm.layer_kind = gn->layer_kind;
    nm.group = c->head_dim_v, nm.gate = gn->gate, nm.act = gn->act;
    nm.parts = parts, nm.part_stride = part_stride;
    if (!rk_gemv_norm_fits((int)Wt->dtype, n, c->value_dim, x->gemv_split, &nm, ro))
        return 0;
    x->pend = 1, x->pend_rows = x->o, x->pend_src = ro, x->pend_nm = nm;
    return 1;
}

static int retention_block(cuda_ctx *x, fwd_mode mode, int slot, const float *in, int n, int l)
{
    const rn_config *c = x->c;
    const rn_layer_weights *lw = &x->w->layers[l];
    const dev_layer *d = &x->layers[l];
    int rc;
    proj_list p = qkvg_projs(x, l);
    int rotary = c->position == RN_POS_ROTARY, scale_k = c->qk_scale == RN_QKSCALE_K;
    float scale = (float)(1.0 / sqrt((double)c->head_dim_k));
    if (qkvg_folds(x, n, l)) {
        /* the scaling and rotation of q and k happen in the projection's store */
        rk_gemv_set set = gemv_set(4, p.ys, p.Ws, p.Wts, p.bs);
        for (int i = 0; i < 2; i++)
            set.job[i].kind = rotary ? RK_JOB_ROPE : RK_JOB_PLAIN;
        set.job[scale_k ? 1 : 0].scale = scale;
        set.pos = x->in.pos, set.freq = x->freq, set.dk = c->head_dim_k;
        set.interleaved = c->rope_layout == RN_ROPE_INTERLEAVED;
        gemv_run(x, &set, &lw->q_w, in, n);
    } else {
        /* RETNET_CUDA_QK_HALF, RETNET_CUDA_V_HALF: the chunk's fused
         * read-out takes q, k and v rounded to bf16, written by the rotary
         * pass and by v's product rather than by three passes more */
        void *h[4] = {};
        int P = 0,
            full = mode == FWD_CHUNK && (x->qk_half || x->v_half) ? batched_pieces(x, l, n, &P) : 0;
        int rows_h = full && fused_path(x, full, P, h) ? full * P : 0;
        int v_rows = x->v_half && rows_h && v_half_fits(x, &p, n, rows_h) ? rows_h : 0;
        if ((rc = qkvg_products(x, in, n, &p, v_rows, h[0])))
            return rc;
        x->v_rounded = v_rows > 0;
        rk_qk_copies cp = {h[1], h[2], x->kd, x->pw, P, x->qk_half ? rows_h : 0};
        x->qk_rounded =
            rk_qk_prepare(x->st, x->q, x->k, n, c->n_heads, c->head_dim_k, x->in.pos, x->freq,
                          rotary, c->rope_layout == RN_ROPE_INTERLEAVED, scale_k, scale, &cp);
    }
    const float *ro = x->o; /* the read-out the group norm starts from */
    int parts = 1;
    size_t part_stride = (size_t)x->plan.max_batch * (size_t)c->value_dim;
    rk_half oh = half_out(x, x->o, n); /* where the norm writes, for the output projection */
    rk_group_norm gn = {x->g,
                        c->group_norm_affine ? d->gn_w : NULL,
                        oh.p,
                        c->group_norm_eps,
                        c->group_norm_kind == RN_NORM_LAYER,
                        (int)c->gate_act};
    x->gn_rows = 0;
    int folded = 0; /* the group norm left to the output projection */
    if (mode == FWD_DECODE) {
        rn_cuda_step_shape sh = rn_cuda_step_plan(c, n, x->n_sms);
        if ((rc = l2_fork_out(x, n, d->o, &lw->o_w)))
            return rc;
        parts = sh.row_split;
        ro = parts > 1 ? x->part : x->o;
        rk_ret_step(x->st, (float *)ro, part_stride, layer_states(x, l), x->in.slots, x->q, x->k,
                    x->v, x->gamma, n, c->n_heads, c->head_dim_k, c->head_dim_v, &sh,
                    n <= x->step_early);
        folded = group_norm_fold(x, n, l, ro, parts, part_stride, &gn);
    } else {
        /* RETNET_CUDA_RET_NORM: the fused read-out normalises and gates the
         * rows of its whole pieces itself, rounded into the output
         * projection's bf16 input, and the norm below takes the tail */
        x->gn = x->ret_norm && oh.p && oh.t == RN_DT_BF16 ? &gn : NULL;
        rc = retention_pieces(x, slot, l, n);
        x->gn = NULL;
        x->qk_rounded = x->v_rounded = 0; /* the copies were this layer's */
        if (rc)
            return rc;
    }
    if (!folded && x->gn_rows < n) {
        size_t at = (size_t)x->gn_rows * (size_t)c->value_dim;   /* 0 but after the fused norm */
        rk_half h = {oh.p ? (char *)oh.p + at * 2 : NULL, oh.t}; /* bf16 or fp16 */
        rk_norm_parts(x->st, x->o + at, ro + at, parts, part_stride, (n - x->gn_rows) * c->n_heads,
                      c->head_dim_v, gn.layer_kind, gn.w, NULL, gn.eps, x->g + at, gn.act, h);
    }
    /* the fused norm's rows exist only rounded: the projection must find
     * them there (lt_input), never read x->o's stale fp32 rows */
    if (x->gn_rows && x->rounded[0] != x->o) {
        fprintf(stderr, "cuda backend: the normalised read-out is not the next input\n");
        return RN_EDEVICE;
    }
    return sublayer_out(x, x->o, n, d->o, &lw->o_w, d->o_b);
}

/* GLU's up and gate projections on the cuBLASLt path written by cuBLASLt
 * already rounded to the weights' dtype, bf16 (into the f1 and f2
 * buffers' memory), and up * act(gate) formed from those into the down
 * projection's rounded input: half the bytes written and read between the
 * GEMMs and the GLU, and up and gate rounded once more than before (as a
 * bf16 framework's own GEMMs round them).  Only with x->half_act, off the
 * folded path, where the product goes to a half buffer (half_out) and
 * there are no biases.
 * RN_EUNSUPPORTED when it does not apply: the caller takes the fp32 path. */
static int glu_half(cuda_ctx *x, const float *in, int n, int l)
{
    const rn_config *c = x->c;
    const rn_layer_weights *lw = &x->w->layers[l];
    const dev_layer *d = &x->layers[l];
    int D = c->hidden_size, F = c->intermediate_size, t = (int)lw->up_w.dtype, rc;
    /* bf16 only: fp16 would turn |up| or |gate| past 65504 into inf, and
     * swish(-inf) into NaN where the fp32 path gives 0 */
    if (!x->half_act || d->up_b || d->gate_b || t != RN_DT_BF16 || t != x->half_t ||
        lw->gate_w.dtype != lw->up_w.dtype || !rounds_out(x, n) ||
        !lt_lookup(x, F, D, n, t, t)) /* cuBLASLt offers a 16-bit output here */
        return RN_EUNSUPPORTED;
    const void *src = lt_input(x, in, n, D, t);
    if ((rc = lt_matmul(x, x->f1, d->up, src, n, F, D, t, t)) ||
        (rc = lt_matmul(x, x->f2, d->gate, src, n, F, D, t, t)))
        return rc;
    rk_glu_halves(x->st, half_out(x, x->f1, n), x->f1, x->f2, (size_t)n * (size_t)F,
                  (int)c->hidden_act); /* rounds_out: half_out gives a half buffer */
    return RN_OK;
}

static int ffn_block(cuda_ctx *x, const float *in, int n, int l)
{
    const rn_config *c = x->c;
    const rn_layer_weights *lw = &x->w->layers[l];
    const dev_layer *d = &x->layers[l];
    size_t nf = (size_t)n * (size_t)c->intermediate_size;
    int rc, glu = c->ffn_kind == RN_FFN_GLU;
    proj_list p = ffn_projs(x, l);
    if (glu_folds(x, n, l)) {
        /* up * act(gate) in the store: a warp streams row j of both */
        rk_gemv_set set = gemv_set(1, p.ys, p.Ws, p.Wts, p.bs); /* up, into x->f1 */
        set.job[0].kind = RK_JOB_GLU, set.job[0].W2 = d->gate, set.job[0].bias2 = d->gate_b;
        set.job[0].h = half_out(x, x->f1, n); /* read next by the down projection */
        set.act = (int)c->hidden_act;
        gemv_run(x, &set, &lw->up_w, in, n);
    } else if (glu && (rc = glu_half(x, in, n, l)) != RN_EUNSUPPORTED) {
        if (rc)
            return rc;
    } else {
        if ((rc = linear_set(x, in, n, glu ? 2 : 1, p.ys, p.Ws, p.Wts, p.bs)))
            return rc;
        if (glu)
            rk_glu(x->st, x->f1, x->f2, nf, (int)c->hidden_act, half_out(x, x->f1, n));
        else
            rk_act(x->st, x->f1, nf, (int)c->hidden_act, half_out(x, x->f1, n));
    }
    return sublayer_out(x, x->f1, n, d->down, &lw->down_w, d->down_b);
}

/* Logits of rows [first, n) into the device logits buffer. */
static int output_logits(cuda_ctx *x, int first, int n)
{
    const rn_config *c = x->c;
    const float *h = x->x + (size_t)first * (size_t)c->hidden_size;
    if (c->final_norm)
        h = pre_norm(x, n - first, h, x->final_norm_w, x->final_norm_b, NEXT_HEAD, c->n_layers);
    return linear(x, x->logits, h, n - first, x->lm_head, &x->w->lm_head_w, x->lm_head_b);
}

static int sync_status(cuda_ctx *x)
{
    if (cudaStreamSynchronize(x->st) != cudaSuccess || cudaGetLastError() != cudaSuccess) {
        x->broken = 1;
        return RN_EDEVICE;
    }
    return RN_OK;
}

/* Runs n rows (a decode batch over x->in.slots, or one chunk of slot) through
 * every layer; positions and tokens are already on the device. */
static int forward(cuda_ctx *x, fwd_mode mode, int slot, int n)
{
    const rn_config *c = x->c;
    int rc = RN_OK;
    rk_set_norm_vec(x->norm_vec);    /* this engine's, whatever another set on this thread */
    x->pend = 0, x->resid_added = 0; /* nothing a failed pass left */
    if (mode == FWD_CHUNK) {
        int P = ret_piece(x, n);
        x->pw_tail = x->pw + (size_t)c->n_heads * (size_t)(P + 1);
        rk_decay_table(x->st, x->pw, x->log_gamma, c->n_heads, P);
        if (n % P)
            rk_decay_table(x->st, x->pw_tail, x->log_gamma, c->n_heads, n % P);
    }
    rk_embed(x->st, x->x, x->embed, (int)x->w->embed.dtype, x->in.tok, n, c->hidden_size,
             c->embed_scale);
    if (c->embed_norm)
        rk_norm(x->st, x->x, x->x, n, c->hidden_size, c->norm_kind == RN_NORM_LAYER,
                x->embed_norm_w, NULL, c->norm_eps, NULL, 0);
    const float *in = block_input(x, n, x->layers[0].norm1_w, x->layers[0].norm1_b, NEXT_QKVG, 0);
    for (int l = 0; l < c->n_layers; l++) {
        const dev_layer *d = &x->layers[l], *nx = l + 1 < c->n_layers ? d + 1 : NULL;
        if ((rc = retention_block(x, mode, slot, in, n, l)))
            break;
        in = residual_into(x, n, d->norm1_w, d->norm1_b, d->norm2_w, d->norm2_b, 0, NEXT_FFN, l);
        if ((rc = ffn_block(x, in, n, l)))
            break;
        in = residual_into(x, n, d->norm2_w, d->norm2_b, nx ? nx->norm1_w : NULL,
                           nx ? nx->norm1_b : NULL, !nx, NEXT_QKVG, l + 1);
    }
    /* the last layer's, for the LM head, is taken by the final norm */
    return rc;
}

/* A chunk's n token ids and positions (x->host_rowpos) into its arrays,
 * which the chunk's pass then reads. */
static int put_chunk_rows(cuda_ctx *x, const int32_t *tok, int n)
{
    x->in = pass_in{x->tok, x->rowpos, NULL, NULL};
    if (cudaMemcpyAsync(x->tok, tok, sizeof(int32_t) * (size_t)n, cudaMemcpyHostToDevice, x->st) ||
        cudaMemcpyAsync(x->rowpos, x->host_rowpos, sizeof(int64_t) * (size_t)n,
                        cudaMemcpyHostToDevice, x->st))
        return RN_EDEVICE;
    return RN_OK;
}

static int get_logits(cuda_ctx *x, float *dst, int rows)
{
    size_t bytes = sizeof(float) * (size_t)rows * (size_t)x->c->vocab_size;
    if (cudaMemcpyAsync(dst, x->logits, bytes, cudaMemcpyDeviceToHost, x->st) != cudaSuccess)
        return RN_EDEVICE;
    return RN_OK;
}

/* ------------------------------------------------------------- lifecycle */

static int cuda_probe(rn_error *err)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0)
        return rn_error_set(err, RN_ENODEV, "no CUDA device (%s)",
                            e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
    return RN_OK;
}

static void cuda_deinit(void *ctx)
{
    cuda_ctx *x = (cuda_ctx *)ctx;
    if (!x)
        return;
    for (int i = 0; i < x->n_cache; i++)
        lt_entry_free(&x->cache[i]);
    for (int w = 0; w < STEP_TAILS; w++) {
        for (int n = 0; x->graphs[w] && n <= x->plan.max_batch; n++)
            if (x->graphs[w][n])
                cudaGraphExecDestroy(x->graphs[w][n]);
        free(x->graphs[w]);
    }
    /* tc.stream_part starts the stream-K GEMV's one allocation */
    void *bufs[] = {x->wdev, x->states, x->sscr,          x->x, x->A, x->part, x->top, x->log_gamma,
                    x->ws,   x->U,      x->tc.stream_part};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        cudaFree(bufs[i]);
    cudaFreeHost(x->step_host); /* step_back is in the same allocation */
    if (x->lt)
        cublasLtDestroy(x->lt);
    if (x->blas)
        cublasDestroy(x->blas);
    if (x->st)
        cudaStreamDestroy(x->st);
    if (x->st2)
        cudaStreamDestroy(x->st2);
    if (x->ev_fork)
        cudaEventDestroy(x->ev_fork);
    if (x->ev_join)
        cudaEventDestroy(x->ev_join);
    free(x->layers);
    free(x->pos);
    free(x->host_rowpos);
    free(x);
}

/* The entering states and pointer arrays of retention_batched
 * (plan.pieces_bytes): the address of every (piece, head) operand in the
 * chunk buffers, which stay where they are, so the arrays are made once. */
static int alloc_pieces(cuda_ctx *x, rn_error *err)
{
    const rn_config *c = x->c;
    size_t H = (size_t)c->n_heads, dk = (size_t)c->head_dim_k, dv = (size_t)c->head_dim_v;
    size_t P = (size_t)x->plan.ret_piece, count = (size_t)x->plan.pieces * H;
    size_t HK = H * dk, HV = H * dv, states = align256(count * dk * dv * sizeof(float));
    size_t arr = align256(count * sizeof(void *)), stride = arr / sizeof(void *);
    void **host = (void **)calloc(PP_COUNT, arr);
    int rc = RN_OK;
    if (!host)
        return rn_error_set(err, RN_ENOMEM, "out of memory");
    CU(cudaMalloc(&x->U, x->plan.pieces_bytes), "retention pieces");
    for (size_t b = 0; b < count; b++) {
        size_t p = b / H, h = b % H;
        void **e = host + b; /* entry b of array a is at e + a * stride */
        e[PP_K * stride] = x->k + p * P * HK + h * dk;
        e[PP_Q * stride] = x->q + p * P * HK + h * dk;
        e[PP_V * stride] = x->v + p * P * HV + h * dv;
        e[PP_O * stride] = x->o + p * P * HV + h * dv;
        e[PP_A * stride] = x->A + b * P * P;
        e[PP_KD * stride] = x->kd + b * P * dk;
        e[PP_QD * stride] = x->qd + b * P * dk;
        e[PP_U * stride] = x->U + b * dk * dv;
        e[PP_VH * stride] = (char *)x->A + (p * P * HV + h * dv) * 2; /* first in fused_copies */
        e[PP_KDH * stride] = (char *)x->kd + b * P * dk * 2;
    }
    for (int a = 0; a < PP_COUNT; a++)
        x->pp[a] = (void **)((char *)x->U + states + (size_t)a * arr);
    CU(cudaMemcpy(x->pp[0], host, arr * PP_COUNT, cudaMemcpyHostToDevice), "retention pieces");
cleanup:
    free(host);
    return rc;
}

/* The decode graphs' table, NULL entries for each step tail and batch
 * size (freed by cuda_deinit); 0 when out of memory. */
static int alloc_graph_slots(cuda_ctx *x)
{
    int ok = 1;
    for (int w = 0; w < STEP_TAILS; w++) {
        x->graphs[w] =
            (cudaGraphExec_t *)calloc((size_t)x->plan.max_batch + 1, sizeof(cudaGraphExec_t));
        ok &= x->graphs[w] != NULL;
    }
    return ok;
}

/* Carves the activation, scratch and small-table buffers out of three
 * allocations sized by the plan. */
static int alloc_buffers(cuda_ctx *x, rn_error *err)
{
    const rn_config *c = x->c;
    const rn_cuda_plan *p = &x->plan;
    size_t R = (size_t)p->max_rows, D = (size_t)c->hidden_size, K = (size_t)c->key_dim;
    size_t V = (size_t)c->value_dim, F = (size_t)c->intermediate_size, H = (size_t)c->n_heads;
    size_t C = (size_t)p->max_chunk, dk = (size_t)c->head_dim_k;
    size_t act = p->act_bytes + p->logits_bytes, tables;
    int rc = RN_OK;
    CU(cudaMalloc(&x->x, act), "activations");
    {
        /* every buffer starts on 256 bytes, as cuBLASLt's kernels assume */
        char *b = (char *)x->x;
        float **rows[] = {&x->hn, &x->y, &x->q, &x->k, &x->v, &x->g, &x->o, &x->f1, &x->f2};
        size_t width[] = {D, D, K, K, V, V, V, F, F};
        b += align256(R * D * 4);
        for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
            *rows[i] = (float *)b;
            b += align256(R * width[i] * 4);
        }
        x->half[0] = b;
        x->half[1] = b + align256(R * rn_cuda_widest_input(c) * 2);
        x->logits = (float *)((char *)x->x + p->act_bytes);
    }
    CU(cudaMalloc(&x->A, p->chunk_bytes), "chunk scratch");
    if (p->layer_scratch_bytes)
        CU(cudaMalloc(&x->sscr, p->layer_scratch_bytes), "state scratch");
    CU(cudaMalloc(&x->part, p->step_bytes), "step scratch");
    CU(cudaMalloc(&x->top, p->top_bytes), "sampling rows");
    x->step_dev = (char *)x->top + rn_cuda_top_rows_bytes(p->max_batch);
    {
        /* page-locked: a copy from it is a DMA the stream (and a graph)
         * runs in order, with no staging through a driver buffer */
        size_t in = align256(rn_cuda_step_in_layout(p->max_batch).bytes);
        void *h = NULL;
        CU(cudaMallocHost(&h, in + rn_cuda_top_rows_bytes(p->max_batch)), "step buffers");
        /* a step without temperatures copies that part of the block in
         * unread: defined bytes, never whatever the allocation held */
        memset(h, 0, in + rn_cuda_top_rows_bytes(p->max_batch));
        x->step_host = (char *)h, x->step_back = x->step_host + in;
    }
    {
        size_t off[5];
        rn_cuda_chunk_offsets(x->c, C, off);
        x->qd = x->A + off[0], x->kd = x->A + off[1], x->pw = x->A + off[2];
        x->sums = x->A + off[3]; /* the tables: pieces and tail */
    }
    tables = H * sizeof(double) + H * 4 + dk * 4 + R * (4 + 8) + 256;
    CU(cudaMalloc(&x->log_gamma, tables), "tables");
    x->gamma = (float *)(x->log_gamma + H), x->freq = x->gamma + H;
    /* a chunk's positions (8-byte aligned), then its token ids */
    x->rowpos = (int64_t *)align256((size_t)(x->freq + dk));
    x->tok = (int32_t *)(x->rowpos + R);
    CU(cudaMalloc(&x->ws, RN_CUDA_LT_WORKSPACE), "cuBLASLt workspace");
    if (p->pieces)
        rc = alloc_pieces(x, err);
cleanup:
    return rc;
}

static int init_tables(cuda_ctx *x, rn_error *err)
{
    const rn_config *c = x->c;
    int H = c->n_heads, dk = c->head_dim_k, rc = RN_OK;
    double *lg = (double *)malloc(sizeof(double) * (size_t)H);
    float *g = (float *)malloc(sizeof(float) * (size_t)H),
          *f = (float *)malloc(sizeof(float) * (size_t)dk);
    if (!lg || !g || !f) {
        rc = rn_error_set(err, RN_ENOMEM, "out of memory");
        goto cleanup;
    }
    for (int h = 0; h < H; h++) {
        lg[h] = rn_log_decay(c->decay == RN_DECAY_LINSPACE, h, H);
        g[h] = rn_decay_pow(lg[h], 1.0);
    }
    for (int i = 0; i < dk; i++)
        f[i] = x->w->rope_freq.data
                   ? ((const float *)x->w->rope_freq.data)[i]
                   : rn_rope_frequency(c->rope_layout == RN_ROPE_INTERLEAVED,
                                       c->rope_freq == RN_FREQ_LINSPACE, c->rope_theta, i, dk);
    CU(cudaMemcpy(x->log_gamma, lg, sizeof(double) * (size_t)H, cudaMemcpyHostToDevice), "tables");
    CU(cudaMemcpy(x->gamma, g, sizeof(float) * (size_t)H, cudaMemcpyHostToDevice), "tables");
    CU(cudaMemcpy(x->freq, f, sizeof(float) * (size_t)dk, cudaMemcpyHostToDevice), "tables");
cleanup:
    free(lg);
    free(g);
    free(f);
    return rc;
}

/* A clear message before any large allocation when the plan cannot fit. */
static int check_fits(const cuda_ctx *x, rn_error *err)
{
    size_t free_b = 0, total_b = 0;
    if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess)
        return rn_error_set(err, RN_EDEVICE, "cuda backend: cannot query device memory");
    size_t need = x->wsize + x->plan.total_bytes;
    if (need > free_b)
        return rn_error_set(err, RN_ENOMEM,
                            "cuda backend: %zu MiB of weights + %zu MiB of states (%d slots of "
                            "%zu bytes) + %zu MiB of buffers exceed the %zu MiB free on the device "
                            "(lower --slots or --gpu-state-memory)",
                            x->wsize >> 20, x->plan.pool_bytes >> 20, x->plan.n_slots,
                            x->plan.state_bytes, (x->plan.total_bytes - x->plan.pool_bytes) >> 20,
                            free_b >> 20);
    return RN_OK;
}

/* The one 16-bit dtype of every matrix (what half_out rounds to), or -1
 * when they are fp32 or mixed. */
static int common_half(const cuda_ctx *x)
{
    int t = -1;
    for (int l = 0; l < x->c->n_layers; l++) {
        const rn_tensor *m[RN_CUDA_MATRICES];
        rn_cuda_layer_matrices(x->w, l, m);
        for (int i = 0; i < RN_CUDA_MATRICES; i++) {
            if (!m[i]->data)
                continue;
            if (m[i]->dtype == RN_DT_F32 || (t >= 0 && (int)m[i]->dtype != t))
                return -1;
            t = (int)m[i]->dtype;
        }
    }
    return t;
}

/* Tuning overrides from the environment (documented in docs/operations.md),
 * clamped to [lo, hi]; def when unset. */
static int env_int(const char *name, int def, int lo, int hi)
{
    const char *v = getenv(name);
    int n = v && *v ? atoi(v) : def;
    return n < lo ? lo : n > hi ? hi : n;
}

/* The stream-K GEMV's partial sums and counters (RETNET_CUDA_TC_STREAM)
 * into x->tc, sized for every launch the model makes
 * (rn_cuda_tc_stream_bytes): a few MiB in one allocation, which
 * x->tc.stream_part owns (NULL: the other kernels).  Where the device
 * refuses them the switch stays off, with a line on stderr. */
static void alloc_tc_stream(cuda_ctx *x)
{
    long groups = 0;
    void *buf = NULL;
    if (!x->tc_max || !env_int("RETNET_CUDA_TC_STREAM", 0, 0, 1))
        return;
    size_t part = rn_cuda_tc_stream_bytes(x->w, x->c->n_layers, x->n_sms, x->tc_max, &groups);
    size_t at = align256(part), bytes = at + (size_t)groups * sizeof(unsigned);
    if (!part)
        return;
    if (cudaMalloc(&buf, bytes) != cudaSuccess ||
        cudaMemset((char *)buf + at, 0, bytes - at) != cudaSuccess) {
        cudaGetLastError();
        cudaFree(buf);
        fprintf(stderr,
                "cuda backend: no room for the stream-K GEMV's %zu bytes: "
                "RETNET_CUDA_TC_STREAM off\n",
                bytes);
        return;
    }
    x->tc.stream_part = (float *)buf, x->tc.stream_part_bytes = part;
    x->tc.stream_count = (unsigned *)((char *)buf + at), x->tc.stream_groups = groups;
}

static int cuda_init(void **out, const rn_model *m, const rn_engine_opts *o, rn_error *err)
{
    int rc = RN_OK, dev = 0, major = 0;
    cuda_ctx *x = (cuda_ctx *)calloc(1, sizeof *x);
    *out = NULL;
    if (!x)
        return rn_error_set(err, RN_ENOMEM, "out of memory");
    x->c = rn_model_config(m);
    x->w = rn_model_weights(m);
    x->use_graphs = !getenv("RETNET_CUDA_GRAPHS") || strcmp(getenv("RETNET_CUDA_GRAPHS"), "0");
    /* half-precision weights already round the projections to 8 or 11
     * mantissa bits: TF32 tensor cores (10 bits) in the retention products
     * stay inside that error and are ~8x the fp32 rate; fp32 checkpoints
     * keep exact fp32 products (the 1e-4 parity fixtures) */
    x->ret_compute =
        x->w->embed.dtype == RN_DT_F32 ? CUBLAS_COMPUTE_32F : CUBLAS_COMPUTE_32F_FAST_TF32;
    /* RETNET_CUDA_RET_BF16=1: bf16 tensor cores (8 bits, as bf16 weights
     * round the projections; the range of fp32) at twice the TF32 rate */
    if (x->ret_compute != CUBLAS_COMPUTE_32F && env_int("RETNET_CUDA_RET_BF16", 0, 0, 1))
        x->ret_compute = CUBLAS_COMPUTE_32F_FAST_16BF;
    if ((rc = rn_cuda_plan_make(&x->plan, x->c, o->n_slots, o->max_chunk, o->state_bf16, err)))
        goto cleanup;
    CU(cudaGetDevice(&dev), "no device");
    CU(cudaDeviceGetAttribute(&x->n_sms, cudaDevAttrMultiProcessorCount, dev), "device attributes");
    x->tc.n_sms = x->n_sms;
    CU(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev), "device attributes");
    x->fuse = env_int("RETNET_CUDA_FUSE", 1, 0, 1);
    x->half_act = env_int("RETNET_CUDA_HALF_ACT", 0, 0, 1);
    /* cuBLASLt's heuristic takes the first algorithm it lists for a shape;
     * RETNET_CUDA_LT_TUNE=N times up to 8 of them once for shapes of N rows
     * or more instead (lt_tune): 512 takes prefill chunks, not their short
     * tails, each new row count of which stalls the stream once */
    x->lt_tune = env_int("RETNET_CUDA_LT_TUNE", 0, 0, 1 << 30);
    x->gemv_split = env_int("RETNET_CUDA_GEMV_SPLIT", RN_CUDA_GEMV_SPLIT_DEFAULT, 0, 1 << 20);
    x->tc.loads = env_int("RETNET_CUDA_TC_LOADS", 8, 8, 16) > 8 ? 16 : 8;
    /* the tensor-core GEMV's launch shape, for measuring others: each
     * warp's share of the input width (RETNET_CUDA_TC_KPW, rounded up to 32;
     * fewer, longer-lived warps a block) and the pair groups a block takes
     * (RETNET_CUDA_TC_GROUPS=1|2; 1 doubles the blocks of q/k/v/g); 0: the
     * plan's.  At 16 rows of the 1.3B preset ncu found q/k/v/g's 384 blocks
     * in 1.45 waves of 264 and o's and down's 128 one an SM */
    x->tc.k_per_warp = env_int("RETNET_CUDA_TC_KPW", 0, 0, 1 << 16);
    x->tc.groups = env_int("RETNET_CUDA_TC_GROUPS", 0, 0, 1 << 16);
    if (x->tc.groups != 1 && x->tc.groups != 2)
        x->tc.groups = 0;
    /* the state loads ahead of the wait pay where the step is shortest: on
     * an H100 batch 1 / 2 at 727 / 1,149 tok/s against 714 / 1,112; on an
     * H200 batch 1 +2.5% but 16 and 64 1-3% slower (docs/benchmarks.md).
     * RETNET_CUDA_STEP_EARLY=0: never, 1: at every batch */
    {
        int e = env_int("RETNET_CUDA_STEP_EARLY", -1, -1, 1);
        x->step_early = e < 0 ? RN_CUDA_STEP_EARLY_ROWS : e ? INT_MAX : 0;
    }
    /* on an H100, batch 1: 721 tok/s against 689 with the norms launched
     * (docs/benchmarks.md) */
    x->prenorm = env_int("RETNET_CUDA_GEMV_PRENORM", 1, 0, 1);
    if (x->prenorm) { /* here, never inside a decode graph's capture */
        int t = (int)x->w->layers[0].q_w.dtype, th = (int)x->w->lm_head_w.dtype;
        rk_gemv_norm_prepare(t, RN_CUDA_GEMV_MAX, x->c->hidden_size, 0);
        if (th != t) /* an LM head of its own dtype */
            rk_gemv_norm_prepare(th, RN_CUDA_GEMV_MAX, x->c->hidden_size, 0);
    }
    /* the decode group norm formed by the output projection's GEMV
     * (group_norm_fold); off until measured against its own launch */
    x->group_norm = env_int("RETNET_CUDA_GEMV_GROUPNORM", 0, 0, 1);
    if (x->group_norm)
        rk_gemv_norm_prepare((int)x->w->layers[0].o_w.dtype, RN_CUDA_GEMV_MAX, x->c->value_dim, 1);
    /* registers over shared rows: on an H100 651 vs 567 tok/s at batch 1 and
     * 107k vs 100k tok/s of 8k prefill (docs/benchmarks.md) */
    x->norm_vec = env_int("RETNET_CUDA_NORM_VEC", 1, 0, 1);
    /* 16-bit models' batched pieces read out by one tensor-core kernel
     * (bf16 operands, as RETNET_CUDA_RET_BF16): on an H100 8k prompts in
     * 4096-token chunks prefill at 136k tok/s against 131k through the
     * cuBLAS products (docs/benchmarks.md); RETNET_CUDA_RET_FUSED=0 keeps
     * the products */
    x->ret_fused = major >= 8 && x->ret_compute != CUBLAS_COMPUTE_32F
                       ? env_int("RETNET_CUDA_RET_FUSED", 1, 0, 1)
                       : 0;
    /* a short prompt's chunk gives the fused read-out few blocks (512
     * tokens of the 1.3B shape: 64 on an H100's 132 SMs), so each head's
     * value columns are split while the grid stays within one block an SM:
     * on an H100 that read-out took 621 against 812 us of a 512-token
     * prompt's critical path and the prompt prefilled 2.8% faster, 2k and
     * 8k prompts as before (their chunks fill the SMs), the same bits
     * (docs/benchmarks.md).  Unset or 1: so; 0: never; 2 or 4: always in
     * that many (where dv allows) */
    {
        int s = env_int("RETNET_CUDA_RET_SPLIT", 1, 0, RN_CUDA_RET_SPLIT_MAX);
        x->ret_split = s == 1 ? RN_CUDA_RET_SPLIT_AUTO : s;
    }
    /* off until measured: the fused read-out normalising and gating its
     * rows itself, where a block holds a whole head (not split), so the
     * chunk's fp32 read-out is neither stored nor read again by the group
     * norm (67 MB of a 4096-token chunk of the 1.3B shape, whose norm took
     * 86 us a layer on an H100: docs/benchmarks.md) */
    x->ret_norm = env_int("RETNET_CUDA_RET_NORM", 0, 0, 1);
    /* the fused read-out in wide warps: its products in warps of 32 rows
     * by dv / 8 columns (where dv / 64 is even) instead of 16 by dv / 4,
     * its scores in warps of 16 rows by 32 keys instead of 16 by 16, so
     * each fragment loaded from shared memory serves two tiles (about a
     * third fewer ldmatrix a block) for the same sums in the same order
     * (the same bits); =0 the tiling before 28 Nov */
    x->ret_wide = env_int("RETNET_CUDA_RET_WIDE", 1, 0, 1);
    /* the fused read-out's bf16 copies written by the passes that already
     * hold the values (the rotary pass: q, k and the scaled keys; v's
     * product: v) instead of three passes of their own: on an H100 8k
     * prompts prefill 9.5% faster in 1024-token chunks and 7.4% in 4096
     * (docs/benchmarks.md); =0 keeps the passes */
    x->qk_half = env_int("RETNET_CUDA_QK_HALF", 1, 0, 1);
    x->v_half = env_int("RETNET_CUDA_V_HALF", 1, 0, 1);
    /* q and k, v and g, up and gate as one strided-batched cuBLASLt product
     * each, three launches fewer a layer: on an H100 prefill 4-7% faster in
     * 1024-token chunks and decode at 64 rows 3.4% (docs/benchmarks.md) */
    x->lt_pairs = env_int("RETNET_CUDA_LT_PAIRS", 1, 0, 1);
    {
        int optin = 0, per_sm = 0;
        CU(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev),
           "device attributes");
        CU(cudaDeviceGetAttribute(&per_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, dev),
           "device attributes");
        x->smem_optin = (size_t)optin;
        x->tc.smem_block = (size_t)optin, x->tc.smem_sm = (size_t)per_sm;
    }
    /* off until measured: the tensor-core GEMV's weights through a ring of
     * cp.async stages (1: up to RN_CUDA_TC_STAGES_MAX, 2-4: at most that
     * many), more bytes in flight than registers hold; at batch 16 on an
     * H100 the register kernel moved 1.43 TB/s, 49% of the copy kernel
     * (docs/benchmarks.md) */
    {
        int a = env_int("RETNET_CUDA_TC_ASYNC", 0, 0, RN_CUDA_TC_STAGES_MAX);
        x->tc.stages = a == 1 ? RN_CUDA_TC_STAGES_MAX : a;
        if (x->tc.stages && (major < 8 || rk_gemv_tc_prepare(x->tc.smem_block) != 0)) {
            x->tc.stages = 0;
            cudaGetLastError();
        }
    }
    /* the kernel's shared memory is allowed per device: here, for this one;
     * where it is refused the products run as before */
    if (x->ret_fused &&
        (!rk_ret_fused_fits(64, x->c->head_dim_k, x->c->head_dim_v, x->smem_optin) ||
         rk_ret_fused_prepare(x->c->head_dim_k, x->c->head_dim_v, x->smem_optin) != 0)) {
        x->ret_fused = 0;
        cudaGetLastError();
    }
    /* the normalising instance wants a 64-row fp32 tile of shared memory */
    x->ret_norm = x->ret_norm && x->ret_fused &&
                  rk_ret_fused_prepare_norm(x->c->head_dim_k, x->c->head_dim_v, x->smem_optin) == 0;
    x->tc_max = major >= 8 && rn_cuda_tc_weights_fit(x->w, x->c->n_layers) /* mma, bf16 */
                    ? env_int("RETNET_CUDA_TC_MAX", RN_CUDA_TC_DEFAULT, 0, RN_CUDA_TC_MAX)
                    : 0;
    /* the GEMV gives up rows 3 and 4 only to a tensor-core GEMV that takes them */
    x->gemv_max =
        env_int("RETNET_CUDA_GEMV_MAX",
                x->tc_max > RN_CUDA_GEMV_DEFAULT ? RN_CUDA_GEMV_DEFAULT : RN_CUDA_GEMV_NO_TC, 0,
                RN_CUDA_GEMV_MAX);
    x->half_t = common_half(x);
    x->ret_chunk = env_int("RETNET_CUDA_RET_CHUNK",
                           rn_cuda_ret_piece_default(x->c, x->plan.max_chunk), 0, 1 << 30);
    rn_cuda_plan_pieces(&x->plan, x->c, x->ret_chunk);
    x->pdl = major >= 9 && rk_pdl_supported() && env_int("RETNET_CUDA_PDL", 1, 0, 1);
    /* prefill's own kernels with dependent launch, each one's start
     * overlapping the last one's tail: on an H100 8k prompts prefill 5.2%
     * faster in 1024-token chunks and 1.3% in 4096 (docs/benchmarks.md) */
    x->prefill_pdl = x->pdl && env_int("RETNET_CUDA_PREFILL_PDL", 1, 0, 1);
    /* off until measured: the add-norms after the output and down
     * projections read the stream and y and write the stream (112 MiB a
     * 4096-token chunk of the 1.3B shape each, where the norm alone moves
     * 48), 3.6 of 30.7 ms of norms on an H100 (docs/benchmarks.md) */
    x->resid_gemm = env_int("RETNET_CUDA_RESID_GEMM", 0, 0, 1);
    CU(cudaStreamCreateWithFlags(&x->st, cudaStreamNonBlocking), "stream");
    /* off until measured: decode steps of up to N rows ask L2 for each
     * layer's output-projection weights on a second stream while the
     * recurrent step and the group norm run (l2_fork_out); the in-kernel
     * prefetch tried on 27 Nov cost 28% at batch 1, every kernel of the
     * chain waiting on its own requests, which a branch of its own does not
     * (docs/benchmarks.md) */
    x->l2_fork = major >= 9 ? env_int("RETNET_CUDA_L2_FORK", 0, 0, RN_CUDA_MAX_BATCH) : 0;
    if (x->l2_fork) {
        CU(cudaStreamCreateWithFlags(&x->st2, cudaStreamNonBlocking), "second stream");
        CU(cudaEventCreateWithFlags(&x->ev_fork, cudaEventDisableTiming), "events");
        CU(cudaEventCreateWithFlags(&x->ev_join, cudaEventDisableTiming), "events");
    }
    if (cublasCreate(&x->blas) || cublasSetStream(x->blas, x->st) || cublasLtCreate(&x->lt)) {
        rc = rn_error_set(err, RN_EDEVICE, "cuda backend: cannot create cuBLAS handles");
        goto cleanup;
    }
    x->layers = (dev_layer *)calloc((size_t)x->c->n_layers, sizeof *x->layers);
    x->pos = (int64_t *)calloc((size_t)x->plan.n_slots, sizeof *x->pos);
    x->host_rowpos = (int64_t *)calloc((size_t)x->plan.max_rows, sizeof *x->host_rowpos);
    if (!x->layers || !x->pos || !x->host_rowpos || !alloc_graph_slots(x)) {
        rc = rn_error_set(err, RN_ENOMEM, "out of memory");
        goto cleanup;
    }
    upload_all(x); /* counting pass: x->wdev is NULL */
    x->wsize = x->wused;
    if ((rc = check_fits(x, err)))
        goto cleanup;
    CU(cudaMalloc(&x->wdev, x->wsize), "weights");
    if (upload_all(x) != RN_OK) {
        rc = rn_error_set(err, RN_EDEVICE, "cuda backend: copying the weights failed");
        goto cleanup;
    }
    CU(cudaMalloc(&x->states, x->plan.pool_bytes), "state pool");
    CU(cudaMemset(x->states, 0, x->plan.pool_bytes), "state pool");
    if ((rc = alloc_buffers(x, err)) || (rc = init_tables(x, err)))
        goto cleanup;
    /* off until measured: the tensor-core GEMV as a stream-K grid, every
     * warp of the SMs' an even run of the launch's work, where the whole
     * groups of gemv_tc_kernel's grid leave a partial second wave (384
     * blocks in 1.45 waves for q/k/v/g at 16 rows on an H100) */
    alloc_tc_stream(x);
    /* the memset and the pageable copies above may still be in flight, and
     * x->st does not wait for the legacy stream */
    CU(cudaDeviceSynchronize(), "initialisation");
    *out = x;
    return RN_OK;
cleanup:
    cuda_deinit(x);
    return rc;
}

/* --------------------------------------------------------------- states */

static void *slot_base(cuda_ctx *x, int slot)
{
    return pool_layer(x, slot, 0);
}

static size_t cuda_state_bytes(void *ctx)
{
    return ((cuda_ctx *)ctx)->plan.export_bytes;
}

static size_t cuda_slot_bytes(void *ctx)
{
    return ((cuda_ctx *)ctx)->plan.state_bytes;
}

static int cuda_state_reset(void *ctx, int slot)
{
    cuda_ctx *x = (cuda_ctx *)ctx;
    if (x->broken || cudaMemsetAsync(slot_base(x, slot), 0, x->plan.state_bytes, x->st))
        return RN_EDEVICE;
    int rc = sync_status(x);
    if (rc == RN_OK)
        x->pos[slot] = 0;
    return rc;
}

static int cuda_state_copy(void *ctx, int dst, int src)
{
    cuda_ctx *x = (cuda_ctx *)ctx;
    if (dst == src)
        return RN_OK;
    if (x->broken || cudaMemcpyAsync(slot_base(x, dst), slot_base(x, src), x->plan.state_bytes,
                                     cudaMemcpyDeviceToDevice, x->st))
        return RN_EDEVICE;
    int rc = sync_status(x);
    if (rc == RN_OK)
        x->pos[dst] = x->pos[src];
    return rc;
}

static int64_t cuda_state_pos(void *ctx, int slot)
{
    return ((cuda_ctx *)ctx)->pos[slot];
}

/* fp32 on the host whatever the pool holds: a bf16 pool goes layer by
 * layer through the fp32 scratch. */
static int cuda_state_export(void *ctx, int slot, float *host, size_t nbytes)
{
    cuda_ctx *x = (cuda_ctx *)ctx;
    size_t lv = x->plan.layer_vals;
    if (x->broken)
        return RN_EDEVICE;
    if (!x->plan.state_bf16) {
        if (cudaMemcpyAsync(host, slot_base(x, slot), nbytes, cudaMemcpyDeviceToHost, x->st))
            return RN_EDEVICE;
        return sync_status(x);
    }
    for (int l = 0; l < x->c->n_layers; l++) {
        rk_state_expand(x->st, x->sscr, pool_layer(x, slot, l), lv);
        if (cudaMemcpyAsync(host + (size_t)l * lv, x->sscr, lv * sizeof(float),
                            cudaMemcpyDeviceToHost, x->st))
            return RN_EDEVICE;
    }
    return sync_status(x);
}

static int cuda_state_import(void *ctx, int slot, const float *host, size_t nbytes, int64_t pos)
{
    cuda_ctx *x = (cuda_ctx *)ctx;
    size_t lv = x->plan.layer_vals;
    if (x->broken)
        return RN_EDEVICE;
    if (!x->plan.state_bf16) {
        if (cudaMemcpyAsync(slot_base(x, slot), host, nbytes, cudaMemcpyHostToDevice, x->st))
            return RN_EDEVICE;
    } else {
        for (int l = 0; l < x->c->n_layers; l++) { /* rounded to bf16 on the way in */
            if (cudaMemcpyAsync(x->sscr, host + (size_t)l * lv, lv * sizeof(float),
                                cudaMemcpyHostToDevice, x->st)) {
                x->broken = 1; /* the slot holds some layers of each state */
                return RN_EDEVICE;
            }
            rk_state_compress(x->st, pool_layer(x, slot, l), x->sscr, lv);
        }
    }
    int rc = sync_status(x);
    if (rc == RN_OK)
        x->pos[slot] = pos;
    return rc;
}

/* ------------------------------------------------------------- compute */

/* n tokens of slot as one chunk; logits of the last row or of all rows. */
/* A failure part-way through a step leaves states half advanced: the
 * backend marks itself unusable rather than serve from them. */
static int fail_step(cuda_ctx *x, int rc)
{
    x->broken = 1;
    return rc;
}

/* The chunk's device work after its rows are on the device: the layers,
 * then the logits asked for (rows from first on; first = n: none).  With
 * x->prefill_pdl the kernels of kernels.cu go out with dependent launch
 * here too: each waits for its predecessor before it touches memory
 * (pdl_wait), whether that is one of them or a cuBLAS product, and
 * cuBLAS's own launches and the copies keep the stream's plain order. */
static int chunk_work(cuda_ctx *x, int slot, int n, int first)
{
    rk_set_pdl(x->prefill_pdl);
    int rc = forward(x, FWD_CHUNK, slot, n);
    if (rc == RN_OK && first < n)
        rc = output_logits(x, first, n);
    rk_set_pdl(0);
    return rc;
}

static int run_chunk(cuda_ctx *x, int slot, const int32_t *tok, int n, int all, float *logits)
{
    int rc, first = !logits ? n : all ? 0 : n - 1;
    for (int i = 0; i < n; i++)
        x->host_rowpos[i] = x->pos[slot] + i;
    if ((rc = put_chunk_rows(x, tok, n)) || (rc = chunk_work(x, slot, n, first)))
        return fail_step(x, rc);
    x->pos[slot] += n;
    if (logits && (rc = get_logits(x, logits, n - first)))
        return fail_step(x, rc);
    return sync_status(x);
}

/* The device pointers of an n-row step's inputs in x->step_dev. */
static pass_in step_in_at(const cuda_ctx *x, int n)
{
    rn_cuda_step_in L = rn_cuda_step_in_layout(n);
    char *b = x->step_dev;
    return pass_in{(int32_t *)(b + L.tok), (int64_t *)(b + L.pos), (int *)(b + L.slots),
                   (float *)(b + L.temps)};
}

/* Packs an n-row step's inputs into x->step_host and points x->in at
 * where the step's first copy puts them.  temps: NULL unless sampling
 * rows are reduced (their room is copied all the same). */
static void step_in_pack(cuda_ctx *x, const int *slots, const int32_t *tok, const float *temps,
                         int n)
{
    rn_cuda_step_in L = rn_cuda_step_in_layout(n);
    int64_t *pos = (int64_t *)(x->step_host + L.pos);
    for (int i = 0; i < n; i++)
        pos[i] = x->pos[slots[i]];
    memcpy(x->step_host + L.tok, tok, sizeof(int32_t) * (size_t)n);
    memcpy(x->step_host + L.slots, slots, sizeof(int) * (size_t)n);
    if (temps)
        memcpy(x->step_host + L.temps, temps, sizeof(float) * (size_t)n);
    x->in = step_in_at(x, n);
}

/* What an n-row step ending in tail copies out to x->step_back at its
 * end: greedy's picks or the reduced rows; 0 bytes for the others (the
 * logits go straight to the caller's buffer). */
static size_t step_back_bytes(int n, step_tail tail)
{
    return tail == STEP_TOP     ? sizeof(rn_row_top) * (size_t)n
           : tail == STEP_PICKS ? sizeof(int32_t) * (size_t)n
                                : 0;
}

/* The device work of one decode step of n rows, launched in stream order:
 * the packed inputs in (step_in_pack), the layers and the tail, then the
 * picks or reduced rows out to page-locked memory.  Both copies are part
 * of the step, so a graph of it runs them with no call of the host's
 * between them and the kernels. */
static int decode_work(cuda_ctx *x, int n, step_tail tail)
{
    size_t back = step_back_bytes(n, tail);
    if (cudaMemcpyAsync(x->step_dev, x->step_host, rn_cuda_step_in_layout(n).bytes,
                        cudaMemcpyHostToDevice, x->st) != cudaSuccess)
        return RN_EDEVICE;
    int rc = forward(x, FWD_DECODE, -1, n);
    if (rc == RN_OK && tail != STEP_BARE)
        rc = output_logits(x, 0, n);
    if (rc == RN_OK && tail == STEP_PICKS)
        rk_argmax_rows(x->st, x->in.tok, x->logits, n, x->c->vocab_size);
    if (rc == RN_OK && tail == STEP_TOP)
        rk_top_rows(x->st, x->top, x->logits, x->in.temps, n, x->c->vocab_size);
    int joined = l2_join(x); /* whatever rc: a capture cannot end with a branch open */
    rc = rc ? rc : joined;
    if (rc == RN_OK && back &&
        cudaMemcpyAsync(x->step_back, tail == STEP_TOP ? (const void *)x->top : x->in.tok, back,
                        cudaMemcpyDeviceToHost, x->st) != cudaSuccess)
        rc = RN_EDEVICE;
    x->pend = 0; /* taken by its GEMV in every path that sets it */
    return rc;
}

/* decode_work as a graph, captured on first use; NULL when capture fails
 * (the caller then runs the step eagerly and stops trying). */
static cudaGraphExec_t decode_graph(cuda_ctx *x, int n, step_tail tail)
{
    cudaGraphExec_t *slot = &x->graphs[tail][n];
    cudaGraph_t g = NULL;
    if (*slot)
        return *slot;
    if (cudaStreamBeginCapture(x->st, cudaStreamCaptureModeThreadLocal) != cudaSuccess)
        return NULL;
    int rc = decode_work(x, n, tail);
    cudaError_t e = cudaStreamEndCapture(x->st, &g);
    if (rc == RN_OK && e == cudaSuccess && cudaGraphInstantiate(slot, g, 0) != cudaSuccess)
        *slot = NULL;
    if (g)
        cudaGraphDestroy(g);
    cudaGetLastError(); /* a failed capture is not a device fault */
    return *slot;
}

/* One decode step's device work: replayed from a graph, or launched.
 * Where the projections stream (streaming) every kernel after the embedding
 * is one of kernels.cu's, so they go out with dependent launch (x->pdl); the
 * flag is read while launching or capturing, so a graph keeps what it was
 * made with. */
static int decode_step(cuda_ctx *x, int n, step_tail tail)
{
    int rc = RN_OK, done = 0;
    rk_set_pdl(x->pdl && streaming(x, n));
    if (x->use_graphs) {
        cudaGraphExec_t g = decode_graph(x, n, tail);
        if (g) {
            rc = cudaGraphLaunch(g, x->st) == cudaSuccess ? RN_OK : RN_EDEVICE;
            done = 1;
        } else {
            x->use_graphs = 0;
            fprintf(stderr,
                    "cuda backend: capturing the decode step failed; running it without graphs\n");
        }
    }
    if (!done)
        rc = decode_work(x, n, tail);
    rk_set_pdl(0);
    return rc;
}

/* What a decode step hands back: the logits (n x vocab), greedy's picks,
 * or the rows reduced at temperatures (n each); all NULL: nothing. */
typedef struct step_out {
    float *logits;
    int32_t *picks;
    const float *temps;
    rn_row_top *tops;
} step_out;

static step_tail step_out_tail(const step_out *o)
{
    return o->tops ? STEP_TOP : o->picks ? STEP_PICKS : o->logits ? STEP_LOGITS : STEP_BARE;
}

/* One decode step for n <= max_batch slots, handing back what o asks for.
 * Greedy's picks are written over the step's token ids, which its
 * embedding has read by then; they and the reduced rows reach the caller
 * through x->step_back once the step is done, the logits by a copy of
 * their own. */
static int run_decode(cuda_ctx *x, const int *slots, const int32_t *tok, int n, const step_out *o)
{
    step_tail tail = step_out_tail(o);
    int rc;
    step_in_pack(x, slots, tok, o->tops ? o->temps : NULL, n);
    if ((rc = decode_step(x, n, tail)))
        return fail_step(x, rc);
    for (int i = 0; i < n; i++)
        x->pos[slots[i]]++;
    if (tail == STEP_LOGITS && (rc = get_logits(x, o->logits, n)))
        return fail_step(x, rc);
    if ((rc = sync_status(x)))
        return rc;
    if (tail == STEP_TOP)
        memcpy(o->tops, x->step_back, step_back_bytes(n, tail));
    else if (tail == STEP_PICKS)
        memcpy(o->picks, x->step_back, step_back_bytes(n, tail));
    return RN_OK;
}

static int cuda_prefill(void *ctx, int slot, const int32_t *tok, int n, const rn_prefill_opts *o,
                        float *logits)
{
    cuda_ctx *x = (cuda_ctx *)ctx;
    size_t V = (size_t)x->c->vocab_size;
    int all = o->logits == RN_LOGITS_ALL, rc = RN_OK, chunk;
    if (x->broken)
        return RN_EDEVICE;
    if (o->form == RN_FORM_RECURRENT) {
        for (int i = 0; i < n && rc == RN_OK; i++) {
            float *lg = !logits ? NULL
                        : all   ? logits + (size_t)i * V
                                : (i == n - 1 ? logits : NULL);
            step_out so = {lg, NULL, NULL, NULL};
            rc = run_decode(x, &slot, tok + i, 1, &so);
        }
        return rc;
    }
    if (o->form == RN_FORM_PARALLEL) {
        if (x->pos[slot] != 0)
            return RN_EINVAL;
        if (o->ts_clamp && x->c->retention_norm == RN_RETNORM_TORCHSCALE)
            return RN_EUNSUPPORTED; /* the clamp only acts on torchscale's normaliser
                               */
        /* the same sums as chunks from a zero state (longer prompts than
         * max_chunk go through in max_chunk pieces, as the CPU's chunkwise) */
        if ((rc = cuda_state_reset(x, slot)))
            return rc;
    }
    chunk = o->form == RN_FORM_CHUNKWISE && o->chunk > 0 && o->chunk < x->plan.max_chunk
                ? o->chunk
                : x->plan.max_chunk;
    for (int i0 = 0; i0 < n && rc == RN_OK; i0 += chunk) {
        int m = n - i0 < chunk ? n - i0 : chunk;
        float *lg = !logits ? NULL : all ? logits + (size_t)i0 * V : (i0 + m == n ? logits : NULL);
        rc = run_chunk(x, slot, tok + i0, m, all, lg);
    }
    return rc;
}

/* Decode steps of at most max_batch slots each (logits or picks as
 * run_decode's step_out). */
static int decode_batches(cuda_ctx *x, const int *slots, const int32_t *tok, int n, float *logits,
                          int32_t *picks)
{
    size_t V = (size_t)x->c->vocab_size;
    int rc = RN_OK;
    if (x->broken)
        return RN_EDEVICE;
    for (int i0 = 0; i0 < n && rc == RN_OK; i0 += x->plan.max_batch) {
        int m = n - i0 < x->plan.max_batch ? n - i0 : x->plan.max_batch;
        step_out so = {logits ? logits + (size_t)i0 * V : NULL, picks ? picks + i0 : NULL, NULL,
                       NULL};
        rc = run_decode(x, slots + i0, tok + i0, m, &so);
    }
    return rc;
}

static int cuda_decode(void *ctx, const int *slots, const int32_t *tok, int n, float *logits)
{
    return decode_batches((cuda_ctx *)ctx, slots, tok, n, logits, NULL);
}

static int cuda_decode_argmax(void *ctx, const int *slots, const int32_t *tok, int n, int32_t *out)
{
    return decode_batches((cuda_ctx *)ctx, slots, tok, n, NULL, out);
}

/* One step (the engine keeps n <= cuda_top_batch), so the logits of every
 * row stay in x->logits for cuda_decode_rows. */
static int cuda_decode_top(void *ctx, const int *slots, const int32_t *tok, int n,
                           const float *temperature, rn_row_top *out)
{
    cuda_ctx *x = (cuda_ctx *)ctx;
    if (x->broken)
        return RN_EDEVICE;
    if (n > x->plan.max_batch)
        return RN_EINVAL;
    step_out so = {NULL, NULL, temperature, out};
    return run_decode(x, slots, tok, n, &so);
}

static int cuda_top_batch(void *ctx)
{
    return ((cuda_ctx *)ctx)->plan.max_batch;
}

static int cuda_decode_rows(void *ctx, const int *rows, int nrows, float *logits)
{
    cuda_ctx *x = (cuda_ctx *)ctx;
    size_t V = (size_t)x->c->vocab_size;
    if (x->broken)
        return RN_EDEVICE;
    for (int i = 0; i < nrows; i++) {
        size_t at = (size_t)rows[i] * V;
        if (cudaMemcpyAsync(logits + at, x->logits + at, sizeof(float) * V, cudaMemcpyDeviceToHost,
                            x->st) != cudaSuccess)
            return fail_step(x, RN_EDEVICE);
    }
    return sync_status(x);
}

static int cuda_device_memory(void *ctx, size_t *used, size_t *total)
{
    size_t free_b = 0;
    (void)ctx;
    if (cudaMemGetInfo(&free_b, total) != cudaSuccess)
        return RN_EDEVICE;
    *used = *total - free_b;
    return RN_OK;
}

/* The weights' device bytes (upload_all's counting pass on a scratch
 * context), then the plan's buffers at the largest decode batch, then what
 * the device has free. */
static int cuda_fit_slots(const rn_model *m, int max_chunk, int state_bf16, double fraction,
                          int *slots, rn_error *err)
{
    cuda_ctx t;
    rn_cuda_plan p;
    size_t free_b = 0, total_b = 0;
    int rc;
    memset(&t, 0, sizeof t);
    t.c = rn_model_config(m);
    t.w = rn_model_weights(m);
    t.layers = (dev_layer *)calloc((size_t)t.c->n_layers, sizeof *t.layers);
    if (!t.layers)
        return rn_error_set(err, RN_ENOMEM, "out of memory");
    upload_all(&t); /* t.wdev is NULL: counts only */
    free(t.layers);
    if ((rc = rn_cuda_plan_make(&p, t.c, RN_CUDA_MAX_BATCH, max_chunk, state_bf16, err)))
        return rc;
    rn_cuda_plan_pieces(
        &p, t.c,
        env_int("RETNET_CUDA_RET_CHUNK", rn_cuda_ret_piece_default(t.c, p.max_chunk), 0, 1 << 30));
    cudaError_t e = cudaMemGetInfo(&free_b, &total_b);
    if (e != cudaSuccess)
        return cuda_fail(err, e, "cannot query device memory");
    *slots = rn_cuda_slots_for_device(free_b, fraction, t.wused + (p.total_bytes - p.pool_bytes),
                                      p.state_bytes, sizeof(float) * (size_t)t.c->vocab_size);
    if (*slots < 1)
        return rn_error_set(err, RN_ENOMEM,
                            "cuda backend: no %zu-byte state fits next to %zu MiB of weights in "
                            "%.0f%% of the %zu MiB free",
                            p.state_bytes, t.wused >> 20, fraction * 100.0, free_b >> 20);
    return RN_OK;
}

/* Page-locked, so the logits' device-to-host copy is a DMA at the bus's
 * rate instead of a staged copy through a driver buffer. */
static void *cuda_host_alloc(void *ctx, size_t bytes)
{
    void *p = NULL;
    (void)ctx;
    return cudaMallocHost(&p, bytes) == cudaSuccess ? p : NULL;
}

static void cuda_host_free(void *ctx, void *p)
{
    (void)ctx;
    cudaFreeHost(p);
}

static int cuda_lost(void *ctx)
{
    return ((cuda_ctx *)ctx)->broken;
}

extern "C" const rn_backend_ops rn_cuda_backend = {
    "cuda",           cuda_probe,         cuda_init,         cuda_deinit,
    cuda_state_bytes, cuda_slot_bytes,    cuda_state_reset,  cuda_state_copy,
    cuda_state_pos,   cuda_state_export,  cuda_state_import, cuda_prefill,
    cuda_decode,      cuda_decode_argmax, cuda_decode_top,   cuda_top_batch,
    cuda_decode_rows, cuda_device_memory, cuda_host_alloc,   cuda_host_free,
    cuda_fit_slots,   cuda_lost,
};
