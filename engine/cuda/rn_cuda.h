/*
 * rn_cuda.h -- what the CUDA build offers besides the backend itself: the
 * device's measured limits, for `retnet bench --device cuda`.  Only declared
 * when the build has CUDA (RN_HAVE_CUDA); server/ never includes it.
 */
#ifndef RN_CUDA_H
#define RN_CUDA_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "../status.h"

typedef struct rn_cuda_limits {
    char name[128]; /* device name */
    int n_sms;
    int cc_major, cc_minor;
    size_t mem_total; /* bytes */
    double copy_GBps; /* copy kernel, bytes read + written per second */
    /* cuBLASLt bf16 x bf16 -> fp32, fp32 accumulation, on random operands
     * after 300 ms of the same products (clocks and power settled) */
    double gemm_TFLOPs;
    double gemm_const_TFLOPs; /* the same on operands of one value (lower power, faster clocks) */
    int gemm_m, gemm_n, gemm_k;
} rn_cuda_limits;

/* Measures device 0's achievable HBM bandwidth (a copy kernel over 2 x 1 GiB,
 * best of 10) and dense bf16 GEMM rate (cuBLASLt, m x n x k of the given
 * sizes, best of 10 after a warm-up).  RN_ENODEV without a device. */
int rn_cuda_measure(rn_cuda_limits *l, int m, int n, int k, rn_error *err);

/* The projections alone of a prefill chunk of rows rows through every
 * layer of a model of config c -- cuBLASLt's products of the shapes the
 * backend runs (q and k, v and g, up and gate paired), on random bf16
 * operands, one layer's weights reused for each layer -- the best of 3
 * passes after 100 ms of them: their rate in *TFLOPs, and in *rows_s the
 * rows a second they alone would let a prefill of such chunks take (the
 * most it could, with these products and nothing else).  RN_EINVAL,
 * RN_EDEVICE. */
struct rn_config;
int rn_cuda_products_rate(const struct rn_config *c, int rows, double *TFLOPs, double *rows_s,
                          rn_error *err);

/* The CUDA backend's greedy pick (rk_argmax_rows) over rows x V host
 * logits, for tests that hand it ties, NaN and infinities; out: rows ids.
 * RN_OK, RN_EINVAL, or RN_EDEVICE without a device. */
int rn_cuda_argmax_rows_host(const float *logits, int rows, int V, int32_t *out);

/* The CUDA backend's reduction of rows for sampling (rk_top_rows) over
 * rows x V host logits at temps[rows], for tests that hand it ties, NaN,
 * zeros of both signs and infinities; out: rows reduced rows (sampler.h).
 * RN_OK, RN_EINVAL, or RN_EDEVICE without a device. */
struct rn_row_top;
int rn_cuda_top_rows_host(const float *logits, int rows, int V, const float *temps,
                          struct rn_row_top *out);

/* The tensor-core GEMV (rk_gemv_tc) over n <= 64 rows of in (a multiple of
 * 8) random inputs and out random 16-bit weights of dtype t, planned for
 * one SM (each warp's whole share of k, up to 256), with 8 loads in flight
 * in registers and again with loads (8 or 16) and stages (0: registers;
 * 2-4: at most that many stages of the cp.async ring); *ran: the stages
 * the second run's ring had (0: it ran in registers); *differ: the
 * outputs whose bits differ, or that the first run left unwritten (NaN; -1
 * on error).  RN_OK, RN_EINVAL, RN_ENOMEM, RN_EUNSUPPORTED before sm_80,
 * or RN_EDEVICE without a device. */
int rn_cuda_tc_variant_check(int in, int out, int n, int t, uint32_t seed, int loads, int stages,
                             int *ran, long *differ);
/* The stream-K tensor-core GEMV (RETNET_CUDA_TC_STREAM) over n <= 64 rows
 * of in (a multiple of 8) inputs and out 16-bit weights of dtype t, both
 * with every mantissa bit drawn, planned for n_sms SMs (0: the device's):
 * *worst, its largest gap to the register kernel over the sum of that
 * output's products' magnitudes (the two sum in other orders; INFINITY
 * where an output was left unwritten); *differ, the outputs whose bits
 * moved over two more launches; *left, the counters not back at zero.
 * RN_OK, RN_EINVAL, RN_ENOMEM, RN_EUNSUPPORTED before sm_80 or when the
 * launch did not go through the stream-K kernel, RN_EDEVICE. */
int rn_cuda_tc_stream_check(int in, int out, int n, int t, int n_sms, uint32_t seed, double *worst,
                            long *differ, long *left);
