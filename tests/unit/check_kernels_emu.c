/* kernels.cu's smaller kernels -- greedy's pick, prefill's inter-chunk
 * scan, the elementwise kernels and the chunkwise helpers
 * (engine/cuda/argmax_dev.cuh, scan_dev.cuh, elem_dev.cuh, chunk_dev.cuh)
 * -- on the CPU through the CUDA emulation (kernels_emu.cc), launched as
 * kernels.cu launches them.
 *
 * The pick must be rn_argmax_row's, bit for bit, since the server's greedy
 * tokens must not depend on where they were picked: rows of one value to
 * many, the largest value tied at several places (the first wins), NaN
 * (read as -inf) before and at the largest, +inf, -0 against +0 (equal:
 * the first wins), nothing above -inf (index 0), rows narrower than a
 * block and wider than a block's loads in flight.
 *
 * The scan walks each state value through the pieces: the state entering
 * piece p replaces U[p] (or goes to Uh[p] in bf16, U kept), and the state
 * moves on to g^P S + U[p] with each head's own g^P.  The host repeats
 * the same fp32 operations in the same order, so everything must match
 * bit for bit: a wrong head's decay, piece stride, group edge
 * (SCAN_GROUP) or a value the grid's stride loop skips shows. */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "rn_math.h"
#include "suites.h"
#include "util.h"

int rn_emu_argmax_rows(const float *logits, int rows, int V, int32_t *out);
int rn_emu_scan_pieces(float *Sl, float *U, uint16_t *Uh, const float *pw, int H, int P, int pieces,
                       size_t per_head, unsigned blocks, unsigned threads);
int rn_emu_embed(float *x, const void *E, int t, size_t es, int V, const int32_t *tok, int n, int D,
                 float scale, unsigned threads);
int rn_emu_scale(float *x, size_t n, float scale, unsigned blocks, unsigned threads);
int rn_emu_state_copy(float *f, uint16_t *h, size_t n, int to_f32, unsigned blocks,
                      unsigned threads);
int rn_emu_act(float *x, uint16_t *h, int t, size_t n, int act, unsigned blocks, unsigned threads);
int rn_emu_glu(float *up, const float *gate, uint16_t *h, int t, size_t n, int act, int vec,
               unsigned blocks, unsigned threads);
int rn_emu_glu_halves(uint16_t *out, const uint16_t *up, const uint16_t *gate, int t, size_t n,
                      int act, int one, unsigned blocks, unsigned threads);
int rn_emu_residual(float *x, const float *y, size_t n, float alpha, unsigned blocks,
                    unsigned threads);
int rn_emu_add_bias(float *y, const float *b, int rows, int cols, unsigned blocks,
                    unsigned threads);
int rn_emu_decay_table(float *pw, const double *log_gamma, int H, int C, unsigned blocks,
                       unsigned threads);
int rn_emu_decay_mask(float *A, const float *pw, int count, int H, int C, int vec,
                      unsigned threads);
int rn_emu_decay_state(float *Sl, const float *pw, int H, int C, size_t per_head, unsigned blocks,
                       unsigned threads);
int rn_emu_ts_chunk(float *o, float *s, float *sums, const float *pw, int H, int C, int dv,
                    unsigned threads);

static uint32_t ke_next(uint32_t *s)
{
    *s = *s * 1664525u + 1013904223u;
    return *s >> 8;
}

static float ke_uniform(uint32_t *s, float lo, float hi)
{
    return lo + (hi - lo) * (float)ke_next(s) / (float)(1u << 24);
}

/* Row r of a case's rows (V wide), by rule r. */
static void argmax_row(float *l, int V, int r, uint32_t *seed)
{
    for (int i = 0; i < V; i++)
        l[i] = ke_uniform(seed, -4.0f, 4.0f);
    switch (r) {
    case 0: /* random */
        break;
    case 1: /* the largest at three places, the last one last in the row */
        l[V / 3] = l[V / 2] = l[V - 1] = 9.0f;
        break;
    case 2: /* NaN first and around the largest */
        l[0] = NAN, l[V / 2] = 9.0f;
        if (V / 2 + 1 < V)
            l[V / 2 + 1] = NAN;
        if (V / 2 > 0)
            l[V / 2 - 1] = NAN;
        break;
    case 3: /* +inf once, late */
        l[V - 1 - V / 4] = INFINITY;
        break;
    case 4: /* -0 before +0, nothing above them */
        for (int i = 0; i < V; i++)
            l[i] = -fabsf(l[i]) - 1.0f;
        l[V - 1] = 0.0f, l[V / 2] = -0.0f;
        break;
    case 5: /* nothing above -inf: NaN and -inf only */
        for (int i = 0; i < V; i++)
            l[i] = i % 3 ? -INFINITY : NAN;
        break;
    default: /* one value throughout */
        for (int i = 0; i < V; i++)
            l[i] = 1.5f;
    }
}
#define ARGMAX_RULES 7

