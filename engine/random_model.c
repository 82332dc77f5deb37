/*
 * random_model.c -- rn_model_write_random: a model directory with random
 * weights in any shape the FLA-style naming covers, for benchmarks (speed
 * does not depend on values) and for tests of shapes the fixtures lack.
 * Weights ~ N(0, 0.02) (FLA's initializer_range), norm weights 1.
 */
#include <stdio.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "safetensors.h"
#include "util.h"

typedef struct {
    uint64_t seed;
    rn_st_out *t;
} fill_ctx;

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static int fill(void *vctx, int idx, void *buf, size_t nbytes)
{
    fill_ctx *c = vctx;
    const rn_st_out *t = &c->t[idx];
    size_t n = nbytes / rn_dtype_size(t->dtype);
    int is_norm = t->ndim == 1;
    uint64_t s = c->seed ^ ((uint64_t)idx * 0x2545f4914f6cdd1dull);
    for (size_t i = 0; i < n; i += 2) {
        /* Box-Muller: two normals per two uniforms */
        double u1 = ((double)(splitmix(&s) >> 11) + 1.0) / 9007199254740993.0;
        double u2 = (double)(splitmix(&s) >> 11) / 9007199254740992.0;
        double r = sqrt(-2.0 * log(u1));
        float v[2] = {(float)(0.02 * r * cos(6.283185307179586 * u2)),
                      (float)(0.02 * r * sin(6.283185307179586 * u2))};
        for (size_t k = 0; k < 2 && i + k < n; k++) {
            float x = is_norm ? 1.0f : v[k];
            if (t->dtype == RN_DT_F32)
                ((float *)buf)[i + k] = x;
            else if (t->dtype == RN_DT_BF16)
                ((uint16_t *)buf)[i + k] = rn__f32_to_bf16(x);
            else
                ((uint16_t *)buf)[i + k] = rn__f32_to_f16(x);
        }
    }
    return 0;
}

static void add(rn_st_out *t, int *n, char names[][96], const char *name, rn_dtype dt, int64_t d0,
                int64_t d1)
{
    snprintf(names[*n], 96, "%s", name);
    t[*n] = (rn_st_out){
        .name = names[*n], .dtype = d1 ? dt : RN_DT_F32, .ndim = d1 ? 2 : 1, .shape = {d0, d1}};
    (*n)++;
}

static int write_config(const char *dir, const rn_config *c)
{
    char *json = rn_config_to_json(c), *path = rn__strcat3(dir, "/", "config.json");
    int rc = -1;
    FILE *f = path ? fopen(path, "w") : NULL;
    if (f && json && fputs(json, f) >= 0 && fputc('\n', f) != EOF)
        rc = 0;
    if (f && fclose(f) != 0)
        rc = -1;
    free(json);
    free(path);
    return rc;
}

int rn_model_write_random(const char *dir, const rn_config *c, rn_dtype dt, uint64_t seed,
                          rn_error *err)
{
    int nmax = 4 + 16 * c->n_layers, n = 0, rc = RN_ENOMEM;
    rn_st_out *t = calloc((size_t)nmax, sizeof *t);
    char(*names)[96] = calloc((size_t)nmax, 96);
    char *path = rn__strcat3(dir, "/", "model.safetensors");
    if (!t || !names || !path) {
        snprintf(err->msg, sizeof err->msg, "out of memory");
        goto cleanup;
    }
    int64_t D = c->hidden_size, K = c->key_dim, V = c->value_dim, F = c->intermediate_size;
    add(t, &n, names, "model.embeddings.weight", dt, c->vocab_size, D);
    char nm[96];
    for (int l = 0; l < c->n_layers; l++) {
#define L(suffix, d0, d1)                                                                          \
    (snprintf(nm, sizeof nm, "model.layers.%d.%s", l, suffix), add(t, &n, names, nm, dt, d0, d1))
        L("attn_norm.weight", D, 0);
        L("attn.q_proj.weight", K, D);
        L("attn.k_proj.weight", K, D);
        L("attn.v_proj.weight", V, D);
        L("attn.g_proj.weight", V, D);
        L("attn.o_proj.weight", D, V);
        L("attn.g_norm_swish_gate.weight", c->head_dim_v, 0);
        L("mlp_norm.weight", D, 0);
        L("mlp.gate_proj.weight", F, D);
        L("mlp.up_proj.weight", F, D);
        L("mlp.down_proj.weight", D, F);
#undef L
    }
    add(t, &n, names, "model.norm.weight", dt, D, 0);
    add(t, &n, names, "lm_head.weight", dt, c->vocab_size, D);
    fill_ctx fc = {seed, t};
    rc = rn_st_write(path, t, n, NULL, NULL, 0, fill, &fc, err);
    if (rc == RN_ENOMEM)
        snprintf(err->msg, sizeof err->msg, "out of memory");
    if (rc == RN_OK && write_config(dir, c) != 0) {
        rc = RN_EIO;
        snprintf(err->msg, sizeof err->msg, "cannot write %s/config.json", dir);
    }
cleanup:
    free(path);
    free(t);
    free(names);
    return rc;
}
