/* check_math.c -- the shared scalar formulas (rn_math.h) and dtype conversions.
 */
#include <check.h>
#include <math.h>

#include "rn_math.h"
#include "suites.h"
#include "util.h"

START_TEST(test_math_decay_pow2_matches_formula)
{
    /* gamma_h = 1 - 2^(-5-h), held to fp32 */
    for (int h = 0; h < 8; h++) {
        double g = exp(rn_log_decay(0, h, 8));
        ck_assert_double_eq_tol(g, 1.0 - pow(2.0, -5.0 - h), 1e-7);
    }
}
END_TEST

START_TEST(test_math_decay_linspace_endpoints)
{
    /* yar/paper: 1 - exp(linspace(ln 1/32, ln 1/512, H)) has fixed ends */
    ck_assert_double_eq_tol(exp(rn_log_decay(1, 0, 4)), 1.0 - 1.0 / 32, 1e-7);
    ck_assert_double_eq_tol(exp(rn_log_decay(1, 3, 4)), 1.0 - 1.0 / 512, 1e-7);
    double mid = exp(rn_log_decay(1, 1, 4));
    ck_assert(mid > 1.0 - 1.0 / 32 && mid < 1.0 - 1.0 / 512);
}
END_TEST

START_TEST(test_math_decay_pow_is_power)
{
    double lg = rn_log_decay(0, 2, 8);
    float g = rn_decay_pow(lg, 1.0);
    ck_assert_float_eq_tol(rn_decay_pow(lg, 10.0), powf(g, 10.0f), 1e-6f);
    ck_assert_float_eq(rn_decay_pow(lg, 0.0), 1.0f);
}
END_TEST

START_TEST(test_math_rope_frequencies)
{
    /* half split: feature j and j+dk/2 share theta^(-2j/dk) */
    int dk = 8;
    for (int j = 0; j < dk / 2; j++) {
        float w = rn_rope_frequency(0, 0, 10000.0, j, dk);
        ck_assert_float_eq(w, rn_rope_frequency(0, 0, 10000.0, j + dk / 2, dk));
        ck_assert_float_eq_tol(w, (float)pow(10000.0, -2.0 * j / dk), 1e-7f);
    }
    /* interleaved linspace: pairs (2j, 2j+1), exponents 0..1 */
    ck_assert_float_eq(rn_rope_frequency(1, 1, 10000.0, 0, dk), 1.0f);
    ck_assert_float_eq(rn_rope_frequency(1, 1, 10000.0, 6, dk),
                       rn_rope_frequency(1, 1, 10000.0, 7, dk));
    ck_assert_float_eq_tol(rn_rope_frequency(1, 1, 10000.0, 7, dk), 1e-4f, 1e-10f);
}
END_TEST

START_TEST(test_math_activations)
{
    ck_assert_float_eq_tol(rn_act_swish(1.0f), 1.0f / (1.0f + expf(-1.0f)), 1e-7f);
    ck_assert_float_eq_tol(rn_act_gelu(1.0f), 0.8413447f, 1e-6f);
    ck_assert_float_eq(rn_act_relu(-2.0f), 0.0f);
}
END_TEST

START_TEST(test_math_bf16_roundtrip_and_rounding)
{
    ck_assert_float_eq(rn__bf16_to_f32(rn__f32_to_bf16(1.5f)), 1.5f);
    /* 1 + 2^-8 is halfway between bf16 neighbours 1 and 1+2^-7: ties to even -> 1
   */
    ck_assert_float_eq(rn__bf16_to_f32(rn__f32_to_bf16(1.0f + 1.0f / 256)), 1.0f);
    ck_assert(isnan(rn__bf16_to_f32(rn__f32_to_bf16(NAN))));
    ck_assert_float_eq(rn__f16_to_f32(rn__f32_to_f16(0.333251953125f)), 0.333251953125f);
    /* f16: every one of the 65536 values survives f16 -> f32 -> f16 (NaNs stay
   * NaN) */
    for (uint32_t h = 0; h < 65536; h++) {
        float f = rn__f16_to_f32((uint16_t)h);
        if (isnan(f))
            ck_assert(isnan(rn__f16_to_f32(rn__f32_to_f16(f))));
        else
            ck_assert_uint_eq(rn__f32_to_f16(f), h);
    }
    ck_assert_float_eq(rn__f16_to_f32(rn__f32_to_f16(1e6f)), INFINITY);     /* overflow */
    ck_assert_float_eq(rn__f16_to_f32(rn__f32_to_f16(0x1p-24f)), 0x1p-24f); /* smallest subnormal */
    ck_assert_float_eq(rn__f16_to_f32(rn__f32_to_f16(1.0f + 0x1p-11f)), 1.0f); /* tie to even */
    ck_assert_float_eq(rn__f16_to_f32(rn__f32_to_f16(1.0f + 0x1.8p-11f)), 1.0f + 0x1p-10f);
}
END_TEST

