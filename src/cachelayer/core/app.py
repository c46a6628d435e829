"""The application: settings, providers, cache and router wired together, with no HTTP."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import attrs

from cachelayer.core.cache import Cache, CachePolicy, PrefetchReport, current_route, uncounted
from cachelayer.core.config import Settings, line_of, load_settings, plugin_filters
from cachelayer.core.metrics import EmfMetrics
from cachelayer.core.reads import CacheReader
from cachelayer.core.router import Router
from cachelayer.errors import CachelayerError, ConfigError
from cachelayer.hooks import PluginHooks
from cachelayer.plugins import (
    ProviderInfo,
    ProviderRegistry,
    canonical_name,
    discover,
    filter_warnings,
    filtered_out,
)
from cachelayer.provider import Provider, ProviderContext

log = logging.getLogger("cachelayer")

# How long SHUTDOWN waits for the plugins' cachelayer_shutdown hooks (when not told otherwise).
SHUTDOWN_HOOK_TIMEOUT = 0.5


def _line_in(settings: Settings, key: str) -> Optional[int]:
    return line_of(settings.config_path, key) if settings.config_loaded else None


@attrs.frozen
class StartupReport:
    """What ``Application.prefetch`` did, per provider name."""

    providers: Mapping[str, PrefetchReport]

    @property
    def fetched(self) -> int:
        return sum(r.fetched for r in self.providers.values())

    @property
    def failed(self) -> int:
        return sum(len(r.failed) for r in self.providers.values())


@attrs.define
class Application:
    """Everything the server and the extension need. Built by ``from_environment``.

    ``registry`` holds the installed provider types, ``providers`` the providers built from
    the config (by section name), ``hooks`` the one caller of the plugins' hooks.
    """

    settings: Settings
    registry: ProviderRegistry
    providers: Mapping[str, Provider]
    cache: Cache
    router: Router
    pm: Any
    hooks: PluginHooks
    metrics: Optional[EmfMetrics] = None
    json_clients: Any = None

    @classmethod
    def from_environment(
        cls,
        environ: Mapping[str, str],
        *,
        config_path: Optional[str] = None,
        port: Optional[int] = None,
        pm: Any = None,
        client_factory: Any = None,
        json_clients: Any = None,
        clock: Optional[Callable[[], float]] = None,
        metrics_write: Optional[Callable[[str], None]] = None,
        wall_clock: Optional[Callable[[], float]] = None,
    ) -> Application:
        """Discover plugins, load and validate settings, build the providers. No network I/O.

        Raises ConfigError or PluginError with a message fit to show the user as is.
        ``client_factory`` replaces the boto3 client factory, ``json_clients`` the lean
        JSON-protocol client factory and ``clock`` the cache's monotonic clock (tests and
        benchmarks); ``metrics_write`` and ``wall_clock`` replace stdout and ``time.time`` for
        the EMF metrics.
        """
        allow, deny = plugin_filters(environ)
        pm, registry = discover(allow=allow, deny=deny, pm=pm)
        settings = _settings(environ, pm, registry, allow, deny, config_path, port)
        cache = _cache(settings, registry, pm, clock, lambda sid: _read_secret(json_clients, sid))

        def count(service: str, operation: str) -> None:
            cache.count_upstream_call(current_route())

        if client_factory is None:
            # boto3 itself is imported only when a provider asks for a boto3 client; the
            # built-in providers use the lean JSON transport and never do.
            from cachelayer.aws import ClientFactory

            client_factory = ClientFactory.from_environment(environ, on_call=count)
        if json_clients is None:
            from cachelayer.awsjson import JsonClientFactory

            json_clients = JsonClientFactory.from_environment(environ, on_call=count)
        region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION")
        reader = CacheReader(cache)  # given the router below, once the providers are built
        context = ProviderContext(
            client=client_factory, default_region=region, read=reader, json_client=json_clients
        )
        providers = {
            name: _build(name, info, settings, context)
            for name, info in sorted(registry.by_name.items())
        }
        router = Router({p.route: p for p in providers.values()})
        reader.router = router
        metrics = None
        if settings.cache.metrics == "emf":
            metrics = EmfMetrics(
                namespace=settings.cache.metrics_namespace,
                function_name=environ.get("AWS_LAMBDA_FUNCTION_NAME", ""),
                write=metrics_write,
                clock=wall_clock or time.time,
            )
        hooks = PluginHooks(pm)
        app = cls(
            settings=settings,
            registry=registry,
            providers=providers,
            cache=cache,
            router=router,
            pm=pm,
            hooks=hooks,
            metrics=metrics,
            json_clients=json_clients,
        )
        hooks.startup(providers=dict(providers))
        return app

    async def prefetch(self) -> StartupReport:
        """Fetch everything the config declares (batch APIs, providers concurrently); return a
        report of what was fetched and what failed. Failed items are fetched again on demand."""
        names = sorted(self.providers)
        jobs = []
        for name in names:
            provider = self.providers[name]
            jobs.append(self.cache.prefetch(provider, list(provider.declared())))
        reports = await asyncio.gather(*jobs)
        report = StartupReport(dict(zip(names, reports)))
        log.info("prefetched %d items (%d failed)", report.fetched, report.failed)
        return report

    def on_invoke(self, event: Mapping[str, Any]) -> None:
        """Lambda INVOKE: start refresh-ahead in the background and return at once.
        Must be called on the event loop's thread."""
        started = self.cache.refresh_ahead()
        if started:
            log.debug("refresh-ahead started for %d entries", started)
        if self.metrics is not None:
            self.metrics.on_invoke(self.stats())
        self.hooks.invoke(event)

    def on_shutdown(self, reason: str, timeout: float = SHUTDOWN_HOOK_TIMEOUT) -> None:
        """Emit the last metrics, and announce shutdown to plugins, waiting at most
        ``timeout`` seconds for their hooks: shutdown stays inside its deadline whatever a
        plugin does."""
        if self.metrics is not None:
            self.metrics.on_shutdown(self.stats())
        self.hooks.shutdown(reason, timeout)

    def stats(self) -> Dict[str, Dict[str, int]]:
        """Per-route counters, with every installed route listed."""
        return self.cache.stats(self.router.routes)

    async def invalidate_shared(
        self, route: Optional[str] = None, name: Optional[str] = None
    ) -> Optional[Dict[str, Any]]:
        """Delete the shared tier's copies (one name, a route, or all); None without a tier.

        Runs in a worker thread; a store failure is reported in the result, not raised.
        """
        shared = self.cache.shared
        if shared is None:
            return None
        loop = asyncio.get_running_loop()
        try:
            deleted = await loop.run_in_executor(None, shared.invalidate, route, name)
        except Exception as exc:
            log.warning("shared tier invalidation failed: %s", exc)
            return {"invalidated": 0, "error": str(exc)}
        return {"invalidated": deleted}

    def stats_line(self) -> str:
        """One line summarising the stats, for the shutdown log. Never contains a value."""
        parts = []
        for route, s in self.stats().items():
            parts.append(
                f"{route}: hits={s['hits']} misses={s['misses']} stale={s['stale']} "
                f"upstream_calls={s['upstream_calls']} errors={s['upstream_errors']} "
                f"entries={s['entries']}"
            )
        return "cachelayer stats | " + " | ".join(parts)

    def close(self) -> None:
        """Release worker threads, idle upstream connections and the shared tier's."""
        self.cache.close()
        if self.cache.shared is not None:
            self.cache.shared.close()
        close = getattr(self.json_clients, "close", None)
        if close is not None:
            close()


