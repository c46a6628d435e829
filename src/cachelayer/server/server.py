"""The listening side: bind loopback (IPv4 and IPv6), bound connections, timeouts, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
from typing import Any, Callable, Dict, List, Optional, Sequence, Set

import attrs

from cachelayer.server.application import ServedApplication
from cachelayer.server.checks import Limits, RequestGate
from cachelayer.server.compat import CompatRoutes
from cachelayer.server.memo import MemoTable
from cachelayer.server.protocol import HttpConnection

__all__ = ["DEFAULT_HOSTS", "Server"]

log = logging.getLogger("cachelayer.server")

# Both loopbacks, so "localhost" works whichever one a runtime resolves it to first (Node.js
# may pick ::1). Never a wildcard address.
DEFAULT_HOSTS = ("127.0.0.1", "::1")

# Errors that mean "this host has no such address / family": skip that listener quietly.
_UNAVAILABLE = {errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT}


# Once this many bytes of entries have been dropped since the last time, hand the free memory
# back to the system (see _trim_memory).
TRIM_AFTER = 1024 * 1024


def _malloc_trim() -> Optional[Callable[[], Any]]:
    """glibc's ``malloc_trim(0)``, or None where there is none (musl, macOS)."""
    try:
        import ctypes

        trim = ctypes.CDLL(None).malloc_trim
    except (ImportError, OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


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

    ``port`` overrides ``app.settings.port`` (0 picks a free one, for tests). A connection is
    "pending" until one of its requests passes auth: pending ones are closed after
    ``pending_timeout`` seconds whatever they do, and a request failing auth closes its
    connection. Beyond ``max_connections``, a newcomer whose request authenticates takes the
    slot of the oldest pending connection; any other gets 503 and is closed. Past twice
    ``max_connections`` open sockets, each newcomer closes the oldest pending connection at
    once. A connection idle for ``idle_timeout`` seconds is closed; one that takes longer than
    ``request_timeout`` to send a whole request gets 408 and is closed.

    Per-URL memos (route resolution and rendered response) are counted against the cache's
    ``max_bytes`` and kept within a quarter of it. The AWS-native paths answered are those the
    providers declare (``aws_compat``); PluginError when two declare one path.
    """

    app: ServedApplication
    _port_request: Optional[int] = attrs.field(default=None, alias="port")
    max_connections: int = 256
    idle_timeout: float = 60.0
    request_timeout: float = 10.0
    pending_timeout: float = 5.0
    memos: MemoTable = attrs.field(init=False, repr=False)
    gate: RequestGate = attrs.field(init=False, repr=False)
    compat: CompatRoutes = attrs.field(init=False, repr=False)
    tick: int = attrs.field(default=0, init=False)
    _port: int = attrs.field(default=0, init=False)
    _servers: List[Any] = attrs.field(factory=list, init=False)
    _connections: Set[HttpConnection] = attrs.field(factory=set, init=False)
    # Connections not yet authenticated, oldest first (a dict keeps insertion order).
    _pending: Dict[HttpConnection, None] = attrs.field(factory=dict, init=False)
    _sweeper: Optional[asyncio.Task[None]] = attrs.field(default=None, init=False)
    _closed: Optional[asyncio.Event] = attrs.field(default=None, init=False)
    _drained: Optional[asyncio.Event] = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        settings = self.app.settings
        auth_required = settings.auth == "token"
        token = settings.token
        self.gate = RequestGate(
            auth_required=auth_required,
            expected=token.encode("utf-8") if (auth_required and token) else None,
            max_connections=self.max_connections,
        )
        self.memos = MemoTable(self.app.cache, Limits.route_memo, Limits.request_memo)
        self.compat = CompatRoutes.of(self.app)

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
        """Track a new, pending connection; False when it is over the limit (its request will
        get a 503 unless it authenticates and there is a pending connection to displace)."""
        self._connections.add(conn)
        self._pending[conn] = None
        if self._drained is not None:
            self._drained.clear()
        if len(self._connections) > 2 * self.max_connections:
            # Sockets (file descriptors) are bounded too: the oldest pending one goes now.
            self._displace(conn)
        return len(self._connections) <= self.max_connections

    def trusted(self, conn: HttpConnection) -> None:
        """``conn`` has passed auth: it is no longer pending."""
        self._pending.pop(conn, None)

    def make_room(self, conn: HttpConnection) -> bool:
        """Close the oldest pending connection other than ``conn`` to make room for it;
        False when every other connection has authenticated. No one is closed when the
        connections that made ``conn`` over the limit have gone since."""
        if len(self._connections) <= self.max_connections:
            return True
        return self._displace(conn)

    def _displace(self, keep: HttpConnection) -> bool:
        for victim in self._pending:
            if victim is not keep:
                del self._pending[victim]
                victim.abort()
                return True
        return False

    def release(self, conn: HttpConnection) -> None:
        """Forget a closed connection."""
        self._connections.discard(conn)
        self._pending.pop(conn, None)
        if not self._connections and self._drained is not None:
            self._drained.set()

    @property
    def memo_bytes(self) -> int:
        """Bytes the per-URL memos are counted for (part of the cache's ``max_bytes``)."""
        return self.memos.total

    async def _sweep(self) -> None:
        # One timer for all connections, counting ticks rather than wall time: a Lambda freeze
        # stops this loop too, so frozen time never counts as idle.
        idle = max(1, round(self.idle_timeout))
        request = max(1, round(self.request_timeout))
        pending = max(1, round(self.pending_timeout))
        cache = self.app.cache
        trimmed = cache.released
        trim: Any = False  # not looked up yet
        while True:
            await asyncio.sleep(1.0)
            self.tick += 1
            for conn in list(self._connections):
                conn.check_timeouts(self.tick, idle, request, pending)
            if cache.released - trimmed >= TRIM_AFTER:
                # The evicted names, values and errors were allocated between short-lived
                # buffers (requests, responses, AWS answers): glibc keeps the pages in between
                # mapped, and RSS would grow far past max_bytes. Give them back.
                trimmed = cache.released
                if trim is False:
                    trim = _malloc_trim()
                if trim is not None:
                    trim()
