"""The cache: expiring entries per key, single-flight fetches, stale-if-error, failure backoff,
LRU bounds by count and by every byte held."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import functools
import logging
import math
import random
import sys
import threading
import time
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    NamedTuple,
    Optional,
    Sequence,
    Set,
    Tuple,
    TypeVar,
    Union,
)

import attrs

from cachelayer.errors import (
    CachelayerError,
    NotFoundError,
    ThrottlingError,
    TransientError,
    UpstreamError,
    UpstreamTimeoutError,
)
from cachelayer.provider import Item, Provider, SupportsFetchMany, SupportsRefresh, Value

if TYPE_CHECKING:
    from cachelayer.shared.tier import Fetched, SharedTier

log = logging.getLogger("cachelayer.cache")

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


class _ProviderCall:
    """The provider call running in this context: its route, the event loop that started it,
    and the AWS calls it made."""

    __slots__ = ("calls", "loop", "route")

    def __init__(self, route: str, loop: Optional[asyncio.AbstractEventLoop]) -> None:
        self.route = route
        self.loop = loop
        self.calls = 0


# A context variable, not a thread-local: a provider that fans out to its own threads with
# contextvars.copy_context() (the built-ins' batched prefetch) still has its calls counted.
_current: contextvars.ContextVar[Optional[_ProviderCall]] = contextvars.ContextVar(
    "cachelayer_provider_call", default=None
)

# Set in the tasks of ``ProviderContext.read``: a fetch they start runs on the nested executor,
# because the reader holds a worker of the main one while it waits (all of them, at worst).
nested_read: contextvars.ContextVar[bool] = contextvars.ContextVar("nested_read", default=False)


def _short(name: str, limit: int = 80) -> str:
    """A name as logs and messages show it: long names (attacks, mostly) cut to ``limit``."""
    return name if len(name) <= limit else name[: limit - 3] + "..."


def current_route() -> Optional[str]:
    """The route whose provider is running in this worker thread (for counting AWS calls)."""
    call = _current.get()
    return call.route if call is not None else None


def current_loop() -> Optional[asyncio.AbstractEventLoop]:
    """The event loop that started the provider call running in this worker thread, if any."""
    call = _current.get()
    return call.loop if call is not None else None


@contextlib.contextmanager
def uncounted() -> Iterator[None]:
    """AWS calls made in this block are the core's own (e.g. reading the shared tier's key),
    not counted for the route being fetched in this thread."""
    token = _current.set(None)
    try:
        yield
    finally:
        _current.reset(token)


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


def _key_bytes(item: Item) -> int:
    return ENTRY_OVERHEAD + sys.getsizeof(item.name) + held_bytes(item.variant)


_E = TypeVar("_E", bound=BaseException)


def _copy_error(exc: _E) -> _E:
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


def _error_bytes(exc: BaseException) -> int:
    return sys.getsizeof(exc) + held_bytes(exc.args) + held_bytes(vars(exc))


def _consume(future: asyncio.Future[Any]) -> None:
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
        self._executor = executor or ThreadPoolExecutor(16, thread_name_prefix="cachelayer-fetch")
        self._nested_executor: Optional[ThreadPoolExecutor] = None  # made on the first read
        self._rng = rng or random.Random()
        self._entries: collections.OrderedDict[Key, Entry] = collections.OrderedDict()
        self._bytes = 0
        self._held = 0  # bytes held for the cache's users (the server's memos), see ``hold``
        self.released = 0  # bytes of entries dropped or evicted, ever (for the allocator)
        self._inflight: Dict[Key, asyncio.Future[Lookup]] = {}
        self._background: Set[asyncio.Task[Any]] = set()
        self._watched: Set[asyncio.Future[Lookup]] = set()  # fetches no reader waits for
        self._stats: Dict[str, RouteStats] = collections.defaultdict(RouteStats)
        self._lock = threading.Lock()  # guards stats touched from worker threads

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
                    assert entry.error is not None
                    error = _copy_error(entry.error)
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
                if now >= entry.retry_at and key not in self._inflight:
                    self._spawn(self._start_fetch(provider, item))
                stats.stale += 1
                return Lookup(entry.value, "stale", now - entry.fetched_at, 0.0)
        future = self._inflight.get(key)
        if future is None:
            future = self._start_fetch(provider, item)
        stale = entry if entry is not None and entry.value is not None else None
        if stale is not None and (refresh or not self._within_stale(stale, now)):
            stale = None  # a forced refresh waits for the new value
        policy = self.policy
        wait = policy.upstream_timeout if stale is None else policy.stale_wait
        try:
            lookup = await asyncio.wait_for(asyncio.shield(future), wait)
        except asyncio.TimeoutError:
            # The fetch goes on in its worker; its result is kept when it arrives (and
            # ``drain`` waits for it, as for any background refresh).
            if future not in self._watched:
                self._watched.add(future)
                future.add_done_callback(self._watched.discard)
                self._spawn(future)
            if stale is not None and stale.value is not None:
                stale.read_since_refresh = True
                stats.stale += 1
                now = self._clock()
                return Lookup(stale.value, "stale", now - stale.fetched_at, 0.0)
            stats.misses += 1
            raise UpstreamTimeoutError(
                f"upstream did not answer {item.route} {_short(item.name)!r} within "
                f"{policy.upstream_timeout:g}s (cache.upstream_timeout); the fetch goes on "
                "and its result will be cached"
            ) from None
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
        future.add_done_callback(_consume)
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
                future.set_result(self._store(provider, item, result))
            elif result.stale:  # upstream failed; the shared tier had a stale copy
                future.set_result(self._store_stale(provider, item, result))
            else:  # through the shared tier: its freshness, never more
                future.set_result(
                    self._store(provider, item, result.value, result.age, result.remaining)
                )

        held = self._entries.get(item.key)
        previous = held.value if held is not None else None
        log.debug(
            "fetching %s %r from upstream (%s)",
            item.route,
            item.name,
            "refresh" if previous is not None else "miss",
        )
        fetch: Callable[[], Value]
        if previous is not None and isinstance(provider, SupportsRefresh):
            fetch = functools.partial(provider.refresh, item, previous)
        else:
            fetch = functools.partial(provider.fetch, item)
        if self.shared is not None:
            call = self._run_shared(
                self._fetch_shared,
                item.route,
                item,
                fetch,
                previous is not None,
                asyncio.get_running_loop(),
            )
        else:
            call = self._run(fetch, item.route)
        call.add_done_callback(done)
        return future

    def _run(self, fn: Callable[..., Any], route: str, *args: Any) -> asyncio.Future[Any]:
        """Call a provider method in a worker thread, its AWS calls counted for ``route``."""
        # Create the route's counters here, on the loop's thread: the worker only increments
        # them, so it never inserts into the dict while ``stats()`` iterates it.
        if route not in self._stats:
            self._stats[route] = RouteStats()
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(
            self._executor_for_call(), self._call_provider, fn, route, loop, *args
        )

    def _executor_for_call(self) -> Executor:
        """The fetch workers, or for a read nested in a provider call its own small pool, so
        readers holding every fetch worker cannot starve the fetch they wait for."""
        if nested_read.get():
            if self._nested_executor is None:
                self._nested_executor = ThreadPoolExecutor(4, thread_name_prefix="cachelayer-read")
            return self._nested_executor
        return self._executor

    def _run_shared(self, fn: Callable[..., Any], route: str, *args: Any) -> asyncio.Future[Any]:
        """Call the shared tier in a worker thread: its own operations are no upstream calls;
        a provider call it makes is counted as ``_run`` would (see ``_fetch_shared``)."""
        if route not in self._stats:
            self._stats[route] = RouteStats()
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(self._executor_for_call(), fn, *args)

    def _fetch_shared(
        self,
        item: Item,
        fetch: Callable[[], Value],
        has_local: bool,
        loop: asyncio.AbstractEventLoop,
    ) -> Fetched:
        """In a worker: read ``item`` through the shared tier, ``fetch`` being the upstream."""
        assert self.shared is not None
        ttl = self._ttl(item)
        return self.shared.fetch(
            item,
            functools.partial(self._call_provider, fetch, item.route, loop),
            ttl=ttl,
            negative_ttl=self.policy.negative_ttl,
            stale_if_error=self.policy.stale_if_error,
            refresh_within=ttl * self.policy.refresh_ahead if has_local else 0.0,
            has_local=has_local,
        )

    def _call_provider(
        self,
        fn: Callable[..., Any],
        route: str,
        loop: Optional[asyncio.AbstractEventLoop],
        *args: Any,
    ) -> Any:
        call = _ProviderCall(route, loop)
        token = _current.set(call)
        try:
            return fn(*args)
        finally:
            _current.reset(token)
            if not call.calls:
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
            self._remember_not_found(provider, item, _copy_error(exc), now)
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
            entry.retry_at = now + self._backoff(entry.failures, exc)
            log.warning(
                "%s %r: refresh failed (%s); serving the stale value, retry in %.1fs",
                item.route,
                item.name,
                exc,
                entry.retry_at - now,
            )
            future.set_result(Lookup(entry.value, "stale", now - entry.fetched_at, 0.0))
            return
        # Nothing to serve (or a failure that is not transient): remember it for a backoff, so
        # that client load during an outage never becomes upstream load (about one call per
        # key per backoff).
        failures = entry.failures + 1 if entry is not None and entry.error is not None else 1
        if self.policy.max_entries > 0:
            backoff = self._backoff(failures, exc)
            failed = _copy_error(exc)
            held = Entry(
                item, provider, stats, None, failed, 0.0, now, now + backoff, failures=failures
            )
            held.size = _key_bytes(item) + _error_bytes(failed)
            self._put(held)
            # One warning per backoff period of the key (there is one call per period).
            log.warning(
                "%s %r: upstream call failed: %s; no value is cached, so this is the answer "
                "for %.1fs, then one retry",
                item.route,
                _short(item.name),
                _short(str(exc), 300),
                backoff,
            )
            exc.retry_after = backoff  # for the readers waiting now
        future.set_exception(exc)

    def _backoff(self, failures: int, exc: BaseException) -> float:
        """Seconds to wait before retrying a key after its ``failures``-th failure in a row."""
        base = THROTTLED_BASE if isinstance(exc, ThrottlingError) else RETRY_BASE
        backoff = min(RETRY_CAP, base * 2 ** min(failures - 1, 16))
        return backoff * (0.5 + self._rng.random() / 2)  # jitter

    def _within_stale(self, entry: Entry, now: float) -> bool:
        return now < entry.expires_at + self.policy.stale_if_error

    def _ttl(self, item: Item) -> float:
        return item.ttl if item.ttl is not None else self.policy.ttl_for(item.route)

    def _store(
        self,
        provider: Provider,
        item: Item,
        value: Value,
        age: float = 0.0,
        remaining: Optional[float] = None,
    ) -> Lookup:
        now = self._clock()
        ttl = self._ttl(item)
        size = _key_bytes(item) + value_bytes(value)
        if ttl <= 0 or size > self.policy.max_bytes or self.policy.max_entries <= 0:
            self._drop(item.key)
            return Lookup(value, "miss", age, 0.0)
        fresh = ttl if remaining is None else min(ttl, remaining)
        stats = self._stats[item.route]
        self._put(Entry(item, provider, stats, value, None, ttl, now - age, now + fresh, size))
        return Lookup(value, "miss", age, fresh)

    def _store_stale(self, provider: Provider, item: Item, fetched: Fetched) -> Lookup:
        """Keep the shared tier's stale copy as an expired, failing entry: later reads are
        answered from it (stale-if-error) while retries back off."""
        now = self._clock()
        self._stats[item.route].upstream_errors += 1
        ttl = self._ttl(item)
        entry = Entry(
            item,
            provider,
            self._stats[item.route],
            fetched.value,
            None,
            ttl,
            now - fetched.age,
            now - fetched.overdue,
            _key_bytes(item) + value_bytes(fetched.value),
            failures=1,
            retry_at=now + RETRY_BASE * (0.5 + self._rng.random() / 2),
        )
        if entry.size <= self.policy.max_bytes and self.policy.max_entries > 0:
            self._put(entry)
        return Lookup(fetched.value, "stale", fetched.age, 0.0)

    def _remember_not_found(
        self, provider: Provider, item: Item, exc: NotFoundError, now: float
    ) -> None:
        self._drop(item.key)
        # A "not found" read from the shared tier keeps its remaining time there.
        ttl = min(self.policy.negative_ttl, getattr(exc, "shared_remaining", math.inf))
        if ttl > 0 and self.policy.max_entries > 0:
            size = _key_bytes(item) + _error_bytes(exc)
            self._put(
                Entry(item, provider, self._stats[item.route], None, exc, ttl, now, now + ttl, size)
            )

    def _put(self, entry: Entry) -> None:
        key = entry.item.key
        self._drop(key)
        self._entries[key] = entry
        self._bytes += entry.size
        self._evict()

    def _evict(self) -> None:
        entries = self._entries
        policy = self.policy
        while entries and (
            len(entries) > policy.max_entries or self._bytes + self._held > policy.max_bytes
        ):
            _, old = entries.popitem(last=False)
            self._bytes -= old.size
            self.released += old.size
            old.stats.evictions += 1

    def hold(self, delta: int) -> None:
        """Count ``delta`` more (or, negative, fewer) bytes that a user of the cache keeps for
        its entries (the server's per-URL memos), evicting entries to stay within
        ``max_bytes``. The user keeps its own share bounded."""
        self._held += delta
        if delta > 0:
            self._evict()

    def _drop(self, key: Key) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= old.size
            self.released += old.size

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
        # A read of a prefetched item arriving now joins this batch instead of making its own
        # upstream call: its key is in flight until the batch has answered.
        loop = asyncio.get_running_loop()
        joined: Dict[Key, asyncio.Future[Lookup]] = {}
        for item in items:
            if item.key not in self._inflight:
                joined[item.key] = self._inflight[item.key] = loop.create_future()
        try:
            return await self._prefetch(provider, items, results, joined, started)
        finally:
            for key, future in joined.items():
                if self._inflight.get(key) is future:
                    del self._inflight[key]
                if not future.done():
                    future.set_exception(
                        TransientError(
                            "the startup prefetch of this item did not finish (init time ran "
                            "out or the extension is stopping); ask again"
                        )
                    )
                    future.exception()  # retrieved here: no "never retrieved" warning

    async def _prefetch(
        self,
        provider: Provider,
        items: Sequence[Item],
        results: Dict[Item, Union[Value, Exception]],
        joined: Dict[Key, asyncio.Future[Lookup]],
        started: float,
    ) -> PrefetchReport:
        shared_fetched = 0
        lease = None
        route = items[0].route if items else provider.route
        if self.shared is not None and items:
            # Other environments may have fetched these already (a wave of cold starts).
            found, lease = await self._run_shared(
                self.shared.prefetch_lookup, route, list(items), self._ttl
            )
            for item, fetched in found.items():
                lookup = self._store(provider, item, fetched.value, fetched.age, fetched.remaining)
                waiter = joined.pop(item.key, None)
                if waiter is not None:
                    if self._inflight.get(item.key) is waiter:
                        del self._inflight[item.key]
                    waiter.set_result(lookup)
            shared_fetched = len(found)
            items = [i for i in items if i not in found]
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
        fetched = shared_fetched
        to_share = []
        for item in items:
            result = results.get(item)
            waiter = joined.pop(item.key, None)
            if waiter is not None and self._inflight.get(item.key) is waiter:
                del self._inflight[item.key]
            if isinstance(result, Value):
                lookup = self._store(provider, item, result)
                to_share.append((item, result, self._ttl(item)))
                if waiter is not None:
                    waiter.set_result(lookup)
                fetched += 1
                continue
            if isinstance(result, NotFoundError):
                self._remember_not_found(provider, item, _copy_error(result), self._clock())
            else:
                self._stats[item.route].upstream_errors += 1
                if isinstance(result, ThrottlingError):
                    self._stats[item.route].throttles += 1
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
            failed[item.key] = reason
            log.warning(
                "prefetch of %s %r failed: %s; it will be fetched on demand",
                item.route,
                item.name,
                reason,
            )
        if self.shared is not None and (to_share or lease is not None):
            await self._run_shared(
                self.shared.prefetch_store,
                route,
                to_share,
                self.policy.stale_if_error,
                lease,
            )
        return PrefetchReport(fetched, failed, time.monotonic() - started)

    # -- operations ------------------------------------------------------------------------

    def count_upstream_call(self, route: Optional[str]) -> None:
        """Count one AWS request made on behalf of ``route`` (called from worker threads)."""
        stats = self._stats.get(route) if route is not None else None
        if stats is None:  # not a provider call started by ``_run``
            return
        call = _current.get()
        if call is not None and call.route == route:
            call.calls += 1
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
        if self.shared is not None:
            for route, d in out.items():
                d.update(self.shared.stats_for(route))
        return dict(sorted(out.items()))

    @property
    def size(self) -> Tuple[int, int]:
        """(entries, bytes) held now: the entries' bytes plus those counted with ``hold``."""
        return len(self._entries), self._bytes + self._held

    async def drain(self, timeout: float = 1.0) -> None:
        """Wait (briefly) for background refreshes to finish, e.g. before shutdown."""
        if self._background:
            await asyncio.wait(list(self._background), timeout=timeout)

    def close(self) -> None:
        """Stop the worker threads without waiting for calls in flight."""
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self._nested_executor is not None:
            self._nested_executor.shutdown(wait=False, cancel_futures=True)
