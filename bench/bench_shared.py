"""The shared tier: upstream calls of K environments x M keys over T simulated minutes, with and
without the tier, and the latency of a shared hit beside an upstream fetch and an in-memory hit.

Everything is real but the clock: K ``Application`` objects (one per execution environment,
each with its own in-memory cache, worker threads and AWS clients) share one Debian
``redis-server`` on loopback and one moto server behind the counting proxy, which counts SSM
calls at the wire. A simulated clock drives the caches' TTLs and the tier's timestamps, so T
minutes take seconds. Every simulated ``--step`` each environment gets an INVOKE (refresh-ahead's
trigger) and reads every key, all environments at once (so they race for the tier's leases).

Run: ``.venv/bin/python bench/bench_shared.py [--envs 10] [--keys 20] [--minutes 5]``.
Target: at least K/2 times fewer upstream calls with the tier, for K >= 10.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import logging
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

from cachelayer.core.app import Application
from cachelayer.provider import Value
from cachelayer.testing.moto import aws_environment, free_port
from cachelayer.testing.proxy import UpstreamProxy
from cachelayer.testing.redis import RedisServer, redis_available

EPOCH = 1.9e9  # the simulated wall clock starts here (any plausible time.time())


class SimClock:
    """Seconds since the simulation started; ``wall`` is the same instant as a wall clock."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def wall(self) -> float:
        return EPOCH + self.now


def make_envs(count: int, config: Path, endpoint: str, clock: SimClock, key: str) -> List[Any]:
    env = dict(aws_environment(endpoint))
    env.update({"CACHE_EXTENSION_SHARED_KEY": key, "CACHE_EXTENSION_AUTH": "none"})
    apps = []
    for _ in range(count):
        app = Application.from_environment(env, config_path=str(config), clock=clock)
        if app.cache.shared is not None:
            app.cache.shared.wall = clock.wall
        apps.append(app)
    return apps


async def simulate(
    apps: List[Any], clock: SimClock, keys: int, minutes: float, step: float
) -> None:
    provider, _ = apps[0].router.resolve("parameters", {"name": "p0"})
    items = [apps[0].router.resolve("parameters", {"name": f"p{k}"})[1] for k in range(keys)]

    async def one_environment(app: Any) -> None:
        app.on_invoke({"eventType": "INVOKE"})
        for item in items:
            if app.cache.peek(item) is None:
                await app.cache.get(provider, item)
        await app.cache.drain(timeout=5.0)

    t = 0.0
    while t < minutes * 60.0:
        clock.now = t
        await asyncio.gather(*(one_environment(app) for app in apps))
        t += step


def run(
    shared_url: Optional[str], endpoint: str, envs: int, keys: int, minutes: float, step: float
) -> Dict[str, int]:
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.yaml"
        text = "cache:\n  ttl: 1m\n"
        if shared_url:
            text += f"  shared:\n    url: {shared_url}\n    timeout: 200ms\n    lease_wait: 2s\n"
        config.write_text(text)
        clock = SimClock()
        key = base64.b64encode(os.urandom(32)).decode()
        apps = make_envs(envs, config, endpoint, clock, key)
        try:
            asyncio.run(simulate(apps, clock, keys, minutes, step))
            totals: Dict[str, int] = {}
            for app in apps:
                for name, value in app.stats()["parameters"].items():
                    if not name.startswith("shared_latency"):
                        totals[name] = totals.get(name, 0) + value
            return totals
        finally:
            for app in apps:
                app.close()


def quantiles(samples: List[float]) -> Tuple[float, float]:
    """(p50, p99) in microseconds."""
    ordered = sorted(samples)
    return (
        statistics.median(ordered) * 1e6,
        ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1e6,
    )


