#!/usr/bin/env python3
"""Hugging Face `tokenizers` peer for tokenizer benchmarks: single-thread encode throughput.

    build/venv/bin/python tools/bench_tokenizer.py TOKENIZER_JSON TEXT_FILE [--repeat 3]

Splits TEXT_FILE into lines (each keeps its '\\n'), decodes them as UTF-8 with invalid
sequences replaced by U+FFFD (the rule the C tokenizer follows), then times encoding every
line with Tokenizer.encode(line, add_special_tokens=False) on one thread
(RAYON_NUM_THREADS=1, TOKENIZERS_PARALLELISM=false).  The best of --repeat passes counts.
One JSON object goes to stdout:

    {"peer": "tokenizers <version>", "MB_s": <input bytes / 1e6 / seconds>,
     "bytes": ..., "lines": ..., "tokens": ..., "seconds": ...}

Note that encode() also computes offsets, attention masks and the other Encoding fields.
"""
import argparse
import importlib.metadata as md
import json
import os
import sys
import time

os.environ['RAYON_NUM_THREADS'] = '1'
os.environ['TOKENIZERS_PARALLELISM'] = 'false'

sys.dont_write_bytecode = True          # keep tools/ free of __pycache__

from tokenizers import Tokenizer  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('tokenizer', help='tokenizer.json')
    ap.add_argument('text', help='input text file')
    ap.add_argument('--repeat', type=int, default=3, help='timed passes; the best counts (default 3)')
    args = ap.parse_args()

    tok = Tokenizer.from_file(args.tokenizer)
    with open(args.text, 'rb') as f:
        data = f.read()
    raw = data.split(b'\n')
    raw = [ln + b'\n' for ln in raw[:-1]] + ([raw[-1]] if raw[-1] else [])
    lines = [ln.decode('utf-8', 'replace') for ln in raw]

    best, ntok = None, 0
    for _ in range(max(1, args.repeat)):
        t0 = time.perf_counter()
        n = 0
        for ln in lines:
            n += len(tok.encode(ln, add_special_tokens=False).ids)
        dt = time.perf_counter() - t0
        if best is None or dt < best:
            best = dt
        ntok = n

    print(json.dumps({'peer': 'tokenizers %s' % md.version('tokenizers'),
                      'MB_s': round(len(data) / 1e6 / best, 3) if best > 0 else None,
                      'bytes': len(data), 'lines': len(lines), 'tokens': ntok, 'seconds': round(best, 4)}))


if __name__ == '__main__':
    main()
