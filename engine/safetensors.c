/*
 * safetensors.c -- validating mmap reader and atomic writer for safetensors.
 *
 * Everything read from the file is untrusted.  Checks, in order: file at least
 * 8 bytes; header length within the file and under RN_ST_MAX_HEADER; header is
 * a JSON object; each entry has a known dtype, a shape of at most 4
 * non-negative integer dims and [begin,end] offsets inside the data section
 * whose length equals numel * dtype size (with overflow checks); names are
 * unique; ranges do not overlap.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "safetensors.h"
#include "util.h"

static const struct {
    const char *name;
    rn_dtype dtype;
} dtype_names[] = {
    {"F32", RN_DT_F32}, {"F16", RN_DT_F16}, {"BF16", RN_DT_BF16},
    {"F64", RN_DT_F64}, {"I32", RN_DT_I32}, {"I64", RN_DT_I64},
};

int rn_dtype_from_name(const char *s, rn_dtype *out)
{
    for (size_t i = 0; i < sizeof dtype_names / sizeof dtype_names[0]; i++) {
        if (strcmp(s, dtype_names[i].name) == 0) {
            *out = dtype_names[i].dtype;
            return RN_OK;
        }
    }
    return RN_EFORMAT;
}

const char *rn_dtype_st_name(rn_dtype t)
{
    for (size_t i = 0; i < sizeof dtype_names / sizeof dtype_names[0]; i++)
        if (dtype_names[i].dtype == t)
            return dtype_names[i].name;
    return "?";
}

/* A JSON number that must be an exact non-negative integer below 2^53. */
static int json_uint(const cJSON *v, uint64_t *out)
{
    if (!cJSON_IsNumber(v))
        return -1;
    double d = v->valuedouble;
    if (!(d >= 0.0) || d > 9007199254740992.0 || floor(d) != d)
        return -1;
    *out = (uint64_t)d;
    return 0;
}

