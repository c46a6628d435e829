"""The cache: expiring entries per key, single-flight fetches, stale-if-error, failure backoff,
LRU bounds by count and by every byte held.

Its records are in ``core.entries``, the worker threads in ``core.calls``, the LRU table in
``core.lru`` and the startup prefetch in ``core.prefetch``; the names they had here are
re-exported, so ``cachelayer.core.cache`` stays the one place to import the cache from.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import random
import time
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, Optional, Sequence, Set, Tuple

from cachelayer.core import prefetch as _prefetch
from cachelayer.core.calls import Workers, current_loop, current_route, nested_read, uncounted
from cachelayer.core.entries import (
    ENTRY_OVERHEAD,
    RETRY_BASE,
    RETRY_CAP,
    THROTTLED_BASE,
    CachePolicy,
    Entry,
    Key,
    Lookup,
    PrefetchReport,
    RouteStats,
    consume,
    copy_error,
    held_bytes,
    short,
    value_bytes,
)
from cachelayer.core.lru import EntryTable
from cachelayer.errors import (
    CachelayerError,
    NotFoundError,
    ThrottlingError,
    TransientError,
    UpstreamError,
    UpstreamTimeoutError,
)
from cachelayer.provider import Item, Provider, SupportsRefresh, Value

if TYPE_CHECKING:
    from cachelayer.shared.tier import Fetched, SharedTier

__all__ = [
    "ENTRY_OVERHEAD",
    "RETRY_BASE",
    "RETRY_CAP",
    "THROTTLED_BASE",
    "Cache",
    "CachePolicy",
    "Entry",
    "Key",
    "Lookup",
    "PrefetchReport",
    "RouteStats",
    "current_loop",
    "current_route",
    "held_bytes",
    "nested_read",
    "uncounted",
    "value_bytes",
]

log = logging.getLogger("cachelayer.cache")


class Cache:
    """Values by ``Item.key``, fetched through providers on miss.

    ``peek`` is the synchronous fast path for fresh hits (no coroutine); ``get`` does a full
    read: a hit, or one coalesced upstream fetch run in a worker thread (single-flight), or
    the stale value when the refresh fails transiently or takes longer than ``stale_wait``
    (stale-if-error). "Not found" is remembered for ``negative_ttl``, a transient failure of a
    key with nothing to serve for a jittered backoff. A read waits at most ``upstream_timeout``
    for upstream (then 504; the fetch goes on and its result is kept). Entries are bounded by
    count and by bytes (names, values, metadata, stored errors, and what ``hold`` adds), LRU
    first out. Must be used from one event loop thread; only provider calls run in workers.
    """

    def __init__(
        self,
        policy: CachePolicy,
        *,
        clock: Callable[[], float] = time.monotonic,
        executor: Optional[Executor] = None,
        rng: Optional[random.Random] = None,
        shared: Optional[SharedTier] = None,
    ) -> None:
        self.policy = policy
        # The optional second tier, asked on every upstream fetch (cachelayer.shared).
        self.shared = shared
        self._clock = clock
        self._rng = rng or random.Random()
        self._stats: Dict[str, RouteStats] = collections.defaultdict(RouteStats)
        self._workers = Workers(self._stats, executor)
        self._table = EntryTable(policy, self._stats, clock, self._rng)
        self._entries = self._table.entries  # read directly on the hot paths
        self._inflight: Dict[Key, asyncio.Future[Lookup]] = {}
        self._background: Set[asyncio.Task[Any]] = set()
        self._watched: Set[asyncio.Future[Lookup]] = set()  # fetches no reader waits for
        self._parts = _prefetch.CacheParts(
            self._inflight, self._workers, self._table, self._stats, shared, policy, clock
        )

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
            held = self._answer_held(provider, item, entry, stats, now)
            if held is not None:
                return held
        future = self._inflight.get(key)
        if future is None:
            future = self._start_fetch(provider, item)
        stale = entry if entry is not None and entry.value is not None else None
        if stale is not None and (refresh or not self._within_stale(stale, now)):
            stale = None  # a forced refresh waits for the new value
        lookup = await self._wait(future, item, stale, stats)
        if lookup.state == "stale":
            stats.stale += 1
        else:
            stats.misses += 1
            # The read that caused the fetch is a read: refresh-ahead should keep this entry
            # fresh for a function that reads it once per TTL.
            held_now = self._entries.get(key)
            if held_now is not None and held_now.value is lookup.value:
                held_now.read_since_refresh = True
        return lookup

    def _answer_held(
        self, provider: Provider, item: Item, entry: Entry, stats: RouteStats, now: float
    ) -> Optional[Lookup]:
        """The answer from the entry held for ``item``: a hit, the remembered error (raised),
        or the stale value while upstream is failing; None when upstream must be asked."""
        if now < entry.expires_at:
            self._entries.move_to_end(item.key)
            if entry.value is None:
                assert entry.error is not None
                error = copy_error(entry.error)
                if isinstance(error, UpstreamError):
                    # Inside a failure's backoff: the same answer, no upstream call.
                    stats.backoff_hits += 1
                    error.retry_after = entry.expires_at - now
                else:
                    stats.negative_hits += 1
                raise error
            entry.read_since_refresh = True
            stats.hits += 1
            return Lookup(entry.value, "hit", now - entry.fetched_at, entry.expires_at - now)
        if entry.value is not None and entry.failures and self._within_stale(entry, now):
            # Upstream is failing: answer at once from the stale value, and let at most
            # one retry run, when its backoff is over.
            entry.read_since_refresh = True
            if now >= entry.retry_at and item.key not in self._inflight:
                self._spawn(self._start_fetch(provider, item))
            stats.stale += 1
            return Lookup(entry.value, "stale", now - entry.fetched_at, 0.0)
        return None

    async def _wait(
        self,
        future: asyncio.Future[Lookup],
        item: Item,
        stale: Optional[Entry],
        stats: RouteStats,
    ) -> Lookup:
        """Wait for the fetch: ``upstream_timeout`` (then 504), or ``stale_wait`` when there
        is a stale value to answer with instead."""
        policy = self.policy
        wait = policy.upstream_timeout if stale is None else policy.stale_wait
        try:
            return await asyncio.wait_for(asyncio.shield(future), wait)
        except asyncio.TimeoutError:
            # The fetch goes on in its worker; its result is kept when it arrives (and
            # ``drain`` waits for it, as for any background refresh).
            if future not in self._watched:
                self._watched.add(future)
                future.add_done_callback(self._watched.discard)
                self._spawn(future)
            if stale is not None and stale.value is not None:
                stale.read_since_refresh = True  # (counted as stale by ``get``)
                now = self._clock()
                return Lookup(stale.value, "stale", now - stale.fetched_at, 0.0)
            stats.misses += 1
            raise UpstreamTimeoutError(
                f"upstream did not answer {item.route} {short(item.name)!r} within "
                f"{policy.upstream_timeout:g}s (cache.upstream_timeout); the fetch goes on "
                "and its result will be cached"
            ) from None
        except BaseException:
            stats.misses += 1
            raise

    # -- fetching --------------------------------------------------------------------------

    def _start_fetch(self, provider: Provider, item: Item) -> asyncio.Future[Lookup]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Lookup] = loop.create_future()
        future.add_done_callback(consume)
        self._inflight[item.key] = future

        def done(call: asyncio.Future[Value]) -> None:
            del self._inflight[item.key]
            try:
                result = call.result()
            except BaseException as exc:
                self._settle_failure(future, provider, item, exc)
                return
            if isinstance(result, Value):
                if result is previous:
                    self._stats[item.route].not_modified += 1
                future.set_result(self._table.store(provider, item, result))
            elif result.stale:  # upstream failed; the shared tier had a stale copy
                future.set_result(self._table.store_stale(provider, item, result))
            else:  # through the shared tier: its freshness, never more
                future.set_result(
                    self._table.store(provider, item, result.value, result.age, result.remaining)
                )

        held = self._entries.get(item.key)
        previous = held.value if held is not None else None
        log.debug(
            "fetching %s %r from upstream (%s)",
            item.route,
            item.name,
            "refresh" if previous is not None else "miss",
        )
        self._call_upstream(provider, item, previous).add_done_callback(done)
        return future

    def _call_upstream(
        self, provider: Provider, item: Item, previous: Optional[Value]
    ) -> asyncio.Future[Any]:
        """The provider's fetch (or refresh of ``previous``) in a worker, through the shared
        tier when there is one."""
        fetch: Callable[[], Value]
        if previous is not None and isinstance(provider, SupportsRefresh):
            fetch = functools.partial(provider.refresh, item, previous)
        else:
            fetch = functools.partial(provider.fetch, item)
        if self.shared is None:
            return self._workers.run(fetch, item.route)
        return self._workers.run_shared(
            self._fetch_shared,
            item.route,
            item,
            fetch,
            previous is not None,
            asyncio.get_running_loop(),
        )

    def _fetch_shared(
        self,
        item: Item,
        fetch: Callable[[], Value],
        has_local: bool,
        loop: asyncio.AbstractEventLoop,
    ) -> Fetched:
        """In a worker: read ``item`` through the shared tier, ``fetch`` being the upstream."""
        assert self.shared is not None
        ttl = self._table.ttl(item)
        return self.shared.fetch(
            item,
            functools.partial(self._workers.call_provider, fetch, item.route, loop),
            ttl=ttl,
            negative_ttl=self.policy.negative_ttl,
            stale_if_error=self.policy.stale_if_error,
            refresh_within=ttl * self.policy.refresh_ahead if has_local else 0.0,
            has_local=has_local,
        )

    def _settle_failure(
        self, future: asyncio.Future[Lookup], provider: Provider, item: Item, exc: BaseException
    ) -> None:
        stats = self._stats[item.route]
        now = self._clock()
        entry = self._entries.get(item.key)
        if isinstance(exc, NotFoundError):
            self._table.remember_not_found(provider, item, copy_error(exc), now)
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
        if not isinstance(exc, UpstreamError):  # e.g. a request botocore refused to send
            future.set_exception(exc)
            return
        if (
            isinstance(exc, TransientError)
            and entry is not None
            and entry.value is not None
            and self._within_stale(entry, now)
        ):
            entry.failures += 1
            entry.retry_at = now + self._table.backoff(entry.failures, exc)
            log.warning(
                "%s %r: refresh failed (%s); serving the stale value, retry in %.1fs",
                item.route,
                item.name,
                exc,
                entry.retry_at - now,
            )
            future.set_result(Lookup(entry.value, "stale", now - entry.fetched_at, 0.0))
            return
        self._table.remember_failure(provider, item, entry, exc, stats, now)
        future.set_exception(exc)

    def _within_stale(self, entry: Entry, now: float) -> bool:
        return now < entry.expires_at + self.policy.stale_if_error

    def hold(self, delta: int) -> None:
        """Count ``delta`` more (or, negative, fewer) bytes that a user of the cache keeps for
        its entries (the server's per-URL memos), evicting entries to stay within
        ``max_bytes``. The user keeps its own share bounded."""
        self._table.hold(delta)

    @property
    def released(self) -> int:
        """Bytes of entries dropped or evicted, ever (the server trims the allocator by it)."""
        return self._table.released

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
        A read of one of them arriving meanwhile joins the batch instead of calling upstream.
        """
        return await _prefetch.prefetch(self._parts, provider, items)

    # -- operations ------------------------------------------------------------------------

    def count_upstream_call(self, route: Optional[str]) -> None:
        """Count one AWS request made on behalf of ``route`` (called from worker threads)."""
        self._workers.count_upstream_call(route)

    def invalidate(self, route: Optional[str] = None, name: Optional[str] = None) -> int:
        """Drop one entry (route+name, all variants), a route, or everything; return how many."""
        return self._table.invalidate(route, name)

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
        if self.shared is not None:
            for route, d in out.items():
                d.update(self.shared.stats_for(route))
        return dict(sorted(out.items()))

    @property
    def size(self) -> Tuple[int, int]:
        """(entries, bytes) held now: the entries' bytes plus those counted with ``hold``."""
        return self._table.size

    async def drain(self, timeout: float = 1.0) -> None:
        """Wait (briefly) for background refreshes to finish, e.g. before shutdown."""
        if self._background:
            await asyncio.wait(list(self._background), timeout=timeout)

    def close(self) -> None:
        """Stop the worker threads without waiting for calls in flight."""
        self._workers.close()
