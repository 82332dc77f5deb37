#!/bin/bash
# image-check.sh -- build docker/Dockerfile with podman and check the images end to end.
#
# Run from anywhere in the checkout (as root, or as a user whose podman works):
#
#   sh tests/container/image-check.sh                 # Debian 12 + Ubuntu 24.04 CPU images
#   sh tests/container/image-check.sh --no-noble      # the Debian 12 CPU image only
#   sh tests/container/image-check.sh --cuda-standin  # also the CUDA build (see below)
#   sh tests/container/image-check.sh --clean         # also drop the cached base tarballs
#
# What it does (docs/docker.md, "How the images are tested"):
#
#   1. makes the local base images (docs/docker.md, "How the images are tested")
#      (debootstrap --variant=minbase, then podman import) and caches their
#      tarballs in build/container/ (shared with fresh-check.sh), so a second
#      run starts at once; the imported tags (localhost/debian:bookworm,
#      localhost/ubuntu:noble) are removed again unless they were there before;
#   2. builds the CPU image from the working tree with
#      --build-arg BUILD_IMAGE=localhost/debian:bookworm (and RUNTIME_IMAGE),
#      checks that without nvcc the build is CPU-only, the image's metadata
#      (non-root user, volumes, port, stop signal, healthcheck) and its size;
#   3. runs it with a random loopback port published, waits for /health, posts
#      a completion, runs the image's healthcheck (`podman healthcheck run`),
#      opens a session, then stops the container with `podman stop -t 40`
#      (SIGTERM) while a stream is running: the stream must finish, the exit
#      code must be 0 and the stop must take well under the 30-s drain
#      deadline; a second container on the same state volume must have the
#      session back (written by the non-root user at stop);
#   4. checks that the Dockerfile's default arguments name NVIDIA's CUDA 13
#      devel and runtime images, stage by stage (podman build --pull=never
#      stops at each FROM it cannot resolve);
#   5. does 2 and 3 again on Ubuntu 24.04 (the release of NVIDIA's images):
#      the same Dockerfile with Ubuntu's library names (t64);
#   6. with --cuda-standin, on a host with a CUDA toolkit in /usr/local/cuda
#      (or CUDA_STANDIN_HOME): builds stand-ins for NVIDIA's devel and runtime
#      images (Ubuntu 24.04 plus that toolkit's compiler and cuBLAS/cudart),
#      builds the image on them (nvcc found: the CUDA backend is compiled and
#      linked), runs it without a GPU (--device auto serves on the CPU) and
#      checks that `--device cuda` is refused cleanly.
#
# Removes its containers, volumes and images at the end, also on failure or
# Ctrl-C.  Needs podman with runc, curl and python3; debootstrap only when no
# base tarball is cached.  Every long step runs under `timeout`.  Prints one
# PASS or FAIL line per check and exits non-zero if any check failed.
#
# Environment: MIRROR / UBUNTU_MIRROR / SECURITY_MIRROR override the archives
# debootstrap uses; CUDA_STANDIN_HOME the toolkit for --cuda-standin.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi # `sh image-check.sh` works too
set -euo pipefail

usage() { sed -n '2,/^if \[ -z/{/^if \[ -z/d;s/^# \{0,1\}//;p}' "$0"; }

NOBLE=1
STANDIN=0
CLEAN=0
while [ $# -gt 0 ]; do
    case "$1" in
        --no-noble) NOBLE=0 ;;
        --cuda-standin) STANDIN=1 ;;
        --clean) CLEAN=1 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "image-check: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/container/minbase.sh
. "$ROOT/tests/container/minbase.sh"
cd "$ROOT"
test -f docker/Dockerfile || { echo "image-check: no docker/Dockerfile in $ROOT" >&2; exit 2; }
CACHE=$ROOT/build/container
LOGS=$CACHE/logs
mkdir -p "$LOGS"

for tool in podman runc curl python3 timeout; do
    command -v "$tool" >/dev/null 2>&1 || {
        echo "image-check: $tool not found (apt-get install podman runc curl python3)" >&2
        exit 1
    }
done

