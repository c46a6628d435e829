"""Startup cost of the cachelayer extension beside a minimal stdlib extension, under the emulator.

Scenarios, each timed from process start: the sample's 3 items prefetched, and the same plus
100 more SSM parameters. For each: registered, ready (first /event/next), CPU seconds and peak
RSS at ready; and, in rounds of their own, when the port was bound (cachelayer only: the poller
that finds out connects every half millisecond, which costs the process it watches some 20 ms,
so it is kept out of the rounds that time the rest). Then, in the 3-item run, the first miss after
ready (an undeclared parameter) against a warm miss (another undeclared one, later). Prints
medians, ratios to the minimal extension of the same run (the targets take the median of each
round's own ratio: the two sides of a round are timed seconds apart), and PASS/FAIL per target:

- 3 items: ready <= 3x the minimal extension's, peak RSS <= 2x;
- 103 items: ready <= 4x;
- first miss after ready <= 2x a warm miss.

The extension is given the built-in providers only (``CACHE_EXTENSION_PLUGINS``), as in a
layer built without ``--with``; the development venv also holds the contrib providers.

    .venv/bin/python bench/bench_startup.py [--rounds 5] [--parameters 100]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from cachelayer.local import LocalLambda
from cachelayer.testing.moto import aws_environment, free_port, moto_server, patched_environ
from cachelayer.testing.sample import SAMPLE_CONFIG_YAML, seed_sample

MINIMAL_EXTENSION = """#!{python}
import http.client, json, os, sys
api = os.environ["AWS_LAMBDA_RUNTIME_API"]
def call(method, path, body=None, headers=None):
    conn = http.client.HTTPConnection(api)
    conn.request(method, "/2020-01-01/extension/" + path, body=body, headers=headers or {{}})
    resp = conn.getresponse()
    return resp, resp.read()
resp, _ = call("POST", "register", json.dumps({{"events": ["INVOKE", "SHUTDOWN"]}}),
               {{"Lambda-Extension-Name": os.path.basename(sys.argv[0])}})
ident = resp.getheader("Lambda-Extension-Identifier")
while True:
    _, body = call("GET", "event/next", headers={{"Lambda-Extension-Identifier": ident}})
    if json.loads(body)["eventType"] == "SHUTDOWN":
        sys.exit(0)
"""

# As the layer's launcher runs the extension (cachelayer.launch: the startup caches first),
# with this environment's packages.
CACHELAYER_LAUNCHER = (
    '#!/bin/sh\nexec "{python}" -c "from cachelayer.launch import run; run()" '
    '--name "$(basename "$0")"\n'
)
# The handler builds its HTTP opener at import (the function's init), as a function keeps its
# clients at module scope: the first miss then times the extension, not urllib's first use.
HANDLER = """
import os, time, urllib.request
urllib.request.install_opener(urllib.request.build_opener())
def handler(event, context):
    took = []
    for path in event.get("paths", []):
        request = urllib.request.Request(
            "http://127.0.0.1:" + os.environ["CACHE_EXTENSION_PORT"] + path,
            headers={"X-Aws-Parameters-Secrets-Token": os.environ.get("AWS_SESSION_TOKEN", "")},
        )
        started = time.perf_counter()
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
        took.append((time.perf_counter() - started) * 1000)
    return took
"""
MISSES = [f"/parameters?name=/bench/undeclared{i}" for i in range(6)]
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


class PortWatcher:
    """Polls a TCP port from the moment the process starts; notes when it first accepts."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.bound_at: Optional[float] = None
        self._stop = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.05):
                    self.bound_at = time.monotonic()
                    return
            except OSError:
                time.sleep(0.0005)

    def stop(self) -> None:
        self._stop.set()


