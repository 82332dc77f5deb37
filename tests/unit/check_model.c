/*
 * check_model.c -- rn_model_load on malformed model directories: every bad
 * config.json, safetensors file or shard index is refused with the right
 * status and a message naming the file, tensor or field at fault, never a
 * crash, hang or leak.
 *
 * Each test starts from a tiny valid model (D 8, 1 layer, 2 heads, V 10, F 16,
 * tied embeddings, no group-norm weight, all F32) written into a fresh
 * temporary directory, breaks one thing and loads it.  The safetensors bytes
 * are built here by hand so that any field can be wrong.
 */
#include <check.h>
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "model.h"
#include "fixture.h"
#include "suites.h"
#include "util.h"

static void write_file(const char *dir, const char *name, const void *data, size_t n)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    ck_assert_msg(f != NULL, "fopen %s: %s", path, strerror(errno));
    ck_assert_msg(n == 0 || fwrite(data, 1, n, f) == n, "write %s", path);
    ck_assert_int_eq(fclose(f), 0);
}

static void write_text(const char *dir, const char *name, const char *text)
{
    write_file(dir, name, text, strlen(text));
}

/* ------------------------------------------------------ config.json */

static const char valid_config[] =
    "{\"hidden_size\": 8, \"num_hidden_layers\": 1, \"num_heads\": 2, \"vocab_size\": 10,"
    " \"expand_k\": 1, \"expand_v\": 1, \"intermediate_size\": 16,"
    " \"elementwise_affine\": false, \"tie_word_embeddings\": true}";

/* Writes the valid config with field `key` set to the JSON text `value`
 * (inserted as written, so it may be anything JSON can spell), or removed
 * when value is NULL. */
static void write_config_with(const char *dir, const char *key, const char *value)
{
    cJSON *root = cJSON_Parse(valid_config);
    ck_assert_ptr_nonnull(root);
    cJSON_DeleteItemFromObjectCaseSensitive(root, key);
    char *rest = cJSON_PrintUnformatted(root);
    ck_assert_ptr_nonnull(rest);
    char *text = NULL;
    if (value)
        ck_assert_int_ge(asprintf(&text, "{\"%s\": %s, %s", key, value, rest + 1), 0);
    else
        text = strdup(rest);
    ck_assert_ptr_nonnull(text);
    write_text(dir, "config.json", text);
    free(text);
    cJSON_free(rest);
    cJSON_Delete(root);
}

/* ------------------------------------------------ safetensors builder */

#define MAX_TENSORS 48
#define MAX_RANK 6

typedef struct tspec {
    char name[96];
    char dtype[8];
    int ndim;
    int64_t shape[MAX_RANK];
    int fixed; /* header offsets are begin/end; no data is laid out for it */
    uint64_t begin, end;
} tspec;

typedef struct stspec {
    tspec t[MAX_TENSORS];
    int n;
    int misalign; /* pad the header so the data section starts at an odd offset */
} stspec;

typedef struct blob {
    uint8_t *p;
    size_t n;
} blob;

static size_t dtype_bytes(const char *dt)
{
    if (!strcmp(dt, "F16") || !strcmp(dt, "BF16"))
        return 2;
    if (!strcmp(dt, "F64") || !strcmp(dt, "I64"))
        return 8;
    if (!strcmp(dt, "F32") || !strcmp(dt, "I32"))
        return 4;
    return 1; /* I8, U8, BOOL and anything made up */
}

static uint64_t tspec_numel(const tspec *t)
{
    uint64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= (uint64_t)t->shape[i];
    return n;
}

static uint64_t tspec_bytes(const tspec *t)
{
    return tspec_numel(t) * dtype_bytes(t->dtype);
}

static tspec *spec_add(stspec *s, const char *name, const char *dtype, int ndim, ...)
{
    ck_assert_int_lt(s->n, MAX_TENSORS);
    ck_assert_int_le(ndim, MAX_RANK);
    tspec *t = &s->t[s->n++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    snprintf(t->dtype, sizeof t->dtype, "%s", dtype);
    t->ndim = ndim;
    va_list ap;
    va_start(ap, ndim);
    for (int i = 0; i < ndim; i++)
        t->shape[i] = va_arg(ap, int);
    va_end(ap);
    return t;
}

static tspec *spec_find(stspec *s, const char *name)
{
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->t[i].name, name))
            return &s->t[i];
    ck_abort_msg("test spec has no tensor %s", name);
    return NULL;
}

static void spec_drop(stspec *s, const char *name)
{
    tspec *t = spec_find(s, name);
    int i = (int)(t - s->t);
    memmove(&s->t[i], &s->t[i + 1], sizeof *t * (size_t)(s->n - i - 1));
    s->n--;
}

static void spec_set_shape(stspec *s, const char *name, int ndim, const int64_t *dims)
{
    tspec *t = spec_find(s, name);
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++)
        t->shape[i] = dims[i];
}

/* Where the builder lays out tensor `name`: tensors without fixed offsets
 * follow each other in spec order from offset 0. */
static void spec_layout(const stspec *s, const char *name, uint64_t *begin, uint64_t *end)
{
    uint64_t off = 0;
    for (int i = 0; i < s->n; i++) {
        if (s->t[i].fixed)
            continue;
        uint64_t nb = tspec_bytes(&s->t[i]);
        if (!strcmp(s->t[i].name, name)) {
            *begin = off;
            *end = off + nb;
            return;
        }
        off += nb;
    }
    ck_abort_msg("test spec has no laid-out tensor %s", name);
}

static uint64_t spec_data_size(const stspec *s)
{
    uint64_t off = 0;
    for (int i = 0; i < s->n; i++)
        if (!s->t[i].fixed)
            off += tspec_bytes(&s->t[i]);
    return off;
}

/* The value stored at element i of tensor number ti (exact in F16 and BF16). */
static float pattern_value(int ti, uint64_t i)
{
    return (float)((int)((i + (uint64_t)ti) % 7) - 3) * 0.25f;
}

static void fill_tensor(uint8_t *dst, const tspec *t, int ti)
{
    uint64_t n = tspec_numel(t);
    for (uint64_t i = 0; i < n; i++) {
        float v = pattern_value(ti, i);
        if (!strcmp(t->dtype, "F32")) {
            memcpy(dst + 4 * i, &v, 4);
        } else if (!strcmp(t->dtype, "BF16")) {
            uint16_t h = rn__f32_to_bf16(v);
            memcpy(dst + 2 * i, &h, 2);
        } else if (!strcmp(t->dtype, "F16")) {
            uint16_t h = rn__f32_to_f16(v);
            memcpy(dst + 2 * i, &h, 2);
        } else {
            memset(dst + i * dtype_bytes(t->dtype), (int)(i & 0x7f), dtype_bytes(t->dtype));
        }
    }
}

/* The safetensors file the spec describes: 8-byte little-endian header length,
 * the JSON header (padded with spaces), then the data. */
