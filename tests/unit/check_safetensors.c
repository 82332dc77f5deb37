/*
 * check_safetensors.c -- rn_st_write then rn_st_open: tensors of every dtype
 * and their metadata come back byte for byte, the data section is 8-byte
 * aligned, the fill callback produces the same file as in-memory data, and
 * the file is replaced atomically (no PATH.tmp left behind, success or not).
 */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "safetensors.h"
#include "fixture.h"
#include "suites.h"
#include "util.h"

/* Number of directory entries other than . and .. */
static int dir_count(const char *dir)
{
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    return n;
}

static int file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* The tensors of the round-trip tests, one of each dtype and rank 0 to 4. */
static float f32_data[2 * 3];
static uint16_t bf16_data[5];
static uint16_t f16_data[2 * 2 * 2];
static int32_t i32_data[3];
static int64_t i64_data[1];
static double f64_data[1 * 2 * 1 * 2];
static float scalar_data[1];

static void init_data(void)
{
    for (int i = 0; i < 6; i++)
        f32_data[i] = 0.5f * (float)i - 1.0f;
    for (int i = 0; i < 5; i++)
        bf16_data[i] = rn__f32_to_bf16(0.25f * (float)i);
    for (int i = 0; i < 8; i++)
        f16_data[i] = rn__f32_to_f16(-0.125f * (float)i);
    i32_data[0] = -7;
    i32_data[1] = 0;
    i32_data[2] = INT32_MAX;
    i64_data[0] = INT64_MIN;
    for (int i = 0; i < 4; i++)
        f64_data[i] = 1.0 / (i + 1);
    scalar_data[0] = 3.0f;
}

#define N_OUT 7

static void make_outs(rn_st_out *t, int with_data)
{
    static const rn_st_out proto[N_OUT] = {
        {"w.f32", RN_DT_F32, 2, {2, 3}, NULL},    {"w.bf16", RN_DT_BF16, 1, {5}, NULL},
        {"w.f16", RN_DT_F16, 3, {2, 2, 2}, NULL}, {"ids.i32", RN_DT_I32, 1, {3}, NULL},
        {"step.i64", RN_DT_I64, 1, {1}, NULL},    {"w.f64", RN_DT_F64, 4, {1, 2, 1, 2}, NULL},
        {"scale", RN_DT_F32, 0, {0}, NULL},
    };
    const void *data[N_OUT] = {f32_data, bf16_data, f16_data,   i32_data,
                               i64_data, f64_data,  scalar_data};
    init_data();
    for (int i = 0; i < N_OUT; i++) {
        t[i] = proto[i];
        t[i].data = with_data ? data[i] : NULL;
    }
}

static size_t out_bytes(const rn_st_out *t)
{
    size_t n = rn_dtype_size(t->dtype);
    for (int d = 0; d < t->ndim; d++)
        n *= (size_t)t->shape[d];
    return n;
}

/* Opens path and checks that it holds exactly the tensors `t` (with the
 * contents `ref` points at, indexed like t) and the given metadata. */
static void check_file(const char *path, const rn_st_out *t, const void *const *ref, int n,
                       const char *const *mk, const char *const *mv, int n_meta)
{
    rn_st_file *f = NULL;
    rn_error err;
    memset(&err, 0, sizeof err);
    ck_assert_msg(rn_st_open(&f, path, &err) == RN_OK, "%s", err.msg);
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(f->n_entries, n);
    ck_assert_int_eq(f->n_meta, n_meta);
    /* header length is a multiple of 8, so the data section is 8-aligned in
     * the file and in the page-aligned mapping */
    ck_assert_uint_eq((size_t)(f->data - (const uint8_t *)f->map) % 8, 0);
    ck_assert_uint_eq((uintptr_t)f->data % 8, 0);
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        const rn_st_entry *e = rn_st_find(f, t[i].name);
        ck_assert_msg(e != NULL, "%s missing", t[i].name);
        ck_assert_str_eq(e->name, t[i].name);
        ck_assert_int_eq(e->dtype, t[i].dtype);
        ck_assert_int_eq(e->ndim, t[i].ndim);
        int64_t numel = 1;
        for (int d = 0; d < t[i].ndim; d++) {
            ck_assert_int_eq(e->shape[d], t[i].shape[d]);
            numel *= t[i].shape[d];
        }
        ck_assert_int_eq(e->numel, numel);
        size_t nb = out_bytes(&t[i]);
        ck_assert_uint_eq(e->end - e->begin, nb);
        ck_assert_msg(memcmp(rn_st_data(f, e), ref[i], nb) == 0, "%s: bytes differ", t[i].name);
        total += nb;
    }
    ck_assert_uint_eq(f->data_size, total);
    for (int i = 0; i < n_meta; i++) {
        const char *v = rn_st_meta(f, mk[i]);
        ck_assert_msg(v != NULL, "metadata %s missing", mk[i]);
        ck_assert_str_eq(v, mv[i]);
    }
    ck_assert_ptr_null(rn_st_meta(f, "no-such-key"));
    rn_st_close(f);
}

