/* The tensor-core retention read-out of engine/cuda/ret_fused.cuh runs on
 * the CPU through cuda_emu.h, against the double-precision reference the
 * device check uses (engine/cuda/ret_ref.h), and the piece scaling of
 * engine/cuda/pieces_dev.cuh against its definition; check_ret_emu.c
 * drives them, and the rotary kernel of engine/cuda/rope_dev.cuh against
 * a pair at a time. */
#include <stdlib.h>
#include <string.h>

#include "cuda_emu.h"

#include "rn_math.h"
#include "cuda/pieces_dev.cuh"
#include "cuda/rope_dev.cuh"
#include "cuda/ret_fused.cuh"
#include "cuda/ret_ref.h"

/* n values of h rounded to bf16 (rk_to_half's rounding) in an array of
 * their own; NULL when out of memory. */
static __nv_bfloat16 *emu_bf16(const float *h, size_t n)
{
    __nv_bfloat16 *b = (__nv_bfloat16 *)rn_emu_alloc(n, sizeof *b);
    for (size_t i = 0; b && i < n; i++)
        b[i] = __float2bfloat16_rn(h[i]);
    return b;
}

/* rk_ret_fused's launch (kernels.cu) on problem p's values in h, each
 * head's dv columns in parts shares, in wide warps (the engine's default)
 * or not, emulated; the read-outs come back
 * into h's o -- or with gn (gn->h: rows x H dv bf16 values, 256-aligned),
 * normalised and gated into gn->h, h's o untouched.  0, or -1. */
static int emu_ret_fused(const rf_problem *p, float *h, int parts, const rk_group_norm *gn = NULL,
                         int wide = 1)
{
    __nv_bfloat16 *q = emu_bf16(h + p->q, p->k - p->q), *k = emu_bf16(h + p->k, p->v - p->k);
    __nv_bfloat16 *v = emu_bf16(h + p->v, p->o - p->v), *S = emu_bf16(h + p->S, p->pw - p->S);
    float *o = (float *)rn_emu_copy(h + p->o, p->S - p->o, sizeof(float));
    float *pw = (float *)rn_emu_copy(h + p->pw, p->total - p->pw, sizeof(float));
    int share = p->dv / parts;
    dim3 grid((unsigned)(p->count * parts), (unsigned)(p->P / RF_ROWS));
    size_t smem = gn ? rf_norm_smem(p->dk, share) : rf_layout_for(p->dk, share).total;
    int rc = -1;
    if (q && k && v && S && o && pw && p->dv % parts == 0 &&
        rf_with_kernel(share, parts > 1, gn != NULL, wide, [&](auto kern) {
            return rn_emu_launch(kern, grid, dim3(RF_THREADS), smem, o, (const __nv_bfloat16 *)q,
                                 (const __nv_bfloat16 *)k, (const __nv_bfloat16 *)v,
                                 (const __nv_bfloat16 *)S, (const float *)pw, p->H, p->P, p->dk,
                                 p->dv, gn ? *gn : rk_group_norm{});
        }) == 0) {
        memcpy(h + p->o, o, sizeof(float) * (p->S - p->o));
        rc = 0;
    }
    free(q);
    free(k);
    free(v);
    free(S);
    free(o);
    free(pw);
    return rc;
}

/* The fused read-out on pieces pieces of P rows and H heads of dk, dv
 * values (v zero with zero_v) from seed, its copies landing at their
 * waits (at_issue 0) or at their issue (1): its worst error against the
 * double-precision reference (rf_fused_worst), or -1. */
extern "C" double rn_emu_ret_check(int P, int pieces, int H, int dk, int dv, int zero_v,
                                   int at_issue, uint32_t seed)
{
    rf_problem p = rf_problem_make(P, pieces, H, dk, dv);
    float *h = (float *)malloc(sizeof(float) * p.total);
    double worst = -1.0;
    if (h && P % RF_ROWS == 0 && dk % RF_ROWS == 0 && dv % 64 == 0 && dv / 64 <= RF_MAX_NC) {
        rf_problem_fill(&p, h, zero_v, seed);
        rn_emu_cp_async_at_issue = at_issue;
        if (emu_ret_fused(&p, h, 1) == 0)
            worst = rf_fused_worst(&p, h);
        rn_emu_cp_async_at_issue = 0;
    }
    free(h);
    return worst;
}

