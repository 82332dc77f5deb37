/*
 * scheduler.c -- see scheduler.h.
 *
 * Job states: QUEUED (waiting for slots) -> PREFILL (prompt being fed in
 * chunks) -> RUNNING (one token per iteration per choice) -> DONE.  A job
 * with n choices prefills once into its first slot, then forks the state
 * into the others (one copy each).
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "scheduler.h"

struct rd_sched {
    rn_engine *e;
    rd_queue *q;
    rd_sched_opts o;
    int vocab;
    uv_thread_t thread;
    uv_mutex_t slot_mu; /* the slot pool is shared with session creation */
    unsigned char *slot_used;
    atomic_int waiting, running, slots_used;
    rd_job *wait_head, *wait_tail; /* engine thread only */
    rd_job **active;
    int n_active, cap_active;
    float *logits; /* n_slots x vocab */
    int *b_slot;
    int32_t *b_tok;
    rd_job **b_job;
    int *b_choice;
    unsigned char *b_feed_only;
    int32_t *b_pick;   /* tokens picked by rn_decode_argmax */
    float *b_temp;     /* rn_decode_top's temperatures (-1: the row is not reduced) */
    rn_row_top *b_top; /* its reduced rows */
    int *b_need;       /* rows of a group that need their logits (rn_decode_rows) */
    /* prefix cache (engine thread only; counters read by the loop) */
    struct pc_entry *pc;
    int pc_n, pc_cap;
    size_t pc_bytes, state_bytes;
    long pc_clock;
    atomic_long pc_hits, pc_tokens;
    atomic_long tok_picked, tok_reduced, tok_row; /* rd_sched_stats */
    atomic_int last_batch;
    long decodes, fail_decode; /* fault injection (RETNETD_FAULT_DECODE): fail decode step n */
    int fail_loses;            /* ... and that failure loses the device (RETNETD_FAULT_LOST) */
    atomic_int lost;           /* the engine's device failed for good (rd_sched_lost) */
    double prefill_ns_tok;     /* recent prefill time per prompt token (0: none yet) */
    uint64_t iter_ns;          /* the last iteration's length: the next one's estimate */
};

/* ---------------------------------------------------------------- slots */

static int slot_alloc(rd_sched *s)
{
    int slot = -1;
    uv_mutex_lock(&s->slot_mu);
    for (int i = 0; i < s->o.n_slots && slot < 0; i++)
        if (!s->slot_used[i]) {
            s->slot_used[i] = 1;
            slot = i;
        }
    uv_mutex_unlock(&s->slot_mu);
    if (slot >= 0)
        atomic_fetch_add(&s->slots_used, 1);
    return slot;
}

/* Takes `need` free slots at once (all or none, under the pool lock, so a
 * session created meanwhile on the loop thread cannot take one half-way);
 * returns 0 and fills out[0..need), or -1. */
static int slots_alloc_all(rd_sched *s, int need, int *out)
{
    int got = 0;
    uv_mutex_lock(&s->slot_mu);
    for (int i = 0; i < s->o.n_slots && got < need; i++)
        if (!s->slot_used[i])
            out[got++] = i;
    if (got == need)
        for (int k = 0; k < need; k++)
            s->slot_used[out[k]] = 1;
    uv_mutex_unlock(&s->slot_mu);
    if (got != need)
        return -1;
    atomic_fetch_add(&s->slots_used, need);
    return 0;
}

static int slots_free(rd_sched *s)
{
    return s->o.n_slots - atomic_load(&s->slots_used);
}

int rd_sched_reserve_slot(rd_sched *s)
{
    return slot_alloc(s);
}

void rd_sched_release_slot(rd_sched *s, int slot)
{
    if (slot < 0 || slot >= s->o.n_slots)
        return;
    uv_mutex_lock(&s->slot_mu);
    int was = s->slot_used[slot];
    s->slot_used[slot] = 0;
    uv_mutex_unlock(&s->slot_mu);
    if (was)
        atomic_fetch_sub(&s->slots_used, 1);
}

int rd_sched_try_enqueue(rd_sched *s, int jobs)
{
    if (atomic_fetch_add(&s->waiting, jobs) + jobs > s->o.max_waiting) {
        atomic_fetch_sub(&s->waiting, jobs);
        return -1;
    }
    return 0;
}