def measure(
    work: Path,
    name: str,
    script: str,
    env: Dict[str, str],
    port: Optional[int],
    misses: bool = False,
) -> Dict[str, float]:
    """One cold start of the extension ``name`` under the emulator; ``port``: watch for it to
    be bound (that round's other figures are disturbed by the watching)."""
    ext_dir = work / f"extensions-{name}"
    shutil.rmtree(ext_dir, ignore_errors=True)
    ext_dir.mkdir()
    (ext_dir / name).write_text(script)
    (ext_dir / name).chmod(0o755)
    watcher = PortWatcher(port) if port else None
    pids: Dict[str, int] = {}

    def on_spawn(proc_name: str, pid: int) -> None:
        pids[proc_name] = pid
        if watcher and proc_name == name:
            watcher.start()

    with LocalLambda(
        extensions_dir=ext_dir,
        handler="handler.handler",
        handler_dir=work,
        env=env,
        on_spawn=on_spawn,
    ) as fn:
        report = fn.init_reports[-1]
        if not report.ok:
            raise SystemExit(
                f"{name}: init failed: {report.error_type}: {report.error_message}\n{fn.log(name)}"
            )
        # Frozen after init: the figures are those at ready.
        cpu, rss = cpu_seconds(pids[name]), peak_rss_mb(pids[name])
        steps = {}
        for at, kind, who in fn.sandbox.timeline:
            if who == name and kind not in steps:
                steps[kind] = at
        if watcher:
            watcher.stop()
        result = fn.invoke({"paths": MISSES if misses else []})
        assert result.ok, result.error
    out = {
        "registered_ms": (steps["register"] - steps["spawn"]) * 1000,
        "ready_ms": (steps["next"] - steps["spawn"]) * 1000,
        "cpu_s": cpu,
        "peak_rss_mb": rss,
    }
    if watcher and watcher.bound_at:
        out["port_bound_ms"] = (watcher.bound_at - steps["spawn"]) * 1000
    if misses:
        took = result.response
        out["first_miss_ms"] = took[0]
        out["warm_miss_ms"] = statistics.median(took[1:])
    return out


