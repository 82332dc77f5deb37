/*
 * check_forms.c -- properties inside the engine, on every fixture model:
 *  - recurrent == chunkwise (chunk 1, 3, 16, 64, whole prompt) == parallel,
 *    to fp32 rounding (1e-4 on logits);
 *  - prefill(A) then prefill(B) == prefill(A+B);
 *  - a batched decode of 8 slots at different positions equals 8 single
 *    decodes bit for bit (logits and states);
 *  - the CUDA backend's launch settings (folded projections, the
 *    tensor-core GEMV's load depth, dependent launch, graphs) change no bit.
 */
#include <check.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fixture.h"
#include "rn_math.h"
#ifdef RN_HAVE_CUDA
#include "cuda/plan.h"
#include "cuda/rn_cuda.h"
#endif
#include "suites.h"

#define FORM_TOL 1e-4
#define HALF_ACT_TOL 2e-2 /* CUDA, bf16/fp16 weights: see check_parity.c */

/* Largest allowed max |a - ref| over n values. */
static double tol_for(const fixture *f, const float *ref, size_t n)
{
    if (fixture_on_cuda() && strcmp(rn_model_dtype_name(f->model), "f32") != 0)
        return HALF_ACT_TOL * fmax(1.0, max_abs(ref, n));
    return FORM_TOL;
}

static float *run_form(const fixture *f, rn_engine *e, rn_form form, int chunk, const int32_t *tok,
                       int n)
{
    float *lg = malloc(sizeof(float) * (size_t)n * (size_t)f->cfg->vocab_size);
    ck_assert_ptr_nonnull(lg);
    rn_prefill_opts po = {.form = form, .chunk = chunk, .logits = RN_LOGITS_ALL};
    ck_assert_int_eq(rn_state_reset(e, 0), RN_OK);
    ck_assert_int_eq(rn_prefill(e, 0, tok, n, &po, lg), RN_OK);
    return lg;
}

START_TEST(test_forms_agree_for_all_chunk_sizes)
{
    fixture f;
    fixture_load(&f, fixture_names[_i]);
    rn_engine *e = fixture_engine(&f, 1, 64);
    int T = f.T, V = f.cfg->vocab_size;
    size_t n = (size_t)T * (size_t)V, sn = rn_engine_state_bytes(e) / sizeof(float);
    float *rec = run_form(&f, e, RN_FORM_RECURRENT, 0, f.tokens, T);
    float *rec_state = fixture_state(e, 0);
    const int chunks[] = {1, 3, 16, 64, 0 /* whole prompt */};
    for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
        int chunk = chunks[c] ? chunks[c] : T;
        float *lg = run_form(&f, e, RN_FORM_CHUNKWISE, chunk, f.tokens, T);
        float *st = fixture_state(e, 0);
        double d = max_abs_diff(lg, rec, n, NULL);
        ck_assert_msg(d <= tol_for(&f, rec, n), "%s chunk %d vs recurrent: %.3g", f.dir, chunk, d);
        double ds = max_abs_diff(st, rec_state, sn, NULL);
        ck_assert_msg(ds <= fmax(1.0, max_abs(rec_state, sn)) * tol_for(&f, NULL, 0),
                      "%s chunk %d state vs recurrent: %.3g", f.dir, chunk, ds);
        free(lg);
        free(st);
    }
    float *par = run_form(&f, e, RN_FORM_PARALLEL, 0, f.tokens, T);
    double d = max_abs_diff(par, rec, n, NULL);
    ck_assert_msg(d <= tol_for(&f, rec, n), "%s parallel vs recurrent: %.3g", f.dir, d);
    free(par);
    free(rec);
    free(rec_state);
    rn_engine_free(e);
    fixture_free(&f);
}
END_TEST

START_TEST(test_forms_prefill_continues_state)
{
    fixture f;
    fixture_load(&f, fixture_names[_i]);
    rn_engine *e = fixture_engine(&f, 2, 64);
    int T = f.T, V = f.cfg->vocab_size, split = 37;
    rn_prefill_opts po = {.form = RN_FORM_CHUNKWISE, .chunk = 16, .logits = RN_LOGITS_ALL};
    float *whole = malloc(sizeof(float) * (size_t)T * V),
          *parts = malloc(sizeof(float) * (size_t)T * V);
    ck_assert_ptr_nonnull(whole);
    ck_assert_ptr_nonnull(parts);
    ck_assert_int_eq(rn_prefill(e, 0, f.tokens, T, &po, whole), RN_OK);
    ck_assert_int_eq(rn_prefill(e, 1, f.tokens, split, &po, parts), RN_OK);
    ck_assert_int_eq(rn_state_pos(e, 1), split);
    ck_assert_int_eq(rn_prefill(e, 1, f.tokens + split, T - split, &po, parts + (size_t)split * V),
                     RN_OK);
    double d = max_abs_diff(whole, parts, (size_t)T * V, NULL);
    ck_assert_msg(d <= tol_for(&f, whole, (size_t)T * V),
                  "%s: prefill(A)+prefill(B) vs prefill(A+B): %.3g", f.dir, d);
    float *s0 = fixture_state(e, 0), *s1 = fixture_state(e, 1);
    size_t sn = rn_engine_state_bytes(e) / sizeof(float);
    ck_assert(max_abs_diff(s0, s1, sn, NULL) <= fmax(1.0, max_abs(s0, sn)) * tol_for(&f, NULL, 0));
    free(s0);
    free(s1);
    free(whole);
    free(parts);
    rn_engine_free(e);
    fixture_free(&f);
}
END_TEST