static blob spec_build(const stspec *s)
{
    char *hdr = NULL;
    size_t hlen = 0;
    FILE *f = open_memstream(&hdr, &hlen);
    ck_assert_ptr_nonnull(f);
    uint64_t off = 0;
    fputc('{', f);
    for (int i = 0; i < s->n; i++) {
        const tspec *t = &s->t[i];
        uint64_t b = off, e = off;
        if (t->fixed) {
            b = t->begin;
            e = t->end;
        } else {
            e = off + tspec_bytes(t);
            off = e;
        }
        fprintf(f, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[", i ? "," : "", t->name, t->dtype);
        for (int d = 0; d < t->ndim; d++)
            fprintf(f, "%s%lld", d ? "," : "", (long long)t->shape[d]);
        fprintf(f, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)b, (unsigned long long)e);
    }
    fputc('}', f);
    size_t want = s->misalign ? 1 : 0; /* header length mod 8 */
    long pos = ftell(f);
    while ((size_t)pos % 8 != want) {
        fputc(' ', f);
        pos++;
    }
    ck_assert_int_eq(fclose(f), 0);

    blob out;
    out.n = 8 + hlen + off;
    out.p = calloc(1, out.n);
    ck_assert_ptr_nonnull(out.p);
    for (int i = 0; i < 8; i++)
        out.p[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
    memcpy(out.p + 8, hdr, hlen);
    free(hdr);
    uint8_t *data = out.p + 8 + hlen;
    for (int i = 0; i < s->n; i++) {
        if (s->t[i].fixed)
            continue;
        fill_tensor(data, &s->t[i], i);
        data += tspec_bytes(&s->t[i]);
    }
    return out;
}

static void spec_write(const char *dir, const char *name, const stspec *s)
{
    blob b = spec_build(s);
    write_file(dir, name, b.p, b.n);
    free(b.p);
}

/* A safetensors file with a header given as text and n_data zero bytes. */
static void write_raw_weights(const char *dir, const char *header, size_t n_data)
{
    size_t hl = strlen(header), n = 8 + hl + n_data;
    uint8_t *p = calloc(1, n);
    ck_assert_ptr_nonnull(p);
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)((uint64_t)hl >> (8 * i));
    memcpy(p + 8, header, hl);
    write_file(dir, "model.safetensors", p, n);
    free(p);
}

#define L0 "model.layers.0."

/* Every tensor docs/model-format.md requires for valid_config. */
static void valid_spec(stspec *s)
{
    memset(s, 0, sizeof *s);
    spec_add(s, "model.embeddings.weight", "F32", 2, 10, 8);
    spec_add(s, "model.norm.weight", "F32", 1, 8);
    spec_add(s, L0 "attn_norm.weight", "F32", 1, 8);
    spec_add(s, L0 "attn.q_proj.weight", "F32", 2, 8, 8);
    spec_add(s, L0 "attn.k_proj.weight", "F32", 2, 8, 8);
    spec_add(s, L0 "attn.v_proj.weight", "F32", 2, 8, 8);
    spec_add(s, L0 "attn.g_proj.weight", "F32", 2, 8, 8);
    spec_add(s, L0 "attn.o_proj.weight", "F32", 2, 8, 8);
    spec_add(s, L0 "mlp_norm.weight", "F32", 1, 8);
    spec_add(s, L0 "mlp.gate_proj.weight", "F32", 2, 16, 8);
    spec_add(s, L0 "mlp.up_proj.weight", "F32", 2, 16, 8);
    spec_add(s, L0 "mlp.down_proj.weight", "F32", 2, 8, 16);
}

/* 10*8 + 8 + 8 + 5*8*8 + 8 + 3*16*8 */
#define VALID_PARAMS 808

/* A fresh directory holding the valid config; *s is the valid tensor spec,
 * not yet written. */
static void model_dir(char *dir, size_t cap, stspec *s)
{
    test_dir_create(dir, cap, "model");
    write_text(dir, "config.json", valid_config);
    valid_spec(s);
}

/* A fresh directory holding the complete valid model. */
static void valid_model_dir(char *dir, size_t cap)
{
    stspec s;
    model_dir(dir, cap, &s);
    spec_write(dir, "model.safetensors", &s);
}

/* -------------------------------------------------------- expectations */

/* Loads dir, removes it, then checks that the load failed with `code`, left
 * the model pointer NULL and set a message containing every needle (a
 * NULL-terminated list). */
static void expect_load_error(const char *dir, int code, ...)
{
    static char sentinel;
    rn_model *m = (rn_model *)(void *)&sentinel;
    rn_error err;
    memset(&err, 0, sizeof err);
    int rc = rn_model_load(&m, dir, &err);
    rn_model *loaded = rc == RN_OK ? m : NULL;
    int m_is_null = m == NULL;
    rn_model_free(loaded);
    test_dir_remove(dir);

    ck_assert_msg(rc == code, "%s: status %d (%s), want %d (%s); message: %s", dir, rc,
                  rn_strerror(rc), code, rn_strerror(code), err.msg);
    ck_assert_msg(m_is_null, "%s: failed load left a non-NULL model", dir);
    ck_assert_int_eq(err.code, code);
    va_list ap;
    va_start(ap, code);
    for (const char *needle = va_arg(ap, const char *); needle; needle = va_arg(ap, const char *))
        ck_assert_msg(strstr(err.msg, needle) != NULL, "message does not name '%s': %s", needle,
                      err.msg);
    va_end(ap);
}

/* Loads dir (which is kept) and checks that it succeeds; returns the model. */
static rn_model *expect_load_ok(const char *dir)
{
    rn_model *m = NULL;
    rn_error err;
    memset(&err, 0, sizeof err);
    int rc = rn_model_load(&m, dir, &err);
    if (rc != RN_OK)
        test_dir_remove(dir);
    ck_assert_msg(rc == RN_OK, "%s: load failed: %s", dir, err.msg);
    ck_assert_ptr_nonnull(m);
    return m;
}

/* ------------------------------------------------------------ valid */

START_TEST(test_model_valid_tiny_model_loads)
{
    char dir[PATH_MAX];
    valid_model_dir(dir, sizeof dir);
    rn_model *m = expect_load_ok(dir);
    const rn_config *c = rn_model_config(m);
    ck_assert_int_eq(c->hidden_size, 8);
    ck_assert_int_eq(c->n_layers, 1);
    ck_assert_int_eq(c->n_heads, 2);
    ck_assert_int_eq(c->head_dim_k, 4);
    ck_assert_int_eq(c->head_dim_v, 4);
    ck_assert_int_eq(c->vocab_size, 10);
    ck_assert_int_eq(c->intermediate_size, 16);
    ck_assert_int_eq(rn_model_param_count(m), VALID_PARAMS);
    ck_assert_str_eq(rn_model_dtype_name(m), "f32");
    const rn_weights *w = rn_model_weights(m);
    ck_assert_ptr_eq(w->lm_head_w.data, w->embed.data);
    ck_assert_ptr_null(w->layers[0].gn_w.data);
    ck_assert_ptr_null(w->rope_freq.data);
    const float *e = w->embed.data;
    for (int i = 0; i < 80; i++)
        ck_assert_float_eq(e[i], pattern_value(0, (uint64_t)i));
    rn_model_free(m);
    test_dir_remove(dir);
}
END_TEST

START_TEST(test_model_mixed_dtypes_load)
{
    /* vectors in BF16/F16 become fp32 copies; matrices keep their dtype */
    char dir[PATH_MAX];
    stspec s;
    model_dir(dir, sizeof dir, &s);
    snprintf(spec_find(&s, "model.norm.weight")->dtype, 8, "BF16");
    snprintf(spec_find(&s, L0 "mlp_norm.weight")->dtype, 8, "F16");
    snprintf(spec_find(&s, L0 "attn.q_proj.weight")->dtype, 8, "F16");
    snprintf(spec_find(&s, L0 "mlp.up_proj.weight")->dtype, 8, "BF16");
    spec_write(dir, "model.safetensors", &s);
    rn_model *m = expect_load_ok(dir);
    const rn_weights *w = rn_model_weights(m);
    ck_assert_int_eq(w->final_norm_w.dtype, RN_DT_F32);
    ck_assert_int_eq(w->layers[0].norm2_w.dtype, RN_DT_F32);
    ck_assert_int_eq(w->layers[0].q_w.dtype, RN_DT_F16);
    ck_assert_int_eq(w->layers[0].up_w.dtype, RN_DT_BF16);
    const float *fn = w->final_norm_w.data;
    for (int i = 0; i < 8; i++)
        ck_assert_float_eq(fn[i], pattern_value(1, (uint64_t)i));
    ck_assert_int_eq(rn_model_param_count(m), VALID_PARAMS);
    rn_model_free(m);
    test_dir_remove(dir);
}
END_TEST

START_TEST(test_model_misaligned_data_loads)
{
    /* data section at an odd file offset: matrices are copied to aligned memory */
    char dir[PATH_MAX];
    stspec s;
    model_dir(dir, sizeof dir, &s);
    s.misalign = 1;
    spec_write(dir, "model.safetensors", &s);
    rn_model *m = expect_load_ok(dir);
    const rn_weights *w = rn_model_weights(m);
    ck_assert_uint_eq((uintptr_t)w->embed.data % 4, 0);
    ck_assert_uint_eq((uintptr_t)w->layers[0].down_w.data % 4, 0);
    const float *e = w->embed.data, *dn = w->layers[0].down_w.data;
    for (int i = 0; i < 80; i++)
        ck_assert_float_eq(e[i], pattern_value(0, (uint64_t)i));
    for (int i = 0; i < 128; i++)
        ck_assert_float_eq(dn[i], pattern_value(11, (uint64_t)i));
    rn_model_free(m);
    test_dir_remove(dir);
}
END_TEST

START_TEST(test_model_neutral_fla_fields_accepted)
{
    /* FLA's fields at the values plain RetNet uses, and fields FLA ignores */
    static const char cfg[] =
        "{\"model_type\": \"retnet\", \"hidden_size\": 8, \"num_hidden_layers\": 1,"
        " \"num_heads\": 2, \"num_kv_heads\": 2, \"vocab_size\": 10, \"expand_k\": 1,"
        " \"expand_v\": 1, \"intermediate_size\": 16, \"elementwise_affine\": false,"
        " \"tie_word_embeddings\": true, \"feature_map\": null, \"attn\": null,"
        " \"use_short_conv\": false, \"use_output_gate\": true, \"fuse_norm\": true,"
        " \"use_cache\": true, \"architectures\": [\"RetNetForCausalLM\"],"
        " \"bos_token_id\": 1, \"eos_token_id\": 2, \"pad_token_id\": null}";
    char dir[PATH_MAX];
    valid_model_dir(dir, sizeof dir);
    write_text(dir, "config.json", cfg);
    rn_model *m = expect_load_ok(dir);
    ck_assert_int_eq(rn_model_config(m)->bos_token_id, 1);
    ck_assert_int_eq(rn_model_config(m)->pad_token_id, -1);
    rn_model_free(m);
    test_dir_remove(dir);
}
END_TEST

/* --------------------------------------------------- safetensors bytes */

START_TEST(test_model_truncated_in_data)
{
    char dir[PATH_MAX];
    stspec s;
    model_dir(dir, sizeof dir, &s);
    blob b = spec_build(&s);
    write_file(dir, "model.safetensors", b.p, b.n - 100); /* cuts into the last tensor */
    free(b.p);
    expect_load_error(dir, RN_EFORMAT, "model.safetensors", L0 "mlp.down_proj.weight", "outside",
                      NULL);
}
END_TEST

START_TEST(test_model_header_length_past_eof)
{
    static const uint64_t bad[] = {0, 1, (uint64_t)1 << 63, UINT64_MAX};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0] + 1; k++) {
        char dir[PATH_MAX];
        stspec s;
        model_dir(dir, sizeof dir, &s);
        blob b = spec_build(&s);
        /* first: one byte more than the file holds after the length */
        uint64_t h = k == 0 ? (uint64_t)b.n - 8 + 1 : bad[k - 1];
        for (int i = 0; i < 8; i++)
            b.p[i] = (uint8_t)(h >> (8 * i));
        write_file(dir, "model.safetensors", b.p, b.n);
        free(b.p);
        expect_load_error(dir, RN_EFORMAT, "model.safetensors", "header length", NULL);
    }
}
END_TEST

