"""Layer size and build time for x86_64 and arm64 with the built-in providers, before and after
pruning. Run: python bench/bench_layer.py [--runtime python3.12]. Needs the package index."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import List

from cachelayer.layer_builder.archive import human_size
from cachelayer.layer_builder.build import BuildRequest, BuildResult, LayerBuilder
from cachelayer.layer_builder.targets import Target


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runtime", default="python3.12")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for arch in ("x86_64", "arm64"):
            request = BuildRequest(
                target=Target.parse(args.runtime, arch), output=Path(tmp) / f"{arch}.zip"
            )
            result: BuildResult = LayerBuilder().build(request)
            rows.append((arch, result))
    header = (
        "arch",
        "zipped before",
        "zipped after",
        "unzipped before",
        "unzipped after",
        "build s",
        "sha256",
    )
    print(f"runtime {args.runtime}, providers: built-in (parameters, secrets, dynamodb)")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for arch, r in rows:
        cells = (
            arch,
            human_size(r.before.zipped),
            human_size(r.after.zipped),
            human_size(r.before.unzipped),
            human_size(r.after.unzipped),
            f"{r.seconds:.1f}",
            r.sha256[:12],
        )
        print("| " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