START_TEST(test_forms_batched_decode_is_bitwise_single)
{
    fixture f;
    fixture_load(&f, fixture_names[_i]);
    rn_engine_opts o = fixture_opts(8, 64);
    fixture_check_batched_is_single(&f, &o, 8, 3);
    fixture_free(&f);
}
END_TEST

/* Prompts of 4 + 7 s tokens (from token s) into slots[s] of both engines,
 * s < n, in chunks of 16; next[s]: the token that follows each. */
static void prefill_both(const fixture *f, rn_engine *a, rn_engine *b, const int *slots, int n,
                         int32_t *next)
{
    rn_prefill_opts po = {.form = RN_FORM_CHUNKWISE, .chunk = 16};
    for (int s = 0; s < n; s++) {
        ck_assert_int_eq(rn_prefill(a, slots[s], f->tokens + s, 4 + 7 * s, &po, NULL), RN_OK);
        ck_assert_int_eq(rn_prefill(b, slots[s], f->tokens + s, 4 + 7 * s, &po, NULL), RN_OK);
        next[s] = f->tokens[f->T + s];
    }
}

/* Slots 0..n-1 hold the same states, bit for bit, in both engines. */
static void check_same_states(const fixture *f, rn_engine *a, rn_engine *b, int n)
{
    for (int s = 0; s < n; s++) {
        float *x = fixture_state(a, s), *y = fixture_state(b, s);
        ck_assert_msg(memcmp(x, y, rn_engine_state_bytes(a)) == 0, "%s: state %d differs", f->dir,
                      s);
        free(x);
        free(y);
    }
}

/* rn_decode_argmax: the same step as rn_decode (states bit for bit) and
 * each pick is rn_argmax_row of the logits rn_decode gives, on whatever
 * backend the suite runs (the CUDA backend picks on the device). */
START_TEST(test_forms_decode_argmax_picks_what_logits_give)
{
    fixture f;
    fixture_load(&f, fixture_names[_i]);
    enum { NB = 5 };
    rn_engine *picker = fixture_engine(&f, NB, 64), *plain = fixture_engine(&f, NB, 64);
    int V = f.cfg->vocab_size, slots[NB] = {3, 0, 4, 1, 2};
    int32_t next[NB], pick[NB];
    prefill_both(&f, picker, plain, slots, NB, next);
    float *lg = malloc(sizeof(float) * NB * (size_t)V),
          *scratch = malloc(sizeof(float) * NB * (size_t)V);
    ck_assert_ptr_nonnull(lg);
    ck_assert_ptr_nonnull(scratch);
    for (int step = 0; step < 4; step++) {
        int n = step % 2 ? NB : 2; /* the batch size changes between steps */
        /* the engine's own buffer, then the caller's */
        ck_assert_int_eq(rn_decode_argmax(picker, slots, next, n, pick, step < 2 ? NULL : scratch),
                         RN_OK);
        ck_assert_int_eq(rn_decode(plain, slots, next, n, lg), RN_OK);
        for (int s = 0; s < n; s++) {
            int want = rn_argmax_row(lg + (size_t)s * V, V);
            ck_assert_msg(pick[s] == want, "%s step %d row %d: picked %d, logits say %d", f.dir,
                          step, s, pick[s], want);
            next[s] = pick[s]; /* greedy continuation */
        }
    }
    check_same_states(&f, picker, plain, NB);
    ck_assert_int_eq(rn_decode_argmax(picker, slots, next, NB, NULL, NULL), RN_EINVAL);
    free(lg);
    free(scratch);
    rn_engine_free(picker);
    rn_engine_free(plain);
    fixture_free(&f);
}
END_TEST

/* rn_decode_top: the same step as rn_decode (states bit for bit), each
 * reduced row what rn_row_top_fill makes of the logits rn_decode gives (the
 * candidates exactly, the sums up to their order of addition:
 * fixture_check_same_top), on whatever backend the suite runs (the CUDA backend
 * reduces on the device); rn_decode_rows then gives those logits bit for
 * bit, and refuses when the step is gone. */
