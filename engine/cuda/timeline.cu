/*
 * timeline.cu -- rn_cuda_timeline_* (rn_cuda.h): when each kernel really
 * ran, as CUPTI's activity records give it, for `retnet bench-cuda
 * --timeline`.
 *
 * ncu replays kernels one at a time with the caches flushed, so its
 * durations leave out what decides a decode step inside a CUDA graph with
 * dependent launches: how far each kernel overlaps its neighbours and how
 * long the device sits between them.  CUPTI's concurrent-kernel records
 * carry each kernel's start and end on the device's clock, graph nodes
 * included, which is what a systems profiler draws.  The copies' records
 * and the runtime API's calls (on the host, on the same clock) come too,
 * so the time a decode step's device sits idle can be laid against what
 * the host was doing then (tools/timeline_summary.py).
 *
 * libcupti is loaded at run time (dlopen): the engine and the server never
 * link it, and a machine without it gets RN_EUNSUPPORTED and a sentence
 * saying where it looked.  RETNET_CUPTI names the library's path.
 */
#if __has_include(<cupti_activity.h>) && !defined(RN_CUDA_EMU) /* not in the emulated build */
#include <cupti_activity.h>
#include <cupti_version.h>
#endif
/* the kernel record read here is CUDA 13's (CUpti_ActivityKernel10) */
#if defined(CUPTI_API_VERSION) && CUPTI_API_VERSION >= 130000
#define TL_HAVE_CUPTI 1
#else
#define TL_HAVE_CUPTI 0
#endif
#include <cuda_runtime.h>
#include <cxxabi.h>
#include <dlfcn.h>
#include <pthread.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "rn_cuda.h"
}

#if TL_HAVE_CUPTI

#define TL_BUFFER (8u << 20) /* bytes of one activity buffer CUPTI fills */
#define TL_ALIGN 8           /* CUPTI's alignment for activity buffers */
/* CUPTI numbers its API major * 10000 + update from CUDA 13 on (12.x:
 * 19-28): any 13.x library writes the record layout read here */
#define TL_MIN_VERSION (CUPTI_API_VERSION / 10000 * 10000)

/* What a kept record was. */
enum tl_kind { TL_KERNEL, TL_COPY, TL_CALL };
static const char *const tl_kind_names[] = {"kernel", "copy", "api"};

/* One kernel's run, one copy or one runtime API call, as kept from its
 * record (grid, block, regs and graph_node: a kernel's; bytes: a copy's or
 * a memset's, both of kind TL_COPY: device work that is not a kernel). */
struct tl_kernel {
    uint64_t start, end, graph_node, bytes;
    int grid[3], block[3], regs;
    tl_kind kind;
    char name[96]; /* a kernel's demangled, without its parameters */
};

/* The CUPTI entry points this file uses, from the dlopen'ed library. */
struct tl_api {
    void *lib;
    CUptiResult (*register_callbacks)(CUpti_BuffersCallbackRequestFunc,
                                      CUpti_BuffersCallbackCompleteFunc);
    CUptiResult (*enable)(CUpti_ActivityKind);
    CUptiResult (*disable)(CUpti_ActivityKind);
    CUptiResult (*flush_all)(uint32_t);
    CUptiResult (*next_record)(uint8_t *, size_t, CUpti_Activity **);
    CUptiResult (*get_version)(uint32_t *);
    CUptiResult (*callback_name)(CUpti_CallbackDomain, uint32_t, const char **); /* may be NULL */
};

static tl_api tl;
/* what the buffer callback (possibly on CUPTI's own thread) and the caller
 * share, under tl_lock */
static pthread_mutex_t tl_lock = PTHREAD_MUTEX_INITIALIZER;
static tl_kernel *tl_rows; /* records kept since the last mark */
static size_t tl_n, tl_cap;
static int tl_failed; /* a record or a buffer was lost (out of memory, a malformed buffer) */
static int tl_on;     /* the records are enabled (rn_cuda_timeline_start succeeded) */

/* The kernel's name without namespaces' noise: demangled when it is C++,
 * cut before its parameter list, into out. */
static void tl_name(const char *mangled, char *out, size_t cap)
{
    int status = -1;
    char *d = mangled ? abi::__cxa_demangle(mangled, NULL, NULL, &status) : NULL;
    const char *s = status == 0 && d ? d : mangled ? mangled : "?";
    size_t n = strcspn(s, "(");
    if (n >= cap)
        n = cap - 1;
    memcpy(out, s, n);
    out[n] = '\0';
    free(d);
}