START_TEST(test_safetensors_roundtrip_all_dtypes)
{
    static const char *const mk[] = {"format", "seed", "note"};
    static const char *const mv[] = {"pt", "1101", "quotes \" and \\ and unicode \xc3\xa9"};
    char dir[PATH_MAX], path[PATH_MAX + 32];
    test_dir_create(dir, sizeof dir, "st");
    snprintf(path, sizeof path, "%s/w.safetensors", dir);
    rn_st_out t[N_OUT];
    make_outs(t, 1);
    rn_error err;
    memset(&err, 0, sizeof err);
    int rc = rn_st_write(path, t, N_OUT, mk, mv, 3, NULL, NULL, &err);
    ck_assert_msg(rc == RN_OK, "write: %s", err.msg);
    const void *ref[N_OUT];
    for (int i = 0; i < N_OUT; i++)
        ref[i] = t[i].data;
    check_file(path, t, ref, N_OUT, mk, mv, 3);
    ck_assert_int_eq(dir_count(dir), 1);
    test_dir_remove(dir);
}
END_TEST

START_TEST(test_safetensors_roundtrip_values_decode)
{
    /* the stored bits mean what they should once converted */
    char dir[PATH_MAX], path[PATH_MAX + 32];
    test_dir_create(dir, sizeof dir, "st");
    snprintf(path, sizeof path, "%s/w.safetensors", dir);
    rn_st_out t[N_OUT];
    make_outs(t, 1);
    rn_error err;
    memset(&err, 0, sizeof err);
    ck_assert_int_eq(rn_st_write(path, t, N_OUT, NULL, NULL, 0, NULL, NULL, &err), RN_OK);
    rn_st_file *f = NULL;
    ck_assert_int_eq(rn_st_open(&f, path, &err), RN_OK);
    ck_assert_int_eq(f->n_meta, 0);
    float v[8];
    const rn_st_entry *e = rn_st_find(f, "w.bf16");
    rn_to_f32(v, rn_st_data(f, e), e->dtype, 5);
    for (int i = 0; i < 5; i++)
        ck_assert_float_eq(v[i], 0.25f * (float)i);
    e = rn_st_find(f, "w.f16");
    rn_to_f32(v, rn_st_data(f, e), e->dtype, 8);
    for (int i = 0; i < 8; i++)
        ck_assert_float_eq(v[i], -0.125f * (float)i);
    e = rn_st_find(f, "ids.i32");
    rn_to_f32(v, rn_st_data(f, e), e->dtype, 3);
    ck_assert_float_eq(v[0], -7.0f);
    e = rn_st_find(f, "scale");
    ck_assert_int_eq(e->ndim, 0);
    ck_assert_int_eq(e->numel, 1);
    rn_to_f32(v, rn_st_data(f, e), e->dtype, 1);
    ck_assert_float_eq(v[0], 3.0f);
    rn_st_close(f);
    test_dir_remove(dir);
}
END_TEST

typedef struct fill_ctx {
    int calls;
    int seen[N_OUT];
    size_t nbytes[N_OUT];
    int fail_at; /* index whose fill fails, or -1 */
} fill_ctx;

