#!/usr/bin/env python3
"""Where a decode step's or a prefill's time goes on the device, from the
kernel timeline `retnet bench-cuda --timeline FILE` writes (CUPTI's start
and end of every kernel, graph nodes included).

Kernels overlap: under dependent launch the next kernel starts while its
predecessor runs and waits at its dependency point.  So each moment of a
run is given to one kernel, the *oldest* one running then (the one the
others wait on), and moments when none runs are idle.  Per kernel name:
launches, owned time and the kernels' own durations (which count the
waiting), per step for decode runs (tags decode-bB-sN, and decode-picks-bB-sN
and decode-top-bB-sN for the server's greedy and sampled steps), per run
otherwise.

    python3 tools/timeline_summary.py build/bench/cuda/timeline.csv \
        [--json build/bench/cuda/timeline.json] [--top 12]

--json reads the bench's JSON (its copy_GBps and weight_bytes) to say at
what rate the GEMVs' owned time moves the weights.

The idle time is also split by what lies on either side of each gap: a
cuBLAS product (launched in plain stream order), a copy, or one of ours
(launched dependent on its predecessor where that is on).

Copies (rows of kind "copy") are device work like kernels.  The runtime
API's calls (kind "api", on the host, on the same clock) say what the host
was doing while the device sat idle: each idle moment goes to the call
that began last among those running then, or to the host's own code
between calls.
"""
import argparse
import csv
import json
import re
import sys


def load(path, kinds=("kernel", "copy")):
    """{tag: [(start, end, name), ...]} of the rows of those kinds from the
    bench's CSV (files written before the kind column hold kernels only)."""
    runs = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if (row.get("kind") or "kernel") not in kinds:
                continue
            name = re.sub(r"^void ", "", row["kernel"])
            runs.setdefault(row["tag"], []).append(
                (int(row["start_ns"]), int(row["end_ns"]), name))
    return runs


def load_calls(path):
    """{tag: [(start, end, name), ...]}: the runtime API's calls."""
    return load(path, kinds=("api",))


def idle_gaps(kernels):
    """[(start, end), ...]: the moments inside the run when no kernel runs."""
    gaps, t = [], None
    for start, end, _ in sorted(kernels):
        if t is not None and start > t:
            gaps.append((t, start))
        t = end if t is None else max(t, end)
    return gaps


def idle_by_call(gaps, calls):
    """{call name or None: ns}: each idle moment to the call that began
    last among those running then (None: no call, the host's own code)."""
    out = {}
    for a, b in gaps:
        near = [c for c in calls if c[0] < b and c[1] > a]  # the calls inside the gap
        # their edges cut the gap into pieces with one owner each
        cuts = sorted({a, b} | {t for s, e, _ in near for t in (s, e) if a < t < b})
        for lo, hi in zip(cuts, cuts[1:]):
            running = [(s, n) for s, e, n in near if s <= lo and e >= hi]
            owner = max(running)[1] if running else None
            out[owner] = out.get(owner, 0) + (hi - lo)
    return out


def attribute(kernels):
    """(owned ns by name, idle ns, idle gaps, span ns): each moment goes to
    the earliest-started kernel running then (ties: the earlier listed)."""
    ks = sorted(enumerate(kernels), key=lambda e: (e[1][0], e[0]))
    owned = {}
    if not ks:
        return owned, 0, 0, 0
    t0 = ks[0][1][0]
    span_end = max(k[1] for _, k in ks)
    # the owner runs from max(t, its start) to its end; a later kernel owns
    # only what outlasts every earlier one
    t = t0
    for _, (start, end, name) in ks:
        t = max(t, start)
        if end > t:
            owned[name] = owned.get(name, 0) + (end - t)
            t = end
        else:
            owned.setdefault(name, 0)
    gaps = idle_gaps(kernels)
    return owned, sum(b - a for a, b in gaps), len(gaps), span_end - t0


# Kernel classes for the per-step breakdown: the first pattern a name
# matches (the order matters: the fused GEMV's name has "norm" in it).
CLASSES = [
    ("copy", r"^mem(cpy|set)\b"),
    ("GEMV", r"gemv"),
    ("norm", r"norm"),
    ("recurrent step", r"ret_step|ts_step"),
    ("cuBLAS GEMM", r"gemm|nvjet|xmma|cutlass|cublas|sm\d+_"),
    ("retention (chunk)", r"ret_fused|scale_pieces|scan_pieces|decay|ts_chunk|state_"),
    ("rotary", r"qk_kernel|rope"),
    ("sampling", r"argmax|top_rows|top_kernel"),
]


def class_of(name):
    for label, pattern in CLASSES:
        if re.search(pattern, name):
            return label
    return "other"


def side_of(name):
    """What a gap's neighbour is: a cuBLAS product, a copy, or one of ours."""
    c = class_of(name)
    return "GEMM" if c == "cuBLAS GEMM" else "copy" if c == "copy" else "ours"