# crun fails on this cgroup setup and podman refuses the default rlimits on
# hosts like the test machines (docs/docker.md).  --format docker: an OCI image
# cannot carry a HEALTHCHECK.  --pull=never: the base images are local.
# --layers=false: no intermediate images are left behind.
PODMAN=(podman --runtime runc)
ULIMITS=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
BUILD=("${PODMAN[@]}" build --network host "${ULIMITS[@]}" --format docker --pull=never
    --layers=false --ignorefile docker/Dockerfile.dockerignore -f docker/Dockerfile)
BUILD_TIMEOUT=600
# One-off commands in the image (often in $(...), a subshell): named after
# this run, so that cleanup finds them if `timeout` ends the client.
oneoff() {
    timeout 120 "${PODMAN[@]}" run --rm --name "$RUN_ID-oneoff-$RANDOM$RANDOM" "${ULIMITS[@]}" \
        --network none --no-healthcheck "$@"
}

RUN_ID=image-check-$$
TMP=$(mktemp -d "${TMPDIR:-/tmp}/image-check.XXXXXX")
CONTAINERS=()
VOLUMES=()
IMAGES=()
BG_PIDS=()
LONG_PID=""
FAILS=0
PASSES=0
T0=$(date +%s)

# shellcheck disable=SC2317  # called from the trap
cleanup() {
    local status=$?
    set +e
    for p in "${BG_PIDS[@]}"; do kill "$p" 2>/dev/null; done
    if [ -n "$LONG_PID" ]; then kill "$LONG_PID" 2>/dev/null; wait "$LONG_PID" 2>/dev/null; fi
    for c in "${CONTAINERS[@]}" $("${PODMAN[@]}" ps -a -q --filter "name=^$RUN_ID-" 2>/dev/null); do
        "${PODMAN[@]}" rm -f -v -i -t 0 "$c" >/dev/null 2>&1
    done
    for v in "${VOLUMES[@]}"; do "${PODMAN[@]}" volume rm -f "$v" >/dev/null 2>&1; done
    for i in "${IMAGES[@]}"; do "${PODMAN[@]}" rmi -f "$i" >/dev/null 2>&1; done
    if [ "$CLEAN" = 1 ]; then rm -f "$CACHE"/bookworm-minbase.tar "$CACHE"/noble-minbase.tar; fi
    # An interrupted debootstrap may leave /proc or /sys mounted in its target.
    awk -v t="$TMP/" 'index($2, t) == 1 { print $2 }' /proc/mounts | sort -r |
        while read -r m; do umount -l "$m"; done
    rm -rf "$TMP"
    exit "$status"
}
trap cleanup EXIT
exec 3>&2 # the trap may run inside a command whose output goes to a log
trap 'echo "image-check: interrupted" >&3; exit 130' INT TERM

# bounded SECONDS COMMAND...: COMMAND under timeout, in the background so
# that Ctrl-C or SIGTERM reaches the trap at once (cleanup stops COMMAND).
bounded() {
    local secs=$1 rc=0
    shift
    timeout "$secs" "$@" &
    LONG_PID=$!
    wait "$LONG_PID" || rc=$?
    LONG_PID=""
    return "$rc"
}
say() { printf 'image-check: %s\n' "$*"; }
pass() { printf 'PASS: %s\n' "$*"; PASSES=$((PASSES + 1)); }
fail() { printf 'FAIL: %s\n' "$*"; FAILS=$((FAILS + 1)); }
ms() { echo $(($(date +%s%N) / 1000000)); }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", (b - a) / 1000 }'; }
# json FILE PYTHON-EXPRESSION-ON-j: prints the value, fails when it raises.
json() { python3 -c 'import json, sys; j = json.load(open(sys.argv[1])); v = eval(sys.argv[2]); print(v)' "$1" "$2"; }

# --------------------------------------------------------------------------
# Base images: a cached debootstrap tarball, imported into podman.

