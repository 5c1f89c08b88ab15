#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian 12 machine, run as root by `make demo`
# and `make test`: Debian packages, kernel headers (matching or fallback),
# tracefs/debugfs, and a venv at .venv/ that sees Debian's bcc.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { echo "bootstrap: $*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
    echo "bootstrap: must run as root (eBPF needs it)" >&2
    exit 1
fi

# --- Debian packages ---------------------------------------------------------
PKGS=(python3-bpfcc bpfcc-tools bpftool python3-venv python3-pip linux-perf gcc libc6-dev binutils openssl
      prometheus qemu-system-x86
      zlib1g liblzma5 libzstd1 libbz2-1.0 liblz4-1 xz-utils zstd bzip2 lz4 gzip)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
apt_updated=0
apt_install() {
    if [ "$apt_updated" -eq 0 ]; then apt-get update -qq; apt_updated=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    apt_install "${missing[@]}"
fi

# --- kernel headers ----------------------------------------------------------
# bcc compiles probes against /lib/modules/$(uname -r)/build. Prefer what is
# there, then the matching Debian package, then the closest Debian headers
# (linked in, and recorded so `fntax doctor` reports "headers: fallback").
KREL="$(uname -r)"
MODDIR="/lib/modules/$KREL"
STATE_DIR=/var/lib/fntax
mkdir -p "$STATE_DIR"
if [ -e "$MODDIR/build/include/linux/kconfig.h" ] || [ -e "$MODDIR/source/include/linux/kconfig.h" ]; then
    :
elif apt-cache show "linux-headers-$KREL" >/dev/null 2>&1 || { apt-get update -qq && apt_updated=1 && apt-cache show "linux-headers-$KREL" >/dev/null 2>&1; }; then
    say "installing linux-headers-$KREL"
    apt_install "linux-headers-$KREL"
    rm -f "$STATE_DIR/headers-fallback"
else
    if ! ls -d /usr/src/linux-headers-*-cloud-amd64 >/dev/null 2>&1 && ! ls -d /usr/src/linux-headers-*-amd64 >/dev/null 2>&1; then
        say "no headers for $KREL in Debian: installing the closest (linux-headers-cloud-amd64)"
        apt_install linux-headers-cloud-amd64
    fi
    arch_dir="$(ls -d /usr/src/linux-headers-*-cloud-amd64 2>/dev/null | sort -V | tail -1)"
    [ -n "$arch_dir" ] || arch_dir="$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -1)"
    common_dir="${arch_dir%-*-amd64}-common"
    case "$arch_dir" in *-cloud-amd64) common_dir="${arch_dir%-cloud-amd64}-common" ;; esac
    if [ -z "$arch_dir" ] || [ ! -d "$common_dir" ]; then
        echo "bootstrap: no usable kernel headers found under /usr/src" >&2
        exit 1
    fi
    mkdir -p "$MODDIR"
    ln -sfn "$arch_dir" "$MODDIR/build"
    ln -sfn "$common_dir" "$MODDIR/source"
    echo "$arch_dir" > "$STATE_DIR/headers-fallback"
    say "headers: fallback ($(basename "$arch_dir") for kernel $KREL)"
fi

# --- tracefs / debugfs ---------------------------------------------------------
mountpoint -q /sys/kernel/debug || mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null || say "could not mount debugfs"
mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || say "could not mount tracefs"

# --- virtualenv ---------------------------------------------------------------
# bcc lives in Debian's dist-packages, so the venv is built from Debian's own
# python3 with system site packages (a pyenv python would not see it).
PY=/usr/bin/python3
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import bcc' 2>/dev/null; then
    rm -rf .venv
    "$PY" -m venv --system-site-packages .venv
fi
stamp=.venv/.fntax-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    say "installing fntax into .venv"
    # (pip's notes about unused local index locations are noise here)
    .venv/bin/pip install -q --disable-pip-version-check -e '.[test]' 2> >(grep -v '^WARNING: Location' >&2)
    touch "$stamp"
fi
