/*
 * generate.c -- `retnet generate`: continue a text prompt (with the model's
 * tokenizer.json) or a list of token ids, streaming the output as it comes,
 * and `retnet tokenize`: show how a text is split.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "model.h"
#include "retnet.h"
#include "sampler.h"
#include "tokenizer.h"
#include "util.h"

typedef struct {
    const char *dir, *prompt, *ids;
    int n_new, chunk, threads, ignore_eos;
    rn_device device;
    rn_sample_params sp;
} gen_opts;

static int parse_gen(gen_opts *o, int argc, char **argv)
{
    *o = (gen_opts){
        .n_new = 64,
        .sp = {.temperature = 0.0f, .top_p = 1.0f, .repetition_penalty = 1.0f, .seed = 0}};
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int used = 1;
        if (!strcmp(a, "--ids") && v)
            o->ids = v;
        else if ((!strcmp(a, "-n") || !strcmp(a, "--max-tokens")) && v)
            o->n_new = atoi(v);
        else if (!strcmp(a, "--chunk") && v)
            o->chunk = atoi(v);
        else if (!strcmp(a, "--threads") && v)
            o->threads = atoi(v);
        else if (!strcmp(a, "--device") && v && !strcmp(v, "cpu"))
            o->device = RN_DEVICE_CPU;
        else if (!strcmp(a, "--device") && v && !strcmp(v, "cuda"))
            o->device = RN_DEVICE_CUDA;
        else if (!strcmp(a, "--device") && v && !strcmp(v, "auto"))
            o->device = RN_DEVICE_AUTO;
        else if (!strcmp(a, "--temperature") && v)
            o->sp.temperature = strtof(v, NULL);
        else if (!strcmp(a, "--top-k") && v)
            o->sp.top_k = atoi(v);
        else if (!strcmp(a, "--top-p") && v)
            o->sp.top_p = strtof(v, NULL);
        else if (!strcmp(a, "--min-p") && v)
            o->sp.min_p = strtof(v, NULL);
        else if (!strcmp(a, "--repetition-penalty") && v)
            o->sp.repetition_penalty = strtof(v, NULL);
        else if (!strcmp(a, "--seed") && v)
            o->sp.seed = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--ignore-eos"))
            o->ignore_eos = 1, used = 0;
        else if (a[0] != '-' && !o->dir)
            o->dir = a, used = 0;
        else if (a[0] != '-' && !o->prompt)
            o->prompt = a, used = 0;
        else
            return -1;
        i += used;
    }
    return o->dir && (o->prompt || o->ids) && !(o->prompt && o->ids) && o->n_new >= 0 &&
                   o->chunk >= 0
               ? 0
               : -1;
}

static int load_tokenizer(rn_tokenizer **t, const char *dir)
{
    rn_error err;
    char *path = rn__strcat3(dir, "/", "tokenizer.json");
    int rc = path ? rn_tokenizer_load(t, path, &err) : RN_ENOMEM;
    if (rc != RN_OK)
        fprintf(stderr, "retnet: %s\n", path ? err.msg : "out of memory");
    free(path);
    return rc;
}

/* Prompt ids from --ids or from the text; new malloc'd array. */
static int prompt_ids(const gen_opts *o, rn_tokenizer *t, int32_t **ids, int *n)
{
    if (o->prompt)
        return rn_tokenizer_encode(t, o->prompt, strlen(o->prompt), ids, n);
    int *raw = NULL, k = cli_parse_ids(o->ids, &raw);
    if (k < 1)
        return RN_EINVAL;
    *ids = malloc(sizeof(int32_t) * (size_t)k);
    if (!*ids) {
        free(raw);
        return RN_ENOMEM;
    }
    for (int i = 0; i < k; i++)
        (*ids)[i] = raw[i];
    free(raw);
    *n = k;
    return RN_OK;
}

/* Prints a token: text through the streaming detokenizer, or its id. */
static void emit(rn_detok *d, int32_t id, int first)
{
    if (d) {
        const char *s;
        size_t len;
        if (rn_detok_push(d, id, &s, &len) == RN_OK)
            fwrite(s, 1, len, stdout);
    } else {
        printf(first ? "%d" : ",%d", id);
    }
    fflush(stdout);
}