START_TEST(test_forms_decode_top_reduces_what_logits_give)
{
    fixture f;
    fixture_load(&f, fixture_names[_i]);
    enum { NB = 5 };
    rn_engine *reducer = fixture_engine(&f, NB, 64), *plain = fixture_engine(&f, NB, 64);
    int V = f.cfg->vocab_size, slots[NB] = {2, 4, 0, 3, 1}, rows[2] = {3, 1};
    int32_t next[NB];
    float temps[NB] = {1.0f, 0.0f, -1.0f, 1.3f, 0.25f}; /* 1: the second sum is the first */
    rn_row_top top[NB], want;
    ck_assert_int_ge(rn_engine_top_batch(reducer), NB);
    prefill_both(&f, reducer, plain, slots, NB, next);
    float *lg = malloc(sizeof(float) * NB * (size_t)V),
          *got = malloc(sizeof(float) * NB * (size_t)V);
    ck_assert_ptr_nonnull(lg);
    ck_assert_ptr_nonnull(got);
    /* no step to fetch rows from yet, even for no rows */
    ck_assert_int_eq(rn_decode_rows(reducer, rows, 2, got), RN_EINVAL);
    ck_assert_int_eq(rn_decode_rows(reducer, NULL, 0, NULL), RN_EINVAL);
    for (int step = 0; step < 4; step++) {
        int n = step % 2 ? NB : 3;
        ck_assert_int_eq(rn_decode_top(reducer, slots, next, n, temps, top, NULL), RN_OK);
        ck_assert_int_eq(rn_decode(plain, slots, next, n, lg), RN_OK);
        for (int s = 0; s < n; s++) {
            if (temps[s] < 0.0f) {
                ck_assert_int_eq(top[s].n, 0);
                continue;
            }
            char what[600];
            snprintf(what, sizeof what, "%s step %d row %d", f.dir, step, s);
            rn_row_top_fill(lg + (size_t)s * V, V, temps[s], &want);
            fixture_check_same_top(&top[s], &want, V, what);
        }
        memset(got, 0xff, sizeof(float) * NB * (size_t)V); /* NaN where nothing lands */
        const int *fetch = n == NB ? rows : rows + 1;      /* rows 3 and 1, or row 1 */
        int n_fetch = n == NB ? 2 : 1;
        ck_assert_int_eq(rn_decode_rows(reducer, fetch, n_fetch, got), RN_OK);
        for (int r = 0; r < n_fetch; r++)
            ck_assert_msg(!memcmp(got + (size_t)fetch[r] * V, lg + (size_t)fetch[r] * V,
                                  sizeof(float) * (size_t)V),
                          "%s step %d: row %d's logits differ", f.dir, step, fetch[r]);
        ck_assert_int_eq(rn_decode_rows(reducer, (int[]){n}, 1, got), RN_EINVAL);
        for (int s = 0; s < n; s++)
            next[s] = top[s].n ? top[s].id[0] : 0;
    }
    check_same_states(&f, reducer, plain, NB);
    /* a step that ran since: the rows are gone */
    ck_assert_int_eq(rn_decode(reducer, slots, next, 1, NULL), RN_OK);
    ck_assert_int_eq(rn_decode_rows(reducer, rows, 1, got), RN_EINVAL);
    temps[0] = NAN;
    ck_assert_int_eq(rn_decode_top(reducer, slots, next, NB, temps, top, NULL), RN_EINVAL);
    free(lg);
    free(got);
    rn_engine_free(reducer);
    rn_engine_free(plain);
    fixture_free(&f);
}
END_TEST

/* Rows that test the reduction's rule: ties across the cut (the lowest ids
 * among equals), NaN as -inf, -0 equal to +0, infinities, a row of
 * nothing above -inf, a cut that falls exactly between values; rows wider
 * than one pass of the device's block and narrower than the candidates.
 * On the host the rule holds by construction (check_sampler); here the
 * device kernel must give the host's reduction. */
