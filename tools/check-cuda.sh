#!/bin/sh
# `make check-cuda`: the CUDA backend on a real device.
#   1. the parity and form suites with RN_TEST_DEVICE=cuda (the same fixtures
#      and properties the CPU backend passes; tolerances in check_parity.c),
#      and the synthetic suite (a width over 512, 65 rotary pairs per head,
#      an odd vocabulary over 8192: check_synthetic.c) against the CPU;
#   2. compute-sanitizer memcheck over the form and parity suites (every
#      kernel, every form, every reference flavour, batched decode), when
#      compute-sanitizer is on PATH;
#   3. with a third argument (retnetd), the daemon's integration tests
#      serving on the GPU (RETNETD_TEST_DEVICE=cuda): test_server.py
#      (batching, sessions, streaming, disconnects), test_state.py (state
#      export, import and persistence), test_tiers.py (host and disk
#      offload, the prefix cache), test_faults.py (engine failures, a
#      lost device, SIGTERM under load), and the rest but the install's
#      and the SDK's: metrics, bad input, lifecycle, sessions moved
#      between replicas, API keys, configuration.
# Without a CUDA build or a device it prints one SKIPPED line and exits 0:
# that is a skip, never a pass.  Logs: build/cuda/.
# CHECK_CUDA_EMULATED=1 runs the same list against the emulated build
# (`make check-cuda-emu`: the backend on the CPU, tests/emu/): no device to
# probe, no compute-sanitizer, the integration tests too (`make
# check-cuda-emu-integration`; test_faults.py's kernel failing on the device,
# RN_EMU_FAIL_LAUNCH, runs only there); each test's time limit
# CK_TIMEOUT_MULTIPLIER (20) times longer, CHECK_CUDA_JOBS the cores.
# Logs: check-cuda/ beside the emulated test binary (build/release-emu/).
# CHECK_CUDA_ONLY=REGEX keeps the runs, memcheck runs and integration
# tests (named as their files: "test_server", "test_state", ...) whose names
# match (an awk regular expression), e.g. '^(forms|parity|synthetic)$' for a
# short check, '^test_' for the integration tests alone; the line "check-cuda: N of
# M runs" says how many suite runs were left out.  The racecheck and
# synccheck runs are named SUITE-CASE-TOOL: forms-ret_fused-racecheck,
# forms-ret_fused-synccheck, synthetic-gemvgn-racecheck,
# synthetic-gemvgn-synccheck.
set -u
OUT=build/cuda
if [ "${CHECK_CUDA_EMULATED:-0}" = 1 ]; then
    OUT=$(dirname "$(dirname "$2")")/check-cuda # beside the emulated build: build/<flavour>-emu/
fi

# One run (called by the script itself, CHECK_CUDA_JOBS at a time):
# --run TESTS NAME SUITE ENV...; its result line, and exit 1 on failure.
if [ "${1:-}" = --run ]; then
    tests=$2 name=$3 suite=$4
    shift 4
    log=$OUT/$name.log
    if env "$@" RN_TEST_DEVICE=cuda CK_RUN_SUITE=$suite CK_DEFAULT_TIMEOUT=300 \
        "$tests" >"$log" 2>&1; then
        echo "check-cuda: $name: $(tail -n 1 "$log")"
        exit 0
    fi
    echo "check-cuda: $name FAILED (log: $log)"
    grep -E "Failure|Error|Assertion" "$log" | head -n 20
    exit 1
fi

RETNET=$1
TESTS=$2
RETNETD=${3:-}
mkdir -p "$OUT"

if [ "${CHECK_CUDA_EMULATED:-0}" = 1 ]; then
    # the device's measurements would take the emulation hours; nothing to
    # sanitize
    echo "check-cuda: the CUDA backend on the CPU (emulated runtime, cuBLAS and kernels)" |
        tee "$OUT/device.txt"
    CHECK_CUDA_MEMCHECK=0
    CK_TIMEOUT_MULTIPLIER=${CK_TIMEOUT_MULTIPLIER:-20}
    CHECK_CUDA_JOBS=${CHECK_CUDA_JOBS:-$(nproc 2>/dev/null || echo 2)}
    export CK_TIMEOUT_MULTIPLIER
elif ! info=$("$RETNET" cuda-info 2>&1); then
    echo "SKIPPED: check-cuda: $info"
    exit 0
else
    echo "check-cuda: $info" | tee "$OUT/device.txt"
fi

# The lines of stdin whose first field matches CHECK_CUDA_ONLY (all without it).
select_runs() {
    if [ -n "${CHECK_CUDA_ONLY:-}" ]; then
        awk -v re="$CHECK_CUDA_ONLY" '$1 ~ re'
    else
        cat
    fi
}

