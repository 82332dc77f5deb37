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

/* Decode batches up to RN_CUDA_GEMV_DEFAULT rows use the weight-streaming
 * GEMV kernel (the weights are read once for the whole batch, fp32
 * arithmetic); larger ones use the tensor-core GEMV up to
 * RN_CUDA_TC_DEFAULT rows, then cuBLASLt.  Measured on an H100
 * (docs/benchmarks.md, 1.3B bf16, tok/s): the GEMV leads at 1 and 2 rows
 * (581 vs 474, 1,000 vs 929), ties at 3, the tensor-core GEMV leads from 4
 * to 16 (1,725 vs 1,613 at 4, 2,976 vs 2,668 at 8, 4,489 vs 4,378 at 16)
 * and cuBLASLt from 32 (6,636 vs 4,924).  Without the tensor-core kernel (fp32 weights, or a
 * device before sm_80) the GEMV keeps batches up to RN_CUDA_GEMV_NO_TC:
 * on an H200 it led cuBLASLt up to 4 rows (1,701 vs 1,636 tok/s at 4) and
 * fell well behind at 8 (1,718 vs 2,888).  RETNET_CUDA_GEMV_MAX and
 * RETNET_CUDA_TC_MAX move the switches, up to RN_CUDA_GEMV_MAX and
 * RN_CUDA_TC_MAX (the batch sizes the kernels are instantiated for). */
#define RN_CUDA_GEMV_MAX 8
#define RN_CUDA_GEMV_DEFAULT 2
#define RN_CUDA_GEMV_NO_TC 4
/* The tensor-core GEMV (gemv_tc_dev.cuh, gemv_tc_kernel): the folded stores and
 * dependent launch of the GEMV path, with mma.m16n8k16 doing the
 * arithmetic (bf16/fp16 in, fp32 sums), 16 rows an m-tile. */
#define RN_CUDA_TC_MAX 64
#define RN_CUDA_TC_DEFAULT 16
/* Columns of an input row one warp of the GEMV takes (RETNET_CUDA_GEMV_SPLIT;
 * 0: a warp takes whole rows).  With 1024 a warp issues its whole share of
 * a bf16 row at once, and the 2048-output matrices get two to four times
 * the warps: on an H100 (docs/benchmarks.md, with the register-resident
 * norms) 680 vs 651 tok/s at batch 1, 1,110 vs 1,096 at 2. */
#define RN_CUDA_GEMV_SPLIT_DEFAULT 1024
/* Decode batches up to this many rows load their first state rows in the
 * recurrent step ahead of its dependent-launch wait (RETNET_CUDA_STEP_EARLY):
 * on an H100 +1.7% / +3.3% at 1 / 2 rows, on an H200 +2.5% at 1 row and
 * 1-3% slower at 16 and 64 (docs/benchmarks.md). */
#define RN_CUDA_STEP_EARLY_ROWS 2
/* Largest decode batch one step processes; bigger batches are split. */
#define RN_CUDA_MAX_BATCH 256
/* cuBLASLt workspace (NVIDIA recommends 32 MiB on Hopper). */
#define RN_CUDA_LT_WORKSPACE ((size_t)32 << 20)

typedef struct rn_cuda_plan {
    size_t layer_vals;   /* fp32 state values of one layer: H*dk*dv (+ H for torchscale's s) */
    size_t state_vals;   /* of one slot, all layers */
    int state_bf16;      /* the pool holds bf16 values (else fp32) */
    size_t state_bytes;  /* state_vals * 4 or * 2 (bf16): device memory per session */
    size_t export_bytes; /* state_vals * 4: a state as export and import move it */
    size_t layer_scratch_bytes; /* bf16 pools: one layer's state in fp32 (the chunkwise
                                 * products and export/import go through it), else 0 */
    int n_slots;
    int max_chunk;    /* tokens per prefill step */
    int max_batch;    /* sessions per decode step */
    int max_rows;     /* rows of every activation buffer: max(max_chunk, max_batch) */
    size_t act_bytes; /* activations: fp32 rows plus two half-precision GEMM inputs, 256-aligned */
    size_t chunk_bytes;  /* chunkwise retention scratch for max_chunk */
    int ret_piece;       /* retention piece length (rn_cuda_plan_pieces), 0: whole chunks */
    int pieces;          /* full pieces of a max_chunk chunk run together (0: none) */
    size_t pieces_bytes; /* their states (H dk dv floats each) and pointer arrays */
    size_t step_bytes;   /* partial read-outs of the recurrent step: SPLIT_MAX x max_batch x V */
    size_t logits_bytes;
    size_t top_bytes;   /* a decode step's rows reduced for sampling, then its input block */
    size_t pool_bytes;  /* n_slots * state_bytes */
    size_t total_bytes; /* everything but the weights */
} rn_cuda_plan;

