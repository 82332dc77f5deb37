/* The tensor-core retention read-out (engine/cuda/ret_fused.cuh, the
 * fused prefill path, RETNET_CUDA_RET_FUSED) runs on the CPU through an
 * emulation of the CUDA features it uses (cuda_emu.h: mma.m16n8k16 and
 * ldmatrix from the PTX ISA's fragment tables, cp.async landing only at
 * its wait), against the double-precision reference the device check
 * uses (engine/cuda/ret_ref.h), within the same 1% of the sum of each
 * output's terms' magnitudes.  Every build runs it, with or without nvcc,
 * so a tile, fragment, mask or decay exponent gone wrong fails here before
 * it reaches a device; the device's own sums, timing and memory ordering
 * stay for check-cuda (rn_cuda_ret_fused_check). */
#include <check.h>
#include <stdint.h>

#include "suites.h"

/* The fused read-out's worst error, or -1; its copies land at their waits
 * (at_issue 0) or at their issue (1). */
double rn_emu_ret_check(int P, int pieces, int H, int dk, int dv, int zero_v, int at_issue,
                        uint32_t seed);
long rn_emu_ret_split_check(int P, int pieces, int H, int dk, int dv, int parts, uint32_t seed);
int rn_emu_ret_norm_check(int P, int pieces, int H, int dk, int dv, int layer_kind, int affine,
                          int gated, int act, uint32_t seed, long *differ, double *worst);
long rn_emu_ret_tiling_check(int P, int pieces, int H, int dk, int dv, int parts, int norm,
                             uint32_t seed);
long rn_emu_scale_check(int n, int P, int pieces, int H, int dk, int key, int bf16, uint32_t seed);
long rn_emu_rope_check(int n, int H, int dk, int hpt, int interleaved, int scale_k, float scale,
                       uint32_t seed);

/* P, pieces, H, dk, dv: one to four 64-row query tiles (the last tiles
 * see the most key tiles and the diagonal one), value heads of 512 (the
 * 1.3B preset's), 256, 192 and 64, two or three heads with their own
 * decays (a decay power off by one hides under the bound where the one
 * head's decay is 0.9), pieces with their own entering states, dk of 64 to
 * 256 (two to eight rounds of the entering state's rows). */
static const int shapes[][5] = {
    {256, 1, 2, 128, 256},
    {128, 2, 2, 256, 192},
    {64, 3, 3, 64, 64},
    {128, 1, 2, 256, 512},
};
#define N_SHAPES (int)(sizeof shapes / sizeof shapes[0])

/* The bound of check_forms.c's device check, argued there: bf16 operands
 * move a read-out by 0.05-0.2% of its terms' absolute values on these
 * shapes and seeds; a wrong mask, an off decay power, a fragment out of
 * place, a read before its copy's wait or a missing tile by far more
 * (each of those, planted, fails these tests). */
#define EMU_BOUND 1e-2

/* That an emulated check produced a worst error at all: no output left
 * NaN (unwritten, or formed from shared memory read before it was
 * written) and the launch ran. */
static void assert_ran(double worst)
{
    ck_assert_msg(worst == worst, "an output is NaN: left unwritten, or formed from shared "
                                  "memory read before it was written");
    ck_assert_msg(worst >= 0.0, "the emulated launch failed");
}

/* rn_emu_ret_check on shape i % N_SHAPES, with v = 0 from i = N_SHAPES
 * on, within EMU_BOUND: with the copies landing at their waits (a read
 * before its wait sees NaN or an older tile), then, with v, at their
 * issue (a copy over a tile that a warp has yet to finish reading changes
 * what it reads: every tile, the values included, shows in those
 * read-outs). */
static void check_ret_case(int i, uint32_t seed)
{
    const int *s = shapes[i % N_SHAPES];
    int zero_v = i >= N_SHAPES;
    for (int at_issue = 0; at_issue < (zero_v ? 1 : 2); at_issue++) {
        double worst = rn_emu_ret_check(s[0], s[1], s[2], s[3], s[4], zero_v, at_issue, seed);
        assert_ran(worst);
        ck_assert_msg(worst <= EMU_BOUND,
                      "P %d, %d pieces, %d heads, dk %d, dv %d%s, copies at %s: "
                      "error %.3g",
                      s[0], s[1], s[2], s[3], s[4], zero_v ? ", v = 0" : "",
                      at_issue ? "issue" : "wait", worst);
    }
}

/* The read-out on each shape, then (the loop's second half) with v = 0,
 * the inter-piece term alone. */
START_TEST(test_ret_emu_fused_matches_reference)
{
    check_ret_case(_i, (uint32_t)(7 + _i));
}
END_TEST

