#!/usr/bin/env python3
"""Convert a yet-another-retnet or torchscale RetNet checkpoint into a retnetd model directory.

    convert.py --from yar|torchscale CHECKPOINT.pt OUT_DIR [--config-json ARCH.json] [--dtype f32|bf16|f16]

CHECKPOINT.pt is what torch.save wrote: the model's state_dict, or a dict that holds it under
"model" / "state_dict" / "model_state_dict" next to the model arguments under "args" / "config" /
"cfg" (a dict or an argparse.Namespace; for a fairseq-style "cfg" its "model" part).  Prefixes
"module." and "_orig_mod." (DDP, torch.compile) and, for torchscale, "decoder." (a fairseq
language model wrapping RetNetDecoder) are removed when every name carries them.

A state_dict fixes the sizes but not every hyper-parameter.  What the tensors do not determine
is read from the arguments: --config-json is a JSON object of the package's own constructor
arguments (yar: RetNet(...) keyword arguments; torchscale: RetNetConfig fields), and its values
override those stored in the checkpoint.  The package defaults are never assumed for an argument
that changes the computation: when one is needed and not given, the converter stops and names it.

    yar          required: activation, norm_first, layer_norm_eps
                 from the tensors: num_tokens, d_model, num_layers, dim_feedforward, and nhead
                 (each layer's retention.thetas has d_model / nhead entries)
    torchscale   required: activation_fn, no_scale_embedding, layernorm_eps, and deepnorm when the
                 model has no final norm (layer_norm.weight)
                 from the tensors: vocab_size, decoder_embed_dim, decoder_value_embed_dim,
                 decoder_ffn_embed_dim, decoder_layers, decoder_retention_heads (retnet_rel_pos.decay
                 has one entry per head), layernorm_embedding, share_decoder_input_output_embed

Arguments that the tensors determine are checked against them when given.  Anything the format
cannot express is refused (exit status 1, the offending tensor or argument named on stderr):
torchscale multiway or MoE weights, multiway / moe_freq / use_xmoe / xpos_rel_pos /
no_output_layer arguments, post-norm torchscale without deepnorm, unexpected or missing tensors,
shapes that do not fit, rotary or decay tables other than the package's.

--dtype (default: the dtype of the checkpoint's embedding matrix, f32 for other types) sets the
stored weight type; model.rope_freq, the package's rotary frequency table, is always F32.

flash-linear-attention / Hugging Face RetNet checkpoints (config.json + model.safetensors, e.g.
fla-hub/retnet-1.3B-100B) need no conversion: retnetd loads them as they are.
"""
import argparse
import json
import os
import re
import sys

sys.dont_write_bytecode = True          # keep tools/ free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import retnet_export as X  # noqa: E402

PROG = 'convert.py'
DTYPES = {'f32': 'float32', 'bf16': 'bfloat16', 'f16': 'float16'}
STATE_KEYS = ('model', 'state_dict', 'model_state_dict')
ARGS_KEYS = ('args', 'config', 'cfg')
PACKAGES = {
    'yar': ('yet-another-retnet', X.YAR_ARGS, X.yar_from_state_dict, ('module.', '_orig_mod.')),
    'torchscale': ('torchscale', X.TORCHSCALE_ARGS, X.torchscale_from_state_dict,
                   ('module.', '_orig_mod.', 'decoder.')),
}


class Refused(Exception):
    pass


def _is_tensor(x):
    import torch
    return isinstance(x, torch.Tensor)


