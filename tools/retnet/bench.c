/*
 * bench.c -- `retnet bench`: engine speed next to the machine's limits.
 *
 * Measures, in one run: the memory bandwidth of a multi-threaded copy loop
 * (bytes read + written per second) and of a read stream over as many bytes
 * as a decode step moves, OpenBLAS sgemm GFLOP/s on 2048^3, then the
 * model's chunkwise prefill tokens/s and recurrent decode tokens/s at batch
 * 1 and batch B, each with its roofline ratio:
 *   decode:  (weight bytes + B x 2 x state bytes) per step / copy bandwidth,
 *            and / read bandwidth (the tighter ceiling for a step that
 *            mostly reads; cache-resident for a small model, as decode is)
 *   prefill: 2 x matrix parameters FLOP per token / sgemm rate.
 * Timings are best-of-N wall clock; nothing here asserts on time.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cblas.h>

#include "cli.h"
#include "model.h"
#include "retnet.h"
#include "rn_math.h"
#include "util.h"

/* 64-byte vectors in a cloned function: the psabi note does not apply */
#pragma GCC diagnostic ignored "-Wpsabi"

typedef struct {
    char *dst;
    const char *src;
    size_t n;
    int passes; /* read_thread: times over src */
    float sum;
} copy_arg;

static void *copy_thread(void *p)
{
    copy_arg *a = p;
    memcpy(a->dst, a->src, a->n);
    return NULL;
}

typedef float v16f __attribute__((vector_size(64)));

/* Streams a->src with four independent vector sums (the access pattern of
 * a weight-streaming decode step), prefetching 2 KB ahead as the decode
 * kernels do: without it one core keeps too few reads in flight, and the
 * ceiling would sit below what decode itself reaches. */
#if defined(__x86_64__)
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#endif
static void *
read_thread(void *p)
{
    copy_arg *a = p;
    v16f s[4] = {{0}};
    size_t nv = a->n / sizeof(v16f) / 4 * 4;
    for (int pass = 0; pass < a->passes; pass++)
        for (size_t i = 0; i < nv; i += 4)
            for (int k = 0; k < 4; k++) {
                v16f v;
                const char *at = a->src + (i + (size_t)k) * sizeof(v16f);
                __builtin_prefetch(at + 2048);
                memcpy(&v, at, sizeof v);
                s[k] += v;
            }
    s[0] += s[1] + s[2] + s[3];
    for (int k = 0; k < 16; k++)
        a->sum += s[0][k];
    return NULL;
}

/* Best-of-5 bandwidth with `threads` threads: a copy of 512 MiB (bytes read
 * + written, as STREAM counts it), or a read stream over `bytes` (at most
 * 512 MiB) repeated to 512 MiB in all.  Decode reads its weights and states
 * again every step, so a read over a buffer of that size finds them where
 * decode does: in the caches when the model is small, in memory otherwise. */
static double measure_bandwidth_gbs(int threads, int read_only, size_t bytes)
{
    size_t full = (size_t)512 << 20;
    size_t n = read_only ? (bytes < ((size_t)1 << 20) ? (size_t)1 << 20
                            : bytes > full            ? full
                                                      : bytes)
                         : full;
    int passes = read_only ? (int)((full + n - 1) / n) : 1;
    /* on 2 MiB pages, as the CPU backend's panels and states: the ceiling is
     * measured the way decode reads */
    char *src = rn__huge_alloc(n), *dst = read_only ? NULL : rn__huge_alloc(n);
    double best = 0.0;
    if (!src || (!read_only && !dst))
        goto out;
    memset(src, 1, n);
    if (dst)
        memset(dst, 2, n);
    pthread_t th[64];
    copy_arg args[64];
    if (threads > 64)
        threads = 64;
    for (int rep = 0; rep < 5; rep++) {
        double t0 = rn__now();
        size_t per = n / (size_t)threads;
        for (int i = 0; i < threads; i++) {
            args[i] = (copy_arg){dst ? dst + per * (size_t)i : NULL, src + per * (size_t)i, per,
                                 passes, 0.0f};
            pthread_create(&th[i], NULL, read_only ? read_thread : copy_thread, &args[i]);
        }
        for (int i = 0; i < threads; i++)
            pthread_join(th[i], NULL);
        double moved = (read_only ? (double)passes : 2.0) * (double)(per * (size_t)threads);
        double gbs = moved / (rn__now() - t0) / 1e9;
        best = gbs > best ? gbs : best;
    }
out:
    free(src);
    free(dst);
    return best;
}

/* OpenBLAS's own rate with `threads` threads; the CPU backend itself runs
 * OpenBLAS single-threaded inside its pool, so the setting is restored. */
