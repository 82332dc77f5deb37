/* The CUDA runtime on the CPU (cuda_runtime.h says what it models). */
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <vector>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cuda_runtime.h"

/* ---------------------------------------------------------- errors */

struct emu_graph;

/* The last error any call of this thread returned (the most recent wins,
 * as the runtime's), for cudaGetLastError. */
static thread_local cudaError_t emu_last;

/* The captures this thread began (cudaStreamCaptureModeThreadLocal and
 * Global alike): while one is open, the calls that may synchronise or
 * allocate (emu_unsafe) are refused and end it, as on the device. */
static thread_local std::vector<emu_graph *> emu_open;

static void emu_invalidate_open(void);

/* e, recorded as the thread's last error when it is one; an error while
 * this thread captures invalidates its captures, as on the device. */
static cudaError_t emu_err(cudaError_t e)
{
    if (e != cudaSuccess) {
        emu_last = e;
        emu_invalidate_open();
    }
    return e;
}

cudaError_t cudaGetLastError(void)
{
    cudaError_t e = emu_last;
    emu_last = cudaSuccess;
    return e;
}

cudaError_t cudaPeekAtLastError(void)
{
    return emu_last;
}

/* A call that may synchronise with the device or allocate: refused while
 * this thread has a capture open (cudaErrorStreamCaptureUnsupported, the
 * capture invalidated), else cudaSuccess. */
static cudaError_t emu_unsafe(const char *what)
{
    if (emu_open.empty())
        return cudaSuccess;
    fprintf(stderr, "cuda emulation: %s while this thread captures a graph\n", what);
    return emu_err(cudaErrorStreamCaptureUnsupported);
}

/* ------------------------------------------------------------- memory */

/* Every live allocation: its size, and whether it is device memory (else
 * page-locked host memory). */
struct emu_alloc {
    size_t n;
    bool device;
};

static std::mutex emu_lock; /* the allocation and shared-memory tables */
static std::map<uintptr_t, emu_alloc> emu_allocs;
static size_t emu_device_bytes;

static size_t env_size(const char *name, size_t def)
{
    const char *v = getenv(name);
    char *end;
    unsigned long long n = v ? strtoull(v, &end, 10) : 0;
    return v && *v && !*end && n > 0 ? (size_t)n : def;
}

static size_t emu_memory(void)
{
    return env_size("RN_EMU_MEMORY", (size_t)8 << 30);
}

/* The allocation holding [p, p + n) and its kind: 1 device, 0 page-locked,
 * -1 none (pageable host memory, or a range that leaves its allocation). */
int rn_emu_kind(const void *p, size_t n)
{
    std::lock_guard<std::mutex> g(emu_lock);
    uintptr_t a = (uintptr_t)p;
    auto it = emu_allocs.upper_bound(a);
    if (it == emu_allocs.begin())
        return -1;
    --it;
    if (a - it->first > it->second.n || n > it->second.n - (a - it->first))
        return -1;
    return it->second.device ? 1 : 0;
}

static cudaError_t emu_malloc(void **p, size_t n, bool device)
{
    *p = NULL;
    if (device) {
        std::lock_guard<std::mutex> g(emu_lock);
        if (n > emu_memory() - emu_device_bytes)
            return cudaErrorMemoryAllocation;
    }
    /* any size on 256 bytes, as cudaMalloc places it: AddressSanitizer then
     * sees a read one byte past the size asked for */
    if (posix_memalign(p, 256, n ? n : 1) != 0) {
        *p = NULL;
        return cudaErrorMemoryAllocation;
    }
    std::lock_guard<std::mutex> g(emu_lock);
    emu_allocs[(uintptr_t)*p] = emu_alloc{n, device};
    if (device)
        emu_device_bytes += n;
    return cudaSuccess;
}

static cudaError_t emu_free(void *p, bool device)
{
    if (!p)
        return cudaSuccess;
    {
        std::lock_guard<std::mutex> g(emu_lock);
        auto it = emu_allocs.find((uintptr_t)p);
        if (it == emu_allocs.end() || it->second.device != device)
            return cudaErrorInvalidValue;
        if (device)
            emu_device_bytes -= it->second.n;
        emu_allocs.erase(it);
    }
    free(p);
    return cudaSuccess;
}

cudaError_t cudaMalloc(void **p, size_t n)
{
    cudaError_t e = emu_unsafe("cudaMalloc");
    return emu_err(e != cudaSuccess ? e : emu_malloc(p, n, true));
}

