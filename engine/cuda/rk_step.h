/* Where a layer's states sit (rk_states), which the recurrent step's device
 * code (step_dev.cuh) shares with its launchers (kernels.cuh): a header of
 * its own, free of the CUDA runtime, so the unit tests' emulation of CUDA
 * can use it too. */
#ifndef RN_CUDA_RK_STEP_H
#define RN_CUDA_RK_STEP_H

#include <stddef.h>

/* Where one layer's states sit inside the slot pool (or a scratch copy). */
struct rk_states {
    void *base;         /* pool: fp32 values, or bf16 when bf16 */
    size_t slot_stride; /* values per slot */
    size_t layer_off;   /* values from a slot's start to this layer */
    size_t s_off;       /* values from the layer's start to s (torchscale), 0 if none */
    int bf16;           /* only rk_ret_step takes bf16 states (never with s) */
};

#endif
