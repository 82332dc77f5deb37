#!/bin/sh
# Installs the Debian/Ubuntu packages the build and the tests need, and nothing
# when they are all present.  Called by `make deps` (and so by `make check`).
# Runs apt-get through sudo when not root.  Safe to run repeatedly.
# Arguments name extra packages a target needs (e.g. valgrind).
set -eu

PACKAGES="build-essential pkg-config libopenblas-dev check libsubunit-dev \
libcjson-dev libmicrohttpd-dev libuv1-dev libpcre2-dev libinih-dev libsystemd-dev python3 \
python3-venv curl systemd $*"

missing=""
for p in $PACKAGES; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    case "$status" in
        *"install ok installed"*) ;;
        *) missing="$missing $p" ;;
    esac
done

if [ -z "$missing" ]; then
    exit 0
fi

echo "deps: installing missing packages:$missing"
if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
else
    echo "deps: need root (or sudo) to install:$missing" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
# shellcheck disable=SC2086
$SUDO apt-get install -y -q --no-install-recommends $missing