/* A new row at the end of tl_rows (zeroed), or NULL when out of memory
 * (then tl_failed; called under tl_lock). */
static tl_kernel *tl_row(void)
{
    if (tl_n == tl_cap) {
        size_t cap = tl_cap ? 2 * tl_cap : 4096;
        tl_kernel *p = (tl_kernel *)realloc(tl_rows, cap * sizeof *p);
        if (!p) {
            tl_failed = 1;
            return NULL;
        }
        tl_rows = p, tl_cap = cap;
    }
    tl_kernel *r = &tl_rows[tl_n++];
    memset(r, 0, sizeof *r);
    return r;
}

static void tl_keep(const CUpti_ActivityKernel10 *k)
{
    tl_kernel *r = tl_row();
    if (!r)
        return;
    r->kind = TL_KERNEL;
    r->start = k->start, r->end = k->end, r->graph_node = k->graphNodeId;
    r->grid[0] = k->gridX, r->grid[1] = k->gridY, r->grid[2] = k->gridZ;
    r->block[0] = k->blockX, r->block[1] = k->blockY, r->block[2] = k->blockZ;
    r->regs = k->registersPerThread;
    tl_name(k->name, r->name, sizeof r->name);
}

/* A copy or a memset (m: its record, either of CUPTI's two kinds, which
 * share these fields) as a row of kind TL_COPY named name. */
template <typename M> static void tl_keep_transfer(const M *m, const char *name)
{
    tl_kernel *r = tl_row();
    if (!r)
        return;
    r->kind = TL_COPY;
    r->start = m->start, r->end = m->end, r->graph_node = m->graphNodeId, r->bytes = m->bytes;
    snprintf(r->name, sizeof r->name, "%s", name);
}

static void tl_keep_copy(const CUpti_ActivityMemcpy6 *m)
{
    static const char *const names[] = {"memcpy ?",    "memcpy HtoD", "memcpy DtoH", "memcpy HtoA",
                                        "memcpy AtoH", "memcpy AtoA", "memcpy AtoD", "memcpy DtoA",
                                        "memcpy DtoD", "memcpy HtoH", "memcpy PtoP"};
    tl_keep_transfer(m, names[m->copyKind < sizeof names / sizeof names[0] ? m->copyKind : 0]);
}

/* name without CUPTI's version suffix (cudaGraphLaunch_v10000), into out. */
static void tl_call_name(const char *name, char *out, size_t cap)
{
    size_t n = strlen(name), d = n;
    while (d > 0 && name[d - 1] >= '0' && name[d - 1] <= '9')
        d--;
    if (d >= 2 && d < n && name[d - 1] == 'v' && name[d - 2] == '_')
        n = d - 2;
    snprintf(out, cap, "%.*s", (int)n, name);
}

static void tl_keep_call(const CUpti_ActivityAPI *a)
{
    const char *name = NULL;
    tl_kernel *r = tl_row();
    if (!r)
        return;
    r->kind = TL_CALL;
    r->start = a->start, r->end = a->end;
    if (tl.callback_name &&
        tl.callback_name(CUPTI_CB_DOMAIN_RUNTIME_API, a->cbid, &name) == CUPTI_SUCCESS && name)
        tl_call_name(name, r->name, sizeof r->name);
    else
        snprintf(r->name, sizeof r->name, "runtime call %u", (unsigned)a->cbid);
}

/* CUPTI's callbacks: a buffer to fill, and a filled one to read (owned
 * here: allocated in the first, freed in the second). */
static void CUPTIAPI tl_buffer_requested(uint8_t **buffer, size_t *size, size_t *max_records)
{
    *buffer = (uint8_t *)aligned_alloc(TL_ALIGN, TL_BUFFER);
    *size = *buffer ? TL_BUFFER : 0;
    *max_records = 0;
    if (!*buffer) { /* CUPTI drops what it cannot store: say so at the write */
        pthread_mutex_lock(&tl_lock);
        tl_failed = 1;
        pthread_mutex_unlock(&tl_lock);
    }
}

