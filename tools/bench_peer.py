#!/usr/bin/env python3
"""GPU peer for `make bench-cuda`: flash-linear-attention's RetNetForCausalLM.

    python3 tools/bench_peer.py MODEL_DIR [--batches 1,16,64,256]
        [--prompts 512,2048,8192] [--decode 32]

MODEL_DIR is a retnetd model directory written by `retnet random --preset 1.3b
--dtype bf16`; its config.json and tensor names are FLA's, so FLA loads the very
weights the CUDA backend runs.  Timed on the same GPU, bf16, after 300 ms of
bf16 products that bring the clocks to where a long run holds them and a
warm-up call, best of 3 (prefill: 5; torch.cuda.synchronize around each):

    decode at batch B   Hugging Face `generate` (greedy, use_cache, FLA's
                        fused_recurrent kernel per step): B x (N1 - N0) new tokens
                        over the time difference of N1 = 1 + --decode and N0 = 1
                        new tokens, so the prompt's prefill cancels out
    prefill of P tokens one forward pass of a P-token prompt with use_cache
                        (FLA's chunk kernel) and, as retnetd's prefill, the
                        last position's logits only (logits_to_keep=1, where
                        the model's forward takes it; "prefill_logits" says
                        which)                                 -> tokens/s

One JSON object goes to stdout (and, with --out, to a file rewritten after every
figure), progress to stderr.  --batches '' leaves decode out.

    --kernels P --kernels-out FILE

after the timings, records one more prefill of P tokens under the PyTorch
profiler and writes where its device time went to FILE: each kernel's total
time and launches, summed into classes (GEMM, retention, norm, rotary,
activation, copy, elementwise, other), as tools/timeline_summary.py sums
ours into its own (cuBLAS GEMM, retention (chunk), norm, rotary, copy, ...;
ours also has GEMV, recurrent step and sampling, which a prefill does not
run), so the two prefills can be laid side by side class by class.  No
file is written when the profiler caught no kernels.

    python3 tools/bench_peer.py --merge RUN.json RUN.json...

merges runs of separate processes, point by point: each figure the best of
the runs (tok_s) with every run's (tok_s_runs).  The peer's prefill has moved
by a third between processes on the same machine (its kernels' autotuning
picks per process), more than between the best-of-3 passes of one process,
so the bench runs it twice and judges against its best.  The warm-up call
is where the autotuner times its candidates, so the clocks are settled
before it, not only before the timed calls.
"""
import argparse
import importlib.metadata as md
import json
import os
import sys
import time

sys.dont_write_bytecode = True


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def save(path, out):
    if path:
        with open(path + '.tmp', 'w') as f:
            json.dump(out, f)
        os.replace(path + '.tmp', path)


def merge(outs):
    """The runs outs (bench_peer outputs, the first's peer and device
    strings kept) as one: per decode batch and prefill prompt, the best
    tok_s and every run's in tok_s_runs (null where a run lacks it)."""
    merged = {k: v for k, v in (outs[0] if outs else {}).items() if k not in ('decode', 'prefill')}
    for part, key in (('decode', 'batch'), ('prefill', 'prompt')):
        points = []
        for o in outs:
            for r in o.get(part, []):
                if r[key] not in points:
                    points.append(r[key])
        rows = []
        for pt in points:
            runs = [next((r['tok_s'] for r in o.get(part, []) if r[key] == pt), None) for o in outs]
            rows.append({key: pt, 'tok_s': max(t for t in runs if t is not None), 'tok_s_runs': runs})
        merged[part] = rows
    merged['runs'] = len(outs)
    return merged


def settle(seconds=0.3):
    """Keeps the GPU busy with bf16 products for `seconds`: the clocks and
    the power draw then sit where the timed calls will find them, and the
    autotuner's trials in the warm-up call are timed there too (a cold
    device's first trials run at other clocks and may pick another config)."""
    import torch
    a = torch.randn(4096, 4096, device='cuda', dtype=torch.bfloat16)
    b = torch.empty_like(a)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(8):
            torch.mm(a, a, out=b)
        torch.cuda.synchronize()


