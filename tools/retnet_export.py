"""Write RetNet modules of the three reference packages in the retnetd model format.

    torchscale==0.3.0           torchscale.architecture.retnet.RetNetDecoder
    yet-another-retnet==0.5.1   yet_another_retnet.retnet.RetNet
    flash-linear-attention      fla.models.RetNetForCausalLM  (fla-core 0.6.0)

The format is described in docs/model-format.md; `expected_tensors()` is its
tensor table in code.  Each `export_*` function returns (config, tensors):
config is the config.json dict, tensors maps our tensor names to float32
NumPy arrays.  `save_model()` writes a model directory.

`torchscale_from_state_dict()` and `yar_from_state_dict()` do the same from a
state_dict and the package's constructor arguments (what tools/convert.py
reads from a checkpoint); `export_torchscale()` and `export_yar()` call them
with the model's own.  They raise `ConversionError` naming the tensor or
argument the format cannot take, `MissingArguments` for arguments the tensors
do not determine.

Only the `export_*` functions need torch; the rest is plain Python and NumPy
(tools/check_fixtures.py uses it without torch; the state_dict functions take
torch tensors or NumPy arrays).
"""
import json
import math
import os

import numpy as np

# retnetd fields with their defaults (= FLA's behaviour); see docs/model-format.md
VARIANT_DEFAULTS = {
    'norm_type': 'rmsnorm',
    'ffn_type': 'glu',
    'gate_act': 'swish',
    'attention_bias': False,
    'mlp_bias': False,
    'lm_head_bias': False,
    'position_encoding': 'rotary',
    'rope_layout': 'half',
    'rope_freq': 'pow',
    'rope_theta': 10000.0,
    'decay': 'pow2',
    'qk_scale': 'q',
    'retention_norm': 'none',
    'group_norm': 'rms',
    'group_norm_eps': None,          # None: norm_eps
    'embed_scale': 1.0,
    'embed_norm': False,
    'final_norm': True,
    'norm_position': 'pre',
}

FLA_DEFAULTS = {
    'vocab_size': 32000,
    'hidden_size': 2048,
    'num_hidden_layers': 24,
    'num_heads': 8,
    'expand_k': 1.0,
    'expand_v': 2.0,
    'hidden_ratio': 2,
    'intermediate_size': None,
    'hidden_act': 'swish',
    'norm_eps': 1e-6,
    'elementwise_affine': True,
    'tie_word_embeddings': False,
}


