/*
 * backend_cpu.c -- the reference backend: plain C + OpenBLAS + a thread pool.
 *
 * One forward routine runs n token rows through the model in one of three
 * modes: DECODE (each row a different slot, one recurrent step each),
 * CHUNK (consecutive tokens of one slot, chunkwise retention) and PARALLEL
 * (a whole sequence of one empty slot).  States live in one host array,
 * n_slots x state size, allocated at init.
 *
 * Threads: the pool (opts.n_threads, including the caller) and OpenBLAS's
 * own threads, set to the same count.  Nothing runs between calls.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cblas.h>

#include "../backend.h"
#include "../rn_math.h"
#include "../util.h"
#include "ops.h"
#include "packed.h"
#include "pool.h"
#include "retention.h"

#define MAX_HEAD_DIM 1024

typedef enum { RUN_DECODE, RUN_CHUNK, RUN_PARALLEL } run_mode;

/* Decode-layout copies of one block's matrices (packed.h). */
typedef struct {
    rn_packed q, k, v, g, o, up, gate, down;
} layer_packed;

typedef struct cpu_ctx {
    const rn_config *c;
    const rn_weights *w;
    int n_slots, max_chunk;
    size_t layer_vals; /* H*dk*dv (+H) floats per layer */
    size_t slot_vals;  /* L * layer_vals */
    float *states;     /* n_slots * slot_vals */
    int64_t *pos;      /* tokens consumed per slot */
    double *log_gamma; /* (H) */
    float *freq;       /* (dk) rotary frequency per feature */
    rn_pool *pool;
    rn_cpu_ops_ctx ops;
    layer_packed *lp; /* (L) */
    rn_packed lm_head;
    /* per-row scratch, cap_rows rows each */
    int cap_rows;
    float *x, *hn, *q, *k, *v, *g, *o, *f1, *f2, *y, *ret;
    float *rope; /* rotary cosines and sines per row (rn__rope_table), once per forward */
    long ret_len;
    long long *rowpos;
} cpu_ctx;

/* --------------------------------------------------------------- scratch */

static void free_rows(cpu_ctx *x)
{
    float **bufs[] = {&x->x, &x->hn, &x->q,  &x->k, &x->v,   &x->g,
                      &x->o, &x->f1, &x->f2, &x->y, &x->ret, &x->rope};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        free(*bufs[i]);
        *bufs[i] = NULL;
    }
    free(x->rowpos);
    x->rowpos = NULL;
    x->cap_rows = 0;
}

/* Threads that run heads' prefill retention side by side: each owns a
 * retention scratch (a parallel form's is t^2 floats, so not one per head). */
static int prefill_lanes(const cpu_ctx *x)
{
    int t = x->ops.blas_lanes, h = x->c->n_heads;
    return t < h ? t : h;
}

/* Grows the row scratch to hold n rows (and retention scratch for n tokens).
 * Only the parallel form and chunks above max_chunk ever grow it after init. */
static int ensure_rows(cpu_ctx *x, int n, int parallel)
{
    const rn_config *c = x->c;
    long need_ret = parallel ? rn__retention_parallel_scratch(n, c->head_dim_k)
                             : rn__retention_chunk_scratch(n, c->head_dim_k);
    if (n <= x->cap_rows && need_ret <= x->ret_len)
        return RN_OK;
    int rows = n > x->cap_rows ? n : x->cap_rows;
    long ret_len = need_ret > x->ret_len ? need_ret : x->ret_len;
    free_rows(x);
    size_t r = (size_t)rows, D = (size_t)c->hidden_size, K = (size_t)c->key_dim,
           V = (size_t)c->value_dim, F = (size_t)c->intermediate_size;
    x->x = malloc(r * D * 4);
    x->hn = malloc(r * D * 4);
    x->y = malloc(r * D * 4);
    x->q = malloc(r * K * 4);
    x->k = malloc(r * K * 4);
    x->v = malloc(r * V * 4);
    x->g = malloc(r * V * 4);
    x->o = malloc(r * V * 4);
    x->f1 = malloc(r * F * 4);
    x->f2 = malloc(r * F * 4);
    x->ret = malloc((size_t)ret_len * (size_t)prefill_lanes(x) * 4); /* one scratch per lane */
    x->rowpos = malloc(r * sizeof *x->rowpos);
    x->rope = malloc(r * 2 * (size_t)c->head_dim_k * 4);
    if (!x->x || !x->hn || !x->y || !x->q || !x->k || !x->v || !x->g || !x->o || !x->f1 || !x->f2 ||
        !x->ret || !x->rowpos || !x->rope) {
        free_rows(x);
        return RN_ENOMEM;
    }
    x->cap_rows = rows;
    x->ret_len = ret_len;
    return RN_OK;
}

