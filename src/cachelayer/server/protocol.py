"""One HTTP/1.1 connection: httptools parsing, the synchronous hit path, dispatch, ordering."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Dict, Optional, Protocol, Set

import httptools

from cachelayer.errors import BadRequestError, CachelayerError, RouteNotFoundError
from cachelayer.server.answers import compat_later, operation_later, render_answer, value_later
from cachelayer.server.application import ServedApplication
from cachelayer.server.checks import Limits, Refusal, RequestGate
from cachelayer.server.compat import CompatRoutes
from cachelayer.server.memo import MemoTable, RouteMemo
from cachelayer.server.operations import OPERATIONS, unknown_operation
from cachelayer.server.output import Output, Stop
from cachelayer.server.reading import RequestReader
from cachelayer.server.responses import (
    CLOSE,
    GENERIC_500,
    KEEP_ALIVE,
    render_error,
    render_failure,
    render_lookup,
)
from cachelayer.server.urls import parse_target

__all__ = ["ConnectionHost", "HttpConnection", "Limits"]

log = logging.getLogger("cachelayer.server")

_GET = b"GET"
_HEAD = b"HEAD"
_ROUTE_METHODS = (_GET, _HEAD)
_ALLOW_READ = ((b"Allow", b"GET, HEAD"),)


class ConnectionHost(Protocol):
    """What a connection needs of the server that accepted it (``cachelayer.server.Server``)."""

    @property
    def app(self) -> ServedApplication: ...

    @property
    def memos(self) -> MemoTable: ...

    @property
    def gate(self) -> RequestGate: ...

    @property
    def compat(self) -> CompatRoutes: ...

    @property
    def tick(self) -> int: ...

    def admit(self, conn: HttpConnection) -> bool:
        """Track a new connection; False when it is over the connection limit."""

    def trusted(self, conn: HttpConnection) -> None:
        """``conn`` has passed auth."""

    def make_room(self, conn: HttpConnection) -> bool:
        """Close the oldest pending connection for ``conn``; False when there is none."""

    def release(self, conn: HttpConnection) -> None:
        """Forget a closed connection."""


class HttpConnection(asyncio.Protocol):
    """Serves one client connection. Fresh hits are answered inside ``on_message_complete``
    without creating a coroutine; misses run as tasks and responses leave in request order."""

    __slots__ = (
        "_app",
        "_bytes_pending",
        "_gate",
        "_last_tick",
        "_memos",
        "_nreq",
        "_opened_tick",
        "_out",
        "_overloaded",
        "_parser",
        "_peek",
        "_queue",
        "_reader",
        "_refusal",
        "_requests",
        "_routes",
        "_served_fast",
        "_server",
        "_started_tick",
        "_tasks",
        "_trusted",
        "_write",
    )

    def __init__(self, server: ConnectionHost) -> None:
        self._server = server
        self._app = server.app
        self._memos = server.memos
        self._routes: Dict[bytes, RouteMemo] = server.memos.routes
        self._requests: Dict[bytes, RouteMemo] = server.memos.requests
        self._gate = server.gate
        self._refusal = server.gate.refusal  # bound once: called for every parsed request
        self._peek = server.app.cache.peek
        self._reader = RequestReader(self._fatal, self.on_message_complete)
        self._parser = httptools.HttpRequestParser(self._reader)
        self._out = Output(self._released)
        self._queue = self._out.queue  # the hit path's own references, one lookup less each
        self._write: Any = None
        self._tasks: Set[asyncio.Task[None]] = set()
        self._overloaded = False
        # Whether a request of this connection has passed auth: until then it is "pending",
        # lives on a short budget and can be displaced by a client that does authenticate.
        self._trusted = False
        self._nreq = 0
        self._served_fast: Optional[RouteMemo] = None
        self._bytes_pending = 0  # bytes of a request received since the last complete one
        self._started_tick = 0
        self._last_tick = 0
        self._opened_tick = 0

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self._out.transport = transport
        self._write = transport.write
        server = self._server
        self._last_tick = self._started_tick = self._opened_tick = server.tick
        if not server.admit(self):
            self._overloaded = True

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self._out.closing = True
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()
        self._out.queue.clear()
        self._server.release(self)

    def eof_received(self) -> bool:
        # The client half-closed (shutdown(SHUT_WR), as nc -N and socat do) after its
        # requests: HTTP/1.1 allows it, so answer what is still pending, then close. Returning
        # False would make asyncio close the transport before those answers are written.
        if self._out.queue:
            self._out.closing = True
            return True
        return False

    def pause_writing(self) -> None:
        self._out.pause_writing()

    def resume_writing(self) -> None:
        self._out.resume_writing()

    def data_received(self, data: bytes) -> None:
        if self._out.closing:
            return
        self._last_tick = self._server.tick
        reader = self._reader
        # Between messages: nothing buffered, and every message the parser began is complete
        # (the memo path below counts its requests on both sides).
        clean = not self._bytes_pending and reader.begun == self._nreq
        if clean and not self._queue and not self._overloaded:
            # A chunk identical to a request already parsed, checked and answered from the
            # hit path (same URL, same token, same headers) gets the same verdict: skip the
            # parser and go straight to the cache. The parser is between messages, as then.
            # (The memo is shared by all connections: one over the limit must get its 503.)
            memo = self._requests.get(data)
            if memo is not None:
                lookup = self._peek(memo.item)
                if lookup is not None:
                    self._nreq += 1
                    reader.begun += 1
                    self._write(self._memos.response(memo, lookup))
                    if not self._trusted:  # these bytes passed auth when first parsed
                        self._trust()
                    return
        before = self._nreq
        begun = reader.begun
        self._served_fast = None
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._parse_failed(exc)
            return
        if self._nreq != before:
            served = self._served_fast
            if (
                clean
                and served is not None
                and self._nreq == before + 1
                and reader.begun == begun + 1
                and len(data) <= Limits.memo_request
            ):
                # Exactly one whole request, answered from the hit path: remember its bytes.
                self._memos.remember_request(data, served)
            # What remains buffered is at most the start of the next request; its size is
            # unknown here and bounded by this chunk.
            self._bytes_pending = 0
            return
        self._count_pending(len(data))

    def _parse_failed(self, exc: Exception) -> None:
        """Parsing stopped: an upgrade, our own Stop (the connection is closing), a bug in a
        callback, or bytes that are not HTTP/1.1."""
        out = self._out
        if isinstance(exc, httptools.HttpParserUpgrade):
            # Requests up to the upgrade were answered; the protocol switch is not supported.
            out.finish()
        elif isinstance(exc, httptools.HttpParserCallbackError):
            if not out.closing:  # not our own Stop: a bug in a callback
                log.error("internal error while parsing a request", exc_info=exc.__context__)
                out.send(render_error(500, "InternalError", GENERIC_500, connection=CLOSE), True)
        else:
            message = f"the request is not valid HTTP/1.1 ({exc}); the connection is closed"
            out.send(render_error(400, "MalformedRequest", message, connection=CLOSE), True)

    def _count_pending(self, size: int) -> None:
        """Bound the bytes of a request that is not complete yet."""
        if self._bytes_pending == 0:
            self._started_tick = self._last_tick
        self._bytes_pending += size
        if self._bytes_pending > Limits.request:
            message = (
                f"the request is over {Limits.request} bytes before its end; send a request "
                f"line under {Limits.url} bytes and headers under {Limits.headers_total} bytes"
            )
            self._out.send(
                render_error(431, "RequestHeaderFieldsTooLarge", message, connection=CLOSE), True
            )

    # -- a whole request: the hit path, then the slow path -------------------------------------

    def on_message_complete(self) -> None:
        self._nreq += 1
        reader = self._reader
        url = reader.url
        token = reader.token
        xff = reader.xff
        problem = reader.problem
        parser = self._parser
        method = parser.get_method()
        host_ok = reader.host or parser.get_http_version() != "1.1"
        body = reader.body
        reader.reset()
        keep = parser.should_keep_alive()
        overloaded = self._overloaded
        if overloaded and problem is None and not xff and self._gate.authentic(token):
            # Over the limit, but it authenticates: it takes the slot of the oldest connection
            # that never did, if there is one (the token holder must always be served).
            overloaded = self._overloaded = not self._server.make_room(self)
        refusal = self._refusal(method, token, host_ok, xff, body, problem, overloaded)
        if refusal is None and keep and method == _GET:
            memo = self._routes.get(url)
            if memo is not None:
                lookup = self._peek(memo.item)
                if lookup is not None:
                    data = self._memos.response(memo, lookup)
                    if self._queue:
                        self._out.send(data, False)
                    else:
                        self._write(data)
                    self._served_fast = memo
                    if not self._trusted:
                        self._trust()
                    return
        try:
            self._slow(url, method, keep, refusal)
        except Stop:
            raise
        except Exception:
            log.exception("internal error while answering a request")
            conn = KEEP_ALIVE if keep else CLOSE
            self._respond(
                render_error(500, "InternalError", GENERIC_500, connection=conn), not keep
            )

    def _slow(self, url: bytes, method: bytes, keep: bool, refusal: Optional[Refusal]) -> None:
        """Every request the hit path did not answer: refusals, operations, compat, misses."""
        head = method == _HEAD
        if refusal is not None:
            if refusal.authentic and not self._trusted:
                self._trust()
            close = refusal.close or not keep
            conn = CLOSE if close else KEEP_ALIVE
            error = render_error(
                refusal.status, refusal.code, refusal.message, connection=conn, head=head
            )
            self._respond(error, close)
            return
        if not self._trusted:
            self._trust()
        if method in _ROUTE_METHODS:
            memo = self._routes.get(url)
            if memo is not None:
                self._serve_item(memo, head, keep)
                return
        try:
            path, params = parse_target(url)
        except BadRequestError as exc:
            self._error(exc, head, keep)
            return
        if path.startswith("/-/"):
            self._operation(path, params, method, head, keep)
        elif path in self._server.compat:
            if method not in _ROUTE_METHODS:
                self._not_allowed(method, path, head, keep)
                return
            conn = KEEP_ALIVE if keep else CLOSE
            compat = compat_later(self._app, self._server.compat, path, params, head, conn)
            self._defer(compat, keep)
        else:
            self._route(path[1:], params, url, method, head, keep)

    def _route(
        self, route: str, params: Dict[str, str], url: bytes, method: bytes, head: bool, keep: bool
    ) -> None:
        """A provider's route, ``/<route>?name=...``, not memoised yet."""
        router = self._app.router
        try:
            if method not in _ROUTE_METHODS:
                router.provider(route)  # an unknown route is a 404 whatever the method
                self._not_allowed(method, f"/{route}", head, keep)
                return
            provider, item = router.resolve(route, params)
        except RouteNotFoundError as exc:
            paths = ", ".join(self._server.compat.paths) or "(none installed)"
            self._error(RouteNotFoundError(f"{exc}; AWS-compatible paths: {paths}"), head, keep)
            return
        except CachelayerError as exc:
            self._error(exc, head, keep, f"resolving route {route!r}")
            return
        memo = RouteMemo(provider, item, url)
        self._memos.add(memo)
        self._serve_item(memo, head, keep)

    def _serve_item(self, memo: RouteMemo, head: bool, keep: bool) -> None:
        conn = KEEP_ALIVE if keep else CLOSE
        lookup = self._peek(memo.item)
        if lookup is not None:
            self._respond(render_lookup(lookup, conn, head), not keep)
            return
        self._defer(value_later(self._app, memo.provider, memo.item, head, conn), keep)

    def _operation(
        self, path: str, params: Dict[str, str], method: bytes, head: bool, keep: bool
    ) -> None:
        """One of the server's own ``/-/`` operations, from the table of handlers."""
        operation = OPERATIONS.get(path)
        if operation is None:
            self._error(unknown_operation(path), head, keep)
            return
        if method not in operation.methods:
            message = f"{path} answers {operation.verb} only"
            self._reply(
                405, {"error": "MethodNotAllowed", "message": message}, head, keep, operation.allow
            )
            return
        try:
            answer = operation.handler(self._app, params)
        except CachelayerError as exc:
            self._error(exc, head, keep, f"answering {path}")
            return
        if isinstance(answer, tuple):
            self._reply(*answer, head, keep)
            return
        self._defer(operation_later(answer, path, head, KEEP_ALIVE if keep else CLOSE), keep)

    # -- answers ------------------------------------------------------------------------

    def _reply(self, status: int, document: Any, head: bool, keep: bool, extra: Any = ()) -> None:
        conn = KEEP_ALIVE if keep else CLOSE
        self._respond(render_answer(status, document, head, conn, extra), not keep)

    def _error(self, exc: CachelayerError, head: bool, keep: bool, what: str = "") -> None:
        self._respond(render_failure(exc, KEEP_ALIVE if keep else CLOSE, head, what), not keep)

    def _not_allowed(self, method: bytes, path: str, head: bool, keep: bool) -> None:
        message = f"{method.decode('ascii', 'replace')} is not allowed on {path}; use GET"
        self._reply(405, {"error": "MethodNotAllowed", "message": message}, head, keep, _ALLOW_READ)

    def _defer(self, make: Awaitable[bytes], keep: bool) -> None:
        """Answer with what the coroutine ``make`` returns, in request order."""
        out = self._out
        slot = out.hold(not keep)

        async def run() -> None:
            slot.data = await make
            out.flush()

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if not keep:
            out.closing = True
            raise Stop

    # -- writing, in request order ---------------------------------------------------------

    def _respond(self, data: bytes, close: bool) -> None:
        """Answer the current request from a parser callback; stop parsing when closing."""
        self._out.send(data, close)
        if close:
            raise Stop

    def _fatal(self, status: int, code: str, message: str) -> None:
        """Answer with an error and close: the rest of the stream cannot be trusted."""
        self._respond(render_error(status, code, message, connection=CLOSE), True)

    def _released(self) -> None:
        # Done with: a lingering connection holds no slot a newcomer may need.
        self._server.release(self)

    def _trust(self) -> None:
        self._trusted = True
        self._server.trusted(self)

    @property
    def trusted(self) -> bool:
        """Whether a request of this connection has passed auth."""
        return self._trusted

    # -- timeouts, called by the server about once a second ---------------------------------

    def check_timeouts(
        self, tick: int, idle_ticks: int, request_ticks: int, pending_ticks: int
    ) -> None:
        out = self._out
        if out.closing:
            return
        if not self._trusted and tick - self._opened_tick >= pending_ticks:
            # Never authenticated within its budget, however busy: it may be holding a slot.
            out.close_now()
            return
        if out.queue:
            return  # waiting for an upstream: not idle
        if self._bytes_pending and tick - self._started_tick >= request_ticks:
            message = (
                f"the request was not complete within {request_ticks} s; the connection is closed"
            )
            out.send(render_error(408, "RequestTimeout", message, connection=CLOSE), True)
        elif tick - self._last_tick >= (request_ticks if self._overloaded else idle_ticks):
            out.close_now()

    def abort(self) -> None:
        """Close now, for server shutdown."""
        for task in self._tasks:
            task.cancel()
        self._out.close_now()
