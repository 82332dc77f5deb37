#!/usr/bin/env python3
"""Generate the reference fixtures in tests/fixtures/ with the real RetNet packages.

    tools/venv.sh
    build/venv/bin/python tools/make_fixtures.py [--out tests/fixtures] [--only NAME ...]

For every fixture: a small model of one package (torchscale 0.3.0, yet-another-retnet
0.5.1 or flash-linear-attention 0.6.0) with random weights from a fixed seed, written in
the retnetd format (config.json + model.safetensors, see docs/model-format.md), and
reference.safetensors with what the package itself computes from those weights, run in
float64 (`model.double()`) and stored as F32:

    tokens            I32 (B, T)
    logits.recurrent  F32 (B, T, V)   token by token, carrying the package's state
    logits.parallel   F32 (B, T, V)   whole sequence at once
    logits.chunkwise  F32 (B, T, V)   chunks of 16 carrying the state (yar and fla only)
    state.<l>         F32 (B, H, dk, dv)  final recurrent state of layer l, key-major,
                                          unnormalised (retnetd's convention)
    state_scale.<l>   F32 (B, H)      torchscale only: its per-head `scale`

FLA's Triton kernels need a GPU.  On the CPU its model, layer, cache and rotary code run
as they are and only the leaf kernels are replaced by FLA's own pure-torch reference ops
(naive_recurrent_simple_gla, naive_chunk_simple_gla, rms_norm_ref, rotary_embedding_ref),
in copies that keep float64.  The reference's __metadata__ "notes" spell out every
substitution.  tools/check_fixtures.py checks the written files against an independent
NumPy implementation.

torchscale and yet-another-retnet models are written the way a user converts a checkpoint:
the state_dict is saved with torch.save and tools/convert.py turns it into the model
directory, given the constructor arguments as --config-json.  The result is also compared
with a direct export of the model in memory.  FLA models are written directly (their
config.json and tensor names are the format's own).
"""
import argparse
import copy
import importlib.metadata as md
import inspect
import json
import math
import os
import sys
import tempfile
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F

sys.dont_write_bytecode = True          # keep tools/ free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import convert  # noqa: E402
import retnet_export as X  # noqa: E402

warnings.filterwarnings('ignore')

B, T, CHUNK = 2, 160, 16