cudaError_t cudaFree(void *p)
{
    cudaError_t e = emu_unsafe("cudaFree");
    return emu_err(e != cudaSuccess ? e : emu_free(p, true));
}

cudaError_t cudaMallocHost(void **p, size_t n)
{
    cudaError_t e = emu_unsafe("cudaMallocHost");
    return emu_err(e != cudaSuccess ? e : emu_malloc(p, n, false));
}

cudaError_t cudaFreeHost(void *p)
{
    cudaError_t e = emu_unsafe("cudaFreeHost");
    return emu_err(e != cudaSuccess ? e : emu_free(p, false));
}

cudaError_t cudaMemGetInfo(size_t *free_b, size_t *total_b)
{
    std::lock_guard<std::mutex> g(emu_lock);
    *total_b = emu_memory();
    *free_b = *total_b - emu_device_bytes;
    return cudaSuccess;
}

const char *cudaGetErrorString(cudaError_t e)
{
    switch (e) {
    case cudaSuccess:
        return "no error";
    case cudaErrorInvalidValue:
        return "invalid argument";
    case cudaErrorMemoryAllocation:
        return "out of memory";
    case cudaErrorInvalidConfiguration:
        return "invalid configuration argument";
    case cudaErrorNoDevice:
        return "no CUDA-capable device is detected";
    case cudaErrorIllegalAddress:
        return "an illegal memory access was encountered";
    case cudaErrorStreamCaptureUnsupported:
        return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureMerge:
        return "operation would have resulted in a merge of two independent captures";
    case cudaErrorStreamCaptureUnjoined:
        return "capture was not joined";
    case cudaErrorStreamCaptureInvalidated:
        return "operation failed due to a previous error during capture";
    default:
        return "unknown error";
    }
}

/* ----------------------------------------------------------- device */

cudaError_t cudaGetDeviceCount(int *n)
{
    *n = 1;
    return cudaSuccess;
}

cudaError_t cudaGetDevice(int *dev)
{
    *dev = 0;
    return cudaSuccess;
}

cudaError_t cudaSetDevice(int dev)
{
    return dev == 0 ? cudaSuccess : cudaErrorInvalidValue;
}

/* An H100's shared memory: a block's without opting in, with, and an SM's. */
static const size_t EMU_SMEM_DEFAULT = 48u << 10, EMU_SMEM_OPTIN = 232448, EMU_SMEM_PER_SM = 233472;

static int emu_sms(void)
{
    return (int)env_size("RN_EMU_SMS", 132);
}

cudaError_t cudaDeviceGetAttribute(int *v, cudaDeviceAttr a, int dev)
{
    if (dev != 0)
        return cudaErrorInvalidValue;
    switch (a) {
    case cudaDevAttrMultiProcessorCount:
        *v = emu_sms();
        return cudaSuccess;
    case cudaDevAttrComputeCapabilityMajor:
        *v = 9;
        return cudaSuccess;
    case cudaDevAttrComputeCapabilityMinor:
        *v = 0;
        return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerMultiprocessor:
        *v = (int)EMU_SMEM_PER_SM;
        return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin:
        *v = (int)EMU_SMEM_OPTIN;
        return cudaSuccess;
    }
    return cudaErrorInvalidValue;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int dev)
{
    if (dev != 0)
        return cudaErrorInvalidValue;
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "CUDA emulation on the CPU");
    p->totalGlobalMem = emu_memory();
    p->multiProcessorCount = emu_sms();
    p->major = 9;
    p->sharedMemPerBlockOptin = EMU_SMEM_OPTIN;
    p->sharedMemPerMultiprocessor = EMU_SMEM_PER_SM;
    p->l2CacheSize = 50 << 20;
    return cudaSuccess;
}

cudaError_t cudaFuncGetAttributes(cudaFuncAttributes *a, const void *k)
{
    if (!k)
        return cudaErrorInvalidValue;
    memset(a, 0, sizeof *a);
    a->ptxVersion = a->binaryVersion = 90;
    a->maxThreadsPerBlock = 1024;
    return cudaSuccess;
}

cudaError_t cudaProfilerStart(void)
{
    return cudaSuccess;
}

cudaError_t cudaProfilerStop(void)
{
    return cudaSuccess;
}

/* ------------------------------------------------ streams and graphs */

