"""HTTP on a raw socket, for tests that pin what the server does with bytes: requests as
bytes, reading until the server has answered (or closed), splitting the answers."""

from __future__ import annotations

import socket
import subprocess
import time
from typing import Dict, List, Optional, Tuple

__all__ = [
    "parse_responses",
    "read_responses",
    "read_until_closed",
    "request_bytes",
    "wait_listening",
]

TOKEN_HEADER = "X-Aws-Parameters-Secrets-Token"

Response = Tuple[int, Dict[str, str], bytes]


def request_bytes(
    path: str,
    token: Optional[str] = None,
    extra: str = "",
    version: str = "1.1",
    method: str = "GET",
) -> bytes:
    """One request's bytes, with ``Host: localhost``, the token header when ``token`` is not
    None, and ``extra`` header lines (each ending in CRLF)."""
    tok = f"{TOKEN_HEADER}: {token}\r\n" if token is not None else ""
    return f"{method} {path} HTTP/{version}\r\nHost: localhost\r\n{tok}{extra}\r\n".encode()


def read_until_closed(sock: socket.socket, timeout: Optional[float] = None) -> bytes:
    """Everything the server sends until it closes or resets (or a read waits longer than
    ``timeout``, default the socket's own or else 10 s: then what came)."""
    if timeout is not None or sock.gettimeout() is None:
        sock.settimeout(10.0 if timeout is None else timeout)
    out = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (socket.timeout, ConnectionResetError):
            return out
        if not chunk:
            return out
        out += chunk


def _whole(data: bytes) -> int:
    """How many whole (Content-Length framed) responses ``data`` starts with."""
    count = 0
    while True:
        head, found, rest = data.partition(b"\r\n\r\n")
        if not found:
            return count
        lines = head.decode("latin-1").split("\r\n")[1:]
        fields = (line.partition(":") for line in lines)
        n = next((int(v) for k, _, v in fields if k.lower() == "content-length"), 0)
        if len(rest) < n:
            return count
        count, data = count + 1, rest[n:]


def read_responses(sock: socket.socket, n: int) -> List[Response]:
    """Read until the server has sent ``n`` whole responses (each read bounded by the socket's
    timeout): what a test waits for before its next write, instead of a pause."""
    data = b""
    while _whole(data) < n:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"closed after {_whole(data)} of {n} responses: {data!r}")
        data += chunk
    return parse_responses(data)


def parse_responses(data: bytes) -> List[Response]:
    """Split a byte stream of HTTP/1.1 responses (Content-Length framed): status, headers
    (names lower-cased), body."""
    out = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        n = int(headers.get("content-length", "0"))
        out.append((status, headers, rest[:n]))
        data = rest[n:]
    return out


def wait_listening(port: int, process: subprocess.Popen[str], timeout: float = 20.0) -> None:
    """Until something accepts connections on 127.0.0.1:``port``; AssertionError if
    ``process`` exits first or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, f"exited with {process.returncode} before listening"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"nothing listened on port {port} in {timeout:g}s"
            time.sleep(0.05)