/* widths: one entry, under a warp, under a block, one block's loads in
 * flight and a few more, and the test vocabulary's 9001 */
static const int argmax_widths[] = {1, 7, 1000, 8195, 9001};
#define N_WIDTHS (int)(sizeof argmax_widths / sizeof argmax_widths[0])

START_TEST(test_kernels_emu_argmax_is_the_hosts)
{
    int V = argmax_widths[_i], rows = ARGMAX_RULES;
    uint32_t seed = 97u + (uint32_t)_i;
    float *l = malloc(sizeof(float) * (size_t)rows * (size_t)V);
    int32_t out[ARGMAX_RULES];
    ck_assert_ptr_nonnull(l);
    for (int r = 0; r < rows; r++)
        argmax_row(l + (size_t)r * (size_t)V, V, r, &seed);
    ck_assert_int_eq(rn_emu_argmax_rows(l, rows, V, out), 0);
    for (int r = 0; r < rows; r++)
        ck_assert_msg(out[r] == rn_argmax_row(l + (size_t)r * (size_t)V, V),
                      "V %d, row rule %d: device %d, host %d", V, r, out[r],
                      rn_argmax_row(l + (size_t)r * (size_t)V, V));
    free(l);
}
END_TEST

/* H, P, pieces, per_head, blocks, threads: one piece; a group and one
 * more (SCAN_GROUP 8); two groups and a ragged third; a grid of fewer
 * threads than values (its stride loop) */
static const int scan_cases[][6] = {
    {1, 64, 1, 40, 1, 64},
    {3, 16, 9, 40, 2, 32},
    {2, 32, 19, 33, 1, 32},
    {4, 8, 8, 100, 3, 64},
};
#define N_SCAN (int)(sizeof scan_cases / sizeof scan_cases[0])

START_TEST(test_kernels_emu_scan_is_the_recurrence)
{
    const int *c = scan_cases[_i / 2];
    int H = c[0], P = c[1], pieces = c[2], with_uh = _i % 2;
    size_t per = (size_t)c[3], hkv = (size_t)H * per, nu = (size_t)pieces * hkv;
    uint32_t seed = 5u + (uint32_t)_i;
    float *S = malloc(4 * hkv), *S0 = malloc(4 * hkv), *U = malloc(4 * nu), *U0 = malloc(4 * nu);
    float *pw = malloc(4 * (size_t)H * (size_t)(P + 1));
    uint16_t *Uh = malloc(2 * nu);
    ck_assert(S && S0 && U && U0 && pw && Uh);
    for (size_t e = 0; e < hkv; e++)
        S[e] = S0[e] = ke_uniform(&seed, -2.0f, 2.0f);
    for (size_t e = 0; e < nu; e++)
        U[e] = U0[e] = ke_uniform(&seed, -1.0f, 1.0f);
    for (int h = 0; h < H; h++) /* each head its own decay; only g^P is read */
        for (int j = 0; j <= P; j++)
            pw[h * (P + 1) + j] = powf(0.8f + 0.05f * (float)h, (float)j);
    ck_assert_int_eq(rn_emu_scan_pieces(S, U, with_uh ? Uh : NULL, pw, H, P, pieces, per,
                                        (unsigned)c[4], (unsigned)c[5]),
                     0);
    for (size_t e = 0; e < hkv; e++) {
        float g = pw[(e / per) * (size_t)(P + 1) + (size_t)P], s = S0[e];
        for (int p = 0; p < pieces; p++) {
            size_t at = (size_t)p * hkv + e;
            if (with_uh) {
                ck_assert_uint_eq(Uh[at], rn__f32_to_bf16(s));
                ck_assert_msg(U[at] == U0[at], "U changed with Uh at piece %d, %zu", p, e);
            } else {
                ck_assert_msg(U[at] == s, "piece %d, value %zu: %g, not %g", p, e, U[at], s);
            }
            s = g * s + U0[at];
        }
        ck_assert_msg(S[e] == s, "state value %zu: %g, not %g", e, S[e], s);
    }
    free(S), free(S0), free(U), free(U0), free(pw), free(Uh);
}
END_TEST

