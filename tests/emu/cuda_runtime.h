/* The CUDA runtime on the CPU, for the emulated build of the CUDA backend
 * (`make check-cuda-emu`): engine/cuda's .cu files compiled as host C++ with this
 * directory first on the include path, their kernels run by the unit
 * tests' CUDA emulation (tests/unit/cuda_emu.h), their products by
 * cublas_emu.cc.
 *
 * What it is for: the backend's host code -- its plans, buffers, launch
 * shapes, copies, captured graphs, cuBLAS(Lt) calls -- and every kernel it
 * launches run together on any machine, against the CPU backend, so a
 * wrong pointer, stride, copy or graph shows without a GPU.  What it is
 * not: the device's timing, its memory ordering between kernels, its
 * tensor cores' order of sums, or its transcendental functions' rounding;
 * `make check-cuda` on a device stays the judge of those.
 *
 * The model (cudart_emu.cc):
 * - device memory is host memory from malloc (so AddressSanitizer sees a
 *   kernel or copy that leaves its allocation), page-locked memory too;
 *   every allocation is recorded, and a copy must lie inside allocations
 *   of the kinds its direction names;
 * - every operation waits in its stream until something needs it, and then
 *   runs after only what it must follow (RN_EMU_DEFER=0: it runs when
 *   issued): a synchronisation of its stream, an event recorded after it
 *   or the device; a free; a copy into pageable memory, which returns
 *   once it has run; another stream's wait on an event recorded after it.
 *   That is the latest order a device may choose, so a missing wait shows
 *   as a value not yet written or already overwritten.  The legacy
 *   stream (0) and the blocking streams are ordered with each other both
 *   ways, the non-blocking ones with nothing; a copy from pageable memory
 *   reads its source when issued (the runtime stages it);
 * - while its stream is being captured, an operation is recorded into the
 *   graph, and a stream that waits on an event recorded in a capture joins
 *   that capture, as on the device; a graph launch replays the recorded
 *   operations in their order, as one operation of its stream;
 * - while a thread has a capture open, its calls that may synchronise or
 *   allocate (cudaMemcpy, cudaMemset, cudaMalloc and cudaFree of either
 *   kind, the synchronisations) are refused and invalidate the capture, as
 *   on the device; so does any error, and the end of a capture with a
 *   stream that joined it not joined back (its last operation an event
 *   record the capture waited on); a wait that would merge two captures is
 *   refused;
 * - a launch is checked when it is issued: grid and block limits, and
 *   dynamic shared memory within the kernel's allowance (48 KiB, or what
 *   cudaFuncSetAttribute raised it to, at most the opt-in 227 KiB);
 * - every failing call sets the thread's last error (the most recent
 *   wins), for cudaGetLastError;
 * - one operation runs at a time, whatever thread issues it;
 * - events keep the host's clock when they run, for cudaEventElapsedTime;
 * - one device: compute capability 9.0, RN_EMU_SMS multiprocessors (132),
 *   an H100's shared memory, RN_EMU_MEMORY bytes (8 GiB). */
#ifndef RN_TESTS_EMU_CUDA_RUNTIME_H
#define RN_TESTS_EMU_CUDA_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#include <tuple>
#include <utility>

#include "cuda_emu.h"

typedef enum cudaError {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorNoDevice = 100,
    cudaErrorInvalidResourceHandle = 400,
    cudaErrorLaunchFailure = 719,
    cudaErrorStreamCaptureUnsupported = 900,
    cudaErrorStreamCaptureInvalidated = 901,
    cudaErrorStreamCaptureMerge = 902,
    cudaErrorStreamCaptureUnjoined = 904,
    cudaErrorIllegalAddress = 700,
} cudaError_t;

typedef enum cudaDataType_t {
    CUDA_R_32F = 0,
    CUDA_R_16F = 2,
    CUDA_R_16BF = 14,
} cudaDataType_t;

typedef struct emu_stream *cudaStream_t;
typedef struct emu_event *cudaEvent_t;
typedef struct emu_graph *cudaGraph_t;
typedef struct emu_graph_exec *cudaGraphExec_t;

enum cudaMemcpyKind {
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
    cudaMemcpyDefault = 4,
};

enum cudaDeviceAttr {
    cudaDevAttrMultiProcessorCount = 16,
    cudaDevAttrComputeCapabilityMajor = 75,
    cudaDevAttrComputeCapabilityMinor = 76,
    cudaDevAttrMaxSharedMemoryPerMultiprocessor = 81,
    cudaDevAttrMaxSharedMemoryPerBlockOptin = 97,
};

