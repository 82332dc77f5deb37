/*
 * engine.c -- rn_engine: a model, one backend and its state slots.
 *
 * The only place that knows which backends exist (the registry below), and
 * the place that checks every argument coming from callers (slot ranges,
 * token ids, duplicate slots in a batch) so the backends can trust them.
 */
#include <stdlib.h>
#include <unistd.h>
#include <string.h>

#include "backend.h"
#include "retnet.h"
#include "util.h"

struct rn_engine {
    const rn_backend_ops *ops;
    void *ctx;
    const rn_model *model;
    int n_slots, max_chunk;
    unsigned char *mark; /* scratch for duplicate-slot checks */
    float *pick_logits;  /* rn_decode_argmax without the backend's own: pick_rows x vocab,
                          * grown to the largest batch seen */
    int pick_rows;
    /* the last rn_decode_top, for rn_decode_rows: its rows, and where their
     * logits are when the engine reduced them (NULL: with the backend) */
    int top_rows;
    const float *top_logits;
};

static const rn_backend_ops *pick_backend(rn_device d, rn_error *err)
{
#ifdef RN_HAVE_CUDA
    /* auto: the GPU when one answers (the backend passes make check-cuda on
     * Hopper), else the CPU; cuda: the GPU or a clear error */
    if (d == RN_DEVICE_CUDA || d == RN_DEVICE_AUTO) {
        rn_error probe_err = {0};
        if (rn_cuda_backend.probe(&probe_err) == RN_OK)
            return &rn_cuda_backend;
        if (d == RN_DEVICE_CUDA) {
            rn_error_set(err, RN_ENODEV, "cuda backend unavailable: %s", probe_err.msg);
            return NULL;
        }
    }
#else
    if (d == RN_DEVICE_CUDA) {
        rn_error_set(err, RN_ENODEV,
                     "this build has no CUDA backend (nvcc was not found at build time)");
        return NULL;
    }
#endif
    return &rn_cpu_backend;
}

int64_t rn_state_values(const rn_config *c)
{
    int64_t per = (int64_t)c->n_heads * c->head_dim_k * c->head_dim_v +
                  (c->retention_norm == RN_RETNORM_TORCHSCALE ? c->n_heads : 0);
    return per * c->n_layers;
}

int rn_engine_new(rn_engine **out, const rn_model *m, const rn_engine_opts *opts, rn_error *err)
{
    int rc;
    rn_engine_opts o = opts ? *opts : (rn_engine_opts){0};
    *out = NULL;
    if (o.n_slots < 1)
        o.n_slots = 1;
    if (o.max_chunk <= 0)
        o.max_chunk = 256;
    if (o.n_slots > (1 << 20) || o.max_chunk > (1 << 16))
        return rn_error_set(err, RN_EINVAL, "n_slots or max_chunk out of range");
    rn_engine *e = calloc(1, sizeof *e);
    if (!e)
        return rn_error_set(err, RN_ENOMEM, "out of memory");
    e->model = m;
    e->n_slots = o.n_slots;
    e->max_chunk = o.max_chunk;
    e->mark = calloc((size_t)o.n_slots, 1);
    e->ops = pick_backend(o.device, err);
    if (!e->mark || !e->ops) {
        rc = e->mark ? RN_ENODEV : rn_error_set(err, RN_ENOMEM, "out of memory");
        goto fail;
    }
    if ((rc = e->ops->init(&e->ctx, m, &o, err)) != RN_OK)
        goto fail;
    *out = e;
    return RN_OK;
fail:
    rn_engine_free(e);
    return rc;
}

void rn_engine_free(rn_engine *e)
{
    if (!e)
        return;
    rn_engine_host_free(e, e->pick_logits); /* the backend's host_free may need its context */
    if (e->ctx)
        e->ops->deinit(e->ctx);
    free(e->mark);
    free(e);
}

rn_device rn_device_resolve(rn_device d)
{
    rn_error err = {0};
    if (d == RN_DEVICE_CUDA)
        return RN_DEVICE_CUDA;
    if (d == RN_DEVICE_CPU)
        return RN_DEVICE_CPU;
    const rn_backend_ops *ops = pick_backend(RN_DEVICE_AUTO, &err);
    return ops && ops != &rn_cpu_backend ? RN_DEVICE_CUDA : RN_DEVICE_CPU;
}

const char *rn_engine_backend_name(const rn_engine *e)
{
    return e->ops->name;
}

int rn_engine_lost(const rn_engine *e)
{
    return e->ops->lost && e->ops->lost(e->ctx);
}