/* n floats from seed in [lo, hi); malloc'd, the caller frees. */
static float *ke_floats(size_t n, float lo, float hi, uint32_t *seed)
{
    float *v = malloc(sizeof(float) * (n ? n : 1));
    ck_assert_ptr_nonnull(v);
    for (size_t i = 0; i < n; i++)
        v[i] = ke_uniform(seed, lo, hi);
    return v;
}

/* Whether a and b hold the same bits. */
static int same_bits(float a, float b)
{
    return memcmp(&a, &b, sizeof a) == 0;
}

/* Each table dtype (fp32, bf16, fp16), rows narrower and wider than the
 * block, scaled and not: the embedding is the table's row of each token
 * (the first and last rows, repeats) as fp32, times the scale unless 1. */
START_TEST(test_kernels_emu_embed_takes_each_tokens_row)
{
    static const int types[] = {RN_DT_F32, RN_DT_BF16, RN_DT_F16};
    int t = types[_i % 3], D = _i / 3 % 2 ? 300 : 5, V = 11, n = 6;
    float scale = _i / 6 ? 0.75f : 1.0f;
    int32_t tok[6] = {0, 10, 3, 3, 7, 10};
    uint32_t seed = 31u + (uint32_t)_i;
    size_t nv = (size_t)V * (size_t)D, es = t == RN_DT_F32 ? 4 : 2;
    float *ef = ke_floats(nv, -2.0f, 2.0f, &seed), *x = malloc(sizeof(float) * (size_t)n * D);
    uint16_t *eh = malloc(2 * nv);
    ck_assert(x && eh);
    for (size_t i = 0; i < nv; i++)
        eh[i] = rn__f32_to_half(ef[i], t == RN_DT_BF16);
    ck_assert_int_eq(
        rn_emu_embed(x, t == RN_DT_F32 ? (void *)ef : (void *)eh, t, es, V, tok, n, D, scale, 64),
        0);
    for (int r = 0; r < n; r++)
        for (int d = 0; d < D; d++) {
            size_t e = (size_t)tok[r] * (size_t)D + (size_t)d;
            float v = t == RN_DT_F32 ? ef[e] : rn__half_to_f32(eh[e], t == RN_DT_BF16);
            float want = scale != 1.0f ? v * scale : v;
            ck_assert_msg(same_bits(x[(size_t)r * D + d], want),
                          "dtype %d row %d value %d: %g, not %g", t, r, d, x[(size_t)r * D + d],
                          want);
        }
    free(ef), free(x), free(eh);
}
END_TEST

START_TEST(test_kernels_emu_scale_and_residual_and_bias)
{
    uint32_t seed = 71u;
    size_t n = 1003;
    int rows = 7, cols = 33;
    float *x = ke_floats(n, -3.0f, 3.0f, &seed), *y = ke_floats(n, -3.0f, 3.0f, &seed);
    float *x0 = malloc(sizeof(float) * n), *b = ke_floats((size_t)cols, -1.0f, 1.0f, &seed);
    ck_assert_ptr_nonnull(x0);
    memcpy(x0, x, sizeof(float) * n);
    /* grids of fewer threads than values: the stride loops run */
    ck_assert_int_eq(rn_emu_scale(x, n, 0.3f, 3, 64), 0);
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(same_bits(x[i], x0[i] * 0.3f), "scale, value %zu", i);
    memcpy(x, x0, sizeof(float) * n);
    ck_assert_int_eq(rn_emu_residual(x, y, n, 0.7f, 2, 96), 0);
    for (size_t i = 0; i < n; i++) /* one rounding, as the GEMV's stored residual */
        ck_assert_msg(same_bits(x[i], fmaf(x0[i], 0.7f, y[i])), "residual, value %zu", i);
    memcpy(x, x0, sizeof(float) * n);
    ck_assert_int_eq(rn_emu_add_bias(x, b, rows, cols, 2, 32), 0);
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++)
            ck_assert_msg(same_bits(x[r * cols + c], x0[r * cols + c] + b[c]), "bias, %d,%d", r, c);
    for (size_t i = (size_t)rows * cols; i < n; i++)
        ck_assert_msg(same_bits(x[i], x0[i]), "bias past the rows, value %zu", i);
    free(x), free(y), free(x0), free(b);
}
END_TEST

/* Every bf16 value widens to its fp32 value; fp32 values of every kind
 * (ties, specials, subnormals) narrow to nearest even. */
