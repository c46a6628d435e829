"""One HTTP/1.1 connection: httptools parsing, limits, auth, the synchronous hit path, ordering."""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from hmac import compare_digest
from typing import TYPE_CHECKING, Any, Deque, Dict, List, Optional, Set, Tuple

import httptools

from cachelayer import __version__
from cachelayer.errors import BadRequestError, CachelayerError, RouteNotFoundError
from cachelayer.server import compat
from cachelayer.server.responses import (
    CLOSE,
    KEEP_ALIVE,
    render_error,
    render_json,
    render_raw,
    render_value,
    status_for,
)
from cachelayer.server.urls import parse_target

if TYPE_CHECKING:
    from cachelayer.server.server import Server

__all__ = ["HttpConnection", "Limits"]

log = logging.getLogger("cachelayer.server")


class Limits:
    """Request size bounds (bytes or counts); generous for a local cache, small for an attacker."""

    url = 8 * 1024
    header = 8 * 1024
    headers_total = 32 * 1024
    header_count = 100
    body = 8 * 1024
    # Backstop against httptools buffering a never-ending header line before on_header fires:
    # request line + headers + body, with room for framing. Exceeding it is always 431.
    request = 64 * 1024
    # Responses waiting for an upstream on one connection before we stop reading from it.
    pipeline = 128
    # How many distinct URLs keep their route resolution and rendered response memoised.
    route_memo = 4096
    # How many distinct whole requests (bytes) skip the parser, and the largest one kept.
    request_memo = 256
    memo_request = 2048
    # Seconds a closing connection keeps draining input after its last response.
    linger = 1.0


# Header names the server looks at; every other header costs one dict miss.
_TOKEN, _HOST, _XFF, _LENGTH, _ENCODING = range(5)
_FIELDS: Dict[bytes, int] = {
    b"x-aws-parameters-secrets-token": _TOKEN,
    b"host": _HOST,
    b"x-forwarded-for": _XFF,
    b"content-length": _LENGTH,
    b"transfer-encoding": _ENCODING,
}

_GET = b"GET"
_HEAD = b"HEAD"
_POST = b"POST"
_ROUTE_METHODS = (_GET, _HEAD)
_ALLOW_READ = ((b"Allow", b"GET, HEAD"),)
_ALLOW_POST = ((b"Allow", b"POST"),)
_GENERIC_500 = "internal error while answering this request; the extension's log has the details"

# A memo slot: [provider, item, value, age, remaining, rendered keep-alive GET response,
# bytes charged to the cache for it (see Server.charge_memo)].
Memo = List[Any]
# A response slot in a connection's queue: [bytes or None while pending, close after].
Slot = List[Any]


def _memo_response(memo: Memo, lookup: Any, server: Server) -> bytes:
    """The memo's keep-alive GET response for ``lookup``, re-rendered only when the value or
    its whole-second Age / max-age changed since the last hit."""
    value = lookup.value
    age = int(lookup.age)
    remaining = int(lookup.remaining)
    if memo[2] is not value or memo[3] != age or memo[4] != remaining:
        size = len(memo[5])
        data = render_value(value.body, value.content_type, lookup.state, age, remaining)
        memo[5] = data
        memo[2] = value
        memo[3] = age
        memo[4] = remaining
        if len(data) != size:
            server.charge_memo(memo)  # may forget this very memo when over the budget
        return data
    rendered: bytes = memo[5]
    return rendered


def _render_lookup(lookup: Any, conn: bytes, head: bool) -> bytes:
    value = lookup.value
    return render_value(
        value.body,
        value.content_type,
        lookup.state,
        int(lookup.age),
        int(lookup.remaining),
        connection=conn,
        head=head,
    )


def _render_failure(exc: CachelayerError, conn: bytes, head: bool, what: str) -> bytes:
    """The JSON error for ``exc``; a 500 is logged whole and shown generically (its text may
    come from a bug, not from a message written for the client). A 503 (throttled upstream)
    says in ``Retry-After`` when the cache will ask upstream again."""
    status, code = status_for(exc)
    if status == 500:
        log.error("error %s", what, exc_info=exc)
        return render_error(status, code, _GENERIC_500, connection=conn, head=head)
    extra: Tuple[Tuple[bytes, bytes], ...] = ()
    retry_after = getattr(exc, "retry_after", None)
    if status == 503 and retry_after is not None:
        extra = ((b"Retry-After", b"%d" % max(1, math.ceil(retry_after))),)
    return render_error(status, code, str(exc), connection=conn, head=head, extra=extra)