# base_image DISTRO TAG: make sure TAG exists (imported from the tarball).
base_image() {
    local distro=$1 tag=$2 tarball=$CACHE/$1-minbase.tar mirror
    case "$distro" in
        bookworm) mirror=${MIRROR:-http://deb.debian.org/debian} ;;
        noble) mirror=${UBUNTU_MIRROR:-http://archive.ubuntu.com/ubuntu} ;;
    esac
    if [ ! -s "$tarball" ]; then
        command -v debootstrap >/dev/null 2>&1 || {
            echo "image-check: debootstrap not found (apt-get install debootstrap)" >&2
            return 1
        }
        say "debootstrap --variant=minbase $distro from $mirror (once; cached in $tarball)"
        minbase_tarball "$distro" "$mirror" "$tarball" "$TMP" "$LOGS/debootstrap-$distro.log" \
            bounded 900 || {
            echo "image-check: debootstrap $distro failed" >&2
            return 1
        }
        # A tag imported from an older tarball is stale now.
        "${PODMAN[@]}" rmi -f "$tag" >/dev/null 2>&1 || true
    fi
    if ! "${PODMAN[@]}" image exists "$tag"; then
        "${PODMAN[@]}" import -q "$tarball" "$tag" >/dev/null
        IMAGES+=("$tag") # imported by this run: untagged again at the end
    fi
}

# build LABEL TAG LOG [podman build args...]: builds, times, reports.
build() {
    local label=$1 tag=$2 log=$3 t
    shift 3
    t=$(ms)
    IMAGES+=("$tag")
    if bounded "$BUILD_TIMEOUT" "${BUILD[@]}" -t "$tag" "$@" . >"$log" 2>&1; then
        pass "$label: image built in $(secs "$t" "$(ms)") s ($(grep -m1 '^runtime packages:' "$log" || true))"
    else
        tail -n 25 "$log" | sed 's/^/    /'
        fail "$label: podman build failed (log: ${log#"$ROOT"/})"
        return 1
    fi
}

# --------------------------------------------------------------------------
# Checks on a built image.

# static_checks LABEL IMAGE
static_checks() {
    local label=$1 image=$2 size
    "${PODMAN[@]}" image inspect "$image" >"$TMP/config.json"
    local problems
    problems=$(python3 - "$TMP/config.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))[0]
c = d["Config"]  # podman keeps the healthcheck next to it, not in it
p = []
if c.get("User") != "retnetd:retnetd": p.append("User=%r" % c.get("User"))
if "8080/tcp" not in (c.get("ExposedPorts") or {}): p.append("no EXPOSE 8080")
if set(c.get("Volumes") or {}) != {"/models", "/var/lib/retnetd"}: p.append("Volumes=%r" % c.get("Volumes"))
if c.get("StopSignal") not in ("SIGTERM", "15"): p.append("StopSignal=%r" % c.get("StopSignal"))
hc = " ".join((d.get("Healthcheck") or c.get("Healthcheck") or {}).get("Test") or [])
if "http://127.0.0.1:8080/health" not in hc: p.append("Healthcheck=%r" % hc)
ep = (c.get("Entrypoint") or []) + (c.get("Cmd") or [])
if ep != ["retnetd", "--config", "/etc/retnetd/retnetd.conf"]: p.append("command %r" % ep)
print("; ".join(p))
EOF
    )
    if [ -z "$problems" ]; then
        pass "$label: metadata (user retnetd, EXPOSE 8080, VOLUME /models /var/lib/retnetd, STOPSIGNAL SIGTERM, HEALTHCHECK, ENTRYPOINT retnetd --config /etc/retnetd/retnetd.conf)"
    else
        fail "$label: metadata: $problems"
    fi
    # The effective settings: the image's file, and a variable over it.
    local want got
    want='host = 0.0.0.0 ; config file|port = 8080 ; config file|dir = /usr/share/retnetd/models ; config file|state_dir = /var/lib/retnetd ; config file'
    got=$(oneoff "$image" --check-config 2>&1 |
        sed -n 's/  *;/ ;/; /^\(host\|port\|dir\|state_dir\) = /p' | paste -sd '|') || true
    if [ "$got" = "$want" ]; then
        pass "$label: retnetd --check-config in the image: $(echo "$got" | sed 's/ ; config file//g; s/|/, /g') (from the config file)"
    else
        fail "$label: --check-config: got '$got', want '$want'"
    fi
    got=$(oneoff -e RETNETD_MODEL=/models \
        "$image" --check-config --port 9000 2>&1 | sed -n 's/  *;/ ;/; /^\(port\|dir\) = /p' | paste -sd '|') || true
    if [ "$got" = 'port = 9000 ; flag|dir = /models ; environment' ]; then
        pass "$label: RETNETD_MODEL=/models and a flag after the image name override the image's settings"
    else
        fail "$label: overrides: got '$got'"
    fi
    size=$("${PODMAN[@]}" image inspect --format '{{.Size}}' "$image")
    say "$label: image size $((size / 1000000)) MB"
}

