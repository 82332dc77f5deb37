/* The norms' block arithmetic (engine/cuda/norm_dev.cuh, as norm_kernel
 * runs it: each thread's strided share of a row summed in double, the
 * block's sums through warp shuffles and shared memory, then each value
 * normalised) on the CPU through the CUDA emulation (cuda_emu.h), against
 * a double-precision LayerNorm or RMSNorm.  The norm sums in double and
 * rounds each value once from there, so 1e-5 of 1 + |value| is far above
 * its rounding and far below a wrong mean, factor, weight, row or a
 * warp's share left out of the block's sum. */
#include <check.h>
#include <stdint.h>

#include "model.h" /* RN_DT_BF16 */
#include "suites.h"

double rn_emu_norm_check(int nb, int d, int threads, int layer_kind, int affine, uint32_t seed);

/* rows (blocks), width, threads: one to eight warps, widths that leave
 * threads idle, that do not fill the last round, and the 1.3B shape's */
static const int shapes[][3] = {
    {1, 64, 64}, {2, 256, 96}, {3, 2048, 128}, {2, 2816, 256}, {2, 100, 32}, {1, 40, 64},
};
#define N_SHAPES (int)(sizeof shapes / sizeof shapes[0])

/* _i: shape, then LayerNorm or RMSNorm, then with or without weights */
START_TEST(test_norm_emu_matches_reference)
{
    const int *s = shapes[_i % N_SHAPES];
    int layer_kind = _i / N_SHAPES % 2, affine = _i / (2 * N_SHAPES);
    double worst = rn_emu_norm_check(s[0], s[1], s[2], layer_kind, affine, (uint32_t)(11 + _i));
    ck_assert_msg(worst == worst, "a value is NaN: a row left unnormalised, or a shared slot "
                                  "read that no warp wrote");
    ck_assert_msg(worst >= 0.0, "the emulated launch failed");
    ck_assert_msg(worst <= 1e-5, "%d rows of %d, %d threads, %s%s: error %.3g", s[0], s[1], s[2],
                  layer_kind ? "LayerNorm" : "RMSNorm", affine ? " with weights" : "", worst);
}
END_TEST

double rn_emu_norm_vec_check(int rows, int d, int mode, int out, uint32_t seed);

/* norm_vec_kernel, the norms' default kernel, launched as kernels.cu does:
 * rows and widths that put 1, 2, 4 and 8 rows in a block (1040: 160
 * threads, 130 of them holding values, one row; 768: rows of 3 warps, two
 * a block; 64: a warp of which 8 threads hold values), widths where a
 * thread holds only 4 values (100, 1036), row counts that leave a block's
 * last rows empty; each plain, gated, after the residual update, over 3
 * partial rows and over 6 gated (the decode step's group norm, its parts
 * loaded several at a time, summed in their order: the sink must hold
 * exactly that sum), to fp32, bf16 and fp16; and each against the launch
 * with one row a block, bit for bit. */
static const int vec_shapes[][2] = {{5, 512}, {9, 2048}, {33, 256}, {3, 64}, {2, 1040},
                                    {1, 512}, {5, 100},  {3, 1036}, {3, 768}};
#define N_VEC (int)(sizeof vec_shapes / sizeof vec_shapes[0])

/* _i: shape, then mode (plain, gated, residual, 3 parts, 6 gated parts),
 * then the output */
START_TEST(test_norm_emu_vec_matches_reference)
{
    const int *s = vec_shapes[_i % N_VEC];
    int mode = _i / N_VEC % 5, out = _i / (5 * N_VEC);
    static const char *const modes[] = {"plain", "gated", "residual", "3 parts", "6 parts, gated"};
    static const char *const outs[] = {"fp32", "bf16", "fp16"};
    double worst = rn_emu_norm_vec_check(s[0], s[1], mode, out, (uint32_t)(97 + _i));
    ck_assert_msg(worst == worst, "a value is NaN: left unwritten");
    ck_assert_msg(worst >= 0.0, "the emulated launch failed");
    ck_assert_msg(worst <= 1e-5,
                  "%d rows of %d, %s, %s: error %.3g (1: a sink value, a write past the rows, or "
                  "other bits than one row a block)",
                  s[0], s[1], modes[mode], outs[out], worst);
}
END_TEST

double rn_emu_norm_kernel_check(int rows, int d, int mode, int out, uint32_t seed);

/* norm_kernel, which takes the norms norm_vec_kernel cannot (kernels.cu:
 * norm_vec_fits), in the same modes and outputs: widths under a block's
 * threads (64 threads for 50 and 100), of several values a thread, odd
 * (1037: not a multiple of 4, which only this kernel takes) and the 1.3B
 * preset's 2048. */
static const int row_shapes[][2] = {{3, 50}, {4, 100}, {2, 1037}, {3, 2048}};
#define N_ROW (int)(sizeof row_shapes / sizeof row_shapes[0])