class _Stop(Exception):
    """Raised from a parser callback to stop parsing: the connection is closing."""


class HttpConnection(asyncio.Protocol):
    """Serves one client connection. Fresh hits are answered inside ``on_message_complete``
    without creating a coroutine; misses run as tasks and responses leave in request order."""

    __slots__ = (
        "_app",
        "_auth_fast",
        "_begun",
        "_body",
        "_bytes_pending",
        "_closing",
        "_expected",
        "_hbytes",
        "_hcount",
        "_host",
        "_last_tick",
        "_nreq",
        "_opened_tick",
        "_overloaded",
        "_parser",
        "_paused_pipeline",
        "_paused_writing",
        "_peek",
        "_problem",
        "_queue",
        "_received",
        "_requests",
        "_routes",
        "_served_fast",
        "_server",
        "_started_tick",
        "_tasks",
        "_token",
        "_transport",
        "_trusted",
        "_url",
        "_xff",
    )

    def __init__(self, server: Server) -> None:
        self._server = server
        self._app = server.app
        self._routes: Dict[bytes, Memo] = server.routes
        self._requests: Dict[bytes, Memo] = server.requests
        self._peek = server.app.cache.peek
        self._expected: Optional[bytes] = server.expected_token
        # The hit path may skip the slow checks only when auth can succeed at all.
        self._auth_fast = not server.auth_required or self._expected is not None
        self._parser = httptools.HttpRequestParser(self)
        self._transport: Any = None
        self._queue: Deque[Slot] = deque()
        self._tasks: Set[asyncio.Task[None]] = set()
        self._closing = False
        self._overloaded = False
        # Whether a request of this connection has passed auth: until then it is "pending",
        # lives on a short budget and can be displaced by a client that does authenticate.
        self._trusted = False
        self._paused_pipeline = False
        self._paused_writing = False
        self._nreq = 0
        self._begun = 0
        self._served_fast: Optional[Memo] = None
        self._bytes_pending = 0  # bytes of a request received since the last complete one
        self._started_tick = 0
        self._last_tick = 0
        self._opened_tick = 0
        self._reset_request()

    def _reset_request(self) -> None:
        self._url = b""
        self._token: Optional[bytes] = None
        self._host = False
        self._xff = False
        self._body = 0
        self._received = 0
        self._hcount = 0
        self._hbytes = 0
        self._problem: Optional[Tuple[int, str, str]] = None

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self._transport = transport
        server = self._server
        self._last_tick = self._started_tick = self._opened_tick = server.tick
        if not server.admit(self):
            self._overloaded = True

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self._closing = True
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()
        self._queue.clear()
        self._server.release(self)

    def eof_received(self) -> bool:
        # The client half-closed (shutdown(SHUT_WR), as nc -N and socat do) after its
        # requests: HTTP/1.1 allows it, so answer what is still pending, then close. Returning
        # False would make asyncio close the transport before those answers are written.
        if self._queue:
            self._closing = True
            return True
        return False

    def pause_writing(self) -> None:
        # The client is not reading its responses: stop reading its requests.
        self._paused_writing = True
        self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._paused_writing = False
        if not self._paused_pipeline and not self._closing:
            self._transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        self._last_tick = self._server.tick
        # Between messages: nothing buffered, and every message the parser began is complete
        # (the memo path below counts its requests on both sides).
        clean = not self._bytes_pending and self._begun == self._nreq
        if clean and not self._queue and not self._overloaded:
            # A chunk identical to a request already parsed, checked and answered from the
            # hit path (same URL, same token, same headers) gets the same verdict: skip the
            # parser and go straight to the cache. The parser is between messages, as then.
            # (The memo is shared by all connections: one over the limit must get its 503.)
            memo = self._requests.get(data)
            if memo is not None:
                lookup = self._peek(memo[1])
                if lookup is not None:
                    self._nreq += 1
                    self._begun += 1
                    self._transport.write(_memo_response(memo, lookup, self._server))
                    if not self._trusted:  # these bytes passed auth when first parsed
                        self._trust()
                    return
        before = self._nreq
        begun = self._begun
        self._served_fast = None
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # Requests up to the upgrade were answered; the protocol switch is not supported.
            self._finish()
            return
        except httptools.HttpParserCallbackError as exc:
            if not self._closing:  # not our own _Stop: a bug in a callback
                log.error("internal error while parsing a request", exc_info=exc.__context__)
                self._send(render_error(500, "InternalError", _GENERIC_500, connection=CLOSE), True)
            return
        except httptools.HttpParserError as exc:
            self._send(
                render_error(
                    400,
                    "MalformedRequest",
                    f"the request is not valid HTTP/1.1 ({exc}); the connection is closed",
                    connection=CLOSE,
                ),
                True,
            )
            return
        if self._nreq != before:
            if (
                clean
                and self._served_fast is not None
                and self._nreq == before + 1
                and self._begun == begun + 1
                and len(data) <= Limits.memo_request
            ):
                # Exactly one whole request, answered from the hit path: remember its bytes.
                requests = self._requests
                if len(requests) >= Limits.request_memo:
                    del requests[next(iter(requests))]
                requests[data] = self._served_fast
            # What remains buffered is at most the start of the next request; its size is
            # unknown here and bounded by this chunk.
            self._bytes_pending = 0
            return
        if self._bytes_pending == 0:
            self._started_tick = self._last_tick
        self._bytes_pending += len(data)
        if self._bytes_pending > Limits.request:
            self._send(
                render_error(
                    431,
                    "RequestHeaderFieldsTooLarge",
                    f"the request is over {Limits.request} bytes before its end; send a request "
                    f"line under {Limits.url} bytes and headers under {Limits.headers_total} bytes",
                    connection=CLOSE,
                ),
                True,
            )

    # -- httptools callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._begun += 1

    def on_url(self, url: bytes) -> None:
        url = self._url + url if self._url else url
        self._url = url
        if len(url) > Limits.url:
            self._fatal(
                414, "URITooLong", f"the request target is over {Limits.url} bytes; shorten it"
            )

    def on_header(self, name: bytes, value: bytes) -> None:
        self._hcount += 1
        size = len(name) + len(value)
        self._hbytes += size
        if size > Limits.header:
            self._fatal(
                431,
                "RequestHeaderFieldsTooLarge",
                f"a request header is {size} bytes; the limit per header is {Limits.header}",
            )
        if self._hbytes > Limits.headers_total or self._hcount > Limits.header_count:
            self._fatal(
                431,
                "RequestHeaderFieldsTooLarge",
                f"the request headers are over {Limits.headers_total} bytes or "
                f"{Limits.header_count} fields; send fewer or smaller headers",
            )
        field = _FIELDS.get(name.lower())
        if field is None:
            return
        if field == _TOKEN:
            if self._token is not None:
                self._problem = (
                    400,
                    "BadRequest",
                    "X-Aws-Parameters-Secrets-Token is given more than once; give it once",
                )
            self._token = value
        elif field == _HOST:
            if self._host:
                self._problem = (400, "BadRequest", "the Host header is given more than once")
            self._host = True
        elif field == _XFF:
            self._xff = True
        elif field == _LENGTH:
            # llhttp has already rejected a non-numeric or conflicting Content-Length.
            length = int(value)
            if length > Limits.body:
                self._fatal(
                    413,
                    "PayloadTooLarge",
                    f"the request body is {length} bytes; the limit is {Limits.body} "
                    "(no operation needs a body: parameters go in the query string)",
                )
            self._body = max(self._body, length)
        else:  # Transfer-Encoding: a body of unknown length follows; on_body counts it
            self._body = max(self._body, 1)

    def on_body(self, chunk: bytes) -> None:
        # Counted as it arrives, so a chunked body is bounded as well as a declared one.
        received = self._received + len(chunk)
        self._received = received
        if received > Limits.body:
            self._fatal(413, "PayloadTooLarge", f"the request body is over {Limits.body} bytes")
        if received > self._body:
            self._body = received

    def on_message_complete(self) -> None:
        self._nreq += 1
        url = self._url
        token = self._token
        host = self._host
        xff = self._xff
        body = self._body
        problem = self._problem
        self._reset_request()
        parser = self._parser
        keep = parser.should_keep_alive()
        method = parser.get_method()
        if (
            keep
            and method == _GET
            and host
            and not xff
            and not body
            and problem is None
            and not self._overloaded
            and self._auth_fast
            and (
                self._expected is None
                or (token is not None and compare_digest(token, self._expected))
            )
        ):
            memo = self._routes.get(url)
            if memo is not None:
                lookup = self._peek(memo[1])
                if lookup is not None:
                    data = _memo_response(memo, lookup, self._server)
                    if self._queue:
                        self._queue.append([data, False])
                        self._check_pipeline()
                    else:
                        self._transport.write(data)
                    self._served_fast = memo
                    if not self._trusted:
                        self._trust()
                    return
        try:
            self._slow(url, method, keep, token, host, xff, body, problem)
        except _Stop:
            raise
        except Exception:
            log.exception("internal error while answering a request")
            self._respond(
                render_error(
                    500, "InternalError", _GENERIC_500, connection=KEEP_ALIVE if keep else CLOSE
                ),
                not keep,
            )

    # -- the slow path: every check, operations, misses -------------------------------------

    def _slow(
        self,
        url: bytes,
        method: bytes,
        keep: bool,
        token: Optional[bytes],
        host: bool,
        xff: bool,
        body: int,
        problem: Optional[Tuple[int, str, str]],
    ) -> None:
        conn = KEEP_ALIVE if keep else CLOSE
        head = method == _HEAD

        def error(
            status: int,
            code: str,
            message: str,
            extra: Tuple[Tuple[bytes, bytes], ...] = (),
            close: bool = not keep,
        ) -> None:
            self._respond(
                render_error(
                    status,
                    code,
                    message,
                    connection=CLOSE if close else conn,
                    head=head,
                    extra=extra,
                ),
                close,
            )

        server = self._server
        expected = self._expected
        authentic = not server.auth_required or (
            expected is not None and token is not None and compare_digest(token, expected)
        )
        if self._overloaded and authentic and problem is None and not xff:
            # Over the limit, but it authenticates: it takes the slot of the oldest connection
            # that never did, if there is one (the token holder must always be served).
            self._overloaded = not server.make_room(self)
        if self._overloaded:
            self._respond(
                render_error(
                    503,
                    "ServiceUnavailable",
                    f"too many connections (limit {self._server.max_connections}); this one is "
                    "closed: retry, and reuse one keep-alive connection per process",
                    connection=CLOSE,
                    head=head,
                ),
                True,
            )
            return
        if problem is not None:
            error(*problem)
            return
        if not host and self._parser.get_http_version() == "1.1":
            error(400, "BadRequest", "HTTP/1.1 requests must carry a Host header")
            return
        # A request that fails auth closes its connection: it must not keep a slot that the
        # function holding the token may need.
        if xff:
            error(
                403,
                "ForwardedRequest",
                "requests carrying X-Forwarded-For are refused: the cache answers local callers "
                "only, never requests relayed through a proxy; the connection is closed",
                close=True,
            )
            return
        if not authentic:
            if expected is None:
                error(
                    401,
                    "MissingToken",
                    "auth is 'token' but AWS_SESSION_TOKEN is not set in the extension's "
                    "environment, so no request can be authenticated; set AWS_SESSION_TOKEN or "
                    "set CACHE_EXTENSION_AUTH=none",
                    close=True,
                )
                return
            if token is None:
                error(
                    401,
                    "MissingToken",
                    "missing X-Aws-Parameters-Secrets-Token header; send the value of the "
                    "AWS_SESSION_TOKEN environment variable in it (the connection is closed)",
                    close=True,
                )
                return
            error(
                403,
                "InvalidToken",
                "X-Aws-Parameters-Secrets-Token does not match this environment's "
                "AWS_SESSION_TOKEN; the connection is closed",
                close=True,
            )
            return
        if not self._trusted:
            self._trust()
        if body and method != _POST:
            error(
                400,
                "BadRequest",
                f"{method.decode('ascii', 'replace')} requests must not carry a body",
            )
            return
        if method in _ROUTE_METHODS:
            memo = self._routes.get(url)
            if memo is not None:
                self._serve_item(memo, head, keep)
                return
        try:
            path, params = parse_target(url)
        except BadRequestError as exc:
            error(400, exc.code, str(exc))
            return
        if path.startswith("/-/"):
            self._operation(path, params, method, head, keep)
            return
        if path in compat.COMPAT_PATHS:
            if method not in _ROUTE_METHODS:
                error(
                    405,
                    "MethodNotAllowed",
                    f"{method.decode('ascii', 'replace')} is not allowed on {path}; use GET",
                    _ALLOW_READ,
                )
                return
            self._defer(self._compat(path, params, head, keep), keep)
            return
        route = path[1:]
        router = self._app.router
        if method not in _ROUTE_METHODS:
            try:
                router.provider(route)
            except RouteNotFoundError as exc:
                error(404, exc.code, str(exc))
                return
            error(
                405,
                "MethodNotAllowed",
                f"{method.decode('ascii', 'replace')} is not allowed on /{route}; use GET",
                _ALLOW_READ,
            )
            return
        try:
            provider, item = router.resolve(route, params)
        except CachelayerError as exc:
            self._respond(_render_failure(exc, conn, head, f"resolving route {route!r}"), not keep)
            return
        memo = [provider, item, None, -1, -1, b"", 0]
        self._server.add_memo(url, memo)
        self._serve_item(memo, head, keep)

    def _serve_item(self, memo: Memo, head: bool, keep: bool) -> None:
        conn = KEEP_ALIVE if keep else CLOSE
        lookup = self._peek(memo[1])
        if lookup is not None:
            self._respond(_render_lookup(lookup, conn, head), not keep)
            return
        self._defer(self._fetch(memo[0], memo[1], head, conn), keep)

    def _defer(self, make: Any, keep: bool) -> None:
        """Answer with what the coroutine ``make`` returns, in request order."""
        slot: Slot = [None, not keep]
        self._queue.append(slot)

        async def run() -> None:
            slot[0] = await make
            self._flush()

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._check_pipeline()
        if not keep:
            self._closing = True
            raise _Stop

    async def _compat(self, path: str, params: Dict[str, str], head: bool, keep: bool) -> bytes:
        conn = KEEP_ALIVE if keep else CLOSE
        try:
            status, headers, body = await compat.handle(self._app, path, params)
        except CachelayerError as exc:
            return _render_failure(exc, conn, head, f"answering {path}")
        except Exception:
            log.exception("internal error answering %s", path)
            return render_error(500, "InternalError", _GENERIC_500, connection=conn, head=head)
        return render_raw(status, headers, body, connection=conn, head=head)

    async def _fetch(self, provider: Any, item: Any, head: bool, conn: bytes) -> bytes:
        try:
            # Rendering inside the try too: a bad content type must become a 500, not a task
            # that dies and leaves its slot (and every later response) waiting.
            return _render_lookup(await self._app.cache.get(provider, item), conn, head)
        except CachelayerError as exc:
            return _render_failure(exc, conn, head, f"reading a /{item.route} item from the cache")
        except Exception:
            log.exception("internal error reading a /%s item", item.route)
            return render_error(500, "InternalError", _GENERIC_500, connection=conn, head=head)

    def _operation(
        self, path: str, params: Dict[str, str], method: bytes, head: bool, keep: bool
    ) -> None:
        conn = KEEP_ALIVE if keep else CLOSE
        app = self._app

        def reply(status: int, doc: Any, extra: Tuple[Tuple[bytes, bytes], ...] = ()) -> None:
            self._respond(
                render_json(status, doc, connection=conn, head=head, extra=extra), not keep
            )

        def error(
            status: int, code: str, message: str, extra: Tuple[Tuple[bytes, bytes], ...] = ()
        ) -> None:
            reply(status, {"error": code, "message": message}, extra)

        if path == "/-/openapi.json":
            if method not in _ROUTE_METHODS:
                error(405, "MethodNotAllowed", f"{path} answers GET only", _ALLOW_READ)
                return
            self._respond(
                render_raw(
                    200,
                    [("Content-Type", "application/json")],
                    compat.openapi_bytes(),
                    connection=conn,
                    head=head,
                ),
                not keep,
            )
            return
        if path in ("/-/health", "/-/stats"):
            if method not in _ROUTE_METHODS:
                error(405, "MethodNotAllowed", f"{path} answers GET only", _ALLOW_READ)
                return
            if params:
                error(
                    400,
                    "BadRequest",
                    f"{path} takes no query parameters; got {', '.join(sorted(params))}",
                )
                return
            if path == "/-/health":
                reply(
                    200,
                    {
                        "status": "ok",
                        "version": __version__,
                        "providers": list(app.registry.names()),
                    },
                )
            else:
                reply(200, app.stats())
            return
        if path == "/-/invalidate":
            if method != _POST:
                error(405, "MethodNotAllowed", "/-/invalidate answers POST only", _ALLOW_POST)
                return
            unknown = sorted(set(params) - {"route", "name"})
            if unknown:
                error(
                    400,
                    "BadRequest",
                    f"/-/invalidate takes route and name; unknown parameter {unknown[0]!r}",
                )
                return
            route = params.get("route")
            if route is not None and route.startswith("/"):
                route = route[1:]  # "/parameters" as the URL writes it, or "parameters"
            name = params.get("name")
            if route == "" or name == "":
                error(
                    400,
                    "BadRequest",
                    "route and name must not be empty; leave them out to invalidate more",
                )
                return
            if name is not None and route is None:
                error(
                    400,
                    "BadRequest",
                    "name needs a route: POST /-/invalidate?route=<route>&name=<name>",
                )
                return
            if route is not None and route not in app.router.routes:
                known = ", ".join(app.router.routes) or "(none)"
                error(
                    404,
                    "UnknownRoute",
                    f"no provider answers route {route!r}; installed routes: {known}",
                )
                return
            local = app.cache.invalidate(route, name)
            if app.cache.shared is None:
                reply(200, {"invalidated": local})
                return

            async def with_shared() -> bytes:  # the shared copies too, off the loop thread
                doc = {"invalidated": local, "shared": await app.invalidate_shared(route, name)}
                return render_json(200, doc, connection=conn, head=head)

            self._defer(with_shared(), keep)
            return
        error(
            404,
            "UnknownRoute",
            f"no operation {path}; operations are /-/health, /-/stats, /-/invalidate and "
            "/-/openapi.json",
        )

    # -- writing, in request order ---------------------------------------------------------

    def _respond(self, data: bytes, close: bool) -> None:
        """Answer the current request from a parser callback; stop parsing when closing."""
        self._send(data, close)
        if close:
            raise _Stop

    def _send(self, data: bytes, close: bool) -> None:
        if self._queue:
            self._queue.append([data, close])
            self._check_pipeline()
        elif not self._transport.is_closing():
            self._transport.write(data)
            if close:
                self._close_gracefully()
        if close:
            self._closing = True

    def _flush(self) -> None:
        queue = self._queue
        out = []
        close = False
        while queue and queue[0][0] is not None:
            data, close = queue.popleft()
            out.append(data)
            if close:
                break
        transport = self._transport
        if out and not transport.is_closing():
            transport.write(b"".join(out))
        if close:
            queue.clear()
            self._close_gracefully()
        elif self._paused_pipeline and len(queue) < Limits.pipeline // 2:
            self._paused_pipeline = False
            if not self._paused_writing and not self._closing:
                transport.resume_reading()
        elif self._closing and not queue:
            self._close_gracefully()

    def _check_pipeline(self) -> None:
        if len(self._queue) >= Limits.pipeline and not self._paused_pipeline:
            self._paused_pipeline = True
            self._transport.pause_reading()

    def _fatal(self, status: int, code: str, message: str) -> None:
        """Answer with an error and close: the rest of the stream cannot be trusted."""
        self._respond(render_error(status, code, message, connection=CLOSE), True)

    def _finish(self) -> None:
        """Close once every queued response has been written."""
        self._closing = True
        if not self._queue:
            self._close_gracefully()

    def _close_gracefully(self) -> None:
        """FIN after the queued bytes, drain what the client still sends, then close.

        Closing with unread input makes the kernel send an RST, which can destroy the error
        response still in flight (the client sees "connection reset" instead of a 431).
        """
        transport = self._transport
        if transport.is_closing():
            return
        if transport.can_write_eof():
            transport.write_eof()
            asyncio.get_running_loop().call_later(Limits.linger, transport.close)
            # Done with: a lingering connection holds no slot a newcomer may need.
            self._server.release(self)
        else:
            transport.close()

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
        if self._closing:
            return
        if not self._trusted and tick - self._opened_tick >= pending_ticks:
            # Never authenticated within its budget, however busy: it may be holding a slot.
            self._closing = True
            self._transport.close()
            return
        if self._queue:
            return  # waiting for an upstream: not idle
        if self._bytes_pending and tick - self._started_tick >= request_ticks:
            self._send(
                render_error(
                    408,
                    "RequestTimeout",
                    f"the request was not complete within {request_ticks} s; "
                    "the connection is closed",
                    connection=CLOSE,
                ),
                True,
            )
        elif tick - self._last_tick >= (request_ticks if self._overloaded else idle_ticks):
            self._closing = True
            self._transport.close()

    def abort(self) -> None:
        """Close now, for server shutdown."""
        self._closing = True
        for task in self._tasks:
            task.cancel()
        self._transport.close()
