/* The tensor-core GEMV of engine/cuda/gemv_tc_dev.cuh on the CPU through
 * cuda_emu.h: gemv_tc_kernel (the weights through registers) and
 * gemv_tc_async_kernel (through the cp.async ring), each launched as
 * kernels.cu launches them (tc_with_shape, tc_shape_for), on weights and
 * inputs that are small integers times powers of two, whose products and
 * sums fp32 holds exactly in any order; check_gemv_emu.c drives it. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_emu.h"

#include "rn_math.h"
#include "cuda/gemv_tc_dev.cuh"

/* The H100's shared memory: a block may have 227 KiB (an SM 228: the
 * case says). */
#define TE_SMEM_BLOCK ((size_t)227 << 10)

/* One case's device-side buffers (rn_emu_alloc: aligned as cudaMalloc's):
 * job 0 plain (W0), job 1 GLU (W1 up, W2 gate); and the values of the
 * weights and inputs as doubles (ref, xr), for the expected outputs. */
struct te_bufs {
    uint16_t *W[3], *x;
    float *y[2][2]; /* [kernel][job] */
    double *ref[3], *xr;
};

static void te_free(te_bufs *b)
{
    for (int i = 0; i < 3; i++) {
        free(b->W[i]);
        free(b->ref[i]);
    }
    free(b->x);
    free(b->xr);
    for (int k = 0; k < 2; k++)
        for (int j = 0; j < 2; j++)
            free(b->y[k][j]);
}

/* n 16-bit values of dtype t: integers in [-8, 8) times 2^-3, exact in bf16
 * and fp16; *ref gets them as doubles. */
static uint16_t *te_values(int t, size_t n, double **ref, uint32_t *seed)
{
    uint16_t *p = (uint16_t *)rn_emu_alloc(n, 2);
    *ref = (double *)malloc(n * sizeof(double));
    if (!p || !*ref)
        return p;
    for (size_t i = 0; i < n; i++) {
        *seed = *seed * 1664525u + 1013904223u;
        float v = (float)((int)(*seed >> 28) - 8) * 0.125f;
        p[i] = rn__f32_to_half(v, t == RN_DT_BF16);
        (*ref)[i] = (double)v;
    }
    return p;
}

/* n 16-bit values of dtype t in [-1, 1) with every mantissa bit drawn, so
 * the order of a dot product's sums shows in its bits; *ref as doubles. */
static uint16_t *te_rough(int t, size_t n, double **ref, uint32_t *seed)
{
    uint16_t *p = (uint16_t *)rn_emu_alloc(n, 2);
    *ref = (double *)malloc(n * sizeof(double));
    if (!p || !*ref)
        return p;
    for (size_t i = 0; i < n; i++) {
        *seed = *seed * 1664525u + 1013904223u;
        float v = (float)(*seed >> 8) * 0x1p-23f - 1.0f;
        p[i] = rn__f32_to_half(v, t == RN_DT_BF16);
        (*ref)[i] = t == RN_DT_BF16 ? (double)rn__bf16_to_f32(p[i]) : (double)rn__f16_to_f32(p[i]);
    }
    return p;
}

/* b (zeroed) filled for a case of n rows of in values and the jobs'
 * outputs outs: the weights and inputs small integers (te_values) when
 * exact, else with every mantissa bit drawn (te_rough), both kernels'
 * outputs NaN (a store that never came); false when out of memory. */
static bool te_fill(te_bufs *b, int t, int n, int in, const int *outs, int exact, uint32_t *seed)
{
    int rows[3] = {outs[0], outs[1], outs[1]};
    uint16_t *(*draw)(int, size_t, double **, uint32_t *) = exact ? te_values : te_rough;
    bool ok = true;
    for (int i = 0; i < 3; i++) {
        b->W[i] = draw(t, (size_t)rows[i] * (size_t)in, &b->ref[i], seed);
        ok &= b->W[i] && b->ref[i];
    }
    b->x = draw(t, (size_t)n * (size_t)in, &b->xr, seed);
    ok &= b->x && b->xr;
    for (int k = 0; k < 2; k++)
        for (int j = 0; j < 2; j++) {
            size_t yn = (size_t)n * (size_t)outs[j];
            b->y[k][j] = (float *)rn_emu_alloc(yn, sizeof(float));
            ok &= b->y[k][j] != NULL;
            if (b->y[k][j])
                memset(b->y[k][j], 0xff, yn * sizeof(float));
        }
    return ok;
}

/* Row r of W times input row i (in values), exactly. */
static double te_dot(const double *W, const double *x, int r, int i, int in)
{
    double s = 0.0;
    for (int k = 0; k < in; k++)
        s += W[(size_t)r * (size_t)in + (size_t)k] * x[(size_t)i * (size_t)in + (size_t)k];
    return s;
}

