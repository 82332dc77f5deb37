/*
 * pool.c -- see pool.h.
 *
 * A run is published by bumping an atomic generation counter; items are
 * handed out by an atomic index; the caller waits for an atomic count of busy
 * workers.  Decode issues a few hundred short runs per token, so waking
 * sleeping threads through the kernel for each one would cost more than the
 * work itself: workers spin (with a pause hint) for a while after a run and
 * only then sleep on the condition variable.  The sleeper count and the
 * generation are sequentially consistent atomics, so a publisher either sees
 * a sleeper and broadcasts (under the mutex), or the sleeper sees the new
 * generation before it waits; no wake-up is lost.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "../status.h"
#include "pool.h"

#define SPIN_ROUNDS 4000 /* ~0.1 ms of pause instructions, then sleep */
#define YIELD_AFTER 256  /* waiting caller: give the CPU away when others need it */

struct rn_pool {
    int n_threads;
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t wake;
    atomic_ulong generation;
    atomic_int stop;
    atomic_int sleepers;
    atomic_int busy; /* workers still inside the current run */
    rn_pool_fn fn;
    void *ctx;
    int n;
    atomic_int next;
};

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static void drain(rn_pool *p)
{
    for (;;) {
        int i = atomic_fetch_add(&p->next, 1);
        if (i >= p->n)
            break;
        p->fn(p->ctx, i);
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

static void *worker(void *arg)
{
    rn_pool *p = arg;
    unsigned long seen = 0;
    for (;;) {
        wait_for_work(p, seen);
        if (atomic_load(&p->stop))
            break;
        seen = atomic_load(&p->generation);
        drain(p);
        atomic_fetch_sub(&p->busy, 1);
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
    p->fn = fn;
    p->ctx = ctx;
    p->n = n;
    atomic_store(&p->next, 0);
    atomic_store(&p->busy, p->n_threads - 1);
    atomic_fetch_add(&p->generation, 1); /* publishes fn, ctx, n */
    wake_sleepers(p);
    drain(p);
    /* A worker still busy may be waiting for a CPU (more runnable threads
     * than cores): spin briefly, then yield so it can run. */
    for (int spins = 0; atomic_load(&p->busy) > 0; spins++) {
        if (spins < YIELD_AFTER)
            cpu_relax();
        else
            sched_yield();
    }
}

int rn__pool_threads(const rn_pool *p)
{
    return p->n_threads;
}