# cpu_only_checks LABEL IMAGE LOG
cpu_only_checks() {
    local label=$1 image=$2 log=$3 out
    if grep -q '^nvcc: not found (CPU only)' "$log"; then
        pass "$label: build stage without nvcc builds CPU-only (make info: nvcc not found)"
    else
        fail "$label: build log lacks 'nvcc: not found (CPU only)'"
    fi
    out=$(oneoff --entrypoint sh "$image" \
        -c 'id -u; ldd /usr/local/bin/retnetd /usr/local/bin/retnet; retnet info /usr/share/retnetd/models' 2>&1) || true
    if [ "$(printf '%s\n' "$out" | head -n 1)" = 10001 ] &&
        ! printf '%s\n' "$out" | grep -qE 'not found|libcudart|libcublas' &&
        printf '%s\n' "$out" | grep -q libopenblas; then
        pass "$label: runs as uid 10001; binaries resolve every library, no CUDA ones; retnet info works"
    else
        printf '%s\n' "$out" | sed 's/^/    /' | head -n 40
        fail "$label: uid / ldd / retnet info in the image"
    fi
}

# wait_health LABEL CONTAINER PORT: up to 60 s for GET /health.
wait_health() {
    local label=$1 c=$2 port=$3 t i state
    t=$(ms)
    for i in $(seq 1 120); do
        if curl -fsS --max-time 2 "http://127.0.0.1:$port/health" >"$TMP/health" 2>/dev/null; then
            pass "$label: /health answered after $(secs "$t" "$(ms)") s: $(cat "$TMP/health")"
            return 0
        fi
        state=$("${PODMAN[@]}" inspect -f '{{.State.Status}}' "$c" 2>/dev/null || echo gone)
        [ "$state" = running ] || [ "$state" = created ] || [ "$state" = configured ] || break
        sleep 0.5
    done
    "${PODMAN[@]}" logs "$c" 2>&1 | tail -n 20 | sed 's/^/    /'
    fail "$label: /health did not answer within 60 s (container $state)"
    return 1
}

# start LABEL NAME VOLUME IMAGE [retnetd args...]: runs the image detached with a
# random loopback port and START_OPTS; sets PORT.
START_OPTS=()
start() {
    local label=$1 c=$2 vol=$3 image=$4
    shift 4
    CONTAINERS+=("$c")
    if ! "${PODMAN[@]}" run -d --name "$c" "${ULIMITS[@]}" -p 127.0.0.1::8080 \
        -v "$vol:/var/lib/retnetd" "${START_OPTS[@]}" "$image" "$@" >"$TMP/run.out" 2>"$TMP/run.err"; then
        sed 's/^/    /' "$TMP/run.err"
        fail "$label: podman run"
        return 1
    fi
    PORT=$("${PODMAN[@]}" port "$c" 8080/tcp | sed -n '1s/.*://p')
    [ -n "$PORT" ] || { fail "$label: no published port"; return 1; }
}

# stop_checked LABEL CONTAINER BOUND: podman stop -t 40 (SIGTERM, SIGKILL
# after 40 s), exit code 0 (not 137: killed), within BOUND seconds.
stop_checked() {
    local label=$1 c=$2 bound=$3 t elapsed code
    t=$(ms)
    timeout 60 "${PODMAN[@]}" stop -t 40 "$c" >/dev/null 2>"$TMP/stop.err" || true
    elapsed=$(secs "$t" "$(ms)")
    code=$("${PODMAN[@]}" inspect -f '{{.State.ExitCode}}' "$c" 2>/dev/null || echo '?')
    if [ "$code" = 0 ] && awk -v e="$elapsed" -v b="$bound" 'BEGIN { exit !(e < b) }'; then
        pass "$label: podman stop -t 40 (SIGTERM): exit code 0 after $elapsed s (bound $bound s; drain deadline 30 s)"
    else
        "${PODMAN[@]}" logs "$c" 2>&1 | tail -n 10 | sed 's/^/    /'
        fail "$label: podman stop -t 40: exit code $code after $elapsed s (want 0, under $bound s)"
    fi
}

