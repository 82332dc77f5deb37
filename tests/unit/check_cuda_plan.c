/*
 * check_cuda_plan.c -- the CUDA backend's memory plan and launch shapes
 * (engine/cuda/plan.c), which are plain C and run on every machine.
 */
#include <check.h>
#include <stdint.h>
#include <string.h>

#include "cuda/plan.h"
#include "sampler.h"
#include "cuda/tc_layout.h"
#include "fixture.h"
#include "model.h"
#include "suites.h"

/* The 1.3B preset's shape (tools/retnet random --preset 1.3b). */
static rn_config shape_1_3b(void)
{
    rn_config c;
    memset(&c, 0, sizeof c);
    c.vocab_size = 32000, c.hidden_size = 2048, c.n_layers = 24, c.n_heads = 8;
    c.head_dim_k = 256, c.head_dim_v = 256, c.key_dim = 2048, c.value_dim = 2048;
    c.intermediate_size = 4096;
    return c;
}

START_TEST(test_cuda_plan_state_bytes_are_the_state)
{
    rn_config c = shape_1_3b();
    rn_cuda_plan p;
    ck_assert_int_eq(rn_cuda_plan_make(&p, &c, 16, 256, 0, NULL), RN_OK);
    /* per session: L x H x dk x dv fp32 values and nothing else */
    ck_assert_uint_eq(p.state_bytes, (size_t)24 * 8 * 256 * 256 * 4);
    ck_assert_uint_eq(p.pool_bytes, 16 * p.state_bytes);
    c.retention_norm = RN_RETNORM_TORCHSCALE; /* plus H values of s per layer */
    ck_assert_int_eq(rn_cuda_plan_make(&p, &c, 16, 256, 0, NULL), RN_OK);
    ck_assert_uint_eq(p.layer_vals, (size_t)8 * 256 * 256 + 8);
    ck_assert_uint_eq(p.state_bytes, p.layer_vals * 24 * 4);
}
END_TEST

/* bf16 states: half the pool, the same exported size, one layer of fp32
 * scratch counted in the total; refused for torchscale's normaliser. */
START_TEST(test_cuda_plan_bf16_states_halve_the_pool)
{
    rn_config c = shape_1_3b();
    rn_cuda_plan f, h;
    rn_error err = {0};
    ck_assert_int_eq(rn_cuda_plan_make(&f, &c, 16, 256, 0, NULL), RN_OK);
    ck_assert_int_eq(rn_cuda_plan_make(&h, &c, 16, 256, 1, NULL), RN_OK);
    ck_assert_int_eq(h.state_bf16, 1);
    ck_assert_uint_eq(h.state_bytes * 2, f.state_bytes);
    ck_assert_uint_eq(h.pool_bytes * 2, f.pool_bytes);
    ck_assert_uint_eq(h.export_bytes, f.state_bytes);
    ck_assert_uint_eq(f.export_bytes, f.state_bytes);
    ck_assert_uint_eq(f.layer_scratch_bytes, 0);
    ck_assert_uint_eq(h.layer_scratch_bytes, (size_t)8 * 256 * 256 * 4);
    ck_assert_uint_eq(h.total_bytes,
                      f.total_bytes - f.pool_bytes + h.pool_bytes + h.layer_scratch_bytes);
    c.retention_norm = RN_RETNORM_TORCHSCALE;
    ck_assert_int_eq(rn_cuda_plan_make(&h, &c, 16, 256, 1, &err), RN_EUNSUPPORTED);
    ck_assert_ptr_nonnull(strstr(err.msg, "torchscale"));
}
END_TEST

START_TEST(test_cuda_plan_buffers_cover_chunk_and_batch)
{
    rn_config c = shape_1_3b();
    rn_cuda_plan p;
    ck_assert_int_eq(rn_cuda_plan_make(&p, &c, 1000, 64, 0, NULL), RN_OK);
    ck_assert_int_eq(p.max_batch, RN_CUDA_MAX_BATCH); /* bigger batches are split */
    ck_assert_int_eq(p.max_rows, RN_CUDA_MAX_BATCH);
    ck_assert_int_eq(rn_cuda_plan_make(&p, &c, 4, 512, 0, NULL), RN_OK);
    ck_assert_int_eq(p.max_batch, 4);
    ck_assert_int_eq(p.max_rows, 512);
    /* 3D + 2K + 3V + 2F floats per row, plus half a float per element of the widest GEMM
     * input and of F */
    size_t row = 3 * 2048 + 2 * 2048 + 3 * 2048 + 2 * 4096 + 4096 / 2 + 4096 / 2;
    ck_assert_uint_eq(p.act_bytes, 512 * row * 4); /* all multiples of 256 bytes here */
    ck_assert_uint_eq(p.logits_bytes, (size_t)512 * 32000 * 4);
    /* A (H C C) + qd, kd (H C dk) + powers H (C+1) + sums H C, each part
     * rounded up to 256 bytes (64 floats): only the tables are not whole */
    size_t C = 512, chunk = 8 * C * C + 2 * 8 * C * 256 + (8 * (C + 2) + 63) / 64 * 64 + 8 * C;
    ck_assert_uint_eq(p.chunk_bytes, chunk * 4);
    /* the step's partial read-outs: SPLIT_MAX per row of V values */
    ck_assert_uint_eq(p.step_bytes, (size_t)RN_CUDA_STEP_SPLIT_MAX * 4 * 4 * 2048);
    /* four reduced rows, then the input block of a four-row step (20 bytes a row) */
    ck_assert_uint_eq(p.top_bytes, (4 * sizeof(rn_row_top) + 255) / 256 * 256 + 256);
    ck_assert_uint_eq(p.total_bytes, p.act_bytes + p.chunk_bytes + p.step_bytes + p.logits_bytes +
                                         p.top_bytes + p.pool_bytes + RN_CUDA_LT_WORKSPACE);
    /* odd sizes: each buffer is rounded up to 256 bytes on its own */
    rn_config odd = c;
    odd.hidden_size = 1000, odd.key_dim = odd.value_dim = 1000, odd.intermediate_size = 3000;
    ck_assert_int_eq(rn_cuda_plan_make(&p, &odd, 3, 3, 0, NULL), RN_OK);
    size_t a1000 = (3 * 1000 * 4 + 255) / 256 * 256, a3000 = (3 * 3000 * 4 + 255) / 256 * 256;
    size_t h3000 = (3 * 3000 * 2 + 255) / 256 * 256;
    ck_assert_uint_eq(p.act_bytes, 8 * a1000 + 2 * a3000 + 2 * h3000);
}
END_TEST