fail=0
# Each run: name, suite, then the environment it runs under.  By default
# bf16 and fp16 models decode 1-2 rows through the GEMV, 3-16 through the
# tensor-core GEMV and more through cuBLASLt; fp32 models (most fixtures)
# 1-4 through the GEMV, then cuBLASLt.  The form suite runs again with the
# decode step launched kernel by kernel (no graph), with dependent launch
# off, with the retention products of a prefill chunk in 5-token pieces (the
# full ones batched, then a ragged tail; the synthetic shapes in 16-token
# pieces; the fixtures' chunks are shorter than the default pieces), with
# the tensor-core GEMV off (the GEMV to 4 rows, as before sm_80), with
# cuBLASLt from 3 rows, and with every batch up to 64 rows through the
# tensor-core GEMV, and with the GEMV's input split over warps for every
# batch up to 8: in 64-column shares (most fixture matrices are 64 to 256
# wide: one round of loads a share), in 512 (the demo model's 1024-wide down
# projection: two rounds a share from 3 rows) and in 256 for the synthetic
# shapes (the default 1024-column shares split only matrices 2048 or more
# wide); with the norms reading their rows from memory twice instead of
# holding them in registers (the default); with the retention products of
# 16-bit models on bf16 tensor cores instead of TF32 (the synthetic
# suite's bf16 model and parity's bf16 fixture; the fused read-out's
# copies written by the rotary pass and by v's product, RETNET_CUDA_QK_HALF
# and RETNET_CUDA_V_HALF, and the paired cuBLASLt products,
# RETNET_CUDA_LT_PAIRS, are defaults the synthetic suite tests against
# engines without them, and parity and synthetic run again with them off);
# so every path is held
# to the same properties (on a GPU the form suite itself checks that the
# tensor-core GEMV's deeper loads, RETNET_CUDA_TC_LOADS, and the recurrent
# step's early state loads, RETNET_CUDA_STEP_EARLY, the GEMVs forming
# their pre-norm themselves, RETNET_CUDA_GEMV_PRENORM (on by default; in
# 64-column shares, so the fixtures' widths take it), and prefill's
# dependent launches, RETNET_CUDA_PREFILL_PDL (on by default), change no
# bit; the synthetic shapes and parity's fixtures run without the last
# too, the
# synthetic shapes through the first three; the tensor-core GEMV's
# weights through its cp.async ring, RETNET_CUDA_TC_ASYNC (off by
# default), run the form suite (which checks it keeps every bit, and
# compares rings of 2 to 4 stages with the registers on shapes of its own),
# parity (at most 2 stages: the ring wraps) and synthetic with every batch
# up to 64 rows through that GEMV; the form and synthetic suites run that
# GEMV in launch shapes other than the plan's (RETNET_CUDA_TC_KPW: warps
# of 1024 k, one a block at the fixtures' widths, and of 96, a round and a
# half; RETNET_CUDA_TC_GROUPS=2 where the plan takes one group for so few
# rows), and the form, parity and synthetic suites run every batch up to
# 64 rows through its stream-K grid, RETNET_CUDA_TC_STREAM (off by
# default; the form suite also holds it to the register kernel's sums and
# to its own bits launch after launch, memcheck watches the synthetic
# shapes through it); parity, synthetic and the
# form suite run with the output projections adding themselves to the
# residual stream in cuBLASLt's epilogue, RETNET_CUDA_RESID_GEMM, whose
# rounding may differ from the norm's; and through GLU's rounded up
# and gate, RETNET_CUDA_HALF_ACT, as parity does; the form suite checks the
# fused retention kernel, RETNET_CUDA_RET_FUSED (on by default for 16-bit
# models), against a double-precision reference, and the synthetic suite
# runs it inside the engine on a model whose heads fit it, with the switch
# set by the test itself (and against itself with each head's value
# columns split over blocks, RETNET_CUDA_RET_SPLIT, on by default where a
# chunk's grid leaves SMs idle, which parity and synthetic run without
# too; and with the read-out normalising and gating its own rows,
# RETNET_CUDA_RET_NORM, off by default, which the synthetic suite also
# runs by itself; the form and synthetic suites with every decode step of
# up to 64 rows asking L2 for its output projections' weights on a second
# stream, RETNET_CUDA_L2_FORK, which the synthetic suite also holds to the
# same bits by itself; and with the decode group norm formed by the output
# projection's GEMV, RETNET_CUDA_GEMV_GROUPNORM, off by default, in 256-
# column shares so that the synthetic models' rows fit it, which the
# synthetic suite also holds to the same bits by itself); parity and
# synthetic run again without it, on
# the cuBLAS products it replaced, and again
# with cuBLASLt's algorithms timed for every shape outside a decode
# graph, RETNET_CUDA_LT_TUNE=1, whose picks may sum in another order).
# The runs are small next to a device: CHECK_CUDA_JOBS (4) go at once, each
# its own process; their lines come in the order they finish.
cat >"$OUT/runs.txt" <<RUNS
cuda_plan cuda_plan RETNET_CUDA_GRAPHS=1
parity parity RETNET_CUDA_GRAPHS=1
forms forms RETNET_CUDA_GRAPHS=1
forms-eager forms RETNET_CUDA_GRAPHS=0
forms-nopdl forms RETNET_CUDA_PDL=0
forms-pieces forms RETNET_CUDA_RET_CHUNK=5
parity-pieces parity RETNET_CUDA_RET_CHUNK=5
forms-notc forms RETNET_CUDA_TC_MAX=0
forms-lt forms RETNET_CUDA_GEMV_MAX=2 RETNET_CUDA_TC_MAX=0
parity-lt parity RETNET_CUDA_GEMV_MAX=2 RETNET_CUDA_TC_MAX=0
state_bf16 state_bf16 RETNET_CUDA_GRAPHS=1
synthetic synthetic RETNET_CUDA_GRAPHS=1
synthetic-lt synthetic RETNET_CUDA_GEMV_MAX=2 RETNET_CUDA_TC_MAX=0
forms-tc forms RETNET_CUDA_GEMV_MAX=0 RETNET_CUDA_TC_MAX=64
parity-tc parity RETNET_CUDA_GEMV_MAX=0 RETNET_CUDA_TC_MAX=64
synthetic-tc synthetic RETNET_CUDA_GEMV_MAX=0 RETNET_CUDA_TC_MAX=64
synthetic-pieces synthetic RETNET_CUDA_RET_CHUNK=16
forms-split forms RETNET_CUDA_GEMV_SPLIT=64 RETNET_CUDA_GEMV_MAX=8
forms-split512 forms RETNET_CUDA_GEMV_SPLIT=512 RETNET_CUDA_GEMV_MAX=8
parity-split parity RETNET_CUDA_GEMV_SPLIT=64
synthetic-split synthetic RETNET_CUDA_GEMV_SPLIT=256 RETNET_CUDA_GEMV_MAX=8
synthetic-tcl16 synthetic RETNET_CUDA_TC_LOADS=16
forms-tcshape forms RETNET_CUDA_TC_KPW=1024 RETNET_CUDA_TC_GROUPS=2
synthetic-tcshape synthetic RETNET_CUDA_TC_KPW=96 RETNET_CUDA_TC_GROUPS=2
forms-tcstream forms RETNET_CUDA_GEMV_MAX=0 RETNET_CUDA_TC_MAX=64 RETNET_CUDA_TC_STREAM=1
parity-tcstream parity RETNET_CUDA_GEMV_MAX=0 RETNET_CUDA_TC_MAX=64 RETNET_CUDA_TC_STREAM=1
synthetic-tcstream synthetic RETNET_CUDA_GEMV_MAX=0 RETNET_CUDA_TC_MAX=64 RETNET_CUDA_TC_STREAM=1
forms-tcasync forms RETNET_CUDA_GEMV_MAX=0 RETNET_CUDA_TC_MAX=64 RETNET_CUDA_TC_ASYNC=1
parity-tcasync parity RETNET_CUDA_GEMV_MAX=0 RETNET_CUDA_TC_MAX=64 RETNET_CUDA_TC_ASYNC=2
synthetic-tcasync synthetic RETNET_CUDA_GEMV_MAX=0 RETNET_CUDA_TC_MAX=64 RETNET_CUDA_TC_ASYNC=1
synthetic-retbf16 synthetic RETNET_CUDA_RET_BF16=1
synthetic-early synthetic RETNET_CUDA_STEP_EARLY=1
synthetic-noearly synthetic RETNET_CUDA_STEP_EARLY=0
parity-retcublas parity RETNET_CUDA_RET_FUSED=0
parity-noretsplit parity RETNET_CUDA_RET_SPLIT=0
synthetic-noretsplit synthetic RETNET_CUDA_RET_SPLIT=0
parity-retnorm parity RETNET_CUDA_RET_NORM=1 RETNET_CUDA_RET_SPLIT=0
synthetic-retnorm synthetic RETNET_CUDA_RET_NORM=1 RETNET_CUDA_RET_SPLIT=0
synthetic-l2fork synthetic RETNET_CUDA_L2_FORK=64
forms-l2fork forms RETNET_CUDA_L2_FORK=64
synthetic-gemvgn synthetic RETNET_CUDA_GEMV_GROUPNORM=1 RETNET_CUDA_GEMV_SPLIT=256 RETNET_CUDA_GEMV_MAX=8
parity-gemvgn parity RETNET_CUDA_GEMV_GROUPNORM=1 RETNET_CUDA_GEMV_SPLIT=64
forms-gemvgn forms RETNET_CUDA_GEMV_GROUPNORM=1 RETNET_CUDA_GEMV_SPLIT=64 RETNET_CUDA_GEMV_MAX=8
synthetic-retcublas synthetic RETNET_CUDA_RET_FUSED=0
synthetic-noprenorm synthetic RETNET_CUDA_GEMV_PRENORM=0
parity-noprefillpdl parity RETNET_CUDA_PREFILL_PDL=0
synthetic-noprefillpdl synthetic RETNET_CUDA_PREFILL_PDL=0
parity-residgemm parity RETNET_CUDA_RESID_GEMM=1
parity-noltpairs parity RETNET_CUDA_LT_PAIRS=0
synthetic-noltpairs synthetic RETNET_CUDA_LT_PAIRS=0
parity-nohalf parity RETNET_CUDA_QK_HALF=0 RETNET_CUDA_V_HALF=0
synthetic-nohalf synthetic RETNET_CUDA_QK_HALF=0 RETNET_CUDA_V_HALF=0
synthetic-residgemm synthetic RETNET_CUDA_RESID_GEMM=1
forms-residgemm forms RETNET_CUDA_RESID_GEMM=1
forms-prenorm forms RETNET_CUDA_GEMV_PRENORM=1 RETNET_CUDA_GEMV_SPLIT=64 RETNET_CUDA_GEMV_MAX=8
synthetic-prenorm synthetic RETNET_CUDA_GEMV_PRENORM=1 RETNET_CUDA_GEMV_SPLIT=256 RETNET_CUDA_GEMV_MAX=8
parity-retbf16 parity RETNET_CUDA_RET_BF16=1
synthetic-halfact synthetic RETNET_CUDA_HALF_ACT=1
parity-lttune parity RETNET_CUDA_LT_TUNE=1
synthetic-lttune synthetic RETNET_CUDA_LT_TUNE=1
parity-halfact parity RETNET_CUDA_HALF_ACT=1
forms-normrow forms RETNET_CUDA_NORM_VEC=0
parity-normrow parity RETNET_CUDA_NORM_VEC=0
synthetic-normrow synthetic RETNET_CUDA_NORM_VEC=0
RUNS
select_runs <"$OUT/runs.txt" >"$OUT/runs-selected.txt"
echo "check-cuda: $(grep -c . "$OUT/runs-selected.txt") of $(grep -c . "$OUT/runs.txt") runs"
xargs -r -L 1 -P "${CHECK_CUDA_JOBS:-4}" sh "$0" --run "$TESTS" <"$OUT/runs-selected.txt" || fail=1