int cli_generate(int argc, char **argv)
{
    gen_opts o;
    if (parse_gen(&o, argc, argv) != 0)
        return cli_usage("generate MODEL_DIR \"prompt\" | --ids 1,2,3 [-n 64] [--temperature T] "
                         "[--top-k K] [--top-p P] [--min-p P] [--repetition-penalty R] "
                         "[--seed S] [--ignore-eos] [--threads N] [--device cpu|cuda|auto]");
    rn_model *m = NULL;
    rn_engine *e = NULL;
    rn_tokenizer *t = NULL;
    rn_sampler *s = NULL;
    rn_detok *d = NULL;
    int32_t *ids = NULL;
    float *logits = NULL;
    rn_error err;
    int n_ids = 0, rc = 1, r;
    if (rn_model_load(&m, o.dir, &err) != RN_OK ||
        rn_engine_new(&e, m,
                      &(rn_engine_opts){.device = o.device, .n_threads = o.threads, .n_slots = 1},
                      &err) != RN_OK) {
        fprintf(stderr, "retnet: %s\n", err.msg);
        goto out;
    }
    const rn_config *c = rn_model_config(m);
    if (o.prompt && (load_tokenizer(&t, o.dir) != RN_OK || rn_detok_new(&d, t, 1) != RN_OK))
        goto out;
    if ((r = prompt_ids(&o, t, &ids, &n_ids)) != RN_OK || n_ids < 1) {
        fprintf(stderr, "retnet: empty or invalid prompt\n");
        goto out;
    }
    if (rn_sampler_new(&s, &o.sp, c->vocab_size, &err) != RN_OK) {
        fprintf(stderr, "retnet: %s\n", err.msg);
        goto out;
    }
    rn_sampler_accept_prompt(s, ids, n_ids);
    logits = malloc(sizeof(float) * (size_t)c->vocab_size);
    rn_prefill_opts po = {.form = RN_FORM_CHUNKWISE, .chunk = o.chunk};
    if (!logits || (r = rn_prefill(e, 0, ids, n_ids, &po, logits)) != RN_OK) {
        fprintf(stderr, "retnet: prefill: %s (token ids must be below %d)\n", rn_strerror(r),
                c->vocab_size);
        goto out;
    }
    if (o.prompt)
        fputs(o.prompt, stdout);
    for (int i = 0; i < o.n_new; i++) {
        rn_sample_result res;
        int slot = 0;
        if ((r = rn_sampler_sample(s, logits, RN_NO_LOGPROBS, &res)) != RN_OK) {
            fprintf(stderr, "retnet: sampling: %s\n", rn_strerror(r));
            goto out;
        }
        if (!o.ignore_eos && res.token == c->eos_token_id)
            break;
        emit(d, res.token, i == 0);
        if (i + 1 < o.n_new && (r = rn_decode(e, &slot, &res.token, 1, logits)) != RN_OK) {
            fprintf(stderr, "retnet: decode: %s\n", rn_strerror(r));
            goto out;
        }
    }
    if (d) {
        const char *tail;
        size_t len;
        if (rn_detok_finish(d, &tail, &len) == RN_OK)
            fwrite(tail, 1, len, stdout);
    }
    printf("\n");
    rc = 0;
out:
    free(ids);
    free(logits);
    rn_detok_free(d);
    rn_sampler_free(s);
    rn_tokenizer_free(t);
    rn_engine_free(e);
    rn_model_free(m);
    return rc;
}

int cli_tokenize(int argc, char **argv)
{
    if (argc != 2)
        return cli_usage("tokenize MODEL_DIR \"text\"");
    rn_tokenizer *t = NULL;
    int32_t *ids = NULL;
    int n = 0;
    if (load_tokenizer(&t, argv[0]) != RN_OK)
        return 1;
    if (rn_tokenizer_encode(t, argv[1], strlen(argv[1]), &ids, &n) != RN_OK) {
        rn_tokenizer_free(t);
        return 1;
    }
    for (int i = 0; i < n; i++) {
        char *piece = NULL;
        size_t len = 0;
        rn_tokenizer_decode(t, &ids[i], 1, 0, &piece, &len);
        printf("%6d  %-24s  ", ids[i], rn_tokenizer_piece(t, ids[i]));
        putchar('"');
        for (size_t k = 0; piece && k < len; k++) {
            unsigned char ch = (unsigned char)piece[k];
            if (ch == '"' || ch == '\\')
                printf("\\%c", ch);
            else if (ch < 0x20)
                printf("\\x%02x", ch);
            else
                putchar(ch);
        }
        printf("\"\n");
        free(piece);
    }
    printf("%d tokens\n", n);
    free(ids);
    rn_tokenizer_free(t);
    return 0;
}

/* `retnet tokbench TOKENIZER_JSON TEXT_FILE`: single-thread encode MB/s, one
 * encode per line (each line keeps its newline), best of 3 -- the same
 * protocol as tools/bench_tokenizer.py uses for `tokenizers`. */
int cli_tokbench(int argc, char **argv)
{
    if (argc != 2)
        return cli_usage("tokbench TOKENIZER_JSON TEXT_FILE");
    rn_tokenizer *t = NULL;
    rn_error err;
    char *text = NULL;
    size_t len = 0;
    if (rn_tokenizer_load(&t, argv[0], &err) != RN_OK) {
        fprintf(stderr, "retnet: %s\n", err.msg);
        return 1;
    }
    if (rn__read_file(argv[1], (size_t)1 << 30, &text, &len) != 0) {
        fprintf(stderr, "retnet: cannot read %s\n", argv[1]);
        rn_tokenizer_free(t);
        return 1;
    }
    double best = 0.0;
    long tokens = 0;
    for (int rep = 0; rep < 4; rep++) {
        double t0 = rn__now();
        tokens = 0;
        for (size_t i = 0; i < len;) {
            const char *nl = memchr(text + i, '\n', len - i);
            size_t end = nl ? (size_t)(nl - text) + 1 : len;
            int32_t *ids;
            int n;
            if (rn_tokenizer_encode(t, text + i, end - i, &ids, &n) == RN_OK) {
                tokens += n;
                free(ids);
            }
            i = end;
        }
        double mbs = (double)len / (rn__now() - t0) / 1e6;
        if (rep > 0 && mbs > best) /* the first pass fills the word cache */
            best = mbs;
    }
    printf("{\"MB_s\":%.2f,\"bytes\":%zu,\"tokens\":%ld}\n", best, len, tokens);
    free(text);
    rn_tokenizer_free(t);
    return 0;
}
