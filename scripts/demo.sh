#!/usr/bin/env bash
# Set up, then run the local demo: moto as AWS, the extension under the local Lambda emulator.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/cachelayer demo "$@"