/* Each head's value columns in shares of a block each (a short chunk's
 * launch, RETNET_CUDA_RET_SPLIT): the same bits as whole -- each share
 * forms the same scores and sums its columns in the same order -- for
 * the shapes whose dv splits (256 in two, one piece and three heads in
 * two pieces; 512 in two and four), where an
 * offset share column, state row stride or output column moves values. */
START_TEST(test_ret_emu_fused_split_keeps_bits)
{
    static const int split[][6] = {
        /* P, pieces, H, dk, dv, parts */
        {256, 1, 2, 128, 256, 2},
        {128, 1, 2, 256, 512, 2},
        {128, 1, 2, 256, 512, 4},
        {64, 2, 3, 64, 256, 2}, /* several pieces: their rows and states apart */
    };
    const int *s = split[_i];
    long differ = rn_emu_ret_split_check(s[0], s[1], s[2], s[3], s[4], s[5], (uint32_t)(11 + _i));
    ck_assert_msg(differ == 0, "dv %d in %d parts: %ld outputs differ from dv whole", s[4], s[5],
                  differ);
}
END_TEST

/* The read-out in wide warps (RETNET_CUDA_RET_WIDE, the default: products
 * in warps of 32 rows by dv / 8 columns, scores in warps of 16 rows by 32
 * keys) against narrow ones (16 by dv / 4, 16 by 16), bit for bit: every
 * score and output sums the same products in the same order of k, and on
 * the diagonal key tile a wide warp's first row tile stops 16 keys before
 * its second (the stair) and a scores warp forms only its key groups at or
 * before its rows.  The shapes: the 1.3B preset's dv of 512 (two and four
 * query tiles: the diagonal of either row group of a wide warp), 256, and
 * several pieces and heads, whole, in shares of 128 columns (a wide
 * warp's 16) and through the group norm (its staging of each warp's
 * accumulators); dv of 192 (an odd count of 64 columns) keeps narrow
 * warps, so both give the same launch there. */
#define N_TILING 8
START_TEST(test_ret_emu_fused_tiling_keeps_bits)
{
    static const int cases[N_TILING][7] = {
        /* P, pieces, H, dk, dv, parts, norm */
        {128, 1, 2, 256, 512, 1, 0}, {256, 1, 1, 64, 512, 1, 0},  {256, 2, 2, 128, 256, 1, 0},
        {128, 1, 2, 256, 512, 4, 0}, {256, 1, 2, 128, 256, 2, 0}, {128, 1, 2, 256, 512, 1, 1},
        {128, 2, 3, 64, 256, 1, 1},  {128, 2, 2, 256, 192, 1, 0},
    };
    const int *c = cases[_i];
    long differ =
        rn_emu_ret_tiling_check(c[0], c[1], c[2], c[3], c[4], c[5], c[6], (uint32_t)(41 + _i));
    ck_assert_msg(differ >= 0, "the emulated launch failed");
    ck_assert_msg(differ == 0,
                  "P %d, %d pieces, %d heads, dk %d, dv %d in %d parts%s: %ld outputs differ "
                  "between narrow and wide warps",
                  c[0], c[1], c[2], c[3], c[4], c[5], c[6] ? ", normalised" : "", differ);
}
END_TEST

/* The read-out's rows through the group norm and gate in the kernel's
 * store (RETNET_CUDA_RET_NORM) against the norm of the plain launch's fp32
 * read-outs: the row sums meet across the 4 lanes of a quad and the 4
 * column-group warps in another order than the reference's, so a mean's
 * last bits, and through them a rounding to bf16, may differ -- by one
 * place, and rarely (at most 1% of the values); a row's statistics from
 * another row or a missing warp, a gate or weight from the wrong column,
 * or an fp32 store left in move values by far more.  Shapes: dv of 256
 * and 512 (the 1.3B preset's), 192 and 64 (1 and 3 columns a quad in a
 * warp's 16-column tile), several pieces and heads; LayerNorm and RMSNorm,
 * with and without weights and gate, swish and gelu, spread over them.
 * (The emulated sums gave every value's bits on these seeds.) */
START_TEST(test_ret_emu_fused_norm)
{
    const int *s = shapes[_i % N_SHAPES];
    int layer_kind = _i % 2, affine = _i / 2 % 2, gated = _i != 2, act = _i == 1 || _i == 2;
    long differ = -1;
    double worst = -1.0;
    ck_assert_int_eq(rn_emu_ret_norm_check(s[0], s[1], s[2], s[3], s[4], layer_kind, affine, gated,
                                           act, (uint32_t)(31 + _i), &differ, &worst),
                     0);
    long n = (long)s[0] * s[1] * s[2] * s[4];
    ck_assert_msg(worst <= 1.0 && differ * 100 <= n,
                  "P %d, %d pieces, %d heads, dk %d, dv %d, %s, w %d, gate %d, act %d: "
                  "%ld of %ld values differ, by up to %.3g places",
                  s[0], s[1], s[2], s[3], s[4], layer_kind ? "LayerNorm" : "RMSNorm", affine, gated,
                  act, differ, n, worst);
}
END_TEST

