/*
 * bench_cuda.c -- `retnet cuda-info` and `retnet bench-cuda`: the CUDA
 * backend next to the device's measured limits, in one run.
 *
 * Limits (rn_cuda_measure): a copy kernel's bandwidth (read + write bytes)
 * and cuBLASLt's dense bf16 GEMM rate on random operands, as a model's
 * (the rate on operands of one value, which draw less power and keep the
 * clocks higher, is printed beside it).  Figures, each with its ratio:
 *   decode at batch B: B tokens per step over (weight bytes + B x 2 x state
 *     bytes) / copy bandwidth, the step's roofline;
 *   prefill of P tokens (chunkwise): 2 x matrix parameters FLOP per token
 *     over the GEMM rate; beside it the same chunks' projections alone
 *     (rn_cuda_products_rate: cuBLASLt's own rate on those shapes, which
 *     at a few hundred rows is far from the square GEMM's), and the
 *     prefill's tokens/s over what they alone would allow;
 *   device memory per session (= state bytes) and sessions per GiB.
 * Timings are best-of-N wall clock around synchronous engine calls; nothing
 * here asserts on time.  Without CUDA in the build both commands say so and
 * exit 3, as they do when no device is present.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "model.h"
#include "retnet.h"
#include "rn_math.h"
#include "util.h"
#ifdef RN_HAVE_CUDA
#include "cuda/rn_cuda.h"
#endif

#define EXIT_NO_DEVICE 3
#define MAX_LIST 16

typedef struct {
    const char *dir;
    int batches[MAX_LIST], n_batches;
    int prompts[MAX_LIST], n_prompts;
    int chunk, decode, json, profile, state_bf16;
    int accuracy_only;    /* --bf16-accuracy: bf16_accuracy alone (no limits, no rates) */
    const char *timeline; /* --timeline FILE: the kernels' CUPTI timeline instead of the figures */
} cuda_bench_opts;

/* "1,16,64" into v (at most MAX_LIST positive values); 0 on success. */
static int parse_list(const char *s, int *v, int *n)
{
    *n = 0;
    while (*s && *n < MAX_LIST) {
        char *end;
        long x = strtol(s, &end, 10);
        if (end == s || x < 1 || x > 1 << 20 || (*end && *end != ','))
            return -1;
        v[(*n)++] = (int)x;
        s = *end ? end + 1 : end;
    }
    return *s ? -1 : 0;
}

static const char bench_cuda_usage[] =
    "bench-cuda MODEL_DIR [--batches 1,16,64,256] [--prompts 512,2048,8192] [--chunk 256] "
    "[--decode 32] [--profile] [--state-bf16] [--bf16-accuracy] [--timeline FILE]";

static int parse_cuda_opts(cuda_bench_opts *o, int argc, char **argv)
{
    *o = (cuda_bench_opts){.chunk = 256, .decode = 32};
    parse_list("1,16,64,256", o->batches, &o->n_batches);
    parse_list("512,2048,8192", o->prompts, &o->n_prompts);
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--json")) {
            o->json = 1;
        } else if (!strcmp(a, "--profile")) {
            o->profile = 1;
        } else if (!strcmp(a, "--state-bf16")) {
            o->state_bf16 = 1;
        } else if (!strcmp(a, "--bf16-accuracy")) {
            o->state_bf16 = o->accuracy_only = 1;
        } else if (!strcmp(a, "--timeline") && v) {
            o->timeline = v;
            i++;
        } else if (!strcmp(a, "--batches") && v) {
            if (parse_list(v, o->batches, &o->n_batches))
                return -1;
            i++;
        } else if (!strcmp(a, "--prompts") && v) {
            if (parse_list(v, o->prompts, &o->n_prompts))
                return -1;
            i++;
        } else if ((!strcmp(a, "--chunk") || !strcmp(a, "--decode")) && v) {
            int x = atoi(v);
            if (x < 1 || x > 65536)
                return -1;
            *(a[2] == 'c' ? &o->chunk : &o->decode) = x;
            i++;
        } else if (a[0] != '-' && !o->dir) {
            o->dir = a;
        } else {
            return -1;
        }
    }
    if (o->accuracy_only && (o->timeline || o->profile))
        return -1; /* each is a run of its own */
    return o->dir ? 0 : -1;
}