/* Launches of the stream-K GEMV so far in this process; a decode graph
 * makes its launches once, when it is captured.  _short: those it planned
 * but whose buffers were too small (the register kernel ran instead). */
long rn_cuda_tc_stream_launches(void);
long rn_cuda_tc_stream_short(void);

/* The fused chunkwise retention read-out (rk_ret_fused, its operands
 * rounded to bf16 first, each head's dv columns in parts shares of a block
 * each: 1, or 2 or 4 where rn_cuda_ret_parts allows that many; in wide
 * warps or not: rk_ret_fused) on pieces
 * pieces of P rows and H heads of dk, dv random values (v all zero with
 * zero_v: the
 * inter-piece term alone, which the decays make small next to the rest in
 * later rows), random entering states and decays of 0.9 down to 0.55,
 * against a double-precision reference from the same values:
 * *worst = the largest |error| over the sum of the absolute values of the
 * terms an output adds (bf16 operands: 0.05-0.2% seen; NaN when an
 * output was left unwritten).  RN_OK; RN_EINVAL when the shape does not
 * fit the kernel; RN_EUNSUPPORTED before sm_80 or where it needs more
 * shared memory than the device lets a block have (sm_86 and sm_89: 99
 * KiB); RN_ENOMEM; RN_EDEVICE. */
int rn_cuda_ret_fused_check(int P, int pieces, int H, int dk, int dv, int zero_v, int parts,
                            int wide, uint32_t seed, double *worst);
/* Launches of the fused retention kernel so far in this process. */
long rn_cuda_ret_fused_launches(void);
/* Those of them that split each head's value columns over several blocks
 * (RETNET_CUDA_RET_SPLIT). */
long rn_cuda_ret_split_launches(void);
/* Those of them that normalised and gated their rows themselves
 * (RETNET_CUDA_RET_NORM). */
long rn_cuda_ret_normed_launches(void);
/* Those of them in wide warps (RETNET_CUDA_RET_WIDE). */
long rn_cuda_ret_wide_launches(void);
/* Launches asking L2 for a projection's weights on the second stream
 * (RETNET_CUDA_L2_FORK) so far in this process; a decode graph makes its
 * launches once, when it is captured. */
long rn_cuda_l2_fetches(void);
/* Launches of the output projection's GEMV that formed a decode step's
 * group norm itself (RETNET_CUDA_GEMV_GROUPNORM) so far in this process; a
 * decode graph makes its launches once, when it is captured. */
long rn_cuda_gemv_group_launches(void);
/* The current device's compute capability major (9: Hopper), or -1. */
int rn_cuda_device_major(void);
/* Rotary passes so far in this process that also wrote the fused
 * read-out's bf16 copies of q and k (RETNET_CUDA_QK_HALF). */
long rn_cuda_qk_half_passes(void);
/* Chunks so far in this process whose v product wrote the fused
 * read-out's bf16 copy of v (RETNET_CUDA_V_HALF). */
long rn_cuda_v_half_products(void);
/* Pairs of projections so far in this process that ran as one
 * strided-batched cuBLASLt product (RETNET_CUDA_LT_PAIRS). */
long rn_cuda_lt_pair_products(void);
/* GEMM shapes whose cuBLASLt algorithm was timed (RETNET_CUDA_LT_TUNE) so
 * far in this process. */
long rn_cuda_lt_tuned(void);

/* Opens (on != 0) or closes the range a profiler started with
 * `--profile-from-start off` (ncu, nsys) records. */
void rn_cuda_profile(int on);

/* Kernel timeline (timeline.cu): each kernel's start and end on the
 * device's clock as CUPTI records them, graph nodes and dependent launches
 * included -- what a systems profiler shows, where ncu replays kernels one
 * at a time.  libcupti is loaded at run time (RETNET_CUPTI names it).
 * start: enables the records (RN_EUNSUPPORTED without libcupti or its
 * headers at build time, with where it looked); mark: waits for the device
 * and drops what was recorded so far; write: waits for the device and
 * appends the kernels, copies and runtime API calls since the mark to out
 * as CSV rows tagged tag (kind: kernel, copy or api; times in ns from the
 * earliest start, host calls on the device records' clock; header: the
 * column names first), then drops them; stop: ends the recording. */
int rn_cuda_timeline_start(rn_error *err);
void rn_cuda_timeline_mark(void);
int rn_cuda_timeline_write(FILE *out, const char *tag, int header, rn_error *err);
void rn_cuda_timeline_stop(void);

#endif
