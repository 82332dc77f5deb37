#!/usr/bin/env python3
"""Each switch `make bench-cuda` tried against the defaults of the same run.

    python3 tools/bench_compare.py build/bench/cuda

Reads the `retnet bench-cuda` results in the directory (ours*.json: one JSON
object each, as bench/cuda.sh writes them).  A result with no RETNET_CUDA_*
settings ("tuning" empty) is a baseline for its chunk length and state dtype;
every other result is compared with the baseline of its chunk and state
dtype, decode batch by batch and prefill prompt by prompt, where both have
the point.  Prints one line a point: the run, its settings, the point, the
baseline's and the run's tokens/s and the change.  Points without a baseline
are listed as such, so nothing measured is dropped silently.  Standard library
only.
"""
import argparse
import glob
import json
import os
import sys

sys.dont_write_bytecode = True


def load_runs(directory):
    """name -> result, for every readable ours*.json in directory."""
    runs = {}
    for path in sorted(glob.glob(os.path.join(directory, "ours*.json"))):
        try:
            with open(path) as f:
                runs[os.path.basename(path)[:-5]] = json.load(f)
        except (OSError, ValueError):
            continue  # a run that failed leaves an empty or partial file
    return runs


def key_of(result):
    """What a result is comparable on: its chunk and state dtype."""
    return (result.get("chunk"), result.get("state_dtype", "f32"))


# A decode entry's rates besides its logits-to-host tok_s: greedy's picks
# and the rows reduced for sampling, both made on the device (a change to
# either kernel shows only in these).
DEVICE_RATES = (("greedy", "tok_s_greedy_on_device"), ("sampled", "tok_s_sampled_on_device"))


def points(result):
    """(what, tokens/s) of a result's decode batches (their on-device
    greedy and sampled rates too, where measured) and prefill prompts."""
    out = []
    for r in result.get("decode", []):
        out.append(("decode %d" % r["batch"], r["tok_s"]))
        out += [("decode %d %s" % (r["batch"], name), r[key])
                for name, key in DEVICE_RATES if key in r]
    out += [("prefill %d" % r["prompt"], r["tok_s"]) for r in result.get("prefill", [])]
    return out


def baselines(runs):
    """key -> {what: tokens/s} from the runs without settings; the first
    run (by name) that has a point gives it."""
    base = {}
    for name in sorted(runs):
        r = runs[name]
        if r.get("tuning"):
            continue
        table = base.setdefault(key_of(r), {})
        for what, tok in points(r):
            table.setdefault(what, tok)
    return base


def settings(result):
    t = result.get("tuning") or {}
    return " ".join("%s=%s" % (k.replace("RETNET_CUDA_", ""), v) for k, v in sorted(t.items()))


def compare(runs):
    """Rows (run, settings, what, base tok/s or None, run tok/s, change or None)."""
    base = baselines(runs)
    rows = []
    for name in sorted(runs):
        r = runs[name]
        if not r.get("tuning"):
            continue
        table = base.get(key_of(r), {})
        for what, tok in points(r):
            b = table.get(what)
            rows.append((name, settings(r), what, b, tok, tok / b - 1.0 if b else None))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("directory")
    a = ap.parse_args()
    runs = load_runs(a.directory)
    if not runs:
        print("bench_compare: no results in %s" % a.directory)
        return 1
    print("%-24s %-40s %-20s %11s %11s %8s" % ("run", "settings", "point", "default", "this",
                                                "change"))
    for name, s, what, b, tok, ch in compare(runs):
        print("%-24s %-40s %-20s %11s %11.1f %8s" % (name, s, what, "%.1f" % b if b else "-", tok,
                                                      "%+.1f%%" % (100 * ch) if ch is not None
                                                      else "no base"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
