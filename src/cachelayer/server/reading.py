"""Reading one request's head and body from httptools' callbacks, within the size limits."""

from __future__ import annotations

from typing import Callable, Dict, Optional

from cachelayer.server.checks import Limits, Problem

__all__ = ["RequestReader"]

# Header names the server looks at; every other header costs one dict miss.
_TOKEN, _HOST, _XFF, _LENGTH, _ENCODING = range(5)
_FIELDS: Dict[bytes, int] = {
    b"x-aws-parameters-secrets-token": _TOKEN,
    b"host": _HOST,
    b"x-forwarded-for": _XFF,
    b"content-length": _LENGTH,
    b"transfer-encoding": _ENCODING,
}

Fatal = Callable[[int, str, str], None]


class RequestReader:
    """The httptools callback target: gathers what the checks need of the current request.

    ``fatal(status, code, message)`` answers an error and closes the connection (the rest of
    the stream cannot be trusted); ``on_message_complete`` is the connection's, called by the
    parser once the request is whole. ``begun`` counts the messages the parser began.
    """

    __slots__ = (
        "begun",
        "body",
        "fatal",
        "hbytes",
        "hcount",
        "host",
        "on_message_complete",
        "problem",
        "received",
        "token",
        "url",
        "xff",
    )

    def __init__(self, fatal: Fatal, on_message_complete: Callable[[], None]) -> None:
        self.fatal = fatal
        self.on_message_complete = on_message_complete
        self.begun = 0
        self.reset()

    def reset(self) -> None:
        """Forget the request just completed."""
        self.url = b""
        self.token: Optional[bytes] = None
        self.host = False
        self.xff = False
        self.body = 0
        self.received = 0
        self.hcount = 0
        self.hbytes = 0
        self.problem: Optional[Problem] = None

    def on_message_begin(self) -> None:
        self.begun += 1

    def on_url(self, url: bytes) -> None:
        url = self.url + url if self.url else url
        self.url = url
        if len(url) > Limits.url:
            self.fatal(
                414, "URITooLong", f"the request target is over {Limits.url} bytes; shorten it"
            )

    def on_header(self, name: bytes, value: bytes) -> None:
        self.hcount += 1
        size = len(name) + len(value)
        self.hbytes += size
        if size > Limits.header:
            self.fatal(
                431,
                "RequestHeaderFieldsTooLarge",
                f"a request header is {size} bytes; the limit per header is {Limits.header}",
            )
        if self.hbytes > Limits.headers_total or self.hcount > Limits.header_count:
            self.fatal(
                431,
                "RequestHeaderFieldsTooLarge",
                f"the request headers are over {Limits.headers_total} bytes or "
                f"{Limits.header_count} fields; send fewer or smaller headers",
            )
        field = _FIELDS.get(name.lower())
        if field is None:
            return
        if field == _TOKEN:
            if self.token is not None:
                self.problem = (
                    400,
                    "BadRequest",
                    "X-Aws-Parameters-Secrets-Token is given more than once; give it once",
                )
            self.token = value
        elif field == _HOST:
            if self.host:
                self.problem = (400, "BadRequest", "the Host header is given more than once")
            self.host = True
        elif field == _XFF:
            self.xff = True
        elif field == _LENGTH:
            self._declared_length(int(value))  # llhttp has already rejected a bad one
        else:  # Transfer-Encoding: a body of unknown length follows; on_body counts it
            self.body = max(self.body, 1)

    def _declared_length(self, length: int) -> None:
        if length > Limits.body:
            self.fatal(
                413,
                "PayloadTooLarge",
                f"the request body is {length} bytes; the limit is {Limits.body} "
                "(no operation needs a body: parameters go in the query string)",
            )
        self.body = max(self.body, length)

    def on_body(self, chunk: bytes) -> None:
        # Counted as it arrives, so a chunked body is bounded as well as a declared one.
        received = self.received + len(chunk)
        self.received = received
        if received > Limits.body:
            self.fatal(413, "PayloadTooLarge", f"the request body is over {Limits.body} bytes")
        if received > self.body:
            self.body = received
