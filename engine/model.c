/*
 * model.c -- load a model directory: config.json + safetensors (single file or
 * sharded with model.safetensors.index.json), bind every expected tensor with
 * its shape checked against the config, refuse missing and unexpected ones.
 *
 * Matrices stay in the mmap'd files in their own dtype (f32, f16, bf16).
 * Vectors (norm weights, biases, the rotary table) are converted to fp32
 * copies the model owns, so kernels only ever see fp32 vectors.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "model.h"
#include "safetensors.h"
#include "util.h"

#define MAX_CONFIG_BYTES (1u << 20)
#define MAX_INDEX_BYTES (64u << 20)
#define MAX_SHARDS 4096

struct rn_model {
    rn_config cfg;
    rn_weights w;
    int n_files;
    rn_st_file **files;
    unsigned char *used; /* per file, per entry: bound to a weight */
    int n_owned;
    void **owned; /* fp32 vector copies and realigned matrices */
    char *dir;
};

size_t rn_dtype_size(rn_dtype t)
{
    switch (t) {
    case RN_DT_F16:
    case RN_DT_BF16:
        return 2;
    case RN_DT_F64:
    case RN_DT_I64:
        return 8;
    default:
        return 4;
    }
}

const char *rn_dtype_name(rn_dtype t)
{
    static const char *const names[] = {"f32", "f16", "bf16", "f64", "i32", "i64"};
    return (unsigned)t < 6 ? names[t] : "?";
}

void rn_to_f32(float *dst, const void *src, rn_dtype t, size_t n)
{
    const uint16_t *h = src;
    switch (t) {
    case RN_DT_F32:
        memcpy(dst, src, n * 4);
        break;
    case RN_DT_BF16:
        for (size_t i = 0; i < n; i++)
            dst[i] = rn__bf16_to_f32(h[i]);
        break;
    case RN_DT_F16:
        for (size_t i = 0; i < n; i++)
            dst[i] = rn__f16_to_f32(h[i]);
        break;
    case RN_DT_F64:
        for (size_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, (const char *)src + 8 * i, 8);
            dst[i] = (float)d;
        }
        break;
    case RN_DT_I32:
        for (size_t i = 0; i < n; i++) {
            int32_t v;
            memcpy(&v, (const char *)src + 4 * i, 4);
            dst[i] = (float)v;
        }
        break;
    case RN_DT_I64:
        for (size_t i = 0; i < n; i++) {
            int64_t v;
            memcpy(&v, (const char *)src + 8 * i, 8);
            dst[i] = (float)v;
        }
        break;
    }
}

/* ------------------------------------------------------------- file set */

static int add_file(rn_model *m, const char *path, rn_error *err)
{
    rn_st_file **nf = realloc(m->files, sizeof *nf * (size_t)(m->n_files + 1));
    if (!nf)
        return rn_error_set(err, RN_ENOMEM, "out of memory");
    m->files = nf;
    int rc = rn_st_open(&m->files[m->n_files], path, err);
    if (rc == RN_OK)
        m->n_files++;
    return rc;
}

/* A shard name from the index must be a plain file name inside the model dir. */
static int shard_name_ok(const char *s)
{
    return s[0] && s[0] != '.' && !strchr(s, '/') && strlen(s) < 256;
}

