/*
 * check_state_bf16.c -- rn_engine_opts.state_bf16: states kept as bf16 on
 * the GPU (computed in fp32, rounded to nearest even when stored).
 *
 * On the CPU backend the option is refused with a message that names the
 * CUDA backend.  With RN_TEST_DEVICE=cuda (make check-cuda), on every
 * fixture whose model has no torchscale normaliser (those are refused too):
 *   - the accuracy cost against fp32 states over a short horizon, printed
 *     and held to BF16_STATE_TOL: a prompt (16-token chunks) then 32 greedy
 *     decode steps fed the same tokens in both engines; logits' max error
 *     relative to max(1, max |logit|) of the step, the exported state's
 *     relative to max(1, max |S|).  A stored value moves by at most 2^-8 of
 *     itself per rounding (8 significant bits), so over ~200 steps of these
 *     small models 5e-2 catches a wrong kernel, not the option's own cost.
 *     That cost grows with the horizon where a head's decay is closer to 1
 *     than bf16 resolves (g S rounds back to S, small k v^T are lost): it is
 *     measured on the 1.3B preset over long decodes by `retnet bench-cuda
 *     --state-bf16` (docs/benchmarks.md);
 *   - export, import and copy move bf16 values without loss (bf16 -> fp32
 *     -> bf16 is exact), reset empties a slot;
 *   - a batched decode equals single decodes bit for bit, as with fp32.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fixture.h"
#include "rn_math.h"
#include "suites.h"

#define BF16_STATE_TOL 5e-2
#define STEPS 32

/* An engine on f's model with bf16 states (bf16 != 0) or fp32 ones, on the
 * backend the suite runs on; the status of rn_engine_new. */
static rn_engine_opts opts_with(int bf16, int n_slots)
{
    rn_engine_opts o = fixture_opts(n_slots, 64);
    o.state_bf16 = bf16;
    return o;
}

static int engine_with(const fixture *f, int bf16, int n_slots, rn_engine **e, rn_error *err)
{
    rn_engine_opts o = opts_with(bf16, n_slots);
    *e = NULL;
    return rn_engine_new(e, f->model, &o, err);
}

static rn_engine *must_engine(const fixture *f, int bf16, int n_slots)
{
    rn_engine_opts o = opts_with(bf16, n_slots);
    return fixture_engine_opts(f, &o);
}

/* max |a - b| / max(1, max |ref|) over n values */
static double rel_err(const float *a, const float *ref, size_t n)
{
    return max_abs_diff(a, ref, n, NULL) / fmax(1.0, max_abs(ref, n));
}

START_TEST(test_state_bf16_refused_on_the_cpu)
{
    fixture f;
    fixture_load(&f, "fla");
    rn_engine *e;
    rn_error err = {0};
    ck_assert_int_eq(engine_with(&f, 1, 2, &e, &err), RN_EUNSUPPORTED);
    ck_assert_ptr_null(e);
    ck_assert_ptr_nonnull(strstr(err.msg, "CUDA"));
    fixture_free(&f);
}
END_TEST

/* Skips (returning 1) a torchscale-normalised fixture after checking that
 * bf16 states are refused for it. */
static int refused_for_torchscale(const fixture *f)
{
    if (f->cfg->retention_norm != RN_RETNORM_TORCHSCALE)
        return 0;
    rn_engine *e;
    rn_error err = {0};
    ck_assert_int_eq(engine_with(f, 1, 2, &e, &err), RN_EUNSUPPORTED);
    ck_assert_ptr_nonnull(strstr(err.msg, "torchscale"));
    return 1;
}

