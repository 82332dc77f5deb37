/* Greedy's pick on the device and prefill's inter-chunk scan
 * (engine/cuda/argmax_dev.cuh, scan_dev.cuh) on the CPU through the CUDA
 * emulation (kernels_emu.cc), launched as kernels.cu launches them.
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

#include "rn_math.h"
#include "suites.h"
#include "util.h"

int rn_emu_argmax_rows(const float *logits, int rows, int V, int32_t *out);
int rn_emu_scan_pieces(float *Sl, float *U, uint16_t *Uh, const float *pw, int H, int P, int pieces,
                       size_t per_head, unsigned blocks, unsigned threads);

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

Suite *kernels_emu_suite(void)
{
    Suite *s = suite_create("kernels_emu");
    TCase *tc = tcase_create("kernels");
    tcase_add_loop_test(tc, test_kernels_emu_argmax_is_the_hosts, 0, N_WIDTHS);
    tcase_add_loop_test(tc, test_kernels_emu_scan_is_the_recurrence, 0, 2 * N_SCAN);
    suite_add_tcase(s, tc);
    return s;
}