#ifdef RN_HAVE_CUDA
int cli_cuda_info(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    rn_cuda_limits l;
    rn_error err = {0};
    if (rn_cuda_measure(&l, 4096, 4096, 4096, &err) != RN_OK) {
        printf("no usable CUDA device: %s\n", err.msg);
        return EXIT_NO_DEVICE;
    }
    printf("%s: compute capability %d.%d, %d SMs, %.1f GiB; copy %.0f GB/s, bf16 GEMM %.0f "
           "TFLOP/s (%.0f on operands of one value)\n",
           l.name, l.cc_major, l.cc_minor, l.n_sms, (double)l.mem_total / (1 << 30), l.copy_GBps,
           l.gemm_TFLOPs, l.gemm_const_TFLOPs);
    return 0;
}

static int max_of(const int *v, int n)
{
    int m = 0;
    for (int i = 0; i < n; i++)
        m = v[i] > m ? v[i] : m;
    return m;
}

/* Best of 3 prefills of n tokens into slot 0, tokens/s; < 0 on error. */
static double prefill_rate(rn_engine *e, const int32_t *tok, int n, int chunk, float *logits)
{
    rn_prefill_opts po = {.form = RN_FORM_CHUNKWISE, .chunk = chunk};
    double best = 0.0;
    for (int rep = 0; rep < 3; rep++) {
        if (rn_state_reset(e, 0) != RN_OK)
            return -1.0;
        double t0 = rn__now();
        if (rn_prefill(e, 0, tok, n, &po, logits) != RN_OK)
            return -1.0;
        double r = n / (rn__now() - t0);
        best = r > best ? r : best;
    }
    return best;
}

/* What a measured decode step hands back to the host. */
typedef enum {
    STEP_LOGITS, /* every row's logits */
    STEP_BARE,   /* nothing: the layers alone, without the LM head */
    STEP_PICKS,  /* greedy's ids, picked on the device (rn_decode_argmax) */
    STEP_TOP     /* every row reduced for sampling at temperature 1 (rn_decode_top) */
} step_kind;

/* Buffers for b rows of each kind of step. */
typedef struct step_bufs {
    float *logits;
    int32_t *picks;
    float *temps;
    rn_row_top *tops;
} step_bufs;

/* What a step of kind k hands back, as the timeline's JSON names it. */
static const char *step_name(step_kind k)
{
    return k == STEP_PICKS ? "picks" : k == STEP_TOP ? "top" : k == STEP_BARE ? "bare" : "logits";
}

static int one_step(rn_engine *e, const int *slots, const int32_t *tok, int b, step_kind k,
                    const step_bufs *sb)
{
    switch (k) {
    case STEP_LOGITS:
        return rn_decode(e, slots, tok, b, sb->logits);
    case STEP_BARE:
        return rn_decode(e, slots, tok, b, NULL);
    case STEP_PICKS:
        return rn_decode_argmax(e, slots, tok, b, sb->picks, NULL);
    default:
        return rn_decode_top(e, slots, tok, b, sb->temps, sb->tops, NULL);
    }
}

/* Best of 3 runs of `steps` decode steps over slots 0..b-1: steps/s. */
static double decode_rate(rn_engine *e, int b, const int32_t *tok, int steps, step_kind k,
                          const step_bufs *sb)
{
    int *slots = malloc(sizeof(int) * (size_t)b);
    double best = 0.0;
    if (!slots)
        return -1.0;
    for (int i = 0; i < b; i++)
        slots[i] = i;
    for (int rep = 0; rep < 3 && best >= 0.0; rep++) {
        double t0 = rn__now();
        for (int s = 0; s < steps; s++)
            if (one_step(e, slots, tok, b, k, sb) != RN_OK) {
                best = -1.0;
                break;
            }
        double r = steps / (rn__now() - t0);
        best = best >= 0.0 && r > best ? r : best;
    }
    free(slots);
    return best;
}

/* max |a - b| / max(1, max |b|) over n values */
static double rel_err(const float *a, const float *b, size_t n)
{
    double d = 0.0, m = 1.0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - (double)b[i]);
        d = e > d || e != e ? e : d;
        m = fabs((double)b[i]) > m ? fabs((double)b[i]) : m;
    }
    return d / m;
}

/* What is left of bf16 states' error (a) against fp32's (b) once each
 * head's S is scaled by its least-squares factor c = <a,b>/<a,a>: the worst
 * max |c a - b| / max(1, max |b|) over heads, and the range of c, so a
 * drift in a head's scale alone (which the group norm of its read-out
 * divides out) is told apart from one in its direction.  The normaliser's
 * values (torchscale) are left out. */
