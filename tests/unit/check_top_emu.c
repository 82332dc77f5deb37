/* The device's reduction of rows for sampling (engine/cuda/top_dev.cuh) on
 * the CPU through the CUDA emulation (top_emu.cc), one block a row, against
 * the host's reduction (rn_row_top_fill): the same candidates bit for bit
 * and the sums within their order of addition (fixture_check_same_top).
 * The rows test the rule: ties throughout (the lowest ids among equals),
 * more ties for the last places than places, NaN as -inf, -0 equal to +0,
 * infinities, a row of nothing above -inf (NaN sums, as on the host) and a
 * row half of whose entries are -inf; rows wider than one pass of a block
 * (8192 entries). */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "fixture.h"
#include "sampler.h"
#include "suites.h"

int rn_emu_top_rows(const float *logits, int rows, int V, const float *temps, rn_row_top *out);

enum { W = 9001, ROWS = 7 };

static void top_rows_fill(float *l)
{
    const float inf = INFINITY;
    fixture_top_rows(l, W, 7u); /* rows 0-4; 1285 ties at the top of row 1 */
    for (int i = 0; i < W; i++) {
        l[5 * W + i] = i % 64 == 0 ? 3.0f : -2.0f;           /* 141 ties for 128 places */
        l[6 * W + i] = i < W / 2 ? -inf : -(float)i * 1e-3f; /* half the row -inf */
    }
    l[4 * W + 17] = inf, l[4 * W + 9000] = inf, l[4 * W + 5] = NAN;
}

/* Every row at once (the emulation spends about half a second a
 * 1024-thread block). */
START_TEST(test_top_emu_matches_host)
{
    float *l = malloc(sizeof(float) * ROWS * W);
    rn_row_top got[ROWS], want;
    const float temps[ROWS] = {1.0f, 0.7f, 1.0f, 0.0f, 1.3f, 0.5f, 2.0f};
    char what[64];
    ck_assert_ptr_nonnull(l);
    top_rows_fill(l);
    ck_assert_int_eq(rn_emu_top_rows(l, ROWS, W, temps, got), 0);
    for (int r = 0; r < ROWS; r++) {
        rn_row_top_fill(l + (size_t)r * W, W, temps[r], &want);
        snprintf(what, sizeof what, "row %d", r);
        fixture_check_same_top(&got[r], &want, W, what);
    }
    free(l);
}
END_TEST

/* A row not wanted (temperature below 0) says so and nothing else. */
START_TEST(test_top_emu_skips_unwanted_rows)
{
    float *l = malloc(sizeof(float) * ROWS * W);
    rn_row_top got[ROWS];
    float temps[ROWS] = {1.0f, -1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f};
    ck_assert_ptr_nonnull(l);
    top_rows_fill(l);
    ck_assert_int_eq(rn_emu_top_rows(l, 2, W, temps, got), 0);
    ck_assert_int_eq(got[1].n, 0);
    ck_assert_int_eq(got[0].n, RN_TOP_CANDIDATES);
    free(l);
}
END_TEST

Suite *top_emu_suite(void)
{
    Suite *s = suite_create("top_emu");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_top_emu_matches_host);
    tcase_add_test(tc, test_top_emu_skips_unwanted_rows);
    suite_add_tcase(s, tc);
    return s;
}
