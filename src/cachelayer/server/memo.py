"""Per-URL memos of the hit path (route resolution and rendered response), counted in bytes."""

from __future__ import annotations

from typing import Any, Dict

from cachelayer.provider import Item
from cachelayer.server.application import CacheLookup, ServedCache
from cachelayer.server.responses import render_value

__all__ = ["MemoTable", "RouteMemo"]


class RouteMemo:
    """What one URL resolved to, and the keep-alive GET response last rendered for it.

    ``value``/``age``/``remaining`` are what ``response`` was rendered from; ``cost`` is the
    bytes it is counted for (see ``MemoTable.charge``).
    """

    __slots__ = ("age", "cost", "item", "provider", "remaining", "response", "url", "value")

    def __init__(self, provider: Any, item: Item, url: bytes) -> None:
        self.provider = provider
        self.item = item
        self.url = url
        self.value: Any = None
        self.age = -1
        self.remaining = -1
        self.response = b""
        self.cost = 0


class MemoTable:
    """The server's memos, shared by its connections: by URL (``routes``) and by the whole
    bytes of a request answered from the hit path (``requests``), within count and byte bounds.

    The memos' bytes are held against the cache's ``max_bytes``, within a quarter of it.
    """

    __slots__ = ("_bytes", "_cache", "max_requests", "max_routes", "requests", "routes")

    def __init__(self, cache: ServedCache, max_routes: int, max_requests: int) -> None:
        self._cache = cache
        self.max_routes = max_routes
        self.max_requests = max_requests
        self.routes: Dict[bytes, RouteMemo] = {}
        self.requests: Dict[bytes, RouteMemo] = {}
        self._bytes = 0

    @property
    def total(self) -> int:
        """Bytes the memos are counted for (part of the cache's ``max_bytes``)."""
        return self._bytes

    def response(self, memo: RouteMemo, lookup: CacheLookup) -> bytes:
        """The memo's keep-alive GET response for ``lookup``, re-rendered only when the value
        or its whole-second Age / max-age changed since the last hit."""
        value = lookup.value
        age = int(lookup.age)
        remaining = int(lookup.remaining)
        if memo.value is not value or memo.age != age or memo.remaining != remaining:
            size = len(memo.response)
            data = render_value(value.body, value.content_type, lookup.state, age, remaining)
            memo.response = data
            memo.value = value
            memo.age = age
            memo.remaining = remaining
            if len(data) != size:
                self.charge(memo)  # may forget this very memo when over the budget
            return data
        return memo.response

    def add(self, memo: RouteMemo) -> None:
        """Remember ``memo`` for its URL, within the memo count and byte bounds."""
        routes = self.routes
        before = self._bytes
        old = routes.pop(memo.url, None)
        if old is not None:
            self._forget(old)
        while len(routes) >= self.max_routes:
            self._forget(routes.pop(next(iter(routes))))
        routes[memo.url] = memo
        self._cache.hold(self._bytes - before)
        self.charge(memo)

    def remember_request(self, data: bytes, memo: RouteMemo) -> None:
        """Answer these exact request bytes from ``memo`` next time, skipping the parser."""
        requests = self.requests
        if len(requests) >= self.max_requests:
            del requests[next(iter(requests))]
        requests[data] = memo

    def charge(self, memo: RouteMemo) -> None:
        """Count ``memo``'s bytes again (its rendered response changed); drop the oldest memos
        while they are over their budget."""
        routes = self.routes
        if routes.get(memo.url) is not memo:
            return  # forgotten already (a connection still held it): counted for nothing
        before = self._bytes
        # The URL (key), the item's name, the rendered response and the value it was
        # rendered from (which the memo keeps alive), and the memo's own objects.
        cost = 256 + 2 * len(memo.url) + 2 * len(memo.response)
        self._bytes += cost - memo.cost
        memo.cost = cost
        budget = int(self._cache.policy.max_bytes) // 4
        while self._bytes > budget and routes:
            self._forget(routes.pop(next(iter(routes))))
        # Memos first make room among themselves; the cache evicts entries only for the rest.
        self._cache.hold(self._bytes - before)

    def _forget(self, memo: RouteMemo) -> None:
        """Drop ``memo``'s bytes from the total (the caller tells the cache)."""
        self._bytes -= memo.cost
        memo.cost = 0
        memo.value = None  # nothing pinned: a request memo still pointing here re-renders
        memo.response = b""
        memo.age = memo.remaining = -1
        requests = self.requests
        for data in [d for d, m in requests.items() if m is memo]:
            del requests[data]