/* The set's two jobs over the buffers of kernel kk. */
static rk_gemv_set te_set(const te_bufs *b, int kk, const int *outs, int act)
{
    rk_gemv_set set;
    memset(&set, 0, sizeof set);
    set.count = 2, set.act = act;
    set.job[0].W = b->W[0], set.job[0].y = b->y[kk][0], set.job[0].out = outs[0];
    set.job[0].kind = RK_JOB_PLAIN;
    set.job[1].W = b->W[1], set.job[1].W2 = b->W[2], set.job[1].y = b->y[kk][1];
    set.job[1].out = outs[1], set.job[1].kind = RK_JOB_GLU;
    return set;
}

/* Both kernels of dtype T, MT, NT on set (kernel 0: registers, 1: the
 * ring of `want` stages at most, for SMs of smem_sm bytes; kpw: the plan's
 * want_kpw); *stages: what the plan gave the ring. */
template <typename T, int MT, int NT>
static int te_launch(const te_bufs *b, const int *outs, int act, int n, int in, int n_sms, int want,
                     size_t smem_sm, int kpw, int *stages)
{
    size_t pairs = (size_t)(outs[0] + 1) / 2 + (size_t)outs[1];
    tc_shape s = tc_shape_for<MT, NT>(pairs, in, n_sms, want, TE_SMEM_BLOCK, smem_sm, kpw);
    dim3 grid((unsigned)s.blocks), block(32u * (unsigned)s.sh.warps);
    const T *x = (const T *)b->x;
    *stages = s.stages;
    if (!s.stages)
        return -1; /* the case asked for a ring */
    int rc = rn_emu_launch(gemv_tc_kernel<T, MT, NT, TC_LOADS>, grid, block, s.part_bytes,
                           te_set(b, 0, outs, act), x, n, in, s.sh.k_per_warp);
    tc_with_stages(s.stages, [&](auto pc) {
        rc |= rn_emu_launch(gemv_tc_async_kernel<T, MT, NT, decltype(pc)::value>, grid, block,
                            s.ring_bytes, te_set(b, 1, outs, act), x, n, in, s.sh.k_per_warp);
    });
    return rc;
}

/* The expected output of job j, row i, feature r: the plain job's exact
 * sum, or GLU's up times act(gate) of the exact sums in fp32 (gemv_store's
 * operations). */
static float te_expect(double *const *ref, const double *x, int j, int i, int r, int in, int act)
{
    if (j == 0)
        return (float)te_dot(ref[0], x, r, i, in);
    float up = (float)te_dot(ref[1], x, r, i, in), gate = (float)te_dot(ref[2], x, r, i, in);
    return up * rn_act_apply(act, gate);
}

/* See check_gemv_emu.c: the register kernel against the exact outputs
 * (*wrong, NaN: never stored, in *unset) and the ring, planned for SMs of
 * smem_sm bytes of shared memory with the launch shape's wants kpw and
 * groups (rk_tc_opts), against the register kernel bit for bit
 * (returned); -1 when the launches fail or the plan gives no ring. */
extern "C" long rn_emu_gemv_tc_check(int t, int n, int in, const int *outs, int n_sms, int want,
                                     size_t smem_sm, int kpw, int groups, int at_issue,
                                     uint32_t seed, int *stages, long *unset, long *wrong)
{
    te_bufs b;
    memset(&b, 0, sizeof b);
    long differ = -1;
    int act = RN_ACT_SWISH;
    *unset = *wrong = -1;
    if (!te_fill(&b, t, n, in, outs, 1, &seed))
        goto cleanup;
    rn_emu_cp_async_at_issue = at_issue;
    {
        size_t pairs = (size_t)(outs[0] + 1) / 2 + (size_t)outs[1];
        int wide = rn_cuda_tc_groups(pairs, n_sms, groups) == 2;
        int rc = 0;
        tc_with_shape(n, wide, [&](auto mt, auto nt) {
            constexpr int MT = decltype(mt)::value, NT = decltype(nt)::value;
            rc = t == RN_DT_BF16 ? te_launch<__nv_bfloat16, MT, NT>(&b, outs, act, n, in, n_sms,
                                                                    want, smem_sm, kpw, stages)
                                 : te_launch<__half, MT, NT>(&b, outs, act, n, in, n_sms, want,
                                                             smem_sm, kpw, stages);
        });
        if (rc)
            goto cleanup;
    }
    differ = *unset = *wrong = 0;
    for (int j = 0; j < 2; j++)
        for (int i = 0; i < n; i++)
            for (int r = 0; r < outs[j]; r++) {
                size_t at = (size_t)i * (size_t)outs[j] + (size_t)r;
                float reg = b.y[0][j][at], ring = b.y[1][j][at];
                float want_v = te_expect(b.ref, b.xr, j, i, r, in, act);
                *unset += reg != reg || ring != ring;
                *wrong += memcmp(&reg, &want_v, sizeof reg) != 0;
                differ += memcmp(&reg, &ring, sizeof reg) != 0;
            }
cleanup:
    rn_emu_cp_async_at_issue = 0;
    te_free(&b);
    return differ;
}

/* What one case's stream-K launches left: groups whose units several
 * warps share (settled through the slots), and the counters' sum after
 * the launches (each group's last warp puts its own back to 0). */
