/*
 * main.c -- runs every CPU unit suite in one binary (forked per test, so a
 * crash fails one test).  CK_RUN_SUITE=parity runs one suite.
 */
#include <stdlib.h>

#include "suites.h"

int main(void)
{
    SRunner *sr = srunner_create(math_suite());
    srunner_add_suite(sr, safetensors_suite());
    srunner_add_suite(sr, model_suite());
    srunner_add_suite(sr, parity_suite());
    srunner_add_suite(sr, forms_suite());
    srunner_add_suite(sr, sampler_suite());
    srunner_add_suite(sr, tokenizer_suite());
    srunner_add_suite(sr, cuda_plan_suite());
    srunner_add_suite(sr, state_blob_suite());
    srunner_add_suite(sr, pool_suite());
    srunner_add_suite(sr, packed_suite());
    srunner_add_suite(sr, state_bf16_suite());
    srunner_add_suite(sr, jw_suite());
    srunner_add_suite(sr, synthetic_suite());
    srunner_add_suite(sr, ret_emu_suite());
    srunner_add_suite(sr, norm_emu_suite());
    srunner_add_suite(sr, gemv_emu_suite());
    srunner_add_suite(sr, step_emu_suite());
    srunner_add_suite(sr, top_emu_suite());
    srunner_add_suite(sr, emu_runtime_suite());
    srunner_add_suite(sr, kernels_emu_suite());
#ifdef RN_CUDA_EMULATED
    srunner_add_suite(sr, cudart_emu_suite()); /* the emulated build's runtime (tests/emu/) */
#endif
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
