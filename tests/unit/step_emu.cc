/* The recurrent decode step of engine/cuda/step_dev.cuh (ret_step_kernel,
 * and ts_step_kernel after it for torchscale's s) on the CPU through
 * cuda_emu.h, launched as kernels.cu's rk_ret_step launches them, against
 * the step in double precision from the same values; check_step_emu.c
 * drives it. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_emu.h"

#include "rn_math.h"
#include "cuda/step_dev.cuh"
#include "cuda/ret_ref.h" /* rf_uniform */
#include "step_emu.h"

/* A case's inputs, from its seed, and what the launch left. */
struct step_io {
    const rn_emu_step_case *c;
    size_t layer_vals, slot_vals, state_vals; /* a layer's, a slot's, the pool's */
    size_t rows_v, part_stride;               /* n H dv; between partial read-outs */
    float *q, *k, *v, *gamma;
    void *before, *states; /* the pool before the step, and the launch's */
    float *out;            /* row_split parts of part_stride */
    int *slots;
};

static size_t state_size(const rn_emu_step_case *c)
{
    return c->bf16_state ? 2 : 4;
}

/* State value i of the pool p as fp32. */
static double state_at(const rn_emu_step_case *c, const void *p, size_t i)
{
    return c->bf16_state ? rn__bf16_to_f32(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}

static void step_io_free(step_io *io)
{
    free(io->q), free(io->k), free(io->v), free(io->gamma);
    free(io->before), free(io->states), free(io->out), free(io->slots);
}

/* io's arrays for c from seed: q, k, v and the states uniform in [-1, 1)
 * and [-2, 2), decays in [0.8, 0.99), s in [0.5, 4); the read-out NaN, so
 * a value left unwritten shows.  0, or -1 when out of memory (the caller
 * frees io either way). */
static int step_io_make(step_io *io, const rn_emu_step_case *c, uint32_t seed)
{
    size_t nk = (size_t)c->n * (size_t)c->H * (size_t)c->dk;
    memset(io, 0, sizeof *io);
    io->c = c;
    io->rows_v = (size_t)c->n * (size_t)c->H * (size_t)c->dv;
    io->part_stride = io->rows_v + (size_t)c->H * (size_t)c->dv; /* room for a row more */
    io->layer_vals = (size_t)c->H * (size_t)c->dk * (size_t)c->dv + (c->ts ? (size_t)c->H : 0);
    io->slot_vals = 2 * io->layer_vals;
    io->state_vals = (size_t)(c->n + 1) * io->slot_vals;
    io->q = (float *)rn_emu_alloc(nk, 4), io->k = (float *)rn_emu_alloc(nk, 4);
    io->v = (float *)rn_emu_alloc(io->rows_v, 4);
    io->gamma = (float *)rn_emu_alloc((size_t)c->H, 4);
    io->before = rn_emu_alloc(io->state_vals, state_size(c));
    io->states = rn_emu_alloc(io->state_vals, state_size(c));
    io->out = (float *)rn_emu_alloc(io->part_stride * (size_t)c->row_split, 4);
    io->slots = (int *)rn_emu_alloc((size_t)c->n, sizeof(int));
    if (!io->q || !io->k || !io->v || !io->gamma || !io->before || !io->states || !io->out ||
        !io->slots)
        return -1;
    for (size_t i = 0; i < nk; i++)
        io->q[i] = rf_uniform(&seed, -1.0f, 1.0f), io->k[i] = rf_uniform(&seed, -1.0f, 1.0f);
    for (size_t i = 0; i < io->rows_v; i++)
        io->v[i] = rf_uniform(&seed, -1.0f, 1.0f);
    for (int h = 0; h < c->H; h++)
        io->gamma[h] = rf_uniform(&seed, 0.8f, 0.99f);
    for (size_t i = 0; i < io->state_vals; i++) {
        float s = rf_uniform(&seed, -2.0f, 2.0f);
        if (c->bf16_state)
            ((uint16_t *)io->before)[i] = rn__f32_to_bf16(s);
        else
            ((float *)io->before)[i] = s;
    }
    if (c->ts) /* s > 0 at the end of every layer of every slot */
        for (size_t l = 1; l <= io->state_vals / io->layer_vals; l++)
            for (int h = 0; h < c->H; h++)
                ((float *)io->before)[l * io->layer_vals - (size_t)c->H + (size_t)h] =
                    rf_uniform(&seed, 0.5f, 4.0f);
    memcpy(io->states, io->before, io->state_vals * state_size(c));
    for (size_t i = 0; i < io->part_stride * (size_t)c->row_split; i++)
        io->out[i] = NAN;
    for (int i = 0; i < c->n; i++)
        io->slots[i] = c->n - i; /* the slots backwards, slot 0 left alone */
    return 0;
}

/* The step of io through ret_step_kernel<W, TS> and ts_step_kernel,
 * launched as rk_ret_step launches them; 0, or -1. */
template <int W, typename TS> static int step_launch(step_io *io)
{
    const rn_emu_step_case *c = io->c;
    int rows_n = c->n * c->H, rows = (c->dk + c->row_split - 1) / c->row_split;
    int tiles = ((c->dv + W - 1) / W + c->lanes - 1) / c->lanes;
    rk_states S = {io->states, io->slot_vals, io->layer_vals,
                   c->ts ? (size_t)c->H * (size_t)c->dk * (size_t)c->dv : 0, c->bf16_state};
    size_t shm = sizeof(float) * (size_t)c->lanes * (size_t)W * (size_t)c->d_split;
    int rc = rn_emu_launch(
        ret_step_kernel<W, TS>, dim3((unsigned)rows_n, (unsigned)tiles, (unsigned)c->row_split),
        dim3((unsigned)c->lanes, (unsigned)c->d_split), shm, io->out, io->part_stride, S,
        (const int *)io->slots, (const float *)io->q, (const float *)io->k, (const float *)io->v,
        (const float *)io->gamma, c->H, c->dk, c->dv, rows, c->early);
    if (rc == 0 && c->ts)
        rc = rn_emu_launch(ts_step_kernel, dim3(((unsigned)rows_n + 63) / 64), dim3(64), 0, S,
                           (const int *)io->slots, (const float *)io->gamma, c->n, c->H);
    return rc;
}

/* |got - want| over 1 + |want|, less step; infinite for NaN. */
static double rel_error(double got, double want, double step)
{
    double e = fabs(got - want) / (1.0 + fabs(want)) - step;
    return e != e ? INFINITY : e;
}

/* Sequence i, head h against the step in double: its states and s into
 * res->worst_state (marking them in touched), its read-out (the parts
 * summed, as the group norm sums them) into res->worst_out; o: dv scratch
 * values. */
static void step_row_errors(const step_io *io, int i, int h, double *o, char *touched,
                            rn_emu_step_result *res)
{
    const rn_emu_step_case *c = io->c;
    size_t dk = (size_t)c->dk, dv = (size_t)c->dv, rh = (size_t)i * (size_t)c->H + (size_t)h;
    size_t layer = (size_t)io->slots[i] * io->slot_vals + io->layer_vals;
    size_t base = layer + (size_t)h * dk * dv;
    const float *q = io->q + rh * dk, *k = io->k + rh * dk, *v = io->v + rh * dv;
    double g = io->gamma[h], sstep = c->bf16_state ? 1.0 / 128 : 0.0;
    for (size_t e = 0; e < dv; e++)
        o[e] = 0.0;
    for (size_t d = 0; d < dk; d++)
        for (size_t e = 0; e < dv; e++) {
            size_t at = base + d * dv + e;
            double s = g * state_at(c, io->before, at) + (double)k[d] * v[e];
            o[e] += q[d] * s;
            res->worst_state =
                fmax(res->worst_state, rel_error(state_at(c, io->states, at), s, sstep));
            touched[at] = 1;
        }
    if (c->ts) {
        size_t at = layer + io->layer_vals - (size_t)c->H + (size_t)h;
        double s = g * ((const float *)io->before)[at] + 1.0;
        res->worst_state =
            fmax(res->worst_state, rel_error(((const float *)io->states)[at], s, 0.0));
        touched[at] = 1;
        for (size_t e = 0; e < dv; e++)
            o[e] /= sqrt(s);
    }
    for (size_t e = 0; e < dv; e++) {
        double got = 0.0;
        for (int p = 0; p < c->row_split; p++)
            got += io->out[(size_t)p * io->part_stride + rh * dv + e];
        res->worst_out = fmax(res->worst_out, rel_error(got, o[e], 0.0));
    }
}

/* Every row's errors (step_row_errors), then the states no row touched and
 * the parts' rows past the batch, which must be as they were. */
static int step_errors(const step_io *io, rn_emu_step_result *res)
{
    const rn_emu_step_case *c = io->c;
    double *o = (double *)malloc(sizeof(double) * (size_t)c->dv);
    char *touched = (char *)calloc(io->state_vals, 1);
    size_t z = state_size(c);
    if (!o || !touched) {
        free(o), free(touched);
        return -1;
    }
    for (int i = 0; i < c->n; i++)
        for (int h = 0; h < c->H; h++)
            step_row_errors(io, i, h, o, touched, res);
    for (size_t at = 0; at < io->state_vals; at++)
        if (!touched[at] &&
            memcmp((const char *)io->states + at * z, (const char *)io->before + at * z, z) != 0)
            res->worst_state = 1.0;
    for (int p = 0; p < c->row_split; p++)
        for (size_t i = io->rows_v; i < io->part_stride; i++)
            if (io->out[(size_t)p * io->part_stride + i] ==
                io->out[(size_t)p * io->part_stride + i])
                res->worst_out = 1.0;
    free(o), free(touched);
    return 0;
}

extern "C" int rn_emu_step_check(const rn_emu_step_case *c, uint32_t seed, rn_emu_step_result *r)
{
    step_io io;
    int rc = -1;
    memset(r, 0, sizeof *r);
    /* as rn_cuda_step_plan: 4 values a thread only where every head's rows
     * stay on 16 bytes; s only in fp32 pools */
    if ((c->W != 1 && c->W != 4) || (c->W == 4 && (c->dv % 4 || (c->ts && c->H % 4))) ||
        (c->ts && c->bf16_state))
        return -1;
    if (step_io_make(&io, c, seed) == 0) {
        if (c->W == 4)
            rc = c->bf16_state ? step_launch<4, __nv_bfloat16>(&io) : step_launch<4, float>(&io);
        else
            rc = c->bf16_state ? step_launch<1, __nv_bfloat16>(&io) : step_launch<1, float>(&io);
        if (rc == 0)
            rc = step_errors(&io, r);
    }
    step_io_free(&io);
    return rc;
}