/* The widest input a projection reads: max(hidden, value dim, FFN width);
 * the first half-precision input buffer holds that many values a row. */
size_t rn_cuda_widest_input(const rn_config *c);

/* A decode step's inputs, as the host packs them for n rows into one
 * block that a single copy takes to the device (rn_cuda_step_in_layout):
 * byte offsets of the positions (int64), the token ids (int32; greedy's
 * picks are written back over them), the slots (int) and the sampling
 * temperatures (float), each n long, and the block's length, 20 n bytes.
 * Packed for n rather than at fixed room for max_batch, so the copy moves
 * only what the step reads; a decode graph is made for one n, so the
 * offsets it was captured with stay right for every launch of it. */
typedef struct rn_cuda_step_in {
    size_t pos, tok, slots, temps, bytes;
} rn_cuda_step_in;

rn_cuda_step_in rn_cuda_step_in_layout(int n);

/* Bytes of a decode step's rows reduced for sampling (max_batch
 * rn_row_top), 256-aligned: the input block (rn_cuda_step_in) follows them
 * in the top_bytes allocation. */
size_t rn_cuda_top_rows_bytes(int max_batch);

/* Where the chunk scratch (chunk_bytes) puts its parts, in floats from its
 * start, for chunks of up to C tokens: the score matrix A at 0 (H C C),
 * then qd and kd (H C dk each), the two decay tables (H (C + 2) in all) and
 * the running sums (H C).  Each part starts on 256 bytes, as the vector
 * loads and cuBLAS's fast paths on the batched pieces' addresses need
 * whatever C is.  off: qd, kd, the tables, the sums, the end. */
void rn_cuda_chunk_offsets(const rn_config *c, size_t C, size_t off[5]);

/* Fills *p for config c with n_slots (>= 1) state slots (bf16 values when
 * state_bf16, else fp32) and prefill chunks of up to max_chunk (>= 1)
 * tokens.  RN_EINVAL (message in err) when a size overflows or an argument
 * is out of range; RN_EUNSUPPORTED for bf16 states of a model with
 * torchscale's normaliser (its running sums stay fp32 only). */
int rn_cuda_plan_make(rn_cuda_plan *p, const rn_config *c, int n_slots, int max_chunk,
                      int state_bf16, rn_error *err);

/* The retention piece length for prefill chunks of up to max_chunk tokens
 * (RETNET_CUDA_RET_CHUNK overrides; 0: whole chunks).  The decay mask and
 * the masked products grow with the square of the piece, the states
 * carried between pieces with their number.  On an H100 (1.3B bf16, tok/s
 * at 2k and 8k prompts, docs/benchmarks.md): 1024-token chunks 95k in
 * pieces of 256, 92k of 512, 89k whole; 2048- to 8192-token chunks
 * 104-108k in pieces of 512, 96-101k of 256, 97-106k of 1024, 46-87k
 * whole (4096 and 8192).  Models with torchscale's retention normaliser
 * keep whole chunks: their pieces cannot be batched (the normaliser's
 * running sums pass from piece to piece), and one piece after another was
 * slower (72k vs 78k tok/s at 256-token pieces of 1024-token chunks,
 * docs/architecture.md). */
int rn_cuda_ret_piece_default(const rn_config *c, int max_chunk);

/* Retention in pieces of piece tokens (RETNET_CUDA_RET_CHUNK): when a
 * max_chunk chunk holds at least two full pieces, the full pieces of a chunk
 * run as one batch of (piece, head) products, which needs each piece's
 * entering state (H x dk x dv floats) and RN_CUDA_PIECE_ARRAYS device
 * arrays of operand addresses (pieces x H each); adds them to *p
 * (pieces_bytes, total_bytes).  piece 0 or >= max_chunk: one piece, nothing
 * added. */
#define RN_CUDA_PIECE_ARRAYS 10
void rn_cuda_plan_pieces(rn_cuda_plan *p, const rn_config *c, int piece);

/* State slots that fit in budget bytes (0 when not even one does). */
int rn_cuda_slots_for_budget(size_t budget, size_t state_bytes);

/* Sized from the free device memory, slots are never so many that the
 * host's logits buffer (one row of vocab floats per slot, page-locked)
 * passes this size. */
#define RN_CUDA_AUTO_LOGITS_BYTES ((size_t)512 << 20)

/* Slots for a device with free_bytes free: fraction of it, less fixed_bytes
 * (weights and buffers), in states of state_bytes, capped by
 * RN_CUDA_AUTO_LOGITS_BYTES / logits_row_bytes (0: no cap) and by 1 << 20.
 * 0 when not even one fits. */
