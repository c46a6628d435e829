"""The error types every part of cachelayer raises, and the HTTP-free code each one maps to."""

from __future__ import annotations

from typing import ClassVar, Optional, Tuple

__all__ = [
    "BadRequestError",
    "CachelayerError",
    "ConfigError",
    "NotFoundError",
    "PluginError",
    "RouteNotFoundError",
    "ThrottlingError",
    "TransientError",
    "UpstreamError",
    "UpstreamTimeoutError",
]


class CachelayerError(Exception):
    """Base of every error cachelayer reports on purpose.

    ``code`` is the stable machine-readable name put in error bodies
    (``{"error": code, "message": str(exc)}``); the server maps it to a status.
    Messages must never contain a cached value or a secret.
    """

    code: ClassVar[str] = "InternalError"


class ConfigError(CachelayerError):
    """The configuration (file or environment) is invalid; raised at startup only.

    ``source`` is the file or variable, ``line`` the 1-based line (None for env vars),
    ``key`` the dotted path of the offending key.
    """

    code: ClassVar[str] = "ConfigError"

    def __init__(
        self,
        message: str,
        *,
        source: Optional[str] = None,
        line: Optional[int] = None,
        key: Optional[str] = None,
    ) -> None:
        self.message = message
        self.source = source
        self.line = line
        self.key = key
        # Further errors found in the same file after this one (``check-config`` lists them).
        self.more: Tuple[ConfigError, ...] = ()
        where = ""
        if source:
            where = f"{source}:{line}: " if line else f"{source}: "
        if key:
            where += f"{key}: "
        super().__init__(f"{where}{message}")


class PluginError(CachelayerError):
    """A provider plugin is broken (failed to load, invalid, or clashes with another)."""

    code: ClassVar[str] = "PluginError"


class BadRequestError(CachelayerError):
    """The request itself is wrong (missing name, bad parameter); the client must fix it."""

    code: ClassVar[str] = "BadRequest"


class NotFoundError(CachelayerError):
    """The item does not exist upstream (or is not declared). Not transient: never retried."""

    code: ClassVar[str] = "NotFound"


class UpstreamError(CachelayerError):
    """The upstream service refused or failed, and retrying will not help (e.g. AccessDenied).

    A key whose fetch fails so, with no value to serve, remembers the failure for a jittered
    backoff; ``retry_after`` is set (seconds) on the error a read gets during it.
    """

    code: ClassVar[str] = "UpstreamError"
    retry_after: Optional[float] = None


class TransientError(UpstreamError):
    """The upstream failed in a way that may pass: throttling, 5xx, connection refused/reset.

    A cache entry whose refresh fails with this is served stale (stale-if-error).
    """

    code: ClassVar[str] = "UpstreamUnavailable"


class ThrottlingError(TransientError):
    """The upstream throttled the call (ThrottlingException, TooManyRequests, SlowDown...).

    Transient, but answered 503 with ``Retry-After`` (code ``Throttled``) when there is no
    value to serve, and backed off longer than other failures; counted as a throttle.
    """

    code: ClassVar[str] = "Throttled"


class UpstreamTimeoutError(TransientError):
    """The upstream did not answer in time."""

    code: ClassVar[str] = "UpstreamTimeout"


class RouteNotFoundError(NotFoundError):
    """No provider answers this route."""

    code: ClassVar[str] = "UnknownRoute"
