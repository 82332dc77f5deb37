/*
 * job.h -- one generation request as it travels between the HTTP loop thread
 * and the engine thread.
 *
 * Ownership: reference counted (rd_job_ref / rd_job_unref); the HTTP side
 * holds one reference for the connection, the engine one while the job is
 * queued or running, the ready list one while the job sits on it.
 * Fields under "request" are written by the loop thread before submit and
 * only read afterwards.  Fields under "progress" are written by the engine
 * thread and read by the loop thread, both under the queue mutex
 * (rd_queue_lock).  Fields under "http" belong to the loop thread alone.
 */
#ifndef RD_JOB_H
#define RD_JOB_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "sampler.h"
#include "tokenizer.h"

#define RD_MAX_CHOICES 256 /* choices of one job (the server's --max-n is far lower) */

typedef enum { RD_FIN_NONE = 0, RD_FIN_STOP, RD_FIN_LENGTH, RD_FIN_ERROR } rd_finish;
typedef enum { RD_OP_RUN = 0, RD_OP_FORK, RD_OP_EXPORT, RD_OP_IMPORT } rd_op;
/* What the loop thread needs to hear of a job's tokens.  Each wake costs
 * the engine a context switch, so: ENDS, the first token and the end only
 * (a plain non-streamed request); STREAM, every token, held back up to the
 * stream interval; EACH, every token at the next wake (stop strings: the
 * engine must learn of a match before it runs far past it, since a
 * session's state keeps what was generated). */
typedef enum { RD_NEWS_ENDS = 0, RD_NEWS_STREAM, RD_NEWS_EACH } rd_news;
typedef enum { RD_PHASE_QUEUED = 0, RD_PHASE_PREFILL, RD_PHASE_RUNNING, RD_PHASE_DONE } rd_phase;

typedef struct rd_choice {
    /* progress (engine writes, loop reads, under the queue mutex) */
    int32_t *tok;          /* generated tokens */
    rn_sample_result *res; /* per token: logprob and alternatives */
    int n_tok, cap_tok;
    rd_finish finish;
    atomic_int stop_req; /* loop -> engine: a stop string matched */
    /* engine only */
    int slot;
    rn_sampler *sampler;
    int fed; /* generated tokens already fed into the state */
    /* http only: a copy of the progress, taken under the queue mutex, so
     * decoding and formatting run without holding it */
    int32_t *mtok;
    rn_sample_result *mres;
    int m_n, m_cap;
    rd_finish m_finish;
    rn_detok *detok;
    int n_seen; /* tokens already turned into text */
    char *text; /* decoded text not yet sent (held for stop strings) */
    size_t text_len, text_cap;
    size_t sent_bytes; /* text offset of what was sent (logprobs text_offset) */
    int lp_sent;       /* tokens whose logprobs were sent (streaming) */
    int stopped;       /* a stop string matched: ignore later tokens */
    int finish_sent;
} rd_choice;

typedef struct rd_job {
    atomic_int refs;
    /* request */
    int32_t *prompt;
    int n_prompt;
    int max_tokens;
    int n_logprobs; /* alternatives per token, 0 = none asked */
    int want_logprobs;
    int ignore_eos;
    int32_t eos;  /* -1: none */
    rd_news news; /* which tokens the loop thread must hear of, and how soon */
    rn_sample_params sp;
    rn_logit_bias *bias;
    int n; /* choices */
    rd_choice *ch;
    int session_slot;     /* -1: a transient request */
    int session_fresh;    /* the session's slot must be reset first */
    int fork_src;         /* RD_OP_FORK: copy this slot's state into session_slot */
    rd_op op;             /* RD_OP_RUN: generate; the others act on session_slot's state
                                * at once, outside the FIFO, and finish the job */
    unsigned char *state; /* EXPORT / IMPORT: owned by the job (the engine may still use
                                * it after the request left); the state sits at state +
                                * state_off, state_bytes long */
    size_t state_off, state_bytes;
    int64_t state_pos;     /* EXPORT: the slot's position (out); IMPORT: in */
    void *tier_session;    /* an offload, restore or snapshot (tiers.c) for this
                                * session, no connection (http is NULL) */
    int snapshot;          /* EXPORT for --persist-interval: the session keeps its slot */
    void *release_session; /* the client left a session request before the engine was
                                * done: the session stays busy (its slot owned) until the
                                * job is DONE, then advances and is released (loop) */
    /* progress */
    rd_phase phase;
    int prefilled;
    int cached; /* prompt tokens restored from the prefix cache (written before
                                * any progress, under the queue mutex) */
    atomic_int cancelled;
    int error_status; /* != 0: failed; message below */
    char error_msg[200];
    /* queue links (queue mutex) */
    struct rd_job *next_submit, *next_ready, *next_taken;
    int on_ready, ready_urgent;
    /* http (loop thread only) */
    void *http; /* the connection's request context */
} rd_job;

/* A new job with n choices, refs = 1 (owned by the caller). NULL on ENOMEM. */
rd_job *rd_job_new(int n);
void rd_job_ref(rd_job *j);
/* Drops a reference; the last one frees the job and everything it owns. */
void rd_job_unref(rd_job *j);
/* Loop thread, queue mutex held: copies the choice's new tokens and its
 * finish state into the loop's mirror (mtok, mres, m_n, m_finish).
 * Returns 0 or -1 on ENOMEM. */
int rd_choice_sync_locked(rd_choice *c);
/* Appends a sampled token to a choice (engine thread, queue mutex held). */
int rd_choice_push(rd_choice *c, const rn_sample_result *r);

#endif