void rd_sched_get_stats(rd_sched *s, rd_sched_stats *st)
{
    st->slots_total = s->o.n_slots;
    st->slots_used = atomic_load(&s->slots_used);
    st->waiting = atomic_load(&s->waiting);
    st->running = atomic_load(&s->running);
    st->prefix_hits = atomic_load(&s->pc_hits);
    st->prefix_tokens = atomic_load(&s->pc_tokens);
    st->tok_picked = atomic_load(&s->tok_picked);
    st->tok_reduced = atomic_load(&s->tok_reduced);
    st->tok_row = atomic_load(&s->tok_row);
    st->last_batch = atomic_load(&s->last_batch);
}

/* ------------------------------------------------------------ job ends */

/* Releases a finished or failed job's transient slots and tells the loop. */
/* The job's answer becomes status with msg, unless an error came first
 * (the queue lock held). */
static void set_error_locked(rd_job *j, int status, const char *msg)
{
    if (status && !j->error_status) {
        j->error_status = status;
        strncpy(j->error_msg, msg, sizeof j->error_msg - 1);
    }
}

static void finish_job(rd_sched *s, rd_job *j, int status, const char *msg)
{
    rd_queue_lock(s->q);
    set_error_locked(j, status, msg);
    j->phase = RD_PHASE_DONE;
    rd_queue_mark_ready_locked(s->q, j, 1);
    rd_queue_unlock(s->q);
    for (int i = 0; i < j->n; i++) {
        if (j->ch[i].slot >= 0 && j->ch[i].slot != j->session_slot)
            rd_sched_release_slot(s, j->ch[i].slot);
        j->ch[i].slot = -1;
    }
}

/* Whether the engine's device failed for good: the test's injected loss
 * (RETNETD_FAULT_LOST) or the engine's own word (rn_engine_lost). */
static int engine_gone(rd_sched *s)
{
    return atomic_load(&s->lost) != 0 || rn_engine_lost(s->e);
}

/* The engine failed work of j `during` something: j ends with a 500, or,
 * once its device is lost, a 503 (with Retry-After: the server exits to be
 * restarted, and a retry there may succeed). */
static void engine_failed_job(rd_sched *s, rd_job *j, const char *during)
{
    char msg[sizeof j->error_msg];
    int gone = engine_gone(s);
    snprintf(msg, sizeof msg,
             gone ? "the engine's device failed during %s; the server stops to be restarted"
                  : "engine error during %s",
             during);
    finish_job(s, j, gone ? 503 : 500, msg);
}

static void remove_active(rd_sched *s, int idx)
{
    s->active[idx] = s->active[--s->n_active];
    atomic_fetch_sub(&s->running, 1);
}

/* ----------------------------------------------------------- admission */

/* A session state operation: done at once (it needs no free slot, so it
 * never waits behind the FIFO's head), then the job finishes. */
static void run_state_op(rd_sched *s, rd_job *j)
{
    int rc = RN_OK;
    float *st = (float *)(void *)(j->state + j->state_off);
    if (atomic_load(&j->cancelled)) { /* the request left: its slot may be someone else's now */
        finish_job(s, j, 499, "cancelled");
        rd_job_unref(j);
        return;
    }
    switch (j->op) {
    case RD_OP_FORK:
        rc = j->session_fresh ? rn_state_reset(s->e, j->session_slot) /* never-used source */
                              : rn_state_copy(s->e, j->session_slot, j->fork_src);
        break;
    case RD_OP_EXPORT:
        rc = rn_state_export(s->e, j->session_slot, st, j->state_bytes);
        j->state_pos = rn_state_pos(s->e, j->session_slot);
        break;
    case RD_OP_IMPORT:
        rc = rn_state_import(s->e, j->session_slot, st, j->state_bytes, j->state_pos);
        break;
    default:
        rc = RN_EINVAL;
        break;
    }
    j->ch[0].slot = -1;
    if (rc == RN_OK)
        finish_job(s, j, 0, "");
    else
        engine_failed_job(s, j, "a session state operation");
    rd_job_unref(j);
}

static void take_new(rd_sched *s, int wait)
{
    rd_job *list = rd_queue_take(s->q, wait ? -1 : 0);
    for (rd_job *j = list, *n; j; j = n) {
        n = j->next_submit;
        j->next_submit = NULL;
        if (j->op != RD_OP_RUN) {
            run_state_op(s, j);
            continue;
        }
        if (s->wait_tail)
            s->wait_tail->next_submit = j;
        else
            s->wait_head = j;
        s->wait_tail = j;
    }
}

