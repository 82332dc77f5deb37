/* kernels.cu's smaller kernels on the CPU through cuda_emu.h, launched as
 * kernels.cu launches them: greedy's pick (argmax_dev.cuh), prefill's
 * inter-chunk scan (scan_dev.cuh), the elementwise kernels (elem_dev.cuh)
 * and the chunkwise helpers (chunk_dev.cuh); check_kernels_emu.c drives
 * them and holds their results to the host's arithmetic.
 *
 * Each run_* below copies its operands into arrays placed as cudaMalloc
 * places them, with EMU_GUARD bytes of a known pattern past every array a
 * kernel writes, runs the kernel, and copies the results back: 0, -1 (out
 * of memory, a launch refused), or -2 when a kernel wrote past its
 * operands. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_emu.h"

#include "rn_math.h"
#include "cuda/argmax_dev.cuh"
#include "cuda/chunk_dev.cuh"
#include "cuda/elem_dev.cuh"
#include "cuda/scan_dev.cuh"

/* rows x V logits picked one block a row into out (rows); 0, or -1 (out of
 * memory, a launch refused). */
extern "C" int rn_emu_argmax_rows(const float *logits, int rows, int V, int32_t *out)
{
    size_t n = (size_t)rows * (size_t)V;
    float *l = (float *)rn_emu_copy(logits, n, sizeof(float));
    int32_t *o = (int32_t *)rn_emu_alloc((size_t)rows, sizeof(int32_t));
    int rc = -1;
    if (!l || !o)
        goto cleanup;
    memset(o, 0xff, sizeof(int32_t) * (size_t)rows); /* -1: a row left unpicked shows */
    rc = rn_emu_launch(argmax_kernel, dim3((unsigned)rows), dim3(ARGMAX_THREADS), 0, o,
                       (const float *)l, V);
    if (rc == 0)
        memcpy(out, o, sizeof(int32_t) * (size_t)rows);
cleanup:
    free(l);
    free(o);
    return rc;
}

/* scan_pieces_kernel over a layer state of H heads of per_head values
 * (Sl, updated in place), pieces x H per_head own parts U (replaced by the
 * entering states, or left as they are with Uh, which gets those states
 * in bf16: pieces x H per_head) and decays pw (H rows of P + 1 powers), on
 * a grid of `blocks` blocks of `threads` (fewer than the values, so the
 * grid's stride loop runs); 0 or -1. */
extern "C" int rn_emu_scan_pieces(float *Sl, float *U, uint16_t *Uh, const float *pw, int H, int P,
                                  int pieces, size_t per_head, unsigned blocks, unsigned threads)
{
    size_t hkv = (size_t)H * per_head, nu = (size_t)pieces * hkv;
    float *s = (float *)rn_emu_copy(Sl, hkv, 4), *u = (float *)rn_emu_copy(U, nu, 4);
    float *p = (float *)rn_emu_copy(pw, (size_t)H * (size_t)(P + 1), 4);
    __nv_bfloat16 *uh = Uh ? (__nv_bfloat16 *)rn_emu_alloc(nu, 2) : NULL;
    int rc = -1;
    if (!s || !u || !p || (Uh && !uh))
        goto cleanup;
    if (uh)
        memset(uh, 0xff, 2 * nu); /* NaN: an entering state left unwritten shows */
    rc = rn_emu_launch(scan_pieces_kernel, dim3(blocks), dim3(threads), 0, s, u, uh,
                       (const float *)p, P, pieces, hkv, per_head);
    if (rc == 0) {
        memcpy(Sl, s, 4 * hkv);
        memcpy(U, u, 4 * nu);
        if (uh)
            memcpy(Uh, uh, 2 * nu);
    }
cleanup:
    free(s), free(u), free(p), free(uh);
    return rc;
}

/* Bytes past each written array that no kernel may touch, and their value. */
#define EMU_GUARD 64
#define EMU_GUARD_BYTE 0xa5

/* An rn_emu_alloc'd copy of the n values of size bytes at src (NULL: left
 * as the guard pattern), EMU_GUARD bytes of the pattern after them; NULL
 * when out of memory.  free() releases it. */