/* Tensor `index` gets byte k = (k * 7 + index * 31) & 0xff. */
static uint8_t fill_byte(int index, size_t k)
{
    return (uint8_t)((k * 7 + (size_t)index * 31) & 0xff);
}

static int fill_pattern(void *ctx, int index, void *buf, size_t nbytes)
{
    fill_ctx *c = ctx;
    c->calls++;
    if (index < 0 || index >= N_OUT)
        return RN_EINVAL;
    c->seen[index]++;
    c->nbytes[index] = nbytes;
    if (index == c->fail_at)
        return RN_EINVAL;
    uint8_t *p = buf;
    for (size_t k = 0; k < nbytes; k++)
        p[k] = fill_byte(index, k);
    return RN_OK;
}

START_TEST(test_safetensors_write_with_fill_callback)
{
    /* tensors 0, 2, 4, 6 come from fill(), the others from memory */
    char dir[PATH_MAX], path[PATH_MAX + 32];
    test_dir_create(dir, sizeof dir, "st");
    snprintf(path, sizeof path, "%s/fill.safetensors", dir);
    rn_st_out t[N_OUT];
    make_outs(t, 1);
    uint8_t *expect[N_OUT] = {NULL};
    const void *ref[N_OUT];
    for (int i = 0; i < N_OUT; i++) {
        ref[i] = t[i].data;
        if (i % 2 == 0) {
            size_t nb = out_bytes(&t[i]);
            expect[i] = malloc(nb);
            ck_assert_ptr_nonnull(expect[i]);
            for (size_t k = 0; k < nb; k++)
                expect[i][k] = fill_byte(i, k);
            ref[i] = expect[i];
            t[i].data = NULL;
        }
    }
    fill_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.fail_at = -1;
    rn_error err;
    memset(&err, 0, sizeof err);
    ck_assert_msg(rn_st_write(path, t, N_OUT, NULL, NULL, 0, fill_pattern, &ctx, &err) == RN_OK,
                  "%s", err.msg);
    ck_assert_int_eq(ctx.calls, 4);
    for (int i = 0; i < N_OUT; i++) {
        ck_assert_int_eq(ctx.seen[i], i % 2 == 0);
        if (i % 2 == 0)
            ck_assert_uint_eq(ctx.nbytes[i], out_bytes(&t[i]));
    }
    check_file(path, t, ref, N_OUT, NULL, NULL, 0);
    for (int i = 0; i < N_OUT; i++)
        free(expect[i]);
    test_dir_remove(dir);
}
END_TEST

START_TEST(test_safetensors_fill_failure_leaves_nothing)
{
    char dir[PATH_MAX], path[PATH_MAX + 32];
    test_dir_create(dir, sizeof dir, "st");
    snprintf(path, sizeof path, "%s/fail.safetensors", dir);
    rn_st_out t[N_OUT];
    make_outs(t, 0);
    fill_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.fail_at = 3;
    rn_error err;
    memset(&err, 0, sizeof err);
    int rc = rn_st_write(path, t, N_OUT, NULL, NULL, 0, fill_pattern, &ctx, &err);
    ck_assert_int_eq(rc, RN_EINVAL);
    ck_assert_int_eq(err.code, RN_EINVAL);
    ck_assert_msg(strstr(err.msg, "fail.safetensors") != NULL, "%s", err.msg);
    ck_assert_int_eq(ctx.calls, 4); /* stopped at the failing tensor */
    ck_assert_int_eq(dir_count(dir), 0);
    test_dir_remove(dir);
}
END_TEST

