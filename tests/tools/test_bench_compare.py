#!/usr/bin/env python3
"""tools/bench_compare.py on a directory of results whose comparisons are
known: baselines by chunk and state dtype, points without a baseline, and a
failed run's empty file."""
import json
import os
import shutil
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tools"))
import bench_compare as bc  # noqa: E402


def result(chunk, tuning=None, decode=(), prefill=(), state="f32"):
    return {"tuning": tuning or {}, "chunk": chunk, "state_dtype": state,
            "decode": [{"batch": b, "tok_s": t} for b, t in decode],
            "prefill": [{"prompt": p, "tok_s": t} for p, t in prefill]}


class Compare(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp()
        files = {
            "ours": result(1024, decode=[(1, 100.0), (16, 400.0)], prefill=[(2048, 1000.0)]),
            "ours-c4096": result(4096, prefill=[(8192, 2000.0)]),
            "ours-bf16-states": result(1024, decode=[(16, 500.0)], state="bf16"),
            "ours-ring": result(1024, {"RETNET_CUDA_TC_ASYNC": "1"},
                                decode=[(8, 300.0), (16, 440.0)]),
            "ours-copies-c4096": result(4096, {"RETNET_CUDA_QK_HALF": "1",
                                               "RETNET_CUDA_V_HALF": "1"},
                                        prefill=[(8192, 2100.0)]),
        }
        for name, r in files.items():
            with open(os.path.join(self.dir, name + ".json"), "w") as f:
                json.dump(r, f)
        open(os.path.join(self.dir, "ours-failed.json"), "w").close()

    def tearDown(self):
        shutil.rmtree(self.dir)

    def test_each_switch_against_its_chunks_defaults(self):
        rows = bc.compare(bc.load_runs(self.dir))
        by = {(r[0], r[2]): r for r in rows}
        self.assertEqual(len(rows), 3)
        ring16 = by[("ours-ring", "decode 16")]
        self.assertEqual((ring16[1], ring16[3], ring16[4]), ("TC_ASYNC=1", 400.0, 440.0))
        self.assertAlmostEqual(ring16[5], 0.10)
        # no default run measured batch 8: listed, not dropped
        self.assertEqual(by[("ours-ring", "decode 8")][3], None)
        self.assertEqual(by[("ours-ring", "decode 8")][5], None)
        # 4096-token chunks against ours-c4096, not against ours
        copies = by[("ours-copies-c4096", "prefill 8192")]
        self.assertEqual(copies[1], "QK_HALF=1 V_HALF=1")
        self.assertAlmostEqual(copies[5], 0.05)

    def test_on_device_rates_compare_too(self):
        ours = result(1024, decode=[(1, 100.0)])
        ours["decode"][0]["tok_s_sampled_on_device"] = 90.0
        other = result(1024, {"RETNET_CUDA_GEMV_PRENORM": "0"}, decode=[(1, 101.0)])
        other["decode"][0]["tok_s_sampled_on_device"] = 99.0
        other["decode"][0]["tok_s_greedy_on_device"] = 102.0
        rows = bc.compare({"ours": ours, "ours-noprenorm": other})
        by = {r[2]: r for r in rows}
        self.assertAlmostEqual(by["decode 1"][5], 0.01)
        self.assertAlmostEqual(by["decode 1 sampled"][5], 0.10)
        # the baseline did not measure greedy on the device: listed, no change
        self.assertEqual(by["decode 1 greedy"][3], None)

    def test_state_dtype_keeps_its_own_baseline(self):
        base = bc.baselines(bc.load_runs(self.dir))
        self.assertEqual(base[(1024, "f32")]["decode 16"], 400.0)
        self.assertEqual(base[(1024, "bf16")]["decode 16"], 500.0)

    def test_failed_run_is_skipped(self):
        self.assertNotIn("ours-failed", bc.load_runs(self.dir))


if __name__ == "__main__":
    unittest.main()
