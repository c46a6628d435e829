"""Hit-path CPU in process: cachelayer's connection code against a bare httptools protocol.

bench_hits.py measures whole requests over loopback, where the kernel and the event loop cost
most of each hit and two busy cores make a 5 % change invisible. This one drives the real
Application and Server's ``HttpConnection`` with request bytes directly (a transport that only
counts writes stands in for the socket: no real part can take the socket away), after one real
fetch from moto has warmed the key, and compares the CPU per hit with a bare
``asyncio.Protocol`` that parses with httptools and writes a fixed response: the floor any
httptools server pays. Two shapes: one request per chunk (what a keep-alive client sends; the
request-bytes memo answers it) and eight pipelined per chunk (every one through the parser and
the request checks).

    .venv/bin/python bench/bench_hit_path.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from typing import Any, Callable, Dict, Optional, Sequence

import httptools

TOKEN = "bench-session-token"
PATH = "/parameters?name=CacheExtensions_Parameter1"
REQUEST = (
    f"GET {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Aws-Parameters-Secrets-Token: {TOKEN}\r\n\r\n"
).encode()
CONFIG = "parameters:\n  - region: us-west-2\n    names:\n      - CacheExtensions_Parameter1\n"
SHAPES = {"1 per chunk": (REQUEST, 200_000), "8 pipelined": (REQUEST * 8, 25_000)}


class CountingTransport:
    """Counts the responses written; never closes, never pauses."""

    def __init__(self) -> None:
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class Floor(asyncio.Protocol):
    """The least an httptools server does per request: parse, then write a fixed response."""

    def __init__(self, response: bytes) -> None:
        self._response = response
        self._parser = httptools.HttpRequestParser(self)
        self._transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._parser.feed_data(data)

    def on_message_complete(self) -> None:
        self._transport.write(self._response)


def cpu_per_hit(make: Callable[[], asyncio.Protocol], data: bytes, count: int) -> float:
    """Microseconds of process CPU per response for ``count`` chunks of ``data``."""
    protocol = make()
    transport = CountingTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]  # stands in for a socket
    protocol.data_received(data)  # warm: the route and request memos
    transport.writes = 0
    started = time.process_time()
    for _ in range(count):
        protocol.data_received(data)
    return (time.process_time() - started) * 1e6 / max(1, transport.writes)


def build_server(workdir: str, endpoint: str) -> Any:
    from cachelayer.core.app import Application
    from cachelayer.server import Server
    from cachelayer.testing.moto import aws_environment

    config = os.path.join(workdir, "config.yaml")
    with open(config, "w") as f:
        f.write(CONFIG)
    env = {**aws_environment(endpoint), "AWS_SESSION_TOKEN": TOKEN, "AWS_REGION": "us-west-2"}
    app = Application.from_environment(env, config_path=config)
    provider, item = app.router.resolve("parameters", {"name": "CacheExtensions_Parameter1"})
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(app.cache.get(provider, item))  # one real fetch from moto
    finally:
        loop.close()
    return Server(app)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="rounds, best kept (default 7)")
    args = parser.parse_args(argv)

    from cachelayer.server.protocol import HttpConnection
    from cachelayer.testing.moto import moto_server
    from cachelayer.testing.sample import seed_sample

    with tempfile.TemporaryDirectory(prefix="bench-hit-path-") as workdir, moto_server() as url:
        seed_sample(url)
        server = build_server(workdir, url)
        probe = CountingTransport()
        written: Dict[str, bytes] = {}
        probe.write = lambda data: written.setdefault("response", data)  # type: ignore[method-assign]
        conn = HttpConnection(server)
        conn.connection_made(probe)
        conn.data_received(REQUEST)
        response = written["response"]
        assert response.startswith(b"HTTP/1.1 200 OK"), response[:80]
        makers: Dict[str, Callable[[], asyncio.Protocol]] = {
            "cachelayer": lambda: HttpConnection(server),
            "floor": lambda: Floor(response),
        }
        best: Dict[str, Dict[str, float]] = {}
        for _ in range(args.rounds):  # alternating, so a burst of other load hits both
            for shape, (data, count) in SHAPES.items():
                for name, make in makers.items():
                    us = cpu_per_hit(make, data, count)
                    cell = best.setdefault(shape, {})
                    cell[name] = min(cell.get(name, us), us)
        server.app.close()
    print(f"{'shape':<14}{'cachelayer us':>15}{'floor us':>10}{'ratio':>8}")
    for shape, cell in best.items():
        ratio = cell["cachelayer"] / cell["floor"]
        print(f"{shape:<14}{cell['cachelayer']:>15.3f}{cell['floor']:>10.3f}{ratio:>7.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