/* --------------------------------------------------------------- state */

static float *layer_state(cpu_ctx *x, int slot, int l)
{
    return x->states + (size_t)slot * x->slot_vals + (size_t)l * x->layer_vals;
}

static float *layer_scale(cpu_ctx *x, int slot, int l)
{
    if (x->c->retention_norm != RN_RETNORM_TORCHSCALE)
        return NULL;
    const rn_config *c = x->c;
    return layer_state(x, slot, l) +
           (size_t)c->n_heads * (size_t)c->head_dim_k * (size_t)c->head_dim_v;
}

/* ------------------------------------------------------------- forward */

/* Prefill chunks of at most this many rows use the decode copy of the
 * weights too: it is the copy that decode keeps in cache, while sgemm would
 * stream the checkpoint's layout through the same cache (the short prompts
 * that arrive while others decode), and at a few rows the panels' kernel
 * is as fast as sgemm. */
#define PACKED_MAX_ROWS 16

static int use_packed(run_mode mode, int n)
{
    return mode == RUN_DECODE || n <= PACKED_MAX_ROWS;
}

/* Decode and short chunks use the packed copy, longer prefill chunks sgemm. */
static void linear(cpu_ctx *x, run_mode mode, float *y, const float *in, int n, const rn_tensor *W,
                   const rn_tensor *b, const rn_packed *P)
{
    if (use_packed(mode, n)) {
        rn_packed_out o = {y, P, b ? b->data : NULL, NULL};
        rn__linear_packed(x->pool, &o, 1, in, n);
    } else {
        rn__linear_gemm(&x->ops, y, in, n, W, b);
    }
}

static void embed(cpu_ctx *x, const int32_t *tok, int n)
{
    const rn_config *c = x->c;
    const rn_tensor *E = &x->w->embed;
    size_t D = (size_t)c->hidden_size, esz = rn_dtype_size(E->dtype);
    for (int i = 0; i < n; i++) {
        float *row = x->x + (size_t)i * D;
        rn_to_f32(row, (const char *)E->data + (size_t)tok[i] * D * esz, E->dtype, D);
        if (c->embed_scale != 1.0f)
            for (size_t d = 0; d < D; d++)
                row[d] *= c->embed_scale;
    }
    if (c->embed_norm)
        rn__norm(x->x, x->x, n, c->hidden_size, c->norm_kind, x->w->embed_norm_w.data, NULL,
                 c->norm_eps);
}

typedef struct {
    cpu_ctx *x;
    const int *slots;
    int layer;
} step_job;

static rn_head_io head_io(cpu_ctx *x, int row0, int h, int slot, int l)
{
    const rn_config *c = x->c;
    size_t dk = (size_t)c->head_dim_k, dv = (size_t)c->head_dim_v, H = (size_t)c->n_heads;
    float *sc = layer_scale(x, slot, l);
    rn_head_io io = {
        .q = x->q + (size_t)row0 * H * dk + (size_t)h * dk,
        .k = x->k + (size_t)row0 * H * dk + (size_t)h * dk,
        .v = x->v + (size_t)row0 * H * dv + (size_t)h * dv,
        .o = x->o + (size_t)row0 * H * dv + (size_t)h * dv,
        .qk_stride = (int)(H * dk),
        .v_stride = (int)(H * dv),
        .o_stride = (int)(H * dv),
        .S = layer_state(x, slot, l) + (size_t)h * dk * dv,
        .s = sc ? sc + h : NULL,
        .log_gamma = x->log_gamma[h],
        .dk = (int)dk,
        .dv = (int)dv,
    };
    return io;
}