def prefill_kwargs(forward):
    """The keyword arguments that make forward (a causal LM's) compute the
    last position's logits only, as retnetd's prefill does, and what the
    logits then are: ({'logits_to_keep': 1}, 'last'), or ({}, 'all') for a
    forward without that parameter."""
    import inspect
    try:
        params = inspect.signature(forward).parameters
    except (TypeError, ValueError):
        params = {}
    if 'logits_to_keep' in params:
        return {'logits_to_keep': 1}, 'last'
    return {}, 'all'


# Kernel classes of the peer's prefill: the first pattern a name matches
# (cuBLAS's and CUTLASS's GEMMs; FLA's chunk kernels and norms are Triton
# kernels named after their Python functions).
KERNEL_CLASSES = [
    ("GEMM", r"gemm|nvjet|xmma|cutlass|cublas|sm\d+_"),
    ("retention", r"chunk|retention|recurrent"),
    ("norm", r"norm"),
    ("rotary", r"rotary|rope"),
    ("activation", r"swiglu|swish|silu|gelu|glu"),
    ("copy", r"memcpy|memset|copy|cat_|index"),
    ("elementwise", r"elementwise|reduce"),
]


def kernel_class(name):
    import re
    for label, pattern in KERNEL_CLASSES:
        if re.search(pattern, name, re.IGNORECASE):
            return label
    return "other"


def kernel_summary(trace, top=25):
    """Where a Chrome trace's device time went (the PyTorch profiler's
    export: events of category kernel, gpu_memcpy or gpu_memset, durations
    in microseconds): the total, the span from the first start to the last
    end, each class's time and launches, and the `top` kernels by time."""
    per = {}
    first, last = None, None
    for ev in trace.get("traceEvents", []):
        if ev.get("cat") not in ("kernel", "gpu_memcpy", "gpu_memset") or "dur" not in ev:
            continue
        name, dur, ts = ev.get("name", "?"), float(ev["dur"]), float(ev.get("ts", 0.0))
        k = per.setdefault(name, [0.0, 0])
        k[0] += dur
        k[1] += 1
        first = ts if first is None else min(first, ts)
        last = ts + dur if last is None else max(last, ts + dur)
    classes = {}
    for name, (us, count) in per.items():
        c = classes.setdefault(kernel_class(name), {"us": 0.0, "launches": 0})
        c["us"] += us
        c["launches"] += count
    ranked = sorted(per.items(), key=lambda kv: -kv[1][0])[:top]
    return {
        "kernel_us": round(sum(us for us, _ in per.values()), 1),
        "span_us": round(last - first, 1) if per else 0.0,
        "launches": sum(n for _, n in per.values()),
        "classes": {k: {"us": round(v["us"], 1), "launches": v["launches"]}
                    for k, v in sorted(classes.items(), key=lambda kv: -kv[1]["us"])},
        "top": [{"name": n, "us": round(us, 1), "launches": c, "class": kernel_class(n)}
                for n, (us, c) in ranked],
    }


def kernel_table(summary):
    """kernel_summary's classes as lines of text: each class's time, its
    share of the kernels' time and its launches."""
    total = summary.get("kernel_us", 0.0) or 1.0
    lines = ["%-12s %10s %6s %8s" % ("class", "us", "share", "launches")]
    for name, c in summary.get("classes", {}).items():
        lines.append("%-12s %10.1f %5.1f%% %8d" % (name, c["us"], 100.0 * c["us"] / total,
                                                   c["launches"]))
    lines.append("%-12s %10.1f %6s %8d (span %.1f us)" % (
        "all", summary.get("kernel_us", 0.0), "", summary.get("launches", 0),
        summary.get("span_us", 0.0)))
    return "\n".join(lines)


def profile_prefill(fwd, path):
    """One call of fwd (a warmed-up prefill) under the PyTorch profiler,
    its device time summed by kernel_summary."""
    import tempfile
    import torch
    from torch.profiler import ProfilerActivity, profile
    torch.cuda.synchronize()
    # the CPU activity too: with the CUDA one alone some PyTorch builds
    # record no kernels (the CPU events are left out by kernel_summary)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fwd()
        torch.cuda.synchronize()
    with tempfile.TemporaryDirectory() as d:
        trace = os.path.join(d, "trace.json")
        prof.export_chrome_trace(trace)
        with open(trace) as f:
            summary = kernel_summary(json.load(f))
    if summary["launches"] == 0:
        raise RuntimeError("the profiler recorded no kernels")
    save(path, summary)
    return summary


