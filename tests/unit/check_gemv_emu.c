/* gemv_norm_kernel (engine/cuda/gemv_dev.cuh), which forms its rows'
 * pre-norm itself so a decode step needs no norm launch before a
 * projection (RETNET_CUDA_GEMV_PRENORM), on the CPU through the CUDA
 * emulation (cuda_emu.h): bit for bit what norm_vec_kernel then
 * gemv_split_kernel give, for every kind of job (rotary q and k with k
 * scaled, a bias, GLU's rounded product, the residual add), one to three
 * rows (three: two row pairs a warp), bf16 and fp32 weights, LayerNorm and
 * RMSNorm with and without weights, and grids that leave the blocks one
 * item or several rounds of items. */
#include <check.h>
#include <stdint.h>

#include "model.h"
#include "suites.h"

long rn_emu_gemv_norm_check(int t, int nb, int in, int cols, int grid, int kinds, int layer_kind,
                            int affine, uint32_t seed, long *unset);
long rn_emu_gemv_group_check(int t, int nb, int heads, int group, int parts, int cols, int grid,
                             int layer_kind, int affine, int gated, uint32_t seed, long *unset);
long rn_emu_gemv_tc_check(int t, int n, int in, const int *outs, int n_sms, int want,
                          size_t smem_sm, int kpw, int groups, int at_issue, uint32_t seed,
                          int *stages, long *unset, long *wrong);
long rn_emu_gemv_tc_stream_check(int t, int n, int in, const int *outs, int n_sms, int exact,
                                 uint32_t seed, long *unset, long *wrong, long *split,
                                 long *counts_left);

/* rows, width, columns a share, blocks: 2 and 4 shares (and a last share
 * that is short), one round or several, a width whose norm takes more
 * threads than the GEMV's warps (2560: 320) */
static const int shapes[][4] = {
    {1, 256, 128, 64}, {2, 512, 128, 3}, {3, 320, 128, 2}, {1, 2560, 1024, 5}, {2, 256, 64, 1},
};
#define N_SHAPES (int)(sizeof shapes / sizeof shapes[0])

/* _i: a shape, a set of jobs' kinds (3) and a variant (dtype, norm: 4)
 * each, turning at different rates so that 20 cases meet every shape with
 * every kind and every variant */
#define N_CASES 20
START_TEST(test_gemv_norm_emu_keeps_bits)
{
    const int *s = shapes[_i % N_SHAPES];
    int kinds = _i % 3, v = _i % 4;
    int t = v % 2 ? RN_DT_F32 : RN_DT_BF16, layer_kind = v / 2 % 2, affine = v / 2 != 1;
    long unset = -1;
    long differ = rn_emu_gemv_norm_check(t, s[0], s[1], s[2], s[3], kinds, layer_kind, affine,
                                         (uint32_t)(31 + _i), &unset);
    ck_assert_msg(differ >= 0, "the emulated launches failed");
    ck_assert_msg(unset == 0, "%d rows of %d, kinds %d: %ld outputs left unwritten", s[0], s[1],
                  kinds, unset);
    ck_assert_msg(differ == 0,
                  "%d rows of %d in %d-column shares on %d blocks, kinds %d, %s, %s%s: %ld "
                  "outputs differ from the norm then the split GEMV",
                  s[0], s[1], s[2], s[3], kinds, t == RN_DT_F32 ? "f32" : "bf16",
                  layer_kind ? "LayerNorm" : "RMSNorm", affine ? " with weights" : "", differ);
}
END_TEST

/* The retention's group norm formed by the output projection's GEMV
 * (RETNET_CUDA_GEMV_GROUPNORM) against rk_norm_parts' launch then the split
 * GEMV, bit for bit: dtype, rows, heads, a head's values, the step's
 * partial read-outs, columns a share, blocks.  A head of 260 (the
 * synthetic model's) with the groups taking two rounds of the block's
 * threads, one full round, six rounds of 32-value heads, heads of 512
 * four to a 256-thread block, the 1.3B preset's layer at batch 1 (8 heads
 * of 512 on 512 threads, four parts), and 6 groups on the 8 a round
 * holds, 2 of them idle. */
static const int group_cases[][7] = {
    {RN_DT_BF16, 2, 4, 260, 4, 512, 3},  {RN_DT_F32, 1, 8, 64, 1, 128, 64},
    {RN_DT_BF16, 3, 16, 32, 3, 256, 2},  {RN_DT_F32, 2, 2, 512, 2, 256, 5},
    {RN_DT_BF16, 1, 8, 512, 4, 1024, 4}, {RN_DT_F32, 1, 6, 64, 1, 128, 4},
};
#define N_GROUP_CASES (int)(sizeof group_cases / sizeof group_cases[0])

