#!/bin/sh
# `make bench-cuda`: the CUDA backend on the 1.3B preset (random bf16
# weights) next to the device's limits (copy kernel, cuBLASLt bf16 GEMM) and
# next to flash-linear-attention's RetNet on the same GPU, in one run.
# Results: build/bench/cuda/{ours,ours-notc,ours-tc0,ours-nosplit,ours-gemv8,ours-split8,ours-tcloads16,ours-stepearly,ours-normrow,ours-pieces*-c*,ours-retbf16-c*,ours-retcublas-c*,ours-lttune-c*,ours-lttune-p512,ours-noprenorm,ours-nostepearly,ours-noprefillpdl*,ours-residgemm*,ours-tcasync*,ours-tc64*,ours-noqkhalf*,ours-nohalfcopies*,ours-noltpairs*,ours-noretsplit,ours-retsplit2,ours-retnarrow*,ours-retnorm*,ours-l2fork*,ours-gemvgn*,ours-tckpw*,ours-tcgroups1*,ours-tcstream*,ours-halfact-c*,ours-bf16-states,accuracy-bf16-states,peer,peer-kernels,timeline}.json
# and a summary on stdout (each switch against the defaults of the same
# run: compare.txt, tools/bench_compare.py); the
# plot (docs/decode-vs-batch.png) comes from tools/plot_decode.py.
# PEER_WHEELS=DIR installs the peer's wheels from DIR (no network needed);
# BENCH_CUDA_NCU=1 adds a per-kernel profile (ncu, tools/ncu_summary.py);
# the kernels' timeline as they run in service (CUPTI) comes with every run
# (BENCH_CUDA_TIMELINE=0: not).
# BENCH_CUDA_OUT and BENCH_CUDA_MODEL move the results and the model.
# BENCH_CUDA_PART=ours: retnetd's own measurements only; =rest: the peer,
# the timelines and the comparison over what $OUT already holds; so a run
# can go in two commands of a few minutes each on the same machine.
# BENCH_CUDA=quick: the main table, prefill in 2048- and 4096-token chunks,
# the defaults against the paths they replaced (RET_FUSED=0,
# GEMV_PRENORM=0, STEP_EARLY=0 at 1-2, PREFILL_PDL=0, QK_HALF=0 and V_HALF=0,
# LT_PAIRS=0, RET_SPLIT=0), STEP_EARLY=1 at 16 and 64, LT_TUNE, RESID_GEMM,
# RET_SPLIT=2, TC_ASYNC and the peer at batches 1 and 16: a few minutes
# instead of the whole sweep.
# BENCH_CUDA=fast: less again (decode at 1, 2, 4, 8, 16, 64 and 256, prefill of
# 512, 2k and 8k, the switches not yet measured -- RET_WIDE,
# RET_SPLIT, RET_NORM, LT_TUNE at 512, L2_FORK, GEMV_GROUPNORM, the
# tensor-core GEMV's shapes and its stream-K grid --,
# the defaults of 27 Nov against what they replaced, the peer at 1 and on
# 512 and 8k, twice) for a device lent for a quarter of an hour.
set -eu
started=$(date +%s) # BENCH_CUDA_BUDGET's clock
case ${BENCH_CUDA_BUDGET:-1} in
'' | *[!0-9]* | ??????????*) # up to 9 digits: the shell's arithmetic holds them
    echo "bench-cuda: BENCH_CUDA_BUDGET must be a whole number of seconds, not '$BENCH_CUDA_BUDGET'" >&2
    exit 2
    ;;
esac
RETNET=${1:-build/release/retnet}
OUT=${BENCH_CUDA_OUT:-build/bench/cuda}
MODEL=${BENCH_CUDA_MODEL:-build/bench/r1.3b-bf16}
mkdir -p "$OUT"
if ! "$RETNET" cuda-info >"$OUT/device.txt" 2>&1; then
    echo "SKIPPED: bench-cuda: $(cat "$OUT/device.txt")"
    exit 0
fi
cat "$OUT/device.txt"
[ -f "$MODEL/config.json" ] || "$RETNET" random --preset 1.3b --dtype bf16 "$MODEL"

