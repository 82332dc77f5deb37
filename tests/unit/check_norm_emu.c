/* The folded GEMV's norm tail (RETNET_CUDA_GEMV_NORM: norm_tail_rows in
 * engine/cuda/norm_dev.cuh) on the CPU through the CUDA emulation
 * (cuda_emu.h): blocks write their shares of one or two rows, every block
 * takes a ticket, and the last normalises the rows; against a
 * double-precision LayerNorm or RMSNorm, twice in a row (the ticket must
 * come back to 0 for the next launch).  The tail sums in double and rounds
 * each value once from there, so 1e-5 of 1 + |value| is far above its
 * rounding and far below a wrong mean, factor, weight or row. */
#include <check.h>
#include <stdint.h>

#include "suites.h"

double rn_emu_norm_tail_check(int nb, int d, int threads, int blocks, int layer_kind, int affine,
                              uint32_t seed, unsigned *count_after);

/* rows, width, threads (a GEMV block's 32 x shares), blocks */
static const int shapes[][4] = {
    {1, 64, 64, 1}, {2, 256, 96, 7}, {1, 2048, 128, 33}, {2, 2816, 256, 5}, {2, 100, 32, 3},
};
#define N_SHAPES (int)(sizeof shapes / sizeof shapes[0])

/* _i: shape, then LayerNorm or RMSNorm, then with or without weights */
START_TEST(test_norm_emu_tail_matches_reference)
{
    const int *s = shapes[_i % N_SHAPES];
    int layer_kind = _i / N_SHAPES % 2, affine = _i / (2 * N_SHAPES);
    unsigned count = 99;
    double worst = rn_emu_norm_tail_check(s[0], s[1], s[2], s[3], layer_kind, affine,
                                          (uint32_t)(11 + _i), &count);
    ck_assert_msg(worst == worst, "a value is NaN: a row left unnormalised");
    ck_assert_msg(worst >= 0.0, "the emulated launch failed");
    ck_assert_msg(worst <= 1e-5, "%d rows of %d, %d threads, %d blocks, %s%s: error %.3g", s[0],
                  s[1], s[2], s[3], layer_kind ? "LayerNorm" : "RMSNorm",
                  affine ? " with weights" : "", worst);
    ck_assert_msg(count == 0, "the ticket stayed at %u", count);
}
END_TEST

Suite *norm_emu_suite(void)
{
    Suite *s = suite_create("norm_emu");
    TCase *tc = tcase_create("tail");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_norm_emu_tail_matches_reference, 0, 4 * N_SHAPES);
    suite_add_tcase(s, tc);
    return s;
}