START_TEST(test_forms_top_row_rule)
{
    enum { W = 20000, ROWS = 8 };
    const float inf = INFINITY;
    float *l = malloc(sizeof(float) * ROWS * W);
    ck_assert_ptr_nonnull(l);
    fixture_top_rows(l, W, 5u); /* rows 0-4; 2857 ties at the top of row 1 */
    for (int i = 0; i < W; i++) {
        l[5 * W + i] = 1.0f;                        /* the cut falls between values: */
        l[6 * W + i] = i % 150 == 0 ? 3.0f : -2.0f; /* 134 ties for 128 places */
        l[7 * W + i] = -(float)i * 1e-3f;           /* falling */
    }
    for (int i = 0; i < RN_TOP_CANDIDATES; i++)
        l[5 * W + 1000 + 7 * i] = 5.0f + (float)i * 0x1p-10f; /* exactly the candidates */
    l[4 * W + 17] = inf, l[4 * W + 19000] = inf, l[4 * W + 5] = NAN;
    const float temps[ROWS] = {1.0f, 0.7f, 1.0f, 0.0f, 1.0f, 1.3f, 0.5f, 2.0f};
    rn_row_top want[ROWS];
    for (int r = 0; r < ROWS; r++)
        rn_row_top_fill(l + (size_t)r * W, W, temps[r], &want[r]);
    ck_assert_int_eq(want[1].id[RN_TOP_CANDIDATES - 1], 6 + 7 * (RN_TOP_CANDIDATES - 1));
    ck_assert_int_eq(want[2].id[RN_TOP_CANDIDATES - 1], RN_TOP_CANDIDATES - 1);
    ck_assert_int_eq(want[3].id[1], 1); /* -0 ties with +0: by id */
    ck_assert_int_eq(want[4].id[0], 17);
    ck_assert_int_eq(want[5].id[0], 1000 + 7 * (RN_TOP_CANDIDATES - 1));
    ck_assert_int_eq(want[6].id[RN_TOP_CANDIDATES - 1], 150 * (RN_TOP_CANDIDATES - 1));
#ifdef RN_HAVE_CUDA
    if (fixture_on_cuda()) {
        rn_row_top got[ROWS];
        char what[64];
        ck_assert_int_eq(rn_cuda_top_rows_host(l, ROWS, W, temps, got), RN_OK);
        for (int r = 0; r < ROWS; r++) {
            snprintf(what, sizeof what, "device row %d", r);
            fixture_check_same_top(&got[r], &want[r], W, what);
        }
        /* rows of 100, fewer than the candidates; one row not wanted */
        float skip[ROWS];
        memcpy(skip, temps, sizeof skip);
        skip[3] = -1.0f;
        ck_assert_int_eq(rn_cuda_top_rows_host(l, ROWS, 100, skip, got), RN_OK);
        for (int r = 0; r < ROWS; r++) {
            snprintf(what, sizeof what, "device row %d of 100", r);
            if (r == 3) {
                ck_assert_int_eq(got[r].n, 0);
                continue;
            }
            rn_row_top_fill(l + (size_t)r * 100, 100, skip[r], &want[r]);
            fixture_check_same_top(&got[r], &want[r], 100, what);
        }
    }
#endif
    free(l);
}
END_TEST

/* NaN and infinities in the logits: the pick follows rn_argmax_row's rule
 * (first of the largest, NaN as -inf, 0 when nothing is above -inf), on the
 * host and, when the suite runs on CUDA, in the device kernel, over rows
 * wider than its block (ties and infinities 256 apart land in different
 * threads) and narrower. */
START_TEST(test_forms_argmax_row_rule)
{
    enum { W = 1000, ROWS = 6 };
    const float nan = NAN, inf = INFINITY;
    float a[] = {1, 3, 3, 2}, b[] = {nan, -inf, nan}, c[] = {nan, 2, inf, inf}, d[] = {-inf, -1};
    ck_assert_int_eq(rn_argmax_row(a, 4), 1);
    ck_assert_int_eq(rn_argmax_row(b, 3), 0);
    ck_assert_int_eq(rn_argmax_row(c, 4), 2);
    ck_assert_int_eq(rn_argmax_row(d, 2), 1);
    float *l = malloc(sizeof(float) * ROWS * W);
    ck_assert_ptr_nonnull(l);
    for (int r = 0; r < ROWS; r++)
        for (int i = 0; i < W; i++)
            l[r * W + i] = (float)((i * 37 + r) % 101) * 0.01f - 0.5f;
    l[0 * W + 5] = l[0 * W + 261] = 9.0f;      /* a tie across threads: 5 */
    l[1 * W + 300] = inf, l[1 * W + 44] = inf; /* +inf twice: 44 */
    for (int i = 0; i < W; i++)                /* nothing above -inf: 0 */
        l[2 * W + i] = i % 3 ? -inf : nan;
    l[3 * W + 999] = 7.0f, l[3 * W + 0] = nan; /* the last index */
    l[4 * W + 700] = nan, l[4 * W + 600] = 8.0f;
    l[5 * W + 256] = 6.0f, l[5 * W + 512] = 6.0f;
    const int want[ROWS] = {5, 44, 0, 999, 600, 256};
    for (int r = 0; r < ROWS; r++)
        ck_assert_int_eq(rn_argmax_row(l + r * W, W), want[r]);
#ifdef RN_HAVE_CUDA
    if (fixture_on_cuda()) {
        int32_t got[ROWS], narrow[ROWS];
        ck_assert_int_eq(rn_cuda_argmax_rows_host(l, ROWS, W, got), RN_OK);
        for (int r = 0; r < ROWS; r++)
            ck_assert_msg(got[r] == want[r], "device row %d: %d, want %d", r, got[r], want[r]);
        /* rows of 100, narrower than the block: the host decides */
        ck_assert_int_eq(rn_cuda_argmax_rows_host(l, ROWS, 100, narrow), RN_OK);
        for (int r = 0; r < ROWS; r++)
            ck_assert_int_eq(narrow[r], rn_argmax_row(l + r * 100, 100));
    }
#endif
    free(l);
}
END_TEST