# memcheck: no fork, the sanitizer watches one process through a whole
# suite (the last seven: the synthetic shapes through the tensor-core GEMV,
# in registers, through its cp.async ring and in its stream-K grid, prefill
# retention in batched pieces, the split GEMV, the norms reading their
# rows twice, and the group norm formed by the output projection's GEMV)
select_runs >"$OUT/memcheck.txt" <<MEMCHECK
forms forms RETNET_CUDA_GRAPHS=1
parity parity RETNET_CUDA_GRAPHS=1
state_bf16 state_bf16 RETNET_CUDA_GRAPHS=1
synthetic synthetic RETNET_CUDA_GRAPHS=1
synthetic-tc synthetic RETNET_CUDA_GEMV_MAX=0 RETNET_CUDA_TC_MAX=64
synthetic-tcasync synthetic RETNET_CUDA_GEMV_MAX=0 RETNET_CUDA_TC_MAX=64 RETNET_CUDA_TC_ASYNC=1
synthetic-tcstream synthetic RETNET_CUDA_GEMV_MAX=0 RETNET_CUDA_TC_MAX=64 RETNET_CUDA_TC_STREAM=1
forms-pieces forms RETNET_CUDA_RET_CHUNK=5
forms-split forms RETNET_CUDA_GEMV_SPLIT=64 RETNET_CUDA_GEMV_MAX=8
synthetic-normrow synthetic RETNET_CUDA_NORM_VEC=0
synthetic-gemvgn synthetic RETNET_CUDA_GEMV_GROUPNORM=1 RETNET_CUDA_GEMV_SPLIT=256 RETNET_CUDA_GEMV_MAX=8
MEMCHECK
if [ "${CHECK_CUDA_MEMCHECK:-1}" = 0 ]; then
    echo "check-cuda: memcheck not run (CHECK_CUDA_MEMCHECK=0)"
