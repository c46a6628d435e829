"""Provider calls in worker threads: the executors, and which route's AWS calls are being made."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any, Callable, Dict, Iterator, Optional

from cachelayer.core.entries import RouteStats

__all__ = ["Workers", "current_loop", "current_route", "nested_read", "uncounted"]


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


class Workers:
    """The threads provider calls run in, and the counting of their AWS calls per route.

    ``stats`` is the cache's counters by route: a call creates its route's counters on the
    loop's thread, so a worker only increments them.
    """

    def __init__(self, stats: Dict[str, RouteStats], executor: Optional[Executor] = None) -> None:
        self._stats = stats
        self._executor = executor or ThreadPoolExecutor(16, thread_name_prefix="cachelayer-fetch")
        self._nested_executor: Optional[ThreadPoolExecutor] = None  # made on the first read
        self._lock = threading.Lock()  # guards stats touched from worker threads

    def run(self, fn: Callable[..., Any], route: str, *args: Any) -> asyncio.Future[Any]:
        """Call a provider method in a worker thread, its AWS calls counted for ``route``."""
        # Create the route's counters here, on the loop's thread: the worker only increments
        # them, so it never inserts into the dict while ``stats()`` iterates it.
        if route not in self._stats:
            self._stats[route] = RouteStats()
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(
            self._executor_for_call(), self.call_provider, fn, route, loop, *args
        )

    def _executor_for_call(self) -> Executor:
        """The fetch workers, or for a read nested in a provider call its own small pool, so
        readers holding every fetch worker cannot starve the fetch they wait for."""
        if nested_read.get():
            if self._nested_executor is None:
                self._nested_executor = ThreadPoolExecutor(4, thread_name_prefix="cachelayer-read")
            return self._nested_executor
        return self._executor

    def run_shared(self, fn: Callable[..., Any], route: str, *args: Any) -> asyncio.Future[Any]:
        """Call the shared tier in a worker thread: its own operations are no upstream calls;
        a provider call it makes is counted as ``run`` would, through ``call_provider``."""
        if route not in self._stats:
            self._stats[route] = RouteStats()
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(self._executor_for_call(), fn, *args)

    def call_provider(
        self,
        fn: Callable[..., Any],
        route: str,
        loop: Optional[asyncio.AbstractEventLoop],
        *args: Any,
    ) -> Any:
        """In a worker: call ``fn(*args)`` as ``route``'s provider call, counting its AWS calls."""
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

    def count_upstream_call(self, route: Optional[str]) -> None:
        """Count one AWS request made on behalf of ``route`` (called from worker threads)."""
        stats = self._stats.get(route) if route is not None else None
        if stats is None:  # not a provider call started by ``run``
            return
        call = _current.get()
        if call is not None and call.route == route:
            call.calls += 1
        with self._lock:
            stats.upstream_calls += 1

    def close(self) -> None:
        """Stop the worker threads without waiting for calls in flight."""
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self._nested_executor is not None:
            self._nested_executor.shutdown(wait=False, cancel_futures=True)