static double measure_sgemm_gflops(int threads)
{
    int n = 2048;
    size_t sz = (size_t)n * (size_t)n;
    float *a = malloc(sz * 4), *b = malloc(sz * 4), *c = malloc(sz * 4);
    double best = 0.0;
    if (!a || !b || !c)
        goto out;
    for (size_t i = 0; i < sz; i++) {
        a[i] = (float)((i * 7919) % 1000) * 1e-3f - 0.5f;
        b[i] = (float)((i * 104729) % 1000) * 1e-3f - 0.5f;
    }
    openblas_set_num_threads(threads);
    for (int rep = 0; rep < 4; rep++) {
        double t0 = rn__now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        double g = 2.0 * n * (double)n * n / (rn__now() - t0) / 1e9;
        best = rep > 0 && g > best ? g : best; /* first run warms up */
    }
    openblas_set_num_threads(1);
out:
    free(a);
    free(b);
    free(c);
    return best;
}

typedef struct {
    const char *dir;
    int threads, prompt, chunk, decode, batch, json;
    int serve_steps, serve_prompt, serve_tokens; /* the serving replay; off at 0 steps */
} bench_opts;

static int parse_opts(bench_opts *o, int argc, char **argv)
{
    *o = (bench_opts){.prompt = 512,
                      .chunk = 64,
                      .decode = 32,
                      .batch = 16,
                      .serve_prompt = 2,
                      .serve_tokens = 64};
    for (int i = 0; i < argc; i++) {
        int *dst = NULL;
        if (!strcmp(argv[i], "--threads"))
            dst = &o->threads;
        else if (!strcmp(argv[i], "--prompt"))
            dst = &o->prompt;
        else if (!strcmp(argv[i], "--chunk"))
            dst = &o->chunk;
        else if (!strcmp(argv[i], "--decode"))
            dst = &o->decode;
        else if (!strcmp(argv[i], "--batch"))
            dst = &o->batch;
        else if (!strcmp(argv[i], "--serve-steps"))
            dst = &o->serve_steps;
        else if (!strcmp(argv[i], "--serve-prompt"))
            dst = &o->serve_prompt;
        else if (!strcmp(argv[i], "--serve-tokens"))
            dst = &o->serve_tokens;
        else if (!strcmp(argv[i], "--json"))
            o->json = 1;
        else if (argv[i][0] != '-' && !o->dir)
            o->dir = argv[i];
        else
            return -1;
        if (dst) {
            if (i + 1 >= argc)
                return -1;
            *dst = atoi(argv[++i]);
        }
    }
    if (o->threads <= 0)
        o->threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    int serve_ok = o->serve_steps >= 0 && o->serve_prompt > 0 && o->serve_prompt <= o->prompt &&
                   o->serve_tokens > 1;
    return o->dir && o->prompt > 0 && o->chunk > 0 && o->decode > 0 && o->batch > 0 && serve_ok
               ? 0
               : -1;
}

/* Prefill tokens/s: best of 3 runs of the whole prompt into slot 0. */
static double time_prefill(rn_engine *e, const int32_t *tok, const bench_opts *o, float *logits)
{
    double best = 0.0;
    rn_prefill_opts po = {.form = RN_FORM_CHUNKWISE, .chunk = o->chunk};
    for (int rep = 0; rep < 3; rep++) {
        rn_state_reset(e, 0);
        double t0 = rn__now();
        if (rn_prefill(e, 0, tok, o->prompt, &po, logits) != RN_OK)
            return -1.0;
        double r = o->prompt / (rn__now() - t0);
        best = r > best ? r : best;
    }
    return best;
}

/* Decode steps/s for a batch of `b` slots (best of 2 runs of o->decode steps). */
static double time_decode(rn_engine *e, int b, const int32_t *tok, const bench_opts *o,
                          float *logits)
{
    int slots[4096];
    double best = 0.0;
    for (int i = 0; i < b; i++)
        slots[i] = i;
    for (int rep = 0; rep < 2; rep++) {
        double t0 = rn__now();
        for (int s = 0; s < o->decode; s++)
            if (rn_decode(e, slots, tok, b, logits) != RN_OK)
                return -1.0;
        double r = o->decode / (rn__now() - t0);
        best = r > best ? r : best;
    }
    return best;
}

/* Feeds a request's prompt into slot as retnetd's scheduler does (whole
 * chunks from the start) and returns its greedy first token, or -1. */
