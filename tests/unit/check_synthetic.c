/*
 * check_synthetic.c -- shapes the reference fixtures do not have, on a model
 * written by rn_model_write_random: a width over 512 (520), an odd number of
 * rotary pairs per head (key head 130: 65 pairs), a value head of 260 and an
 * odd vocabulary over 8192 (9001); once with rotary positions and the q/k
 * scale on q, once with no positions and the scale on k, once as the first
 * with bf16 weights (the tensor-core GEMV takes only 16-bit weights).  The
 * batched decode has 40 sessions (through that kernel: four 16-row tiles,
 * the last partly empty), and the prefill chunks of 64 and their tails
 * give it its one- and two-tile shapes.  These are the
 * shapes where the GPU's decode kernels change their blocking, so `make
 * check-cuda` runs this suite with RN_TEST_DEVICE=cuda; on the CPU it checks
 * the same shapes there.  The engine under test runs chunkwise prefill with
 * a ragged tail, a prompt continued in two calls and a batched decode at
 * mixed positions; a separate CPU engine runs the recurrent form one token
 * and one slot at a time, and every logit and state is compared.
 * Tolerance, as in check_parity.c: 1e-4 x max(1, max |logit|) and
 * 1e-4 x max(1, max |S|); on the GPU with bf16 weights, whose projections
 * round their inputs to bf16 too, 2e-2 x the same.
 */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fixture.h"
#ifdef RN_HAVE_CUDA
#include "cuda/rn_cuda.h"
#endif
#include "model.h"
#include "suites.h"

#define TOL 1e-4
#define HALF_ACT_TOL 2e-2

enum { N_TOK = 150, SLOTS = 40, CHUNK = 64, STEPS = 4 };

#define SHAPE                                                                                      \
    "\"hidden_size\":520,\"num_hidden_layers\":2,\"num_heads\":4,\"vocab_size\":9001,"             \
    "\"expand_k\":1,\"expand_v\":2,\"hidden_ratio\":2"

static const struct {
    const char *json;
    rn_dtype dtype; /* of the weights */
} configs[] = {
    {"{" SHAPE "}", RN_DT_F32},
    {"{" SHAPE ",\"position_encoding\":\"none\",\"qk_scale\":\"k\"}", RN_DT_F32},
    {"{" SHAPE "}", RN_DT_BF16},
};

typedef struct {
    char dir[256];
    rn_model *m;
    rn_engine *e;   /* under test: RN_TEST_DEVICE's device */
    rn_engine *ref; /* CPU, recurrent form */
    int vocab;
    double tol; /* relative to max(1, max |reference|) */
    int32_t tok[N_TOK];
} synth;

/* A model of json with dtype weights in a new directory, the engine under
 * test (prefill chunks of up to max_chunk) and the CPU reference, the
 * tokens, and the tolerance for the weights' dtype on the test's device. */
static void synth_open_json(synth *s, const char *json, rn_dtype dtype, int max_chunk)
{
    rn_config c;
    rn_error err = {0};
    memset(s, 0, sizeof *s);
    ck_assert_msg(rn_config_parse(&c, json, strlen(json), "synthetic", &err) == RN_OK, "%s",
                  err.msg);
    test_dir_create(s->dir, sizeof s->dir, "synth");
    ck_assert_msg(rn_model_write_random(s->dir, &c, dtype, 11, &err) == RN_OK, "%s", err.msg);
    ck_assert_msg(rn_model_load(&s->m, s->dir, &err) == RN_OK, "%s", err.msg);
    rn_engine_opts o = fixture_opts(SLOTS, max_chunk);
    ck_assert_msg(rn_engine_new(&s->e, s->m, &o, &err) == RN_OK, "%s", err.msg);
    o.device = RN_DEVICE_CPU;
    ck_assert_msg(rn_engine_new(&s->ref, s->m, &o, &err) == RN_OK, "%s", err.msg);
    s->vocab = c.vocab_size;
    s->tol = fixture_on_cuda() && dtype != RN_DT_F32 ? HALF_ACT_TOL : TOL;
    uint32_t x = 5;
    for (int i = 0; i < N_TOK; i++) {
        x = x * 1664525u + 1013904223u;
        s->tok[i] = (int32_t)((x >> 8) % (uint32_t)s->vocab);
    }
}

