/* check_math.c -- the shared scalar formulas (rn_math.h) and dtype conversions.
 */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

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

/* rn__argmax_rows (16 lanes, then merged) picks what the scalar
 * rn_argmax_row picks, on rows built to stress the rule: every length from 1
 * to 70 and 4096/4097, repeated maxima in different lanes and in the tail,
 * NaN, infinities, signed zeros, all -inf, all NaN. */
START_TEST(test_math_argmax_rows_is_the_scalar_rule)
{
    enum { MAXN = 4097 };
    float *row = malloc(sizeof(float) * MAXN);
    ck_assert_ptr_nonnull(row);
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    int lens[] = {4096, 4097};
    for (int trial = 0; trial < 2000; trial++) {
        int n = trial < 1400 ? 1 + trial % 70 : lens[trial % 2];
        for (int i = 0; i < n; i++) {
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            unsigned r = (unsigned)(seed >> 33);
            switch (trial % 7) {
            case 0: /* few distinct values: many ties */
                row[i] = (float)(r % 4);
                break;
            case 1: /* NaN and infinities sprinkled in */
                row[i] = r % 11 == 0   ? NAN
                         : r % 13 == 0 ? -INFINITY
                         : r % 97 == 0 ? INFINITY
                                       : (float)(r % 1000);
                break;
            case 2: /* signed zeros and negatives */
                row[i] = r % 3 == 0 ? 0.0f : r % 3 == 1 ? -0.0f : -(float)(r % 50);
                break;
            case 3:
                row[i] = -INFINITY;
                break;
            case 4:
                row[i] = r % 2 ? NAN : -INFINITY;
                break;
            default:
                row[i] = (float)((int)(r % 2001) - 1000) * 0.25f;
                break;
            }
        }
        int32_t got;
        rn__argmax_rows(row, 1, n, &got);
        ck_assert_msg(got == rn_argmax_row(row, n), "trial %d (n %d): %d, scalar %d", trial, n, got,
                      rn_argmax_row(row, n));
    }
    /* several rows at once */
    float two[2 * 40];
    for (int i = 0; i < 80; i++)
        two[i] = (float)((i * 37) % 41);
    int32_t out[2];
    rn__argmax_rows(two, 2, 40, out);
    ck_assert_int_eq(out[0], rn_argmax_row(two, 40));
    ck_assert_int_eq(out[1], rn_argmax_row(two + 40, 40));
    free(row);
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
    tcase_add_test(tc, test_math_argmax_rows_is_the_scalar_rule);
    suite_add_tcase(s, tc);
    return s;
}