static void CUPTIAPI tl_buffer_completed(CUcontext ctx, uint32_t stream, uint8_t *buffer,
                                         size_t size, size_t valid)
{
    (void)ctx, (void)stream, (void)size;
    CUpti_Activity *rec = NULL;
    CUptiResult r = CUPTI_ERROR_MAX_LIMIT_REACHED;
    pthread_mutex_lock(&tl_lock);
    while (buffer && (r = tl.next_record(buffer, valid, &rec)) == CUPTI_SUCCESS) {
        if (rec->kind == CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL)
            tl_keep((const CUpti_ActivityKernel10 *)rec);
        else if (rec->kind == CUPTI_ACTIVITY_KIND_MEMCPY)
            tl_keep_copy((const CUpti_ActivityMemcpy6 *)rec);
        else if (rec->kind == CUPTI_ACTIVITY_KIND_MEMSET)
            tl_keep_transfer((const CUpti_ActivityMemset4 *)rec, "memset");
        else if (rec->kind == CUPTI_ACTIVITY_KIND_RUNTIME)
            tl_keep_call((const CUpti_ActivityAPI *)rec);
    }
    if (r != CUPTI_ERROR_MAX_LIMIT_REACHED) /* the end of the buffer; anything else lost some */
        tl_failed = 1;
    pthread_mutex_unlock(&tl_lock);
    free(buffer);
}

/* The entry points of the library at path, into *api, if it opens, has
 * them and writes this header's kernel records (API version TL_MIN_VERSION
 * or later: an older major writes an older layout); else closed again and
 * why in why. */
static int tl_try(const char *path, tl_api *api, char *why, size_t cap)
{
    uint32_t version = 0;
    tl_api a = {};
    if (!(a.lib = dlopen(path, RTLD_NOW | RTLD_LOCAL)))
        return 0;
    *(void **)&a.register_callbacks = dlsym(a.lib, "cuptiActivityRegisterCallbacks");
    *(void **)&a.enable = dlsym(a.lib, "cuptiActivityEnable");
    *(void **)&a.disable = dlsym(a.lib, "cuptiActivityDisable");
    *(void **)&a.flush_all = dlsym(a.lib, "cuptiActivityFlushAll");
    *(void **)&a.next_record = dlsym(a.lib, "cuptiActivityGetNextRecord");
    *(void **)&a.get_version = dlsym(a.lib, "cuptiGetVersion");
    *(void **)&a.callback_name = dlsym(a.lib, "cuptiGetCallbackName");
    if (!a.register_callbacks || !a.enable || !a.disable || !a.flush_all || !a.next_record ||
        !a.get_version)
        snprintf(why, cap, "%s lacks the activity API", path);
    else if (a.get_version(&version) != CUPTI_SUCCESS || version < TL_MIN_VERSION)
        snprintf(why, cap, "%s has API version %u, older than the %u built for", path, version,
                 (unsigned)TL_MIN_VERSION);
    else {
        *api = a;
        return 1;
    }
    dlclose(a.lib);
    return 0;
}

/* Opens the first usable libcupti of RETNET_CUPTI, the loader's path and
 * the toolkit's usual places; 0 on success. */
static int tl_open(rn_error *err)
{
    const char *env = getenv("RETNET_CUPTI");
    const char *const paths[] = {env,
                                 "libcupti.so",
                                 "libcupti.so.13",
                                 "/usr/local/cuda/extras/CUPTI/lib64/libcupti.so",
                                 "/usr/local/cuda/lib64/libcupti.so",
                                 "/usr/local/cuda/targets/x86_64-linux/lib/libcupti.so"};
    char why[256] = "";
    if (tl.lib)
        return 0;
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++)
        if (paths[i] && *paths[i] && tl_try(paths[i], &tl, why, sizeof why))
            return 0;
    return rn_error_set(err, RN_EUNSUPPORTED,
                        "timeline: no usable libcupti (%s; set RETNET_CUPTI to its path; looked "
                        "on the loader's path and under /usr/local/cuda)",
                        why[0] ? why : "none found");
}

/* The record kinds kept: the kernels (without which there is no
 * timeline), then the copies, the memsets and the runtime API's calls. */
static const CUpti_ActivityKind tl_kinds[] = {
    CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL, CUPTI_ACTIVITY_KIND_MEMCPY, CUPTI_ACTIVITY_KIND_MEMSET,
    CUPTI_ACTIVITY_KIND_RUNTIME};
static const char *const tl_kind_what[] = {"kernels'", "copies'", "memsets'", "runtime calls'"};

/* The CUPTI library opened and its records enabled; 0 on success.  A
 * library that refuses the copies' or the calls' records still gives the
 * kernels' (a line on stderr says what is missing). */