START_TEST(test_model_file_shorter_than_8_bytes)
{
    static const uint8_t bytes[5] = {2, 0, 0, 0, 0};
    for (size_t n = 0; n <= sizeof bytes; n += sizeof bytes) {
        char dir[PATH_MAX];
        stspec s;
        model_dir(dir, sizeof dir, &s);
        write_file(dir, "model.safetensors", bytes, n);
        expect_load_error(dir, RN_EFORMAT, "model.safetensors", "too short", NULL);
    }
}
END_TEST

START_TEST(test_model_header_not_json)
{
    char dir[PATH_MAX];
    stspec s;
    model_dir(dir, sizeof dir, &s);
    write_raw_weights(dir, "{\"model.norm.weight\": {\"dtype\": \"F32\", ", 64);
    expect_load_error(dir, RN_EFORMAT, "model.safetensors", "not a JSON object", NULL);
}
END_TEST

START_TEST(test_model_header_json_not_object)
{
    static const char *const headers[] = {"[1, 2, 3]", "\"model.norm.weight\"", "42", "null"};
    for (size_t k = 0; k < sizeof headers / sizeof headers[0]; k++) {
        char dir[PATH_MAX];
        stspec s;
        model_dir(dir, sizeof dir, &s);
        write_raw_weights(dir, headers[k], 16);
        expect_load_error(dir, RN_EFORMAT, "model.safetensors", "not a JSON object", NULL);
    }
}
END_TEST

