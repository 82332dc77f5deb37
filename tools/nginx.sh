#!/bin/sh
# Prints the path of an nginx binary for the multi-replica test: the
# system's, or else one unpacked from Debian's nginx package into
# build/nginx (apt-get download + dpkg -x: nothing is installed, no service
# starts).  Exits 1 with a message when neither is possible (no network).
set -eu
if command -v nginx >/dev/null 2>&1; then
    command -v nginx
    exit 0
fi
for d in /usr/sbin /sbin; do
    if [ -x "$d/nginx" ]; then echo "$d/nginx"; exit 0; fi
done
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=$ROOT/build/nginx
if [ ! -x "$DIR/root/usr/sbin/nginx" ]; then
    mkdir -p "$DIR"
    rm -f "$DIR"/nginx_*.deb
    if ! (cd "$DIR" && apt-get download nginx >"$DIR/download.log" 2>&1); then
        echo "nginx.sh: cannot download Debian's nginx package (see $DIR/download.log)" >&2
        exit 1
    fi
    dpkg -x "$DIR"/nginx_*.deb "$DIR/root"
fi
echo "$DIR/root/usr/sbin/nginx"
