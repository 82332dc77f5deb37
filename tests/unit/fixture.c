/* fixture.c -- see fixture.h. */
#include <check.h>
#include <errno.h>
#include <float.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fixture.h"
#include "cuda/plan.h"
#include "sampler.h"

/* "demo" is the shipped model (models/, or RN_DEMO_MODEL) against the
 * reference its training framework computed (tests/fixtures/demo/). */
const char *const fixture_names[N_FIXTURES] = {"ts",  "ts_deepnorm", "yar", "yar_postnorm",
                                               "fla", "fla_bf16",    "demo"};

static const char *fixture_root(void)
{
    const char *r = getenv("RN_FIXTURES");
    return r ? r : "tests/fixtures";
}

void fixture_load(fixture *f, const char *name)
{
    rn_error err = {0};
    char path[600];
    memset(f, 0, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "%s/%s", fixture_root(), name);
    snprintf(path, sizeof path, "%s/reference.safetensors", f->dir);
    const char *model_dir = f->dir;
    if (strcmp(name, "demo") == 0)
        model_dir = getenv("RN_DEMO_MODEL") ? getenv("RN_DEMO_MODEL") : "models";
    ck_assert_msg(rn_model_load(&f->model, model_dir, &err) == RN_OK, "load %s: %s", model_dir,
                  err.msg);
    ck_assert_msg(rn_st_open(&f->ref, path, &err) == RN_OK, "%s", err.msg);
    f->cfg = rn_model_config(f->model);
    const rn_st_entry *t = rn_st_find(f->ref, "tokens");
    ck_assert_msg(t && t->dtype == RN_DT_I32 && t->ndim == 2, "%s: bad tokens", path);
    f->B = (int)t->shape[0];
    f->T = (int)t->shape[1];
    f->tokens = malloc(sizeof(int32_t) * (size_t)t->numel);
    ck_assert_ptr_nonnull(f->tokens);
    memcpy(f->tokens, rn_st_data(f->ref, t), sizeof(int32_t) * (size_t)t->numel);
}

void fixture_free(fixture *f)
{
    free(f->tokens);
    rn_st_close(f->ref);
    rn_model_free(f->model);
    memset(f, 0, sizeof *f);
}

float *fixture_tensor(const fixture *f, const char *name, size_t *numel)
{
    const rn_st_entry *e = rn_st_find(f->ref, name);
    if (!e)
        return NULL;
    float *out = malloc(sizeof(float) * ((size_t)e->numel + 1));
    ck_assert_ptr_nonnull(out);
    rn_to_f32(out, rn_st_data(f->ref, e), e->dtype, (size_t)e->numel);
    *numel = (size_t)e->numel;
    return out;
}

int fixture_on_cuda(void)
{
    const char *d = getenv("RN_TEST_DEVICE");
    return d && !strcmp(d, "cuda");
}

rn_engine_opts fixture_opts(int n_slots, int max_chunk)
{
    rn_engine_opts o = {.device = fixture_on_cuda() ? RN_DEVICE_CUDA : RN_DEVICE_CPU,
                        .n_slots = n_slots,
                        .n_threads = 2,
                        .max_chunk = max_chunk};
    return o;
}

rn_engine *fixture_engine_opts(const fixture *f, const rn_engine_opts *o)
{
    rn_engine *e = NULL;
    rn_error err = {0};
    ck_assert_msg(rn_engine_new(&e, f->model, o, &err) == RN_OK, "%s: engine: %s", f->dir, err.msg);
    return e;
}

rn_engine *fixture_engine(const fixture *f, int n_slots, int max_chunk)
{
    rn_engine_opts o = fixture_opts(n_slots, max_chunk);
    return fixture_engine_opts(f, &o);
}

double max_abs_diff(const float *a, const float *b, size_t n, size_t *worst)
{
    double m = 0.0;
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > m || isnan(d)) {
            m = isnan(d) ? INFINITY : d;
            w = i;
        }
    }
    if (worst)
        *worst = w;
    return m;
}

double max_abs(const float *a, size_t n)
{
    double m = 0.0;
    for (size_t i = 0; i < n; i++)
        m = fabs((double)a[i]) > m ? fabs((double)a[i]) : m;
    return m;
}

