#!/usr/bin/env bash
# Create .venv and install cachelayer with its test tools and the contrib providers (idempotent:
# the install is skipped while the pyproject files are those of the last successful install).
set -euo pipefail
cd "$(dirname "$0")/.."
step() { echo "setup: $*"; }
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    step "creating .venv with $PYTHON"
    "$PYTHON" -m venv .venv
fi
extras=""
for pkg in contrib/cachelayer-s3 contrib/cachelayer-appconfig contrib/cachelayer-rds; do
    [ -f "$pkg/pyproject.toml" ] && extras="$extras -e $pkg"
done
# What the install depends on: the interpreter, the packages installed and their pyproject files.
stamp_file=.venv/.cachelayer-setup-stamp
stamp=$({
    .venv/bin/python -c 'import sys; print(sys.version)'
    echo "$extras"
    for pkg in . $extras; do [ "$pkg" = -e ] || cat "$pkg/pyproject.toml"; done
} | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp_file" 2>/dev/null)" = "$stamp" ]; then
    step "packages unchanged since the last install (pyproject files hash $stamp): skipping pip"
else
    rm -f "$stamp_file"
    step "upgrading pip in .venv"
    .venv/bin/python -m pip install --quiet --upgrade pip
    step "installing cachelayer[dev] and the contrib providers into .venv (a few minutes the first time)"
    # shellcheck disable=SC2086  # $extras is a list of arguments on purpose
    .venv/bin/python -m pip install --quiet -e '.[dev]' $extras
    echo "$stamp" >"$stamp_file"
fi
