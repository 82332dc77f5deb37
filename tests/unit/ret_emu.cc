/* The tensor-core retention kernels of engine/cuda/ret_fused.cuh run on
 * the CPU through cuda_emu.h, against the double-precision references the
 * device checks use (engine/cuda/ret_ref.h), and the piece scaling of
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

/* The problem's seven arrays (q, k, v, o, S, pw, s0) each in an allocation of
 * its own, 256-byte aligned as cudaMalloc's, so the outputs' WMMA stores
 * are aligned as on the device and a read past an array's end is one the
 * sanitizer build sees (in h they would run into the next array). */
struct emu_arrays {
    size_t from[7], to[7];
    float *buf[7];
};

static int emu_arrays_make(emu_arrays *a, const rf_problem *p, const float *h)
{
    size_t bounds[8] = {p->q, p->k, p->v, p->o, p->S, p->pw, p->s0, p->total};
    for (int r = 0; r < 7; r++) {
        size_t n = bounds[r + 1] - bounds[r];
        a->from[r] = bounds[r], a->to[r] = bounds[r + 1];
        a->buf[r] = (float *)rn_emu_alloc(n, sizeof(float));
        if (!a->buf[r])
            return -1;
        memcpy(a->buf[r], h + bounds[r], n * sizeof(float));
    }
    return 0;
}

/* The address in a of h + offset. */
static float *emu_arrays_at(const emu_arrays *a, size_t offset)
{
    for (int r = 0; r < 7; r++)
        if (offset >= a->from[r] && offset < a->to[r])
            return a->buf[r] + (offset - a->from[r]);
    abort();
}

static void emu_arrays_free(emu_arrays *a)
{
    for (int r = 0; r < 7; r++)
        free(a->buf[r]);
}

/* rk_ret_fused's and rk_ret_own's launches (kernels.cu), emulated. */
static int emu_ret_launch(const rf_problem *p, int own, const emu_arrays *a, void **ptrs)
{
    int n = p->count, HK = p->H * p->dk, HV = p->H * p->dv;
    float *const *out = (float *const *)ptrs;
    const float *const *in = (const float *const *)ptrs;
    const float *pw = emu_arrays_at(a, p->pw);
    if (own) {
        float *Sl = emu_arrays_at(a, p->s0), *U = emu_arrays_at(a, p->S);
        const float *k = emu_arrays_at(a, p->k), *v = emu_arrays_at(a, p->v);
        dim3 grid((unsigned)p->H, (unsigned)(p->dk / RF_ROWS), (unsigned)(p->dv / RU_COLS));
        return rn_emu_launch(ret_own_kernel<RU_COLS>, grid, dim3(RU_THREADS), 0, Sl, U, k, v, pw,
                             p->pieces, p->P, p->dk, p->dv, HK, HV);
    }
    dim3 grid((unsigned)n, (unsigned)(p->P / RF_ROWS));
    size_t smem = rf_layout_for(p->dk, p->dv).total;
    return rf_with_nc(p->dv, [&](auto nc) {
        return rn_emu_launch(ret_fused_kernel<decltype(nc)::value>, grid, dim3(RF_THREADS), smem,
                             out, in + n, in + 2 * n, in + 3 * n, in + 4 * n, pw, p->H, p->P, p->dk,
                             HK, HV);
    });
}

/* what: 0 the read-out kernel (from random entering states), 1
 * the own-state kernel, 2 both as the fused path runs them on a chunk (the
 * own-state kernel's entering states feed the read-out). */
extern "C" double rn_emu_ret_check(int what, int P, int pieces, int H, int dk, int dv, int zero_v,
                                   uint32_t seed)
{
    int own = what != 0;
    rf_problem p = rf_problem_make(P, pieces, H, dk, dv);
    float *h = (float *)malloc(sizeof(float) * p.total);
    void **ptrs = (void **)malloc(sizeof(void *) * 5 * (size_t)p.count);
    emu_arrays a = {};
    double worst = -1.0;
    if (!h || !ptrs || P % RF_ROWS || dk % RF_ROWS || dv % 64 || dv / 64 > RF_MAX_NC)
        goto cleanup;
    rf_problem_fill(&p, h, zero_v, seed);
    if (own) /* the states' place takes the output */
        for (size_t i = p.S; i < p.pw; i++)
            h[i] = NAN;
    if (emu_arrays_make(&a, &p, h))
        goto cleanup;
    rf_problem_ptrs(&p, h, ptrs);
    for (int i = 0; i < 5 * p.count; i++) /* into the arrays of their own */
        ptrs[i] = emu_arrays_at(&a, (size_t)((float *)ptrs[i] - h));
    if (emu_ret_launch(&p, own, &a, ptrs) != 0 ||
        (what == 2 && emu_ret_launch(&p, 0, &a, ptrs) != 0))
        goto cleanup;
    memcpy(h + p.o, emu_arrays_at(&a, p.o), sizeof(float) * (p.S - p.o)); /* the outputs */
    memcpy(h + p.S, emu_arrays_at(&a, p.S), sizeof(float) * (p.pw - p.S));
    /* the state past the chunk stays in the arrays; h keeps the one entering */
    worst = what == 2 ? rf_chunk_worst(&p, h)
            : own     ? rf_own_worst(&p, h, emu_arrays_at(&a, p.s0))
                      : rf_fused_worst(&p, h);
cleanup:
    emu_arrays_free(&a);
    free(h);
    free(ptrs);
    return worst;
}