static void step_task(void *ctx, int i)
{
    const step_job *j = ctx;
    int H = j->x->c->n_heads, row = i / H, h = i % H;
    rn_head_io io = head_io(j->x, row, h, j->slots[row], j->layer);
    rn__retention_step(&io);
}

/* Lane i of a prompt's retention (chunkwise or parallel): heads i, i +
 * lanes, ... in lane i's scratch.  Heads are independent, so the pool runs
 * the lanes side by side with single-threaded sgemm inside. */
typedef struct {
    cpu_ctx *x;
    run_mode mode;
    int slot, n, layer, ts_clamp, lanes;
} prefill_job;

static void prefill_task(void *ctx, int lane)
{
    const prefill_job *j = ctx;
    float *scratch = j->x->ret + (size_t)lane * (size_t)j->x->ret_len;
    for (int h = lane; h < j->x->c->n_heads; h += j->lanes) {
        rn_head_io io = head_io(j->x, 0, h, j->slot, j->layer);
        if (j->mode == RUN_CHUNK)
            rn__retention_chunk(&io, j->n, scratch);
        else
            rn__retention_parallel(&io, j->n, j->ts_clamp, scratch);
    }
}

static void retention(cpu_ctx *x, run_mode mode, const int *slots, int n, int l, int ts_clamp)
{
    const rn_config *c = x->c;
    if (mode == RUN_DECODE) {
        step_job j = {x, slots, l};
        size_t work =
            (size_t)n * (size_t)c->n_heads * (size_t)c->head_dim_k * (size_t)c->head_dim_v;
        if (work < ((size_t)1 << 18)) /* small states: waking the pool costs more than the work */
            for (int i = 0; i < n * c->n_heads; i++)
                step_task(&j, i);
        else
            rn__pool_run(x->pool, n * c->n_heads, step_task, &j);
        return;
    }
    prefill_job j = {x, mode, slots[0], n, l, ts_clamp, prefill_lanes(x)};
    rn__pool_run(x->pool, j.lanes, prefill_task, &j);
}

static void qkv_prepare(cpu_ctx *x, int n)
{
    const rn_config *c = x->c;
    size_t nk = (size_t)n * (size_t)c->key_dim;
    float sc = (float)(1.0 / sqrt((double)c->head_dim_k));
    float *scaled = c->qk_scale == RN_QKSCALE_K ? x->k : x->q;
    for (size_t i = 0; i < nk; i++)
        scaled[i] *= sc;
    if (c->position == RN_POS_ROTARY) {
        int il = c->rope_layout == RN_ROPE_INTERLEAVED;
        rn__rope(x->q, n, c->n_heads, c->head_dim_k, x->rope, il);
        rn__rope(x->k, n, c->n_heads, c->head_dim_k, x->rope, il);
    }
}

/* x->y = retention block output for input rows `in`. */
static void retention_block(cpu_ctx *x, run_mode mode, const int *slots, const float *in, int n,
                            int l, int ts_clamp)
{
    const rn_config *c = x->c;
    const rn_layer_weights *lw = &x->w->layers[l];
    const layer_packed *lp = &x->lp[l];
    if (use_packed(mode, n)) { /* the four share their input: one parallel run */
        rn_packed_out o[4] = {{x->q, &lp->q, lw->q_b.data, NULL},
                              {x->k, &lp->k, lw->k_b.data, NULL},
                              {x->v, &lp->v, lw->v_b.data, NULL},
                              {x->g, &lp->g, lw->g_b.data, NULL}};
        rn__linear_packed(x->pool, o, 4, in, n);
    } else {
        linear(x, mode, x->q, in, n, &lw->q_w, &lw->q_b, &lp->q);
        linear(x, mode, x->k, in, n, &lw->k_w, &lw->k_b, &lp->k);
        linear(x, mode, x->v, in, n, &lw->v_w, &lw->v_b, &lp->v);
        linear(x, mode, x->g, in, n, &lw->g_w, &lw->g_b, &lp->g);
    }
    qkv_prepare(x, n);
    retention(x, mode, slots, n, l, ts_clamp);
    rn__group_norm(x->o, n, c->n_heads, c->head_dim_v, c->group_norm_kind, c->group_norm_eps,
                   c->group_norm_affine ? lw->gn_w.data : NULL);
    rn__gate(x->o, x->g, (size_t)n * (size_t)c->value_dim, c->gate_act);
    linear(x, mode, x->y, x->o, n, &lw->o_w, &lw->o_b, &lp->o);
}

