"""Rendering HTTP/1.1 responses to bytes: values, JSON documents and JSON errors."""

from __future__ import annotations

import json
import logging
import math
from typing import Any, Dict, Iterable, Tuple

from cachelayer.errors import CachelayerError
from cachelayer.server.application import CacheLookup

__all__ = [
    "GENERIC_500",
    "STATUS_FOR_CODE",
    "render_error",
    "render_failure",
    "render_json",
    "render_lookup",
    "render_raw",
    "render_value",
    "status_for",
]

log = logging.getLogger("cachelayer.server")

GENERIC_500 = "internal error while answering this request; the extension's log has the details"

REASONS: Dict[int, bytes] = {
    200: b"OK",
    400: b"Bad Request",
    401: b"Unauthorized",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    413: b"Payload Too Large",
    414: b"URI Too Long",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
}

# The HTTP status for each error code of the CachelayerError tree. A subclass with a code of
# its own that is not listed here takes the status of the nearest listed ancestor.
STATUS_FOR_CODE: Dict[str, int] = {
    "BadRequest": 400,
    "NotFound": 404,
    "UnknownRoute": 404,
    "UpstreamError": 502,
    "UpstreamUnavailable": 502,
    "Throttled": 503,
    "UpstreamTimeout": 504,
    "ConfigError": 500,
    "PluginError": 500,
    "InternalError": 500,
}

KEEP_ALIVE = b"Connection: keep-alive\r\n"
CLOSE = b"Connection: close\r\n"


def status_for(exc: CachelayerError) -> Tuple[int, str]:
    """The status and error code to answer ``exc`` with."""
    for cls in type(exc).__mro__:
        code = cls.__dict__.get("code")
        if isinstance(code, str) and code in STATUS_FOR_CODE:
            return STATUS_FOR_CODE[code], type(exc).code
    return 500, type(exc).code


_content_types: Dict[str, bytes] = {}


def header_value(text: str) -> bytes:
    """``text`` as a header value; refuses CR/LF/NUL so a provider cannot inject headers."""
    cached = _content_types.get(text)
    if cached is None:
        if any(c in text for c in "\r\n\0"):
            raise ValueError(f"header value {text!r} contains a control character")
        cached = text.encode("latin-1")
        if len(_content_types) < 256:
            _content_types[text] = cached
    return cached


def render_value(
    body: bytes,
    content_type: str,
    state: str,
    age: int,
    remaining: int,
    *,
    connection: bytes = KEEP_ALIVE,
    head: bool = False,
) -> bytes:
    """A 200 carrying a cached value, with X-Cache, Age and Cache-Control."""
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\nX-Cache: %s\r\n"
        b"Age: %d\r\nCache-Control: max-age=%d\r\n%s\r\n%s"
        % (
            header_value(content_type),
            len(body),
            state.encode("ascii"),
            age if age > 0 else 0,
            remaining if remaining > 0 else 0,
            connection,
            b"" if head else body,
        )
    )


def render_json(
    status: int,
    document: Any,
    *,
    connection: bytes = KEEP_ALIVE,
    head: bool = False,
    extra: Iterable[Tuple[bytes, bytes]] = (),
) -> bytes:
    """A JSON document with ``status``; ``extra`` adds headers (e.g. ``Allow``)."""
    body = json.dumps(document, separators=(",", ":"), sort_keys=True).encode("utf-8")
    headers = b"".join(b"%s: %s\r\n" % (k, v) for k, v in extra)
    return (
        b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
        b"Cache-Control: no-store\r\n%s%s\r\n%s"
        % (
            status,
            REASONS.get(status, b"Unknown"),
            len(body),
            headers,
            connection,
            b"" if head else body,
        )
    )


def render_error(
    status: int,
    code: str,
    message: str,
    *,
    connection: bytes = KEEP_ALIVE,
    head: bool = False,
    extra: Iterable[Tuple[bytes, bytes]] = (),
) -> bytes:
    """A JSON error ``{"error": code, "message": message}`` with ``status``."""
    return render_json(
        status,
        {"error": code, "message": message},
        connection=connection,
        head=head,
        extra=extra,
    )


def render_raw(
    status: int,
    headers: Iterable[Tuple[str, str]],
    body: bytes,
    *,
    connection: bytes = KEEP_ALIVE,
    head: bool = False,
) -> bytes:
    """A response with ``status``, the given text headers and ``body`` (Content-Length added)."""
    lines = b"".join(b"%s: %s\r\n" % (k.encode("ascii"), header_value(v)) for k, v in headers)
    return b"HTTP/1.1 %d %s\r\n%sContent-Length: %d\r\n%s\r\n%s" % (
        status,
        REASONS.get(status, b"Unknown"),
        lines,
        len(body),
        connection,
        b"" if head else body,
    )


def render_lookup(lookup: CacheLookup, connection: bytes, head: bool) -> bytes:
    """A 200 carrying ``lookup``'s value, its state and whole-second Age / max-age."""
    value = lookup.value
    return render_value(
        value.body,
        value.content_type,
        lookup.state,
        int(lookup.age),
        int(lookup.remaining),
        connection=connection,
        head=head,
    )


def render_failure(exc: CachelayerError, connection: bytes, head: bool, what: str) -> bytes:
    """The JSON error for ``exc``; a 500 is logged whole and shown generically (its text may
    come from a bug, not from a message written for the client). A 503 (throttled upstream)
    says in ``Retry-After`` when the cache will ask upstream again."""
    status, code = status_for(exc)
    if status == 500:
        log.error("error %s", what, exc_info=exc)
        return render_error(status, code, GENERIC_500, connection=connection, head=head)
    extra: Tuple[Tuple[bytes, bytes], ...] = ()
    retry_after = getattr(exc, "retry_after", None)
    if status == 503 and retry_after is not None:
        extra = ((b"Retry-After", b"%d" % max(1, math.ceil(retry_after))),)
    return render_error(status, code, str(exc), connection=connection, head=head, extra=extra)