/* The step's inputs packed for n rows: each array n long, aligned for
 * its type, none overlapping the next, the block exactly their sum; and
 * the room the plan keeps holds the largest step's. */
START_TEST(test_cuda_step_in_packs_each_batch)
{
    for (int n = 1; n <= RN_CUDA_MAX_BATCH; n++) {
        rn_cuda_step_in L = rn_cuda_step_in_layout(n);
        size_t N = (size_t)n;
        ck_assert_uint_eq(L.pos % sizeof(int64_t), 0);
        ck_assert_uint_eq(L.tok % sizeof(int32_t), 0);
        ck_assert_uint_eq(L.slots % sizeof(int), 0);
        ck_assert_uint_eq(L.temps % sizeof(float), 0);
        ck_assert_uint_ge(L.tok, L.pos + N * sizeof(int64_t));
        ck_assert_uint_ge(L.slots, L.tok + N * sizeof(int32_t));
        ck_assert_uint_ge(L.temps, L.slots + N * sizeof(int));
        ck_assert_uint_eq(L.bytes, L.temps + N * sizeof(float));
        ck_assert_uint_eq(L.bytes, 20 * N); /* nothing but the step's own values is copied */
    }
    rn_config c = shape_1_3b();
    rn_cuda_plan p;
    ck_assert_int_eq(rn_cuda_plan_make(&p, &c, 1000, 64, 0, NULL), RN_OK);
    ck_assert_uint_ge(p.top_bytes - rn_cuda_top_rows_bytes(p.max_batch),
                      rn_cuda_step_in_layout(p.max_batch).bytes);
    ck_assert_uint_eq(rn_cuda_top_rows_bytes(p.max_batch) % 256, 0);
    ck_assert_uint_ge(rn_cuda_top_rows_bytes(p.max_batch), p.max_batch * sizeof(rn_row_top));
}
END_TEST

START_TEST(test_cuda_plan_rejects_bad_sizes)
{
    rn_config c = shape_1_3b();
    rn_cuda_plan p;
    rn_error err = {0};
    ck_assert_int_eq(rn_cuda_plan_make(&p, &c, 0, 64, 0, &err), RN_EINVAL);
    ck_assert_int_eq(rn_cuda_plan_make(&p, &c, 4, 0, 0, &err), RN_EINVAL);
    c.head_dim_k = c.head_dim_v = 1 << 30; /* H dk dv overflows on 64 bits */
    c.n_heads = 1 << 30;
    ck_assert_int_eq(rn_cuda_plan_make(&p, &c, 4, 64, 0, &err), RN_EINVAL);
    ck_assert_msg(strstr(err.msg, "overflow") != NULL, "%s", err.msg);
}
END_TEST

START_TEST(test_cuda_plan_slots_for_budget)
{
    ck_assert_int_eq(rn_cuda_slots_for_budget((size_t)1 << 30, (size_t)48 << 20), 21);
    ck_assert_int_eq(rn_cuda_slots_for_budget(100, 101), 0);
    ck_assert_int_eq(rn_cuda_slots_for_budget(100, 0), 0);
    ck_assert_int_eq(rn_cuda_slots_for_budget(SIZE_MAX, 1), INT32_MAX);
}
END_TEST

START_TEST(test_cuda_slots_for_device)
{
    const size_t GiB = (size_t)1 << 30, MiB = (size_t)1 << 20;
    /* an H200 with 139 GiB free, the 1.3B preset: 2.4 GiB of weights and
     * ~1 GiB of buffers, 96 MiB states, 32000 x 4-byte logits rows */
    int n = rn_cuda_slots_for_device(139 * GiB, 0.9, 3400 * MiB, 96 * MiB, 32000 * 4);
    ck_assert_int_eq(n, (int)((139.0 * 1024 * 0.9 - 3400) / 96));
    ck_assert_int_lt((size_t)n * 32000 * 4, RN_CUDA_AUTO_LOGITS_BYTES);
    /* a tiny model: the host's logits buffer caps it */
    n = rn_cuda_slots_for_device(139 * GiB, 0.9, 100 * MiB, 256 * 1024, 4096 * 4);
    ck_assert_int_eq(n, (int)(RN_CUDA_AUTO_LOGITS_BYTES / (4096 * 4)));
    /* without the cap, the engine's limit */
    ck_assert_int_eq(rn_cuda_slots_for_device(139 * GiB, 0.9, 0, 1024, 0), 1 << 20);
    /* nothing left after the weights, or not one state */
    ck_assert_int_eq(rn_cuda_slots_for_device(10 * GiB, 0.9, 10 * GiB, 96 * MiB, 4), 0);
    ck_assert_int_eq(rn_cuda_slots_for_device(GiB, 0.9, GiB / 2, GiB, 4), 0);
    ck_assert_int_eq(rn_cuda_slots_for_device(GiB, 0.9, 0, 0, 4), 0);
}
END_TEST

