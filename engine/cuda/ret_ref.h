/* The problems and double-precision reference that check the tensor-core
 * retention read-out (ret_fused.cuh): on a device (measure.cu,
 * rn_cuda_ret_fused_check) and on the CPU through the unit tests'
 * emulation (tests/unit/ret_emu.cc), from the same values.  Plain C, no
 * CUDA. */
#ifndef RN_CUDA_RET_REF_H
#define RN_CUDA_RET_REF_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../rn_math.h"
#include "../util.h" /* rn__f32_to_bf16 */
#include "rk_half.h" /* rk_group_norm */

/* pieces pieces of P rows and H heads of dk, dv values, in one buffer of
 * total floats: q, k (rows x H dk, rows = pieces P) | v, o (rows x H dv) |
 * S (count = pieces H states of dk x dv, row-major at (piece H + head) dk
 * dv: the states entering the pieces) | pw (H x (P+1) decay powers).
 * Offsets in floats. */
typedef struct {
    int P, pieces, H, dk, dv, count;
    size_t q, k, v, o, S, pw, total;
} rf_problem;

static inline rf_problem rf_problem_make(int P, int pieces, int H, int dk, int dv)
{
    rf_problem p;
    size_t rows = (size_t)pieces * (size_t)P;
    p.P = P, p.pieces = pieces, p.H = H, p.dk = dk, p.dv = dv, p.count = pieces * H;
    p.q = 0;
    p.k = p.q + rows * (size_t)H * (size_t)dk;
    p.v = p.k + rows * (size_t)H * (size_t)dk;
    p.o = p.v + rows * (size_t)H * (size_t)dv;
    p.S = p.o + rows * (size_t)H * (size_t)dv;
    p.pw = p.S + (size_t)p.count * (size_t)dk * (size_t)dv;
    p.total = p.pw + (size_t)H * (size_t)(P + 1);
    return p;
}

/* A uniform value in [lo, hi) from *seed (advanced). */
static inline float rf_uniform(uint32_t *seed, float lo, float hi)
{
    *seed = *seed * 1664525u + 1013904223u;
    return lo + (hi - lo) * (float)(*seed >> 8) * 0x1p-24f;
}

/* q, k, v uniform in [-1, 1) (v all 0 with zero_v: the inter-piece term
 * alone, which the decays make small next to the rest in later rows), o
 * NaN (an output a kernel leaves unwritten fails the comparison), states
 * uniform in [-2, 2), and decays from 0.9 down to 0.55 over the heads:
 * fast, so an exponent off by one shows. */
static inline void rf_problem_fill(const rf_problem *p, float *h, int zero_v, uint32_t seed)
{
    for (size_t i = p->q; i < p->o; i++)
        h[i] = rf_uniform(&seed, -1.0f, 1.0f);
    if (zero_v)
        for (size_t i = p->v; i < p->o; i++)
            h[i] = 0.0f;
    for (size_t i = p->o; i < p->S; i++)
        h[i] = NAN;
    for (size_t i = p->S; i < p->pw; i++)
        h[i] = rf_uniform(&seed, -2.0f, 2.0f);
    for (int hh = 0; hh < p->H; hh++) {
        double g = 0.9 - 0.35 * hh / (p->H > 1 ? p->H - 1 : 1);
        for (int t = 0; t <= p->P; t++)
            h[p->pw + (size_t)hh * (size_t)(p->P + 1) + (size_t)t] = (float)pow(g, t);
    }
}

/* |got - want| over mag, folded into the worst so far (NaN stays). */
static inline double rf_worse(double worst, double got, double want, double mag)
{
    double e = fabs(got - want) / (mag + 1e-30);
    return e > worst || e != e ? e : worst;
}

/* One (piece, head)'s masked scores in double: sc[i][j] = g^(i-j) q_i.k_j
 * for j <= i, sa the same over the products' absolute values (P x P
 * each); q, k: its rows (row stride ld). */
static inline void rf_scores(double *sc, double *sa, const float *q, const float *k,
                             const float *pw, int P, int dk, int ld)
{
    for (int i = 0; i < P; i++)
        for (int j = 0; j <= i; j++) {
            double s = 0.0, a = 0.0;
            for (int m = 0; m < dk; m++) {
                double t = (double)q[(size_t)i * ld + m] * k[(size_t)j * ld + m];
                s += t;
                a += fabs(t);
            }
            sc[(size_t)i * P + j] = (double)pw[i - j] * s;
            sa[(size_t)i * P + j] = (double)pw[i - j] * a;
        }
}

/* One (piece, head)'s read-outs o (row stride ldv) against the
 * double-precision sums -- the masked scores (rf_scores) times v, plus
 * q_i g^(i+1) against the entering state st (dk x dv), whose terms'
 * absolute values sum to sm -- each over the sum of its terms' absolute
 * values, folded into the worst so far. */
