/* The profiler's calls for the emulated build of the CUDA backend: no-ops
 * (cuda_runtime.h). */
#include "cuda_runtime.h"
