/*
 * fixture.h -- helpers shared by the tests: reference fixtures
 * (tests/fixtures/<name>/, written by tools/make_fixtures.py) and
 * comparisons that print the worst element on failure.
 */
#ifndef RN_TEST_FIXTURE_H
#define RN_TEST_FIXTURE_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "retnet.h"
#include "safetensors.h"

#define N_FIXTURES 7
extern const char *const fixture_names[N_FIXTURES];

typedef struct fixture {
    char dir[512];
    rn_model *model;
    rn_st_file *ref;
    const rn_config *cfg;
    int B, T;
    int32_t *tokens; /* B x T */
} fixture;

/* Loads tests/fixtures/<name> (RN_FIXTURES overrides the root); aborts the
 * test with a message on failure.  Free with fixture_free. */
void fixture_load(fixture *f, const char *name);
void fixture_free(fixture *f);
/* A reference tensor as a new malloc'd fp32 array (caller frees), or NULL if
 * absent; *numel set. */
float *fixture_tensor(const fixture *f, const char *name, size_t *numel);
/* Engine options for the suites: the CPU backend, or the CUDA one when
 * RN_TEST_DEVICE=cuda (make check-cuda runs the suites that way); 2 threads. */
rn_engine_opts fixture_opts(int n_slots, int max_chunk);
/* An engine on the fixture's model with options o; aborts the test on failure. */
rn_engine *fixture_engine_opts(const fixture *f, const rn_engine_opts *o);
/* fixture_engine_opts with fixture_opts(n_slots, max_chunk). */
rn_engine *fixture_engine(const fixture *f, int n_slots, int max_chunk);
int fixture_on_cuda(void);
/* Slot's state as rn_state_export writes it, in a new malloc'd array
 * (caller frees); aborts the test on failure. */
float *fixture_state(rn_engine *e, int slot);
/* Sets name=value in the environment and returns what it was (malloc'd, or
 * NULL when unset), for fixture_env_restore, which puts it back and frees it. */
char *fixture_env_set(const char *name, const char *value);
void fixture_env_restore(const char *name, char *saved);
/* Two engines on f's model with options o (nb slots): nb slots of each take
 * the same different-length prompts in a slot order that is not the
 * identity; then `steps` decode steps run as one batch on one engine and
 * slot by slot on the other.  Asserts that logits, states and positions are
 * bit for bit the same.  On the GPU a sequence's bits are its own while its
 * batch stays on one decode path (the GEMV, by default 1-2 rows, and the
 * tensor-core GEMV, 3-16, round and sum differently; cuBLASLt's kernels
 * sum in an order that depends on the batch), so the engines are made with
 * RETNET_CUDA_GEMV_MAX=8, which sends 1 and nb <= 8 rows alike through the
 * GEMV, whatever the defaults; except when
 * the environment sends single rows and batches of nb alike through the
 * tensor-core GEMV (RETNET_CUDA_GEMV_MAX=0, RETNET_CUDA_TC_MAX >= nb, nb
 * <= 16, a model it takes), whose sums do not depend on the batch within
 * one 16-row tile either. */
void fixture_check_batched_is_single(const fixture *f, const rn_engine_opts *o, int nb, int steps);

/* The tensor-core GEMV shapes (input width, outputs, rows) on which the
 * form suite compares 8 and 16 loads in flight on a GPU; the plan suite
 * checks, on any machine, that planned for one SM they do take 16. */
#define FIXTURE_TC_LOADS_SHAPES 4
extern const int fixture_tc_loads_shapes[FIXTURE_TC_LOADS_SHAPES][3];

/* A new empty directory $TMPDIR/rn-check-<tag>-XXXXXX (path in dir); aborts
 * the test on failure.  test_dir_remove deletes it with its contents. */
void test_dir_create(char *dir, size_t cap, const char *tag);
void test_dir_remove(const char *dir);

/* Two reductions of a row of V agree: the same candidates bit for bit,
 * and sums within what adding V terms in another order may move them, 4 V
 * double epsilons relative, at least 1e-12 (both NaN where the row's
 * largest value is infinite); what names the row in a failure. */
struct rn_row_top;
void fixture_check_same_top(const struct rn_row_top *got, const struct rn_row_top *want, int V,
                            const char *what);
/* The first five rows of W logits each at l that the tests of
 * the sampling reduction share: values spread by the generator from seed,
 * W / 7 ties at the top, nothing above -inf (-inf and NaN), zeros of both
 * signs, and a ramp of 100 steps; each test adds rows of its own. */
void fixture_top_rows(float *l, int W, uint32_t seed);

/* max |a - b| over n values; *worst = its index */
double max_abs_diff(const float *a, const float *b, size_t n, size_t *worst);
double max_abs(const float *a, size_t n);

#endif