# run_checks LABEL IMAGE: the container end to end.
run_checks() {
    local label=$1 image=$2 vol=$RUN_ID-$1-state c1=$RUN_ID-$1-a c2=$RUN_ID-$1-b
    local base sid tokens stream_pid rc
    VOLUMES+=("$vol")
    "${PODMAN[@]}" volume create "$vol" >/dev/null

    start "$label" "$c1" "$vol" "$image" || return 0
    base=http://127.0.0.1:$PORT
    say "$label: container $c1 on $base"
    wait_health "$label" "$c1" "$PORT" || return 0

    if curl -sS --max-time 60 "$base/v1/completions" -H 'Content-Type: application/json' \
        -d '{"prompt": "ROMEO:", "max_tokens": 8}' >"$TMP/completion.json" &&
        text=$(json "$TMP/completion.json" 'j["choices"][0]["text"] if j["object"] == "text_completion" and len(j["choices"]) == 1 and j["usage"]["completion_tokens"] > 0 else 1/0') 2>/dev/null; then
        pass "$label: POST /v1/completions {\"prompt\": \"ROMEO:\", \"max_tokens\": 8} -> choices[0].text $(printf '%s' "$text" | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read()))')"
    else
        sed 's/^/    /' "$TMP/completion.json"
        echo
        fail "$label: POST /v1/completions"
    fi

    if timeout 30 "${PODMAN[@]}" healthcheck run "$c1" >"$TMP/hc" 2>&1; then
        pass "$label: podman healthcheck run: $(tr '\n' ' ' <"$TMP/hc")($("${PODMAN[@]}" inspect -f '{{.State.Health.Status}}' "$c1" 2>/dev/null))"
    else
        sed 's/^/    /' "$TMP/hc"
        fail "$label: podman healthcheck run exited non-zero"
    fi

    # A session, to come back from the state volume after the restart.
    sid=""
    if curl -sS --max-time 10 -X POST "$base/v1/sessions" >"$TMP/session.json" &&
        sid=$(json "$TMP/session.json" 'j["id"]') &&
        curl -sS --max-time 60 "$base/v1/completions" \
            -d "{\"prompt\": \"JULIET:\", \"max_tokens\": 8, \"session\": \"$sid\"}" >"$TMP/turn.json" &&
        curl -sS --max-time 10 "$base/v1/sessions/$sid" >"$TMP/session.json" &&
        tokens=$(json "$TMP/session.json" 'j["tokens"] if j["tokens"] > 0 else 1/0'); then
        :
    else
        sid=""
        fail "$label: session: $(cat "$TMP/session.json" "$TMP/turn.json" 2>/dev/null | head -c 300)"
    fi

    # Stop while a stream runs (1500 tokens: a few seconds): it must end
    # with [DONE], and the stop must still end well within the 30-s drain.
    curl -sSN --max-time 120 "$base/v1/completions" \
        -d '{"prompt": "ROMEO:", "max_tokens": 1500, "stream": true, "temperature": 0.8, "seed": 1}' \
        >"$TMP/stream" 2>"$TMP/stream.err" &
    stream_pid=$!
    BG_PIDS+=("$stream_pid")
    for _ in $(seq 1 100); do grep -q '^data: {' "$TMP/stream" 2>/dev/null && break; sleep 0.1; done
    stop_checked "$label" "$c1" 20
    rc=0
    wait "$stream_pid" || rc=$?
    local drain
    drain=$("${PODMAN[@]}" logs "$c1" 2>&1 | grep -m1 'signal 15: draining' | grep -o 'in_flight=[0-9]*' || true)
    if [ "$rc" = 0 ] && [ "$(grep '^data: ' "$TMP/stream" | tail -n 1)" = "data: [DONE]" ]; then
        pass "$label: stream running at SIGTERM finished: $(grep -c '^data: {' "$TMP/stream") chunks then [DONE] (retnetd: \"signal 15: draining\" ${drain:-no drain line})"
    else
        tail -c 300 "$TMP/stream" | sed 's/^/    /'
        sed 's/^/    /' "$TMP/stream.err"
        fail "$label: stream during stop (curl $rc; log: ${drain:-no drain line})"
    fi
    case "$drain" in *in_flight=0*) say "$label: note: the stream ended before SIGTERM arrived; the drain of a running stream was not exercised" ;; esac

    # A new container on the same state volume has the session back; this
    # one serves the same model bind-mounted at /models, as users run theirs.
    if [ -n "$sid" ]; then
        START_OPTS=(-v "$ROOT/models:/models:ro" -e RETNETD_MODEL=/models)
        start "$label" "$c2" "$vol" "$image" || { START_OPTS=(); return 0; }
        START_OPTS=()
        if wait_health "$label (restart)" "$c2" "$PORT" &&
            "${PODMAN[@]}" exec "$c2" grep -q ' /models/model.safetensors$' /proc/1/maps; then
            pass "$label: a model bind-mounted at /models with RETNETD_MODEL=/models is served (its weights are mapped from /models/model.safetensors)"
        else
            fail "$label: the model at /models is not the one served"
        fi
        if curl -sS --max-time 10 "http://127.0.0.1:$PORT/v1/sessions/$sid" >"$TMP/session2.json" &&
            [ "$(json "$TMP/session2.json" 'j["tokens"]' 2>/dev/null)" = "$tokens" ]; then
            pass "$label: session $sid ($tokens tokens) restored from the state volume by a new container"
        else
            "${PODMAN[@]}" logs "$c2" 2>&1 | tail -n 10 | sed 's/^/    /'
            fail "$label: session not restored: $(head -c 300 "$TMP/session2.json" 2>/dev/null)"
        fi
        stop_checked "$label (restart, idle)" "$c2" 5
    fi
}