/* The piece scaling (scale_pieces_kernel): every destination value is its
 * source value times the one decay its row takes, bit for bit (fp32 out,
 * then -- the loop's second half -- rounded once to bf16, the fused
 * path's keys).  n, P,
 * pieces, H, dk: float4 and scalar loads; widths of one, several and a
 * part of a warp of values, and past 256 threads' worth (a thread's second
 * round); row counts that leave a block's last rows empty; one and several
 * pieces and heads. */
static const int scale_shapes[][5] = {
    {4, 64, 3, 2, 256}, {4, 5, 2, 3, 64}, {1, 7, 1, 2, 100},
    {4, 9, 2, 1, 1040}, {1, 3, 2, 2, 33}, {4, 1, 1, 1, 4},
};
#define N_SCALE (int)(sizeof scale_shapes / sizeof scale_shapes[0])

START_TEST(test_ret_emu_scale_pieces)
{
    const int *s = scale_shapes[_i % N_SCALE];
    int key = _i / N_SCALE % 2, bf16 = _i >= 2 * N_SCALE;
    long differ = rn_emu_scale_check(s[0], s[1], s[2], s[3], s[4], key, bf16, (uint32_t)(71 + _i));
    ck_assert_msg(differ >= 0, "the emulated launch failed");
    ck_assert_msg(differ == 0,
                  "N %d, P %d, %d pieces, %d heads, dk %d, %s, %s out: %ld values differ", s[0],
                  s[1], s[2], s[3], s[4], key ? "keys" : "queries", bf16 ? "bf16" : "fp32", differ);
}
END_TEST

/* The rotary kernel (qk_kernel): every value of q and k as the rotation a
 * pair and a head at a time gives it, bit for bit -- for every row but the
 * last (RETNET_CUDA_QK_HALF's) as bf16 copies of those values and keys
 * scaled by their piece's decays, with their fp32 values left alone, and
 * the last row's copies never written.  rows, heads, dk, all
 * heads a thread (1) or one: fewer heads than a thread's load round, more
 * (10: a round of 8 and one of 2), one head; each half-split and
 * interleaved, with q scaled, k scaled and neither. */
static const int rope_shapes[][4] = {{3, 8, 64, 1}, {2, 10, 32, 1}, {5, 3, 16, 0}, {1, 1, 8, 1}};
#define N_ROPE (int)(sizeof rope_shapes / sizeof rope_shapes[0])

START_TEST(test_ret_emu_rope)
{
    const int *s = rope_shapes[_i % N_ROPE];
    int interleaved = _i / N_ROPE % 2, how = _i / (2 * N_ROPE); /* no scale, q, k */
    int hpt = s[3] ? s[1] : 1;
    long differ = rn_emu_rope_check(s[0], s[1], s[2], hpt, interleaved, how == 2,
                                    how ? 0.125f : 1.0f, (uint32_t)(5 + _i));
    ck_assert_msg(differ >= 0, "the emulated launch failed");
    ck_assert_msg(differ == 0,
                  "%d rows, %d heads, dk %d, %d heads a thread, %s, scale %s: %ld values differ",
                  s[0], s[1], s[2], hpt, interleaved ? "interleaved" : "half-split",
                  how == 0   ? "none"
                  : how == 1 ? "q"
                             : "k",
                  differ);
}
END_TEST

Suite *ret_emu_suite(void)
{
    Suite *s = suite_create("ret_emu");
    TCase *tc = tcase_create("kernels");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_ret_emu_fused_matches_reference, 0, 2 * N_SHAPES);
    tcase_add_loop_test(tc, test_ret_emu_fused_split_keeps_bits, 0, 4);
    tcase_add_loop_test(tc, test_ret_emu_fused_tiling_keeps_bits, 0, N_TILING);
    tcase_add_loop_test(tc, test_ret_emu_fused_norm, 0, N_SHAPES);
    tcase_add_loop_test(tc, test_ret_emu_scale_pieces, 0, 4 * N_SCALE);
    tcase_add_loop_test(tc, test_ret_emu_rope, 0, 6 * N_ROPE);
    suite_add_tcase(s, tc);
    return s;
}
