/* The recurrent decode step of engine/cuda/step_dev.cuh run on the CPU
 * through the CUDA emulation (step_emu.cc) as check_step_emu.c drives it.
 * C and C++ alike. */
#ifndef RN_TESTS_STEP_EMU_H
#define RN_TESTS_STEP_EMU_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One step: n sequences of H heads (dk x dv states in slots n .. 1 of n + 1,
 * the second of two layers) and its launch shape: lanes x d_split threads a
 * block, W values a thread, as many column tiles as dv needs (as
 * rn_cuda_step_plan's grid_y), row_split row shares whose partial read-outs
 * go to parts of their own. */
typedef struct rn_emu_step_case {
    int n, H, dk, dv;
    int W, lanes, d_split, row_split;
    int bf16_state; /* bf16 states, else fp32 */
    int ts;         /* torchscale's running normaliser s */
    int early;      /* the first state rows read before the dependent-launch wait */
} rn_emu_step_case;

/* The larger errors, over 1 + |value|, of the launch's states (less a
 * bf16 step for bf16 states; 1 where a value outside the step's slots and
 * layer changed) and of its read-out (the sum of the row shares' parts; 1
 * where a part's row past the batch was written) against a
 * double-precision step from the same values; infinite for NaN. */
typedef struct rn_emu_step_result {
    double worst_state, worst_out;
} rn_emu_step_result;

/* Runs case c with seed; 0, or -1 (out of memory, a launch refused, a
 * shape the kernel does not take). */
int rn_emu_step_check(const rn_emu_step_case *c, uint32_t seed, rn_emu_step_result *r);

#ifdef __cplusplus
}
#endif

#endif