# BENCH_CUDA_BUDGET=SECONDS: no measurement starts once this command has
# run that long; the ones left are listed as skipped (not failed), in the
# order the run would have taken them, which puts what decides the most
# first, so a short lease still ends with the comparison of what it did.

skipped=
within_budget() { # name
    [ -z "${BENCH_CUDA_BUDGET:-}" ] && return 0
    [ $(($(date +%s) - started)) -lt "$BENCH_CUDA_BUDGET" ] && return 0
    echo "bench-cuda: $1 skipped (the budget of $BENCH_CUDA_BUDGET s is spent)" >&2
    skipped="$skipped $1"
    # an earlier run's results would be compared as this run's
    rm -f "$OUT/$1.json" "$OUT/$1.txt" "$OUT/$1.csv" "$OUT/$1.log"
    return 1
}

# One measurement: run NAME [VAR=VALUE...] -- BENCH-CUDA-ARGUMENTS, with
# those RETNET_CUDA_* settings, its JSON into $OUT/NAME.json.
run() {
    name=$1 vars=
    shift
    while [ "$1" != -- ]; do
        vars="$vars $1"
        shift
    done
    shift
    [ "${BENCH_CUDA_PART:-all}" != rest ] || return 0
    within_budget "$name" || return 0
    echo "bench-cuda: $name ($(date +%T))" >&2
    if env $vars "$RETNET" bench-cuda "$MODEL" "$@" >"$OUT/$name.json"; then
        cat "$OUT/$name.json"
    else
        echo "bench-cuda: $name FAILED (its error above)"
        failed="$failed $name"
    fi
}
failed=
# prefill of 2k and 8k prompts in 1024- and 4096-token chunks: prefill NAME VAR=VALUE
prefill() {
    for c in 1024 4096; do
        run "$1-c$c" "$2" -- --batches 1 --prompts 2048,8192 --chunk $c --decode 4
    done
}

# the GEMVs at batches 1 and 2 with their pre-norm launched as a kernel of
# its own (RETNET_CUDA_GEMV_PRENORM=0, the default before 2026-11-27), the
# recurrent step without its early state loads where they are on by
# default (RETNET_CUDA_STEP_EARLY=0 at batches 1 and 2) and with them where
# they are off (=1 at 16 and 64): decode_switches
decode_switches() {
    run ours-noprenorm RETNET_CUDA_GEMV_PRENORM=0 -- --batches 1,2 --prompts 512 --chunk 1024 \
        --decode 32
    run ours-nostepearly RETNET_CUDA_STEP_EARLY=0 -- --batches 1,2 --prompts 512 --chunk 1024 \
        --decode 32
    run ours-stepearly RETNET_CUDA_STEP_EARLY=1 -- --batches 16,64 --prompts 512 --chunk 1024 \
        --decode 32
}

# the tensor-core GEMV's weights through its cp.async ring
# (RETNET_CUDA_TC_ASYNC=1: the stages the plan gives; =2: two) at 16 rows,
# at 1 and 2 rows in place of the GEMV, and with that GEMV taking 32 and 64
# rows (RETNET_CUDA_TC_MAX=64; cuBLASLt by default), with and without the
# ring: tc_switches
tc_switches() {
    run ours-tcasync RETNET_CUDA_TC_ASYNC=1 -- --batches 8,16 --prompts 512 --chunk 1024 \
        --decode 32
    run ours-tcasync2 RETNET_CUDA_TC_ASYNC=2 -- --batches 16 --prompts 512 --chunk 1024 --decode 32
    # and from one row (RETNET_CUDA_GEMV_MAX=0: without the GEMV's pre-norm fold)
    run ours-tcasync-b1 RETNET_CUDA_GEMV_MAX=0 RETNET_CUDA_TC_ASYNC=1 -- --batches 1,2 \
        --prompts 512 --chunk 1024 --decode 32
    run ours-tc64 RETNET_CUDA_TC_MAX=64 -- --batches 32,64 --prompts 512 --chunk 1024 --decode 32
    run ours-tc64async RETNET_CUDA_TC_MAX=64 RETNET_CUDA_TC_ASYNC=1 -- --batches 32,64 \
        --prompts 512 --chunk 1024 --decode 32
}

