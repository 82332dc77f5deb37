#!/bin/sh
# `make bench`: engine speed, in one run, next to
#   1. the PyTorch reference (yet-another-retnet forward_chunkwise /
#      forward_recurrent on the CPU, same thread count, same ~5M weights), and
#   2. the machine's measured limits (copy bandwidth, sgemm GFLOP/s) for a
#      random model in the 1.3B preset's shape;
# and the tokenizer next to Hugging Face `tokenizers`, the sampler next to
# PyTorch's softmax and multinomial (transformers' top-p), on the same input.
# Results: stdout and build/bench/*.json.  Nothing here asserts on time.
set -eu
RETNET=${1:-build/release/retnet}
THREADS=${BENCH_THREADS:-$(nproc)}
OUT=build/bench
mkdir -p "$OUT"

echo "== small model (~5M parameters) vs yet-another-retnet 0.5.1 (PyTorch, CPU), $THREADS threads"
if PY=$(sh tools/venv.sh 2>"$OUT/venv.log" | tail -n 1) && [ -x "$PY" ]; then
    "$PY" tools/bench_reference.py --threads "$THREADS" --model-out "$OUT/yar5m" \
        --prompt 512 --chunk 64 --decode 64 >"$OUT/peer.json"
    "$RETNET" bench "$OUT/yar5m" --threads "$THREADS" --prompt 512 --chunk 64 --decode 64 \
        --batch 16 --json >"$OUT/small.json"
    python3 - "$OUT/peer.json" "$OUT/small.json" <<'PY'
import json, sys
peer, ours = (json.load(open(p)) for p in sys.argv[1:3])
rows = [("prefill (chunk 64)", ours["prefill_tok_s"], peer["prefill_tok_s"]),
        ("decode batch 1", ours["decode_b1_tok_s"], peer["decode_b1_tok_s"]),
        ("decode batch 16", ours["decode_bB_tok_s"], peer["decode_b16_tok_s"])]
print("%-20s %14s %14s %8s" % ("", "retnet tok/s", "PyTorch tok/s", "ratio"))
for name, a, b in rows:
    print("%-20s %14.1f %14.1f %7.1fx" % (name, a, b, a / b))
print("peer: %s" % peer["peer"])
PY
else
    echo "bench: skipped the PyTorch peer: tools/venv.sh could not build build/venv (see $OUT/venv.log)"
fi

echo
echo "== tokenizer: single-thread encode of tinyshakespeare, one call per line"
DATA=${RETNETD_DATA:-data/tinyshakespeare.txt}
if [ -f "$DATA" ]; then
    for tok in bytelevel spbpe; do
        ours=$("$RETNET" tokbench "tests/fixtures/tokenizer/$tok.json" "$DATA")
        if [ -n "${PY:-}" ] && [ -x "$PY" ]; then
            peer=$("$PY" tools/bench_tokenizer.py "tests/fixtures/tokenizer/$tok.json" "$DATA")
        else
            peer='{"MB_s": 0}'
        fi
        python3 - "$tok" "$ours" "$peer" <<'PY'
import json, sys
name, ours, peer = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
ratio = ours["MB_s"] / peer["MB_s"] if peer["MB_s"] else float("nan")
print("%-10s retnet %6.1f MB/s   tokenizers %6.1f MB/s   %5.1fx" % (name, ours["MB_s"], peer["MB_s"], ratio))
PY
    done
else
    echo "bench: tinyshakespeare.txt not found (set RETNETD_DATA)"
fi

echo
echo "== sampler: time per token at a 32,000-id vocabulary, temperature 1, one thread"
if [ -n "${PY:-}" ] && [ -x "$PY" ]; then
    "$PY" tools/bench_sampler.py "$OUT/sampler-rows.f32" --vocab 32000 >"$OUT/sampler-peer.json"
    "$RETNET" sampbench "$OUT/sampler-rows.f32" 32000 >"$OUT/sampler.json"
    python3 - "$OUT/sampler-peer.json" "$OUT/sampler.json" <<'PY'
import json, sys
peer, ours = (json.load(open(p)) for p in sys.argv[1:3])
print("half the rows peaked, half flat; us per token (lower is better)")
print("%-10s %12s %12s %12s %12s %9s" % ("", "whole row", "from reduced", "reduced+row", "PyTorch",
                                         "row ratio"))
for p in ("1", "0.9"):
    row, red, host = (ours["%s_p%s_us" % (w, p)] for w in ("row", "reduced", "host"))
    print("%-10s %12.1f %12.2f %12.1f %12.1f %8.1fx" % ("top-p " + p, row, red, host,
                                                      peer["p%s_us" % p], peer["p%s_us" % p] / row))
    print("%-10s %d of %d reduced rows needed the whole row" % ("", ours["refused_p%s" % p],
                                                               ours["rows"]))
print("peer: %s (softmax and multinomial; top-p as transformers' TopPLogitsWarper)" % peer["peer"])
PY
else
    echo "bench: skipped the sampler: no build/venv (tools/venv.sh)"
fi

echo
echo "== 1.3B preset shape (random bf16 weights) vs this machine's limits, $THREADS threads"
if [ ! -f "$OUT/r1.3b-bf16/config.json" ]; then
    "$RETNET" random --preset 1.3b --dtype bf16 "$OUT/r1.3b-bf16"
fi
"$RETNET" bench "$OUT/r1.3b-bf16" --threads "$THREADS" --prompt 256 --chunk 256 --decode 8 \
    --batch 16 | tee "$OUT/large.txt"

echo
echo "== sessions: second turn vs resending the conversation, prefix cache, host and disk tiers (default model)"
if [ -f models/config.json ]; then
    python3 bench/sessions_bench.py --threads "$THREADS"
else
    echo "bench: models/ has no model: sessions benchmark skipped"
fi