static int start_job(rd_sched *s, rd_job *j)
{
    int need = j->n - (j->session_slot >= 0 ? 1 : 0), got[RD_MAX_CHOICES];
    if (need > RD_MAX_CHOICES || slots_free(s) < need)
        return -1;
    if (s->n_active == s->cap_active) {
        int cap = s->cap_active ? 2 * s->cap_active : 64;
        rd_job **a = realloc(s->active, sizeof *a * (size_t)cap);
        if (!a)
            return -1;
        s->active = a;
        s->cap_active = cap;
    }
    if (slots_alloc_all(s, need, got) != 0)
        return -1;
    for (int i = 0, k = 0; i < j->n; i++) {
        int slot = i == 0 && j->session_slot >= 0 ? j->session_slot : got[k++];
        j->ch[i].slot = slot;
        if (slot != j->session_slot || j->session_fresh)
            rn_state_reset(s->e, slot);
    }
    j->session_fresh = 0;
    rd_queue_lock(s->q);
    j->phase = RD_PHASE_PREFILL;
    rd_queue_unlock(s->q);
    s->active[s->n_active++] = j;
    atomic_fetch_add(&s->running, 1);
    return 0;
}

/* FIFO admission: the head waits until it fits, so big jobs are not starved. */
static void admit(rd_sched *s)
{
    while (s->wait_head) {
        rd_job *j = s->wait_head;
        if (atomic_load(&j->cancelled)) {
            s->wait_head = j->next_submit;
            atomic_fetch_sub(&s->waiting, 1);
            /* a session's first request: the session no longer counts as
             * fresh, so its slot (someone else's state until now) is emptied
             * even though the request never runs */
            if (j->session_fresh)
                rn_state_reset(s->e, j->session_slot);
            finish_job(s, j, 499, "cancelled");
            rd_job_unref(j);
            continue;
        }
        rd_job *next = j->next_submit;
        if (start_job(s, j) != 0) {
            if (s->n_active > 0)
                break; /* running jobs will free slots: the head waits its turn */
            /* Nothing runs, so no slot frees up except by deleting a session:
             * refuse rather than block every request behind this one. */
            s->wait_head = next;
            atomic_fetch_sub(&s->waiting, 1);
            finish_job(s, j, 429,
                       "not enough free state slots (sessions hold the rest); "
                       "delete sessions or retry later");
            rd_job_unref(j);
            continue;
        }
        s->wait_head = next;
        atomic_fetch_sub(&s->waiting, 1);
    }
    if (!s->wait_head)
        s->wait_tail = NULL;
}

static void drop_cancelled(rd_sched *s)
{
    for (int i = 0; i < s->n_active;) {
        rd_job *j = s->active[i];
        if (atomic_load(&j->cancelled) || j->phase == RD_PHASE_DONE) {
            if (j->phase != RD_PHASE_DONE)
                finish_job(s, j, 499, "cancelled");
            remove_active(s, i);
            rd_job_unref(j);
        } else {
            i++;
        }
    }
}

/* ------------------------------------------------------------ sampling */

static int logprobs_arg(const rd_job *j)
{
    return j->want_logprobs ? j->n_logprobs : RN_NO_LOGPROBS;
}

/* Appends r to the choice and decides whether it finished; the loop hears of
 * it as the job's news asks (a first token and an end always at once). */
static int push_token(rd_sched *s, rd_job *j, rd_choice *c, const rn_sample_result *r)
{
    rd_queue_lock(s->q);
    if (rd_choice_push(c, r) != 0)
        c->finish = RD_FIN_ERROR;
    else if (!j->ignore_eos && r->token == j->eos)
        c->finish = RD_FIN_STOP;
    else if (c->n_tok >= j->max_tokens)
        c->finish = RD_FIN_LENGTH;
    int urgent = c->n_tok == 1 || c->finish != RD_FIN_NONE || j->news == RD_NEWS_EACH;
    if (urgent || j->news == RD_NEWS_STREAM)
        rd_queue_mark_ready_locked(s->q, j, urgent);
    rd_queue_unlock(s->q);
    return c->finish != RD_FIN_NONE;
}

/* The engine failed a step j had rows in: it ends (once). */
static void engine_failed(rd_sched *s, rd_job *j)
{
    if (j->phase != RD_PHASE_DONE)
        engine_failed_job(s, j, "decode");
}

/* A token of j could not be sampled (the thread's working memory could not
 * be had): every choice ends and the job answers 500 when the step
 * completes it -- not at once, since rows of the job may still be in this
 * step's later groups, decoding into slots it must hold until then. */
