/* Two of kernels.cu's smaller kernels on the CPU through cuda_emu.h,
 * launched as kernels.cu launches them: greedy's pick (argmax_dev.cuh) and
 * prefill's inter-chunk scan (scan_dev.cuh); check_kernels_emu.c drives
 * them. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_emu.h"

#include "rn_math.h"
#include "cuda/argmax_dev.cuh"
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
