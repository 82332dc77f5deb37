/* The norms' block-wide arithmetic, shared by the norm kernels
 * (kernels.cu).
 *
 * Included by kernels.cu after the CUDA headers and rn_math.h, and by the
 * unit tests' emulation of CUDA (tests/unit/cuda_emu.h, RN_CUDA_EMU),
 * which runs a row's statistics and normalised values -- the block
 * reductions, their shuffles and barriers -- on the CPU in every build
 * (tests/unit/norm_emu.cc). */
#ifndef RN_CUDA_NORM_DEV_CUH
#define RN_CUDA_NORM_DEV_CUH

/* Sums a and b over the first nthr threads of the block (a multiple of 32,
 * tid the thread's linear index) in double (the CPU backend's norms
 * accumulate in double too); every thread gets both totals.  Every thread
 * of the block calls it (a barrier), those past nthr with zeros.  Called
 * once per kernel: sh (64 doubles) is not reused afterwards. */
__device__ static void block_sum2(double &a, double &b, double *sh, int tid, int nthr)
{
    for (int o = 16; o > 0; o >>= 1) {
        a += __shfl_xor_sync(0xffffffffu, a, o);
        b += __shfl_xor_sync(0xffffffffu, b, o);
    }
    int warp = tid / 32, lane = tid % 32;
    if (lane == 0 && warp < 32)
        sh[warp] = a, sh[32 + warp] = b;
    __syncthreads();
    a = 0.0, b = 0.0;
    for (int w = 0; w < nthr / 32; w++)
        a += sh[w], b += sh[32 + w];
}

/* v into a running sum s and sum of squares ss, in double (the CPU
 * backend's norms accumulate in double too). */
__device__ static inline void sum2_add(double &s, double &ss, float v)
{
    double t = v;
    s += t;
    ss += t * t;
}

/* The mean (LayerNorm; 0 for RMSNorm) and the factor of a row of d values
 * from each thread's share of its sum s and sum of squares ss (block-wide:
 * every thread calls it, once per kernel; sh, tid, nthr as block_sum2's). */
__device__ static inline void norm_stats(double s, double ss, double *sh, int d, int layer_kind,
                                         float eps, double &mu, float &r, int tid, int nthr)
{
    block_sum2(s, ss, sh, tid, nthr);
    mu = layer_kind ? s / d : 0.0;
    double dev = layer_kind ? fmax(ss - s * mu, 0.0) : ss;
    r = rn_norm_factor(dev, d, eps);
}

/* Value k of a row normalised: (x - mu) r, times w[k], plus b[k], times
 * act(g) when gated (g: the gate's value at k). */
__device__ static inline float norm_value(float x, double mu, float r, const float *w,
                                          const float *b, int k, const float *g, int act)
{
    float v = (float)((double)x - mu) * r;
    v = w ? v * w[k] : v;
    v = b ? v + b[k] : v;
    return g ? v * rn_act_apply(act, *g) : v;
}

/* The mean and factor (norm_stats) of the row of d values at xr, each
 * thread of the block summing its strided share (block-wide: every thread
 * calls it, once per kernel; sh as block_sum2's). */
__device__ static inline void norm_row_stats(const float *xr, int d, int layer_kind, float eps,
                                             double *sh, double &mu, float &r)
{
    double s = 0.0, ss = 0.0;
    for (int k = (int)threadIdx.x; k < d; k += (int)blockDim.x)
        sum2_add(s, ss, xr[k]);
    norm_stats(s, ss, sh, d, layer_kind, eps, mu, r, (int)threadIdx.x, (int)blockDim.x);
}

#endif
