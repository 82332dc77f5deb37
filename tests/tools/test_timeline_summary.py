#!/usr/bin/env python3
"""tools/timeline_summary.py on timelines whose answer is known: the
attribution of overlapping kernels, idle gaps, per-step division and the
CSV as `retnet bench-cuda --timeline` writes it (quoted names with commas)."""
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tools"))
import timeline_summary as ts  # noqa: E402


def load_rows(rows, *loaders):
    """rows written as the bench's CSV, read back by each loader (one
    result, or a tuple of them)."""
    with tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False) as f:
        f.write("\n".join(rows) + "\n")
    try:
        out = tuple(load(f.name) for load in loaders)
    finally:
        os.unlink(f.name)
    return out[0] if len(out) == 1 else out


class Attribute(unittest.TestCase):
    def test_oldest_running_kernel_owns_the_time(self):
        # B starts under A (a dependent launch) and outlives it; C lies
        # wholly under B; then a 5 ns gap before D
        ks = [(0, 10, "A"), (2, 15, "B"), (3, 12, "C"), (20, 30, "D")]
        owned, idle, gaps, span = ts.attribute(ks)
        self.assertEqual(owned, {"A": 10, "B": 5, "C": 0, "D": 10})
        self.assertEqual((idle, gaps, span), (5, 1, 30))
        self.assertEqual(sum(owned.values()) + idle, span)

    def test_order_of_records_does_not_matter(self):
        ks = [(20, 30, "D"), (3, 12, "C"), (0, 10, "A"), (2, 15, "B")]
        self.assertEqual(ts.attribute(ks)[0], {"A": 10, "B": 5, "C": 0, "D": 10})

    def test_same_start_goes_to_the_first_listed(self):
        owned, idle, _, span = ts.attribute([(0, 4, "X"), (0, 6, "Y")])
        self.assertEqual(owned, {"X": 4, "Y": 2})
        self.assertEqual((idle, span), (0, 6))

    def test_empty(self):
        self.assertEqual(ts.attribute([]), ({}, 0, 0, 0))


class Neighbours(unittest.TestCase):
    def test_gaps_by_what_lies_either_side(self):
        # ours, 5 ns, a GEMM, 3 ns, ours, 2 ns, ours; the GEMM outlasts a
        # kernel that started under it, so it is the one before the 3 ns
        ks = [(0, 10, "norm_vec_kernel"), (15, 30, "sm90_xmma_gemm_bf16"),
              (16, 20, "qk_kernel<1>"), (33, 40, "ret_fused_kernel"),
              (42, 50, "norm_vec_kernel")]
        near = ts.idle_by_neighbours(ks)
        self.assertEqual(near, {("ours", "GEMM"): [5, 1], ("GEMM", "ours"): [3, 1],
                                ("ours", "ours"): [2, 1]})
        self.assertEqual(sum(v[0] for v in near.values()), ts.attribute(ks)[1])

    def test_copies_and_none(self):
        self.assertEqual(ts.idle_by_neighbours([]), {})
        ks = [(0, 4, "memcpy HtoD"), (6, 9, "gemv_split_kernel")]
        self.assertEqual(ts.idle_by_neighbours(ks), {("copy", "ours"): [2, 1]})

    def test_summary_line(self):
        ks = [(0, 10_000, "norm_vec_kernel"), (12_000, 20_000, "nvjet_tst_gemm")]
        text = "\n".join(ts.summarize("prefill-512-c1024", ks, 5))
        self.assertIn("idle between: ours->GEMM 2.0 us (1 gaps, 2.00 us each)", text)