START_TEST(test_cuda_step_plan_covers_every_column)
{
    const int dvs[] = {8, 16, 33, 64, 128, 256, 512}, ns[] = {1, 7, 64, 256};
    for (size_t a = 0; a < sizeof dvs / sizeof dvs[0]; a++)
        for (size_t b = 0; b < sizeof ns / sizeof ns[0]; b++) {
            rn_config c = {.n_heads = 8, .head_dim_k = dvs[a], .head_dim_v = dvs[a]};
            rn_cuda_step_shape s = rn_cuda_step_plan(&c, ns[b], 132);
            int tile = s.lanes * s.vec, rows = (dvs[a] + s.row_split - 1) / s.row_split;
            ck_assert_int_eq(s.grid_x, ns[b] * 8);
            ck_assert_int_ge(s.grid_y * tile, dvs[a]);       /* every column has a lane */
            ck_assert_int_lt((s.grid_y - 1) * tile, dvs[a]); /* no block without one */
            ck_assert_int_le(s.lanes * s.d_split, 1024);
            ck_assert_int_le(s.d_split, dvs[a]);
            ck_assert_int_le(s.row_split, RN_CUDA_STEP_SPLIT_MAX);
            ck_assert_int_gt(rows, 0); /* every row split has rows */
            ck_assert_int_eq(s.vec, dvs[a] % 4 == 0 ? 4 : 1);
        }
    /* one sequence of the 1.3B shape (8 heads, dk 256, dv 512): 128-column
     * tiles, the rows split 8 ways so 256 blocks cover 132 SMs */
    rn_config big = {.n_heads = 8, .head_dim_k = 256, .head_dim_v = 512};
    rn_cuda_step_shape one = rn_cuda_step_plan(&big, 1, 132);
    ck_assert_int_eq(one.vec * one.lanes, 128);
    ck_assert_int_eq(one.row_split, 8);
    ck_assert_int_eq(one.grid_y, 4);
    /* the same tile at every batch size (bitwise batch invariance) */
    for (int n = 1; n <= 256; n *= 2) {
        rn_cuda_step_shape s = rn_cuda_step_plan(&big, n, 132);
        ck_assert_int_eq(s.lanes, one.lanes);
        ck_assert_int_eq(s.d_split, one.d_split);
        ck_assert_int_eq(s.row_split, one.row_split);
    }
    /* torchscale's s after each layer's blocks: with an odd head count the
     * blocks of a slot's later layers lose 16-byte alignment: no float4 */
    rn_config ts = {
        .n_heads = 3, .head_dim_k = 64, .head_dim_v = 64, .retention_norm = RN_RETNORM_TORCHSCALE};
    ck_assert_int_eq(rn_cuda_step_plan(&ts, 1, 132).vec, 1);
    ts.n_heads = 4;
    ck_assert_int_eq(rn_cuda_step_plan(&ts, 1, 132).vec, 4);
    /* many heads fill the device on their own: no split */
    rn_config wide = {.n_heads = 64, .head_dim_k = 128, .head_dim_v = 256};
    ck_assert_int_eq(rn_cuda_step_plan(&wide, 1, 100).row_split, 1);
}
END_TEST

/* Retention pieces: a chunk of at least two full pieces gets their
 * entering states and ten pointer arrays (eight for the cuBLAS products,
 * two for the fused path's bf16 copies), counted in the total; one
 * piece gets nothing; a second call replaces the first. */
START_TEST(test_cuda_plan_pieces_hold_their_states)
{
    rn_config c = shape_1_3b();
    rn_cuda_plan p;
    ck_assert_int_eq(rn_cuda_plan_make(&p, &c, 16, 1024, 0, NULL), RN_OK);
    size_t base = p.total_bytes;
    rn_cuda_plan_pieces(&p, &c, 128);
    ck_assert_int_eq(p.ret_piece, 128);
    ck_assert_int_eq(p.pieces, 8);
    size_t states = (size_t)8 * 8 * 256 * 256 * 4,
           arrays = 10 * (((size_t)64 * 8 + 255) / 256 * 256);
    ck_assert_uint_eq(p.pieces_bytes, states + arrays);
    ck_assert_uint_eq(p.total_bytes, base + p.pieces_bytes);
    rn_cuda_plan_pieces(&p, &c, 300); /* 3 full pieces and a tail of 124 */
    ck_assert_int_eq(p.pieces, 3);
    ck_assert_uint_eq(p.total_bytes, base + p.pieces_bytes);
    static const int one[] = {0, 600, 1024, 5000}; /* one piece, or a single full one */
    for (size_t i = 0; i < sizeof one / sizeof one[0]; i++) {
        rn_cuda_plan_pieces(&p, &c, one[i]);
        ck_assert_int_eq(p.pieces, 0);
        ck_assert_uint_eq(p.pieces_bytes, 0);
        ck_assert_uint_eq(p.total_bytes, base);
    }
}
END_TEST

/* The default piece length batches every chunk of 512 tokens or more
 * (at least two full pieces) and keeps each piece's mask at most 512
 * tokens square, whatever the chunk; the server's 1024-token chunks get
 * 256-token pieces, the measured best there.  A model with torchscale's
 * normaliser, whose pieces cannot be batched, keeps whole chunks and no
 * pieces scratch. */
START_TEST(test_cuda_plan_default_pieces_batch_long_chunks)
{
    rn_config c = shape_1_3b();
    for (int chunk = 512; chunk <= 65536; chunk += chunk / 2) {
        rn_cuda_plan p;
        ck_assert_int_eq(rn_cuda_plan_make(&p, &c, 4, chunk, 0, NULL), RN_OK);
        rn_cuda_plan_pieces(&p, &c, rn_cuda_ret_piece_default(&c, p.max_chunk));
        ck_assert_msg(p.pieces >= 2 && p.ret_piece > 0 && p.ret_piece <= 512,
                      "chunk %d: %d pieces of %d", chunk, p.pieces, p.ret_piece);
    }
    ck_assert_int_eq(rn_cuda_ret_piece_default(&c, 1024), 256);
    c.retention_norm = RN_RETNORM_TORCHSCALE;
    rn_cuda_plan p;
    ck_assert_int_eq(rn_cuda_plan_make(&p, &c, 4, 4096, 0, NULL), RN_OK);
    size_t total = p.total_bytes;
    rn_cuda_plan_pieces(&p, &c, rn_cuda_ret_piece_default(&c, p.max_chunk));
    ck_assert_int_eq(p.pieces, 0);
    ck_assert_uint_eq(p.total_bytes, total);
}
END_TEST

/* 16 loads in flight only for one m-tile and one pair group whose warps
 * take a whole 16-load round, and the form suite's device comparison of 8
 * and 16 loads runs on shapes that take them (planned as rk_gemv_tc plans
 * them for one SM), so it cannot pass by comparing 8 with 8. */