static void ffn_block(cpu_ctx *x, run_mode mode, const float *in, int n, int l)
{
    const rn_config *c = x->c;
    const rn_layer_weights *lw = &x->w->layers[l];
    size_t nf = (size_t)n * (size_t)c->intermediate_size;
    const layer_packed *lp = &x->lp[l];
    int packed = use_packed(mode, n);
    if (c->ffn_kind == RN_FFN_GLU && packed) {
        rn_packed_out o[2] = {{x->f1, &lp->up, lw->up_b.data, NULL},
                              {x->f2, &lp->gate, lw->gate_b.data, NULL}};
        rn__linear_packed(x->pool, o, 2, in, n);
    } else if (packed) { /* the activation runs in the workers, per panel */
        rn_packed_out o = {x->f1, &lp->up, lw->up_b.data, &c->hidden_act};
        rn__linear_packed(x->pool, &o, 1, in, n);
    } else {
        linear(x, mode, x->f1, in, n, &lw->up_w, &lw->up_b, &lp->up);
        if (c->ffn_kind == RN_FFN_GLU)
            linear(x, mode, x->f2, in, n, &lw->gate_w, &lw->gate_b, &lp->gate);
    }
    if (c->ffn_kind == RN_FFN_GLU)
        rn__gate(x->f1, x->f2, nf, c->hidden_act); /* up * act(gate) */
    else if (!packed)
        rn__act(x->f1, nf, c->hidden_act);
    linear(x, mode, x->y, x->f1, n, &lw->down_w, &lw->down_b, &lp->down);
}

/* Adds branch output x->y into the residual stream per the norm position. */
static void residual(cpu_ctx *x, int n, const rn_tensor *nw, const rn_tensor *nb)
{
    const rn_config *c = x->c;
    size_t nd = (size_t)n * (size_t)c->hidden_size;
    if (c->norm_position == RN_NORMPOS_POST)
        rn__norm(x->y, x->y, n, c->hidden_size, c->norm_kind, nw->data, nb->data, c->norm_eps);
    for (size_t i = 0; i < nd; i++)
        x->x[i] = x->x[i] * c->residual_alpha + x->y[i];
    if (c->norm_position == RN_NORMPOS_DEEPNORM)
        rn__norm(x->x, x->x, n, c->hidden_size, c->norm_kind, nw->data, nb->data, c->norm_eps);
}

static const float *block_input(cpu_ctx *x, int n, const rn_tensor *nw, const rn_tensor *nb)
{
    const rn_config *c = x->c;
    if (c->norm_position != RN_NORMPOS_PRE)
        return x->x;
    rn__norm(x->hn, x->x, n, c->hidden_size, c->norm_kind, nw->data, nb->data, c->norm_eps);
    return x->hn;
}

static void output_logits(cpu_ctx *x, run_mode mode, int n, int all, float *logits)
{
    const rn_config *c = x->c;
    const rn_weights *w = x->w;
    int first = (all || mode == RUN_DECODE) ? 0 : n - 1, m = n - first;
    const float *h = x->x + (size_t)first * (size_t)c->hidden_size;
    if (c->final_norm) {
        rn__norm(x->hn, h, m, c->hidden_size, c->norm_kind, w->final_norm_w.data,
                 w->final_norm_b.data, c->norm_eps);
        h = x->hn;
    }
    linear(x, mode, logits, h, m, &w->lm_head_w, &w->lm_head_b, &x->lm_head);
}

