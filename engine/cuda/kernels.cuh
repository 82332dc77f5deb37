/*
 * kernels.cuh -- launchers of the CUDA backend's own kernels (kernels.cu).
 * Every launcher enqueues on stream st and returns at once; errors surface at
 * the backend's next synchronisation (cudaGetLastError / the stream).
 *
 * Layouts match the CPU backend's: activations are row-major, one row per
 * token (or per sequence in a decode batch); q, k are [row][head][dk], v, g,
 * o are [row][head][dv]; a state slot is, per layer, H blocks of dk x dv
 * values (key-major) then, for torchscale's retention norm, H values of s.
 */
#ifndef RN_CUDA_KERNELS_CUH
#define RN_CUDA_KERNELS_CUH

#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

#include "rk_gemv.h"
#include "rk_half.h"
#include "rk_step.h"

/* Launches by the calling thread use programmatic dependent launch while
 * on != 0 (kernels.cu: each kernel may then be scheduled while its
 * predecessor finishes).  Only for stretches of the stream made of this
 * file's kernels: every one of them waits for its predecessor before reading
 * or writing anything it shares, cuBLAS's do not.  rk_embed is never launched
 * so: it follows the host's copies. */
void rk_set_pdl(int on);
/* Whether the loaded kernels can be launched that way (built for sm_90+). */
int rk_pdl_supported(void);

/* x[i] = scale * E[tok[i]] as fp32 (E of dtype t: an rn_dtype value). */
void rk_embed(cudaStream_t st, float *x, const void *E, int t, const int32_t *tok, int n, int D,
              float scale);

/* y[i] = norm(x[i]) (LayerNorm when layer_kind, else RMSNorm) * w + b, over d
 * values per row; w, b may be NULL.  With gate non-NULL the result is then
 * multiplied by act(gate[i]) (the retention output gate).  y may equal x.
 * With h.p the result goes to h instead of y (all the norms below too). */
void rk_norm(cudaStream_t st, float *y, const float *x, int rows, int d, int layer_kind,
             const float *w, const float *b, float eps, const float *gate, int act,
             rk_half h = rk_half());

/* The norms this thread launches next hold each row in registers
 * (norm_vec_kernel: one read of the row, other bits) where on, else
 * norm_kernel; read while launching or capturing. */
void rk_set_norm_vec(int on);

/* rk_norm over the sum of parts partial inputs x + p * part_stride (the
 * recurrent step's split read-outs); y must not overlap them. */
void rk_norm_parts(cudaStream_t st, float *y, const float *x, int parts, size_t part_stride,
                   int rows, int d, int layer_kind, const float *w, const float *b, float eps,
                   const float *gate, int act, rk_half h = rk_half());

/* x = alpha x + res (the residual stream, updated in place), then
 * y = norm(x) * w + b: the residual add fused into the next block's norm. */
void rk_add_norm(cudaStream_t st, float *y, float *x, const float *res, float alpha, int rows,
                 int d, int layer_kind, const float *w, const float *b, float eps,
                 rk_half h = rk_half());

/* Scales q (scale_k == 0) or k (scale_k != 0) by scale, then rotates both
 * (rotary != 0) at positions pos[row] with per-feature frequencies freq.
 * cp (or NULL): the fused read-out's bf16 operands this pass writes too
 * (rk_qk_copies); returns 1 when it wrote them (rotary with an even dk:
 * one kernel does the scaling and the rotation), else 0 (the caller makes
 * them itself). */
int rk_qk_prepare(cudaStream_t st, float *q, float *k, int n, int H, int dk, const int64_t *pos,
                  const float *freq, int rotary, int interleaved, int scale_k, float scale,
                  const rk_qk_copies *cp = NULL);
/* rk_qk_prepare calls so far in this process that wrote the copies. */
long rk_qk_half_passes(void);

/* One recurrent step for n sequences: for sequence i, head h, the state of
 * slot slots[i]: S = g S + k v^T, o = q S (/ sqrt(s) with s = g s + 1 when
 * the layer has s).  gamma[h] = g (fp32).  Launch shape sh (plan.h); with
 * sh->row_split > 1, share p of the read-out goes to o + p * part_stride.
 * early != 0: the slot indices and the first state rows are read before
 * the dependent-launch wait (only where no earlier kernel of the stream may
 * still write the states or the slot indices: a decode step after the
 * host's copies); early 0 reads nothing before it. */