START_TEST(test_kernels_emu_state_copies_round_as_the_host)
{
    size_t n = 65536;
    uint32_t seed = 13u;
    float *f = malloc(sizeof(float) * n);
    uint16_t *h = malloc(2 * n);
    ck_assert(f && h);
    for (size_t i = 0; i < n; i++)
        h[i] = (uint16_t)i;
    ck_assert_int_eq(rn_emu_state_copy(f, h, n, 1, 4, 128), 0);
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(same_bits(f[i], rn__bf16_to_f32((uint16_t)i)), "expand %#zx", i);
    static const float special[] = {0.0f,    -0.0f,       INFINITY,       -INFINITY, 1e-40f,
                                    -3e-39f, 1.00390625f, 1.0f + 0x1p-8f, 3.4e38f};
    for (size_t i = 0; i < n; i++)
        f[i] = i % 5 == 2 ? special[(i / 5) % (sizeof special / sizeof special[0])]
                          : ke_uniform(&seed, -300.0f, 300.0f);
    ck_assert_int_eq(rn_emu_state_copy(f, h, n, 0, 3, 96), 0);
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(h[i] == rn__f32_to_bf16(f[i]), "compress %zu: %#x for %g", i, h[i], f[i]);
    free(f), free(h);
}
END_TEST

/* The activation (swish, GELU, ReLU) of each value, in place in fp32 or
 * rounded to bf16 or fp16; the GLU's up times act(gate) the same ways, one
 * value a thread and four, which must agree. */
START_TEST(test_kernels_emu_act_and_glu_apply_rn_act)
{
    static const int outs[] = {0, RN_DT_BF16, RN_DT_F16};
    int act = _i % 3, out = outs[_i / 3];
    uint32_t seed = 41u + (uint32_t)_i;
    size_t n = 1000; /* a multiple of 4, for glu4 */
    float *x = ke_floats(n, -6.0f, 6.0f, &seed), *g = ke_floats(n, -6.0f, 6.0f, &seed);
    float *x0 = malloc(sizeof(float) * n), *want = malloc(sizeof(float) * n);
    uint16_t *h = malloc(2 * n);
    ck_assert(x0 && want && h);
    memcpy(x0, x, sizeof(float) * n);
    ck_assert_int_eq(rn_emu_act(x, out ? h : NULL, out, n - 1, act, 2, 64), 0);
    for (size_t i = 0; i < n - 1; i++) {
        float a = rn_act_apply(act, x0[i]);
        if (out)
            ck_assert_msg(h[i] == rn__f32_to_half(a, out == RN_DT_BF16), "act %d to %d, value %zu",
                          act, out, i);
        else
            ck_assert_msg(same_bits(x[i], a), "act %d, value %zu: %g, not %g", act, i, x[i], a);
    }
    for (size_t i = 0; i < n; i++)
        want[i] = x0[i] * rn_act_apply(act, g[i]);
    for (int vec = 0; vec < 2; vec++) {
        size_t m = vec ? n : n - 3; /* glu_kernel on a length glu4 cannot take */
        memcpy(x, x0, sizeof(float) * n);
        ck_assert_int_eq(rn_emu_glu(x, g, out ? h : NULL, out, m, act, vec, 2, 32), 0);
        for (size_t i = 0; i < m; i++) {
            if (out)
                ck_assert_msg(h[i] == rn__f32_to_half(want[i], out == RN_DT_BF16),
                              "glu%s act %d to %d, value %zu", vec ? "4" : "", act, out, i);
            else
                ck_assert_msg(same_bits(x[i], want[i]), "glu%s act %d, value %zu: %g, not %g",
                              vec ? "4" : "", act, i, x[i], want[i]);
        }
    }
    free(x), free(g), free(x0), free(want), free(h);
}
END_TEST

/* The GLU over 16-bit projections (bf16 or fp16), four values a thread
 * and one: each output is the widened up times act of the widened gate,
 * rounded to the same type. */
