/*
 * plan.c -- see plan.h.  Plain C: compiled into every build, CUDA or not.
 */
#include <stdint.h>

#include "../sampler.h"
#include "plan.h"
#include "tc_layout.h"

/* a * b, or 0 with *ovf set when it does not fit in size_t */
static size_t mul(size_t a, size_t b, int *ovf)
{
    if (a && b > SIZE_MAX / a) {
        *ovf = 1;
        return 0;
    }
    return a * b;
}

static size_t add(size_t a, size_t b, int *ovf)
{
    if (b > SIZE_MAX - a) {
        *ovf = 1;
        return 0;
    }
    return a + b;
}

static size_t align256(size_t n, int *ovf)
{
    return add(n, 255, ovf) & ~(size_t)255;
}

size_t rn_cuda_widest_input(const rn_config *c)
{
    size_t D = (size_t)c->hidden_size, V = (size_t)c->value_dim, F = (size_t)c->intermediate_size;
    size_t w = D > V ? D : V;
    return w > F ? w : F;
}

/* Bytes of the activation buffers for R rows, each buffer on 256 bytes (as
 * cuBLASLt assumes): x, hn, y (D); q, k (H*dk); v, g, o (H*dv); f1, f2 (F);
 * then the half-precision copy of the widest GEMM input (D, H*dv or F) and
 * one of F (the folded GLU writes its output rounded there while the first
 * holds its input). */
static size_t act_bytes(const rn_config *c, size_t R, int *ovf)
{
    size_t D = (size_t)c->hidden_size, K = (size_t)c->key_dim, V = (size_t)c->value_dim;
    size_t F = (size_t)c->intermediate_size;
    size_t widths[] = {D, D, D, K, K, V, V, V, F, F};
    size_t widest = rn_cuda_widest_input(c), total = 0;
    for (size_t i = 0; i < sizeof widths / sizeof widths[0]; i++)
        total = add(total, align256(mul(mul(R, widths[i], ovf), 4, ovf), ovf), ovf);
    total = add(total, align256(mul(mul(R, widest, ovf), 2, ovf), ovf), ovf);
    return add(total, align256(mul(mul(R, F, ovf), 2, ovf), ovf), ovf);
}

/* rn_cuda_chunk_offsets, *ovf set when a size does not fit in size_t. */
static void chunk_offsets(const rn_config *c, size_t C, size_t off[5], int *ovf)
{
    size_t H = (size_t)c->n_heads, dk = (size_t)c->head_dim_k;
    size_t parts[5] = {mul(H, mul(C, C, ovf), ovf), mul(H, mul(C, dk, ovf), ovf),
                       mul(H, mul(C, dk, ovf), ovf), mul(H, C + 2, ovf), mul(H, C, ovf)};
    size_t at = 0;
    for (int i = 0; i < 5; i++) {
        at = add(at, align256(mul(parts[i], sizeof(float), ovf), ovf) / sizeof(float), ovf);
        off[i] = at;
    }
}

void rn_cuda_chunk_offsets(const rn_config *c, size_t C, size_t off[5])
{
    int ovf = 0;
    chunk_offsets(c, C, off, &ovf);
}

/* A (H C C) + qd, kd (H C dk) + two tables of decay powers (H (C+2) in all:
 * the retention pieces' and the tail's) + running sums (H C), each part on
 * 256 bytes */
static size_t chunk_floats(const rn_config *c, size_t C, int *ovf)
{
    size_t off[5];
    chunk_offsets(c, C, off, ovf);
    return off[4];
}

rn_cuda_step_in rn_cuda_step_in_layout(int n)
{
    size_t r = n > 0 ? (size_t)n : 0;
    rn_cuda_step_in L;
    L.pos = 0; /* first: the int64s stay 8-byte aligned for any n */
    L.tok = L.pos + r * sizeof(int64_t);
    L.slots = L.tok + r * sizeof(int32_t);
    L.temps = L.slots + r * sizeof(int);
    L.bytes = L.temps + r * sizeof(float);
    return L;
}