static void set_positions(cpu_ctx *x, run_mode mode, const int *slots, int n)
{
    for (int i = 0; i < n; i++)
        x->rowpos[i] =
            mode == RUN_DECODE ? (long long)x->pos[slots[i]] : (long long)x->pos[slots[0]] + i;
}

static void forward(cpu_ctx *x, run_mode mode, const int *slots, const int32_t *tok, int n,
                    int ts_clamp, int logits_all, float *logits)
{
    const rn_config *c = x->c;
    set_positions(x, mode, slots, n);
    if (c->position == RN_POS_ROTARY)
        rn__rope_table(x->rope, n, c->head_dim_k, x->rowpos, x->freq);
    embed(x, tok, n);
    for (int l = 0; l < c->n_layers; l++) {
        const rn_layer_weights *lw = &x->w->layers[l];
        retention_block(x, mode, slots, block_input(x, n, &lw->norm1_w, &lw->norm1_b), n, l,
                        ts_clamp);
        residual(x, n, &lw->norm1_w, &lw->norm1_b);
        ffn_block(x, mode, block_input(x, n, &lw->norm2_w, &lw->norm2_b), n, l);
        residual(x, n, &lw->norm2_w, &lw->norm2_b);
    }
    if (mode == RUN_DECODE)
        for (int i = 0; i < n; i++)
            x->pos[slots[i]]++;
    else
        x->pos[slots[0]] += n;
    if (logits)
        output_logits(x, mode, n, logits_all, logits);
}

/* ------------------------------------------------------------ interface */

static int cpu_probe(rn_error *err)
{
    (void)err;
    return RN_OK;
}

static void free_packed(cpu_ctx *x)
{
    for (int l = 0; x->lp && l < x->c->n_layers; l++) {
        rn_packed *m = &x->lp[l].q;
        for (size_t i = 0; i < sizeof(layer_packed) / sizeof(rn_packed); i++)
            rn__packed_free(&m[i]);
    }
    free(x->lp);
    x->lp = NULL;
    rn__packed_free(&x->lm_head);
}

/* Decode-layout copies of every matrix a decode step reads. */
static int pack_weights(cpu_ctx *x)
{
    const rn_config *c = x->c;
    x->lp = calloc((size_t)c->n_layers, sizeof *x->lp);
    if (!x->lp)
        return RN_ENOMEM;
    for (int l = 0; l < c->n_layers; l++) {
        const rn_layer_weights *w = &x->w->layers[l];
        layer_packed *p = &x->lp[l];
        int rc = 0;
        rc |= rn__pack(&p->q, &w->q_w) | rn__pack(&p->k, &w->k_w) | rn__pack(&p->v, &w->v_w);
        rc |= rn__pack(&p->g, &w->g_w) | rn__pack(&p->o, &w->o_w) | rn__pack(&p->up, &w->up_w);
        rc |= rn__pack(&p->down, &w->down_w);
        if (c->ffn_kind == RN_FFN_GLU)
            rc |= rn__pack(&p->gate, &w->gate_w);
        if (rc)
            return RN_ENOMEM;
    }
    return rn__pack(&x->lm_head, &x->w->lm_head_w);
}

static void cpu_deinit(void *ctx)
{
    cpu_ctx *x = ctx;
    if (!x)
        return;
    free_packed(x);
    free_rows(x);
    rn__pool_free(x->pool);
    free(x->ops.wbuf);
    free(x->states);
    free(x->pos);
    free(x->log_gamma);
    free(x->freq);
    free(x);
}

static size_t max_matrix(const rn_config *c, const rn_weights *w)
{
    size_t m = 0;
    const rn_tensor *all[] = {&w->lm_head_w};
    for (size_t i = 0; i < 1; i++)
        if (all[i]->dtype != RN_DT_F32 && (size_t)all[i]->numel > m)
            m = (size_t)all[i]->numel;
    for (int l = 0; l < c->n_layers; l++) {
        const rn_layer_weights *lw = &w->layers[l];
        const rn_tensor *t[] = {&lw->q_w, &lw->k_w,  &lw->v_w,    &lw->g_w,
                                &lw->o_w, &lw->up_w, &lw->gate_w, &lw->down_w};
        for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
            if (t[i]->data && t[i]->dtype != RN_DT_F32 && (size_t)t[i]->numel > m)
                m = (size_t)t[i]->numel;
    }
    return m;
}