/* The fused read-out on the same problem as rn_emu_ret_check (v random)
 * with each head's dv columns whole and in parts shares: the outputs
 * whose bits differ between the two, or -1. */
extern "C" long rn_emu_ret_split_check(int P, int pieces, int H, int dk, int dv, int parts,
                                       uint32_t seed)
{
    rf_problem p = rf_problem_make(P, pieces, H, dk, dv);
    float *a = (float *)malloc(sizeof(float) * p.total);
    float *b = (float *)malloc(sizeof(float) * p.total);
    long differ = -1;
    if (a && b && P % RF_ROWS == 0 && dk % RF_ROWS == 0 && dv % (64 * parts) == 0 &&
        dv / 64 <= RF_MAX_NC) {
        rf_problem_fill(&p, a, 0, seed);
        memcpy(b, a, sizeof(float) * p.total);
        if (emu_ret_fused(&p, a, 1) == 0 && emu_ret_fused(&p, b, parts) == 0) {
            differ = 0;
            for (size_t i = p.o; i < p.S; i++)
                differ += memcmp(a + i, b + i, sizeof(float)) != 0;
        }
    }
    free(a);
    free(b);
    return differ;
}

/* The fused read-out on the same problem as rn_emu_ret_check (v random),
 * each head's dv columns in parts shares, in narrow and in wide warps,
 * plain or (norm) through a group norm and gate: the outputs whose bits
 * differ between the two (the fp32 read-outs, or the normalised bf16
 * values), and any left unwritten, or -1. */
extern "C" long rn_emu_ret_tiling_check(int P, int pieces, int H, int dk, int dv, int parts,
                                        int norm, uint32_t seed)
{
    rf_problem p = rf_problem_make(P, pieces, H, dk, dv);
    size_t n = p.S - p.o; /* rows x H dv */
    float *a = (float *)malloc(sizeof(float) * p.total);
    float *b = (float *)malloc(sizeof(float) * p.total);
    float *gate = (float *)rn_emu_alloc(n, sizeof(float));
    float *w = (float *)rn_emu_alloc((size_t)dv, sizeof(float));
    uint16_t *out[2] = {(uint16_t *)rn_emu_alloc(n, sizeof(uint16_t)),
                        (uint16_t *)rn_emu_alloc(n, sizeof(uint16_t))};
    long differ = -1;
    if (a && b && gate && w && out[0] && out[1] && P % RF_ROWS == 0 && dk % RF_ROWS == 0 &&
        dv % (64 * parts) == 0 && dv / 64 <= RF_MAX_NC && !(norm && parts > 1)) {
        rf_problem_fill(&p, a, 0, seed);
        memcpy(b, a, sizeof(float) * p.total);
        for (size_t i = 0; i < n; i++)
            gate[i] = rf_uniform(&seed, -3.0f, 3.0f), out[0][i] = out[1][i] = 0x7fc1;
        for (int i = 0; i < dv; i++)
            w[i] = rf_uniform(&seed, 0.5f, 1.5f);
        rk_group_norm narrow = {gate, w, out[0], 1e-5f, 1, 0}, wide = narrow;
        wide.h = out[1];
        /* the copies land at their issue: a tile overwritten while a warp
         * of either tiling still reads it shows as a difference (the
         * reference check runs the wide one so too) */
        rn_emu_cp_async_at_issue = 1;
        int ok = emu_ret_fused(&p, a, parts, norm ? &narrow : NULL, 0) == 0 &&
                 emu_ret_fused(&p, b, parts, norm ? &wide : NULL, 1) == 0;
        rn_emu_cp_async_at_issue = 0;
        if (ok) {
            differ = 0;
            for (size_t i = 0; i < n; i++)
                differ += norm ? out[0][i] != out[1][i] || out[0][i] == 0x7fc1
                               : memcmp(a + p.o + i, b + p.o + i, sizeof(float)) != 0 ||
                                     a[p.o + i] != a[p.o + i]; /* NaN: unwritten */
        }
    }
    free(a);
    free(b);
    free(gate);
    free(w);
    free(out[0]);
    free(out[1]);
    return differ;
}