static void head_scaled_err(const rn_config *c, const float *a, const float *b, double *err,
                            double *cmin, double *cmax)
{
    size_t hv = (size_t)c->head_dim_k * (size_t)c->head_dim_v;
    size_t per = (size_t)(rn_state_values(c) / c->n_layers); /* a layer's S, then its s */
    *err = 0.0, *cmin = 1e300, *cmax = -1e300;
    for (int l = 0; l < c->n_layers; l++)
        for (int h = 0; h < c->n_heads; h++) {
            const float *x = a + (size_t)l * per + (size_t)h * hv,
                        *y = b + (size_t)l * per + (size_t)h * hv;
            double ab = 0.0, aa = 0.0, d = 0.0, m = 1.0;
            for (size_t i = 0; i < hv; i++)
                ab += (double)x[i] * y[i], aa += (double)x[i] * x[i];
            double k = aa > 0.0 ? ab / aa : 1.0;
            for (size_t i = 0; i < hv; i++) {
                double e = fabs(k * x[i] - y[i]);
                d = e > d || e != e ? e : d;
                m = fabs((double)y[i]) > m ? fabs((double)y[i]) : m;
            }
            *err = d / m > *err ? d / m : *err;
            *cmin = k < *cmin ? k : *cmin;
            *cmax = k > *cmax ? k : *cmax;
        }
}

#define ACC_PROMPT 512
#define ACC_STEPS 2048

/* The accuracy cost of e's bf16 states: slot 0 of e and of an engine with
 * fp32 states on the same model take the same ACC_PROMPT-token prompt, then
 * ACC_STEPS decode steps fed the fp32 engine's greedy picks.  Printed per
 * window of steps (up to 32, 256, 1024, 2048): the worst logits error
 * relative to max(1, max |logit|) and how often the two greedy picks agree;
 * then the states' relative error, whole and per head once scaled
 * (head_scaled_err).  0 on success. */
static int bf16_accuracy(const rn_model *m, rn_engine *e, const int32_t *tok, int chunk)
{
    static const int ends[] = {32, 256, 1024, ACC_STEPS};
    rn_engine *f = NULL;
    rn_error err = {0};
    size_t V = (size_t)rn_model_config(m)->vocab_size, sb = rn_engine_state_bytes(e);
    float *lf = malloc(sizeof(float) * V), *lb = malloc(sizeof(float) * V);
    float *sf = malloc(sb), *sbf = malloc(sb);
    int rc = -1, slot = 0, w = 0, agree = 0, n = 0;
    double worst = 0.0;
    rn_prefill_opts po = {.form = RN_FORM_CHUNKWISE, .chunk = chunk};
    if (!lf || !lb || !sf || !sbf ||
        rn_engine_new(&f, m,
                      &(rn_engine_opts){.device = RN_DEVICE_CUDA, .n_slots = 1, .max_chunk = chunk},
                      &err) != RN_OK ||
        rn_state_reset(e, 0) != RN_OK || rn_prefill(f, 0, tok, ACC_PROMPT, &po, lf) != RN_OK ||
        rn_prefill(e, 0, tok, ACC_PROMPT, &po, lb) != RN_OK)
        goto cleanup;
    printf(",\n \"bf16_accuracy\":{\"prompt\":%d,\"after_prompt_rel_err\":%.3g,\"windows\":[",
           ACC_PROMPT, rel_err(lb, lf, V));
    for (int step = 1; step <= ACC_STEPS; step++) {
        int32_t next = rn_argmax_row(lf, (int)V);
        agree += rn_argmax_row(lb, (int)V) == next;
        n++;
        if (rn_decode(f, &slot, &next, 1, lf) != RN_OK ||
            rn_decode(e, &slot, &next, 1, lb) != RN_OK)
            goto cleanup;
        double d = rel_err(lb, lf, V);
        worst = d > worst ? d : worst;
        if (step == ends[w]) {
            printf("%s{\"to_step\":%d,\"logits_rel_err\":%.3g,\"greedy_agree\":%.3f}", w ? "," : "",
                   step, worst, (double)agree / n);
            w++, worst = 0.0, agree = 0, n = 0;
        }
    }
    if (rn_state_export(f, 0, sf, sb) != RN_OK || rn_state_export(e, 0, sbf, sb) != RN_OK)
        goto cleanup;
    double serr, cmin, cmax;
    head_scaled_err(rn_model_config(m), sbf, sf, &serr, &cmin, &cmax);
    printf("],\"state_rel_err\":%.3g,\"state_rel_err_head_scaled\":%.3g,"
           "\"head_scale_min\":%.4g,\"head_scale_max\":%.4g}",
           rel_err(sbf, sf, sb / sizeof(float)), serr, cmin, cmax);
    rc = 0;
cleanup:
    if (rc)
        fprintf(stderr, "retnet: bf16 accuracy run failed%s%s\n", err.msg[0] ? ": " : "", err.msg);
    rn_engine_free(f);
    free(lf);
    free(lb);
    free(sf);
    free(sbf);
    return rc;
}