def latencies(shared_url: str, endpoint: str, rounds: int) -> Dict[str, Tuple[float, float]]:
    """p50/p99 of an in-memory hit, a shared hit and an upstream fetch, same keys, same run."""
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.yaml"
        # Its own prefix: the entries of the runs above were sealed under other keys.
        config.write_text(
            f"cache:\n  ttl: 1h\n  shared:\n    url: {shared_url}\n    prefix: 'latency:'\n"
        )
        env = dict(aws_environment(endpoint))
        env["CACHE_EXTENSION_SHARED_KEY"] = base64.b64encode(os.urandom(32)).decode()
        app = Application.from_environment(env, config_path=str(config))
        try:
            provider, item = app.router.resolve("parameters", {"name": "p0"})
            tier = app.cache.shared
            assert tier is not None
            upstream: List[float] = []
            for _ in range(rounds):
                started = time.perf_counter()
                provider.fetch(item)
                upstream.append(time.perf_counter() - started)

            def never() -> Value:
                raise AssertionError("a shared hit must not call upstream")

            tier.fetch(
                item, lambda: provider.fetch(item), ttl=3600, negative_ttl=30, stale_if_error=0
            )
            shared: List[float] = []
            for _ in range(rounds):
                started = time.perf_counter()
                tier.fetch(item, never, ttl=3600, negative_ttl=30, stale_if_error=0)
                shared.append(time.perf_counter() - started)

            async def memory() -> List[float]:
                await app.cache.get(provider, item)
                out = []
                for _ in range(rounds):
                    started = time.perf_counter()
                    assert app.cache.peek(item) is not None
                    out.append(time.perf_counter() - started)
                return out

            hits = asyncio.run(memory())
            return {
                "in-memory hit": quantiles(hits),
                "shared hit (GET + AES-GCM open)": quantiles(shared),
                "upstream fetch (moto over HTTP)": quantiles(upstream),
            }
        finally:
            app.close()


@contextlib.contextmanager
def moto_process() -> Iterator[str]:
    """moto in server mode in a process of its own: K environments in this one process are
    pessimistic enough without moto competing for their interpreter lock too."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("moto did not start") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", type=int, default=10, help="K execution environments")
    parser.add_argument("--keys", type=int, default=20, help="M keys each reads")
    parser.add_argument("--minutes", type=float, default=5.0, help="T simulated minutes")
    parser.add_argument("--step", type=float, default=15.0, help="simulated seconds per round")
    parser.add_argument("--rounds", type=int, default=300, help="latency samples per kind")
    args = parser.parse_args()
    problem = redis_available()
    if problem:
        print(f"cannot run: {problem}", file=sys.stderr)
        return 2

    import boto3

    # Without the tier, K environments refreshing at once overload moto now and then; the
    # cache serves stale and retries, as it should: not worth a log line per key here.
    logging.getLogger("cachelayer").setLevel(logging.ERROR)
    # The AWS client factory reads credentials from the process environment.
    os.environ.update({k: v for k, v in aws_environment("").items() if k != "AWS_ENDPOINT_URL"})
    with (
        tempfile.TemporaryDirectory() as tmp,
        RedisServer(Path(tmp)) as redis,
        moto_process() as moto,
        UpstreamProxy(moto) as proxy,
    ):
        creds = aws_environment("")
        ssm = boto3.client(
            "ssm",
            endpoint_url=moto,
            region_name=creds["AWS_REGION"],
            aws_access_key_id=creds["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=creds["AWS_SECRET_ACCESS_KEY"],
        )
        for k in range(args.keys):
            ssm.put_parameter(Name=f"p{k}", Value=f"value-{k}", Type="SecureString")
        print(
            f"K={args.envs} environments x M={args.keys} keys over T={args.minutes:g} "
            f"simulated minutes, TTL 1m, every environment reads every key each "
            f"{args.step:g} s"
        )
        results = {}
        for label, url in (("without the tier", None), ("with the tier", redis.url)):
            proxy.reset_counts()
            started = time.monotonic()
            stats = run(url, proxy.url, args.envs, args.keys, args.minutes, args.step)
            results[label] = (proxy.count(service="ssm"), stats, time.monotonic() - started)
        print(
            f"{'':<18} {'upstream calls':>14} {'reads':>7} {'shared hits':>11} "
            f"{'lease waits':>11} {'errors':>6} {'secs':>6}"
        )
        for label, (calls, stats, secs) in results.items():
            reads = stats["hits"] + stats["misses"] + stats["stale"]
            print(
                f"{label:<18} {calls:>14} {reads:>7} {stats.get('shared_hits', 0):>11} "
                f"{stats.get('shared_lease_waits', 0):>11} {stats.get('shared_errors', 0):>6} "
                f"{secs:>6.1f}"
            )
        without = results["without the tier"][0]
        with_tier = results["with the tier"][0]
        ratio = without / max(1, with_tier)
        target = args.envs / 2
        verdict = "PASS" if ratio >= target or args.envs < 10 else "FAIL"
        print(f"ratio without/with: {ratio:.1f}x (target >= K/2 = {target:g}x): {verdict}")

        print(f"\nlatency, {args.rounds} samples each (µs)")
        print(f"{'':<34} {'p50':>9} {'p99':>9}")
        for label, (p50, p99) in latencies(redis.url, proxy.url, args.rounds).items():
            print(f"{label:<34} {p50:>9.1f} {p99:>9.1f}")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