START_TEST(test_model_header_entry_malformed)
{
    static const char *const headers[] = {
        "{\"model.norm.weight\": 5}",
        "{\"model.norm.weight\": {\"dtype\": \"F32\", \"shape\": [8]}}",
        "{\"model.norm.weight\": {\"dtype\": 32, \"shape\": [8], \"data_offsets\": [0, 32]}}",
        "{\"model.norm.weight\": {\"dtype\": \"F32\", \"shape\": 8, \"data_offsets\": [0, 32]}}",
        "{\"model.norm.weight\": {\"dtype\": \"F32\", \"shape\": [8], \"data_offsets\": [0]}}",
        "{\"model.norm.weight\": {\"dtype\": \"F32\", \"shape\": [8], \"data_offsets\": [0, 32, "
        "64]}}",
        "{\"model.norm.weight\": {\"dtype\": \"F32\", \"shape\": [8], \"data_offsets\": [-32, 0]}}",
        "{\"model.norm.weight\": {\"dtype\": \"F32\", \"shape\": [8], \"data_offsets\": [0.5, "
        "32]}}",
        "{\"model.norm.weight\": {\"dtype\": \"F32\", \"shape\": [-8], \"data_offsets\": [0, 32]}}",
        "{\"model.norm.weight\": {\"dtype\": \"F32\", \"shape\": [\"8\"], \"data_offsets\": [0, "
        "32]}}",
        "{\"model.norm.weight\": {\"dtype\": \"F32\", \"shape\": [8.5], \"data_offsets\": [0, "
        "32]}}",
    };
    for (size_t k = 0; k < sizeof headers / sizeof headers[0]; k++) {
        char dir[PATH_MAX];
        stspec s;
        model_dir(dir, sizeof dir, &s);
        write_raw_weights(dir, headers[k], 64);
        expect_load_error(dir, RN_EFORMAT, "model.safetensors", "'model.norm.weight'", NULL);
    }
}
END_TEST

START_TEST(test_model_metadata_not_strings)
{
    static const char *const headers[] = {"{\"__metadata__\": {\"format\": 1}}",
                                          "{\"__metadata__\": [\"pt\"]}",
                                          "{\"__metadata__\": {}, \"__metadata__\": {}}"};
    for (size_t k = 0; k < sizeof headers / sizeof headers[0]; k++) {
        char dir[PATH_MAX];
        stspec s;
        model_dir(dir, sizeof dir, &s);
        write_raw_weights(dir, headers[k], 0);
        expect_load_error(dir, RN_EFORMAT, "model.safetensors", "__metadata__", NULL);
    }
}
END_TEST

START_TEST(test_model_overlapping_offsets)
{
    char dir[PATH_MAX];
    stspec s;
    model_dir(dir, sizeof dir, &s);
    uint64_t qb, qe;
    spec_layout(&s, L0 "attn.q_proj.weight", &qb, &qe);
    tspec *k = spec_find(&s, L0 "attn.k_proj.weight");
    k->fixed = 1;
    k->begin = qb + 4; /* the right length, four bytes into q_proj */
    k->end = k->begin + tspec_bytes(k);
    spec_write(dir, "model.safetensors", &s);
    expect_load_error(dir, RN_EFORMAT, "model.safetensors", L0 "attn.q_proj.weight",
                      L0 "attn.k_proj.weight", "overlap", NULL);
}
END_TEST

START_TEST(test_model_offsets_beyond_data)
{
    char dir[PATH_MAX];
    stspec s;
    model_dir(dir, sizeof dir, &s);
    tspec *k = spec_find(&s, L0 "attn.k_proj.weight");
    k->fixed = 1;
    k->begin = spec_data_size(&s) - tspec_bytes(k) + 4; /* right length, ends 4 bytes late */
    k->end = k->begin + tspec_bytes(k);
    spec_write(dir, "model.safetensors", &s);
    expect_load_error(dir, RN_EFORMAT, "model.safetensors", L0 "attn.k_proj.weight", "outside",
                      NULL);
}
END_TEST

START_TEST(test_model_offsets_reversed)
{
    char dir[PATH_MAX];
    stspec s;
    model_dir(dir, sizeof dir, &s);
    uint64_t b, e;
    spec_layout(&s, L0 "attn.k_proj.weight", &b, &e);
    tspec *k = spec_find(&s, L0 "attn.k_proj.weight");
    k->fixed = 1;
    k->begin = e;
    k->end = b;
    spec_write(dir, "model.safetensors", &s);
    expect_load_error(dir, RN_EFORMAT, "model.safetensors", L0 "attn.k_proj.weight", NULL);
}
END_TEST

START_TEST(test_model_offsets_length_mismatch)
{
    char dir[PATH_MAX];
    stspec s;
    model_dir(dir, sizeof dir, &s);
    uint64_t b, e;
    spec_layout(&s, L0 "attn.k_proj.weight", &b, &e);
    tspec *k = spec_find(&s, L0 "attn.k_proj.weight");
    k->fixed = 1;
    k->begin = b;
    k->end = e - 4; /* 63 floats' worth for an 8x8 tensor */
    spec_write(dir, "model.safetensors", &s);
    expect_load_error(dir, RN_EFORMAT, "model.safetensors", L0 "attn.k_proj.weight",
                      "252 bytes for 64 elements", NULL);
}
END_TEST

START_TEST(test_model_unsupported_dtype_string)
{
    static const char *const dtypes[] = {"I8", "U8", "BOOL", "F8_E4M3", "f32", ""};
    for (size_t k = 0; k < sizeof dtypes / sizeof dtypes[0]; k++) {
        char dir[PATH_MAX];
        stspec s;
        model_dir(dir, sizeof dir, &s);
        snprintf(spec_find(&s, L0 "attn.v_proj.weight")->dtype, 8, "%s", dtypes[k]);
        spec_write(dir, "model.safetensors", &s);
        char want[32];
        snprintf(want, sizeof want, "unsupported dtype '%s'", dtypes[k]);
        expect_load_error(dir, RN_EFORMAT, "model.safetensors", L0 "attn.v_proj.weight", want,
                          NULL);
    }
}
END_TEST

START_TEST(test_model_integer_weight_dtype)
{
    static const char *const dtypes[] = {"I32", "I64"};
    for (size_t k = 0; k < sizeof dtypes / sizeof dtypes[0]; k++) {
        char dir[PATH_MAX];
        stspec s;
        model_dir(dir, sizeof dir, &s);
        snprintf(spec_find(&s, L0 "attn.q_proj.weight")->dtype, 8, "%s", dtypes[k]);
        spec_write(dir, "model.safetensors", &s);
        expect_load_error(dir, RN_EFORMAT, "model.safetensors", L0 "attn.q_proj.weight", dtypes[k],
                          NULL);
    }
}
END_TEST

