/*
 * main.c -- the `retnet` command-line tool: inspect, run and benchmark a
 * model with the engine, without the server.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "model.h"
#include "retnet.h"

static const char usage[] =
    "usage: retnet COMMAND ...\n"
    "  info MODEL_DIR                       config, parameters, state bytes per session\n"
    "  generate MODEL_DIR \"prompt\" [-n 64] [--temperature T] [--top-k K] [--top-p P]\n"
    "           [--min-p P] [--repetition-penalty R] [--seed S] [--ignore-eos] [--threads N]\n"
    "           [--device cpu|cuda|auto]\n"
    "                                       stream a continuation of the prompt\n"
    "  generate MODEL_DIR --ids 1,2,3 ...   the same from token ids (prints ids)\n"
    "  tokenize MODEL_DIR \"text\"           ids and pieces of a text\n"
    "  tokbench TOKENIZER_JSON TEXT_FILE    single-thread encode throughput\n"
    "  sampbench ROWS_FILE VOCAB            the sampler's time per token (JSON)\n"
    "  bench MODEL_DIR [--threads N] [--prompt 512] [--chunk 64] [--decode 32] [--batch 16]\n"
    "                                       the CPU backend's prefill and decode vs the machine's "
    "limits\n"
    "  cuda-info                            the CUDA device and its measured limits (exit 3: "
    "none)\n"
    "  bench-cuda MODEL_DIR [--batches 1,16,64,256] [--prompts 512,2048,8192] [--chunk 256]\n"
    "           [--decode 32] [--profile] [--state-bf16]   CUDA backend vs the device's limits "
    "(JSON)\n"
    "           [--timeline FILE]            instead: each kernel's start and end (CUPTI), "
    "CSV\n"
    "           [--bf16-accuracy]            instead: bf16 states against fp32 states "
    "(logits, greedy picks)\n"
    "  random --preset tiny|1.3b|2.7b|6.7b [--dtype bf16|f16|f32] [--seed S] OUT_DIR\n"
    "                                       random weights in a preset's shape\n";

int cli_usage(const char *msg)
{
    if (msg)
        fprintf(stderr, "retnet: %s\n", msg);
    fputs(usage, stderr);
    return 2;
}

int cli_is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int cli_parse_ids(const char *s, int **out)
{
    int n = 1, k = 0;
    for (const char *p = s; *p; p++)
        n += *p == ',';
    int *ids = malloc(sizeof(int) * (size_t)n);
    if (!ids)
        return -1;
    const char *p = s;
    while (k < n) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v > INT_MAX || (*end && *end != ',')) {
            free(ids);
            return -1;
        }
        ids[k++] = (int)v;
        p = *end ? end + 1 : end;
    }
    *out = ids;
    return n;
}

static const char *act_str(rn_act a)
{
    return a == RN_ACT_GELU ? "gelu" : a == RN_ACT_RELU ? "relu" : "swish";
}

int cli_info(int argc, char **argv)
{
    if (argc != 1)
        return cli_usage("info MODEL_DIR");
    rn_model *m;
    rn_error err;
    if (rn_model_load(&m, argv[0], &err) != RN_OK) {
        fprintf(stderr, "retnet: %s\n", err.msg);
        return 1;
    }
    const rn_config *c = rn_model_config(m);
    int64_t sv = rn_state_values(c);
    printf("model            %s\n", argv[0]);
    printf("vocab            %d\n", c->vocab_size);
    printf("hidden           %d\n", c->hidden_size);
    printf("layers           %d\n", c->n_layers);
    printf("heads            %d (dk %d, dv %d)\n", c->n_heads, c->head_dim_k, c->head_dim_v);
    printf("ffn              %s %d, %s\n", c->ffn_kind == RN_FFN_GLU ? "glu" : "mlp",
           c->intermediate_size, act_str(c->hidden_act));
    printf("norm             %s, %s\n", c->norm_kind == RN_NORM_LAYER ? "layernorm" : "rmsnorm",
           c->norm_position == RN_NORMPOS_PRE    ? "pre-norm"
           : c->norm_position == RN_NORMPOS_POST ? "post-norm"
                                                 : "deepnorm");
    printf("position         %s\n", c->position == RN_POS_NONE       ? "none"
                                    : c->rope_layout == RN_ROPE_HALF ? "rotary (half split)"
                                                                     : "rotary (interleaved)");
    printf("weights          %s\n", rn_model_dtype_name(m));
    printf("parameters       %lld\n", (long long)rn_model_param_count(m));
    printf("weight bytes     %lld read per decode step\n", (long long)rn_model_weight_bytes(m));
    printf("state            %lld values = %.2f MiB fp32 per session\n", (long long)sv,
           (double)sv * 4.0 / (1 << 20));
    rn_model_free(m);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return cli_usage(NULL);
    const char *cmd = argv[1];
    if (!strcmp(cmd, "info"))
        return cli_info(argc - 2, argv + 2);
    if (!strcmp(cmd, "generate"))
        return cli_generate(argc - 2, argv + 2);
    if (!strcmp(cmd, "tokbench"))
        return cli_tokbench(argc - 2, argv + 2);
    if (!strcmp(cmd, "sampbench"))
        return cli_sampbench(argc - 2, argv + 2);
    if (!strcmp(cmd, "tokenize"))
        return cli_tokenize(argc - 2, argv + 2);
    if (!strcmp(cmd, "bench"))
        return cli_bench(argc - 2, argv + 2);
    if (!strcmp(cmd, "cuda-info"))
        return cli_cuda_info(argc - 2, argv + 2);
    if (!strcmp(cmd, "bench-cuda"))
        return cli_bench_cuda(argc - 2, argv + 2);
    if (!strcmp(cmd, "random"))
        return cli_random(argc - 2, argv + 2);
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
        fputs(usage, stdout);
        return 0;
    }
    return cli_usage("unknown command");
}
