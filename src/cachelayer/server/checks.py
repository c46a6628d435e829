"""The bounds and checks every request passes (Host, X-Forwarded-For, token, body), in one place."""

from __future__ import annotations

from hmac import compare_digest
from typing import Optional, Tuple

__all__ = ["Limits", "Problem", "Refusal", "RequestGate"]


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


Problem = Tuple[int, str, str]
"""``(status, code, message)`` of a fault found while parsing (a header given twice)."""

_POST = b"POST"


class Refusal:
    """Why a request is refused: the error to answer, and whether the connection closes.

    ``authentic`` is whether the request passed auth (its connection is trusted even so).
    """

    __slots__ = ("authentic", "close", "code", "message", "status")

    def __init__(
        self, status: int, code: str, message: str, *, close: bool = False, authentic: bool = False
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.close = close
        self.authentic = authentic


_OVERLOADED = (
    "too many connections (limit {limit}); this one is closed: retry, and reuse one keep-alive "
    "connection per process"
)
_NO_HOST = Refusal(400, "BadRequest", "HTTP/1.1 requests must carry a Host header")
# A request that fails auth closes its connection: it must not keep a slot that the function
# holding the token may need.
_FORWARDED = Refusal(
    403,
    "ForwardedRequest",
    "requests carrying X-Forwarded-For are refused: the cache answers local callers only, never "
    "requests relayed through a proxy; the connection is closed",
    close=True,
)
_NO_TOKEN_SET = Refusal(
    401,
    "MissingToken",
    "auth is 'token' but AWS_SESSION_TOKEN is not set in the extension's environment, so no "
    "request can be authenticated; set AWS_SESSION_TOKEN or set CACHE_EXTENSION_AUTH=none",
    close=True,
)
_MISSING_TOKEN = Refusal(
    401,
    "MissingToken",
    "missing X-Aws-Parameters-Secrets-Token header; send the value of the AWS_SESSION_TOKEN "
    "environment variable in it (the connection is closed)",
    close=True,
)
_WRONG_TOKEN = Refusal(
    403,
    "InvalidToken",
    "X-Aws-Parameters-Secrets-Token does not match this environment's AWS_SESSION_TOKEN; the "
    "connection is closed",
    close=True,
)


class RequestGate:
    """Decides, for the fast and the slow path alike, whether a request may be answered.

    ``expected`` is the token requests must carry (None: not set); without ``auth_required``
    every request is authentic.
    """

    __slots__ = ("auth_required", "expected", "max_connections")

    def __init__(
        self, *, auth_required: bool, expected: Optional[bytes], max_connections: int
    ) -> None:
        self.auth_required = auth_required
        self.expected = expected
        self.max_connections = max_connections

    def authentic(self, token: Optional[bytes]) -> bool:
        """Whether ``token`` (the request's header, None when absent) passes auth."""
        if not self.auth_required:
            return True
        expected = self.expected
        return expected is not None and token is not None and compare_digest(token, expected)

    def refusal(
        self,
        method: bytes,
        token: Optional[bytes],
        host_ok: bool,
        xff: bool,
        body: int,
        problem: Optional[Problem],
        overloaded: bool,
    ) -> Optional[Refusal]:
        """None when the request may be answered, else the first check it fails, in order:
        over the connection limit, a parsing fault, no Host (HTTP/1.1), X-Forwarded-For, the
        token, a body on anything but POST."""
        if not (overloaded or problem or xff or body) and host_ok:
            # The common case, tested inline: this runs on the hit path.
            expected = self.expected
            if not self.auth_required or (
                token is not None and expected is not None and compare_digest(token, expected)
            ):
                return None
        authentic = self.authentic(token)
        if overloaded:
            return Refusal(
                503,
                "ServiceUnavailable",
                _OVERLOADED.format(limit=self.max_connections),
                close=True,
            )
        if problem is not None:
            return Refusal(*problem)
        if not host_ok:
            return _NO_HOST
        if xff:
            return _FORWARDED
        if not authentic:
            if self.expected is None:
                return _NO_TOKEN_SET
            return _MISSING_TOKEN if token is None else _WRONG_TOKEN
        if body and method != _POST:
            method_text = method.decode("ascii", "replace")
            return Refusal(
                400, "BadRequest", f"{method_text} requests must not carry a body", authentic=True
            )
        return None
