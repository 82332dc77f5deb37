# shellcheck shell=bash
# minbase.sh -- sourced by fresh-check.sh and image-check.sh: the minimal
# Debian 12 or Ubuntu 24.04 root filesystem both start from, as a tarball.
# bash only (arrays).

# minbase_tarball DISTRO MIRROR TARBALL WORKDIR LOG [RUNNER ...]
#   debootstraps DISTRO (bookworm or noble, --variant=minbase) from MIRROR in
#   WORKDIR/rootfs-DISTRO, gives it the archives a stock install has (the
#   release, its updates, security; SECURITY_MIRROR overrides Debian's
#   security archive), drops apt's caches and writes TARBALL (atomically).
#   RUNNER, when given, runs debootstrap (e.g. a timeout wrapper).  On a
#   failed debootstrap the log's tail goes to stderr and it returns 1.
minbase_tarball() {
    local distro=$1 mirror=$2 tarball=$3 work=$4 log=$5 script deb
    shift 5
    local rootfs=$work/rootfs-$distro keyring=()
    case "$distro" in
        bookworm) script=bookworm ;;
        # debootstrap releases older than noble lack its script; all Ubuntu
        # releases since gutsy share one.
        noble) script=/usr/share/debootstrap/scripts/gutsy ;;
        *) echo "minbase: unsupported distro: $distro (bookworm or noble)" >&2; return 2 ;;
    esac
    if [ "$distro" = noble ] && [ ! -e /usr/share/keyrings/ubuntu-archive-keyring.gpg ]; then
        # Debian does not package Ubuntu's keyring: take it from the archive.
        # (It comes over the same channel as the packages it then checks.)
        deb=$(curl -fsS "$mirror/dists/noble/main/binary-amd64/Packages.gz" | gzip -dc |
            awk '/^Package: ubuntu-keyring$/ { p = 1 } p && /^Filename:/ { print $2; p = 0 }')
        curl -fsS -o "$work/keyring.deb" "$mirror/${deb:?no ubuntu-keyring in the noble index}"
        dpkg-deb -x "$work/keyring.deb" "$work/keyring"
        keyring=(--keyring "$work/keyring/usr/share/keyrings/ubuntu-archive-keyring.gpg")
    fi
    "$@" debootstrap --variant=minbase "${keyring[@]}" "$distro" "$rootfs" "$mirror" "$script" \
        >"$log" 2>&1 || {
        tail -n 30 "$log" >&2
        return 1
    }
    rm -f "$rootfs/etc/apt/sources.list"
    if [ "$distro" = bookworm ]; then
        cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<SOURCES
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${SECURITY_MIRROR:-http://deb.debian.org/debian-security}
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
    else
        cat >"$rootfs/etc/apt/sources.list.d/ubuntu.sources" <<SOURCES
Types: deb
URIs: $mirror
Suites: noble noble-updates noble-security
Components: main restricted universe multiverse
Signed-By: /usr/share/keyrings/ubuntu-archive-keyring.gpg
SOURCES
    fi
    rm -rf "$rootfs/var/cache/apt/archives/"*.deb "$rootfs/var/lib/apt/lists/"*_* 2>/dev/null || true
    mkdir -p "$(dirname "$tarball")"
    tar -C "$rootfs" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
    rm -rf "$rootfs"
}
