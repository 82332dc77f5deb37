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
#include "ops.h"
#include "packed.h"
#include "simd.h"

#pragma GCC diagnostic ignored "-Wpsabi" /* 64-byte vectors stay inside inlined code */

typedef float v16f __attribute__((vector_size(64)));
typedef uint32_t v16u __attribute__((vector_size(64)));
typedef uint16_t v16h __attribute__((vector_size(32)));

#define AI static inline __attribute__((always_inline))

/* Elements of one panel column (one input, or for bf16 one input pair). */
static size_t pack_span(const rn_packed *p)
{
    return p->dtype == RN_DT_BF16 ? (size_t)(p->in + 1) / 2 * 2 : (size_t)p->in;
}

static void pack_row(unsigned char *d, const rn_packed *p, const rn_tensor *W, int row)
{
    size_t esz = rn_dtype_size(p->dtype), span = pack_span(p);
    size_t panel = (size_t)(row / RN_PANEL) * span * RN_PANEL;
    int r = row % RN_PANEL, in = p->in;
    if (row >= p->out)
        return; /* padding rows stay zero */
    if (esz == 4) {
        uint32_t *dst = (uint32_t *)(void *)d + panel + (size_t)r;
        const uint32_t *src = (const uint32_t *)W->data + (size_t)row * (size_t)in;
        for (int i = 0; i < in; i++)
            dst[(size_t)i * RN_PANEL] = src[i];
    } else if (p->dtype == RN_DT_BF16) {
        /* input pair (2j, 2j+1) of row r is one 32-bit lane: low half 2j */
        uint16_t *dst = (uint16_t *)(void *)d + panel + (size_t)r * 2;
        const uint16_t *src = (const uint16_t *)W->data + (size_t)row * (size_t)in;
        for (int i = 0; i < in; i++)
            dst[(size_t)(i / 2) * 2 * RN_PANEL + (size_t)(i % 2)] = src[i];
    } else {
        uint16_t *dst = (uint16_t *)(void *)d + panel + (size_t)r;
        const uint16_t *src = (const uint16_t *)W->data + (size_t)row * (size_t)in;
        for (int i = 0; i < in; i++)
            dst[(size_t)i * RN_PANEL] = src[i];
    }
}

/* Zeroed memory for panels; those of two huge pages or more on 2 MiB pages
 * (rn__huge_alloc): decode streams every panel once per step. */
static void *panels_alloc(size_t bytes)
{
    void *d = bytes >= 2 * RN_HUGE_PAGE ? rn__huge_alloc(bytes)
                                        : aligned_alloc(64, (bytes + 63) & ~(size_t)63);
    if (d)
        memset(d, 0, bytes);
    return d;
}

int rn__pack(rn_packed *p, const rn_tensor *W)
{
    rn_packed q = {NULL, W->dtype, (int)W->shape[0], (int)W->shape[1], 0};
    q.n_panels = (q.out + RN_PANEL - 1) / RN_PANEL;
    size_t bytes = (size_t)q.n_panels * pack_span(&q) * RN_PANEL * rn_dtype_size(q.dtype);
    unsigned char *d = panels_alloc(bytes);
    if (!d)
        return RN_ENOMEM;
    /* row by row: reads stream through W, writes stride a panel column */
    for (int row = 0; row < q.n_panels * RN_PANEL; row++)
        pack_row(d, &q, W, row);
    q.data = d;
    *p = q;
    return RN_OK;
}

void rn__packed_free(rn_packed *p)
{
    free(p->data);
    p->data = NULL;
}

AI v16f load16(const unsigned char *src, rn_dtype t)
{
    v16f f;
    if (t == RN_DT_F32) {
        memcpy(&f, src, sizeof f);
    } else {
        for (int k = 0; k < RN_PANEL; k++) {
            uint16_t h;
            memcpy(&h, src + 2 * k, sizeof h);
            f[k] = rn__f16_to_f32(h);
        }
    }
    return f;
}

/* A bf16 panel column pair as two f32 vectors: the shifted low halves and
 * the masked high halves are the exact f32 values, two integer operations
 * for 32 weights. */
AI void load_pair(const unsigned char *src, v16f *lo, v16f *hi)
{
    v16u u;
    memcpy(&u, src, sizeof u);
    v16u l = u << 16, h = u & 0xffff0000u;
    memcpy(lo, &l, sizeof l);
    memcpy(hi, &h, sizeof h);
}

/* Bytes ahead of each panel stream to prefetch: the hardware prefetchers
 * alone keep too few lines in flight for one core to reach its share of the
 * memory bandwidth, and stop at page boundaries.  On the 1.3B shape's decode
 * (2 cores, DRAM-bound) 2 KB gave +20% over none; 256 B +6%, 4 KB +14%.
 * A hint: it never faults past the end of the panels. */
#define PREFETCH_AHEAD 2048

typedef struct {
    const rn_packed *P;
    float *y;
    const float *bias;
    const float *x;
    int n;
    const rn_act *act;
} pk_job;