static void *guarded(const void *src, size_t n, size_t size)
{
    unsigned char *a = (unsigned char *)rn_emu_alloc(1, n * size + EMU_GUARD);
    if (!a)
        return NULL;
    memset(a, EMU_GUARD_BYTE, n * size + EMU_GUARD);
    if (src)
        memcpy(a, src, n * size);
    return a;
}

/* Whether the guard after a guarded() array of n values of size is whole. */
static int guard_whole(const void *a, size_t n, size_t size)
{
    const unsigned char *g = (const unsigned char *)a + n * size;
    for (size_t i = 0; i < EMU_GUARD; i++)
        if (g[i] != EMU_GUARD_BYTE)
            return 0;
    return 1;
}

/* The launch's rc, or -2 when it succeeded but the guard after out (n
 * values of size) was written; on success out's values are copied to dst. */
static int take_back(int rc, void *dst, const void *out, size_t n, size_t size)
{
    if (rc != 0)
        return rc;
    if (!guard_whole(out, n, size))
        return -2;
    memcpy(dst, out, n * size);
    return 0;
}

/* Where a kernel writes its 16-bit results: into o (bf16 or fp16, t), or
 * nowhere (the fp32 output) when o is NULL. */
static rk_half half_to(void *o, int t)
{
    rk_half h = {o, t};
    return h;
}

/* embed_kernel as rk_embed launches it (a block a row, here of threads):
 * n rows of D values from the V x D table E of dtype t (es bytes a value)
 * for the tokens tok, times scale, into x. */
extern "C" int rn_emu_embed(float *x, const void *E, int t, size_t es, int V, const int32_t *tok,
                            int n, int D, float scale, unsigned threads)
{
    size_t nx = (size_t)n * (size_t)D;
    void *e = rn_emu_copy(E, (size_t)V * (size_t)D, es);
    int32_t *k = (int32_t *)rn_emu_copy(tok, (size_t)n, sizeof(int32_t));
    float *o = (float *)guarded(NULL, nx, sizeof(float));
    int rc = -1;
    if (e && k && o)
        rc = take_back(rn_emu_launch(embed_kernel, dim3((unsigned)n), dim3(threads), 0, o,
                                     (const void *)e, t, (const int32_t *)k, D, scale),
                       x, o, nx, sizeof(float));
    free(e), free(k), free(o);
    return rc;
}

/* scale_kernel over the n values of x, on blocks x threads. */
extern "C" int rn_emu_scale(float *x, size_t n, float scale, unsigned blocks, unsigned threads)
{
    float *o = (float *)guarded(x, n, sizeof(float));
    int rc = -1;
    if (o)
        rc = take_back(rn_emu_launch(scale_kernel, dim3(blocks), dim3(threads), 0, o, n, scale), x,
                       o, n, sizeof(float));
    free(o);
    return rc;
}

/* state_expand_kernel (to_f32 set: the n bf16 values of h into f) or
 * state_compress_kernel (the n fp32 values of f into h), on blocks x
 * threads. */
extern "C" int rn_emu_state_copy(float *f, uint16_t *h, size_t n, int to_f32, unsigned blocks,
                                 unsigned threads)
{
    float *fo = (float *)guarded(to_f32 ? NULL : f, n, sizeof(float));
    uint16_t *ho = (uint16_t *)guarded(to_f32 ? h : NULL, n, sizeof(uint16_t));
    int rc = -1;
    if (!fo || !ho)
        goto cleanup;
    if (to_f32)
        rc = take_back(rn_emu_launch(state_expand_kernel, dim3(blocks), dim3(threads), 0, fo,
                                     (const __nv_bfloat16 *)ho, n),
                       f, fo, n, sizeof(float));
    else
        rc = take_back(rn_emu_launch(state_compress_kernel, dim3(blocks), dim3(threads), 0,
                                     (__nv_bfloat16 *)ho, (const float *)fo, n),
                       h, ho, n, sizeof(uint16_t));
cleanup:
    free(fo), free(ho);
    return rc;
}

/* act_kernel over the n values of x, in place, or with h (t: RN_DT_BF16
 * or RN_DT_F16) rounded into h instead; on blocks x threads. */
