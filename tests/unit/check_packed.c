/*
 * check_packed.c -- the decode weight panels (engine/cpu/packed.c) on their
 * own: every dtype, widths and heights that are not multiples of the panel
 * or of the bf16 input pair, with and without bias.  Each product must be
 * within fp32 rounding of a double-precision sum, and each row of a batch
 * must equal the same row computed alone, bit for bit, and a fused
 * activation must equal the activation applied afterwards.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/ops.h"
#include "cpu/packed.h"
#include "suites.h"
#include "util.h"

enum { MAX_BATCH = 21 };

typedef struct {
    rn_tensor W;
    void *raw; /* W's storage */
    float *wf; /* W as f32 (after rounding to its dtype) */
    float *bias;
    float *x; /* MAX_BATCH x in */
} packed_case;

static float det_value(uint32_t *s)
{
    *s = *s * 1664525u + 1013904223u;
    return (float)((*s >> 8) & 0xffff) / 32768.0f - 1.0f;
}

/* Fills a case; owned buffers are released by case_free. */
static void case_make(packed_case *k, rn_dtype dt, int out, int in, int with_bias)
{
    size_t n = (size_t)out * (size_t)in, esz = rn_dtype_size(dt);
    uint32_t s = (uint32_t)(out * 131 + in * 7 + (int)dt);
    k->raw = malloc(n * esz);
    k->wf = malloc(n * sizeof(float));
    k->bias = with_bias ? malloc((size_t)out * sizeof(float)) : NULL;
    k->x = malloc((size_t)MAX_BATCH * (size_t)in * sizeof(float));
    ck_assert(k->raw && k->wf && k->x && (!with_bias || k->bias));
    for (size_t i = 0; i < n; i++) {
        float v = det_value(&s);
        if (dt == RN_DT_BF16) {
            ((uint16_t *)k->raw)[i] = rn__f32_to_bf16(v);
            k->wf[i] = rn__bf16_to_f32(((uint16_t *)k->raw)[i]);
        } else if (dt == RN_DT_F16) {
            ((uint16_t *)k->raw)[i] = rn__f32_to_f16(v);
            k->wf[i] = rn__f16_to_f32(((uint16_t *)k->raw)[i]);
        } else {
            ((float *)k->raw)[i] = v;
            k->wf[i] = v;
        }
    }
    for (int r = 0; with_bias && r < out; r++)
        k->bias[r] = det_value(&s);
    for (size_t i = 0; i < (size_t)MAX_BATCH * (size_t)in; i++)
        k->x[i] = det_value(&s);
    k->W = (rn_tensor){k->raw, dt, 2, {out, in}, (int64_t)n};
}

static void case_free(packed_case *k)
{
    free(k->raw);
    free(k->wf);
    free(k->bias);
    free(k->x);
}

static void check_case(rn_pool *pool, rn_dtype dt, int out, int in, int with_bias)
{
    packed_case k;
    case_make(&k, dt, out, in, with_bias);
    rn_packed P;
    ck_assert_int_eq(rn__pack(&P, &k.W), 0);
    float *alone = malloc((size_t)MAX_BATCH * (size_t)out * sizeof(float));
    float *batch = malloc((size_t)MAX_BATCH * (size_t)out * sizeof(float));
    ck_assert(alone && batch);
    for (int b = 0; b < MAX_BATCH; b++) {
        rn_packed_out o = {alone + (size_t)b * (size_t)out, &P, k.bias, NULL};
        rn__linear_packed(pool, &o, 1, k.x + (size_t)b * (size_t)in, 1);
        for (int r = 0; r < out; r++) {
            double ref = k.bias ? k.bias[r] : 0.0, mag = fabs(ref);
            for (int i = 0; i < in; i++) {
                double t = (double)k.wf[(size_t)r * (size_t)in + (size_t)i] *
                           (double)k.x[(size_t)b * (size_t)in + (size_t)i];
                ref += t;
                mag += fabs(t);
            }
            double got = alone[(size_t)b * (size_t)out + (size_t)r];
            /* 2 roundings per term, in fp32 */
            ck_assert_msg(fabs(got - ref) <= 2.0 * (in + 1) * 6e-8 * mag + 1e-30,
                          "dtype %d %dx%d row %d input %d: %.9g vs %.9g", (int)dt, out, in, r, b,
                          got, ref);
        }
    }
    for (int n = 2; n <= MAX_BATCH; n++) {
        rn_packed_out o = {batch, &P, k.bias, NULL};
        rn__linear_packed(pool, &o, 1, k.x, n);
        ck_assert_msg(!memcmp(batch, alone, (size_t)n * (size_t)out * sizeof(float)),
                      "dtype %d %dx%d: batch of %d differs from single rows", (int)dt, out, in, n);
    }
    /* a fused activation equals the product followed by rn__act, bit for bit */
    for (rn_act act = RN_ACT_SWISH; act <= RN_ACT_RELU; act++) {
        rn_packed_out o = {batch, &P, k.bias, &act};
        rn__linear_packed(pool, &o, 1, k.x, MAX_BATCH);
        rn__act(alone, (size_t)MAX_BATCH * (size_t)out, act);
        ck_assert_msg(!memcmp(batch, alone, (size_t)MAX_BATCH * (size_t)out * sizeof(float)),
                      "dtype %d %dx%d: fused activation %d differs", (int)dt, out, in, (int)act);
        o.act = NULL;
        rn__linear_packed(pool, &o, 1, k.x, MAX_BATCH);
        memcpy(alone, batch, (size_t)MAX_BATCH * (size_t)out * sizeof(float));
    }
    free(alone);
    free(batch);
    rn__packed_free(&P);
    case_free(&k);
}

static const rn_dtype dtypes[] = {RN_DT_F32, RN_DT_BF16, RN_DT_F16};

START_TEST(test_packed_matches_sum_and_is_batch_invariant)
{
    static const int shapes[][2] = {{16, 1}, {17, 3}, {45, 37}, {33, 64}, {64, 258}, {130, 129}};
    rn_pool *pool;
    ck_assert_int_eq(rn__pool_new(&pool, 2), 0);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int bias = 0; bias < 2; bias++)
            check_case(pool, dtypes[_i], shapes[s][0], shapes[s][1], bias);
    rn__pool_free(pool);
}
END_TEST

Suite *packed_suite(void)
{
    Suite *s = suite_create("packed");
    TCase *tc = tcase_create("core");
    tcase_add_loop_test(tc, test_packed_matches_sum_and_is_batch_invariant, 0,
                        (int)(sizeof dtypes / sizeof dtypes[0]));
    suite_add_tcase(s, tc);
    return s;
}