START_TEST(test_math_act_apply_selects)
{
    ck_assert_float_eq(rn_act_apply(0, 0.7f), rn_act_swish(0.7f));
    ck_assert_float_eq(rn_act_apply(1, 0.7f), rn_act_gelu(0.7f));
    ck_assert_float_eq(rn_act_apply(2, -0.7f), 0.0f);
}
END_TEST

START_TEST(test_math_decay_mask_is_causal_power)
{
    float pw[9];
    double lg = rn_log_decay(0, 1, 4);
    for (int d = 0; d <= 8; d++)
        pw[d] = rn_decay_pow(lg, d);
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < 8; j++)
            ck_assert_float_eq(rn_decay_mask(pw, i, j), j <= i ? pw[i - j] : 0.0f);
    ck_assert_float_eq(rn_decay_mask(pw, 3, 3), 1.0f);
}
END_TEST

START_TEST(test_math_rope_rotate_is_complex_product)
{
    /* with equal angles for both features the pair turns like a complex number */
    double ang = 0.3;
    float a = 0.8f, b = -0.6f, c = (float)cos(ang), s = (float)sin(ang);
    rn_rope_rotate(&a, &b, c, s, c, s);
    ck_assert_float_eq_tol(a, (float)(0.8 * cos(ang) + 0.6 * sin(ang)), 1e-6f);
    ck_assert_float_eq_tol(b, (float)(-0.6 * cos(ang) + 0.8 * sin(ang)), 1e-6f);
    ck_assert_float_eq_tol(a * a + b * b, 1.0f, 1e-6f);
}
END_TEST

START_TEST(test_math_ts_norm_step_sums_powers)
{
    /* after n steps from 0: s = sum_{t<n} g^t */
    float s = 0.0f, g = 0.9f, r = 0.0f;
    double want = 0.0;
    for (int n = 0; n < 50; n++) {
        r = rn_ts_norm_step(&s, g);
        want = want * 0.9 + 1.0;
    }
    ck_assert_float_eq_tol(s, (float)want, 1e-5f);
    ck_assert_float_eq_tol(r, (float)(1.0 / sqrt(want)), 1e-6f);
}
END_TEST

START_TEST(test_math_norm_factor)
{
    ck_assert_float_eq_tol(rn_norm_factor(8.0, 2, 0.0f), 0.5f, 1e-7f);
    ck_assert_float_eq_tol(rn_norm_factor(0.0, 4, 1e-6f), 1000.0f, 1e-2f);
}
END_TEST

Suite *math_suite(void)
{
    Suite *s = suite_create("math");
    TCase *tc = tcase_create("formulas");
    tcase_add_test(tc, test_math_decay_pow2_matches_formula);
    tcase_add_test(tc, test_math_decay_linspace_endpoints);
    tcase_add_test(tc, test_math_decay_pow_is_power);
    tcase_add_test(tc, test_math_rope_frequencies);
    tcase_add_test(tc, test_math_activations);
    tcase_add_test(tc, test_math_bf16_roundtrip_and_rounding);
    tcase_add_test(tc, test_math_act_apply_selects);
    tcase_add_test(tc, test_math_decay_mask_is_causal_power);
    tcase_add_test(tc, test_math_rope_rotate_is_complex_product);
    tcase_add_test(tc, test_math_ts_norm_step_sums_powers);
    tcase_add_test(tc, test_math_norm_factor);
    suite_add_tcase(s, tc);
    return s;
}