extern "C" int rn_emu_act(float *x, uint16_t *h, int t, size_t n, int act, unsigned blocks,
                          unsigned threads)
{
    float *xo = (float *)guarded(x, n, sizeof(float));
    uint16_t *ho = h ? (uint16_t *)guarded(NULL, n, sizeof(uint16_t)) : NULL;
    int rc = -1;
    if (xo && (!h || ho))
        rc = rn_emu_launch(act_kernel, dim3(blocks), dim3(threads), 0, xo, n, act, half_to(ho, t));
    rc = take_back(rc, x, xo, n, sizeof(float));
    if (h)
        rc = take_back(rc, h, ho, n, sizeof(uint16_t));
    free(xo), free(ho);
    return rc;
}

/* glu_kernel (vec 0) or glu4_kernel (vec 1: n a multiple of 4) as rk_glu
 * launches them: up times act(gate), in place over the n values of up, or
 * with h rounded into h (dtype t) instead; on blocks x threads. */
extern "C" int rn_emu_glu(float *up, const float *gate, uint16_t *h, int t, size_t n, int act,
                          int vec, unsigned blocks, unsigned threads)
{
    float *uo = (float *)guarded(up, n, sizeof(float));
    float *g = (float *)rn_emu_copy(gate, n, sizeof(float));
    uint16_t *ho = h ? (uint16_t *)guarded(NULL, n, sizeof(uint16_t)) : NULL;
    int rc = -1;
    if (uo && g && (!h || ho))
        rc = vec ? rn_emu_launch(glu4_kernel, dim3(blocks), dim3(threads), 0, uo, (const float *)g,
                                 n / 4, act, half_to(ho, t))
                 : rn_emu_launch(glu_kernel, dim3(blocks), dim3(threads), 0, uo, (const float *)g,
                                 n, act, half_to(ho, t));
    rc = take_back(rc, up, uo, n, sizeof(float));
    if (h)
        rc = take_back(rc, h, ho, n, sizeof(uint16_t));
    free(uo), free(g), free(ho);
    return rc;
}

/* glu_halves_kernel as rk_glu_halves launches it: the n 16-bit values
 * (dtype t) of up times act(gate) rounded into out, one value a thread
 * (one) or four; on blocks x threads. */
extern "C" int rn_emu_glu_halves(uint16_t *out, const uint16_t *up, const uint16_t *gate, int t,
                                 size_t n, int act, int one, unsigned blocks, unsigned threads)
{
    uint16_t *u = (uint16_t *)rn_emu_copy(up, n, 2), *g = (uint16_t *)rn_emu_copy(gate, n, 2);
    uint16_t *o = (uint16_t *)guarded(NULL, n, 2);
    int rc = -1;
    if (u && g && o)
        rc = take_back(rn_emu_launch(glu_halves_kernel, dim3(blocks), dim3(threads), 0,
                                     half_to(o, t), (const void *)u, (const void *)g, n, act, one),
                       out, o, n, 2);
    free(u), free(g), free(o);
    return rc;
}

/* residual_kernel: x = alpha x + y over n values, on blocks x threads. */
extern "C" int rn_emu_residual(float *x, const float *y, size_t n, float alpha, unsigned blocks,
                               unsigned threads)
{
    float *xo = (float *)guarded(x, n, sizeof(float));
    float *yi = (float *)rn_emu_copy(y, n, sizeof(float));
    int rc = -1;
    if (xo && yi)
        rc = take_back(rn_emu_launch(residual_kernel, dim3(blocks), dim3(threads), 0, xo,
                                     (const float *)yi, n, alpha),
                       x, xo, n, sizeof(float));
    free(xo), free(yi);
    return rc;
}

/* add_bias_kernel: b (cols) added to each of the rows of y, on blocks x
 * threads. */
extern "C" int rn_emu_add_bias(float *y, const float *b, int rows, int cols, unsigned blocks,
                               unsigned threads)
{
    size_t n = (size_t)rows * (size_t)cols;
    float *yo = (float *)guarded(y, n, sizeof(float));
    float *bi = (float *)rn_emu_copy(b, (size_t)cols, sizeof(float));
    int rc = -1;
    if (yo && bi)
        rc = take_back(rn_emu_launch(add_bias_kernel, dim3(blocks), dim3(threads), 0, yo,
                                     (const float *)bi, rows, cols),
                       y, yo, n, sizeof(float));
    free(yo), free(bi);
    return rc;
}

