/*
 * state_blob.c -- see state_blob.h and docs/state-format.md.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "retnet.h"
#include "state_blob.h"
#include "util.h"

/* ------------------------------------------------------------ checksums */

static uint32_t crc_table[256];

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc_table[i] = c;
    }
}

uint32_t rn_crc32c(uint32_t crc, const void *data, size_t n)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, crc_init);
    const uint8_t *p = data;
    crc = ~crc;
    for (size_t i = 0; i < n; i++)
        crc = crc_table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
    return ~crc;
}

/* FNV-1a, 64 bits: a stable identity hash (not a checksum, not secret). */
static uint64_t fnv(uint64_t h, const void *data, size_t n)
{
    const uint8_t *p = data;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

#define FNV_START 0xcbf29ce484222325ull

/* ----------------------------------------------------------- little endian */

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v |= (uint32_t)p[i] << (8 * i);
    return v;
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* ---------------------------------------------------------- fingerprint */

#define RN_BLOB_MAX_POS ((int64_t)1 << 48) /* far past any conversation, far from overflow */
#define SAMPLE 64 /* bytes hashed at the start, middle and end of each tensor */

/* A tensor's dtype and shape, and three samples of its bytes: checkpoints of
 * the same architecture (other seeds, other training runs) differ there,
 * while hashing every byte of a large model would cost seconds at start. */
static uint64_t hash_tensor(uint64_t h, const rn_tensor *t)
{
    uint8_t rec[8 + 4 * 8];
    memset(rec, 0, sizeof rec);
    put32(rec, t->data ? 1u : 0u);
    put32(rec + 4, t->data ? (uint32_t)t->dtype : 0u);
    for (int i = 0; i < 4; i++)
        put64(rec + 8 + 8 * i, t->data && i < t->ndim ? (uint64_t)t->shape[i] : 0u);
    h = fnv(h, rec, sizeof rec);
    if (!t->data)
        return h;
    size_t n = (size_t)t->numel * rn_dtype_size(t->dtype), k = n < SAMPLE ? n : SAMPLE;
    const uint8_t *d = t->data;
    h = fnv(h, d, k);
    h = fnv(h, d + (n - k) / 2, k);
    return fnv(h, d + n - k, k);
}

void rn_model_fingerprint(const rn_model *m, rn_fingerprint *out)
{
    const rn_config *c = rn_model_config(m);
    const rn_weights *w = rn_model_weights(m);
    char *json = rn_config_to_json(c);
    uint64_t hc = json ? fnv(FNV_START, json, strlen(json)) : 0, hw = FNV_START;
    free(json);
    const rn_tensor *top[] = {&w->embed,     &w->embed_norm_w, &w->final_norm_w, &w->final_norm_b,
                              &w->lm_head_w, &w->lm_head_b,    &w->rope_freq};
    for (size_t i = 0; i < sizeof top / sizeof top[0]; i++)
        hw = hash_tensor(hw, top[i]);
    for (int l = 0; l < c->n_layers; l++) {
        const rn_tensor *t = &w->layers[l].norm1_w;
        size_t n = sizeof(rn_layer_weights) / sizeof(rn_tensor);
        for (size_t i = 0; i < n; i++)
            hw = hash_tensor(hw, &t[i]);
    }
    put64(out->b, hc);
    put64(out->b + 8, hw);
}

void rn_blob_info_for(const rn_model *m, int64_t pos, int64_t tokens, rn_blob_info *out)
{
    const rn_config *c = rn_model_config(m);
    memset(out, 0, sizeof *out);
    rn_model_fingerprint(m, &out->model);
    out->n_layers = (uint32_t)c->n_layers;
    out->n_heads = (uint32_t)c->n_heads;
    out->dk = (uint32_t)c->head_dim_k;
    out->dv = (uint32_t)c->head_dim_v;
    out->has_s = c->retention_norm == RN_RETNORM_TORCHSCALE;
    out->pos = pos;
    out->tokens = tokens;
    out->payload_bytes = (uint64_t)rn_state_values(c) * sizeof(float);
}

/* --------------------------------------------------------------- header */

enum {
    OFF_MAGIC = 0,
    OFF_VERSION = 8,
    OFF_HDRLEN = 12,
    OFF_MODEL = 16,
    OFF_DTYPE = 32,
    OFF_LAYERS = 36,
    OFF_HEADS = 40,
    OFF_DK = 44,
    OFF_DV = 48,
    OFF_FLAGS = 52,
    OFF_POS = 56,
    OFF_TOKENS = 64,
    OFF_PAYLOAD = 72,
    OFF_PCRC = 80,
    OFF_RESERVED = 84,
    OFF_HCRC = 92
};

void rn_blob_write_header(uint8_t h[RN_BLOB_HEADER], const rn_blob_info *info, const void *payload)
{
    memset(h, 0, RN_BLOB_HEADER);
    memcpy(h + OFF_MAGIC, RN_BLOB_MAGIC, 8);
    put32(h + OFF_VERSION, RN_BLOB_VERSION);
    put32(h + OFF_HDRLEN, RN_BLOB_HEADER);
    memcpy(h + OFF_MODEL, info->model.b, 16);
    put32(h + OFF_DTYPE, 0); /* fp32 */
    put32(h + OFF_LAYERS, info->n_layers);
    put32(h + OFF_HEADS, info->n_heads);
    put32(h + OFF_DK, info->dk);
    put32(h + OFF_DV, info->dv);
    put32(h + OFF_FLAGS, info->has_s ? 1u : 0u);
    put64(h + OFF_POS, (uint64_t)info->pos);
    put64(h + OFF_TOKENS, (uint64_t)info->tokens);
    put64(h + OFF_PAYLOAD, info->payload_bytes);
    put32(h + OFF_PCRC, rn_crc32c(0, payload, (size_t)info->payload_bytes));
    put32(h + OFF_HCRC, rn_crc32c(0, h, OFF_HCRC));
}

/* Format checks, in the order a reader must make them. */
static int parse_header(const uint8_t *b, size_t len, rn_blob_info *i, rn_error *err)
{
    if (len < RN_BLOB_HEADER)
        return rn_error_set(err, RN_EFORMAT,
                            "state blob: %zu bytes, shorter than its %u-byte "
                            "header",
                            len, RN_BLOB_HEADER);
    if (memcmp(b + OFF_MAGIC, RN_BLOB_MAGIC, 8) != 0)
        return rn_error_set(err, RN_EFORMAT, "state blob: bad magic (not a retnetd state)");
    if (get32(b + OFF_VERSION) != RN_BLOB_VERSION)
        return rn_error_set(err, RN_EFORMAT, "state blob: format version %u, this server reads %u",
                            get32(b + OFF_VERSION), RN_BLOB_VERSION);
    if (get32(b + OFF_HDRLEN) != RN_BLOB_HEADER)
        return rn_error_set(err, RN_EFORMAT, "state blob: header length %u, want %u",
                            get32(b + OFF_HDRLEN), RN_BLOB_HEADER);
    if (rn_crc32c(0, b, OFF_HCRC) != get32(b + OFF_HCRC))
        return rn_error_set(err, RN_EFORMAT, "state blob: header checksum mismatch (corrupt)");
    for (int k = OFF_RESERVED; k < OFF_HCRC; k++)
        if (b[k])
            return rn_error_set(err, RN_EFORMAT, "state blob: reserved header bytes are not zero");
    if (get32(b + OFF_DTYPE) != 0)
        return rn_error_set(err, RN_EFORMAT, "state blob: dtype %u (only 0 = fp32 exists)",
                            get32(b + OFF_DTYPE));
    if (get32(b + OFF_FLAGS) > 1)
        return rn_error_set(err, RN_EFORMAT, "state blob: unknown flags 0x%x",
                            get32(b + OFF_FLAGS));
    memcpy(i->model.b, b + OFF_MODEL, 16);
    i->n_layers = get32(b + OFF_LAYERS);
    i->n_heads = get32(b + OFF_HEADS);
    i->dk = get32(b + OFF_DK);
    i->dv = get32(b + OFF_DV);
    i->has_s = get32(b + OFF_FLAGS);
    i->pos = (int64_t)get64(b + OFF_POS);
    i->tokens = (int64_t)get64(b + OFF_TOKENS);
    i->payload_bytes = get64(b + OFF_PAYLOAD);
    if (i->pos < 0 || i->tokens < 0 || i->pos > RN_BLOB_MAX_POS || i->tokens > RN_BLOB_MAX_POS)
        return rn_error_set(err, RN_EFORMAT, "state blob: position or token count out of range");
    if (i->payload_bytes != len - RN_BLOB_HEADER)
        return rn_error_set(err, RN_EFORMAT,
                            "state blob: header announces %llu payload bytes, the blob has %zu",
                            (unsigned long long)i->payload_bytes, len - RN_BLOB_HEADER);
    if (rn_crc32c(0, b + RN_BLOB_HEADER, len - RN_BLOB_HEADER) != get32(b + OFF_PCRC))
        return rn_error_set(err, RN_EFORMAT, "state blob: payload checksum mismatch (corrupt)");
    return RN_OK;
}

int64_t rn_blob_position(const uint8_t *blob)
{
    return (int64_t)get64(blob + OFF_POS);
}

int rn_blob_parse(const uint8_t *buf, size_t len, const rn_model *m, rn_blob_info *info,
                  rn_error *err)
{
    rn_blob_info want;
    int rc = parse_header(buf, len, info, err);
    if (rc != RN_OK)
        return rc;
    rn_blob_info_for(m, 0, 0, &want);
    if (info->n_layers != want.n_layers || info->n_heads != want.n_heads || info->dk != want.dk ||
        info->dv != want.dv || info->has_s != want.has_s ||
        info->payload_bytes != want.payload_bytes)
        return rn_error_set(err, RN_ECONFLICT,
                            "state blob: a state of %u layers x %u heads x %ux%u, this model's "
                            "is %u x %u x %ux%u",
                            info->n_layers, info->n_heads, info->dk, info->dv, want.n_layers,
                            want.n_heads, want.dk, want.dv);
    if (memcmp(info->model.b, want.model.b, 8) != 0)
        return rn_error_set(err, RN_ECONFLICT,
                            "state blob: made by a model with another configuration");
    if (memcmp(info->model.b + 8, want.model.b + 8, 8) != 0)
        return rn_error_set(err, RN_ECONFLICT,
                            "state blob: made by a model with other tensor shapes or dtypes");
    return RN_OK;
}

/* ----------------------------------------------------------- atomic file */

static int fsync_dir_of(const char *path)
{
    char *copy = rn__strdup(path);
    if (!copy)
        return -1;
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc = -1;
    free(copy);
    if (fd >= 0) {
        rc = fsync(fd);
        close(fd);
    }
    return rc;
}

static int write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

int rn_write_atomic(const char *path, const void *const *parts, const size_t *lens, int n,
                    rn_error *err)
{
    char tmp[4096];
    int rc = RN_OK, fd = -1;
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp)
        return rn_error_set(err, RN_EINVAL, "%s: path too long", path);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return rn_error_set(err, RN_EIO, "%s: %s", tmp, strerror(errno));
    for (int i = 0; i < n && rc == RN_OK; i++)
        if (write_all(fd, parts[i], lens[i]) != 0)
            rc = rn_error_set(err, RN_EIO, "%s: write: %s", tmp, strerror(errno));
    if (rc == RN_OK && fsync(fd) != 0)
        rc = rn_error_set(err, RN_EIO, "%s: fsync: %s", tmp, strerror(errno));
    if (close(fd) != 0 && rc == RN_OK)
        rc = rn_error_set(err, RN_EIO, "%s: close: %s", tmp, strerror(errno));
    if (rc == RN_OK && rename(tmp, path) != 0)
        rc = rn_error_set(err, RN_EIO, "rename %s -> %s: %s", tmp, path, strerror(errno));
    if (rc != RN_OK) {
        unlink(tmp);
        return rc;
    }
    if (fsync_dir_of(path) != 0)
        return rn_error_set(err, RN_EIO, "%s: fsync of its directory: %s", path, strerror(errno));
    return RN_OK;
}
