"""The cache's entries in least-recently-used order, bounded by count and by every byte held,
and how an answer from upstream (a value, "not found", a failure) becomes an entry."""

from __future__ import annotations

import collections
import logging
import math
import random
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Tuple

from cachelayer.core.entries import (
    RETRY_BASE,
    RETRY_CAP,
    THROTTLED_BASE,
    CachePolicy,
    Entry,
    Key,
    Lookup,
    RouteStats,
    copy_error,
    error_bytes,
    key_bytes,
    short,
    value_bytes,
)
from cachelayer.errors import NotFoundError, ThrottlingError, UpstreamError
from cachelayer.provider import Item, Provider, Value

if TYPE_CHECKING:
    from cachelayer.shared.tier import Fetched

log = logging.getLogger("cachelayer.cache")

__all__ = ["EntryTable"]


class EntryTable:
    """Entries by key, oldest use first; ``put`` evicts from the front to stay within the
    policy's ``max_entries`` and ``max_bytes`` (the entries' sizes plus what ``hold`` counts).
    ``store``, ``store_stale``, ``remember_not_found`` and ``remember_failure`` turn upstream's
    answers into entries, with their TTLs and backoffs (``clock`` and ``rng`` are the cache's).

    ``entries`` is read directly on the cache's hot paths (a hit moves its key to the end).
    """

    def __init__(
        self,
        policy: CachePolicy,
        stats: Dict[str, RouteStats],
        clock: Callable[[], float],
        rng: random.Random,
    ) -> None:
        self.policy = policy
        self._stats = stats
        self._clock = clock
        self._rng = rng
        self.entries: collections.OrderedDict[Key, Entry] = collections.OrderedDict()
        self.bytes = 0
        self.held = 0  # bytes held for the cache's users (the server's memos), see ``hold``
        self.released = 0  # bytes of entries dropped or evicted, ever (for the allocator)

    def put(self, entry: Entry) -> None:
        """Keep ``entry`` (replacing its key's), then evict down to the bounds."""
        key = entry.item.key
        self.drop(key)
        self.entries[key] = entry
        self.bytes += entry.size
        self.evict()

    def drop(self, key: Key) -> None:
        """Forget ``key``'s entry, if there is one."""
        old = self.entries.pop(key, None)
        if old is not None:
            self.bytes -= old.size
            self.released += old.size

    def evict(self) -> None:
        """Drop least recently used entries until count and bytes are within the bounds."""
        entries = self.entries
        policy = self.policy
        while entries and (
            len(entries) > policy.max_entries or self.bytes + self.held > policy.max_bytes
        ):
            _, old = entries.popitem(last=False)
            self.bytes -= old.size
            self.released += old.size
            old.stats.evictions += 1

    def hold(self, delta: int) -> None:
        """Count ``delta`` more (or, negative, fewer) bytes held outside the entries."""
        self.held += delta
        if delta > 0:
            self.evict()

    def invalidate(self, route: Optional[str] = None, name: Optional[str] = None) -> int:
        """Drop one entry (route+name, all variants), a route, or everything; return how many."""
        doomed: List[Key] = [
            k
            for k in self.entries
            if (route is None or k[0] == route) and (name is None or k[1] == name)
        ]
        for k in doomed:
            self.drop(k)
        return len(doomed)

    def remember_failure(
        self,
        provider: Provider,
        item: Item,
        entry: Optional[Entry],
        exc: UpstreamError,
        stats: RouteStats,
        now: float,
    ) -> None:
        """Nothing to serve (or a failure that is not transient): remember it for a backoff, so
        that client load during an outage never becomes upstream load (about one call per
        key per backoff)."""
        failures = entry.failures + 1 if entry is not None and entry.error is not None else 1
        if self.policy.max_entries <= 0:
            return
        backoff = self.backoff(failures, exc)
        failed = copy_error(exc)
        held = Entry(
            item, provider, stats, None, failed, 0.0, now, now + backoff, failures=failures
        )
        held.size = key_bytes(item) + error_bytes(failed)
        self.put(held)
        # One warning per backoff period of the key (there is one call per period).
        log.warning(
            "%s %r: upstream call failed: %s; no value is cached, so this is the answer "
            "for %.1fs, then one retry",
            item.route,
            short(item.name),
            short(str(exc), 300),
            backoff,
        )
        exc.retry_after = backoff  # for the readers waiting now

    def backoff(self, failures: int, exc: BaseException) -> float:
        """Seconds to wait before retrying a key after its ``failures``-th failure in a row."""
        base = THROTTLED_BASE if isinstance(exc, ThrottlingError) else RETRY_BASE
        backoff = min(RETRY_CAP, base * 2 ** min(failures - 1, 16))
        return backoff * (0.5 + self._rng.random() / 2)  # jitter

    def ttl(self, item: Item) -> float:
        return item.ttl if item.ttl is not None else self.policy.ttl_for(item.route)

    def store(
        self,
        provider: Provider,
        item: Item,
        value: Value,
        age: float = 0.0,
        remaining: Optional[float] = None,
    ) -> Lookup:
        now = self._clock()
        ttl = self.ttl(item)
        size = key_bytes(item) + value_bytes(value)
        if ttl <= 0 or size > self.policy.max_bytes or self.policy.max_entries <= 0:
            self.drop(item.key)
            return Lookup(value, "miss", age, 0.0)
        fresh = ttl if remaining is None else min(ttl, remaining)
        stats = self._stats[item.route]
        self.put(Entry(item, provider, stats, value, None, ttl, now - age, now + fresh, size))
        return Lookup(value, "miss", age, fresh)

    def store_stale(self, provider: Provider, item: Item, fetched: Fetched) -> Lookup:
        """Keep the shared tier's stale copy as an expired, failing entry: later reads are
        answered from it (stale-if-error) while retries back off."""
        now = self._clock()
        self._stats[item.route].upstream_errors += 1
        ttl = self.ttl(item)
        entry = Entry(
            item,
            provider,
            self._stats[item.route],
            fetched.value,
            None,
            ttl,
            now - fetched.age,
            now - fetched.overdue,
            key_bytes(item) + value_bytes(fetched.value),
            failures=1,
            retry_at=now + RETRY_BASE * (0.5 + self._rng.random() / 2),
        )
        if entry.size <= self.policy.max_bytes and self.policy.max_entries > 0:
            self.put(entry)
        return Lookup(fetched.value, "stale", fetched.age, 0.0)

    def remember_not_found(
        self, provider: Provider, item: Item, exc: NotFoundError, now: float
    ) -> None:
        self.drop(item.key)
        # A "not found" read from the shared tier keeps its remaining time there.
        ttl = min(self.policy.negative_ttl, getattr(exc, "shared_remaining", math.inf))
        if ttl > 0 and self.policy.max_entries > 0:
            size = key_bytes(item) + error_bytes(exc)
            self.put(
                Entry(item, provider, self._stats[item.route], None, exc, ttl, now, now + ttl, size)
            )

    @property
    def size(self) -> Tuple[int, int]:
        """(entries, bytes) held now, counting what ``hold`` adds."""
        return len(self.entries), self.bytes + self.held