static int32_t serve_admit(rn_engine *e, int slot, const int32_t *prompt, const bench_opts *o,
                           float *logits, int vocab)
{
    rn_state_reset(e, slot);
    for (int at = 0; at < o->serve_prompt;) {
        int m = o->serve_prompt - at < o->chunk ? o->serve_prompt - at : o->chunk;
        rn_prefill_opts po = {.form = RN_FORM_CHUNKWISE, .chunk = m};
        int last = at + m == o->serve_prompt;
        if (rn_prefill(e, slot, prompt + at, m, &po, last ? logits : NULL) != RN_OK)
            return -1;
        at += m;
    }
    return (int32_t)rn_argmax_row(logits, vocab);
}

/* The engine alone doing what retnetd does for `batch` clients that each
 * stream greedy requests of serve_tokens tokens after a serve_prompt-token
 * prompt, one after the other: every iteration is one batched decode with
 * greedy picks over all slots, then the admission of the requests that just
 * ended (reset, prefill, first token from the prompt's logits), the order of
 * the server's iterations.  Slots start at evenly spread points of their
 * requests, as in a steady load, and the next request takes a slot at once.
 * Returns the tokens generated per second over serve_steps iterations (after
 * 8 untimed ones), or -1.  What the server adds on top (HTTP, SSE, JSON,
 * detokenizing, its queue) is what `make bench-http` compares against this. */
static double time_serve(rn_engine *e, const int32_t *prompt, const bench_opts *o, float *logits,
                         int vocab)
{
    int B = o->batch, T = o->serve_tokens;
    int *slots = malloc(sizeof(int) * (size_t)B), *made = malloc(sizeof(int) * (size_t)B);
    int32_t *last = malloc(sizeof(int32_t) * (size_t)B),
            *pick = malloc(sizeof(int32_t) * (size_t)B);
    double rate = -1.0, t0 = 0.0;
    long tokens = 0;
    if (!slots || !made || !last || !pick)
        goto out;
    for (int k = 0; k < B; k++) {
        slots[k] = k;
        if ((last[k] = serve_admit(e, k, prompt, o, logits, vocab)) < 0)
            goto out;
        made[k] = 1 + (int)((long)k * (T - 1) / B);
    }
    for (int step = -8; step < o->serve_steps; step++) {
        if (step == 0) {
            t0 = rn__now();
            tokens = 0;
        }
        if (rn_decode_argmax(e, slots, last, B, pick, logits) != RN_OK)
            goto out;
        tokens += B;
        for (int k = 0; k < B; k++) {
            last[k] = pick[k];
            if (++made[k] < T)
                continue;
            if ((last[k] = serve_admit(e, k, prompt, o, logits, vocab)) < 0)
                goto out;
            made[k] = 1;
            tokens++;
        }
    }
    rate = (double)tokens / (rn__now() - t0);
out:
    free(slots);
    free(made);
    free(last);
    free(pick);
    return rate;
}