int rn_cuda_slots_for_device(size_t free_bytes, double fraction, size_t fixed_bytes,
                             size_t state_bytes, size_t logits_row_bytes);

/* Most blocks one head's dk state rows are split over in the recurrent step;
 * the step's scratch holds this many partial read-outs per row. */
#define RN_CUDA_STEP_SPLIT_MAX 8

/* Thread blocks of the recurrent step.  A block covers one (sequence, head),
 * lanes x vec state columns and a 1/row_split share of the dk state rows;
 * its d_split thread rows each stream several state rows with all their loads
 * issued before any store, so enough bytes are in flight to approach the copy
 * bandwidth.  With row_split > 1 each block writes a partial read-out and the
 * group norm sums them (in a fixed order). */
typedef struct rn_cuda_step_shape {
    int vec;       /* state columns per thread: 4 (float4) or 1 */
    int lanes;     /* threads across the columns */
    int d_split;   /* thread rows of a block */
    int row_split; /* blocks sharing a head's rows */
    int grid_x;    /* n * heads */
    int grid_y;    /* ceil(dv / (lanes * vec)) */
} rn_cuda_step_shape;

/* Picks the shape for n sequences of config c on a device with n_sms
 * multiprocessors.  Only grid_x depends on n: one sequence is enough to spread
 * the rows over the device, and every session's output is summed in the same
 * order, so its bits are the same in any batch.  vec is 4 only when every
 * head's block of state is 16-byte aligned. */
rn_cuda_step_shape rn_cuda_step_plan(const rn_config *c, int n, int n_sms);

/* The tensor-core GEMV's split of the input width among a block's warps:
 * k_per_warp each (whole RN_TC_KBLOCK blocks), no warp left empty, at most
 * max_warps (<= RN_CUDA_TC_WARPS_MAX) warps.  It starts from
 * RN_CUDA_TC_K_PER_WARP and halves the share (down to 64) while the grid of
 * blocks blocks gives fewer than RN_CUDA_TC_WARPS_PER_SM warps per SM: a
 * warp keeps a fixed number of bytes in flight, so the warps are the
 * memory parallelism. */
#define RN_CUDA_TC_WARPS_MAX 16
#define RN_CUDA_TC_K_PER_WARP 256
#define RN_CUDA_TC_WARPS_PER_SM 8
typedef struct rn_cuda_tc_shape {
    int warps;
    int k_per_warp;
} rn_cuda_tc_shape;

/* want_kpw > 0 (RETNET_CUDA_TC_KPW) takes that share instead, in whole
 * RN_TC_KBLOCK blocks, more where max_warps would not cover the width. */
rn_cuda_tc_shape rn_cuda_tc_plan(int in, long blocks, int n_sms, int max_warps, int want_kpw);

/* The ring of cp.async stages that gemv_tc_async_kernel streams the
 * weights through (RETNET_CUDA_TC_ASYNC): a stage is one round of a warp's
 * loads (8 pieces of 16 bytes a lane), and a warp has 2 to
 * RN_CUDA_TC_STAGES_MAX of them.  rn_cuda_tc_stages gives the stages for
 * a launch of warps warps a block whose warps take rounds rounds of k
 * each: as many as the rounds (the warp's whole share in flight at once),
 * at most want (0: none, the register kernel) and RN_CUDA_TC_STAGES_MAX, at
 * least 2, fewer while two blocks' rings (and the RN_CUDA_SMEM_RESERVED
 * the device keeps a block) would not fit in smem_sm bytes an SM has; 0
 * when even 2 stages exceed smem_block, the most a block may have. */
#define RN_CUDA_TC_STAGES_MAX 4
#define RN_CUDA_TC_STAGE_BYTES 4096
#define RN_CUDA_SMEM_RESERVED 1024
int rn_cuda_tc_stages(int want, int rounds, int warps, size_t smem_block, size_t smem_sm);

/* Groups of 8 row pairs a block of the tensor-core GEMV takes for pairs row
 * pairs at up to 32 rows: 2 (each input piece loaded serves twice the
 * weights) while that still gives every SM two blocks, else 1; want 1 or 2
 * (RETNET_CUDA_TC_GROUPS) takes that many instead. */
int rn_cuda_tc_groups(size_t pairs, int n_sms, int want);