START_TEST(test_safetensors_find_missing_name)
{
    char dir[PATH_MAX], path[PATH_MAX + 32];
    test_dir_create(dir, sizeof dir, "st");
    snprintf(path, sizeof path, "%s/w.safetensors", dir);
    rn_st_out t[N_OUT];
    make_outs(t, 1);
    ck_assert_int_eq(rn_st_write(path, t, N_OUT, NULL, NULL, 0, NULL, NULL, NULL), RN_OK);
    rn_st_file *f = NULL;
    ck_assert_int_eq(rn_st_open(&f, path, NULL), RN_OK);
    ck_assert_ptr_null(rn_st_find(f, "missing"));
    ck_assert_ptr_null(rn_st_find(f, ""));
    ck_assert_ptr_null(rn_st_find(f, "w.f3"));    /* a prefix */
    ck_assert_ptr_null(rn_st_find(f, "w.f32.x")); /* an extension */
    ck_assert_ptr_null(rn_st_find(f, "__metadata__"));
    ck_assert_ptr_nonnull(rn_st_find(f, "w.f32"));
    rn_st_close(f);
    test_dir_remove(dir);
}
END_TEST

START_TEST(test_safetensors_empty_file_roundtrip)
{
    char dir[PATH_MAX], path[PATH_MAX + 32];
    test_dir_create(dir, sizeof dir, "st");
    snprintf(path, sizeof path, "%s/empty.safetensors", dir);
    ck_assert_int_eq(rn_st_write(path, NULL, 0, NULL, NULL, 0, NULL, NULL, NULL), RN_OK);
    rn_st_file *f = NULL;
    rn_error err;
    memset(&err, 0, sizeof err);
    ck_assert_msg(rn_st_open(&f, path, &err) == RN_OK, "%s", err.msg);
    ck_assert_int_eq(f->n_entries, 0);
    ck_assert_uint_eq(f->data_size, 0);
    ck_assert_ptr_null(rn_st_find(f, "x"));
    rn_st_close(f);
    test_dir_remove(dir);
}
END_TEST