/* Model configs[which], both engines, the tokens. */
static void synth_open(synth *s, int which)
{
    synth_open_json(s, configs[which].json, configs[which].dtype, CHUNK);
    const rn_config *c = rn_model_config(s->m);
    ck_assert_int_eq(c->head_dim_k, 130);
    ck_assert(which != 1 || (c->position == RN_POS_NONE && c->qk_scale == RN_QKSCALE_K));
}

static void synth_close(synth *s)
{
    rn_engine_free(s->e);
    rn_engine_free(s->ref);
    rn_model_free(s->m);
    test_dir_remove(s->dir);
}

/* The reference: tokens fed one at a time into slot of the CPU engine. */
static void ref_feed(synth *s, int slot, const int32_t *tok, int n, float *logits)
{
    rn_prefill_opts po = {.form = RN_FORM_RECURRENT};
    ck_assert_int_eq(rn_prefill(s->ref, slot, tok, n, &po, logits), RN_OK);
}

static void check_close(const synth *s, const char *what, const float *got, const float *want,
                        size_t n)
{
    size_t w = 0;
    double d = max_abs_diff(got, want, n, &w), tol = s->tol * fmax(1.0, max_abs(want, n));
    ck_assert_msg(d <= tol, "%s: max err %.3g (tol %.3g) at %zu: %.7g vs %.7g", what, d, tol, w,
                  (double)got[w], (double)want[w]);
}

static void check_states(synth *s, int slot, const char *what)
{
    float *a = fixture_state(s->e, slot), *b = fixture_state(s->ref, slot);
    check_close(s, what, a, b, rn_engine_state_bytes(s->e) / sizeof(float));
    free(a);
    free(b);
}

/* The prompt into slot 0 in chunks of chunk, then into slot 1 in two
 * calls (split tokens, then the rest: the second starts mid-state); each
 * call's last logits and the states against the reference. */
static void check_prefill_whole_and_split(synth *s, int chunk, int split)
{
    char what[96];
    float *got = malloc(sizeof(float) * (size_t)s->vocab),
          *want = malloc(sizeof(float) * (size_t)s->vocab);
    ck_assert(got && want);
    ref_feed(s, 0, s->tok, N_TOK, want);
    rn_prefill_opts po = {.form = RN_FORM_CHUNKWISE, .chunk = chunk};
    ck_assert_int_eq(rn_prefill(s->e, 0, s->tok, N_TOK, &po, got), RN_OK);
    snprintf(what, sizeof what, "chunkwise %d in chunks of %d", N_TOK, chunk);
    check_close(s, what, got, want, (size_t)s->vocab);
    check_states(s, 0, what);
    ck_assert_int_eq(rn_prefill(s->e, 1, s->tok, split, &po, NULL), RN_OK);
    ck_assert_int_eq(rn_prefill(s->e, 1, s->tok + split, N_TOK - split, &po, got), RN_OK);
    snprintf(what, sizeof what, "chunkwise %d + %d in chunks of %d", split, N_TOK - split, chunk);
    check_close(s, what, got, want, (size_t)s->vocab);
    ref_feed(s, 1, s->tok, N_TOK, NULL);
    check_states(s, 1, what);
    free(got);
    free(want);
}

/* 150 tokens: two chunks of 64 and a tail of 22; then 70 + 80. */
START_TEST(test_synthetic_prefill_ragged_and_continued)
{
    synth s;
    synth_open(&s, _i);
    check_prefill_whole_and_split(&s, CHUNK, 70);
    synth_close(&s);
}
END_TEST

/* Configuration config's engine: SLOTS sessions prefilled to mixed
 * positions, then STEPS decode steps of all of them, logits and states
 * against the CPU's recurrent form. */
