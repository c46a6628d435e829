"""Many real ``cachelayer serve`` processes at once, as many execution environments would be."""

from __future__ import annotations

import concurrent.futures
import contextlib
import http.client
import os
import selectors
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional, Sequence

import attrs

from cachelayer.testing.moto import free_port

__all__ = ["Environment", "fleet", "read_all"]


@attrs.define
class Environment:
    """One ``cachelayer serve`` process on 127.0.0.1:``port``."""

    proc: subprocess.Popen[bytes]
    port: int

    def get(self, path: str, conn: Optional[http.client.HTTPConnection] = None) -> int:
        """GET ``path`` (auth off); the status."""
        own = conn is None
        conn = conn or http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            return response.status
        finally:
            if own:
                conn.close()


def _wait_ready(envs: Sequence[Environment], timeout: float) -> None:
    selector = selectors.DefaultSelector()
    for env in envs:
        assert env.proc.stdout is not None
        selector.register(env.proc.stdout, selectors.EVENT_READ, env)
    waiting = set(range(len(envs)))
    deadline = time.monotonic() + timeout
    while waiting:
        left = deadline - time.monotonic()
        if left <= 0:
            raise RuntimeError(f"{len(waiting)} cachelayer processes not ready in {timeout:.0f}s")
        for key, _ in selector.select(left):
            env = key.data
            line = env.proc.stdout.readline()
            if not line:
                selector.unregister(key.fileobj)
                err = env.proc.stderr.read().decode(errors="replace")[-2000:]
                raise RuntimeError(f"a cachelayer process exited before it was ready: {err}")
            if b"listening on" in line:
                selector.unregister(key.fileobj)
                waiting.discard(envs.index(env))
    selector.close()


@contextlib.contextmanager
def fleet(
    count: int,
    config: Path,
    env: Mapping[str, str],
    *,
    timeout: float = 120.0,
) -> Iterator[List[Environment]]:
    """Start ``count`` ``cachelayer serve`` processes together (auth off, one free port each)
    with ``env`` laid over this process's environment; yield them once all are listening;
    stop them (SIGTERM, then SIGKILL) after."""
    base = dict(os.environ)
    base.update(env)
    base["CACHE_EXTENSION_AUTH"] = "none"
    base.setdefault("CACHE_EXTENSION_LOG_LEVEL", "WARNING")
    envs: List[Environment] = []
    try:
        for _ in range(count):
            port = free_port()
            proc = subprocess.Popen(
                [sys.executable, "-m", "cachelayer", "serve", "--config", str(config)],
                env={**base, "CACHE_EXTENSION_PORT": str(port)},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            envs.append(Environment(proc, port))
        _wait_ready(envs, timeout)
        yield envs
    finally:
        for e in envs:
            if e.proc.poll() is None:
                e.proc.terminate()
        for e in envs:
            try:
                e.proc.wait(10)
            except subprocess.TimeoutExpired:
                e.proc.kill()
                e.proc.wait(5)
            for stream in (e.proc.stdout, e.proc.stderr):
                if stream is not None:
                    stream.close()


def read_all(envs: Sequence[Environment], paths: Sequence[str]) -> Dict[int, int]:
    """Every environment GETs every path (one keep-alive connection per environment, all
    environments at once); the count of replies by status."""

    def one(env: Environment) -> List[int]:
        conn = http.client.HTTPConnection("127.0.0.1", env.port, timeout=30)
        try:
            return [env.get(p, conn) for p in paths]
        finally:
            conn.close()

    statuses: Dict[int, int] = {}
    with concurrent.futures.ThreadPoolExecutor(len(envs)) as pool:
        for result in pool.map(one, envs):
            for status in result:
                statuses[status] = statuses.get(status, 0) + 1
    return statuses