void rk_ret_step(cudaStream_t st, float *o, size_t part_stride, rk_states S, const int *slots,
                 const float *q, const float *k, const float *v, const float *gamma, int n, int H,
                 int dk, int dv, const struct rn_cuda_step_shape *sh, int early = 0);

/* dst = n bf16 values src as fp32, and back (rounded to nearest even): a
 * bf16 pool's layer state around the chunkwise products, export, import. */
void rk_state_expand(cudaStream_t st, float *dst, const void *src, size_t n);
void rk_state_compress(cudaStream_t st, void *dst, const float *src, size_t n);

/* pw[h*(C+1) + d] = g_h^d for d in [0, C] (fp32, from log_gamma in double). */
void rk_decay_table(cudaStream_t st, float *pw, const double *log_gamma, int H, int C);
/* A[b] (C x C, row-major) *= decay mask of head b % H, for b < count. */
void rk_decay_mask(cudaStream_t st, float *A, const float *pw, int count, int H, int C);
/* pieces full pieces of P rows (src row stride H*dk) as chunks of their own:
 * dst[p][h][i][:] = src[p P + i][h][:] * pw[h][key ? P-1-i : i+1] (pw the
 * table for P); pieces = 1, P = C: one chunk, dst[h][i][:].  dst: fp32, or
 * with bf16 the products rounded to bf16. */
void rk_scale_pieces(cudaStream_t st, void *dst, const float *src, const float *pw, int H, int P,
                     int pieces, int dk, int key, int bf16 = 0);
/* The layer state Sl (hkv fp32 values, H heads) through pieces pieces of P
 * tokens: U[p] (hkv values: the piece's sum of g^(P-1-j) k_j^T v_j) becomes
 * the state entering piece p -- or with Uh non-NULL, that state goes
 * rounded to bf16 into Uh[p] instead (rk_ret_fused's operand) -- and Sl
 * the state after the last one. */
void rk_scan_pieces(cudaStream_t st, float *Sl, float *U, void *Uh, const float *pw, int H, int P,
                    int pieces, size_t hkv);
/* Chunkwise retention's read-out on bf16 tensor cores in one launch
 * (sm_80 or later): for pieces full pieces of P rows and H heads, o (fp32,
 * row stride H dv) = each row's masked intra-piece read-out plus g^(i+1)
 * q_i U_b, U_b the dk x dv state entering (piece, head) b (row-major at
 * b dk dv) -- what retention_batched's products, decay mask and query
 * scaling give -- from q, k (row stride H dk), v (H dv) and U in bf16
 * (16-byte aligned), pw the decay table for P.  A block owns 64 rows of
 * a (piece, head) and all of dv, up to 512 (ret_fused.cuh).  Only where
 * rk_ret_fused_fits(P, dk, dv, the device's opt-in shared memory per
 * block); returns -1 when the launch could not be set up. */
int rk_ret_fused_fits(int P, int dk, int dv, size_t smem_max);
size_t rk_ret_fused_smem(int dk, int dv);
/* The same for the instance that normalises its rows (gn below): at least
 * a 64-row fp32 tile of dv; 0 where the kernel has no instance. */
size_t rk_ret_fused_norm_smem(int dk, int dv);
/* Lets the kernel for these head widths take its shared memory on the
 * current device, whose opt-in allowance a block is smem_optin (a setting
 * of the device's context: once per engine); 0, or -1 when the device
 * refuses. */
int rk_ret_fused_prepare(int dk, int dv, size_t smem_optin);
/* The same for the instance that normalises its rows (gn below, whole
 * heads): 0, or -1 where its shared memory does not fit or the device
 * refuses. */
int rk_ret_fused_prepare_norm(int dk, int dv, size_t smem_optin);
/* Launches of rk_ret_fused so far in this process, for tests. */
long rk_ret_fused_launches(void);
/* Those of them with dv in more than one share. */
long rk_ret_fused_split_launches(void);
/* Those of them that applied the group norm (gn). */
long rk_ret_fused_normed_launches(void);
/* Those of them that ran in wide warps (wide, and a share that allows it). */
long rk_ret_fused_wide_launches(void);
/* parts: the shares of dv, a block each (rn_cuda_ret_parts; the bits do
 * not depend on it), for each of the (piece, head)s' RK_RET_FUSED_ROWS-row
 * query tiles.  gn (NULL, or gn->h NULL: none; with parts 1 only): the
 * rows normalised and gated into gn->h instead of stored in o
 * (rk_group_norm).  wide, where a share's 64-column count is even: the
 * products' warps take 32 rows by dv / 8 columns and the scores' warps 16
 * rows by 32 keys, instead of 16 by dv / 4 and 16 by 16 (about a third
 * fewer fragments loaded from shared memory); the bits do not depend on
 * it (RETNET_CUDA_RET_WIDE). */