static void check_batched_decode(int config)
{
    synth s;
    synth_open(&s, config);
    size_t V = (size_t)s.vocab;
    float *got = malloc(sizeof(float) * V * SLOTS), *want = malloc(sizeof(float) * V);
    ck_assert(got && want);
    rn_prefill_opts po = {.form = RN_FORM_CHUNKWISE, .chunk = CHUNK};
    int slots[SLOTS], len[SLOTS];
    for (int k = 0; k < SLOTS; k++) {
        slots[k] = k, len[k] = 5 + (k * 37) % 140; /* mixed positions, up to 144 */
        ck_assert_int_eq(rn_prefill(s.e, k, s.tok, len[k], &po, NULL), RN_OK);
        ref_feed(&s, k, s.tok, len[k], NULL);
    }
    for (int step = 0; step < STEPS; step++) {
        int32_t in[SLOTS];
        for (int k = 0; k < SLOTS; k++)
            in[k] = s.tok[(len[k] + step * 7 + k) % N_TOK];
        ck_assert_int_eq(rn_decode(s.e, slots, in, SLOTS, got), RN_OK);
        for (int k = 0; k < SLOTS; k++) {
            char what[64];
            ref_feed(&s, k, &in[k], 1, want);
            snprintf(what, sizeof what, "decode step %d, slot %d (position %d)", step, k,
                     len[k] + step);
            check_close(&s, what, got + (size_t)k * V, want, V);
        }
    }
    for (int k = 0; k < SLOTS; k++)
        check_states(&s, k, "state after the batched decode");
    free(got);
    free(want);
    synth_close(&s);
}

START_TEST(test_synthetic_batched_decode_mixed_positions)
{
    check_batched_decode(_i);
}
END_TEST

#ifdef RN_HAVE_CUDA
/* RETNET_CUDA_* settings: name and value pairs, set while an engine is
 * made and put back after (the backend reads them when it starts; a
 * check-cuda run may have set some of them for the whole suite). */
typedef const char *const cuda_env[2];
#define ENV_COUNT(e) (sizeof(e) / sizeof((e)[0]))
#define ENV_MAX 8

/* Sets env's n settings, first saving their old values in saved (copies,
 * NULL where unset; env_restore frees them). */
static void env_set(cuda_env *env, size_t n, char *saved[ENV_MAX])
{
    ck_assert_uint_le(n, ENV_MAX);
    for (size_t i = 0; i < n; i++) {
        const char *old = getenv(env[i][0]);
        saved[i] = old ? strdup(old) : NULL;
        ck_assert(!old || saved[i]);
        setenv(env[i][0], env[i][1], 1);
    }
}

static void env_restore(cuda_env *env, size_t n, char *saved[ENV_MAX])
{
    for (size_t i = n; i-- > 0;) { /* last set, first put back: a name set twice ends as it was */
        if (saved[i])
            setenv(env[i][0], saved[i], 1);
        else
            unsetenv(env[i][0]);
        free(saved[i]);
        saved[i] = NULL;
    }
}

/* The small bf16 model of the switches' tests below (2 heads of dk 128 and
 * dv 256, shapes the fused read-out takes; prefill chunks of up to 256),
 * its engine made under env. */
static void synth_open_small(synth *s, cuda_env *env, size_t n)
{
    char *saved[ENV_MAX];
    env_set(env, n, saved);
    synth_open_json(s,
                    "{\"hidden_size\":256,\"num_hidden_layers\":2,\"num_heads\":2,"
                    "\"vocab_size\":1000,\"expand_k\":1,\"expand_v\":2,\"hidden_ratio\":2}",
                    RN_DT_BF16, 256);
    env_restore(env, n, saved);
}

/* cuBLASLt's algorithms timed per shape (RETNET_CUDA_LT_TUNE=1: every
 * shape outside a decode graph) inside the engine: the prefills of
 * check_prefill_whole_and_split through whichever candidate was fastest,
 * against the CPU's recurrent form at the 16-bit tolerance, and at least
 * one shape timed (the counter), so the path is known to run. */
