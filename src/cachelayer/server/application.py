"""What the server needs of the application (``cachelayer.core.app.Application``), as Protocols.

The server sees the core through these few attributes only, so it imports no core module and
a test may serve any object that has them.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, Mapping, Optional, Protocol, Sequence, Tuple

from cachelayer.provider import Item, Provider, Value

__all__ = [
    "CacheLookup",
    "ServedApplication",
    "ServedCache",
    "ServedRouter",
]


class CacheLookup(Protocol):
    """A read's answer: the value, how it was served (``hit``/``miss``/``stale``), its age and
    remaining freshness in seconds."""

    @property
    def value(self) -> Value: ...

    @property
    def state(self) -> str: ...

    @property
    def age(self) -> float: ...

    @property
    def remaining(self) -> float: ...


class _CachePolicy(Protocol):
    @property
    def max_bytes(self) -> Any: ...


class ServedCache(Protocol):
    """The cache, as the server reads through it and counts its memos against it."""

    @property
    def policy(self) -> _CachePolicy: ...

    @property
    def shared(self) -> Any: ...

    @property
    def released(self) -> int: ...

    def peek(self, item: Item) -> Optional[CacheLookup]:
        """The fresh value of ``item`` without waiting, or None (the synchronous hit path)."""

    async def get(self, provider: Provider, item: Item, *, refresh: bool = False) -> CacheLookup:
        """Read ``item`` through the cache, fetching it when needed."""

    def hold(self, delta: int) -> None:
        """Count ``delta`` more bytes (the server's memos) against ``max_bytes``."""

    def invalidate(self, route: Optional[str] = None, name: Optional[str] = None) -> int:
        """Drop cached entries (one name, a route, or all); how many were dropped."""


class ServedRouter(Protocol):
    """The router: route names to providers, and a request's query to an Item."""

    @property
    def routes(self) -> Tuple[str, ...]: ...

    def provider(self, route: str) -> Provider:
        """The provider of ``route``; RouteNotFoundError otherwise."""

    def resolve(self, route: str, params: Mapping[str, str]) -> Tuple[Provider, Item]:
        """The provider and Item for ``GET /<route>?<params>``; BadRequestError and
        RouteNotFoundError as the request deserves."""


class _Registry(Protocol):
    def names(self) -> Sequence[str]: ...


class _Settings(Protocol):
    @property
    def port(self) -> int: ...

    @property
    def auth(self) -> str: ...

    @property
    def token(self) -> Optional[str]: ...


class ServedApplication(Protocol):
    """What ``Server`` needs of the application it serves."""

    @property
    def settings(self) -> _Settings: ...

    @property
    def router(self) -> ServedRouter: ...

    @property
    def cache(self) -> ServedCache: ...

    @property
    def registry(self) -> _Registry: ...

    def stats(self) -> Dict[str, Dict[str, int]]:
        """Per-route counters, every installed route listed."""

    async def invalidate_shared(
        self, route: Optional[str] = None, name: Optional[str] = None
    ) -> Optional[Dict[str, Any]]:
        """Delete the shared tier's copies; None without a tier."""


def route_providers(router: ServedRouter) -> Iterable[Tuple[str, Provider]]:
    """``(route, provider)`` for every installed route, sorted by route."""
    return [(route, router.provider(route)) for route in router.routes]
