/* The CUDA emulation's runtime (tests/unit/cuda_emu.cc, kernels in
 * emu_runtime.cc): a block's barrier holds every thread until all have
 * arrived, in blocks of 1 to 1024 threads, in one and two dimensions and
 * with the blocks run in either order; a warp's shuffles and votes see all
 * 32 lanes; threads that wait at a barrier no thread can fill abort the
 * test (the device would hang) instead of hanging it. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "suites.h"

int rn_emu_rt_neighbour(unsigned blocks, unsigned threads, unsigned ty, unsigned *out);
int rn_emu_rt_warp(float *sums, unsigned *votes);
int rn_emu_rt_divergent(unsigned threads);
extern int rn_emu_blocks_reversed;

static const unsigned rt_shapes[][3] = {
    /* blocks, threads, rows of threads */
    {1, 1, 1}, {3, 32, 1}, {2, 33, 1}, {4, 256, 2}, {2, 1024, 1}, {2, 1024, 4},
};
enum { N_RT_SHAPES = sizeof rt_shapes / sizeof rt_shapes[0] };

START_TEST(test_emu_barrier_holds_every_thread)
{
    const unsigned *sh = rt_shapes[_i / 2];
    unsigned blocks = sh[0], n = sh[1], total = blocks * n;
    unsigned *out = malloc(sizeof(unsigned) * total);
    ck_assert_ptr_nonnull(out);
    rn_emu_blocks_reversed = _i % 2;
    ck_assert_int_eq(rn_emu_rt_neighbour(blocks, n, sh[2], out), 0);
    rn_emu_blocks_reversed = 0;
    for (unsigned b = 0; b < blocks; b++)
        for (unsigned t = 0; t < n; t++)
            ck_assert_uint_eq(out[b * n + t], (t + 1) % n + 1000u * b);
    free(out);
}
END_TEST

START_TEST(test_emu_warp_exchanges)
{
    float sums[32];
    unsigned votes[32];
    ck_assert_int_eq(rn_emu_rt_warp(sums, votes), 0);
    for (int l = 0; l < 32; l++) {
        ck_assert_float_eq(sums[l], 32.0f * 33.0f / 2.0f);
        ck_assert_uint_eq(votes[l], 0xaaaaaaaau);
    }
}
END_TEST

START_TEST(test_emu_refuses_bad_blocks)
{
    unsigned out[1];
    ck_assert_int_eq(rn_emu_rt_neighbour(1, 0, 1, out), -1);
    unsigned *big = malloc(sizeof(unsigned) * 1025);
    ck_assert_ptr_nonnull(big);
    ck_assert_int_eq(rn_emu_rt_neighbour(1, 1025, 1, big), -1);
    free(big);
}
END_TEST

/* In a child of its own, so the runner survives in CK_FORK=no too. */
START_TEST(test_emu_unfillable_barrier_aborts)
{
    int status = 0;
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        /* the runtime's message would read as a failure in the suite's log */
        if (!freopen("/dev/null", "w", stderr))
            _exit(2);
        rn_emu_rt_divergent(64); /* must not return */
        _exit(0);
    }
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFSIGNALED(status));
    ck_assert_int_eq(WTERMSIG(status), SIGABRT);
}
END_TEST

Suite *emu_runtime_suite(void)
{
    Suite *s = suite_create("emu_runtime");
    TCase *tc = tcase_create("runtime");
    tcase_add_loop_test(tc, test_emu_barrier_holds_every_thread, 0, 2 * N_RT_SHAPES);
    tcase_add_test(tc, test_emu_warp_exchanges);
    tcase_add_test(tc, test_emu_refuses_bad_blocks);
    tcase_add_test(tc, test_emu_unfillable_barrier_aborts);
    suite_add_tcase(s, tc);
    return s;
}
