/* The sampling reduction of engine/cuda/top_dev.cuh on the CPU through
 * cuda_emu.h: top_kernel, one block a row, launched as kernels.cu's
 * rk_top_rows launches it; check_top_emu.c compares what it gives with the
 * host's reduction. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_emu.h"

extern "C" {
#include "sampler.h"
}
#include "cuda/top_dev.cuh"

/* rows x V logits at temps reduced into out (rows), one block a row; 0,
 * or -1 (out of memory, a launch refused). */
extern "C" int rn_emu_top_rows(const float *logits, int rows, int V, const float *temps,
                               rn_row_top *out)
{
    size_t n = (size_t)rows * (size_t)V;
    float *l = (float *)rn_emu_copy(logits, n, sizeof(float));
    float *t = (float *)rn_emu_copy(temps, (size_t)rows, sizeof(float));
    rn_row_top *o = (rn_row_top *)rn_emu_alloc((size_t)rows, sizeof(rn_row_top));
    int rc = -1;
    if (!l || !t || !o)
        goto cleanup;
    memset(o, 0xff, sizeof(rn_row_top) * (size_t)rows); /* an unwritten field shows */
    rc = rn_emu_launch(top_kernel, dim3((unsigned)rows), dim3(TOP_THREADS), 0, o, (const float *)l,
                       (const float *)t, V);
    if (rc == 0)
        memcpy(out, o, sizeof(rn_row_top) * (size_t)rows);
cleanup:
    free(l);
    free(t);
    free(o);
    return rc;
}