static int init_tables(cpu_ctx *x)
{
    const rn_config *c = x->c;
    x->log_gamma = malloc(sizeof(double) * (size_t)c->n_heads);
    x->freq = malloc(sizeof(float) * (size_t)c->head_dim_k);
    if (!x->log_gamma || !x->freq)
        return RN_ENOMEM;
    for (int h = 0; h < c->n_heads; h++)
        x->log_gamma[h] = rn_log_decay(c->decay == RN_DECAY_LINSPACE, h, c->n_heads);
    for (int i = 0; i < c->head_dim_k; i++)
        x->freq[i] = x->w->rope_freq.data ? ((const float *)x->w->rope_freq.data)[i]
                                          : rn_rope_frequency(c->rope_layout == RN_ROPE_INTERLEAVED,
                                                              c->rope_freq == RN_FREQ_LINSPACE,
                                                              c->rope_theta, i, c->head_dim_k);
    return RN_OK;
}

static int cpu_init(void **out, const rn_model *m, const rn_engine_opts *o, rn_error *err)
{
    int rc;
    cpu_ctx *x = calloc(1, sizeof *x);
    *out = NULL;
    if (!x)
        return rn_error_set(err, RN_ENOMEM, "out of memory");
    x->c = rn_model_config(m);
    x->w = rn_model_weights(m);
    const rn_config *c = x->c;
    if (o->state_bf16) {
        rc = rn_error_set(err, RN_EUNSUPPORTED,
                          "cpu backend: states are fp32 here (bf16 states are a CUDA option)");
        goto fail;
    }
    if (c->head_dim_k > MAX_HEAD_DIM || c->head_dim_v > MAX_HEAD_DIM) {
        rc = rn_error_set(err, RN_EUNSUPPORTED, "cpu backend: head dims above %d", MAX_HEAD_DIM);
        goto fail;
    }
    x->n_slots = o->n_slots;
    x->max_chunk = o->max_chunk;
    int threads = rn_cpu_threads(o->n_threads);
    x->layer_vals = (size_t)c->n_heads * (size_t)c->head_dim_k * (size_t)c->head_dim_v +
                    (c->retention_norm == RN_RETNORM_TORCHSCALE ? (size_t)c->n_heads : 0);
    x->slot_vals = x->layer_vals * (size_t)c->n_layers;
    x->states = calloc((size_t)x->n_slots * x->slot_vals, sizeof(float));
    if (x->states) /* every step reads and writes each running state, like the weights;
                    * calloc's pages stay unbacked until a slot is used */
        rn__huge_pages_hint(x->states, (size_t)x->n_slots * x->slot_vals * sizeof(float));
    x->pos = calloc((size_t)x->n_slots, sizeof *x->pos);
    x->ops.wbuf_len = max_matrix(c, x->w);
    x->ops.wbuf = x->ops.wbuf_len ? malloc(x->ops.wbuf_len * sizeof(float)) : NULL;
    if (!x->states || !x->pos || (x->ops.wbuf_len && !x->ops.wbuf)) {
        rc = rn_error_set(err, RN_ENOMEM, "cpu backend: cannot allocate %d states of %zu bytes",
                          x->n_slots, x->slot_vals * 4);
        goto fail;
    }
    int rows = x->max_chunk > x->n_slots ? x->max_chunk : x->n_slots;
    /* the pool first: the retention scratch is sized by its thread count */
    if ((rc = rn__pool_new(&x->pool, threads)) == RN_OK) {
        x->ops.pool = x->pool;
        x->ops.blas_lanes = openblas_get_parallel() == 2 ? 1 : rn__pool_threads(x->pool);
        /* the pool parallelises around single-threaded sgemm calls (ops.c);
         * an OpenMP build, called from one thread, threads them itself */
        openblas_set_num_threads(x->ops.blas_lanes == 1 ? threads : 1);
    }
    if (rc || (rc = init_tables(x)) || (rc = ensure_rows(x, rows, 0)) || (rc = pack_weights(x))) {
        rn_error_set(err, rc, "cpu backend: %s", rn_strerror(rc));
        goto fail;
    }
    *out = x;
    return RN_OK;
fail:
    cpu_deinit(x);
    return rc;
}

