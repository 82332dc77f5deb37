/* pool.c -- see pool.h.  A generation counter wakes the workers; an atomic
 * index hands out work items; the last finisher signals the caller. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "../status.h"
#include "pool.h"

struct rn_pool {
    int n_threads;
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t wake, done;
    unsigned long generation;
    int stop;
    int busy; /* workers still inside the current run */
    rn_pool_fn fn;
    void *ctx;
    int n;
    atomic_int next;
};

static void drain(rn_pool *p)
{
    for (;;) {
        int i = atomic_fetch_add(&p->next, 1);
        if (i >= p->n)
            break;
        p->fn(p->ctx, i);
    }
}

static void *worker(void *arg)
{
    rn_pool *p = arg;
    unsigned long seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && p->generation == seen)
            pthread_cond_wait(&p->wake, &p->mu);
        if (p->stop)
            break;
        seen = p->generation;
        pthread_mutex_unlock(&p->mu);
        drain(p);
        pthread_mutex_lock(&p->mu);
        if (--p->busy == 0)
            pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
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
    pthread_cond_init(&p->done, NULL);
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
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; p->threads && i < p->n_threads; i++)
        pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->done);
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
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->ctx = ctx;
    p->n = n;
    atomic_store(&p->next, 0);
    p->busy = p->n_threads - 1;
    p->generation++;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    drain(p);
    pthread_mutex_lock(&p->mu);
    while (p->busy > 0)
        pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

int rn__pool_threads(const rn_pool *p)
{
    return p->n_threads;
}