START_TEST(test_synthetic_lt_tune_prefill)
{
    synth s;
    static cuda_env env[] = {{"RETNET_CUDA_LT_TUNE", "1"}};
    synth_open_small(&s, env, ENV_COUNT(env));
    long tuned = rn_cuda_lt_tuned();
    check_prefill_whole_and_split(&s, 256, 20);
    ck_assert_int_gt(rn_cuda_lt_tuned() - tuned, 0);
    synth_close(&s);
}
END_TEST

/* The fused chunkwise retention read-out (RETNET_CUDA_RET_FUSED) inside
 * the engine: a bf16 model whose heads fit it (dk 128, dv 256), prefill
 * chunks of up to 256 tokens in 64-token pieces, so a chunk's full pieces'
 * read-outs go through the kernel (the pieces' own state parts and the
 * scan through cuBLAS as before, their bf16 copies in the score matrix's
 * place, which these shapes fill exactly) -- from an empty state and, in
 * the second call, from the state the first left -- and the ragged tails
 * through the products as before; logits and states against the CPU's
 * recurrent form at the 16-bit tolerance. */
START_TEST(test_synthetic_fused_retention_prefill)
{
    synth s;
    static cuda_env env[] = {{"RETNET_CUDA_RET_CHUNK", "64"}, {"RETNET_CUDA_RET_FUSED", "1"}};
    synth_open_small(&s, env, ENV_COUNT(env));
    ck_assert_int_eq(rn_model_config(s.m)->head_dim_k, 128);
    long launches = rn_cuda_ret_fused_launches();
    /* 150 tokens: two full pieces and a tail of 22; then 20 (no full piece)
     * and 130: two full pieces entering with the first call's state */
    check_prefill_whole_and_split(&s, 256, 20);
    /* two prefills with full pieces, one launch a layer each */
    ck_assert_int_eq(rn_cuda_ret_fused_launches() - launches, 2 * 2);
    synth_close(&s);
}
END_TEST

/* The fused read-out normalising and gating its rows itself
 * (RETNET_CUDA_RET_NORM=1; whole heads, RETNET_CUDA_RET_SPLIT=0), the
 * group norm launch taking only the ragged tails: on the shapes of
 * test_synthetic_fused_retention_prefill, logits and states against the
 * CPU's recurrent form at the 16-bit tolerance, and the kernel known to
 * have normalised (one launch a layer for each prefill with full pieces). */
START_TEST(test_synthetic_ret_norm_prefill)
{
    synth s;
    static cuda_env env[] = {{"RETNET_CUDA_RET_CHUNK", "64"},
                             {"RETNET_CUDA_RET_FUSED", "1"},
                             {"RETNET_CUDA_RET_NORM", "1"},
                             {"RETNET_CUDA_RET_SPLIT", "0"}};
    synth_open_small(&s, env, ENV_COUNT(env));
    long normed = rn_cuda_ret_normed_launches();
    check_prefill_whole_and_split(&s, 256, 20);
    ck_assert_int_eq(rn_cuda_ret_normed_launches() - normed, 2 * 2);
    synth_close(&s);
}
END_TEST

/* v's product writing the fused read-out's bf16 copy of v itself
 * (RETNET_CUDA_V_HALF=1; with RETNET_CUDA_QK_HALF=1, so none of the three
 * copies takes a pass of its own): on the shapes of
 * test_synthetic_fused_retention_prefill, logits and states against the
 * CPU's recurrent form at the 16-bit tolerance (cuBLASLt may sum a bf16
 * output in another order, so not bit for bit), the tails' fp32 rows from
 * a product of their own, and the product known to have run (one a layer
 * for each prefill with full pieces). */