size_t rn_cuda_top_rows_bytes(int max_batch)
{
    int ovf = 0;
    return align256(mul((size_t)max_batch, sizeof(rn_row_top), &ovf), &ovf);
}

int rn_cuda_plan_make(rn_cuda_plan *p, const rn_config *c, int n_slots, int max_chunk,
                      int state_bf16, rn_error *err)
{
    int ovf = 0;
    if (n_slots < 1 || max_chunk < 1)
        return rn_error_set(err, RN_EINVAL, "cuda plan: %d slots, chunk %d (both must be >= 1)",
                            n_slots, max_chunk);
    if (state_bf16 && c->retention_norm == RN_RETNORM_TORCHSCALE)
        return rn_error_set(err, RN_EUNSUPPORTED,
                            "cuda plan: bf16 states are not offered for torchscale's retention "
                            "normaliser (its running sums need fp32)");
    *p = (rn_cuda_plan){0};
    size_t hkv =
        mul((size_t)c->n_heads, mul((size_t)c->head_dim_k, (size_t)c->head_dim_v, &ovf), &ovf);
    p->layer_vals =
        add(hkv, c->retention_norm == RN_RETNORM_TORCHSCALE ? (size_t)c->n_heads : 0, &ovf);
    p->state_vals = mul(p->layer_vals, (size_t)c->n_layers, &ovf);
    p->state_bf16 = state_bf16 != 0;
    p->export_bytes = mul(p->state_vals, sizeof(float), &ovf);
    p->state_bytes = mul(p->state_vals, state_bf16 ? 2 : sizeof(float), &ovf);
    p->layer_scratch_bytes = state_bf16 ? align256(mul(p->layer_vals, 4, &ovf), &ovf) : 0;
    p->n_slots = n_slots;
    p->max_chunk = max_chunk;
    p->max_batch = n_slots < RN_CUDA_MAX_BATCH ? n_slots : RN_CUDA_MAX_BATCH;
    p->max_rows = max_chunk > p->max_batch ? max_chunk : p->max_batch;
    p->act_bytes = act_bytes(c, (size_t)p->max_rows, &ovf);
    p->chunk_bytes = mul(chunk_floats(c, (size_t)max_chunk, &ovf), sizeof(float), &ovf);
    p->step_bytes = mul(mul((size_t)RN_CUDA_STEP_SPLIT_MAX * 4, (size_t)p->max_batch, &ovf),
                        (size_t)c->value_dim, &ovf);
    p->logits_bytes =
        mul(mul((size_t)p->max_rows, (size_t)c->vocab_size, &ovf), sizeof(float), &ovf);
    p->top_bytes = add(rn_cuda_top_rows_bytes(p->max_batch),
                       align256(rn_cuda_step_in_layout(p->max_batch).bytes, &ovf), &ovf);
    p->pool_bytes = mul((size_t)n_slots, p->state_bytes, &ovf);
    size_t t = add(add(p->act_bytes, p->chunk_bytes, &ovf), p->step_bytes, &ovf);
    t = add(t, add(p->layer_scratch_bytes, p->top_bytes, &ovf), &ovf);
    t = add(t, add(p->logits_bytes, p->pool_bytes, &ovf), &ovf);
    p->total_bytes = add(t, RN_CUDA_LT_WORKSPACE, &ovf);
    if (ovf)
        return rn_error_set(err, RN_EINVAL,
                            "cuda plan: %d slots with chunk %d overflow the address space", n_slots,
                            max_chunk);
    return RN_OK;
}

int rn_cuda_ret_piece_default(const rn_config *c, int max_chunk)
{
    if (c->retention_norm == RN_RETNORM_TORCHSCALE)
        return 0; /* its pieces run one after another, which did not pay */
    return max_chunk >= 2048 ? 512 : 256;
}