START_TEST(test_cuda_tc_loads_apply)
{
    ck_assert_int_eq(rn_cuda_tc_loads(16, 1, 1, 256), 16);
    ck_assert_int_eq(rn_cuda_tc_loads(16, 1, 1, 128), 8);
    ck_assert_int_eq(rn_cuda_tc_loads(16, 1, 2, 256), 8);
    ck_assert_int_eq(rn_cuda_tc_loads(16, 2, 1, 256), 8);
    ck_assert_int_eq(rn_cuda_tc_loads(8, 1, 1, 256), 8);
    for (int i = 0; i < FIXTURE_TC_LOADS_SHAPES; i++) {
        int in = fixture_tc_loads_shapes[i][0], pairs = (fixture_tc_loads_shapes[i][1] + 1) / 2;
        int groups = rn_cuda_tc_groups((size_t)pairs, 1, 0);
        long blocks = (pairs + 8 * groups - 1) / (8 * groups);
        rn_cuda_tc_shape sh = rn_cuda_tc_plan(in, blocks, 1, RN_CUDA_TC_WARPS_MAX, 0);
        ck_assert_msg(rn_cuda_tc_loads(16, 1, groups, sh.k_per_warp) == 16,
                      "in %d, %d pairs: %d groups, %d k a warp", in, pairs, groups, sh.k_per_warp);
    }
}
END_TEST

/* The stream-K split (RETNET_CUDA_TC_STREAM): every unit to exactly one
 * warp, every warp at least one and the same count within one;
 * rn_tc_stream_warp_of names each unit's warp (the kernel finds a group's
 * first and last warps with it); no warp's run touches more groups than
 * its slots, no group meets more warps than the spread; the grid stays
 * within RN_CUDA_TC_STREAM_WARPS_PER_SM warps an SM; a launch whose groups
 * would spread over more than RN_CUDA_TC_STREAM_SPREAD_MAX warps is not
 * planned.  Shapes: the 1.3B preset's q/k/v/g (384 groups of 2048
 * columns, planned), o and down (64 of 4096 and 5464: not) and LM head on
 * 132 SMs, and small ones where runs span several groups or fewer units
 * than the SMs' warps. */
START_TEST(test_cuda_tc_stream_splits_evenly)
{
    static const long shapes[][3] = {
        {384, 2048, 132}, {64, 4096, 132}, {1000, 2048, 132}, {5, 64, 1},      {3, 40, 2},
        {1, 8, 132},      {7, 1024, 3},    {40, 96, 1},       {64, 5464, 132}, {25, 520, 1}};
    int planned = 0, declined = 0;
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        long groups = shapes[i][0];
        int in = (int)shapes[i][1], n_sms = (int)shapes[i][2];
        rn_cuda_tc_stream s = rn_cuda_tc_stream_plan(groups, in, n_sms);
        ck_assert_int_eq(s.kb, (in + RN_TC_KBLOCK - 1) / RN_TC_KBLOCK);
        ck_assert(s.units == (long long)groups * s.kb);
        if (s.spread > RN_CUDA_TC_STREAM_SPREAD_MAX) {
            ck_assert(s.warps == 0 && s.blocks == 0 && s.slots == 0);
            declined++;
            continue;
        }
        planned++;
        ck_assert(s.warps >= 1 && s.warps <= RN_CUDA_TC_STREAM_WARPS_PER_SM * n_sms &&
                  s.warps <= s.units);
        ck_assert(s.warps == RN_CUDA_TC_STREAM_WARPS_PER_SM * n_sms || s.warps == s.units);
        ck_assert_int_eq(s.blocks, (s.warps + RN_CUDA_TC_STREAM_BLOCK_WARPS - 1) /
                                       RN_CUDA_TC_STREAM_BLOCK_WARPS);
        long long lo = s.units / s.warps, most_groups = 0;
        ck_assert(rn_tc_stream_begin(s.units, s.warps, 0) == 0);
        ck_assert(rn_tc_stream_begin(s.units, s.warps, s.warps) == s.units);
        for (int w = 0; w < s.warps; w++) {
            long long b = rn_tc_stream_begin(s.units, s.warps, w);
            long long e = rn_tc_stream_begin(s.units, s.warps, w + 1);
            ck_assert_msg(e - b == lo || e - b == lo + 1, "shape %zu warp %d: %lld units", i, w,
                          e - b);
            for (long long u = b; u < e; u++)
                ck_assert_msg(rn_tc_stream_warp_of(s.units, s.warps, u) == w,
                              "shape %zu: unit %lld of warp %d named %d", i, u, w,
                              rn_tc_stream_warp_of(s.units, s.warps, u));
            long long touched = (e - 1) / s.kb - b / s.kb + 1;
            most_groups = touched > most_groups ? touched : most_groups;
        }
        for (long g = 0; g < groups; g++) {
            long long u0 = (long long)g * s.kb;
            int met = rn_tc_stream_warp_of(s.units, s.warps, u0 + s.kb - 1) -
                      rn_tc_stream_warp_of(s.units, s.warps, u0) + 1;
            ck_assert_msg(met <= s.spread, "shape %zu group %ld: %d warps, spread %d", i, g, met,
                          s.spread);
        }
        ck_assert_msg(most_groups <= s.slots && s.slots <= groups,
                      "shape %zu: a run touches %lld groups, %d slots", i, most_groups, s.slots);
        ck_assert(rn_cuda_tc_stream_part_bytes(&s, 16) ==
                  (size_t)s.warps * (size_t)s.slots * 16 * 32 * sizeof(float));
    }
    ck_assert(planned >= 7 && declined >= 2);
    ck_assert_int_gt(rn_cuda_tc_stream_plan(384, 2048, 132).warps, 0);
    ck_assert_int_eq(rn_cuda_tc_stream_plan(64, 4096, 132).warps, 0);
    ck_assert_int_eq(rn_cuda_tc_stream_plan(0, 2048, 132).warps, 0);
    ck_assert_int_eq(rn_cuda_tc_stream_plan(4, 0, 132).warps, 0);
}
END_TEST