START_TEST(test_model_wrong_shape)
{
    static const struct {
        const char *name;
        int ndim;
        int64_t dims[2];
        const char *got;
    } cases[] = {
        {L0 "attn.q_proj.weight", 2, {8, 4}, "(8, 4), config says (8, 8)"},
        {L0 "mlp.down_proj.weight", 2, {16, 8}, "(16, 8), config says (8, 16)"},
        {"model.embeddings.weight", 1, {80, 0}, "(80), config says (10, 8)"},
        {"model.norm.weight", 2, {1, 8}, "(1, 8), config says (8)"},
        {L0 "attn_norm.weight", 1, {9, 0}, "(9), config says (8)"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char dir[PATH_MAX];
        stspec s;
        model_dir(dir, sizeof dir, &s);
        spec_set_shape(&s, cases[k].name, cases[k].ndim, cases[k].dims);
        spec_write(dir, "model.safetensors", &s);
        expect_load_error(dir, RN_EFORMAT, "model.safetensors", cases[k].name, cases[k].got, NULL);
    }
}
END_TEST

START_TEST(test_model_rank_above_4)
{
    char dir[PATH_MAX];
    stspec s;
    model_dir(dir, sizeof dir, &s);
    static const int64_t dims[5] = {1, 1, 1, 8, 8};
    spec_set_shape(&s, L0 "attn.o_proj.weight", 5, dims);
    spec_write(dir, "model.safetensors", &s);
    expect_load_error(dir, RN_EFORMAT, "model.safetensors", L0 "attn.o_proj.weight", "rank 5",
                      NULL);
}
END_TEST

START_TEST(test_model_shape_overflow)
{
    char dir[PATH_MAX];
    stspec s;
    model_dir(dir, sizeof dir, &s);
    tspec *t = spec_add(&s, "huge", "F32", 3, 0, 0, 0);
    t->shape[0] = t->shape[1] = t->shape[2] = (int64_t)1 << 40;
    t->fixed = 1; /* [0, 0]: no data */
    spec_write(dir, "model.safetensors", &s);
    expect_load_error(dir, RN_EFORMAT, "model.safetensors", "'huge'", "overflows", NULL);
}
END_TEST

START_TEST(test_model_missing_tensor)
{
    static const char *const names[] = {L0 "mlp.down_proj.weight", "model.embeddings.weight",
                                        "model.norm.weight", L0 "attn.g_proj.weight"};
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        char dir[PATH_MAX];
        stspec s;
        model_dir(dir, sizeof dir, &s);
        spec_drop(&s, names[k]);
        spec_write(dir, "model.safetensors", &s);
        char want[160];
        snprintf(want, sizeof want, "missing tensor '%s'", names[k]);
        expect_load_error(dir, RN_EFORMAT, want, NULL);
    }
}
END_TEST

START_TEST(test_model_empty_header)
{
    char dir[PATH_MAX];
    stspec s;
    model_dir(dir, sizeof dir, &s);
    write_raw_weights(dir, "{}", 0);
    expect_load_error(dir, RN_EFORMAT, "missing tensor 'model.embeddings.weight'", NULL);
}
END_TEST

START_TEST(test_model_unexpected_tensor)
{
    /* stray biases and norms the config does not use (they would change the
     * output if bound), an untied head next to tied embeddings, a second
     * layer, a group-norm weight with elementwise_affine false, a made-up name */
    static const struct {
        const char *name;
        int ndim, d0, d1;
    } extras[] = {
        {L0 "attn.q_proj.bias", 1, 8, 0},
        {L0 "mlp.down_proj.bias", 1, 8, 0},
        {L0 "attn_norm.bias", 1, 8, 0},
        {"model.norm.bias", 1, 8, 0},
        {"model.embed_norm.weight", 1, 8, 0},
        {"lm_head.bias", 1, 10, 0},
        {"lm_head.weight", 2, 10, 8},
        {"model.layers.1.attn_norm.weight", 1, 8, 0},
        {L0 "attn.g_norm_swish_gate.weight", 1, 4, 0},
        {"optimizer.state", 1, 3, 0},
    };
    for (size_t k = 0; k < sizeof extras / sizeof extras[0]; k++) {
        char dir[PATH_MAX];
        stspec s;
        model_dir(dir, sizeof dir, &s);
        spec_add(&s, extras[k].name, "F32", extras[k].ndim, extras[k].d0, extras[k].d1);
        spec_write(dir, "model.safetensors", &s);
        char want[160];
        snprintf(want, sizeof want, "unexpected tensor '%s'", extras[k].name);
        expect_load_error(dir, RN_EFORMAT, "model.safetensors", want, NULL);
    }
}
END_TEST

START_TEST(test_model_duplicate_tensor_name)
{
    char dir[PATH_MAX];
    stspec s;
    model_dir(dir, sizeof dir, &s);
    spec_add(&s, "model.norm.weight", "F32", 1, 8);
    spec_write(dir, "model.safetensors", &s);
    expect_load_error(dir, RN_EFORMAT, "model.safetensors", "'model.norm.weight' appears twice",
                      NULL);
}
END_TEST

START_TEST(test_model_weights_missing)
{
    char dir[PATH_MAX];
    stspec s;
    model_dir(dir, sizeof dir, &s);
    expect_load_error(dir, RN_EIO, "model.safetensors", "No such file", NULL);
}
END_TEST

START_TEST(test_model_weights_is_fifo)
{
    /* opening a FIFO must not block waiting for a writer */
    char dir[PATH_MAX], path[PATH_MAX + 32];
    stspec s;
    model_dir(dir, sizeof dir, &s);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    ck_assert_int_eq(mkfifo(path, 0644), 0);
    expect_load_error(dir, RN_EIO, "model.safetensors", "not a regular file", NULL);
}
END_TEST

START_TEST(test_model_config_is_fifo)
{
    char dir[PATH_MAX], path[PATH_MAX + 32];
    stspec s;
    model_dir(dir, sizeof dir, &s);
    snprintf(path, sizeof path, "%s/config.json", dir);
    ck_assert_int_eq(unlink(path), 0);
    ck_assert_int_eq(mkfifo(path, 0644), 0);
    expect_load_error(dir, RN_EIO, "config.json", "not a regular file", NULL);
}
END_TEST

START_TEST(test_model_index_is_fifo)
{
    char dir[PATH_MAX], path[PATH_MAX + 48];
    stspec s;
    model_dir(dir, sizeof dir, &s);
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    ck_assert_int_eq(mkfifo(path, 0644), 0);
    expect_load_error(dir, RN_EIO, "model.safetensors.index.json", "not a regular file", NULL);
}
END_TEST

START_TEST(test_model_weights_is_directory)
{
    char dir[PATH_MAX], sub[PATH_MAX + 32];
    stspec s;
    model_dir(dir, sizeof dir, &s);
    snprintf(sub, sizeof sub, "%s/model.safetensors", dir);
    ck_assert_int_eq(mkdir(sub, 0755), 0);
    expect_load_error(dir, RN_EIO, "model.safetensors", "not a regular file", NULL);
}
END_TEST