static int tl_enable(rn_error *err)
{
    if (tl_open(err))
        return err->code;
    if (tl.register_callbacks(tl_buffer_requested, tl_buffer_completed) != CUPTI_SUCCESS ||
        tl.enable(tl_kinds[0]) != CUPTI_SUCCESS)
        return rn_error_set(err, RN_EDEVICE, "timeline: CUPTI refused the kernel records");
    for (size_t i = 1; i < sizeof tl_kinds / sizeof tl_kinds[0]; i++)
        if (tl.enable(tl_kinds[i]) != CUPTI_SUCCESS)
            fprintf(stderr, "timeline: CUPTI refused the %s records; the others only\n",
                    tl_kind_what[i]);
    return RN_OK;
}

extern "C" int rn_cuda_timeline_start(rn_error *err)
{
    if (tl_on)
        return rn_error_set(err, RN_EINVAL, "timeline: already started");
    /* after a failure the library stays loaded: its callbacks may be registered */
    int rc = tl_enable(err);
    tl_on = rc == RN_OK;
    return rc;
}

extern "C" void rn_cuda_timeline_mark(void)
{
    cudaDeviceSynchronize();
    if (tl_on)
        tl.flush_all(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED);
    pthread_mutex_lock(&tl_lock);
    tl_n = 0;
    pthread_mutex_unlock(&tl_lock);
}

/* The kept records as CSV rows tagged tag, times from the earliest start
 * (called under tl_lock). */
static void tl_print(FILE *out, const char *tag)
{
    uint64_t t0 = tl_n ? tl_rows[0].start : 0;
    for (size_t i = 0; i < tl_n; i++)
        t0 = tl_rows[i].start < t0 ? tl_rows[i].start : t0;
    for (size_t i = 0; i < tl_n; i++) {
        const tl_kernel *r = &tl_rows[i];
        /* the name's commas would split the field: quoted, its quotes made single */
        fprintf(out, "%s,\"", tag);
        for (const char *c = r->name; *c; c++)
            fputc(*c == '"' ? '\'' : *c, out);
        fprintf(out, "\",%llu,%llu,%dx%dx%d,%dx%dx%d,%d,%llu,%s,%llu\n",
                (unsigned long long)(r->start - t0), (unsigned long long)(r->end - t0), r->grid[0],
                r->grid[1], r->grid[2], r->block[0], r->block[1], r->block[2], r->regs,
                (unsigned long long)r->graph_node, tl_kind_names[r->kind],
                (unsigned long long)r->bytes);
    }
}

extern "C" int rn_cuda_timeline_write(FILE *out, const char *tag, int header, rn_error *err)
{
    if (!tl_on)
        return rn_error_set(err, RN_EINVAL, "timeline: not started");
    cudaDeviceSynchronize();
    tl.flush_all(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED);
    pthread_mutex_lock(&tl_lock);
    int failed = tl_failed;
    if (!failed) {
        if (header)
            fprintf(out, "tag,kernel,start_ns,end_ns,grid,block,regs,graph_node,kind,bytes\n");
        tl_print(out, tag);
    }
    tl_n = 0;
    pthread_mutex_unlock(&tl_lock);
    if (failed)
        return rn_error_set(err, RN_ENOMEM,
                            "timeline: records were lost (out of memory, or a "
                            "buffer CUPTI could not complete)");
    return ferror(out) ? rn_error_set(err, RN_EIO, "timeline: cannot write the records") : RN_OK;
}

extern "C" void rn_cuda_timeline_stop(void)
{
    if (!tl_on)
        return;
    tl_on = 0;
    cudaDeviceSynchronize();
    for (size_t i = 0; i < sizeof tl_kinds / sizeof tl_kinds[0]; i++)
        tl.disable(tl_kinds[i]);
    tl.flush_all(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED);
    pthread_mutex_lock(&tl_lock);
    free(tl_rows);
    tl_rows = NULL, tl_n = tl_cap = 0, tl_failed = 0;
    pthread_mutex_unlock(&tl_lock);
    /* the library stays loaded: CUPTI may still hold its callbacks */
}

#else /* no CUPTI headers in this toolkit */

extern "C" int rn_cuda_timeline_start(rn_error *err)
{
    return rn_error_set(err, RN_EUNSUPPORTED, "timeline: built without CUPTI's headers");
}

extern "C" void rn_cuda_timeline_mark(void)
{
}

extern "C" int rn_cuda_timeline_write(FILE *out, const char *tag, int header, rn_error *err)
{
    (void)out, (void)tag, (void)header;
    return rn_error_set(err, RN_EUNSUPPORTED, "timeline: built without CUPTI's headers");
}

extern "C" void rn_cuda_timeline_stop(void)
{
}

#endif