def _settings(
    environ: Mapping[str, str],
    pm: Any,
    registry: ProviderRegistry,
    allow: Optional[Tuple[str, ...]],
    deny: Tuple[str, ...],
    config_path: Optional[str],
    port: Optional[int],
) -> Settings:
    """The settings for the installed provider types (their schemas and TTL variables), with
    the broken and filtered-out plugins named in errors, and their warnings logged."""
    schemas = {
        name: getattr(info.provider_type, "config_schema", None)
        for name, info in registry.by_name.items()
    }
    broken = {b.plugin: f"{b.error} (distribution {b.distribution})" for b in registry.broken}
    filters = ", ".join(
        f"{k}={environ[k]}"
        for k in ("CACHE_EXTENSION_PLUGINS", "CACHE_EXTENSION_DISABLE_PLUGINS")
        if k in environ
    )
    disabled = {canonical_name(n): f"filtered out by {filters}" for n in filtered_out(pm)}
    settings = load_settings(
        environ,
        schemas,
        config_path=config_path,
        port=port,
        broken=broken,
        disabled=disabled,
        ttl_variables=registry.ttl_variables(),
    )
    plugin_warnings = filter_warnings(allow, deny)
    if plugin_warnings:
        settings = attrs.evolve(settings, warnings=(*settings.warnings, *plugin_warnings))
    for warning in settings.warnings:
        log.warning("%s", warning)
    return settings


