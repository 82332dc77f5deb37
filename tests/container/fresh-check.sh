#!/bin/bash
# fresh-check.sh -- run `make check` on a fresh machine from a clean clone.
#
# Proves that the committed HEAD builds and passes its tests on a bare Debian 12
# (or Ubuntu 24.04) system that has nothing but git and make, as a new user's
# machine or CI would:
#
#   1. makes (or reuses) a minimal base image with debootstrap, cached as a
#      tarball under build/container/ and imported into podman;
#   2. `git clone`s the repository's committed HEAD (not the working tree)
#      into a temporary directory;
#   3. copies that clone into a new container, installs only git and make
#      there (apt-get, with --network host), and runs `make check` as root,
#      which installs the remaining packages itself through `make deps`;
#   4. removes the container and the temporary clone, and exits with
#      make check's status.
#
# Usage (as root, on a Debian/Ubuntu host with podman, runc and debootstrap):
#
#   tests/container/fresh-check.sh                  # Debian 12 (bookworm)
#   tests/container/fresh-check.sh --distro noble   # Ubuntu 24.04
#   tests/container/fresh-check.sh --clean          # also drop the cached image
#   tests/container/fresh-check.sh --working-tree   # HEAD plus uncommitted changes
#                                                   # (tracked and untracked, not ignored)
#
# Environment: MIRROR overrides the archive debootstrap and apt-get use.
# Slow (a few minutes: debootstrap once, then the package installs), so it is
# not part of `make check`.
set -euo pipefail

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }

DISTRO=bookworm
CLEAN=0
WORKTREE=0
while [ $# -gt 0 ]; do
    case "$1" in
        --distro) DISTRO=${2:?--distro needs bookworm or noble}; shift 2 ;;
        --distro=*) DISTRO=${1#--distro=}; shift ;;
        --clean) CLEAN=1; shift ;;
        --working-tree) WORKTREE=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "fresh-check: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done

case "$DISTRO" in
    bookworm) MIRROR=${MIRROR:-http://deb.debian.org/debian} ;;
    noble) MIRROR=${MIRROR:-http://archive.ubuntu.com/ubuntu} ;;
    *) echo "fresh-check: unsupported distro: $DISTRO (bookworm or noble)" >&2; exit 2 ;;
esac

ROOT=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
# shellcheck source=tests/container/minbase.sh
. "$ROOT/tests/container/minbase.sh"
CACHE=$ROOT/build/container
TARBALL=$CACHE/$DISTRO-minbase.tar
IMAGE=localhost/retnetd-fresh:$DISTRO
# crun fails on this cgroup setup and podman refuses the default rlimits
# (podman on hosts without a Docker engine): set them explicitly, within what this
# host allows (nproc above 32768 is refused here).
PODMAN=(podman --runtime runc)
ULIMITS=(--ulimit nofile=4096:4096 --ulimit nproc=16384:16384)

