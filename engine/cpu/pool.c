/*
 * pool.c -- see pool.h.
 *
 * A run is published under a sequence counter (a seqlock): the caller makes
 * `generation` odd, stores fn, ctx and n, resets the item counter `next`
 * (tagged with the run's number) and the completion count, then makes it even
 * again.  Workers take items by compare-and-swap on `next`, which fails once
 * the tag is no longer their run's, and count each finished item in `done`.
 * The caller drains items too and returns when done == n: it waits only for
 * items some thread has actually taken, never for a worker that has not yet
 * been scheduled, and sleeps (rather than yields) when one of them is slow.
 * That matters when threads outnumber cores (the server's HTTP thread beside
 * the engine's): waiting for every worker to check in, in sched_yield, cost
 * a fifth of the server's CPU there.
 *
 * Decode issues a few hundred short runs per token, so waking sleeping
 * threads through the kernel for each one would cost more than the work
 * itself: workers spin (with a pause hint) for a while after a run and only
 * then sleep on the condition variable.  The sleeper count and the
 * generation are sequentially consistent atomics, so a publisher either sees
 * a sleeper and broadcasts (under the mutex), or the sleeper sees the new
 * generation before it waits; no wake-up is lost.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "../status.h"
#include "pool.h"

#define SPIN_ROUNDS 4000 /* ~0.1 ms of pause instructions, then sleep */
#define WAIT_SPINS 2000  /* waiting caller: ~50 us of pause instructions, then sleep */

struct rn_pool {
    int n_threads;
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t wake;
    pthread_cond_t finished; /* the caller sleeps on it for taken items */
    atomic_int waiting;      /* the caller is (about to be) asleep on finished */
    atomic_ulong generation; /* odd while a run is being published */
    atomic_int stop;
    atomic_int sleepers;
    _Atomic(rn_pool_fn) fn;
    _Atomic(void *) ctx;
    atomic_int n;
    atomic_uint_least64_t next; /* run tag << 32 | next item */
    atomic_int done;            /* items of the current run finished */
};

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* The tag of the run published at (even) generation g. */
static uint64_t run_tag(unsigned long g)
{
    return (uint64_t)((g >> 1) & 0xffffffffu) << 32;
}

/* Runs items of the run tagged tag until none is left or the run is over. */
static void drain(rn_pool *p, uint64_t tag, rn_pool_fn fn, void *ctx, int n)
{
    for (;;) {
        uint64_t v = atomic_load(&p->next);
        if ((v & ~(uint64_t)0xffffffffu) != tag || (int)(v & 0xffffffffu) >= n)
            return;
        if (!atomic_compare_exchange_weak(&p->next, &v, v + 1))
            continue;
        fn(ctx, (int)(v & 0xffffffffu));
        if (atomic_fetch_add(&p->done, 1) == n - 1 && atomic_load(&p->waiting)) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->finished);
            pthread_mutex_unlock(&p->mu);
        }
    }
}

/* Returns when the generation differs from seen or the pool stops. */
static void wait_for_work(rn_pool *p, unsigned long seen)
{
    for (int s = 0; s < SPIN_ROUNDS; s++) {
        if (atomic_load(&p->generation) != seen || atomic_load(&p->stop))
            return;
        cpu_relax();
    }
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add(&p->sleepers, 1);
    while (atomic_load(&p->generation) == seen && !atomic_load(&p->stop))
        pthread_cond_wait(&p->wake, &p->mu);
    atomic_fetch_sub(&p->sleepers, 1);
    pthread_mutex_unlock(&p->mu);
}

/* Reads a consistent (generation, fn, ctx, n) of a published run and drains
 * it; *seen becomes that generation. */
static void join_run(rn_pool *p, unsigned long *seen)
{
    unsigned long g;
    rn_pool_fn fn;
    void *ctx;
    int n;
    for (;;) {
        g = atomic_load(&p->generation);
        if (g & 1) { /* being published */
            cpu_relax();
            continue;
        }
        fn = atomic_load(&p->fn);
        ctx = atomic_load(&p->ctx);
        n = atomic_load(&p->n);
        if (atomic_load(&p->generation) == g)
            break;
    }
    *seen = g;
    drain(p, run_tag(g), fn, ctx, n);
}

static void *worker(void *arg)
{
    rn_pool *p = arg;
    unsigned long seen = 0;
    for (;;) {
        wait_for_work(p, seen);
        if (atomic_load(&p->stop))
            break;
        join_run(p, &seen);
    }
    return NULL;
}

static void wake_sleepers(rn_pool *p)
{
    if (atomic_load(&p->sleepers) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->wake);
        pthread_mutex_unlock(&p->mu);
    }
}

int rn__pool_new(rn_pool **out, int n_threads)
{
    rn_pool *p = calloc(1, sizeof *p);
    *out = NULL;
    if (!p)
        return RN_ENOMEM;
    p->n_threads = n_threads < 1 ? 1 : n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->finished, NULL);
    p->threads = calloc((size_t)p->n_threads, sizeof *p->threads);
    if (!p->threads) {
        rn__pool_free(p);
        return RN_ENOMEM;
    }
    for (int i = 1; i < p->n_threads; i++) {
        if (pthread_create(&p->threads[i], NULL, worker, p) != 0) {
            p->n_threads = i; /* join the ones that started */
            rn__pool_free(p);
            return RN_ENOMEM;
        }
    }
    *out = p;
    return RN_OK;
}

void rn__pool_free(rn_pool *p)
{
    if (!p)
        return;
    atomic_store(&p->stop, 1);
    pthread_mutex_lock(&p->mu);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; p->threads && i < p->n_threads; i++)
        pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->finished);
    free(p->threads);
    free(p);
}

void rn__pool_run(rn_pool *p, int n, rn_pool_fn fn, void *ctx)
{
    if (n <= 0)
        return;
    if (p->n_threads == 1 || n == 1) {
        for (int i = 0; i < n; i++)
            fn(ctx, i);
        return;
    }
    unsigned long g = atomic_load(&p->generation) + 2; /* only this thread writes it */
    atomic_store(&p->generation, g - 1);               /* odd: publishing */
    atomic_store(&p->fn, fn);
    atomic_store(&p->ctx, ctx);
    atomic_store(&p->n, n);
    atomic_store(&p->done, 0);
    atomic_store(&p->next, run_tag(g));
    atomic_store(&p->generation, g);
    wake_sleepers(p);
    drain(p, run_tag(g), fn, ctx, n);
    /* only items another thread has taken are left: it is running them.
     * If they take longer than a short spin, that thread has probably lost
     * its CPU (more runnable threads than cores): sleep rather than yield,
     * so this core goes idle and the scheduler can move it here. */
    for (int spins = 0; spins < WAIT_SPINS; spins++) {
        if (atomic_load(&p->done) >= n)
            return;
        cpu_relax();
    }
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->waiting, 1);
    while (atomic_load(&p->done) < n)
        pthread_cond_wait(&p->finished, &p->mu);
    atomic_store(&p->waiting, 0);
    pthread_mutex_unlock(&p->mu);
}

int rn__pool_threads(const rn_pool *p)
{
    return p->n_threads;
}
