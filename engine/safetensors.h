/*
 * safetensors.h -- read (mmap) and write the safetensors format.
 *
 * Format: 8-byte little-endian header length N, N bytes of JSON mapping each
 * tensor name to {dtype, shape, data_offsets:[begin,end]} (offsets relative to
 * the byte after the header) plus an optional "__metadata__" map of strings,
 * then the data.  The reader treats the file as untrusted: every length,
 * offset, dtype and shape is checked before a pointer is handed out, and the
 * error names the file and the tensor.
 */
#ifndef RN_SAFETENSORS_H
#define RN_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "status.h"

#define RN_ST_MAX_DIMS 4
#define RN_ST_MAX_HEADER (100u << 20) /* the Python library's own limit */

typedef struct rn_st_entry {
    char *name;
    rn_dtype dtype;
    int ndim;
    int64_t shape[RN_ST_MAX_DIMS];
    int64_t numel;
    uint64_t begin, end; /* byte range inside the data section */
} rn_st_entry;

typedef struct rn_st_file {
    char *path;
    void *map;
    size_t map_size;
    const uint8_t *data; /* start of the data section */
    size_t data_size;
    int n_entries;
    rn_st_entry *entries; /* sorted by name */
    int n_meta;
    char **meta_keys, **meta_values;
} rn_st_file;

/* Opens and validates path.  Returns RN_OK and sets *out to a file owned by the
 * caller (close with rn_st_close), or RN_EIO/RN_EFORMAT with err->msg. */
int rn_st_open(rn_st_file **out, const char *path, rn_error *err);
void rn_st_close(rn_st_file *f);

const rn_st_entry *rn_st_find(const rn_st_file *f, const char *name);
const void *rn_st_data(const rn_st_file *f, const rn_st_entry *e);
const char *rn_st_meta(const rn_st_file *f, const char *key);

/* One tensor to write.  data may be NULL, then fill() produces its bytes. */
typedef struct rn_st_out {
    const char *name;
    rn_dtype dtype;
    int ndim;
    int64_t shape[RN_ST_MAX_DIMS];
    const void *data;
} rn_st_out;

/* fill(ctx, index, buf, nbytes) writes tensor `index`'s bytes into buf;
 * returns 0 or a negative rn_status. */
typedef int (*rn_st_fill_fn)(void *ctx, int index, void *buf, size_t nbytes);

/* Writes a safetensors file atomically (PATH.tmp, fsync, rename).  meta is
 * n_meta key/value pairs (may be NULL). */
int rn_st_write(const char *path, const rn_st_out *t, int n, const char *const *meta_keys,
                const char *const *meta_values, int n_meta, rn_st_fill_fn fill, void *ctx,
                rn_error *err);

int rn_dtype_from_name(const char *s, rn_dtype *out);
const char *rn_dtype_st_name(rn_dtype t);

#endif
