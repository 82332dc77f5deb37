/* The device's reduction of rows for sampling (engine/cuda/top_dev.cuh) on
 * the CPU through the CUDA emulation (top_emu.cc), one block a row and in
 * 5 and 16 slices merged, against the host's reduction
 * (rn_row_top_fill): the same candidates bit for bit and the sums within
 * their order of addition (fixture_check_same_top).  The rows test the
 * rule where slices meet: ties throughout (the lowest ids among equals,
 * wherever the slices cut them), more ties for the last places than
 * places, NaN as -inf, -0 equal to +0, infinities, a row of nothing above
 * -inf (NaN sums, as on the host) and slices with nothing above -inf in an
 * otherwise finite row (they add nothing); rows wider than one pass of a
 * block (8192 entries). */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "fixture.h"
#include "sampler.h"
#include "suites.h"

int rn_emu_top_rows(const float *logits, int rows, int V, const float *temps, int slices,
                    rn_row_top *out);

enum { W = 9001, ROWS = 7 };

static void top_rows_fill(float *l)
{
    const float inf = INFINITY;
    uint32_t seed = 7u;
    for (int i = 0; i < W; i++) {
        seed = seed * 1664525u + 1013904223u;
        l[0 * W + i] = (float)(seed >> 8) * 0x1p-20f - 8.0f;           /* spread */
        l[1 * W + i] = (float)(i % 7);                                 /* 1285 ties at the top */
        l[2 * W + i] = i % 3 ? -inf : NAN;                             /* nothing above -inf */
        l[3 * W + i] = i % 3 == 0 ? 0.0f : i % 3 == 1 ? -0.0f : -1.0f; /* zeros of both signs */
        l[4 * W + i] = (float)(i % 100) * 0.01f;
        l[5 * W + i] = i % 64 == 0 ? 3.0f : -2.0f;           /* 141 ties for 128 places */
        l[6 * W + i] = i < W / 2 ? -inf : -(float)i * 1e-3f; /* half the row -inf */
    }
    l[4 * W + 17] = inf, l[4 * W + 9000] = inf, l[4 * W + 5] = NAN;
}

/* slices, first row, rows: every row at one block a row and at 5 slices
 * (uneven: 1800 and 1801); the rows whose rule meets the slices' edges most
 * (ties throughout, more ties than places, half the row -inf) at 16 (the
 * emulation spends about half a second a 1024-thread block) */
static const int top_cases[][3] = {{1, 0, ROWS}, {5, 0, ROWS}, {16, 5, 2}, {16, 1, 1}};

/* _i: the case */
START_TEST(test_top_emu_matches_host)
{
    const int *c = top_cases[_i];
    float *l = malloc(sizeof(float) * ROWS * W);
    rn_row_top got[ROWS], want;
    const float temps[ROWS] = {1.0f, 0.7f, 1.0f, 0.0f, 1.3f, 0.5f, 2.0f};
    char what[64];
    ck_assert_ptr_nonnull(l);
    top_rows_fill(l);
    const float *rows = l + (size_t)c[1] * W;
    ck_assert_int_eq(rn_emu_top_rows(rows, c[2], W, temps + c[1], c[0], got), 0);
    for (int r = 0; r < c[2]; r++) {
        rn_row_top_fill(rows + (size_t)r * W, W, temps[c[1] + r], &want);
        snprintf(what, sizeof what, "row %d, %d slices", c[1] + r, c[0]);
        fixture_check_same_top(&got[r], &want, W, what);
    }
    free(l);
}
END_TEST

/* A row not wanted (temperature below 0) says so and nothing else; slices
 * narrower than the candidates are refused, not run. */
START_TEST(test_top_emu_skips_and_refuses)
{
    float *l = malloc(sizeof(float) * ROWS * W);
    rn_row_top got[ROWS];
    float temps[ROWS] = {1.0f, -1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f};
    ck_assert_ptr_nonnull(l);
    top_rows_fill(l);
    ck_assert_int_eq(rn_emu_top_rows(l, 2, W, temps, 4, got), 0);
    ck_assert_int_eq(got[1].n, 0);
    ck_assert_int_eq(got[0].n, RN_TOP_CANDIDATES);
    ck_assert_int_eq(rn_emu_top_rows(l, 1, 1000, temps, 8, got), -1);
    free(l);
}
END_TEST

Suite *top_emu_suite(void)
{
    Suite *s = suite_create("top_emu");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 300);
    tcase_add_loop_test(tc, test_top_emu_matches_host, 0,
                        (int)(sizeof top_cases / sizeof top_cases[0]));
    tcase_add_test(tc, test_top_emu_skips_and_refuses);
    suite_add_tcase(s, tc);
    return s;
}