# cpu_image DISTRO BASE: the CPU image on BASE (for both stages), built and
# put through the static, CPU-only and run checks.
cpu_image() {
    local distro=$1 base=$2 img=localhost/retnetd:$RUN_ID-cpu-$1 log=$LOGS/image-cpu-$1.log
    if build "$distro CPU" "$img" "$log" --build-arg BUILD_IMAGE="$base" \
        --build-arg RUNTIME_IMAGE="$base"; then
        static_checks "$distro CPU" "$img"
        cpu_only_checks "$distro CPU" "$img" "$log"
        run_checks "$distro" "$img"
    fi
}

# default_from ARG FLAVOUR STAGE [podman build args...]: with nothing pulled
# (--pull=never) the build stops at the first FROM it cannot resolve, which
# must be stage STAGE on nvidia/cuda:13.0.1-FLAVOUR-ubuntu24.04.
default_from() {
    local arg=$1 want=nvidia/cuda:13.0.1-$2-ubuntu24.04 stage=$3 log=$LOGS/defaults-$3.log
    shift 3
    bounded "$BUILD_TIMEOUT" "${BUILD[@]}" -t "localhost/retnetd:$RUN_ID-defaults" "$@" . \
        >"$log" 2>&1 || true
    if grep -q "FROM $want AS $stage" "$log" && grep -q "$want: image not known" "$log"; then
        pass "default $arg is $want (not pulled)"
    else
        tail -n 5 "$log" | sed 's/^/    /'
        fail "default $arg"
    fi
}

# --------------------------------------------------------------------------

say "$(git -C "$ROOT" log -1 --format='%h %s' 2>/dev/null | cut -c1-60) (+ working tree); podman $(podman --version | awk '{print $3}')"

# Debian 12: the CPU image.
t=$(ms)
base_image bookworm localhost/debian:bookworm || { fail "base image localhost/debian:bookworm"; exit 1; }
pass "base image localhost/debian:bookworm ready in $(secs "$t" "$(ms)") s"
# The build context the ignore file leaves: no .git, no build/ (gigabytes).
cat >"$TMP/Containerfile.context" <<'EOF'
FROM localhost/debian:bookworm
COPY . /context
RUN cd /context && for p in .git build; do if [ -e "$p" ]; then echo "context has $p"; fi; done; \
    du -sm . | awk '{ print "context " $1 " MB" }'