static int open_sharded(rn_model *m, const char *index_path, rn_error *err)
{
    char *text = NULL, *path = NULL;
    size_t len = 0;
    cJSON *root = NULL;
    int rc = rn__read_file(index_path, MAX_INDEX_BYTES, &text, &len);
    if (rc != 0)
        return rn_error_set(err, RN_EIO, "%s: %s", index_path, rn__read_error(rc));
    root = cJSON_ParseWithLength(text, len);
    const cJSON *wm = root ? cJSON_GetObjectItemCaseSensitive(root, "weight_map") : NULL;
    if (!cJSON_IsObject(wm)) {
        rc = rn_error_set(err, RN_EFORMAT, "%s: needs a 'weight_map' object", index_path);
        goto out;
    }
    /* Open each distinct shard once, in order of first appearance. */
    const char *seen[MAX_SHARDS];
    int n_seen = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, wm)
    {
        if (!cJSON_IsString(it) || !shard_name_ok(it->valuestring)) {
            rc = rn_error_set(err, RN_EFORMAT, "%s: tensor '%s' maps to a bad shard name '%s'",
                              index_path, it->string,
                              cJSON_IsString(it) ? it->valuestring : "(not a string)");
            goto out;
        }
        int dup = 0;
        for (int i = 0; i < n_seen && !dup; i++)
            dup = strcmp(seen[i], it->valuestring) == 0;
        if (dup)
            continue;
        if (n_seen == MAX_SHARDS) {
            rc = rn_error_set(err, RN_EFORMAT, "%s: more than %d shards", index_path, MAX_SHARDS);
            goto out;
        }
        seen[n_seen++] = it->valuestring;
        free(path);
        path = rn__strcat3(m->dir, "/", it->valuestring);
        if (!path) {
            rc = rn_error_set(err, RN_ENOMEM, "out of memory");
            goto out;
        }
        if ((rc = add_file(m, path, err)) != RN_OK)
            goto out;
    }
    if (n_seen == 0)
        rc = rn_error_set(err, RN_EFORMAT, "%s: empty weight_map", index_path);
out:
    free(path);
    free(text);
    cJSON_Delete(root);
    return rc;
}

static int open_weights(rn_model *m, rn_error *err)
{
    int rc;
    char *single = rn__strcat3(m->dir, "/", "model.safetensors");
    char *index = rn__strcat3(m->dir, "/", "model.safetensors.index.json");
    if (!single || !index) {
        rc = rn_error_set(err, RN_ENOMEM, "out of memory");
        goto out;
    }
    struct stat st;
    if (lstat(index, &st) == 0) { /* any entry named like the index means sharded */
        rc = open_sharded(m, index, err);
    } else {
        rc = add_file(m, single, err);
    }
out:
    free(single);
    free(index);
    return rc;
}

/* ------------------------------------------------------------ binding */

static int track_owned(rn_model *m, void *p)
{
    void **n = realloc(m->owned, sizeof *n * (size_t)(m->n_owned + 1));
    if (!n) {
        free(p);
        return RN_ENOMEM;
    }
    m->owned = n;
    m->owned[m->n_owned++] = p;
    return RN_OK;
}

/* Finds name in any file; marks it used.  Returns NULL if absent. */
static const rn_st_entry *find_tensor(rn_model *m, const char *name, int *file_idx)
{
    for (int i = 0; i < m->n_files; i++) {
        const rn_st_entry *e = rn_st_find(m->files[i], name);
        if (e) {
            *file_idx = i;
            return e;
        }
    }
    return NULL;
}

static int mark_used(rn_model *m, int fi, const rn_st_entry *e)
{
    size_t off = 0;
    for (int i = 0; i < fi; i++)
        off += (size_t)m->files[i]->n_entries;
    off += (size_t)(e - m->files[fi]->entries);
    int again = m->used[off];
    m->used[off] = 1;
    return again;
}

/* What bind() does with a tensor: the config does not use it (it is left
 * unbound, so a file that holds it is refused as unexpected), needs it, or
 * takes it when present. */
enum { BIND_UNUSED = 0, BIND_REQUIRED = 1, BIND_OPTIONAL = 2 };

/* Binds tensor `name` with the expected shape (ndim 1 or 2) into *t.
 * mode is a BIND_ value; a boolean condition selects UNUSED or REQUIRED.
 * An absent optional tensor leaves t->data NULL.  Vectors become fp32 copies. */