START_TEST(test_model_group_norm_weight_names)
{
    /* elementwise_affine: either name of the (dv) weight loads; both at once
     * leave the second one unexpected; neither is missing */
    for (int k = 0; k < 4; k++) {
        char dir[PATH_MAX];
        stspec s;
        model_dir(dir, sizeof dir, &s);
        write_config_with(dir, "elementwise_affine", "true");
        if (k == 0 || k == 2)
            spec_add(&s, L0 "attn.g_norm_swish_gate.weight", "F32", 1, 4);
        if (k == 1 || k == 2)
            spec_add(&s, L0 "attn.g_norm.weight", "F32", 1, 4);
        spec_write(dir, "model.safetensors", &s);
        if (k < 2) {
            rn_model *m = expect_load_ok(dir);
            ck_assert_ptr_nonnull(rn_model_weights(m)->layers[0].gn_w.data);
            ck_assert_int_eq(rn_model_param_count(m), VALID_PARAMS + 4);
            rn_model_free(m);
            test_dir_remove(dir);
        } else if (k == 2) {
            expect_load_error(dir, RN_EFORMAT, "unexpected tensor '" L0 "attn.g_norm.weight'",
                              NULL);
        } else {
            expect_load_error(dir, RN_EFORMAT, "missing tensor '" L0 "attn.g_norm.weight'", NULL);
        }
    }
}
END_TEST

START_TEST(test_model_rope_freq_table)
{
    /* optional with rotary positions, refused without them */
    char dir[PATH_MAX];
    stspec s;
    model_dir(dir, sizeof dir, &s);
    spec_add(&s, "model.rope_freq", "F32", 1, 4);
    spec_write(dir, "model.safetensors", &s);
    rn_model *m = expect_load_ok(dir);
    ck_assert_ptr_nonnull(rn_model_weights(m)->rope_freq.data);
    rn_model_free(m);
    write_config_with(dir, "position_encoding", "\"none\"");
    expect_load_error(dir, RN_EFORMAT, "model.rope_freq", "position_encoding", NULL);
}
END_TEST

/* ------------------------------------------------------------ config */

START_TEST(test_model_config_missing)
{
    char dir[PATH_MAX];
    valid_model_dir(dir, sizeof dir);
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/config.json", dir);
    ck_assert_int_eq(unlink(path), 0);
    expect_load_error(dir, RN_EIO, "config.json", "No such file", NULL);
}
END_TEST

START_TEST(test_model_config_is_directory)
{
    char dir[PATH_MAX];
    valid_model_dir(dir, sizeof dir);
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/config.json", dir);
    ck_assert_int_eq(unlink(path), 0);
    ck_assert_int_eq(mkdir(path, 0755), 0);
    expect_load_error(dir, RN_EIO, "config.json", NULL);
}
END_TEST

START_TEST(test_model_config_not_json)
{
    static const char *const texts[] = {"", "{\"hidden_size\": 8,", "hidden_size = 8",
                                        "[{\"hidden_size\": 8}]", "8"};
    for (size_t k = 0; k < sizeof texts / sizeof texts[0]; k++) {
        char dir[PATH_MAX];
        valid_model_dir(dir, sizeof dir);
        write_text(dir, "config.json", texts[k]);
        expect_load_error(dir, RN_EFORMAT, "config.json", "not a JSON object", NULL);
    }
}
END_TEST

/* Fuzz findings (make fuzz-config), kept as cases: text after the object was
 * ignored; an intermediate size derived from hidden_ratio escaped the range
 * an explicit one must keep, so the config could not be read back. */
START_TEST(test_model_config_fuzz_findings)
{
    rn_config c;
    rn_error err = {0};
    const char *trailing = "{\"hidden_ratio\":7,\"hidden_size\":6e4}\":0}";
    ck_assert_int_eq(rn_config_parse(&c, trailing, strlen(trailing), "f", &err), RN_EFORMAT);
    ck_assert_msg(strstr(err.msg, "text after the JSON object"), "%s", err.msg);
    const char *derived = "{\"hidden_ratio\":7,\"hidden_size\":6e4}";
    ck_assert_int_eq(rn_config_parse(&c, derived, strlen(derived), "f", &err), RN_EFORMAT);
    ck_assert_msg(strstr(err.msg, "intermediate size 280064"), "%s", err.msg);
    const char *spaced = "  {\"hidden_size\": 256, \"num_heads\": 4}\n\t ";
    ck_assert_int_eq(rn_config_parse(&c, spaced, strlen(spaced), "f", &err), RN_OK);
}
END_TEST

START_TEST(test_model_config_too_large)
{
    char dir[PATH_MAX];
    valid_model_dir(dir, sizeof dir);
    size_t n = (1u << 20) + 1;
    char *text = malloc(n);
    ck_assert_ptr_nonnull(text);
    memset(text, ' ', n);
    memcpy(text, valid_config, strlen(valid_config));
    write_file(dir, "config.json", text, n);
    free(text);
    expect_load_error(dir, RN_EFORMAT, "config.json", NULL);
}
END_TEST

/* One bad config field per row: the field, its JSON value, the status and a
 * piece of the message. */
static const struct {
    const char *key, *value;
    int code;
    const char *needle;
} bad_fields[] = {
    {"hidden_size", "0", RN_EFORMAT, "'hidden_size' = 0 is outside"},
    {"hidden_size", "-8", RN_EFORMAT, "'hidden_size' = -8 is outside"},
    {"hidden_size", "8.5", RN_EFORMAT, "'hidden_size' must be an integer"},
    {"hidden_size", "\"8\"", RN_EFORMAT, "'hidden_size' must be an integer"},
    {"hidden_size", "1e400", RN_EFORMAT, "'hidden_size'"},
    {"num_hidden_layers", "-1", RN_EFORMAT, "'num_hidden_layers' = -1 is outside"},
    {"num_hidden_layers", "0", RN_EFORMAT, "'num_hidden_layers' = 0 is outside"},
    {"vocab_size", "1e12", RN_EFORMAT, "'vocab_size' = 1000000000000 is outside"},
    {"vocab_size", "true", RN_EFORMAT, "'vocab_size' must be an integer"},
    {"num_heads", "3", RN_EFORMAT, "num_heads 3"},
    {"num_heads", "16", RN_EFORMAT, "num_heads 16"},
    {"expand_k", "0", RN_EFORMAT, "'expand_k'"},
    {"intermediate_size", "0", RN_EFORMAT, "'intermediate_size' = 0 is outside"},
    {"norm_eps", "-1", RN_EFORMAT, "'norm_eps'"},
    {"norm_type", "\"batchnorm\"", RN_EFORMAT, "'norm_type' must be one of: rmsnorm, layernorm"},
    {"hidden_act", "\"tanh\"", RN_EFORMAT, "'hidden_act' must be one of"},
    {"decay", "7", RN_EFORMAT, "'decay' must be one of"},
    {"tie_word_embeddings", "\"yes\"", RN_EFORMAT, "'tie_word_embeddings' must be true or false"},
    {"bos_token_id", "-2", RN_EFORMAT, "'bos_token_id'"},
    {"model_type", "\"llama\"", RN_EUNSUPPORTED, "model_type"},
    {"num_kv_heads", "1", RN_EUNSUPPORTED, "num_kv_heads"},
    {"num_kv_heads", "2.5", RN_EUNSUPPORTED, "num_kv_heads"},
    {"num_kv_heads", "1e20", RN_EUNSUPPORTED, "num_kv_heads"},
    {"num_kv_heads", "\"2\"", RN_EUNSUPPORTED, "num_kv_heads"},
    {"feature_map", "\"elu\"", RN_EUNSUPPORTED, "feature_map"},
    {"use_short_conv", "true", RN_EUNSUPPORTED, "use_short_conv"},
    {"use_output_gate", "false", RN_EUNSUPPORTED, "use_output_gate"},
    {"attn", "{\"layers\": [0]}", RN_EUNSUPPORTED, "'attn'"},
    {"hiden_size", "8", RN_EFORMAT, "unknown field 'hiden_size'"},
};

