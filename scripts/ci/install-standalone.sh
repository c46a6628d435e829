#!/usr/bin/env bash
# Tools for the standalone (bundled-Python) layer and its tests: patchelf, qemu-user for arm64,
# a static busybox for the empty root, arm64 package indexes for apt-get download, and the
# compilers AWS's Node.js runtime client (npm aws-lambda-ric) builds with (idempotent).
set -euo pipefail
[ "$(uname -s)" = Linux ] && command -v apt-get >/dev/null 2>&1 || {
    echo "install-standalone: not a Debian-like machine; skipping (the standalone layer builds on Debian only)" >&2
    exit 0
}
SUDO=""
if [ "$(id -u)" != 0 ]; then
    if ! sudo -n true 2>/dev/null; then
        echo "install-standalone: not root and no sudo; skipping (standalone-layer tests will skip)" >&2
        exit 0
    fi
    SUDO="sudo"
fi
apt_opts=(-y -q -o DPkg::Lock::Timeout=900)
need=()
for pair in patchelf:patchelf qemu-aarch64-static:qemu-user-static busybox:busybox-static \
    autoconf:autoconf automake:automake libtoolize:libtool cmake:cmake g++:g++ make:make; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
# busybox must be the static one: it is the empty root's only /bin/sh.
if command -v busybox >/dev/null 2>&1 && ! dpkg -s busybox-static >/dev/null 2>&1; then
    need+=(busybox-static)
fi
updated=0
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    $SUDO dpkg --add-architecture arm64
    $SUDO apt-get update -q -o DPkg::Lock::Timeout=900
    updated=1
fi
if [ "${#need[@]}" -gt 0 ]; then
    [ "$updated" = 1 ] || $SUDO apt-get update -q -o DPkg::Lock::Timeout=900
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install "${apt_opts[@]}" --no-install-recommends "${need[@]}"
fi