def best_of(fn, runs=3):
    import torch
    settle()
    fn()
    best = float('inf')
    for _ in range(runs):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('model_dir', nargs='?')
    ap.add_argument('--batches', default='1,16,64,256')
    ap.add_argument('--prompts', default='512,2048,8192')
    ap.add_argument('--decode', type=int, default=32)
    ap.add_argument('--out', help='also rewrite this file after every figure, so a run cut short '
                    'keeps what it measured')
    ap.add_argument('--kernels', type=int, default=0, metavar='P',
                    help='then profile one prefill of P tokens (with --kernels-out)')
    ap.add_argument('--kernels-out', help='where --kernels writes its summary (JSON)')
    ap.add_argument('--show-kernels', metavar='KERNELS_JSON',
                    help='print a --kernels-out summary as a table instead of measuring')
    ap.add_argument('--merge', nargs='+', metavar='RUN_JSON',
                    help='merge these runs\' outputs (best of each point) instead of measuring')
    args = ap.parse_args()
    if args.show_kernels:
        with open(args.show_kernels) as f:
            print(kernel_table(json.load(f)))
        return
    if args.merge:
        outs = []
        for path in args.merge:
            with open(path) as f:
                outs.append(json.load(f))
        print(json.dumps(merge(outs)))
        return
    if not args.model_dir:
        ap.error('MODEL_DIR is needed unless --merge')

    import torch
    from fla.models import RetNetForCausalLM

    torch.manual_seed(0)
    model = RetNetForCausalLM.from_pretrained(args.model_dir, torch_dtype=torch.bfloat16).cuda().eval()
    vocab = model.config.vocab_size
    out = {'peer': 'flash-linear-attention %s RetNetForCausalLM (transformers %s, PyTorch %s, bf16)' % (
        md.version('flash-linear-attention'), md.version('transformers'), torch.__version__),
        'device': torch.cuda.get_device_name(0), 'decode': [], 'prefill': []}

    prompt_len = 16
    for b in [int(x) for x in args.batches.split(',') if x]:
        ids = torch.randint(0, vocab, (b, prompt_len), device='cuda')

        def gen(n):
            with torch.no_grad():
                model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, use_cache=True,
                               pad_token_id=0, eos_token_id=None)
        try:
            t1 = best_of(lambda: gen(1 + args.decode))
            t0 = best_of(lambda: gen(1))
        except Exception as e:  # out of memory, or a kernel the peer lacks for this shape
            log('batch %d: %s: %s' % (b, type(e).__name__, e))
            torch.cuda.empty_cache()
            continue
        rate = b * args.decode / max(t1 - t0, 1e-9)
        log('decode batch %d: %.1f tok/s' % (b, rate))
        out['decode'].append({'batch': b, 'tok_s': round(rate, 1)})
        save(args.out, out)

    keep, out['prefill_logits'] = prefill_kwargs(model.forward)
    for p in [int(x) for x in args.prompts.split(',') if x]:
        ids = torch.randint(0, vocab, (1, p), device='cuda')

        def fwd():
            with torch.no_grad():
                model(ids, use_cache=True, **keep)
        try:
            t = best_of(fwd, runs=5)
        except Exception as e:
            log('prefill %d: %s: %s' % (p, type(e).__name__, e))
            torch.cuda.empty_cache()
            continue
        log('prefill %d: %.0f tok/s' % (p, p / t))
        out['prefill'].append({'prompt': p, 'tok_s': round(p / t, 1)})
        save(args.out, out)
    if args.kernels > 0 and args.kernels_out:
        ids = torch.randint(0, vocab, (1, args.kernels), device='cuda')

        def fwd_k():
            with torch.no_grad():
                model(ids, use_cache=True, **keep)
        try:
            settle()
            fwd_k()
            k = profile_prefill(fwd_k, args.kernels_out)
            log('prefill %d profiled: %.0f us of kernels, %d launches' % (
                args.kernels, k['kernel_us'], k['launches']))
        except Exception as e:
            log('profiling prefill %d: %s: %s' % (args.kernels, type(e).__name__, e))
    print(json.dumps(out))


if __name__ == '__main__':
    main()