START_TEST(test_state_bf16_tracks_fp32)
{
    fixture f;
    fixture_load(&f, fixture_names[_i]);
    if (refused_for_torchscale(&f)) {
        fixture_free(&f);
        return;
    }
    rn_engine *a = must_engine(&f, 0, 1), *b = must_engine(&f, 1, 1);
    size_t V = (size_t)f.cfg->vocab_size;
    float *la = malloc(sizeof(float) * V), *lb = malloc(sizeof(float) * V);
    ck_assert_ptr_nonnull(la);
    ck_assert_ptr_nonnull(lb);
    rn_prefill_opts po = {.form = RN_FORM_CHUNKWISE, .chunk = 16};
    ck_assert_int_eq(rn_prefill(a, 0, f.tokens, f.T, &po, la), RN_OK);
    ck_assert_int_eq(rn_prefill(b, 0, f.tokens, f.T, &po, lb), RN_OK);
    double prefill_err = rel_err(lb, la, V), decode_err = 0.0;
    int agree = 0, slot = 0;
    for (int step = 0; step < STEPS; step++) {
        int32_t next = rn_argmax_row(la, (int)V); /* both follow the fp32 path */
        agree += rn_argmax_row(lb, (int)V) == next;
        ck_assert_int_eq(rn_decode(a, &slot, &next, 1, la), RN_OK);
        ck_assert_int_eq(rn_decode(b, &slot, &next, 1, lb), RN_OK);
        decode_err = fmax(decode_err, rel_err(lb, la, V));
    }
    float *sa = fixture_state(a, 0), *sb = fixture_state(b, 0);
    size_t sn = rn_engine_state_bytes(a) / sizeof(float);
    double state_err = rel_err(sb, sa, sn);
    printf("bf16 states, %s: prompt of %d then %d decode steps: logits rel err %.3g after the "
           "prompt, %.3g at worst decoding; greedy picks agree %d/%d; state rel err %.3g\n",
           f.dir, f.T, STEPS, prefill_err, decode_err, agree, STEPS, state_err);
    ck_assert_uint_eq(rn_engine_slot_bytes(b) * 2, rn_engine_slot_bytes(a));
    ck_assert_msg(state_err > 0.0, "%s: the bf16 engine's state equals fp32's: not rounded", f.dir);
    ck_assert_uint_eq(rn_engine_state_bytes(b), rn_engine_state_bytes(a));
    ck_assert_msg(prefill_err <= BF16_STATE_TOL && decode_err <= BF16_STATE_TOL &&
                      state_err <= BF16_STATE_TOL,
                  "%s: bf16 states are off by %.3g / %.3g / %.3g (tol %.3g)", f.dir, prefill_err,
                  decode_err, state_err, BF16_STATE_TOL);
    free(sa);
    free(sb);
    free(la);
    free(lb);
    rn_engine_free(a);
    rn_engine_free(b);
    fixture_free(&f);
}
END_TEST

START_TEST(test_state_bf16_moves_without_loss)
{
    fixture f;
    fixture_load(&f, "fla");
    rn_engine *e = must_engine(&f, 1, 4);
    size_t sb = rn_engine_state_bytes(e), V = (size_t)f.cfg->vocab_size;
    ck_assert_int_eq(rn_prefill(e, 0, f.tokens, f.T, NULL, NULL), RN_OK);
    float *s0 = fixture_state(e, 0);
    ck_assert_int_eq(rn_state_import(e, 1, s0, sb, rn_state_pos(e, 0)), RN_OK);
    ck_assert_int_eq(rn_state_copy(e, 2, 0), RN_OK);
    float *s1 = fixture_state(e, 1), *s2 = fixture_state(e, 2);
    ck_assert_msg(memcmp(s0, s1, sb) == 0, "export -> import -> export changed the state");
    ck_assert_msg(memcmp(s0, s2, sb) == 0, "a copied slot differs");
    /* the same state decodes to the same logits from every slot */
    float *l = malloc(sizeof(float) * 3 * V);
    ck_assert_ptr_nonnull(l);
    int32_t t = f.tokens[f.T];
    for (int s = 0; s < 3; s++)
        ck_assert_int_eq(rn_decode(e, &s, &t, 1, l + (size_t)s * V), RN_OK);
    ck_assert(memcmp(l, l + V, sizeof(float) * V) == 0);
    ck_assert(memcmp(l, l + 2 * V, sizeof(float) * V) == 0);
    ck_assert_int_eq(rn_state_reset(e, 1), RN_OK);
    float *z = fixture_state(e, 1);
    ck_assert_double_eq(max_abs(z, sb / sizeof(float)), 0.0);
    free(s0);
    free(s1);
    free(s2);
    free(z);
    free(l);
    rn_engine_free(e);
    fixture_free(&f);
}
END_TEST

START_TEST(test_state_bf16_batched_is_single)
{
    fixture f;
    fixture_load(&f, "fla");
    rn_engine_opts o = opts_with(1, 8);
    fixture_check_batched_is_single(&f, &o, 8, 3);
    fixture_free(&f);
}
END_TEST

Suite *state_bf16_suite(void)
{
    Suite *s = suite_create("state_bf16");
    TCase *tc = tcase_create("bf16");
    tcase_set_timeout(tc, 120);
    if (fixture_on_cuda()) {
        tcase_add_loop_test(tc, test_state_bf16_tracks_fp32, 0, N_FIXTURES);
        tcase_add_test(tc, test_state_bf16_moves_without_loss);
        tcase_add_test(tc, test_state_bf16_batched_is_single);
    } else {
        tcase_add_test(tc, test_state_bf16_refused_on_the_cpu);
    }
    suite_add_tcase(s, tc);
    return s;
}