/* _i: a case and a pass; each case meets the norm without weights in the
 * first pass and with weights and a bias in the second, LayerNorm in one
 * of them and RMSNorm in the other, the gate in the first pass and in
 * every other case's second */
START_TEST(test_gemv_group_norm_emu_keeps_bits)
{
    const int *c = group_cases[_i % N_GROUP_CASES];
    int pass = _i / N_GROUP_CASES, layer_kind = (_i % N_GROUP_CASES + pass) % 2, affine = pass;
    int gated = pass == 0 || _i % 2 == 0;
    long unset = -1;
    long differ = rn_emu_gemv_group_check(c[0], c[1], c[2], c[3], c[4], c[5], c[6], layer_kind,
                                          affine, gated, (uint32_t)(97 + _i), &unset);
    ck_assert_msg(differ >= 0, "case %d: the emulated launches failed", _i % N_GROUP_CASES);
    ck_assert_msg(unset == 0, "case %d: %ld outputs left unwritten", _i % N_GROUP_CASES, unset);
    ck_assert_msg(differ == 0,
                  "%d rows of %d heads of %d from %d parts, %s, %s%s%s: %ld outputs differ from "
                  "the group norm then the split GEMV",
                  c[1], c[2], c[3], c[4], c[0] == RN_DT_F32 ? "f32" : "bf16",
                  layer_kind ? "LayerNorm" : "RMSNorm", affine ? " with weights" : "",
                  gated ? ", gated" : "", differ);
}
END_TEST

/* The tensor-core GEMV (engine/cuda/gemv_tc_dev.cuh): its register kernel
 * gives the exact sums of small-integer weights and inputs (a plain job
 * whose last pair has one row, and a GLU job: up times swish(gate) of the
 * exact sums), and its cp.async ring gives the register kernel's bits,
 * with the copies landing at their wait and at their issue, the two ends
 * of the device's window.  Planned for one SM, as kernels.cu plans them:
 * rows, input width, the two jobs' outputs, the stages asked for, the
 * stages the plan must give, and an SM's shared memory in KiB (an
 * H100's, or more: the only way to 4 stages that wrap), then the launch
 * shape's wants (RETNET_CUDA_TC_KPW, RETNET_CUDA_TC_GROUPS; 0: the plan's).
 * One and two pair groups a block, one, two and four m-tiles, warps with
 * more rounds than the ring has stages (2, 3 and 4 of them), a last warp
 * with one short round, and a last block with pairs missing; a set wide
 * enough for two groups held to one with two long warps, and a narrow one
 * made to take two with warps of a round and a half. */
static const int tc_cases[][9] = {
    {5, 520, 33, 16, 2, 2, 228, 0, 0},      {16, 1024, 62, 8, 4, 4, 228, 0, 0},
    {20, 1056, 33, 16, 3, 3, 228, 0, 0},    {40, 4096, 15, 4, 4, 3, 228, 0, 0},
    {1, 264, 9, 2, 4, 2, 228, 0, 0},        {40, 5120, 15, 4, 4, 4, 1024, 0, 0},
    {16, 2048, 62, 48, 4, 4, 228, 1024, 1}, {9, 1024, 21, 8, 2, 2, 228, 96, 2},
};
#define N_TC_CASES (int)(sizeof tc_cases / sizeof tc_cases[0])

START_TEST(test_gemv_tc_ring_keeps_bits)
{
    const int *c = tc_cases[_i / 2];
    int t = _i / 2 % 2 ? RN_DT_F16 : RN_DT_BF16, at_issue = _i % 2, stages = -1;
    long unset = -1, wrong = -1;
    long differ = rn_emu_gemv_tc_check(t, c[0], c[1], c + 2, 1, c[4], (size_t)c[6] << 10, c[7],
                                       c[8], at_issue, (uint32_t)(7 + _i), &stages, &unset, &wrong);
    ck_assert_msg(differ >= 0, "case %d: the emulated launches failed (%d stages)", _i / 2, stages);
    ck_assert_int_eq(stages, c[5]);
    ck_assert_msg(unset == 0,
                  "case %d: %ld outputs NaN (never stored, or from bytes that never landed)",
                  _i / 2, unset);
    ck_assert_msg(wrong == 0, "%d rows of %d, %s: %ld outputs of the register kernel are wrong",
                  c[0], c[1], t == RN_DT_F16 ? "fp16" : "bf16", wrong);
    ck_assert_msg(differ == 0,
                  "%d rows of %d, %s, %d stages, copies landing at %s: %ld outputs of the ring "
                  "differ",
                  c[0], c[1], t == RN_DT_F16 ? "fp16" : "bf16", stages, at_issue ? "issue" : "wait",
                  differ);
}
END_TEST

