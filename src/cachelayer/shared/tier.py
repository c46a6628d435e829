"""The shared tier: read-through on a shared store with leases, sealing, deadlines and a breaker."""

from __future__ import annotations

import base64
import collections
import logging
import os
import threading
import time
import urllib.parse
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import attrs

from cachelayer.errors import NotFoundError, TransientError
from cachelayer.provider import Item, Value
from cachelayer.shared.breaker import CircuitBreaker
from cachelayer.shared.counters import RouteCounters
from cachelayer.shared.guarded import GuardedStore, Unavailable
from cachelayer.shared.record import SharedRecord
from cachelayer.shared.settings import SharedConfig, redact_url
from cachelayer.shared.store import SharedStore

__all__ = ["CircuitBreaker", "Fetched", "SharedTier"]

log = logging.getLogger("cachelayer.shared")


@attrs.frozen
class Fetched:
    """What a read through the tier produced: the value, its age and remaining freshness (s),
    and whether it is the tier's stale copy served because upstream failed (``overdue``: how
    long past its expiry)."""

    value: Value
    age: float
    remaining: float
    stale: bool = False
    overdue: float = 0.0


@attrs.frozen
class _Read:
    """One ``fetch`` of ``item`` at ``key``: its TTLs, and what the tier held when it began."""

    item: Item
    key: str
    counters: RouteCounters
    ttl: float
    negative_ttl: float
    stale_if_error: float
    has_local: bool
    record: Optional[SharedRecord]  # what the store held (None: nothing usable)
    now: float  # wall-clock time of that first look


@attrs.frozen
class _Lease:
    """A lease asked for: ``won`` True (ours), False (another environment's) or None (the
    store failed: fetch, and write nothing)."""

    key: str
    token: bytes
    won: Optional[bool]


def _quote(text: str) -> str:
    # Quote everything that is a separator of the key layout or a SCAN glob character.
    return urllib.parse.quote(text, safe="/_-.~@+,")


def _token() -> bytes:
    return base64.b64encode(os.urandom(12))