/* The stream-K launch of the tensor-core GEMV (RETNET_CUDA_TC_STREAM,
 * gemv_tc_stream_kernel): groups pair groups of in columns as units of one
 * group by one RN_TC_KBLOCK block of k (kb of them a group), over a grid of
 * RN_CUDA_TC_STREAM_WARPS_PER_SM warps an SM (never more warps than units)
 * in blocks of RN_CUDA_TC_STREAM_BLOCK_WARPS, each warp a contiguous run of
 * units (tc_layout.h, rn_tc_stream_begin).  A warp whose run covers only
 * part of a group leaves that part's sums in a slot of its own, and the
 * group's last warp to finish adds its parts in warp order: slots is the
 * most groups one warp's run can touch.  The grid depends on the device's
 * SMs and the set's shape, never on the rows, so neither do the sums'
 * order and bits.  spread bounds the warps one group's units fall to, so
 * the slots its last warp reads: a launch whose groups would spread over
 * more than RN_CUDA_TC_STREAM_SPREAD_MAX warps -- few groups of a long
 * input width, as the 1.3B o and down projections (64 groups of 128 and
 * 171 units on 2,112 warps: about 33 each) -- is not planned (warps 0): its last
 * warps would read dozens of slots one after another at the launch's end,
 * and the register kernel's grid of whole groups is about one wave there
 * anyway (128 blocks on 132 SMs).  warps 0: not this kernel. */
#define RN_CUDA_TC_STREAM_BLOCK_WARPS 8
#define RN_CUDA_TC_STREAM_WARPS_PER_SM 16
#define RN_CUDA_TC_STREAM_SPREAD_MAX 8
typedef struct rn_cuda_tc_stream {
    long long units;
    int kb, warps, blocks, slots, spread;
} rn_cuda_tc_stream;
rn_cuda_tc_stream rn_cuda_tc_stream_plan(long groups, int in, int n_sms);
/* Bytes of partial sums a launch of plan s needs at acc floats a lane (MT
 * NT 8 in the kernel): slots for each warp, 32 lanes a slot. */
size_t rn_cuda_tc_stream_part_bytes(const rn_cuda_tc_stream *s, int acc);

/* The buffers the stream-K launches of n_layers layers' projections need
 * on n_sms SMs for batches up to tc_max rows: the partial sums' bytes (the
 * most any one launch needs), and in *groups the most pair groups of one
 * launch (a counter each).  A launch's sets are q/k/v/g, o, up with the
 * gate, down and the LM head, each taken as at most one pair a row (GLU's
 * pairs; plain ones have half as many), in the shapes rk_gemv_tc gives
 * those rows (tc_stream_with_shape). */
size_t rn_cuda_tc_stream_bytes(const rn_weights *w, int n_layers, int n_sms, int tc_max,
                               long *groups);

/* 16-byte weight loads in flight per lane for a launch of mtiles m-tiles,
 * groups pair groups and k_per_warp: want (RETNET_CUDA_TC_LOADS) when it is
 * 16 and one m-tile and one group take a whole 16-load round (256 k), else
 * 8.  The loads only regroup the same k blocks, so never change a bit. */
int rn_cuda_tc_loads(int want, int mtiles, int groups, int k_per_warp);

/* The shares of a head's dv value columns the fused retention read-out
 * (ret_fused_kernel) gives a block each, for a launch of blocks blocks
 * with one share on n_sms SMs, by want: RN_CUDA_RET_SPLIT_AUTO (the
 * engine's default, RETNET_CUDA_RET_SPLIT unset or 1): doubled while the
 * doubled grid still fits one block an SM, the kernel's occupancy; 0 or 1
 * share (RETNET_CUDA_RET_SPLIT=0): one; 2 or 4: that many.
 * Each share forms the scores again (dk a key) for its dv / shares
 * columns, so shares stay at least RN_CUDA_RET_SPLIT_MIN_DV wide and
 * whole 64-column multiples: fewer where dv does not allow want.  A short
 * prompt's chunk has few (piece, head)s -- 512 tokens of the 1.3B shape
 * give 64 blocks on an H100's 132 SMs -- so half the SMs would idle. */
#define RN_CUDA_RET_SPLIT_AUTO (-1)
#define RN_CUDA_RET_SPLIT_MAX 4
#define RN_CUDA_RET_SPLIT_MIN_DV 128
int rn_cuda_ret_parts(long blocks, int dv, int n_sms, int want);

/* Whether a matrix of dtype t and input width in can go through the
 * tensor-core GEMV: bf16 or fp16, rows on 16 bytes (in % 8 == 0). */
int rn_cuda_tc_fits(int t, int in);

/* The matrices the projections read: layer l's eight (absent ones have no
 * data) and the LM head, into m. */
#define RN_CUDA_MATRICES 9
void rn_cuda_layer_matrices(const rn_weights *w, int l, const rn_tensor *m[RN_CUDA_MATRICES]);

/* Whether every matrix of n_layers layers fits the tensor-core GEMV
 * (rn_cuda_tc_fits): the backend takes that path only then. */
int rn_cuda_tc_weights_fit(const rn_weights *w, int n_layers);

#endif