static void sampling_failed(rd_sched *s, rd_job *j)
{
    rd_queue_lock(s->q);
    set_error_locked(j, 500, "out of memory while sampling");
    for (int i = 0; i < j->n; i++)
        if (j->ch[i].finish == RD_FIN_NONE)
            j->ch[i].finish = RD_FIN_ERROR;
    rd_queue_unlock(s->q);
}

/* Samples one token for choice c from logits; returns 1 if it finished. */
static int sample_into(rd_sched *s, rd_job *j, rd_choice *c, const float *logits)
{
    rn_sample_result r;
    if (j->phase == RD_PHASE_DONE || c->finish != RD_FIN_NONE)
        return 1;
    if (rn_sampler_sample(c->sampler, logits, logprobs_arg(j), &r) != RN_OK) {
        sampling_failed(s, j);
        return 1;
    }
    atomic_fetch_add(&s->tok_row, 1);
    return push_token(s, j, c, &r);
}

/* How a decode step's rows get their tokens: picked by the engine (every
 * sampling row plain greedy), drawn from rows the engine reduced
 * (rn_decode_top; on a GPU the logits stay on the device unless a row needs
 * them), or drawn from every row's logits (no sampling row can use a
 * reduced row: each has a bias or penalties). */
typedef enum { RD_STEP_PICK, RD_STEP_TOP, RD_STEP_LOGITS } rd_step_kind;

static rn_sampler *row_sampler(const rd_sched *s, int k)
{
    return s->b_job[k]->ch[s->b_choice[k]].sampler;
}

static rd_step_kind batch_kind(const rd_sched *s, int nb)
{
    int greedy = 1, top = 0;
    for (int k = 0; k < nb; k++) {
        if (s->b_feed_only[k])
            continue;
        greedy &= rn_sampler_plain_greedy(row_sampler(s, k), logprobs_arg(s->b_job[k]));
        top |= rn_sampler_top_ok(row_sampler(s, k));
    }
    return greedy ? RD_STEP_PICK : top ? RD_STEP_TOP : RD_STEP_LOGITS;
}

/* Runs batch rows [g0, g0 + m) through the engine in one call, as kind
 * says. */
static int run_rows(rd_sched *s, int g0, int m, rd_step_kind kind)
{
    float *lg = s->logits + (size_t)g0 * (size_t)s->vocab;
    if (kind == RD_STEP_PICK)
        return rn_decode_argmax(s->e, s->b_slot + g0, s->b_tok + g0, m, s->b_pick + g0, lg);
    if (kind == RD_STEP_LOGITS)
        return rn_decode(s->e, s->b_slot + g0, s->b_tok + g0, m, lg);
    for (int k = g0; k < g0 + m; k++)
        s->b_temp[k] = !s->b_feed_only[k] && rn_sampler_top_ok(row_sampler(s, k))
                           ? rn_sampler_temperature(row_sampler(s, k))
                           : -1.0f;
    return rn_decode_top(s->e, s->b_slot + g0, s->b_tok + g0, m, s->b_temp + g0, s->b_top + g0, lg);
}

/* Fetches the logits of the n_need rows s->b_need (indices into batch
 * rows from g0) that the sampler could not decide from their reductions,
 * and samples them; a failed fetch ends their jobs.  Returns its status. */
static int fetch_rows(rd_sched *s, int g0, int n_need)
{
    int rc = rn_decode_rows(s->e, s->b_need, n_need, s->logits + (size_t)g0 * (size_t)s->vocab);
    for (int i = 0; i < n_need; i++) {
        int k = g0 + s->b_need[i];
        rd_job *j = s->b_job[k];
        if (rc != RN_OK) {
            engine_failed(s, j);
            continue;
        }
        sample_into(s, j, &j->ch[s->b_choice[k]], s->logits + (size_t)k * (size_t)s->vocab);
    }
    return rc;
}

/* Samples the tokens of batch rows [g0, g0 + m) after run_rows: from the
 * picks, the reduced rows, or the logits, fetching the rows the reductions
 * cannot decide (fetch_rows).  Returns the fetch's status. */