/* What rn_cuda_tc_stream_bytes rests on: counting a set's groups high
 * never asks less of the buffers.  With more groups a warp's run is no
 * shorter, so a group spreads over no more warps (a set planned stays
 * planned when counted high), and the launch's slots, warps x slots, never
 * fewer. */
START_TEST(test_cuda_tc_stream_needs_grow_with_groups)
{
    static const int widths[] = {64, 520, 2048, 4096, 5464};
    static const int sms[] = {1, 3, 132};
    for (size_t i = 0; i < sizeof widths / sizeof widths[0]; i++)
        for (size_t k = 0; k < sizeof sms / sizeof sms[0]; k++) {
            rn_cuda_tc_stream a = rn_cuda_tc_stream_plan(1, widths[i], sms[k]);
            for (long g = 2; g <= 3000; g++) {
                rn_cuda_tc_stream b = rn_cuda_tc_stream_plan(g, widths[i], sms[k]);
                ck_assert_msg(b.spread <= a.spread, "in %d, %d SMs, %ld groups: spread %d > %d",
                              widths[i], sms[k], g, b.spread, a.spread);
                ck_assert_msg(!a.warps ||
                                  (long long)b.warps * b.slots >= (long long)a.warps * a.slots,
                              "in %d, %d SMs, %ld groups: fewer slots", widths[i], sms[k], g);
                a = b;
            }
        }
}
END_TEST

/* w as a model of one layer, layer (zeroed: every matrix absent). */
static void one_layer_model(rn_weights *w, rn_layer_weights *layer)
{
    memset(layer, 0, sizeof *layer);
    memset(w, 0, sizeof *w);
    w->layers = layer;
}

/* t present as an out x in bf16 matrix (its data never read). */
static void bf16_matrix(rn_tensor *t, int out, int in)
{
    static const char byte = 0;
    t->data = &byte, t->dtype = RN_DT_BF16, t->ndim = 2;
    t->shape[0] = out, t->shape[1] = in;
}

/* The stream-K buffers cover every launch a model's projections make:
 * the 1.3B preset's shapes on 132 SMs (q/k/v/g as 6144 rotary pairs in 384
 * groups of 16, o, GLU's 5461 pairs, down, a 32000-word LM head), more
 * for batches past 16 rows (32 accumulators a lane), and none past what
 * the largest launch asks. */
START_TEST(test_cuda_tc_stream_bytes_cover_each_launch)
{
    rn_layer_weights layer;
    rn_weights w;
    one_layer_model(&w, &layer);
    struct {
        rn_tensor *t;
        int out, in;
    } mats[] = {
        {&layer.q_w, 2048, 2048},    {&layer.k_w, 2048, 2048},    {&layer.v_w, 4096, 2048},
        {&layer.g_w, 4096, 2048},    {&layer.o_w, 2048, 4096},    {&layer.up_w, 5461, 2048},
        {&layer.gate_w, 5461, 2048}, {&layer.down_w, 2048, 5464}, {&w.lm_head_w, 32000, 2048}};
    for (size_t i = 0; i < sizeof mats / sizeof mats[0]; i++)
        bf16_matrix(mats[i].t, mats[i].out, mats[i].in);
    long groups = 0, groups64 = 0;
    size_t bytes = rn_cuda_tc_stream_bytes(&w, 1, 132, 16, &groups);
    size_t bytes64 = rn_cuda_tc_stream_bytes(&w, 1, 132, 64, &groups64);
    /* (pairs, width) of each launch as the engine makes them */
    static const long launches[][2] = {
        {6144, 2048}, {1024, 4096}, {5461, 2048}, {1024, 5464}, {16000, 2048}};
    size_t largest = 0;
    for (size_t i = 0; i < sizeof launches / sizeof launches[0]; i++) {
        long g = (launches[i][0] + 15) / 16;
        rn_cuda_tc_stream st = rn_cuda_tc_stream_plan(g, (int)launches[i][1], 132);
        size_t need = rn_cuda_tc_stream_part_bytes(&st, 16);
        largest = need > largest ? need : largest;
        ck_assert_msg(need <= bytes && g <= groups, "launch %zu: %zu bytes, %ld groups", i, need,
                      g);
        /* 33 to 64 rows: one pair group a block, 4 m-tiles */
        long g1 = (launches[i][0] + 7) / 8;
        st = rn_cuda_tc_stream_plan(g1, (int)launches[i][1], 132);
        ck_assert(rn_cuda_tc_stream_part_bytes(&st, 32) <= bytes64 && g1 <= groups64);
    }
    /* bounded by twice the pairs (a plain row is half a pair): at most the
     * LM head's launch taken at 32000 pairs */
    rn_cuda_tc_stream lm = rn_cuda_tc_stream_plan(2000, 2048, 132);
    ck_assert(bytes >= largest && bytes <= rn_cuda_tc_stream_part_bytes(&lm, 16));
    ck_assert(bytes64 > bytes && groups64 > groups);
    layer.gate_w.data = NULL; /* no GLU: the up launch alone */
    ck_assert(rn_cuda_tc_stream_bytes(&w, 1, 132, 16, &groups) <= bytes);
    ck_assert(rn_cuda_tc_stream_bytes(&w, 0, 132, 16, &groups) == 0 && groups == 0);
}
END_TEST

/* The fused read-out's value-column shares: one where the split is off
 * (0 or 1 share); as the plan sees fit (RN_CUDA_RET_SPLIT_AUTO, the
 * engine's default), doubled only while the doubled grid stays
 * within one block an SM, and never into shares narrower than
 * RN_CUDA_RET_SPLIT_MIN_DV or off 64-column multiples; a count asked for
 * outright, as far as dv allows.  The 1.3B preset on an H100 (dv 512, 132
 * SMs): a 512-token prompt's chunk (two 256-token pieces, 8 heads, 4 query
 * tiles each: 64 blocks) splits in two, a 2k prompt's 1024-token chunks
 * (128 blocks) do not. */
