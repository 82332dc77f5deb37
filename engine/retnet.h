/*
 * retnet.h -- the public engine API (rn_ prefix).  The only engine header the
 * server and the command-line tool include (with model.h for the config,
 * sampler.h for sampling and status.h for errors).
 *
 * An rn_engine binds a loaded model to one backend (cpu or cuda) and a fixed
 * pool of recurrent-state slots.  The API is synchronous and not thread-safe:
 * one thread (the server's scheduler thread) calls it.  The CPU backend runs
 * a documented pool of worker threads (rn_engine_opts.n_threads, plus
 * OpenBLAS's own) while a call is in progress; none run between calls.
 */
#ifndef RN_RETNET_H
#define RN_RETNET_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "sampler.h"
#include "status.h"

typedef enum { RN_DEVICE_AUTO = 0, RN_DEVICE_CPU, RN_DEVICE_CUDA } rn_device;

typedef struct rn_engine_opts {
    rn_device device;
    int n_slots;    /* recurrent states to preallocate (>= 1) */
    int n_threads;  /* CPU worker threads; 0 = number of online CPUs */
    int max_chunk;  /* largest chunk one prefill step processes; 0 = 256 */
    int state_bf16; /* CUDA: keep the states as bf16 on the device (half the memory and
                     * the decode step's state traffic; computed in fp32, rounded when
                     * stored; export and import stay fp32).  The CPU backend refuses it. */
} rn_engine_opts;

typedef enum {
    RN_FORM_CHUNKWISE = 0, /* chunks of `chunk` tokens, continuing the state (default) */
    RN_FORM_RECURRENT,     /* one token at a time */
    RN_FORM_PARALLEL       /* whole sequence at once; the slot must be empty */
} rn_form;

enum { RN_LOGITS_LAST = 0, RN_LOGITS_ALL = 1 };

typedef struct rn_prefill_opts {
    rn_form form;
    int chunk;    /* chunkwise: tokens per chunk; 0 = max_chunk */
    int logits;   /* RN_LOGITS_LAST or RN_LOGITS_ALL */
    int ts_clamp; /* parallel form: torchscale's |row sum| clamp (for parity tests) */
} rn_prefill_opts;

typedef struct rn_engine rn_engine;

/* Creates an engine on m (retained: m must outlive the engine).  Returns RN_OK
 * and sets *out, owned by the caller (rn_engine_free). */
int rn_engine_new(rn_engine **out, const rn_model *m, const rn_engine_opts *opts, rn_error *err);
void rn_engine_free(rn_engine *e);

const char *rn_engine_backend_name(const rn_engine *e);
/* 1 once a device error has left the engine unusable: every later call
 * fails with RN_EDEVICE, and only a new process (a new device context)
 * recovers.  An RN_EDEVICE with this 0 was the call's own failure. */
int rn_engine_lost(const rn_engine *e);
/* The device rn_engine_new would use for d: RN_DEVICE_CUDA for cuda (its
 * absence is rn_engine_new's error to report) and for auto when a GPU
 * answers, else RN_DEVICE_CPU.  Lets a caller size slots and chunks for the
 * device before creating the engine. */
rn_device rn_device_resolve(rn_device d);
int rn_engine_n_slots(const rn_engine *e);
/* Worker threads the CPU backend runs for rn_engine_opts.n_threads =
 * requested (0: one per online CPU). */
int rn_cpu_threads(int requested);
int rn_engine_vocab(const rn_engine *e);
/* fp32 values of one session's state (all layers) and its size in bytes as
 * rn_state_export writes it. */
int64_t rn_state_values(const rn_config *cfg);
size_t rn_engine_state_bytes(const rn_engine *e);
/* Memory one slot takes where the engine keeps it: rn_engine_state_bytes,
 * or half of it with rn_engine_opts.state_bf16. */
size_t rn_engine_slot_bytes(const rn_engine *e);

