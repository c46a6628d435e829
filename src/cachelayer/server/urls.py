"""Request targets: split a raw URL into a decoded path and strictly checked query parameters."""

from __future__ import annotations

import re
from typing import Dict, Tuple
from urllib.parse import unquote_to_bytes

import httptools

from cachelayer.errors import BadRequestError

__all__ = ["parse_target"]

_BAD_PERCENT = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _shown(raw: bytes, limit: int = 60) -> str:
    """A short, printable rendering of request bytes for an error message."""
    text = raw[:limit].decode("latin-1")
    text = _CONTROL.sub("?", text)
    return text + ("..." if len(raw) > limit else "")


def _decode(raw: bytes, what: str, *, plus_is_space: bool) -> str:
    if _BAD_PERCENT.search(raw):
        raise BadRequestError(
            f"malformed percent-encoding in {what} {_shown(raw)!r}: '%' must be followed by two "
            "hex digits; encode a literal '%' as %25"
        )
    if plus_is_space:
        # Form encoding, as Go's url.ParseQuery and Python's parse_qs read it: '+' is a space,
        # a literal '+' arrives as %2B (encodeURIComponent and urlencode both send that).
        raw = raw.replace(b"+", b" ")
    try:
        text = unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequestError(
            f"{what} {_shown(raw)!r} does not decode to UTF-8; percent-encode UTF-8 bytes"
        ) from None
    if _CONTROL.search(text):
        raise BadRequestError(f"{what} {_shown(raw)!r} contains a control character")
    return text


def parse_target(url: bytes) -> Tuple[str, Dict[str, str]]:
    """``(path, params)`` of a request target such as ``/<route>?name=a%2Fb``.

    Raises BadRequestError for an unparseable URL, malformed percent-encoding, a query part
    that is not ``key=value``, or a key given twice. Empty parts (``a=1&&b=2``) are skipped.
    """
    try:
        parsed = httptools.parse_url(url)
    except httptools.HttpParserInvalidURLError:
        raise BadRequestError(
            f"invalid request target {_shown(url)!r}; use /<route>?name=<name>"
        ) from None
    path = _decode(parsed.path or b"/", "path", plus_is_space=False)
    params: Dict[str, str] = {}
    query = parsed.query
    if query:
        for part in query.split(b"&"):
            if not part:
                continue
            key_raw, sep, value_raw = part.partition(b"=")
            if not sep or not key_raw:
                raise BadRequestError(
                    f"query part {_shown(part)!r} is not key=value; write e.g. ?name=MyParameter"
                )
            key = _decode(key_raw, "query key", plus_is_space=True)
            if key in params:
                raise BadRequestError(
                    f"query parameter {key!r} is given more than once; give it once"
                )
            params[key] = _decode(value_raw, f"query parameter {key!r}", plus_is_space=True)
    return path, params