def idle_by_neighbours(kernels):
    """{(before, after): [ns, gaps]}: each idle gap by the side (side_of)
    of the kernel that ended last before it and of the one that starts it.
    Our kernels launch dependent on their predecessor (they start early and
    wait inside), cuBLAS's products in plain stream order, so the gaps
    next to a GEMM are what dependent launch cannot reach."""
    out, t, last = {}, None, None
    for start, end, name in sorted(kernels):
        if t is not None and start > t:
            v = out.setdefault((side_of(last), side_of(name)), [0, 0])
            v[0] += start - t
            v[1] += 1
        if t is None or end > t:
            t, last = end, name
    return out


def steps_of(tag):
    m = re.match(r"decode-(?:picks-|top-)?b\d+-s(\d+)$", tag)
    return int(m.group(1)) if m else 1


def summarize(tag, kernels, top, bench=None, calls=None):
    """The run's lines of text (calls: the runtime API's, if recorded)."""
    owned, idle, gaps, span = attribute(kernels)
    per = steps_of(tag)
    unit = "a step" if tag.startswith("decode") else "the run"
    count, dur = {}, {}
    for start, end, name in kernels:
        count[name] = count.get(name, 0) + 1
        dur[name] = dur.get(name, 0) + (end - start)
    us = 1e-3 / per
    copies = sum(1 for k in kernels if class_of(k[2]) == "copy")
    out = [
        f"{tag}: {span * us:,.1f} us {unit} on the device, "
        f"{(len(kernels) - copies) / per:,.0f} kernels"
        + (f" and {copies / per:,.0f} copies" if copies else "") + ", "
        f"idle {idle * us:,.1f} us in {gaps / per:,.1f} gaps"
        f" ({(idle / gaps if gaps else 0) * 1e-3:,.2f} us each)"
    ]
    out.append(f"  {'kernel':<58} {'n':>5} {'owned us':>10} {'share':>6} {'own dur us':>10}")
    names = sorted(owned, key=lambda n: -owned[n])
    for name in names[:top]:
        out.append(
            f"  {name[:58]:<58} {count[name] / per:>5g} {owned[name] * us:>10,.1f} "
            f"{owned[name] / span if span else 0:>6.1%} {dur[name] * us:>10,.1f}")
    rest = names[top:]
    if rest:
        o = sum(owned[n] for n in rest)
        out.append(f"  {'(' + str(len(rest)) + ' more)':<58} {sum(count[n] for n in rest) / per:>5.0f} "
                   f"{o * us:>10,.1f} {o / span if span else 0:>6.1%}")
    by_class = {}
    for name, v in owned.items():
        c = by_class.setdefault(class_of(name), [0, 0])
        c[0] += v
        c[1] += count[name]
    out.append("  by class: " + ", ".join(
        f"{label} {v[0] * us:,.1f} us ({v[1] / per:g})"
        for label, v in sorted(by_class.items(), key=lambda e: -e[1][0]))
        + f", idle {idle * us:,.1f} us")
    near = idle_by_neighbours(kernels)
    if near:
        out.append("  idle between: " + ", ".join(
            f"{a}->{b} {v[0] * us:,.1f} us "
            f"({v[1] / per:g} gaps, {v[0] / v[1] * 1e-3:,.2f} us each)"
            for (a, b), v in sorted(near.items(), key=lambda e: (-e[1][0], e[0]))))
    if calls:
        by_call = idle_by_call(idle_gaps(kernels), calls)
        parts = sorted(((n, v) for n, v in by_call.items() if n), key=lambda e: (-e[1], e[0]))
        text = ", ".join(f"{n} {v * us:,.1f}" for n, v in parts[:6])
        if len(parts) > 6:
            text += f", {len(parts) - 6} more {sum(v for _, v in parts[6:]) * us:,.1f}"
        host = by_call.get(None, 0)
        out.append(f"  idle {idle * us:,.1f} us against the host's calls: "
                   + (text + ", " if text else "") + f"outside any call {host * us:,.1f}")
    gemv = sum(v for n, v in owned.items() if "gemv" in n)
    if bench and tag.startswith("decode") and gemv:
        rate = bench["weight_bytes"] / (gemv * 1e-9 / per) / 1e9
        out.append(f"  GEMVs own {gemv * us:,.1f} us: the weights at {rate:,.0f} GB/s, "
                   f"{rate / bench['copy_GBps']:.0%} of the copy kernel's "
                   f"{bench['copy_GBps']:,.0f} (the LM head counted if a GEMV ran it)")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("csv")
    ap.add_argument("--json", help="the bench's JSON output (copy rate, weight bytes)")
    ap.add_argument("--top", type=int, default=12, help="kernel names listed per run")
    a = ap.parse_args(argv)
    bench = None
    if a.json:
        with open(a.json) as f:
            bench = json.load(f)
    runs, calls = load(a.csv), load_calls(a.csv)
    if not runs:
        print(f"{a.csv}: no kernels recorded", file=sys.stderr)
        return 1
    for tag, kernels in runs.items():
        print("\n".join(summarize(tag, kernels, a.top, bench, calls.get(tag))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