# name, flavour, seed, constructor arguments, options
FIXTURES = [
    ('ts', 'torchscale', 1101,
     dict(vocab_size=101, decoder_embed_dim=64, decoder_retention_heads=2, decoder_value_embed_dim=128,
          decoder_ffn_embed_dim=96, decoder_layers=2, activation_fn='gelu', no_scale_embedding=False,
          layernorm_embedding=True, share_decoder_input_output_embed=False), {}),
    ('ts_deepnorm', 'torchscale', 1102,
     dict(vocab_size=101, decoder_embed_dim=64, decoder_retention_heads=2, decoder_value_embed_dim=128,
          decoder_ffn_embed_dim=96, decoder_layers=2, activation_fn='swish', no_scale_embedding=True,
          layernorm_embedding=False, deepnorm=True, share_decoder_input_output_embed=True), {}),
    ('yar', 'yar', 1103,
     dict(num_tokens=101, d_model=64, nhead=4, num_layers=2, dim_feedforward=128, activation='swish',
          norm_first=True), {}),
    ('yar_postnorm', 'yar', 1104,
     dict(num_tokens=101, d_model=64, nhead=4, num_layers=2, dim_feedforward=128, activation='relu',
          norm_first=False), {}),
    ('fla', 'fla', 1105,
     dict(vocab_size=101, hidden_size=64, num_heads=2, num_hidden_layers=2, expand_k=1, expand_v=2,
          hidden_ratio=2, tie_word_embeddings=False), {}),
    ('fla_bf16', 'fla', 1106,
     dict(vocab_size=101, hidden_size=64, num_heads=2, num_hidden_layers=2, expand_k=1, expand_v=2,
          hidden_ratio=2, tie_word_embeddings=True), {'bf16': True}),
]


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def randomize(module, seed):
    """Non-trivial weights: linear W ~ N(0, 1/fan_in), norm weights 1 + 0.2 N, biases 0.1 N, embeddings N(0, 1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim == 1:
                if name.endswith('bias'):
                    p.copy_(0.1 * torch.randn(p.shape, generator=g))
                else:
                    p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            elif 'embed' in name:
                p.copy_(torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))


def version(pkg):
    return md.version(pkg)


# ================================================================================================
# torchscale 0.3.0
# ================================================================================================

def ts_patch():
    """RMSNorm and GLU do x.float() ... .type_as(x): an identity in fp32 but it would drop a float64 run
    to fp32.  Same code without the round trip (rms_norm.py:20-24, gate_linear_unit.py:27-37)."""
    import torchscale.component.gate_linear_unit as TG
    import torchscale.component.rms_norm as TR

    def rms_forward(self, x):
        out = self._norm(x)
        return out * self.weight if self.weight is not None else out

    def glu_forward(self, x):
        x_shape = x.shape
        x = x.reshape(-1, x.size(-1))
        g = self.gate(x)
        x = self.fc1(x)
        x = self.activation_fn(x) * g
        x = self.fc2(x)
        return x.view(x_shape)
    TR.RMSNorm.forward = rms_forward
    TG.GLU.forward = glu_forward


def ts_build(kw, seed):
    from torchscale.architecture.config import RetNetConfig
    from torchscale.architecture.retnet import RetNetDecoder
    args = RetNetConfig(**kw)
    torch.manual_seed(seed)
    emb = torch.nn.Embedding(kw['vocab_size'], kw['decoder_embed_dim'])
    model = RetNetDecoder(args, embed_tokens=emb).eval()
    randomize(model, seed)
    return model


@torch.no_grad()
def ts_run(model, tokens):
    tok = torch.from_numpy(tokens).long()
    model.chunkwise_recurrent = False
    out = {'parallel': model(tok)[0].double().numpy()}
    inc, steps = {}, []
    for i in range(tok.shape[1]):
        # the package takes the whole prefix and embeds only its last token, at position len-1
        steps.append(model(tok[:, :i + 1], incremental_state=inc)[0][:, -1])
    out['recurrent'] = torch.stack(steps, 1).double().numpy()
    states, scales = [], []
    for n in range(len(model.layers)):
        kv = inc[n]['prev_key_value'].double()          # (B, H, dv, dk), divided by sqrt(scale)
        sc = inc[n]['scale'].double()                    # (H,), shared by the batch
        states.append((kv.transpose(-1, -2) * sc.sqrt()[None, :, None, None]).numpy())
        scales.append(np.broadcast_to(sc.numpy()[None], (kv.shape[0], sc.shape[0])).copy())
    out['states'], out['scales'] = states, scales
    return out


TS_NOTES = ('torchscale RetNetDecoder in float64. logits.recurrent: the incremental_state path, the whole prefix '
            'passed each step (it embeds only the last token, at position len-1). logits.parallel: the parallel form, '
            'including its per-row division by max(1, |row sum|), which the recurrent form does not have. No '
            'logits.chunkwise: the package\'s own chunkwise form normalises per chunk (its output depends on the '
            'chunk size) and cannot continue a state; a continuable chunkwise form must reproduce logits.recurrent. '
            'state.<l> = prev_key_value^T * sqrt(scale) (the package stores (B,H,dv,dk) divided by sqrt(scale)); '
            'state_scale.<l> = scale (per head, the same for every sequence). RMSNorm/GLU run without their '
            '.float()/.type_as round trip (an identity in fp32) so that the model stays float64. Rotary angles and '
            'sin/cos are formed in float64 from the fp32 angle buffer (saved as model.rope_freq).')


# ================================================================================================
# yet-another-retnet 0.5.1
# ================================================================================================

def yar_build(kw, seed):
    from yet_another_retnet.retnet import RetNet
    torch.manual_seed(seed)
    model = RetNet(**kw).eval()
    randomize(model, seed)
    return model


@torch.no_grad()
def yar_run(model, tokens):
    tok = torch.from_numpy(tokens).long()
    out = {'parallel': model.forward_parallel(tok).double().numpy()}
    st, steps = [], []
    for i in range(tok.shape[1]):
        o, st = model.forward_recurrent(tok[:, i], seq_idx=i, prev_states=st)
        steps.append(o)
    out['recurrent'] = torch.stack(steps, 1).double().numpy()
    out['states'] = [s.double().numpy() for s in st]          # (B, H, dk, dv), k already / sqrt(dk)
    cst, chunks = [], []
    for c0 in range(0, tok.shape[1], CHUNK):
        o, cst = model.forward_chunkwise(tok[:, c0:c0 + CHUNK], start_idx=c0, prev_states=cst)
        chunks.append(o)
    out['chunkwise'] = torch.cat(chunks, 1).double().numpy()
    out['chunk_states'] = [s.double().numpy() for s in cst]
    return out


YAR_NOTES = ('yet-another-retnet RetNet in float64 (eval). logits.recurrent: forward_recurrent token by token with '
             'seq_idx = position and prev_states. logits.parallel: forward_parallel. logits.chunkwise: '
             'forward_chunkwise once per chunk of 16 with start_idx and prev_states. state.<l>: the package\'s '
             'state as is (B,H,dk,dv), k divided by sqrt(dk) after rotation. Rotary angles and sin/cos are formed '
             'in float64 from the fp32 thetas buffer (saved as model.rope_freq); the decay gammas 1-exp(linspace) '
             'are float64 too.')


# ================================================================================================
# flash-linear-attention 0.6.0 on the CPU
# ================================================================================================

FLA_MODE = {'force': None, 'chunk': CHUNK, 'calls': []}


def _g_gamma(q):
    """g = log(1 - 2^(-5-h)) in fp32, exactly as fla/ops/retention/{chunk,fused_recurrent,parallel}.py form it."""
    H = q.shape[2]
    g = (1 - 2.0 ** (-5.0 - torch.arange(H, dtype=torch.float))).log()
    return g[None, None, :].expand(q.shape[0], q.shape[1], H).contiguous().to(q.dtype)


def _naive_recurrent(q, k, v, g, scale=None, initial_state=None, output_final_state=True):
    """fla/ops/simple_gla/naive.py naive_recurrent_simple_gla, keeping the input dtype."""
    q, k, v, g = (x.transpose(1, 2) for x in (q, k, v, g))
    Bq, H, Tq, K = q.shape
    scale = K ** -0.5 if scale is None else scale
    q = q * scale
    o = v.new_zeros(Bq, H, Tq, v.shape[-1])
    S = q.new_zeros(Bq, H, K, v.shape[-1])
    if initial_state is not None:
        S = S + initial_state
    for i in range(Tq):
        S = S * g[:, :, i].exp()[..., None, None] + k[:, :, i].unsqueeze(-1) * v[:, :, i].unsqueeze(-2)
        o[:, :, i] = (q[:, :, i].unsqueeze(-1) * S).sum(-2)
    return o.transpose(1, 2), (S if output_final_state else None)


def _naive_chunk(q, k, v, g, initial_state=None, output_final_state=False, chunk_size=64, scale=None):
    """fla/ops/simple_gla/naive.py naive_chunk_simple_gla, keeping the input dtype."""
    from einops import rearrange
    q, k, v, g = (rearrange(x, 'b t h ... -> b h t ...') for x in (q, k, v, g))
    scale = 1.0 / q.shape[-1] ** 0.5 if scale is None else scale
    Tq = q.shape[-2]
    BT = chunk_size
    pad = (BT - Tq % BT) % BT
    if pad:
        q, k, v = (F.pad(x, (0, 0, 0, pad)) for x in (q, k, v))
        g = F.pad(g, (0, pad))
    Bq, H, T1, K = q.shape
    q = q * scale
    q, k, v, dec = (rearrange(x, 'b h (n c) d -> b h n c d', c=BT) for x in (q, k, v, g.unsqueeze(-1)))
    dec = dec.squeeze(-1).cumsum(-1)
    Lm = ((dec.unsqueeze(-1) - dec.unsqueeze(-2)).tril().exp()).tril()
    S = k.new_zeros(Bq, H, K, v.shape[-1]) if initial_state is None else initial_state
    o = torch.zeros_like(v)
    for i in range(T1 // BT):
        qi, ki, vi = q[:, :, i], k[:, :, i], v[:, :, i]
        o[:, :, i] = (qi * dec[:, :, i, :, None].exp()) @ S + (qi @ ki.transpose(-1, -2) * Lm[:, :, i]) @ vi
        S = S * dec[:, :, i, -1, None, None].exp() + \
            (ki * (dec[:, :, i, -1, None] - dec[:, :, i]).exp()[..., None]).transpose(-1, -2) @ vi
    return rearrange(o, 'b h n c d -> b (n c) h d')[:, :Tq], (S if output_final_state else None)


def fla_inv_freq(dk, base=10000.0):
    """10000^(-2j/dk) for j < dk/2, computed in float64 and rounded once to fp32."""
    expo = (np.arange(0, dk, 2, dtype=np.float32) / np.float32(dk)).astype(np.float32)
    return (1.0 / (np.float64(base) ** expo.astype(np.float64))).astype(np.float32)


def fla_patch():
    import fla.layers.multiscale_retention as FLAM
    import fla.modules.mlp as MLP
    import fla.modules.norm.fused_norm_gate as FNG
    import fla.modules.norm.layernorm as LN
    import fla.modules.rotary.ops as ROT
    from fla.modules.norm.layernorm import rms_norm_ref
    from fla.modules.rotary.ops import rotary_embedding_ref
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()

    def make(name):
        def op(q, k, v, scale=None, initial_state=None, output_final_state=False, cu_seqlens=None, **kw):
            assert cu_seqlens is None
            FLA_MODE['calls'].append(name)
            impl = FLA_MODE['force'] or name
            if impl == 'fused_recurrent_retention':
                return _naive_recurrent(q, k, v, _g_gamma(q), scale=scale, initial_state=initial_state,
                                        output_final_state=output_final_state)
            if impl in ('chunk_retention', 'fused_chunk_retention'):
                return _naive_chunk(q, k, v, _g_gamma(q), initial_state=initial_state,
                                    output_final_state=output_final_state, chunk_size=FLA_MODE['chunk'],
                                    scale=scale)
            if impl == 'parallel_retention':
                # the whole sequence as one chunk: sum_{m<=n} exp((n-m) g) (q.k) v, nothing carried
                assert initial_state is None
                return _naive_chunk(q, k, v, _g_gamma(q), chunk_size=q.shape[1], scale=scale)[0], None
            raise ValueError(impl)
        return op

    for n in ('chunk_retention', 'fused_chunk_retention', 'fused_recurrent_retention', 'parallel_retention'):
        setattr(FLAM, n, make(n))

    def rms_norm_cpu(x, weight, bias, residual=None, eps=1e-5, prenorm=False, residual_in_fp32=False):
        return rms_norm_ref(x, weight, bias, residual=residual, eps=eps, prenorm=prenorm, upcast=False)
    LN.rms_norm = rms_norm_cpu

    def rms_norm_gated_cpu(x, g, weight, bias, activation='swish', residual=None, prenorm=False,
                           residual_in_fp32=False, eps=1e-6):
        # modules/norm/fused_norm_gate.py kernel: y = x / sqrt(mean(x^2) + eps) * w (+ b); y * g * sigmoid(g)
        assert residual is None and not prenorm and activation in ('swish', 'silu')
        y = x * (1 / torch.sqrt(x.square().mean(-1, keepdim=True) + eps))
        if weight is not None:
            y = y * weight
        if bias is not None:
            y = y + bias
        return y * g * torch.sigmoid(g)
    FNG.rms_norm_gated = rms_norm_gated_cpu

    def rotary_cpu(x, cos, sin, interleaved=False, inplace=False, seqlen_offsets=0, cu_seqlens=None,
                   chunk_indices=None):
        assert cu_seqlens is None and isinstance(seqlen_offsets, int)
        n = x.shape[1]
        return rotary_embedding_ref(x, cos[seqlen_offsets:seqlen_offsets + n],
                                    sin[seqlen_offsets:seqlen_offsets + n], interleaved=interleaved)
    ROT.rotary_embedding = rotary_cpu

    # inv_freq: torch's fp32 pow is 1 ulp off 10000^(-2j/dk) in a few entries; use the correctly rounded table,
    # the one a checkpoint without a frequency table implies.
    def compute_inv_freq(self, device=None):
        return torch.from_numpy(fla_inv_freq(self.dim, self.base)).to(device)
    ROT.RotaryEmbedding._compute_inv_freq = compute_inv_freq

    # cos/sin: FLA forms position * inv_freq in fp32 and takes torch's fp32 cos/sin (<= 1 ulp from correctly
    # rounded), whatever the model dtype.  Keep the fp32 products and fp32 tables, correctly rounded.
    orig_update = ROT.RotaryEmbedding._update_cos_sin_cache

    def update(self, seqlen, device=None, dtype=None):
        orig_update(self, seqlen, device=device, dtype=dtype)
        if self.scale is None:
            t = torch.arange(self._seq_len_cached, device=device, dtype=torch.float32)
            freqs = torch.outer(t, self._compute_inv_freq(device=device))          # fp32 products
            self._cos_cached = torch.cos(freqs.double()).float().to(dtype)
            self._sin_cached = torch.sin(freqs.double()).float().to(dtype)
    ROT.RotaryEmbedding._update_cos_sin_cache = update

    # modules/activations.py swiglu: x * sigmoid(x) * y ; swiglu_linear = linear(swiglu(x, y), W, b)
    MLP.swiglu_linear = lambda x, y, w, b: F.linear(x * torch.sigmoid(x) * y, w, b)
    MLP.swiglu = lambda x, y: x * torch.sigmoid(x) * y


def fla_build(kw, seed, bf16=False):
    from fla.models import RetNetConfig, RetNetForCausalLM
    torch.manual_seed(seed)
    model = RetNetForCausalLM(RetNetConfig(**kw)).eval()
    randomize(model, seed)
    if bf16:
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(p.to(torch.bfloat16).float())
    return model


def _fla_states(cache, L):
    return [cache[n]['recurrent_state'].double().numpy() for n in range(L)]


@torch.no_grad()
def fla_run(model, tokens):
    tok = torch.from_numpy(tokens).long()
    L = model.config.num_hidden_layers
    out = {}
    FLA_MODE.update(force='parallel_retention', calls=[])
    out['parallel'] = model(input_ids=tok, use_cache=False).logits.double().numpy()
    FLA_MODE.update(force=None, calls=[])
    cache, steps = None, []
    for i in range(tok.shape[1]):
        r = model(input_ids=tok[:, i:i + 1], past_key_values=cache, use_cache=True)
        cache = r.past_key_values
        steps.append(r.logits[:, -1])
    assert set(FLA_MODE['calls']) == {'fused_recurrent_retention'}, FLA_MODE['calls']
    out['recurrent'] = torch.stack(steps, 1).double().numpy()
    out['states'] = _fla_states(cache, L)                       # (B, H, K, V), k unscaled
    FLA_MODE.update(force='chunk_retention', chunk=CHUNK, calls=[])
    r = model(input_ids=tok, use_cache=True)
    out['chunkwise'] = r.logits.double().numpy()
    out['chunk_states'] = _fla_states(r.past_key_values, L)
    FLA_MODE.update(force=None, calls=[])
    return out


FLA_NOTES = ('flash-linear-attention RetNetForCausalLM in float64 on the CPU: model, layers, Cache and rotary code '
             'run as shipped; only the Triton leaf kernels are replaced by FLA\'s own pure-torch references, in copies '
             'that keep float64: fused_recurrent_retention -> naive_recurrent_simple_gla; chunk_retention -> '
             'naive_chunk_simple_gla(chunk_size=16); parallel_retention -> naive_chunk_simple_gla with one chunk '
             'spanning the sequence (naive_retention would compute in fp32); rms_norm -> rms_norm_ref(upcast=False); '
             'the fused gated RMSNorm and swiglu written out from the kernel source; rotary -> rotary_embedding_ref. '
             'logits.recurrent: the model called one token at a time with its Cache. logits.parallel: one call, '
             'parallel op. logits.chunkwise: one call over the whole sequence, chunk op with chunk size 16 (the naive '
             'op carries the state from chunk to chunk; the Triton kernel would use 64). state.<l>: '
             'cache[l][\'recurrent_state\'] as is (B,H,K,V), k unscaled (dk^-1/2 is applied to q). Rotary: '
             'inv_freq = 10000^(-2j/dk) correctly rounded to fp32 (torch\'s fp32 pow is 1 ulp off in a few entries), '
             'position*inv_freq formed in fp32 and cos/sin correctly rounded to fp32, as FLA keeps them in fp32 '
             'for any model dtype.')


# ================================================================================================
# driver
# ================================================================================================

def maxdiff(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def yar_arguments(kw):
    """Every RetNet(...) argument the model was built with: the given ones and the signature's defaults."""
    from yet_another_retnet.retnet import RetNet
    args = {k: p.default for k, p in inspect.signature(RetNet.__init__).parameters.items()
            if k not in ('self', 'device', 'dtype') and p.default is not inspect.Parameter.empty}
    args.update(kw)
    return args