static int bind(rn_model *m, rn_tensor *t, const char *name, int mode, int64_t d0, int64_t d1,
                rn_error *err)
{
    int fi = 0, ndim = d1 > 0 ? 2 : 1;
    memset(t, 0, sizeof *t);
    if (mode == BIND_UNUSED)
        return RN_OK;
    const rn_st_entry *e = find_tensor(m, name, &fi);
    if (!e) {
        if (mode == BIND_REQUIRED)
            return rn_error_set(err, RN_EFORMAT, "%s: missing tensor '%s'", m->dir, name);
        return RN_OK;
    }
    const char *file = m->files[fi]->path;
    if (e->dtype != RN_DT_F32 && e->dtype != RN_DT_F16 && e->dtype != RN_DT_BF16)
        return rn_error_set(err, RN_EFORMAT, "%s: tensor '%s' has dtype %s, want F32, F16 or BF16",
                            file, name, rn_dtype_st_name(e->dtype));
    if (e->ndim != ndim || e->shape[0] != d0 || (ndim == 2 && e->shape[1] != d1)) {
        char got[96] = "", want[64];
        for (int i = 0; i < e->ndim; i++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", i ? ", " : "",
                     (long long)e->shape[i]);
        if (ndim == 2)
            snprintf(want, sizeof want, "%lld, %lld", (long long)d0, (long long)d1);
        else
            snprintf(want, sizeof want, "%lld", (long long)d0);
        return rn_error_set(err, RN_EFORMAT, "%s: tensor '%s' has shape (%s), config says (%s)",
                            file, name, got, want);
    }
    if (mark_used(m, fi, e))
        return rn_error_set(err, RN_EFORMAT, "%s: tensor '%s' bound twice", file, name);
    const void *src = rn_st_data(m->files[fi], e);
    t->dtype = e->dtype;
    t->ndim = ndim;
    t->shape[0] = d0;
    t->shape[1] = ndim == 2 ? d1 : 0;
    t->numel = e->numel;
    size_t esz = rn_dtype_size(e->dtype);
    if (ndim == 1 || ((uintptr_t)src % esz) != 0) {
        /* vectors to fp32; a misaligned matrix is copied as is to aligned memory */
        size_t out_sz = ndim == 1 ? 4 : esz;
        void *copy = aligned_alloc(64, ((size_t)e->numel * out_sz + 63) & ~(size_t)63);
        if (!copy || track_owned(m, copy) != RN_OK)
            return rn_error_set(err, RN_ENOMEM, "out of memory copying '%s'", name);
        if (ndim == 1) {
            rn_to_f32(copy, src, e->dtype, (size_t)e->numel);
            t->dtype = RN_DT_F32;
        } else {
            memcpy(copy, src, (size_t)e->numel * esz);
        }
        src = copy;
    }
    t->data = src;
    return RN_OK;
}

typedef struct {
    rn_model *m;
    rn_error *err;
    char name[160];
} binder;

static int bindl(binder *b, rn_tensor *t, int layer, const char *suffix, int req, int64_t d0,
                 int64_t d1)
{
    snprintf(b->name, sizeof b->name, "model.layers.%d.%s", layer, suffix);
    return bind(b->m, t, b->name, req, d0, d1, b->err);
}

static int bind_layer(binder *b, int l)
{
    const rn_config *c = &b->m->cfg;
    rn_layer_weights *lw = &b->m->w.layers[l];
    int64_t D = c->hidden_size, K = c->key_dim, V = c->value_dim, F = c->intermediate_size;
    int ln = c->norm_kind == RN_NORM_LAYER, ab = c->attention_bias, mb = c->mlp_bias;
    int rc;
    if ((rc = bindl(b, &lw->norm1_w, l, "attn_norm.weight", 1, D, 0)) ||
        (rc = bindl(b, &lw->norm1_b, l, "attn_norm.bias", ln, D, 0)) ||
        (rc = bindl(b, &lw->q_w, l, "attn.q_proj.weight", 1, K, D)) ||
        (rc = bindl(b, &lw->k_w, l, "attn.k_proj.weight", 1, K, D)) ||
        (rc = bindl(b, &lw->v_w, l, "attn.v_proj.weight", 1, V, D)) ||
        (rc = bindl(b, &lw->g_w, l, "attn.g_proj.weight", 1, V, D)) ||
        (rc = bindl(b, &lw->o_w, l, "attn.o_proj.weight", 1, D, V)) ||
        (rc = bindl(b, &lw->q_b, l, "attn.q_proj.bias", ab, K, 0)) ||
        (rc = bindl(b, &lw->k_b, l, "attn.k_proj.bias", ab, K, 0)) ||
        (rc = bindl(b, &lw->v_b, l, "attn.v_proj.bias", ab, V, 0)) ||
        (rc = bindl(b, &lw->g_b, l, "attn.g_proj.bias", ab, V, 0)) ||
        (rc = bindl(b, &lw->o_b, l, "attn.o_proj.bias", ab, D, 0)) ||
        (rc = bindl(b, &lw->norm2_w, l, "mlp_norm.weight", 1, D, 0)) ||
        (rc = bindl(b, &lw->norm2_b, l, "mlp_norm.bias", ln, D, 0)) ||
        (rc = bindl(b, &lw->up_w, l, "mlp.up_proj.weight", 1, F, D)) ||
        (rc = bindl(b, &lw->down_w, l, "mlp.down_proj.weight", 1, D, F)) ||
        (rc = bindl(b, &lw->up_b, l, "mlp.up_proj.bias", mb, F, 0)) ||
        (rc = bindl(b, &lw->down_b, l, "mlp.down_proj.bias", mb, D, 0)))
        return rc;
    if (c->ffn_kind == RN_FFN_GLU &&
        ((rc = bindl(b, &lw->gate_w, l, "mlp.gate_proj.weight", 1, F, D)) ||
         (rc = bindl(b, &lw->gate_b, l, "mlp.gate_proj.bias", mb, F, 0))))
        return rc;
    if (c->group_norm_affine) {
        if ((rc = bindl(b, &lw->gn_w, l, "attn.g_norm_swish_gate.weight", BIND_OPTIONAL,
                        c->head_dim_v, 0)))
            return rc;
        if (!lw->gn_w.data &&
            (rc = bindl(b, &lw->gn_w, l, "attn.g_norm.weight", 1, c->head_dim_v, 0)))
            return rc;
    }
    /* Biases are all-or-nothing per group: a stray one is caught as unexpected. */
    return RN_OK;
}

