"""A moto server in server mode on 127.0.0.1, reached by real boto3 over HTTP."""

from __future__ import annotations

import contextlib
import os
import random
import socket
from typing import Dict, Iterator

FAKE_CREDENTIALS: Dict[str, str] = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing-session-token",
    "AWS_REGION": "us-west-2",
    "AWS_DEFAULT_REGION": "us-west-2",
}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago, below the kernel's ephemeral range
    where it can: a port from that range can be taken meanwhile as the local end of any
    outgoing connection (to moto, say), and a server then cannot bind it."""
    low = _ephemeral_low()
    for _ in range(64):
        port = random.randrange(max(1024, low - 12000), low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # a crowded range: whatever the kernel gives
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return max(2048, int(f.read().split()[0]))
    except (OSError, ValueError, IndexError):
        return 32768


@contextlib.contextmanager
def moto_server(port: int = 0) -> Iterator[str]:
    """Run ``moto.server.ThreadedMotoServer`` on loopback; yield its endpoint URL."""
    from moto.server import ThreadedMotoServer

    port = port or free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def aws_environment(endpoint: str) -> Dict[str, str]:
    """The environment variables that point boto3 (and cachelayer) at ``endpoint``."""
    env = dict(FAKE_CREDENTIALS)
    env["AWS_ENDPOINT_URL"] = endpoint
    return env


@contextlib.contextmanager
def patched_environ(values: Dict[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of a block, restoring them after."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
