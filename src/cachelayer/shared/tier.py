"""The shared tier: read-through on a shared store with leases, sealing, deadlines and a breaker."""

from __future__ import annotations

import base64
import collections
import contextlib
import logging
import os
import threading
import time
import urllib.parse
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Tuple

import attrs

from cachelayer.errors import NotFoundError, TransientError
from cachelayer.provider import Item, Value
from cachelayer.shared.crypto import Sealer, UnsealError
from cachelayer.shared.record import SharedRecord, decode_record, encode_record
from cachelayer.shared.settings import SharedConfig, decode_key, redact_url
from cachelayer.shared.store import SharedStore, StoreError

__all__ = ["CircuitBreaker", "Fetched", "SharedTier"]

log = logging.getLogger("cachelayer.shared")

_LATENCY_SAMPLES = 512


class _Unavailable(Exception):
    """The tier cannot be used for this read (breaker open, error, deadline): go upstream."""


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


class CircuitBreaker:
    """Stops asking a failing store: after ``failures`` failures in a row it opens for
    ``cooldown`` seconds; then one caller is let through as a probe (half-open), whose success
    closes it and whose failure opens it again. Nothing runs on a timer: the state moves only
    when a caller asks, which is what a Lambda environment (frozen between invocations) needs.
    """

    def __init__(self, failures: int, cooldown: float, clock: Callable[[], float]) -> None:
        self._failures = failures
        self._cooldown = cooldown
        self._clock = clock
        self._lock = threading.Lock()
        self._consecutive = 0
        self._open_until = 0.0
        self._probing = False

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half-open``."""
        if self._consecutive < self._failures:
            return "closed"
        if self._probing or self._clock() >= self._open_until:
            return "half-open"
        return "open"

    def allow(self) -> bool:
        """Whether to try the store now (when open: False until the cool-down is over, then
        True once, for the probe)."""
        with self._lock:
            if self._consecutive < self._failures:
                return True
            if self._probing or self._clock() < self._open_until:
                return False
            self._probing = True
            return True

    def success(self) -> bool:
        """Record a success; True if this closed an open breaker."""
        with self._lock:
            reopened = self._consecutive >= self._failures
            self._consecutive = 0
            self._probing = False
            return reopened

    def failure(self) -> bool:
        """Record a failure; True if this opened the breaker."""
        with self._lock:
            self._consecutive += 1
            self._probing = False
            if self._consecutive >= self._failures:
                self._open_until = self._clock() + self._cooldown
                return self._consecutive == self._failures
            return False


class _RouteCounters:
    """The tier's counters of one route (incremented from worker threads, under a lock)."""

    __slots__ = ("errors", "hits", "latencies", "misses", "rejected", "stale", "waits", "writes")

    def __init__(self) -> None:
        self.hits = self.misses = self.errors = self.rejected = 0
        self.writes = self.waits = self.stale = 0
        self.latencies: Deque[float] = collections.deque(maxlen=_LATENCY_SAMPLES)

    def as_dict(self) -> Dict[str, int]:
        ordered = sorted(self.latencies)

        def quantile(q: float) -> int:
            if not ordered:
                return 0
            return int(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e6)

        return {
            "shared_hits": self.hits,
            "shared_misses": self.misses,
            "shared_errors": self.errors,
            "shared_rejected": self.rejected,
            "shared_writes": self.writes,
            "shared_lease_waits": self.waits,
            "shared_stale": self.stale,
            "shared_latency_p50_us": quantile(0.50),
            "shared_latency_p99_us": quantile(0.99),
        }