int rn_state_reset(rn_engine *e, int slot);
int rn_state_copy(rn_engine *e, int dst_slot, int src_slot);
int64_t rn_state_pos(rn_engine *e, int slot);
/* Host copy of a slot's state: per layer, H*dk*dv values of S (key-major,
 * unnormalised, see docs/model-format.md) then, with torchscale's retention
 * norm, H values of s.  nbytes must equal rn_engine_state_bytes(). */
int rn_state_export(rn_engine *e, int slot, float *host, size_t nbytes);
int rn_state_import(rn_engine *e, int slot, const float *host, size_t nbytes, int64_t pos);

/* Feeds n >= 1 tokens into slot.  logits: vocab floats (RN_LOGITS_LAST) or
 * n*vocab (RN_LOGITS_ALL), or NULL.  opts NULL = chunkwise, max_chunk. */
int rn_prefill(rn_engine *e, int slot, const int32_t *tokens, int n, const rn_prefill_opts *opts,
               float *logits);
/* One token for each of n distinct slots in one batched step; logits n*vocab
 * or NULL. */
int rn_decode(rn_engine *e, const int *slots, const int32_t *tokens, int n, float *logits);
/* rn_decode, and out[i] = rn_argmax_row of row i's logits (greedy's
 * token, rn_math.h) instead of the logits: the GPU picks on the device and
 * copies back n ids, not n x vocab floats.  scratch: n x vocab floats the
 * engine may use when it picks on the host (the caller's logits buffer), or
 * NULL for a buffer of its own, kept until rn_engine_free. */
int rn_decode_argmax(rn_engine *e, const int *slots, const int32_t *tokens, int n, int32_t *out,
                     float *scratch);
/* Rows one rn_decode_top may take (the logits of all of them stay where
 * the step left them, for rn_decode_rows). */
int rn_engine_top_batch(const rn_engine *e);
/* rn_decode of n <= rn_engine_top_batch(e) rows, and out[i] = row i's
 * logits reduced to their candidates and sums at temperature[i]
 * (rn_row_top, sampler.h: what rn_sampler_sample_top draws from), or
 * out[i].n = 0 where temperature[i] < 0.  The GPU reduces on the device and
 * copies back n reduced rows, not n x vocab floats.  scratch: as
 * rn_decode_argmax's; the engine keeps the pointer (not the memory, which
 * stays the caller's) until the next call that runs the model, for
 * rn_decode_rows, so the caller leaves it alone until then. */
int rn_decode_top(rn_engine *e, const int *slots, const int32_t *tokens, int n,
                  const float *temperature, rn_row_top *out, float *scratch);
/* Right after rn_decode_top, before any other call that runs the model:
 * the logits of that step's rows rows[0..nrows) (indices into its batch,
 * distinct) to logits + rows[i] * vocab, for the rows the sampler cannot
 * decide from their reduction.  RN_EINVAL when there is no such step. */
int rn_decode_rows(rn_engine *e, const int *rows, int nrows, float *logits);
/* Bytes of device memory in use and in total; RN_ENODEV for the CPU backend. */
int rn_engine_device_memory(rn_engine *e, size_t *used, size_t *total);
/* A host buffer of bytes for logits that e fills fastest: page-locked on the
 * GPU (copies then run at the bus's speed), plain memory on the CPU.  NULL
 * when out of memory.  Owned by the caller; free it with rn_engine_host_free
 * on the same engine, before rn_engine_free. */
void *rn_engine_host_alloc(rn_engine *e, size_t bytes);
void rn_engine_host_free(rn_engine *e, void *p);
/* How many state slots an engine on device d (resolved as rn_engine_new
 * would) can hold in fraction of its free device memory, next to m's weights
 * and the buffers for prefill chunks of max_chunk, with bf16 states when
 * state_bf16; capped so that a caller's logits buffer of one vocab row per
 * slot stays within 512 MiB.  RN_OK with *slots >= 1; RN_EUNSUPPORTED on the
 * CPU (its states live in host memory); RN_ENOMEM when not one fits. */
int rn_engine_fit_slots(const rn_model *m, rn_device d, int max_chunk, int state_bf16,
                        double fraction, int *slots, rn_error *err);

#endif