def resolved(config):
    """config.json dict -> every field with its default filled in, plus the sizes (D, H, L, V, dk, dv, F)."""
    c = dict(FLA_DEFAULTS)
    c.update(VARIANT_DEFAULTS)
    c.update(config)
    if c['group_norm_eps'] is None:
        c['group_norm_eps'] = c['norm_eps']
    D, H = int(c['hidden_size']), int(c['num_heads'])
    kdim, vdim = int(D * c['expand_k']), int(D * c['expand_v'])
    assert kdim % H == 0 and vdim % H == 0, 'key/value dims not divisible by num_heads'
    F = c['intermediate_size']
    if F is None:       # FLA GatedMLP: hidden_ratio null means 4 there
        F = int(D * (4 if c['hidden_ratio'] is None else c['hidden_ratio']) * 2 / 3)
        F = 256 * ((F + 255) // 256)
    c.update(D=D, H=H, L=int(c['num_hidden_layers']), V=int(c['vocab_size']), dk=kdim // H, dv=vdim // H, F=int(F))
    return c


def expected_tensors(config, with_rope_freq=False):
    """name -> shape of every tensor docs/model-format.md requires for `config` (and model.rope_freq if asked)."""
    c = resolved(config)
    D, H, L, V, dk, dv, F = (c[k] for k in ('D', 'H', 'L', 'V', 'dk', 'dv', 'F'))
    ln = c['norm_type'] == 'layernorm'
    t = {'model.embeddings.weight': (V, D)}
    if c['embed_norm']:
        t['model.embed_norm.weight'] = (D,)
    for n in range(L):
        p = 'model.layers.%d.' % n
        t[p + 'attn_norm.weight'] = (D,)
        t[p + 'mlp_norm.weight'] = (D,)
        if ln:
            t[p + 'attn_norm.bias'] = (D,)
            t[p + 'mlp_norm.bias'] = (D,)
        outs = {'q_proj': H * dk, 'k_proj': H * dk, 'v_proj': H * dv, 'g_proj': H * dv}
        for name, out in outs.items():
            t[p + 'attn.%s.weight' % name] = (out, D)
        t[p + 'attn.o_proj.weight'] = (D, H * dv)
        if c['attention_bias']:
            for name, out in outs.items():
                t[p + 'attn.%s.bias' % name] = (out,)
            t[p + 'attn.o_proj.bias'] = (D,)
        if c['elementwise_affine']:
            t[p + 'attn.g_norm_swish_gate.weight'] = (dv,)
        mlp = {'up_proj': F}
        if c['ffn_type'] == 'glu':
            mlp['gate_proj'] = F
        for name, out in mlp.items():
            t[p + 'mlp.%s.weight' % name] = (out, D)
        t[p + 'mlp.down_proj.weight'] = (D, F)
        if c['mlp_bias']:
            for name, out in mlp.items():
                t[p + 'mlp.%s.bias' % name] = (out,)
            t[p + 'mlp.down_proj.bias'] = (D,)
    if c['final_norm']:
        t['model.norm.weight'] = (D,)
        if ln:
            t['model.norm.bias'] = (D,)
    if not c['tie_word_embeddings']:
        t['lm_head.weight'] = (V, D)
    if c['lm_head_bias']:
        t['lm_head.bias'] = (V,)
    if with_rope_freq:
        t['model.rope_freq'] = (dk,)
    return t


def check_tensors(config, tensors):
    """Raise unless `tensors` holds exactly the tensors the format requires for `config`, with those shapes."""
    want = expected_tensors(config, with_rope_freq='model.rope_freq' in tensors)
    missing = sorted(set(want) - set(tensors))
    extra = sorted(set(tensors) - set(want))
    if missing or extra:
        raise ValueError('tensor set differs from the format: missing %s, unexpected %s' % (missing, extra))
    for k, shape in want.items():
        if tuple(tensors[k].shape) != tuple(shape):
            raise ValueError('%s: shape %s, the format says %s' % (k, tuple(tensors[k].shape), shape))


def _np(t):
    return t.detach().to('cpu').float().numpy().copy()


def _act_name(fn):
    import torch.nn.functional as F
    for name, f in (('swish', F.silu), ('gelu', F.gelu), ('relu', F.relu)):
        if fn is f:
            return name
    raise ValueError('unsupported activation %r' % (fn,))


def _ts_log_decay(H):
    """torchscale retnet.py:27, formed in fp32: log(1 - 2^(-5-h))."""
    one_minus = (1.0 - 2.0 ** (-5.0 - np.arange(H, dtype=np.float64))).astype(np.float32)
    return np.log(one_minus.astype(np.float64)).astype(np.float32)


def _linspace_freq(dk):
    """1 / 10000^linspace(0, 1, dk/2), each repeated twice (torchscale angle, yar thetas), fp32."""
    lin = np.linspace(0.0, 1.0, dk // 2).astype(np.float32)
    return np.repeat((1.0 / 10000.0 ** lin.astype(np.float64)).astype(np.float32), 2)


# ------------------------------------------------------------------------------------------------
# state_dict conversion: shared pieces
# ------------------------------------------------------------------------------------------------

class ConversionError(ValueError):
    """The checkpoint cannot be written in the format; the message names the tensor or argument."""


class MissingArguments(ConversionError):
    """Model arguments that the tensors do not determine and that were not given.  `what` names the
    package's arguments (e.g. 'RetNetConfig'); `defaults` holds the package's defaults for the example."""

    def __init__(self, package, names, what, defaults):
        self.package, self.names = package, list(names)
        one = len(self.names) == 1
        example = json.dumps({k: defaults[k] for k in self.names})
        super().__init__('%s: %s %s not determined by the state_dict; add %s to the --config-json file of %s '
                         'arguments (or to the checkpoint\'s "args") with the value%s the model was built with, '
                         'e.g. %s (the package default%s)' % (
                             package, ', '.join(self.names), 'is' if one else 'are', 'it' if one else 'them', what,
                             '' if one else 's', example, '' if one else 's'))


def _dtype_name(t):
    """'float32', 'bfloat16', ... for a torch tensor or a NumPy array."""
    return str(t.dtype).replace('torch.', '')


def _shape(t):
    return tuple(int(s) for s in t.shape)


def _layer_count(sd, prefix):
    """Number of layers from keys '<prefix><n>.', checking that they run 0..L-1."""
    idx = set()
    for k in sd:
        if k.startswith(prefix):
            head = k[len(prefix):].split('.', 1)[0]
            if not head.isdigit():
                raise ConversionError('%s: unexpected tensor name' % k)
            idx.add(int(head))
    if not idx:
        raise ConversionError('no %s<n>.* tensors: this is not a RetNet state_dict of that package' % prefix)
    L = max(idx) + 1
    gaps = sorted(set(range(L)) - idx)
    if gaps:
        raise ConversionError('layers %s missing (keys %s<n>.*, highest n is %d)' % (gaps, prefix, L - 1))
    return L


def _check_keys(sd, want, package):
    """Exactly the names in `want` (name -> shape), with those shapes; otherwise name the first offenders."""
    extra = sorted(set(sd) - set(want))
    if extra:
        raise ConversionError('unexpected tensor %s (%d such) in the %s state_dict: not part of a model this '
                              'converter supports' % (', '.join(extra[:4]) + (', ...' if len(extra) > 4 else ''),
                                                      len(extra), package))
    missing = sorted(set(want) - set(sd))
    if missing:
        raise ConversionError('tensor %s missing from the %s state_dict' % (
            ', '.join(missing[:4]) + (', ...' if len(missing) > 4 else ''), package))
    for k in sorted(want):
        if _shape(sd[k]) != tuple(want[k]):
            raise ConversionError('%s: shape %s does not fit, expected %s' % (k, _shape(sd[k]), tuple(want[k])))


def _check_arg(args, name, value, what):
    """A size the tensors determine: when the arguments give it too, they must agree."""
    if name in args and args[name] is not None and args[name] != value:
        raise ConversionError('%s is %r in the model arguments, but %s gives %r' % (name, args[name], what, value))


def _float_tensor(t):
    """Any float tensor -> float32 NumPy array (exact for F32/BF16/F16 sources)."""
    if hasattr(t, 'detach'):
        return _np(t)
    return np.asarray(t, dtype=np.float32).copy()


def _same_values(a, b):
    return _shape(a) == _shape(b) and np.array_equal(_float_tensor(a), _float_tensor(b))


def _check_table(name, t, want, exact):
    """A buffer the format implies (decay, rotary frequencies): fp32 within 1e-6 relative (or bit-exact),
    a bf16/fp16 copy within its rounding."""
    got = _float_tensor(t)
    if got.shape != want.shape:
        raise ConversionError('%s: shape %s does not fit, expected %s' % (name, got.shape, want.shape))
    if _dtype_name(t) == 'float32':
        ok = np.array_equal(got, want) if exact else np.max(np.abs(got / want - 1)) <= 1e-6
    else:
        ok = np.max(np.abs(got / want - 1)) <= 1e-2
    if not ok:
        raise ConversionError('%s = %s, expected %s: a variant this converter does not support' % (
            name, got.tolist(), want.tolist()))


# ------------------------------------------------------------------------------------------------
# torchscale 0.3.0
# ------------------------------------------------------------------------------------------------

# RetNetConfig (torchscale/architecture/config.py) field names
TORCHSCALE_ARGS = (
    'decoder_embed_dim', 'decoder_value_embed_dim', 'decoder_retention_heads', 'decoder_ffn_embed_dim',
    'decoder_layers', 'decoder_normalize_before', 'activation_fn', 'dropout', 'drop_path_rate',
    'activation_dropout', 'no_scale_embedding', 'layernorm_embedding', 'moe_freq', 'moe_top1_expert',
    'moe_expert_count', 'moe_gating_use_fp32', 'moe_eval_capacity_token_fraction', 'moe_second_expert_policy',
    'moe_normalize_gate_prob_before_dropping', 'use_xmoe', 'rel_pos_buckets', 'max_rel_pos', 'deepnorm', 'subln',
    'multiway', 'share_decoder_input_output_embed', 'max_target_positions', 'no_output_layer', 'layernorm_eps',
    'chunkwise_recurrent', 'recurrent_chunk_size', 'vocab_size', 'checkpoint_activations', 'fsdp', 'ddp_rank',
    'xpos_rel_pos', 'xpos_scale_base')

_TS_LAYER = {
    # torchscale name: (our name, shape as a function of D, Dv, F)
    'retention_layer_norm.weight': ('attn_norm.weight', lambda D, Dv, F: (D,)),
    'retention.q_proj.weight': ('attn.q_proj.weight', lambda D, Dv, F: (D, D)),
    'retention.k_proj.weight': ('attn.k_proj.weight', lambda D, Dv, F: (D, D)),
    'retention.v_proj.weight': ('attn.v_proj.weight', lambda D, Dv, F: (Dv, D)),
    'retention.g_proj.weight': ('attn.g_proj.weight', lambda D, Dv, F: (Dv, D)),
    'retention.out_proj.weight': ('attn.o_proj.weight', lambda D, Dv, F: (D, Dv)),
    'final_layer_norm.weight': ('mlp_norm.weight', lambda D, Dv, F: (D,)),
    # GLU: fc2(act(fc1 x) * gate x)  ->  down(act(gate_proj x) * up_proj x)
    'ffn.fc1.weight': ('mlp.gate_proj.weight', lambda D, Dv, F: (F, D)),
    'ffn.gate.weight': ('mlp.up_proj.weight', lambda D, Dv, F: (F, D)),
    'ffn.fc2.weight': ('mlp.down_proj.weight', lambda D, Dv, F: (D, F)),
}

_TS_DEFAULTS = {'activation_fn': 'gelu', 'no_scale_embedding': True, 'layernorm_eps': 1e-6, 'deepnorm': False,
                'decoder_retention_heads': 3}


def torchscale_from_state_dict(sd, args):
    """torchscale RetNetDecoder state_dict + RetNetConfig arguments -> (config, tensors).

    sd: name -> tensor (torch or NumPy), the decoder's own names (embed_tokens.weight, layers.N...).
    args: RetNetConfig arguments as given (a dict; missing keys are not filled with the package defaults).
    The tensors determine the sizes, the head count (retnet_rel_pos.decay has one entry per head), the
    embedding norm and whether the output projection is the embedding; activation_fn, no_scale_embedding and
    layernorm_eps (and deepnorm for a model without a final norm) must be given."""
    args = {k: v for k, v in args.items() if v is not None}
    for k in sorted(sd):
        parts = k.split('.')
        if any('moe' in p for p in parts):
            raise ConversionError('%s: torchscale MoE weights are not supported' % k)
        if 'A' in parts or 'B' in parts:
            raise ConversionError('%s: torchscale multiway weights (multiway=True) are not supported' % k)
    for name, bad in (('multiway', lambda v: bool(v)), ('moe_freq', lambda v: v != 0), ('use_xmoe', bool),
                      ('xpos_rel_pos', bool), ('no_output_layer', bool)):
        if name in args and bad(args[name]):
            raise ConversionError('%s=%r: not supported (only the plain RetNetDecoder with an output layer is)' % (
                name, args[name]))

    emb = sd.get('embed_tokens.weight')
    if emb is None or len(_shape(emb)) != 2:
        raise ConversionError('embed_tokens.weight missing or not a matrix: not a torchscale RetNetDecoder '
                              'state_dict')
    V, D = _shape(emb)
    L = _layer_count(sd, 'layers.')
    if 'retnet_rel_pos.decay' in sd:
        if len(_shape(sd['retnet_rel_pos.decay'])) != 1:
            raise ConversionError('retnet_rel_pos.decay: shape %s does not fit, expected (heads,)' %
                                  (_shape(sd['retnet_rel_pos.decay']),))
        H = _shape(sd['retnet_rel_pos.decay'])[0]
        _check_arg(args, 'decoder_retention_heads', H, 'retnet_rel_pos.decay (one entry per head)')
    elif 'decoder_retention_heads' in args:
        H = int(args['decoder_retention_heads'])
    else:
        raise MissingArguments('torchscale', ['decoder_retention_heads'], 'RetNetConfig', _TS_DEFAULTS)
    v0, f0 = sd.get('layers.0.retention.v_proj.weight'), sd.get('layers.0.ffn.fc1.weight')
    if v0 is None or f0 is None:
        raise ConversionError('tensor %s missing from the torchscale state_dict' % (
            'layers.0.retention.v_proj.weight' if v0 is None else 'layers.0.ffn.fc1.weight'))
    Dv, F = _shape(v0)[0], _shape(f0)[0]
    if H <= 0 or D % H or Dv % H or (D // H) % 2:
        raise ConversionError('%d heads do not divide decoder_embed_dim %d / decoder_value_embed_dim %d into even '
                              'head sizes' % (H, D, Dv))
    dk = D // H
    _check_arg(args, 'decoder_embed_dim', D, 'embed_tokens.weight')
    _check_arg(args, 'decoder_value_embed_dim', Dv, 'layers.0.retention.v_proj.weight')
    _check_arg(args, 'decoder_ffn_embed_dim', F, 'layers.0.ffn.fc1.weight')
    _check_arg(args, 'decoder_layers', L, 'the layers.<n> tensors')
    if int(args.get('vocab_size', -1)) > 0:
        _check_arg(args, 'vocab_size', V, 'embed_tokens.weight')

    embed_norm = 'layernorm_embedding.weight' in sd
    final_norm = 'layer_norm.weight' in sd
    if 'layernorm_embedding' in args and bool(args['layernorm_embedding']) != embed_norm:
        raise ConversionError('layernorm_embedding=%r in the model arguments, but layernorm_embedding.weight is %s' % (
            args['layernorm_embedding'], 'present' if embed_norm else 'missing'))
    share = args.get('share_decoder_input_output_embed')
    if 'output_projection.weight' in sd:
        same = _same_values(sd['output_projection.weight'], emb)
        if share and not same:
            raise ConversionError('share_decoder_input_output_embed=True, but output_projection.weight differs from '
                                  'embed_tokens.weight')
        tied = same if share is None else bool(share)
    elif share:
        tied = True
    else:
        raise ConversionError('tensor output_projection.weight missing from the torchscale state_dict (when the '
                              'output projection is the embedding, give share_decoder_input_output_embed: true)')

    want = {'embed_tokens.weight': (V, D)}
    if embed_norm:
        want['layernorm_embedding.weight'] = (D,)
    if final_norm:
        want['layer_norm.weight'] = (D,)
    if 'output_projection.weight' in sd:
        want['output_projection.weight'] = (V, D)
    for n in range(L):
        for src, (_, shape) in _TS_LAYER.items():
            want['layers.%d.%s' % (n, src)] = shape(D, Dv, F)
    for k in ('retnet_rel_pos.angle', 'retnet_rel_pos.decay'):
        if k in sd:
            want[k] = (dk,) if k.endswith('angle') else (H,)
    _check_keys(sd, want, 'torchscale')

    # norm position, as RetNetConfig resolves deepnorm / subln / decoder_normalize_before
    deepnorm = bool(args.get('deepnorm', False))
    subln = bool(args.get('subln', True))
    before = bool(args.get('decoder_normalize_before', True))
    if deepnorm:
        before, subln = False, False
    if subln:
        before, deepnorm = True, False
    if final_norm and not before:
        raise ConversionError('layer_norm.weight is present (a pre-norm model) but the arguments make the model '
                              'post-norm (deepnorm=%r, subln=%r, decoder_normalize_before=%r)' % (
                                  args.get('deepnorm'), args.get('subln'), args.get('decoder_normalize_before')))
    required = ['activation_fn', 'no_scale_embedding', 'layernorm_eps']
    if not final_norm and 'deepnorm' not in args:
        required.append('deepnorm')     # no final norm: post-norm; deepnorm says whether residuals are scaled
    missing = [k for k in required if k not in args]
    if missing:
        raise MissingArguments('torchscale', missing, 'RetNetConfig', _TS_DEFAULTS)
    if not final_norm:
        if before:
            raise ConversionError('layer_norm.weight missing from the torchscale state_dict (a pre-norm model, '
                                  'decoder_normalize_before / subln, has a final norm)')
        if not deepnorm:
            raise ConversionError('post-norm torchscale without deepnorm (subln=False, decoder_normalize_before='
                                  'False) is not a RetNet variant the format covers')
    act = args['activation_fn']
    if act not in ('gelu', 'swish', 'relu'):
        raise ConversionError('activation_fn=%r: not supported (gelu, swish, relu)' % (act,))

    # the decay buffer is implied by decay=pow2 and the angle by rope_freq=linspace: make a mismatch loud
    if 'retnet_rel_pos.decay' in sd:
        _check_table('retnet_rel_pos.decay', sd['retnet_rel_pos.decay'], _ts_log_decay(H), exact=True)
    angle = sd.get('retnet_rel_pos.angle')
    if angle is not None:
        _check_table('retnet_rel_pos.angle', angle, _linspace_freq(dk), exact=False)

    eps = float(args['layernorm_eps'])
    config = {
        'model_type': 'retnet',
        'vocab_size': V,
        'hidden_size': D,
        'num_hidden_layers': L,
        'num_heads': H,
        'expand_k': 1.0,
        'expand_v': Dv / D,
        'intermediate_size': F,
        'hidden_act': act,
        'norm_eps': eps,
        'elementwise_affine': False,
        'tie_word_embeddings': tied,
        'norm_type': 'rmsnorm',
        'ffn_type': 'glu',
        'gate_act': 'swish',
        'attention_bias': False,
        'mlp_bias': False,
        'lm_head_bias': False,
        'position_encoding': 'rotary',
        'rope_layout': 'interleaved',
        'rope_freq': 'linspace',
        'rope_theta': 10000.0,
        'decay': 'pow2',
        'qk_scale': 'k',
        'retention_norm': 'torchscale',
        'group_norm': 'rms',
        'group_norm_eps': eps,
        'embed_scale': 1.0 if args['no_scale_embedding'] else math.sqrt(D),
        'embed_norm': embed_norm,
        'final_norm': final_norm,
        'norm_position': 'pre' if final_norm else 'deepnorm',
    }
    if int(D * config['expand_v']) != Dv:
        raise ConversionError('decoder_value_embed_dim %d is not hidden_size * expand_v' % Dv)

    t = {'model.embeddings.weight': _float_tensor(emb)}
    if embed_norm:
        t['model.embed_norm.weight'] = _float_tensor(sd['layernorm_embedding.weight'])
    for n in range(L):
        for src, (dst, _) in _TS_LAYER.items():
            t['model.layers.%d.%s' % (n, dst)] = _float_tensor(sd['layers.%d.%s' % (n, src)])
    if final_norm:
        t['model.norm.weight'] = _float_tensor(sd['layer_norm.weight'])
    if not tied:
        t['lm_head.weight'] = _float_tensor(sd['output_projection.weight'])
    if angle is not None and _dtype_name(angle) == 'float32':
        # the package's own table; a bf16/fp16 copy is left out and the engine computes the fp32 one
        t['model.rope_freq'] = _float_tensor(angle)
    check_tensors(config, t)
    return config, t


def export_torchscale(model):
    """RetNetDecoder -> (config, tensors).  Model built with an RetNetConfig `model.args`."""
    return torchscale_from_state_dict(model.state_dict(), vars(model.args))


# ------------------------------------------------------------------------------------------------
# yet-another-retnet 0.5.1
# ------------------------------------------------------------------------------------------------

# yet_another_retnet.retnet.RetNet(...) argument names
YAR_ARGS = ('num_tokens', 'd_model', 'nhead', 'num_layers', 'dropout', 'activation', 'dim_feedforward',
            'norm_first', 'layer_norm_eps', 'device', 'dtype')

_YAR_LAYER = {
    # yar module: (our module, weight shape, bias shape) as functions of D, F
    'norm1': ('attn_norm', lambda D, F: (D,), lambda D, F: (D,)),
    'norm2': ('mlp_norm', lambda D, F: (D,), lambda D, F: (D,)),
    'retention.q_proj': ('attn.q_proj', lambda D, F: (D, D), lambda D, F: (D,)),
    'retention.k_proj': ('attn.k_proj', lambda D, F: (D, D), lambda D, F: (D,)),
    'retention.v_proj': ('attn.v_proj', lambda D, F: (D, D), lambda D, F: (D,)),
    'retention.g_proj': ('attn.g_proj', lambda D, F: (D, D), lambda D, F: (D,)),
    'retention.out_proj': ('attn.o_proj', lambda D, F: (D, D), lambda D, F: (D,)),
    'linear1': ('mlp.up_proj', lambda D, F: (F, D), lambda D, F: (F,)),
    'linear2': ('mlp.down_proj', lambda D, F: (D, F), lambda D, F: (D,)),
}

_YAR_DEFAULTS = {'activation': 'swish', 'norm_first': True, 'layer_norm_eps': 1e-6}


def yar_from_state_dict(sd, args, group_norm_eps=1e-6):
    """yet-another-retnet RetNet state_dict + RetNet(...) arguments -> (config, tensors).

    The tensors determine the sizes and the head count (each layer's retention.thetas has d_model / nhead
    entries); activation, norm_first and layer_norm_eps must be given.  RetNet builds its retention group norm
    with eps 1e-6 (`group_norm_eps`)."""
    args = {k: v for k, v in args.items() if v is not None}
    emb = sd.get('embedding.weight')
    if emb is None or len(_shape(emb)) != 2:
        raise ConversionError('embedding.weight missing or not a matrix: not a yet-another-retnet RetNet state_dict')
    V, D = _shape(emb)
    L = _layer_count(sd, 'decoder.layers.')
    th0 = sd.get('decoder.layers.0.retention.thetas')
    if th0 is None:
        raise ConversionError('tensor decoder.layers.0.retention.thetas missing from the yet-another-retnet '
                              'state_dict (RetNet with relative_position=False is not supported)')
    if len(_shape(th0)) != 1 or _shape(th0)[0] <= 0 or D % _shape(th0)[0]:
        raise ConversionError('decoder.layers.0.retention.thetas: shape %s does not fit d_model %d' % (
            _shape(th0), D))
    dk = _shape(th0)[0]
    H = D // dk
    _check_arg(args, 'nhead', H, 'decoder.layers.0.retention.thetas (d_model / nhead entries)')
    f0 = sd.get('decoder.layers.0.linear1.weight')
    if f0 is None:
        raise ConversionError('tensor decoder.layers.0.linear1.weight missing from the yet-another-retnet state_dict')
    F = _shape(f0)[0]
    _check_arg(args, 'dim_feedforward', F, 'decoder.layers.0.linear1.weight')
    _check_arg(args, 'd_model', D, 'embedding.weight')
    _check_arg(args, 'num_layers', L, 'the decoder.layers.<n> tensors')
    _check_arg(args, 'num_tokens', V, 'embedding.weight')
    want = {'embedding.weight': (V, D), 'out.weight': (V, D), 'out.bias': (V,)}
    for n in range(L):
        want['decoder.layers.%d.retention.thetas' % n] = (dk,)
        for src, (_, w, b) in _YAR_LAYER.items():
            want['decoder.layers.%d.%s.weight' % (n, src)] = w(D, F)
            want['decoder.layers.%d.%s.bias' % (n, src)] = b(D, F)
    _check_keys(sd, want, 'yet-another-retnet')
    for n in range(L):
        k = 'decoder.layers.%d.retention.thetas' % n
        if not _same_values(sd[k], th0):
            raise ConversionError('%s differs from layer 0\'s thetas' % k)
    _check_table('decoder.layers.0.retention.thetas', th0, _linspace_freq(dk), exact=False)
    missing = [k for k in ('activation', 'norm_first', 'layer_norm_eps') if k not in args]
    if missing:
        raise MissingArguments('yet-another-retnet', missing, 'RetNet(...)', _YAR_DEFAULTS)
    act = args['activation']
    if act not in ('swish', 'gelu', 'relu'):
        raise ConversionError('activation=%r: not supported (swish, gelu, relu)' % (act,))

    eps = float(args['layer_norm_eps'])
    config = {
        'model_type': 'retnet',
        'vocab_size': V,
        'hidden_size': D,
        'num_hidden_layers': L,
        'num_heads': H,
        'expand_k': 1.0,
        'expand_v': 1.0,
        'intermediate_size': F,
        'hidden_act': act,
        'norm_eps': eps,
        'elementwise_affine': False,
        'tie_word_embeddings': False,
        'norm_type': 'layernorm',
        'ffn_type': 'mlp',
        'gate_act': act,
        'attention_bias': True,
        'mlp_bias': True,
        'lm_head_bias': True,
        'position_encoding': 'rotary',
        'rope_layout': 'interleaved',
        'rope_freq': 'linspace',
        'rope_theta': 10000.0,
        'decay': 'linspace',
        'qk_scale': 'k',
        'retention_norm': 'none',
        'group_norm': 'layer',
        'group_norm_eps': float(group_norm_eps),
        'embed_scale': 1.0,
        'embed_norm': False,
        'final_norm': False,
        'norm_position': 'pre' if args['norm_first'] else 'post',
    }
    t = {'model.embeddings.weight': _float_tensor(emb)}
    for n in range(L):
        for src, (dst, _, _) in _YAR_LAYER.items():
            for wb in ('weight', 'bias'):
                t['model.layers.%d.%s.%s' % (n, dst, wb)] = _float_tensor(sd['decoder.layers.%d.%s.%s' % (n, src, wb)])
    t['lm_head.weight'] = _float_tensor(sd['out.weight'])
    t['lm_head.bias'] = _float_tensor(sd['out.bias'])
    if _dtype_name(th0) == 'float32':
        t['model.rope_freq'] = _float_tensor(th0)
    check_tensors(config, t)
    return config, t


def export_yar(model):
    """yet_another_retnet.retnet.RetNet -> (config, tensors)."""
    layers = model.decoder.layers
    l0, r0 = layers[0], layers[0].retention
    act = _act_name(l0.activation)
    if _act_name(r0.activation) != act:
        raise ConversionError('retention gate and FFN use different activations')
    for layer in layers:
        if (layer.norm_first != l0.norm_first or layer.norm1.eps != l0.norm1.eps or layer.norm2.eps != l0.norm1.eps
                or layer.retention.group_norm.eps != r0.group_norm.eps):
            raise ConversionError('layers differ')
    args = {'nhead': r0.num_heads, 'activation': act, 'norm_first': l0.norm_first, 'layer_norm_eps': l0.norm1.eps}
    return yar_from_state_dict(model.state_dict(), args, group_norm_eps=r0.group_norm.eps)


# ------------------------------------------------------------------------------------------------
# flash-linear-attention 0.6.0
# ------------------------------------------------------------------------------------------------

def export_fla(model, torch_dtype='float32'):
    """fla RetNetForCausalLM -> (config, tensors).  The config keeps FLA's own field names only."""
    c = model.config
    unsupported = {'num_kv_heads': None, 'feature_map': None, 'use_short_conv': False, 'use_output_gate': True,
                   'attn': None, 'hidden_act': 'swish'}
    for k, want in unsupported.items():
        if getattr(c, k, want) != want:
            raise ValueError('FLA RetNet with %s=%r is not supported' % (k, getattr(c, k)))
    if getattr(c, 'attnres_block_size', None):
        raise ValueError('FLA attnres models are not supported')
    config = {
        'architectures': ['RetNetForCausalLM'],
        'model_type': 'retnet',
        'vocab_size': c.vocab_size,
        'hidden_size': c.hidden_size,
        'num_hidden_layers': c.num_hidden_layers,
        'num_heads': c.num_heads,
        'num_kv_heads': None,
        'expand_k': float(c.expand_k),
        'expand_v': float(c.expand_v),
        'hidden_ratio': c.hidden_ratio,
        'intermediate_size': model.model.layers[0].mlp.intermediate_size,
        'hidden_act': c.hidden_act,
        'norm_eps': c.norm_eps,
        'elementwise_affine': bool(c.elementwise_affine),
        'tie_word_embeddings': bool(c.tie_word_embeddings),
        'feature_map': None,
        'use_short_conv': False,
        'conv_size': c.conv_size,
        'use_output_gate': True,
        'attn': None,
        'attn_mode': c.attn_mode,
        'fuse_norm': c.fuse_norm,
        'fuse_swiglu': c.fuse_swiglu,
        'fuse_cross_entropy': c.fuse_cross_entropy,
        'use_cache': True,
        'initializer_range': c.initializer_range,
        'max_position_embeddings': c.max_position_embeddings,
        'bos_token_id': c.bos_token_id,
        'eos_token_id': c.eos_token_id,
        'pad_token_id': c.pad_token_id,
        'torch_dtype': torch_dtype,
    }
    sd = model.state_dict()
    t = {}
    for k, v in sd.items():
        if k == 'lm_head.weight' and config['tie_word_embeddings']:
            if not np.array_equal(_np(v), _np(sd['model.embeddings.weight'])):
                raise ValueError('tie_word_embeddings but lm_head differs from the embedding')
            continue
        t[k.replace('attn.g_norm.weight', 'attn.g_norm_swish_gate.weight')] = _np(v)
    check_tensors(config, t)
    return config, t


# ------------------------------------------------------------------------------------------------
# writing
# ------------------------------------------------------------------------------------------------

_ST_DTYPES = {np.dtype(np.float64): 'F64', np.dtype(np.float32): 'F32', np.dtype(np.float16): 'F16',
              np.dtype(np.int64): 'I64', np.dtype(np.int32): 'I32'}


def to_bf16_bits(x):
    """float32 array -> uint16 bfloat16 bit patterns, rounded to nearest even."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype(np.uint16)


def write_safetensors(path, tensors, metadata=None, bf16=()):
    """Write a .safetensors file with tensors in sorted order and sorted metadata, so that the same
    input gives the same bytes.  tensors: name -> NumPy array; names in `bf16` are stored as BF16."""
    header, blobs, off = {}, [], 0
    if metadata:
        header['__metadata__'] = {k: str(metadata[k]) for k in sorted(metadata)}
    for name in sorted(tensors):
        x = np.asarray(tensors[name])
        if name in bf16:
            dt, raw = 'BF16', to_bf16_bits(x).astype('<u2').tobytes()
        else:
            dt = _ST_DTYPES[x.dtype]
            raw = np.ascontiguousarray(x, dtype=x.dtype.newbyteorder('<')).tobytes()
        header[name] = {'dtype': dt, 'shape': list(x.shape), 'data_offsets': [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header, separators=(',', ':')).encode('utf-8')
    h += b' ' * (-len(h) % 8)
    with open(path, 'wb') as f:
        f.write(len(h).to_bytes(8, 'little'))
        f.write(h)
        for raw in blobs:
            f.write(raw)


def save_model(out_dir, config, tensors, dtype='float32'):
    """Write out_dir/config.json and out_dir/model.safetensors (dtype 'float32', 'bfloat16' or 'float16';
    model.rope_freq always F32)."""
    check_tensors(config, tensors)
    if dtype not in ('float32', 'bfloat16', 'float16'):
        raise ValueError(dtype)
    t = {k: np.asarray(v, np.float32) for k, v in tensors.items()}
    bf16 = {k for k in t if k != 'model.rope_freq'} if dtype == 'bfloat16' else ()
    if dtype == 'float16':
        for k in t:
            if k != 'model.rope_freq':
                big = float(np.max(np.abs(t[k]))) if t[k].size else 0.0
                if big > 65504.0:
                    raise ConversionError('%s: |value| up to %g does not fit float16 (max 65504); use bf16 or f32'
                                          % (k, big))
                t[k] = t[k].astype(np.float16)
    os.makedirs(out_dir, exist_ok=True)
    write_safetensors(os.path.join(out_dir, 'model.safetensors'), t, {'format': 'pt'}, bf16=bf16)
    with open(os.path.join(out_dir, 'config.json'), 'w') as f:
        json.dump(config, f, indent=2)
        f.write('\n')


_ST_READ = {'F64': np.float64, 'F32': np.float32, 'F16': np.float16, 'I64': np.int64, 'I32': np.int32,
            'U8': np.uint8, 'I8': np.int8}


def read_safetensors(path):
    """-> (tensors as NumPy arrays, metadata, dtypes).  BF16 is widened to float32 exactly."""
    with open(path, 'rb') as f:
        raw = f.read()
    n = int.from_bytes(raw[:8], 'little')
    header = json.loads(raw[8:8 + n].decode('utf-8'))
    meta = header.pop('__metadata__', {}) or {}
    data = raw[8 + n:]
    out, dtypes = {}, {}
    for name, h in header.items():
        a, b = h['data_offsets']
        buf = data[a:b]
        if h['dtype'] == 'BF16':
            x = (np.frombuffer(buf, '<u2').astype(np.uint32) << 16).view(np.float32)
        else:
            x = np.frombuffer(buf, np.dtype(_ST_READ[h['dtype']]).newbyteorder('<'))
        out[name] = x.reshape(tuple(h['shape']))
        dtypes[name] = h['dtype']
    return out, meta, dtypes


def count_params(tensors):
    """Parameters of the model (model.rope_freq is a table, not a parameter)."""
    return int(sum(math.prod(v.shape) for k, v in tensors.items() if k != 'model.rope_freq'))