EOF
IMAGES+=("localhost/retnetd:$RUN_ID-context")
if bounded 120 "${PODMAN[@]}" build --network none "${ULIMITS[@]}" --pull=never --layers=false \
    --ignorefile docker/Dockerfile.dockerignore -f "$TMP/Containerfile.context" \
    -t "localhost/retnetd:$RUN_ID-context" . >"$LOGS/context.log" 2>&1 &&
    ! grep -q '^context has' "$LOGS/context.log"; then
    pass "build context with docker/Dockerfile.dockerignore: no .git, no build/ ($(grep -m1 '^context [0-9]* MB' "$LOGS/context.log"))"
else
    grep '^context' "$LOGS/context.log" | sed 's/^/    /'
    fail "build context with docker/Dockerfile.dockerignore"
fi
"${PODMAN[@]}" rmi -f "localhost/retnetd:$RUN_ID-context" >/dev/null 2>&1 || true

cpu_image bookworm localhost/debian:bookworm

# The default arguments: NVIDIA's images, stage by stage.  Nothing is pulled
# (--pull=never), so each build stops at the first FROM it cannot resolve.
IMAGES+=("localhost/retnetd:$RUN_ID-defaults")
default_from BUILD_IMAGE devel build --target build
default_from RUNTIME_IMAGE runtime runtime --build-arg BUILD_IMAGE=localhost/debian:bookworm

# Ubuntu 24.04: the release NVIDIA's CUDA 13 images are built on.
if [ "$NOBLE" = 1 ]; then
    t=$(ms)
    if base_image noble localhost/ubuntu:noble; then
        pass "base image localhost/ubuntu:noble ready in $(secs "$t" "$(ms)") s"
        cpu_image noble localhost/ubuntu:noble
    else
        fail "base image localhost/ubuntu:noble"
    fi
fi

# The CUDA build on stand-ins for NVIDIA's images made from this host's toolkit.
if [ "$STANDIN" = 1 ]; then
    CUDA_DIR=$(readlink -f "${CUDA_STANDIN_HOME:-/usr/local/cuda}")
    if [ ! -x "$CUDA_DIR/bin/nvcc" ]; then
        fail "--cuda-standin: no nvcc in $CUDA_DIR (set CUDA_STANDIN_HOME)"
    elif [ "$NOBLE" = 0 ] && ! base_image noble localhost/ubuntu:noble; then
        fail "--cuda-standin: base image localhost/ubuntu:noble"
    else
        ver=$(basename "$CUDA_DIR")
        case "$ver" in cuda-*) ;; *) ver=cuda ;; esac
        # NVIDIA's images keep the toolkit in /usr/local/cuda-X.Y with a
        # /usr/local/cuda link, lib64 -> targets/x86_64-linux/lib, PATH.
        # The devel stand-in gets the compiler, headers, cudart and cuBLAS;
        # the runtime stand-in cudart and cuBLAS.
        cat >"$TMP/Containerfile.standin" <<EOF
FROM localhost/ubuntu:noble
ARG KIND
RUN set -eu; d=/usr/local/$ver; mkdir -p \$d/lib; \\
    cp -a /mnt/cuda/lib/libcudart.so* /mnt/cuda/lib/libcublas.so* /mnt/cuda/lib/libcublasLt.so* \$d/lib/; \\
    if [ "\$KIND" = devel ]; then \\
        cp -a /mnt/cuda/bin /mnt/cuda/nvvm /mnt/cuda/include \$d/; \\
        cp -a /mnt/cuda/lib/libcudadevrt.a /mnt/cuda/lib/libcudart_static.a /mnt/cuda/lib/libculibos.a \$d/lib/; \\
    fi; \\
    [ -e \$d/lib64 ] || ln -s lib \$d/lib64; \\
    [ "$ver" = cuda ] || ln -s $ver /usr/local/cuda; \\
    echo /usr/local/cuda/lib64 >/etc/ld.so.conf.d/000-cuda-standin.conf; ldconfig