START_TEST(test_model_config_bad_field)
{
    char dir[PATH_MAX];
    stspec s;
    model_dir(dir, sizeof dir, &s);
    spec_write(dir, "model.safetensors", &s);
    write_config_with(dir, bad_fields[_i].key, bad_fields[_i].value);
    expect_load_error(dir, bad_fields[_i].code, "config.json", bad_fields[_i].needle, NULL);
}
END_TEST

START_TEST(test_model_config_typo_instead_of_field)
{
    /* "hiden_size" in place of hidden_size must not fall back to the default */
    static const char cfg[] =
        "{\"hiden_size\": 8, \"num_hidden_layers\": 1, \"num_heads\": 2, \"vocab_size\": 10,"
        " \"expand_k\": 1, \"expand_v\": 1, \"intermediate_size\": 16,"
        " \"elementwise_affine\": false, \"tie_word_embeddings\": true}";
    char dir[PATH_MAX];
    valid_model_dir(dir, sizeof dir);
    write_text(dir, "config.json", cfg);
    expect_load_error(dir, RN_EFORMAT, "config.json", "unknown field 'hiden_size'", NULL);
}
END_TEST

START_TEST(test_model_config_odd_rotary_head_dim)
{
    /* expand_k 0.75: key dim 6 over 2 heads gives dk 3, which rotary cannot pair */
    char dir[PATH_MAX];
    valid_model_dir(dir, sizeof dir);
    write_config_with(dir, "expand_k", "0.75");
    expect_load_error(dir, RN_EFORMAT, "config.json", "rotary", NULL);
}
END_TEST

START_TEST(test_model_config_disagrees_with_weights)
{
    /* a valid config for a different size: the first tensor checked names the mismatch */
    char dir[PATH_MAX];
    valid_model_dir(dir, sizeof dir);
    write_config_with(dir, "vocab_size", "12");
    expect_load_error(dir, RN_EFORMAT, "model.embeddings.weight", "config says (12, 8)", NULL);
}
END_TEST

/* ------------------------------------------------------------ sharded */

#define SHARD1 "model-00001-of-00002.safetensors"
#define SHARD2 "model-00002-of-00002.safetensors"
#define INDEX "model.safetensors.index.json"

/* Splits the valid spec after its first `split` tensors into two shards. */
static void split_spec(const stspec *all, int split, stspec *a, stspec *b)
{
    memset(a, 0, sizeof *a);
    memset(b, 0, sizeof *b);
    for (int i = 0; i < all->n; i++) {
        stspec *dst = i < split ? a : b;
        dst->t[dst->n++] = all->t[i];
    }
}

static void write_index(const char *dir, const stspec *a, const char *fa, const stspec *b,
                        const char *fb)
{
    cJSON *root = cJSON_CreateObject();
    ck_assert_ptr_nonnull(root);
    cJSON *meta = cJSON_AddObjectToObject(root, "metadata");
    cJSON_AddNumberToObject(meta, "total_size", (double)(spec_data_size(a) + spec_data_size(b)));
    cJSON *wm = cJSON_AddObjectToObject(root, "weight_map");
    for (int i = 0; i < a->n; i++)
        cJSON_AddStringToObject(wm, a->t[i].name, fa);
    for (int i = 0; i < b->n; i++)
        cJSON_AddStringToObject(wm, b->t[i].name, fb);
    char *text = cJSON_Print(root);
    ck_assert_ptr_nonnull(text);
    write_text(dir, INDEX, text);
    cJSON_free(text);
    cJSON_Delete(root);
}

/* A fresh directory with the valid config and the valid tensors in two shards. */
static void sharded_dir(char *dir, size_t cap, stspec *a, stspec *b)
{
    stspec all;
    model_dir(dir, cap, &all);
    split_spec(&all, 5, a, b);
    spec_write(dir, SHARD1, a);
    spec_write(dir, SHARD2, b);
    write_index(dir, a, SHARD1, b, SHARD2);
}

START_TEST(test_model_sharded_loads)
{
    char one[PATH_MAX], dir[PATH_MAX];
    valid_model_dir(one, sizeof one);
    rn_model *m1 = expect_load_ok(one);
    int64_t single = rn_model_param_count(m1);
    rn_model_free(m1);
    test_dir_remove(one);

    stspec a, b;
    sharded_dir(dir, sizeof dir, &a, &b);
    rn_model *m = expect_load_ok(dir);
    ck_assert_int_eq(rn_model_param_count(m), single);
    ck_assert_int_eq(rn_model_param_count(m), VALID_PARAMS);
    const rn_weights *w = rn_model_weights(m);
    const float *dn = w->layers[0].down_w.data;
    for (int i = 0; i < 128; i++) /* down_proj is tensor 6 of the second shard */
        ck_assert_float_eq(dn[i], pattern_value(6, (uint64_t)i));
    rn_model_free(m);
    test_dir_remove(dir);
}
END_TEST

START_TEST(test_model_sharded_index_wins_over_single_file)
{
    /* with an index present, a stray model.safetensors is not read */
    char dir[PATH_MAX];
    stspec a, b;
    sharded_dir(dir, sizeof dir, &a, &b);
    write_text(dir, "model.safetensors", "garbage");
    rn_model *m = expect_load_ok(dir);
    ck_assert_int_eq(rn_model_param_count(m), VALID_PARAMS);
    rn_model_free(m);
    test_dir_remove(dir);
}
END_TEST

START_TEST(test_model_sharded_bad_shard_name)
{
    static const char *const names[] = {"../x.safetensors",    "/etc/passwd", "sub/x.safetensors",
                                        ".hidden.safetensors", "..",          ""};
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        char dir[PATH_MAX];
        stspec a, b;
        sharded_dir(dir, sizeof dir, &a, &b);
        write_index(dir, &a, SHARD1, &b, names[k]);
        char want[64];
        snprintf(want, sizeof want, "bad shard name '%s'", names[k]);
        expect_load_error(dir, RN_EFORMAT, INDEX, want, NULL);
    }
}
END_TEST

