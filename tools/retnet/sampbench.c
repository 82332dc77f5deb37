/*
 * sampbench.c -- `retnet sampbench ROWS_FILE VOCAB`: the sampler's time per
 * token on rows of logits written by tools/bench_sampler.py (fp32, little
 * endian, one row of VOCAB after another), the same rows its PyTorch peer
 * times.  Three ways, each at temperature 1 with top-p 1 and 0.9:
 *   row:     rn_sampler_sample on the whole row (what a CPU server does);
 *   reduced: rn_sampler_sample_top on the row already reduced (what a GPU
 *            server's host does when the draw stays in the candidates),
 *            per token it decided;
 *   host:    rn_row_top_fill then rn_sampler_sample_top, taking the row
 *            when it must (the CPU engine's reduced path, all of it).
 * One JSON object on stdout; best of 3 passes over the rows.
 */
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"
#include "sampler.h"
#include "util.h"

#define SB_PASSES 3

/* The rows of path (count x vocab floats), new malloc'd array, or NULL. */
static float *sb_read(const char *path, int vocab, int *count)
{
    FILE *f = fopen(path, "rb");
    float *rows = NULL;
    long bytes;
    if (!f)
        return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (bytes = ftell(f)) > 0 && fseek(f, 0, SEEK_SET) == 0 &&
        bytes % ((long)sizeof(float) * vocab) == 0) {
        *count = (int)(bytes / ((long)sizeof(float) * vocab));
        rows = malloc((size_t)bytes);
        if (rows && fread(rows, 1, (size_t)bytes, f) != (size_t)bytes) {
            free(rows);
            rows = NULL;
        }
    }
    fclose(f);
    return rows;
}

typedef enum { SB_ROW, SB_REDUCED, SB_HOST } sb_way;

/* Best microseconds per token of way over the rows at top_p; *refused: the
 * reduced rows the sampler sent back for the whole row (per pass). */
static double sb_time(const float *rows, int count, int vocab, float top_p, sb_way way,
                      const rn_row_top *tops, int *refused)
{
    rn_sample_params p = {.temperature = 1.0f, .top_p = top_p, .repetition_penalty = 1.0f};
    double best = -1.0;
    for (int pass = 0; pass < SB_PASSES; pass++) {
        rn_sampler *s = NULL;
        rn_error err;
        rn_row_top t;
        rn_sample_result r;
        p.seed = (uint64_t)pass;
        if (rn_sampler_new(&s, &p, vocab, &err) != RN_OK)
            return -1.0;
        *refused = 0;
        double t0 = rn__now();
        for (int i = 0; i < count; i++) {
            const float *l = rows + (size_t)i * (size_t)vocab;
            int rc = RN_OK;
            if (way == SB_HOST)
                rn_row_top_fill(l, vocab, p.temperature, &t);
            if (way != SB_ROW)
                rc = rn_sampler_sample_top(s, way == SB_HOST ? &t : &tops[i], RN_NO_LOGPROBS, &r);
            if (rc == RN_SAMPLE_NEED_ROW)
                ++*refused;
            if (way == SB_ROW || (way == SB_HOST && rc == RN_SAMPLE_NEED_ROW))
                rc = rn_sampler_sample(s, l, RN_NO_LOGPROBS, &r);
            if (rc != RN_OK && rc != RN_SAMPLE_NEED_ROW) {
                rn_sampler_free(s);
                return -1.0;
            }
        }
        int tokens = way == SB_REDUCED ? count - *refused : count;
        double us = (rn__now() - t0) * 1e6 / (tokens > 0 ? tokens : 1);
        best = best < 0.0 || us < best ? us : best;
        rn_sampler_free(s);
    }
    return best;
}

int cli_sampbench(int argc, char **argv)
{
    if (argc != 2 || atoi(argv[1]) < 1)
        return cli_usage("sampbench ROWS_FILE VOCAB");
    int vocab = atoi(argv[1]), count = 0, rc = 1;
    float *rows = sb_read(argv[0], vocab, &count);
    rn_row_top *tops = rows ? malloc(sizeof *tops * (size_t)count) : NULL;
    if (!rows || !tops) {
        fprintf(stderr, "retnet: %s: not whole rows of %d floats\n", argv[0], vocab);
        goto cleanup;
    }
    for (int i = 0; i < count; i++)
        rn_row_top_fill(rows + (size_t)i * (size_t)vocab, vocab, 1.0f, &tops[i]);
    printf("{\"vocab\":%d,\"rows\":%d", vocab, count);
    static const float top_ps[] = {1.0f, 0.9f};
    static const char *const names[] = {"row", "reduced", "host"};
    for (int a = 0; a < 2; a++)
        for (int w = 0; w < 3; w++) {
            int refused = 0;
            double us = sb_time(rows, count, vocab, top_ps[a], (sb_way)w, tops, &refused);
            if (us < 0.0)
                goto cleanup;
            printf(",\"%s_p%g_us\":%.2f", names[w], (double)top_ps[a], us);
            if (w == SB_REDUCED)
                printf(",\"refused_p%g\":%d", (double)top_ps[a], refused);
        }
    printf("}\n");
    rc = 0;
cleanup:
    free(rows);
    free(tops);
    return rc;
}
