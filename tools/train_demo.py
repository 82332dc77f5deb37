#!/usr/bin/env python3
"""Train the default model shipped in models/: a small RetNet on Tiny Shakespeare, on the CPU.

    build/venv/bin/python tools/train_demo.py --minutes 40

Steps:

1. Split the corpus (data/tinyshakespeare.txt by default): the last 5% of the characters,
   cut at a line boundary, is the validation text.
2. Train a byte-level BPE tokenizer (4096 entries, <|endoftext|> the only special token)
   on the training text with `tokenizers`.
3. Train a yet-another-retnet 0.5.1 RetNet with its parallel form on random windows of
   256 tokens (AdamW, linear warm-up then a cosine learning rate that follows the time
   budget), evaluating the validation loss at fixed intervals and keeping the best
   weights.  Training stops at the --minutes deadline (or on Ctrl-C) and the script goes
   on to write its outputs.
4. Write the model directory (--out, default models/): config.json and model.safetensors
   converted by tools/retnet_export.py exactly as the yar fixtures are, tokenizer.json and
   README.md.
5. Write the reference fixture (--fixture-out, default tests/fixtures/demo/):
   reference.safetensors with the package's float64 outputs for two windows of the
   validation text, laid out as the other fixtures' (see tests/fixtures/README.md).  The
   weights are not copied there; the test loads them from the model directory.
6. Print sample completions of "ROMEO:".
"""
import argparse
import copy
import hashlib
import json
import math
import os
import platform
import signal
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.dont_write_bytecode = True          # keep tools/ free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as MF  # noqa: E402
import retnet_export as X  # noqa: E402

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
EOT = '<|endoftext|>'
PROMPT = 'ROMEO:'
REF_B, REF_T = 2, 128


def log(msg):
    print(msg, flush=True)


# ------------------------------------------------------------------------------------------------
# data and tokenizer
# ------------------------------------------------------------------------------------------------

def split_corpus(text, val_frac):
    """(train, val): val starts at the first line start at or after len(text)*(1-val_frac)."""
    target = len(text) - int(len(text) * val_frac)
    cut = text.find('\n', target - 1) + 1
    if cut <= 0:
        raise ValueError('no line boundary near the split point')
    return text[:cut], text[cut:]


def train_tokenizer(train_text, vocab_size):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT], min_frequency=2,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([train_text], trainer=trainer)
    return tok


def paragraph_starts(text, enc):
    """Token indices whose text begins right after a blank line (the start of a speech)."""
    return np.array([i for i, (a, _) in enumerate(enc.offsets) if a >= 2 and text[a - 2:a] == '\n\n'],
                    dtype=np.int64)


# ------------------------------------------------------------------------------------------------
# model
# ------------------------------------------------------------------------------------------------

def build_model(kw, seed):
    from yet_another_retnet.retnet import RetNet
    torch.manual_seed(seed)
    model = RetNet(**kw)
    # RetNetDecoder deep-copies one layer, so every layer would start from the same weights:
    # give each its own draw of the package's initialisation.
    with torch.no_grad():
        for layer in model.decoder.layers:
            layer._reset_parameters()
            layer.retention._reset_parameters()
    return model


def n_params(model):
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def evaluate(model, windows):
    """Summed NLL (nats) and token count over the fixed validation windows."""
    was = model.training
    model.eval()
    nll, n = 0.0, 0
    for inp, tgt in windows:
        logits = model.forward_parallel(inp)
        nll += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), reduction='sum').item()
        n += tgt.numel()
    model.train(was)
    return nll, n


def val_windows(ids, seq, batch):
    """ids -> [(inputs, targets)]: consecutive windows of `seq` predictions covering ids[1:] once."""
    ids = torch.as_tensor(ids, dtype=torch.long)
    n = (len(ids) - 1) // seq
    full = [(ids[i * seq:(i + 1) * seq], ids[i * seq + 1:(i + 1) * seq + 1]) for i in range(n)]
    out = []
    for b in range(0, n, batch):
        part = full[b:b + batch]
        out.append((torch.stack([p[0] for p in part]), torch.stack([p[1] for p in part])))
    if n * seq < len(ids) - 1:
        out.append((ids[n * seq:-1][None], ids[n * seq + 1:][None]))
    return out


# ------------------------------------------------------------------------------------------------
# sampling
# ------------------------------------------------------------------------------------------------

