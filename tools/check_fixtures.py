#!/usr/bin/env python3
"""Check the reference fixtures against an independent NumPy implementation of RetNet.

    build/venv/bin/python tools/check_fixtures.py --spec PATH/ref_numpy.py [--fixtures DIR] [NAME ...]

Needs only NumPy (any Python with NumPy will do; no torch, no safetensors package).  For every fixture directory it
reads config.json and model.safetensors the way the format defines them
(docs/model-format.md), translates the config fields into the NumPy specification's
configuration, runs the specification in float64 on the stored tokens and compares:

  * logits.recurrent / logits.parallel / logits.chunkwise with the specification's
    recurrent, parallel and chunkwise (chunk from the metadata) forms; for torchscale,
    whose package has no continuable chunkwise form, the specification's chunkwise form
    is compared with logits.recurrent;
  * state.<l> with the specification's final recurrent state in retnetd's convention
    (key-major, unnormalised: for torchscale S * sqrt(scale)), state_scale.<l> with
    its scale.

The references are float64 package results stored as F32, so a stored value can differ
from the float64 result by half an fp32 ulp.  A comparison passes when every element is
within 0.5 ulp(fp32) + 1e-9 * max(1, max|x|) of the specification (F64 references,
written by `make_fixtures.py --float64`, are held to the 1e-9 part alone).

Informational rows: the specification with the decay and rotary constants rounded to
fp32 as an fp32 run of the packages forms them (position x frequency products, sin/cos,
decay powers); the difference shows how much an fp32 engine that follows the format's
advice on rounding differs from the float64 references for that reason alone.
"""
import argparse
import importlib.util
import json
import os
import sys

import numpy as np

sys.dont_write_bytecode = True          # keep tools/ free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import retnet_export as X  # noqa: E402

read_safetensors = X.read_safetensors


