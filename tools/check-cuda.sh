#!/bin/sh
# `make check-cuda`: the CUDA backend on a real device.
#   1. the parity and form suites with RN_TEST_DEVICE=cuda (the same fixtures
#      and properties the CPU backend passes; tolerances in check_parity.c);
#   2. compute-sanitizer memcheck over the form and parity suites (every
#      kernel, every form, every reference flavour, batched decode), when
#      compute-sanitizer is on PATH;
#   3. with a third argument (retnetd), the daemon's integration test
#      (tests/integration/test_server.py: batching, sessions, streaming,
#      disconnects) serving on the GPU (RETNETD_TEST_DEVICE=cuda).
# Without a CUDA build or a device it prints one SKIPPED line and exits 0:
# that is a skip, never a pass.  Logs: build/cuda/.
set -u
RETNET=$1
TESTS=$2
RETNETD=${3:-}
OUT=build/cuda
mkdir -p "$OUT"

if ! info=$("$RETNET" cuda-info 2>&1); then
    echo "SKIPPED: check-cuda: $info"
    exit 0
fi
echo "check-cuda: $info" | tee "$OUT/device.txt"

fail=0
# forms-eager: the decode step launched kernel by kernel instead of from a
# captured graph, so both paths are held to the same properties
for run in cuda_plan:1 parity:1 forms:1 forms-eager:0; do
    suite=${run%%:*} suite=${suite%-eager} graphs=${run#*:} log=$OUT/${run%%:*}.log
    if RETNET_CUDA_GRAPHS=$graphs RN_TEST_DEVICE=cuda CK_RUN_SUITE=$suite CK_DEFAULT_TIMEOUT=300 \
        "$TESTS" >"$log" 2>&1; then
        echo "check-cuda: ${run%%:*}: $(tail -n 1 "$log")"
    else
        echo "check-cuda: ${run%%:*} FAILED (log: $log)"
        grep -E "Failure|Error|Assertion" "$log" | head -n 20
        fail=1
    fi
done

if [ "${CHECK_CUDA_MEMCHECK:-1}" = 0 ]; then
    echo "check-cuda: memcheck not run (CHECK_CUDA_MEMCHECK=0)"
elif command -v compute-sanitizer >/dev/null 2>&1; then
    # no fork: the sanitizer watches one process through a whole suite
    for suite in forms parity; do
        if RN_TEST_DEVICE=cuda CK_RUN_SUITE=$suite CK_FORK=no CK_DEFAULT_TIMEOUT=1200 \
            compute-sanitizer --tool memcheck --error-exitcode 9 --leak-check full "$TESTS" \
            >"$OUT/memcheck-$suite.log" 2>&1; then
            echo "check-cuda: memcheck $suite clean ($(grep -c . "$OUT/memcheck-$suite.log") log lines)"
        else
            echo "check-cuda: memcheck $suite FAILED (log: $OUT/memcheck-$suite.log)"
            grep -E "=========" "$OUT/memcheck-$suite.log" | head -n 20
            fail=1
        fi
    done
else
    echo "check-cuda: compute-sanitizer not on PATH: memcheck not run"
fi
if [ -n "$RETNETD" ]; then
    if RETNETD_TEST_DEVICE=cuda RETNETD="$RETNETD" RETNET="$RETNET" \
        python3 tests/integration/test_server.py >"$OUT/server.log" 2>&1; then
        echo "check-cuda: server on the GPU: $(grep -E '^(OK|Ran)' "$OUT/server.log" | tr '\n' ' ')"
    else
        echo "check-cuda: server on the GPU FAILED (log: $OUT/server.log)"
        grep -E "^(FAIL|ERROR):" "$OUT/server.log" | head -n 20
        fail=1
    fi
fi
exit $fail
