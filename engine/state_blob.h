/*
 * state_blob.h -- the portable form of one session's recurrent state: what
 * GET /v1/sessions/{id}/state exports, PUT imports, the host and disk tiers
 * hold and persistence writes (docs/state-format.md).
 *
 * A blob is a 96-byte little-endian header followed by the payload, the
 * state exactly as rn_state_export lays it out (fp32).  The header names the
 * model the state belongs to (a fingerprint of its config and of its tensors'
 * dtypes and shapes), the state's shape, the position and token count, and
 * CRC-32C checksums of the payload and of the header itself.  Parsing treats
 * a blob as untrusted input: every field is checked before anything is used.
 */
#ifndef RN_STATE_BLOB_H
#define RN_STATE_BLOB_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "status.h"

#define RN_BLOB_MAGIC "RNSTATE" /* 8 bytes with its NUL */
#define RN_BLOB_VERSION 1u
#define RN_BLOB_HEADER 96u

/* A model's identity for states: 8 bytes hashing its config, 8 hashing the
 * dtype and shape of every tensor with samples of its bytes (so two
 * checkpoints of one architecture differ too). */
typedef struct rn_fingerprint {
    uint8_t b[16];
} rn_fingerprint;

typedef struct rn_blob_info {
    rn_fingerprint model;
    uint32_t n_layers, n_heads, dk, dv;
    uint32_t has_s;         /* torchscale's per-head normaliser follows each layer */
    int64_t pos;            /* tokens the state has absorbed (rotary position) */
    int64_t tokens;         /* the session's token count (equals pos today) */
    uint64_t payload_bytes; /* = rn_state_values(cfg) * 4 */
} rn_blob_info;

void rn_model_fingerprint(const rn_model *m, rn_fingerprint *out);
/* The header fields a state of model m at pos/tokens gets. */
void rn_blob_info_for(const rn_model *m, int64_t pos, int64_t tokens, rn_blob_info *out);

/* Writes the 96-byte header for info and payload (info->payload_bytes
 * bytes) into hdr. */
void rn_blob_write_header(uint8_t hdr[RN_BLOB_HEADER], const rn_blob_info *info,
                          const void *payload);

/* Checks a whole blob (header + payload, len bytes) against model m.
 * RN_OK fills *info (payload at buf + RN_BLOB_HEADER); RN_EFORMAT for a
 * truncated, oversized, corrupt or unknown-version blob; RN_ECONFLICT for a
 * well-formed blob of another model or shape.  err says which field. */
int rn_blob_parse(const uint8_t *buf, size_t len, const rn_model *m, rn_blob_info *info,
                  rn_error *err);

/* The position field of a blob already checked by rn_blob_parse. */
int64_t rn_blob_position(const uint8_t *blob);

/* CRC-32C (Castagnoli), continuing from crc (0 to start). */
uint32_t rn_crc32c(uint32_t crc, const void *data, size_t n);

/* Writes the n parts to path atomically: a temporary file in the same
 * directory, fsync, rename over path, fsync of the directory.  A crash at
 * any point leaves either the old file or the new one. */
int rn_write_atomic(const char *path, const void *const *parts, const size_t *lens, int n,
                    rn_error *err);

#endif
