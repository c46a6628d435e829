#!/usr/bin/env bash
# Install Debian's PostgreSQL and MariaDB servers for cachelayer-rds's tests (idempotent).
# Only the binaries are needed: the tests create their own data directories on loopback, so the
# packages' default clusters are not started here.
set -euo pipefail
need=()
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need+=(postgresql postgresql-contrib)
command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ] || need+=(mariadb-server)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "install-databases: need root to install ${need[*]}; skipping (the cachelayer-rds tests will fail, saying so)" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
# policy-rc.d 101: packages must not start their default servers (no init system in CI).
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
# Another apt may hold the lists lock for a while (update has no lock timeout of its own).
for _ in $(seq 1 60); do
    apt-get update -qq -o DPkg::Lock::Timeout=900 && break
    sleep 10
done
apt-get install -y -qq -o DPkg::Lock::Timeout=900 --no-install-recommends "${need[@]}" >/dev/null