/* The fused read-out on the same kind of problem with its rows through the
 * group norm and gate (RETNET_CUDA_RET_NORM): LayerNorm or RMSNorm
 * (layer_kind), weights or none (affine), a gate or none, swish or gelu
 * (act); the reference normalises the plain launch's fp32 read-outs
 * (rf_norm_compare).  *differ: the values whose bits differ from it,
 * and any fp32 read-out it stored (there should be none); *worst: the largest difference in units of the reference's last bf16
 * place.  0, or -1. */
extern "C" int rn_emu_ret_norm_check(int P, int pieces, int H, int dk, int dv, int layer_kind,
                                     int affine, int gated, int act, uint32_t seed, long *differ,
                                     double *worst)
{
    rf_problem p = rf_problem_make(P, pieces, H, dk, dv);
    size_t n = p.S - p.o; /* rows x H dv */
    float *h = (float *)malloc(sizeof(float) * p.total);
    float *gate = (float *)rn_emu_alloc(n, sizeof(float));
    float *w = (float *)rn_emu_alloc((size_t)dv, sizeof(float));
    uint16_t *out = (uint16_t *)rn_emu_alloc(n, sizeof(uint16_t));
    int rc = -1;
    if (h && gate && w && out && P % RF_ROWS == 0 && dk % RF_ROWS == 0 && dv % 64 == 0 &&
        dv / 64 <= RF_MAX_NC) {
        rf_problem_fill(&p, h, 0, seed);
        for (size_t i = 0; i < n; i++)
            gate[i] = rf_uniform(&seed, -3.0f, 3.0f), out[i] = 0x7fc1; /* NaN: unwritten */
        for (int i = 0; i < dv; i++)
            w[i] = rf_uniform(&seed, 0.5f, 1.5f);
        rk_group_norm gn = {gated ? gate : NULL, affine ? w : NULL, out, 1e-5f, layer_kind, act};
        long wrote_o = 0;
        if (emu_ret_fused(&p, h, 1, &gn) == 0) {
            for (size_t i = p.o; i < p.S; i++)
                wrote_o += h[i] == h[i]; /* still the fill's NaN: nothing stored in o */
            if (emu_ret_fused(&p, h, 1) == 0) {
                rf_norm_compare(h + p.o, out, n / (size_t)dv, dv, &gn, differ, worst);
                *differ += wrote_o;
                rc = 0;
            }
        }
    }
    free(h);
    free(gate);
    free(w);
    free(out);
    return rc;
}

/* scale_pieces_kernel<N, T> (as rk_scale_pieces launches it) on pieces
 * pieces of P rows, H heads of dk values, key or query scaling, fp32 out or
 * (bf16) rounded to bf16, from random values and a random decay table:
 * the destination values whose bits are not the one product the
 * definition gives, rounded once for bf16 (NaN: left unwritten), or -1. */
