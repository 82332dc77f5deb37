/*
 * pool.h -- a fixed team of worker threads for data-parallel loops.
 *
 * rn__pool_run(p, n, fn, ctx) calls fn(ctx, i) for i in [0, n) spread over the
 * workers and the calling thread, and returns when all calls are done.  Which
 * thread runs which i is not fixed, so fn must give the same result whatever
 * thread runs it (every kernel here writes disjoint outputs).  One caller at a
 * time.  Workers sleep on a condition variable between runs.
 */
#ifndef RN_POOL_H
#define RN_POOL_H

typedef struct rn_pool rn_pool;
typedef void (*rn_pool_fn)(void *ctx, int i);

/* Starts n_threads - 1 workers (the caller is the n-th).  Returns 0 and sets
 * *out (owned by the caller, rn__pool_free), or a negative rn_status. */
int rn__pool_new(rn_pool **out, int n_threads);
void rn__pool_free(rn_pool *p);
void rn__pool_run(rn_pool *p, int n, rn_pool_fn fn, void *ctx);
int rn__pool_threads(const rn_pool *p);

#endif
