/*
 * check_pool.c -- the CPU backend's worker pool (engine/cpu/pool.c):
 * every item of every run is executed exactly once and is finished when
 * rn__pool_run returns, also with more threads than cores (workers that
 * arrive late must not run or count items of a later run) and when runs
 * follow each other without pause.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "cpu/pool.h"
#include "suites.h"

enum { MAX_ITEMS = 97 };

typedef struct {
    atomic_int hits[MAX_ITEMS];
    int run; /* which run the items belong to */
    int stamp[MAX_ITEMS];
    int slow; /* item 0 sleeps, so the caller has to wait for it */
} pool_probe;

static void probe_task(void *ctx, int i)
{
    pool_probe *p = ctx;
    if (p->slow && i == 0)
        nanosleep(&(struct timespec){0, 200000}, NULL);
    atomic_fetch_add(&p->hits[i], 1);
    p->stamp[i] = p->run; /* plain store: must be visible to the caller after the run */
}

static void check_runs(int threads, int runs, int slow_every)
{
    rn_pool *pool;
    ck_assert_int_eq(rn__pool_new(&pool, threads), 0);
    pool_probe *p = calloc(1, sizeof *p);
    ck_assert_ptr_nonnull(p);
    for (int r = 0; r < runs; r++) {
        int n = 1 + (r * 31) % MAX_ITEMS;
        for (int i = 0; i < MAX_ITEMS; i++)
            atomic_store(&p->hits[i], 0);
        p->run = r;
        p->slow = slow_every && r % slow_every == 0;
        rn__pool_run(pool, n, probe_task, p);
        for (int i = 0; i < MAX_ITEMS; i++) {
            int h = atomic_load(&p->hits[i]);
            ck_assert_msg(h == (i < n), "run %d (n %d): item %d ran %d times", r, n, i, h);
            if (i < n)
                ck_assert_int_eq(p->stamp[i], r);
        }
    }
    rn__pool_free(pool);
    free(p);
}

START_TEST(test_pool_runs_every_item_once)
{
    check_runs(2, 20000, 0);
}
END_TEST

START_TEST(test_pool_oversubscribed)
{
    /* 6 threads on whatever cores CI has: workers are often descheduled */
    check_runs(6, 5000, 0);
}
END_TEST

START_TEST(test_pool_waits_for_slow_items)
{
    check_runs(3, 400, 3);
}
END_TEST

START_TEST(test_pool_single_thread)
{
    check_runs(1, 200, 0);
}
END_TEST

Suite *pool_suite(void)
{
    Suite *s = suite_create("pool");
    TCase *tc = tcase_create("pool");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_pool_runs_every_item_once);
    tcase_add_test(tc, test_pool_oversubscribed);
    tcase_add_test(tc, test_pool_waits_for_slow_items);
    tcase_add_test(tc, test_pool_single_thread);
    suite_add_tcase(s, tc);
    return s;
}