extern "C" long rn_emu_scale_check(int n, int P, int pieces, int H, int dk, int key, int bf16,
                                   uint32_t seed)
{
    size_t rows = (size_t)pieces * (size_t)H * (size_t)P, vals = rows * (size_t)dk;
    size_t npw = (size_t)H * (size_t)(P + 1);
    float *src = (float *)rn_emu_alloc(vals, sizeof(float));
    float *dst = (float *)rn_emu_alloc(vals, sizeof(float));
    __nv_bfloat16 *dsth = (__nv_bfloat16 *)rn_emu_alloc(vals, sizeof(__nv_bfloat16));
    float *pw = (float *)malloc(sizeof(float) * npw);
    long differ = -1;
    unsigned bx, by, grid;
    int rc;
    if (!src || !dst || !dsth || !pw || (n == 4 && dk % 4) || (n != 1 && n != 4))
        goto cleanup;
    for (size_t i = 0; i < vals; i++)
        src[i] = rf_uniform(&seed, -2.0f, 2.0f), dst[i] = NAN, dsth[i] = __float2bfloat16_rn(NAN);
    for (size_t i = 0; i < npw; i++)
        pw[i] = rf_uniform(&seed, 0.1f, 1.0f);
    scale_pieces_shape(dk, n, (unsigned)rows, &bx, &by, &grid);
    {
        const float *s = src, *w = pw;
        dim3 g(grid), b(bx, by);
        unsigned r = (unsigned)rows;
        if (bf16)
            rc = n == 4 ? rn_emu_launch(scale_pieces_kernel<4, __nv_bfloat16>, g, b, 0, dsth, s, w,
                                        H, P, dk, key, r)
                        : rn_emu_launch(scale_pieces_kernel<1, __nv_bfloat16>, g, b, 0, dsth, s, w,
                                        H, P, dk, key, r);
        else
            rc = n == 4
                     ? rn_emu_launch(scale_pieces_kernel<4>, g, b, 0, dst, s, w, H, P, dk, key, r)
                     : rn_emu_launch(scale_pieces_kernel<1>, g, b, 0, dst, s, w, H, P, dk, key, r);
    }
    if (rc != 0)
        goto cleanup;
    differ = 0;
    for (int p = 0; p < pieces; p++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < P; i++) {
                float f = pw[(size_t)h * (size_t)(P + 1) + (size_t)(key ? P - 1 - i : i + 1)];
                const float *s = src + (((size_t)p * P + (size_t)i) * H + (size_t)h) * (size_t)dk;
                size_t d = (((size_t)p * H + (size_t)h) * P + (size_t)i) * (size_t)dk;
                for (int c = 0; c < dk; c++) {
                    float want = s[c] * f;
                    if (bf16)
                        differ += __float2bfloat16_rn(want).bits != dsth[d + (size_t)c].bits;
                    else
                        differ += memcmp(&want, &dst[d + (size_t)c], sizeof want) != 0;
                }
            }
cleanup:
    free(src);
    free(dst);
    free(dsth);
    free(pw);
    return differ;
}

/* qk_kernel (as rk_qk_prepare launches it, hpt 1 or H) on n rows of H heads
 * of dk values at random positions and frequencies, q or k scaled first
 * (scale != 1), half-split or interleaved pairs: the last row against the
 * rotation a pair and a head at a time with the same operations, the
 * others (RETNET_CUDA_QK_HALF's rows) as bf16 copies of those results and
 * keys scaled as scale_pieces_kernel scales those keys, their fp32 q and
 * k left as they were (nothing reads them), and the last row's copies
 * left alone: the values whose bits differ, or -1. */
