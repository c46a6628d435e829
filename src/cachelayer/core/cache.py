"""The cache: expiring entries per key, single-flight fetches, stale-if-error, LRU bounds."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import logging
import random
import threading
import time
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    List,
    Mapping,
    NamedTuple,
    Optional,
    Sequence,
    Set,
    Tuple,
    Union,
)

import attrs

from cachelayer.errors import (
    CachelayerError,
    NotFoundError,
    ThrottlingError,
    TransientError,
    UpstreamError,
)
from cachelayer.provider import Item, Provider, SupportsFetchMany, SupportsRefresh, Value

log = logging.getLogger("cachelayer.cache")

Key = Tuple[str, str, Tuple[Tuple[str, str], ...]]

# Backoff between retries of a failing key while its stale value is served.
RETRY_BASE = 1.0
RETRY_CAP = 60.0

_current = threading.local()

# Set in the tasks of ``ProviderContext.read``: a fetch they start runs on the nested executor,
# because the reader holds a worker of the main one while it waits (all of them, at worst).
nested_read: contextvars.ContextVar[bool] = contextvars.ContextVar("nested_read", default=False)


def current_route() -> Optional[str]:
    """The route whose provider is running in this worker thread (for counting AWS calls)."""
    return getattr(_current, "route", None)


def current_loop() -> Optional[asyncio.AbstractEventLoop]:
    """The event loop that started the provider call running in this worker thread, if any."""
    return getattr(_current, "loop", None)


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


@attrs.define(slots=True)
class Entry:
    """One cached value, or a remembered "not found" (``value`` None), and its timing."""

    item: Item
    provider: Provider
    stats: RouteStats
    value: Optional[Value]
    error: Optional[NotFoundError]
    ttl: float
    fetched_at: float
    expires_at: float
    read_since_refresh: bool = False
    failures: int = 0
    retry_at: float = 0.0

    @property
    def size(self) -> int:
        return self.value.size if self.value is not None else 0


class RouteStats:
    """Counters of one route."""

    __slots__ = (
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
        self.not_modified = self.throttles = 0

    def as_dict(self) -> Dict[str, int]:
        return {name: getattr(self, name) for name in sorted(self.__slots__)}


@attrs.frozen
class PrefetchReport:
    """What a prefetch did: items fetched, and the failures by key (message only, no values)."""

    fetched: int
    failed: Mapping[Key, str]
    seconds: float


class Cache:
    """Values by ``Item.key``, fetched through providers on miss.

    ``peek`` is the synchronous fast path for fresh hits (no coroutine); ``get`` does a full
    read: a hit, or one coalesced upstream fetch run in a worker thread (single-flight), or
    the stale value when the refresh fails transiently (stale-if-error). "Not found" is
    remembered for ``negative_ttl``. Entries are bounded by count and bytes, LRU first out.
    Must be used from one event loop thread; only provider calls run in workers.
    """

    def __init__(
        self,
        policy: CachePolicy,
        *,
        clock: Callable[[], float] = time.monotonic,
        executor: Optional[Executor] = None,
        rng: Optional[random.Random] = None,
    ) -> None:
        self.policy = policy
        self._clock = clock
        self._executor = executor or ThreadPoolExecutor(16, thread_name_prefix="cachelayer-fetch")
        self._nested_executor: Optional[ThreadPoolExecutor] = None  # made on the first read
        self._rng = rng or random.Random()
        self._entries: collections.OrderedDict[Key, Entry] = collections.OrderedDict()
        self._bytes = 0
        self._inflight: Dict[Key, asyncio.Future[Lookup]] = {}
        self._background: Set[asyncio.Task[Any]] = set()
        self._stats: Dict[str, RouteStats] = collections.defaultdict(RouteStats)
        self._lock = threading.Lock()  # guards stats touched from worker threads
        # Per key with no value to serve: (failures logged, no new warning before this time).
        self._warned: Dict[Key, Tuple[int, float]] = {}

    # -- reads -----------------------------------------------------------------------------

    def peek(self, item: Item) -> Optional[Lookup]:
        """A fresh hit for ``item`` (counted as a hit), or None. Never blocks, never fetches."""
        key = item.key
        entry = self._entries.get(key)
        if entry is None or entry.value is None:
            return None
        now = self._clock()
        if now >= entry.expires_at:
            return None
        self._entries.move_to_end(key)
        entry.read_since_refresh = True
        entry.stats.hits += 1
        return Lookup(entry.value, "hit", now - entry.fetched_at, entry.expires_at - now)

    async def get(self, provider: Provider, item: Item, *, refresh: bool = False) -> Lookup:
        """Read ``item``: a hit, or one coalesced upstream fetch, or a stale value if upstream
        fails transiently. Raises NotFoundError / UpstreamError / TransientError.

        ``refresh`` skips the cached value and fetches now (joining a fetch already in
        flight for the key, so concurrent refreshes still make one upstream call)."""
        key = item.key
        stats = self._stats[item.route]
        now = self._clock()
        entry = self._entries.get(key)
        if entry is not None and not refresh:
            if now < entry.expires_at:
                self._entries.move_to_end(key)
                if entry.value is None:
                    stats.negative_hits += 1
                    assert entry.error is not None
                    # Re-raising one stored instance would chain every raise's frames onto
                    # its traceback: it would grow with each negative hit.
                    raise entry.error.with_traceback(None)
                entry.read_since_refresh = True
                stats.hits += 1
                return Lookup(entry.value, "hit", now - entry.fetched_at, entry.expires_at - now)
            if entry.value is not None and entry.failures and self._within_stale(entry, now):
                # Upstream is failing: answer at once from the stale value, and let at most
                # one retry run, when its backoff is over.
                entry.read_since_refresh = True
                if now >= entry.retry_at and key not in self._inflight:
                    self._spawn(self._start_fetch(provider, item))
                stats.stale += 1
                return Lookup(entry.value, "stale", now - entry.fetched_at, 0.0)
        future = self._inflight.get(key)
        if future is None:
            future = self._start_fetch(provider, item)
        try:
            lookup = await asyncio.shield(future)
        except BaseException:
            stats.misses += 1
            raise
        if lookup.state == "stale":
            stats.stale += 1
        else:
            stats.misses += 1
            # The read that caused the fetch is a read: refresh-ahead should keep this entry
            # fresh for a function that reads it once per TTL.
            held = self._entries.get(key)
            if held is not None and held.value is lookup.value:
                held.read_since_refresh = True
        return lookup

    # -- fetching --------------------------------------------------------------------------

    def _start_fetch(self, provider: Provider, item: Item) -> asyncio.Future[Lookup]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Lookup] = loop.create_future()
        self._inflight[item.key] = future

        def done(call: asyncio.Future[Value]) -> None:
            del self._inflight[item.key]
            try:
                value = call.result()
            except BaseException as exc:
                self._settle_failure(future, provider, item, exc)
            else:
                if value is previous:
                    self._stats[item.route].not_modified += 1
                future.set_result(self._store(provider, item, value))

        held = self._entries.get(item.key)
        previous = held.value if held is not None else None
        log.debug(
            "fetching %s %r from upstream (%s)",
            item.route,
            item.name,
            "refresh" if previous is not None else "miss",
        )
        if previous is not None and isinstance(provider, SupportsRefresh):
            call = self._run(provider.refresh, item.route, item, previous)
        else:
            call = self._run(provider.fetch, item.route, item)
        call.add_done_callback(done)
        return future

    def _run(self, fn: Callable[..., Any], route: str, *args: Any) -> asyncio.Future[Any]:
        """Call a provider method in a worker thread, its AWS calls counted for ``route``."""
        # Create the route's counters here, on the loop's thread: the worker only increments
        # them, so it never inserts into the dict while ``stats()`` iterates it.
        if route not in self._stats:
            self._stats[route] = RouteStats()
        loop = asyncio.get_running_loop()
        executor = self._executor
        if nested_read.get():
            if self._nested_executor is None:
                self._nested_executor = ThreadPoolExecutor(4, thread_name_prefix="cachelayer-read")
            executor = self._nested_executor
        return loop.run_in_executor(executor, self._call_provider, fn, route, loop, *args)

    def _call_provider(
        self, fn: Callable[..., Any], route: str, loop: asyncio.AbstractEventLoop, *args: Any
    ) -> Any:
        _current.route, _current.loop = route, loop
        _current.calls = 0
        try:
            return fn(*args)
        finally:
            _current.route = _current.loop = None
            if not _current.calls:
                # A provider that calls no AWS client (HTTP, a database, a file): its call
                # is the upstream call.
                self.count_upstream_call(route)

    def _settle_failure(
        self, future: asyncio.Future[Lookup], provider: Provider, item: Item, exc: BaseException
    ) -> None:
        stats = self._stats[item.route]
        now = self._clock()
        entry = self._entries.get(item.key)
        if isinstance(exc, NotFoundError):
            self._remember_not_found(provider, item, exc, now)
            future.set_exception(exc)
            return
        stats.upstream_errors += 1
        if isinstance(exc, ThrottlingError):
            stats.throttles += 1
        if not isinstance(exc, CachelayerError):
            # A provider bug or an unclassified library error: never show its text (it might
            # hold a value), log it whole for the operator.
            log.error("provider %s failed on %r", item.route, item.name, exc_info=exc)
            exc = UpstreamError(
                f"provider {item.route!r} failed unexpectedly ({type(exc).__name__}); see the extension's log"
            )
        if (
            isinstance(exc, TransientError)
            and entry is not None
            and entry.value is not None
            and self._within_stale(entry, now)
        ):
            entry.failures += 1
            backoff = min(RETRY_CAP, RETRY_BASE * 2 ** (entry.failures - 1))
            entry.retry_at = now + backoff * (0.5 + self._rng.random() / 2)  # jitter
            log.warning(
                "%s %r: refresh failed (%s); serving the stale value, retry in %.1fs",
                item.route,
                item.name,
                exc,
                entry.retry_at - now,
            )
            future.set_result(Lookup(entry.value, "stale", now - entry.fetched_at, 0.0))
            return
        self._warn_failure(item, exc, now)
        future.set_exception(exc)

    def _warn_failure(self, item: Item, exc: CachelayerError, now: float) -> None:
        """Log a failed upstream call for a key with no value to serve, once per backoff
        period of that key (doubling up to RETRY_CAP), so an outage does not flood the log."""
        count, quiet_until = self._warned.get(item.key, (0, 0.0))
        if now < quiet_until:
            return
        if len(self._warned) >= 1024:  # bounded: forget the oldest news rather than grow
            self._warned.clear()
        self._warned[item.key] = (count + 1, now + min(RETRY_CAP, RETRY_BASE * 2**count))
        # The message names the service, the operation, the key and AWS's error code; never
        # a value (error messages never carry one).
        log.warning("%s %r: upstream call failed: %s", item.route, item.name, exc)

    def _within_stale(self, entry: Entry, now: float) -> bool:
        return now < entry.expires_at + self.policy.stale_if_error

    def _ttl(self, item: Item) -> float:
        return item.ttl if item.ttl is not None else self.policy.ttl_for(item.route)

    def _store(self, provider: Provider, item: Item, value: Value) -> Lookup:
        self._warned.pop(item.key, None)
        now = self._clock()
        ttl = self._ttl(item)
        if ttl <= 0 or value.size > self.policy.max_bytes or self.policy.max_entries <= 0:
            self._drop(item.key)
            return Lookup(value, "miss", 0.0, 0.0)
        self._put(Entry(item, provider, self._stats[item.route], value, None, ttl, now, now + ttl))
        return Lookup(value, "miss", 0.0, ttl)

    def _remember_not_found(
        self, provider: Provider, item: Item, exc: NotFoundError, now: float
    ) -> None:
        self._drop(item.key)
        ttl = self.policy.negative_ttl
        if ttl > 0 and self.policy.max_entries > 0:
            self._put(
                Entry(item, provider, self._stats[item.route], None, exc, ttl, now, now + ttl)
            )

    def _put(self, entry: Entry) -> None:
        key = entry.item.key
        self._drop(key)
        self._entries[key] = entry
        self._bytes += entry.size
        while len(self._entries) > self.policy.max_entries or self._bytes > self.policy.max_bytes:
            _, old = self._entries.popitem(last=False)
            self._bytes -= old.size
            old.stats.evictions += 1

    def _drop(self, key: Key) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= old.size

    def _spawn(self, future: asyncio.Future[Any]) -> None:
        async def quiet() -> None:
            # Already counted and logged; nobody was waiting for this one.
            with contextlib.suppress(CachelayerError):
                await future

        task = asyncio.ensure_future(quiet())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- lifecycle: refresh-ahead and prefetch --------------------------------------------

    def refresh_ahead(self) -> int:
        """Start background refreshes of entries read since their last refresh that are in the
        last ``refresh_ahead`` share of their TTL or already expired; return how many started.

        Called on each Lambda INVOKE, when the environment has just been thawed: timers do not
        run while frozen, so this is the moment to refresh what the function keeps reading.
        """
        if self.policy.refresh_ahead <= 0:
            return 0
        now = self._clock()
        started = 0
        for key, entry in list(self._entries.items()):
            if entry.value is None or not entry.read_since_refresh or key in self._inflight:
                continue
            if now < entry.expires_at - entry.ttl * self.policy.refresh_ahead:
                continue
            if entry.failures and now < entry.retry_at:
                continue
            entry.read_since_refresh = False
            entry.stats.refreshes_ahead += 1
            self._spawn(self._start_fetch(entry.provider, entry.item))
            started += 1
        return started

    async def prefetch(self, provider: Provider, items: Sequence[Item]) -> PrefetchReport:
        """Fetch ``items`` into the cache with the provider's batch API when it has one.

        Failures are logged per item and reported; those items are fetched again on demand.
        """
        started = time.monotonic()
        results: Dict[Item, Union[Value, Exception]] = {}
        if items and isinstance(provider, SupportsFetchMany):
            try:
                got = await self._run(provider.fetch_many, items[0].route, list(items))
                results.update(got)
            except Exception as exc:  # the whole batch failed: fall back to one by one
                # (Not BaseException: a cancelled prefetch, e.g. out of init time, must stop.)
                log.warning(
                    "%s: batch prefetch failed (%s); fetching one by one",
                    provider.name,
                    exc if isinstance(exc, CachelayerError) else type(exc).__name__,
                )
        missing = [i for i in items if i not in results]
        if missing:
            gate = asyncio.Semaphore(8)

            async def one(item: Item) -> None:
                async with gate:
                    try:
                        results[item] = await self._run(provider.fetch, item.route, item)
                    except Exception as exc:
                        results[item] = exc

            await asyncio.gather(*(one(i) for i in missing))
        failed: Dict[Key, str] = {}
        fetched = 0
        for item in items:
            result = results.get(item)
            if isinstance(result, Value):
                self._store(provider, item, result)
                fetched += 1
                continue
            if isinstance(result, NotFoundError):
                self._remember_not_found(provider, item, result, self._clock())
            else:
                self._stats[item.route].upstream_errors += 1
                if isinstance(result, ThrottlingError):
                    self._stats[item.route].throttles += 1
            reason = str(result) if isinstance(result, CachelayerError) else type(result).__name__
            failed[item.key] = reason
            log.warning(
                "prefetch of %s %r failed: %s; it will be fetched on demand",
                item.route,
                item.name,
                reason,
            )
        return PrefetchReport(fetched, failed, time.monotonic() - started)

    # -- operations ------------------------------------------------------------------------

    def count_upstream_call(self, route: Optional[str]) -> None:
        """Count one AWS request made on behalf of ``route`` (called from worker threads)."""
        stats = self._stats.get(route) if route is not None else None
        if stats is None:  # not a provider call started by ``_run``
            return
        if route == current_route():
            _current.calls = getattr(_current, "calls", 0) + 1
        with self._lock:
            stats.upstream_calls += 1

    def invalidate(self, route: Optional[str] = None, name: Optional[str] = None) -> int:
        """Drop one entry (route+name, all variants), a route, or everything; return how many."""
        doomed: List[Key] = [
            k
            for k in self._entries
            if (route is None or k[0] == route) and (name is None or k[1] == name)
        ]
        for k in doomed:
            self._drop(k)
        return len(doomed)

    def stats(self, routes: Iterable[str] = ()) -> Dict[str, Dict[str, int]]:
        """Per route: hits, misses, stale, negative_hits, upstream_calls, upstream_errors,
        throttles, evictions, refreshes_ahead, entries, bytes. ``routes`` are listed even when idle."""
        out: Dict[str, Dict[str, int]] = {}
        for route in set(routes) | set(self._stats):
            d = self._stats[route].as_dict()
            d["entries"] = 0
            d["bytes"] = 0
            out[route] = d
        for key, entry in self._entries.items():
            out[key[0]]["entries"] += 1
            out[key[0]]["bytes"] += entry.size
        return dict(sorted(out.items()))

    @property
    def size(self) -> Tuple[int, int]:
        """(entries, bytes) held now."""
        return len(self._entries), self._bytes

    async def drain(self, timeout: float = 1.0) -> None:
        """Wait (briefly) for background refreshes to finish, e.g. before shutdown."""
        if self._background:
            await asyncio.wait(list(self._background), timeout=timeout)

    def close(self) -> None:
        """Stop the worker threads without waiting for calls in flight."""
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self._nested_executor is not None:
            self._nested_executor.shutdown(wait=False, cancel_futures=True)