@torch.no_grad()
def generate(model, prompt_ids, n, temperature, gen, eos):
    """Recurrent decoding: greedy when temperature == 0.  Stops after n tokens or at eos."""
    model.eval()
    st, logits = [], None
    for i, t in enumerate(prompt_ids):
        logits, st = model.forward_recurrent(torch.tensor([t]), seq_idx=i, prev_states=st)
    out, pos = [], len(prompt_ids)
    for _ in range(n):
        if temperature == 0:
            t = int(torch.argmax(logits[0]))
        else:
            p = torch.softmax(logits[0].double() / temperature, -1)
            t = int(torch.multinomial(p, 1, generator=gen))
        if t == eos:
            break
        out.append(t)
        logits, st = model.forward_recurrent(torch.tensor([t]), seq_idx=pos, prev_states=st)
        pos += 1
    return out


# ------------------------------------------------------------------------------------------------
# reference fixture
# ------------------------------------------------------------------------------------------------

FIXTURE_NOTES_EXTRA = (' Weights: the trained demo model (the model directory\'s model.safetensors, not copied '
                       'into the fixture). tokens: two windows of %d tokens of the validation text encoded with '
                       'the model\'s tokenizer.json, the first starting at its first token, the second at the '
                       'start of a speech near its middle.')


def write_reference(model, kw, seed, tokens, fixture_dir):
    ref = MF.yar_run(copy.deepcopy(model).double().eval(), tokens)
    lo32 = MF.yar_run(model, tokens)
    assert MF.maxdiff(ref['parallel'], ref['recurrent']) < 1e-10
    assert MF.maxdiff(ref['chunkwise'], ref['recurrent']) < 1e-10
    for a, b in zip(ref['chunk_states'], ref['states']):
        assert MF.maxdiff(a, b) <= 1e-10 * max(1.0, float(np.max(np.abs(b))))
    B, T = tokens.shape
    H = model.decoder.layers[0].retention.num_heads
    dk = model.d_model // H
    out = {'tokens': tokens}
    for form in ('recurrent', 'parallel', 'chunkwise'):
        assert ref[form].shape == (B, T, kw['num_tokens'])
        out['logits.' + form] = ref[form].astype(np.float32)
    for n, s in enumerate(ref['states']):
        assert s.shape == (B, H, dk, dk), s.shape
        out['state.%d' % n] = s.astype(np.float32)
    fp32 = {f: MF.maxdiff(lo32[f], ref[f]) for f in ('recurrent', 'parallel', 'chunkwise')}
    meta = {
        'flavour': 'yar',
        'package': 'yet-another-retnet',
        'package_version': MF.version('yet-another-retnet'),
        'torch_version': torch.__version__,
        'seed': str(seed),
        'reference_dtype': 'float64',
        'chunk': str(MF.CHUNK),
        'T': str(T),
        'B': str(B),
        'weights_dtype': 'float32',
        'constructor': json.dumps(kw, sort_keys=True),
        'package_fp32_max_abs_diff': json.dumps(fp32, sort_keys=True),
        'notes': MF.YAR_NOTES + FIXTURE_NOTES_EXTRA % T,
    }
    os.makedirs(fixture_dir, exist_ok=True)
    X.write_safetensors(os.path.join(fixture_dir, 'reference.safetensors'), out, meta)
    with open(os.path.join(fixture_dir, 'README.md'), 'w') as f:
        f.write(FIXTURE_README.format(T=T, V=kw['num_tokens'], H=H, dk=dk, L=len(ref['states'])))
    return fp32, float(np.max(np.abs(ref['recurrent'])))


FIXTURE_README = """\
# Demo model reference

`reference.safetensors` holds yet-another-retnet 0.5.1's own outputs for the
trained demo model in `models/` (the weights are not copied here: the test
loads `models/config.json` and `models/model.safetensors`), with the same
layout, float64 computation and `__metadata__` keys as the other fixtures
(`../README.md`): `tokens` I32 (2, {T}) are two windows of the held-out
validation text encoded with `models/tokenizer.json`, `logits.recurrent`,
`logits.parallel` and `logits.chunkwise` (chunks of 16) are F32 (2, 128, {V}),
and `state.<l>` F32 (2, {H}, {dk}, {dk}) are the final recurrent states of the {L}
layers. Both files are written by `tools/train_demo.py`; retraining changes
the weights, so the fixture must be regenerated with the model, never alone.
"""


