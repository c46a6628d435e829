"""Abuse: upstream load during an outage, memory for long distinct names, the token holder's wait.

Each part runs the real ``cachelayer serve`` in a child process against moto on 127.0.0.1
(through the counting, fault-injecting proxy) and prints its figure next to a baseline measured
in the same run:

1. **Outage.** ``--clients`` clients per key read ``--keys`` uncached keys as fast as they can
   for ``--outage`` seconds while upstream answers 500, throttles, or is down (a listener that
   closes every connection at once). Printed: client reads/s (the baseline: what upstream would
   get without the backoff), upstream wire requests/s per key in the first 3 s and after, and
   the API calls. Target: at most 1 upstream call per key per second after the first seconds.
2. **Memory.** ``--names`` distinct names of 8,100 characters, none of which upstream has, with
   ``cache: max_bytes`` set to ``--max-bytes``. Printed: RSS growth of the server, against the
   baseline of the same number of reads of one such name (the process's own cost of serving,
   which no bound on the cache can remove). Target: growth at most ``max_bytes`` plus the fixed
   overhead stated below (FIXED_OVERHEAD_MIB).
3. **Slots.** ``--silent`` connections that never authenticate are held open (the server allows
   256), then a client with the token makes ``--probes`` requests on fresh connections.
   Printed: its wait (p50, p99, max) against the baseline of the same requests with nothing
   held. Target: served in under 100 ms.

Run: ``.venv/bin/python bench/bench_abuse.py`` (about a minute and a half).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

from cachelayer.testing.moto import aws_environment, free_port, moto_server
from cachelayer.testing.processes import stop_process
from cachelayer.testing.proxy import Fault, UpstreamProxy

TOKEN_HEADER = "X-Aws-Parameters-Secrets-Token"
# What the server process may grow by whatever the cache holds: allocator arenas and
# fragmentation, botocore's parsed responses and connection buffers, the 16 fetch threads'
# stacks touched, the per-URL memos' bound (a quarter of max_bytes, counted inside max_bytes).
FIXED_OVERHEAD_MIB = 24


@contextlib.contextmanager
def serving(endpoint: str, config: str, log: Path) -> Iterator[Tuple[subprocess.Popen, int, str]]:
    """``cachelayer serve`` against ``endpoint`` with ``config``; yields (process, port, token)."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(config)
        env = {
            **os.environ,
            **aws_environment(endpoint),
            "CACHE_EXTENSION_CONFIG": str(path),
            "CACHE_EXTENSION_PORT": str(port),
            "CACHE_EXTENSION_LOG_LEVEL": "ERROR",
        }
        with open(log, "a") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "cachelayer", "serve"], env=env, stdout=out, stderr=out
            )
        try:
            deadline = time.monotonic() + 30
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"cachelayer serve exited: {log.read_text()[-2000:]}")
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError("cachelayer serve did not start") from None
                    time.sleep(0.05)
            yield proc, port, env["AWS_SESSION_TOKEN"]
        finally:
            stop_process(proc, timeout=10)


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def get(port: int, token: str, path: str, conn: Optional[http.client.HTTPConnection] = None) -> int:
    own = conn is None
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        c.request("GET", path, headers={TOKEN_HEADER: token})
        response = c.getresponse()
        response.read()
        return response.status
    finally:
        if own:
            c.close()


def stats(port: int, token: str) -> Dict[str, Dict[str, int]]:
    import json

    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("GET", "/-/stats", headers={TOKEN_HEADER: token})
    body = c.getresponse().read()
    c.close()
    result: Dict[str, Dict[str, int]] = json.loads(body)
    return result


# -- 1. outage ---------------------------------------------------------------------------------


