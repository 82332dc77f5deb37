/*
 * packed.c -- see packed.h.  One kernel, written with GCC vector extensions
 * and compiled per ISA level (RN_CLONES): 16 lanes are one AVX-512 register,
 * two AVX2 or four SSE registers.  Tiles of np panels x nb inputs keep up to
 * 16 accumulators in registers; np > 1 for small batches hides the FMA
 * latency without changing any output's order of summation.  Built with
 * -ffp-contract=off (Makefile): every term is a multiply then an add in
 * every tile shape, whatever the compiler would have fused.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../status.h"
#include "../util.h"
#include "packed.h"
#include "simd.h"

#pragma GCC diagnostic ignored "-Wpsabi" /* 64-byte vectors stay inside inlined code */

typedef float v16f __attribute__((vector_size(64)));
typedef uint32_t v16u __attribute__((vector_size(64)));
typedef uint16_t v16h __attribute__((vector_size(32)));

#define AI static inline __attribute__((always_inline))

int rn__pack(rn_packed *p, const rn_tensor *W)
{
    size_t esz = rn_dtype_size(W->dtype);
    int out = (int)W->shape[0], in = (int)W->shape[1];
    int np = (out + RN_PANEL - 1) / RN_PANEL;
    size_t bytes = (size_t)np * (size_t)in * RN_PANEL * esz;
    unsigned char *d = aligned_alloc(64, (bytes + 63) & ~(size_t)63);
    if (!d)
        return RN_ENOMEM;
    /* row by row: reads stream through W, writes stride RN_PANEL elements;
     * the padding rows of the last panel are zero */
    for (int row = 0; row < np * RN_PANEL; row++) {
        size_t base = (size_t)(row / RN_PANEL) * (size_t)in * RN_PANEL + (size_t)(row % RN_PANEL);
        if (row >= out) {
            for (int i = 0; i < in; i++)
                memset(d + (base + (size_t)i * RN_PANEL) * esz, 0, esz);
        } else if (esz == 4) {
            uint32_t *dst = (uint32_t *)(void *)d + base;
            const uint32_t *src = (const uint32_t *)W->data + (size_t)row * (size_t)in;
            for (int i = 0; i < in; i++)
                dst[(size_t)i * RN_PANEL] = src[i];
        } else {
            uint16_t *dst = (uint16_t *)(void *)d + base;
            const uint16_t *src = (const uint16_t *)W->data + (size_t)row * (size_t)in;
            for (int i = 0; i < in; i++)
                dst[(size_t)i * RN_PANEL] = src[i];
        }
    }
    *p = (rn_packed){d, W->dtype, out, in, np};
    return RN_OK;
}

void rn__packed_free(rn_packed *p)
{
    free(p->data);
    p->data = NULL;
}

AI v16f load16(const void *base, size_t idx, rn_dtype t)
{
    v16f f;
    if (t == RN_DT_F32) {
        memcpy(&f, (const float *)base + idx, sizeof f);
    } else if (t == RN_DT_BF16) {
        v16h h;
        memcpy(&h, (const uint16_t *)base + idx, sizeof h);
        v16u u = __builtin_convertvector(h, v16u) << 16;
        memcpy(&f, &u, sizeof f);
    } else {
        for (int k = 0; k < RN_PANEL; k++)
            f[k] = rn__f16_to_f32(((const uint16_t *)base)[idx + (size_t)k]);
    }
    return f;
}

typedef struct {
    const rn_packed *P;
    float *y;
    const float *bias;
    const float *x;
    int n;
} pk_job;

/* np panels starting at pn, x nb inputs starting at b. */
AI void tile(const pk_job *j, int pn, const int np, int b, const int nb, rn_dtype t)
{
    const rn_packed *P = j->P;
    const int in = P->in;
    v16f acc[4][16];
    for (int a = 0; a < np; a++)
        for (int c = 0; c < nb; c++)
            acc[a][c] = (v16f){0};
    const float *x = j->x + (size_t)b * (size_t)in;
    for (int i = 0; i < in; i++) {
        v16f w[4];
        for (int a = 0; a < np; a++)
            w[a] = load16(P->data, ((size_t)(pn + a) * (size_t)in + (size_t)i) * RN_PANEL, t);
        for (int c = 0; c < nb; c++) {
            v16f xv = (v16f){0} + x[(size_t)c * (size_t)in + (size_t)i];
            for (int a = 0; a < np; a++)
                acc[a][c] += w[a] * xv;
        }
    }
    for (int a = 0; a < np; a++)
        for (int c = 0; c < nb; c++) {
            float *yrow = j->y + (size_t)(b + c) * (size_t)P->out;
            for (int r = 0; r < RN_PANEL; r++) {
                int row = (pn + a) * RN_PANEL + r;
                if (row < P->out)
                    yrow[row] = acc[a][c][r] + (j->bias ? j->bias[row] : 0.0f);
            }
        }
}

AI void panels_t(const pk_job *j, int p0, int p1, rn_dtype t)
{
    int n = j->n;
    if (n == 1) {
        int p = p0;
        for (; p + 4 <= p1; p += 4)
            tile(j, p, 4, 0, 1, t);
        for (; p < p1; p++)
            tile(j, p, 1, 0, 1, t);
        return;
    }
    for (int p = p0; p < p1; p++) {
        int b = 0;
        for (; b + 16 <= n; b += 16)
            tile(j, p, 1, b, 16, t);
        for (; b + 4 <= n; b += 4)
            tile(j, p, 1, b, 4, t);
        for (; b < n; b++)
            tile(j, p, 1, b, 1, t);
    }
}

/* One instantiation per dtype keeps the dtype test out of the loops. */
RN_CLONES static void panels(const pk_job *j, int p0, int p1)
{
    switch (j->P->dtype) {
    case RN_DT_BF16:
        panels_t(j, p0, p1, RN_DT_BF16);
        break;
    case RN_DT_F16:
        panels_t(j, p0, p1, RN_DT_F16);
        break;
    default:
        panels_t(j, p0, p1, RN_DT_F32);
        break;
    }
}

#define MAX_OUTS 4

typedef struct {
    pk_job m[MAX_OUTS];
    int per_task[MAX_OUTS];
    int first[MAX_OUTS + 1];
} multi_job;

static void task(void *ctx, int t)
{
    const multi_job *mj = ctx;
    int k = 0;
    while (t >= mj->first[k + 1])
        k++;
    const pk_job *j = &mj->m[k];
    int p0 = (t - mj->first[k]) * mj->per_task[k];
    int p1 = p0 + mj->per_task[k] < j->P->n_panels ? p0 + mj->per_task[k] : j->P->n_panels;
    panels(j, p0, p1);
}

void rn__linear_packed(rn_pool *pool, const rn_packed_out *outs, int count, const float *x, int n)
{
    multi_job mj;
    memset(&mj, 0, sizeof mj);
    /* a few long runs of panels per thread: long sequential streams, and
     * enough pieces to even out the finishing times */
    int pieces = 4 * rn__pool_threads(pool);
    for (int k = 0; k < count && k < MAX_OUTS; k++) {
        mj.m[k] = (pk_job){outs[k].P, outs[k].y, outs[k].bias, x, n};
        int per = (outs[k].P->n_panels + pieces - 1) / pieces;
        mj.per_task[k] = per < 4 ? 4 : (per + 3) & ~3;
        mj.first[k + 1] = mj.first[k] + (outs[k].P->n_panels + mj.per_task[k] - 1) / mj.per_task[k];
    }
    rn__pool_run(pool, mj.first[count < MAX_OUTS ? count : MAX_OUTS], task, &mj);
}