START_TEST(test_kernels_emu_glu_halves_rounds_each_product)
{
    int t = _i % 2 ? RN_DT_F16 : RN_DT_BF16, one = _i / 2 % 2, act = _i / 4;
    uint32_t seed = 59u + (uint32_t)_i;
    size_t n = one ? 999 : 1000;
    uint16_t *u = malloc(2 * n), *g = malloc(2 * n), *o = malloc(2 * n);
    ck_assert(u && g && o);
    for (size_t i = 0; i < n; i++) {
        u[i] = rn__f32_to_half(ke_uniform(&seed, -4.0f, 4.0f), t == RN_DT_BF16);
        g[i] = rn__f32_to_half(ke_uniform(&seed, -6.0f, 6.0f), t == RN_DT_BF16);
    }
    ck_assert_int_eq(rn_emu_glu_halves(o, u, g, t, n, act, one, 2, 32), 0);
    for (size_t i = 0; i < n; i++) {
        float want = rn__half_to_f32(u[i], t == RN_DT_BF16) *
                     rn_act_apply(act, rn__half_to_f32(g[i], t == RN_DT_BF16));
        ck_assert_msg(o[i] == rn__f32_to_half(want, t == RN_DT_BF16),
                      "dtype %d one %d act %d, value %zu: %#x, not %#x", t, one, act, i, o[i],
                      rn__f32_to_half(want, t == RN_DT_BF16));
    }
    free(u), free(g), free(o);
}
END_TEST

/* Each head's powers of its own decay, g^0 .. g^C, as the CPU's table. */
START_TEST(test_kernels_emu_decay_table_is_each_heads_powers)
{
    int H = 3, C = 9;
    double lg[3];
    float pw[3 * 10];
    for (int h = 0; h < H; h++)
        lg[h] = rn_log_decay(_i, h, H);
    ck_assert_int_eq(rn_emu_decay_table(pw, lg, H, C, 1, 8), 0);
    for (int h = 0; h < H; h++)
        for (int d = 0; d <= C; d++)
            ck_assert_msg(same_bits(pw[h * (C + 1) + d], rn_decay_pow(lg[h], d)),
                          "head %d power %d", h, d);
}
END_TEST

/* The powers of H heads' decays, from the CPU's table (pw: H rows of
 * C + 1); malloc'd. */
static float *ke_decay_table(int H, int C)
{
    float *pw = malloc(sizeof(float) * (size_t)H * (size_t)(C + 1));
    ck_assert_ptr_nonnull(pw);
    for (int h = 0; h < H; h++)
        for (int d = 0; d <= C; d++)
            pw[h * (C + 1) + d] = rn_decay_pow(rn_log_decay(0, h, H), d);
    return pw;
}

/* count, H, C, vec, threads: one value a thread, a block wider than a row;
 * four, one warp over a row of three groups; four, a row wider than the
 * block (the stride loop); one value a thread, a row wider than the block */
static const int mask_cases[][5] = {
    {6, 3, 7, 0, 4},
    {6, 3, 12, 1, 32},
    {4, 2, 40, 1, 4},
    {2, 1, 300, 0, 256},
};
#define N_MASK (int)(sizeof mask_cases / sizeof mask_cases[0])

/* Matrix b's row i times g_h^(i-j) on and below the diagonal and 0 above,
 * h = b % H, as the CPU masks its scores. */
START_TEST(test_kernels_emu_decay_mask_is_the_cpus)
{
    const int *c = mask_cases[_i];
    int count = c[0], H = c[1], C = c[2];
    size_t n = (size_t)count * (size_t)C * (size_t)C;
    uint32_t seed = 83u + (uint32_t)_i;
    float *A = ke_floats(n, -2.0f, 2.0f, &seed), *A0 = malloc(sizeof(float) * n);
    float *pw = ke_decay_table(H, C);
    ck_assert_ptr_nonnull(A0);
    memcpy(A0, A, sizeof(float) * n);
    ck_assert_int_eq(rn_emu_decay_mask(A, pw, count, H, C, c[3], (unsigned)c[4]), 0);
    for (int b = 0; b < count; b++)
        for (int i = 0; i < C; i++)
            for (int j = 0; j < C; j++) {
                size_t at = ((size_t)b * C + (size_t)i) * (size_t)C + (size_t)j;
                float want = A0[at] * rn_decay_mask(pw + (size_t)(b % H) * (C + 1), i, j);
                ck_assert_msg(same_bits(A[at], want), "case %d matrix %d (%d, %d): %g, not %g", _i,
                              b, i, j, A[at], want);
            }
    free(A), free(A0), free(pw);
}
END_TEST

