/* The CUDA runtime on the CPU (cuda_runtime.h says what it models). */
#include <deque>
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
static cudaError_t emu_drain_all(void);

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

/* A failed operation's error: sticky, as after a device fault (every
 * later synchronisation, launch and cudaGetLastError returns it). */
static cudaError_t emu_sticky;

cudaError_t cudaGetLastError(void)
{
    cudaError_t e = emu_sticky ? emu_sticky : emu_last;
    emu_last = cudaSuccess;
    return e;
}

cudaError_t cudaPeekAtLastError(void)
{
    return emu_sticky ? emu_sticky : emu_last;
}

static long emu_launches, emu_fail_at; /* kernels run; the one to fail (0: none) */

bool rn_emu_launch_fails(void)
{
    static int from_env = 0;
    if (!from_env) {
        const char *v = getenv("RN_EMU_FAIL_LAUNCH");
        from_env = 1;
        if (v && atol(v) > 0)
            emu_fail_at = emu_launches + atol(v);
    }
    return ++emu_launches == emu_fail_at;
}

void rn_emu_fail_launch(long n)
{
    emu_fail_at = n > 0 ? emu_launches + n : 0;
}

void rn_emu_device_reset(void)
{
    emu_sticky = cudaSuccess;
    emu_last = cudaSuccess;
    emu_fail_at = 0;
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

/* Both frees wait for all the device's work first, as the runtime's do,
 * and free even after a fault (whose error they return): the device's
 * memory goes with its context. */
static cudaError_t emu_free_after_work(void *p, bool device, const char *what)
{
    cudaError_t e = emu_unsafe(what);
    if (e != cudaSuccess)
        return e;
    cudaError_t work = emu_drain_all(), freed = emu_free(p, device);
    return emu_err(work != cudaSuccess ? work : freed);
}

cudaError_t cudaFree(void *p)
{
    return emu_free_after_work(p, true, "cudaFree");
}

cudaError_t cudaMallocHost(void **p, size_t n)
{
    cudaError_t e = emu_unsafe("cudaMallocHost");
    return emu_err(e != cudaSuccess ? e : emu_malloc(p, n, false));
}

cudaError_t cudaFreeHost(void *p)
{
    return emu_free_after_work(p, false, "cudaFreeHost");
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

struct emu_queue;

/* A point in a stream's work: its first `ticket` operations. */
struct emu_point {
    std::shared_ptr<emu_queue> q;
    long ticket = 0;
};

/* An operation waiting to run, and the points of other streams it must
 * follow (an event it waits on; the legacy stream's implicit order). */
struct emu_pending {
    emu_op op;
    std::vector<emu_point> after;
};

/* A stream's work not yet run (deferred execution).  Held by the stream,
 * and by every event recorded and every wait issued on it, so a point in
 * it outlives the stream. */
struct emu_queue {
    std::deque<emu_pending> ops;
    long issued = 0, done = 0; /* operations issued to it, and run */
    ~emu_queue()
    {
        /* dropped, not run: a destroyed stream ran its own first, so only
         * the legacy stream's can be left here, at exit */
        for (emu_pending &p : ops)
            p.op.drop(p.op.ctx);
    }
};

struct emu_event;

struct emu_stream {
    emu_graph *capture = NULL; /* the graph this stream records into, or NULL */
    emu_stream *origin = NULL; /* the stream whose capture it began, or NULL */
    long since_record = 0;     /* operations captured since its last event record */
    emu_event *last = NULL;    /* that record's event */
    bool blocking = true;      /* ordered with the legacy stream (not cudaStreamNonBlocking) */
    std::shared_ptr<emu_queue> q = std::make_shared<emu_queue>();
};

struct emu_event {
    emu_graph *capture = NULL; /* recorded while capturing into this graph */
    bool waited = false;       /* a stream waited on it since it was recorded */
    double t = 0.0;            /* the host's clock when it ran, seconds */
    emu_point at;              /* its last record outside a capture */
};

/* The legacy default stream (0) never captures. */
static emu_stream emu_default;
static std::set<emu_stream *> emu_streams; /* every stream created and not destroyed */

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
 * emulation and the streams' state are the process's (recursive: a sync
 * runs operations that were issued under it). */
static std::recursive_mutex emu_run;

/* Whether operations wait in their stream until something needs them
 * (RN_EMU_DEFER, on unless 0) or run when issued. */
static bool emu_defer(void)
{
    static int on = -1;
    if (on < 0) {
        const char *v = getenv("RN_EMU_DEFER");
        on = !(v && strcmp(v, "0") == 0);
    }
    return on == 1;
}

/* Runs op and lets it go: its failure becomes the sticky error. */
static void emu_run_op(const emu_op &op)
{
    cudaError_t e = op.fn(op.ctx);
    op.drop(op.ctx);
    if (e != cudaSuccess && !emu_sticky)
        emu_sticky = e;
}

/* Runs q's operations until its first `ticket` have run, each after the
 * points it must follow and nothing else: the latest order a device may
 * choose, so work that a missing wait or synchronisation leaves unordered
 * has not happened yet when the host or another stream looks.  The sticky
 * error, which the first failure of any operation set. */
static cudaError_t emu_run_until(const emu_point &pt)
{
    emu_queue *q = pt.q.get();
    while (q && q->done < pt.ticket) {
        emu_pending p = std::move(q->ops.front());
        q->ops.pop_front();
        for (const emu_point &a : p.after)
            emu_run_until(a);
        emu_run_op(p.op);
        q->done++;
    }
    return emu_sticky;
}

/* The point at the end of s's work issued so far. */
static emu_point emu_end(const emu_stream *s)
{
    return emu_point{s->q, s->q->issued};
}

/* Every stream's work run (a device-wide synchronisation). */
static cudaError_t emu_drain_all(void)
{
    std::lock_guard<std::recursive_mutex> g(emu_run);
    emu_run_until(emu_end(&emu_default));
    for (emu_stream *s : emu_streams)
        emu_run_until(emu_end(s));
    return emu_sticky;
}

/* op queued on s after the points in `after`, and after what the legacy
 * stream's implicit order puts before it: an operation of the legacy
 * stream follows every blocking stream's work so far, and one of a
 * blocking stream the legacy stream's. */
static void emu_enqueue(emu_stream *s, emu_op op, std::vector<emu_point> after)
{
    if (s == &emu_default) {
        for (emu_stream *b : emu_streams)
            if (b->blocking)
                after.push_back(emu_end(b));
    } else if (s->blocking)
        after.push_back(emu_end(&emu_default));
    s->q->ops.push_back(emu_pending{op, std::move(after)});
    s->q->issued++;
}

cudaError_t rn_emu_issue(cudaStream_t st, emu_op_fn fn, void *ctx, void (*drop)(void *))
{
    std::lock_guard<std::recursive_mutex> g(emu_run);
    emu_stream *s = emu_st(st);
    if (s->capture) {
        s->capture->ops->ops.push_back(emu_op{fn, ctx, drop});
        s->since_record++;
        return cudaSuccess;
    }
    if (emu_sticky) {
        drop(ctx);
        return emu_err(emu_sticky);
    }
    if (emu_defer()) {
        emu_enqueue(s, emu_op{fn, ctx, drop}, {});
        return cudaSuccess;
    }
    emu_run_op(emu_op{fn, ctx, drop});
    return emu_err(emu_sticky);
}

/* The work st has been issued so far, run: what a call that returns only
 * once it is done does first. */
static cudaError_t emu_finish(cudaStream_t st)
{
    std::lock_guard<std::recursive_mutex> g(emu_run);
    return emu_err(emu_run_until(emu_end(emu_st(st))));
}

cudaError_t cudaStreamCreate(cudaStream_t *st)
{
    std::lock_guard<std::recursive_mutex> g(emu_run);
    *st = new emu_stream;
    emu_streams.insert(*st);
    return cudaSuccess;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *st, unsigned flags)
{
    cudaError_t e = cudaStreamCreate(st);
    if (e == cudaSuccess)
        (*st)->blocking = !(flags & cudaStreamNonBlocking);
    return e;
}

/* The stream's work still runs (the device finishes it), then it goes. */
cudaError_t cudaStreamDestroy(cudaStream_t st)
{
    if (!st || st->capture)
        return emu_err(cudaErrorInvalidResourceHandle);
    std::lock_guard<std::recursive_mutex> g(emu_run);
    cudaError_t e = emu_run_until(emu_end(st));
    emu_streams.erase(st);
    delete st;
    return emu_err(e);
}

cudaError_t cudaStreamSynchronize(cudaStream_t st)
{
    cudaError_t e = emu_unsafe("cudaStreamSynchronize");
    return e != cudaSuccess ? e : emu_finish(st);
}

cudaError_t cudaDeviceSynchronize(void)
{
    cudaError_t e = emu_unsafe("cudaDeviceSynchronize");
    return e != cudaSuccess ? e : emu_err(emu_drain_all());
}

cudaError_t cudaStreamBeginCapture(cudaStream_t st, cudaStreamCaptureMode)
{
    std::lock_guard<std::recursive_mutex> g(emu_run);
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
    std::lock_guard<std::recursive_mutex> held(emu_run);
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
    std::lock_guard<std::recursive_mutex> g(emu_run);
    *ev = new emu_event;
    emu_events.insert(*ev);
    return cudaSuccess;
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *ev, unsigned)
{
    return cudaEventCreate(ev);
}

cudaError_t cudaEventDestroy(cudaEvent_t ev)
{
    std::lock_guard<std::recursive_mutex> g(emu_run);
    emu_events.erase(ev);
    delete ev;
    return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t ev, cudaStream_t st)
{
    std::lock_guard<std::recursive_mutex> g(emu_run);
    emu_stream *s = emu_st(st);
    ev->capture = s->capture;
    ev->waited = false;
    cudaError_t e = rn_emu_issue_op(st, [ev]() {
        ev->t = emu_now();
        return cudaSuccess;
    });
    if (s->capture) {
        s->since_record = 0;
        s->last = ev;
    } else
        ev->at = emu_end(s);
    return e;
}

cudaError_t cudaStreamWaitEvent(cudaStream_t st, cudaEvent_t ev, unsigned)
{
    std::lock_guard<std::recursive_mutex> g(emu_run);
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
    } else if (!ev->capture && !s->capture && ev->at.q && emu_defer())
        emu_enqueue(s, emu_op{[](void *) { return cudaSuccess; }, NULL, [](void *) {}}, {ev->at});
    return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t ev)
{
    cudaError_t e = emu_unsafe("cudaEventSynchronize");
    if (e != cudaSuccess)
        return e;
    std::lock_guard<std::recursive_mutex> g(emu_run);
    return emu_err(emu_run_until(ev->at));
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

/* A graph's operations run in their recorded order, as one operation of
 * the stream it was launched into (or recorded into a capture as one). */
cudaError_t cudaGraphLaunch(cudaGraphExec_t e, cudaStream_t st)
{
    std::shared_ptr<emu_ops> ops = e->ops; /* the instance may go before the launch runs */
    return rn_emu_issue_op(st, [ops]() {
        for (emu_op &op : ops->ops) {
            cudaError_t r = op.fn(op.ctx);
            if (r != cudaSuccess)
                return r;
        }
        return cudaSuccess;
    });
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

/* A copy issued on st.  From pageable memory the source is read now (the
 * runtime stages it before returning); into pageable memory the call
 * returns once the copy has run, as the runtime's does.  A captured copy
 * from or to the host must use page-locked memory: the graph replays it
 * later, from wherever that memory then is. */
static cudaError_t emu_copy(void *dst, const void *src, size_t n, cudaMemcpyKind k, cudaStream_t st)
{
    cudaError_t e = emu_copy_check(dst, src, n, k);
    if (e != cudaSuccess || n == 0)
        return emu_err(e);
    emu_stream *s = emu_st(st);
    bool from_pageable = k == cudaMemcpyHostToDevice && rn_emu_kind(src, n) != 0;
    bool to_pageable = k == cudaMemcpyDeviceToHost && rn_emu_kind(dst, n) != 0;
    if (s->capture && (from_pageable || to_pageable)) {
        fprintf(stderr, "cuda emulation: a captured copy uses pageable host memory\n");
        s->capture->failed = true;
        return emu_err(cudaErrorStreamCaptureUnsupported);
    }
    if (from_pageable) {
        std::shared_ptr<std::vector<char>> staged =
            std::make_shared<std::vector<char>>((const char *)src, (const char *)src + n);
        return rn_emu_issue_op(st, [=]() {
            memcpy(dst, staged->data(), n);
            return cudaSuccess;
        });
    }
    e = rn_emu_issue_op(st, [=]() {
        memmove(dst, src, n);
        return cudaSuccess;
    });
    return e == cudaSuccess && to_pageable ? emu_finish(st) : e;
}

/* On the legacy stream, returning once the copy has run. */
cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, cudaMemcpyKind k)
{
    cudaError_t e = emu_unsafe("cudaMemcpy");
    if (e == cudaSuccess)
        e = emu_copy(dst, src, n, k, NULL);
    return e == cudaSuccess ? emu_finish(NULL) : e;
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind k, cudaStream_t st)
{
    return emu_copy(dst, src, n, k, st);
}

/* On the legacy stream; it may return before the memory is set. */
cudaError_t cudaMemset(void *p, int v, size_t n)
{
    cudaError_t e = emu_unsafe("cudaMemset");
    return e != cudaSuccess ? e : cudaMemsetAsync(p, v, n, NULL);
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