START_TEST(test_norm_emu_kernel_matches_reference)
{
    const int *s = row_shapes[_i % N_ROW];
    int mode = _i / N_ROW % 5, out = _i / (5 * N_ROW);
    double worst = rn_emu_norm_kernel_check(s[0], s[1], mode, out, (uint32_t)(301 + _i));
    ck_assert_msg(worst == worst, "a value is NaN: left unwritten");
    ck_assert_msg(worst >= 0.0, "the emulated launch failed");
    ck_assert_msg(
        worst <= 1e-5,
        "%d rows of %d, mode %d, output %d: error %.3g (1: a sink value or a write past the rows)",
        s[0], s[1], mode, out, worst);
}
END_TEST

void rn_emu_norm_vec_rows(int d, int rows, int *block_rows, int *most);

/* How many rows a launch puts in a block: at least 1, at most what the
 * block can hold (norm_vec_rows), one while that leaves fewer than 64
 * blocks (a decode step's rows keep a block each), and as many as a block
 * holds for a prefill chunk's group norm, 4096 tokens x 8 heads of 512. */
START_TEST(test_norm_emu_block_rows)
{
    static const int widths[] = {64, 256, 512, 768, 1024, 2048, 8192};
    static const int counts[] = {1, 2, 8, 63, 64, 127, 128, 512, 4096, 32768};
    for (size_t i = 0; i < sizeof widths / sizeof widths[0]; i++)
        for (size_t j = 0; j < sizeof counts / sizeof counts[0]; j++) {
            int r, most;
            rn_emu_norm_vec_rows(widths[i], counts[j], &r, &most);
            ck_assert_msg(r >= 1 && r <= most, "d %d, %d rows: %d a block of at most %d", widths[i],
                          counts[j], r, most);
            ck_assert_msg((counts[j] + r - 1) / r >= (counts[j] < 64 ? counts[j] : 64),
                          "d %d, %d rows: %d a block leaves too few blocks", widths[i], counts[j],
                          r);
        }
    int r, most;
    rn_emu_norm_vec_rows(512, 4096 * 8, &r, &most);
    ck_assert_int_eq(most, 4);
    ck_assert_int_eq(r, most);
}
END_TEST

long rn_emu_to_half_check(size_t n, int skew, int skew_h, int t, unsigned grid, unsigned block,
                          uint32_t seed, int *vec);

/* The fp32 -> bf16/fp16 copy the fused retention read-out takes its q, k
 * and v from (to_half_kernel): counts that leave a tail of 1-7 values
 * after the 8-value groups and none; a source 4 bytes and a destination 2
 * bytes off the vector alignment (the value-at-a-time path, which must
 * then be taken); grids that cover the work and grids of 64 threads that
 * wrap around it.  Every value must be its own rounding, and nothing
 * beside the destination written.  _i: count, then alignment, then dtype,
 * then grid. */
static const size_t half_counts[] = {0, 1, 7, 8, 9, 64, 1000, 4099};
#define N_HALF_COUNTS (int)(sizeof half_counts / sizeof half_counts[0])

START_TEST(test_norm_emu_to_half_copies_every_value)
{
    size_t n = half_counts[_i % N_HALF_COUNTS];
    int align = _i / N_HALF_COUNTS % 3, t = _i / (3 * N_HALF_COUNTS) % 2 ? RN_DT_F16 : RN_DT_BF16;
    int wrap = _i / (6 * N_HALF_COUNTS);
    int skew = align == 1, skew_h = align == 2, vec = -1;
    unsigned block = wrap ? 32u : 256u, grid = wrap ? 2u : (unsigned)(n / 8 + 8) / 256u + 1u;
    long bad = rn_emu_to_half_check(n, skew, skew_h, t, grid, block, (uint32_t)(501 + _i), &vec);
    ck_assert_msg(bad >= 0, "the emulated launch failed");
    ck_assert_int_eq(vec, align == 0);
    ck_assert_msg(bad == 0, "%zu values, skew %d/%d, %s, %u x %u threads: %ld wrong or stray", n,
                  skew, skew_h, t == RN_DT_BF16 ? "bf16" : "fp16", grid, block, bad);
}
END_TEST

Suite *norm_emu_suite(void)
{
    Suite *s = suite_create("norm_emu");
    TCase *tc = tcase_create("rows");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_norm_emu_matches_reference, 0, 4 * N_SHAPES);
    tcase_add_loop_test(tc, test_norm_emu_kernel_matches_reference, 0, 15 * N_ROW);
    tcase_add_loop_test(tc, test_norm_emu_vec_matches_reference, 0, 15 * N_VEC);
    tcase_add_test(tc, test_norm_emu_block_rows);
    tcase_add_loop_test(tc, test_norm_emu_to_half_copies_every_value, 0, 12 * N_HALF_COUNTS);
    suite_add_tcase(s, tc);
    return s;
}