def _policy(settings: Settings, registry: ProviderRegistry) -> CachePolicy:
    """The cache's policy: the settings, with each route's TTL that of its section."""
    route_to_section: Dict[str, str] = {
        route: info.provider_type.name for route, info in registry.by_route.items()
    }
    return CachePolicy(
        ttl_for=lambda route: settings.ttl_for(route_to_section.get(route, route)),
        negative_ttl=float(settings.cache.negative_ttl),
        stale_if_error=float(settings.cache.stale_if_error),
        refresh_ahead=float(settings.cache.refresh_ahead),
        max_entries=int(settings.cache.max_entries),
        max_bytes=int(settings.cache.max_bytes),
        stale_wait=float(settings.cache.stale_wait),
        upstream_timeout=float(settings.cache.upstream_timeout),
    )


def _cache(
    settings: Settings,
    registry: ProviderRegistry,
    pm: Any,
    clock: Optional[Callable[[], float]],
    read_secret: Callable[[str], str],
) -> Cache:
    """The cache for ``settings``, with its shared tier when one is configured."""
    shared = None
    if settings.shared is not None:
        # Imported only when configured; redis-py and cryptography even later, on first use.
        from cachelayer.shared.factory import open_tier

        shared = open_tier(
            settings.shared,
            pm,
            read_secret=read_secret,
            source=settings.config_path if settings.config_loaded else None,
        )
    policy = _policy(settings, registry)
    if clock is not None:
        return Cache(policy, clock=clock, shared=shared)
    return Cache(policy, shared=shared)


def _build(name: str, info: ProviderInfo, settings: Settings, context: ProviderContext) -> Provider:
    """The provider of section ``name``, built from its validated section; a rejection of the
    section as a ConfigError with the file, the line and the key."""
    try:
        return info.provider_type.from_config(settings.sections.get(name), context)
    except ConfigError as exc:
        if exc.source is not None:
            raise
        # Say which file and line, as every other config error does.
        key = exc.key or name
        if key != name and not key.startswith((name + ".", name + "[")):
            key = f"{name}{key}" if key.startswith("[") else f"{name}.{key}"
        raise ConfigError(
            f"provider {name!r}: {exc.message}",
            source=settings.config_path,
            line=exc.line or _line_in(settings, key),
            key=key,
        ) from exc
    except CachelayerError:
        raise
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"provider {name!r} rejected its configuration: {exc}",
            source=settings.config_path,
            line=_line_in(settings, name),
            key=name,
        ) from exc


def _read_secret(json_clients: Any, secret_id: str) -> str:
    """A secret of the shared tier's (its key or password), read on first use of the tier, not
    counted for any route."""
    from cachelayer.shared.secret import read_secret_string

    with uncounted():
        return read_secret_string(json_clients, secret_id)