START_TEST(test_synthetic_v_half_prefill)
{
    synth s;
    static cuda_env env[] = {{"RETNET_CUDA_RET_CHUNK", "64"},
                             {"RETNET_CUDA_RET_FUSED", "1"},
                             {"RETNET_CUDA_QK_HALF", "1"},
                             {"RETNET_CUDA_V_HALF", "1"}};
    synth_open_small(&s, env, ENV_COUNT(env));
    long products = rn_cuda_v_half_products(), passes = rn_cuda_qk_half_passes();
    check_prefill_whole_and_split(&s, 256, 20);
    ck_assert_int_eq(rn_cuda_v_half_products() - products, 2 * 2);
    ck_assert_int_eq(rn_cuda_qk_half_passes() - passes, 2 * 2);
    synth_close(&s);
}
END_TEST

/* Pairs of projections as one strided-batched cuBLASLt product
 * (RETNET_CUDA_LT_PAIRS, on by default): q and k, v and g, up and gate of
 * every prefill chunk, the prefills of check_prefill_whole_and_split
 * against the CPU's recurrent form at the 16-bit tolerance (a batched
 * product may sum in another order), and the pairs known to have run:
 * three a layer for each chunk (three chunks: 150 tokens in one, then 20
 * and 130; the GEMVs' default bounds set, since a run that sends every
 * batch up to 64 rows through the tensor-core GEMV streams the 20). */
START_TEST(test_synthetic_lt_pairs_prefill)
{
    synth s;
    static cuda_env env[] = {
        {"RETNET_CUDA_LT_PAIRS", "1"}, {"RETNET_CUDA_TC_MAX", "16"}, {"RETNET_CUDA_GEMV_MAX", "2"}};
    synth_open_small(&s, env, ENV_COUNT(env));
    long pairs = rn_cuda_lt_pair_products();
    check_prefill_whole_and_split(&s, 256, 20);
    ck_assert_int_eq(rn_cuda_lt_pair_products() - pairs, 3 * 2 * 3);
    synth_close(&s);
}
END_TEST

/* Two engines of the small model, both with the fused read-out in 64-row
 * pieces (RETNET_CUDA_RET_CHUNK=64, RETNET_CUDA_RET_FUSED=1), one with
 * the switch `name` at off and one at on, prefilling the shapes of
 * test_synthetic_fused_retention_prefill -- 150 tokens (two full pieces
 * and a tail), then 130 more from that state (two full pieces and a tail
 * of 2) -- to the same logits and states, bit for bit; and counter()
 * advanced by want over the four prefills (the path known to have run). */
/* The small model with its engine under env_a (synth_open_small), and in
 * *e2 a second engine of the same model under env_b (n settings each):
 * the pair a switch's test compares.  Caller frees *e2 and closes s. */
static void synth_open_pair(synth *s, rn_engine **e2, cuda_env *env_a, cuda_env *env_b, size_t n)
{
    rn_error err = {0};
    char *saved[ENV_MAX];
    synth_open_small(s, env_a, n);
    env_set(env_b, n, saved);
    rn_engine_opts o = fixture_opts(SLOTS, 256);
    int made = rn_engine_new(e2, s->m, &o, &err);
    env_restore(env_b, n, saved); /* before any assert: a suite without fork goes on */
    ck_assert_msg(made == RN_OK, "%s", err.msg);
}