for tool in podman runc debootstrap git curl; do
    command -v "$tool" >/dev/null 2>&1 || {
        echo "fresh-check: $tool not found (apt-get install podman runc debootstrap git curl)" >&2
        exit 1
    }
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/fresh-check.XXXXXX")
CONTAINER=fresh-check-$DISTRO-$$
# shellcheck disable=SC2317  # called from the trap
cleanup() {
    "${PODMAN[@]}" rm -f -i "$CONTAINER" >/dev/null 2>&1 || true
    rm -rf "$TMP"
    if [ "$CLEAN" = 1 ]; then
        "${PODMAN[@]}" rmi -f "$IMAGE" >/dev/null 2>&1 || true
        rm -f "$TARBALL"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# 1. Base image: the cached tarball, or a fresh debootstrap.
if [ ! -s "$TARBALL" ]; then
    echo "fresh-check: debootstrap $DISTRO from $MIRROR"
    minbase_tarball "$DISTRO" "$MIRROR" "$TARBALL" "$TMP" "$TMP/debootstrap.log" || {
        echo "fresh-check: debootstrap failed" >&2
        exit 1
    }
    "${PODMAN[@]}" rmi -f "$IMAGE" >/dev/null 2>&1 || true
fi
if ! "${PODMAN[@]}" image exists "$IMAGE"; then
    "${PODMAN[@]}" import -q "$TARBALL" "$IMAGE" >/dev/null
fi

# 2. A clean clone of the committed HEAD.
git clone -q --no-local "$ROOT" "$TMP/src"
if [ "$WORKTREE" = 1 ]; then
    # Snapshot the working tree through a scratch index (the real index and
    # the refs stay untouched) and commit the difference in the clone.
    cp "$(git -C "$ROOT" rev-parse --git-path index)" "$TMP/index" 2>/dev/null || true
    tree=$(cd "$ROOT" && GIT_INDEX_FILE=$TMP/index git add -A && GIT_INDEX_FILE=$TMP/index git write-tree)
    git -C "$ROOT" diff --binary HEAD "$tree" >"$TMP/worktree.patch"
    if [ -s "$TMP/worktree.patch" ]; then
        git -C "$TMP/src" apply --index "$TMP/worktree.patch"
        git -C "$TMP/src" -c user.name=fresh-check -c user.email=fresh-check@localhost \
            commit -q -m "fresh-check: uncommitted changes"
        git -C "$TMP/src" diff --stat HEAD~1 HEAD | sed 's/^/fresh-check: /'
    fi
fi
echo "fresh-check: $(git -C "$TMP/src" log -1 --format='%h %s' | cut -c1-72)"

# 3. A fresh container with only git and make; `make check` as root.
cat >"$TMP/src/.fresh-check-inner.sh" <<'EOF'
set -eu
export DEBIAN_FRONTEND=noninteractive
echo "fresh-check: $(. /etc/os-release && echo "$PRETTY_NAME"), $(nproc) CPUs"
apt-get update -q >/tmp/apt.log 2>&1 || { cat /tmp/apt.log; exit 1; }
apt-get install -y -q --no-install-recommends git make >>/tmp/apt.log 2>&1 ||
    { cat /tmp/apt.log; exit 1; }
rm /src/.fresh-check-inner.sh
cd /src
test -z "$(git status --porcelain)" || { echo "fresh-check: clone is not clean"; exit 1; }
start=$(date +%s)
status=0
make check || status=$?
echo "fresh-check: make check took $(( $(date +%s) - start )) s, exit status $status"
exit $status
EOF
# PyPI (for the SDK tests) is reached the way this host reaches it: if pip
# here trusts an extra CA bundle (PIP_CERT), the container gets a copy.
CERT_ARGS=()
HOST_CERT=${PIP_CERT:-$(pip config get global.cert 2>/dev/null || true)}
if [ -n "$HOST_CERT" ] && [ -f "$HOST_CERT" ]; then
    CERT_ARGS=(-e PIP_CERT=/etc/fresh-check-ca.crt)
fi
"${PODMAN[@]}" create -q --name "$CONTAINER" --network host "${ULIMITS[@]}" "${CERT_ARGS[@]}" \
    "$IMAGE" sh /src/.fresh-check-inner.sh >/dev/null
"${PODMAN[@]}" cp "$TMP/src" "$CONTAINER:/src"
if [ ${#CERT_ARGS[@]} -gt 0 ]; then
    "${PODMAN[@]}" cp "$HOST_CERT" "$CONTAINER:/etc/fresh-check-ca.crt"
fi
# In the background, so that a signal reaches the trap (and the cleanup that
# removes the running container) without waiting for make check to end.
"${PODMAN[@]}" start -a "$CONTAINER" &
status=0
wait $! || status=$?

if [ "$status" -eq 0 ]; then
    echo "fresh-check: PASS ($DISTRO)"
else
    echo "fresh-check: FAIL ($DISTRO, status $status)" >&2
fi
exit "$status"