def load_checkpoint(path):
    """-> (state_dict, stored arguments as a dict)."""
    import torch
    if not os.path.isfile(path):
        raise Refused('%s: no such file' % path)
    safe = [argparse.Namespace]
    try:
        with torch.serialization.safe_globals(safe):
            obj = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:      # noqa: BLE001 -- any unpickling failure is reported the same way
        m = re.search(r'Unsupported global: GLOBAL (\S+)', str(e))
        if m:
            why = 'it holds a %s object' % m.group(1)
        else:
            why = re.sub(r'\x1b\[[0-9;]*m', '', str(e)).strip().split('\n')[0]
        raise Refused('%s: not read: %s, and only tensors and plain containers are loaded (torch.load with '
                      'weights_only=True). Save the state_dict, torch.save(model.state_dict(), path), and pass the '
                      'model arguments with --config-json' % (path, why))
    if not isinstance(obj, dict):
        raise Refused('%s holds a %s, not a state_dict (save model.state_dict())' % (path, type(obj).__name__))
    stored = {}
    if obj and all(_is_tensor(v) for v in obj.values()):
        sd = obj
    else:
        sd = None
        for k in STATE_KEYS:
            v = obj.get(k)
            if isinstance(v, dict) and v and all(_is_tensor(t) for t in v.values()):
                sd = v
                break
        if sd is None:
            raise Refused('%s: no state_dict found: expected a dict of tensors, or one under %s (top-level keys: '
                          '%s)' % (path, ' / '.join('"%s"' % k for k in STATE_KEYS), ', '.join(map(str, obj))))
        for k in ARGS_KEYS:
            a = obj.get(k)
            if isinstance(a, argparse.Namespace):
                a = vars(a)
            if isinstance(a, dict):
                if k == 'cfg' and isinstance(a.get('model'), (dict, argparse.Namespace)):
                    a = a['model'] if isinstance(a['model'], dict) else vars(a['model'])
                stored = dict(a)
                break
    bad = sorted(k for k, v in sd.items() if not v.is_floating_point())
    if bad:
        raise Refused('%s: tensor %s is not floating point (%s)' % (path, bad[0], sd[bad[0]].dtype))
    return sd, stored


def strip_prefixes(sd, prefixes):
    changed = True
    while changed:
        changed = False
        for p in prefixes:
            if sd and all(k.startswith(p) for k in sd):
                sd = {k[len(p):]: v for k, v in sd.items()}
                changed = True
    return sd


def model_arguments(known, stored, config_json):
    """Stored checkpoint arguments (unknown names ignored: training options live there too), overridden by
    --config-json (unknown names refused: a misspelt argument must not fall back to a default)."""
    args = {k: v for k, v in stored.items() if k in known}
    if config_json:
        try:
            with open(config_json) as f:
                given = json.load(f)
        except (OSError, ValueError) as e:
            raise Refused('--config-json %s: %s' % (config_json, e))
        if not isinstance(given, dict):
            raise Refused('--config-json %s: expected a JSON object of model arguments' % config_json)
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise Refused('--config-json %s: %s %s not an argument of the package (known: %s)' % (
                config_json, ', '.join(unknown), 'is' if len(unknown) == 1 else 'are', ', '.join(known)))
        args.update(given)
    return args


def default_dtype(sd, embedding_key):
    name = str(sd[embedding_key].dtype).replace('torch.', '') if embedding_key in sd else 'float32'
    return {'float32': 'f32', 'bfloat16': 'bf16', 'float16': 'f16'}.get(name, 'f32')


def main(argv=None):
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split('\n\n')[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog='\n\n'.join(__doc__.split('\n\n')[2:]))
    ap.add_argument('--from', dest='source', required=True, choices=sorted(PACKAGES),
                    help='the package the checkpoint comes from')
    ap.add_argument('checkpoint', help='the .pt file torch.save wrote')
    ap.add_argument('out_dir', help='model directory to write (config.json, model.safetensors)')
    ap.add_argument('--config-json', help='JSON object of the package\'s model arguments')
    ap.add_argument('--dtype', choices=sorted(DTYPES), help='weight type to store (default: the checkpoint\'s)')
    a = ap.parse_args(argv)
    package, known, convert, prefixes = PACKAGES[a.source]
    try:
        sd, stored = load_checkpoint(a.checkpoint)
        sd = strip_prefixes(sd, prefixes)
        args = model_arguments(known, stored, a.config_json)
        config, tensors = convert(sd, args)
        dtype = a.dtype or default_dtype(sd, 'embed_tokens.weight' if a.source == 'torchscale' else 'embedding.weight')
        X.save_model(a.out_dir, config, tensors, dtype=DTYPES[dtype])
    except (Refused, X.ConversionError) as e:
        print('%s: error: %s' % (PROG, e), file=sys.stderr)
        return 1
    c = X.resolved(config)
    print('%s: wrote %s: %s RetNet, %d layers, hidden %d, %d heads, vocab %d, %d parameters, %s' % (
        PROG, a.out_dir, package, c['L'], c['D'], c['H'], c['V'], X.count_params(tensors), dtype), file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main())