/* Prefill (in 4-token chunks: the decode-size path) and three decode steps
 * of three slots on e; logits of every step and the states into out. */
static void run_steps(const fixture *f, rn_engine *e, float *logits, float **states)
{
    enum { NB = 3 };
    int V = f->cfg->vocab_size, slots[NB] = {2, 0, 1};
    int32_t next[NB];
    rn_prefill_opts po = {.form = RN_FORM_CHUNKWISE, .chunk = 4};
    for (int s = 0; s < NB; s++) {
        ck_assert_int_eq(rn_prefill(e, slots[s], f->tokens + s, 6 + 5 * s, &po, NULL), RN_OK);
        next[s] = f->tokens[f->T + s];
    }
    for (int step = 0; step < 3; step++) {
        float *lg = logits + (size_t)step * NB * (size_t)V;
        ck_assert_int_eq(rn_decode(e, slots, next, NB, lg), RN_OK);
        for (int s = 0; s < NB; s++)
            next[s] = rn_argmax_row(lg + (size_t)s * V, V);
    }
    for (int s = 0; s < NB; s++)
        states[s] = fixture_state(e, s);
}

#ifdef RN_HAVE_CUDA
/* The tensor-core GEMV with 16 loads in flight gives the bits of 8 where it
 * changes something: warps whose share of k takes 8 two rounds or more
 * (the fixtures' small grids give every warp 64 k, one round either way),
 * in bf16 and fp16, at batch sizes from 1 to 16.  That the shapes do take
 * 16 loads (one pair group a block, 256 k a warp, planned for one SM) is
 * checked by the plan suite (test_cuda_tc_loads_apply).  So does the
 * cp.async ring (RETNET_CUDA_TC_ASYNC) asked for 2, 3 and 4 stages, on
 * shapes of one and two pair groups a block and one, two and four m-tiles,
 * warps with more rounds than the ring has stages and a short last round
 * among them; the plan gives the ring 2 or 3 stages on them, and 4 on the
 * one whose 6 warps take 4 rounds each (asserted: a ring that never ran
 * would compare the registers with themselves).  4 stages that wrap come
 * only with more shared memory than an H100's SM has: the gemv_emu unit
 * suite runs those. */

/* That `loads` loads a round (and `stages` stages of the ring, 0: none)
 * give the bits of 8 loads in registers on shape sh (input width, outputs,
 * rows), in both 16-bit dtypes; with exact (else 0), that the ring had
 * exactly that many stages. */
static void check_tc_variant(const int sh[3], int loads, int stages, int exact, uint32_t seed)
{
    int ran = -1;
    static const int dtypes[] = {RN_DT_BF16, RN_DT_F16};
    for (size_t d = 0; d < 2; d++) {
        long differ = -1;
        int rc = rn_cuda_tc_variant_check(sh[0], sh[1], sh[2], dtypes[d], seed + (uint32_t)d, loads,
                                          stages, &ran, &differ);
        ck_assert_msg(rc == RN_OK, "in %d: rn_cuda_tc_variant_check: %d", sh[0], rc);
        ck_assert_msg(differ == 0,
                      "in %d, out %d, %d rows, dtype %d, loads %d, stages %d: %ld outputs differ",
                      sh[0], sh[1], sh[2], dtypes[d], loads, stages, differ);
        /* the ring ran (the plan may give fewer stages than asked), or not */
        ck_assert_msg(stages ? ran >= 2 && ran <= stages : ran == 0, "stages %d asked, %d ran",
                      stages, ran);
        ck_assert_msg(!exact || ran == exact, "in %d: %d stages ran, not %d", sh[0], ran, exact);
    }
}

/* The stream-K tensor-core GEMV (RETNET_CUDA_TC_STREAM) against the
 * register kernel, on values with every mantissa bit drawn: within 2^-14
 * of each output's sum of product magnitudes (two fp32 orders of up to
 * 4096 bf16 products stay some twenty times inside: about 2^-24 sqrt(in)
 * apart, measured on the sums' own scale), nothing left unwritten, the
 * same bits over three launches (a group's parts added in warp order
 * whichever warp comes last, in whatever order the SMs finish) and every
 * counter back at zero.  Input width, outputs, rows, SMs planned for (0:
 * the device's): 4 warps to a group, runs of 8 units, four m-tiles with
 * runs across two groups, a width that ends inside a unit, runs across
 * groups into their short last unit, and on the whole device the 1.3B
 * q/k/v/g's shape (384 groups, each over up to 7 warps) and an
 * LM-head-like one of 2,000 groups. */
