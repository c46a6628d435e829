#!/usr/bin/env bash
# Set up, then run the whole test suite: the core's and each contrib provider's.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The real parts the tests start, from Debian's packages (each script skips what is present):
# the standalone layer's tools, PostgreSQL and MariaDB for cachelayer-rds, redis-server for
# the shared tier. The demo needs none of them, so they are not in setup.sh.
for script in install-standalone install-databases install-redis; do
    bash "scripts/ci/$script.sh"
done
paths="tests"
for pkg in contrib/cachelayer-s3 contrib/cachelayer-appconfig contrib/cachelayer-rds; do
    [ -d "$pkg/tests" ] && paths="$paths $pkg/tests"
done
# Lint and types first: quick, and a failure there is as real as a failing test.
.venv/bin/ruff check src tests bench contrib
.venv/bin/ruff format --check --quiet src tests bench contrib
.venv/bin/mypy
# shellcheck disable=SC2086
exec .venv/bin/python -m pytest $paths "$@"
