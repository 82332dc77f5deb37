/*
 * plan.h -- the CUDA backend's memory plan and launch shapes, as plain C.
 *
 * Everything the backend decides before touching a device lives here, so it
 * is unit-tested on machines without one (tests/unit/check_cuda_plan.c):
 * how many bytes a state slot takes, how large the activation and scratch
 * buffers must be for a given chunk and batch, and how the recurrent decode
 * step is split into thread blocks.  backend_cuda.cu allocates exactly what
 * the plan says, once, at init.
 */
#ifndef RN_CUDA_PLAN_H
#define RN_CUDA_PLAN_H

#include <stddef.h>

#include "../model.h"
#include "../status.h"

/* Decode batches up to this size use the weight-streaming GEMV kernel (the
 * weights are read once for the whole batch); larger ones use cuBLASLt. */
#define RN_CUDA_GEMV_MAX 8
/* Largest decode batch one step processes; bigger batches are split. */
#define RN_CUDA_MAX_BATCH 256
/* cuBLASLt workspace (NVIDIA recommends 32 MiB on Hopper). */
#define RN_CUDA_LT_WORKSPACE ((size_t)32 << 20)

typedef struct rn_cuda_plan {
    size_t layer_vals;  /* fp32 state values of one layer: H*dk*dv (+ H for torchscale's s) */
    size_t state_vals;  /* of one slot, all layers */
    size_t state_bytes; /* state_vals * 4: device memory per session */
    int n_slots;
    int max_chunk;      /* tokens per prefill step */
    int max_batch;      /* sessions per decode step */
    int max_rows;       /* rows of every activation buffer: max(max_chunk, max_batch) */
    size_t act_bytes;   /* activations: fp32 rows plus one half-precision GEMM input, 256-aligned */
    size_t chunk_bytes; /* chunkwise retention scratch for max_chunk */
    size_t logits_bytes;
    size_t pool_bytes;  /* n_slots * state_bytes */
    size_t total_bytes; /* everything but the weights */
} rn_cuda_plan;

/* Fills *p for config c with n_slots (>= 1) state slots and prefill chunks of
 * up to max_chunk (>= 1) tokens.  RN_EINVAL (message in err) when a size
 * overflows or an argument is out of range. */
int rn_cuda_plan_make(rn_cuda_plan *p, const rn_config *c, int n_slots, int max_chunk,
                      rn_error *err);

/* State slots that fit in budget bytes (0 when not even one does). */
int rn_cuda_slots_for_budget(size_t budget, size_t state_bytes);

/* Thread blocks of the recurrent step: one block per (sequence, head,
 * e_tile columns of the state), e_tile x d_split threads; the d_split warps
 * share the dk rows and their partial read-outs are summed in shared memory. */
typedef struct rn_cuda_step_shape {
    int e_tile;  /* state columns per block (lanes per row) */
    int d_split; /* thread rows splitting the dk state rows */
    int grid_x;  /* n * heads */
    int grid_y;  /* ceil(dv / e_tile) */
} rn_cuda_step_shape;

/* Picks the shape for n sequences on a device with n_sms multiprocessors:
 * full 32-lane rows unless one sequence would leave the device under two
 * blocks per SM, then 16 lanes (still 64-byte segments).  The tile does not
 * depend on n, so a session's output is the same bits in any batch. */
rn_cuda_step_shape rn_cuda_step_plan(int n, int heads, int dk, int dv, int n_sms);

#endif