START_TEST(test_forms_tc_stream_matches_registers)
{
    static const int shapes[][4] = {{2048, 100, 16, 1}, {1024, 124, 5, 1}, {4096, 96, 40, 1},
                                    {520, 66, 3, 1},    {520, 1200, 6, 1}, {2048, 12288, 16, 0},
                                    {256, 64000, 16, 0}};
    static const int dtypes[] = {RN_DT_BF16, RN_DT_F16};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        for (size_t d = 0; d < 2; d++) {
            const int *c = shapes[i];
            double worst = -1.0;
            long differ = -1, left = -1;
            int rc = rn_cuda_tc_stream_check(c[0], c[1], c[2], dtypes[d], c[3],
                                             (uint32_t)(41 + 2 * i + d), &worst, &differ, &left);
            ck_assert_msg(rc == RN_OK, "shape %zu: rn_cuda_tc_stream_check: %d", i, rc);
            ck_assert_msg(worst >= 0.0 && worst <= 0x1p-14,
                          "in %d, out %d, %d rows, %d SMs, dtype %d: %g from the registers' sums",
                          c[0], c[1], c[2], c[3], dtypes[d], worst);
            ck_assert_msg(differ == 0, "shape %zu: %ld outputs moved between launches", i, differ);
            ck_assert_msg(left == 0, "shape %zu: %ld counters left", i, left);
        }
}
END_TEST

/* One shape (P, pieces, H, dk, dv) of test_forms_ret_fused_matches_reference,
 * v zero or not, whole then in each share count rn_cuda_ret_parts allows,
 * each in narrow and in wide warps (only: 0 or 1, that tiling alone;
 * -1 both): every run within the bound and with the first run's worst
 * error.  0 where the device cannot take the shape, else 1 with *split
 * the share counts past 1 that ran. */
static int check_ret_fused_shape(const int *sh, int zero_v, uint32_t seed, int only, int *split)
{
    double whole = -1.0;
    for (int parts = 1; parts <= RN_CUDA_RET_SPLIT_MAX; parts *= 2) {
        if (rn_cuda_ret_parts(1, sh[4], 1, parts) != parts)
            break; /* dv has no such shares */
        for (int wide = 0; wide < 2; wide++) {
            if (only >= 0 && only != wide)
                continue;
            double worst = -1.0;
            int rc = rn_cuda_ret_fused_check(sh[0], sh[1], sh[2], sh[3], sh[4], zero_v, parts, wide,
                                             seed, &worst);
            /* more shared memory than this device gives a block: the
             * engine takes the cuBLAS products there */
            if (rc == RN_EUNSUPPORTED) {
                printf("forms: fused retention, dk %d, dv %d: not on this device\n", sh[3], sh[4]);
                return 0;
            }
            ck_assert_msg(rc == RN_OK, "dv %d in %d parts, wide %d: rn_cuda_ret_fused_check: %d",
                          sh[4], parts, wide, rc);
            ck_assert_msg(worst <= 1e-2,
                          "P %d, %d pieces, %d heads, dk %d, dv %d in %d parts, wide %d%s: "
                          "error %.3g",
                          sh[0], sh[1], sh[2], sh[3], sh[4], parts, wide, zero_v ? ", v = 0" : "",
                          worst);
            if (whole < 0.0)
                whole = worst;
            ck_assert_msg(worst == whole,
                          "dv %d in %d parts, wide %d: error %.17g, the first run's %.17g", sh[4],
                          parts, wide, worst, whole);
        }
        *split += parts > 1;
    }
    return 1;
}

/* The fused chunkwise retention read-out against a double-precision
 * reference from the same values (rn_cuda_ret_fused_check): one to four
 * 64-row query tiles, value heads of 512 (the 1.3B preset's, the widest
 * the kernel takes), 256, 192 and 64, one to three heads, entering states
 * of their own per piece, and each shape again with v = 0, where only the
 * inter-piece term remains (next to the rest it fades along a piece and an
 * error in it could hide).  Each bf16 rounding moves a value by at most
 * 2^-8 (0.39%); an intra-piece term goes through four (q, k, the masked
 * score, v), an inter-piece one through two (q, the state; g^(i+1) scales
 * the fp32 product), so 1.6% of the sum of the terms' absolute values is
 * the worst case, reached only if one term outweighed the rest and every
 * rounding went the same way.  The scores are sums of dk products, whose
 * roundings mostly cancel: the emulation of the same kernel on these
 * shapes and seeds (check_ret_emu.c) errs by 0.05-0.2%.  1% is the bound;
 * a wrong mask, a decay power off by one (decays of 0.55 to 0.9 here), a
 * fragment out of place or a missing tile moves them by far more.  Value
 * heads of 256 and 512 run again in the shares of 128 or more a block
 * that a short chunk's launch may split them into, and every launch in
 * narrow and in wide warps (RETNET_CUDA_RET_WIDE): the same sums in the
 * same order, so exactly the same worst error (the emulation compares
 * every bit). */
