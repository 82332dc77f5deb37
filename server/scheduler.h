/*
 * scheduler.h -- the engine thread: continuous batching over a fixed pool of
 * state slots.
 *
 * Each iteration: take newly submitted jobs; drop cancelled ones (their
 * slots are free again at once); admit waiting jobs while slots are free;
 * decode one token for every running sequence in one batched call; then
 * spend a token budget on chunked prefill of admitted prompts, so a long
 * prompt never stalls running streams for more than one budget's worth.
 * Prefill always advances in whole chunks from the prompt's start, so the
 * state after k chunks depends only on the first k x chunk tokens: the
 * prefix cache keeps such states of recent prompts and a later prompt with
 * the same start continues from the longest one, with identical results.
 * The engine API is called from this thread only.
 */
#ifndef RD_SCHEDULER_H
#define RD_SCHEDULER_H

#include "queue.h"
#include "retnet.h"

typedef struct rd_sched_opts {
    int n_slots;               /* states in the pool (sessions included) */
    int chunk;                 /* prefill chunk (tokens) */
    int prefill_budget;        /* prefill tokens per iteration */
    int max_waiting;           /* jobs waiting for a slot before new ones get 429 */
    size_t prefix_cache_bytes; /* states kept at chunk boundaries of recent prompts; 0: none */
} rd_sched_opts;

typedef struct rd_sched rd_sched;

/* Starts the engine thread.  e and q are retained.  Returns 0 and sets *out
 * (owned by the caller; rd_sched_stop joins and frees it). */
int rd_sched_start(rd_sched **out, rn_engine *e, rd_queue *q, const rd_sched_opts *o);
/* Stops the thread; jobs still queued or running end with an error (503). */
void rd_sched_stop(rd_sched *s);

/* Loop thread: may `jobs` more jobs be queued?  0 = yes (each counted as
 * waiting until the engine admits or drops it), -1 = the wait queue is full. */
int rd_sched_try_enqueue(rd_sched *s, int jobs);
/* Reserves a slot for a session (-1 when none is free); released with
 * rd_sched_release_slot.  Thread-safe. */
int rd_sched_reserve_slot(rd_sched *s);
void rd_sched_release_slot(rd_sched *s, int slot);

typedef struct rd_sched_stats {
    int slots_total, slots_used, waiting, running;
    long prefix_hits, prefix_tokens; /* prompts that reused a cached prefix; tokens saved */
    /* tokens by where they were chosen: picked by the engine (greedy), drawn
     * from a reduced row (rn_decode_top), drawn from a whole row of logits */
    long tok_picked, tok_reduced, tok_row;
    int last_batch; /* sequences in the last decode step */
} rd_sched_stats;
void rd_sched_get_stats(rd_sched *s, rd_sched_stats *st);
/* Thread-safe: 1 once the engine's device failed for good (rn_engine_lost):
 * every later engine call fails, and only a new process recovers. */
int rd_sched_lost(rd_sched *s);

#endif