/* One recorded operation. */
struct emu_op {
    emu_op_fn fn;
    void *ctx;
    void (*drop)(void *);
};

/* A capture's operations, shared by its graph and every instance made from
 * it (the graph may be destroyed first, as on the device), released with
 * the last of them. */
struct emu_ops {
    std::vector<emu_op> ops;
    ~emu_ops()
    {
        for (emu_op &op : ops)
            op.drop(op.ctx);
    }
};

struct emu_graph {
    std::shared_ptr<emu_ops> ops;
    bool failed; /* an operation failed to record: the capture is invalidated */
};

struct emu_graph_exec {
    std::shared_ptr<emu_ops> ops;
};

struct emu_event;

struct emu_stream {
    emu_graph *capture; /* the graph this stream records into, or NULL */
    emu_stream *origin; /* the stream whose capture it began, or NULL */
    long since_record;  /* operations captured since its last event record */
    emu_event *last;    /* that record's event */
};

struct emu_event {
    emu_graph *capture; /* recorded while capturing into this graph */
    bool waited;        /* a stream waited on it since it was recorded */
    double t;           /* the host's clock when it ran, seconds */
};

/* The legacy default stream (0) never captures. */
static emu_stream emu_default;

static emu_stream *emu_st(cudaStream_t st)
{
    return st ? st : &emu_default;
}

static void emu_invalidate_open(void)
{
    for (emu_graph *g : emu_open)
        g->failed = true;
}

/* One operation at a time, whatever thread issues it: the kernels' fiber
 * emulation and the streams' state are the process's (recursive: a graph
 * launch captured into another graph replays from inside an operation). */
static std::recursive_mutex emu_run;

cudaError_t rn_emu_issue(cudaStream_t st, emu_op_fn fn, void *ctx, void (*drop)(void *))
{
    std::lock_guard<std::recursive_mutex> g(emu_run);
    emu_stream *s = emu_st(st);
    if (s->capture) {
        s->capture->ops->ops.push_back(emu_op{fn, ctx, drop});
        s->since_record++;
        return cudaSuccess;
    }
    cudaError_t e = fn(ctx);
    drop(ctx);
    return emu_err(e);
}

cudaError_t cudaStreamCreate(cudaStream_t *st)
{
    *st = new emu_stream{NULL, NULL, 0, NULL};
    return cudaSuccess;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *st, unsigned)
{
    return cudaStreamCreate(st);
}

cudaError_t cudaStreamDestroy(cudaStream_t st)
{
    if (!st || st->capture)
        return emu_err(cudaErrorInvalidResourceHandle);
    delete st;
    return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t)
{
    return emu_unsafe("cudaStreamSynchronize");
}

cudaError_t cudaDeviceSynchronize(void)
{
    return emu_unsafe("cudaDeviceSynchronize");
}

cudaError_t cudaStreamBeginCapture(cudaStream_t st, cudaStreamCaptureMode)
{
    if (!st || st->capture)
        return emu_err(cudaErrorInvalidValue);
    st->capture = new emu_graph{std::make_shared<emu_ops>(), false};
    st->origin = st;
    emu_open.push_back(st->capture);
    return cudaSuccess;
}

static std::vector<emu_stream *> emu_joined; /* streams that joined a capture */
static std::set<emu_event *> emu_events;     /* every live event */

/* Whether stream s, which joined a capture, was joined back into it: its
 * last operation an event record that a stream waited on after.  The
 * device refuses to end a capture otherwise (cudaErrorStreamCaptureUnjoined). */
static bool emu_joined_back(const emu_stream *s)
{
    return s->since_record == 0 && s->last && s->last->waited;
}

/* Graph's capture over: the streams that joined it leave it (true when one
 * was not joined back), its events stop naming it, this thread no longer
 * has it open. */
static bool emu_capture_close(emu_graph *graph)
{
    bool unjoined = false;
    for (size_t i = 0; i < emu_joined.size();)
        if (emu_joined[i]->capture == graph) {
            unjoined |= !emu_joined_back(emu_joined[i]);
            emu_joined[i]->capture = NULL;
            emu_joined.erase(emu_joined.begin() + (long)i);
        } else
            i++;
    for (emu_event *ev : emu_events)
        if (ev->capture == graph)
            ev->capture = NULL;
    for (size_t i = 0; i < emu_open.size(); i++)
        if (emu_open[i] == graph) {
            emu_open.erase(emu_open.begin() + (long)i);
            break;
        }
    return unjoined;
}

