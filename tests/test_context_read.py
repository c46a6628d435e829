"""ProviderContext.read: a provider reads another provider's value through the core's cache."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any, ClassVar, List, Mapping, Sequence, Tuple

import attrs
import pytest

import cachelayer
from cachelayer import Item, NotFoundError, ProviderContext, Value
from cachelayer.core.app import Application
from cachelayer.plugins import make_plugin_manager


@attrs.define(eq=False)
class Upstream:
    """A source of one value, counting its fetches (slow enough for reads to overlap)."""

    name: ClassVar[str] = "upstream"
    route: ClassVar[str] = "upstream"
    services: ClassVar[Tuple[str, ...]] = ()
    config_schema: ClassVar[Any] = None
    fetches: List[str] = attrs.Factory(list)
    _lock: threading.Lock = attrs.Factory(threading.Lock)

    @classmethod
    def from_config(cls, config: Any, context: ProviderContext) -> Upstream:
        return cls()

    def declared(self) -> Sequence[Item]:
        return []

    def resolve(self, name: str, params: Mapping[str, str]) -> Item:
        return Item(route=self.route, name=name, ttl=60.0)

    def fetch(self, item: Item) -> Value:
        with self._lock:
            self.fetches.append(item.name)
        threading.Event().wait(0.05)
        if item.name == "missing":
            raise NotFoundError("no such value")
        return Value(b"secret-" + item.name.encode())


@attrs.frozen
class Dependent:
    """Builds its value from the upstream one, read through ``context.read``."""

    name: ClassVar[str] = "dependent"
    route: ClassVar[str] = "dependent"
    services: ClassVar[Tuple[str, ...]] = ()
    config_schema: ClassVar[Any] = None
    _context: ProviderContext

    @classmethod
    def from_config(cls, config: Any, context: ProviderContext) -> Dependent:
        return cls(context)

    def declared(self) -> Sequence[Item]:
        return []

    def resolve(self, name: str, params: Mapping[str, str]) -> Item:
        return Item(route=self.route, name=name, ttl=60.0)

    def fetch(self, item: Item) -> Value:
        assert self._context.read is not None
        upstream = self._context.read("upstream", item.name.split(":")[0])
        return Value(upstream.body + b"+" + item.name.encode())


class Plugin:
    def __init__(self, *providers: Any) -> None:
        self.providers = providers

    @cachelayer.hookimpl
    def cachelayer_providers(self) -> Sequence[Any]:
        return list(self.providers)


@pytest.fixture()
def app(tmp_path: Path) -> Any:
    pm = make_plugin_manager()
    pm.register(Plugin(Upstream, Dependent), name="test-read")
    config = tmp_path / "config.yaml"
    config.write_text("cache:\n  ttl: 1m\n")
    application = Application.from_environment(
        {"CACHE_EXTENSION_PLUGINS": "test-read"},
        config_path=str(config),
        pm=pm,
        client_factory=lambda *a: None,
    )
    yield application, application.providers["upstream"]
    application.close()


class TestContextRead:
    def test_reads_are_cached_and_coalesced_like_requests(self, app: Any) -> None:
        """Concurrent fetches needing one upstream value cause one upstream fetch; it stays cached."""
        application, upstream = app
        provider = application.router.provider("dependent")

        async def run() -> List[bytes]:
            reads = [
                application.cache.get(provider, provider.resolve(f"db:{i}", {})) for i in range(8)
            ]
            return [lookup.value.body for lookup in await asyncio.gather(*reads)]

        bodies = asyncio.run(run())
        assert bodies == [f"secret-db+db:{i}".encode() for i in range(8)]
        assert upstream.fetches == ["db"]
        assert application.stats()["upstream"]["entries"] == 1

    def test_readers_holding_every_worker_still_get_their_value(self, app: Any) -> None:
        """More concurrent readers than fetch workers (16) do not starve the read they wait on:
        it runs on the read workers, so all finish at once instead of timing out."""
        application, upstream = app
        provider = application.router.provider("dependent")

        async def run() -> List[bytes]:
            reads = [
                application.cache.get(provider, provider.resolve(f"db:{i}", {})) for i in range(24)
            ]
            return [lookup.value.body for lookup in await asyncio.gather(*reads)]

        started = time.monotonic()
        bodies = asyncio.run(run())
        assert len(bodies) == 24 and upstream.fetches == ["db"]
        assert time.monotonic() - started < 5  # far below the reader's 15 s timeout

    def test_errors_of_the_read_route_reach_the_reader(self, app: Any) -> None:
        """A NotFound from the read route is raised to the reading provider."""
        application, _ = app
        provider = application.router.provider("dependent")

        async def run() -> None:
            await application.cache.get(provider, provider.resolve("missing:x", {}))

        with pytest.raises(NotFoundError, match="no such value"):
            asyncio.run(run())

    def test_read_outside_a_core_call_is_refused(self, app: Any) -> None:
        """Calling read outside fetch()/refresh() is a clear RuntimeError, not a hang."""
        application, _ = app
        provider = application.router.provider("dependent")
        with pytest.raises(RuntimeError, match="inside fetch"):
            provider.fetch(provider.resolve("db:1", {}))
