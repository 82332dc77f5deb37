/* bf16 for the emulated build of the CUDA backend: cuda_emu.h's. */
#include "cuda_runtime.h"