/* Each head's part of a layer state times that head's g^C. */
START_TEST(test_kernels_emu_decay_state_takes_each_heads_power)
{
    int H = 3, C = 5;
    size_t per = 50, n = (size_t)H * per;
    uint32_t seed = 23u;
    float *S = ke_floats(n, -2.0f, 2.0f, &seed), *S0 = malloc(sizeof(float) * n);
    float *pw = ke_decay_table(H, C);
    ck_assert_ptr_nonnull(S0);
    memcpy(S0, S, sizeof(float) * n);
    ck_assert_int_eq(rn_emu_decay_state(S, pw, H, C, per, 2, 32), 0);
    for (size_t e = 0; e < n; e++)
        ck_assert_msg(same_bits(S[e], S0[e] * pw[(e / per) * (size_t)(C + 1) + (size_t)C]),
                      "value %zu", e);
    free(S), free(S0), free(pw);
}
END_TEST

/* H, C, dv: one row; a few rows of a narrow head; more rows and values
 * than the block's threads */
static const int ts_cases[][3] = {{2, 1, 7}, {3, 5, 7}, {3, 70, 64}};
#define N_TS (int)(sizeof ts_cases / sizeof ts_cases[0])

/* torchscale's normaliser over a chunk continuing each head's sum s0:
 * s_i = s0 g^(i+1) + sum_{t<=i} g^t, summed in double as the CPU's
 * chunkwise form (engine/cpu/retention.c); row i of each head's read-out
 * times 1/sqrt(s_i), the head's sum left at s_{C-1}. */
START_TEST(test_kernels_emu_ts_chunk_is_the_cpus_normaliser)
{
    int H = ts_cases[_i][0], C = ts_cases[_i][1], dv = ts_cases[_i][2];
    size_t no = (size_t)C * (size_t)H * (size_t)dv;
    uint32_t seed = 47u + (uint32_t)_i;
    float *o = ke_floats(no, -2.0f, 2.0f, &seed), *o0 = malloc(sizeof(float) * no);
    float *s = ke_floats((size_t)H, 1.0f, 20.0f, &seed), s0[3];
    float *sums = malloc(sizeof(float) * (size_t)H * (size_t)C), *pw = ke_decay_table(H, C);
    ck_assert(o0 && sums);
    memcpy(o0, o, sizeof(float) * no);
    memcpy(s0, s, sizeof(float) * (size_t)H);
    ck_assert_int_eq(rn_emu_ts_chunk(o, s, sums, pw, H, C, dv, 64), 0);
    for (int h = 0; h < H; h++) {
        const float *p = pw + (size_t)h * (size_t)(C + 1);
        double cum = 0.0;
        float si = 0.0f;
        for (int i = 0; i < C; i++) {
            cum += p[i];
            si = (float)((double)s0[h] * p[i + 1] + cum);
            ck_assert_msg(same_bits(sums[h * C + i], si), "head %d row %d's sum", h, i);
            float r = 1.0f / sqrtf(si);
            for (int e = 0; e < dv; e++) {
                size_t at = ((size_t)i * (size_t)H + (size_t)h) * (size_t)dv + (size_t)e;
                ck_assert_msg(same_bits(o[at], o0[at] * r), "head %d row %d value %d", h, i, e);
            }
        }
        ck_assert_msg(same_bits(s[h], si), "head %d's sum after the chunk", h);
    }
    free(o), free(o0), free(s), free(sums), free(pw);
}
END_TEST

Suite *kernels_emu_suite(void)
{
    Suite *s = suite_create("kernels_emu");
    TCase *tc = tcase_create("kernels");
    tcase_add_loop_test(tc, test_kernels_emu_argmax_is_the_hosts, 0, N_WIDTHS);
    tcase_add_loop_test(tc, test_kernels_emu_scan_is_the_recurrence, 0, 2 * N_SCAN);
    tcase_add_loop_test(tc, test_kernels_emu_embed_takes_each_tokens_row, 0, 12);
    tcase_add_test(tc, test_kernels_emu_scale_and_residual_and_bias);
    tcase_add_test(tc, test_kernels_emu_state_copies_round_as_the_host);
    tcase_add_loop_test(tc, test_kernels_emu_act_and_glu_apply_rn_act, 0, 9);
    tcase_add_loop_test(tc, test_kernels_emu_glu_halves_rounds_each_product, 0, 12);
    tcase_add_loop_test(tc, test_kernels_emu_decay_table_is_each_heads_powers, 0, 2);
    tcase_add_loop_test(tc, test_kernels_emu_decay_mask_is_the_cpus, 0, N_MASK);
    tcase_add_test(tc, test_kernels_emu_decay_state_takes_each_heads_power);
    tcase_add_loop_test(tc, test_kernels_emu_ts_chunk_is_the_cpus_normaliser, 0, N_TS);
    suite_add_tcase(s, tc);
    return s;
}