void test_dir_create(char *dir, size_t cap, const char *tag)
{
    const char *base = getenv("TMPDIR");
    if (!base || !*base)
        base = "/tmp";
    snprintf(dir, cap, "%s/rn-check-%s-XXXXXX", base, tag);
    ck_assert_msg(mkdtemp(dir) != NULL, "mkdtemp %s: %s", dir, strerror(errno));
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void test_dir_remove(const char *dir)
{
    nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

float *fixture_state(rn_engine *e, int slot)
{
    size_t sb = rn_engine_state_bytes(e);
    float *s = malloc(sb);
    ck_assert_ptr_nonnull(s);
    ck_assert_int_eq(rn_state_export(e, slot, s, sb), RN_OK);
    return s;
}

const int fixture_tc_loads_shapes[FIXTURE_TC_LOADS_SHAPES][3] = {
    {1024, 62, 16}, {2048, 48, 5}, {520, 34, 3}, {4096, 16, 1}};

char *fixture_env_set(const char *name, const char *value)
{
    const char *was = getenv(name);
    char *saved = was ? strdup(was) : NULL;
    ck_assert(!was || saved);
    setenv(name, value, 1);
    return saved;
}

void fixture_env_restore(const char *name, char *saved)
{
    if (saved)
        setenv(name, saved, 1);
    else
        unsetenv(name);
    free(saved);
}

void fixture_check_batched_is_single(const fixture *f, const rn_engine_opts *o, int nb, int steps)
{
    const char *tc = getenv("RETNET_CUDA_TC_MAX"), *gm = getenv("RETNET_CUDA_GEMV_MAX");
    int keep = tc && atoi(tc) >= nb && nb <= 16 && gm && atoi(gm) == 0 &&
               rn_cuda_tc_weights_fit(rn_model_weights(f->model), f->cfg->n_layers);
    char *saved = keep ? NULL : fixture_env_set("RETNET_CUDA_GEMV_MAX", "8");
    rn_engine *batched = fixture_engine_opts(f, o), *single = fixture_engine_opts(f, o);
    if (!keep)
        fixture_env_restore("RETNET_CUDA_GEMV_MAX", saved);
    int V = f->cfg->vocab_size, *slots = malloc(sizeof(int) * (size_t)nb);
    int32_t *next = malloc(sizeof(int32_t) * (size_t)nb);
    float *lb = malloc(sizeof(float) * (size_t)nb * (size_t)V),
          *ls = malloc(sizeof(float) * (size_t)nb * (size_t)V);
    ck_assert(slots && next && lb && ls);
    rn_prefill_opts po = {.form = RN_FORM_CHUNKWISE, .chunk = 16};
    for (int s = 0; s < nb; s++) { /* different prompts and lengths: mixed positions */
        int len = 5 + 9 * s;
        slots[s] = nb - 1 - s;
        ck_assert_int_eq(rn_prefill(batched, slots[s], f->tokens + s, len, &po, NULL), RN_OK);
        ck_assert_int_eq(rn_prefill(single, slots[s], f->tokens + s, len, &po, NULL), RN_OK);
        next[s] = f->tokens[f->T + s];
    }
    for (int step = 0; step < steps; step++) {
        ck_assert_int_eq(rn_decode(batched, slots, next, nb, lb), RN_OK);
        for (int s = 0; s < nb; s++)
            ck_assert_int_eq(rn_decode(single, &slots[s], &next[s], 1, ls + (size_t)s * V), RN_OK);
        ck_assert_msg(memcmp(lb, ls, sizeof(float) * (size_t)nb * (size_t)V) == 0,
                      "%s step %d: batched logits differ from single decodes", f->dir, step);
        for (int s = 0; s < nb; s++)
            next[s] = (next[s] * 7 + 3) % V;
    }
    for (int s = 0; s < nb; s++) {
        float *a = fixture_state(batched, s), *b = fixture_state(single, s);
        ck_assert_msg(memcmp(a, b, rn_engine_state_bytes(batched)) == 0, "%s: state %d differs",
                      f->dir, s);
        ck_assert_int_eq(rn_state_pos(batched, s), rn_state_pos(single, s));
        free(a);
        free(b);
    }
    free(slots);
    free(next);
    free(lb);
    free(ls);
    rn_engine_free(batched);
    rn_engine_free(single);
}

void fixture_top_rows(float *l, int W, uint32_t seed)
{
    const float inf = INFINITY;
    for (int i = 0; i < W; i++) {
        seed = seed * 1664525u + 1013904223u;
        l[0 * W + i] = (float)(seed >> 8) * 0x1p-20f - 8.0f;
        l[1 * W + i] = (float)(i % 7);
        l[2 * W + i] = i % 3 ? -inf : NAN;
        l[3 * W + i] = i % 3 == 0 ? 0.0f : i % 3 == 1 ? -0.0f : -1.0f;
        l[4 * W + i] = (float)(i % 100) * 0.01f;
    }
}

void fixture_check_same_top(const rn_row_top *got, const rn_row_top *want, int V, const char *what)
{
    double tol = 4.0 * V * DBL_EPSILON > 1e-12 ? 4.0 * V * DBL_EPSILON : 1e-12;
    ck_assert_msg(got->n == want->n, "%s: %d candidates, want %d", what, got->n, want->n);
    ck_assert_msg(!memcmp(got->id, want->id, sizeof(int32_t) * (size_t)want->n) &&
                      !memcmp(got->logit, want->logit, sizeof(float) * (size_t)want->n),
                  "%s: other candidates (first: %d vs %d)", what, got->id[0], want->id[0]);
    const double g[2] = {got->z1, got->zt}, w[2] = {want->z1, want->zt};
    for (int i = 0; i < 2; i++)
        ck_assert_msg((isnan(g[i]) && isnan(w[i])) || fabs(g[i] - w[i]) <= tol * fabs(w[i]),
                      "%s: sum %d is %.17g, want %.17g", what, i, g[i], w[i]);
}