void rn_cuda_plan_pieces(rn_cuda_plan *p, const rn_config *c, int piece)
{
    int ovf = 0, P = piece > 0 && piece < p->max_chunk ? piece : 0;
    int n = P && p->max_chunk / P >= 2 ? p->max_chunk / P : 0;
    size_t pairs = mul((size_t)n, (size_t)c->n_heads, &ovf);
    size_t hkv = mul((size_t)c->head_dim_k, (size_t)c->head_dim_v, &ovf);
    size_t bytes = 0;
    if (n) {
        size_t array = align256(mul(pairs, sizeof(void *), &ovf), &ovf);
        bytes = align256(mul(mul(pairs, hkv, &ovf), sizeof(float), &ovf), &ovf);
        bytes = add(bytes, mul(RN_CUDA_PIECE_ARRAYS, array, &ovf), &ovf);
    }
    size_t total = add(p->total_bytes - p->pieces_bytes, bytes, &ovf);
    if (ovf)
        return; /* not for any plan rn_cuda_plan_make accepts: the pieces fit in a chunk */
    p->ret_piece = P, p->pieces = n, p->pieces_bytes = bytes, p->total_bytes = total;
}

int rn_cuda_slots_for_budget(size_t budget, size_t state_bytes)
{
    if (state_bytes == 0)
        return 0;
    size_t n = budget / state_bytes;
    return n > (size_t)INT32_MAX ? INT32_MAX : (int)n;
}

int rn_cuda_slots_for_device(size_t free_bytes, double fraction, size_t fixed_bytes,
                             size_t state_bytes, size_t logits_row_bytes)
{
    double usable = (double)free_bytes * fraction - (double)fixed_bytes;
    if (state_bytes == 0 || usable < (double)state_bytes)
        return 0;
    double n = usable / (double)state_bytes;
    if (logits_row_bytes && n > (double)RN_CUDA_AUTO_LOGITS_BYTES / (double)logits_row_bytes)
        n = (double)RN_CUDA_AUTO_LOGITS_BYTES / (double)logits_row_bytes;
    return n > (double)(1 << 20) ? 1 << 20 : (int)n;
}

rn_cuda_step_shape rn_cuda_step_plan(const rn_config *c, int n, int n_sms)
{
    int H = c->n_heads, dk = c->head_dim_k, dv = c->head_dim_v;
    /* a layer's values (H blocks of dk x dv, then torchscale's H values of s)
     * and a slot's must keep every block on 16 bytes for float4 */
    size_t layer = (size_t)H * (size_t)dk * (size_t)dv +
                   (c->retention_norm == RN_RETNORM_TORCHSCALE ? (size_t)H : 0);
    rn_cuda_step_shape s = {1, 32, 8, 1, n * H, 0};
    if (dv % 4 == 0 && layer % 4 == 0)
        s.vec = 4;
    int cols = (dv + s.vec - 1) / s.vec; /* threads a full row of a head needs */
    while (s.lanes > 8 && s.lanes / 2 >= cols)
        s.lanes /= 2; /* narrow heads: fewer idle lanes */
    s.d_split = 256 / s.lanes;
    while (s.d_split > 1 && s.d_split > dk)
        s.d_split /= 2; /* no idle thread rows for tiny heads */
    s.grid_y = (cols + s.lanes - 1) / s.lanes;
    /* split the rows until one sequence gives every SM a block, keeping at
     * least two rows per thread */
    while (s.row_split < RN_CUDA_STEP_SPLIT_MAX && (long)H * s.grid_y * s.row_split < n_sms &&
           dk / (2 * s.row_split) >= 2 * s.d_split)
        s.row_split *= 2;
    return s;
}

/* Warps that cover kb blocks of k, per blocks each. */
static int tc_warps(int kb, int per)
{
    return (kb + per - 1) / per;
}