static int bind_globals(binder *b)
{
    rn_model *m = b->m;
    const rn_config *c = &m->cfg;
    rn_weights *w = &m->w;
    int64_t D = c->hidden_size, V = c->vocab_size;
    int ln = c->norm_kind == RN_NORM_LAYER, rc;
    if ((rc = bind(m, &w->embed, "model.embeddings.weight", 1, V, D, b->err)) ||
        (rc = bind(m, &w->embed_norm_w, "model.embed_norm.weight", c->embed_norm, D, 0, b->err)) ||
        (rc = bind(m, &w->final_norm_w, "model.norm.weight", c->final_norm, D, 0, b->err)) ||
        (rc = bind(m, &w->final_norm_b, "model.norm.bias", c->final_norm && ln, D, 0, b->err)) ||
        (rc = bind(m, &w->lm_head_b, "lm_head.bias", c->lm_head_bias, V, 0, b->err)) ||
        (rc = bind(m, &w->rope_freq, "model.rope_freq", BIND_OPTIONAL, c->head_dim_k, 0, b->err)))
        return rc;
    if (c->tie_word_embeddings)
        w->lm_head_w = w->embed;
    else if ((rc = bind(m, &w->lm_head_w, "lm_head.weight", 1, V, D, b->err)))
        return rc;
    if (w->rope_freq.data && c->position == RN_POS_NONE)
        return rn_error_set(b->err, RN_EFORMAT,
                            "%s: model.rope_freq given but position_encoding is none", m->dir);
    return RN_OK;
}

static int check_all_used(rn_model *m, rn_error *err)
{
    size_t k = 0;
    for (int i = 0; i < m->n_files; i++)
        for (int j = 0; j < m->files[i]->n_entries; j++, k++) {
            if (m->used[k])
                continue;
            const char *name = m->files[i]->entries[j].name;
            int first = i;
            if (find_tensor(m, name, &first) && first != i) /* bound from an earlier shard */
                return rn_error_set(err, RN_EFORMAT, "%s: tensor '%s' is also in %s",
                                    m->files[i]->path, name, m->files[first]->path);
            return rn_error_set(err, RN_EFORMAT,
                                "%s: unexpected tensor '%s' (not in the config's architecture)",
                                m->files[i]->path, name);
        }
    return RN_OK;
}