# ------------------------------------------------------------------------------------------------
# README
# ------------------------------------------------------------------------------------------------

def write_readme(path, info):
    i = info
    text = """\
# retnetd demo model: RetNet trained on Tiny Shakespeare

The default model of retnetd, so that the server gives sensible completions
without downloading anything. It is a small RetNet language model, trained from
scratch on the CPU on Shakespeare's plays, with its own byte-level BPE
tokenizer. It writes Shakespeare-flavoured pseudo-dialogue; it knows nothing
else and is meant for demos, smoke tests and benchmarks of the engine, not for
any real use.

| file | |
|---|---|
| `config.json` | the model in the retnetd format (`docs/model-format.md`), yet-another-retnet variant fields; `bos_token_id` = `eos_token_id` = {eos} (`<|endoftext|>`) |
| `model.safetensors` | the weights, F32, {size_mb:.1f} MB, plus `model.rope_freq` (the package's rotary table) |
| `tokenizer.json` | byte-level BPE, {vocab} entries, Hugging Face `tokenizers` format |

## Model

{params:,} parameters ({params_m:.2f} M), yet-another-retnet {yar_version} `RetNet`:

| | |
|---|---|
| layers | {layers}, pre-norm (LayerNorm, eps 1e-6) |
| d_model | {d_model} |
| retention heads | {nhead} (dk = dv = {dk}), interleaved rotary with `linspace` frequencies, decays γ = 1 − exp(linspace(ln 1/32, ln 1/512, {nhead})), mean-subtracting group norm, swish output gate |
| feed-forward | {ffn}, swish, plain MLP (not gated) |
| vocabulary | {vocab} |
| biases | on every linear, including the output head |
| embeddings | untied; no final norm before the head (as in the package) |

## Training

- **Corpus**: `data/tinyshakespeare.txt`, the usual "tiny shakespeare" file
  (`input.txt` of Andrej Karpathy's char-rnn: {n_chars:,} characters of
  extracts from Shakespeare's plays; sha256 `{sha}`). Shakespeare's works are
  in the public domain. The last 5% of the characters, cut at a line boundary, are held out:
  {n_train_chars:,} training characters ({n_train_tok:,} tokens) and
  {n_val_chars:,} validation characters ({n_val_tok:,} tokens).
- **Tokenizer**: byte-level BPE trained with `tokenizers` {tok_version} on the
  training text only: `ByteLevel(add_prefix_space=False, use_regex=True)`
  pre-tokenizer and decoder, `BpeTrainer(vocab_size={vocab}, min_frequency=2,
  initial_alphabet=ByteLevel.alphabet(), special_tokens=["<|endoftext|>"])`.
- **Objective**: next-token cross-entropy with the package's parallel form on
  random windows of {seq} tokens of the training text; one row in {eot_every}
  starts with `<|endoftext|>` followed by the text from the start of a speech,
  so prompts work with and without a leading BOS.
- **Optimiser**: AdamW (β = 0.9, 0.95, weight decay {wd} on matrices and
  embeddings), peak learning rate {lr:g}, linear warm-up over {warmup} steps, then
  cosine decay to {min_lr:g} over the time budget; gradients clipped at norm 1;
  dropout {dropout}.
- **Run**: {steps:,} steps of batch {batch} × {seq} tokens ({tokens_seen_m:.1f} M
  tokens, {epochs:.1f} passes over the training text) in {train_min:.1f} minutes
  of a {minutes:g}-minute budget (on average {tok_s:,.0f} tokens/s);
  {total_min:.1f} minutes for the whole script. Hardware: CPU only, {threads}
  threads ({cpu}), PyTorch {torch_version}, seed {seed}.
- **Checkpoint**: the validation loss was measured every {eval_every:g} s; the
  weights with the lowest one (step {best_step:,}, {best_min:.1f} minutes in) are
  the ones shipped.{overfit}

## Validation

Over the whole validation text, in windows of {seq} tokens (the first prefixed
with `<|endoftext|>`, so every token of the text is predicted):

| | nats | perplexity |
|---|---|---|
| per token | {val_tok:.4f} | {ppl_tok:.2f} |
| per character (total NLL / {n_val_chars:,} characters) | {val_chr:.4f} | {ppl_chr:.3f} |

That is {bpc:.3f} bits per character; the per-character figures do not
depend on the tokenizer.

## Samples

Completions of `ROMEO:` (no BOS; 200 tokens at most) from the PyTorch model.
Greedy decoding, which soon falls into a loop, as it does with models this
small:

```
{sample}
```

Sampled at temperature 0.8:

```
{sample_t}
```

## Regenerating

```sh
tools/venv.sh                                            # build/venv with tools/requirements.txt
build/venv/bin/python tools/train_demo.py --minutes 40   # writes models/ and tests/fixtures/demo/
```

The corpus is `data/tinyshakespeare.txt` (`--data` reads another file).
Training is bounded by wall-clock
time, so a rerun gives a model of similar quality, not the same bytes; the
reference fixture in `tests/fixtures/demo/` is rewritten with it.
""".format(**i)
    with open(path, 'w') as f:
        f.write(text)


