/*
 * packed.h -- weight matrices repacked for decode: 16-row panels stored
 * column by column, so one contiguous 16-value load feeds 16 output rows and
 * the whole matrix is read as one sequential stream.
 *
 * bf16 panels hold input pairs: the 32-bit lane r of column pair j is
 * W[r][2j] (low half) and W[r][2j+1] (high half), so one 64-byte load and two
 * integer operations give 32 exact f32 weights.
 *
 * Each output y[r] = b[r] + sum_i W[r][i] x[i] is accumulated in input order
 * i = 0, 1, ... as a multiply then an add per term, in its own vector lane,
 * whatever the batch size or the grouping of rows and inputs: a batched
 * decode equals single decodes bit for bit.
 */
#ifndef RN_CPU_PACKED_H
#define RN_CPU_PACKED_H

#include <stddef.h>

#include "../model.h"
#include "pool.h"

#define RN_PANEL 16

typedef struct rn_packed {
    void *data;     /* n_panels x in (bf16: in rounded up to even) x RN_PANEL
                       values of dtype, zero padded; owned */
    rn_dtype dtype; /* f32, f16 or bf16, as the source */
    int out, in, n_panels;
} rn_packed;

/* Repacks W (out x in).  Returns 0 (p->data owned by p, rn__packed_free) or
 * RN_ENOMEM. */
int rn__pack(rn_packed *p, const rn_tensor *W);
void rn__packed_free(rn_packed *p);

typedef struct rn_packed_out {
    float *y; /* n x out */
    const rn_packed *P;
    const float *bias; /* out, or NULL */
    const rn_act *act; /* applied to y by rn__act as the unfused path does, or NULL:
                           * the workers do it while the outputs are in cache, instead of
                           * one thread after the product */
} rn_packed_out;

/* count products of the same x (n x in) in one parallel run. */
void rn__linear_packed(rn_pool *pool, const rn_packed_out *outs, int count, const float *x, int n);

#endif
