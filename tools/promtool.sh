#!/bin/sh
# Prints the path of promtool for the metrics test: the system's, or else one
# unpacked from Debian's prometheus package into build/promtool (apt-get
# download + dpkg -x: nothing is installed, no service starts).  Exits 1
# with a message when neither is possible (no network).
set -eu
if command -v promtool >/dev/null 2>&1; then
    command -v promtool
    exit 0
fi
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=$ROOT/build/promtool
if [ ! -x "$DIR/root/usr/bin/promtool" ]; then
    mkdir -p "$DIR"
    rm -f "$DIR"/prometheus_*.deb
    if ! (cd "$DIR" && apt-get download prometheus >"$DIR/download.log" 2>&1); then
        echo "promtool.sh: cannot download Debian's prometheus package (see $DIR/download.log)" >&2
        exit 1
    fi
    dpkg -x "$DIR"/prometheus_*.deb "$DIR/root"
    rm -f "$DIR"/prometheus_*.deb "$DIR/root/usr/bin/prometheus" # only promtool is needed
fi
echo "$DIR/root/usr/bin/promtool"