rn_cuda_tc_shape rn_cuda_tc_plan(int in, long blocks, int n_sms, int max_warps, int want_kpw)
{
    int kb = in > 0 ? (in + RN_TC_KBLOCK - 1) / RN_TC_KBLOCK : 1; /* k blocks */
    int per = want_kpw > 0 ? (want_kpw + RN_TC_KBLOCK - 1) / RN_TC_KBLOCK
                           : RN_CUDA_TC_K_PER_WARP / RN_TC_KBLOCK; /* k blocks per warp */
    int cap = max_warps < 1                      ? 1
              : max_warps > RN_CUDA_TC_WARPS_MAX ? RN_CUDA_TC_WARPS_MAX
                                                 : max_warps;
    long want = (long)RN_CUDA_TC_WARPS_PER_SM * (n_sms > 0 ? n_sms : 1);
    if (want_kpw > 0 && per > kb) /* no share past the width */
        per = kb;
    if (tc_warps(kb, per) > cap)
        per = (kb + cap - 1) / cap;
    while (want_kpw <= 0 && per > 2 && blocks * tc_warps(kb, per) < want &&
           tc_warps(kb, per / 2) <= cap)
        per /= 2;
    rn_cuda_tc_shape s = {tc_warps(kb, per), per * RN_TC_KBLOCK};
    return s;
}

int rn_cuda_tc_stages(int want, int rounds, int warps, size_t smem_block, size_t smem_sm)
{
    if (want <= 0 || warps < 1)
        return 0;
    int p = rounds < want ? rounds : want; /* then within 2..RN_CUDA_TC_STAGES_MAX */
    p = p < 2 ? 2 : p > RN_CUDA_TC_STAGES_MAX ? RN_CUDA_TC_STAGES_MAX : p;
    size_t per = (size_t)warps * RN_CUDA_TC_STAGE_BYTES; /* one stage of every warp */
    while (p > 2 && 2 * ((size_t)p * per + RN_CUDA_SMEM_RESERVED) > smem_sm)
        p--;
    return (size_t)p * per <= smem_block ? p : 0;
}

/* Whether dv splits into twice `parts` shares of whole 64-column
 * multiples, each at least RN_CUDA_RET_SPLIT_MIN_DV wide. */
static int ret_can_double(int dv, int parts)
{
    int share = dv / (2 * parts);
    return 2 * parts <= RN_CUDA_RET_SPLIT_MAX && dv % (2 * parts) == 0 && share % 64 == 0 &&
           share >= RN_CUDA_RET_SPLIT_MIN_DV;
}

int rn_cuda_ret_parts(long blocks, int dv, int n_sms, int want)
{
    int parts = 1;
    if (want == RN_CUDA_RET_SPLIT_AUTO) {
        while (ret_can_double(dv, parts) && blocks * 2 * parts <= (long)n_sms)
            parts *= 2;
    } else {
        while (2 * parts <= want && ret_can_double(dv, parts))
            parts *= 2;
    }
    return parts;
}

int rn_cuda_tc_groups(size_t pairs, int n_sms, int want)
{
    if (want == 1 || want == 2)
        return want;
    return pairs >= (size_t)16 * 2 * (size_t)(n_sms > 0 ? n_sms : 1) ? 2 : 1;
}

rn_cuda_tc_stream rn_cuda_tc_stream_plan(long groups, int in, int n_sms)
{
    rn_cuda_tc_stream s = {0, 0, 0, 0, 0, 0};
    if (groups <= 0 || in <= 0)
        return s;
    s.kb = (in + RN_TC_KBLOCK - 1) / RN_TC_KBLOCK;
    s.units = (long long)groups * s.kb;
    long long want = (long long)RN_CUDA_TC_STREAM_WARPS_PER_SM * (n_sms > 0 ? n_sms : 1);
    s.warps = (int)(want < s.units ? want : s.units);
    s.blocks = (s.warps + RN_CUDA_TC_STREAM_BLOCK_WARPS - 1) / RN_CUDA_TC_STREAM_BLOCK_WARPS;
    /* a run of up to `most` units starts anywhere in a group: it reaches
     * (most - 1) / kb groups past its first */
    long long most = (s.units + s.warps - 1) / s.warps;
    long long touch = (most - 1) / s.kb + 2;
    s.slots = (int)(touch < groups ? touch : groups);
    /* runs of at least `least` units: a group's kb units meet at most
     * (kb - 2) / least + 2 of them (one unit each at its two ends) */
    long long least = s.units / s.warps;
    long long spread = s.kb < 2 ? 1 : (s.kb - 2) / least + 2;
    s.spread = (int)(spread < s.warps ? spread : s.warps);
    if (s.spread > RN_CUDA_TC_STREAM_SPREAD_MAX)
        s.warps = s.blocks = s.slots = 0;
    return s;
}

