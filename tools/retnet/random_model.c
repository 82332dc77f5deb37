/*
 * random_model.c -- `retnet random`: a model directory with random weights in
 * a real preset's shape (rn_model_write_random), for benchmarks.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "model.h"

typedef struct {
    const char *name;
    int d, layers, heads, vocab;
} preset;

/* FLA / paper shapes: dk = d/H, dv = 2d/H, SwiGLU width from hidden_ratio 2. */
static const preset presets[] = {
    {"tiny", 256, 4, 2, 4096},
    {"1.3b", 2048, 24, 8, 32000},
    {"2.7b", 2560, 32, 10, 32000},
    {"6.7b", 4096, 32, 16, 32000},
};

static int build_config(rn_config *c, const preset *p)
{
    char json[512];
    snprintf(json, sizeof json,
             "{\"hidden_size\":%d,\"num_hidden_layers\":%d,\"num_heads\":%d,\"vocab_size\":%d,"
             "\"expand_k\":1,\"expand_v\":2,\"hidden_ratio\":2}",
             p->d, p->layers, p->heads, p->vocab);
    rn_error err;
    if (rn_config_parse(c, json, strlen(json), "preset", &err) != RN_OK) {
        fprintf(stderr, "retnet random: %s\n", err.msg);
        return -1;
    }
    return 0;
}

int cli_random(int argc, char **argv)
{
    const char *pname = "tiny", *dtn = "bf16", *out = NULL;
    uint64_t seed = 1;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--preset") && i + 1 < argc)
            pname = argv[++i];
        else if (!strcmp(argv[i], "--dtype") && i + 1 < argc)
            dtn = argv[++i];
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc)
            seed = strtoull(argv[++i], NULL, 10);
        else if (argv[i][0] != '-' && !out)
            out = argv[i];
        else
            return cli_usage("random: unknown argument");
    }
    const preset *p = NULL;
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++)
        if (!strcmp(presets[i].name, pname))
            p = &presets[i];
    rn_dtype dt = !strcmp(dtn, "f32") ? RN_DT_F32 : !strcmp(dtn, "f16") ? RN_DT_F16 : RN_DT_BF16;
    if (!p || !out || (strcmp(dtn, "f32") && strcmp(dtn, "f16") && strcmp(dtn, "bf16")))
        return cli_usage("random --preset tiny|1.3b|2.7b|6.7b --dtype bf16|f16|f32 OUT_DIR");
    rn_config c;
    if (build_config(&c, p) != 0)
        return 1;
    if (mkdir(out, 0755) != 0 && !cli_is_dir(out)) {
        perror(out);
        return 1;
    }
    rn_error err;
    int rc = rn_model_write_random(out, &c, dt, seed, &err);
    if (rc != RN_OK)
        fprintf(stderr, "retnet random: %s\n", err.msg);
    else
        printf("wrote %s: preset %s, %s weights\n", out, p->name, rn_dtype_name(dt));
    return rc == RN_OK ? 0 : 1;
}