/* Ends st's capture: *g the graph (the caller's, for cudaGraphDestroy), or
 * NULL and an error where the capture was invalidated or a forked stream
 * was not joined back. */
cudaError_t cudaStreamEndCapture(cudaStream_t st, cudaGraph_t *g)
{
    *g = NULL;
    if (!st || !st->capture || st->origin != st)
        return emu_err(cudaErrorInvalidValue);
    emu_graph *graph = st->capture;
    st->capture = NULL;
    st->origin = NULL;
    bool unjoined = emu_capture_close(graph);
    if (unjoined)
        fprintf(stderr, "cuda emulation: a capture ended with a forked stream not joined back\n");
    if (graph->failed || unjoined) {
        cudaGraphDestroy(graph);
        return emu_err(unjoined ? cudaErrorStreamCaptureUnjoined
                                : cudaErrorStreamCaptureInvalidated);
    }
    *g = graph;
    return cudaSuccess;
}

cudaError_t cudaStreamIsCapturing(cudaStream_t st, cudaStreamCaptureStatus *s)
{
    emu_graph *g = emu_st(st)->capture;
    *s = !g          ? cudaStreamCaptureStatusNone
         : g->failed ? cudaStreamCaptureStatusInvalidated
                     : cudaStreamCaptureStatusActive;
    return cudaSuccess;
}

static double emu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

cudaError_t cudaEventCreate(cudaEvent_t *ev)
{
    *ev = new emu_event{NULL, false, 0.0};
    emu_events.insert(*ev);
    return cudaSuccess;
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *ev, unsigned)
{
    return cudaEventCreate(ev);
}

cudaError_t cudaEventDestroy(cudaEvent_t ev)
{
    emu_events.erase(ev);
    delete ev;
    return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t ev, cudaStream_t st)
{
    emu_stream *s = emu_st(st);
    ev->capture = s->capture;
    ev->waited = false;
    if (!s->capture) {
        ev->t = emu_now();
        return cudaSuccess;
    }
    cudaError_t e = rn_emu_issue_op(st, [ev]() {
        ev->t = emu_now();
        return cudaSuccess;
    });
    s->since_record = 0;
    s->last = ev;
    return e;
}

cudaError_t cudaStreamWaitEvent(cudaStream_t st, cudaEvent_t ev, unsigned)
{
    emu_stream *s = emu_st(st);
    if (ev->capture && s->capture && ev->capture != s->capture)
        return emu_err(cudaErrorStreamCaptureMerge); /* two captures would merge */
    ev->waited = true;
    if (ev->capture && !s->capture) {
        /* joins the capture the event was recorded in */
        s->capture = ev->capture;
        s->origin = NULL;
        s->since_record = 0;
        s->last = NULL;
        emu_joined.push_back(s);
    }
    return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t)
{
    return emu_unsafe("cudaEventSynchronize");
}

cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b)
{
    *ms = (float)((b->t - a->t) * 1e3);
    return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t *e, cudaGraph_t g, unsigned long long)
{
    if (!g)
        return emu_err(cudaErrorInvalidValue);
    *e = new emu_graph_exec{g->ops};
    return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t e, cudaStream_t st)
{
    std::lock_guard<std::recursive_mutex> g(emu_run);
    emu_stream *s = emu_st(st);
    if (s->capture) {
        std::shared_ptr<emu_ops> ops = e->ops; /* the instance may go before the graph */
        return rn_emu_issue_op(st, [ops]() {
            emu_graph_exec held{ops};
            return cudaGraphLaunch(&held, NULL);
        });
    }
    for (emu_op &op : e->ops->ops) {
        cudaError_t r = op.fn(op.ctx);
        if (r != cudaSuccess)
            return emu_err(r);
    }
    return cudaSuccess;
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t e)
{
    delete e;
    return cudaSuccess;
}

cudaError_t cudaGraphDestroy(cudaGraph_t g)
{
    delete g;
    return cudaSuccess;
}

/* ------------------------------------------------------------ launches */

/* Each kernel's allowance of dynamic shared memory (cudaFuncSetAttribute):
 * 48 KiB until it asks for more, at most the device's opt-in. */
static std::map<const void *, size_t> emu_smem_allowed;

