/*
 * backend_cuda.cu -- the CUDA backend's entry in the backend registry.
 *
 * The kernels (chunkwise retention, fused recurrent step, norms, rotary,
 * sampling) and the device state pool are not written yet.  Until they are,
 * probe() reports the device as unusable with a message that says so, so
 * --device auto falls back to the CPU backend and --device cuda fails at start
 * with that message instead of running anything half-done.
 */
#include <cuda_runtime.h>

#include <stdio.h>

extern "C" {
#include "../backend.h"
}

static int cuda_probe(rn_error *err)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0)
        return rn_error_set(err, RN_ENODEV, "no CUDA device (%s)",
                            e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
    return rn_error_set(err, RN_ENODEV,
                        "%d CUDA device(s) found, but the CUDA kernels are not part of this "
                        "version yet",
                        n);
}

static int cuda_init(void **ctx, const rn_model *m, const rn_engine_opts *o, rn_error *err)
{
    (void)m;
    (void)o;
    *ctx = NULL;
    return rn_error_set(err, RN_ENODEV, "the CUDA backend is not implemented in this version");
}

static void cuda_deinit(void *ctx)
{
    (void)ctx;
}

extern "C" const rn_backend_ops rn_cuda_backend = {
    "cuda", cuda_probe, cuda_init, cuda_deinit, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
};
