#!/usr/bin/env python3
"""bench/cuda.sh against a stand-in for `retnet` (no GPU needed): every run
of BENCH_CUDA=fast reaches bench-cuda with the settings its name says,
and BENCH_CUDA_BUDGET starts nothing once spent (runs, timelines), lists
what it left in the run's order, and still ends with the comparison, exit
status 0."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")

# What `retnet` answers: cuda-info, random (a model directory), and
# bench-cuda with a result shaped as the real one's, its tuning the
# RETNET_CUDA_* variables it was given.  STUB_SLOW_BATCHES: the --batches
# argument whose run sleeps 6 s.
STUB = r'''#!/usr/bin/env python3
import json, os, sys, time
cmd = sys.argv[1]
if cmd == "cuda-info":
    print("stand-in device")
elif cmd == "random":
    os.makedirs(sys.argv[-1], exist_ok=True)
    open(os.path.join(sys.argv[-1], "config.json"), "w").write("{}")
elif cmd == "bench-cuda":
    a = sys.argv[3:]
    arg = lambda k, d: a[a.index(k) + 1] if k in a else d
    if arg("--batches", "") == os.environ.get("STUB_SLOW_BATCHES"):
        time.sleep(6)
    if "--bf16-accuracy" in a:
        print(json.dumps({"model": sys.argv[2], "chunk": int(arg("--chunk", "256")),
                          "bf16_accuracy": {"prompt": 512, "windows": []}}))
        sys.exit(0)
    tuning = {k: v for k, v in os.environ.items() if k.startswith("RETNET_CUDA_")}
    print(json.dumps({
        "tuning": tuning, "chunk": int(arg("--chunk", "1024")), "state_dtype": "f32",
        "device": "stand-in", "copy_GBps": 1000.0, "gemm_bf16_TFLOPs": 100.0,
        "state_bytes": 2 ** 20, "sessions_per_GiB": 1024.0,
        "decode": [{"batch": int(b), "tok_s": 10.0, "roofline_tok_s": 20.0, "of_roofline": 0.5}
                   for b in arg("--batches", "1").split(",") if b],
        "prefill": [{"prompt": int(p), "tok_s": 100.0, "TFLOPs": 1.0, "of_gemm": 0.01}
                    for p in arg("--prompts", "512").split(",") if p]}))
else:
    sys.exit("stand-in retnet: unknown command " + cmd)
'''


# Every run of BENCH_CUDA=fast, in its order (docs/benchmarks.md).
FAST_RUNS = [
    "ours", "ours-c4096", "ours-gemvgn", "ours-gemvgn-l2fork", "ours-retnarrow",
    "ours-retnarrow-c4096", "ours-retnorm", "ours-retnorm-c4096", "ours-retnorm-nosplit",
    "ours-l2fork", "ours-tcstream", "ours-tckpw128", "ours-tckpw512", "ours-tckpw1024",
    "ours-tcgroups1", "ours-tcgroups1-kpw512", "ours-noretsplit", "ours-retsplit2",
    "ours-lttune-p512", "ours-noprefillpdl", "ours-nohalfcopies", "ours-noltpairs",
    "ours-residgemm-c4096",
]
# Then, not a rate to compare (no ours* name): bf16 states' accuracy.
FAST_AFTER = ["accuracy-bf16-states"]

# The fast run's timelines, in their order, before the peer's processes.
TIMELINES = [
    "timeline", "timeline-p512", "timeline-b1-gemvgn", "timeline-retnarrow", "timeline-retnorm",
    "timeline-b1-l2fork", "timeline-b16-tcstream", "timeline-b16-kpw512",
    "timeline-p512-noretsplit", "timeline-p2048-c1024",
]


class BenchCuda(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp()
        self.retnet = os.path.join(self.dir, "retnet")
        with open(self.retnet, "w") as f:
            f.write(STUB)
        os.chmod(self.retnet, 0o755)
        self.out = os.path.join(self.dir, "out")

    def tearDown(self):
        shutil.rmtree(self.dir)

    def bench(self, **env):
        # the caller's settings would reach every run
        e = {k: v for k, v in os.environ.items()
             if not k.startswith(("RETNET_CUDA_", "BENCH_CUDA", "PEER_"))}
        e.update(BENCH_CUDA="fast", BENCH_CUDA_PART="ours", BENCH_CUDA_OUT=self.out,
                 BENCH_CUDA_MODEL=os.path.join(self.dir, "model"), PYTHON=sys.executable)
        e.update(env)
        return subprocess.run(["sh", "bench/cuda.sh", self.retnet], cwd=ROOT, env=e,
                              capture_output=True, text=True, timeout=300)

    def result(self, name):
        with open(os.path.join(self.out, name + ".json")) as f:
            return json.load(f)

    def test_each_run_gets_its_settings(self):
        r = self.bench()
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertNotIn("skipped", r.stdout)
        ran = sorted(f[:-5] for f in os.listdir(self.out) if f.startswith("ours") and f.endswith(".json"))
        self.assertEqual(ran, sorted(FAST_RUNS))
        self.assertIn("bf16_accuracy", self.result("accuracy-bf16-states"))
        self.assertEqual(self.result("ours")["tuning"], {})
        self.assertEqual(self.result("ours-c4096")["chunk"], 4096)
        for name, var, value in [("ours-gemvgn", "RETNET_CUDA_GEMV_GROUPNORM", "1"),
                                 ("ours-retnarrow", "RETNET_CUDA_RET_WIDE", "0"),
                                 ("ours-retnorm-nosplit", "RETNET_CUDA_RET_SPLIT", "0"),
                                 ("ours-l2fork", "RETNET_CUDA_L2_FORK", "16"),
                                 ("ours-tcstream", "RETNET_CUDA_TC_STREAM", "1"),
                                 ("ours-tckpw512", "RETNET_CUDA_TC_KPW", "512"),
                                 ("ours-noretsplit", "RETNET_CUDA_RET_SPLIT", "0"),
                                 ("ours-lttune-p512", "RETNET_CUDA_LT_TUNE", "512")]:
            self.assertEqual(self.result(name)["tuning"].get(var), value, name)
        # the comparison saw the switches against the defaults of the run
        with open(os.path.join(self.out, "compare.txt")) as f:
            self.assertIn("GEMV_GROUPNORM=1", f.read())

    def test_budget_leaves_the_rest_in_order(self):
        # an earlier run's result of a run this one skips: not to be compared
        os.makedirs(self.out)
        with open(os.path.join(self.out, "ours-gemvgn.json"), "w") as f:
            f.write('{"tuning": {}, "decode": [], "prefill": []}')
        # the first run starts well within 5 s and ends after them
        r = self.bench(BENCH_CUDA_BUDGET="5", STUB_SLOW_BATCHES="1,2,4,8,16,64,256")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertTrue(os.path.exists(os.path.join(self.out, "ours.json")))
        self.assertFalse(os.path.exists(os.path.join(self.out, "ours-c4096.json")))
        self.assertFalse(os.path.exists(os.path.join(self.out, "ours-gemvgn.json")))
        line = [ln for ln in r.stdout.splitlines() if ln.startswith("bench-cuda: skipped")]
        self.assertEqual(len(line), 1, r.stdout)
        self.assertEqual(line[0].split(":", 2)[2].split(), FAST_RUNS[1:] + FAST_AFTER)
        self.assertTrue(os.path.exists(os.path.join(self.out, "compare.txt")))

    def test_rest_under_a_spent_budget(self):
        r = self.bench(BENCH_CUDA_PART="rest", BENCH_CUDA_BUDGET="0")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        line = [ln for ln in r.stdout.splitlines() if ln.startswith("bench-cuda: skipped")]
        self.assertEqual(len(line), 1, r.stdout)
        self.assertEqual(line[0].split(":", 2)[2].split()[:len(TIMELINES)], TIMELINES)
        self.assertTrue(os.path.exists(os.path.join(self.out, "compare.txt")))

    def test_budget_must_be_seconds(self):
        for bad in ("5m", "-1", "1" * 10):
            r = self.bench(BENCH_CUDA_BUDGET=bad)
            self.assertEqual(r.returncode, 2, bad)
            self.assertIn("whole number of seconds", r.stderr)
            self.assertFalse(os.path.exists(os.path.join(self.out, "ours.json")))


if __name__ == "__main__":
    unittest.main()