static int parse_entry(rn_st_entry *e, const cJSON *item, size_t data_size, const char *path,
                       rn_error *err)
{
    const char *name = item->string;
    if (!cJSON_IsObject(item))
        return rn_error_set(err, RN_EFORMAT, "%s: tensor '%s': entry is not an object", path, name);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(item, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(item, "shape");
    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
    if (!cJSON_IsString(dt) || !cJSON_IsArray(shape) || !cJSON_IsArray(offs))
        return rn_error_set(err, RN_EFORMAT,
                            "%s: tensor '%s': needs string dtype, array shape, array data_offsets",
                            path, name);
    if (rn_dtype_from_name(dt->valuestring, &e->dtype) != RN_OK)
        return rn_error_set(err, RN_EFORMAT, "%s: tensor '%s': unsupported dtype '%s'", path, name,
                            dt->valuestring);
    int nd = cJSON_GetArraySize(shape);
    if (nd > RN_ST_MAX_DIMS)
        return rn_error_set(err, RN_EFORMAT, "%s: tensor '%s': rank %d > %d", path, name, nd,
                            RN_ST_MAX_DIMS);
    e->ndim = nd;
    uint64_t numel = 1;
    for (int i = 0; i < nd; i++) {
        uint64_t d;
        if (json_uint(cJSON_GetArrayItem(shape, i), &d) != 0)
            return rn_error_set(err, RN_EFORMAT, "%s: tensor '%s': bad shape dimension %d", path,
                                name, i);
        if (d != 0 && numel > (UINT64_MAX >> 8) / d)
            return rn_error_set(err, RN_EFORMAT, "%s: tensor '%s': shape overflows", path, name);
        e->shape[i] = (int64_t)d;
        numel *= d;
    }
    uint64_t b, en;
    if (cJSON_GetArraySize(offs) != 2 || json_uint(cJSON_GetArrayItem(offs, 0), &b) != 0 ||
        json_uint(cJSON_GetArrayItem(offs, 1), &en) != 0)
        return rn_error_set(err, RN_EFORMAT, "%s: tensor '%s': data_offsets must be [begin, end]",
                            path, name);
    if (b > en || en > data_size)
        return rn_error_set(err, RN_EFORMAT,
                            "%s: tensor '%s': data_offsets [%llu, %llu] outside the %zu data bytes",
                            path, name, (unsigned long long)b, (unsigned long long)en, data_size);
    if (en - b != numel * rn_dtype_size(e->dtype))
        return rn_error_set(err, RN_EFORMAT, "%s: tensor '%s': %llu bytes for %llu elements of %s",
                            path, name, (unsigned long long)(en - b), (unsigned long long)numel,
                            dt->valuestring);
    e->numel = (int64_t)numel;
    e->begin = b;
    e->end = en;
    e->name = rn__strdup(name);
    return e->name ? RN_OK : rn_error_set(err, RN_ENOMEM, "out of memory");
}

static int parse_metadata(rn_st_file *f, const cJSON *meta, rn_error *err)
{
    if (!cJSON_IsObject(meta))
        return rn_error_set(err, RN_EFORMAT, "%s: __metadata__ is not an object", f->path);
    int n = cJSON_GetArraySize(meta);
    f->meta_keys = calloc((size_t)n + 1, sizeof(char *));
    f->meta_values = calloc((size_t)n + 1, sizeof(char *));
    if (!f->meta_keys || !f->meta_values)
        return rn_error_set(err, RN_ENOMEM, "out of memory");
    const cJSON *it;
    cJSON_ArrayForEach(it, meta)
    {
        if (!cJSON_IsString(it))
            return rn_error_set(err, RN_EFORMAT, "%s: __metadata__ '%s' is not a string", f->path,
                                it->string);
        f->meta_keys[f->n_meta] = rn__strdup(it->string);
        f->meta_values[f->n_meta] = rn__strdup(it->valuestring);
        f->n_meta++;
        if (!f->meta_keys[f->n_meta - 1] || !f->meta_values[f->n_meta - 1])
            return rn_error_set(err, RN_ENOMEM, "out of memory");
    }
    return RN_OK;
}

static int cmp_entry_name(const void *a, const void *b)
{
    return strcmp(((const rn_st_entry *)a)->name, ((const rn_st_entry *)b)->name);
}

static int cmp_entry_begin(const void *a, const void *b)
{
    const rn_st_entry *x = *(const rn_st_entry *const *)a, *y = *(const rn_st_entry *const *)b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : 0;
}

/* Names unique, byte ranges disjoint (zero-length tensors may sit anywhere). */
static int check_layout(rn_st_file *f, rn_error *err)
{
    int rc = RN_OK;
    rn_st_entry **by_off = NULL;
    qsort(f->entries, (size_t)f->n_entries, sizeof *f->entries, cmp_entry_name);
    for (int i = 1; i < f->n_entries; i++)
        if (strcmp(f->entries[i - 1].name, f->entries[i].name) == 0)
            return rn_error_set(err, RN_EFORMAT, "%s: tensor '%s' appears twice", f->path,
                                f->entries[i].name);
    by_off = malloc(sizeof *by_off * ((size_t)f->n_entries + 1));
    if (!by_off)
        return rn_error_set(err, RN_ENOMEM, "out of memory");
    for (int i = 0; i < f->n_entries; i++)
        by_off[i] = &f->entries[i];
    qsort(by_off, (size_t)f->n_entries, sizeof *by_off, cmp_entry_begin);
    uint64_t prev_end = 0;
    const char *prev = NULL;
    for (int i = 0; i < f->n_entries; i++) {
        if (by_off[i]->begin == by_off[i]->end)
            continue;
        if (prev && by_off[i]->begin < prev_end) {
            rc = rn_error_set(err, RN_EFORMAT, "%s: tensors '%s' and '%s' overlap", f->path, prev,
                              by_off[i]->name);
            goto out;
        }
        prev_end = by_off[i]->end;
        prev = by_off[i]->name;
    }
out:
    free(by_off);
    return rc;
}

static int parse_header(rn_st_file *f, const char *json, size_t len, rn_error *err)
{
    int rc = RN_OK;
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root || !cJSON_IsObject(root)) {
        rc = rn_error_set(err, RN_EFORMAT, "%s: header is not a JSON object", f->path);
        goto out;
    }
    int n = cJSON_GetArraySize(root);
    f->entries = calloc((size_t)n + 1, sizeof *f->entries);
    if (!f->entries) {
        rc = rn_error_set(err, RN_ENOMEM, "out of memory");
        goto out;
    }
    const cJSON *it;
    cJSON_ArrayForEach(it, root)
    {
        if (strcmp(it->string, "__metadata__") == 0) {
            if (f->meta_keys) {
                rc = rn_error_set(err, RN_EFORMAT, "%s: __metadata__ appears twice", f->path);
                goto out;
            }
            rc = parse_metadata(f, it, err);
        } else {
            rc = parse_entry(&f->entries[f->n_entries], it, f->data_size, f->path, err);
            if (rc == RN_OK)
                f->n_entries++;
        }
        if (rc != RN_OK)
            goto out;
    }
    rc = check_layout(f, err);
out:
    cJSON_Delete(root);
    return rc;
}