extern "C" long rn_emu_rope_check(int n, int H, int dk, int hpt, int interleaved, int scale_k,
                                  float scale, uint32_t seed)
{
    size_t vals = (size_t)n * (size_t)H * (size_t)dk;
    float *q = (float *)malloc(sizeof(float) * vals), *k = (float *)malloc(sizeof(float) * vals);
    float *wq = (float *)malloc(sizeof(float) * vals), *wk = (float *)malloc(sizeof(float) * vals);
    float *q0 = (float *)malloc(sizeof(float) * vals), *k0 = (float *)malloc(sizeof(float) * vals);
    float *freq = (float *)malloc(sizeof(float) * (size_t)dk);
    int64_t *pos = (int64_t *)malloc(sizeof(int64_t) * (size_t)n);
    __nv_bfloat16 *qh = (__nv_bfloat16 *)rn_emu_alloc(vals, sizeof(__nv_bfloat16));
    __nv_bfloat16 *kh = (__nv_bfloat16 *)rn_emu_alloc(vals, sizeof(__nv_bfloat16));
    __nv_bfloat16 *kd = (__nv_bfloat16 *)rn_emu_alloc(vals, sizeof(__nv_bfloat16));
    __nv_bfloat16 *kd_want = (__nv_bfloat16 *)rn_emu_alloc(vals, sizeof(__nv_bfloat16));
    /* the copies of all rows but the last: two pieces where that count is
     * even, else one (or none: one row) */
    int rows_h = n - 1, P = rows_h >= 2 && rows_h % 2 == 0 ? rows_h / 2 : rows_h > 0 ? rows_h : 1;
    size_t copied = (size_t)rows_h * (size_t)H * (size_t)dk;
    float *pw = (float *)rn_emu_alloc((size_t)H * (size_t)(P + 1), sizeof(float));
    long differ = -1;
    int half = dk / 2;
    size_t threads = (size_t)n * (size_t)half * (size_t)((H + hpt - 1) / hpt);
    if (!q || !k || !wq || !wk || !q0 || !k0 || !freq || !pos || !qh || !kh || !kd || !kd_want ||
        !pw || dk % 2 || dk % 4)
        goto cleanup;
    memset(qh, 0xff, vals * sizeof *qh); /* NaN: a copy never written */
    memset(kh, 0xff, vals * sizeof *kh);
    memset(kd, 0xff, vals * sizeof *kd);
    memset(kd_want, 0xff, vals * sizeof *kd_want);
    for (int i = 0; i < H * (P + 1); i++)
        pw[i] = rf_uniform(&seed, 0.5f, 1.0f);
    for (size_t i = 0; i < vals; i++)
        q[i] = wq[i] = q0[i] = rf_uniform(&seed, -2.0f, 2.0f),
        k[i] = wk[i] = k0[i] = rf_uniform(&seed, -2.0f, 2.0f);
    for (int i = 0; i < dk; i++)
        freq[i] = rf_uniform(&seed, 0.0f, 1.0f);
    for (int r = 0; r < n; r++)
        pos[r] = (int64_t)(seed = seed * 1664525u + 1013904223u) % 5000;
    {
        rk_qk_copies cp = {qh, kh, kd, pw, P, rows_h};
        if (rn_emu_launch(qk_kernel<1>, dim3((unsigned)((threads + 63) / 64)), dim3(64), 0, q, k, n,
                          H, dk, (const int64_t *)pos, (const float *)freq, interleaved, scale_k,
                          scale, hpt, cp) != 0)
            goto cleanup;
    }
    differ = 0;
    for (int r = 0; r < n; r++)
        for (int j = 0; j < half; j++) {
            int ia = interleaved ? 2 * j : j, ib = interleaved ? 2 * j + 1 : j + half;
            double a = (double)rn_rope_angle((long long)pos[r], freq[ia]);
            double b = (double)rn_rope_angle((long long)pos[r], freq[ib]);
            float ca = (float)cos(a), sa = (float)sin(a), cb = (float)cos(b), sb = (float)sin(b);
            for (int h = 0; h < H; h++) {
                float *qv = wq + ((size_t)r * H + (size_t)h) * dk,
                      *kv = wk + ((size_t)r * H + h) * dk;
                if (scale != 1.0f) {
                    float *sv = scale_k ? kv : qv;
                    sv[ia] *= scale;
                    sv[ib] *= scale;
                }
                rn_rope_rotate(&qv[ia], &qv[ib], ca, sa, cb, sb);
                rn_rope_rotate(&kv[ia], &kv[ib], ca, sa, cb, sb);
            }
        }
    if (rows_h > 0) { /* the scaled keys as the piece scaling makes them from those keys */
        unsigned rows = (unsigned)(rows_h * H), bx, by, grid;
        scale_pieces_shape(dk, 4, rows, &bx, &by, &grid);
        if (rn_emu_launch(scale_pieces_kernel<4, __nv_bfloat16>, dim3(grid), dim3(bx, by), 0,
                          kd_want, (const float *)wk, (const float *)pw, H, P, dk, 1, rows) != 0) {
            differ = -1;
            goto cleanup;
        }
    }
    for (size_t i = 0; i < vals; i++) {
        uint16_t cq = i < copied ? rn__f32_to_bf16(wq[i]) : 0xffff;
        uint16_t ck = i < copied ? rn__f32_to_bf16(wk[i]) : 0xffff;
        const float *eq = i < copied ? q0 : wq, *ek = i < copied ? k0 : wk;
        differ +=
            memcmp(&q[i], &eq[i], sizeof(float)) != 0 || memcmp(&k[i], &ek[i], sizeof(float)) != 0;
        differ += memcmp(&qh[i], &cq, 2) != 0 || memcmp(&kh[i], &ck, 2) != 0;
        differ += memcmp(&kd[i], &kd_want[i], 2) != 0; /* past the copies: both unwritten */
    }
cleanup:
    free(qh);
    free(kh);
    free(kd);
    free(kd_want);
    free(pw);
    free(q);
    free(k);
    free(wq);
    free(wk);
    free(q0);
    free(k0);
    free(freq);
    free(pos);
    return differ;
}