ENV PATH=/usr/local/cuda/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
EOF
        ok=1
        for kind in devel runtime; do
            t=$(ms)
            IMAGES+=("localhost/cuda-standin:$RUN_ID-$kind")
            if bounded "$BUILD_TIMEOUT" "${PODMAN[@]}" build --network none "${ULIMITS[@]}" --pull=never \
                --layers=false -v "$CUDA_DIR:/mnt/cuda:ro" --build-arg KIND=$kind \
                -f "$TMP/Containerfile.standin" -t "localhost/cuda-standin:$RUN_ID-$kind" "$TMP" \
                >"$LOGS/standin-$kind.log" 2>&1; then
                say "stand-in $kind image (Ubuntu 24.04 + $CUDA_DIR) built in $(secs "$t" "$(ms)") s"
            else
                tail -n 10 "$LOGS/standin-$kind.log" | sed 's/^/    /'
                fail "stand-in $kind image"
                ok=0
            fi
        done
        IMG=localhost/retnetd:$RUN_ID-cuda-standin
        LOG=$LOGS/image-cuda-standin.log
        if [ "$ok" = 1 ] && build "CUDA stand-in" "$IMG" "$LOG" \
            --build-arg "BUILD_IMAGE=localhost/cuda-standin:$RUN_ID-devel" \
            --build-arg "RUNTIME_IMAGE=localhost/cuda-standin:$RUN_ID-runtime"; then
            if grep -q '^nvcc: .*(CUDA backend compiled)' "$LOG" && grep -q 'NVCC *engine/cuda/' "$LOG"; then
                pass "CUDA stand-in: nvcc found in the build stage; $(grep -c 'NVCC *engine/cuda/' "$LOG") .cu files compiled, linked with cuBLAS"
            else
                fail "CUDA stand-in: the build stage did not compile the CUDA backend"
            fi
            out=$(oneoff --entrypoint sh "$IMG" \
                -c 'ldd /usr/local/bin/retnetd; retnet cuda-info; echo "cuda-info rc=$?"' 2>&1) || true
            if printf '%s\n' "$out" | grep -q 'libcublasLt.so.13 => /' &&
                ! printf '%s\n' "$out" | grep -q 'not found'; then
                pass "CUDA stand-in: retnetd links cuBLASLt/cuBLAS/cudart and resolves them; without a GPU: $(printf '%s\n' "$out" | grep -i 'cuda' | grep -v '=>' | tr '\n' ' ')"
            else
                printf '%s\n' "$out" | sed 's/^/    /'
                fail "CUDA stand-in: libraries in the runtime stage"
            fi
            static_checks "CUDA stand-in" "$IMG"
            size=$("${PODMAN[@]}" image inspect --format '{{.Size}}' "localhost/cuda-standin:$RUN_ID-runtime")
            say "CUDA stand-in: the runtime stand-in alone: $((size / 1000000)) MB"
            run_checks standin "$IMG"
            # --device cuda without a device: a clean refusal, not a crash.
            CONTAINERS+=("$RUN_ID-standin-cuda")
            rc=0
            timeout 60 "${PODMAN[@]}" run --name "$RUN_ID-standin-cuda" "${ULIMITS[@]}" --network none --no-healthcheck \
                "$IMG" --model /usr/share/retnetd/models --device cuda >"$TMP/cuda.out" 2>&1 || rc=$?
            if [ "$rc" = 1 ] && grep -q 'cuda backend unavailable' "$TMP/cuda.out"; then
                pass "CUDA stand-in: --device cuda without a GPU exits 1: $(grep -m1 'cuda backend unavailable' "$TMP/cuda.out")"
            else
                sed 's/^/    /' "$TMP/cuda.out" | tail -n 5
                fail "CUDA stand-in: --device cuda without a GPU (exit $rc)"
            fi
        fi
    fi
fi

echo "image-check: $PASSES passed, $FAILS failed in $(($(date +%s) - T0)) s (logs: ${LOGS#"$ROOT"/}/)"
if [ "$FAILS" -gt 0 ]; then
    echo "image-check: FAIL"
    exit 1
fi
echo "image-check: PASS"
