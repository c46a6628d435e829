#!/usr/bin/env bash
# Install Debian's redis-server and redis-tools (for the shared-tier tests) unless present (idempotent).
set -euo pipefail
if command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-redis: no apt-get here; install redis-server and redis-cli yourself" >&2
    exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -o DPkg::Lock::Timeout=900 -qq
$SUDO apt-get install -y -qq -o DPkg::Lock::Timeout=900 --no-install-recommends redis-server redis-tools >/dev/null
# Debian's package starts a system-wide server on port 6379; the tests start their own.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now redis-server >/dev/null 2>&1 || true
fi