/* The stream-K tensor-core GEMV (RETNET_CUDA_TC_STREAM): rows, input
 * width, the two jobs' outputs, SMs it is planned for, and the groups that
 * must be split among warps.  Runs of two or three units in every group,
 * of a unit each (four m-tiles, one pair group), three groups of 128 units
 * with pairs missing from the last, a width that leaves a group's last
 * unit short (520), with runs that cross into a group and reach its short
 * unit (the next group's k clipped at the width), runs across up to four
 * groups with some groups a warp's alone, and one unit for a block of 8
 * warps (7 with nothing to do).  Each shape with small
 * integers (every output its exact sum) and with values using every
 * mantissa bit (the plain job within its bound), the blocks in order and
 * in reverse giving the same bits: the parts of a group are added in the
 * same order whichever warp comes last. */
static const int stream_cases[][6] = {
    {16, 256, 64, 48, 1, 5}, {3, 1024, 30, 20, 1, 3},  {20, 512, 64, 32, 1, 4},
    {40, 128, 16, 8, 1, 2},  {16, 4096, 40, 20, 1, 3}, {8, 64, 1000, 200, 1, 8},
    {5, 520, 33, 16, 1, 3},  {6, 520, 400, 200, 1, 1}, {4, 32, 6, 2, 1, 0},
};
#define N_STREAM_CASES (int)(sizeof stream_cases / sizeof stream_cases[0])

START_TEST(test_gemv_tc_stream_sums_in_one_order)
{
    const int *c = stream_cases[_i / 2];
    int exact = _i % 2, t = _i / 2 % 2 ? RN_DT_F16 : RN_DT_BF16;
    long unset = -1, wrong = -1, split = -1, left = -1;
    long differ = rn_emu_gemv_tc_stream_check(t, c[0], c[1], c + 2, c[4], exact,
                                              (uint32_t)(11 + _i), &unset, &wrong, &split, &left);
    ck_assert_msg(differ >= 0, "case %d: the emulated launches failed", _i / 2);
    ck_assert_msg(split >= c[5], "case %d: %ld groups split among warps, want %d or more", _i / 2,
                  split, c[5]);
    ck_assert_msg(c[5] > 0 || split == 0, "case %d: %ld groups split", _i / 2, split);
    ck_assert_msg(left == 0, "case %d: the counters were left at %ld", _i / 2, left);
    ck_assert_msg(unset == 0, "case %d: %ld outputs NaN (never stored, or a slot read unwritten)",
                  _i / 2, unset);
    ck_assert_msg(wrong == 0, "%d rows of %d, %s, %s values: %ld outputs wrong", c[0], c[1],
                  t == RN_DT_F16 ? "fp16" : "bf16", exact ? "exact" : "rough", wrong);
    ck_assert_msg(differ == 0, "%d rows of %d, %s: %ld outputs differ with the blocks reversed",
                  c[0], c[1], t == RN_DT_F16 ? "fp16" : "bf16", differ);
}
END_TEST

Suite *gemv_emu_suite(void)
{
    Suite *s = suite_create("gemv_emu");
    TCase *tc = tcase_create("gemv_norm");
    tcase_set_timeout(tc, 300);
    tcase_add_loop_test(tc, test_gemv_norm_emu_keeps_bits, 0, N_CASES);
    suite_add_tcase(s, tc);
    tc = tcase_create("gemv_group_norm");
    tcase_set_timeout(tc, 300);
    tcase_add_loop_test(tc, test_gemv_group_norm_emu_keeps_bits, 0, 2 * N_GROUP_CASES);
    suite_add_tcase(s, tc);
    tc = tcase_create("gemv_tc");
    tcase_set_timeout(tc, 300);
    tcase_add_loop_test(tc, test_gemv_tc_ring_keeps_bits, 0, 2 * N_TC_CASES);
    suite_add_tcase(s, tc);
    tc = tcase_create("gemv_tc_stream");
    tcase_set_timeout(tc, 300);
    tcase_add_loop_test(tc, test_gemv_tc_stream_sums_in_one_order, 0, 2 * N_STREAM_CASES);
    suite_add_tcase(s, tc);
    return s;
}