# the tensor-core GEMV's launch shape at 16 rows, where ncu found it
# latency-bound (q/k/v/g's 384 blocks in 1.45 waves of 264, o's and down's
# 128 one an SM): warps of 512 and 1024 k instead of 256 (fewer, longer-lived
# warps, blocks small enough for more of them an SM), of 128 (more, shorter
# ones), and one pair group a block (twice q/k/v/g's blocks, each input
# piece serving half the weights): tc_shape
tc_shape() {
    for v in "kpw128 RETNET_CUDA_TC_KPW=128" "kpw512 RETNET_CUDA_TC_KPW=512" \
        "kpw1024 RETNET_CUDA_TC_KPW=1024" "groups1 RETNET_CUDA_TC_GROUPS=1" \
        "groups1-kpw512 RETNET_CUDA_TC_GROUPS=1 RETNET_CUDA_TC_KPW=512"; do
        run "ours-tc${v%% *}" ${v#* } -- --batches 16 --prompts 512 --chunk 1024 --decode 32
    done
}

# the tensor-core GEMV as a stream-K grid (RETNET_CUDA_TC_STREAM=1): as many
# warps as the SMs hold, each an even run of the launch's units (a pair
# group's rows by 32 k), where the plan's grid of whole groups leaves
# q/k/v/g's 384 blocks at 16 rows in 1.45 waves; at 32 and 64 rows too
# with that GEMV taking them (RETNET_CUDA_TC_MAX=64) outside the fast run:
# tc_stream
tc_stream() {
    run ours-tcstream RETNET_CUDA_TC_STREAM=1 -- --batches 4,8,16 --prompts 512 --chunk 1024 \
        --decode 32
    if [ "${BENCH_CUDA:-full}" != fast ]; then
        run ours-tcstream-tc64 RETNET_CUDA_TC_STREAM=1 RETNET_CUDA_TC_MAX=64 -- --batches 32,64 \
            --prompts 512 --chunk 1024 --decode 32
    fi
}

# the fused read-out's value columns split over blocks where a chunk
# leaves SMs idle (the default) against never (RETNET_CUDA_RET_SPLIT=0) and
# always in two (=2) on the short prompts, where a chunk has few (piece,
# head)s: ret_split
ret_split() {
    run ours-noretsplit RETNET_CUDA_RET_SPLIT=0 -- --batches 1 --prompts 512,2048,8192 \
        --chunk 1024 --decode 4
    run ours-retsplit2 RETNET_CUDA_RET_SPLIT=2 -- --batches 1 --prompts 512,2048 --chunk 1024 \
        --decode 4
}

# the fused read-out in narrow warps (RETNET_CUDA_RET_WIDE=0, the tiling
# before 28 Nov: products 16 rows by dv / 4, scores 16 by 16) against the
# default's wide ones (32 by dv / 8, 16 by 32), which load about a third
# fewer fragments from shared memory for the same sums, in the server's
# chunks and in 4096-token ones: ret_wide
ret_wide() {
    run ours-retnarrow RETNET_CUDA_RET_WIDE=0 -- --batches 1 --prompts 512,2048,8192 \
        --chunk 1024 --decode 4
    run ours-retnarrow-c4096 RETNET_CUDA_RET_WIDE=0 -- --batches 1 --prompts 2048,8192 \
        --chunk 4096 --decode 4
}

# the fused read-out normalising and gating its rows itself
# (RETNET_CUDA_RET_NORM=1) in the server's chunks and in 4096-token ones,
# and at 512 tokens with whole heads (RETNET_CUDA_RET_SPLIT=0: the norm
# needs a block to hold a head's every column) against the default's
# split read-out and separate norm: ret_norm
ret_norm() {
    run ours-retnorm RETNET_CUDA_RET_NORM=1 -- --batches 1 --prompts 512,2048,8192 --chunk 1024 \
        --decode 4
    run ours-retnorm-c4096 RETNET_CUDA_RET_NORM=1 -- --batches 1 --prompts 2048,8192 \
        --chunk 4096 --decode 4
    run ours-retnorm-nosplit RETNET_CUDA_RET_NORM=1 RETNET_CUDA_RET_SPLIT=0 -- --batches 1 \
        --prompts 512 --chunk 1024 --decode 4
}

# each layer's output-projection weights asked of L2 on a second stream
# while the recurrent step and the group norm run (RETNET_CUDA_L2_FORK=N:
# steps of up to N rows), at the small batches where the memory idles
# under those kernels, and at 16 where the states keep it busy: l2_fork
l2_fork() {
    run ours-l2fork RETNET_CUDA_L2_FORK=16 -- --batches 1,2,16 --prompts 512 --chunk 1024 \
        --decode 32
}

# the decode group norm formed by the output projection's GEMV
# (RETNET_CUDA_GEMV_GROUPNORM=1; the 1.3B layer's rows fit it at 1 and 2
# sessions) instead of its own launch between the recurrent step and that
# GEMV, at 1 and 2, and with L2_FORK too, whose fetch the norm's launch
# no longer covers: gemv_group_norm
gemv_group_norm() {
    run ours-gemvgn RETNET_CUDA_GEMV_GROUPNORM=1 -- --batches 1,2 --prompts 512 --chunk 1024 \
        --decode 32
    run ours-gemvgn-l2fork RETNET_CUDA_GEMV_GROUPNORM=1 RETNET_CUDA_L2_FORK=2 -- --batches 1,2 \
        --prompts 512 --chunk 1024 --decode 32
}

# cuBLASLt's algorithms timed per shape (RETNET_CUDA_LT_TUNE=512) on the
# 512-token prompt, whose 512-row products fill the SMs worst (their rate
# alone: products_of_gemm in ours.json): lt_tune_short
lt_tune_short() {
    run ours-lttune-p512 RETNET_CUDA_LT_TUNE=512 -- --batches 1 --prompts 512 --chunk 1024 \
        --decode 4
}

# the prefill defaults of 27 Nov against what they replaced: without
# dependent launch for prefill's own kernels (RETNET_CUDA_PREFILL_PDL=0),
# with the fused read-out's bf16 copies in passes of their own
# (RETNET_CUDA_QK_HALF=0 RETNET_CUDA_V_HALF=0), and the paired projections
# as two products each (RETNET_CUDA_LT_PAIRS=0, at 64 rows too): prefill_defaults
prefill_defaults() {
    run ours-noprefillpdl RETNET_CUDA_PREFILL_PDL=0 -- --batches 1 --prompts 512,8192 \
        --chunk 1024 --decode 4
    run ours-nohalfcopies RETNET_CUDA_QK_HALF=0 RETNET_CUDA_V_HALF=0 -- --batches 1 \
        --prompts 512,8192 --chunk 1024 --decode 4
    run ours-noltpairs RETNET_CUDA_LT_PAIRS=0 -- --batches 64 --prompts 512,8192 --chunk 1024 \
        --decode 32
}

if [ "${BENCH_CUDA:-full}" = fast ]; then
    # the targets' batches and prompts, the switches not yet measured, the
    # defaults of 27 Nov against what they replaced, and the timeline, for
    # a device lent for minutes
    # (4 and 8: the stream-K GEMV's baseline; the tensor-core GEMV's range)
    # in the order docs/benchmarks.md decides them, so a budget
    # (BENCH_CUDA_BUDGET) cuts the least telling last
    run ours -- --batches 1,2,4,8,16,64,256 --prompts 512,2048,8192 --chunk 1024 --decode 32
    run ours-c4096 -- --batches 1 --prompts 2048,8192 --chunk 4096 --decode 4
    gemv_group_norm
    ret_wide
    ret_norm
    l2_fork
    tc_stream
    tc_shape
    ret_split
    lt_tune_short
    prefill_defaults
    run ours-residgemm-c4096 RETNET_CUDA_RESID_GEMM=1 -- --batches 64 --prompts 2048,8192 \
        --chunk 4096 --decode 32
    # what bf16 states cost in accuracy on this model, against fp32 states
    # (seconds; not an ours* result: bench_compare.py has no rates to compare)
    run accuracy-bf16-states -- --bf16-accuracy --chunk 1024
    # the peer at batch 1 only (its batch-16 decode took a minute of a lease)
    PEER_BATCHES=1 PEER_PROMPTS=512,8192
else
    # the server's defaults (1024-token chunks on a GPU)
    run ours -- --batches 1,2,4,8,16,32,64,128,256 --prompts 512,2048,8192 --chunk 1024 \
        --decode 32
    if [ "${BENCH_CUDA:-full}" = quick ]; then
        run ours-c4096 -- --batches 1 --prompts 2048,8192 --chunk 4096 --decode 4
        # the server's chunk is the prefix cache's grain and bounds how long a
        # chunk holds the decode steps: 2048 is the next candidate for its default
        run ours-c2048 -- --batches 1 --prompts 2048,8192 --chunk 2048 --decode 4
        prefill ours-retcublas RETNET_CUDA_RET_FUSED=0
        prefill ours-lttune RETNET_CUDA_LT_TUNE=512
        # the output projections adding themselves to the stream in cuBLASLt's
        # epilogue (RETNET_CUDA_RESID_GEMM=1)
        prefill ours-residgemm RETNET_CUDA_RESID_GEMM=1
        prefill_defaults
        ret_wide
        ret_split
        ret_norm
        l2_fork
        gemv_group_norm
        decode_switches
        tc_switches
        tc_stream
        PEER_BATCHES=1,16 PEER_PROMPTS=2048,8192
    else
        # the decode paths the default chose between: without the tensor-core GEMV
        # (the GEMV up to 4 rows, then cuBLASLt) and with it from one row
        run ours-notc RETNET_CUDA_TC_MAX=0 -- --batches 1,2,4,8,16,32 --prompts 512 --chunk 1024 \
            --decode 32
        run ours-tc0 RETNET_CUDA_TC_MAX=64 RETNET_CUDA_GEMV_MAX=0 -- --batches 1,2,4,8,16,32,64 \
            --prompts 512 --chunk 1024 --decode 32
        # the GEMV with whole rows a warp instead of 1024-column shares
        # (RETNET_CUDA_GEMV_SPLIT=0) at the default GEMV batches, then with the GEMV
        # taking up to 8 rows, split or not
        run ours-nosplit RETNET_CUDA_GEMV_SPLIT=0 -- --batches 1,2 --prompts 512 --chunk 1024 \
            --decode 32
        for v in "gemv8 0" "split8 1024"; do
            set -- $v
            run "ours-$1" RETNET_CUDA_GEMV_SPLIT=$2 RETNET_CUDA_GEMV_MAX=8 -- --batches 1,4,8 \
                --prompts 512 --chunk 1024 --decode 32
        done
        # the tensor-core GEMV with twice the loads in flight (RETNET_CUDA_TC_LOADS=16)
        run ours-tcloads16 RETNET_CUDA_TC_LOADS=16 -- --batches 4,8,16 --prompts 512 --chunk 1024 \
            --decode 32
        # the norms reading each row twice instead of holding it in registers
        # (RETNET_CUDA_NORM_VEC=0)
        run ours-normrow RETNET_CUDA_NORM_VEC=0 -- --batches 1,16 --prompts 2048,8192 --chunk 1024 \
            --decode 32
        # prefill retention pieces (RETNET_CUDA_RET_CHUNK; by default 256 below
        # 2048-token chunks, 512 from there; 0: whole chunks) by chunk length
        for c in 1024 2048 4096 8192; do
            for p in 0 256 512 1024; do
                run "ours-pieces$p-c$c" RETNET_CUDA_RET_CHUNK=$p -- --batches 1 --prompts 2048,8192 \
                    --chunk $c --decode 4
            done
        done
        # the retention products on bf16 tensor cores instead of TF32 (RETNET_CUDA_RET_BF16=1)
        prefill ours-retbf16 RETNET_CUDA_RET_BF16=1
        # the batched pieces through the cuBLAS products instead of the
        # tensor-core kernel (RETNET_CUDA_RET_FUSED=0)
        prefill ours-retcublas RETNET_CUDA_RET_FUSED=0
        # cuBLASLt's algorithms timed per shape instead of its heuristic's first
        # (RETNET_CUDA_LT_TUNE=512: the chunks' shapes; its choices on stderr)
        prefill ours-lttune RETNET_CUDA_LT_TUNE=512
        # the output projections adding themselves to the stream in cuBLASLt's
        # epilogue (RETNET_CUDA_RESID_GEMM=1)
        prefill ours-residgemm RETNET_CUDA_RESID_GEMM=1
        prefill_defaults
        # the rotary pass's copies without v's (RETNET_CUDA_V_HALF=0), in
        # 1024- and 4096-token chunks
        prefill ours-nohalfv RETNET_CUDA_V_HALF=0
        ret_wide
        ret_split
        ret_norm
        l2_fork
        gemv_group_norm
        decode_switches
        tc_switches
        tc_stream
        # GLU's up and gate written rounded by cuBLASLt (RETNET_CUDA_HALF_ACT=1)
        for c in 1024 4096; do
            run "ours-halfact-c$c" RETNET_CUDA_HALF_ACT=1 -- --batches 64,256 --prompts 2048,8192 \
                --chunk $c --decode 32
        done
        # bf16 states (--gpu-state-dtype bf16): half the state bytes per step
        run ours-bf16-states -- --batches 1,16,64,256 --prompts 2048 --chunk 1024 --decode 32 \
            --state-bf16
        PEER_BATCHES=1,16,64,256 PEER_PROMPTS=512,2048,8192
    fi
fi

PY=${PYTHON:-python3}
# The kernels' timeline (CUPTI, in graphs with dependent launches, as they
# run in service) of decode steps at batches 1, 16 and 64 and of one
# 4096-token chunk: timeline.csv, summed per kernel in timeline.txt
# (tools/timeline_summary.py).  BENCH_CUDA_TIMELINE=0 leaves it out;
# RETNET_CUPTI names libcupti when it is not where the loader looks.
# Before the peer, which the order of decisions puts last.
cupti_lib() {
    for d in "${CUDA_HOME:-/usr/local/cuda}/extras/CUPTI/lib64" "${CUDA_HOME:-/usr/local/cuda}/lib64" \
        $("$PY" -c 'import nvidia, os; [print(os.path.join(p, d, "lib")) for p in nvidia.__path__ for d in os.listdir(p)]' 2>/dev/null); do
        for f in "$d"/libcupti.so "$d"/libcupti.so.*; do
            [ -f "$f" ] && { echo "$f"; return 0; }
        done
    done
    return 0 # none found: the loader's path is tried (set -e must not stop here)
}
TL_ARGS="--batches 1,16,64 --prompts 4096 --chunk 4096 --decode 8"
timeline() { # name bench-cuda-arguments [VAR=value ...]
    name=$1 args=$2
    shift 2
    within_budget "$name" || return 0
    cupti=${RETNET_CUPTI:-$(cupti_lib)}
    echo "bench-cuda: $name $* ($(date +%T))" >&2
    # shellcheck disable=SC2086 # args: several words
    if env RETNET_CUPTI="$cupti" "$@" "$RETNET" bench-cuda "$MODEL" --timeline "$OUT/$name.csv" \
        $args >"$OUT/$name.json" 2>"$OUT/$name.log" &&
        "$PY" tools/timeline_summary.py "$OUT/$name.csv" --json "$OUT/$name.json" >"$OUT/$name.txt"; then
        echo "== $name $*"
        cat "$OUT/$name.json" "$OUT/$name.txt"
    else
        echo "bench-cuda: the timeline $name failed (see $OUT/$name.log)"
        failed="$failed $name"
    fi
}
if [ "${BENCH_CUDA_TIMELINE:-1}" = 1 ] && [ "${BENCH_CUDA_PART:-all}" != ours ]; then
    # in the order docs/benchmarks.md decides them (BENCH_CUDA_BUDGET cuts the last)
    timeline timeline "$TL_ARGS"
    # a 512-token prompt in one chunk: how much of its time lies between
    # kernels (the target's shortest prompt, where a chunk's 480 launches
    # weigh most)
    timeline timeline-p512 "--batches 1 --prompts 512 --chunk 1024 --decode 2"
    # batch-1 steps with the group norm formed by the output projection's
    # GEMV (RETNET_CUDA_GEMV_GROUPNORM): against decode-b1-s8's group norms
    timeline timeline-b1-gemvgn "--batches 1 --prompts 512 --chunk 1024 --decode 8" \
        RETNET_CUDA_GEMV_GROUPNORM=1
    # a 4096-token chunk with the read-out in narrow warps
    # (RETNET_CUDA_RET_WIDE=0), its own time against timeline.txt's (the
    # night run of 27 Nov, narrow: 161 us a layer)
    timeline timeline-retnarrow "--batches 1 --prompts 4096 --chunk 4096 --decode 2" \
        RETNET_CUDA_RET_WIDE=0
    # a 4096-token chunk with the fused read-out normalising its rows
    # (RETNET_CUDA_RET_NORM=1): against timeline.txt's prefill, where the
    # group norm took 86 us a layer
    timeline timeline-retnorm "--batches 1 --prompts 4096 --chunk 4096 --decode 2" \
        RETNET_CUDA_RET_NORM=1
    # batch-1 steps with the output projection's weights asked of L2 on a
    # second stream (RETNET_CUDA_L2_FORK): against timeline.txt's decode-b1-s8
    timeline timeline-b1-l2fork "--batches 1 --prompts 512 --chunk 1024 --decode 8" \
        RETNET_CUDA_L2_FORK=2
    # the tensor-core GEMVs at 16 rows as a stream-K grid
    # (RETNET_CUDA_TC_STREAM): against timeline.txt's decode-b16-s8
    timeline timeline-b16-tcstream "--batches 16 --prompts 512 --chunk 1024 --decode 8" \
        RETNET_CUDA_TC_STREAM=1
    # the tensor-core GEMVs at 16 rows in warps of 512 k instead of 256
    # (RETNET_CUDA_TC_KPW): against timeline.txt's decode-b16-s8
    timeline timeline-b16-kpw512 "--batches 16 --prompts 512 --chunk 1024 --decode 8" \
        RETNET_CUDA_TC_KPW=512
    # the 512-token prompt with the fused read-out in one block a head and
    # query tile (the default splits it over more)
    timeline timeline-p512-noretsplit "--batches 1 --prompts 512 --chunk 1024 --decode 2" \
        RETNET_CUDA_RET_SPLIT=0
    # a 2048-token prompt in the server's 1024-token chunks: what a chunk of
    # 1024 rows spends per kernel class and between its two chunks (8k
    # prompts prefill 7% slower in 1024-token chunks than in 4096)
    timeline timeline-p2048-c1024 "--batches 1 --prompts 2048 --chunk 1024 --decode 2"
    # the tensor-core GEMV's rate at 16 rows through its cp.async ring
    if [ "${BENCH_CUDA:-full}" != fast ]; then
        timeline timeline-tcasync "$TL_ARGS" RETNET_CUDA_TC_ASYNC=1
    fi
fi
if [ -n "${PEER_WHEELS:-}" ]; then
    "$PY" -m pip install -q --no-index --find-links "$PEER_WHEELS" flash-linear-attention \
        >"$OUT/pip.log" 2>&1 || echo "bench-cuda: installing the peer from $PEER_WHEELS failed"
fi
# the peer's prefill moves by up to a third between processes (its kernels'
# autotuning), so it runs PEER_RUNS times (2; the later runs prefill only)
# and peer.json keeps each point's best, with every run's (tools/bench_peer.py --merge)
if [ "${BENCH_CUDA_PART:-all}" = ours ]; then
    echo "bench-cuda: the peer left to BENCH_CUDA_PART=rest"
    [ -f "$OUT/peer.json" ] || echo '{}' >"$OUT/peer.json"
elif "$PY" -c "import fla, transformers" 2>/dev/null; then
    runs=
    rm -f "$OUT/peer-kernels.json" "$OUT/peer-kernels.txt" # never an earlier run's
    for i in $(seq 1 "${PEER_RUNS:-2}"); do
        within_budget "peer-$i" || continue
        b=$([ "$i" = 1 ] && echo "$PEER_BATCHES" || echo "")
        # the first run also profiles a 4096-token prefill, the timeline's
        # prompt: the peer's device time per kernel class beside ours
        k=$([ "$i" = 1 ] && echo "--kernels 4096 --kernels-out $OUT/peer-kernels.json" || echo "")
        # shellcheck disable=SC2086 # k: several words or none
        if "$PY" tools/bench_peer.py "$MODEL" --batches "$b" --prompts "$PEER_PROMPTS" \
            --decode 32 $k >"$OUT/peer-$i.json" 2>"$OUT/peer-$i.log"; then
            runs="$runs $OUT/peer-$i.json"
        else
            echo "bench-cuda: peer run $i failed (see $OUT/peer-$i.log)"
        fi
    done
    if [ -f "$OUT/peer-kernels.json" ] &&
        "$PY" tools/bench_peer.py --show-kernels "$OUT/peer-kernels.json" >"$OUT/peer-kernels.txt"; then
        echo "== the peer's 4096-token prefill by kernel class (ours: timeline.txt's prefill-4096-c4096)"
        cat "$OUT/peer-kernels.txt"
    else
        case "$skipped " in
        *" peer-1 "*) ;; # for want of time: not a failure
        *)
            echo "bench-cuda: no kernel profile of the peer's prefill (see $OUT/peer-1.log)"
            failed="$failed peer-kernels"
            ;;
        esac
    fi
    # shellcheck disable=SC2086 # runs: several files
    [ -n "$runs" ] && "$PY" tools/bench_peer.py --merge $runs >"$OUT/peer.json" ||
        echo '{}' >"$OUT/peer.json"
