"""A counting, fault-injecting HTTP reverse proxy on 127.0.0.1 for tests, in front of moto."""

from __future__ import annotations

import collections
import http.client
import http.server
import json
import re
import socket
import struct
import threading
import urllib.parse
import uuid
from typing import Any, Counter, Dict, List, Optional, Tuple

import attrs

from cachelayer.local.server import read_body

__all__ = ["Fault", "UpstreamProxy"]

# Headers that describe one hop, not the message; never relayed.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "expect",
        "content-length",
    }
)
_SCOPE = re.compile(r"Credential=[^/]*/[^/]*/[^/]*/([^/]+)/aws4_request")


@attrs.frozen
class Fault:
    """What to do instead of (or before) forwarding a request.

    ``kind`` is ``delay`` (wait ``seconds`` then forward), ``hold`` (wait until the proxy's
    ``release()``, at most ``seconds``, then forward; reset if not released), ``error`` (answer
    ``status`` with an AWS-shaped error ``code``/``message``, without forwarding) or ``reset``
    (close the connection with a TCP RST). Build them with the class methods.
    """

    kind: str = attrs.field(validator=attrs.validators.in_(("delay", "hold", "error", "reset")))
    seconds: float = 0.0
    status: int = 500
    code: str = "InternalServerError"
    message: str = "Injected fault"

    @classmethod
    def delay(cls, seconds: float) -> Fault:
        """Forward the request after ``seconds``."""
        return cls("delay", seconds=seconds)

    @classmethod
    def hold(cls, timeout: float = 10.0) -> Fault:
        """Keep the request until ``UpstreamProxy.release()``, then forward it; a request not
        released within ``timeout`` is reset, so a test that forgets fails instead of hanging."""
        return cls("hold", seconds=timeout)

    @classmethod
    def server_error(cls, status: int = 500, code: str = "InternalServerError") -> Fault:
        """Answer an HTTP 5xx with an AWS-shaped error body."""
        return cls("error", status=status, code=code, message="We encountered an internal error.")

    @classmethod
    def throttle(cls, code: str = "ThrottlingException") -> Fault:
        """Answer what AWS answers when it throttles: HTTP 400, ``ThrottlingException``."""
        return cls("error", status=400, code=code, message="Rate exceeded")

    @classmethod
    def aws_error(cls, code: str, status: int = 400, message: str = "Injected error") -> Fault:
        """Answer any AWS error (``AccessDeniedException``...)."""
        return cls("error", status=status, code=code, message=message)

    @classmethod
    def reset(cls) -> Fault:
        """Reset the connection (SO_LINGER 0 then close) without answering."""
        return cls("reset")


@attrs.define
class _Rule:
    fault: Fault
    service: Optional[str]
    operation: Optional[str]
    remaining: Optional[int]  # None: until cleared

    def matches(self, service: str, operation: str) -> bool:
        return (self.service is None or self.service == service) and (
            self.operation is None or self.operation == operation
        )