class Csv(unittest.TestCase):
    def test_reads_the_bench_format_and_divides_by_steps(self):
        rows = ["tag,kernel,start_ns,end_ns,grid,block,regs,graph_node",
                'decode-b1-s2,"void gemv_split_kernel<__nv_bfloat16, 1>",0,4000,64x1x1,64x1x1,40,7',
                'decode-b1-s2,"void norm_vec_kernel",5000,6000,1x1x1,256x1x1,30,8',
                'decode-b1-s2,"void gemv_split_kernel<__nv_bfloat16, 1>",6000,10000,64x1x1,64x1x1,40,9',
                'prefill-512-c512,"void norm_vec_kernel",0,100,1x1x1,256x1x1,30,0']
        runs = load_rows(rows, ts.load)
        self.assertEqual(sorted(runs), ["decode-b1-s2", "prefill-512-c512"])
        self.assertEqual(runs["decode-b1-s2"][0][2], "gemv_split_kernel<__nv_bfloat16, 1>")
        self.assertEqual(ts.steps_of("decode-b1-s2"), 2)
        self.assertEqual(ts.steps_of("prefill-512-c512"), 1)
        self.assertEqual(ts.steps_of("decode-top-b1-s8"), 8)  # the server's sampled steps
        self.assertEqual(ts.steps_of("decode-picks-b16-s4"), 4)
        self.assertEqual(ts.steps_of("decode-other-b1-s8"), 1)
        bench = {"weight_bytes": 8e6, "copy_GBps": 4000.0}
        text = "\n".join(ts.summarize("decode-b1-s2", runs["decode-b1-s2"], 12, bench))
        # 10 us over 2 steps; 1 us idle in 1 gap; GEMVs own 8 us, 4 a step
        self.assertIn("decode-b1-s2: 5.0 us a step", text)
        self.assertIn("idle 0.5 us in 0.5 gaps (1.00 us each)", text)
        # 8 MB a step in 4 us: 2,000 GB/s, half the copy rate
        self.assertIn("the weights at 2,000 GB/s, 50%", text)
        # a step: 4 us of GEMV (one launch), 0.5 us of norm (half a launch:
        # one in the two steps), 0.5 us idle
        self.assertIn("by class: GEMV 4.0 us (1), norm 0.5 us (0.5), idle 0.5 us", text)

    def test_copies_are_device_work_and_calls_explain_the_gaps(self):
        # a step: a kernel, a 1 us copy back, then 4 us idle during which
        # the host synchronises (1 us), runs its own code (1 us) and
        # launches the next graph (2 us, a copy call nested in it for the
        # last 1 us); the calls before the run are not in a gap
        rows = ["tag,kernel,start_ns,end_ns,grid,block,regs,graph_node,kind,bytes",
                'decode-b1-s1,"cudaGraphLaunch",0,500,0x0x0,0x0x0,0,0,api,0',
                'decode-b1-s1,"void gemv_kernel",1000,5000,1x1x1,32x1x1,40,1,kernel,0',
                'decode-b1-s1,"memcpy DtoH",5000,6000,0x0x0,0x0x0,0,0,copy,4096',
                'decode-b1-s1,"cudaStreamSynchronize",4000,7000,0x0x0,0x0x0,0,0,api,0',
                'decode-b1-s1,"cudaGraphLaunch",8000,10500,0x0x0,0x0x0,0,0,api,0',
                'decode-b1-s1,"cudaMemcpyAsync",9000,10000,0x0x0,0x0x0,0,0,api,0',
                'decode-b1-s1,"void gemv_kernel",10000,12000,1x1x1,32x1x1,40,1,kernel,0']
        runs, calls = load_rows(rows, ts.load, ts.load_calls)
        self.assertEqual([r[2] for r in runs["decode-b1-s1"]],
                         ["gemv_kernel", "memcpy DtoH", "gemv_kernel"])
        self.assertEqual(len(calls["decode-b1-s1"]), 4)
        self.assertEqual(ts.idle_gaps(runs["decode-b1-s1"]), [(6000, 10000)])
        by = ts.idle_by_call(ts.idle_gaps(runs["decode-b1-s1"]), calls["decode-b1-s1"])
        self.assertEqual(by, {"cudaStreamSynchronize": 1000, None: 1000, "cudaGraphLaunch": 1000,
                              "cudaMemcpyAsync": 1000})
        text = "\n".join(ts.summarize("decode-b1-s1", runs["decode-b1-s1"], 12, None,
                                       calls["decode-b1-s1"]))
        self.assertIn("by class: GEMV 6.0 us (2), copy 1.0 us (1), idle 4.0 us", text)
        self.assertIn("idle 4.0 us against the host's calls: cudaGraphLaunch 1.0, "
                      "cudaMemcpyAsync 1.0, cudaStreamSynchronize 1.0, outside any call 1.0", text)

    def test_classes(self):
        self.assertEqual(ts.class_of("gemv_norm_kernel<__nv_bfloat16, 1>"), "GEMV")
        self.assertEqual(ts.class_of("norm_vec_kernel"), "norm")
        self.assertEqual(ts.class_of("ret_step_kernel<4, float>"), "recurrent step")
        self.assertEqual(ts.class_of("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64"),
                         "cuBLAS GEMM")
        self.assertEqual(ts.class_of("embed_kernel"), "other")
        self.assertEqual(ts.class_of("memcpy HtoD"), "copy")
        self.assertEqual(ts.class_of("memset"), "copy")


if __name__ == "__main__":
    unittest.main()
