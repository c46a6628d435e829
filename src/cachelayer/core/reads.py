"""Reads of one provider's value by another, through the cache: ``ProviderContext.read``."""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Optional

import attrs

from cachelayer.core.cache import Cache, current_loop, nested_read
from cachelayer.core.router import Router
from cachelayer.errors import UpstreamTimeoutError
from cachelayer.provider import Value

# A provider waiting on another value holds a worker thread: bound the wait so a stuck read can
# never hold it for longer than an upstream call would.
READ_TIMEOUT = 15.0


@attrs.define
class CacheReader:
    """``read(route, name)``: the value ``GET /<route>?name=<name>`` would answer.

    Called from a provider's worker thread; the read itself runs on the event loop that started
    that provider call, so it shares the cache's single-flight, TTL and stale-if-error. A fetch
    the read starts runs on the cache's separate read workers: every main worker may be held by
    a reader waiting for it. The wait is bounded all the same.
    """

    cache: Cache
    router: Optional[Router] = None
    timeout: float = READ_TIMEOUT

    def __call__(self, route: str, name: str) -> Value:
        loop = current_loop()
        if loop is None or self.router is None:
            raise RuntimeError(
                "ProviderContext.read works only inside fetch()/refresh() calls made by the core"
            )
        router = self.router

        async def lookup() -> Value:
            nested_read.set(True)  # this task's own context: its fetches use the read workers
            provider, item = router.resolve(route, {"name": name})
            return (await self.cache.get(provider, item)).value

        future = asyncio.run_coroutine_threadsafe(lookup(), loop)
        try:
            return future.result(self.timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise UpstreamTimeoutError(
                f"reading /{route} {name!r} through the cache took over {self.timeout:.0f}s"
            ) from None