struct te_stream_seen {
    long split, counts_left;
};

/* gemv_tc_stream_kernel of dtype T, MT, NT on the buffers, planned for
 * n_sms SMs as kernels.cu plans it: kernel slot 0 with the blocks in
 * order, 1 in reverse (another warp of each split group comes last).  The
 * slots start as NaN, so a slot read before its warp wrote it shows. */
template <typename T, int MT, int NT>
static int te_stream_launch(const te_bufs *b, const int *outs, int act, int n, int in, int n_sms,
                            te_stream_seen *seen)
{
    size_t pairs = (size_t)(outs[0] + 1) / 2 + (size_t)outs[1];
    tc_stream_launch_plan l = tc_stream_for<MT, NT>(pairs, in, n_sms);
    tc_stream_args a = l.a;
    size_t bytes = l.part_bytes;
    long groups = l.groups;
    int rc = -1;
    a.part = (float *)rn_emu_alloc(bytes / sizeof(float), sizeof(float));
    a.count = (unsigned *)calloc((size_t)groups, sizeof(unsigned));
    if (!a.part || !a.count || a.warps < 1)
        goto cleanup;
    rc = 0;
    for (int k = 0; k < 2 && !rc; k++) {
        memset(a.part, 0xff, bytes);
        rn_emu_blocks_reversed = k;
        rc = rn_emu_launch(gemv_tc_stream_kernel<T, MT, NT>, dim3((unsigned)l.blocks),
                           dim3(32u * RN_CUDA_TC_STREAM_BLOCK_WARPS), 0, te_set(b, k, outs, act),
                           (const T *)b->x, n, in, a);
    }
    rn_emu_blocks_reversed = 0;
    seen->split = seen->counts_left = 0;
    for (long g = 0; g < groups; g++) {
        long long u0 = (long long)g * a.kb;
        seen->split += rn_tc_stream_warp_of(a.units, a.warps, u0) !=
                       rn_tc_stream_warp_of(a.units, a.warps, u0 + a.kb - 1);
        seen->counts_left += a.count[g];
    }
cleanup:
    free(a.part);
    free(a.count);
    return rc;
}

/* See check_gemv_emu.c: the stream-K kernel on n rows of in columns, the
 * plain job and the GLU job of te_set, planned for n_sms SMs.  exact:
 * small-integer values, each output held to its exact sum (*wrong);
 * else values with every mantissa bit, the plain job's outputs held
 * within 2^-16 of the sum of their products' magnitudes (fp32 sums of
 * up to a few thousand terms stay far inside).  Returns the outputs whose
 * bits differ between the blocks in order and in reverse, or -1 when the
 * launches fail; *unset: outputs NaN (never stored, or a slot read
 * unwritten). */
extern "C" long rn_emu_gemv_tc_stream_check(int t, int n, int in, const int *outs, int n_sms,
                                            int exact, uint32_t seed, long *unset, long *wrong,
                                            long *split, long *counts_left)
{
    te_bufs b;
    memset(&b, 0, sizeof b);
    long differ = -1;
    int act = RN_ACT_SWISH;
    te_stream_seen seen = {-1, -1};
    *unset = *wrong = -1;
    if (!te_fill(&b, t, n, in, outs, exact, &seed))
        goto cleanup;
    {
        int rc = -1;
        tc_stream_with_shape(n, [&](auto mt, auto nt) {
            constexpr int MT = decltype(mt)::value, NT = decltype(nt)::value;
            rc = t == RN_DT_BF16
                     ? te_stream_launch<__nv_bfloat16, MT, NT>(&b, outs, act, n, in, n_sms, &seen)
                     : te_stream_launch<__half, MT, NT>(&b, outs, act, n, in, n_sms, &seen);
        });
        if (rc)
            goto cleanup;
    }
    differ = *unset = *wrong = 0;
    for (int j = 0; j < 2; j++)
        for (int i = 0; i < n; i++)
            for (int r = 0; r < outs[j]; r++) {
                size_t at = (size_t)i * (size_t)outs[j] + (size_t)r;
                float fwd = b.y[0][j][at], rev = b.y[1][j][at];
                *unset += fwd != fwd || rev != rev;
                differ += memcmp(&fwd, &rev, sizeof fwd) != 0;
                if (exact) {
                    float want_v = te_expect(b.ref, b.xr, j, i, r, in, act);
                    *wrong += memcmp(&fwd, &want_v, sizeof fwd) != 0;
                } else if (j == 0) {
                    double mag = 0.0;
                    for (int k = 0; k < in; k++)
                        mag += fabs(b.ref[0][(size_t)r * (size_t)in + (size_t)k] *
                                    b.xr[(size_t)i * (size_t)in + (size_t)k]);
                    *wrong += fabs((double)fwd - te_dot(b.ref[0], b.xr, r, i, in)) > mag * 0x1p-16;
                }
            }
cleanup:
    *split = seen.split, *counts_left = seen.counts_left;
    te_free(&b);
    return differ;
}
