/* The norms' block-wide arithmetic, shared by the norm kernels, the
 * recurrent step's group norm and the folded GEMV's norm tail (kernels.cu).
 *
 * Included by kernels.cu after the CUDA headers, rn_math.h and the
 * dependent-launch helpers, and by the unit tests' emulation of CUDA
 * (tests/unit/cuda_emu.h, RN_CUDA_EMU), which runs norm_tail_rows -- its
 * ticket, its fences and its block reductions -- on the CPU in every
 * build (tests/unit/norm_emu.cc). */
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

/* The tail of a launch whose blocks each wrote part of NB rows of d values
 * at x (row-major): called by every thread of every block after its
 * stores, it has each block take a ticket from *count; the last of the
 * grid, which then sees all their stores (fences, then loads through the
 * L2), normalises the rows into y (fp32) as norm_kernel would with this
 * block's threads (the same operations per value; the sums in the order of
 * this many threads, a multiple of 32, so other bits than a norm kernel's)
 * and sets *count back to 0 for the next launch.  The rows' statistics
 * take one pass, as norm_kernel's do. */
template <int NB>
__device__ static void norm_tail_rows(const float *x, int d, float *y, const float *w,
                                      const float *b, float eps, int layer_kind, unsigned *count)
{
    __shared__ int last;
    __shared__ double sh[64];
    int tid = (int)threadIdx.x, nthr = (int)blockDim.x;
    /* the ticket only once the launch before has ended (a block with no
     * rows skips the GEMV's own wait): that launch's last block resets it */
    pdl_wait();
    __threadfence(); /* this block's stores, before its ticket */
    __syncthreads();
    if (tid == 0) {
        last = atomicAdd(count, 1u) == gridDim.x - 1;
        if (last)
            *count = 0; /* for the next launch, which follows this one's end */
    }
    __syncthreads();
    if (!last)
        return;
    __threadfence();
    for (int bi = 0; bi < NB; bi++) {
        const float *xr = x + (size_t)bi * (size_t)d;
        double s = 0.0, ss = 0.0;
        for (int k = tid; k < d; k += nthr)
            sum2_add(s, ss, __ldcg(xr + k));
        double mu;
        float r;
        norm_stats(s, ss, sh, d, layer_kind, eps, mu, r, tid, nthr);
        for (int k = tid; k < d; k += nthr)
            y[(size_t)bi * (size_t)d + (size_t)k] =
                norm_value(__ldcg(xr + k), mu, r, w, b, k, NULL, 0);
        __syncthreads(); /* sh: every thread has read this row's totals */
    }
}

#endif
