#!/usr/bin/env python3
"""PyTorch peer for the sampler benchmark: rows of logits, and the time per token of
sampling them the way Hugging Face transformers' `generate` does on one CPU thread.

    build/venv/bin/python tools/bench_sampler.py ROWS_FILE [--vocab 32000] [--rows 64]

Writes ROWS_FILE (fp32, little endian, rows of --vocab) from a fixed seed -- half of the
rows peaked like a trained model's (a few ids far above a spread of the rest), half flat
(every id within a few units: the draw reaches deep) -- then times, at temperature 1 with
top-p 1 and 0.9, softmax and torch.multinomial per row, with top-p as
TopPLogitsWarper applies it (sort, softmax, cumulative sum, mask, scatter).  `retnet
sampbench ROWS_FILE VOCAB` times the C sampler on the same rows.  The best of 3 passes.
One JSON object on stdout: {"peer": ..., "p1_us": ..., "p0.9_us": ...}.
"""
import argparse
import json
import sys
import time

sys.dont_write_bytecode = True

import numpy as np  # noqa: E402
import torch  # noqa: E402


def make_rows(vocab, rows, seed=1234):
    rng = np.random.default_rng(seed)
    out = rng.normal(0.0, 1.0, size=(rows, vocab)).astype(np.float32)
    for r in range(rows // 2):  # peaked: a handful of ids far above the rest
        out[r] *= 2.0
        out[r, rng.choice(vocab, size=8, replace=False)] += 14.0
    return out


def sample(logits, top_p, gen):
    if top_p < 1.0:
        sorted_logits, sorted_idx = torch.sort(logits, descending=False)
        cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        remove = cum <= (1 - top_p)
        remove[..., -1:] = False
        logits = logits.masked_fill(remove.scatter(0, sorted_idx, remove), -float("inf"))
    return torch.multinomial(logits.softmax(dim=-1), 1, generator=gen)


def time_peer(rows, top_p):
    best = None
    for rep in range(3):
        gen = torch.Generator().manual_seed(rep)
        t0 = time.perf_counter()
        for r in rows:
            sample(r, top_p, gen)
        us = (time.perf_counter() - t0) * 1e6 / len(rows)
        best = us if best is None or us < best else best
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("rows_file")
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--rows", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = make_rows(args.vocab, args.rows)
    data.astype("<f4").tofile(args.rows_file)
    rows = [torch.from_numpy(r.copy()) for r in data]
    print(json.dumps({"peer": "torch %s" % torch.__version__,
                      "p1_us": round(time_peer(rows, 1.0), 2),
                      "p0.9_us": round(time_peer(rows, 0.9), 2)}))


if __name__ == "__main__":
    main()