int rn_cpu_threads(int requested)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    return requested > 0 ? requested : cpus > 0 ? (int)cpus : 1;
}

int rn_engine_n_slots(const rn_engine *e)
{
    return e->n_slots;
}

int rn_engine_vocab(const rn_engine *e)
{
    return rn_model_config(e->model)->vocab_size;
}

size_t rn_engine_state_bytes(const rn_engine *e)
{
    return e->ops->state_bytes(e->ctx);
}

size_t rn_engine_slot_bytes(const rn_engine *e)
{
    return e->ops->slot_bytes ? e->ops->slot_bytes(e->ctx) : e->ops->state_bytes(e->ctx);
}

static int slot_ok(const rn_engine *e, int s)
{
    return s >= 0 && s < e->n_slots;
}

static int tokens_ok(const rn_engine *e, const int32_t *t, int n)
{
    int V = rn_model_config(e->model)->vocab_size;
    for (int i = 0; i < n; i++)
        if (t[i] < 0 || t[i] >= V)
            return 0;
    return 1;
}

int rn_state_reset(rn_engine *e, int slot)
{
    return slot_ok(e, slot) ? e->ops->state_reset(e->ctx, slot) : RN_EINVAL;
}

int rn_state_copy(rn_engine *e, int dst, int src)
{
    return slot_ok(e, dst) && slot_ok(e, src) ? e->ops->state_copy(e->ctx, dst, src) : RN_EINVAL;
}

int64_t rn_state_pos(rn_engine *e, int slot)
{
    return slot_ok(e, slot) ? e->ops->state_pos(e->ctx, slot) : RN_EINVAL;
}

int rn_state_export(rn_engine *e, int slot, float *host, size_t nbytes)
{
    if (!slot_ok(e, slot) || !host || nbytes != rn_engine_state_bytes(e))
        return RN_EINVAL;
    return e->ops->state_export(e->ctx, slot, host, nbytes);
}

int rn_state_import(rn_engine *e, int slot, const float *host, size_t nbytes, int64_t pos)
{
    if (!slot_ok(e, slot) || !host || nbytes != rn_engine_state_bytes(e) || pos < 0)
        return RN_EINVAL;
    return e->ops->state_import(e->ctx, slot, host, nbytes, pos);
}

int rn_prefill(rn_engine *e, int slot, const int32_t *tokens, int n, const rn_prefill_opts *opts,
               float *logits)
{
    rn_prefill_opts o = opts ? *opts : (rn_prefill_opts){0};
    if (!slot_ok(e, slot) || n < 1 || !tokens || !tokens_ok(e, tokens, n) || o.chunk < 0 ||
        o.chunk > (1 << 16) || (unsigned)o.form > RN_FORM_PARALLEL)
        return RN_EINVAL;
    e->top_rows = 0;
    return e->ops->prefill(e->ctx, slot, tokens, n, &o, logits);
}

int rn_engine_device_memory(rn_engine *e, size_t *used, size_t *total)
{
    if (!e->ops->device_memory)
        return RN_ENODEV;
    return e->ops->device_memory(e->ctx, used, total);
}

int rn_engine_fit_slots(const rn_model *m, rn_device d, int max_chunk, int state_bf16,
                        double fraction, int *slots, rn_error *err)
{
    const rn_backend_ops *ops = pick_backend(d, err);
    *slots = 0;
    if (!ops)
        return RN_ENODEV;
    if (!ops->fit_slots)
        return rn_error_set(err, RN_EUNSUPPORTED, "%s backend: states live in host memory",
                            ops->name);
    return ops->fit_slots(m, max_chunk > 0 ? max_chunk : 256, state_bf16, fraction, slots, err);
}

void *rn_engine_host_alloc(rn_engine *e, size_t bytes)
{
    return e->ops->host_alloc ? e->ops->host_alloc(e->ctx, bytes) : malloc(bytes);
}

void rn_engine_host_free(rn_engine *e, void *p)
{
    if (!p)
        return;
    if (e->ops->host_free)
        e->ops->host_free(e->ctx, p);
    else
        free(p);
}

/* RN_OK when slots (n distinct, in range) and tokens can go into one step. */
static int decode_args_ok(rn_engine *e, const int *slots, const int32_t *tokens, int n)
{
    int rc = RN_OK;
    if (n < 1 || n > e->n_slots || !slots || !tokens || !tokens_ok(e, tokens, n))
        return RN_EINVAL;
    for (int i = 0; i < n && rc == RN_OK; i++) {
        if (!slot_ok(e, slots[i]) || e->mark[slots[i]])
            rc = RN_EINVAL; /* out of range or the same slot twice in one step */
        else
            e->mark[slots[i]] = 1;
    }
    for (int i = 0; i < n; i++)
        if (slot_ok(e, slots[i]))
            e->mark[slots[i]] = 0;
    return rc;
}

