/* The sampling reduction of engine/cuda/top_dev.cuh on the CPU through
 * cuda_emu.h: top_kernel (one block a row), or top_slice_kernel and
 * top_merge_kernel (each row in slices, then merged), launched as
 * kernels.cu's rk_top_rows launches them; check_top_emu.c compares what
 * they give with the host's reduction. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_emu.h"

extern "C" {
#include "sampler.h"
}
#include "cuda/top_dev.cuh"

/* rows x V logits at temps reduced into out (rows), in slices slices where
 * slices > 1; 0, or -1 (out of memory, a launch refused, or slices
 * narrower than the candidates, where rk_top_rows would take one block a
 * row instead). */
extern "C" int rn_emu_top_rows(const float *logits, int rows, int V, const float *temps, int slices,
                               rn_row_top *out)
{
    size_t n = (size_t)rows * (size_t)V;
    float *l = (float *)rn_emu_alloc(n, sizeof(float));
    float *t = (float *)rn_emu_alloc((size_t)rows, sizeof(float));
    rn_row_top *o = (rn_row_top *)rn_emu_alloc((size_t)rows, sizeof(rn_row_top));
    top_part *parts =
        slices > 1 ? (top_part *)rn_emu_alloc((size_t)(rows * slices), sizeof(top_part)) : NULL;
    int rc = -1;
    if (!l || !t || !o || (slices > 1 && !parts) || slices > TOP_SLICES_MAX ||
        (slices > 1 && V / slices < RN_TOP_CANDIDATES))
        goto cleanup;
    memcpy(l, logits, sizeof(float) * n);
    memcpy(t, temps, sizeof(float) * (size_t)rows);
    memset(o, 0xff, sizeof(rn_row_top) * (size_t)rows); /* an unwritten field shows */
    if (slices > 1) {
        memset(parts, 0xff, sizeof(top_part) * (size_t)(rows * slices));
        rc = rn_emu_launch(top_slice_kernel, dim3((unsigned)slices, (unsigned)rows),
                           dim3(TOP_THREADS), 0, parts, (const float *)l, (const float *)t, V,
                           slices);
        if (rc == 0)
            rc = rn_emu_launch(top_merge_kernel, dim3((unsigned)rows), dim3(TOP_THREADS), 0, o,
                               (const top_part *)parts, (const float *)t, slices);
    } else {
        rc = rn_emu_launch(top_kernel, dim3((unsigned)rows), dim3(TOP_THREADS), 0, o,
                           (const float *)l, (const float *)t, V);
    }
    if (rc == 0)
        memcpy(out, o, sizeof(rn_row_top) * (size_t)rows);
cleanup:
    free(l);
    free(t);
    free(o);
    free(parts);
    return rc;
}