/* --profile: one prefill of the first prompt length and one decode step of
 * the first batch size, after a warm-up of each, inside the profiler range
 * (for `ncu --profile-from-start off`); nothing is timed here. */
static int profile_once(rn_engine *e, const cuda_bench_opts *o, const int32_t *tok, float *logits)
{
    int b = o->batches[0], *slots = malloc(sizeof(int) * (size_t)b), rc = 0;
    rn_prefill_opts po = {.form = RN_FORM_CHUNKWISE, .chunk = o->chunk};
    if (!slots)
        return -1;
    for (int i = 0; i < b; i++)
        slots[i] = i;
    for (int rep = 0; rep < 2 && rc == 0; rep++) {
        rn_cuda_profile(rep == 1);
        rc = rn_state_reset(e, 0) != RN_OK ||
             rn_prefill(e, 0, tok, o->prompts[0], &po, logits) != RN_OK ||
             rn_decode(e, slots, tok, b, logits) != RN_OK;
        rn_cuda_profile(0);
    }
    free(slots);
    return rc ? -1 : 0;
}

/* o->decode steps of b sessions of kind k after a warm-up (the graph for
 * b and k captured, the caches warm), as CUPTI recorded them, into f
 * tagged decode-bB-sN (every row's logits) or decode-picks-bB-sN and
 * decode-top-bB-sN (the server's greedy and sampled steps); prints the
 * run's wall time per step as a JSON object after sep.  RN_OK or the
 * failure's code. */
static int timeline_steps(rn_engine *e, const int *slots, const int32_t *tok, int b, step_kind k,
                          const cuda_bench_opts *o, const step_bufs *sb, FILE *f, int header,
                          const char *sep, rn_error *err)
{
    char tag[64];
    int rc;
    double t0 = 0.0;
    for (int s = 0; s < 3 + o->decode; s++) {
        if (s == 3) { /* the graph for b and k captured, then run warm */
            rn_cuda_timeline_mark();
            t0 = rn__now();
        }
        if ((rc = one_step(e, slots, tok, b, k, sb)) != RN_OK) {
            fprintf(stderr, "retnet: timeline: a decode step (%s) of %d sessions failed (%d)\n",
                    step_name(k), b, rc);
            return rc;
        }
    }
    double us = (rn__now() - t0) / o->decode * 1e6;
    if (k == STEP_LOGITS) /* the tag the timeline has always had */
        snprintf(tag, sizeof tag, "decode-b%d-s%d", b, o->decode);
    else
        snprintf(tag, sizeof tag, "decode-%s-b%d-s%d", step_name(k), b, o->decode);
    if ((rc = rn_cuda_timeline_write(f, tag, header, err)) != RN_OK)
        return rc;
    printf("%s{\"batch\":%d,\"steps\":%d,\"tail\":\"%s\",\"us_per_step\":%.1f}", sep, b, o->decode,
           step_name(k), us);
    return RN_OK;
}

/* --timeline: the kernels of `decode` decode steps at each batch size
 * (and, at the first, the server's greedy and sampled steps too, which
 * hand back picks or reduced rows instead of logits) and of one prefill of
 * the first prompt length, each after a warm-up (the graphs captured, the
 * caches warm), as CUPTI recorded them on the device
 * (rn_cuda_timeline_write) into the CSV file path, tagged decode-bB-sN,
 * decode-picks-bB-sN, decode-top-bB-sN and prefill-P-cC;
 * tools/timeline_summary.py reads it.  Prints each run's wall time per
 * step or prompt, as JSON.  0 on success. */