enum cudaFuncAttribute {
    cudaFuncAttributeMaxDynamicSharedMemorySize = 8,
};

enum cudaStreamCaptureStatus {
    cudaStreamCaptureStatusNone = 0,
    cudaStreamCaptureStatusActive = 1,
    cudaStreamCaptureStatusInvalidated = 2,
};

enum cudaStreamCaptureMode {
    cudaStreamCaptureModeGlobal = 0,
    cudaStreamCaptureModeThreadLocal = 1,
    cudaStreamCaptureModeRelaxed = 2,
};

#define cudaStreamNonBlocking 0x01
#define cudaEventDisableTiming 0x02

enum cudaLaunchAttributeID {
    cudaLaunchAttributeProgrammaticStreamSerialization = 5,
};

struct cudaLaunchAttributeValue {
    int programmaticStreamSerializationAllowed;
};

struct cudaLaunchAttribute {
    cudaLaunchAttributeID id;
    cudaLaunchAttributeValue val;
};

struct cudaLaunchConfig_t {
    dim3 gridDim;
    dim3 blockDim;
    size_t dynamicSmemBytes;
    cudaStream_t stream;
    cudaLaunchAttribute *attrs;
    unsigned int numAttrs;
};

struct cudaDeviceProp {
    char name[256];
    size_t totalGlobalMem;
    int multiProcessorCount;
    int major, minor;
    size_t sharedMemPerBlockOptin;
    size_t sharedMemPerMultiprocessor;
    int l2CacheSize;
    int memoryBusWidth;
    int clockRate, memoryClockRate;
};

struct cudaFuncAttributes {
    int ptxVersion, binaryVersion, numRegs, maxThreadsPerBlock;
    size_t sharedSizeBytes, localSizeBytes, maxDynamicSharedSizeBytes;
};

cudaError_t cudaGetDeviceCount(int *n);
cudaError_t cudaGetDevice(int *dev);
cudaError_t cudaSetDevice(int dev);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int dev);
cudaError_t cudaDeviceGetAttribute(int *v, cudaDeviceAttr a, int dev);
cudaError_t cudaDeviceSynchronize(void);
cudaError_t cudaGetLastError(void);
cudaError_t cudaPeekAtLastError(void);
const char *cudaGetErrorString(cudaError_t e);

cudaError_t cudaMalloc(void **p, size_t n);
cudaError_t cudaFree(void *p);
cudaError_t cudaMallocHost(void **p, size_t n);
cudaError_t cudaFreeHost(void *p);
/* the runtime's typed forms */
template <typename T> static inline cudaError_t cudaMalloc(T **p, size_t n)
{
    return cudaMalloc((void **)p, n);
}
template <typename T> static inline cudaError_t cudaMallocHost(T **p, size_t n)
{
    return cudaMallocHost((void **)p, n);
}
cudaError_t cudaMemGetInfo(size_t *free_b, size_t *total_b);
cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, cudaMemcpyKind k);
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind k,
                            cudaStream_t st = 0);
cudaError_t cudaMemset(void *p, int v, size_t n);
cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t st = 0);

cudaError_t cudaStreamCreate(cudaStream_t *st);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *st, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t st);
cudaError_t cudaStreamSynchronize(cudaStream_t st);
cudaError_t cudaStreamWaitEvent(cudaStream_t st, cudaEvent_t ev, unsigned flags = 0);
cudaError_t cudaStreamBeginCapture(cudaStream_t st, cudaStreamCaptureMode mode);
cudaError_t cudaStreamEndCapture(cudaStream_t st, cudaGraph_t *g);
cudaError_t cudaStreamIsCapturing(cudaStream_t st, cudaStreamCaptureStatus *s);

cudaError_t cudaEventCreate(cudaEvent_t *ev);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *ev, unsigned flags);
cudaError_t cudaEventDestroy(cudaEvent_t ev);
cudaError_t cudaEventRecord(cudaEvent_t ev, cudaStream_t st = 0);
cudaError_t cudaEventSynchronize(cudaEvent_t ev);
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b);

cudaError_t cudaGraphInstantiate(cudaGraphExec_t *e, cudaGraph_t g, unsigned long long flags = 0);
cudaError_t cudaGraphLaunch(cudaGraphExec_t e, cudaStream_t st);
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t e);
cudaError_t cudaGraphDestroy(cudaGraph_t g);

