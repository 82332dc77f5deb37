/* The recurrent decode step (engine/cuda/step_dev.cuh: ret_step_kernel and
 * torchscale's ts_step_kernel) on the CPU through the CUDA emulation
 * (step_emu.cc), launched as rk_ret_step launches them, against the step in
 * double precision from the same values: each updated state value within
 * 1e-5 of 1 + |value| (g S + k v in fp32 is a rounding or two from it; a
 * bf16 state a bf16 step more), the read-out -- the row shares' parts
 * summed -- within 1e-5 too (sums of at most 64 fp32 products of values
 * below 2 per share), nothing outside the step's slots, layer and rows
 * written.  A wrong slot, head, row share, column tile, decay or the s
 * update each show in one of these. */
#include <check.h>

#include "step_emu.h"
#include "suites.h"

/* n, H, dk, dv; W, lanes, d_split, row_split; bf16 states, s, early loads.
 * The 1.3B preset's head width (dv 512) in two column tiles of 32 lanes at
 * 4 values over 8 row shares with s; several sequences with a share each;
 * narrow heads with idle lanes (dv 36, 16 lanes); one value a thread with
 * bf16 states, and with a dv no tile divides (dv 50); rows that do not
 * fill the last round of a share (dk 48 over 4 shares of 8 thread rows);
 * heads of 32 values in one tile of 8 lanes, the plan's layout for dv up
 * to 32 (16 thread rows for dk 16, 32 for dk 32 with bf16 states); each
 * with the early loads on and off. */
static const rn_emu_step_case cases[] = {
    {1, 4, 64, 512, 4, 32, 8, 8, 0, 1, 0}, {3, 4, 32, 64, 4, 16, 16, 1, 0, 1, 1},
    {2, 3, 16, 36, 4, 16, 16, 2, 0, 0, 1}, {2, 2, 48, 96, 1, 32, 4, 2, 1, 0, 0},
    {1, 2, 40, 50, 1, 32, 8, 1, 1, 0, 1},  {2, 2, 48, 128, 4, 32, 8, 4, 1, 0, 0},
    {2, 2, 16, 32, 4, 8, 16, 1, 0, 0, 1},  {1, 4, 32, 32, 4, 8, 32, 1, 1, 0, 0},
};
#define N_CASES (int)(sizeof cases / sizeof cases[0])

START_TEST(test_step_emu_matches_reference)
{
    const rn_emu_step_case *c = &cases[_i];
    rn_emu_step_result r;
    ck_assert_int_eq(rn_emu_step_check(c, (uint32_t)(313 + _i), &r), 0);
    ck_assert_msg(r.worst_state <= 1e-5, "case %d: state error %.3g", _i, r.worst_state);
    ck_assert_msg(r.worst_out <= 1e-5, "case %d: read-out error %.3g", _i, r.worst_out);
}
END_TEST

/* Shapes rn_cuda_step_plan never makes are refused, not run: 4 values a
 * thread over a dv or a torchscale layer that would leave rows off 16
 * bytes, s in a bf16 pool. */
START_TEST(test_step_emu_refuses_other_shapes)
{
    static const rn_emu_step_case bad[] = {
        {1, 2, 16, 50, 4, 16, 8, 1, 0, 0, 0},
        {1, 2, 16, 64, 4, 16, 8, 1, 0, 1, 0},
        {1, 4, 16, 64, 1, 16, 8, 1, 1, 1, 0},
    };
    rn_emu_step_result r;
    for (int i = 0; i < (int)(sizeof bad / sizeof bad[0]); i++)
        ck_assert_int_eq(rn_emu_step_check(&bad[i], 1, &r), -1);
}
END_TEST

Suite *step_emu_suite(void)
{
    Suite *s = suite_create("step_emu");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_step_emu_matches_reference, 0, N_CASES);
    tcase_add_test(tc, test_step_emu_refuses_other_shapes);
    suite_add_tcase(s, tc);
    return s;
}