static int timeline_run(rn_engine *e, const rn_model *m, const rn_cuda_limits *l,
                        const cuda_bench_opts *o, const int32_t *tok, const step_bufs *sb)
{
    int B = max_of(o->batches, o->n_batches), *slots = malloc(sizeof(int) * (size_t)B), rc = -1;
    FILE *f = fopen(o->timeline, "w");
    rn_error err = {0};
    char tag[64];
    rn_prefill_opts po = {.form = RN_FORM_CHUNKWISE, .chunk = o->chunk};
    if (!slots || !f) {
        fprintf(stderr, "retnet: cannot write %s\n", o->timeline);
        goto cleanup;
    }
    for (int i = 0; i < B; i++)
        slots[i] = i;
    printf("{\"timeline\":\"%s\",\"device\":\"%s\",\"copy_GBps\":%.1f,\"weight_bytes\":%.0f,"
           "\"state_bytes\":%.0f,\"decode\":[",
           o->timeline, l->name, l->copy_GBps, (double)rn_model_weight_bytes(m),
           (double)rn_engine_slot_bytes(e));
    for (int i = 0; i < o->n_batches; i++) {
        int b = o->batches[i];
        if (timeline_steps(e, slots, tok, b, STEP_LOGITS, o, sb, f, i == 0, i ? "," : "", &err))
            goto cleanup;
        if (i == 0 && (timeline_steps(e, slots, tok, b, STEP_PICKS, o, sb, f, 0, ",", &err) ||
                       timeline_steps(e, slots, tok, b, STEP_TOP, o, sb, f, 0, ",", &err)))
            goto cleanup;
    }
    int P = o->prompts[0];
    if (rn_state_reset(e, 0) != RN_OK || rn_prefill(e, 0, tok, P, &po, sb->logits) != RN_OK ||
        rn_state_reset(e, 0) != RN_OK)
        goto cleanup;
    rn_cuda_timeline_mark();
    double t0 = rn__now();
    if (rn_prefill(e, 0, tok, P, &po, sb->logits) != RN_OK)
        goto cleanup;
    double ms = (rn__now() - t0) * 1e3;
    snprintf(tag, sizeof tag, "prefill-%d-c%d", P, o->chunk);
    if (rn_cuda_timeline_write(f, tag, 0, &err) != RN_OK)
        goto cleanup;
    printf("],\"prefill\":{\"prompt\":%d,\"chunk\":%d,\"ms\":%.2f}}\n", P, o->chunk, ms);
    rc = 0;
cleanup:
    if (err.msg[0])
        fprintf(stderr, "retnet: %s\n", err.msg);
    if (f && fclose(f) != 0 && rc == 0) {
        fprintf(stderr, "retnet: cannot write %s\n", o->timeline);
        rc = -1;
    }
    free(slots);
    return rc;
}

extern char **environ;

/* Whether the environment entry kv ("NAME=value") is a RETNET_CUDA_*
 * setting whose name and value print in JSON as they are: a name of
 * capitals, digits and underscores, a value of digits. */