size_t rn_cuda_tc_stream_part_bytes(const rn_cuda_tc_stream *s, int acc)
{
    return (size_t)s->warps * (size_t)s->slots * (size_t)acc * 32 * sizeof(float);
}

/* Rows of the matrices of m from first to last (absent ones: none). */
static size_t tc_rows_of(const rn_tensor *const *m, int first, int last)
{
    size_t rows = 0;
    for (int i = first; i <= last; i++)
        rows += m[i]->data ? (size_t)m[i]->shape[0] : 0;
    return rows;
}

size_t rn_cuda_tc_stream_bytes(const rn_weights *w, int n_layers, int n_sms, int tc_max,
                               long *groups)
{
    /* the matrices of each launch (rn_cuda_layer_matrices' order) */
    static const int sets[][2] = {{0, 3}, {4, 4}, {5, 6}, {7, 7}, {8, 8}};
    /* (m-tiles, pair groups) of the launches up to 16, 32 and 64 rows */
    static const int shapes[][2] = {{1, 2}, {2, 2}, {4, 1}};
    size_t most = 0;
    *groups = 0;
    for (int l = 0; l < n_layers; l++) {
        const rn_tensor *m[RN_CUDA_MATRICES];
        rn_cuda_layer_matrices(w, l, m);
        for (size_t k = 0; k < sizeof sets / sizeof sets[0]; k++) {
            const rn_tensor *first = m[sets[k][0]];
            size_t pairs = tc_rows_of(m, sets[k][0], sets[k][1]);
            if (!first->data || !pairs)
                continue;
            for (int sh = 0; sh < 3 && (sh == 0 || tc_max > 16 * sh); sh++) {
                int nt = shapes[sh][1], acc = shapes[sh][0] * nt * 8;
                long g = (long)((pairs + 8 * (size_t)nt - 1) / (8 * (size_t)nt));
                rn_cuda_tc_stream s = rn_cuda_tc_stream_plan(g, (int)first->shape[1], n_sms);
                size_t bytes = rn_cuda_tc_stream_part_bytes(&s, acc);
                most = bytes > most ? bytes : most;
                *groups = g > *groups ? g : *groups;
            }
        }
    }
    return most;
}

int rn_cuda_tc_loads(int want, int mtiles, int groups, int k_per_warp)
{
    int deep = want == 16 && mtiles == 1 && groups == 1 && k_per_warp >= RN_TC_KBLOCK * 8;
    return deep ? 16 : 8;
}

int rn_cuda_tc_fits(int t, int in)
{
    return (t == RN_DT_BF16 || t == RN_DT_F16) && in > 0 && in % 8 == 0;
}

void rn_cuda_layer_matrices(const rn_weights *w, int l, const rn_tensor *m[RN_CUDA_MATRICES])
{
    const rn_layer_weights *s = &w->layers[l];
    m[0] = &s->q_w, m[1] = &s->k_w, m[2] = &s->v_w, m[3] = &s->g_w, m[4] = &s->o_w;
    m[5] = &s->up_w, m[6] = &s->gate_w, m[7] = &s->down_w, m[8] = &w->lm_head_w;
}

int rn_cuda_tc_weights_fit(const rn_weights *w, int n_layers)
{
    int ok = 1;
    for (int l = 0; l < n_layers; l++) {
        const rn_tensor *m[RN_CUDA_MATRICES];
        rn_cuda_layer_matrices(w, l, m);
        for (int i = 0; i < RN_CUDA_MATRICES; i++)
            ok &= !m[i]->data || rn_cuda_tc_fits((int)m[i]->dtype, (int)m[i]->shape[1]);
    }
    return ok;
}