static size_t cpu_state_bytes(void *ctx)
{
    return ((cpu_ctx *)ctx)->slot_vals * sizeof(float);
}

static int cpu_state_reset(void *ctx, int slot)
{
    cpu_ctx *x = ctx;
    memset(layer_state(x, slot, 0), 0, x->slot_vals * sizeof(float));
    x->pos[slot] = 0;
    return RN_OK;
}

static int cpu_state_copy(void *ctx, int dst, int src)
{
    cpu_ctx *x = ctx;
    if (dst != src)
        memcpy(layer_state(x, dst, 0), layer_state(x, src, 0), x->slot_vals * sizeof(float));
    x->pos[dst] = x->pos[src];
    return RN_OK;
}

static int64_t cpu_state_pos(void *ctx, int slot)
{
    return ((cpu_ctx *)ctx)->pos[slot];
}

static int cpu_state_export(void *ctx, int slot, float *host, size_t nbytes)
{
    cpu_ctx *x = ctx;
    memcpy(host, layer_state(x, slot, 0), nbytes);
    return RN_OK;
}

static int cpu_state_import(void *ctx, int slot, const float *host, size_t nbytes, int64_t pos)
{
    cpu_ctx *x = ctx;
    memcpy(layer_state(x, slot, 0), host, nbytes);
    x->pos[slot] = pos;
    return RN_OK;
}

static int cpu_prefill(void *ctx, int slot, const int32_t *tok, int n, const rn_prefill_opts *o,
                       float *logits)
{
    cpu_ctx *x = ctx;
    size_t V = (size_t)x->c->vocab_size;
    int all = o->logits == RN_LOGITS_ALL, rc;
    if (o->form == RN_FORM_RECURRENT) {
        for (int i = 0; i < n; i++) {
            float *lg = !logits ? NULL
                        : all   ? logits + (size_t)i * V
                                : (i == n - 1 ? logits : NULL);
            forward(x, RUN_DECODE, &slot, tok + i, 1, 0, 1, lg);
        }
        return RN_OK;
    }
    if (o->form == RN_FORM_PARALLEL) {
        if (x->pos[slot] != 0)
            return RN_EINVAL;
        if ((rc = ensure_rows(x, n, 1)) != RN_OK)
            return rc;
        forward(x, RUN_PARALLEL, &slot, tok, n, o->ts_clamp, all, logits);
        return RN_OK;
    }
    int chunk = o->chunk > 0 ? o->chunk : x->max_chunk;
    if ((rc = ensure_rows(x, chunk < n ? chunk : n, 0)) != RN_OK)
        return rc;
    for (int i0 = 0; i0 < n; i0 += chunk) {
        int m = n - i0 < chunk ? n - i0 : chunk;
        float *lg = !logits ? NULL : all ? logits + (size_t)i0 * V : (i0 + m == n ? logits : NULL);
        forward(x, RUN_CHUNK, &slot, tok + i0, m, 0, all, lg);
    }
    return RN_OK;
}

static int cpu_decode(void *ctx, const int *slots, const int32_t *tok, int n, float *logits)
{
    cpu_ctx *x = ctx;
    int rc = ensure_rows(x, n, 0);
    if (rc != RN_OK)
        return rc;
    forward(x, RUN_DECODE, slots, tok, n, 0, 1, logits);
    return RN_OK;
}

const rn_backend_ops rn_cpu_backend = {
    .name = "cpu",
    .probe = cpu_probe,
    .init = cpu_init,
    .deinit = cpu_deinit,
    .state_bytes = cpu_state_bytes,
    .state_reset = cpu_state_reset,
    .state_copy = cpu_state_copy,
    .state_pos = cpu_state_pos,
    .state_export = cpu_state_export,
    .state_import = cpu_state_import,
    .prefill = cpu_prefill,
    .decode = cpu_decode,
};
