"""Real Redis servers for tests and benchmarks: Debian's redis-server on loopback (standalone,
a three-node cluster, TLS with a CA made on the spot), started and stopped by the caller."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator, List, Optional, Sequence

import attrs

from cachelayer.testing.moto import free_port
from cachelayer.testing.tls import TestCA, make_test_ca

__all__ = ["RedisServer", "TestCA", "make_test_ca", "redis_available", "redis_cluster"]


def redis_available() -> Optional[str]:
    """Why real Redis tests cannot run here (None if they can)."""
    for tool in ("redis-server", "redis-cli"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (bash scripts/ci/install-redis.sh installs it)"
    return None


def _ping(port: int, tls: Optional[TestCA] = None) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as raw:
            sock: socket.socket = raw
            if tls is not None:
                import ssl

                ctx = ssl.create_default_context(cafile=str(tls.ca_file))
                sock = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@attrs.define
class RedisServer:
    """One redis-server process on 127.0.0.1; ``stop``/``start`` kill and revive it on the same
    port (to test an outage). ``tls`` serves TLS only, with that CA's certificate."""

    directory: Path
    port: int = attrs.field(factory=free_port)
    tls: Optional[TestCA] = None
    cluster: bool = False
    password: Optional[str] = None
    _proc: Optional[subprocess.Popen[bytes]] = attrs.field(default=None, init=False)

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>`` (``rediss://`` with TLS)."""
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}"

    def start(self) -> RedisServer:
        """Start the server and wait until it answers PING (10 s at most)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [
            "redis-server",
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.directory),
            "--logfile",
            str(self.directory / f"redis-{self.port}.log"),
        ]
        if self.tls is not None:
            args += [
                "--port",
                "0",
                "--tls-port",
                str(self.port),
                "--tls-cert-file",
                str(self.tls.cert_file),
                "--tls-key-file",
                str(self.tls.key_file),
                "--tls-ca-cert-file",
                str(self.tls.ca_file),
                "--tls-auth-clients",
                "no",
            ]
        else:
            args += ["--port", str(self.port)]
        if self.cluster:
            args += [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                str(self.directory / f"nodes-{self.port}.conf"),
                "--cluster-node-timeout",
                "2000",
                # An explicit bus port: the default (port + 10000) may be taken or too high.
                "--cluster-port",
                str(free_port()),
            ]
        if self.password:
            args += ["--requirepass", self.password]
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not _ping(self.port, self.tls) and not self.password:
            if self._proc.poll() is not None or time.monotonic() > deadline:
                log = self.directory / f"redis-{self.port}.log"
                text = log.read_text()[-2000:] if log.exists() else ""
                self.stop()
                raise RuntimeError(f"redis-server on port {self.port} did not start: {text}")
            time.sleep(0.02)
        if self.password:  # PING answers NOAUTH: wait for the port instead
            while True:
                with contextlib.suppress(OSError):
                    socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on port {self.port} did not start")
                time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Kill the server (SIGKILL: an outage, not a shutdown) and wait for it."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(10)
            self._proc = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _cli(port: int, *args: str, timeout: float = 30) -> str:
    done = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )
    return done.stdout


@contextlib.contextmanager
def redis_cluster(directory: Path, nodes: int = 3) -> Iterator[List[RedisServer]]:
    """A cluster of ``nodes`` masters (no replicas) on loopback, slots spread by
    ``redis-cli --cluster create``; yields the servers once every node says cluster_state:ok."""
    servers: List[RedisServer] = []
    try:
        for i in range(nodes):
            servers.append(RedisServer(directory / f"node{i}", cluster=True).start())
        _cli(
            servers[0].port,
            "--cluster",
            "create",
            *(f"127.0.0.1:{s.port}" for s in servers),
            "--cluster-replicas",
            "0",
            "--cluster-yes",
        )
        deadline = time.monotonic() + 20
        while not all("cluster_state:ok" in _cli(s.port, "cluster", "info") for s in servers):
            if time.monotonic() > deadline:
                raise RuntimeError("the test cluster did not reach cluster_state:ok in 20 s")
            time.sleep(0.1)
        yield servers
    finally:
        for s in servers:
            s.stop()


def scan_all(servers: Sequence[RedisServer]) -> List[bytes]:
    """Every key and value held by ``servers`` (plain servers, no TLS), as raw bytes."""
    import redis

    out: List[bytes] = []
    for s in servers:
        client = redis.Redis(host="127.0.0.1", port=s.port, password=s.password)
        try:
            for key in client.scan_iter(count=1000):
                out.append(bytes(key))
                value = client.get(key)
                if isinstance(value, bytes):
                    out.append(value)
        finally:
            client.close()
    return out
