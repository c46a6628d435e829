"""The cache's records: entries, lookups, policy, per-route counters, and what each one costs in
bytes against ``max_bytes``."""

from __future__ import annotations

import asyncio
import sys
from typing import Any, Callable, Dict, Mapping, NamedTuple, Optional, Tuple, TypeVar

import attrs

from cachelayer.errors import CachelayerError
from cachelayer.provider import Item, Provider, Value

__all__ = [
    "ENTRY_OVERHEAD",
    "RETRY_BASE",
    "RETRY_CAP",
    "THROTTLED_BASE",
    "CachePolicy",
    "Entry",
    "Key",
    "Lookup",
    "PrefetchReport",
    "RouteStats",
    "copy_error",
    "error_bytes",
    "held_bytes",
    "key_bytes",
    "short",
    "value_bytes",
]

Key = Tuple[str, str, Tuple[Tuple[str, str], ...]]

# Backoff between retries of a failing key, whether it has a stale value to serve or not:
# doubling from RETRY_BASE (THROTTLED_BASE when upstream throttles) up to RETRY_CAP, jittered
# to 50-100% so that many keys failing together do not retry together.
RETRY_BASE = 1.0
THROTTLED_BASE = 4.0
RETRY_CAP = 60.0

# Bytes of Python objects one entry costs besides its name, value and error: the Entry, the
# Item and its key tuple, the LRU dict's slot. Counted against ``max_bytes`` with the rest.
ENTRY_OVERHEAD = 512


def short(name: str, limit: int = 80) -> str:
    """A name as logs and messages show it: long names (attacks, mostly) cut to ``limit``."""
    return name if len(name) <= limit else name[: limit - 3] + "..."


class Lookup(NamedTuple):
    """The answer to a read: the value, how it was served, its age and remaining freshness (s).

    A NamedTuple, not an attrs class: one is built per cache hit, on the server's hot path.
    """

    value: Value
    state: str  # "hit" | "miss" | "stale"
    age: float
    remaining: float


@attrs.frozen
class CachePolicy:
    """The cache's resolved numbers. ``ttl_for(route)`` gives the TTL when an Item sets none."""

    ttl_for: Callable[[str], float]
    negative_ttl: float = 30.0
    stale_if_error: float = 3600.0
    refresh_ahead: float = 0.2
    max_entries: int = 1000
    max_bytes: int = 64 * 1024 * 1024
    stale_wait: float = 0.25
    upstream_timeout: float = 5.0


def held_bytes(obj: Any, depth: int = 0) -> int:
    """An estimate of the memory ``obj`` keeps alive: strings, bytes and the containers of
    metadata counted through (eight levels deep), anything else by its own size."""
    if isinstance(obj, (str, bytes, bytearray)) or depth > 8:
        return sys.getsizeof(obj)
    if isinstance(obj, Mapping):
        return sys.getsizeof(obj) + sum(
            held_bytes(k, depth + 1) + held_bytes(v, depth + 1) for k, v in obj.items()
        )
    if isinstance(obj, (list, tuple, set, frozenset)):
        return sys.getsizeof(obj) + sum(held_bytes(v, depth + 1) for v in obj)
    return sys.getsizeof(obj)


def value_bytes(value: Value) -> int:
    """What a value costs against ``max_bytes``: its body, its metadata and its etag."""
    size = sys.getsizeof(value.body) + held_bytes(value.metadata)
    if value.etag is not None:
        size += sys.getsizeof(value.etag)
    return size


def key_bytes(item: Item) -> int:
    """What an entry costs besides its value or error: its name, variant and overhead."""
    return ENTRY_OVERHEAD + sys.getsizeof(item.name) + held_bytes(item.variant)


_E = TypeVar("_E", bound=BaseException)


def copy_error(exc: _E) -> _E:
    """A copy of ``exc`` with no traceback and no causes, fit to be kept or raised: a botocore
    error behind it holds the whole response, and a traceback every frame's locals. The one
    kept is never raised itself (a raise would hang that raise's frames on it)."""
    cls = type(exc)
    try:
        copy = cls.__new__(cls, *exc.args)
        copy.__dict__.update(vars(exc))
    except Exception:  # an exception type that cannot be copied: keep it, stripped
        copy = exc
        copy.__traceback__ = None
        copy.__cause__ = copy.__context__ = None
    copy.__suppress_context__ = True
    return copy


def error_bytes(exc: BaseException) -> int:
    """What a remembered error costs against ``max_bytes``."""
    return sys.getsizeof(exc) + held_bytes(exc.args) + held_bytes(vars(exc))


def consume(future: asyncio.Future[Any]) -> None:
    """A done-callback that marks a settled future's exception retrieved."""
    # A fetch whose every reader went away (cancelled client, stale_wait, deadline) is still
    # settled: mark its exception retrieved, or asyncio logs it as "never retrieved".
    if not future.cancelled():
        future.exception()


@attrs.define(slots=True)
class Entry:
    """One cached value, or a remembered "not found" or transient failure (``value`` None,
    ``error`` set; a failure's ``expires_at`` is the end of its backoff), and its timing.
    ``size`` is every byte it holds, as counted against ``max_bytes``."""

    item: Item
    provider: Provider
    stats: RouteStats
    value: Optional[Value]
    error: Optional[CachelayerError]
    ttl: float
    fetched_at: float
    expires_at: float
    size: int = 0
    read_since_refresh: bool = False
    failures: int = 0
    retry_at: float = 0.0


class RouteStats:
    """Counters of one route."""

    __slots__ = (
        "backoff_hits",
        "evictions",
        "hits",
        "misses",
        "negative_hits",
        "not_modified",
        "refreshes_ahead",
        "stale",
        "throttles",
        "upstream_calls",
        "upstream_errors",
    )

    def __init__(self) -> None:
        self.hits = self.misses = self.stale = self.negative_hits = 0
        self.upstream_calls = self.upstream_errors = self.evictions = self.refreshes_ahead = 0
        self.not_modified = self.throttles = self.backoff_hits = 0

    def as_dict(self) -> Dict[str, int]:
        return {name: getattr(self, name) for name in sorted(self.__slots__)}


@attrs.frozen
class PrefetchReport:
    """What a prefetch did: items fetched, and the failures by key (message only, no values)."""

    fetched: int
    failed: Mapping[Key, str]
    seconds: float
