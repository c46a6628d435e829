"""Upstream calls and hit share for 10,000 reads of 100 keys over 10 simulated minutes.

The cache runs on a simulated clock (so ten minutes take seconds) against the real SSM provider
and a real moto server over HTTP; AWS calls are counted at the wire by a proxy in front of moto.
Each simulated invocation delivers INVOKE to the application (refresh-ahead's trigger), reads
one key, and lets background refreshes finish before the environment would be frozen again.

The baseline is the floor: with TTL 1 minute, 100 keys over 10 minutes need at least
100 x 10 = 1,000 calls. Run: ``.venv/bin/python bench/bench_upstream.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
from typing import Dict

from cachelayer.core.app import Application
from cachelayer.testing.moto import aws_environment, moto_server
from cachelayer.testing.proxy import UpstreamProxy


class SimClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def simulate(
    app: Application, clock: SimClock, keys: int, reads: int, minutes: float
) -> Dict[str, int]:
    rng = random.Random(42)
    provider, _ = app.router.resolve("parameters", {"name": "p0"})
    step = minutes * 60.0 / reads
    for i in range(reads):
        clock.now = i * step
        app.on_invoke({"eventType": "INVOKE"})
        _, item = app.router.resolve("parameters", {"name": f"p{rng.randrange(keys)}"})
        if app.cache.peek(item) is None:
            await app.cache.get(provider, item)
        await app.cache.drain(timeout=5.0)
    return app.stats()["parameters"]


def run(refresh_ahead: str, endpoint: str, keys: int, reads: int, minutes: float) -> Dict[str, int]:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "config.yaml")
        with open(path, "w") as f:
            f.write(f"cache:\n  ttl: 1m\n  refresh_ahead: {refresh_ahead}\n")
        env = aws_environment(endpoint)
        env["CACHE_EXTENSION_CONFIG"] = path
        old = dict(os.environ)
        os.environ.update(env)
        try:
            clock = SimClock()
            app = Application.from_environment(env, clock=clock)
            try:
                return asyncio.run(simulate(app, clock, keys, reads, minutes))
            finally:
                app.close()
        finally:
            os.environ.clear()
            os.environ.update(old)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100)
    parser.add_argument("--reads", type=int, default=10_000)
    parser.add_argument("--minutes", type=float, default=10.0)
    args = parser.parse_args()

    import boto3

    with moto_server() as moto, UpstreamProxy(moto) as proxy:
        ssm = boto3.client("ssm", endpoint_url=moto, **_creds())
        for k in range(args.keys):
            ssm.put_parameter(Name=f"p{k}", Value=f"value-{k}", Type="String")
        floor = args.keys * int(args.minutes)  # TTL is one minute
        print(
            f"{args.reads} reads of {args.keys} keys over {args.minutes:g} simulated minutes, TTL 1m"
        )
        print(f"floor (baseline): {floor} upstream calls")
        print(
            f"{'refresh-ahead':<14} {'wire calls':>10} {'x floor':>8} {'hits':>7} {'hit share':>9} {'misses':>7}"
        )
        for label, ratio in (("off", "0"), ("on (20%)", "20%")):
            proxy.reset_counts()
            stats = run(ratio, proxy.url, args.keys, args.reads, args.minutes)
            wire = proxy.count(service="ssm")
            total = stats["hits"] + stats["misses"] + stats["stale"]
            print(
                f"{label:<14} {wire:>10} {wire / floor:>8.2f} {stats['hits']:>7} "
                f"{stats['hits'] / total:>9.1%} {stats['misses']:>7}"
            )
            if stats["upstream_calls"] != wire:
                print(
                    f"  note: the extension counted {stats['upstream_calls']} calls, the wire {wire}"
                )
    return 0


def _creds() -> Dict[str, str]:
    env = aws_environment("")
    return {
        "region_name": env["AWS_REGION"],
        "aws_access_key_id": env["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
    }


if __name__ == "__main__":
    sys.exit(main())
