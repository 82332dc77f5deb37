/* The norms' block arithmetic (engine/cuda/norm_dev.cuh, as norm_kernel
 * runs it: each thread's strided share of a row summed in double, the
 * block's sums through warp shuffles and shared memory, then each value
 * normalised) on the CPU through the CUDA emulation (cuda_emu.h), against
 * a double-precision LayerNorm or RMSNorm.  The norm sums in double and
 * rounds each value once from there, so 1e-5 of 1 + |value| is far above
 * its rounding and far below a wrong mean, factor, weight, row or a
 * warp's share left out of the block's sum. */
#include <check.h>
#include <stdint.h>

#include "suites.h"

double rn_emu_norm_check(int nb, int d, int threads, int layer_kind, int affine, uint32_t seed);

/* rows (blocks), width, threads: one to eight warps, widths that leave
 * threads idle, that do not fill the last round, and the 1.3B shape's */
static const int shapes[][3] = {
    {1, 64, 64}, {2, 256, 96}, {3, 2048, 128}, {2, 2816, 256}, {2, 100, 32}, {1, 40, 64},
};
#define N_SHAPES (int)(sizeof shapes / sizeof shapes[0])

/* _i: shape, then LayerNorm or RMSNorm, then with or without weights */
START_TEST(test_norm_emu_matches_reference)
{
    const int *s = shapes[_i % N_SHAPES];
    int layer_kind = _i / N_SHAPES % 2, affine = _i / (2 * N_SHAPES);
    double worst = rn_emu_norm_check(s[0], s[1], s[2], layer_kind, affine, (uint32_t)(11 + _i));
    ck_assert_msg(worst == worst, "a value is NaN: a row left unnormalised, or a shared slot "
                                  "read that no warp wrote");
    ck_assert_msg(worst >= 0.0, "the emulated launch failed");
    ck_assert_msg(worst <= 1e-5, "%d rows of %d, %d threads, %s%s: error %.3g", s[0], s[1], s[2],
                  layer_kind ? "LayerNorm" : "RMSNorm", affine ? " with weights" : "", worst);
}
END_TEST

Suite *norm_emu_suite(void)
{
    Suite *s = suite_create("norm_emu");
    TCase *tc = tcase_create("rows");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_norm_emu_matches_reference, 0, 4 * N_SHAPES);
    suite_add_tcase(s, tc);
    return s;
}