/* decay_table_kernel: H rows of the powers g^0 .. g^C of each head's
 * log_gamma into pw, on blocks x threads. */
extern "C" int rn_emu_decay_table(float *pw, const double *log_gamma, int H, int C, unsigned blocks,
                                  unsigned threads)
{
    size_t n = (size_t)H * (size_t)(C + 1);
    float *o = (float *)guarded(NULL, n, sizeof(float));
    double *lg = (double *)rn_emu_copy(log_gamma, (size_t)H, sizeof(double));
    int rc = -1;
    if (o && lg)
        rc = take_back(rn_emu_launch(decay_table_kernel, dim3(blocks), dim3(threads), 0, o,
                                     (const double *)lg, H, C),
                       pw, o, n, sizeof(float));
    free(o), free(lg);
    return rc;
}

/* decay_mask_kernel (vec 0) or decay_mask4_kernel (vec 1: C a multiple of
 * 4) as rk_decay_mask launches them, a block of threads a row: count C x C
 * matrices of A (matrix b of head b % H) times the decay mask of pw's
 * powers. */
extern "C" int rn_emu_decay_mask(float *A, const float *pw, int count, int H, int C, int vec,
                                 unsigned threads)
{
    size_t n = (size_t)count * (size_t)C * (size_t)C;
    float *a = (float *)guarded(A, n, sizeof(float));
    float *p = (float *)rn_emu_copy(pw, (size_t)H * (size_t)(C + 1), sizeof(float));
    dim3 grid((unsigned)count * (unsigned)C);
    int rc = -1;
    if (a && p)
        rc = take_back(vec ? rn_emu_launch(decay_mask4_kernel, grid, dim3(threads), 0, a,
                                           (const float *)p, H, C)
                           : rn_emu_launch(decay_mask_kernel, grid, dim3(threads), 0, a,
                                           (const float *)p, H, C),
                       A, a, n, sizeof(float));
    free(a), free(p);
    return rc;
}

/* decay_state_kernel: a layer state of H heads of per_head values times
 * each head's g^C (pw: H rows of C + 1 powers), on blocks x threads. */
extern "C" int rn_emu_decay_state(float *Sl, const float *pw, int H, int C, size_t per_head,
                                  unsigned blocks, unsigned threads)
{
    size_t hkv = (size_t)H * per_head;
    float *s = (float *)guarded(Sl, hkv, sizeof(float));
    float *p = (float *)rn_emu_copy(pw, (size_t)H * (size_t)(C + 1), sizeof(float));
    int rc = -1;
    if (s && p)
        rc = take_back(rn_emu_launch(decay_state_kernel, dim3(blocks), dim3(threads), 0, s,
                                     (const float *)p, C, hkv, per_head),
                       Sl, s, hkv, sizeof(float));
    free(s), free(p);
    return rc;
}

/* ts_chunk_kernel as rk_ts_chunk launches it (a block of threads a head):
 * torchscale's running sums over a chunk of C rows from each head's s (H
 * values, updated) into sums (H x C), and the read-out o (C rows of H
 * heads of dv values) scaled by them. */
extern "C" int rn_emu_ts_chunk(float *o, float *s, float *sums, const float *pw, int H, int C,
                               int dv, unsigned threads)
{
    size_t no = (size_t)C * (size_t)H * (size_t)dv, ns = (size_t)H * (size_t)C;
    float *oo = (float *)guarded(o, no, sizeof(float)), *so = (float *)guarded(s, (size_t)H, 4);
    float *sumo = (float *)guarded(NULL, ns, sizeof(float));
    float *p = (float *)rn_emu_copy(pw, (size_t)H * (size_t)(C + 1), sizeof(float));
    int rc = -1;
    if (oo && so && sumo && p)
        rc = rn_emu_launch(ts_chunk_kernel, dim3((unsigned)H), dim3(threads), 0, oo, so,
                           (const float *)p, sumo, H, C, dv);
    rc = take_back(rc, o, oo, no, sizeof(float));
    rc = take_back(rc, s, so, (size_t)H, sizeof(float));
    rc = take_back(rc, sums, sumo, ns, sizeof(float));
    free(oo), free(so), free(sumo), free(p);
    return rc;
}