int rn_decode(rn_engine *e, const int *slots, const int32_t *tokens, int n, float *logits)
{
    int rc = decode_args_ok(e, slots, tokens, n);
    e->top_rows = 0;
    return rc == RN_OK ? e->ops->decode(e->ctx, slots, tokens, n, logits) : rc;
}

/* Where rn_decode_argmax / rn_decode_top put the logits when they pick or
 * reduce on the host: the caller's scratch, or the engine's buffer grown to
 * n rows.  NULL when out of memory. */
static float *host_logits(rn_engine *e, int n, float *scratch)
{
    int V = rn_model_config(e->model)->vocab_size;
    if (scratch)
        return scratch;
    if (n > e->pick_rows) {
        rn_engine_host_free(e, e->pick_logits);
        e->pick_rows = 0;
        if (!(e->pick_logits = rn_engine_host_alloc(e, sizeof(float) * (size_t)V * (size_t)n)))
            return NULL;
        e->pick_rows = n;
    }
    return e->pick_logits;
}

int rn_decode_argmax(rn_engine *e, const int *slots, const int32_t *tokens, int n, int32_t *out,
                     float *scratch)
{
    int rc = decode_args_ok(e, slots, tokens, n);
    e->top_rows = 0;
    if (rc != RN_OK || !out)
        return rc != RN_OK ? rc : RN_EINVAL;
    if (e->ops->decode_argmax)
        return e->ops->decode_argmax(e->ctx, slots, tokens, n, out);
    float *lg = host_logits(e, n, scratch);
    if (!lg)
        return RN_ENOMEM;
    if ((rc = e->ops->decode(e->ctx, slots, tokens, n, lg)) != RN_OK)
        return rc;
    rn__argmax_rows(lg, n, rn_model_config(e->model)->vocab_size, out);
    return RN_OK;
}

int rn_engine_top_batch(const rn_engine *e)
{
    return e->ops->top_batch ? e->ops->top_batch(e->ctx) : e->n_slots;
}

int rn_decode_top(rn_engine *e, const int *slots, const int32_t *tokens, int n,
                  const float *temperature, rn_row_top *out, float *scratch)
{
    int rc = decode_args_ok(e, slots, tokens, n), V = rn_model_config(e->model)->vocab_size;
    e->top_rows = 0;
    if (rc != RN_OK || !out || !temperature || n > rn_engine_top_batch(e))
        return rc != RN_OK ? rc : RN_EINVAL;
    for (int i = 0; i < n; i++)
        if (!(temperature[i] <= 100.0f)) /* the sampler's range; NaN refused */
            return RN_EINVAL;
    if (e->ops->decode_top) {
        rc = e->ops->decode_top(e->ctx, slots, tokens, n, temperature, out);
        e->top_logits = NULL;
    } else {
        float *lg = host_logits(e, n, scratch);
        if (!lg)
            return RN_ENOMEM;
        if ((rc = e->ops->decode(e->ctx, slots, tokens, n, lg)) == RN_OK)
            for (int i = 0; i < n; i++) {
                if (temperature[i] < 0.0f)
                    out[i].n = 0;
                else
                    rn_row_top_fill(lg + (size_t)i * (size_t)V, V, temperature[i], &out[i]);
            }
        e->top_logits = lg;
    }
    if (rc == RN_OK)
        e->top_rows = n;
    return rc;
}

int rn_decode_rows(rn_engine *e, const int *rows, int nrows, float *logits)
{
    size_t V = (size_t)rn_model_config(e->model)->vocab_size;
    if (e->top_rows == 0 || nrows < 0 || (nrows > 0 && (!rows || !logits)))
        return RN_EINVAL; /* also: no rn_decode_top since the model last ran */
    for (int i = 0; i < nrows; i++)
        if (rows[i] < 0 || rows[i] >= e->top_rows)
            return RN_EINVAL;
    if (nrows == 0)
        return RN_OK;
    if (!e->top_logits)
        return e->ops->decode_rows(e->ctx, rows, nrows, logits);
    for (int i = 0; i < nrows; i++) {
        size_t at = (size_t)rows[i] * V;
        if (logits != e->top_logits)
            memcpy(logits + at, e->top_logits + at, sizeof(float) * V);
    }
    return RN_OK;
}
