"""The startup prefetch: declared items fetched into the cache with the providers' batch APIs,
while a read of one of them joins the batch instead of calling upstream itself."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import attrs

from cachelayer.core.calls import Workers
from cachelayer.core.entries import CachePolicy, Key, Lookup, PrefetchReport, RouteStats, copy_error
from cachelayer.core.lru import EntryTable
from cachelayer.errors import CachelayerError, NotFoundError, ThrottlingError, TransientError
from cachelayer.provider import Item, Provider, SupportsFetchMany, Value

if TYPE_CHECKING:
    from cachelayer.shared.tier import SharedTier

__all__ = ["CacheParts", "prefetch"]

log = logging.getLogger("cachelayer.cache")

Result = Union[Value, Exception]


@attrs.frozen
class CacheParts:
    """The parts of a ``Cache`` the prefetch works on: its fetches in flight by key (which
    reads join), its worker threads, its entries, its counters, its shared tier."""

    inflight: Dict[Key, asyncio.Future[Lookup]]
    workers: Workers
    table: EntryTable
    stats: Dict[str, RouteStats]
    shared: Optional[SharedTier]
    policy: CachePolicy
    clock: Callable[[], float]


async def prefetch(cache: CacheParts, provider: Provider, items: Sequence[Item]) -> PrefetchReport:
    """Fetch ``items`` into the cache (see ``Cache.prefetch``)."""
    batch = _Batch(cache, provider, items)
    try:
        return await batch.run(items)
    finally:
        batch.release()


class _Batch:
    """One provider's prefetch: the keys it holds in flight, and what it got for each item."""

    def __init__(self, cache: CacheParts, provider: Provider, items: Sequence[Item]) -> None:
        self.cache = cache
        self.provider = provider
        self.started = time.monotonic()
        self.results: Dict[Item, Result] = {}
        # A read of a prefetched item arriving now joins this batch instead of making its own
        # upstream call: its key is in flight until the batch has answered.
        loop = asyncio.get_running_loop()
        inflight = cache.inflight
        self.joined: Dict[Key, asyncio.Future[Lookup]] = {}
        for item in items:
            if item.key not in inflight:
                self.joined[item.key] = inflight[item.key] = loop.create_future()

    async def run(self, items: Sequence[Item]) -> PrefetchReport:
        cache = self.cache
        route = items[0].route if items else self.provider.route
        shared_fetched, lease, items = await self._from_shared(route, items)
        await self._fetch(items)
        fetched, failed, to_share = self._settle(items)
        if cache.shared is not None and (to_share or lease is not None):
            await cache.workers.run_shared(
                cache.shared.prefetch_store,
                route,
                to_share,
                cache.policy.stale_if_error,
                lease,
            )
        return PrefetchReport(shared_fetched + fetched, failed, time.monotonic() - self.started)

    def release(self) -> None:
        """Whatever happened, no key stays in flight and no joined read waits forever."""
        inflight = self.cache.inflight
        for key, future in self.joined.items():
            if inflight.get(key) is future:
                del inflight[key]
            if not future.done():
                future.set_exception(
                    TransientError(
                        "the startup prefetch of this item did not finish (init time ran "
                        "out or the extension is stopping); ask again"
                    )
                )
                future.exception()  # retrieved here: no "never retrieved" warning

    def _waiter(self, item: Item) -> Optional[asyncio.Future[Lookup]]:
        """The joined reads' future of ``item``, no longer in flight."""
        waiter = self.joined.pop(item.key, None)
        if waiter is not None and self.cache.inflight.get(item.key) is waiter:
            del self.cache.inflight[item.key]
        return waiter

    async def _from_shared(
        self, route: str, items: Sequence[Item]
    ) -> Tuple[int, Any, Sequence[Item]]:
        """``(items found, the shared tier's lease, the items still to fetch)``: other
        environments may have fetched these already (a wave of cold starts)."""
        cache = self.cache
        if cache.shared is None or not items:
            return 0, None, items
        found, lease = await cache.workers.run_shared(
            cache.shared.prefetch_lookup, route, list(items), cache.table.ttl
        )
        for item, fetched in found.items():
            lookup = cache.table.store(
                self.provider, item, fetched.value, fetched.age, fetched.remaining
            )
            waiter = self._waiter(item)
            if waiter is not None:
                waiter.set_result(lookup)
        return len(found), lease, [i for i in items if i not in found]

    async def _fetch(self, items: Sequence[Item]) -> None:
        """Everything into ``results``: one batch call, then one call per item it missed."""
        provider, run, results = self.provider, self.cache.workers.run, self.results
        if items and isinstance(provider, SupportsFetchMany):
            try:
                results.update(await run(provider.fetch_many, items[0].route, list(items)))
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
                        results[item] = await run(provider.fetch, item.route, item)
                    except Exception as exc:
                        results[item] = exc

            await asyncio.gather(*(one(i) for i in missing))

    def _settle(
        self, items: Sequence[Item]
    ) -> Tuple[int, Dict[Key, str], List[Tuple[Item, Value, float]]]:
        """Keep each result and answer its joined reads: ``(fetched, failed reasons by key,
        what to store in the shared tier)``."""
        cache = self.cache
        failed: Dict[Key, str] = {}
        fetched = 0
        to_share = []
        for item in items:
            result = self.results.get(item)
            waiter = self._waiter(item)
            if isinstance(result, Value):
                lookup = cache.table.store(self.provider, item, result)
                to_share.append((item, result, cache.table.ttl(item)))
                if waiter is not None:
                    waiter.set_result(lookup)
                fetched += 1
                continue
            failed[item.key] = self._failed(item, result, waiter)
        return fetched, failed, to_share

    def _failed(
        self, item: Item, result: Optional[Exception], waiter: Optional[asyncio.Future[Lookup]]
    ) -> str:
        """Count and log an item the prefetch could not get; the reason, for the report."""
        cache = self.cache
        if isinstance(result, NotFoundError):
            cache.table.remember_not_found(self.provider, item, copy_error(result), cache.clock())
        else:
            cache.stats[item.route].upstream_errors += 1
            if isinstance(result, ThrottlingError):
                cache.stats[item.route].throttles += 1
        if waiter is not None:
            error = (
                result
                if isinstance(result, Exception)
                else TransientError(
                    f"{item.route} {item.name!r}: the startup prefetch returned nothing for it"
                )
            )
            waiter.set_exception(error)
            waiter.exception()  # a waiter may or may not be there to retrieve it
        reason = str(result) if isinstance(result, CachelayerError) else type(result).__name__
        log.warning(
            "prefetch of %s %r failed: %s; it will be fetched on demand",
            item.route,
            item.name,
            reason,
        )
        return reason
