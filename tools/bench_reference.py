#!/usr/bin/env python3
"""PyTorch peer for `make bench`: yet-another-retnet on the CPU, fp32.

    build/venv/bin/python tools/bench_reference.py --threads N --model-out DIR \\
        [--prompt 512] [--decode 64] [--chunk 64] [--seed 7]

Builds a yet-another-retnet 0.5.1 RetNet of about 5M parameters (d_model 256, 4 heads of
64, 4 layers, FFN 1024, vocabulary 4096, swish, pre-norm) with random weights from a
fixed seed, writes it to DIR in the retnetd format (so the C engine runs exactly these
weights) and times, each after one warm-up run, the median of 3 runs of:

    prefill      forward_chunkwise over a random prompt, --chunk tokens per call,
                 carrying prev_states and start_idx                  -> tokens/s
    decode b1    forward_recurrent for --decode steps after the prompt -> tokens/s
    decode b16   the same for 16 sequences at once                   -> 16*steps/s

Decode feeds pre-drawn random tokens (no sampling).  One JSON object goes to stdout,
progress to stderr.
"""
import argparse
import importlib.metadata as md
import json
import os
import statistics
import sys
import time

import torch

sys.dont_write_bytecode = True          # keep tools/ free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import retnet_export as X  # noqa: E402
from make_fixtures import randomize  # noqa: E402

ARCH = dict(num_tokens=4096, d_model=256, nhead=4, num_layers=4, dim_feedforward=1024, activation='swish',
            norm_first=True)


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def prefill(model, tokens, chunk):
    st = []
    for c0 in range(0, tokens.shape[1], chunk):
        _, st = model.forward_chunkwise(tokens[:, c0:c0 + chunk], start_idx=c0, prev_states=st)
    return st


def decode(model, tokens, states, start):
    st = states
    for i in range(tokens.shape[1]):
        _, st = model.forward_recurrent(tokens[:, i], seq_idx=start + i, prev_states=st)
    return st


def timed(fn, runs=3):
    fn()                                    # warm-up
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    # torch's OpenMP threads degrade badly when the cores are shared: show the spread
    log('bench_reference:   runs %s s' % ' '.join('%.4f' % t for t in ts))
    return statistics.median(ts)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--threads', type=int, required=True)
    ap.add_argument('--model-out', required=True, help='directory to write the model to (retnetd format)')
    ap.add_argument('--prompt', type=int, default=512)
    ap.add_argument('--decode', type=int, default=64)
    ap.add_argument('--chunk', type=int, default=64)
    ap.add_argument('--seed', type=int, default=7)
    a = ap.parse_args()
    if min(a.threads, a.prompt, a.decode, a.chunk) < 1:
        ap.error('--threads, --prompt, --decode and --chunk must be positive')

    torch.set_num_threads(a.threads)
    from yet_another_retnet.retnet import RetNet
    torch.manual_seed(a.seed)
    model = RetNet(**ARCH).eval()
    randomize(model, a.seed)
    config, tensors = X.export_yar(model)
    X.save_model(a.model_out, config, tensors, dtype='float32')
    params = X.count_params(tensors)
    log('bench_reference: %d parameters, model written to %s' % (params, a.model_out))

    g = torch.Generator().manual_seed(a.seed + 1)
    V = ARCH['num_tokens']
    prompt = torch.randint(0, V, (1, a.prompt), generator=g)
    dec1 = torch.randint(0, V, (1, a.decode), generator=g)
    dec16 = torch.randint(0, V, (16, a.decode), generator=g)

    with torch.inference_mode():
        log('bench_reference: prefill %d tokens, chunk %d' % (a.prompt, a.chunk))
        t_pre = timed(lambda: prefill(model, prompt, a.chunk))
        state1 = prefill(model, prompt, a.chunk)
        state16 = [s.expand(16, *s.shape[1:]).contiguous() for s in state1]
        log('bench_reference: decode %d steps, batch 1' % a.decode)
        t_b1 = timed(lambda: decode(model, dec1, state1, a.prompt))
        log('bench_reference: decode %d steps, batch 16' % a.decode)
        t_b16 = timed(lambda: decode(model, dec16, state16, a.prompt))

    out = {
        'peer': 'yet-another-retnet %s (PyTorch %s, fp32, CPU)' % (md.version('yet-another-retnet'),
                                                                  torch.__version__.split('+')[0]),
        'threads': a.threads,
        'params': params,
        'prefill_tok_s': round(a.prompt / t_pre, 1),
        'decode_b1_tok_s': round(a.decode / t_b1, 1),
        'decode_b16_tok_s': round(16 * a.decode / t_b16, 1),
        'prompt': a.prompt,
        'chunk': a.chunk,
        'decode_steps': a.decode,
    }
    print(json.dumps(out))


if __name__ == '__main__':
    main()