START_TEST(test_forms_ret_fused_matches_reference)
{
    static const int shapes[][5] = {
        /* P, pieces, H, dk, dv */
        {256, 2, 2, 128, 256},
        {128, 3, 2, 256, 192},
        {64, 2, 3, 64, 64},
        {128, 1, 2, 256, 512},
    };
    /* RN_TEST_RET_WIDE=0 or 1: that tiling alone (check-cuda's racecheck
     * and synccheck, where each launch costs time) */
    const char *only = getenv("RN_TEST_RET_WIDE");
    int ran = 0, split = 0, one = only && *only ? atoi(only) != 0 : -1;
    for (size_t i = 0; i < 2 * sizeof shapes / sizeof shapes[0]; i++)
        /* then with v = 0: the inter-piece term alone */
        ran += check_ret_fused_shape(shapes[i / 2], (int)(i % 2), (uint32_t)(7 + i), one, &split);
    /* the two smaller shapes (76 and 36 KiB) fit every device from sm_80,
     * and the first splits in two */
    ck_assert_msg(ran >= 4 && split >= 2, "only %d of the shapes ran, %d split", ran, split);
}
END_TEST

START_TEST(test_forms_tc_variants_keep_bits)
{
    /* input width, outputs, rows: planned for one SM, the first takes one
     * pair group a block and 2 rounds a warp, the second two groups and 4
     * rounds, the third four m-tiles and 4 rounds, the fifth two m-tiles,
     * two groups and 6 rounds, the last of them half full, and the last 6
     * warps of 4 rounds, whose rings of 4 stages fit two blocks an SM */
    static const int ring_shapes[][3] = {{1024, 62, 16}, {2048, 128, 16}, {4096, 96, 40},
                                         {520, 34, 3},   {2816, 70, 20},  {1536, 64, 16}};
    const size_t last = sizeof ring_shapes / sizeof ring_shapes[0] - 1;
    for (size_t i = 0; i < FIXTURE_TC_LOADS_SHAPES; i++)
        check_tc_variant(fixture_tc_loads_shapes[i], 16, 0, 0, (uint32_t)(17 * i));
    for (int stages = 2; stages <= 4; stages++)
        for (size_t i = 0; i <= last; i++)
            check_tc_variant(ring_shapes[i], 8, stages, i == last && stages == 4 ? 4 : 0,
                             (uint32_t)(29 * i + (size_t)stages));
}
END_TEST
#endif

/* Each of the CUDA backend's launch settings, switched through its
 * environment variable (read when an engine is made), gives the default's
 * bits: the folded projections compute the same floats as the separate
 * kernels, the tensor-core GEMV's deeper loads and its cp.async ring only
 * change when the same k blocks arrive, and dependent launch, the step's early state loads,
 * and graphs only change when work starts;
 * the GEMVs that form their pre-norm or the group norm themselves compute
 * the norm's values with its operations (under RETNET_CUDA_GEMV_SPLIT=64,
 * check-cuda's forms-prenorm and forms-gemvgn, the fixtures' widths take
 * that path).
 * On the CPU backend the variables mean nothing and this checks that two
 * engines agree. */
START_TEST(test_forms_launch_settings_keep_bits)
{
    /* each variable at two values, the default one of them (STEP_EARLY:
     * never and always, between which its default picks by batch) */
    static const char *const knobs[][3] = {
        {"RETNET_CUDA_FUSE", "1", "0"},          {"RETNET_CUDA_PDL", "1", "0"},
        {"RETNET_CUDA_GRAPHS", "1", "0"},        {"RETNET_CUDA_TC_LOADS", "8", "16"},
        {"RETNET_CUDA_STEP_EARLY", "0", "1"},    {"RETNET_CUDA_GEMV_PRENORM", "1", "0"},
        {"RETNET_CUDA_PREFILL_PDL", "0", "1"},   {"RETNET_CUDA_TC_ASYNC", "0", "1"},
        {"RETNET_CUDA_GEMV_GROUPNORM", "0", "1"}};
    /* RETNET_CUDA_RESID_GEMM is not among them: cuBLASLt's epilogue may
     * round y + alpha x otherwise than the norm's fma (parity runs it) */
    fixture f;
    fixture_load(&f, fixture_names[_i]);
    size_t V = (size_t)f.cfg->vocab_size, nl = 3 * 3 * V;
    float *ref = malloc(sizeof(float) * nl), *alt = malloc(sizeof(float) * nl);
    float *ref_s[3], *alt_s[3];
    ck_assert_ptr_nonnull(ref);
    ck_assert_ptr_nonnull(alt);
    for (size_t k = 0; k < sizeof knobs / sizeof knobs[0]; k++) {
        char *saved = fixture_env_set(knobs[k][0], knobs[k][1]);
        rn_engine *a = fixture_engine(&f, 3, 64);
        setenv(knobs[k][0], knobs[k][2], 1);
        rn_engine *b = fixture_engine(&f, 3, 64);
        fixture_env_restore(knobs[k][0], saved);
        run_steps(&f, a, ref, ref_s);
        run_steps(&f, b, alt, alt_s);
        ck_assert_msg(memcmp(ref, alt, sizeof(float) * nl) == 0, "%s: %s=%s changes the logits",
                      f.dir, knobs[k][0], knobs[k][2]);
        for (int s = 0; s < 3; s++) {
            ck_assert_msg(memcmp(ref_s[s], alt_s[s], rn_engine_state_bytes(a)) == 0,
                          "%s: %s=%s changes state %d", f.dir, knobs[k][0], knobs[k][2], s);
            free(ref_s[s]);
            free(alt_s[s]);
        }
        rn_engine_free(a);
        rn_engine_free(b);
    }
    free(ref);
    free(alt);
    fixture_free(&f);
}
END_TEST