static void check_switch_keeps_bits(const char *name, const char *off, const char *on,
                                    long (*counter)(void), long want)
{
    synth s;
    rn_engine *e2 = NULL;
    cuda_env env_a[] = {
        {"RETNET_CUDA_RET_CHUNK", "64"}, {"RETNET_CUDA_RET_FUSED", "1"}, {name, off}};
    cuda_env env_b[] = {
        {"RETNET_CUDA_RET_CHUNK", "64"}, {"RETNET_CUDA_RET_FUSED", "1"}, {name, on}};
    synth_open_pair(&s, &e2, env_a, env_b, ENV_COUNT(env_a));
    size_t V = (size_t)s.vocab, sb = rn_engine_state_bytes(s.e);
    float *a = malloc(sizeof(float) * V), *b = malloc(sizeof(float) * V);
    ck_assert(a && b);
    rn_prefill_opts po = {.form = RN_FORM_CHUNKWISE, .chunk = 256};
    long before = counter();
    for (int call = 0; call < 2; call++) {
        const int32_t *tok = s.tok + (call ? 20 : 0);
        int len = call ? 130 : N_TOK;
        ck_assert_int_eq(rn_prefill(s.e, 0, tok, len, &po, a), RN_OK);
        ck_assert_int_eq(rn_prefill(e2, 0, tok, len, &po, b), RN_OK);
        ck_assert_msg(memcmp(a, b, sizeof(float) * V) == 0, "call %d: the logits differ", call);
        float *sa = fixture_state(s.e, 0), *s2 = fixture_state(e2, 0);
        ck_assert_msg(memcmp(sa, s2, sb) == 0, "call %d: the states differ", call);
        free(sa);
        free(s2);
    }
    ck_assert_int_eq(counter() - before, want);
    free(a);
    free(b);
    rn_engine_free(e2);
    synth_close(&s);
}

/* An engine opened with env_b against one with env_a (n variables each):
 * the small model's slots 0 and 1 prefilled with the same 20 tokens, then
 * STEPS decode steps of both rows, the logits and the states the same
 * bits.  Returns how far counter moved meanwhile, and in *layers the
 * model's layers. */
static long check_decode_keeps_bits(cuda_env *env_a, cuda_env *env_b, size_t n,
                                    long (*counter)(void), long *layers)
{
    synth s;
    rn_engine *e2 = NULL;
    synth_open_pair(&s, &e2, env_a, env_b, n);
    size_t V = (size_t)s.vocab, sb = rn_engine_state_bytes(s.e);
    float *a = malloc(sizeof(float) * V * 2), *b = malloc(sizeof(float) * V * 2);
    ck_assert(a && b);
    rn_prefill_opts po = {.form = RN_FORM_CHUNKWISE, .chunk = 256};
    int slots[2] = {0, 1};
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(rn_prefill(s.e, i, s.tok, 20, &po, NULL), RN_OK);
        ck_assert_int_eq(rn_prefill(e2, i, s.tok, 20, &po, NULL), RN_OK);
    }
    long before = counter();
    for (int step = 0; step < STEPS; step++) {
        const int32_t *in = s.tok + 20 + 2 * step;
        ck_assert_int_eq(rn_decode(s.e, slots, in, 2, a), RN_OK);
        ck_assert_int_eq(rn_decode(e2, slots, in, 2, b), RN_OK);
        ck_assert_msg(memcmp(a, b, sizeof(float) * V * 2) == 0, "step %d: the logits differ", step);
    }
    long moved = counter() - before;
    *layers = rn_model_config(s.m)->n_layers;
    for (int i = 0; i < 2; i++) {
        float *sa = fixture_state(s.e, i), *s2 = fixture_state(e2, i);
        ck_assert_msg(memcmp(sa, s2, sb) == 0, "slot %d: the states differ", i);
        free(sa);
        free(s2);
    }
    free(a);
    free(b);
    rn_engine_free(e2);
    synth_close(&s);
    return moved;
}

/* Launches STEPS decode steps make of something done once a layer of
 * `layers`: once a layer when the step's graph is captured (a capture the
 * change broke would fall back to launching every step), or every step
 * without graphs. */
static long per_layer_launches(long layers)
{
    const char *g = getenv("RETNET_CUDA_GRAPHS");
    return g && !strcmp(g, "0") ? STEPS * layers : layers;
}

/* Decode steps with each layer's output-projection weights asked of L2 on
 * a second stream (RETNET_CUDA_L2_FORK=2: steps of up to 2 rows) against
 * an engine without (check_decode_keeps_bits: a request for bytes changes
 * no value), and the requests known to have gone out, one a layer, inside
 * the step's graph where graphs are on; none before Hopper, where the
 * switch stays off. */