START_TEST(test_cuda_ret_parts_fill_one_wave)
{
    ck_assert_int_eq(rn_cuda_ret_parts(8, 512, 132, 0), 1);
    ck_assert_int_eq(rn_cuda_ret_parts(8, 512, 132, 1), 1);
    ck_assert_int_eq(rn_cuda_ret_parts(64, 512, 132, RN_CUDA_RET_SPLIT_AUTO), 2);
    ck_assert_int_eq(rn_cuda_ret_parts(128, 512, 132, RN_CUDA_RET_SPLIT_AUTO), 1);
    ck_assert_int_eq(rn_cuda_ret_parts(32, 512, 132, RN_CUDA_RET_SPLIT_AUTO), 4);
    ck_assert_int_eq(rn_cuda_ret_parts(8, 512, 132, RN_CUDA_RET_SPLIT_AUTO), 4); /* the most */
    ck_assert_int_eq(rn_cuda_ret_parts(34, 512, 132, RN_CUDA_RET_SPLIT_AUTO), 2);
    ck_assert_int_eq(rn_cuda_ret_parts(8, 256, 132, RN_CUDA_RET_SPLIT_AUTO), 2);
    ck_assert_int_eq(rn_cuda_ret_parts(8, 192, 132, RN_CUDA_RET_SPLIT_AUTO), 1); /* 96: off 64 */
    ck_assert_int_eq(rn_cuda_ret_parts(8, 128, 132, RN_CUDA_RET_SPLIT_AUTO), 1); /* 64: narrow */
    ck_assert_int_eq(rn_cuda_ret_parts(1000, 512, 132, 4), 4);
    ck_assert_int_eq(rn_cuda_ret_parts(1000, 512, 132, 2), 2);
    ck_assert_int_eq(rn_cuda_ret_parts(1000, 256, 132, 4), 2);
    ck_assert_int_eq(rn_cuda_ret_parts(1000, 320, 132, 2), 1); /* 160: off 64 */
    for (int dv = 64; dv <= 512; dv += 64)
        for (long blocks = 1; blocks <= 300; blocks += 7) {
            int p = rn_cuda_ret_parts(blocks, dv, 132, RN_CUDA_RET_SPLIT_AUTO);
            ck_assert(p == 1 || p == 2 || p == 4);
            ck_assert(dv % (64 * p) == 0 && (p == 1 || dv / p >= RN_CUDA_RET_SPLIT_MIN_DV));
            ck_assert(p == 1 || blocks * p <= 132);
        }
}
END_TEST

/* The cp.async ring's stages: none unless asked; 2 to 4, no more than
 * asked or than the warps' rounds need (2 at least); more than 2 only
 * where two blocks' rings fit an SM, any only where one fits a block; and
 * the 1.3B preset's launches on an H100 (227 KiB a block, 228 an SM) and
 * on an sm_86 part (99 and 100 KiB). */
START_TEST(test_cuda_tc_stages_fit)
{
    const size_t h100_block = 227 << 10, h100_sm = 228 << 10;
    ck_assert_int_eq(rn_cuda_tc_stages(0, 4, 8, h100_block, h100_sm), 0);
    ck_assert_int_eq(rn_cuda_tc_stages(4, 1, 4, h100_block, h100_sm), 2);
    ck_assert_int_eq(rn_cuda_tc_stages(4, 4, 4, h100_block, h100_sm), 4);
    ck_assert_int_eq(rn_cuda_tc_stages(2, 4, 4, h100_block, h100_sm), 2);
    /* q/k/v/g at 16 rows: 8 warps of 4 rounds; o: 16 warps of 2 */
    ck_assert_int_eq(rn_cuda_tc_stages(4, 4, 8, h100_block, h100_sm), 3);
    ck_assert_int_eq(rn_cuda_tc_stages(4, 2, 16, h100_block, h100_sm), 2);
    ck_assert_int_eq(rn_cuda_tc_stages(4, 2, 16, 99 << 10, 100 << 10), 0);
    ck_assert_int_eq(rn_cuda_tc_stages(4, 4, 8, 99 << 10, 100 << 10), 2);
    for (int want = 0; want <= 6; want++)
        for (int rounds = 0; rounds <= 9; rounds++)
            for (int warps = 1; warps <= RN_CUDA_TC_WARPS_MAX; warps++) {
                int p = rn_cuda_tc_stages(want, rounds, warps, h100_block, h100_sm);
                size_t per = (size_t)warps * RN_CUDA_TC_STAGE_BYTES;
                if (want == 0) {
                    ck_assert_int_eq(p, 0);
                    continue;
                }
                ck_assert_msg(p == 0 || (p >= 2 && p <= RN_CUDA_TC_STAGES_MAX), "%d stages", p);
                ck_assert_int_eq(p == 0, 2 * per > h100_block);
                if (p > 2) {
                    ck_assert_int_le(p, want);
                    ck_assert_int_le(p, rounds);
                    ck_assert_uint_le(2 * ((size_t)p * per + RN_CUDA_SMEM_RESERVED), h100_sm);
                }
            }
}
END_TEST

/* The tensor-core GEMV's k split: every k of the input width has one warp,
 * no warp is empty, warps take whole 32-k blocks, at most the cap; the
 * share shrinks only while the grid has too few warps, and not below 64. */