START_TEST(test_forms_copy_and_reset)
{
    fixture f;
    fixture_load(&f, "fla");
    rn_engine *e = fixture_engine(&f, 3, 64);
    int V = f.cfg->vocab_size, s0 = 0, s1 = 1;
    float *a = malloc(sizeof(float) * (size_t)V), *b = malloc(sizeof(float) * (size_t)V);
    ck_assert_int_eq(rn_prefill(e, 0, f.tokens, 20, NULL, NULL), RN_OK);
    ck_assert_int_eq(rn_state_copy(e, 1, 0), RN_OK); /* fork */
    ck_assert_int_eq(rn_state_pos(e, 1), 20);
    int32_t t = 5;
    ck_assert_int_eq(rn_decode(e, &s0, &t, 1, a), RN_OK);
    ck_assert_int_eq(rn_decode(e, &s1, &t, 1, b), RN_OK);
    ck_assert(memcmp(a, b, sizeof(float) * (size_t)V) == 0);
    ck_assert_int_eq(rn_state_reset(e, 1), RN_OK);
    ck_assert_int_eq(rn_state_pos(e, 1), 0);
    /* bad arguments are refused, not run */
    int dup[2] = {0, 0};
    int32_t two[2] = {1, 2}, bad = V;
    ck_assert_int_eq(rn_decode(e, dup, two, 2, NULL), RN_EINVAL);
    ck_assert_int_eq(rn_decode(e, &s0, &bad, 1, NULL), RN_EINVAL);
    ck_assert_int_eq(rn_prefill(e, 3, two, 2, NULL, NULL), RN_EINVAL);
    ck_assert_int_eq(rn_prefill(e, 0, two, 0, NULL, NULL), RN_EINVAL);
    rn_prefill_opts par = {.form = RN_FORM_PARALLEL};
    ck_assert_int_eq(rn_prefill(e, 0, two, 2, &par, NULL), RN_EINVAL); /* slot not empty */
    free(a);
    free(b);
    rn_engine_free(e);
    fixture_free(&f);
}
END_TEST

Suite *forms_suite(void)
{
    Suite *s = suite_create("forms");
    TCase *tc = tcase_create("equivalence");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_forms_agree_for_all_chunk_sizes, 0, N_FIXTURES);
    tcase_add_loop_test(tc, test_forms_prefill_continues_state, 0, N_FIXTURES);
    tcase_add_loop_test(tc, test_forms_batched_decode_is_bitwise_single, 0, N_FIXTURES);
    tcase_add_loop_test(tc, test_forms_decode_argmax_picks_what_logits_give, 0, N_FIXTURES);
    tcase_add_loop_test(tc, test_forms_decode_top_reduces_what_logits_give, 0, N_FIXTURES);
    tcase_add_test(tc, test_forms_top_row_rule);
    tcase_add_loop_test(tc, test_forms_launch_settings_keep_bits, 0, N_FIXTURES);
    tcase_add_test(tc, test_forms_argmax_row_rule);
    tcase_add_test(tc, test_forms_copy_and_reset);
#ifdef RN_HAVE_CUDA
    if (fixture_on_cuda()) /* a kernel of the CUDA backend only: not counted elsewhere */
        tcase_add_test(tc, test_forms_tc_variants_keep_bits);
#endif
    suite_add_tcase(s, tc);
#ifdef RN_HAVE_CUDA
    /* a case of its own, so compute-sanitizer's racecheck and synccheck can
     * watch the fused kernel alone (tools/check-cuda.sh) */
    if (fixture_on_cuda()) {
        TCase *rf = tcase_create("ret_fused");
        tcase_set_timeout(rf, 60);
        tcase_add_test(rf, test_forms_ret_fused_matches_reference);
        suite_add_tcase(s, rf);
        TCase *ts = tcase_create("tc_stream");
        /* 56 launches, 16 of them over 32-50 MB of weights, and every
         * output's gap measured on the host */
        tcase_set_timeout(ts, 120);
        tcase_add_test(ts, test_forms_tc_stream_matches_registers);
        suite_add_tcase(s, ts);
    }
#endif
    return s;
}
