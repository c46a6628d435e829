"""The listening side: bind loopback (IPv4 and IPv6), bound connections, timeouts, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
from typing import Any, Dict, List, Optional, Sequence, Set

import attrs

from cachelayer.server.protocol import HttpConnection, Memo

__all__ = ["DEFAULT_HOSTS", "Server"]

log = logging.getLogger("cachelayer.server")

# Both loopbacks, so "localhost" works whichever one a runtime resolves it to first (Node.js
# may pick ::1). Never a wildcard address.
DEFAULT_HOSTS = ("127.0.0.1", "::1")

# Errors that mean "this host has no such address / family": skip that listener quietly.
_UNAVAILABLE = {errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT}


def _check_loopback(host: str) -> None:
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        raise ValueError(
            f"listen address {host!r} is not an IP address; use 127.0.0.1 or ::1"
        ) from None
    if not loopback:
        raise ValueError(
            f"listen address {host!r} is not a loopback address; "
            "cachelayer binds 127.0.0.1 and ::1 only"
        )


@attrs.define
class Server:
    """The HTTP front end of an Application (``app.settings``, ``app.router``, ``app.cache``).

    ``port`` overrides ``app.settings.port`` (0 picks a free one, for tests). Connections beyond
    ``max_connections`` get their first request answered with 503 and are closed. A connection
    idle for ``idle_timeout`` seconds is closed; one that takes longer than ``request_timeout``
    to send a whole request gets 408 and is closed.
    """

    app: Any
    _port_request: Optional[int] = attrs.field(default=None, alias="port")
    max_connections: int = 256
    idle_timeout: float = 60.0
    request_timeout: float = 10.0
    routes: Dict[bytes, Memo] = attrs.field(factory=dict, init=False)
    requests: Dict[bytes, Memo] = attrs.field(factory=dict, init=False)
    tick: int = attrs.field(default=0, init=False)
    auth_required: bool = attrs.field(default=True, init=False)
    expected_token: Optional[bytes] = attrs.field(default=None, init=False, repr=False)
    _port: int = attrs.field(default=0, init=False)
    _servers: List[Any] = attrs.field(factory=list, init=False)
    _connections: Set[HttpConnection] = attrs.field(factory=set, init=False)
    _sweeper: Optional[asyncio.Task[None]] = attrs.field(default=None, init=False)
    _closed: Optional[asyncio.Event] = attrs.field(default=None, init=False)
    _drained: Optional[asyncio.Event] = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        settings = self.app.settings
        self.auth_required = settings.auth == "token"
        token = settings.token
        self.expected_token = token.encode("utf-8") if (self.auth_required and token) else None

    @property
    def port(self) -> int:
        """The TCP port actually bound (0 before ``start``)."""
        return self._port

    @property
    def connections(self) -> int:
        """Open client connections."""
        return len(self._connections)

    async def start(self, hosts: Optional[Sequence[str]] = None) -> None:
        """Bind ``hosts`` (default 127.0.0.1 and ::1 where present) and start accepting.

        Raises OSError naming the port and how to change it when the port is in use.
        """
        hosts = tuple(hosts or DEFAULT_HOSTS)
        for host in hosts:
            _check_loopback(host)
        port = self.app.settings.port if self._port_request is None else self._port_request
        loop = asyncio.get_running_loop()
        self._closed = asyncio.Event()
        self._drained = asyncio.Event()
        # With port 0 the first host picks a port that may be taken on another address:
        # try again with a fresh one a few times.
        attempts = 5 if port == 0 else 1
        for attempt in range(attempts):
            try:
                await self._bind_all(loop, hosts, port)
                break
            except OSError as exc:
                await self._close_listeners()
                if exc.errno == errno.EADDRINUSE and attempt + 1 < attempts:
                    continue
                raise
        self._sweeper = loop.create_task(self._sweep())

    async def _bind_all(
        self, loop: asyncio.AbstractEventLoop, hosts: Sequence[str], port: int
    ) -> None:
        bound = port
        for index, host in enumerate(hosts):
            try:
                server = await loop.create_server(
                    lambda: HttpConnection(self),
                    host=host,
                    port=bound,
                    reuse_address=True,
                    backlog=512,
                )
            except OSError as exc:
                if index > 0 and (exc.errno in _UNAVAILABLE or exc.errno is None):
                    log.debug("not listening on %s: %s", host, exc)
                    continue
                if exc.errno == errno.EADDRINUSE:
                    raise OSError(
                        errno.EADDRINUSE,
                        f"port {bound} on {host} is already in use (another cachelayer or another "
                        "program listens there); choose another port with CACHE_EXTENSION_PORT or "
                        "--port",
                    ) from exc
                raise
            self._servers.append(server)
            if bound == 0:
                bound = server.sockets[0].getsockname()[1]
        self._port = bound

    async def serve_forever(self) -> None:
        """Start if needed, then serve until ``close`` is called."""
        if not self._servers:
            await self.start()
        assert self._closed is not None
        await self._closed.wait()

    async def close(self, timeout: float = 1.0) -> None:
        """Stop accepting, close every connection, and wait up to ``timeout`` for them to go."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        await self._close_listeners()
        for conn in list(self._connections):
            conn.abort()
        if self._connections and self._drained is not None:
            try:
                await asyncio.wait_for(self._drained.wait(), timeout)
            except asyncio.TimeoutError:
                log.warning(
                    "%d connections still open after %.1f s; leaving them",
                    len(self._connections),
                    timeout,
                )
        if self._closed is not None:
            self._closed.set()

    async def _close_listeners(self) -> None:
        servers, self._servers = self._servers, []
        for server in servers:
            server.close()
        for server in servers:
            # Python 3.12+ also waits for connections here; those are handled by close().
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(server.wait_closed()), 0.05)

    # -- called by connections ---------------------------------------------------------

    def admit(self, conn: HttpConnection) -> bool:
        """Track a new connection; False when it is over the limit (it will get a 503)."""
        self._connections.add(conn)
        if self._drained is not None:
            self._drained.clear()
        return len(self._connections) <= self.max_connections

    def release(self, conn: HttpConnection) -> None:
        """Forget a closed connection."""
        self._connections.discard(conn)
        if not self._connections and self._drained is not None:
            self._drained.set()

    async def _sweep(self) -> None:
        # One timer for all connections, counting ticks rather than wall time: a Lambda freeze
        # stops this loop too, so frozen time never counts as idle.
        idle = max(1, round(self.idle_timeout))
        request = max(1, round(self.request_timeout))
        while True:
            await asyncio.sleep(1.0)
            self.tick += 1
            for conn in list(self._connections):
                conn.check_timeouts(self.tick, idle, request)