class ClosingListener:
    """An "upstream that is down": accepts and closes every connection, counting them."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(512)
        self.accepted = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self.accepted += 1
            conn.close()

    def count(self) -> int:
        with self._lock:
            return self.accepted

    def close(self) -> None:
        self.sock.close()


def outage(
    endpoint: str,
    proxy: UpstreamProxy,
    kind: str,
    keys: int,
    clients: int,
    seconds: float,
    log: Path,
) -> Dict[str, float]:
    down: Optional[ClosingListener] = None
    if kind == "down":
        down = ClosingListener()
        target = down.url
    else:
        proxy.clear()
        proxy.reset_counts()
        proxy.inject(Fault.server_error() if kind == "500" else Fault.throttle())
        target = proxy.url

    def upstream() -> int:
        return down.count() if down is not None else proxy.count(service="ssm")

    reads = [0]
    lock = threading.Lock()
    with serving(target, "", log) as (_, port, token):
        start = time.monotonic()
        stop = start + seconds
        early: List[int] = []

        def client(key: int) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            n = 0
            while time.monotonic() < stop:
                try:
                    get(port, token, f"/parameters?name=outage-{kind}-{key}", conn)
                except (OSError, http.client.HTTPException):
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                n += 1
            conn.close()
            with lock:
                reads[0] += n

        threads = [
            threading.Thread(target=client, args=(k,)) for k in range(keys) for _ in range(clients)
        ]
        for t in threads:
            t.start()
        time.sleep(3.0)
        early.append(upstream())
        for t in threads:
            t.join()
        total = upstream()
        api = stats(port, token)["parameters"]["upstream_calls"]
    if down is not None:
        down.close()
    proxy.clear()
    late_seconds = seconds - 3.0
    return {
        "reads_per_s": reads[0] / seconds,
        "early_per_key_s": early[0] / keys / 3.0,
        "late_per_key_s": (total - early[0]) / keys / late_seconds,
        "wire": float(total),
        "api": float(api),
    }


# -- 2. memory ---------------------------------------------------------------------------------


def memory(endpoint: str, names: int, max_bytes: int, log: Path) -> Tuple[int, int]:
    """(RSS growth with ``names`` distinct long names, RSS growth with one name read as often)."""
    results = []
    for spread in (False, True):
        with serving(endpoint, f"cache: {{max_bytes: {max_bytes}}}\n", log) as (proc, port, token):
            # Warm up: imports, the botocore client, the first memos and entries.
            for i in range(200):
                get(port, token, f"/parameters?name=warm{i:04d}" + "w" * 8092)
            time.sleep(2.5)
            before = rss_kib(proc.pid)
            lock = threading.Lock()
            todo = iter(range(names))

            def worker(
                lock: threading.Lock = lock, todo: Iterator[int] = todo, spread: bool = spread
            ) -> None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                while True:
                    with lock:
                        i = next(todo, None)
                    if i is None:
                        break
                    name = f"{i:05d}" if spread else "00000"
                    get(port, token, f"/parameters?name={name}" + "n" * 8095, conn)
                conn.close()

            threads = [threading.Thread(target=worker) for _ in range(16)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            time.sleep(2.5)  # the server hands freed memory back once a second
            results.append(rss_kib(proc.pid) - before)
    return results[0], results[1]


# -- 3. slots ----------------------------------------------------------------------------------


def probe_waits(port: int, token: str, probes: int) -> List[float]:
    waits = []
    for _ in range(probes):
        started = time.perf_counter()
        status = get(port, token, "/-/health")
        waits.append((time.perf_counter() - started) * 1000)
        if status != 200:
            waits[-1] = float("inf")
        time.sleep(0.01)
    return waits


def slots(endpoint: str, silent: int, probes: int, log: Path) -> Tuple[List[float], List[float]]:
    with serving(endpoint, "", log) as (_, port, token):
        get(port, token, "/-/health")  # warm
        baseline = probe_waits(port, token, probes)
        held = []
        for _ in range(silent):
            try:
                held.append(socket.create_connection(("127.0.0.1", port), timeout=5))
            except OSError:
                break
        time.sleep(0.5)  # all accepted (and the oldest displaced past the socket bound)
        loaded = probe_waits(port, token, probes)
        for s in held:
            s.close()
    return baseline, loaded


def pct(values: List[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=3)
    parser.add_argument("--clients", type=int, default=5, help="clients per key")
    parser.add_argument("--outage", type=float, default=12.0, help="seconds per outage kind")
    parser.add_argument("--names", type=int, default=5000)
    parser.add_argument("--max-bytes", type=int, default=16 * 1024 * 1024)
    parser.add_argument("--silent", type=int, default=2000)
    parser.add_argument("--probes", type=int, default=50)
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
    log = Path(tempfile.mkdtemp(prefix="bench-abuse-")) / "serve.log"
    ok = True

    with moto_server() as moto, UpstreamProxy(moto) as proxy:
        print(f"1. outage: {args.keys} uncached keys x {args.clients} clients, {args.outage:g} s")
        print(
            f"   {'upstream':<10} {'reads/s':>9} {'calls/s/key 0-3s':>17} "
            f"{'after 3s':>9} {'wire':>6} {'api':>5} {'target':>7}"
        )
        for kind in ("500", "throttle", "down"):
            r = outage(moto, proxy, kind, args.keys, args.clients, args.outage, log)
            verdict = "PASS" if r["late_per_key_s"] <= 1.0 else "FAIL"
            ok &= verdict == "PASS"
            print(
                f"   {kind:<10} {r['reads_per_s']:>9.0f} {r['early_per_key_s']:>17.2f} "
                f"{r['late_per_key_s']:>9.2f} {r['wire']:>6.0f} {r['api']:>5.0f} {verdict:>7}"
            )
        print("   (reads/s is the baseline: the upstream calls/s there would be without backoff)")

        print(
            f"2. memory: {args.names} distinct names of 8,100 characters, max_bytes "
            f"{args.max_bytes / 2**20:g} MiB"
        )
        same, distinct = memory(proxy.url, args.names, args.max_bytes, log)
        bound = args.max_bytes // 1024 + FIXED_OVERHEAD_MIB * 1024
        verdict = "PASS" if distinct <= bound else "FAIL"
        ok &= verdict == "PASS"
        print(f"   RSS growth, one name read {args.names} times (baseline): {same / 1024:8.1f} MiB")
        print(
            f"   RSS growth, {args.names} distinct names:              {distinct / 1024:8.1f} MiB"
        )
        print(
            f"   bound: max_bytes + {FIXED_OVERHEAD_MIB} MiB fixed overhead = {bound / 1024:.1f} MiB; "
            f"growth over baseline {(distinct - same) / 1024:.1f} MiB = "
            f"{(distinct - same) / (args.max_bytes / 1024):.2f} x max_bytes  {verdict}"
        )

        print(f"3. slots: a token holder's wait while {args.silent} silent connections are held")
        baseline, loaded = slots(moto, args.silent, args.probes, log)
        verdict = "PASS" if max(loaded) < 100 else "FAIL"
        ok &= verdict == "PASS"
        for label, waits in (("nothing held (baseline)", baseline), ("held", loaded)):
            print(
                f"   {label:<24} p50 {pct(waits, 0.5):6.2f} ms  p99 {pct(waits, 0.99):6.2f} ms  "
                f"max {max(waits):6.2f} ms"
            )
        print(f"   ratio p50 held/baseline {pct(loaded, 0.5) / pct(baseline, 0.5):.2f}  {verdict}")
    text = log.read_text() if log.exists() else ""
    if "Traceback" in text:
        print(f"the server logged a traceback: see {log}")
        ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
