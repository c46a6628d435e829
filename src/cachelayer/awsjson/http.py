"""Keep-alive HTTP(S) connections for the lean transport: a pool per host, timeouts, verified TLS."""

from __future__ import annotations

import http.client
import os
import select
import socket
import ssl
import threading
from typing import Dict, List, Optional, Tuple

import attrs

__all__ = ["ConnectTimeout", "ConnectionPool", "HttpResponse", "tls_context"]

_TLS_LOCK = threading.Lock()
_TLS: Dict[Optional[str], ssl.SSLContext] = {}


def tls_context(ca_bundle: Optional[str] = None) -> ssl.SSLContext:
    """A verifying TLS context: the system's trust store, or ``ca_bundle`` (``AWS_CA_BUNDLE``).

    Built once per bundle and only when the first HTTPS connection is made: loading the
    trust store costs milliseconds that plain-HTTP (moto) runs never pay.
    """
    bundle = ca_bundle if ca_bundle is not None else (os.environ.get("AWS_CA_BUNDLE") or None)
    with _TLS_LOCK:
        context = _TLS.get(bundle)
        if context is None:
            context = ssl.create_default_context(cafile=bundle)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            _TLS[bundle] = context
        return context


def _dropped(conn: http.client.HTTPConnection) -> bool:
    """Whether an idle connection was closed by the server: readable with nothing asked."""
    sock = conn.sock
    if sock is None:
        return True
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


class ConnectTimeout(TimeoutError):
    """The TCP connection (or the TLS handshake) did not complete within the connect timeout."""


@attrs.frozen
class HttpResponse:
    """Status, lower-cased headers and the whole body of one response."""

    status: int
    headers: Dict[str, str]
    body: bytes


Key = Tuple[str, str, int]


@attrs.define
class ConnectionPool:
    """Idle keep-alive connections per (scheme, host, port); at most ``max_idle`` each.

    A connection is used by one request at a time: taken from the pool, given back after its
    response was read whole, dropped on any error.
    """

    connect_timeout: float = 2.0
    read_timeout: float = 5.0
    max_idle: int = 10
    ca_bundle: Optional[str] = None
    _idle: Dict[Key, List[http.client.HTTPConnection]] = attrs.field(factory=dict, init=False)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False)

    def request(
        self,
        scheme: str,
        host: str,
        port: int,
        method: str,
        path: str,
        body: bytes,
        headers: Dict[str, str],
    ) -> HttpResponse:
        """Send one request and read its response; raises OSError subclasses on failure
        (``ConnectTimeout``, ``TimeoutError`` for a read timeout, ``ssl.SSLError``...)."""
        key = (scheme, host, port)
        conn = self._take(key)
        if conn is None:
            conn = self._connect(scheme, host, port)
        return self._exchange(key, conn, method, path, body, headers)

    def _exchange(
        self,
        key: Key,
        conn: http.client.HTTPConnection,
        method: str,
        path: str,
        body: bytes,
        headers: Dict[str, str],
    ) -> HttpResponse:
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
        except BaseException:
            conn.close()
            raise
        result = HttpResponse(
            response.status, {k.lower(): v for k, v in response.getheaders()}, data
        )
        if response.will_close:
            conn.close()
        else:
            self._give_back(key, conn)
        return result

    def _connect(self, scheme: str, host: str, port: int) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection
        if scheme == "https":
            conn = http.client.HTTPSConnection(
                host, port, timeout=self.connect_timeout, context=tls_context(self.ca_bundle)
            )
        else:
            conn = http.client.HTTPConnection(host, port, timeout=self.connect_timeout)
        try:
            conn.connect()
        except (socket.timeout, TimeoutError) as exc:
            conn.close()
            raise ConnectTimeout(
                f"connecting to {host}:{port} took longer than {self.connect_timeout:g} s"
            ) from exc
        except BaseException:
            conn.close()
            raise
        assert conn.sock is not None
        conn.sock.settimeout(self.read_timeout)
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def _take(self, key: Key) -> Optional[http.client.HTTPConnection]:
        while True:
            with self._lock:
                idle = self._idle.get(key)
                conn = idle.pop() if idle else None
            if conn is None or not _dropped(conn):
                return conn
            # The server closed it while idle (urllib3 checks the same way before reuse).
            conn.close()

    def _give_back(self, key: Key, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if len(idle) < self.max_idle:
                idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        """Close every idle connection."""
        with self._lock:
            conns = [c for idle in self._idle.values() for c in idle]
            self._idle.clear()
        for conn in conns:
            conn.close()