static int tuning_entry(const char *kv, size_t *name_len)
{
    static const char prefix[] = "RETNET_CUDA_";
    const char *eq = strchr(kv, '=');
    if (!eq || strncmp(kv, prefix, sizeof prefix - 1) != 0)
        return 0;
    *name_len = (size_t)(eq - kv);
    return strspn(kv, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") == *name_len && eq[1] != '\0' &&
           strspn(eq + 1, "0123456789") == strlen(eq + 1);
}

/* The CUDA backend's tuning variables (docs/operations.md) that are set,
 * as JSON members, so a result file says which paths it measured: every
 * RETNET_CUDA_* setting with a number for its value (the switches are
 * numbers; RETNET_CUPTI, a path, is not one of them). */
static void print_tuning(void)
{
    int first = 1;
    for (char **e = environ; e && *e; e++) {
        size_t n;
        if (!tuning_entry(*e, &n))
            continue;
        printf("%s\"%.*s\":\"%s\"", first ? "" : ",", (int)n, *e, *e + n + 1);
        first = 0;
    }
}

int cli_bench_cuda(int argc, char **argv)
{
    cuda_bench_opts o;
    if (parse_cuda_opts(&o, argc, argv))
        return cli_usage(bench_cuda_usage);
    rn_cuda_limits l;
    rn_model *m = NULL;
    rn_engine *e = NULL;
    rn_error err = {0};
    step_bufs sb = {0};
    int32_t *tok = NULL;
    int rc = 1, B = max_of(o.batches, o.n_batches), P = max_of(o.prompts, o.n_prompts);
    if (o.accuracy_only) {
        B = 1, P = ACC_PROMPT;
        if (rn_cuda_device_major() < 0) {
            printf("no usable CUDA device\n");
            return EXIT_NO_DEVICE;
        }
    } else if (rn_cuda_measure(&l, 8192, 8192, 8192, &err) != RN_OK) {
        printf("no usable CUDA device: %s\n", err.msg);
        return EXIT_NO_DEVICE;
    }
    /* before the engine exists, so CUPTI sees its graphs from their capture */
    if (o.timeline && rn_cuda_timeline_start(&err) != RN_OK) {
        fprintf(stderr, "retnet: %s\n", err.msg);
        return 1;
    }
    if (rn_model_load(&m, o.dir, &err) != RN_OK ||
        rn_engine_new(&e, m,
                      &(rn_engine_opts){.device = RN_DEVICE_CUDA,
                                        .n_slots = B,
                                        .max_chunk = o.chunk,
                                        .state_bf16 = o.state_bf16},
                      &err) != RN_OK) {
        fprintf(stderr, "retnet: %s\n", err.msg);
        goto cleanup;
    }
    const rn_config *c = rn_model_config(m);
    int n_tok = P > B ? P : B;
    n_tok = n_tok > ACC_PROMPT ? n_tok : ACC_PROMPT;
    sb.logits = rn_engine_host_alloc(e, sizeof(float) * (size_t)c->vocab_size * (size_t)B);
    sb.tops = rn_engine_host_alloc(e, sizeof(rn_row_top) * (size_t)B);
    tok = malloc(sizeof(int32_t) * (size_t)n_tok);
    sb.picks = malloc(sizeof(int32_t) * (size_t)B);
    sb.temps = malloc(sizeof(float) * (size_t)B);
    if (!sb.logits || !sb.tops || !tok || !sb.picks || !sb.temps)
        goto cleanup;
    for (int i = 0; i < B; i++)
        sb.temps[i] = 1.0f;
    for (int i = 0; i < n_tok; i++)
        tok[i] = (int32_t)((i * 2654435761u) % (unsigned)c->vocab_size);
    if (o.timeline) {
        rc = timeline_run(e, m, &l, &o, tok, &sb) ? 1 : 0;
        goto cleanup;
    }
    if (o.accuracy_only) {
        printf("{\"model\":\"%s\",\"dtype\":\"%s\",\"chunk\":%d", o.dir, rn_model_dtype_name(m),
               o.chunk);
        if (bf16_accuracy(m, e, tok, o.chunk) != 0)
            goto failed;
        printf("}\n");
        rc = 0;
        goto cleanup;
    }
    if (o.profile) {
        rc = profile_once(e, &o, tok, sb.logits) ? 1 : 0;
        printf("profiled: prefill of %d tokens (chunk %d), decode step at batch %d: %s\n",
               o.prompts[0], o.chunk, o.batches[0], rc ? "failed" : "done");
        goto cleanup;
    }
    /* the roofline counts the state bytes a step moves: the pool's */
    double W = (double)rn_model_weight_bytes(m), S = (double)rn_engine_slot_bytes(e);
    double bpp = !strcmp(rn_model_dtype_name(m), "f32") ? 4.0 : 2.0;
    double flop_tok = 2.0 * (W - (double)c->vocab_size * c->hidden_size * bpp) / bpp;
    printf("{\"tuning\":{");
    print_tuning();
    printf("},\n \"device\":\"%s\",\"sms\":%d,\"copy_GBps\":%.1f,\"gemm_bf16_TFLOPs\":%.1f,"
           "\"gemm_bf16_const_TFLOPs\":%.1f,"
           "\"model\":\"%s\",\"dtype\":\"%s\",\"weight_bytes\":%.0f,\"state_bytes\":%.0f,"
           "\"sessions_per_GiB\":%.2f,\"state_dtype\":\"%s\",\"chunk\":%d,\n \"decode\":[",
           l.name, l.n_sms, l.copy_GBps, l.gemm_TFLOPs, l.gemm_const_TFLOPs, o.dir,
           rn_model_dtype_name(m), W, S, (double)(1 << 30) / S, o.state_bf16 ? "bf16" : "f32",
           o.chunk);
    fflush(stdout);
    for (int i = 0; i < o.n_batches; i++) {
        int b = o.batches[i];
        double steps = decode_rate(e, b, tok, o.decode, STEP_LOGITS, &sb);
        /* without the LM head and the logits' copy to the host: what the
         * layers alone cost, to tell the two apart */
        double bare = decode_rate(e, b, tok, o.decode, STEP_BARE, &sb);
        /* greedy tokens picked on the device: b ids cross the bus */
        double greedy = decode_rate(e, b, tok, o.decode, STEP_PICKS, &sb);
        /* rows reduced for sampling on the device: b rn_row_top cross it */
        double sampled = decode_rate(e, b, tok, o.decode, STEP_TOP, &sb);
        if (steps < 0 || bare < 0 || greedy < 0 || sampled < 0)
            goto failed;
        double roof = b * l.copy_GBps * 1e9 / (W + b * 2.0 * S);
        /* tok_s: every row's logits to the host, as rn_decode hands them
         * back (128 KiB a row of the 1.3B preset over the bus each step);
         * the server's own steps pick or reduce rows on the device, so
         * their shares of the same roofline are printed too */
        printf("%s{\"batch\":%d,\"tok_s\":%.1f,\"roofline_tok_s\":%.1f,\"of_roofline\":%.3f,"
               "\"tok_s_no_head\":%.1f,\"tok_s_greedy_on_device\":%.1f,"
               "\"tok_s_sampled_on_device\":%.1f,\"of_roofline_greedy\":%.3f,"
               "\"of_roofline_sampled\":%.3f}",
               i ? ",\n  " : "", b, steps * b, roof, steps * b / roof, bare * b, greedy * b,
               sampled * b, greedy * b / roof, sampled * b / roof);
        fflush(stdout);
    }
    printf("],\n \"prefill\":[");
    int prod_rows[MAX_LIST];
    double prod_tf[MAX_LIST], prod_rs[MAX_LIST];
    for (int i = 0; i < o.n_prompts; i++) {
        double r = prefill_rate(e, tok, o.prompts[i], o.chunk, sb.logits);
        if (r < 0)
            goto failed;
        double tf = r * flop_tok / 1e12, ptf = 0.0, prs = 0.0;
        /* the same chunks' projections alone: how near the products let
         * this prompt come to the GEMM rate, and how near we come to them
         * (timed once for each row count: prompts past the chunk share it) */
        int rows = o.prompts[i] < o.chunk ? o.prompts[i] : o.chunk, j = 0;
        while (j < i && prod_rows[j] != rows)
            j++;
        if (j < i) {
            ptf = prod_tf[j], prs = prod_rs[j];
        } else if (rn_cuda_products_rate(c, rows, &ptf, &prs, &err) != RN_OK) {
            fprintf(stderr, "retnet: %s\n", err.msg);
            goto failed;
        }
        prod_rows[i] = rows, prod_tf[i] = ptf, prod_rs[i] = prs;
        printf("%s{\"prompt\":%d,\"tok_s\":%.1f,\"TFLOPs\":%.1f,\"of_gemm\":%.3f,"
               "\"products_TFLOPs\":%.1f,\"products_of_gemm\":%.3f,\"products_tok_s\":%.1f,"
               "\"of_products\":%.3f}",
               i ? ",\n  " : "", o.prompts[i], r, tf, tf / l.gemm_TFLOPs, ptf, ptf / l.gemm_TFLOPs,
               prs, r / prs);
        fflush(stdout);
    }
    printf("]");
    if (o.state_bf16 && bf16_accuracy(m, e, tok, o.chunk) != 0)
        goto failed;
    printf("}\n");
    rc = 0;
    goto cleanup;
failed:
    fprintf(stderr, "\nretnet: a CUDA engine call failed\n");
cleanup:
    if (e) {
        rn_engine_host_free(e, sb.logits);
        rn_engine_host_free(e, sb.tops);
    }
    free(tok);
    free(sb.picks);
    free(sb.temps);
    rn_engine_free(e);
    rn_model_free(m);
    rn_cuda_timeline_stop();
    return rc;
}
#else
int cli_cuda_info(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    printf("this build has no CUDA backend (nvcc was not found at build time)\n");
    return EXIT_NO_DEVICE;
}

int cli_bench_cuda(int argc, char **argv)
{
    cuda_bench_opts o;
    if (parse_cuda_opts(&o, argc, argv))
        return cli_usage(bench_cuda_usage);
    return cli_cuda_info(argc, argv);
}
#endif