cudaError_t cudaProfilerStart(void);
cudaError_t cudaProfilerStop(void);

/* ------------------------------------------------- operations and launches */

/* Runs op now, or records it into the graph st is being captured into;
 * cudaSuccess, or the error the operation (or its recording) gave.  op
 * returns a cudaError_t. */
typedef cudaError_t (*emu_op_fn)(void *);
cudaError_t rn_emu_issue(cudaStream_t st, emu_op_fn fn, void *ctx, void (*drop)(void *));

/* The kind of memory [p, p + n) lies in: 1 device, 0 page-locked host, -1
 * neither (pageable, or leaving its allocation). */
int rn_emu_kind(const void *p, size_t n);

/* Kernel k's allowance of dynamic shared memory set to bytes (at most the
 * opt-in); cudaSuccess or cudaErrorInvalidValue. */
cudaError_t rn_emu_func_smem(const void *k, int bytes);

/* Whether kernel k may be launched so (grid and block limits, its dynamic
 * shared memory allowance); the error, recorded, if not. */
cudaError_t rn_emu_launch_check(const void *k, dim3 grid, dim3 block, size_t smem);

/* Whether the kernel about to run is to fail on the device
 * (rn_emu_fail_launch, or RN_EMU_FAIL_LAUNCH=N: the N-th kernel the
 * process runs, from 1, a graph's counted at every replay): it then runs
 * nothing and returns cudaErrorLaunchFailure, and that error is sticky, as
 * a device's: every later synchronisation, launch and cudaGetLastError
 * returns it until rn_emu_device_reset. */
bool rn_emu_launch_fails(void);
/* The n-th kernel to run from now on (1: the next) fails so. */
void rn_emu_fail_launch(long n);
/* The sticky error cleared and no launch set to fail (cudaDeviceReset's
 * part that the tests need). */
void rn_emu_device_reset(void);

template <typename F> static cudaError_t emu_op_call(void *f)
{
    return (*(F *)f)();
}
template <typename F> static void emu_op_drop(void *f)
{
    delete (F *)f;
}

/* op (a callable returning cudaError_t) issued on st: a heap copy of it is
 * run now and freed, or owned by the graph st is captured into and freed
 * with the last of that graph and its instances (rn_emu_issue). */
template <typename F> static cudaError_t rn_emu_issue_op(cudaStream_t st, F op)
{
    F *held = new F(op);
    return rn_emu_issue(st, emu_op_call<F>, held, emu_op_drop<F>);
}

/* A kernel launch: its arguments converted to the kernel's parameter types
 * now, as the device copies them at the launch. */
template <typename... P, typename... A>
static cudaError_t cudaLaunchKernelEx(const cudaLaunchConfig_t *cfg, void (*k)(P...), A &&...a)
{
    dim3 g = cfg->gridDim, b = cfg->blockDim;
    size_t smem = cfg->dynamicSmemBytes;
    cudaError_t bad = rn_emu_launch_check((const void *)k, g, b, smem);
    if (bad != cudaSuccess)
        return bad;
    auto op = [=, args = std::make_tuple((P)a...)]() -> cudaError_t {
        if (rn_emu_launch_fails())
            return cudaErrorLaunchFailure;
        int rc = std::apply([&](auto... v) { return rn_emu_launch(k, g, b, smem, v...); }, args);
        return rc == 0 ? cudaSuccess : cudaErrorLaunchFailure; /* out of host memory */
    };
    return rn_emu_issue_op(cfg->stream, op);
}

/* The function attributes: each kernel's dynamic shared memory allowance
 * (rn_emu_launch_check holds launches to it); every kernel is compiled for
 * 9.0 (cudaFuncGetAttributes: so dependent launch is taken, and pdl_enter
 * is the emulation's no-op). */
template <typename K> static cudaError_t cudaFuncSetAttribute(K k, cudaFuncAttribute a, int v)
{
    if (a != cudaFuncAttributeMaxDynamicSharedMemorySize)
        return cudaErrorInvalidValue;
    return rn_emu_func_smem((const void *)k, v);
}
cudaError_t cudaFuncGetAttributes(cudaFuncAttributes *a, const void *k);

/* One block an SM: the plans that read it only size grids by it. */
template <typename K>
static cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int *n, K, int threads, size_t)
{
    if (threads < 1 || threads > 1024)
        return cudaErrorInvalidValue;
    *n = 1;
    return cudaSuccess;
}

#endif