START_TEST(test_cuda_tc_plan_covers_the_width)
{
    static const int widths[] = {8, 64, 256, 264, 520, 2048, 2816, 4096, 8192, 65536};
    static const long grids[] = {1, 16, 128, 384, 4000};
    for (size_t i = 0; i < sizeof widths / sizeof widths[0]; i++)
        for (size_t b = 0; b < sizeof grids / sizeof grids[0]; b++)
            for (int cap = 1; cap <= RN_CUDA_TC_WARPS_MAX; cap *= 2) {
                int in = widths[i];
                rn_cuda_tc_shape s = rn_cuda_tc_plan(in, grids[b], 132, cap, 0);
                ck_assert_int_ge(s.warps, 1);
                ck_assert_int_le(s.warps, cap);
                ck_assert_int_eq(s.k_per_warp % RN_TC_KBLOCK, 0);
                ck_assert_msg((long)s.warps * s.k_per_warp >= in, "in %d: %d x %d short", in,
                              s.warps, s.k_per_warp);
                ck_assert_msg((long)(s.warps - 1) * s.k_per_warp < in, "in %d: an empty warp", in);
                int fit = ((in + cap - 1) / cap + RN_TC_KBLOCK - 1) / RN_TC_KBLOCK * RN_TC_KBLOCK;
                ck_assert_int_le(s.k_per_warp,
                                 fit > RN_CUDA_TC_K_PER_WARP ? fit : RN_CUDA_TC_K_PER_WARP);
                if (grids[b] * s.warps < RN_CUDA_TC_WARPS_PER_SM * 132 && s.k_per_warp > 64 &&
                    s.warps < cap)
                    ck_assert_msg((in + s.k_per_warp / 2 - 1) / (s.k_per_warp / 2) > cap,
                                  "in %d, %ld blocks, cap %d: %d warps of %d k, room for more", in,
                                  grids[b], cap, s.warps, s.k_per_warp);
            }
    /* the 1.3B preset on 132 SMs: q/k/v/g at 16 rows, o, down, o at 64 rows */
    rn_cuda_tc_shape q = rn_cuda_tc_plan(2048, 384, 132, 16, 0);
    ck_assert(q.warps == 8 && q.k_per_warp == 256);
    rn_cuda_tc_shape o = rn_cuda_tc_plan(4096, 128, 132, 16, 0);
    ck_assert(o.warps == 16 && o.k_per_warp == 256);
    ck_assert_int_eq(rn_cuda_tc_plan(2816, 128, 132, 16, 0).warps, 11);
    rn_cuda_tc_shape o64 = rn_cuda_tc_plan(4096, 128, 132, 8, 0);
    ck_assert(o64.warps == 8 && o64.k_per_warp == 512);
    /* a small grid takes more, shorter warps */
    rn_cuda_tc_shape small = rn_cuda_tc_plan(2048, 16, 132, 16, 0);
    ck_assert(small.warps == 16 && small.k_per_warp == 128);
    ck_assert(rn_cuda_tc_fits(RN_DT_BF16, 2048) && rn_cuda_tc_fits(RN_DT_F16, 520));
    ck_assert(!rn_cuda_tc_fits(RN_DT_F32, 2048) && !rn_cuda_tc_fits(RN_DT_BF16, 130));
}
END_TEST

/* A launch shape asked for (RETNET_CUDA_TC_KPW, RETNET_CUDA_TC_GROUPS) is
 * the one given, rounded to whole 32-k blocks, cut at the width, widened
 * where the warps' cap would leave part of it uncovered, and never halved
 * for a small grid; groups of 1 or 2 are taken as asked, anything else
 * leaves the plan's. */
START_TEST(test_cuda_tc_plan_takes_a_shape_asked_for)
{
    rn_cuda_tc_shape q = rn_cuda_tc_plan(2048, 384, 132, 16, 512);
    ck_assert(q.warps == 4 && q.k_per_warp == 512);
    q = rn_cuda_tc_plan(2048, 384, 132, 16, 1000);
    ck_assert(q.warps == 2 && q.k_per_warp == 1024);
    q = rn_cuda_tc_plan(2048, 16, 132, 16, 256); /* the plan would halve it */
    ck_assert(q.warps == 8 && q.k_per_warp == 256);
    q = rn_cuda_tc_plan(4096, 128, 132, 8, 256); /* 8 warps cover 512 each */
    ck_assert(q.warps == 8 && q.k_per_warp == 512);
    q = rn_cuda_tc_plan(264, 128, 132, 16, 4096);
    ck_assert(q.warps == 1 && q.k_per_warp == 288);
    for (int in = 8; in <= 8192; in = in * 3 + 8)
        for (int kpw = 1; kpw <= 5000; kpw = kpw * 5 + 3) {
            rn_cuda_tc_shape s = rn_cuda_tc_plan(in, 64, 132, 16, kpw);
            ck_assert_int_eq(s.k_per_warp % RN_TC_KBLOCK, 0);
            ck_assert(s.warps >= 1 && s.warps <= 16);
            ck_assert_msg((long)s.warps * s.k_per_warp >= in && (s.warps - 1) * s.k_per_warp < in,
                          "in %d, kpw %d: %d warps of %d", in, kpw, s.warps, s.k_per_warp);
        }
    size_t many = (size_t)16 * 2 * 132, few = 100;
    ck_assert_int_eq(rn_cuda_tc_groups(many, 132, 0), 2);
    ck_assert_int_eq(rn_cuda_tc_groups(few, 132, 0), 1);
    ck_assert_int_eq(rn_cuda_tc_groups(many, 132, 1), 1);
    ck_assert_int_eq(rn_cuda_tc_groups(few, 132, 2), 2);
    ck_assert_int_eq(rn_cuda_tc_groups(many, 132, 3), 2);
    ck_assert_int_eq(rn_cuda_tc_groups(few, 132, 3), 1);
}
END_TEST

/* The tensor-core path takes a model only when every matrix it would read
 * fits, the LM head included; absent ones (no gate without GLU) do not
 * count. */
START_TEST(test_cuda_tc_weights_fit_every_matrix)
{
    rn_layer_weights layer;
    rn_weights w;
    one_layer_model(&w, &layer);
    rn_tensor *mats[] = {&layer.q_w, &layer.k_w,  &layer.v_w,    &layer.g_w,
                         &layer.o_w, &layer.up_w, &layer.down_w, &w.lm_head_w};
    for (size_t i = 0; i < sizeof mats / sizeof mats[0]; i++)
        bf16_matrix(mats[i], 16, 64);
    ck_assert(rn_cuda_tc_weights_fit(&w, 1)); /* the gate is absent */
    const rn_tensor *m[RN_CUDA_MATRICES];
    rn_cuda_layer_matrices(&w, 0, m);
    ck_assert_ptr_eq(m[0], &layer.q_w);
    ck_assert_ptr_eq(m[8], &w.lm_head_w);
    w.lm_head_w.dtype = RN_DT_F32;
    ck_assert(!rn_cuda_tc_weights_fit(&w, 1));
    w.lm_head_w.dtype = RN_DT_F16;
    ck_assert(rn_cuda_tc_weights_fit(&w, 1));
    layer.down_w.shape[1] = 60; /* rows not on 16 bytes */
    ck_assert(!rn_cuda_tc_weights_fit(&w, 1));
    ck_assert(rn_cuda_tc_weights_fit(&w, 0));
}
END_TEST

