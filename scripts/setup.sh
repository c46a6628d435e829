#!/usr/bin/env bash
# Create .venv and install cachelayer with its test tools and the contrib providers (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
bash scripts/ci/install-standalone.sh
.venv/bin/python -m pip install --quiet --upgrade pip
extras=""
for pkg in contrib/cachelayer-s3 contrib/cachelayer-appconfig; do
    [ -f "$pkg/pyproject.toml" ] && extras="$extras -e $pkg"
done
# shellcheck disable=SC2086  # $extras is a list of arguments on purpose
.venv/bin/python -m pip install --quiet -e '.[dev]' $extras
