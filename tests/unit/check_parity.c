/*
 * check_parity.c -- our three forms against the reference packages.
 *
 * Fixtures hold logits and final states computed by torchscale 0.3.0,
 * yet-another-retnet 0.5.1 and flash-linear-attention 0.6.0 in float64
 * (tests/fixtures/README.md).  Tolerance: max |logit error| <= 1e-4 for
 * every fixture, the bf16 one included: its reference ran on the same
 * bf16-rounded weights, and we compute in fp32 from them, so only our fp32
 * arithmetic separates us from an exact answer.  States: <= 1e-4 x
 * max(1, max |S|).
 *
 * On the CUDA backend (RN_TEST_DEVICE=cuda, make check-cuda) fp32 weights keep
 * those tolerances (fp32 GEMMs, no TF32).  With bf16/fp16 weights, prefill
 * chunks of more than 8 rows round their activations to the weights' dtype
 * for the tensor-core GEMMs (2^-9 relative per rounding), so logits get
 * HALF_ACT_TOL x max(1, max |logit|) and states HALF_ACT_TOL x max(1, max |S|).
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fixture.h"
#include "suites.h"

#define LOGIT_TOL 1e-4
#define STATE_TOL 1e-4
#define HALF_ACT_TOL 2e-2

/* Tolerance scale for this fixture on this backend (see the header). */
static double half_act(const fixture *f)
{
    return fixture_on_cuda() && strcmp(rn_model_dtype_name(f->model), "f32") != 0;
}

typedef struct {
    const char *label;
    rn_form form;
    int chunk;
    int ts_clamp;
    const char *ref; /* reference logits to compare against */
} form_case;

static const form_case cases[] = {
    {"recurrent", RN_FORM_RECURRENT, 0, 0, "logits.recurrent"},
    {"chunkwise-16", RN_FORM_CHUNKWISE, 16, 0, "logits.recurrent"},
    {"chunkwise-7-ragged", RN_FORM_CHUNKWISE, 7, 0, "logits.recurrent"},
    {"chunkwise-64", RN_FORM_CHUNKWISE, 64, 0, "logits.recurrent"},
    {"chunkwise-16-vs-pkg-chunk", RN_FORM_CHUNKWISE, 16, 0, "logits.chunkwise"},
    {"parallel", RN_FORM_PARALLEL, 0, 1, "logits.parallel"},
    {"parallel-unclamped", RN_FORM_PARALLEL, 0, 0, "logits.recurrent"},
};
#define N_CASES (int)(sizeof cases / sizeof cases[0])

static void check_states(const fixture *f, rn_engine *e, int b, const char *what)
{
    const rn_config *c = f->cfg;
    size_t sb = rn_engine_state_bytes(e), hkv = (size_t)c->n_heads * c->head_dim_k * c->head_dim_v;
    float *st = malloc(sb);
    ck_assert_ptr_nonnull(st);
    ck_assert_int_eq(rn_state_export(e, 0, st, sb), RN_OK);
    size_t layer_vals = sb / sizeof(float) / (size_t)c->n_layers;
    for (int l = 0; l < c->n_layers; l++) {
        char name[64];
        size_t n = 0;
        snprintf(name, sizeof name, "state.%d", l);
        float *ref = fixture_tensor(f, name, &n);
        ck_assert_msg(ref && n == hkv * (size_t)f->B, "%s: %s missing or wrong size", f->dir, name);
        const float *mine = st + (size_t)l * layer_vals, *theirs = ref + (size_t)b * hkv;
        size_t w;
        double d = max_abs_diff(mine, theirs, hkv, &w);
        double tol = (half_act(f) ? HALF_ACT_TOL : STATE_TOL) * fmax(1.0, max_abs(theirs, hkv));
        ck_assert_msg(d <= tol,
                      "%s %s seq %d layer %d: state max err %.3g > %.3g at %zu (%g vs %g)", f->dir,
                      what, b, l, d, tol, w, mine[w], theirs[w]);
        free(ref);
        if (c->retention_norm == RN_RETNORM_TORCHSCALE) {
            snprintf(name, sizeof name, "state_scale.%d", l);
            float *sc = fixture_tensor(f, name, &n);
            ck_assert_ptr_nonnull(sc);
            d = max_abs_diff(mine + hkv, sc + (size_t)b * (size_t)c->n_heads, (size_t)c->n_heads,
                             &w);
            ck_assert_msg(d <= (half_act(f) ? HALF_ACT_TOL : 1e-4), "%s: scale layer %d err %.3g",
                          f->dir, l, d);
            free(sc);
        }
    }
    free(st);
}

START_TEST(test_parity_logits_and_states)
{
    const char *name = fixture_names[_i / N_CASES];
    const form_case *fc = &cases[_i % N_CASES];
    fixture f;
    fixture_load(&f, name);
    size_t n = 0;
    float *ref = fixture_tensor(&f, fc->ref, &n);
    if (!ref) { /* only yar and fla carry a package chunkwise form */
        ck_assert_msg(fc->ref[7] == 'c', "%s: missing %s", f.dir, fc->ref);
        fixture_free(&f);
        return;
    }
    int V = f.cfg->vocab_size;
    ck_assert_int_eq(n, (size_t)f.B * f.T * V);
    rn_engine *e = fixture_engine(&f, 1, 64);
    float *lg = malloc(sizeof(float) * (size_t)f.T * V);
    ck_assert_ptr_nonnull(lg);
    for (int b = 0; b < f.B; b++) {
        rn_prefill_opts po = {.form = fc->form,
                              .chunk = fc->chunk,
                              .logits = RN_LOGITS_ALL,
                              .ts_clamp = fc->ts_clamp};
        ck_assert_int_eq(rn_state_reset(e, 0), RN_OK);
        int rc = rn_prefill(e, 0, f.tokens + (size_t)b * f.T, f.T, &po, lg);
        if (fixture_on_cuda() && fc->ts_clamp && f.cfg->retention_norm == RN_RETNORM_TORCHSCALE) {
            /* the CUDA backend does not offer torchscale's clamp: it must say so */
            ck_assert_int_eq(rc, RN_EUNSUPPORTED);
            break;
        }
        ck_assert_int_eq(rc, RN_OK);
        size_t w;
        const float *want = ref + (size_t)b * f.T * V;
        double d = max_abs_diff(lg, want, (size_t)f.T * V, &w);
        double tol =
            half_act(&f) ? HALF_ACT_TOL * fmax(1.0, max_abs(want, (size_t)f.T * V)) : LOGIT_TOL;
        ck_assert_msg(d <= tol,
                      "%s %s vs %s, seq %d: max err %.3g (tol %.3g) at t=%zu v=%zu "
                      "(%g vs %g)",
                      f.dir, fc->label, fc->ref, b, d, tol, w / (size_t)V, w % (size_t)V, lg[w],
                      want[w]);
        ck_assert_int_eq(rn_state_pos(e, 0), f.T);
        check_states(&f, e, b, fc->label);
    }
    free(lg);
    free(ref);
    rn_engine_free(e);
    fixture_free(&f);
}
END_TEST

Suite *parity_suite(void)
{
    Suite *s = suite_create("parity");
    TCase *tc = tcase_create("reference");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_parity_logits_and_states, 0, N_FIXTURES * N_CASES);
    suite_add_tcase(s, tc);
    return s;
}