#define RK_RET_FUSED_ROWS 64
int rk_ret_fused(cudaStream_t st, float *o, const void *q, const void *k, const void *v,
                 const void *U, const float *pw, int pieces, int H, int P, int dk, int dv,
                 int parts, const rk_group_norm *gn, int wide);
/* The slot's layer state S[h] *= pw[h][C] (before adding the chunk's k v^T). */
void rk_decay_state(cudaStream_t st, rk_states S, int slot, const float *pw, int H, int C,
                    size_t hkv);
/* torchscale: o[i][h] /= sqrt(s_i), s_i = s0 g^(i+1) + sum_{t<=i} g^t; s = s_{C-1}.
 * sums: scratch of H*C floats. */
void rk_ts_chunk(cudaStream_t st, float *o, rk_states S, int slot, const float *pw, float *sums,
                 int H, int C, int dv);

/* x = act(x) over n values (with h.p: into h instead). */
void rk_act(cudaStream_t st, float *x, size_t n, int act, rk_half h = rk_half());
/* up = up * act(gate) over n values (with h.p: into h instead). */
void rk_glu(cudaStream_t st, float *up, const float *gate, size_t n, int act,
            rk_half h = rk_half());
/* h = up * act(gate) over n values, up and gate in h.t (bf16 or fp16), the
 * product formed in fp32 and rounded into h.p. */
void rk_glu_halves(cudaStream_t st, rk_half h, const void *up, const void *gate, size_t n, int act);
/* out[r] = rn_argmax_row of logits row r (rows x V): greedy's token. */
void rk_argmax_rows(cudaStream_t st, int32_t *out, const float *logits, int rows, int V);
/* out[r] = logits row r (rows x V) reduced as rn_row_top_fill reduces it
 * at temperature[r] (sampler.h): its RN_TOP_CANDIDATES first ids in the
 * sampler's order, the same set bit for bit, and its sums in double (their
 * order of addition differs); out[r].n = 0 where temperature[r] < 0. */
void rk_top_rows(cudaStream_t st, struct rn_row_top *out, const float *logits,
                 const float *temperature, int rows, int V);
/* x = alpha x + y over n values. */
void rk_residual(cudaStream_t st, float *x, const float *y, size_t n, float alpha);
/* y[r][c] += b[c] */
void rk_add_bias(cudaStream_t st, float *y, const float *b, int rows, int cols);
/* dst (t: bf16 or f16) = src rounded to nearest even */
void rk_to_half(cudaStream_t st, void *dst, const float *src, size_t n, int t);

/* Every job of set over the same n <= RN_CUDA_GEMV_MAX input rows x (n x
 * in): each weight matrix (dtype t) streamed once for the whole batch, fp32
 * activations and accumulation.  split > 0: the input width split over a
 * block's warps in shares of split columns (rounded up to 32) where it
 * spans 2 to 8 of them (gemv_split_kernel: other bits, the same for every
 * batch), else a warp per row pair (gemv_kernel). */
void rk_gemv_multi(cudaStream_t st, const rk_gemv_set *set, int t, const float *x, int n, int in,
                   int split);

/* Bytes of shared memory gemv_norm_kernel may use, its normalised rows (n x
 * in floats) and its static sums together: no opt-in needed. */
#define RK_GEMV_NORM_SMEM (48u << 10)
/* Whether rk_gemv_multi_norm takes n rows of in values of weights of dtype
 * t in shares of split columns with nm's norm of the raw rows src: the
 * shape rk_gemv_multi gives gemv_split_kernel (2 to 8 shares, vector
 * loads), this thread's norms on norm_vec_kernel's path (rk_set_norm_vec),
 * the rows and the kernel's own shared memory within RK_GEMV_NORM_SMEM;
 * for a group norm also whole groups a row, the block's threads a multiple
 * of a group's, and src, its parts and the gate on 16 bytes. */
int rk_gemv_norm_fits(int t, int n, int in, int split, const struct rk_gemv_norm *nm,
                      const float *src);
