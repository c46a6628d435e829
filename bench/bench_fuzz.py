"""Longer fuzz runs than CI's: the socket fuzzer and the config fuzzer of tests/test_fuzz.py with
more batches and examples, against the same real ``cachelayer serve`` process.

    .venv/bin/python bench/bench_fuzz.py [--batches 400] [--examples 5000]

CI runs 45 batches (about 60,000 requests) and 400 config examples. This runs the same tests
with the counts given, so every check holds at the larger scale too: the process never dies,
never logs a traceback, answers a good request after every batch, and its RSS grows by less
than 40 MiB. It prints the fuzzer's own summary line (requests, answers, seconds, RSS) and
pytest's verdict.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=400, help="socket fuzzer batches")
    parser.add_argument("--examples", type=int, default=5000, help="config fuzzer examples")
    args = parser.parse_args()
    env = dict(
        os.environ,
        CACHELAYER_FUZZ_BATCHES=str(args.batches),
        CACHELAYER_FUZZ_EXAMPLES=str(args.examples),
    )
    command = [
        sys.executable,
        "-m",
        "pytest",
        str(ROOT / "tests" / "test_fuzz.py"),
        "-q",
        "-s",
        "-p",
        "no:cacheprovider",
        "-o",
        "timeout=3600",
    ]
    print(f"fuzzing: {args.batches} socket batches, {args.examples} config examples", flush=True)
    return subprocess.call(command, cwd=ROOT, env=env)


if __name__ == "__main__":
    sys.exit(main())
