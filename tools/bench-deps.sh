#!/bin/sh
# Installs what `make bench-http` needs beyond tools/deps.sh: wrk, the HTTP
# load generator that measures GET /health.  Does nothing when it is present.
# Runs apt-get through sudo when not root.
set -eu

command -v wrk >/dev/null 2>&1 && exit 0

echo "bench-deps: installing wrk"
if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
else
    echo "bench-deps: need root (or sudo) to install wrk" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends wrk