class SharedTier:
    """The second cache tier, shared by every execution environment through a store.

    ``fetch`` runs in a worker thread in place of a provider call: a fresh shared value is
    returned with its remaining TTL; on a shared miss one environment wins a lease
    (``add``, i.e. SET NX PX), fetches upstream and writes; the others poll the store for up to
    ``lease_wait`` and then fetch themselves. Every store operation has the store's deadline;
    any failure means "go upstream as if there were no tier", and the circuit breaker stops
    asking a failing store. Values are sealed with AES-256-GCM, the storage key as associated
    data; an entry that does not open is a miss, counted and warned about.
    """

    def __init__(
        self,
        store: SharedStore,
        config: SharedConfig,
        *,
        read_secret: Optional[Callable[[str], str]] = None,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        s = config.settings
        self.store = store
        self.config = config
        self._settings = s
        self.wall = wall  # replaceable: a simulation runs the tier on its own clock
        self._monotonic = monotonic
        self._sleep = sleep
        self.breaker = CircuitBreaker(s.breaker_failures, float(s.breaker_cooldown), monotonic)
        self._store = GuardedStore(store, config, self.breaker, read_secret)
        self._lock = threading.Lock()
        self._counters: Dict[str, RouteCounters] = collections.defaultdict(RouteCounters)

    def __repr__(self) -> str:
        return f"SharedTier({redact_url(self.config.url)!r}, store={self.store!r})"

    # -- keys ---------------------------------------------------------------------------

    def storage_key(self, item: Item) -> str:
        """Where ``item`` lives in the store: ``<prefix>v1:<route>:<name>|<variant>``."""
        variant = "&".join(f"{_quote(k)}={_quote(v)}" for k, v in item.variant)
        return f"{self._route_prefix(item.route)}{_quote(item.name)}|{variant}"

    def _route_prefix(self, route: str) -> str:
        return f"{self._settings.prefix}v1:{_quote(route)}:"

    def _lease_key(self, key: str) -> str:
        return f"{self._settings.prefix}lease:{key[len(self._settings.prefix) :]}"

    def _counters_for(self, route: str) -> RouteCounters:
        with self._lock:
            return self._counters[route]

    # -- the read path (worker threads) -------------------------------------------------

    def fetch(
        self,
        item: Item,
        upstream: Callable[[], Value],
        *,
        ttl: float,
        negative_ttl: float,
        stale_if_error: float,
        refresh_within: float = 0.0,
        has_local: bool = False,
    ) -> Fetched:
        """Read ``item`` through the tier, calling ``upstream()`` only when this environment
        must fetch. ``refresh_within``: a shared value with less freshness left than this is
        due for a refresh (refresh-ahead), taken only by the lease's winner. ``has_local``:
        the caller holds its own stale value, so the tier's stale copy is not needed.

        Raises what ``upstream`` raises, or ``NotFoundError`` for a shared "not found".
        """
        if ttl <= 0:  # not cached at all: nothing to share
            return Fetched(upstream(), 0.0, 0.0)
        counters = self._counters_for(item.route)
        key = self.storage_key(item)
        try:
            record, seen = self._store.read(counters, key)
        except Unavailable:
            return Fetched(upstream(), 0.0, ttl)
        bad = seen if record is None else None
        now = self.wall()
        if record is not None and record.remaining(now) > refresh_within:
            counters.bump("hits")
            return self._answer(record, now, ttl)
        read = _Read(item, key, counters, ttl, negative_ttl, stale_if_error, has_local, record, now)
        lease = self._ask_lease(counters, self._lease_key(key))
        shared = self._while_leased(read, lease, bad, refresh_within)
        if shared is not None:
            return shared
        counters.bump("misses")  # this environment fetches upstream
        try:
            return self._fetch_upstream(read, lease, upstream)
        finally:
            if lease.won:
                self._store.give_back(counters, lease.key, lease.token)

    def _ask_lease(self, counters: RouteCounters, lease_key: str) -> _Lease:
        token = _token()
        try:
            won: Optional[bool] = self._store.take_lease(
                counters, lease_key, token, self._lease_ttl()
            )
        except Unavailable:
            won = None
        return _Lease(lease_key, token, won)

    def _while_leased(
        self, read: _Read, lease: _Lease, bad: Optional[bytes], refresh_within: float
    ) -> Optional[Fetched]:
        """The tier's answer after asking for the lease, or None: fetch upstream."""
        record, counters = read.record, read.counters
        if lease.won:
            # Won, but maybe just after another winner wrote and released: look once more.
            try:
                again, _ = self._store.read(counters, read.key, bad)
            except Unavailable:
                again = None
            if again is not None and again.remaining(self.wall()) > refresh_within:
                self._store.give_back(counters, lease.key, lease.token)
                counters.bump("hits")
                return self._answer(again, self.wall(), read.ttl)
            return None
        if lease.won is None:
            return None
        if record is not None and record.value is not None and record.remaining(read.now) > 0:
            # Someone else is refreshing a value still fresh: use it meanwhile.
            counters.bump("hits")
            return self._answer(record, read.now, read.ttl)
        waited = self._wait(counters, read.key, lease.key, bad)
        if waited is not None:  # counted as a hit (after a wait, see shared_lease_waits)
            return self._answer(waited, self.wall(), read.ttl)
        return None

    def _fetch_upstream(self, read: _Read, lease: _Lease, upstream: Callable[[], Value]) -> Fetched:
        """Call upstream; share what it says unless the store failed (the caller gives the
        lease back); on a transient failure, the tier's stale copy if it has one."""
        try:
            value = upstream()
        except NotFoundError as exc:
            if lease.won is not None and self._settings.negative and read.negative_ttl > 0:
                started = self.wall()
                rec = SharedRecord(None, started, started + read.negative_ttl, str(exc))
                self._store.write(read.counters, read.key, rec, read.negative_ttl)
            raise
        except TransientError:
            stale = self._stale_copy(read)
            if stale is None:
                raise
            return stale
        if lease.won is not None:
            started = self.wall()
            rec = SharedRecord(value, started, started + read.ttl)
            self._store.write(read.counters, read.key, rec, read.ttl + read.stale_if_error)
        return Fetched(value, 0.0, read.ttl)

    def _stale_copy(self, read: _Read) -> Optional[Fetched]:
        """The tier's expired copy, within ``stale_if_error``, for a caller holding none."""
        record, now = read.record, read.now
        if (
            read.has_local
            or record is None
            or record.value is None
            or now >= record.expires_at + read.stale_if_error
        ):
            return None
        read.counters.bump("stale")
        log.warning(
            "%s %r: upstream failed; serving the shared tier's stale copy",
            read.item.route,
            read.item.name,
        )
        return Fetched(
            record.value,
            max(0.0, now - record.fetched_at),
            0.0,
            stale=True,
            overdue=max(0.0, now - record.expires_at),
        )

    def _answer(self, record: SharedRecord, now: float, ttl: float) -> Fetched:
        # Freshness is the tier's, never more than a full TTL (clocks of hosts differ a bit).
        remaining = max(0.0, min(record.remaining(now), ttl))
        if record.value is None:
            exc = NotFoundError(record.message or "not found (remembered by the shared tier)")
            exc.shared_remaining = remaining  # type: ignore[attr-defined]  # read by the cache
            raise exc
        return Fetched(record.value, max(0.0, now - record.fetched_at), remaining)

    def _lease_ttl(self) -> float:
        return float(self._settings.lease)

    def _wait(
        self, counters: RouteCounters, key: str, lease_key: str, bad: Optional[bytes]
    ) -> Optional[SharedRecord]:
        """Poll for the lease winner's value, up to ``lease_wait``; None if it does not come
        (the winner failed, gave the lease back, or is slow) or the store fails."""
        counters.bump("waits")
        deadline = self._monotonic() + float(self._settings.lease_wait)
        pause = 0.005
        while True:
            left = deadline - self._monotonic()
            if left <= 0:
                log.debug(
                    "%r: no value after waiting %.2fs for the lease",
                    key,
                    float(self._settings.lease_wait),
                )
                return None
            self._sleep(min(pause, left))
            pause = min(pause * 2, 0.05)
            try:
                # The lease first: the winner writes, then releases, so once the lease is
                # gone the value is there, unless the winner failed.
                released = self._store.lease_released(counters, lease_key)
                record, _ = self._store.read(counters, key, bad)
            except Unavailable:
                return None
            if record is not None and record.remaining(self.wall()) > 0:
                counters.bump("hits")
                return record
            if released:  # the winner gave up without writing: fetch ourselves
                log.debug("%r: the lease was given back without a value", key)
                return None

    # -- prefetch (init): many items at once --------------------------------------------

    def prefetch_lookup(
        self, items: Sequence[Item], ttl_of: Callable[[Item], float]
    ) -> Tuple[Dict[Item, Fetched], Optional[Tuple[str, bytes]]]:
        """Read ``items`` from the tier for a prefetch; return what was fresh there, and the
        lease on the rest if this environment won it (then it batch-fetches and passes the
        lease to ``prefetch_store``). When another environment holds that lease (a wave of cold
        starts), wait up to ``lease_wait`` for its values. Never raises: a failing tier finds
        nothing."""
        shared = [i for i in items if ttl_of(i) > 0]
        found: Dict[Item, Fetched] = {}
        counters = self._counters_for(items[0].route) if items else RouteCounters()
        missing = self._lookup_into(counters, shared, found)
        if not missing:
            return found, None
        import hashlib  # here: loading OpenSSL's hashes is not free, and only a prefetch needs it

        # The lease is named after everything asked for, not after what this environment found
        # missing: an environment that looked while another was still writing its batch would
        # otherwise take a lease of its own on the remainder and fetch it again.
        digest = hashlib.sha256("\n".join(sorted(self.storage_key(i) for i in shared)).encode())
        lease = self._ask_lease(
            counters, f"{self._settings.prefix}lease:prefetch:{digest.hexdigest()}"
        )
        if lease.won is None:
            return found, None
        if lease.won:
            # The environment that held the lease before may have just written the values.
            self._lookup_into(counters, missing, found)
            return found, (lease.key, lease.token)
        self._wait_for_batch(counters, lease.key, missing, found)
        return found, None

    def _wait_for_batch(
        self,
        counters: RouteCounters,
        lease_key: str,
        missing: List[Item],
        found: Dict[Item, Fetched],
    ) -> None:
        """Poll, up to ``lease_wait``, for the values of another environment's prefetch."""
        counters.bump("waits")
        deadline = self._monotonic() + float(self._settings.lease_wait)
        pause = 0.01
        while missing and self._monotonic() < deadline:
            self._sleep(min(pause, max(0.0, deadline - self._monotonic())))
            pause = min(pause * 2, 0.1)
            try:
                released = self._store.lease_released(counters, lease_key)
            except Unavailable:
                break
            missing = self._lookup_into(counters, missing, found)
            if released:
                break

    def _lookup_into(
        self, counters: RouteCounters, items: Sequence[Item], found: Dict[Item, Fetched]
    ) -> List[Item]:
        missing: List[Item] = []
        for i, item in enumerate(items):
            try:
                record, _ = self._store.read(counters, self.storage_key(item))
            except Unavailable:
                missing.extend(items[i:])
                break
            now = self.wall()
            if record is None or record.value is None or record.remaining(now) <= 0:
                missing.append(item)
                continue
            counters.bump("hits")
            found[item] = self._answer(record, now, float("inf"))
        return missing

    def prefetch_store(
        self,
        values: Sequence[Tuple[Item, Value, float]],
        stale_if_error: float,
        lease: Optional[Tuple[str, bytes]],
    ) -> None:
        """Write a prefetch's ``(item, value, ttl)`` results for the other environments, then
        give back the prefetch lease."""
        if not values and lease is None:
            return
        counters = self._counters_for(values[0][0].route) if values else RouteCounters()
        for item, value, ttl in values:
            if ttl <= 0:
                continue
            counters.bump("misses")
            started = self.wall()
            record = SharedRecord(value, started, started + ttl)
            self._store.write(counters, self.storage_key(item), record, ttl + stale_if_error)
        if lease is not None:
            self._store.give_back(counters, lease[0], lease[1])

    # -- operations ----------------------------------------------------------------------

    def invalidate(self, route: Optional[str] = None, name: Optional[str] = None) -> int:
        """Delete the shared copies of one name (all variants), a route, or everything under
        the prefix; return how many. Raises ``StoreError`` if the store fails."""
        if route is None:
            prefix = f"{self._settings.prefix}v1:"
        elif name is None:
            prefix = self._route_prefix(route)
        else:
            prefix = f"{self._route_prefix(route)}{_quote(name)}|"
        return self.store.delete_prefix(prefix)

    def stats_for(self, route: str) -> Dict[str, int]:
        """The tier's counters for ``route`` (zeros when it was never used)."""
        with self._lock:
            counters = self._counters.get(route)
        return (counters or RouteCounters()).as_dict()

    def routes(self) -> Tuple[str, ...]:
        """Routes the tier has counters for."""
        with self._lock:
            return tuple(self._counters)

    def close(self) -> None:
        """Drop the store's connections."""
        self.store.close()