else
    echo "bench-cuda: flash-linear-attention is not importable: peer not run"
    echo '{}' >"$OUT/peer.json"
fi
# BENCH_CUDA_NCU=1: where a 4096-token prefill chunk and a batch-1 decode
# step spend their time, per kernel (ncu; summary in $OUT/ncu.txt), and
# the same with the retention read-outs through the cuBLAS products
# instead of the fused kernel (ncu-cublas.txt);
# BENCH_CUDA_NCU_BATCH=B adds a decode step of B sessions (ncu-bB.txt)
ncu_profile() { # name batch prompt [VAR=value ...]
    name=$1 batch=$2 prompt=$3
    shift 3
    if env "$@" ncu --profile-from-start off --metrics gpu__time_duration.sum --print-units base \
        --csv "$RETNET" bench-cuda "$MODEL" --profile --batches "$batch" --prompts "$prompt" \
        --chunk 4096 >"$OUT/$name.csv" 2>"$OUT/$name.log" &&
        "$PY" tools/ncu_summary.py "$OUT/$name.csv" --launches >"$OUT/$name.txt"; then
        echo "== $name $*"
        cat "$OUT/$name.txt"
    else
        echo "bench-cuda: the profile $name failed (see $OUT/$name.log, $OUT/$name.txt)"
        failed="$failed $name"
    fi
}
if [ "${BENCH_CUDA_NCU:-0}" = 1 ]; then
    if ! command -v ncu >/dev/null 2>&1; then
        echo "bench-cuda: ncu is not on PATH: no profile"
        failed="$failed ncu"
    else
        ncu_profile ncu 1 4096
        ncu_profile ncu-cublas 1 4096 RETNET_CUDA_RET_FUSED=0
        if [ -n "${BENCH_CUDA_NCU_BATCH:-}" ]; then
            ncu_profile "ncu-b$BENCH_CUDA_NCU_BATCH" "$BENCH_CUDA_NCU_BATCH" 64
        fi
    fi
fi
if [ -f "$OUT/ours.json" ]; then
    python3 tools/plot_decode.py --summary "$OUT/ours.json" "$OUT/peer.json"
fi
# every switch against the defaults of this run (also in compare.txt)
python3 tools/bench_compare.py "$OUT" | tee "$OUT/compare.txt"
[ -z "$skipped" ] || echo "bench-cuda: skipped (BENCH_CUDA_BUDGET):$skipped"
if [ -n "$failed" ]; then
    echo "bench-cuda: failed:$failed"
    exit 1
fi
