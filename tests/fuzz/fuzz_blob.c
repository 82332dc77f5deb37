/*
 * fuzz_blob.c -- libFuzzer target: arbitrary bytes as an uploaded session
 * state (PUT /v1/sessions/{id}/state, a --state-dir file).  The parser must
 * refuse or accept without crashing or reading out of bounds, and an
 * accepted blob must describe exactly this model's state.
 * RN_FUZZ_SEED=FILE writes one valid blob for the model there and exits (the
 * seed corpus is made that way).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "retnet.h"
#include "state_blob.h"

static rn_model *model;

static void write_seed(const char *path)
{
    rn_blob_info info;
    rn_blob_info_for(model, 5, 5, &info);
    size_t len = RN_BLOB_HEADER + (size_t)info.payload_bytes;
    uint8_t *b = calloc(1, len);
    if (!b)
        abort();
    for (size_t i = 0; i < info.payload_bytes / 4; i++)
        ((float *)(void *)(b + RN_BLOB_HEADER))[i] = (float)i;
    rn_blob_write_header(b, &info, b + RN_BLOB_HEADER);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(b, 1, len, f) != len)
        abort();
    fclose(f);
    free(b);
    exit(0);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *root = getenv("RN_FIXTURES");
    char dir[512];
    /* the smallest fixture: a blob of a few KiB, so mutations reach the payload */
    snprintf(dir, sizeof dir, "%s/fla", root ? root : "tests/fixtures");
    if (rn_model_load(&model, dir, NULL) != RN_OK)
        abort();
    if (getenv("RN_FUZZ_SEED"))
        write_seed(getenv("RN_FUZZ_SEED"));
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    rn_blob_info info, want;
    rn_error err;
    int rc = rn_blob_parse(data, size, model, &info, &err);
    if (rc != RN_OK) {
        if (rc != RN_EFORMAT && rc != RN_ECONFLICT)
            abort();
        return 0;
    }
    rn_blob_info_for(model, 0, 0, &want);
    if (info.payload_bytes != want.payload_bytes || size != RN_BLOB_HEADER + info.payload_bytes ||
        info.pos < 0 || info.tokens < 0 || memcmp(&info.model, &want.model, sizeof want.model))
        abort();
    return 0;
}