elif command -v compute-sanitizer >/dev/null 2>&1; then
    while read -r name suite env; do
        log=$OUT/memcheck-$name.log
        if env $env RN_TEST_DEVICE=cuda CK_RUN_SUITE=$suite CK_FORK=no CK_DEFAULT_TIMEOUT=1200 \
            compute-sanitizer --tool memcheck --error-exitcode 9 --leak-check full "$TESTS" \
            >"$log" 2>&1; then
            echo "check-cuda: memcheck $name clean ($(grep -c . "$log") log lines)"
        else
            echo "check-cuda: memcheck $name FAILED (log: $log)"
            grep -E "=========" "$log" | head -n 20
            fail=1
        fi
    done <"$OUT/memcheck.txt"
    # shared memory and barriers watched alone, racecheck and synccheck over
    # one test case each: the fused retention kernel's (cp.async copies,
    # ldmatrix reads, the scores' stores; the form suite's ret_fused case)
    # and the group norm the output projection's GEMV forms (its rounds of
    # heads reusing their sums behind a barrier; the synthetic suite's
    # gemvgn case); one that does not finish in its time, or that ran no
    # test, proves nothing and fails the run (0: not run, said)
    for tool in racecheck synccheck; do
        for target in forms:ret_fused synthetic:gemvgn; do
            suite=${target%%:*} tcase=${target#*:}
            echo "$suite-$tcase-$tool" | select_runs | grep -q . || continue
            if [ "${CHECK_CUDA_RACE_TIME:-120}" = 0 ]; then
                echo "check-cuda: $tool $tcase not run (CHECK_CUDA_RACE_TIME=0)"
                continue
            fi
            log=$OUT/$tool-$tcase.log
            # the fused read-out in its default (wide) tiling alone: the
            # narrow one's barriers and copies are the same, and racecheck
            # pays for every launch
            if env RN_TEST_DEVICE=cuda RN_TEST_RET_WIDE=1 CK_RUN_SUITE=$suite CK_RUN_CASE=$tcase \
                CK_FORK=no \
                CK_DEFAULT_TIMEOUT=1200 timeout "${CHECK_CUDA_RACE_TIME:-120}" \
                compute-sanitizer --tool $tool --error-exitcode 9 "$TESTS" >"$log" 2>&1 &&
                grep -q 'Checks: [1-9]' "$log"; then
                echo "check-cuda: $tool $tcase clean ($(grep -c . "$log") log lines)"
            else
                echo "check-cuda: $tool $tcase FAILED or did not finish (log: $log)"
                grep -E "=========" "$log" | head -n 20
                fail=1
            fi
        done
    done
else
    echo "check-cuda: compute-sanitizer not on PATH: memcheck not run"
fi
# The daemon's integration tests serving on the device, each after the
# other: test_server, test_state (export, import, persistence), test_tiers
# (host and disk offload, the prefix cache), test_faults, test_metrics
# (among them where tokens were sampled, on the device or the host) and
# test_bad_input, test_lifecycle, test_replicas (sessions moved between
# servers through export and import), test_security and test_config.
# Their timing cases scale by the engine's measured rate, or skip (said in
# the log) where the emulation is too slow for their premise; the emulation
# alone can make a kernel fail (RETNETD_TEST_KERNEL_FAULT: test_faults.py's
# kernel fault, skipped on a device).
kernel_fault=0
[ "${CHECK_CUDA_EMULATED:-0}" = 1 ] && kernel_fault=1
for run in test_server test_state test_tiers test_faults test_metrics test_bad_input \
    test_lifecycle test_replicas test_security test_config; do
    [ -n "$RETNETD" ] || break
    echo $run | select_runs | grep -q . || continue
    if RETNETD_TEST_DEVICE=cuda RETNETD="$RETNETD" RETNET="$RETNET" \
        RETNETD_TEST_KERNEL_FAULT=$kernel_fault python3 tests/integration/$run.py \
        >"$OUT/$run.log" 2>&1; then
        echo "check-cuda: $run (retnetd on the CUDA backend): $(grep -E '^(OK|Ran)' "$OUT/$run.log" | tr '\n' ' ')"
    else
        echo "check-cuda: $run (retnetd on the CUDA backend) FAILED (log: $OUT/$run.log)"
        grep -E "^(FAIL|ERROR):" "$OUT/$run.log" | head -n 20
        fail=1
    fi
done
exit $fail
