#!/usr/bin/env python3
"""Where a prefill and a decode step spend their time, from ncu's CSV.

    ncu --profile-from-start off --metrics gpu__time_duration.sum --csv \\
        retnet bench-cuda MODEL_DIR --profile --batches B --prompts P --chunk C > ncu.csv
    python3 tools/ncu_summary.py ncu.csv [--top 16] [--launches]

`retnet bench-cuda --profile` runs one prefill and then one decode step
inside the profiler range; each prefill chunk and the step start with the
embedding kernel, so the last embedding launch is where the step begins.  For each part
the kernels are grouped by name (cuBLAS and cuBLASLt GEMMs under "GEMM"),
largest total first: total ms, launches, mean us.  --launches also lists
every launch of the prefill's first layer (the first stretch of launches
that the next one repeats), in order, with its grid and block, which is how
a GEMM is matched to its projection.
"""
import argparse
import collections
import csv
import re
import sys


# microseconds per unit, as ncu spells them (older versions the long way)
US_PER = {'ns': 1e-3, 'nsecond': 1e-3, 'us': 1.0, 'usecond': 1.0, 'ms': 1e3, 'msecond': 1e3,
          's': 1e6, 'second': 1e6}


def load(path):
    """(kernel name, microseconds, grid, block) of every launch, in order."""
    with open(path, newline='') as f:
        lines = [line for line in f if line.startswith('"')]
    rows = []
    for r in csv.DictReader(lines):
        if r.get('Metric Name') != 'gpu__time_duration.sum':
            continue
        unit = r.get('Metric Unit', '')
        if unit not in US_PER:
            sys.exit('ncu_summary: unknown time unit %r in %s' % (unit, path))
        try:
            value = float(r['Metric Value'].replace(',', ''))
        except ValueError:
            sys.exit('ncu_summary: %r is not a duration (%s)' % (r['Metric Value'], r['Kernel Name']))
        rows.append((r['Kernel Name'], value * US_PER[unit], r['Grid Size'], r['Block Size']))
    return rows


def short_name(name):
    base = re.sub(r'\(.*', '', name)
    base = re.sub(r'^void ', '', base)
    lower = base.lower()
    if any(s in lower for s in ('gemm', 'nvjet', 'cutlass', 'xmma')):
        return 'GEMM ' + base[:48]
    return base if base.startswith('ret_') else base.split('<')[0]


def split_parts(rows):
    """The prefill's launches (one embedding a chunk) and the decode step's
    (from the last embedding)."""
    embeds = [i for i, r in enumerate(rows) if short_name(r[0]).startswith('embed')]
    cut = embeds[-1] if len(embeds) > 1 else len(rows)
    return [('prefill', rows[:cut]), ('decode step', rows[cut:])]


def summarise(part, rows, top, out):
    groups = collections.defaultdict(lambda: [0, 0.0])
    for name, us, _, _ in rows:
        g = groups[short_name(name)]
        g[0] += 1
        g[1] += us
    total = sum(g[1] for g in groups.values())
    out.write('%s: %d launches, %.2f ms of kernels\n' % (part, len(rows), total / 1e3))
    for name, (n, us) in sorted(groups.items(), key=lambda kv: -kv[1][1])[:top]:
        out.write('  %8.3f ms %5d x %8.1f us  %s\n' % (us / 1e3, n, us / n, name))


def first_layer(rows):
    """(start, length) of the first repeating stretch of launches: from the
    launch before the first GEMM (the layer's input norm) to the launch
    before the next one that starts the same sequence of kernels."""
    key = [(short_name(r[0]), r[2]) for r in rows]
    first = next((i for i, k in enumerate(key) if k[0].startswith('GEMM')), 1)
    start = max(first - 1, 0)
    for period in range(2, len(key) - start):
        if key[start + period:start + 2 * period] == key[start:start + period]:
            return start, period
    return start, len(key) - start


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('csv')
    ap.add_argument('--top', type=int, default=16)
    ap.add_argument('--launches', action='store_true',
                    help="list the launches of the prefill's first layer, in order")
    args = ap.parse_args()
    rows = load(args.csv)
    if not rows:
        sys.exit('ncu_summary: no gpu__time_duration.sum rows in %s' % args.csv)
    for part, part_rows in split_parts(rows):
        if part_rows:
            summarise(part, part_rows, args.top, sys.stdout)
    if args.launches:
        prefill = split_parts(rows)[0][1]
        first, period = first_layer(prefill)
        sys.stdout.write('one layer of the prefill (%d launches):\n' % period)
        for name, us, grid, block in prefill[first:first + period]:
            sys.stdout.write('  %8.1f us %16s %12s  %s\n' % (us, grid, block, short_name(name)))

if __name__ == '__main__':
    main()