static inline double rf_readout_worse(double w, const float *o, const double *sc, const double *sa,
                                      const float *q, const float *v, const double *st,
                                      const double *sm, const float *pw, int P, int dk, int dv,
                                      int ldk, int ldv)
{
    for (int i = 0; i < P; i++)
        for (int c = 0; c < dv; c++) {
            double sum = 0.0, mag = 0.0;
            for (int j = 0; j <= i; j++) {
                sum += sc[(size_t)i * P + j] * v[(size_t)j * ldv + c];
                mag += sa[(size_t)i * P + j] * fabs((double)v[(size_t)j * ldv + c]);
            }
            for (int m = 0; m < dk; m++) {
                double qg = (double)pw[i + 1] * q[(size_t)i * ldk + m];
                sum += qg * st[(size_t)m * dv + c];
                mag += fabs(qg) * sm[(size_t)m * dv + c];
            }
            w = rf_worse(w, o[(size_t)i * ldv + c], sum, mag);
        }
    return w;
}

/* The n values of a state at s into st, their absolute values into sm. */
static inline void rf_state_load(double *st, double *sm, const float *s, size_t n)
{
    for (size_t e = 0; e < n; e++) {
        st[e] = s[e];
        sm[e] = fabs(st[e]);
    }
}

/* Scratch of the references: the scores (2 P x P) and a state (2 dk x dv),
 * in double; NULL when out of memory. */
static inline double *rf_scratch(const rf_problem *p)
{
    return (double *)malloc(sizeof(double) * 2 *
                            ((size_t)p->P * (size_t)p->P + (size_t)p->dk * (size_t)p->dv));
}

/* The largest error of the read-outs in h's o (the entering states in S)
 * against the double-precision sums (rf_readout_worse; check_forms.c
 * argues the bound); -1 when out of memory. */
static inline double rf_fused_worst(const rf_problem *p, const float *h)
{
    int P = p->P, dk = p->dk, dv = p->dv, HK = p->H * dk, HV = p->H * dv;
    size_t hkv = (size_t)dk * (size_t)dv, pp = (size_t)P * (size_t)P;
    double *sc = rf_scratch(p), w = 0.0;
    if (!sc)
        return -1.0;
    double *sa = sc + pp, *st = sa + pp, *sm = st + hkv;
    for (int b = 0; b < p->count; b++) {
        size_t piece = (size_t)(b / p->H), hh = (size_t)(b % p->H);
        size_t rk = piece * (size_t)P * HK + hh * dk, rv = piece * (size_t)P * HV + hh * dv;
        const float *pw = h + p->pw + hh * (size_t)(P + 1);
        rf_scores(sc, sa, h + p->q + rk, h + p->k + rk, pw, P, dk, HK);
        rf_state_load(st, sm, h + p->S + (size_t)b * hkv, hkv);
        w = rf_readout_worse(w, h + p->o + rv, sc, sa, h + p->q + rk, h + p->v + rv, st, sm, pw, P,
                             dk, dv, HK, HV);
    }
    free(sc);
    return w;
}

/* The fused read-out's group norm and gate (rk_group_norm, gn) against
 * its definition, from the plain read-outs o (groups of dv values: a
 * (row, head) each; the gate at the same places): each group's mean and
 * factor from sums in double, each value as norm_value forms it, an
 * operation at a time in float, rounded to bf16.  got: the kernel's
 * values.  *differ: the values whose bits differ; *worst: the largest
 * difference in units of the reference's last bf16 place (NaN where got
 * is NaN). */
static inline void rf_norm_compare(const float *o, const uint16_t *got, size_t groups, int dv,
                                   const struct rk_group_norm *gn, long *differ, double *worst)
{
    *differ = 0, *worst = 0.0;
    for (size_t g = 0; g < groups; g++) {
        const float *x = o + g * (size_t)dv;
        double s = 0.0, ss = 0.0;
        for (int k = 0; k < dv; k++)
            s += x[k], ss += (double)x[k] * x[k];
        double mu = gn->layer_kind ? s / dv : 0.0;
        float r = rn_norm_factor(gn->layer_kind ? fmax(ss - s * mu, 0.0) : ss, dv, gn->eps);
        for (int k = 0; k < dv; k++) {
            size_t i = g * (size_t)dv + (size_t)k;
            float v = (float)((double)x[k] - mu) * r;
            v = gn->w ? v * gn->w[k] : v;
            v = gn->gate ? v * rn_act_apply(gn->act, gn->gate[i]) : v;
            uint16_t want = rn__f32_to_bf16(v);
            int e = 0;
            frexp(rn__bf16_to_f32(want), &e);
            double ulp = ldexp(1.0, e - 8),
                   d = fabs(rn__bf16_to_f32(got[i]) - rn__bf16_to_f32(want));
            *differ += got[i] != want;
            *worst = d / ulp > *worst || d != d ? d / ulp : *worst;
        }
    }
}

#endif