def _operation_of(method: str, headers: Any, path: str, body: bytes) -> Tuple[str, str]:
    """(service, operation) of a signed AWS request, from its headers, query or form body."""
    service = ""
    m = _SCOPE.search(headers.get("Authorization", ""))
    if m:
        service = m.group(1)
    target = headers.get("X-Amz-Target")
    if target:  # JSON protocols: "AmazonSSM.GetParameter", "DynamoDB_20120810.GetItem"
        return service, target.rsplit(".", 1)[-1]
    query = urllib.parse.urlsplit(path).query
    fields = urllib.parse.parse_qs(query)
    if "Action" not in fields and "x-www-form-urlencoded" in headers.get("Content-Type", ""):
        fields = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
    if "Action" in fields:  # query protocol (STS, SNS, ...)
        return service, fields["Action"][0]
    return service, f"{method} {urllib.parse.urlsplit(path).path}"


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as botocore's pooled connections expect
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet in tests
        pass

    def setup(self) -> None:
        super().setup()
        self._upstream: Optional[http.client.HTTPConnection] = None

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            if self._upstream is not None:
                self._upstream.close()

    def _handle(self) -> None:
        body = read_body(self.headers, self.rfile)
        service, operation = _operation_of(self.command, self.headers, self.path, body)
        proxy = self.server.proxy
        fault = proxy._record(service, operation)
        try:
            if fault is not None:
                if fault.kind == "reset":
                    self._reset()
                    return
                if fault.kind == "error":
                    self._answer_error(fault)
                    return
                if fault.kind == "hold":
                    released = proxy._released.wait(fault.seconds)
                    if not released or proxy._stopping.is_set():
                        self._reset()
                        return
                elif proxy._stopping.wait(fault.seconds):
                    self._reset()
                    return
            self._forward(body)
        finally:
            proxy._done(service, operation)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _handle

    def _reset(self) -> None:
        # SO_LINGER on with a zero timeout turns close() into a TCP RST.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True

    def _answer_error(self, fault: Fault) -> None:
        request_id = str(uuid.uuid4())
        if self.headers.get("X-Amz-Target"):
            body = json.dumps({"__type": fault.code, "message": fault.message}).encode()
            ctype = self.headers.get("Content-Type") or "application/x-amz-json-1.1"
        else:
            body = (
                "<ErrorResponse><Error><Type>Sender</Type>"
                f"<Code>{fault.code}</Code><Message>{fault.message}</Message></Error>"
                f"<RequestId>{request_id}</RequestId></ErrorResponse>"
            ).encode()
            ctype = "text/xml"
        self.send_response(fault.status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-amzn-RequestId", request_id)
        self.send_header("x-amzn-ErrorType", fault.code)
        self.end_headers()
        self.wfile.write(body)

    def _forward(self, body: bytes) -> None:
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        for attempt in (1, 2):
            if self._upstream is None:
                host, port = self.server.proxy.upstream
                self._upstream = http.client.HTTPConnection(host, port, timeout=60)
            try:
                self._upstream.request(self.command, self.path, body=body, headers=headers)
                response = self._upstream.getresponse()
                payload = response.read()
                break
            except (OSError, http.client.HTTPException):
                # A kept-alive upstream connection may have been closed by moto: retry once.
                self._upstream.close()
                self._upstream = None
                if attempt == 2:
                    self.send_error(502, "upstream unreachable")
                    return
        self.send_response_only(response.status, response.reason)
        for k, v in response.getheaders():
            if k.lower() not in _HOP_BY_HOP and k.lower() not in ("date", "server"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    proxy: UpstreamProxy

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (read timeout) leaves a broken pipe behind: expected in tests.
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


@attrs.define
class UpstreamProxy:
    """A reverse proxy on 127.0.0.1 (free port) in front of ``upstream`` (e.g. moto).

    Counts requests per (service, operation) and applies fault rules. Use as a context
    manager; point boto3 at ``proxy.url`` (``AWS_ENDPOINT_URL``). Every request that reaches the
    proxy is counted, faulted or not (a retried call counts once per attempt).
    """

    upstream_url: str
    _server: Optional[_Server] = attrs.field(init=False, default=None)
    _thread: Optional[threading.Thread] = attrs.field(init=False, default=None)
    _lock: threading.Lock = attrs.field(init=False, factory=threading.Lock)
    _rules: List[_Rule] = attrs.field(init=False, factory=list)
    _calls: Counter[Tuple[str, str]] = attrs.field(init=False, factory=collections.Counter)
    _stopping: threading.Event = attrs.field(init=False, factory=threading.Event)
    _released: threading.Event = attrs.field(init=False, factory=threading.Event)
    _active: Counter[Tuple[str, str]] = attrs.field(init=False, factory=collections.Counter)
    _moved: threading.Condition = attrs.field(init=False)

    @_moved.default
    def _condition(self) -> threading.Condition:
        return threading.Condition(self._lock)

    @property
    def upstream(self) -> Tuple[str, int]:
        parts = urllib.parse.urlsplit(self.upstream_url)
        return parts.hostname or "127.0.0.1", parts.port or 80

    @property
    def url(self) -> str:
        """The proxy's endpoint URL."""
        if self._server is None:
            raise RuntimeError("the proxy is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> UpstreamProxy:
        """Bind a free loopback port and serve in a background thread."""
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.proxy = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, wake delayed requests, and close the listening socket."""
        self._stopping.set()
        self._released.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> UpstreamProxy:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def inject(
        self,
        fault: Fault,
        *,
        operation: Optional[str] = None,
        service: Optional[str] = None,
        times: Optional[int] = None,
    ) -> None:
        """Apply ``fault`` to the next ``times`` matching requests (None: until ``clear()``).

        ``operation`` (``GetParameter``) and ``service`` (``ssm``) narrow the match; rules are
        tried in the order they were added and the first match applies.
        """
        if times is not None and times < 1:
            raise ValueError(f"times must be at least 1 (or None for 'until cleared'), got {times}")
        with self._lock:
            if fault.kind == "hold":
                self._released.clear()
            self._rules.append(_Rule(fault, service, operation, times))

    def release(self) -> None:
        """Let every held request (``Fault.hold``) go on, and those held later too until the
        next hold is injected."""
        self._released.set()

    def clear(self) -> None:
        """Remove every fault rule."""
        with self._lock:
            self._rules.clear()

    def _record(self, service: str, operation: str) -> Optional[Fault]:
        with self._lock:
            self._calls[(service, operation)] += 1
            self._active[(service, operation)] += 1
            self._moved.notify_all()
            for rule in self._rules:
                if rule.matches(service, operation):
                    if rule.remaining is not None:
                        rule.remaining -= 1
                        if rule.remaining == 0:
                            self._rules.remove(rule)
                    return rule.fault
        return None

    def _done(self, service: str, operation: str) -> None:
        with self._lock:
            self._active[(service, operation)] -= 1
            self._moved.notify_all()

    @staticmethod
    def _sum(
        counts: Counter[Tuple[str, str]], operation: Optional[str], service: Optional[str]
    ) -> int:
        return sum(
            n
            for (s, o), n in counts.items()
            if (operation is None or o == operation) and (service is None or s == service)
        )

    def in_flight(self, operation: Optional[str] = None, service: Optional[str] = None) -> int:
        """Requests for ``operation`` (and ``service``) received and not yet answered."""
        with self._lock:
            return self._sum(self._active, operation, service)

    def wait_in_flight(
        self,
        count: int,
        operation: Optional[str] = None,
        service: Optional[str] = None,
        *,
        timeout: float = 10.0,
    ) -> int:
        """Block until ``count`` requests for ``operation`` (and ``service``) are in flight
        (held, delayed or being forwarded); their number then. Raises ``TimeoutError``."""
        return self._wait(self._active, "in flight", count, operation, service, timeout)

    def wait_for(
        self,
        count: int,
        operation: Optional[str] = None,
        service: Optional[str] = None,
        *,
        timeout: float = 10.0,
    ) -> int:
        """Block until ``count`` requests for ``operation`` (and ``service``) have been seen
        (as ``count`` counts them); their number then. Raises ``TimeoutError`` (with what was
        seen) if that does not happen within ``timeout``."""
        return self._wait(self._calls, "seen", count, operation, service, timeout)

    def _wait(
        self,
        counts: Counter[Tuple[str, str]],
        what: str,
        count: int,
        operation: Optional[str],
        service: Optional[str],
        timeout: float,
    ) -> int:
        with self._moved:
            if not self._moved.wait_for(
                lambda: self._sum(counts, operation, service) >= count, timeout
            ):
                raise TimeoutError(
                    f"{self._sum(counts, operation, service)} of the {count} "
                    f"{operation or 'any'} requests waited for were {what} within {timeout:g}s"
                )
            return self._sum(counts, operation, service)

    @property
    def calls(self) -> Dict[Tuple[str, str], int]:
        """A snapshot of the request counts per (service, operation)."""
        with self._lock:
            return dict(self._calls)

    def count(self, operation: Optional[str] = None, service: Optional[str] = None) -> int:
        """Requests seen for ``operation`` (and ``service``); all requests when both are None."""
        with self._lock:
            return self._sum(self._calls, operation, service)

    def reset_counts(self) -> None:
        """Forget the counts."""
        with self._lock:
            self._calls.clear()