def warm_startup_caches() -> str:
    """Fill the startup caches (the bundle of the startup modules' code, checked against their
    sources; regex programs; attrs' methods) in this tree's ``src/cachelayer/__pycache__``, as
    the layer builder fills a layer's (cachelayer.startup_cache.warm), so the extension runs as
    it would from a layer."""
    done = subprocess.run(
        [
            sys.executable,
            "-B",
            "-c",
            "from cachelayer import startup_cache; print(startup_cache.warm().summary())",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--parameters", type=int, default=100)
    parser.add_argument(
        "--no-layers",
        dest="layers",
        action="store_false",
        help="skip building the Python-runtime and standalone layers and timing them",
    )
    args = parser.parse_args()
    # moto's request log would bury the table.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    print(f"startup caches warmed ({warm_startup_caches()})")
    work = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    results: Dict[str, List[Dict[str, float]]] = {
        "minimal": [],
        "sample": [],
        "more": [],
        "sample-port": [],
        "more-port": [],
    }
    try:
        (work / "handler.py").write_text(HANDLER)
        names = [f"/bench/param{i:03d}" for i in range(args.parameters)]
        (work / "sample.yaml").write_text(SAMPLE_CONFIG_YAML)
        # A second group in the sample's parameters section (a list), before its dynamodb section.
        (work / "more.yaml").write_text(
            SAMPLE_CONFIG_YAML.replace(
                "dynamodb:\n",
                "  - region: us-west-2\n    names:\n"
                + "".join(f"      - {n}\n" for n in names)
                + "dynamodb:\n",
            )
        )
        with moto_server() as endpoint:
            env = aws_environment(endpoint)
            with patched_environ(env):
                import boto3

                seed_sample(endpoint)
                ssm = boto3.client("ssm", endpoint_url=endpoint, region_name="us-west-2")
                for n in names + [m.split("=", 1)[1] for m in MISSES]:
                    ssm.put_parameter(Name=n, Value=f"value of {n}", Type="String")
            port = free_port()
            env.update(
                CACHE_EXTENSION_INIT_STARTUP="true",
                CACHE_EXTENSION_PORT=str(port),
                CACHE_EXTENSION_PLUGINS="parameters,secrets,dynamodb",
            )
            launcher = CACHELAYER_LAUNCHER.format(python=sys.executable)
            for _ in range(args.rounds):
                results["minimal"].append(
                    measure(
                        work, "minimal", MINIMAL_EXTENSION.format(python=sys.executable), env, None
                    )
                )
                for scenario in ("sample", "more"):
                    scenario_env = dict(env, CACHE_EXTENSION_CONFIG=str(work / f"{scenario}.yaml"))
                    results[scenario].append(
                        measure(
                            work,
                            "cachelayer",
                            launcher,
                            scenario_env,
                            None,
                            misses=scenario == "sample",
                        )
                    )
            for _ in range(args.rounds):  # the port's rounds: only port_bound_ms is kept
                for scenario in ("sample", "more"):
                    scenario_env = dict(env, CACHE_EXTENSION_CONFIG=str(work / f"{scenario}.yaml"))
                    watched = measure(work, "cachelayer", launcher, scenario_env, port)
                    if "port_bound_ms" in watched:
                        results[f"{scenario}-port"].append(
                            {"port_bound_ms": watched["port_bound_ms"]}
                        )
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def median(name: str, key: str) -> Optional[float]:
        values = [r[key] for r in results[name] if key in r]
        return statistics.median(values) if values else None

    print(
        f"startup, median of {args.rounds} rounds (built-in providers only; port_bound_ms from "
        "rounds of its own)"
    )
    print(
        f"{'':20}{'3 items':>12}{'ratio':>8}{f'{3 + args.parameters} items':>12}{'ratio':>8}"
        f"{'minimal':>12}"
    )
    for key, unit in (
        ("registered_ms", "ms"),
        ("port_bound_ms", "ms"),
        ("ready_ms", "ms"),
        ("cpu_s", "s"),
        ("peak_rss_mb", "MB"),
    ):
        base = median("minimal", key)
        row = f"{key + ' (' + unit + ')':20}"
        for scenario in ("sample", "more"):
            ours = median(f"{scenario}-port" if key == "port_bound_ms" else scenario, key)
            row += f"{ours:>12.3f}" if ours is not None else f"{'-':>12}"
            row += f"{ours / base:>7.1f}x" if ours is not None and base else f"{'-':>8}"
        row += f"{base:>12.3f}" if base is not None else f"{'-':>12}"
        print(row)
    first, warm = median("sample", "first_miss_ms"), median("sample", "warm_miss_ms")
    print(f"first miss after ready {first:.2f} ms, warm miss {warm:.2f} ms")

    def ratio(name: str, key: str) -> float:
        """The median of the rounds' own ratios: each round times the minimal extension and
        then ours within a second or two, so a machine whose speed drifts over the run (a VM
        with steal time) moves both sides of a round's ratio together."""
        paired = [r[key] / m[key] for r, m in zip(results[name], results["minimal"]) if m[key]]
        return statistics.median(paired) if paired else 0.0

    print(
        "ratios of the medians: "
        + ", ".join(
            f"{label} {(median(n, k) or 0.0) / (median('minimal', k) or 1.0):.2f}x"
            for label, n, k in (
                ("3 items ready", "sample", "ready_ms"),
                ("RSS", "sample", "peak_rss_mb"),
                (f"{3 + args.parameters} items ready", "more", "ready_ms"),
            )
        )
        + "; the targets below take the median of each round's own ratio"
    )

    targets: List[Tuple[str, float, float]] = [
        ("3 items: ready vs minimal", ratio("sample", "ready_ms"), 3.0),
        ("3 items: peak RSS vs minimal", ratio("sample", "peak_rss_mb"), 2.0),
        (f"{3 + args.parameters} items: ready vs minimal", ratio("more", "ready_ms"), 4.0),
        ("first miss vs warm miss", (first or 0.0) / (warm or 1.0), 2.0),
    ]
    print("targets:")
    for label, value, limit in targets:
        verdict = "PASS" if value <= limit else "FAIL"
        print(f"  {verdict}  {label}: {value:.2f}x (target <= {limit:g}x)")
    print(
        f"CPU at ready: cachelayer {median('sample', 'cpu_s'):.3f} s (3 items), "
        f"{median('more', 'cpu_s'):.3f} s ({3 + args.parameters} items); "
        f"minimal {median('minimal', 'cpu_s'):.3f} s"
    )
    if args.layers:
        standalone_section(args.rounds)


def standalone_section(rounds: int) -> None:
    """The built layers themselves: the Python-runtime one beside the standalone one (its own
    CPython and C library, run in an empty root); see bench_layer.startup_table."""
    import bench_layer  # beside this file; bench/ is on sys.path when run as a script

    print()
    with tempfile.TemporaryDirectory(prefix="bench-layers-") as tmp:
        bench_layer.startup_table(Path(tmp), rounds)


if __name__ == "__main__":
    main()