# ------------------------------------------------------------------------------------------------
# main
# ------------------------------------------------------------------------------------------------

def cpu_name():
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown CPU'


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--minutes', type=float, default=40.0, help='training time budget (wall clock)')
    ap.add_argument('--out', default=os.path.join(ROOT, 'models'), help='model directory to write')
    ap.add_argument('--fixture-out', default=os.path.join(ROOT, 'tests', 'fixtures', 'demo'))
    ap.add_argument('--data', default=os.path.join(ROOT, 'data', 'tinyshakespeare.txt'))
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--seed', type=int, default=1234)
    ap.add_argument('--vocab', type=int, default=4096)
    ap.add_argument('--d-model', type=int, default=256)
    ap.add_argument('--nhead', type=int, default=4)
    ap.add_argument('--layers', type=int, default=4)
    ap.add_argument('--ffn', type=int, default=1024)
    ap.add_argument('--dropout', type=float, default=0.2)
    ap.add_argument('--seq', type=int, default=256)
    ap.add_argument('--batch', type=int, default=16)
    ap.add_argument('--lr', type=float, default=1.5e-3)
    ap.add_argument('--min-lr', type=float, default=1e-4)
    ap.add_argument('--wd', type=float, default=0.1)
    ap.add_argument('--warmup', type=int, default=100)
    ap.add_argument('--eot-every', type=int, default=8, help='one row in N starts with <|endoftext|>')
    ap.add_argument('--eval-every', type=float, default=90.0, help='seconds between validation passes')
    ap.add_argument('--max-steps', type=int, default=0, help='stop after this many steps (0: time only)')
    a = ap.parse_args()

    t_script = time.time()
    torch.set_num_threads(a.threads)
    import tokenizers
    import yet_another_retnet  # noqa: F401

    # stop cleanly on SIGTERM / Ctrl-C: finish the current step, then write everything
    stop = {'flag': False}

    def on_signal(signum, frame):
        if stop['flag']:
            raise KeyboardInterrupt
        stop['flag'] = True
        log('signal %d: stopping after this step' % signum)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    with open(a.data, encoding='utf-8') as f:
        text = f.read()
    train_text, val_text = split_corpus(text, 0.05)
    log('corpus %s: %d characters, train %d, validation %d (starts %r)' % (
        a.data, len(text), len(train_text), len(val_text), val_text[:30]))

    t0 = time.time()
    tok = train_tokenizer(train_text, a.vocab)
    eos = tok.token_to_id(EOT)
    V = tok.get_vocab_size()
    enc = tok.encode(train_text)
    train_ids = np.array(enc.ids, dtype=np.int64)
    starts = paragraph_starts(train_text, enc)
    val_ids = np.array(tok.encode(val_text).ids, dtype=np.int64)
    assert tok.decode(val_ids.tolist()) == val_text, 'tokenizer does not round-trip the validation text'
    log('tokenizer: %d entries, <|endoftext|> = %d, train %d tokens (%.2f chars/token), validation %d tokens, '
        '%d speech starts (%.1fs)' % (V, eos, len(train_ids), len(train_text) / len(train_ids), len(val_ids),
                                      len(starts), time.time() - t0))

    kw = dict(num_tokens=V, d_model=a.d_model, nhead=a.nhead, num_layers=a.layers,
              dim_feedforward=a.ffn, activation='swish', norm_first=True, dropout=a.dropout)
    model = build_model(kw, a.seed).train()
    P = n_params(model)
    log('model: %d parameters (%.2f M), %.1f MB as F32' % (P, P / 1e6, P * 4 / 2 ** 20))

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{'params': decay, 'weight_decay': a.wd}, {'params': no_decay, 'weight_decay': 0.0}],
                            lr=a.lr, betas=(0.9, 0.95), eps=1e-8)

    eval_ids = np.concatenate([[eos], val_ids])          # every validation token is predicted
    windows = val_windows(eval_ids, a.seq, 16)
    n_val_pred = len(val_ids)

    rng = np.random.default_rng(a.seed)
    seq = a.seq
    eot_rows = a.batch // a.eot_every if a.eot_every > 0 else 0
    ok_starts = starts[starts + seq <= len(train_ids)]

    def batch():
        rows = []
        for r in range(a.batch):
            if r < eot_rows:
                p = int(ok_starts[rng.integers(len(ok_starts))])
                rows.append(np.concatenate([[eos], train_ids[p:p + seq]]))
            else:
                p = int(rng.integers(len(train_ids) - seq - 1))
                rows.append(train_ids[p:p + seq + 1])
        xy = torch.from_numpy(np.stack(rows))
        return xy[:, :-1], xy[:, 1:]

    budget = a.minutes * 60.0
    t_train = time.time()
    deadline = t_train + budget

    def lr_at(step):
        warm = min(1.0, (step + 1) / a.warmup)
        p = min(1.0, (time.time() - t_train) / budget)
        return warm * (a.min_lr + 0.5 * (a.lr - a.min_lr) * (1 + math.cos(math.pi * p)))

    best = {'loss': float('inf'), 'step': 0, 'minutes': 0.0, 'state': None}
    history = []

    def do_eval(step):
        te = time.time()
        nll, n = evaluate(model, windows)
        loss = nll / n
        history.append((step, time.time() - t_train, loss))
        mark = ''
        if loss < best['loss']:
            best.update(loss=loss, step=step, minutes=(time.time() - t_train) / 60, state={k: v.detach().clone() for k, v in model.state_dict().items()})
            mark = ' *'
        log('  eval step %5d  %6.1f min  val loss %.4f  ppl %.2f  (%.1fs)%s' % (
            step, (time.time() - t_train) / 60, loss, math.exp(loss), time.time() - te, mark))

    step, step_time, last_eval, run_loss = 0, None, time.time(), None
    while not stop['flag']:
        now = time.time()
        if a.max_steps and step >= a.max_steps:
            break
        if step_time is not None and now + step_time > deadline:
            break
        if now - last_eval >= a.eval_every:
            do_eval(step)
            last_eval = time.time()
            if step_time is not None and time.time() + step_time > deadline:
                break
        ts = time.time()
        lr = lr_at(step)
        for g in opt.param_groups:
            g['lr'] = lr
        x, y = batch()
        try:
            logits = model.forward_parallel(x)
            loss = F.cross_entropy(logits.reshape(-1, V), y.reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gn = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        except KeyboardInterrupt:
            log('interrupted: discarding this step')
            break
        step += 1
        dt = time.time() - ts
        step_time = dt if step_time is None else 0.9 * step_time + 0.1 * dt
        run_loss = loss.item() if run_loss is None else 0.98 * run_loss + 0.02 * loss.item()
        if step % 25 == 0 or step == 1:
            log('step %5d  %6.1f min  loss %.4f (avg %.4f)  lr %.2e  |g| %.2f  %.2fs/step  %.0f tok/s' % (
                step, (time.time() - t_train) / 60, loss.item(), run_loss, lr, float(gn), step_time,
                a.batch * seq / step_time))
    train_min = (time.time() - t_train) / 60
    do_eval(step)
    log('training: %d steps in %.1f min; best val loss %.4f at step %d' % (step, train_min, best['loss'],
                                                                           best['step']))
    model.load_state_dict(best['state'])
    model.eval()

    # final validation figures (the best checkpoint's)
    nll, n = evaluate(model, windows)
    assert n == n_val_pred
    val_tok, val_chr = nll / n, nll / len(val_text)
    log('validation: %.4f nats/token (ppl %.2f), %.4f nats/char (ppl %.3f, %.3f bits/char)' % (
        val_tok, math.exp(val_tok), val_chr, math.exp(val_chr), val_chr / math.log(2)))

    # model directory
    config, tensors = X.export_yar(model)
    config['bos_token_id'] = eos
    config['eos_token_id'] = eos
    X.save_model(a.out, config, tensors, dtype='float32')
    tok.save(os.path.join(a.out, 'tokenizer.json'))
    from safetensors.numpy import load_file
    back = load_file(os.path.join(a.out, 'model.safetensors'))
    assert set(back) == set(tensors) and all(np.array_equal(back[k], tensors[k]) for k in tensors)
    size = os.path.getsize(os.path.join(a.out, 'model.safetensors'))
    assert size <= 25 * 10 ** 6, 'model.safetensors is %d bytes' % size
    assert X.count_params(tensors) == P
    log('wrote %s: config.json, model.safetensors (%.1f MB), tokenizer.json' % (a.out, size / 1e6))

    # reference fixture: two windows of the validation text
    half = len(val_ids) // 2
    val_starts = paragraph_starts(val_text, tok.encode(val_text))
    mid = int(val_starts[np.argmin(np.abs(val_starts - half))]) if len(val_starts) else half
    mid = min(mid, len(val_ids) - REF_T)
    ref_tokens = np.stack([val_ids[:REF_T], val_ids[mid:mid + REF_T]]).astype(np.int32)
    fp32, maxlogit = write_reference(model, kw, a.seed, ref_tokens, a.fixture_out)
    log('wrote %s/reference.safetensors: tokens at %d and %d; largest |logit| %.1f; package fp32 vs float64 %s' % (
        a.fixture_out, 0, mid, maxlogit, ' '.join('%s %.1e' % kv for kv in sorted(fp32.items()))))

    # samples
    prompt = tok.encode(PROMPT).ids
    gen = torch.Generator().manual_seed(a.seed)
    samples = []
    for temp in (0.0, 0.8, 0.8):
        ids = generate(model, prompt, 200, temp, gen, eos)
        samples.append((temp, PROMPT + tok.decode(ids)))

    total_min = (time.time() - t_script) / 60
    final_val = history[-1][2]
    overfit = ''
    if best['step'] < step and final_val > best['loss']:
        overfit = (' Later evaluations were worse (%.4f at the end) while the training loss kept falling: '
                   'the model overfits the small corpus.' % final_val)
    info = dict(
        n_chars=len(text), sha=hashlib.sha256(text.encode('utf-8')).hexdigest(), eos=eos, size_mb=size / 1e6,
        vocab=V, params=P, params_m=P / 1e6,
        yar_version=MF.version('yet-another-retnet'), layers=a.layers, d_model=a.d_model, nhead=a.nhead,
        dk=a.d_model // a.nhead, ffn=a.ffn, n_train_chars=len(train_text), n_train_tok=len(train_ids),
        n_val_chars=len(val_text), n_val_tok=len(val_ids), tok_version=tokenizers.__version__, seq=seq,
        eot_every=a.eot_every, wd=a.wd, lr=a.lr, warmup=a.warmup, min_lr=a.min_lr, dropout=a.dropout,
        steps=step, batch=a.batch, tokens_seen_m=step * a.batch * seq / 1e6,
        epochs=step * a.batch * seq / len(train_ids), train_min=train_min, minutes=a.minutes,
        total_min=total_min, threads=a.threads, cpu=cpu_name(), torch_version=torch.__version__.split('+')[0],
        seed=a.seed, eval_every=a.eval_every, best_step=best['step'], val_tok=val_tok,
        ppl_tok=math.exp(val_tok), val_chr=val_chr, ppl_chr=math.exp(val_chr), bpc=val_chr / math.log(2),
        sample=samples[0][1].rstrip(), sample_t=samples[1][1].rstrip(),
        tok_s=step * a.batch * seq / max(1.0, train_min * 60), best_min=best['minutes'], overfit=overfit)
    write_readme(os.path.join(a.out, 'README.md'), info)
    with open(os.path.join(a.out, 'config.json')) as f:
        log('config.json:\n' + f.read().rstrip())
    for temp, s in samples:
        log('\n--- sample, %s ---\n%s' % ('greedy' if temp == 0 else 'temperature %g' % temp, s))
    log('\nvalidation history (step, minutes, loss): ' +
        ', '.join('(%d, %.1f, %.4f)' % (s, t / 60, l) for s, t, l in history))
    log('done in %.1f min' % total_min)


if __name__ == '__main__':
    main()
