/* generate.c -- `retnet generate`: greedy continuation of token ids. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "model.h"
#include "retnet.h"

static int argmax(const float *x, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
}

int cli_generate(int argc, char **argv)
{
    const char *dir = NULL, *ids_s = NULL;
    int n_new = 32, chunk = 0, threads = 0, rc = 1;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--ids") && i + 1 < argc)
            ids_s = argv[++i];
        else if (!strcmp(argv[i], "-n") && i + 1 < argc)
            n_new = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--chunk") && i + 1 < argc)
            chunk = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (argv[i][0] != '-' && !dir)
            dir = argv[i];
        else
            return cli_usage("generate: unknown argument");
    }
    if (!dir || !ids_s || n_new < 0 || chunk < 0)
        return cli_usage("generate MODEL_DIR --ids 1,2,3 [-n 32]");
    int *ids = NULL, n_ids = cli_parse_ids(ids_s, &ids);
    if (n_ids < 1)
        return cli_usage("--ids wants comma-separated non-negative integers");
    rn_model *m = NULL;
    rn_engine *e = NULL;
    float *logits = NULL;
    rn_error err;
    if (rn_model_load(&m, dir, &err) != RN_OK ||
        rn_engine_new(&e, m, &(rn_engine_opts){.n_threads = threads, .n_slots = 1}, &err) != RN_OK) {
        fprintf(stderr, "retnet: %s\n", err.msg);
        goto out;
    }
    int V = rn_model_config(m)->vocab_size;
    logits = malloc(sizeof(float) * (size_t)V);
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)n_ids);
    if (!logits || !tok) {
        free(tok);
        goto out;
    }
    for (int i = 0; i < n_ids; i++)
        tok[i] = ids[i];
    rn_prefill_opts po = {.form = RN_FORM_CHUNKWISE, .chunk = chunk};
    int r = rn_prefill(e, 0, tok, n_ids, &po, logits);
    free(tok);
    if (r != RN_OK) {
        fprintf(stderr, "retnet: prefill: %s (token ids must be below %d)\n", rn_strerror(r), V);
        goto out;
    }
    for (int i = 0; i < n_new; i++) {
        int slot = 0;
        int32_t next = argmax(logits, V);
        printf(i ? ",%d" : "%d", next);
        fflush(stdout);
        if (i + 1 < n_new && (r = rn_decode(e, &slot, &next, 1, logits)) != RN_OK) {
            fprintf(stderr, "retnet: decode: %s\n", rn_strerror(r));
            goto out;
        }
    }
    printf("\n");
    rc = 0;
out:
    free(ids);
    free(logits);
    rn_engine_free(e);
    rn_model_free(m);
    return rc;
}