cudaError_t rn_emu_func_smem(const void *k, int bytes)
{
    if (!k || bytes < 0 || (size_t)bytes > EMU_SMEM_OPTIN)
        return emu_err(cudaErrorInvalidValue);
    std::lock_guard<std::mutex> g(emu_lock);
    emu_smem_allowed[k] = (size_t)bytes;
    return cudaSuccess;
}

cudaError_t rn_emu_launch_check(const void *k, dim3 grid, dim3 block, size_t smem)
{
    size_t allowed = EMU_SMEM_DEFAULT;
    {
        std::lock_guard<std::mutex> g(emu_lock);
        auto it = emu_smem_allowed.find(k);
        if (it != emu_smem_allowed.end() && it->second > allowed)
            allowed = it->second;
    }
    unsigned threads = block.x * block.y * block.z;
    if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65535 || grid.z > 65535 ||
        threads == 0 || threads > 1024 || block.z > 64) {
        fprintf(stderr, "cuda emulation: a launch of (%u,%u,%u) blocks of (%u,%u,%u) threads\n",
                grid.x, grid.y, grid.z, block.x, block.y, block.z);
        return emu_err(cudaErrorInvalidConfiguration);
    }
    if (smem > allowed) {
        fprintf(stderr,
                "cuda emulation: a launch asks %zu bytes of dynamic shared memory, %zu allowed\n",
                smem, allowed);
        return emu_err(cudaErrorInvalidValue);
    }
    return cudaSuccess;
}

/* ------------------------------------------------------------- copies */

/* Whether [p, p + n) may be the copy's side of that direction: device
 * memory where the kind names the device, host memory (page-locked or
 * not) where it names the host. */
static bool emu_side_ok(const void *p, size_t n, bool device)
{
    int k = rn_emu_kind(p, n);
    return device ? k == 1 : k != 1;
}

static cudaError_t emu_copy_check(void *dst, const void *src, size_t n, cudaMemcpyKind k)
{
    if (n == 0)
        return cudaSuccess;
    bool ok;
    switch (k) {
    case cudaMemcpyHostToDevice:
        ok = emu_side_ok(dst, n, true) && emu_side_ok(src, n, false);
        break;
    case cudaMemcpyDeviceToHost:
        ok = emu_side_ok(dst, n, false) && emu_side_ok(src, n, true);
        break;
    case cudaMemcpyDeviceToDevice:
        ok = emu_side_ok(dst, n, true) && emu_side_ok(src, n, true);
        break;
    default:
        ok = true;
    }
    if (!ok)
        fprintf(stderr,
                "cuda emulation: a copy of %zu bytes (kind %d) from %p to %p leaves its "
                "memory\n",
                n, (int)k, src, dst);
    return ok ? cudaSuccess : cudaErrorInvalidValue;
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, cudaMemcpyKind k)
{
    cudaError_t e = emu_unsafe("cudaMemcpy");
    if (e == cudaSuccess)
        e = emu_copy_check(dst, src, n, k);
    if (e == cudaSuccess && n)
        memmove(dst, src, n);
    return emu_err(e);
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind k, cudaStream_t st)
{
    cudaError_t e = emu_copy_check(dst, src, n, k);
    if (e != cudaSuccess)
        return emu_err(e);
    /* a captured copy from or to the host must use page-locked memory: the
     * graph replays it later, from wherever that memory then is */
    emu_stream *s = emu_st(st);
    if (s->capture && n &&
        ((k == cudaMemcpyHostToDevice && rn_emu_kind(src, n) != 0) ||
         (k == cudaMemcpyDeviceToHost && rn_emu_kind(dst, n) != 0))) {
        fprintf(stderr, "cuda emulation: a captured copy uses pageable host memory\n");
        s->capture->failed = true;
        return emu_err(cudaErrorStreamCaptureUnsupported);
    }
    return rn_emu_issue_op(st, [=]() {
        if (n)
            memmove(dst, src, n);
        return cudaSuccess;
    });
}

cudaError_t cudaMemset(void *p, int v, size_t n)
{
    cudaError_t e = emu_unsafe("cudaMemset");
    if (e != cudaSuccess)
        return e;
    if (n && rn_emu_kind(p, n) != 1)
        return emu_err(cudaErrorInvalidValue);
    memset(p, v, n);
    return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t st)
{
    if (n && rn_emu_kind(p, n) != 1)
        return emu_err(cudaErrorInvalidValue);
    return rn_emu_issue_op(st, [=]() {
        memset(p, v, n);
        return cudaSuccess;
    });
}
