/* suites.h -- every Check suite the unit runner aggregates. */
#ifndef RN_TEST_SUITES_H
#define RN_TEST_SUITES_H

#include <check.h>

Suite *math_suite(void);
Suite *safetensors_suite(void);
Suite *model_suite(void);
Suite *parity_suite(void);
Suite *forms_suite(void);
Suite *sampler_suite(void);
Suite *tokenizer_suite(void);
Suite *cuda_plan_suite(void);
Suite *state_blob_suite(void);
Suite *pool_suite(void);
Suite *packed_suite(void);
Suite *state_bf16_suite(void);
Suite *jw_suite(void);
Suite *synthetic_suite(void);
Suite *ret_emu_suite(void);
Suite *norm_emu_suite(void);
Suite *gemv_emu_suite(void);
Suite *step_emu_suite(void);
Suite *top_emu_suite(void);
Suite *emu_runtime_suite(void);
Suite *kernels_emu_suite(void);
Suite *cudart_emu_suite(void); /* CUDA_EMU=1 builds only */

#endif
