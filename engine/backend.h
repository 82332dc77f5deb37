/*
 * backend.h -- the interface both backends (cpu/, cuda/) implement.
 * Engine-internal: server/ never includes this; it uses retnet.h.
 *
 * A backend owns a fixed pool of per-session recurrent states ("slots"),
 * allocated once at init, so admission is exact arithmetic.  Every entry is
 * synchronous and called from one thread at a time (the engine's caller).
 */
#ifndef RN_BACKEND_H
#define RN_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "retnet.h"
#include "sampler.h"
#include "status.h"

typedef struct rn_backend_ops {
    const char *name; /* "cpu", "cuda" */
    /* RN_OK if the backend can run here (device present, compiled in). */
    int (*probe)(rn_error *err);
    /* Creates a context for m (retained, must outlive the context) with
     * opts->n_slots states.  Returns RN_OK and sets *ctx, owned by the caller
     * (free with deinit). */
    int (*init)(void **ctx, const rn_model *m, const rn_engine_opts *opts, rn_error *err);
    void (*deinit)(void *ctx);
    /* Bytes of one exported state (state_export's buffer size). */
    size_t (*state_bytes)(void *ctx);
    /* Bytes one slot takes in the backend's pool; NULL: state_bytes. */
    size_t (*slot_bytes)(void *ctx);
    int (*state_reset)(void *ctx, int slot);
    int (*state_copy)(void *ctx, int dst_slot, int src_slot);
    int64_t (*state_pos)(void *ctx, int slot);
    int (*state_export)(void *ctx, int slot, float *host, size_t nbytes);
    int (*state_import)(void *ctx, int slot, const float *host, size_t nbytes, int64_t pos);
    /* Runs n tokens of one slot through the model starting from its state
     * (see rn_prefill_opts), advancing it; writes logits for the last token
     * (or all n tokens with RN_LOGITS_ALL) when logits is non-NULL. */
    int (*prefill)(void *ctx, int slot, const int32_t *tokens, int n, const rn_prefill_opts *o,
                   float *logits);
    /* One recurrent step for n slots (distinct), token i into slots[i];
     * logits (n x vocab) when non-NULL. */
    int (*decode)(void *ctx, const int *slots, const int32_t *tokens, int n, float *logits);
    /* decode, then out[i] = rn_argmax_row of row i's logits, picked where the
     * logits are; NULL: the engine decodes into host memory and picks there. */
    int (*decode_argmax)(void *ctx, const int *slots, const int32_t *tokens, int n, int32_t *out);
    /* decode, then out[i] = row i's logits reduced as rn_row_top_fill does at
     * temperature[i] (out[i].n = 0 where temperature[i] < 0), where the
     * logits are; n <= top_batch.  The logits stay where they are for
     * decode_rows until the next call that runs the model.  NULL: the engine
     * decodes into host memory and reduces there. */
    int (*decode_top)(void *ctx, const int *slots, const int32_t *tokens, int n,
                      const float *temperature, rn_row_top *out);
    /* Rows one decode_top may take (its logits stay whole for decode_rows);
     * NULL: every slot. */
    int (*top_batch)(void *ctx);
    /* The last decode_top's logits of rows[0..nrows) to logits + rows[i] * vocab. */
    int (*decode_rows)(void *ctx, const int *rows, int nrows, float *logits);
    /* Device memory in use and in total (NULL: the backend has no device). */
    int (*device_memory)(void *ctx, size_t *used, size_t *total);
    /* Host memory the backend copies logits into fastest (page-locked for
     * CUDA), or NULL on failure; NULL ops: plain malloc/free. */
    void *(*host_alloc)(void *ctx, size_t bytes);
    void (*host_free)(void *ctx, void *p);
    /* Slots that fit in fraction of the device's free memory next to m and
     * the buffers for max_chunk (before any context exists); NULL: the
     * backend has no device memory of its own. */
    int (*fit_slots)(const rn_model *m, int max_chunk, int state_bf16, double fraction, int *slots,
                     rn_error *err);
    /* Whether a device error has left the backend unusable: every later
     * call fails with RN_EDEVICE and only a new process recovers (a CUDA
     * context's errors are sticky).  NULL: the backend never is. */
    int (*lost)(void *ctx);
} rn_backend_ops;

extern const rn_backend_ops rn_cpu_backend;
#ifdef RN_HAVE_CUDA
extern const rn_backend_ops rn_cuda_backend;
#endif

#endif
