#!/usr/bin/env python3
"""tools/bench_peer.py's merge of runs from separate processes (no GPU or
peer needed): each point's best and every run's figure, points that only
some runs have, and the command line's --merge; the prefill's
arguments for the last position's logits only; and the summary of a
profiled prefill's kernels (a Chrome trace as the PyTorch profiler
exports it)."""
import json
import os
import subprocess
import sys
import tempfile
import unittest

TOOLS = os.path.join(os.path.dirname(__file__), "..", "..", "tools")
sys.path.insert(0, TOOLS)
import bench_peer  # noqa: E402

RUN1 = {"peer": "fla", "device": "H100", "decode": [{"batch": 1, "tok_s": 14.2}],
        "prefill": [{"prompt": 512, "tok_s": 90000.0}, {"prompt": 8192, "tok_s": 179071.0}]}
RUN2 = {"peer": "fla", "device": "H100", "decode": [],
        "prefill": [{"prompt": 8192, "tok_s": 128569.0}, {"prompt": 2048, "tok_s": 150000.0}]}


class Merge(unittest.TestCase):
    def test_best_of_each_point_with_every_run(self):
        m = bench_peer.merge([RUN2, RUN1])
        self.assertEqual(m["peer"], "fla")
        self.assertEqual(m["runs"], 2)
        self.assertEqual(m["decode"], [{"batch": 1, "tok_s": 14.2, "tok_s_runs": [None, 14.2]}])
        pre = {r["prompt"]: r for r in m["prefill"]}
        self.assertEqual(pre[8192]["tok_s"], 179071.0)
        self.assertEqual(pre[8192]["tok_s_runs"], [128569.0, 179071.0])
        self.assertEqual(pre[2048]["tok_s_runs"], [150000.0, None])
        self.assertEqual(pre[512]["tok_s"], 90000.0)

    def test_one_run_is_itself(self):
        m = bench_peer.merge([RUN1])
        self.assertEqual([r["tok_s"] for r in m["prefill"]], [90000.0, 179071.0])

    def test_command_line(self):
        paths = []
        try:
            for run in (RUN1, RUN2):
                with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
                    json.dump(run, f)
                    paths.append(f.name)
            out = subprocess.run([sys.executable, os.path.join(TOOLS, "bench_peer.py"), "--merge"]
                                 + paths, capture_output=True, text=True, check=True).stdout
        finally:
            for p in paths:
                os.unlink(p)
        m = json.loads(out)
        self.assertEqual({r["prompt"]: r["tok_s"] for r in m["prefill"]},
                         {512: 90000.0, 8192: 179071.0, 2048: 150000.0})


class PrefillLogits(unittest.TestCase):
    def test_last_only_where_the_forward_takes_it(self):
        def fwd(input_ids=None, use_cache=None, logits_to_keep=0, **kwargs):
            return None
        self.assertEqual(bench_peer.prefill_kwargs(fwd), ({"logits_to_keep": 1}, "last"))

    def test_all_where_it_does_not(self):
        def fwd(input_ids=None, use_cache=None, **kwargs):
            return None
        self.assertEqual(bench_peer.prefill_kwargs(fwd), ({}, "all"))
        self.assertEqual(bench_peer.prefill_kwargs(len), ({}, "all"))


TRACE = {"traceEvents": [
    {"cat": "kernel", "name": "nvjet_tst_128x256_64x4_2x1_v_bz_coopB_TNN", "ts": 100.0, "dur": 50.0},
    {"cat": "kernel", "name": "chunk_retention_fwd_kernel_o", "ts": 160.0, "dur": 20.0},
    {"cat": "kernel", "name": "nvjet_tst_128x256_64x4_2x1_v_bz_coopB_TNN", "ts": 190.0, "dur": 40.0},
    {"cat": "kernel", "name": "layer_norm_gated_fwd_kernel", "ts": 240.0, "dur": 5.0},
    {"cat": "gpu_memcpy", "name": "Memcpy DtoD (Device -> Device)", "ts": 250.0, "dur": 2.0},
    {"cat": "kernel", "name": "triton_poi_fused_mul_0", "ts": 260.0, "dur": 3.0},
    {"cat": "cpu_op", "name": "aten::mm", "ts": 90.0, "dur": 500.0},
    {"cat": "kernel", "name": "no_duration"},
]}


class Kernels(unittest.TestCase):
    def test_classes_and_totals(self):
        k = bench_peer.kernel_summary(TRACE)
        self.assertEqual(k["kernel_us"], 120.0)  # the CPU op and the event without a time left out
        self.assertEqual(k["launches"], 6)
        self.assertEqual(k["span_us"], 163.0)
        self.assertEqual(k["classes"]["GEMM"], {"us": 90.0, "launches": 2})
        self.assertEqual(k["classes"]["retention"], {"us": 20.0, "launches": 1})
        self.assertEqual(k["classes"]["norm"], {"us": 5.0, "launches": 1})
        self.assertEqual(k["classes"]["copy"], {"us": 2.0, "launches": 1})
        self.assertEqual(k["classes"]["other"], {"us": 3.0, "launches": 1})
        self.assertEqual(list(k["classes"])[0], "GEMM")  # largest first
        self.assertEqual(k["top"][0]["us"], 90.0)
        self.assertEqual(k["top"][0]["launches"], 2)

    def test_table(self):
        text = bench_peer.kernel_table(bench_peer.kernel_summary(TRACE))
        self.assertIn("GEMM", text.splitlines()[1])
        self.assertIn("75.0%", text.splitlines()[1])
        self.assertIn("span 163.0 us", text.splitlines()[-1])

    def test_empty_trace(self):
        k = bench_peer.kernel_summary({"traceEvents": []})
        self.assertEqual((k["kernel_us"], k["launches"], k["span_us"]), (0, 0, 0.0))


if __name__ == "__main__":
    unittest.main()