START_TEST(test_model_sharded_missing_shard)
{
    char dir[PATH_MAX], path[PATH_MAX + 64];
    stspec a, b;
    sharded_dir(dir, sizeof dir, &a, &b);
    snprintf(path, sizeof path, "%s/%s", dir, SHARD2);
    ck_assert_int_eq(unlink(path), 0);
    expect_load_error(dir, RN_EIO, SHARD2, "No such file", NULL);
}
END_TEST

START_TEST(test_model_sharded_shard_is_directory)
{
    char dir[PATH_MAX], path[PATH_MAX + 64];
    stspec a, b;
    sharded_dir(dir, sizeof dir, &a, &b);
    snprintf(path, sizeof path, "%s/%s", dir, SHARD1);
    ck_assert_int_eq(unlink(path), 0);
    ck_assert_int_eq(mkdir(path, 0755), 0);
    expect_load_error(dir, RN_EIO, SHARD1, "not a regular file", NULL);
}
END_TEST

START_TEST(test_model_sharded_shard_is_fifo)
{
    char dir[PATH_MAX], path[PATH_MAX + 64];
    stspec a, b;
    sharded_dir(dir, sizeof dir, &a, &b);
    snprintf(path, sizeof path, "%s/%s", dir, SHARD2);
    ck_assert_int_eq(unlink(path), 0);
    ck_assert_int_eq(mkfifo(path, 0644), 0);
    expect_load_error(dir, RN_EIO, SHARD2, "not a regular file", NULL);
}
END_TEST

START_TEST(test_model_sharded_bad_index)
{
    static const char *const texts[] = {
        "",
        "{\"weight_map\": ",
        "[]",
        "{\"metadata\": {}}",
        "{\"weight_map\": [\"a\"]}",
        "{\"weight_map\": {}}",
        "{\"weight_map\": {\"model.norm.weight\": 1}}",
    };
    for (size_t k = 0; k < sizeof texts / sizeof texts[0]; k++) {
        char dir[PATH_MAX];
        stspec a, b;
        sharded_dir(dir, sizeof dir, &a, &b);
        write_text(dir, INDEX, texts[k]);
        expect_load_error(dir, RN_EFORMAT, INDEX, NULL);
    }
}
END_TEST

START_TEST(test_model_sharded_tensor_in_two_shards)
{
    char dir[PATH_MAX];
    stspec a, b;
    sharded_dir(dir, sizeof dir, &a, &b);
    spec_add(&b, "model.norm.weight", "F32", 1, 8); /* also in the first shard */
    spec_write(dir, SHARD2, &b);
    expect_load_error(dir, RN_EFORMAT, "'model.norm.weight'", SHARD1, SHARD2, NULL);
}
END_TEST

START_TEST(test_model_sharded_shard_missing_tensor)
{
    /* the index lists a tensor its shard does not hold */
    char dir[PATH_MAX];
    stspec a, b;
    sharded_dir(dir, sizeof dir, &a, &b);
    stspec b2 = b;
    spec_drop(&b2, L0 "mlp.up_proj.weight");
    spec_write(dir, SHARD2, &b2);
    expect_load_error(dir, RN_EFORMAT, "missing tensor '" L0 "mlp.up_proj.weight'", NULL);
}
END_TEST

Suite *model_suite(void)
{
    Suite *s = suite_create("model");
    TCase *ok = tcase_create("valid");
    tcase_add_test(ok, test_model_valid_tiny_model_loads);
    tcase_add_test(ok, test_model_mixed_dtypes_load);
    tcase_add_test(ok, test_model_misaligned_data_loads);
    tcase_add_test(ok, test_model_neutral_fla_fields_accepted);
    tcase_add_test(ok, test_model_sharded_loads);
    tcase_add_test(ok, test_model_sharded_index_wins_over_single_file);
    suite_add_tcase(s, ok);

    TCase *st = tcase_create("safetensors");
    tcase_add_test(st, test_model_truncated_in_data);
    tcase_add_test(st, test_model_header_length_past_eof);
    tcase_add_test(st, test_model_file_shorter_than_8_bytes);
    tcase_add_test(st, test_model_header_not_json);
    tcase_add_test(st, test_model_header_json_not_object);
    tcase_add_test(st, test_model_header_entry_malformed);
    tcase_add_test(st, test_model_metadata_not_strings);
    tcase_add_test(st, test_model_overlapping_offsets);
    tcase_add_test(st, test_model_offsets_beyond_data);
    tcase_add_test(st, test_model_offsets_reversed);
    tcase_add_test(st, test_model_offsets_length_mismatch);
    tcase_add_test(st, test_model_unsupported_dtype_string);
    tcase_add_test(st, test_model_integer_weight_dtype);
    tcase_add_test(st, test_model_wrong_shape);
    tcase_add_test(st, test_model_rank_above_4);
    tcase_add_test(st, test_model_shape_overflow);
    tcase_add_test(st, test_model_missing_tensor);
    tcase_add_test(st, test_model_empty_header);
    tcase_add_test(st, test_model_unexpected_tensor);
    tcase_add_test(st, test_model_duplicate_tensor_name);
    tcase_add_test(st, test_model_weights_missing);
    tcase_add_test(st, test_model_weights_is_directory);
    tcase_add_test(st, test_model_weights_is_fifo);
    tcase_add_test(st, test_model_config_is_fifo);
    tcase_add_test(st, test_model_index_is_fifo);
    tcase_add_test(st, test_model_group_norm_weight_names);
    tcase_add_test(st, test_model_rope_freq_table);
    suite_add_tcase(s, st);

    TCase *cfg = tcase_create("config");
    tcase_add_test(cfg, test_model_config_missing);
    tcase_add_test(cfg, test_model_config_is_directory);
    tcase_add_test(cfg, test_model_config_not_json);
    tcase_add_test(cfg, test_model_config_too_large);
    tcase_add_test(cfg, test_model_config_fuzz_findings);
    tcase_add_loop_test(cfg, test_model_config_bad_field, 0,
                        (int)(sizeof bad_fields / sizeof bad_fields[0]));
    tcase_add_test(cfg, test_model_config_typo_instead_of_field);
    tcase_add_test(cfg, test_model_config_odd_rotary_head_dim);
    tcase_add_test(cfg, test_model_config_disagrees_with_weights);
    suite_add_tcase(s, cfg);

    TCase *sh = tcase_create("sharded");
    tcase_add_test(sh, test_model_sharded_bad_shard_name);
    tcase_add_test(sh, test_model_sharded_missing_shard);
    tcase_add_test(sh, test_model_sharded_shard_is_directory);
    tcase_add_test(sh, test_model_sharded_shard_is_fifo);
    tcase_add_test(sh, test_model_sharded_bad_index);
    tcase_add_test(sh, test_model_sharded_tensor_in_two_shards);
    tcase_add_test(sh, test_model_sharded_shard_missing_tensor);
    suite_add_tcase(s, sh);
    return s;
}