static int bind_all(rn_model *m, rn_error *err)
{
    size_t total = 0;
    for (int i = 0; i < m->n_files; i++)
        total += (size_t)m->files[i]->n_entries;
    m->used = calloc(total + 1, 1);
    m->w.layers = calloc((size_t)m->cfg.n_layers, sizeof *m->w.layers);
    if (!m->used || !m->w.layers)
        return rn_error_set(err, RN_ENOMEM, "out of memory");
    binder b = {.m = m, .err = err};
    int rc = bind_globals(&b);
    for (int l = 0; rc == RN_OK && l < m->cfg.n_layers; l++)
        rc = bind_layer(&b, l);
    return rc == RN_OK ? check_all_used(m, err) : rc;
}

static int load_config(rn_model *m, rn_error *err)
{
    char *path = rn__strcat3(m->dir, "/", "config.json"), *text = NULL;
    size_t len = 0;
    int rc;
    if (!path)
        return rn_error_set(err, RN_ENOMEM, "out of memory");
    rc = rn__read_file(path, MAX_CONFIG_BYTES, &text, &len);
    if (rc != 0)
        rc = rn_error_set(err, rc == -EFBIG ? RN_EFORMAT : RN_EIO, "%s: %s", path,
                          rn__read_error(rc));
    else
        rc = rn_config_parse(&m->cfg, text, len, path, err);
    free(text);
    free(path);
    return rc;
}

int rn_model_load(rn_model **out, const char *dir, rn_error *err)
{
    int rc;
    *out = NULL;
    rn_model *m = calloc(1, sizeof *m);
    if (!m)
        return rn_error_set(err, RN_ENOMEM, "out of memory");
    m->dir = rn__strdup(dir);
    if (!m->dir) {
        rc = rn_error_set(err, RN_ENOMEM, "out of memory");
        goto fail;
    }
    if ((rc = load_config(m, err)) || (rc = open_weights(m, err)) || (rc = bind_all(m, err)))
        goto fail;
    *out = m;
    return RN_OK;
fail:
    rn_model_free(m);
    return rc;
}

void rn_model_free(rn_model *m)
{
    if (!m)
        return;
    for (int i = 0; i < m->n_files; i++)
        rn_st_close(m->files[i]);
    for (int i = 0; i < m->n_owned; i++)
        free(m->owned[i]);
    free(m->owned);
    free(m->files);
    free(m->used);
    free(m->w.layers);
    free(m->dir);
    free(m);
}

const rn_config *rn_model_config(const rn_model *m)
{
    return &m->cfg;
}

const rn_weights *rn_model_weights(const rn_model *m)
{
    return &m->w;
}

static int64_t numel_if(const rn_tensor *t)
{
    return t->data ? t->numel : 0;
}

int64_t rn_model_param_count(const rn_model *m)
{
    const rn_weights *w = &m->w;
    int64_t n = numel_if(&w->embed) + numel_if(&w->embed_norm_w) + numel_if(&w->final_norm_w) +
                numel_if(&w->final_norm_b) + numel_if(&w->lm_head_b);
    if (!m->cfg.tie_word_embeddings)
        n += numel_if(&w->lm_head_w);
    for (int l = 0; l < m->cfg.n_layers; l++) {
        const rn_tensor *t = &w->layers[l].norm1_w;
        size_t cnt = sizeof(rn_layer_weights) / sizeof(rn_tensor);
        for (size_t i = 0; i < cnt; i++)
            n += numel_if(&t[i]);
    }
    return n;
}

static int64_t bytes_if(const rn_tensor *t)
{
    return t->data ? t->numel * (int64_t)rn_dtype_size(t->dtype) : 0;
}

int64_t rn_model_weight_bytes(const rn_model *m)
{
    const rn_weights *w = &m->w;
    int64_t n = bytes_if(&w->lm_head_w) + bytes_if(&w->lm_head_b) + bytes_if(&w->final_norm_w);
    for (int l = 0; l < m->cfg.n_layers; l++) {
        const rn_tensor *t = &w->layers[l].norm1_w;
        size_t cnt = sizeof(rn_layer_weights) / sizeof(rn_tensor);
        for (size_t i = 0; i < cnt; i++)
            n += bytes_if(&t[i]);
    }
    return n;
}

const char *rn_model_dtype_name(const rn_model *m)
{
    return m->cfg.n_layers > 0 ? rn_dtype_name(m->w.layers[0].q_w.dtype) : "?";
}