START_TEST(test_synthetic_l2_fork_keeps_bits)
{
    cuda_env off[] = {{"RETNET_CUDA_L2_FORK", "0"}}, on[] = {{"RETNET_CUDA_L2_FORK", "2"}};
    long layers = 0, fetches = check_decode_keeps_bits(off, on, 1, rn_cuda_l2_fetches, &layers);
    ck_assert_int_eq(fetches, rn_cuda_device_major() < 9 ? 0 : per_layer_launches(layers));
}
END_TEST

/* The decode group norm formed by the output projection's GEMV
 * (RETNET_CUDA_GEMV_GROUPNORM=1) against its own launch, bit for bit
 * (check_decode_keeps_bits: the GEMV forms each value with norm_vec_row's
 * operations and sums in the split GEMV's order), and the GEMV known to
 * have formed it, once a layer.  Both engines stream 512-value rows in
 * 256-column shares (RETNET_CUDA_GEMV_SPLIT), the split the fold needs (at
 * the default 1024 columns the small model's rows are one share), through
 * the GEMV with register-held norms whatever check-cuda's run sets
 * (RETNET_CUDA_GEMV_MAX, RETNET_CUDA_NORM_VEC), so the fold applies. */
START_TEST(test_synthetic_gemv_group_norm_keeps_bits)
{
    cuda_env off[] = {{"RETNET_CUDA_GEMV_SPLIT", "256"},
                      {"RETNET_CUDA_GEMV_MAX", "8"},
                      {"RETNET_CUDA_NORM_VEC", "1"},
                      {"RETNET_CUDA_GEMV_GROUPNORM", "0"}};
    cuda_env on[] = {{"RETNET_CUDA_GEMV_SPLIT", "256"},
                     {"RETNET_CUDA_GEMV_MAX", "8"},
                     {"RETNET_CUDA_NORM_VEC", "1"},
                     {"RETNET_CUDA_GEMV_GROUPNORM", "1"}};
    long layers = 0, launches = check_decode_keeps_bits(off, on, ENV_COUNT(off),
                                                        rn_cuda_gemv_group_launches, &layers);
    ck_assert_int_eq(launches, per_layer_launches(layers));
}
END_TEST

/* The rotary pass writing the fused read-out's bf16 copies of q and k and
 * the decay-scaled keys (RETNET_CUDA_QK_HALF, on by default) instead of
 * three passes after it: an engine with it against one with
 * RETNET_CUDA_QK_HALF=0, bit for bit (the copies round the same floats
 * the same way), the pass known to have run in the one alone (one a layer
 * for each prefill with full pieces). */
START_TEST(test_synthetic_qk_half_keeps_bits)
{
    check_switch_keeps_bits("RETNET_CUDA_QK_HALF", "0", "1", rn_cuda_qk_half_passes, 2 * 2);
}
END_TEST

/* The fused read-out with each head's value columns split over two
 * blocks (the small model's dv of 256 allows two) against one without
 * (RETNET_CUDA_RET_SPLIT=0), bit for bit (each share forms the same scores
 * and sums its columns in the same order), the split known to have run
 * (one launch a layer for each prefill with full pieces): as the plan sees
 * fit (=1, the default; the small model's 4 blocks leave SMs idle), and
 * always in two (=2). */
START_TEST(test_synthetic_ret_split_keeps_bits)
{
    check_switch_keeps_bits("RETNET_CUDA_RET_SPLIT", "0", "1", rn_cuda_ret_split_launches, 2 * 2);
    check_switch_keeps_bits("RETNET_CUDA_RET_SPLIT", "0", "2", rn_cuda_ret_split_launches, 2 * 2);
}
END_TEST

/* The fused read-out in wide warps (the default: products in warps of 32
 * rows, the small model's dv / 64 being even, scores in warps of 32 keys)
 * against narrow ones (RETNET_CUDA_RET_WIDE=0), bit for bit (each output
 * sums the same products in the same order), the wide launch known to
 * have run (one a layer for each prefill with full pieces). */