/* acc[a][c] += w[a] * x[c][i] for the np panels and nb inputs of a tile. */
AI void tile_fma(v16f acc[4][16], const v16f *w, const float *x, size_t in, size_t i, int np,
                 int nb)
{
    for (int c = 0; c < nb; c++) {
        v16f xv = (v16f){0} + x[(size_t)c * in + i];
        for (int a = 0; a < np; a++)
            acc[a][c] += w[a] * xv;
    }
}

/* np panels starting at pn, x nb inputs starting at b. */
AI void tile(const pk_job *j, int pn, const int np, int b, const int nb, rn_dtype t)
{
    const rn_packed *P = j->P;
    const size_t in = (size_t)P->in;
    const size_t esz = t == RN_DT_F32 ? 4 : 2;
    const size_t col = RN_PANEL * esz; /* bytes of one panel column: 64 or 32 */
    const unsigned char *base[4];
    v16f acc[4][16];
    for (int a = 0; a < np; a++) {
        base[a] = (const unsigned char *)P->data + (size_t)(pn + a) * pack_span(P) * col;
        for (int c = 0; c < nb; c++)
            acc[a][c] = (v16f){0};
    }
    const float *x = j->x + (size_t)b * in;
    if (t == RN_DT_BF16) {
        size_t i = 0;
        for (; i + 2 <= in; i += 2) {
            v16f lo[4], hi[4];
            for (int a = 0; a < np; a++) {
                __builtin_prefetch(base[a] + i * col + PREFETCH_AHEAD);
                load_pair(base[a] + i * col, &lo[a], &hi[a]);
            }
            tile_fma(acc, lo, x, in, i, np, nb);
            tile_fma(acc, hi, x, in, i + 1, np, nb);
        }
        if (i < in) { /* odd width: the last pair's high half is padding */
            v16f lo[4], hi[4];
            for (int a = 0; a < np; a++)
                load_pair(base[a] + i * col, &lo[a], &hi[a]);
            tile_fma(acc, lo, x, in, i, np, nb);
        }
    } else {
        for (size_t i = 0; i < in; i++) {
            v16f w[4];
            for (int a = 0; a < np; a++) {
                if (t == RN_DT_F32 || i % 2 == 0)
                    __builtin_prefetch(base[a] + i * col + PREFETCH_AHEAD);
                w[a] = load16(base[a] + i * col, t);
            }
            tile_fma(acc, w, x, in, i, np, nb);
        }
    }
    for (int a = 0; a < np; a++)
        for (int c = 0; c < nb; c++) {
            float *yrow = j->y + (size_t)(b + c) * (size_t)P->out;
            int row0 = (pn + a) * RN_PANEL,
                rows = P->out - row0 < RN_PANEL ? P->out - row0 : RN_PANEL;
            for (int r = 0; r < rows; r++)
                yrow[row0 + r] = acc[a][c][r] + (j->bias ? j->bias[row0 + r] : 0.0f);
            if (j->act)
                rn__act(yrow + row0, (size_t)rows, *j->act);
        }
}

/* The last rem (1..3) inputs over np panels: a tile shape per count, so
 * that its accumulators stay in registers. */
AI void tail(const pk_job *j, int p, int np, int b, int rem, rn_dtype t)
{
    if (rem == 1)
        tile(j, p, np, b, 1, t);
    else if (rem == 2)
        tile(j, p, np, b, 2, t);
    else
        tile(j, p, np, b, 3, t);
}

/* Panels [p0, p1) for all n inputs.  A tile needs about 8 independent
 * accumulators to hide the FMA latency: fewer than 4 inputs (one decode
 * row, a short prompt, a small batch) go against four panels at once; more
 * go one panel at a time in tiles of 16 and 4 inputs, and the last n % 4
 * right after them, while the panel is in L1 (against four panels there,
 * they were slower: the panels had left L1).  Two rows against one panel
 * each, as before, took 1.4x one row's time; now 1.25x. */
AI void panels_t(const pk_job *j, int p0, int p1, rn_dtype t)
{
    int n = j->n, rem = n % 4;
    int p = p0;
    if (n < 4) {
        for (; p + 4 <= p1; p += 4)
            tail(j, p, 4, 0, n, t);
        for (; p < p1; p++)
            tail(j, p, 1, 0, n, t);
        return;
    }
    for (; p < p1; p++) {
        int b = 0;
        for (; b + 16 <= n; b += 16)
            tile(j, p, 1, b, 16, t);
        for (; b + 4 <= n; b += 4)
            tile(j, p, 1, b, 4, t);
        if (rem)
            tail(j, p, 1, b, rem, t);
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
        mj.m[k] = (pk_job){outs[k].P, outs[k].y, outs[k].bias, x, n, outs[k].act};
        int per = (outs[k].P->n_panels + pieces - 1) / pieces;
        mj.per_task[k] = per < 4 ? 4 : (per + 3) & ~3;
        mj.first[k + 1] = mj.first[k] + (outs[k].P->n_panels + mj.per_task[k] - 1) / mj.per_task[k];
    }
    rn__pool_run(pool, mj.first[count < MAX_OUTS ? count : MAX_OUTS], task, &mj);
}