START_TEST(test_safetensors_write_replaces_atomically)
{
    char dir[PATH_MAX], path[PATH_MAX + 32], tmp[PATH_MAX + 48];
    test_dir_create(dir, sizeof dir, "st");
    snprintf(path, sizeof path, "%s/w.safetensors", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    rn_st_out t[N_OUT];
    make_outs(t, 1);
    static const char *const k1[] = {"version"}, *const v1[] = {"1"}, *const v2[] = {"2"};

    ck_assert_int_eq(rn_st_write(path, t, N_OUT, k1, v1, 1, NULL, NULL, NULL), RN_OK);
    ck_assert(!file_exists(tmp));
    /* a reader holding the first version keeps seeing it after the replace */
    rn_st_file *old = NULL;
    ck_assert_int_eq(rn_st_open(&old, path, NULL), RN_OK);

    float other[6] = {9, 8, 7, 6, 5, 4};
    t[0].data = other;
    ck_assert_int_eq(rn_st_write(path, t, N_OUT, k1, v2, 1, NULL, NULL, NULL), RN_OK);
    ck_assert(!file_exists(tmp));
    ck_assert_int_eq(dir_count(dir), 1);

    ck_assert_str_eq(rn_st_meta(old, "version"), "1");
    ck_assert(memcmp(rn_st_data(old, rn_st_find(old, "w.f32")), f32_data, sizeof f32_data) == 0);
    rn_st_close(old);

    const void *ref[N_OUT];
    for (int i = 0; i < N_OUT; i++)
        ref[i] = t[i].data;
    check_file(path, t, ref, N_OUT, k1, v2, 1);
    test_dir_remove(dir);
}
END_TEST

START_TEST(test_safetensors_write_failure_keeps_old_file)
{
    /* a stale PATH.tmp is overwritten; a failed write leaves the old file as it was */
    char dir[PATH_MAX], path[PATH_MAX + 32], tmp[PATH_MAX + 48];
    test_dir_create(dir, sizeof dir, "st");
    snprintf(path, sizeof path, "%s/w.safetensors", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *stale = fopen(tmp, "wb");
    ck_assert_ptr_nonnull(stale);
    fputs("stale partial write", stale);
    fclose(stale);

    rn_st_out t[N_OUT];
    make_outs(t, 1);
    ck_assert_int_eq(rn_st_write(path, t, N_OUT, NULL, NULL, 0, NULL, NULL, NULL), RN_OK);
    ck_assert(!file_exists(tmp));

    rn_st_out u[N_OUT];
    make_outs(u, 0);
    fill_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.fail_at = 0;
    ck_assert_int_eq(rn_st_write(path, u, N_OUT, NULL, NULL, 0, fill_pattern, &ctx, NULL),
                     RN_EINVAL);
    ck_assert(!file_exists(tmp));
    const void *ref[N_OUT];
    for (int i = 0; i < N_OUT; i++)
        ref[i] = t[i].data;
    check_file(path, t, ref, N_OUT, NULL, NULL, 0);
    test_dir_remove(dir);
}
END_TEST

START_TEST(test_safetensors_write_to_missing_dir)
{
    char dir[PATH_MAX], path[PATH_MAX + 32];
    test_dir_create(dir, sizeof dir, "st");
    snprintf(path, sizeof path, "%s/no/such/dir/w.safetensors", dir);
    rn_st_out t[N_OUT];
    make_outs(t, 1);
    rn_error err;
    memset(&err, 0, sizeof err);
    ck_assert_int_eq(rn_st_write(path, t, N_OUT, NULL, NULL, 0, NULL, NULL, &err), RN_EIO);
    ck_assert_msg(strstr(err.msg, "w.safetensors.tmp") != NULL, "%s", err.msg);
    test_dir_remove(dir);
}
END_TEST

START_TEST(test_safetensors_open_missing_file)
{
    char dir[PATH_MAX], path[PATH_MAX + 32];
    test_dir_create(dir, sizeof dir, "st");
    snprintf(path, sizeof path, "%s/absent.safetensors", dir);
    rn_st_file *f = (rn_st_file *)(void *)dir; /* must be reset to NULL */
    rn_error err;
    memset(&err, 0, sizeof err);
    ck_assert_int_eq(rn_st_open(&f, path, &err), RN_EIO);
    ck_assert_ptr_null(f);
    ck_assert_msg(strstr(err.msg, "absent.safetensors") != NULL, "%s", err.msg);
    test_dir_remove(dir);
}
END_TEST

START_TEST(test_safetensors_dtype_names)
{
    static const struct {
        const char *name;
        rn_dtype t;
        size_t size;
    } all[] = {{"F32", RN_DT_F32, 4}, {"F16", RN_DT_F16, 2}, {"BF16", RN_DT_BF16, 2},
               {"F64", RN_DT_F64, 8}, {"I32", RN_DT_I32, 4}, {"I64", RN_DT_I64, 8}};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        rn_dtype t;
        ck_assert_int_eq(rn_dtype_from_name(all[i].name, &t), RN_OK);
        ck_assert_int_eq(t, all[i].t);
        ck_assert_str_eq(rn_dtype_st_name(all[i].t), all[i].name);
        ck_assert_uint_eq(rn_dtype_size(all[i].t), all[i].size);
    }
    rn_dtype t;
    ck_assert_int_eq(rn_dtype_from_name("I8", &t), RN_EFORMAT);
    ck_assert_int_eq(rn_dtype_from_name("f32", &t), RN_EFORMAT);
    ck_assert_int_eq(rn_dtype_from_name("", &t), RN_EFORMAT);
}
END_TEST

Suite *safetensors_suite(void)
{
    Suite *s = suite_create("safetensors");
    TCase *tc = tcase_create("roundtrip");
    tcase_add_test(tc, test_safetensors_roundtrip_all_dtypes);
    tcase_add_test(tc, test_safetensors_roundtrip_values_decode);
    tcase_add_test(tc, test_safetensors_write_with_fill_callback);
    tcase_add_test(tc, test_safetensors_fill_failure_leaves_nothing);
    tcase_add_test(tc, test_safetensors_find_missing_name);
    tcase_add_test(tc, test_safetensors_empty_file_roundtrip);
    tcase_add_test(tc, test_safetensors_write_replaces_atomically);
    tcase_add_test(tc, test_safetensors_write_failure_keeps_old_file);
    tcase_add_test(tc, test_safetensors_write_to_missing_dir);
    tcase_add_test(tc, test_safetensors_open_missing_file);
    tcase_add_test(tc, test_safetensors_dtype_names);
    suite_add_tcase(s, tc);
    return s;
}