START_TEST(test_synthetic_ret_wide_keeps_bits)
{
    check_switch_keeps_bits("RETNET_CUDA_RET_WIDE", "0", "1", rn_cuda_ret_wide_launches, 2 * 2);
}
END_TEST

/* The stream-K tensor-core GEMV (RETNET_CUDA_TC_STREAM) inside the
 * engine: the mixed-position test's 40-row decode steps and its prefill
 * chunks (64 rows and their tails) through the tensor-core GEMV
 * (RETNET_CUDA_TC_MAX=64, RETNET_CUDA_GEMV_MAX=0: every row count up to
 * 64), against the CPU's recurrent form at the 16-bit tolerance (it sums
 * in another order than the register kernel), stream-K launches known to
 * have run and none short of buffers (the engine sized them for every
 * launch it makes).  On an H100's 132 SMs the small model's projections
 * would spread a group over more than RN_CUDA_TC_STREAM_SPREAD_MAX warps
 * and keep the register kernel; its LM head (563 groups of 17 units)
 * takes the stream-K grid. */
START_TEST(test_synthetic_tc_stream_decode)
{
    static cuda_env env[] = {{"RETNET_CUDA_TC_STREAM", "1"},
                             {"RETNET_CUDA_GEMV_MAX", "0"},
                             {"RETNET_CUDA_TC_MAX", "64"}};
    char *saved[ENV_MAX];
    long before = rn_cuda_tc_stream_launches(), short_before = rn_cuda_tc_stream_short();
    env_set(env, ENV_COUNT(env), saved);
    ck_assert_int_eq(configs[2].dtype, RN_DT_BF16);
    check_batched_decode(2); /* the bf16 model: the tensor-core GEMV takes 16-bit weights */
    env_restore(env, ENV_COUNT(env), saved);
    /* launched at least once: the decode step's graph is captured once for
     * its batch size (the count is of launches made, not of replays) */
    ck_assert_int_gt(rn_cuda_tc_stream_launches() - before, 0);
    ck_assert_int_eq(rn_cuda_tc_stream_short() - short_before, 0);
}
END_TEST
#endif

Suite *synthetic_suite(void)
{
    Suite *s = suite_create("synthetic");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 300);
    int n = (int)(sizeof configs / sizeof configs[0]);
    tcase_add_loop_test(tc, test_synthetic_prefill_ragged_and_continued, 0, n);
    tcase_add_loop_test(tc, test_synthetic_batched_decode_mixed_positions, 0, n);
#ifdef RN_HAVE_CUDA
    if (fixture_on_cuda()) { /* on the CPU the switches mean nothing */
        tcase_add_test(tc, test_synthetic_fused_retention_prefill);
        tcase_add_test(tc, test_synthetic_qk_half_keeps_bits);
        tcase_add_test(tc, test_synthetic_ret_norm_prefill);
        tcase_add_test(tc, test_synthetic_l2_fork_keeps_bits);
        tcase_add_test(tc, test_synthetic_ret_split_keeps_bits);
        tcase_add_test(tc, test_synthetic_ret_wide_keeps_bits);
        tcase_add_test(tc, test_synthetic_v_half_prefill);
        tcase_add_test(tc, test_synthetic_lt_pairs_prefill);
        tcase_add_test(tc, test_synthetic_lt_tune_prefill);
        tcase_add_test(tc, test_synthetic_tc_stream_decode);
    }
#endif
    suite_add_tcase(s, tc);
#ifdef RN_HAVE_CUDA
    if (fixture_on_cuda()) {
        /* a case of its own, which check-cuda's racecheck and synccheck
         * run alone (CK_RUN_CASE=gemvgn) */
        TCase *gn = tcase_create("gemvgn");
        tcase_set_timeout(gn, 300);
        tcase_add_test(gn, test_synthetic_gemv_group_norm_keeps_bits);
        suite_add_tcase(s, gn);
    }
#endif
    return s;
}
