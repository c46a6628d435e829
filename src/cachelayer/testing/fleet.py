"""Many real ``cachelayer serve`` processes at once, as many execution environments would be."""

from __future__ import annotations

import concurrent.futures
import contextlib
import http.client
import os
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


def _healthy(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", "/-/health")
            return conn.getresponse().status == 200
        finally:
            conn.close()
    except OSError:
        return False


def _wait_ready(envs: Sequence[Environment], logs: Sequence[Path], timeout: float) -> None:
    """Until every process answers GET /-/health (whatever it prints on the way)."""
    waiting = dict(enumerate(envs))
    deadline = time.monotonic() + timeout
    while waiting:
        for i, env in list(waiting.items()):
            if env.proc.poll() is not None:
                text = logs[i].read_text(errors="replace")[-2000:]
                raise RuntimeError(f"a cachelayer process exited before it was ready: {text}")
            if _healthy(env.port):
                del waiting[i]
        if waiting and time.monotonic() > deadline:
            raise RuntimeError(f"{len(waiting)} cachelayer processes not ready in {timeout:.0f}s")
        time.sleep(0.05)


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
    logs: List[Path] = []
    try:
        for i in range(count):
            port = free_port()
            # Output to files, not pipes: a pipe nobody reads would block a chatty process.
            logs.append(config.parent / f"cachelayer-{port}-{i}.log")
            with logs[-1].open("wb") as log:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "cachelayer", "serve", "--config", str(config)],
                    env={**base, "CACHE_EXTENSION_PORT": str(port)},
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                )
            envs.append(Environment(proc, port))
        _wait_ready(envs, logs, timeout)
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