def _quote(text: str) -> str:
    # Quote everything that is a separator of the key layout or a SCAN glob character.
    return urllib.parse.quote(text, safe="/_-.~@+,")


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
        self._read_secret = read_secret
        self.wall = wall  # replaceable: a simulation runs the tier on its own clock
        self._monotonic = monotonic
        self._sleep = sleep
        self.breaker = CircuitBreaker(s.breaker_failures, float(s.breaker_cooldown), monotonic)
        self._sealer: Optional[Sealer] = None
        self._sealer_lock = threading.Lock()
        self._lock = threading.Lock()
        self._counters: Dict[str, _RouteCounters] = collections.defaultdict(_RouteCounters)

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
        with self._lock:
            counters = self._counters[item.route]
        key = self.storage_key(item)
        try:
            record, seen = self._read(counters, key)
        except _Unavailable:
            return Fetched(upstream(), 0.0, ttl)
        bad = seen if record is None else None
        now = self.wall()
        if record is not None and record.remaining(now) > refresh_within:
            with self._lock:
                counters.hits += 1
            return self._answer(record, now, ttl)
        lease_key = self._lease_key(key)
        token = base64.b64encode(os.urandom(12))
        won: Optional[bool]
        try:
            won = self._op(counters, lambda: self.store.add(lease_key, token, self._lease_ttl()))
        except _Unavailable:
            won = None  # fetch ourselves, write nothing
        if won:
            # Won, but maybe just after another winner wrote and released: look once more.
            try:
                again, _ = self._read(counters, key, bad)
            except _Unavailable:
                again = None
            if again is not None and again.remaining(self.wall()) > refresh_within:
                self._give_back(counters, lease_key, token, won)
                with self._lock:
                    counters.hits += 1
                return self._answer(again, self.wall(), ttl)
        if (
            won is False
            and record is not None
            and record.value is not None
            and record.remaining(now) > 0
        ):
            # Someone else is refreshing a value still fresh: use it meanwhile.
            with self._lock:
                counters.hits += 1
            return self._answer(record, now, ttl)
        if won is False:
            waited = self._wait(counters, key, lease_key, bad)
            if waited is not None:  # counted as a hit (after a wait, see shared_lease_waits)
                return self._answer(waited, self.wall(), ttl)
        with self._lock:
            counters.misses += 1  # this environment fetches upstream
        try:
            value = upstream()
        except NotFoundError as exc:
            if won is not None and self._settings.negative and negative_ttl > 0:
                started = self.wall()
                rec = SharedRecord(None, started, started + negative_ttl, str(exc))
                self._write(counters, key, rec, negative_ttl)
            self._give_back(counters, lease_key, token, won)
            raise
        except TransientError:
            self._give_back(counters, lease_key, token, won)
            if (
                not has_local
                and record is not None
                and record.value is not None
                and now < record.expires_at + stale_if_error
            ):
                with self._lock:
                    counters.stale += 1
                log.warning(
                    "%s %r: upstream failed; serving the shared tier's stale copy",
                    item.route,
                    item.name,
                )
                return Fetched(
                    record.value,
                    max(0.0, now - record.fetched_at),
                    0.0,
                    stale=True,
                    overdue=max(0.0, now - record.expires_at),
                )
            raise
        except BaseException:
            self._give_back(counters, lease_key, token, won)
            raise
        if won is not None:
            started = self.wall()
            self._write(
                counters, key, SharedRecord(value, started, started + ttl), ttl + stale_if_error
            )
        self._give_back(counters, lease_key, token, won)
        return Fetched(value, 0.0, ttl)

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
        self, counters: _RouteCounters, key: str, lease_key: str, bad: Optional[bytes]
    ) -> Optional[SharedRecord]:
        """Poll for the lease winner's value, up to ``lease_wait``; None if it does not come
        (the winner failed, gave the lease back, or is slow) or the store fails."""
        with self._lock:
            counters.waits += 1
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
                released = self._op(counters, lambda: self.store.get(lease_key)) is None
                record, _ = self._read(counters, key, bad)
            except _Unavailable:
                return None
            if record is not None and record.remaining(self.wall()) > 0:
                with self._lock:
                    counters.hits += 1
                return record
            if released:  # the winner gave up without writing: fetch ourselves
                log.debug("%r: the lease was given back without a value", key)
                return None

    def _give_back(
        self, counters: _RouteCounters, lease_key: str, token: bytes, won: Optional[bool]
    ) -> None:
        if won:
            with contextlib.suppress(_Unavailable):  # if not, it expires by itself
                self._op(counters, lambda: self.store.release(lease_key, token))

    # -- store operations ----------------------------------------------------------------

    def _op(self, counters: _RouteCounters, fn: Callable[[], Any]) -> Any:
        if not self.breaker.allow():
            raise _Unavailable
        started = time.perf_counter()
        try:
            result = fn()
        except StoreError as exc:
            with self._lock:
                counters.errors += 1
            if self.breaker.failure():
                log.warning(
                    "shared tier %s is failing (%s); reading upstream directly, probing it "
                    "again in %.0fs",
                    redact_url(self.config.url),
                    exc,
                    float(self._settings.breaker_cooldown),
                )
            else:
                log.debug("shared tier operation failed: %s", exc)
            raise _Unavailable from None
        elapsed = time.perf_counter() - started
        with self._lock:
            counters.latencies.append(elapsed)
        if self.breaker.success():
            log.warning("shared tier %s answers again; using it", redact_url(self.config.url))
        return result

    def _sealer_for(self, counters: _RouteCounters) -> Sealer:
        """The sealer, made on first use (the key may come from Secrets Manager); a failure to
        get the key makes the tier unavailable like a store failure."""
        if self._sealer is not None:
            return self._sealer
        if self.breaker.state == "open":  # looking does not take the half-open probe
            raise _Unavailable
        try:
            return self._seal_key()
        except StoreError as exc:
            with self._lock:
                counters.errors += 1
            self.breaker.failure()
            log.warning("shared tier unusable: %s", exc)
            raise _Unavailable from None

    def _seal_key(self) -> Sealer:
        sealer = self._sealer
        if sealer is not None:
            return sealer
        with self._sealer_lock:
            if self._sealer is None:
                key = self.config.key
                if key is None:
                    secret = self._settings.key_secret
                    if not secret or self._read_secret is None:
                        raise StoreError("no encryption key for the shared tier")
                    try:
                        text = self._read_secret(secret)
                    except Exception as exc:
                        raise StoreError(
                            f"could not read the key secret {secret!r}: {type(exc).__name__}"
                        ) from None
                    try:
                        key = decode_key(text, f"secret {secret}")
                    except Exception as exc:
                        raise StoreError(str(exc)) from None
                self._sealer = Sealer(key)
            return self._sealer

    def _read(
        self, counters: _RouteCounters, key: str, known_bad: Optional[bytes] = None
    ) -> Tuple[Optional[SharedRecord], Optional[bytes]]:
        """The record at ``key`` (None if absent or rejected) and the bytes read.
        ``known_bad``: bytes already rejected once, not counted or warned about again."""
        sealer = self._sealer_for(counters)
        data = self._op(counters, lambda: self.store.get(key))
        if data is None or data == known_bad:
            return None, data
        try:
            return decode_record(sealer.open(key.encode("utf-8"), data)), data
        except (UnsealError, ValueError, KeyError, TypeError) as exc:
            with self._lock:
                counters.rejected += 1
            log.warning("shared entry %r rejected and treated as a miss: %s", key, exc)
            return None, data

    def _write(self, counters: _RouteCounters, key: str, record: SharedRecord, ttl: float) -> None:
        try:
            plaintext = encode_record(record)
        except (TypeError, ValueError) as exc:
            log.debug("not sharing %r: %s", key, exc)
            return
        try:
            sealer = self._sealer_for(counters)
            sealed = sealer.seal(key.encode("utf-8"), plaintext)
            self._op(counters, lambda: self.store.set(key, sealed, ttl))
        except _Unavailable:
            return
        with self._lock:
            counters.writes += 1

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
        with self._lock:
            counters = self._counters[items[0].route] if items else _RouteCounters()
        missing = self._lookup_into(counters, shared, found)
        if not missing:
            return found, None
        import hashlib  # here: loading OpenSSL's hashes is not free, and only a prefetch needs it

        # The lease is named after everything asked for, not after what this environment found
        # missing: an environment that looked while another was still writing its batch would
        # otherwise take a lease of its own on the remainder and fetch it again.
        digest = hashlib.sha256("\n".join(sorted(self.storage_key(i) for i in shared)).encode())
        lease_key = f"{self._settings.prefix}lease:prefetch:{digest.hexdigest()}"
        token = base64.b64encode(os.urandom(12))
        try:
            won = self._op(counters, lambda: self.store.add(lease_key, token, self._lease_ttl()))
        except _Unavailable:
            return found, None
        if won:
            # The environment that held the lease before may have just written the values.
            missing = self._lookup_into(counters, missing, found)
            return found, (lease_key, token)
        with self._lock:
            counters.waits += 1
        deadline = self._monotonic() + float(self._settings.lease_wait)
        pause = 0.01
        while missing and self._monotonic() < deadline:
            self._sleep(min(pause, max(0.0, deadline - self._monotonic())))
            pause = min(pause * 2, 0.1)
            try:
                released = self._op(counters, lambda: self.store.get(lease_key)) is None
            except _Unavailable:
                break
            missing = self._lookup_into(counters, missing, found)
            if released:
                break
        return found, None

    def _lookup_into(
        self, counters: _RouteCounters, items: Sequence[Item], found: Dict[Item, Fetched]
    ) -> List[Item]:
        missing: List[Item] = []
        for i, item in enumerate(items):
            try:
                record, _ = self._read(counters, self.storage_key(item))
            except _Unavailable:
                missing.extend(items[i:])
                break
            now = self.wall()
            if record is None or record.value is None or record.remaining(now) <= 0:
                missing.append(item)
                continue
            with self._lock:
                counters.hits += 1
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
        with self._lock:
            counters = self._counters[values[0][0].route] if values else _RouteCounters()
        for item, value, ttl in values:
            if ttl <= 0:
                continue
            with self._lock:
                counters.misses += 1
            started = self.wall()
            record = SharedRecord(value, started, started + ttl)
            self._write(counters, self.storage_key(item), record, ttl + stale_if_error)
        if lease is not None:
            self._give_back(counters, lease[0], lease[1], True)

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
            return (counters or _RouteCounters()).as_dict()

    def routes(self) -> Tuple[str, ...]:
        """Routes the tier has counters for."""
        with self._lock:
            return tuple(self._counters)

    def close(self) -> None:
        """Drop the store's connections."""
        self.store.close()