static int map_file(rn_st_file *f, rn_error *err)
{
    int rc = RN_OK;
    struct stat st;
    /* O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below */
    int fd = open(f->path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return rn_error_set(err, RN_EIO, "%s: %s", f->path, strerror(errno));
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        rc = rn_error_set(err, RN_EIO, "%s: not a regular file", f->path);
        goto out;
    }
    if (st.st_size < 8) {
        rc = rn_error_set(err, RN_EFORMAT, "%s: %lld bytes, too short for a safetensors header",
                          f->path, (long long)st.st_size);
        goto out;
    }
    f->map_size = (size_t)st.st_size;
    f->map = mmap(NULL, f->map_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (f->map == MAP_FAILED) {
        f->map = NULL;
        rc = rn_error_set(err, RN_EIO, "%s: mmap: %s", f->path, strerror(errno));
    }
out:
    close(fd);
    return rc;
}

int rn_st_open(rn_st_file **out, const char *path, rn_error *err)
{
    int rc;
    *out = NULL;
    rn_st_file *f = calloc(1, sizeof *f);
    if (!f)
        return rn_error_set(err, RN_ENOMEM, "out of memory");
    f->path = rn__strdup(path);
    if (!f->path) {
        rc = rn_error_set(err, RN_ENOMEM, "out of memory");
        goto fail;
    }
    if ((rc = map_file(f, err)) != RN_OK)
        goto fail;
    const uint8_t *p = f->map;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = (hlen << 8) | p[i];
    if (hlen > f->map_size - 8 || hlen > RN_ST_MAX_HEADER || hlen < 2) {
        rc = rn_error_set(err, RN_EFORMAT, "%s: header length %llu does not fit the %zu-byte file",
                          path, (unsigned long long)hlen, f->map_size);
        goto fail;
    }
    f->data = p + 8 + hlen;
    f->data_size = f->map_size - 8 - (size_t)hlen;
    if ((rc = parse_header(f, (const char *)p + 8, (size_t)hlen, err)) != RN_OK)
        goto fail;
    *out = f;
    return RN_OK;
fail:
    rn_st_close(f);
    return rc;
}

void rn_st_close(rn_st_file *f)
{
    if (!f)
        return;
    if (f->map)
        munmap(f->map, f->map_size);
    for (int i = 0; i < f->n_entries; i++)
        free(f->entries[i].name);
    free(f->entries);
    for (int i = 0; i < f->n_meta; i++) {
        free(f->meta_keys[i]);
        free(f->meta_values[i]);
    }
    free(f->meta_keys);
    free(f->meta_values);
    free(f->path);
    free(f);
}

const rn_st_entry *rn_st_find(const rn_st_file *f, const char *name)
{
    rn_st_entry key = {.name = (char *)(uintptr_t)name};
    return bsearch(&key, f->entries, (size_t)f->n_entries, sizeof *f->entries, cmp_entry_name);
}

const void *rn_st_data(const rn_st_file *f, const rn_st_entry *e)
{
    return f->data + e->begin;
}

const char *rn_st_meta(const rn_st_file *f, const char *key)
{
    for (int i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta_keys[i], key) == 0)
            return f->meta_values[i];
    return NULL;
}

/* ---------------------------------------------------------------- writer */