int cli_bench(int argc, char **argv)
{
    bench_opts o;
    if (parse_opts(&o, argc, argv) != 0 || o.batch > 4096)
        return cli_usage("bench MODEL_DIR [--threads N] [--prompt 512] [--chunk 64] [--decode 32] "
                         "[--batch 16] [--serve-steps 0] [--serve-prompt 2] [--serve-tokens 64] "
                         "[--json]");
    rn_model *m = NULL;
    rn_engine *e = NULL;
    rn_error err;
    int rc = 1;
    float *logits = NULL;
    int32_t *tok = NULL;
    if (rn_model_load(&m, o.dir, &err) != RN_OK ||
        rn_engine_new(&e, m,
                      &(rn_engine_opts){.device = RN_DEVICE_CPU,
                                        .n_threads = o.threads,
                                        .n_slots = o.batch,
                                        .max_chunk = o.chunk},
                      &err) != RN_OK) {
        fprintf(stderr, "retnet: %s\n", err.msg);
        goto out;
    }
    const rn_config *c = rn_model_config(m);
    int n_tok = o.prompt > o.batch ? o.prompt : o.batch;
    logits = malloc(sizeof(float) * (size_t)c->vocab_size * (size_t)o.batch);
    tok = malloc(sizeof(int32_t) * (size_t)n_tok);
    if (!logits || !tok)
        goto out;
    for (int i = 0; i < n_tok; i++)
        tok[i] = (int32_t)((i * 2654435761u) % (unsigned)c->vocab_size);

    double W = (double)rn_model_weight_bytes(m), S = 4.0 * (double)rn_state_values(c);
    double copy = measure_bandwidth_gbs(o.threads, 0, 0);
    double rd = measure_bandwidth_gbs(o.threads, 1, (size_t)(W + 2.0 * S));
    /* batch B's step moves B states: its working set may leave the cache */
    double rdB =
        o.batch > 1 ? measure_bandwidth_gbs(o.threads, 1, (size_t)(W + o.batch * 2.0 * S)) : rd;
    double gflops = measure_sgemm_gflops(o.threads);
    double prefill = time_prefill(e, tok, &o, logits);
    double d1 = time_decode(e, 1, tok, &o, logits);
    double dB = time_decode(e, o.batch, tok, &o, logits);
    double serve = o.serve_steps > 0 ? time_serve(e, tok, &o, logits, c->vocab_size) : 0.0;
    if (prefill < 0 || d1 < 0 || dB < 0 || serve < 0) {
        fprintf(stderr, "retnet: bench run failed\n");
        goto out;
    }
    const char *dt = rn_model_dtype_name(m);
    double bpp = !strcmp(dt, "f32") ? 4.0 : 2.0;
    /* prefill computes logits of the last token only: no lm_head per token */
    double mat_params = (W - (double)c->vocab_size * c->hidden_size * bpp) / bpp;
    double flop_tok = 2.0 * mat_params;
    /* roofline: bytes a step must move over the copy-loop rate; the read rate
     * is the tighter ceiling for a step that mostly reads */
    double roof1 = copy * 1e9 / (W + 2.0 * S), roofB = copy * 1e9 / (W + o.batch * 2.0 * S);
    double rroof1 = rd * 1e9 / (W + 2.0 * S), rroofB = rdB * 1e9 / (W + o.batch * 2.0 * S);
    double pf_gflops = prefill * flop_tok / 1e9;
    if (o.json) {
        printf("{\"model\":\"%s\",\"params\":%lld,\"dtype\":\"%s\",\"threads\":%d,"
               "\"copy_GBps\":%.2f,\"read_GBps\":%.2f,\"read_bB_GBps\":%.2f,\"sgemm_GFLOPs\":%.1f,"
               "\"prompt\":%d,\"chunk\":%d,"
               "\"prefill_tok_s\":%.2f,\"prefill_GFLOPs\":%.1f,\"prefill_vs_sgemm\":%.3f,"
               "\"decode_b1_tok_s\":%.3f,\"decode_b1_roofline_tok_s\":%.3f,"
               "\"decode_b1_read_roofline_tok_s\":%.3f,"
               "\"batch\":%d,\"decode_bB_tok_s\":%.3f,\"decode_bB_roofline_tok_s\":%.3f",
               o.dir, (long long)rn_model_param_count(m), dt, o.threads, copy, rd, rdB, gflops,
               o.prompt, o.chunk, prefill, pf_gflops, pf_gflops / gflops, d1, roof1, rroof1,
               o.batch, dB * o.batch, roofB * o.batch);
        if (o.serve_steps > 0)
            printf(
                ",\"serve_prompt\":%d,\"serve_tokens\":%d,\"serve_steps\":%d,\"serve_tok_s\":%.3f",
                o.serve_prompt, o.serve_tokens, o.serve_steps, serve);
        printf("}\n");
    } else {
        printf("model %s: %lld params, %s weights, %d threads\n", o.dir,
               (long long)rn_model_param_count(m), dt, o.threads);
        printf("machine: copy %.1f GB/s (read+write), read %.1f GB/s (over %.1f MB, a decode "
               "step's bytes), sgemm %.1f GFLOP/s\n",
               copy, rd, (W + 2.0 * S) / 1e6, gflops);
        printf("prefill  %7.1f tok/s  (prompt %d, chunk %d) = %.1f GFLOP/s = %.0f%% of sgemm\n",
               prefill, o.prompt, o.chunk, pf_gflops, 100.0 * pf_gflops / gflops);
        printf("decode 1 %7.2f tok/s  roofline %.2f tok/s (copy) = %.0f%%, %.2f (read) = %.0f%%\n",
               d1, roof1, 100.0 * d1 / roof1, rroof1, 100.0 * d1 / rroof1);
        printf("decode %d %7.2f tok/s  roofline %.2f tok/s (copy) = %.0f%%, %.2f (read) = %.0f%%\n",
               o.batch, dB * o.batch, roofB * o.batch, 100.0 * dB / roofB, rroofB * o.batch,
               100.0 * dB / rroofB);
        if (o.serve_steps > 0)
            printf("serve %d %7.2f tok/s  (%d greedy streams of %d tokens after %d-token prompts, "
                   "admissions included; %d iterations)\n",
                   o.batch, serve, o.batch, o.serve_tokens, o.serve_prompt, o.serve_steps);
    }
    rc = 0;
out:
    free(logits);
    free(tok);
    rn_engine_free(e);
    rn_model_free(m);
    return rc;
}