static int sample_rows(rd_sched *s, int g0, int m, rd_step_kind kind)
{
    int n_need = 0;
    for (int k = g0; k < g0 + m; k++) {
        rd_job *j = s->b_job[k];
        rd_choice *c = &j->ch[s->b_choice[k]];
        rn_sample_result r;
        if (s->b_feed_only[k] || j->phase == RD_PHASE_DONE || c->finish != RD_FIN_NONE)
            continue; /* ended in this step: a failed fetch or sampling */
        if (kind == RD_STEP_PICK) {
            rn_sampler_take(c->sampler, s->b_pick[k], &r);
            atomic_fetch_add(&s->tok_picked, 1);
            push_token(s, j, c, &r);
        } else if (kind == RD_STEP_TOP && s->b_temp[k] >= 0.0f &&
                   rn_sampler_sample_top(c->sampler, &s->b_top[k], logprobs_arg(j), &r) == RN_OK) {
            atomic_fetch_add(&s->tok_reduced, 1);
            push_token(s, j, c, &r);
        } else if (kind == RD_STEP_TOP) {
            s->b_need[n_need++] = k - g0;
        } else {
            sample_into(s, j, c, s->logits + (size_t)k * (size_t)s->vocab);
        }
    }
    return n_need > 0 ? fetch_rows(s, g0, n_need) : RN_OK;
}

/* A job is done when every choice finished and, for a session, its last
 * token is in the state too. */
static int job_complete(const rd_job *j)
{
    for (int i = 0; i < j->n; i++) {
        const rd_choice *c = &j->ch[i];
        if (c->finish == RD_FIN_NONE)
            return 0;
        if (j->session_slot >= 0 && c->fed < c->n_tok)
            return 0;
    }
    return 1;
}

/* ---------------------------------------------------------- iteration */

static void decode_step(rd_sched *s)
{
    int nb = 0;
    for (int a = 0; a < s->n_active; a++) {
        rd_job *j = s->active[a];
        if (j->phase != RD_PHASE_RUNNING)
            continue;
        for (int i = 0; i < j->n; i++) {
            rd_choice *c = &j->ch[i];
            if (c->finish == RD_FIN_NONE && atomic_load(&c->stop_req)) {
                rd_queue_lock(s->q);
                c->finish = RD_FIN_STOP;
                rd_queue_unlock(s->q);
            }
            int feed_only = c->finish != RD_FIN_NONE;
            if (feed_only && !(j->session_slot >= 0 && c->fed < c->n_tok))
                continue;
            s->b_slot[nb] = c->slot;
            s->b_tok[nb] = c->tok[c->n_tok - 1];
            s->b_job[nb] = j;
            s->b_choice[nb] = i;
            s->b_feed_only[nb] = (unsigned char)feed_only;
            nb++;
        }
    }
    /* nb may be 0 when every remaining choice was just stopped: the jobs
     * still have to be completed below.  Reduced rows go through the engine
     * in groups whose logits it keeps for rn_decode_rows. */
    rd_step_kind kind = nb > 0 ? batch_kind(s, nb) : RD_STEP_LOGITS;
    int group = kind == RD_STEP_TOP ? rn_engine_top_batch(s->e) : nb, rc = RN_OK;
    group = group < 1 ? 1 : group; /* a backend's answer; never 0, or the loop would stall */
    int fault = nb > 0 && ++s->decodes == s->fail_decode;
    atomic_store(&s->last_batch, nb);
    for (int g0 = 0; g0 < nb; g0 += group) {
        int m = nb - g0 < group ? nb - g0 : group;
        if (rc == RN_OK && (rc = run_rows(s, g0, m, kind)) == RN_OK && fault) {
            rc = RN_EDEVICE; /* the test's injected engine failure */
            if (s->fail_loses)
                atomic_store(&s->lost, 1);
        }
        for (int k = g0; k < g0 + m; k++) {
            rd_job *j = s->b_job[k];
            if (rc != RN_OK) {
                engine_failed(s, j);
                continue;
            }
            rd_queue_lock(s->q);
            j->ch[s->b_choice[k]].fed = j->ch[s->b_choice[k]].n_tok;
            rd_queue_unlock(s->q);
        }
        if (rc == RN_OK) /* a failed fetch ends the later groups' jobs too: the
                          * engine reports device faults, after which it
                          * serves nothing (rn_engine's RN_EDEVICE) */
            rc = sample_rows(s, g0, m, kind);
    }
    for (int a = 0; a < s->n_active; a++)
        if (s->active[a]->phase == RD_PHASE_RUNNING && job_complete(s->active[a]))
            finish_job(s, s->active[a], 0, "");
}

/* Prompt done: fork the state into the other choices and sample each one's
 * first token from the prompt's last logits. */
static void prompt_done(rd_sched *s, rd_job *j, const float *logits)
{
    for (int i = 1; i < j->n; i++)
        rn_state_copy(s->e, j->ch[i].slot, j->ch[0].slot);
    for (int i = 0; i < j->n; i++)
        sample_into(s, j, &j->ch[i], logits);
    rd_queue_lock(s->q);
    j->phase = RD_PHASE_RUNNING;
    rd_queue_unlock(s->q);
    if (job_complete(j))
        finish_job(s, j, 0, "");
}

