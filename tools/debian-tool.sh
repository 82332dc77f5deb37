#!/bin/sh
# Prints the path of a program a test needs: the system's, or else one
# unpacked from the Debian package that ships it into build/PROGRAM
# (apt-get download + dpkg -x: nothing is installed, no service starts).
# Exits 1 with a message when neither is possible (no network).
#
#   tools/debian-tool.sh PROGRAM PACKAGE PATH_IN_PACKAGE
#   tools/debian-tool.sh nginx nginx usr/sbin/nginx
#   tools/debian-tool.sh promtool prometheus usr/bin/promtool
set -eu
PROG=$1 PKG=$2 REL=$3
for p in "$(command -v "$PROG" 2>/dev/null || true)" "/usr/sbin/$PROG" "/sbin/$PROG"; do
    if [ -n "$p" ] && [ -x "$p" ]; then echo "$p"; exit 0; fi
done
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=$ROOT/build/$PROG
if [ ! -x "$DIR/root/$REL" ]; then
    mkdir -p "$DIR"
    rm -f "$DIR/${PKG}"_*.deb
    if ! (cd "$DIR" && apt-get download "$PKG" >"$DIR/download.log" 2>&1); then
        echo "debian-tool.sh: cannot download Debian's $PKG package (see $DIR/download.log)" >&2
        exit 1
    fi
    dpkg -x "$DIR/${PKG}"_*.deb "$DIR/root"
    rm -f "$DIR/${PKG}"_*.deb
    find "$DIR/root" -type f ! -path "$DIR/root/$REL" -delete # only the program is needed
fi
echo "$DIR/root/$REL"
