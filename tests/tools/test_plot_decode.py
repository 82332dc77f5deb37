#!/usr/bin/env python3
"""tools/plot_decode.py's summary table on results whose figures are known:
the on-device decode rates and the prefill's products columns where a
result has them, a dash where an older build's result does not."""
import contextlib
import io
import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tools"))
import plot_decode as pd  # noqa: E402


def ours(prefill):
    return {"device": "GPU", "copy_GBps": 3000.0, "gemm_bf16_TFLOPs": 700.0,
            "state_bytes": 96 * 2**20, "sessions_per_GiB": 10.7,
            "decode": [{"batch": 1, "tok_s": 700.0, "roofline_tok_s": 1000.0,
                        "of_roofline": 0.7, "tok_s_greedy_on_device": 720.0,
                        "tok_s_sampled_on_device": 710.0}],
            "prefill": prefill}


def table(result, peer=None):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        pd.summary(result, peer or {})
    return out.getvalue().splitlines()


class Summary(unittest.TestCase):
    def prefill_row(self, lines, prompt):
        rows = [ln for ln in lines if ln.split() and ln.split()[0] == str(prompt)]
        self.assertEqual(len(rows), 1, lines)
        return rows[0].split()

    def test_products_columns(self):
        lines = table(ours([{"prompt": 512, "tok_s": 100000.0, "TFLOPs": 260.0, "of_gemm": 0.378,
                             "products_of_gemm": 0.62, "of_products": 0.61}]),
                      {"prefill": [{"prompt": 512, "tok_s": 7500.0}]})
        row = self.prefill_row(lines, 512)
        self.assertEqual(row[3], "38%")
        self.assertEqual(row[5], "13.33x")
        self.assertEqual(row[-2:], ["62%", "61%"])

    def test_older_results_show_dashes(self):
        lines = table(ours([{"prompt": 2048, "tok_s": 1.0, "TFLOPs": 1.0, "of_gemm": 0.5}]))
        self.assertEqual(self.prefill_row(lines, 2048)[-2:], ["-", "-"])

    def test_decode_on_device_rates(self):
        row = [ln for ln in table(ours([])) if ln.split() and ln.split()[0] == "1"][0].split()
        self.assertEqual(row[-2:], ["720.0", "710.0"])


if __name__ == "__main__":
    unittest.main()