def load_spec(path):
    spec = importlib.util.spec_from_file_location('ref_numpy', path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def spec_config(config):
    """retnetd config.json -> the NumPy specification's configuration dict, field by field."""
    c = X.resolved(config)
    if c['position_encoding'] != 'rotary':
        raise ValueError('position_encoding %r: not expressible in the specification' % c['position_encoding'])
    rope = {('interleaved', 'linspace'): 'interleaved_linspace', ('half', 'pow'): 'half_split'}.get(
        (c['rope_layout'], c['rope_freq']))
    if rope is None:
        raise ValueError('rope_layout %s with rope_freq %s: not expressible in the specification'
                         % (c['rope_layout'], c['rope_freq']))
    act = {'silu': 'swish'}.get(c['hidden_act'], c['hidden_act'])
    gate_act = {'silu': 'swish'}.get(c['gate_act'], c['gate_act'])
    deep = c['norm_position'] == 'deepnorm'
    return {
        'vocab': c['V'], 'd_model': c['D'], 'n_layers': c['L'], 'n_heads': c['H'], 'dk': c['dk'], 'dv': c['dv'],
        'ffn_dim': c['F'], 'ffn_kind': {'glu': 'glu', 'mlp': 'mlp'}[c['ffn_type']],
        'act': act, 'gate_act': gate_act,
        'norm_kind': {'rmsnorm': 'rms', 'layernorm': 'layer'}[c['norm_type']], 'norm_eps': c['norm_eps'],
        'norm_first': c['norm_position'] == 'pre',
        'post_norm': {'pre': None, 'post': 'branch', 'deepnorm': 'sum'}[c['norm_position']],
        'res_alpha': (2.0 * c['L']) ** 0.25 if deep else 1.0,
        'gn_kind': {'rms': 'rms', 'layer': 'group'}[c['group_norm']], 'gn_eps': c['group_norm_eps'],
        'gn_affine': bool(c['elementwise_affine']),
        'embed_scale': float(c['embed_scale']), 'emb_norm': bool(c['embed_norm']),
        'final_norm': bool(c['final_norm']), 'tie_embeddings': bool(c['tie_word_embeddings']),
        'rope': rope, 'rope_base': float(c['rope_theta']),
        # 'k': k scaled by dk^-1/2 (before or after the rotation: the same, the rotation is linear)
        'qk_scale': {'k': 'k_after_rot', 'q': 'q_scale'}[c['qk_scale']],
        'decay': {'pow2': 'pow2', 'linspace': 'yar'}[c['decay']],
        'ts_norm': c['retention_norm'] == 'torchscale',
    }


def spec_params(config, tensors):
    """our tensor names -> the specification's neutral names."""
    c = X.resolved(config)
    P = {'embed': tensors['model.embeddings.weight']}
    glob = {'model.embed_norm.weight': 'emb_norm.w', 'model.norm.weight': 'final_norm.w',
            'model.norm.bias': 'final_norm.b', 'lm_head.weight': 'lm_head.w', 'lm_head.bias': 'lm_head.b',
            'model.rope_freq': 'rope.freq'}
    layer = {'attn_norm': 'norm1', 'mlp_norm': 'norm2', 'attn.q_proj': 'q', 'attn.k_proj': 'k',
             'attn.v_proj': 'v', 'attn.g_proj': 'g', 'attn.o_proj': 'o', 'mlp.down_proj': 'ffn.down'}
    if c['ffn_type'] == 'glu':      # down(act(gate_proj x) * up_proj x)
        layer.update({'mlp.gate_proj': 'ffn.up_act', 'mlp.up_proj': 'ffn.up_lin'})
    else:                           # down(act(up_proj x))
        layer['mlp.up_proj'] = 'ffn.up_act'
    for k, v in tensors.items():
        if k in glob:
            P[glob[k]] = v
        elif k.startswith('model.layers.'):
            n, rest = k[len('model.layers.'):].split('.', 1)
            if rest in ('attn.g_norm_swish_gate.weight', 'attn.g_norm.weight'):
                P['layers.%s.gn.w' % n] = v
                continue
            base, wb = rest.rsplit('.', 1)
            P['layers.%s.%s.%s' % (n, layer[base], {'weight': 'w', 'bias': 'b'}[wb])] = v
    return {k: np.asarray(v, np.float64) for k, v in P.items()}


def ulp32(x):
    x = np.abs(np.asarray(x, np.float64)).astype(np.float32)
    return (np.nextafter(x, np.float32(np.inf)) - x).astype(np.float64)


class Row:
    def __init__(self, name, what, ref, spec, stored_dtype, check=True):
        ref = np.asarray(ref, np.float64)
        spec = np.asarray(spec, np.float64)
        d = np.abs(ref - spec)
        self.name, self.what, self.check = name, what, check
        self.scale = max(1.0, float(np.max(np.abs(spec))))
        self.rel = float(np.max(d)) / self.scale
        self.ulps = float(np.max(d / ulp32(spec)))
        slack = 0.5 * ulp32(spec) if stored_dtype == 'F32' else 0.0
        self.ok = (not check) or bool(np.all(d <= slack + 1e-9 * self.scale))

    def line(self):
        status = ('ok' if self.ok else 'FAIL') if self.check else 'info'
        ulps = ('%7.2f' % self.ulps if self.ulps < 1e4 else '%7.0e' % self.ulps) if self.check else '      -'
        return '%-13s %-52s %9.2e %s %9.1f  %s' % (self.name, self.what, self.rel, ulps, self.scale, status)


def check_fixture(R, d, name):
    config = json.load(open(os.path.join(d, 'config.json')))
    tensors, _, wdt = read_safetensors(os.path.join(d, 'model.safetensors'))
    X.check_tensors(config, tensors)
    if 'model.rope_freq' in tensors and wdt['model.rope_freq'] != 'F32':
        raise ValueError('model.rope_freq must be F32')
    ref, meta, rdt = read_safetensors(os.path.join(d, 'reference.safetensors'))
    cfg = spec_config(config)
    P = spec_params(config, tensors)
    tokens = ref['tokens']
    Bn, Tn = tokens.shape
    chunk = int(meta['chunk'])
    L = cfg['n_layers']
    ts = cfg['ts_norm']
    spec = {f: [] for f in ('recurrent', 'parallel', 'chunkwise', 'recurrent_fp32c')}
    states = [[] for _ in range(L)]
    scales = [[] for _ in range(L)]
    for b in range(Bn):
        R.FP32_CONSTANTS = False            # float64 constants: what a float64 run of the package forms
        lg, st = R.forward(cfg, P, tokens[b], 'recurrent')
        spec['recurrent'].append(lg)
        for n, ls in enumerate(st['layers']):
            if ts:
                states[n].append(ls['S'] * np.sqrt(ls['scale'])[:, None, None])
                scales[n].append(ls['scale'])
            else:
                states[n].append(ls['S'])
        spec['parallel'].append(R.forward(cfg, P, tokens[b], 'parallel')[0])
        spec['chunkwise'].append(R.forward(cfg, P, tokens[b], 'chunkwise', chunk=chunk)[0])
        R.FP32_CONSTANTS = True             # constants rounded to fp32 as an fp32 run forms them
        spec['recurrent_fp32c'].append(R.forward(cfg, P, tokens[b], 'recurrent')[0])
    R.FP32_CONSTANTS = True
    spec = {k: np.stack(v) for k, v in spec.items()}
    rows = [Row(name, 'logits.recurrent  vs spec recurrent', ref['logits.recurrent'], spec['recurrent'],
                rdt['logits.recurrent']),
            Row(name, 'logits.parallel   vs spec parallel', ref['logits.parallel'], spec['parallel'],
                rdt['logits.parallel'])]
    if 'logits.chunkwise' in ref:
        rows.append(Row(name, 'logits.chunkwise  vs spec chunkwise(%d)' % chunk, ref['logits.chunkwise'],
                        spec['chunkwise'], rdt['logits.chunkwise']))
    else:
        rows.append(Row(name, 'logits.recurrent  vs spec chunkwise(%d)' % chunk, ref['logits.recurrent'],
                        spec['chunkwise'], rdt['logits.recurrent']))
    for n in range(L):
        key = 'state.%d' % n
        rows.append(Row(name, '%-17s vs spec state%s' % (key, ' * sqrt(scale)' if ts else ''), ref[key],
                        np.stack(states[n]), rdt[key]))
        if ts:
            key = 'state_scale.%d' % n
            rows.append(Row(name, '%-17s vs spec scale' % key, ref[key], np.stack(scales[n]), rdt[key]))
    expected = {'tokens', 'logits.recurrent', 'logits.parallel'} | {'state.%d' % n for n in range(L)}
    expected |= {'state_scale.%d' % n for n in range(L)} if ts else {'logits.chunkwise'}
    if set(ref) != expected:
        raise ValueError('%s: reference tensors %s, expected %s' % (name, sorted(ref), sorted(expected)))
    if ts:
        rows.append(Row(name, 'logits.parallel   vs spec recurrent (its clamp)', ref['logits.parallel'],
                        spec['recurrent'], 'F32', check=False))
    rows.append(Row(name, 'logits.recurrent  vs spec recurrent, fp32 constants', ref['logits.recurrent'],
                    spec['recurrent_fp32c'], 'F32', check=False))
    return rows


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--spec', required=True, help='path to ref_numpy.py (the NumPy specification)')
    ap.add_argument('--fixtures', default=os.path.join(here, '..', 'tests', 'fixtures'))
    ap.add_argument('names', nargs='*')
    a = ap.parse_args()
    R = load_spec(a.spec)
    root = os.path.normpath(a.fixtures)
    names = a.names or sorted(n for n in os.listdir(root)
                              if os.path.exists(os.path.join(root, n, 'reference.safetensors')))
    print('%-13s %-52s %9s %7s %9s' % ('fixture', 'comparison', 'rel', 'ulp32', 'max|x|'))
    bad = 0
    for n in names:
        try:
            rows = check_fixture(R, os.path.join(root, n), n)
        except (ValueError, KeyError, AssertionError) as e:
            print('%-13s ERROR %s: %s' % (n, type(e).__name__, e))
            bad += 1
            continue
        for r in rows:
            print(r.line())
            bad += not r.ok
    print('%d failed' % bad)
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
