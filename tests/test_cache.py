"""Cache semantics with a manual clock and a scripted provider.

A stub provider is used here on purpose, and only here: these tests pin timing rules (the
instant a TTL ends, a backoff window) that no real upstream can be made to hit exactly. The same
behaviours run end to end against moto, through the fault-injecting proxy, in test_semantics.py.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import pytest

from cachelayer import Item, NotFoundError, TransientError, UpstreamError, Value
from cachelayer.core.cache import ENTRY_OVERHEAD, Cache, CachePolicy, value_bytes
from cachelayer.testing.clock import ManualClock


class ScriptedProvider:
    """Answers from ``values``; ``fail`` (an exception) makes every fetch raise it."""

    name = route = "scripted"
    services = ()
    config_schema = None

    def __init__(self) -> None:
        self.values: Dict[str, str] = {}
        self.fail: Optional[BaseException] = None
        self.calls: List[str] = []
        self.gate: Optional[threading.Event] = None
        self.in_flight = 0  # fetches running now (held at the gate, when there is one)
        self._lock = threading.Lock()
        self._moved = threading.Condition(self._lock)

    def configure(self, config: Any, context: Any) -> None:  # pragma: no cover - unused
        pass

    def declared(self) -> Sequence[Item]:
        return [self.item(n) for n in sorted(self.values)]

    def item(self, name: str, ttl: Optional[float] = None) -> Item:
        return Item(self.route, name, ttl=ttl)

    def resolve(self, name: str, params: Mapping[str, str]) -> Item:
        return self.item(name)

    def fetch(self, item: Item) -> Value:
        with self._lock:
            self.calls.append(item.name)
            self.in_flight += 1
            self._moved.notify_all()
        try:
            if self.gate is not None:
                self.gate.wait(5)
            if self.fail is not None:
                raise self.fail
            if item.name not in self.values:
                raise NotFoundError(f"{item.name} not found")
            return Value(self.values[item.name].encode())
        finally:
            with self._lock:
                self.in_flight -= 1

    def wait_in_flight(self, count: int, timeout: float = 5.0) -> bool:
        """Block until ``count`` fetches are running; False if not within ``timeout``."""
        with self._moved:
            return self._moved.wait_for(lambda: self.in_flight >= count, timeout)


async def one_fetch_held(p: ScriptedProvider, readers: Sequence[asyncio.Future[Any]]) -> None:
    """Wait until a fetch is held at ``p``'s gate, then pin that it is the only one and that
    every reader is waiting for it. The readers' first steps were queued before this waits,
    so all of them have run (and joined, or started, the fetch) when it returns."""
    assert await asyncio.to_thread(p.wait_in_flight, 1), "no fetch started within 5 s"
    assert (p.in_flight, len(p.calls)) == (1, 1)
    assert not any(r.done() for r in readers)


class BatchProvider(ScriptedProvider):
    def __init__(self) -> None:
        super().__init__()
        self.batches: List[int] = []

    def fetch_many(self, items: Sequence[Item]) -> Mapping[Item, Union[Value, Exception]]:
        self.batches.append(len(items))
        out: Dict[Item, Union[Value, Exception]] = {}
        for i in items:
            out[i] = (
                Value(self.values[i.name].encode())
                if i.name in self.values
                else NotFoundError(i.name)
            )
        return out


def make(ttl: float = 60.0, **kw: Any) -> tuple[Cache, ScriptedProvider, ManualClock]:
    clock = ManualClock()
    cache = Cache(CachePolicy(ttl_for=lambda route: ttl, **kw), clock=clock)
    return cache, ScriptedProvider(), clock


def run(coro: Any) -> Any:
    return asyncio.run(coro)


class TestTtl:
    def test_second_read_within_ttl_is_a_hit_without_upstream_call(self) -> None:
        """A value read twice within its TTL is fetched once and the second read is a hit."""
        cache, p, clock = make(ttl=60)
        p.values["a"] = "1"

        async def go() -> None:
            first = await cache.get(p, p.item("a"))
            clock.now += 59
            second = await cache.get(p, p.item("a"))
            assert (first.state, second.state) == ("miss", "hit")
            assert second.value.body == b"1"
            assert second.age == pytest.approx(59)
            assert second.remaining == pytest.approx(1)

        run(go())
        assert p.calls == ["a"]

    def test_read_after_ttl_fetches_again(self) -> None:
        """Once the TTL has passed the next read goes upstream and sees the new value."""
        cache, p, clock = make(ttl=60)
        p.values["a"] = "1"

        async def go() -> None:
            await cache.get(p, p.item("a"))
            p.values["a"] = "2"
            clock.now += 60
            assert cache.peek(p.item("a")) is None
            again = await cache.get(p, p.item("a"))
            assert (again.state, again.value.body) == ("miss", b"2")

        run(go())
        assert p.calls == ["a", "a"]

    def test_item_ttl_outranks_policy_ttl(self) -> None:
        """An Item's own TTL wins over the policy's default."""
        cache, p, clock = make(ttl=600)
        p.values["a"] = "1"

        async def go() -> None:
            await cache.get(p, p.item("a", ttl=5))
            clock.now += 5
            assert (await cache.get(p, p.item("a", ttl=5))).state == "miss"

        run(go())

    def test_ttl_zero_never_stores_but_still_coalesces(self) -> None:
        """TTL 0 means every read goes upstream, yet concurrent reads share one call."""
        cache, p, _ = make(ttl=0)
        p.values["a"] = "1"
        p.gate = threading.Event()

        async def go() -> None:
            tasks = [asyncio.ensure_future(cache.get(p, p.item("a"))) for _ in range(20)]
            await one_fetch_held(p, tasks)
            p.gate.set()
            results = await asyncio.gather(*tasks)
            assert {r.value.body for r in results} == {b"1"}
            assert cache.size == (0, 0)
            await cache.get(p, p.item("a"))

        run(go())
        assert p.calls == ["a", "a"]


class TestSingleFlight:
    def test_200_concurrent_reads_of_a_missing_key_make_one_call(self) -> None:
        """200 concurrent reads of one missing key cause exactly one upstream fetch."""
        cache, p, _ = make()
        p.values["a"] = "1"
        p.gate = threading.Event()

        async def go() -> None:
            tasks = [asyncio.ensure_future(cache.get(p, p.item("a"))) for _ in range(200)]
            await one_fetch_held(p, tasks)
            p.gate.set()
            results = await asyncio.gather(*tasks)
            assert all(r.value.body == b"1" for r in results)

        run(go())
        assert p.calls == ["a"]

    def test_waiters_all_get_the_same_error(self) -> None:
        """When the single fetch fails, every waiter gets its error."""
        cache, p, _ = make()
        p.fail = UpstreamError("denied")
        p.gate = threading.Event()

        async def go() -> None:
            tasks = [asyncio.ensure_future(cache.get(p, p.item("a"))) for _ in range(10)]
            await one_fetch_held(p, tasks)
            p.gate.set()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            assert all(isinstance(r, UpstreamError) for r in results)

        run(go())
        assert p.calls == ["a"]


class TestStaleIfError:
    def test_transient_failure_after_expiry_serves_stale(self) -> None:
        """A refresh that fails transiently answers with the last value, marked stale."""
        cache, p, clock = make(ttl=60, stale_if_error=3600)
        p.values["a"] = "1"

        async def go() -> None:
            await cache.get(p, p.item("a"))
            clock.now += 61
            p.fail = TransientError("throttled")
            got = await cache.get(p, p.item("a"))
            assert (got.state, got.value.body) == ("stale", b"1")

        run(go())

    def test_reads_during_backoff_make_no_upstream_calls(self) -> None:
        """While a failing key is backing off, stale reads are answered without calling upstream."""
        cache, p, clock = make(ttl=60)
        p.values["a"] = "1"

        async def go() -> None:
            await cache.get(p, p.item("a"))
            clock.now += 61
            p.fail = TransientError("throttled")
            await cache.get(p, p.item("a"))
            for _ in range(100):
                assert (await cache.get(p, p.item("a"))).state == "stale"
            assert len(p.calls) == 2
            clock.now += 120  # past any backoff: one retry, which succeeds
            p.fail = None
            p.values["a"] = "2"
            await cache.get(p, p.item("a"))  # served stale while the retry runs
            await cache.drain()
            got = await cache.get(p, p.item("a"))
            assert (got.state, got.value.body) == ("hit", b"2")

        run(go())
        assert len(p.calls) == 3

    def test_stale_window_ends(self) -> None:
        """After ``stale_if_error`` beyond expiry the failure reaches the reader."""
        cache, p, clock = make(ttl=60, stale_if_error=100)
        p.values["a"] = "1"

        async def go() -> None:
            await cache.get(p, p.item("a"))
            clock.now += 161
            p.fail = TransientError("down")
            with pytest.raises(TransientError):
                await cache.get(p, p.item("a"))

        run(go())

    def test_not_found_on_refresh_drops_the_value(self) -> None:
        """An item deleted upstream is not served stale: "not found" is not transient."""
        cache, p, clock = make(ttl=60)
        p.values["a"] = "1"

        async def go() -> None:
            await cache.get(p, p.item("a"))
            clock.now += 61
            del p.values["a"]
            with pytest.raises(NotFoundError):
                await cache.get(p, p.item("a"))

        run(go())

    def test_permanent_error_is_not_hidden_by_stale(self) -> None:
        """A non-transient upstream error (e.g. AccessDenied) reaches the reader."""
        cache, p, clock = make(ttl=60)
        p.values["a"] = "1"

        async def go() -> None:
            await cache.get(p, p.item("a"))
            clock.now += 61
            p.fail = UpstreamError("AccessDenied")
            with pytest.raises(UpstreamError):
                await cache.get(p, p.item("a"))

        run(go())


class TestNegativeCaching:
    def test_not_found_is_remembered_for_negative_ttl(self) -> None:
        """A missing item is asked for once per ``negative_ttl``."""
        cache, p, clock = make(negative_ttl=30)

        async def go() -> None:
            for _ in range(5):
                with pytest.raises(NotFoundError):
                    await cache.get(p, p.item("ghost"))
            clock.now += 30
            p.values["ghost"] = "boo"
            assert (await cache.get(p, p.item("ghost"))).value.body == b"boo"

        run(go())
        assert p.calls == ["ghost", "ghost"]
        assert cache.stats()["scripted"]["negative_hits"] == 4


class TestBounds:
    def test_least_recently_used_is_evicted_first(self) -> None:
        """Over ``max_entries`` the entry read longest ago goes first."""
        cache, p, _ = make(max_entries=3)
        for n in "abcd":
            p.values[n] = n

        async def go() -> None:
            for n in "abc":
                await cache.get(p, p.item(n))
            cache.peek(p.item("a"))  # a is now the most recently used
            await cache.get(p, p.item("d"))
            assert cache.peek(p.item("b")) is None
            assert all(cache.peek(p.item(n)) for n in "acd")

        run(go())
        assert cache.stats()["scripted"]["evictions"] == 1

    def test_max_bytes_bounds_the_total(self) -> None:
        """The sum of entry sizes (name, value, fixed overhead) never exceeds ``max_bytes``."""
        one = ENTRY_OVERHEAD + sys.getsizeof("a") + sys.getsizeof(()) + value_bytes(Value(b"aaaa"))
        cache, p, _ = make(max_bytes=2 * one + one // 2)
        for n in "abc":
            p.values[n] = n * 4

        async def go() -> None:
            for n in "abc":
                await cache.get(p, p.item(n))
            assert cache.size == (2, 2 * one)

        run(go())


class TestRefreshAhead:
    def test_read_entries_near_expiry_are_refreshed_on_invoke(self) -> None:
        """On INVOKE, entries read since their refresh and in the last 20% of TTL are refetched."""
        cache, p, clock = make(ttl=100, refresh_ahead=0.2)
        p.values.update(a="1", b="1")

        async def go() -> None:
            await cache.get(p, p.item("a"))  # the read that fetched it counts as a read
            await cache.prefetch(p, [p.item("b")])  # fetched, but nobody has read it
            clock.now += 50
            assert cache.refresh_ahead() == 0  # not yet in the window
            clock.now += 35
            p.values["a"] = "2"
            assert cache.refresh_ahead() == 1  # a was read; b was not
            await cache.drain()
            got = cache.peek(p.item("a"))
            assert got is not None and got.value.body == b"2" and got.age < 1

        run(go())
        assert p.calls == ["a", "b", "a"]

    def test_after_a_long_freeze_read_entries_are_refetched(self) -> None:
        """Entries that expired while frozen, and were in use, are refreshed on the next INVOKE."""
        cache, p, clock = make(ttl=10)
        p.values["a"] = "1"

        async def go() -> None:
            await cache.get(p, p.item("a"))
            cache.peek(p.item("a"))
            clock.now += 3600
            assert cache.refresh_ahead() == 1
            await cache.drain()
            assert cache.peek(p.item("a")) is not None

        run(go())


class TestPrefetch:
    def test_batch_capable_provider_gets_one_fetch_many(self) -> None:
        """Prefetch uses fetch_many when the provider has it, and stores every value."""
        clock = ManualClock()
        cache = Cache(CachePolicy(ttl_for=lambda r: 60), clock=clock)
        p = BatchProvider()
        p.values.update({f"n{i}": str(i) for i in range(25)})
        items = [p.item(f"n{i}") for i in range(25)] + [p.item("missing")]

        async def go() -> None:
            report = await cache.prefetch(p, items)
            assert report.fetched == 25
            assert list(report.failed) == [p.item("missing").key]

        run(go())
        assert p.batches == [26]
        assert p.calls == []
        assert cache.peek(p.item("n7")).value.body == b"7"

    def test_failed_items_are_fetched_on_demand(self) -> None:
        """An item whose prefetch failed transiently is fetched when first read."""
        cache, p, _ = make()
        p.values["a"] = "1"

        async def go() -> None:
            p.fail = TransientError("down")
            report = await cache.prefetch(p, [p.item("a")])
            assert report.fetched == 0
            p.fail = None
            assert (await cache.get(p, p.item("a"))).state == "miss"

        run(go())


class TestInvalidate:
    def test_invalidate_one_a_route_or_all(self) -> None:
        """Invalidation drops one name, a whole route, or everything."""
        cache, p, _ = make()
        for n in "abc":
            p.values[n] = n

        async def go() -> None:
            for n in "abc":
                await cache.get(p, p.item(n))
            assert cache.invalidate("scripted", "a") == 1
            assert cache.invalidate("other") == 0
            assert cache.invalidate("scripted") == 2
            assert cache.size == (0, 0)

        run(go())


class RefreshingProvider(ScriptedProvider):
    """Answers ``refresh`` with the previous value unless ``changed`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.changed = False
        self.refreshes = 0

    def refresh(self, item: Item, previous: Value) -> Value:
        self.refreshes += 1
        return self.fetch(item) if self.changed else previous


class TestConditionalRefresh:
    def test_unchanged_refresh_renews_ttl_without_fetch(self) -> None:
        """A provider with ``refresh`` is asked conditionally; "unchanged" renews the TTL."""
        clock = ManualClock()
        cache = Cache(CachePolicy(ttl_for=lambda r: 60), clock=clock)
        p = RefreshingProvider()
        p.values["a"] = "1"

        async def go() -> None:
            await cache.get(p, p.item("a"))
            clock.now += 61
            got = await cache.get(p, p.item("a"))
            assert got.value.body == b"1" and p.refreshes == 1
            clock.now += 59
            assert cache.peek(p.item("a")) is not None  # TTL renewed by the 304-like answer
            clock.now += 2
            p.changed = True
            p.values["a"] = "2"
            assert (await cache.get(p, p.item("a"))).value.body == b"2"

        run(go())
        assert p.calls == ["a", "a"]
        assert cache.stats()["scripted"]["not_modified"] == 1