/* mma.m16n8k16 as the PTX ISA's fragment tables define it: lane (g, t)'s
 * A registers r hold a_{2r}, a_{2r+1}; a_i sits at row g (i in 0,1,4,5) or
 * g + 8, column 2t + (i & 1) (+ 8 for i >= 4); B register r holds b_{2r},
 * b_{2r+1} at row 2t + (i & 1) (+ 8 for i >= 2), column g.  d += A B. */
static void ptx_mma(double d[16][8], const float a[32][4][2], const float b[32][2][2])
{
    double A[16][16], B[16][8];
    for (int lane = 0; lane < 32; lane++) {
        int g = lane / 4, t = lane % 4;
        for (int i = 0; i < 8; i++) {
            int row = (i % 4) < 2 ? g : g + 8, col = 2 * t + (i & 1) + (i >= 4 ? 8 : 0);
            A[row][col] = a[lane][i / 2][i % 2];
        }
        for (int i = 0; i < 4; i++)
            B[2 * t + (i & 1) + (i >= 2 ? 8 : 0)][g] = b[lane][i / 2][i % 2];
    }
    for (int m = 0; m < 16; m++)
        for (int n = 0; n < 8; n++)
            for (int k = 0; k < 16; k++)
                d[m][n] += A[m][k] * B[k][n];
}

/* The kernel's fragments (tc_layout.h), built the way gemv_tc_kernel builds
 * them from each lane's 8 contiguous values, fed through the tables' mma
 * over one 32-k block: every C position a lane stores (rn_tc_c_row/col)
 * holds the dot product of that input row and that feature's row. */
START_TEST(test_cuda_tc_fragments_compute_dot_products)
{
    float X[16][RN_TC_KBLOCK], W[8][RN_TC_KBLOCK];
    uint32_t r = 12345;
    for (int i = 0; i < 16 * RN_TC_KBLOCK; i++) {
        r = r * 1664525u + 1013904223u;
        X[i / RN_TC_KBLOCK][i % RN_TC_KBLOCK] = (float)((int)(r >> 24) - 128);
        if (i < 8 * RN_TC_KBLOCK)
            W[i / RN_TC_KBLOCK][i % RN_TC_KBLOCK] = (float)((int)((r >> 8) & 255) - 128);
    }
    double D[16][8] = {{0}};
    for (int s = 0; s < 2; s++) {
        float a[32][4][2], b[32][2][2];
        for (int lane = 0; lane < 32; lane++) {
            int g = lane / 4, lk = rn_tc_lane_k(lane);
            for (int q = 0; q < 4; q++) /* A register q from input row blk */
                for (int e = 0; e < 2; e++)
                    a[lane][q][e] =
                        X[g + 8 * rn_tc_a_rowblk(q)][lk + 2 * rn_tc_word(s, rn_tc_a_half(q)) + e];
            ck_assert_int_eq(rn_tc_a_row(lane, 1), g + 8);
            for (int q = 0; q < 2; q++)
                for (int e = 0; e < 2; e++)
                    b[lane][q][e] = W[g][lk + 2 * rn_tc_word(s, q) + e];
        }
        ptx_mma(D, a, b);
    }
    for (int lane = 0; lane < 32; lane++)
        for (int j = 0; j < 4; j++) {
            /* the tables' C position of value j, and what the kernel stores it as */
            int prow = lane / 4 + (j >= 2 ? 8 : 0), pcol = 2 * (lane % 4) + (j & 1);
            int row = rn_tc_c_row(lane, j), col = rn_tc_c_col(lane, j);
            double want = 0;
            for (int k = 0; k < RN_TC_KBLOCK; k++)
                want += (double)X[row][k] * (double)W[col][k];
            ck_assert_msg(D[prow][pcol] == want, "lane %d value %d: %g, want %g", lane, j,
                          D[prow][pcol], want);
        }
}
END_TEST

Suite *cuda_plan_suite(void)
{
    Suite *s = suite_create("cuda_plan");
    TCase *tc = tcase_create("plan");
    tcase_add_test(tc, test_cuda_plan_state_bytes_are_the_state);
    tcase_add_test(tc, test_cuda_plan_bf16_states_halve_the_pool);
    tcase_add_test(tc, test_cuda_plan_buffers_cover_chunk_and_batch);
    tcase_add_test(tc, test_cuda_step_in_packs_each_batch);
    tcase_add_test(tc, test_cuda_plan_rejects_bad_sizes);
    tcase_add_test(tc, test_cuda_plan_slots_for_budget);
    tcase_add_test(tc, test_cuda_step_plan_covers_every_column);
    tcase_add_test(tc, test_cuda_slots_for_device);
    tcase_add_test(tc, test_cuda_plan_pieces_hold_their_states);
    tcase_add_test(tc, test_cuda_plan_default_pieces_batch_long_chunks);
    tcase_add_test(tc, test_cuda_tc_plan_covers_the_width);
    tcase_add_test(tc, test_cuda_tc_plan_takes_a_shape_asked_for);
    tcase_add_test(tc, test_cuda_tc_loads_apply);
    tcase_add_test(tc, test_cuda_tc_stages_fit);
    tcase_add_test(tc, test_cuda_tc_stream_splits_evenly);
    tcase_add_test(tc, test_cuda_tc_stream_needs_grow_with_groups);
    tcase_add_test(tc, test_cuda_tc_stream_bytes_cover_each_launch);
    tcase_add_test(tc, test_cuda_ret_parts_fill_one_wave);
    tcase_add_test(tc, test_cuda_tc_weights_fit_every_matrix);
    tcase_add_test(tc, test_cuda_tc_fragments_compute_dot_products);
    suite_add_tcase(s, tc);
    return s;
}
