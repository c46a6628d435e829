"""Startup cost of the cachelayer extension beside a minimal stdlib extension, under the emulator.

For each: time from process start to registered, to port bound (cachelayer only), to ready
(first /event/next, after prefetching the sample's 3 items plus 100 SSM parameters from moto),
then CPU seconds and peak RSS of the extension process at ready. Prints medians and ratios.

    .venv/bin/python bench/bench_startup.py [--rounds 3] [--parameters 100]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

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

CACHELAYER_LAUNCHER = (
    '#!/bin/sh\nexec "{python}" -m cachelayer.extension --name "$(basename "$0")"\n'
)
HANDLER = "def handler(event, context):\n    return 'ok'\n"
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
    work: Path, name: str, script: str, env: Dict[str, str], port: Optional[int]
) -> Dict[str, float]:
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
        assert fn.invoke({}).ok
    out = {
        "registered_ms": (steps["register"] - steps["spawn"]) * 1000,
        "ready_ms": (steps["next"] - steps["spawn"]) * 1000,
        "cpu_s": cpu,
        "peak_rss_mb": rss,
    }
    if watcher and watcher.bound_at:
        out["port_bound_ms"] = (watcher.bound_at - steps["spawn"]) * 1000
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
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
    work = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    try:
        (work / "handler.py").write_text(HANDLER)
        names = [f"/bench/param{i:03d}" for i in range(args.parameters)]
        # A second group in the sample's parameters section (a list), before its dynamodb section.
        config = SAMPLE_CONFIG_YAML.replace(
            "dynamodb:\n",
            "  - region: us-west-2\n    names:\n"
            + "".join(f"      - {n}\n" for n in names)
            + "dynamodb:\n",
        )
        (work / "config.yaml").write_text(config)
        with moto_server() as endpoint:
            env = aws_environment(endpoint)
            with patched_environ(env):
                import boto3

                seed_sample(endpoint)
                ssm = boto3.client("ssm", endpoint_url=endpoint, region_name="us-west-2")
                for n in names:
                    ssm.put_parameter(Name=n, Value=f"value of {n}", Type="String")
            port = free_port()
            env.update(
                CACHE_EXTENSION_CONFIG=str(work / "config.yaml"),
                CACHE_EXTENSION_INIT_STARTUP="true",
                CACHE_EXTENSION_PORT=str(port),
            )
            results: Dict[str, List[Dict[str, float]]] = {"cachelayer": [], "minimal": []}
            for _ in range(args.rounds):
                results["minimal"].append(
                    measure(
                        work, "minimal", MINIMAL_EXTENSION.format(python=sys.executable), env, None
                    )
                )
                results["cachelayer"].append(
                    measure(
                        work,
                        "cachelayer",
                        CACHELAYER_LAUNCHER.format(python=sys.executable),
                        env,
                        port,
                    )
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def median(name: str, key: str) -> Optional[float]:
        values = [r[key] for r in results[name] if key in r]
        return statistics.median(values) if values else None

    print(
        f"startup, median of {args.rounds} rounds; "
        f"ready = after prefetching {3 + args.parameters} items"
    )
    print(f"{'':16}{'cachelayer':>12}{'minimal':>12}{'ratio':>8}")
    for key, unit in (
        ("registered_ms", "ms"),
        ("port_bound_ms", "ms"),
        ("ready_ms", "ms"),
        ("cpu_s", "s"),
        ("peak_rss_mb", "MB"),
    ):
        ours, base = median("cachelayer", key), median("minimal", key)
        ours_s = f"{ours:.3f}" if ours is not None else "-"
        base_s = f"{base:.3f}" if base is not None else "-"
        ratio = f"{ours / base:.1f}x" if ours is not None and base else "-"
        print(f"{key + ' (' + unit + ')':16}{ours_s:>12}{base_s:>12}{ratio:>8}")
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