/* scale_pieces_kernel<N> (as rk_scale_pieces launches it) on pieces pieces
 * of P rows, H heads of dk values, key or query scaling, from random
 * values and a random decay table: the destination values whose bits are
 * not the one product the definition gives (NaN: left unwritten), or -1. */
extern "C" long rn_emu_scale_check(int n, int P, int pieces, int H, int dk, int key, uint32_t seed)
{
    size_t rows = (size_t)pieces * (size_t)H * (size_t)P, vals = rows * (size_t)dk;
    size_t npw = (size_t)H * (size_t)(P + 1);
    float *src = (float *)rn_emu_alloc(vals, sizeof(float));
    float *dst = (float *)rn_emu_alloc(vals, sizeof(float));
    float *pw = (float *)malloc(sizeof(float) * npw);
    long differ = -1;
    unsigned bx, by, grid;
    if (!src || !dst || !pw || (n == 4 && dk % 4) || (n != 1 && n != 4))
        goto cleanup;
    for (size_t i = 0; i < vals; i++)
        src[i] = rf_uniform(&seed, -2.0f, 2.0f), dst[i] = NAN;
    for (size_t i = 0; i < npw; i++)
        pw[i] = rf_uniform(&seed, 0.1f, 1.0f);
    scale_pieces_shape(dk, n, (unsigned)rows, &bx, &by, &grid);
    if ((n == 4
             ? rn_emu_launch(scale_pieces_kernel<4>, dim3(grid), dim3(bx, by), 0, dst,
                             (const float *)src, (const float *)pw, H, P, dk, key, (unsigned)rows)
             : rn_emu_launch(scale_pieces_kernel<1>, dim3(grid), dim3(bx, by), 0, dst,
                             (const float *)src, (const float *)pw, H, P, dk, key,
                             (unsigned)rows)) != 0)
        goto cleanup;
    differ = 0;
    for (int p = 0; p < pieces; p++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < P; i++) {
                float f = pw[(size_t)h * (size_t)(P + 1) + (size_t)(key ? P - 1 - i : i + 1)];
                const float *s = src + (((size_t)p * P + (size_t)i) * H + (size_t)h) * (size_t)dk;
                const float *d = dst + (((size_t)p * H + (size_t)h) * P + (size_t)i) * (size_t)dk;
                for (int c = 0; c < dk; c++) {
                    float want = s[c] * f;
                    differ += memcmp(&want, &d[c], sizeof want) != 0;
                }
            }
cleanup:
    free(src);
    free(dst);
    free(pw);
    return differ;
}

/* qk_kernel (as rk_qk_prepare launches it, hpt 1 or H) on n rows of H heads
 * of dk values at random positions and frequencies, q or k scaled first
 * (scale != 1), half-split or interleaved pairs, against the rotation a
 * pair and a head at a time with the same operations: the values whose
 * bits differ, or -1. */
extern "C" long rn_emu_rope_check(int n, int H, int dk, int hpt, int interleaved, int scale_k,
                                  float scale, uint32_t seed)
{
    size_t vals = (size_t)n * (size_t)H * (size_t)dk;
    float *q = (float *)malloc(sizeof(float) * vals), *k = (float *)malloc(sizeof(float) * vals);
    float *wq = (float *)malloc(sizeof(float) * vals), *wk = (float *)malloc(sizeof(float) * vals);
    float *freq = (float *)malloc(sizeof(float) * (size_t)dk);
    int64_t *pos = (int64_t *)malloc(sizeof(int64_t) * (size_t)n);
    long differ = -1;
    int half = dk / 2;
    size_t threads = (size_t)n * (size_t)half * (size_t)((H + hpt - 1) / hpt);
    if (!q || !k || !wq || !wk || !freq || !pos || dk % 2)
        goto cleanup;
    for (size_t i = 0; i < vals; i++)
        q[i] = wq[i] = rf_uniform(&seed, -2.0f, 2.0f),
        k[i] = wk[i] = rf_uniform(&seed, -2.0f, 2.0f);
    for (int i = 0; i < dk; i++)
        freq[i] = rf_uniform(&seed, 0.0f, 1.0f);
    for (int r = 0; r < n; r++)
        pos[r] = (int64_t)(seed = seed * 1664525u + 1013904223u) % 5000;
    if (rn_emu_launch(qk_kernel, dim3((unsigned)((threads + 63) / 64)), dim3(64), 0, q, k, n, H, dk,
                      (const int64_t *)pos, (const float *)freq, interleaved, scale_k, scale,
                      hpt) != 0)
        goto cleanup;
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
    for (size_t i = 0; i < vals; i++)
        differ +=
            memcmp(&q[i], &wq[i], sizeof(float)) != 0 || memcmp(&k[i], &wk[i], sizeof(float)) != 0;
cleanup:
    free(q);
    free(k);
    free(wq);
    free(wk);
    free(freq);
    free(pos);
    return differ;
}