/* ---------------------------------------------------------- prefix cache */

/* The state after the first len tokens of some prompt (len a multiple of
 * the chunk), keyed by those tokens. */
typedef struct pc_entry {
    uint64_t hash;
    int len;
    int32_t *tokens;
    float *state;
    long last_used;
} pc_entry;

static uint64_t pc_hash(uint64_t h, const int32_t *t, int n)
{
    const unsigned char *p = (const unsigned char *)t;
    for (size_t i = 0; i < (size_t)n * sizeof *t; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

#define PC_START 0xcbf29ce484222325ull

static size_t pc_entry_bytes(const rd_sched *s, int len)
{
    return s->state_bytes + (size_t)len * sizeof(int32_t);
}

static pc_entry *pc_find(rd_sched *s, uint64_t h, const int32_t *t, int len)
{
    for (int i = 0; i < s->pc_n; i++) {
        pc_entry *e = &s->pc[i];
        if (e->hash == h && e->len == len && !memcmp(e->tokens, t, sizeof *t * (size_t)len))
            return e;
    }
    return NULL;
}

static void pc_drop(rd_sched *s, int i)
{
    s->pc_bytes -= pc_entry_bytes(s, s->pc[i].len);
    free(s->pc[i].tokens);
    free(s->pc[i].state);
    s->pc[i] = s->pc[--s->pc_n];
}

/* Keeps slot's state (after the first len tokens of t) unless present;
 * evicts least recently used entries to stay within the budget. */
static void pc_insert(rd_sched *s, int slot, uint64_t h, const int32_t *t, int len)
{
    size_t need = pc_entry_bytes(s, len);
    if (need > s->o.prefix_cache_bytes || pc_find(s, h, t, len))
        return;
    while (s->pc_n > 0 && s->pc_bytes + need > s->o.prefix_cache_bytes) {
        int old = 0;
        for (int i = 1; i < s->pc_n; i++)
            if (s->pc[i].last_used < s->pc[old].last_used)
                old = i;
        pc_drop(s, old);
    }
    if (s->pc_n == s->pc_cap) {
        int cap = s->pc_cap ? 2 * s->pc_cap : 16;
        pc_entry *p = realloc(s->pc, sizeof *p * (size_t)cap);
        if (!p)
            return;
        s->pc = p;
        s->pc_cap = cap;
    }
    pc_entry e = {h, len, malloc(sizeof *t * (size_t)len), malloc(s->state_bytes), ++s->pc_clock};
    if (!e.tokens || !e.state || rn_state_export(s->e, slot, e.state, s->state_bytes) != RN_OK) {
        free(e.tokens);
        free(e.state);
        return;
    }
    memcpy(e.tokens, t, sizeof *t * (size_t)len);
    s->pc[s->pc_n++] = e;
    s->pc_bytes += need;
}

/* Which chunk boundaries of a prompt are kept: after 1, 2, 4, 8, ... chunks
 * and after the last whole chunk before the prompt's end, so a prompt of n
 * chunks costs at most log2(n) + 1 state copies, and a later prompt sharing
 * a prefix of p tokens reuses at least half of it (all of it when p is a
 * power-of-two number of chunks, as a shared header often is not; or when
 * it is the whole earlier prompt). */
static int pc_keep_boundary(int done, int n_prompt, int chunk)
{
    if (done % chunk != 0 || done >= n_prompt)
        return 0;
    int k = done / chunk;
    return (k & (k - 1)) == 0 || done + chunk >= n_prompt;
}

/* A transient job about to prefill: continue from the longest cached
 * prefix that leaves at least one token to run (its logits start the
 * output).  Sets j->prefilled and j->cached. */
static void pc_restore(rd_sched *s, rd_job *j)
{
    int C = s->o.chunk, best = 0;
    pc_entry *hit = NULL;
    uint64_t h = PC_START;
    for (int len = C; len <= j->n_prompt - 1; len += C) {
        h = pc_hash(h, j->prompt + len - C, C);
        pc_entry *e = pc_find(s, h, j->prompt, len);
        if (e) {
            hit = e;
            best = len;
        }
    }
    if (!hit || rn_state_import(s->e, j->ch[0].slot, hit->state, s->state_bytes, best) != RN_OK)
        return;
    hit->last_used = ++s->pc_clock;
    atomic_fetch_add(&s->pc_hits, 1);
    atomic_fetch_add(&s->pc_tokens, best);
    rd_queue_lock(s->q);
    j->prefilled = best;
    j->cached = best;
    rd_queue_unlock(s->q);
}

static void pc_free(rd_sched *s)
{
    while (s->pc_n > 0)
        pc_drop(s, s->pc_n - 1);
    free(s->pc);
}

/* Prompt tokens the next prefill step will feed (at most the budget). */
static int prefill_pending(const rd_sched *s)
{
    int n = 0;
    for (int a = 0; a < s->n_active && n < s->o.prefill_budget; a++)
        if (s->active[a]->phase == RD_PHASE_PREFILL)
            n += s->active[a]->n_prompt - s->active[a]->prefilled;
    return n < s->o.prefill_budget ? n : s->o.prefill_budget;
}

static void prefill_step(rd_sched *s)
{
    int budget = s->o.prefill_budget;
    for (int a = 0; a < s->n_active && budget > 0; a++) {
        rd_job *j = s->active[a];
        if (j->phase != RD_PHASE_PREFILL)
            continue;
        int transient = j->session_slot < 0 && s->o.prefix_cache_bytes > 0;
        if (transient && j->prefilled == 0 && j->cached == 0)
            pc_restore(s, j);
        while (j->prefilled < j->n_prompt) {
            /* whole chunks from the prompt's start (a shorter one only at the
             * end), so every chunk boundary's state is reproducible */
            int m = j->n_prompt - j->prefilled;
            m = m < s->o.chunk ? m : s->o.chunk;
            if (m > budget)
                break;
            int last = j->prefilled + m == j->n_prompt;
            rn_prefill_opts po = {.form = RN_FORM_CHUNKWISE, .chunk = m};
            int rc = rn_prefill(s->e, j->ch[0].slot, j->prompt + j->prefilled, m, &po,
                                last ? s->logits : NULL);
            if (rc != RN_OK) {
                engine_failed_job(s, j, "prefill");
                break;
            }
            rd_queue_lock(s->q);
            j->prefilled += m;
            rd_queue_unlock(s->q);
            budget -= m;
            if (transient && pc_keep_boundary(j->prefilled, j->n_prompt, s->o.chunk))
                pc_insert(s, j->ch[0].slot, pc_hash(PC_START, j->prompt, j->prefilled), j->prompt,
                          j->prefilled);
            if (last)
                prompt_done(s, j, s->logits);
        }
    }
}

static void fail_everything(rd_sched *s)
{
    for (int i = 0; i < s->n_active; i++) {
        if (s->active[i]->phase != RD_PHASE_DONE)
            finish_job(s, s->active[i], 503, "server shutting down");
        rd_job_unref(s->active[i]);
    }
    s->n_active = 0;
    for (rd_job *j = s->wait_head, *n; j; j = n) {
        n = j->next_submit;
        finish_job(s, j, 503, "server shutting down");
        rd_job_unref(j);
    }
    s->wait_head = s->wait_tail = NULL;
    /* submitted after the last iteration: state operations still run (the
     * loop counts on their results to settle its sessions), the rest fail */
    for (rd_job *j = rd_queue_take_rest(s->q), *n; j; j = n) {
        n = j->next_submit;
        j->next_submit = NULL;
        if (j->op != RD_OP_RUN) {
            run_state_op(s, j);
        } else {
            finish_job(s, j, 503, "server shutting down");
            rd_job_unref(j);
        }
    }
    rd_queue_wake(s->q, 1, 0);
}

/* Prefills what the budget allows, and first sends held stream news that
 * the prefill would keep past the stream interval (its length estimated from
 * recent prefill steps; a first one counts as long). */
static void prefill_step_timed(rd_sched *s)
{
    int n = prefill_pending(s);
    if (n == 0)
        return;
    double guess = s->prefill_ns_tok > 0 ? s->prefill_ns_tok * n : 1e12;
    rd_queue_wake(s->q, 0, (uint64_t)guess); /* the next call: right after the prefill */
    uint64_t t0 = uv_hrtime();
    prefill_step(s);
    double per = (double)(uv_hrtime() - t0) / n;
    s->prefill_ns_tok = s->prefill_ns_tok > 0 ? 0.75 * s->prefill_ns_tok + 0.25 * per : per;
    /* the first tokens it made go out now, not after the decode step */
    rd_queue_wake(s->q, 0, s->iter_ns);
}

/* After an iteration: once the engine says its device failed for good
 * (rn_engine_lost), every later call of it fails, so the loop is told
 * (rd_sched_lost) and the server stops to be restarted. */
static void note_lost(rd_sched *s)
{
    if (atomic_load(&s->lost) == 0 && rn_engine_lost(s->e))
        atomic_store(&s->lost, 1);
    if (atomic_load(&s->lost) == 1) {
        atomic_store(&s->lost, 2); /* the loop is woken once */
        rd_queue_wake(s->q, 1, 0);
    }
}

int rd_sched_lost(rd_sched *s)
{
    return atomic_load(&s->lost) != 0;
}

static void engine_main(void *arg)
{
    rd_sched *s = arg;
    for (;;) {
        int idle = s->n_active == 0 && !s->wait_head;
        take_new(s, idle);
        if (rd_queue_stopping(s->q))
            break;
        uint64_t t0 = uv_hrtime();
        drop_cancelled(s);
        admit(s);
        /* prefill first: a request admitted now gets its first token now and
         * joins this iteration's decode, where after the decode it waited
         * one more step (time to first token at 8 / 32 streams on 2 cores:
         * 3.1 / 10.7 ms before, 1.9 / 5.8 ms after, throughput unchanged) */
        prefill_step_timed(s);
        decode_step(s);
        note_lost(s);
        drop_cancelled(s); /* also removes jobs that just finished */
        /* the next iteration is taken to be as long as this one */
        s->iter_ns = uv_hrtime() - t0;
        rd_queue_wake(s->q, s->n_active == 0 && !s->wait_head, s->iter_ns);
    }
    fail_everything(s);
}

/* --------------------------------------------------------------- setup */

static void sched_free(rd_sched *s)
{
    pc_free(s);
    free(s->slot_used);
    free(s->active);
    rn_engine_host_free(s->e, s->logits);
    free(s->b_slot);
    free(s->b_tok);
    free(s->b_job);
    free(s->b_choice);
    free(s->b_feed_only);
    free(s->b_pick);
    free(s->b_temp);
    rn_engine_host_free(s->e, s->b_top);
    free(s->b_need);
    uv_mutex_destroy(&s->slot_mu);
    free(s);
}

int rd_sched_start(rd_sched **out, rn_engine *e, rd_queue *q, const rd_sched_opts *o)
{
    rd_sched *s = calloc(1, sizeof *s);
    *out = NULL;
    if (!s || uv_mutex_init(&s->slot_mu) != 0) {
        free(s);
        return -1;
    }
    s->e = e;
    s->q = q;
    s->o = *o;
    s->vocab = rn_engine_vocab(e);
    s->state_bytes = rn_engine_state_bytes(e);
    /* Fault injection for the fault tests (tests/integration/test_faults.py):
     * the n-th batched decode step (all its engine calls) reports an engine
     * error. */
    const char *fault = getenv("RETNETD_FAULT_DECODE");
    s->fail_decode = fault ? atol(fault) : 0;
    /* RETNETD_FAULT_LOST=1: that failure also loses the device for good, as
     * a GPU fault does (the engine itself stays usable: only the server's
     * reaction is tested) */
    const char *lost = getenv("RETNETD_FAULT_LOST");
    s->fail_loses = lost && !strcmp(lost, "1");
    if (s->o.prefill_budget < s->o.chunk)
        s->o.prefill_budget = s->o.chunk; /* prefill advances in whole chunks */
    size_t n = (size_t)o->n_slots;
    s->slot_used = calloc(n, 1);
    s->logits = rn_engine_host_alloc(e, sizeof(float) * n * (size_t)s->vocab);
    s->b_slot = malloc(sizeof(int) * n);
    s->b_tok = malloc(sizeof(int32_t) * n);
    s->b_job = malloc(sizeof(rd_job *) * n);
    s->b_choice = malloc(sizeof(int) * n);
    s->b_feed_only = malloc(n);
    s->b_pick = malloc(sizeof(int32_t) * n);
    s->b_temp = malloc(sizeof(float) * n);
    s->b_top = rn_engine_host_alloc(e, sizeof(rn_row_top) * n);
    s->b_need = malloc(sizeof(int) * n);
    if (!s->slot_used || !s->logits || !s->b_slot || !s->b_tok || !s->b_job || !s->b_choice ||
        !s->b_feed_only || !s->b_pick || !s->b_temp || !s->b_top || !s->b_need ||
        uv_thread_create(&s->thread, engine_main, s) != 0) {
        sched_free(s);
        return -1;
    }
    *out = s;
    return 0;
}

void rd_sched_stop(rd_sched *s)
{
    if (!s)
        return;
    rd_queue_stop(s->q);
    uv_thread_join(&s->thread);
    sched_free(s);
}
