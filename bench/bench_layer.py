"""Layer size and build time for x86_64 and arm64 with the built-in providers, before and after
pruning: the Python-runtime layer beside the standalone one (its own CPython and C library),
then both layers' time to ready and peak RSS under the emulator, the standalone one in an empty
root, as ratios in the same run. Run: python bench/bench_layer.py [--runtime python3.12]
[--rounds 3] [--no-startup]. Needs the package index, and Debian's tools for the standalone
layer (scripts/ci/install-standalone.sh); the startup part needs root."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from cachelayer.layer_builder.archive import human_size
from cachelayer.layer_builder.build import BuildRequest, BuildResult, LayerBuilder
from cachelayer.layer_builder.targets import Target

STANDALONE = "any"
HOST_PYTHON = "python{}.{}".format(*sys.version_info[:2])


def build(runtime: str, arch: str, out: Path) -> BuildResult:
    """One layer build, timed by the builder itself."""
    request = BuildRequest(target=Target.parse(runtime, arch), output=out)
    return LayerBuilder().build(request)


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def ready_and_rss(
    layer: Path, *, standalone: bool, rounds: int, work: Path, arch: str = "x86_64"
) -> Tuple[float, float, float]:
    """Median ms from spawn to ready (first /event/next, after prefetching the sample), median
    and max peak RSS (MB) of the extension under the emulator, against moto on loopback.

    A Python-runtime layer runs on this machine's interpreter (as on Lambda's python runtime);
    a standalone one in an empty root (busybox sh and the layer only); arm64 under qemu-user,
    whose figures say what emulation costs, not what Graviton does.
    """
    from cachelayer.local import LocalLambda
    from cachelayer.testing import empty_root
    from cachelayer.testing.moto import aws_environment, free_port, moto_server
    from cachelayer.testing.sample import SAMPLE_CONFIG_YAML, seed_sample

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    (work / "handler.py").write_text("def handler(event, context):\n    return 'ok'\n")
    readies: List[float] = []
    rsses: List[float] = []
    with moto_server() as endpoint:
        # moto's state is per process, not per server: start from nothing.
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"))
        seed_sample(endpoint)
        for i in range(rounds):
            env = aws_environment(endpoint)
            env.update(CACHE_EXTENSION_INIT_STARTUP="true", CACHE_EXTENSION_PORT=str(free_port()))
            if standalone:
                root = work / f"root{i}"
                empty_root.make_root(root, layer, SAMPLE_CONFIG_YAML)
                extensions = work / f"extensions{i}"
                argv = empty_root.extension_argv(root, arch)
                if argv[0] != "/opt/extensions/cachelayer":
                    env.update(empty_root.LAUNCHER_ENV)
                empty_root.write_wrapper(extensions, "cachelayer", empty_root.enter(root, argv))
            else:
                unpacked = work / f"layer{i}"
                empty_root.make_root(unpacked, layer)
                extensions = unpacked / "opt" / "extensions"
                (work / "config.yaml").write_text(SAMPLE_CONFIG_YAML)
                env.update(
                    CACHE_EXTENSION_PYTHON=sys.executable,
                    CACHE_EXTENSION_CONFIG=str(work / "config.yaml"),
                )
            pids: Dict[str, int] = {}

            def on_spawn(name: str, pid: int, pids: Dict[str, int] = pids) -> None:
                pids[name] = pid

            with LocalLambda(
                extensions_dir=extensions,
                handler="handler.handler",
                handler_dir=work,
                env=env,
                on_spawn=on_spawn,
                init_timeout_s=120.0,
            ) as fn:
                report = fn.init_reports[-1]
                if not report.ok:
                    raise SystemExit(f"init failed: {report.error_message}\n{fn.log('cachelayer')}")
                rsses.append(_peak_rss_mb(pids["cachelayer"]))
                steps: Dict[str, float] = {}
                for at, kind, who in fn.sandbox.timeline:
                    if who == "cachelayer" and kind not in steps:
                        steps[kind] = at
                readies.append((steps["next"] - steps["spawn"]) * 1000)
                assert fn.invoke({}).ok
    return statistics.median(readies), statistics.median(rsses), max(rsses)


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runtime", default="python3.12")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-startup", dest="startup", action="store_false")
    parser.add_argument(
        "--no-standalone", dest="standalone", action="store_false", help="Python layers only"
    )
    args = parser.parse_args(argv)
    runtimes = [args.runtime] + ([STANDALONE] if args.standalone else [])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for runtime in runtimes:
            for arch in ("x86_64", "arm64"):
                rows.append(
                    (runtime, arch, build(runtime, arch, Path(tmp) / f"{runtime}-{arch}.zip"))
                )
        header = (
            "runtime",
            "arch",
            "zipped before",
            "zipped after",
            "unzipped before",
            "unzipped after",
            "build s",
            "sha256",
        )
        print("providers: built-in (parameters, secrets, dynamodb)")
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for runtime, arch, r in rows:
            cells = (
                runtime,
                arch,
                human_size(r.before.zipped),
                human_size(r.after.zipped),
                human_size(r.before.unzipped),
                human_size(r.after.unzipped),
                f"{r.seconds:.1f}",
                r.sha256[:12],
            )
            print("| " + " | ".join(cells) + " |")
        for runtime, arch, r in rows:
            interp = r.metadata.get("interpreter")
            if interp:
                print(
                    f"{runtime} {arch}: CPython {interp['version']}, stdlib "
                    f"{human_size(interp['stdlib_bytes_before_pruning'])} -> "
                    f"{human_size(interp['stdlib_bytes_after_pruning'])}"
                )
        if args.startup and args.standalone:
            print()
            startup_table(
                Path(tmp), args.rounds, prebuilt={(r, a): res.output for r, a, res in rows}
            )
    return 0


def startup_table(
    work: Path, rounds: int, prebuilt: Optional[Dict[Tuple[str, str], Path]] = None
) -> Optional[Dict[str, Tuple[float, float, float]]]:
    """Print time to ready and peak RSS of the Python-runtime layer (for this machine's Python)
    and the standalone layer, x86_64, under the emulator; the ratios are standalone/Python."""
    from cachelayer.testing import empty_root

    reason = empty_root.unavailable_reason()
    if os.uname().machine != "x86_64":
        reason = "the startup comparison runs the x86_64 layers natively"
    if reason:
        print(f"startup: skipped ({reason})")
        return None
    prebuilt = dict(prebuilt or {})
    layers: Dict[str, Path] = {}
    for label, runtime in (("python", HOST_PYTHON), ("standalone", STANDALONE)):
        path = prebuilt.get((runtime, "x86_64"))
        if path is None:
            started = time.monotonic()
            path = build(runtime, "x86_64", work / f"startup-{runtime}.zip").output
            print(f"built {runtime} x86_64 in {time.monotonic() - started:.1f} s")
        layers[label] = path
    figures: Dict[str, Tuple[float, float, float]] = {}
    for label, path in layers.items():
        scratch = work / f"run-{label}"
        scratch.mkdir()
        figures[label] = ready_and_rss(
            path, standalone=label == "standalone", rounds=rounds, work=scratch
        )
        shutil.rmtree(scratch, ignore_errors=True)
    arm = prebuilt.get((STANDALONE, "arm64"))
    if arm is not None and shutil.which("qemu-aarch64-static"):
        scratch = work / "run-arm64"
        scratch.mkdir()
        figures["standalone arm64 (qemu)"] = ready_and_rss(
            arm, standalone=True, rounds=rounds, work=scratch, arch="arm64"
        )
        shutil.rmtree(scratch, ignore_errors=True)
    py, sa = figures["python"], figures["standalone"]
    print(
        f"layers under the emulator, x86_64, median of {rounds}; ready = registered and the "
        "sample prefetched from moto"
    )
    print(f"{'':18}{HOST_PYTHON + ' layer':>18}{'standalone':>14}{'ratio':>8}")
    print(f"{'ready (ms)':18}{py[0]:>18.1f}{sa[0]:>14.1f}{sa[0] / py[0]:>7.2f}x  (target <= 1.2x)")
    print(f"{'peak RSS (MB)':18}{py[1]:>18.1f}{sa[1]:>14.1f}{sa[1] / py[1]:>7.2f}x")
    emulated = figures.get("standalone arm64 (qemu)")
    if emulated:
        print(
            f"standalone arm64 under qemu-user (emulation, not Graviton): ready "
            f"{emulated[0]:.1f} ms, peak RSS {emulated[1]:.1f} MB (qemu's own memory included)"
        )
    return figures


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
