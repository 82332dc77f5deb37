/*
 * retention.h -- the three forms of multi-scale retention for one head.
 *
 * Inputs are already projected, rotated and scaled.  q, k: rows of dk
 * features, v: rows of dv, with row strides (the heads of a token sit side by
 * side).  S is the head's dk x dv state, unnormalised (docs/model-format.md);
 * s (NULL unless torchscale's retention norm) its running decay sum.
 * All three forms give the same outputs in exact arithmetic.
 */
#ifndef RN_CPU_RETENTION_H
#define RN_CPU_RETENTION_H

typedef struct rn_head_io {
    const float *q, *k, *v; /* first row of this head */
    float *o;               /* first output row of this head (dv values) */
    int qk_stride, v_stride, o_stride;
    float *S; /* dk x dv state, updated in place */
    float *s; /* torchscale running sum, or NULL */
    double log_gamma;
    int dk, dv;
} rn_head_io;

/* One token: S = gamma S + k v^T; o = q S (/ sqrt(s)). */
void rn__retention_step(const rn_head_io *h);

/* Scratch floats rn__retention_chunk needs for a chunk of c tokens. */
long rn__retention_chunk_scratch(int c, int dk);
/* c tokens continuing S (chunkwise form). */
void rn__retention_chunk(const rn_head_io *h, int c, float *scratch);

/* Scratch floats for the parallel form over t tokens. */
long rn__retention_parallel_scratch(int t, int dk);
/* t tokens from an empty state (parallel form); leaves the final state in S.
 * ts_clamp: torchscale's parallel-form clamp of each row by max(1, |sum|). */
void rn__retention_parallel(const rn_head_io *h, int t, int ts_clamp, float *scratch);

#endif
