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
/* An engine on the fixture's model: on the CPU backend, or on the CUDA one
 * when RN_TEST_DEVICE=cuda (make check-cuda runs the suites that way). */
rn_engine *fixture_engine(const fixture *f, int n_slots, int max_chunk);
int fixture_on_cuda(void);

/* A new empty directory $TMPDIR/rn-check-<tag>-XXXXXX (path in dir); aborts
 * the test on failure.  test_dir_remove deletes it with its contents. */
void test_dir_create(char *dir, size_t cap, const char *tag);
void test_dir_remove(const char *dir);

/* max |a - b| over n values; *worst = its index */
double max_abs_diff(const float *a, const float *b, size_t n, size_t *worst);
double max_abs(const float *a, size_t n);

#endif