def convert_checkpoint(model, flavour, args, out_dir):
    """Write the model directory the way a user converts a checkpoint: torch.save the state_dict, then
    tools/convert.py with the constructor arguments as --config-json.  -> (config, tensors) as written."""
    with tempfile.TemporaryDirectory() as tmp:
        pt, arch = os.path.join(tmp, 'model.pt'), os.path.join(tmp, 'arch.json')
        torch.save(model.state_dict(), pt)
        with open(arch, 'w') as f:
            json.dump(args, f)
        rc = convert.main(['--from', flavour, pt, out_dir, '--config-json', arch, '--dtype', 'f32'])
        if rc:
            raise SystemExit('convert.py failed for %s' % out_dir)
    with open(os.path.join(out_dir, 'config.json')) as f:
        config = json.load(f)
    tensors = X.read_safetensors(os.path.join(out_dir, 'model.safetensors'))[0]
    return config, tensors


def make_fixture(name, flavour, seed, kw, opts, out_root, store=np.float32):
    t0 = time.time()
    bf16 = opts.get('bf16', False)
    out_dir = os.path.join(out_root, name)
    if flavour == 'torchscale':
        model = ts_build(kw, seed)
        config, tensors = convert_checkpoint(model, 'torchscale', vars(model.args), out_dir)
        direct = X.export_torchscale(model)
        run, notes, pkg = ts_run, TS_NOTES, 'torchscale'
    elif flavour == 'yar':
        model = yar_build(kw, seed)
        config, tensors = convert_checkpoint(model, 'yar', yar_arguments(kw), out_dir)
        direct = X.export_yar(model)
        run, notes, pkg = yar_run, YAR_NOTES, 'yet-another-retnet'
    else:
        model = fla_build(kw, seed, bf16=bf16)
        config, tensors = X.export_fla(model, torch_dtype='bfloat16' if bf16 else 'float32')
        X.save_model(out_dir, config, tensors, dtype='bfloat16' if bf16 else 'float32')
        direct = None
        run, notes, pkg = fla_run, FLA_NOTES, 'flash-linear-attention'
    if direct is not None:
        # the converted checkpoint must be the model the package holds in memory
        assert direct[0] == config, (direct[0], config)
        assert sorted(direct[1]) == sorted(tensors)
        assert all(np.array_equal(direct[1][k], tensors[k]) for k in tensors)
    if bf16:
        notes = ('All weights were rounded to bfloat16 (model.safetensors stores BF16) and the reference computed '
                 'in float64 from the rounded weights. ') + notes
    c = X.resolved(config)
    tokens = np.random.default_rng(seed).integers(0, c['V'], size=(B, T)).astype(np.int32)

    ref = run(copy.deepcopy(model).double(), tokens)
    lo32 = run(model, tokens)              # the package's own fp32 run, for the metadata only
    if flavour == 'torchscale':
        clamp = maxdiff(ref['parallel'], ref['recurrent'])
        assert clamp < 1e-3, clamp
    else:
        assert maxdiff(ref['parallel'], ref['recurrent']) < 1e-10
        assert maxdiff(ref['chunkwise'], ref['recurrent']) < 1e-10
        for a, b in zip(ref['chunk_states'], ref['states']):
            assert maxdiff(a, b) <= 1e-10 * max(1.0, float(np.max(np.abs(b))))

    H, dk, dv = c['H'], c['dk'], c['dv']
    out = {'tokens': tokens}
    for form in ('recurrent', 'parallel', 'chunkwise'):
        if form in ref:
            assert ref[form].shape == (B, T, c['V'])
            out['logits.' + form] = ref[form].astype(store)
    for n, s in enumerate(ref['states']):
        assert s.shape == (B, H, dk, dv), s.shape
        out['state.%d' % n] = s.astype(store)
        if 'scales' in ref:
            out['state_scale.%d' % n] = ref['scales'][n].astype(store)
    fp32 = {f: maxdiff(lo32[f], ref[f]) for f in ('recurrent', 'parallel', 'chunkwise') if f in ref}
    meta = {
        'flavour': flavour,
        'package': pkg,
        'package_version': version(pkg) + (' (fla-core %s)' % version('fla-core') if flavour == 'fla' else ''),
        'torch_version': torch.__version__,
        'seed': str(seed),
        'reference_dtype': 'float64',
        'chunk': str(CHUNK),
        'T': str(T),
        'B': str(B),
        'weights_dtype': 'bfloat16' if bf16 else 'float32',
        'constructor': json.dumps(kw, sort_keys=True),
        'package_fp32_max_abs_diff': json.dumps(fp32, sort_keys=True),
        'notes': notes,
    }
    X.write_safetensors(os.path.join(out_dir, 'reference.safetensors'), out, meta)
    size = sum(os.path.getsize(os.path.join(out_dir, f)) for f in os.listdir(out_dir))
    log('%-13s %-10s seed %d  params %7d  %4.0f KB  fp32 package vs reference %s  (%.1fs)' % (
        name, flavour, seed, X.count_params(tensors), size / 1024,
        ' '.join('%s %.1e' % kv for kv in sorted(fp32.items())), time.time() - t0))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--out', default=os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'tests',
                                                  'fixtures'))
    ap.add_argument('--only', nargs='*', help='fixture names (default: all)')
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--float64', action='store_true',
                    help='store the reference tensors as F64 instead of F32 (to check this tool against '
                         'tools/check_fixtures.py at 1e-9; the committed fixtures are F32)')
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    names = [f[0] for f in FIXTURES]
    for n in a.only or []:
        if n not in names:
            ap.error('unknown fixture %r (have %s)' % (n, ', '.join(names)))
    ts_patch()
    fla_patch()
    for name, flavour, seed, kw, opts in FIXTURES:
        if a.only and name not in a.only:
            continue
        make_fixture(name, flavour, seed, kw, opts, os.path.normpath(a.out),
                     store=np.float64 if a.float64 else np.float32)


if __name__ == '__main__':
    main()
