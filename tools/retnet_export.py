"""Write RetNet modules of the three reference packages in the retnetd model format.

    torchscale==0.3.0           torchscale.architecture.retnet.RetNetDecoder
    yet-another-retnet==0.5.1   yet_another_retnet.retnet.RetNet
    flash-linear-attention      fla.models.RetNetForCausalLM  (fla-core 0.6.0)

The format is described in docs/model-format.md; `expected_tensors()` is its
tensor table in code.  Each `export_*` function returns (config, tensors):
config is the config.json dict, tensors maps our tensor names to float32
NumPy arrays.  `save_model()` writes a model directory.

Only the `export_*` functions need torch; the rest is
plain Python and NumPy (tools/check_fixtures.py uses it without torch).
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
# torchscale 0.3.0
# ------------------------------------------------------------------------------------------------

def export_torchscale(model):
    """RetNetDecoder -> (config, tensors).  Model built with an RetNetConfig `model.args`."""
    a = model.args
    if a.multiway or a.moe_freq:
        raise ValueError('torchscale multiway / MoE models are not supported by the format')
    D, H, L = a.decoder_embed_dim, a.decoder_retention_heads, a.decoder_layers
    Dv = a.decoder_value_embed_dim
    V = model.embed_tokens.weight.shape[0]
    dk = D // H
    deepnorm = not a.decoder_normalize_before
    if deepnorm and not a.deepnorm:
        raise ValueError('post-norm torchscale without deepnorm is not a RetNet variant the format covers')
    if a.activation_fn not in ('gelu', 'swish', 'relu'):
        raise ValueError('activation_fn %r' % a.activation_fn)
    tied = model.output_projection.weight is model.embed_tokens.weight
    config = {
        'model_type': 'retnet',
        'vocab_size': V,
        'hidden_size': D,
        'num_hidden_layers': L,
        'num_heads': H,
        'expand_k': 1.0,
        'expand_v': Dv / D,
        'intermediate_size': a.decoder_ffn_embed_dim,
        'hidden_act': a.activation_fn,
        'norm_eps': a.layernorm_eps,
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
        'group_norm_eps': a.layernorm_eps,
        'embed_scale': float(model.embed_scale),
        'embed_norm': model.layernorm_embedding is not None,
        'final_norm': model.layer_norm is not None,
        'norm_position': 'deepnorm' if deepnorm else 'pre',
    }
    assert config['final_norm'] == (not deepnorm)
    if int(D * config['expand_v']) != Dv:
        raise ValueError('decoder_value_embed_dim %d is not hidden_size * expand_v' % Dv)

    # the decay buffer is implied by decay=pow2: make a mismatch loud
    decay = model.retnet_rel_pos.decay.detach().cpu().numpy()
    if decay.dtype != np.float32 or not np.array_equal(decay, _ts_log_decay(H)):
        raise ValueError('retnet_rel_pos.decay %s != log(1 - 2^(-5-h)) in fp32 %s' % (decay, _ts_log_decay(H)))
    angle = model.retnet_rel_pos.angle.detach().cpu().numpy()
    if angle.shape != (dk,) or np.max(np.abs(angle / _linspace_freq(dk) - 1)) > 1e-6:
        raise ValueError('retnet_rel_pos.angle does not follow rope_freq=linspace')

    sd = model.state_dict()
    t = {'model.embeddings.weight': _np(sd['embed_tokens.weight'])}
    if config['embed_norm']:
        t['model.embed_norm.weight'] = _np(sd['layernorm_embedding.weight'])
    names = {
        'retention_layer_norm.weight': 'attn_norm.weight',
        'retention.q_proj.weight': 'attn.q_proj.weight',
        'retention.k_proj.weight': 'attn.k_proj.weight',
        'retention.v_proj.weight': 'attn.v_proj.weight',
        'retention.g_proj.weight': 'attn.g_proj.weight',
        'retention.out_proj.weight': 'attn.o_proj.weight',
        'final_layer_norm.weight': 'mlp_norm.weight',
        # GLU: fc2(act(fc1 x) * gate x)  ->  down(act(gate_proj x) * up_proj x)
        'ffn.fc1.weight': 'mlp.gate_proj.weight',
        'ffn.gate.weight': 'mlp.up_proj.weight',
        'ffn.fc2.weight': 'mlp.down_proj.weight',
    }
    for n in range(L):
        for src, dst in names.items():
            t['model.layers.%d.%s' % (n, dst)] = _np(sd['layers.%d.%s' % (n, src)])
    if config['final_norm']:
        t['model.norm.weight'] = _np(sd['layer_norm.weight'])
    if not tied:
        t['lm_head.weight'] = _np(sd['output_projection.weight'])
    t['model.rope_freq'] = angle.astype(np.float32).copy()
    used = {'embed_tokens.weight', 'layernorm_embedding.weight', 'layer_norm.weight', 'output_projection.weight',
            'retnet_rel_pos.angle', 'retnet_rel_pos.decay'}
    used |= {'layers.%d.%s' % (n, s) for n in range(L) for s in names}
    left = sorted(set(sd) - used)
    if left:
        raise ValueError('torchscale state_dict entries not converted: %s' % left)
    check_tensors(config, t)
    return config, t


# ------------------------------------------------------------------------------------------------
# yet-another-retnet 0.5.1
# ------------------------------------------------------------------------------------------------

def export_yar(model):
    """yet_another_retnet.retnet.RetNet -> (config, tensors)."""
    layers = model.decoder.layers
    l0 = layers[0]
    r0 = l0.retention
    D, H, L = model.d_model, r0.num_heads, model.num_layers
    V = model.embedding.weight.shape[0]
    dk = D // H
    act = _act_name(l0.activation)
    if _act_name(r0.activation) != act:
        raise ValueError('retention gate and FFN use different activations')
    if not r0.relative_position or r0.thetas is None:
        raise ValueError('yet-another-retnet without relative_position is not supported')
    if not r0.bias:
        raise ValueError('yet-another-retnet without biases is not supported')
    for layer in layers:
        if layer.norm_first != l0.norm_first or layer.norm1.eps != l0.norm1.eps:
            raise ValueError('layers differ')
    config = {
        'model_type': 'retnet',
        'vocab_size': V,
        'hidden_size': D,
        'num_hidden_layers': L,
        'num_heads': H,
        'expand_k': 1.0,
        'expand_v': 1.0,
        'intermediate_size': l0.linear1.out_features,
        'hidden_act': act,
        'norm_eps': l0.norm1.eps,
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
        'group_norm_eps': r0.group_norm.eps,
        'embed_scale': 1.0,
        'embed_norm': False,
        'final_norm': False,
        'norm_position': 'pre' if l0.norm_first else 'post',
    }
    thetas = r0.thetas.detach().cpu().float().numpy()
    for layer in layers:
        if not np.array_equal(layer.retention.thetas.detach().cpu().float().numpy(), thetas):
            raise ValueError('layers carry different thetas')
    if thetas.shape != (dk,) or np.max(np.abs(thetas / _linspace_freq(dk) - 1)) > 1e-6:
        raise ValueError('thetas do not follow rope_freq=linspace')

    sd = model.state_dict()
    t = {'model.embeddings.weight': _np(sd['embedding.weight'])}
    names = {'norm1': 'attn_norm', 'norm2': 'mlp_norm',
             'retention.q_proj': 'attn.q_proj', 'retention.k_proj': 'attn.k_proj',
             'retention.v_proj': 'attn.v_proj', 'retention.g_proj': 'attn.g_proj',
             'retention.out_proj': 'attn.o_proj',
             'linear1': 'mlp.up_proj', 'linear2': 'mlp.down_proj'}
    used = {'embedding.weight', 'out.weight', 'out.bias'}
    for n in range(L):
        used.add('decoder.layers.%d.retention.thetas' % n)
        for src, dst in names.items():
            for wb in ('weight', 'bias'):
                key = 'decoder.layers.%d.%s.%s' % (n, src, wb)
                t['model.layers.%d.%s.%s' % (n, dst, wb)] = _np(sd[key])
                used.add(key)
    t['lm_head.weight'] = _np(sd['out.weight'])
    t['lm_head.bias'] = _np(sd['out.bias'])
    t['model.rope_freq'] = thetas.astype(np.float32).copy()
    left = sorted(set(sd) - used)
    if left:
        raise ValueError('yet-another-retnet state_dict entries not converted: %s' % left)
    check_tensors(config, t)
    return config, t


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
    """Write out_dir/config.json and out_dir/model.safetensors (dtype 'float32' or 'bfloat16';
    model.rope_freq always F32)."""
    check_tensors(config, tensors)
    if dtype not in ('float32', 'bfloat16'):
        raise ValueError(dtype)
    os.makedirs(out_dir, exist_ok=True)
    t = {k: np.asarray(v, np.float32) for k, v in tensors.items()}
    bf16 = {k for k in t if k != 'model.rope_freq'} if dtype == 'bfloat16' else ()
    write_safetensors(os.path.join(out_dir, 'model.safetensors'), t, {'format': 'pt'}, bf16=bf16)
    with open(os.path.join(out_dir, 'config.json'), 'w') as f:
        json.dump(config, f, indent=2)
        f.write('\n')


def count_params(tensors):
    """Parameters of the model (model.rope_freq is a table, not a parameter)."""
    return int(sum(math.prod(v.shape) for k, v in tensors.items() if k != 'model.rope_freq'))
