#!/usr/bin/env python3
"""Summary table and plot of `make bench-cuda` results.

    python3 tools/plot_decode.py --summary OURS_JSON PEER_JSON
    build/venv/bin/python tools/plot_decode.py --png docs/decode-vs-batch.png OURS_JSON PEER_JSON

OURS_JSON comes from `retnet bench-cuda`, PEER_JSON from tools/bench_peer.py.
--summary prints decode and prefill side by side with the roofline and GEMM
ratios (standard library only).  --png draws decode tokens/s against batch size
(log-log) for retnetd, the peer and the roofline (weights read once per step plus
each state read and written, over the measured copy bandwidth); it needs
matplotlib (in tools/requirements.txt, so build/venv has it).
"""
import argparse
import json
import sys

sys.dont_write_bytecode = True


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def summary(ours, peer):
    pd = {r['batch']: r['tok_s'] for r in peer.get('decode', [])}
    pp = {r['prompt']: r['tok_s'] for r in peer.get('prefill', [])}
    print('device %s: copy %.0f GB/s, bf16 GEMM %.0f TFLOP/s; state %.1f MiB/session = %.1f sessions/GiB'
          % (ours['device'], ours['copy_GBps'], ours['gemm_bf16_TFLOPs'], ours['state_bytes'] / 2**20,
             ours['sessions_per_GiB']))
    print('%-14s %12s %12s %9s %12s %8s %12s %12s' % ('decode batch', 'tok/s', 'roofline', 'of roof',
                                                    'peer tok/s', 'vs peer', 'greedy dev', 'sampled dev'))
    for r in ours['decode']:
        p = pd.get(r['batch'])
        # the steps with the tokens chosen on the device (greedy picks, rows reduced for
        # sampling; absent from results of older builds)
        dev = ['%.1f' % r[k] if k in r else '-' for k in ('tok_s_greedy_on_device', 'tok_s_sampled_on_device')]
        print('%-14d %12.1f %12.1f %8.0f%% %12s %8s %12s %12s' % (
            r['batch'], r['tok_s'], r['roofline_tok_s'], 100 * r['of_roofline'],
            '%.1f' % p if p else '-', '%.2fx' % (r['tok_s'] / p) if p else '-', dev[0], dev[1]))
    print('%-14s %12s %12s %9s %12s %8s %14s %12s' % ('prefill', 'tok/s', 'TFLOP/s', 'of GEMM',
                                                    'peer tok/s', 'vs peer', 'products/GEMM',
                                                    'of products'))
    for r in ours['prefill']:
        p = pp.get(r['prompt'])
        # the chunks' projections timed alone (absent from results of older builds)
        prod = ['%.0f%%' % (100 * r[k]) if k in r else '-' for k in ('products_of_gemm', 'of_products')]
        print('%-14d %12.1f %12.1f %8.0f%% %12s %8s %14s %12s' % (
            r['prompt'], r['tok_s'], r['TFLOPs'], 100 * r['of_gemm'],
            '%.1f' % p if p else '-', '%.2fx' % (r['tok_s'] / p) if p else '-', prod[0], prod[1]))
    if peer.get('peer'):
        print('peer: %s' % peer['peer'])


def plot(ours, peer, png):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    W, S, bw = ours['weight_bytes'], ours['state_bytes'], ours['copy_GBps'] * 1e9
    bs = [r['batch'] for r in ours['decode']]
    grid = [b for b in range(1, max(bs) + 1)]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    ax.plot(grid, [b * bw / (W + 2 * b * S) for b in grid], 'k--', label='roofline (copy %.0f GB/s)' % (bw / 1e9))
    ax.plot(bs, [r['tok_s'] for r in ours['decode']], 'o-', label='retnetd (CUDA), logits to the host')
    if all('tok_s_sampled_on_device' in r for r in ours['decode']):
        ax.plot(bs, [r['tok_s_sampled_on_device'] for r in ours['decode']], '^-',
                label='retnetd (CUDA), sampled on the device')
    if peer.get('decode'):
        ax.plot([r['batch'] for r in peer['decode']], [r['tok_s'] for r in peer['decode']], 's-',
                label='flash-linear-attention')
    ax.set_xscale('log', base=2)
    ax.set_yscale('log')
    ax.set_xlabel('sessions decoded per step (batch)')
    ax.set_ylabel('aggregate tokens/s')
    ax.set_title('RetNet 1.3B bf16 decode on %s' % ours['device'])
    ax.grid(True, which='both', alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--summary', action='store_true')
    ap.add_argument('--png')
    ap.add_argument('ours')
    ap.add_argument('peer')
    a = ap.parse_args()
    ours, peer = load(a.ours), load(a.peer)
    if not ours.get('decode'):
        sys.exit('plot_decode: %s holds no results' % a.ours)
    if a.summary or not a.png:
        summary(ours, peer)
    if a.png:
        plot(ours, peer, a.png)


if __name__ == '__main__':
    main()
