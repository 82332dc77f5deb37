/*
 * tc_layout.h -- where the tensor-core GEMV (gemv_tc_dev.cuh, gemv_tc_kernel)
 * puts each value in the fragments of mma.m16n8k16, as plain arithmetic the
 * CPU unit tests check against the PTX ISA's fragment tables
 * (tests/unit/check_cuda_plan.c emulates the instruction from them).
 *
 * One mma multiplies A (16 input rows x 16 k: the activations) by B (16 k x
 * 8 features: the weights, W row-major being B column-major) into C (16 rows
 * x 8 features).  A lane is g = lane / 4, t = lane % 4.  Read literally, the
 * tables would have a lane load two 4-byte pieces of each weight row per k
 * step; instead a lane loads 16 contiguous bytes (8 values at k0 + 8t of
 * feature g) per 32-k block and the block's k is permuted: both operands
 * are permuted alike, so the dot products are the same sums.  The 32-bit
 * word w of the lane's 16 bytes holds values 2w and 2w + 1; k step s of the
 * block reads words 2s (the tables' k 2t, 2t+1) and 2s + 1 (k 2t+8, 2t+9)
 * of the weights and the same k of the activations.
 */
#ifndef RN_CUDA_TC_LAYOUT_H
#define RN_CUDA_TC_LAYOUT_H

#include "../rn_math.h"

/* k per block: 32 lanes' 16 bytes cover 8 features x 32 k of bf16/fp16. */
#define RN_TC_KBLOCK 32

/* First of the 8 k (within a block) that lane loads. */
RN_HD int rn_tc_lane_k(int lane)
{
    return 8 * (lane % 4);
}

/* The word of the lane's 16 bytes that k step s (0, 1) uses for half hi of
 * a fragment (0: the tables' k 2t, 2t+1; 1: k 2t+8, 2t+9). */
RN_HD int rn_tc_word(int s, int hi)
{
    return 2 * s + hi;
}

/* A fragment register r (0..3) of a lane: which of its two input rows it
 * carries (0: row g, 1: row g + 8), that row, and the half of the k step it
 * is; B register r (0, 1) is half r of feature g. */
RN_HD int rn_tc_a_rowblk(int r)
{
    return r & 1;
}
RN_HD int rn_tc_a_row(int lane, int r)
{
    return lane / 4 + 8 * rn_tc_a_rowblk(r);
}
RN_HD int rn_tc_a_half(int r)
{
    return r >> 1;
}

/* C value j (0..3) of a lane: its input row and its feature in the tile. */
RN_HD int rn_tc_c_row(int lane, int j)
{
    return lane / 4 + 8 * (j >> 1);
}
RN_HD int rn_tc_c_col(int lane, int j)
{
    return 2 * (lane % 4) + (j & 1);
}

/* The stream-K split of the tensor-core GEMV (gemv_tc_stream_kernel,
 * RETNET_CUDA_TC_STREAM).  A launch's work is `units` units -- one pair
 * group's weight rows over one RN_TC_KBLOCK block of k, group after group
 * -- and warp w of `warps` (at most units) takes those from
 * rn_tc_stream_begin(units, warps, w) to warp w + 1's: every warp the same
 * count within one, so no warp of the grid waits on a second wave. */
RN_HD long long rn_tc_stream_begin(long long units, int warps, long long w)
{
    return w * units / warps;
}

/* The warp whose units hold unit u: the last w with begin(w) <= u, that
 * is the last w < (u + 1) warps / units. */
RN_HD int rn_tc_stream_warp_of(long long units, int warps, long long u)
{
    return (int)(((u + 1) * warps + units - 1) / units - 1);
}

#endif