static char *build_header(const rn_st_out *t, int n, const char *const *mk, const char *const *mv,
                          int n_meta, size_t *data_bytes)
{
    cJSON *root = cJSON_CreateObject();
    char *s = NULL;
    uint64_t off = 0;
    if (!root)
        return NULL;
    if (n_meta > 0) {
        cJSON *meta = cJSON_AddObjectToObject(root, "__metadata__");
        for (int i = 0; meta && i < n_meta; i++)
            cJSON_AddStringToObject(meta, mk[i], mv[i]);
    }
    for (int i = 0; i < n; i++) {
        uint64_t numel = 1;
        cJSON *e = cJSON_AddObjectToObject(root, t[i].name);
        cJSON *shape = cJSON_CreateArray();
        cJSON *offs = cJSON_CreateArray();
        if (!e || !shape || !offs) {
            cJSON_Delete(shape);
            cJSON_Delete(offs);
            goto out;
        }
        cJSON_AddStringToObject(e, "dtype", rn_dtype_st_name(t[i].dtype));
        for (int d = 0; d < t[i].ndim; d++) {
            cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)t[i].shape[d]));
            numel *= (uint64_t)t[i].shape[d];
        }
        cJSON_AddItemToObject(e, "shape", shape);
        uint64_t nb = numel * rn_dtype_size(t[i].dtype);
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)off));
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)(off + nb)));
        cJSON_AddItemToObject(e, "data_offsets", offs);
        off += nb;
    }
    s = cJSON_PrintUnformatted(root);
    *data_bytes = (size_t)off;
out:
    cJSON_Delete(root);
    return s;
}

static int write_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int write_tensors(int fd, const rn_st_out *t, int n, rn_st_fill_fn fill, void *ctx)
{
    void *buf = NULL;
    size_t cap = 0;
    int rc = RN_OK;
    for (int i = 0; i < n && rc == RN_OK; i++) {
        size_t nb = rn_dtype_size(t[i].dtype);
        for (int d = 0; d < t[i].ndim; d++)
            nb *= (size_t)t[i].shape[d];
        const void *src = t[i].data;
        if (!src) {
            if (nb > cap) {
                free(buf);
                cap = nb;
                buf = malloc(cap ? cap : 1);
                if (!buf) {
                    rc = RN_ENOMEM;
                    break;
                }
            }
            rc = fill(ctx, i, buf, nb);
            src = buf;
        }
        if (rc == RN_OK && write_all(fd, src, nb) != 0)
            rc = RN_EIO;
    }
    free(buf);
    return rc;
}

int rn_st_write(const char *path, const rn_st_out *t, int n, const char *const *meta_keys,
                const char *const *meta_values, int n_meta, rn_st_fill_fn fill, void *ctx,
                rn_error *err)
{
    int rc = RN_OK, fd = -1;
    size_t data_bytes = 0;
    char *tmp = NULL;
    char *hdr = build_header(t, n, meta_keys, meta_values, n_meta, &data_bytes);
    if (!hdr)
        return rn_error_set(err, RN_ENOMEM, "out of memory");
    size_t hl = strlen(hdr), padded = (hl + 7) & ~(size_t)7; /* keep the data 8-aligned */
    tmp = rn__strcat3(path, ".tmp", "");
    if (!tmp) {
        rc = rn_error_set(err, RN_ENOMEM, "out of memory");
        goto out;
    }
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = rn_error_set(err, RN_EIO, "%s: %s", tmp, strerror(errno));
        goto out;
    }
    uint8_t len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (uint8_t)(padded >> (8 * i));
    static const char spaces[8] = "       ";
    if (write_all(fd, len8, 8) || write_all(fd, hdr, hl) || write_all(fd, spaces, padded - hl)) {
        rc = rn_error_set(err, RN_EIO, "%s: write: %s", tmp, strerror(errno));
        goto out;
    }
    rc = write_tensors(fd, t, n, fill, ctx);
    if (rc != RN_OK) {
        rn_error_set(err, rc, "%s: writing tensor data: %s", tmp, rn_strerror(rc));
        goto out;
    }
    int synced = fsync(fd) == 0, sync_errno = errno; /* close even when fsync fails */
    int closed = close(fd) == 0;
    fd = -1;
    if (!synced || !closed) {
        rc = rn_error_set(err, RN_EIO, "%s: %s", tmp, strerror(synced ? errno : sync_errno));
        goto out;
    }
    if (rename(tmp, path) != 0)
        rc = rn_error_set(err, RN_EIO, "rename %s -> %s: %s", tmp, path, strerror(errno));
out:
    if (fd >= 0)
        close(fd);
    if (rc != RN_OK && tmp)
        unlink(tmp);
    free(tmp);
    cJSON_free(hdr);
    return rc;
}