/* rk_gemv_multi on nm's norm of the raw rows xraw (n x in; with a group
 * norm, the first of its parts), formed by the GEMV's blocks themselves
 * (gemv_norm_kernel): the bits of rk_norm (or rk_norm_parts) into a
 * buffer, then rk_gemv_multi on it, without the norm launch.  Only where
 * rk_gemv_norm_fits; n_sms: the device's multiprocessors (the blocks stay
 * resident). */
void rk_gemv_multi_norm(cudaStream_t st, const rk_gemv_set *set, int t, const float *xraw, int n,
                        int in, int split, const struct rk_gemv_norm *nm, int n_sms);
/* Asks, outside any graph capture, how many blocks of
 * rk_gemv_multi_norm's kernels for dtype t, 1..max_n rows of in values,
 * with a group norm or a pre-norm, an SM holds, so that its launches
 * (inside a capture too) fill the device in one wave; unasked, they take
 * one block an SM. */
void rk_gemv_norm_prepare(int t, int max_n, int in, int group);
/* Launches of rk_gemv_multi_norm with a group norm so far in this
 * process; a decode graph makes its launches once, when it is captured. */
long rk_gemv_group_launches(void);

/* How rk_gemv_tc streams the weights (never its bits): n_sms, the
 * device's multiprocessors (the launch shape); loads, 16-byte weight loads
 * in flight per lane up to 16 rows, 8 or 16; stages, the most cp.async
 * stages of gemv_tc_async_kernel's ring (0: the register kernel), placed
 * within smem_block bytes of shared memory a block may have (after
 * rk_gemv_tc_prepare) and smem_sm an SM has (rn_cuda_tc_stages);
 * k_per_warp and groups: rn_cuda_tc_plan's want_kpw and rn_cuda_tc_groups's
 * want (0: the plan's).  Another k split adds the warps' parts in another
 * order, so other bits; another number of groups alone changes none. */
typedef struct rk_tc_opts {
    int n_sms, loads, stages;
    size_t smem_block, smem_sm;
    int k_per_warp, groups;
    /* RETNET_CUDA_TC_STREAM: the stream-K kernel's buffers
     * (rn_cuda_tc_stream_bytes), the counters zero; NULL: the other kernels */
    float *stream_part;
    size_t stream_part_bytes;
    unsigned *stream_count;
    long stream_groups;
} rk_tc_opts;

/* rk_gemv_multi on the tensor cores (gemv_tc_dev.cuh) for n <=
 * RN_CUDA_TC_MAX rows of matrices that rn_cuda_tc_fits (bf16 or fp16, in a
 * multiple of 8), all of dtype t: the input rows xh are in t too (rounded
 * as cuBLASLt's inputs are), fp32 accumulation, the same folded stores. */
void rk_gemv_tc(cudaStream_t st, const rk_gemv_set *set, int t, const void *xh, int n, int in,
                const rk_tc_opts *o);
/* Lets every instance of gemv_tc_async_kernel take up to smem_block bytes
 * of dynamic shared memory (once, outside any graph capture); 0, or -1
 * when the device refuses (then leave rk_tc_opts.stages 0). */
int rk_gemv_tc_prepare(size_t smem_block);
/* rk_gemv_tc launches through a ring of p stages so far in this process. */
long rk_gemv_tc_ring_launches(int p);
/* rk_gemv_tc launches of the stream-K kernel so far in this process, and
 * those it planned but found its buffers too small for. */
long rk_gemv_tc_stream_launches(void);
long rk_gemv_tc_stream_short(void);
/* The partial sums' bytes (returned) and the counters (*groups) that the
 * stream-K launch of a set of pairs row pairs of in columns over n rows on
 * n_sms SMs needs: rk_tc_opts' stream buffers at least that large. */
size_t rk_gemv_tc_stream_need(size_t pairs, int in, int n, int n_sms, long *groups);

/* Device-side measurements for `retnet bench`: a copy kernel over n bytes
 * (reported as read + write bytes) */
void rk_copy(cudaStream_t st, void *dst, const void *src, size_t n);

/* Asks L2 for the bytes from p (16-byte aligned; the bytes rounded down to
 * 16) in a small launch of its own (RETNET_CUDA_L2_FORK: on a second
 * stream, beside the kernels that need them later); nothing before sm_90. */
void rk_l2_fetch(cudaStream_t st, const void *p, size_t bytes);
/* Launches of rk_l2_fetch so far in this process, for tests. */
long rk_l2_fetches(void);

#endif
